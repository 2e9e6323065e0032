//! Users created before a node's first start (`ferry user create NAME
//! --password P --data-dir DIR`, as `kafka-storage format --add-scram`):
//! their SCRAM credentials (never the password) wait in
//! `DIR/bootstrap-users.json` until the node, once it has joined the
//! cluster, writes them into the metadata and renames the file to
//! `bootstrap-users.json.imported`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ferry_broker::security::{ScramCredential, ScramMechanism};
use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const FILE: &str = "bootstrap-users.json";

/// One user's credential for one mechanism.
#[derive(Serialize, Deserialize)]
struct Entry {
    user: String,
    credential: ScramCredential,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn read(file: &Path) -> anyhow::Result<Vec<Entry>> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Adds (or replaces) `user` with credentials for every SCRAM mechanism.
pub fn add(data_dir: &Path, user: &str, password: &str, iterations: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let file = path(data_dir);
    let mut entries = read(&file)?;
    entries.retain(|e| e.user != user);
    for m in ScramMechanism::ALL {
        entries.push(Entry { user: user.to_string(), credential: ScramCredential::new(m, password, iterations) });
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&entries)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// The users waiting in the file.
pub fn list(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut users: Vec<String> = read(&path(data_dir))?.into_iter().map(|e| e.user).collect();
    users.dedup();
    Ok(users)
}

/// Writes the waiting users into the cluster metadata, then renames the
/// file so they are imported once.
pub async fn import(broker: &ferry_broker::Broker, data_dir: &Path) -> anyhow::Result<()> {
    let file = path(data_dir);
    let entries = read(&file)?;
    if entries.is_empty() {
        return Ok(());
    }
    for e in entries {
        broker
            .upsert_scram_credential(&e.user, e.credential)
            .await
            .with_context(|| format!("importing bootstrap user {}", e.user))?;
        tracing::info!(user = %e.user, "imported a bootstrap user");
    }
    std::fs::rename(&file, file.with_extension("json.imported"))
        .with_context(|| format!("renaming {}", file.display()))?;
    Ok(())
}
