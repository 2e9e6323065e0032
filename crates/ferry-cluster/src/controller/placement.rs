//! Replica placement: Kafka's rack-aware assignment, simplified.
//!
//! The live unfenced nodes, in id order, are reordered to alternate racks
//! (rack a's first node, rack b's first, ..., rack a's second, ...).
//! Partition `p`'s leader is the node at `(start + p) % n`, so leaders
//! spread evenly; its followers are taken from the nodes after it at a
//! distance that shifts once per round of `n` partitions, so followers
//! spread too. `start` and the shift derive from a hash of the topic name
//! (not an RNG: the controller is deterministic), so different topics do
//! not all start on the same node. When every node has a rack, a follower
//! whose rack already holds a replica of the partition is skipped while
//! other racks remain; with some nodes lacking a rack, racks are ignored
//! (as Kafka does unless every broker has one).

use std::collections::{BTreeMap, BTreeSet};

use ferry_broker::metadata::{MetadataError, MetadataImage};

/// The nodes replicas can be placed on, in placement order.
pub(super) struct NodeOrder {
    /// Node ids, racks alternated.
    ids: Vec<i32>,
    /// Each node's rack (same index as `ids`), when every node has one.
    racks: Option<Vec<String>>,
}

impl NodeOrder {
    /// The live unfenced nodes of `image` that are not being decommissioned.
    pub(super) fn live(image: &MetadataImage) -> Self {
        let nodes: Vec<(i32, Option<&String>)> = image.placeable_nodes().map(|n| (n.id, n.rack.as_ref())).collect();
        if nodes.is_empty() || nodes.iter().any(|(_, rack)| rack.is_none()) {
            return NodeOrder { ids: nodes.iter().map(|(id, _)| *id).collect(), racks: None };
        }
        let mut by_rack: BTreeMap<&String, Vec<i32>> = BTreeMap::new();
        for (id, rack) in &nodes {
            if let Some(rack) = rack {
                by_rack.entry(rack).or_default().push(*id);
            }
        }
        let mut ids = Vec::with_capacity(nodes.len());
        let mut racks = Vec::with_capacity(nodes.len());
        let rounds = by_rack.values().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            for (rack, members) in &by_rack {
                if let Some(id) = members.get(round) {
                    ids.push(*id);
                    racks.push((*rack).clone());
                }
            }
        }
        NodeOrder { ids, racks: Some(racks) }
    }

    /// How many nodes replicas can go to.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Where `node` stands in the order.
    pub(super) fn position(&self, node: i32) -> Option<usize> {
        self.ids.iter().position(|id| *id == node)
    }

    /// The nodes, in placement order.
    pub(super) fn ids(&self) -> &[i32] {
        &self.ids
    }

    /// Whether racks count (every node has one).
    pub(super) fn rack_aware(&self) -> bool {
        self.racks.is_some()
    }

    /// Replicas for partitions `first..first + count` of `topic`, `rf` each
    /// (1 ≤ rf ≤ len, checked by the caller). `start`: the index of
    /// partition 0's leader, when continuing an existing topic's pattern.
    pub(super) fn place(
        &self,
        topic: &str,
        first: usize,
        count: usize,
        rf: usize,
        start: Option<usize>,
    ) -> Vec<Vec<i32>> {
        let n = self.ids.len();
        if n == 0 {
            return Vec::new();
        }
        let hash = stable_hash(&[topic.as_bytes()]);
        let start = start.unwrap_or((hash % n as u64) as usize);
        let followers = n.saturating_sub(1).max(1);
        let shift0 = ((hash >> 32) % followers as u64) as usize;
        let distinct_racks = self.racks.as_ref().map_or(0, |r| r.iter().collect::<BTreeSet<_>>().len());
        (first..first + count)
            .map(|p| {
                let leader = (start + p) % n;
                let shift = (shift0 + p / n) % followers;
                let candidates: Vec<usize> =
                    (0..n.saturating_sub(1)).map(|k| (leader + 1 + (shift + k) % followers) % n).collect();
                let mut chosen = vec![leader];
                let mut used_racks: BTreeSet<&String> = self.racks.iter().map(|r| &r[leader]).collect();
                while chosen.len() < rf.min(n) {
                    let free = |i: &&usize| !chosen.contains(*i);
                    let rack_ok = |i: &&usize| match &self.racks {
                        Some(racks) if used_racks.len() < distinct_racks => !used_racks.contains(&racks[**i]),
                        _ => true,
                    };
                    let Some(&next) =
                        candidates.iter().find(|i| free(i) && rack_ok(i)).or_else(|| candidates.iter().find(free))
                    else {
                        break;
                    };
                    chosen.push(next);
                    if let Some(racks) = &self.racks {
                        used_racks.insert(&racks[next]);
                    }
                }
                chosen.into_iter().map(|i| self.ids[i]).collect()
            })
            .collect()
    }
}

/// Checks a client's explicit assignment: at least one replica per
/// partition, every node registered, no node twice in one partition, the
/// same count everywhere (`rf`, if the topic already has one). Returns the
/// replication factor.
pub(super) fn validate_assignment(
    image: &MetadataImage,
    assignment: &[Vec<i32>],
    rf: Option<usize>,
) -> Result<usize, MetadataError> {
    let bad = |why: String| Err(MetadataError::InvalidReplicaAssignment(why));
    let Some(first) = assignment.first() else {
        return bad("no partitions".into());
    };
    let rf = rf.unwrap_or(first.len());
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return bad(format!("partition {p} has no replicas"));
        }
        if replicas.len() != rf {
            return bad(format!("partition {p} has {} replicas, expected {rf}", replicas.len()));
        }
        for (i, node) in replicas.iter().enumerate() {
            if !image.nodes.contains_key(node) {
                return bad(format!("partition {p} names unknown node {node}"));
            }
            if replicas[..i].contains(node) {
                return bad(format!("partition {p} names node {node} twice"));
            }
        }
    }
    Ok(rf)
}

/// A hash that is the same on every build and platform (FNV-1a, then
/// SplitMix64's finalizer to spread the bits): placement and ids derived
/// from it must not change when the toolchain does.
pub(super) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separates ("ab", "c") from ("a", "bc").
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_broker::metadata::{MetadataRecord, NodeInfo};
    use uuid::Uuid;

    fn image_with(nodes: &[(i32, Option<&str>)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, (id, rack)) in nodes.iter().enumerate() {
            let node = NodeInfo {
                id: *id,
                incarnation: Uuid::from_u128(*id as u128),
                listeners: Default::default(),
                rack: rack.map(str::to_string),
                voter: false,
                fenced: false,
            };
            image.apply(i as u64 + 1, &MetadataRecord::RegisterNode(node)).unwrap();
        }
        image
    }

    fn leaders(assignment: &[Vec<i32>]) -> BTreeMap<i32, usize> {
        let mut count = BTreeMap::new();
        for r in assignment {
            *count.entry(r[0]).or_default() += 1;
        }
        count
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let image = image_with(&[(1, None), (2, None), (3, None)]);
        let order = NodeOrder::live(&image);
        for topic in ["orders", "payments", "t", "x-y-z"] {
            let a = order.place(topic, 0, 12, 3, None);
            assert_eq!(a.len(), 12);
            assert_eq!(leaders(&a), BTreeMap::from([(1, 4), (2, 4), (3, 4)]), "{topic}: {a:?}");
            for r in &a {
                let distinct: BTreeSet<_> = r.iter().collect();
                assert_eq!(distinct.len(), 3, "{r:?}");
            }
        }
        // RF 2 over 4 nodes: every node holds the same number of replicas.
        let image = image_with(&[(1, None), (2, None), (3, None), (4, None)]);
        let a = NodeOrder::live(&image).place("t", 0, 8, 2, None);
        let mut held = BTreeMap::<i32, usize>::new();
        for r in &a {
            assert_ne!(r[0], r[1]);
            for n in r {
                *held.entry(*n).or_default() += 1;
            }
        }
        assert_eq!(held, BTreeMap::from([(1, 4), (2, 4), (3, 4), (4, 4)]));
    }

    #[test]
    fn topics_start_on_different_nodes() {
        let image = image_with(&[(1, None), (2, None), (3, None), (4, None), (5, None)]);
        let order = NodeOrder::live(&image);
        let firsts: BTreeSet<i32> = (0..20).map(|i| order.place(&format!("topic-{i}"), 0, 1, 1, None)[0][0]).collect();
        assert!(firsts.len() > 1, "every topic starts on {firsts:?}");
        // The same topic always lands the same way.
        assert_eq!(order.place("a", 0, 6, 3, None), order.place("a", 0, 6, 3, None));
    }

    #[test]
    fn continuing_a_topic_matches_placing_it_whole() {
        let image = image_with(&[(1, None), (2, None), (3, None), (4, None)]);
        let order = NodeOrder::live(&image);
        let whole = order.place("t", 0, 10, 3, None);
        let start = order.position(whole[0][0]);
        let head = order.place("t", 0, 4, 3, start);
        let tail = order.place("t", 4, 6, 3, start);
        assert_eq!([head, tail].concat(), whole);
    }

    #[test]
    fn replicas_of_a_partition_use_distinct_racks_when_racks_allow() {
        let cases: &[&[(i32, Option<&str>)]] = &[
            &[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("b")), (5, Some("c")), (6, Some("c"))],
            // Uneven racks: still one replica per rack.
            &[(1, Some("a")), (2, Some("a")), (3, Some("a")), (4, Some("b")), (5, Some("c"))],
        ];
        for nodes in cases {
            let image = image_with(nodes);
            let rack_of = |id: i32| image.nodes[&id].rack.clone().unwrap();
            let order = NodeOrder::live(&image);
            for topic in ["a", "b", "c", "orders"] {
                for r in order.place(topic, 0, 30, 3, None) {
                    let racks: BTreeSet<String> = r.iter().map(|n| rack_of(*n)).collect();
                    assert_eq!(racks.len(), 3, "{topic}: {r:?}");
                }
            }
        }
        // Two racks, RF 3: both racks used, no node twice.
        let image = image_with(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("b"))]);
        for r in NodeOrder::live(&image).place("t", 0, 8, 3, None) {
            let racks: BTreeSet<_> = r.iter().map(|n| image.nodes[n].rack.clone()).collect();
            assert_eq!((racks.len(), r.iter().collect::<BTreeSet<_>>().len()), (2, 3), "{r:?}");
        }
    }

    #[test]
    fn racks_alternate_in_the_order() {
        let image = image_with(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("c")), (5, Some("b"))]);
        assert_eq!(NodeOrder::live(&image).ids, vec![1, 3, 4, 2, 5]);
        // A node without a rack turns rack awareness off.
        let image = image_with(&[(1, Some("a")), (2, Some("a")), (3, None)]);
        let order = NodeOrder::live(&image);
        assert_eq!((order.ids.clone(), order.racks.is_none()), (vec![1, 2, 3], true));
    }

    #[test]
    fn explicit_assignments_are_checked() {
        let image = image_with(&[(1, None), (2, None), (3, None)]);
        assert_eq!(validate_assignment(&image, &[vec![1, 2], vec![3, 1]], None), Ok(2));
        assert_eq!(validate_assignment(&image, &[vec![1, 2]], Some(2)), Ok(2));
        for (bad, rf) in [
            (vec![], None),
            (vec![vec![]], None),
            (vec![vec![1, 9]], None),
            (vec![vec![1, 1]], None),
            (vec![vec![1, 2], vec![3]], None),
            (vec![vec![1]], Some(2)),
        ] {
            assert!(
                matches!(validate_assignment(&image, &bad, rf), Err(MetadataError::InvalidReplicaAssignment(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_hash_is_stable() {
        // Fixed values: a change here moves every topic's placement.
        assert_eq!(stable_hash(&[b"orders"]), 0x8c56_d95c_1323_defa);
        assert_eq!(stable_hash(&[]), 0xf52a_15e9_a9b5_e89b);
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    }
}
