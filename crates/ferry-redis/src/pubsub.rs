//! Pub/sub: channels, glob patterns and shard channels, fire-and-forget as
//! in Redis.
//!
//! Why a hub of its own rather than the broker's routing: Redis pub/sub
//! keeps nothing (a message with no subscriber is gone, a slow subscriber
//! is cut off) and PUBLISH must answer how many received it. Routing
//! through exchanges and queues would store every message and could not
//! count receivers; MQTT's non-durable subscriptions live inside the MQTT
//! front-end, which another front-end may not import. So the hub is an
//! in-memory map of channel -> subscriber senders, on this node only
//! (like Redis without a cluster). Shard channels (SSUBSCRIBE/SPUBLISH) are
//! a separate namespace, as in Redis; with one node every shard is here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::resp::Reply;

/// The kind of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SUBSCRIBE: exact channel names.
    Channel,
    /// PSUBSCRIBE: glob patterns over channel names.
    Pattern,
    /// SSUBSCRIBE: shard channels, their own namespace.
    Shard,
}

/// A connection's end of its subscriptions: where messages arrive.
pub struct Subscriber {
    tx: mpsc::Sender<Reply>,
    /// Set when a message did not fit: the connection closes (Redis's
    /// output buffer limit for pub/sub clients).
    pub overflowed: AtomicBool,
}

impl Subscriber {
    /// A subscriber with room for `buffer` messages, and its receiving end.
    pub fn new(buffer: usize) -> (Arc<Subscriber>, mpsc::Receiver<Reply>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        (Arc::new(Subscriber { tx, overflowed: AtomicBool::new(false) }), rx)
    }

    fn deliver(&self, m: Reply) -> bool {
        let sent = self.tx.try_send(m).is_ok();
        if !sent {
            self.overflowed.store(true, Ordering::Relaxed);
        }
        sent
    }
}

type Subs = HashMap<Bytes, HashMap<u64, Arc<Subscriber>>>;

/// Every subscription on this node.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<[Subs; 3]>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Channel => 0,
        Kind::Pattern => 1,
        Kind::Shard => 2,
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, [Subs; 3]> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes connection `conn` to `name`.
    pub fn subscribe(&self, kind: Kind, name: Bytes, conn: u64, sub: &Arc<Subscriber>) {
        self.lock()[slot(kind)].entry(name).or_default().insert(conn, sub.clone());
    }

    /// Ends connection `conn`'s subscription to `name`.
    pub fn unsubscribe(&self, kind: Kind, name: &Bytes, conn: u64) {
        let mut all = self.lock();
        let map = &mut all[slot(kind)];
        if let Some(subs) = map.get_mut(name) {
            subs.remove(&conn);
            if subs.is_empty() {
                map.remove(name);
            }
        }
    }

    /// Sends `payload` on `channel` (a shard channel if `shard`) to every
    /// matching subscriber; returns how many got it.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes, shard: bool) -> i64 {
        let all = self.lock();
        let mut n = 0;
        if shard {
            for s in all[2].get(channel).into_iter().flat_map(HashMap::values) {
                let m = Reply::Push(vec![
                    Reply::text("smessage"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(payload.clone()),
                ]);
                n += i64::from(s.deliver(m));
            }
            return n;
        }
        for s in all[0].get(channel).into_iter().flat_map(HashMap::values) {
            let m =
                Reply::Push(vec![Reply::text("message"), Reply::Bulk(channel.clone()), Reply::Bulk(payload.clone())]);
            n += i64::from(s.deliver(m));
        }
        for (pattern, subs) in &all[1] {
            if !crate::glob::matches(pattern, channel) {
                continue;
            }
            for s in subs.values() {
                let m = Reply::Push(vec![
                    Reply::text("pmessage"),
                    Reply::Bulk(pattern.clone()),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(payload.clone()),
                ]);
                n += i64::from(s.deliver(m));
            }
        }
        n
    }
}

/// One connection's subscriptions.
#[derive(Default)]
pub struct Subscriptions {
    /// Names by kind.
    pub names: HashMap<Kind, HashSet<Bytes>>,
}

impl Subscriptions {
    /// Channels plus patterns (what SUBSCRIBE/PSUBSCRIBE replies count).
    pub fn count(&self, kind: Kind) -> i64 {
        let n = |k| self.names.get(&k).map_or(0, HashSet::len);
        (if kind == Kind::Shard { n(Kind::Shard) } else { n(Kind::Channel) + n(Kind::Pattern) }) as i64
    }

    /// Any subscription at all (the connection is in pub/sub mode).
    pub fn active(&self) -> bool {
        self.names.values().any(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_reaches_channels_and_patterns_and_counts() {
        let hub = Hub::default();
        let (a, mut ra) = Subscriber::new(8);
        let (b, mut rb) = Subscriber::new(8);
        hub.subscribe(Kind::Channel, "news".into(), 1, &a);
        hub.subscribe(Kind::Pattern, "n*".into(), 2, &b);
        assert_eq!(hub.publish(&"news".into(), &"hi".into(), false), 2);
        assert_eq!(hub.publish(&"other".into(), &"x".into(), false), 0);
        assert_eq!(hub.publish(&"news".into(), &"x".into(), true), 0, "shard channels are apart");
        assert!(matches!(ra.try_recv().unwrap(), Reply::Push(v) if v.len() == 3));
        assert!(matches!(rb.try_recv().unwrap(), Reply::Push(v) if v.len() == 4));
        hub.unsubscribe(Kind::Channel, &"news".into(), 1);
        assert_eq!(hub.publish(&"news".into(), &"again".into(), false), 1);
    }

    #[test]
    fn a_full_subscriber_is_marked() {
        let hub = Hub::default();
        let (a, _ra) = Subscriber::new(1);
        hub.subscribe(Kind::Shard, "s".into(), 1, &a);
        assert_eq!(hub.publish(&"s".into(), &"1".into(), true), 1);
        assert_eq!(hub.publish(&"s".into(), &"2".into(), true), 0);
        assert!(a.overflowed.load(Ordering::Relaxed));
    }
}
