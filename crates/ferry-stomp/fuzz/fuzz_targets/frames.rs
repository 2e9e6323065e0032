//! Any bytes as a STOMP stream, fed to the frame decoder in two pieces
//! (the first byte picks the split) under each version's escaping and
//! small limits. A panic, a hang, a frame beyond the limits, or a
//! decoded frame that does not encode and decode back to itself is a bug.
//!
//! `cargo +nightly fuzz run frames` (from crates/ferry-stomp/fuzz).

#![no_main]

use bytes::BytesMut;
use ferry_stomp::codec::{Decoder, Item, Limits, Version, encode};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits { max_header_line: 256, max_headers: 16, max_body: 4096 };

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
        let mut d = Decoder::new(version, LIMITS);
        let cut = usize::from(split).min(rest.len());
        let mut buf = BytesMut::from(&rest[..cut]);
        let mut fed_all = false;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(Item::Frame(f))) => {
                    assert!(f.body.len() <= LIMITS.max_body);
                    assert!(f.headers.len() <= LIMITS.max_headers);
                    // 1.2 escapes everything it decodes, so a frame survives a round trip.
                    if version == Version::V1_2 && f.command != "CONNECT" && f.command != "CONNECTED" {
                        let mut g = f.clone();
                        g.headers.retain(|(k, _)| k != "content-length");
                        g.headers.push(("content-length".into(), g.body.len().to_string()));
                        let mut out = BytesMut::new();
                        encode(&g, version, &mut out);
                        let mut d2 = Decoder::new(version, Limits { max_header_line: usize::MAX, max_headers: usize::MAX, max_body: usize::MAX });
                        match d2.decode(&mut out) {
                            Ok(Some(Item::Frame(back))) => assert_eq!(back, g),
                            other => panic!("re-encoded frame did not decode: {other:?}"),
                        }
                    }
                }
                Ok(Some(Item::Heartbeat)) => {}
                Ok(None) if !fed_all => {
                    buf.extend_from_slice(&rest[cut..]);
                    fed_all = true;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
