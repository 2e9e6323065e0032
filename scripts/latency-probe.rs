//! The floor under a broker's end-to-end latency on this machine, in Rust
//! so that it is not the interpreter that is measured (scripts/latency-probe.py
//! is the same in Python). Build and run with scripts/latency-probe.sh.
//!
//! Three threads on 127.0.0.1: a producer sends 1 KiB messages at a fixed
//! rate, each stamped with the time it was due; a "broker" thread appends
//! what has arrived to a file, fdatasyncs it (with `--fsync`; messages that
//! arrive meanwhile share the next one), then forwards it to a consumer
//! socket and acknowledges it to the producer; the consumer takes its
//! receive time minus the due time. One message thus costs what a broker
//! that fsyncs before delivery cannot avoid: two loopback hops, one write,
//! one fdatasync, and three blocking threads' wake-ups. Nothing else.
//!
//! With `--zeroed` the file is written with zeros (and fsynced) first and
//! the messages overwrite them in place, as Ferry's logs do at low rates
//! (ferry-log zero_ahead.rs): fdatasync then has no new file length to
//! write, only the data.
//!
//! `latency-probe [--rate 1000] [--seconds 10] [--fsync] [--zeroed] [--dir DIR]`

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const SIZE: usize = 1024;

fn main() {
    let mut rate = 1000u64;
    let mut seconds = 10.0f64;
    let mut fsync = false;
    let mut zeroed = false;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).expect("--rate N"),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--fsync" => fsync = true,
            "--zeroed" => zeroed = true,
            "--dir" => dir = args.next().expect("--dir DIR").into(),
            other => panic!("unknown argument {other}"),
        }
    }
    let warmup = rate; // one second
    let count = warmup + (rate as f64 * seconds) as u64;
    let epoch = Instant::now();
    let lp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let lc = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (pa, ca) = (lp.local_addr().expect("addr"), lc.local_addr().expect("addr"));
    let path = dir.join(format!("latency-probe-{}", std::process::id()));
    let log_path = path.clone();
    let broker = std::thread::spawn(move || {
        let (mut prod, _) = lp.accept().expect("accept");
        let (mut cons, _) = lc.accept().expect("accept");
        prod.set_nodelay(true).expect("nodelay");
        cons.set_nodelay(true).expect("nodelay");
        let log = OpenOptions::new().create(true).truncate(true).write(true).open(&log_path).expect("log file");
        if zeroed {
            let zeros = vec![0u8; 1 << 20];
            for i in 0..(count * SIZE as u64).div_ceil(1 << 20) {
                log.write_all_at(&zeros, i << 20).expect("zeros");
            }
            log.sync_all().expect("fsync zeros");
        }
        let mut pos = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut have = 0;
        loop {
            let n = prod.read(&mut buf[have..]).expect("read");
            if n == 0 {
                return;
            }
            have += n;
            let whole = have - have % SIZE;
            if whole == 0 {
                continue;
            }
            log.write_all_at(&buf[..whole], pos).expect("write");
            pos += whole as u64;
            if fsync {
                log.sync_data().expect("fdatasync");
            }
            cons.write_all(&buf[..whole]).expect("forward");
            let acks: Vec<u8> = buf[..whole].chunks(SIZE).flat_map(|m| m[..8].to_vec()).collect();
            prod.write_all(&acks).expect("ack");
            buf.copy_within(whole..have, 0);
            have -= whole;
        }
    });
    let consumer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(ca).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut lat = Vec::with_capacity(count as usize);
        let mut msg = [0u8; SIZE];
        for i in 0..count {
            s.read_exact(&mut msg).expect("read");
            let now = epoch.elapsed().as_nanos() as u64;
            let due = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
            if i >= warmup {
                lat.push(now.saturating_sub(due));
            }
        }
        lat
    });
    let mut p = TcpStream::connect(pa).expect("connect");
    p.set_nodelay(true).expect("nodelay");
    let mut acks = p.try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let mut b = [0u8; 65536];
        while acks.read(&mut b).is_ok_and(|n| n > 0) {}
    });
    let mut msg = [0x5au8; SIZE];
    let gap = 1e9 / rate as f64;
    let start = epoch.elapsed().as_nanos() as f64;
    for i in 0..count {
        let due = (start + i as f64 * gap) as u64;
        let now = epoch.elapsed().as_nanos() as u64;
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        msg[..8].copy_from_slice(&due.to_le_bytes());
        p.write_all(&msg).expect("send");
    }
    let mut lat = consumer.join().expect("consumer");
    p.shutdown(std::net::Shutdown::Both).expect("shutdown");
    broker.join().expect("broker");
    let _ = drain.join();
    let _ = std::fs::remove_file(&path);
    lat.sort_unstable();
    let pct = |q: f64| lat[((q * lat.len() as f64) as usize).min(lat.len() - 1)] as f64 / 1e6;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "probe {}{} {rate}/s: n {} p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms; load {}",
        if fsync { "fsync" } else { "no-fsync" },
        if zeroed { " zeroed" } else { "" },
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        lat[lat.len() - 1] as f64 / 1e6,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
