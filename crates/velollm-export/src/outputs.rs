//! Every output of a run (each `-o FILE`, and `--format` on stdout), written as rows finish, and never the
//! part that loses a result.
//!
//! Formats with [`Appending`](crate::Appending) records (JSON Lines, CSV, SQL) are appended to and synced to
//! disk as each row finishes; the others (JSON, markdown) are rewritten atomically after each row. A write
//! that fails (disk full, directory removed mid-run) is reported at once and the run goes on. At the end an
//! appended file whose every append succeeded is left as it is (only rows it never got are appended); a file
//! whose write failed is written whole once more, atomically, and one that still cannot be written goes to a
//! fallback file whose path the error names. A complete file is never truncated and rewritten, so a kill at
//! the end cannot turn it into a partial one.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use velollm_core::BenchmarkResult;

use crate::files::{check_writable, write_atomically, AppendFile};
use crate::{Appending, ExportError, Exporter, Format};

enum Sink {
    /// Rewritten atomically with the whole document after every row.
    Whole,
    /// Appended to: the prelude, then one record per row.
    Append { file: AppendFile, on_disk: OnDisk },
}

/// What an appended file holds while every write to it succeeded: the prelude and the records of the first
/// `rows` rows, identified by a hash of those pieces fed one by one (so the end of the run can tell that the
/// file already holds exactly the rows it is given, without keeping their text).
#[derive(Clone, Default)]
struct OnDisk {
    rows: usize,
    hasher: DefaultHasher,
}

impl OnDisk {
    fn of(appending: &dyn Appending, rows: &[BenchmarkResult]) -> OnDisk {
        let mut on_disk = OnDisk::default();
        on_disk.hasher.write(appending.prelude().as_bytes());
        for row in rows {
            on_disk.add(&appending.record(row));
        }
        on_disk
    }

    fn add(&mut self, record: &str) {
        self.hasher.write(record.as_bytes());
        self.rows += 1;
    }

    /// True when the file holds `rows[..self.rows]` exactly.
    fn holds_prefix_of(&self, appending: &dyn Appending, rows: &[BenchmarkResult]) -> bool {
        self.rows <= rows.len() && OnDisk::of(appending, &rows[..self.rows]).hasher.finish() == self.hasher.finish()
    }
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
                Some(_) => Sink::Append { file: AppendFile::new(path), on_disk: OnDisk::default() },
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
                Sink::Append { file, on_disk } => {
                    let appending = target.exporter.appending().expect("an appending sink has an appending format");
                    if target.failed.is_some() {
                        rewrite(file, on_disk, appending, rows)
                    } else {
                        append_missing(file, on_disk, appending, rows)
                    }
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

    /// The final write: every output holds `rows` (an interrupted run's rows included). An appended file that
    /// already holds them is not touched; one missing rows at its end gets them appended; one whose write failed
    /// (or that holds anything else) is rewritten atomically. A file that still cannot be written is saved to a
    /// fallback path.
    pub fn finish(&mut self, rows: &[BenchmarkResult]) -> Vec<Saved> {
        let mut saved = Vec::new();
        for target in &mut self.targets {
            let result = match &mut target.sink {
                Sink::Whole => write_atomically(&target.path, &target.exporter.document(rows)),
                Sink::Append { file, on_disk } => {
                    let appending = target.exporter.appending().expect("an appending sink has an appending format");
                    let intact = target.failed.is_none() && file.is_open() && on_disk.holds_prefix_of(appending, rows);
                    if intact {
                        // Only rows the file never got (an interrupted run's last row); a failed append is
                        // repaired by an atomic rewrite.
                        append_missing(file, on_disk, appending, rows)
                            .or_else(|_| rewrite(file, on_disk, appending, rows))
                    } else {
                        rewrite(file, on_disk, appending, rows)
                    }
                }
            };
            match result {
                Ok(()) => {
                    target.failed = None;
                    saved.push(Saved::Written(target.path.clone()))
                }
                Err(e) => saved.push(fallback(&target.path, target.exporter.as_ref(), &e.to_string(), rows)),
            }
        }
        if let Some(stdout) = &mut self.stdout {
            stdout.finish(rows);
        }
        saved
    }
}

/// Appends the records of `rows` past those on disk (and the prelude, if the file is not open yet); nothing
/// is written when there are none.
fn append_missing(
    file: &mut AppendFile,
    on_disk: &mut OnDisk,
    appending: &dyn Appending,
    rows: &[BenchmarkResult],
) -> Result<(), ExportError> {
    if file.is_open() && on_disk.rows == rows.len() {
        return Ok(());
    }
    let (mut text, mut after) = if file.is_open() {
        (String::new(), on_disk.clone())
    } else {
        (appending.prelude(), OnDisk::of(appending, &[]))
    };
    for row in rows.iter().skip(after.rows) {
        let record = appending.record(row);
        text.push_str(&record);
        after.add(&record);
    }
    file.append(&text)?;
    *on_disk = after;
    Ok(())
}

/// Replaces the file atomically with the whole document for `rows`.
fn rewrite(
    file: &mut AppendFile,
    on_disk: &mut OnDisk,
    appending: &dyn Appending,
    rows: &[BenchmarkResult],
) -> Result<(), ExportError> {
    file.rewrite(&appending.concatenate(rows))?;
    *on_disk = OnDisk::of(appending, rows);
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use velollm_fixtures::{token_samples_at, Row};

    use super::*;

    fn rows() -> Vec<BenchmarkResult> {
        [
            Row::tokens(512, 0, 0, token_samples_at(512, 0, &[1000.0, 1100.0])),
            Row::tokens(0, 128, 0, token_samples_at(0, 128, &[60.0, 62.0])),
            Row::tokens(0, 128, 0, token_samples_at(0, 128, &[61.0])).incomplete("interrupted"),
        ]
        .iter()
        .map(Row::build)
        .collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("velollm-outputs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Inode, modification time (ns) and content: a file rewritten, even with the same bytes, changes the first
    /// two.
    fn identity(path: &Path) -> (u64, i64, i64, Vec<u8>) {
        let meta = fs::metadata(path).unwrap();
        (meta.ino(), meta.mtime(), meta.mtime_nsec(), fs::read(path).unwrap())
    }

    fn document(path: &Path, rows: &[BenchmarkResult]) -> String {
        Format::of_path(path).unwrap().exporter().document(rows)
    }

    #[test]
    fn a_complete_appended_file_is_not_touched_at_the_end() {
        let dir = scratch("untouched");
        let paths: Vec<PathBuf> = ["r.jsonl", "r.csv", "r.sql"].iter().map(|n| dir.join(n)).collect();
        let mut outputs = Outputs::prepare(&paths).unwrap();
        let rows = rows();
        for n in 1..=rows.len() {
            assert!(outputs.row_finished(&rows[..n]).is_empty());
        }
        let before: Vec<_> = paths.iter().map(|p| identity(p)).collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let saved = outputs.finish(&rows);
        assert_eq!(saved, paths.iter().map(|p| Saved::Written(p.clone())).collect::<Vec<_>>());
        for (path, before) in paths.iter().zip(before) {
            assert_eq!(identity(path), before, "{} was rewritten", path.display());
            assert_eq!(fs::read_to_string(path).unwrap(), document(path, &rows));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rows_the_file_never_got_are_appended_not_rewritten() {
        let dir = scratch("missing");
        let path = dir.join("r.csv");
        let mut outputs = Outputs::prepare(std::slice::from_ref(&path)).unwrap();
        let rows = rows();
        outputs.row_finished(&rows[..2]);
        let (inode, ..) = identity(&path);
        // An interrupted run: its last (incomplete) row reaches only the final write.
        assert_eq!(outputs.finish(&rows), [Saved::Written(path.clone())]);
        assert_eq!(identity(&path).0, inode, "appended in place");
        assert_eq!(fs::read_to_string(&path).unwrap(), document(&path, &rows));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_append_is_repaired_by_an_atomic_rewrite() {
        let dir = scratch("failed");
        let path = dir.join("r.jsonl");
        let mut outputs = Outputs::prepare(std::slice::from_ref(&path)).unwrap();
        let rows = rows();
        let break_it = |outputs: &mut Outputs| match &mut outputs.targets[0].sink {
            Sink::Append { file, .. } => file.break_for_test(),
            Sink::Whole => unreachable!(),
        };
        assert!(outputs.row_finished(&rows[..1]).is_empty());
        break_it(&mut outputs);
        let errors = outputs.row_finished(&rows[..2]);
        assert_eq!(errors.len(), 1, "said once: {errors:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), document(&path, &rows[..1]));
        // The next row repairs the file (a new inode: written beside it and renamed), then appends go on.
        let (inode, ..) = identity(&path);
        assert!(outputs.row_finished(&rows[..2]).is_empty());
        assert_ne!(identity(&path).0, inode);
        assert_eq!(fs::read_to_string(&path).unwrap(), document(&path, &rows[..2]));

        // A failure that lasts until the end: the final write rewrites the file whole.
        break_it(&mut outputs);
        assert_eq!(outputs.finish(&rows), [Saved::Written(path.clone())]);
        assert_eq!(fs::read_to_string(&path).unwrap(), document(&path, &rows));
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file remains: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_repaired_goes_to_the_fallback() {
        let dir = scratch("fallback");
        let path = dir.join("r.sql");
        let mut outputs = Outputs::prepare(std::slice::from_ref(&path)).unwrap();
        let rows = rows();
        outputs.row_finished(&rows[..1]);
        fs::remove_dir_all(&dir).unwrap();
        match &mut outputs.targets[0].sink {
            Sink::Append { file, .. } => *file = AppendFile::new(&path),
            Sink::Whole => unreachable!(),
        }
        assert_eq!(outputs.row_finished(&rows[..2]).len(), 1);
        match outputs.finish(&rows).as_slice() {
            [Saved::Fallback { wanted, saved_to, .. }] => {
                assert_eq!(wanted, &path);
                assert_eq!(fs::read_to_string(saved_to).unwrap(), document(&path, &rows));
                fs::remove_file(saved_to).unwrap();
            }
            other => panic!("expected a fallback, got {other:?}"),
        }
    }
}
