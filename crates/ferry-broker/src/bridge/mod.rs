//! Cross-protocol bridging between Kafka topics and the other protocols,
//! one path each way, shared by every front-end (AMQP's Kafka link, MQTT's
//! bridge rules):
//! - `append`: a record that arrived through another protocol goes to the
//!   partition Kafka's default partitioner picks for its key, so a key lands
//!   on one partition whichever protocol or Kafka client wrote it;
//! - `committed`: what a Kafka `read_committed` consumer would see of a
//!   partition (up to the last stable offset, no control batches, no aborted
//!   transactions), which is all a bridge ever hands to another protocol;
//! - `tail`: follows a topic's new committed records.
//!
//! Records keep their headers, so protocol properties cross over as record
//! headers.

mod append;
mod committed;
mod tail;

pub use append::{append_by_key, partition_for};
pub use committed::{Committed, read_committed};
pub use tail::tail;
