//! One model for "a log plus an acknowledgement cursor" (DESIGN §1: a
//! queue is a log plus a durable cursor), under every queue-like thing:
//! AMQP queues ([`crate::messaging::Queue`]), the delayed-message store,
//! and numbered queues of stored records for front-ends ([`RecordQueue`]).
//!
//! - [`cursor`]: the in-memory state machine: ack floor, acknowledged
//!   ranges above it, deliveries out and handed back, with counts, the
//!   "possibly delivered" mark for redelivery flags after a restart.
//! - [`cursor_store`]: its files, a snapshot (`cursor.json`) and a journal
//!   of changes since (`cursor.journal`); [`ranges`]: the acknowledged set.
//! - [`cursor_log`]: a log, its cursor and what its user keeps beside it
//!   under one lock, journaling every change; periodic maintenance
//!   rewrites the snapshot and deletes the acknowledged prefix of the log.
//! - [`cursor_records`]: a replicated (quorum) queue's cursor as records
//!   in the queue's own log, and the replay a new leader rebuilds it with.
//! - [`record_queue`]: numbered queues of stored records in one directory
//!   (a front-end's per-client queues), built on the above.
//! - [`group_cursor`]: named consumer groups over a topic partition's own
//!   log (Redis stream groups), built on the above.

pub mod cursor;
pub mod cursor_log;
pub mod cursor_records;
pub mod cursor_store;
pub mod group_cursor;
pub mod ranges;
pub mod record_queue;

pub use cursor::{Cursor, Outstanding};
pub use cursor_log::{CursorLog, Snapshots, Tracked, Trim};
pub use group_cursor::{ClaimOpts, Delivery, GroupCursor, GroupCursorStore, GroupState, Member};
pub use record_queue::{RecordQueue, RecordQueueStore, Taken};
