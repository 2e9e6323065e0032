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

use super::Call;
use crate::errors::{error_code, error_message};
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
    match c.ctx.broker.elect_leaders(election, wanted.clone()).await {
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
        Err(e) => {
            // The controller could not be reached: every partition asked
            // for gets the error (none asked for: the top-level code).
            let Some(wanted) = wanted else {
                let resp = ElectLeadersResponse::default().with_error_code(error_code(&e));
                return c.reply(ApiKey::ElectLeaders, &resp);
            };
            for (topic, partition) in wanted {
                let out = PartitionResult::default()
                    .with_partition_id(partition)
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(error_message(&e)));
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
    c.reply(ApiKey::ElectLeaders, &ElectLeadersResponse::default().with_replica_election_results(results))
}
