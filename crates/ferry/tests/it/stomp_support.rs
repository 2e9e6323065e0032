//! A STOMP client driving raw frames over a blocking socket (no Rust
//! STOMP client is maintained on crates.io; raw frames also let the tests
//! check bytes). Every read is bounded by a 10 s timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use ferry_stomp::codec::{Decoder, Frame, Item, Limits, Version, encode};

use crate::support::Broker;

pub struct Stomp {
    s: TcpStream,
    buf: BytesMut,
    dec: Decoder,
    /// Heart-beats seen so far.
    pub heartbeats: usize,
    /// Frames read while looking for a receipt.
    pending: std::collections::VecDeque<Frame>,
}

pub fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Stomp {
    /// A socket to the broker's STOMP port, nothing sent yet.
    pub fn open(b: &Broker) -> Stomp {
        let s = TcpStream::connect(("127.0.0.1", b.stomp_port)).expect("stomp connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Stomp {
            s,
            buf: BytesMut::new(),
            dec: Decoder::new(Version::V1_2, Limits::default()),
            heartbeats: 0,
            pending: Default::default(),
        }
    }

    /// CONNECT with 1.2 as guest; panics unless CONNECTED.
    pub fn connect(b: &Broker) -> Stomp {
        Stomp::connect_with(b, &[("accept-version", "1.2"), ("host", "/")])
    }

    pub fn connect_with(b: &Broker, headers: &[(&str, &str)]) -> Stomp {
        let mut c = Stomp::open(b);
        c.frame("CONNECT", headers, b"");
        let f = c.recv();
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        c.dec.version = f.header("version").and_then(Version::parse).unwrap_or(Version::V1_0);
        c
    }

    /// Closes the sending side (the broker sees end of stream).
    pub fn shutdown_write(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Write);
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    pub fn frame(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut f = Frame { command: command.into(), headers: h(headers), body: bytes::Bytes::copy_from_slice(body) };
        if !body.is_empty() {
            f.headers.push(("content-length".into(), body.len().to_string()));
        }
        let mut out = BytesMut::new();
        encode(&f, self.dec.version, &mut out);
        self.raw(&out);
    }

    /// The next frame (heart-beats are counted and skipped); `None` at
    /// end of stream.
    pub fn try_recv(&mut self) -> Option<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        self.read_frame()
    }

    fn read_frame(&mut self) -> Option<Frame> {
        loop {
            while let Some(item) = self.dec.decode(&mut self.buf).expect("a valid frame from the broker") {
                match item {
                    Item::Frame(f) => return Some(f),
                    Item::Heartbeat => self.heartbeats += 1,
                }
            }
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no frame within 10 s: {e}"),
            }
        }
    }

    /// Reads until a heart-beat arrives (10 s at most).
    pub fn await_heartbeat(&mut self) {
        let seen = self.heartbeats;
        while self.heartbeats == seen {
            if let Some(f) = self.read_frame_or_beat() {
                panic!("a heart-beat, not {f:?}");
            }
        }
    }

    /// One decode-or-read step: a frame if one is complete.
    fn read_frame_or_beat(&mut self) -> Option<Frame> {
        if let Some(item) = self.dec.decode(&mut self.buf).expect("a valid frame from the broker") {
            match item {
                Item::Frame(f) => return Some(f),
                Item::Heartbeat => {
                    self.heartbeats += 1;
                    return None;
                }
            }
        }
        let mut chunk = [0u8; 8192];
        let n = self.s.read(&mut chunk).expect("a heart-beat within 10 s");
        assert!(n > 0, "the broker closed instead of beating");
        self.buf.extend_from_slice(&chunk[..n]);
        None
    }

    pub fn recv(&mut self) -> Frame {
        self.try_recv().expect("a frame, not the end of the stream")
    }

    /// Reads until the RECEIPT for `id`; MESSAGE frames on the way are
    /// kept for [`Stomp::recv`].
    pub fn receipt(&mut self, id: &str) {
        loop {
            let f = self.read_frame().expect("a RECEIPT, not the end of the stream");
            if f.command == "MESSAGE" {
                self.pending.push_back(f);
                continue;
            }
            assert_eq!((f.command.as_str(), f.header("receipt-id")), ("RECEIPT", Some(id)), "{f:?}");
            return;
        }
    }

    /// The next frame must be a MESSAGE; returned.
    pub fn message(&mut self) -> Frame {
        let f = self.recv();
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        f
    }

    pub fn subscribe(&mut self, id: &str, destination: &str, extra: &[(&str, &str)]) {
        let receipt = format!("sub-{id}");
        let mut headers = vec![("id", id), ("destination", destination), ("receipt", receipt.as_str())];
        headers.extend_from_slice(extra);
        self.frame("SUBSCRIBE", &headers, b"");
        self.receipt(&receipt);
    }

    /// SEND and wait for its receipt (the message is then stored).
    pub fn send(&mut self, destination: &str, body: &[u8], extra: &[(&str, &str)]) {
        let receipt = format!("send-{}", uuid_like(body));
        let mut headers = vec![("destination", destination), ("receipt", receipt.as_str())];
        headers.extend_from_slice(extra);
        self.frame("SEND", &headers, body);
        self.receipt(&receipt);
    }

    /// DISCONNECT with a receipt, then the broker closes.
    pub fn disconnect(mut self) {
        self.frame("DISCONNECT", &[("receipt", "bye")], b"");
        self.receipt("bye");
        assert!(self.try_recv().is_none(), "the broker closes after DISCONNECT");
    }

    /// An ERROR frame, then the end of the stream.
    pub fn error_then_close(&mut self) -> Frame {
        let f = self.recv();
        assert_eq!(f.command, "ERROR", "{f:?}");
        assert!(self.try_recv().is_none(), "the broker closes after ERROR");
        f
    }
}

fn uuid_like(body: &[u8]) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", N.fetch_add(1, Ordering::Relaxed), body.len())
}
