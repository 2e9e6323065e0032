//! Record-level access to Kafka v2 record batches (magic 2): decoding the
//! records section, re-building a batch from a subset of its records (compaction)
//! and building fresh batches (non-Kafka front-ends, tests).

use std::borrow::Cow;

use crate::compression::{self, Compression};
use crate::error::{RecordsError, corrupt};

// Field positions in the fixed header, shared with [`crate::batch`].
use crate::batch::{
    ATTRIBUTES as ATTRIBUTES_AT, BATCH_LENGTH as LENGTH_AT, CRC as CRC_AT, HEADER_LEN, LOG_OVERHEAD as LENGTH_BASE,
    MAGIC as MAGIC_AT, RECORDS_COUNT as COUNT_AT,
};
/// Smallest encoded record: 7 one-byte fields. Bounds pre-allocation by `count`.
const MIN_RECORD_LEN: usize = 7;

/// One record of a batch, borrowing from the uncompressed records payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Offset minus the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp minus the batch's base timestamp, in ms.
    pub timestamp_delta: i64,
    /// Record key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Record value; `None` for a null value (a tombstone in compacted logs).
    pub value: Option<&'a [u8]>,
    /// The whole encoded record including its length varint, for [`rebuild_batch`].
    pub raw: &'a [u8],
    /// Headers in wire order; Kafka allows duplicate keys, so they are never merged.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// A record to encode with [`build_batch`]; `timestamp` is absolute (ms, CreateTime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Record key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Record value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers as (key, value) pairs; a `None` value is a null header value.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// Absolute timestamp, in ms since the Unix epoch.
    pub timestamp: i64,
}

/// Returns the uncompressed records section of a batch (borrowed if uncompressed).
///
/// The section ends where `batchLength` says, so trailing bytes after the batch
/// are ignored. `limit` caps the decompressed size only (see [`compression::decompress`]).
pub fn records_payload(batch: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, RecordsError> {
    let header = header(batch)?;
    let length =
        usize::try_from(i32::from_be_bytes(field(&header, LENGTH_AT))).map_err(|_| corrupt("negative batch length"))?;
    let section = LENGTH_BASE
        .checked_add(length)
        .and_then(|end| batch.get(HEADER_LEN..end))
        .ok_or_else(|| corrupt("batch length disagrees with the buffer"))?;
    match attributes_codec(&header)? {
        Compression::None => Ok(Cow::Borrowed(section)),
        codec => compression::decompress(codec, section, limit).map(Cow::Owned),
    }
}

/// Parses exactly `count` records from an uncompressed payload.
///
/// Errors on truncation, negative lengths other than -1 (and on null header keys
/// or negative header counts), a record whose fields disagree with its length
/// prefix, trailing bytes after the last record, and fewer records than `count`.
pub fn parse_records(payload: &[u8], count: usize) -> Result<Vec<RecordView<'_>>, RecordsError> {
    let mut records = Vec::with_capacity(count.min(payload.len() / MIN_RECORD_LEN));
    let mut cur = Cursor::new(payload);
    for i in 0..count {
        let start = cur.pos;
        let len = cur.length()?.ok_or_else(|| corrupt("negative record length"))?;
        let body = cur.bytes(len).map_err(|e| corrupt(format!("record {i}: {e}")))?;
        let raw = payload.get(start..cur.pos).ok_or_else(|| corrupt("record bounds"))?;
        let record = parse_record(body, raw).map_err(|e| corrupt(format!("record {i}: {e}")))?;
        records.push(record);
    }
    if cur.pos != payload.len() {
        return Err(corrupt(format!("{} trailing bytes after {count} records", payload.len() - cur.pos)));
    }
    Ok(records)
}

fn parse_record<'a>(body: &'a [u8], raw: &'a [u8]) -> Result<RecordView<'a>, RecordsError> {
    let mut cur = Cursor::new(body);
    let _attributes = cur.bytes(1)?; // unused by Kafka
    let timestamp_delta = cur.varlong()?;
    let offset_delta = cur.varint()?;
    let key = cur.nullable_bytes()?;
    let value = cur.nullable_bytes()?;
    let n = usize::try_from(cur.varint()?).map_err(|_| corrupt("negative header count"))?;
    let mut headers = Vec::with_capacity(n.min(body.len() / 2));
    for _ in 0..n {
        let key = cur.nullable_bytes()?.ok_or_else(|| corrupt("null header key"))?;
        headers.push((key, cur.nullable_bytes()?));
    }
    if cur.pos != body.len() {
        return Err(corrupt("record length prefix disagrees with its fields"));
    }
    Ok(RecordView { offset_delta, timestamp_delta, key, value, raw, headers })
}

/// Builds a batch from `template`'s header and a subset of its records' `raw`
/// bytes (as returned by [`parse_records`]), compressed with the template's codec.
///
/// baseOffset, partitionLeaderEpoch, attributes, lastOffsetDelta, base/max
/// timestamps and producer fields are kept, so the surviving records keep their
/// offsets and timestamps (their deltas are relative to the unchanged bases) and
/// the producer's last offset/sequence stays intact, as with Kafka's log cleaner.
/// maxTimestamp is not lowered if its record was dropped. batchLength,
/// recordsCount and the CRC are recomputed; the raw records are not re-validated.
pub fn rebuild_batch(template: &[u8], raw_records: &[&[u8]]) -> Result<Vec<u8>, RecordsError> {
    let header = header(template)?;
    let payload = compression::compress(attributes_codec(&header)?, &raw_records.concat())?;
    assemble(header, raw_records.len(), &payload)
}

/// The same batch with its records section re-encoded in `codec`: every
/// header field but the codec bits, batchLength and the CRC is kept, and the
/// records are not re-validated. `limit` caps the decompressed size.
/// For topics whose `compression.type` names a codec.
pub fn recompressed(batch: &[u8], codec: Compression, limit: usize) -> Result<Vec<u8>, RecordsError> {
    let mut header = header(batch)?;
    let payload = records_payload(batch, limit)?;
    let attributes = i16::from_be_bytes(field(&header, ATTRIBUTES_AT)) & !0x07 | codec.id();
    header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let count = usize::try_from(i32::from_be_bytes(field(&header, COUNT_AT))).map_err(|_| corrupt("negative count"))?;
    assemble(header, count, &compression::compress(codec, &payload)?)
}

/// Encodes `records` into a fresh batch: baseOffset 0, partitionLeaderEpoch -1,
/// CreateTime, non-transactional, offsetDelta = index, lastOffsetDelta = n - 1,
/// baseTimestamp = the first record's timestamp (as the Java producer does; later
/// deltas may be negative) and maxTimestamp = the largest timestamp.
pub fn build_batch(
    records: &[NewRecord<'_>],
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<Vec<u8>, RecordsError> {
    let invalid = |what: &str| RecordsError::Invalid(what.to_owned());
    let first = records.first().ok_or_else(|| invalid("a batch needs at least one record"))?;
    let base_ts = first.timestamp;
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let last_delta = i32::try_from(records.len() - 1).map_err(|_| invalid("too many records"))?;

    let mut payload = Vec::new();
    let mut body = Vec::new();
    for (i, r) in (0i32..).zip(records) {
        body.clear();
        body.push(0); // record attributes
        let ts_delta = r.timestamp.checked_sub(base_ts).ok_or_else(|| invalid("timestamp delta overflows"))?;
        put_varlong(&mut body, ts_delta);
        put_varint(&mut body, i);
        put_nullable(&mut body, r.key)?;
        put_nullable(&mut body, r.value)?;
        put_len(&mut body, r.headers.len())?;
        for &(key, value) in &r.headers {
            put_nullable(&mut body, Some(key))?;
            put_nullable(&mut body, value)?;
        }
        put_len(&mut payload, body.len())?;
        payload.extend_from_slice(&body);
    }

    let fields: [&[u8]; 13] = [
        &0i64.to_be_bytes(),    // baseOffset
        &0i32.to_be_bytes(),    // batchLength, set by `assemble`
        &(-1i32).to_be_bytes(), // partitionLeaderEpoch
        &[2],                   // magic
        &0u32.to_be_bytes(),    // crc, set by `assemble`
        &compression.id().to_be_bytes(),
        &last_delta.to_be_bytes(),
        &base_ts.to_be_bytes(),
        &max_ts.to_be_bytes(),
        &producer_id.to_be_bytes(),
        &producer_epoch.to_be_bytes(),
        &base_sequence.to_be_bytes(),
        &0i32.to_be_bytes(), // recordsCount, set by `assemble`
    ];
    let header = fields.concat().try_into().map_err(|_| invalid("header layout"))?;
    assemble(header, records.len(), &compression::compress(compression, &payload)?)
}

/// Builds a transaction marker (Kafka's control batch): one record whose key
/// is (version 0, type: 0 abort, 1 commit) and whose value is an
/// EndTxnMarker (version 0, coordinator epoch); transactional and control
/// attribute bits set, base sequence -1.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Result<Vec<u8>, RecordsError> {
    let key = [0, 0, 0, u8::from(commit)];
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let record = NewRecord { key: Some(&key), value: Some(&value), headers: vec![], timestamp };
    let mut batch = build_batch(&[record], Compression::None, producer_id, producer_epoch, -1)?;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&CONTROL_ATTRIBUTES.to_be_bytes());
    let crc = crate::batch::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    Ok(batch)
}

/// Transactional (bit 4) and control (bit 5).
const CONTROL_ATTRIBUTES: i16 = (1 << 4) | (1 << 5);

/// What a control batch marks: `Some(true)` commit, `Some(false)` abort,
/// `None` for other control records (e.g. KRaft's).
pub fn control_marker(batch: &[u8]) -> Result<Option<bool>, RecordsError> {
    let count = i32::from_be_bytes(field(&header(batch)?, COUNT_AT));
    let payload = records_payload(batch, 1 << 20)?;
    let records = parse_records(&payload, usize::try_from(count).map_err(|_| corrupt("negative count"))?)?;
    Ok(match records.first().and_then(|r| r.key) {
        Some([0, 0, 0, 0, ..]) => Some(false),
        Some([0, 0, 0, 1, ..]) => Some(true),
        _ => None,
    })
}

/// A transaction marker's type and coordinator epoch (Kafka's
/// EndTransactionMarker value: version int16, coordinatorEpoch int32):
/// `Some((commit, coordinator_epoch))`, the epoch -1 if the value lacks it;
/// `None` for other control records.
pub fn end_txn_marker(batch: &[u8]) -> Result<Option<(bool, i32)>, RecordsError> {
    let count = i32::from_be_bytes(field(&header(batch)?, COUNT_AT));
    let payload = records_payload(batch, 1 << 20)?;
    let records = parse_records(&payload, usize::try_from(count).map_err(|_| corrupt("negative count"))?)?;
    let Some(first) = records.first() else { return Ok(None) };
    let commit = match first.key {
        Some([0, 0, 0, 0, ..]) => false,
        Some([0, 0, 0, 1, ..]) => true,
        _ => return Ok(None),
    };
    let epoch =
        first.value.and_then(|v| v.get(2..6)).and_then(|b| <[u8; 4]>::try_from(b).ok()).map_or(-1, i32::from_be_bytes);
    Ok(Some((commit, epoch)))
}

/// Finishes a batch: fills in batchLength, recordsCount and the CRC-32C over [21..].
fn assemble(mut header: [u8; HEADER_LEN], count: usize, payload: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let too_big = |_| RecordsError::Invalid("batch too large".to_owned());
    let length = i32::try_from(HEADER_LEN - LENGTH_BASE + payload.len()).map_err(too_big)?;
    let count = i32::try_from(count).map_err(too_big)?;
    header[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    header[COUNT_AT..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    let mut batch = Vec::with_capacity(HEADER_LEN + payload.len());
    batch.extend_from_slice(&header);
    batch.extend_from_slice(payload);
    let crc = crate::batch::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    Ok(batch)
}

/// The fixed 61-byte header, checked for length and magic 2.
fn header(batch: &[u8]) -> Result<[u8; HEADER_LEN], RecordsError> {
    let header: [u8; HEADER_LEN] =
        batch.first_chunk().copied().ok_or_else(|| corrupt("batch shorter than its 61-byte header"))?;
    match header[MAGIC_AT] {
        2 => Ok(header),
        magic => Err(corrupt(format!("unsupported batch magic {magic}"))),
    }
}

fn field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

fn attributes_codec(header: &[u8; HEADER_LEN]) -> Result<Compression, RecordsError> {
    Compression::from_attributes(i16::from_be_bytes(field(header, ATTRIBUTES_AT)))
}

/// Bounds-checked reader over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RecordsError> {
        let out =
            self.pos.checked_add(n).and_then(|end| self.buf.get(self.pos..end)).ok_or_else(|| corrupt("truncated"))?;
        self.pos += n;
        Ok(out)
    }

    /// Unsigned LEB128 of at most `max_bytes`, rejecting bits beyond `bits`.
    fn leb128(&mut self, max_bytes: u32, bits: u32) -> Result<u64, RecordsError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = *self.buf.get(self.pos).ok_or_else(|| corrupt("truncated varint"))?;
            self.pos += 1;
            let shift = 7 * i;
            let chunk = u64::from(b & 0x7f);
            if shift + 7 > bits && chunk >> (bits - shift) != 0 {
                return Err(corrupt("varint overflows"));
            }
            value |= chunk << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        let v = self.leb128(5, 32)? as u32;
        Ok((v >> 1) as i32 ^ -((v & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let v = self.leb128(10, 64)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A varint length: `None` for -1, an error for other negatives.
    fn length(&mut self) -> Result<Option<usize>, RecordsError> {
        match self.varint()? {
            -1 => Ok(None),
            n => usize::try_from(n).map(Some).map_err(|_| corrupt(format!("length {n}"))),
        }
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        self.length()?.map(|n| self.bytes(n)).transpose()
    }
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_leb128(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_leb128(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), RecordsError> {
    let len = i32::try_from(len).map_err(|_| RecordsError::Invalid(format!("length {len}")))?;
    put_varint(out, len);
    Ok(())
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Result<(), RecordsError> {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_len(out, b.len())?;
            out.extend_from_slice(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
    const LIMIT: usize = 1 << 20;

    #[test]
    fn control_batches_are_valid_markers() {
        for commit in [true, false] {
            let b = build_control_batch(42, 3, commit, 0, 1_000).unwrap();
            let h = crate::batch::validate(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.records_count), (42, 3, -1, 1));
            assert_eq!(control_marker(&b).unwrap(), Some(commit));
        }
        let plain = build_batch(&sample(), Compression::None, -1, -1, -1).unwrap();
        assert_eq!(control_marker(&plain).unwrap(), None);
    }

    fn sample() -> Vec<NewRecord<'static>> {
        let big: &'static [u8] = Box::leak(vec![b'v'; 300].into_boxed_slice());
        vec![
            NewRecord {
                key: Some(b"k1"),
                value: Some(b"hello"),
                headers: vec![(b"h", Some(b"1")), (b"h", Some(b"2")), (b"h", None)],
                timestamp: 1_700_000_000_000,
            },
            NewRecord { key: None, value: None, headers: vec![], timestamp: 1_699_999_999_000 },
            NewRecord { key: Some(b""), value: Some(big), headers: vec![], timestamp: 1_700_000_000_500 },
            NewRecord { key: Some(b"k3"), value: None, headers: vec![(b"", Some(b""))], timestamp: 1_700_000_000_100 },
            NewRecord { key: Some(b"k4"), value: Some(b"last"), headers: vec![], timestamp: 1_700_000_000_200 },
        ]
    }

    fn i32_at(b: &[u8], at: usize) -> i32 {
        i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn i64_at(b: &[u8], at: usize) -> i64 {
        i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn assert_valid(batch: &[u8]) {
        assert_eq!(i32_at(batch, LENGTH_AT) as usize, batch.len() - LENGTH_BASE);
        assert_eq!(batch[MAGIC_AT], 2);
        assert_eq!(i32_at(batch, CRC_AT) as u32, crate::batch::crc32c(&batch[ATTRIBUTES_AT..]));
    }

    #[test]
    fn build_parse_round_trip_every_codec() {
        let input = sample();
        for c in ALL {
            let batch = build_batch(&input, c, 42, 3, 7).unwrap();
            assert_valid(&batch);
            assert_eq!(i16::from_be_bytes([batch[21], batch[22]]), c.id());
            assert_eq!(i32_at(&batch, 23), 4); // lastOffsetDelta
            assert_eq!(i64_at(&batch, 27), 1_700_000_000_000); // baseTimestamp
            assert_eq!(i64_at(&batch, 35), 1_700_000_000_500); // maxTimestamp
            assert_eq!((i64_at(&batch, 43), i32_at(&batch, 53)), (42, 7));
            assert_eq!(i32_at(&batch, COUNT_AT), 5);

            let payload = records_payload(&batch, LIMIT).unwrap();
            assert_eq!(matches!(payload, Cow::Borrowed(_)), c == Compression::None);
            let records = parse_records(&payload, 5).unwrap();
            for (i, (got, want)) in records.iter().zip(&input).enumerate() {
                assert_eq!(got.offset_delta, i as i32);
                assert_eq!(got.timestamp_delta, want.timestamp - 1_700_000_000_000);
                assert_eq!((got.key, got.value), (want.key, want.value));
                assert_eq!(got.headers, want.headers, "duplicate header keys kept in order");
            }
            let raw_total: usize = records.iter().map(|r| r.raw.len()).sum();
            assert_eq!(raw_total, payload.len());
        }
    }

    #[test]
    fn rebuild_keeps_subset_offsets_and_crc() {
        for c in ALL {
            let batch = build_batch(&sample(), c, 42, 3, 7).unwrap();
            let payload = records_payload(&batch, LIMIT).unwrap();
            let records = parse_records(&payload, 5).unwrap();
            let kept = [records[1].raw, records[3].raw];
            let rebuilt = rebuild_batch(&batch, &kept).unwrap();
            assert_valid(&rebuilt);
            // Everything but batchLength, CRC and recordsCount is the template's.
            assert_eq!(rebuilt[..8], batch[..8]);
            assert_eq!(rebuilt[12..17], batch[12..17]);
            assert_eq!(rebuilt[21..57], batch[21..57]);
            assert_eq!(i32_at(&rebuilt, COUNT_AT), 2);

            let payload = records_payload(&rebuilt, LIMIT).unwrap();
            let got = parse_records(&payload, 2).unwrap();
            assert_eq!(got, [records[1].clone(), records[3].clone()]);
            assert_eq!((got[0].offset_delta, got[1].offset_delta), (1, 3));

            let empty = rebuild_batch(&batch, &[]).unwrap();
            assert_valid(&empty);
            assert!(parse_records(&records_payload(&empty, LIMIT).unwrap(), 0).unwrap().is_empty());
        }
    }

    #[test]
    fn recompressed_keeps_everything_but_codec_and_crc() {
        for from in ALL {
            let batch = build_batch(&sample(), from, 42, 3, 7).unwrap();
            for to in ALL {
                let out = recompressed(&batch, to, LIMIT).unwrap();
                assert_valid(&out);
                let h = crate::batch::validate(&out).unwrap();
                assert_eq!(Compression::from_attributes(h.attributes).unwrap(), to);
                assert_eq!(out[..8], batch[..8]);
                assert_eq!(out[12..17], batch[12..17]);
                assert_eq!(out[23..HEADER_LEN], batch[23..HEADER_LEN]);
                let want = records_payload(&batch, LIMIT).unwrap();
                assert_eq!(records_payload(&out, LIMIT).unwrap(), want);
            }
        }
        let control = build_control_batch(1, 0, true, 0, 1).unwrap();
        let h = crate::batch::validate(&recompressed(&control, Compression::Gzip, LIMIT).unwrap()).unwrap();
        assert!(h.is_control() && h.is_transactional(), "other attribute bits kept");
    }

    #[test]
    fn records_payload_honours_batch_length() {
        let mut batch = build_batch(&sample(), Compression::None, -1, -1, -1).unwrap();
        let len = batch.len();
        batch.extend_from_slice(b"next batch");
        assert_eq!(records_payload(&batch, LIMIT).unwrap().len(), len - HEADER_LEN);
        assert!(records_payload(&batch[..len - 1], LIMIT).is_err());
        assert!(records_payload(&batch[..60], LIMIT).is_err());
        batch[MAGIC_AT] = 1;
        assert!(records_payload(&batch, LIMIT).is_err());
        batch[MAGIC_AT] = 2;
        batch[22] |= 7;
        assert_eq!(records_payload(&batch, LIMIT), Err(RecordsError::UnknownCodec(7)));
    }

    #[test]
    fn parse_rejects_bad_payloads() {
        let batch = build_batch(&sample(), Compression::None, -1, -1, -1).unwrap();
        let payload = &batch[HEADER_LEN..];
        assert!(parse_records(payload, 4).is_err(), "trailing record");
        assert!(parse_records(payload, 6).is_err(), "missing record");
        assert!(parse_records(&[payload, &[0]].concat(), 5).is_err(), "trailing garbage");
        for cut in 0..payload.len() {
            assert!(parse_records(&payload[..cut], 5).is_err(), "truncated at {cut}");
        }
        let err = |payload: &[u8]| match parse_records(payload, 1) {
            Err(RecordsError::Corrupt(msg)) => msg,
            other => panic!("expected corruption, got {other:?}"),
        };
        // Bodies: attributes, ts delta 0, offset delta 0, key, value, header count, headers.
        assert!(err(&[8, 0, 0, 0, 3]).contains("length -2"), "key length -2");
        assert!(err(&[12, 0, 0, 0, 1, 1, 1]).contains("negative header count"));
        assert!(err(&[16, 0, 0, 0, 1, 1, 2, 1, 1]).contains("null header key"));
        assert!(err(&[18, 0, 0, 0, 1, 1, 2, 0, 1, 0]).contains("length prefix"));
        assert!(err(&[1]).contains("negative record length"));
        let ok = parse_records(&[16, 0, 0, 0, 1, 1, 2, 0, 1], 1).unwrap();
        assert_eq!(ok[0].headers, vec![(&b""[..], None)]);
        assert_eq!((ok[0].key, ok[0].value, ok[0].raw.len()), (None, None, 9));
        // A hostile count does not pre-allocate or panic.
        assert!(parse_records(payload, usize::MAX).is_err());
    }

    #[test]
    fn varints() {
        for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert!(buf.len() <= 5);
            let mut cur = Cursor::new(&buf);
            assert_eq!(cur.varint().unwrap(), v);
            assert_eq!(cur.pos, buf.len());
        }
        for v in [0, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert!(buf.len() <= 10);
            assert_eq!(Cursor::new(&buf).varlong().unwrap(), v);
        }
        assert!(Cursor::new(&[0x80; 5]).varint().is_err()); // 6+ bytes
        assert!(Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).varint().is_err()); // > 32 bits
        assert!(Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]).varint().is_ok());
        assert!(Cursor::new(&[0x80; 10]).varlong().is_err());
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert!(Cursor::new(&max).varlong().is_ok());
        *max.last_mut().unwrap() = 0x02;
        assert!(Cursor::new(&max).varlong().is_err());
    }

    #[test]
    fn build_rejects_unencodable_input() {
        assert!(build_batch(&[], Compression::None, -1, -1, -1).is_err());
        let mut records = sample();
        records[1].timestamp = i64::MIN;
        assert!(build_batch(&records, Compression::None, -1, -1, -1).is_err());
        assert!(rebuild_batch(&[0; 60], &[]).is_err());
    }

    #[test]
    fn corrupted_batches_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for c in ALL {
            let batch = build_batch(&sample(), c, 1, 0, 0).unwrap();
            for cut in 0..batch.len() {
                let _ = records_payload(&batch[..cut], LIMIT).and_then(|p| parse_records(&p, 5).map(|r| r.len()));
            }
            let payload = records_payload(&batch, LIMIT).unwrap().into_owned();
            for _ in 0..2000 {
                let mut bad = batch.clone();
                for _ in 0..1 + next() % 3 {
                    let at = HEADER_LEN + (next() as usize) % (bad.len() - HEADER_LEN);
                    bad[at] ^= 1 << (next() % 8);
                }
                if let Ok(p) = records_payload(&bad, LIMIT) {
                    let _ = parse_records(&p, 5);
                }
                let mut bad = payload.clone();
                let at = (next() as usize) % bad.len();
                bad[at] = next() as u8;
                let _ = parse_records(&bad, 5);
            }
        }
    }
}
