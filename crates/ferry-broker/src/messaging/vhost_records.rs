//! Vhosts as cluster records (issue #17): which vhosts exist is the
//! controller's (`AmqpRecord::{CreateVhost, DeleteVhost}`, the image's
//! `vhosts`), so creating or deleting one through any node's admin API
//! reaches every node. This node opens a [`Vhost`] for each vhost of the
//! image and closes (and removes the files of) each one deleted.
//!
//! The config's vhosts (`[amqp] vhosts`) are created at a node's first
//! start, and those added to the config later at the next start; this node
//! remembers which ones it created (`queues/vhosts-created.json`), so a
//! vhost deleted through the admin API does not come back at a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::definitions;
use super::{MessagingError, Vhost, Vhosts, encode_name};
use crate::Broker;
use crate::metadata::AmqpRequest;

/// What this node remembers of the config's vhosts it created.
const CREATED_FILE: &str = "vhosts-created.json";

/// Creates the config's vhosts `names` this node has not created before
/// (writes meeting a controller election are retried for a while; a
/// controller that stays unreachable fails the start).
pub(super) fn create_configured(broker: &Arc<Broker>, root: &Path, names: &[String]) -> Result<(), MessagingError> {
    let file = root.join(CREATED_FILE);
    let mut created: BTreeSet<String> = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", file.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => return Err(e.into()),
    };
    let new: Vec<&String> = names.iter().filter(|n| !created.contains(*n)).collect();
    if new.is_empty() {
        return Ok(());
    }
    for name in new {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=5 {
            match definitions::submit(Some(broker), AmqpRequest::CreateVhost { name: name.clone() }) {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::warn!(vhost = %name, error = %e, attempt, "creating a configured vhost; retrying");
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        created.insert(name.clone());
    }
    let tmp = root.join(format!("{CREATED_FILE}.tmp"));
    let json = serde_json::to_vec(&created).map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(&tmp, json)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    Ok(())
}

/// Removes the directories of vhosts the image does not have (deleted
/// while this node was down): a vhost created again by that name starts
/// empty, without the old one's queues or delayed messages.
pub(super) fn remove_deleted_dirs(root: &Path, transient: &Path, live: &BTreeMap<String, u64>) {
    let known: BTreeSet<String> = live.keys().map(|n| encode_name(n)).collect();
    for base in [root, transient] {
        let Ok(entries) = std::fs::read_dir(base) else { continue };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !known.contains(&*entry.file_name().to_string_lossy()) {
                tracing::info!(dir = %entry.path().display(), "removing the files of a deleted vhost");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Vhosts {
    /// Opens the vhosts the image gained and closes those it lost (or
    /// that were deleted and created again: another generation), if its
    /// vhosts changed since the last call (a pointer compare otherwise).
    pub(super) fn sync_with_image(&self) {
        let Some(broker) = &self.hooks.broker else { return };
        let names = broker.metadata().vhosts.clone();
        let mut synced = ferry_util::sync::lock(&self.synced);
        if synced.as_ref().is_some_and(|s| Arc::ptr_eq(s, &names)) {
            return;
        }
        let open: Vec<(String, u64)> = self.all().iter().map(|v| (v.name.clone(), v.generation)).collect();
        for (gone, _) in open.iter().filter(|(n, g)| names.get(n) != Some(g)) {
            // Its connections learn of the deletion before the vhost stops
            // being found, so none reads its absence as another error.
            if let Some(vhost) = self.get_open(gone) {
                vhost.announce_deleted();
            }
            let removed = super::wr(&self.vhosts).remove(gone);
            if let Some(vhost) = removed {
                tracing::info!(vhost = %gone, "vhost deleted: closing its queues and connections");
                vhost.close_deleted();
            }
        }
        for (name, &generation) in names.iter().filter(|(n, g)| !open.contains(&((*n).clone(), **g))) {
            match self.open_vhost(name, generation) {
                Ok(vhost) => {
                    tracing::info!(vhost = %name, "vhost created");
                    super::wr(&self.vhosts).insert(name.clone(), vhost);
                }
                // Tried again at the next change or maintenance tick.
                Err(e) => {
                    tracing::warn!(vhost = %name, error = %e, "opening a vhost failed");
                    return;
                }
            }
        }
        *synced = Some(names);
    }

    /// Opens the vhost `name` (of `generation`) over this node's directories.
    pub(super) fn open_vhost(&self, name: &str, generation: u64) -> Result<Arc<Vhost>, MessagingError> {
        let dir = self.root.join(encode_name(name));
        let tdir = self.transient.join(encode_name(name));
        Vhost::open(name, generation, &dir, &tdir, self.logs.clone(), self.hooks.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::broker::{Broker, BrokerConfig};
    use crate::messaging::{HeaderValue, Headers, Hooks, MessagingError, QueueSpec, Vhosts};
    use crate::metadata::{AmqpRequest, ControllerRequest};

    fn open(dir: &std::path::Path, broker: &Arc<Broker>, names: &[&str]) -> Arc<Vhosts> {
        let hooks = Hooks { broker: Some(broker.clone()), ..Default::default() };
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        Vhosts::open(dir, Default::default(), &names, hooks).unwrap()
    }

    fn spec(name: &str, durable: bool, quorum: bool) -> QueueSpec {
        let mut arguments = Headers::new();
        if quorum {
            arguments.insert("x-queue-type".into(), HeaderValue::Str("quorum".into()));
        }
        QueueSpec { name: name.into(), durable, exclusive_owner: None, auto_delete: false, arguments }
    }

    async fn submit(broker: &Broker, request: AmqpRequest) -> Result<(), crate::BrokerError> {
        broker.submit_change(ControllerRequest::Amqp(request)).await
    }

    /// A vhost created through the controller opens here; deleted, it
    /// closes its queues (classic, transient and quorum), tells its
    /// connections, removes its files and is unknown again; created again
    /// it is empty. The config's vhosts are created once: one deleted
    /// later does not come back at a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vhosts_follow_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig { data_dir: dir.path().to_path_buf(), ..Default::default() }).unwrap();
        crate::testing::install(&broker);
        let vhosts = open(dir.path(), &broker, &["/", "configured"]);
        assert_eq!(vhosts.names(), ["/", "configured"]);
        assert!(vhosts.get("orders").is_none());

        submit(&broker, AmqpRequest::CreateVhost { name: "orders".into() }).await.unwrap();
        let orders = vhosts.get("orders").expect("opened once the image has it");
        let classic = orders.declare_queue(spec("classic", true, false), false, 1).unwrap();
        let transient = orders.declare_queue(spec("transient", false, false), false, 1).unwrap();
        let quorum = orders.declare_queue(spec("quorum", true, true), false, 1).unwrap();
        assert!(quorum.is_replicated());
        let (cdir, tdir) = (classic.dir().to_path_buf(), transient.dir().to_path_buf());
        assert!(cdir.exists() && tdir.exists());
        let mut gone = orders.deleted();
        assert!(!*gone.borrow_and_update());

        submit(&broker, AmqpRequest::DeleteVhost { name: "orders".into() }).await.unwrap();
        assert!(vhosts.get("orders").is_none());
        assert!(gone.has_changed().unwrap() && orders.is_deleted());
        assert!(classic.is_deleted() && transient.is_deleted() && quorum.is_deleted());
        assert!(broker.quorum_queue("orders", "quorum").is_none());
        assert!(!cdir.exists() && !tdir.exists());
        // A connection still holding it declares nothing more.
        let err = orders.declare_queue(spec("late", false, false), false, 1).unwrap_err();
        assert!(matches!(err, MessagingError::NotFound(_)), "{err:?}");
        // Unknown vhosts cannot be deleted; created again, it is empty.
        let err = submit(&broker, AmqpRequest::DeleteVhost { name: "orders".into() }).await.unwrap_err();
        assert!(matches!(err, crate::BrokerError::ResourceNotFound(_)), "{err:?}");
        submit(&broker, AmqpRequest::CreateVhost { name: "orders".into() }).await.unwrap();
        let again = vhosts.get("orders").unwrap();
        assert!(again.queue("classic").is_none() && again.queue("quorum").is_none());
        // Deleted and created again before this node looked (a script
        // resetting a vhost): the old one is closed all the same.
        let transient = again.declare_queue(spec("transient", false, false), false, 1).unwrap();
        submit(&broker, AmqpRequest::DeleteVhost { name: "orders".into() }).await.unwrap();
        submit(&broker, AmqpRequest::CreateVhost { name: "orders".into() }).await.unwrap();
        let third = vhosts.get("orders").unwrap();
        assert!(again.is_deleted() && transient.is_deleted() && !third.is_deleted());
        assert!(third.queue("transient").is_none());

        // A configured vhost deleted through the admin API stays deleted
        // at the next start; one added to the config is created then.
        submit(&broker, AmqpRequest::DeleteVhost { name: "configured".into() }).await.unwrap();
        vhosts.shutdown();
        drop((orders, again, third, vhosts));
        let vhosts = open(dir.path(), &broker, &["/", "configured", "added"]);
        assert_eq!(vhosts.names(), ["/", "added", "orders"]);
        vhosts.shutdown();
    }
}
