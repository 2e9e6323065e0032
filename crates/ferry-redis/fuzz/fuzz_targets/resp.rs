//! Any bytes as a client's stream, fed to the RESP command decoder in two
//! pieces (the first byte picks the split) under small limits, and to the
//! value parser. A panic, a hang, an argument beyond the limits, or a
//! command that does not encode and decode back to itself is a bug.
//!
//! `cargo +nightly fuzz run resp` (from crates/ferry-redis/fuzz).

#![no_main]

use bytes::{Bytes, BytesMut};
use ferry_redis::resp::{Limits, Reply, decode_command, encode, parse};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits { max_bulk: 4096, max_array: 64, max_depth: 8, max_inline: 1024 };

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let _ = parse(rest, 0, &LIMITS);
    let cut = usize::from(split).min(rest.len());
    let mut buf = BytesMut::from(&rest[..cut]);
    let mut fed_all = false;
    loop {
        match decode_command(&mut buf, &LIMITS) {
            Ok(Some(args)) => {
                assert!(!args.is_empty() && args.len() <= LIMITS.max_array.max(LIMITS.max_inline));
                assert!(args.iter().all(|a| a.len() <= LIMITS.max_bulk.max(LIMITS.max_inline)));
                let mut out = BytesMut::new();
                encode(&Reply::Array(args.iter().cloned().map(Reply::Bulk).collect()), false, &mut out);
                let no_limits = Limits { max_bulk: usize::MAX >> 1, max_array: usize::MAX >> 1, max_depth: 8, max_inline: usize::MAX >> 1 };
                let back: Vec<Bytes> = decode_command(&mut out, &no_limits).ok().flatten().expect("re-encoded command decodes");
                assert_eq!(back, args);
            }
            Ok(None) if !fed_all => {
                buf.extend_from_slice(&rest[cut..]);
                fed_all = true;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
