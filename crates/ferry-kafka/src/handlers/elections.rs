//! ElectLeaders (API 43, v0-2): preferred-leader elections and, for
//! UNCLEAN, leaders for leaderless partitions. Unclean election is off by
//! design, so an UNCLEAN election picks only from the ISR and the eligible
//! leader replicas, and answers ELIGIBLE_LEADERS_NOT_AVAILABLE when none is
//! live, as Kafka does with `unclean.leader.election.enable=false`.

use std::collections::BTreeMap;

use ferry_broker::metadata::{ElectionError, ElectionType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use ferry_broker::security::{Operation, ResourceType};

use super::Call;
use crate::errors::{denied_code, error_code, error_message};
use crate::response::Reply;

/// Kafka's ElectionType codes (v0 has no field: always preferred).
fn election_type(code: i8) -> Option<ElectionType> {
    match code {
        0 => Some(ElectionType::Preferred),
        1 => Some(ElectionType::Unclean),
        _ => None,
    }
}

fn code_of(e: ElectionError) -> ResponseError {
    match e {
        ElectionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        ElectionError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
    }
}

pub async fn elect_leaders(c: Call, req: ElectLeadersRequest) -> Reply {
    let Some(election) = election_type(if c.version == 0 { 0 } else { req.election_type }) else {
        let resp = ElectLeadersResponse::default().with_error_code(ResponseError::InvalidRequest.code());
        return c.reply(ApiKey::ElectLeaders, &resp);
    };
    let wanted: Option<Vec<(String, i32)>> = req
        .topic_partitions
        .as_ref()
        .map(|topics| topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p))).collect());
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    // Alter on the Cluster, as Kafka: refused, the top-level code and every
    // partition asked for carry CLUSTER_AUTHORIZATION_FAILED.
    let outcome = if c.allowed_cluster(Operation::Alter) {
        c.ctx
            .broker
            .elect_leaders(election, wanted.clone())
            .await
            .map_err(|e| (error_code(&e), error_message(&e), false))
    } else {
        let code = denied_code(ResourceType::Cluster);
        Err((code, StrBytes::from_static_str("Cluster authorization failed."), true))
    };
    let mut top_code = 0;
    match outcome {
        Ok(results) => {
            for r in results {
                let mut out = PartitionResult::default().with_partition_id(r.partition);
                if let Some(e) = r.error {
                    let code = code_of(e);
                    out.error_code = code.code();
                    out.error_message = Some(StrBytes::from_string(code.to_string()));
                }
                by_topic.entry(r.topic).or_default().push(out);
            }
        }
        Err((code, message, refused)) => {
            // Refused, or the controller could not be reached: every
            // partition asked for gets the error; the top-level code (v1+)
            // tells a refusal, or the error when none was named.
            if c.version >= 1 && (refused || wanted.is_none()) {
                top_code = code;
            }
            for (topic, partition) in wanted.into_iter().flatten() {
                let out = PartitionResult::default()
                    .with_partition_id(partition)
                    .with_error_code(code)
                    .with_error_message(Some(message.clone()));
                by_topic.entry(topic).or_default().push(out);
            }
        }
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partitions)
        })
        .collect();
    let resp = ElectLeadersResponse::default().with_error_code(top_code).with_replica_election_results(results);
    c.reply(ApiKey::ElectLeaders, &resp)
}
