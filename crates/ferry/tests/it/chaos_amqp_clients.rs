//! AMQP connections the chaos harness gives up on (docs/reliability.md,
//! Found 15). A `basic.consume` whose consume-ok comes after the client
//! stopped waiting (the harness's 10 s timeout, while the node's
//! registration call to a dead queue leader ran out its own 10 s) leaves
//! lapin holding a consumer nobody reads: lapin keeps the channel's closer
//! in the expected reply, registers an internal consumer holding it when
//! the consume-ok arrives, and so never closes the channel nor the
//! connection when the caller drops them. Its I/O loop keeps the
//! connection alive (heartbeats), the broker rightly keeps delivering up
//! to the prefetch, and those confirmed messages are read by no one until
//! the connection ends. The harness therefore closes what it abandons.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::amqp_support::{channel, persistent, publish};
use crate::support::{Broker, watchdog};

/// Closes a connection the harness gives up on, bounded: dropping it is
/// not enough when a consume is still unanswered (above).
pub async fn abandon(conn: lapin::Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "abandoned".into())).await;
}

async fn consumers(ch: &lapin::Channel, queue: &str) -> u32 {
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(queue.into(), opts, FieldTable::default()).await.expect("passive declare").consumer_count()
}

/// Opens a consumer of `queue` (prefetch 50) and gives up on it before
/// its consume-ok (the future dropped right after the method went out),
/// then on its channel and connection: dropped, or closed by [`abandon`].
async fn give_up_on_a_consume(b: &Broker, queue: &str, close: bool) {
    let (conn, ch) = channel(b).await;
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let consume =
        ch.basic_consume(queue.into(), "given-up".into(), BasicConsumeOptions::default(), FieldTable::default());
    // Sent on the first poll; its answer cannot have come back yet.
    assert!(futures_lite::future::poll_once(Box::pin(consume)).await.is_none(), "answered at once");
    drop(ch);
    if close {
        abandon(conn).await;
    } else {
        drop(conn);
    }
}

/// A consume given up before its consume-ok: with its channel and
/// connection only dropped, lapin keeps the consumer alive on the broker
/// (the Found 15 ghost, holding up to its prefetch); closed through
/// [`abandon`], the broker forgets it and another consumer reads all ten
/// messages published after.
#[test]
fn a_consume_abandoned_before_its_answer_leaves_no_consumer_behind() {
    let _guard = watchdog("chaos_amqp_clients::a_consume_abandoned", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_conn, ch) = channel(&b).await;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        for q in ["dropped", "closed"] {
            ch.queue_declare(q.into(), durable, FieldTable::default()).await.unwrap();
        }
        give_up_on_a_consume(&b, "dropped", false).await;
        give_up_on_a_consume(&b, "closed", true).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // lapin's behaviour, not the broker's: if a lapin upgrade closes
        // the dropped one too, the harness's close is merely redundant.
        assert_eq!(consumers(&ch, "dropped").await, 1, "the dropped connection's consumer stays");
        assert_eq!(consumers(&ch, "closed").await, 0, "the closed connection's consumer is gone");

        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..10 {
            publish(&ch, "", "closed", format!("m{i}").as_bytes(), persistent()).await;
        }
        let mut c = ch
            .basic_consume("closed".into(), "reader".into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
        for i in 0..10 {
            let d = tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .expect("every message reaches the live consumer")
                .expect("consumer open")
                .expect("a delivery");
            assert_eq!(d.data, format!("m{i}").as_bytes());
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    });
}
