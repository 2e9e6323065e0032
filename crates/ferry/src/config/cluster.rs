//! The cluster side of `ferry serve`: `--cluster-listen`,
//! `--controller-quorum`, `--rack` and the `[cluster]` section, resolved
//! into the [`ferry_cluster::ClusterConfig`] the node starts with.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use ferry_broker::metadata::listener;
use ferry_cluster::{ClusterConfig, parse_quorum};

/// The cluster port when nothing else is said.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9192);

/// `[cluster]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub listen: Option<SocketAddr>,
    /// Mutual TLS on the cluster port with the node certificate (as
    /// `--cluster-listen tls://...`); every node of the cluster alike.
    pub tls: Option<bool>,
    /// `ID@HOST:PORT,...`, as `--controller-quorum`.
    pub controller_quorum: Option<String>,
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: Option<u64>,
    /// A node whose cluster port refuses connections (its process is gone)
    /// is fenced after this instead of the session timeout (default 1000).
    pub dead_node_grace_ms: Option<u64>,
    /// `default.replication.factor`.
    pub default_replication_factor: Option<i16>,
    /// `replica.lag.time.max.ms`: a follower not caught up this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: Option<u64>,
    /// `auto.leader.rebalance.enable` (default true).
    pub auto_leader_rebalance_enable: Option<bool>,
    /// `leader.imbalance.check.interval.seconds` (default 300).
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// `leader.imbalance.per.broker.percentage` (default 10).
    pub leader_imbalance_per_broker_percentage: Option<u32>,
    /// Peer cluster address -> the address to dial instead (a proxy).
    pub dial_via: Option<BTreeMap<String, String>>,
}

/// The cluster flags of `ferry serve`, each also an environment variable.
#[derive(Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// Cluster port: Raft, forwarded admin requests, heartbeats (default
    /// 127.0.0.1:9192); tls://HOST:PORT for mutual TLS between nodes with
    /// --tls-cert (peers verified against --tls-client-ca, else the CAs in
    /// the --tls-cert chain).
    #[arg(long, env = "FERRY_CLUSTER_LISTEN", value_parser = parse_listen)]
    pub cluster_listen: Option<ferry_tls::Listen>,
    /// The controller quorum's voters, ID@HOST:PORT,... (default: a quorum
    /// of one, this node at --cluster-listen). A node not named here is a
    /// broker only.
    #[arg(long, env = "FERRY_CONTROLLER_QUORUM")]
    pub controller_quorum: Option<String>,
    /// This node's rack: replicas of a partition go to different racks.
    #[arg(long, env = "FERRY_RACK")]
    pub rack: Option<String>,
}

fn parse_listen(s: &str) -> Result<ferry_tls::Listen, ferry_tls::TlsError> {
    ferry_tls::Listen::parse(s)
}

/// What the cluster settings are resolved against.
pub struct NodeFacts<'a> {
    /// The node certificate (`--tls-cert`...), for cluster TLS.
    pub tls: Option<&'a ferry_tls::TlsFiles>,
    pub node_id: i32,
    pub data_dir: &'a Path,
    /// Advertised `host:port` per listener name, without the cluster one
    /// (added here).
    pub listeners: BTreeMap<String, String>,
    /// `num.partitions`.
    pub default_partitions: i32,
    pub max_partitions_per_topic: i32,
}

/// Flags beat the file; checks the quorum names this node at the address
/// it listens on.
pub fn resolve(args: &ClusterArgs, file: ClusterSection, node: NodeFacts<'_>) -> anyhow::Result<ClusterConfig> {
    if node.node_id < 0 {
        bail!("node id {} is negative", node.node_id);
    }
    let listen = args.cluster_listen.map(|l| l.addr).or(file.listen).unwrap_or(DEFAULT_LISTEN);
    let tls = args.cluster_listen.is_some_and(|l| l.tls) || file.tls.unwrap_or(false);
    let tls = match (tls, node.tls) {
        (false, _) => None,
        (true, None) => bail!("TLS on the cluster port needs --tls-cert and --tls-key (or [tls] cert and key)"),
        (true, Some(files)) => {
            Some(ferry_tls::PeerTls::new(files).context("cluster TLS (--tls-cert, --tls-key, --tls-client-ca)")?)
        }
    };
    let quorum = match args.controller_quorum.clone().or(file.controller_quorum) {
        Some(text) => parse_quorum(&text).with_context(|| format!("--controller-quorum {text:?}"))?,
        None => Vec::new(),
    };
    // Peers reach this node at its entry in the quorum; a broker-only node
    // (or a quorum of one) at its listen address.
    let advertised = match quorum.iter().find(|(id, _)| *id == node.node_id) {
        Some((_, addr)) => {
            check_own_address(node.node_id, addr, listen)?;
            addr.clone()
        }
        None if !quorum.is_empty() && listen.ip().is_unspecified() => bail!(
            "node {} is not in --controller-quorum, so peers reach it at its --cluster-listen address, \
             but {listen} is a wildcard address: give the address peers should connect to",
            node.node_id
        ),
        None => listen.to_string(),
    };
    let heartbeat = file.heartbeat_interval_ms.unwrap_or(1_000);
    let session = file.session_timeout_ms.unwrap_or(6_000);
    if heartbeat == 0 {
        bail!("cluster.heartbeat_interval_ms must be at least 1");
    }
    if session <= heartbeat {
        bail!("cluster.session_timeout_ms ({session}) must be longer than cluster.heartbeat_interval_ms ({heartbeat})");
    }
    let dead_grace = file.dead_node_grace_ms.unwrap_or(1_000);
    if let Some(rf) = file.default_replication_factor
        && rf < 1
    {
        bail!("cluster.default_replication_factor must be at least 1, not {rf}");
    }
    let lag = file.replica_lag_time_max_ms.unwrap_or(30_000);
    if lag == 0 {
        bail!("cluster.replica_lag_time_max_ms must be at least 1");
    }
    let mut leader_balance = ferry_cluster::controller::LeaderBalanceConfig::default();
    if let Some(enabled) = file.auto_leader_rebalance_enable {
        leader_balance.enabled = enabled;
    }
    if let Some(secs) = file.leader_imbalance_check_interval_seconds {
        if secs == 0 {
            bail!("cluster.leader_imbalance_check_interval_seconds must be at least 1");
        }
        leader_balance.check_interval = Duration::from_secs(secs);
    }
    if let Some(percent) = file.leader_imbalance_per_broker_percentage {
        if percent > 100 {
            bail!("cluster.leader_imbalance_per_broker_percentage must be 0 to 100, not {percent}");
        }
        leader_balance.max_imbalance_percent = percent;
    }
    let mut listeners = node.listeners;
    listeners.insert(listener::CLUSTER.to_string(), advertised);
    Ok(ClusterConfig {
        node_id: node.node_id,
        data_dir: node.data_dir.to_path_buf(),
        cluster_listen: listen.to_string(),
        quorum,
        rack: args.rack.clone().or(file.rack).filter(|r| !r.trim().is_empty()),
        listeners,
        heartbeat_interval: Duration::from_millis(heartbeat),
        session_timeout: Duration::from_millis(session),
        dead_node_grace: Duration::from_millis(dead_grace),
        default_partitions: node.default_partitions,
        default_replication_factor: file.default_replication_factor,
        max_partitions_per_topic: node.max_partitions_per_topic,
        replication: ferry_cluster::replication::ReplicationConfig {
            lag_time_max: Duration::from_millis(lag),
            ..Default::default()
        },
        leader_balance,
        tls,
        dial_via: file.dial_via.unwrap_or_default(),
    })
}

/// A voter listens where the quorum says it is: the same port, and the same
/// address unless it listens on every address.
fn check_own_address(node_id: i32, quorum_addr: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let mismatch = |why: &str| {
        anyhow::anyhow!(
            "--controller-quorum names node {node_id} at {quorum_addr}, but its --cluster-listen is {listen}{why}"
        )
    };
    let resolved: Vec<SocketAddr> = if let Ok(a) = quorum_addr.parse::<SocketAddr>() {
        vec![a]
    } else {
        let (_, port) = quorum_addr.rsplit_once(':').unwrap_or((quorum_addr, ""));
        if port.parse::<u16>().ok() != Some(listen.port()) {
            return Err(mismatch(""));
        }
        if listen.ip().is_unspecified() {
            return Ok(());
        }
        quorum_addr.to_socket_addrs().map_err(|e| mismatch(&format!(" (resolving {quorum_addr}: {e})")))?.collect()
    };
    let same = |a: &SocketAddr| a.port() == listen.port() && (listen.ip().is_unspecified() || a.ip() == listen.ip());
    if resolved.iter().any(same) { Ok(()) } else { Err(mismatch("")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(node_id: i32) -> NodeFacts<'static> {
        NodeFacts {
            tls: None,
            node_id,
            data_dir: Path::new("d"),
            listeners: [(listener::KAFKA.to_string(), "127.0.0.1:9092".to_string())].into(),
            default_partitions: 1,
            max_partitions_per_topic: 10_000,
        }
    }

    fn args(listen: Option<&str>, quorum: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            cluster_listen: listen.map(|l| ferry_tls::Listen::parse(l).unwrap()),
            controller_quorum: quorum.map(String::from),
            rack: None,
        }
    }

    #[test]
    fn no_flags_is_a_quorum_of_one_on_9192() {
        let c = resolve(&ClusterArgs::default(), ClusterSection::default(), facts(1)).unwrap();
        assert_eq!(c.cluster_listen, "127.0.0.1:9192");
        assert_eq!(c.voters(), vec![(1, "127.0.0.1:9192".to_string())]);
        assert!(c.is_voter());
        assert_eq!(c.listeners[listener::CLUSTER], "127.0.0.1:9192");
        assert_eq!(c.listeners[listener::KAFKA], "127.0.0.1:9092");
        assert_eq!((c.heartbeat_interval, c.session_timeout), (Duration::from_secs(1), Duration::from_secs(6)));
        assert_eq!((c.rack, c.default_replication_factor), (None, None));
        assert!(c.tls.is_none());
    }

    #[test]
    fn cluster_tls_needs_the_node_certificate() {
        // tls:// on the flag, or `tls = true` in the file: the same.
        let e = resolve(&args(Some("tls://127.0.0.1:9300"), None), ClusterSection::default(), facts(1)).unwrap_err();
        assert!(format!("{e:#}").contains("--tls-cert"), "{e:#}");
        let file = ClusterSection { tls: Some(true), ..Default::default() };
        assert!(resolve(&ClusterArgs::default(), file, facts(1)).is_err());
        let missing = ferry_tls::TlsFiles { cert: "nope.pem".into(), key: "nope.key".into(), client_ca: None };
        let facts = NodeFacts { tls: Some(&missing), ..facts(1) };
        let e = resolve(&args(Some("tls://127.0.0.1:9300"), None), ClusterSection::default(), facts).unwrap_err();
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
        // The address without the scheme is what the node listens on.
        let c = resolve(&args(Some("127.0.0.1:9300"), None), ClusterSection::default(), self::facts(1)).unwrap();
        assert_eq!(c.cluster_listen, "127.0.0.1:9300");
    }

    #[test]
    fn a_voter_is_named_at_its_listen_address() {
        let q = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";
        let c = resolve(&args(Some("127.0.0.1:9193"), Some(q)), ClusterSection::default(), facts(2)).unwrap();
        assert_eq!(c.voters().len(), 3);
        assert!(c.is_voter());
        // A wildcard listener on the quorum's port is that address too.
        let c = resolve(&args(Some("0.0.0.0:9193"), Some(q)), ClusterSection::default(), facts(2)).unwrap();
        assert_eq!(c.listeners[listener::CLUSTER], "127.0.0.1:9193");
        let e = resolve(&args(Some("127.0.0.1:9999"), Some(q)), ClusterSection::default(), facts(2)).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("127.0.0.1:9193") && msg.contains("127.0.0.1:9999"), "{msg}");
        let e = resolve(&args(Some("127.0.0.2:9193"), Some(q)), ClusterSection::default(), facts(2)).unwrap_err();
        assert!(format!("{e:#}").contains("node 2"), "{e:#}");
    }

    #[test]
    fn a_broker_only_node_advertises_its_listen_address() {
        let q = "1@127.0.0.1:9192";
        let c = resolve(&args(Some("127.0.0.1:9300"), Some(q)), ClusterSection::default(), facts(4)).unwrap();
        assert!(!c.is_voter());
        assert_eq!(c.listeners[listener::CLUSTER], "127.0.0.1:9300");
        assert!(resolve(&args(Some("0.0.0.0:9300"), Some(q)), ClusterSection::default(), facts(4)).is_err());
    }

    #[test]
    fn bad_quorum_strings_say_what_is_wrong() {
        for (q, says) in [("1@127.0.0.1", "is not ID@HOST:PORT"), ("1@h:1,1@g:2", "appears twice"), ("", "no voters")] {
            let e = resolve(&args(None, Some(q)), ClusterSection::default(), facts(1)).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains("--controller-quorum") && msg.contains(says), "{q}: {msg}");
        }
    }

    #[test]
    fn the_section_is_read_and_checked() {
        let file = ClusterSection {
            listen: Some("127.0.0.1:9400".parse().unwrap()),
            controller_quorum: Some("7@127.0.0.1:9400".into()),
            rack: Some("r1".into()),
            heartbeat_interval_ms: Some(200),
            session_timeout_ms: Some(1_000),
            dead_node_grace_ms: Some(500),
            default_replication_factor: Some(2),
            replica_lag_time_max_ms: Some(5_000),
            auto_leader_rebalance_enable: Some(false),
            leader_imbalance_check_interval_seconds: Some(2),
            leader_imbalance_per_broker_percentage: Some(25),
            tls: Some(false),
            dial_via: None,
        };
        let c = resolve(&ClusterArgs::default(), file, facts(7)).unwrap();
        let balance = &c.leader_balance;
        assert_eq!(
            (balance.enabled, balance.check_interval, balance.max_imbalance_percent),
            (false, Duration::from_secs(2), 25)
        );
        let defaults = resolve(&ClusterArgs::default(), ClusterSection::default(), facts(7)).unwrap().leader_balance;
        assert_eq!(defaults, ferry_cluster::controller::LeaderBalanceConfig::default());
        assert_eq!(
            (defaults.enabled, defaults.check_interval.as_secs(), defaults.max_imbalance_percent),
            (true, 300, 10)
        );
        assert_eq!(c.cluster_listen, "127.0.0.1:9400");
        assert_eq!(c.rack.as_deref(), Some("r1"));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(c.session_timeout, Duration::from_millis(1_000));
        assert_eq!(c.dead_node_grace, Duration::from_millis(500));
        let defaults = resolve(&ClusterArgs::default(), ClusterSection::default(), facts(7)).unwrap();
        assert_eq!(
            (defaults.session_timeout, defaults.dead_node_grace),
            (Duration::from_secs(6), Duration::from_secs(1))
        );
        assert_eq!(c.default_replication_factor, Some(2));
        assert_eq!(c.replication.lag_time_max, Duration::from_secs(5));
        // Flags win.
        let a = ClusterArgs { rack: Some("r2".into()), ..args(Some("127.0.0.1:9400"), None) };
        let file = ClusterSection { rack: Some("r1".into()), ..ClusterSection::default() };
        assert_eq!(resolve(&a, file, facts(7)).unwrap().rack.as_deref(), Some("r2"));
        for bad in [
            ClusterSection { heartbeat_interval_ms: Some(0), ..ClusterSection::default() },
            ClusterSection { session_timeout_ms: Some(500), ..ClusterSection::default() },
            ClusterSection { default_replication_factor: Some(0), ..ClusterSection::default() },
            ClusterSection { replica_lag_time_max_ms: Some(0), ..ClusterSection::default() },
            ClusterSection { leader_imbalance_check_interval_seconds: Some(0), ..ClusterSection::default() },
            ClusterSection { leader_imbalance_per_broker_percentage: Some(101), ..ClusterSection::default() },
        ] {
            assert!(resolve(&ClusterArgs::default(), bad, facts(1)).is_err());
        }
    }
}
