//! Bounds how many segments are open at once, across every log of a
//! [`crate::LogManager`], so ten thousand partitions do not exhaust file
//! descriptors or keep every index in memory.
//!
//! CLOCK replacement: a use only sets the segment's reference bit (no lock on
//! the read and append paths); the sweep runs only when a segment is opened.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use ferry_util::sync::lock;

use crate::segment::Segment;

pub struct SegmentCache {
    capacity: usize,
    ring: Mutex<VecDeque<Weak<Segment>>>,
}

impl SegmentCache {
    pub fn new(capacity: usize) -> Self {
        SegmentCache { capacity: capacity.max(2), ring: Mutex::new(VecDeque::new()) }
    }

    /// Registers a segment that just opened its descriptor, and closes the
    /// least recently used ones beyond capacity.
    pub fn admit(&self, seg: &Arc<Segment>) {
        let mut evicted = Vec::new();
        {
            let mut ring = lock(&self.ring);
            if !seg.cached.swap(true, Ordering::AcqRel) {
                ring.push_back(Arc::downgrade(seg));
            }
            // Each live entry is passed over at most twice (once to clear its
            // bit, once to evict it), so this terminates.
            let mut budget = ring.len() * 2;
            while ring.len() > self.capacity && budget > 0 {
                budget -= 1;
                let Some(weak) = ring.pop_front() else { break };
                let Some(s) = weak.upgrade() else { continue };
                if Arc::ptr_eq(&s, seg) || s.referenced.swap(false, Ordering::AcqRel) {
                    ring.push_back(weak);
                } else {
                    s.cached.store(false, Ordering::Release);
                    evicted.push(s);
                }
            }
        }
        // Release outside the ring lock: it takes the segment's own locks.
        for s in evicted {
            s.release();
        }
    }

    /// Number of segments currently holding a descriptor (approximate).
    pub fn open_segments(&self) -> usize {
        lock(&self.ring).iter().filter(|w| w.strong_count() > 0).count()
    }
}
