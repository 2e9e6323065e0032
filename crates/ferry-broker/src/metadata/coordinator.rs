//! Which node coordinates a group or a transactional id: the leader of the
//! key's partition of `__consumer_offsets` or `__transaction_state`, as in
//! Kafka. The one place this is decided; the Kafka handlers and any other
//! caller ask here.

use super::image::{MetadataImage, NodeInfo};

/// The internal topic holding groups' offsets (and deciding their coordinator).
pub const GROUP_TOPIC: &str = "__consumer_offsets";
/// The internal topic holding transactional ids' state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// The kind of key a coordinator is looked up for (FindCoordinator's key type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorKind {
    /// A consumer group id (key type 0).
    Group,
    /// A transactional id (key type 1).
    Transaction,
}

impl CoordinatorKind {
    /// The internal topic whose partition leaders coordinate this kind.
    pub fn topic(self) -> &'static str {
        match self {
            CoordinatorKind::Group => GROUP_TOPIC,
            CoordinatorKind::Transaction => TXN_TOPIC,
        }
    }
}

/// Java's `String.hashCode` over the key's UTF-16 code units, which Kafka
/// uses to pick the key's partition (Kafka takes `Utils.abs(hash)`; Ferry
/// takes `hash & 0x7fffffff`, the same for every non-negative hash; only
/// Ferry's own nodes need to agree on it).
pub fn java_string_hash(key: &str) -> i32 {
    key.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of the internal topic that `key` maps to among `partitions`.
pub fn coordinator_partition(key: &str, partitions: usize) -> Option<i32> {
    let n = i32::try_from(partitions).ok().filter(|n| *n > 0)?;
    Some((java_string_hash(key) & 0x7fff_ffff) % n)
}

impl MetadataImage {
    /// The node coordinating `key` of `kind`: the leader of the key's
    /// partition of the internal topic, if it has one and the node is live.
    /// `None`: COORDINATOR_NOT_AVAILABLE (topic missing, no leader).
    pub fn coordinator(&self, kind: CoordinatorKind, key: &str) -> Option<&NodeInfo> {
        let topic = self.topic(kind.topic())?;
        let index = coordinator_partition(key, topic.partitions.len())?;
        let leader = topic.partitions.get(usize::try_from(index).ok()?)?.leader;
        self.nodes.get(&leader).filter(|n| !n.fenced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_java_strings() {
        // Values from Java's "…".hashCode().
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("group-1"), 293_427_299);
        assert_eq!(java_string_hash("my-transactional-id-with-a-long-name"), -388_061_034);
        // A negative hash keeps its low 31 bits.
        assert_eq!(coordinator_partition("my-transactional-id-with-a-long-name", 50), Some(14));
        assert_eq!(coordinator_partition("group-1", 50), Some(49));
        assert_eq!(coordinator_partition("a", 0), None);
    }
}
