//! SASL on a Kafka connection: SaslHandshake (v0-1) picks the mechanism,
//! then SaslAuthenticate (v0-2) carries the tokens; after a v0 handshake
//! the tokens come raw (a size and the bytes, no Kafka header), as old
//! clients send them. Mechanisms: PLAIN and SCRAM-SHA-256/512, both
//! checked against the users in the metadata image, and OAUTHBEARER, a JWT
//! checked against the configured JWKS (its `sub` is the principal). A failed login is
//! answered late (per source address, see `LoginLimiter`), with
//! SASL_AUTHENTICATION_FAILED, and the connection is closed; the log names
//! the user and address, never a password or proof.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_broker::security::scram::ScramServer;
use ferry_broker::security::{
    Authorizer, JwksFile, LoginLimiter, Principal, ScramCredential, ScramMechanism, oauthbearer, parse_plain,
};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::errors::counted_code;
use crate::response::{Chunk, Response, encode};

/// Largest SASL token accepted (Kafka's `sasl.server.max.receive.size`
/// is 512 KiB; PLAIN and SCRAM tokens are a few hundred bytes).
pub const MAX_TOKEN: usize = 64 * 1024;

/// A SASL mechanism a listener offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(ScramMechanism),
    /// OAUTHBEARER (RFC 7628, KIP-255): a signed JWT.
    OAuthBearer,
}

impl SaslMechanism {
    /// The default set, strongest first (`--sasl-mechanisms`).
    pub const DEFAULT: [SaslMechanism; 3] = [
        SaslMechanism::Scram(ScramMechanism::Sha512),
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Plain,
    ];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism of a SASL name (case-insensitive).
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        if name.eq_ignore_ascii_case("PLAIN") {
            return Some(SaslMechanism::Plain);
        }
        if name.eq_ignore_ascii_case("OAUTHBEARER") {
            return Some(SaslMechanism::OAuthBearer);
        }
        ScramMechanism::from_name(name).map(SaslMechanism::Scram)
    }
}

/// What a listener with authorization on needs.
#[derive(Debug)]
pub struct KafkaSecurity {
    /// The one authorizer.
    pub authorizer: Arc<Authorizer>,
    /// Mechanisms SASL listeners offer, in preference order.
    pub mechanisms: Vec<SaslMechanism>,
    /// Failed-login delays per source address.
    pub limiter: LoginLimiter,
    /// The JWKS OAUTHBEARER tokens are checked against (its keys as last
    /// read); set exactly when the mechanisms include OAUTHBEARER.
    pub oauth: Option<Arc<JwksFile>>,
}

/// Where a connection's SASL exchange is.
enum State {
    /// No handshake yet.
    Idle,
    /// Mechanism chosen; `raw`: a v0 handshake, tokens come unframed.
    Chosen { mechanism: SaslMechanism, raw: bool },
    /// SCRAM: server-first sent, waiting for client-final.
    ScramFinal { server: Box<ScramServer>, raw: bool },
    /// Authenticated (or failed and closing): no more SASL.
    Done,
}

/// Who a connection is and how far its login got.
pub struct Session {
    /// The principal requests are authorized as.
    pub principal: Arc<Principal>,
    /// The client's address.
    pub addr: IpAddr,
    /// Whether SASL succeeded.
    pub authenticated: bool,
    state: State,
}

impl Session {
    /// A new connection: `User:ANONYMOUS` until it authenticates.
    pub fn new(addr: IpAddr) -> Session {
        Session { principal: Arc::new(Principal::anonymous()), addr, authenticated: false, state: State::Idle }
    }

    /// Whether the next frame is a raw token (after a v0 handshake).
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Chosen { raw: true, .. } | State::ScramFinal { raw: true, .. })
    }
}

/// What the connection does with a SASL step.
pub enum Step {
    /// Send this and go on.
    Reply(Response),
    /// Send this, then close.
    Fail(Response),
    /// Close now.
    Close(String),
}

/// SaslHandshake.
pub fn handshake(
    security: Option<&KafkaSecurity>,
    sasl_listener: bool,
    session: &mut Session,
    mut frame: Bytes,
) -> Step {
    let Some((version, correlation_id)) = header(&mut frame, ApiKey::SaslHandshake) else {
        return Step::Close("malformed SaslHandshake header".into());
    };
    let Ok(req) = SaslHandshakeRequest::decode(&mut frame, version) else {
        return Step::Close("malformed SaslHandshake request".into());
    };
    let offered: Vec<SaslMechanism> = match security {
        Some(s) if sasl_listener => s.mechanisms.clone(),
        _ => Vec::new(),
    };
    let names: Vec<StrBytes> = offered.iter().map(|m| StrBytes::from_static_str(m.name())).collect();
    let answer = |code: ResponseError| {
        let body =
            SaslHandshakeResponse::default().with_error_code(counted_code(code.code())).with_mechanisms(names.clone());
        encode(ApiKey::SaslHandshake, version, correlation_id, &body)
    };
    if offered.is_empty() {
        // A listener without SASL: the client asked the wrong listener;
        // answered, and the connection stays as it was.
        return Step::Reply(answer(ResponseError::IllegalSaslState));
    }
    if !matches!(session.state, State::Idle) {
        return Step::Fail(answer(ResponseError::IllegalSaslState));
    }
    let Some(mechanism) = SaslMechanism::from_name(&req.mechanism).filter(|m| offered.contains(m)) else {
        tracing::info!(peer = %session.addr, mechanism = %req.mechanism.as_str(), "unsupported SASL mechanism");
        return Step::Fail(answer(ResponseError::UnsupportedSaslMechanism));
    };
    session.state = State::Chosen { mechanism, raw: version == 0 };
    let body = SaslHandshakeResponse::default().with_mechanisms(names);
    Step::Reply(encode(ApiKey::SaslHandshake, version, correlation_id, &body))
}

/// SaslAuthenticate.
pub async fn authenticate(
    broker: &ferry_broker::Broker,
    security: &KafkaSecurity,
    session: &mut Session,
    mut frame: Bytes,
) -> Step {
    let Some((version, correlation_id)) = header(&mut frame, ApiKey::SaslAuthenticate) else {
        return Step::Close("malformed SaslAuthenticate header".into());
    };
    let Ok(req) = SaslAuthenticateRequest::decode(&mut frame, version) else {
        return Step::Close("malformed SaslAuthenticate request".into());
    };
    let answer = |code: i16, message: Option<String>, bytes: Bytes| {
        let body = SaslAuthenticateResponse::default()
            .with_error_code(counted_code(code))
            .with_error_message(message.map(StrBytes::from_string))
            .with_auth_bytes(bytes)
            .with_session_lifetime_ms(0);
        encode(ApiKey::SaslAuthenticate, version, correlation_id, &body)
    };
    if session.expects_raw_token() || matches!(session.state, State::Idle | State::Done) {
        let message = "SaslAuthenticate outside a SASL exchange".to_string();
        return Step::Fail(answer(ResponseError::IllegalSaslState.code(), Some(message), Bytes::new()));
    }
    match token(broker, security, session, &req.auth_bytes).await {
        Ok(bytes) => Step::Reply(answer(0, None, bytes)),
        Err(message) => Step::Fail(answer(ResponseError::SaslAuthenticationFailed.code(), Some(message), Bytes::new())),
    }
}

/// SaslAuthenticate on a listener without SASL: ILLEGAL_SASL_STATE, and
/// the connection stays as it was.
pub fn not_here(mut frame: Bytes) -> Step {
    let Some((version, correlation_id)) = header(&mut frame, ApiKey::SaslAuthenticate) else {
        return Step::Close("malformed SaslAuthenticate header".into());
    };
    if SaslAuthenticateRequest::decode(&mut frame, version).is_err() {
        return Step::Close("malformed SaslAuthenticate request".into());
    }
    let body = SaslAuthenticateResponse::default()
        .with_error_code(counted_code(ResponseError::IllegalSaslState.code()))
        .with_error_message(Some(StrBytes::from_static_str("this listener does not take SASL")));
    Step::Reply(encode(ApiKey::SaslAuthenticate, version, correlation_id, &body))
}

/// A raw token after a v0 handshake: the answer is raw too; a failure
/// closes (there is no frame to carry an error).
pub async fn raw_token(
    broker: &ferry_broker::Broker,
    security: &KafkaSecurity,
    session: &mut Session,
    frame: Bytes,
) -> Step {
    match token(broker, security, session, &frame).await {
        Ok(bytes) => Step::Reply(Response { chunks: vec![Chunk::Bytes(bytes)] }),
        Err(message) => Step::Close(message),
    }
}

/// Runs one token of the chosen mechanism. `Err`: the failure message
/// for the client (the delay for the address already waited).
async fn token(
    broker: &ferry_broker::Broker,
    security: &KafkaSecurity,
    session: &mut Session,
    token: &[u8],
) -> Result<Bytes, String> {
    let state = std::mem::replace(&mut session.state, State::Done);
    let result = step(broker, security, state, token).await;
    match result {
        Ok((next, (bytes, user))) => {
            if let Some(user) = user {
                security.limiter.succeeded(session.addr);
                session.principal = Arc::new(Principal::user(&user));
                session.authenticated = true;
                tracing::info!(peer = %session.addr, principal = %session.principal, "SASL authentication succeeded");
            }
            session.state = next;
            Ok(bytes)
        }
        Err((mechanism, user, why)) => {
            let delay = security.limiter.failed(session.addr, Instant::now());
            tracing::warn!(
                peer = %session.addr,
                user = user.as_deref().unwrap_or("?"),
                mechanism,
                reason = %why,
                delay_ms = delay.as_millis() as u64,
                "SASL authentication failed"
            );
            tokio::time::sleep(delay).await;
            Err(why)
        }
    }
}

type StepResult = Result<(State, (Bytes, Option<String>)), (&'static str, Option<String>, String)>;

/// The next state and (reply bytes, user once authenticated), or
/// (mechanism, user if known, message).
async fn step(broker: &ferry_broker::Broker, security: &KafkaSecurity, state: State, token: &[u8]) -> StepResult {
    if token.len() > MAX_TOKEN {
        return Err(("?", None, format!("SASL token of {} bytes is too long", token.len())));
    }
    match state {
        State::Chosen { mechanism: SaslMechanism::Plain, .. } => {
            let (user, password) = parse_plain(token).map_err(|e| ("PLAIN", None, e.to_string()))?;
            let (user, password) = (user.to_string(), password.to_string());
            let creds = broker.metadata().users.get(&user).cloned().unwrap_or_default();
            // PBKDF2 costs milliseconds: off the async workers.
            let name = user.clone();
            let ok = tokio::task::spawn_blocking(move || {
                if let Some(c) = ScramMechanism::ALL.iter().find_map(|m| creds.get(m)) {
                    c.verify_password(&password)
                } else {
                    // An unknown user costs the same PBKDF2 as a known one,
                    // so the answer's timing does not tell which users exist.
                    let _ = unknown_user().verify_password(&password);
                    false
                }
            })
            .await
            .unwrap_or(false);
            if ok {
                Ok((State::Done, (Bytes::new(), Some(name))))
            } else {
                Err(("PLAIN", Some(user), "Authentication failed: Invalid username or password".into()))
            }
        }
        State::Chosen { mechanism: SaslMechanism::Scram(m), raw } => {
            let image = broker.metadata();
            let lookup = |u: &str| image.users.get(u).and_then(|c| c.get(&m)).cloned();
            let (server, first) = ScramServer::start(m, token, lookup).map_err(|e| (m.name(), None, e.to_string()))?;
            Ok((State::ScramFinal { server: Box::new(server), raw }, (Bytes::from(first), None)))
        }
        State::Chosen { mechanism: SaslMechanism::OAuthBearer, .. } => {
            let Some(jwks) = security.oauth.as_deref() else {
                return Err(("OAUTHBEARER", None, "OAUTHBEARER is not configured".into()));
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            // Kafka answers a bad token with an error challenge the client
            // acknowledges; a failed SaslAuthenticate says the same in one
            // round trip, and librdkafka reports it as an authentication error.
            match oauthbearer::authenticate(&jwks.current(), token, now) {
                Ok(sub) => Ok((State::Done, (Bytes::new(), Some(sub)))),
                Err(e) => Err(("OAUTHBEARER", None, format!("Authentication failed: {e}"))),
            }
        }
        State::ScramFinal { server, .. } => {
            let user = server.username().to_string();
            let mechanism = "SCRAM";
            let done = server.finish(token).map_err(|e| (mechanism, Some(user), e.to_string()))?;
            Ok((State::Done, (Bytes::from(done.server_final), Some(done.username))))
        }
        State::Idle | State::Done => Err(("?", None, "no SASL exchange in progress".into())),
    }
}

/// The credential PLAIN checks an unknown user's password against.
fn unknown_user() -> &'static ScramCredential {
    static C: std::sync::OnceLock<ScramCredential> = std::sync::OnceLock::new();
    C.get_or_init(|| ScramCredential::new(ScramMechanism::Sha512, "", ScramMechanism::MIN_ITERATIONS))
}

/// (version, correlation id) after decoding the request header.
fn header(frame: &mut Bytes, key: ApiKey) -> Option<(i16, i32)> {
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    if !crate::handlers::supports(key, version) {
        return None;
    }
    let header = RequestHeader::decode(frame, key.request_header_version(version)).ok()?;
    Some((version, header.correlation_id))
}
