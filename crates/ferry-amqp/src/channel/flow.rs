//! channel.flow: the client pauses and resumes deliveries on the channel.

use amq_protocol::protocol::{AMQPClass, channel};

use super::{Channel, not_valid_here};
use crate::connection::ConnCtx;
use crate::error::*;

impl Channel {
    /// channel.flow and channel.flow-ok (open and close are the connection's).
    pub(super) fn flow(&mut self, cx: &mut ConnCtx, m: channel::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            channel::AMQPMethod::Flow(f) => {
                self.shared.lock().paused = !f.active;
                self.shared.credit.notify_waiters();
                self.send(cx, AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: f.active })))
            }
            channel::AMQPMethod::FlowOk(_) => Ok(()),
            other => Err(not_valid_here(&AMQPClass::Channel(other))),
        }
    }
}
