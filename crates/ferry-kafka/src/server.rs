//! Accepts Kafka connections and runs each one: length-prefixed frames in,
//! responses out in request order.
//!
//! Requests are handled in arrival order on the connection's reader task,
//! so two pipelined produces to one partition append in order; the slow
//! parts a handler hands back (waiting for fsync under acks=all, a fetch's
//! long poll) are worked out on the connection's writer task, side by side
//! ([`InOrder`]), so one slow request holds up neither the requests behind
//! it nor other connections, and the wake-up that finishes one sends its
//! response in the same turn. The writer sends the responses in request
//! order, gathering what is ready into one send;
//! record data goes by `sendfile` on plain TCP (small ranges are copied
//! into the send instead) and by read + write on TLS ([`ferry_tls::send_file`], [`ferry_tls::copy_file`]),
//! where the bytes must be encrypted in user space.
//!
//! On an SSL or SASL_SSL listener the TLS handshake runs first, in the
//! connection's own task under ferry-tls's timeout, so garbage or a stalled
//! handshake closes only that connection. An SSL client with a verified
//! certificate is the principal its subject maps to
//! (`--tls-principal-mapping`); a SASL_SSL client logs in with SASL as on
//! SASL_PLAINTEXT (its certificate, if any, only opens the door).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use ferry_broker::Broker;
use ferry_broker::metrics::ProtocolMetrics;
use ferry_broker::security::Principal;
use ferry_tls::{MaybeTls, TlsServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter, WriteHalf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::handlers;
use crate::in_order::{InOrder, Working};
use crate::listener::SecurityProtocol;
use crate::response::{Chunk, Reply, Response};
use crate::sasl::{self, KafkaSecurity, Session, Step};

/// API keys a SASL listener takes before the login.
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const API_VERSIONS: i16 = 18;

/// Settings of the Kafka listener.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Host clients are told to connect to (Metadata).
    pub advertised_host: String,
    /// Port clients are told to connect to (Metadata).
    pub advertised_port: i32,
    /// Largest request accepted (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Requests of one connection in progress at once; the reader stops
    /// reading beyond this (backpressure).
    pub max_in_flight: usize,
    /// The listener's security protocol: SASL_PLAINTEXT listeners take
    /// only ApiVersions and SASL requests before a login.
    pub protocol: SecurityProtocol,
    /// The key of this listener's advertised address in the node's
    /// registered listeners (`kafka`, or `kafka.SASL_PLAINTEXT` for a
    /// further listener), so Metadata answers each client with addresses
    /// of the listener it came in through.
    pub listener_key: String,
    /// Authorization and SASL; `None`: no authorizer (every request is
    /// allowed, as without any SASL listener).
    pub security: Option<Arc<KafkaSecurity>>,
    /// A SASL listener closes a connection that has not logged in by then
    /// (a client that opens connections and sends nothing, or half a frame,
    /// holds no resources for long).
    pub login_timeout: std::time::Duration,
    /// The certificate of an SSL or SASL_SSL listener (the node's one TLS
    /// server); `None` on PLAINTEXT and SASL_PLAINTEXT listeners.
    pub tls: Option<Arc<TlsServer>>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight: 64,
            protocol: SecurityProtocol::Plaintext,
            listener_key: ferry_broker::metadata::listener::KAFKA.to_string(),
            security: None,
            login_timeout: std::time::Duration::from_secs(30),
            tls: None,
        }
    }
}

/// What every handler gets.
pub struct Ctx {
    /// The broker every request is served from.
    pub broker: Arc<Broker>,
    /// The listener's settings.
    pub config: KafkaConfig,
}

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, mut shutdown: watch::Receiver<bool>) {
    let metrics = ctx.broker.metrics().register(ProtocolMetrics::new(
        "kafka",
        handlers::api_names(),
        Some(crate::errors::error_counts),
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    let shutdown = shutdown.clone();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _open = metrics.connection();
                        let _ = stream.set_nodelay(true);
                        let Some((stream, identity)) = secure(stream, ctx.config.tls.as_deref()).await else {
                            return;
                        };
                        if let Err(e) = connection(stream, identity, peer, ctx, shutdown, metrics.clone()).await {
                            tracing::debug!(error = %e, "kafka connection closed");
                        }
                    }.instrument(tracing::info_span!("kafka", %peer)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// What a client certificate says about a connection.
enum Identity {
    /// No TLS, or TLS without a client certificate.
    None,
    /// A verified client certificate and the principal name it maps to.
    Cert(String),
}

/// The stream to serve: the TLS handshake on a TLS listener (bounded by
/// ferry-tls's timeout). `None`: the handshake failed or the verified
/// certificate maps to no principal; the connection is dropped (only it).
async fn secure(tcp: TcpStream, tls: Option<&TlsServer>) -> Option<(MaybeTls, Identity)> {
    let Some(tls) = tls else { return Some((MaybeTls::Plain(tcp), Identity::None)) };
    let stream = match tls.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "kafka TLS handshake failed");
            return None;
        }
    };
    let has_cert = match &stream {
        MaybeTls::Tls(s) => s.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()),
        MaybeTls::Plain(_) => false,
    };
    if !has_cert {
        return Some((stream, Identity::None));
    }
    if let Some(name) = tls.peer_principal(&stream) {
        Some((stream, Identity::Cert(name)))
    } else {
        // Kafka fails such a login too: a certificate no rule maps
        // must not fall back to another identity.
        tracing::warn!("client certificate maps to no principal (--tls-principal-mapping); connection closed");
        None
    }
}

/// The reading side of a connection (plain or TLS).
type Reader = Box<dyn AsyncRead + Send + Unpin>;

async fn connection(
    stream: MaybeTls,
    identity: Identity,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<ProtocolMetrics>,
) -> std::io::Result<()> {
    let peer_host = format!("/{}", peer.ip());
    let (mut rd, wr): (Reader, Out) = match stream {
        MaybeTls::Plain(tcp) => {
            let (rd, wr) = tcp.into_split();
            (Box::new(rd), Out::Plain { wr, buf: BytesMut::with_capacity(PLAIN_BUFFER) })
        }
        tls => {
            let (rd, wr) = tokio::io::split(tls);
            // Responses are gathered into TLS records of up to 64 KiB
            // instead of one record (and one syscall) per piece.
            (Box::new(rd), Out::Tls(BufWriter::with_capacity(64 * 1024, wr)))
        }
    };
    // The in-flight bound is split between the channel and the writer's
    // queue of responses being worked out.
    let in_flight = ctx.config.max_in_flight.max(2);
    let (tx, rx) = mpsc::channel::<Pending>(in_flight / 2);
    let writer = tokio::spawn(write_responses(wr, rx, in_flight - in_flight / 2));
    // One read buffer per connection: frames are split off it without
    // zeroing or a fresh allocation per request (the bytes handed to a
    // handler stay valid while the buffer is refilled).
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut session = Session::new(peer.ip());
    let sasl_listener = ctx.config.protocol.sasl();
    if let (Identity::Cert(name), SecurityProtocol::Ssl) = (&identity, ctx.config.protocol) {
        // SSL: the certificate is the login (SASL_SSL logs in with SASL).
        session.principal = Arc::new(Principal::user(name));
        session.authenticated = true;
        tracing::debug!(principal = %session.principal, "authenticated by client certificate");
    }
    let login_deadline = tokio::time::Instant::now() + ctx.config.login_timeout;
    let result = async {
        loop {
            let deadline = (sasl_listener && !session.authenticated).then_some(login_deadline);
            if !before(deadline, fill(&mut rd, &mut buf, 4, &mut shutdown)).await? {
                return Ok(());
            }
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let raw = session.expects_raw_token();
            let max = if raw || (sasl_listener && !session.authenticated) {
                // Before the login a client may not make the broker buffer much.
                sasl::MAX_TOKEN.min(ctx.config.max_request_bytes)
            } else {
                ctx.config.max_request_bytes
            };
            if len < if raw { 0 } else { 8 } || len as usize > max {
                // The frame cannot be skipped safely: Kafka closes too.
                return Err(std::io::Error::other(format!("{peer}: bad request size {len}")));
            }
            let total = 4 + len as usize;
            if !before(deadline, fill(&mut rd, &mut buf, total, &mut shutdown)).await? {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated request"));
            }
            let frame = buf.split_to(total).split_off(4).freeze();
            let started = std::time::Instant::now();
            if raw {
                // After a v0 SaslHandshake: an unframed token.
                let Some(security) = ctx.config.security.as_deref() else {
                    return Err(std::io::Error::other("raw SASL token without security"));
                };
                match sasl::raw_token(&ctx.broker, security, &mut session, frame).await {
                    Step::Reply(r) => {
                        if tx.send(Pending::Ready(r)).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    Step::Fail(_) | Step::Close(_) => {
                        return Err(std::io::Error::other(format!("{peer}: SASL authentication failed")));
                    }
                }
            }
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let api = usize::try_from(key).unwrap_or(usize::MAX);
            if key == SASL_HANDSHAKE || key == SASL_AUTHENTICATE {
                let step = if key == SASL_HANDSHAKE {
                    sasl::handshake(ctx.config.security.as_deref(), sasl_listener, &mut session, frame)
                } else if let (Some(security), true) = (ctx.config.security.as_deref(), sasl_listener) {
                    sasl::authenticate(&ctx.broker, security, &mut session, frame).await
                } else {
                    sasl::not_here(frame)
                };
                metrics.observe(api, started.elapsed());
                match step {
                    Step::Reply(r) => {
                        if tx.send(Pending::Ready(r)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Step::Fail(r) => {
                        let _ = tx.send(Pending::Ready(r)).await;
                        return Err(std::io::Error::other(format!("{peer}: SASL exchange refused")));
                    }
                    Step::Close(why) => return Err(std::io::Error::other(format!("{peer}: {why}"))),
                }
                continue;
            }
            if sasl_listener && !session.authenticated && key != API_VERSIONS {
                // Kafka closes too: nothing but the login before the login.
                return Err(std::io::Error::other(format!("{peer}: API key {key} before SASL authentication")));
            }
            let pending = match handlers::handle(&ctx, frame, &peer_host, &session.principal).await {
                Reply::Ready(r) => {
                    metrics.observe(api, started.elapsed());
                    Pending::Ready(r)
                }
                Reply::None => {
                    metrics.observe(api, started.elapsed());
                    continue;
                }
                Reply::Later(fut) => {
                    let metrics = metrics.clone();
                    Pending::Working(Box::pin(async move {
                        let r = fut.await;
                        metrics.observe(api, started.elapsed());
                        r
                    }))
                }
                Reply::Inline(fut) => {
                    let r = fut.await;
                    metrics.observe(api, started.elapsed());
                    Pending::Ready(r)
                }
                Reply::Close(why) => return Err(std::io::Error::other(format!("{peer}: {why}"))),
            };
            if tx.send(pending).await.is_err() {
                return Ok(()); // the writer failed: the socket is gone
            }
        }
    }
    .await;
    drop(tx);
    let _ = writer.await;
    result
}

/// `read`, failing at `deadline` (if one) with a timeout.
async fn before(
    deadline: Option<tokio::time::Instant>,
    read: impl std::future::Future<Output = std::io::Result<bool>>,
) -> std::io::Result<bool> {
    match deadline {
        None => read.await,
        Some(d) => tokio::time::timeout_at(d, read)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no SASL login in time"))?,
    }
}

/// Reads until `buf` holds at least `want` bytes. `Ok(false)` on a clean
/// end of stream before any byte of a new frame, or on shutdown.
async fn fill(
    rd: &mut Reader,
    buf: &mut BytesMut,
    want: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<bool> {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        let n = tokio::select! {
            r = rd.read_buf(buf) => r?,
            _ = shutdown.changed() => return Ok(false),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(false);
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-frame"));
        }
    }
    Ok(true)
}

enum Pending {
    Ready(Response),
    Working(Working),
}

/// Plain TCP: responses (size prefix, encoded parts, and record ranges up
/// to [`SMALL_RANGE`]) are gathered here and leave in one `send`, so a
/// small response is one syscall and one segment, not four; the client
/// wakes once for it.
const PLAIN_BUFFER: usize = 64 * 1024;

/// Record ranges up to this size are copied into the send buffer (one
/// `pread` from the page cache) rather than sent by `sendfile` between two
/// more sends: at low rates a fetch carries a batch or two, and the extra
/// syscalls and segments cost more than the copy.
const SMALL_RANGE: u64 = 16 * 1024;

/// The writing side of a connection.
enum Out {
    /// Plain TCP: large record ranges go by `sendfile`, the rest through
    /// `buf` (see [`PLAIN_BUFFER`]).
    Plain { wr: OwnedWriteHalf, buf: BytesMut },
    /// TLS: record data is read and written through the encryption.
    Tls(BufWriter<WriteHalf<MaybeTls>>),
}

impl Out {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain { wr, buf } => {
                if buf.len() + b.len() > PLAIN_BUFFER {
                    send_buffered(wr, buf).await?;
                }
                if b.len() >= PLAIN_BUFFER {
                    return wr.write_all(b).await;
                }
                buf.extend_from_slice(b);
                Ok(())
            }
            Out::Tls(w) => w.write_all(b).await,
        }
    }

    async fn file(&mut self, slice: &ferry_broker::ReadSlice) -> std::io::Result<()> {
        match self {
            Out::Plain { wr, buf } => {
                let len = slice.len as usize;
                if slice.len <= SMALL_RANGE {
                    if buf.len() + len > PLAIN_BUFFER {
                        send_buffered(wr, buf).await?;
                    }
                    let at = buf.len();
                    buf.resize(at + len, 0);
                    // A short file fails here as `sendfile` would below.
                    if let Err(e) =
                        std::os::unix::fs::FileExt::read_exact_at(&*slice.file, &mut buf[at..], slice.position)
                    {
                        buf.truncate(at);
                        return Err(e);
                    }
                    return Ok(());
                }
                send_buffered(wr, buf).await?;
                ferry_tls::send_file(wr.as_ref(), &slice.file, slice.position, slice.len).await
            }
            Out::Tls(w) => ferry_tls::copy_file(w, &slice.file, slice.position, slice.len).await,
        }
    }

    /// Pushes what is buffered out (TLS records, or the plain send buffer).
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Plain { wr, buf } => send_buffered(wr, buf).await,
            Out::Tls(w) => w.flush().await,
        }
    }
}

/// Sends and empties a plain connection's send buffer.
async fn send_buffered(wr: &mut OwnedWriteHalf, buf: &mut BytesMut) -> std::io::Result<()> {
    if !buf.is_empty() {
        wr.write_all(buf).await?;
        buf.clear();
    }
    Ok(())
}

/// Sends the responses in request order, `queue` of them at most taken
/// from `rx` at once; what is ready goes out in one send, once nothing
/// more is ready.
async fn write_responses(mut wr: Out, mut rx: mpsc::Receiver<Pending>, queue: usize) -> std::io::Result<()> {
    let mut responses = InOrder::default();
    let mut open = true;
    loop {
        while open && responses.len() < queue {
            match rx.try_recv() {
                Ok(p) => take(&mut responses, p),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let response = match responses.ready_now().await {
            Some(r) => r,
            None if !open && responses.is_empty() => break,
            None => {
                // Nothing ready: what is buffered goes now, and must not
                // wait behind a long poll or an fsync wait.
                wr.flush().await?;
                tokio::select! {
                    r = responses.next(), if !responses.is_empty() => r,
                    p = rx.recv(), if open && responses.len() < queue => {
                        match p {
                            Some(p) => take(&mut responses, p),
                            None => open = false,
                        }
                        continue;
                    }
                }
            }
        };
        if response.chunks.is_empty() {
            // A response that could not be encoded: the client would wait
            // forever for it, so the connection closes instead.
            return Err(std::io::Error::other("response could not be encoded"));
        }
        let total: usize = response.chunks.iter().map(Chunk::len).sum();
        wr.write_all(&(total as i32).to_be_bytes()).await?;
        for chunk in &response.chunks {
            match chunk {
                Chunk::Bytes(b) => wr.write_all(b).await?,
                Chunk::File(slice) => wr.file(slice).await?,
            }
        }
    }
    wr.flush().await
}

fn take(responses: &mut InOrder, p: Pending) {
    match p {
        Pending::Ready(r) => responses.push_ready(r),
        Pending::Working(f) => responses.push_working(f),
    }
}
