//! Kafka listener specs: `NAME://HOST:PORT` with Kafka's security protocol
//! names, a bare `HOST:PORT` being PLAINTEXT. SSL and SASL_SSL listeners
//! speak TLS with the node's one certificate (ferry-tls).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Kafka's `security.protocol` of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS, no SASL.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// The protocol of a Kafka name (case-insensitive).
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        [Self::Plaintext, Self::Ssl, Self::SaslPlaintext, Self::SaslSsl]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether clients must authenticate with SASL first.
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    /// Whether the listener speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// One Kafka listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Its security protocol (also its name).
    pub protocol: SecurityProtocol,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ListenerSpec {
    /// Parses `NAME://HOST:PORT` or `HOST:PORT` (PLAINTEXT).
    pub fn parse(spec: &str) -> Result<ListenerSpec, String> {
        let spec = spec.trim();
        let (protocol, addr) = match spec.split_once("://") {
            Some((name, addr)) => (
                SecurityProtocol::from_name(name).ok_or_else(|| {
                    format!("listener {spec:?}: unknown security protocol {name:?} (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
                })?,
                addr,
            ),
            None => (SecurityProtocol::Plaintext, spec),
        };
        let addr = match addr.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => addr
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("listener {spec:?}: {addr:?} is not HOST:PORT"))?,
        };
        Ok(ListenerSpec { protocol, addr })
    }

    /// Parses a comma-separated list; no protocol may repeat (its name
    /// identifies the listener).
    pub fn parse_list(specs: &str) -> Result<Vec<ListenerSpec>, String> {
        let mut out: Vec<ListenerSpec> = Vec::new();
        for s in specs.split(',').filter(|s| !s.trim().is_empty()) {
            let l = ListenerSpec::parse(s)?;
            if out.iter().any(|o| o.protocol == l.protocol) {
                return Err(format!("two {} listeners in {specs:?}", l.protocol.name()));
            }
            out.push(l);
        }
        if out.is_empty() {
            return Err("no Kafka listener given".into());
        }
        Ok(out)
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol.name(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_specs() {
        let l = ListenerSpec::parse("127.0.0.1:9092").unwrap();
        assert_eq!((l.protocol, l.addr.port()), (SecurityProtocol::Plaintext, 9092));
        let l = ListenerSpec::parse("sasl_plaintext://127.0.0.1:9093").unwrap();
        assert_eq!(l.protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(l.to_string(), "SASL_PLAINTEXT://127.0.0.1:9093");
        assert!(ListenerSpec::parse("SASL_SSL://[::1]:9094").unwrap().protocol.tls());
        assert!(ListenerSpec::parse("FOO://127.0.0.1:1").is_err());
        assert!(ListenerSpec::parse("PLAINTEXT://nohost").is_err());
        let list = ListenerSpec::parse_list("PLAINTEXT://127.0.0.1:1, SASL_PLAINTEXT://127.0.0.1:2").unwrap();
        assert_eq!(list.len(), 2);
        assert!(ListenerSpec::parse_list("127.0.0.1:1,PLAINTEXT://127.0.0.1:2").is_err());
        assert!(ListenerSpec::parse_list("").is_err());
    }
}
