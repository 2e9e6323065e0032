//! Authentication (`[[mqtt.users]]`) and topic ACLs (`[[mqtt.acl]]`).
//!
//! With no users configured every client is let in (anonymous, like
//! mosquitto 1.x). With no ACL entries every topic is allowed; with some,
//! a topic is allowed only if an entry for the user (or `*`) grants it.

use crate::config::{Access, MqttConfig};
use crate::topic_tree;

/// Whether `username`/`password` may connect.
pub fn authenticate(config: &MqttConfig, username: Option<&str>, password: Option<&[u8]>) -> bool {
    if config.users.is_empty() {
        return true;
    }
    let (Some(name), Some(pw)) = (username, password) else { return false };
    config.users.iter().any(|u| u.name == name && constant_time_eq(u.password.as_bytes(), pw))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the client may publish to topic `name`.
pub fn may_publish(config: &MqttConfig, user: Option<&str>, client_id: &str, name: &str) -> bool {
    allowed(config, user, client_id, |pattern| topic_tree::matches(pattern, name), Access::Write)
}

/// Whether the client may subscribe to `filter` (every topic it matches
/// must be readable).
pub fn may_subscribe(config: &MqttConfig, user: Option<&str>, client_id: &str, filter: &str) -> bool {
    allowed(config, user, client_id, |pattern| topic_tree::covers(pattern, filter), Access::Read)
}

fn allowed(
    config: &MqttConfig,
    user: Option<&str>,
    client_id: &str,
    fits: impl Fn(&str) -> bool,
    want: Access,
) -> bool {
    if config.acl.is_empty() {
        return true;
    }
    config.acl.iter().any(|e| {
        let for_user = e.user == "*" || Some(e.user.as_str()) == user;
        let grants = e.access == Access::Readwrite || e.access == want;
        for_user && grants && fits(&e.pattern.replace("%u", user.unwrap_or("")).replace("%c", client_id))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AclEntry, User};

    #[test]
    fn users_and_acls() {
        let mut c = MqttConfig::default();
        assert!(authenticate(&c, None, None), "anonymous without users");
        c.users = Arc::new(vec![User { name: "u".into(), password: "p".into() }]);
        assert!(authenticate(&c, Some("u"), Some(b"p")));
        assert!(!authenticate(&c, Some("u"), Some(b"q")) && !authenticate(&c, None, None));
        assert!(may_publish(&c, Some("u"), "c", "any/thing"), "no ACL: everything");
        c.acl = Arc::new(vec![
            AclEntry { user: "u".into(), pattern: "sensors/#".into(), access: Access::Write },
            AclEntry { user: "*".into(), pattern: "devices/%c/+".into(), access: Access::Readwrite },
        ]);
        assert!(may_publish(&c, Some("u"), "c", "sensors/t1"));
        assert!(!may_subscribe(&c, Some("u"), "c", "sensors/#"), "write-only");
        assert!(may_subscribe(&c, None, "dev1", "devices/dev1/+"));
        assert!(!may_subscribe(&c, None, "dev1", "devices/dev2/+"));
        assert!(!may_subscribe(&c, None, "dev1", "devices/#"));
    }
}
