//! Produce: batches go to the log as sent (the log validates them), unless
//! the topic's `compression.type` names another codec; the response waits
//! for what `acks` asks. Refused records are named in KIP-467 record errors.

use std::sync::Arc;

use ferry_broker::txn::TxnError;
use ferry_broker::{Acks, Appended, BrokerError, Partition, PendingVerification, Topic, TxnBatch};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Call;
use super::nodes::{current_leader, endpoints_of};
use crate::errors::{denied_code, error_code, error_message};
use crate::response::{Reply, encode};
use ferry_broker::security::{Operation, ResourceType};

/// A partition's outcome: appended (maybe still waiting), failed now, or
/// waiting for the transaction coordinator's verification (KIP-890).
enum Outcome {
    Appended(Appended),
    Failed(Failure),
    Verifying,
}

/// A batch that waits for its transaction's coordinator: where its outcome
/// goes (topic and partition position in the response), and what to append.
struct Waiting {
    topic: usize,
    partition: usize,
    verification: PendingVerification,
    records: bytes::Bytes,
    local: Option<Arc<Topic>>,
}

/// An error code, its message and the records it names (KIP-467).
struct Failure {
    code: i16,
    message: Option<String>,
    records: Vec<(i32, String)>,
}

impl Failure {
    fn code(code: i16) -> Self {
        Failure { code, message: None, records: Vec::new() }
    }

    fn of(e: BrokerError) -> Self {
        let code = error_code(&e);
        let message = Some(error_message(&e).to_string());
        let records = match e {
            BrokerError::RejectedRecords { records, .. } => records,
            _ => Vec::new(),
        };
        Failure { code, message, records }
    }
}

pub fn handle(c: &Call, req: ProduceRequest) -> Reply {
    let acks = match req.acks {
        0 => Acks::None,
        1 => Acks::Leader,
        -1 => Acks::All,
        _ => return invalid_acks(c, req),
    };
    // acks=all waits for the ISR at most this long (then REQUEST_TIMED_OUT,
    // as Kafka; the records may still be committed later).
    let ack_deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    let broker = &c.ctx.broker;
    let image = broker.metadata();
    let mut topics = Vec::with_capacity(req.topic_data.len());
    // Leaders named in NOT_LEADER_OR_FOLLOWER hints (KIP-951, v10+).
    let mut hinted = Vec::new();
    // A transactional producer needs Write on its transactional id.
    let txn_denied =
        req.transactional_id.as_ref().is_some_and(|id| !c.allowed(Operation::Write, ResourceType::TransactionalId, id));
    let tid = req.transactional_id.as_ref().map(|id| id.as_str());
    // Transactional batches whose coordinator is another node (KIP-890).
    let mut waiting: Vec<Waiting> = Vec::new();
    for t in req.topic_data {
        // v13 names topics by id.
        let info = if c.version >= 13 { image.topic_by_id(t.topic_id) } else { image.topic(&t.name) };
        let name = info.map_or(t.name.as_str(), |i| i.name.as_str());
        let topic: Result<_, i16> = match info {
            _ if txn_denied => Err(denied_code(ResourceType::TransactionalId)),
            _ if !c.allowed(Operation::Write, ResourceType::Topic, name) => Err(denied_code(ResourceType::Topic)),
            Some(info) if info.internal => Err(ResponseError::InvalidTopicException.code()),
            Some(info) => Ok((info.name.clone(), broker.topic(&info.name).filter(|l| l.id == info.id))),
            None => {
                if c.version < 13 {
                    auto_create(c, &t.name);
                }
                Err(ResponseError::UnknownTopicOrPartition.code())
            }
        };
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let mut leader = None;
            let outcome = match (&topic, p.records) {
                (Err(code), _) => Outcome::Failed(Failure::code(*code)),
                (Ok(_), None) => Outcome::Failed(Failure::code(ResponseError::CorruptMessage.code())),
                (Ok((name, local)), Some(records)) => match broker.leader_partition(name, p.index) {
                    Err(e) => {
                        if matches!(e, BrokerError::NotLeaderOrFollower) && c.version >= 10 {
                            leader = current_leader(&image, name, p.index);
                            hinted.extend(leader.map(|(id, _)| id));
                        }
                        Outcome::Failed(Failure::of(e))
                    }
                    Ok(partition) => match broker.check_txn_batch(tid, &partition, &records) {
                        Ok(TxnBatch::Append) => append(&partition, &records, acks, false, local.as_ref()),
                        Ok(TxnBatch::AppendVerified) => append(&partition, &records, acks, true, local.as_ref()),
                        // acks=0 gets no answer to wait for: a client that
                        // is transactional always asks acks=all.
                        Ok(TxnBatch::Verify(_)) if acks == Acks::None => {
                            Outcome::Failed(Failure::of(BrokerError::Txn(TxnError::InvalidTxnState)))
                        }
                        Ok(TxnBatch::Verify(verification)) => {
                            waiting.push(Waiting {
                                topic: topics.len(),
                                partition: partitions.len(),
                                verification,
                                records,
                                local: local.clone(),
                            });
                            Outcome::Verifying
                        }
                        Err(e) => Outcome::Failed(Failure::of(e)),
                    },
                },
            };
            let start = topic
                .as_ref()
                .ok()
                .and_then(|(_, local)| local.as_ref()?.partition(p.index))
                .map_or(-1, |p| p.log_start_offset() as i64);
            partitions.push((p.index, outcome, start, leader));
        }
        // The decoded name is a slice of the request frame: a copy lets the
        // frame's memory go now, not after the fsync wait, so the
        // connection reads the next request into the same (warm) buffer
        // instead of a fresh allocation it must fault in page by page.
        topics.push((TopicName(StrBytes::from_string(t.name.to_string())), t.topic_id, partitions));
    }
    let node_endpoints: Vec<NodeEndpoint> = endpoints_of(c, &image, hinted)
        .into_iter()
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.node_id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port)
                .with_rack(e.rack.map(StrBytes::from_string))
        })
        .collect();
    if acks == Acks::None {
        return Reply::None;
    }
    let (version, correlation_id) = (c.version, c.correlation_id);
    // Below acks=all nothing is left to wait for once appended: answering
    // on the connection's task saves a task spawn and wake-up per request.
    let inline = !waiting.is_empty() || acks != Acks::All;
    let txn_id = req.transactional_id.as_ref().map(|id| id.to_string());
    let broker = broker.clone();
    let mut topics = topics;
    let finish = async move {
        if !waiting.is_empty() {
            // The coordinator answers first; the appends then happen before
            // the connection takes its next request (Inline below), so a
            // producer's batches stay in order.
            let (checks, slots): (Vec<_>, Vec<_>) =
                waiting.into_iter().map(|w| (w.verification, (w.topic, w.partition, w.records, w.local))).unzip();
            let verdicts = broker.verify_txn_batches(txn_id.as_deref().unwrap_or_default(), &checks).await;
            for ((check, (t, p, records, local)), verdict) in checks.iter().zip(slots).zip(verdicts) {
                let outcome = match verdict {
                    Ok(()) => append(&check.partition, &records, acks, true, local.as_ref()),
                    Err(e) => Outcome::Failed(Failure::of(e)),
                };
                if let Some(slot) = topics.get_mut(t).and_then(|topic| topic.2.get_mut(p)) {
                    slot.1 = outcome;
                }
            }
        }
        let mut responses = Vec::with_capacity(topics.len());
        for (name, topic_id, partitions) in topics {
            let mut out = Vec::with_capacity(partitions.len());
            for (index, outcome, log_start, leader) in partitions {
                let mut r = PartitionProduceResponse::default().with_index(index).with_base_offset(-1);
                if let Some((leader_id, leader_epoch)) = leader {
                    r.current_leader =
                        LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader_id)).with_leader_epoch(leader_epoch);
                }
                let result = match outcome {
                    Outcome::Appended(a) => match tokio::time::timeout_at(ack_deadline, a.acknowledged()).await {
                        Ok(r) => r.map_err(Failure::of),
                        Err(_) => Err(Failure::code(ResponseError::RequestTimedOut.code())),
                    },
                    Outcome::Failed(f) => Err(f),
                    Outcome::Verifying => Err(Failure::of(BrokerError::Txn(TxnError::InvalidTxnState))),
                };
                match result {
                    Ok(info) => {
                        r.base_offset = info.base_offset as i64;
                        if version >= 2 {
                            r.log_append_time_ms = info.log_append_time.unwrap_or(-1);
                        }
                        if version >= 5 {
                            r.log_start_offset = log_start;
                        }
                    }
                    Err(f) => {
                        r.error_code = f.code;
                        if version >= 8 {
                            r.error_message = f.message.map(StrBytes::from_string);
                            r.record_errors = f
                                .records
                                .into_iter()
                                .map(|(index, message)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(index)
                                        .with_batch_index_error_message(Some(StrBytes::from_string(message)))
                                })
                                .collect();
                        }
                    }
                }
                out.push(r);
            }
            let mut t = TopicProduceResponse::default().with_partition_responses(out);
            if version >= 13 {
                t.topic_id = topic_id;
            } else {
                t.name = name;
            }
            responses.push(t);
        }
        let mut resp = ProduceResponse::default().with_responses(responses);
        if version >= 10 {
            resp.node_endpoints = node_endpoints;
        }
        encode(ApiKey::Produce, version, correlation_id, &resp)
    };
    if inline { Reply::Inline(Box::pin(finish)) } else { Reply::Later(Box::pin(finish)) }
}

/// Produce to a topic the cluster does not have: Kafka's brokers answer
/// UNKNOWN_TOPIC_OR_PARTITION (clients create topics through Metadata);
/// Ferry also starts creating it through the controller, if the broker
/// auto-creates topics, so the client's retry finds it.
fn auto_create(c: &Call, name: &str) {
    let broker = c.ctx.broker.clone();
    if !broker.config().auto_create_topics || ferry_broker::validate_topic_name(name).is_err() {
        return;
    }
    if !c.allowed_cluster(Operation::Create) && !c.allowed(Operation::Create, ResourceType::Topic, name) {
        return;
    }
    let name = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = broker.ensure_topic(&name).await {
            tracing::debug!(topic = %name, error = %e, "auto-creating topic on produce failed");
        }
    });
}

/// Appends a partition's records (`verified_txn`: see
/// `Partition::append_checked`).
fn append(
    partition: &Partition,
    records: &[u8],
    acks: Acks,
    verified_txn: bool,
    local: Option<&Arc<Topic>>,
) -> Outcome {
    match partition.append_checked(records, acks, verified_txn) {
        Ok(a) => {
            if let Some(local) = local {
                local.stats.appended(a.info.records, a.info.bytes);
            }
            Outcome::Appended(a)
        }
        Err(e) => Outcome::Failed(Failure::of(e)),
    }
}

/// acks other than 0, 1, -1: INVALID_REQUIRED_ACKS for every partition.
fn invalid_acks(c: &Call, req: ProduceRequest) -> Reply {
    let responses = req
        .topic_data
        .into_iter()
        .map(|t| {
            let parts = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(-1)
                        .with_error_code(ResponseError::InvalidRequiredAcks.code())
                })
                .collect();
            let mut r = TopicProduceResponse::default().with_partition_responses(parts);
            if c.version >= 13 {
                r.topic_id = t.topic_id;
            } else {
                r.name = t.name;
            }
            r
        })
        .collect();
    c.reply(ApiKey::Produce, &ProduceResponse::default().with_responses(responses))
}
