//! What travels in frames. A request frame's kind names its payload and
//! its body is `{"from": node id, "quorum": fingerprint, "body": payload}`;
//! the response has the request's kind with the high bit set (or
//! [`REFUSED`]) and the answer as its body. A peer call to a node that
//! speaks it ([`Pong::binary_peer`]) goes as [`PEER_BINARY`]: the same
//! JSON with the call's binary payloads raw after it (`peer_body`), and
//! is answered the same way. A replica fetch to a node that reads it
//! ([`Pong::binary_fetch`]) goes as [`REPLICA_FETCH_BINARY`], all binary
//! (`replication/fetch_binary.rs`), and is answered with a binary header.

use bytes::Bytes;
use ferry_broker::metadata::{
    ControllerReply, ControllerRequest, MetadataError, NodeInfo, PeerError, PeerReply, PeerRequest,
};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::frame::Frame;
use super::peer_body;
use crate::raft::TypeConfig;
use crate::replication::{
    Chunk, EpochAnswer, EpochQuery, ReplicaFetchRequest, ReplicaFetchResponse, decode_fetch_response_with,
    encode_fetch_response_chunks_with, encode_fetch_response_with, fetch_binary,
};

const APPEND_ENTRIES: u8 = 1;
const VOTE: u8 = 2;
const INSTALL_SNAPSHOT: u8 = 3;
const FORWARD: u8 = 4;
const REGISTER: u8 = 5;
const HEARTBEAT: u8 = 6;
const REPLICA_FETCH: u8 = 7;
const EPOCH_END: u8 = 8;
const PEER: u8 = 9;
const PING: u8 = 10;
/// A peer call with its payloads raw after the JSON (`peer_body`).
const PEER_BINARY: u8 = 11;
/// A replica fetch in the binary form (`replication/fetch_binary.rs`).
const REPLICA_FETCH_BINARY: u8 = 12;
/// Set on the kind of a response.
const RESPONSE: u8 = 0x80;
/// The kind of a refusal (another quorum, or a request that cannot be read).
const REFUSED: u8 = 0xFF;

/// A heartbeat: the node is alive in this incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The node.
    pub node: i32,
    /// Its incarnation.
    pub incarnation: Uuid,
}

/// A node's registration: the node as it is now, and the incarnation its
/// data directory last ran as. Naming the registered incarnation lets a
/// restarted node replace it at once instead of waiting out its session.
/// `previous` is optional on the wire (a node without one is a first start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The node, with its new incarnation.
    #[serde(flatten)]
    pub node: NodeInfo,
    /// The incarnation this node's data directory ran as before, if any.
    #[serde(default)]
    pub previous: Option<Uuid>,
}

/// A request to a peer.
#[derive(Debug)]
pub enum Request {
    /// Raft AppendEntries.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote.
    Vote(VoteRequest<u64>),
    /// A snapshot chunk.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A controller request, for the quorum leader to carry out.
    Forward(ControllerRequest),
    /// A node (re-)registers with the quorum leader.
    Register(Registration),
    /// A node is alive.
    Heartbeat(HeartbeatRequest),
    /// A follower fetches partitions from their leader.
    ReplicaFetch(ReplicaFetchRequest),
    /// A follower asks where its last leader epochs end (OffsetsForLeaderEpoch).
    EpochEnd(Vec<EpochQuery>),
    /// Work for this node's broker (it leads the partition named).
    Peer(PeerRequest),
    /// Is this node's process alive? (The controller probes silent nodes.)
    Ping,
}

/// The answer to [`Request::Ping`]: who answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The node.
    pub node: i32,
    /// Its incarnation (the process).
    pub incarnation: Uuid,
    /// It reads peer calls with raw payloads ([`PEER_BINARY`]); absent
    /// (false) from nodes that predate them, which get JSON.
    #[serde(default)]
    pub binary_peer: bool,
    /// Which calls' payloads it reads raw (`metadata::RAW_PAYLOADS`);
    /// absent from nodes that read only the first ones (version 1 if
    /// `binary_peer`).
    #[serde(default)]
    pub raw_payloads: u8,
    /// It reads replica fetches in the binary form
    /// ([`REPLICA_FETCH_BINARY`]); absent (false) from nodes that predate
    /// it, which get JSON.
    #[serde(default)]
    pub binary_fetch: bool,
}

impl Pong {
    /// This node's answer.
    pub fn of(node: i32, incarnation: Uuid) -> Pong {
        Pong {
            node,
            incarnation,
            binary_peer: true,
            raw_payloads: ferry_broker::metadata::RAW_PAYLOADS,
            binary_fetch: true,
        }
    }

    /// The raw-payload version the pinged node reads (0: JSON only).
    pub fn raw_version(&self) -> u8 {
        self.raw_payloads.max(u8::from(self.binary_peer))
    }
}

/// A request the quorum leader carried out: its reply and the log index
/// to wait for locally before answering the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// The controller's reply.
    pub reply: ControllerReply,
    /// The Raft index the change was committed at (0: nothing committed).
    pub index: u64,
}

/// Why the node asked did not carry out a controller call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderError {
    /// It is not the quorum leader; the leader's id and address, if known.
    #[error("not the quorum leader (leader: {0:?})")]
    NotLeader(Option<(u64, String)>),
    /// The controller refused or could not carry out the call.
    #[error(transparent)]
    Failed(#[from] MetadataError),
}

/// A response from a peer.
#[derive(Debug)]
pub enum Response {
    /// To [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// To [`Request::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// To [`Request::Forward`].
    Forward(Result<Forwarded, LeaderError>),
    /// To [`Request::Register`]: the index of the registration's entry.
    Register(Result<u64, LeaderError>),
    /// To [`Request::Heartbeat`]: `false` means register again.
    Heartbeat(Result<bool, LeaderError>),
    /// To [`Request::ReplicaFetch`].
    ReplicaFetch(ReplicaFetchResponse),
    /// To [`Request::EpochEnd`], in request order.
    EpochEnd(Vec<EpochAnswer>),
    /// To [`Request::Peer`].
    Peer(Result<PeerReply, PeerError>),
    /// To [`Request::Ping`].
    Ping(Pong),
    /// The request was refused before it was looked at.
    Refused(MetadataError),
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    from: i32,
    quorum: &'a str,
    body: &'a T,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    from: i32,
    quorum: String,
    body: T,
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

/// The frame carrying `request` from node `from` of quorum `quorum`; a
/// peer call as [`PEER_BINARY`], a replica fetch as
/// [`REPLICA_FETCH_BINARY`], if `binary` (the peer reads it).
pub fn encode_request(
    correlation: u64,
    from: i32,
    quorum: &str,
    request: &Request,
    binary: bool,
) -> Result<Frame, String> {
    fn env<T: Serialize>(from: i32, quorum: &str, body: &T) -> Result<Vec<u8>, String> {
        json(&EnvelopeOut { from, quorum, body })
    }
    let (kind, body) = match request {
        Request::Peer(r) if binary => {
            // Cloned to take the payloads out: they are `Bytes`, so only
            // reference counts are copied.
            let mut r = r.clone();
            let blobs = r.take_blobs();
            (PEER_BINARY, peer_body::encode(&EnvelopeOut { from, quorum, body: &r }, &blobs)?)
        }
        Request::ReplicaFetch(r) if binary => (REPLICA_FETCH_BINARY, fetch_binary::encode_request(from, quorum, r)?),
        Request::AppendEntries(r) => (APPEND_ENTRIES, env(from, quorum, r)?),
        Request::Vote(r) => (VOTE, env(from, quorum, r)?),
        Request::InstallSnapshot(r) => (INSTALL_SNAPSHOT, env(from, quorum, r)?),
        Request::Forward(r) => (FORWARD, env(from, quorum, r)?),
        Request::Register(r) => (REGISTER, env(from, quorum, r)?),
        Request::Heartbeat(r) => (HEARTBEAT, env(from, quorum, r)?),
        Request::ReplicaFetch(r) => (REPLICA_FETCH, env(from, quorum, r)?),
        Request::EpochEnd(r) => (EPOCH_END, env(from, quorum, r)?),
        Request::Peer(r) => (PEER, env(from, quorum, r)?),
        Request::Ping => (PING, env(from, quorum, &())?),
    };
    Ok(Frame { kind, correlation, body })
}

/// A request frame's sender, quorum fingerprint and request.
pub fn decode_request(frame: &Frame) -> Result<(i32, String, Request), String> {
    fn env<T: DeserializeOwned>(body: &[u8], f: fn(T) -> Request) -> Result<(i32, String, Request), String> {
        let e: EnvelopeIn<T> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok((e.from, e.quorum, f(e.body)))
    }
    let body = &frame.body;
    match frame.kind {
        APPEND_ENTRIES => env(body, Request::AppendEntries),
        VOTE => env(body, Request::Vote),
        INSTALL_SNAPSHOT => env(body, Request::InstallSnapshot),
        FORWARD => env(body, Request::Forward),
        REGISTER => env(body, Request::Register),
        HEARTBEAT => env(body, Request::Heartbeat),
        REPLICA_FETCH => env(body, Request::ReplicaFetch),
        EPOCH_END => env(body, Request::EpochEnd),
        PEER => env(body, Request::Peer),
        PEER_BINARY => {
            let (json, blobs) = peer_body::decode(Bytes::copy_from_slice(body))?;
            let (from, quorum, mut request) = env::<ferry_broker::metadata::PeerRequest>(&json, Request::Peer)?;
            if let Request::Peer(r) = &mut request {
                r.put_blobs(blobs).map_err(|e| e.to_string())?;
            }
            Ok((from, quorum, request))
        }
        PING => env(body, |()| Request::Ping),
        REPLICA_FETCH_BINARY => {
            let (from, quorum, request) = fetch_binary::decode_request(body)?;
            Ok((from, quorum, Request::ReplicaFetch(request)))
        }
        kind => Err(format!("unknown request kind {kind}")),
    }
}

/// Whether a request frame is answered in a binary form (it came in it).
pub fn answers_binary(frame: &Frame) -> bool {
    frame.kind == PEER_BINARY || frame.kind == REPLICA_FETCH_BINARY
}

/// The frame answering request `correlation` with `response`; a peer
/// answer or a fetch response in the binary form if `binary` (the request
/// came in it).
pub fn encode_response(correlation: u64, response: &Response, binary: bool) -> Result<Frame, String> {
    let (kind, body) = match response {
        Response::Peer(r) if binary => {
            let mut r = r.clone();
            let blobs = r.as_mut().map(PeerReply::take_blobs).unwrap_or_default();
            (PEER_BINARY | RESPONSE, peer_body::encode(&r, &blobs)?)
        }
        Response::AppendEntries(r) => (APPEND_ENTRIES | RESPONSE, json(r)?),
        Response::Vote(r) => (VOTE | RESPONSE, json(r)?),
        Response::InstallSnapshot(r) => (INSTALL_SNAPSHOT | RESPONSE, json(r)?),
        Response::Forward(r) => (FORWARD | RESPONSE, json(r)?),
        Response::Register(r) => (REGISTER | RESPONSE, json(r)?),
        Response::Heartbeat(r) => (HEARTBEAT | RESPONSE, json(r)?),
        Response::ReplicaFetch(r) => (fetch_kind(binary) | RESPONSE, encode_fetch_response_with(r, binary)?),
        Response::EpochEnd(r) => (EPOCH_END | RESPONSE, json(r)?),
        Response::Peer(r) => (PEER | RESPONSE, json(r)?),
        Response::Ping(r) => (PING | RESPONSE, json(r)?),
        Response::Refused(e) => (REFUSED, json(e)?),
    };
    Ok(Frame { kind, correlation, body })
}

/// The frame answering request `correlation` with `response`, as chunks
/// ready to write, the length prefix included: a replica fetch's records
/// stay file ranges (sent with `sendfile`, never copied into memory).
/// `Ok(None)` if it is too large for one frame.
pub fn encode_response_chunks(
    correlation: u64,
    response: &Response,
    binary: bool,
) -> Result<Option<Vec<Chunk>>, String> {
    let Response::ReplicaFetch(r) = response else {
        return Ok(encode_response(correlation, response, binary)?.encode().map(|b| vec![Chunk::Bytes(b)]));
    };
    let body = encode_fetch_response_chunks_with(r, binary)?;
    let total: usize = body.iter().map(Chunk::len).sum();
    let Some(head) = frame_head(fetch_kind(binary) | RESPONSE, correlation, total) else { return Ok(None) };
    let mut chunks = Vec::with_capacity(body.len() + 1);
    chunks.push(Chunk::Bytes(head));
    chunks.extend(body);
    Ok(Some(chunks))
}

fn fetch_kind(binary: bool) -> u8 {
    if binary { REPLICA_FETCH_BINARY } else { REPLICA_FETCH }
}

/// `u32 length | kind | correlation` of a frame whose body is `body_len`
/// bytes (`None`: over [`super::MAX_FRAME`]).
fn frame_head(kind: u8, correlation: u64, body_len: usize) -> Option<Vec<u8>> {
    let mut head = Frame { kind, correlation, body: Vec::new() }.encode()?;
    let len = u32::try_from(body_len).ok()?.checked_add(1 + 8).filter(|l| *l <= super::MAX_FRAME)?;
    head[..4].copy_from_slice(&len.to_be_bytes());
    Some(head)
}

/// A response frame's response.
pub fn decode_response(frame: &Frame) -> Result<Response, String> {
    fn de<T: DeserializeOwned>(body: &[u8], f: fn(T) -> Response) -> Result<Response, String> {
        serde_json::from_slice(body).map(f).map_err(|e| e.to_string())
    }
    let body = &frame.body;
    match frame.kind {
        k if k == APPEND_ENTRIES | RESPONSE => de(body, Response::AppendEntries),
        k if k == VOTE | RESPONSE => de(body, Response::Vote),
        k if k == INSTALL_SNAPSHOT | RESPONSE => de(body, Response::InstallSnapshot),
        k if k == FORWARD | RESPONSE => de(body, Response::Forward),
        k if k == REGISTER | RESPONSE => de(body, Response::Register),
        k if k == HEARTBEAT | RESPONSE => de(body, Response::Heartbeat),
        k if k == REPLICA_FETCH | RESPONSE => decode_fetch_response_with(body, false).map(Response::ReplicaFetch),
        k if k == REPLICA_FETCH_BINARY | RESPONSE => decode_fetch_response_with(body, true).map(Response::ReplicaFetch),
        k if k == EPOCH_END | RESPONSE => de(body, Response::EpochEnd),
        k if k == PEER | RESPONSE => de(body, Response::Peer),
        k if k == PEER_BINARY | RESPONSE => {
            let (json, blobs) = peer_body::decode(Bytes::copy_from_slice(body))?;
            let mut answer: Result<PeerReply, PeerError> = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
            match &mut answer {
                Ok(reply) => reply.put_blobs(blobs).map_err(|e| e.to_string())?,
                Err(_) if blobs.is_empty() => {}
                Err(_) => return Err("payloads with a refused peer call".into()),
            }
            Ok(Response::Peer(answer))
        }
        k if k == PING | RESPONSE => de(body, Response::Ping),
        REFUSED => de(body, Response::Refused),
        kind => Err(format!("unknown response kind {kind}")),
    }
}

#[cfg(test)]
mod tests {
    use ferry_broker::metadata::{Blob, Resent, WireDelivery};

    use super::*;

    #[test]
    fn requests_and_responses_round_trip_through_frames() {
        let hb = HeartbeatRequest { node: 3, incarnation: Uuid::new_v4() };
        let frame = encode_request(9, 3, "1@a:1", &Request::Heartbeat(hb.clone()), false).unwrap();
        let (from, quorum, request) = decode_request(&frame).unwrap();
        assert_eq!((from, quorum.as_str()), (3, "1@a:1"));
        assert!(matches!(request, Request::Heartbeat(h) if h == hb));
        let fwd = Forwarded { reply: ControllerReply::Done, index: 12 };
        let frame = encode_response(9, &Response::Forward(Ok(fwd.clone())), false).unwrap();
        assert!(matches!(decode_response(&frame).unwrap(), Response::Forward(Ok(f)) if f == fwd));
        let refused = MetadataError::QuorumMismatch("x".into());
        let frame = encode_response(1, &Response::Refused(refused.clone()), false).unwrap();
        assert!(matches!(decode_response(&frame).unwrap(), Response::Refused(e) if e == refused));
        // A registration names the previous incarnation; a body without
        // one (a first start) reads as none.
        let node = NodeInfo {
            id: 2,
            incarnation: Uuid::from_u128(9),
            listeners: Default::default(),
            rack: None,
            voter: true,
            fenced: false,
        };
        let reg = Registration { node: node.clone(), previous: Some(Uuid::from_u128(8)) };
        let frame = encode_request(3, 2, "q", &Request::Register(reg.clone()), false).unwrap();
        assert!(matches!(decode_request(&frame).unwrap().2, Request::Register(r) if r == reg));
        let bare = serde_json::json!({"from": 2, "quorum": "q", "body": node});
        let frame = Frame { kind: REGISTER, correlation: 4, body: serde_json::to_vec(&bare).unwrap() };
        assert!(
            matches!(decode_request(&frame).unwrap().2, Request::Register(r) if r.previous.is_none() && r.node == node)
        );
        let frame = encode_request(5, 2, "q", &Request::Ping, true).unwrap();
        assert!(matches!(decode_request(&frame).unwrap(), (2, _, Request::Ping)));
        let pong = Pong::of(2, Uuid::from_u128(7));
        let frame = encode_response(5, &Response::Ping(pong.clone()), false).unwrap();
        assert!(
            matches!(decode_response(&frame).unwrap(), Response::Ping(p) if p == pong && p.raw_version() == 2 && p.binary_fetch)
        );
        // An older node's pong does not say: it reads JSON only, or (a
        // node of the first binary form) the queue calls' payloads raw.
        let old = serde_json::json!({"node": 2, "incarnation": Uuid::from_u128(7)});
        let frame = Frame { kind: PING | RESPONSE, correlation: 5, body: serde_json::to_vec(&old).unwrap() };
        assert!(matches!(decode_response(&frame).unwrap(), Response::Ping(p) if p.raw_version() == 0));
        let first = serde_json::json!({"node": 2, "incarnation": Uuid::from_u128(7), "binary_peer": true});
        let frame = Frame { kind: PING | RESPONSE, correlation: 5, body: serde_json::to_vec(&first).unwrap() };
        assert!(matches!(decode_response(&frame).unwrap(), Response::Ping(p) if p.raw_version() == 1));
        // A replica fetch and its answer, in both forms; the binary form is
        // answered in it.
        let fetch = ReplicaFetchRequest {
            partitions: vec![crate::replication::FetchPartition {
                topic_id: Uuid::from_u128(3),
                partition: 1,
                leader_epoch: 4,
                fetch_offset: 9,
                acked_end: 7,
            }],
            max_bytes: 100,
            max_wait_ms: 5,
        };
        let answer = ReplicaFetchResponse {
            partitions: vec![crate::replication::FetchedPartition {
                topic_id: Uuid::from_u128(3),
                partition: 1,
                result: Ok(crate::replication::FetchedInfo { high_watermark: 1, log_start: 0, log_end: 9 }),
                records: crate::replication::Records::Bytes(b"rec".to_vec()),
            }],
        };
        for binary in [true, false] {
            let frame = encode_request(6, 2, "q", &Request::ReplicaFetch(fetch.clone()), binary).unwrap();
            assert_eq!(answers_binary(&frame), binary);
            assert!(
                matches!(decode_request(&frame).unwrap(), (2, q, Request::ReplicaFetch(f)) if f == fetch && q == "q")
            );
            let frame = encode_response(6, &Response::ReplicaFetch(answer.clone()), binary).unwrap();
            assert!(matches!(decode_response(&frame).unwrap(), Response::ReplicaFetch(a) if a == answer));
            let chunks = encode_response_chunks(6, &Response::ReplicaFetch(answer.clone()), binary).unwrap().unwrap();
            let mut bytes = Vec::new();
            for c in chunks {
                let Chunk::Bytes(b) = c else { panic!("bytes in, bytes out") };
                bytes.extend(b);
            }
            assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
            let frame = Frame { kind: bytes[4], correlation: 6, body: bytes[13..].to_vec() };
            assert!(matches!(decode_response(&frame).unwrap(), Response::ReplicaFetch(a) if a == answer));
        }
        // Unknown kinds and bodies of the wrong shape are errors, not panics.
        assert!(decode_request(&Frame { kind: 0x42, correlation: 1, body: b"{}".to_vec() }).is_err());
        assert!(decode_request(&Frame { kind: VOTE, correlation: 1, body: b"[1,2".to_vec() }).is_err());
        assert!(decode_response(&Frame { kind: VOTE, correlation: 1, body: b"null".to_vec() }).is_err());
    }

    fn forwarded_publish() -> PeerRequest {
        PeerRequest::QueuePublish {
            vhost: "/".into(),
            queue: "q".into(),
            batch: Blob::from(b"\x00raw \xffrecords".to_vec()),
            id: Some(("2-s".into(), 4)),
            seqs: vec![4],
            pipelined: true,
            after: Some(9),
            resent: Resent::No,
        }
    }

    /// MQTT messages routed to a peer's subscribers (the front-end's
    /// encoding, with their publishers' client ids).
    fn mqtt_route() -> PeerRequest {
        PeerRequest::MqttRoute {
            messages: vec![
                (Blob::from(b"\x00\x00raw \xffmqtt".to_vec()), Some("pub-1".into())),
                (Blob::default(), None),
                (Blob::from(vec![0xff; 40]), Some("pub-2".into())),
            ],
        }
    }

    /// A peer call and its answer round-trip in both forms; the binary
    /// form carries the payloads raw (no base64 in the frame), and a
    /// JSON call from an older node is still read and answered as JSON.
    #[test]
    fn peer_calls_round_trip_in_the_binary_form_and_as_json() {
        for call in [forwarded_publish(), mqtt_route()] {
            for binary in [true, false] {
                let frame = encode_request(7, 2, "q", &Request::Peer(call.clone()), binary).unwrap();
                assert_eq!(answers_binary(&frame), binary);
                let raw_in_frame = frame.body.windows(b"raw \xff".len()).any(|w| w == b"raw \xff");
                assert_eq!(raw_in_frame, binary, "payload raw only in the binary form: {call:?}");
                assert!(matches!(decode_request(&frame).unwrap(), (2, _, Request::Peer(r)) if r == call));
            }
        }
        let delivery =
            |b: &[u8]| WireDelivery { offset: 3, redelivered: true, count: 2, batch: Blob::from(b.to_vec()) };
        let answers = [
            Ok(PeerReply::QueueDeliveries {
                deliveries: vec![delivery(b"one"), delivery(b"")],
                ready: 1,
                consumers: 2,
            }),
            Ok(PeerReply::Done),
            Err(PeerError::NotLeaderOrFollower),
        ];
        for answer in answers {
            for binary in [true, false] {
                let frame = encode_response(7, &Response::Peer(answer.clone()), binary).unwrap();
                assert!(matches!(decode_response(&frame).unwrap(), Response::Peer(a) if a == answer));
            }
        }
    }

    /// A truncated or garbled binary peer frame, or one whose payloads do
    /// not fit its call, is an error (the connection closes), never a panic.
    #[test]
    fn bad_binary_peer_frames_are_errors() {
        for call in [forwarded_publish(), mqtt_route()] {
            let frame = encode_request(7, 2, "q", &Request::Peer(call), true).unwrap();
            for cut in 0..frame.body.len() {
                let bad = Frame { body: frame.body[..cut].to_vec(), ..frame.clone() };
                assert!(decode_request(&bad).is_err(), "cut at {cut}");
            }
            for body in crate::transport::garbled(&frame.body, 0x2545_f491, 2000) {
                let _ = decode_request(&Frame { body, ..frame.clone() });
            }
        }
        // An MQTT route with a payload fewer or more than its messages.
        for change in [-1i32, 1] {
            let mut call = mqtt_route();
            let mut blobs = call.take_blobs();
            if change < 0 {
                blobs.pop();
            } else {
                blobs.push(Bytes::from_static(b"extra"));
            }
            let env = EnvelopeOut { from: 2, quorum: "q", body: &call };
            let body = peer_body::encode(&env, &blobs).unwrap();
            assert!(decode_request(&Frame { kind: PEER_BINARY, correlation: 1, body }).is_err(), "{change}");
        }
        // Two payloads for a publish (one place), none for a take's answer
        // with a delivery, payloads with a refusal: errors.
        let mut call = forwarded_publish();
        let mut blobs = call.take_blobs();
        blobs.push(Bytes::from_static(b"extra"));
        let env = EnvelopeOut { from: 2, quorum: "q", body: &call };
        let body = peer_body::encode(&env, &blobs).unwrap();
        assert!(decode_request(&Frame { kind: PEER_BINARY, correlation: 1, body }).is_err());
        let mut reply = Ok::<_, PeerError>(PeerReply::QueueDeliveries {
            deliveries: vec![WireDelivery { offset: 0, redelivered: false, count: 1, batch: Blob::default() }],
            ready: 0,
            consumers: 0,
        });
        let body = peer_body::encode(&reply, &[]).unwrap();
        assert!(decode_response(&Frame { kind: PEER_BINARY | RESPONSE, correlation: 1, body }).is_err());
        reply = Err(PeerError::NotLeaderOrFollower);
        let body = peer_body::encode(&reply, &[Bytes::from_static(b"x")]).unwrap();
        assert!(decode_response(&Frame { kind: PEER_BINARY | RESPONSE, correlation: 1, body }).is_err());
    }
}
