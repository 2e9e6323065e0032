//! The group commit loop under XADD's and the lists' appending tasks
//! ([`crate::streams::appender`], [`crate::list_appender`]): one batch on
//! its way to disk at a time, everything that arrives meanwhile gathered
//! into the next one, as redis-server's event loop writes and fsyncs its
//! AOF once per turn.
//!
//! Why not append as soon as something arrives: the log's flusher starts
//! the next fsync the moment one ends, so with many clients, each with one
//! command in flight, the ones that came back first would get an fsync of
//! their own while the rest are still being answered, and the clients
//! split into groups that alternate, each fsync covering a part of them.
//! So after a batch of many commands ([`MIN_WAITED_FOR`]) is durable and
//! its clients answered, the loop waits (at most [`LINGER`]) until as many
//! commands as that batch held have come back, then appends them all as
//! one batch.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the loop waits for the clients a durable batch released to
/// come back (tokio's timers tick in milliseconds).
pub const LINGER: Duration = Duration::from_millis(1);

/// Batches of fewer commands do not wait for their clients: with few
/// clients, one slow to come back would hold the others for the whole
/// linger (about an fsync), more than sharing the fsync saves them.
pub const MIN_WAITED_FOR: usize = 8;

/// A batch's wait for disk; it answers the batch's clients when it ends.
pub type InFlight = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs until `rx` is closed and everything taken is answered. `append`
/// appends up to `max` items as one batch (in arrival order) and returns
/// its wait for disk, or `None` if it answered them already (a failure).
/// `linger`: [`LINGER`] but in tests.
pub async fn run<T>(
    mut rx: mpsc::UnboundedReceiver<T>,
    max: usize,
    linger_for: Duration,
    mut append: impl FnMut(Vec<T>) -> Option<InFlight>,
) {
    let mut queued: Vec<T> = Vec::new();
    // The batch on its way to disk, with how many items it holds.
    let mut in_flight: Option<(InFlight, usize)> = None;
    // Items the last durable batch held, and until when to wait for them.
    let mut linger: Option<(usize, Instant)> = None;
    let mut closed = false;
    loop {
        if in_flight.is_none() {
            let waited_enough =
                linger.is_none_or(|(released, until)| queued.len() >= released || Instant::now() >= until);
            if !queued.is_empty() && waited_enough {
                let rest = queued.split_off(queued.len().min(max));
                let batch = std::mem::replace(&mut queued, rest);
                let n = batch.len();
                linger = None;
                in_flight = append(batch).map(|f| (f, n));
                continue;
            }
            if closed && queued.is_empty() {
                return;
            }
        }
        let wake_at = linger.map(|(_, until)| until).filter(|_| in_flight.is_none() && !queued.is_empty());
        tokio::select! {
            item = rx.recv(), if !closed => match item {
                Some(item) => {
                    queued.push(item);
                    while let Ok(item) = rx.try_recv() {
                        queued.push(item);
                    }
                }
                None => closed = true,
            },
            n = async {
                match in_flight.as_mut() {
                    Some((f, n)) => {
                        f.await;
                        *n
                    }
                    None => std::future::pending().await,
                }
            } => {
                in_flight = None;
                // The clients it answered are on their way back.
                linger = (n >= MIN_WAITED_FOR).then(|| (n, Instant::now() + linger_for));
            }
            () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {
                linger = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;

    use super::*;

    /// Batches as appended; each stays in flight until the test releases it.
    type Log = Arc<Mutex<Vec<(Vec<u32>, Option<oneshot::Sender<()>>)>>>;

    fn start(max: usize, linger: Duration) -> (mpsc::UnboundedSender<u32>, Log, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let log: Log = Arc::default();
        let seen = log.clone();
        let task = tokio::spawn(run(rx, max, linger, move |batch| {
            let (done, wait) = oneshot::channel();
            seen.lock().unwrap().push((batch, Some(done)));
            Some(Box::pin(async move {
                let _ = wait.await;
            }) as InFlight)
        }));
        (tx, log, task)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn release(log: &Log, i: usize) {
        if let Some(done) = log.lock().unwrap()[i].1.take() {
            let _ = done.send(());
        }
    }

    fn batches(log: &Log) -> Vec<Vec<u32>> {
        log.lock().unwrap().iter().map(|(b, _)| b.clone()).collect()
    }

    /// Waits (bounded) until `n` batches were appended.
    async fn appended(log: &Log, n: usize) {
        for _ in 0..500 {
            if log.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} batches never appended: {:?}", batches(log));
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn what_arrives_during_a_flush_goes_out_as_one_batch_after_it() {
        let (tx, log, task) = start(100, LONG);
        tx.send(1).unwrap();
        appended(&log, 1).await;
        for i in 2..=4 {
            tx.send(i).unwrap();
        }
        settle().await;
        assert_eq!(batches(&log), [vec![1]], "one batch in flight at a time");
        release(&log, 0);
        appended(&log, 2).await;
        assert_eq!(batches(&log), [vec![1], vec![2, 3, 4]]);
        drop(tx);
        release(&log, 1);
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn it_waits_for_the_clients_a_batch_released() {
        let (tx, log, _task) = start(100, LONG);
        let n = MIN_WAITED_FOR as u32;
        for i in 0..n {
            tx.send(i).unwrap();
        }
        appended(&log, 1).await;
        release(&log, 0);
        settle().await;
        // All but one are back: the loop waits for the last.
        for i in 0..n - 1 {
            tx.send(100 + i).unwrap();
        }
        settle().await;
        assert_eq!(batches(&log).len(), 1, "{:?}", batches(&log));
        tx.send(100 + n - 1).unwrap();
        appended(&log, 2).await;
        assert_eq!(batches(&log)[1], (100..100 + n).collect::<Vec<_>>(), "all back: appended at once");
    }

    #[tokio::test]
    async fn it_waits_no_longer_than_the_linger() {
        let (tx, log, _task) = start(100, Duration::from_millis(20));
        for i in 0..MIN_WAITED_FOR as u32 {
            tx.send(i).unwrap();
        }
        appended(&log, 1).await;
        release(&log, 0);
        // Only one comes back: appended once the linger is over.
        tx.send(20).unwrap();
        appended(&log, 2).await;
        assert_eq!(batches(&log)[1], [20]);
    }

    #[tokio::test]
    async fn a_small_batch_is_not_waited_for() {
        let (tx, log, _task) = start(100, LONG);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        appended(&log, 1).await;
        release(&log, 0);
        // One of three back: appended at once, no linger for so few.
        tx.send(10).unwrap();
        appended(&log, 2).await;
        assert_eq!(batches(&log)[1], [10]);
    }

    #[tokio::test]
    async fn batches_hold_at_most_max_items() {
        let (tx, log, _task) = start(2, Duration::from_millis(20));
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        appended(&log, 1).await;
        release(&log, 0);
        appended(&log, 2).await;
        release(&log, 1);
        appended(&log, 3).await;
        assert_eq!(batches(&log), [vec![0, 1], vec![2, 3], vec![4]]);
    }
}
