//! Files read again while the process runs (TLS certificates and CAs, the
//! OAUTHBEARER JWKS): on SIGHUP, and when a file's modification time
//! changes (polled, so an editor's rename or a secret mount's symlink swap
//! is seen as well as an in-place write). One loop for every such file set.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often [`spawn_reloader`]'s callers check modification times.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The modification times of `files` (`None` for one that cannot be read).
pub fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

/// Calls `reload` on SIGHUP and whenever a modification time of `files`
/// changes (checked every `every`), until `stop` turns true; logs each
/// outcome under `what`. A failed reload is logged and the caller keeps
/// what it had (`reload` decides that). Needs a tokio runtime.
pub fn spawn_reloader<F>(
    what: &'static str,
    files: Vec<PathBuf>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    reload: F,
) -> JoinHandle<()>
where
    F: Fn() -> Result<(), String> + Send + 'static,
{
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(what, error = %e, "no SIGHUP handler: reloads on file change only");
                None
            }
        };
        let mut seen = mtimes(&files);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = tick.tick() => {
                    let now = mtimes(&files);
                    if now == seen { continue }
                    seen = now;
                    "file change"
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = stop.changed() => return,
            };
            match reload() {
                Ok(()) => tracing::info!(what, reason = why, "reloaded"),
                Err(e) => tracing::warn!(what, reason = why, error = %e, "reload failed; keeping the old one"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_changed_file_reloads_and_stop_ends_the_loop() {
        let dir = std::env::temp_dir().join(format!("ferry-util-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("watched");
        std::fs::write(&file, "one").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let c = calls.clone();
        let task = spawn_reloader("test", vec![file.clone()], Duration::from_millis(20), stop, move || {
            c.fetch_add(1, Ordering::SeqCst);
            Err("refused, on purpose".into())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing changed yet");
        // A modification time set explicitly: no dependence on the file
        // system's timestamp granularity.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(later).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no reload after the change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A failed reload keeps the loop going; stop ends it.
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
