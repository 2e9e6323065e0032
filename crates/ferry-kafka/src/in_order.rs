//! A connection's responses in request order, the unfinished ones (a long
//! poll, an fsync wait, a group join) worked out on the writer's own task.
//!
//! Each unfinished response used to be a task of its own that handed its
//! result to the writer task: whoever finished it (the flusher thread after
//! an fsync, a produce waking a long poll) woke that task, which woke the
//! writer, which sent. Polled here, the same wake-up lands on the writer,
//! which sends in the same turn: one task hand-off fewer on the path of
//! every fetched record. The futures only wait and encode (their effects,
//! the append or the join, happened when the request was read), so they
//! run side by side on one task; dropped unsent when the connection fails.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::response::Response;

/// A response still being worked out.
pub type Working = Pin<Box<dyn Future<Output = Response> + Send>>;

enum Slot {
    Ready(Response),
    Working(Working),
}

/// Responses in request order.
#[derive(Default)]
pub struct InOrder {
    slots: VecDeque<Slot>,
    /// Unfinished responses among `slots`.
    working: usize,
}

impl InOrder {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn push_ready(&mut self, r: Response) {
        self.slots.push_back(Slot::Ready(r));
    }

    pub fn push_working(&mut self, f: Working) {
        self.slots.push_back(Slot::Working(f));
        self.working += 1;
    }

    /// Polls every unfinished response (any of them may be the one woken;
    /// there are at most a connection's in-flight requests), and takes the
    /// first in order if it is done. `Pending` when empty.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Response> {
        if self.working > 0 {
            for slot in &mut self.slots {
                if let Slot::Working(f) = slot
                    && let Poll::Ready(r) = f.as_mut().poll(cx)
                {
                    *slot = Slot::Ready(r);
                    self.working -= 1;
                }
            }
        }
        if matches!(self.slots.front(), Some(Slot::Ready(_)))
            && let Some(Slot::Ready(r)) = self.slots.pop_front()
        {
            return Poll::Ready(r);
        }
        Poll::Pending
    }

    /// The next response in order, once it is done (never, when empty).
    pub async fn next(&mut self) -> Response {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next response if it is done now (registering the caller's
    /// waker for the unfinished ones either way).
    pub async fn ready_now(&mut self) -> Option<Response> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match self.poll_next(cx) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::oneshot;

    fn response(tag: &'static [u8]) -> Response {
        Response { chunks: vec![crate::response::Chunk::Bytes(Bytes::from_static(tag))] }
    }

    fn tag(r: &Response) -> Vec<u8> {
        match &r.chunks[0] {
            crate::response::Chunk::Bytes(b) => b.to_vec(),
            crate::response::Chunk::File(_) => Vec::new(),
        }
    }

    fn waiting(rx: oneshot::Receiver<&'static [u8]>) -> Working {
        Box::pin(async move { response(rx.await.unwrap_or(b"dropped")) })
    }

    #[tokio::test]
    async fn answers_in_request_order_whatever_finishes_first() {
        let mut q = InOrder::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx3, rx3) = oneshot::channel();
        q.push_working(waiting(rx1));
        q.push_ready(response(b"2"));
        q.push_working(waiting(rx3));
        assert!(q.ready_now().await.is_none(), "the first is still waiting");
        tx3.send(b"3").unwrap();
        assert!(q.ready_now().await.is_none(), "the third may not overtake the first");
        tx1.send(b"1").unwrap();
        let order: Vec<_> = [q.next().await, q.next().await, q.next().await].iter().map(tag).collect();
        assert_eq!(order, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        assert!(q.is_empty());
        assert!(q.ready_now().await.is_none());
    }

    #[tokio::test]
    async fn a_later_response_is_worked_out_while_an_earlier_one_waits() {
        // The third's work must not wait for the first to finish: its
        // wake-up (here, its send) is seen while the first still waits.
        let mut q = InOrder::default();
        let (_tx1, rx1) = oneshot::channel::<&'static [u8]>();
        let (tx2, rx2) = oneshot::channel();
        q.push_working(waiting(rx1));
        q.push_working(waiting(rx2));
        tx2.send(b"2").unwrap();
        assert!(q.ready_now().await.is_none());
        assert_eq!(q.working, 1, "the second finished behind the first");
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn the_writer_is_woken_by_a_finishing_response() {
        let mut q = InOrder::default();
        let (tx, rx) = oneshot::channel();
        q.push_working(waiting(rx));
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(b"late").unwrap();
        });
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), q.next()).await.expect("woken");
        assert_eq!(tag(&r), b"late");
        sender.await.unwrap();
    }
}
