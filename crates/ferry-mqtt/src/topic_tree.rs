//! Topic filters over `/`-separated topic names, as MQTT defines them
//! (`+` one level, `#` the rest, topics starting with `$` not matched by a
//! leading wildcard), and a subscription index: a trie over filter levels
//! matched once per message. Generic over what a subscription carries, so
//! any protocol with hierarchical topics can use it.

use std::collections::HashMap;
use std::hash::Hash;

/// Whether `filter` is a valid topic filter (`#` only last and alone in its
/// level, `+` alone in its level, no NUL, not empty).
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > u16::MAX as usize || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// Whether `name` is a valid topic name (no wildcards, no NUL, not empty).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= u16::MAX as usize && !name.contains(['+', '#', '\0'])
}

/// Whether topic `name` matches `filter`.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Subscriptions by filter: `K` identifies a subscriber (one entry per
/// subscriber and filter), `V` is what the subscription carries.
pub struct TopicTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    subs: HashMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node { children: HashMap::new(), subs: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone, V> Default for TopicTree<K, V> {
    fn default() -> Self {
        TopicTree { root: Node::default(), len: 0 }
    }
}

impl<K: Hash + Eq + Clone, V> TopicTree<K, V> {
    /// Adds or replaces `key`'s subscription to `filter`; returns the old one.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let old = node.subs.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`'s subscription to `filter`, pruning empty branches.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let levels: Vec<&str> = filter.split('/').collect();
        let old = remove_at(&mut self.root, &levels, key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Calls `f` with (key, value) of every subscription matching topic `name`.
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(&K, &V)) {
        let levels: Vec<&str> = name.split('/').collect();
        let dollar = name.starts_with('$');
        visit(&self.root, &levels, 0, dollar, &mut f);
    }

    /// Subscriptions in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn remove_at<K: Hash + Eq, V>(node: &mut Node<K, V>, levels: &[&str], key: &K) -> Option<V> {
    let Some((first, rest)) = levels.split_first() else { return node.subs.remove(key) };
    let child = node.children.get_mut(*first)?;
    let old = remove_at(child, rest, key);
    if child.subs.is_empty() && child.children.is_empty() {
        node.children.remove(*first);
    }
    old
}

fn visit<K, V>(node: &Node<K, V>, levels: &[&str], depth: usize, dollar: bool, f: &mut impl FnMut(&K, &V)) {
    let wild_ok = !(dollar && depth == 0);
    if wild_ok && let Some(all) = node.children.get("#") {
        all.subs.iter().for_each(|(k, v)| f(k, v));
    }
    let Some((first, rest)) = levels.split_first() else {
        node.subs.iter().for_each(|(k, v)| f(k, v));
        return;
    };
    if let Some(exact) = node.children.get(*first) {
        visit(exact, rest, depth + 1, dollar, f);
    }
    if wild_ok && let Some(one) = node.children.get("+") {
        visit(one, rest, depth + 1, dollar, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        for (filter, name, want) in [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/x", true),
            ("+", "", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b/", false),
        ] {
            assert_eq!(matches(filter, name), want, "{filter} vs {name}");
        }
        assert!(valid_filter("a/+/#") && valid_filter("#") && valid_filter("+") && valid_filter("/"));
        assert!(!valid_filter("a/#/b") && !valid_filter("a#") && !valid_filter("a/b+") && !valid_filter(""));
        assert!(valid_name("a/b") && !valid_name("a/+") && !valid_name(""));
    }

    #[test]
    fn the_tree_agrees_with_matches() {
        let filters = ["a/b", "a/+", "a/#", "#", "+/b", "+/+/c", "$SYS/#", "+", "a/b/c", "/", "+/"];
        let names = ["a/b", "a", "a/b/c", "x/b", "$SYS/up", "$SYS", "/", "a/", "q/w/c"];
        let mut tree = TopicTree::default();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(f, i, *f);
        }
        assert_eq!(tree.len(), filters.len());
        for name in names {
            let mut got = Vec::new();
            tree.for_each_match(name, |_, f| got.push(*f));
            got.sort();
            let mut want: Vec<&str> = filters.iter().copied().filter(|f| matches(f, name)).collect();
            want.sort();
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(tree.remove("a/#", &2), Some("a/#"));
        assert_eq!(tree.remove("a/#", &2), None);
        let mut got = 0;
        tree.for_each_match("a/b/c", |_, _| got += 1);
        assert_eq!(got, 3, "#, +/+/c and a/b/c");
    }
}
