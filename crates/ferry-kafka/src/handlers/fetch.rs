//! Fetch with long polling. The response is encoded here rather than by the
//! codec crate, because the crate inlines record bytes and sendfile needs
//! file ranges whose sizes are known up front (shared/DEPENDENCIES.md §1
//! pitfall 6). Stored batches go out untouched.
//!
//! Fetch sessions (KIP-227): Ferry answers every full fetch with session id
//! 0, the protocol's way for a broker to decline a session, so clients keep
//! sending full requests; an incremental request for a session Ferry never
//! created gets FETCH_SESSION_ID_NOT_FOUND, which makes clients start over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use ferry_broker::{BrokerError, Partition, Topic};
use ferry_broker::{LogError, ReadSlice};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest, ResponseHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::sync::Notify;
use uuid::Uuid;

use super::Call;
use super::nodes::{Endpoint, current_leader, endpoints_of};
use crate::errors::denied_code;
use crate::errors::error_code;
use crate::response::{Chunk, Reply, Response};
use ferry_broker::security::{Operation, ResourceType};

/// Longest long poll a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

struct WantTopic {
    name: StrBytes,
    id: Uuid,
    topic: Option<Arc<Topic>>,
    partitions: Vec<WantPartition>,
}

struct WantPartition {
    index: i32,
    offset: i64,
    max_bytes: i32,
    /// The partition if this node leads it, else the error code (looked up
    /// once, when the request arrives).
    part: Result<Arc<Partition>, i16>,
    /// (leader id, leader epoch) for a NOT_LEADER_OR_FOLLOWER answer (v16+).
    leader: Option<(i32, i32)>,
}

struct PartitionResult {
    index: i32,
    fetch_offset: u64,
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    log_start: i64,
    records: Option<ReadSlice>,
    /// (producer id, first offset) of aborted transactions the records may
    /// hold, for read_committed readers to drop.
    aborted: Vec<(i64, i64)>,
}

struct Fetch {
    version: i16,
    correlation_id: i32,
    min_bytes: usize,
    max_bytes: usize,
    read_committed: bool,
    topics: Vec<WantTopic>,
    /// Endpoints of the leaders named in hints (KIP-951, v16+).
    node_endpoints: Vec<Endpoint>,
}

pub async fn handle(c: &Call, req: FetchRequest) -> Reply {
    if c.version >= 7 && req.session_epoch > 0 {
        return Reply::Ready(session_not_found(c));
    }
    let broker = &c.ctx.broker;
    let image = broker.metadata();
    let unknown =
        if c.version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition }.code();
    let mut hinted = Vec::new();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let info = if c.version >= 13 { image.topic_by_id(t.topic_id) } else { image.topic(&t.topic) };
            let denied = !c.allowed(Operation::Read, ResourceType::Topic, info.map_or(&*t.topic, |i| i.name.as_str()));
            let info = if denied { None } else { info };
            let unknown = if denied { denied_code(ResourceType::Topic) } else { unknown };
            let topic = info.and_then(|i| broker.topic(&i.name).filter(|l| l.id == i.id));
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut leader = None;
                    let part = match info {
                        None => Err(unknown),
                        Some(i) => broker.leader_partition(&i.name, p.partition).map_err(|e| {
                            if matches!(e, BrokerError::NotLeaderOrFollower) && c.version >= 16 {
                                leader = current_leader(&image, &i.name, p.partition);
                                hinted.extend(leader.map(|(id, _)| id));
                            }
                            error_code(&e)
                        }),
                    };
                    WantPartition {
                        index: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                        part,
                        leader,
                    }
                })
                .collect();
            WantTopic { name: t.topic.0, id: t.topic_id, topic, partitions }
        })
        .collect();
    let fetch = Fetch {
        version: c.version,
        correlation_id: c.correlation_id,
        min_bytes: req.min_bytes.max(0) as usize,
        max_bytes: if c.version >= 3 { req.max_bytes.max(0) as usize } else { usize::MAX },
        read_committed: req.isolation_level == 1,
        topics,
        node_endpoints: endpoints_of(c, &image, hinted),
    };
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    // First attempt in request order; only a long poll runs on its own.
    let (results, bytes, errors) = fetch.collect();
    if bytes >= fetch.min_bytes || errors || wait.is_zero() {
        return Reply::Ready(fetch.encode(&results));
    }
    Reply::Later(Box::pin(async move {
        let deadline = Instant::now() + wait;
        loop {
            // Register, then look again: an append between the last look and
            // the registration would otherwise go unnoticed until the deadline.
            let waiter = Arc::new(Notify::new());
            fetch.register(&waiter);
            let (results, bytes, errors) = fetch.collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if bytes >= fetch.min_bytes || errors || left.is_zero() {
                return fetch.encode(&results);
            }
            if tokio::time::timeout(left, waiter.notified()).await.is_err() {
                return fetch.encode(&fetch.collect().0);
            }
        }
    }))
}

impl Fetch {
    fn register(&self, waiter: &Arc<Notify>) {
        for t in &self.topics {
            for p in &t.partitions {
                if let Ok(part) = &p.part {
                    part.register_waiter(waiter);
                }
            }
        }
    }

    /// Reads what is there now: per-topic results, total record bytes, and
    /// whether any partition has an error (which answers at once, as Kafka).
    fn collect(&self) -> (Vec<Vec<PartitionResult>>, usize, bool) {
        let mut budget = self.max_bytes;
        let mut total = 0;
        let mut errors = false;
        let results = self
            .topics
            .iter()
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|p| {
                        let r = self.read_partition(t, p, budget, total == 0);
                        if let Some(s) = &r.records {
                            total += s.len as usize;
                            budget = budget.saturating_sub(s.len as usize);
                        }
                        errors |= r.error != 0;
                        r
                    })
                    .collect()
            })
            .collect();
        (results, total, errors)
    }

    /// One partition. The first non-empty partition of a response may
    /// exceed the byte limits (KIP-74) so that consumers always progress.
    fn read_partition(&self, t: &WantTopic, p: &WantPartition, budget: usize, first: bool) -> PartitionResult {
        let mut r = PartitionResult {
            index: p.index,
            fetch_offset: p.offset.max(0) as u64,
            error: 0,
            high_watermark: -1,
            last_stable: -1,
            log_start: -1,
            records: None,
            aborted: Vec::new(),
        };
        let part = match &p.part {
            Ok(part) => part,
            Err(code) => {
                r.error = *code;
                return r;
            }
        };
        let lso = part.last_stable_offset();
        r.high_watermark = part.high_watermark() as i64;
        r.last_stable = lso as i64;
        r.log_start = part.log_start_offset() as i64;
        let limit = (p.max_bytes.max(0) as usize).min(budget);
        if limit == 0 && !first {
            return r;
        }
        let Ok(offset) = u64::try_from(p.offset) else {
            r.error = ResponseError::OffsetOutOfRange.code();
            return r;
        };
        let read = if self.read_committed {
            part.read_committed(offset, limit.max(1), lso)
        } else {
            part.read(offset, limit.max(1))
        };
        match read {
            Ok(slice) => {
                if self.read_committed && slice.is_some() {
                    r.aborted =
                        part.aborted_txns(offset, lso).iter().map(|a| (a.producer_id, a.first_offset as i64)).collect();
                }
                r.records = slice;
            }
            Err(e @ BrokerError::Log(LogError::OffsetOutOfRange { .. })) => r.error = error_code(&e),
            Err(e) => {
                tracing::warn!(topic = %t.name, partition = p.index, error = %e, "fetch read failed");
                r.error = error_code(&e);
            }
        }
        r
    }

    fn encode(&self, results: &[Vec<PartitionResult>]) -> Response {
        let v = self.version;
        let flexible = v >= 12;
        let mut out = Out { chunks: Vec::new(), buf: BytesMut::with_capacity(256) };
        let header = ResponseHeader::default().with_correlation_id(self.correlation_id);
        if header.encode(&mut out.buf, ApiKey::Fetch.response_header_version(v)).is_err() {
            return Response { chunks: Vec::new() };
        }
        out.buf.put_i32(0); // throttle_time_ms
        if v >= 7 {
            out.buf.put_i16(0); // error_code
            out.buf.put_i32(0); // session_id: sessions declined
        }
        out.array_len(self.topics.len(), flexible);
        for (t, parts) in self.topics.iter().zip(results) {
            if v >= 13 {
                out.buf.put_slice(t.id.as_bytes());
            } else {
                out.string(&t.name, flexible);
            }
            out.array_len(parts.len(), flexible);
            for (r, want) in parts.iter().zip(&t.partitions) {
                out.buf.put_i32(r.index);
                out.buf.put_i16(r.error);
                out.buf.put_i64(r.high_watermark);
                out.buf.put_i64(r.last_stable);
                if v >= 5 {
                    out.buf.put_i64(r.log_start);
                }
                // aborted_transactions: null for read_uncommitted (as Kafka).
                if self.read_committed {
                    out.array_len(r.aborted.len(), flexible);
                    for &(producer_id, first_offset) in &r.aborted {
                        out.buf.put_i64(producer_id);
                        out.buf.put_i64(first_offset);
                        if flexible {
                            out.varint(0);
                        }
                    }
                } else if flexible {
                    out.varint(0);
                } else {
                    out.buf.put_i32(-1);
                }
                if v >= 11 {
                    out.buf.put_i32(-1); // preferred_read_replica
                }
                let len = r.records.as_ref().map_or(0, |s| s.len as usize);
                if flexible {
                    out.varint(len as u32 + 1);
                } else {
                    out.buf.put_i32(len as i32);
                }
                if let Some(slice) = &r.records {
                    // Offsets in the slice from the one asked for (the first
                    // batch may begin before it; gaps from compaction count).
                    let records = slice.end_offset.saturating_sub(r.fetch_offset);
                    t.topic.iter().for_each(|topic| topic.stats.read(slice.len, records));
                    out.file(slice.clone());
                }
                if flexible {
                    // Partition tagged fields: current_leader (tag 1) in a
                    // NOT_LEADER_OR_FOLLOWER answer, v16+ (KIP-951).
                    match want.leader.filter(|_| v >= 16 && r.error != 0) {
                        Some((leader, epoch)) => {
                            out.varint(1);
                            out.varint(1);
                            out.varint(9);
                            out.buf.put_i32(leader);
                            out.buf.put_i32(epoch);
                            out.varint(0);
                        }
                        None => out.varint(0),
                    }
                }
            }
            if flexible {
                out.varint(0); // topic tagged fields
            }
        }
        if flexible {
            // Top-level tagged fields: node_endpoints (tag 0), v16+.
            if v >= 16 && !self.node_endpoints.is_empty() {
                let mut field = Out { chunks: Vec::new(), buf: BytesMut::with_capacity(64) };
                field.array_len(self.node_endpoints.len(), true);
                for e in &self.node_endpoints {
                    field.buf.put_i32(e.node_id);
                    field.string(&e.host, true);
                    field.buf.put_i32(e.port);
                    match &e.rack {
                        Some(rack) => field.string(rack, true),
                        None => field.varint(0),
                    }
                    field.varint(0);
                }
                out.varint(1);
                out.varint(0);
                out.varint(field.buf.len() as u32);
                out.buf.put_slice(&field.buf);
            } else {
                out.varint(0);
            }
        }
        out.finish()
    }
}

fn session_not_found(c: &Call) -> Response {
    let mut out = Out { chunks: Vec::new(), buf: BytesMut::with_capacity(32) };
    let header = ResponseHeader::default().with_correlation_id(c.correlation_id);
    if header.encode(&mut out.buf, ApiKey::Fetch.response_header_version(c.version)).is_err() {
        return Response { chunks: Vec::new() };
    }
    out.buf.put_i32(0);
    out.buf.put_i16(ResponseError::FetchSessionIdNotFound.code());
    out.buf.put_i32(0);
    out.array_len(0, c.version >= 12);
    if c.version >= 12 {
        out.varint(0);
    }
    out.finish()
}

/// Builds a response of byte chunks and file ranges.
struct Out {
    chunks: Vec<Chunk>,
    buf: BytesMut,
}

impl Out {
    fn varint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    fn array_len(&mut self, n: usize, flexible: bool) {
        if flexible { self.varint(n as u32 + 1) } else { self.buf.put_i32(n as i32) }
    }

    fn string(&mut self, s: &str, flexible: bool) {
        if flexible {
            self.varint(s.len() as u32 + 1);
        } else {
            self.buf.put_i16(s.len() as i16);
        }
        self.buf.put_slice(s.as_bytes());
    }

    fn file(&mut self, slice: ReadSlice) {
        let bytes = std::mem::take(&mut self.buf).freeze();
        self.chunks.push(Chunk::Bytes(bytes));
        self.chunks.push(Chunk::File(slice));
    }

    fn finish(mut self) -> Response {
        if !self.buf.is_empty() {
            self.chunks.push(Chunk::Bytes(self.buf.freeze()));
        }
        Response { chunks: self.chunks }
    }
}
