//! `ferry node decommission|remove`: take a node out of the cluster.
//! Decommission marks it leaving (placement never picks it again) and the
//! controller moves each of its replicas to another live node; the command
//! waits until the node holds nothing, then says it can be stopped. After
//! it is stopped, `remove` unregisters it (Kafka's UnregisterBroker).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use ferry_client::Client;
use serde_json::json;

use super::output::json;
use super::{ClientArgs, Format};

#[derive(Debug, Args)]
pub struct NodeCmd {
    #[command(subcommand)]
    pub verb: NodeVerb,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum NodeVerb {
    /// Move every replica off a node and keep new ones away from it; waits
    /// until it holds none (then it can be stopped).
    Decommission {
        /// Node id.
        id: i32,
        /// Return once the decommission has started.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
        /// Call the decommission off: placement may pick the node again
        /// (moves already started run on).
        #[arg(long)]
        cancel: bool,
    },
    /// Remove a stopped node that holds no replicas from the cluster's metadata.
    Remove {
        /// Node id.
        id: i32,
    },
}

pub async fn run(cmd: NodeCmd) -> anyhow::Result<()> {
    let client = cmd.conn.connect().await?;
    let fmt = cmd.conn.format;
    match cmd.verb {
        NodeVerb::Decommission { id, cancel: true, .. } => {
            client.decommission_node(id, false).await?;
            match fmt {
                Format::Json => json(&json!({ "node": id, "decommissioning": false })),
                Format::Table => say!("node {id} is no longer being decommissioned"),
            }
        }
        NodeVerb::Decommission { id, no_wait, wait_secs, cancel: false } => {
            client.decommission_node(id, true).await?;
            if no_wait {
                let left = replicas_on(&client, id).await?;
                match fmt {
                    Format::Json => json(&json!({ "node": id, "decommissioning": true, "replicas": left })),
                    Format::Table => say!("decommissioning node {id}: {left} replicas to move"),
                }
                return Ok(());
            }
            let deadline = Instant::now() + Duration::from_secs(wait_secs);
            let mut shown = None;
            loop {
                let left = replicas_on(&client, id).await?;
                if left == 0 {
                    break;
                }
                if fmt == Format::Table && shown != Some(left) {
                    say!("node {id}: {left} replicas left to move");
                    shown = Some(left);
                }
                if Instant::now() >= deadline {
                    anyhow::bail!("node {id} still holds {left} replicas after {wait_secs} s (the move goes on)");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            match fmt {
                Format::Json => json(&json!({ "node": id, "decommissioning": true, "replicas": 0 })),
                Format::Table => {
                    say!("node {id} holds no replicas: it can be stopped, then removed with `ferry node remove {id}`");
                }
            }
        }
        NodeVerb::Remove { id } => {
            client.unregister_node(id).await?;
            match fmt {
                Format::Json => json(&json!({ "node": id, "removed": true })),
                Format::Table => say!("removed node {id}"),
            }
        }
    }
    Ok(())
}

/// Replicas on `node` over every partition, reassignments in progress
/// included (their replica lists hold both the old and new replicas).
async fn replicas_on(client: &Client, node: i32) -> anyhow::Result<usize> {
    let md = client.metadata(None).await?;
    Ok(md.topics.iter().flat_map(|t| &t.partitions).filter(|p| p.replicas.contains(&node)).count())
}
