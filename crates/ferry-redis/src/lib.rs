//! `ferry-redis`: the Redis (RESP2 / RESP3) front-end over `ferry-broker`:
//! streams are topics, consumer groups are cursors with pending entries,
//! lists are durable queues, pub/sub is a node-local hub. See
//! docs/protocols.md, "## Redis".

mod commands;
mod connection;
pub mod error;
pub mod glob;
mod group_commit;
pub mod list_appender;
pub mod metrics;
pub mod pubsub;
pub mod resp;
mod server;
mod session;
pub mod streams;

pub use error::CommandError;
pub use resp::{Limits, ProtocolError, Reply};
pub use server::{Access, Authenticator, Authorizer, RedisConfig, Server, serve};
