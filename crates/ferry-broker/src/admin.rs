//! Admin changes through the controller quorum. The broker checks what it
//! knows itself (topic names, config names and values, counts), then hands
//! the change to the [`Controller`](crate::metadata::Controller); the call
//! returns once the change is applied to this node's image, so local state
//! (changed only by [`Broker::apply_image`]) already reflects it.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::broker::{Broker, MqttRouter, validate_topic_name};
use crate::error::{BrokerError, Result};
use crate::metadata::{
    ControllerReply, ControllerRequest, ElectionResult, ElectionType, PeerError, PeerReply, PeerRequest,
};
use crate::topic::Topic;
use crate::topic_config;

/// A topic to create (Kafka's CreatableTopic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Partitions; `None` takes `num.partitions`.
    pub partitions: Option<i32>,
    /// Replicas per partition; `None` takes the cluster's default.
    pub replication_factor: Option<i16>,
    /// Replica node ids per partition, instead of the two counts.
    pub assignment: Option<Vec<Vec<i32>>>,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic named `name` with every setting left to the cluster.
    pub fn new(name: impl Into<String>) -> NewTopic {
        NewTopic { name: name.into(), ..NewTopic::default() }
    }

    /// With `partitions` partitions.
    pub fn partitions(mut self, partitions: i32) -> NewTopic {
        self.partitions = Some(partitions);
        self
    }

    /// With the config override `name` = `value`.
    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(name.into(), value.into());
        self
    }
}

/// A topic the controller created (or, with `validate_only`, would create).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedTopic {
    /// Topic id.
    pub id: Uuid,
    /// Replica node ids of each partition.
    pub replicas: Vec<Vec<i32>>,
}

impl CreatedTopic {
    /// Number of partitions.
    pub fn partitions(&self) -> i32 {
        i32::try_from(self.replicas.len()).unwrap_or(i32::MAX)
    }

    /// Replicas per partition (of the first; they are all the same).
    pub fn replication_factor(&self) -> i16 {
        self.replicas.first().map_or(0, |r| i16::try_from(r.len()).unwrap_or(i16::MAX))
    }
}

impl Broker {
    /// Carries out a change that replies nothing.
    pub(crate) async fn submit_change(&self, request: ControllerRequest) -> Result<()> {
        self.submit(request).await.map(|_| ())
    }

    /// Sends `request` to the controller quorum.
    pub(crate) async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply> {
        let controller = self
            .controller
            .get()
            .cloned()
            .ok_or_else(|| BrokerError::ControllerUnavailable("no controller installed".into()))?;
        Ok(controller.submit(request).await?)
    }

    /// Creates a topic with `partitions` (`None`: `num.partitions`) and the
    /// cluster's default replication factor. See [`Broker::create_topic_as`].
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<CreatedTopic> {
        let topic = NewTopic { name: name.to_string(), partitions, configs: configs.clone(), ..NewTopic::default() };
        self.create_topic_as(topic, validate_only).await
    }

    /// Creates a topic through the controller. With `validate_only`,
    /// checks everything and creates nothing.
    pub async fn create_topic_as(&self, topic: NewTopic, validate_only: bool) -> Result<CreatedTopic> {
        validate_topic_name(&topic.name)?;
        let max = self.config.max_partitions_per_topic;
        if let Some(count) = topic.partitions
            && (count < 1 || count > max)
        {
            return Err(BrokerError::InvalidPartitions(format!("{count} partitions (1 to {max} allowed)")));
        }
        if let Some(rf) = topic.replication_factor
            && rf < 1
        {
            return Err(BrokerError::InvalidReplicationFactor(format!("{rf} (at least 1)")));
        }
        topic_config::validate_all(&topic.configs)?;
        let request = ControllerRequest::CreateTopic {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            assignment: topic.assignment,
            configs: topic.configs,
            validate_only,
        };
        match self.submit(request).await? {
            ControllerReply::TopicCreated { id, replicas } => Ok(CreatedTopic { id, replicas }),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a topic through the controller; every node hosting it
    /// deletes its data when the change reaches its image.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        if self.metadata().topic(name).is_none() {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        self.submit(ControllerRequest::DeleteTopic { name: name.to_string() }).await.map(|_| ())
    }

    /// ElectLeaders: preferred-leader elections, or (UNCLEAN) leaders for
    /// leaderless partitions from their eligible replicas only; `None`:
    /// every partition. One result per partition (see [`ElectionResult`]).
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<ElectionResult>> {
        match self.submit(ControllerRequest::ElectLeaders { election, partitions }).await? {
            ControllerReply::Elections(results) => Ok(results),
            other => Err(BrokerError::ControllerUnavailable(format!("unexpected controller reply {other:?}"))),
        }
    }

    /// Grows a topic to `total` partitions (never shrinks, as Kafka);
    /// `assignment` names the replicas of each new partition.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<()> {
        let current = self.metadata().topic(name).ok_or(BrokerError::UnknownTopicOrPartition)?.partitions.len();
        let max = self.config.max_partitions_per_topic;
        if total > max {
            return Err(BrokerError::InvalidPartitions(format!("{total} partitions (at most {max} allowed)")));
        }
        if usize::try_from(total).map_or(true, |t| t <= current) {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic has {current} partitions; the new count must be larger, not {total}"
            )));
        }
        let request = ControllerRequest::CreatePartitions { name: name.to_string(), total, assignment, validate_only };
        self.submit(request).await.map(|_| ())
    }

    /// Replaces a topic's config overrides (after validating them).
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        topic_config::validate_all(&configs)?;
        if self.metadata().topic(name).is_none() {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        if validate_only {
            return Ok(());
        }
        self.submit(ControllerRequest::SetTopicConfigs { name: name.to_string(), configs }).await.map(|_| ())
    }

    /// Replaces the cluster-wide dynamic defaults (after validating them).
    pub async fn set_dynamic_defaults(&self, configs: BTreeMap<String, String>, validate_only: bool) -> Result<()> {
        topic_config::validate_all(&configs)?;
        if validate_only {
            return Ok(());
        }
        self.submit(ControllerRequest::SetBrokerDefaults { configs }).await.map(|_| ())
    }

    /// Makes sure topic `name` exists in the cluster, creating it with the
    /// defaults if the broker auto-creates topics.
    pub async fn ensure_topic(&self, name: &str) -> Result<()> {
        if self.metadata().topic(name).is_some() {
            return Ok(());
        }
        if !self.config.auto_create_topics {
            validate_topic_name(name)?;
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        match self.create_topic(name, None, &BTreeMap::new(), false).await {
            Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The topic as this node hosts it, created first (through the
    /// controller) if it does not exist and the broker auto-creates topics.
    /// `NotLeaderOrFollower` if it exists but has no partition here.
    pub async fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        self.ensure_topic(name).await?;
        self.topic(name).ok_or(BrokerError::NotLeaderOrFollower)
    }

    /// [`Broker::topic_or_create`] for callers that cannot await (the MQTT
    /// and AMQP routing paths). Only a missing topic costs more than a
    /// lookup: on a multi-threaded runtime its creation runs on the caller's
    /// runtime (`block_in_place`, so the controller's connections stay on
    /// it); elsewhere on a scoped thread with a runtime of its own.
    pub fn topic_or_create_blocking(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if self.metadata().topic(name).is_some() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current()
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(|| handle.block_on(self.topic_or_create(name)));
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(self.topic_or_create(name))
            })
            .join()
            .unwrap_or_else(|_| Err(BrokerError::ControllerUnavailable("topic creation panicked".into())))
        })
    }

    /// Submits an MQTT sessions or retained change; resolves once this
    /// node's image has it.
    pub async fn submit_mqtt(&self, record: crate::metadata::MqttRecord) -> Result<()> {
        self.submit_change(ControllerRequest::Mqtt(record)).await
    }

    /// [`Broker::submit_mqtt`] from a synchronous caller (startup imports).
    pub fn submit_mqtt_blocking(&self, record: crate::metadata::MqttRecord) -> Result<()> {
        self.submit_change_blocking(ControllerRequest::Mqtt(record))
    }

    /// Installs the MQTT front-end's handler of [`PeerRequest::MqttRoute`]
    /// (the message in its encoding, the publisher's client id); the first
    /// call wins.
    pub fn set_mqtt_router(&self, router: MqttRouter) {
        let _ = self.mqtt_router.set(router);
    }

    /// [`Broker::submit_change`] from a synchronous caller (an AMQP
    /// handler), the way [`Broker::topic_or_create_blocking`] waits.
    pub(crate) fn submit_change_blocking(&self, request: ControllerRequest) -> Result<()> {
        if let Ok(handle) = tokio::runtime::Handle::try_current()
            && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(|| handle.block_on(self.submit_change(request)));
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(self.submit_change(request))
            })
            .join()
            .unwrap_or_else(|_| Err(BrokerError::ControllerUnavailable("controller call panicked".into())))
        })
    }

    /// A new producer id for InitProducerId, taking a new block of ids
    /// from the controller when this node's block is used up.
    pub async fn next_producer_id(&self) -> Result<i64> {
        // Two rounds: a concurrent caller may take the fresh block's ids.
        for _ in 0..2 {
            if let Some(id) = self.producer_ids().next() {
                return Ok(id);
            }
            self.reserve_producer_ids().await?;
        }
        self.producer_ids()
            .next()
            .ok_or_else(|| BrokerError::ControllerUnavailable("producer ids used up while waiting for a block".into()))
    }

    /// Makes sure this node's block has a producer id left (the
    /// transaction coordinator takes ids synchronously).
    pub async fn reserve_producer_ids(&self) -> Result<()> {
        if self.producer_ids().remaining() > 0 {
            return Ok(());
        }
        match self.submit(ControllerRequest::AllocateProducerIds).await? {
            ControllerReply::ProducerIds { first, count } => {
                self.producer_ids().add_block(first, count);
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    /// DeleteRecords for one partition, carried out by its leader: here,
    /// or forwarded to the leading node over the cluster port. Returns the
    /// new log start offset. `before` -1 means the high watermark.
    pub async fn delete_records(self: &Arc<Self>, topic: &str, partition: i32, before: i64) -> Result<i64> {
        let request = PeerRequest::DeleteRecords { topic: topic.to_string(), partition, before };
        let leader = self.metadata().partition(topic, partition).ok_or(BrokerError::UnknownTopicOrPartition)?.leader;
        if leader == self.node_id() || leader < 0 {
            return match self.clone().serve_peer(request).await? {
                PeerReply::LowWatermark(low) => Ok(low),
                other => Err(PeerError::Failed(format!("unexpected peer reply {other:?}")).into()),
            };
        }
        let controller = self
            .controller
            .get()
            .cloned()
            .ok_or_else(|| BrokerError::ControllerUnavailable("no controller installed".into()))?;
        match controller.call_peer(leader, request).await? {
            PeerReply::LowWatermark(low) => Ok(low),
            other => Err(PeerError::Failed(format!("unexpected peer reply {other:?}")).into()),
        }
    }

    /// Carries out a call another node forwarded here, on this node only
    /// (never forwarded again): `NotLeaderOrFollower` if leadership moved.
    pub async fn serve_peer(self: Arc<Self>, request: PeerRequest) -> Result<PeerReply, PeerError> {
        match request {
            PeerRequest::DeleteRecords { topic, partition, before } => {
                let part = self.leader_partition(&topic, partition)?;
                // Moving the log start touches files: off the async workers.
                let low = tokio::task::spawn_blocking(move || {
                    let target = if before == -1 { Some(part.high_watermark()) } else { u64::try_from(before).ok() };
                    let target = target.ok_or(PeerError::OffsetOutOfRange)?;
                    part.delete_records_before(target).map_err(PeerError::from)
                })
                .await
                .map_err(|e| PeerError::Failed(e.to_string()))??;
                Ok(PeerReply::LowWatermark(low as i64))
            }
            queue @ (PeerRequest::QueuePublish { .. }
            | PeerRequest::QueueCommitted { .. }
            | PeerRequest::QueueTake { .. }
            | PeerRequest::QueueConsume { .. }
            | PeerRequest::QueueSettle { .. }
            | PeerRequest::QueuePurge { .. }) => self.serve_queue_peer(queue).await,
            PeerRequest::MqttRoute { messages } => {
                let router = self.mqtt_router.get().ok_or(PeerError::UnknownTopicOrPartition)?;
                for (message, origin) in messages {
                    router(message.bytes(), origin.as_deref());
                }
                Ok(PeerReply::Done)
            }
            // Transaction calls wait for an ISR: off the async workers.
            txn => tokio::task::spawn_blocking(move || self.serve_txn_peer(txn))
                .await
                .map_err(|e| PeerError::Failed(e.to_string()))?,
        }
    }
}

fn unexpected(reply: &ControllerReply) -> BrokerError {
    BrokerError::ControllerUnavailable(format!("unexpected controller reply {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerConfig;

    fn open(dir: &std::path::Path, auto_create_topics: bool) -> Arc<Broker> {
        crate::testing::open(BrokerConfig {
            data_dir: dir.to_path_buf(),
            auto_create_topics,
            ..BrokerConfig::default()
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_creation_from_sync_callers_works_on_any_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), true);
        // On this multi-threaded runtime.
        assert_eq!(b.topic_or_create_blocking("mt").unwrap().name, "mt");
        // On a current-thread runtime, and on a thread with none.
        let (b1, b2) = (b.clone(), b.clone());
        let ct = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { b1.topic_or_create_blocking("ct").map(|t| t.name.clone()) })
        });
        let none = std::thread::spawn(move || b2.topic_or_create_blocking("none").map(|t| t.name.clone()));
        assert_eq!(ct.join().unwrap().unwrap(), "ct");
        assert_eq!(none.join().unwrap().unwrap(), "none");
        assert_eq!(b.metadata().topics.keys().filter(|n| !n.starts_with("__")).count(), 3);
        assert!(matches!(b.topic_or_create_blocking("bad/name"), Err(BrokerError::InvalidTopic(_))));
    }

    #[tokio::test]
    async fn without_auto_creation_missing_topics_stay_missing() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path(), false);
        assert!(matches!(b.topic_or_create("t").await, Err(BrokerError::UnknownTopicOrPartition)));
        assert!(matches!(b.ensure_topic("bad/name").await, Err(BrokerError::InvalidTopic(_))));
        b.create_topic("t", Some(1), &BTreeMap::new(), false).await.unwrap();
        assert!(b.topic_or_create("t").await.is_ok());
        assert!(matches!(
            b.create_topic_as(NewTopic::new("rf").partitions(1), false).await.map(|c| c.replication_factor()),
            Ok(1)
        ));
        let rf0 = NewTopic { replication_factor: Some(0), ..NewTopic::new("rf0") };
        assert!(matches!(b.create_topic_as(rf0, false).await, Err(BrokerError::InvalidReplicationFactor(_))));
        assert!(matches!(
            b.set_topic_configs("nope", BTreeMap::new(), false).await,
            Err(BrokerError::UnknownTopicOrPartition)
        ));
        let bad: BTreeMap<String, String> = [("retention.ms".to_string(), "x".to_string())].into();
        assert!(matches!(b.set_dynamic_defaults(bad, false).await, Err(BrokerError::InvalidConfig(_))));
        let good: BTreeMap<String, String> = [("retention.ms".to_string(), "1234".to_string())].into();
        b.set_dynamic_defaults(good.clone(), false).await.unwrap();
        assert_eq!(b.metadata().broker_defaults, good);
        assert_eq!(b.topic_settings(&b.topic("t").unwrap()).log.retention_ms, Some(1234));
    }
}
