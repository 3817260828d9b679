//! Constructed result rows for tests: a row is described by its test, parameters and raw samples, and is built
//! by velollm-core's [`RowBuilder`], the runner's own, so a constructed row is what a run with those samples
//! would have written (statistics from core's formulas). What a run reads off the machine (environment, model
//! identity, effective parameters) is fixed, written as the JSON a run writes for it.

#![recursion_limit = "256"]

pub mod openai_standin;
pub mod scripted;

use serde_json::{json, Value};
use velollm_core::{
    BenchmarkConfig, BenchmarkResult, GenerationParams, GpuLayers, RawSample, RepetitionRecord, Repetitions, RowBase,
    RowBuilder, RowStatus, StopReason, StopRule, TestCase, TestKind, TokenTest,
};

/// A text request's sample: `prompt_tokens` evaluated in `prompt_ms`, the first token at `ttft_ms`, then one
/// token after each gap.
pub fn text_sample(prompt_tokens: u64, prompt_ms: f64, ttft_ms: f64, gaps_ms: &[f64]) -> RawSample {
    let ns = |ms: f64| (ms * 1e6).round() as u64;
    let mut times = vec![ns(ttft_ms)];
    let mut t = ttft_ms;
    for gap in gaps_ms {
        t += gap;
        times.push(ns(t));
    }
    RawSample {
        prompt_tokens,
        tokenize_ns: 20_000,
        prompt_eval_ns: ns(prompt_ms),
        token_ids: vec![42; times.len()],
        token_times_ns: times,
        stop_reason: StopReason::Length,
        eog_tokens: 0,
        engine_counters: None,
        server: None,
        test_ns: None,
        depth_tokens: 0,
        depth_prepare_ns: None,
        batched: None,
    }
}

/// A token test's sample (llama-bench's pp/tg/pg): `n_prompt` tokens evaluated in `prompt_ms`, then `n_gen`
/// tokens decoded `gap_ms` apart.
pub fn token_sample(n_prompt: u64, n_gen: u32, prompt_ms: f64, gap_ms: f64) -> RawSample {
    let ns = |ms: f64| (ms * 1e6).round() as u64;
    let times: Vec<u64> = (1..=u64::from(n_gen)).map(|i| ns(prompt_ms + gap_ms * i as f64)).collect();
    RawSample {
        prompt_tokens: n_prompt,
        tokenize_ns: 0,
        prompt_eval_ns: ns(prompt_ms),
        token_ids: vec![7; times.len()],
        test_ns: Some(times.last().copied().unwrap_or(ns(prompt_ms))),
        token_times_ns: times,
        stop_reason: StopReason::Length,
        eog_tokens: 0,
        engine_counters: None,
        server: None,
        depth_tokens: 0,
        depth_prepare_ns: None,
        batched: None,
    }
}

/// A token test whose repetitions ran at the given rates (tokens/s of the whole test).
pub fn token_samples_at(n_prompt: u64, n_gen: u32, rates: &[f64]) -> Vec<RawSample> {
    rates
        .iter()
        .map(|&rate| {
            let total_ms = (n_prompt + u64::from(n_gen)) as f64 / rate * 1000.0;
            let tokens = (n_prompt + u64::from(n_gen)) as f64;
            let per_token = total_ms / tokens;
            token_sample(n_prompt, n_gen, per_token * n_prompt as f64, per_token)
        })
        .collect()
}

/// Text samples whose decode rates are `rates` (tokens/s), `tokens` tokens each, with the given TTFT.
pub fn text_samples_at(rates: &[f64], tokens: usize, ttft_ms: f64) -> Vec<RawSample> {
    rates.iter().map(|&rate| text_sample(9, ttft_ms * 0.8, ttft_ms, &vec![1000.0 / rate; tokens - 1])).collect()
}

/// How a constructed row ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Ok,
    Incomplete(String),
    Failed(String),
}

/// A row to construct. Defaults: SmolLM2's identity, llama.cpp, 2 threads, llama-bench's other defaults.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub kind: TestKind,
    pub n_prompt: u64,
    pub n_gen: u32,
    pub n_depth: u32,
    pub prompt: String,
    pub backend: String,
    pub samples: Vec<RawSample>,
    pub ending: Ending,
    pub n_gpu_layers: GpuLayers,
    pub n_threads: u32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub flash_attn: String,
    pub model_name: String,
    pub model_path: String,
    pub model_sha256: Option<String>,
    pub parameter_count: u64,
    pub model_bytes: u64,
    pub n_layers_total: u32,
    pub timestamp: String,
    pub warnings: Vec<String>,
    pub backend_build: String,
}

pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

impl Row {
    fn base(name: &str, kind: TestKind) -> Row {
        Row {
            name: name.into(),
            kind,
            n_prompt: 0,
            n_gen: 0,
            n_depth: 0,
            prompt: String::new(),
            backend: "llamacpp".into(),
            samples: Vec::new(),
            ending: Ending::Ok,
            n_gpu_layers: GpuLayers::All,
            n_threads: 2,
            n_ctx: 2048,
            n_batch: 2048,
            n_ubatch: 512,
            flash_attn: "auto".into(),
            model_name: "SmolLM2 135M Instruct".into(),
            model_path: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            model_sha256: Some(SMOLLM2_SHA256.into()),
            parameter_count: 134_515_008,
            model_bytes: 98_362_432,
            n_layers_total: 31,
            timestamp: "2025-05-01T12:00:00Z".into(),
            warnings: Vec::new(),
            backend_build: "CPU : AVX2 = 1 | FMA = 1 |".into(),
        }
    }

    /// A text benchmark (the guide's suite or `--prompt`).
    pub fn text(name: &str, prompt: &str, max_tokens: u32, samples: Vec<RawSample>) -> Row {
        let n_prompt = samples.first().map_or(0, |s| s.prompt_tokens);
        Row { prompt: prompt.into(), n_prompt, n_gen: max_tokens, samples, ..Row::base(name, TestKind::Text) }
    }

    /// A llama-bench token test (`pp512`, `tg128`, `pp512+tg128`, with ` @ dN` for a depth).
    pub fn tokens(n_prompt: u64, n_gen: u32, n_depth: u32, samples: Vec<RawSample>) -> Row {
        let test = velollm_core::TokenTest::single(n_prompt as u32, n_gen, n_depth);
        Row { n_prompt, n_gen, n_depth, samples, ..Row::base(&test.name(), test.kind()) }
    }

    pub fn backend(mut self, backend: &str) -> Row {
        self.backend = backend.into();
        self
    }

    pub fn threads(mut self, n: u32) -> Row {
        self.n_threads = n;
        self
    }

    pub fn gpu_layers(mut self, layers: GpuLayers) -> Row {
        self.n_gpu_layers = layers;
        self
    }

    pub fn batch(mut self, n_batch: u32, n_ubatch: u32) -> Row {
        self.n_batch = n_batch;
        self.n_ubatch = n_ubatch;
        self
    }

    pub fn ctx(mut self, n_ctx: u32) -> Row {
        self.n_ctx = n_ctx;
        self
    }

    pub fn failed(mut self, error: &str) -> Row {
        self.ending = Ending::Failed(error.into());
        self.samples.clear();
        self
    }

    pub fn incomplete(mut self, error: &str) -> Row {
        self.ending = Ending::Incomplete(error.into());
        self
    }

    pub fn model(mut self, name: &str, path: &str, sha256: Option<&str>) -> Row {
        self.model_name = name.into();
        self.model_path = path.into();
        self.model_sha256 = sha256.map(str::to_string);
        self
    }

    pub fn warning(mut self, warning: &str) -> Row {
        self.warnings.push(warning.into());
        self
    }

    /// The row, as a run with these samples would have written it: built by velollm-core's [`RowBuilder`], the
    /// runner's own, from this machine-independent description.
    pub fn build(&self) -> BenchmarkResult {
        let failed = matches!(self.ending, Ending::Failed(_));
        let kept = self.samples.len() as u32;
        let (status, error, stopped_because) = match &self.ending {
            Ending::Ok => (RowStatus::Ok, None, StopRule::Count),
            Ending::Incomplete(e) => (RowStatus::Incomplete, Some(e.clone()), StopRule::Interrupted),
            Ending::Failed(e) => (RowStatus::Failed, Some(e.clone()), StopRule::Error),
        };
        // The repetitions asked for: those kept, one more for the one an incomplete row lost, five for a failure.
        let requested = match self.ending {
            Ending::Ok => kept,
            Ending::Incomplete(_) => kept + 1,
            Ending::Failed(_) => 5,
        };
        let test = match self.kind {
            TestKind::Text => TestCase::Text(BenchmarkConfig {
                name: self.name.clone(),
                model: self.model_path.clone(),
                prompt: self.prompt.clone(),
                max_tokens: self.n_gen,
                iterations: requested,
            }),
            _ => TestCase::Tokens {
                test: TokenTest::single(self.n_prompt as u32, self.n_gen, self.n_depth),
                repetitions: requested,
            },
        };
        let n_gpu_layers = match self.n_gpu_layers {
            GpuLayers::All => json!("all"),
            GpuLayers::Count(n) => json!(n),
        };
        let requested_params = json!({
            "n_gpu_layers": n_gpu_layers, "split_mode": "layer", "main_gpu": 0, "use_mmap": true,
            "n_ctx": self.n_ctx, "n_batch": self.n_batch, "n_ubatch": self.n_ubatch,
            "n_threads": self.n_threads, "flash_attn": self.flash_attn, "type_k": "f16", "type_v": "f16"
        });
        let effective = (!failed).then(|| {
            json!({
                "n_gpu_layers": 0, "n_layers_total": self.n_layers_total, "gpu_devices": [], "split_mode": "layer",
                "main_gpu": 0, "use_mmap": true,
                "model_buffers": [{"device": "CPU_Mapped", "kind": "model", "bytes": self.model_bytes - 1_788_582}],
                "n_ctx": self.n_ctx, "n_batch": self.n_batch.min(self.n_ctx), "n_ubatch": self.n_ubatch,
                "n_threads": self.n_threads, "flash_attn": if self.flash_attn == "auto" { "on" } else { &self.flash_attn },
                "type_k": "f16", "type_v": "f16",
                "context_buffers": [
                    {"device": "CPU", "kind": "kv_cache", "bytes": 47_185_920},
                    {"device": "CPU", "kind": "compute", "bytes": 109_859_308}
                ]
            })
        });
        let model = json!({
            "reference": self.model_path, "path": self.model_path, "bytes": self.model_bytes,
            "sha256": self.model_sha256, "architecture": "llama", "parameter_count": self.parameter_count,
            "quantization": "Q4_1", "name": self.model_name, "synthetic": false, "digest": null
        });
        let environment = json!({
            "velollm_version": "0.1.0", "velollm_git_commit": "c230a44ed7d1", "backend": self.backend,
            "backend_version": "llama.cpp (ggml 0.26.0)", "backend_build": self.backend_build,
            "cpu_model": "Intel(R) Xeon(R) Processor", "cpu_physical_cores": 2, "cpu_logical_cpus": 2,
            "ram_bytes": 25_276_510_208u64, "os": "Debian GNU/Linux 12 (bookworm) (x86_64)",
            "kernel": "6.1.0", "hostname": "bench-host"
        });
        let builder = RowBuilder {
            base: RowBase {
                backend: self.backend.clone(),
                model: from_json(model),
                environment: from_json(environment),
                load_ms: (!failed).then_some(90.5),
                context_ms: (!failed).then_some(26.25),
                effective: effective.map(from_json),
                server: None,
                warnings: Vec::new(),
            },
            requested: from_json(requested_params),
            test,
            model_reference: self.model_path.clone(),
            repetitions: Repetitions::Fixed,
            generation: GenerationParams::default(),
            warmup_iterations: 1,
            hardware: None,
            busy_machine: None,
            interleaved: None,
        };
        // The record a fixed-count run writes, without the interval and outliers the runner's record adds
        // (`builder.record(…)`): the golden files of the exporters were written from rows without them, and a
        // row's statistics already hold the interval.
        let record = RepetitionRecord {
            ci_half_width_percent: None,
            outliers: None,
            ..builder.record(stopped_because, &self.samples, None)
        };
        let generated_text = (self.kind == TestKind::Text && !failed).then(|| "Hello!".to_string());
        let mut row = builder.row(self.samples.clone(), Vec::new(), status, error, Some(record), generated_text);
        row.timestamp = self.timestamp.clone();
        row.startup_to_first_timed_iteration_ms = (!failed).then_some(625.0);
        row.warnings.extend(self.warnings.iter().cloned());
        row
    }

    /// The row as JSON (what `-o results.json` holds for it).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.build()).expect("a constructed row serialises")
    }
}

/// A value of a row's field, from the JSON a run writes for it.
fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a constructed field deserialises")
}

/// Rows as the guide's JSON array.
pub fn json_array(rows: &[Row]) -> String {
    let values: Vec<Value> = rows.iter().map(Row::to_json).collect();
    serde_json::to_string_pretty(&values).expect("rows serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructed_rows_have_the_asked_rates() {
        let row = Row::tokens(0, 128, 0, token_samples_at(0, 128, &[100.0, 50.0])).build();
        assert_eq!(row.config.name, "tg128");
        let ts = &row.samples_ts;
        assert!((ts[0] - 100.0).abs() < 1e-6 && (ts[1] - 50.0).abs() < 1e-6, "{ts:?}");
        let row = Row::text("short", "Hi", 5, text_samples_at(&[40.0, 50.0], 5, 20.0)).build();
        let rates: Vec<f64> = row.samples.iter().filter_map(|s| s.metrics.tokens_per_second).collect();
        assert!((rates[0] - 40.0).abs() < 1e-3 && (rates[1] - 50.0).abs() < 1e-3, "{rates:?}");
        assert_eq!(row.time_to_first_token_ms.value(), Some(20.0));
        let failed = Row::tokens(512, 0, 0, vec![]).failed("no memory").build();
        assert_eq!(failed.error.as_deref(), Some("no memory"));
        assert!(failed.parameters.effective.is_none());
    }
}
