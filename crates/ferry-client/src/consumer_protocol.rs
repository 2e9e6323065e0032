//! The consumer protocol's embedded data: the subscription a member sends
//! in JoinGroup and the assignment its leader hands out in SyncGroup, each a
//! version number followed by the message at that version.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{self, ConsumerProtocolAssignment};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::ClientError;
use crate::topic_name;

/// Newest subscription and assignment versions this client reads.
const MAX_VERSION: i16 = 3;

/// A version, then the message at that version.
fn encode_versioned<M: Encodable>(m: &M, version: i16) -> Result<Bytes, ClientError> {
    let mut b = BytesMut::new();
    b.put_i16(version);
    m.encode(&mut b, version).map_err(|e| ClientError::Encode(e.to_string()))?;
    Ok(b.freeze())
}

/// Reads a newer version as the newest one known: later versions only add
/// fields at the end.
fn decode_versioned<M: Decodable>(mut b: Bytes) -> Result<M, ClientError> {
    if b.len() < 2 {
        return Err(ClientError::Decode("consumer protocol data too short".into()));
    }
    let v = b.get_i16().clamp(0, MAX_VERSION);
    M::decode(&mut b, v).map_err(|e| ClientError::Decode(e.to_string()))
}

/// A member's subscription to `topics` (version 0).
pub fn encode_subscription(topics: &[String]) -> Result<Bytes, ClientError> {
    let s = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect());
    encode_versioned(&s, 0)
}

/// The topics of a member's subscription.
pub fn decode_subscription(b: &Bytes) -> Result<Vec<String>, ClientError> {
    let s: ConsumerProtocolSubscription = decode_versioned(b.clone())?;
    Ok(s.topics.iter().map(ToString::to_string).collect())
}

/// An assignment of topic -> partitions (version 0).
pub fn encode_assignment(topics: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, ClientError> {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        topics
            .iter()
            .map(|(t, ps)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    encode_versioned(&a, 0)
}

/// topic -> partitions of an assignment (empty if none or unreadable: a
/// description shows what it can).
pub fn decode_assignment(b: &Bytes) -> BTreeMap<String, Vec<i32>> {
    if b.is_empty() {
        return BTreeMap::new();
    }
    decode_versioned::<ConsumerProtocolAssignment>(b.clone())
        .map(|a| a.assigned_partitions.into_iter().map(|tp| (tp.topic.0.to_string(), tp.partitions)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_round_trip() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![1, 2]),
        ]);
        let bytes = encode_versioned(&a, 0).unwrap();
        assert_eq!(decode_assignment(&bytes)["t"], [1, 2]);
        assert!(decode_assignment(&Bytes::from_static(&[0, 0, 0])).is_empty(), "garbage decodes to nothing");
        let map: BTreeMap<String, Vec<i32>> = [("u".to_string(), vec![0, 3])].into();
        assert_eq!(decode_assignment(&encode_assignment(&map).unwrap()), map);
    }

    #[test]
    fn subscriptions_round_trip() {
        let topics = vec!["a".to_string(), "b".to_string()];
        assert_eq!(decode_subscription(&encode_subscription(&topics).unwrap()).unwrap(), topics);
        assert!(decode_subscription(&Bytes::from_static(&[0])).is_err());
    }
}
