//! The node's identity file, `<data>/cluster/node.json`: the id and the
//! incarnation this data directory last ran as. A restarted node names that
//! incarnation when it registers, so the controller lets the new process
//! replace its previous life at once, even after a kill -9, while a second
//! process with the same id and another data directory is still refused.

use std::io;
use std::path::Path;

use ferry_util::fs::write_atomic;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct IdentityFile {
    node_id: i32,
    incarnation: Uuid,
}

/// The file's name under `<data>/cluster/`.
pub(super) const FILE: &str = "node.json";

/// Reads the incarnation the data directory in `dir` last ran as node
/// `node_id` and records `incarnation` in its place (fsynced before this
/// node can register with it, so a registered incarnation is always the
/// one on disk or an older one). A missing or unreadable file, or one of
/// another node id, gives no previous incarnation.
pub(super) fn renew(dir: &Path, node_id: i32, incarnation: Uuid) -> io::Result<Option<Uuid>> {
    let path = dir.join(FILE);
    let previous = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<IdentityFile>(&bytes) {
            Ok(f) if f.node_id == node_id => Some(f.incarnation),
            Ok(f) => {
                tracing::warn!(path = %path.display(), was = f.node_id, now = node_id, "data directory of another node id");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable identity file; ignored");
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let bytes = serde_json::to_vec(&IdentityFile { node_id, incarnation }).map_err(io::Error::other)?;
    write_atomic(&path, &bytes, true)?;
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_names_the_incarnation_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(renew(dir.path(), 4, a).unwrap(), None, "first start");
        assert_eq!(renew(dir.path(), 4, b).unwrap(), Some(a));
        assert_eq!(renew(dir.path(), 4, c).unwrap(), Some(b));
        // Started under another id: no previous life of that id here.
        assert_eq!(renew(dir.path(), 5, a).unwrap(), None);
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(renew(dir.path(), 5, b).unwrap(), None);
        assert_eq!(renew(dir.path(), 5, c).unwrap(), Some(b));
    }
}
