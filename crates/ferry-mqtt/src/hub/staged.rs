//! Appends to persistent sessions' node-local queues, staged while a
//! connection handles the QoS 1 PUBLISHes of one read and made as one batch
//! per queue once it has (or before anything that must come after them):
//! one write, one flush request and one wake-up per queue and read instead
//! of one per message. Every PUBACK of a batch waits for the same store.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ferry_broker::BrokerError;
use ferry_broker::queue::RecordQueue;
use ferry_broker::stored::StoredRecord;
use ferry_util::sync::lock;

use crate::session::Session;

type Writing = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>>;

/// Records staged for session queues, committed by [`Staged::commit`].
#[derive(Default)]
pub struct Staged {
    queues: Vec<StagedQueue>,
}

struct StagedQueue {
    queue: Arc<RecordQueue>,
    records: Vec<StoredRecord>,
    /// The session to wake once they are on disk (connected when staged).
    wake: Option<Arc<Session>>,
    store: Arc<BatchStore>,
}

/// A batch's store, shared by the acknowledgements of its messages.
pub struct BatchStore(Mutex<State>);

enum State {
    /// Not appended yet: the connection commits before it waits.
    Staged,
    Writing(Writing),
    Done(Result<(), String>),
}

impl Staged {
    /// Stages `record` for `queue` unless the queue (with what is staged
    /// for it) holds `limit` records already; the store to wait for.
    pub fn stage(
        &mut self,
        queue: &Arc<RecordQueue>,
        record: StoredRecord,
        limit: u64,
        wake: Option<Arc<Session>>,
    ) -> Option<Arc<BatchStore>> {
        let at = self.queues.iter().position(|s| Arc::ptr_eq(&s.queue, queue)).unwrap_or_else(|| {
            self.queues.push(StagedQueue {
                queue: queue.clone(),
                records: Vec::new(),
                wake: None,
                store: Arc::new(BatchStore(Mutex::new(State::Staged))),
            });
            self.queues.len() - 1
        });
        let s = &mut self.queues[at];
        if queue.written_len() + s.records.len() as u64 >= limit {
            return None;
        }
        s.records.push(record);
        s.wake = s.wake.take().or(wake);
        Some(s.store.clone())
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Appends what is staged, one batch per queue, and lets their stores
    /// be waited for.
    pub fn commit(&mut self) {
        for s in self.queues.drain(..) {
            if s.records.is_empty() {
                continue;
            }
            let state = match s.queue.append(&s.records) {
                Ok((end, durable)) => {
                    if let Some(session) = s.wake {
                        s.queue.on_durable(end, move || session.wake.notify_one());
                    }
                    State::Writing(Box::pin(durable.wait()))
                }
                Err(e) => State::Done(Err(e.to_string())),
            };
            *lock(&s.store.0) = state;
        }
    }
}

impl BatchStore {
    /// Resolves once the batch is on disk, or with why it is not. Only the
    /// connection that staged it waits for it (after committing).
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), BrokerError>> {
        let mut st = lock(&self.0);
        let done = match &mut *st {
            State::Staged => return Poll::Pending,
            State::Writing(f) => match f.as_mut().poll(cx) {
                Poll::Ready(r) => r.map_err(|e| e.to_string()),
                Poll::Pending => return Poll::Pending,
            },
            State::Done(r) => r.clone(),
        };
        *st = State::Done(done.clone());
        Poll::Ready(done.map_err(|e| BrokerError::Io(std::io::Error::other(e))))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use ferry_broker::BrokerConfig;

    use super::*;

    fn rec(i: u32) -> StoredRecord {
        StoredRecord { value: Some(i.to_string().into_bytes()), timestamp: 1, ..Default::default() }
    }

    #[tokio::test]
    async fn a_read_batch_is_one_append_per_queue_and_its_acks_share_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            ferry_broker::testing::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() })
                .unwrap();
        let store = broker.record_queue_store("test/staged").unwrap();
        let (a, b) = (store.open(1).unwrap(), store.open(2).unwrap());
        let mut staged = Staged::default();
        let stores: Vec<_> = (0..3).map(|i| staged.stage(&a, rec(i), 10, None).unwrap()).collect();
        let other = staged.stage(&b, rec(9), 10, None).unwrap();
        assert!(Arc::ptr_eq(&stores[0], &stores[2]) && !Arc::ptr_eq(&stores[0], &other));
        // Nothing is written, or resolved, before the commit.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(stores[0].poll(&mut cx).is_pending());
        assert_eq!(a.written_len(), 0);
        staged.commit();
        assert!(staged.is_empty());
        for s in stores.iter().chain([&other]) {
            std::future::poll_fn(|cx| s.poll(cx)).await.unwrap();
        }
        // One batch each, in order.
        let values: Vec<Vec<u8>> = a.read(0, 1 << 20).unwrap().into_iter().filter_map(|(_, r)| r.value).collect();
        assert_eq!(values, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(b.read(0, 1 << 20).unwrap().len(), 1);
        // The limit counts what is staged: 3 written + 1 staged of 5, so
        // one more fits and the next does not.
        assert!(staged.stage(&a, rec(3), 5, None).is_some());
        assert!(staged.stage(&a, rec(4), 5, None).is_some());
        assert!(staged.stage(&a, rec(5), 5, None).is_none());
        staged.commit();
        assert_eq!(a.written_len(), 5);
        broker.shutdown();
    }
}
