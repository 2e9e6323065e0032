//! The client side of the cluster port: one connection per peer address,
//! shared by every caller and multiplexed by correlation id. A connection
//! that fails is dropped from the pool and the next call dials again.
//! With cluster TLS every connection is mutual TLS ([`ferry_tls::PeerTls`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_tls::PeerTls;
use ferry_util::sync::lock;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::TransportError;
use super::frame::{Frame, read_frame};
use super::message::{Pong, Request, Response, decode_response, encode_request};

/// Longest a connection attempt may take: a dead peer must fail fast so
/// Raft moves on (its RPCs last a heartbeat interval).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

struct Connection {
    writer: mpsc::Sender<Vec<u8>>,
    /// What the peer reads (which peer calls' payloads raw, binary
    /// replica fetches): asked once, by a ping.
    pong: OnceCell<Pong>,
    pending: Pending,
    next: AtomicU64,
    alive: Arc<AtomicBool>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Connection {
    /// Connects to the peer at `addr` through `dial` (the same address
    /// unless `[cluster] dial_via` routes it); TLS checks the peer's name.
    async fn open(
        addr: &str,
        dial: &str,
        timeout: Duration,
        tls: Option<&PeerTls>,
    ) -> Result<Connection, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { addr: addr.to_string(), reason };
        // Refused or reset: nothing serves the port (the process is gone);
        // a proxy in between that cannot reach it closes at once (EOF).
        let failed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof => {
                TransportError::Down { addr: addr.to_string(), reason: e.to_string() }
            }
            _ => unreachable(e.to_string()),
        };
        let connect = async {
            let stream = TcpStream::connect(dial).await?;
            let _ = stream.set_nodelay(true);
            Ok::<_, std::io::Error>(match tls {
                None => Connection::start(stream.into_split()),
                Some(tls) => Connection::start(tokio::io::split(tls.connect(addr, stream).await?)),
            })
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
            .map_err(failed)
    }

    /// Runs the reader and writer tasks of a connected stream.
    fn start<R, W>((mut reader, mut writer): (R, W)) -> Connection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        let (p, a) = (pending.clone(), alive.clone());
        let read_task = tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut reader).await {
                if let Some(waiter) = lock(&p).remove(&frame.correlation) {
                    let _ = waiter.send(frame);
                }
            }
            a.store(false, Ordering::Release);
            // Waiters see their sender dropped: the connection is gone.
            lock(&p).clear();
        });
        let (p, a) = (pending.clone(), alive.clone());
        let write_task = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            a.store(false, Ordering::Release);
            lock(&p).clear();
        });
        Connection {
            writer: tx,
            pong: OnceCell::new(),
            pending,
            next: AtomicU64::new(1),
            alive,
            tasks: [read_task, write_task],
        }
    }
}

/// Connections to peers, by address.
pub struct Pool {
    from: i32,
    quorum: String,
    tls: Option<PeerTls>,
    /// Peer address -> the address dialed instead (`[cluster] dial_via`).
    routes: BTreeMap<String, String>,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
}

impl Pool {
    /// A pool whose requests say they come from node `from` of quorum
    /// `quorum` (its fingerprint).
    pub fn new(from: i32, quorum: String) -> Pool {
        Pool { from, quorum, tls: None, routes: BTreeMap::new(), connections: Mutex::new(HashMap::new()) }
    }

    /// The same pool dialing its peers over mutual TLS.
    pub fn with_tls(self, tls: Option<PeerTls>) -> Pool {
        Pool { tls, ..self }
    }

    /// Dials `routes[addr]` instead of `addr` for the peers it names.
    pub fn routed(mut self, routes: BTreeMap<String, String>) -> Pool {
        self.routes = routes;
        self
    }

    async fn connection(&self, addr: &str, timeout: Duration) -> Result<Arc<Connection>, TransportError> {
        if let Some(c) = lock(&self.connections).get(addr).filter(|c| c.alive.load(Ordering::Acquire)) {
            return Ok(c.clone());
        }
        // The TLS handshake counts into the connect budget: a dead peer
        // still fails fast.
        let dial = self.routes.get(addr).map_or(addr, String::as_str);
        let fresh = Arc::new(Connection::open(addr, dial, timeout.min(CONNECT_TIMEOUT), self.tls.as_ref()).await?);
        let mut conns = lock(&self.connections);
        // Another caller may have connected meanwhile: one connection wins.
        let c = match conns.get(addr) {
            Some(c) if c.alive.load(Ordering::Acquire) => c.clone(),
            _ => {
                conns.insert(addr.to_string(), fresh.clone());
                fresh
            }
        };
        Ok(c)
    }

    /// Closes every connection (later calls dial again).
    pub fn close_all(&self) {
        lock(&self.connections).clear();
    }

    fn forget(&self, addr: &str, conn: &Arc<Connection>) {
        let mut conns = lock(&self.connections);
        if conns.get(addr).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(addr);
        }
    }

    /// Sends `request` to the node at `addr` and waits at most `timeout`
    /// for its response. A refusal comes back as [`TransportError::Refused`].
    /// A peer call or a replica fetch goes in the binary form if the peer
    /// reads it (asked once per connection), else as JSON (a node that
    /// predates it).
    pub async fn call(&self, addr: &str, request: &Request, timeout: Duration) -> Result<Response, TransportError> {
        let conn = self.connection(addr, timeout).await?;
        let binary = match request {
            Request::Peer(call) => self.pong(addr, &conn, timeout).await?.raw_version() >= call.raw_since(),
            Request::ReplicaFetch(_) => self.pong(addr, &conn, timeout).await?.binary_fetch,
            _ => false,
        };
        self.exchange(addr, &conn, request, binary, timeout).await
    }

    /// What the peer on `conn` answered a ping with (asked once per
    /// connection: a restarted peer may run another version). An answer
    /// of another kind reads as a node that reads nothing binary.
    async fn pong(&self, addr: &str, conn: &Arc<Connection>, timeout: Duration) -> Result<Pong, TransportError> {
        conn.pong
            .get_or_try_init(|| async {
                Ok::<_, TransportError>(match self.exchange(addr, conn, &Request::Ping, false, timeout).await? {
                    Response::Ping(pong) => pong,
                    _ => Pong {
                        node: -1,
                        incarnation: uuid::Uuid::nil(),
                        binary_peer: false,
                        raw_payloads: 0,
                        binary_fetch: false,
                    },
                })
            })
            .await
            .cloned()
    }

    /// One request and its response on `conn`.
    async fn exchange(
        &self,
        addr: &str,
        conn: &Arc<Connection>,
        request: &Request,
        binary: bool,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let correlation = conn.next.fetch_add(1, Ordering::Relaxed);
        let protocol = |reason: String| TransportError::Protocol { addr: addr.to_string(), reason };
        let frame = encode_request(correlation, self.from, &self.quorum, request, binary).map_err(protocol)?;
        let bytes = frame.encode().ok_or_else(|| protocol("request too large for one frame".into()))?;
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(correlation, tx);
        if conn.writer.send(bytes).await.is_err() {
            self.forget(addr, conn);
            return Err(TransportError::Closed(addr.to_string()));
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => {
                self.forget(addr, conn);
                return Err(TransportError::Closed(addr.to_string()));
            }
            Err(_) => {
                lock(&conn.pending).remove(&correlation);
                return Err(TransportError::Timeout { addr: addr.to_string(), timeout });
            }
        };
        match decode_response(&reply).map_err(protocol)? {
            Response::Refused(e) => Err(TransportError::Refused(e)),
            response => Ok(response),
        }
    }
}
