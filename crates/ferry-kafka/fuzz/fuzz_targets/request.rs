//! Any bytes as a request frame: decoded and handled as a connection would,
//! against a real broker. A panic or a hang is a bug.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

struct State {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<ferry_kafka::Ctx>,
}

static STATE: OnceLock<State> = OnceLock::new();

fn state() -> &'static State {
    STATE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-{}", std::process::id()));
        let mut config = ferry_broker::BrokerConfig { data_dir: dir, ..Default::default() };
        config.groups.initial_rebalance_delay = std::time::Duration::ZERO;
        // The test-support controller: a quorum of one applied in memory.
        let broker = ferry_broker::testing::open(config).expect("broker");
        // Paused time: long polls and timeouts complete instantly.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
        runtime.block_on(broker.create_topic("t", Some(2), &BTreeMap::new(), false)).expect("topic");
        let ctx = Arc::new(ferry_kafka::Ctx { broker, config: ferry_kafka::KafkaConfig::default() });
        State { runtime, ctx }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    // A JoinGroup may wait for other members (on the coordinator's own
    // thread); with paused time the bound passes as soon as the runtime idles.
    let frame = bytes::Bytes::copy_from_slice(data);
    s.runtime.block_on(async {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(600), ferry_kafka::handle_frame(&s.ctx, frame)).await;
    });
});
