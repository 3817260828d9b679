//! One typed reader of result files, shared by `velollm compare`, `velollm report`, `velollm optimize` and
//! anything else that reads what a benchmark wrote: velollm's rows of every schema version that was ever written
//! (a JSON array, JSON Lines, or one pretty-printed row) and llama-bench's `-o json` / `-o jsonl` rows, read into
//! [`Entry`]s that say what each row measured, under which parameters, with which raw samples, and where it
//! came from ([`Entry::tool`], [`Entry::schema_version`], [`Entry::line`], [`Run::layout`]).
//!
//! Every field a row's version defines and this reader needs must be there: a missing or renamed field is an
//! error that names the field, the row and its line, never a silent default (docs/result-files.md lists the
//! fields of each version). Absent *values* that the layout allows (`null` rates, no sha256) stay absent.
//!
//! llama-bench rows are recognised by their fields (`build_commit`, `model_filename`, `avg_ts`, …, as its
//! README documents them); their engine is llama.cpp, so their backend is `llamacpp`, and ggml's backends
//! (`CPU`, `CUDA`, …) are kept as information. `n_depth` is the one field llama-bench added later (2025): a row
//! without it ran at depth 0, as every llama-bench test did before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

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
    /// Load rows (`--concurrency`, `--request-rate`): the profile's label (`c4`, `rate2`, `rate-inf`), also at the
    /// end of the name (`tg16 @ c4`). Rows of different profiles are different tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_profile: Option<String>,
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
        TestId { kind: kind.into(), name, n_prompt, n_gen, n_depth, prompt: None, load_profile: None }
    }

    /// Whether two rows ran the same test.
    pub fn same_test(&self, other: &TestId) -> bool {
        if self.kind != other.kind || self.load_profile != other.load_profile {
            return false;
        }
        if self.kind == BATCHED_KIND {
            // The name holds B and whether the prompt was shared (`pp32+tg8 x4 shared`).
            return self.name == other.name;
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
    /// The file's size in bytes (velollm's `model.bytes`, llama-bench's `model_size`).
    pub bytes: Option<u64>,
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
    /// The program that wrote the row.
    pub tool: Tool,
    /// velollm rows: the schema version the row was written in (llama-bench rows have none).
    pub schema_version: Option<u32>,
    /// Position in its file, from 1.
    pub row: usize,
    /// Where the row starts in its file: its line in JSON Lines, else its position (serde_json keeps no lines).
    pub line: usize,
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
    /// The row's `interleaved` object: absent for a row of a run that was not interleaved; present, every
    /// field of it is required.
    fn of(value: &Value) -> Result<Option<Interleaved>, String> {
        if value.get("interleaved").is_none_or(Value::is_null) {
            return Ok(None);
        }
        Ok(Some(Interleaved {
            run: match required(value, "/interleaved/run")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(format!("`interleaved.run` is {other}, not a name")),
            },
            combinations: required_u64(value, "/interleaved/combinations")?,
            slot: required_u64(value, "/interleaved/slot")?,
        }))
    }
}

impl Entry {
    /// `tg128 · SmolLM2 · llamacpp`.
    pub fn label(&self) -> String {
        format!("{} · {} · {}", self.test.name, self.model.label, self.backend)
    }
}

/// The oldest velollm schema version this reader reads; the newest is [`velollm_core::SCHEMA_VERSION`].
pub const OLDEST_SCHEMA_VERSION: u32 = 1;

/// Why a results file cannot be read, in one line that names the file (and the row and field at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {path}: {reason}")]
pub struct ReadError {
    pub path: String,
    pub reason: String,
}

/// How a file holds its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// A JSON array of rows (`velollm -o x.json`, llama-bench's `-o json`).
    JsonArray,
    /// One row per line (`velollm -o x.jsonl`, llama-bench's `-o jsonl`).
    JsonLines,
    /// A single row as one JSON object, possibly over several lines.
    SingleObject,
}

/// A results file, read.
#[derive(Debug, Clone)]
pub struct Run {
    pub path: PathBuf,
    pub layout: Layout,
    /// The rows kept by a selection (`--base 'n_threads=1'`), in its own words; `None`: every row of the file.
    pub selection: Option<String>,
    pub entries: Vec<Entry>,
    /// Problems that did not stop the reading (a cut last line of a JSON Lines file, an invalid row).
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

/// Reads a results file: a JSON array of rows, JSON Lines (one row per line), or one row.
pub fn read_file(path: &Path) -> Result<Run, ReadError> {
    let fail = |reason: String| ReadError { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut run = read_str(&text).map_err(fail)?;
    run.path = path.to_path_buf();
    Ok(run)
}

/// Reads results from text (see [`read_file`]); the error is the reason alone, without a file name.
pub fn read_str(text: &str) -> Result<Run, String> {
    let mut warnings = Vec::new();
    let trimmed = text.trim_start();
    let (layout, values): (Layout, Vec<(usize, Value)>) = if trimmed.starts_with('[') {
        let array: Vec<Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON array of rows ({e})"))?;
        // The line of each element is not kept by serde_json; its position in the array names it.
        (Layout::JsonArray, array.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect())
    } else if let Some(Ok(Value::Object(row))) =
        (trimmed.starts_with('{') && trimmed.trim_end().lines().count() > 1).then(|| serde_json::from_str(text))
    {
        (Layout::SingleObject, vec![(1, Value::Object(row))])
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
        (Layout::JsonLines, values)
    };
    if values.is_empty() {
        return Err("it holds no result rows".into());
    }
    let place = |row: usize, number: usize| match layout {
        Layout::JsonLines if number != row => format!("row {row} (line {number})"),
        _ => format!("row {row}"),
    };
    let entries = values
        .iter()
        .enumerate()
        .map(|(i, (number, value))| entry(value, i + 1, *number).map_err(|e| format!("{}: {e}", place(i + 1, *number))))
        .collect::<Result<Vec<Entry>, String>>()?;
    for entry in &entries {
        if let Some(why) = &entry.invalid {
            warnings.push(format!(
                "{} ({}): {why}; the row is invalid and left out of every statistic",
                place(entry.row, entry.line),
                entry.label()
            ));
        }
    }
    Ok(Run { path: PathBuf::new(), layout, selection: None, entries, warnings })
}

fn entry(value: &Value, row: usize, line: usize) -> Result<Entry, String> {
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    // velollm's rows all have `config` (the guide's) and `schema_version`; llama-bench's never do.
    let mut entry = if value.get("config").is_some() || value.get("schema_version").is_some() {
        velollm_entry(value, row)?
    } else if value.get("model_filename").is_some() || value.get("build_commit").is_some() {
        llama_bench_entry(value, row)?
    } else {
        return Err(
            "neither a velollm result (config, backend) nor a llama-bench result (model_filename, avg_ts)".into()
        );
    };
    entry.line = line;
    Ok(entry)
}

/// A JSON pointer as a dotted field name (`/config/max_tokens` → `config.max_tokens`).
fn field_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// The field, which the row's version requires.
fn required<'a>(value: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    match value.pointer(pointer) {
        Some(v) => Ok(v),
        None => Err(format!("no `{}` field", field_name(pointer))),
    }
}

fn required_str<'a>(value: &'a Value, pointer: &str) -> Result<&'a str, String> {
    let v = required(value, pointer)?;
    v.as_str().ok_or_else(|| format!("`{}` is {v}, not a string", field_name(pointer)))
}

fn required_u64(value: &Value, pointer: &str) -> Result<u64, String> {
    let v = required(value, pointer)?;
    v.as_u64().ok_or_else(|| format!("`{}` is {v}, not a whole number", field_name(pointer)))
}

fn required_bool(value: &Value, pointer: &str) -> Result<bool, String> {
    let v = required(value, pointer)?;
    v.as_bool().ok_or_else(|| format!("`{}` is {v}, not true or false", field_name(pointer)))
}

/// A field the layout requires to hold an object (or, where `nullable`, `null`).
fn required_object<'a>(
    value: &'a Value,
    pointer: &str,
    nullable: bool,
) -> Result<Option<&'a serde_json::Map<String, Value>>, String> {
    match required(value, pointer)? {
        Value::Object(object) => Ok(Some(object)),
        Value::Null if nullable => Ok(None),
        other => Err(format!("`{}` is {other}, not an object", field_name(pointer))),
    }
}

fn required_array<'a>(value: &'a Value, pointer: &str) -> Result<&'a [Value], String> {
    let v = required(value, pointer)?;
    v.as_array().map(Vec::as_slice).ok_or_else(|| format!("`{}` is {v}, not an array", field_name(pointer)))
}

/// An optional field: absent or `null` is `None`; present, it must be a string.
fn optional_str<'a>(value: &'a Value, pointer: &str) -> Result<Option<&'a str>, String> {
    match value.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`{}` is {other}, not a string", field_name(pointer))),
    }
}

fn optional_u64(value: &Value, pointer: &str) -> Result<Option<u64>, String> {
    match value.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("`{}` is {v}, not a whole number", field_name(pointer))),
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// A parameter value in one spelling for both tools.
pub fn normalise(tool: Tool, name: &str, value: &Value) -> Option<String> {
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

/// The parameters velollm records, read from schema 2 and later (`parameters.requested`) or schema 1
/// (`parameters.engine`, with its older names; `null` when the row failed before an engine existed).
fn velollm_parameters(value: &Value, schema_version: u32) -> Result<BTreeMap<String, String>, String> {
    let mut parameters = BTreeMap::new();
    let mut put = |name: &str, v: Option<&Value>| {
        if let Some(text) = v.and_then(|v| normalise(Tool::Velollm, name, v)) {
            parameters.insert(name.to_string(), text);
        }
    };
    if schema_version >= 2 {
        for (name, v) in required_object(value, "/parameters/requested", false)?.into_iter().flatten() {
            put(name, Some(v));
        }
    } else if let Some(engine) = required_object(value, "/parameters/engine", true)? {
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
    Ok(parameters)
}

/// A velollm row's status: `status` from schema 2 on, `complete` in schema 1.
fn velollm_status(value: &Value, schema_version: u32) -> Result<Status, String> {
    if schema_version == 1 {
        return Ok(if required_bool(value, "/complete")? { Status::Ok } else { Status::Incomplete });
    }
    match required_str(value, "/status")? {
        "ok" => Ok(Status::Ok),
        "incomplete" => Ok(Status::Incomplete),
        "failed" => Ok(Status::Failed),
        other => Err(format!("`status` is \"{other}\", not ok, incomplete or failed")),
    }
}

/// The kind of a batched test's row (llama-batched-bench's, `-npl`): only rows of the same B and prompt
/// sharing pair.
pub const BATCHED_KIND: &str = "batched";

fn velollm_entry(value: &Value, row: usize) -> Result<Entry, String> {
    let schema_version = u32::try_from(required_u64(value, "/schema_version")?).unwrap_or(u32::MAX);
    let newest = velollm_core::SCHEMA_VERSION;
    if !(OLDEST_SCHEMA_VERSION..=newest).contains(&schema_version) {
        return Err(format!(
            "schema_version {schema_version} is not one this velollm reads ({OLDEST_SCHEMA_VERSION} to {newest}); \
             a newer velollm wrote it?"
        ));
    }
    let name = required_str(value, "/config/name")?;
    let max_tokens = required_u64(value, "/config/max_tokens")?;
    let prompt = required_str(value, "/config/prompt")?;
    let reference = required_str(value, "/config/model")?;
    let backend = required_str(value, "/backend")?;
    // Schema 1 had no test shape: every row was a text test, its prompt length counted per iteration.
    let (kind, n_prompt, n_gen, n_depth) = if schema_version >= 2 {
        (
            required_str(value, "/test/kind")?,
            required_u64(value, "/test/n_prompt")?,
            required_u64(value, "/test/n_gen")?,
            required_u64(value, "/test/n_depth")?,
        )
    } else {
        ("text", optional_u64(value, "/prompt_eval_count")?.unwrap_or(0), max_tokens, 0)
    };
    let batched = value.pointer("/test/parallel").is_some_and(Value::is_object);
    let mut test = match kind {
        // llama-batched-bench's test (`-npl`): its name holds B and whether the prompt was shared.
        "pp" | "tg" | "pg" if batched => TestId {
            kind: BATCHED_KIND.into(),
            name: name.to_string(),
            n_prompt,
            n_gen,
            n_depth,
            prompt: None,
            load_profile: None,
        },
        "text" => TestId {
            kind: "text".into(),
            name: name.to_string(),
            n_prompt,
            n_gen: max_tokens,
            n_depth,
            prompt: Some(prompt.to_string()),
            load_profile: None,
        },
        "pp" | "tg" | "pg" => TestId::of_tokens(n_prompt, n_gen, n_depth),
        other => return Err(format!("`test.kind` is \"{other}\", not text, pp, tg or pg")),
    };
    // A load row's name ends with its profile (`tg16 @ c4`, `short_completion @ rate2`): the profile read back.
    if let Some(load) = value.pointer("/load").filter(|l| l.is_object()) {
        let profile: velollm_core::LoadProfile = serde_json::from_value(
            load.get("profile").cloned().ok_or_else(|| "a `load` object with no `profile`".to_string())?,
        )
        .map_err(|e| format!("`load.profile`: {e}"))?;
        let label = profile.label();
        let suffix = format!(" @ {label}");
        if !test.name.ends_with(&suffix) {
            // Token tests' names are rebuilt from their shape above; text tests keep the row's own name.
            test.name.push_str(&suffix);
        }
        test.load_profile = Some(label);
    }
    let path = required_str(value, "/model/path")?;
    let file_name = file_name(if path.is_empty() { reference } else { path });
    let model = ModelId {
        label: optional_str(value, "/model/name")?.map(str::to_string).unwrap_or_else(|| file_name.clone()),
        file_name,
        sha256: optional_str(value, "/model/sha256")?.map(str::to_string),
        digest: optional_str(value, "/model/digest")?.map(str::to_string),
        parameter_count: optional_u64(value, "/model/parameter_count")?,
        bytes: optional_u64(value, "/model/bytes")?,
    };
    let status = velollm_status(value, schema_version)?;
    let mut samples = Samples::default();
    let iterations = required_array(value, "/samples")?;
    let metric = |field: &'static str| iterations.iter().map(move |s| s.pointer(&format!("/metrics/{field}")));
    if let Some(requests) = value.pointer("/load/requests") {
        // A load row: its samples are its finished requests (docs/metrics.md, "Load runs"), so two runs of one
        // profile compare request by request.
        let requests = requests.as_array().ok_or("`load.requests` is not an array")?;
        for (m, per_request) in request_samples(requests)? {
            samples.add(m, per_request.iter().map(Some), false);
        }
    } else if test.kind == "text" {
        for (m, field) in [
            (Metric::TokensPerSecond, "tokens_per_second"),
            (Metric::TimeToFirstTokenMs, "ttft_ms"),
            (Metric::PromptTokensPerSecond, "prompt_tokens_per_second"),
            (Metric::TotalMs, "total_ms"),
        ] {
            samples.add(m, metric(field), true);
        }
    } else {
        // llama-bench's figure: t/s of every repetition; a row whose `samples_ts` is empty falls back to the
        // per-iteration rates.
        match required_array(value, "/samples_ts")? {
            ts if !ts.is_empty() => samples.add(Metric::TokensPerSecond, ts.iter().map(Some), false),
            _ => samples.add(Metric::TokensPerSecond, metric("tokens_per_second"), true),
        }
    }
    let Samples { values: samples, rounds, invalid } = samples.finish();
    let build = optional_str(value, "/environment/velollm_version")?.map(|v| {
        match str_at(value, "/environment/velollm_git_commit") {
            Some(commit) => format!("velollm {v} ({commit})"),
            None => format!("velollm {v}"),
        }
    });
    Ok(Entry {
        tool: Tool::Velollm,
        schema_version: Some(schema_version),
        row,
        line: row,
        test,
        model,
        backend: backend.to_string(),
        parameters: velollm_parameters(value, schema_version)?,
        status,
        error: optional_str(value, "/error")?.map(str::to_string),
        samples,
        rounds,
        invalid,
        interleaved: Interleaved::of(value)?,
        build,
        source: value.clone(),
    })
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
    let n_prompt = required_u64(value, "/n_prompt")?;
    let n_gen = required_u64(value, "/n_gen")?;
    // The one field llama-bench added later: its older rows all ran at depth 0.
    let n_depth = optional_u64(value, "/n_depth")?.unwrap_or(0);
    let test = TestId::of_tokens(n_prompt, n_gen, n_depth);
    let file_name = file_name(required_str(value, "/model_filename")?);
    let model = ModelId {
        label: required_str(value, "/model_type")?.to_string(),
        file_name,
        sha256: None,
        digest: None,
        parameter_count: optional_u64(value, "/model_n_params")?,
        // llama-bench's `model_size` is the bytes of the tensors, not of the file: not comparable with
        // velollm's `model.bytes`, so not kept here.
        bytes: None,
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
        _ => samples.add(Metric::TokensPerSecond, [Some(required(value, "/avg_ts")?)].into_iter(), true),
    }
    let Samples { values: samples, rounds, invalid } = samples.finish();
    let build = str_at(value, "/build_commit").map(|commit| match str_at(value, "/backends") {
        Some(backends) => format!("llama-bench {commit} ({backends})"),
        None => format!("llama-bench {commit}"),
    });
    Ok(Entry {
        tool: Tool::LlamaBench,
        schema_version: None,
        row,
        line: row,
        test,
        model,
        backend: "llamacpp".into(),
        parameters,
        status: Status::Ok,
        error: None,
        samples,
        rounds,
        invalid,
        interleaved: Interleaved::of(value)?,
        build,
        source: value.clone(),
    })
}

/// A load row's samples, from its finished requests' timelines (nanoseconds on the run's clock): TTFT = first
/// chunk with text − sent, total = end − sent (E2E), and the output rate after the first token
/// = (output tokens − 1) / (end − first chunk), for requests with two output tokens or more (1000 / TPOT).
fn request_samples(requests: &[Value]) -> Result<Vec<(Metric, Vec<Value>)>, String> {
    let (mut ttft, mut total, mut rate) = (Vec::new(), Vec::new(), Vec::new());
    for (i, request) in requests.iter().enumerate() {
        if !request.get("error").is_none_or(Value::is_null) {
            continue;
        }
        let at = |field: &str| {
            request
                .get(field)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("request {i} of `load.requests` has no `{field}`"))
        };
        let (sent, end) = (at("sent_ns")?, at("end_ns")?);
        total.push(Value::from(end.saturating_sub(sent) as f64 / 1e6));
        let first = request.pointer("/chunk_times_ns/0").and_then(Value::as_u64);
        if let Some(first) = first {
            ttft.push(Value::from(first.saturating_sub(sent) as f64 / 1e6));
            let tokens = request.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
            if tokens >= 2 && end > first {
                rate.push(Value::from((tokens - 1) as f64 / ((end - first) as f64 / 1e9)));
            }
        }
    }
    Ok(vec![(Metric::TokensPerSecond, rate), (Metric::TimeToFirstTokenMs, ttft), (Metric::TotalMs, total)])
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
                let finite = velollm_core::Summary::of(values)
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
        let row = r#"{"build_commit":"abc","model_filename":"m.gguf","model_type":"llama ?B Q4_1","n_prompt":0,"n_gen":16,"samples_ts":[10.0,11.0]}"#;
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

    #[test]
    fn batched_rows_pair_only_with_the_same_sequences_and_prompt_sharing() {
        // A real schema-2 token row, made a batched one.
        let rows: Vec<Value> = serde_json::from_str(include_str!("../tests/data/schema-2.json")).unwrap();
        let row = |name: &str, n: u32| {
            let mut value = rows[1].clone();
            value["config"]["name"] = name.into();
            value["test"] = serde_json::json!({"kind": "pg", "n_prompt": 32, "n_gen": 8, "n_depth": 0,
                "parallel": {"n_sequences": n, "shared_prompt": name.ends_with("shared")}});
            velollm_entry(&value, 0).unwrap().test
        };
        let (x2, x4, x4_shared) = (row("pp32+tg8 x2", 2), row("pp32+tg8 x4", 4), row("pp32+tg8 x4 shared", 4));
        assert_eq!(x2.kind, BATCHED_KIND);
        assert!(x4.same_test(&row("pp32+tg8 x4", 4)));
        assert!(!x2.same_test(&x4) && !x4.same_test(&x4_shared));
        // Nor with llama-bench's single-sequence pp32+tg8.
        assert!(!x4.same_test(&TestId::of_tokens(32, 8, 0)));
    }

    #[test]
    fn load_rows_are_named_by_their_profile_and_pair_only_with_the_same_profile() {
        let rows: Vec<Value> = serde_json::from_str(include_str!("../tests/data/schema-2.json")).unwrap();
        let profile = |concurrency: u32| {
            serde_json::json!({"shape": {"mode": "closed", "concurrency": concurrency}, "stop": {"requests": 8},
                "warmup_requests": 1, "max_concurrency": 64, "seed": 1})
        };
        let token = |concurrency: u32| {
            let mut value = rows[1].clone();
            value["config"]["name"] = format!("whatever @ c{concurrency}").into();
            value["load"] = serde_json::json!({"profile": profile(concurrency)});
            velollm_entry(&value, 0).unwrap().test
        };
        let (c1, c4) = (token(1), token(4));
        assert_eq!(c4.name, format!("{} @ c4", TestId::of_tokens(c4.n_prompt, c4.n_gen, c4.n_depth).name));
        assert_eq!(c4.load_profile.as_deref(), Some("c4"));
        assert!(c4.same_test(&token(4)));
        assert!(!c1.same_test(&c4), "two profiles are two tests");
        let plain = TestId::of_tokens(c4.n_prompt, c4.n_gen, c4.n_depth);
        assert!(!c4.same_test(&plain) && !plain.same_test(&c4), "nor one request at a time");
        // A text test keeps its row's name, which already ends with the profile.
        let mut text = rows[0].clone();
        text["config"]["name"] = "short_completion @ c4".into();
        text["load"] = serde_json::json!({"profile": profile(4)});
        assert_eq!(velollm_entry(&text, 0).unwrap().test.name, "short_completion @ c4");
        // A load object without its profile is an error that says so.
        let mut broken = rows[1].clone();
        broken["load"] = serde_json::json!({});
        assert!(velollm_entry(&broken, 0).unwrap_err().contains("profile"));
    }

    #[test]
    fn a_load_rows_samples_are_its_finished_requests() {
        let rows: Vec<Value> = serde_json::from_str(include_str!("../tests/data/schema-2.json")).unwrap();
        let mut value = rows[0].clone();
        value["config"]["name"] = "short_completion @ c2".into();
        value["load"] = serde_json::json!({
            "profile": {"shape": {"mode": "closed", "concurrency": 2}, "stop": {"requests": 3},
                        "warmup_requests": 0, "max_concurrency": 64, "seed": 1},
            "requests": [
                // 20 ms to the first chunk, 120 ms in all, 11 tokens: 10 tokens in 0.1 s after the first.
                {"index": 0, "sent_ns": 0, "chunk_times_ns": [20_000_000, 120_000_000], "end_ns": 120_000_000,
                 "output_tokens": 11, "error": null},
                // One token: a TTFT and an E2E, no rate.
                {"index": 1, "sent_ns": 10_000_000, "chunk_times_ns": [40_000_000], "end_ns": 50_000_000,
                 "output_tokens": 1, "error": null},
                // Failed: in no sample.
                {"index": 2, "sent_ns": 0, "chunk_times_ns": [], "end_ns": 5_000_000, "error": "HTTP 503"}
            ]
        });
        let entry = velollm_entry(&value, 0).unwrap();
        assert_eq!(entry.samples[&Metric::TimeToFirstTokenMs], [20.0, 30.0]);
        assert_eq!(entry.samples[&Metric::TotalMs], [120.0, 40.0]);
        assert_eq!(entry.samples[&Metric::TokensPerSecond], [100.0]);
        assert!(!entry.samples.contains_key(&Metric::PromptTokensPerSecond));
        // A finished request without its times is an error that names the field.
        value["load"]["requests"][0].as_object_mut().unwrap().remove("end_ns");
        assert!(velollm_entry(&value, 0).unwrap_err().contains("`end_ns`"));
    }
}
