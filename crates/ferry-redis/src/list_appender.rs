//! Group commit of LPUSH / RPUSH across connections, as XADD has it
//! ([`crate::streams::appender`]): a list's pushes go to one task per
//! list, which appends whatever has queued up, from every connection, as
//! one record batch of the queue's log ([`Queue::publish_all`]: one CRC,
//! one write, one flush request for many elements), one batch on its way
//! to disk at a time ([`crate::group_commit`]). Each push's reply still
//! waits for its own elements to be durable.
//!
//! Only lists without length limits or priorities go through it (a queue
//! declared with those by AMQP): there an element may be refused, and the
//! push that brought it must hear so, so they are published one push at a
//! time by the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use ferry_broker::messaging::{Message, Published, Queue};
use tokio::sync::{mpsc, oneshot};

use crate::error::{CmdResult, CommandError};
use crate::group_commit;

/// Pushes taken into one batch at most (a push's elements are never split;
/// [`Queue::publish_all`] makes a new record batch every 256 KiB).
const MAX_PUSHES: usize = 1024;

/// Resolves to the list's length after the batch, once the push is durable.
type Done = oneshot::Sender<CmdResult<i64>>;

/// The queue into one list's appending task.
pub struct ListAppender {
    tx: mpsc::UnboundedSender<(Vec<Message>, Done)>,
}

impl ListAppender {
    fn start(q: &Arc<Queue>) -> ListAppender {
        let (tx, rx) = mpsc::unbounded_channel();
        // Weak: a deleted list's queue (and its log files) is not kept alive by its task.
        tokio::spawn(run(Arc::downgrade(q), rx));
        ListAppender { tx }
    }

    /// Queues one push's `elements` (in order, after every push queued
    /// before); the receiver resolves once they are durable.
    pub fn push(&self, elements: Vec<Message>) -> oneshot::Receiver<CmdResult<i64>> {
        let (done, rx) = oneshot::channel();
        // A task that is gone drops `done`: the receiver reports it.
        let _ = self.tx.send((elements, done));
        rx
    }
}

/// A list's appender, with the queue it appends to.
type Started = (Weak<Queue>, Arc<ListAppender>);

/// One appending task per list, started on first use.
#[derive(Default)]
pub struct ListAppenders {
    map: Mutex<HashMap<String, Started>>,
}

impl ListAppenders {
    /// The appender of list `name`, whose queue is `q` (a new one if the
    /// queue was deleted and declared again since).
    pub fn get(&self, name: &str, q: &Arc<Queue>) -> Arc<ListAppender> {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Compared while alive: a freed queue's address may be a new one's.
        if let Some((on, a)) = map.get(name)
            && on.upgrade().is_some_and(|on| Arc::ptr_eq(&on, q))
        {
            return a.clone();
        }
        // Lists deleted since go with the new entry's insertion (their tasks
        // end once their last pushes are answered).
        map.retain(|_, (on, _)| on.strong_count() > 0);
        let a = Arc::new(ListAppender::start(q));
        map.insert(name.to_string(), (Arc::downgrade(q), a.clone()));
        a
    }
}

async fn run(q: Weak<Queue>, rx: mpsc::UnboundedReceiver<(Vec<Message>, Done)>) {
    group_commit::run(rx, MAX_PUSHES, group_commit::LINGER, move |batch| {
        let mut elements = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for (push, done) in batch {
            elements.extend(push);
            waiters.push(done);
        }
        let Some(q) = q.upgrade() else {
            answer(waiters, Err("the list was deleted".into()));
            return None;
        };
        let last = match q.publish_all(&elements) {
            Ok(Published::Stored(off)) => off,
            // Lists that may refuse do not come here (see the module docs).
            Ok(Published::Rejected) => {
                answer(waiters, Err("the list refused the elements".into()));
                return None;
            }
            Err(e) => {
                answer(waiters, Err(format!("the list's log could not be written: {e}")));
                return None;
            }
        };
        drop(elements);
        let len = q.ready_count() as i64;
        let (on_disk, durable) = oneshot::channel();
        // Answered on the flusher's callback, which ends the batch's flight.
        q.on_durable(last, move |ok| {
            answer(waiters, if ok { Ok(len) } else { Err("the list's log could not be written".into()) });
            let _ = on_disk.send(());
        });
        Some(Box::pin(async move {
            let _ = durable.await;
        }))
    })
    .await;
}

fn answer(waiters: Vec<Done>, result: Result<i64, String>) {
    for w in waiters {
        let _ = w.send(result.clone().map_err(CommandError::err));
    }
}
