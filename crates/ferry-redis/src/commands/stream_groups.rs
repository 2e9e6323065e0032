//! Consumer-group commands: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM. A group is a broker group cursor over the stream's
//! partition ([`ferry_broker::queue::group_cursor`]); its deliveries out
//! are keyed by entry id ([`StreamId::key`]), so XACK and XCLAIM find them
//! without a search of the log.

use std::sync::Arc;

use ferry_broker::Partition;
use ferry_broker::queue::{ClaimOpts, Delivery, GroupCursor, GroupState};
use ferry_util::time::now_ms_u64;
use tokio::time::Instant;

use super::streams::{entry_reply, open, parse_read, streams_reply};
use super::{Args, Step, Wait};
use crate::error::{CmdResult, CommandError};
use crate::resp::Reply;
use crate::server::Access;
use crate::session::Session;
use crate::streams::State;
use crate::streams::id::{StreamId, invalid, parse_bound};
use crate::streams::log::{self, Entry, Keep};

pub(super) async fn run(s: &mut Session, name: &str, a: Args<'_>) -> CmdResult<Step> {
    let reply = match name {
        "XGROUP" => xgroup(s, &a).await?,
        "XREADGROUP" => return xreadgroup(s, &a),
        "XACK" => {
            a.at_least(4)?;
            let mut keys = Vec::new();
            for i in 3..a.len() {
                keys.push(StreamId::parse(a.get(i)?, 0).ok_or_else(invalid)?.key());
            }
            let Some((p, _)) = open(s, &a, 1, Access::Read)? else { return Ok(Step::Reply(Reply::Int(0))) };
            let Some(g) = s.server.streams.group(&p, a.str(2)?)? else { return Ok(Step::Reply(Reply::Int(0))) };
            let n = g.lock().ack(&keys)?;
            s.server.stats.group_acks(n as u64);
            Reply::Int(n as i64)
        }
        "XPENDING" => xpending(s, &a)?,
        "XCLAIM" => xclaim(s, &a)?,
        "XAUTOCLAIM" => xautoclaim(s, &a)?,
        _ => super::unknown(name, a.raw()),
    };
    Ok(Step::Reply(reply))
}

fn nogroup(key: &str, group: &str, what: &str) -> CommandError {
    CommandError::Reply(format!("NOGROUP No such key '{key}' or consumer group '{group}' in {what}"))
}

/// The group, or NOGROUP.
fn group_of(s: &Session, p: &Partition, group: &str, what: &str) -> CmdResult<Arc<GroupCursor>> {
    s.server.streams.group(p, group)?.ok_or_else(|| nogroup(&p.topic, group, what))
}

/// Where a group set to `arg` reads on: `$` is the stream's end, else the
/// first entry after id `arg`.
fn start_at(p: &Partition, arg: &[u8]) -> CmdResult<u64> {
    if arg == b"$" {
        return Ok(p.last_stable_offset());
    }
    let id = StreamId::parse(arg, 0).ok_or_else(invalid)?;
    Ok(match id.next() {
        Some(after) => log::seek(p, after)?,
        None => p.last_stable_offset(),
    })
}

/// `ENTRIESREAD n` after XGROUP CREATE / SETID's id (and MKSTREAM): accepted,
/// without effect (a group's entries-read is its position).
fn check_create_options(a: &Args<'_>, mut i: usize, create: bool) -> CmdResult<()> {
    while i < a.len() {
        match a.upper(i)?.as_str() {
            "MKSTREAM" if create => i += 1,
            "ENTRIESREAD" => {
                a.int(i + 1)?;
                i += 2;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(())
}

async fn xgroup(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(2)?;
    let sub = a.upper(1)?;
    if !matches!(sub.as_str(), "CREATE" | "DESTROY" | "SETID" | "CREATECONSUMER" | "DELCONSUMER") {
        return Err(CommandError::err(format!(
            "unknown subcommand '{}'. Try XGROUP HELP.",
            String::from_utf8_lossy(a.get(1)?)
        )));
    }
    a.at_least(4)?;
    let key = super::conn::key_name(a.get(2)?)?;
    let group = a.str(3)?.to_string();
    let opened = open(s, a, 2, Access::Read)?;
    let p = match opened {
        Some((p, _)) => p,
        None if sub == "CREATE" && (5..a.len()).any(|i| a.upper(i).is_ok_and(|w| w == "MKSTREAM")) => {
            s.check(Access::Configure, "topic", key)?;
            s.server.streams.partition_or_create(key).await?
        }
        None => {
            return Err(CommandError::err(
                "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
            ));
        }
    };
    let now = now_ms_u64();
    Ok(match sub.as_str() {
        "CREATE" => {
            a.at_least(5)?;
            check_create_options(a, 5, true)?;
            let from = start_at(&p, a.get(4)?)?;
            if s.server.streams.create_group(&p, &group, from)?.is_none() {
                return Err(CommandError::Reply("BUSYGROUP Consumer Group name already exists".into()));
            }
            Reply::ok()
        }
        "DESTROY" => {
            a.exactly(4)?;
            Reply::Int(i64::from(s.server.streams.remove_group(&p, &group)?))
        }
        "SETID" => {
            a.at_least(5)?;
            check_create_options(a, 5, false)?;
            let from = start_at(&p, a.get(4)?)?;
            group_of(s, &p, &group, "XGROUP SETID")?.lock().reposition(from)?;
            Reply::ok()
        }
        "CREATECONSUMER" => {
            a.exactly(5)?;
            let consumer = a.str(4)?;
            Reply::Int(i64::from(group_of(s, &p, &group, "XGROUP CREATECONSUMER")?.lock().touch(consumer, now)))
        }
        _ => {
            a.exactly(5)?;
            let consumer = a.str(4)?;
            Reply::Int(group_of(s, &p, &group, "XGROUP DELCONSUMER")?.lock().remove_member(consumer) as i64)
        }
    })
}

/// The entry at exactly `offset`, unless trimmed or XDEL'd.
fn entry_at_offset(p: &Partition, state: &State, offset: u64) -> CmdResult<Option<Entry>> {
    if offset < p.log_start_offset() {
        return Ok(None);
    }
    Ok(log::entry_at(p, offset)?.filter(|e| e.offset == offset && !state.deleted.contains(&e.id)))
}

/// XREADGROUP `>`: deliveries handed back first, then new entries, at
/// most `count`. XDEL'd entries met on the way are acknowledged: no
/// consumer is to get them.
fn read_new(
    p: &Partition,
    gs: &mut GroupState<'_>,
    state: &State,
    consumer: &str,
    count: usize,
    noack: bool,
    now: u64,
) -> CmdResult<Vec<Entry>> {
    let mut out = Vec::new();
    for (offset, n) in gs.take_requeued(count) {
        match entry_at_offset(p, state, offset)? {
            Some(e) => {
                gs.redeliver(consumer, offset, e.id.key(), n, now);
                out.push(e);
            }
            None => gs.ack_unread(offset, 0)?,
        }
    }
    if out.len() >= count {
        return Ok(out);
    }
    let mut gone = Vec::new();
    let fresh = log::scan(p, gs.next(), count - out.len(), |e| {
        if gs.passes_over(e.offset) {
            Keep::Skip
        } else if state.deleted.contains(&e.id) {
            gone.push((e.offset, e.id.key()));
            Keep::Skip
        } else {
            Keep::Take
        }
    })?;
    for (offset, key) in gone {
        gs.ack_unread(offset, key)?;
    }
    let taken: Vec<(u64, u128)> = fresh.iter().map(|e| (e.offset, e.id.key())).collect();
    gs.deliver_new(consumer, &taken, now, noack)?;
    out.extend(fresh);
    Ok(out)
}

fn xreadgroup(s: &Session, a: &Args<'_>) -> CmdResult<Step> {
    a.at_least(7)?;
    if a.upper(1)? != "GROUP" {
        return Err(CommandError::Syntax);
    }
    let (group, consumer) = (a.str(2)?.to_string(), a.str(3)?.to_string());
    let o = parse_read(a, 4, true)?;
    let now = now_ms_u64();
    let (mut out, mut waits, mut all_new) = (Vec::new(), Vec::new(), true);
    for k in 0..o.n {
        let key = a.get(o.keys_at + k)?;
        let id_arg = a.get(o.keys_at + o.n + k)?;
        let name = String::from_utf8_lossy(key);
        let Some((p, st)) = open(s, a, o.keys_at + k, Access::Read)? else {
            return Err(nogroup(&name, &group, "XREADGROUP with GROUP option"));
        };
        let g = s
            .server
            .streams
            .group(&p, &group)?
            .ok_or_else(|| nogroup(&name, &group, "XREADGROUP with GROUP option"))?;
        // Group before stream state, everywhere both are held.
        let mut gs = g.lock();
        let state = st.lock();
        gs.touch(&consumer, now);
        if id_arg.as_ref() == b">" {
            let entries = read_new(&p, &mut gs, &state, &consumer, o.count, o.noack, now)?;
            s.server.stats.group_deliveries(entries.len() as u64);
            if entries.is_empty() {
                waits.push(p.clone());
            } else {
                out.push((key.clone(), Reply::Array(entries.iter().map(entry_reply).collect())));
            }
        } else {
            all_new = false;
            let after = StreamId::parse(id_arg, 0).ok_or_else(invalid)?;
            let Some(from) = after.next() else {
                out.push((key.clone(), Reply::Array(vec![])));
                continue;
            };
            let mine: Vec<Delivery> =
                gs.pending(from.key(), u128::MAX).filter(|d| d.consumer == consumer).take(o.count).collect();
            let mut replies = Vec::with_capacity(mine.len());
            for d in mine {
                let id = StreamId::from_key(d.key);
                match entry_at_offset(&p, &state, d.offset)? {
                    Some(e) => replies.push(entry_reply(&e)),
                    None => replies.push(Reply::Array(vec![Reply::text(id.to_string()), Reply::Null])),
                }
            }
            out.push((key.clone(), Reply::Array(replies)));
        }
    }
    if !out.is_empty() {
        return Ok(Step::Reply(streams_reply(s, out)));
    }
    match o.block {
        Some(d) if all_new => Ok(Step::Block {
            on: Wait::Partitions { parts: waits, poll: false },
            deadline: d.map(|d| Instant::now() + d),
            retry: a.raw().to_vec(),
            timeout: Reply::NullArray,
        }),
        _ => Ok(Step::Reply(Reply::NullArray)),
    }
}

fn xpending(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(3)?;
    let group = a.str(2)?.to_string();
    let key = String::from_utf8_lossy(a.get(1)?).into_owned();
    let Some((p, _)) = open(s, a, 1, Access::Read)? else { return Err(nogroup(&key, &group, "XPENDING")) };
    let g = group_of(s, &p, &group, "XPENDING")?;
    let gs = g.lock();
    let id = |k: u128| Reply::text(StreamId::from_key(k).to_string());
    if a.len() == 3 {
        let mut all = gs.pending(0, u128::MAX);
        let Some(first) = all.next() else {
            return Ok(Reply::Array(vec![Reply::Int(0), Reply::Null, Reply::Null, Reply::NullArray]));
        };
        let last = all.last().map_or(first.key, |d| d.key);
        let per: Vec<Reply> = gs
            .pending_counts()
            .into_iter()
            .map(|(c, n)| Reply::Array(vec![Reply::text(c), Reply::text(n.to_string())]))
            .collect();
        return Ok(Reply::Array(vec![Reply::Int(gs.pending_len() as i64), id(first.key), id(last), Reply::Array(per)]));
    }
    let mut i = 3;
    let mut min_idle = 0;
    if a.upper(i)? == "IDLE" {
        min_idle = a.int(i + 1)?.max(0) as u64;
        i += 2;
    }
    let start = parse_bound(a.get(i)?, true)?;
    let end = parse_bound(a.get(i + 1)?, false)?;
    let count = a.int(i + 2)?.max(0) as usize;
    let consumer = match a.len() - (i + 3) {
        0 => None,
        1 => Some(a.str(i + 3)?),
        _ => return Err(CommandError::Syntax),
    };
    let now = now_ms_u64();
    Ok(Reply::Array(
        gs.pending(start.key(), end.key())
            .filter(|d| consumer.is_none_or(|c| d.consumer == c))
            .filter(|d| now.saturating_sub(d.delivered_ms) >= min_idle)
            .take(count)
            .map(|d| {
                Reply::Array(vec![
                    id(d.key),
                    Reply::text(d.consumer),
                    Reply::Int(now.saturating_sub(d.delivered_ms) as i64),
                    Reply::Int(i64::from(d.count)),
                ])
            })
            .collect(),
    ))
}

/// Replies for claimed deliveries: the entries (or ids, with JUSTID); a
/// claimed entry gone from the stream is no longer pending (Redis 7) and
/// its id is returned in `deleted`.
fn claimed_replies(
    p: &Partition,
    gs: &mut GroupState<'_>,
    state: &State,
    claimed: Vec<Delivery>,
    just_id: bool,
    deleted: &mut Vec<Reply>,
) -> CmdResult<Vec<Reply>> {
    let mut replies = Vec::with_capacity(claimed.len());
    for d in claimed {
        let id = StreamId::from_key(d.key);
        if just_id {
            replies.push(Reply::text(id.to_string()));
            continue;
        }
        if let Some(e) = entry_at_offset(p, state, d.offset)? {
            replies.push(entry_reply(&e));
        } else {
            gs.ack_unread(d.offset, d.key)?;
            deleted.push(Reply::text(id.to_string()));
        }
    }
    Ok(replies)
}

fn xclaim(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(6)?;
    let (group, consumer) = (a.str(2)?.to_string(), a.str(3)?.to_string());
    let min_idle = a.int(4)?.max(0) as u64;
    let now = now_ms_u64();
    let mut ids = Vec::new();
    let mut i = 5;
    while i < a.len() {
        match StreamId::parse(a.get(i)?, 0) {
            Some(id) => ids.push(id),
            None => break,
        }
        i += 1;
    }
    if ids.is_empty() {
        return Err(invalid());
    }
    let (mut opts, mut force) = (ClaimOpts::default(), false);
    while i < a.len() {
        match a.upper(i)?.as_str() {
            "IDLE" => {
                opts.delivered_ms = Some(now.saturating_sub(a.int(i + 1)?.max(0) as u64));
                i += 2;
            }
            "TIME" => {
                opts.delivered_ms = Some(a.int(i + 1)?.max(0) as u64);
                i += 2;
            }
            "RETRYCOUNT" => {
                opts.count = Some(u32::try_from(a.int(i + 1)?.max(0)).unwrap_or(u32::MAX));
                i += 2;
            }
            "LASTID" => {
                StreamId::parse(a.get(i + 1)?, 0).ok_or_else(invalid)?;
                i += 2;
            }
            "FORCE" => {
                force = true;
                i += 1;
            }
            "JUSTID" => {
                opts.keep_count = true;
                i += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let just_id = opts.keep_count;
    let key = String::from_utf8_lossy(a.get(1)?).into_owned();
    let Some((p, st)) = open(s, a, 1, Access::Read)? else { return Err(nogroup(&key, &group, "XCLAIM")) };
    let g = group_of(s, &p, &group, "XCLAIM")?;
    let mut gs = g.lock();
    let state = st.lock();
    gs.touch(&consumer, now);
    let mut claimed = Vec::new();
    for id in ids {
        if force && gs.pending_at(id.key()).is_none() {
            // FORCE: an entry pending nowhere becomes pending here, if it
            // exists and the group has not acknowledged it.
            let at = log::seek(&p, id)?;
            if let Some(e) = entry_at_offset(&p, &state, at)?.filter(|e| e.id == id) {
                gs.force(e.offset, id.key(), &consumer, now);
            }
        }
        claimed.extend(gs.claim(id.key(), &consumer, min_idle, now, opts));
    }
    let replies = claimed_replies(&p, &mut gs, &state, claimed, just_id, &mut Vec::new())?;
    s.server.stats.group_deliveries(replies.len() as u64);
    Ok(Reply::Array(replies))
}

fn xautoclaim(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(6)?;
    let (group, consumer) = (a.str(2)?.to_string(), a.str(3)?.to_string());
    let min_idle = a.int(4)?.max(0) as u64;
    let start = parse_bound(a.get(5)?, true)?;
    let (mut count, mut just_id, mut i) = (100usize, false, 6);
    while i < a.len() {
        match a.upper(i)?.as_str() {
            "COUNT" => {
                count = a.count(i + 1)?;
                if count == 0 {
                    return Err(CommandError::err("COUNT must be > 0"));
                }
                i += 2;
            }
            "JUSTID" => {
                just_id = true;
                i += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let key = String::from_utf8_lossy(a.get(1)?).into_owned();
    let Some((p, st)) = open(s, a, 1, Access::Read)? else { return Err(nogroup(&key, &group, "XAUTOCLAIM")) };
    let g = group_of(s, &p, &group, "XAUTOCLAIM")?;
    let now = now_ms_u64();
    let mut gs = g.lock();
    let state = st.lock();
    gs.touch(&consumer, now);
    let opts = ClaimOpts { keep_count: just_id, ..ClaimOpts::default() };
    // Redis looks at most COUNT * 10 pending entries per call.
    let candidates: Vec<u128> =
        gs.pending(start.key(), u128::MAX).take(count.saturating_mul(10)).map(|d| d.key).collect();
    let mut claimed = Vec::new();
    let mut next = StreamId::MIN;
    for (n, &k) in candidates.iter().enumerate() {
        if claimed.len() >= count {
            next = StreamId::from_key(k);
            break;
        }
        claimed.extend(gs.claim(k, &consumer, min_idle, now, opts));
        if n + 1 == candidates.len() {
            next =
                gs.pending(k.saturating_add(1), u128::MAX).next().map_or(StreamId::MIN, |d| StreamId::from_key(d.key));
        }
    }
    let mut deleted = Vec::new();
    let entries = claimed_replies(&p, &mut gs, &state, claimed, just_id, &mut deleted)?;
    s.server.stats.group_deliveries(entries.len() as u64);
    Ok(Reply::Array(vec![Reply::text(next.to_string()), Reply::Array(entries), Reply::Array(deleted)]))
}
