//! STOMP headers <-> message properties, as RabbitMQ's STOMP plugin maps
//! them. A SEND's properties are stored AMQP-encoded (the form every
//! queue's messages take, see `ferry_broker::messaging::message`), so AMQP
//! consumers read them unchanged and the Kafka bridge turns them into
//! record headers; a MESSAGE frame gets them back as headers.
//!
//! | STOMP header          | AMQP property                      |
//! |-----------------------|------------------------------------|
//! | content-type          | content-type                       |
//! | content-encoding      | content-encoding                   |
//! | persistent (`true`)   | delivery-mode 2 (else 1)           |
//! | priority              | priority                           |
//! | expiration (ms)       | expiration                         |
//! | reply-to              | reply-to                           |
//! | correlation-id        | correlation-id                     |
//! | amqp-message-id       | message-id                         |
//! | type, app-id, user-id | type, app-id, user-id              |
//! | timestamp (seconds)   | timestamp                          |
//! | anything else         | application header (long string)   |
//!
//! On MESSAGE frames `message-id` is STOMP's own (the id to ACK), so the
//! AMQP message-id travels as `amqp-message-id`, as with RabbitMQ.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{AMQPProperties, gen_properties, parse_properties};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::Bytes;
use ferry_broker::messaging::{HeaderValue, Headers};

use crate::error::StompError;

/// Headers about the frame itself, never stored with the message.
const FRAME_HEADERS: &[&str] = &["destination", "receipt", "transaction", "content-length", "kafka-key"];

/// Headers a MESSAGE frame sets itself; stored application headers of
/// these names are not repeated.
const MESSAGE_HEADERS: &[&str] =
    &["destination", "message-id", "subscription", "ack", "content-length", "redelivered", "receipt"];

/// A SEND's headers as the messaging layer wants them.
#[derive(Clone, Debug)]
pub struct Converted {
    /// AMQP-encoded basic properties.
    pub properties: Bytes,
    /// `persistent:true`.
    pub persistent: bool,
    /// `priority`, 0 if absent.
    pub priority: u8,
    /// `expiration`, ms from now.
    pub expiration_ms: Option<u64>,
    /// Application headers, for headers exchanges.
    pub routing: Headers,
}

fn short(name: &str, v: &str) -> Result<ShortString, StompError> {
    if v.len() > 255 {
        return Err(StompError::protocol(format!("header {name} longer than 255 bytes")));
    }
    Ok(v.into())
}

/// Builds properties from a SEND's headers (`reply_to` already rewritten
/// for temporary queues).
pub fn from_send(headers: &[(String, String)], reply_to: Option<&str>) -> Result<Converted, StompError> {
    let mut props = AMQPProperties::default();
    let mut table = FieldTable::default();
    let mut routing = Headers::new();
    let mut persistent = false;
    let mut priority = 0u8;
    let mut expiration_ms = None;
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in headers {
        // The first of a repeated header counts.
        if !seen.insert(k.as_str()) || FRAME_HEADERS.contains(&k.as_str()) {
            continue;
        }
        match k.as_str() {
            "content-type" => props = props.with_content_type(short(k, v)?),
            "content-encoding" => props = props.with_content_encoding(short(k, v)?),
            "persistent" => persistent = v.eq_ignore_ascii_case("true"),
            "priority" => {
                priority = v.trim().parse().map_err(|_| StompError::protocol(format!("invalid priority {v:?}")))?;
                props = props.with_priority(priority);
            }
            "expiration" => {
                let ms: u64 =
                    v.trim().parse().map_err(|_| StompError::protocol(format!("invalid expiration {v:?}")))?;
                expiration_ms = Some(ms);
                props = props.with_expiration(short(k, v.trim())?);
            }
            "reply-to" => {}
            "correlation-id" => props = props.with_correlation_id(short(k, v)?),
            "amqp-message-id" | "message-id" => props = props.with_message_id(short(k, v)?),
            "type" => props = props.with_type(short(k, v)?),
            "app-id" => props = props.with_app_id(short(k, v)?),
            "user-id" => props = props.with_user_id(short(k, v)?),
            "timestamp" => {
                let t: u64 = v.trim().parse().map_err(|_| StompError::protocol(format!("invalid timestamp {v:?}")))?;
                props = props.with_timestamp(t);
            }
            _ => {
                if k.len() > 255 {
                    return Err(StompError::protocol("header name longer than 255 bytes"));
                }
                table.insert(k.as_str().into(), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
                routing.insert(k.clone(), HeaderValue::Bytes(v.as_bytes().to_vec()));
            }
        }
    }
    if let Some(r) = reply_to {
        props = props.with_reply_to(short("reply-to", r)?);
    }
    props = props.with_delivery_mode(if persistent { 2 } else { 1 });
    if !table.inner().is_empty() {
        props = props.with_headers(table);
    }
    let properties = gen_properties(&props)(WriteContext::from(Vec::new()))
        .map(|ctx| Bytes::from(ctx.into_inner().0))
        .map_err(|e| StompError::protocol(format!("cannot encode properties: {e}")))?;
    Ok(Converted { properties, persistent, priority, expiration_ms, routing })
}

/// The headers a MESSAGE frame carries for stored properties `raw`
/// (nothing if they do not parse).
pub fn to_message(raw: &[u8], out: &mut Vec<(String, String)>) {
    let Ok((_, p)) = parse_properties(raw) else { return };
    let named = [
        ("content-type", p.content_type()),
        ("content-encoding", p.content_encoding()),
        ("correlation-id", p.correlation_id()),
        ("reply-to", p.reply_to()),
        ("expiration", p.expiration()),
        ("amqp-message-id", p.message_id()),
        ("type", p.kind()),
        ("app-id", p.app_id()),
        ("user-id", p.user_id()),
    ];
    for (k, v) in named {
        if let Some(v) = v {
            out.push((k.to_string(), v.as_str().to_string()));
        }
    }
    if let Some(mode) = p.delivery_mode() {
        out.push(("persistent".into(), (*mode == 2).to_string()));
    }
    if let Some(pr) = p.priority() {
        out.push(("priority".into(), pr.to_string()));
    }
    if let Some(t) = p.timestamp() {
        out.push(("timestamp".into(), t.to_string()));
    }
    let Some(table) = p.headers() else { return };
    for (k, v) in table.inner() {
        let key = k.as_str();
        if MESSAGE_HEADERS.contains(&key) || out.iter().any(|(o, _)| o == key) {
            continue;
        }
        let value = match v {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_string(),
            AMQPValue::Boolean(b) => b.to_string(),
            AMQPValue::ShortShortInt(i) => i.to_string(),
            AMQPValue::ShortShortUInt(i) => i.to_string(),
            AMQPValue::ShortInt(i) => i.to_string(),
            AMQPValue::ShortUInt(i) => i.to_string(),
            AMQPValue::LongInt(i) => i.to_string(),
            AMQPValue::LongUInt(i) => i.to_string(),
            AMQPValue::LongLongInt(i) => i.to_string(),
            AMQPValue::Timestamp(t) => t.to_string(),
            AMQPValue::Float(f) => f.to_string(),
            AMQPValue::Double(f) => f.to_string(),
            _ => continue,
        };
        out.push((key.to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn send_headers_become_amqp_properties_and_back() {
        let c = from_send(
            &h(&[
                ("destination", "/queue/a"),
                ("content-type", "application/json"),
                ("persistent", "true"),
                ("priority", "5"),
                ("expiration", "60000"),
                ("correlation-id", "c-1"),
                ("amqp-message-id", "m-1"),
                ("receipt", "r-1"),
                ("customer", "42"),
                ("customer", "ignored"),
            ]),
            Some("/reply-queue/x"),
        )
        .unwrap();
        assert!(c.persistent);
        assert_eq!((c.priority, c.expiration_ms), (5, Some(60_000)));
        assert_eq!(c.routing.get("customer"), Some(&HeaderValue::Bytes(b"42".to_vec())));
        let (_, p) = parse_properties(&c.properties[..]).unwrap();
        assert_eq!(p.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.reply_to().as_ref().map(ShortString::as_str), Some("/reply-queue/x"));
        assert_eq!(p.message_id().as_ref().map(ShortString::as_str), Some("m-1"));
        let table = p.headers().clone().unwrap();
        assert!(table.inner().get("destination").is_none() && table.inner().get("receipt").is_none());
        let mut back = Vec::new();
        to_message(&c.properties, &mut back);
        for want in [
            ("content-type", "application/json"),
            ("persistent", "true"),
            ("priority", "5"),
            ("expiration", "60000"),
            ("correlation-id", "c-1"),
            ("amqp-message-id", "m-1"),
            ("reply-to", "/reply-queue/x"),
            ("customer", "42"),
        ] {
            assert!(back.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} in {back:?}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(from_send(&h(&[("priority", "high")]), None).is_err());
        assert!(from_send(&h(&[("expiration", "-1")]), None).is_err());
        assert!(from_send(&h(&[("content-type", &"x".repeat(256))]), None).is_err());
        let c = from_send(&h(&[]), None).unwrap();
        assert!(!c.persistent);
    }

    #[test]
    fn amqp_typed_headers_read_as_text() {
        let mut t = FieldTable::default();
        t.insert("n".into(), AMQPValue::LongInt(7));
        t.insert("destination".into(), AMQPValue::LongString("spoof".into()));
        let props = AMQPProperties::default().with_headers(t);
        let raw = gen_properties(&props)(WriteContext::from(Vec::new())).unwrap().into_inner().0;
        let mut out = Vec::new();
        to_message(&raw, &mut out);
        assert_eq!(out, vec![("n".to_string(), "7".to_string())]);
        let mut none = Vec::new();
        to_message(b"\xff", &mut none);
        assert!(none.is_empty());
    }
}
