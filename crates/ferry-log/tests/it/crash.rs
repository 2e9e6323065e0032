//! kill -9 at random moments: every acknowledged batch survives byte for
//! byte and no partial batch is ever visible.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_log::{FlushPolicy, LogConfig};

use crate::{manager, open};

#[path = "../../src/bin/ferry-log-appender.rs"]
#[allow(dead_code)]
mod appender;

#[test]
fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos());
    eprintln!("crash test seed {seed}");
    let mut rng = seed | 1;
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new(); // seq -> base offset
    let rounds = 15;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-log-appender"))
            .arg(dir.path())
            .arg("4")
            .env("SEQ_START", (round * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
        // xorshift: kill points from a few ms (mid-recovery or first
        // appends) to a few hundred ms (many group commits).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(5 + rng % 300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let mut parts = line.split_whitespace();
            // A line cut by the kill is simply not an acknowledgement.
            if let (Some("ack"), Some(seq), Some(base)) = (parts.next(), parts.next(), parts.next())
                && let (Ok(seq), Ok(base)) = (seq.parse(), base.parse())
            {
                acked.insert(seq, base);
            }
        }
        verify(dir.path(), &acked);
    }
    eprintln!("{} batches acknowledged over {rounds} kills", acked.len());
    assert!(acked.len() > 100, "only {} batches acknowledged in {rounds} rounds", acked.len());
}

/// Reopens the log (recovering it) and checks it against the acknowledgements.
fn verify(dir: &std::path::Path, acked: &BTreeMap<u64, u64>) {
    let m = manager();
    let log = open(&m, dir, LogConfig { flush: FlushPolicy::Always, segment_bytes: 64 * 1024, ..LogConfig::default() });
    // Every stored batch is whole and valid, offsets contiguous.
    let mut offset = 0;
    let mut stored = BTreeMap::new();
    while offset < log.high_watermark() {
        let bytes = log.read_bytes(offset, 1 << 20).unwrap();
        for (h, b) in ferry_records::batch::split(&bytes).expect("only whole, valid batches are visible") {
            assert_eq!(h.base_offset, offset, "offsets are contiguous");
            stored.insert(h.base_offset, b.to_vec());
            offset = h.next_offset();
        }
    }
    for (&seq, &base) in acked {
        let got = stored.get(&base).unwrap_or_else(|| panic!("acknowledged batch {seq} at {base} lost"));
        let sent = appender::batch_for(seq);
        assert_eq!(&got[8..], &sent[8..], "batch {seq} at {base} changed");
    }
}
