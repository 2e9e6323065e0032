//! confirm.select: publisher confirms for the rest of the channel's life
//! (not together with a transaction).

use amq_protocol::protocol::{AMQPClass, confirm};

use super::{Channel, not_valid_here};
use crate::confirms::Confirms;
use crate::connection::ConnCtx;
use crate::error::*;

impl Channel {
    /// A confirm-class method.
    pub(super) fn confirm(&mut self, cx: &mut ConnCtx, m: confirm::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            confirm::AMQPMethod::Select(s) => {
                if self.tx.is_some() {
                    return Err(AmqpError::new(PRECONDITION_FAILED, "cannot switch from tx to confirm mode"));
                }
                if self.confirms.is_none() {
                    self.confirms = Some(Confirms::new(self.id, cx.outbox.clone(), cx.stats.clone()));
                }
                if !s.nowait {
                    self.send(cx, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})))?;
                }
                Ok(())
            }
            other => Err(not_valid_here(&AMQPClass::Confirm(other))),
        }
    }
}
