//! The publish pipeline's window: batches a leadership has appended whose
//! ISR wait is still out. A forwarding node sends its next batch as soon
//! as the leader answers "appended", so several batches wait for the ISR
//! at once (they share the followers' fetch rounds), and each batch is
//! confirmed once its own wait answers, in order.
//!
//! Every batch of a window was appended by one leadership, in order (the
//! leader refuses a batch whose `after` is not its leadership). When a wait
//! fails, or the next batch is for another leadership, the whole window
//! goes back to the front of the pipeline ([`Window::rewind`]) and is sent
//! again in sequence order: the publisher ids make a leader answer what
//! its log holds already instead of storing it twice, and a log is a
//! prefix of its leader's, so what survives of a window is its first
//! messages and the resent rest follows them.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::Done;
use crate::messaging::message::Message;
use crate::messaging::queue::Queue;
use crate::metadata::Resent;

/// A message for the publish pipeline.
pub(super) struct Pending {
    pub message: Message,
    /// Its confirm (true: on the ISR).
    pub done: Option<Done>,
    /// Its sequence number in the client's session (its publisher id).
    pub seq: u64,
    /// Nacked if no leader confirmed it by then: set when first taken by
    /// the pipeline, kept across rewinds.
    pub deadline: Option<Instant>,
    /// Wall-clock ms it was first sent to a leader (`None`: never, so no
    /// log can hold it).
    pub sent_at: Option<i64>,
}

impl Pending {
    pub(super) fn new(message: Message, done: Option<Done>, seq: u64) -> Pending {
        Pending { message, done, seq, deadline: None, sent_at: None }
    }

    /// A message a leader was given at `sent_at` and did not confirm.
    pub(super) fn again(message: Message, done: Option<Done>, seq: u64, sent_at: i64) -> Pending {
        Pending { sent_at: Some(sent_at), ..Pending::new(message, done, seq) }
    }

    /// Calls its confirm.
    pub(super) fn finish(self, ok: bool) {
        if let Some(done) = self.done {
            done(ok);
        }
    }
}

/// The leadership a window's batches were appended by.
#[derive(Clone)]
pub(super) enum At {
    /// This node's (the queue object of its leadership).
    Local(Arc<Queue>),
    /// Another node's, as its answer named it.
    Remote { node: i32, leadership: u64 },
}

impl At {
    pub(super) fn same(&self, other: &At) -> bool {
        match (self, other) {
            (At::Local(a), At::Local(b)) => Arc::ptr_eq(a, b),
            (At::Remote { node: a, leadership: x }, At::Remote { node: b, leadership: y }) => a == b && x == y,
            _ => false,
        }
    }
}

/// One appended batch: per message stored or refused (a full queue), and
/// its ISR wait `W`.
pub(super) struct Entry<W> {
    pub batch: Vec<Pending>,
    pub stored: Vec<bool>,
    pub wait: W,
}

impl<W> Entry<W> {
    /// Confirms (`ok`: its wait answered) or nacks its messages; a refused
    /// message is nacked either way.
    pub(super) fn finish(self, ok: bool) {
        for (i, p) in self.batch.into_iter().enumerate() {
            let stored = self.stored.get(i).copied().unwrap_or(false);
            p.finish(ok && stored);
        }
    }
}

/// Appended batches in order, all of one leadership.
pub(super) struct Window<W> {
    at: Option<At>,
    entries: VecDeque<Entry<W>>,
}

impl<W> Default for Window<W> {
    fn default() -> Self {
        Window { at: None, entries: VecDeque::new() }
    }
}

impl<W> Window<W> {
    /// The leadership holding the window's batches (`None`: empty).
    pub(super) fn at(&self) -> Option<&At> {
        self.at.as_ref()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a batch appended by `at` may join (the window is empty or
    /// holds `at`'s batches only).
    pub(super) fn accepts(&self, at: &At) -> bool {
        self.at.as_ref().is_none_or(|held| held.same(at))
    }

    /// A batch `at` appended after the others. The caller checked
    /// [`Window::accepts`]; a batch of another leadership rewinds the
    /// others first, so the window never mixes two.
    pub(super) fn push(&mut self, at: At, entry: Entry<W>) -> Vec<Pending> {
        let rewound = if self.accepts(&at) { Vec::new() } else { self.rewind() };
        self.at = Some(at);
        self.entries.push_back(entry);
        rewound
    }

    /// The oldest batch's wait.
    pub(super) fn head(&mut self) -> Option<&mut W> {
        self.entries.front_mut().map(|e| &mut e.wait)
    }

    /// Removes the oldest batch (its wait answered).
    pub(super) fn pop(&mut self) -> Option<Entry<W>> {
        let e = self.entries.pop_front();
        if self.entries.is_empty() {
            self.at = None;
        }
        e
    }

    /// Empties the window: its messages, in order, to be sent again (their
    /// waits are dropped).
    pub(super) fn rewind(&mut self) -> Vec<Pending> {
        self.at = None;
        self.entries.drain(..).flat_map(|e| e.batch).collect()
    }
}

/// Puts `rewound` back into the pipeline's queue `queue`, everything in
/// sequence order (the queue is kept sorted: publishes are numbered as
/// they join it, retries are inserted at their place).
pub(super) fn requeue(queue: &mut VecDeque<Pending>, rewound: Vec<Pending>) {
    if rewound.is_empty() {
        return;
    }
    let mut all: Vec<Pending> = rewound;
    all.extend(queue.drain(..));
    all.sort_by_key(|p| p.seq);
    queue.extend(all);
}

/// What a leader is told of `batch`'s earlier sendings, before this one
/// (which it then records).
pub(super) fn mark_sent(batch: &mut [Pending], now_ms: i64) -> Resent {
    let first = batch.iter().filter_map(|p| p.sent_at).min();
    for p in batch.iter_mut() {
        p.sent_at.get_or_insert(now_ms);
    }
    first.map_or(Resent::No, Resent::Since)
}

/// Splits `batch` into the messages still within their deadline and those
/// past it (at `now`).
pub(super) fn split_expired(batch: Vec<Pending>, now: Instant) -> (Vec<Pending>, Vec<Pending>) {
    batch.into_iter().partition(|p| p.deadline.is_none_or(|d| now < d))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{At, Entry, Pending, Window, requeue, split_expired};
    use crate::messaging::quorum::tests::message;

    type Log = Arc<Mutex<Vec<(u64, bool)>>>;

    fn pending(seq: u64, log: &Log) -> Pending {
        let log = log.clone();
        Pending::new(message(seq as u32), Some(Box::new(move |ok| log.lock().unwrap().push((seq, ok)))), seq)
    }

    fn seqs(ps: &[Pending]) -> Vec<u64> {
        ps.iter().map(|p| p.seq).collect()
    }

    fn remote(leadership: u64) -> At {
        At::Remote { node: 1, leadership }
    }

    /// Batches of one leadership queue up and are confirmed one by one in
    /// order; a refused message is nacked even when its batch's wait
    /// answered.
    #[test]
    fn batches_are_confirmed_in_order() {
        let log = Log::default();
        let mut w: Window<u32> = Window::default();
        for (i, seqs) in [[0, 1], [2, 3], [4, 5]].into_iter().enumerate() {
            let batch = seqs.iter().map(|s| pending(*s, &log)).collect();
            let stored = vec![true, i != 1];
            assert!(w.accepts(&remote(7)));
            assert!(w.push(remote(7), Entry { batch, stored, wait: i as u32 }).is_empty());
        }
        assert!(!w.accepts(&remote(8)), "another leadership");
        assert!(!w.accepts(&At::Remote { node: 2, leadership: 7 }), "another node");
        assert_eq!((w.len(), w.head().copied()), (3, Some(0)));
        while let Some(e) = w.pop() {
            e.finish(true);
        }
        assert!(w.at().is_none() && w.is_empty());
        let confirms = log.lock().unwrap().clone();
        assert_eq!(confirms, [(0, true), (1, true), (2, true), (3, false), (4, true), (5, true)]);
    }

    /// A failed wait (or a leader change) rewinds the whole window: its
    /// messages go back before everything published since, in sequence
    /// order, and none is confirmed or nacked by the rewind.
    #[test]
    fn a_rewind_puts_the_window_back_in_sequence_order() {
        let log = Log::default();
        let mut w: Window<()> = Window::default();
        w.push(remote(7), Entry { batch: vec![pending(3, &log), pending(4, &log)], stored: vec![true; 2], wait: () });
        w.push(remote(7), Entry { batch: vec![pending(5, &log)], stored: vec![true], wait: () });
        let mut queue: VecDeque<Pending> = [6, 7].iter().map(|s| pending(*s, &log)).collect();
        // A retry of a message stored here while this node led (seq 2)
        // was inserted at its place meanwhile.
        queue.push_front(pending(2, &log));
        requeue(&mut queue, w.rewind());
        assert_eq!(seqs(&queue.into_iter().collect::<Vec<_>>()), [2, 3, 4, 5, 6, 7]);
        assert!(w.at().is_none() && w.is_empty());
        assert!(log.lock().unwrap().is_empty(), "a rewind confirms nothing");
    }

    /// A batch appended by another leadership (the window's was replaced
    /// meanwhile) rewinds the window's batches before joining it.
    #[test]
    fn a_new_leadership_takes_the_window_over() {
        let log = Log::default();
        let mut w: Window<()> = Window::default();
        w.push(remote(7), Entry { batch: vec![pending(0, &log)], stored: vec![true], wait: () });
        let next = remote(8);
        let rewound = w.push(next.clone(), Entry { batch: vec![pending(1, &log)], stored: vec![true], wait: () });
        assert_eq!(seqs(&rewound), [0]);
        assert!(w.at().is_some_and(|at| at.same(&next)) && w.len() == 1);
    }

    /// A leader looks ids up only for a batch holding messages sent
    /// before, from the first sending on.
    #[test]
    fn a_batch_says_whether_and_since_when_it_was_sent_before() {
        let log = Log::default();
        let mut fresh: Vec<Pending> = (0..2).map(|s| pending(s, &log)).collect();
        assert_eq!(super::mark_sent(&mut fresh, 1000), crate::metadata::Resent::No);
        assert!(fresh.iter().all(|p| p.sent_at == Some(1000)));
        assert_eq!(super::mark_sent(&mut fresh, 2000), crate::metadata::Resent::Since(1000), "sent again");
        let mut mixed = vec![pending(0, &log), Pending::again(message(1), None, 1, 700), pending(2, &log)];
        mixed[0].sent_at = Some(900);
        assert_eq!(super::mark_sent(&mut mixed, 3000), crate::metadata::Resent::Since(700));
        assert_eq!(mixed[2].sent_at, Some(3000));
    }

    #[test]
    fn messages_past_their_deadline_are_split_off() {
        let log = Log::default();
        let now = Instant::now();
        let mut batch: Vec<Pending> = (0..3).map(|s| pending(s, &log)).collect();
        batch[0].deadline = Some(now - Duration::from_millis(1));
        batch[1].deadline = Some(now + Duration::from_secs(1));
        let (live, expired) = split_expired(batch, now);
        assert_eq!((seqs(&live), seqs(&expired)), (vec![1, 2], vec![0]));
    }
}
