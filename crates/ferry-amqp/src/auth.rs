//! Configured users and virtual-host permissions (imported into the user
//! store at start), and the SASL responses (PLAIN, AMQPLAIN).

use std::collections::BTreeMap;

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

/// RabbitMQ's permission patterns (the ACL pattern type `regex` uses them).
pub use ferry_broker::security::regex::pattern_matches;

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
}
