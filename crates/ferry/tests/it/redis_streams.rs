//! Redis streams end to end: XADD/XRANGE/XREAD, consumer groups with a
//! dead worker's entries claimed, a restart, blocking reads; the real
//! binary and the `redis` crate.

use std::time::Duration;

use redis::{AsyncCommands, Value, cmd};

use crate::redis_support::{connect, fields};
use crate::support::{self, Broker};

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

/// A group is the broker's queue cursor: acknowledgements survive a
/// kill -9, deliveries out do not (like an AMQP queue's): unacknowledged
/// entries go out again with `>`, counted as second deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_keep_acks_across_a_kill_and_deliver_the_rest_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let _: () =
        cmd("XGROUP").arg("CREATE").arg("durable").arg("g").arg("0").arg("MKSTREAM").query_async(&mut c).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let id: String = cmd("XADD").arg("durable").arg("*").arg("k").arg(i).query_async(&mut c).await.unwrap();
        ids.push(id);
    }
    let read = |consumer: &'static str| {
        cmd("XREADGROUP").arg("GROUP").arg("g").arg(consumer).arg("STREAMS").arg("durable").arg(">").clone()
    };
    let got: Value = read("w").query_async(&mut c).await.unwrap();
    assert_eq!(fields(&got).iter().filter(|f| f.as_str() == "k").count(), 4);
    // Out of order: the second and the last acknowledged.
    let acked: i64 = cmd("XACK").arg("durable").arg("g").arg(&ids[1]).arg(&ids[3]).query_async(&mut c).await.unwrap();
    assert_eq!(acked, 2);
    drop(c);
    b.kill9();
    b.start_again();
    let mut c = connect(&b, false).await;
    let groups: Value = cmd("XINFO").arg("GROUPS").arg("durable").query_async(&mut c).await.unwrap();
    let g = fields(&groups);
    assert!(g.windows(2).any(|w| w == ["name", "g"]) && g.windows(2).any(|w| w == ["pending", "0"]), "{g:?}");
    let next: String = cmd("XADD").arg("durable").arg("*").arg("k").arg("new").query_async(&mut c).await.unwrap();
    assert!(next > ids[3] || next.len() > ids[3].len(), "ids keep increasing after a restart: {} then {next}", ids[3]);
    let again: Value = read("v").query_async(&mut c).await.unwrap();
    assert_eq!(
        fields(&again),
        ["durable", &ids[0], "k", "0", &ids[2], "k", "2", &next, "k", "new"],
        "unacknowledged entries again, then the new one"
    );
    let ext: Value =
        cmd("XPENDING").arg("durable").arg("g").arg("-").arg("+").arg(10).query_async(&mut c).await.unwrap();
    let ext = fields(&ext);
    assert_eq!(ext.len(), 12, "{ext:?}");
    assert_eq!((ext[0].as_str(), ext[1].as_str(), ext[3].as_str()), (ids[0].as_str(), "v", "2"), "{ext:?}");
    assert_eq!((ext[8].as_str(), ext[11].as_str()), (next.as_str(), "1"), "{ext:?}");
    // A clean restart keeps the acknowledgements too.
    let acked: i64 =
        cmd("XACK").arg("durable").arg("g").arg(&ids[0]).arg(&ids[2]).arg(&next).query_async(&mut c).await.unwrap();
    assert_eq!(acked, 3);
    drop(c);
    b.restart();
    let mut c = connect(&b, false).await;
    let none: Value = read("v").query_async(&mut c).await.unwrap();
    assert_eq!(none, Value::Nil, "everything acknowledged");
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

/// XINFO STREAM FULL lists entries, groups, deliveries out and consumers;
/// DELCONSUMER hands a consumer's deliveries back to the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_info_full_and_a_removed_consumer_hands_entries_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = connect(&b, false).await;
    let _: () =
        cmd("XGROUP").arg("CREATE").arg("tasks").arg("g").arg("0").arg("MKSTREAM").query_async(&mut c).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id: String = cmd("XADD").arg("tasks").arg("*").arg("t").arg(i).query_async(&mut c).await.unwrap();
        ids.push(id);
    }
    let read = |consumer: &'static str, count: usize| {
        cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg("tasks")
            .arg(">")
            .clone()
    };
    let _: Value = read("gone", 2).query_async(&mut c).await.unwrap();
    let full: Value = cmd("XINFO").arg("STREAM").arg("tasks").arg("FULL").query_async(&mut c).await.unwrap();
    let f = fields(&full);
    for pair in [["length", "3"], ["last-delivered-id", &ids[1]], ["pel-count", "2"], ["name", "gone"], ["lag", "1"]] {
        assert!(f.windows(2).any(|w| w == pair), "{pair:?} in {f:?}");
    }
    assert!(f.windows(4).any(|w| w == [ids[2].as_str(), "t", "2", "groups"]), "entries, then groups: {f:?}");
    let limited: Value =
        cmd("XINFO").arg("STREAM").arg("tasks").arg("FULL").arg("COUNT").arg(1).query_async(&mut c).await.unwrap();
    let l = fields(&limited);
    assert!(l.windows(5).any(|w| w == ["entries", ids[0].as_str(), "t", "0", "groups"]), "COUNT 1: one entry: {l:?}");
    let removed: i64 =
        cmd("XGROUP").arg("DELCONSUMER").arg("tasks").arg("g").arg("gone").query_async(&mut c).await.unwrap();
    assert_eq!(removed, 2);
    let again: Value = read("next", 10).query_async(&mut c).await.unwrap();
    assert_eq!(fields(&again), ["tasks", &ids[0], "t", "0", &ids[1], "t", "1", &ids[2], "t", "2"], "handed back first");
    let ext: Value = cmd("XPENDING").arg("tasks").arg("g").arg("-").arg("+").arg(10).query_async(&mut c).await.unwrap();
    let counts: Vec<String> = fields(&ext).chunks(4).map(|d| d[3].clone()).collect();
    assert_eq!(counts, ["2", "2", "1"], "a second delivery of the handed-back ones");
}

/// XADDs from many connections at once share appends (group commit): every
/// reply's id is in the stream once, and the log holds them in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_from_many_connections_keep_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = connect(&b, false).await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let id: String = cmd("XADD")
                    .arg("shared")
                    .arg("*")
                    .arg("w")
                    .arg(w)
                    .arg("i")
                    .arg(i)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let mut replied = Vec::new();
    for t in tasks {
        replied.extend(tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap());
    }
    let mut c = connect(&b, false).await;
    let all: Value = cmd("XRANGE").arg("shared").arg("-").arg("+").query_async(&mut c).await.unwrap();
    let Value::Array(entries) = all else { panic!("{all:?}") };
    let logged: Vec<String> = entries.iter().map(|e| fields(e)[0].clone()).collect();
    assert_eq!(logged.len(), 400);
    let key = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    assert!(logged.windows(2).all(|w| key(&w[0]) < key(&w[1])), "log order is id order");
    replied.sort_by_key(|id| key(id));
    assert_eq!(replied, logged);
}
