//! Any bytes through each decompressor with a small output limit: the
//! first byte picks the codec. An error is fine; a panic, a hang or output
//! past the limit (a decompression bomb) is a bug.

#![no_main]

use ferry_records::compression::{Compression, decompress};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&codec, rest)) = data.split_first() else { return };
    let Ok(codec) = Compression::from_attributes(i16::from(codec % 5)) else { return };
    if let Ok(out) = decompress(codec, rest, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
});
