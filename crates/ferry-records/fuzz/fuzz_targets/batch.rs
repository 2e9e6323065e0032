//! Any bytes as concatenated record batches, through everything that reads
//! a stored or produced batch: header split and CRC check, the records
//! payload (decompressed under a limit), record parsing, control markers
//! and compaction's rebuild. An error is fine; a panic, a hang or an
//! allocation past the limit is a bug.
//!
//! The CRC would stop almost every mutated input at `validate`, so each
//! batch is also tried with its CRC recomputed, to reach the records.

#![no_main]

use ferry_records::batch::{self, BatchHeader, HEADER_LEN};
use ferry_records::records::{control_marker, parse_records, rebuild_batch, records_payload};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fn records(batch: &[u8]) {
    let Ok(header) = BatchHeader::parse(batch) else { return };
    let _ = control_marker(batch);
    let Ok(payload) = records_payload(batch, LIMIT) else { return };
    let Ok(views) = parse_records(&payload, header.records_count as usize) else { return };
    let raw: Vec<&[u8]> = views.iter().step_by(2).map(|r| r.raw).collect();
    if let Ok(rebuilt) = rebuild_batch(batch, &raw) {
        // What compaction writes must read back as exactly the kept records.
        let h = batch::validate(&rebuilt).expect("a rebuilt batch is valid");
        let payload = records_payload(&rebuilt, LIMIT).expect("a rebuilt batch decompresses");
        let again = parse_records(&payload, h.records_count as usize).expect("a rebuilt batch parses");
        assert_eq!(again.len(), raw.len());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(batches) = batch::split(data) {
        for (_, b) in batches {
            records(b);
        }
    }
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        let crc = batch::crc32c(&fixed[21..]);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        if batch::validate(&fixed).is_ok() {
            records(&fixed);
        }
    }
});
