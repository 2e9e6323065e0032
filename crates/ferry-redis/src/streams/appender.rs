//! Group commit of XADDs across connections: a stream's entries go to one
//! task per stream, which appends whatever has queued up as one record
//! batch (one CRC, one write, one flush request for many clients' XADDs),
//! one batch on its way to disk at a time ([`crate::group_commit`]). Each
//! XADD's reply still waits for its own entry to be durable.
//!
//! Entries are queued under the stream's lock, right after their ids are
//! given out, so the log keeps them in id order.

use std::sync::{Arc, Weak};

use ferry_broker::stored::{StoredRecord, encode_batch};
use ferry_broker::{Acks, Partition};
use tokio::sync::{mpsc, oneshot};

use super::Stream;
use crate::error::{CmdResult, CommandError};
use crate::group_commit;

/// Entries taken into one batch at most.
const MAX_BATCH: usize = 1024;

type Done = oneshot::Sender<CmdResult<()>>;

/// The queue into a stream's appending task.
pub struct Appender {
    tx: mpsc::UnboundedSender<(StoredRecord, Done)>,
}

impl Appender {
    /// Starts the task appending to `p`; it ends with the stream's state
    /// (`stream`) or when the appender is dropped.
    pub fn start(p: Arc<Partition>, stream: Weak<Stream>) -> Appender {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(p, stream, rx));
        Appender { tx }
    }

    /// Queues `record`; the receiver resolves once it is durable (or its
    /// append failed).
    pub fn push(&self, record: StoredRecord) -> oneshot::Receiver<CmdResult<()>> {
        let (done, rx) = oneshot::channel();
        // A task that is gone drops `done`: the receiver reports it.
        let _ = self.tx.send((record, done));
        rx
    }
}

async fn run(p: Arc<Partition>, stream: Weak<Stream>, rx: mpsc::UnboundedReceiver<(StoredRecord, Done)>) {
    group_commit::run(rx, MAX_BATCH, group_commit::LINGER, move |batch| {
        let (records, waiters): (Vec<StoredRecord>, Vec<Done>) = batch.into_iter().unzip();
        let appended = encode_batch(&records).map_err(CommandError::from).and_then(|b| Ok(p.append(&b, Acks::All)?));
        let appended = match appended {
            Ok(a) => a,
            Err(e) => {
                let text = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(CommandError::Reply(text.clone())));
                }
                return None;
            }
        };
        // The stream is gone (deleted): its entries' waits still end.
        if let Some(st) = stream.upgrade() {
            st.lock().appended(appended.info.last_offset);
        }
        Some(Box::pin(async move {
            let result = appended.acknowledged().await.map(|_| ()).map_err(|e| e.to_string());
            for w in waiters {
                let _ = w.send(result.clone().map_err(|e| CommandError::Reply(format!("ERR {e}"))));
            }
        }))
    })
    .await;
}
