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
        Confirms { channel, outbox, state: Arc::new(Mutex::new(State { next: 1, done: BTreeMap::new() })), stats }
    }

    fn send(&self, out: &mut BytesMut, m: basic::AMQPMethod) {
        // Encoding a fixed-size method cannot fail.
        let _ = frame::put_method(out, self.channel, &AMQPClass::Basic(m));
    }

    /// Publish `seq` is settled: on disk where it had to be (`ok`), or not.
    pub fn complete(&self, seq: u64, ok: bool) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.done.insert(seq, ok);
        let mut out = BytesMut::new();
        let mut run: Option<(u64, u64)> = None; // first and last of a run of acks
        loop {
            let next = s.next;
            let Some(ok) = s.done.remove(&next) else { break };
            s.next += 1;
            self.stats.confirmed(ok);
            if ok {
                run = Some((run.map_or(next, |r| r.0), next));
                continue;
            }
            if let Some((first, last)) = run.take() {
                self.send(&mut out, basic::AMQPMethod::Ack(basic::Ack { delivery_tag: last, multiple: last > first }));
            }
            self.send(
                &mut out,
                basic::AMQPMethod::Nack(basic::Nack { delivery_tag: next, multiple: false, requeue: false }),
            );
        }
        if let Some((first, last)) = run {
            self.send(&mut out, basic::AMQPMethod::Ack(basic::Ack { delivery_tag: last, multiple: last > first }));
        }
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
}
