//! The AlterPartition requests this node's leaders have sent and not had
//! answered yet: at most one per partition, as a Kafka leader does. Sending
//! again while one is in flight (the retry timer ran out because the
//! controller answers slowly, say a queue of a hundred internal partitions'
//! changes after a node came back) only lengthened the controller's queue,
//! and every stale copy came back refused ("fenced", "stale epoch"),
//! flooding the log.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ferry_util::sync::lock;
use uuid::Uuid;

/// A partition: its topic id and index.
type Key = (Uuid, i32);

/// The partitions with a request in flight.
#[derive(Default)]
pub(super) struct InFlight(Arc<Mutex<HashSet<Key>>>);

/// One request in flight; dropping it (answered, or given up) lets the
/// partition ask again.
pub(super) struct Sent {
    set: Arc<Mutex<HashSet<Key>>>,
    key: Key,
}

impl InFlight {
    /// Marks `key` in flight, unless it is already.
    pub(super) fn send(&self, key: Key) -> Option<Sent> {
        lock(&self.0).insert(key).then(|| Sent { set: self.0.clone(), key })
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_partition_until_answered() {
        let in_flight = InFlight::default();
        let (a, b) = ((Uuid::from_u128(1), 0), (Uuid::from_u128(1), 1));
        let sent = in_flight.send(a).expect("first");
        assert!(in_flight.send(a).is_none(), "not again while in flight");
        let other = in_flight.send(b).expect("another partition");
        drop(sent);
        assert!(in_flight.send(a).is_some(), "again once answered");
        drop(other);
    }
}
