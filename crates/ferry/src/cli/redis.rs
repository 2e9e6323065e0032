//! `ferry redis streams|groups`: Redis streams and their consumer groups,
//! read over the Redis protocol (XINFO) from `--redis`; the streams are
//! the topics `--brokers` lists (a stream is a topic).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand};
use ferry_redis::resp::{Limits, Reply, Value, encode, parse};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::output::{json, table};
use super::{ClientArgs, Format};

#[derive(Debug, Args)]
pub struct RedisCmd {
    #[command(subcommand)]
    pub verb: RedisVerb,
    /// The Redis listener, HOST:PORT.
    #[arg(long, global = true, env = "FERRY_REDIS", default_value = "127.0.0.1:6379")]
    pub redis: String,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum RedisVerb {
    /// Streams (every topic but internal ones): length, last id, number of consumer groups.
    Streams,
    /// A stream's consumer groups: consumers, deliveries pending, position, lag.
    Groups { stream: String },
}

/// One RESP2 connection, a command at a time.
struct Resp {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl Resp {
    async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Resp> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .context("timed out")?
            .with_context(|| format!("redis listener {addr}"))?;
        Ok(Resp { stream, buf: BytesMut::new(), timeout })
    }

    async fn call(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        let mut out = BytesMut::new();
        let command = Reply::Array(args.iter().map(|a| Reply::Bulk(Bytes::copy_from_slice(a.as_bytes()))).collect());
        encode(&command, false, &mut out);
        self.stream.write_all(&out).await?;
        let limits = Limits::default();
        loop {
            if let Some((value, used)) = parse(&self.buf, 0, &limits)? {
                let _ = self.buf.split_to(used);
                return match value {
                    Value::Error(e) => bail!("{}: {}", args.join(" "), String::from_utf8_lossy(&e)),
                    v => Ok(v),
                };
            }
            let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf))
                .await
                .context("timed out")??;
            if n == 0 {
                bail!("the redis listener closed the connection");
            }
        }
    }
}

/// A RESP2 map (a flat array of names and values) by name.
fn fields(v: Value) -> BTreeMap<String, Value> {
    let Value::Array(items) = v else { return BTreeMap::new() };
    let mut out = BTreeMap::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(text(&k), v);
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Simple(b) | Value::Bulk(b) | Value::Error(b) | Value::Number(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Array(_) | Value::Map(_) => "...".into(),
    }
}

fn int(f: &BTreeMap<String, Value>, name: &str) -> i64 {
    match f.get(name) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

fn field(f: &BTreeMap<String, Value>, name: &str) -> String {
    f.get(name).map(text).unwrap_or_default()
}

pub async fn run(cmd: RedisCmd) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(cmd.conn.timeout_ms.max(1));
    let mut r = Resp::connect(&cmd.redis, timeout).await?;
    match cmd.verb {
        RedisVerb::Streams => {
            let md = cmd.conn.connect().await?.metadata(None).await?;
            // Internal topics (`__consumer_offsets`, ...) are not streams.
            let mut names: Vec<String> =
                md.topics.into_iter().map(|t| t.name).filter(|n| !n.starts_with("__")).collect();
            names.sort();
            let mut rows = Vec::new();
            for name in names {
                let f = fields(r.call(&["XINFO", "STREAM", &name]).await?);
                rows.push((name, int(&f, "length"), field(&f, "last-generated-id"), int(&f, "groups")));
            }
            match cmd.conn.format {
                Format::Json => json(&json!({
                    "streams": rows.iter().map(|(n, len, last, groups)| json!({
                        "stream": n, "length": len, "last_id": last, "groups": groups
                    })).collect::<Vec<_>>()
                })),
                Format::Table => table(
                    &["STREAM", "LENGTH", "LAST-ID", "GROUPS"],
                    rows.into_iter().map(|(n, len, last, g)| vec![n, len.to_string(), last, g.to_string()]).collect(),
                ),
            }
        }
        RedisVerb::Groups { stream } => {
            let Value::Array(groups) = r.call(&["XINFO", "GROUPS", &stream]).await? else {
                bail!("XINFO GROUPS {stream}: not an array");
            };
            let mut rows = Vec::new();
            for g in groups {
                let g = fields(g);
                let name = field(&g, "name");
                let Value::Array(consumers) = r.call(&["XINFO", "CONSUMERS", &stream, &name]).await? else {
                    bail!("XINFO CONSUMERS {stream} {name}: not an array");
                };
                let consumers: Vec<(String, i64)> =
                    consumers.into_iter().map(fields).map(|c| (field(&c, "name"), int(&c, "pending"))).collect();
                rows.push((name, consumers, int(&g, "pending"), field(&g, "last-delivered-id"), int(&g, "lag")));
            }
            match cmd.conn.format {
                Format::Json => json(&json!({
                    "stream": stream,
                    "groups": rows.iter().map(|(n, cs, pending, last, lag)| json!({
                        "group": n,
                        "consumers": cs.iter().map(|(c, p)| json!({"consumer": c, "pending": p})).collect::<Vec<_>>(),
                        "pending": pending, "last_delivered_id": last, "lag": lag,
                    })).collect::<Vec<_>>()
                })),
                Format::Table => table(
                    &["GROUP", "CONSUMERS", "PENDING", "LAST-DELIVERED-ID", "LAG"],
                    rows.into_iter()
                        .map(|(n, cs, pending, last, lag)| {
                            let cs: Vec<String> = cs.into_iter().map(|(c, p)| format!("{c}({p})")).collect();
                            vec![n, cs.join(","), pending.to_string(), last, lag.to_string()]
                        })
                        .collect(),
                ),
            }
        }
    }
    Ok(())
}
