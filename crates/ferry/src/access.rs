//! The one user store for AMQP, MQTT, STOMP and Redis (docs/security.md):
//! config-defined users are imported into it at start, the broker's
//! `Gatekeeper` checks logins and permissions on it, and listeners that
//! would let anyone in from the network refuse to start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, bail};
use ferry_broker::Broker;
use ferry_broker::security::{
    AclBinding, AclEntry, Authorizer, AuthorizerConfig, Gatekeeper, Operation, PatternType, Permission, Principal,
    ResourcePattern, ResourceType, ScramCredential, ScramMechanism, vhost_permissions,
};

use crate::config::Settings;
use crate::config::access::AccessSettings;

/// SCRAM iterations of imported users (Kafka's minimum and default).
const ITERATIONS: u32 = 4096;

/// Names that may log in from loopback addresses only: RabbitMQ's
/// `loopback_users` (`guest` unless the config says otherwise).
pub fn loopback_users(amqp: &[ferry_amqp::User]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = amqp.iter().filter(|u| u.loopback_only).map(|u| u.name.clone()).collect();
    if !amqp.iter().any(|u| u.name == "guest") {
        names.insert("guest".into());
    }
    names
}

/// The bindings the config's users and permissions stand for.
fn config_acls(amqp: &[ferry_amqp::User], access: &AccessSettings) -> Vec<AclBinding> {
    let mut out = Vec::new();
    for u in amqp {
        let p = Principal::user(&u.name);
        for (vhost, perm) in &u.permissions {
            out.extend(vhost_permissions::vhost_acls(&p, vhost, &perm.configure, &perm.write, &perm.read));
        }
    }
    let mqtt = |who: Principal, filter: &str, operation| AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::MqttTopic,
            name: filter.to_string(),
            pattern_type: PatternType::MqttFilter,
        },
        entry: AclEntry { principal: who, host: "*".into(), operation, permission: Permission::Allow },
    };
    for e in &access.mqtt_acl {
        let who = if e.user == "*" { Principal::wildcard() } else { Principal::user(&e.user) };
        let ops: &[Operation] = match e.access {
            ferry_mqtt::config::Access::Read => &[Operation::Read],
            ferry_mqtt::config::Access::Write => &[Operation::Write],
            ferry_mqtt::config::Access::Readwrite => &[Operation::Read, Operation::Write],
        };
        for op in ops {
            out.push(mqtt(who.clone(), &e.pattern, *op));
        }
    }
    // `[[mqtt.users]]` without `[[mqtt.acl]]` meant every topic for them.
    if access.mqtt_acl.is_empty() {
        for u in &access.mqtt_users {
            out.push(mqtt(Principal::user(&u.name), "#", Operation::All));
        }
    }
    out
}

/// Writes the config's users (as SCRAM credentials) and their permissions
/// (as ACLs) into the metadata, skipping what is there already, so a
/// restart writes nothing. Removing a user or permission from the config
/// does not remove it from the store (`ferry user delete`, `ferry acl remove`).
pub async fn import_config_users(
    broker: &Broker,
    amqp: &[ferry_amqp::User],
    access: &AccessSettings,
) -> anyhow::Result<()> {
    let mut passwords: BTreeMap<&str, &str> = BTreeMap::new();
    let all = amqp.iter().map(|u| (u.name.as_str(), u.password.as_str()));
    for (name, password) in all.chain(access.mqtt_users.iter().map(|u| (u.name.as_str(), u.password.as_str()))) {
        if let Some(other) = passwords.insert(name, password)
            && other != password
        {
            bail!("user {name:?} is defined twice in the config with different passwords");
        }
    }
    // Writes can meet a controller election (a cluster starting): retried
    // for a while; the start fails if the store stays unwritable.
    let mut wait = std::time::Duration::from_millis(200);
    for attempt in 1..=5 {
        match write_config_users(broker, &passwords, amqp, access).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %format!("{e:#}"), attempt, "importing the config users; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_config_users(
    broker: &Broker,
    passwords: &BTreeMap<&str, &str>,
    amqp: &[ferry_amqp::User],
    access: &AccessSettings,
) -> anyhow::Result<()> {
    for (&name, &password) in passwords {
        let stored = broker.metadata().users.get(name).cloned().unwrap_or_default();
        for m in ScramMechanism::ALL {
            if stored.get(&m).is_some_and(|c| c.verify_password(password)) {
                continue;
            }
            let credential = ScramCredential::new(m, password, ITERATIONS);
            broker
                .upsert_scram_credential(name, credential)
                .await
                .with_context(|| format!("importing the config user {name}"))?;
            tracing::info!(user = name, mechanism = m.name(), "imported a config user into the user store");
        }
    }
    let acls = broker.metadata().acls.clone();
    let mut missing: Vec<AclBinding> = config_acls(amqp, access).into_iter().filter(|b| !acls.contains(b)).collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        let n = missing.len();
        broker.create_acls(missing).await.context("importing the config users' permissions as ACLs")?;
        tracing::info!(acls = n, "imported the config users' permissions as ACLs");
    }
    Ok(())
}

/// The gatekeeper every non-Kafka front-end asks.
pub fn gatekeeper(broker: &Arc<Broker>, amqp: &[ferry_amqp::User], access: &AccessSettings) -> Arc<Gatekeeper> {
    let config = AuthorizerConfig { super_users: access.super_users.clone(), allow_everyone_if_no_acl_found: false };
    let authorizer = Arc::new(Authorizer::new(config, broker.clone()));
    Arc::new(Gatekeeper::new(broker.clone(), broker.clone(), authorizer, loopback_users(amqp)))
}

/// Refuses listeners that let clients in without authentication from
/// non-loopback addresses, unless `--allow-anonymous` (Mosquitto 2.0's
/// rule, as for Kafka's PLAINTEXT listeners): MQTT while the store holds
/// no user MQTT clients must log in as, the HTTP API on the same
/// condition (unless a Kafka SASL listener turns its login on), and STOMP
/// / Redis whose default login is a user that may log in from anywhere.
pub fn check_anonymous_listeners(settings: &Settings, gate: &Gatekeeper) -> anyhow::Result<()> {
    if settings.access.allow_anonymous {
        return Ok(());
    }
    let remote = |l: &&ferry_tls::Listen| !l.addr.ip().is_loopback();
    if !gate.logins_required()
        && let Some(l) = settings.mqtt_listen.iter().chain(&settings.mqtt_ws_listen).find(remote)
    {
        bail!(
            "MQTT listener {l} would accept clients without authentication on a non-loopback address \
             (no user in the user store); create a user (ferry user create, [[mqtt.users]]), bind a loopback \
             address, or pass --allow-anonymous"
        );
    }
    // The HTTP API asks for a login when Kafka has a SASL listener or MQTT logins are required.
    let http_secured = settings.security.is_some() || gate.logins_required();
    if !http_secured && !settings.http_listen.addr.ip().is_loopback() {
        bail!(
            "HTTP listener {} would serve the admin API without authentication on a non-loopback address \
             (no user in the user store); create a user, bind a loopback address or pass --allow-anonymous",
            settings.http_listen
        );
    }
    let loopback = loopback_users(&settings.amqp.users);
    for (default, listeners, what) in [
        (
            &settings.stomp.default_login,
            settings.stomp_listen.iter().chain(&settings.stomp_ws_listen).collect::<Vec<_>>(),
            "STOMP",
        ),
        (&settings.redis.default_login, settings.redis_listen.iter().collect(), "Redis"),
    ] {
        if let Some((user, _)) = default
            && !loopback.contains(user)
            && let Some(l) = listeners.iter().find(|l| !l.addr.ip().is_loopback())
        {
            bail!(
                "{what} listener {l} would log clients without credentials in as {user:?} on a non-loopback \
                 address; remove the default login, bind a loopback address, or pass --allow-anonymous"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ferry_broker::security::{AclSet, UserCredentials};

    use super::*;
    use crate::config::ServeArgs;

    fn gate_with(users: &[&str]) -> Gatekeeper {
        let store: BTreeMap<String, UserCredentials> = users
            .iter()
            .map(|u| {
                let c = ScramCredential::new(ScramMechanism::Sha256, "pw", ITERATIONS);
                (u.to_string(), BTreeMap::from([(ScramMechanism::Sha256, c)]))
            })
            .collect();
        let acls: Arc<dyn ferry_broker::security::AclSource> = Arc::new(Arc::new(AclSet::default()));
        let authorizer = Arc::new(Authorizer::new(AuthorizerConfig::default(), acls.clone()));
        Gatekeeper::new(Arc::new(store), acls, authorizer, BTreeSet::from(["guest".to_string()]))
    }

    #[test]
    fn anonymous_listeners_off_loopback_refuse_to_start() {
        let resolve = |args: ServeArgs| crate::config::Settings::resolve(&args).unwrap();
        let open = resolve(ServeArgs::default());
        check_anonymous_listeners(&open, &gate_with(&["guest"])).expect("the default single node starts");
        let mqtt = resolve(ServeArgs { mqtt_listen: Some("0.0.0.0:1883".into()), ..Default::default() });
        let e = check_anonymous_listeners(&mqtt, &gate_with(&["guest"])).unwrap_err().to_string();
        assert!(e.contains("MQTT listener") && e.contains("--allow-anonymous"), "{e}");
        check_anonymous_listeners(&mqtt, &gate_with(&["guest", "alice"])).expect("a user: MQTT logins are required");
        let allowed = resolve(ServeArgs {
            mqtt_listen: Some("0.0.0.0:1883".into()),
            allow_anonymous: true,
            ..Default::default()
        });
        check_anonymous_listeners(&allowed, &gate_with(&[])).expect("--allow-anonymous");
        let http = resolve(ServeArgs { http_listen: Some("0.0.0.0:9644".into()), ..Default::default() });
        assert!(check_anonymous_listeners(&http, &gate_with(&["guest"])).unwrap_err().to_string().contains("HTTP"));
        check_anonymous_listeners(&http, &gate_with(&["alice"])).expect("a user: the HTTP API asks for logins");
        // STOMP / Redis: the default login guest is loopback-only, so they may face the network.
        let stomp = resolve(ServeArgs { stomp_listen: Some("0.0.0.0:61613".into()), ..Default::default() });
        check_anonymous_listeners(&stomp, &gate_with(&[])).expect("guest cannot log in from the network");
    }

    #[test]
    fn config_users_become_acls() {
        let amqp = vec![ferry_amqp::User {
            name: "app".into(),
            password: "pw".into(),
            loopback_only: false,
            permissions: BTreeMap::from([("/".to_string(), ferry_amqp::Permissions::all())]),
        }];
        let access = AccessSettings {
            mqtt_users: vec![ferry_mqtt::config::User { name: "m".into(), password: "x".into() }],
            ..Default::default()
        };
        let acls = config_acls(&amqp, &access);
        let has = |t: ResourceType, name: &str, op: Operation, who: &str| {
            acls.iter().any(|b| b.pattern.matches(t, name) && b.entry.operation == op && b.entry.principal.name == who)
        };
        assert!(has(ResourceType::Vhost, "/", Operation::Describe, "app"));
        assert!(
            has(ResourceType::Queue, "//q", Operation::Read, "app")
                && has(ResourceType::Exchange, "//x", Operation::Delete, "app")
        );
        assert!(has(ResourceType::MqttTopic, "any/topic", Operation::All, "m"), "no [[mqtt.acl]]: every topic");
        assert_eq!(loopback_users(&amqp), BTreeSet::from(["guest".to_string()]));
    }
}
