//! Accepts MQTT connections over TCP, expires sessions, runs the
//! Kafka-to-MQTT bridge rules, and on shutdown waits for connections to
//! hand their sessions back before flushing session queues.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::hub::Hub;
use crate::message::{Message, now_ms};

/// Serves MQTT clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
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
            if !ferry_broker::topic_tree::valid_name(&topic) {
                return;
            }
            let mut record = r;
            record.key = Some(topic.into_bytes());
            let Some(mut m) = Message::from_record(record) else { return };
            m.qos = rule.qos.min(2);
            m.retain = false;
            if m.timestamp <= 0 {
                m.timestamp = now_ms();
            }
            if let Err(e) = h.publish(Arc::new(m)) {
                tracing::warn!(error = %e, "kafka-to-mqtt bridge publish failed");
            }
        };
        tasks.spawn(ferry_broker::bridge::tail(hub.broker.clone(), kafka_topic, on_record, shutdown.clone()));
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (hub, shutdown) = (hub.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        if let Err(e) = crate::connection::run(stream, peer, hub, shutdown).await {
                            tracing::debug!(%peer, error = %e, "mqtt connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Connections saw the same signal: give them a moment to detach.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    let hub2 = hub.clone();
    let _ = tokio::task::spawn_blocking(move || hub2.flush_queues()).await;
}
