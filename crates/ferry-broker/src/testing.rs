//! TEST SCAFFOLDING, not a controller: unit tests (here and in the
//! front-end crates, through the `testing` feature) open a [`Broker`]
//! without a cluster node, so nothing would carry out their admin calls.
//! [`TestController`] is a quorum of one in memory: it turns each request
//! into metadata records at once (every partition on this node), applies
//! them to its image and hands the image to [`Broker::apply_image`]. The
//! real path (Raft, placement over nodes, liveness) is `ferry-cluster`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use uuid::Uuid;

use crate::broker::{Broker, BrokerConfig};
use crate::error::Result;
use crate::metadata::{
    Controller, ControllerFuture, ControllerReply, ControllerRequest, ControllerStatus, ElectionError, ElectionResult,
    ElectionType, GROUP_TOPIC, MetadataError, MetadataImage, MetadataRecord, NodeInfo, PeerError, PeerFuture,
    PeerRequest, TXN_TOPIC, listener,
};

/// Partitions of `__consumer_offsets` and `__transaction_state` here.
pub const INTERNAL_PARTITIONS: usize = 3;
/// Producer ids per block.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// The Kafka address this node registers with until a test sets another.
pub const DEFAULT_KAFKA: &str = "127.0.0.1:9092";

/// An in-memory quorum of one for unit tests (see the module docs).
pub struct TestController {
    broker: Weak<Broker>,
    node_id: i32,
    image: Mutex<MetadataImage>,
}

/// Opens a broker with a [`TestController`] installed and the cluster
/// bootstrapped (this node registered, the internal topics and the data
/// directory's topics imported).
pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
    let broker = Broker::open(config)?;
    install(&broker);
    Ok(broker)
}

/// Installs a [`TestController`] on `broker` and bootstraps the cluster.
pub fn install(broker: &Arc<Broker>) -> Arc<TestController> {
    let controller = Arc::new(TestController {
        broker: Arc::downgrade(broker),
        node_id: broker.node_id(),
        image: Mutex::new(MetadataImage::default()),
    });
    broker.set_controller(controller.clone());
    let mut records = vec![
        MetadataRecord::InitCluster { cluster_id: broker.cluster_id().to_string() },
        MetadataRecord::RegisterNode(controller.node(DEFAULT_KAFKA)),
        // The default vhost, as a node with the default config creates it
        // at its first start (tests declare in it before opening vhosts).
        MetadataRecord::Amqp(crate::metadata::AmqpRecord::CreateVhost { name: "/".into() }),
    ];
    records.extend(broker.import_records());
    let imported =
        |name: &str| records.iter().any(|r| matches!(r, MetadataRecord::CreateTopic { name: n, .. } if n == name));
    let missing: Vec<&str> = [GROUP_TOPIC, TXN_TOPIC].into_iter().filter(|n| !imported(n)).collect();
    for name in missing {
        records.push(MetadataRecord::CreateTopic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            internal: true,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            replicas: vec![vec![broker.node_id()]; INTERNAL_PARTITIONS],
        });
    }
    // A fresh image cannot refuse these records.
    let _ = controller.apply(records);
    controller
}

impl TestController {
    /// This node as it registers, with its Kafka listener at `kafka`.
    pub fn node(&self, kafka: &str) -> NodeInfo {
        NodeInfo {
            id: self.node_id,
            incarnation: Uuid::new_v4(),
            listeners: [(listener::KAFKA.to_string(), kafka.to_string())].into(),
            rack: None,
            voter: true,
            fenced: false,
        }
    }

    /// Applies `records` as one entry and hands the image to the broker.
    pub fn apply(&self, records: Vec<MetadataRecord>) -> Result<(), MetadataError> {
        let image = {
            let mut image = self.image.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let index = image.applied_index + 1;
            image.apply_batch(index, &records)?;
            image.clone()
        };
        if let Some(broker) = self.broker.upgrade() {
            broker.apply_image(Arc::new(image));
        }
        Ok(())
    }

    /// The controller's image.
    pub fn image(&self) -> MetadataImage {
        self.image.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn handle(&self, request: ControllerRequest) -> Result<ControllerReply, MetadataError> {
        let image = self.image();
        let (records, reply) = match request {
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                assignment,
                configs,
                validate_only,
            } => {
                if image.topic(&name).is_some() {
                    return Err(MetadataError::TopicExists(name));
                }
                let live = image.live_nodes().count();
                let replicas = if let Some(a) = assignment {
                    check_assignment(&image, &a)?;
                    a
                } else {
                    let rf = replication_factor.unwrap_or(1);
                    if rf < 1 || usize::try_from(rf).is_ok_and(|rf| rf > live) {
                        return Err(MetadataError::InvalidReplicationFactor(format!("{rf} with {live} live node(s)")));
                    }
                    let count = partitions.unwrap_or(self.default_partitions());
                    let count = usize::try_from(count)
                        .ok()
                        .filter(|c| *c > 0)
                        .ok_or_else(|| MetadataError::InvalidPartitions(format!("{count}")))?;
                    vec![vec![self.node_id]; count]
                };
                let id = Uuid::new_v4();
                let reply = ControllerReply::TopicCreated { id, replicas: replicas.clone() };
                if validate_only {
                    return Ok(reply);
                }
                (vec![MetadataRecord::CreateTopic { name, id, internal: false, configs, replicas }], reply)
            }
            ControllerRequest::DeleteTopic { name } => {
                let topic = image.topic(&name).ok_or(MetadataError::UnknownTopic(name.clone()))?;
                if topic.internal {
                    return Err(MetadataError::InvalidTopic(format!("{name} is internal")));
                }
                (vec![MetadataRecord::DeleteTopic { id: topic.id }], ControllerReply::Done)
            }
            ControllerRequest::CreatePartitions { name, total, assignment, validate_only } => {
                let topic = image.topic(&name).ok_or(MetadataError::UnknownTopic(name.clone()))?;
                let current = topic.partitions.len();
                let new = usize::try_from(total)
                    .ok()
                    .filter(|t| *t > current)
                    .map(|t| t - current)
                    .ok_or_else(|| MetadataError::InvalidPartitions(format!("{total} <= {current}")))?;
                let replicas = match assignment {
                    Some(a) if a.len() == new => {
                        check_assignment(&image, &a)?;
                        a
                    }
                    Some(_) => {
                        return Err(MetadataError::InvalidReplicaAssignment("one list per new partition".into()));
                    }
                    None => vec![vec![self.node_id]; new],
                };
                if validate_only {
                    return Ok(ControllerReply::Done);
                }
                (vec![MetadataRecord::CreatePartitions { id: topic.id, replicas }], ControllerReply::Done)
            }
            ControllerRequest::SetTopicConfigs { name, configs } => {
                let id = image.topic(&name).ok_or(MetadataError::UnknownTopic(name))?.id;
                (vec![MetadataRecord::SetTopicConfigs { id, configs }], ControllerReply::Done)
            }
            ControllerRequest::SetBrokerDefaults { configs } => {
                (vec![MetadataRecord::SetBrokerDefaults { configs }], ControllerReply::Done)
            }
            ControllerRequest::ShutdownNode { incarnation } => {
                let current = image.nodes.get(&self.node_id).filter(|n| n.incarnation == incarnation && !n.fenced);
                if current.is_none() {
                    return Ok(ControllerReply::Done);
                }
                (vec![MetadataRecord::FenceNode { node_id: self.node_id }], ControllerReply::Done)
            }
            ControllerRequest::AllocateProducerIds => {
                let first = image.next_producer_id;
                let record = MetadataRecord::ProducerIds { node_id: self.node_id, first, count: PRODUCER_ID_BLOCK };
                (vec![record], ControllerReply::ProducerIds { first, count: PRODUCER_ID_BLOCK })
            }
            ControllerRequest::AlterPartition { topic_id, partition, leader_epoch, partition_epoch, isr } => {
                let from = self.node_id;
                let record = crate::metadata::alter_partition(
                    &image,
                    from,
                    topic_id,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    &isr,
                )?;
                (vec![record], ControllerReply::Done)
            }
            ControllerRequest::ElectLeaders { election, partitions } => {
                (Vec::new(), ControllerReply::Elections(elect_leaders(&image, election, partitions)))
            }
            ControllerRequest::AlterReassignment { topic, partition, replicas } => {
                let records: Vec<MetadataRecord> =
                    crate::metadata::reassign(&image, &topic, partition, replicas.as_deref())?.into_iter().collect();
                (records, ControllerReply::Done)
            }
            ControllerRequest::DecommissionNode { node_id } => {
                (crate::metadata::decommission(&image, node_id)?.into_iter().collect(), ControllerReply::Done)
            }
            ControllerRequest::RecommissionNode { node_id } => {
                (crate::metadata::recommission(&image, node_id)?.into_iter().collect(), ControllerReply::Done)
            }
            ControllerRequest::UnregisterNode { node_id } => {
                (vec![crate::metadata::unregister(&image, node_id)?], ControllerReply::Done)
            }
            request @ (ControllerRequest::UpsertScramCredential { .. }
            | ControllerRequest::DeleteScramCredential { .. }
            | ControllerRequest::CreateAcls { .. }
            | ControllerRequest::DeleteAcls { .. }) => {
                let records = crate::metadata::security_change(&image, &request).unwrap_or(Ok(Vec::new()))?;
                (records, ControllerReply::Done)
            }
            request @ (ControllerRequest::Amqp(_) | ControllerRequest::Mqtt(_)) => {
                // A quorum queue's topic: one replica, on this node.
                let node = self.node_id;
                let mut make_topic = |name: &str, _group: Option<usize>| {
                    let id = Uuid::new_v4();
                    let create = MetadataRecord::CreateTopic {
                        name: name.to_string(),
                        id,
                        internal: true,
                        configs: BTreeMap::new(),
                        replicas: vec![vec![node]],
                    };
                    Ok((id, vec![create]))
                };
                let records = match &request {
                    ControllerRequest::Mqtt(r) => crate::metadata::mqtt_change(&image, node, r, &mut make_topic)?,
                    ControllerRequest::Amqp(r) => crate::metadata::amqp_change(&image, node, r, &mut make_topic)?,
                    _ => Vec::new(),
                };
                (records, ControllerReply::Done)
            }
        };
        self.apply(records)?;
        Ok(reply)
    }

    fn default_partitions(&self) -> i32 {
        self.broker.upgrade().map_or(1, |b| b.config().default_partitions)
    }
}

/// ElectLeaders in a quorum of one: each partition has one replica, which
/// leads it unless the node is fenced, so there is never anyone to elect.
fn elect_leaders(
    image: &MetadataImage,
    election: ElectionType,
    partitions: Option<Vec<(String, i32)>>,
) -> Vec<ElectionResult> {
    let every = partitions.is_none();
    let wanted = partitions.unwrap_or_else(|| {
        image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len()).filter_map(|i| Some((t.name.clone(), i32::try_from(i).ok()?))))
            .collect()
    });
    wanted
        .into_iter()
        .filter_map(|(topic, partition)| {
            let error = match image.partition(&topic, partition) {
                None => ElectionError::UnknownTopicOrPartition,
                Some(p)
                    if p.leader != -1
                        && (election == ElectionType::Unclean || p.replicas.first() == Some(&p.leader)) =>
                {
                    ElectionError::ElectionNotNeeded
                }
                Some(_) if election == ElectionType::Preferred => ElectionError::PreferredLeaderNotAvailable,
                Some(_) => ElectionError::EligibleLeadersNotAvailable,
            };
            (!(every && error == ElectionError::ElectionNotNeeded)).then_some(ElectionResult {
                topic,
                partition,
                error: Some(error),
            })
        })
        .collect()
}

/// Every node known, none repeated in a partition, all partitions alike long.
fn check_assignment(image: &MetadataImage, assignment: &[Vec<i32>]) -> Result<(), MetadataError> {
    let bad = |m: String| Err(MetadataError::InvalidReplicaAssignment(m));
    let Some(first) = assignment.first() else { return bad("no partitions".into()) };
    for replicas in assignment {
        if replicas.is_empty() || replicas.len() != first.len() {
            return bad("every partition needs the same number of replicas".into());
        }
        let mut seen = BTreeMap::new();
        for node in replicas {
            if !image.nodes.contains_key(node) {
                return bad(format!("unknown node {node}"));
            }
            if seen.insert(*node, ()).is_some() {
                return bad(format!("node {node} twice in one partition"));
            }
        }
    }
    Ok(())
}

impl Controller for TestController {
    fn call_peer(&self, node: i32, _request: PeerRequest) -> PeerFuture {
        // A quorum of one has no peers.
        Box::pin(async move { Err(PeerError::Unavailable(format!("no node {node} in a test quorum of one"))) })
    }

    fn submit(&self, request: ControllerRequest) -> ControllerFuture<ControllerReply> {
        let result = self.handle(request);
        Box::pin(async move { result })
    }

    fn status(&self) -> ControllerStatus {
        let image = self.image();
        ControllerStatus {
            node_id: self.node_id,
            leader: Some(self.node_id),
            term: 1,
            commit_index: image.applied_index,
            applied_index: image.applied_index,
            voters: vec![self.node_id],
            observers: Vec::new(),
            waiting: None,
        }
    }
}

/// What a test's forwarding node answers a controller request it has no
/// use for.
pub fn no_submit() -> ControllerFuture<ControllerReply> {
    Box::pin(async { Err(crate::metadata::MetadataError::Unavailable("not in this test".into())) })
}

/// The status of a test's forwarding node: node 2, node 1 leading the
/// controller quorum.
pub fn node2_status() -> ControllerStatus {
    ControllerStatus {
        node_id: 2,
        leader: Some(1),
        term: 1,
        commit_index: 0,
        applied_index: 0,
        voters: vec![1],
        observers: Vec::new(),
        waiting: None,
    }
}

/// Declares the quorum queue `name` in vhost `/` (defaults, no arguments)
/// through `broker`'s controller.
pub async fn declare_quorum(broker: &Broker, name: &str) {
    let declare = ControllerRequest::Amqp(crate::metadata::AmqpRequest::DeclareQueue {
        vhost: "/".into(),
        name: name.into(),
        auto_delete: false,
        arguments: crate::metadata::Arguments::default(),
        queue_type: crate::metadata::QueueType::Quorum { group_size: None },
    });
    broker.submit_change(declare).await.expect("the queue is declared");
}
