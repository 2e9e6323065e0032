//! Users, virtual-host permissions and SASL (PLAIN, AMQPLAIN).

use std::collections::BTreeMap;
use std::net::IpAddr;

use amq_protocol::types::{AMQPValue, parsing::parse_field_table};

/// configure / write / read patterns of one user on one virtual host, as
/// RabbitMQ's `set_permissions` takes them (see [`pattern_matches`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Regex of resources the user may declare and delete.
    pub configure: String,
    /// Regex of exchanges the user may publish to and queues it may bind.
    pub write: String,
    /// Regex of queues the user may consume from and exchanges it may bind from.
    pub read: String,
}

impl Permissions {
    /// Full access: `.*` for all three.
    pub fn all() -> Permissions {
        Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() }
    }
}

/// An AMQP user: credentials, where it may connect from, what it may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name (SASL `PLAIN` / `AMQPLAIN`).
    pub name: String,
    /// Password, compared in plain text as SASL `PLAIN` carries it.
    pub password: String,
    /// Refused unless the client connects from a loopback address
    /// (RabbitMQ's `loopback_users`, which holds `guest` by default).
    pub loopback_only: bool,
    /// Virtual host -> permissions; no entry: no access.
    pub permissions: BTreeMap<String, Permissions>,
}

impl User {
    /// RabbitMQ's default user.
    pub fn guest() -> User {
        User {
            name: "guest".into(),
            password: "guest".into(),
            loopback_only: true,
            permissions: BTreeMap::from([("/".to_string(), Permissions::all())]),
        }
    }
}

/// Username and password from a SASL response.
pub fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            // authzid NUL authcid NUL password
            let mut parts = response.splitn(3, |&b| b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((String::from_utf8(user.to_vec()).ok()?, String::from_utf8(pass.to_vec()).ok()?))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, table) = parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| match table.inner().get(k)? {
                AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

/// Checks the password (in constant time for equal lengths) and the
/// loopback rule.
pub fn authenticate<'a>(users: &'a [User], name: &str, password: &str, peer: IpAddr) -> Option<&'a User> {
    let user = users.iter().find(|u| u.name == name)?;
    let same = user.password.len() == password.len()
        && user.password.bytes().zip(password.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    let loopback_ok = !user.loopback_only || peer.is_loopback() || peer.to_canonical().is_loopback();
    (same && loopback_ok).then_some(user)
}

/// SASL EXTERNAL: the user named by the connection's client certificate
/// (the TLS layer verified it and mapped its subject to `principal`), as
/// RabbitMQ's `rabbitmq_auth_mechanism_ssl`: the user must exist, its
/// password is not asked, the loopback rule still applies. The hook the
/// shared user store replaces later.
pub fn external<'a>(users: &'a [User], principal: &str, peer: IpAddr) -> Option<&'a User> {
    let user = users.iter().find(|u| u.name == principal)?;
    let loopback_ok = !user.loopback_only || peer.is_loopback() || peer.to_canonical().is_loopback();
    loopback_ok.then_some(user)
}

/// Permission patterns: a subset of the regular expressions RabbitMQ uses,
/// matched as RabbitMQ does (unanchored unless `^` / `$` are given):
/// alternatives `|`, `.` (any character), `.*`, `\` escapes, anchors.
/// The empty pattern matches nothing.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    if pattern == ".*" {
        return true;
    }
    pattern.split('|').any(|alt| alternative_matches(alt, name))
}

#[derive(Clone, Copy, Debug)]
enum Tok {
    Lit(char),
    Any,
    AnyStar,
}

fn alternative_matches(alt: &str, name: &str) -> bool {
    let mut chars = alt.chars().peekable();
    let mut toks = Vec::new();
    let start_anchor = chars.peek() == Some(&'^');
    if start_anchor {
        chars.next();
    }
    if !start_anchor {
        toks.push(Tok::AnyStar);
    }
    let mut end_anchor = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => toks.push(Tok::Lit(chars.next().unwrap_or('\\'))),
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                toks.push(Tok::AnyStar);
            }
            '.' => toks.push(Tok::Any),
            '$' if chars.peek().is_none() => end_anchor = true,
            c => toks.push(Tok::Lit(c)),
        }
    }
    if !end_anchor {
        toks.push(Tok::AnyStar);
    }
    let name: Vec<char> = name.chars().collect();
    glob(&toks, &name)
}

fn glob(toks: &[Tok], s: &[char]) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::AnyStar, rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((Tok::Any, rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((Tok::Lit(c), rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_plain_and_amqplain() {
        assert_eq!(credentials("PLAIN", b"\0guest\0guest"), Some(("guest".into(), "guest".into())));
        assert_eq!(credentials("PLAIN", b"guest"), None);
        let creds = amq_protocol::auth::Credentials::new("bob".into(), "s3cret".into());
        let s = creds.sasl_auth_string(amq_protocol::auth::SASLMechanism::AMQPlain);
        assert_eq!(credentials("AMQPLAIN", s.as_bytes()), Some(("bob".into(), "s3cret".into())));
        assert_eq!(credentials("EXTERNAL", b""), None);
    }

    #[test]
    fn guest_only_from_loopback() {
        let users = vec![User::guest()];
        assert!(authenticate(&users, "guest", "guest", "127.0.0.1".parse().unwrap()).is_some());
        assert!(authenticate(&users, "guest", "guest", "::1".parse().unwrap()).is_some());
        assert!(authenticate(&users, "guest", "guest", "10.0.0.5".parse().unwrap()).is_none());
        assert!(authenticate(&users, "guest", "nope", "127.0.0.1".parse().unwrap()).is_none());
        assert!(authenticate(&users, "nobody", "guest", "127.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn permission_patterns() {
        assert!(pattern_matches(".*", "anything"));
        assert!(pattern_matches(".*", ""));
        assert!(!pattern_matches("", "x"));
        assert!(pattern_matches("^app-.*", "app-1"));
        assert!(!pattern_matches("^app-.*", "myapp-1"));
        assert!(pattern_matches("app", "myapp1"));
        assert!(pattern_matches("^(?:x)$|^orders$", "orders"));
        assert!(!pattern_matches("^orders$", "orders2"));
        assert!(pattern_matches("^amq\\.gen.*", "amq.gen-x"));
        assert!(!pattern_matches("^amq\\.gen.*", "amqxgen-x"));
    }
}
