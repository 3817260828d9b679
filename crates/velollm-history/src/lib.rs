//! velollm's results history: every benchmark run and every row it finished, kept in one embedded SQLite file
//! (`$XDG_DATA_HOME/velollm/history.db`), with the machine and the build that measured it.
//!
//! Writing: a run is opened ([`History::begin_run`]), each row is added the moment it finishes
//! ([`History::add_row`], its own transaction), and the run is closed with its status ([`History::end_run`]).
//! A process killed mid-run leaves the rows it finished and the run still marked `running`. The file is in WAL
//! mode with a busy timeout, so several velollm processes can write at once and none loses a row.
//!
//! Reading: [`History::runs`] (filters), [`History::rows_of`], [`History::trend`], [`History::best`], the
//! rows as JSON again for `velollm compare`/`report`/`optimize`, and [`History::import`] for result files
//! written elsewhere (velollm json/jsonl, llama-bench json/jsonl/sql). The model-file hash cache of
//! [`hashes`] lives in the same file.

pub mod baseline;
pub mod hashes;
pub mod import;
pub mod machine;
pub mod query;
mod reader;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::Value;

pub use machine::{machine_key, HardwareIdentity, MachineIdentity, SoftwareIdentity, VolatileContext};
pub use query::{BestRow, RunFilter, RunSummary, StoredRow, TrendMetric, TrendPoint};
pub use reader::{entries_of_text, entry_of_row};

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that names the history file (`--history PATH` wins over it).
pub const HISTORY_ENV: &str = "VELOLLM_HISTORY";

/// Why the history cannot be used. Each is one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path} is not a velollm history ({reason}); it was left untouched (use --history to choose another file, or --no-history)")]
    Foreign { path: String, reason: String },
    #[error("the history {path} is corrupt ({reason}); it was left untouched (move it aside to start a new one, or use --history / --no-history)")]
    Corrupt { path: String, reason: String },
    #[error("{path} was written by a newer velollm (history schema {found}; this velollm reads up to {supported}); it was left untouched (use --history to choose another file, or --no-history)")]
    Newer { path: String, found: u32, supported: u32 },
    #[error("history {path}: {reason}")]
    Sqlite { path: String, reason: String },
    #[error("history: {0}")]
    Invalid(String),
}

/// A run's id in the history.
pub type RunId = i64;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Still running, or killed before it could say otherwise.
    Running,
    Completed,
    /// It ended with an error (some rows failed, or it could not start).
    Failed,
    /// Ctrl-C.
    Interrupted,
    /// Rows imported from a file.
    Imported,
}

impl RunStatus {
    pub fn word(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Imported => "imported",
        }
    }
}

/// What a run is, as it starts.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub command_line: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub machine: MachineIdentity,
    pub software: SoftwareIdentity,
    pub context: VolatileContext,
}

/// The history file, open. Shared between threads (the connection is behind a mutex).
pub struct History {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("path", &self.path).finish()
    }
}

/// Where the history lives: `$VELOLLM_HISTORY`, else `$XDG_DATA_HOME/velollm/history.db`, else
/// `~/.local/share/velollm/history.db`. `None` when neither variable nor `HOME` is set.
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(HISTORY_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let data = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".local/share"))
    })?;
    Some(data.join("velollm").join("history.db"))
}

/// SQLite's 16-byte header.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl History {
    /// Opens the history at `path`, creating it (and its directory) when missing, migrating an older schema.
    /// A file that is not a SQLite database, another program's database, a corrupt one or one from a newer
    /// velollm is an error, and nothing is written to it.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let shown = path.display().to_string();
        let sqlite = |e: rusqlite::Error| HistoryError::Sqlite { path: shown.clone(), reason: e.to_string() };
        let foreign = |reason: &str| HistoryError::Foreign { path: shown.clone(), reason: reason.to_string() };
        let exists = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Err(foreign("it is a directory")),
            Ok(meta) => meta.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(HistoryError::Sqlite { path: shown.clone(), reason: e.to_string() }),
        };
        if exists {
            // Checked before SQLite sees the file: SQLite would take a file of zeros, or one that merely
            // starts wrong, as something it may write over.
            let mut header = [0u8; 16];
            let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
            if read.is_err() || &header != SQLITE_MAGIC {
                return Err(foreign("not a SQLite database: the file is corrupt or something else"));
            }
        } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| HistoryError::Sqlite {
                path: shown.clone(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        let damaged = |reason: String| HistoryError::Corrupt { path: shown.clone(), reason };
        let corrupt = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                damaged(e.to_string())
            }
            _ => sqlite(e),
        };
        let application = schema::application_id(&conn).map_err(corrupt)?;
        let version = schema::version(&conn).map_err(corrupt)?;
        if exists && application != schema::APPLICATION_ID {
            let tables: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(corrupt)?;
            if application != 0 || tables > 0 || version > 0 {
                return Err(foreign("a SQLite database of another program"));
            }
        }
        if version > schema::CURRENT_VERSION {
            return Err(HistoryError::Newer { path: shown, found: version, supported: schema::CURRENT_VERSION });
        }
        if exists {
            // A damaged page shows here rather than halfway through a run.
            let problems: Vec<String> = conn
                .prepare("PRAGMA quick_check")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(corrupt)?;
            if problems.first().map(String::as_str) != Some("ok") {
                // One line: the first problem SQLite names, and how many more.
                let lines: Vec<String> = problems
                    .iter()
                    .flat_map(|p| p.lines().map(str::to_string).collect::<Vec<_>>())
                    .filter(|l| !l.starts_with("***"))
                    .collect();
                let first = lines.first().cloned().unwrap_or_else(|| "quick_check failed".into());
                let reason = match lines.len() {
                    0 | 1 => first,
                    n => format!("{first}; {} more problems", n - 1),
                };
                return Err(damaged(reason));
            }
        }
        // WAL: readers never block the writer, and a killed writer leaves only whole transactions. FULL sync
        // makes each committed row survive a power cut too (a row is worth one fsync).
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(corrupt)?;
        schema::migrate(&mut conn, version, schema::CURRENT_VERSION).map_err(sqlite)?;
        Ok(History { conn: Mutex::new(conn), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, e: rusqlite::Error) -> HistoryError {
        HistoryError::Sqlite { path: self.path.display().to_string(), reason: e.to_string() }
    }

    /// Records a run's start: its machine (added the first time it is seen) and build, and the machine's
    /// state now. Returns the run's id.
    pub fn begin_run(&self, run: &NewRun) -> Result<RunId, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.error(e))?;
        let machine_id = upsert_machine(&tx, &run.machine, &run.started_at).map_err(|e| self.error(e))?;
        let software_fingerprint = upsert_software(&tx, &run.software, &run.started_at).map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO runs (command_line, started_at, status, machine_id, software_fingerprint, velollm_version,
                               llama_cpp_build, context)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7)",
            params![
                run.command_line,
                run.started_at,
                machine_id,
                software_fingerprint,
                run.software.velollm_version,
                run.software.llama_cpp_version,
                serde_json::to_string(&run.context).unwrap_or_default(),
            ],
        )
        .map_err(|e| self.error(e))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(|e| self.error(e))?;
        Ok(id)
    }

    /// Adds one finished row to `run`, in its own transaction. `row` is the row as written to a results file.
    pub fn add_row(&self, run: RunId, row: &Value, recorded_at: &str) -> Result<(), HistoryError> {
        let entry = reader::entry_of_row(row).map_err(HistoryError::Invalid)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.error(e))?;
        let seq: i64 = tx
            .query_row("SELECT coalesce(max(seq), 0) + 1 FROM rows WHERE run_id = ?1", [run], |r| r.get(0))
            .map_err(|e| self.error(e))?;
        insert_row(&tx, run, seq, &entry, row, recorded_at).map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))
    }

    /// Marks the run ended, with its status.
    pub fn end_run(&self, run: RunId, status: RunStatus, ended_at: &str) -> Result<(), HistoryError> {
        self.conn()
            .execute("UPDATE runs SET status = ?1, ended_at = ?2 WHERE id = ?3", params![status.word(), ended_at, run])
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Removes runs and their rows; says how many runs there were.
    pub fn remove_runs(&self, runs: &[RunId]) -> Result<usize, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.error(e))?;
        let mut removed = 0;
        for run in runs {
            tx.execute("DELETE FROM rows WHERE run_id = ?1", [run]).map_err(|e| self.error(e))?;
            removed += tx.execute("DELETE FROM runs WHERE id = ?1", [run]).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(removed)
    }

    /// `PRAGMA integrity_check`'s verdict (`ok`, or the problems).
    pub fn integrity_check(&self) -> Result<String, HistoryError> {
        self.conn().query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| self.error(e))
    }
}

fn upsert_machine(tx: &rusqlite::Transaction<'_>, machine: &MachineIdentity, now: &str) -> rusqlite::Result<i64> {
    let fingerprint = machine.hardware.fingerprint();
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM machines WHERE alias = ?1 AND hardware_fingerprint = ?2",
            params![machine.alias, fingerprint],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO machines (alias, machine_key, hardware_fingerprint, hardware, first_seen) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            machine.alias,
            machine.machine_key,
            fingerprint,
            serde_json::to_string(&machine.hardware).unwrap_or_default(),
            now
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

fn upsert_software(tx: &rusqlite::Transaction<'_>, software: &SoftwareIdentity, now: &str) -> rusqlite::Result<String> {
    let fingerprint = software.fingerprint();
    tx.execute(
        "INSERT OR IGNORE INTO software (fingerprint, software, first_seen) VALUES (?1, ?2, ?3)",
        params![fingerprint, serde_json::to_string(software).unwrap_or_default(), now],
    )?;
    Ok(fingerprint)
}

fn insert_row(
    tx: &rusqlite::Transaction<'_>,
    run: RunId,
    seq: i64,
    entry: &velollm_results::Entry,
    row: &Value,
    recorded_at: &str,
) -> rusqlite::Result<()> {
    use velollm_results::Metric;
    let mean = |metric: Metric| {
        entry.samples.get(&metric).filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let status = match entry.status {
        velollm_results::Status::Ok => "ok",
        velollm_results::Status::Incomplete => "incomplete",
        velollm_results::Status::Failed => "failed",
    };
    let tool = match entry.tool {
        velollm_results::Tool::Velollm => "velollm",
        velollm_results::Tool::LlamaBench => "llama-bench",
    };
    tx.execute(
        "INSERT INTO rows (run_id, seq, recorded_at, tool, test, model, model_file, model_sha256, backend, status,
                           parameters, build, tokens_per_second, time_to_first_token_ms, prompt_tokens_per_second,
                           total_ms, peak_memory_bytes, row)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            run,
            seq,
            recorded_at,
            tool,
            entry.test.name,
            entry.model.label,
            entry.model.file_name,
            entry.model.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            entry.backend,
            status,
            serde_json::to_string(&entry.parameters).unwrap_or_default(),
            entry.build,
            mean(Metric::TokensPerSecond),
            mean(Metric::TimeToFirstTokenMs),
            mean(Metric::PromptTokensPerSecond),
            mean(Metric::TotalMs),
            reader::peak_memory_bytes(row).map(|b| b as i64),
            row.to_string(),
        ],
    )?;
    Ok(())
}
