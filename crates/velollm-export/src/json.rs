//! The guide's JSON output: an array of result rows, written atomically.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use velollm_core::BenchmarkResult;

use crate::files::{check_writable, short_io, temp_path};
use crate::ExportError;

/// A JSON results file whose location has been checked to be writable.
#[derive(Debug, Clone)]
pub struct JsonFile {
    path: PathBuf,
}

impl JsonFile {
    /// Checks, before any benchmarking, that `path` can be written: its directory exists and accepts a
    /// new file, and the path itself is not a directory. Nothing is left behind by the check.
    pub fn prepare(path: &Path) -> Result<JsonFile, ExportError> {
        check_writable(path)?;
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
