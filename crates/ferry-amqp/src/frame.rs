//! AMQP 0-9-1 framing: our own reader (the size is checked against the
//! negotiated frame_max before anything is allocated, bodies stay `Bytes`
//! slices of the read buffer) and encoders for outgoing frames. Methods and
//! properties are (de)serialised with `amq-protocol`.

use amq_protocol::frame::{GenError, WriteContext};
use amq_protocol::protocol::{AMQPClass, gen_class};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Frame type of a method frame (spec 4.2.4).
pub const FRAME_METHOD: u8 = 1;
/// Frame type of a content header frame (spec 4.2.6).
pub const FRAME_HEADER: u8 = 2;
/// Frame type of a content body frame (spec 4.2.6.2).
pub const FRAME_BODY: u8 = 3;
/// Frame type of a heartbeat frame (spec 4.2.7).
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
pub const FRAME_HEADER_LEN: usize = 7;
/// Header plus the frame-end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// The protocol header we speak; sent back to a client that offers another.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Frames up to this size are accepted before tuning (the spec's frame-min-size).
pub const FRAME_MIN_SIZE: u32 = 4096;

/// One frame, its payload without the frame-end octet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Frame type, one of the `FRAME_*` type constants.
    pub kind: u8,
    /// Channel number; 0 for connection-level frames and heartbeats.
    pub channel: u16,
    /// The frame's payload, a slice of the read buffer.
    pub payload: Bytes,
}

/// Why no frame could be read; all of them end the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection (possibly mid-frame).
    #[error("connection closed")]
    Eof,
    /// Reading the socket failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Not "AMQP 0 0 9 1": answer with our header and close.
    #[error("bad protocol header")]
    BadProtocolHeader,
    /// The frame is larger than the negotiated `frame_max`.
    #[error("frame of {size} bytes exceeds frame_max {max}")]
    TooLarge {
        /// The frame's payload size from its header, in bytes.
        size: u32,
        /// The negotiated `frame_max` (whole frame, header and end octet included).
        max: u32,
    },
    /// The octet after the payload is not `frame-end` (`FRAME_ERROR`).
    #[error("frame end octet is {0:#04x}, not 0xce")]
    BadFrameEnd(u8),
    /// The frame type is not method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    BadType(u8),
}

/// Reads frames off a stream, refilling one buffer.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `rd` with a 64 KiB buffer to start.
    pub fn new(rd: R) -> Self {
        FrameReader { rd, buf: BytesMut::with_capacity(64 * 1024) }
    }

    async fn fill(&mut self, n: usize) -> Result<(), FrameError> {
        while self.buf.len() < n {
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve((n - self.buf.len()).max(64 * 1024));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Eof);
            }
        }
        Ok(())
    }

    /// Reads and checks the 8-byte protocol header.
    pub async fn protocol_header(&mut self) -> Result<(), FrameError> {
        self.fill(8).await?;
        let header = self.buf.split_to(8);
        if &header[..] != PROTOCOL_HEADER {
            return Err(FrameError::BadProtocolHeader);
        }
        Ok(())
    }

    /// Reads one frame of at most `frame_max` bytes (0: no limit beyond u32).
    pub async fn next(&mut self, frame_max: u32) -> Result<Frame, FrameError> {
        self.fill(FRAME_HEADER_LEN).await?;
        let kind = self.buf[0];
        let channel = u16::from_be_bytes([self.buf[1], self.buf[2]]);
        let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]);
        if !matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
            return Err(FrameError::BadType(kind));
        }
        // frame_max counts the whole frame, header and end octet included.
        let total = u64::from(size) + FRAME_OVERHEAD as u64;
        if frame_max != 0 && total > u64::from(frame_max) {
            return Err(FrameError::TooLarge { size, max: frame_max });
        }
        let total = total as usize;
        self.fill(total).await?;
        let mut frame = self.buf.split_to(total);
        let end = frame[total - 1];
        if end != FRAME_END {
            return Err(FrameError::BadFrameEnd(end));
        }
        frame.truncate(total - 1);
        let payload = frame.split_off(FRAME_HEADER_LEN).freeze();
        Ok(Frame { kind, channel, payload })
    }
}

fn gen_err(e: GenError) -> std::io::Error {
    std::io::Error::other(format!("encoding a method: {e:?}"))
}

/// Appends a method frame.
pub fn put_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) -> std::io::Result<()> {
    let (payload, _) = gen_class(method)(WriteContext::from(Vec::with_capacity(64))).map_err(gen_err)?.into_inner();
    put_frame(out, FRAME_METHOD, channel, &payload);
    Ok(())
}

/// Appends one frame of type `kind` carrying `payload` (not split: the caller
/// keeps it within `frame_max`).
pub fn put_frame(out: &mut BytesMut, kind: u8, channel: u16, payload: &[u8]) {
    out.reserve(payload.len() + FRAME_OVERHEAD);
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(FRAME_END);
}

/// Appends a content header (class basic, raw property flags + list) and
/// the body split into frames of at most `frame_max` bytes.
pub fn put_content(out: &mut BytesMut, channel: u16, properties: &[u8], body: &[u8], frame_max: u32) {
    let props: &[u8] = if properties.len() >= 2 { properties } else { &[0, 0] };
    out.reserve(FRAME_OVERHEAD * 2 + 12 + props.len() + body.len());
    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32((12 + props.len()) as u32);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.put_slice(props);
    out.put_u8(FRAME_END);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        put_frame(out, FRAME_BODY, channel, part);
    }
}

/// Appends a heartbeat frame (channel 0, empty payload).
pub fn put_heartbeat(out: &mut BytesMut) {
    put_frame(out, FRAME_HEARTBEAT, 0, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8], frame_max: u32) -> Vec<Result<Frame, String>> {
        let mut r = FrameReader::new(bytes);
        let mut out = Vec::new();
        loop {
            match r.next(frame_max).await {
                Ok(f) => out.push(Ok(f)),
                Err(FrameError::Eof) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn reads_frames_and_checks_limits() {
        let mut b = BytesMut::new();
        put_frame(&mut b, FRAME_BODY, 3, b"hello");
        put_heartbeat(&mut b);
        let got = read_all(&b, 4096).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok(Frame { kind: FRAME_BODY, channel: 3, payload: Bytes::from_static(b"hello") }));
        assert_eq!(got[1].as_ref().map(|f| f.kind), Ok(FRAME_HEARTBEAT));

        // Size above frame_max: refused from the header alone, before the
        // payload arrives.
        let huge = [FRAME_BODY, 0, 1, 0xFF, 0xFF, 0xFF, 0xF0];
        assert!(read_all(&huge, 131072).await[0].as_ref().unwrap_err().contains("exceeds frame_max"));

        let mut bad_end = BytesMut::new();
        put_frame(&mut bad_end, FRAME_METHOD, 0, b"xy");
        let n = bad_end.len();
        bad_end[n - 1] = 0;
        assert!(read_all(&bad_end, 4096).await[0].as_ref().unwrap_err().contains("frame end"));
        assert!(read_all(&[9, 0, 0, 0, 0, 0, 0, 0xCE], 4096).await[0].is_err());
    }

    #[tokio::test]
    async fn content_is_split_by_frame_max() {
        let mut b = BytesMut::new();
        put_content(&mut b, 1, &[0x10, 0, 2], &[7u8; 10], 13);
        let got = read_all(&b, 4096).await;
        let kinds: Vec<u8> = got.iter().map(|f| f.as_ref().unwrap().kind).collect();
        assert_eq!(kinds, vec![FRAME_HEADER, FRAME_BODY, FRAME_BODY]);
        assert_eq!(got[1].as_ref().unwrap().payload.len(), 5);
    }

    #[tokio::test]
    async fn protocol_header() {
        let mut r = FrameReader::new(&b"AMQP\x00\x00\x09\x01"[..]);
        assert!(r.protocol_header().await.is_ok());
        let mut r = FrameReader::new(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(r.protocol_header().await, Err(FrameError::BadProtocolHeader)));
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    proptest::proptest! {
        /// Any bytes: frames or an error, never a panic, never a frame past
        /// frame_max.
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let frames = block_on(read_all(&data, 512));
            for f in frames.into_iter().flatten() {
                proptest::prop_assert!(f.payload.len() + FRAME_OVERHEAD <= 512);
            }
        }

        /// What we encode, we read back.
        #[test]
        fn round_trip(frames in proptest::collection::vec((1u8..4, proptest::prelude::any::<u16>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)), 1..20)) {
            let mut b = BytesMut::new();
            for (kind, ch, payload) in &frames {
                put_frame(&mut b, *kind, *ch, payload);
            }
            let got = block_on(read_all(&b, 4096));
            proptest::prop_assert_eq!(got.len(), frames.len());
            for (g, (kind, ch, payload)) in got.into_iter().zip(frames) {
                let g = g.map_err(proptest::test_runner::TestCaseError::fail)?;
                proptest::prop_assert_eq!((g.kind, g.channel, &g.payload[..]), (kind, ch, &payload[..]));
            }
        }
    }
}
