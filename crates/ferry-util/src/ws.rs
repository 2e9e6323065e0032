//! WebSocket (RFC 6455, server side) for protocols that run over it as a
//! byte stream (MQTT on `/mqtt`, STOMP on `/stomp`): the opening handshake
//! on an [`Endpoint`]'s path with one of its subprotocols, then a byte
//! stream carried in data frames. Packets may be split over frames or
//! share one, so the connection code sees one plain stream ([`WsStream`])
//! and frames packets itself. Written here rather than taken from a crate:
//! the server half is small, and unmasking while streaming never buffers a
//! whole frame. (Moved from ferry-mqtt so STOMP can share it.)
//!
//! One listener can serve several protocols by path ([`Route`], [`serve`]:
//! `/mqtt` and `/stomp` on the MQTT WebSocket listener); an HTTP server
//! that parsed the request itself checks it with [`check_upgrade`] and
//! wraps the upgraded connection with [`WsStream::upgraded`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest opening handshake accepted.
const MAX_REQUEST: usize = 8 * 1024;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a WebSocket connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The opening handshake was refused (already answered with an HTTP error).
    #[error("bad handshake: {0}")]
    Handshake(&'static str),
}

/// Where a protocol listens and what it accepts.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// The request path, e.g. `/mqtt`.
    pub path: &'static str,
    /// Subprotocols spoken, best first. A client that offers some, none of
    /// them these, is refused; one that offers none is served.
    pub protocols: &'static [&'static str],
    /// Text frames carry data too (STOMP clients send text); otherwise a
    /// text frame closes the connection with 1003 (MQTT is binary only).
    pub accept_text: bool,
}

/// A byte stream a WebSocket runs over: a TCP socket, or an HTTP
/// connection upgraded by another server.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Serves one accepted WebSocket connection (from the peer's address).
pub type Handler =
    Arc<dyn Fn(WsStream<Box<dyn Io>>, SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A protocol served on a path.
#[derive(Clone)]
pub struct Route {
    /// The path and what it accepts.
    pub endpoint: Endpoint,
    /// What serves its connections.
    pub handler: Handler,
}

/// Serves WebSocket clients on `listener` until `shutdown` turns true:
/// each is handed to the one of `routes` whose path its request names
/// (others get 404), once its handshake is done within `handshake`.
pub async fn serve(
    listener: TcpListener,
    routes: Vec<Route>,
    handshake: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let routes: Arc<[Route]> = routes.into();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let routes = routes.clone();
                    tasks.spawn(async move {
                        let endpoints: Vec<Endpoint> = routes.iter().map(|r| r.endpoint).collect();
                        let io: Box<dyn Io> = Box::new(stream);
                        match tokio::time::timeout(handshake, accept(io, &endpoints)).await {
                            Ok(Ok((ws, i, _))) => (routes[i].handler)(ws, peer).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "websocket handshake failed"),
                            Err(_) => tracing::debug!(%peer, "websocket handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "websocket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Connections see the same shutdown through their handlers.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
}

/// Reads the opening handshake for the one of `endpoints` whose path it
/// names and answers it: 101 and a [`WsStream`], that endpoint's index and
/// the subprotocol agreed on (if any); or an HTTP error status and
/// [`WsError::Handshake`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    endpoints: &[Endpoint],
) -> Result<(WsStream<S>, usize, Option<&'static str>), WsError> {
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_REQUEST {
            return refuse(&mut stream, "431 Request Header Fields Too Large", "request too large").await;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(WsError::Handshake("closed during the handshake"));
        }
    };
    let head = buf.split_to(end);
    let (i, accepted) = match check_request(&head, endpoints) {
        Ok(a) => a,
        Err((status, why)) => return refuse(&mut stream, status, why).await,
    };
    let endpoint = &endpoints[i];
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accepted.accept
    );
    if let Some(p) = accepted.protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    let mut ws = WsStream::new(stream, buf);
    ws.accept_text = endpoint.accept_text;
    Ok((ws, i, accepted.protocol))
}

async fn refuse<S: AsyncWrite + Unpin, T>(stream: &mut S, status: &str, why: &'static str) -> Result<T, WsError> {
    let body = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
    Err(WsError::Handshake(why))
}

/// An upgrade request accepted: what the 101 answer carries.
#[derive(Debug)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The subprotocol agreed on (`Sec-WebSocket-Protocol`, echoed back).
    pub protocol: Option<&'static str>,
}

/// An HTTP status line and why, for a refused request.
pub type Refusal = (&'static str, &'static str);

fn check_request(head: &[u8], endpoints: &[Endpoint]) -> Result<(usize, Accepted), Refusal> {
    const BAD: &str = "400 Bad Request";
    let text = std::str::from_utf8(head).map_err(|_| (BAD, "not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target, version) = (request.next(), request.next(), request.next());
    if method != Some("GET") {
        return Err(("405 Method Not Allowed", "not GET"));
    }
    if version != Some("HTTP/1.1") {
        return Err(("505 HTTP Version Not Supported", "not HTTP/1.1"));
    }
    let path = target.unwrap_or_default().split('?').next().unwrap_or_default();
    let i = endpoints.iter().position(|e| e.path == path).ok_or(("404 Not Found", "unknown path"))?;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or((BAD, "bad header line"))?;
        headers.push((name.trim(), value.trim()));
    }
    Ok((i, check_upgrade(headers, &endpoints[i])?))
}

/// Checks the headers of a GET upgrade request (HTTP/1.1, on
/// `endpoint`'s path) as RFC 6455 asks: what to answer with 101, or the
/// status to refuse it with.
pub fn check_upgrade<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    endpoint: &Endpoint,
) -> Result<Accepted, Refusal> {
    const BAD: &str = "400 Bad Request";
    let (mut upgrade, mut connection, mut version_ok, mut key) = (false, false, false, None);
    let mut offered: Option<Vec<String>> = None;
    for (name, value) in headers {
        let (name, value) = (name.trim(), value.trim());
        let has_token = |t: &str| value.split(',').any(|v| v.trim().eq_ignore_ascii_case(t));
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = has_token("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection = has_token("upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_ok = value == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            offered.get_or_insert_with(Vec::new).extend(value.split(',').map(|v| v.trim().to_ascii_lowercase()));
        }
    }
    if !upgrade || !connection {
        return Err(("426 Upgrade Required", "not a WebSocket upgrade"));
    }
    if !version_ok {
        return Err(("426 Upgrade Required", "Sec-WebSocket-Version is not 13"));
    }
    let key = key.filter(|k| k.len() == 24).ok_or((BAD, "missing or bad Sec-WebSocket-Key"))?;
    // A client offering only other subprotocols speaks something else.
    let protocol = match offered {
        None => None,
        Some(offered) => Some(
            endpoint
                .protocols
                .iter()
                .copied()
                .find(|p| offered.iter().any(|o| o == p))
                .ok_or((BAD, "no subprotocol of ours offered"))?,
        ),
    };
    Ok(Accepted { accept: accept_key(&key), protocol })
}

/// Sec-WebSocket-Accept for `key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    base64(&sha1(format!("{key}{GUID}").as_bytes()))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// Where the reader is inside the frame sequence.
enum ReadState {
    /// Between frames.
    Header,
    /// Inside a data frame: payload bytes left, the mask and its phase.
    Data { left: u64, mask: [u8; 4], phase: usize },
    /// A close frame arrived (or the peer broke the protocol): EOF.
    Closed,
}

/// The byte stream inside a WebSocket connection: reads unmask binary
/// frames, writes send each buffer as one binary frame. Pings are answered,
/// a close frame reads as EOF.
pub struct WsStream<S> {
    inner: S,
    /// Raw bytes read from the socket and not yet parsed.
    raw: BytesMut,
    state: ReadState,
    /// Frames to send (data, pongs, close), written before anything new.
    out: BytesMut,
    close_sent: bool,
    /// Text frames are data (see [`Endpoint::accept_text`]).
    accept_text: bool,
}

impl<S> WsStream<S> {
    fn new(inner: S, raw: BytesMut) -> WsStream<S> {
        WsStream { inner, raw, state: ReadState::Header, out: BytesMut::new(), close_sent: false, accept_text: false }
    }

    /// The WebSocket over `inner`, a connection whose upgrade request
    /// (checked by [`check_upgrade`]) another server answered with 101.
    pub fn upgraded(inner: S, endpoint: &Endpoint) -> WsStream<S> {
        let mut ws = WsStream::new(inner, BytesMut::new());
        ws.accept_text = endpoint.accept_text;
        ws
    }
}

fn frame_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// What the next frame header says, once all of it is buffered.
enum Parsed {
    Incomplete,
    /// (header length, fin, opcode, payload length, mask)
    Frame(usize, bool, u8, u64, [u8; 4]),
    Violation(&'static str),
}

fn parse_header(buf: &[u8]) -> Parsed {
    let [b0, b1, ..] = *buf else { return Parsed::Incomplete };
    if b0 & 0x70 != 0 {
        return Parsed::Violation("reserved bits set");
    }
    if b1 & 0x80 == 0 {
        return Parsed::Violation("unmasked client frame");
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Parsed::Incomplete,
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Parsed::Incomplete,
        },
        n => (u64::from(n), 2),
    };
    let Some(mask) = buf.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Parsed::Incomplete;
    };
    Parsed::Frame(at + 4, b0 & 0x80 != 0, b0 & 0x0f, len, mask)
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Writes queued frames; `Ready(Ok)` once all are out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn queue_close(&mut self, code: u16) {
        if !self.close_sent {
            self.close_sent = true;
            frame_header(&mut self.out, OP_CLOSE, 2);
            self.out.put_u16(code);
        }
    }

    /// Ends the stream: a close frame with `code` goes out, reads see EOF.
    fn fail(&mut self, code: u16, cx: &mut Context<'_>) {
        self.state = ReadState::Closed;
        self.queue_close(code);
        let _ = self.poll_drain(cx);
    }

    /// Handles frames in `raw` until data is available, more bytes are
    /// needed (`false`) or the stream ended.
    fn parse(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            match self.state {
                ReadState::Closed => return true,
                ReadState::Data { left: 0, .. } => self.state = ReadState::Header,
                ReadState::Data { .. } => return !self.raw.is_empty(),
                ReadState::Header => {}
            }
            let (hlen, fin, opcode, len, mask) = match parse_header(&self.raw) {
                Parsed::Incomplete => return false,
                Parsed::Violation(why) => {
                    tracing::debug!(why, "websocket protocol violation");
                    self.fail(1002, cx);
                    return true;
                }
                Parsed::Frame(h, fin, op, len, mask) => (h, fin, op, len, mask),
            };
            match opcode {
                // Fragmentation means nothing to a byte stream: take each
                // fragment's bytes as they come.
                OP_BINARY | OP_CONTINUATION => {
                    self.raw.advance(hlen);
                    self.state = ReadState::Data { left: len, mask, phase: 0 };
                }
                OP_TEXT if self.accept_text => {
                    self.raw.advance(hlen);
                    self.state = ReadState::Data { left: len, mask, phase: 0 };
                }
                OP_TEXT => {
                    // E.g. MQTT over WebSocket is binary only (MQTT 5 §6).
                    self.fail(1003, cx);
                    return true;
                }
                OP_CLOSE | OP_PING | OP_PONG => {
                    if !fin || len > 125 {
                        self.fail(1002, cx);
                        return true;
                    }
                    let total = hlen + len as usize;
                    if self.raw.len() < total {
                        return false;
                    }
                    let mut payload = self.raw.split_to(total).split_off(hlen);
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= mask[i % 4];
                    }
                    match opcode {
                        OP_PING => {
                            frame_header(&mut self.out, OP_PONG, payload.len());
                            self.out.extend_from_slice(&payload);
                            let _ = self.poll_drain(cx);
                        }
                        OP_CLOSE => {
                            self.fail(1000, cx);
                            return true;
                        }
                        _ => {}
                    }
                }
                _ => {
                    self.fail(1002, cx);
                    return true;
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.parse(cx) {
                if let ReadState::Data { left, mask, phase } = &mut this.state {
                    let n = (*left).min(this.raw.len() as u64).min(buf.remaining() as u64) as usize;
                    let chunk = this.raw.split_to(n);
                    let dst = buf.initialize_unfilled_to(n);
                    for (i, (d, s)) in dst.iter_mut().zip(chunk.iter()).enumerate() {
                        *d = s ^ mask[(*phase + i) % 4];
                    }
                    buf.advance(n);
                    *left -= n as u64;
                    *phase = (*phase + n) % 4;
                }
                // Data handed out, or Closed: EOF (nothing filled).
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.state = ReadState::Closed;
                return Poll::Ready(Ok(()));
            }
            this.raw.extend_from_slice(rb.filled());
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // One frame per write, at most 64 KiB, so the queued copy stays bounded.
        let n = buf.len().min(64 * 1024);
        frame_header(&mut this.out, OP_BINARY, n);
        this.out.extend_from_slice(&buf[..n]);
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.queue_close(1000);
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MQTT: Endpoint = Endpoint { path: "/mqtt", protocols: &["mqtt"], accept_text: false };

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = BytesMut::new();
        frame_header(&mut out, opcode, payload.len());
        out[0] = if fin { out[0] } else { out[0] & 0x7f };
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out.to_vec()
    }

    #[tokio::test]
    async fn frames_become_one_byte_stream_and_pings_are_answered() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut request = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
            .to_vec();
        // Frames may arrive with the request, split anywhere, fragmented.
        request.extend(masked(OP_BINARY, false, b"hel"));
        request.extend(masked(OP_PING, true, b"p"));
        request.extend(masked(OP_CONTINUATION, true, b"lo"));
        request.extend(masked(OP_BINARY, true, b" world"));
        let (a, b) = request.split_at(150);
        cwr.write_all(a).await.unwrap();
        let task = tokio::spawn(async move {
            let (mut ws, _, protocol) = accept(server, &[MQTT]).await.unwrap();
            assert_eq!(protocol, Some("mqtt"));
            let mut got = vec![0; 11];
            ws.read_exact(&mut got).await.unwrap();
            ws.write_all(b"back").await.unwrap();
            ws.flush().await.unwrap();
            let mut rest = Vec::new();
            ws.read_to_end(&mut rest).await.unwrap();
            (got, rest)
        });
        cwr.write_all(b).await.unwrap();
        cwr.write_all(&masked(OP_CLOSE, true, &1000u16.to_be_bytes())).await.unwrap();
        let (got, rest) = task.await.unwrap();
        assert_eq!((&got[..], &rest[..]), (&b"hello world"[..], &b""[..]));
        let mut response = vec![0; 1024];
        let n = crd.read(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        let mut frames = response[text.find("\r\n\r\n").unwrap() + 4..n].to_vec();
        while frames.len() < 3 + 6 + 4 {
            let k = crd.read(&mut response).await.unwrap();
            assert!(k > 0);
            frames.extend_from_slice(&response[..k]);
        }
        // pong "p", binary "back", close 1000
        assert_eq!(&frames[..13], &[0x8a, 1, b'p', 0x82, 4, b'b', b'a', b'c', b'k', 0x88, 2, 0x03, 0xe8]);
    }

    #[tokio::test]
    async fn bad_handshakes_are_refused_with_a_status() {
        for (request, status) in [
            ("POST /mqtt HTTP/1.1\r\n\r\n", "405"),
            ("GET /other HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "404"),
            ("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
            (
                "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "400",
            ),
            (
                "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n",
                "400",
            ),
        ] {
            let (mut client, server) = tokio::io::duplex(4096);
            client.write_all(request.as_bytes()).await.unwrap();
            assert!(accept(server, &[MQTT]).await.is_err());
            let mut response = String::new();
            client.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{request:?}: {response}");
        }
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[tokio::test]
    async fn text_frames_are_data_where_the_endpoint_says_so() {
        const MQTT: Endpoint = Endpoint { path: "/mqtt", protocols: &["mqtt"], accept_text: false };
        const STOMP: Endpoint = Endpoint { path: "/stomp", protocols: &["v12.stomp", "v11.stomp"], accept_text: true };
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut request = b"GET /stomp HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v10.stomp, v11.stomp\r\n\r\n"
            .to_vec();
        let mask = [9, 8, 7, 6];
        request.extend_from_slice(&[0x81, 0x80 | 5]);
        request.extend_from_slice(&mask);
        request.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        client.write_all(&request).await.unwrap();
        let (mut ws, i, protocol) = accept(server, &[MQTT, STOMP]).await.unwrap();
        assert_eq!(i, 1, "the endpoint of the path asked for");
        assert_eq!(protocol, Some("v11.stomp"));
        let mut got = [0u8; 5];
        ws.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
