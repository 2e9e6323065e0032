//! A TCP proxy between cluster nodes that the harness controls: one
//! listening port per ordered pair of nodes (node `from` dials node `to`
//! through it, see `[cluster] dial_via`), and per direction of traffic a
//! switch that drops bytes (a partition, one-way loss) and a delay
//! (latency). Dropped bytes are gone, as on a cut link; a connection that
//! lost bytes is closed when the link heals, since its stream is torn (TCP
//! would have timed it out). Loopback only, unprivileged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// A node id, as the cluster numbers them.
pub type NodeId = i32;

/// What each direction of traffic suffers now.
#[derive(Default)]
struct Faults {
    /// Traffic from the first node to the second is dropped.
    dropped: BTreeSet<(NodeId, NodeId)>,
    /// Traffic from the first node to the second is delayed.
    delayed: BTreeMap<(NodeId, NodeId), Duration>,
}

/// One proxied connection.
struct Conn {
    /// It lost bytes: close it when the link heals.
    torn: AtomicBool,
    close: Notify,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    conns: Mutex<Vec<Weak<Conn>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The proxy, serving until dropped.
pub struct Proxy {
    shared: Arc<Shared>,
    /// (from, to) -> the proxy address `from` dials to reach `to`.
    ports: BTreeMap<(NodeId, NodeId), SocketAddr>,
    nodes: Vec<NodeId>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens for every ordered pair of `nodes` (id, cluster address) on a
    /// free loopback port; `from`'s connections to `to` go to `to`'s address.
    pub fn start(nodes: &[(NodeId, String)]) -> std::io::Result<Proxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let mut ports = BTreeMap::new();
        for (from, _) in nodes {
            for (to, target) in nodes {
                if from == to {
                    continue;
                }
                let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
                ports.insert((*from, *to), listener.local_addr()?);
                runtime.spawn(accept(listener, (*from, *to), target.clone(), shared.clone()));
            }
        }
        Ok(Proxy { shared, ports, nodes: nodes.iter().map(|(id, _)| *id).collect(), runtime: Some(runtime) })
    }

    /// The proxy address `from` dials to reach `to`.
    pub fn port(&self, from: NodeId, to: NodeId) -> SocketAddr {
        self.ports[&(from, to)]
    }

    /// Node `from`'s `[cluster] dial_via` table: each peer's cluster
    /// address -> its proxy port.
    pub fn dial_via_toml(&self, from: NodeId, addresses: &BTreeMap<NodeId, String>) -> String {
        let routes: Vec<String> = addresses
            .iter()
            .filter(|(to, _)| **to != from)
            .map(|(to, addr)| format!("\"{addr}\" = \"{}\"", self.port(from, *to)))
            .collect();
        format!("dial_via = {{ {} }}\n", routes.join(", "))
    }

    /// Drops traffic from `from` to `to` (one way).
    pub fn drop_one_way(&self, from: NodeId, to: NodeId) {
        lock(&self.shared.faults).dropped.insert((from, to));
    }

    /// Cuts `a` and `b` apart (both ways).
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.drop_one_way(a, b);
        self.drop_one_way(b, a);
    }

    /// Splits the nodes into `side` and the rest: no traffic across.
    pub fn split(&self, side: &[NodeId]) {
        for a in side {
            for b in self.nodes.iter().filter(|n| !side.contains(n)) {
                self.cut(*a, *b);
            }
        }
    }

    /// Delays every direction of every link by `by`.
    pub fn delay_all(&self, by: Duration) {
        let mut f = lock(&self.shared.faults);
        for pair in self.ports.keys() {
            f.delayed.insert(*pair, by);
        }
    }

    /// Removes every fault and closes the connections that lost bytes.
    pub fn heal(&self) {
        *lock(&self.shared.faults) = Faults::default();
        let mut conns = lock(&self.shared.conns);
        conns.retain(|c| {
            let Some(c) = c.upgrade() else { return false };
            if c.torn.load(Ordering::Acquire) {
                c.close.notify_waiters();
                // A pump between reads is told on its next wait.
                c.close.notify_one();
            }
            true
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, link: (NodeId, NodeId), target: String, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let (target, shared) = (target.clone(), shared.clone());
        tokio::spawn(async move {
            // A node that is down refuses: so does its proxy port.
            let Ok(Ok(outbound)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&target)).await
            else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let conn = Arc::new(Conn { torn: AtomicBool::new(false), close: Notify::new() });
            lock(&shared.conns).push(Arc::downgrade(&conn));
            let (in_r, in_w) = inbound.into_split();
            let (out_r, out_w) = outbound.into_split();
            let up = pump(in_r, out_w, link, conn.clone(), shared.clone());
            let down = pump(out_r, in_w, (link.1, link.0), conn.clone(), shared.clone());
            tokio::select! {
                () = up => {}
                () = down => {}
                () = conn.close.notified() => {}
            }
        });
    }
}

/// Copies one direction, `dir.0` -> `dir.1`, through its faults; returns
/// when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: (NodeId, NodeId),
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) {
    // A writer of its own: delayed chunks leave in order, at their time,
    // while reading goes on.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (dropped, delay) = {
                let f = lock(&shared.faults);
                (f.dropped.contains(&dir), f.delayed.get(&dir).copied().unwrap_or_default())
            };
            if dropped {
                conn.torn.store(true, Ordering::Release);
                continue;
            }
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server, and a proxy for nodes 1 (nothing listens) and 2 (the echo).
    fn setup(rt: &tokio::runtime::Runtime) -> Proxy {
        let echo = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = echo.local_addr().unwrap().to_string();
        rt.spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Proxy::start(&[(1, "127.0.0.1:1".into()), (2, addr)]).unwrap()
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> bool {
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        matches!(tokio::time::timeout(within, s.read_exact(&mut buf)).await, Ok(Ok(_)))
    }

    #[test]
    fn links_pass_drop_delay_and_heal() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let proxy = setup(&rt);
        let through = proxy.port(1, 2);
        rt.block_on(async {
            let mut s = TcpStream::connect(through).await.unwrap();
            assert!(round_trip(&mut s, Duration::from_secs(5)).await, "a clean link passes");
            // One way: 2's answers to 1 are dropped.
            proxy.drop_one_way(2, 1);
            assert!(!round_trip(&mut s, Duration::from_millis(300)).await, "answers dropped");
            proxy.heal();
            // The torn connection is closed; a new one passes.
            let mut buf = [0u8; 16];
            let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
            let mut s = TcpStream::connect(through).await.unwrap();
            assert!(round_trip(&mut s, Duration::from_secs(5)).await);
            // Latency: both ways, so a round trip takes twice the delay.
            proxy.delay_all(Duration::from_millis(150));
            let t = std::time::Instant::now();
            assert!(round_trip(&mut s, Duration::from_secs(5)).await);
            assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
            proxy.heal();
            // A split cuts the pair both ways.
            proxy.split(&[1]);
            assert!(!round_trip(&mut s, Duration::from_millis(300)).await);
            proxy.heal();
        });
        // A node that is down: its proxy port closes what it accepts.
        rt.block_on(async {
            let mut s = TcpStream::connect(proxy.port(2, 1)).await.unwrap();
            let mut buf = [0u8; 4];
            let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            assert!(matches!(r, Ok(Ok(0) | Err(_))), "{r:?}");
        });
        let routes = proxy.dial_via_toml(1, &[(1, "a:1".into()), (2, "b:2".into())].into());
        assert_eq!(routes, format!("dial_via = {{ \"b:2\" = \"{}\" }}\n", proxy.port(1, 2)));
    }
}
