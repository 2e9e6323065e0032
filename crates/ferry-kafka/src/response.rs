//! Responses as handlers build them: encoded bytes plus, for Fetch, file
//! ranges sent with `sendfile`.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use ferry_broker::ReadSlice;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

pub enum Chunk {
    Bytes(Bytes),
    File(ReadSlice),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(s) => s.len as usize,
        }
    }
}

/// A response frame's contents (the size prefix is added when sending).
pub struct Response {
    pub chunks: Vec<Chunk>,
}

/// What a handler hands back to the connection.
pub enum Reply {
    Ready(Response),
    /// The rest of the work, run concurrently; answered in request order.
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
    /// Work the connection finishes before it takes the next request (its
    /// effects must be in order), e.g. blocking file work moved off the
    /// async workers.
    Inline(Pin<Box<dyn Future<Output = Response> + Send>>),
    /// No response (produce with acks=0).
    None,
    /// A protocol violation that leaves the stream unusable.
    Close(String),
}

impl Reply {
    /// Runs the deferred parts of the reply inside `span`, so what they log
    /// is attributed to their request. Free when the span is disabled.
    pub fn in_span(self, span: tracing::Span) -> Reply {
        use tracing::Instrument;
        if span.is_disabled() {
            return self;
        }
        match self {
            Reply::Later(fut) => Reply::Later(Box::pin(fut.instrument(span))),
            Reply::Inline(fut) => Reply::Inline(Box::pin(fut.instrument(span))),
            other => other,
        }
    }
}

/// Encodes `body` as the response to a request of `api_key`/`version`.
/// Header versions come from the crate (shared/DEPENDENCIES.md §1 pitfall 2).
pub fn encode<R: Encodable + HeaderVersion>(api_key: ApiKey, version: i16, correlation_id: i32, body: &R) -> Response {
    let mut buf = BytesMut::with_capacity(64);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encoded =
        header.encode(&mut buf, api_key.response_header_version(version)).and_then(|_| body.encode(&mut buf, version));
    if let Err(e) = encoded {
        // Only reachable through a handler bug (a field set that the version
        // cannot carry). An empty response makes the writer close the
        // connection rather than leave the client waiting.
        tracing::error!(?api_key, version, error = %e, "response encoding failed");
        return Response { chunks: Vec::new() };
    }
    Response { chunks: vec![Chunk::Bytes(buf.freeze())] }
}
