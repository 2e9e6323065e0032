//! One MQTT connection: CONNECT, then a loop that reads packets, sends
//! what the session has for the client (within its in-flight window) and
//! watches keepalive, takeover and shutdown. Reading and writing share one
//! task, so a connection never blocks another: routing to other sessions
//! only pushes to their queues.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_broker::queue::RecordQueue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::auth;
use crate::codec::{Frame, next_frame};
use crate::hub::{Hub, delivery_from_record, split_shared};
use crate::message::{Message, now_ms};
use crate::packet::{self, Connack, Connect, Packet, Publish, Version, Will, reason};
use crate::session::{Delivery, Session, SubRecord};
use crate::topic_tree;

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The CONNECT packet type, for the request metrics.
const CONNECT: usize = 1;
/// A peer that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a publisher's PUBACK/PUBREC waits for congested subscribers'
/// queues to drain: bounds how much one stuck subscriber slows a publisher.
const MAX_ACK_HOLD: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
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

/// A protocol violation: disconnect with `code` (sent to MQTT 5 clients).
struct Violation {
    code: u8,
    why: String,
}

fn violation(code: u8, why: impl Into<String>) -> Violation {
    Violation { code, why: why.into() }
}

/// A publisher's acknowledgement held back while subscribers drain.
struct HeldAck {
    packet: Packet,
    until: Instant,
    waiting_on: Vec<Arc<Session>>,
}

struct InFlight {
    d: Delivery,
    /// PUBREC received (QoS 2): only PUBCOMP is awaited.
    released: bool,
}

struct Conn {
    hub: Arc<Hub>,
    version: Version,
    session: Arc<Session>,
    generation: u64,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    out: BytesMut,
    inflight: BTreeMap<u16, InFlight>,
    next_pid: u16,
    window: usize,
    client_max_packet: usize,
    aliases: HashMap<u16, Arc<str>>,
    /// The session's durable queue: its cursor hands out the records to
    /// send and remembers which were acknowledged.
    queue: Option<Arc<RecordQueue>>,
    /// The queue failed to read: this connection leaves it alone.
    queue_unreadable: bool,
    /// Outbound QoS 2 ids released (PUBREL sent) by an earlier connection
    /// of the session, awaiting PUBCOMP.
    releasing: BTreeSet<u16>,
    will: Option<Will>,
    expiry: u32,
    keep_alive_secs: u16,
    /// PUBACK/PUBRECs held back, in the order their PUBLISHes came.
    held: VecDeque<HeldAck>,
}

/// Runs a connection until it closes.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let max = hub.config.max_packet_size;
    let mut buf = BytesMut::with_capacity(1024);
    let first = match tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut rd, &mut buf, max)).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ConnError::Protocol(format!("{peer}: no CONNECT in time"))),
    };
    if first.first().map(|b| b >> 4) != Some(1) {
        return Err(ConnError::Protocol(format!("{peer}: first packet is not CONNECT")));
    }
    let version = match packet::connect_version(&first) {
        Some(3 | 4) => Version::V3,
        Some(5) => Version::V5,
        _ => {
            // 3.1.1's "unacceptable protocol version" (a 5.0 client reads it too).
            let _ = wr.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
            return Err(ConnError::Protocol(format!("{peer}: unsupported protocol level")));
        }
    };
    let connect = match packet::decode(&first, version) {
        Ok(Packet::Connect(c)) => c,
        Ok(_) => return Err(ConnError::Protocol(format!("{peer}: first packet is not CONNECT"))),
        Err(e) => {
            if version == Version::V5 {
                let mut out = BytesMut::new();
                let ack = Connack { code: e.code, ..Default::default() };
                let _ = packet::encode(&Packet::Connack(ack), version, &mut out);
                let _ = wr.write_all(&out).await;
            }
            return Err(ConnError::Protocol(format!("{peer}: bad CONNECT: {e}")));
        }
    };
    let started = Instant::now();
    let session = connect_session(&hub, *connect, version, &mut wr).await;
    hub.protocol.observe(CONNECT, started.elapsed());
    let Some((mut conn, mut kick)) = session? else {
        return Ok(());
    };
    // A client connection from here on (a port probe is not one).
    let _open = hub.protocol.connection();
    let keep_alive = conn.keep_alive_window();
    let mut deadline = keep_alive.map(|k| Instant::now() + k);
    let end = loop {
        // Whole packets first, then what the session has for the client.
        let mut stop = None;
        loop {
            match next_frame(&mut buf, max) {
                Frame::Packet(f) => {
                    let (started, kind) = (Instant::now(), f.first().map_or(usize::MAX, |b| usize::from(b >> 4)));
                    let handled = conn.handle(f).await;
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
        match stop {
            Some(Violation { code: 0, .. }) => break End::Normal,
            Some(Violation { code: reason::DISCONNECT_WITH_WILL, .. }) => break End::Abnormal,
            Some(v) => {
                tracing::debug!(%peer, client = %conn.client_id, code = v.code, why = %v.why, "protocol violation");
                conn.disconnect(v.code, &v.why);
                let _ = flush(&mut wr, &mut conn.out).await;
                break End::Abnormal;
            }
            None => {}
        }
        conn.release_held();
        conn.fill();
        if !conn.out.is_empty()
            && let Err(e) = flush(&mut wr, &mut conn.out).await
        {
            tracing::debug!(%peer, error = %e, "write failed");
            break End::Abnormal;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break End::Abnormal,
                Ok(_) => deadline = keep_alive.map(|k| Instant::now() + k),
            },
            _ = conn.session.wake.notified() => {}
            // Held acks: look again at the congested queues shortly.
            _ = tokio::time::sleep(Duration::from_millis(1)), if !conn.held.is_empty() => {}
            _ = sleep => {
                conn.disconnect(reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout");
                let _ = flush(&mut wr, &mut conn.out).await;
                break End::Abnormal;
            }
            code = &mut kick => {
                conn.disconnect(code.unwrap_or(reason::SESSION_TAKEN_OVER), "session taken over");
                let _ = flush(&mut wr, &mut conn.out).await;
                break End::Abnormal;
            }
            _ = shutdown.changed() => {
                conn.disconnect(reason::SERVER_SHUTTING_DOWN, "server shutting down");
                let _ = flush(&mut wr, &mut conn.out).await;
                break End::Shutdown;
            }
        }
    };
    let _ = wr.shutdown().await;
    tracing::debug!(%peer, client = %conn.client_id, "connection ends");
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

/// Checks CONNECT, attaches the session and answers CONNACK.
async fn connect_session<W: AsyncWrite + Unpin>(
    hub: &Arc<Hub>,
    c: Connect,
    version: Version,
    wr: &mut W,
) -> Result<Option<(Conn, oneshot::Receiver<u8>)>, ConnError> {
    let refuse = |code: u8| {
        let mut out = BytesMut::new();
        let _ = packet::encode(&Packet::Connack(Connack { code, ..Default::default() }), version, &mut out);
        out
    };
    let config = &hub.config;
    let mut assigned = None;
    let client_id: Arc<str> = if c.client_id.is_empty() {
        if version == Version::V3 && !c.clean_start {
            wr.write_all(&refuse(reason::CLIENT_ID_NOT_VALID)).await?;
            return Ok(None);
        }
        let id: Arc<str> = format!("ferry-{:016x}", rand_u64()).into();
        assigned = Some(id.clone());
        id
    } else {
        c.client_id.clone()
    };
    if c.auth_method.is_some() {
        wr.write_all(&refuse(0x8C)).await?;
        return Ok(None);
    }
    if !auth::authenticate(config, c.username.as_deref(), c.password.as_deref()) {
        wr.write_all(&refuse(reason::BAD_USER_OR_PASSWORD)).await?;
        return Ok(None);
    }
    if let Some(w) = &c.will
        && !topic_tree::valid_name(&w.topic)
    {
        wr.write_all(&refuse(reason::TOPIC_NAME_INVALID)).await?;
        return Ok(None);
    }
    let expiry = match version {
        Version::V3 if c.clean_start => 0,
        Version::V3 => config.max_session_expiry,
        Version::V5 => c.session_expiry.unwrap_or(0).min(config.max_session_expiry),
    };
    let (session, present, generation, kick) = hub
        .attach(&client_id, c.clean_start, expiry, version)
        .await
        .map_err(|e| ConnError::Protocol(format!("attaching session {client_id}: {e}")))?;
    // A persistent session's QoS 1/2 messages all pass through its queue;
    // a session resumed with expiry 0 still gets what is queued for it.
    let queue = if expiry > 0 || present {
        let mut st = session.lock();
        match hub.queue_of(&mut st) {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::warn!(client = %client_id, error = %e, "could not open the session queue");
                None
            }
        }
    } else {
        None
    };
    if let Some(q) = &queue {
        // What an earlier connection left unacknowledged goes out first, DUP.
        q.requeue_unacked();
    }
    let server_keep_alive = config.max_keep_alive.filter(|&m| c.keep_alive == 0 || c.keep_alive > m);
    let window = match version {
        Version::V5 => usize::from(c.receive_max.unwrap_or(u16::MAX)),
        Version::V3 => usize::from(config.max_inflight),
    }
    .max(1);
    let mut conn = Conn {
        hub: hub.clone(),
        version,
        session,
        generation,
        client_id,
        username: c.username.clone(),
        out: BytesMut::with_capacity(256),
        inflight: BTreeMap::new(),
        next_pid: 0,
        window,
        client_max_packet: c.max_packet_size.map_or(usize::MAX, |m| m as usize),
        aliases: HashMap::new(),
        queue,
        queue_unreadable: false,
        releasing: BTreeSet::new(),
        will: c.will.clone(),
        expiry,
        keep_alive_secs: server_keep_alive.unwrap_or(c.keep_alive),
        held: VecDeque::new(),
    };
    let ack = Connack {
        session_present: present,
        code: 0,
        session_expiry: (version == Version::V5 && c.session_expiry.is_some_and(|e| e != expiry)).then_some(expiry),
        receive_max: Some(config.receive_maximum),
        max_qos: None,
        max_packet_size: u32::try_from(config.max_packet_size).ok(),
        assigned_client_id: assigned,
        topic_alias_max: Some(config.topic_alias_maximum),
        reason_string: None,
        server_keep_alive,
    };
    conn.send(Packet::Connack(ack));
    if present {
        // MQTT: a resumed session re-sends its unacknowledged PUBRELs first.
        let releasing = std::mem::take(&mut conn.session.lock().releasing);
        for pid in releasing {
            conn.send(Packet::Pubrel { pid, code: 0 });
            conn.releasing.insert(pid);
        }
    }
    flush(wr, &mut conn.out).await?;
    Ok(Some((conn, kick)))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
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

    async fn handle(&mut self, frame: Bytes) -> Result<(), Violation> {
        let p = packet::decode(&frame, self.version).map_err(|e| violation(e.code, e.detail))?;
        match p {
            Packet::Connect(_) => return Err(violation(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::Publish(p) => self.on_publish(*p).await?,
            Packet::Puback { pid, .. } => {
                if self.inflight.get(&pid).is_some_and(|f| f.d.qos == 1)
                    && let Some(f) = self.inflight.remove(&pid)
                {
                    self.acked(f.d.queue_offset);
                }
            }
            Packet::Pubrec { pid, code } => match self.inflight.get_mut(&pid) {
                Some(f) if f.d.qos == 2 => {
                    let offset = f.d.queue_offset.take();
                    let refused = code >= 0x80;
                    if refused {
                        // The client refused it: the exchange ends here.
                        self.inflight.remove(&pid);
                    } else {
                        f.released = true;
                    }
                    self.acked(offset);
                    if !refused {
                        // Once PUBREL is out the PUBLISH must never be sent
                        // again: the acknowledgement is on disk first.
                        if offset.is_some() {
                            self.acks_durable().await;
                        }
                        self.send(Packet::Pubrel { pid, code: 0 });
                    }
                }
                _ => self.send(Packet::Pubrel { pid, code: reason::PACKET_ID_NOT_FOUND }),
            },
            Packet::Pubcomp { pid, .. } => {
                if self.inflight.get(&pid).is_some_and(|f| f.released) {
                    self.inflight.remove(&pid);
                } else {
                    self.releasing.remove(&pid);
                }
            }
            Packet::Pubrel { pid, .. } => {
                let known = self.session.lock().incoming_qos2.remove(&pid);
                if known {
                    // Durable before PUBCOMP: a restart must not take a new
                    // publish with this id for a resend.
                    self.wait_persisted(self.hub.persist_qos2(&self.session)).await;
                }
                let code = if known { 0 } else { reason::PACKET_ID_NOT_FOUND };
                self.send(Packet::Pubcomp { pid, code });
            }
            Packet::Subscribe { pid, subscription_id, filters } => {
                self.on_subscribe(pid, subscription_id, filters).await?
            }
            Packet::Unsubscribe { pid, filters } => {
                let codes: Vec<u8> = filters
                    .iter()
                    .map(|f| {
                        if self.hub.unsubscribe(&self.session, f) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                self.persist().await;
                self.send(Packet::Unsuback { pid, codes });
            }
            Packet::Pingreq => self.send(Packet::Pingresp),
            Packet::Disconnect { code, session_expiry, .. } => {
                if let Some(e) = session_expiry {
                    if self.expiry == 0 && e > 0 {
                        return Err(violation(reason::PROTOCOL_ERROR, "session expiry set after 0"));
                    }
                    self.expiry = e.min(self.hub.config.max_session_expiry);
                    self.session.lock().expiry = self.expiry;
                    self.persist().await;
                }
                if code != reason::DISCONNECT_WITH_WILL {
                    self.will = None;
                }
                return Err(violation(code.min(reason::DISCONNECT_WITH_WILL), ""));
            }
            Packet::Auth => return Err(violation(reason::PROTOCOL_ERROR, "AUTH without an authentication method")),
            Packet::Connack(_) | Packet::Suback { .. } | Packet::Unsuback { .. } | Packet::Pingresp => {
                return Err(violation(reason::PROTOCOL_ERROR, "a server packet from a client"));
            }
        }
        Ok(())
    }

    async fn acks_durable(&self) {
        if let Some(q) = &self.queue
            && let Err(e) = q.acks_durable().await
        {
            tracing::warn!(client = %self.client_id, error = %e, "session queue acknowledgements not durable");
        }
    }

    async fn persist(&self) {
        self.wait_persisted(self.hub.persist(&self.session)).await;
    }

    async fn wait_persisted(&self, d: Result<ferry_broker::stored::Durable, ferry_broker::BrokerError>) {
        match d {
            Ok(d) => {
                if let Err(e) = d.wait().await {
                    tracing::warn!(client = %self.client_id, error = %e, "session state not durable");
                }
            }
            Err(e) => tracing::warn!(client = %self.client_id, error = %e, "could not persist session state"),
        }
    }

    async fn on_publish(&mut self, mut p: Publish) -> Result<(), Violation> {
        if let Some(alias) = p.props.topic_alias.take() {
            if alias == 0 || alias > self.hub.config.topic_alias_maximum {
                return Err(violation(reason::TOPIC_ALIAS_INVALID, format!("topic alias {alias}")));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(violation(reason::PROTOCOL_ERROR, format!("unknown topic alias {alias}"))),
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        }
        if !topic_tree::valid_name(&p.topic) {
            return Err(violation(reason::TOPIC_NAME_INVALID, format!("topic name {:?}", p.topic)));
        }
        if p.props.subscription_id.is_some() {
            return Err(violation(reason::PROTOCOL_ERROR, "subscription identifier from a client"));
        }
        self.hub.stats.received(p.qos);
        let pid = p.pid.unwrap_or(0);
        if !auth::may_publish(&self.hub.config, self.username.as_deref(), &self.client_id, &p.topic) {
            // 3.1.1 has no way to say no: acknowledge and drop, as mosquitto does.
            let code = if self.version == Version::V5 { reason::NOT_AUTHORIZED } else { reason::SUCCESS };
            match p.qos {
                1 => self.send(Packet::Puback { pid, code }),
                2 => self.send(Packet::Pubrec { pid, code }),
                _ => {}
            }
            return Ok(());
        }
        if p.qos == 2 {
            let mut st = self.session.lock();
            if st.incoming_qos2.contains(&pid) {
                // A resend of one already routed: exactly once.
                drop(st);
                self.send(Packet::Pubrec { pid, code: 0 });
                return Ok(());
            }
            if st.incoming_qos2.len() >= usize::from(self.hub.config.receive_maximum) {
                return Err(violation(reason::RECEIVE_MAXIMUM_EXCEEDED, "too many unreleased QoS 2 publishes"));
            }
            st.incoming_qos2.insert(pid);
        }
        let qos2_state = (p.qos == 2).then(|| self.hub.persist_qos2(&self.session));
        let now = now_ms();
        let msg = Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            expires_at: p.props.message_expiry.map(|s| now + i64::from(s) * 1000),
            props: p.props,
            origin: Some(self.client_id.clone()),
            timestamp: now,
        });
        let mut congested = Vec::new();
        let code = match self.hub.publish(msg) {
            Ok(routed) => {
                congested = routed.congested;
                let mut code = reason::SUCCESS;
                for w in routed.waits {
                    if let Err(e) = w.wait().await {
                        tracing::warn!(client = %self.client_id, error = %e, "publish not stored");
                        code = reason::UNSPECIFIED;
                    }
                }
                code
            }
            Err(e) => {
                tracing::warn!(client = %self.client_id, error = %e, "publish failed");
                reason::UNSPECIFIED
            }
        };
        if let Some(d) = qos2_state {
            self.wait_persisted(d).await;
        }
        let ack = match p.qos {
            1 => Packet::Puback { pid, code },
            2 => Packet::Pubrec { pid, code },
            _ => return Ok(()),
        };
        if congested.is_empty() && self.held.is_empty() {
            self.send(ack);
        } else {
            // Backpressure: a publisher faster than a subscriber drains
            // gets its acknowledgements a little later (at most
            // MAX_ACK_HOLD), so its in-flight window, not the subscriber's
            // queue, absorbs the difference. Acks keep their order.
            self.held.push_back(HeldAck { packet: ack, until: Instant::now() + MAX_ACK_HOLD, waiting_on: congested });
        }
        Ok(())
    }

    /// Sends held acknowledgements whose subscribers drained or whose hold
    /// ran out, in order.
    fn release_held(&mut self) {
        let now = Instant::now();
        while let Some(h) = self.held.front_mut() {
            let hub = &self.hub;
            h.waiting_on.retain(|s| !hub.drained(s));
            if !h.waiting_on.is_empty() && now < h.until {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                self.send(h.packet);
            }
        }
    }

    async fn on_subscribe(
        &mut self,
        pid: u16,
        subscription_id: Option<u32>,
        filters: Vec<(Arc<str>, packet::SubOptions)>,
    ) -> Result<(), Violation> {
        if subscription_id == Some(0) {
            return Err(violation(reason::PROTOCOL_ERROR, "subscription identifier 0"));
        }
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for (filter, opts) in filters {
            let (shared, plain) = match split_shared(&filter) {
                Some((group, f)) => {
                    if group.is_empty() || group.contains(['+', '#']) {
                        codes.push(reason::TOPIC_FILTER_INVALID);
                        continue;
                    }
                    (true, f)
                }
                None if filter.starts_with("$share/") => {
                    codes.push(reason::TOPIC_FILTER_INVALID);
                    continue;
                }
                None => (false, &*filter),
            };
            if !topic_tree::valid_filter(plain) {
                codes.push(reason::TOPIC_FILTER_INVALID);
                continue;
            }
            if shared && opts.no_local {
                return Err(violation(reason::PROTOCOL_ERROR, "no local on a shared subscription"));
            }
            if !auth::may_subscribe(&self.hub.config, self.username.as_deref(), &self.client_id, plain) {
                codes.push(reason::NOT_AUTHORIZED);
                continue;
            }
            let qos = opts.qos.min(2);
            let existed = self.hub.subscribe(
                &self.session,
                SubRecord {
                    filter: filter.to_string(),
                    qos,
                    no_local: opts.no_local,
                    retain_as_published: opts.retain_as_published,
                    retain_handling: opts.retain_handling,
                    id: subscription_id,
                },
            );
            codes.push(qos);
            if !shared && (opts.retain_handling == 0 || (opts.retain_handling == 1 && !existed)) {
                for m in self.hub.retained_for(plain) {
                    retained.push(Delivery {
                        qos: m.qos.min(qos),
                        msg: m,
                        retain: true,
                        subscription_id,
                        queue_offset: None,
                        dup: false,
                    });
                }
            }
        }
        self.persist().await;
        self.send(Packet::Suback { pid, codes });
        for d in retained {
            if let Err(e) = self.hub.enqueue(&self.session, d) {
                tracing::warn!(client = %self.client_id, error = %e, "could not queue a retained message");
            }
        }
        Ok(())
    }

    /// Moves deliveries into the output while the in-flight window allows:
    /// the durable queue's first, then messages routed meanwhile.
    fn fill(&mut self) {
        let now = now_ms();
        while self.inflight.len() + self.releasing.len() < self.window {
            let Some(d) = self.next_delivery() else { break };
            if d.msg.expired(now) {
                self.acked(d.queue_offset);
                continue;
            }
            self.deliver(d, now);
        }
    }

    fn next_delivery(&mut self) -> Option<Delivery> {
        while let Some(q) = self.queue.as_ref().filter(|_| !self.queue_unreadable) {
            match q.take() {
                Ok(Some(t)) => match delivery_from_record(t.offset, t.record) {
                    Some(mut d) => {
                        d.dup |= t.redelivered;
                        return Some(d);
                    }
                    // Not a message: nothing to send, never again.
                    None => self.acked(Some(t.offset)),
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(client = %self.client_id, error = %e, "session queue unreadable; skipping it");
                    self.queue_unreadable = true;
                }
            }
        }
        let mut st = self.session.lock();
        let d = st.pending.pop_front();
        if d.is_some() {
            st.drained_at = Some(std::time::Instant::now());
        }
        d
    }

    fn deliver(&mut self, d: Delivery, now: i64) {
        let pid = (d.qos > 0).then(|| self.alloc_pid());
        let mut props = d.msg.props.clone();
        props.topic_alias = None;
        props.subscription_id = d.subscription_id;
        props.message_expiry = d.msg.remaining_expiry(now);
        let publish = Publish {
            dup: d.dup && d.qos > 0,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            pid,
            payload: d.msg.payload.clone(),
            props,
        };
        let start = self.out.len();
        self.send(Packet::Publish(Box::new(publish)));
        if self.out.len() - start > self.client_max_packet {
            // Larger than the client accepts: MQTT 5 says drop it.
            self.out.truncate(start);
            self.acked(d.queue_offset);
            return;
        }
        self.hub.stats.sent(d.qos);
        match pid {
            Some(pid) => {
                self.inflight.insert(pid, InFlight { d, released: false });
            }
            None => self.acked(d.queue_offset),
        }
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            if self.next_pid != 0
                && !self.inflight.contains_key(&self.next_pid)
                && !self.releasing.contains(&self.next_pid)
            {
                return self.next_pid;
            }
        }
    }

    /// A queued message was delivered (or is dropped): its queue cursor
    /// remembers it, whatever the order.
    fn acked(&mut self, offset: Option<u64>) {
        let (Some(o), Some(q)) = (offset, &self.queue) else { return };
        if let Err(e) = q.ack(o) {
            tracing::warn!(client = %self.client_id, error = %e, "could not acknowledge in the session queue");
        }
    }

    /// The connection is gone: hand unacknowledged messages back to the
    /// session and publish the will if the end was abnormal.
    fn finish(mut self, end: End) {
        // PUBRELs still awaiting PUBCOMP are sent again on reconnect.
        let releasing: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.released)
            .map(|(pid, _)| *pid)
            .chain(self.releasing.iter().copied())
            .collect();
        self.session.lock().releasing = releasing;
        let unacked: Vec<Delivery> = std::mem::take(&mut self.inflight)
            .into_values()
            .filter(|f| !f.released)
            .map(|f| Delivery { dup: true, ..f.d })
            .collect();
        self.hub.detach(&self.session, self.generation, unacked);
        let will = match end {
            End::Abnormal => self.will.take(),
            End::Normal | End::Shutdown => None,
        };
        if let Some(w) = will {
            publish_will(self.hub.clone(), self.session.clone(), self.generation, w, self.expiry, self.username);
        }
    }
}

/// Publishes a will now, or after its delay (capped by the session expiry)
/// unless the client reconnected meanwhile.
fn publish_will(hub: Arc<Hub>, session: Arc<Session>, generation: u64, w: Will, expiry: u32, user: Option<Arc<str>>) {
    let client_id = session.client_id.clone();
    let go = move || {
        if !auth::may_publish(&hub.config, user.as_deref(), &client_id, &w.topic) {
            return;
        }
        let now = now_ms();
        let msg = Message {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            expires_at: w.props.message_expiry.map(|s| now + i64::from(s) * 1000),
            props: w.props,
            origin: Some(client_id.clone()),
            timestamp: now,
        };
        if let Err(e) = hub.publish(Arc::new(msg)) {
            tracing::warn!(client = %client_id, error = %e, "will not published");
        }
    };
    let delay = w.delay.min(expiry);
    if delay == 0 {
        go();
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(delay.into())).await;
            if session.lock().generation == generation {
                go();
            }
        });
    }
}
