//! `ferry-amqp`: the AMQP 0-9-1 front-end (RabbitMQ clients) over
//! `ferry-broker`'s queues and exchanges. See docs/protocols.md.

pub mod alarm;
pub mod auth;
mod channel;
mod confirms;
mod connection;
mod death;
mod delivery;
pub mod error;
pub mod frame;
mod kafka;
mod metrics;
mod outbox;
mod server;
mod values;

pub use alarm::AlarmConfig;
pub use auth::{Permissions, User};
pub use death::death_hook;
pub use kafka::hooks;
pub use server::{AmqpConfig, Server, serve};
