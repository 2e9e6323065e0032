//! Topic rules that need a batch's records, not just its header: the topic's
//! `compression.type` (recompress batches in another codec) and compacted
//! topics' keys. Topics with neither (`producer`, no `compact`) never get
//! here, so their batches go to the log as sent.

use std::borrow::Cow;

use ferry_records::batch;
use ferry_records::compression::{Compression, MAX_DECOMPRESSED};
use ferry_records::records::{parse_records, recompressed, records_payload};

use crate::error::{BrokerError, Result};
use crate::topic_config::TopicSettings;

/// Kafka shows at most this many record errors in the partition's message.
const SHOWN_ERRORS: usize = 3;

/// Applies the record-level rules of `settings` to `batches` (whole,
/// concatenated batches). Returns them as sent when nothing changes.
pub(crate) fn apply<'a>(
    batches: &'a [u8],
    settings: &TopicSettings,
    topic: &str,
    partition: i32,
) -> Result<Cow<'a, [u8]>> {
    let compact = settings.log.cleanup_policy.compact;
    if settings.compression.is_none() && !compact {
        return Ok(Cow::Borrowed(batches));
    }
    let split = batch::split(batches)?;
    if compact {
        check_keys(&split, &format!("{topic}-{partition}"))?;
    }
    let Some(codec) = settings.compression else { return Ok(Cow::Borrowed(batches)) };
    let keeps = |h: &batch::BatchHeader| h.is_control() || Compression::from_attributes(h.attributes) == Ok(codec);
    if split.iter().all(|(h, _)| keeps(h)) {
        return Ok(Cow::Borrowed(batches));
    }
    let mut out = Vec::with_capacity(batches.len());
    for (h, one) in split {
        if keeps(&h) {
            out.extend_from_slice(one);
        } else {
            out.extend_from_slice(&recompressed(one, codec, MAX_DECOMPRESSED)?);
        }
    }
    Ok(Cow::Owned(out))
}

/// Compacted topics keep the latest record per key, so a record without a
/// key is refused, with one error per such record (KIP-467) as from Kafka.
fn check_keys(batches: &[(batch::BatchHeader, &[u8])], where_: &str) -> Result<()> {
    let mut errors = Vec::new();
    let mut index = 0i32;
    for (h, one) in batches {
        if h.is_control() {
            continue;
        }
        let payload = records_payload(one, MAX_DECOMPRESSED)?;
        for r in parse_records(&payload, h.records_count as usize)? {
            if r.key.is_none() {
                errors.push((
                    index,
                    format!("Compacted topic cannot accept message without key in topic partition {where_}."),
                ));
            }
            index = index.saturating_add(1);
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = errors.iter().take(SHOWN_ERRORS).map(|(i, m)| format!("[{i}] {m}")).collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first \
         three errors at most: {}",
        errors.len(),
        shown.join(", ")
    );
    Err(BrokerError::RejectedRecords { message, records: errors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_config::{BrokerDefaults, resolve};
    use ferry_records::records::{NewRecord, build_batch};
    use std::collections::BTreeMap;

    fn settings(pairs: &[(&str, &str)]) -> TopicSettings {
        let topic: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        resolve(&BrokerDefaults::default(), &topic, 1)
    }

    fn batch(keys: &[Option<&[u8]>], codec: Compression) -> Vec<u8> {
        let records: Vec<NewRecord<'_>> =
            keys.iter().map(|&key| NewRecord { key, value: Some(b"v"), headers: vec![], timestamp: 1 }).collect();
        build_batch(&records, codec, -1, -1, -1).unwrap()
    }

    #[test]
    fn producer_and_delete_topics_keep_batches_as_sent() {
        let b = batch(&[None], Compression::Lz4);
        assert!(matches!(apply(&b, &settings(&[]), "t", 0).unwrap(), Cow::Borrowed(_)));
        let gzip = settings(&[("compression.type", "gzip")]);
        let g = batch(&[None], Compression::Gzip);
        assert!(matches!(apply(&g, &gzip, "t", 0).unwrap(), Cow::Borrowed(_)), "already the topic's codec");
    }

    #[test]
    fn batches_in_another_codec_are_recompressed() {
        let gzip = settings(&[("compression.type", "gzip")]);
        let two = [batch(&[Some(b"a")], Compression::None), batch(&[Some(b"b")], Compression::Gzip)].concat();
        let out = apply(&two, &gzip, "t", 0).unwrap();
        let split = batch::split(&out).unwrap();
        assert_eq!(split.len(), 2);
        for (h, one) in split {
            assert_eq!(h.compression_id(), Compression::Gzip.id());
            assert_eq!(parse_records(&records_payload(one, 1 << 20).unwrap(), 1).unwrap().len(), 1);
        }
        let plain = settings(&[("compression.type", "uncompressed")]);
        let zstd = batch(&[Some(b"a")], Compression::Zstd);
        let out = apply(&zstd, &plain, "t", 0).unwrap();
        assert_eq!(batch::validate(&out).unwrap().compression_id(), 0);
    }

    #[test]
    fn compacted_topics_refuse_keyless_records() {
        let compact = settings(&[("cleanup.policy", "compact")]);
        assert!(apply(&batch(&[Some(b"k")], Compression::Snappy), &compact, "t", 0).is_ok());
        let mixed = [batch(&[Some(b"k"), None], Compression::None), batch(&[None], Compression::Lz4)].concat();
        match apply(&mixed, &compact, "t", 0) {
            Err(BrokerError::RejectedRecords { message, records }) => {
                assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
                assert!(records[0].1.contains("without key in topic partition t-0"));
                assert!(message.contains("2 record errors"), "{message}");
            }
            other => panic!("expected rejected records, got {:?}", other.map(|c| c.len())),
        }
        let corrupt = {
            let mut b = batch(&[Some(b"k")], Compression::None);
            let last = b.len() - 1;
            b[last] ^= 1;
            b
        };
        assert!(matches!(apply(&corrupt, &compact, "t", 0), Err(BrokerError::Log(_))), "CRC checked first");
    }
}
