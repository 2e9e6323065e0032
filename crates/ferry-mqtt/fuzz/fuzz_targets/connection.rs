//! Any bytes as a client's whole byte stream, through `connection::run`
//! against a real hub (retained store, session queues), then EOF. A panic
//! or a hang is a bug. Inputs should start with a CONNECT (the seeds do).
//!
//! Real time, not paused: the connection waits for fsyncs done on the
//! flusher thread, and a paused clock would jump over those waits and leave
//! the connection running into the next input.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct State {
    runtime: tokio::runtime::Runtime,
    hub: Arc<ferry_mqtt::Hub>,
    _shutdown: tokio::sync::watch::Sender<bool>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-mqtt-fuzz-{}", std::process::id()));
        let broker = ferry_broker::Broker::open(ferry_broker::BrokerConfig { data_dir: dir, ..Default::default() })
            .expect("broker");
        let config = ferry_mqtt::MqttConfig { max_packet_size: 64 * 1024, ..Default::default() };
        let hub = ferry_mqtt::Hub::open(broker, config).expect("hub");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let (tx, rx) = tokio::sync::watch::channel(false);
        State { runtime, hub, _shutdown: tx, shutdown: rx }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    let peer = "127.0.0.1:1".parse().expect("address");
    s.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let conn = tokio::spawn(ferry_mqtt::connection::run(server, peer, s.hub.clone(), s.shutdown.clone()));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        // Drain what the broker says so it never blocks on a full pipe; the
        // EOF it got must end the connection.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
            conn.await
        })
        .await;
        assert!(ended.is_ok(), "the connection did not end within 20 s of EOF");
    });
});
