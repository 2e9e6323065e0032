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
use crate::registry::Registry;

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

pub use ferry_broker::messaging::access::{Access, Authenticator, Authorizer, Refused};

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
    /// Open connections and subscriptions, for listings.
    pub registry: Arc<Registry>,
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
        let registry = Arc::new(Registry::default());
        let stats = StompStats::register(metrics, registry.clone());
        let metrics = metrics.register(ProtocolMetrics::new("stomp", &crate::metrics::command_names(), None));
        Server { config, vhosts, broker, authenticate, metrics, stats, registry }
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

/// One listening socket of the STOMP front-end.
pub struct Listener {
    /// The bound, listening socket.
    pub socket: TcpListener,
    /// STOMP over WebSocket (path `/stomp`) rather than bare STOMP.
    pub websocket: bool,
    /// TLS first (`tls://`, or `wss://` for WebSocket).
    pub tls: Option<Arc<ferry_tls::TlsServer>>,
}

/// Serves STOMP (and STOMP-over-WebSocket) clients on every listener until
/// `shutdown` turns true; open connections then get an ERROR frame and
/// are closed.
pub async fn serve(listeners: Vec<Listener>, server: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut accept =
        ferry_tls::AcceptAll::new(listeners.into_iter().map(|l| (l.socket, l.tls, usize::from(l.websocket))).collect());
    loop {
        tokio::select! {
            Some(accepted) = accept.next() => match accepted {
                Ok(a) => {
                    let (server, shutdown, peer, websocket) = (server.clone(), shutdown.clone(), a.peer, a.tag == 1);
                    let conn = async move {
                        // TLS, then the WebSocket upgrade, within the connect timeout.
                        let limit = server.config.connect_timeout;
                        let stream = match tokio::time::timeout(limit, a.handshake()).await {
                            Ok(Ok((stream, _))) => stream,
                            Ok(Err(e)) => return tracing::debug!(error = %e, "tls handshake failed"),
                            Err(_) => return tracing::debug!("tls handshake timed out"),
                        };
                        if !websocket {
                            return crate::connection::run(stream, peer, server, shutdown).await;
                        }
                        match tokio::time::timeout(limit, ferry_util::ws::accept(stream, &[WS_ENDPOINT])).await {
                            Ok(Ok((ws, _, _))) => crate::connection::run(ws, peer, server, shutdown).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "websocket handshake failed"),
                            Err(_) => tracing::debug!("websocket handshake timed out"),
                        }
                    };
                    let span = if websocket { tracing::info_span!("stomp-ws", %peer) } else { tracing::info_span!("stomp", %peer) };
                    tasks.spawn(conn.instrument(span));
                }
                Err(e) => tracing::warn!(error = %e, "stomp accept failed"),
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
