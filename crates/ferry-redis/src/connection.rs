//! One client connection: commands in, replies out, in order; pub/sub
//! messages pushed between replies; blocked commands (BLPOP, XREAD BLOCK,
//! ...) wait for their lists' or streams' wake-ups while the socket is
//! watched, so a client that goes away while blocked takes nothing.
//!
//! Input that is not RESP gets `-ERR Protocol error: ...` and the
//! connection is closed, as Redis does; nothing else is affected.
//!
//! When the vhost whose queues its lists are is deleted (through any
//! node), the connection gets `-ERR vhost '..' is deleted` (the answer of
//! the command it waits on, if any) and is closed, as AMQP connections get
//! connection.close 320 and STOMP ones an ERROR frame.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};

use ferry_tls::MaybeTls;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::commands::{self, DEFERRING, Durable, Step, Wait};
use crate::pubsub::Subscriber;
use crate::resp::{Reply, decode_command, encode};
use crate::server::Server;
use crate::session::Session;

/// How often a blocked XREAD looks for a stream that does not exist yet
/// (it has no partition to wake it).
pub(crate) const POLL_MISSING: Duration = Duration::from_millis(100);

/// Replies buffered before they are written even mid-pipeline.
const FLUSH_AT: usize = 64 << 10;

/// Appends whose replies wait for disk before they all are awaited.
const MAX_DEFERRED: usize = 1024;

/// Client ids (CLIENT ID) double as queue owner ids; they start high so
/// they never meet the AMQP (from 1) or STOMP (from 2^62) front-ends'.
static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 61);

struct Conn {
    rd: ReadHalf<MaybeTls>,
    wr: WriteHalf<MaybeTls>,
    inbuf: BytesMut,
    out: BytesMut,
    pushes: mpsc::Receiver<Reply>,
    /// Replies of pipelined appends waiting for disk, in order.
    deferred: Vec<Durable>,
    session: Session,
    shutdown: watch::Receiver<bool>,
    /// Turns true when the vhost open at connect time is deleted (none:
    /// there was none).
    vhost_gone: Option<watch::Receiver<bool>>,
}

/// What ended a wait.
enum Woken {
    Retry,
    Timeout,
    Closed,
}

/// Serves one client until it quits, goes away, breaks the protocol, or
/// the server shuts down.
pub(crate) async fn run(
    stream: ferry_tls::MaybeTls,
    peer: SocketAddr,
    server: Arc<Server>,
    shutdown: watch::Receiver<bool>,
) {
    let _open = server.metrics.connection();
    let (rd, wr) = tokio::io::split(stream);
    let (subscriber, pushes) = Subscriber::new(server.config.pubsub_buffer);
    let vhost_gone = server.vhosts.get(&server.config.vhost).map(|v| v.deleted());
    let (authorize, user) = match &server.config.default_login {
        Some((u, p)) => ((server.authenticate)(u, p, peer.ip(), &server.config.vhost).ok(), u.clone()),
        None => (None, String::new()),
    };
    let session = Session {
        server,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        peer,
        resp3: false,
        name: None,
        authorize,
        user,
        login_delay: std::time::Duration::ZERO,
        subs: Default::default(),
        subscriber,
    };
    let mut conn = Conn {
        rd,
        wr,
        inbuf: BytesMut::with_capacity(16 << 10),
        out: BytesMut::new(),
        pushes,
        deferred: Vec::new(),
        session,
        shutdown,
        vhost_gone,
    };
    if let Err(e) = conn.serve().await {
        tracing::debug!(error = %e, "redis connection ended");
    }
    commands::unsubscribe_all(&mut conn.session);
}

impl Conn {
    async fn serve(&mut self) -> std::io::Result<()> {
        let limits = self.session.server.config.limits;
        loop {
            loop {
                match decode_command(&mut self.inbuf, &limits) {
                    Ok(Some(args)) => {
                        if !self.command(args).await? {
                            return self.flush().await;
                        }
                        if self.out.len() >= FLUSH_AT {
                            self.flush().await?;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.settle().await;
                        self.session.server.stats.protocol_error();
                        encode(&Reply::Error(format!("ERR {e}")), self.session.resp3, &mut self.out);
                        return self.flush().await;
                    }
                }
            }
            self.settle().await;
            if self.vhost_deleted() {
                encode(&self.vhost_gone_reply(), self.session.resp3, &mut self.out);
                return self.flush().await;
            }
            self.flush().await?;
            if self.session.subscriber.overflowed.load(Ordering::Relaxed) {
                tracing::debug!("pub/sub subscriber too slow, closing");
                return Ok(());
            }
            tokio::select! {
                n = self.rd.read_buf(&mut self.inbuf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                Some(m) = self.pushes.recv() => {
                    let resp3 = self.session.resp3;
                    encode(&m, resp3, &mut self.out);
                    while let Ok(m) = self.pushes.try_recv() {
                        encode(&m, resp3, &mut self.out);
                        if self.out.len() >= FLUSH_AT {
                            break;
                        }
                    }
                }
                _ = self.shutdown.changed() => return Ok(()),
                _ = deleted(&mut self.vhost_gone) => {}
            }
        }
    }

    /// Whether the connection's vhost was deleted.
    fn vhost_deleted(&mut self) -> bool {
        self.vhost_gone.as_mut().is_some_and(|g| *g.borrow_and_update())
    }

    fn vhost_gone_reply(&self) -> Reply {
        Reply::Error(format!("ERR vhost '{}' is deleted", self.session.server.config.vhost))
    }

    /// Waits for the deferred appends, in order, and buffers their replies.
    async fn settle(&mut self) {
        let resp3 = self.session.resp3;
        for durable in std::mem::take(&mut self.deferred) {
            match durable.await {
                Ok(reply) => encode(&reply, resp3, &mut self.out),
                Err(e) => encode(&e.reply(), resp3, &mut self.out),
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Runs one command and buffers its reply; false: close afterwards.
    async fn command(&mut self, args: Vec<Bytes>) -> std::io::Result<bool> {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let started = std::time::Instant::now();
        let api = crate::metrics::command_index(&name);
        if !self.deferred.is_empty() && !DEFERRING.contains(&name.as_str()) {
            self.settle().await;
        }
        let step = commands::execute(&mut self.session, &name, &args).await;
        let delay = std::mem::take(&mut self.session.login_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let step = match step {
            Step::Block { on, deadline, retry, timeout } => {
                self.flush().await?;
                match self.block(&name, on, deadline, retry, timeout).await? {
                    Some(step) => step,
                    None => return Ok(false),
                }
            }
            other => other,
        };
        let resp3 = self.session.resp3;
        let go_on = match step {
            // An append that failed at once, behind appends waiting for disk.
            Step::Reply(r) if !self.deferred.is_empty() => {
                self.deferred.push(Box::pin(std::future::ready(Ok(r))));
                true
            }
            Step::Reply(r) => {
                encode(&r, resp3, &mut self.out);
                true
            }
            Step::Replies(rs) => {
                rs.iter().for_each(|r| encode(r, resp3, &mut self.out));
                true
            }
            Step::Quit(r) => {
                encode(&r, resp3, &mut self.out);
                false
            }
            Step::Deferred(durable) => {
                self.deferred.push(durable);
                if self.deferred.len() >= MAX_DEFERRED {
                    self.settle().await;
                }
                true
            }
            // A retried command never blocks twice over: block() only returns other steps.
            Step::Block { timeout, .. } => {
                encode(&timeout, resp3, &mut self.out);
                true
            }
        };
        self.session.server.metrics.observe(api, started.elapsed());
        Ok(go_on)
    }

    /// Waits for what `on` names, running the command again after each
    /// wake-up, until it answers or `deadline` passes. The wake-ups are
    /// armed before each run, so nothing published in between is missed.
    /// `None`: the client went away or the server is shutting down.
    async fn block(
        &mut self,
        name: &str,
        mut on: Wait,
        deadline: Option<Instant>,
        mut retry: Vec<Bytes>,
        timeout: Reply,
    ) -> std::io::Result<Option<Step>> {
        loop {
            let notify = Arc::new(Notify::new());
            let (queues, poll) = match &on {
                Wait::Queues(qs) => (qs.clone(), false),
                Wait::Partitions { parts, poll } => {
                    parts.iter().for_each(|p| p.register_waiter(&notify));
                    (Vec::new(), *poll)
                }
            };
            let mut armed: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
                queues.iter().map(|q| Box::pin(q.notifier().notified())).collect();
            armed.iter_mut().for_each(|n| {
                n.as_mut().enable();
            });
            let next = commands::execute(&mut self.session, name, &retry).await;
            let Step::Block { on: next_on, retry: next_retry, .. } = next else { return Ok(Some(next)) };
            let reading = self.inbuf.len() < self.session.server.config.limits.max_inline;
            let woken = tokio::select! {
                _ = any(&mut armed) => Woken::Retry,
                _ = notify.notified() => Woken::Retry,
                _ = sleep_until(deadline) => Woken::Timeout,
                _ = tokio::time::sleep(POLL_MISSING), if poll => Woken::Retry,
                n = self.rd.read_buf(&mut self.inbuf), if reading => match n {
                    Ok(0) | Err(_) => Woken::Closed,
                    Ok(_) => Woken::Retry,
                },
                _ = self.shutdown.changed() => Woken::Closed,
                // Answered below, whichever branch won.
                _ = deleted(&mut self.vhost_gone) => Woken::Retry,
            };
            drop(armed);
            // A deleted vhost wakes its queues' waiters too, and select!
            // picks among ready branches at random: the deletion answers
            // first, whichever branch won.
            if self.vhost_deleted() {
                return Ok(Some(Step::Quit(self.vhost_gone_reply())));
            }
            match woken {
                Woken::Retry => {
                    on = next_on;
                    retry = next_retry;
                }
                Woken::Timeout => return Ok(Some(Step::Reply(timeout))),
                Woken::Closed => return Ok(None),
            }
        }
    }
}

/// Ready when any of `armed` is notified; never if there are none.
fn any<'a, 'b>(armed: &'a mut [Pin<Box<tokio::sync::futures::Notified<'b>>>]) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |cx| {
        for n in armed.iter_mut() {
            if n.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
}

/// Ready when the vhost's deletion flag changes; never without a vhost
/// (or once its sender is gone).
async fn deleted(gone: &mut Option<watch::Receiver<bool>>) {
    let open = match gone {
        Some(g) => g.changed().await.is_ok(),
        None => false,
    };
    if !open {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
