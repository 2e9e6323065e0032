//! Logins and permission checks for AMQP, STOMP, Redis and MQTT on the one
//! user store (SCRAM credentials in the metadata) and the one
//! [`Authorizer`]: front-ends ask here, so the mapping of their operations
//! to ACLs (docs/security.md) lives in one place.
//!
//! - A password login checks the offered password against the stored
//!   SCRAM credential ([`ScramCredential::verify_password`]); a failure is
//!   delayed per source address ([`LoginLimiter`]) and logged with the
//!   address and user, never the password.
//! - Loopback-only users (RabbitMQ's `loopback_users`, `guest` by default)
//!   are refused from any other address.
//! - AMQP, STOMP and Redis: opening a vhost needs `Describe` on
//!   `Vhost:<vhost>`; then [`Access`] on queues and exchanges is checked on
//!   `Queue:<vhost>/<name>` / `Exchange:<vhost>/<name>` (see
//!   [`Gatekeeper::allows`]).
//! - MQTT: a login is needed once the store holds a user other than the
//!   loopback-only ones; topic ACLs (`MqttTopic:`) apply once any exists or
//!   logins are needed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::acl::{Operation, ResourceType};
use super::authorizer::{AclSource, Authorizer};
use super::credentials::{ScramCredential, ScramMechanism, UserCredentials};
use super::login_limiter::LoginLimiter;
use super::mqtt_filter::MqttIdentity;
use super::principal::Principal;
use super::vhost_permissions::resource_name;
use crate::messaging::access::{self, Access, Refused};

/// Where the gatekeeper reads users (the metadata image).
pub trait UserSource: Send + Sync {
    /// The credentials of `user`, if it exists.
    fn credentials(&self, user: &str) -> Option<UserCredentials>;
    /// Every user name.
    fn user_names(&self) -> Vec<String>;
}

impl UserSource for crate::Broker {
    fn credentials(&self, user: &str) -> Option<UserCredentials> {
        self.metadata().users.get(user).cloned()
    }

    fn user_names(&self) -> Vec<String> {
        self.metadata().users.keys().cloned().collect()
    }
}

/// A fixed set of users (tests, tools).
impl UserSource for BTreeMap<String, UserCredentials> {
    fn credentials(&self, user: &str) -> Option<UserCredentials> {
        self.get(user).cloned()
    }

    fn user_names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// Logins and permissions for the non-Kafka protocols.
pub struct Gatekeeper {
    users: Arc<dyn UserSource>,
    acls: Arc<dyn AclSource>,
    authorizer: Arc<Authorizer>,
    limiter: LoginLimiter,
    loopback_users: BTreeSet<String>,
}

impl std::fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatekeeper").field("loopback_users", &self.loopback_users).finish_non_exhaustive()
    }
}

/// A credential no password matches, to spend the same time on an unknown
/// user as on a known one (the answer's timing does not tell who exists).
fn decoy() -> &'static ScramCredential {
    static DECOY: OnceLock<ScramCredential> = OnceLock::new();
    DECOY.get_or_init(|| ScramCredential::new(ScramMechanism::Sha256, &format!("{:x}", rand::random::<u128>()), 4096))
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.to_canonical().is_loopback()
}

impl Gatekeeper {
    /// A gatekeeper on `users`, checking with `authorizer` (whose ACLs are
    /// `acls`); `loopback_users` may log in from loopback addresses only.
    pub fn new(
        users: Arc<dyn UserSource>,
        acls: Arc<dyn AclSource>,
        authorizer: Arc<Authorizer>,
        loopback_users: BTreeSet<String>,
    ) -> Gatekeeper {
        Gatekeeper { users, acls, authorizer, limiter: LoginLimiter::new(), loopback_users }
    }

    /// Checks `user`'s `password` from `peer` (for `protocol`, in the log).
    /// A refusal carries the delay to wait before answering.
    pub fn login(&self, protocol: &str, user: &str, password: &str, peer: IpAddr) -> Result<Principal, Refused> {
        let creds = self.users.credentials(user);
        // The cheaper hash when both are stored: the check runs on the
        // connection's task (one PBKDF2, a few milliseconds).
        let cred =
            creds.as_ref().and_then(|c| c.get(&ScramMechanism::Sha256).or_else(|| c.get(&ScramMechanism::Sha512)));
        let ok = if let Some(c) = cred {
            c.verify_password(password)
        } else {
            decoy().verify_password(password);
            false
        };
        let loopback_ok = !self.loopback_users.contains(user) || is_loopback(peer);
        if ok && loopback_ok {
            self.limiter.succeeded(peer);
            return Ok(Principal::user(user));
        }
        let delay = self.limiter.failed(peer, Instant::now());
        let reason = if !ok { "wrong user name or password" } else { "user may log in from loopback addresses only" };
        tracing::warn!(protocol, %peer, user, reason, "login refused");
        Err(Refused { delay })
    }

    /// AMQP's `EXTERNAL` login by client certificate: `name` is the
    /// principal name the TLS layer mapped from the verified certificate.
    /// No password is asked, but the user must exist in the store (as
    /// RabbitMQ's `rabbitmq_auth_mechanism_ssl` needs the user), and the
    /// loopback rule applies.
    pub fn external(&self, protocol: &str, name: &str, peer: IpAddr) -> Result<Principal, Refused> {
        if self.users.credentials(name).is_none() {
            tracing::warn!(protocol, %peer, user = name, "certificate login refused: no such user");
            return Err(Refused { delay: Duration::ZERO });
        }
        if self.loopback_users.contains(name) && !is_loopback(peer) {
            tracing::warn!(protocol, %peer, user = name, "certificate login refused: loopback-only user");
            return Err(Refused { delay: Duration::ZERO });
        }
        Ok(Principal::user(name))
    }

    /// Whether `principal` may open `vhost` (`Describe` on `Vhost:<vhost>`).
    pub fn may_open_vhost(&self, principal: &Principal, peer: IpAddr, vhost: &str) -> bool {
        self.authorizer.authorize(principal, &peer.to_string(), Operation::Describe, ResourceType::Vhost, vhost)
    }

    /// Whether `principal`, in `vhost`, has `access` to the resource
    /// `(kind, name)` as the front-ends name them: `queue`, `exchange` (the
    /// default exchange `""` is `amq.default`; `kafka:<topic>` is a Kafka
    /// topic) and `topic` (a Kafka topic). Configure is the ACL operation
    /// Create, Delete is Delete, Write and Read are themselves. A Kafka
    /// topic is allowed by its `Topic:` ACLs (as from Kafka) or by the
    /// vhost's permission on the exchange `kafka:<topic>`.
    pub fn allows(
        &self,
        principal: &Principal,
        host: &str,
        vhost: &str,
        access: Access,
        kind: &str,
        name: &str,
    ) -> bool {
        let op = match access {
            Access::Configure => Operation::Create,
            Access::Delete => Operation::Delete,
            Access::Write => Operation::Write,
            Access::Read => Operation::Read,
        };
        let a = &self.authorizer;
        let topic = |t: &str| {
            a.authorize(principal, host, op, ResourceType::Topic, t)
                || a.authorize(
                    principal,
                    host,
                    op,
                    ResourceType::Exchange,
                    &resource_name(vhost, &format!("kafka:{t}")),
                )
        };
        match kind {
            "queue" => a.authorize(principal, host, op, ResourceType::Queue, &resource_name(vhost, name)),
            "exchange" => {
                if let Some(t) = name.strip_prefix("kafka:") {
                    topic(t)
                } else {
                    let name = if name.is_empty() { "amq.default" } else { name };
                    a.authorize(principal, host, op, ResourceType::Exchange, &resource_name(vhost, name))
                }
            }
            "topic" => topic(name),
            // Redis pub/sub channels are checked as exchanges of the vhost.
            "channel" => a.authorize(principal, host, op, ResourceType::Exchange, &resource_name(vhost, name)),
            _ => false,
        }
    }

    /// The check a front-end keeps for a connection of `principal` on
    /// `vhost`, `None` if it may not open the vhost.
    pub fn vhost_authorizer(
        self: &Arc<Self>,
        principal: Principal,
        peer: IpAddr,
        vhost: &str,
    ) -> Option<access::Authorizer> {
        if !self.may_open_vhost(&principal, peer, vhost) {
            tracing::warn!(%peer, %principal, vhost, "vhost access refused");
            return None;
        }
        let (gate, host, vhost) = (self.clone(), peer.to_string(), vhost.to_string());
        Some(Arc::new(move |access, kind, name| {
            let ok = gate.allows(&principal, &host, &vhost, access, kind, name);
            if !ok {
                tracing::info!(%principal, host, vhost, ?access, kind, name, "access refused");
            }
            ok
        }))
    }

    /// The login check STOMP and Redis take: a password login, then the
    /// vhost (a refused vhost is a refused login, without delay).
    pub fn authenticator(self: &Arc<Self>, protocol: &'static str) -> access::Authenticator {
        let gate = self.clone();
        Arc::new(move |user, password, peer, vhost| {
            let principal = gate.login(protocol, user, password, peer)?;
            gate.vhost_authorizer(principal, peer, vhost).ok_or(Refused { delay: Duration::ZERO })
        })
    }

    /// Whether MQTT clients (and the HTTP API) must log in: the store holds
    /// a user other than the loopback-only ones (the default `guest` is not
    /// an account for them).
    pub fn logins_required(&self) -> bool {
        self.users.user_names().iter().any(|u| !self.loopback_users.contains(u))
    }

    /// Whether `principal` is a super user (`--super-users`).
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.authorizer.is_super_user(principal)
    }

    /// An MQTT CONNECT's login: `Ok(None)` lets an anonymous client in
    /// (no login required and no user name given, or a name the store does
    /// not know while logins are not required).
    pub fn mqtt_login(
        &self,
        user: Option<&str>,
        password: Option<&[u8]>,
        peer: IpAddr,
    ) -> Result<Option<Principal>, Refused> {
        let required = self.logins_required();
        match user {
            Some(u) if required || self.users.credentials(u).is_some() => {
                let password = password.and_then(|p| std::str::from_utf8(p).ok()).unwrap_or("\u{0}invalid");
                self.login("mqtt", u, password, peer).map(Some)
            }
            _ if required => {
                tracing::warn!(protocol = "mqtt", %peer, "login refused: no user name (logins are required)");
                Err(Refused { delay: self.limiter.failed(peer, Instant::now()) })
            }
            _ => Ok(None),
        }
    }

    /// Whether MQTT topic ACLs apply: logins are required, or some
    /// `MqttTopic:` ACL exists. Otherwise every topic is open (the
    /// default single node).
    pub fn mqtt_authorization_on(&self) -> bool {
        self.logins_required() || self.acls.acls().has_type(ResourceType::MqttTopic)
    }

    /// Whether an MQTT client may `op` (Write: publish to a topic name;
    /// Read: subscribe to a filter) on `topic`. `principal` is `None` for
    /// an anonymous client (`User:ANONYMOUS`, `%u` matches nothing).
    pub fn mqtt_allows(
        &self,
        principal: Option<&Principal>,
        client_id: &str,
        host: &str,
        op: Operation,
        topic: &str,
    ) -> bool {
        if !self.mqtt_authorization_on() {
            return true;
        }
        let anonymous = Principal::anonymous();
        let who = MqttIdentity { user: principal.map(|p| p.name.as_str()), client_id };
        let p = principal.unwrap_or(&anonymous);
        let ok = self.authorizer.authorize_for(p, host, op, ResourceType::MqttTopic, topic, Some(&who));
        if !ok {
            tracing::info!(principal = %p, client_id, host, ?op, topic, "mqtt access refused");
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::super::acl::{AclBinding, AclEntry, AclSet, PatternType, Permission, ResourcePattern, WILDCARD};
    use super::super::authorizer::AuthorizerConfig;
    use super::super::vhost_permissions::vhost_acls;
    use super::*;

    fn gate(users: &[(&str, &str)], acls: Vec<AclBinding>) -> Arc<Gatekeeper> {
        let mut store = BTreeMap::new();
        for (u, p) in users {
            let c = ScramCredential::new(ScramMechanism::Sha256, p, 4096);
            store.insert(u.to_string(), BTreeMap::from([(ScramMechanism::Sha256, c)]));
        }
        let mut set = AclSet::default();
        for a in acls {
            set.insert(a);
        }
        let acls: Arc<dyn AclSource> = Arc::new(Arc::new(set));
        let authorizer = Arc::new(Authorizer::new(AuthorizerConfig::default(), acls.clone()));
        Arc::new(Gatekeeper::new(Arc::new(store), acls, authorizer, BTreeSet::from(["guest".to_string()])))
    }

    fn mqtt_acl(who: &str, filter: &str, op: Operation) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::MqttTopic,
                name: filter.into(),
                pattern_type: PatternType::MqttFilter,
            },
            entry: AclEntry {
                principal: Principal::parse(who).unwrap(),
                host: WILDCARD.into(),
                operation: op,
                permission: Permission::Allow,
            },
        }
    }

    #[test]
    fn logins_loopback_and_vhosts() {
        let app = Principal::user("app");
        let g = gate(&[("guest", "guest"), ("app", "pw")], vhost_acls(&app, "/", "", "^app-", "^app-"));
        let (lo, far): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "10.1.2.3".parse().unwrap());
        assert_eq!(g.login("amqp", "app", "pw", far), Ok(app.clone()));
        let wrong = g.login("amqp", "app", "nope", far).unwrap_err();
        assert_eq!(wrong.delay, Duration::from_millis(100));
        assert_eq!(g.login("amqp", "nobody", "pw", far).unwrap_err().delay, Duration::from_millis(250));
        assert!(g.login("amqp", "guest", "guest", lo).is_ok());
        assert!(g.login("amqp", "guest", "guest", far).is_err(), "guest is loopback-only");
        assert!(g.external("amqp", "guest", far).is_err() && g.external("amqp", "app", far).is_ok());
        assert!(g.external("amqp", "carol", lo).is_err(), "EXTERNAL needs a stored user");
        let check = g.vhost_authorizer(app.clone(), far, "/").expect("app may open /");
        assert!(check(Access::Write, "queue", "app-1") && check(Access::Read, "exchange", "app-x"));
        assert!(!check(Access::Write, "queue", "other") && !check(Access::Configure, "queue", "app-1"));
        assert!(g.vhost_authorizer(app.clone(), far, "other").is_none());
        let auth = g.authenticator("stomp");
        assert!(auth("app", "pw", far, "/").is_ok() && auth("app", "pw", far, "other").is_err());
    }

    #[test]
    fn kafka_topics_through_the_vhost_or_topic_acls() {
        let app = Principal::user("app");
        let mut acls = vhost_acls(&app, "/", "", "^kafka:orders$", "");
        acls.push(AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::Topic,
                name: "logs".into(),
                pattern_type: PatternType::Literal,
            },
            entry: AclEntry {
                principal: app.clone(),
                host: "*".into(),
                operation: Operation::Read,
                permission: Permission::Allow,
            },
        });
        let g = gate(&[("app", "pw")], acls);
        assert!(g.allows(&app, "h", "/", Access::Write, "exchange", "kafka:orders"));
        assert!(g.allows(&app, "h", "/", Access::Write, "topic", "orders"));
        assert!(g.allows(&app, "h", "/", Access::Read, "topic", "logs"));
        assert!(!g.allows(&app, "h", "/", Access::Write, "topic", "logs"));
        assert!(!g.allows(&app, "h", "/", Access::Read, "topic", "orders"));
        assert!(!g.allows(&app, "h", "/", Access::Read, "nonsense", "orders"));
    }

    #[test]
    fn mqtt_logins_and_topic_acls() {
        let far: IpAddr = "10.1.2.3".parse().unwrap();
        let open = gate(&[("guest", "guest")], Vec::new());
        assert!(!open.logins_required(), "guest alone does not turn MQTT logins on");
        assert_eq!(open.mqtt_login(None, None, far), Ok(None));
        assert!(open.mqtt_allows(None, "c", "h", Operation::Write, "any/thing"));
        assert!(open.mqtt_login(Some("guest"), Some(b"guest"), far).is_err(), "a known user is checked");

        let g = gate(
            &[("alice", "secret")],
            vec![mqtt_acl("User:*", "users/%u/#", Operation::All), mqtt_acl("User:*", "public/#", Operation::Read)],
        );
        assert!(g.mqtt_login(None, None, far).is_err(), "a user exists: logins are required");
        assert!(g.mqtt_login(Some("alice"), Some(b"bad"), far).is_err());
        let alice = g.mqtt_login(Some("alice"), Some(b"secret"), far).unwrap().unwrap();
        let may = |op, t| g.mqtt_allows(Some(&alice), "c1", "h", op, t);
        assert!(may(Operation::Write, "users/alice/x") && may(Operation::Read, "users/alice/#"));
        assert!(!may(Operation::Write, "users/bob/x") && !may(Operation::Read, "users/+/x"));
        assert!(may(Operation::Read, "public/+") && !may(Operation::Write, "public/x"));
        assert!(!may(Operation::Read, "#"), "a filter wider than the ACL is refused");
    }
}
