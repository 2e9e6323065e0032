//! Declaration and binding arguments, comparable as an equivalence.

use serde::{Deserialize, Serialize};

use crate::messaging::{HeaderValue, Headers};

/// Declaration or binding arguments. Equality compares floats by their
/// bits, so it is an equivalence (the image is `Eq`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Arguments(pub Headers);

impl PartialEq for Arguments {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
    }
}

/// Value equality with floats compared by their bits.
pub(super) fn same_value(a: &HeaderValue, b: &HeaderValue) -> bool {
    match (a, b) {
        (HeaderValue::Float(x), HeaderValue::Float(y)) => x.to_bits() == y.to_bits(),
        (a, b) => a == b,
    }
}

impl Eq for Arguments {}
