//! Every output of a run (each `-o FILE`, and `--format` on stdout), written as rows finish, and never the
//! part that loses a result.
//!
//! Formats with [`Appending`](crate::Appending) records (JSON Lines, CSV, SQL) are appended to and synced to
//! disk as each row finishes; the others (JSON, markdown) are rewritten atomically after each row. A write
//! that fails (disk full, directory removed mid-run) is reported at once and the run goes on; at the end every
//! file is written whole once more, and a file that still cannot be written goes to a fallback file whose
//! path the error names.

use std::io::Write;
use std::path::{Path, PathBuf};

use velollm_core::BenchmarkResult;

use crate::files::{check_writable, write_atomically, AppendFile};
use crate::{ExportError, Exporter, Format};

enum Sink {
    /// Rewritten atomically with the whole document after every row.
    Whole,
    /// Appended to: the prelude, then one record per row; `written` rows are on disk.
    Append { file: AppendFile, written: usize },
}

struct Target {
    path: PathBuf,
    exporter: Box<dyn Exporter>,
    sink: Sink,
    /// The first error met, kept until a write succeeds again.
    failed: Option<String>,
}

/// `--format`: a document on stdout, streamed record by record for appending formats, whole at the end for
/// the others.
struct StdoutTarget {
    exporter: Box<dyn Exporter>,
    /// Rows already printed (appending formats), and whether the prelude was.
    written: usize,
    opened: bool,
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
    stdout: Option<StdoutTarget>,
}

impl Outputs {
    /// Checks every path before anything slow: a writable location and a known extension.
    pub fn prepare(paths: &[PathBuf]) -> Result<Outputs, ExportError> {
        let mut targets = Vec::new();
        for path in paths {
            // A directory or a missing directory is the clearer error, whatever the extension says.
            check_writable(path)?;
            let exporter = Format::of_path(path)?.exporter();
            let sink = match exporter.appending() {
                Some(_) => Sink::Append { file: AppendFile::new(path), written: 0 },
                None => Sink::Whole,
            };
            targets.push(Target { path: path.clone(), exporter, sink, failed: None });
        }
        Ok(Outputs { targets, stdout: None })
    }

    /// Also prints the run in `format` on stdout: appending formats as each row finishes, the others at the end.
    pub fn with_stdout(mut self, format: Format) -> Outputs {
        self.stdout = Some(StdoutTarget { exporter: format.exporter(), written: 0, opened: false });
        self
    }

    pub fn paths(&self) -> Vec<&Path> {
        self.targets.iter().map(|t| t.path.as_path()).collect()
    }

    /// True when there is nothing to write: no file and nothing for stdout.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.stdout.is_none()
    }

    /// Writes what a new row changes (`rows` ends with it). Returns the errors met for the first time, to be
    /// said at once; the run goes on.
    pub fn row_finished(&mut self, rows: &[BenchmarkResult]) -> Vec<String> {
        let mut new_errors = Vec::new();
        for target in &mut self.targets {
            let result = match &mut target.sink {
                Sink::Whole => write_atomically(&target.path, &target.exporter.document(rows)),
                Sink::Append { file, written } => {
                    let appending = target.exporter.appending().expect("an appending sink has an appending format");
                    let outcome = if target.failed.is_some() {
                        file.rewrite(&appending.concatenate(rows))
                    } else {
                        let mut text = if file.is_open() { String::new() } else { appending.prelude() };
                        for row in rows.iter().skip(*written) {
                            text.push_str(&appending.record(row));
                        }
                        file.append(&text)
                    };
                    if outcome.is_ok() {
                        *written = rows.len();
                    }
                    outcome
                }
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
        if let Some(stdout) = &mut self.stdout {
            stdout.stream(rows);
        }
        new_errors
    }

    /// The final write: every output holds `rows` (an interrupted run's rows included). A file that could not
    /// be written is tried once more, then saved to a fallback path.
    pub fn finish(&mut self, rows: &[BenchmarkResult]) -> Vec<Saved> {
        let mut saved = Vec::new();
        for target in &mut self.targets {
            let result = match &mut target.sink {
                Sink::Whole => write_atomically(&target.path, &target.exporter.document(rows)),
                Sink::Append { file, written } => {
                    let appending = target.exporter.appending().expect("an appending sink has an appending format");
                    let outcome = file.rewrite(&appending.concatenate(rows));
                    if outcome.is_ok() {
                        *written = rows.len();
                    }
                    outcome
                }
            };
            match result {
                Ok(()) => saved.push(Saved::Written(target.path.clone())),
                Err(e) => saved.push(fallback(&target.path, target.exporter.as_ref(), &e.to_string(), rows)),
            }
        }
        if let Some(stdout) = &mut self.stdout {
            stdout.finish(rows);
        }
        saved
    }
}

impl StdoutTarget {
    fn print(text: &str) {
        // A closed pipe (`| head`) must not stop the run; the files are written regardless.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    fn stream(&mut self, rows: &[BenchmarkResult]) {
        let Some(appending) = self.exporter.appending() else { return };
        let mut text = if self.opened { String::new() } else { appending.prelude() };
        self.opened = true;
        for row in rows.iter().skip(self.written) {
            text.push_str(&appending.record(row));
        }
        self.written = self.written.max(rows.len());
        Self::print(&text);
    }

    fn finish(&mut self, rows: &[BenchmarkResult]) {
        match self.exporter.appending() {
            Some(_) => self.stream(rows),
            None => Self::print(&self.exporter.document(rows)),
        }
    }
}

/// Saves `rows` in the temporary directory, else the working directory, under a name no run shares.
fn fallback(wanted: &Path, exporter: &dyn Exporter, reason: &str, rows: &[BenchmarkResult]) -> Saved {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let name = format!("velollm-results-{stamp}-{}.{}", std::process::id(), exporter.format().name());
    let document = exporter.document(rows);
    for dir in [std::env::temp_dir(), PathBuf::from(".")] {
        let path = dir.join(&name);
        if check_writable(&path).and_then(|()| write_atomically(&path, &document)).is_ok() {
            return Saved::Fallback { wanted: wanted.to_path_buf(), reason: reason.to_string(), saved_to: path };
        }
    }
    Saved::Lost { wanted: wanted.to_path_buf(), reason: reason.to_string() }
}
