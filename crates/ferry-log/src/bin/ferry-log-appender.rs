//! Appends numbered batches to a log with `flush = always` from several
//! threads and prints `ack <seq> <base_offset>` once each is durable. The
//! crash test kills it with SIGKILL and checks every acknowledged batch.
//!
//! Usage: ferry-log-appender DIR THREADS

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_log::{EngineConfig, FlushPolicy, LogConfig, LogManager};
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch};

/// The batch for sequence number `seq`: deterministic, so a checker can
/// rebuild it byte for byte.
pub fn batch_for(seq: u64) -> Vec<u8> {
    let value = format!("{seq}:").repeat(1 + (seq % 97) as usize);
    let records: Vec<_> = (0..1 + seq % 5)
        .map(|i| NewRecord {
            key: Some(b"k"),
            value: Some(value.as_bytes()),
            headers: vec![],
            timestamp: (seq * 10 + i) as i64,
        })
        .collect();
    build_batch(&records, Compression::None, -1, -1, -1).expect("valid records")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(threads)) = (args.get(1), args.get(2).and_then(|t| t.parse::<u64>().ok())) else {
        eprintln!("usage: ferry-log-appender DIR THREADS");
        std::process::exit(2);
    };
    let manager = LogManager::new(EngineConfig::default());
    let config = LogConfig { flush: FlushPolicy::Always, segment_bytes: 64 * 1024, ..LogConfig::default() };
    let log = manager.open(std::path::Path::new(dir), config).expect("open log");
    // Continue numbering after what earlier (killed) runs wrote.
    let next = Arc::new(AtomicU64::new(std::env::var("SEQ_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0)));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, next, out) = (log.clone(), next.clone(), out.clone());
            std::thread::spawn(move || {
                loop {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    let info = log.append(&batch_for(seq)).expect("append");
                    log.flush_to(info.last_offset + 1).expect("flush");
                    let mut o = out.lock().expect("stdout");
                    writeln!(o, "ack {seq} {}", info.base_offset).expect("stdout");
                    o.flush().expect("stdout");
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
