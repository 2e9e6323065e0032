//! Delayed delivery: messages published to an `x-delayed-message` exchange
//! with an `x-delay` wait here, then are routed by the exchange.
//!
//! A durable timer in the house style: the messages are appended to one
//! log per virtual host (`queues/<vhost>/delayed/`), with the due time as a
//! record header; a cursor file (snapshot + journal, as a queue's) records
//! which have been routed. In memory only an index of (due time, offset)
//! is kept, about 40 bytes per pending message, rebuilt from the log at
//! start. The vhosts' timer thread polls it every few milliseconds.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferry_log::Log;

use super::cursor_store::{CursorStore, Snapshot};
use super::message::{self, Message, StoredMessage};
use super::ranges::RangeSet;
use crate::error::Result;

struct State {
    /// (due ms, offset) of every pending message.
    index: BTreeSet<(i64, u64)>,
    acked: RangeSet,
    floor: u64,
    store: CursorStore,
    dirty: bool,
}

pub struct DelayStore {
    log: Arc<Log>,
    state: Mutex<State>,
}

impl DelayStore {
    pub(crate) fn open(dir: &Path, log: Arc<Log>) -> Result<DelayStore> {
        let (store, snap) = CursorStore::open(dir)?;
        let mut acked = RangeSet::default();
        for &(a, b) in &snap.acked {
            acked.insert_range(a, b);
        }
        let mut floor = snap.floor.max(log.log_start_offset());
        acked.remove_below(floor);
        floor = acked.advance(floor);
        let mut index = BTreeSet::new();
        let mut pos = floor;
        while pos < log.high_watermark() {
            let Some(slice) = log.read(pos, 256 * 1024)? else { break };
            let msgs = message::decode_batches(&Bytes::from(slice.to_vec()?))?;
            let Some(last) = msgs.last() else { break };
            pos = last.offset + 1;
            for m in msgs.iter().filter(|m| !acked.contains(m.offset)) {
                index.insert((m.deliver_at.unwrap_or(0), m.offset));
            }
        }
        let state = State { index, acked, floor, store, dirty: true };
        Ok(DelayStore { log, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `m` (its `deliver_at` set); returns its offset.
    pub fn add(&self, m: &Message) -> Result<u64> {
        let batch = message::encode(m, super::queue::now_ms())?;
        let mut s = self.lock();
        let offset = self.log.append(&batch)?.base_offset;
        s.index.insert((m.deliver_at.unwrap_or(0), offset));
        Ok(offset)
    }

    /// Calls `done` once the message at `offset` is on disk.
    pub fn on_durable(&self, offset: u64, done: impl FnOnce(bool) + Send + 'static) {
        self.log.on_durable(offset + 1, move |r| done(r.is_ok()));
    }

    pub fn pending(&self) -> usize {
        self.lock().index.len()
    }

    /// Takes the messages due by `now` off the index. The caller routes
    /// them, then calls [`DelayStore::done`]; a crash in between routes
    /// them again after the restart (at-least-once).
    pub(crate) fn take_due(&self, now: i64) -> Result<Vec<StoredMessage>> {
        let mut s = self.lock();
        let hw = self.log.high_watermark();
        let due: Vec<(i64, u64)> =
            s.index.iter().take_while(|(t, _)| *t <= now).filter(|(_, o)| *o < hw).copied().collect();
        let mut out = Vec::with_capacity(due.len());
        for key in due {
            s.index.remove(&key);
            let Some(slice) = self.log.read(key.1, 1)? else { continue };
            let msgs = message::decode_batches(&Bytes::from(slice.to_vec()?))?;
            if let Some(m) = msgs.into_iter().find(|m| m.offset == key.1) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Marks routed messages done.
    pub(crate) fn done(&self, offsets: &[u64]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut s = self.lock();
        for &o in offsets {
            s.acked.insert(o);
        }
        let floor = s.floor;
        s.floor = s.acked.advance(floor);
        s.dirty = true;
        s.store.journal_acks(offsets)
    }

    /// Persists the cursor and deletes routed segments.
    pub(crate) fn maintain(&self, sync: bool) -> Result<()> {
        let floor = {
            let mut s = self.lock();
            if s.dirty || sync {
                let snap = Snapshot { floor: s.floor, acked: s.acked.ranges(), delivered_mark: 0 };
                s.store.write_snapshot(&snap, sync)?;
                s.dirty = false;
            }
            s.floor
        };
        let target = floor.min(self.log.high_watermark());
        if target > self.log.log_start_offset() && self.log.segment_count() > 1 {
            self.log.delete_records_before(target)?;
        }
        Ok(())
    }
}
