//! `ferry stomp connections|subscriptions`: the STOMP front-end's open
//! connections and subscriptions, read from the HTTP admin API
//! (`--http`, `GET /v1/stomp/connections|subscriptions`; STOMP has no
//! command to ask the broker about itself). The serving side's JSON is
//! made here too ([`connections_json`], [`subscriptions_json`]), so the
//! CLI and the endpoint agree on the fields.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_stomp::registry::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::output::{json, table};
use super::{ClientArgs, Format};

#[derive(Debug, Args)]
pub struct StompCmd {
    #[command(subcommand)]
    pub verb: StompVerb,
    /// The HTTP admin listener, HOST:PORT.
    #[arg(long, global = true, env = "FERRY_HTTP", default_value = "127.0.0.1:9644")]
    pub http: String,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum StompVerb {
    /// Open connections: peer, user, vhost, version, heart-beats, subscriptions.
    Connections,
    /// Open subscriptions: destination, queue, ack mode, prefetch, ready and unacknowledged messages.
    Subscriptions,
}

/// `GET /v1/stomp/connections`.
pub fn connections_json(r: &Registry) -> Value {
    let conns: Vec<Value> = r
        .connections()
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id, "peer": c.peer.to_string(), "user": c.user, "vhost": c.vhost,
                "version": c.version, "connected_at_ms": c.connected_at_ms,
                "heartbeat_ms": [c.heartbeat.0, c.heartbeat.1], "subscriptions": c.subscriptions,
            })
        })
        .collect();
    json!({ "connections": conns })
}

/// `GET /v1/stomp/subscriptions`.
pub fn subscriptions_json(r: &Registry) -> Value {
    let subs: Vec<Value> = r
        .subscriptions()
        .into_iter()
        .map(|s| {
            json!({
                "connection": s.connection, "id": s.id, "destination": s.destination, "queue": s.queue,
                "ack": s.ack, "prefetch": s.prefetch, "durable": s.durable, "ready": s.ready, "unacked": s.unacked,
            })
        })
        .collect();
    json!({ "subscriptions": subs })
}

/// One `GET` over HTTP/1.1 (`Connection: close`, read to the end); the body
/// as JSON if the status is 200.
async fn get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<Value> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("http listener {addr}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, exchange).await.context("timed out")??;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("not an HTTP response")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    let body: Vec<u8> = if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    let value: Value = serde_json::from_slice(&body).with_context(|| format!("GET {path}: {status}, not JSON"))?;
    if status != "200" {
        bail!("GET {path}: {}", value.get("error").and_then(Value::as_str).unwrap_or(status));
    }
    Ok(value)
}

/// A chunked body's content.
pub(super) fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).context("bad chunk size")?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(b.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub async fn run(cmd: StompCmd) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(cmd.conn.timeout_ms.max(1));
    let (path, key, columns): (&str, &str, &[(&str, &str)]) = match cmd.verb {
        StompVerb::Connections => (
            "/v1/stomp/connections",
            "connections",
            &[
                ("ID", "id"),
                ("PEER", "peer"),
                ("USER", "user"),
                ("VHOST", "vhost"),
                ("VERSION", "version"),
                ("HEARTBEAT-MS", "heartbeat_ms"),
                ("SUBSCRIPTIONS", "subscriptions"),
            ],
        ),
        StompVerb::Subscriptions => (
            "/v1/stomp/subscriptions",
            "subscriptions",
            &[
                ("CONNECTION", "connection"),
                ("ID", "id"),
                ("DESTINATION", "destination"),
                ("QUEUE", "queue"),
                ("ACK", "ack"),
                ("PREFETCH", "prefetch"),
                ("DURABLE", "durable"),
                ("READY", "ready"),
                ("UNACKED", "unacked"),
            ],
        ),
    };
    let v = get(&cmd.http, path, timeout).await?;
    match cmd.conn.format {
        Format::Json => json(&v),
        Format::Table => {
            let items = v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
            let rows = items
                .iter()
                .map(|item| {
                    columns
                        .iter()
                        .map(|(_, f)| match item.get(*f) {
                            Some(Value::Array(a)) => a.iter().map(text).collect::<Vec<_>>().join(","),
                            Some(v) => text(v),
                            None => String::new(),
                        })
                        .collect()
                })
                .collect();
            table(&columns.iter().map(|(h, _)| *h).collect::<Vec<_>>(), rows);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n").unwrap(), b"{\"a\":1}");
        assert!(dechunk(b"9\r\nshort\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
