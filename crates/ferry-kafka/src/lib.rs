//! `ferry-kafka`: the Kafka wire-protocol front-end. Frames in, handlers
//! calling `ferry-broker`, responses out (Fetch data by sendfile).

mod errors;
mod handlers;
mod response;
mod server;

pub use server::{Ctx, KafkaConfig, serve};
