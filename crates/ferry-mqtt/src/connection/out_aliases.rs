//! Topic aliases on the PUBLISHes the broker sends (MQTT 5 §3.3.2.3.4): the
//! first PUBLISH to a topic carries the full name and a new alias, later ones
//! the alias and an empty name. Aliases live as long as the connection, up
//! to the Topic Alias Maximum of the client's CONNECT; once they are all
//! assigned, new topics go out by name only (a mapping is never replaced, so
//! no PUBLISH can be read against a stale one).

use std::collections::HashMap;
use std::sync::Arc;

/// How one PUBLISH names its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AliasUse {
    /// Full name, no alias.
    Name,
    /// Full name with an alias not yet assigned: once the PUBLISH goes out,
    /// [`OutAliases::assigned`] records it.
    Assign(u16),
    /// Empty name, the alias assigned earlier.
    Alias(u16),
}

impl AliasUse {
    /// The Topic Alias property to send.
    pub(super) fn property(self) -> Option<u16> {
        match self {
            AliasUse::Name => None,
            AliasUse::Assign(a) | AliasUse::Alias(a) => Some(a),
        }
    }
}

/// One connection's outbound aliases.
#[derive(Debug, Default)]
pub(super) struct OutAliases {
    /// Aliases the client accepts; 0: none.
    max: u16,
    by_topic: HashMap<Arc<str>, u16>,
}

impl OutAliases {
    pub(super) fn new(max: u16) -> Self {
        OutAliases { max, by_topic: HashMap::new() }
    }

    /// How the next PUBLISH to `topic` names it.
    pub(super) fn pick(&self, topic: &str) -> AliasUse {
        if let Some(&a) = self.by_topic.get(topic) {
            return AliasUse::Alias(a);
        }
        // Aliases are 1..=max, assigned in order.
        match u16::try_from(self.by_topic.len() + 1) {
            Ok(next) if next <= self.max => AliasUse::Assign(next),
            _ => AliasUse::Name,
        }
    }

    /// A PUBLISH carrying `topic` and alias `a` went out.
    pub(super) fn assigned(&mut self, topic: Arc<str>, a: u16) {
        self.by_topic.insert(topic, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_assigned_on_first_use_up_to_the_maximum() {
        let mut a = OutAliases::new(2);
        assert_eq!(a.pick("x"), AliasUse::Assign(1));
        // Not sent (too large, say): not assigned.
        assert_eq!(a.pick("x"), AliasUse::Assign(1));
        a.assigned("x".into(), 1);
        assert_eq!(a.pick("x"), AliasUse::Alias(1));
        assert_eq!(a.pick("y"), AliasUse::Assign(2));
        a.assigned("y".into(), 2);
        assert_eq!(a.pick("z"), AliasUse::Name);
        assert_eq!((a.pick("x"), a.pick("y")), (AliasUse::Alias(1), AliasUse::Alias(2)));
        assert_eq!(AliasUse::Name.property(), None);
        assert_eq!(OutAliases::new(0).pick("x"), AliasUse::Name);
    }
}
