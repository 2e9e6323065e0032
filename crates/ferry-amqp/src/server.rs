//! The AMQP listener: accepts connections, one task each.

use std::sync::Arc;

use ferry_broker::messaging::Vhosts;
use ferry_broker::metrics::{Metrics, ProtocolMetrics};
use ferry_broker::security::Gatekeeper;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::auth::User;
use crate::metrics::AmqpStats;

/// Settings of the AMQP front-end.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// Accounts from the configuration; the default is RabbitMQ's `guest`.
    /// The binary imports them into the user store at start (their
    /// permissions become ACLs); logins check the store.
    pub users: Vec<User>,
    /// Virtual hosts that exist (always at least "/").
    pub vhosts: Vec<String>,
    /// Largest frame offered in connection.tune (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Highest channel number offered in `connection.tune` (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat interval offered, seconds (0: none).
    pub heartbeat: u16,
    /// Largest message body accepted.
    pub max_message_bytes: usize,
    /// Block publishers below this much free disk space (bytes).
    pub disk_free_limit: u64,
    /// Block publishers above this resident memory (bytes); `None`: 40 %
    /// of the machine's memory.
    pub memory_limit: Option<u64>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            users: vec![User::guest()],
            vhosts: vec!["/".to_string()],
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_bytes: ferry_broker::messaging::MAX_MESSAGE_BYTES,
            disk_free_limit: 50_000_000,
            memory_limit: None,
        }
    }
}

/// What every connection shares.
pub struct Server {
    /// The front-end's settings.
    pub config: AmqpConfig,
    /// Virtual hosts with their exchanges, queues and bindings.
    pub vhosts: Arc<Vhosts>,
    /// The current resource alarm (see [`crate::alarm`]).
    pub alarm: watch::Receiver<Option<String>>,
    /// Connections and methods, for /metrics.
    pub metrics: Arc<ProtocolMetrics>,
    /// Publisher confirms, for /metrics.
    pub stats: Arc<AmqpStats>,
    /// Logins and permissions (the one user store and authorizer).
    pub gate: Arc<Gatekeeper>,
}

impl Server {
    /// Starts the resource alarm monitor for `data_dir` (needs a runtime)
    /// and registers the front-end's metrics and queues in `metrics`.
    /// Logins and permissions are `gate`'s (`config.users` are imported
    /// into its store by the binary).
    pub fn new(
        config: AmqpConfig,
        vhosts: Arc<Vhosts>,
        gate: Arc<Gatekeeper>,
        data_dir: std::path::PathBuf,
        metrics: &Metrics,
    ) -> Server {
        let alarm = crate::alarm::monitor(crate::alarm::AlarmConfig {
            data_dir,
            disk_free_limit: config.disk_free_limit,
            memory_limit: config.memory_limit,
        });
        metrics.register_queues(&vhosts);
        let stats = AmqpStats::register(metrics);
        let metrics = metrics.register(ProtocolMetrics::new("amqp", &crate::metrics::method_names(), None));
        Server { config, vhosts, alarm, metrics, stats, gate }
    }
}

/// Serves AMQP clients on `listener` (AMQPS when `tls` is given) until
/// `shutdown` turns true; open connections are then closed with
/// connection.close 320.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ferry_tls::TlsServer>>,
    server: Arc<Server>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (server, shutdown, tls) = (server.clone(), shutdown.clone(), tls.clone());
                    let conn = async move {
                        let (stream, principal) = match tls {
                            None => (ferry_tls::MaybeTls::Plain(stream), None),
                            // The handshake runs in the connection's task:
                            // a slow or garbage one holds up nobody else.
                            Some(tls) => match tls.accept(stream).await {
                                Ok(s) => {
                                    let principal = tls.peer_principal(&s);
                                    (s, principal)
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "tls handshake failed");
                                    return;
                                }
                            },
                        };
                        crate::connection::run(stream, peer, principal, server, shutdown).await;
                    };
                    tasks.spawn(conn.instrument(tracing::info_span!("amqp", %peer)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "amqp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Connections see the shutdown too; give them a moment to say goodbye.
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} })
            .await;
}
