//! An application message inside the broker, shared by every subscriber it
//! goes to, and its stored form: a record whose key is the MQTT topic, whose
//! value is the payload, and whose headers carry the MQTT properties
//! (`mqtt.*`) and the MQTT 5 user properties (under their own names). The
//! same form goes to the retained store, to session queues and to Kafka.

use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::stored::StoredRecord;

use crate::packet::PublishProps;

/// One published message as the broker keeps and routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Topic name it was published to.
    pub topic: Arc<str>,
    /// Application payload.
    pub payload: Bytes,
    /// QoS it was published with, 0 to 2 (subscribers get at most their granted QoS).
    pub qos: u8,
    /// Published with the RETAIN flag.
    pub retain: bool,
    /// Properties as published (topic alias and subscription id cleared).
    pub props: PublishProps,
    /// Message expiry as an absolute time, ms since the epoch.
    pub expires_at: Option<i64>,
    /// Client id of the publisher (no-local).
    pub origin: Option<Arc<str>>,
    /// ms since the epoch.
    pub timestamp: i64,
}

const QOS: &str = "mqtt.qos";
const RETAIN: &str = "mqtt.retain";
const EXPIRES_AT: &str = "mqtt.expires_at";
const CONTENT_TYPE: &str = "mqtt.content_type";
const RESPONSE_TOPIC: &str = "mqtt.response_topic";
const CORRELATION_DATA: &str = "mqtt.correlation_data";
const PAYLOAD_UTF8: &str = "mqtt.payload_format";

impl Message {
    /// A plain message published now (no properties), for tests.
    #[cfg(test)]
    pub(crate) fn plain(topic: &str, payload: impl Into<Bytes>, qos: u8) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            props: PublishProps::default(),
            expires_at: None,
            origin: None,
            timestamp: ferry_util::time::now_ms(),
        })
    }

    /// Whether the message expired at `now` (ms).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Seconds left to live, for the Message Expiry Interval sent on.
    pub fn remaining_expiry(&self, now: i64) -> Option<u32> {
        self.expires_at.map(|t| u32::try_from(((t - now).max(0) + 999) / 1000).unwrap_or(u32::MAX))
    }

    /// The stored form: key = topic, value = payload, properties as headers.
    pub fn to_record(&self) -> StoredRecord {
        let mut headers = vec![(QOS.to_string(), vec![self.qos])];
        if self.retain {
            headers.push((RETAIN.into(), vec![1]));
        }
        if let Some(t) = self.expires_at {
            headers.push((EXPIRES_AT.into(), t.to_be_bytes().to_vec()));
        }
        let p = &self.props;
        if let Some(c) = &p.content_type {
            headers.push((CONTENT_TYPE.into(), c.as_bytes().to_vec()));
        }
        if let Some(t) = &p.response_topic {
            headers.push((RESPONSE_TOPIC.into(), t.as_bytes().to_vec()));
        }
        if let Some(c) = &p.correlation_data {
            headers.push((CORRELATION_DATA.into(), c.to_vec()));
        }
        if let Some(u) = p.payload_utf8 {
            headers.push((PAYLOAD_UTF8.into(), vec![u8::from(u)]));
        }
        for (k, v) in &p.user_properties {
            if !k.starts_with("mqtt.") {
                headers.push((k.to_string(), v.as_bytes().to_vec()));
            }
        }
        StoredRecord {
            key: Some(self.topic.as_bytes().to_vec()),
            value: Some(self.payload.to_vec()),
            headers,
            timestamp: self.timestamp,
        }
    }

    /// The message a stored record holds; `None` for a record without a
    /// UTF-8 key. Records from other protocols work: headers become user
    /// properties, QoS defaults to 0.
    pub fn from_record(r: StoredRecord) -> Option<Message> {
        let topic: Arc<str> = String::from_utf8(r.key?).ok()?.into();
        let mut m = Message {
            topic,
            payload: Bytes::from(r.value.unwrap_or_default()),
            qos: 0,
            retain: false,
            props: PublishProps::default(),
            expires_at: None,
            origin: None,
            timestamp: r.timestamp,
        };
        for (k, v) in r.headers {
            let text = || Arc::<str>::from(String::from_utf8_lossy(&v).as_ref());
            match k.as_str() {
                QOS => m.qos = v.first().copied().unwrap_or(0).min(2),
                RETAIN => m.retain = v.first() == Some(&1),
                EXPIRES_AT => m.expires_at = <[u8; 8]>::try_from(v.as_slice()).ok().map(i64::from_be_bytes),
                CONTENT_TYPE => m.props.content_type = Some(text()),
                RESPONSE_TOPIC => m.props.response_topic = Some(text()),
                CORRELATION_DATA => m.props.correlation_data = Some(Bytes::from(v)),
                PAYLOAD_UTF8 => m.props.payload_utf8 = Some(v.first() == Some(&1)),
                k if k.starts_with("mqtt.") => {}
                _ => m.props.user_properties.push((k.as_str().into(), text())),
            }
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_records() {
        let m = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"x"),
            qos: 2,
            retain: true,
            props: PublishProps {
                payload_utf8: Some(true),
                content_type: Some("text/plain".into()),
                response_topic: Some("r".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            },
            expires_at: Some(123),
            origin: None,
            timestamp: 5,
        };
        assert_eq!(Message::from_record(m.to_record()), Some(m));
    }
}
