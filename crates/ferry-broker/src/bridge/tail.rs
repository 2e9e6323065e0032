//! Following a topic: every committed record appended from now on, handed
//! to another protocol as it becomes readable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::committed::read_committed;
use crate::broker::Broker;
use crate::stored::StoredRecord;

/// Calls `on_record` with every committed record (see
/// [`read_committed`]) of `topic`'s partitions from their last stable
/// offset when this starts (partitions added later: from their start),
/// until `stop` turns true. A record of a transaction comes once it commits;
/// aborted ones and markers never do. The topic is created if missing (and
/// auto-creation is on); otherwise it is waited for.
pub async fn tail(
    broker: Arc<Broker>,
    topic: String,
    mut on_record: impl FnMut(StoredRecord) + Send,
    mut stop: watch::Receiver<bool>,
) {
    let wake = Arc::new(Notify::new());
    // By partition index: only the partitions hosted here are followed.
    let mut positions: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
    let mut first_pass = true;
    loop {
        let Ok(t) = broker.topic_or_create(&topic).await else {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.changed() => return,
            }
        };
        let partitions = t.partitions();
        for p in &partitions {
            // Below the LSO everything is decided; past it a transaction
            // may still commit, so that is where "from now on" starts.
            positions
                .entry(p.index)
                .or_insert_with(|| if first_pass { p.last_stable_offset() } else { p.log_start_offset() });
        }
        first_pass = false;
        for p in &partitions {
            let Some(pos) = positions.get_mut(&p.index) else { continue };
            // Before reading: a record landing after the read wakes us.
            p.register_waiter(&wake);
            loop {
                match read_committed(p, *pos, 1 << 20) {
                    Ok(Some(read)) => {
                        *pos = read.next;
                        for (_, r) in read.records {
                            on_record(r);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%topic, partition = p.index, error = %e, "bridge read failed; skipping to the last stable offset");
                        *pos = p.last_stable_offset();
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            // Also catches partitions added meanwhile.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
