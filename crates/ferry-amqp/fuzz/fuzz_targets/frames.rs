//! Any bytes as an AMQP stream after the protocol header: frames read with
//! a small frame_max, method payloads and content-header properties
//! decoded, SASL responses parsed. A panic, a hang or an allocation beyond
//! frame_max is a bug.
//!
//! `cargo +nightly fuzz run frames` (from crates/ferry-amqp/fuzz).

#![no_main]

use amq_protocol::protocol::basic::parse_properties;
use amq_protocol::protocol::parse_class;
use ferry_amqp::frame::{FRAME_HEADER, FRAME_METHOD, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let mut reader = FrameReader::new(data);
        while let Ok(f) = reader.next(8192).await {
            assert!(f.payload.len() < 8192);
            match f.kind {
                FRAME_METHOD => {
                    let _ = parse_class(&f.payload[..]);
                }
                FRAME_HEADER if f.payload.len() >= 12 => {
                    let _ = parse_properties(&f.payload[12..]);
                }
                _ => {}
            }
        }
    });
    let _ = ferry_amqp::auth::credentials("AMQPLAIN", data);
    let _ = ferry_amqp::auth::credentials("PLAIN", data);
});
