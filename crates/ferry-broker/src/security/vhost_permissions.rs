//! RabbitMQ's per-vhost permissions (configure / write / read regexes) as
//! ACLs on the one model (docs/security.md, "AMQP, STOMP and Redis"):
//! opening the vhost is `Describe` on `Vhost:<vhost>`; configure is
//! `Create` and `Delete`, write is `Write`, read is `Read` on
//! `Queue:<vhost>/<queue>` and `Exchange:<vhost>/<exchange>`. A regex that
//! is a name or a prefix becomes a literal or prefixed pattern; any other
//! becomes a [`PatternType::Regex`] over the whole `vhost/name`.

use super::acl::{AclBinding, AclEntry, Operation, PatternType, Permission, ResourcePattern, ResourceType, WILDCARD};
use super::principal::Principal;

/// The name of a queue or exchange resource: `vhost/name`.
pub fn resource_name(vhost: &str, name: &str) -> String {
    format!("{vhost}/{name}")
}

/// The ALLOW bindings that give `principal` RabbitMQ's permissions
/// `(configure, write, read)` on `vhost`.
pub fn vhost_acls(principal: &Principal, vhost: &str, configure: &str, write: &str, read: &str) -> Vec<AclBinding> {
    let allow = |resource_type, name: String, pattern_type, operation| AclBinding {
        pattern: ResourcePattern { resource_type, name, pattern_type },
        entry: AclEntry {
            principal: principal.clone(),
            host: WILDCARD.into(),
            operation,
            permission: Permission::Allow,
        },
    };
    let mut out = vec![allow(ResourceType::Vhost, vhost.to_string(), PatternType::Literal, Operation::Describe)];
    for (regex, ops) in [
        (configure, &[Operation::Create, Operation::Delete][..]),
        (write, &[Operation::Write][..]),
        (read, &[Operation::Read][..]),
    ] {
        let Some((name, pattern_type)) = pattern_of(vhost, regex) else { continue };
        for t in [ResourceType::Queue, ResourceType::Exchange] {
            for op in ops {
                out.push(allow(t, name.clone(), pattern_type, *op));
            }
        }
    }
    out
}

/// The pattern over `vhost/name` that matches what `regex` matches in the
/// vhost; `None` for the empty regex (RabbitMQ: nothing).
fn pattern_of(vhost: &str, regex: &str) -> Option<(String, PatternType)> {
    if regex.is_empty() {
        return None;
    }
    if regex == ".*" || regex == "^.*" || regex == "^" {
        return Some((resource_name(vhost, ""), PatternType::Prefixed));
    }
    if let Some(anchored) = regex.strip_prefix('^') {
        let (body, end) = match anchored.strip_suffix('$') {
            Some(b) if !b.ends_with('\\') => (b, true),
            _ => (anchored.strip_suffix(".*").unwrap_or(anchored), false),
        };
        if let Some(literal) = unescape_literal(body) {
            let t = if end { PatternType::Literal } else { PatternType::Prefixed };
            return Some((resource_name(vhost, &literal), t));
        }
    }
    // Every alternative anchored at the start of the name inside the vhost.
    let prefix = format!("^{}/", escape(vhost));
    let alternatives: Vec<String> = regex
        .split('|')
        .map(|alt| match alt.strip_prefix('^') {
            Some(rest) => format!("{prefix}{rest}"),
            None => format!("{prefix}.*{alt}"),
        })
        .collect();
    Some((alternatives.join("|"), PatternType::Regex))
}

/// The text `body` matches exactly, if it has no regex operators.
fn unescape_literal(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '.' | '*' | '|' | '^' | '$' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '\\' | '.' | '*' | '|' | '^' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(acls: &[AclBinding], t: ResourceType, op: Operation, name: &str) -> bool {
        acls.iter().any(|b| b.entry.operation == op && b.pattern.matches(t, name))
    }

    #[test]
    fn rabbitmq_permissions_become_acls() {
        let p = Principal::user("app");
        let acls = vhost_acls(&p, "/", "^app-", "^amq\\.default$|^app-", ".*");
        assert!(allows(&acls, ResourceType::Vhost, Operation::Describe, "/"));
        assert!(!allows(&acls, ResourceType::Vhost, Operation::Describe, "other"));
        assert!(allows(&acls, ResourceType::Queue, Operation::Create, "//app-1"));
        assert!(allows(&acls, ResourceType::Exchange, Operation::Delete, "//app-x"));
        assert!(!allows(&acls, ResourceType::Queue, Operation::Create, "//my-app-1"));
        assert!(allows(&acls, ResourceType::Exchange, Operation::Write, "//amq.default"));
        assert!(!allows(&acls, ResourceType::Exchange, Operation::Write, "//amqxdefault"));
        assert!(allows(&acls, ResourceType::Queue, Operation::Write, "//app-q"));
        assert!(allows(&acls, ResourceType::Queue, Operation::Read, "//anything"));
        assert!(!allows(&acls, ResourceType::Queue, Operation::Read, "other/anything"), "only this vhost");
        let literal = vhost_acls(&p, "v", "", "^orders$", "^logs.*");
        assert!(literal.iter().any(|b| b.pattern.pattern_type == PatternType::Literal && b.pattern.name == "v/orders"));
        assert!(literal.iter().any(|b| b.pattern.pattern_type == PatternType::Prefixed && b.pattern.name == "v/logs"));
        assert!(!literal.iter().any(|b| b.entry.operation == Operation::Create), "empty configure: nothing");
        let unanchored = vhost_acls(&p, "a.b", "", "tmp", "");
        assert!(allows(&unanchored, ResourceType::Queue, Operation::Write, "a.b/x-tmp-y"));
        assert!(!allows(&unanchored, ResourceType::Queue, Operation::Write, "axb/x-tmp-y"), "the vhost is escaped");
    }
}
