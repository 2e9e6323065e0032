//! Logins and topic ACLs, asked of the broker's one
//! [`Gatekeeper`](ferry_broker::security::Gatekeeper) (the user store and
//! `MqttTopic:` ACLs; `[[mqtt.users]]` / `[[mqtt.acl]]` are imported into
//! them at start). Without a gatekeeper (`MqttConfig::gate` `None`, as in
//! tests of this crate alone) every client and topic is let in.

use std::net::IpAddr;

use ferry_broker::messaging::access::Refused;
use ferry_broker::security::{Operation, Principal};

use crate::config::MqttConfig;

/// Checks a CONNECT's credentials. While logins are not required, a user
/// name the store does not know is taken as given (mosquitto with
/// `allow_anonymous`), and its ACLs apply; a known one is always checked.
pub async fn authenticate(
    config: &MqttConfig,
    username: Option<&str>,
    password: Option<&[u8]>,
    peer: IpAddr,
) -> Result<(), Refused> {
    let Some(gate) = config.gate.clone() else { return Ok(()) };
    let (user, password) = (username.map(str::to_string), password.map(<[u8]>::to_vec));
    // PBKDF2 (milliseconds) off the async workers.
    tokio::task::spawn_blocking(move || gate.mqtt_login(user.as_deref(), password.as_deref(), peer).map(|_| ()))
        .await
        .unwrap_or(Err(Refused { delay: std::time::Duration::ZERO }))
}

/// Whether the client may publish to topic `name`.
pub fn may_publish(config: &MqttConfig, user: Option<&str>, client_id: &str, peer: IpAddr, name: &str) -> bool {
    allowed(config, user, client_id, peer, Operation::Write, name)
}

/// Whether the client may subscribe to `filter` (every topic it matches
/// must be readable).
pub fn may_subscribe(config: &MqttConfig, user: Option<&str>, client_id: &str, peer: IpAddr, filter: &str) -> bool {
    allowed(config, user, client_id, peer, Operation::Read, filter)
}

fn allowed(config: &MqttConfig, user: Option<&str>, client_id: &str, peer: IpAddr, op: Operation, topic: &str) -> bool {
    let Some(gate) = &config.gate else { return true };
    let principal = user.map(Principal::user);
    gate.mqtt_allows(principal.as_ref(), client_id, &peer.to_string(), op, topic)
}
