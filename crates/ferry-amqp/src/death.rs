//! Dead-lettering's mark on a message: RabbitMQ's `x-death` header (one
//! entry per queue and reason, newest first, with a count), the
//! `x-first-death-*` headers, and the per-message expiration removed so the
//! message does not expire again where it lands.

use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{AMQPProperties, gen_properties, parse_properties};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;
use ferry_broker::messaging::{Death, DeathHook, Headers};

use crate::values;

/// The hook the broker calls when it dead-letters a message.
pub fn death_hook() -> DeathHook {
    Arc::new(|raw: &[u8], death: &Death<'_>| match rewrite(raw, death) {
        Some((bytes, headers)) => (bytes, headers),
        None => (Bytes::copy_from_slice(raw), Headers::new()),
    })
}

fn text(v: Option<&AMQPValue>) -> Option<&[u8]> {
    match v? {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

fn rewrite(raw: &[u8], d: &Death<'_>) -> Option<(Bytes, Headers)> {
    let (_, props) = parse_properties(raw).ok()?;
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |t: &FieldTable| {
        text(t.inner().get("queue")) == Some(d.queue.as_bytes())
            && text(t.inner().get("reason")) == Some(d.reason.as_bytes())
    };
    let existing = deaths.iter().position(|v| matches!(v, AMQPValue::FieldTable(t) if same(t)));
    let mut entry = if let Some(AMQPValue::FieldTable(t)) = existing.map(|i| deaths.remove(i)) {
        t
    } else {
        let mut t = FieldTable::default();
        t.insert("queue".into(), AMQPValue::LongString(d.queue.into()));
        t.insert("reason".into(), AMQPValue::LongString(d.reason.into()));
        t.insert("exchange".into(), AMQPValue::LongString(d.exchange.into()));
        let keys = FieldArray::from(vec![AMQPValue::LongString(d.routing_key.into())]);
        t.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
        if let Some(e) = props.expiration() {
            t.insert("original-expiration".into(), AMQPValue::LongString(e.as_str().into()));
        }
        t.insert("count".into(), AMQPValue::LongLongInt(0));
        t
    };
    let count = match entry.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        _ => 0,
    };
    entry.insert("count".into(), AMQPValue::LongLongInt(count + 1));
    entry.insert("time".into(), AMQPValue::Timestamp(d.time.max(0) as u64));
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    for (k, v) in
        [("x-first-death-queue", d.queue), ("x-first-death-reason", d.reason), ("x-first-death-exchange", d.exchange)]
    {
        if !headers.contains_key(k) {
            headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
    }
    let routing = values::headers(&headers);
    let out = without_expiration(&props).with_headers(headers);
    let (bytes, _) = gen_properties(&out)(WriteContext::from(Vec::with_capacity(raw.len() + 128))).ok()?.into_inner();
    Some((Bytes::from(bytes), routing))
}

fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_death_counts_per_queue_and_reason() {
        let props = AMQPProperties::default().with_delivery_mode(2).with_expiration("100".into());
        let (raw, _) = gen_properties(&props)(WriteContext::from(Vec::new())).unwrap().into_inner();
        let d = Death { queue: "work", reason: "rejected", exchange: "", routing_key: "work", time: 1 };
        let (once, _) = rewrite(&raw, &d).unwrap();
        let (twice, routing) = rewrite(&once, &d).unwrap();
        let (_, p) = parse_properties(&twice[..]).unwrap();
        assert_eq!(p.expiration(), &None);
        assert_eq!(p.delivery_mode(), &Some(2));
        let h = p.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else { panic!("no x-death") };
        assert_eq!(deaths.as_slice().len(), 1);
        let AMQPValue::FieldTable(t) = &deaths.as_slice()[0] else { panic!() };
        assert_eq!(t.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(text(t.inner().get("original-expiration")), Some(&b"100"[..]));
        assert!(routing.contains_key("x-first-death-queue"));
        let other = Death { reason: "expired", ..d };
        let (three, _) = rewrite(&twice, &other).unwrap();
        let (_, p) = parse_properties(&three[..]).unwrap();
        let h = p.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else { panic!() };
        assert_eq!(deaths.as_slice().len(), 2);
    }
}
