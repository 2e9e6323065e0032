//! Exchanges and bindings: where a published message goes.
//!
//! Routing is protocol-neutral: a message is routed by its exchange, its
//! routing key and its headers (as [`HeaderValue`]s). Matching is a scan of
//! the exchange's bindings; topic patterns are matched word by word.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A message header or argument value, as far as routing and queue
/// arguments care. Front-ends convert their own typed values into this.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HeaderValue {
    /// A UTF-8 string (AMQP longstr / shortstr).
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Any integer type, widened.
    Int(i64),
    /// Any floating-point type, widened.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A value with no content (AMQP's void); in a headers binding it
    /// matches any value of the header.
    Void,
    /// Anything else (tables, arrays, decimals): never equal to a binding value.
    Other,
}

impl HeaderValue {
    /// The value as an integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            HeaderValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::Str(s) => Some(s),
            HeaderValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Equality as a headers exchange applies it: strings and byte strings
    /// compare by content, numbers by value.
    fn matches(&self, other: &HeaderValue) -> bool {
        match (self, other) {
            (HeaderValue::Void, _) => true,
            (HeaderValue::Other, _) | (_, HeaderValue::Other) => false,
            (HeaderValue::Int(a), HeaderValue::Float(b)) | (HeaderValue::Float(b), HeaderValue::Int(a)) => {
                (*a as f64) == *b
            }
            (a, b) => match (a.as_str(), b.as_str()) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
        }
    }
}

/// Header or argument table.
pub type Headers = BTreeMap<String, HeaderValue>;

/// How an exchange matches bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExchangeKind {
    /// Routes to bindings whose key equals the routing key.
    Direct,
    /// Routes to every binding, ignoring the key.
    Fanout,
    /// Routes by pattern: `*` matches one dot-separated word, `#` zero or more.
    Topic,
    /// Routes by the message headers against each binding's `x-match` arguments.
    Headers,
}

impl ExchangeKind {
    /// Parses AMQP's exchange type names.
    pub fn parse(name: &str) -> Option<ExchangeKind> {
        Some(match name {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    /// The AMQP exchange type name (`direct`, `fanout`, `topic`, `headers`).
    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// What a binding points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// Another exchange, by name (exchange-to-exchange binding).
    Exchange(String),
    /// A Kafka topic (see `messaging::kafka_link`).
    Topic(String),
}

/// One binding of an exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// Where matching messages go.
    pub destination: Destination,
    /// Key or pattern matched against the routing key (unused by fanout and headers).
    pub routing_key: String,
    /// Binding arguments; for headers exchanges, `x-match` and the headers to match.
    pub arguments: Headers,
}

/// An exchange's definition and its outgoing bindings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Exchange name; empty is the default exchange.
    pub name: String,
    /// How bindings are matched.
    pub kind: ExchangeKind,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding is removed.
    pub auto_delete: bool,
    /// Clients may not publish to it directly; only other exchanges route to it.
    pub internal: bool,
    /// Declaration arguments (e.g. `alternate-exchange`).
    pub arguments: Headers,
    /// Outgoing bindings, in creation order.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// An `x-delayed-message` exchange (routing by `kind`, its
    /// `x-delayed-type`): messages with an `x-delay` wait before routing.
    #[serde(default)]
    pub delayed: bool,
}

impl Exchange {
    /// Whether `binding` selects a message with this routing key and headers.
    pub fn matches(&self, binding: &Binding, routing_key: &str, headers: &Headers) -> bool {
        match self.kind {
            ExchangeKind::Direct => binding.routing_key == routing_key,
            ExchangeKind::Fanout => true,
            ExchangeKind::Topic => topic_matches(&binding.routing_key, routing_key),
            ExchangeKind::Headers => headers_match(&binding.arguments, headers),
        }
    }

    /// The `alternate-exchange` argument.
    pub fn alternate(&self) -> Option<&str> {
        self.arguments.get("alternate-exchange").and_then(HeaderValue::as_str)
    }
}

/// AMQP topic matching: words separated by `.`; `*` matches exactly one
/// word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    // reachable[j]: the pattern prefix so far can consume exactly j words.
    let mut reachable = vec![false; k.len() + 1];
    reachable[0] = true;
    for word in &p {
        let mut next = vec![false; k.len() + 1];
        for j in 0..=k.len() {
            if !reachable[j] {
                continue;
            }
            match *word {
                "#" => {
                    for slot in next.iter_mut().skip(j) {
                        *slot = true;
                    }
                }
                "*" => {
                    if j < k.len() {
                        next[j + 1] = true;
                    }
                }
                w => {
                    if j < k.len() && k[j] == w {
                        next[j + 1] = true;
                    }
                }
            }
        }
        reachable = next;
    }
    reachable[k.len()]
}

/// Headers exchange matching: `x-match` = `all` (default) or `any`;
/// arguments starting with `x-` are not matched unless `all-with-x` /
/// `any-with-x` is asked for.
pub fn headers_match(binding: &Headers, headers: &Headers) -> bool {
    let mode = binding.get("x-match").and_then(HeaderValue::as_str).unwrap_or("all");
    let (any, with_x) = match mode {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let mut wanted = binding.iter().filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.starts_with("x-")));
    let hit = |(k, v): (&String, &HeaderValue)| headers.get(k).is_some_and(|h| v.matches(h));
    if any { wanted.any(hit) } else { wanted.all(hit) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_wildcards() {
        assert!(topic_matches("a.b.c", "a.b.c"));
        assert!(!topic_matches("a.b.c", "a.b"));
        assert!(topic_matches("a.*.c", "a.x.c"));
        assert!(!topic_matches("a.*.c", "a.c"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#", "x.y"));
        assert!(topic_matches("#.c", "c"));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("#.c", "a.b.d"));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(topic_matches("*.#.*", "a.b"));
        assert!(!topic_matches("*.#.*", "a"));
        assert!(topic_matches("#.#", "a.b"));
        assert!(!topic_matches("stock.*", "stock"));
        assert!(topic_matches("", ""));
        assert!(!topic_matches("", "a"));
    }

    fn h(pairs: &[(&str, HeaderValue)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn headers_all_and_any() {
        let s = |x: &str| HeaderValue::Str(x.into());
        let all = h(&[("x-match", s("all")), ("format", s("pdf")), ("type", s("report"))]);
        let any = h(&[("x-match", s("any")), ("format", s("pdf")), ("type", s("report"))]);
        let msg = h(&[("format", HeaderValue::Bytes(b"pdf".to_vec())), ("type", s("log"))]);
        assert!(!headers_match(&all, &msg));
        assert!(headers_match(&any, &msg));
        let full = h(&[("format", s("pdf")), ("type", s("report")), ("extra", HeaderValue::Int(1))]);
        assert!(headers_match(&all, &full));
        assert!(!headers_match(&any, &h(&[])));
        assert!(headers_match(&h(&[("n", HeaderValue::Int(3))]), &h(&[("n", HeaderValue::Int(3))])));
        assert!(!headers_match(&h(&[("n", HeaderValue::Int(3))]), &h(&[("n", HeaderValue::Int(4))])));
        assert!(headers_match(&h(&[("n", HeaderValue::Void)]), &h(&[("n", HeaderValue::Int(4))])));
        // x- arguments are not matched by default.
        assert!(headers_match(&h(&[("x-foo", s("1"))]), &h(&[])));
        assert!(!headers_match(&h(&[("x-match", s("all-with-x")), ("x-foo", s("1"))]), &h(&[])));
    }
}
