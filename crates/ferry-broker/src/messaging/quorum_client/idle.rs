//! Freeing a node's idle [`QuorumClient`]s. A client is made on first use
//! of a queue and reached by every channel of the node; without this it
//! would live (with its two tasks and its session on the leader) until
//! the process ends, however many queues came and went.
//!
//! A client is freed when nothing but the broker's map holds it (no
//! channel, consumer, in-flight publish or ISR wait: those hold it) and it
//! has nothing left to do (no publish queued or unconfirmed, no settlement
//! unanswered, no delivery taken from a remote leader unsettled), once
//! unused for [`IDLE`] or at once when its queue is no longer declared.
//! Its tasks wait without holding it and end at their next turn; its
//! session on the leader holds nothing and expires there. The next use
//! makes a new client, with a new session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;

use super::QuorumClient;
use crate::broker::Broker;

/// An unused client is freed after this.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

impl QuorumClient {
    /// Records a use.
    pub(super) fn touch(&self) {
        self.last_used.store(now_ms_u64(), Ordering::Relaxed);
    }

    /// Nothing queued, unconfirmed, unanswered or held.
    fn quiet(&self) -> bool {
        let settles = lock(&self.settles);
        lock(&self.publishes).is_empty()
            && self.forwarding.load(Ordering::Acquire) == 0
            && settles.is_empty()
            && !settles.sending
            && self.unsettled.load(Ordering::Acquire) <= 0
    }
}

impl Broker {
    /// Frees the clients nobody holds that are quiet, and unused for `idle`
    /// or of a queue no longer declared (the housekeeping tick, with
    /// [`IDLE`]); returns how many.
    pub(crate) fn free_idle_quorum_clients(&self, idle: Duration) -> usize {
        let image = self.metadata();
        let now = now_ms_u64();
        let mut clients = lock(&self.quorum_clients);
        let before = clients.len();
        clients.retain(|(vhost, name), c| {
            // Only the map holds it, so nobody can start using it while the
            // map is locked.
            if Arc::strong_count(c) > 1 || !c.quiet() {
                return true;
            }
            let declared = image.amqp.get(vhost).is_some_and(|d| d.queues.contains_key(name));
            let unused = now.saturating_sub(c.last_used.load(Ordering::Relaxed)) >= idle.as_millis() as u64;
            declared && !unused
        });
        let freed = before - clients.len();
        if freed > 0 {
            tracing::debug!(freed, "idle quorum queue clients freed");
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    use crate::messaging::consumer::Credit;
    use crate::messaging::quorum::tests::message;
    use crate::messaging::quorum_client::pipeline_tests::{Faults, setup};
    use crate::metadata::{AmqpRequest, ControllerRequest};

    /// A client with a publish out (its ISR wait delayed) or a consumer
    /// is kept; once confirmed and unheld it is freed, its tasks end, and
    /// the next use makes a new client that works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_clients_are_freed_and_busy_ones_kept() {
        let s = setup(Faults { commit_delay: Duration::from_millis(300), ..Faults::default() }).await;
        let client = s.two.quorum_client("/", "orders");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Box::new(move |ok| {
            let _ = tx.send(ok);
        });
        assert!(client.publish(&message(0), Some(done)).unwrap().is_none());
        let weak = Arc::downgrade(&client);
        drop(client);
        assert_eq!(s.two.free_idle_quorum_clients(Duration::ZERO), 0, "a publish is out");
        assert!(rx.await.unwrap(), "confirmed");

        // A consumer's channel holds the client.
        let held = s.two.quorum_client("/", "orders");
        assert!(Arc::ptr_eq(&held, &weak.upgrade().unwrap()), "the same client");
        let consumer = held.add_consumer(false, 10).unwrap();
        assert_eq!(s.two.free_idle_quorum_clients(Duration::ZERO), 0, "held by a channel");
        assert_eq!(s.two.free_idle_quorum_clients(super::IDLE), 0, "recently used");
        held.remove_consumer(&consumer);
        drop((held, consumer));

        // Quiet and unheld: freed (at once with no idle time), and its tasks
        // let go of it.
        tokio::time::timeout(Duration::from_secs(10), async {
            while s.two.free_idle_quorum_clients(Duration::ZERO) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("freed");
        tokio::time::timeout(Duration::from_secs(10), async {
            while weak.upgrade().is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("nothing holds a freed client");

        // The next use makes a new client, which publishes and consumes.
        let again = s.two.quorum_client("/", "orders");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Box::new(move |ok| {
            let _ = tx.send(ok);
        });
        assert!(again.publish(&message(1), Some(done)).unwrap().is_none());
        assert!(rx.await.unwrap(), "confirmed through the new client");
        let consumer = again.add_consumer(false, 10).unwrap();
        let credit = Notify::new();
        let d = tokio::time::timeout(Duration::from_secs(10), again.next_delivery(&consumer, &credit, || Credit::Yes))
            .await
            .expect("a delivery")
            .expect("not stopped");
        assert_eq!(&d.message.body[..], b"m0");
    }

    /// A client of a queue deleted meanwhile is freed at once, however
    /// recently it was used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_queues_client_is_freed_at_once() {
        let s = setup(Faults::default()).await;
        let client = s.two.quorum_client("/", "orders");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Box::new(move |ok| {
            let _ = tx.send(ok);
        });
        assert!(client.publish(&message(0), Some(done)).unwrap().is_none());
        assert!(rx.await.unwrap());
        drop(client);
        let unheld = || async {
            tokio::time::timeout(Duration::from_secs(10), async {
                while s.two.free_idle_quorum_clients(super::IDLE) == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
        };
        assert_eq!(s.two.free_idle_quorum_clients(super::IDLE), 0, "declared and recently used");
        let delete = ControllerRequest::Amqp(AmqpRequest::DeleteQueue { vhost: "/".into(), name: "orders".into() });
        s.leader.submit_change(delete).await.unwrap();
        s.sync_two();
        unheld().await.expect("freed once its queue is deleted");
    }
}
