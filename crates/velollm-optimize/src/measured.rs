//! `--from`: the fastest configuration among measured result rows.
//!
//! Rows are read as plain JSON (`serde_json::Value`), by the field names of the result-row layout
//! (schema version 2), so this crate does not depend on the runner's Rust types. Only rows with
//! `status == "ok"` count, and only those whose recorded peak memory (`telemetry`) fits this machine.

use std::path::Path;

use serde_json::Value;
use velollm_core::HardwareInfo;

use crate::{GpuLayers, OptimizeError};

/// The settings of one measured row that optimize can recommend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeasuredParams {
    pub backend: Option<String>,
    pub threads: Option<u32>,
    pub gpu_layers: Option<GpuLayers>,
    pub n_ctx: Option<u32>,
    pub batch: Option<u32>,
    pub ubatch: Option<u32>,
    /// `on` or `off` (as the engine resolved it), else as requested (`auto`).
    pub flash_attn: Option<String>,
    pub type_k: Option<String>,
    pub type_v: Option<String>,
}

fn u32_at(value: &Value, pointer: &str) -> Option<u32> {
    value.pointer(pointer)?.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer)?.as_str()
}

impl MeasuredParams {
    /// Reads `parameters.effective` (what the engine did) before `parameters.requested`.
    pub fn from_row(row: &Value) -> MeasuredParams {
        let pick = |field: &str| {
            u32_at(row, &format!("/parameters/effective/{field}"))
                .or_else(|| u32_at(row, &format!("/parameters/requested/{field}")))
        };
        let pick_str = |field: &str| {
            str_at(row, &format!("/parameters/effective/{field}"))
                .or_else(|| str_at(row, &format!("/parameters/requested/{field}")))
                .map(str::to_string)
        };
        MeasuredParams {
            backend: str_at(row, "/backend").map(str::to_string),
            threads: pick("n_threads"),
            gpu_layers: gpu_layers(row),
            n_ctx: pick("n_ctx"),
            batch: pick("n_batch"),
            ubatch: pick("n_ubatch"),
            flash_attn: pick_str("flash_attn"),
            type_k: pick_str("type_k"),
            type_v: pick_str("type_v"),
        }
    }

    /// `name value` for every setting that differs from `other`.
    pub fn differences(&self, other: &MeasuredParams) -> Vec<String> {
        let mut out = Vec::new();
        let mut compare = |name: &str, mine: Option<String>, theirs: Option<String>| {
            if mine != theirs {
                out.push(format!("{name} {}", theirs.unwrap_or_else(|| "n/a".to_string())));
            }
        };
        let text = |v: Option<u32>| v.map(|v| v.to_string());
        compare("threads", text(self.threads), text(other.threads));
        compare("GPU layers", self.gpu_layers.map(|g| g.to_string()), other.gpu_layers.map(|g| g.to_string()));
        compare("batch", text(self.batch), text(other.batch));
        compare("ubatch", text(self.ubatch), text(other.ubatch));
        compare("flash attention", self.flash_attn.clone(), other.flash_attn.clone());
        compare("K cache", self.type_k.clone(), other.type_k.clone());
        compare("V cache", self.type_v.clone(), other.type_v.clone());
        compare("context", text(self.n_ctx), text(other.n_ctx));
        compare("backend", self.backend.clone(), other.backend.clone());
        out
    }
}

/// `requested.n_gpu_layers` as the user would pass it again (`"all"` or a count; a count at or above the
/// model's layer count is all). A row whose engine offloaded nothing although layers were requested (a CPU-only
/// build), or whose engine saw no GPU at all, says nothing about GPU layers: there `-ngl 0` and `-ngl all` ran
/// the same way, and whichever was faster was faster by noise.
fn gpu_layers(row: &Value) -> Option<GpuLayers> {
    if engine_saw_no_gpu(row) {
        return None;
    }
    let effective = u32_at(row, "/parameters/effective/n_gpu_layers");
    let total = u32_at(row, "/parameters/effective/n_layers_total");
    let requested = row.pointer("/parameters/requested/n_gpu_layers");
    let requested = match requested {
        Some(Value::String(s)) if s == "all" => Some(GpuLayers::All),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).map(|n| match total {
            Some(total) if n >= total => GpuLayers::All,
            _ => GpuLayers::Count(n),
        }),
        None => None,
    };
    match (requested, effective) {
        (Some(GpuLayers::Count(0)), _) => Some(GpuLayers::Count(0)),
        (Some(_), Some(0)) => None,
        (Some(layers), _) => Some(layers),
        (None, Some(n)) => Some(match total {
            Some(total) if n >= total => GpuLayers::All,
            _ => GpuLayers::Count(n),
        }),
        (None, None) => None,
    }
}

/// The fastest row of one test, and what came second.
#[derive(Debug, Clone, PartialEq)]
pub struct BestRow {
    /// The test's name (`tg128`, `pp512`, `short_completion`).
    pub test: String,
    pub tokens_per_second: f64,
    /// The spread of the best token test's repetitions (`statistics.tokens_per_second.stddev`; llama-bench's
    /// `stddev_ts`), when recorded.
    pub stddev: Option<f64>,
    pub params: MeasuredParams,
    /// The fastest row with other settings: its rate and how its settings differ.
    pub runner_up: Option<(f64, Vec<String>)>,
    /// Rows of this test that were compared.
    pub candidates: usize,
}

/// What the results say.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The files read.
    pub source: String,
    /// The model the rows measured.
    pub model: Option<String>,
    pub rows: usize,
    /// Rows with `status == "ok"`, of the model, within this machine's memory.
    pub eligible_rows: usize,
    /// The fastest decode (`tg` and text tests).
    pub decode: Option<BestRow>,
    /// The fastest prompt processing (`pp` tests).
    pub prompt: Option<BestRow>,
}

/// Result rows from a JSON array (`-o x.json`), a single row, or JSON Lines (`-o x.jsonl`), read and checked by
/// velollm-results (every field a row's schema version requires is there), as the rows were written.
pub fn read_results(path: &Path) -> Result<Vec<Value>, OptimizeError> {
    let run = velollm_results::read_file(path)
        .map_err(|e| OptimizeError::Read { path: e.path.clone(), reason: e.reason.clone() })?;
    Ok(run.entries.into_iter().map(|entry| entry.source).collect())
}

/// How a row names its model: `model.reference`, else `config.model`.
fn model_name(row: &Value) -> Option<String> {
    str_at(row, "/model/reference").or_else(|| str_at(row, "/config/model")).map(str::to_string)
}

/// One model identity per file: the sha256 when recorded, else the path, else the name.
fn model_identity(row: &Value) -> Option<String> {
    str_at(row, "/model/sha256").or_else(|| str_at(row, "/model/path")).map(str::to_string).or_else(|| model_name(row))
}

fn matches_model(row: &Value, wanted: &str) -> bool {
    let file_name = |p: &str| Path::new(p).file_name().map(|f| f.to_string_lossy().into_owned());
    [
        str_at(row, "/model/reference"),
        str_at(row, "/config/model"),
        str_at(row, "/model/name"),
        str_at(row, "/model/path"),
    ]
    .into_iter()
    .flatten()
    .any(|name| name == wanted || (file_name(name).is_some() && file_name(name) == file_name(wanted)))
}

/// Whether the row's hardware snapshot lists the devices its engine saw and none of them is a GPU. A row
/// without the snapshot (`--no-telemetry`, older results) is not taken as CPU-only.
fn engine_saw_no_gpu(row: &Value) -> bool {
    row.pointer("/hardware/engine_devices")
        .and_then(Value::as_array)
        .is_some_and(|devices| !devices.iter().any(|d| matches!(d["kind"].as_str(), Some("gpu" | "igpu"))))
}

/// Whether the row's recorded peak memory fits this machine (rows without telemetry are taken as measured here).
fn fits_machine(row: &Value, hardware: &HardwareInfo) -> bool {
    let largest_vram = hardware.gpus.iter().filter_map(|g| g.vram_total_bytes).max();
    let peak_vram = row
        .pointer("/telemetry/gpus")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g["peak_vram_used_bytes"].as_u64())
        .max();
    let offloaded = u32_at(row, "/parameters/effective/n_gpu_layers").is_some_and(|n| n > 0);
    let vram_ok = match (peak_vram, largest_vram) {
        (Some(peak), Some(vram)) => peak <= vram,
        // GPU layers measured elsewhere cannot run on a machine without a GPU.
        (_, None) => !offloaded,
        (None, Some(_)) => true,
    };
    let rss_ok = match (u64_at(row, "/telemetry/peak_rss_bytes"), hardware.memory.total_bytes) {
        (Some(peak), Some(total)) => peak <= total,
        _ => true,
    };
    vram_ok && rss_ok
}

fn u64_at(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer)?.as_u64()
}

fn test_kind(row: &Value) -> &str {
    // Rows without a `test` object are the guide's text benchmarks.
    str_at(row, "/test/kind").unwrap_or("text")
}

fn test_name(row: &Value) -> String {
    str_at(row, "/config/name").unwrap_or("unnamed").to_string()
}

/// The fastest row among `rows` of the test with the most rows (the sweep's main test).
fn best_of(rows: &[&Value]) -> Option<BestRow> {
    let mut by_test: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
    for row in rows.iter().filter(|r| r["tokens_per_second"].as_f64().is_some_and(f64::is_finite)) {
        by_test.entry(test_name(row)).or_default().push(row);
    }
    // Most rows first; equal counts by name, so the choice is deterministic.
    let (test, rows) = by_test.into_iter().max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))?;
    let rate = |row: &Value| row["tokens_per_second"].as_f64().unwrap_or(0.0);
    let best = rows.iter().copied().max_by(|a, b| rate(a).total_cmp(&rate(b)))?;
    let params = MeasuredParams::from_row(best);
    let runner_up = rows
        .iter()
        .copied()
        .filter(|row| MeasuredParams::from_row(row) != params)
        .max_by(|a, b| rate(a).total_cmp(&rate(b)))
        .map(|row| (rate(row), params.differences(&MeasuredParams::from_row(row))));
    Some(BestRow {
        test,
        tokens_per_second: rate(best),
        stddev: best
            .pointer("/statistics/tokens_per_second/stddev")
            .and_then(Value::as_f64)
            .filter(|_| test_kind(best) != "text"),
        params,
        runner_up,
        candidates: rows.len(),
    })
}

/// The measured best of `rows` for `model` (any model when the rows hold only one).
pub fn best_from_rows(
    rows: &[Value],
    model: Option<&str>,
    hardware: &HardwareInfo,
    source: &str,
) -> Result<Measured, OptimizeError> {
    let ok: Vec<&Value> = rows.iter().filter(|r| r["status"].as_str() == Some("ok")).collect();
    if ok.is_empty() {
        return Err(OptimizeError::Results(format!(
            "{source}: none of its {} rows has status \"ok\" (rows written by velollm benchmark, schema version 2)",
            rows.len()
        )));
    }
    let of_model: Vec<&Value> = match model {
        Some(wanted) => {
            let selected: Vec<&Value> = ok.iter().copied().filter(|r| matches_model(r, wanted)).collect();
            if selected.is_empty() {
                return Err(OptimizeError::Results(format!("{source}: no ok rows for model '{wanted}'")));
            }
            selected
        }
        None => {
            let mut identities: Vec<String> = ok.iter().filter_map(|r| model_identity(r)).collect();
            identities.sort();
            identities.dedup();
            if identities.len() > 1 {
                let mut names: Vec<String> = ok.iter().filter_map(|r| model_name(r)).collect();
                names.sort();
                names.dedup();
                return Err(OptimizeError::Results(format!(
                    "{source}: the rows measure {} models ({}); choose one with -m",
                    identities.len(),
                    names.join(", ")
                )));
            }
            ok
        }
    };
    let eligible: Vec<&Value> = of_model.into_iter().filter(|r| fits_machine(r, hardware)).collect();
    let decode: Vec<&Value> = eligible.iter().copied().filter(|r| matches!(test_kind(r), "tg" | "text")).collect();
    let prompt: Vec<&Value> = eligible.iter().copied().filter(|r| test_kind(r) == "pp").collect();
    Ok(Measured {
        source: source.to_string(),
        model: model.map(str::to_string).or_else(|| eligible.first().and_then(|r| model_name(r))),
        rows: rows.len(),
        eligible_rows: eligible.len(),
        decode: best_of(&decode),
        prompt: best_of(&prompt),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use velollm_core::{GpuInfo, GpuSource, GpuVendor};

    use super::*;

    /// A row in the schema-2 layout with the fields optimize reads and the reader requires.
    #[allow(clippy::too_many_arguments)]
    fn row(kind: &str, name: &str, tps: f64, threads: u32, ngl: Value, fa: &str, batch: u32, ubatch: u32) -> Value {
        json!({
            "schema_version": 2,
            "config": {"name": name, "model": "smollm2-135m", "prompt": "", "max_tokens": 128, "iterations": 5},
            "samples": [],
            "samples_ts": [],
            "tokens_per_second": tps,
            "statistics": {"tokens_per_second": {"n": 5, "mean": tps, "stddev": 0.5}},
            "status": "ok",
            "backend": "llamacpp",
            "test": {"kind": kind, "n_prompt": 0, "n_gen": 128, "n_depth": 0},
            "model": {"reference": "smollm2-135m", "path": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "ab"},
            "parameters": {
                "requested": {"n_gpu_layers": ngl, "n_ctx": 2048, "n_batch": batch, "n_ubatch": ubatch,
                              "n_threads": threads, "flash_attn": fa, "type_k": "f16", "type_v": "f16"},
                "effective": {"n_gpu_layers": 0, "n_layers_total": 30, "n_ctx": 2048, "n_batch": batch,
                              "n_ubatch": ubatch, "n_threads": threads, "flash_attn": fa,
                              "type_k": "f16", "type_v": "f16"}
            }
        })
    }

    fn cpu_machine() -> HardwareInfo {
        HardwareInfo::default()
    }

    fn sweep() -> Vec<Value> {
        vec![
            row("tg", "tg128", 40.0, 1, json!(0), "off", 2048, 512),
            row("tg", "tg128", 71.5, 2, json!(0), "off", 2048, 512),
            row("tg", "tg128", 69.0, 2, json!(0), "on", 2048, 512),
            row("tg", "tg128 @ d4096", 90.0, 4, json!(0), "on", 2048, 512), // another test: not compared
            row("pp", "pp512", 300.0, 2, json!(0), "off", 2048, 256),
            row("pp", "pp512", 350.0, 2, json!(0), "off", 2048, 512),
            {
                let mut failed = row("tg", "tg128", 500.0, 8, json!(0), "off", 2048, 512);
                failed["status"] = json!("failed");
                failed
            },
        ]
    }

    #[test]
    fn picks_the_measured_best_of_the_main_test() {
        let m = best_from_rows(&sweep(), None, &cpu_machine(), "sweep.jsonl").unwrap();
        let decode = m.decode.unwrap();
        assert_eq!(decode.test, "tg128");
        assert_eq!(decode.tokens_per_second, 71.5);
        assert_eq!(decode.candidates, 3);
        assert_eq!(decode.params.threads, Some(2));
        assert_eq!(decode.params.flash_attn.as_deref(), Some("off"));
        assert_eq!(decode.params.gpu_layers, Some(GpuLayers::Count(0)));
        let (rate, differences) = decode.runner_up.unwrap();
        assert_eq!(rate, 69.0);
        assert_eq!(differences, vec!["flash attention on"]);
        let prompt = m.prompt.unwrap();
        assert_eq!((prompt.params.batch, prompt.params.ubatch), (Some(2048), Some(512)));
        assert_eq!(m.eligible_rows, 6);
        assert_eq!(m.rows, 7);
        assert_eq!(m.model.as_deref(), Some("smollm2-135m"));
    }

    #[test]
    fn rows_that_do_not_fit_this_machine_are_left_out() {
        let mut rows = sweep();
        // The fastest decode row needed 30 GB of VRAM; this machine's GPU has 24.
        rows[1]["telemetry"] = json!({"gpus": [{"index": 0, "peak_vram_used_bytes": 30_000_000_000u64}]});
        let mut gpu = GpuInfo::new(0, GpuVendor::Nvidia, GpuSource::Nvml);
        gpu.vram_total_bytes = Some(24_564 << 20);
        let hw = HardwareInfo { gpus: vec![gpu], ..HardwareInfo::default() };
        let m = best_from_rows(&rows, None, &hw, "x").unwrap();
        assert_eq!(m.decode.unwrap().tokens_per_second, 69.0);
        // GPU-offloaded rows are not for a machine without a GPU.
        let mut offloaded = sweep();
        offloaded[2]["parameters"]["effective"]["n_gpu_layers"] = json!(30);
        let m = best_from_rows(&offloaded, None, &cpu_machine(), "x").unwrap();
        assert_eq!(m.eligible_rows, 5);
    }

    #[test]
    fn several_models_need_a_choice() {
        let mut rows = sweep();
        rows[0]["model"] = json!({"reference": "gemma3-270m", "path": "models/gemma.gguf", "sha256": "cd"});
        let error = best_from_rows(&rows, None, &cpu_machine(), "x").unwrap_err().to_string();
        assert!(error.contains("2 models") && error.contains("-m"), "{error}");
        let m = best_from_rows(&rows, Some("gemma3-270m"), &cpu_machine(), "x").unwrap();
        assert_eq!(m.decode.unwrap().tokens_per_second, 40.0);
        let m = best_from_rows(&rows, Some("SmolLM2-135M-Instruct.Q4_1.gguf"), &cpu_machine(), "x").unwrap();
        assert_eq!(m.decode.unwrap().tokens_per_second, 71.5);
        assert!(best_from_rows(&rows, Some("nope"), &cpu_machine(), "x").is_err());
    }

    #[test]
    fn no_ok_rows_is_a_clear_error() {
        let mut rows = sweep();
        for r in &mut rows {
            r["status"] = json!("failed");
        }
        let error = best_from_rows(&rows, None, &cpu_machine(), "x").unwrap_err().to_string();
        assert!(error.contains("status \"ok\""), "{error}");
    }

    #[test]
    fn gpu_layers_read_as_the_user_would_pass_them() {
        let mut r = row("tg", "tg128", 1.0, 1, json!("all"), "on", 1, 1);
        r["parameters"]["effective"]["n_gpu_layers"] = json!(30);
        assert_eq!(gpu_layers(&r), Some(GpuLayers::All));
        r["parameters"]["requested"]["n_gpu_layers"] = json!(99);
        assert_eq!(gpu_layers(&r), Some(GpuLayers::All));
        r["parameters"]["requested"]["n_gpu_layers"] = json!(20);
        r["parameters"]["effective"]["n_gpu_layers"] = json!(20);
        assert_eq!(gpu_layers(&r), Some(GpuLayers::Count(20)));
        // A CPU-only build offloaded nothing: the row says nothing about GPU layers.
        r["parameters"]["effective"]["n_gpu_layers"] = json!(0);
        assert_eq!(gpu_layers(&r), None);
    }

    #[test]
    fn rows_whose_engine_saw_no_gpu_say_nothing_about_gpu_layers() {
        let cpu = json!([{"engine": "llamacpp", "backend": "CPU", "kind": "cpu"}]);
        let gpu = json!([{"engine": "llamacpp", "backend": "CPU", "kind": "cpu"},
                         {"engine": "llamacpp", "backend": "CUDA", "kind": "gpu"}]);
        // On a CPU-only machine -ngl 0 and -ngl all ran alike: the faster one (by noise) must not decide num_gpu.
        let mut rows = vec![
            row("tg", "tg128", 94.6, 2, json!(0), "on", 2048, 512),
            row("tg", "tg128", 89.6, 2, json!("all"), "on", 2048, 512),
        ];
        for r in &mut rows {
            r["hardware"] = json!({"engine_devices": cpu.clone()});
        }
        let decode = best_from_rows(&rows, None, &cpu_machine(), "x").unwrap().decode.unwrap();
        assert_eq!(decode.params.gpu_layers, None);
        assert!(decode.runner_up.is_none(), "both rows ran the same configuration: {:?}", decode.runner_up);
        // Where the engine saw a GPU, -ngl 0 is a real choice (keep the model on the CPU).
        let mut r = row("tg", "tg128", 1.0, 1, json!(0), "on", 1, 1);
        r["hardware"] = json!({"engine_devices": gpu});
        assert_eq!(gpu_layers(&r), Some(GpuLayers::Count(0)));
        r["hardware"] = json!({"engine_devices": cpu});
        assert_eq!(gpu_layers(&r), None);
    }

    #[test]
    fn reads_arrays_lines_and_single_rows() {
        let dir = std::env::temp_dir().join(format!("velollm-optimize-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = sweep();
        let array = dir.join("a.json");
        std::fs::write(&array, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
        assert_eq!(read_results(&array).unwrap().len(), 7);
        let lines = dir.join("a.jsonl");
        let text: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        std::fs::write(&lines, format!("\n{text}\n")).unwrap();
        assert_eq!(read_results(&lines).unwrap().len(), 7);
        let single = dir.join("one.json");
        std::fs::write(&single, serde_json::to_string_pretty(&rows[0]).unwrap()).unwrap();
        assert_eq!(read_results(&single).unwrap().len(), 1);
        let broken = dir.join("broken.jsonl");
        // A broken line before the last is an error; a cut last line (a run stopped while writing it) is skipped.
        let first = serde_json::to_string(&rows[0]).unwrap();
        std::fs::write(&broken, format!("{first}\n{{ nope\n{first}\n")).unwrap();
        assert!(read_results(&broken).unwrap_err().to_string().contains("line 2"));
        std::fs::write(&broken, format!("{first}\n{{ nope\n")).unwrap();
        assert_eq!(read_results(&broken).unwrap().len(), 1);
        let empty = dir.join("empty.jsonl");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_results(&empty).unwrap_err().to_string().contains("holds no result rows"));
        assert!(matches!(read_results(&dir.join("missing.json")), Err(OptimizeError::Read { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
