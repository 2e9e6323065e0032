//! The AMQP listener: accepts connections, one task each.

use std::sync::Arc;

use ferry_broker::messaging::Vhosts;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::User;

/// Settings of the AMQP front-end.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    pub users: Vec<User>,
    /// Virtual hosts that exist (always at least "/").
    pub vhosts: Vec<String>,
    /// Largest frame offered in connection.tune (RabbitMQ: 131072).
    pub frame_max: u32,
    pub channel_max: u16,
    /// Heartbeat interval offered, seconds (0: none).
    pub heartbeat: u16,
    /// Largest message body accepted.
    pub max_message_bytes: usize,
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
        }
    }
}

/// What every connection shares.
pub struct Server {
    pub config: AmqpConfig,
    pub vhosts: Arc<Vhosts>,
}

/// Serves AMQP clients on `listener` until `shutdown` turns true; open
/// connections are then closed with connection.close 320.
pub async fn serve(listener: TcpListener, server: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tasks.spawn(crate::connection::run(stream, peer, server.clone(), shutdown.clone()));
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
