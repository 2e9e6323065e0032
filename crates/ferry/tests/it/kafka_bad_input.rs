//! Bad input over raw sockets while a real client keeps working: the right
//! error code or a closed connection, no crash, stored data intact.

use std::io::{Read, Write};
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::raw::{closed, connect, produce_result, produce_v3, request};
use crate::support::{Broker, consume_all, create_topic, producer};

fn batch(value: &str) -> Vec<u8> {
    crate::raw::batch(value, -1, -1, -1)
}

fn produce_error(resp: &[u8], topic: &str) -> i16 {
    produce_result(resp, topic).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_errors_or_closed_connections_while_clients_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    create_topic(&broker, "victim", 2, &[]).await;

    // A real client produces throughout.
    let p = producer(&broker, &[("acks", "all")]);
    let client = tokio::spawn(async move {
        for i in 0..2000 {
            let v = format!("{i}");
            p.send(FutureRecord::to("victim").key(&v).payload(&v), Duration::from_secs(30)).await.unwrap();
        }
    });

    let attack = {
        let port = broker.port;
        tokio::task::spawn_blocking(move || {
            // ApiVersions with a version from the future: v0 answer with
            // UNSUPPORTED_VERSION (35) and the supported ranges (KIP-511).
            let mut s = connect(port);
            let r = request(&mut s, 18, 99, 7, &[]);
            assert_eq!(i16::from_be_bytes([r[0], r[1]]), 35);
            assert!(i32::from_be_bytes(r[2..6].try_into().unwrap()) > 5, "supported APIs listed");
            // An unknown API key: UNSUPPORTED_VERSION, and the connection stays usable.
            let r = request(&mut s, 999, 0, 8, &[]);
            assert_eq!(i16::from_be_bytes([r[0], r[1]]), 35);
            let r = request(&mut s, 18, 0, 9, &[]);
            assert_eq!(i16::from_be_bytes([r[0], r[1]]), 0);

            // A corrupt batch: CORRUPT_MESSAGE (2); a bad acks: INVALID_REQUIRED_ACKS (21);
            // an unknown partition: UNKNOWN_TOPIC_OR_PARTITION (3); a magic v1 batch: CORRUPT_MESSAGE.
            let mut corrupt = batch("evil");
            let n = corrupt.len();
            corrupt[n - 1] ^= 0xff;
            let r = request(&mut s, 0, 3, 10, &produce_v3("victim", 0, -1, &corrupt));
            assert_eq!(produce_error(&r, "victim"), 2);
            let r = request(&mut s, 0, 3, 11, &produce_v3("victim", 0, 5, &batch("x")));
            assert_eq!(produce_error(&r, "victim"), 21);
            let r = request(&mut s, 0, 3, 12, &produce_v3("victim", 99, 1, &batch("x")));
            assert_eq!(produce_error(&r, "victim"), 3);
            let mut old = batch("old");
            old[16] = 1;
            let r = request(&mut s, 0, 3, 13, &produce_v3("victim", 0, 1, &old));
            assert_eq!(produce_error(&r, "victim"), 2);
            let r = request(&mut s, 0, 3, 14, &produce_v3("victim", 0, 1, &batch("x")[..30]));
            assert_eq!(produce_error(&r, "victim"), 2);

            // Frames that cannot be parsed: the connection closes.
            let frames: Vec<Vec<u8>> = vec![
                (-5i32).to_be_bytes().to_vec(),                                   // negative size
                (i32::MAX).to_be_bytes().to_vec(),                                // huge size
                [0, 0, 0, 3, 1, 2, 3].to_vec(),                                   // shorter than a header
                [0, 0, 0, 12, 0, 0, 0, 3, 0, 0, 0, 1, 0x7f, 0x7f, 0, 0].to_vec(), // Produce v3, client id longer than the frame
                [0, 0, 0, 10, 0, 1, 0, 4, 0, 0, 0, 1, 0, 0].to_vec(),             // Fetch v4 with no body
            ];
            for f in frames {
                let mut s = connect(port);
                s.write_all(&f).unwrap();
                assert!(closed(&mut s), "frame {f:?} left the connection open");
            }
            // Random bytes, many times over.
            let mut x: u64 = 0x9e3779b97f4a7c15;
            for _ in 0..200 {
                let mut s = connect(port);
                let mut junk = vec![0u8; 64];
                for byte in &mut junk {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *byte = x as u8;
                }
                // A plausible size prefix so the body reaches the decoder.
                junk[..4].copy_from_slice(&60i32.to_be_bytes());
                let _ = s.write_all(&junk);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        })
    };
    attack.await.unwrap();
    client.await.unwrap();
    // The client's 2000 records are all there and nothing else got in.
    let got = consume_all(&broker, "victim", 2, 2000);
    assert_eq!(got.len(), 2000);
}
