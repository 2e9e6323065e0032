//! The cluster port end to end, with a stand-in service.

use std::sync::Arc;
use std::time::Duration;

use ferry_broker::metadata::MetadataError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::{HeartbeatRequest, LeaderError, Pool, Request, Response, Service, ServiceFuture, TransportError, serve};

const QUORUM: &str = "1@127.0.0.1:1";

/// Answers heartbeats: alive when the node id is even and the sender
/// (from the envelope) is node 4.
struct Echo;

impl Service for Echo {
    fn node_id(&self) -> i32 {
        1
    }

    fn quorum(&self) -> &str {
        QUORUM
    }

    fn call(self: Arc<Self>, from: i32, request: Request) -> ServiceFuture {
        Box::pin(async move {
            match request {
                Request::Heartbeat(h) => Response::Heartbeat(Ok(h.node % 2 == 0 && from == 4)),
                _ => Response::Heartbeat(Err(LeaderError::NotLeader(None))),
            }
        })
    }
}

async fn server() -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, None, Arc::new(Echo), stopped));
    (addr, stop)
}

fn beat(node: i32) -> Request {
    Request::Heartbeat(HeartbeatRequest { node, incarnation: Uuid::new_v4() })
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn calls_are_answered_and_other_quorums_refused() {
    let (addr, _stop) = server().await;
    let pool = Arc::new(Pool::new(4, QUORUM.into()));
    // Concurrent calls share one connection, told apart by correlation id.
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let (pool, addr) = (pool.clone(), addr.clone());
            tokio::spawn(async move { pool.call(&addr, &beat(4 + 2 * (i % 2)), T).await })
        })
        .collect();
    for call in calls {
        assert!(matches!(call.await.unwrap(), Ok(Response::Heartbeat(Ok(true)))));
    }
    // Answers follow their request, not the order of arrival: an odd node
    // is told to register again.
    assert!(matches!(pool.call(&addr, &beat(3), T).await, Ok(Response::Heartbeat(Ok(false)))));
    let stranger = Pool::new(4, "1@127.0.0.1:1,2@127.0.0.1:2".into());
    match stranger.call(&addr, &beat(4), T).await {
        Err(TransportError::Refused(MetadataError::QuorumMismatch(why))) => {
            assert!(why.contains("1@127.0.0.1:1,2@127.0.0.1:2") && why.contains("node 1 has '1@127.0.0.1:1'"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_bad_frame_closes_only_its_connection() {
    let (addr, _stop) = server().await;
    let pool = Pool::new(4, QUORUM.into());
    assert!(matches!(pool.call(&addr, &beat(4), T).await, Ok(Response::Heartbeat(Ok(true)))));
    for bad in [vec![0u8, 0, 0, 3, 1, 2, 3], vec![0, 0, 0, 10, 99, 0, 0, 0, 0, 0, 0, 0, 1, b'x']] {
        let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&bad).await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(T, raw.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{bad:?}");
    }
    assert!(
        matches!(pool.call(&addr, &beat(4), T).await, Ok(Response::Heartbeat(Ok(true)))),
        "pooled connection still served"
    );
}

#[tokio::test]
async fn a_dead_peer_fails_fast_and_a_restarted_one_is_redialled() {
    let (addr, stop) = server().await;
    let pool = Pool::new(4, QUORUM.into());
    assert!(pool.call(&addr, &beat(4), T).await.is_ok());
    stop.send_replace(true);
    // The server is gone and its connections closed.
    let failed = tokio::time::timeout(T, async {
        loop {
            match pool.call(&addr, &beat(4), T).await {
                Err(TransportError::Unreachable { .. } | TransportError::Down { .. } | TransportError::Closed(_)) => {
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(failed.is_ok(), "calls to a stopped server fail");
    // Back on the same address: the pool dials again.
    let listener = TcpListener::bind(&addr).await.unwrap();
    let (_stop2, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, None, Arc::new(Echo), stopped));
    assert!(matches!(pool.call(&addr, &beat(4), T).await, Ok(Response::Heartbeat(Ok(true)))));
}

#[tokio::test]
async fn a_routed_peer_is_dialled_at_its_route() {
    let (real, _stop) = server().await;
    // A name nothing listens on, routed to the server.
    let named = "127.0.0.1:1".to_string();
    let routed = Pool::new(4, QUORUM.into()).routed([(named.clone(), real)].into());
    assert!(matches!(routed.call(&named, &beat(4), T).await, Ok(Response::Heartbeat(Ok(true)))));
    let direct = Pool::new(4, QUORUM.into());
    assert!(matches!(direct.call(&named, &beat(4), T).await, Err(TransportError::Down { .. })));
}

#[tokio::test]
async fn a_dead_peer_is_told_from_a_paused_one() {
    // Dead: nothing listens on the port any more (refused).
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = gone.local_addr().unwrap().to_string();
    drop(gone);
    let pool = Pool::new(4, QUORUM.into());
    let e = pool.call(&dead, &Request::Ping, T).await.unwrap_err();
    assert!(e.peer_gone(), "{e}");
    // Paused (SIGSTOP): the kernel accepts the connection, nobody answers.
    let paused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = paused.local_addr().unwrap().to_string();
    let e = pool.call(&addr, &Request::Ping, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(e, TransportError::Timeout { .. }) && !e.peer_gone(), "{e}");
    // Killed with a connection open: the pending call sees it close.
    let (live, stop) = server().await;
    assert!(pool.call(&live, &beat(4), T).await.is_ok());
    stop.send_replace(true);
    let e = loop {
        match pool.call(&live, &beat(4), T).await {
            Err(e) => break e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(e.peer_gone(), "{e}");
    drop(paused);
}

#[test]
fn the_quorum_fingerprint_ignores_the_order_voters_were_given_in() {
    let a = super::fingerprint(&[(2, "h:2".into()), (1, "h:1".into())]);
    assert_eq!(a, "1@h:1,2@h:2");
    assert_eq!(a, super::fingerprint(&[(1, "h:1".into()), (2, "h:2".into())]));
    assert_ne!(a, super::fingerprint(&[(1, "h:1".into()), (2, "h:3".into())]));
}

/// A hand-rolled node of raw-payload version `version` (0: it predates
/// the binary form, 1: it reads only the queue calls' payloads raw, 2:
/// also MQTT routes' and binary replica fetches): answers pings saying so,
/// answers a replica fetch with three bytes of records per partition,
/// echoes a forwarded publish's batch as a delivery and answers an MQTT
/// route, recording each request frame's kind
/// and each route's messages. A binary frame it could not read (any, at
/// version 0; an MQTT route's, at 1: payloads its call has no place for)
/// closes the connection, as such a node does.
async fn fake_node(version: u8) -> (String, Arc<std::sync::Mutex<Vec<u8>>>, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use super::frame::read_frame;
    use super::message::{answers_binary, decode_request, encode_response};
    use ferry_broker::metadata::{PeerReply, PeerRequest, WireDelivery};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let routed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, got) = (kinds.clone(), routed.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (seen, got) = (seen.clone(), got.clone());
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut stream).await {
                    seen.lock().unwrap().push(frame.kind);
                    if answers_binary(&frame) && version == 0 {
                        return;
                    }
                    let response = match decode_request(&frame).unwrap().2 {
                        Request::Ping => {
                            let mut pong = super::Pong::of(1, Uuid::from_u128(1));
                            pong.binary_peer = version > 0;
                            pong.raw_payloads = if version > 1 { version } else { 0 };
                            pong.binary_fetch = version > 1;
                            Response::Ping(pong)
                        }
                        Request::ReplicaFetch(fetch) => {
                            let partitions = fetch
                                .partitions
                                .iter()
                                .map(|p| crate::replication::FetchedPartition {
                                    topic_id: p.topic_id,
                                    partition: p.partition,
                                    result: Ok(crate::replication::FetchedInfo {
                                        high_watermark: p.acked_end,
                                        log_start: 0,
                                        log_end: p.fetch_offset + 3,
                                    }),
                                    records: crate::replication::Records::Bytes(vec![p.partition as u8; 3]),
                                })
                                .collect();
                            Response::ReplicaFetch(crate::replication::ReplicaFetchResponse { partitions })
                        }
                        Request::Peer(PeerRequest::QueuePublish { batch, .. }) => {
                            let delivery = WireDelivery { offset: 0, redelivered: false, count: 1, batch };
                            Response::Peer(Ok(PeerReply::QueueDeliveries {
                                deliveries: vec![delivery],
                                ready: 0,
                                consumers: 0,
                            }))
                        }
                        Request::Peer(PeerRequest::MqttRoute { messages }) => {
                            if answers_binary(&frame) && version < 2 {
                                return;
                            }
                            got.lock().unwrap().extend(messages.iter().map(|(m, _)| m.bytes().to_vec()));
                            Response::Peer(Ok(PeerReply::Done))
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    let out = encode_response(frame.correlation, &response, answers_binary(&frame)).unwrap();
                    stream.write_all(&out.encode().unwrap()).await.unwrap();
                }
            });
        }
    });
    (addr, kinds, routed)
}

/// A peer call goes in the binary form to a node whose pong says it reads
/// that call so, and as JSON to an older node (which would close the
/// connection on it): forwarding and MQTT routing work across versions.
/// The question is asked once per connection.
#[tokio::test]
async fn peer_calls_are_binary_only_to_nodes_that_read_them() {
    use ferry_broker::metadata::{Blob, PeerReply, PeerRequest, Resent};
    let publish = |n: u8| {
        Request::Peer(PeerRequest::QueuePublish {
            vhost: "/".into(),
            queue: "q".into(),
            batch: Blob::from(vec![n; 100]),
            id: None,
            seqs: Vec::new(),
            pipelined: true,
            after: None,
            resent: Resent::No,
        })
    };
    let route = |n: u8| {
        Request::Peer(PeerRequest::MqttRoute {
            messages: vec![(Blob::from(vec![n; 50]), Some("c".into())), (Blob::from(vec![n + 1; 3]), None)],
        })
    };
    // (version, a publish's frame kind, a route's frame kind)
    for (version, publish_kind, route_kind) in [(2, 11u8, 11u8), (1, 11, 9), (0, 9, 9)] {
        let (addr, kinds, routed) = fake_node(version).await;
        let pool = Pool::new(4, QUORUM.into());
        for n in 0..3 {
            match pool.call(&addr, &publish(n), T).await {
                Ok(Response::Peer(Ok(PeerReply::QueueDeliveries { deliveries, .. }))) => {
                    assert_eq!(deliveries[0].batch.bytes()[..], [n; 100], "version {version}");
                }
                other => panic!("version {version}: {other:?}"),
            }
            match pool.call(&addr, &route(n), T).await {
                Ok(Response::Peer(Ok(PeerReply::Done))) => {}
                other => panic!("version {version}: {other:?}"),
            }
        }
        let expected: Vec<u8> = std::iter::once(10).chain((0..3).flat_map(|_| [publish_kind, route_kind])).collect();
        assert_eq!(*kinds.lock().unwrap(), expected, "version {version}: one ping, then peer calls");
        let want: Vec<Vec<u8>> = (0..3u8).flat_map(|n| [vec![n; 50], vec![n + 1; 3]]).collect();
        assert_eq!(*routed.lock().unwrap(), want, "version {version}: every routed message, in order");
    }
}

/// A replica fetch goes in the binary form to a node whose pong says it
/// reads it, and as JSON to an older node (which would close the
/// connection on the binary form): replication works across versions.
#[tokio::test]
async fn replica_fetches_are_binary_only_to_nodes_that_read_them() {
    use crate::replication::{FetchPartition, ReplicaFetchRequest};
    let fetch = Request::ReplicaFetch(ReplicaFetchRequest {
        partitions: (0..3)
            .map(|n| FetchPartition {
                topic_id: Uuid::from_u128(n),
                partition: n as i32,
                leader_epoch: 2,
                fetch_offset: 10,
                acked_end: 8,
            })
            .collect(),
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    });
    for (version, fetch_kind) in [(2, 12u8), (0, 7)] {
        let (addr, kinds, _) = fake_node(version).await;
        let pool = Pool::new(4, QUORUM.into());
        for _ in 0..2 {
            match pool.call(&addr, &fetch, T).await {
                Ok(Response::ReplicaFetch(r)) => {
                    assert_eq!(r.partitions.len(), 3, "version {version}");
                    for (n, p) in r.partitions.iter().enumerate() {
                        assert_eq!(p.records.to_vec().unwrap(), [n as u8; 3]);
                        assert_eq!(p.result.unwrap().high_watermark, 8);
                    }
                }
                other => panic!("version {version}: {other:?}"),
            }
        }
        assert_eq!(*kinds.lock().unwrap(), [10, fetch_kind, fetch_kind], "one ping, then fetches");
    }
}

/// `count` copies of `body`, each with one byte flipped at a place and by
/// bits drawn from an xorshift sequence started at `seed`: the garbled
/// inputs the decoders' tests feed in (an error or some other reading,
/// never a panic). `body` must not be empty.
pub(crate) fn garbled(body: &[u8], mut seed: u32, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..count).map(move |_| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let mut bad = body.to_vec();
        let at = seed as usize % bad.len();
        bad[at] ^= (seed >> 8) as u8 | 1;
        bad
    })
}
