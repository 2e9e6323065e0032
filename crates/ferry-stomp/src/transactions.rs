//! BEGIN / COMMIT / ABORT: a transaction holds its SENDs and ACK / NACKs
//! until COMMIT applies them in order; ABORT (or the connection ending)
//! drops them. Bounded per connection in count and bytes.

use std::collections::HashMap;

use crate::codec::Frame;
use crate::error::StompError;
use crate::subscribe::Settle;

/// Most transactions open at once on one connection.
pub const MAX_OPEN: usize = 64;

/// One deferred operation.
#[derive(Debug)]
pub enum Pending {
    /// A SEND, as received.
    Send(Frame),
    /// An ACK or NACK of this ack id.
    Settle(String, Settle),
}

/// The open transactions of a connection.
#[derive(Debug)]
pub struct Transactions {
    open: HashMap<String, (Vec<Pending>, usize)>,
    max_bytes: usize,
}

impl Transactions {
    /// No transaction open; each may hold up to `max_bytes` of bodies.
    pub fn new(max_bytes: usize) -> Transactions {
        Transactions { open: HashMap::new(), max_bytes }
    }

    /// BEGIN.
    pub fn begin(&mut self, id: &str) -> Result<(), StompError> {
        if self.open.contains_key(id) {
            return Err(StompError::protocol(format!("transaction {id:?} is already open")));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(StompError::protocol(format!("more than {MAX_OPEN} open transactions")));
        }
        self.open.insert(id.to_string(), (Vec::new(), 0));
        Ok(())
    }

    /// A SEND / ACK / NACK inside transaction `id`.
    pub fn push(&mut self, id: &str, op: Pending) -> Result<(), StompError> {
        let (ops, bytes) = self.open.get_mut(id).ok_or_else(|| unknown(id))?;
        let size = match &op {
            Pending::Send(f) => f.body.len() + f.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
            Pending::Settle(a, _) => a.len() + 16,
        };
        if *bytes + size > self.max_bytes {
            return Err(StompError::protocol(format!("transaction {id:?} holds more than {} bytes", self.max_bytes)));
        }
        *bytes += size;
        ops.push(op);
        Ok(())
    }

    /// COMMIT: the operations to apply, in order.
    pub fn commit(&mut self, id: &str) -> Result<Vec<Pending>, StompError> {
        self.open.remove(id).map(|(ops, _)| ops).ok_or_else(|| unknown(id))
    }

    /// ABORT.
    pub fn abort(&mut self, id: &str) -> Result<(), StompError> {
        self.open.remove(id).map(|_| ()).ok_or_else(|| unknown(id))
    }
}

fn unknown(id: &str) -> StompError {
    StompError::protocol(format!("transaction {id:?} is not open"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn begin_push_commit_abort() {
        let mut t = Transactions::new(100);
        assert!(t.push("tx", Pending::Settle("1".into(), Settle::Ack)).is_err(), "not open");
        t.begin("tx").unwrap();
        assert!(t.begin("tx").is_err(), "twice");
        t.push("tx", Pending::Send(Frame::new("SEND").with_body(Bytes::from_static(b"a")))).unwrap();
        t.push("tx", Pending::Settle("1".into(), Settle::Ack)).unwrap();
        let ops = t.commit("tx").unwrap();
        assert!(matches!(ops.as_slice(), [Pending::Send(_), Pending::Settle(_, Settle::Ack)]));
        assert!(t.commit("tx").is_err(), "gone after commit");
        t.begin("tx").unwrap();
        t.abort("tx").unwrap();
        assert!(t.abort("tx").is_err());
    }

    #[test]
    fn bounded() {
        let mut t = Transactions::new(10);
        t.begin("a").unwrap();
        let big = Frame::new("SEND").with_body(Bytes::from(vec![0u8; 11]));
        assert!(t.push("a", Pending::Send(big)).is_err());
        for i in 1..MAX_OPEN {
            t.begin(&i.to_string()).unwrap();
        }
        assert!(t.begin("one too many").is_err());
    }
}
