//! Lists as queues: a list is a durable queue of the configured vhost
//! (default `/`), so AMQP and STOMP consumers read what RPUSH wrote and the
//! other way round.
//!
//! Where this differs from Redis (docs/protocols.md, "## Redis"):
//! - A queue has one end to add at and one to take from: LPUSH and RPUSH
//!   both append, LPOP and RPOP (and their blocking and moving forms) both
//!   take the oldest element. The queue patterns (LPUSH + BRPOP,
//!   RPUSH + BLPOP) behave as in Redis; a list used as a stack does not.
//! - A pushed element is acknowledged once durable (fsynced per the flush
//!   policy); a pop takes it for good.
//! - LMOVE/BLMOVE append to the destination, wait until that is durable,
//!   then remove from the source: a crash in between leaves the element in
//!   both lists, never in neither.
//! - LRANGE lists elements ready for delivery from the head, read without
//!   taking them. LREM (completing the reliable-queue pattern) takes
//!   elements off the head until it has found its matches and hands the
//!   others back in order: AMQP consumers see those as redelivered.
//! - LINDEX reads a ready element as LRANGE does; LSET and LINSERT answer
//!   `-ERR` (an element in the middle of a log cannot change or gain a
//!   neighbour).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::messaging::{HeaderValue, Headers, Message, Published, Queue, QueueSpec};
use tokio::time::Instant;

use super::args::parse_timeout;
use super::conn::key_name;
use super::{Args, Step, Wait};
use crate::error::{CmdResult, CommandError};
use crate::resp::Reply;
use crate::server::Access;
use crate::session::Session;

/// AMQP basic properties with only `delivery-mode = 2` (persistent): the
/// property flags (bit 12) then the octet. What AMQP consumers of a list
/// see as the message's properties.
const PERSISTENT_PROPERTIES: &[u8] = &[0x10, 0x00, 0x02];

pub(super) async fn run(s: &mut Session, name: &str, a: Args<'_>) -> CmdResult<Step> {
    let reply = match name {
        "LPUSH" | "RPUSH" => {
            a.at_least(3)?;
            return push(s, a.get(1)?, &a.raw()[2..]);
        }
        "LPOP" | "RPOP" => {
            a.at_least(2)?;
            if a.len() > 3 {
                return Err(CommandError::Syntax);
            }
            let q = queue(s, a.get(1)?, false, Access::Read)?;
            if a.len() == 3 {
                let n = a.count(2)?;
                let Some(q) = q else { return Ok(Step::Reply(Reply::NullArray)) };
                let got = pop(s, &q, n)?;
                if got.is_empty() { Reply::NullArray } else { Reply::Array(got.into_iter().map(Reply::Bulk).collect()) }
            } else {
                let Some(q) = q else { return Ok(Step::Reply(Reply::Null)) };
                pop(s, &q, 1)?.pop().map_or(Reply::Null, Reply::Bulk)
            }
        }
        "BLPOP" | "BRPOP" => {
            a.at_least(3)?;
            let deadline = parse_timeout(a.get(a.len() - 1)?)?.map(|d| Instant::now() + d);
            let mut queues = Vec::new();
            for key in &a.raw()[1..a.len() - 1] {
                let q = queue(s, key, true, Access::Read)?.ok_or_else(|| CommandError::err("no such list"))?;
                if let Some(v) = pop(s, &q, 1)?.pop() {
                    return Ok(Step::Reply(Reply::Array(vec![Reply::Bulk(key.clone()), Reply::Bulk(v)])));
                }
                queues.push(q);
            }
            return Ok(block(queues, deadline, &a, Reply::NullArray));
        }
        "LMOVE" | "RPOPLPUSH" => {
            a.exactly(if name == "LMOVE" { 5 } else { 3 })?;
            if name == "LMOVE" {
                directions(&a, 3)?;
            }
            let Some(src) = queue(s, a.get(1)?, false, Access::Read)? else { return Ok(Step::Reply(Reply::Null)) };
            move_one(s, &src, a.get(2)?).await?.map_or(Reply::Null, Reply::Bulk)
        }
        "BLMOVE" | "BRPOPLPUSH" => {
            a.exactly(if name == "BLMOVE" { 6 } else { 4 })?;
            if name == "BLMOVE" {
                directions(&a, 3)?;
            }
            let deadline = parse_timeout(a.get(a.len() - 1)?)?.map(|d| Instant::now() + d);
            let src = queue(s, a.get(1)?, true, Access::Read)?.ok_or_else(|| CommandError::err("no such list"))?;
            if let Some(v) = move_one(s, &src, a.get(2)?).await? {
                return Ok(Step::Reply(Reply::Bulk(v)));
            }
            return Ok(block(vec![src], deadline, &a, Reply::Null));
        }
        "LREM" => {
            a.exactly(4)?;
            let count = a.int(2)?;
            let Some(q) = queue(s, a.get(1)?, false, Access::Write)? else { return Ok(Step::Reply(Reply::Int(0))) };
            Reply::Int(remove(s, &q, count, a.get(3)?)? as i64)
        }
        "LLEN" => {
            a.exactly(2)?;
            Reply::Int(queue(s, a.get(1)?, false, Access::Read)?.map_or(0, |q| q.ready_count() as i64))
        }
        "LRANGE" => {
            a.exactly(4)?;
            let Some(q) = queue(s, a.get(1)?, false, Access::Read)? else {
                return Ok(Step::Reply(Reply::Array(vec![])));
            };
            let (start, stop) = (a.int(2)?, a.int(3)?);
            range(&q, start, stop)?
        }
        "LINDEX" => {
            a.exactly(3)?;
            let Some(q) = queue(s, a.get(1)?, false, Access::Read)? else { return Ok(Step::Reply(Reply::Null)) };
            let i = a.int(2)?;
            let len = q.ready_count() as i64;
            let at = if i < 0 { len + i } else { i };
            if at < 0 || at >= len {
                Reply::Null
            } else {
                q.peek(at as u64, 1)?.pop().map_or(Reply::Null, |m| Reply::Bulk(m.body))
            }
        }
        // A queue's log is append-only: an element in the middle cannot
        // change or gain a neighbour.
        "LSET" | "LINSERT" => {
            a.exactly(if name == "LSET" { 4 } else { 5 })?;
            queue(s, a.get(1)?, false, Access::Write)?;
            Reply::err(format!(
                "{name} is not supported: a Ferry list is a queue (push at the tail, pop at the head) and cannot change in the middle"
            ))
        }
        _ => super::unknown(name, a.raw()),
    };
    Ok(Step::Reply(reply))
}

/// LEFT / RIGHT words (accepted, and without effect: see the module docs).
fn directions(a: &Args<'_>, from: usize) -> CmdResult<()> {
    for i in from..from + 2 {
        if !matches!(a.upper(i)?.as_str(), "LEFT" | "RIGHT") {
            return Err(CommandError::Syntax);
        }
    }
    Ok(())
}

fn block(queues: Vec<Arc<Queue>>, deadline: Option<Instant>, a: &Args<'_>, timeout: Reply) -> Step {
    Step::Block { on: Wait::Queues(queues), deadline, retry: a.raw().to_vec(), timeout }
}

/// The list `key`'s queue; created (durable) if `create`, else `None` when absent.
fn queue(s: &Session, key: &Bytes, create: bool, access: Access) -> CmdResult<Option<Arc<Queue>>> {
    let name = key_name(key)?;
    s.check(access, "queue", name)?;
    let vhost_name = &s.server.config.vhost;
    let vhost = s
        .server
        .vhosts
        .get(vhost_name)
        .ok_or_else(|| CommandError::err(format!("vhost '{vhost_name}' is not served")))?;
    if let Some(q) = vhost.queue(name) {
        return Ok(Some(q));
    }
    if !create {
        return Ok(None);
    }
    s.check(Access::Configure, "queue", name)?;
    let spec = QueueSpec {
        name: name.to_string(),
        durable: true,
        exclusive_owner: None,
        auto_delete: false,
        // A list is one node's, as a key of one Redis server: never the
        // cluster's default quorum type.
        arguments: [("x-queue-type".to_string(), HeaderValue::Str("classic".into()))].into(),
    };
    Ok(Some(vhost.declare_queue(spec, false, s.id)?))
}

fn message(key: &str, body: Bytes) -> Message {
    Message {
        exchange: String::new(),
        routing_key: key.to_string(),
        properties: Bytes::from_static(PERSISTENT_PROPERTIES),
        body,
        persistent: true,
        headers: Headers::new(),
        expires_at: None,
        priority: 0,
        deliver_at: None,
        retry_queue: None,
        retries: 0,
    }
}

/// Appends `values` to the list `key`; answers the length once durable.
/// Pushes from every connection share record batches and fsyncs
/// ([`crate::list_appender`]), except on lists that may refuse elements.
fn push(s: &Session, key: &Bytes, values: &[Bytes]) -> CmdResult<Step> {
    let q = queue(s, key, true, Access::Write)?.ok_or_else(|| CommandError::err("no such list"))?;
    let name = key_name(key)?;
    let elements: Vec<Message> = values.iter().map(|v| message(name, v.clone())).collect();
    s.server.stats.list_pushes(values.len() as u64);
    if !q.args.limited() && q.args.max_priority.is_none() {
        let done = s.server.lists.get(name, &q).push(elements);
        return Ok(Step::Deferred(Box::pin(async move {
            let len = done.await.map_err(|_| CommandError::err("the list's appender stopped"))??;
            Ok(Reply::Int(len))
        })));
    }
    match q.publish_all(&elements)? {
        Published::Stored(off) => {
            let reply = Reply::Int(q.ready_count() as i64);
            let durable = durable(&q, off);
            Ok(Step::Deferred(Box::pin(async move { durable.await.map(|()| reply) })))
        }
        Published::Rejected => Err(CommandError::err(format!("list '{name}' is full"))),
    }
}

/// Resolves once the queue's log holds `offset` on disk.
fn durable(q: &Queue, offset: u64) -> impl Future<Output = CmdResult<()>> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    q.on_durable(offset, move |ok| {
        let _ = tx.send(ok);
    });
    async move {
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(CommandError::err("the list's log could not be written")),
        }
    }
}

/// Takes up to `n` elements off the head for good.
fn pop(s: &Session, q: &Queue, n: usize) -> CmdResult<Vec<Bytes>> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some(d) = q.take(None)? else { break };
        q.auto_ack(&[d.message.offset])?;
        out.push(d.message.body);
    }
    s.server.stats.list_pops(out.len() as u64);
    Ok(out)
}

/// LMOVE: the head of `src` onto `dst`, durable there before it leaves `src`.
async fn move_one(s: &Session, src: &Queue, dst_key: &Bytes) -> CmdResult<Option<Bytes>> {
    let dst = queue(s, dst_key, true, Access::Write)?.ok_or_else(|| CommandError::err("no such list"))?;
    let Some(d) = src.take(None)? else { return Ok(None) };
    let body = d.message.body.clone();
    let stored = dst.publish(&message(key_name(dst_key)?, body.clone()));
    let off = match stored {
        Ok(Published::Stored(off)) => off,
        Ok(Published::Rejected) | Err(_) => {
            src.requeue(&[d.message.offset])?;
            return Err(CommandError::err("the destination list refused the element"));
        }
    };
    if let Err(e) = durable(&dst, off).await {
        src.requeue(&[d.message.offset])?;
        return Err(e);
    }
    src.ack(&[d.message.offset])?;
    s.server.stats.list_pops(1);
    s.server.stats.list_pushes(1);
    Ok(Some(body))
}

/// LREM: removes up to |count| elements equal to `value` (all for 0), the
/// oldest first (the newest for a negative count); returns how many.
fn remove(s: &Session, q: &Queue, count: i64, value: &Bytes) -> CmdResult<u64> {
    let limit = if count == 0 { u64::MAX } else { count.unsigned_abs() };
    let (mut matching, mut others) = (Vec::new(), Vec::new());
    // Oldest first: stop at the limit. Newest first: every element must be seen.
    while count < 0 || (matching.len() as u64) < limit {
        let Some(d) = q.take(None)? else { break };
        if d.message.body == value { matching.push(d.message.offset) } else { others.push(d.message.offset) }
    }
    if count < 0 {
        let keep = matching.len().saturating_sub(limit as usize);
        others.extend(matching.drain(..keep));
    }
    q.ack(&matching)?;
    q.requeue(&others)?;
    s.server.stats.list_pops(matching.len() as u64);
    Ok(matching.len() as u64)
}

/// LRANGE over the ready elements, Redis's index rules (negative from the end).
fn range(q: &Queue, start: i64, stop: i64) -> CmdResult<Reply> {
    let len = q.ready_count() as i64;
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, stop) = (norm(start), norm(stop).min(len - 1));
    if start > stop || start >= len {
        return Ok(Reply::Array(vec![]));
    }
    let bodies = q.peek(start as u64, (stop - start + 1) as usize)?;
    Ok(Reply::Array(bodies.into_iter().map(|m| Reply::Bulk(m.body)).collect()))
}
