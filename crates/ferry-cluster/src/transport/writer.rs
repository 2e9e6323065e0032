//! The writing side of a cluster connection, shared by everything that
//! sends frames on it. On plain TCP a sender writes its frame itself, with
//! non-blocking writes, when nothing is queued before it: no hand-off to a
//! writer task, so one wake-up less per frame on a machine where every
//! wake-up may queue behind another process. What the socket does not take
//! at once, and every frame behind it, goes through the writer task, in
//! order. Over TLS every frame goes through the writer task (the
//! encryption buffers; the task flushes when its queue is empty).

use std::io::{ErrorKind, IoSlice};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::replication::Chunk;

/// Called once when the connection can no longer be written.
pub(super) type OnFail = Box<dyn Fn() + Send + Sync>;

/// Where a connection's frames go.
pub(super) struct FrameWriter {
    kind: Kind,
    broken: Arc<AtomicBool>,
    on_fail: Arc<OnFail>,
}

enum Kind {
    /// Plain TCP: direct writes while the queue is empty.
    Tcp {
        socket: Arc<OwnedWriteHalf>,
        /// Senders take turns here; the queue behind it goes to the task.
        order: Mutex<mpsc::Sender<Rest>>,
        /// Frames handed to the task and not yet fully written.
        queued: Arc<AtomicUsize>,
    },
    /// TLS (or any stream): every frame through the task.
    Stream(mpsc::Sender<Vec<Chunk>>),
}

impl FrameWriter {
    /// A writer on a plain TCP connection, at most `depth` frames queued
    /// (then senders wait: backpressure), and the task that drains the
    /// queue (abort it to stop writing).
    pub(super) fn tcp(socket: OwnedWriteHalf, depth: usize, on_fail: OnFail) -> (FrameWriter, JoinHandle<()>) {
        let socket = Arc::new(socket);
        let (tx, rx) = mpsc::channel(depth);
        let (queued, broken, on_fail) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(on_fail));
        let task = tokio::spawn(drain_tcp(socket.clone(), rx, queued.clone(), broken.clone(), on_fail.clone()));
        let kind = Kind::Tcp { socket, order: Mutex::new(tx), queued };
        (FrameWriter { kind, broken, on_fail }, task)
    }

    /// A writer on any stream (TLS): every frame through the task.
    pub(super) fn stream<W>(stream: W, depth: usize, on_fail: OnFail) -> (FrameWriter, JoinHandle<()>)
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(depth);
        let (broken, on_fail) = (Arc::new(AtomicBool::new(false)), Arc::new(on_fail));
        let task = tokio::spawn(drain_stream(
            BufWriter::with_capacity(64 * 1024, stream),
            rx,
            broken.clone(),
            on_fail.clone(),
        ));
        (FrameWriter { kind: Kind::Stream(tx), broken, on_fail }, task)
    }

    /// Sends one frame (its chunks in order, nothing of another frame in
    /// between). Returns once the frame is written or queued; waits while
    /// the queue is full. An error: the connection cannot be written (it
    /// failed, possibly inside an earlier frame) and never will be again.
    pub(super) async fn send(&self, chunks: Vec<Chunk>) -> std::io::Result<()> {
        let closed = || std::io::Error::new(ErrorKind::BrokenPipe, "cluster connection closed");
        match &self.kind {
            Kind::Stream(tx) => tx.send(chunks).await.map_err(|_| closed()),
            Kind::Tcp { socket, order, queued } => {
                let order = order.lock().await;
                if self.broken.load(Ordering::Acquire) {
                    return Err(closed());
                }
                let mut rest = Rest { chunks, next: 0, done: 0 };
                // Nothing queued: everything before is on the socket, so
                // this frame may go there directly.
                if queued.load(Ordering::Acquire) == 0 {
                    match rest.try_write(socket.as_ref().as_ref()) {
                        Ok(true) => return Ok(()),
                        Ok(false) => {}
                        Err(e) => {
                            fail(&self.broken, &self.on_fail);
                            return Err(e);
                        }
                    }
                }
                // The permit first (cancel-safe); then count and queue at
                // once, so the count never shows a frame the task lacks.
                let permit = order.reserve().await.map_err(|_| closed())?;
                queued.fetch_add(1, Ordering::AcqRel);
                permit.send(rest);
                Ok(())
            }
        }
    }

    /// Refuses every later frame (the connection is done with).
    pub(super) fn close(&self) {
        self.broken.store(true, Ordering::Release);
    }
}

fn fail(broken: &AtomicBool, on_fail: &OnFail) {
    if !broken.swap(true, Ordering::AcqRel) {
        on_fail();
    }
}

/// What is left of a frame: its chunks from `next`, `done` bytes of that
/// one already written.
struct Rest {
    chunks: Vec<Chunk>,
    next: usize,
    done: usize,
}

impl Rest {
    /// Writes as much as the socket takes without waiting: true when the
    /// frame is all written, false when the socket is full.
    fn try_write(&mut self, socket: &TcpStream) -> std::io::Result<bool> {
        loop {
            while self.chunks.get(self.next).is_some_and(|c| self.done >= c.len()) {
                self.next += 1;
                self.done = 0;
            }
            let Some(chunk) = self.chunks.get(self.next) else { return Ok(true) };
            let written = match chunk {
                Chunk::Bytes(_) => {
                    // The byte chunks up to the next file range in one call.
                    let slices: Vec<IoSlice<'_>> = self.chunks[self.next..]
                        .iter()
                        .map_while(|c| match c {
                            Chunk::Bytes(b) => Some(b.as_slice()),
                            Chunk::File(_) => None,
                        })
                        .enumerate()
                        .map(|(i, b)| IoSlice::new(if i == 0 { &b[self.done..] } else { b }))
                        .collect();
                    socket.try_write_vectored(&slices)
                }
                Chunk::File(s) => {
                    ferry_tls::try_send_file(socket, &s.file, s.position + self.done as u64, s.len - self.done as u64)
                        .map(|n| n as usize)
                }
            };
            match written {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    // Past the chunks it completed.
                    while let Some(c) = self.chunks.get(self.next) {
                        let left = c.len() - self.done;
                        if n < left {
                            self.done += n;
                            break;
                        }
                        n -= left;
                        self.next += 1;
                        self.done = 0;
                        if n == 0 {
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The plain writer task: finishes each queued frame, waiting for room.
async fn drain_tcp(
    socket: Arc<OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Rest>,
    queued: Arc<AtomicUsize>,
    broken: Arc<AtomicBool>,
    on_fail: Arc<OnFail>,
) {
    let stream: &TcpStream = socket.as_ref().as_ref();
    while let Some(mut rest) = rx.recv().await {
        loop {
            let waited = match rest.try_write(stream) {
                Ok(true) => break,
                Ok(false) => stream.writable().await,
                Err(e) => Err(e),
            };
            if let Err(e) = waited {
                tracing::debug!(error = %e, "cluster connection write failed");
                fail(&broken, &on_fail);
                return;
            }
        }
        // Only now: a sender that sees 0 may write after this frame.
        queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The stream writer task: each frame in order, flushed when no other
/// frame is queued behind it.
async fn drain_stream<W: AsyncWrite + Unpin>(
    mut w: BufWriter<W>,
    mut rx: mpsc::Receiver<Vec<Chunk>>,
    broken: Arc<AtomicBool>,
    on_fail: Arc<OnFail>,
) {
    while let Some(chunks) = rx.recv().await {
        if let Err(e) = write_chunks(&mut w, &chunks, rx.is_empty()).await {
            tracing::debug!(error = %e, "cluster connection write failed");
            fail(&broken, &on_fail);
            return;
        }
    }
}

/// One frame's chunks; a file range is read and copied (it must pass
/// through the encryption). `last`: flush what is buffered.
async fn write_chunks<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    chunks: &[Chunk],
    last: bool,
) -> std::io::Result<()> {
    for chunk in chunks {
        match chunk {
            Chunk::Bytes(b) => w.write_all(b).await?,
            Chunk::File(s) => ferry_tls::copy_file(w, &s.file, s.position, s.len).await?,
        }
    }
    if last {
        w.flush().await?;
    }
    Ok(())
}
