//! Result files written elsewhere, into the history: velollm's `-o` json/jsonl, and llama-bench's `-o json`,
//! `-o jsonl` and `-o sql`. Each file becomes one run marked `imported`, its rows in the file's order.
//!
//! llama-bench's SQL output is a `CREATE TABLE IF NOT EXISTS test (…)` and one `INSERT INTO test` per test;
//! it is executed into a private in-memory SQLite database (never into the history itself) and its rows read
//! back as the same objects its JSON output holds (SQLite's column types turn its quoted numbers back into
//! numbers). Its SQL has no per-repetition samples, only `avg_ts` and `stddev_ts`.

use std::path::Path;

use rusqlite::{params, types::ValueRef, Connection};
use serde_json::{Map, Value};

use crate::{machine::HardwareIdentity, History, HistoryError, MachineIdentity, RunId};

/// What one import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub run: RunId,
    pub rows: usize,
    /// `velollm`, `llama-bench`, or both.
    pub tools: String,
    pub warnings: Vec<String>,
}

/// The rows of a results file, as JSON objects.
pub fn read_rows(path: &Path) -> Result<(Vec<Value>, Vec<String>), HistoryError> {
    let fail = |reason: String| HistoryError::Invalid(format!("cannot import {}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    if looks_like_sql(&text) {
        return llama_bench_sql_rows(&text).map(|rows| (rows, Vec::new())).map_err(fail);
    }
    let run = velollm_results::read_str(&text).map_err(fail)?;
    Ok((run.entries.into_iter().map(|e| e.source).collect(), run.warnings))
}

fn looks_like_sql(text: &str) -> bool {
    let start = text.trim_start();
    let upper: String = start.chars().take(64).collect::<String>().to_ascii_uppercase();
    upper.starts_with("CREATE TABLE") || upper.starts_with("INSERT INTO")
}

/// llama-bench's `-o sql` output, executed in memory and read back as one JSON object per row of `test`.
pub fn llama_bench_sql_rows(sql: &str) -> Result<Vec<Value>, String> {
    let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    conn.execute_batch(sql).map_err(|e| format!("not llama-bench SQL output ({e})"))?;
    let mut statement = conn.prepare("SELECT * FROM test").map_err(|e| format!("no llama-bench table `test` ({e})"))?;
    let columns: Vec<String> = statement.column_names().into_iter().map(str::to_string).collect();
    let rows = statement
        .query_map(params![], |row| {
            let mut object = Map::new();
            for (i, name) in columns.iter().enumerate() {
                let value = match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::from(n),
                    ValueRef::Real(x) => serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null),
                    ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(_) => Value::Null,
                };
                object.insert(name.clone(), value);
            }
            Ok(Value::Object(object))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Value>>>())
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Err("its table `test` holds no rows".into());
    }
    Ok(rows)
}

/// The machine an imported file's rows ran on, as far as they say: `alias` (`--machine`, else the host
/// name velollm rows record, else `imported`) and the CPU they name. Its fingerprint covers only that.
pub fn machine_of_rows(rows: &[Value], alias: Option<&str>) -> MachineIdentity {
    let first = rows.first();
    let text = |pointer: &str| first.and_then(|r| r.pointer(pointer)).and_then(Value::as_str).map(str::to_string);
    let alias =
        alias.map(str::to_string).or_else(|| text("/environment/hostname")).unwrap_or_else(|| "imported".into());
    let cpu_model = text("/environment/cpu_model").or_else(|| text("/cpu_info"));
    let hardware = HardwareIdentity {
        cpu_model,
        physical_cores: None,
        logical_cpus: None,
        sockets: None,
        ram_gib: None,
        gpus: Vec::new(),
    };
    MachineIdentity { alias, machine_key: None, hardware }
}

impl History {
    /// Imports every row of `path` as one run. `machine`: the machine the rows ran on (see
    /// [`machine_of_rows`]). The run's start is its first row's time (`timestamp` or llama-bench's
    /// `test_time`), else `now`.
    pub fn import(&self, path: &Path, machine: &MachineIdentity, now: &str) -> Result<Imported, HistoryError> {
        let (rows, warnings) = read_rows(path)?;
        let entries: Vec<velollm_results::Entry> =
            rows.iter().map(crate::reader::entry_of_row).collect::<Result<_, _>>().map_err(HistoryError::Invalid)?;
        let started_at = rows
            .iter()
            .find_map(|r| r.get("timestamp").or_else(|| r.get("test_time")).and_then(Value::as_str))
            .unwrap_or(now)
            .to_string();
        let tools = {
            let velollm = entries.iter().any(|e| e.tool == velollm_results::Tool::Velollm);
            let llama_bench = entries.iter().any(|e| e.tool == velollm_results::Tool::LlamaBench);
            match (velollm, llama_bench) {
                (true, true) => "velollm and llama-bench",
                (false, true) => "llama-bench",
                _ => "velollm",
            }
            .to_string()
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.error(e))?;
        let machine_id = crate::upsert_machine(&tx, machine, now).map_err(|e| self.error(e))?;
        let source = path.canonicalize().unwrap_or_else(|_| path.to_path_buf()).display().to_string();
        tx.execute(
            "INSERT INTO runs (command_line, started_at, ended_at, status, machine_id, source)
             VALUES (?1, ?2, ?3, 'imported', ?4, ?5)",
            params![format!("velollm history import {}", path.display()), started_at, now, machine_id, source],
        )
        .map_err(|e| self.error(e))?;
        let run = tx.last_insert_rowid();
        for (seq, (entry, row)) in entries.iter().zip(&rows).enumerate() {
            let recorded_at =
                row.get("timestamp").or_else(|| row.get("test_time")).and_then(Value::as_str).unwrap_or(now);
            crate::insert_row(&tx, run, seq as i64 + 1, entry, row, recorded_at).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(Imported { run, rows: rows.len(), tools, warnings })
    }
}
