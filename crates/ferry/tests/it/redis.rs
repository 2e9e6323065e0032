//! The Redis front-end end to end: the real binary and the `redis` crate
//! (RESP2 and RESP3), raw sockets for bad input, and librdkafka / lapin on
//! the other side for the cross-protocol cases.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicCancelOptions};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value, cmd};

use crate::amqp_support;
use crate::support::{self, Broker};

async fn connect(b: &Broker, resp3: bool) -> MultiplexedConnection {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/{proto}", b.redis_port)).expect("redis url");
    client.get_multiplexed_async_connection().await.expect("redis connect")
}

/// Sends raw bytes, returns what came back until the server closed or
/// stopped answering.
fn raw(b: &Broker, input: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", b.redis_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(input).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn fields(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().flat_map(fields).collect(),
        Value::BulkString(b) => vec![String::from_utf8_lossy(b).into_owned()],
        Value::SimpleString(s) => vec![s.clone()],
        Value::Int(n) => vec![n.to_string()],
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [fields(k), fields(v)].concat()).collect(),
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_commands_and_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let pong: String = cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = cmd("ECHO").arg("hi there").query_async(&mut c).await.unwrap();
    assert_eq!(echo, "hi there");
    let _: () = cmd("CLIENT").arg("SETNAME").arg("worker-1").query_async(&mut c).await.unwrap();
    let name: String = cmd("CLIENT").arg("GETNAME").query_async(&mut c).await.unwrap();
    assert_eq!(name, "worker-1");
    let id: i64 = cmd("CLIENT").arg("ID").query_async(&mut c).await.unwrap();
    assert!(id > 0);
    let _: () = cmd("SELECT").arg(0).query_async(&mut c).await.unwrap();
    let e = cmd("SELECT").arg(1).query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("DB index is out of range"), "{e}");
    let info: String = cmd("INFO").arg("server").query_async(&mut c).await.unwrap();
    assert!(info.contains("redis_version:"), "{info}");
    let e = cmd("GET").arg("k").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("unknown command 'GET'"), "{e}");
    let docs: Value = cmd("COMMAND").arg("DOCS").query_async(&mut c).await.unwrap();
    assert!(matches!(docs, Value::Array(_) | Value::Map(_)), "{docs:?}");
    // The connection still serves after an error.
    let pong: String = cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");

    // HELLO 3 switches to RESP3: maps come back as maps.
    let mut c3 = connect(&b, true).await;
    let hello: Value = cmd("HELLO").arg(3).query_async(&mut c3).await.unwrap();
    let Value::Map(pairs) = hello else { panic!("HELLO 3 answers a map: {hello:?}") };
    assert!(pairs.iter().any(|(k, v)| fields(k) == ["proto"] && fields(v) == ["3"]));
    // AUTH with the AMQP users: a wrong password is refused.
    let e = cmd("AUTH").arg("guest").arg("nope").query_async::<()>(&mut c3).await.unwrap_err();
    assert!(e.to_string().contains("WRONGPASS"), "{e}");
    let _: () = cmd("AUTH").arg("guest").arg("guest").query_async(&mut c3).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_add_range_read_delete_and_trim() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let first: String = cmd("XADD").arg("events").arg("*").arg("n").arg("1").query_async(&mut c).await.unwrap();
    let (ms, seq) = first.split_once('-').unwrap();
    assert!(ms.parse::<u64>().unwrap() > 1_600_000_000_000 && seq.parse::<u64>().is_ok(), "{first}");
    let far = format!("{}-5", ms.parse::<u64>().unwrap() + 1000);
    let id: String = cmd("XADD").arg("events").arg(&far).arg("n").arg("2").query_async(&mut c).await.unwrap();
    assert_eq!(id, far, "explicit ids are kept");
    let e = cmd("XADD").arg("events").arg(&first).arg("n").arg("x").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("equal or smaller"), "{e}");
    let next: String = cmd("XADD")
        .arg("events")
        .arg(format!("{}-*", far.split('-').next().unwrap()))
        .arg("n")
        .arg("3")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(next.ends_with("-6"), "{next}");
    let len: i64 = c.xlen("events").await.unwrap();
    assert_eq!(len, 3);

    let all: Value = cmd("XRANGE").arg("events").arg("-").arg("+").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&all), [first.as_str(), "n", "1", far.as_str(), "n", "2", next.as_str(), "n", "3"]);
    let rev: Value =
        cmd("XREVRANGE").arg("events").arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut c).await.unwrap();
    assert_eq!(fields(&rev), [next.as_str(), "n", "3"]);
    let after: Value = cmd("XRANGE")
        .arg("events")
        .arg(format!("({first}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&after), [far.as_str(), "n", "2"]);

    let read: Value =
        cmd("XREAD").arg("COUNT").arg(2).arg("STREAMS").arg("events").arg("0").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&read), ["events", first.as_str(), "n", "1", far.as_str(), "n", "2"]);
    let none: Value = cmd("XREAD").arg("STREAMS").arg("events").arg("$").query_async(&mut c).await.unwrap();
    assert_eq!(none, Value::Nil);

    let deleted: i64 = cmd("XDEL").arg("events").arg(&far).arg("1-1").query_async(&mut c).await.unwrap();
    assert_eq!(deleted, 1);
    let all: Value = cmd("XRANGE").arg("events").arg("-").arg("+").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&all), [first.as_str(), "n", "1", next.as_str(), "n", "3"]);
    assert_eq!(c.xlen::<_, i64>("events").await.unwrap(), 2);

    for i in 0..5 {
        let _: String = cmd("XADD")
            .arg("events")
            .arg("MAXLEN")
            .arg("~")
            .arg(4)
            .arg("*")
            .arg("i")
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(c.xlen::<_, i64>("events").await.unwrap(), 4, "MAXLEN keeps the newest 4");
    let trimmed: i64 = cmd("XTRIM").arg("events").arg("MAXLEN").arg(1).query_async(&mut c).await.unwrap();
    assert_eq!(trimmed, 3);
    let left: Value = cmd("XRANGE").arg("events").arg("-").arg("+").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&left)[1..], ["i", "4"]);
    let t: String = cmd("TYPE").arg("events").query_async(&mut c).await.unwrap();
    assert_eq!(t, "stream");
    let missing: i64 = c.xlen("nothing-here").await.unwrap();
    assert_eq!(missing, 0);

    let (status, metrics) = tokio::task::block_in_place(|| support::http(&b, "GET", "/metrics", None));
    assert_eq!(status, 200);
    assert!(metrics.contains("ferry_redis_stream_entries_total 8"), "{metrics}");
    assert!(metrics.contains(r#"ferry_requests_total{protocol="redis",api="XADD"}"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_deliver_ack_and_claim_from_a_dead_worker() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let _: () = cmd("XGROUP")
        .arg("CREATE")
        .arg("jobs")
        .arg("workers")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    let e =
        cmd("XGROUP").arg("CREATE").arg("jobs").arg("workers").arg("$").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("BUSYGROUP"), "{e}");
    let mut ids = Vec::new();
    for i in 0..4 {
        let id: String = cmd("XADD").arg("jobs").arg("*").arg("job").arg(i).query_async(&mut c).await.unwrap();
        ids.push(id);
    }
    // Worker a takes two and dies without acking; worker b takes two and acks.
    let a: Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("a")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&a), ["jobs", &ids[0], "job", "0", &ids[1], "job", "1"]);
    let bw: Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("b")
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&bw), ["jobs", &ids[2], "job", "2", &ids[3], "job", "3"]);
    let acked: i64 = cmd("XACK")
        .arg("jobs")
        .arg("workers")
        .arg(&ids[2])
        .arg(&ids[3])
        .arg(&ids[3])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(acked, 2);

    let summary: Value = cmd("XPENDING").arg("jobs").arg("workers").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&summary), ["2", &ids[0], &ids[1], "a", "2"]);
    let history: Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("a")
        .arg("STREAMS")
        .arg("jobs")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&history), ["jobs", &ids[0], "job", "0", &ids[1], "job", "1"], "a's own pending entries");

    // b claims a's entries: XAUTOCLAIM with no idle minimum.
    let claimed: Value = cmd("XAUTOCLAIM")
        .arg("jobs")
        .arg("workers")
        .arg("b")
        .arg(0)
        .arg("0-0")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&claimed), [ids[1].as_str(), &ids[0], "job", "0"], "next cursor, then the claimed entry");
    let claimed: Value =
        cmd("XCLAIM").arg("jobs").arg("workers").arg("b").arg(0).arg(&ids[1]).query_async(&mut c).await.unwrap();
    assert_eq!(fields(&claimed), [ids[1].as_str(), "job", "1"]);
    let long_idle: Value = cmd("XCLAIM")
        .arg("jobs")
        .arg("workers")
        .arg("a")
        .arg(3_600_000)
        .arg(&ids[1])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&long_idle), Vec::<String>::new(), "not idle for an hour");
    let ext: Value =
        cmd("XPENDING").arg("jobs").arg("workers").arg("-").arg("+").arg(10).query_async(&mut c).await.unwrap();
    let ext = fields(&ext);
    assert_eq!((ext[0].as_str(), ext[1].as_str(), ext[3].as_str()), (ids[0].as_str(), "b", "2"), "{ext:?}");
    let acked: i64 =
        cmd("XACK").arg("jobs").arg("workers").arg(&ids[0]).arg(&ids[1]).query_async(&mut c).await.unwrap();
    assert_eq!(acked, 2);
    let groups: Value = cmd("XINFO").arg("GROUPS").arg("jobs").query_async(&mut c).await.unwrap();
    let g = fields(&groups);
    assert!(g.windows(2).any(|w| w == ["pending", "0"]) && g.windows(2).any(|w| w == ["consumers", "2"]), "{g:?}");
    let e = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("nope")
        .arg("a")
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NOGROUP"), "{e}");
    let removed: i64 =
        cmd("XGROUP").arg("DELCONSUMER").arg("jobs").arg("workers").arg("a").query_async(&mut c).await.unwrap();
    assert_eq!(removed, 0);
    let created: i64 =
        cmd("XGROUP").arg("CREATECONSUMER").arg("jobs").arg("workers").arg("c").query_async(&mut c).await.unwrap();
    assert_eq!(created, 1);
    let again: i64 =
        cmd("XGROUP").arg("CREATECONSUMER").arg("jobs").arg("workers").arg("c").query_async(&mut c).await.unwrap();
    assert_eq!(again, 0);
    // SETID back to the start: everything is new again; NOACK keeps nothing pending.
    let _: () = cmd("XGROUP").arg("SETID").arg("jobs").arg("workers").arg("0").query_async(&mut c).await.unwrap();
    let replay: Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("c")
        .arg("NOACK")
        .arg("STREAMS")
        .arg("jobs")
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&replay).iter().filter(|f| f.as_str() == "job").count(), 4);
    let summary: Value = cmd("XPENDING").arg("jobs").arg("workers").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&summary), ["0"]);
    let destroyed: i64 = cmd("XGROUP").arg("DESTROY").arg("jobs").arg("workers").query_async(&mut c).await.unwrap();
    assert_eq!(destroyed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_pending_entries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let _: () =
        cmd("XGROUP").arg("CREATE").arg("durable").arg("g").arg("0").arg("MKSTREAM").query_async(&mut c).await.unwrap();
    let id: String = cmd("XADD").arg("durable").arg("*").arg("k").arg("v").query_async(&mut c).await.unwrap();
    let _: Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("w")
        .arg("STREAMS")
        .arg("durable")
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    drop(c);
    b.restart();
    let mut c = connect(&b, false).await;
    let pending: Value = cmd("XPENDING").arg("durable").arg("g").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&pending), ["1", &id, &id, "w", "1"]);
    let next: String = cmd("XADD").arg("durable").arg("*").arg("k").arg("w").query_async(&mut c).await.unwrap();
    assert!(next > id || next.len() > id.len(), "ids keep increasing after a restart: {id} then {next}");
    let more: Value = cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("w")
        .arg("STREAMS")
        .arg("durable")
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(fields(&more), ["durable", &next, "k", "w"], "the group goes on after its last delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_reads_wake_on_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let _: () =
        cmd("XGROUP").arg("CREATE").arg("feed").arg("g").arg("$").arg("MKSTREAM").query_async(&mut c).await.unwrap();
    let mut r1 = connect(&b, false).await;
    let mut r2 = connect(&b, false).await;
    let xread = tokio::spawn(async move {
        cmd("XREAD").arg("BLOCK").arg(0).arg("STREAMS").arg("feed").arg("$").query_async::<Value>(&mut r1).await
    });
    let xgroup = tokio::spawn(async move {
        cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("w")
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg("feed")
            .arg(">")
            .query_async::<Value>(&mut r2)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!xread.is_finished() && !xgroup.is_finished(), "both wait for an entry");
    let id: String = cmd("XADD").arg("feed").arg("*").arg("x").arg("1").query_async(&mut c).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), xread).await.unwrap().unwrap().unwrap();
    assert_eq!(fields(&got), ["feed", &id, "x", "1"]);
    let got = tokio::time::timeout(Duration::from_secs(10), xgroup).await.unwrap().unwrap().unwrap();
    assert_eq!(fields(&got), ["feed", &id, "x", "1"]);
    let timed_out: Value =
        cmd("XREAD").arg("BLOCK").arg(50).arg("STREAMS").arg("feed").arg("$").query_async(&mut c).await.unwrap();
    assert_eq!(timed_out, Value::Nil);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_queues_with_blocking_pops_and_moves() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let mut waiter = connect(&b, false).await;
    let brpop = tokio::spawn(async move { waiter.brpop::<_, Value>(&["other", "tasks"], 0.0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!brpop.is_finished());
    let n: i64 = c.lpush("tasks", &["t1", "t2", "t3"]).await.unwrap();
    assert!(n >= 2, "{n}");
    let got = tokio::time::timeout(Duration::from_secs(10), brpop).await.unwrap().unwrap().unwrap();
    assert_eq!(fields(&got), ["tasks", "t1"], "the oldest element first");
    assert_eq!(c.llen::<_, i64>("tasks").await.unwrap(), 2);
    let range: Vec<String> = c.lrange("tasks", 0, -1).await.unwrap();
    assert_eq!(range, ["t2", "t3"]);
    // The reliable-queue pattern: move to a processing list.
    let moved: String =
        cmd("LMOVE").arg("tasks").arg("processing").arg("RIGHT").arg("LEFT").query_async(&mut c).await.unwrap();
    assert_eq!(moved, "t2");
    let _: i64 = c.rpush("processing", &["x", "t2b", "x", "y", "x"]).await.unwrap();
    // The worker is done with t2: LREM drops it, the rest keeps its order.
    assert_eq!(c.lrem::<_, _, i64>("processing", 1, "t2").await.unwrap(), 1);
    assert_eq!(c.lrem::<_, _, i64>("processing", -1, "x").await.unwrap(), 1, "the newest x");
    let left: Vec<String> = c.lrange("processing", 0, -1).await.unwrap();
    assert_eq!(left, ["x", "t2b", "x", "y"]);
    assert_eq!(c.lrem::<_, _, i64>("processing", 0, "x").await.unwrap(), 2);
    let popped: Vec<String> = c.rpop("processing", std::num::NonZeroUsize::new(5)).await.unwrap();
    assert_eq!(popped, ["t2b", "y"]);
    let last: Option<String> = c.lpop("tasks", None).await.unwrap();
    assert_eq!(last.as_deref(), Some("t3"));
    let empty: Option<String> = c.lpop("tasks", None).await.unwrap();
    assert_eq!(empty, None);
    let timed_out: Value = c.blpop("tasks", 0.05).await.unwrap();
    assert_eq!(timed_out, Value::Nil);
    let none: Value = cmd("BLMOVE")
        .arg("tasks")
        .arg("processing")
        .arg("LEFT")
        .arg("LEFT")
        .arg(0.05)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(none, Value::Nil);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_channels_patterns_and_resp3_pushes() {
    use futures_lite::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", b.redis_port)).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe("news").await.unwrap();
    sub.psubscribe("sport.*").await.unwrap();
    let mut c = connect(&b, false).await;
    let n: i64 = c.publish("news", "hello").await.unwrap();
    assert_eq!(n, 1);
    let n: i64 = c.publish("sport.tennis", "ace").await.unwrap();
    assert_eq!(n, 1);
    let n: i64 = c.publish("weather", "rain").await.unwrap();
    assert_eq!(n, 0);
    let mut messages = sub.on_message();
    let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap();
    assert_eq!((m.get_channel_name(), m.get_payload::<String>().unwrap().as_str()), ("news", "hello"));
    let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap();
    assert_eq!(m.get_channel_name(), "sport.tennis");
    assert_eq!(m.get_pattern::<String>().unwrap(), "sport.*");
    drop(messages);

    // RESP3: a pushed message arrives on the same connection as replies.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let client3 = redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", b.redis_port)).unwrap();
    let mut c3 = client3.get_multiplexed_async_connection_with_config(&config).await.unwrap();
    let _: () = cmd("SSUBSCRIBE").arg("shard-1").query_async(&mut c3).await.unwrap();
    let n: i64 = cmd("SPUBLISH").arg("shard-1").arg("sharded").query_async(&mut c).await.unwrap();
    assert_eq!(n, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let push = tokio::time::timeout_at(deadline, rx.recv()).await.unwrap().unwrap();
        if fields(&Value::Array(push.data.clone())).contains(&"sharded".to_string()) {
            break;
        }
    }
    let pong: Value = cmd("PING").query_async(&mut c3).await.unwrap();
    assert_eq!(fields(&pong), ["PONG"], "RESP3 subscribers may send any command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_entries_reach_kafka_and_list_elements_reach_amqp() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let id: String =
        cmd("XADD").arg("orders").arg("*").arg("sku").arg("A-1").arg("qty").arg("2").query_async(&mut c).await.unwrap();
    let read = support::consume_all(&b, "orders", 1, 1);
    let (_, _, _, value) = &read[0];
    let json: serde_json::Value = serde_json::from_slice(value).unwrap();
    assert_eq!(json, serde_json::json!({"sku": "A-1", "qty": "2"}), "entry {id} as a Kafka record");

    // A Kafka record shows up as an entry with a value field.
    support::produce_values(&b, "orders", [7]).await;
    let all: Value = cmd("XRANGE").arg("orders").arg("-").arg("+").query_async(&mut c).await.unwrap();
    let f = fields(&all);
    assert_eq!(f[..5], [id.as_str(), "sku", "A-1", "qty", "2"]);
    assert!(f.contains(&"value".to_string()), "{f:?}");

    let _: i64 = c.rpush("mailbox", &["for-amqp"]).await.unwrap();
    let (_conn, ch) = amqp_support::channel(&b).await;
    let mut consumer = amqp_support::consumer(&ch, "mailbox", "t").await;
    let d = amqp_support::next(&mut consumer).await;
    assert_eq!(&d.data[..], b"for-amqp");
    assert_eq!(d.properties.delivery_mode(), &Some(2), "stored persistent");
    d.ack(BasicAckOptions::default()).await.unwrap();
    ch.basic_cancel("t".into(), BasicCancelOptions::default()).await.unwrap();
    // And the other way: AMQP publishes, Redis pops.
    amqp_support::publish(&ch, "", "mailbox", b"from-amqp", amqp_support::persistent()).await;
    let mut popped = None;
    support::eventually("the AMQP message is poppable", || {
        popped = std::thread::scope(|s| {
            s.spawn(|| {
                let mut sync = redis::Client::open(format!("redis://127.0.0.1:{}/", b.redis_port))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                redis::cmd("LPOP").arg("mailbox").query::<Option<String>>(&mut sync).unwrap()
            })
            .join()
            .unwrap()
        });
        popped.is_some()
    });
    assert_eq!(popped.as_deref(), Some("from-amqp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut healthy = connect(&b, false).await;
    for input in [
        &b"*abc\r\n"[..],
        b"*1\r\n$999999999999\r\n",
        b"*99999999999\r\n",
        b"*1\r\n:1\r\n",
        b"*1\r\n$3\r\nPINGXX\r\n",
        &[0xff, 0xfe, b'*', b'$', 0x00, b'\r', b'\n'],
    ] {
        let (out, closed) = tokio::task::block_in_place(|| raw(&b, input));
        assert!(out.starts_with("-ERR Protocol error") || out.starts_with("-ERR unknown command"), "{input:?}: {out}");
        if out.starts_with("-ERR Protocol error") {
            assert!(closed, "{input:?}: the connection closes");
        }
    }
    let (out, _) = tokio::task::block_in_place(|| raw(&b, b"PING\r\nFLUSHALL\r\nQUIT\r\n"));
    assert!(out.starts_with("+PONG\r\n-ERR unknown command 'FLUSHALL'"), "{out}");
    assert!(out.ends_with("+OK\r\n"), "{out}");
    let pong: String = cmd("PING").query_async(&mut healthy).await.unwrap();
    assert_eq!(pong, "PONG", "other clients are not disturbed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_answer_in_order_and_reads_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let mut p = redis::pipe();
    for i in 0..200 {
        p.cmd("XADD").arg("piped").arg(format!("{}-1", i + 1)).arg("i").arg(i);
    }
    p.cmd("RPUSH").arg("piped-list").arg("a").arg("b");
    p.cmd("XLEN").arg("piped");
    p.cmd("LLEN").arg("piped-list");
    let got: Vec<Value> = p.query_async(&mut c).await.unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<String> = got[..200].iter().flat_map(fields).collect();
    assert_eq!(ids, (1..=200).map(|i| format!("{i}-1")).collect::<Vec<_>>());
    assert_eq!(fields(&Value::Array(got[200..].to_vec())), ["2", "200", "2"]);
    // An append refused at once keeps its place between ones waiting for disk.
    let (out, closed) =
        tokio::task::block_in_place(|| raw(&b, b"XADD px 5-1 f v\r\nXADD px 1-1 f v\r\nXADD px 6-1 f v\r\nQUIT\r\n"));
    assert!(closed);
    assert!(out.starts_with("$3\r\n5-1\r\n-ERR The ID specified in XADD"), "{out}");
    assert!(out.ends_with("$3\r\n6-1\r\n+OK\r\n"), "{out}");
}

#[test]
fn without_a_default_user_commands_need_auth() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start_with_toml(dir.path(), "[redis]\ndefault_user = \"\"\n");
    let (out, _) = raw(&b, b"PING\r\nHELLO 3\r\nHELLO 3 AUTH guest nope\r\nPING\r\nQUIT\r\n");
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[0].starts_with("-NOAUTH"), "{out}");
    assert!(lines[1].starts_with("-NOAUTH HELLO"), "{out}");
    assert!(lines[2].starts_with("-WRONGPASS"), "{out}");
    assert!(lines[3].starts_with("-NOAUTH"), "{out}");
    let (out, closed) = raw(&b, b"HELLO 3 AUTH guest guest\r\nPING\r\nXLEN none\r\nQUIT\r\n");
    assert!(closed && out.starts_with("%7\r\n"), "a RESP3 map: {out}");
    assert!(out.ends_with("+PONG\r\n:0\r\n+OK\r\n"), "{out}");
}
