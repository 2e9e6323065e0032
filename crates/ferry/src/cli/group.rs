//! `ferry group list|describe|reset-offsets|delete`.

use clap::{Args, Subcommand};
use ferry_client::{EARLIEST, LATEST};
use serde_json::json;

use super::output::{json, table};
use super::{ClientArgs, Format};

#[derive(Debug, Args)]
pub struct GroupCmd {
    #[command(subcommand)]
    pub verb: GroupVerb,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum GroupVerb {
    /// List consumer groups.
    List,
    /// State, members with their partitions, committed offsets and lag.
    Describe { group: String },
    /// Move a group's committed offsets (the group must have no members).
    ResetOffsets {
        group: String,
        #[arg(long, short = 't')]
        topic: String,
        /// Partitions to reset (repeatable; default: all).
        #[arg(long = "partition", short = 'p')]
        partitions: Vec<i32>,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// Milliseconds since the epoch: the first offset at or after it.
        #[arg(long, group = "target")]
        to_timestamp: Option<i64>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group and its committed offsets (the group must be empty).
    Delete { group: String },
}

pub async fn run(cmd: GroupCmd) -> anyhow::Result<()> {
    let client = cmd.conn.connect().await?;
    let fmt = cmd.conn.format;
    match cmd.verb {
        GroupVerb::List => {
            let groups = client.list_groups().await?;
            match fmt {
                Format::Json => json(&json!({
                    "groups": groups.iter().map(|g| json!({"group": g.group, "protocol_type": g.protocol_type, "state": g.state})).collect::<Vec<_>>()
                })),
                Format::Table => table(
                    &["GROUP", "STATE", "PROTOCOL"],
                    groups.into_iter().map(|g| vec![g.group, g.state, g.protocol_type]).collect(),
                ),
            }
        }
        GroupVerb::Describe { group } => {
            let d = client.describe_group(&group).await?;
            let offsets = client.group_lag(&group).await?;
            if d.state == "Dead" && offsets.is_empty() {
                anyhow::bail!("group {group} not found");
            }
            match fmt {
                Format::Json => json(&json!({
                    "group": d.group,
                    "state": d.state,
                    "protocol_type": d.protocol_type,
                    "protocol": d.protocol,
                    "members": d.members,
                    "offsets": offsets,
                    "lag": offsets.iter().map(|o| o.lag.max(0)).sum::<i64>(),
                })),
                Format::Table => {
                    say!(
                        "group: {}  state: {}  protocol: {}  members: {}",
                        d.group,
                        d.state,
                        if d.protocol.is_empty() { "-" } else { &d.protocol },
                        d.members.len()
                    );
                    if !d.members.is_empty() {
                        say!();
                        table(
                            &["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"],
                            d.members
                                .iter()
                                .map(|m| {
                                    let a = m
                                        .assignment
                                        .iter()
                                        .map(|(t, ps)| {
                                            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                                            format!("{t}:{}", ps.join(","))
                                        })
                                        .collect::<Vec<_>>()
                                        .join(" ");
                                    vec![m.member_id.clone(), m.client_id.clone(), m.client_host.clone(), a]
                                })
                                .collect(),
                        );
                    }
                    say!();
                    table(
                        &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"],
                        offsets
                            .iter()
                            .map(|o| {
                                vec![
                                    o.topic.clone(),
                                    o.partition.to_string(),
                                    o.committed.to_string(),
                                    o.log_end.to_string(),
                                    o.lag.to_string(),
                                ]
                            })
                            .collect(),
                    );
                }
            }
        }
        GroupVerb::ResetOffsets {
            group,
            topic,
            partitions,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            dry_run,
        } => {
            let t = client.topic(&topic).await?;
            let all: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
            let parts = if partitions.is_empty() { all.clone() } else { partitions };
            if let Some(p) = parts.iter().find(|p| !all.contains(p)) {
                anyhow::bail!("topic {topic} has no partition {p}");
            }
            let start = client.list_offsets(&topic, &parts, EARLIEST).await?;
            let end = client.list_offsets(&topic, &parts, LATEST).await?;
            let bounds = |p: &i32| (start.get(p).copied().unwrap_or(0), end.get(p).copied().unwrap_or(0));
            let targets: Vec<(i32, i64)> = if to_earliest {
                parts.iter().map(|p| (*p, bounds(p).0)).collect()
            } else if to_latest {
                parts.iter().map(|p| (*p, bounds(p).1)).collect()
            } else if let Some(o) = to_offset {
                parts.iter().map(|p| (*p, o.clamp(bounds(p).0, bounds(p).1))).collect()
            } else if let Some(ts) = to_timestamp {
                let found = client.list_offsets(&topic, &parts, ts).await?;
                parts.iter().map(|p| (*p, found.get(p).copied().filter(|o| *o >= 0).unwrap_or(bounds(p).1))).collect()
            } else {
                anyhow::bail!("give one of --to-earliest, --to-latest, --to-offset N, --to-timestamp MS");
            };
            if !dry_run {
                let d = client.describe_group(&group).await?;
                if !d.members.is_empty() {
                    anyhow::bail!("group {group} has {} active members; stop them first", d.members.len());
                }
                let commit: Vec<(String, i32, i64)> = targets.iter().map(|(p, o)| (topic.clone(), *p, *o)).collect();
                client.commit(&group, -1, "", &commit).await?;
            }
            match fmt {
                Format::Json => json(&json!({
                    "group": group,
                    "dry_run": dry_run,
                    "offsets": targets.iter().map(|(p, o)| json!({"topic": topic, "partition": p, "offset": o})).collect::<Vec<_>>(),
                })),
                Format::Table => table(
                    &["TOPIC", "PARTITION", "NEW-OFFSET"],
                    targets.iter().map(|(p, o)| vec![topic.clone(), p.to_string(), o.to_string()]).collect(),
                ),
            }
        }
        GroupVerb::Delete { group } => {
            client.delete_group(&group).await?;
            match fmt {
                Format::Json => json(&json!({ "group": group, "deleted": true })),
                Format::Table => say!("deleted group {group}"),
            }
        }
    }
    Ok(())
}
