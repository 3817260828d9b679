//! Reading results files: velollm's JSON array or JSON Lines (schema 2, and schema 1), and llama-bench's
//! `-o json` / `-o jsonl` output, into [`Entry`]s that say what each row measured, under which parameters,
//! and with which raw samples.
//!
//! llama-bench rows are recognised by their fields (`build_commit`, `model_filename`, `avg_ts`, …, as its
//! README documents them); their engine is llama.cpp, so their backend is `llamacpp`, and ggml's backends
//! (`CPU`, `CUDA`, …) are kept as information.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::CompareError;

/// Which program wrote a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    Velollm,
    LlamaBench,
}

/// What a row measured: a text benchmark (the guide's suite, `--prompt`) or a llama-bench token test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestId {
    /// `text`, `pp`, `tg` or `pg`.
    pub kind: String,
    /// The benchmark's name (`short_completion`) or llama-bench's test name (`tg128 @ d512`).
    pub name: String,
    pub n_prompt: u64,
    pub n_gen: u64,
    pub n_depth: u64,
    /// Text tests: the prompt (two text tests are the same test when prompt and length are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

impl TestId {
    fn of_tokens(n_prompt: u64, n_gen: u64, n_depth: u64) -> TestId {
        let kind = match (n_prompt > 0, n_gen > 0) {
            (true, true) => "pg",
            (true, false) => "pp",
            _ => "tg",
        };
        let base = match kind {
            "pp" => format!("pp{n_prompt}"),
            "tg" => format!("tg{n_gen}"),
            _ => format!("pp{n_prompt}+tg{n_gen}"),
        };
        let name = if n_depth > 0 { format!("{base} @ d{n_depth}") } else { base };
        TestId { kind: kind.into(), name, n_prompt, n_gen, n_depth, prompt: None }
    }

    /// Whether two rows ran the same test.
    pub fn same_test(&self, other: &TestId) -> bool {
        if self.kind != other.kind {
            return false;
        }
        if self.kind == "text" {
            self.prompt == other.prompt && self.n_gen == other.n_gen
        } else {
            (self.n_prompt, self.n_gen, self.n_depth) == (other.n_prompt, other.n_gen, other.n_depth)
        }
    }
}

/// Which model file a row ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelId {
    /// How to show it: the file's own name for the model, else the file name.
    pub label: String,
    /// The file's name without its directory.
    pub file_name: String,
    pub sha256: Option<String>,
    /// Ollama's digest of the model, when it came from Ollama.
    pub digest: Option<String>,
    pub parameter_count: Option<u64>,
}

impl ModelId {
    /// The same model: the same sha256 when both rows have one, else the same Ollama digest, else (llama-bench
    /// records no hash) the same file name and, where both know it, the same parameter count.
    pub fn same_model(&self, other: &ModelId) -> bool {
        if let (Some(a), Some(b)) = (&self.sha256, &other.sha256) {
            return a.eq_ignore_ascii_case(b);
        }
        if let (Some(a), Some(b)) = (&self.digest, &other.digest) {
            return a == b;
        }
        let counts_agree = match (self.parameter_count, other.parameter_count) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        !self.file_name.is_empty() && self.file_name == other.file_name && counts_agree
    }
}

/// A metric compared between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Text tests: the decode rate; token tests: llama-bench's t/s of the whole test.
    TokensPerSecond,
    TimeToFirstTokenMs,
    PromptTokensPerSecond,
    TotalMs,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            Metric::TokensPerSecond => "tok/s",
            Metric::TimeToFirstTokenMs => "TTFT ms",
            Metric::PromptTokensPerSecond => "prompt tok/s",
            Metric::TotalMs => "total ms",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::TokensPerSecond | Metric::PromptTokensPerSecond)
    }
}

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Incomplete,
    Failed,
}

/// One row of a results file, as the comparison sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub tool: Tool,
    /// Position in its file, from 1.
    pub row: usize,
    pub test: TestId,
    pub model: ModelId,
    /// The engine: `llamacpp`, `candle`, `ollama` (llama-bench rows: `llamacpp`).
    pub backend: String,
    /// Every parameter the row records, in llama-bench's names and normalised spellings (`n_gpu_layers`: a
    /// count or `all`; `flash_attn`: `auto`, `on`, `off`; booleans `true`/`false`).
    pub parameters: BTreeMap<String, String>,
    pub status: Status,
    pub error: Option<String>,
    /// Raw per-iteration values of each metric the row has (empty when the row is [`Entry::invalid`]).
    pub samples: BTreeMap<Metric, Vec<f64>>,
    /// For each value of `samples`, the repetition it came from (0-based position among the row's timed
    /// repetitions): an interleaved run measured repetition `i` of every row in round `i`.
    pub rounds: BTreeMap<Metric, Vec<usize>>,
    /// Why the row's samples cannot be used (a value that is not a positive finite number, or values whose
    /// mean overflows): such a row keeps its place and its label but has no samples, so it enters no statistic.
    pub invalid: Option<String>,
    /// The row belongs to an interleaved run (`velollm benchmark --interleave`).
    pub interleaved: Option<Interleaved>,
    /// What else identifies the run (llama-bench's build commit and ggml backends, velollm's version).
    pub build: Option<String>,
    /// The row as read, for consumers that want all of it (the HTML report).
    #[serde(skip)]
    pub source: Value,
}

/// What an interleaved run writes in every row: `"interleaved": {"run": …, "combinations": n, "slot": k}`.
/// Rows with the same `run` measured their `i`-th repetitions in the same round `i`, one combination after
/// the other, so they can be compared round by round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interleaved {
    pub run: String,
    pub combinations: u64,
    pub slot: u64,
}

impl Interleaved {
    fn of(value: &Value) -> Option<Interleaved> {
        let object = value.get("interleaved")?;
        Some(Interleaved {
            run: match object.get("run")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            },
            combinations: object.get("combinations").and_then(Value::as_u64).unwrap_or(0),
            slot: object.get("slot").and_then(Value::as_u64)?,
        })
    }
}

impl Entry {
    /// `tg128 · SmolLM2 · llamacpp`.
    pub fn label(&self) -> String {
        format!("{} · {} · {}", self.test.name, self.model.label, self.backend)
    }
}

/// A results file, read.
#[derive(Debug, Clone)]
pub struct Run {
    pub path: PathBuf,
    /// The rows kept by a selection (`--base 'n_threads=1'`), in its own words; `None`: every row of the file.
    pub selection: Option<String>,
    pub entries: Vec<Entry>,
    /// Problems that did not stop the reading (a cut last line of a JSON Lines file).
    pub warnings: Vec<String>,
}

impl Run {
    /// The file, and the selection when only some of its rows are used: `sweep.json [n_threads=1]`.
    pub fn name(&self) -> String {
        match &self.selection {
            Some(selection) => format!("{} [{selection}]", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// The tools that wrote the file's rows, in words.
    pub fn tools(&self) -> &'static str {
        let velollm = self.entries.iter().any(|e| e.tool == Tool::Velollm);
        let llama_bench = self.entries.iter().any(|e| e.tool == Tool::LlamaBench);
        match (velollm, llama_bench) {
            (true, true) => "velollm and llama-bench",
            (false, true) => "llama-bench",
            _ => "velollm",
        }
    }
}

/// Reads a results file: a JSON array of rows, or JSON Lines (one row per line).
pub fn read_file(path: &Path) -> Result<Run, CompareError> {
    let fail = |reason: String| CompareError::Unreadable { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut run = read_str(&text).map_err(fail)?;
    run.path = path.to_path_buf();
    Ok(run)
}

/// Reads results from text (see [`read_file`]).
pub fn read_str(text: &str) -> Result<Run, String> {
    let mut warnings = Vec::new();
    let values: Vec<(usize, Value)> = if text.trim_start().starts_with('[') {
        let array: Vec<Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON array of rows ({e})"))?;
        array.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect()
    } else {
        let lines: Vec<(usize, &str)> =
            text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
        let mut values = Vec::new();
        for (position, (number, line)) in lines.iter().enumerate() {
            match serde_json::from_str::<Value>(line) {
                Ok(value) => values.push((*number, value)),
                // A run killed while writing its last line leaves that line cut: every row before it counts.
                Err(_) if position + 1 == lines.len() && position > 0 => {
                    warnings.push(format!("line {number} is cut short (a run stopped while writing it?); skipped"))
                }
                Err(e) => return Err(format!("line {number} is not a JSON row ({e})")),
            }
        }
        values
    };
    if values.is_empty() {
        return Err("it holds no result rows".into());
    }
    let entries = values
        .iter()
        .enumerate()
        .map(|(i, (number, value))| entry(value, i + 1).map_err(|e| format!("row {number}: {e}")))
        .collect::<Result<Vec<Entry>, String>>()?;
    for (entry, (number, _)) in entries.iter().zip(&values) {
        if let Some(why) = &entry.invalid {
            warnings.push(format!(
                "row {}{} ({}): {why}; the row is invalid and left out of every statistic",
                entry.row,
                if *number == entry.row { String::new() } else { format!(" (line {number})") },
                entry.label()
            ));
        }
    }
    Ok(Run { path: PathBuf::new(), selection: None, entries, warnings })
}

fn entry(value: &Value, row: usize) -> Result<Entry, String> {
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    if value.get("config").is_some() && value.get("backend").is_some() {
        Ok(velollm_entry(value, row))
    } else if value.get("model_filename").is_some() || value.get("build_commit").is_some() {
        llama_bench_entry(value, row)
    } else {
        Err("neither a velollm result (config, backend) nor a llama-bench result (model_filename, avg_ts)".into())
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn u64_at(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

/// A parameter value in one spelling for both tools.
pub(crate) fn normalise(tool: Tool, name: &str, value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => other.to_string(),
    };
    Some(match name {
        // velollm's `all`; llama-bench's -1 (all, its current default) and 99 or more (its older default and
        // the usual way to say "every layer").
        "n_gpu_layers" => match text.parse::<i64>() {
            Ok(n) if tool == Tool::LlamaBench && !(0..99).contains(&n) => "all".into(),
            _ => text,
        },
        "flash_attn" => match text.as_str() {
            "-1" | "auto" => "auto".into(),
            "1" | "true" | "on" | "enabled" => "on".into(),
            "0" | "false" | "off" | "disabled" => "off".into(),
            _ => text,
        },
        // llama-bench writes its proportions with two decimals (`0.00` when none: llama.cpp's default), velollm
        // as given (`auto` for the default); one spelling: `auto`, or the proportions as numbers.
        "tensor_split" => {
            let parts: Option<Vec<f64>> = text.split('/').map(|p| p.trim().parse::<f64>().ok()).collect();
            match parts {
                Some(parts) if parts.iter().all(|p| *p == 0.0) => "auto".into(),
                Some(parts) => parts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("/"),
                None => text,
            }
        }
        "devices" if text.is_empty() => "auto".into(),
        "use_mmap" | "no_kv_offload" | "embeddings" | "cpu_strict" | "no_host" | "use_direct_io" | "repack" => {
            match text.as_str() {
                "1" => "true".into(),
                "0" => "false".into(),
                _ => text,
            }
        }
        _ => text,
    })
}

/// The parameters velollm records, read from schema 2 (`parameters.requested`) or schema 1
/// (`parameters.engine`, with its older names).
fn velollm_parameters(value: &Value) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    let mut put = |name: &str, v: Option<&Value>| {
        if let Some(text) = v.and_then(|v| normalise(Tool::Velollm, name, v)) {
            parameters.insert(name.to_string(), text);
        }
    };
    if let Some(requested) = value.pointer("/parameters/requested").and_then(Value::as_object) {
        for (name, v) in requested {
            put(name, Some(v));
        }
    } else if let Some(engine) = value.pointer("/parameters/engine").and_then(Value::as_object) {
        for (old, new) in [
            ("threads", "n_threads"),
            ("n_gpu_layers", "n_gpu_layers"),
            ("ctx_size", "n_ctx"),
            ("batch_size", "n_batch"),
            ("ubatch_size", "n_ubatch"),
            ("flash_attn", "flash_attn"),
            ("use_mmap", "use_mmap"),
            ("type_k", "type_k"),
            ("type_v", "type_v"),
        ] {
            put(new, engine.get(old));
        }
    }
    put("stop_at_eos", value.pointer("/parameters/generation/stop_at_eos"));
    parameters
}

fn velollm_entry(value: &Value, row: usize) -> Entry {
    let test = match value.get("test") {
        Some(test) if str_at(test, "/kind") != Some("text") => TestId::of_tokens(
            u64_at(test, "/n_prompt").unwrap_or(0),
            u64_at(test, "/n_gen").unwrap_or(0),
            u64_at(test, "/n_depth").unwrap_or(0),
        ),
        // Text tests, and every schema-1 row.
        _ => TestId {
            kind: "text".into(),
            name: str_at(value, "/config/name").unwrap_or("?").to_string(),
            n_prompt: u64_at(value, "/test/n_prompt").or_else(|| u64_at(value, "/prompt_eval_count")).unwrap_or(0),
            n_gen: u64_at(value, "/config/max_tokens").unwrap_or(0),
            n_depth: 0,
            prompt: Some(str_at(value, "/config/prompt").unwrap_or("").to_string()),
        },
    };
    let path = str_at(value, "/model/path").filter(|p| !p.is_empty()).or_else(|| str_at(value, "/config/model"));
    let file_name = path.map(file_name).unwrap_or_default();
    let model = ModelId {
        label: str_at(value, "/model/name").map(str::to_string).unwrap_or_else(|| file_name.clone()),
        file_name,
        sha256: str_at(value, "/model/sha256").map(str::to_string),
        digest: str_at(value, "/model/digest").map(str::to_string),
        parameter_count: u64_at(value, "/model/parameter_count"),
    };
    let status = match str_at(value, "/status") {
        Some("failed") => Status::Failed,
        Some("incomplete") => Status::Incomplete,
        Some(_) => Status::Ok,
        None if value.get("complete").and_then(Value::as_bool) == Some(false) => Status::Incomplete,
        None => Status::Ok,
    };
    let mut samples = Samples::default();
    let iterations = value.get("samples").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let metric = |field: &'static str| iterations.iter().map(move |s| s.pointer(&format!("/metrics/{field}")));
    if test.kind == "text" {
        for (m, field) in [
            (Metric::TokensPerSecond, "tokens_per_second"),
            (Metric::TimeToFirstTokenMs, "ttft_ms"),
            (Metric::PromptTokensPerSecond, "prompt_tokens_per_second"),
            (Metric::TotalMs, "total_ms"),
        ] {
            samples.add(m, metric(field), true);
        }
    } else {
        // llama-bench's figure: t/s of every repetition.
        match value.get("samples_ts").and_then(Value::as_array) {
            Some(ts) if !ts.is_empty() => samples.add(Metric::TokensPerSecond, ts.iter().map(Some), false),
            _ => samples.add(Metric::TokensPerSecond, metric("tokens_per_second"), true),
        }
    }
    let Samples { values: samples, rounds, invalid } = samples.finish();
    let build =
        str_at(value, "/environment/velollm_version").map(|v| match str_at(value, "/environment/velollm_git_commit") {
            Some(commit) => format!("velollm {v} ({commit})"),
            None => format!("velollm {v}"),
        });
    Entry {
        tool: Tool::Velollm,
        row,
        test,
        model,
        backend: str_at(value, "/backend").unwrap_or("?").to_string(),
        parameters: velollm_parameters(value),
        status,
        error: str_at(value, "/error").map(str::to_string),
        samples,
        rounds,
        invalid,
        interleaved: Interleaved::of(value),
        build,
        source: value.clone(),
    }
}

/// llama-bench's fields that are not parameters of the test (identity, results, times).
const LLAMA_BENCH_NOT_PARAMETERS: &[&str] = &[
    "build_commit",
    "build_number",
    "cpu_info",
    "gpu_info",
    "backends",
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test_time",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ns",
    "samples_ts",
];

fn llama_bench_entry(value: &Value, row: usize) -> Result<Entry, String> {
    let number = |field: &str| value.get(field).and_then(Value::as_u64);
    let n_prompt = number("n_prompt").ok_or("a llama-bench row without n_prompt")?;
    let n_gen = number("n_gen").ok_or("a llama-bench row without n_gen")?;
    let test = TestId::of_tokens(n_prompt, n_gen, number("n_depth").unwrap_or(0));
    let file_name = str_at(value, "/model_filename").map(file_name).unwrap_or_default();
    let model = ModelId {
        label: str_at(value, "/model_type").map(str::to_string).unwrap_or_else(|| file_name.clone()),
        file_name,
        sha256: None,
        digest: None,
        parameter_count: number("model_n_params"),
    };
    let mut parameters = BTreeMap::new();
    if let Some(object) = value.as_object() {
        for (name, v) in object {
            if LLAMA_BENCH_NOT_PARAMETERS.contains(&name.as_str()) {
                continue;
            }
            if let Some(text) = normalise(Tool::LlamaBench, name, v) {
                parameters.insert(name.clone(), text);
            }
        }
    }
    let mut samples = Samples::default();
    match value.get("samples_ts").and_then(Value::as_array) {
        Some(ts) if !ts.is_empty() => samples.add(Metric::TokensPerSecond, ts.iter().map(Some), false),
        // Without its samples only the mean is known: shown, but no test is possible.
        _ => samples.add(Metric::TokensPerSecond, [value.get("avg_ts")].into_iter(), true),
    }
    let Samples { values: samples, rounds, invalid } = samples.finish();
    let build = str_at(value, "/build_commit").map(|commit| match str_at(value, "/backends") {
        Some(backends) => format!("llama-bench {commit} ({backends})"),
        None => format!("llama-bench {commit}"),
    });
    Ok(Entry {
        tool: Tool::LlamaBench,
        row,
        test,
        model,
        backend: "llamacpp".into(),
        parameters,
        status: Status::Ok,
        error: None,
        samples,
        rounds,
        invalid,
        interleaved: Interleaved::of(value),
        build,
        source: value.clone(),
    })
}

/// A row's samples as they are read, with the repetition of each value, and the first reason the row cannot
/// be used.
#[derive(Default)]
struct Samples {
    values: BTreeMap<Metric, Vec<f64>>,
    rounds: BTreeMap<Metric, Vec<usize>>,
    invalid: Option<String>,
}

impl Samples {
    /// The values of one metric, one per repetition; an absent value (or `null` where `nullable`) is skipped,
    /// anything else that is not a positive finite number makes the row invalid.
    fn add<'a>(&mut self, metric: Metric, values: impl Iterator<Item = Option<&'a Value>>, nullable: bool) {
        for (round, value) in values.enumerate() {
            let number = match value {
                None | Some(Value::Null) if nullable => continue,
                Some(Value::Number(n)) => n.as_f64(),
                _ => None,
            };
            match number {
                Some(v) if v.is_finite() && v > 0.0 => {
                    self.values.entry(metric).or_default().push(v);
                    self.rounds.entry(metric).or_default().push(round);
                }
                _ => {
                    let shown = value.map_or("absent".to_string(), Value::to_string);
                    self.invalid.get_or_insert_with(|| {
                        format!(
                            "{} of repetition {} is {shown}, not a positive finite number",
                            metric.label(),
                            round + 1
                        )
                    });
                }
            }
        }
    }

    /// The samples, or none with the reason when the row is invalid.
    fn finish(mut self) -> Samples {
        if self.invalid.is_none() {
            for (metric, values) in &self.values {
                let finite = crate::Moments::of(values)
                    .is_some_and(|m| m.mean.is_finite() && m.stddev.unwrap_or(0.0).is_finite());
                if !finite {
                    self.invalid = Some(format!("{} values are too large to average", metric.label()));
                    break;
                }
            }
        }
        if self.invalid.is_some() {
            self.values.clear();
            self.rounds.clear();
        }
        self
    }
}

fn file_name(path: &str) -> String {
    path.rsplit(['/', '\\']).next().unwrap_or(path).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_spelled_alike() {
        let n = |v: Value| normalise(Tool::LlamaBench, "n_gpu_layers", &v).unwrap();
        assert_eq!([n(Value::from(-1)), n(Value::from(99)), n(Value::from(12))], ["all", "all", "12"]);
        let ours = |v: Value| normalise(Tool::Velollm, "n_gpu_layers", &v).unwrap();
        assert_eq!([ours(Value::from("all")), ours(Value::from(99))], ["all", "99"]);
        let fa = |v: Value| normalise(Tool::LlamaBench, "flash_attn", &v).unwrap();
        assert_eq!(fa(Value::from(-1)), "auto");
        assert_eq!(fa(Value::from(true)), "on");
        assert_eq!(fa(Value::from(0)), "off");
        assert_eq!(fa(Value::from("Auto")), "auto");
        assert_eq!(normalise(Tool::LlamaBench, "use_mmap", &Value::from(1)).unwrap(), "true");
        assert_eq!(normalise(Tool::Velollm, "type_k", &Value::from("F16")).unwrap(), "f16");
    }

    #[test]
    fn jsonl_with_a_cut_last_line_keeps_the_rows_before() {
        let row =
            r#"{"build_commit":"abc","model_filename":"m.gguf","n_prompt":0,"n_gen":16,"samples_ts":[10.0,11.0]}"#;
        let run = read_str(&format!("{row}\n{row}\n{{\"build_commit\":\"ab")).unwrap();
        assert_eq!(run.entries.len(), 2);
        assert!(run.warnings[0].contains("line 3 is cut short"), "{:?}", run.warnings);
        let err = read_str(&format!("{{oops\n{row}\n")).unwrap_err();
        assert!(err.contains("line 1 is not a JSON row"), "{err}");
        assert!(read_str("[]").unwrap_err().contains("no result rows"));
        let err = read_str(r#"[{"hello": 1}]"#).unwrap_err();
        assert!(err.contains("row 1: neither a velollm result"), "{err}");
    }

    #[test]
    fn test_names_follow_llama_bench() {
        assert_eq!(TestId::of_tokens(512, 0, 0).name, "pp512");
        assert_eq!(TestId::of_tokens(0, 128, 4096).name, "tg128 @ d4096");
        assert_eq!(TestId::of_tokens(512, 128, 0).kind, "pg");
    }
}
