//! `ferry vhost add|delete|list`: the cluster's vhosts, through the HTTP
//! admin API's RabbitMQ-compatible `/api/vhosts` (`--http`; HTTP basic
//! authentication with `--user`/`--password` when the node's security is
//! on). A vhost created or deleted through one node is every node's
//! (docs/cluster.md, "Vhosts as records").

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::output::{json, table};
use super::{Format, stomp::dechunk};

#[derive(Debug, Args)]
pub struct VhostCmd {
    #[command(subcommand)]
    pub verb: VhostVerb,
    /// The HTTP admin listener, HOST:PORT.
    #[arg(long, global = true, env = "FERRY_HTTP", default_value = "127.0.0.1:9644")]
    pub http: String,
    /// A super user of the store (HTTP basic authentication).
    #[arg(long, global = true, env = "FERRY_HTTP_USER")]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long, global = true, env = "FERRY_HTTP_PASSWORD", requires = "user")]
    pub password: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Time limit for the request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum VhostVerb {
    /// Create a vhost (nothing changes if it exists).
    Add {
        /// Vhost name.
        name: String,
    },
    /// Delete a vhost with its exchanges, queues and bindings; its
    /// connections are closed.
    Delete {
        /// Vhost name.
        name: String,
    },
    /// List the vhosts.
    List,
}

/// Percent-encodes a path segment (RabbitMQ's API names `/` as `%2F`).
fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request over HTTP/1.1 (`Connection: close`, read to the end):
/// the status and the body.
async fn call(cmd: &VhostCmd, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let addr = &cmd.http;
    let auth = match (&cmd.user, &cmd.password) {
        (Some(u), p) => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.as_deref().unwrap_or("")));
            format!("Authorization: Basic {token}\r\n")
        }
        (None, _) => String::new(),
    };
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("http listener {addr}"))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let timeout = Duration::from_millis(cmd.timeout_ms.max(1));
    let response = tokio::time::timeout(timeout, exchange).await.context("timed out")??;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("not an HTTP response")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let body = &response[split + 4..];
    let body = if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    if !(200..300).contains(&status) {
        let why: Option<Value> = serde_json::from_slice(&body).ok();
        let why = why.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str).map(str::to_string);
        bail!("{method} {path}: {status} {}", why.unwrap_or_default());
    }
    Ok((status, body))
}

pub async fn run(cmd: VhostCmd) -> anyhow::Result<()> {
    match &cmd.verb {
        VhostVerb::Add { name } => {
            let (status, _) = call(&cmd, "PUT", &format!("/api/vhosts/{}", segment(name))).await?;
            say!("{}", if status == 201 { format!("created vhost {name}") } else { format!("vhost {name} exists") });
        }
        VhostVerb::Delete { name } => {
            call(&cmd, "DELETE", &format!("/api/vhosts/{}", segment(name))).await?;
            say!("deleted vhost {name}");
        }
        VhostVerb::List => {
            let (_, body) = call(&cmd, "GET", "/api/vhosts").await?;
            let v: Value = serde_json::from_slice(&body).context("GET /api/vhosts: not JSON")?;
            match cmd.format {
                Format::Json => json(&v),
                Format::Table => {
                    let rows = v
                        .as_array()
                        .map(|a| {
                            a.iter().filter_map(|x| x.get("name")?.as_str()).map(|n| vec![n.to_string()]).collect()
                        })
                        .unwrap_or_default();
                    table(&["NAME"], rows);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(super::segment("/"), "%2F");
        assert_eq!(super::segment("orders-1.x"), "orders-1.x");
        assert_eq!(super::segment("a b"), "a%20b");
    }
}
