//! Finding the first record at or after a timestamp (Kafka's ListOffsets).

use ferry_records::compression::MAX_DECOMPRESSED;

use crate::error::Result;
use crate::log::Log;
use crate::segment::read_header;
use ferry_records::records::{parse_records, records_payload};

impl Log {
    /// The first offset whose record timestamp is >= `ts`, with that
    /// record's timestamp; `None` if no readable record is that recent.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        let cache = &self.env.cache;
        let (start, hw) = (self.log_start_offset(), self.high_watermark());
        for seg in self.segment_list() {
            if seg.max_timestamp(cache)? < ts {
                continue;
            }
            let file = seg.file(cache)?;
            let limit = seg.visible();
            let mut pos = u64::from(seg.with_indexes(cache, |ix| ix.lookup(ix.lookup_time(ts)))?.pos);
            while let Some(h) = read_header(&file, pos, limit)? {
                pos += h.size as u64;
                if h.base_offset >= hw {
                    return Ok(None);
                }
                if h.max_timestamp < ts || h.is_control() || h.last_offset() < start {
                    continue;
                }
                if h.is_log_append_time() {
                    return Ok(Some((h.base_offset.max(start), h.max_timestamp)));
                }
                let mut bytes = vec![0u8; h.size];
                std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, pos - h.size as u64)?;
                let payload = records_payload(&bytes, MAX_DECOMPRESSED)?;
                for r in parse_records(&payload, h.records_count as usize)? {
                    let (offset, rts) = (h.base_offset + r.offset_delta as u64, h.base_timestamp + r.timestamp_delta);
                    if rts >= ts && offset >= start {
                        return Ok(Some((offset, rts)));
                    }
                }
            }
        }
        Ok(None)
    }
}

impl Log {
    /// The record with the largest timestamp (the first such, if tied) and
    /// that timestamp: ListOffsets' MAX_TIMESTAMP. Looks at one segment.
    pub fn max_timestamp_offset(&self) -> Result<Option<(u64, i64)>> {
        let cache = &self.env.cache;
        let (start, hw) = (self.log_start_offset(), self.high_watermark());
        let mut best: Option<(i64, std::sync::Arc<crate::segment::Segment>)> = None;
        for seg in self.segment_list() {
            let ts = seg.max_timestamp(cache)?;
            if ts >= 0 && best.as_ref().is_none_or(|(b, _)| ts > *b) {
                best = Some((ts, seg));
            }
        }
        let Some((ts, seg)) = best else { return Ok(None) };
        // The first batch reaching the maximum holds the record.
        let file = seg.file(cache)?;
        let mut pos = 0;
        while let Some(h) = read_header(&file, pos, seg.visible())? {
            pos += h.size as u64;
            if h.max_timestamp < ts || h.is_control() || h.base_offset >= hw || h.last_offset() < start {
                continue;
            }
            if h.is_log_append_time() {
                return Ok(Some((h.base_offset.max(start), ts)));
            }
            let mut bytes = vec![0u8; h.size];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, pos - h.size as u64)?;
            let payload = records_payload(&bytes, MAX_DECOMPRESSED)?;
            for r in parse_records(&payload, h.records_count as usize)? {
                if h.base_timestamp + r.timestamp_delta == ts {
                    return Ok(Some((h.base_offset + r.offset_delta as u64, ts)));
                }
            }
        }
        Ok(None)
    }
}
