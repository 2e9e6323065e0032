//! ListOffsets: earliest, latest, by timestamp, max timestamp.

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::Call;
use crate::errors::denied_code;
use crate::errors::error_code;
use crate::response::Reply;
use ferry_broker::security::{Operation, ResourceType};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn handle(c: &Call, req: ListOffsetsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let read_committed = c.version >= 2 && req.isolation_level == 1;
    let image = broker.metadata();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    if !c.allowed(Operation::Describe, ResourceType::Topic, &t.name) {
                        r.error_code = denied_code(ResourceType::Topic);
                        return r;
                    }
                    let part = match broker.leader_partition(&t.name, p.partition_index) {
                        Ok(part) => part,
                        Err(e) => {
                            r.error_code = error_code(&e);
                            return r;
                        }
                    };
                    let found = match p.timestamp {
                        // read_committed consumers start at the last stable offset.
                        LATEST if read_committed => Ok(Some((part.last_stable_offset(), -1))),
                        LATEST => Ok(Some((part.high_watermark(), -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((part.log_start_offset(), -1))),
                        LATEST_TIERED => Ok(None),
                        MAX_TIMESTAMP => part.max_timestamp_offset(),
                        ts if ts >= 0 => part.offset_for_timestamp(ts),
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            r.offset = offset as i64;
                            r.timestamp = ts;
                        }
                        Ok(None) => {
                            r.offset = -1;
                            r.timestamp = -1;
                        }
                        Err(e) => r.error_code = error_code(&e),
                    }
                    if c.version >= 4 {
                        r.leader_epoch = image.partition(&t.name, p.partition_index).map_or(-1, |i| i.leader_epoch);
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    c.reply(ApiKey::ListOffsets, &ListOffsetsResponse::default().with_topics(topics))
}
