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
        let held_before = |seq: u64| ids.sessions.get(session).is_some_and(|s| s.contains(seq));
        let stored_before: Vec<bool> = msgs.iter().map(|(_, seq)| held_before(*seq)).collect();
        let held = stored_before.contains(&true);
        let fresh: Vec<&(Message, u64)> =
            msgs.iter().zip(&stored_before).filter(|(_, h)| !**h).map(|(m, _)| m).collect();
        let mut out = Stored { stored: stored_before, wait: None };
        // Several new ones: one append for all (a forwarded batch).
        if fresh.len() > 1 {
            let ms: Vec<&Message> = fresh.iter().map(|(m, _)| m).collect();
            let tags: Vec<String> = fresh.iter().map(|(_, seq)| tag(session, *seq)).collect();
            if let Some(first) = q.publish_tagged_batch(&ms, &tags)? {
                let s = ids.sessions.entry(session.to_string()).or_default();
                fresh.iter().for_each(|(_, seq)| s.insert(*seq));
                out.stored = vec![true; msgs.len()];
                out.wait = Some(first + fresh.len() as u64 - 1);
                return Ok(finish(q, out, held));
            }
        }
        for (i, (m, seq)) in msgs.iter().enumerate() {
            if out.stored[i] {
                continue;
            }
            match q.publish_tagged(m, Some(&tag(session, *seq)))? {
                Published::Stored(offset) => {
                    ids.sessions.entry(session.to_string()).or_default().insert(*seq);
                    out.stored[i] = true;
                    out.wait = Some(offset);
                }
                Published::Rejected => {}
            }
        }
        Ok(finish(q, out, held))
    }
}

/// `out`, waiting also for the log's end if some messages were `held`
/// (stored before, somewhere below it: safe once that is committed).
fn finish(q: &Queue, mut out: Stored, held: bool) -> Stored {
    if held {
        let end = q.log().next_offset().saturating_sub(1);
        out.wait = Some(out.wait.map_or(end, |w| w.max(end)));
    }
    out
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

#[cfg(test)]
mod scan_tests {
    use std::time::{Duration, Instant};

    use ferry_util::time::now_ms;

    use super::{SKEW, scan_start};
    use crate::broker::Broker;
    use crate::messaging::message::Message;
    use crate::messaging::quorum::tests::message;
    use crate::messaging::remote_queue::tests::{leading_orders, takeover};
    use crate::metadata::Resent;

    fn store(broker: &Broker, session: &str, resent: Resent, msgs: &[(Message, u64)]) -> Vec<bool> {
        let q = broker.quorum_queue("/", "orders").unwrap();
        broker.store_published("/", "orders", &q, (session, resent), msgs).unwrap().stored
    }

    /// How far back this leadership read its log (`None`: not at all).
    fn scanned_from(broker: &Broker) -> Option<u64> {
        let all = ferry_util::sync::lock(&broker.queue_publishes);
        let ids = all.get(&("/".to_string(), "orders".to_string())).expect("ids kept");
        ferry_util::sync::lock(ids).scanned_from
    }

    /// After a takeover, a publish of new messages reads no log; one
    /// holding resent messages reads it from their first sending on (less
    /// the clock skew) and answers what an earlier leadership stored
    /// without storing it again; a later, older retry reads further back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_resent_messages_are_looked_up_and_only_since_their_sending() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, controller) = leading_orders(&dir).await;
        let sent = now_ms();
        let first: Vec<(Message, u64)> = (0..10).map(|i| (message(i), u64::from(i))).collect();
        assert_eq!(store(&broker, "s1", Resent::No, &first), [true; 10]);
        takeover(&broker, &controller, vec![broker.node_id()]);

        assert_eq!(store(&broker, "s1", Resent::No, &[(message(10), 10)]), [true]);
        assert_eq!(scanned_from(&broker), None, "a new message is looked up nowhere");

        // Records stamped before the retry's horizon are not read.
        let q = broker.quorum_queue("/", "orders").unwrap();
        let later = scan_start(&q, Resent::Since(now_ms() + 2 * SKEW)).unwrap().unwrap();
        assert!(later >= q.log().high_watermark(), "past every stamped record: {later}");

        let end = q.log().next_offset();
        assert_eq!(store(&broker, "s1", Resent::Since(sent), &[(message(3), 3)]), [true]);
        assert_eq!(q.log().next_offset(), end, "held already: not stored again");
        let from = scanned_from(&broker).expect("read");
        assert!(from <= 3, "read from the first record since the sending, less the skew: {from}");
        assert_eq!(store(&broker, "s1", Resent::Unknown, &[(message(4), 4)]), [true]);
        assert_eq!(scanned_from(&broker), Some(q.log().log_start_offset()), "an unknown sending: the whole log");
        assert_eq!(q.log().next_offset(), end);
    }

    /// Measures the first publish after a takeover of a queue holding many
    /// messages (1 KiB, older than the skew), for a new message, a message
    /// resent a second ago, and a whole-log read (what every first publish
    /// cost before). `FERRY_SCAN_MESSAGES` messages (default 100,000).
    /// `cargo test --release -p ferry-broker --lib first_publish_after_a_takeover -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: takes minutes"]
    async fn first_publish_after_a_takeover() {
        let n: u32 = std::env::var("FERRY_SCAN_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        let dir = tempfile::tempdir().unwrap();
        let (broker, controller) = leading_orders(&dir).await;
        let body = bytes::Bytes::from(vec![b'x'; 1024]);
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let msgs: Vec<(Message, u64)> =
                chunk.iter().map(|i| (Message { body: body.clone(), ..message(*i) }, u64::from(*i))).collect();
            store(&broker, "filler", Resent::No, &msgs);
        }
        let q = broker.quorum_queue("/", "orders").unwrap();
        println!("{n} messages, {} MiB, written in {:?}", q.log().size_bytes() >> 20, started.elapsed());
        // Older than the skew, as a queue's backlog is.
        tokio::time::sleep(Duration::from_millis(SKEW as u64 + 5_000)).await;
        let cases = [
            ("whole log (every first publish before)", Resent::Unknown),
            ("a new message", Resent::No),
            ("a message resent 1 s ago", Resent::Since(now_ms() - 1000)),
        ];
        for (seq, (what, resent)) in (0u32..).zip(cases) {
            takeover(&broker, &controller, vec![broker.node_id()]);
            let t = Instant::now();
            assert_eq!(store(&broker, "s2", resent, &[(message(seq), u64::from(seq))]), [true]);
            println!("first publish after a takeover, {what}: {:?}", t.elapsed());
        }
    }
}
