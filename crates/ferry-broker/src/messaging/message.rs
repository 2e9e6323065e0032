//! Messages as log records: the body is the record value, the routing key
//! the record key, and the protocol's properties travel as record headers,
//! so a Kafka reader of a queue's log (or of a bridged topic) sees them.

use bytes::Bytes;
use ferry_records::batch::BatchHeader;
use ferry_records::compression::Compression;
use ferry_records::records::{self, NewRecord};

use crate::error::{BrokerError, Result};
use crate::messaging::exchange::Headers;

/// Record header: the exchange the message was published to.
pub const H_EXCHANGE: &str = "amqp.exchange";
/// Record header: the protocol's encoded properties, verbatim.
pub const H_PROPERTIES: &str = "amqp.properties";
/// Record header: `1` for a persistent message, `0` otherwise.
pub const H_PERSISTENT: &str = "amqp.persistent";
/// Record header: expiry time, wall-clock ms as decimal text (absent: never).
pub const H_EXPIRES_AT: &str = "amqp.expires-at";
/// Record header: priority, one byte (absent: 0).
pub const H_PRIORITY: &str = "amqp.priority";
/// Record header: when a delayed message is routed, wall-clock ms as decimal text.
pub const H_DELIVER_AT: &str = "amqp.deliver-at";
/// Record header: a delayed message's routing headers, as JSON.
pub const H_ROUTE_HEADERS: &str = "amqp.route-headers";
/// Record header: the queue a delayed retry goes back to.
pub const H_RETRY_QUEUE: &str = "amqp.retry-queue";
/// Record header: retries so far, decimal text (absent: 0).
pub const H_RETRIES: &str = "amqp.retries";
/// Record header: a quorum queue publisher's id for the message,
/// `<session> <sequence>` (`messaging::publish_ids`): a new leader knows a
/// retried publish by it. Not delivered to consumers.
pub const H_PUBLISH: &str = "ferry.publish";

/// A message as a front-end publishes it.
#[derive(Clone, Debug)]
pub struct Message {
    /// Exchange it is published to; empty is the default exchange.
    pub exchange: String,
    /// Routing key; stored as the record key.
    pub routing_key: String,
    /// The protocol's encoded properties, stored verbatim so a redelivery
    /// needs no re-encoding (AMQP: the content header's flags + list).
    pub properties: Bytes,
    /// Message body; stored as the record value.
    pub body: Bytes,
    /// Survives a restart of a durable queue (AMQP delivery_mode 2).
    pub persistent: bool,
    /// Message headers, for headers exchanges.
    pub headers: Headers,
    /// Wall-clock ms after which the message expires (AMQP's per-message
    /// `expiration`, made absolute at publish).
    pub expires_at: Option<i64>,
    /// Priority (AMQP property), for priority queues.
    pub priority: u8,
    /// Delayed delivery: wall-clock ms at which the message is routed.
    pub deliver_at: Option<i64>,
    /// A delayed retry (`x-retry-delays`): goes straight back to this queue.
    pub retry_queue: Option<String>,
    /// Retries so far (`x-retry-delays`).
    pub retries: u32,
}

impl StoredMessage {
    /// A message not (yet) stored, e.g. one refused by a full queue.
    pub fn from_message(m: &Message, timestamp: i64) -> StoredMessage {
        StoredMessage {
            offset: 0,
            exchange: m.exchange.clone(),
            routing_key: m.routing_key.clone(),
            properties: m.properties.clone(),
            body: m.body.clone(),
            persistent: m.persistent,
            timestamp,
            expires_at: m.expires_at,
            priority: m.priority,
            deliver_at: m.deliver_at,
            headers: m.headers.clone(),
            retry_queue: m.retry_queue.clone(),
            retries: m.retries,
        }
    }
}

/// A message read back from a queue's log.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// Offset of its record in the queue's log (0 if not stored).
    pub offset: u64,
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// The protocol's encoded properties, as published.
    pub properties: Bytes,
    /// Message body.
    pub body: Bytes,
    /// Published as persistent.
    pub persistent: bool,
    /// Record timestamp, wall-clock ms.
    pub timestamp: i64,
    /// Wall-clock ms after which it expires; `None` = never.
    pub expires_at: Option<i64>,
    /// Priority, 0 if none was set.
    pub priority: u8,
    /// Wall-clock ms at which a delayed message is routed.
    pub deliver_at: Option<i64>,
    /// Routing headers, kept only for delayed messages (routed later).
    pub headers: Headers,
    /// A delayed retry's queue (`x-retry-delays`).
    pub retry_queue: Option<String>,
    /// Retries so far (`x-retry-delays`).
    pub retries: u32,
}

/// Encodes `m` as a one-record batch.
pub fn encode(m: &Message, timestamp: i64) -> Result<Vec<u8>> {
    encode_all(std::slice::from_ref(m), timestamp)
}

/// Encodes `m` as a one-record batch, with its publisher id `tag`
/// ([`H_PUBLISH`]) if it has one.
pub fn encode_tagged(m: &Message, timestamp: i64, tag: Option<&str>) -> Result<Vec<u8>> {
    let Some(tag) = tag else { return encode(m, timestamp) };
    let texts = Texts::of(m)?;
    let mut record = texts.record(m, timestamp);
    record.headers.push((H_PUBLISH.as_bytes(), Some(tag.as_bytes())));
    records::build_batch(&[record], Compression::None, -1, -1, -1)
        .map_err(|e| BrokerError::InvalidRecord(e.to_string()))
}

/// Encodes `ms` as one batch of as many records (one CRC, one append, one
/// flush for all of them: a front-end's group commit).
pub fn encode_all(ms: &[Message], timestamp: i64) -> Result<Vec<u8>> {
    let texts = ms.iter().map(Texts::of).collect::<Result<Vec<_>>>()?;
    let records: Vec<NewRecord<'_>> = ms.iter().zip(&texts).map(|(m, t)| t.record(m, timestamp)).collect();
    records::build_batch(&records, Compression::None, -1, -1, -1).map_err(|e| BrokerError::InvalidRecord(e.to_string()))
}

/// [`encode_all`], each record carrying its publisher id (`tags`, one per
/// message, as [`encode_tagged`]): a forwarded batch, one append.
pub fn encode_all_tagged(ms: &[&Message], tags: &[String], timestamp: i64) -> Result<Vec<u8>> {
    let texts = ms.iter().map(|m| Texts::of(m)).collect::<Result<Vec<_>>>()?;
    let records: Vec<NewRecord<'_>> = ms
        .iter()
        .zip(&texts)
        .zip(tags)
        .map(|((m, t), tag)| {
            let mut record = t.record(m, timestamp);
            record.headers.push((H_PUBLISH.as_bytes(), Some(tag.as_bytes())));
            record
        })
        .collect();
    records::build_batch(&records, Compression::None, -1, -1, -1).map_err(|e| BrokerError::InvalidRecord(e.to_string()))
}

/// What a message's record headers borrow beside the message itself.
struct Texts {
    expires: Option<String>,
    deliver_at: Option<String>,
    route_headers: Option<Vec<u8>>,
    retries: String,
    priority: [u8; 1],
}

impl Texts {
    fn of(m: &Message) -> Result<Texts> {
        let route_headers = match m.deliver_at {
            Some(_) if !m.headers.is_empty() => Some(serde_json::to_vec(&m.headers).map_err(std::io::Error::other)?),
            _ => None,
        };
        Ok(Texts {
            expires: m.expires_at.map(|e| e.to_string()),
            deliver_at: m.deliver_at.map(|d| d.to_string()),
            route_headers,
            retries: m.retries.to_string(),
            priority: [m.priority],
        })
    }

    fn record<'a>(&'a self, m: &'a Message, timestamp: i64) -> NewRecord<'a> {
        let persistent: &[u8] = if m.persistent { b"1" } else { b"0" };
        let mut headers = vec![
            (H_EXCHANGE.as_bytes(), Some(m.exchange.as_bytes())),
            (H_PROPERTIES.as_bytes(), Some(&m.properties[..])),
            (H_PERSISTENT.as_bytes(), Some(persistent)),
        ];
        if let Some(e) = &self.expires {
            headers.push((H_EXPIRES_AT.as_bytes(), Some(e.as_bytes())));
        }
        if m.priority > 0 {
            headers.push((H_PRIORITY.as_bytes(), Some(&self.priority[..])));
        }
        if let Some(d) = &self.deliver_at {
            headers.push((H_DELIVER_AT.as_bytes(), Some(d.as_bytes())));
        }
        if let Some(h) = &self.route_headers {
            headers.push((H_ROUTE_HEADERS.as_bytes(), Some(&h[..])));
        }
        if let Some(q) = &m.retry_queue {
            headers.push((H_RETRY_QUEUE.as_bytes(), Some(q.as_bytes())));
        }
        if m.retries > 0 {
            headers.push((H_RETRIES.as_bytes(), Some(self.retries.as_bytes())));
        }
        NewRecord { key: Some(m.routing_key.as_bytes()), value: Some(&m.body), headers, timestamp }
    }
}

/// Decodes every record of the whole batches in `buf` (as read from a log),
/// keeping bodies and properties as slices of `buf`.
pub fn decode_batches(buf: &Bytes) -> Result<Vec<StoredMessage>> {
    let corrupt = |e: String| BrokerError::InvalidRecord(e);
    let mut out = Vec::new();
    for (header, batch) in ferry_records::batch::split(buf).map_err(|e| corrupt(e.to_string()))? {
        decode_batch(buf, &header, batch, &mut out)?;
    }
    Ok(out)
}

fn decode_batch(buf: &Bytes, header: &BatchHeader, batch: &[u8], out: &mut Vec<StoredMessage>) -> Result<()> {
    let corrupt = |e: String| BrokerError::InvalidRecord(e);
    if header.is_control() {
        return Ok(());
    }
    let payload = records::records_payload(batch, 64 << 20).map_err(|e| corrupt(e.to_string()))?;
    let owned;
    let (base, payload_ref): (&Bytes, &[u8]) = match &payload {
        std::borrow::Cow::Borrowed(p) => (buf, p),
        std::borrow::Cow::Owned(p) => {
            owned = Bytes::copy_from_slice(p);
            (&owned, &owned[..])
        }
    };
    let records =
        records::parse_records(payload_ref, header.records_count as usize).map_err(|e| corrupt(e.to_string()))?;
    for r in records {
        // A quorum queue's cursor records share its log; they are no messages.
        if r.headers.iter().any(|(k, _)| *k == crate::queue::cursor_records::CURSOR_HEADER.as_bytes()) {
            continue;
        }
        let slice = |s: &[u8]| if s.is_empty() { Bytes::new() } else { base.slice_ref(s) };
        let mut m = StoredMessage {
            offset: header.base_offset + u64::from(r.offset_delta.max(0) as u32),
            exchange: String::new(),
            routing_key: String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
            properties: Bytes::new(),
            body: slice(r.value.unwrap_or_default()),
            persistent: false,
            timestamp: header.base_timestamp.saturating_add(r.timestamp_delta),
            expires_at: None,
            priority: 0,
            deliver_at: None,
            headers: Headers::new(),
            retry_queue: None,
            retries: 0,
        };
        for (k, v) in &r.headers {
            let v = v.unwrap_or_default();
            match *k {
                k if k == H_EXCHANGE.as_bytes() => m.exchange = String::from_utf8_lossy(v).into_owned(),
                k if k == H_PROPERTIES.as_bytes() => m.properties = slice(v),
                k if k == H_PERSISTENT.as_bytes() => m.persistent = v == b"1",
                k if k == H_PRIORITY.as_bytes() => m.priority = v.first().copied().unwrap_or(0),
                k if k == H_DELIVER_AT.as_bytes() => {
                    m.deliver_at = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                }
                k if k == H_ROUTE_HEADERS.as_bytes() => m.headers = serde_json::from_slice(v).unwrap_or_default(),
                k if k == H_RETRY_QUEUE.as_bytes() => m.retry_queue = Some(String::from_utf8_lossy(v).into_owned()),
                k if k == H_RETRIES.as_bytes() => {
                    m.retries = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                }
                k if k == H_EXPIRES_AT.as_bytes() => {
                    m.expires_at = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                }
                _ => {}
            }
        }
        out.push(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            properties: Bytes::from_static(&[0x10, 0, 2]),
            body: Bytes::from_static(b"hello"),
            persistent: true,
            expires_at: Some(99),
            priority: 4,
            deliver_at: Some(7),
            retry_queue: Some("q".into()),
            retries: 2,
            headers: [("k".to_string(), crate::messaging::HeaderValue::Int(1))].into_iter().collect(),
        };
        let batch = Bytes::from(encode(&m, 1234).unwrap());
        let got = decode_batches(&batch).unwrap();
        assert_eq!(got.len(), 1);
        let s = &got[0];
        assert_eq!((s.exchange.as_str(), s.routing_key.as_str(), s.persistent), ("ex", "rk", true));
        assert_eq!(&s.body[..], b"hello");
        assert_eq!(&s.properties[..], &[0x10, 0, 2]);
        assert_eq!(s.timestamp, 1234);
        assert_eq!((s.expires_at, s.priority, s.deliver_at), (Some(99), 4, Some(7)));
        assert_eq!(s.headers, m.headers);
        assert_eq!((s.retry_queue.as_deref(), s.retries), (Some("q"), 2));
    }

    #[test]
    fn several_messages_make_one_batch_with_consecutive_offsets() {
        let m = |key: &str, body: &'static [u8], priority: u8| Message {
            exchange: String::new(),
            routing_key: key.into(),
            properties: Bytes::new(),
            body: Bytes::from_static(body),
            persistent: priority == 0,
            expires_at: None,
            priority,
            deliver_at: None,
            retry_queue: None,
            retries: 0,
            headers: Headers::new(),
        };
        let batch = Bytes::from(encode_all(&[m("a", b"one", 0), m("b", b"two", 3), m("c", b"", 0)], 55).unwrap());
        assert_eq!(ferry_records::batch::split(&batch).unwrap().len(), 1);
        let got = decode_batches(&batch).unwrap();
        let seen: Vec<(u64, &str, &[u8], u8, bool)> =
            got.iter().map(|s| (s.offset, s.routing_key.as_str(), &s.body[..], s.priority, s.persistent)).collect();
        assert_eq!(seen, [(0, "a", &b"one"[..], 0, true), (1, "b", b"two", 3, false), (2, "c", b"", 0, true)]);
        assert!(got.iter().all(|s| s.timestamp == 55));
    }
}
