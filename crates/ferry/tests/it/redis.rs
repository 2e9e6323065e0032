//! The Redis front-end end to end: connection commands, lists, pub/sub,
//! pipelining, auth and bad input with the real binary and the `redis`
//! crate (RESP2 and RESP3), raw sockets, and librdkafka / lapin on the other
//! side for the cross-protocol cases. Streams: redis_streams.rs.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicCancelOptions};
use redis::{AsyncCommands, Value, cmd};

use crate::amqp_support;
use crate::redis_support::{connect, fields, raw};
use crate::support::{self, Broker};

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
    // LINDEX reads by position; LSET / LINSERT cannot change a queue's middle.
    assert_eq!(c.lindex::<_, Option<String>>("tasks", 0).await.unwrap().as_deref(), Some("t2"));
    assert_eq!(c.lindex::<_, Option<String>>("tasks", -1).await.unwrap().as_deref(), Some("t3"));
    assert_eq!(c.lindex::<_, Option<String>>("tasks", 2).await.unwrap(), None);
    assert_eq!(c.lindex::<_, Option<String>>("nothing", 0).await.unwrap(), None);
    let e = c.lset::<_, _, ()>("tasks", 0, "x").await.unwrap_err();
    assert!(e.to_string().contains("LSET is not supported"), "{e}");
    let e = cmd("LINSERT").arg("tasks").arg("BEFORE").arg("t3").arg("x").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("LINSERT is not supported"), "{e}");
    assert_eq!(c.lrange::<_, Vec<String>>("tasks", 0, -1).await.unwrap(), ["t2", "t3"], "unchanged");
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
    // Its id is <timestamp>-<offset>, and a later XADD orders itself after it.
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    let kafka_id = parse(&f[5]);
    assert_eq!(kafka_id.1, 1, "{f:?}");
    let after: String = cmd("XADD").arg("orders").arg("*").arg("n").arg("3").query_async(&mut c).await.unwrap();
    assert!(parse(&after) > kafka_id, "{after} after {f:?}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_from_many_connections_share_batches_and_keep_their_order() {
    const CONNS: usize = 8;
    const PUSHES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut tasks = Vec::new();
    for k in 0..CONNS {
        let mut c = connect(&b, false).await;
        tasks.push(tokio::spawn(async move {
            // Pipelined and concurrent with the other connections: the
            // list's appender takes pushes of several clients into one batch.
            let mut p = redis::pipe();
            for i in 0..PUSHES {
                p.cmd(if i % 2 == 0 { "RPUSH" } else { "LPUSH" })
                    .arg("shared")
                    .arg(format!("c{k}-{i}a"))
                    .arg(format!("c{k}-{i}b"));
            }
            let lens: Vec<i64> = p.query_async(&mut c).await.unwrap_or_else(|e| panic!("{e}"));
            lens
        }));
    }
    let total = (CONNS * PUSHES * 2) as i64;
    for t in tasks {
        let lens = t.await.unwrap();
        assert_eq!(lens.len(), PUSHES);
        // Each answer counts at least this connection's elements so far.
        for (i, len) in lens.iter().enumerate() {
            assert!(*len >= 2 * (i as i64 + 1) && *len <= total, "{lens:?}");
        }
    }
    let mut c = connect(&b, false).await;
    let len: i64 = c.llen("shared").await.unwrap();
    assert_eq!(len, total);
    let all: Vec<String> = c.lrange("shared", 0, -1).await.unwrap();
    assert_eq!(all.len() as i64, total);
    for k in 0..CONNS {
        // A connection's elements come in the order it pushed them, and a
        // push's elements stay together (a push is one append, as in Redis).
        let at: Vec<usize> = (0..PUSHES)
            .flat_map(|i| [format!("c{k}-{i}a"), format!("c{k}-{i}b")])
            .map(|e| all.iter().position(|x| *x == e).unwrap_or_else(|| panic!("{e} missing")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "connection {k} out of order: {at:?}");
        assert!(at.chunks(2).all(|p| p[1] == p[0] + 1), "a push of connection {k} was split: {at:?}");
    }
    // Every element was stored once: popping takes them all, then nothing.
    let popped: Vec<String> = cmd("LPOP").arg("shared").arg(total).query_async(&mut c).await.unwrap();
    assert_eq!(popped, all);
    let none: Option<String> = c.lpop("shared", None).await.unwrap();
    assert_eq!(none, None);
    // A list deleted and pushed to again is a new queue with a new appender.
    let _: i64 = c.rpush("shared", &["old"]).await.unwrap();
    let deleted: i64 = c.del("shared").await.unwrap();
    assert_eq!(deleted, 1);
    let n: i64 = c.rpush("shared", &["new-1", "new-2"]).await.unwrap();
    assert_eq!(n, 2);
    let all: Vec<String> = c.lrange("shared", 0, -1).await.unwrap();
    assert_eq!(all, ["new-1", "new-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_with_a_length_limit_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_conn, ch) = amqp_support::channel(&b).await;
    let mut args = lapin::types::FieldTable::default();
    args.insert("x-max-length".into(), lapin::types::AMQPValue::LongLongInt(3));
    args.insert("x-overflow".into(), lapin::types::AMQPValue::LongString("reject-publish".into()));
    let opts = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("bounded".into(), opts, args).await.unwrap();
    let mut c = connect(&b, false).await;
    let n: i64 = c.rpush("bounded", &["a", "b"]).await.unwrap();
    assert_eq!(n, 2);
    let e = c.rpush::<_, _, i64>("bounded", &["c", "d", "e"]).await.unwrap_err();
    assert!(e.to_string().contains("list 'bounded' is full"), "{e}");
    // The elements that fitted stay, in order; the rest were refused.
    let all: Vec<String> = c.lrange("bounded", 0, -1).await.unwrap();
    assert_eq!(all, ["a", "b", "c"]);
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

/// The vhost whose queues the lists are is deleted (RabbitMQ's `DELETE
/// /api/vhosts/...`): every Redis connection gets `-ERR vhost '/' is
/// deleted` (a blocked BLPOP as its answer, an idle connection unasked)
/// and is closed, as AMQP connections get connection.close 320 and STOMP
/// ones an ERROR frame. A connection opened afterwards is not logged in
/// (the default user's vhost is gone, as AMQP refuses it with 530).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_deleted_vhost_get_an_error_and_are_closed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let n: i64 = c.rpush("jobs", "a").await.unwrap();
    assert_eq!(n, 1);
    let mut waiter = connect(&b, false).await;
    let blpop = tokio::spawn(async move { waiter.blpop::<_, Value>("empty", 0.0).await });
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", b.redis_port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    idle.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, body) = tokio::task::block_in_place(|| support::http(&b, "DELETE", "/api/vhosts/%2F", None));
    assert_eq!(status, 204, "{body}");
    let e = tokio::time::timeout(Duration::from_secs(10), blpop)
        .await
        .expect("the blocked BLPOP answered")
        .unwrap()
        .expect_err("BLPOP answers an error");
    assert!(e.to_string().contains("vhost '/' is deleted"), "{e}");
    let mut out = Vec::new();
    tokio::task::block_in_place(|| idle.read_to_end(&mut out)).expect("the idle connection is closed");
    assert_eq!(String::from_utf8_lossy(&out), "-ERR vhost '/' is deleted\r\n");
    assert!(cmd("PING").query_async::<String>(&mut c).await.is_err(), "the first connection is closed too");

    let (out, closed) = tokio::task::block_in_place(|| raw(&b, b"PING\r\nLPOP jobs\r\nQUIT\r\n"));
    assert!(out.starts_with("-NOAUTH Authentication required.\r\n-NOAUTH"), "{out}");
    assert!(out.ends_with("+OK\r\n") && closed, "{out}");
}
