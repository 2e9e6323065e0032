//! One connection to one Kafka broker: framed requests, responses matched
//! by correlation id, so callers may keep several requests in flight
//! (pipelining; the broker answers in order), and request versions agreed
//! through ApiVersions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use crate::client::ClientConfig;
use crate::error::ClientError;
use crate::lock;

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<Result<Bytes, ClientError>>>>>;

/// Largest response accepted (a fetch answer is bounded by its max_bytes).
const MAX_RESPONSE: usize = 256 << 20;

/// A connection to one broker; shared (`&self`) by concurrent requests.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiters: Waiters,
    next_id: AtomicI32,
    /// Supported (min, max) version per API key, from ApiVersions.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects and asks the broker which API versions it speaks.
    pub async fn connect(addr: &str, config: &ClientConfig) -> Result<Connection, ClientError> {
        let timeout = config.timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Connect(addr.to_string(), "timed out".into()))?
            .map_err(|e| ClientError::Connect(addr.to_string(), e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| ClientError::Connect(addr.to_string(), e.to_string()))?;
        let (rd, wr) = stream.into_split();
        let waiters: Waiters = Arc::default();
        let reader = tokio::spawn(read_responses(rd, addr.to_string(), waiters.clone()));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            writer: tokio::sync::Mutex::new(wr),
            waiters,
            next_id: AtomicI32::new(1),
            versions: HashMap::new(),
            timeout,
            reader,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("ferry"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = conn.send_version(req, 3).await?;
        if resp.error_code != 0 {
            return Err(ClientError::Kafka { code: resp.error_code, context: "ApiVersions".into() });
        }
        conn.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        if let Some(login) = &config.sasl {
            crate::sasl::login(&conn, login).await?;
        }
        Ok(conn)
    }

    /// Whether the connection is gone (the broker closed it, or it broke):
    /// every request on it fails.
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// The address this connection was opened to (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version to use for `R`: the highest both sides speak, at most
    /// `preferred` (the newest version whose fields this client fills in).
    pub fn version<R: Request>(&self, preferred: i16) -> Result<i16, ClientError> {
        let (min, max) = self.versions.get(&R::KEY).copied().ok_or(ClientError::Unsupported(R::KEY))?;
        let v = preferred.min(max).min(R::VERSIONS.max);
        if v < min || v < R::VERSIONS.min {
            return Err(ClientError::Unsupported(R::KEY));
        }
        Ok(v)
    }

    /// Sends `req` at the best version up to `preferred`, waits for the answer.
    pub async fn send<R: Request>(&self, req: R, preferred: i16) -> Result<R::Response, ClientError> {
        let v = self.version::<R>(preferred)?;
        self.send_version(req, v).await
    }

    /// Sends `req` at version `v`, with the request timeout.
    pub async fn send_version<R: Request>(&self, req: R, v: i16) -> Result<R::Response, ClientError> {
        self.start(&req, v).await?.wait().await
    }

    /// Writes `req` and returns without waiting for the answer, so that more
    /// requests can follow on this connection (pipelining).
    pub async fn start<R: Request>(&self, req: &R, v: i16) -> Result<InFlight<R>, ClientError> {
        let rx = self.enqueue(req, v, true).await?;
        Ok(InFlight { rx, v, addr: self.addr.clone(), timeout: self.timeout, _request: std::marker::PhantomData })
    }

    /// Writes a request that gets no response (Produce with acks=0).
    pub async fn fire<R: Request>(&self, req: &R, v: i16) -> Result<(), ClientError> {
        self.enqueue(req, v, false).await.map(drop)
    }

    /// Writes the request; the receiver yields the response body (after the
    /// size prefix; header still in it).
    async fn enqueue<R: Request>(
        &self,
        req: &R,
        v: i16,
        answered: bool,
    ) -> Result<oneshot::Receiver<Result<Bytes, ClientError>>, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(v)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf, R::header_version(v)).map_err(|e| ClientError::Encode(e.to_string()))?;
        req.encode(&mut buf, v).map_err(|e| ClientError::Encode(e.to_string()))?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| ClientError::Encode("request too large".into()))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let (tx, rx) = oneshot::channel();
        if answered {
            lock(&self.waiters).insert(id, tx);
        }
        let mut w = self.writer.lock().await;
        if let Err(e) = w.write_all(&buf).await {
            lock(&self.waiters).remove(&id);
            return Err(ClientError::Io(self.addr.clone(), e.to_string()));
        }
        Ok(rx)
    }
}

/// A request written and not yet answered.
pub struct InFlight<R: Request> {
    rx: oneshot::Receiver<Result<Bytes, ClientError>>,
    v: i16,
    addr: String,
    timeout: Duration,
    _request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> InFlight<R> {
    /// Waits for the answer (up to the request timeout) and decodes it.
    pub async fn wait(self) -> Result<R::Response, ClientError> {
        let mut body = tokio::time::timeout(self.timeout, self.rx)
            .await
            .map_err(|_| ClientError::Timeout(self.addr.clone()))?
            .map_err(|_| ClientError::Closed(self.addr.clone()))??;
        ResponseHeader::decode(&mut body, R::Response::header_version(self.v))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        R::Response::decode(&mut body, self.v).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Hands each response frame to the request that waits for it; on a broken
/// stream, fails every waiter.
async fn read_responses(mut rd: OwnedReadHalf, addr: String, waiters: Waiters) {
    let result: Result<(), ClientError> = async {
        loop {
            let len = rd.read_i32().await.map_err(|e| ClientError::Io(addr.clone(), e.to_string()))?;
            let len = usize::try_from(len).ok().filter(|l| (4..=MAX_RESPONSE).contains(l));
            let Some(len) = len else { return Err(ClientError::Decode("bad response size".into())) };
            let mut buf = BytesMut::zeroed(len);
            rd.read_exact(&mut buf).await.map_err(|e| ClientError::Io(addr.clone(), e.to_string()))?;
            let body = buf.freeze();
            let id = (&body[..4]).get_i32();
            if let Some(tx) = lock(&waiters).remove(&id) {
                let _ = tx.send(Ok(body));
            }
        }
    }
    .await;
    let err = result.err().unwrap_or(ClientError::Closed(addr));
    for (_, tx) in lock(&waiters).drain() {
        let _ = tx.send(Err(err.clone()));
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::{ApiVersionsResponse, MetadataRequest, MetadataResponse};
    use tokio::net::TcpListener;

    use super::*;

    const METADATA: i16 = 3;

    /// One request as a broker reads it: (api key, version, header + body).
    async fn read_request(s: &mut TcpStream) -> Option<(i16, i16, Bytes)> {
        let len = usize::try_from(s.read_i32().await.ok()?).ok()?;
        let mut buf = vec![0; len];
        s.read_exact(&mut buf).await.ok()?;
        let b = Bytes::from(buf);
        Some(((&b[0..2]).get_i16(), (&b[2..4]).get_i16(), b))
    }

    fn decode_request<R: Request>(mut b: Bytes, v: i16) -> (i32, R) {
        let h = RequestHeader::decode(&mut b, R::header_version(v)).unwrap();
        (h.correlation_id, R::decode(&mut b, v).unwrap())
    }

    async fn answer<R: Request>(s: &mut TcpStream, correlation_id: i32, resp: &R::Response, v: i16) {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, R::Response::header_version(v))
            .unwrap();
        resp.encode(&mut buf, v).unwrap();
        s.write_i32(buf.len() as i32).await.unwrap();
        s.write_all(&buf).await.unwrap();
    }

    /// A broker that speaks Metadata v0-9 and hands the connection, after
    /// ApiVersions, to `then`.
    async fn broker<F, Fut>(then: F) -> String
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let (key, v, b) = read_request(&mut s).await.unwrap();
            assert_eq!(key, 18, "ApiVersions first");
            let (id, _) = decode_request::<ApiVersionsRequest>(b, v);
            let versions = ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default().with_api_key(METADATA).with_min_version(0).with_max_version(9),
            ]);
            answer::<ApiVersionsRequest>(&mut s, id, &versions, v).await;
            then(s).await;
        });
        addr
    }

    fn config(timeout_ms: u64) -> ClientConfig {
        ClientConfig::new("test", Duration::from_millis(timeout_ms))
    }

    fn metadata_of(topic: &str) -> MetadataRequest {
        let name = kafka_protocol::messages::TopicName(StrBytes::from_string(topic.into()));
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name))]))
    }

    #[tokio::test]
    async fn pipelined_answers_reach_their_requests_in_any_order() {
        let addr = broker(|mut s| async move {
            let mut asked = Vec::new();
            for _ in 0..2 {
                let (key, v, b) = read_request(&mut s).await.unwrap();
                assert_eq!(key, METADATA);
                let (id, req) = decode_request::<MetadataRequest>(b, v);
                let topic = req.topics.unwrap_or_default().remove(0).name;
                asked.push((id, v, topic));
            }
            // The second answer first: the correlation id routes each one.
            for (id, v, topic) in asked.into_iter().rev() {
                let resp =
                    MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default().with_name(topic)]);
                answer::<MetadataRequest>(&mut s, id, &resp, v).await;
            }
        })
        .await;
        let conn = Connection::connect(&addr, &config(5_000)).await.unwrap();
        assert_eq!(conn.version::<MetadataRequest>(12).unwrap(), 9, "the broker's newest");
        assert!(matches!(conn.version::<ApiVersionsRequest>(3), Err(ClientError::Unsupported(18))));
        let v = conn.version::<MetadataRequest>(12).unwrap();
        let one = conn.start(&metadata_of("one"), v).await.unwrap();
        let two = conn.start(&metadata_of("two"), v).await.unwrap();
        let name = |r: MetadataResponse| r.topics[0].name.as_ref().map(|n| n.0.to_string());
        assert_eq!(name(one.wait().await.unwrap()).as_deref(), Some("one"));
        assert_eq!(name(two.wait().await.unwrap()).as_deref(), Some("two"));
    }

    #[tokio::test]
    async fn waiters_fail_when_the_broker_goes_away_or_stays_silent() {
        let addr = broker(|mut s| async move {
            let _ = read_request(&mut s).await;
        })
        .await;
        let conn = Connection::connect(&addr, &config(5_000)).await.unwrap();
        let err = conn.send(metadata_of("t"), 12).await.unwrap_err();
        assert!(matches!(err, ClientError::Io(..) | ClientError::Closed(_)), "{err}");

        let (tx, rx) = oneshot::channel::<()>();
        let addr = broker(|s| async move {
            // Holds the connection open without answering until the test ends.
            let _s = s;
            let _ = rx.await;
        })
        .await;
        let conn = Connection::connect(&addr, &config(200)).await.unwrap();
        let err = conn.send(metadata_of("t"), 12).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout(ref a) if *a == addr), "{err}");
        drop(tx);
    }
}
