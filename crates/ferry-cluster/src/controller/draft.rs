//! A change being built: records plus the image as it will be once they
//! are applied. Every record is applied to a scratch copy as it is added,
//! so later decisions in the same change see earlier ones (a registration
//! and the leadership it gets back), and the controller never returns a
//! batch that the apply would refuse.

use ferry_broker::metadata::{MetadataError, MetadataImage, MetadataRecord};

/// Records of one Raft entry under construction.
pub(super) struct Draft {
    image: MetadataImage,
    records: Vec<MetadataRecord>,
}

impl Draft {
    /// A change starting from `image`.
    pub(super) fn new(image: &MetadataImage) -> Self {
        Draft { image: image.clone(), records: Vec::new() }
    }

    /// The image with every record so far applied.
    pub(super) fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Adds `record` if it applies; otherwise the draft is unchanged.
    pub(super) fn push(&mut self, record: MetadataRecord) -> Result<(), MetadataError> {
        let index = self.image.applied_index;
        self.image.apply(index, &record)?;
        self.records.push(record);
        Ok(())
    }

    /// The records so far, in order.
    pub(super) fn records(&self) -> &[MetadataRecord] {
        &self.records
    }

    /// The records, in order.
    pub(super) fn into_records(self) -> Vec<MetadataRecord> {
        self.records
    }
}
