//! A topic as this node hosts it, and its `topic.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ferry_util::sync::read;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metrics::TopicStats;
use crate::partition::Partition;
use crate::topic_config::TopicSettings;

/// A topic as this node hosts it: the partitions the metadata image places
/// here, and the topic's config overrides. Built and changed only by
/// [`Broker::apply_image`](crate::Broker::apply_image).
pub struct Topic {
    /// Topic name, validated by [`validate_topic_name`](crate::validate_topic_name).
    pub name: String,
    /// Topic id (KIP-516), stable across restarts.
    pub id: Uuid,
    pub(crate) dir: PathBuf,
    pub(crate) overrides: RwLock<BTreeMap<String, String>>,
    pub(crate) settings: Arc<RwLock<TopicSettings>>,
    /// The local partitions, by index.
    pub(crate) partitions: RwLock<BTreeMap<i32, Arc<Partition>>>,
    /// Partitions in the cluster (the image's count), local or not.
    pub(crate) count: AtomicUsize,
    /// Whether the last reconciliation opened every placed partition (an
    /// unchanged topic is skipped only then).
    pub(crate) synced: AtomicBool,
    /// Traffic counters, for metrics.
    pub stats: TopicStats,
}

impl Topic {
    /// The partitions hosted on this node, in index order.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        read(&self.partitions).values().cloned().collect()
    }

    /// Partition `index` if this node hosts it; `None` if out of range or
    /// placed on other nodes only.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        read(&self.partitions).get(&index).cloned()
    }

    /// Number of partitions of the topic in the cluster (hosted here or not).
    pub fn partition_count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Config values set on this topic.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        read(&self.overrides).clone()
    }
}

/// `<data>/topics/<name>/topic.json`: what a restart needs to tell the
/// directory's topic from another of the same name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TopicFile {
    pub(crate) id: Uuid,
    pub(crate) partitions: usize,
    pub(crate) configs: BTreeMap<String, String>,
    /// The image's applied index when this node first hosted the topic (0:
    /// written before the cluster metadata existed). A directory whose id
    /// the image does not know is stale only if the image is at least this
    /// new; otherwise it belongs to a topic the image has not reached yet
    /// (a restarted node replaying its metadata log).
    #[serde(default)]
    pub(crate) created_index: u64,
}
