//! A byte range of a file (log segment data for a fetch or a replica) to a
//! connection: `sendfile` on plain TCP, so the page cache goes straight to
//! the socket, and read + write where the bytes must pass through TLS in
//! user space. The Kafka server and the cluster port both send segment
//! data this way (one implementation).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read per step of [`copy_file`]: large enough for few system
/// calls, small enough to keep a connection's buffer modest.
pub const COPY_CHUNK: u64 = 256 * 1024;

fn shrank(during: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("segment shrank during {during}"))
}

/// Sends `len` bytes of `file` from `position` straight from the page
/// cache to the socket (plain TCP). A file shorter than the range fails:
/// the frame around it cannot be completed, so the connection must go.
pub async fn send_file(stream: &TcpStream, file: &File, position: u64, len: u64) -> std::io::Result<()> {
    let mut offset = i64::try_from(position).map_err(std::io::Error::other)?;
    let end = offset
        .checked_add(i64::try_from(len).map_err(std::io::Error::other)?)
        .ok_or_else(|| std::io::Error::other("file range past i64"))?;
    while offset < end {
        stream.writable().await?;
        let count = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), file.as_fd(), Some(&mut offset), count)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => return Err(shrank("sendfile")),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `len` bytes of `file` from `position` to `wr` by reading them
/// ([`COPY_CHUNK`] at a time, off the async workers, into one reused
/// buffer): the fallback of [`send_file`] for TLS. A file shorter than the
/// range fails, as `sendfile` does.
pub async fn copy_file<W: AsyncWrite + Unpin>(
    wr: &mut W,
    file: &Arc<File>,
    position: u64,
    len: u64,
) -> std::io::Result<()> {
    let end = position.checked_add(len).ok_or_else(|| std::io::Error::other("file range past u64"))?;
    let mut at = position;
    let mut buf = Vec::new();
    while at < end {
        let want = usize::try_from((end - at).min(COPY_CHUNK)).unwrap_or(0);
        let file = file.clone();
        buf = tokio::task::spawn_blocking(move || {
            buf.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match file.read_at(&mut buf[filled..], at + filled as u64)? {
                    0 => return Err(shrank("a file copy")),
                    n => filled += n,
                }
            }
            Ok(buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        wr.write_all(&buf).await?;
        at += want as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    fn file_with(data: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Arc::new(f)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn copy_file_copies_exactly_the_range_across_chunks() {
        let data = pattern(COPY_CHUNK as usize * 2 + 1000);
        let f = file_with(&data);
        let mut out = Vec::new();
        let (from, len) = (17u64, COPY_CHUNK + 500);
        copy_file(&mut out, &f, from, len).await.unwrap();
        assert_eq!(out, &data[from as usize..(from + len) as usize]);
    }

    #[tokio::test]
    async fn copy_file_of_a_short_file_is_an_error_not_a_short_frame() {
        let f = file_with(&[1u8; 100]);
        let mut out = Vec::new();
        let e = copy_file(&mut out, &f, 50, 100).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// A connected loopback pair: (the sending end, the receiving end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    #[tokio::test]
    async fn send_file_sends_exactly_the_range() {
        // Larger than a socket buffer, so sendfile must wait for room.
        let data = pattern(4 * 1024 * 1024 + 333);
        let f = file_with(&data);
        let (tx, mut rx) = pair().await;
        let (from, len) = (1000u64, data.len() as u64 - 1500);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; len as usize];
            rx.read_exact(&mut got).await.unwrap();
            got
        });
        send_file(&tx, &f, from, len).await.unwrap();
        assert_eq!(reader.await.unwrap(), &data[from as usize..(from + len) as usize]);
    }

    #[tokio::test]
    async fn send_file_of_a_short_file_is_an_error() {
        let f = file_with(&[7u8; 100]);
        let (tx, _rx) = pair().await;
        let e = send_file(&tx, &f, 50, 100).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
