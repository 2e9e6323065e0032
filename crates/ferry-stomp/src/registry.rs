//! The live STOMP connections and their subscriptions, for listing
//! (`ferry stomp connections|subscriptions`, the admin API's
//! `/v1/stomp/...`) and the `ferry_stomp_subscriptions` gauge. A
//! connection registers itself once CONNECTED and is gone when it closes
//! (an [`Entry`] guard); its subscriptions come and go with
//! SUBSCRIBE / UNSUBSCRIBE.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_broker::messaging::QueueHandle;

/// A connection as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id (it owns its exclusive queues by it).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The logged-in user.
    pub user: String,
    /// The virtual host.
    pub vhost: String,
    /// The negotiated STOMP version (`1.0`, `1.1`, `1.2`).
    pub version: &'static str,
    /// Wall-clock ms of the CONNECTED frame.
    pub connected_at_ms: i64,
    /// Heart-beat intervals in ms: (the server sends, the client must send); 0: none.
    pub heartbeat: (u32, u32),
    /// Subscriptions open now.
    pub subscriptions: usize,
}

/// A subscription as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The connection it belongs to.
    pub connection: u64,
    /// Its `id` header.
    pub id: String,
    /// The destination it was made for.
    pub destination: String,
    /// The queue it consumes.
    pub queue: String,
    /// `auto`, `client` or `client-individual`.
    pub ack: &'static str,
    /// `prefetch-count` (0: unbounded).
    pub prefetch: u32,
    /// A durable subscription (its queue outlives the connection).
    pub durable: bool,
    /// The queue's messages ready for delivery now.
    pub ready: u64,
    /// The queue's messages delivered and not yet acknowledged.
    pub unacked: u64,
}

/// What a subscription keeps in the registry.
#[derive(Clone, Debug)]
struct Sub {
    destination: String,
    queue: QueueHandle,
    ack: &'static str,
    prefetch: u32,
    durable: bool,
}

#[derive(Debug)]
struct Conn {
    info: ConnectionInfo,
    subs: BTreeMap<String, Sub>,
}

/// Every open connection of this node, by id.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<BTreeMap<u64, Conn>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a connection; it is listed until the returned entry drops.
    pub fn add(self: &Arc<Self>, info: ConnectionInfo) -> Entry {
        let id = info.id;
        self.lock().insert(id, Conn { info, subs: BTreeMap::new() });
        Entry { registry: self.clone(), id }
    }

    /// Open connections, by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.lock().values().map(|c| ConnectionInfo { subscriptions: c.subs.len(), ..c.info.clone() }).collect()
    }

    /// Open subscriptions, by connection then id, with their queues' counts.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        // Queues' counts are read outside the registry's lock.
        let subs: Vec<(u64, String, Sub)> = self
            .lock()
            .iter()
            .flat_map(|(&conn, c)| c.subs.iter().map(move |(id, s)| (conn, id.clone(), s.clone())))
            .collect();
        subs.into_iter()
            .map(|(connection, id, s)| SubscriptionInfo {
                connection,
                id,
                queue: s.queue.name().to_string(),
                ready: s.queue.counts().0,
                unacked: s.queue.unacked_count() as u64,
                destination: s.destination,
                ack: s.ack,
                prefetch: s.prefetch,
                durable: s.durable,
            })
            .collect()
    }

    /// Subscriptions open on every connection.
    pub fn subscription_count(&self) -> usize {
        self.lock().values().map(|c| c.subs.len()).sum()
    }
}

/// A registered connection; dropping it unlists it with its subscriptions.
pub struct Entry {
    registry: Arc<Registry>,
    id: u64,
}

impl Entry {
    /// Lists a subscription of this connection.
    pub fn subscribed(&self, id: &str, destination: &str, queue: QueueHandle, ack: &'static str, prefetch: u32) {
        if let Some(c) = self.registry.lock().get_mut(&self.id) {
            let sub = Sub { destination: destination.to_string(), queue, ack, prefetch, durable: false };
            c.subs.insert(id.to_string(), sub);
        }
    }

    /// Marks a listed subscription durable.
    pub fn durable(&self, id: &str) {
        if let Some(s) = self.registry.lock().get_mut(&self.id).and_then(|c| c.subs.get_mut(id)) {
            s.durable = true;
        }
    }

    /// Unlists a subscription.
    pub fn unsubscribed(&self, id: &str) {
        if let Some(c) = self.registry.lock().get_mut(&self.id) {
            c.subs.remove(id);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> ConnectionInfo {
        ConnectionInfo {
            id,
            peer: "127.0.0.1:5000".parse().unwrap(),
            user: "guest".into(),
            vhost: "/".into(),
            version: "1.2",
            connected_at_ms: 1,
            heartbeat: (0, 0),
            subscriptions: 0,
        }
    }

    #[test]
    fn connections_are_listed_while_their_entries_live() {
        let r = Arc::new(Registry::default());
        let a = r.add(info(7));
        let b = r.add(info(3));
        assert_eq!(r.connections().iter().map(|c| c.id).collect::<Vec<_>>(), [3, 7]);
        drop(a);
        assert_eq!(r.connections().iter().map(|c| c.id).collect::<Vec<_>>(), [3]);
        drop(b);
        assert!(r.connections().is_empty());
        assert_eq!(r.subscription_count(), 0);
    }
}
