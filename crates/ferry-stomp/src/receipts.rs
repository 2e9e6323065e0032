//! RECEIPT frames, in order, each once what came before is safe: a SEND
//! counts as done when every queue it reached has it on disk (persistent
//! messages in durable queues) and every Kafka append is acknowledged, as
//! AMQP publisher confirms count. A DISCONNECT's receipt so promises that
//! every earlier SEND is stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use ferry_broker::Appended;
use ferry_broker::messaging::PublishWait;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::codec::{Frame, Version, encode};
use crate::metrics::StompStats;

/// Something a SEND waits for before it counts as stored.
pub enum Wait {
    /// A message in a queue: on a durable queue's disk, or stored by the
    /// node serving it (forwarded, issue #17).
    Queue(PublishWait),
    /// A Kafka append being acknowledged.
    Topic(Appended),
    /// A delayed message reaching its delay store's disk (or, in a
    /// cluster, the delay queue's ISR).
    Delayed(PublishWait),
}

impl Wait {
    async fn done(self) -> bool {
        match self {
            Wait::Queue(wait) => {
                let (tx, rx) = oneshot::channel();
                wait.on_done(move |ok| {
                    let _ = tx.send(ok);
                });
                rx.await.unwrap_or(false)
            }
            Wait::Topic(a) => a.acknowledged().await.is_ok(),
            Wait::Delayed(wait) => {
                let (tx, rx) = oneshot::channel();
                wait.on_done(move |ok| {
                    let _ = tx.send(ok);
                });
                rx.await.unwrap_or(false)
            }
        }
    }
}

/// Most SENDs of one connection waiting to be stored before the
/// connection stops reading more.
const MAX_PENDING: usize = 4096;

/// The chain of pending receipts of one connection.
pub struct Receipts {
    prev: Option<oneshot::Receiver<bool>>,
    /// Links in the chain not yet done.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    out: mpsc::Sender<Bytes>,
    version: Version,
    stats: Arc<StompStats>,
    /// Raised when a SEND could not be stored: the connection ends.
    pub failed: Arc<Notify>,
}

impl Receipts {
    /// Receipts written to `out`.
    pub fn new(out: mpsc::Sender<Bytes>, version: Version, stats: Arc<StompStats>) -> Receipts {
        Receipts { prev: None, pending: Arc::default(), out, version, stats, failed: Arc::new(Notify::new()) }
    }

    /// After everything before and `waits`, sends a RECEIPT for `receipt`
    /// (if asked for). Failures send an ERROR and raise [`Receipts::failed`].
    pub async fn after(&mut self, waits: Vec<Wait>, receipt: Option<String>) {
        if waits.is_empty() && receipt.is_none() {
            return;
        }
        if waits.is_empty() && self.prev.is_none() {
            if let Some(r) = receipt {
                let _ = self.out.send(self.frame(&r, true)).await;
                self.stats.receipt();
            }
            return;
        }
        if self.pending.load(Ordering::Acquire) >= MAX_PENDING {
            // Backpressure: the client waits while the disk catches up.
            self.drain().await;
        }
        let prev = self.prev.take();
        let (tx, rx) = oneshot::channel();
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::AcqRel);
        self.prev = Some(rx);
        let (out, failed, stats) = (self.out.clone(), self.failed.clone(), self.stats.clone());
        let (ok_frame, err_frame) = match &receipt {
            Some(r) => (Some(self.frame(r, true)), self.frame(r, false)),
            None => (None, self.frame("", false)),
        };
        tokio::spawn(async move {
            let mut ok = match prev {
                Some(p) => p.await.unwrap_or(false),
                None => true,
            };
            for w in waits {
                ok &= w.done().await;
            }
            if ok {
                if let Some(f) = ok_frame {
                    let _ = out.send(f).await;
                    stats.receipt();
                }
            } else {
                let _ = out.send(err_frame).await;
                failed.notify_one();
            }
            pending.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(ok);
        });
    }

    /// Waits until every pending receipt is sent; false if a SEND failed.
    pub async fn drain(&mut self) -> bool {
        match self.prev.take() {
            Some(p) => p.await.unwrap_or(false),
            None => true,
        }
    }

    fn frame(&self, receipt: &str, ok: bool) -> Bytes {
        let f = if ok {
            Frame::new("RECEIPT").with("receipt-id", receipt)
        } else {
            let body = Bytes::from_static(b"the message could not be stored");
            let mut f = Frame::new("ERROR").with("message", "message not stored");
            if !receipt.is_empty() {
                f = f.with("receipt-id", receipt);
            }
            f.with("content-type", "text/plain").with("content-length", body.len().to_string()).with_body(body)
        };
        let mut out = BytesMut::new();
        encode(&f, self.version, &mut out);
        out.freeze()
    }
}
