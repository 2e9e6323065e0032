//! Framing: splits MQTT control packets off a byte stream. The remaining
//! length is checked against the size limit before anything is buffered
//! for it, so an oversized or bogus length costs no allocation.

use bytes::{Bytes, BytesMut};

/// What the buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole packet, fixed header included.
    Packet(Bytes),
    /// More bytes needed.
    Incomplete,
    /// The remaining length says the packet is larger than allowed.
    TooLarge(usize),
    /// The remaining length is not a valid variable byte integer.
    Malformed,
}

/// Length of the fixed header of `buf` (type byte + remaining length), or
/// `None` if it is incomplete or invalid.
pub fn header_len(buf: &[u8]) -> Option<usize> {
    match remaining_length(buf) {
        Ok(Some((_, n))) => Some(1 + n),
        _ => None,
    }
}

/// A variable byte integer (MQTT §1.5.5) at the start of `buf` and the
/// bytes it took; `None` if `buf` ends first or it runs past four bytes.
/// A non-minimal encoding (trailing 0x80 0x00) is still valid.
pub(crate) fn read_varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &b) in buf.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// (remaining length, bytes it took); `Ok(None)`: incomplete.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let field = buf.get(1..).unwrap_or_default();
    match read_varint(field) {
        Some(x) => Ok(Some(x)),
        None if field.len() >= 4 => Err(()),
        None => Ok(None),
    }
}

/// Splits the next packet off `buf` if it is complete and at most
/// `max_packet` bytes long (the whole packet, as MQTT 5 counts it).
pub fn next_frame(buf: &mut BytesMut, max_packet: usize) -> Frame {
    let (len, n) = match remaining_length(buf) {
        Ok(Some(x)) => x,
        Ok(None) => return Frame::Incomplete,
        Err(()) => return Frame::Malformed,
    };
    let total = 1 + n + len;
    if total > max_packet {
        return Frame::TooLarge(total);
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Frame::Incomplete;
    }
    Frame::Packet(buf.split_to(total).freeze())
}

/// How much room a connection offers each read. It doubles (up to
/// [`ReadSize::MAX`]) while reads fill what was offered, so a client that
/// sends faster than the connection reads (a pipelining publisher) gives
/// many packets per read system call; it halves (down to [`ReadSize::MIN`])
/// while reads take little, and an empty buffer much larger than that is
/// let go, so an idle connection holds little memory.
#[derive(Debug)]
pub struct ReadSize {
    next: usize,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize { next: ReadSize::MIN }
    }
}

impl ReadSize {
    /// Room offered to a quiet connection.
    pub const MIN: usize = 1024;
    /// Room offered to a busy one.
    pub const MAX: usize = 64 * 1024;

    /// Makes room in `buf` for the next read; returns how much is offered.
    pub fn prepare(&self, buf: &mut BytesMut) -> usize {
        if buf.is_empty() && buf.capacity() > 4 * self.next {
            *buf = BytesMut::with_capacity(self.next);
        } else if buf.capacity() - buf.len() < self.next {
            buf.reserve(self.next);
        }
        buf.capacity() - buf.len()
    }

    /// A read of `n` bytes into `offered` bytes of room.
    pub fn read(&mut self, offered: usize, n: usize) {
        if n >= offered {
            self.next = (self.next * 2).min(Self::MAX);
        } else if n < self.next / 4 {
            self.next = (self.next / 2).max(Self::MIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_while_they_fill_the_buffer_and_shrink_when_quiet() {
        let (mut size, mut buf) = (ReadSize::default(), BytesMut::new());
        let offered = size.prepare(&mut buf);
        assert!(offered >= ReadSize::MIN);
        // Full reads: the offer doubles up to the cap.
        for _ in 0..10 {
            let offered = size.prepare(&mut buf);
            size.read(offered, offered);
        }
        assert_eq!(size.next, ReadSize::MAX);
        assert!(size.prepare(&mut buf) >= ReadSize::MAX);
        // Small reads: it halves down to the floor, and the big empty
        // buffer is let go.
        for _ in 0..10 {
            let offered = size.prepare(&mut buf);
            size.read(offered, 10);
        }
        assert_eq!(size.next, ReadSize::MIN);
        let offered = size.prepare(&mut buf);
        assert!((ReadSize::MIN..4 * ReadSize::MIN).contains(&offered), "{offered}");
        // A partial packet is kept when room is made.
        buf.extend_from_slice(&[0x30, 0x05, 0]);
        size.prepare(&mut buf);
        assert_eq!(&buf[..], &[0x30, 0x05, 0]);
    }

    #[test]
    fn frames_are_split_and_limits_checked_before_buffering() {
        let mut buf = BytesMut::from(&[0xc0, 0x00, 0x30][..]);
        assert_eq!(next_frame(&mut buf, 100), Frame::Packet(Bytes::from_static(&[0xc0, 0x00])));
        assert_eq!(next_frame(&mut buf, 100), Frame::Incomplete);
        buf.extend_from_slice(&[0x03, 0, 1, b'a']);
        assert_eq!(next_frame(&mut buf, 100), Frame::Packet(Bytes::from_static(&[0x30, 0x03, 0, 1, b'a'])));
        // 268,435,455 announced: refused at once, nothing reserved for it.
        let mut big = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
        assert_eq!(next_frame(&mut big, 1 << 20), Frame::TooLarge(268_435_460));
        assert!(big.capacity() < 1024);
        let mut bad = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert_eq!(next_frame(&mut bad, 1 << 20), Frame::Malformed);
        assert_eq!(header_len(&[0x10, 0x80, 0x01]), Some(3));
    }
}
