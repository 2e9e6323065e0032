//! Accepts MQTT connections over TCP and WebSocket, expires sessions, runs the
//! Kafka-to-MQTT bridge rules, and on shutdown waits for connections to
//! hand their sessions back before flushing session queues.

use std::sync::Arc;
use std::time::Duration;

use ferry_util::ws::{Endpoint, Io, Route};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::hub::Hub;
use crate::message::Message;

/// MQTT over WebSocket: path `/mqtt`, subprotocol `mqtt`, binary frames only.
const WS: ferry_util::ws::Endpoint =
    ferry_util::ws::Endpoint { path: "/mqtt", protocols: &["mqtt"], accept_text: false };

/// One listening socket of the MQTT front-end.
pub struct Listener {
    /// The bound, listening socket.
    pub socket: TcpListener,
    /// MQTT over WebSocket (path `/mqtt`) rather than bare MQTT.
    pub websocket: bool,
    /// TLS first (MQTTS, or `wss://` for WebSocket).
    pub tls: Option<Arc<ferry_tls::TlsServer>>,
}

type Accepted =
    (std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>, bool, Option<Arc<ferry_tls::TlsServer>>);

/// Serves MQTT clients on every listener until `shutdown` turns true. The
/// WebSocket listeners (ws:// and wss://) also hand requests for the paths
/// of `ws_routes` (another protocol's, e.g. `/stomp`) to their handlers;
/// shutdown waits for those connections too.
pub async fn serve(
    listeners: Vec<Listener>,
    ws_routes: Vec<Route>,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let endpoints: Arc<[Endpoint]> = std::iter::once(WS).chain(ws_routes.iter().map(|r| r.endpoint)).collect();
    let ws_routes: Arc<[Route]> = ws_routes.into();
    let mut tasks = JoinSet::new();
    // One accept loop per socket, all feeding this one.
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel::<Accepted>(64);
    for l in listeners {
        let (tx, mut stop) = (accepted_tx.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    a = l.socket.accept() => if tx.send((a, l.websocket, l.tls.clone())).await.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
        });
    }
    drop(accepted_tx);
    {
        let (hub, mut stop) = (hub.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => hub.expire_sessions(),
                    _ = stop.changed() => return,
                }
            }
        });
    }
    for rule in hub.config.from_kafka.iter().cloned() {
        let h = hub.clone();
        let kafka_topic = rule.topic.clone();
        let on_record = move |r: ferry_broker::stored::StoredRecord| {
            let key = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            let topic = rule.mqtt_topic.replace("{key}", &key).replace("{topic}", &rule.topic);
            if !crate::topic_tree::valid_name(&topic) {
                return;
            }
            let mut record = r;
            record.key = Some(topic.into_bytes());
            let Some(mut m) = Message::from_record(record) else { return };
            m.qos = rule.qos.min(2);
            m.retain = false;
            if m.timestamp <= 0 {
                m.timestamp = ferry_util::time::now_ms();
            }
            if let Err(e) = h.publish(Arc::new(m)) {
                tracing::warn!(error = %e, "kafka-to-mqtt bridge publish failed");
            }
        };
        tasks.spawn(ferry_broker::bridge::tail(hub.broker.clone(), kafka_topic, on_record, shutdown.clone()));
    }
    loop {
        let (accepted, websocket, tls) = tokio::select! {
            Some(a) = accepted_rx.recv() => a,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (hub, shutdown) = (hub.clone(), shutdown.clone());
                let (endpoints, ws_routes) = (endpoints.clone(), ws_routes.clone());
                // One span per connection; CONNECT fills in the client id.
                let span = tracing::info_span!("mqtt", %peer, client_id = tracing::field::Empty);
                tasks.spawn(
                    async move {
                        // TLS first (in this connection's task: a slow or
                        // garbage handshake holds up nobody else).
                        let (stream, principal) = match tls {
                            None => (ferry_tls::MaybeTls::Plain(stream), None),
                            Some(tls) => match tls.accept(stream).await {
                                Ok(s) => {
                                    let principal = tls.peer_principal(&s).map(Arc::from);
                                    (s, principal)
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "tls handshake failed");
                                    return;
                                }
                            },
                        };
                        let r = if websocket {
                            let io: Box<dyn Io> = Box::new(stream);
                            match tokio::time::timeout(Duration::from_secs(10), ferry_util::ws::accept(io, &endpoints))
                                .await
                            {
                                Ok(Ok((ws, 0, _))) => {
                                    crate::connection::run_as(ws, peer, principal, hub, shutdown).await
                                }
                                Ok(Ok((ws, i, _))) => {
                                    (ws_routes[i - 1].handler)(ws, peer).await;
                                    return;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "websocket handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            }
                        } else {
                            crate::connection::run_as(stream, peer, principal, hub, shutdown).await
                        };
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "mqtt connection closed");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Connections saw the same signal: give them a moment to detach.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    let hub2 = hub.clone();
    let _ = tokio::task::spawn_blocking(move || hub2.flush_queues()).await;
}
