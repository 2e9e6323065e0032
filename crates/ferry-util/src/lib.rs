//! Small helpers every Ferry crate shares, kept in one place so each has one
//! implementation: wall-clock time in milliseconds ([`time`]) and locks that
//! survive a panicking holder ([`sync`]). No dependencies, no I/O.

pub mod sync;
pub mod time;
