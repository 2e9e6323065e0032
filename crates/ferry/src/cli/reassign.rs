//! `ferry topic reassign` and `ferry topic reassignments`: move a
//! partition's replicas (KIP-455's AlterPartitionReassignments) and list
//! the moves in progress.

use ferry_client::Client;
use serde_json::json;

use super::Format;
use super::output::{json, table};

/// Reassigns `topic`-`partition` to `replicas` (comma-separated node ids),
/// or cancels its reassignment.
pub async fn reassign(
    client: &Client,
    fmt: Format,
    topic: &str,
    partition: i32,
    replicas: Option<&str>,
    cancel: bool,
) -> anyhow::Result<()> {
    let target = match (replicas, cancel) {
        (Some(_), true) | (None, false) => anyhow::bail!("give either --replicas 1,2,3 or --cancel"),
        (Some(list), false) => Some(parse_ids(list)?),
        (None, true) => None,
    };
    client.alter_partition_reassignment(topic, partition, target.as_deref()).await?;
    match (fmt, &target) {
        (Format::Json, _) => {
            json(&json!({ "topic": topic, "partition": partition, "replicas": target, "cancelled": cancel }));
        }
        (Format::Table, Some(t)) => say!("reassigning {topic}-{partition} to {}", ids(t)),
        (Format::Table, None) => say!("cancelled the reassignment of {topic}-{partition}"),
    }
    Ok(())
}

/// Lists the reassignments in progress.
pub async fn list(client: &Client, fmt: Format) -> anyhow::Result<()> {
    let all = client.list_partition_reassignments().await?;
    match fmt {
        Format::Json => json(&json!({ "reassignments": all })),
        Format::Table => table(
            &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
            all.iter()
                .map(|r| {
                    vec![r.topic.clone(), r.partition.to_string(), ids(&r.replicas), ids(&r.adding), ids(&r.removing)]
                })
                .collect(),
        ),
    }
    Ok(())
}

fn ids(nodes: &[i32]) -> String {
    if nodes.is_empty() { "-".into() } else { nodes.iter().map(i32::to_string).collect::<Vec<_>>().join(",") }
}

fn parse_ids(list: &str) -> anyhow::Result<Vec<i32>> {
    list.split(',')
        .map(|s| s.trim().parse::<i32>().map_err(|_| anyhow::anyhow!("--replicas: {s:?} is not a node id")))
        .collect()
}
