//! The records of `__consumer_offsets`: keys name a group's offset for
//! one partition or the group itself; values are JSON ([`super::Committed`],
//! [`GroupRecord`]); a tombstone (no value) deletes.

use serde::{Deserialize, Serialize};

/// Keys of the internal log.
#[derive(Serialize, Deserialize)]
pub(crate) enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

impl Key {
    /// The group the record belongs to (it decides the record's partition).
    pub(crate) fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct GroupRecord {
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
}
