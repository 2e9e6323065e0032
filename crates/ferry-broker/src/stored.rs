//! Records of the broker's internal stores (key/value stores, record
//! queues, bridged messages): a key, a value and named headers, encoded as
//! ordinary Kafka v2 record batches so any protocol can read them.

use std::sync::Arc;

use ferry_log::{Log, LogError};
use ferry_records::batch::BatchHeader;
use ferry_records::compression::Compression;
use ferry_records::records::{NewRecord, build_batch, parse_records, records_payload};
use tokio::sync::oneshot;

use crate::error::Result;

/// One stored record. Protocol properties travel as headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRecord {
    /// Record key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Record value; `None` for a null value (a tombstone in compacted logs).
    pub value: Option<Vec<u8>>,
    /// Headers as (name, value) pairs, in order; names may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

impl StoredRecord {
    /// The record as [`build_batch`] takes it.
    pub fn as_new_record(&self) -> NewRecord<'_> {
        NewRecord {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.iter().map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))).collect(),
            timestamp: self.timestamp,
        }
    }
}

/// Encodes `records` (at least one) into one uncompressed batch.
pub fn encode_batch(records: &[StoredRecord]) -> Result<Vec<u8>> {
    let recs: Vec<NewRecord<'_>> = records.iter().map(StoredRecord::as_new_record).collect();
    Ok(build_batch(&recs, Compression::None, -1, -1, -1).map_err(LogError::from)?)
}

/// Decodes every record of the batches in `bytes`, with its offset.
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<(u64, StoredRecord)>> {
    let mut out = Vec::new();
    for (h, b) in ferry_records::batch::split(bytes)? {
        out.extend(decode_batch(&h, b)?);
    }
    Ok(out)
}

/// Decodes every record of one batch (`h` is its header), with its offset.
/// Header values that are null become empty.
pub fn decode_batch(h: &BatchHeader, batch: &[u8]) -> Result<Vec<(u64, StoredRecord)>> {
    let payload = records_payload(batch, 64 << 20).map_err(LogError::from)?;
    let records = parse_records(&payload, h.records_count as usize).map_err(LogError::from)?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let offset = h.base_offset.saturating_add(u64::try_from(r.offset_delta).unwrap_or(0));
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.map(<[u8]>::to_vec).unwrap_or_default()))
            .collect();
        out.push((
            offset,
            StoredRecord {
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers,
                timestamp: h.base_timestamp.saturating_add(r.timestamp_delta),
            },
        ));
    }
    Ok(out)
}

/// Resolves once an append is on disk (per the log's flush policy).
pub struct Durable(Option<oneshot::Receiver<ferry_log::Result<()>>>);

impl Durable {
    pub(crate) fn after(log: &Arc<Log>, end: u64) -> Durable {
        let (tx, rx) = oneshot::channel();
        log.on_durable(end, move |r| {
            let _ = tx.send(r);
        });
        Durable(Some(rx))
    }

    /// Nothing to wait for.
    pub fn ready() -> Durable {
        Durable(None)
    }

    /// Resolves when the append is durable, or with the flush's error.
    pub async fn wait(self) -> Result<()> {
        if let Some(rx) = self.0 {
            rx.await.map_err(|_| LogError::Unavailable("flusher stopped".into()))??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let r = StoredRecord {
            key: Some(b"a/b".to_vec()),
            value: Some(b"payload".to_vec()),
            headers: vec![("p.qos".into(), vec![1]), ("x".into(), b"y".to_vec())],
            timestamp: 1_700_000_000_000,
        };
        let batch = encode_batch(&[r.clone(), StoredRecord { value: None, ..r.clone() }]).unwrap();
        let back = decode_batches(&batch).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], (0, r.clone()));
        assert_eq!(back[1].0, 1);
        assert_eq!(back[1].1.value, None);
    }
}
