//! The cluster node's settings and the `--controller-quorum` parser.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ClusterError;

/// Settings of one node's cluster side; the binary builds it from flags,
/// `FERRY_*` variables and the TOML file.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `--node-id`.
    pub node_id: i32,
    /// The node's data directory; Raft state lives under `<data>/cluster/`.
    pub data_dir: PathBuf,
    /// `--cluster-listen`: where this node serves the cluster port.
    pub cluster_listen: String,
    /// `--controller-quorum` voters as `(id, host:port)`; empty means a
    /// quorum of one: this node at `cluster_listen`.
    pub quorum: Vec<(i32, String)>,
    /// `--rack`.
    pub rack: Option<String>,
    /// Advertised `host:port` per listener name (`ferry_broker::metadata::listener`).
    pub listeners: BTreeMap<String, String>,
    /// How often the node heartbeats the controller (`broker.heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
    /// A node silent this long is fenced (`broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// A node whose process is gone (its cluster port refuses or resets
    /// connections, found twice this far apart, no heartbeat in between) is
    /// fenced then, without waiting for the session timeout
    /// (`dead_node_grace_ms`; at or above the session timeout: never early).
    pub dead_node_grace: Duration,
    /// `num.partitions`: partitions of a topic created without a count.
    pub default_partitions: i32,
    /// `default.replication.factor`; `None`: 3 with 3 or more nodes, else
    /// the node count.
    pub default_replication_factor: Option<i16>,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// Partition replication settings (`replica.lag.time.max.ms` and the
    /// fetchers').
    pub replication: crate::replication::ReplicationConfig,
    /// Automatic preferred-leader balancing (`auto.leader.rebalance.enable`,
    /// `leader.imbalance.check.interval.seconds`,
    /// `leader.imbalance.per.broker.percentage`).
    pub leader_balance: crate::controller::LeaderBalanceConfig,
    /// Mutual TLS on the cluster port (`--cluster-listen tls://...` or
    /// `[cluster] tls = true`); `None`: plain TCP. Every node of a cluster
    /// must agree.
    pub tls: Option<ferry_tls::PeerTls>,
    /// `[cluster] dial_via`: peer cluster address -> the address this node
    /// dials instead (a proxy, a tunnel, a NAT). Peers are still named and
    /// registered by their own address; only the connection goes elsewhere.
    /// The fault harness (crates/ferry-chaos) puts its proxy here.
    pub dial_via: BTreeMap<String, String>,
}

impl ClusterConfig {
    /// The voters, with the quorum-of-one default filled in.
    pub fn voters(&self) -> Vec<(i32, String)> {
        if self.quorum.is_empty() { vec![(self.node_id, self.cluster_listen.clone())] } else { self.quorum.clone() }
    }

    /// Whether this node is a voter.
    pub fn is_voter(&self) -> bool {
        self.voters().iter().any(|(id, _)| *id == self.node_id)
    }
}

/// Parses `1@127.0.0.1:9192,2@127.0.0.1:9193`: unique positive ids, each
/// with a `host:port`.
pub fn parse_quorum(s: &str) -> Result<Vec<(i32, String)>, ClusterError> {
    let mut voters: Vec<(i32, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || ClusterError::InvalidQuorum(format!("'{part}' is not ID@HOST:PORT"));
        let (id, addr) = part.split_once('@').ok_or_else(bad)?;
        let id: i32 = id.trim().parse().map_err(|_| bad())?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if id < 0 || host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        if voters.iter().any(|(v, _)| *v == id) {
            return Err(ClusterError::InvalidQuorum(format!("node id {id} appears twice")));
        }
        if voters.iter().any(|(_, a)| a == addr) {
            return Err(ClusterError::InvalidQuorum(format!("address {addr} appears twice")));
        }
        voters.push((id, addr.to_string()));
    }
    if voters.is_empty() {
        return Err(ClusterError::InvalidQuorum("no voters".into()));
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_strings_parse_or_say_why_not() {
        let v = parse_quorum("1@127.0.0.1:9192, 2@127.0.0.1:9193,3@[::1]:9194").unwrap();
        assert_eq!(v, vec![(1, "127.0.0.1:9192".into()), (2, "127.0.0.1:9193".into()), (3, "[::1]:9194".into())]);
        for bad in ["", "1", "x@h:1", "1@h", "1@h:99999", "1@:1", "1@h:1,1@g:2", "1@h:1,2@h:1", "-1@h:1"] {
            assert!(parse_quorum(bad).is_err(), "{bad}");
        }
    }
}
