//! A running cluster node: the cluster port, the Raft group (voter or
//! learner), registration and heartbeats, and the broker's `Controller`.
//!
//! - `node/leader.rs`: what the node does while it is the quorum leader
//!   (runs the [`QuorumController`](crate::controller::QuorumController),
//!   one call at a time, and commits what it returns).
//! - `node/client.rs`: reaching the leader from any node (locally or over
//!   the cluster port, retried across elections), registration and
//!   heartbeats.
//! - `node/service.rs`: answering the cluster port.
//! - `node/identity.rs`: the incarnation this data directory last ran as.
//! - `node/probe.rs`: telling a dead node from a silent one (the leader
//!   probes the cluster port of nodes that went quiet or whose
//!   connections broke).

mod client;
mod identity;
mod leader;
mod peer;
mod probe;
mod service;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ferry_broker::Broker;
use ferry_broker::metadata::{
    Controller, ControllerFuture, ControllerReply, ControllerRequest, ControllerStatus, MetadataImage, PeerFuture,
    PeerRequest, listener,
};
use ferry_util::sync::lock;
use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::ClusterConfig;
use crate::controller::ControllerConfig;
use crate::error::ClusterError;
use crate::image_gate::ImageGate;
use crate::raft::{ImageSink, LogStore, MetadataRaft, Network, StateMachine, node_id, raft_config, raft_id};
use crate::transport::{Pool, fingerprint, serve};

/// Partitions of `__consumer_offsets` and `__transaction_state` (Kafka's default).
const INTERNAL_TOPIC_PARTITIONS: i32 = 50;
/// Producer ids per block handed to a node (Kafka's block size).
const PRODUCER_ID_BLOCK: i64 = 1000;

/// One node of the cluster (a quorum of one when alone).
pub struct ClusterNode {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The state every part of the node shares.
pub(crate) struct Node {
    config: ClusterConfig,
    id: i32,
    quorum: String,
    /// This node's cluster port address, as peers reach it.
    advertised: String,
    incarnation: Uuid,
    /// The incarnation this data directory ran as before this process
    /// (named in registrations, so this one replaces it at once).
    previous: Option<Uuid>,
    raft: MetadataRaft,
    /// Every image this node applied, newest last.
    images: watch::Receiver<Arc<MetadataImage>>,
    broker: Weak<Broker>,
    pool: Arc<Pool>,
    committed: Arc<AtomicU64>,
    /// The leader side: the term's controller and the decisions' turns.
    leading: leader::Leading,
    /// Why the node is waiting for the quorum, while it is.
    waiting: Mutex<Option<String>>,
    /// Peers to probe, and the probes running (`node/probe.rs`).
    probes: probe::Probes,
}

impl ClusterNode {
    /// Binds the cluster port, opens the Raft state under the data
    /// directory, joins the quorum (initialising it on a first start),
    /// installs itself as `broker`'s controller and image source, and
    /// registers this node. Returns once this node's registration is
    /// applied locally (the broker then knows its partitions) and the
    /// broker has trashed the topic directories the image does not place
    /// here (`Broker::sweep_orphans`); while no quorum is reachable it
    /// keeps trying and logs "waiting for quorum".
    pub async fn start(config: ClusterConfig, broker: Arc<Broker>) -> Result<Arc<ClusterNode>, ClusterError> {
        let mut voters = config.voters();
        if let Some((_, addr)) = voters.iter().find(|(id, _)| *id == config.node_id)
            && port(addr) != port(&config.cluster_listen)
        {
            return Err(ClusterError::InvalidQuorum(format!(
                "node {} is {addr} in the quorum but listens on {}",
                config.node_id, config.cluster_listen
            )));
        }
        let listener = TcpListener::bind(&config.cluster_listen).await?;
        let local = listener.local_addr()?;
        let bound = || {
            let host = config.cluster_listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            format!("{host}:{}", local.port())
        };
        // Port 0 (tests): the port the system chose.
        for (id, addr) in &mut voters {
            if *id == config.node_id && port(addr) == Some("0") {
                *addr = bound();
            }
        }
        let quorum = fingerprint(&voters);
        let advertised = match voters.iter().find(|(id, _)| *id == config.node_id) {
            Some((_, addr)) => addr.clone(),
            None => match config.listeners.get(listener::CLUSTER) {
                Some(addr) if port(addr) != Some("0") => addr.clone(),
                _ => bound(),
            },
        };
        let dir = config.data_dir.join("cluster");
        let weak = Arc::downgrade(&broker);
        // Fenced until caught up: the broker reconciles from no image
        // before this node's registration is applied (`image_gate.rs`).
        let gate = Arc::new(ImageGate::new(move |image| {
            if let Some(b) = weak.upgrade() {
                b.apply_image(image);
            }
        }));
        let sink: ImageSink = {
            let gate = gate.clone();
            Arc::new(move |image| gate.offer(image))
        };
        let incarnation = Uuid::new_v4();
        let node_id = config.node_id;
        let (store, sm, images, previous) = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || -> Result<_, ClusterError> {
                std::fs::create_dir_all(&dir)?;
                let previous = identity::renew(&dir, node_id, incarnation)?;
                let (sm, images) = StateMachine::open(&dir.join("snapshot.json"), sink)?;
                let store = LogStore::open(&dir.join("raft-log"), &dir.join("vote.json"))?;
                Ok((store, sm, images, previous))
            }
        })
        .await
        .map_err(|e| ClusterError::Storage(e.to_string()))??;
        let committed = store.committed_index();
        let pool = Arc::new(
            Pool::new(config.node_id, quorum.clone()).with_tls(config.tls.clone()).routed(config.dial_via.clone()),
        );
        let raft = MetadataRaft::new(raft_id(config.node_id), raft_config()?, Network::new(pool.clone()), store, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let node = Arc::new(Node {
            id: config.node_id,
            quorum,
            advertised,
            incarnation,
            previous,
            raft,
            images,
            broker: Arc::downgrade(&broker),
            pool,
            committed,
            leading: leader::Leading::default(),
            waiting: Mutex::new(None),
            probes: probe::Probes::default(),
            config,
        });
        let (stop, stopped) = watch::channel(false);
        let tls = node.config.tls.as_ref().map(|t| t.server.clone());
        let cluster = Arc::new(ClusterNode {
            node: node.clone(),
            stop,
            tasks: Mutex::new(vec![tokio::spawn(serve(listener, tls, node.clone(), stopped))]),
        });
        // Dropping `start` before it returns (a signal while waiting for
        // the quorum) stops what it started.
        let mut guard = StartGuard(Some(cluster.clone()));
        if let Err(e) = node.initialize(&voters).await {
            guard.disarm();
            cluster.shutdown().await;
            return Err(e);
        }
        broker.set_controller(cluster.clone());
        cluster.spawn(node.clone().lead_while_leader());
        if let Err(e) = node.register().await {
            guard.disarm();
            cluster.shutdown().await;
            return Err(e.into());
        }
        guard.disarm();
        // The session started with the registration: heartbeat from now on,
        // not after the broker applied the image below (with a hundred
        // internal partitions to open on a loaded machine, that can take
        // longer than a session, and the controller then fenced this node).
        cluster.spawn(node.clone().heartbeat_forever());
        // The registration is applied here, after everything committed
        // before it: the image is caught up, as `sweep_orphans` requires,
        // and the broker may act on it now.
        if let Err(e) = tokio::task::spawn_blocking(move || gate.open()).await {
            tracing::error!(node = node.id, error = %e, "applying the caught-up image");
        }
        let sweeper = broker.clone();
        match tokio::task::spawn_blocking(move || sweeper.sweep_orphans()).await {
            Ok(trashed) if !trashed.is_empty() => {
                tracing::info!(node = node.id, topics = ?trashed, "orphan topic directories trashed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node = node.id, error = %e, "sweeping orphan topic directories"),
        }
        let controller: Arc<dyn Controller> = cluster.clone();
        let replicator = crate::replication::Replicator::new(
            Arc::downgrade(&broker),
            Arc::downgrade(&controller),
            Pool::new(node.id, node.quorum.clone())
                .with_tls(node.config.tls.clone())
                .routed(node.config.dial_via.clone()),
            node.config.replication.clone(),
        );
        cluster.spawn(replicator.run(cluster.stop.subscribe()));
        tracing::info!(node = node.id, addr = %node.advertised, voter = node.config.is_voter(), "cluster node started");
        Ok(cluster)
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.tasks).push(tokio::spawn(task));
    }

    /// Controlled shutdown: stops heartbeating, asks the controller to
    /// fence this node at once (bounded: at most 5 s, skipped by a quorum
    /// of one), leaves Raft, closes the port.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        for task in std::mem::take(&mut *lock(&self.tasks)) {
            task.abort();
        }
        // After the heartbeats stopped: a heartbeat answered "fenced" would
        // register the node again.
        self.node.leave().await;
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.node.pool.close_all();
    }

    /// Writes a snapshot of the metadata now and purges the Raft log up to
    /// it, returning the snapshot's last index (openraft does both by
    /// itself every [`SNAPSHOT_EVERY`](crate::raft::SNAPSHOT_EVERY) entries;
    /// this is for operators, before a backup, and for tests). The purge
    /// may wait while a follower still needs the entries.
    pub async fn snapshot_now(&self) -> Result<u64, ClusterError> {
        let raft = &self.node.raft;
        let fatal = |e: &dyn std::fmt::Display| ClusterError::Raft(e.to_string());
        let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        raft.trigger().snapshot().await.map_err(|e| fatal(&e))?;
        let patience = Some(Duration::from_secs(30));
        raft.wait(patience)
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "snapshot")
            .await
            .map_err(|e| fatal(&e))?;
        raft.trigger().purge_log(applied).await.map_err(|e| fatal(&e))?;
        raft.wait(patience)
            .metrics(|m| m.purged.is_some_and(|p| p.index >= applied), "purge")
            .await
            .map_err(|e| fatal(&e))?;
        Ok(applied)
    }

    /// This node's cluster port address, as peers reach it.
    pub fn cluster_addr(&self) -> &str {
        &self.node.advertised
    }
}

/// Stops a node whose `start` was dropped before it finished.
struct StartGuard(Option<Arc<ClusterNode>>);

impl StartGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        let Some(cluster) = self.0.take() else { return };
        tracing::info!(node = cluster.node.id, "start abandoned; stopping the cluster node");
        cluster.stop.send_replace(true);
        for task in std::mem::take(&mut *lock(&cluster.tasks)) {
            task.abort();
        }
        // The Raft shutdown is async: run it if a runtime is at hand.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { cluster.shutdown().await });
        }
    }
}

fn port(addr: &str) -> Option<&str> {
    addr.rsplit_once(':').map(|(_, p)| p)
}

impl Node {
    /// A voter whose Raft state is empty proposes the configured voters as
    /// the first membership; every voter does so alike, so whichever entry
    /// wins an election is the same.
    async fn initialize(&self, voters: &[(i32, String)]) -> Result<(), ClusterError> {
        if !self.config.is_voter() {
            return Ok(());
        }
        let initialized = self.raft.is_initialized().await.map_err(|e| ClusterError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> =
            voters.iter().map(|(id, addr)| (raft_id(*id), BasicNode::new(addr))).collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    fn controller_config(&self) -> ControllerConfig {
        let c = &self.config;
        ControllerConfig {
            session_timeout: c.session_timeout,
            dead_node_grace: c.dead_node_grace,
            default_partitions: c.default_partitions,
            default_replication_factor: c.default_replication_factor,
            max_partitions_per_topic: c.max_partitions_per_topic,
            internal_topic_partitions: INTERNAL_TOPIC_PARTITIONS,
            producer_id_block: PRODUCER_ID_BLOCK,
            topic_defaults: self.broker.upgrade().map(|b| b.config().topic_defaults.clone()).unwrap_or_default(),
            leader_balance: c.leader_balance.clone(),
        }
    }

    /// The newest image this node applied.
    fn image(&self) -> Arc<MetadataImage> {
        self.images.borrow().clone()
    }

    /// Waits until this node applied log index `index` (bounded).
    async fn applied(&self, index: u64, patience: Duration) -> Result<(), ferry_broker::metadata::MetadataError> {
        let mut images = self.images.clone();
        match tokio::time::timeout(patience, images.wait_for(|i| i.applied_index >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ferry_broker::metadata::MetadataError::Unavailable("cluster node stopped".into())),
            Err(_) => Err(ferry_broker::metadata::MetadataError::Unavailable(format!(
                "index {index} not applied on node {} within {patience:?}",
                self.id
            ))),
        }
    }

    fn status(&self) -> ControllerStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let mut voters: Vec<i32> = membership.voter_ids().map(node_id).collect();
        if voters.is_empty() {
            voters = self.config.voters().iter().map(|(id, _)| *id).collect();
        }
        let waiting = lock(&self.waiting)
            .clone()
            .or_else(|| m.current_leader.is_none().then(|| "no quorum leader elected".to_string()));
        ControllerStatus {
            node_id: self.id,
            leader: m.current_leader.map(node_id),
            term: m.current_term,
            commit_index: self.committed.load(Ordering::Acquire),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            voters,
            observers: membership.learner_ids().map(node_id).collect(),
            waiting,
        }
    }
}

impl Controller for ClusterNode {
    fn submit(&self, request: ControllerRequest) -> ControllerFuture<ControllerReply> {
        let node = self.node.clone();
        Box::pin(async move { node.submit(request).await })
    }

    fn status(&self) -> ControllerStatus {
        self.node.status()
    }

    fn call_peer(&self, node: i32, request: PeerRequest) -> PeerFuture {
        let this = self.node.clone();
        Box::pin(async move { this.call_peer(node, request).await })
    }
}
