//! TLS on the cluster port (issue #18): three `ferry serve` processes with
//! `[cluster] tls = true` and one node certificate, peers verified against
//! `--tls-client-ca` (the CA that signed it). Raft, registrations and
//! replication run over mutual TLS: an idempotent acks=all producer writes
//! to a replication-factor-3 topic while the partition leader is killed,
//! and every acknowledged record is read back. The cluster port refuses a
//! client without a certificate and speaks TLS to one with a certificate
//! of the cluster's CA.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::cluster_support::{CLUSTER_TOML, CLUSTER_WAIT, Cluster, create_topic_eventually, metadata_of};
use crate::support::{consume_all, eventually_within, producer};
use crate::tls::{Pki, leaf, tls_connect};

const TOPIC: &str = "over-tls";

fn leader_of_0(c: &Cluster, via: i32) -> Option<i32> {
    let md = metadata_of(c.node(via), &[TOPIC]).ok()?;
    let t = md.topics.first().filter(|t| t.error == 0)?;
    t.partitions.iter().find(|p| p.partition == 0).map(|p| p.leader).filter(|l| *l > 0)
}

#[test]
fn a_tls_cluster_replicates_and_survives_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // Nodes present the server CA's certificate and trust that CA.
    let ca = dir.path().join("node-ca.pem");
    std::fs::write(&ca, pki.server_ca.cert.pem()).unwrap();
    let mut c = Cluster::prepare(3);
    c.set_toml(&format!("{CLUSTER_TOML}tls = true\n"));
    for id in c.ids() {
        let b = c.node_mut(id);
        for (flag, path) in [("--tls-cert", &pki.cert), ("--tls-key", &pki.key), ("--tls-client-ca", &ca)] {
            b.args.extend([flag.to_string(), path.display().to_string()]);
        }
    }
    c.start_all();
    for id in c.ids() {
        c.wait_for_brokers(id, &[1, 2, 3]);
    }

    // The cluster port is TLS, and mutual.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let port = c.node(1).cluster_port;
    runtime.block_on(async {
        // TLS 1.3 finishes the client's side of the handshake first: the
        // refusal of the missing certificate arrives as an alert on the
        // first read (a served connection would wait for a frame instead).
        let mut s = tls_connect(pki.client(None), port).await.expect("TCP and the server's half of TLS");
        let mut b = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut s, &mut b)).await;
        assert!(matches!(read, Ok(Err(_))), "a client without a certificate was not refused: {read:?}");
        let node_like = pki.client(Some(leaf(&pki.server_ca, "peer")));
        tls_connect(node_like, port).await.expect("a handshake with the cluster's CA");
    });

    create_topic_eventually(c.node(1), TOPIC, 1, 3);
    let mut victim = None;
    eventually_within("a leader for partition 0", CLUSTER_WAIT, || {
        victim = leader_of_0(&c, 1);
        victim.is_some()
    });
    let victim = victim.unwrap();
    let survivor = c.ids().into_iter().find(|id| *id != victim).unwrap();
    let p = producer(
        c.node(survivor),
        &[("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5"), ("message.timeout.ms", "60000")],
    );
    let count = 600u32;
    let acknowledged: Vec<(i64, u32)> = runtime.block_on(async {
        let mut deliveries = Vec::new();
        for i in 0..count {
            let v = i.to_string();
            deliveries.push((
                i,
                p.send_result(FutureRecord::to(TOPIC).partition(0).key(&v).payload(&v))
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            ));
            if i == count / 3 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.kill9(victim);
            } else if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut out = Vec::new();
        for (i, d) in deliveries {
            let d = d.await.expect("delivery").unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
            out.push((d.offset, i));
        }
        out
    });
    eventually_within("a new leader for partition 0", CLUSTER_WAIT, || {
        leader_of_0(&c, survivor).is_some_and(|l| l != victim)
    });
    let got: BTreeMap<i64, u32> = consume_all(c.node(survivor), TOPIC, 1, acknowledged.len())
        .into_iter()
        .map(|(_, offset, _, value)| (offset, std::str::from_utf8(&value).unwrap().parse().unwrap()))
        .collect();
    let acked: BTreeMap<i64, u32> = acknowledged.into_iter().collect();
    assert_eq!(got, acked, "every acknowledged record, at its offset, once");
    // The killed node rejoins over TLS.
    c.restart(victim);
    c.wait_for_brokers(survivor, &[1, 2, 3]);
    c.stop_all();
}
