//! The one way velollm replaces a file: the new content goes to a temporary file in the same directory, is
//! synced to disk, is renamed over the target, and the directory is synced, so that after a crash or a power
//! cut the target holds either its old content or the whole new content, and the rename itself is on disk.
//!
//! Results (`-o results.json`, the HTML report), the bandwidth cache, `velollm optimize -o` and the GGUF
//! writer (`velollm synth`, through [`persist`]) all go through here.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary name beside `path` that no other process shares: `.NAME.KIND.PID` in the same directory (a
/// rename is only atomic within one file system).
pub fn temp_path(path: &Path, kind: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    parent_dir(path).join(format!(".{name}.{kind}.{}", std::process::id()))
}

/// Replaces `path` with `bytes` atomically and durably (temporary file, sync, rename, directory sync). On
/// failure the temporary file is removed and `path` is left as it was (or, if only the final directory sync
/// failed, already holds the new content).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = temp_path(path, "tmp");
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    persist(&temp, path)
}

/// Renames `temp` (complete, and already synced to disk by its writer) over `target`, then syncs the
/// directory so the rename survives a crash. `temp` must be in `target`'s directory. If the rename fails,
/// `temp` is removed.
pub fn persist(temp: &Path, target: &Path) -> io::Result<()> {
    if let Err(e) = fs::rename(temp, target) {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    sync_dir(&parent_dir(target))
}

/// Syncs a directory's entries (a rename, a new file) to disk. File systems that cannot sync a directory
/// (`EINVAL`) and platforms without directory handles count as synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir)?.sync_all() {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::Unsupported => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("velollm-core-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_beside_it() {
        let dir = scratch("replace");
        let target = dir.join("out.json");
        fs::write(&target, "old").unwrap();
        write_atomically(&target, b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file remains");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_target_alone() {
        let dir = scratch("fail");
        // The target is a non-empty directory: the rename fails, the temporary file is removed.
        let target = dir.join("taken");
        fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomically(&target, b"x").is_err());
        assert!(target.join("inside").is_dir());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file remains");
        // A missing directory fails before anything is written.
        assert!(write_atomically(&dir.join("missing/out.json"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_stay_in_the_directory() {
        let temp = temp_path(Path::new("a/b/out.csv"), "tmp");
        assert_eq!(temp.parent(), Some(Path::new("a/b")));
        assert!(temp.file_name().unwrap().to_string_lossy().starts_with(".out.csv.tmp."));
        assert_eq!(parent_dir(Path::new("out.csv")), PathBuf::from("."));
        sync_dir(Path::new(".")).unwrap();
    }
}
