//! `ferry-stomp`: the STOMP 1.0 / 1.1 / 1.2 front-end over `ferry-broker`'s
//! queues and exchanges (the machinery the AMQP front-end uses, so STOMP,
//! AMQP, MQTT and Kafka clients read each other's messages). See
//! docs/protocols.md, "## STOMP".

pub mod codec;
mod connection;
pub mod destinations;
pub mod error;
pub mod headers;
pub mod metrics;
mod receipts;
pub mod registry;
mod server;
pub mod subscribe;
pub mod transactions;

pub use codec::{Frame, FrameError, Limits, Version};
pub use error::StompError;
pub use server::{Access, Authenticator, Authorizer, Listener, Server, StompConfig, WS_ENDPOINT, serve, ws_route};
