//! CONNECT / STOMP: version negotiation (`accept-version`; none means
//! 1.0), the virtual host (`host`), the login (`login` / `passcode`,
//! through the broker's user check) and heart-beats (`heart-beat`).

use std::net::IpAddr;
use std::sync::Arc;

use ferry_broker::messaging::Vhost;

use crate::codec::{Frame, Version};
use crate::error::StompError;
use crate::server::Server;

/// What CONNECT settled.
pub struct Session {
    /// The negotiated version.
    pub version: Version,
    /// The virtual host.
    pub vhost: Arc<Vhost>,
    /// Who logged in.
    pub user: String,
    /// What the user may touch.
    pub authorize: crate::server::Authorizer,
    /// The server sends something at least this often, ms (0: never).
    pub send_every: u32,
    /// The client must send something at least this often, ms (0: no check).
    pub expect_every: u32,
    /// The CONNECTED frame to answer with.
    pub connected: Frame,
}

/// Versions this server speaks, best first.
const SUPPORTED: [Version; 3] = [Version::V1_2, Version::V1_1, Version::V1_0];

/// The highest version both sides speak; `accept-version` absent means 1.0.
pub fn negotiate(accept: Option<&str>) -> Option<Version> {
    let Some(list) = accept else { return Some(Version::V1_0) };
    let offered: Vec<Version> = list.split(',').filter_map(Version::parse).collect();
    SUPPORTED.into_iter().find(|v| offered.contains(v))
}

/// `heart-beat: cx,cy` against the server's (sx, sy): (server sends every,
/// client must send every), 0 = none, as the STOMP 1.1 spec computes them.
pub fn heartbeats(header: Option<&str>, server: (u32, u32)) -> Result<(u32, u32), StompError> {
    let (cx, cy) = match header {
        None => (0, 0),
        Some(h) => {
            let bad = || StompError::protocol(format!("invalid heart-beat header {h:?}"));
            let (a, b) = h.split_once(',').ok_or_else(bad)?;
            (a.trim().parse::<u32>().map_err(|_| bad())?, b.trim().parse::<u32>().map_err(|_| bad())?)
        }
    };
    let (sx, sy) = server;
    let send = if sx == 0 || cy == 0 { 0 } else { sx.max(cy) };
    let expect = if cx == 0 || sy == 0 { 0 } else { cx.max(sy) };
    Ok((send, expect))
}

/// Answers a CONNECT or STOMP frame.
pub async fn connect(server: &Server, frame: &Frame, peer: IpAddr) -> Result<Session, (Version, StompError)> {
    let version = negotiate(frame.header("accept-version"))
        .ok_or((Version::V1_0, StompError::protocol("Supported protocol versions are 1.0 1.1 1.2".to_string())))?;
    let fail = |e: StompError| (version, e);
    let (send_every, expect_every) = if version == Version::V1_0 {
        (0, 0)
    } else {
        heartbeats(frame.header("heart-beat"), server.config.heartbeat).map_err(fail)?
    };
    let vhost_name = match frame.header("host") {
        Some(h) if server.vhosts.get(h).is_some() => h.to_string(),
        _ => server.config.default_vhost.clone(),
    };
    let vhost = server
        .vhosts
        .get(&vhost_name)
        .ok_or_else(|| fail(StompError::Access(format!("virtual host {vhost_name:?} does not exist"))))?;
    let (user, pass) = match (frame.header("login"), frame.header("passcode")) {
        (Some(u), p) => (u.to_string(), p.unwrap_or_default().to_string()),
        (None, _) => server
            .config
            .default_login
            .clone()
            .ok_or_else(|| fail(StompError::Access("login and passcode are required".into())))?,
    };
    // The password check (PBKDF2, milliseconds) off the async workers.
    let (check, u, p, v) = (server.authenticate.clone(), user.clone(), pass.clone(), vhost_name.clone());
    let checked = tokio::task::spawn_blocking(move || check(&u, &p, peer, &v)).await;
    let checked = checked.unwrap_or(Err(crate::server::Refused { delay: std::time::Duration::ZERO }));
    let authorize = match checked {
        Ok(a) => Some(a),
        Err(refused) => {
            // Slows password guessing from one address (LoginLimiter).
            tokio::time::sleep(refused.delay).await;
            None
        }
    };
    let Some(authorize) = authorize else {
        return Err(fail(StompError::Access(format!(
            "login refused for user '{user}' on virtual host '{vhost_name}'"
        ))));
    };
    let mut connected = Frame::new("CONNECTED");
    if version > Version::V1_0 {
        connected = connected.with("version", version.as_str());
        let (sx, sy) = server.config.heartbeat;
        connected = connected.with("heart-beat", format!("{sx},{sy}"));
    }
    connected = connected
        .with("server", concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .with("session", format!("session-{}", uuid::Uuid::new_v4().simple()));
    Ok(Session { version, vhost, user, authorize, send_every, expect_every, connected })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate(None), Some(Version::V1_0));
        assert_eq!(negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(negotiate(Some("1.1,1.0")), Some(Version::V1_1));
        assert_eq!(negotiate(Some("1.0")), Some(Version::V1_0));
        assert_eq!(negotiate(Some("2.0,3.1")), None);
        assert_eq!(negotiate(Some("")), None);
    }

    #[test]
    fn heart_beats_as_the_spec_computes_them() {
        assert_eq!(heartbeats(None, (10_000, 10_000)).unwrap(), (0, 0));
        assert_eq!(heartbeats(Some("0,0"), (10_000, 10_000)).unwrap(), (0, 0));
        // The client sends every 4 s and wants ours every 20 s.
        assert_eq!(heartbeats(Some("4000,20000"), (10_000, 10_000)).unwrap(), (20_000, 10_000));
        assert_eq!(heartbeats(Some("1000,1000"), (0, 500)).unwrap(), (0, 1000));
        assert!(heartbeats(Some("x,1"), (1, 1)).is_err());
        assert!(heartbeats(Some("1000"), (1, 1)).is_err());
    }
}
