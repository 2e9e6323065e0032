//! The Kafka RecordBatch v2 header: the only record format the log knows.
//!
//! Batches are stored exactly as producers sent them (unless a topic's
//! `compression.type` has the broker recompress them first). The log reads only the
//! fixed 61-byte header (and checks the CRC over the rest); it patches the
//! base offset, and for `LogAppendTime` topics the max timestamp, never the
//! records themselves.

use crate::error::RecordsError;

/// Size of the fixed v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;

const BASE_OFFSET: usize = 0;
pub(crate) const BATCH_LENGTH: usize = 8;
/// Not covered by the CRC, so the leader can stamp it without recomputing.
const PARTITION_LEADER_EPOCH: usize = 12;
pub(crate) const MAGIC: usize = 16;
pub(crate) const CRC: usize = 17;
/// The CRC covers everything from the attributes field to the end.
const CRC_START: usize = 21;
pub(crate) const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
pub(crate) const RECORDS_COUNT: usize = 57;

const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// The decoded fixed header of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the log on append).
    pub base_offset: u64,
    /// Whole batch size in bytes, including the 12-byte log overhead.
    pub size: usize,
    /// The leader epoch of the leader that appended the batch (-1: none).
    pub partition_leader_epoch: i32,
    /// Codec (bits 0-2), timestamp type (bit 3), transactional (bit 4), control (bit 5).
    pub attributes: i16,
    /// Last record's offset minus `base_offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record, in ms; records store deltas from it.
    pub base_timestamp: i64,
    /// Largest record timestamp in ms (the broker's clock for LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id; -1 for plain producers.
    pub producer_id: i64,
    /// Producer epoch; -1 for plain producers.
    pub producer_epoch: i16,
    /// Sequence number of the first record; -1 for plain producers.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: u32,
}

impl BatchHeader {
    /// Reads the header fields without checking the CRC. `buf` must hold at
    /// least [`HEADER_LEN`] bytes; sizes and magic are checked.
    pub fn parse(buf: &[u8]) -> Result<Self, RecordsError> {
        if buf.len() < HEADER_LEN {
            return Err(RecordsError::CorruptBatch("batch shorter than its header"));
        }
        let batch_length = be_i32(buf, BATCH_LENGTH);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(RecordsError::CorruptBatch("batch length below header size"));
        }
        if buf[MAGIC] != 2 {
            return Err(RecordsError::CorruptBatch("unsupported magic (only v2 batches)"));
        }
        let base_offset = be_i64(buf, BASE_OFFSET);
        let last_offset_delta = be_i32(buf, LAST_OFFSET_DELTA);
        let records_count = be_i32(buf, RECORDS_COUNT);
        if last_offset_delta < 0 || records_count < 0 || base_offset < 0 {
            return Err(RecordsError::CorruptBatch("negative offset delta or record count"));
        }
        Ok(BatchHeader {
            base_offset: base_offset as u64,
            size: batch_length as usize + LOG_OVERHEAD,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: last_offset_delta as u32,
            base_timestamp: be_i64(buf, BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: records_count as u32,
        })
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Offset right after this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression_id(&self) -> i16 {
        self.attributes & 0x7
    }

    /// The timestamps are the broker's append time (`LogAppendTime`), not the producer's.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// The batch belongs to a transaction (committed or aborted by a later marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// The batch holds a control record (a transaction commit or abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Checks that `batch` is exactly one well-formed batch with a valid CRC.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.size != batch.len() {
        return Err(RecordsError::CorruptBatch("batch length disagrees with buffer"));
    }
    if header.compression_id() > 4 {
        return Err(RecordsError::CorruptBatch("unknown compression codec"));
    }
    if stored_crc(batch) != crc32c(&batch[CRC_START..]) {
        return Err(RecordsError::CorruptBatch("CRC-32C mismatch"));
    }
    Ok(header)
}

/// Splits a buffer of concatenated batches into validated batches.
pub fn split(mut buf: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, RecordsError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < LOG_OVERHEAD {
            return Err(RecordsError::CorruptBatch("trailing bytes after last batch"));
        }
        let declared = be_i32(buf, BATCH_LENGTH);
        if declared < 0 || declared as usize > buf.len() - LOG_OVERHEAD {
            return Err(RecordsError::CorruptBatch("batch length past end of buffer"));
        }
        let (one, rest) = buf.split_at(declared as usize + LOG_OVERHEAD);
        out.push((validate(one)?, one));
        buf = rest;
    }
    if out.is_empty() {
        return Err(RecordsError::CorruptBatch("no record batch"));
    }
    Ok(out)
}

/// The header of a batch as it will be stored: the base offset assigned,
/// the leader epoch stamped (when given; outside the CRC) and, for
/// log-append-time topics, the timestamp set and the CRC recomputed.
/// Only the header is rewritten; the records are written from the caller's
/// buffer unchanged.
pub fn patched_header(
    batch: &[u8],
    base_offset: u64,
    leader_epoch: Option<i32>,
    append_time: Option<i64>,
) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&batch[..HEADER_LEN]);
    header[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    if let Some(epoch) = leader_epoch {
        header[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    }
    if let Some(now) = append_time {
        let attributes = be_i16(&header, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
        header[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        header[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        digest.update(&header[CRC_START..]);
        digest.update(&batch[HEADER_LEN..]);
        let crc = digest.finalize() as u32;
        header[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    header
}

/// CRC-32C (Castagnoli), the checksum of v2 batches. `crc-fast` uses the
/// CPU's carry-less multiply (about 2x the SSE4.2 instruction here), which
/// matters because every appended byte is checksummed once
/// (docs/benchmarks.md).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_be_bytes([batch[CRC], batch[CRC + 1], batch[CRC + 2], batch[CRC + 3]])
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid uncompressed batch of `count` records with 1-byte
    /// bodies, for tests that only care about the header.
    pub fn sample_batch(count: u32, timestamp: i64, payload: &[u8]) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            // length, attributes, tsDelta, offsetDelta, key(-1), value, headers(0)
            let mut rec = vec![0u8, zigzag(0), zigzag(i64::from(i)), 1];
            rec.push(zigzag(payload.len() as i64));
            rec.extend_from_slice(payload);
            rec.push(0);
            records.push(zigzag(rec.len() as i64));
            records.extend_from_slice(&rec);
        }
        let mut b = Vec::with_capacity(HEADER_LEN + records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(count as i32 - 1).to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(count as i32).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c(&b[CRC_START..]);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn zigzag(v: i64) -> u8 {
        let z = ((v << 1) ^ (v >> 63)) as u64;
        assert!(z < 128, "test helper handles one-byte varints only");
        z as u8
    }

    #[test]
    fn valid_batch_parses() {
        let b = sample_batch(3, 1000, b"x");
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.size, b.len());
        assert_eq!(h.max_timestamp, 1000);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let b = sample_batch(2, 5, b"yz");
        // The base offset and partition leader epoch are outside the CRC by
        // design (the broker rewrites them); everything else is covered.
        for i in (0..b.len()).filter(|i| !(0..8).contains(i) && !(12..16).contains(i)) {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(validate(&c).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncations_are_refused() {
        let b = sample_batch(2, 5, b"yz");
        for n in 0..b.len() {
            assert!(validate(&b[..n]).is_err());
            assert!(split(&b[..n]).is_err());
        }
    }

    #[test]
    fn split_reads_concatenated_batches() {
        let mut buf = sample_batch(1, 1, b"a");
        buf.extend(sample_batch(4, 2, b"b"));
        let parts = split(&buf).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0.records_count, 4);
    }

    #[test]
    fn patch_sets_offset_and_keeps_crc_valid() {
        let b = sample_batch(2, 5, b"yz");
        let h = patched_header(&b, 42, None, None);
        let mut c = h.to_vec();
        c.extend_from_slice(&b[HEADER_LEN..]);
        assert_eq!(validate(&c).unwrap().base_offset, 42);
        assert_eq!(
            validate(&c).unwrap().partition_leader_epoch,
            BatchHeader::parse(&b).unwrap().partition_leader_epoch
        );
        let h = patched_header(&b, 42, Some(17), None);
        let mut c = h.to_vec();
        c.extend_from_slice(&b[HEADER_LEN..]);
        assert_eq!(validate(&c).unwrap().partition_leader_epoch, 17);
        let h = patched_header(&b, 7, Some(3), Some(999));
        let mut c = h.to_vec();
        c.extend_from_slice(&b[HEADER_LEN..]);
        let parsed = validate(&c).unwrap();
        assert!(parsed.is_log_append_time());
        assert_eq!(parsed.max_timestamp, 999);
        assert_eq!(parsed.partition_leader_epoch, 3);
    }
}
