//! `ferry-admin`: the broker's HTTP side. Prometheus `/metrics`, health
//! checks and a JSON REST admin API over `ferry-broker` (docs/operations.md
//! lists every endpoint).
//!
//! Errors are JSON `{"error": "...", "code": <HTTP status>}` for every
//! failure, including bodies, queries and routes the router itself refuses.

mod api;
mod cluster;
mod error;
mod nodes;
pub mod security;
mod tls_listener;
mod vhosts;
mod websocket;

pub use tls_listener::TlsListener;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::serve::ListenerExt;
use ferry_broker::Broker;
use ferry_util::ws::Route;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;

/// The endpoints front-ends fill with [`AdminState::set_listing`].
pub const LISTINGS: &[&str] = &["/v1/stomp/connections", "/v1/stomp/subscriptions"];

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The broker the API reads and administers.
    pub broker: Arc<Broker>,
    /// Whether the broker takes client traffic (listeners bound, not
    /// shutting down): `/v1/health/ready`.
    pub ready: Arc<AtomicBool>,
    /// WebSocket protocols served on their paths (STOMP at `/stomp`).
    ws_routes: Arc<RwLock<Vec<Route>>>,
    /// Who may use the API; unset: everyone (tests of this crate).
    auth: Arc<std::sync::OnceLock<security::HttpAuth>>,
    /// What front-ends list about themselves, by endpoint path.
    listings: Arc<RwLock<HashMap<String, Listing>>>,
}

/// A front-end's listing (its connections, its subscriptions) as JSON,
/// made at each request. The binary hands them over, so this crate
/// imports no front-end.
pub type Listing = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

impl AdminState {
    /// State for `broker`, not ready until [`AdminState::set_ready`].
    /// Registers the cluster metric families (`ferry_controller_leader`,
    /// `ferry_raft_*`, `ferry_cluster_nodes`) with the broker's metrics.
    pub fn new(broker: Arc<Broker>) -> AdminState {
        cluster::ClusterCollector::register(&broker);
        AdminState {
            broker,
            ready: Arc::new(AtomicBool::new(false)),
            ws_routes: Arc::default(),
            auth: Arc::default(),
            listings: Arc::default(),
        }
    }

    /// Turns on authentication (once; see [`security`]).
    pub fn set_auth(&self, auth: security::HttpAuth) {
        let _ = self.auth.set(auth);
    }

    /// Serves `routes` over WebSocket on their paths (the front-ends start
    /// after the HTTP listener). The router answers WebSocket upgrades on
    /// `/stomp` only.
    pub fn set_ws_routes(&self, routes: Vec<Route>) {
        *self.ws_routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = routes;
    }

    fn ws_route(&self, path: &str) -> Option<Route> {
        self.ws_routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|r| r.endpoint.path == path)
            .cloned()
    }

    /// Serves `listing` at `path`, one of the front-end listing endpoints
    /// ([`LISTINGS`]); until then (the front-end is off) that path answers 404.
    pub fn set_listing(&self, path: &str, listing: Listing) {
        self.listings.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(path.to_string(), listing);
    }

    fn listing(&self, path: &str) -> Option<Listing> {
        self.listings.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(path).cloned()
    }

    /// Sets what `/v1/health/ready` answers (true once listeners are bound,
    /// false again on shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The HTTP routes.
pub fn router(state: AdminState) -> Router {
    let auth = axum::middleware::from_fn_with_state(state.clone(), security::require_login);
    api::routes().layer(auth).with_state(state)
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
    // The peer's address reaches WebSocket protocols (loopback-only users),
    // over HTTPS as well: `TlsListener` hands out the TCP peer address.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
        Some(tls) => {
            // axum's `ConnectInfo<SocketAddr>` is implemented for its own
            // TcpListener and for any listener behind `tap_io` (a no-op here).
            let listener = TlsListener::new(listener, tls).tap_io(|_| {});
            axum::serve(listener, app).with_graceful_shutdown(stopped).await
        }
    }
}
