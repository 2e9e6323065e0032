//! Replacing a small file atomically: readers see the old contents or the
//! new, never a mix, even across a crash. Every metadata, snapshot and
//! checkpoint file Ferry rewrites goes through here.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes`: writes `<path>.tmp`, renames it over
/// `path`. With `sync`, the data is fsynced before the rename and the
/// directory after it, so the new contents survive a power loss once this
/// returns; without, they survive a process crash (the page cache keeps
/// them) and the rename still keeps the file whole.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?.to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if sync {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("ferry-util-fs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        for (content, sync) in [(&b"first"[..], true), (b"second, longer", false), (b"3", true)] {
            write_atomic(&path, content, sync).unwrap();
            assert_eq!(fs::read(&path).unwrap(), content);
        }
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
        assert!(write_atomic(Path::new("/"), b"x", false).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
