//! The one authorizer: every protocol asks it whether a principal,
//! connecting from a host, may carry out an operation on a resource.
//! Rules, in order (Kafka's `StandardAuthorizer`): a super user may do
//! anything; a matching DENY refuses; a matching ALLOW (with the implied
//! operations) grants; a resource no ACL names at all is granted only with
//! `allow_everyone_if_no_acl_found` (off by default); else refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::acl::{AclSet, Operation, Permission, ResourceType, WILDCARD};
use super::mqtt_filter::MqttIdentity;
use super::principal::Principal;

/// Where the authorizer reads the current ACLs (the metadata image).
pub trait AclSource: Send + Sync {
    /// The ACLs now.
    fn acls(&self) -> Arc<AclSet>;
}

impl AclSource for crate::Broker {
    fn acls(&self) -> Arc<AclSet> {
        self.metadata().acls.clone()
    }
}

/// A fixed set of ACLs (tests, tools).
impl AclSource for Arc<AclSet> {
    fn acls(&self) -> Arc<AclSet> {
        self.clone()
    }
}

/// The authorizer's settings.
#[derive(Clone, Debug, Default)]
pub struct AuthorizerConfig {
    /// Principals allowed everything (`--super-users`).
    pub super_users: BTreeSet<Principal>,
    /// Kafka's `allow.everyone.if.no.acl.found` (default false).
    pub allow_everyone_if_no_acl_found: bool,
}

/// The one authorizer.
pub struct Authorizer {
    config: AuthorizerConfig,
    source: Arc<dyn AclSource>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer reading ACLs from `source`.
    pub fn new(config: AuthorizerConfig, source: Arc<dyn AclSource>) -> Authorizer {
        Authorizer { config, source }
    }

    /// Whether `principal` is a super user.
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.config.super_users.contains(principal)
    }

    /// Whether `principal` from `host` (an IP address as text) may carry
    /// out `operation` on the resource `name` of `resource_type`.
    pub fn authorize(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.authorize_for(principal, host, operation, resource_type, name, None)
    }

    /// [`Authorizer::authorize`] for an MQTT client: `who` fills `%u` and
    /// `%c` of MQTT filter patterns.
    pub fn authorize_for(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        who: Option<&MqttIdentity<'_>>,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let acls = self.source.acls();
        let mut any = false;
        let mut allowed = false;
        for b in acls.on_resource_for(resource_type, name, who) {
            any = true;
            if !b.entry.applies_to(principal, host) {
                continue;
            }
            match b.entry.permission {
                Permission::Deny if b.entry.operation.deny_implies(operation) => return false,
                Permission::Allow if b.entry.operation.allow_implies(operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any && self.config.allow_everyone_if_no_acl_found)
    }

    /// Whether `principal` may carry out `operation` on at least one
    /// resource of `resource_type` (Kafka's `authorizeByResourceType`, as
    /// KIP-679 uses for idempotent producers): some ALLOW binding for it,
    /// unless a DENY on the wildcard `*` refuses every resource.
    pub fn authorize_any(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let acls = self.source.acls();
        let mut allowed = false;
        for b in acls.iter().filter(|b| b.pattern.resource_type == resource_type) {
            if !b.entry.applies_to(principal, host) {
                continue;
            }
            match b.entry.permission {
                Permission::Deny
                    if b.entry.operation.deny_implies(operation)
                        && b.pattern.name == WILDCARD
                        && b.pattern.pattern_type == super::acl::PatternType::Literal =>
                {
                    return false;
                }
                Permission::Allow if b.entry.operation.allow_implies(operation) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::super::acl::{AclBinding, AclEntry, PatternType, ResourcePattern};
    use super::*;
    use Operation::*;
    use ResourceType::*;

    fn acl(
        t: ResourceType,
        name: &str,
        pt: PatternType,
        who: &str,
        host: &str,
        op: Operation,
        allow: bool,
    ) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern { resource_type: t, name: name.into(), pattern_type: pt },
            entry: AclEntry {
                principal: Principal::parse(who).unwrap(),
                host: host.into(),
                operation: op,
                permission: if allow { Permission::Allow } else { Permission::Deny },
            },
        }
    }

    fn authorizer(acls: Vec<AclBinding>, supers: &[&str], allow_if_none: bool) -> Authorizer {
        let mut set = AclSet::default();
        for a in acls {
            set.insert(a);
        }
        let config = AuthorizerConfig {
            super_users: supers.iter().map(|s| Principal::parse(s).unwrap()).collect(),
            allow_everyone_if_no_acl_found: allow_if_none,
        };
        Authorizer::new(config, Arc::new(Arc::new(set)))
    }

    #[test]
    fn literal_prefixed_wildcard_and_deny_wins() {
        let (alice, bob) = (Principal::user("alice"), Principal::user("bob"));
        let a = authorizer(
            vec![
                acl(Topic, "orders", PatternType::Literal, "User:alice", "*", Write, true),
                acl(Topic, "logs-", PatternType::Prefixed, "User:alice", "*", Read, true),
                acl(Topic, "*", PatternType::Literal, "User:bob", "*", Read, true),
                acl(Topic, "secret", PatternType::Literal, "User:bob", "*", Read, false),
                acl(Group, "g", PatternType::Literal, "User:*", "10.0.0.1", Read, true),
            ],
            &[],
            false,
        );
        let h = "127.0.0.1";
        assert!(a.authorize(&alice, h, Write, Topic, "orders"));
        assert!(!a.authorize(&alice, h, Read, Topic, "orders"), "write does not grant read");
        assert!(a.authorize(&alice, h, Describe, Topic, "orders"), "write implies describe");
        assert!(a.authorize(&alice, h, Read, Topic, "logs-app"));
        assert!(!a.authorize(&alice, h, Read, Topic, "log"));
        assert!(a.authorize(&bob, h, Read, Topic, "anything"));
        assert!(!a.authorize(&bob, h, Read, Topic, "secret"), "deny beats the wildcard allow");
        assert!(a.authorize(&bob, h, Describe, Topic, "secret"), "a denied read does not deny describe");
        assert!(!a.authorize(&bob, h, Read, Group, "g"), "wrong host");
        assert!(a.authorize(&bob, "10.0.0.1", Read, Group, "g"), "User:* from the host");
        assert!(!a.authorize(&alice, h, Create, Cluster, "kafka-cluster"));
        assert!(a.authorize_any(&alice, h, Write, Topic));
        assert!(!a.authorize_any(&alice, h, Write, TransactionalId));
    }

    #[test]
    fn super_users_and_no_acl_found() {
        let a = authorizer(
            vec![acl(Topic, "named", PatternType::Literal, "User:x", "*", Read, true)],
            &["User:admin"],
            false,
        );
        let admin = Principal::user("admin");
        assert!(a.authorize(&admin, "h", Delete, Topic, "named") && a.authorize(&admin, "h", Alter, Cluster, "c"));
        assert!(!a.authorize(&Principal::anonymous(), "h", Read, Topic, "unnamed"), "default: refused");
        let open = authorizer(vec![acl(Topic, "named", PatternType::Literal, "User:x", "*", Read, true)], &[], true);
        assert!(open.authorize(&Principal::anonymous(), "h", Read, Topic, "unnamed"));
        assert!(
            !open.authorize(&Principal::anonymous(), "h", Read, Topic, "named"),
            "named resources follow their ACLs"
        );
        let deny_all = authorizer(
            vec![
                acl(Topic, "*", PatternType::Literal, "User:x", "*", All, false),
                acl(Topic, "t", PatternType::Literal, "User:x", "*", Write, true),
            ],
            &[],
            false,
        );
        let x = Principal::user("x");
        assert!(!deny_all.authorize(&x, "h", Write, Topic, "t"));
        assert!(!deny_all.authorize_any(&x, "h", Write, Topic));
    }
}
