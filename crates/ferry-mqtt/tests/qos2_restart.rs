//! Outbound QoS 2 (and QoS 1) exchanges of a persistent session across a
//! broker restart: what was in flight is resent under its original packet
//! id (PUBLISH with DUP), and what the client had PUBREC'd gets its PUBREL
//! again, never a new PUBLISH (MQTT 3.1.1 and 5.0 section 4.4).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_broker::metadata::{MqttRecord, MqttState};
use ferry_mqtt::message::Message;
use ferry_mqtt::packet::{self, Connect, Packet, SubOptions, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const V: Version = Version::V5;

/// Opens a broker and hub on `dir`, with the MQTT metadata of an earlier
/// life (the test controller keeps its image in memory only; a real node's
/// comes back from its Raft log).
async fn open(dir: &std::path::Path, earlier: Option<&MqttState>) -> (Arc<ferry_broker::Broker>, Arc<ferry_mqtt::Hub>) {
    let broker =
        ferry_broker::testing::open(ferry_broker::BrokerConfig { data_dir: dir.to_path_buf(), ..Default::default() })
            .unwrap();
    for (client_id, session) in earlier.map(|s| s.sessions.clone()).unwrap_or_default() {
        broker.submit_mqtt(MqttRecord::PutSession { client_id, session }).await.unwrap();
    }
    let hub = ferry_mqtt::Hub::open(broker.clone(), ferry_mqtt::MqttConfig::default()).unwrap();
    (broker, hub)
}

struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(hub: &Arc<ferry_mqtt::Hub>, shutdown: &tokio::sync::watch::Receiver<bool>) -> (Client, bool) {
        let (io, server) = tokio::io::duplex(256 * 1024);
        let peer = "127.0.0.1:1".parse().unwrap();
        tokio::spawn(ferry_mqtt::connection::run(server, peer, hub.clone(), shutdown.clone()));
        let mut c = Client { io, buf: Vec::new() };
        c.send(&Packet::Connect(Box::new(Connect {
            version: V,
            clean_start: false,
            keep_alive: 0,
            client_id: "sub".into(),
            username: None,
            password: None,
            will: None,
            session_expiry: Some(3600),
            receive_max: None,
            max_packet_size: None,
            topic_alias_max: None,
            auth_method: None,
        })))
        .await;
        match c.recv().await {
            Packet::Connack(a) if a.code == 0 => (c, a.session_present),
            p => panic!("CONNACK expected, got {p:?}"),
        }
    }

    async fn send(&mut self, p: &Packet) {
        self.io.write_all(&packet::encode_client(p, V).unwrap()).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                // Fixed header: type byte, then the remaining length varint.
                let mut len = 0usize;
                let mut at = 1;
                let mut whole = None;
                while at < self.buf.len() && at <= 4 {
                    len |= usize::from(self.buf[at] & 0x7f) << (7 * (at - 1));
                    if self.buf[at] & 0x80 == 0 {
                        whole = Some(at + 1 + len);
                        break;
                    }
                    at += 1;
                }
                if let Some(n) = whole.filter(|n| *n <= self.buf.len()) {
                    let frame: Vec<u8> = self.buf.drain(..n).collect();
                    return server_packet(&frame[n - len..], frame[0]);
                }
                let mut chunk = [0u8; 4096];
                let got = self.io.read(&mut chunk).await.unwrap();
                assert!(got > 0, "connection closed");
                self.buf.extend_from_slice(&chunk[..got]);
            }
        })
        .await
        .expect("a packet within 10 s")
    }

    async fn publish(&mut self) -> Box<packet::Publish> {
        match self.recv().await {
            Packet::Publish(p) => p,
            p => panic!("PUBLISH expected, got {p:?}"),
        }
    }
}

/// The server packets this test reads, decoded by hand (the crate's codec
/// decodes only what clients send).
fn server_packet(body: &[u8], first: u8) -> Packet {
    let pid = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match first >> 4 {
        2 => {
            Packet::Connack(packet::Connack { session_present: body[0] & 1 == 1, code: body[1], ..Default::default() })
        }
        3 => {
            let qos = (first >> 1) & 3;
            let topic_end = 2 + usize::from(pid(0));
            let mut at = topic_end;
            let id = (qos > 0).then(|| {
                at += 2;
                pid(topic_end)
            });
            // Properties: a one-byte length is enough here.
            at += 1 + usize::from(body[at]);
            Packet::Publish(Box::new(packet::Publish {
                dup: first & 0b1000 != 0,
                qos,
                retain: first & 1 == 1,
                topic: String::from_utf8_lossy(&body[2..topic_end]).into(),
                pid: id,
                payload: Bytes::copy_from_slice(&body[at..]),
                props: Default::default(),
            }))
        }
        6 => Packet::Pubrel { pid: pid(0), code: 0 },
        7 => Packet::Pubcomp { pid: pid(0), code: 0 },
        9 => Packet::Suback { pid: pid(0), codes: body[3..].to_vec() },
        t => panic!("unexpected packet type {t}"),
    }
}

fn message(payload: &'static str, qos: u8) -> Arc<Message> {
    Arc::new(Message {
        topic: "t".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos,
        retain: false,
        props: Default::default(),
        expires_at: None,
        origin: None,
        timestamp: 0,
    })
}

/// Runs one exchange before a restart (or a reconnect when `restart` is
/// false) and checks the resumed session's first packets.
async fn in_flight_survives(restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let (broker, hub) = open(dir.path(), None).await;
    let (mut c, _) = Client::connect(&hub, &shutdown).await;
    let qos2 = SubOptions { qos: 2, no_local: false, retain_as_published: false, retain_handling: 0 };
    c.send(&Packet::Subscribe { pid: 1, subscription_id: None, filters: vec![("t".into(), qos2)] }).await;
    assert!(matches!(c.recv().await, Packet::Suback { pid: 1, .. }));
    // Spread the queue offsets so that packet ids counted from 1 again
    // cannot pass for the original ones.
    for _ in 0..3 {
        let w = hub.publish(message("skip", 1)).unwrap();
        drop(w);
        let p = c.publish().await;
        c.send(&Packet::Puback { pid: p.pid.unwrap(), code: 0 }).await;
    }
    for (payload, qos) in [("a", 2), ("b", 2), ("c", 1)] {
        drop(hub.publish(message(payload, qos)).unwrap());
    }
    let a = c.publish().await;
    let b = c.publish().await;
    let q1 = c.publish().await;
    assert_eq!((&*a.payload, &*b.payload, &*q1.payload), (&b"a"[..], &b"b"[..], &b"c"[..]));
    let (pa, pb, pc) = (a.pid.unwrap(), b.pid.unwrap(), q1.pid.unwrap());
    // "a" is received (PUBREC -> PUBREL); "b" and "c" stay unacknowledged.
    c.send(&Packet::Pubrec { pid: pa, code: 0 }).await;
    assert!(matches!(c.recv().await, Packet::Pubrel { pid, .. } if pid == pa));
    drop(c);
    let hub = if restart {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(hub);
        let earlier = broker.metadata().mqtt.clone();
        broker.shutdown();
        drop(broker);
        open(dir.path(), Some(&earlier)).await.1
    } else {
        hub
    };
    let (mut c, present) = Client::connect(&hub, &shutdown).await;
    assert!(present);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(match c.recv().await {
            Packet::Pubrel { pid, .. } => format!("PUBREL {pid}"),
            Packet::Publish(p) => {
                format!(
                    "PUBLISH {} dup={} qos={} {}",
                    p.pid.unwrap(),
                    p.dup,
                    p.qos,
                    String::from_utf8_lossy(&p.payload)
                )
            }
            p => panic!("unexpected {p:?}"),
        });
    }
    assert_eq!(
        got,
        vec![
            format!("PUBREL {pa}"),
            format!("PUBLISH {pb} dup=true qos=2 b"),
            format!("PUBLISH {pc} dup=true qos=1 c")
        ]
    );
    // Completing everything leaves nothing to resend on the next connect.
    c.send(&Packet::Pubcomp { pid: pa, code: 0 }).await;
    c.send(&Packet::Pubrec { pid: pb, code: 0 }).await;
    assert!(matches!(c.recv().await, Packet::Pubrel { pid, .. } if pid == pb));
    c.send(&Packet::Pubcomp { pid: pb, code: 0 }).await;
    c.send(&Packet::Puback { pid: pc, code: 0 }).await;
    drop(hub.publish(message("d", 2)).unwrap());
    let d = c.publish().await;
    assert_eq!((&*d.payload, d.dup), (&b"d"[..], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_qos2_and_qos1_keep_their_packet_ids_across_a_restart() {
    in_flight_survives(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_qos2_and_qos1_keep_their_packet_ids_across_a_reconnect() {
    in_flight_survives(false).await;
}
