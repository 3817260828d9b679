//! The one place the history reads result rows: what test, model, backend and parameters a row has, and
//! its samples, through velollm-results' typed reader of result files (the one compare, report and optimize
//! use), so a row means the same in the history as in a results file.

use serde_json::Value;
use velollm_results::Entry;

/// One row (velollm's or llama-bench's JSON object) as the history indexes it.
pub fn entry_of_row(row: &Value) -> Result<Entry, String> {
    let text = Value::Array(vec![row.clone()]).to_string();
    let mut run = velollm_results::read_str(&text)?;
    run.entries.pop().ok_or_else(|| "the row could not be read".to_string())
}

/// Every row of a results file's text (a JSON array or JSON Lines), with the raw objects alongside.
pub fn entries_of_text(text: &str) -> Result<Vec<(Entry, Value)>, String> {
    let run = velollm_results::read_str(text)?;
    Ok(run
        .entries
        .into_iter()
        .map(|e| {
            let raw = e.source.clone();
            (e, raw)
        })
        .collect())
}

/// The most memory the row's measurement held: the process's peak RSS plus every GPU's peak VRAM in use,
/// when the row records them (velollm's telemetry); `None` otherwise.
pub fn peak_memory_bytes(row: &Value) -> Option<u64> {
    let telemetry = row.get("telemetry")?;
    let rss = telemetry.get("peak_rss_bytes").and_then(Value::as_u64);
    let vram: Option<u64> = telemetry
        .get("gpus")
        .and_then(Value::as_array)
        .map(|gpus| gpus.iter().filter_map(|g| g.get("peak_vram_used_bytes").and_then(Value::as_u64)).sum());
    match (rss, vram) {
        (None, None) | (None, Some(0)) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}
