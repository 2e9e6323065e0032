//! A long-polling fetch holds up neither other connections nor the order of
//! responses on its own connection, and wakes when data arrives.

use std::io::{ErrorKind, Read};

use crate::raw::{connect, produce_v3, receive, send, topic_partition};
use crate::support::{Broker, create_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_keeps_order_and_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "lp", 1, &[]).await;
    let (mut a, mut b) = (connect(broker.port), connect(broker.port));

    // A: Fetch v4 from the empty partition, waiting up to 30 s for 1 byte,
    // then an ApiVersions pipelined behind it.
    let mut fetch = Vec::new();
    fetch.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    fetch.extend_from_slice(&30_000i32.to_be_bytes()); // max wait
    fetch.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    fetch.push(0); // isolation level
    topic_partition(&mut fetch, "lp", 0);
    fetch.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes()); // partition max bytes
    send(&mut a, 1, 4, 1, &fetch);
    send(&mut a, 18, 0, 2, &[]);

    // B is served while A's fetch waits.
    send(&mut b, 18, 0, 10, &[]);
    assert_eq!(receive(&mut b).0, 10);
    // A's ApiVersions waits behind its fetch: nothing to read on A yet.
    a.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    assert_eq!(a.read(&mut probe).unwrap_err().kind(), ErrorKind::WouldBlock);
    a.set_nonblocking(false).unwrap();

    // B produces: A's fetch wakes with the record, then its ApiVersions answer follows.
    send(&mut b, 0, 3, 11, &produce_v3("lp", 0, -1, &crate::raw::batch("wake", -1, -1, -1)));
    assert_eq!(receive(&mut b).0, 11);

    let (correlation, body) = receive(&mut a);
    assert_eq!(correlation, 1, "the fetch answers first");
    assert!(body.windows(4).any(|w| w == b"wake"), "the fetch carries the new record");
    assert_eq!(receive(&mut a).0, 2, "then the request pipelined behind it");
}
