//! `ferry-admin`: the broker's HTTP side. Prometheus `/metrics`, health
//! checks and a JSON REST admin API over `ferry-broker` (docs/operations.md
//! lists every endpoint).
//!
//! Errors are JSON `{"error": "...", "code": <HTTP status>}` for every
//! failure, including bodies, queries and routes the router itself refuses.

mod api;
mod cluster;
mod error;
mod tls_listener;

pub use tls_listener::TlsListener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use ferry_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The broker the API reads and administers.
    pub broker: Arc<Broker>,
    /// Whether the broker takes client traffic (listeners bound, not
    /// shutting down): `/v1/health/ready`.
    pub ready: Arc<AtomicBool>,
}

impl AdminState {
    /// State for `broker`, not ready until [`AdminState::set_ready`].
    /// Registers the cluster metric families (`ferry_controller_leader`,
    /// `ferry_raft_*`, `ferry_cluster_nodes`) with the broker's metrics.
    pub fn new(broker: Arc<Broker>) -> AdminState {
        cluster::ClusterCollector::register(&broker);
        AdminState { broker, ready: Arc::new(AtomicBool::new(false)) }
    }

    /// Sets what `/v1/health/ready` answers (true once listeners are bound,
    /// false again on shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The HTTP routes.
pub fn router(state: AdminState) -> Router {
    api::routes().with_state(state)
}

/// Serves HTTP on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ferry_tls::TlsServer>>,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, tls = tls.is_some(), "http listener serving");
    let stopped = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
    };
    match tls {
        None => axum::serve(listener, router(state)).with_graceful_shutdown(stopped).await,
        Some(tls) => axum::serve(TlsListener::new(listener, tls), router(state)).with_graceful_shutdown(stopped).await,
    }
}
