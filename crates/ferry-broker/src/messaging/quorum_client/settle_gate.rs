//! Publish confirms held behind earlier settlements (issue #17): a
//! client's acks and its publishes travel in two pipelines (the settler
//! and the publisher), so a publish made after an ack could be appended,
//! and confirmed, before the ack's cursor record was even written. A
//! client that saw the confirm and then lost the leader to kill -9 got the
//! acknowledged message back from the next leader. RabbitMQ gives no
//! order across channels, but a publisher confirm here means "the ISR has
//! everything this node did to the queue before": a confirm is handed on
//! only once every settlement made before its publish is answered (its
//! cursor records on a leader's ISR). docs/cluster.md, "Acks before
//! confirms".

use super::Done;

/// Numbers the client's settlements and holds confirms until those made
/// before their publish are answered. Kept under the settlements' lock,
/// so numbering a settlement and queueing it are one step.
#[derive(Default)]
pub(super) struct SettleGate {
    /// Settlements queued so far (each call with something to settle).
    issued: u64,
    /// `issued` when the settler took its current batch.
    taken: u64,
    /// Every settlement numbered up to this is answered.
    answered: u64,
    /// Confirms on the ISR waiting for settlement `.0` to be answered.
    held: Vec<(u64, Done)>,
}

impl SettleGate {
    /// A settlement was queued.
    pub(super) fn issue(&mut self) {
        self.issued += 1;
    }

    /// What a publish made now waits for: the last settlement queued, if
    /// it is not answered yet.
    pub(super) fn mark(&self) -> Option<u64> {
        (self.answered < self.issued).then_some(self.issued)
    }

    /// The settler took every queued settlement into one batch.
    pub(super) fn take(&mut self) {
        self.taken = self.issued;
    }

    /// That batch was answered: the confirms it held, to call (outside
    /// the lock), in the order they were held.
    pub(super) fn answered(&mut self) -> Vec<Done> {
        self.answered = self.answered.max(self.taken);
        let answered = self.answered;
        let (ready, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held).into_iter().partition(|(n, _)| *n <= answered);
        self.held = held;
        ready.into_iter().map(|(_, done)| done).collect()
    }

    /// A publish that waited for settlement `need` is on the ISR: `done`
    /// back to call now if `need` is answered, else held until it is.
    pub(super) fn confirm(&mut self, need: u64, done: Done) -> Option<Done> {
        if need <= self.answered {
            return Some(done);
        }
        self.held.push((need, done));
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn recorder(log: &Arc<Mutex<Vec<(&'static str, bool)>>>, name: &'static str) -> Done {
        let log = log.clone();
        Box::new(move |ok| log.lock().unwrap().push((name, ok)))
    }

    fn call(dones: Vec<Done>) {
        for d in dones {
            d(true);
        }
    }

    /// The race of issue #17 step by step: an ack queued, a publish after
    /// it confirmed on the ISR before the settler even took the ack (and
    /// again while the ack's batch is out, and after a failed send). The
    /// confirm is held until that batch is answered; a publish made before
    /// any settlement, or after all were answered, is not held.
    #[test]
    fn a_confirm_waits_for_the_settlements_made_before_its_publish() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut g = SettleGate::default();
        assert_eq!(g.mark(), None, "nothing settled: nothing to wait for");

        // ack(m0), ack(m1) queued; the barrier published; its ISR wait answers first.
        g.issue();
        g.issue();
        let barrier = g.mark().expect("two settlements unanswered");
        assert!(g.confirm(barrier, recorder(&log, "barrier")).is_none(), "held: the acks are not answered");
        // The settler takes both; a later ack is queued while they are out.
        g.take();
        g.issue();
        let later = g.mark().expect("a third unanswered");
        assert!(g.confirm(later, recorder(&log, "later")).is_none());
        // The batch's send fails (a leader died): `answered` is not
        // called, nothing is released.
        assert!(log.lock().unwrap().is_empty() && g.mark() == Some(later));
        // Sent again with the third ack (taken anew) and answered: both released, in order.
        g.take();
        call(g.answered());
        assert_eq!(*log.lock().unwrap(), [("barrier", true), ("later", true)]);
        assert_eq!(g.mark(), None, "everything answered");
        // A publish after everything was answered goes through at once.
        assert!(g.confirm(later, recorder(&log, "after")).is_some());
    }

    /// Settlements answered batch by batch release only the confirms of
    /// publishes made before each answered batch.
    #[test]
    fn each_answered_batch_releases_only_what_it_covers() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut g = SettleGate::default();
        g.issue();
        let first = g.mark().unwrap();
        g.take(); // batch 1: settlement 1
        g.issue();
        let second = g.mark().unwrap();
        assert!(g.confirm(second, recorder(&log, "second")).is_none());
        assert!(g.confirm(first, recorder(&log, "first")).is_none());
        call(g.answered());
        assert_eq!(*log.lock().unwrap(), [("first", true)], "batch 1 covers only the first publish");
        g.take();
        call(g.answered());
        assert_eq!(*log.lock().unwrap(), [("first", true), ("second", true)]);
    }
}
