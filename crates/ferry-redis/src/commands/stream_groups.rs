//! Consumer-group commands: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM (the group model is in [`crate::streams::group`]).

use ferry_broker::Partition;
use ferry_util::time::now_ms_u64;
use tokio::time::Instant;

use super::streams::{entry_reply, open, parse_read, streams_reply};
use super::{Args, Step, Wait};
use crate::error::{CmdResult, CommandError};
use crate::resp::Reply;
use crate::server::Access;
use crate::session::Session;
use crate::streams::group::{ClaimOpts, Group};
use crate::streams::id::{StreamId, invalid, parse_bound};
use crate::streams::log::{self, Entry, Keep};
use crate::streams::{State, Stream};

pub(super) async fn run(s: &mut Session, name: &str, a: Args<'_>) -> CmdResult<Step> {
    let reply = match name {
        "XGROUP" => xgroup(s, &a).await?,
        "XREADGROUP" => return xreadgroup(s, &a),
        "XACK" => {
            a.at_least(4)?;
            let mut ids = Vec::new();
            for i in 3..a.len() {
                ids.push(StreamId::parse(a.get(i)?, 0).ok_or_else(invalid)?);
            }
            let Some((_, st)) = open(s, &a, 1, Access::Read)? else { return Ok(Step::Reply(Reply::Int(0))) };
            let mut state = st.lock();
            let Some(g) = state.groups.get_mut(a.str(2)?) else { return Ok(Step::Reply(Reply::Int(0))) };
            let n = g.ack(&ids);
            st.changed();
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

/// The group's state, or NOGROUP.
fn group_of<'a>(state: &'a mut State, st: &Stream, group: &str, what: &str) -> CmdResult<&'a mut Group> {
    state.groups.get_mut(group).ok_or_else(|| nogroup(&st.name, group, what))
}

/// A group's starting point: `$` is the stream's end, else after `id`.
fn start_at(p: &Partition, state: &mut State, arg: &[u8]) -> CmdResult<(StreamId, u64)> {
    if arg == b"$" {
        return Ok((state.last_id(p)?, p.last_stable_offset()));
    }
    let id = StreamId::parse(arg, 0).ok_or_else(invalid)?;
    let from = match id.next() {
        Some(after) => log::seek(p, after)?,
        None => p.last_stable_offset(),
    };
    Ok((id, from))
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
    let (p, st) = match opened {
        Some(x) => x,
        None if sub == "CREATE" && (5..a.len()).any(|i| a.upper(i).is_ok_and(|w| w == "MKSTREAM")) => {
            s.check(Access::Configure, "topic", key)?;
            let p = s.server.streams.partition_or_create(key).await?;
            (p, s.server.streams.get(key))
        }
        None => {
            return Err(CommandError::err(
                "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
            ));
        }
    };
    let now = now_ms_u64();
    let reply = {
        let mut state = st.lock();
        match sub.as_str() {
            "CREATE" => {
                a.at_least(5)?;
                if state.groups.contains_key(&group) {
                    return Err(CommandError::Reply("BUSYGROUP Consumer Group name already exists".into()));
                }
                let (id, from) = start_at(&p, &mut state, a.get(4)?)?;
                state.groups.insert(group, Group::new(id, from));
                Reply::ok()
            }
            "DESTROY" => Reply::Int(i64::from(state.groups.remove(&group).is_some())),
            "SETID" => {
                a.at_least(5)?;
                let (id, from) = start_at(&p, &mut state, a.get(4)?)?;
                let g = group_of(&mut state, &st, &group, "XGROUP SETID")?;
                g.last_id = id;
                g.next_offset = from;
                Reply::ok()
            }
            "CREATECONSUMER" => {
                a.exactly(5)?;
                let consumer = a.str(4)?;
                Reply::Int(i64::from(group_of(&mut state, &st, &group, "XGROUP CREATECONSUMER")?.touch(consumer, now)))
            }
            _ => {
                a.exactly(5)?;
                let consumer = a.str(4)?;
                Reply::Int(group_of(&mut state, &st, &group, "XGROUP DELCONSUMER")?.remove_consumer(consumer) as i64)
            }
        }
    };
    // Groups appearing and going are written at once.
    s.server.streams.save(&st, true)?;
    Ok(reply)
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
        let mut state = st.lock();
        if !state.groups.contains_key(&group) {
            return Err(nogroup(&name, &group, "XREADGROUP with GROUP option"));
        }
        if id_arg.as_ref() == b">" {
            let (after, from) = state.groups.get(&group).map_or((StreamId::MIN, 0), |g| (g.last_id, g.next_offset));
            // From the group's offset, no search; ids at or below its last
            // delivered one (SETID back and forth) are passed over.
            let entries = log::scan(&p, from, o.count, |e| {
                if e.id <= after || state.deleted.contains(&e.id) { Keep::Skip } else { Keep::Take }
            })?;
            let g = group_of(&mut state, &st, &group, "XREADGROUP")?;
            g.touch(&consumer, now);
            for e in &entries {
                g.deliver_new(&consumer, e.id, e.offset, now, o.noack);
            }
            st.changed();
            s.server.stats.group_deliveries(entries.len() as u64);
            if entries.is_empty() {
                waits.push(p.clone());
            } else {
                out.push((key.clone(), Reply::Array(entries.iter().map(entry_reply).collect())));
            }
        } else {
            all_new = false;
            let after = StreamId::parse(id_arg, 0).ok_or_else(invalid)?;
            let g = group_of(&mut state, &st, &group, "XREADGROUP")?;
            g.touch(&consumer, now);
            let pending = g.pending_of(&consumer, after, o.count);
            st.changed();
            let mut replies = Vec::with_capacity(pending.len());
            for (id, pe) in pending {
                match entry_by_offset(&p, &state, id, pe.offset)? {
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

/// The entry `id` at `offset`, unless trimmed or XDEL'd.
fn entry_by_offset(p: &Partition, state: &State, id: StreamId, offset: u64) -> CmdResult<Option<Entry>> {
    if state.deleted.contains(&id) || offset < p.log_start_offset() {
        return Ok(None);
    }
    Ok(log::entry_at(p, offset)?.filter(|e| e.id == id))
}

fn xpending(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(3)?;
    let group = a.str(2)?.to_string();
    let key = String::from_utf8_lossy(a.get(1)?).into_owned();
    let Some((_, st)) = open(s, a, 1, Access::Read)? else { return Err(nogroup(&key, &group, "XPENDING")) };
    let mut state = st.lock();
    let g = group_of(&mut state, &st, &group, "XPENDING")?;
    if a.len() == 3 {
        if g.pel.is_empty() {
            return Ok(Reply::Array(vec![Reply::Int(0), Reply::Null, Reply::Null, Reply::NullArray]));
        }
        let first = g.pel.keys().next().copied().unwrap_or_default();
        let last = g.pel.keys().next_back().copied().unwrap_or_default();
        let per: Vec<Reply> = g
            .pending_counts()
            .into_iter()
            .map(|(c, n)| Reply::Array(vec![Reply::text(c), Reply::text(n.to_string())]))
            .collect();
        return Ok(Reply::Array(vec![
            Reply::Int(g.pel.len() as i64),
            Reply::text(first.to_string()),
            Reply::text(last.to_string()),
            Reply::Array(per),
        ]));
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
    if start > end {
        return Ok(Reply::Array(vec![]));
    }
    Ok(Reply::Array(
        g.pel
            .range(start..=end)
            .filter(|(_, p)| consumer.is_none_or(|c| p.consumer == c))
            .filter(|(_, p)| now.saturating_sub(p.delivered_ms) >= min_idle)
            .take(count)
            .map(|(id, p)| {
                Reply::Array(vec![
                    Reply::text(id.to_string()),
                    Reply::text(p.consumer.clone()),
                    Reply::Int(now.saturating_sub(p.delivered_ms) as i64),
                    Reply::Int(p.count as i64),
                ])
            })
            .collect(),
    ))
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
                opts.retry_count = Some(a.int(i + 1)?.max(0) as u64);
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
                opts.just_id = true;
                i += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let key = String::from_utf8_lossy(a.get(1)?).into_owned();
    let Some((p, st)) = open(s, a, 1, Access::Read)? else { return Err(nogroup(&key, &group, "XCLAIM")) };
    let mut state = st.lock();
    let mut found = Vec::new();
    for id in &ids {
        let pending = state.groups.get(&group).is_some_and(|g| g.pel.contains_key(id));
        if pending || !force {
            found.push((*id, None));
            continue;
        }
        // FORCE: an entry pending nowhere becomes pending here, if it exists.
        let at = log::seek(&p, *id)?;
        let e = log::entry_at(&p, at)?.filter(|e| e.id == *id && !state.deleted.contains(id));
        found.push((*id, e.map(|e| e.offset)));
    }
    let g = group_of(&mut state, &st, &group, "XCLAIM")?;
    g.touch(&consumer, now);
    let mut claimed = Vec::new();
    for (id, forced) in found {
        if let Some(offset) = forced {
            g.pel.insert(
                id,
                crate::streams::group::Pending { offset, consumer: consumer.clone(), delivered_ms: now, count: 0 },
            );
        }
        if let Some(pe) = g.claim(id, &consumer, min_idle, now, &opts) {
            claimed.push((id, pe));
        }
    }
    st.changed();
    let mut replies = Vec::with_capacity(claimed.len());
    for (id, pe) in claimed {
        if opts.just_id {
            replies.push(Reply::text(id.to_string()));
            continue;
        }
        match entry_by_offset(&p, &state, id, pe.offset)? {
            Some(e) => replies.push(entry_reply(&e)),
            // Gone from the stream: no longer pending (Redis 7).
            None => {
                if let Some(g) = state.groups.get_mut(&group) {
                    g.pel.remove(&id);
                }
            }
        }
    }
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
    let now = now_ms_u64();
    let mut state = st.lock();
    let g = group_of(&mut state, &st, &group, "XAUTOCLAIM")?;
    g.touch(&consumer, now);
    let opts = ClaimOpts { just_id, ..ClaimOpts::default() };
    // Redis looks at most COUNT * 10 pending entries per call.
    let candidates: Vec<StreamId> = g.pel.range(start..).take(count.saturating_mul(10)).map(|(id, _)| *id).collect();
    let mut claimed = Vec::new();
    let mut next = StreamId::MIN;
    for (n, id) in candidates.iter().enumerate() {
        if claimed.len() >= count {
            next = *id;
            break;
        }
        if let Some(pe) = g.claim(*id, &consumer, min_idle, now, &opts) {
            claimed.push((*id, pe));
        }
        if n + 1 == candidates.len() {
            next = g.pel.range(id.next().unwrap_or(StreamId::MAX)..).next().map_or(StreamId::MIN, |(i, _)| *i);
        }
    }
    st.changed();
    let (mut entries, mut deleted) = (Vec::new(), Vec::new());
    for (id, pe) in claimed {
        if just_id {
            entries.push(Reply::text(id.to_string()));
            continue;
        }
        if let Some(e) = entry_by_offset(&p, &state, id, pe.offset)? {
            entries.push(entry_reply(&e));
        } else {
            if let Some(g) = state.groups.get_mut(&group) {
                g.pel.remove(&id);
            }
            deleted.push(Reply::text(id.to_string()));
        }
    }
    s.server.stats.group_deliveries(entries.len() as u64);
    Ok(Reply::Array(vec![Reply::text(next.to_string()), Reply::Array(entries), Reply::Array(deleted)]))
}
