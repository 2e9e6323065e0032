//! A cluster of real `ferry serve` processes on loopback: voters named in
//! one `--controller-quorum`, broker-only nodes besides, each node with its
//! own data directory, free ports and log file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_client::{Client, ClientConfig, ClientError, ClusterMetadata};

use crate::support::{Broker, WaitFor, eventually_within, http_json};

/// Test timings: a silent node is fenced after 2 s instead of 6.
pub const CLUSTER_TOML: &str = "[cluster]\nheartbeat_interval_ms = 200\nsession_timeout_ms = 2000\n";

/// How long a cluster-wide change (election, registration, catch-up) may take.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    dir: tempfile::TempDir,
    /// Nodes by id.
    nodes: BTreeMap<i32, Broker>,
    /// The `--controller-quorum` every node gets.
    pub quorum: String,
    /// Nodes stopped with SIGSTOP (resumed before anything else is done
    /// to them, and when the cluster is dropped).
    paused: BTreeSet<i32>,
}

impl Cluster {
    /// Voters 1..=`voters` with free ports, none started.
    pub fn prepare(voters: i32) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=voters {
            nodes.insert(id, node(&dir, id, ""));
        }
        let quorum =
            nodes.iter().map(|(id, b)| format!("{id}@127.0.0.1:{}", b.cluster_port)).collect::<Vec<_>>().join(",");
        let mut c = Cluster { dir, nodes, quorum: String::new(), paused: BTreeSet::new() };
        c.set_quorum(&quorum);
        c
    }

    /// `voters` voters, started together (none serves before a quorum is
    /// up, so each start can only finish once a majority runs).
    pub fn start(voters: i32) -> Cluster {
        let mut c = Cluster::prepare(voters);
        c.start_all();
        c
    }

    /// Replaces every node's config file section (the default:
    /// [`CLUSTER_TOML`]); for nodes not started yet.
    pub fn set_toml(&mut self, toml: &str) {
        for b in self.nodes.values_mut() {
            b.toml = toml.to_string();
        }
    }

    fn set_quorum(&mut self, quorum: &str) {
        self.quorum = quorum.to_string();
        for (id, b) in &mut self.nodes {
            b.args = node_args(*id, quorum);
        }
    }

    /// Launches every node that is not running, then waits until each serves.
    pub fn start_all(&mut self) {
        for b in self.nodes.values_mut() {
            if b.pid().is_none() {
                b.launch();
            }
        }
        for b in self.nodes.values_mut() {
            b.wait_listening(WaitFor::AllPorts);
        }
    }

    /// Launches node `id` and waits only for its HTTP port (it may be
    /// waiting for its quorum).
    pub fn launch_waiting(&mut self, id: i32) {
        let b = self.node_mut(id);
        b.launch();
        b.wait_listening(WaitFor::Http);
    }

    /// A broker-only node (not in the quorum), started.
    pub fn add_broker(&mut self, id: i32) -> &mut Broker {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let mut b = node(&self.dir, id, &self.quorum);
        b.spawn_waiting(WaitFor::AllPorts);
        self.nodes.entry(id).or_insert(b)
    }

    /// A node outside the cluster's bookkeeping (its own data directory
    /// and ports), given `quorum`, not started: for starts the cluster
    /// must refuse.
    pub fn outsider(&self, id: i32, name: &str, quorum: &str) -> Broker {
        let mut b = Broker::prepare(&self.dir.path().join(name), &[], CLUSTER_TOML);
        b.args = node_args(id, quorum);
        b
    }

    pub fn node(&self, id: i32) -> &Broker {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: i32) -> &mut Broker {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn ids(&self) -> Vec<i32> {
        self.nodes.keys().copied().collect()
    }

    /// SIGTERM to node `id`; it must exit cleanly.
    pub fn stop(&mut self, id: i32) {
        self.resume(id);
        self.node_mut(id).stop();
    }

    pub fn kill9(&mut self, id: i32) {
        self.resume(id);
        self.node_mut(id).kill9();
    }

    /// SIGSTOP to node `id`: it stays up but does nothing (a long GC pause,
    /// a partitioned host), so its sessions and fetches time out.
    /// Returns once every thread of it is stopped: `kill` returns when
    /// the signal is queued, and a thread still to be scheduled can serve
    /// a request first (seen under load: a registration answered 1 ms
    /// after the SIGSTOP).
    pub fn pause(&mut self, id: i32) {
        let pid = self.node(id).pid().unwrap_or_else(|| panic!("node {id} is not running"));
        signal(pid, "STOP");
        self.paused.insert(id);
        eventually_within(&format!("node {id}'s threads to stop"), Duration::from_secs(10), || all_stopped(pid));
    }

    /// SIGCONT to node `id` if it was paused.
    pub fn resume(&mut self, id: i32) {
        if self.paused.remove(&id)
            && let Some(pid) = self.node(id).pid()
        {
            signal(pid, "CONT");
        }
    }

    /// Starts a stopped or killed node again on its ports and data.
    pub fn restart(&mut self, id: i32) {
        self.node_mut(id).start_again();
    }

    /// Stops every running node, one after the other, in id order.
    pub fn stop_all(&mut self) {
        for b in self.nodes.values_mut() {
            b.stop();
        }
    }

    /// Waits until node `via` knows a controller leader other than
    /// `not`, and returns it.
    pub fn wait_for_leader(&self, via: i32, not: Option<i32>) -> i32 {
        let mut found = None;
        eventually_within("a controller leader", CLUSTER_WAIT, || {
            found = controller_leader(self.node(via)).filter(|l| Some(*l) != not);
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits until node `via`'s Metadata lists exactly `ids` as brokers.
    pub fn wait_for_brokers(&self, via: i32, ids: &[i32]) {
        let mut seen = Vec::new();
        let what = format!("node {via} to list brokers {ids:?}");
        eventually_within(&what, CLUSTER_WAIT, || {
            seen = metadata_of(self.node(via), &[]).map(|md| broker_ids(&md)).unwrap_or_default();
            seen == ids
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A paused process is resumed first, so it can be killed and
        // reaped like the others.
        for id in std::mem::take(&mut self.paused) {
            if let Some(pid) = self.nodes.get(&id).and_then(Broker::pid) {
                signal(pid, "CONT");
            }
        }
        // A failing test shows what every node said.
        if std::thread::panicking() {
            for b in self.nodes.values() {
                eprintln!("{}", b.log_tail());
            }
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/<pid>/task/*/stat`, after the parenthesised command name).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(['T', 't'])))
            // A thread that ended meanwhile stops nothing.
            .unwrap_or(true)
    })
}

/// `kill -<sig> <pid>`.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{sig} {pid}");
}

fn node(dir: &tempfile::TempDir, id: i32, quorum: &str) -> Broker {
    let mut b = Broker::prepare(&dir.path().join(format!("node{id}")), &[], CLUSTER_TOML);
    b.args = node_args(id, quorum);
    b.fixed_cluster_port = true;
    b.log = Some(dir.path().join(format!("node{id}.log")));
    b.log_level = "info,openraft=warn";
    b
}

fn node_args(id: i32, quorum: &str) -> Vec<String> {
    let mut args = vec!["--node-id".to_string(), id.to_string()];
    if !quorum.is_empty() {
        args.extend(["--controller-quorum".to_string(), quorum.to_string()]);
    }
    args
}

/// Sorted broker ids of a Metadata answer.
pub fn broker_ids(md: &ClusterMetadata) -> Vec<i32> {
    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id).collect();
    ids.sort_unstable();
    ids
}

/// Metadata of `topics` (empty: brokers only; `["*"]`: every topic) as
/// node `b` itself answers it (one connection to that node, unlike
/// librdkafka, which asks whichever broker it likes).
pub fn metadata_of(b: &Broker, topics: &[&str]) -> Result<ClusterMetadata, String> {
    let bootstrap = b.bootstrap();
    let topics: Option<Vec<String>> =
        if topics == ["*"] { None } else { Some(topics.iter().map(ToString::to_string).collect()) };
    // A thread of its own: callable from sync tests and from async ones.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = Client::connect(&bootstrap, ClientConfig::new("cluster-test", Duration::from_secs(5)))
                .await
                .map_err(|e| e.to_string())?;
            client.metadata(topics.as_deref()).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("metadata thread panicked".into()))
}

/// Leaders of `topic`'s partitions by node id, as node `b` sees them
/// (`None` until the topic is there with a leader for every partition).
pub fn leaders_of(b: &Broker, topic: &str) -> Option<BTreeMap<i32, usize>> {
    let md = metadata_of(b, &[topic]).ok()?;
    let t = md.topics.iter().find(|t| t.name == topic && t.error == 0)?;
    let mut count = BTreeMap::new();
    for p in &t.partitions {
        if p.leader < 0 {
            return None;
        }
        *count.entry(p.leader).or_insert(0) += 1;
    }
    (!t.partitions.is_empty()).then_some(count)
}

/// The controller leader node `b` knows of: `controller.leader` of
/// `GET /v1/cluster`, or else Metadata's controller id.
pub fn controller_leader(b: &Broker) -> Option<i32> {
    let (status, v) = http_json(b, "GET", "/v1/cluster", None);
    if status == 200
        && let Some(leader) = v.get("controller").and_then(|c| c.get("leader"))
    {
        return leader.as_i64().and_then(|l| i32::try_from(l).ok()).filter(|l| *l >= 0);
    }
    metadata_of(b, &[]).ok().map(|md| md.controller_id).filter(|l| *l >= 0)
}

/// CreateTopics sent to node `b` itself (the ferry client asks its
/// bootstrap node; librdkafka would ask the controller it believes in).
pub fn create_topic_at(b: &Broker, name: &str, partitions: i32, replication: i16) -> Result<(), ClientError> {
    create_topic_with(b, name, partitions, replication, &[])
}

/// [`create_topic_at`] with topic configs.
pub fn create_topic_with(
    b: &Broker,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> Result<(), ClientError> {
    let (bootstrap, name) = (b.bootstrap(), name.to_string());
    let configs: Vec<(String, String)> = configs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Io("runtime".into(), e.to_string()))?;
        rt.block_on(async {
            let client =
                Client::connect(&bootstrap, ClientConfig::new("cluster-test", Duration::from_secs(15))).await?;
            client.create_topic(&name, partitions, replication, &configs).await
        })
    })
    .join()
    .unwrap_or_else(|_| Err(ClientError::Decode("create-topic thread panicked".into())))
}

/// `create_topic_at`, retried while the cluster settles (an election, a
/// node not yet registered); a retry that finds the topic created by an
/// earlier, timed-out attempt counts as done.
pub fn create_topic_eventually(b: &Broker, name: &str, partitions: i32, replication: i16) {
    create_topic_eventually_with(b, name, partitions, replication, &[]);
}

/// [`create_topic_eventually`] with topic configs.
pub fn create_topic_eventually_with(
    b: &Broker,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) {
    const TOPIC_ALREADY_EXISTS: i16 = 36;
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        match create_topic_with(b, name, partitions, replication, configs) {
            Ok(()) => return,
            Err(e) if e.code() == Some(TOPIC_ALREADY_EXISTS) => return,
            Err(e) => assert!(Instant::now() < deadline, "CreateTopics {name} through {}: {e}", b.bootstrap()),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
