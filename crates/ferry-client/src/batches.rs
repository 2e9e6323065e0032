//! Records in and out of v2 record batches, built and parsed with
//! `ferry_records`.

use ferry_records::batch::{BatchHeader, HEADER_LEN};
use ferry_records::compression::{Compression, MAX_DECOMPRESSED};
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};

use crate::error::ClientError;

/// A record to produce.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The key (`None`: null).
    pub key: Option<Vec<u8>>,
    /// The value (`None`: null, a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers, in order (keys may repeat).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch (CreateTime).
    pub timestamp: i64,
}

/// A record read back.
#[derive(Clone, Debug)]
pub struct FetchedRecord {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// CreateTime, or LogAppendTime if the topic stamps records on append.
    pub timestamp: i64,
    /// The key (`None`: null).
    pub key: Option<Vec<u8>>,
    /// The value (`None`: null).
    pub value: Option<Vec<u8>>,
    /// Headers, in order; a header value may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Encodes records as one v2 batch (base offset 0, no producer id).
pub fn encode_batch(records: &[Record], compression: Compression) -> Result<Vec<u8>, ClientError> {
    let views: Vec<NewRecord<'_>> = records
        .iter()
        .map(|r| NewRecord {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r.headers.iter().map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))).collect(),
            timestamp: r.timestamp,
        })
        .collect();
    build_batch(&views, compression, -1, -1, -1).map_err(|e| ClientError::Encode(e.to_string()))
}

/// Decodes every record at or after `from` in a fetched records section
/// (whole batches; a trailing partial batch is ignored, as Kafka clients do;
/// control batches are skipped). Returns the records and the offset after
/// the last batch seen.
pub fn decode_batches(partition: i32, mut data: &[u8], from: i64) -> Result<(Vec<FetchedRecord>, i64), ClientError> {
    let mut out = Vec::new();
    let mut next = from;
    while data.len() >= HEADER_LEN {
        let h = BatchHeader::parse(data)?;
        let Some(batch) = data.get(..h.size) else { break };
        data = &data[h.size..];
        next = next.max(h.next_offset() as i64);
        if h.is_control() {
            continue;
        }
        let payload = records_payload(batch, MAX_DECOMPRESSED)?;
        let records = parse_records(&payload, h.records_count as usize)?;
        for r in records {
            let offset = h.base_offset as i64 + i64::from(r.offset_delta);
            if offset < from {
                continue;
            }
            let timestamp = if h.is_log_append_time() { h.max_timestamp } else { h.base_timestamp + r.timestamp_delta };
            out.push(FetchedRecord {
                partition,
                offset,
                timestamp,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.map(<[u8]>::to_vec)))
                    .collect(),
            });
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_skip_earlier_offsets() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("v{i}").into_bytes()),
                headers: vec![("h".into(), b"x".to_vec())],
                timestamp: 1000 + i,
            })
            .collect();
        let mut batch = encode_batch(&records, Compression::None).unwrap();
        // As the broker would store it: base offset 10.
        batch[..8].copy_from_slice(&10u64.to_be_bytes());
        let (got, next) = decode_batches(0, &batch, 11).unwrap();
        assert_eq!(next, 13);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(got[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(got[1].timestamp, 1002);
        assert_eq!(got[1].headers, [("h".to_string(), Some(b"x".to_vec()))]);
        // A partial batch at the end is left for the next fetch.
        let (got, next) = decode_batches(0, &batch[..batch.len() - 1], 10).unwrap();
        assert!(got.is_empty());
        assert_eq!(next, 10);
    }

    /// A batch of `values` stored at `base`.
    fn stored(base: u64, values: &[&str]) -> Vec<u8> {
        let records: Vec<Record> =
            values.iter().map(|v| Record { value: Some(v.as_bytes().to_vec()), ..Record::default() }).collect();
        let mut batch = encode_batch(&records, Compression::None).unwrap();
        batch[..8].copy_from_slice(&base.to_be_bytes());
        batch
    }

    #[test]
    fn control_batches_are_skipped_but_advance_the_offset() {
        let mut marker = ferry_records::records::build_control_batch(7, 0, true, 0, 5).unwrap();
        marker[..8].copy_from_slice(&2u64.to_be_bytes());
        let data = [stored(0, &["a", "b"]), marker.clone(), stored(3, &["c"])].concat();
        let (got, next) = decode_batches(4, &data, 0).unwrap();
        assert_eq!(got.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>(), [(4, 0), (4, 1), (4, 3)]);
        assert_eq!(next, 4);
        let (got, next) = decode_batches(4, &marker, 2).unwrap();
        assert!(got.is_empty());
        assert_eq!(next, 3, "a fetch that returns only a marker moves past it");
    }

    #[test]
    fn corrupt_batches_are_errors() {
        let mut batch = stored(0, &["a"]);
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(matches!(decode_batches(0, &batch, 0), Err(ClientError::Records(_))));
    }
}
