//! `ferry cluster info|status`: the cluster's nodes, its controller quorum
//! and how partitions and leaderships spread over the nodes, from
//! DescribeCluster, DescribeQuorum and Metadata.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use ferry_client::{ClientError, ClusterDescription, ClusterMetadata, QuorumDescription};
use serde_json::{Value, json};

use super::output::{json, table};
use super::{ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum ClusterVerb {
    /// Cluster id, controller and brokers.
    Info,
    /// Nodes (address, rack, fenced), the controller quorum (leader, term,
    /// commit index, voters) and partitions and leaders per node.
    Status,
}

#[derive(Debug, Args)]
pub struct ClusterCmd {
    #[command(subcommand)]
    pub verb: ClusterVerb,
    #[command(flatten)]
    pub conn: ClientArgs,
}

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    let client = cmd.conn.connect().await?;
    match cmd.verb {
        ClusterVerb::Info => info(&client.metadata(None).await?, cmd.conn.format),
        ClusterVerb::Status => {
            let nodes = client.describe_cluster().await?;
            // A broker without DescribeQuorum (not KRaft) still gets the rest.
            let quorum = match client.describe_quorum().await {
                Ok(q) => Some(q),
                Err(ClientError::Unsupported(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let md = client.metadata(None).await?;
            let mut status = Status::new(&nodes, quorum.as_ref(), &md);
            let ids: Vec<i32> = status.nodes.iter().filter(|n| n.kafka.is_some()).map(|n| n.id).collect();
            // A broker without Ferry's node config answers nothing: no state.
            if let Ok(states) = client.decommissioning(&ids).await {
                for (id, leaving) in states {
                    if let Some(row) = status.nodes.iter_mut().find(|n| n.id == id) {
                        row.decommissioning = leaving == Some(true);
                    }
                }
            }
            match cmd.conn.format {
                Format::Json => json(&status.to_json()),
                Format::Table => status.print(),
            }
        }
    }
    Ok(())
}

fn info(md: &ClusterMetadata, format: Format) {
    match format {
        Format::Json => json(&json!({
            "cluster_id": md.cluster_id,
            "controller_id": md.controller_id,
            "brokers": md.brokers.iter().map(|b| json!({"id": b.node_id, "host": b.host, "port": b.port})).collect::<Vec<_>>(),
            "topics": md.topics.len(),
        })),
        Format::Table => {
            say!("cluster id: {}", md.cluster_id.as_deref().unwrap_or("-"));
            say!("controller: {}", md.controller_id);
            say!("topics:     {}", md.topics.len());
            say!();
            table(
                &["BROKER", "HOST", "PORT"],
                md.brokers.iter().map(|b| vec![b.node_id.to_string(), b.host.clone(), b.port.to_string()]).collect(),
            );
        }
    }
}

/// One node's line of `ferry cluster status`.
#[derive(Debug, Default, PartialEq, Eq)]
struct NodeRow {
    id: i32,
    /// `host:port` of its Kafka listener; `None` for a voter that has not registered.
    kafka: Option<String>,
    rack: Option<String>,
    fenced: bool,
    /// Being decommissioned (replicas moving off it).
    decommissioning: bool,
    voter: bool,
    replicas: usize,
    leaders: usize,
}

/// What `ferry cluster status` shows.
#[derive(Debug)]
struct Status {
    cluster_id: String,
    quorum: Option<QuorumDescription>,
    nodes: Vec<NodeRow>,
    partitions: usize,
    leaderless: usize,
}

impl Status {
    fn new(cluster: &ClusterDescription, quorum: Option<&QuorumDescription>, md: &ClusterMetadata) -> Status {
        let voters: Vec<i32> = quorum.map(|q| q.voters.iter().map(|v| v.id).collect()).unwrap_or_default();
        let mut rows: BTreeMap<i32, NodeRow> = cluster
            .nodes
            .iter()
            .map(|n| {
                let row = NodeRow {
                    id: n.id,
                    kafka: Some(format!("{}:{}", n.host, n.port)),
                    rack: n.rack.clone(),
                    fenced: n.fenced,
                    voter: voters.contains(&n.id),
                    ..NodeRow::default()
                };
                (n.id, row)
            })
            .collect();
        for id in &voters {
            rows.entry(*id).or_insert_with(|| NodeRow { id: *id, voter: true, ..NodeRow::default() });
        }
        let (mut partitions, mut leaderless) = (0, 0);
        for p in md.topics.iter().flat_map(|t| &t.partitions) {
            partitions += 1;
            for r in &p.replicas {
                rows.entry(*r).or_insert_with(|| NodeRow { id: *r, ..NodeRow::default() }).replicas += 1;
            }
            match rows.get_mut(&p.leader) {
                Some(row) if p.leader >= 0 => row.leaders += 1,
                _ => leaderless += 1,
            }
        }
        Status {
            cluster_id: cluster.cluster_id.clone(),
            quorum: quorum.cloned(),
            nodes: rows.into_values().collect(),
            partitions,
            leaderless,
        }
    }

    fn to_json(&self) -> Value {
        let replica = |r: &ferry_client::QuorumReplica| json!({"id": r.id, "log_end_offset": r.log_end_offset});
        json!({
            "cluster_id": self.cluster_id,
            "controller": self.quorum.as_ref().map(|q| json!({
                "leader": q.leader,
                "term": q.epoch,
                "commit_index": q.high_watermark,
                "voters": q.voters.iter().map(replica).collect::<Vec<_>>(),
                "observers": q.observers.iter().map(replica).collect::<Vec<_>>(),
            })),
            "partitions": self.partitions,
            "leaderless_partitions": self.leaderless,
            "nodes": self.nodes.iter().map(|n| json!({
                "id": n.id,
                "kafka": n.kafka,
                "rack": n.rack,
                "fenced": n.fenced,
                "decommissioning": n.decommissioning,
                "registered": n.kafka.is_some(),
                "voter": n.voter,
                "replicas": n.replicas,
                "leaders": n.leaders,
            })).collect::<Vec<_>>(),
        })
    }

    fn print(&self) {
        say!("cluster id: {}", self.cluster_id);
        if let Some(q) = &self.quorum {
            let leader = if q.leader < 0 { "none".to_string() } else { q.leader.to_string() };
            say!("controller: leader {leader}, term {}, commit index {}", q.epoch, q.high_watermark);
            let ids = |rs: &[ferry_client::QuorumReplica]| {
                let ids: Vec<String> = rs.iter().map(|r| r.id.to_string()).collect();
                if ids.is_empty() { "-".to_string() } else { ids.join(", ") }
            };
            say!("voters:     {}", ids(&q.voters));
            say!("observers:  {}", ids(&q.observers));
        } else {
            say!("controller: the broker does not answer DescribeQuorum");
        }
        say!("partitions: {} ({} without a leader)", self.partitions, self.leaderless);
        say!();
        table(&["NODE", "KAFKA", "RACK", "STATE", "VOTER", "LEADERS", "REPLICAS"], self.rows());
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|n| {
                let state = match (&n.kafka, n.fenced, n.decommissioning) {
                    (None, _, _) => "unregistered",
                    (Some(_), true, false) => "fenced",
                    (Some(_), true, true) => "fenced, leaving",
                    (Some(_), false, true) if n.replicas == 0 => "leaving, empty",
                    (Some(_), false, true) => "leaving",
                    (Some(_), false, false) => "live",
                };
                vec![
                    n.id.to_string(),
                    n.kafka.clone().unwrap_or_else(|| "-".into()),
                    n.rack.clone().unwrap_or_else(|| "-".into()),
                    state.into(),
                    if n.voter { "yes" } else { "no" }.into(),
                    n.leaders.to_string(),
                    n.replicas.to_string(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::{ClusterNode, PartitionMetadata, QuorumReplica, TopicMetadata};

    fn partition(partition: i32, leader: i32, replicas: &[i32]) -> PartitionMetadata {
        PartitionMetadata {
            partition,
            leader,
            leader_epoch: 0,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            error: 0,
        }
    }

    #[test]
    fn status_counts_partitions_and_leaders_per_node() {
        let node = |id, fenced| ClusterNode { id, host: "h".into(), port: 9090 + id, rack: None, fenced };
        let cluster =
            ClusterDescription { cluster_id: "c".into(), controller_id: 1, nodes: vec![node(1, false), node(2, true)] };
        let replica = |id| QuorumReplica { id, log_end_offset: -1, last_fetch_ms: -1, last_caught_up_ms: -1 };
        let quorum = QuorumDescription {
            leader: 1,
            epoch: 4,
            high_watermark: 99,
            voters: vec![replica(1), replica(3)],
            observers: vec![replica(2)],
        };
        let md = ClusterMetadata {
            cluster_id: Some("c".into()),
            controller_id: 1,
            brokers: Vec::new(),
            topics: vec![TopicMetadata {
                name: "t".into(),
                id: String::new(),
                error: 0,
                partitions: vec![partition(0, 1, &[1, 2]), partition(1, -1, &[2]), partition(2, 1, &[1])],
            }],
        };
        let s = Status::new(&cluster, Some(&quorum), &md);
        assert_eq!(
            s.rows(),
            vec![
                vec!["1", "h:9091", "-", "live", "yes", "2", "2"],
                vec!["2", "h:9092", "-", "fenced", "no", "0", "2"],
                vec!["3", "-", "-", "unregistered", "yes", "0", "0"],
            ]
        );
        let j = s.to_json();
        assert_eq!((j["partitions"].clone(), j["leaderless_partitions"].clone()), (json!(3), json!(1)));
        assert_eq!(j["controller"]["term"], 4);
        assert_eq!(j["controller"]["commit_index"], 99);
        assert_eq!(j["nodes"][1]["fenced"], true);
        assert_eq!(j["nodes"][2]["registered"], false);
        // Without DescribeQuorum: no controller section, nobody a voter.
        let mut s = Status::new(&cluster, None, &md);
        assert!(s.to_json()["controller"].is_null());
        assert!(s.nodes.iter().all(|n| !n.voter));
        // Decommissioning nodes show as leaving until they hold nothing.
        for n in &mut s.nodes {
            n.decommissioning = n.id <= 2;
        }
        let states: Vec<String> = s.rows().into_iter().map(|r| r[3].clone()).collect();
        assert_eq!(states, ["leaving", "fenced, leaving"]);
        s.nodes[0].replicas = 0;
        assert_eq!(s.rows()[0][3], "leaving, empty");
        assert_eq!(s.to_json()["nodes"][0]["decommissioning"], true);
    }
}
