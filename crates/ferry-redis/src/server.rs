//! The Redis listener: settings, what connections share, the accept loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Broker;
use ferry_broker::messaging::Vhosts;
use ferry_broker::metrics::{Metrics, ProtocolMetrics};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::list_appender::ListAppenders;
use crate::metrics::RedisStats;
use crate::pubsub::Hub;
use crate::resp::Limits;
use crate::streams::Streams;

/// Settings of the Redis front-end.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Request size bounds.
    pub limits: Limits,
    /// The virtual host whose durable queues lists are.
    pub vhost: String,
    /// The user a connection acts as before (or without) AUTH, like
    /// Redis's `default` user; `None`: commands need AUTH first
    /// (`-NOAUTH`).
    pub default_login: Option<(String, String)>,
    /// Pub/sub messages queued for one subscriber before it is
    /// disconnected for reading too slowly (Redis's
    /// `client-output-buffer-limit pubsub`).
    pub pubsub_buffer: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            limits: Limits::default(),
            vhost: "/".into(),
            default_login: Some(("guest".into(), "guest".into())),
            pubsub_buffer: 4096,
        }
    }
}

/// Lists are checked as `("queue", list)`, streams as `("topic", stream)`.
pub use ferry_broker::messaging::access::{Access, Authenticator, Authorizer};

/// What every connection shares.
pub struct Server {
    /// The front-end's settings.
    pub config: RedisConfig,
    /// Virtual hosts: lists are queues of [`RedisConfig::vhost`].
    pub vhosts: Arc<Vhosts>,
    /// The broker's topics: streams are topics.
    pub broker: Arc<Broker>,
    /// The login check.
    pub authenticate: Authenticator,
    /// Connections and commands, for /metrics.
    pub metrics: Arc<ProtocolMetrics>,
    /// Entries, list elements, pub/sub messages, for /metrics.
    pub stats: Arc<RedisStats>,
    /// Pub/sub channels and their subscribers.
    pub hub: Hub,
    /// Streams this node serves, with their consumer groups.
    pub streams: Arc<Streams>,
    /// LPUSH / RPUSH group commit, one task per list.
    pub lists: ListAppenders,
}

impl Server {
    /// Registers the front-end's metrics in `metrics`; streams' XDEL'd ids
    /// are kept under `data_dir` (`redis-streams/`), consumer groups by the
    /// broker (`internal/redis-groups/`).
    pub fn new(
        config: RedisConfig,
        vhosts: Arc<Vhosts>,
        broker: Arc<Broker>,
        authenticate: Authenticator,
        data_dir: PathBuf,
        metrics: &Metrics,
    ) -> std::io::Result<Server> {
        let stats = RedisStats::register(metrics);
        let metrics = metrics.register(ProtocolMetrics::new("redis", &crate::metrics::command_names(), None));
        let streams = Streams::open(data_dir.join("redis-streams"), broker.clone()).map_err(std::io::Error::other)?;
        Ok(Server {
            config,
            vhosts,
            broker,
            authenticate,
            metrics,
            stats,
            hub: Hub::default(),
            streams,
            lists: ListAppenders::default(),
        })
    }
}

/// Serves Redis clients on every listener (TLS ones with their
/// `TlsServer`) until `shutdown` turns true; then stream state and consumer
/// groups are saved and connections closed.
pub async fn serve(
    listeners: Vec<(TcpListener, Option<Arc<ferry_tls::TlsServer>>)>,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let saver = tokio::spawn(Streams::save_periodically(server.streams.clone()));
    let mut accept = ferry_tls::AcceptAll::new(listeners.into_iter().map(|(l, tls)| (l, tls, 0)).collect());
    loop {
        tokio::select! {
            Some(accepted) = accept.next() => match accepted {
                Ok(a) => {
                    let (server, shutdown, peer) = (server.clone(), shutdown.clone(), a.peer);
                    let conn = async move {
                        match a.handshake().await {
                            Ok((stream, _)) => crate::connection::run(stream, peer, server, shutdown).await,
                            Err(e) => tracing::debug!(error = %e, "tls handshake failed"),
                        }
                    };
                    tasks.spawn(conn.instrument(tracing::info_span!("redis", %peer)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    saver.abort();
    if let Err(e) = server.streams.save_all(true) {
        tracing::warn!(error = %e, "saving redis stream state failed");
    }
    if let Err(e) = server.streams.groups.flush() {
        tracing::warn!(error = %e, "saving redis consumer groups failed");
    }
}
