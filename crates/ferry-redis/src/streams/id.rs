//! Stream entry ids, `<ms>-<seq>`, and how they map onto records.
//!
//! An entry written by XADD is one record whose first header,
//! `redis-id`, holds its id as text; the record's timestamp is the append
//! time. Ids are strictly increasing in log order (XADD checks), so the
//! log is sorted by id and an id is found by binary search over offsets.
//! A record written by another protocol has no `redis-id`: its id is
//! `<timestamp>-<offset>` (docs/protocols.md, "## Redis").

use std::fmt;

use crate::error::{CmdResult, CommandError};

/// The record header holding an entry's id.
pub const ID_HEADER: &str = "redis-id";

/// An entry id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// The smallest id (`-`).
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest id (`+`).
    pub const MAX: StreamId = StreamId { ms: u64::MAX, seq: u64::MAX };

    /// The id right after this one (`None` past [`StreamId::MAX`]).
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }

    /// The id right before this one (`None` below [`StreamId::MIN`]).
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_sub(1).map(|ms| StreamId { ms, seq: u64::MAX }),
        }
    }

    /// The id as one number, ordered as ids are: a group cursor's key for
    /// the entry's delivery.
    pub fn key(self) -> u128 {
        (u128::from(self.ms) << 64) | u128::from(self.seq)
    }

    /// The id whose [`StreamId::key`] is `key`.
    pub fn from_key(key: u128) -> StreamId {
        StreamId { ms: (key >> 64) as u64, seq: key as u64 }
    }

    /// Parses `ms-seq`, or a bare `ms` whose sequence is `missing_seq`.
    pub fn parse(s: &[u8], missing_seq: u64) -> Option<StreamId> {
        let s = std::str::from_utf8(s).ok()?;
        match s.split_once('-') {
            Some((ms, seq)) => Some(StreamId { ms: ms.parse().ok()?, seq: seq.parse().ok()? }),
            None => Some(StreamId { ms: s.parse().ok()?, seq: missing_seq }),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Saved as its text, so ids can key JSON maps.
impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StreamId::parse(text.as_bytes(), 0).ok_or_else(|| serde::de::Error::custom(format!("bad stream id {text:?}")))
    }
}

/// The invalid-id error Redis gives.
pub fn invalid() -> CommandError {
    CommandError::err("Invalid stream ID specified as stream command argument")
}

/// A range bound: XRANGE's `-`, `+`, `ms`, `ms-seq` and exclusive `(id`.
/// `start` picks the sequence a bare `ms` gets (0 for a start, max for an end).
pub fn parse_bound(s: &[u8], start: bool) -> CmdResult<StreamId> {
    match s {
        b"-" => return Ok(StreamId::MIN),
        b"+" => return Ok(StreamId::MAX),
        _ => {}
    }
    let (exclusive, body) = match s.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let id = StreamId::parse(body, if start { 0 } else { u64::MAX }).ok_or_else(invalid)?;
    if !exclusive {
        return Ok(id);
    }
    let moved = if start { id.next() } else { id.prev() };
    moved.ok_or_else(|| CommandError::err("invalid start ID for the interval"))
}

/// What XADD's id argument asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewId {
    /// `*`: the next id after the last, by the clock.
    Auto,
    /// `ms-*`: this ms, the next sequence.
    AutoSeq(u64),
    /// `ms-seq` (or `ms`, sequence 0).
    Explicit(StreamId),
}

impl NewId {
    /// Parses XADD's id argument.
    pub fn parse(s: &[u8]) -> CmdResult<NewId> {
        if s == b"*" {
            return Ok(NewId::Auto);
        }
        if let Some(ms) = s.strip_suffix(b"-*") {
            let ms = std::str::from_utf8(ms).ok().and_then(|m| m.parse().ok()).ok_or_else(invalid)?;
            return Ok(NewId::AutoSeq(ms));
        }
        StreamId::parse(s, 0).map(NewId::Explicit).ok_or_else(invalid)
    }

    /// The id to assign after `last` at clock `now_ms`, or Redis's error.
    pub fn resolve(self, last: StreamId, now_ms: u64) -> CmdResult<StreamId> {
        let too_small =
            || CommandError::err("The ID specified in XADD is equal or smaller than the target stream top item");
        let id = match self {
            NewId::Auto => {
                if now_ms > last.ms {
                    StreamId { ms: now_ms, seq: 0 }
                } else {
                    last.next().ok_or_else(too_small)?
                }
            }
            NewId::AutoSeq(ms) if ms == last.ms => last.next().ok_or_else(too_small)?,
            NewId::AutoSeq(ms) => StreamId { ms, seq: 0 },
            NewId::Explicit(id) => id,
        };
        if id == StreamId::MIN {
            return Err(CommandError::err("The ID specified in XADD must be greater than 0-0"));
        }
        if id <= last {
            return Err(too_small());
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn ids_parse_and_print() {
        assert_eq!(StreamId::parse(b"5-3", 0), Some(id(5, 3)));
        assert_eq!(StreamId::parse(b"5", 7), Some(id(5, 7)));
        assert_eq!(StreamId::parse(b"x-1", 0), None);
        assert_eq!(id(5, 3).to_string(), "5-3");
        assert_eq!(parse_bound(b"(5-3", true).unwrap(), id(5, 4));
        assert_eq!(parse_bound(b"(5-0", false).unwrap(), id(4, u64::MAX));
        assert_eq!(parse_bound(b"5", false).unwrap(), id(5, u64::MAX));
        assert!(parse_bound(b"(0-0", false).is_err());
    }

    #[test]
    fn keys_order_as_ids_do() {
        let ids = [id(0, 0), id(0, u64::MAX), id(1, 0), id(u64::MAX, 3)];
        for w in ids.windows(2) {
            assert!(w[0].key() < w[1].key());
        }
        for i in ids {
            assert_eq!(StreamId::from_key(i.key()), i);
        }
    }

    #[test]
    fn ids_key_json_maps() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(id(5, 3), 1);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"5-3":1}"#);
        assert_eq!(serde_json::from_str::<std::collections::BTreeMap<StreamId, i32>>(&text).unwrap(), m);
    }

    #[test]
    fn new_ids_increase() {
        let last = id(10, 4);
        assert_eq!(NewId::Auto.resolve(last, 20).unwrap(), id(20, 0));
        assert_eq!(NewId::Auto.resolve(last, 5).unwrap(), id(10, 5), "a clock behind the last id");
        assert_eq!(NewId::parse(b"10-*").unwrap().resolve(last, 0).unwrap(), id(10, 5));
        assert_eq!(NewId::parse(b"11-*").unwrap().resolve(last, 0).unwrap(), id(11, 0));
        assert!(NewId::parse(b"10-4").unwrap().resolve(last, 0).is_err());
        assert!(NewId::parse(b"0-0").unwrap().resolve(StreamId::MIN, 0).is_err());
        assert_eq!(NewId::parse(b"12").unwrap(), NewId::Explicit(id(12, 0)));
        assert!(NewId::parse(b"a-*").is_err());
    }
}
