//! DescribeCluster and DescribeLogDirs.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use super::nodes::live_brokers;
use crate::response::Reply;

/// The live nodes and the controller quorum's leader, from the image.
pub fn describe_cluster(c: &Call, _req: DescribeClusterRequest) -> Reply {
    let broker = &c.ctx.broker;
    let image = broker.metadata();
    let brokers = live_brokers(c, &image)
        .into_iter()
        .map(|e| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(e.node_id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port)
                .with_rack(e.rack.map(StrBytes::from_string))
        })
        .collect();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.current_cluster_id()))
        .with_controller_id(BrokerId(broker.controller_status().leader.unwrap_or(-1)))
        .with_brokers(brokers);
    if c.version >= 1 {
        resp.endpoint_type = 1; // brokers
    }
    c.reply(ApiKey::DescribeCluster, &resp)
}

pub fn describe_log_dirs(c: &Call, req: DescribeLogDirsRequest) -> Reply {
    let broker = &c.ctx.broker;
    let dir = broker.config().data_dir.clone();
    let wanted = |topic: &str, partition: i32| {
        req.topics.as_ref().is_none_or(|ts| ts.iter().any(|t| &*t.topic == topic && t.partitions.contains(&partition)))
    };
    let topics = broker
        .topics()
        .into_iter()
        .filter_map(|t| {
            let partitions: Vec<_> = t
                .partitions()
                .iter()
                .filter(|p| wanted(&t.name, p.index))
                .map(|p| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index)
                        .with_partition_size(p.size_bytes() as i64)
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                    .with_partitions(partitions)
            })
        })
        .collect();
    let abs = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(abs.display().to_string()))
        .with_topics(topics);
    if c.version >= 4 {
        let (total, usable) = nix::sys::statvfs::statvfs(&abs)
            .map(|s| {
                let f = s.fragment_size() as i64;
                (s.blocks() as i64 * f, s.blocks_available() as i64 * f)
            })
            .unwrap_or((-1, -1));
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    c.reply(ApiKey::DescribeLogDirs, &DescribeLogDirsResponse::default().with_results(vec![result]))
}
