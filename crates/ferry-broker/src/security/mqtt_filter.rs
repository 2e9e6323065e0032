//! MQTT topic ACL patterns (mosquitto's `acl_file` patterns): a filter
//! over topic levels (`+` one level, `#` the rest) with `%u` (user name)
//! and `%c` (client id) substituted when the ACL is checked. The pattern
//! type [`PatternType::MqttFilter`](super::PatternType) of `MqttTopic:`
//! ACLs.

/// Who is asking, for `%u` and `%c`.
#[derive(Clone, Copy, Debug)]
pub struct MqttIdentity<'a> {
    /// The logged-in user name; `None` for an anonymous client (a pattern
    /// with `%u` then matches nothing, as in mosquitto).
    pub user: Option<&'a str>,
    /// The MQTT client id.
    pub client_id: &'a str,
}

/// `pattern` with `%u` and `%c` substituted; `None` when it names `%u`
/// and the client is anonymous, or a substituted value holds a wildcard or
/// a level separator (a client id `a/#` must not widen `devices/%c`).
pub fn substitute(pattern: &str, who: Option<&MqttIdentity<'_>>) -> Option<String> {
    if !pattern.contains('%') {
        return Some(pattern.to_string());
    }
    let who = who?;
    let safe = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#']);
    let mut out = pattern.to_string();
    if out.contains("%u") {
        let user = who.user.filter(|u| safe(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if !safe(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    Some(out)
}

/// Whether every topic `filter` matches is matched by `pattern` (a topic
/// name is a filter matching itself, so this also checks a publish).
pub fn covers(pattern: &str, filter: &str) -> bool {
    // `+` and `#` at the start do not match `$SYS`-style topics (MQTT 4.7.2).
    if filter.starts_with('$') && (pattern.starts_with('+') || pattern.starts_with('#')) {
        return false;
    }
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b => {} // equal levels; "+" covers "+"
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_names_and_filters() {
        assert!(covers("sensors/#", "sensors/t1") && covers("sensors/#", "sensors/a/b"));
        assert!(covers("sensors/#", "sensors/+") && covers("sensors/+", "sensors/+"));
        assert!(!covers("sensors/+", "sensors/#") && !covers("sensors/+", "sensors/a/b"));
        assert!(covers("a/+/c", "a/b/c") && !covers("a/+/c", "a/b/d"));
        assert!(!covers("#", "$SYS/x") && covers("$SYS/#", "$SYS/x"));
        assert!(covers("x", "x") && !covers("x", "x/y") && !covers("x/y", "x"));
        assert!(covers("a/#", "a/+/c") && covers("+/+", "+/b") && !covers("a/b", "a/+"));
    }

    #[test]
    fn substitution() {
        let alice = MqttIdentity { user: Some("alice"), client_id: "dev1" };
        assert_eq!(substitute("u/%u/c/%c/#", Some(&alice)).as_deref(), Some("u/alice/c/dev1/#"));
        assert_eq!(substitute("plain/#", None).as_deref(), Some("plain/#"));
        let anon = MqttIdentity { user: None, client_id: "dev1" };
        assert_eq!(substitute("u/%u/#", Some(&anon)), None, "anonymous: %u matches nothing");
        assert_eq!(substitute("c/%c", Some(&anon)).as_deref(), Some("c/dev1"));
        let sneaky = MqttIdentity { user: Some("x"), client_id: "a/#" };
        assert_eq!(substitute("c/%c", Some(&sneaky)), None, "a wildcard in a client id does not widen");
        assert_eq!(substitute("c/%c", None), None);
    }
}
