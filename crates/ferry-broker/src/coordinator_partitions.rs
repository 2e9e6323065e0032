//! The partitions of an internal topic (`__consumer_offsets` or
//! `__transaction_state`) whose keys a coordinator on this node serves: the
//! ones this node leads and has loaded (replayed). A key maps to its
//! partition as in Kafka ([`coordinator_partition`]); a key whose partition
//! is not loaded here is refused with NOT_COORDINATOR.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ferry_util::sync::{read, write};

use crate::metadata::coordinator_partition;
use crate::partition::Partition;

struct Loaded {
    partition: Arc<Partition>,
    leader_epoch: i32,
}

/// Loaded partitions of one internal topic, by index.
#[derive(Default)]
pub(crate) struct CoordinatorPartitions {
    loaded: RwLock<BTreeMap<i32, Loaded>>,
    /// The internal topic's partition count (fixed once created).
    count: AtomicUsize,
}

impl CoordinatorPartitions {
    /// The internal topic's partition count (0 before any load).
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The partition index `key` maps to; `None` before any load.
    pub(crate) fn index_of(&self, key: &str) -> Option<i32> {
        coordinator_partition(key, self.count.load(Ordering::Acquire))
    }

    /// The loaded partition `key` maps to, if this node serves it.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Partition>> {
        let index = self.index_of(key)?;
        read(&self.loaded).get(&index).map(|l| l.partition.clone())
    }

    /// Whether `key`'s partition is loaded here.
    pub(crate) fn serves(&self, key: &str) -> bool {
        self.index_of(key).is_some_and(|i| read(&self.loaded).contains_key(&i))
    }

    /// The leader epoch partition `index` was loaded in, if loaded.
    pub(crate) fn epoch(&self, index: i32) -> Option<i32> {
        read(&self.loaded).get(&index).map(|l| l.leader_epoch)
    }

    /// Marks partition `index` (of `count`) loaded in `leader_epoch`.
    pub(crate) fn insert(&self, index: i32, count: usize, partition: Arc<Partition>, leader_epoch: i32) {
        self.count.store(count, Ordering::Release);
        write(&self.loaded).insert(index, Loaded { partition, leader_epoch });
    }

    /// Marks partition `index` unloaded; true if it was loaded.
    pub(crate) fn remove(&self, index: i32) -> bool {
        write(&self.loaded).remove(&index).is_some()
    }

    /// Indexes of the loaded partitions.
    pub(crate) fn indexes(&self) -> Vec<i32> {
        read(&self.loaded).keys().copied().collect()
    }

    /// Whether every partition of the topic is loaded here (a single node,
    /// or a node leading them all).
    pub(crate) fn all_loaded(&self) -> bool {
        let count = self.count.load(Ordering::Acquire);
        count > 0 && read(&self.loaded).len() == count
    }
}
