//! Stream commands without consumer groups: XADD, XLEN, XRANGE,
//! XREVRANGE, XREAD, XDEL, XTRIM, XINFO; the group commands are in
//! [`super::stream_groups`].
//!
//! XDEL and trimming, as far as an append-only log allows: trimming
//! (MAXLEN / MINID, `=` or `~` alike, always exact) moves the log start
//! forward, so trimmed entries are gone for every protocol; XDEL of an
//! entry in the middle records its id in the stream's state and Redis
//! reads skip it, while Kafka readers still see the record until
//! retention or a trim removes it.

use std::sync::Arc;

use bytes::Bytes;
use ferry_broker::Partition;
use ferry_util::time::now_ms_u64;
use tokio::time::Instant;

use super::args::parse_block_ms;
use super::conn::key_name;
use super::{Args, Step, Wait};
use crate::error::{CmdResult, CommandError};
use crate::resp::Reply;
use crate::server::Access;
use crate::session::Session;
use crate::streams::id::{NewId, StreamId, invalid, parse_bound};
use crate::streams::log::{self, Entry, Keep};
use crate::streams::{State, Stream};
use ferry_broker::queue::{Delivery, GroupCursor, GroupState};

pub(super) async fn run(s: &mut Session, name: &str, a: Args<'_>) -> CmdResult<Step> {
    let reply = match name {
        "XADD" => return xadd(s, &a).await,
        "XLEN" => {
            a.exactly(2)?;
            let Some((p, st)) = open(s, &a, 1, Access::Read)? else { return Ok(Step::Reply(Reply::Int(0))) };
            let st = st.lock();
            let len = p.last_stable_offset().saturating_sub(p.log_start_offset());
            Reply::Int(len.saturating_sub(st.deleted.len() as u64) as i64)
        }
        "XRANGE" | "XREVRANGE" => range(s, &a, name == "XREVRANGE")?,
        "XREAD" => return xread(s, &a),
        "XDEL" => {
            a.at_least(3)?;
            let Some((p, st)) = open(s, &a, 1, Access::Write)? else { return Ok(Step::Reply(Reply::Int(0))) };
            let mut ids = Vec::new();
            for i in 2..a.len() {
                ids.push(StreamId::parse(a.get(i)?, 0).ok_or_else(invalid)?);
            }
            let mut state = st.lock();
            let mut n = 0;
            for id in ids {
                let at = log::seek(&p, id)?;
                let found = log::entry_at(&p, at)?.is_some_and(|e| e.id == id);
                if found && state.deleted.insert(id) {
                    state.max_deleted = state.max_deleted.max(id);
                    n += 1;
                }
            }
            st.changed();
            Reply::Int(n)
        }
        "XTRIM" => {
            a.at_least(4)?;
            let (trim, next) = parse_trim(&a, 2)?.ok_or(CommandError::Syntax)?;
            if next != a.len() {
                return Err(CommandError::Syntax);
            }
            let Some((p, st)) = open(s, &a, 1, Access::Write)? else { return Ok(Step::Reply(Reply::Int(0))) };
            let mut state = st.lock();
            let n = trim.apply(&p, &mut state)?;
            st.changed();
            Reply::Int(n as i64)
        }
        "XINFO" => xinfo(s, &a)?,
        _ => return super::stream_groups::run(s, name, a).await,
    };
    Ok(Step::Reply(reply))
}

/// The stream named by argument `i`, after the access check: its partition
/// and state; `None` if it does not exist.
pub(super) fn open(
    s: &Session,
    a: &Args<'_>,
    i: usize,
    access: Access,
) -> CmdResult<Option<(Arc<Partition>, Arc<Stream>)>> {
    let name = key_name(a.get(i)?)?;
    s.check(access, "topic", name)?;
    let Some(p) = s.server.streams.partition(name)? else { return Ok(None) };
    Ok(Some((p, s.server.streams.get(name))))
}

/// `[id, [field, value, ...]]`.
pub(super) fn entry_reply(e: &Entry) -> Reply {
    let mut fv = Vec::with_capacity(e.fields.len() * 2);
    for (f, v) in &e.fields {
        fv.push(Reply::Bulk(f.clone()));
        fv.push(Reply::Bulk(v.clone()));
    }
    Reply::Array(vec![Reply::text(e.id.to_string()), Reply::Array(fv)])
}

/// Up to `count` entries after `after` (exclusive), XDEL'd ones skipped.
pub(super) fn read_after(p: &Partition, state: &State, after: StreamId, count: usize) -> CmdResult<Vec<Entry>> {
    let Some(start) = after.next() else { return Ok(vec![]) };
    let from = log::seek(p, start)?;
    Ok(log::scan(
        p,
        from,
        count,
        |e| {
            if e.id < start || state.deleted.contains(&e.id) { Keep::Skip } else { Keep::Take }
        },
    )?)
}

/// A trim: MAXLEN keeps the newest n entries, MINID drops those below an id.
#[derive(Clone, Copy, Debug)]
pub(super) enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

impl Trim {
    /// Moves the log start; returns how many entries went.
    pub(super) fn apply(self, p: &Partition, state: &mut State) -> CmdResult<u64> {
        let (start, end) = (p.log_start_offset(), p.last_stable_offset());
        let target = match self {
            Trim::MaxLen(n) => end.saturating_sub(n),
            Trim::MinId(id) => log::seek(p, id)?,
        };
        if target <= start {
            return Ok(0);
        }
        let new_start = p.delete_records_before(target)?;
        let first = log::entry_at(p, new_start)?.map(|e| e.id);
        let before = state.deleted.len();
        state.prune_deleted(first);
        Ok(new_start.saturating_sub(start).saturating_sub((before - state.deleted.len()) as u64))
    }
}

/// `MAXLEN|MINID [=|~] threshold [LIMIT n]` at argument `i`: the trim and
/// the index after it; `None` if there is none at `i`.
pub(super) fn parse_trim(a: &Args<'_>, mut i: usize) -> CmdResult<Option<(Trim, usize)>> {
    let kind = a.upper(i)?;
    if kind != "MAXLEN" && kind != "MINID" {
        return Ok(None);
    }
    i += 1;
    if matches!(a.get(i)?.as_ref(), b"=" | b"~") {
        i += 1;
    }
    let trim = if kind == "MAXLEN" {
        let n = a.int(i)?;
        Trim::MaxLen(u64::try_from(n).map_err(|_| CommandError::err("The MAXLEN argument must be >= 0."))?)
    } else {
        Trim::MinId(StreamId::parse(a.get(i)?, 0).ok_or_else(invalid)?)
    };
    i += 1;
    // LIMIT bounds Redis's work per approximate trim; a log trim is one step.
    if i < a.len() && a.upper(i)? == "LIMIT" {
        a.int(i + 1)?;
        i += 2;
    }
    Ok(Some((trim, i)))
}

async fn xadd(s: &Session, a: &Args<'_>) -> CmdResult<Step> {
    a.at_least(5)?;
    let name = key_name(a.get(1)?)?;
    let (mut i, mut nomkstream, mut trim) = (2, false, None);
    loop {
        match a.upper(i)?.as_str() {
            "NOMKSTREAM" => {
                nomkstream = true;
                i += 1;
            }
            "MAXLEN" | "MINID" => {
                let (t, next) = parse_trim(a, i)?.ok_or(CommandError::Syntax)?;
                trim = Some(t);
                i = next;
            }
            _ => break,
        }
    }
    let new_id = NewId::parse(a.get(i)?)?;
    let pairs = &a.raw()[i + 1..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(a.arity_error());
    }
    let mut fields = Vec::with_capacity(pairs.len() / 2);
    for fv in pairs.chunks(2) {
        let f = std::str::from_utf8(&fv[0]).map_err(|_| CommandError::err("Ferry stream field names must be UTF-8"))?;
        fields.push((f.to_string(), fv[1].clone()));
    }
    s.check(Access::Write, "topic", name)?;
    let p = match s.server.streams.partition(name)? {
        Some(p) => p,
        None if nomkstream => return Ok(Step::Reply(Reply::Null)),
        None => {
            s.check(Access::Configure, "topic", name)?;
            s.server.streams.partition_or_create(name).await?
        }
    };
    let st = s.server.streams.get(name);
    let appender = st.appender(&p);
    let (id, durable) = {
        let mut state = st.lock();
        let now = now_ms_u64();
        let id = new_id.resolve(state.last_id(&p)?, now)?;
        // Queued under the lock: the log keeps entries in id order.
        let durable = appender.push(log::to_record(id, &fields, now as i64));
        state.assigned(id);
        (id, durable)
    };
    s.server.stats.stream_entries(1);
    // Trimmed once the entry is readable: a trim counts from the readable end.
    let durable = Box::pin(async move {
        durable.await.map_err(|_| CommandError::err("the stream's appender stopped"))??;
        if let Some(t) = trim {
            t.apply(&p, &mut st.lock())?;
            st.changed();
        }
        Ok(Reply::text(id.to_string()))
    });
    Ok(Step::Deferred(durable))
}

fn range(s: &Session, a: &Args<'_>, rev: bool) -> CmdResult<Reply> {
    a.at_least(4)?;
    let (lo_arg, hi_arg) = if rev { (3, 2) } else { (2, 3) };
    let start = parse_bound(a.get(lo_arg)?, true)?;
    let end = parse_bound(a.get(hi_arg)?, false)?;
    let count = match a.len() {
        4 => usize::MAX,
        6 if a.upper(4)? == "COUNT" => a.int(5)?.max(0) as usize,
        _ => return Err(CommandError::Syntax),
    };
    let Some((p, st)) = open(s, a, 1, Access::Read)? else { return Ok(Reply::Array(vec![])) };
    if count == 0 || start > end {
        return Ok(Reply::Array(vec![]));
    }
    let state = st.lock();
    let entries = if rev {
        let mut got = log::scan_back(&p, start, end, count.saturating_add(state.deleted.len()))?;
        got.retain(|e| !state.deleted.contains(&e.id));
        got.truncate(count);
        got
    } else {
        let from = log::seek(&p, start)?;
        log::scan(&p, from, count, |e| {
            if e.id > end {
                Keep::Stop
            } else if e.id < start || state.deleted.contains(&e.id) {
                Keep::Skip
            } else {
                Keep::Take
            }
        })?
    };
    Ok(Reply::Array(entries.iter().map(entry_reply).collect()))
}

/// `COUNT`, `BLOCK`, `NOACK` (XREADGROUP only) and `STREAMS k.. id..`
/// from argument `i` on.
pub(super) struct ReadOpts {
    pub count: usize,
    pub block: Option<Option<std::time::Duration>>,
    pub noack: bool,
    /// Index of the first key.
    pub keys_at: usize,
    /// Number of keys.
    pub n: usize,
}

pub(super) fn parse_read(a: &Args<'_>, mut i: usize, group: bool) -> CmdResult<ReadOpts> {
    let mut o = ReadOpts { count: usize::MAX, block: None, noack: false, keys_at: 0, n: 0 };
    loop {
        match a.upper(i)?.as_str() {
            "COUNT" => {
                let n = a.int(i + 1)?;
                o.count = if n <= 0 { usize::MAX } else { n as usize };
                i += 2;
            }
            "BLOCK" => {
                o.block = Some(parse_block_ms(a.get(i + 1)?)?);
                i += 2;
            }
            "NOACK" if group => {
                o.noack = true;
                i += 1;
            }
            "STREAMS" => {
                i += 1;
                break;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let rest = a.len().saturating_sub(i);
    if rest == 0 || !rest.is_multiple_of(2) {
        return Err(CommandError::err(
            "Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
        ));
    }
    o.keys_at = i;
    o.n = rest / 2;
    Ok(o)
}

/// XREAD's reply: per stream with entries, RESP3 a map, RESP2 pairs.
pub(super) fn streams_reply(s: &Session, per_key: Vec<(Bytes, Reply)>) -> Reply {
    if s.resp3 {
        Reply::Map(per_key.into_iter().map(|(k, v)| (Reply::Bulk(k), v)).collect())
    } else {
        Reply::Array(per_key.into_iter().map(|(k, v)| Reply::Array(vec![Reply::Bulk(k), v])).collect())
    }
}

fn xread(s: &Session, a: &Args<'_>) -> CmdResult<Step> {
    a.at_least(4)?;
    let o = parse_read(a, 1, false)?;
    let mut out = Vec::new();
    let mut waits = Vec::new();
    let mut retry = a.raw().to_vec();
    for k in 0..o.n {
        let key = a.get(o.keys_at + k)?;
        let id_arg = a.get(o.keys_at + o.n + k)?;
        let opened = open(s, a, o.keys_at + k, Access::Read)?;
        let Some((p, st)) = opened else {
            if id_arg.as_ref() == b"$" {
                retry[o.keys_at + o.n + k] = Bytes::from_static(b"0-0");
            }
            continue;
        };
        let mut state = st.lock();
        let entries = match id_arg.as_ref() {
            b"$" => {
                let last = state.last_id(&p)?;
                retry[o.keys_at + o.n + k] = Bytes::from(last.to_string());
                vec![]
            }
            b"+" => log::last_entry(&p)?.filter(|e| !state.deleted.contains(&e.id)).into_iter().collect(),
            id => read_after(&p, &state, StreamId::parse(id, 0).ok_or_else(invalid)?, o.count)?,
        };
        if entries.is_empty() {
            waits.push(p.clone());
        } else {
            out.push((key.clone(), Reply::Array(entries.iter().map(entry_reply).collect())));
        }
    }
    if !out.is_empty() {
        return Ok(Step::Reply(streams_reply(s, out)));
    }
    match o.block {
        Some(d) => Ok(Step::Block {
            on: Wait::Partitions { poll: waits.len() < o.n, parts: waits },
            deadline: d.map(|d| Instant::now() + d),
            retry,
            timeout: Reply::NullArray,
        }),
        None => Ok(Step::Reply(Reply::NullArray)),
    }
}

fn xinfo(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(3)?;
    let sub = a.upper(1)?;
    let Some((p, st)) = open(s, a, 2, Access::Read)? else { return Err(CommandError::err("no such key")) };
    let now = now_ms_u64();
    match sub.as_str() {
        "STREAM" => {
            // FULL [COUNT n]: entries and groups in detail, n of each list (0: all).
            let full = match a.len() {
                3 => None,
                4 if a.upper(3)? == "FULL" => Some(10),
                6 if a.upper(3)? == "FULL" && a.upper(4)? == "COUNT" => {
                    Some(usize::try_from(a.int(5)?).ok().filter(|&n| n > 0).unwrap_or(usize::MAX))
                }
                _ => return Err(CommandError::Syntax),
            };
            let names = s.server.streams.group_names(&p)?;
            let groups = match full {
                Some(n) => {
                    let mut out = Vec::with_capacity(names.len());
                    for name in &names {
                        if let Some(g) = s.server.streams.group(&p, name)? {
                            out.push(group_full(&p, &g, n)?);
                        }
                    }
                    Reply::Array(out)
                }
                None => Reply::Int(names.len() as i64),
            };
            let mut state = st.lock();
            stream_info(&p, &mut state, full, groups)
        }
        "GROUPS" => {
            a.exactly(3)?;
            let mut out = Vec::new();
            for name in s.server.streams.group_names(&p)? {
                let Some(g) = s.server.streams.group(&p, &name)? else { continue };
                let gs = g.lock();
                let (last, read, lag) = position(&p, &gs)?;
                out.push(Reply::Map(vec![
                    kv("name", Reply::text(name)),
                    kv("consumers", Reply::Int(gs.members().len() as i64)),
                    kv("pending", Reply::Int(gs.pending_len() as i64)),
                    kv("last-delivered-id", Reply::text(last.to_string())),
                    kv("entries-read", Reply::Int(read as i64)),
                    kv("lag", Reply::Int(lag as i64)),
                ]));
            }
            Ok(Reply::Array(out))
        }
        "CONSUMERS" => {
            a.exactly(4)?;
            let group = a.str(3)?;
            let g = s.server.streams.group(&p, group)?.ok_or_else(|| {
                CommandError::Reply(format!("NOGROUP No such consumer group '{group}' for key name '{}'", st.name))
            })?;
            let gs = g.lock();
            let counts = gs.pending_counts();
            Ok(Reply::Array(
                gs.members()
                    .iter()
                    .map(|(name, m)| {
                        Reply::Map(vec![
                            kv("name", Reply::text(name.clone())),
                            kv("pending", Reply::Int(counts.get(name).copied().unwrap_or(0) as i64)),
                            kv("idle", Reply::Int(now.saturating_sub(m.seen_ms) as i64)),
                            kv("inactive", Reply::Int(m.active_ms.map_or(-1, |t| now.saturating_sub(t) as i64))),
                        ])
                    })
                    .collect(),
            ))
        }
        _ => Err(CommandError::err("unknown subcommand or wrong number of arguments for 'xinfo' command")),
    }
}

fn kv(k: &str, v: Reply) -> (Reply, Reply) {
    (Reply::text(k), v)
}

fn id_reply(i: StreamId) -> Reply {
    Reply::text(i.to_string())
}

/// XINFO STREAM: the summary, or with `full` (entries to list) the first
/// entries instead of the first and last, and `groups` as given.
fn stream_info(p: &Partition, state: &mut State, full: Option<usize>, groups: Reply) -> CmdResult<Reply> {
    let last = state.last_id(p)?;
    let deleted = &state.deleted;
    let len = p.last_stable_offset().saturating_sub(p.log_start_offset()).saturating_sub(deleted.len() as u64);
    let listed = log::scan(p, p.log_start_offset(), full.unwrap_or(1), |e| {
        if deleted.contains(&e.id) { Keep::Skip } else { Keep::Take }
    })?;
    let first_id = listed.first().map_or(StreamId::MIN, |e| e.id);
    let mut fields = vec![
        kv("length", Reply::Int(len as i64)),
        kv("radix-tree-keys", Reply::Int(1)),
        kv("radix-tree-nodes", Reply::Int(1)),
        kv("last-generated-id", id_reply(last)),
        kv("max-deleted-entry-id", id_reply(state.max_deleted)),
        kv("entries-added", Reply::Int(p.last_stable_offset() as i64)),
        kv("recorded-first-entry-id", id_reply(first_id)),
    ];
    if full.is_some() {
        fields.push(kv("entries", Reply::Array(listed.iter().map(entry_reply).collect())));
        fields.push(kv("groups", groups));
    } else {
        let last_entry = log::last_entry(p)?.filter(|e| !state.deleted.contains(&e.id));
        fields.push(kv("groups", groups));
        fields.push(kv("first-entry", listed.first().map_or(Reply::Null, entry_reply)));
        fields.push(kv("last-entry", last_entry.as_ref().map_or(Reply::Null, entry_reply)));
    }
    Ok(Reply::Map(fields))
}

/// A group's last delivered id (that of the entry before where it reads
/// on), entries read (its position: entries added before it) and lag.
fn position(p: &Partition, gs: &GroupState<'_>) -> CmdResult<(StreamId, u64, u64)> {
    let next = gs.next();
    let last = match next.checked_sub(1) {
        Some(before) if before >= p.log_start_offset() => {
            log::entry_at(p, before)?.filter(|e| e.offset == before).map_or(StreamId::MIN, |e| e.id)
        }
        _ => StreamId::MIN,
    };
    Ok((last, next, p.last_stable_offset().saturating_sub(next)))
}

/// One group in XINFO STREAM FULL: its position, at most `n` of its
/// deliveries out, its consumers with at most `n` of theirs each.
fn group_full(p: &Partition, g: &GroupCursor, n: usize) -> CmdResult<Reply> {
    let gs = g.lock();
    let (last, read, lag) = position(p, &gs)?;
    let pel: Vec<Reply> = gs
        .pending(0, u128::MAX)
        .take(n)
        .map(|d| {
            Reply::Array(vec![
                id_reply(StreamId::from_key(d.key)),
                Reply::text(d.consumer),
                Reply::Int(d.delivered_ms as i64),
                Reply::Int(i64::from(d.count)),
            ])
        })
        .collect();
    let consumers: Vec<Reply> = gs
        .members()
        .iter()
        .map(|(name, m)| {
            let mine: Vec<Delivery> = gs.pending(0, u128::MAX).filter(|d| &d.consumer == name).collect();
            let listed = mine
                .iter()
                .take(n)
                .map(|d| {
                    Reply::Array(vec![
                        id_reply(StreamId::from_key(d.key)),
                        Reply::Int(d.delivered_ms as i64),
                        Reply::Int(i64::from(d.count)),
                    ])
                })
                .collect();
            Reply::Map(vec![
                kv("name", Reply::text(name.clone())),
                kv("seen-time", Reply::Int(m.seen_ms as i64)),
                kv("active-time", Reply::Int(m.active_ms.map_or(-1, |t| t as i64))),
                kv("pel-count", Reply::Int(mine.len() as i64)),
                kv("pending", Reply::Array(listed)),
            ])
        })
        .collect();
    Ok(Reply::Map(vec![
        kv("name", Reply::text(g.name())),
        kv("last-delivered-id", id_reply(last)),
        kv("entries-read", Reply::Int(read as i64)),
        kv("lag", Reply::Int(lag as i64)),
        kv("pel-count", Reply::Int(gs.pending_len() as i64)),
        kv("pending", Reply::Array(pel)),
        kv("consumers", Reply::Array(consumers)),
    ]))
}
