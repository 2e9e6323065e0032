//! The STOMP listener: settings, what connections share, the accept loop.

use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Broker;
use ferry_broker::messaging::Vhosts;
use ferry_broker::metrics::{Metrics, ProtocolMetrics};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::codec::Limits;
use crate::metrics::StompStats;

/// Settings of the STOMP front-end.
#[derive(Clone, Debug)]
pub struct StompConfig {
    /// Heart-beats the server offers, ms: (sends at least every, wants
    /// from the client at least every); 0 = none.
    pub heartbeat: (u32, u32),
    /// Frame size bounds.
    pub limits: Limits,
    /// The vhost for a CONNECT whose `host` names no vhost the broker
    /// serves (clients often send the server's host name there).
    pub default_vhost: String,
    /// Credentials for a CONNECT without `login` (RabbitMQ's
    /// `default_user`); `None`: such a CONNECT is refused.
    pub default_login: Option<(String, String)>,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Most bytes one transaction may hold.
    pub max_transaction_bytes: usize,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            heartbeat: (10_000, 10_000),
            limits: Limits::default(),
            default_vhost: "/".into(),
            default_login: Some(("guest".into(), "guest".into())),
            connect_timeout: Duration::from_secs(10),
            max_transaction_bytes: 64 << 20,
        }
    }
}

pub use ferry_broker::messaging::access::{Access, Authenticator, Authorizer};

/// What every connection shares.
pub struct Server {
    /// The front-end's settings.
    pub config: StompConfig,
    /// Virtual hosts with their exchanges, queues and bindings.
    pub vhosts: Arc<Vhosts>,
    /// The broker's topics, for `/kafka/` destinations; `None`: unavailable.
    pub broker: Option<Arc<Broker>>,
    /// The login check.
    pub authenticate: Authenticator,
    /// Connections and frames, for /metrics.
    pub metrics: Arc<ProtocolMetrics>,
    /// Deliveries, acks, errors, receipts, for /metrics.
    pub stats: Arc<StompStats>,
}

impl Server {
    /// Registers the front-end's metrics in `metrics`.
    pub fn new(
        config: StompConfig,
        vhosts: Arc<Vhosts>,
        broker: Option<Arc<Broker>>,
        authenticate: Authenticator,
        metrics: &Metrics,
    ) -> Server {
        let stats = StompStats::register(metrics);
        let metrics = metrics.register(ProtocolMetrics::new("stomp", &crate::metrics::command_names(), None));
        Server { config, vhosts, broker, authenticate, metrics, stats }
    }
}

/// STOMP over WebSocket: path `/stomp`, the subprotocols STOMP clients
/// (stomp.js, RabbitMQ Web-STOMP's) offer, frames in text or binary
/// messages (ours go out binary).
pub const WS_ENDPOINT: ferry_util::ws::Endpoint = ferry_util::ws::Endpoint {
    path: "/stomp",
    protocols: &["v12.stomp", "v11.stomp", "v10.stomp", "stomp"],
    accept_text: true,
};

/// Serves STOMP clients on `tcp` and STOMP-over-WebSocket clients on `ws`
/// (either may be absent) until `shutdown` turns true; open connections
/// then get an ERROR frame and are closed.
pub async fn serve(
    tcp: Option<TcpListener>,
    ws: Option<TcpListener>,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(ws) = ws {
        let routes = vec![ws_route(server.clone(), shutdown.clone())];
        tasks.spawn(ferry_util::ws::serve(ws, routes, server.config.connect_timeout, shutdown.clone()));
    }
    loop {
        tokio::select! {
            accepted = accept(tcp.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = crate::connection::run(stream, peer, server.clone(), shutdown.clone());
                    tasks.spawn(conn.instrument(tracing::info_span!("stomp", %peer)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stomp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
}

/// STOMP at [`WS_ENDPOINT`] (`/stomp`) for any WebSocket listener: its own
/// (`--stomp-ws-listen`), the MQTT one's, the HTTP one's. Connections end
/// when `shutdown` turns true.
pub fn ws_route(server: Arc<Server>, shutdown: watch::Receiver<bool>) -> ferry_util::ws::Route {
    ferry_util::ws::Route {
        endpoint: WS_ENDPOINT,
        handler: Arc::new(move |ws, peer| {
            let conn = crate::connection::run(ws, peer, server.clone(), shutdown.clone());
            Box::pin(conn.instrument(tracing::info_span!("stomp-ws", %peer)))
        }),
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
