//! The fault schedule: a seed gives the same faults, nodes and timings
//! every time. Faults come one at a time (each heals before the next), and
//! the first ones go through every kind so that even a short run injects
//! each kind once.

use std::fmt;
use std::time::Duration;

use crate::proxy::NodeId;

/// SplitMix64: small, seedable, the same on every platform and version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }

    /// One element of `items` (non-empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9, restarted when the fault ends.
    Kill,
    /// SIGSTOP, SIGCONT when the fault ends.
    Pause,
    /// One node cut from all others: a majority/minority split.
    Isolate,
    /// One node cut from the controller leader only.
    CutFromLeader,
    /// Traffic from one node to another dropped, the other way kept.
    OneWay,
    /// The others split in two halves that only the bridge node joins.
    Bridge,
    /// Every link delayed.
    Latency,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::CutFromLeader,
        FaultKind::OneWay,
        FaultKind::Bridge,
        FaultKind::Latency,
    ];
}

/// One fault with its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 `node`.
    Kill(NodeId),
    /// SIGSTOP `node`.
    Pause(NodeId),
    /// Cut `node` from every other node.
    Isolate(NodeId),
    /// Cut `node` from the controller leader (another node, if `node`
    /// leads when the fault starts).
    CutFromLeader(NodeId),
    /// Drop traffic from the first node to the second.
    OneWay(NodeId, NodeId),
    /// `node` bridges the two halves of the others.
    Bridge(NodeId),
    /// Delay every link by this many milliseconds.
    Latency(u64),
}

impl Fault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::Pause(_) => FaultKind::Pause,
            Fault::Isolate(_) => FaultKind::Isolate,
            Fault::CutFromLeader(_) => FaultKind::CutFromLeader,
            Fault::OneWay(..) => FaultKind::OneWay,
            Fault::Bridge(_) => FaultKind::Bridge,
            Fault::Latency(_) => FaultKind::Latency,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill -9 node {n}"),
            Fault::Pause(n) => write!(f, "SIGSTOP node {n}"),
            Fault::Isolate(n) => write!(f, "isolate node {n}"),
            Fault::CutFromLeader(n) => write!(f, "cut node {n} from the controller leader"),
            Fault::OneWay(a, b) => write!(f, "drop traffic node {a} -> node {b}"),
            Fault::Bridge(n) => write!(f, "bridge through node {n}"),
            Fault::Latency(ms) => write!(f, "delay every link {ms} ms"),
        }
    }
}

/// A fault, when it starts (from the run's start) and how long it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Start, from the beginning of the run.
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
    /// How long it lasts before it heals.
    pub lasts: Duration,
}

/// How faults are drawn.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The nodes faults pick from (at least 2).
    pub nodes: Vec<NodeId>,
    /// The kinds drawn from.
    pub kinds: Vec<FaultKind>,
    /// Faults last between these.
    pub lasts: (Duration, Duration),
    /// Quiet time after each fault heals, between these.
    pub quiet: (Duration, Duration),
    /// Latency faults delay by between these many milliseconds.
    pub latency_ms: (u64, u64),
}

/// The faults of a run of `length`, from `seed`.
pub fn schedule(seed: u64, plan: &Plan, length: Duration) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    // The first round: every kind once, in a seeded order.
    let mut first = plan.kinds.clone();
    for i in (1..first.len()).rev() {
        first.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut at = rng.between(plan.quiet.0, plan.quiet.1);
    loop {
        let kind = if steps.len() < first.len() { first[steps.len()] } else { rng.pick(&plan.kinds) };
        let node = rng.pick(&plan.nodes);
        let fault = match kind {
            FaultKind::Kill => Fault::Kill(node),
            FaultKind::Pause => Fault::Pause(node),
            FaultKind::Isolate => Fault::Isolate(node),
            FaultKind::CutFromLeader => Fault::CutFromLeader(node),
            FaultKind::OneWay => {
                let others: Vec<NodeId> = plan.nodes.iter().copied().filter(|n| *n != node).collect();
                Fault::OneWay(node, rng.pick(&others))
            }
            FaultKind::Bridge => Fault::Bridge(node),
            FaultKind::Latency => {
                Fault::Latency(plan.latency_ms.0 + rng.below(plan.latency_ms.1 - plan.latency_ms.0 + 1))
            }
        };
        let lasts = rng.between(plan.lasts.0, plan.lasts.1);
        if at + lasts > length {
            return steps;
        }
        steps.push(Step { at, fault, lasts });
        at += lasts + rng.between(plan.quiet.0, plan.quiet.1);
    }
}

/// The halves a bridge joins: the nodes other than `bridge`, split in two.
pub fn bridge_halves(nodes: &[NodeId], bridge: NodeId) -> (Vec<NodeId>, Vec<NodeId>) {
    let others: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != bridge).collect();
    let mid = others.len().div_ceil(2);
    (others[..mid].to_vec(), others[mid..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            nodes: vec![1, 2, 3],
            kinds: FaultKind::ALL.to_vec(),
            lasts: (Duration::from_secs(2), Duration::from_secs(4)),
            quiet: (Duration::from_secs(1), Duration::from_secs(2)),
            latency_ms: (20, 200),
        }
    }

    #[test]
    fn a_seed_gives_the_same_schedule_and_every_kind_comes_first() {
        let a = schedule(7, &plan(), Duration::from_secs(120));
        assert_eq!(a, schedule(7, &plan(), Duration::from_secs(120)));
        assert_ne!(a, schedule(8, &plan(), Duration::from_secs(120)));
        let mut kinds: Vec<FaultKind> = a[..7].iter().map(|s| s.fault.kind()).collect();
        kinds.sort();
        assert_eq!(kinds, FaultKind::ALL.to_vec());
        // One at a time, inside the run.
        for w in a.windows(2) {
            assert!(w[0].at + w[0].lasts < w[1].at, "{w:?}");
        }
        let last = a.last().unwrap();
        assert!(last.at + last.lasts <= Duration::from_secs(120));
        for s in &a {
            if let Fault::OneWay(x, y) = s.fault {
                assert_ne!(x, y);
            }
            if let Fault::Latency(ms) = s.fault {
                assert!((20..=200).contains(&ms));
            }
        }
    }

    #[test]
    fn bridges_split_the_others() {
        assert_eq!(bridge_halves(&[1, 2, 3], 2), (vec![1], vec![3]));
        assert_eq!(bridge_halves(&[1, 2, 3, 4, 5], 3), (vec![1, 2], vec![4, 5]));
    }
}
