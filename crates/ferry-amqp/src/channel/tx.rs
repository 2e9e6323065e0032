//! The tx class: a transactional channel buffers its publishes and
//! acknowledgements until tx.commit, which applies them and answers once
//! the persistent messages are on disk; tx.rollback drops them.

use amq_protocol::protocol::{AMQPClass, tx};
use ferry_broker::messaging::Message;

use super::{Channel, not_valid_here};
use crate::connection::ConnCtx;
use crate::delivery::Settle;
use crate::error::*;

/// What a transaction holds until commit.
#[derive(Default)]
pub(super) struct TxBuffer {
    pub(super) publishes: Vec<(Message, bool)>,
    pub(super) settles: Vec<(u64, bool, Settle)>,
}

impl Channel {
    /// A tx-class method.
    pub(super) async fn tx(&mut self, cx: &mut ConnCtx, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "cannot switch from confirm to tx mode"));
                }
                self.tx.get_or_insert_with(TxBuffer::default);
                self.send(cx, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(buf) = self.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "channel is not transactional"));
                };
                self.commit(cx, buf).await?;
                self.send(cx, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})))
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(buf) = self.tx.as_mut() else {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "channel is not transactional"));
                };
                *buf = TxBuffer::default();
                self.send(cx, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})))
            }
            other => Err(not_valid_here(&AMQPClass::Tx(other))),
        }
    }

    async fn commit(&mut self, cx: &ConnCtx, buf: TxBuffer) -> Result<(), AmqpError> {
        for (tag, multiple, how) in buf.settles {
            self.shared.settle(tag, multiple, how)?;
        }
        let mut waits = Vec::new();
        for (msg, mandatory) in &buf.publishes {
            waits.extend(self.route_and_store(cx, msg, *mandatory, None)?);
        }
        for wait in waits {
            let (tx, rx) = tokio::sync::oneshot::channel();
            wait.on_done(move |ok| {
                let _ = tx.send(ok);
            });
            if !matches!(rx.await, Ok(true)) {
                return Err(AmqpError::new(INTERNAL_ERROR, "a transactional publish could not be made durable"));
            }
        }
        Ok(())
    }
}
