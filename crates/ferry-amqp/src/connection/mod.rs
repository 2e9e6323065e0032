//! One AMQP connection: the handshake (`handshake`: start, tune, open), then
//! frames routed to channels until a close handshake, an error or shutdown;
//! heartbeats, flow control under resource alarms, channel open and close.
//!
//! Tracing: the connection runs in an `amqp` span (peer, opened by the
//! listener), every method in a `method` span (class, method, channel id);
//! the content frames that complete a basic.publish are in one too.

mod handshake;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, channel, connection, parse_class};
use bytes::BytesMut;
use ferry_broker::messaging::{Queue, Vhost};
use ferry_broker::metrics::ProtocolMetrics;
use tokio::io::AsyncRead;
use tokio::sync::watch;
use tracing::Instrument;

use crate::channel::{Channel, Perm};
use crate::error::*;
use crate::frame::{self, Frame, FrameError, FrameReader};
use crate::metrics::AmqpStats;
use crate::outbox::Outbox;
use crate::server::Server;
use handshake::{close_frame, handshake};

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
/// How long a client gets to finish the handshake, and to answer a close.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a channel needs from its connection.
pub struct ConnCtx {
    pub id: u64,
    pub user: String,
    pub vhost: Arc<Vhost>,
    /// What the user may do on the vhost (ACLs, through the gatekeeper).
    pub authorize: ferry_broker::messaging::access::Authorizer,
    pub outbox: Outbox,
    pub frame_max: u32,
    pub max_message: usize,
    /// Exclusive queues declared here; deleted when the connection ends.
    pub exclusive: Vec<Arc<Queue>>,
    /// The queue an empty queue name refers to.
    pub last_queue: Option<String>,
    pub metrics: Arc<ProtocolMetrics>,
    pub stats: Arc<AmqpStats>,
}

impl ConnCtx {
    pub fn check(&self, perm: Perm, kind: &str, name: &str) -> Result<(), AmqpError> {
        use ferry_broker::messaging::access::Access;
        let access = match perm {
            Perm::Configure => Access::Configure,
            Perm::Delete => Access::Delete,
            Perm::Write => Access::Write,
            Perm::Read => Access::Read,
        };
        // RabbitMQ checks the default exchange as "amq.default".
        let name = if name.is_empty() && kind == "exchange" { "amq.default" } else { name };
        if (self.authorize)(access, kind, name) {
            Ok(())
        } else {
            let what = match perm {
                Perm::Configure => "configure",
                Perm::Delete => "configure (delete)",
                Perm::Write => "write",
                Perm::Read => "read",
            };
            Err(AmqpError::new(
                ACCESS_REFUSED,
                format!(
                    "{what} access to {kind} '{name}' in vhost '{}' refused for user '{}'",
                    self.vhost.name, self.user
                ),
            ))
        }
    }

    /// An empty queue name means the last queue declared on the connection.
    pub fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue.clone().ok_or_else(|| AmqpError::new(NOT_FOUND, "no previously declared queue"))
    }
}

fn method_frame(channel: u16, m: &AMQPClass) -> bytes::Bytes {
    let mut out = BytesMut::with_capacity(128);
    // Encoding our own well-formed methods cannot fail; an empty frame is
    // never sent if it somehow does.
    let _ = frame::put_method(&mut out, channel, m);
    out.freeze()
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Serves one client until it leaves. `principal`: the mapped name of a
/// verified client certificate (TLS listeners with `--tls-client-ca`),
/// which the EXTERNAL mechanism logs in as.
pub async fn run(
    stream: ferry_tls::MaybeTls,
    peer: SocketAddr,
    principal: Option<String>,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.tcp().set_nodelay(true);
    let (rd, wr) = tokio::io::split(stream);
    let (outbox, rx) = Outbox::new();
    let writer = tokio::spawn(outbox.clone().run_writer(rx, wr));
    let mut reader = FrameReader::new(rd);
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&mut reader, &outbox, peer, principal.as_deref(), &server, id),
    )
    .await;
    match handshake {
        Ok(Ok((cx, heartbeat, channel_max, blocked_capable))) => {
            // A client connection from here on (a port probe is not one).
            let _open = server.metrics.connection();
            let mut conn = Connection {
                cx,
                channels: HashMap::new(),
                channel_max,
                heartbeat,
                alarm: server.alarm.clone(),
                blocked_capable,
                published: false,
                blocked_sent: false,
            };
            conn.serve(&mut reader, &mut shutdown).await;
            conn.finish();
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "amqp handshake failed"),
        Err(_) => tracing::debug!(%peer, "amqp handshake timed out"),
    }
    drop(outbox);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
}

struct Connection {
    cx: ConnCtx,
    channels: HashMap<u16, Channel>,
    channel_max: u16,
    heartbeat: u16,
    alarm: watch::Receiver<Option<String>>,
    /// The client handles connection.blocked / unblocked.
    blocked_capable: bool,
    /// The connection has published: an alarm blocks it.
    published: bool,
    blocked_sent: bool,
}

enum Next {
    Continue,
    /// The close handshake is done (or the peer is gone).
    Stop,
}

impl Connection {
    async fn serve<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>, shutdown: &mut watch::Receiver<bool>) {
        let beats = (self.heartbeat > 0).then(|| {
            let outbox = self.cx.outbox.clone();
            let every = Duration::from_millis(u64::from(self.heartbeat) * 500);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let mut b = BytesMut::with_capacity(8);
                    frame::put_heartbeat(&mut b);
                    if !outbox.send(b.freeze()) {
                        return;
                    }
                }
            })
        });
        // A peer silent for two heartbeat intervals is gone.
        let idle = if self.heartbeat > 0 { Duration::from_secs(u64::from(self.heartbeat) * 2) } else { Duration::MAX };
        let mut closing: Option<tokio::time::Instant> = None;
        // The vhost deleted (through any node): closed as RabbitMQ closes
        // them, connection.close 320.
        let mut vhost_gone = self.cx.vhost.deleted();
        loop {
            if closing.is_none() && *vhost_gone.borrow_and_update() {
                let why = format!("vhost '{}' is deleted", self.cx.vhost.name);
                self.close(&AmqpError::new(CONNECTION_FORCED, why), &mut closing);
            }
            // A publishing connection under a resource alarm is not read
            // until the alarm clears (RabbitMQ's flow control).
            let alarm = self.alarm.borrow().clone();
            if closing.is_none()
                && self.published
                && let Some(reason) = alarm
            {
                if self.blocked_capable && !self.blocked_sent {
                    let blocked = connection::Blocked { reason: truncate(&reason).into() };
                    self.cx
                        .outbox
                        .send(method_frame(0, &AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked))));
                    self.blocked_sent = true;
                }
                tokio::select! {
                    r = self.alarm.changed() => if r.is_err() { break },
                    _ = shutdown.changed() => {
                        self.close(&AmqpError::new(CONNECTION_FORCED, "broker shutdown"), &mut closing);
                    }
                }
                continue;
            }
            if self.blocked_sent {
                self.blocked_sent = false;
                let unblocked = connection::Unblocked {};
                self.cx
                    .outbox
                    .send(method_frame(0, &AMQPClass::Connection(connection::AMQPMethod::Unblocked(unblocked))));
            }
            // A client that does not read what we send (confirms, replies)
            // is not read either, so its queue of frames stays bounded.
            if closing.is_none() && self.cx.outbox.is_overflowing() {
                tokio::select! {
                    _ = self.cx.outbox.wait_room() => {}
                    _ = shutdown.changed() => {
                        self.close(&AmqpError::new(CONNECTION_FORCED, "broker shutdown"), &mut closing);
                    }
                }
                continue;
            }
            let limit = match closing {
                Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()),
                None => idle,
            };
            let frame = tokio::select! {
                r = tokio::time::timeout(limit, reader.next(self.cx.frame_max)) => r,
                _ = shutdown.changed(), if closing.is_none() => {
                    self.close(&AmqpError::new(CONNECTION_FORCED, "broker shutdown"), &mut closing);
                    continue;
                }
                _ = vhost_gone.changed(), if closing.is_none() => continue,
            };
            let frame = match frame {
                Err(_) => {
                    if closing.is_none() {
                        tracing::debug!(conn = self.cx.id, "missed heartbeats from client");
                    }
                    break;
                }
                Ok(Err(FrameError::Eof | FrameError::Io(_))) => break,
                Ok(Err(e)) => {
                    // The stream cannot be resynchronised: close and go.
                    if closing.is_none() {
                        self.cx.outbox.send(close_frame(&AmqpError::new(FRAME_ERROR, e)));
                    }
                    break;
                }
                Ok(Ok(f)) => f,
            };
            if closing.is_some() {
                if let Some(AMQPClass::Connection(m)) = parse_method(&frame) {
                    match m {
                        connection::AMQPMethod::CloseOk(_) => break,
                        connection::AMQPMethod::Close(_) => {
                            self.send_close_ok();
                            break;
                        }
                        _ => {}
                    }
                }
                continue;
            }
            match self.frame(frame).await {
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => break,
                Err(e) => self.close(&e, &mut closing),
            }
        }
        if let Some(b) = beats {
            b.abort();
        }
    }

    /// Releases channels and deletes exclusive queues.
    fn finish(&mut self) {
        for (_, mut ch) in self.channels.drain() {
            ch.release(&self.cx);
        }
        for q in std::mem::take(&mut self.cx.exclusive) {
            if let Err(e) = self.cx.vhost.delete_if_present(&q) {
                tracing::warn!(queue = %q.name(), error = %e, "deleting an exclusive queue failed");
            }
        }
    }

    async fn frame(&mut self, f: Frame) -> Result<Next, AmqpError> {
        match f.kind {
            frame::FRAME_HEARTBEAT => {
                if f.channel != 0 {
                    return Err(AmqpError::new(FRAME_ERROR, "heartbeat on a channel other than 0"));
                }
                Ok(Next::Continue)
            }
            frame::FRAME_METHOD => {
                let started = std::time::Instant::now();
                let m = decode_method(&f)?;
                let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                let api = crate::metrics::method_index(class, method);
                let span = tracing::debug_span!("method", class, method, channel = f.channel);
                if let AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(_)) = m {
                    // Observed when its content is complete (Channel::content).
                    self.published = true;
                }
                let r = if f.channel == 0 {
                    span.in_scope(|| self.connection_method(m))
                } else if let AMQPClass::Connection(_) = m {
                    Err(AmqpError::new(COMMAND_INVALID, "connection method on a channel other than 0"))
                } else {
                    self.channel_method(f.channel, m).instrument(span).await.map(|()| Next::Continue)
                };
                if api != crate::metrics::BASIC_PUBLISH {
                    self.cx.metrics.observe(api, started.elapsed());
                }
                r
            }
            _ => {
                let Some(ch) = self.channels.get_mut(&f.channel) else {
                    return Err(AmqpError::new(CHANNEL_ERROR, format!("content on unopened channel {}", f.channel)));
                };
                if ch.closing {
                    return Ok(Next::Continue);
                }
                // Content frames only follow basic.publish. No await below,
                // so the span can simply be entered.
                let span = tracing::debug_span!("method", class = 60, method = 40, channel = f.channel);
                let _in_span = span.enter();
                if let Err(e) = ch.content(&self.cx, f.kind, f.payload) {
                    return self.channel_error(f.channel, e).map(|()| Next::Continue);
                }
                Ok(Next::Continue)
            }
        }
    }

    async fn channel_method(&mut self, id: u16, m: AMQPClass) -> Result<(), AmqpError> {
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        match &m {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                if self.channels.contains_key(&id) {
                    return Err(AmqpError::new(CHANNEL_ERROR, format!("second 'channel.open' seen on channel {id}"))
                        .on(class, method));
                }
                if id > self.channel_max {
                    return Err(AmqpError::new(
                        NOT_ALLOWED,
                        format!("channel {id} is above channel_max {}", self.channel_max),
                    )
                    .on(class, method));
                }
                self.channels.insert(id, Channel::new(id, &self.cx));
                self.cx
                    .outbox
                    .send(method_frame(id, &AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {}))));
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                if let Some(mut ch) = self.channels.remove(&id) {
                    ch.release(&self.cx);
                }
                self.cx
                    .outbox
                    .send(method_frame(id, &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))));
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                if self.channels.get(&id).is_some_and(|c| c.closing) {
                    self.channels.remove(&id);
                }
                return Ok(());
            }
            _ => {}
        }
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(
                AmqpError::new(CHANNEL_ERROR, format!("expected 'channel.open' on channel {id}")).on(class, method)
            );
        };
        if ch.closing {
            return Ok(());
        }
        match ch.method(&mut self.cx, m).await {
            Ok(()) => Ok(()),
            Err(e) => self.channel_error(id, e),
        }
    }

    /// Soft errors close the channel; hard ones go up to close the connection.
    fn channel_error(&mut self, id: u16, e: AmqpError) -> Result<(), AmqpError> {
        if e.is_hard() {
            return Err(e);
        }
        tracing::debug!(conn = self.cx.id, channel = id, error = %e, "closing amqp channel");
        if let Some(ch) = self.channels.get_mut(&id) {
            ch.release(&self.cx);
            ch.closing = true;
        }
        let close = channel::Close {
            reply_code: e.code,
            reply_text: truncate(&e.text).into(),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.cx.outbox.send(method_frame(id, &AMQPClass::Channel(channel::AMQPMethod::Close(close))));
        Ok(())
    }
}

fn parse_method(f: &Frame) -> Option<AMQPClass> {
    if f.kind != frame::FRAME_METHOD {
        return None;
    }
    parse_class(&f.payload[..]).ok().map(|(_, m)| m)
}

/// Known class/method pairs of AMQP 0-9-1 (with RabbitMQ's extensions).
fn known(class: u16, method: u16) -> bool {
    match class {
        10 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71),
        20 => matches!(method, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method, 10 | 11),
        40 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 50 | 60 | 70 | 71 | 72 | 80 | 90 | 100 | 110 | 111 | 120
        ),
        85 => matches!(method, 10 | 11),
        90 => matches!(method, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

fn decode_method(f: &Frame) -> Result<AMQPClass, AmqpError> {
    let p = &f.payload;
    if p.len() < 4 {
        return Err(AmqpError::new(FRAME_ERROR, "method frame too short"));
    }
    let class = u16::from_be_bytes([p[0], p[1]]);
    let method = u16::from_be_bytes([p[2], p[3]]);
    if !known(class, method) {
        return Err(AmqpError::new(NOT_IMPLEMENTED, format!("unknown method {class}.{method}")).on(class, method));
    }
    match parse_class(&p[..]) {
        Ok((_, m)) => Ok(m),
        Err(_) => Err(AmqpError::new(SYNTAX_ERROR, format!("malformed method {class}.{method}")).on(class, method)),
    }
}
