//! Per-log settings, named and defaulted as Kafka's topic configs are.

use std::time::Duration;

/// When appended data is forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append is fsynced before it counts as durable. Concurrent
    /// appends share one fsync (group commit).
    Always,
    /// fsync once `messages` records are unflushed or `ms` milliseconds after
    /// the first unflushed append, whichever comes first.
    Interval {
        /// Longest time unflushed data may wait, in milliseconds.
        ms: u64,
        /// Most unflushed records before an fsync.
        messages: u64,
    },
    /// Never fsync explicitly (except on segment roll and close); the OS
    /// writes back when it likes.
    Os,
}

/// `message.timestamp.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Overwrite the batch's max timestamp with the broker's clock at append.
    LogAppendTime,
}

/// `cleanup.policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Drop old segments by `retention.ms` / `retention.bytes`.
    pub delete: bool,
    /// Keep only the latest record per key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// `cleanup.policy=delete` (Kafka's default).
    pub const DELETE: Self = CleanupPolicy { delete: true, compact: false };
    /// `cleanup.policy=compact`.
    pub const COMPACT: Self = CleanupPolicy { delete: false, compact: true };
    /// `cleanup.policy=compact,delete`: compacted, and old segments also expire.
    pub const COMPACT_DELETE: Self = CleanupPolicy { delete: true, compact: true };
}

/// Settings of one log. Defaults follow Kafka's, except the flush policy,
/// which is `Always` because Ferry is durable by default.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is this old.
    pub segment_ms: u64,
    /// `index.interval.bytes`: bytes between two offset index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: largest accepted batch.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`: whose clock the stored timestamps carry.
    pub timestamp_type: TimestampType,
    /// `retention.ms`; `None` keeps data forever.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`; `None` means no size limit.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy`: delete old segments, compact by key, or both.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: u64,
    /// When appends are fsynced (`flush.messages` / `flush.ms` in Kafka terms).
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 3600 * 1000,
            flush: FlushPolicy::Always,
        }
    }
}

/// Settings shared by every log of one [`crate::LogManager`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most segment files held open at once, across all logs. Each open
    /// segment costs one descriptor and its in-memory indexes.
    pub max_open_segments: usize,
    /// How often the checkpointer looks at the logs, and the shortest time
    /// between two checkpoints of one log. Recovery after a crash rescans
    /// what was written since a log's last checkpoint.
    pub checkpoint_interval: Duration,
    /// A log's checkpoint is rewritten once this many bytes were appended
    /// past it (bounding what recovery rescans)...
    pub checkpoint_bytes: u64,
    /// ...or once it is this old and behind the durable position.
    pub checkpoint_max_age: Duration,
    /// How often the cleaner thread applies retention and compaction.
    pub cleaner_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_open_segments: 1024,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 16 << 20,
            checkpoint_max_age: Duration::from_secs(30),
            cleaner_interval: Duration::from_secs(30),
        }
    }
}
