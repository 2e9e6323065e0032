//! `ferry consume TOPIC`: from earliest, latest, an offset or a timestamp,
//! or as a member of a consumer group (committing what it printed).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ferry_client::{Client, EARLIEST, FetchedRecord, GroupMembership, LATEST};
use serde_json::json;

use super::{ClientArgs, Format};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Where to start: earliest, latest, offset:N (or just N), timestamp:MS
    /// (first record at or after MS milliseconds since the epoch). With
    /// --group, used only for partitions without a committed offset.
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Partitions to read (repeatable; default: all). Not with --group.
    #[arg(long = "partition", short = 'p', conflicts_with = "group")]
    pub partitions: Vec<i32>,
    /// Consume as a member of this group: partitions come from the group,
    /// the start from its committed offsets, and progress is committed.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Stop once no record arrived for this long (default: keep following).
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Fields to print, comma-separated, tab-separated in the output:
    /// partition, offset, timestamp, key, value, headers. JSON prints all.
    #[arg(long, default_value = "value", value_delimiter = ',')]
    pub print: Vec<String>,
    #[command(flatten)]
    pub conn: ClientArgs,
}

/// Start position of a partition without (usable) committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

fn parse_start(s: &str) -> anyhow::Result<Start> {
    let bad = || anyhow::anyhow!("--from {s:?}: expected earliest, latest, offset:N or timestamp:MS");
    Ok(match s {
        "earliest" | "beginning" => Start::Earliest,
        "latest" | "end" => Start::Latest,
        _ => match s.split_once(':') {
            Some(("offset", n)) => Start::Offset(n.parse().map_err(|_| bad())?),
            Some(("timestamp", n)) => Start::Timestamp(n.parse().map_err(|_| bad())?),
            None => Start::Offset(s.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        },
    })
}

const FIELDS: &[&str] = &["partition", "offset", "timestamp", "key", "value", "headers"];

fn text(b: &Option<Vec<u8>>) -> String {
    b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

fn render(r: &FetchedRecord, topic: &str, fields: &[String], format: Format) -> String {
    match format {
        Format::Json => json!({
            "topic": topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            "value": r.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
            "headers": r.headers.iter().map(|(k, v)| (k.clone(), json!(text(v)))).collect::<serde_json::Map<_, _>>(),
        })
        .to_string(),
        Format::Table => fields
            .iter()
            .map(|f| match f.as_str() {
                "partition" => r.partition.to_string(),
                "offset" => r.offset.to_string(),
                "timestamp" => r.timestamp.to_string(),
                "key" => text(&r.key),
                "headers" => r.headers.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(","),
                _ => text(&r.value),
            })
            .collect::<Vec<_>>()
            .join("\t"),
    }
}

/// Offsets to start each partition at.
async fn resolve(client: &Client, topic: &str, partitions: &[i32], start: Start) -> anyhow::Result<BTreeMap<i32, i64>> {
    Ok(match start {
        Start::Earliest => client.list_offsets(topic, partitions, EARLIEST).await?,
        Start::Latest => client.list_offsets(topic, partitions, LATEST).await?,
        Start::Offset(o) => partitions.iter().map(|&p| (p, o)).collect(),
        Start::Timestamp(ts) => {
            let found = client.list_offsets(topic, partitions, ts).await?;
            let ends = client.list_offsets(topic, partitions, LATEST).await?;
            // No record at or after ts: start at the end.
            partitions
                .iter()
                .map(|p| (*p, found.get(p).copied().filter(|o| *o >= 0).or(ends.get(p).copied()).unwrap_or(0)))
                .collect()
        }
    })
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let start = parse_start(&args.from)?;
    if let Some(bad) = args.print.iter().find(|f| !FIELDS.contains(&f.as_str())) {
        anyhow::bail!("--print {bad:?}: fields are {}", FIELDS.join(", "));
    }
    let client = args.conn.connect().await?;
    let topic = client.topic(&args.topic).await?;
    let all: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    if let Some(p) = args.partitions.iter().find(|p| !all.contains(p)) {
        anyhow::bail!("topic {} has no partition {p}", args.topic);
    }
    let mut member: Option<GroupMembership> = None;
    let mut offsets = if let Some(group) = &args.group {
        let m = client.join_group(group, std::slice::from_ref(&args.topic)).await?;
        let offsets = group_offsets(&client, &m, &args.topic, start).await?;
        member = Some(m);
        offsets
    } else {
        let parts = if args.partitions.is_empty() { all } else { args.partitions.clone() };
        resolve(&client, &args.topic, &parts, start).await?
    };
    // Ctrl-C ends the loop like --count does, so a group member still
    // commits what it printed and leaves the group.
    let result = tokio::select! {
        r = consume_loop(&client, &args, &mut offsets, &mut member) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    if let Some(m) = &member {
        // Commit what was printed, then leave so others take over at once.
        let commit: Vec<(String, i32, i64)> = offsets.iter().map(|(p, o)| (args.topic.clone(), *p, *o)).collect();
        if !commit.is_empty() {
            client.commit(&m.group, m.generation, &m.member_id, &commit).await.context("committing offsets")?;
        }
        let _ = m.leave().await;
    }
    result
}

/// A member's partitions: committed offsets, else `start`.
async fn group_offsets(
    client: &Client,
    m: &GroupMembership,
    topic: &str,
    start: Start,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mine: Vec<i32> = m.assignment.get(topic).cloned().unwrap_or_default();
    let committed = client.committed(&m.group).await?.remove(topic).unwrap_or_default();
    let fresh: Vec<i32> = mine.iter().copied().filter(|p| !committed.contains_key(p)).collect();
    let mut offsets = resolve(client, topic, &fresh, start).await?;
    for p in mine {
        if let Some(o) = committed.get(&p) {
            offsets.insert(p, *o);
        }
    }
    Ok(offsets)
}

async fn consume_loop(
    client: &Client,
    args: &ConsumeArgs,
    offsets: &mut BTreeMap<i32, i64>,
    member: &mut Option<GroupMembership>,
) -> anyhow::Result<()> {
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut last_heartbeat = Instant::now();
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let mut out = std::io::stdout().lock();
    loop {
        if args.count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        if idle.is_some_and(|d| last_record.elapsed() >= d) {
            return Ok(());
        }
        if let Some(m) = member
            && last_heartbeat.elapsed() >= Duration::from_secs(3)
        {
            last_heartbeat = Instant::now();
            if !m.heartbeat().await? {
                // Rebalance: commit, then join again for the new assignment.
                let commit: Vec<_> = offsets.iter().map(|(p, o)| (args.topic.clone(), *p, *o)).collect();
                let _ = client.commit(&m.group, m.generation, &m.member_id, &commit).await;
                let again = client.join_group(&m.group, std::slice::from_ref(&args.topic)).await?;
                let start = parse_start(&args.from)?;
                *offsets = group_offsets(client, &again, &args.topic, start).await?;
                *member = Some(again);
                continue;
            }
        }
        if offsets.is_empty() {
            // A group member without partitions waits for a rebalance.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let wait = idle.map_or(500, |d| d.as_millis().clamp(1, 500) as i32);
        let fetched = client.fetch(&args.topic, offsets, wait, 1 << 20).await?;
        for (p, f) in fetched {
            for r in &f.records {
                if args.count.is_some_and(|c| printed >= c) {
                    break;
                }
                if let Err(e) = writeln!(out, "{}", render(r, &args.topic, &args.print, args.conn.format)) {
                    return reader_gone(e);
                }
                printed += 1;
                last_record = Instant::now();
                offsets.insert(p, r.offset + 1);
            }
            if args.count.is_none_or(|c| printed < c) {
                let next = offsets.get(&p).copied().unwrap_or(0).max(f.next_offset);
                offsets.insert(p, next);
            }
        }
        if let Err(e) = out.flush() {
            return reader_gone(e);
        }
    }
}

/// `ferry consume ... | head -3`: the reader went away, which ends the
/// consumer normally (what it printed before is committed); other write
/// errors are errors.
fn reader_gone(e: std::io::Error) -> anyhow::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("earliest").unwrap(), Start::Earliest);
        assert_eq!(parse_start("latest").unwrap(), Start::Latest);
        assert_eq!(parse_start("offset:7").unwrap(), Start::Offset(7));
        assert_eq!(parse_start("12").unwrap(), Start::Offset(12));
        assert_eq!(parse_start("timestamp:1700000000000").unwrap(), Start::Timestamp(1_700_000_000_000));
        assert!(parse_start("yesterday").is_err());
        assert!(parse_start("offset:x").is_err());
    }
}
