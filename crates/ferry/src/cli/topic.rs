//! `ferry topic create|list|describe|delete|delete-records|alter-config|elect-leaders|reassign|reassignments`.

use clap::{Args, Subcommand};
use ferry_client::{EARLIEST, LATEST, describe_code};
use serde_json::json;

use super::output::{json, table};
use super::{ClientArgs, Format, key_values};

#[derive(Debug, Args)]
pub struct TopicCmd {
    #[command(subcommand)]
    pub verb: TopicVerb,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TopicVerb {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// Topic config KEY=VALUE (repeatable), e.g. retention.ms=86400000.
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Partitions with their leader, replicas, in-sync replicas, eligible
    /// leader replicas (KIP-966) and offsets, and the topic's config overrides.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Delete the records before an offset (Kafka's DeleteRecords): they
    /// can no longer be read, and their segments are freed.
    DeleteRecords {
        /// Topic name.
        name: String,
        /// Partition (repeatable; default: every partition).
        #[arg(long = "partition", short = 'p')]
        partitions: Vec<i32>,
        /// First offset to keep; -1: delete everything up to the end.
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
    /// Move leadership to each partition's preferred replica (the first),
    /// where it is in sync (Kafka's ElectLeaders). With --unclean, give
    /// leaderless partitions a leader; Ferry still elects only in-sync or
    /// eligible replicas, never one that may lack acknowledged records.
    ElectLeaders {
        /// Topic name (default: every topic).
        name: Option<String>,
        /// Partition (repeatable; default: every partition of the topic).
        #[arg(long = "partition", short = 'p', requires = "name")]
        partitions: Vec<i32>,
        /// Elect leaders for leaderless partitions instead of preferred ones.
        #[arg(long)]
        unclean: bool,
    },
    /// Set or remove topic config overrides.
    AlterConfig {
        /// Topic name.
        name: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "set", short = 's')]
        set: Vec<String>,
        /// KEY whose override to remove (repeatable).
        #[arg(long = "delete", short = 'd')]
        delete: Vec<String>,
    },
    /// Move a partition's replicas to other nodes (the new ones catch up
    /// first), or cancel a move in progress.
    Reassign {
        /// Topic name.
        name: String,
        /// Partition.
        #[arg(long, short = 'p')]
        partition: i32,
        /// The new replicas, comma-separated node ids, preferred leader first.
        #[arg(long, short = 'r')]
        replicas: Option<String>,
        /// Cancel the partition's reassignment in progress.
        #[arg(long)]
        cancel: bool,
    },
    /// Reassignments in progress.
    Reassignments,
}

pub async fn run(cmd: TopicCmd) -> anyhow::Result<()> {
    let client = cmd.conn.connect().await?;
    let fmt = cmd.conn.format;
    match cmd.verb {
        TopicVerb::Create { name, partitions, replication_factor, configs } => {
            let configs = key_values(&configs, "config")?;
            client.create_topic(&name, partitions.unwrap_or(-1), replication_factor.unwrap_or(-1), &configs).await?;
            match fmt {
                Format::Json => json(&json!({ "topic": name, "created": true })),
                Format::Table => say!("created topic {name}"),
            }
        }
        TopicVerb::List => {
            let md = client.metadata(None).await?;
            let mut topics = md.topics;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            match fmt {
                Format::Json => json(&json!({
                    "topics": topics.iter().map(|t| json!({"name": t.name, "id": t.id, "partitions": t.partitions.len()})).collect::<Vec<_>>()
                })),
                Format::Table => table(
                    &["NAME", "PARTITIONS", "ID"],
                    topics.iter().map(|t| vec![t.name.clone(), t.partitions.len().to_string(), t.id.clone()]).collect(),
                ),
            }
        }
        TopicVerb::Describe { name } => {
            let t = client.topic(&name).await?;
            let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
            let start = client.list_offsets(&name, &parts, EARLIEST).await?;
            let end = client.list_offsets(&name, &parts, LATEST).await?;
            let overrides: Vec<_> =
                client.describe_topic_configs(&name).await?.into_iter().filter(|c| c.source == "TOPIC").collect();
            // A broker without DescribeTopicPartitions shows no ELR.
            let elr = client.eligible_leader_replicas(&name).await.unwrap_or_default();
            let elr_of = |p: i32| elr.get(&p).cloned().unwrap_or_default();
            let offsets = |i: i32| (start.get(&i).copied().unwrap_or(-1), end.get(&i).copied().unwrap_or(-1));
            let ids = |nodes: &[i32]| nodes.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            match fmt {
                Format::Json => json(&json!({
                    "name": t.name,
                    "id": t.id,
                    "partitions": t.partitions.iter().map(|p| {
                        let (s, e) = offsets(p.partition);
                        json!({
                            "partition": p.partition,
                            "leader": p.leader,
                            "replicas": p.replicas,
                            "isr": p.isr,
                            "elr": elr_of(p.partition),
                            "log_start_offset": s,
                            "log_end_offset": e,
                            "records": e - s,
                        })
                    }).collect::<Vec<_>>(),
                    "configs": overrides.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
                })),
                Format::Table => {
                    say!("topic: {}  id: {}  partitions: {}", t.name, t.id, t.partitions.len());
                    say!();
                    table(
                        &["PARTITION", "LEADER", "REPLICAS", "ISR", "ELR", "START", "END", "RECORDS"],
                        t.partitions
                            .iter()
                            .map(|p| {
                                let (s, e) = offsets(p.partition);
                                vec![
                                    p.partition.to_string(),
                                    p.leader.to_string(),
                                    ids(&p.replicas),
                                    ids(&p.isr),
                                    ids(&elr_of(p.partition)),
                                    s.to_string(),
                                    e.to_string(),
                                    (e - s).to_string(),
                                ]
                            })
                            .collect(),
                    );
                    if !overrides.is_empty() {
                        say!();
                        table(
                            &["CONFIG", "VALUE"],
                            overrides
                                .iter()
                                .map(|c| vec![c.name.clone(), c.value.clone().unwrap_or_default()])
                                .collect(),
                        );
                    }
                }
            }
        }
        TopicVerb::Delete { name } => {
            client.delete_topic(&name).await?;
            match fmt {
                Format::Json => json(&json!({ "topic": name, "deleted": true })),
                Format::Table => say!("deleted topic {name}"),
            }
        }
        TopicVerb::DeleteRecords { name, partitions, before } => {
            if before < -1 {
                anyhow::bail!("--before must be an offset, or -1 for the end of each partition");
            }
            let t = client.topic(&name).await?;
            let all: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
            if let Some(p) = partitions.iter().find(|p| !all.contains(p)) {
                anyhow::bail!("topic {name} has no partition {p}");
            }
            let chosen = if partitions.is_empty() { all } else { partitions };
            let targets = chosen.iter().map(|&p| (p, before)).collect();
            let low = client.delete_records(&name, &targets).await?;
            match fmt {
                Format::Json => json(&json!({
                    "topic": name,
                    "partitions": low.iter().map(|(p, o)| json!({"partition": p, "log_start_offset": o})).collect::<Vec<_>>(),
                })),
                Format::Table => {
                    table(
                        &["PARTITION", "START"],
                        low.iter().map(|(p, o)| vec![p.to_string(), o.to_string()]).collect(),
                    );
                }
            }
        }
        TopicVerb::ElectLeaders { name, partitions, unclean } => {
            let wanted = match name {
                None => None,
                Some(name) => {
                    let t = client.topic(&name).await?;
                    let all: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
                    if let Some(p) = partitions.iter().find(|p| !all.contains(p)) {
                        anyhow::bail!("topic {name} has no partition {p}");
                    }
                    let chosen = if partitions.is_empty() { all } else { partitions };
                    Some(chosen.into_iter().map(|p| (name.clone(), p)).collect::<Vec<_>>())
                }
            };
            let mut results = client.elect_leaders(unclean, wanted.as_deref()).await?;
            results.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            let outcome = |code: i16| if code == 0 { "ELECTED".to_string() } else { describe_code(code) };
            match fmt {
                Format::Json => json(&json!({
                    "elections": results.iter().map(|r| json!({
                        "topic": r.topic, "partition": r.partition, "error_code": r.error, "result": outcome(r.error),
                    })).collect::<Vec<_>>(),
                })),
                Format::Table => {
                    if results.is_empty() {
                        say!(
                            "{}",
                            if unclean {
                                "no partition needed a leader"
                            } else {
                                "every partition is led by its preferred replica"
                            }
                        );
                    } else {
                        table(
                            &["TOPIC", "PARTITION", "RESULT"],
                            results
                                .iter()
                                .map(|r| vec![r.topic.clone(), r.partition.to_string(), outcome(r.error)])
                                .collect(),
                        );
                    }
                }
            }
        }
        TopicVerb::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                anyhow::bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
            }
            let set = key_values(&set, "--set")?;
            client.alter_topic_configs(&name, &set, &delete).await?;
            match fmt {
                Format::Json => json(&json!({ "topic": name, "set": set.len(), "deleted": delete.len() })),
                Format::Table => say!("altered configs of topic {name}"),
            }
        }
        TopicVerb::Reassign { name, partition, replicas, cancel } => {
            super::reassign::reassign(&client, fmt, &name, partition, replicas.as_deref(), cancel).await?;
        }
        TopicVerb::Reassignments => super::reassign::list(&client, fmt).await?,
    }
    Ok(())
}
