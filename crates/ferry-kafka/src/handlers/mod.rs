//! Request dispatch: one module per API group, as Redpanda lays it out.

mod acls;
mod admin;
mod api_versions;
mod authz;
mod cluster;
mod configs;
mod coordinator;
mod elections;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod nodes;
mod offsets;
mod produce;
mod quorum;
mod reassign;
mod scram_users;
mod txn;

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Message, VersionRange};
use tracing::Instrument;

use ferry_broker::security::Principal;

use crate::response::{Chunk, Reply, Response};
use crate::server::Ctx;

/// The APIs Ferry implements, each over every version its request type
/// decodes (the codec's `ApiKey` table can claim more, e.g. InitProducerId
/// v6, than its message types handle). ApiVersions advertises exactly these.
pub fn supported() -> &'static [(ApiKey, VersionRange)] {
    static TABLE: std::sync::OnceLock<Vec<(ApiKey, VersionRange)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        fn entry<M: Message>(key: ApiKey) -> (ApiKey, VersionRange) {
            let (codec, message) = (key.valid_versions(), M::VERSIONS);
            (key, VersionRange { min: codec.min.max(message.min), max: codec.max.min(message.max) })
        }
        vec![
            entry::<ProduceRequest>(ApiKey::Produce),
            entry::<FetchRequest>(ApiKey::Fetch),
            entry::<ListOffsetsRequest>(ApiKey::ListOffsets),
            entry::<MetadataRequest>(ApiKey::Metadata),
            entry::<DescribeTopicPartitionsRequest>(ApiKey::DescribeTopicPartitions),
            entry::<ApiVersionsRequest>(ApiKey::ApiVersions),
            entry::<CreateTopicsRequest>(ApiKey::CreateTopics),
            entry::<DeleteTopicsRequest>(ApiKey::DeleteTopics),
            entry::<DeleteRecordsRequest>(ApiKey::DeleteRecords),
            entry::<InitProducerIdRequest>(ApiKey::InitProducerId),
            entry::<DescribeConfigsRequest>(ApiKey::DescribeConfigs),
            entry::<AlterConfigsRequest>(ApiKey::AlterConfigs),
            entry::<DescribeLogDirsRequest>(ApiKey::DescribeLogDirs),
            entry::<CreatePartitionsRequest>(ApiKey::CreatePartitions),
            entry::<IncrementalAlterConfigsRequest>(ApiKey::IncrementalAlterConfigs),
            entry::<DescribeClusterRequest>(ApiKey::DescribeCluster),
            entry::<DescribeQuorumRequest>(ApiKey::DescribeQuorum),
            entry::<ElectLeadersRequest>(ApiKey::ElectLeaders),
            entry::<FindCoordinatorRequest>(ApiKey::FindCoordinator),
            entry::<JoinGroupRequest>(ApiKey::JoinGroup),
            entry::<SyncGroupRequest>(ApiKey::SyncGroup),
            entry::<HeartbeatRequest>(ApiKey::Heartbeat),
            entry::<LeaveGroupRequest>(ApiKey::LeaveGroup),
            entry::<ListGroupsRequest>(ApiKey::ListGroups),
            entry::<DescribeGroupsRequest>(ApiKey::DescribeGroups),
            entry::<DeleteGroupsRequest>(ApiKey::DeleteGroups),
            entry::<OffsetCommitRequest>(ApiKey::OffsetCommit),
            entry::<OffsetFetchRequest>(ApiKey::OffsetFetch),
            entry::<OffsetDeleteRequest>(ApiKey::OffsetDelete),
            entry::<ConsumerGroupHeartbeatRequest>(ApiKey::ConsumerGroupHeartbeat),
            entry::<ConsumerGroupDescribeRequest>(ApiKey::ConsumerGroupDescribe),
            entry::<AddPartitionsToTxnRequest>(ApiKey::AddPartitionsToTxn),
            entry::<AddOffsetsToTxnRequest>(ApiKey::AddOffsetsToTxn),
            entry::<EndTxnRequest>(ApiKey::EndTxn),
            entry::<TxnOffsetCommitRequest>(ApiKey::TxnOffsetCommit),
            entry::<DescribeTransactionsRequest>(ApiKey::DescribeTransactions),
            entry::<ListTransactionsRequest>(ApiKey::ListTransactions),
            entry::<AlterPartitionReassignmentsRequest>(ApiKey::AlterPartitionReassignments),
            entry::<ListPartitionReassignmentsRequest>(ApiKey::ListPartitionReassignments),
            entry::<UnregisterBrokerRequest>(ApiKey::UnregisterBroker),
            // Answered by the connection (its session), not by dispatch.
            entry::<SaslHandshakeRequest>(ApiKey::SaslHandshake),
            entry::<SaslAuthenticateRequest>(ApiKey::SaslAuthenticate),
            entry::<CreateAclsRequest>(ApiKey::CreateAcls),
            entry::<DescribeAclsRequest>(ApiKey::DescribeAcls),
            entry::<DeleteAclsRequest>(ApiKey::DeleteAcls),
            entry::<DescribeUserScramCredentialsRequest>(ApiKey::DescribeUserScramCredentials),
            entry::<AlterUserScramCredentialsRequest>(ApiKey::AlterUserScramCredentials),
        ]
    })
}

/// (API key, name) of every API in [`supported`], for metrics labels.
pub fn api_names() -> &'static [(usize, &'static str)] {
    static NAMES: std::sync::OnceLock<Vec<(usize, &'static str)>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        supported()
            .iter()
            .filter_map(|(k, _)| {
                let key = usize::try_from(*k as i16).ok()?;
                Some((key, &*Box::leak(format!("{k:?}").into_boxed_str())))
            })
            .collect()
    })
}

pub fn supports(key: ApiKey, version: i16) -> bool {
    supported().iter().any(|(k, v)| *k == key && version >= v.min && version <= v.max)
}

/// Decodes one request frame and runs its handler, in a `request` span
/// (API key, version, correlation id) that its deferred work keeps.
pub async fn handle(ctx: &Arc<Ctx>, frame: Bytes, peer: &str, principal: &Arc<Principal>) -> Reply {
    // The server checked the frame holds at least the fixed 8 header bytes.
    let (key, version, correlation_id) = {
        let mut b = &frame[..8];
        (b.get_i16(), b.get_i16(), b.get_i32())
    };
    let span = tracing::debug_span!("request", api = key, version, correlation_id);
    dispatch(ctx, frame, peer, principal, key, version, correlation_id).instrument(span.clone()).await.in_span(span)
}

async fn dispatch(
    ctx: &Arc<Ctx>,
    mut frame: Bytes,
    peer: &str,
    principal: &Arc<Principal>,
    key: i16,
    version: i16,
    correlation_id: i32,
) -> Reply {
    let api_key = match ApiKey::try_from(key) {
        Ok(k) if supports(k, version) => k,
        Ok(ApiKey::ApiVersions) => return api_versions::unsupported_version(correlation_id),
        _ => return unsupported(correlation_id),
    };
    let Ok(header) = RequestHeader::decode(&mut frame, api_key.request_header_version(version)) else {
        return Reply::Close("malformed request header".into());
    };
    let request = match RequestKind::decode(api_key, &mut frame, version) {
        Ok(r) => r,
        Err(e) => return Reply::Close(format!("malformed {api_key:?} v{version} request: {e}")),
    };
    let client_id = header.client_id.map(|c| c.to_string()).unwrap_or_default();
    let c = Call {
        ctx: ctx.clone(),
        version,
        correlation_id,
        client_id,
        peer: peer.to_string(),
        principal: principal.clone(),
    };
    if let Some(reply) = coordinator::refuse(&c, &request) {
        return reply;
    }
    match request {
        RequestKind::ApiVersions(r) => api_versions::handle(&c, r),
        RequestKind::Metadata(r) => metadata::handle(&c, r),
        RequestKind::DescribeTopicPartitions(r) => metadata::describe_topic_partitions(&c, r),
        RequestKind::Produce(r) => produce::handle(&c, r),
        RequestKind::Fetch(r) => fetch::handle(&c, r).await,
        RequestKind::ListOffsets(r) => list_offsets::handle(&c, r),
        RequestKind::CreateTopics(r) => inline(admin::create_topics(c, r)),
        RequestKind::DeleteTopics(r) => inline(admin::delete_topics(c, r)),
        RequestKind::CreatePartitions(r) => inline(admin::create_partitions(c, r)),
        RequestKind::DeleteRecords(r) => inline(admin::delete_records(c, r)),
        RequestKind::DescribeConfigs(r) => configs::describe(&c, r),
        RequestKind::AlterConfigs(r) => inline(configs::alter(c, r)),
        RequestKind::IncrementalAlterConfigs(r) => inline(configs::incremental_alter(c, r)),
        RequestKind::DescribeCluster(r) => cluster::describe_cluster(&c, r),
        RequestKind::DescribeLogDirs(r) => cluster::describe_log_dirs(&c, r),
        RequestKind::DescribeQuorum(r) => quorum::describe_quorum(&c, r),
        RequestKind::ElectLeaders(r) => inline(elections::elect_leaders(c, r)),
        RequestKind::AlterPartitionReassignments(r) => inline(reassign::alter(c, r)),
        RequestKind::ListPartitionReassignments(r) => reassign::list(&c, r),
        RequestKind::UnregisterBroker(r) => inline(reassign::unregister_broker(c, r)),
        RequestKind::InitProducerId(r) => inline(init_producer_id::handle(c, r)),
        RequestKind::AddPartitionsToTxn(r) => blocking(c, r, txn::add_partitions_to_txn),
        RequestKind::AddOffsetsToTxn(r) => blocking(c, r, txn::add_offsets_to_txn),
        RequestKind::EndTxn(r) => blocking(c, r, txn::end_txn),
        RequestKind::TxnOffsetCommit(r) => blocking(c, r, txn::txn_offset_commit),
        RequestKind::DescribeTransactions(r) => txn::describe_transactions(&c, r),
        RequestKind::ListTransactions(r) => txn::list_transactions(&c, r),
        RequestKind::FindCoordinator(r) => groups::find_coordinator(&c, r),
        RequestKind::JoinGroup(r) => groups::join_group(&c, r),
        RequestKind::SyncGroup(r) => groups::sync_group(&c, r),
        RequestKind::Heartbeat(r) => groups::heartbeat(&c, r),
        RequestKind::LeaveGroup(r) => groups::leave_group(&c, r),
        RequestKind::ListGroups(r) => groups::list_groups(&c, r),
        RequestKind::DescribeGroups(r) => groups::describe_groups(&c, r),
        RequestKind::DeleteGroups(r) => groups::delete_groups(&c, r),
        RequestKind::OffsetCommit(r) => offsets::offset_commit(&c, r),
        RequestKind::OffsetFetch(r) => offsets::offset_fetch(&c, r),
        RequestKind::OffsetDelete(r) => offsets::offset_delete(&c, r),
        RequestKind::ConsumerGroupHeartbeat(r) => groups::consumer_group_heartbeat(&c, r),
        RequestKind::ConsumerGroupDescribe(r) => groups::consumer_group_describe(&c, r),
        RequestKind::CreateAcls(r) => inline(acls::create_acls(c, r)),
        RequestKind::DescribeAcls(r) => acls::describe_acls(&c, r),
        RequestKind::DeleteAcls(r) => inline(acls::delete_acls(c, r)),
        RequestKind::DescribeUserScramCredentials(r) => scram_users::describe(&c, r),
        RequestKind::AlterUserScramCredentials(r) => inline(scram_users::alter(c, r)),
        _ => unsupported(correlation_id),
    }
}

/// Runs a handler whose work blocks on files (creating directories,
/// fsyncing metadata) on tokio's blocking pool, off the async workers.
fn blocking<R: Send + 'static>(c: Call, req: R, handler: fn(&Call, R) -> Reply) -> Reply {
    Reply::Inline(Box::pin(async move {
        match tokio::task::spawn_blocking(move || handler(&c, req)).await {
            Ok(Reply::Ready(r)) => r,
            // Not reachable for these handlers; an empty response closes.
            _ => Response { chunks: Vec::new() },
        }
    }))
}

/// Runs an async handler (admin changes through the controller) to its
/// end before the connection takes the next request, as their effects
/// must be in order.
fn inline(handler: impl std::future::Future<Output = Reply> + Send + 'static) -> Reply {
    Reply::Inline(Box::pin(async move {
        match handler.await {
            Reply::Ready(r) => r,
            Reply::Later(f) | Reply::Inline(f) => f.await,
            // Not reachable for these handlers; an empty response closes.
            Reply::None | Reply::Close(_) => Response { chunks: Vec::new() },
        }
    }))
}

/// One request's context.
#[derive(Clone)]
pub struct Call {
    pub ctx: Arc<Ctx>,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// The client's address, as Kafka shows it ("/127.0.0.1").
    pub peer: String,
    /// Who the connection is (`User:ANONYMOUS` before or without a login).
    pub principal: Arc<Principal>,
}

impl Call {
    pub fn reply<R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion>(
        &self,
        key: ApiKey,
        body: &R,
    ) -> Reply {
        Reply::Ready(crate::response::encode(key, self.version, self.correlation_id, body))
    }
}

/// An API or version Ferry does not implement: UNSUPPORTED_VERSION in the
/// one shape every response shares (header v0, then the error code), and
/// the connection stays open.
fn unsupported(correlation_id: i32) -> Reply {
    let mut b = BytesMut::with_capacity(6);
    b.extend_from_slice(&correlation_id.to_be_bytes());
    b.extend_from_slice(&kafka_protocol::error::ResponseError::UnsupportedVersion.code().to_be_bytes());
    Reply::Ready(Response { chunks: vec![Chunk::Bytes(b.freeze())] })
}
