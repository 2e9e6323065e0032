//! Produce: batches go to the log as sent (the log validates them), unless
//! the topic's `compression.type` names another codec; the response waits
//! for what `acks` asks. Refused records are named in KIP-467 record errors.

use ferry_broker::txn::TxnError;
use ferry_broker::{Acks, Appended, Broker, BrokerError};
use ferry_records::batch::BatchHeader;
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

/// A partition's outcome: appended (maybe still waiting), or failed now.
enum Outcome {
    Appended(Appended),
    Failed(Failure),
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
                    Ok(partition) => match check_transactional(broker, name, p.index, &records)
                        .and_then(|()| partition.append(&records, acks))
                    {
                        Ok(a) => {
                            if let Some(local) = local {
                                local.stats.appended(a.info.records, a.info.bytes);
                            }
                            Outcome::Appended(a)
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
    let finish = async move {
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
    Reply::Later(Box::pin(finish))
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

/// A transactional batch needs its producer's transaction open and holding
/// the partition; Produce knows no PRODUCER_FENCED, so a fenced producer
/// gets INVALID_PRODUCER_EPOCH as from Kafka.
fn check_transactional(broker: &Broker, topic: &str, partition: i32, records: &[u8]) -> Result<(), BrokerError> {
    match BatchHeader::parse(records) {
        Ok(h) if h.is_transactional() && !h.is_control() => {
            broker.txns().verify_produce(h.producer_id, h.producer_epoch, topic, partition).map_err(|e| match e {
                TxnError::ProducerFenced => BrokerError::InvalidProducerEpoch,
                e => e.into(),
            })
        }
        _ => Ok(()),
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
