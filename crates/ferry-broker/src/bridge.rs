//! Cross-protocol bridging: appending records that arrived through one
//! protocol to a topic that Kafka clients read, and tailing a topic to hand
//! its new records to another protocol. Records keep their headers, so
//! protocol properties cross over as record headers.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::broker::Broker;
use crate::error::Result;
use crate::partition::{Acks, Appended};
use crate::stored::{StoredRecord, decode_batches, encode_batch};

/// Kafka's default partitioner hashes the key with murmur2; any stable hash
/// keeps one key on one partition, which is what ordering needs. FNV-1a.
fn partition_for(key: &[u8], partitions: usize) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h as usize) % partitions.max(1)
}

impl Broker {
    /// Appends `record` to `topic` (created if the broker auto-creates
    /// topics), on the partition its key hashes to. Await
    /// [`Appended::acknowledged`] for durability.
    pub fn append_record(&self, topic: &str, record: &StoredRecord) -> Result<Appended> {
        let t = self.topic_or_create(topic)?;
        let partitions = t.partitions();
        let index = partition_for(record.key.as_deref().unwrap_or_default(), partitions.len());
        let p = partitions.get(index).ok_or(crate::BrokerError::UnknownTopicOrPartition)?;
        p.append(&encode_batch(std::slice::from_ref(record))?, Acks::All)
    }
}

/// Calls `on_record` with every record appended to `topic` (all partitions)
/// after this starts, until `stop` turns true. The topic is created if
/// missing (and auto-creation is on); otherwise it is waited for.
pub async fn tail(
    broker: Arc<Broker>,
    topic: String,
    mut on_record: impl FnMut(StoredRecord) + Send,
    mut stop: watch::Receiver<bool>,
) {
    let wake = Arc::new(Notify::new());
    let mut positions: Vec<u64> = Vec::new();
    loop {
        let Ok(t) = broker.topic_or_create(&topic) else {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                _ = stop.changed() => return,
            }
        };
        let partitions = t.partitions();
        while positions.len() < partitions.len() {
            // New partitions (and the first pass) start at their end.
            positions.push(partitions[positions.len()].high_watermark());
        }
        for (p, pos) in partitions.iter().zip(positions.iter_mut()) {
            p.register_waiter(&wake);
            while *pos < p.high_watermark() {
                let bytes = match p.read(*pos, 1 << 20).and_then(|s| Ok(s.map(|s| s.to_vec()).transpose()?)) {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "bridge read failed; skipping to the end");
                        *pos = p.high_watermark();
                        break;
                    }
                };
                let records = match decode_batches(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "bridge could not decode records; skipping them");
                        *pos = p.high_watermark();
                        break;
                    }
                };
                let before = *pos;
                for (offset, r) in records {
                    if offset >= *pos {
                        *pos = offset + 1;
                        on_record(r);
                    }
                }
                if *pos == before {
                    // Only control records or a gap: step over the batch.
                    *pos = before + 1;
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            // Also catches partitions added meanwhile.
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_one_partition() {
        assert_eq!(partition_for(b"sensors/a", 4), partition_for(b"sensors/a", 4));
        assert!(partition_for(b"x", 3) < 3);
        assert_eq!(partition_for(b"x", 0), 0);
    }
}
