//! A starting node stays fenced until it has caught up with the metadata
//! log (KRaft's rule for a starting broker, issue #16, docs/reliability.md
//! Found 3): the images its state machine applies while it replays its own
//! Raft log and catches up with the quorum are older than what the
//! controller has committed, and a broker reconciling from them leads (and
//! loads coordinators for, and takes writes on) partitions in epochs long
//! gone. So the broker gets no image until this node's registration is
//! applied locally (everything committed before it is, too); then the
//! newest image, and every later one as it comes.

use std::sync::{Arc, Mutex};

use ferry_broker::metadata::MetadataImage;
use ferry_util::sync::lock;

type Apply = Box<dyn Fn(Arc<MetadataImage>) + Send + Sync>;

/// Holds the images a starting node's state machine applies until it is
/// [open](ImageGate::open).
pub(crate) struct ImageGate {
    state: Mutex<Gate>,
    apply: Apply,
}

#[derive(Default)]
struct Gate {
    open: bool,
    /// The newest image offered while closed.
    held: Option<Arc<MetadataImage>>,
}

impl ImageGate {
    /// A closed gate in front of `apply` (the broker's `apply_image`).
    pub(crate) fn new(apply: impl Fn(Arc<MetadataImage>) + Send + Sync + 'static) -> ImageGate {
        ImageGate { state: Mutex::default(), apply: Box::new(apply) }
    }

    /// An image the state machine applied: applied at once if the gate is
    /// open, else kept (only the newest). Applied under the gate's lock, so
    /// images reach the broker in order. Blocking.
    pub(crate) fn offer(&self, image: Arc<MetadataImage>) {
        let mut gate = lock(&self.state);
        if gate.open {
            (self.apply)(image);
        } else if gate.held.as_ref().is_none_or(|h| h.applied_index <= image.applied_index) {
            gate.held = Some(image);
        }
    }

    /// This node's registration is applied locally: the newest image held
    /// goes to the broker, and every later one as it comes. Blocking.
    pub(crate) fn open(&self) {
        let mut gate = lock(&self.state);
        if gate.open {
            return;
        }
        gate.open = true;
        if let Some(image) = gate.held.take() {
            (self.apply)(image);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(index: u64) -> Arc<MetadataImage> {
        Arc::new(MetadataImage { applied_index: index, ..MetadataImage::default() })
    }

    #[test]
    fn nothing_reaches_the_broker_before_the_gate_opens_then_the_newest_and_the_rest() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = ImageGate::new({
            let seen = seen.clone();
            move |i: Arc<MetadataImage>| lock(&seen).push(i.applied_index)
        });
        // The replay of the local log: old images, nothing applied.
        for i in [3, 4, 5] {
            gate.offer(image(i));
        }
        assert!(lock(&seen).is_empty(), "a starting node reconciles from no stale image");
        gate.open();
        gate.open();
        gate.offer(image(6));
        gate.offer(image(7));
        assert_eq!(*lock(&seen), [5, 6, 7]);
    }
}
