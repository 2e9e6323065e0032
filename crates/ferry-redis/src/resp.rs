//! The RESP2 / RESP3 codec: requests in (multibulk arrays of bulk strings,
//! or inline commands as telnet users type them), replies out in the
//! protocol version the connection chose with HELLO.
//!
//! The decoder parses from the start of the buffered bytes each time more
//! arrive and returns `Ok(None)` until a whole command is there; a bulk
//! string is only looked at once its announced length has arrived, so a
//! big value arriving in pieces costs one length check per read. Every
//! length is bounded by [`Limits`] before anything is allocated: a bad or
//! hostile length is a [`ProtocolError`] (answered with
//! `-ERR Protocol error: ...` and a closed connection, as Redis does).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes of one bulk string (Redis: `proto-max-bulk-len`, 512 MB).
    pub max_bulk: usize,
    /// Most elements of one array (Redis allows 2^31; we stop far earlier).
    pub max_array: usize,
    /// Deepest nesting of aggregates.
    pub max_depth: usize,
    /// Longest inline command line (Redis: 64 KB).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk: 64 << 20, max_array: 1 << 20, max_depth: 32, max_inline: 64 << 10 }
    }
}

/// Input that is not RESP, or breaks a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// A decoded RESP value (what a client may send; RESP3 types included so
/// the fuzz target and tests cover the whole grammar).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+text`
    Simple(Bytes),
    /// `-text`
    Error(Bytes),
    /// `:n`
    Int(i64),
    /// `$n` bulk string, or `=n` verbatim string.
    Bulk(Bytes),
    /// `$-1`, `*-1` or `_`.
    Null,
    /// `*n` array, `~n` set or `>n` push.
    Array(Vec<Value>),
    /// `%n` map.
    Map(Vec<(Value, Value)>),
    /// `#t` / `#f`
    Bool(bool),
    /// `,float` (kept as text) or `(big number`.
    Number(Bytes),
}

/// Takes one command (its arguments) off the front of `buf`, or `None`
/// if more bytes are needed. Inline commands are split on whitespace with
/// Redis's quoting rules for `"..."` and `'...'`.
pub fn decode_command(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else { return Ok(None) };
        if first == b'*' {
            let Some((value, used)) = parse(buf, 0, limits)? else { return Ok(None) };
            buf.advance(used);
            let Value::Array(items) = value else {
                // `*-1`: an empty command, ignored as Redis does.
                continue;
            };
            let mut args = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Bulk(b) => args.push(b),
                    _ => return err("expected '$'"),
                }
            }
            if args.is_empty() {
                continue;
            }
            return Ok(Some(args));
        }
        let Some(end) = find_crlf_or_lf(buf, limits.max_inline)? else { return Ok(None) };
        let line = buf.split_to(end.1).freeze();
        let args = split_inline(&line[..end.0])?;
        if args.is_empty() {
            continue;
        }
        return Ok(Some(args));
    }
}

/// Parses one value (any RESP3 type) at the start of `buf`: the value and
/// the bytes it took, or `None` if incomplete.
pub fn parse(buf: &[u8], depth: usize, limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
    if depth > limits.max_depth {
        return err("too deeply nested");
    }
    let Some(line_end) = find_crlf(buf, 1 << 16)? else { return Ok(None) };
    let Some(&tag) = buf.first().filter(|_| line_end > 0) else { return err("unknown type byte '\\r'") };
    let line = &buf[1..line_end];
    let mut pos = line_end + 2;
    let value = match tag {
        b'+' => Value::Simple(Bytes::copy_from_slice(line)),
        b'-' => Value::Error(Bytes::copy_from_slice(line)),
        b':' => Value::Int(number(line, "invalid integer")?),
        b',' | b'(' => Value::Number(Bytes::copy_from_slice(line)),
        b'_' if line.is_empty() => Value::Null,
        b'#' => match line {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => return err("invalid boolean"),
        },
        b'$' | b'=' | b'!' => {
            let n = number(line, "invalid bulk length")?;
            if n == -1 && tag == b'$' {
                Value::Null
            } else {
                let n = usize::try_from(n).ok().filter(|&n| n <= limits.max_bulk);
                let Some(n) = n else { return err("invalid bulk length") };
                if buf.len() < pos.saturating_add(n).saturating_add(2) {
                    return Ok(None);
                }
                if &buf[pos + n..pos + n + 2] != b"\r\n" {
                    return err("bulk string not terminated by CRLF");
                }
                let b = Bytes::copy_from_slice(&buf[pos..pos + n]);
                pos += n + 2;
                if tag == b'!' { Value::Error(b) } else { Value::Bulk(b) }
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = number(line, "invalid multibulk length")?;
            if n == -1 && tag == b'*' {
                Value::Null
            } else {
                let n = usize::try_from(n).ok().filter(|&n| n <= limits.max_array);
                let Some(n) = n else { return err("invalid multibulk length") };
                let count = if tag == b'%' { n.saturating_mul(2) } else { n };
                // Every element takes at least 3 bytes: no allocation past what arrived.
                let mut items = Vec::with_capacity(count.min(buf.len() / 3));
                for _ in 0..count {
                    let Some((v, used)) = parse(&buf[pos..], depth + 1, limits)? else { return Ok(None) };
                    pos += used;
                    items.push(v);
                }
                if tag == b'%' {
                    let mut pairs = Vec::with_capacity(n);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                } else {
                    Value::Array(items)
                }
            }
        }
        other => return err(format!("unknown type byte '{}'", other.escape_ascii())),
    };
    Ok(Some((value, pos)))
}

fn number(line: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).map_or_else(|| err(what), Ok)
}

/// Where the first CRLF starts; a line longer than `max` is an error.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match buf.windows(2).take(max + 1).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(i)),
        None if buf.len() > max => err("too big line"),
        None => Ok(None),
    }
}

/// An inline line's end: (end of content, end including the terminator).
fn find_crlf_or_lf(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
    match buf.iter().take(max + 1).position(|&b| b == b'\n') {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some((i - 1, i + 1))),
        Some(i) => Ok(Some((i, i + 1))),
        None if buf.len() > max => err("too big inline request"),
        None => Ok(None),
    }
}

/// Splits an inline command line into arguments (Redis's `sdssplitargs`:
/// whitespace separates, `"..."` takes `\n`, `\xHH`-style escapes, `'...'`
/// only `\'`).
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else { return err("unbalanced quotes in request") };
                    i += 1;
                    if c == q {
                        break;
                    }
                    if c == b'\\' && i < line.len() {
                        let e = line[i];
                        i += 1;
                        if q == b'\'' {
                            if e != b'\'' {
                                arg.push(b'\\');
                            }
                            arg.push(e);
                            continue;
                        }
                        match e {
                            b'n' => arg.push(b'\n'),
                            b'r' => arg.push(b'\r'),
                            b't' => arg.push(b'\t'),
                            b'x' if i + 1 < line.len() => {
                                let hex = std::str::from_utf8(&line[i..i + 2]).ok();
                                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                                    Some(b) => {
                                        arg.push(b);
                                        i += 2;
                                    }
                                    None => arg.push(b'x'),
                                }
                            }
                            other => arg.push(other),
                        }
                        continue;
                    }
                    arg.push(c);
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return err("unbalanced quotes in request");
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// A reply, encoded for the connection's protocol version by [`encode`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...` (the text includes the error code).
    Error(String),
    /// `:n`
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// The null bulk string (RESP3 `_`).
    Null,
    /// The null array (RESP2 `*-1`, RESP3 `_`).
    NullArray,
    /// An array.
    Array(Vec<Reply>),
    /// A map (RESP2: a flat array of keys and values).
    Map(Vec<(Reply, Reply)>),
    /// A boolean (RESP2: 1 or 0).
    Bool(bool),
    /// An out-of-band push (RESP2: an array), for pub/sub messages.
    Push(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// An error reply with the `ERR` code.
    pub fn err(msg: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {msg}"))
    }

    /// A bulk string of text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(s.into()))
    }

    /// Is this an error reply?
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Appends `reply` to `out` in RESP2 (`resp3 == false`) or RESP3.
pub fn encode(reply: &Reply, resp3: bool, out: &mut BytesMut) {
    match reply {
        Reply::Simple(s) => line(out, b'+', clean(s).as_bytes()),
        Reply::Error(s) => line(out, b'-', clean(s).as_bytes()),
        Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
        Reply::Bulk(b) => {
            line(out, b'$', b.len().to_string().as_bytes());
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
        Reply::Null if resp3 => out.put_slice(b"_\r\n"),
        Reply::Null => out.put_slice(b"$-1\r\n"),
        Reply::NullArray if resp3 => out.put_slice(b"_\r\n"),
        Reply::NullArray => out.put_slice(b"*-1\r\n"),
        Reply::Array(items) => aggregate(out, b'*', items, resp3),
        Reply::Push(items) => aggregate(out, if resp3 { b'>' } else { b'*' }, items, resp3),
        Reply::Map(pairs) => {
            if resp3 {
                line(out, b'%', pairs.len().to_string().as_bytes());
            } else {
                line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
            }
            for (k, v) in pairs {
                encode(k, resp3, out);
                encode(v, resp3, out);
            }
        }
        Reply::Bool(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Reply::Bool(b) => line(out, b':', if *b { b"1" } else { b"0" }),
    }
}

fn aggregate(out: &mut BytesMut, tag: u8, items: &[Reply], resp3: bool) {
    line(out, tag, items.len().to_string().as_bytes());
    for i in items {
        encode(i, resp3, out);
    }
}

fn line(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// Simple strings and errors cannot hold CR or LF.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) { s.replace(['\r', '\n'], " ").into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn one(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        decode_command(&mut BytesMut::from(input), &Limits::default())
    }

    fn enc(r: &Reply, resp3: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(r, resp3, &mut out);
        out.to_vec()
    }

    #[test]
    fn multibulk_commands_decode_and_wait_for_more() {
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$5\r\nhel"[..]);
        assert_eq!(decode_command(&mut buf, &Limits::default()), Ok(None));
        buf.extend_from_slice(b"lo\r\n*1\r\n$4\r\nPING\r\n");
        let cmd = decode_command(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(cmd, vec![Bytes::from("ECHO"), Bytes::from("hello")]);
        let cmd = decode_command(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(cmd, vec![Bytes::from("PING")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_commands_split_with_quotes() {
        let cmd = one(b"SET k \"a b\\n\\x41\" 'it\\'s'\r\n").unwrap().unwrap();
        assert_eq!(cmd, vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("a b\nA"), Bytes::from("it's")]);
        assert_eq!(one(b"PING\n").unwrap().unwrap(), vec![Bytes::from("PING")]);
        assert_eq!(one(b"\r\n\r\nPING\r\n").unwrap().unwrap(), vec![Bytes::from("PING")], "blank lines skipped");
        assert!(one(b"ECHO \"open\r\n").is_err());
    }

    #[test]
    fn bad_input_is_a_protocol_error() {
        for bad in [
            &b"*1\r\n:5\r\n"[..],
            b"*x\r\n",
            b"*2\r\n$-5\r\n",
            b"*1\r\n$99999999999\r\n",
            b"*99999999999\r\n",
            b"*1\r\n$3\r\nabcde\r\n",
            b"*1\r\n?\r\n",
            b"*1\r\n\r\n",
            b"*2\r\n$1\r\na\r\n\r\n",
        ] {
            assert!(one(bad).is_err(), "{:?}", bad.escape_ascii().to_string());
        }
        let deep = b"*1\r\n".repeat(100);
        assert!(parse(&deep, 0, &Limits::default()).is_err(), "nesting is bounded");
        let limits = Limits { max_bulk: 4, ..Limits::default() };
        assert!(decode_command(&mut BytesMut::from(&b"*1\r\n$5\r\n"[..]), &limits).is_err());
        assert!(one(&vec![b'a'; 70 << 10]).is_err(), "inline lines are bounded");
    }

    #[test]
    fn resp3_types_parse() {
        let input = b"%2\r\n+a\r\n#t\r\n$1\r\nb\r\n~2\r\n,1.5\r\n_\r\n";
        let (v, used) = parse(input, 0, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            v,
            Value::Map(vec![
                (Value::Simple("a".into()), Value::Bool(true)),
                (Value::Bulk("b".into()), Value::Array(vec![Value::Number("1.5".into()), Value::Null])),
            ])
        );
    }

    #[test]
    fn replies_encode_per_version() {
        let map = Reply::Map(vec![(Reply::text("server"), Reply::text("ferry"))]);
        assert_eq!(enc(&map, false), b"*2\r\n$6\r\nserver\r\n$5\r\nferry\r\n");
        assert_eq!(enc(&map, true), b"%1\r\n$6\r\nserver\r\n$5\r\nferry\r\n");
        assert_eq!(enc(&Reply::Null, false), b"$-1\r\n");
        assert_eq!(enc(&Reply::NullArray, false), b"*-1\r\n");
        assert_eq!(enc(&Reply::Null, true), b"_\r\n");
        assert_eq!(enc(&Reply::Push(vec![Reply::Int(1)]), true), b">1\r\n:1\r\n");
        assert_eq!(enc(&Reply::Push(vec![Reply::Int(1)]), false), b"*1\r\n:1\r\n");
        assert_eq!(enc(&Reply::err("a\r\nb"), false), b"-ERR a  b\r\n");
        assert_eq!(enc(&Reply::Bool(true), false), b":1\r\n");
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = decode_command(&mut buf, &Limits::default()) {}
            let _ = parse(&input, 0, &Limits::default());
        }

        #[test]
        fn any_bytes_after_a_multibulk_header_never_panic(n in 0u8..5, tail in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'$'), Just(b'*'), Just(b'1'), Just(b'-'), any::<u8>()], 0..64)) {
            let mut input = format!("*{n}\r\n").into_bytes();
            input.extend_from_slice(&tail);
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = decode_command(&mut buf, &Limits::default()) {}
        }

        #[test]
        fn encoded_commands_decode(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let reply = Reply::Array(args.iter().map(|a| Reply::Bulk(Bytes::from(a.clone()))).collect());
            let mut buf = BytesMut::new();
            encode(&reply, false, &mut buf);
            let got = decode_command(&mut buf, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(got.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), args);
        }
    }
}
