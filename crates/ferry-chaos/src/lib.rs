//! Fault tests for Ferry (issue #16): the history clients write while
//! faults are injected ([`history`]), the checker that finds anomalies in
//! it ([`checker`]), the TCP proxy between cluster nodes that cuts, delays
//! and drops links ([`proxy`]) and the seeded fault schedule ([`schedule`]).
//! The processes and the Kafka workloads live in the `ferry` crate's
//! integration tests (crates/ferry/tests/it/chaos.rs), where the real
//! clients are.

pub mod checker;
pub mod history;
pub mod proxy;
pub mod schedule;
