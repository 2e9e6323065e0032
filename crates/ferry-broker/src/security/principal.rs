//! Who a connection acts as, in Kafka's `Type:name` form (`User:alice`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A principal: Kafka's `KafkaPrincipal` (type and name). Every
/// authenticated connection of every protocol has one; an
/// unauthenticated one is `User:ANONYMOUS`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The principal type; `User` for every login Ferry knows.
    pub kind: String,
    /// The name (a user name, `*` as the wildcard of an ACL).
    pub name: String,
}

/// Why a principal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {0:?} is not of the form Type:name (e.g. User:alice)")]
pub struct BadPrincipal(pub String);

impl Principal {
    /// The type of every user principal.
    pub const USER: &'static str = "User";

    /// `User:name`.
    pub fn user(name: &str) -> Principal {
        Principal { kind: Self::USER.to_string(), name: name.to_string() }
    }

    /// `User:ANONYMOUS`: a connection that did not authenticate.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// `User:*`, the ACL wildcard that matches every user.
    pub fn wildcard() -> Principal {
        Principal::user("*")
    }

    /// Parses `Type:name`; both parts must be non-empty.
    pub fn parse(s: &str) -> Result<Principal, BadPrincipal> {
        match s.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                Ok(Principal { kind: kind.to_string(), name: name.to_string() })
            }
            _ => Err(BadPrincipal(s.to_string())),
        }
    }

    /// Whether this is `User:*`.
    pub fn is_wildcard(&self) -> bool {
        self.kind == Self::USER && self.name == "*"
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

impl std::str::FromStr for Principal {
    type Err = BadPrincipal;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Principal::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_form_round_trips() {
        let p = Principal::parse("User:alice").unwrap();
        assert_eq!(p, Principal::user("alice"));
        assert_eq!(p.to_string(), "User:alice");
        // A name may itself hold colons (Kafka splits at the first).
        assert_eq!(Principal::parse("User:a:b").unwrap().name, "a:b");
        assert!(Principal::parse("alice").is_err());
        assert!(Principal::parse(":x").is_err() && Principal::parse("User:").is_err());
        assert!(Principal::wildcard().is_wildcard() && !Principal::anonymous().is_wildcard());
    }
}
