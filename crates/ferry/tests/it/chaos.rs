//! The fault harness (issue #16): three `ferry serve` voters whose cluster
//! traffic goes through a proxy the test controls (`[cluster] dial_via`),
//! faults from a seeded schedule (kill -9 and restart, SIGSTOP/SIGCONT,
//! a node isolated, a node cut from the controller leader, one-way loss,
//! a bridge, latency), Kafka workloads that write a history (idempotent
//! acks=all producers, a read_committed group consumer, a
//! consume-transform-produce transactional worker) or an AMQP workload
//! (a publisher with confirms and a manual-ack consumer on a quorum queue,
//! on two different nodes), a complete read of every partition (the
//! emptied queue) at the end, and the checker over it all.
//!
//! `cargo test -p ferry --test it chaos::` runs about a minute with seed
//! 16; `scripts/chaos.sh --duration 30m --seed S` runs long ones
//! (FERRY_CHAOS_SECS, FERRY_CHAOS_SEED, FERRY_CHAOS_DIR). The history is
//! written to FERRY_CHAOS_DIR (default: the target's tmp dir) as it is
//! recorded, one line per event, as `chaos-<seed>.jsonl`
//! (`chaos-amqp-quorum-<seed>.jsonl`), so a run its watchdog ends keeps
//! it (with a last line naming the client calls still blocked);
//! `ferry-chaos-check` checks it again.
//! FERRY_CHAOS_CLIENT_DEBUG (librdkafka `debug` contexts, e.g. `eos`) keeps
//! the idempotent producers' librdkafka log beside it as
//! `chaos-<seed>-producers.log` (time in the history's seconds, process).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_chaos::checker::{self, Options, Report};
use ferry_chaos::history::{Kind, Op, Phase, Recorder};
use ferry_chaos::proxy::Proxy;
use ferry_chaos::schedule::{self, Fault, FaultKind, Plan, bridge_halves};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::chaos_amqp_clients::abandon;
use crate::cluster_support::{CLUSTER_TOML, Cluster, controller_leader, create_topic_eventually_with, leaders_of};
use crate::support::{eventually_within, watchdog_naming};

/// Written by the idempotent producers, read by the group consumer and
/// the transactional worker. History partitions 0..3.
const TOPIC: &str = "chaos";
/// Written by the transactional worker. History partitions 100..103.
const OUT: &str = "chaos-out";
const OUT_BASE: i32 = 100;
const PARTITIONS: i32 = 3;
/// Client calls that can block (transactions, watermarks).
const T: Duration = Duration::from_secs(10);
/// Values are `process * VALUES + n`: unique per run, increasing per process.
const VALUES: i64 = 1_000_000_000;

/// What a run is told by its environment.
pub struct Settings {
    pub seed: u64,
    pub length: Duration,
    pub keep: PathBuf,
    /// librdkafka debug contexts for the idempotent producers' log.
    pub client_debug: Option<String>,
}

pub fn settings() -> Settings {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Settings {
        seed: var("FERRY_CHAOS_SEED").map_or(16, |s| s.parse().expect("FERRY_CHAOS_SEED is a number")),
        length: Duration::from_secs(var("FERRY_CHAOS_SECS").map_or(45, |s| s.parse().expect("FERRY_CHAOS_SECS"))),
        keep: var("FERRY_CHAOS_DIR").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from),
        client_debug: var("FERRY_CHAOS_CLIENT_DEBUG"),
    }
}

/// Idempotent acks=all producers and a read_committed group consumer
/// under every kind of fault: nothing acknowledged lost, duplicated or
/// reordered, no offset going back.
#[test]
fn kafka_under_faults_loses_nothing_acknowledged() {
    run(false);
}

/// The same with the consume-transform-produce transactional worker:
/// no aborted read, no torn transaction, nothing transformed twice, and
/// no transaction left hanging.
#[test]
fn kafka_transactions_under_faults_leave_nothing_hanging() {
    run(true);
}

fn run(transactions: bool) {
    let s = settings();
    let topics: &[&str] = if transactions { &[TOPIC, OUT] } else { &[TOPIC] };
    let name = format!("chaos-{}{}", if transactions { "txn-" } else { "" }, s.seed);
    let path = s.keep.join(format!("{name}.jsonl"));
    let rec = Recorder::to_file(&path).expect("the history file");
    // Faults, workloads and the final read are bounded; this ends a run
    // that hangs in a client call anyway, naming the calls.
    let _guard = {
        let rec = rec.clone();
        watchdog_naming("chaos run", s.length + Duration::from_secs(420), move || rec.report_blocked("watchdog"))
    };
    let (mut cluster, proxy, ids) = faulty_cluster();
    for topic in topics {
        create_topic_eventually_with(cluster.node(1), topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
        eventually_within(&format!("leaders of {topic}"), Duration::from_secs(60), || {
            leaders_of(cluster.node(1), topic).is_some()
        });
    }
    let bootstrap = ids.iter().map(|id| cluster.node(*id).bootstrap()).collect::<Vec<_>>().join(",");

    let stop = Arc::new(AtomicBool::new(false));
    let processes = Arc::new(AtomicU64::new(1));
    let client_log = s.client_debug.as_ref().map(|contexts| {
        std::fs::create_dir_all(&s.keep).expect("history directory");
        let name = format!("chaos-{}{}-producers.log", if transactions { "txn-" } else { "" }, s.seed);
        let file = std::fs::File::create(s.keep.join(name)).expect("producers' log");
        (contexts.clone(), Arc::new(Mutex::new(std::io::BufWriter::new(file))))
    });
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (b, r, st, p, l) = (bootstrap.clone(), rec.clone(), stop.clone(), processes.clone(), client_log.clone());
        workers.push(std::thread::spawn(move || idempotent_producer(&b, &r, &st, &p, l)));
    }
    {
        let (b, r, st) = (bootstrap.clone(), rec.clone(), stop.clone());
        workers.push(std::thread::spawn(move || group_consumer(&b, &r, &st, 900)));
    }
    if transactions {
        let (b, r, st, p) = (bootstrap.clone(), rec.clone(), stop.clone(), processes.clone());
        workers.push(std::thread::spawn(move || transform(&b, &r, &st, &p)));
    }

    let (start, injected) = faults(&mut cluster, &proxy, &ids, &s, &rec);
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join().expect("workload thread");
    }
    if let Some((_, out)) = &client_log {
        lock(out).flush().expect("write the producers' log");
    }

    // Every partition read whole, now that the cluster is whole again.
    for topic in topics {
        drain(&bootstrap, &rec, topic);
    }
    let ops = rec.ops();
    assert_eq!(rec.write_error(), None, "writing the history {}", path.display());
    keep_node_logs(&cluster, &s, &name);
    let report = checker::check(&ops, &Options::default());
    // After the run no transaction is open: the read_committed end of a
    // partition below its high watermark is a transaction left hanging.
    let hanging: Vec<String> = ops
        .iter()
        .filter(|o| o.f == Kind::Drain && o.error.is_some())
        .map(|o| format!("partition {:?}: {}", o.partition, o.error.as_deref().unwrap_or_default()))
        .collect();
    let faults: usize = injected.values().sum();
    eprintln!(
        "{name}: seed {} ran {:.0} s: {faults} faults {injected:?}\n{report}history: {}",
        s.seed,
        start.elapsed().as_secs_f64(),
        path.display()
    );
    assert!(
        report.is_valid() && hanging.is_empty(),
        "anomalies (seed {}, history {}):\n{report}hanging transactions: {hanging:?}",
        s.seed,
        path.display()
    );
    assert!(report.undrained.is_empty(), "partitions not read whole: {:?}", report.undrained);
    assert_eq!(injected.len(), FaultKind::ALL.len(), "every fault kind injected: {injected:?}");
    assert_progress(&report, transactions);
    if transactions {
        exactly_once(&ops);
    }
}

/// The child of [`a_hung_run_keeps_its_history_and_names_its_blocked_calls`]:
/// a run whose client call never returns, under a 1 s watchdog.
#[test]
#[ignore = "run by a_hung_run_keeps_its_history_and_names_its_blocked_calls"]
fn hung_run_child() {
    let Ok(path) = std::env::var("FERRY_CHAOS_HUNG_HISTORY") else { return };
    let rec = Recorder::to_file(std::path::Path::new(&path)).expect("the history file");
    let _guard = {
        let rec = rec.clone();
        watchdog_naming("hung run", Duration::from_secs(1), move || rec.report_blocked("watchdog"))
    };
    rec.log(Op::new(Phase::Invoke, Kind::Send, 3, 0).value(3_000_000_007));
    let _done = rec.call("producer 3", "delivery of 3000000007");
    let _commit = rec.call("transform", "commit_transaction 5000017");
    std::thread::sleep(Duration::from_secs(30));
}

/// A run its watchdog ends keeps the history written so far, and says
/// which client calls were blocked, since when: on stderr and as the
/// history's last line.
#[test]
fn a_hung_run_keeps_its_history_and_names_its_blocked_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hung.jsonl");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "chaos::hung_run_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FERRY_CHAOS_HUNG_HISTORY", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101), "ended by its watchdog");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hung run: blocked: producer 3: delivery of 3000000007 since"), "{stderr}");
    assert!(stderr.contains("transform: commit_transaction 5000017 since"), "{stderr}");
    let ops = ferry_chaos::history::read(&path).unwrap();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!((ops[0].phase, ops[0].value), (Phase::Invoke, Some(3_000_000_007)));
    let last = ops[1].error.as_deref().unwrap_or_default();
    assert_eq!((ops[1].phase, ops[1].f), (Phase::Info, Kind::Fault));
    assert!(last.starts_with("watchdog: producer 3: delivery of 3000000007 since "), "{last}");
}

/// Three voters whose cluster traffic crosses the fault proxy, a
/// controller leader elected.
fn faulty_cluster() -> (Cluster, Proxy, Vec<i32>) {
    let mut cluster = Cluster::prepare(3);
    let ids = cluster.ids();
    let addresses: BTreeMap<i32, String> =
        ids.iter().map(|id| (*id, format!("127.0.0.1:{}", cluster.node(*id).cluster_port))).collect();
    let nodes: Vec<(i32, String)> = addresses.iter().map(|(id, a)| (*id, a.clone())).collect();
    let proxy = Proxy::start(&nodes).expect("proxy");
    for id in &ids {
        cluster.node_mut(*id).toml =
            format!("{CLUSTER_TOML}replica_lag_time_max_ms = 4000\n{}", proxy.dial_via_toml(*id, &addresses));
    }
    cluster.start_all();
    cluster.wait_for_leader(1, None);
    (cluster, proxy, ids)
}

/// The seeded faults, one at a time, for the run's length (each logged in
/// `rec`); returns when the run began and the faults injected by kind.
fn faults(
    cluster: &mut Cluster,
    proxy: &Proxy,
    ids: &[i32],
    s: &Settings,
    rec: &Recorder,
) -> (Instant, BTreeMap<FaultKind, usize>) {
    let plan = Plan {
        nodes: ids.to_vec(),
        kinds: FaultKind::ALL.to_vec(),
        lasts: (Duration::from_secs(2), Duration::from_secs(4)),
        quiet: (Duration::from_millis(1500), Duration::from_secs(3)),
        latency_ms: (20, 250),
    };
    let steps = schedule::schedule(s.seed, &plan, s.length);
    let start = Instant::now();
    let mut injected: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for step in &steps {
        std::thread::sleep((start + step.at).saturating_duration_since(Instant::now()));
        let what = {
            let _call = rec.call("harness", format!("inject {}", step.fault));
            inject(cluster, proxy, ids, step.fault)
        };
        eprintln!("chaos {:>7.1}s: {what} for {:?}", start.elapsed().as_secs_f64(), step.lasts);
        rec.log(Op::new(Phase::Invoke, Kind::Fault, 0, 0).error(what.clone()));
        std::thread::sleep(step.lasts);
        {
            let _call = rec.call("harness", format!("heal {what}"));
            heal(cluster, proxy, step.fault);
        }
        rec.log(Op::new(Phase::Ok, Kind::Fault, 0, 0).error(what));
        *injected.entry(step.fault.kind()).or_default() += 1;
    }
    std::thread::sleep((start + s.length).saturating_duration_since(Instant::now()));
    (start, injected)
}

/// Every node's log beside the history, for the post-mortem.
fn keep_node_logs(cluster: &Cluster, s: &Settings, name: &str) {
    for id in cluster.ids() {
        let log = s.keep.join(format!("{name}-node{id}.log"));
        std::fs::write(&log, cluster.node(id).log_text()).expect("keep the node log");
    }
}

/// The workloads did something under the faults: the test cannot pass
/// on an idle cluster.
fn assert_progress(report: &Report, transactions: bool) {
    let [_, ok, ..] = report.writes;
    assert!(ok >= 100, "only {ok} writes acknowledged:\n{report}");
    assert!(report.reads >= ok, "fewer reads than acknowledged writes:\n{report}");
    assert!(!transactions || report.txns[0] >= 3, "only {} transactions committed:\n{report}", report.txns[0]);
}

/// Each input record is transformed into at most one committed output
/// record (the output key is the input value).
fn exactly_once(ops: &[Op]) {
    let mut keys: HashMap<&str, Vec<i64>> = HashMap::new();
    for op in ops.iter().filter(|o| o.f == Kind::Read && o.process == DRAIN && o.partition >= Some(OUT_BASE)) {
        if let (Some(k), Some(v)) = (op.key.as_deref(), op.value) {
            keys.entry(k).or_default().push(v);
        }
    }
    let twice: Vec<_> = keys.iter().filter(|(_, vs)| vs.len() > 1).take(20).collect();
    assert!(twice.is_empty(), "input records transformed twice into committed output (input -> outputs): {twice:?}");
}

/// Starts `fault`; says what it did (a cut from the leader names the pair).
fn inject(cluster: &mut Cluster, proxy: &Proxy, ids: &[i32], fault: Fault) -> String {
    match fault {
        Fault::Kill(n) => cluster.kill9(n),
        Fault::Pause(n) => cluster.pause(n),
        Fault::Isolate(n) => proxy.split(&[n]),
        Fault::CutFromLeader(n) => {
            let leader = ids.iter().find_map(|id| controller_leader(cluster.node(*id))).unwrap_or(ids[0]);
            // The leader itself: another node is cut from it instead.
            let n = if n == leader { *ids.iter().find(|i| **i != leader).unwrap_or(&n) } else { n };
            proxy.cut(n, leader);
            return format!("cut node {n} from the controller leader {leader}");
        }
        Fault::OneWay(a, b) => proxy.drop_one_way(a, b),
        Fault::Bridge(b) => {
            let (left, right) = bridge_halves(ids, b);
            for l in &left {
                for r in &right {
                    proxy.cut(*l, *r);
                }
            }
        }
        Fault::Latency(ms) => proxy.delay_all(Duration::from_millis(ms)),
    }
    fault.to_string()
}

fn heal(cluster: &mut Cluster, proxy: &Proxy, fault: Fault) {
    match fault {
        Fault::Kill(n) => cluster.restart(n),
        Fault::Pause(n) => cluster.resume(n),
        _ => proxy.heal(),
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4");
    c
}

/// The history's value of a record (its payload, a decimal number).
fn value_of(payload: Option<&[u8]>) -> Option<i64> {
    std::str::from_utf8(payload?).ok()?.parse().ok()
}

/// Where librdkafka's log of the idempotent producers goes, when asked for.
type ClientLog = Option<(String, Arc<Mutex<std::io::BufWriter<std::fs::File>>>)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An idempotent producer's librdkafka log lines, stamped with the
/// history's clock and process, so a client-side decision (an epoch bump,
/// a renumbered retry) can be laid beside the history's events.
struct ProducerLog {
    rec: Recorder,
    process: u64,
    out: Option<Arc<Mutex<std::io::BufWriter<std::fs::File>>>>,
}

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if let Some(out) = &self.out {
            let t = self.rec.now() as f64 / 1e9;
            // A lost line only thins a diagnostic log.
            let _ = writeln!(lock(out), "{t:.6} p{} {level:?} {fac} {message}", self.process);
        }
    }
}

/// Sends increasing values with an idempotent acks=all producer, logging
/// each send; a producer that fails fatally is replaced by a new one (a
/// new process in the history). One request in flight and a long message
/// timeout: librdkafka 2.12 bumps the epoch when a request behind a failed
/// one is refused as out of order, or when a message times out, and then
/// resends records that may already be written under new sequence numbers
/// (librdkafka#4953, docs/reliability.md Found 11): duplicates no broker
/// can detect. Retries of one batch across leader changes, what the
/// broker's deduplication must get right, still happen.
fn idempotent_producer(bootstrap: &str, rec: &Recorder, stop: &AtomicBool, processes: &AtomicU64, log: ClientLog) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        while !stop.load(Ordering::Acquire) {
            let process = processes.fetch_add(1, Ordering::Relaxed);
            let mut config = client(bootstrap);
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("max.in.flight.requests.per.connection", "1")
                .set("request.timeout.ms", "4000")
                .set("message.timeout.ms", "120000");
            if let Some((contexts, _)) = &log {
                // rdkafka passes librdkafka no more than the `log` crate's
                // level, which is off in tests.
                config.set("debug", contexts).set_log_level(RDKafkaLogLevel::Debug);
            }
            let context = ProducerLog { rec: rec.clone(), process, out: log.as_ref().map(|(_, out)| out.clone()) };
            let producer: FutureProducer<ProducerLog> = config.create_with_context(context).expect("producer");
            let mut inflight = tokio::task::JoinSet::new();
            let mut n = 0i64;
            while !stop.load(Ordering::Acquire) && producer.client().fatal_error().is_none() {
                while inflight.len() >= 8 {
                    inflight.join_next().await;
                }
                let value = i64::try_from(process).unwrap_or(0) * VALUES + n;
                n += 1;
                let text = value.to_string();
                rec.log(Op::new(Phase::Invoke, Kind::Send, process, 0).value(value).key(text.clone()));
                match producer.send_result(FutureRecord::to(TOPIC).key(&text).payload(&text)) {
                    Ok(delivery) => {
                        let rec = rec.clone();
                        inflight.spawn(async move {
                            let _call = rec.call(&format!("producer {process}"), format!("delivery of {value}"));
                            let done = Op::new(Phase::Ok, Kind::Send, process, 0).value(value);
                            rec.log(match delivery.await {
                                Ok(Ok(d)) => done.partition(d.partition).offset(d.offset),
                                Ok(Err((e, _))) => Op { phase: Phase::Info, ..done }.error(e.to_string()),
                                Err(_) => Op { phase: Phase::Info, ..done }.error("delivery future dropped"),
                            });
                        });
                    }
                    // Never handed to the broker.
                    Err((e, _)) => {
                        rec.log(Op::new(Phase::Fail, Kind::Send, process, 0).value(value).error(e.to_string()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while inflight.join_next().await.is_some() {}
        }
    });
}

/// The history process of the final complete reads.
const DRAIN: u64 = 999;

/// Logs a reset for every partition a rebalance assigns: reads may repeat.
struct Resets {
    rec: Recorder,
    process: u64,
}

impl ClientContext for Resets {}

impl ConsumerContext for Resets {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            for e in tpl.elements() {
                self.rec.log(Op::new(Phase::Ok, Kind::Reset, self.process, 0).partition(e.partition()));
            }
        }
    }
}

/// A read_committed group consumer of [`TOPIC`], logging every record.
fn group_consumer(bootstrap: &str, rec: &Recorder, stop: &AtomicBool, process: u64) {
    let consumer: BaseConsumer<Resets> = client(bootstrap)
        .set("group.id", "chaos-readers")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .create_with_context(Resets { rec: rec.clone(), process })
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    while !stop.load(Ordering::Acquire) {
        let _call = rec.call("group consumer", "poll");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
            && let Some(value) = value_of(m.payload())
        {
            rec.log(
                Op::new(Phase::Ok, Kind::Read, process, 0).partition(m.partition()).offset(m.offset()).value(value),
            );
        }
    }
    let _call = rec.call("group consumer", "close");
    drop(consumer);
}

/// Consume-transform-produce: reads [`TOPIC`] (group `chaos-ctp`), writes
/// one new value per input record to [`OUT`] keyed by the input value,
/// and commits the input offsets in the same transaction; every fifth
/// transaction is aborted on purpose. After an abort the input is read
/// again from the committed offsets.
fn transform(bootstrap: &str, rec: &Recorder, stop: &AtomicBool, processes: &AtomicU64) {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", "chaos-ctp")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut producer: Option<(FutureProducer, u64)> = None;
    let mut txns = 0u64;
    let mut n = 0i64;
    while !stop.load(Ordering::Acquire) {
        let (p, process) = if let Some(p) = producer.take() {
            p
        } else {
            let process = processes.fetch_add(1, Ordering::Relaxed);
            let p: FutureProducer = client(bootstrap)
                .set("transactional.id", "chaos-ctp")
                .set("transaction.timeout.ms", "20000")
                .set("request.timeout.ms", "4000")
                .set("message.timeout.ms", "15000")
                .set("linger.ms", "5")
                .create()
                .expect("transactional producer");
            let init = rec.call("transform", format!("init_transactions (process {process})"));
            if p.init_transactions(T).is_err() {
                drop(init);
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            drop(init);
            n = 0;
            (p, process)
        };
        let mut batch = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while batch.len() < 20 && Instant::now() < deadline {
            let _call = rec.call("transform", "poll");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50))
                && let Some(v) = value_of(m.payload())
            {
                batch.push((m.partition(), m.offset(), v));
            }
        }
        if batch.is_empty() {
            producer = Some((p, process));
            continue;
        }
        txns += 1;
        let txn = process * 1_000_000 + txns;
        let begin = rec.call("transform", format!("begin_transaction {txn}"));
        if p.begin_transaction().is_err() {
            drop(begin);
            rewind(&consumer, rec);
            continue;
        }
        drop(begin);
        let mut deliveries = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for (partition, offset, input) in &batch {
            let value = i64::try_from(process).unwrap_or(0) * VALUES + n;
            n += 1;
            let (key, text) = (input.to_string(), value.to_string());
            rec.log(Op::new(Phase::Invoke, Kind::Send, process, 0).value(value).txn(txn).key(key.clone()));
            match p.send_result(FutureRecord::to(OUT).key(&key).payload(&text)) {
                Ok(d) => deliveries.push((value, d)),
                Err((e, _)) => rec.log(Op::new(Phase::Fail, Kind::Send, process, 0).value(value).error(e.to_string())),
            }
            next.insert(*partition, offset + 1);
        }
        let abort_on_purpose = txns.is_multiple_of(5);
        let outcome = finish(&p, &consumer, &next, abort_on_purpose, rec, process, txn);
        for (value, d) in deliveries {
            let done = Op::new(Phase::Ok, Kind::Send, process, 0).value(value).txn(txn);
            let _call = rec.call("transform", format!("delivery of {value} (txn {txn})"));
            rec.log(match futures_lite::future::block_on(d) {
                Ok(Ok(d)) => done.partition(OUT_BASE + d.partition).offset(d.offset),
                Ok(Err((e, _))) => Op { phase: Phase::Info, ..done }.error(e.to_string()),
                Err(_) => Op { phase: Phase::Info, ..done }.error("delivery future dropped"),
            });
        }
        match outcome {
            Finished::Committed => producer = Some((p, process)),
            Finished::Aborted => {
                rewind(&consumer, rec);
                producer = Some((p, process));
            }
            // A new producer (the same transactional id) fences this one
            // and settles its transaction.
            Finished::Unknown => rewind(&consumer, rec),
        }
    }
    drop(producer);
    // A transaction left open would hold the read_committed end of [`OUT`]
    // below records committed after it: a new producer with the
    // transactional id aborts it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let settle: FutureProducer =
            client(bootstrap).set("transactional.id", "chaos-ctp").create().expect("transactional producer");
        let _call = rec.call("transform", "init_transactions after the run");
        if settle.init_transactions(T).is_ok() {
            return;
        }
    }
    panic!("the transactional id chaos-ctp could not be initialised within 60 s after the run");
}

enum Finished {
    Committed,
    Aborted,
    Unknown,
}

/// Commits (or aborts) the open transaction with the input offsets
/// `next`, logging the outcome.
fn finish(
    p: &FutureProducer,
    consumer: &BaseConsumer,
    next: &BTreeMap<i32, i64>,
    abort: bool,
    rec: &Recorder,
    process: u64,
    txn: u64,
) -> Finished {
    let commit = Op::new(Phase::Invoke, Kind::Commit, process, 0).txn(txn);
    let aborted = |why: String| {
        let _call = rec.call("transform", format!("abort_transaction {txn}"));
        if p.abort_transaction(T).is_ok() {
            rec.log(Op::new(Phase::Ok, Kind::Abort, process, 0).txn(txn).error(why));
            Finished::Aborted
        } else {
            rec.log(Op::new(Phase::Info, Kind::Abort, process, 0).txn(txn).error(why));
            Finished::Unknown
        }
    };
    if abort {
        rec.log(Op::new(Phase::Invoke, Kind::Abort, process, 0).txn(txn));
        return aborted("on purpose".into());
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in next {
        let _ = tpl.add_partition_offset(TOPIC, *partition, Offset::Offset(*offset));
    }
    let Some(group) = consumer.group_metadata() else {
        rec.log(Op::new(Phase::Invoke, Kind::Abort, process, 0).txn(txn));
        return aborted("no group metadata".into());
    };
    // librdkafka's send_offsets_to_transaction can wait forever on a group
    // coordinator that was killed and left the metadata (librdkafka #5456,
    // #5511): it runs on a thread of its own, and past its deadline the
    // outcome is unknown, so the caller leaves this producer stuck and a
    // new one with the same transactional id fences it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stuck = p.clone();
    let call = rec.call("transform", format!("send_offsets_to_transaction {txn}"));
    std::thread::spawn(move || {
        let _ = tx.send(stuck.send_offsets_to_transaction(&tpl, &group, T));
        drop(call);
    });
    match rx.recv_timeout(T + Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            rec.log(Op::new(Phase::Invoke, Kind::Abort, process, 0).txn(txn));
            return if requires_abort(&e) { aborted(e.to_string()) } else { unknown_abort(rec, process, txn, &e) };
        }
        Err(_) => {
            rec.log(commit.clone());
            rec.log(Op { phase: Phase::Info, ..commit }.error("send_offsets_to_transaction never returned"));
            return Finished::Unknown;
        }
    }
    rec.log(commit.clone());
    // A retriable failure may be retried (librdkafka keeps the state).
    for _ in 0..3 {
        let call = rec.call("transform", format!("commit_transaction {txn}"));
        let committed = p.commit_transaction(T);
        drop(call);
        match committed {
            Ok(()) => {
                rec.log(Op { phase: Phase::Ok, ..commit });
                return Finished::Committed;
            }
            Err(e) if requires_abort(&e) => {
                let _call = rec.call("transform", format!("abort_transaction {txn}"));
                return if p.abort_transaction(T).is_ok() {
                    rec.log(Op { phase: Phase::Fail, ..commit }.error(e.to_string()));
                    Finished::Aborted
                } else {
                    rec.log(Op { phase: Phase::Info, ..commit }.error(e.to_string()));
                    Finished::Unknown
                };
            }
            Err(e) if retriable(&e) => continue,
            Err(e) => {
                rec.log(Op { phase: Phase::Info, ..commit }.error(e.to_string()));
                return Finished::Unknown;
            }
        }
    }
    rec.log(Op { phase: Phase::Info, ..commit }.error("commit retries exhausted"));
    Finished::Unknown
}

/// An abort that could not be asked for cleanly: its outcome is unknown.
fn unknown_abort(rec: &Recorder, process: u64, txn: u64, e: &KafkaError) -> Finished {
    rec.log(Op::new(Phase::Info, Kind::Abort, process, 0).txn(txn).error(e.to_string()));
    Finished::Unknown
}

fn requires_abort(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(r) if r.txn_requires_abort())
}

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(r) if r.is_retriable())
}

/// Back to the group's committed input offsets (the earliest without).
fn rewind(consumer: &BaseConsumer, rec: &Recorder) {
    let _call = rec.call("transform", "rewind (committed, seek)");
    let Ok(committed) = consumer.committed(T) else { return };
    let mut tpl = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        let _ = tpl.add_partition_offset(e.topic(), e.partition(), offset);
    }
    let _ = consumer.seek_partitions(tpl, T);
}

/// Reads every partition of `topic` from the start to its end
/// (read_committed), logging each record and a drain per partition read
/// whole, at most two minutes.
fn drain(bootstrap: &str, rec: &Recorder, topic: &str) {
    let base = if topic == OUT { OUT_BASE } else { 0 };
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", format!("chaos-drain-{topic}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("drain consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    // Watermarks as read_uncommitted sees them: the high watermark, where
    // the drain's read_committed ones are the last stable offset.
    let uncommitted: BaseConsumer = client(bootstrap)
        .set("group.id", format!("chaos-drain-{topic}"))
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("watermark consumer");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut whole: BTreeMap<i32, (i64, Option<i64>)> = BTreeMap::new();
    while whole.len() < PARTITIONS as usize && Instant::now() < deadline {
        let _call = rec.call(&format!("drain {topic}"), "poll or fetch_watermarks");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut op =
                    Op::new(Phase::Ok, Kind::Read, DRAIN, 0).partition(base + m.partition()).offset(m.offset());
                if let Some(v) = value_of(m.payload()) {
                    op = op.value(v);
                }
                if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    op = op.key(k);
                }
                rec.log(op);
            }
            // The end of a partition: everything below its high watermark
            // (no writes run now) has been read.
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Ok((_, stable)) = consumer.fetch_watermarks(topic, p, T) {
                    let high = uncommitted.fetch_watermarks(topic, p, T).ok().map(|(_, h)| h);
                    whole.insert(p, (stable, high));
                }
            }
            _ => {}
        }
    }
    for (p, (stable, high)) in whole {
        let mut op = Op::new(Phase::Ok, Kind::Drain, DRAIN, 0).partition(base + p).offset(stable);
        if let Some(high) = high.filter(|h| *h != stable) {
            op = op.error(format!("{topic}/{p}: last stable offset {stable}, high watermark {high}"));
        }
        rec.log(op);
    }
}

/// The AMQP quorum queue of [`amqp_quorum_queue_under_faults_loses_nothing_confirmed`];
/// history partition [`AMQP`].
const QUEUE: &str = "chaos-quorum";
const AMQP: i32 = 300;
/// AMQP client calls that can block (connect, declare, a confirm).
const AMQP_T: Duration = Duration::from_secs(10);

/// AMQP on a quorum queue under every kind of fault: a publisher with
/// confirms on one node and a manual-ack consumer on another (each node
/// forwards to the queue's leader), both moving to the next node when
/// their connection fails. At-least-once: no confirmed message lost, and
/// a message comes back only flagged redelivered (or when its publish's
/// outcome was unknown).
#[test]
fn amqp_quorum_queue_under_faults_loses_nothing_confirmed() {
    let s = settings();
    let name = format!("chaos-amqp-quorum-{}", s.seed);
    let path = s.keep.join(format!("{name}.jsonl"));
    let rec = Recorder::to_file(&path).expect("the history file");
    let _guard = {
        let rec = rec.clone();
        watchdog_naming("amqp chaos run", s.length + Duration::from_secs(420), move || rec.report_blocked("watchdog"))
    };
    let (mut cluster, proxy, ids) = faulty_cluster();
    for id in &ids {
        cluster.wait_for_brokers(*id, &ids);
    }
    let nodes: Vec<(i32, String)> = ids.iter().map(|id| (*id, cluster.node(*id).amqp_uri())).collect();
    let (stop, stop_reader) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    // When the consumer last had a delivery or (re)subscribed, history clock.
    let last_read = Arc::new(AtomicU64::new(0));
    let consuming = Arc::new(AtomicBool::new(false));
    let reader = {
        let (n, r, st, lr, c) = (nodes.clone(), rec.clone(), stop_reader.clone(), last_read.clone(), consuming.clone());
        std::thread::spawn(move || amqp_block_on(amqp_consumer(&n, 1, &r, &st, &lr, &c)))
    };
    eventually_within("the AMQP consumer subscribed", Duration::from_secs(60), || consuming.load(Ordering::Acquire));
    let writer = {
        let (n, r, st) = (nodes.clone(), rec.clone(), stop.clone());
        std::thread::spawn(move || amqp_block_on(amqp_publisher(&n, 0, &r, &st)))
    };

    let (start, injected) = faults(&mut cluster, &proxy, &ids, &s, &rec);
    stop.store(true, Ordering::Release);
    writer.join().expect("publisher thread");
    // Emptied: nothing delivered for 5 s (at most two minutes), every
    // fault healed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let since = || Duration::from_nanos(rec.now().saturating_sub(last_read.load(Ordering::Acquire)));
    while since() < Duration::from_secs(5) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = Instant::now() < deadline;
    stop_reader.store(true, Ordering::Release);
    reader.join().expect("consumer thread");
    if drained {
        rec.log(Op::new(Phase::Ok, Kind::Drain, 0, 0).partition(AMQP));
    }

    let ops = rec.ops();
    assert_eq!(rec.write_error(), None, "writing the history {}", path.display());
    keep_node_logs(&cluster, &s, &name);
    let options = Options { duplicates_forbidden: false, unflagged_redelivery_forbidden: true, ..Options::default() };
    let report = checker::check(&ops, &options);
    let redelivered = ops.iter().filter(|o| o.f == Kind::Read && o.redelivered).count();
    let faults: usize = injected.values().sum();
    eprintln!(
        "{name}: seed {} ran {:.0} s: {faults} faults {injected:?}, {redelivered} deliveries flagged redelivered\n\
         {report}history: {}",
        s.seed,
        start.elapsed().as_secs_f64(),
        path.display()
    );
    assert!(report.is_valid(), "anomalies (seed {}, history {}):\n{report}", s.seed, path.display());
    assert!(report.undrained.is_empty(), "the queue was not emptied within 2 minutes: {:?}", report.undrained);
    assert_eq!(injected.len(), FaultKind::ALL.len(), "every fault kind injected: {injected:?}");
    assert_progress(&report, false);
}

fn amqp_block_on<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f);
}

fn quorum_args() -> lapin::types::FieldTable {
    let mut t = lapin::types::FieldTable::default();
    t.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
    t
}

/// A connection and channel to `nodes[at]` with the quorum queue declared
/// (every client declares it; the same declaration again changes nothing),
/// or `None` within [`AMQP_T`].
async fn amqp_channel(uri: &str) -> Option<(lapin::Connection, lapin::Channel)> {
    use lapin::options::QueueDeclareOptions;
    let open = async {
        let conn = lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await.ok()?;
        let ch = conn.create_channel().await.ok()?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(QUEUE.into(), durable, quorum_args()).await.ok()?;
        Some((conn, ch))
    };
    tokio::time::timeout(AMQP_T, open).await.ok().flatten()
}

/// Publishes persistent messages to [`QUEUE`] (mandatory: an unroutable
/// one comes back instead of being confirmed and dropped), one at a time,
/// each waiting for its confirm: ack `ok`, nack or returned `fail`, an
/// error or no answer within [`AMQP_T`] `info` (the connection was lost
/// before the confirm). Starts on `nodes[home]` and moves to the next node
/// after a failure.
async fn amqp_publisher(nodes: &[(i32, String)], home: usize, rec: &Recorder, stop: &AtomicBool) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    const PROCESS: u64 = 1;
    let mut n = 0i64;
    let mut at = home;
    while !stop.load(Ordering::Acquire) {
        let (node, uri) = &nodes[at % nodes.len()];
        at += 1;
        let connect = rec.call("amqp publisher", format!("connect to node {node}"));
        let Some((conn, ch)) = amqp_channel(uri).await else {
            drop(connect);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        drop(connect);
        let select = tokio::time::timeout(AMQP_T, ch.confirm_select(ConfirmSelectOptions::default())).await;
        if !matches!(select, Ok(Ok(()))) {
            abandon(conn).await;
            continue;
        }
        at -= 1;
        let via = format!("node {node}");
        while !stop.load(Ordering::Acquire) {
            let value = i64::try_from(PROCESS).unwrap_or(0) * VALUES + n;
            n += 1;
            let text = value.to_string();
            rec.log(Op::new(Phase::Invoke, Kind::Send, PROCESS, 0).value(value).key(via.clone()));
            let props = lapin::BasicProperties::default().with_delivery_mode(2);
            let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm =
                async { ch.basic_publish("".into(), QUEUE.into(), mandatory, text.as_bytes(), props).await?.await };
            let done = Op::new(Phase::Ok, Kind::Send, PROCESS, 0).value(value).key(via.clone());
            let call = rec.call("amqp publisher", format!("confirm of {value} via {via}"));
            let confirmed = tokio::time::timeout(AMQP_T, confirm).await;
            drop(call);
            match confirmed {
                Ok(Ok(lapin::Confirmation::Ack(None))) => rec.log(done.partition(AMQP)),
                Ok(Ok(lapin::Confirmation::Ack(Some(_)))) => {
                    rec.log(Op { phase: Phase::Fail, ..done }.error("returned unroutable"));
                }
                // The broker says it did not take it.
                Ok(Ok(_)) => rec.log(Op { phase: Phase::Fail, ..done }.error("nack")),
                Ok(Err(e)) => {
                    rec.log(Op { phase: Phase::Info, ..done }.error(e.to_string()));
                    at += 1;
                    break;
                }
                Err(_) => {
                    rec.log(Op { phase: Phase::Info, ..done }.error("no confirm within 10 s"));
                    at += 1;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        abandon(conn).await;
    }
}

/// Consumes [`QUEUE`] with manual acks (prefetch 50), logging each delivery
/// with its redelivered flag before acking it. Starts on `nodes[home]` and
/// moves to the next node when the connection fails or the broker cancels
/// the consumer.
async fn amqp_consumer(
    nodes: &[(i32, String)],
    home: usize,
    rec: &Recorder,
    stop: &AtomicBool,
    last_read: &AtomicU64,
    consuming: &AtomicBool,
) {
    use futures_lite::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    const PROCESS: u64 = 2;
    let mut at = home;
    while !stop.load(Ordering::Acquire) {
        let (node, uri) = &nodes[at % nodes.len()];
        at += 1;
        let connect = rec.call("amqp consumer", format!("connect to node {node}"));
        let Some((conn, ch)) = amqp_channel(uri).await else {
            drop(connect);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        drop(connect);
        let subscribe = async {
            ch.basic_qos(50, BasicQosOptions::default()).await?;
            ch.basic_consume(QUEUE.into(), "chaos".into(), BasicConsumeOptions::default(), Default::default()).await
        };
        // Given up on, closed: a consume answered after the timeout would
        // otherwise stay alive in lapin, holding its prefetch unread
        // (Found 15, `chaos_amqp_clients.rs`).
        let Ok(Ok(mut consumer)) = tokio::time::timeout(AMQP_T, subscribe).await else {
            abandon(conn).await;
            continue;
        };
        at -= 1;
        last_read.store(rec.now(), Ordering::Release);
        consuming.store(true, Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    if let Some(v) = value_of(Some(&d.data)) {
                        let how = format!("node {node} tag {}", d.delivery_tag);
                        rec.log(Op {
                            redelivered: d.redelivered,
                            ..Op::new(Phase::Ok, Kind::Read, PROCESS, 0).partition(AMQP).value(v).key(how)
                        });
                    }
                    last_read.store(rec.now(), Ordering::Release);
                    let call = rec.call("amqp consumer", format!("ack of tag {} via node {node}", d.delivery_tag));
                    let ack = tokio::time::timeout(AMQP_T, d.ack(BasicAckOptions::default())).await;
                    drop(call);
                    if !matches!(ack, Ok(Ok(_))) {
                        at += 1;
                        break;
                    }
                }
                // The connection failed or the consumer was cancelled.
                Ok(_) => {
                    at += 1;
                    break;
                }
                Err(_) => {}
            }
        }
        abandon(conn).await;
    }
}
