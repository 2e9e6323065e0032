//! One MQTT connection: CONNECT, then a loop that reads packets, sends
//! what the session has for the client (within its in-flight window) and
//! watches keepalive, takeover and shutdown. Reading and writing share one
//! task, so a connection never blocks another: routing to other sessions
//! only pushes to their queues.
//!
//! One module per packet group, as the Kafka front-end has one per API
//! group: `connect` (CONNECT, authentication, session takeover),
//! `publish` (PUBLISH from the client and its QoS 1/2 acknowledgements),
//! `deliver` (PUBLISH to the client: in-flight window, receive maximum,
//! the client's acknowledgements; `out_aliases`, the topic aliases on
//! them), `subscribe` (SUBSCRIBE, UNSUBSCRIBE)
//! and `disconnect` (DISCONNECT, the end of a connection, wills). Here:
//! the loop, the dispatch, and `Conn::close`, the one place a reason to
//! stop becomes a reason code for the client.

mod connect;
mod deliver;
mod disconnect;
mod out_aliases;
mod publish;
mod subscribe;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::codec::{Frame, ReadSize, next_frame};
use crate::hub::{Hub, QueueReader, Staged};
use crate::packet::{self, Packet, Version, Will, reason};
use crate::session::{Delivery, Session};

use deliver::InFlight;
use out_aliases::OutAliases;
use publish::HeldAck;

/// The CONNECT packet type, for the request metrics.
const CONNECT: usize = 1;
/// A peer that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection failed before or outside the packet loop.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading from or writing to the peer failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol before a session was attached (or stopped
    /// reading); nothing was sent back beyond a refusing CONNACK.
    #[error("{0}")]
    Protocol(String),
}

/// How a connection ended.
enum End {
    /// DISCONNECT without will.
    Normal,
    /// Network error, keepalive, protocol violation, takeover, DISCONNECT
    /// 0x04: the will is published.
    Abnormal,
    /// The broker is stopping: no will.
    Shutdown,
}

/// A reason to stop: a protocol violation, the server ending the
/// connection, or the client's own DISCONNECT (code 0 or 0x04).
/// [`Conn::close`] turns it into what the client sees.
struct Violation {
    code: u8,
    why: String,
}

fn violation(code: u8, why: impl Into<String>) -> Violation {
    Violation { code, why: why.into() }
}

struct Conn {
    hub: Arc<Hub>,
    version: Version,
    session: Arc<Session>,
    generation: u64,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    /// The client's address (ACL host).
    peer: std::net::IpAddr,
    out: BytesMut,
    inflight: BTreeMap<u16, InFlight>,
    next_pid: u16,
    window: usize,
    client_max_packet: usize,
    aliases: HashMap<u16, Arc<str>>,
    /// Topic aliases on the PUBLISHes sent to the client.
    out_aliases: OutAliases,
    /// The session's durable queue: its cursor hands out the records to
    /// send and remembers which were acknowledged.
    queue: Option<QueueReader>,
    /// The queue failed to read: this connection leaves it alone.
    queue_unreadable: bool,
    /// Outbound QoS 2 ids released (PUBREL sent) by an earlier connection
    /// of the session (or before a restart), awaiting PUBCOMP, with the
    /// queue offset of their message.
    releasing: BTreeMap<u16, Option<u64>>,
    /// A queued delivery whose packet id (derived from its offset) is still
    /// in use: sent once that exchange completes.
    parked: Option<Delivery>,
    will: Option<Will>,
    /// A clean session's will recorded in the metadata: the connection's id
    /// there (cleared when the connection ends).
    clean_will: Option<u64>,
    expiry: u32,
    keep_alive_secs: u16,
    /// PUBACK/PUBRECs held back, in the order their PUBLISHes came.
    held: VecDeque<HeldAck>,
    /// Copies of this read's QoS 1 messages for node-local session queues,
    /// appended once the read is handled.
    staged: Staged,
    /// Session queue offsets the client acknowledged in this read, journaled
    /// together ([`Conn::commit_acks`]).
    acks: Vec<u64>,
}

/// Runs a connection until it closes. The caller runs it inside the
/// connection's `mqtt` span (fields `peer` and `client_id`, recorded here
/// once CONNECT names it); each packet gets a `packet` span.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    hub: Arc<Hub>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    run_as(stream, peer, None, hub, shutdown).await
}

/// [`run`] for a connection whose verified client certificate maps to
/// `principal`: a CONNECT without a username logs in as that name
/// (mosquitto's `use_identity_as_username`).
pub async fn run_as<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    principal: Option<Arc<str>>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let max = hub.config.max_packet_size;
    let mut buf = BytesMut::with_capacity(1024);
    let Some((connect, version)) = connect::read_connect(&mut rd, &mut wr, &mut buf, max, peer).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let session = connect::connect_session(&hub, *connect, principal, peer.ip(), version, &mut wr).await;
    hub.protocol.observe(CONNECT, started.elapsed());
    let Some((mut conn, mut kick)) = session? else {
        return Ok(());
    };
    // A client connection from here on (a port probe is not one).
    let _open = hub.protocol.connection();
    let keep_alive = conn.keep_alive_window();
    let mut deadline = keep_alive.map(|k| Instant::now() + k);
    let mut read_size = ReadSize::default();
    let end = loop {
        // Whole packets first, then what the session has for the client.
        let mut stop = None;
        loop {
            match next_frame(&mut buf, max) {
                Frame::Packet(f) => {
                    let (started, kind) = (Instant::now(), f.first().map_or(usize::MAX, |b| usize::from(b >> 4)));
                    let span = tracing::debug_span!("packet", kind = packet::type_name(kind));
                    let handled = conn.handle(f).instrument(span).await;
                    conn.hub.protocol.observe(kind, started.elapsed());
                    if let Err(v) = handled {
                        stop = Some(v);
                        break;
                    }
                    if conn.out.len() > 64 * 1024 {
                        flush(&mut wr, &mut conn.out).await?;
                    }
                }
                Frame::Incomplete => break,
                Frame::TooLarge(n) => {
                    stop = Some(violation(reason::PACKET_TOO_LARGE, format!("packet of {n} bytes")));
                    break;
                }
                Frame::Malformed => {
                    stop = Some(violation(reason::MALFORMED, "bad remaining length"));
                    break;
                }
            }
        }
        // One append per session queue for the whole read.
        conn.staged.commit();
        if let Some(v) = stop.or_else(|| conn.release_held().err()) {
            break conn.close(&mut wr, v).await;
        }
        conn.fill();
        conn.commit_acks();
        if !conn.out.is_empty()
            && let Err(e) = flush(&mut wr, &mut conn.out).await
        {
            tracing::debug!(error = %e, "write failed");
            break End::Abnormal;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // Room for whatever the client sent meanwhile: many packets per read.
        let offered = read_size.prepare(&mut buf);
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break End::Abnormal,
                Ok(n) => {
                    read_size.read(offered, n);
                    deadline = keep_alive.map(|k| Instant::now() + k);
                }
            },
            _ = conn.session.wake.notified() => {}
            // A held ack's message is stored: send it (and those after it).
            () = publish::oldest_stored(&mut conn.held) => {}
            // Held acks: look again at the congested queues shortly.
            _ = tokio::time::sleep(Duration::from_millis(1)), if publish::waits_on_subscribers(&conn.held) => {}
            _ = sleep => {
                break conn.close(&mut wr, violation(reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout")).await;
            }
            code = &mut kick => {
                let code = code.unwrap_or(reason::SESSION_TAKEN_OVER);
                break conn.close(&mut wr, violation(code, "session taken over")).await;
            }
            _ = shutdown.changed() => {
                conn.close(&mut wr, violation(reason::SERVER_SHUTTING_DOWN, "server shutting down")).await;
                break End::Shutdown;
            }
        }
    };
    let _ = wr.shutdown().await;
    tracing::debug!("connection ends");
    conn.finish(end);
    Ok(())
}

/// Reads until one whole frame is buffered; `None` on a clean EOF.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, ConnError> {
    loop {
        match next_frame(buf, max) {
            Frame::Packet(f) => return Ok(Some(f)),
            Frame::Incomplete => {}
            Frame::TooLarge(n) => return Err(ConnError::Protocol(format!("packet of {n} bytes"))),
            Frame::Malformed => return Err(ConnError::Protocol("bad remaining length".into())),
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, out: &mut BytesMut) -> Result<(), ConnError> {
    if out.is_empty() {
        return Ok(());
    }
    // flush: a WebSocket stream may still hold the last frame (a no-op on TCP).
    let write = async {
        wr.write_all(out).await?;
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r?,
        Err(_) => return Err(ConnError::Protocol("peer does not read".into())),
    }
    out.clear();
    Ok(())
}

impl Conn {
    fn send(&mut self, p: Packet) {
        if let Err(e) = packet::encode(&p, self.version, &mut self.out) {
            tracing::warn!(client = %self.client_id, error = %e, "could not encode a packet");
        }
    }

    /// 1.5 times the keepalive, or none for keepalive 0.
    fn keep_alive_window(&self) -> Option<Duration> {
        (self.keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(self.keep_alive_secs) * 1500))
    }

    /// Queues a server DISCONNECT (MQTT 5 only; 3.1.1 just closes).
    fn disconnect(&mut self, code: u8, why: &str) {
        if self.version == Version::V5 {
            let reason = (!why.is_empty()).then(|| Arc::from(why));
            self.send(Packet::Disconnect { code, session_expiry: None, reason });
        }
    }

    /// The one place a reason to stop becomes what the client sees: the
    /// client's own DISCONNECT (0, or 0x04 "with will") just ends; anything
    /// else is sent as a DISCONNECT reason code (MQTT 5; 3.1.1 just closes)
    /// and ends abnormally, so the will is published.
    async fn close<W: AsyncWrite + Unpin>(&mut self, wr: &mut W, v: Violation) -> End {
        match v.code {
            reason::SUCCESS => End::Normal,
            reason::DISCONNECT_WITH_WILL => End::Abnormal,
            code => {
                tracing::debug!(code, why = %v.why, "disconnecting the client");
                self.disconnect(code, &v.why);
                let _ = flush(wr, &mut self.out).await;
                End::Abnormal
            }
        }
    }

    /// Decodes one packet and hands it to its group's handler.
    async fn handle(&mut self, frame: Bytes) -> Result<(), Violation> {
        let p = packet::decode(&frame, self.version).map_err(|e| violation(e.code, e.detail))?;
        match p {
            Packet::Connect(_) => return Err(violation(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::Publish(p) => self.on_publish(*p).await?,
            Packet::Pubrel { pid, .. } => self.on_pubrel(pid).await,
            Packet::Puback { pid, .. } => self.on_puback(pid),
            Packet::Pubrec { pid, code } => self.on_pubrec(pid, code).await,
            Packet::Pubcomp { pid, .. } => self.on_pubcomp(pid).await,
            Packet::Subscribe { pid, subscription_id, filters } => {
                self.on_subscribe(pid, subscription_id, filters).await?;
            }
            Packet::Unsubscribe { pid, filters } => self.on_unsubscribe(pid, &filters).await,
            Packet::Pingreq => self.send(Packet::Pingresp),
            Packet::Disconnect { code, session_expiry, .. } => {
                return Err(self.on_disconnect(code, session_expiry).await);
            }
            Packet::Auth => return Err(violation(reason::PROTOCOL_ERROR, "AUTH without an authentication method")),
            Packet::Connack(_) | Packet::Suback { .. } | Packet::Unsuback { .. } | Packet::Pingresp => {
                return Err(violation(reason::PROTOCOL_ERROR, "a server packet from a client"));
            }
        }
        Ok(())
    }

    /// Records the session's subscriptions and expiry in the cluster
    /// metadata and waits for it (a failure is logged: the connection goes on).
    async fn persist(&self) {
        if let Err(e) = self.hub.persist(&self.session).await {
            tracing::warn!(client = %self.client_id, error = %e, "could not record session state");
        }
    }

    async fn wait_persisted(&self, d: Result<crate::hub::Wait, ferry_broker::BrokerError>) {
        match d {
            Ok(d) => {
                if let Err(e) = d.wait().await {
                    tracing::warn!(client = %self.client_id, error = %e, "session state not durable");
                }
            }
            Err(e) => tracing::warn!(client = %self.client_id, error = %e, "could not persist session state"),
        }
    }
}
