//! The database's schema, one migration per version. `PRAGMA user_version` holds the version a file is at;
//! `PRAGMA application_id` says the file is a velollm history (so another program's SQLite file is refused
//! rather than written into).
//!
//! A migration is applied inside one transaction together with the version bump, so a file is always at one
//! version or the next, never in between. A file at a version above [`CURRENT_VERSION`] was written by a
//! newer velollm: it is refused and left untouched.

use rusqlite::Connection;

/// `VELO` in ASCII: SQLite's application id for velollm's history files.
pub const APPLICATION_ID: i32 = 0x5645_4C4F;

/// The schema this build writes.
pub const CURRENT_VERSION: u32 = 2;

/// Version 1: machines, software builds, runs and their rows.
pub const V1: &str = "
CREATE TABLE machines (
    id INTEGER PRIMARY KEY,
    alias TEXT NOT NULL,
    -- An app-specific hash of the OS's machine id (never the raw id), when the OS has one.
    machine_key TEXT,
    hardware_fingerprint TEXT NOT NULL,
    -- The inputs of the hardware fingerprint, as JSON.
    hardware TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    UNIQUE (alias, hardware_fingerprint)
);
CREATE TABLE software (
    fingerprint TEXT PRIMARY KEY,
    -- The inputs of the software fingerprint, as JSON.
    software TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    command_line TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    -- running, completed, failed, interrupted, imported
    status TEXT NOT NULL,
    machine_id INTEGER REFERENCES machines (id),
    software_fingerprint TEXT REFERENCES software (fingerprint),
    velollm_version TEXT,
    llama_cpp_build TEXT,
    -- What was true of the machine at the start but is not part of its identity (load, governor, ...), JSON.
    context TEXT,
    -- For imported runs: the file the rows came from.
    source TEXT
);
CREATE TABLE rows (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    tool TEXT NOT NULL,
    test TEXT NOT NULL,
    model TEXT NOT NULL,
    model_file TEXT NOT NULL,
    model_sha256 TEXT,
    backend TEXT NOT NULL,
    status TEXT NOT NULL,
    -- Every parameter the row records, normalised as velollm compare reads them, as a JSON object.
    parameters TEXT NOT NULL,
    build TEXT,
    tokens_per_second REAL,
    time_to_first_token_ms REAL,
    prompt_tokens_per_second REAL,
    total_ms REAL,
    -- The row exactly as velollm (or llama-bench) wrote it.
    row TEXT NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE INDEX rows_by_test ON rows (model, test, backend);
CREATE INDEX runs_by_start ON runs (started_at);
";

/// Version 2: the model-file hash cache (a file already hashed is not read again), and the peak memory of a
/// row for `history best --max-memory`.
pub const V2: &str = "
CREATE TABLE file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hashed_at TEXT NOT NULL
);
ALTER TABLE rows ADD COLUMN peak_memory_bytes INTEGER;
";

/// Each version's script, in order: `MIGRATIONS[v - 1]` takes a file from version `v - 1` to `v`.
pub const MIGRATIONS: [&str; CURRENT_VERSION as usize] = [V1, V2];

pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map(|v| v.max(0) as u32)
}

pub fn application_id(conn: &Connection) -> rusqlite::Result<i32> {
    conn.query_row("PRAGMA application_id", [], |r| r.get(0))
}

/// Brings the file from `from` to `to`, each step in its own transaction with its version bump.
pub fn migrate(conn: &mut Connection, from: u32, to: u32) -> rusqlite::Result<()> {
    for version in from + 1..=to {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated the file while this one waited for the lock.
        let now = version_of_tx(&tx)?;
        if now >= version {
            tx.commit()?;
            continue;
        }
        tx.execute_batch(MIGRATIONS[version as usize - 1])?;
        tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {version};"))?;
        tx.commit()?;
    }
    Ok(())
}

fn version_of_tx(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<u32> {
    tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map(|v| v.max(0) as u32)
}
