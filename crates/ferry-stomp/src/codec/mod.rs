//! The STOMP wire format.

pub mod frame;

pub use frame::{Decoder, Frame, FrameError, Item, Limits, Version, encode};
