//! Binary payloads of peer calls (issue #17, phase 2d). A forwarded
//! publish carries its messages and a take its deliveries as record
//! batches: in the cluster port's JSON they are base64 strings (what older
//! nodes read and write), but a node that can carries them as raw bytes
//! after the JSON ([`PeerRequest::take_blobs`] empties them out of the
//! call, [`PeerRequest::put_blobs`] puts them back on the other side), so
//! nothing is base64-encoded, escaped or parsed byte by byte. MQTT
//! messages routed to other nodes' subscribers travel the same way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::peer::{PeerReply, PeerRequest};

/// Bytes that travel as base64 in JSON, or raw beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Bytes);

impl Blob {
    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(Bytes::from(v))
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text.as_bytes()).map(Blob::from).map_err(serde::de::Error::custom)
    }
}

/// Fewer or more blobs than the call has places for (a bad peer).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{given} binary payloads for a call with {places} places")]
pub struct BlobCount {
    /// Payloads that came.
    pub given: usize,
    /// Places the call has for them.
    pub places: usize,
}

/// Fills `places` in order from `blobs`; every place must get one and
/// every blob must have one.
fn fill(places: Vec<&mut Blob>, blobs: Vec<Bytes>) -> Result<(), BlobCount> {
    if places.len() != blobs.len() {
        return Err(BlobCount { given: blobs.len(), places: places.len() });
    }
    for (place, blob) in places.into_iter().zip(blobs) {
        place.0 = blob;
    }
    Ok(())
}

/// The raw-payload version of this node: which calls' payloads it reads
/// raw beside the JSON. 1: forwarded queue publishes and takes'
/// deliveries; 2: MQTT routes too. A node names its version when pinged,
/// and a call goes raw only to a node whose version covers it (see
/// [`PeerRequest::raw_since`]), as JSON to any other: a version-1 node
/// would find payloads its call has no place for.
pub const RAW_PAYLOADS: u8 = 2;

impl PeerRequest {
    fn blob_places(&mut self) -> Vec<&mut Blob> {
        match self {
            PeerRequest::QueuePublish { batch, .. } => vec![batch],
            PeerRequest::MqttRoute { messages } => messages.iter_mut().map(|(m, _)| m).collect(),
            _ => Vec::new(),
        }
    }

    /// The [`RAW_PAYLOADS`] version a node needs to read this call with
    /// its payloads raw.
    pub fn raw_since(&self) -> u8 {
        match self {
            PeerRequest::MqttRoute { .. } => 2,
            _ => 1,
        }
    }

    /// Moves the call's binary payloads out, in order (left empty).
    pub fn take_blobs(&mut self) -> Vec<Bytes> {
        self.blob_places().into_iter().map(|b| std::mem::take(&mut b.0)).collect()
    }

    /// Puts payloads taken by [`PeerRequest::take_blobs`] back.
    pub fn put_blobs(&mut self, blobs: Vec<Bytes>) -> Result<(), BlobCount> {
        fill(self.blob_places(), blobs)
    }
}

impl PeerReply {
    fn blob_places(&mut self) -> Vec<&mut Blob> {
        match self {
            PeerReply::QueueDeliveries { deliveries, .. } => deliveries.iter_mut().map(|d| &mut d.batch).collect(),
            _ => Vec::new(),
        }
    }

    /// Moves the reply's binary payloads out, in order (left empty).
    pub fn take_blobs(&mut self) -> Vec<Bytes> {
        self.blob_places().into_iter().map(|b| std::mem::take(&mut b.0)).collect()
    }

    /// Puts payloads taken by [`PeerReply::take_blobs`] back.
    pub fn put_blobs(&mut self, blobs: Vec<Bytes>) -> Result<(), BlobCount> {
        fill(self.blob_places(), blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Resent, WireDelivery};

    fn publish(batch: &[u8]) -> PeerRequest {
        PeerRequest::QueuePublish {
            vhost: "/".into(),
            queue: "q".into(),
            batch: Blob::from(batch.to_vec()),
            id: Some(("2-s".into(), 0)),
            seqs: vec![0],
            pipelined: true,
            after: None,
            resent: Resent::No,
        }
    }

    /// In JSON a blob is the base64 string older nodes send and read; taken
    /// out and put back, a call is unchanged; a wrong count is an error.
    #[test]
    fn blobs_are_base64_in_json_and_move_out_and_back() {
        let request = publish(b"\x00\x01batch");
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["QueuePublish"]["batch"], B64.encode(b"\x00\x01batch"));
        assert_eq!(serde_json::from_value::<PeerRequest>(json).unwrap(), request);
        let mut bad = serde_json::to_value(&request).unwrap();
        bad["QueuePublish"]["batch"] = "not base64!".into();
        assert!(serde_json::from_value::<PeerRequest>(bad).is_err());

        let mut out = request.clone();
        let blobs = out.take_blobs();
        assert_eq!(blobs, [Bytes::from_static(b"\x00\x01batch")]);
        assert_eq!(serde_json::to_value(&out).unwrap()["QueuePublish"]["batch"], "");
        assert_eq!(out.clone().put_blobs(Vec::new()), Err(BlobCount { given: 0, places: 1 }));
        out.put_blobs(blobs).unwrap();
        assert_eq!(out, request);

        let delivery = |b: &'static [u8]| WireDelivery {
            offset: 1,
            redelivered: false,
            count: 1,
            batch: Blob(Bytes::from_static(b)),
        };
        let reply =
            PeerReply::QueueDeliveries { deliveries: vec![delivery(b"a"), delivery(b"bc")], ready: 0, consumers: 1 };
        let mut out = reply.clone();
        let blobs = out.take_blobs();
        assert_eq!(blobs.len(), 2);
        assert_eq!(out.clone().put_blobs(vec![Bytes::new(); 3]), Err(BlobCount { given: 3, places: 2 }));
        out.put_blobs(blobs).unwrap();
        assert_eq!(out, reply);
        assert!(PeerReply::Done.take_blobs().is_empty());
        assert!(PeerReply::Done.put_blobs(vec![Bytes::new()]).is_err());
    }

    /// An MQTT route's messages are the base64 strings older nodes send
    /// and read (the field's JSON is unchanged), and move out and back in
    /// order; only nodes of version 2 read them raw.
    #[test]
    fn mqtt_routes_carry_their_messages_as_blobs() {
        let route = PeerRequest::MqttRoute {
            messages: vec![(Blob::from(b"\x00one".to_vec()), Some("c1".into())), (Blob::from(b"two".to_vec()), None)],
        };
        assert_eq!(route.raw_since(), 2);
        assert_eq!(publish(b"x").raw_since(), 1);
        // The JSON an older node sends: strings of base64.
        let old = serde_json::json!({"MqttRoute": {"messages": [[B64.encode(b"\x00one"), "c1"], [B64.encode(b"two"), null]]}});
        assert_eq!(serde_json::to_value(&route).unwrap(), old);
        assert_eq!(serde_json::from_value::<PeerRequest>(old).unwrap(), route);
        let mut out = route.clone();
        let blobs = out.take_blobs();
        assert_eq!(blobs, [Bytes::from_static(b"\x00one"), Bytes::from_static(b"two")]);
        assert_eq!(out.clone().put_blobs(vec![Bytes::new()]), Err(BlobCount { given: 1, places: 2 }));
        out.put_blobs(blobs).unwrap();
        assert_eq!(out, route);
    }
}
