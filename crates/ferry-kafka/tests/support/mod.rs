//! A minimal Kafka client for the request-by-request tests: one
//! connection, requests encoded with kafka-protocol, each answer decoded
//! and checked to have no trailing bytes.
#![allow(dead_code)] // each test binary uses its own part of it

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    s: TcpStream,
    correlation: i32,
    client_id: &'static str,
}

impl Client {
    pub async fn connect(port: u16, client_id: &'static str) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Client { s, correlation: 0, client_id }
    }

    pub async fn call(&mut self, key: ApiKey, v: i16, req: RequestKind) -> ResponseKind {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, key.request_header_version(v)).unwrap();
        req.encode(&mut buf, v).unwrap();
        self.s.write_all(&(buf.len() as i32).to_be_bytes()).await.unwrap();
        self.s.write_all(&buf).await.unwrap();
        let len = self.s.read_i32().await.unwrap();
        let mut body = BytesMut::zeroed(len as usize);
        self.s.read_exact(&mut body).await.unwrap();
        let mut body = body.freeze();
        let header = ResponseHeader::decode(&mut body, key.response_header_version(v)).unwrap();
        assert_eq!(header.correlation_id, self.correlation, "{key:?} v{v}: correlation id");
        let resp = ResponseKind::decode(key, &mut body, v).unwrap();
        assert!(body.is_empty(), "{key:?} v{v}: trailing bytes");
        resp
    }
}
