//! Any bytes as what a client sends: split into frames as a connection
//! does, each decoded as MQTT 3.1.1 and as 5.0, and whatever decodes is
//! encoded again (both directions). A panic is a bug.

#![no_main]

use bytes::BytesMut;
use ferry_mqtt::codec::{Frame, next_frame};
use ferry_mqtt::packet::{self, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Frame::Packet(frame) = next_frame(&mut buf, 64 * 1024) {
        let _ = packet::connect_version(&frame);
        for version in [Version::V3, Version::V5] {
            if let Ok(p) = packet::decode(&frame, version) {
                let mut out = BytesMut::new();
                let _ = packet::encode(&p, version, &mut out);
                let _ = packet::encode_client(&p, version);
            }
        }
    }
});
