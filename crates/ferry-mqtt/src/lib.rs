//! `ferry-mqtt`: the MQTT 3.1.1 / 5.0 front-end. Connections speak MQTT;
//! sessions, routing and retained messages live in [`hub`]; storage (the
//! retained store, durable session queues, the Kafka bridge) is
//! ferry-broker's. Codec types stay behind [`packet`].

pub mod auth;
pub mod codec;
pub mod config;
pub mod connection;
pub mod hub;
pub mod message;
pub mod metrics;
pub mod packet;
mod server;
pub mod session;
pub mod topic_tree;

pub use config::MqttConfig;
pub use hub::Hub;
pub use server::{Listener, serve};
