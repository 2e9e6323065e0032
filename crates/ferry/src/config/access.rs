//! Settings of the logins and permissions for AMQP, MQTT, STOMP, Redis
//! and the HTTP API (the broker's `Gatekeeper`; docs/security.md).

use std::collections::BTreeSet;

use ferry_broker::security::Principal;

/// Resolved: who is a super user, whether anonymous listeners may face the
/// network, and the MQTT accounts of the config file (imported into the
/// user store at start, like `[[amqp.users]]`).
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// `--super-users`: allowed everything on every protocol.
    pub super_users: BTreeSet<Principal>,
    /// `--allow-anonymous`: listeners without authentication may bind
    /// non-loopback addresses.
    pub allow_anonymous: bool,
    /// `[[mqtt.users]]`.
    pub mqtt_users: Vec<ferry_mqtt::config::User>,
    /// `[[mqtt.acl]]`.
    pub mqtt_acl: Vec<ferry_mqtt::config::AclEntry>,
}

/// The super users of `--super-users` (or the file's list).
pub fn super_users(flag: Option<&String>, file: Option<&Vec<String>>) -> anyhow::Result<BTreeSet<Principal>> {
    let names: Vec<String> = match flag {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        None => file.cloned().unwrap_or_default(),
    };
    names.iter().map(|p| Principal::parse(p).map_err(anyhow::Error::msg)).collect()
}
