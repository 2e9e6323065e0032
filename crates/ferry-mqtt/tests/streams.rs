//! The fuzz seeds (client byte streams starting with CONNECT), whole and cut
//! off at every byte, through `connection::run` against a real hub: each
//! connection ends at EOF without a panic, and the hub keeps serving.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn feed(hub: &Arc<ferry_mqtt::Hub>, shutdown: &tokio::sync::watch::Receiver<bool>, data: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let peer = "127.0.0.1:1".parse().unwrap();
    let conn = tokio::spawn(ferry_mqtt::connection::run(server, peer, hub.clone(), shutdown.clone()));
    client.write_all(data).await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let _ = client.read_to_end(&mut got).await;
        let _ = conn.await.unwrap();
    })
    .await
    .unwrap_or_else(|_| panic!("no end after EOF for {data:02x?}"));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_streams_whole_and_truncated_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ferry_broker::testing::open(ferry_broker::BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let hub = ferry_mqtt::Hub::open(broker.clone(), ferry_mqtt::MqttConfig::default()).unwrap();
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/packet");
    let mut names: Vec<_> = std::fs::read_dir(&seeds).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(names.len() >= 7, "seeds in {}", seeds.display());
    for path in names {
        let data = std::fs::read(&path).unwrap();
        // Whole: every seed is accepted (a CONNACK whose code, byte 3 in
        // 3.1.1 and 5.0 alike, is success).
        let got = feed(&hub, &shutdown, &data).await;
        assert_eq!((got.first(), got.get(3)), (Some(&0x20), Some(&0)), "{}: {got:02x?}", path.display());
        for cut in 1..data.len() {
            feed(&hub, &shutdown, &data[..cut]).await;
        }
    }
    broker.shutdown();
}
