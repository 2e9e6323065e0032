//! Malformed AMQP input over raw TCP: the right close code, no panic,
//! other clients unaffected, stored messages intact.

use bytes::{Bytes, BytesMut};
use ferry_amqp::frame::{self, FrameReader};
use lapin::options::*;
use lapin::protocol::{AMQPClass, basic, channel, connection, parse_class};
use lapin::types::{FieldTable, LongString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::amqp_support::*;
use crate::support::Broker;

struct Raw {
    rd: FrameReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

fn method(ch: u16, m: AMQPClass) -> Bytes {
    let mut b = BytesMut::new();
    frame::put_method(&mut b, ch, &m).unwrap();
    b.freeze()
}

impl Raw {
    async fn method(&mut self) -> (u16, AMQPClass) {
        loop {
            let f = tokio::time::timeout(std::time::Duration::from_secs(10), self.rd.next(0))
                .await
                .expect("a frame within 10 s")
                .expect("a frame");
            if f.kind == frame::FRAME_METHOD {
                return (f.channel, parse_class(&f.payload[..]).unwrap().1);
            }
        }
    }

    async fn send(&mut self, b: &[u8]) {
        self.wr.write_all(b).await.unwrap();
    }

    /// Connects and opens vhost "/" as guest.
    async fn open(port: u16) -> Raw {
        Raw::open_tuned(port, 131072, 0).await
    }

    /// [`Raw::open`] with the client's frame_max and heartbeat.
    async fn open_tuned(port: u16, frame_max: u32, heartbeat: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (rd, wr) = s.into_split();
        let mut raw = Raw { rd: FrameReader::new(rd), wr };
        raw.send(frame::PROTOCOL_HEADER).await;
        assert!(matches!(raw.method().await.1, AMQPClass::Connection(connection::AMQPMethod::Start(_))));
        let ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from("\0guest\0guest"),
            locale: "en_US".into(),
        };
        raw.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)))).await;
        assert!(matches!(raw.method().await.1, AMQPClass::Connection(connection::AMQPMethod::Tune(_))));
        let tune = connection::TuneOk { channel_max: 16, frame_max, heartbeat };
        raw.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune)))).await;
        let open = connection::Open { virtual_host: "/".into() };
        raw.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)))).await;
        assert!(matches!(raw.method().await.1, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))));
        raw
    }

    async fn open_channel(&mut self, id: u16) {
        self.send(&method(id, AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})))).await;
        assert!(matches!(self.method().await, (c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) if c == id));
    }

    /// Expects connection.close with `code`, then the socket closing.
    async fn expect_close(mut self, code: u16) {
        match self.method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                assert_eq!(c.reply_code, code, "reply text: {}", c.reply_text);
            }
            other => panic!("expected connection.close {code}, got {other:?}"),
        }
        let _ = self
            .wr
            .write_all(&method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))))
            .await;
        let end =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.rd.next(0)).await.expect("socket closed");
        assert!(end.is_err(), "nothing after connection.close: {end:?}");
    }
}

#[tokio::test]
async fn bad_input_gets_the_right_close_code_and_hurts_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "safe", true).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", "safe", b"precious", persistent()).await;

    // Garbage instead of the protocol header: our header back, then close.
    let mut s = TcpStream::connect(("127.0.0.1", b.amqp_port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, frame::PROTOCOL_HEADER);

    // A frame larger than frame_max: 501, refused from the header.
    let mut r = Raw::open(b.amqp_port).await;
    r.send(&[frame::FRAME_METHOD, 0, 1, 0x7F, 0xFF, 0xFF, 0xFF]).await;
    r.expect_close(501).await;

    // A wrong frame-end octet: 501.
    let mut r = Raw::open(b.amqp_port).await;
    r.open_channel(1).await;
    let mut bad = BytesMut::from(
        &method(1, AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: 1, global: false })))[..],
    );
    let n = bad.len();
    bad[n - 1] = 0x00;
    r.send(&bad).await;
    r.expect_close(501).await;

    // A method on a channel never opened: 504.
    let mut r = Raw::open(b.amqp_port).await;
    r.send(&method(5, AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: 1, global: false })))).await;
    r.expect_close(504).await;

    // An unknown class: 540.
    let mut r = Raw::open(b.amqp_port).await;
    r.open_channel(1).await;
    let mut f = BytesMut::new();
    frame::put_frame(&mut f, frame::FRAME_METHOD, 1, &[0, 99, 0, 1, 0, 0]);
    r.send(&f).await;
    r.expect_close(540).await;

    // A malformed known method: 502.
    let mut r = Raw::open(b.amqp_port).await;
    r.open_channel(1).await;
    let mut f = BytesMut::new();
    frame::put_frame(&mut f, frame::FRAME_METHOD, 1, &[0, 50, 0, 10, 0]);
    r.send(&f).await;
    r.expect_close(502).await;

    // Content without a publish: 505.
    let mut r = Raw::open(b.amqp_port).await;
    r.open_channel(1).await;
    let mut f = BytesMut::new();
    frame::put_content(&mut f, 1, &[0, 0], b"body", 131072);
    r.send(&f).await;
    r.expect_close(505).await;

    // A method where the content header should be: 505.
    let mut r = Raw::open(b.amqp_port).await;
    r.open_channel(1).await;
    let publish =
        basic::Publish { exchange: "".into(), routing_key: "safe".into(), mandatory: false, immediate: false };
    r.send(&method(1, AMQPClass::Basic(basic::AMQPMethod::Publish(publish.clone())))).await;
    r.send(&method(1, AMQPClass::Basic(basic::AMQPMethod::Publish(publish)))).await;
    r.expect_close(505).await;

    // Connection methods on a channel, heartbeats on a channel: 503, 501.
    let mut r = Raw::open(b.amqp_port).await;
    r.open_channel(1).await;
    r.send(&method(
        1,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open { virtual_host: "/".into() })),
    ))
    .await;
    r.expect_close(503).await;
    let mut r = Raw::open(b.amqp_port).await;
    let mut f = BytesMut::new();
    frame::put_frame(&mut f, frame::FRAME_HEARTBEAT, 3, &[]);
    r.send(&f).await;
    r.expect_close(501).await;

    // Wrong password: 403 during the handshake.
    let s = TcpStream::connect(("127.0.0.1", b.amqp_port)).await.unwrap();
    let (rd, wr) = s.into_split();
    let mut r = Raw { rd: FrameReader::new(rd), wr };
    r.send(frame::PROTOCOL_HEADER).await;
    r.method().await;
    let ok = connection::StartOk {
        client_properties: FieldTable::default(),
        mechanism: "PLAIN".into(),
        response: LongString::from("\0guest\0wrong"),
        locale: "en_US".into(),
    };
    r.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(ok)))).await;
    r.expect_close(403).await;

    // The lapin client never noticed, and the message is intact.
    assert!(ch.status().connected());
    let mut cons = consumer(&ch, "safe", "c").await;
    let d = next(&mut cons).await;
    assert_eq!(d.data, b"precious");
}

/// xorshift: reproducible noise without a dependency.
fn noise(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test]
async fn random_frames_do_no_harm() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let (_c, ch) = channel(&b).await;
    declare(&ch, "safe", true).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish(&ch, "", "safe", b"precious", persistent()).await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..60 {
        let mut r = Raw::open(b.amqp_port).await;
        r.open_channel(1).await;
        // Well-formed frame envelopes with random payloads (and sometimes
        // random bytes outright), on channels 0..3.
        let mut out = BytesMut::new();
        for _ in 0..8 {
            let n = (noise(&mut seed) % 64) as usize;
            let payload: Vec<u8> = (0..n).map(|_| noise(&mut seed) as u8).collect();
            if round % 5 == 0 {
                out.extend_from_slice(&payload);
            } else {
                let kind =
                    [frame::FRAME_METHOD, frame::FRAME_HEADER, frame::FRAME_BODY][(noise(&mut seed) % 3) as usize];
                let mut p = payload;
                if kind == frame::FRAME_METHOD && p.len() >= 4 {
                    // Mostly known classes, so decoders get exercised.
                    p[0] = 0;
                    p[1] = [10, 20, 40, 50, 60, 85, 90][(noise(&mut seed) % 7) as usize];
                    p[2] = 0;
                }
                frame::put_frame(&mut out, kind, (noise(&mut seed) % 3) as u16, &p);
            }
        }
        let _ = r.wr.write_all(&out).await;
        let _ = r.wr.shutdown().await;
        // Whatever it made of that, the broker closes the connection.
        tokio::time::timeout(std::time::Duration::from_secs(10), async { while r.rd.next(0).await.is_ok() {} })
            .await
            .expect("the broker closed the connection");
    }
    assert!(ch.status().connected());
    assert_eq!(ready(&ch, "safe").await, 1);
    let mut cons = consumer(&ch, "safe", "c").await;
    assert_eq!(next(&mut cons).await.data, b"precious");
}

#[tokio::test]
async fn negotiated_limits_and_heartbeats_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());

    // frame_max 4096: deliveries are split to fit, a bigger frame is 501.
    let mut r = Raw::open_tuned(b.amqp_port, 4096, 0).await;
    r.open_channel(1).await;
    let (_c, ch) = channel(&b).await;
    declare(&ch, "small-frames", false).await;
    let body = vec![b'z'; 10_000];
    publish(&ch, "", "small-frames", &body, lapin::BasicProperties::default()).await;
    let consume = basic::Consume {
        queue: "small-frames".into(),
        consumer_tag: "raw".into(),
        no_local: false,
        no_ack: true,
        exclusive: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    r.send(&method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)))).await;
    let mut received = 0;
    let mut frames = 0;
    while received < body.len() {
        let f = tokio::time::timeout(std::time::Duration::from_secs(10), r.rd.next(4096)).await.unwrap().unwrap();
        if f.kind == frame::FRAME_BODY {
            assert!(f.payload.len() + 8 <= 4096);
            received += f.payload.len();
            frames += 1;
        }
    }
    assert_eq!((received, frames), (10_000, 3));
    let mut big = BytesMut::new();
    frame::put_frame(&mut big, frame::FRAME_BODY, 1, &vec![0u8; 5000]);
    r.send(&big).await;
    r.expect_close(501).await;

    // A channel number above the negotiated channel_max (16): 530.
    let mut r = Raw::open(b.amqp_port).await;
    r.send(&method(17, AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})))).await;
    r.expect_close(530).await;

    // Heartbeat 1 s: the broker sends heartbeats, and drops a client that
    // stays silent for two intervals.
    let mut r = Raw::open_tuned(b.amqp_port, 131072, 1).await;
    let started = std::time::Instant::now();
    let mut beats = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), r.rd.next(0)).await.expect("closed in time") {
            Ok(f) if f.kind == frame::FRAME_HEARTBEAT => beats += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(beats >= 1, "heartbeats were sent");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900), "not dropped before two intervals");
}

#[tokio::test]
async fn shutdown_closes_connections_with_320() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::start(dir.path());
    let r = Raw::open(b.amqp_port).await;
    // SIGTERM; `stop` also checks the broker exits cleanly.
    let stopper = std::thread::spawn(move || {
        b.stop();
        b
    });
    r.expect_close(320).await;
    drop(stopper.join().unwrap());
}
