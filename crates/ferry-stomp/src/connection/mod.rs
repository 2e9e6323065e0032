//! One STOMP connection: CONNECT, then frames until DISCONNECT, an error
//! (answered with an ERROR frame, then the connection closes), a missed
//! heart-beat, the client going away or the server shutting down.
//!
//! The socket's write half belongs to a writer task fed by a bounded
//! channel (subscriptions wait when the client reads slowly); it also
//! sends the heart-beats the client asked for.

mod handshake;
mod send;
mod subs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferry_broker::messaging::{HandleConsumer, Queue, QueueHandle, Vhost};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::codec::{Decoder, Frame, Item, Version, encode};
use crate::error::StompError;
use crate::receipts::Receipts;
use crate::server::Server;
use crate::subscribe::Deliveries;
use crate::transactions::{Pending, Transactions};

/// Connection ids own exclusive queues. STOMP's start high so they never
/// meet the AMQP front-end's (which count up from 1).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1 << 62);

/// Frames queued for the writer before senders wait.
const OUTBOX_FRAMES: usize = 256;

/// How long the writer may take to flush the last frames at close.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

struct SubHandle {
    queue: QueueHandle,
    consumer: HandleConsumer,
    task: JoinHandle<()>,
    /// The subscription's own queue (deleted when it ends).
    private: bool,
    /// A durable subscription (`durable:true` on a topic or exchange).
    durable: bool,
}

/// A connected session's state.
pub(crate) struct Conn {
    server: Arc<Server>,
    vhost: Arc<Vhost>,
    user: String,
    authorize: crate::server::Authorizer,
    id: u64,
    version: Version,
    out: mpsc::Sender<Bytes>,
    deliveries: Arc<Deliveries>,
    receipts: Receipts,
    subs: HashMap<Arc<str>, SubHandle>,
    txns: Transactions,
    temp: HashMap<String, Arc<Queue>>,
    /// This connection in the front-end's listing, while it lives.
    listed: crate::registry::Entry,
}

/// What to do after a frame.
enum Flow {
    Continue,
    /// DISCONNECT handled: close quietly.
    Stop,
}

/// Why the frame loop ended.
enum End {
    /// Nothing more to say (DISCONNECT, the client closed, an ERROR already sent).
    Quiet,
    /// Answer with an ERROR frame (naming the receipt of the frame that failed).
    Error(StompError, Option<String>),
}

/// Serves one client, over TCP or WebSocket.
pub(crate) async fn run<S>(stream: S, peer: SocketAddr, server: Arc<Server>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8192);
    let mut decoder = Decoder::new(Version::V1_2, server.config.limits);
    let first = tokio::select! {
        r = tokio::time::timeout(server.config.connect_timeout, first_frame(&mut rd, &mut buf, &mut decoder)) => match r {
            Ok(r) => r,
            Err(_) => Err(StompError::protocol("no CONNECT frame in time")),
        },
        _ = shutdown.changed() => return,
    };
    let started = Instant::now();
    let session = match first {
        Ok(Some(f)) if f.command == "CONNECT" || f.command == "STOMP" => {
            server.metrics.observe(crate::metrics::command_index(&f.command), started.elapsed());
            handshake::connect(&server, &f, peer.ip())
                .await
                .map_err(|(v, e)| (v, e, f.header("receipt").map(str::to_string)))
        }
        Ok(Some(f)) => Err((Version::V1_0, StompError::protocol(format!("expected CONNECT, got {}", f.command)), None)),
        Ok(None) | Err(StompError::Io(_)) => return,
        Err(e) => Err((Version::V1_0, e, None)),
    };
    let session = match session {
        Ok(s) => s,
        Err((version, e, receipt)) => {
            tracing::debug!(error = %e, "stomp connect refused");
            server.stats.error();
            let mut out = BytesMut::new();
            encode(&error_frame(&e, receipt.as_deref()), version, &mut out);
            let _ = wr.write_all(&out).await;
            let _ = wr.shutdown().await;
            return;
        }
    };
    let mut out = BytesMut::new();
    encode(&session.connected, session.version, &mut out);
    if wr.write_all(&out).await.is_err() {
        return;
    }
    // Counted once the handshake succeeded, as AMQP and MQTT count theirs.
    let _open = server.metrics.connection();
    decoder.version = session.version;
    tracing::debug!(user = %session.user, vhost = %session.vhost.name, version = session.version.as_str(), "stomp connected");
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let listed = server.registry.add(crate::registry::ConnectionInfo {
        id,
        peer,
        user: session.user.clone(),
        vhost: session.vhost.name.clone(),
        version: session.version.as_str(),
        connected_at_ms: ferry_util::time::now_ms(),
        heartbeat: (session.send_every, session.expect_every),
        subscriptions: 0,
    });
    let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
    let writer = tokio::spawn(write_loop(wr, rx, session.send_every));
    let deliveries = Deliveries::new(tx.clone(), session.version, server.stats.clone());
    let mut conn = Conn {
        receipts: Receipts::new(tx.clone(), session.version, server.stats.clone()),
        txns: Transactions::new(server.config.max_transaction_bytes),
        server,
        vhost: session.vhost,
        user: session.user,
        authorize: session.authorize,
        id,
        version: session.version,
        out: tx,
        deliveries,
        subs: HashMap::new(),
        temp: HashMap::new(),
        listed,
    };
    let end = conn.serve(&mut rd, &mut buf, &mut decoder, session.expect_every, &mut shutdown).await;
    conn.close(end).await;
    let _ = tokio::time::timeout(CLOSE_FLUSH, writer).await;
}

/// Reads until the first frame; `None` if the client closed first.
async fn first_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Option<Frame>, StompError> {
    loop {
        while let Some(item) = decoder.decode(buf)? {
            if let Item::Frame(f) = item {
                return Ok(Some(f));
            }
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Writes queued frames; with `every` > 0 ms, an EOL whenever nothing
/// else was written for that long. Ends when every sender is gone.
async fn write_loop<S: AsyncWrite>(mut wr: WriteHalf<S>, mut rx: mpsc::Receiver<Bytes>, every: u32) {
    let every = Duration::from_millis(u64::from(every));
    loop {
        let next = if every.is_zero() {
            rx.recv().await
        } else {
            match tokio::time::timeout(every, rx.recv()).await {
                Ok(next) => next,
                Err(_) => Some(Bytes::from_static(b"\n")),
            }
        };
        let Some(bytes) = next else { break };
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn error_frame(e: &StompError, receipt: Option<&str>) -> Frame {
    let body = Bytes::from(format!("{e}\n"));
    let mut f = Frame::new("ERROR").with("message", e.message());
    if let Some(r) = receipt {
        f = f.with("receipt-id", r);
    }
    f.with("content-type", "text/plain").with("content-length", body.len().to_string()).with_body(body)
}

impl Conn {
    /// Refuses `access` to the `kind` (queue or exchange) `name` unless the
    /// user's permissions allow it.
    fn check(&self, access: crate::server::Access, kind: &str, name: &str) -> Result<(), StompError> {
        let name = if name.is_empty() && kind == "exchange" { "amq.default" } else { name };
        if (self.authorize)(access, kind, name) {
            return Ok(());
        }
        let what = match access {
            crate::server::Access::Configure => "configure",
            crate::server::Access::Delete => "configure (delete)",
            crate::server::Access::Write => "write",
            crate::server::Access::Read => "read",
        };
        Err(ferry_broker::messaging::MessagingError::AccessRefused(format!(
            "{what} access to {kind} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost.name, self.user
        ))
        .into())
    }

    async fn serve<S: AsyncRead>(
        &mut self,
        rd: &mut ReadHalf<S>,
        buf: &mut BytesMut,
        decoder: &mut Decoder,
        expect_every: u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        // Twice the agreed interval, for network delays (the spec leaves the
        // tolerance to the server).
        let grace = Duration::from_millis(2 * u64::from(expect_every));
        let failed = self.receipts.failed.clone();
        let mut deadline = tokio::time::Instant::now() + grace;
        // The vhost deleted (through any node): an ERROR frame, then closed.
        let mut vhost_gone = self.vhost.deleted();
        loop {
            if *vhost_gone.borrow_and_update() {
                let gone = ferry_broker::messaging::MessagingError::NotFound(format!(
                    "vhost '{}' is deleted",
                    self.vhost.name
                ));
                return End::Error(StompError::Messaging(gone), None);
            }
            let mut handled = false;
            loop {
                let item = match decoder.decode(buf) {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => return End::Error(e.into(), None),
                };
                let Item::Frame(f) = item else { continue };
                handled = true;
                let receipt = f.header("receipt").map(str::to_string);
                match self.handle(f).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stop) => return End::Quiet,
                    Err(e) => return End::Error(e, receipt),
                }
            }
            if handled {
                // Handling may have waited (a slow reader, the disk): that
                // time is ours, not the client's silence.
                deadline = tokio::time::Instant::now() + grace;
            }
            tokio::select! {
                r = rd.read_buf(buf) => match r {
                    Ok(0) | Err(_) => return End::Quiet,
                    Ok(_) => deadline = tokio::time::Instant::now() + grace,
                },
                _ = tokio::time::sleep_until(deadline), if expect_every > 0 => {
                    return End::Error(StompError::protocol("no heart-beat from the client in time"), None);
                }
                _ = failed.notified() => return End::Quiet,
                _ = shutdown.changed() => return End::Error(StompError::protocol("the server is shutting down"), None),
                _ = vhost_gone.changed() => {}
            }
        }
    }

    async fn handle(&mut self, f: Frame) -> Result<Flow, StompError> {
        let started = Instant::now();
        let api = crate::metrics::command_index(&f.command);
        let r = self.dispatch(f).await;
        self.server.metrics.observe(api, started.elapsed());
        r
    }

    async fn dispatch(&mut self, f: Frame) -> Result<Flow, StompError> {
        let receipt = f.header("receipt").map(str::to_string);
        match f.command.as_str() {
            "SEND" => {
                self.send(f).await?;
                return Ok(Flow::Continue);
            }
            "SUBSCRIBE" => self.subscribe(&f)?,
            "UNSUBSCRIBE" => self.unsubscribe(&f)?,
            "ACK" => self.settle(&f, false)?,
            "NACK" => self.settle(&f, true)?,
            "BEGIN" => self.txns.begin(txn_id(&f)?)?,
            "ABORT" => self.txns.abort(txn_id(&f)?)?,
            "COMMIT" => {
                let ops = self.txns.commit(txn_id(&f)?)?;
                let mut waits = Vec::new();
                for op in ops {
                    match op {
                        Pending::Send(send) => waits.extend(self.store(&send)?),
                        Pending::Settle(ack_id, how) => self.deliveries.settle(&ack_id, how)?,
                    }
                }
                self.receipts.after(waits, receipt).await;
                return Ok(Flow::Continue);
            }
            "DISCONNECT" => {
                // Every earlier SEND is stored before the receipt goes out.
                self.receipts.after(Vec::new(), receipt).await;
                self.receipts.drain().await;
                return Ok(Flow::Stop);
            }
            "CONNECT" | "STOMP" => return Err(StompError::protocol("already connected")),
            other => return Err(StompError::protocol(format!("unknown command {other:?}"))),
        }
        self.receipts.after(Vec::new(), receipt).await;
        Ok(Flow::Continue)
    }

    /// Ends the session: subscriptions stop, unacknowledged deliveries go
    /// back, private queues go, then the ERROR frame (if any) is the last
    /// thing written.
    async fn close(mut self, end: End) {
        for (id, h) in std::mem::take(&mut self.subs) {
            self.end_subscription(&id, h);
        }
        self.deliveries.close();
        for q in std::mem::take(&mut self.temp).into_values() {
            let _ = self.vhost.delete_if_present(&q);
        }
        if let End::Error(e, receipt) = end {
            tracing::debug!(error = %e, "stomp connection error");
            self.server.stats.error();
            let mut out = BytesMut::new();
            encode(&error_frame(&e, receipt.as_deref()), self.version, &mut out);
            let _ = self.out.send(out.freeze()).await;
        }
    }
}

fn txn_id(f: &Frame) -> Result<&str, StompError> {
    f.header("transaction").ok_or_else(|| StompError::protocol(format!("{} without a transaction header", f.command)))
}
