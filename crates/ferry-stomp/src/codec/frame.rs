//! STOMP frames on the wire: the decoder (with size limits) and the
//! encoder, with header escaping per protocol version.
//!
//! A frame is a command line, header lines, an empty line, a body and a
//! NUL. Lines end with LF, optionally preceded by CR (1.2; accepted in
//! every version). A body is `content-length` bytes (which may hold NULs)
//! followed by a NUL, or without that header everything up to the first
//! NUL. A bare EOL between frames is a heart-beat. Header escapes (`\\`,
//! `\n`, `\c`, and from 1.2 `\r`) apply from 1.1 on, except in CONNECT
//! and CONNECTED frames; an undefined escape is a fatal error.

use bytes::{Buf, Bytes, BytesMut};

/// A negotiated protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no heart-beats, no NACK.
    V1_0,
    /// STOMP 1.1.
    V1_1,
    /// STOMP 1.2.
    V1_2,
}

impl Version {
    /// The version as `accept-version` and CONNECTED spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses "1.0", "1.1" or "1.2".
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

/// Bounds on what one frame may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest command or header line, bytes.
    pub max_header_line: usize,
    /// Most header lines in one frame.
    pub max_headers: usize,
    /// Largest body, bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // RabbitMQ's STOMP plugin: 1024 headers of up to 10 KiB (its
        // max_header_length); the body limit follows AMQP's message limit.
        Limits { max_header_line: 10 * 1024, max_headers: 1024, max_body: ferry_broker::messaging::MAX_MESSAGE_BYTES }
    }
}

/// Why bytes are not a frame. Fatal for the connection.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A command or header line past [`Limits::max_header_line`].
    #[error("header line longer than {0} bytes")]
    LineTooLong(usize),
    /// More than [`Limits::max_headers`] headers.
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    /// A body past [`Limits::max_body`] (declared or found).
    #[error("body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The command line is not a word of capital letters.
    #[error("malformed command line")]
    BadCommand,
    /// A header line without a colon, or not UTF-8.
    #[error("malformed header line {0:?}")]
    BadHeader(String),
    /// An escape sequence the version does not define.
    #[error("undefined escape sequence in header {0:?}")]
    BadEscape(String),
    /// `content-length` is not a number.
    #[error("invalid content-length {0:?}")]
    BadContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("frame body not terminated by NUL after content-length bytes")]
    MissingNul,
}

/// One frame: command, headers in wire order, body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The command, e.g. "SEND".
    pub command: String,
    /// Headers in order; a repeated header's first value is the one that counts.
    pub headers: Vec<(String, String)>,
    /// The body (may contain NULs when sent with `content-length`).
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: &str) -> Frame {
        Frame { command: command.to_string(), headers: Vec::new(), body: Bytes::new() }
    }

    /// Adds a header.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Frame {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Bytes) -> Frame {
        self.body = body;
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What the decoder found at the head of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A whole frame.
    Frame(Frame),
    /// A bare EOL: a heart-beat (or padding after a frame).
    Heartbeat,
}

/// Decodes frames from a growing buffer. Work done on a frame that is not
/// complete yet is kept (where its header lines were found, the parsed
/// head, how far the body was searched for its NUL), so a frame arriving
/// in many pieces is scanned once, whatever its size.
#[derive(Debug)]
pub struct Decoder {
    /// Header escaping follows this version (1.2 until CONNECT is done).
    pub version: Version,
    /// Size bounds.
    pub limits: Limits,
    /// Start of the first header line not yet seen whole.
    line_start: usize,
    /// Lines (command included) seen whole so far.
    lines: usize,
    /// The parsed command and headers, once the blank line arrived.
    head: Option<Head>,
    /// How far the body was searched for its NUL.
    scanned: usize,
}

#[derive(Debug)]
struct Head {
    command: String,
    headers: Vec<(String, String)>,
    /// Where the body starts.
    body_start: usize,
    /// From `content-length`.
    length: Option<usize>,
}

impl Decoder {
    /// A decoder for `version` within `limits`.
    pub fn new(version: Version, limits: Limits) -> Decoder {
        Decoder { version, limits, line_start: 0, lines: 0, head: None, scanned: 0 }
    }

    /// Takes the next frame or heart-beat off `buf`; `Ok(None)` if more
    /// bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, FrameError> {
        if self.head.is_none() {
            if self.lines == 0 && self.line_start == 0 {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'\n') => {
                        buf.advance(1);
                        return Ok(Some(Item::Heartbeat));
                    }
                    Some(b'\r') => {
                        return match buf.get(1) {
                            None => Ok(None),
                            Some(b'\n') => {
                                buf.advance(2);
                                Ok(Some(Item::Heartbeat))
                            }
                            Some(_) => Err(FrameError::BadCommand),
                        };
                    }
                    Some(_) => {}
                }
            }
            let Some(end) = self.find_head_end(buf)? else { return Ok(None) };
            self.head = Some(self.parse_head(&buf[..end], end)?);
        }
        let Some(head) = &self.head else { return Ok(None) };
        let body_len = if let Some(n) = head.length {
            if buf.len() < head.body_start + n + 1 {
                return Ok(None);
            }
            if buf[head.body_start + n] != 0 {
                return Err(FrameError::MissingNul);
            }
            n
        } else {
            let from = self.scanned.max(head.body_start);
            let Some(i) = buf[from..].iter().position(|&b| b == 0) else {
                if buf.len() - head.body_start > self.limits.max_body {
                    return Err(FrameError::BodyTooLarge(self.limits.max_body));
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            from + i - head.body_start
        };
        let Some(head) = self.head.take() else { return Ok(None) };
        (self.line_start, self.lines, self.scanned) = (0, 0, 0);
        buf.advance(head.body_start);
        let body = buf.split_to(body_len).freeze();
        buf.advance(1);
        Ok(Some(Item::Frame(Frame { command: head.command, headers: head.headers, body })))
    }

    /// Where the blank line ending the header lines ends, once it is in
    /// `buf`; resumes where the last call stopped.
    fn find_head_end(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let max = self.limits.max_header_line;
        loop {
            let pos = self.line_start;
            let Some(i) = buf[pos..].iter().position(|&b| b == b'\n') else {
                if buf.len() - pos > max {
                    return Err(FrameError::LineTooLong(max));
                }
                return Ok(None);
            };
            let mut len = i;
            if i > 0 && buf[pos + i - 1] == b'\r' {
                len -= 1;
            }
            if len > max {
                return Err(FrameError::LineTooLong(max));
            }
            self.line_start = pos + i + 1;
            if len == 0 {
                return Ok(Some(self.line_start));
            }
            self.lines += 1;
            if self.lines > self.limits.max_headers + 1 {
                return Err(FrameError::TooManyHeaders(self.limits.max_headers));
            }
        }
    }

    /// Parses the command and header lines in `block` (which ends with the
    /// blank line).
    fn parse_head(&self, block: &[u8], body_start: usize) -> Result<Head, FrameError> {
        let mut lines = block.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let command = lines.next().unwrap_or_default();
        if command.is_empty() || !command.iter().all(u8::is_ascii_uppercase) {
            return Err(FrameError::BadCommand);
        }
        let command = String::from_utf8_lossy(command).into_owned();
        // CONNECT and CONNECTED are never escaped (1.1 and 1.2 say so, for
        // the benefit of 1.0 peers).
        let escaped = self.version >= Version::V1_1 && command != "CONNECT" && command != "CONNECTED";
        let mut headers = Vec::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            let text = std::str::from_utf8(line)
                .map_err(|_| FrameError::BadHeader(String::from_utf8_lossy(line).into_owned()))?;
            let Some((k, v)) = text.split_once(':') else { return Err(FrameError::BadHeader(text.to_string())) };
            if escaped {
                headers.push((unescape(k, self.version)?, unescape(v, self.version)?));
            } else {
                headers.push((k.to_string(), v.to_string()));
            }
        }
        let length = match headers.iter().find(|(k, _)| k == "content-length") {
            None => None,
            Some((_, v)) => {
                let n: usize = v.trim().parse().map_err(|_| FrameError::BadContentLength(v.clone()))?;
                if n > self.limits.max_body {
                    return Err(FrameError::BodyTooLarge(self.limits.max_body));
                }
                Some(n)
            }
        };
        Ok(Head { command, headers, body_start, length })
    }
}

fn unescape(s: &str, version: Version) -> Result<String, FrameError> {
    if !s.contains('\\') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('r') if version >= Version::V1_2 => out.push('\r'),
            _ => return Err(FrameError::BadEscape(s.to_string())),
        }
    }
    Ok(out)
}

fn escape_into(out: &mut BytesMut, s: &str, version: Version, escaped: bool) {
    for b in s.bytes() {
        match (b, escaped) {
            (b'\\', true) => out.extend_from_slice(b"\\\\"),
            (b'\n', true) => out.extend_from_slice(b"\\n"),
            (b':', true) => out.extend_from_slice(b"\\c"),
            (b'\r', true) if version >= Version::V1_2 => out.extend_from_slice(b"\\r"),
            // Unescapable in this version: a line break would end the
            // header, so it becomes a space.
            (b'\n' | b'\r', _) => out.extend_from_slice(b" "),
            (b, _) => out.extend_from_slice(&[b]),
        }
    }
}

/// Appends `frame` to `out`, escaping headers as `version` wants. A
/// colon in a 1.0 header name cannot be escaped and is left to the peer.
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escaped = version >= Version::V1_1 && frame.command != "CONNECTED" && frame.command != "CONNECT";
    out.reserve(frame.command.len() + frame.body.len() + 64 * (frame.headers.len() + 1));
    out.extend_from_slice(frame.command.as_bytes());
    out.extend_from_slice(b"\n");
    for (k, v) in &frame.headers {
        escape_into(out, k, version, escaped);
        out.extend_from_slice(b":");
        escape_into(out, v, version, escaped);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&frame.body);
    out.extend_from_slice(b"\0");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dec(version: Version, bytes: &[u8]) -> Result<Vec<Item>, FrameError> {
        let mut d = Decoder::new(version, Limits::default());
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = d.decode(&mut buf)? {
            out.push(item);
        }
        Ok(out)
    }

    fn one(version: Version, bytes: &[u8]) -> Frame {
        match dec(version, bytes).unwrap().as_slice() {
            [Item::Frame(f)] => f.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    #[test]
    fn a_send_frame_with_crlf_lines_and_trailing_heartbeats() {
        let items = dec(Version::V1_2, b"SEND\r\ndestination:/queue/a\r\n\r\nhello\0\n\r\n").unwrap();
        assert_eq!(items.len(), 3);
        let Item::Frame(f) = &items[0] else { panic!("{items:?}") };
        assert_eq!(f.command, "SEND");
        assert_eq!(f.header("destination"), Some("/queue/a"));
        assert_eq!(&f.body[..], b"hello");
        assert_eq!(&items[1..], &[Item::Heartbeat, Item::Heartbeat]);
    }

    #[test]
    fn content_length_bodies_carry_nuls() {
        let f = one(Version::V1_2, b"SEND\ndestination:/queue/a\ncontent-length:5\n\na\0b\0c\0");
        assert_eq!(&f.body[..], b"a\0b\0c");
        // Without content-length the body ends at the first NUL.
        let items = dec(Version::V1_2, b"SEND\ndestination:/queue/a\n\na\0").unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            dec(Version::V1_2, b"SEND\ncontent-length:2\n\nabc\0"),
            Err(FrameError::MissingNul),
            "the byte after content-length bytes must be NUL"
        );
        assert!(matches!(dec(Version::V1_2, b"SEND\ncontent-length:x\n\n\0"), Err(FrameError::BadContentLength(_))));
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let wire: &[u8] = b"SEND\ndestination:/queue/a\ncontent-length:3\n\n\0\0\0\0MESSAGE\nk:v\n\nbody\0";
        for cut in 0..wire.len() {
            let mut d = Decoder::new(Version::V1_2, Limits::default());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(i) = d.decode(&mut buf).unwrap() {
                got.push(i);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(i) = d.decode(&mut buf).unwrap() {
                got.push(i);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            let Item::Frame(f) = &got[0] else { panic!() };
            assert_eq!(&f.body[..], b"\0\0\0");
        }
    }

    #[test]
    fn a_frame_dripping_in_byte_by_byte_decodes_once_whole() {
        let wire: &[u8] = b"\nSEND\r\ndestination:/queue/a\nk:v\\cw\n\nbody without length\0\r\nACK\nid:1\n\n\0";
        let mut d = Decoder::new(Version::V1_2, Limits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[*b]);
            while let Some(item) = d.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert!(buf.is_empty());
        let frames: Vec<&Frame> =
            got.iter().filter_map(|i| if let Item::Frame(f) = i { Some(f) } else { None }).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(frames[0].header("k"), Some("v:w"));
        assert_eq!(&frames[0].body[..], b"body without length");
        assert_eq!(frames[1].command, "ACK");
    }

    #[test]
    fn escaping_per_version() {
        let wire = b"SEND\na\\cb:x\\ny\\\\z\\r\n\n\0";
        assert_eq!(one(Version::V1_2, wire).headers, vec![("a:b".to_string(), "x\ny\\z\r".to_string())]);
        // 1.1 has no \r escape: fatal.
        assert!(matches!(dec(Version::V1_1, wire), Err(FrameError::BadEscape(_))));
        assert_eq!(one(Version::V1_1, b"SEND\nk:a\\cb\n\n\0").header("k"), Some("a:b"));
        // 1.0 has no escapes at all.
        assert_eq!(one(Version::V1_0, wire).headers, vec![("a\\cb".to_string(), "x\\ny\\\\z\\r".to_string())]);
        // CONNECT is never unescaped.
        assert_eq!(one(Version::V1_2, b"CONNECT\nlogin:a\\b\n\n\0").header("login"), Some("a\\b"));
        assert!(matches!(dec(Version::V1_2, b"SEND\nk:a\\t\n\n\0"), Err(FrameError::BadEscape(_))));
        assert!(matches!(dec(Version::V1_2, b"SEND\nk:a\\\n\n\0"), Err(FrameError::BadEscape(_))));
    }

    #[test]
    fn encoding_escapes_per_version() {
        let f = Frame::new("MESSAGE").with("a:b", "x\ny\\z\r").with_body(Bytes::from_static(b"hi"));
        let enc = |v| {
            let mut out = BytesMut::new();
            encode(&f, v, &mut out);
            out
        };
        assert_eq!(&enc(Version::V1_2)[..], b"MESSAGE\na\\cb:x\\ny\\\\z\\r\n\nhi\0");
        assert_eq!(&enc(Version::V1_1)[..], b"MESSAGE\na\\cb:x\\ny\\\\z \n\nhi\0");
        assert_eq!(&enc(Version::V1_0)[..], b"MESSAGE\na:b:x y\\z \n\nhi\0");
        let connected = Frame::new("CONNECTED").with("server", "a:b");
        let mut out = BytesMut::new();
        encode(&connected, Version::V1_2, &mut out);
        assert_eq!(&out[..], b"CONNECTED\nserver:a:b\n\n\0");
    }

    #[test]
    fn repeated_headers_keep_the_first_value() {
        let f = one(Version::V1_2, b"SEND\nfoo:1\nfoo:2\n\n\0");
        assert_eq!(f.header("foo"), Some("1"));
        assert_eq!(f.headers.len(), 2);
    }

    #[test]
    fn limits() {
        let limits = Limits { max_header_line: 16, max_headers: 2, max_body: 8 };
        let run = |bytes: &[u8]| {
            let mut d = Decoder::new(Version::V1_2, limits);
            let mut buf = BytesMut::from(bytes);
            d.decode(&mut buf)
        };
        assert_eq!(run(b"SEND\nk:0123456789abcdef\n\n\0"), Err(FrameError::LineTooLong(16)));
        // An unterminated long line is refused before its end arrives.
        assert_eq!(run(&[b'A'; 40]), Err(FrameError::LineTooLong(16)));
        assert_eq!(run(b"SEND\na:1\nb:2\nc:3\n\n\0"), Err(FrameError::TooManyHeaders(2)));
        assert_eq!(run(b"SEND\ncontent-length:9\n\n"), Err(FrameError::BodyTooLarge(8)));
        assert_eq!(run(b"SEND\n\n0123456789"), Err(FrameError::BodyTooLarge(8)));
        assert_eq!(
            dec(Version::V1_2, b"SEND\ncontent-length:99999999999999999999999\n\n"),
            Err(FrameError::BadContentLength("99999999999999999999999".into()))
        );
        assert!(matches!(run(b"SEND\n\n01234567\0"), Ok(Some(Item::Frame(_)))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(dec(Version::V1_2, b"send\n\n\0"), Err(FrameError::BadCommand));
        assert_eq!(dec(Version::V1_2, b"\x16\x03\x01\x02\n\n\0"), Err(FrameError::BadCommand));
        assert_eq!(dec(Version::V1_2, b"\rX"), Err(FrameError::BadCommand));
        assert!(matches!(dec(Version::V1_2, b"SEND\nnocolon\n\n\0"), Err(FrameError::BadHeader(_))));
        assert!(matches!(dec(Version::V1_2, b"SEND\nk:\xff\n\n\0"), Err(FrameError::BadHeader(_))));
        // Incomplete input is not an error.
        assert_eq!(dec(Version::V1_2, b"SEND\ndestination:/q"), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = dec(Version::V1_2, &bytes);
            let _ = dec(Version::V1_0, &bytes);
        }

        #[test]
        fn encode_then_decode_round_trips(
            headers in proptest::collection::vec(("[a-z:\\\\\n\r-]{1,8}", "[ -~\n\r]{0,12}"), 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = Frame::new("MESSAGE").with_body(Bytes::from(body));
            f.headers = headers;
            f.headers.push(("content-length".into(), f.body.len().to_string()));
            let mut out = BytesMut::new();
            encode(&f, Version::V1_2, &mut out);
            let back = one(Version::V1_2, &out);
            prop_assert_eq!(back, f);
        }
    }
}
