//! RabbitMQ's permission patterns: the subset of regular expressions its
//! `set_permissions` users write (`^app-.*`, `^amq\.gen.*|^orders$`),
//! matched as RabbitMQ does. The ACL pattern type
//! [`PatternType::Regex`](super::PatternType) uses it for the RabbitMQ
//! permissions that are not a plain prefix or name.

/// Permission patterns: a subset of the regular expressions RabbitMQ uses,
/// matched as RabbitMQ does (unanchored unless `^` / `$` are given):
/// alternatives `|`, `.` (any character), `.*`, `\` escapes, anchors.
/// The empty pattern matches nothing.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    if pattern == ".*" {
        return true;
    }
    pattern.split('|').any(|alt| alternative_matches(alt, name))
}

#[derive(Clone, Copy, Debug)]
enum Tok {
    Lit(char),
    Any,
    AnyStar,
}

fn alternative_matches(alt: &str, name: &str) -> bool {
    let mut chars = alt.chars().peekable();
    let mut toks = Vec::new();
    let start_anchor = chars.peek() == Some(&'^');
    if start_anchor {
        chars.next();
    }
    if !start_anchor {
        toks.push(Tok::AnyStar);
    }
    let mut end_anchor = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => toks.push(Tok::Lit(chars.next().unwrap_or('\\'))),
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                toks.push(Tok::AnyStar);
            }
            '.' => toks.push(Tok::Any),
            '$' if chars.peek().is_none() => end_anchor = true,
            c => toks.push(Tok::Lit(c)),
        }
    }
    if !end_anchor {
        toks.push(Tok::AnyStar);
    }
    let name: Vec<char> = name.chars().collect();
    glob(&toks, &name)
}

fn glob(toks: &[Tok], s: &[char]) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::AnyStar, rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((Tok::Any, rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((Tok::Lit(c), rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_patterns() {
        assert!(pattern_matches(".*", "anything"));
        assert!(pattern_matches(".*", ""));
        assert!(!pattern_matches("", "x"));
        assert!(pattern_matches("^app-.*", "app-1"));
        assert!(!pattern_matches("^app-.*", "myapp-1"));
        assert!(pattern_matches("app", "myapp1"));
        assert!(pattern_matches("^(?:x)$|^orders$", "orders"));
        assert!(!pattern_matches("^orders$", "orders2"));
        assert!(pattern_matches("^amq\\.gen.*", "amq.gen-x"));
        assert!(!pattern_matches("^amq\\.gen.*", "amqxgen-x"));
    }
}
