//! What the history answers: the runs (filtered), a run's rows, a metric's trend across runs, and the best
//! configuration measured per model and machine.

use std::collections::BTreeMap;

use rusqlite::{params_from_iter, types::Value as SqlValue, Row};
use serde::Serialize;
use serde_json::Value;

use crate::{History, HistoryError, RunId};

/// Which rows (and so which runs) to look at. Every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// The model's name or file name contains this (case-insensitive), or its sha256 starts with it.
    pub model: Option<String>,
    pub backend: Option<String>,
    /// The machine's alias.
    pub machine: Option<String>,
    /// The test's name (`tg128`, `pp512`, `short_completion`).
    pub test: Option<String>,
    /// Runs started at or after this RFC 3339 time (or date).
    pub since: Option<String>,
    /// Runs started before this RFC 3339 time (or date).
    pub until: Option<String>,
    /// Only these runs.
    pub runs: Vec<RunId>,
}

/// One run, as `history list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: RunId,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: String,
    pub command_line: String,
    pub machine: Option<String>,
    pub hardware_fingerprint: Option<String>,
    pub software_fingerprint: Option<String>,
    pub velollm_version: Option<String>,
    pub llama_cpp_build: Option<String>,
    pub context: Option<Value>,
    pub source: Option<String>,
    pub rows: i64,
    /// The models and tests of its rows, in words.
    pub models: Vec<String>,
    pub tests: Vec<String>,
}

/// One stored row with where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRow {
    pub run_id: RunId,
    pub seq: i64,
    pub recorded_at: String,
    pub started_at: String,
    pub machine: Option<String>,
    pub software_fingerprint: Option<String>,
    pub tool: String,
    pub test: String,
    pub model: String,
    pub model_file: String,
    pub model_sha256: Option<String>,
    pub backend: String,
    pub status: String,
    pub parameters: BTreeMap<String, String>,
    pub build: Option<String>,
    pub tokens_per_second: Option<f64>,
    pub time_to_first_token_ms: Option<f64>,
    pub prompt_tokens_per_second: Option<f64>,
    pub total_ms: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    /// The row as it was written.
    pub row: Value,
}

/// A metric `history trend` can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendMetric {
    TokensPerSecond,
    TimeToFirstTokenMs,
    PromptTokensPerSecond,
    TotalMs,
}

impl TrendMetric {
    pub const NAMES: [&'static str; 4] =
        ["tokens_per_second", "time_to_first_token_ms", "prompt_tokens_per_second", "total_ms"];

    pub fn parse(text: &str) -> Option<TrendMetric> {
        Some(match text {
            "tokens_per_second" | "tok/s" | "ts" | "avg_ts" => TrendMetric::TokensPerSecond,
            "time_to_first_token_ms" | "ttft" => TrendMetric::TimeToFirstTokenMs,
            "prompt_tokens_per_second" | "prompt" => TrendMetric::PromptTokensPerSecond,
            "total_ms" | "total" => TrendMetric::TotalMs,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TrendMetric::TokensPerSecond => "tokens_per_second",
            TrendMetric::TimeToFirstTokenMs => "time_to_first_token_ms",
            TrendMetric::PromptTokensPerSecond => "prompt_tokens_per_second",
            TrendMetric::TotalMs => "total_ms",
        }
    }

    pub fn of(self, row: &StoredRow) -> Option<f64> {
        match self {
            TrendMetric::TokensPerSecond => row.tokens_per_second,
            TrendMetric::TimeToFirstTokenMs => row.time_to_first_token_ms,
            TrendMetric::PromptTokensPerSecond => row.prompt_tokens_per_second,
            TrendMetric::TotalMs => row.total_ms,
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, TrendMetric::TokensPerSecond | TrendMetric::PromptTokensPerSecond)
    }
}

/// One point of a trend: a row of one series (same machine, model, test, backend and parameters).
#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    /// `machine · model · test · backend`, and the parameters that differ between series of that model,
    /// test and backend.
    pub series: String,
    /// The series without the machine: the configuration, followed across machines.
    pub configuration: String,
    pub test: String,
    pub run_id: RunId,
    pub seq: i64,
    pub started_at: String,
    pub machine: Option<String>,
    pub value: f64,
    /// The build this point ran: the run's software fingerprint (velollm runs) or the row's build (imports).
    pub build: String,
    /// The build differs from the previous point of the same series.
    pub build_changed: bool,
}

/// The fastest ok row of a model on a machine, for one test.
#[derive(Debug, Clone, Serialize)]
pub struct BestRow {
    pub machine: Option<String>,
    pub model: String,
    pub test: String,
    pub backend: String,
    pub tokens_per_second: f64,
    pub parameters: BTreeMap<String, String>,
    pub peak_memory_bytes: Option<u64>,
    pub run_id: RunId,
    pub seq: i64,
    /// How many ok rows of this model, machine and test were weighed.
    pub candidates: usize,
    pub row: Value,
}

const ROW_COLUMNS: &str = "rows.run_id, rows.seq, rows.recorded_at, runs.started_at, machines.alias,
    coalesce(runs.software_fingerprint, ''), rows.tool, rows.test, rows.model, rows.model_file, rows.model_sha256,
    rows.backend, rows.status, rows.parameters, rows.build, rows.tokens_per_second, rows.time_to_first_token_ms,
    rows.prompt_tokens_per_second, rows.total_ms, rows.peak_memory_bytes, rows.row";

const ROW_JOIN: &str =
    "FROM rows JOIN runs ON runs.id = rows.run_id LEFT JOIN machines ON machines.id = runs.machine_id";

fn stored_row(r: &Row<'_>) -> rusqlite::Result<StoredRow> {
    let parameters: String = r.get(13)?;
    let row: String = r.get(20)?;
    let software: String = r.get(5)?;
    Ok(StoredRow {
        run_id: r.get(0)?,
        seq: r.get(1)?,
        recorded_at: r.get(2)?,
        started_at: r.get(3)?,
        machine: r.get(4)?,
        software_fingerprint: Some(software).filter(|s| !s.is_empty()),
        tool: r.get(6)?,
        test: r.get(7)?,
        model: r.get(8)?,
        model_file: r.get(9)?,
        model_sha256: r.get(10)?,
        backend: r.get(11)?,
        status: r.get(12)?,
        parameters: serde_json::from_str(&parameters).unwrap_or_default(),
        build: r.get(14)?,
        tokens_per_second: r.get(15)?,
        time_to_first_token_ms: r.get(16)?,
        prompt_tokens_per_second: r.get(17)?,
        total_ms: r.get(18)?,
        peak_memory_bytes: r.get::<_, Option<i64>>(19)?.map(|b| b.max(0) as u64),
        row: serde_json::from_str(&row).unwrap_or(Value::Null),
    })
}

/// The SQL conditions and their values for `filter` over rows joined to runs and machines.
fn conditions(filter: &RunFilter) -> (String, Vec<SqlValue>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(model) = &filter.model {
        clauses.push(
            "(lower(rows.model) LIKE ? OR lower(rows.model_file) LIKE ? OR rows.model_sha256 LIKE ?)".to_string(),
        );
        let like = format!("%{}%", model.to_lowercase());
        values.push(SqlValue::Text(like.clone()));
        values.push(SqlValue::Text(like));
        values.push(SqlValue::Text(format!("{}%", model.to_lowercase())));
    }
    if let Some(backend) = &filter.backend {
        clauses.push("rows.backend = ?".into());
        values.push(SqlValue::Text(backend.clone()));
    }
    if let Some(machine) = &filter.machine {
        clauses.push("machines.alias = ?".into());
        values.push(SqlValue::Text(machine.clone()));
    }
    if let Some(test) = &filter.test {
        clauses.push("rows.test = ?".into());
        values.push(SqlValue::Text(test.clone()));
    }
    if let Some(since) = &filter.since {
        clauses.push("runs.started_at >= ?".into());
        values.push(SqlValue::Text(since.clone()));
    }
    if let Some(until) = &filter.until {
        clauses.push("runs.started_at < ?".into());
        values.push(SqlValue::Text(until.clone()));
    }
    if !filter.runs.is_empty() {
        clauses.push(format!("runs.id IN ({})", vec!["?"; filter.runs.len()].join(", ")));
        values.extend(filter.runs.iter().map(|r| SqlValue::Integer(*r)));
    }
    let sql = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    (sql, values)
}

impl History {
    /// The runs that have a row matching `filter` (every run when the filter is empty, rowless ones included),
    /// oldest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, HistoryError> {
        let row_filter = filter.model.is_some() || filter.backend.is_some() || filter.test.is_some();
        let (mut sql, values) = conditions(&RunFilter { model: None, backend: None, test: None, ..filter.clone() });
        if row_filter {
            let (rows_sql, rows_values) = conditions(&RunFilter {
                model: filter.model.clone(),
                backend: filter.backend.clone(),
                test: filter.test.clone(),
                ..RunFilter::default()
            });
            let sub = format!("runs.id IN (SELECT rows.run_id FROM rows {rows_sql})");
            sql = if sql.is_empty() { format!("WHERE {sub}") } else { format!("{sql} AND {sub}") };
            let mut all = values;
            all.extend(rows_values);
            return self.run_summaries(&sql, all);
        }
        self.run_summaries(&sql, values)
    }

    fn run_summaries(&self, conditions: &str, values: Vec<SqlValue>) -> Result<Vec<RunSummary>, HistoryError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT runs.id, runs.started_at, runs.ended_at, runs.status, runs.command_line, machines.alias,
                    machines.hardware_fingerprint, runs.software_fingerprint, runs.velollm_version,
                    runs.llama_cpp_build, runs.context, runs.source,
                    (SELECT count(*) FROM rows WHERE rows.run_id = runs.id),
                    (SELECT group_concat(DISTINCT model) FROM rows WHERE rows.run_id = runs.id),
                    (SELECT group_concat(DISTINCT test) FROM rows WHERE rows.run_id = runs.id)
             FROM runs LEFT JOIN machines ON machines.id = runs.machine_id {conditions}
             ORDER BY runs.started_at, runs.id"
        );
        let mut statement = conn.prepare(&sql).map_err(|e| self.error(e))?;
        let split = |text: Option<String>| -> Vec<String> {
            text.map(|t| t.split(',').map(str::to_string).collect()).unwrap_or_default()
        };
        let runs = statement
            .query_map(params_from_iter(values), |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at: r.get(2)?,
                    status: r.get(3)?,
                    command_line: r.get(4)?,
                    machine: r.get(5)?,
                    hardware_fingerprint: r.get(6)?,
                    software_fingerprint: r.get(7)?,
                    velollm_version: r.get(8)?,
                    llama_cpp_build: r.get(9)?,
                    context: r.get::<_, Option<String>>(10)?.and_then(|c| serde_json::from_str(&c).ok()),
                    source: r.get(11)?,
                    rows: r.get(12)?,
                    models: split(r.get(13)?),
                    tests: split(r.get(14)?),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.error(e))?;
        Ok(runs)
    }

    /// One run, if it exists.
    pub fn run(&self, id: RunId) -> Result<Option<RunSummary>, HistoryError> {
        Ok(self.run_summaries("WHERE runs.id = ?", vec![SqlValue::Integer(id)])?.pop())
    }

    /// The latest run's id (by start), optionally only among runs on `machine`.
    pub fn last_run(&self, machine: Option<&str>) -> Result<Option<RunId>, HistoryError> {
        let filter = RunFilter { machine: machine.map(str::to_string), ..RunFilter::default() };
        Ok(self.runs(&filter)?.into_iter().filter(|r| r.rows > 0).map(|r| r.id).next_back())
    }

    /// The rows matching `filter`, oldest run first, in the order each run finished them.
    pub fn rows(&self, filter: &RunFilter) -> Result<Vec<StoredRow>, HistoryError> {
        let (conditions, values) = conditions(filter);
        let conn = self.conn();
        let sql = format!("SELECT {ROW_COLUMNS} {ROW_JOIN} {conditions} ORDER BY runs.started_at, runs.id, rows.seq");
        let mut statement = conn.prepare(&sql).map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params_from_iter(values), stored_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.error(e))?;
        Ok(rows)
    }

    /// The rows of one run.
    pub fn rows_of(&self, run: RunId) -> Result<Vec<StoredRow>, HistoryError> {
        self.rows(&RunFilter { runs: vec![run], ..RunFilter::default() })
    }

    /// `metric` across runs: one series per machine, model, test, backend and parameter set, each point
    /// marked where the build changed since the series' previous point. Rows without the metric (failed
    /// ones, or a metric the test does not have) are left out.
    pub fn trend(&self, metric: TrendMetric, filter: &RunFilter) -> Result<Vec<TrendPoint>, HistoryError> {
        let rows: Vec<StoredRow> =
            self.rows(filter)?.into_iter().filter(|r| r.status != "failed" && metric.of(r).is_some()).collect();
        let varying = varying_parameters(&rows);
        let mut last_build: BTreeMap<String, String> = BTreeMap::new();
        let mut points = Vec::new();
        for row in &rows {
            let Some(value) = metric.of(row) else { continue };
            let configuration = configuration_label(row, &varying);
            let series = format!("{} · {configuration}", row.machine.as_deref().unwrap_or("?"));
            let build = build_of(row);
            let build_changed = last_build.get(&series).is_some_and(|previous| *previous != build);
            last_build.insert(series.clone(), build.clone());
            points.push(TrendPoint {
                series,
                configuration,
                test: row.test.clone(),
                run_id: row.run_id,
                seq: row.seq,
                started_at: row.started_at.clone(),
                machine: row.machine.clone(),
                value,
                build,
                build_changed,
            });
        }
        Ok(points)
    }

    /// Per machine, model and test, the ok row with the highest tokens/s over every run in the history. Rows
    /// that failed (a configuration that did not fit, or did not load) never count; with `max_memory_bytes`,
    /// neither do rows that needed more memory, or that did not record how much they needed.
    pub fn best(&self, filter: &RunFilter, max_memory_bytes: Option<u64>) -> Result<Vec<BestRow>, HistoryError> {
        let rows = self.rows(filter)?;
        let mut best: BTreeMap<(String, String, String), BestRow> = BTreeMap::new();
        for row in rows.iter().filter(|r| r.status == "ok") {
            let Some(rate) = row.tokens_per_second else { continue };
            if let Some(limit) = max_memory_bytes {
                match row.peak_memory_bytes {
                    Some(used) if used <= limit => {}
                    _ => continue,
                }
            }
            let model_key = row.model_sha256.clone().unwrap_or_else(|| row.model_file.clone());
            let key = (row.machine.clone().unwrap_or_default(), model_key, row.test.clone());
            let candidate = BestRow {
                machine: row.machine.clone(),
                model: row.model.clone(),
                test: row.test.clone(),
                backend: row.backend.clone(),
                tokens_per_second: rate,
                parameters: row.parameters.clone(),
                peak_memory_bytes: row.peak_memory_bytes,
                run_id: row.run_id,
                seq: row.seq,
                candidates: 1,
                row: row.row.clone(),
            };
            match best.get_mut(&key) {
                Some(current) => {
                    let candidates = current.candidates + 1;
                    if rate > current.tokens_per_second {
                        *current = candidate;
                    }
                    current.candidates = candidates;
                }
                None => {
                    best.insert(key, candidate);
                }
            }
        }
        Ok(best.into_values().collect())
    }
}

/// The model, test and backend a configuration belongs to.
type Family = (String, String, String);

fn family(row: &StoredRow) -> Family {
    (row.model.clone(), row.test.clone(), row.backend.clone())
}

/// For each model, test and backend: the parameters whose value is not the same in all its rows (those are
/// what tell its configurations apart; a parameter some rows lack counts as varying).
fn varying_parameters(rows: &[StoredRow]) -> BTreeMap<Family, Vec<String>> {
    use std::collections::BTreeSet;
    // Per family, per parameter name, the values seen (absent counts as a value).
    let mut seen: BTreeMap<Family, BTreeMap<String, BTreeSet<Option<String>>>> = BTreeMap::new();
    let mut names: BTreeMap<Family, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        names.entry(family(row)).or_default().extend(row.parameters.keys().cloned());
    }
    for row in rows {
        let family = family(row);
        let values = seen.entry(family.clone()).or_default();
        for name in &names[&family] {
            values.entry(name.clone()).or_default().insert(row.parameters.get(name).cloned());
        }
    }
    seen.into_iter()
        .map(|(family, values)| {
            let varying = values.into_iter().filter(|(_, v)| v.len() > 1).map(|(name, _)| name).collect();
            (family, varying)
        })
        .collect()
}

/// `model · test · backend`, then `n_threads=2 …` for the parameters that vary in its family.
fn configuration_label(row: &StoredRow, varying: &BTreeMap<Family, Vec<String>>) -> String {
    let names = varying.get(&family(row)).cloned().unwrap_or_default();
    let params: Vec<String> = names
        .iter()
        .map(|name| format!("{name}={}", row.parameters.get(name).map(String::as_str).unwrap_or("-")))
        .collect();
    let mut label = format!("{} · {} · {}", row.model, row.test, row.backend);
    if !params.is_empty() {
        label.push_str(" · ");
        label.push_str(&params.join(" "));
    }
    label
}

fn build_of(row: &StoredRow) -> String {
    match (&row.software_fingerprint, &row.build) {
        (Some(fingerprint), _) if row.tool == "velollm" => fingerprint.clone(),
        (_, Some(build)) => build.clone(),
        (Some(fingerprint), None) => fingerprint.clone(),
        (None, None) => String::new(),
    }
}
