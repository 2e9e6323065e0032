//! Appending one record to a topic, on the partition its key belongs to.

use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_records::compression::Compression;
use ferry_records::partitioner::partition_for_key;
use ferry_records::records::{NewRecord, build_batch};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::partition::{Acks, Appended};
use crate::stored::StoredRecord;
use crate::topic::Topic;

/// Spreads records without a key over the partitions.
static ROUND_ROBIN: AtomicUsize = AtomicUsize::new(0);

/// The partition (of `partitions`) a record with `key` goes to: Kafka's
/// default for a key (murmur2, as the Java client and librdkafka's
/// `murmur2_random` partitioner), round-robin for records without one.
pub fn partition_for(key: Option<&[u8]>, partitions: usize) -> usize {
    match key {
        Some(key) => partition_for_key(key, partitions),
        None => ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) % partitions.max(1),
    }
}

/// Appends `record` to `topic` as one uncompressed batch, on the partition
/// [`partition_for`] its key, with acks=all: await
/// [`Appended::acknowledged`] for durability.
pub fn append_by_key(topic: &Topic, record: &NewRecord<'_>) -> Result<Appended> {
    let index = partition_for(record.key, topic.partition_count());
    let partition = topic
        .partition(i32::try_from(index).map_err(|_| BrokerError::UnknownTopicOrPartition)?)
        .ok_or(BrokerError::NotLeaderOrFollower)?;
    let batch = build_batch(std::slice::from_ref(record), Compression::None, -1, -1, -1)?;
    partition.append(&batch, Acks::All)
}

impl Broker {
    /// [`append_by_key`] to the topic named `topic`, created if the broker
    /// auto-creates topics. The key's partition must be hosted here.
    pub fn append_record(&self, topic: &str, record: &StoredRecord) -> Result<Appended> {
        append_by_key(&*self.topic_or_create_blocking(topic)?, &record.as_new_record())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_where_kafka_puts_it() {
        // Kafka's murmur2 of "21" is -973932308: toPositive % 7 = 1173551340 % 7.
        assert_eq!(partition_for(Some(b"21"), 7), 1_173_551_340 % 7);
        assert_eq!(partition_for(Some(b"sensors/a"), 4), partition_for(Some(b"sensors/a"), 4));
        assert_eq!(partition_for(Some(b"x"), 0), 0);
    }

    #[test]
    fn records_without_a_key_take_turns() {
        let first = partition_for(None, 3);
        assert!(first < 3);
        assert_eq!(partition_for(None, 0), 0);
        // Other tests may take turns meanwhile; each partition still comes up.
        let seen: std::collections::BTreeSet<usize> = (0..300).map(|_| partition_for(None, 3)).collect();
        assert_eq!(seen.len(), 3);
    }
}
