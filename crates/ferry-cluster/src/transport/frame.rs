//! Frames: `u32 length | u8 kind | u64 correlation id | body`, big-endian,
//! the length counting everything after itself. Bounded, so a bad peer
//! cannot make a node allocate without limit.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame accepted (a snapshot chunk or a large entry batch fits).
pub const MAX_FRAME: u32 = 64 << 20;

/// Bytes after the length field that every frame has.
const FIXED: u32 = 1 + 8;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body is (see `message`).
    pub kind: u8,
    /// Pairs a response with its request.
    pub correlation: u64,
    /// JSON.
    pub body: Vec<u8>,
}

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or closed inside a frame.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The length field is out of bounds.
    #[error("frame length {0} out of bounds")]
    Length(u32),
}

impl Frame {
    /// The frame's bytes, ready to write. `None` if the body is too large.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let len = u32::try_from(self.body.len()).ok()?.checked_add(FIXED).filter(|l| *l <= MAX_FRAME)?;
        let mut out = Vec::with_capacity(4 + len as usize);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(self.kind);
        out.extend_from_slice(&self.correlation.to_be_bytes());
        out.extend_from_slice(&self.body);
        Some(out)
    }
}

/// Reads one frame; `Ok(None)` when the peer closed between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if !(FIXED..=MAX_FRAME).contains(&len) {
        return Err(FrameError::Length(len));
    }
    let mut head = [0u8; FIXED as usize];
    reader.read_exact(&mut head).await?;
    let mut body = vec![0u8; (len - FIXED) as usize];
    reader.read_exact(&mut body).await?;
    let mut correlation = [0u8; 8];
    correlation.copy_from_slice(&head[1..]);
    Ok(Some(Frame { kind: head[0], correlation: u64::from_be_bytes(correlation), body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let frame = Frame { kind: 7, correlation: 0x0102_0304_0506_0708, body: b"{\"a\":1}".to_vec() };
        let mut bytes = frame.encode().unwrap();
        bytes.extend(Frame { kind: 1, correlation: 2, body: Vec::new() }.encode().unwrap());
        let mut r = &bytes[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(frame));
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap().kind, 1);
        assert!(read_frame(&mut r).await.unwrap().is_none(), "clean end between frames");
        for len in [0u32, 8, MAX_FRAME + 1, u32::MAX] {
            let mut bad = len.to_be_bytes().to_vec();
            bad.extend([0u8; 16]);
            assert!(matches!(read_frame(&mut &bad[..]).await, Err(FrameError::Length(l)) if l == len));
        }
        // Cut inside a frame: an error, not a clean end.
        let cut = &bytes[..6];
        assert!(matches!(read_frame(&mut &cut[..]).await, Err(FrameError::Io(_))));
    }
}
