//! `ferry bench produce|consume|e2e` (and `stomp`, in bench_stomp.rs): throughput and latency against any
//! Kafka-compatible broker, in the spirit of kafka-producer-perf-test.
//!
//! Producers: `--concurrency` tasks, each with its own connection per
//! leader, keeping up to `--in-flight` Produce requests in flight
//! (pipelined). A batch is sent when it holds `--batch-records` records or
//! its first record waited `--linger-ms`. Latency is from a record's
//! creation to its acknowledgement (HDR histogram, µs resolution).

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use ferry_client::{
    Client, ClientError, Connection, EARLIEST, FETCH_VERSION, InFlight, LATEST, PRODUCE_VERSION, check, decode_batches,
    fetch_request, produce_request, produce_result,
};
use ferry_records::batch::{BatchHeader, HEADER_LEN};
use ferry_records::records::{NewRecord, build_batch};
use hdrhistogram::Histogram;
use kafka_protocol::messages::{FetchRequest, ProduceRequest};
use serde_json::json;

use super::produce::Codec;
use super::{ClientArgs, Format};

#[derive(Debug, Args)]
pub struct BenchCmd {
    #[command(subcommand)]
    pub mode: BenchMode,
}

#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// Produce as fast as allowed; report throughput and ack latency.
    Produce(ProduceBench),
    /// Read a topic from the start; report throughput and fetch latency.
    Consume(ConsumeBench),
    /// Produce and consume at once; report produce-to-consume latency.
    E2e(ProduceBench),
    /// The reference: a plain TCP sender/receiver pair on 127.0.0.1 (no
    /// broker), pushing the same number of bytes in 1 MiB writes.
    Loopback(LoopbackBench),
    /// A STOMP 1.2 load client (any STOMP broker): send with receipts, consume with acks.
    Stomp(super::bench_stomp::StompBench),
}

#[derive(Clone, Debug, Args)]
pub struct LoopbackBench {
    /// Bytes to push (default 1 GiB).
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Best of this many runs.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct ProduceBench {
    #[arg(long, short = 't')]
    pub topic: String,
    /// Records to send (default 1,000,000 unless --duration-secs is given).
    #[arg(long, short = 'n')]
    pub records: Option<u64>,
    /// Run for this long instead of a record count.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Value size in bytes.
    #[arg(long, short = 's', default_value_t = 100)]
    pub size: usize,
    /// Target records per second over all producers (default: unthrottled).
    #[arg(long)]
    pub rate: Option<f64>,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub acks: i16,
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    /// Partitions of the topic if the benchmark creates it.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Producer tasks, each with its own connection.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub concurrency: usize,
    /// Records per batch (Kafka's batch.size, in records).
    #[arg(long, default_value_t = 500)]
    pub batch_records: usize,
    /// Longest a record waits for its batch to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Print the summary as JSON (as `--format json`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ClientArgs,
}

#[derive(Clone, Debug, Args)]
pub struct ConsumeBench {
    #[arg(long, short = 't')]
    pub topic: String,
    /// Records to read (default: up to the end the topic has at start).
    #[arg(long, short = 'n')]
    pub records: Option<u64>,
    /// Stop after this long.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Bytes per fetch request.
    #[arg(long, default_value_t = 8 << 20)]
    pub fetch_bytes: i32,
    /// Consumer tasks (partitions are split between them).
    #[arg(long, short = 'c', default_value_t = 1)]
    pub concurrency: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ClientArgs,
}

/// Counters shared with the progress line.
#[derive(Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    done: AtomicBool,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A live progress line on stderr (only on a terminal).
fn progress_line(p: Arc<Progress>, started: Instant) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let (mut last_r, mut last_b, mut last_t) = (0u64, 0u64, Instant::now());
        while !p.done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (r, b) = (p.records.load(Ordering::Relaxed), p.bytes.load(Ordering::Relaxed));
            let dt = last_t.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{:>8.1}s  {:>12} records  {:>12.0} records/s  {:>9.2} MB/s   ",
                started.elapsed().as_secs_f64(),
                r,
                (r - last_r) as f64 / dt,
                (b - last_b) as f64 / dt / 1e6
            );
            let _ = std::io::stderr().flush();
            (last_r, last_b, last_t) = (r, b, Instant::now());
        }
        eprintln!();
    }))
}

struct Summary {
    mode: &'static str,
    records: u64,
    bytes: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    latency_name: &'static str,
}

impl Summary {
    fn print(&self, as_json: bool) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let (p50, p99, p999, max) = (ms(0.5), ms(0.99), ms(0.999), self.latency.max() as f64 / 1000.0);
        let (rps, mbps) = (self.records as f64 / secs, self.bytes as f64 / secs / 1e6);
        if as_json {
            say!(
                "{}",
                json!({
                    "mode": self.mode,
                    "records": self.records,
                    "bytes": self.bytes,
                    "errors": self.errors,
                    "seconds": secs,
                    "records_per_sec": rps,
                    "mb_per_sec": mbps,
                    "latency": self.latency_name,
                    "latency_ms": { "p50": p50, "p99": p99, "p999": p999, "max": max, "samples": self.latency.len() },
                })
            );
        } else {
            say!(
                "{}: {} records, {} errors in {:.2} s: {:.0} records/s, {:.2} MB/s",
                self.mode,
                self.records,
                self.errors,
                secs,
                rps,
                mbps
            );
            say!(
                "{} latency ms: p50 {p50:.2}, p99 {p99:.2}, p999 {p999:.2}, max {max:.2} ({} samples)",
                self.latency_name,
                self.latency.len()
            );
        }
    }
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd.mode {
        BenchMode::Produce(args) => {
            let client = args.conn.connect().await?;
            let partitions = ensure_topic(&client, &args.topic, args.partitions).await?;
            let s = produce(&client, &args, &partitions, None).await?;
            s.print(args.json || args.conn.format == Format::Json);
        }
        BenchMode::Consume(args) => {
            let client = args.conn.connect().await?;
            consume(&client, &args).await?.print(args.json || args.conn.format == Format::Json);
        }
        BenchMode::E2e(args) => {
            let client = args.conn.connect().await?;
            let partitions = ensure_topic(&client, &args.topic, args.partitions).await?;
            e2e(&client, &args, &partitions).await?.print(args.json || args.conn.format == Format::Json);
        }
        BenchMode::Loopback(args) => loopback(&args).await?,
        BenchMode::Stomp(cmd) => super::bench_stomp::run(cmd).await?,
    }
    Ok(())
}

/// Loopback TCP throughput: the ceiling any broker on this host shares.
async fn loopback(args: &LoopbackBench) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut best = f64::MAX;
    for _ in 0..args.runs.max(1) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let total = args.bytes;
        let receiver = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0u64;
            while got < total {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            std::io::Result::Ok(got)
        });
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let chunk = payload(1 << 20, 5);
        let started = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        let got = receiver.await.context("receiver task")??;
        anyhow::ensure!(got == total, "receiver got {got} of {total} bytes");
        best = best.min(started.elapsed().as_secs_f64());
    }
    let mbps = args.bytes as f64 / best / 1e6;
    if args.json {
        say!("{}", json!({ "mode": "loopback", "bytes": args.bytes, "seconds": best, "mb_per_sec": mbps }));
    } else {
        say!("loopback: {} bytes in {best:.3} s (best of {}): {mbps:.1} MB/s", args.bytes, args.runs.max(1));
    }
    Ok(())
}

/// The topic's partitions with their leaders, creating it if missing.
async fn ensure_topic(client: &Client, topic: &str, partitions: i32) -> anyhow::Result<Vec<(i32, i32)>> {
    if client.topic(topic).await.is_err() {
        client.create_topic(topic, partitions, -1, &[]).await?;
    }
    let t = client.topic(topic).await?;
    anyhow::ensure!(!t.partitions.is_empty(), "topic {topic} has no partitions");
    Ok(t.partitions.iter().map(|p| (p.partition, p.leader)).collect())
}

/// Letters, so that compression sees realistic (not all-zero) data.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// The e2e clock: microseconds since the benchmark's start, in the first
/// 8 bytes of each value.
fn stamp(value: &mut [u8], started: Instant) {
    let us = started.elapsed().as_micros() as u64;
    if let Some(head) = value.get_mut(..8) {
        head.copy_from_slice(&us.to_be_bytes());
    }
}

async fn produce(
    client: &Client,
    args: &ProduceBench,
    partitions: &[(i32, i32)],
    e2e_clock: Option<Instant>,
) -> anyhow::Result<Summary> {
    let total = match (args.records, args.duration_secs) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(1_000_000),
    };
    let deadline = args.duration_secs.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let concurrency = args.concurrency.max(1);
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let line = progress_line(progress.clone(), started);
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        // Records of this task: an even share of the total.
        let share = total.map(|n| n / concurrency as u64 + u64::from((task as u64) < n % concurrency as u64));
        let mine: Vec<(i32, i32)> =
            partitions.iter().copied().cycle().skip(task).step_by(concurrency).take(partitions.len().max(1)).collect();
        let mut conns = HashMap::new();
        for &(_, leader) in &mine {
            if let std::collections::hash_map::Entry::Vacant(e) = conns.entry(leader) {
                e.insert(Arc::new(client.dedicated(leader).await?));
            }
        }
        let (args, progress) = (args.clone(), progress.clone());
        let rate = args.rate.map(|r| r / concurrency as f64);
        tasks.push(tokio::spawn(producer_task(args, mine, conns, share, deadline, rate, progress, e2e_clock)));
    }
    let mut latency = histogram();
    let mut first_error = None;
    for t in tasks {
        match t.await.context("producer task")? {
            Ok(h) => latency.add(h).map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = started.elapsed();
    progress.done.store(true, Ordering::Relaxed);
    if let Some(l) = line {
        let _ = l.await;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Summary {
        mode: "produce",
        records: progress.records.load(Ordering::Relaxed),
        bytes: progress.bytes.load(Ordering::Relaxed),
        errors: progress.errors.load(Ordering::Relaxed),
        elapsed,
        latency,
        latency_name: "ack",
    })
}

/// A request in flight: when its batch was started, how many records, and
/// the in-flight slot it holds until answered.
struct Sent {
    pending: InFlight<ProduceRequest>,
    created: Instant,
    records: u64,
    bytes: u64,
    partition: i32,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

#[allow(clippy::too_many_arguments)]
async fn producer_task(
    args: ProduceBench,
    partitions: Vec<(i32, i32)>,
    conns: HashMap<i32, Arc<Connection>>,
    share: Option<u64>,
    deadline: Option<Instant>,
    rate: Option<f64>,
    progress: Arc<Progress>,
    e2e_clock: Option<Instant>,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = histogram();
    let value = payload(args.size.max(if e2e_clock.is_some() { 8 } else { 0 }), partitions.len() as u64 + 7);
    let batch_records = args.batch_records.max(1);
    let linger = Duration::from_millis(args.linger_ms);
    // Answers are awaited by a task of their own, so each latency is taken
    // when its answer arrives, not when the sender next looks; the
    // semaphore bounds the requests in flight.
    let slots = Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1)));
    let (to_acker, mut acks) = tokio::sync::mpsc::unbounded_channel::<Sent>();
    let acker = {
        let (topic, progress) = (args.topic.clone(), progress.clone());
        tokio::spawn(async move {
            let mut hist = histogram();
            while let Some(s) = acks.recv().await {
                settle(s, &topic, &mut hist, &progress).await;
            }
            hist
        })
    };
    let start = Instant::now();
    let mut made = 0u64;
    let mut turn = 0usize;
    let versions: HashMap<i32, i16> = conns
        .iter()
        .map(|(node, c)| Ok((*node, c.version::<ProduceRequest>(PRODUCE_VERSION)?)))
        .collect::<Result<_, ClientError>>()?;
    loop {
        let more = share.is_none_or(|n| made < n) && deadline.is_none_or(|d| Instant::now() < d);
        if !more {
            break;
        }
        // Fill one batch, paced by the rate, up to the linger time.
        let want = share.map_or(batch_records as u64, |n| (n - made).min(batch_records as u64)) as usize;
        let created = Instant::now();
        let mut records = Vec::with_capacity(want);
        while records.len() < want {
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64((made + records.len() as u64) as f64 / r.max(1e-9));
                let now = Instant::now();
                if due > now {
                    if !records.is_empty() && due > created + linger {
                        break;
                    }
                    tokio::time::sleep(due - now).await;
                }
            }
            // Only e2e values differ (their send time); the others share
            // one payload, so no per-record copy before encoding.
            let stamped = e2e_clock.map(|clock| {
                let mut v = value.clone();
                stamp(&mut v, clock);
                v
            });
            records.push((ferry_util::time::now_ms(), stamped));
        }
        let n = records.len() as u64;
        made += n;
        let views: Vec<NewRecord<'_>> = records
            .iter()
            .map(|(ts, stamped)| NewRecord {
                key: None,
                value: Some(stamped.as_deref().unwrap_or(&value)),
                headers: Vec::new(),
                timestamp: *ts,
            })
            .collect();
        let (partition, leader) = partitions[turn % partitions.len()];
        turn += 1;
        let batch = build_batch(&views, args.compression.into(), -1, -1, -1)
            .map_err(|e| anyhow::anyhow!("encoding a batch: {e}"))?;
        let batch = Bytes::from(batch);
        let bytes = batch.len() as u64;
        let req = produce_request(&args.topic, partition, batch, args.acks, 30_000);
        let (Some(conn), Some(&v)) = (conns.get(&leader), versions.get(&leader)) else {
            anyhow::bail!("no connection to broker {leader}");
        };
        if args.acks == 0 {
            conn.fire(&req, v).await?;
            hist.saturating_record_n(created.elapsed().as_micros().max(1) as u64, n);
            progress.records.fetch_add(n, Ordering::Relaxed);
            progress.bytes.fetch_add(bytes, Ordering::Relaxed);
            continue;
        }
        let slot = slots.clone().acquire_owned().await.context("in-flight slots")?;
        let pending = conn.start(&req, v).await?;
        let sent = Sent { pending, created, records: n, bytes, partition, _slot: slot };
        if to_acker.send(sent).is_err() {
            anyhow::bail!("the acknowledgement task stopped");
        }
    }
    drop(to_acker);
    hist.add(acker.await.context("acknowledgement task")?).map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
    Ok(hist)
}

async fn settle(s: Sent, topic: &str, hist: &mut Histogram<u64>, progress: &Progress) {
    let result =
        s.pending.wait().await.map_err(anyhow::Error::from).and_then(|r| Ok(produce_result(&r, topic, s.partition)?));
    match result {
        Ok(_) => {
            hist.saturating_record_n(s.created.elapsed().as_micros().max(1) as u64, s.records);
            progress.records.fetch_add(s.records, Ordering::Relaxed);
            progress.bytes.fetch_add(s.bytes, Ordering::Relaxed);
        }
        Err(e) => {
            if progress.errors.fetch_add(s.records, Ordering::Relaxed) == 0 {
                eprintln!("produce failed: {e:#}");
            }
        }
    }
}

/// Records in whole batches at or after `from`, counted from batch headers
/// only, and the next offset.
fn count_records(mut data: &[u8], from: i64) -> (u64, i64) {
    let (mut n, mut next) = (0u64, from);
    while data.len() >= HEADER_LEN {
        let Ok(h) = BatchHeader::parse(data) else { break };
        if data.len() < h.size {
            break;
        }
        data = &data[h.size..];
        let end = h.next_offset() as i64;
        if !h.is_control() && end > next {
            n += (end - next.max(h.base_offset as i64)) as u64;
        }
        next = next.max(end);
    }
    (n, next)
}

async fn consume(client: &Client, args: &ConsumeBench) -> anyhow::Result<Summary> {
    let t = client.topic(&args.topic).await?;
    let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
    let starts = client.list_offsets(&args.topic, &parts, EARLIEST).await?;
    let ends = client.list_offsets(&args.topic, &parts, LATEST).await?;
    let available: i64 = parts.iter().map(|p| ends.get(p).unwrap_or(&0) - starts.get(p).unwrap_or(&0)).sum();
    let target = args.records.unwrap_or(available.max(0) as u64);
    let deadline = args.duration_secs.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let line = progress_line(progress.clone(), started);
    let concurrency = args.concurrency.max(1).min(t.partitions.len().max(1));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let mine: Vec<(i32, i32)> =
            t.partitions.iter().skip(task).step_by(concurrency).map(|p| (p.partition, p.leader)).collect();
        let Some(&(_, leader)) = mine.first() else { continue };
        let conn = client.dedicated(leader).await?;
        let mut offsets: Vec<(i32, i64)> =
            mine.iter().map(|(p, _)| (*p, starts.get(p).copied().unwrap_or(0))).collect();
        let (topic, fetch_bytes, progress) = (args.topic.clone(), args.fetch_bytes, progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let v = conn.version::<FetchRequest>(FETCH_VERSION)?;
            while progress.records.load(Ordering::Relaxed) < target && deadline.is_none_or(|d| Instant::now() < d) {
                let sent = Instant::now();
                let resp = conn.send_version(fetch_request(&topic, &offsets, fetch_bytes, 100), v).await?;
                hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                for p in resp.responses.iter().flat_map(|t| &t.partitions) {
                    check(p.error_code, || format!("fetching {topic}/{}", p.partition_index))?;
                    let Some(slot) = offsets.iter_mut().find(|o| o.0 == p.partition_index) else { continue };
                    if let Some(data) = &p.records {
                        let (n, next) = count_records(data, slot.1);
                        slot.1 = next;
                        progress.records.fetch_add(n, Ordering::Relaxed);
                        progress.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(hist)
        }));
    }
    let mut latency = histogram();
    for t in tasks {
        latency.add(t.await.context("consumer task")??).map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
    }
    let elapsed = started.elapsed();
    progress.done.store(true, Ordering::Relaxed);
    if let Some(l) = line {
        let _ = l.await;
    }
    Ok(Summary {
        mode: "consume",
        records: progress.records.load(Ordering::Relaxed),
        bytes: progress.bytes.load(Ordering::Relaxed),
        errors: 0,
        elapsed,
        latency,
        latency_name: "fetch",
    })
}

/// Producers stamp each value with the send time; one consumer per
/// partition leader reads from the end and measures the delay.
async fn e2e(client: &Client, args: &ProduceBench, partitions: &[(i32, i32)]) -> anyhow::Result<Summary> {
    let parts: Vec<i32> = partitions.iter().map(|p| p.0).collect();
    let ends = client.list_offsets(&args.topic, &parts, LATEST).await?;
    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
    for &(p, leader) in partitions {
        by_leader.entry(leader).or_default().push((p, ends.get(&p).copied().unwrap_or(0)));
    }
    let mut consumers = Vec::new();
    for (leader, mut offsets) in by_leader {
        let conn = client.dedicated(leader).await?;
        let (topic, stop, seen) = (args.topic.clone(), stop.clone(), seen.clone());
        consumers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let v = conn.version::<FetchRequest>(FETCH_VERSION)?;
            while !stop.load(Ordering::Relaxed) {
                let resp = conn.send_version(fetch_request(&topic, &offsets, 8 << 20, 100), v).await?;
                for p in resp.responses.iter().flat_map(|t| &t.partitions) {
                    check(p.error_code, || format!("fetching {topic}/{}", p.partition_index))?;
                    let Some(slot) = offsets.iter_mut().find(|o| o.0 == p.partition_index) else { continue };
                    let Some(data) = &p.records else { continue };
                    let (records, next) = decode_batches(p.partition_index, data, slot.1)?;
                    slot.1 = next;
                    let now = clock.elapsed().as_micros() as u64;
                    for r in &records {
                        let sent = r
                            .value
                            .as_deref()
                            .and_then(|v| v.get(..8))
                            .map_or(now, |b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
                        hist.saturating_record(now.saturating_sub(sent).max(1));
                    }
                    seen.fetch_add(records.len() as u64, Ordering::Relaxed);
                }
            }
            anyhow::Ok(hist)
        }));
    }
    let produced = produce(client, args, partitions, Some(clock)).await;
    // Wait until the consumers saw everything acknowledged (or 30 s).
    let want = produced.as_ref().map_or(0, |s| s.records);
    let until = Instant::now() + Duration::from_secs(30);
    while seen.load(Ordering::Relaxed) < want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let produced = produced?;
    let mut latency = histogram();
    for c in consumers {
        latency.add(c.await.context("consumer task")??).map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
    }
    Ok(Summary {
        mode: "e2e",
        records: seen.load(Ordering::Relaxed),
        bytes: produced.bytes,
        errors: produced.errors + produced.records.saturating_sub(seen.load(Ordering::Relaxed)),
        elapsed: produced.elapsed,
        latency,
        latency_name: "end-to-end",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use ferry_client::{Record, encode_batch};

    #[test]
    fn record_counting_skips_what_was_read() {
        let records: Vec<Record> =
            (0..4).map(|i| Record { value: Some(vec![i]), timestamp: 1, ..Record::default() }).collect();
        let mut batch = encode_batch(&records, ferry_records::compression::Compression::None).unwrap();
        batch[..8].copy_from_slice(&100u64.to_be_bytes());
        assert_eq!(count_records(&batch, 100), (4, 104));
        assert_eq!(count_records(&batch, 102), (2, 104));
        assert_eq!(count_records(&batch[..batch.len() - 1], 100), (0, 100));
    }

    #[test]
    fn payload_is_letters_and_stamps_fit() {
        let mut p = payload(16, 3);
        assert!(p.iter().all(u8::is_ascii_lowercase));
        stamp(&mut p, Instant::now());
        assert!(p[8..].iter().all(u8::is_ascii_lowercase));
    }
}
