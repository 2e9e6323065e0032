//! `ferry-log`: Ferry's storage engine.
//!
//! One [`Log`] per partition: append-only segments of Kafka v2 record
//! batches, stored verbatim, with sparse offset and time indexes, a flush
//! policy with group commit, crash recovery from a checkpoint, retention and
//! compaction. Synchronous Rust with its own threads; no protocol knowledge
//! beyond the batch header. See docs/architecture.md.

mod cache;
mod checkpoint;
mod cleaner;
mod config;
mod epoch_cache;
mod error;
mod flusher;
mod index;
mod log;
mod manager;
mod recovery;
mod retention;
mod segment;
mod stats;
mod ticker;
mod timestamp;
mod txn_index;
mod zero_ahead;

pub use cleaner::CompactionStats;
pub use config::{CleanupPolicy, EngineConfig, FlushPolicy, LogConfig, TimestampType};
pub use epoch_cache::EpochEntry;
pub use error::{LogError, Result};
pub use log::{AppendInfo, HwListener, Log, ReadSlice};
pub use manager::LogManager;
pub use stats::{FSYNC_BUCKETS, FsyncSnapshot, FsyncStats};
pub use txn_index::AbortedTxn;
