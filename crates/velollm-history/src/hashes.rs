//! The model-file hash cache: a file's sha256 keyed by its path, size, modification time (ns) and inode, so
//! a file already seen is not read again before a run's first number. Any change of the four means the
//! file is hashed again. A file that changes while it is hashed is not cached (its key is taken before and
//! after).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rusqlite::{params, OptionalExtension};

use crate::History;

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    /// Canonical (absolute, links resolved).
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

impl FileKey {
    pub fn of(path: &Path) -> std::io::Result<FileKey> {
        let canonical = path.canonicalize()?;
        let meta = std::fs::metadata(&canonical)?;
        Ok(FileKey {
            path: canonical.display().to_string(),
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            inode: meta.ino(),
        })
    }
}

impl History {
    /// The sha256 recorded for exactly this version of the file, if any.
    pub fn cached_sha256(&self, key: &FileKey) -> Option<String> {
        self.conn()
            .query_row(
                "SELECT sha256 FROM file_hashes WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND inode = ?4",
                params![key.path, key.size as i64, key.mtime_ns, key.inode as i64],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }

    /// Records the file's sha256 (replacing what an older version of the file had).
    pub fn store_sha256(&self, key: &FileKey, sha256: &str, now: &str) -> Result<(), crate::HistoryError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, inode, sha256, hashed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.path, key.size as i64, key.mtime_ns, key.inode as i64, sha256, now],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}
