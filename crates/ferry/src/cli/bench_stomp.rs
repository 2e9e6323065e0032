//! `ferry bench stomp send|consume`: a pipelined STOMP 1.2 load client,
//! the same bytes for any broker (Ferry, ActiveMQ, RabbitMQ's plugin), so
//! scripts/bench-stomp.sh can compare them in one run.
//!
//! send: persistent SENDs with a `receipt` on every `--receipt-every`th
//! (and always on the last), at most `--window` messages not yet covered
//! by a RECEIPT. Receipts arrive in order on one connection, so the
//! highest receipt seen confirms every SEND up to it.
//! consume: one `ack:client-individual` subscription with a prefetch
//! (`prefetch-count` and ActiveMQ's `activemq.prefetchSize`, each broker
//! ignores the other's), an ACK per MESSAGE written after every read,
//! ended by a DISCONNECT whose RECEIPT says every ACK was processed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand};
use ferry_stomp::codec::{Decoder, Frame, Item, Limits, Version, encode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

/// Bytes gathered before one socket write.
const WRITE_CHUNK: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct StompBench {
    #[command(subcommand)]
    pub mode: StompMode,
}

#[derive(Debug, Subcommand)]
pub enum StompMode {
    /// Persistent SENDs with receipts; report msg/s and MiB/s.
    Send(StompSend),
    /// Read and ACK (client-individual) messages; report msg/s.
    Consume(StompConsume),
}

/// Where and as whom to connect.
#[derive(Clone, Debug, Args)]
pub struct StompConn {
    /// The broker's STOMP listener, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:61613")]
    pub addr: String,
    /// Destination, e.g. /queue/bench.
    #[arg(long, short = 'd', default_value = "/queue/bench")]
    pub destination: String,
    /// CONNECT's `host` header (virtual host).
    #[arg(long, default_value = "localhost")]
    pub vhost: String,
    #[arg(long)]
    pub login: Option<String>,
    #[arg(long)]
    pub passcode: Option<String>,
    /// Messages to send or read.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub messages: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct StompSend {
    #[command(flatten)]
    pub conn: StompConn,
    /// Body size in bytes.
    #[arg(long, short = 's', default_value_t = 1024)]
    pub size: usize,
    /// Ask for a RECEIPT on every Kth SEND (1 = every SEND).
    #[arg(long, default_value_t = 1)]
    pub receipt_every: u64,
    /// Most SENDs not yet covered by a RECEIPT.
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
}

#[derive(Clone, Debug, Args)]
pub struct StompConsume {
    #[command(flatten)]
    pub conn: StompConn,
    /// Unacknowledged messages the broker may send ahead.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,
}

pub async fn run(cmd: StompBench) -> anyhow::Result<()> {
    let cpu0 = own_cpu_seconds();
    let (mode, conn, started, bytes) = match cmd.mode {
        StompMode::Send(a) => {
            let started = send(&a).await?;
            let bytes = a.size as u64 * a.conn.messages;
            ("stomp-send", a.conn, started, bytes)
        }
        StompMode::Consume(a) => {
            let (started, bytes) = consume(&a).await?;
            ("stomp-consume", a.conn, started, bytes)
        }
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = own_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let (rate, mib) = (conn.messages as f64 / secs, bytes as f64 / secs / f64::from(1u32 << 20));
    if conn.json {
        say!(
            "{}",
            json!({ "mode": mode, "messages": conn.messages, "bytes": bytes, "seconds": secs,
                    "msgs_per_sec": rate, "mib_per_sec": mib, "client_cpu_s": cpu })
        );
    } else {
        let cpu = cpu.map_or("?".to_string(), |c| format!("{c:.2}"));
        say!("{mode}: {} messages in {secs:.2} s: {rate:.0} msg/s, {mib:.2} MiB/s, client CPU {cpu} s", conn.messages);
    }
    Ok(())
}

/// The reading side of a connection: socket half, buffer, decoder.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    dec: Decoder,
}

impl Reader {
    /// The next frame (heart-beats skipped); an ERROR frame is an error.
    async fn next(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(f);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                anyhow::bail!("broker closed the connection");
            }
        }
    }

    /// The next frame if one is already buffered, without reading.
    fn buffered(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            match self.dec.decode(&mut self.buf)? {
                Some(Item::Frame(f)) if f.command == "ERROR" => anyhow::bail!("broker error: {}", describe(&f)),
                Some(Item::Frame(f)) => return Ok(Some(f)),
                Some(Item::Heartbeat) => continue,
                None => return Ok(None),
            }
        }
    }
}

/// Connects and logs in with STOMP 1.2, heart-beats off.
async fn connect(c: &StompConn) -> anyhow::Result<(Reader, OwnedWriteHalf)> {
    let sock = TcpStream::connect(&c.addr).await.with_context(|| format!("connecting to {}", c.addr))?;
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    let mut r = Reader { rd, buf: BytesMut::with_capacity(256 * 1024), dec: Decoder::new(Version::V1_2, limits()) };
    let mut f = Frame::new("CONNECT").with("accept-version", "1.2").with("host", &c.vhost).with("heart-beat", "0,0");
    if let Some(l) = &c.login {
        f = f.with("login", l);
    }
    if let Some(p) = &c.passcode {
        f = f.with("passcode", p);
    }
    write_frame(&mut wr, &f).await?;
    let reply = r.next().await?;
    anyhow::ensure!(reply.command == "CONNECTED", "expected CONNECTED, got {}", describe(&reply));
    anyhow::ensure!(reply.header("version") == Some("1.2"), "broker did not accept STOMP 1.2: {reply:?}");
    Ok((r, wr))
}

async fn write_frame(wr: &mut OwnedWriteHalf, f: &Frame) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    encode(f, Version::V1_2, &mut out);
    wr.write_all(&out).await?;
    Ok(())
}

fn limits() -> Limits {
    Limits { max_body: 64 << 20, ..Limits::default() }
}

fn describe(f: &Frame) -> String {
    format!("{} {:?} {}", f.command, f.header("message"), String::from_utf8_lossy(&f.body))
}

/// Letters (not zeros, so nothing compresses it away).
fn body(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into()
}

/// Sends `messages` persistent SENDs; returns when the last RECEIPT came.
async fn send(a: &StompSend) -> anyhow::Result<Instant> {
    let (mut reader, mut wr) = connect(&a.conn).await?;
    let total = a.conn.messages;
    let every = a.receipt_every.max(1);
    let window = a.window.max(every);
    // Highest receipt seen = messages confirmed (receipt ids are 1-based sequence numbers).
    let confirmed = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());
    let started = Instant::now();
    let receipts = {
        let (confirmed, wake) = (confirmed.clone(), wake.clone());
        tokio::spawn(async move {
            let result = async {
                while confirmed.load(Ordering::Acquire) < total {
                    let f = reader.next().await?;
                    anyhow::ensure!(f.command == "RECEIPT", "unexpected frame {}", describe(&f));
                    let id: u64 = f
                        .header("receipt-id")
                        .and_then(|v| v.parse().ok())
                        .context("RECEIPT without a numeric receipt-id")?;
                    confirmed.fetch_max(id, Ordering::AcqRel);
                    wake.notify_one();
                }
                anyhow::Ok(())
            }
            .await;
            // The writer may be waiting for a receipt that will not come.
            wake.notify_one();
            result
        })
    };
    // Every SEND is these bytes with its own receipt header (when it has one).
    let mut head = BytesMut::new();
    head.extend_from_slice(b"SEND\ndestination:");
    head.extend_from_slice(a.conn.destination.as_bytes());
    head.extend_from_slice(
        format!("\npersistent:true\ncontent-type:application/octet-stream\ncontent-length:{}\n", a.size).as_bytes(),
    );
    let payload = body(a.size);
    let mut out = BytesMut::with_capacity(WRITE_CHUNK + a.size + 256);
    let mut sent = 0u64;
    while sent < total {
        loop {
            let waiting = wake.notified();
            if sent - confirmed.load(Ordering::Acquire) < window {
                break;
            }
            if receipts.is_finished() {
                break;
            }
            waiting.await;
        }
        if receipts.is_finished() {
            break;
        }
        let room = window - (sent - confirmed.load(Ordering::Acquire));
        let mut n = 0;
        while n < room && sent < total && out.len() < WRITE_CHUNK {
            sent += 1;
            n += 1;
            out.extend_from_slice(&head);
            if sent.is_multiple_of(every) || sent == total {
                out.extend_from_slice(format!("receipt:{sent}\n").as_bytes());
            }
            out.extend_from_slice(b"\n");
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\0");
        }
        wr.write_all(&out).await?;
        out.clear();
    }
    receipts.await.context("receipt reader")??;
    anyhow::ensure!(confirmed.load(Ordering::Acquire) >= total, "connection ended before every receipt came");
    let _ = wr.shutdown().await;
    Ok(started)
}

/// Reads and ACKs `messages` messages; returns the start time and the body bytes read.
async fn consume(a: &StompConsume) -> anyhow::Result<(Instant, u64)> {
    let (mut reader, mut wr) = connect(&a.conn).await?;
    let started = Instant::now();
    let prefetch = a.prefetch.to_string();
    let sub = Frame::new("SUBSCRIBE")
        .with("id", "0")
        .with("destination", &a.conn.destination)
        .with("ack", "client-individual")
        .with("prefetch-count", &prefetch)
        .with("activemq.prefetchSize", &prefetch);
    write_frame(&mut wr, &sub).await?;
    let (mut got, mut bytes) = (0u64, 0u64);
    let mut out = BytesMut::with_capacity(WRITE_CHUNK);
    while got < a.conn.messages {
        let mut f = Some(reader.next().await?);
        // Everything already buffered, then one write of the ACKs.
        while let Some(m) = f {
            anyhow::ensure!(m.command == "MESSAGE", "unexpected frame {}", describe(&m));
            let ack = m.header("ack").context("MESSAGE without an ack header")?;
            out.extend_from_slice(b"ACK\nid:");
            out.extend_from_slice(ack.as_bytes());
            out.extend_from_slice(b"\n\n\0");
            got += 1;
            bytes += m.body.len() as u64;
            f = if got < a.conn.messages { reader.buffered()? } else { None };
        }
        wr.write_all(&out).await?;
        out.clear();
    }
    // Processed in order: the DISCONNECT's RECEIPT comes after every ACK.
    write_frame(&mut wr, &Frame::new("DISCONNECT").with("receipt", "bye")).await?;
    loop {
        let f = reader.next().await?;
        if f.command == "RECEIPT" && f.header("receipt-id") == Some("bye") {
            break;
        }
        // Prefetched beyond N: left unacknowledged, they go back to the queue.
        anyhow::ensure!(f.command == "MESSAGE", "unexpected frame {}", describe(&f));
    }
    Ok((started, bytes))
}

/// This process's user + system CPU seconds (/proc/self/stat, USER_HZ = 100).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
