//! What every results file shares: checking a path before any benchmarking, and temporary names beside it.

use std::fs::{self, OpenOptions};
use std::io;
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

pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub fn temp_path(path: &Path, kind: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "results".into());
    parent_dir(path).join(format!(".{name}.{kind}.{}", std::process::id()))
}

pub fn short_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
