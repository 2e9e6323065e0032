//! The connection class: the opening handshake (protocol header,
//! start/start-ok with PLAIN, AMQPLAIN or EXTERNAL (client certificate), tune/tune-ok, open), and the
//! connection methods after it (close, close-ok, blocked, update-secret),
//! including the close handshakes either side starts.

use std::net::SocketAddr;

use amq_protocol::protocol::{AMQPClass, connection, parse_class};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use tokio::io::AsyncRead;

use super::{CLOSE_TIMEOUT, ConnCtx, Connection, Next, method_frame, truncate};
use crate::auth;
use crate::error::*;
use crate::frame::{self, FrameError, FrameReader};
use crate::outbox::Outbox;
use crate::server::Server;

#[derive(Debug, thiserror::Error)]
pub(super) enum HandshakeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Refused(AmqpError),
}

async fn expect_method<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<AMQPClass, HandshakeError> {
    loop {
        let f = reader.next(frame::FRAME_MIN_SIZE).await?;
        match f.kind {
            frame::FRAME_HEARTBEAT => continue,
            frame::FRAME_METHOD if f.channel == 0 => {
                return parse_class(&f.payload[..])
                    .map(|(_, m)| m)
                    .map_err(|_| HandshakeError::Refused(AmqpError::new(SYNTAX_ERROR, "malformed method")));
            }
            _ => return Err(HandshakeError::Refused(AmqpError::new(UNEXPECTED_FRAME, "expected a connection method"))),
        }
    }
}

pub(super) async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    outbox: &Outbox,
    peer: SocketAddr,
    principal: Option<&str>,
    server: &Server,
    id: u64,
) -> Result<(ConnCtx, u16, u16, bool), HandshakeError> {
    if let Err(e) = reader.protocol_header().await {
        if matches!(e, FrameError::BadProtocolHeader) {
            // As RabbitMQ: answer with the protocol we speak, then close.
            outbox.send(bytes::Bytes::from_static(frame::PROTOCOL_HEADER));
        }
        return Err(e.into());
    }
    let cfg = &server.config;
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("Ferry".into()));
    props.insert("version".into(), AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()));
    props.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let start = connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        // EXTERNAL only where a verified client certificate named someone.
        mechanisms: LongString::from(if principal.is_some() { "PLAIN AMQPLAIN EXTERNAL" } else { "PLAIN AMQPLAIN" }),
        locales: LongString::from("en_US"),
    };
    outbox.send(method_frame(0, &AMQPClass::Connection(connection::AMQPMethod::Start(start))));

    let refuse = |e: AmqpError| {
        outbox.send(close_frame(&e));
        HandshakeError::Refused(e)
    };
    let AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)) = expect_method(reader).await? else {
        return Err(refuse(AmqpError::new(COMMAND_INVALID, "expected connection.start-ok")));
    };
    let blocked_capable = match ok.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => caps.inner().get("connection.blocked") == Some(&AMQPValue::Boolean(true)),
        _ => false,
    };
    let mechanism = ok.mechanism.as_str();
    let gate = &server.gate;
    let user = match (mechanism, principal) {
        ("EXTERNAL", Some(name)) => gate.external("amqp", name, peer.ip()),
        _ => match auth::credentials(mechanism, ok.response.as_bytes()) {
            Some((name, pass)) => {
                // PBKDF2 (milliseconds) off the async workers.
                let (g, ip) = (gate.clone(), peer.ip());
                tokio::task::spawn_blocking(move || g.login("amqp", &name, &pass, ip))
                    .await
                    .unwrap_or(Err(ferry_broker::messaging::access::Refused { delay: std::time::Duration::ZERO }))
            }
            None => Err(ferry_broker::messaging::access::Refused { delay: std::time::Duration::ZERO }),
        },
    };
    let user = match user {
        Ok(p) => Ok(p),
        Err(refused) => {
            // Slows password guessing from one address (LoginLimiter).
            tokio::time::sleep(refused.delay).await;
            Err(refused)
        }
    };
    let Ok(user) = user else {
        return Err(refuse(AmqpError::new(
            ACCESS_REFUSED,
            format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            ),
        )));
    };

    let tune = connection::Tune { channel_max: cfg.channel_max, frame_max: cfg.frame_max, heartbeat: cfg.heartbeat };
    outbox.send(method_frame(0, &AMQPClass::Connection(connection::AMQPMethod::Tune(tune))));
    let AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) = expect_method(reader).await? else {
        return Err(refuse(AmqpError::new(COMMAND_INVALID, "expected connection.tune-ok")));
    };
    // Zero means "no limit" on the client's side: ours applies.
    let frame_max = if t.frame_max == 0 { cfg.frame_max } else { t.frame_max.min(cfg.frame_max) };
    if frame_max < frame::FRAME_MIN_SIZE {
        return Err(refuse(AmqpError::new(NOT_ALLOWED, format!("frame_max {frame_max} is below the minimum 4096"))));
    }
    let channel_max = if t.channel_max == 0 { cfg.channel_max } else { t.channel_max.min(cfg.channel_max) };

    let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = expect_method(reader).await? else {
        return Err(refuse(AmqpError::new(COMMAND_INVALID, "expected connection.open")));
    };
    let vhost_name = open.virtual_host.as_str();
    let vhost = server.vhosts.get(vhost_name);
    let authorize = gate.vhost_authorizer(user.clone(), peer.ip(), vhost_name);
    let (Some(vhost), Some(authorize)) = (vhost, authorize) else {
        return Err(refuse(AmqpError::new(
            NOT_ALLOWED,
            format!("access to vhost '{vhost_name}' refused for user '{}'", user.name),
        )));
    };
    outbox.send(method_frame(0, &AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}))));
    tracing::debug!(%peer, user = %user, vhost = %vhost_name, frame_max, heartbeat = t.heartbeat, "amqp connection open");
    let cx = ConnCtx {
        id,
        user: user.name.clone(),
        vhost,
        authorize,
        outbox: outbox.clone(),
        frame_max,
        max_message: cfg.max_message_bytes,
        exclusive: Vec::new(),
        last_queue: None,
        metrics: server.metrics.clone(),
        stats: server.stats.clone(),
    };
    Ok((cx, t.heartbeat, channel_max, blocked_capable))
}

impl Connection {
    pub(super) fn close(&mut self, e: &AmqpError, closing: &mut Option<tokio::time::Instant>) {
        tracing::debug!(conn = self.cx.id, error = %e, "closing amqp connection");
        self.cx.outbox.send(close_frame(e));
        *closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
    }

    pub(super) fn send_close_ok(&self) {
        self.cx
            .outbox
            .send(method_frame(0, &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))));
    }

    pub(super) fn connection_method(&mut self, m: AMQPClass) -> Result<Next, AmqpError> {
        match m {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.send_close_ok();
                Ok(Next::Stop)
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(Next::Stop),
            AMQPClass::Connection(connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_)) => {
                Ok(Next::Continue)
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.cx.outbox.send(method_frame(
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {})),
                ));
                Ok(Next::Continue)
            }
            other => Err(AmqpError::new(COMMAND_INVALID, "unexpected method on channel 0")
                .on(other.get_amqp_class_id(), other.get_amqp_method_id())),
        }
    }
}

pub(super) fn close_frame(e: &AmqpError) -> bytes::Bytes {
    method_frame(
        0,
        &AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: truncate(&e.text).into(),
            class_id: e.class_id,
            method_id: e.method_id,
        })),
    )
}
