//! A publish the broker could not store is never acknowledged as stored.
//! MQTT 5 says so with a reason code (PUBACK/PUBREC 0x80); MQTT 3.1.1 has
//! no negative acknowledgement, so the connection closes without one and
//! the client sends the message again when it reconnects. (Before: a 3.1.1
//! publisher got a plain PUBACK/PUBREC, as if stored.) Here the store that
//! fails is a Kafka bridge rule's append to a topic that cannot exist.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::metadata::{MqttRecord, MqttState};
use ferry_mqtt::config::ToKafka;
use ferry_mqtt::packet::{self, Connect, Packet, Publish, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

async fn hub(dir: &std::path::Path) -> Arc<ferry_mqtt::Hub> {
    open(dir, None).await.1
}

/// A broker and hub on `dir`, with the MQTT metadata of an earlier life
/// (the test controller keeps its image in memory only).
async fn open(dir: &std::path::Path, earlier: Option<&MqttState>) -> (Arc<ferry_broker::Broker>, Arc<ferry_mqtt::Hub>) {
    let broker =
        ferry_broker::testing::open(ferry_broker::BrokerConfig { data_dir: dir.to_path_buf(), ..Default::default() })
            .unwrap();
    for (client_id, session) in earlier.map(|s| s.sessions.clone()).unwrap_or_default() {
        broker.submit_mqtt(MqttRecord::PutSession { client_id, session }).await.unwrap();
    }
    let rule = ToKafka { filter: "k/#".into(), topic: "no such topic!".into() };
    let config = ferry_mqtt::MqttConfig { to_kafka: Arc::new(vec![rule]), ..Default::default() };
    (broker.clone(), ferry_mqtt::Hub::open(broker, config).unwrap())
}

/// A connected raw client of `version`.
async fn connect(
    hub: &Arc<ferry_mqtt::Hub>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    version: Version,
    id: &str,
) -> DuplexStream {
    connect_with(hub, shutdown, version, id, true).await
}

/// A connected raw client of `version`, with a clean or resumed session.
async fn connect_with(
    hub: &Arc<ferry_mqtt::Hub>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    version: Version,
    id: &str,
    clean_start: bool,
) -> DuplexStream {
    let (mut io, server) = tokio::io::duplex(64 * 1024);
    let peer = "127.0.0.1:1".parse().unwrap();
    tokio::spawn(ferry_mqtt::connection::run(server, peer, hub.clone(), shutdown.clone()));
    let connect = Packet::Connect(Box::new(Connect {
        version,
        clean_start,
        keep_alive: 0,
        client_id: id.into(),
        username: None,
        password: None,
        will: None,
        session_expiry: None,
        receive_max: None,
        max_packet_size: None,
        topic_alias_max: None,
        auth_method: None,
    }));
    io.write_all(&packet::encode_client(&connect, version).unwrap()).await.unwrap();
    let reply = next(&mut io).await.expect("CONNACK");
    assert_eq!((reply[0], reply.get(3)), (0x20, Some(&0)), "CONNACK accepted: {reply:?}");
    io
}

/// The next whole packet from the server (`None`: the connection closed).
async fn next(io: &mut DuplexStream) -> Option<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = Vec::new();
        loop {
            if buf.len() >= 2 {
                // Small packets only: a one-byte remaining length.
                let whole = 2 + usize::from(buf[1]);
                if buf.len() >= whole {
                    return Some(buf[..whole].to_vec());
                }
            }
            let mut chunk = [0u8; 1024];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("an answer or a close within 10 s")
}

fn publish(qos: u8, pid: u16) -> Packet {
    Packet::Publish(Box::new(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "k/x".into(),
        pid: Some(pid),
        payload: Bytes::from_static(b"m"),
        props: Default::default(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstored_publish_is_refused_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);

    // MQTT 5: PUBACK and PUBREC carry 0x80, and the connection goes on.
    let mut v5 = connect(&hub, &shutdown, Version::V5, "five").await;
    for (qos, kind) in [(1, 0x40), (2, 0x50)] {
        v5.write_all(&packet::encode_client(&publish(qos, 7), Version::V5).unwrap()).await.unwrap();
        let ack = next(&mut v5).await.expect("an acknowledgement");
        assert_eq!((ack[0], ack[2..4].to_vec(), ack.get(4)), (kind, vec![0, 7], Some(&0x80)), "QoS {qos}: {ack:?}");
    }
    v5.write_all(&packet::encode_client(&Packet::Pingreq, Version::V5).unwrap()).await.unwrap();
    assert_eq!(next(&mut v5).await.map(|p| p[0]), Some(0xd0), "still connected");

    // MQTT 3.1.1: no acknowledgement at all; the connection closes.
    for qos in [1, 2] {
        let mut v3 = connect(&hub, &shutdown, Version::V3, "three").await;
        v3.write_all(&packet::encode_client(&publish(qos, 9), Version::V3).unwrap()).await.unwrap();
        assert_eq!(next(&mut v3).await, None, "QoS {qos}: closed without PUBACK/PUBREC");
    }
}

/// A QoS 2 publish refused (PUBREC 0x80) leaves no packet id behind:
/// MQTT 5 ends the exchange there and frees the id, so the client's next
/// message under it is a new one, routed (here refused again), not taken
/// for a resend of a message already stored and acknowledged with 0x00
/// (which would lose it). Before, the id was received before routing and
/// kept after the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_qos2_publish_frees_its_packet_id() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let mut v5 = connect(&hub, &shutdown, Version::V5, "five").await;
    for attempt in ["first", "the id reused"] {
        v5.write_all(&packet::encode_client(&publish(2, 7), Version::V5).unwrap()).await.unwrap();
        let ack = next(&mut v5).await.expect("PUBREC");
        assert_eq!((ack[0], ack.get(4)), (0x50, Some(&0x80)), "{attempt}: refused, not taken for a resend: {ack:?}");
    }
}

/// A 3.1.1 persistent session's QoS 2 publish that could not be stored
/// (the connection closed without PUBREC) leaves no received id in the
/// session's store: after a restart, the client's resend is routed again
/// (and refused again here), not taken for a message already stored and
/// acknowledged. Before, the id was written beside the routing and stayed
/// on disk: a crash between the two could do the same to a message that
/// was never stored (docs/protocols.md, "QoS 2 and a crash").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstored_qos2_publish_leaves_no_received_id_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (broker, hub) = open(dir.path(), None).await;
    let mut v3 = connect_with(&hub, &shutdown, Version::V3, "three", false).await;
    v3.write_all(&packet::encode_client(&publish(2, 9), Version::V3).unwrap()).await.unwrap();
    assert_eq!(next(&mut v3).await, None, "closed without PUBREC");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(hub);
    let earlier = broker.metadata().mqtt.clone();
    broker.shutdown();
    drop(broker);

    let (_broker, hub) = open(dir.path(), Some(&earlier)).await;
    let mut v3 = connect_with(&hub, &shutdown, Version::V3, "three", false).await;
    let resend = match publish(2, 9) {
        Packet::Publish(mut p) => {
            p.dup = true;
            Packet::Publish(p)
        }
        _ => unreachable!(),
    };
    v3.write_all(&packet::encode_client(&resend, Version::V3).unwrap()).await.unwrap();
    assert_eq!(next(&mut v3).await, None, "the resend is routed (and refused) again, not acknowledged unrouted");
}
