//! Delayed delivery: messages published to an `x-delayed-message` exchange
//! with an `x-delay` wait here, then are routed by the exchange.
//!
//! A durable timer in the house style: the messages are appended to one
//! log per virtual host (`queues/<vhost>/delayed/`), with the due time as a
//! record header; its cursor ([`crate::queue::CursorLog`], as a queue's)
//! records which have been routed. In memory only an index of (due time,
//! offset) is kept, about 40 bytes per pending message, rebuilt from the
//! log at start. The vhosts' timer thread polls it every few milliseconds.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ferry_log::Log;

use super::message::{self, Message, StoredMessage};
use crate::error::Result;
use crate::queue::{CursorLog, Snapshots, Trim};

/// (due ms, offset) of every pending message.
type DueIndex = BTreeSet<(i64, u64)>;

pub struct DelayStore {
    cursor: CursorLog<DueIndex>,
}

impl DelayStore {
    pub(crate) fn open(dir: &Path, log: Arc<Log>) -> Result<DelayStore> {
        let cursor = CursorLog::open(dir, log, Snapshots::InLine, Trim::WholeSegments, DueIndex::new())?;
        {
            let mut t = cursor.lock();
            let log = cursor.log();
            let mut pos = t.cursor.floor();
            while pos < log.high_watermark() {
                let Some(slice) = log.read(pos, 256 * 1024)? else { break };
                let msgs = message::decode_batches(&Bytes::from(slice.to_vec()?))?;
                let Some(last) = msgs.last() else { break };
                pos = last.offset + 1;
                for m in msgs {
                    if !t.cursor.is_acked(m.offset) {
                        t.extra.insert((m.deliver_at.unwrap_or(0), m.offset));
                    }
                }
            }
        }
        Ok(DelayStore { cursor })
    }

    /// Stores `m` (its `deliver_at` set); returns its offset.
    pub fn add(&self, m: &Message) -> Result<u64> {
        let batch = message::encode(m, ferry_util::time::now_ms())?;
        let mut t = self.cursor.lock();
        let offset = self.cursor.log().append(&batch)?.base_offset;
        t.extra.insert((m.deliver_at.unwrap_or(0), offset));
        Ok(offset)
    }

    /// Calls `done` once the message at `offset` is on disk.
    pub fn on_durable(&self, offset: u64, done: impl FnOnce(bool) + Send + 'static) {
        self.cursor.log().on_durable(offset + 1, move |r| done(r.is_ok()));
    }

    pub fn pending(&self) -> usize {
        self.cursor.lock().extra.len()
    }

    /// Takes the messages due by `now` off the index. The caller routes
    /// them, then calls [`DelayStore::done`]; a crash in between routes
    /// them again after the restart (at-least-once).
    pub(crate) fn take_due(&self, now: i64) -> Result<Vec<StoredMessage>> {
        let mut t = self.cursor.lock();
        let log = self.cursor.log();
        let hw = log.high_watermark();
        let due: Vec<(i64, u64)> =
            t.extra.iter().take_while(|(due, _)| *due <= now).filter(|(_, o)| *o < hw).copied().collect();
        let mut out = Vec::with_capacity(due.len());
        for key in due {
            t.extra.remove(&key);
            let Some(slice) = log.read(key.1, 1)? else { continue };
            let msgs = message::decode_batches(&Bytes::from(slice.to_vec()?))?;
            if let Some(m) = msgs.into_iter().find(|m| m.offset == key.1) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Marks routed messages done.
    pub(crate) fn done(&self, offsets: &[u64]) -> Result<()> {
        self.cursor.lock().ack(offsets)
    }

    /// Closes the log (its vhost was deleted).
    pub(crate) fn close(&self) {
        let _ = self.cursor.log().close();
    }

    /// Persists the cursor and deletes routed segments.
    pub(crate) fn maintain(&self, sync: bool) -> Result<()> {
        self.cursor.maintain(sync)
    }
}
