//! AMQP properties <-> Kafka record headers, for the Kafka bridge
//! (`ferry_broker::messaging::kafka_link`).

use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{AMQPProperties, gen_properties, parse_properties};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::Bytes;
use ferry_broker::Broker;
use ferry_broker::messaging::Hooks;

/// Everything the broker needs from the AMQP side.
pub fn hooks(broker: Option<Arc<Broker>>) -> Hooks {
    Hooks {
        broker,
        death: Some(crate::death::death_hook()),
        properties_from_headers: Some(Arc::new(properties_from_headers)),
        headers_from_properties: Some(Arc::new(headers_from_properties)),
        default_queue_type: None,
    }
}

/// A Kafka record's headers become AMQP application headers (long
/// strings); `content-type` also sets the content-type property. Messages
/// from Kafka are persistent.
fn properties_from_headers(headers: &[(&[u8], &[u8])]) -> Bytes {
    let mut table = FieldTable::default();
    let mut props = AMQPProperties::default().with_delivery_mode(2);
    for (k, v) in headers {
        let Ok(key) = std::str::from_utf8(k) else { continue };
        if key.starts_with("amqp.") || key.len() > 255 {
            continue;
        }
        if key == "content-type"
            && let Ok(ct) = std::str::from_utf8(v)
            && ct.len() <= 255
        {
            props = props.with_content_type(ct.into());
        }
        table.insert(key.into(), AMQPValue::LongString(LongString::from(v.to_vec())));
    }
    let props = props.with_headers(table);
    match gen_properties(&props)(WriteContext::from(Vec::new())) {
        Ok(ctx) => Bytes::from(ctx.into_inner().0),
        Err(_) => Bytes::from_static(&[0, 0]),
    }
}

/// The properties a Kafka consumer can read without an AMQP codec:
/// content-type, content-encoding, correlation-id, message-id, reply-to,
/// type, app-id, and application headers with scalar values.
fn headers_from_properties(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Ok((_, p)) = parse_properties(raw) else { return Vec::new() };
    let mut out = Vec::new();
    let named = [
        ("content-type", p.content_type()),
        ("content-encoding", p.content_encoding()),
        ("correlation-id", p.correlation_id()),
        ("message-id", p.message_id()),
        ("reply-to", p.reply_to()),
        ("type", p.kind()),
        ("app-id", p.app_id()),
    ];
    for (k, v) in named {
        if let Some(v) = v {
            out.push((k.to_string(), v.as_str().as_bytes().to_vec()));
        }
    }
    if let Some(h) = p.headers() {
        for (k, v) in h.inner() {
            let value = match v {
                AMQPValue::LongString(s) => s.as_bytes().to_vec(),
                AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
                AMQPValue::Boolean(b) => b.to_string().into_bytes(),
                AMQPValue::ShortShortInt(i) => i.to_string().into_bytes(),
                AMQPValue::ShortShortUInt(i) => i.to_string().into_bytes(),
                AMQPValue::ShortInt(i) => i.to_string().into_bytes(),
                AMQPValue::ShortUInt(i) => i.to_string().into_bytes(),
                AMQPValue::LongInt(i) => i.to_string().into_bytes(),
                AMQPValue::LongUInt(i) => i.to_string().into_bytes(),
                AMQPValue::LongLongInt(i) => i.to_string().into_bytes(),
                AMQPValue::Timestamp(t) => t.to_string().into_bytes(),
                AMQPValue::Float(f) => f.to_string().into_bytes(),
                AMQPValue::Double(f) => f.to_string().into_bytes(),
                _ => continue,
            };
            out.push((k.as_str().to_string(), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways() {
        let mut h = FieldTable::default();
        h.insert("customer".into(), AMQPValue::LongInt(42));
        let props = AMQPProperties::default().with_content_type("application/json".into()).with_headers(h);
        let (raw, _) = gen_properties(&props)(WriteContext::from(Vec::new())).unwrap().into_inner();
        let readable = headers_from_properties(&raw);
        assert!(readable.contains(&("content-type".into(), b"application/json".to_vec())));
        assert!(readable.contains(&("customer".into(), b"42".to_vec())));
        let back = properties_from_headers(&[(b"content-type", b"text/plain"), (b"k", b"v"), (b"amqp.exchange", b"x")]);
        let (_, p) = parse_properties(&back[..]).unwrap();
        assert_eq!(p.content_type().as_ref().map(amq_protocol::types::ShortString::as_str), Some("text/plain"));
        assert_eq!(p.delivery_mode(), &Some(2));
        let t = p.headers().clone().unwrap();
        assert_eq!(t.inner().get("k"), Some(&AMQPValue::LongString("v".into())));
        assert!(t.inner().get("amqp.exchange").is_none());
    }
}
