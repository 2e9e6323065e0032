//! The frame writer on real loopback sockets: concurrent senders, a peer
//! that stops reading, a peer that goes away mid-frame.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_log::ReadSlice;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::frame::{Frame, read_frame};
use super::writer::FrameWriter;
use crate::replication::Chunk;

/// Bytes every frame body is cut from (in memory and in a file).
const PATTERN: usize = 256 * 1024;

fn pattern() -> Vec<u8> {
    (0..PATTERN).map(|i| (i * 7 % 251) as u8).collect()
}

fn pattern_file() -> Arc<File> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&pattern()).unwrap();
    Arc::new(f)
}

/// A connected loopback pair: (the sending end, the receiving end). Small
/// buffers, so writes often find the socket full and frames queue.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    let (client, accepted) = tokio::join!(socket.connect(addr), listener.accept());
    let (client, accepted) = (client.unwrap(), accepted.unwrap().0);
    // As the cluster port's connections.
    client.set_nodelay(true).unwrap();
    (client, accepted)
}

/// Frame `seq` of sender `sender`: where its body starts in the pattern
/// and how long it is (1 byte to 160 KiB, so some fill a socket buffer).
fn body_range(sender: u64, seq: u64) -> (usize, usize) {
    let start = ((sender * 31 + seq * 17) % 1000) as usize;
    let len = match seq % 4 {
        0 => 1 + (seq as usize * 13) % 100,
        1 => 1000 + seq as usize,
        2 => 40_000,
        _ => 160 * 1024,
    };
    (start, len)
}

/// The frame as chunks: a head and its body in two byte chunks, or the
/// body as a file range (sendfile) between byte chunks.
fn chunks(file: &Arc<File>, data: &[u8], sender: u64, seq: u64) -> Vec<Chunk> {
    let (start, len) = body_range(sender, seq);
    let correlation = sender << 32 | seq;
    let mut bytes = Frame { kind: 1, correlation, body: data[start..start + len].to_vec() }.encode().unwrap();
    if (sender + seq) % 2 == 0 {
        let body = bytes.split_off(13 + len / 2);
        vec![Chunk::Bytes(bytes), Chunk::Bytes(body)]
    } else {
        bytes.truncate(13);
        let first = len.min(7);
        let head_part = data[start..start + first].to_vec();
        let file = ReadSlice {
            file: file.clone(),
            position: (start + first) as u64,
            len: (len - first) as u64,
            end_offset: 0,
        };
        vec![Chunk::Bytes(bytes), Chunk::Bytes(head_part), Chunk::File(file), Chunk::Bytes(Vec::new())]
    }
}

/// Reads `n` frames, slowly, and checks each body and each sender's order.
async fn read_checked(rx: TcpStream, senders: u64, n: usize) {
    let data = pattern();
    let mut rx = BufReader::with_capacity(4096, rx);
    let mut next = vec![0u64; senders as usize];
    for i in 0..n {
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let frame = read_frame(&mut rx).await.unwrap().expect("a frame, not the end");
        let (sender, seq) = (frame.correlation >> 32, frame.correlation & 0xffff_ffff);
        assert_eq!(seq, next[sender as usize], "sender {sender}'s frames in order");
        next[sender as usize] += 1;
        let (start, len) = body_range(sender, seq);
        assert!(frame.body == data[start..start + len], "frame {sender}/{seq} intact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_keep_frames_whole_and_in_order() {
    let (tx, rx) = pair().await;
    let (_r, w) = tx.into_split();
    let (writer, task) = FrameWriter::tcp(w, 4, Box::new(|| {}));
    let writer = Arc::new(writer);
    let (file, data) = (pattern_file(), Arc::new(pattern()));
    const SENDERS: u64 = 8;
    const FRAMES: u64 = 100;
    let reading = tokio::spawn(read_checked(rx, SENDERS, (SENDERS * FRAMES) as usize));
    let sends: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (writer, file, data) = (writer.clone(), file.clone(), data.clone());
            tokio::spawn(async move {
                for i in 0..FRAMES {
                    writer.send(chunks(&file, &data, s, i)).await.unwrap();
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), reading).await.expect("every frame arrives").unwrap();
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_holds_senders_back_and_loses_nothing() {
    let (tx, rx) = pair().await;
    let (_r, w) = tx.into_split();
    let (writer, task) = FrameWriter::tcp(w, 2, Box::new(|| {}));
    let (file, data) = (pattern_file(), pattern());
    const FRAMES: u64 = 400;
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let sending = tokio::spawn(async move {
        // Sender 0 only: every frame 160 KiB (seq % 4 == 3 sizes), 64 MiB
        // in all, far past what the socket buffers hold.
        for i in 0..FRAMES {
            writer.send(chunks(&file, &data, 0, i * 4 + 3)).await.unwrap();
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sent.load(Ordering::SeqCst);
    assert!(before < FRAMES as usize, "senders wait while the peer reads nothing ({before} sent)");
    assert!(!sending.is_finished());
    // The peer reads again: every frame, whole and in order.
    let data = pattern();
    let mut rx = BufReader::new(rx);
    for i in 0..FRAMES {
        let frame = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut rx)).await.unwrap().unwrap().unwrap();
        let seq = i * 4 + 3;
        assert_eq!(frame.correlation, seq);
        let (start, len) = body_range(0, seq);
        assert!(frame.body == data[start..start + len], "frame {seq} intact");
    }
    sending.await.unwrap();
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_dies_mid_frame_fails_every_sender() {
    let (tx, mut rx) = pair().await;
    let (_r, w) = tx.into_split();
    let failed = Arc::new(AtomicUsize::new(0));
    let f = failed.clone();
    let (writer, task) = FrameWriter::tcp(w, 2, Box::new(move || _ = f.fetch_add(1, Ordering::SeqCst)));
    let writer = Arc::new(writer);
    let (file, data) = (pattern_file(), Arc::new(pattern()));
    let sends: Vec<_> = (0..4u64)
        .map(|s| {
            let (writer, file, data) = (writer.clone(), file.clone(), data.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if writer.send(chunks(&file, &data, s, i * 4 + 3)).await.is_err() {
                        return i;
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // The peer reads a little, then goes away with data unread (a reset).
    let mut some = [0u8; 100];
    rx.read_exact(&mut some).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(rx);
    for s in sends {
        tokio::time::timeout(Duration::from_secs(10), s).await.expect("a sender hung on a dead connection").unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 1, "told once that the connection failed");
    // And later frames are refused at once, not written after a torn one.
    assert!(writer.send(vec![Chunk::Bytes(vec![1; 20])]).await.is_err());
    task.abort();
}
