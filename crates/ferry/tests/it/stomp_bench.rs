//! `ferry bench stomp`, the load client of scripts/bench-stomp.sh, against
//! the real binary: every SEND is stored once its receipt came, and a
//! consumer's ACKs settle exactly what it read (prefetched extras go back).

use std::process::Command;

use serde_json::Value;

use crate::amqp_support;
use crate::support::Broker;

fn bench(b: &Broker, args: &[&str]) -> Value {
    let addr = format!("127.0.0.1:{}", b.stomp_port);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["bench", "stomp"])
        .args(args)
        .args(["--addr", &addr, "--destination", "/queue/bench", "--json"])
        .env("FERRY_LOG", "warn")
        .output()
        .expect("run ferry bench stomp");
    assert!(out.status.success(), "ferry bench stomp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_receipts_then_consume_with_individual_acks() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    // 2,500 is not a multiple of 7: the last SEND must carry a receipt of its own.
    let s = bench(&b, &["send", "-n", "2500", "--size", "100", "--receipt-every", "7", "--window", "50"]);
    assert_eq!(s["messages"], 2500, "{s}");
    assert_eq!(s["bytes"], 250_000);
    assert!(s["msgs_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{s}");
    let (_conn, ch) = amqp_support::channel(&b).await;
    assert_eq!(amqp_support::ready(&ch, "bench").await, 2500, "every receipted SEND is in the queue");

    // A prefetch larger than what is read: the unread rest returns to the queue.
    let c = bench(&b, &["consume", "-n", "2000", "--prefetch", "300"]);
    assert_eq!(c["messages"], 2000, "{c}");
    assert_eq!(c["bytes"], 200_000, "bodies arrive whole");
    // The prefetched rest is requeued when the connection closes, just after the client exits.
    let mut ready = 0;
    for _ in 0..100 {
        ready = amqp_support::ready(&ch, "bench").await;
        if ready == 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 500, "2,000 acknowledged, the prefetched rest requeued");
    let c = bench(&b, &["consume", "-n", "500", "--prefetch", "1"]);
    assert_eq!(c["messages"], 500, "{c}");
    assert_eq!(amqp_support::ready(&ch, "bench").await, 0);
}
