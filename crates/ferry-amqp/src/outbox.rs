//! The connection's outgoing frames: any task or thread (consumers, the
//! flusher thread confirming publishes) queues encoded frames without
//! waiting; the writer task sends them in order. Deliveries stop being
//! produced while too many bytes are queued (backpressure).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

/// Deliveries pause while more than this is queued for the socket.
const HIGH_WATER: usize = 4 << 20;

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

impl Outbox {
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox { tx, queued: Arc::default(), drained: Arc::new(Notify::new()) }, rx)
    }

    /// Queues frames; false once the writer is gone.
    pub fn send(&self, frames: Bytes) -> bool {
        self.queued.fetch_add(frames.len(), Ordering::AcqRel);
        self.tx.send(frames).is_ok()
    }

    pub fn is_full(&self) -> bool {
        self.queued.load(Ordering::Acquire) > HIGH_WATER
    }

    /// Far past the high-water mark: deliveries alone stop short of this,
    /// so only a client that does not read its replies gets here.
    pub fn is_overflowing(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 4 * HIGH_WATER
    }

    /// Waits until the queue drops below the high-water mark.
    pub async fn wait_room(&self) {
        loop {
            let n = self.drained.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if !self.is_full() || self.tx.is_closed() {
                return;
            }
            n.await;
        }
    }

    /// Writes queued frames to `wr` until every sender is dropped or the
    /// socket fails; batches what is queued into one write.
    pub async fn run_writer<W: AsyncWrite + Unpin>(
        self,
        mut rx: mpsc::UnboundedReceiver<Bytes>,
        wr: W,
    ) -> std::io::Result<()> {
        let queued = self.queued.clone();
        let drained = self.drained.clone();
        // The writer must not keep the channel open itself.
        drop(self);
        let mut wr = tokio::io::BufWriter::with_capacity(128 * 1024, wr);
        while let Some(first) = rx.recv().await {
            let mut n = first.len();
            wr.write_all(&first).await?;
            while n < 1 << 20 {
                match rx.try_recv() {
                    Ok(more) => {
                        n += more.len();
                        wr.write_all(&more).await?;
                    }
                    Err(_) => break,
                }
            }
            wr.flush().await?;
            let before = queued.fetch_sub(n, Ordering::AcqRel);
            if before > HIGH_WATER && before - n <= HIGH_WATER {
                drained.notify_waiters();
            }
        }
        wr.flush().await?;
        wr.into_inner().shutdown().await
    }
}
