//! Publisher confirms in sequence order, coalesced: an ack with `multiple`
//! covers every publish up to it, so a burst confirmed by one fsync costs
//! the client one frame. A publish that completes before an earlier one
//! waits for it; a nack is sent on its own, never covered by a multiple ack.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::{AMQPClass, basic};
use bytes::BytesMut;

use crate::frame;
use crate::metrics::AmqpStats;
use crate::outbox::Outbox;

struct State {
    /// The lowest sequence number not yet confirmed.
    next: u64,
    /// Completed above `next`: sequence number -> ack (true) or nack.
    done: BTreeMap<u64, bool>,
    /// Acks in order not sent yet: the first and last of their run.
    run: Option<(u64, u64)>,
    /// Frames ready to send (nacks, and the acks before each).
    out: BytesMut,
}

#[derive(Clone)]
pub struct Confirms {
    channel: u16,
    outbox: Outbox,
    state: Arc<Mutex<State>>,
    stats: Arc<AmqpStats>,
}

impl Confirms {
    pub fn new(channel: u16, outbox: Outbox, stats: Arc<AmqpStats>) -> Confirms {
        let state = State { next: 1, done: BTreeMap::new(), run: None, out: BytesMut::new() };
        Confirms { channel, outbox, state: Arc::new(Mutex::new(state)), stats }
    }

    fn put(channel: u16, out: &mut BytesMut, m: basic::AMQPMethod) {
        // Encoding a fixed-size method cannot fail.
        let _ = frame::put_method(out, channel, &AMQPClass::Basic(m));
    }

    /// Puts the run of positive confirms not sent yet, if any, as one ack.
    fn put_run(channel: u16, out: &mut BytesMut, run: &mut Option<(u64, u64)>) {
        if let Some((first, last)) = run.take() {
            Self::put(channel, out, basic::AMQPMethod::Ack(basic::Ack { delivery_tag: last, multiple: last > first }));
        }
    }

    /// Publish `seq` is settled: on disk where it had to be (`ok`), or not.
    /// The frames go out at once, or, when a burst of completions is being
    /// handed out on this thread (`ferry_util::batch`: a high watermark or
    /// an fsync releasing many publishes), once at its end: one `multiple`
    /// ack for the burst instead of one frame per publish.
    pub fn complete(&self, seq: u64, ok: bool) {
        {
            let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.done.insert(seq, ok);
            loop {
                let next = s.next;
                let Some(ok) = s.done.remove(&next) else { break };
                s.next += 1;
                self.stats.confirmed(ok);
                if ok {
                    s.run = Some((s.run.map_or(next, |r| r.0), next));
                    continue;
                }
                let State { run, out, .. } = &mut *s;
                Self::put_run(self.channel, out, run);
                Self::put(
                    self.channel,
                    out,
                    basic::AMQPMethod::Nack(basic::Nack { delivery_tag: next, multiple: false, requeue: false }),
                );
            }
        }
        let me = self.clone();
        ferry_util::batch::defer(Arc::as_ptr(&self.state) as usize, move || me.flush());
    }

    /// Sends what is settled and not sent yet.
    fn flush(&self) {
        let out = {
            let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let State { run, out, .. } = &mut *s;
            Self::put_run(self.channel, out, run);
            out.split()
        };
        if !out.is_empty() {
            self.outbox.send(out.freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::parse_class;

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>) -> Vec<(u64, bool, bool)> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            let mut rest = &b[..];
            while rest.len() > 8 {
                let size = u32::from_be_bytes([rest[3], rest[4], rest[5], rest[6]]) as usize;
                match parse_class(&rest[7..7 + size]).map(|(_, m)| m) {
                    Ok(AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => out.push((a.delivery_tag, a.multiple, true)),
                    Ok(AMQPClass::Basic(basic::AMQPMethod::Nack(n))) => out.push((n.delivery_tag, n.multiple, false)),
                    other => panic!("unexpected {other:?}"),
                }
                rest = &rest[8 + size..];
            }
        }
        out
    }

    #[test]
    fn in_order_and_coalesced() {
        let (outbox, mut rx) = Outbox::new();
        let c = Confirms::new(1, outbox, Arc::default());
        c.complete(2, true);
        c.complete(3, true);
        assert!(drain(&mut rx).is_empty(), "1 is still pending");
        c.complete(1, true);
        assert_eq!(drain(&mut rx), vec![(3, true, true)]);
        c.complete(4, true);
        assert_eq!(drain(&mut rx), vec![(4, false, true)]);
        c.complete(6, true);
        c.complete(5, false);
        assert_eq!(drain(&mut rx), vec![(5, false, false), (6, false, true)]);
    }

    /// A burst of completions handed out together (a high watermark
    /// releasing many publishes) costs the client one frame: a `multiple`
    /// ack, nacks still on their own and never covered.
    #[test]
    fn a_burst_is_one_multiple_ack() {
        let (outbox, mut rx) = Outbox::new();
        let c = Confirms::new(1, outbox, Arc::default());
        ferry_util::batch::scope(|| {
            for seq in 1..=10 {
                c.complete(seq, true);
            }
            assert!(drain(&mut rx).is_empty(), "sent when the burst ends");
        });
        assert_eq!(drain(&mut rx), vec![(10, true, true)]);
        ferry_util::batch::scope(|| {
            c.complete(12, true);
            c.complete(11, true);
            c.complete(13, false);
            c.complete(14, true);
            c.complete(16, true);
        });
        assert_eq!(drain(&mut rx), vec![(12, true, true), (13, false, false), (14, false, true)]);
        c.complete(15, true);
        assert_eq!(drain(&mut rx), vec![(16, true, true)]);
    }
}
