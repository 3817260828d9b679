//! What every results file shares: checking a path before any benchmarking, temporary names beside it, and
//! the two ways a file is written (rewritten atomically, or appended to and synced).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::ExportError;

/// Checks, before any benchmarking, that `path` can be written: its directory exists and accepts a new
/// file, and the path itself is not a directory or a read-only file. Nothing is left behind by the check.
pub fn check_writable(path: &Path) -> Result<(), ExportError> {
    let fail = |reason: String| ExportError::Unwritable { path: path.display().to_string(), reason };
    if path.as_os_str().is_empty() {
        return Err(fail("the path is empty".into()));
    }
    if path.is_dir() {
        return Err(fail("it is a directory".into()));
    }
    let dir = parent_dir(path);
    match fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
        Err(_) => return Err(fail(format!("directory {} does not exist", dir.display()))),
    }
    let probe = temp_path(path, "probe");
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
        }
        Err(e) => return Err(fail(format!("directory {} is not writable ({})", dir.display(), short_io(&e)))),
    }
    if path.exists() && fs::metadata(path).map(|m| m.permissions().readonly()).unwrap_or(false) {
        return Err(fail("the file is read-only".into()));
    }
    Ok(())
}

pub use velollm_core::atomic::{parent_dir, temp_path};

pub fn short_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn unwritable(path: &Path, e: &io::Error) -> ExportError {
    ExportError::Unwritable { path: path.display().to_string(), reason: short_io(e) }
}

/// Replaces `path` with `text` atomically and durably ([`velollm_core::atomic::write_atomically`]: temporary
/// file, sync, rename, directory sync), so a reader never sees a half-written file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), ExportError> {
    velollm_core::atomic::write_atomically(path, text.as_bytes()).map_err(|e| unwritable(path, &e))
}

/// A file that grows by appending: opened (and an existing file replaced) when the first text is written,
/// every append flushed and synced to disk before it returns.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: Option<File>,
}

impl AppendFile {
    pub fn new(path: &Path) -> AppendFile {
        AppendFile { path: path.to_path_buf(), file: None }
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    pub fn append(&mut self, text: &str) -> Result<(), ExportError> {
        if self.file.is_none() {
            let file = File::create(&self.path).map_err(|e| unwritable(&self.path, &e))?;
            // The new directory entry, so that a crash after the first row still finds the file.
            velollm_core::atomic::sync_dir(&parent_dir(&self.path)).map_err(|e| unwritable(&self.path, &e))?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(text.as_bytes()).and_then(|()| file.flush()).and_then(|()| file.sync_data());
        written.map_err(|e| unwritable(&self.path, &e))
    }

    /// Replaces the file's content with `text` atomically (after a failed append, once the cause may have
    /// gone: the file on disk may end in a partial record) and reopens it for the next append.
    pub fn rewrite(&mut self, text: &str) -> Result<(), ExportError> {
        self.file = None;
        write_atomically(&self.path, text)?;
        let reopened = OpenOptions::new().append(true).open(&self.path).map_err(|e| unwritable(&self.path, &e))?;
        self.file = Some(reopened);
        Ok(())
    }

    /// Makes the next append fail (the handle becomes read-only), as a full disk would.
    #[cfg(test)]
    pub fn break_for_test(&mut self) {
        self.file = Some(File::open(&self.path).unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("velollm-export-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rejects_missing_directory_and_directories() {
        let err = check_writable(Path::new("/nonexistent-velollm-dir/out.json")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let dir = scratch_dir("dir");
        let err = check_writable(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_atomically_and_leaves_no_probe() {
        let dir = scratch_dir("write");
        let target = dir.join("out.json");
        check_writable(&target).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the writability probe must not remain");
        write_atomically(&target, "[]\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "[]\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file remains");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_replace_an_old_file_then_grow_it() {
        let dir = scratch_dir("append");
        let target = dir.join("out.jsonl");
        fs::write(&target, "old\n").unwrap();
        let mut file = AppendFile::new(&target);
        assert_eq!(fs::read_to_string(&target).unwrap(), "old\n", "nothing replaced before the first row");
        file.append("a\n").unwrap();
        file.append("b\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "a\nb\n");
        file.rewrite("x\n").unwrap();
        file.append("y\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "x\ny\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
