//! CONNECT: the first packet, protocol version negotiation, client id
//! assignment, authentication, attaching (or taking over) the session, and
//! the CONNACK with what the server allows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{Conn, ConnError, flush, read_frame};
use crate::auth;
use crate::hub::{self, Hub};
use crate::packet::{self, Connack, Connect, Packet, Version, reason};
use crate::topic_tree;

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the first packet, which must be a CONNECT of a version we speak.
/// `None` when the peer closed before sending one (a port probe).
pub(super) async fn read_connect<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut BytesMut,
    max: usize,
    peer: SocketAddr,
) -> Result<Option<(Box<Connect>, Version)>, ConnError> {
    let first = match tokio::time::timeout(CONNECT_TIMEOUT, read_frame(rd, buf, max)).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Ok(None),
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
    match packet::decode(&first, version) {
        Ok(Packet::Connect(c)) => Ok(Some((c, version))),
        Ok(_) => Err(ConnError::Protocol(format!("{peer}: first packet is not CONNECT"))),
        Err(e) => {
            if version == Version::V5 {
                let mut out = BytesMut::new();
                let ack = Connack { code: e.code, ..Default::default() };
                let _ = packet::encode(&Packet::Connack(ack), version, &mut out);
                let _ = wr.write_all(&out).await;
            }
            Err(ConnError::Protocol(format!("{peer}: bad CONNECT: {e}")))
        }
    }
}

/// Checks CONNECT, attaches the session and answers CONNACK. `None` when
/// the CONNECT was refused (the refusing CONNACK is sent).
pub(super) async fn connect_session<W: AsyncWrite + Unpin>(
    hub: &Arc<Hub>,
    mut c: Connect,
    principal: Option<Arc<str>>,
    peer: std::net::IpAddr,
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
    tracing::Span::current().record("client_id", &*client_id);
    if c.auth_method.is_some() {
        wr.write_all(&refuse(reason::BAD_AUTHENTICATION_METHOD)).await?;
        return Ok(None);
    }
    let by_certificate = c.username.is_none() && principal.is_some();
    if by_certificate {
        c.username = principal;
    } else if let Err(refused) = auth::authenticate(config, c.username.as_deref(), c.password.as_deref(), peer).await {
        // Slows password guessing from one address (LoginLimiter).
        tokio::time::sleep(refused.delay).await;
        wr.write_all(&refuse(reason::BAD_USER_OR_PASSWORD)).await?;
        return Ok(None);
    }
    let Some(keep_alive) = KeepAlive::grant(config.max_keep_alive, c.keep_alive, version) else {
        // A 3.1.1 client cannot be told a lower keepalive: return code 2
        // (identifier rejected), as mosquitto answers.
        wr.write_all(&refuse(reason::CLIENT_ID_NOT_VALID)).await?;
        return Ok(None);
    };
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
    // The will as recorded for the other nodes (published by one of them
    // if this node dies with the client connected): not one this client
    // may not publish.
    let will_def = c
        .will
        .as_ref()
        .filter(|w| auth::may_publish(config, c.username.as_deref(), &client_id, peer, &w.topic))
        .map(|w| hub::will_def(&client_id, w));
    let attached =
        hub.attach(&client_id, c.clean_start, expiry, version, will_def.clone().filter(|_| expiry > 0)).await;
    let (session, present, generation, kick) = match attached {
        Ok(attached) => attached,
        Err(e) => {
            // The cluster metadata cannot record the session now (no
            // controller quorum): the client may try again, here or elsewhere.
            tracing::warn!(client = %client_id, error = %e, "session not attached; CONNACK server unavailable");
            wr.write_all(&refuse(reason::SERVER_UNAVAILABLE)).await?;
            return Err(ConnError::Protocol(format!("attaching session {client_id}: {e}")));
        }
    };
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
    // What an earlier connection left unacknowledged goes out first, DUP.
    let queue = queue.map(|q| q.reader(&session));
    let clean_will = match will_def.filter(|_| !session.lock().recorded) {
        Some(w) => match hub.record_clean_will(&client_id, w).await {
            Ok(conn) => conn,
            Err(e) => {
                // Published by this node all the same; only a death of this node loses it.
                tracing::warn!(client = %client_id, error = %e, "could not record the will");
                None
            }
        },
        None => None,
    };
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
        peer,
        out: BytesMut::with_capacity(256),
        inflight: BTreeMap::new(),
        next_pid: 0,
        window,
        client_max_packet: c.max_packet_size.map_or(usize::MAX, |m| m as usize),
        aliases: HashMap::new(),
        out_aliases: super::out_aliases::OutAliases::new(if config.outbound_topic_aliases {
            c.topic_alias_max.unwrap_or(0)
        } else {
            0
        }),
        queue,
        queue_unreadable: false,
        releasing: BTreeMap::new(),
        parked: None,
        will: c.will.clone(),
        clean_will,
        expiry,
        keep_alive_secs: keep_alive.secs,
        held: VecDeque::new(),
        staged: crate::hub::Staged::default(),
        acks: Vec::new(),
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
        server_keep_alive: keep_alive.lowered.then_some(keep_alive.secs),
    };
    conn.send(Packet::Connack(ack));
    if present {
        // MQTT: a resumed session re-sends its unacknowledged PUBRELs first.
        let releasing = std::mem::take(&mut conn.session.lock().releasing);
        for (pid, offset) in releasing {
            conn.send(Packet::Pubrel { pid, code: 0 });
            conn.releasing.insert(pid, offset);
        }
    }
    flush(wr, &mut conn.out).await?;
    Ok(Some((conn, kick)))
}

/// The keepalive a connection runs with, after `max_keepalive`.
#[derive(Debug, PartialEq, Eq)]
struct KeepAlive {
    /// Seconds; 0: never timed out.
    secs: u16,
    /// The broker lowered what the client asked (MQTT 5: sent as Server
    /// Keep Alive, which the client must then use).
    lowered: bool,
}

impl KeepAlive {
    /// What a client asking `asked` gets under `max` (0: no limit), as
    /// mosquitto: MQTT 5 asking more than `max`, or 0 (= forever), gets
    /// `max`. MQTT 3.1.1 has no way to be told, so asking more is refused
    /// (`None`); asking 0 is let through unlimited, unlike mosquitto, so
    /// 3.1.1 clients that never ping keep connecting under the default.
    fn grant(max: u16, asked: u16, version: Version) -> Option<KeepAlive> {
        let over = max != 0 && (asked == 0 || asked > max);
        match version {
            _ if !over => Some(KeepAlive { secs: asked, lowered: false }),
            Version::V5 => Some(KeepAlive { secs: max, lowered: true }),
            Version::V3 if asked == 0 => Some(KeepAlive { secs: 0, lowered: false }),
            Version::V3 => None,
        }
    }
}

/// A random id for a client that sent none (not cryptographic: it only has
/// to differ from other clients').
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(max: u16, asked: u16, version: Version) -> Option<(u16, bool)> {
        KeepAlive::grant(max, asked, version).map(|k| (k.secs, k.lowered))
    }

    #[test]
    fn mqtt5_clients_asking_more_than_the_max_are_told_the_max() {
        assert_eq!(grant(60, 30, Version::V5), Some((30, false)));
        assert_eq!(grant(60, 60, Version::V5), Some((60, false)));
        assert_eq!(grant(60, 61, Version::V5), Some((60, true)));
        assert_eq!(grant(60, 0, Version::V5), Some((60, true)));
        // The default (65535) lowers only "forever".
        assert_eq!(grant(u16::MAX, u16::MAX, Version::V5), Some((u16::MAX, false)));
        assert_eq!(grant(u16::MAX, 0, Version::V5), Some((u16::MAX, true)));
        // 0: no limit.
        assert_eq!(grant(0, 0, Version::V5), Some((0, false)));
        assert_eq!(grant(0, 1000, Version::V5), Some((1000, false)));
    }

    #[test]
    fn mqtt311_clients_asking_more_than_the_max_are_refused() {
        assert_eq!(grant(60, 30, Version::V3), Some((30, false)));
        assert_eq!(grant(60, 60, Version::V3), Some((60, false)));
        assert_eq!(grant(60, 61, Version::V3), None);
        assert_eq!(grant(60, 0, Version::V3), Some((0, false)));
        assert_eq!(grant(0, 1000, Version::V3), Some((1000, false)));
    }
}
