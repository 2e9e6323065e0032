//! Publisher ids in a quorum queue's log (docs/reliability.md, Found 13):
//! every message a node's [`QuorumClient`](super::QuorumClient) publishes
//! carries its client's session and a sequence number of its own
//! ([`H_PUBLISH`]) in the queue's replicated log, as a Kafka batch carries
//! its producer id and sequence. A publish whose answer was lost is retried
//! with the same ids, on this leader or on the next one (the first died or
//! was deposed after the append, its records surviving in the new leader's
//! log). Whichever leader gets the retry knows from its log which of the
//! messages it holds already (it scans its log once per leadership, as a
//! Kafka leader rebuilds producer state from its log) and stores only the
//! others: a retry never makes a second copy, and a publish the old
//! leader could not confirm is confirmed by the new one instead of being
//! nacked although it survives.
//!
//! What is known is kept per session as ranges of sequence numbers (a
//! session numbers its messages in order, so a few ranges): what this
//! leadership appended, and what a scan of its log found. The log is
//! read only when a publish says some of its messages were sent before
//! ([`Resent`]: a first attempt cannot be in any log), and only from the
//! first record stamped [`SKEW`] before their first sending (the time
//! index finds it), extended further back only if a later retry is older:
//! a takeover of a queue holding millions of messages costs its first
//! publish nothing, and a retry a few seconds of log. Records the queue
//! trimmed (acknowledged and below a cursor snapshot) are not seen by a
//! scan; a retry reaches a leader within the publish deadline (30 s), long
//! before a message could be published, delivered, acked and trimmed in
//! the normal course, and the old leader's in-memory ranges cover the same
//! leadership.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use ferry_util::sync::lock;

use crate::broker::Broker;
use crate::messaging::message::{H_PUBLISH, Message};
use crate::messaging::queue::{Published, Queue};
use crate::metadata::Resent;
use crate::queue::ranges::RangeSet;
use crate::stored;

/// Bytes read from the log per step of a scan.
const SCAN_CHUNK: usize = 1 << 20;
/// A scan for messages first sent at `t` starts at records stamped
/// `t - SKEW`: records carry their leader's clock, the sender's is another.
pub(crate) const SKEW: i64 = 60_000;

/// The sequence numbers one leadership of a queue holds, by session.
pub(crate) struct PublishIds {
    /// The queue (one leadership) they are for.
    queue: Weak<Queue>,
    /// The log was read from this offset to its end at the time (`None`:
    /// not read; `sessions` then holds this leadership's appends only).
    scanned_from: Option<u64>,
    sessions: HashMap<String, RangeSet>,
}

/// By (vhost, queue).
pub(crate) type Publishers = HashMap<(String, String), Arc<Mutex<PublishIds>>>;

/// A message's publisher id as the record header holds it.
pub(crate) fn tag(session: &str, seq: u64) -> String {
    format!("{session} {seq}")
}

/// The (session, sequence) of a record header value.
fn parse(value: &[u8]) -> Option<(&str, u64)> {
    let (session, seq) = std::str::from_utf8(value).ok()?.rsplit_once(' ')?;
    Some((session, seq.parse().ok()?))
}

/// The publisher ids in `q`'s log from `from` to `to` (every written
/// record: as leader, that is what it commits), added to `sessions`.
fn scan(q: &Queue, from: u64, to: u64, sessions: &mut HashMap<String, RangeSet>) -> crate::Result<()> {
    let log = q.log();
    let mut pos = from.max(log.log_start_offset());
    while pos < to {
        let Some(slice) = log.read_written(pos, SCAN_CHUNK)? else { break };
        let records = stored::decode_batches(&slice.to_vec()?)?;
        let Some(&(last, _)) = records.last() else { break };
        for (_, record) in records.iter().filter(|(o, _)| *o >= pos && *o < to) {
            for (k, v) in &record.headers {
                if k == H_PUBLISH
                    && let Some((session, seq)) = parse(v)
                {
                    sessions.entry(session.to_string()).or_default().insert(seq);
                }
            }
        }
        pos = last + 1;
    }
    Ok(())
}

/// Where a scan for messages `resent` starts (`None`: no scan).
fn scan_start(q: &Queue, resent: Resent) -> crate::Result<Option<u64>> {
    let log = q.log();
    Ok(match resent {
        Resent::No => None,
        Resent::Unknown => Some(log.log_start_offset()),
        // The first record stamped since; none readable is: only the
        // unflushed tail may be.
        Resent::Since(t) => Some(match log.offset_for_timestamp(t.saturating_sub(SKEW))? {
            Some((offset, _)) => offset,
            None => log.high_watermark(),
        }),
    })
}

impl PublishIds {
    /// Makes sure the log was read as far back as `resent` needs.
    fn cover(&mut self, q: &Queue, resent: Resent) -> crate::Result<()> {
        let Some(from) = scan_start(q, resent)? else { return Ok(()) };
        let to = match self.scanned_from {
            Some(done) if done <= from => return Ok(()),
            Some(done) => done,
            None => q.log().next_offset(),
        };
        scan(q, from, to, &mut self.sessions)?;
        self.scanned_from = Some(from);
        Ok(())
    }
}

/// What [`Broker::store_published`] did: per message, stored (now or
/// before) or refused by a full queue; and the offset whose commit makes
/// all of them safe (`None`: nothing stored).
pub(crate) struct Stored {
    pub stored: Vec<bool>,
    pub wait: Option<u64>,
}

impl Broker {
    /// The ids `q` (this node's leadership of quorum queue `name`) holds.
    fn publish_ids(&self, vhost: &str, name: &str, q: &Arc<Queue>) -> Arc<Mutex<PublishIds>> {
        let key = (vhost.to_string(), name.to_string());
        let mut all = lock(&self.queue_publishes);
        if let Some(ids) = all.get(&key)
            && lock(ids).queue.upgrade().is_some_and(|held| Arc::ptr_eq(&held, q))
        {
            return ids.clone();
        }
        // A new leadership here: the ids of closed ones go.
        all.retain(|_, ids| lock(ids).queue.strong_count() > 0);
        let ids =
            Arc::new(Mutex::new(PublishIds { queue: Arc::downgrade(q), scanned_from: None, sessions: HashMap::new() }));
        all.insert(key, ids.clone());
        ids
    }

    /// Stores `msgs` of publisher `session`, each with its sequence number,
    /// in `q`, except those `q`'s log holds already (a retry): see the
    /// module docs. An error (leadership lost, too few in-sync replicas)
    /// may come after some were stored; they are known to a retry.
    pub(crate) fn store_published(
        &self,
        vhost: &str,
        name: &str,
        q: &Arc<Queue>,
        (session, resent): (&str, Resent),
        msgs: &[(Message, u64)],
    ) -> crate::Result<Stored> {
        let entry = self.publish_ids(vhost, name, q);
        // Held across the scan and the appends (no await): a retry
        // arriving while the first attempt is still being stored waits for
        // it, and a publish to this leadership waits for a scan rather
        // than missing what it finds.
        let mut ids = lock(&entry);
        ids.cover(q, resent)?;
        let mut out = Stored { stored: Vec::with_capacity(msgs.len()), wait: None };
        let mut held = false;
        for (m, seq) in msgs {
            if ids.sessions.get(session).is_some_and(|s| s.contains(*seq)) {
                out.stored.push(true);
                held = true;
                continue;
            }
            match q.publish_tagged(m, Some(&tag(session, *seq)))? {
                Published::Stored(offset) => {
                    ids.sessions.entry(session.to_string()).or_default().insert(*seq);
                    out.stored.push(true);
                    out.wait = Some(offset);
                }
                Published::Rejected => out.stored.push(false),
            }
        }
        if held {
            // Stored before, somewhere below the log's end: safe once that
            // is committed.
            let end = q.log().next_offset().saturating_sub(1);
            out.wait = Some(out.wait.map_or(end, |w| w.max(end)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, tag};

    #[test]
    fn tags_round_trip_and_bad_ones_are_ignored() {
        assert_eq!(parse(tag("2-abc", 17).as_bytes()), Some(("2-abc", 17)));
        assert_eq!(parse(b"2-abc"), None);
        assert_eq!(parse(b"2-abc x"), None);
        assert_eq!(parse(&[0xff, b' ', b'1']), None);
    }
}
