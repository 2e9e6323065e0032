//! Listener addresses: `HOST:PORT` (plain) or `tls://HOST:PORT`
//! (`wss://` for WebSocket listeners), comma-separated for several.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::TlsError;

/// One listener: where, and whether it speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The address to bind.
    pub addr: SocketAddr,
    /// `tls://` (or `wss://`) was given.
    pub tls: bool,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls { write!(f, "tls://{}", self.addr) } else { write!(f, "{}", self.addr) }
    }
}

impl Listen {
    /// Parses one address. `tls://` and `wss://` mean TLS; `tcp://`,
    /// `ws://` or no scheme mean plain. The host may be a name.
    pub fn parse(s: &str) -> Result<Listen, TlsError> {
        let s = s.trim();
        let (tls, rest) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "tls" | "ssl" | "wss" => (true, rest),
                "tcp" | "ws" => (false, rest),
                _ => return Err(TlsError::Listen(s.to_string())),
            },
            None => (false, s),
        };
        let addr =
            rest.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| TlsError::Listen(s.to_string()))?;
        Ok(Listen { addr, tls })
    }
}

/// A comma-separated list of listeners (empty items are skipped).
pub fn parse_listeners(s: &str) -> Result<Vec<Listen>, TlsError> {
    s.split(',').filter(|p| !p.trim().is_empty()).map(Listen::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_side_by_side() {
        let l = parse_listeners("127.0.0.1:5672, tls://127.0.0.1:5671").unwrap();
        assert_eq!(l.len(), 2);
        assert!(!l[0].tls && l[0].addr.port() == 5672);
        assert!(l[1].tls && l[1].addr.port() == 5671);
        assert_eq!(l[1].to_string(), "tls://127.0.0.1:5671");
        assert!(Listen::parse("wss://127.0.0.1:8443").unwrap().tls);
        assert!(!Listen::parse("ws://127.0.0.1:8080").unwrap().tls);
    }

    #[test]
    fn rejects_unknown_scheme_and_garbage() {
        assert!(Listen::parse("http://127.0.0.1:1").is_err());
        assert!(Listen::parse("tls://nowhere").is_err());
        assert!(Listen::parse("").is_err());
    }
}
