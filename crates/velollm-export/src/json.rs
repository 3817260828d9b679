//! The guide's JSON output: an array of result rows, written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use velollm_core::BenchmarkResult;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write results to {path}: {reason}")]
    Unwritable { path: String, reason: String },
}

/// A JSON results file whose location has been checked to be writable.
#[derive(Debug, Clone)]
pub struct JsonFile {
    path: PathBuf,
}

impl JsonFile {
    /// Checks, before any benchmarking, that `path` can be written: its directory exists and accepts a
    /// new file, and the path itself is not a directory. Nothing is left behind by the check.
    pub fn prepare(path: &Path) -> Result<JsonFile, ExportError> {
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
        Ok(JsonFile { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `results` as a pretty-printed JSON array: to a temporary file beside the target, flushed to
    /// disk, then renamed over it, so a reader never sees a half-written file.
    pub fn write(&self, results: &[BenchmarkResult]) -> Result<(), ExportError> {
        let fail =
            |e: io::Error| ExportError::Unwritable { path: self.path.display().to_string(), reason: short_io(&e) };
        let temp = temp_path(&self.path, "tmp");
        let outcome = (|| {
            let mut file = File::create(&temp)?;
            serde_json::to_writer_pretty(&mut file, results).map_err(io::Error::other)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        })();
        if outcome.is_err() {
            let _ = fs::remove_file(&temp);
        }
        outcome.map_err(fail)
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path, kind: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "results".into());
    parent_dir(path).join(format!(".{name}.{kind}.{}", std::process::id()))
}

fn short_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("velollm-export-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rejects_missing_directory_and_directories() {
        let err = JsonFile::prepare(Path::new("/nonexistent-velollm-dir/out.json")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let dir = scratch_dir("dir");
        let err = JsonFile::prepare(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn writes_atomically_and_leaves_no_probe() {
        let dir = scratch_dir("write");
        let target = dir.join("out.json");
        let file = JsonFile::prepare(&target).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the writability probe must not remain");
        file.write(&[]).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap().trim(), "[]");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file remains");
        fs::remove_dir_all(&dir).unwrap();
    }
}
