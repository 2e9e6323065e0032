//! SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE, their UNSUBSCRIBEs, PUBLISH and
//! SPUBLISH over the node's [`Hub`](crate::pubsub::Hub).

use bytes::Bytes;

use super::{Args, Step};
use crate::error::CmdResult;
use crate::pubsub::Kind;
use crate::resp::Reply;
use crate::server::Access;
use crate::session::Session;

pub(super) fn run(s: &mut Session, name: &str, a: Args<'_>) -> CmdResult<Step> {
    let (kind, word) = match name {
        "SUBSCRIBE" | "UNSUBSCRIBE" => (Kind::Channel, "subscribe"),
        "PSUBSCRIBE" | "PUNSUBSCRIBE" => (Kind::Pattern, "psubscribe"),
        "SSUBSCRIBE" | "SUNSUBSCRIBE" => (Kind::Shard, "ssubscribe"),
        _ => {
            a.exactly(3)?;
            let channel = a.get(1)?;
            s.check(Access::Write, "channel", &String::from_utf8_lossy(channel))?;
            s.server.stats.published();
            let n = s.server.hub.publish(channel, a.get(2)?, name == "SPUBLISH");
            s.server.stats.pushed(n as u64);
            return Ok(Step::Reply(Reply::Int(n)));
        }
    };
    if name.contains("UNSUB") {
        let names: Vec<Bytes> = if a.len() > 1 {
            a.raw()[1..].to_vec()
        } else {
            s.subs.names.get(&kind).map(|n| n.iter().cloned().collect()).unwrap_or_default()
        };
        let reply = format!("un{word}");
        if names.is_empty() {
            return Ok(Step::Replies(vec![ack(&reply, Reply::Null, s.subs.count(kind))]));
        }
        let mut replies = Vec::with_capacity(names.len());
        for n in names {
            s.server.hub.unsubscribe(kind, &n, s.id);
            s.subs.names.entry(kind).or_default().remove(&n);
            replies.push(ack(&reply, Reply::Bulk(n), s.subs.count(kind)));
        }
        return Ok(Step::Replies(replies));
    }
    a.at_least(2)?;
    let mut replies = Vec::with_capacity(a.len() - 1);
    for n in &a.raw()[1..] {
        s.check(Access::Read, "channel", &String::from_utf8_lossy(n))?;
        if s.subs.names.entry(kind).or_default().insert(n.clone()) {
            s.server.hub.subscribe(kind, n.clone(), s.id, &s.subscriber);
        }
        replies.push(ack(word, Reply::Bulk(n.clone()), s.subs.count(kind)));
    }
    Ok(Step::Replies(replies))
}

/// A (un)subscribe confirmation: a push in RESP3, an array in RESP2.
fn ack(word: &str, name: Reply, count: i64) -> Reply {
    Reply::Push(vec![Reply::text(word), name, Reply::Int(count)])
}

/// Ends every subscription of the connection (RESET, close).
pub(crate) fn unsubscribe_all(s: &mut Session) {
    for (kind, names) in s.subs.names.drain() {
        for n in names {
            s.server.hub.unsubscribe(kind, &n, s.id);
        }
    }
}
