//! Every `-o` of a run, written as rows finish, and never the part that loses a result.
//!
//! A write that fails (disk full, directory removed mid-run) is reported at once and the run goes on; at the
//! end each failed file is written again, and if that still fails the results go to a fallback file whose
//! path the error names.

use std::path::{Path, PathBuf};

use velollm_core::BenchmarkResult;

use crate::{ExportError, JsonFile, JsonlFile};

/// A results format chosen by a file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The guide's JSON array, rewritten atomically after every row.
    Json,
    /// One row per line, appended and flushed per row.
    Jsonl,
}

impl Format {
    pub fn of_path(path: &Path) -> Result<Format, ExportError> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Ok(Format::Json),
            Some("jsonl") | Some("ndjson") => Ok(Format::Jsonl),
            other => Err(ExportError::UnknownFormat {
                path: path.display().to_string(),
                extension: other.unwrap_or("").to_string(),
            }),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
        }
    }
}

enum Writer {
    Json(JsonFile),
    Jsonl(JsonlFile),
}

struct Target {
    path: PathBuf,
    format: Format,
    writer: Writer,
    /// The first error met, kept until the final write succeeds.
    failed: Option<String>,
}

/// Where one output ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Written(PathBuf),
    /// The requested path could not be written; the rows are in `saved_to` instead.
    Fallback {
        wanted: PathBuf,
        reason: String,
        saved_to: PathBuf,
    },
    /// Neither the requested path nor any fallback could be written.
    Lost {
        wanted: PathBuf,
        reason: String,
    },
}

/// The outputs of a run.
#[derive(Default)]
pub struct Outputs {
    targets: Vec<Target>,
}

impl Outputs {
    /// Checks every path before anything slow: a known extension and a writable location.
    pub fn prepare(paths: &[PathBuf]) -> Result<Outputs, ExportError> {
        let mut targets = Vec::new();
        for path in paths {
            // A directory or a missing directory is the clearer error, whatever the extension says.
            crate::files::check_writable(path)?;
            let format = Format::of_path(path)?;
            let writer = match format {
                Format::Json => Writer::Json(JsonFile::prepare(path)?),
                Format::Jsonl => Writer::Jsonl(JsonlFile::prepare(path)?),
            };
            targets.push(Target { path: path.clone(), format, writer, failed: None });
        }
        Ok(Outputs { targets })
    }

    pub fn paths(&self) -> Vec<&Path> {
        self.targets.iter().map(|t| t.path.as_path()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Writes what a new row changes (`rows` ends with it). Returns the errors met for the first time, to be
    /// said at once; the run goes on.
    pub fn row_finished(&mut self, rows: &[BenchmarkResult]) -> Vec<String> {
        let mut new_errors = Vec::new();
        for target in &mut self.targets {
            let result = match &mut target.writer {
                Writer::Json(file) => file.write(rows),
                Writer::Jsonl(file) if target.failed.is_some() => file.rewrite(rows),
                Writer::Jsonl(file) => match rows.last() {
                    Some(row) => file.append(row),
                    None => Ok(()),
                },
            };
            match result {
                Ok(()) => target.failed = None,
                Err(e) => {
                    if target.failed.is_none() {
                        new_errors.push(e.to_string());
                    }
                    target.failed = Some(e.to_string());
                }
            }
        }
        new_errors
    }

    /// The final write: every output holds `rows` (an interrupted run's rows included). A file that could not
    /// be written is tried once more, then saved to a fallback path.
    pub fn finish(&mut self, rows: &[BenchmarkResult]) -> Vec<Saved> {
        let mut saved = Vec::new();
        for target in &mut self.targets {
            let result = match &mut target.writer {
                Writer::Json(file) => file.write(rows),
                Writer::Jsonl(file) => file.rewrite(rows),
            };
            match result {
                Ok(()) => saved.push(Saved::Written(target.path.clone())),
                Err(e) => saved.push(fallback(&target.path, target.format, &e.to_string(), rows)),
            }
        }
        saved
    }
}

/// Saves `rows` beside the temporary directory, then the working directory, under a name no run shares.
fn fallback(wanted: &Path, format: Format, reason: &str, rows: &[BenchmarkResult]) -> Saved {
    let stamp = chrono_free_stamp();
    let name = format!("velollm-results-{stamp}-{}.{}", std::process::id(), format.extension());
    for dir in [std::env::temp_dir(), PathBuf::from(".")] {
        let path = dir.join(&name);
        let written = match format {
            Format::Json => JsonFile::prepare(&path).and_then(|f| f.write(rows)),
            Format::Jsonl => JsonlFile::prepare(&path).and_then(|mut f| f.rewrite(rows)),
        };
        if written.is_ok() {
            return Saved::Fallback { wanted: wanted.to_path_buf(), reason: reason.to_string(), saved_to: path };
        }
    }
    Saved::Lost { wanted: wanted.to_path_buf(), reason: reason.to_string() }
}

/// Seconds since the Unix epoch: unique enough for a fallback name, with no clock crate.
fn chrono_free_stamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
