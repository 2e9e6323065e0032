//! Connection and server commands: HELLO, AUTH, PING, ECHO, SELECT,
//! CLIENT, INFO, COMMAND, QUIT, RESET, and the key-space commands that
//! span lists and streams (TYPE, EXISTS, DEL).

use bytes::Bytes;

use super::{Args, Step};
use crate::error::{CmdResult, CommandError};
use crate::resp::Reply;
use crate::server::Access;
use crate::session::Session;

/// The Redis version whose behaviour this front-end follows (clients gate
/// features on it).
pub(crate) const REDIS_VERSION: &str = "7.2.0";

pub(super) async fn run(s: &mut Session, name: &str, a: Args<'_>) -> CmdResult<Step> {
    let reply = match name {
        "PING" => ping(s, &a)?,
        "ECHO" => {
            a.exactly(2)?;
            Reply::Bulk(a.get(1)?.clone())
        }
        "SELECT" => {
            a.exactly(2)?;
            if a.int(1)? != 0 {
                return Err(CommandError::err("DB index is out of range"));
            }
            Reply::ok()
        }
        "HELLO" => hello(s, &a)?,
        "AUTH" => {
            a.at_least(2)?;
            let (user, pass) = match a.len() {
                2 => (default_user(s), a.str(1)?.to_string()),
                3 => (a.str(1)?.to_string(), a.str(2)?.to_string()),
                _ => return Err(CommandError::Syntax),
            };
            s.login(&user, &pass)?;
            Reply::ok()
        }
        "CLIENT" => client(s, &a)?,
        "INFO" => Reply::text(info(s)),
        "COMMAND" => command(&a)?,
        "QUIT" => return Ok(Step::Quit(Reply::ok())),
        "RESET" => {
            super::pubsub::unsubscribe_all(s);
            s.resp3 = false;
            s.name = None;
            Reply::Simple("RESET".into())
        }
        "DBSIZE" => Reply::Int((s.server.broker.topics().len() + vhost_queues(s).len()) as i64),
        "TYPE" => {
            a.exactly(2)?;
            Reply::Simple(key_type(s, a.str(1)?).into())
        }
        "EXISTS" => {
            a.at_least(2)?;
            let mut n = 0;
            for i in 1..a.len() {
                n += i64::from(key_type(s, a.str(i)?) != "none");
            }
            Reply::Int(n)
        }
        "DEL" => {
            a.at_least(2)?;
            let mut n = 0;
            for i in 1..a.len() {
                n += i64::from(delete(s, a.str(i)?).await?);
            }
            Reply::Int(n)
        }
        _ => super::unknown(name, a.raw()),
    };
    Ok(Step::Reply(reply))
}

fn default_user(s: &Session) -> String {
    s.server.config.default_login.as_ref().map_or_else(|| "default".to_string(), |(u, _)| u.clone())
}

fn ping(s: &Session, a: &Args<'_>) -> CmdResult<Reply> {
    if a.len() > 2 {
        return Err(a.arity_error());
    }
    let msg = a.raw().get(1).cloned();
    // A RESP2 subscriber gets PING as a push-like array (Redis does so).
    if !s.resp3 && s.subs.active() {
        return Ok(Reply::Array(vec![Reply::text("pong"), Reply::Bulk(msg.unwrap_or_default())]));
    }
    Ok(msg.map_or_else(|| Reply::Simple("PONG".into()), Reply::Bulk))
}

fn hello(s: &mut Session, a: &Args<'_>) -> CmdResult<Reply> {
    // The version takes effect only if the whole HELLO succeeds.
    let (mut i, mut resp3) = (1, s.resp3);
    if a.len() > 1 {
        match a.int(1) {
            Ok(2) => resp3 = false,
            Ok(3) => resp3 = true,
            _ => return Err(CommandError::Reply("NOPROTO unsupported protocol version".into())),
        }
        i = 2;
    }
    while i < a.len() {
        match a.upper(i)?.as_str() {
            "AUTH" => {
                let (user, pass) = (a.str(i + 1)?.to_string(), a.str(i + 2)?.to_string());
                s.login(&user, &pass)?;
                i += 3;
            }
            "SETNAME" => {
                s.name = Some(a.get(i + 1)?.clone());
                i += 2;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    if s.authorize.is_none() {
        return Err(CommandError::Reply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
    }
    s.resp3 = resp3;
    Ok(Reply::Map(vec![
        (Reply::text("server"), Reply::text("redis")),
        (Reply::text("version"), Reply::text(REDIS_VERSION)),
        (Reply::text("proto"), Reply::Int(if s.resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Int(s.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(vec![])),
    ]))
}

fn client(s: &mut Session, a: &Args<'_>) -> CmdResult<Reply> {
    a.at_least(2)?;
    Ok(match a.upper(1)?.as_str() {
        "SETNAME" => {
            a.exactly(3)?;
            let name = a.get(2)?;
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return Err(CommandError::err("Client names cannot contain spaces, newlines or special characters."));
            }
            s.name = (!name.is_empty()).then(|| name.clone());
            Reply::ok()
        }
        "GETNAME" => s.name.clone().map_or(Reply::Null, Reply::Bulk),
        "ID" => Reply::Int(s.id as i64),
        // Library name and version (redis-py, go-redis send them): accepted, not kept.
        "SETINFO" => Reply::ok(),
        "INFO" => Reply::text(format!(
            "id={} addr={} name={} resp={} user={}\n",
            s.id,
            s.peer,
            String::from_utf8_lossy(s.name.as_deref().unwrap_or_default()),
            if s.resp3 { 3 } else { 2 },
            s.user
        )),
        _ => return Err(CommandError::err("unknown subcommand or wrong number of arguments for 'client' command")),
    })
}

fn info(_s: &Session) -> String {
    format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nferry_version:{}\r\nprocess_id:{}\r\n\r\n# Keyspace\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
    )
}

/// The commands served, with Redis's arity (negative: at least), flags and
/// key positions, for COMMAND / COMMAND INFO / COMMAND COUNT.
const TABLE: &[(&str, i64, &str, i64, i64)] = &[
    ("ping", -1, "fast", 0, 0),
    ("echo", 2, "fast", 0, 0),
    ("select", 2, "fast", 0, 0),
    ("hello", -1, "fast", 0, 0),
    ("auth", -2, "fast", 0, 0),
    ("client", -2, "admin", 0, 0),
    ("info", -1, "loading", 0, 0),
    ("command", -1, "loading", 0, 0),
    ("quit", -1, "fast", 0, 0),
    ("reset", 1, "fast", 0, 0),
    ("type", 2, "readonly", 1, 1),
    ("exists", -2, "readonly", 1, -1),
    ("del", -2, "write", 1, -1),
    ("subscribe", -2, "pubsub", 0, 0),
    ("psubscribe", -2, "pubsub", 0, 0),
    ("ssubscribe", -2, "pubsub", 1, -1),
    ("unsubscribe", -1, "pubsub", 0, 0),
    ("punsubscribe", -1, "pubsub", 0, 0),
    ("sunsubscribe", -1, "pubsub", 1, -1),
    ("publish", 3, "pubsub", 0, 0),
    ("spublish", 3, "pubsub", 1, 1),
    ("lpush", -3, "write", 1, 1),
    ("rpush", -3, "write", 1, 1),
    ("lpop", -2, "write", 1, 1),
    ("rpop", -2, "write", 1, 1),
    ("blpop", -3, "write", 1, -2),
    ("brpop", -3, "write", 1, -2),
    ("lmove", 5, "write", 1, 2),
    ("blmove", 6, "write", 1, 2),
    ("rpoplpush", 3, "write", 1, 2),
    ("brpoplpush", 4, "write", 1, 2),
    ("llen", 2, "readonly", 1, 1),
    ("lrange", 4, "readonly", 1, 1),
    ("lindex", 3, "readonly", 1, 1),
    ("lset", 4, "write", 1, 1),
    ("linsert", 5, "write", 1, 1),
    ("lrem", 4, "write", 1, 1),
    ("xadd", -5, "write", 1, 1),
    ("xlen", 2, "readonly", 1, 1),
    ("xrange", -4, "readonly", 1, 1),
    ("xrevrange", -4, "readonly", 1, 1),
    ("xread", -4, "readonly", 0, 0),
    ("xreadgroup", -7, "write", 0, 0),
    ("xdel", -3, "write", 1, 1),
    ("xtrim", -4, "write", 1, 1),
    ("xgroup", -2, "write", 2, 2),
    ("xack", -4, "write", 1, 1),
    ("xpending", -3, "readonly", 1, 1),
    ("xclaim", -6, "write", 1, 1),
    ("xautoclaim", -6, "write", 1, 1),
    ("xinfo", -2, "readonly", 2, 2),
];

fn command(a: &Args<'_>) -> CmdResult<Reply> {
    let entry = |(name, arity, flag, first, last): &(&str, i64, &str, i64, i64)| {
        Reply::Array(vec![
            Reply::text(*name),
            Reply::Int(*arity),
            Reply::Array(vec![Reply::Simple((*flag).into())]),
            Reply::Int(*first),
            Reply::Int(*last),
            Reply::Int(i64::from(*first != 0)),
        ])
    };
    if a.len() == 1 {
        return Ok(Reply::Array(TABLE.iter().map(entry).collect()));
    }
    Ok(match a.upper(1)?.as_str() {
        "COUNT" => Reply::Int(TABLE.len() as i64),
        "INFO" => Reply::Array(
            (2..a.len())
                .map(|i| {
                    let n = String::from_utf8_lossy(&a.raw()[i]).to_ascii_lowercase();
                    TABLE.iter().find(|c| c.0 == n).map_or(Reply::NullArray, entry)
                })
                .collect(),
        ),
        // Clients only need the reply to parse: documents for no command.
        "DOCS" => Reply::Map(vec![]),
        "LIST" => Reply::Array(TABLE.iter().map(|c| Reply::text(c.0)).collect()),
        _ => return Err(CommandError::err("unknown subcommand or wrong number of arguments for 'command' command")),
    })
}

fn vhost_queues(s: &Session) -> Vec<std::sync::Arc<ferry_broker::messaging::Queue>> {
    s.server.vhosts.get(&s.server.config.vhost).map(|v| v.queues()).unwrap_or_default()
}

/// "stream", "list" or "none" (a name that is both is reported as a stream).
fn key_type(s: &Session, key: &str) -> &'static str {
    if s.server.broker.topic(key).is_some() {
        "stream"
    } else if s.server.vhosts.get(&s.server.config.vhost).and_then(|v| v.queue(key)).is_some() {
        "list"
    } else {
        "none"
    }
}

/// DEL: a stream's topic (with its groups) or a list's queue goes.
async fn delete(s: &Session, key: &str) -> CmdResult<bool> {
    match key_type(s, key) {
        "stream" => {
            s.check(Access::Delete, "topic", key)?;
            // Its groups go first: they are found by the topic's id.
            s.server.streams.forget(key);
            s.server.broker.delete_topic(key).await?;
            Ok(true)
        }
        "list" => {
            s.check(Access::Delete, "queue", key)?;
            if let Some(v) = s.server.vhosts.get(&s.server.config.vhost) {
                v.delete_queue(key, false, false, s.id)?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Key names must be text: Ferry names topics and queues with strings.
pub(super) fn key_name(b: &Bytes) -> CmdResult<&str> {
    std::str::from_utf8(b).map_err(|_| CommandError::err("Ferry keys must be UTF-8 text"))
}
