//! The consumer feed every queue-reading front-end runs (AMQP's
//! basic.consume, STOMP's SUBSCRIBE): take the next delivery while the
//! consumer has credit (prefetch), sleep on the queue's and the credit's
//! wake-ups otherwise, without missing one that fires in between.

use tokio::sync::Notify;

use super::queue::{Delivery, Queue};

/// Whether a consumer may take another delivery now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credit {
    /// Yes: below its prefetch limit.
    Yes,
    /// Not now: wait for `credit_changed` (an ack, a qos change).
    No,
    /// The consumer is gone (cancelled, connection closed): stop.
    Gone,
}

/// Why a consumer's feed ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedEnd {
    /// The consumer went away.
    Stopped,
    /// The queue was deleted under the consumer.
    QueueDeleted,
}

/// The next delivery for consumer `consumer` of `queue`, once `credit()`
/// allows one; otherwise waits for `credit_changed` or the queue's
/// notifier. Both wake-ups are armed before the state they guard is read,
/// so none is lost. Front-ends loop on it and write what it returns.
pub async fn next_delivery(
    queue: &Queue,
    consumer: u64,
    credit_changed: &Notify,
    mut credit: impl FnMut() -> Credit,
) -> Result<Delivery, FeedEnd> {
    loop {
        let changed = credit_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match credit() {
            Credit::Gone => return Err(FeedEnd::Stopped),
            Credit::No => {
                changed.await;
                continue;
            }
            Credit::Yes => {}
        }
        let available = queue.notifier().notified();
        tokio::pin!(available);
        available.as_mut().enable();
        match queue.take(Some(consumer)) {
            Ok(Some(d)) => return Ok(d),
            Ok(None) if queue.is_deleted() => return Err(FeedEnd::QueueDeleted),
            Ok(None) => {
                tokio::select! {
                    _ = available => {}
                    _ = changed => {}
                }
            }
            Err(e) => {
                tracing::warn!(queue = %queue.name(), error = %e, "reading a queue failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}
