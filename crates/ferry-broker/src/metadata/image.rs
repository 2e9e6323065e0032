//! The metadata image: what every node knows of the cluster, built by
//! applying the controller's records in log order. Front-ends read it
//! through [`Broker::metadata`](crate::Broker::metadata); it is replaced
//! whole (copy on write, topics shared by `Arc`) after every apply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MetadataError;
use super::amqp::VhostDefinitions;
use super::mqtt::MqttState;
use super::record::MetadataRecord;
use crate::security::{AclSet, UserCredentials};

/// Listener names in [`NodeInfo::listeners`].
pub mod listener {
    /// Kafka clients (the advertised address).
    pub const KAFKA: &str = "kafka";
    /// AMQP 0-9-1 clients.
    pub const AMQP: &str = "amqp";
    /// MQTT clients.
    pub const MQTT: &str = "mqtt";
    /// The HTTP admin API.
    pub const HTTP: &str = "http";
    /// The cluster port (Raft and, later, replication).
    pub const CLUSTER: &str = "cluster";
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `node.id`.
    pub id: i32,
    /// Changes on every process start, so a restarted node is told apart
    /// from a node that kept running.
    pub incarnation: Uuid,
    /// Advertised `host:port` per listener name ([`listener`]).
    pub listeners: BTreeMap<String, String>,
    /// Rack (`broker.rack`), for replica placement.
    pub rack: Option<String>,
    /// Whether the node is in the controller quorum.
    pub voter: bool,
    /// A fenced node leads nothing and is not offered to clients.
    pub fenced: bool,
}

impl NodeInfo {
    /// The advertised Kafka `(host, port)`, if the node has a Kafka listener.
    pub fn kafka_endpoint(&self) -> Option<(String, i32)> {
        self.kafka_endpoint_on(listener::KAFKA)
    }

    /// The advertised `(host, port)` of the Kafka listener registered
    /// under `key` (a node with several Kafka listeners registers each as
    /// `kafka.<PROTOCOL>`), falling back to the node's first listener.
    pub fn kafka_endpoint_on(&self, key: &str) -> Option<(String, i32)> {
        let addr = self.listeners.get(key).or_else(|| self.listeners.get(listener::KAFKA))?;
        let (host, port) = addr.rsplit_once(':')?;
        Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
    }
}

/// One partition's replicas and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// The leader's node id, -1 when none is available.
    pub leader: i32,
    /// Bumped on every leader change (Kafka's leader epoch).
    pub leader_epoch: i32,
    /// Bumped on every change of leader, ISR or replicas.
    pub partition_epoch: i32,
    /// Eligible leader replicas (KIP-966): replicas that left the ISR while
    /// it was below the topic's min ISR, so the high watermark has not
    /// moved since and they hold every acknowledged record. Leaders are
    /// elected from them when the ISR has no live member. Disjoint from
    /// the ISR. Empty in images written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
    /// Replicas a reassignment in progress adds (KIP-455); they are in
    /// `replicas` already and leave this list when the reassignment
    /// completes.
    #[serde(default)]
    pub adding_replicas: Vec<i32>,
    /// Replicas a reassignment in progress removes (still in `replicas`
    /// until it completes).
    #[serde(default)]
    pub removing_replicas: Vec<i32>,
}

impl PartitionInfo {
    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas before the reassignment in progress (all replicas
    /// when none is).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas.iter().copied().filter(|r| !self.adding_replicas.contains(r)).collect()
    }

    /// The replicas once the reassignment in progress completes (all
    /// replicas when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas.iter().copied().filter(|r| !self.removing_replicas.contains(r)).collect()
    }
}

/// A topic as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-516).
    pub id: Uuid,
    /// Kafka's `internal` flag.
    pub internal: bool,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Partitions, by index.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Replicas per partition (of the first; a topic's partitions all have
    /// as many outside a reassignment), at least 1.
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(1, |p| p.replicas.len().max(1))
    }
}

/// Everything the controller quorum has agreed on, as of one log index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Set by the first record of the cluster.
    pub cluster_id: Option<String>,
    /// Every node that ever registered, by id.
    pub nodes: BTreeMap<i32, NodeInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicInfo>>,
    /// Topic names by id.
    pub topic_ids: BTreeMap<Uuid, String>,
    /// Cluster-wide dynamic topic config defaults.
    pub broker_defaults: BTreeMap<String, String>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// SCRAM credentials by user name (shared: the image is cloned on
    /// every apply, users and ACLs change rarely).
    #[serde(default)]
    pub users: Arc<BTreeMap<String, UserCredentials>>,
    /// Every ACL.
    #[serde(default)]
    pub acls: Arc<AclSet>,
    /// The Raft log index of the last record applied (0: none).
    pub applied_index: u64,
    /// Nodes being decommissioned: placement never picks them, and the
    /// controller moves their replicas to other nodes.
    #[serde(default)]
    pub decommissioning: BTreeSet<i32>,
    /// AMQP definitions (exchanges, bindings, durable queues) by vhost
    /// (shared like users and ACLs; absent in older snapshots: empty).
    #[serde(default)]
    pub amqp: Arc<BTreeMap<String, VhostDefinitions>>,
    /// The AMQP vhosts (also STOMP's and Redis's), created and deleted by
    /// records, each with its generation: the applied index before the
    /// entry that created it, so a vhost deleted and created again is told
    /// from the first (shared like the definitions; absent in older
    /// snapshots: none, until the nodes create their configured ones).
    #[serde(default)]
    pub vhosts: Arc<BTreeMap<String, u64>>,
    /// MQTT persistent sessions and retained messages (shared like the
    /// AMQP definitions; absent in older snapshots: empty).
    #[serde(default)]
    pub mqtt: Arc<MqttState>,
}

impl MetadataImage {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name)
    }

    /// The topic with id `id`.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicInfo>> {
        self.topic_ids.get(&id).and_then(|n| self.topics.get(n))
    }

    /// Partition `index` of topic `name`.
    pub fn partition(&self, name: &str, index: i32) -> Option<&PartitionInfo> {
        self.topic(name)?.partitions.get(usize::try_from(index).ok()?)
    }

    /// Nodes that are registered and not fenced, by id.
    pub fn live_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| !n.fenced)
    }

    /// Live nodes new replicas may go to: not fenced, not being
    /// decommissioned.
    pub fn placeable_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.live_nodes().filter(|n| !self.decommissioning.contains(&n.id))
    }

    /// (topic, partition index, partition) of every partition with `node`
    /// among its replicas.
    pub fn partitions_on(&self, node: i32) -> impl Iterator<Item = (&Arc<TopicInfo>, i32, &PartitionInfo)> {
        self.topics.values().flat_map(move |t| {
            (0..).zip(&t.partitions).filter(move |(_, p)| p.replicas.contains(&node)).map(move |(i, p)| (t, i, p))
        })
    }

    /// Applies one record at log index `index`. An error leaves the image
    /// unchanged (the record is a no-op, e.g. creating a topic that a
    /// concurrent request created first); every node gets the same error.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), MetadataError> {
        let result = self.apply_record(record);
        self.applied_index = index;
        result
    }

    /// Applies the records of one Raft entry at `index`, all or none: the
    /// controller commits a change that needs several records (a fence and
    /// its leader moves) as one entry.
    pub fn apply_batch(&mut self, index: u64, records: &[MetadataRecord]) -> Result<(), MetadataError> {
        let mut next = self.clone();
        for record in records {
            if let Err(e) = next.apply_record(record) {
                self.applied_index = index;
                return Err(e);
            }
        }
        next.applied_index = index;
        *self = next;
        Ok(())
    }

    fn apply_record(&mut self, record: &MetadataRecord) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
            }
            MetadataRecord::RegisterNode(node) => {
                let mut node = node.clone();
                node.fenced = false;
                self.nodes.insert(node.id, node);
            }
            MetadataRecord::FenceNode { node_id } => {
                self.nodes.get_mut(node_id).ok_or(MetadataError::UnknownNode(*node_id))?.fenced = true;
            }
            MetadataRecord::CreateTopic { name, id, internal, configs, replicas } => {
                if self.topics.contains_key(name) {
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                let partitions = replicas.iter().map(|r| new_partition(r)).collect();
                let topic = TopicInfo {
                    name: name.clone(),
                    id: *id,
                    internal: *internal,
                    configs: configs.clone(),
                    partitions,
                };
                self.topic_ids.insert(*id, name.clone());
                self.topics.insert(name.clone(), Arc::new(topic));
            }
            MetadataRecord::DeleteTopic { id } => {
                let name = self.topic_ids.remove(id).ok_or(MetadataError::UnknownTopicId(*id))?;
                self.topics.remove(&name);
            }
            MetadataRecord::CreatePartitions { id, replicas } => {
                let topic = self.topic_mut(*id)?;
                topic.partitions.extend(replicas.iter().map(|r| new_partition(r)));
            }
            MetadataRecord::SetTopicConfigs { id, configs } => self.topic_mut(*id)?.configs = configs.clone(),
            MetadataRecord::SetBrokerDefaults { configs } => self.broker_defaults = configs.clone(),
            MetadataRecord::PartitionChange { topic_id, partition, leader, isr, replicas, elr } => {
                let topic = self.topic_mut(*topic_id)?;
                let p = usize::try_from(*partition)
                    .ok()
                    .and_then(|i| topic.partitions.get_mut(i))
                    .ok_or(MetadataError::UnknownPartition(*topic_id, *partition))?;
                if p.leader != *leader {
                    p.leader_epoch += 1;
                }
                p.leader = *leader;
                p.isr.clone_from(isr);
                if let Some(r) = replicas {
                    p.replicas.clone_from(r);
                }
                if let Some(e) = elr {
                    p.elr.clone_from(e);
                }
                // ELR and ISR never share a member, and only replicas are either.
                let (isr, replicas) = (&p.isr, &p.replicas);
                p.elr.retain(|n| !isr.contains(n) && replicas.contains(n));
                p.partition_epoch += 1;
            }
            MetadataRecord::PartitionReassignment {
                topic_id,
                partition,
                replicas,
                adding_replicas,
                removing_replicas,
                leader,
                isr,
            } => {
                let topic = self.topic_mut(*topic_id)?;
                let p = usize::try_from(*partition)
                    .ok()
                    .and_then(|i| topic.partitions.get_mut(i))
                    .ok_or(MetadataError::UnknownPartition(*topic_id, *partition))?;
                // As Kafka's PartitionChangeBuilder: a new leader, or a
                // replica set that drops a replica, starts a leader epoch,
                // so a removed replica's fetches are fenced.
                if p.leader != *leader || p.replicas.iter().any(|r| !replicas.contains(r)) {
                    p.leader_epoch += 1;
                }
                p.leader = *leader;
                p.isr.clone_from(isr);
                p.replicas.clone_from(replicas);
                p.adding_replicas.clone_from(adding_replicas);
                p.removing_replicas.clone_from(removing_replicas);
                // ELR members must stay replicas and outside the ISR.
                let (isr, replicas) = (&p.isr, &p.replicas);
                p.elr.retain(|n| !isr.contains(n) && replicas.contains(n));
                p.partition_epoch += 1;
            }
            MetadataRecord::DecommissionNode { node_id } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(MetadataError::UnknownNode(*node_id));
                }
                self.decommissioning.insert(*node_id);
            }
            MetadataRecord::RecommissionNode { node_id } => {
                if !self.decommissioning.remove(node_id) {
                    return Err(MetadataError::UnknownNode(*node_id));
                }
            }
            MetadataRecord::UnregisterNode { node_id } => {
                if self.nodes.remove(node_id).is_none() {
                    return Err(MetadataError::UnknownNode(*node_id));
                }
                self.decommissioning.remove(node_id);
            }
            MetadataRecord::ProducerIds { first, count, .. } => {
                if *first < self.next_producer_id {
                    return Err(MetadataError::ProducerIdsTaken(*first));
                }
                self.next_producer_id = first + count;
            }
            MetadataRecord::UpsertScramCredential { user, credential } => {
                Arc::make_mut(&mut self.users)
                    .entry(user.clone())
                    .or_default()
                    .insert(credential.mechanism, credential.clone());
            }
            MetadataRecord::DeleteScramCredential { user, mechanism } => {
                let users = Arc::make_mut(&mut self.users);
                let creds = users.get_mut(user).filter(|c| c.contains_key(mechanism)).ok_or_else(|| {
                    MetadataError::ResourceNotFound(format!("no {} credential for {user}", mechanism.name()))
                })?;
                creds.remove(mechanism);
                if creds.is_empty() {
                    users.remove(user);
                }
            }
            MetadataRecord::CreateAcl(binding) => {
                if !self.acls.contains(binding) {
                    Arc::make_mut(&mut self.acls).insert(binding.clone());
                }
            }
            MetadataRecord::DeleteAcl(binding) => {
                if self.acls.contains(binding) {
                    Arc::make_mut(&mut self.acls).remove(binding);
                }
            }
            MetadataRecord::Amqp(record) => {
                let topic_ids = &self.topic_ids;
                let generation = self.applied_index;
                super::amqp::apply(
                    &mut self.amqp,
                    &mut self.vhosts,
                    generation,
                    |id| topic_ids.contains_key(&id),
                    record,
                )?;
            }
            MetadataRecord::Mqtt(record) => super::mqtt::apply(&mut self.mqtt, record),
        }
        Ok(())
    }

    fn topic_mut(&mut self, id: Uuid) -> Result<&mut TopicInfo, MetadataError> {
        let name = self.topic_ids.get(&id).ok_or(MetadataError::UnknownTopicId(id))?;
        let topic = self.topics.get_mut(name).ok_or(MetadataError::UnknownTopicId(id))?;
        Ok(Arc::make_mut(topic))
    }
}

/// A new partition led by its first replica, all replicas in sync.
fn new_partition(replicas: &[i32]) -> PartitionInfo {
    PartitionInfo {
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: replicas.first().copied().unwrap_or(-1),
        leader_epoch: 0,
        partition_epoch: 0,
        elr: Vec::new(),
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i32) -> NodeInfo {
        NodeInfo {
            id,
            incarnation: Uuid::new_v4(),
            listeners: [(listener::KAFKA.to_string(), format!("127.0.0.1:{}", 9090 + id))].into(),
            rack: None,
            voter: true,
            fenced: false,
        }
    }

    #[test]
    fn records_build_the_image_and_epochs_move_with_leaders() {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        let records = [
            MetadataRecord::InitCluster { cluster_id: "c1".into() },
            MetadataRecord::RegisterNode(node(1)),
            MetadataRecord::RegisterNode(node(2)),
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id,
                internal: false,
                configs: BTreeMap::new(),
                replicas: vec![vec![1], vec![2]],
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 1,
                leader: -1,
                isr: vec![2],
                replicas: None,
                elr: None,
            },
        ];
        for (i, r) in records.iter().enumerate() {
            image.apply(i as u64 + 1, r).unwrap();
        }
        assert_eq!(image.applied_index, 5);
        assert_eq!(image.cluster_id.as_deref(), Some("c1"));
        assert_eq!(image.partition("t", 0).unwrap().leader, 1);
        let p1 = image.partition("t", 1).unwrap();
        assert_eq!((p1.leader, p1.leader_epoch, p1.partition_epoch), (-1, 1, 1));
        assert_eq!(image.nodes[&2].kafka_endpoint(), Some(("127.0.0.1".into(), 9092)));
        // ISR-only change: same leader epoch, new partition epoch.
        image
            .apply(
                6,
                &MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition: 0,
                    leader: 1,
                    isr: vec![1],
                    replicas: None,
                    elr: None,
                },
            )
            .unwrap();
        let p0 = image.partition("t", 0).unwrap();
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (0, 1));
    }

    #[test]
    fn the_elr_never_shares_a_member_with_the_isr() {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        let create = MetadataRecord::CreateTopic {
            name: "t".into(),
            id,
            internal: false,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2, 3]],
        };
        let change = |leader, isr: Vec<i32>, elr: Option<Vec<i32>>| MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader,
            isr,
            replicas: None,
            elr,
        };
        image.apply_batch(1, &[create, change(1, vec![1], Some(vec![2, 3, 9]))]).unwrap();
        assert_eq!(image.partition("t", 0).unwrap().elr, vec![2, 3], "only replicas");
        // A change that does not name the ELR keeps it, less new ISR members.
        image.apply(2, &change(1, vec![1, 3], None)).unwrap();
        let p = image.partition("t", 0).unwrap();
        assert_eq!((p.elr.clone(), p.partition_epoch), (vec![2], 2));
        image.apply(3, &change(1, vec![1, 3], Some(Vec::new()))).unwrap();
        assert!(image.partition("t", 0).unwrap().elr.is_empty());
        // Images and records from before the field read as an empty ELR.
        let old = r#"{"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0,"partition_epoch":0}"#;
        assert!(serde_json::from_str::<PartitionInfo>(old).unwrap().elr.is_empty());
        let old = format!(
            r#"{{"PartitionChange":{{"topic_id":"{id}","partition":0,"leader":1,"isr":[1],"replicas":null}}}}"#
        );
        assert_eq!(serde_json::from_str::<MetadataRecord>(&old).unwrap(), change(1, vec![1], None));
    }

    #[test]
    fn a_refused_record_changes_nothing_but_the_applied_index() {
        let mut image = MetadataImage::default();
        let create = |id| MetadataRecord::CreateTopic {
            name: "t".into(),
            id,
            internal: false,
            configs: BTreeMap::new(),
            replicas: vec![vec![1]],
        };
        image.apply(1, &create(Uuid::new_v4())).unwrap();
        let before = image.clone();
        assert_eq!(image.apply(2, &create(Uuid::new_v4())), Err(MetadataError::TopicExists("t".into())));
        assert_eq!(image.topics, before.topics);
        assert_eq!(image.applied_index, 2);
        assert!(image.apply(3, &MetadataRecord::FenceNode { node_id: 9 }).is_err());
        assert!(image.apply(4, &MetadataRecord::DeleteTopic { id: Uuid::new_v4() }).is_err());
        image.apply(5, &MetadataRecord::ProducerIds { node_id: 1, first: 0, count: 1000 }).unwrap();
        assert!(image.apply(6, &MetadataRecord::ProducerIds { node_id: 2, first: 500, count: 1000 }).is_err());
        assert_eq!(image.next_producer_id, 1000);
        // A batch is all or nothing.
        let id = image.topics["t"].id;
        let batch = [MetadataRecord::DeleteTopic { id }, MetadataRecord::FenceNode { node_id: 9 }];
        assert!(image.apply_batch(7, &batch).is_err());
        assert!(image.topic("t").is_some());
        assert_eq!(image.applied_index, 7);
        image.apply_batch(8, &batch[..1]).unwrap();
        assert!(image.topic("t").is_none() && image.topic_ids.is_empty());
    }

    #[test]
    fn users_and_acls_are_metadata() {
        use crate::security::*;
        let mut image = MetadataImage::default();
        let cred = ScramCredential::new(ScramMechanism::Sha256, "pw", 4096);
        let upsert = MetadataRecord::UpsertScramCredential { user: "alice".into(), credential: cred.clone() };
        image.apply(1, &upsert).unwrap();
        assert_eq!(image.users["alice"][&ScramMechanism::Sha256], cred);
        let before = image.clone();
        let delete512 =
            MetadataRecord::DeleteScramCredential { user: "alice".into(), mechanism: ScramMechanism::Sha512 };
        assert!(image.apply(2, &delete512).is_err());
        assert_eq!(image.users, before.users);
        let delete = MetadataRecord::DeleteScramCredential { user: "alice".into(), mechanism: ScramMechanism::Sha256 };
        image.apply(3, &delete).unwrap();
        assert!(image.users.is_empty(), "a user without credentials is gone");
        let binding = AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::Topic,
                name: "t".into(),
                pattern_type: PatternType::Literal,
            },
            entry: AclEntry {
                principal: Principal::user("alice"),
                host: "*".into(),
                operation: Operation::Read,
                permission: Permission::Allow,
            },
        };
        image.apply(4, &MetadataRecord::CreateAcl(binding.clone())).unwrap();
        image.apply(5, &MetadataRecord::CreateAcl(binding.clone())).unwrap();
        assert_eq!(image.acls.len(), 1);
        // The image (with users and ACLs) survives a snapshot round trip,
        // and an image written before users existed still loads.
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("acls");
        old.as_object_mut().unwrap().remove("users");
        assert!(serde_json::from_value::<MetadataImage>(old).unwrap().acls.is_empty());
        image.apply(6, &MetadataRecord::DeleteAcl(binding)).unwrap();
        assert!(image.acls.is_empty());
    }
}
