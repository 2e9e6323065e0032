//! The `ferry` CLI end to end against a live broker, called the way scripts
//! call it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::Broker;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `ferry ARGS --brokers <b>` with `stdin`.
fn ferry(b: &Broker, args: &[&str], stdin: &str) -> Out {
    ferry_at(&b.bootstrap(), args, stdin)
}

fn ferry_at(brokers: &str, args: &[&str], stdin: &str) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args).args(["--timeout-ms", "5000"]);
    if !args.contains(&"--brokers") {
        cmd.args(["--brokers", brokers]);
    }
    let mut child = cmd
        .env_remove("FERRY_BROKERS")
        .env("FERRY_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("ferry output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Succeeds, or fails the test with ferry's stderr.
fn ok(b: &Broker, args: &[&str], stdin: &str) -> String {
    let o = ferry(b, args, stdin);
    assert_eq!(o.code, 0, "ferry {args:?} failed: {}", o.stderr);
    o.stdout
}

fn ok_json(b: &Broker, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = ok(b, &all, "");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ferry {args:?}: not JSON ({e}): {out}"))
}

/// Fails with exactly one line on stderr that starts with "error:".
fn fails(o: &Out, mentioning: &str) {
    assert_ne!(o.code, 0, "expected a failure, got: {}", o.stdout);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", o.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
    assert!(lines[0].contains(mentioning), "{:?} should mention {mentioning:?}", lines[0]);
}

#[test]
fn topics_produce_and_consume() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let bs = b.bootstrap();
    assert!(ok(&b, &["topic", "create", "logs", "--partitions", "2", "--brokers", &bs], "").contains("created"));
    assert!(ok(&b, &["topic", "list"], "").lines().any(|l| l.starts_with("logs ") && l.contains(" 2 ")));

    assert!(ok(&b, &["produce", "logs"], "a\nb\n").contains("produced 2 records"));
    assert_eq!(ok(&b, &["consume", "logs", "--from", "earliest", "--count", "2"], ""), "a\nb\n");

    // Key, headers and an explicit partition.
    ok(&b, &["produce", "logs", "--partition", "1", "--key", "k", "--header", "h=v", "x", "y"], "");
    let out = ok(
        &b,
        &["consume", "logs", "--partition", "1", "--count", "2", "--print", "partition,offset,key,value,headers"],
        "",
    );
    assert_eq!(out, "1\t0\tk\tx\th=v\n1\t1\tk\ty\th=v\n");
    let out =
        ok(&b, &["consume", "logs", "--partition", "1", "--from", "offset:1", "--count", "1", "--format", "json"], "");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((r["partition"].as_i64(), r["offset"].as_i64()), (Some(1), Some(1)));
    assert_eq!((r["key"].as_str(), r["value"].as_str(), r["headers"]["h"].as_str()), (Some("k"), Some("y"), Some("v")));
    assert!(r["timestamp"].as_i64().is_some_and(|t| t > 1_600_000_000_000));
    // From a timestamp after everything: nothing, until the idle timeout.
    let later = format!("timestamp:{}", r["timestamp"].as_i64().unwrap() + 60_000);
    assert_eq!(ok(&b, &["consume", "logs", "--from", &later, "--idle-timeout-ms", "300"], ""), "");
    // Keyed records land where Kafka's partitioner puts them.
    ok(&b, &["produce", "logs", "--key-separator", ":"], "user1:v1\nuser1:v2\n");
    let keyed =
        ok(&b, &["consume", "logs", "--from", "earliest", "--idle-timeout-ms", "300", "--print", "key,value"], "");
    assert_eq!(keyed.lines().filter(|l| l.starts_with("user1\t")).count(), 2, "{keyed}");

    let d = ok_json(&b, &["topic", "describe", "logs"]);
    let ends: Vec<i64> =
        d["partitions"].as_array().unwrap().iter().map(|p| p["log_end_offset"].as_i64().unwrap()).collect();
    assert_eq!(ends.iter().sum::<i64>(), 6);
    assert!(ok(&b, &["topic", "describe", "logs"], "").contains("PARTITION"));

    ok(&b, &["topic", "alter-config", "logs", "--set", "retention.ms=60000"], "");
    assert_eq!(ok_json(&b, &["topic", "describe", "logs"])["configs"]["retention.ms"], "60000");
    ok(&b, &["topic", "alter-config", "logs", "--delete", "retention.ms"], "");
    assert_eq!(ok_json(&b, &["topic", "describe", "logs"])["configs"], serde_json::json!({}));

    assert_eq!(ok_json(&b, &["cluster", "info"])["brokers"][0]["port"], b.port);
    // One node: it holds and leads every partition of "logs".
    let s = ok_json(&b, &["cluster", "status"]);
    let node = &s["nodes"][0];
    assert_eq!(
        (node["id"].as_i64(), node["fenced"].as_bool(), node["registered"].as_bool()),
        (Some(1), Some(false), Some(true)),
        "{s}"
    );
    assert!(node["kafka"].as_str().is_some_and(|k| k.ends_with(&format!(":{}", b.port))), "{s}");
    assert!(node["leaders"].as_i64() >= Some(2) && s["leaderless_partitions"] == 0, "{s}");
    assert!(s["controller"].is_object(), "{s}");
    assert!(ok(&b, &["cluster", "status"], "").contains("REPLICAS"));

    // Eligible leader replicas: none while every replica is in sync.
    let d = ok_json(&b, &["topic", "describe", "logs"]);
    assert!(d["partitions"].as_array().unwrap().iter().all(|p| p["elr"] == serde_json::json!([])), "{d}");
    assert!(ok(&b, &["topic", "describe", "logs"], "").contains("ELR"));
    // Preferred-leader elections: each partition's only replica leads already.
    let e = ok_json(&b, &["topic", "elect-leaders", "logs"]);
    let results: Vec<(i64, i64, bool)> = e["elections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let named = r["result"].as_str().unwrap().starts_with("ELECTION_NOT_NEEDED");
            (r["partition"].as_i64().unwrap(), r["error_code"].as_i64().unwrap(), named)
        })
        .collect();
    assert_eq!(results, vec![(0, 84, true), (1, 84, true)], "{e}");
    assert!(ok(&b, &["topic", "elect-leaders"], "").contains("every partition is led by its preferred replica"));
    let unclean = ok_json(&b, &["topic", "elect-leaders", "logs", "--partition", "1", "--unclean"]);
    assert_eq!(unclean["elections"][0]["error_code"], 84, "{unclean}");
    fails(&ferry(&b, &["topic", "elect-leaders", "logs", "--partition", "9"], ""), "no partition 9");
    ok(&b, &["topic", "delete", "logs"], "");
    assert!(!ok(&b, &["topic", "list"], "").contains("logs"));
}

#[test]
fn groups_lag_and_reset_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    ok(&b, &["topic", "create", "jobs", "--partitions", "1"], "");
    let lines: String = (0..10).map(|i| format!("job{i}\n")).collect();
    ok(&b, &["produce", "jobs"], &lines);

    // A group member reads 4 and commits them.
    assert_eq!(ok(&b, &["consume", "jobs", "--group", "workers", "--count", "4"], ""), "job0\njob1\njob2\njob3\n");
    assert!(ok(&b, &["group", "list"], "").lines().any(|l| l.starts_with("workers ")));
    let g = ok_json(&b, &["group", "describe", "workers"]);
    assert_eq!(g["state"], "Empty", "the member left: {g}");
    assert_eq!(g["offsets"][0]["committed"], 4);
    assert_eq!(g["offsets"][0]["log_end"], 10);
    assert_eq!(g["lag"], 6);
    let table = ok(&b, &["group", "describe", "workers"], "");
    assert!(
        table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["jobs", "0", "4", "10", "6"]),
        "{table}"
    );

    // The next member resumes from the committed offset.
    assert_eq!(ok(&b, &["consume", "jobs", "--group", "workers", "--count", "2"], ""), "job4\njob5\n");

    ok(&b, &["group", "reset-offsets", "workers", "--topic", "jobs", "--to-earliest"], "");
    assert_eq!(ok_json(&b, &["group", "describe", "workers"])["lag"], 10);
    let dry = ok_json(&b, &["group", "reset-offsets", "workers", "--topic", "jobs", "--to-offset", "7", "--dry-run"]);
    assert_eq!(dry["offsets"][0]["offset"], 7);
    assert_eq!(ok_json(&b, &["group", "describe", "workers"])["lag"], 10, "a dry run commits nothing");
    ok(&b, &["group", "reset-offsets", "workers", "--topic", "jobs", "--to-offset", "7"], "");
    assert_eq!(ok(&b, &["consume", "jobs", "--group", "workers", "--count", "1"], ""), "job7\n");
    ok(&b, &["group", "reset-offsets", "workers", "--topic", "jobs", "--to-latest"], "");
    assert_eq!(ok_json(&b, &["group", "describe", "workers"])["lag"], 0);

    ok(&b, &["group", "delete", "workers"], "");
    fails(&ferry(&b, &["group", "describe", "workers"], ""), "workers");
    fails(&ferry(&b, &["group", "delete", "workers"], ""), "GROUP_ID_NOT_FOUND");
}

#[test]
fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    fails(&ferry(&b, &["topic", "describe", "missing"], ""), "UNKNOWN_TOPIC_OR_PARTITION");
    fails(&ferry(&b, &["consume", "missing", "--count", "1"], ""), "missing");
    fails(&ferry(&b, &["produce", "missing", "x"], ""), "missing");
    ok(&b, &["topic", "create", "t", "--partitions", "1"], "");
    fails(&ferry(&b, &["topic", "create", "t"], ""), "TOPIC_ALREADY_EXISTS");
    fails(&ferry(&b, &["topic", "create", "bad/name"], ""), "INVALID_TOPIC_EXCEPTION");
    fails(&ferry(&b, &["topic", "alter-config", "t", "--set", "cleanup.policy=sometimes"], ""), "cleanup.policy");
    fails(&ferry(&b, &["topic", "alter-config", "t", "--set", "novalue"], ""), "KEY=VALUE");
    fails(&ferry(&b, &["produce", "t", "--partition", "5", "x"], ""), "no partition 5");
    fails(&ferry(&b, &["consume", "t", "--from", "yesterday"], ""), "--from");
    fails(&ferry(&b, &["group", "reset-offsets", "g", "--topic", "t"], ""), "--to-earliest");
    // Nobody listens there.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    fails(&ferry_at(&down, &["topic", "list"], ""), "cannot connect");
    fails(&ferry_at(&down, &["bench", "produce", "--topic", "t", "--records", "1"], ""), "cannot connect");
    // Usage errors come from clap, with its exit code 2.
    assert_eq!(ferry(&b, &["topic", "frobnicate"], "").code, 2);
}

#[test]
fn bench_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let args = [
        "bench",
        "produce",
        "--topic",
        "bench",
        "--records",
        "3000",
        "--size",
        "64",
        "--partitions",
        "2",
        "--concurrency",
        "2",
        "--batch-records",
        "100",
        "--json",
    ];
    let p: Value = serde_json::from_str(&ok(&b, &args, "")).unwrap();
    assert_eq!(p["records"], 3000, "{p}");
    assert_eq!(p["errors"], 0);
    assert!(p["records_per_sec"].as_f64().is_some_and(|r| r > 0.0));
    let lat = &p["latency_ms"];
    assert_eq!(lat["samples"], 3000);
    assert!(lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap());
    assert!(lat["p999"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());

    let c: Value = serde_json::from_str(&ok(&b, &["bench", "consume", "--topic", "bench", "--json"], "")).unwrap();
    assert_eq!(c["records"], 3000, "{c}");
    assert!(c["bytes"].as_u64().unwrap() > 3000 * 64);

    let args = ["bench", "e2e", "--topic", "bench", "--records", "500", "--rate", "5000", "--json"];
    let e: Value = serde_json::from_str(&ok(&b, &args, "")).unwrap();
    assert_eq!(e["records"], 500, "{e}");
    assert_eq!(e["latency_ms"]["samples"], 500);
    let d = ok_json(&b, &["topic", "describe", "bench"]);
    let total: i64 = d["partitions"].as_array().unwrap().iter().map(|p| p["records"].as_i64().unwrap()).sum();
    assert_eq!(total, 3500);

    // The reference the benchmark figures are compared with.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["bench", "loopback", "--bytes", "10000000", "--runs", "1", "--json"])
        .output()
        .expect("run ferry bench loopback");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(l["mb_per_sec"].as_f64().is_some_and(|m| m > 0.0), "{l}");
}

#[test]
fn a_following_group_consumer_commits_and_leaves_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    ok(&b, &["topic", "create", "feed", "--partitions", "2"], "");
    ok(&b, &["produce", "feed", "--key-separator", ":"], "a:1\nb:2\nc:3\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["consume", "feed", "--group", "tail", "--brokers", &b.bootstrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferry consume");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let got: Vec<String> = (0..3).map(|_| lines.next().expect("a record").expect("read")).collect();
    assert_eq!(got.len(), 3);
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().expect("ferry exits");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let g = ok_json(&b, &["group", "describe", "tail"]);
    assert_eq!(g["state"], "Empty", "{g}");
    assert_eq!(g["lag"], 0, "everything printed was committed: {g}");
}

/// KIP-848 groups (which DescribeGroups calls Dead) are described through
/// ConsumerGroupDescribe: members with their partitions.
#[test]
fn describes_kip_848_groups() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    ok(&b, &["topic", "create", "nextgen", "--partitions", "3"], "");
    ok(&b, &["produce", "nextgen", "x"], "");
    let mut c = crate::support::config(&b);
    c.set("group.id", "g848").set("group.protocol", "consumer").set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().expect("consumer");
    consumer.subscribe(&["nextgen"]).unwrap();
    let mut got = false;
    crate::support::eventually("a record", || {
        got |= matches!(consumer.poll(std::time::Duration::from_millis(100)), Some(Ok(_)));
        got
    });
    crate::support::eventually("the member's assignment", || {
        let g = ok_json(&b, &["group", "describe", "g848"]);
        g["members"].as_array().is_some_and(|m| m.len() == 1)
            && g["members"][0]["assignment"]["nextgen"].as_array().map(Vec::len) == Some(3)
    });
    let g = ok_json(&b, &["group", "describe", "g848"]);
    assert_eq!(g["protocol_type"], "consumer", "{g}");
    assert_ne!(g["state"], "Dead", "{g}");
}

/// `ferry consume T | head -2`: a closed pipe ends the consumer cleanly.
#[test]
fn consume_into_a_closed_pipe_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    ok(&b, &["topic", "create", "lots", "--partitions", "1"], "");
    let lines: String = (0..5000).map(|i| format!("line-{i}-{}\n", "x".repeat(100))).collect();
    ok(&b, &["produce", "lots"], &lines);
    let script = format!(
        "set -o pipefail; '{}' consume lots --group piped --brokers {} | head -2",
        env!("CARGO_BIN_EXE_ferry"),
        b.bootstrap()
    );
    let out = Command::new("bash").args(["-c", &script]).output().expect("bash");
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let g = ok_json(&b, &["group", "describe", "piped"]);
    assert_eq!(g["state"], "Empty", "the member left: {g}");
    assert!(g["offsets"][0]["committed"].as_i64().is_some_and(|c| c >= 2), "{g}");
}

/// The CLI on a three-node cluster: each command goes through another
/// node, and per-partition requests find each partition's leader.
#[test]
fn the_cli_works_across_a_three_node_cluster() {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::cluster_support::{CLUSTER_WAIT, Cluster, leaders_of};
    use crate::support::eventually_within;

    let c = Cluster::start(3);
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }
    let created = ok(c.node(1), &["topic", "create", "spread", "--partitions", "12", "--replication-factor", "1"], "");
    assert!(created.contains("created"), "{created}");
    for id in c.ids() {
        eventually_within("every node to know the topic's leaders", CLUSTER_WAIT, || {
            leaders_of(c.node(id), "spread").is_some()
        });
    }

    // Keyed records spread over all twelve partitions, through node 2.
    let input: String = (0..240).map(|i| format!("k{i}:v{i}\n")).collect();
    let produced = ok(c.node(2), &["produce", "spread", "--key-separator", ":"], &input);
    assert!(produced.contains("produced 240 records"), "{produced}");

    // Node 3's consumer gets every record.
    let args = ["consume", "spread", "--from", "earliest", "--count", "240", "--print", "partition,key,value"];
    let out = ok(c.node(3), &args, "");
    let mut per_partition: BTreeMap<i64, i64> = BTreeMap::new();
    let mut got = BTreeSet::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "{line}");
        *per_partition.entry(fields[0].parse().unwrap()).or_default() += 1;
        assert_eq!(fields[1].strip_prefix('k'), fields[2].strip_prefix('v'), "{line}");
        got.insert(fields[2].to_string());
    }
    assert_eq!(got, (0..240).map(|i| format!("v{i}")).collect::<BTreeSet<_>>());

    // Describe through node 1: leaders on all three nodes, each partition's
    // one replica in sync, and end offsets from each partition's leader.
    let d = ok_json(c.node(1), &["topic", "describe", "spread"]);
    let partitions = d["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 12);
    let mut leaders = BTreeSet::new();
    for p in partitions {
        let leader = p["leader"].as_i64().unwrap();
        leaders.insert(leader);
        assert_eq!(p["replicas"], serde_json::json!([leader]), "{p}");
        assert_eq!(p["isr"], serde_json::json!([leader]), "{p}");
        assert_eq!(p["elr"], serde_json::json!([]), "{p}");
        let index = p["partition"].as_i64().unwrap();
        let expected = per_partition.get(&index).copied().unwrap_or(0);
        assert_eq!((p["log_start_offset"].as_i64(), p["log_end_offset"].as_i64()), (Some(0), Some(expected)), "{p}");
    }
    assert_eq!(leaders, BTreeSet::from([1, 2, 3]));
    let table = ok(c.node(1), &["topic", "describe", "spread"], "");
    assert!(table.contains("REPLICAS") && table.contains("ISR"), "{table}");

    // Configs through any node: set through node 2, seen through node 3.
    ok(c.node(2), &["topic", "alter-config", "spread", "--set", "retention.ms=60000"], "");
    let d = ok_json(c.node(3), &["topic", "describe", "spread"]);
    assert_eq!(d["configs"]["retention.ms"], "60000", "{d}");

    // A broker carries out DeleteRecords for a partition it does not lead
    // by forwarding it to the leader (a Kafka broker would answer
    // NOT_LEADER_OR_FOLLOWER and leave the routing to the client)...
    let elsewhere = partitions.iter().find(|p| p["leader"] != 1).unwrap()["partition"].as_i64().unwrap() as i32;
    let (code, low) = runtime().block_on(async {
        let config = ferry_client::ClientConfig::new("cli-test", std::time::Duration::from_secs(5));
        let client = ferry_client::Client::connect(&c.node(1).bootstrap(), config).await.unwrap();
        let req = ferry_client::delete_records_request("spread", &[(elsewhere, -1)]);
        let resp = client.any().send(req, 2).await.unwrap();
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.low_watermark)
    });
    assert_eq!(code, 0, "carried out by the leader");
    assert_eq!(low, per_partition.get(&i64::from(elsewhere)).copied().unwrap_or(0));
    // ...and the CLI, through node 3, asks each partition's leader.
    let deleted = ok_json(c.node(3), &["topic", "delete-records", "spread", "--before", "-1"]);
    let low: BTreeMap<i64, i64> = deleted["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["partition"].as_i64().unwrap(), p["log_start_offset"].as_i64().unwrap()))
        .collect();
    assert_eq!(low, (0..12).map(|p| (p, per_partition.get(&p).copied().unwrap_or(0))).collect(), "{deleted}");
    let d = ok_json(c.node(1), &["topic", "describe", "spread"]);
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["records"], 0, "{p}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn lists_redis_streams_and_their_groups() {
    use redis::cmd;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let redis_addr = format!("127.0.0.1:{}", b.redis_port);
    runtime().block_on(async {
        let mut c = crate::redis_support::connect(&b, false).await;
        for _ in 0..3 {
            let _: String = cmd("XADD").arg("jobs").arg("*").arg("k").arg("v").query_async(&mut c).await.unwrap();
        }
        let _: () = cmd("XGROUP").arg("CREATE").arg("jobs").arg("workers").arg("0").query_async(&mut c).await.unwrap();
        let _: redis::Value = cmd("XREADGROUP")
            .arg("GROUP")
            .arg("workers")
            .arg("w1")
            .arg("COUNT")
            .arg(2)
            .arg("STREAMS")
            .arg("jobs")
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
    });
    let streams = ok_json(&b, &["redis", "streams", "--redis", &redis_addr]);
    let jobs = streams["streams"].as_array().unwrap().iter().find(|s| s["stream"] == "jobs").cloned();
    assert_eq!(jobs.as_ref().map(|j| (&j["length"], &j["groups"])), Some((&3.into(), &1.into())), "{streams}");
    let groups = ok_json(&b, &["redis", "groups", "jobs", "--redis", &redis_addr]);
    let g = &groups["groups"][0];
    assert_eq!((&g["group"], &g["pending"], &g["lag"]), (&"workers".into(), &2.into(), &1.into()), "{groups}");
    assert_eq!(g["consumers"][0], serde_json::json!({"consumer": "w1", "pending": 2}), "{groups}");
    let table = ok(&b, &["redis", "groups", "jobs", "--redis", &redis_addr], "");
    assert!(table.lines().any(|l| l.starts_with("workers") && l.contains("w1(2)")), "{table}");
    let o = ferry(&b, &["redis", "groups", "nothing", "--redis", &redis_addr], "");
    fails(&o, "no such key");
}

#[test]
fn lists_stomp_connections_and_subscriptions() {
    use crate::stomp_support::Stomp;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let http = format!("127.0.0.1:{}", b.http_port);
    let mut worker = Stomp::connect(&b);
    worker.subscribe("jobs-1", "/queue/jobs", &[("ack", "client-individual"), ("prefetch-count", "5")]);
    worker.subscribe("news", "/topic/news.*", &[("durable", "true")]);
    let mut producer = Stomp::connect(&b);
    for body in ["a", "b"] {
        producer.send("/queue/jobs", body.as_bytes(), &[]);
    }
    // Both delivered and not acknowledged: unacked 2 on the jobs queue.
    for _ in 0..2 {
        worker.message();
    }

    let conns = ok_json(&b, &["stomp", "connections", "--http", &http]);
    let list = conns["connections"].as_array().unwrap_or_else(|| panic!("{conns}"));
    assert_eq!(list.len(), 2, "{conns}");
    assert!(list.iter().all(|c| c["user"] == "guest" && c["vhost"] == "/" && c["version"] == "1.2"), "{conns}");
    let mut subs_per_conn: Vec<i64> = list.iter().map(|c| c["subscriptions"].as_i64().unwrap()).collect();
    subs_per_conn.sort();
    assert_eq!(subs_per_conn, [0, 2], "{conns}");

    let subs = ok_json(&b, &["stomp", "subscriptions", "--http", &http]);
    let list = subs["subscriptions"].as_array().unwrap_or_else(|| panic!("{subs}"));
    let jobs = list.iter().find(|s| s["id"] == "jobs-1").unwrap_or_else(|| panic!("{subs}"));
    assert_eq!(
        (&jobs["destination"], &jobs["queue"], &jobs["ack"], &jobs["prefetch"], &jobs["unacked"], &jobs["durable"]),
        (&"/queue/jobs".into(), &"jobs".into(), &"client-individual".into(), &5.into(), &2.into(), &false.into()),
        "{subs}"
    );
    let news = list.iter().find(|s| s["id"] == "news").unwrap_or_else(|| panic!("{subs}"));
    assert_eq!((&news["durable"], &news["ack"]), (&true.into(), &"auto".into()), "{subs}");
    assert_eq!(news["queue"], "stomp-subscription-news", "{subs}");
    let table = ok(&b, &["stomp", "subscriptions", "--http", &http], "");
    assert!(table.lines().next().is_some_and(|l| l.starts_with("CONNECTION")), "{table}");
    assert!(table.lines().any(|l| l.contains("/queue/jobs") && l.contains("client-individual")), "{table}");
    let (_, metrics) = crate::support::http(&b, "GET", "/metrics", None);
    assert!(metrics.lines().any(|l| l == "ferry_stomp_subscriptions 2"), "{metrics}");

    // Gone with their connection.
    worker.disconnect();
    producer.disconnect();
    crate::support::eventually("the connections are unlisted", || {
        let subs = ok_json(&b, &["stomp", "subscriptions", "--http", &http]);
        let conns = ok_json(&b, &["stomp", "connections", "--http", &http]);
        subs["subscriptions"].as_array().is_some_and(Vec::is_empty)
            && conns["connections"].as_array().is_some_and(Vec::is_empty)
    });
}

#[test]
fn stomp_listings_answer_404_when_stomp_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::prepare(dir.path(), &["--stomp-listen", "off"], "");
    b.spawn_waiting(crate::support::WaitFor::Http);
    let (status, body) = crate::support::http(&b, "GET", "/v1/stomp/connections", None);
    assert_eq!(status, 404, "{body}");
    let o = ferry(&b, &["stomp", "connections", "--http", &format!("127.0.0.1:{}", b.http_port)], "");
    fails(&o, "not served");
}
