//! Reading what a Kafka consumer in `read_committed` mode would see of a
//! partition: the bridges hand nothing else to another protocol.

use ferry_records::batch;

use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::stored::{StoredRecord, decode_batch};

/// One [`read_committed`].
#[derive(Debug)]
pub struct Committed {
    /// The committed records read, with their offsets, in offset order.
    pub records: Vec<(u64, StoredRecord)>,
    /// Where the next read starts: past every batch this one covered,
    /// including control batches and aborted ones it skipped.
    pub next: u64,
}

/// Reads the committed records of `p` from offset `from` (at least the log
/// start), about `max_bytes` of batches (at least one batch): only below the
/// last stable offset, skipping control batches (transaction markers) and
/// batches of aborted transactions. `None` once `from` reaches the last
/// stable offset. A batch that does not decode is an error unless records
/// before it were read; the next read then starts at it.
pub fn read_committed(p: &Partition, from: u64, max_bytes: usize) -> Result<Option<Committed>> {
    let from = from.max(p.log_start_offset());
    let lso = p.last_stable_offset();
    if from >= lso {
        return Ok(None);
    }
    let Some(slice) = p.read_committed(from, max_bytes, lso)? else { return Ok(None) };
    let bytes = slice.to_vec()?;
    let batches = batch::split(&bytes)?;
    let Some(end) = batches.last().map(|(h, _)| h.next_offset()) else {
        return Err(BrokerError::InvalidRecord(format!("no whole batch at offset {from} of {}-{}", p.topic, p.index)));
    };
    let aborted = p.aborted_txns(from, end);
    let mut read = Committed { records: Vec::new(), next: from };
    for (h, b) in batches {
        if h.next_offset() <= read.next {
            continue;
        }
        if !h.is_control() && !aborted.iter().any(|a| a.covers(&h)) {
            match decode_batch(&h, b) {
                Ok(records) => read.records.extend(records.into_iter().filter(|(offset, _)| *offset >= from)),
                Err(e) if read.next == from => return Err(e),
                Err(_) => break,
            }
        }
        read.next = h.next_offset();
    }
    Ok(Some(read))
}
