//! NOT_COORDINATOR: a group or transactional-id request for a key this
//! node does not coordinate is answered here, before its handler runs.
//! Which node coordinates a key is decided in one place,
//! [`MetadataImage::coordinator`](ferry_broker::metadata::MetadataImage::coordinator).
//! Requests naming several groups (DescribeGroups, DeleteGroups,
//! ConsumerGroupDescribe, OffsetFetch v8+) are checked per group by their
//! handlers.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use ferry_broker::metadata::CoordinatorKind::{self, Group, Transaction};

use super::Call;
use crate::errors::counted_code;
use crate::response::Reply;

/// Whether this node coordinates `key` of `kind` now.
pub fn coordinates(c: &Call, kind: CoordinatorKind, key: &str) -> bool {
    c.ctx.broker.coordinates(kind, key)
}

/// NOT_COORDINATOR, counted for the error metric.
pub fn not_coordinator() -> i16 {
    counted_code(ResponseError::NotCoordinator.code())
}

/// The NOT_COORDINATOR answer to `request`, if its key is coordinated
/// elsewhere (or nowhere now); `None`: this node handles it.
pub fn refuse(c: &Call, request: &RequestKind) -> Option<Reply> {
    let nc = ResponseError::NotCoordinator.code();
    let here = |kind, key: &str| coordinates(c, kind, key);
    let reply = match request {
        RequestKind::JoinGroup(r) if !here(Group, &r.group_id) => c.reply(
            ApiKey::JoinGroup,
            &JoinGroupResponse::default()
                .with_error_code(not_coordinator())
                .with_generation_id(-1)
                .with_protocol_name(Some(StrBytes::default())),
        ),
        RequestKind::SyncGroup(r) if !here(Group, &r.group_id) => {
            c.reply(ApiKey::SyncGroup, &SyncGroupResponse::default().with_error_code(not_coordinator()))
        }
        RequestKind::Heartbeat(r) if !here(Group, &r.group_id) => {
            c.reply(ApiKey::Heartbeat, &HeartbeatResponse::default().with_error_code(not_coordinator()))
        }
        RequestKind::LeaveGroup(r) if !here(Group, &r.group_id) => {
            c.reply(ApiKey::LeaveGroup, &LeaveGroupResponse::default().with_error_code(not_coordinator()))
        }
        RequestKind::OffsetDelete(r) if !here(Group, &r.group_id) => {
            c.reply(ApiKey::OffsetDelete, &OffsetDeleteResponse::default().with_error_code(not_coordinator()))
        }
        RequestKind::ConsumerGroupHeartbeat(r) if !here(Group, &r.group_id) => c.reply(
            ApiKey::ConsumerGroupHeartbeat,
            &ConsumerGroupHeartbeatResponse::default().with_error_code(not_coordinator()),
        ),
        RequestKind::OffsetFetch(r) if c.version < 8 && !here(Group, &r.group_id) => {
            let mut resp = OffsetFetchResponse::default();
            if c.version >= 2 {
                resp.error_code = not_coordinator();
            }
            c.reply(ApiKey::OffsetFetch, &resp)
        }
        RequestKind::OffsetCommit(r) if !here(Group, &r.group_id) => {
            counted_code(nc);
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(nc)
                        })
                        .collect();
                    OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(parts)
                })
                .collect();
            c.reply(ApiKey::OffsetCommit, &OffsetCommitResponse::default().with_topics(topics))
        }
        // Sent to the group's coordinator (it stages the group's offsets).
        RequestKind::TxnOffsetCommit(r) if !here(Group, &r.group_id) => {
            counted_code(nc);
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(nc)
                        })
                        .collect();
                    TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(parts)
                })
                .collect();
            c.reply(ApiKey::TxnOffsetCommit, &TxnOffsetCommitResponse::default().with_topics(topics))
        }
        RequestKind::AddOffsetsToTxn(r) if !here(Transaction, &r.transactional_id) => {
            c.reply(ApiKey::AddOffsetsToTxn, &AddOffsetsToTxnResponse::default().with_error_code(not_coordinator()))
        }
        RequestKind::EndTxn(r) if !here(Transaction, &r.transactional_id) => {
            let mut resp = EndTxnResponse::default().with_error_code(not_coordinator());
            if c.version >= 5 {
                resp.producer_id = ProducerId(-1);
                resp.producer_epoch = -1;
            }
            c.reply(ApiKey::EndTxn, &resp)
        }
        RequestKind::AddPartitionsToTxn(r)
            if c.version <= 3 && !here(Transaction, &r.v3_and_below_transactional_id) =>
        {
            counted_code(nc);
            let topics = r
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(nc)
                        })
                        .collect();
                    AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(parts)
                })
                .collect();
            c.reply(
                ApiKey::AddPartitionsToTxn,
                &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics),
            )
        }
        _ => return None,
    };
    Some(reply)
}
