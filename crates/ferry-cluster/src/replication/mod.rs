//! Partition replication over the cluster port (issue #15): followers
//! fetch from leaders (`fetcher.rs`), leaders answer (`leader.rs`) and keep
//! each partition's ISR in line with its followers' progress through the
//! controller (AlterPartition). The rules themselves (high watermark, ISR
//! shrink and expand) are `ferry_broker::replica`'s, pure and tested there.

pub(crate) mod fetch_binary;
mod fetcher;
mod in_flight;
mod leader;
mod message;
#[cfg(test)]
mod sim;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ferry_broker::Broker;
use ferry_broker::metadata::{Controller, ControllerRequest};
use ferry_util::sync::lock;
use ferry_util::time::now_ms_u64;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use leader::{serve_epoch_end, serve_fetch};
pub use message::{
    Chunk, EpochAnswer, EpochQuery, FetchPartition, FetchedInfo, FetchedPartition, Records, ReplicaFetchRequest,
    ReplicaFetchResponse, decode_fetch_response, decode_fetch_response_with, encode_fetch_response,
    encode_fetch_response_chunks, encode_fetch_response_chunks_with, encode_fetch_response_with,
};

use crate::transport::Pool;

/// Replication settings (broker-wide).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower not caught up for this long
    /// leaves the ISR.
    pub lag_time_max: Duration,
    /// `replica.fetch.wait.max.ms`: how long a fetch waits at the leader.
    pub fetch_max_wait: Duration,
    /// `replica.fetch.response.max.bytes`.
    pub fetch_max_bytes: usize,
    /// How often leaders look at their ISRs.
    pub isr_check_interval: Duration,
    /// An AlterPartition not yet in the image is sent again after this.
    pub isr_retry: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            lag_time_max: Duration::from_secs(30),
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 8 << 20,
            isr_check_interval: Duration::from_millis(250),
            isr_retry: Duration::from_secs(5),
        }
    }
}

/// The node's replication: a fetcher per leader node this node follows,
/// and the leaders' ISR checks.
pub(crate) struct Replicator {
    broker: Weak<Broker>,
    controller: Weak<dyn Controller>,
    /// Its own connections, so a large fetch never delays a Raft heartbeat.
    pool: Pool,
    config: ReplicationConfig,
    fetchers: Mutex<BTreeMap<i32, JoinHandle<()>>>,
    /// The AlterPartition requests not answered yet.
    in_flight: in_flight::InFlight,
}

impl Replicator {
    pub(crate) fn new(
        broker: Weak<Broker>,
        controller: Weak<dyn Controller>,
        pool: Pool,
        config: ReplicationConfig,
    ) -> Arc<Replicator> {
        Arc::new(Replicator {
            broker,
            controller,
            pool,
            config,
            fetchers: Mutex::default(),
            in_flight: in_flight::InFlight::default(),
        })
    }

    /// Runs until `stop`: starts a fetcher for each leader node that local
    /// partitions follow (again if the last one ended), and asks the
    /// controller for the ISR changes the local leaders call for.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            let Some(broker) = self.broker.upgrade() else { break };
            self.start_fetchers(&broker, &stop);
            self.check_isrs(&broker);
            drop(broker);
            tokio::select! {
                () = tokio::time::sleep(self.config.isr_check_interval) => {}
                _ = stop.changed() => break,
            }
        }
        for (_, task) in std::mem::take(&mut *lock(&self.fetchers)) {
            task.abort();
        }
    }

    fn start_fetchers(self: &Arc<Self>, broker: &Broker, stop: &watch::Receiver<bool>) {
        let mut leaders = std::collections::BTreeSet::new();
        for topic in broker.hosted_topics() {
            for p in topic.partitions() {
                if let Some(f) = p.follower_state().filter(|f| f.leader >= 0) {
                    leaders.insert(f.leader);
                }
            }
        }
        let mut fetchers = lock(&self.fetchers);
        fetchers.retain(|_, task| !task.is_finished());
        for leader in leaders {
            fetchers.entry(leader).or_insert_with(|| tokio::spawn(fetcher::run(self.clone(), leader, stop.clone())));
        }
    }

    /// Sends the ISR changes due, except for partitions whose previous
    /// request is still in flight (`in_flight.rs`); refusals are logged as
    /// one line per round (each at debug).
    fn check_isrs(&self, broker: &Broker) {
        let due: Vec<_> = isr_changes(broker, &self.config, now_ms_u64())
            .into_iter()
            .filter_map(|(name, index, request)| {
                let ControllerRequest::AlterPartition { topic_id, partition, isr, .. } = &request else { return None };
                let sent = self.in_flight.send((*topic_id, *partition))?;
                tracing::info!(topic = %name, partition = index, ?isr, "asking for an ISR change");
                Some((name, index, request, sent))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let Some(controller) = self.controller.upgrade() else { return };
        tokio::spawn(async move {
            let mut answers = tokio::task::JoinSet::new();
            for (name, index, request, sent) in due {
                let controller = controller.clone();
                answers.spawn(async move {
                    let answer = controller.submit(request).await;
                    drop(sent);
                    (name, index, answer)
                });
            }
            let (mut asked, mut refused, mut first) = (0usize, 0usize, None);
            while let Some(answer) = answers.join_next().await {
                asked += 1;
                if let Ok((name, index, Err(e))) = answer {
                    tracing::debug!(topic = %name, partition = index, error = %e, "ISR change refused");
                    refused += 1;
                    first.get_or_insert_with(|| format!("{name}-{index}: {e}"));
                }
            }
            if let Some(first) = first {
                tracing::info!(refused, asked, first, "ISR changes refused");
            }
        });
    }
}

/// The AlterPartition requests the partitions this node leads call for at
/// `now` (ms), each marked in flight (with its topic's name and the
/// partition, for the logs).
pub(super) fn isr_changes(
    broker: &Broker,
    config: &ReplicationConfig,
    now: u64,
) -> Vec<(String, i32, ControllerRequest)> {
    let lag = config.lag_time_max.as_millis() as u64;
    let retry = config.isr_retry.as_millis() as u64;
    // A fenced node may not join an ISR (the controller refuses it).
    let image = broker.metadata();
    let eligible = |r: i32| image.nodes.get(&r).is_some_and(|n| !n.fenced);
    let mut out = Vec::new();
    for topic in broker.hosted_topics() {
        for p in topic.partitions() {
            let Some((leader_epoch, partition_epoch, isr)) = p.isr_change_due(now, lag, retry, &eligible) else {
                continue;
            };
            let request = ControllerRequest::AlterPartition {
                topic_id: topic.id,
                partition: p.index,
                leader_epoch,
                partition_epoch,
                isr,
            };
            out.push((topic.name.clone(), p.index, request));
        }
    }
    out
}
