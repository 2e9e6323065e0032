//! The Fetch data path for connections where `sendfile` cannot be used
//! (TLS: the bytes must pass through the encryption in user space). Reads
//! the file range in chunks off the async workers and writes each one.

use std::os::unix::fs::FileExt;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes read per step: large enough for few system calls, small enough
/// to keep a connection's buffer modest.
const CHUNK: u64 = 256 * 1024;

/// Writes `slice`'s byte range to `wr` by reading it (the copy fallback of
/// `sendfile`). A file shorter than the range fails the write, as
/// `sendfile` does: the frame cannot be completed.
pub async fn copy_file<W: AsyncWrite + Unpin>(wr: &mut W, slice: &ferry_broker::ReadSlice) -> std::io::Result<()> {
    let (mut at, end) = (slice.position, slice.position + slice.len);
    while at < end {
        let (file, want) = (slice.file.clone(), (end - at).min(CHUNK) as usize);
        let chunk = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match file.read_at(&mut buf[filled..], at + filled as u64)? {
                    0 => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "segment shrank during a fetch copy",
                        ));
                    }
                    n => filled += n,
                }
            }
            Ok(buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        wr.write_all(&chunk).await?;
        at += chunk.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;

    fn slice(file: std::fs::File, position: u64, len: u64) -> ferry_broker::ReadSlice {
        ferry_broker::ReadSlice { file: Arc::new(file), position, len, end_offset: 0 }
    }

    #[tokio::test]
    async fn copies_exactly_the_range_across_chunks() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(CHUNK as usize * 2 + 1000)).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let mut out = Vec::new();
        let (from, len) = (17u64, CHUNK + 500);
        copy_file(&mut out, &slice(f, from, len)).await.unwrap();
        assert_eq!(out, &data[from as usize..(from + len) as usize]);
    }

    #[tokio::test]
    async fn a_short_file_is_an_error_not_a_short_frame() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 100]).unwrap();
        let mut out = Vec::new();
        let e = copy_file(&mut out, &slice(f, 50, 100)).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
