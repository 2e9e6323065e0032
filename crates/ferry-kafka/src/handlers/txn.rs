//! Transactions: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
//! EndTxn, DescribeTransactions, ListTransactions (InitProducerId is in
//! its own module). The state machine is ferry-broker's `TxnCoordinator`;
//! these handlers translate. They write and fsync state, so they run on
//! the blocking pool.

use ferry_broker::txn::{TxnError, TxnState};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use ferry_broker::metadata::CoordinatorKind;

use super::Call;
use crate::errors::{denied_code, group_error_code, txn_error_code};
use crate::response::Reply;
use ferry_broker::security::{Operation, ResourceType};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The first version of each API that knows PRODUCER_FENCED (KIP-588).
fn fenced_since(key: ApiKey) -> i16 {
    match key {
        ApiKey::InitProducerId => 4,
        ApiKey::TxnOffsetCommit => 3,
        _ => 2,
    }
}

fn code(c: &Call, key: ApiKey, e: TxnError) -> i16 {
    txn_error_code(e, c.version >= fenced_since(key))
}

pub fn add_partitions_to_txn(c: &Call, req: AddPartitionsToTxnRequest) -> Reply {
    let mut r = AddPartitionsToTxnResponse::default();
    if c.version <= 3 {
        r.results_by_topic_v3_and_below = add_partitions(
            c,
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
        );
    } else {
        // v4+ batches transactions (a broker verifying on behalf of
        // producers, KIP-890); each gets its own result.
        r.results_by_transaction = req
            .transactions
            .iter()
            .map(|t| {
                let topics =
                    add_partitions(c, &t.transactional_id, t.producer_id.0, t.producer_epoch, &t.topics, t.verify_only);
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topics)
            })
            .collect();
    }
    c.reply(ApiKey::AddPartitionsToTxn, &r)
}

/// One transaction's partitions: unknown ones fail with
/// UNKNOWN_TOPIC_OR_PARTITION and the others with OPERATION_NOT_ATTEMPTED,
/// as Kafka does; otherwise all share the coordinator's answer.
fn add_partitions(
    c: &Call,
    id: &str,
    pid: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let broker = &c.ctx.broker;
    let wanted: Vec<(String, i32)> =
        topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), *p))).collect();
    let image = broker.metadata();
    let known = |(t, p): &(String, i32)| image.partition(t, *p).is_some();
    let may_write = |(t, _): &(String, i32)| c.allowed(Operation::Write, ResourceType::Topic, t);
    let codes: Vec<i16> = if !c.allowed(Operation::Write, ResourceType::TransactionalId, id) {
        vec![denied_code(ResourceType::TransactionalId); wanted.len()]
    } else if !wanted.iter().all(may_write) {
        let denied = denied_code(ResourceType::Topic);
        wanted.iter().map(|p| if may_write(p) { ResponseError::OperationNotAttempted.code() } else { denied }).collect()
    } else if !super::coordinator::coordinates(c, CoordinatorKind::Transaction, id) {
        vec![super::coordinator::not_coordinator(); wanted.len()]
    } else if !wanted.iter().all(known) {
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        wanted.iter().map(|p| if known(p) { ResponseError::OperationNotAttempted.code() } else { unknown }).collect()
    } else if verify_only {
        match broker.txns().verify_partitions(id, pid, epoch, &wanted) {
            Ok(found) => found.iter().map(|&f| if f { 0 } else { ResponseError::InvalidTxnState.code() }).collect(),
            Err(e) => vec![code(c, ApiKey::AddPartitionsToTxn, e); wanted.len()],
        }
    } else {
        let outcome = broker.txns().add_partitions(id, pid, epoch, &wanted);
        vec![outcome.err().map_or(0, |e| code(c, ApiKey::AddPartitionsToTxn, e)); wanted.len()]
    };
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(results)
        })
        .collect()
}

pub fn add_offsets_to_txn(c: &Call, req: AddOffsetsToTxnRequest) -> Reply {
    if let Some(code) = txn_refused(c, &req.transactional_id, Some(&req.group_id)) {
        return c.reply(ApiKey::AddOffsetsToTxn, &AddOffsetsToTxnResponse::default().with_error_code(code));
    }
    let outcome =
        c.ctx.broker.txns().add_offsets(&req.transactional_id, req.producer_id.0, req.producer_epoch, &req.group_id);
    let r = AddOffsetsToTxnResponse::default()
        .with_error_code(outcome.err().map_or(0, |e| code(c, ApiKey::AddOffsetsToTxn, e)));
    c.reply(ApiKey::AddOffsetsToTxn, &r)
}

pub fn txn_offset_commit(c: &Call, req: TxnOffsetCommitRequest) -> Reply {
    let broker = &c.ctx.broker;
    let (valid, unknown) = super::offsets::to_commit(
        broker,
        req.topics.iter().flat_map(|t| {
            t.partitions.iter().map(|p| {
                let epoch = if c.version >= 2 { p.committed_leader_epoch } else { -1 };
                (t.name.as_str(), p.partition_index, p.committed_offset, epoch, p.committed_metadata.as_deref())
            })
        }),
    );
    // v3+ carries the consumer's group metadata, checked as OffsetCommit's
    // is (a generation of -1 commits from outside the group).
    let member_check = if c.version >= 3 {
        broker.groups().check_member(&req.group_id, &req.member_id, req.generation_id).err().map(group_error_code)
    } else {
        None
    };
    let shared = match member_check {
        _ if txn_refused(c, &req.transactional_id, Some(&req.group_id)).is_some() => {
            txn_refused(c, &req.transactional_id, Some(&req.group_id))
        }
        Some(e) => Some(e),
        None if valid.is_empty() => None,
        None => broker
            .stage_txn_offsets(&req.transactional_id, req.producer_id.0, req.producer_epoch, &req.group_id, valid)
            .err()
            .map(|e| code(c, ApiKey::TxnOffsetCommit, e)),
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let own = unknown.get(&(t.name.to_string(), p.partition_index)).copied();
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(own.or(shared).unwrap_or(0))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    c.reply(ApiKey::TxnOffsetCommit, &TxnOffsetCommitResponse::default().with_topics(topics))
}

/// The denial code if the client may not write to the transactional id
/// (or read the group whose offsets the transaction commits).
fn txn_refused(c: &Call, id: &str, group: Option<&str>) -> Option<i16> {
    if !c.allowed(Operation::Write, ResourceType::TransactionalId, id) {
        return Some(denied_code(ResourceType::TransactionalId));
    }
    match group {
        Some(g) if !c.allowed(Operation::Read, ResourceType::Group, g) => Some(denied_code(ResourceType::Group)),
        _ => None,
    }
}

pub fn end_txn(c: &Call, req: EndTxnRequest) -> Reply {
    if let Some(code) = txn_refused(c, &req.transactional_id, None) {
        return c.reply(ApiKey::EndTxn, &EndTxnResponse::default().with_error_code(code));
    }
    let broker = &c.ctx.broker;
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let outcome = broker.txns().end(&req.transactional_id, pid, epoch, req.committed, broker.as_ref());
    let mut r = EndTxnResponse::default().with_error_code(outcome.err().map_or(0, |e| code(c, ApiKey::EndTxn, e)));
    if c.version >= 5 {
        // Transaction version 2 bumps the epoch here; Ferry runs version 1
        // (it advertises no `transaction.version` feature), so it stays.
        r.producer_id = ProducerId(pid);
        r.producer_epoch = epoch;
    }
    c.reply(ApiKey::EndTxn, &r)
}

pub fn describe_transactions(c: &Call, req: DescribeTransactionsRequest) -> Reply {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let txns = c.ctx.broker.txns();
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let mut st = TransactionState::default().with_transactional_id(id.clone());
            if !c.allowed(Operation::Describe, ResourceType::TransactionalId, &id) {
                st.error_code = denied_code(ResourceType::TransactionalId);
                return st;
            }
            match txns.describe(&id) {
                None => st.error_code = ResponseError::TransactionalIdNotFound.code(),
                Some(m) => {
                    st.transaction_state = s(m.state.name());
                    st.transaction_timeout_ms = m.timeout_ms;
                    st.transaction_start_time_ms = if m.start_ms > 0 { m.start_ms as i64 } else { -1 };
                    st.producer_id = ProducerId(m.producer_id);
                    st.producer_epoch = m.producer_epoch;
                    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                    for (t, p) in m.partitions {
                        by_topic.entry(t).or_default().push(p);
                    }
                    st.topics = by_topic
                        .into_iter()
                        .map(|(t, ps)| TopicData::default().with_topic(TopicName(s(t))).with_partitions(ps))
                        .collect();
                }
            }
            st
        })
        .collect();
    c.reply(ApiKey::DescribeTransactions, &DescribeTransactionsResponse::default().with_transaction_states(states))
}

pub fn list_transactions(c: &Call, req: ListTransactionsRequest) -> Reply {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    const STATES: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];
    let mut r = ListTransactionsResponse::default();
    r.unknown_state_filters =
        req.state_filters.iter().filter(|f| !STATES.iter().any(|s| s.name() == f.as_str())).cloned().collect();
    let now = ferry_util::time::now_ms();
    let pattern = req.transactional_id_pattern.as_deref().filter(|p| !p.is_empty());
    r.transaction_states = c
        .ctx
        .broker
        .txns()
        .list()
        .into_iter()
        .filter(|(_, _, state, _)| req.state_filters.is_empty() || req.state_filters.iter().any(|f| f == state.name()))
        .filter(|(_, pid, _, _)| {
            req.producer_id_filters.is_empty() || req.producer_id_filters.contains(&ProducerId(*pid))
        })
        // v1: only transactions open longer than the filter (ms).
        .filter(|(_, _, state, start)| {
            req.duration_filter < 0 || (*state == TxnState::Ongoing && now - *start as i64 >= req.duration_filter)
        })
        .filter(|(id, ..)| pattern.is_none_or(|p| simple_match(p, id)))
        // Only the ids the client may describe (as Kafka filters them).
        .filter(|(id, ..)| c.allowed(Operation::Describe, ResourceType::TransactionalId, id))
        .map(|(id, pid, state, _)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(ProducerId(pid))
                .with_transaction_state(s(state.name()))
        })
        .collect();
    c.reply(ApiKey::ListTransactions, &r)
}

/// ListTransactions v2's `transactional_id_pattern` is a Java regular
/// expression; Ferry matches the common subset: literals, `.` and `.*`,
/// anchored at both ends as `Pattern.matches` is.
fn simple_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'.', b'*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
            [b'\\', c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
            [b'.', rest @ ..] => !t.is_empty() && go(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_match_literals_dots_and_stars() {
        use super::simple_match as m;
        assert!(m("app-.*", "app-1") && m("a.c", "abc") && m(".*", "") && m("a\\.b", "a.b"));
        assert!(!m("app-.*", "xapp-1") && !m("a.c", "ac") && !m("a\\.b", "axb"));
    }
}
