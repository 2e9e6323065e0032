//! `ferry-chaos-check HISTORY.jsonl [--allow-duplicates | --redelivered-only] [--max-gap-ms N]`:
//! checks a kept history again; exits 1 when it finds an anomaly.

use std::process::ExitCode;
use std::time::Duration;

use ferry_chaos::checker::{Options, check};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut options = Options::default();
    let mut path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--allow-duplicates" => options.duplicates_forbidden = false,
            // At-least-once queues that flag redeliveries (AMQP).
            "--redelivered-only" => {
                options.duplicates_forbidden = false;
                options.unflagged_redelivery_forbidden = true;
            }
            "--max-gap-ms" => match args.next().and_then(|n| n.parse().ok()) {
                Some(ms) => options.max_gap = Some(Duration::from_millis(ms)),
                None => return usage("--max-gap-ms needs milliseconds"),
            },
            _ if path.is_none() => path = Some(a),
            _ => return usage(&format!("unexpected argument {a:?}")),
        }
    }
    let Some(path) = path else { return usage("no history file") };
    let ops = match ferry_chaos::history::read(std::path::Path::new(&path)) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let report = check(&ops, &options);
    print!("{report}");
    if report.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "{why}\nusage: ferry-chaos-check HISTORY.jsonl [--allow-duplicates | --redelivered-only] [--max-gap-ms N]"
    );
    ExitCode::from(2)
}
