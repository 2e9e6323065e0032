//! Storage benchmark: ferry-log beside plain file I/O of the same bytes with
//! the same fsync cadence, measured in the same run. Results and how to read
//! them: docs/benchmarks.md.
//!
//! ```text
//! cargo bench -p ferry-log --bench storage
//! cargo bench -p ferry-log --bench storage -- [--json] [--rounds N] [--mib N] [--interval-ms N]
//!     [--dir PATH] [--only ferry|raw] [FILTER...]
//! ```
//!
//! Machines are noisy, so every figure is printed beside a reference measured
//! moments before or after it, and the verdict is on the ratio. Each case runs
//! one discarded round, then `--rounds` rounds (default 5); within a round the
//! ferry and raw runs are adjacent, and their order alternates from round to
//! round. The table shows the median throughput of each side and the median
//! of the per-round ratios, with their min..max spread. FILTERs run only the
//! cases whose name contains one of them; `--only ferry` or `--only raw` runs
//! one side (for profiling it with `perf`; no ratios then).
//!
//! Cases (1 KiB records, uncompressed; a "16 KiB" batch holds 16 records, a
//! "1 MiB" batch 1024; `--mib` of data per case, a quarter of it for the
//! fsync-per-16-KiB cases):
//! - append, flush `os`: ferry `append` vs `write_all`; neither fsyncs.
//! - append, flush `interval` (`ms` = `--interval-ms`, `messages` unlimited):
//!   ferry's flusher fsyncs `ms` after the first unflushed append; the
//!   reference runs a thread that fdatasyncs every `ms` while the writer keeps
//!   writing. Both end with one last fsync of everything, inside the timing.
//! - append, flush `always`, 1 writer: `append` + `flush_to` vs `write_all` +
//!   fdatasync, per batch.
//! - group commit: 8 threads doing `append` + `flush_to` per 16 KiB batch on
//!   one log, vs 8 threads doing `write_all` + fdatasync on one `O_APPEND`
//!   file (each writer its own fsync). The ratio is the speedup.
//! - sequential read of a log written beforehand: `Log::read(offset, 1 MiB)`
//!   then `pread` of the slice into a reused buffer, vs `pread` of the same
//!   segment file in 1 MiB chunks. Both read from the page cache (dropping it
//!   needs root), which is fair to both; a checksum checks they read the same
//!   bytes.
//!
//! Untimed between runs: the file is fsynced (so writeback of one run does not
//! land in the next) and deleted. After the table: the throughput of
//! `batch::validate` (the CRC-32C check `append` does and the reference does
//! not), with the `os` ratio it alone would allow, and group commit against
//! the single-writer figures.

use std::cell::Cell;
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ferry_log::{EngineConfig, FlushPolicy, Log, LogConfig, LogManager};
use ferry_records::batch::BatchHeader;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const MIB: u64 = 1 << 20;
const RECORD_BYTES: usize = 1024;
/// `max_bytes` of each read, and the chunk size of the raw reads.
const READ_CHUNK: usize = 1 << 20;
const WRITERS: usize = 8;
const THROUGHPUT_GOAL: f64 = 0.90;
const GROUP_COMMIT_GOAL: f64 = 4.0;

struct Opts {
    json: bool,
    rounds: usize,
    /// Bytes per case for page-cache-bound cases; fsync-per-append cases of
    /// 16 KiB batches use a quarter of it.
    mib: u64,
    interval_ms: u64,
    dir: PathBuf,
    /// Positional arguments: run only cases whose name contains one of them.
    filters: Vec<String>,
    /// `--only ferry|raw`: run one side only (to profile it); no ratios.
    only: Option<Side>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Ferry,
    Raw,
}

impl Opts {
    fn parse() -> Res<Opts> {
        let mut opts = Opts {
            json: false,
            rounds: 5,
            mib: 256,
            interval_ms: 10,
            dir: std::env::var_os("FERRY_BENCH_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from),
            filters: Vec::new(),
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--json" => opts.json = true,
                "--rounds" => opts.rounds = value()?.parse()?,
                "--mib" => opts.mib = value()?.parse()?,
                "--interval-ms" => opts.interval_ms = value()?.parse()?,
                "--dir" => opts.dir = PathBuf::from(value()?),
                "--only" => {
                    opts.only = match value()?.as_str() {
                        "ferry" => Some(Side::Ferry),
                        "raw" => Some(Side::Raw),
                        other => return Err(format!("--only takes ferry or raw, not {other:?}").into()),
                    }
                }
                // `cargo bench` passes `--bench`.
                "--bench" => {}
                other if other.starts_with("--") => eprintln!("storage bench: ignoring option {other:?}"),
                filter => opts.filters.push(filter.to_string()),
            }
        }
        if opts.rounds == 0 || opts.mib < 4 {
            return Err("--rounds must be >= 1 and --mib >= 4".into());
        }
        Ok(opts)
    }

    fn selected(&self, case: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| case.contains(f.as_str()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Os,
    Interval,
    Always,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Os => "os",
            Policy::Interval => "interval",
            Policy::Always => "always",
        }
    }
}

/// A batch of `records` records of 1 KiB, built once.
fn make_batch(records: usize) -> Vec<u8> {
    let value: Vec<u8> = (0..RECORD_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let recs: Vec<_> =
        (0..records).map(|_| NewRecord { key: None, value: Some(&value), headers: vec![], timestamp: now }).collect();
    build_batch(&recs, Compression::None, -1, -1, -1).expect("valid records")
}

fn manager() -> LogManager {
    // The cleaner would only add noise; checkpoints keep their default
    // cadence because they are part of what a flush costs.
    LogManager::new(EngineConfig { cleaner_interval: Duration::from_secs(3600), ..EngineConfig::default() })
}

fn log_config(policy: Policy, interval_ms: u64) -> LogConfig {
    let flush = match policy {
        Policy::Os => FlushPolicy::Os,
        Policy::Interval => FlushPolicy::Interval { ms: interval_ms, messages: u64::MAX },
        Policy::Always => FlushPolicy::Always,
    };
    // The default 1 GiB segment holds a whole case: no roll inside a run.
    LogConfig { flush, max_message_bytes: 4 << 20, retention_ms: None, ..LogConfig::default() }
}

/// Tears a ferry run down (untimed): close flushes and checkpoints.
fn finish_ferry(manager: LogManager, log: Arc<Log>, dir: &Path) -> Res<()> {
    log.close()?;
    drop(log);
    manager.shutdown();
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

fn finish_raw(file: &File, path: &Path) -> Res<()> {
    file.sync_data()?;
    std::fs::remove_file(path)?;
    Ok(())
}

fn ferry_append(base: &Path, batch: &[u8], count: usize, policy: Policy, interval_ms: u64) -> Res<Duration> {
    let dir = base.join("ferry-append");
    let manager = manager();
    let log = manager.open(&dir, log_config(policy, interval_ms))?;
    let start = Instant::now();
    let mut next = 0;
    for _ in 0..count {
        let info = log.append(batch)?;
        next = info.last_offset + 1;
        if policy == Policy::Always {
            log.flush_to(next)?;
        }
    }
    if policy == Policy::Interval {
        log.flush_to(next)?;
    }
    let elapsed = start.elapsed();
    black_box(next);
    finish_ferry(manager, log, &dir)?;
    Ok(elapsed)
}

fn raw_append(base: &Path, batch: &[u8], count: usize, policy: Policy, interval_ms: u64) -> Res<Duration> {
    let path = base.join("raw-append");
    let file = Arc::new(OpenOptions::new().create(true).truncate(true).write(true).open(&path)?);
    let start = Instant::now();
    match policy {
        Policy::Os => {
            for _ in 0..count {
                (&*file).write_all(batch)?;
            }
        }
        Policy::Always => {
            for _ in 0..count {
                (&*file).write_all(batch)?;
                file.sync_data()?;
            }
        }
        Policy::Interval => {
            let (stop, stopped) = mpsc::channel::<()>();
            let syncer = {
                let file = file.clone();
                std::thread::spawn(move || -> std::io::Result<()> {
                    loop {
                        match stopped.recv_timeout(Duration::from_millis(interval_ms)) {
                            Err(RecvTimeoutError::Timeout) => file.sync_data()?,
                            _ => return Ok(()),
                        }
                    }
                })
            };
            for _ in 0..count {
                (&*file).write_all(batch)?;
            }
            drop(stop);
            syncer.join().map_err(|_| "syncer panicked")??;
            file.sync_data()?;
        }
    }
    let elapsed = start.elapsed();
    finish_raw(&file, &path)?;
    Ok(elapsed)
}

/// Runs `work` on `writers` threads released together; the time until all finish.
fn timed_writers(writers: usize, work: impl Fn() -> Res<()> + Sync) -> Res<Duration> {
    let barrier = Barrier::new(writers + 1);
    std::thread::scope(|s| -> Res<Duration> {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (work, barrier) = (&work, &barrier);
                s.spawn(move || -> Res<()> {
                    barrier.wait();
                    work()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().map_err(|_| "writer panicked")??;
        }
        Ok(start.elapsed())
    })
}

/// `writers` threads on one log, each `append` + `flush_to` per batch.
fn ferry_group(base: &Path, batch: &[u8], per_writer: usize, writers: usize) -> Res<Duration> {
    let dir = base.join("ferry-group");
    let manager = manager();
    let log = manager.open(&dir, log_config(Policy::Always, 0))?;
    let elapsed = timed_writers(writers, || {
        for _ in 0..per_writer {
            let info = log.append(batch)?;
            log.flush_to(info.last_offset + 1)?;
        }
        Ok(())
    })?;
    finish_ferry(manager, log, &dir)?;
    Ok(elapsed)
}

/// `writers` threads on one `O_APPEND` file, each `write_all` + fdatasync.
fn raw_group(base: &Path, batch: &[u8], per_writer: usize, writers: usize) -> Res<Duration> {
    let path = base.join("raw-group");
    let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
    let elapsed = timed_writers(writers, || {
        for _ in 0..per_writer {
            (&file).write_all(batch)?;
            file.sync_data()?;
        }
        Ok(())
    })?;
    finish_raw(&file, &path)?;
    Ok(elapsed)
}

/// Folds one byte per 4 KiB of the file (by absolute position) so both
/// readers can be checked to have read the same bytes.
fn sample(chunk: &[u8], position: u64) -> u64 {
    let first = ((4096 - position % 4096) % 4096) as usize;
    chunk
        .iter()
        .enumerate()
        .skip(first)
        .step_by(4096)
        .fold(0u64, |acc, (i, &b)| acc.wrapping_add(u64::from(b).wrapping_mul(position + i as u64 + 1)))
}

struct ReadRun {
    elapsed: Duration,
    bytes: u64,
    sum: u64,
}

fn ferry_read(log: &Log, buf: &mut Vec<u8>) -> Res<ReadRun> {
    let (mut bytes, mut sum) = (0u64, 0u64);
    let mut offset = log.log_start_offset();
    let start = Instant::now();
    while let Some(slice) = log.read(offset, READ_CHUNK)? {
        let len = slice.len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let chunk = &mut buf[..len];
        slice.file.read_exact_at(chunk, slice.position)?;
        sum = sum.wrapping_add(sample(chunk, slice.position));
        // The next offset is the one after the slice's last batch.
        let mut p = 0;
        while p < len {
            let h = BatchHeader::parse(&chunk[p..])?;
            p += h.size;
            offset = h.next_offset();
        }
        bytes += len as u64;
        black_box(&chunk);
    }
    Ok(ReadRun { elapsed: start.elapsed(), bytes, sum })
}

fn raw_read(path: &Path, buf: &mut [u8]) -> Res<ReadRun> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let (mut pos, mut sum) = (0u64, 0u64);
    let start = Instant::now();
    while pos < len {
        let n = READ_CHUNK.min((len - pos) as usize);
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, pos)?;
        sum = sum.wrapping_add(sample(chunk, pos));
        pos += n as u64;
        black_box(&chunk);
    }
    Ok(ReadRun { elapsed: start.elapsed(), bytes: pos, sum })
}

/// One case: the same work done through ferry and raw, `rounds` times.
struct Case {
    name: String,
    bytes: u64,
    ferry: Vec<Duration>,
    raw: Vec<Duration>,
    goal: Option<f64>,
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// Median; NaN when empty (a side that did not run).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `v` with `precision` decimals, or `-` for NaN.
fn num(v: f64, precision: usize) -> String {
    if v.is_nan() { "-".to_string() } else { format!("{v:.precision$}") }
}

/// `v` for JSON: `null` for NaN.
fn json_num(v: f64, precision: usize) -> String {
    if v.is_nan() { "null".to_string() } else { format!("{v:.precision$}") }
}

impl Case {
    fn ratios(&self) -> Vec<f64> {
        self.ferry.iter().zip(&self.raw).map(|(f, r)| r.as_secs_f64() / f.as_secs_f64()).collect()
    }
    fn ferry_mib_s(&self) -> f64 {
        median(self.ferry.iter().map(|d| mib_s(self.bytes, *d)).collect())
    }
    fn raw_mib_s(&self) -> f64 {
        median(self.raw.iter().map(|d| mib_s(self.bytes, *d)).collect())
    }
    fn ratio(&self) -> f64 {
        median(self.ratios())
    }
    /// Lowest and highest per-round ratio (NaN when no ratios).
    fn spread(&self) -> (f64, f64) {
        let r = self.ratios();
        if r.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        (r.iter().copied().fold(f64::INFINITY, f64::min), r.iter().copied().fold(0.0, f64::max))
    }
    fn met(&self) -> Option<bool> {
        let ratio = self.ratio();
        self.goal.filter(|_| !ratio.is_nan()).map(|g| ratio >= g)
    }
}

/// Runs `ferry` and `raw` alternately, `rounds` times each, unless the case
/// is filtered out.
fn measure(
    opts: &Opts,
    name: String,
    bytes: u64,
    goal: Option<f64>,
    mut ferry: impl FnMut() -> Res<Duration>,
    mut raw: impl FnMut() -> Res<Duration>,
) -> Res<Option<Case>> {
    if !opts.selected(&name) {
        return Ok(None);
    }
    let mut case = Case { name, bytes, ferry: Vec::new(), raw: Vec::new(), goal };
    let (do_ferry, do_raw) = (opts.only != Some(Side::Raw), opts.only != Some(Side::Ferry));
    // A discarded round first: the first runs after a change of case are
    // often slower (allocation of fresh page-cache memory, discards of the
    // previous case's deleted files), whichever side goes first.
    if do_ferry {
        ferry()?;
    }
    if do_raw {
        raw()?;
    }
    for round in 0..opts.rounds {
        let ferry_first = round.is_multiple_of(2);
        for ferry_turn in [ferry_first, !ferry_first] {
            if ferry_turn && do_ferry {
                case.ferry.push(ferry()?);
            } else if !ferry_turn && do_raw {
                case.raw.push(raw()?);
            }
        }
    }
    let speed =
        |runs: &[Duration], i: usize| runs.get(i).map_or("-".to_string(), |d| format!("{:.0}", mib_s(bytes, *d)));
    let rounds: Vec<String> =
        (0..opts.rounds).map(|i| format!("{}/{}", speed(&case.ferry, i), speed(&case.raw, i))).collect();
    eprintln!("  {:<40} ratio {}  (ferry/raw MiB/s by round: {})", case.name, num(case.ratio(), 2), rounds.join(" "));
    Ok(Some(case))
}

/// The mount (device and type) holding `path`, from /proc/self/mounts.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_string(), |(_, s)| s)
}

fn main() -> Res<()> {
    let opts = Opts::parse()?;
    std::fs::create_dir_all(&opts.dir)?;
    let tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(&opts.dir)?;
    let base = tmp.path();
    let fs = filesystem_of(base);
    if fs.starts_with("tmpfs") {
        eprintln!("storage bench: warning: {} is on tmpfs; fsync figures mean nothing there", base.display());
    }
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let (rounds, interval_ms) = (opts.rounds, opts.interval_ms);
    let big = opts.mib * MIB;
    let small = big / 4;
    eprintln!("storage bench: data in {} [{fs}], {cpus} CPUs, {rounds} rounds per case", base.display());
    let others_before = other_cpu(Duration::from_secs(1));
    if others_before > 0.05 {
        eprintln!(
            "storage bench: warning: other processes used {:.0}% of the CPUs in the last second; \
             the figures will be noisy",
            others_before * 100.0
        );
    }
    let start = CpuSample::now();

    let batches = [("16 KiB", make_batch(16)), ("1 MiB", make_batch(1024))];
    let mut cases = Vec::new();

    // Warm-up, discarded: first-touch costs (allocation, file creation).
    let warm = &batches[0].1;
    let warm_count = (32 * MIB).div_ceil(warm.len() as u64) as usize;
    ferry_append(base, warm, warm_count, Policy::Os, interval_ms)?;
    raw_append(base, warm, warm_count, Policy::Os, interval_ms)?;

    for (label, batch) in &batches {
        for policy in [Policy::Os, Policy::Interval, Policy::Always] {
            // fsync per 16 KiB append is latency-bound: a quarter of the data
            // gives as many operations as the other cases and keeps it short.
            let target = if policy == Policy::Always && batch.len() < MIB as usize { small } else { big };
            let count = target.div_ceil(batch.len() as u64) as usize;
            let name = match policy {
                Policy::Always => format!("append {label} always, 1 writer"),
                _ => format!("append {label} {}", policy.name()),
            };
            let goal = (policy != Policy::Always).then_some(THROUGHPUT_GOAL);
            cases.extend(measure(
                &opts,
                name,
                (count * batch.len()) as u64,
                goal,
                || ferry_append(base, batch, count, policy, interval_ms),
                || raw_append(base, batch, count, policy, interval_ms),
            )?);
        }
    }

    let batch = &batches[0].1;
    let per_writer = (small / WRITERS as u64).div_ceil(batch.len() as u64) as usize;
    cases.extend(measure(
        &opts,
        format!("group commit 16 KiB always, {WRITERS} writers"),
        (per_writer * WRITERS * batch.len()) as u64,
        Some(GROUP_COMMIT_GOAL),
        || ferry_group(base, batch, per_writer, WRITERS),
        || raw_group(base, batch, per_writer, WRITERS),
    )?);

    for (label, batch) in &batches {
        let name = format!("sequential read, {label} batches");
        if !opts.selected(&name) {
            continue;
        }
        // Untimed: write the log, fsync it, and read back its segment file.
        let dir = base.join("ferry-read");
        let manager = manager();
        let log = manager.open(&dir, log_config(Policy::Os, interval_ms))?;
        let count = big.div_ceil(batch.len() as u64) as usize;
        for _ in 0..count {
            log.append(batch)?;
        }
        log.close()?;
        let segment = dir.join(format!("{:020}.log", log.log_start_offset()));
        let expected = std::fs::metadata(&segment)?.len();
        let sums = Cell::new(None);
        let check = |run: ReadRun| -> Res<Duration> {
            let sum = sums.get().unwrap_or(run.sum);
            sums.set(Some(sum));
            if run.bytes != expected || run.sum != sum {
                return Err(format!("readers disagree: {} of {expected} bytes, sum {}", run.bytes, run.sum).into());
            }
            Ok(run.elapsed)
        };
        let (mut ferry_buf, mut raw_buf) = (vec![0u8; 2 * READ_CHUNK], vec![0u8; 2 * READ_CHUNK]);
        cases.extend(measure(
            &opts,
            name,
            expected,
            None,
            || check(ferry_read(&log, &mut ferry_buf)?),
            || check(raw_read(&segment, &mut raw_buf)?),
        )?);
        finish_ferry(manager, log, &dir)?;
    }

    // What `Log::append` spends checking each batch (CRC-32C over all of
    // it), which the raw reference does not do.
    let validate = batches.iter().map(|(label, b)| (label.to_string(), validate_mib_s(b))).collect();
    let run = Run { cpus, fs, rounds, interval_ms, others: (others_before, start.others_since()), validate };
    if opts.json {
        print_json(&cases, &run);
    } else {
        print_table(&cases, &run);
    }
    Ok(())
}

/// CPU time of the whole machine and of this process, in clock ticks.
struct CpuSample {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuSample {
    fn now() -> CpuSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> =
            stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        let total: u64 = cpu.iter().take(8).sum();
        // idle and iowait
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        // utime and stime of all our threads: fields 14 and 15, counted
        // after the parenthesised command name.
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s.rsplit_once(')')?.1.split_whitespace().filter_map(|f| f.parse().ok()).collect();
                Some(f.get(10)? + f.get(11)?)
            })
            .unwrap_or(0);
        CpuSample { busy: total - idle, total, own }
    }

    /// Share of all CPU time since `self` used by other processes (and the
    /// kernel's own threads), 0..1.
    fn others_since(&self) -> f64 {
        let now = CpuSample::now();
        let total = now.total.saturating_sub(self.total).max(1);
        let others = now.busy.saturating_sub(self.busy).saturating_sub(now.own.saturating_sub(self.own));
        others as f64 / total as f64
    }
}

/// Share of the CPUs other processes use over `window`.
fn other_cpu(window: Duration) -> f64 {
    let before = CpuSample::now();
    std::thread::sleep(window);
    before.others_since()
}

/// What the figures were measured on.
struct Run {
    cpus: usize,
    fs: String,
    rounds: usize,
    interval_ms: u64,
    /// Share of the CPUs used by other processes in the second before the
    /// run and during it.
    others: (f64, f64),
    /// Throughput of `batch::validate` per batch size label.
    validate: Vec<(String, f64)>,
}

fn goal_text(case: &Case) -> String {
    match (case.goal, case.met()) {
        (Some(g), Some(met)) => format!(">= {g:.2} {}", if met { "met" } else { "MISSED" }),
        _ => "-".to_string(),
    }
}

/// Throughput of `ferry_records::batch::validate` (header checks and CRC-32C of
/// the whole batch), best of 3 passes over 64 MiB.
fn validate_mib_s(batch: &[u8]) -> f64 {
    let count = (64 * MIB).div_ceil(batch.len() as u64) as usize;
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..count {
                black_box(ferry_records::batch::validate(black_box(batch)).expect("valid batch"));
            }
            mib_s((count * batch.len()) as u64, start.elapsed())
        })
        .fold(0.0, f64::max)
}

/// For each batch size: validation throughput, and the ferry/raw ratio an
/// `os` append would reach if validation were its only extra cost (writing
/// at the raw speed, then validating: 1 / (1 + raw / validate)).
fn validation_ceilings<'a>(cases: &'a [Case], run: &'a Run) -> impl Iterator<Item = (&'a str, f64, Option<f64>)> {
    run.validate.iter().map(|(label, speed)| {
        let os = cases.iter().find(|c| c.name == format!("append {label} os"));
        let ceiling = os.map(|c| 1.0 / (1.0 + c.raw_mib_s() / speed)).filter(|c| !c.is_nan());
        (label.as_str(), *speed, ceiling)
    })
}

/// Group commit against the single-writer `always` figures of the same run
/// (medians of different cases, so less tight than a per-round ratio):
/// ferry 8 writers vs ferry 1 writer, ferry 8 vs raw 1, raw 8 vs raw 1.
fn group_context(cases: &[Case]) -> Option<(f64, f64, f64)> {
    let single = cases.iter().find(|c| c.name == "append 16 KiB always, 1 writer")?;
    let group = cases.iter().find(|c| c.name.starts_with("group commit"))?;
    let context = (
        group.ferry_mib_s() / single.ferry_mib_s(),
        group.ferry_mib_s() / single.raw_mib_s(),
        group.raw_mib_s() / single.raw_mib_s(),
    );
    (!(context.0.is_nan() || context.1.is_nan() || context.2.is_nan())).then_some(context)
}

/// The most group commit can give over the raw writers, whatever the
/// flusher does: each of `WRITERS` closed-loop writers is at best as fast as
/// one raw writer (its append, then an fsync begun after it), while the raw
/// writers get `raw_8` times one writer from the kernel merging their flushes.
fn group_ceiling(raw_8: f64) -> f64 {
    WRITERS as f64 / raw_8
}

fn print_table(cases: &[Case], run: &Run) {
    println!(
        "ferry-log storage benchmark: {} CPUs, {}; other processes used {:.0}% of the CPUs before, {:.0}% during",
        run.cpus,
        run.fs,
        run.others.0 * 100.0,
        run.others.1 * 100.0
    );
    println!(
        "1 KiB records; interval = {} ms; medians of {} rounds; ratio = ferry/raw per round \
         (group commit: speedup), median and min..max",
        run.interval_ms, run.rounds
    );
    println!();
    println!(
        "{:<38} {:>6} {:>12} {:>12} {:>7} {:>12}  goal",
        "case", "MiB", "ferry MiB/s", "raw MiB/s", "ratio", "spread"
    );
    for c in cases {
        let (lo, hi) = c.spread();
        let spread = if lo.is_nan() { "-".to_string() } else { format!("{lo:.2}..{hi:.2}") };
        println!(
            "{:<38} {:>6.0} {:>12} {:>12} {:>7} {:>12}  {}",
            c.name,
            c.bytes as f64 / MIB as f64,
            num(c.ferry_mib_s(), 1),
            num(c.raw_mib_s(), 1),
            num(c.ratio(), 2),
            spread,
            goal_text(c)
        );
    }
    println!();
    for (label, speed, ceiling) in validation_ceilings(cases, run) {
        let ceiling = ceiling
            .map_or(String::new(), |c| format!("; ceiling for `append {label} os` if it were the only cost: {c:.2}"));
        println!("batch validation (CRC-32C), {label} batches: {speed:.0} MiB/s{ceiling}");
    }
    if let Some((ferry_1, raw_1, raw_8)) = group_context(cases) {
        println!(
            "group commit, {WRITERS} writers: ferry = {ferry_1:.2}x ferry 1 writer, {raw_1:.2}x raw 1 writer; \
             raw {WRITERS} writers = {raw_8:.2}x raw 1 writer"
        );
        println!(
            "ceiling for the group commit speedup: {:.2} ({WRITERS} / {raw_8:.2}: a writer's next append waits for \
             an fsync that starts after its last one, so no writer outruns one raw writer doing write + fsync)",
            group_ceiling(raw_8)
        );
    }
}

fn print_json(cases: &[Case], run: &Run) {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let opt = |v: Option<String>| v.unwrap_or_else(|| "null".to_string());
    let rows: Vec<String> = cases
        .iter()
        .map(|c| {
            let (lo, hi) = c.spread();
            let fields = [
                format!("\"case\": \"{}\"", esc(&c.name)),
                format!("\"bytes\": {}", c.bytes),
                format!("\"ferry_mib_s\": {}", json_num(c.ferry_mib_s(), 1)),
                format!("\"raw_mib_s\": {}", json_num(c.raw_mib_s(), 1)),
                format!("\"ratio\": {}", json_num(c.ratio(), 3)),
                format!("\"ratio_min\": {}", json_num(lo, 3)),
                format!("\"ratio_max\": {}", json_num(hi, 3)),
                format!("\"goal\": {}", opt(c.goal.map(|g| g.to_string()))),
                format!("\"met\": {}", opt(c.met().map(|m| m.to_string()))),
            ];
            format!("    {{{}}}", fields.join(", "))
        })
        .collect();
    let context = opt(group_context(cases).map(|(ferry_1, raw_1, raw_8)| {
        format!(
            "{{\"ferry_8_vs_ferry_1\": {ferry_1:.3}, \"ferry_8_vs_raw_1\": {raw_1:.3}, \"raw_8_vs_raw_1\": {raw_8:.3}, \
             \"speedup_ceiling\": {:.3}}}",
            group_ceiling(raw_8)
        )
    }));
    let validation: Vec<String> = validation_ceilings(cases, run)
        .map(|(label, speed, ceiling)| {
            let ceiling = opt(ceiling.map(|c| format!("{c:.3}")));
            format!("{{\"batch\": \"{label}\", \"mib_s\": {speed:.1}, \"os_ratio_ceiling\": {ceiling}}}")
        })
        .collect();
    println!("{{");
    println!("  \"cpus\": {},", run.cpus);
    println!("  \"filesystem\": \"{}\",", esc(&run.fs));
    println!("  \"other_cpu_before\": {:.3},", run.others.0);
    println!("  \"other_cpu_during\": {:.3},", run.others.1);
    println!("  \"rounds\": {},", run.rounds);
    println!("  \"interval_ms\": {},", run.interval_ms);
    println!("  \"cases\": [\n{}\n  ],", rows.join(",\n"));
    println!("  \"group_commit_context\": {context},");
    println!("  \"validation\": [{}]", validation.join(", "));
    println!("}}");
}
