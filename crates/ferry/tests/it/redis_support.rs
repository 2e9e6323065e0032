//! Helpers of the Redis end-to-end tests: `redis` crate connections, raw
//! sockets, reply flattening.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::support::Broker;

pub async fn connect(b: &Broker, resp3: bool) -> MultiplexedConnection {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/{proto}", b.redis_port)).expect("redis url");
    // The crate's default 500 ms answer timeout is a timing assertion: a
    // loaded machine (a pipeline of 200 fsynced appends, a new list's
    // definition through the controller) exceeds it; the tests bound
    // their time themselves.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client.get_multiplexed_async_connection_with_config(&config).await.expect("redis connect")
}

/// Sends raw bytes, returns what came back until the server closed or
/// stopped answering.
pub fn raw(b: &Broker, input: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", b.redis_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(input).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

pub fn fields(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().flat_map(fields).collect(),
        Value::BulkString(b) => vec![String::from_utf8_lossy(b).into_owned()],
        Value::SimpleString(s) => vec![s.clone()],
        Value::Int(n) => vec![n.to_string()],
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [fields(k), fields(v)].concat()).collect(),
        _ => vec![],
    }
}
