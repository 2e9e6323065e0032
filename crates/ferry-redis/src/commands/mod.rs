//! Command dispatch: the name picks a handler, which answers now
//! ([`Step::Reply`]) or asks the connection to wait ([`Step::Block`]) and
//! run it again when a list or stream it reads may have changed.

mod args;
mod conn;
mod lists;
mod pubsub;
mod stream_groups;
mod streams;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::Partition;
use ferry_broker::messaging::Queue;
use tokio::time::Instant;

pub(crate) use args::Args;
pub(crate) use pubsub::unsubscribe_all;

use crate::error::{CmdResult, CommandError};
use crate::resp::Reply;
use crate::session::Session;

/// What a command does next.
pub(crate) enum Step {
    /// Answer with this reply.
    Reply(Reply),
    /// Answer with these replies, in order (SUBSCRIBE to several channels).
    Replies(Vec<Reply>),
    /// Nothing ready: wait on `on` until `deadline` (`None`: forever),
    /// then run `retry` (the command, with `$` ids made concrete); at the
    /// deadline answer `timeout`.
    Block { on: Wait, deadline: Option<Instant>, retry: Vec<Bytes>, timeout: Reply },
    /// Answer, then close the connection (QUIT).
    Quit(Reply),
    /// Answer with what `durable` resolves to once its append is on disk
    /// (or its error if it fails). Pipelined appends wait together, so
    /// they share fsyncs (see [`DEFERRING`]).
    Deferred(Durable),
}

/// An append's wait for disk, then its reply.
pub(crate) type Durable = Pin<Box<dyn Future<Output = CmdResult<Reply>> + Send>>;

/// Commands whose replies may wait for disk behind later commands of a
/// pipeline. Any other command first waits for those before it runs, so a
/// read in the same pipeline sees the appends before it.
pub(crate) const DEFERRING: &[&str] = &["XADD", "LPUSH", "RPUSH"];

/// What a blocked command waits for.
pub(crate) enum Wait {
    /// A message published to one of these queues (lists).
    Queues(Vec<Arc<Queue>>),
    /// The high watermark of one of these partitions moving (streams);
    /// `poll`: a stream waited for does not exist yet, so look again every
    /// [`crate::connection::POLL_MISSING`] too.
    Partitions { parts: Vec<Arc<Partition>>, poll: bool },
}

/// Commands a connection may send before it is authenticated.
const BEFORE_AUTH: &[&str] = &["AUTH", "HELLO", "QUIT", "RESET"];

/// Commands a RESP2 connection may send while subscribed.
const WHILE_SUBSCRIBED: &[&str] =
    &["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "PING", "QUIT", "RESET"];

/// Runs one command. `name` is upper case.
pub(crate) async fn execute(s: &mut Session, name: &str, args: &[Bytes]) -> Step {
    match run(s, name, args).await {
        Ok(step) => step,
        Err(e) => Step::Reply(e.reply()),
    }
}

async fn run(s: &mut Session, name: &str, raw: &[Bytes]) -> CmdResult<Step> {
    if s.authorize.is_none() && !BEFORE_AUTH.contains(&name) {
        return Err(CommandError::Reply("NOAUTH Authentication required.".into()));
    }
    if !s.resp3 && s.subs.active() && !WHILE_SUBSCRIBED.contains(&name) {
        return Err(CommandError::err(format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            name.to_ascii_lowercase()
        )));
    }
    let a = Args::new(name, raw);
    let reply = match name {
        "PING" | "ECHO" | "SELECT" | "HELLO" | "AUTH" | "CLIENT" | "INFO" | "COMMAND" | "QUIT" | "RESET" | "DBSIZE"
        | "TYPE" | "EXISTS" | "DEL" => return conn::run(s, name, a).await,
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "SUNSUBSCRIBE" | "PUBLISH"
        | "SPUBLISH" => return pubsub::run(s, name, a),
        "LPUSH" | "RPUSH" | "LPOP" | "RPOP" | "BLPOP" | "BRPOP" | "LMOVE" | "BLMOVE" | "RPOPLPUSH" | "BRPOPLPUSH"
        | "LLEN" | "LRANGE" | "LREM" | "LINDEX" | "LSET" | "LINSERT" => return lists::run(s, name, a).await,
        n if n.starts_with('X') => return streams::run(s, name, a).await,
        _ => unknown(name, raw),
    };
    Ok(Step::Reply(reply))
}

/// Redis's answer to a command it does not have.
fn unknown(name: &str, raw: &[Bytes]) -> Reply {
    let shown: Vec<String> =
        raw.iter().skip(1).take(8).map(|a| format!("'{}'", String::from_utf8_lossy(&a[..a.len().min(128)]))).collect();
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(raw.first().map_or(name.as_bytes(), |n| &n[..n.len().min(128)])),
        shown.join(" ")
    ))
}
