//! Group commit of LPUSH / RPUSH across connections, as XADD has it
//! ([`crate::streams::appender`]): a list's pushes go to one task per
//! list, which appends whatever has queued up, from every connection, as
//! one record batch of the queue's log ([`Queue::publish_all`]: one CRC,
//! one write, one flush request for many elements), then takes the next
//! batch while the last one's fsync runs. Each push's reply still waits
//! for its own elements to be durable.
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

/// Elements taken into one batch at most (a push's elements are never split).
const MAX_BATCH: usize = 1024;

/// Resolves to the list's length after the batch, once the push is durable.
type Done = oneshot::Sender<CmdResult<i64>>;

/// The queue into one list's appending task.
pub struct ListAppender {
    tx: mpsc::UnboundedSender<(Vec<Message>, Done)>,
}

impl ListAppender {
    fn start(q: Arc<Queue>) -> ListAppender {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(q, rx));
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

/// One appending task per list, started on first use.
#[derive(Default)]
pub struct ListAppenders {
    map: Mutex<HashMap<String, (Weak<Queue>, Arc<ListAppender>)>>,
}

impl ListAppenders {
    /// The appender of list `name`, whose queue is `q` (a new one if the
    /// queue was deleted and declared again since).
    pub fn get(&self, name: &str, q: &Arc<Queue>) -> Arc<ListAppender> {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((on, a)) = map.get(name)
            && on.as_ptr() == Arc::as_ptr(q)
        {
            return a.clone();
        }
        // Lists deleted since go with the new entry's insertion (their tasks
        // end once their last pushes are answered).
        map.retain(|_, (on, _)| on.strong_count() > 0);
        let a = Arc::new(ListAppender::start(q.clone()));
        map.insert(name.to_string(), (Arc::downgrade(q), a.clone()));
        a
    }
}

async fn run(q: Arc<Queue>, mut rx: mpsc::UnboundedReceiver<(Vec<Message>, Done)>) {
    while let Some((mut elements, done)) = rx.recv().await {
        let mut waiters = vec![done];
        while elements.len() < MAX_BATCH {
            let Ok((more, done)) = rx.try_recv() else { break };
            elements.extend(more);
            waiters.push(done);
        }
        let last = match q.publish_all(&elements) {
            Ok(Published::Stored(off)) => off,
            // Lists that may refuse do not come here (see the module docs).
            Ok(Published::Rejected) => {
                answer(waiters, Err("the list refused the elements".into()));
                continue;
            }
            Err(e) => {
                answer(waiters, Err(format!("the list's log could not be written: {e}")));
                continue;
            }
        };
        drop(elements);
        let len = q.ready_count() as i64;
        // Waits for disk on the flusher's callback, so the next batch is appended meanwhile.
        q.on_durable(last, move |ok| {
            answer(waiters, if ok { Ok(len) } else { Err("the list's log could not be written".into()) })
        });
    }
}

fn answer(waiters: Vec<Done>, result: Result<i64, String>) {
    for w in waiters {
        let _ = w.send(result.clone().map_err(CommandError::err));
    }
}
