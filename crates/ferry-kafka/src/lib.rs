//! `ferry-kafka`: the Kafka wire-protocol front-end. Frames in, handlers
//! calling `ferry-broker`, responses out (Fetch data by sendfile; by read
//! and write on TLS listeners).

mod errors;
mod handlers;
mod in_order;
mod listener;
mod response;
mod sasl;
mod server;

pub use listener::{ListenerSpec, SecurityProtocol};
pub use sasl::{KafkaSecurity, SaslMechanism};
pub use server::{Ctx, KafkaConfig, serve};

/// Runs one request frame (without its size prefix) through the decoder
/// and handlers, as a connection would, and reports whether the connection
/// would stay open. For fuzzing and tests; servers use [`serve`].
pub async fn handle_frame(ctx: &std::sync::Arc<Ctx>, frame: bytes::Bytes) -> bool {
    if frame.len() < 8 {
        return false;
    }
    let anonymous = std::sync::Arc::new(ferry_broker::security::Principal::anonymous());
    match handlers::handle(ctx, frame, "/127.0.0.1", &anonymous).await {
        response::Reply::Ready(r) => !r.chunks.is_empty(),
        response::Reply::Later(f) | response::Reply::Inline(f) => !f.await.chunks.is_empty(),
        response::Reply::None => true,
        response::Reply::Close(_) => false,
    }
}
