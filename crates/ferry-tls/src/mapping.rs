//! Client certificate subject -> principal name, as Kafka's
//! `ssl.principal.mapping.rules`: a comma-separated list of `DEFAULT` and
//! `RULE:pattern/replacement/[LU]` rules, tried in order. A rule applies
//! when its pattern matches the whole RFC 2253 subject; its replacement
//! (`$1` for groups, `\/` for a slash) gives the name, lower- or
//! upper-cased with `L` or `U`. `DEFAULT` gives the subject unchanged.
//! No rule applies: no principal (the login fails).

use regex::Regex;

use crate::TlsError;

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace { full: Regex, any: Regex, replacement: String, case: Case },
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// The configured mapping rules.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    /// Kafka's default: `DEFAULT`.
    fn default() -> Self {
        PrincipalMapper { rules: vec![Rule::Default] }
    }
}

/// Reads up to the next unescaped `/`; returns (text, rest after the `/`).
fn until_slash(s: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '/' => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Java's replacement syntax (`$1`, `\x` literal) in Rust's (`${1}`, `$$`).
fn replacement(java: &str) -> String {
    let mut out = String::new();
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(x) => out.push(x),
                None => out.push('\\'),
            },
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl PrincipalMapper {
    /// Parses the rules text (empty: `DEFAULT`).
    pub fn parse(text: &str) -> Result<PrincipalMapper, TlsError> {
        let bad = |why: &str| TlsError::Rule { rule: text.to_string(), why: why.to_string() };
        let mut rules = Vec::new();
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after).ok_or_else(|| bad("pattern not closed by '/'"))?;
                let (repl, after) = until_slash(after).ok_or_else(|| bad("replacement not closed by '/'"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                // Java accepts `\/` in the pattern; it is a plain `/`.
                let pattern = pattern.replace("\\/", "/");
                let full = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| bad(&e.to_string()))?;
                let any = Regex::new(&pattern).map_err(|e| bad(&e.to_string()))?;
                rules.push(Rule::Replace { full, any, replacement: replacement(repl), case });
                rest = after;
            } else {
                return Err(bad("expected DEFAULT or RULE:pattern/replacement/[LU]"));
            }
            // Kafka ignores text after a rule up to the comma; a typo there is
            // more likely a mistake, so it is refused.
            rest = match rest.split_once(',') {
                Some((junk, next)) if junk.trim().is_empty() => next.trim_start(),
                Some(_) => return Err(bad("unexpected text after a rule")),
                None if rest.trim().is_empty() => "",
                None => return Err(bad("unexpected text after a rule")),
            };
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name for `subject`, or `None` when no rule applies
    /// (or the result is empty).
    pub fn map(&self, subject: &str) -> Option<String> {
        for rule in &self.rules {
            let name = match rule {
                Rule::Default => subject.to_string(),
                Rule::Replace { full, any, replacement, case } => {
                    if !full.is_match(subject) {
                        continue;
                    }
                    let name = any.replace_all(subject, replacement.as_str()).into_owned();
                    match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    }
                }
            };
            return (!name.is_empty()).then_some(name);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_subject() {
        let m = PrincipalMapper::parse("").unwrap();
        assert_eq!(m.map("CN=alice,O=x").as_deref(), Some("CN=alice,O=x"));
        let m = PrincipalMapper::parse("DEFAULT").unwrap();
        assert_eq!(m.map("CN=a").as_deref(), Some("CN=a"));
    }

    #[test]
    fn kafka_documentation_examples() {
        // From Kafka's security documentation.
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            m.map("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").unwrap(),
            "serviceuser"
        );
        assert_eq!(m.map("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").unwrap(), "adminuser@admin");
        assert_eq!(m.map("CN=Bob.Smith,O=x").unwrap(), "bob.smith");
        assert_eq!(m.map("OU=nothing").unwrap(), "OU=nothing");
    }

    #[test]
    fn no_matching_rule_is_no_principal() {
        let m = PrincipalMapper::parse("RULE:^CN=([a-z]+)$/$1/U").unwrap();
        assert_eq!(m.map("CN=carol").as_deref(), Some("CAROL"));
        assert_eq!(m.map("CN=carol,O=x"), None);
        // A pattern that matches but maps to nothing gives no principal.
        let m = PrincipalMapper::parse("RULE:^CN=(.*)$/$1/").unwrap();
        assert_eq!(m.map("CN="), None);
    }

    #[test]
    fn escapes_commas_and_spaces() {
        let m = PrincipalMapper::parse(" RULE:^CN=([^,]*),O=a\\/b$/user\\/$1/ , DEFAULT ").unwrap();
        assert_eq!(m.map("CN=dan,O=a/b").as_deref(), Some("user/dan"));
        assert_eq!(m.map("CN=dan").as_deref(), Some("CN=dan"));
    }

    #[test]
    fn malformed_rules_are_errors() {
        for bad in ["RULE:abc", "RULE:abc/def", "RULE:(/x/", "NOPE", "DEFAULT junk", "RULE:a/b/Lx"] {
            assert!(PrincipalMapper::parse(bad).is_err(), "{bad}");
        }
    }
}
