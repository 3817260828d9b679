//! JSON Lines: one row per line, appended and flushed to disk the moment the row exists, so a crash or a
//! kill mid-sweep loses at most the row in progress. Each line is a complete JSON object (llama-bench's
//! `-o jsonl` shape).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use velollm_core::BenchmarkResult;

use crate::files::{check_writable, short_io};
use crate::ExportError;

/// A JSON Lines results file whose location has been checked to be writable.
#[derive(Debug)]
pub struct JsonlFile {
    path: PathBuf,
    /// Open once the first row is written (an existing file is replaced then, not when the run starts).
    file: Option<File>,
}

impl JsonlFile {
    pub fn prepare(path: &Path) -> Result<JsonlFile, ExportError> {
        check_writable(path)?;
        Ok(JsonlFile { path: path.to_path_buf(), file: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, e: &io::Error) -> ExportError {
        ExportError::Unwritable { path: self.path.display().to_string(), reason: short_io(e) }
    }

    /// Appends one row as a line and forces it to disk.
    pub fn append(&mut self, row: &BenchmarkResult) -> Result<(), ExportError> {
        if self.file.is_none() {
            let file = File::create(&self.path).map_err(|e| self.fail(&e))?;
            self.file = Some(file);
        }
        let mut line = serde_json::to_vec(row).map_err(|e| self.fail(&io::Error::other(e)))?;
        line.push(b'\n');
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(&line).and_then(|()| file.flush()).and_then(|()| file.sync_data());
        written.map_err(|e| self.fail(&e))
    }

    /// Rewrites the file with all `rows` (after a failed append, once the cause may have gone).
    pub fn rewrite(&mut self, rows: &[BenchmarkResult]) -> Result<(), ExportError> {
        self.file = None;
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).open(&self.path).map_err(|e| self.fail(&e))?;
        for row in rows {
            let mut line = serde_json::to_vec(row).map_err(|e| self.fail(&io::Error::other(e)))?;
            line.push(b'\n');
            file.write_all(&line).map_err(|e| self.fail(&e))?;
        }
        file.sync_all().map_err(|e| self.fail(&e))?;
        self.file = Some(file);
        Ok(())
    }
}
