//! `ferry-records`: Kafka's RecordBatch v2, the one record format every part
//! of Ferry stores and speaks. The fixed batch header and its CRC-32C
//! ([`batch`]), the records inside a batch and control records
//! ([`records`]), the compression codecs ([`compression`]) and Kafka's
//! default key partitioner ([`partitioner`]). Used by the log, the
//! front-ends, the broker's bridges and the client; depends on nothing of
//! Ferry's.

pub mod batch;
pub mod compression;
mod error;
pub mod partitioner;
pub mod records;

pub use error::RecordsError;
