//! `velollm benchmark`'s arguments, and their checks: every value is read and range-checked before anything
//! slow happens, with a one-line error naming the flag and what is allowed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use velollm_benchmarks::{
    standard_suite, AutoRepetitions, BenchmarkConfig, ExplicitEngineParams, FlashAttention, GpuLayers, KvCacheType,
    Repetitions, SplitMode, SweepSpec, TestCase, TokenTest,
};
use velollm_core::{DeviceSelection, Parallel, TensorSplit, MAX_PARALLEL_SEQUENCES};
use velollm_models::default_model_for;

use velollm_export::Format;

use crate::range::{parse_u32_list, parse_u32_list_with_word, parse_value_list};
use crate::UsageError;

fn parse_format(name: &str) -> Result<Format, String> {
    Format::of_name(name).ok_or_else(|| format!("unknown format '{name}' (known: md, csv, json, jsonl, sql)"))
}

/// The largest context accepted (tokens). Beyond it a value is a typo, not a model.
pub const MAX_CTX: u32 = 1 << 20;
pub const MAX_THREADS: u32 = 1024;
pub const MAX_ITERATIONS: u32 = 10_000;
pub const MAX_WARMUP: u32 = 1_000;
pub const MAX_LAYERS: u32 = 100_000;
pub const MAX_GPUS: u32 = 255;
/// Default logical batch (llama-bench's): clamped by the engine to the context, the row records the result.
pub const DEFAULT_BATCH: u32 = 2048;
pub const DEFAULT_UBATCH: u32 = 512;
pub const DEFAULT_CTX: u32 = 2048;
/// llama-bench's default repetition count for its tests.
pub const DEFAULT_TOKEN_REPETITIONS: u32 = 5;

#[derive(Args)]
pub struct BenchmarkArgs {
    /// Model(s), comma-separated: GGUF files, known model names (models/manifest.tsv), Ollama names
    /// (llama3.2:3b or ollama:NAME; in-process backends read them from Ollama's model store) or
    /// hf:ORG/REPO/FILE.gguf[@REV]. Default: llama3.2:3b when the ollama backend is used, else smollm2-135m.
    #[arg(short, long, value_name = "LIST")]
    pub model: Option<String>,
    /// Save results; the format follows the extension: .json (the guide's array) or .md (llama-bench's table),
    /// rewritten after each row; .jsonl, .csv or .sql (for sqlite3), appended as each row finishes. Repeat for
    /// several files.
    #[arg(short, long, value_name = "FILE")]
    pub output: Vec<PathBuf>,
    /// Print the results on stdout in this format: md, csv, json, jsonl or sql (jsonl, csv and sql a row as
    /// each finishes, the others at the end). The progress and the summary then go to stderr.
    #[arg(long, value_name = "FMT", value_parser = parse_format)]
    pub format: Option<Format>,
    /// Backend(s), comma-separated: auto (llamacpp when compiled in, else candle), llamacpp (in-process
    /// llama.cpp), candle (in-process, pure Rust) or ollama (a running Ollama server). Several run in turn on
    /// the same model and are compared. Results record the backend that ran.
    #[arg(short, long, value_name = "LIST", default_value = velollm_benchmarks::AUTO_BACKEND)]
    pub backend: String,
    /// Ollama's address (default: OLLAMA_HOST, else http://localhost:11434).
    #[arg(long)]
    pub ollama_url: Option<String>,
    /// Seconds to wait for a connection to Ollama.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ollama_connect_timeout: u64,
    /// Seconds to wait for the next bytes of an Ollama response before giving up.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub ollama_idle_timeout: u64,
    /// Seconds to wait for Ollama to load the model (untimed).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub ollama_load_timeout: u64,
    /// Leave the model loaded in Ollama after the run (default: unload it with keep_alive 0).
    #[arg(long)]
    pub keep_loaded: bool,
    /// -b openai: the server's OpenAI API base, e.g. http://127.0.0.1:8000/v1 (llama-server, llama-cpp-python,
    /// vLLM, SGLang, TGI, LM Studio, Ollama's /v1). -m names a model id the server lists at /v1/models.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// -b openai: the environment variable that holds the API key (the key itself is never printed or saved).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// -b openai: chat (/v1/chat/completions, the server's chat template) or completions (/v1/completions).
    #[arg(long, value_name = "API", default_value = "chat", value_parser = ["chat", "completions"])]
    pub endpoint: String,

    /// Load profile (server backends): closed loop with N requests in flight, a list (1,4,16); one row each.
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub concurrency: Option<String>,
    /// Load profile (server backends): open loop, Poisson arrivals at R requests/s, a list; `inf` sends every
    /// request at once (up to --max-concurrency in flight).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub request_rate: Option<String>,
    /// Open loop: gamma shape of the gaps between arrivals (1 = Poisson; below 1 burstier, above 1 steadier).
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    pub burstiness: String,
    /// Timed requests per load profile (default 32).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub requests: Option<String>,
    /// Issue requests for this long per load profile instead of a count (e.g. 30s, 2m); those in flight finish.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// Open loop: the most requests in flight (arrivals beyond it wait; their lag is recorded).
    #[arg(long, value_name = "N", default_value = "256", allow_hyphen_values = true)]
    pub max_concurrency: String,
    /// Goodput: the bounds a request must meet, e.g. ttft=500ms,tpot=50ms,e2e=10s.
    #[arg(long, value_name = "BOUNDS")]
    pub slo: Option<String>,
    /// Fraction of requests that must meet --slo for a rate to count as meeting it (--sweep's verdict).
    #[arg(long, value_name = "FRACTION", default_value = "0.9", allow_hyphen_values = true)]
    pub slo_attainment: String,
    /// Find the saturation point: one request at a time, then all at once, then K Poisson rates between
    /// (default 5); with --slo, the highest rate meeting it.
    #[arg(long, value_name = "K", num_args = 0..=1, default_missing_value = "5")]
    pub sweep: Option<String>,

    /// Timed iterations per text benchmark (default: the suite's own, 5/3/3; 5 for --prompt).
    #[arg(long, allow_hyphen_values = true)]
    pub iterations: Option<String>,
    /// Untimed warm-up iterations before each test.
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    pub warmup: String,
    /// Tokens to generate per text iteration (default: the suite's own, 50/150/200; 100 for --prompt).
    #[arg(long, allow_hyphen_values = true)]
    pub max_tokens: Option<String>,
    /// Run one custom text benchmark with this prompt instead of the standard suite.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Also run the guide's standard suite when llama-bench tests (--pp/--tg/--pg) are given.
    #[arg(long)]
    pub suite: bool,
    /// Seed recorded with the results; it also draws the random token ids of --pp/--tg/--pg tests.
    #[arg(long, default_value_t = 42)]
    pub seed: u32,
    /// Let an end-of-generation token end an iteration early (default: always generate max tokens).
    #[arg(long)]
    pub stop_at_eos: bool,

    /// llama-bench test: prompt processing of N random tokens (list or range, e.g. 512 or 128-1024*2).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub pp: Option<String>,
    /// llama-bench test: generation of N tokens, one at a time (list or range).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub tg: Option<String>,
    /// llama-bench test: P prompt tokens then T generated, timed together (`--pg 512,128`; repeatable).
    #[arg(long, value_name = "P,T", allow_hyphen_values = true)]
    pub pg: Vec<String>,
    /// llama-batched-bench's test (also -npl): B sequences decoded together, one batch per step, for every
    /// --pp × --tg (and --pg) pair and every B in the list (e.g. 1,2,4,8; each 1–256). llama.cpp only.
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub parallel: Option<String>,
    /// With --parallel: one prompt evaluated once and copied to every sequence (batched-bench's -pps).
    #[arg(long)]
    pub shared_prompt: bool,
    /// KV cache depth: tokens put in the cache before each llama-bench test, outside the timed region (list).
    #[arg(long, short = 'd', value_name = "LIST", allow_hyphen_values = true)]
    pub depth: Option<String>,
    /// Repetitions of each llama-bench test (default 5), or `auto`: repeat every test until the 95 % CI of its
    /// rate is within --target-ci per cent, or --max-time passes.
    #[arg(long, short = 'r', allow_hyphen_values = true)]
    pub repetitions: Option<String>,
    /// With --repetitions auto (implied): the 95 % CI half-width to reach, in per cent of the mean (default 2).
    #[arg(long, value_name = "PCT", allow_hyphen_values = true)]
    pub target_ci: Option<String>,
    /// With --repetitions auto: seconds of timed work per test before giving up on the target (default 60).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub max_time: Option<String>,
    /// With --repetitions auto: repetitions before the CI is first checked (default 20; docs/metrics.md).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub min_repetitions: Option<String>,
    /// With --repetitions auto: seconds of timed work before the CI is first checked (default 3).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub min_time: Option<String>,
    /// Run the combinations of a sweep round-robin, one repetition of each in turn (models stay loaded side
    /// by side); rows of the run pair by repetition for `velollm compare`.
    #[arg(long)]
    pub interleave: bool,

    /// Engine threads, a list or range (default: the physical core count).
    #[arg(short, long, value_name = "LIST", allow_hyphen_values = true)]
    pub threads: Option<String>,
    /// Layers to offload to the GPU, a list or range, or `all` (also -ngl; default all; Ollama: sent as
    /// num_gpu only when given).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub n_gpu_layers: Option<String>,
    /// How a model is split across GPUs: none, layer or row (list).
    #[arg(long, value_name = "LIST", default_value = "layer")]
    pub split_mode: String,
    /// ggml RPC servers to offload layers to (`velollm rpc-server` on this or another host, the same velollm
    /// build): HOST:PORT, comma-separated. Each becomes a device (RPC0, RPC1, … in this order); every endpoint
    /// is contacted before any benchmark.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub rpc: Option<String>,
    /// Devices offloaded layers may go to (also -dev): auto (every GPU and RPC device), none (CPU only) or
    /// names joined by '/' (RPC0/RPC1, CUDA0); a comma list sweeps them.
    #[arg(long, value_name = "LIST", default_value = "auto")]
    pub device: String,
    /// How offloaded layers are shared between devices (also -ts): proportions joined by '/' in device order
    /// (3/1), or auto (in proportion to each device's free memory); a comma list sweeps them.
    #[arg(long, value_name = "LIST", default_value = "auto")]
    pub tensor_split: String,
    /// The GPU used with --split-mode none (list).
    #[arg(long, value_name = "LIST", default_value = "0", allow_hyphen_values = true)]
    pub main_gpu: String,
    /// Context size in tokens (list or range). Default: as llama-bench, each --pp/--tg/--pg test gets exactly
    /// the tokens it uses (n_prompt + n_gen + n_depth; recorded in the row), text tests 2048.
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub ctx_size: Option<String>,
    /// Logical batch size for prompt evaluation (list or range; default 2048, clamped to the context;
    /// Ollama: sent as num_batch only when given).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub batch_size: Option<String>,
    /// Physical batch size (list or range; default 512).
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    pub ubatch_size: Option<String>,
    /// Flash attention: auto, on or off (list).
    #[arg(long, value_name = "LIST", default_value = "auto")]
    pub flash_attn: String,
    /// K cache type: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (list).
    #[arg(long, value_name = "LIST", default_value = "f16")]
    pub cache_type_k: String,
    /// V cache type (list; a quantized V cache needs flash attention).
    #[arg(long, value_name = "LIST", default_value = "f16")]
    pub cache_type_v: String,
    /// Read the model into memory instead of mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Print only the summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Record no telemetry (GPU power/energy/VRAM through NVML, the process's peak memory) and no hardware
    /// snapshot in the rows.
    #[arg(long)]
    pub no_telemetry: bool,
    #[command(flatten)]
    pub history: crate::history::HistoryOptions,
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// One number of a single-valued flag, within `min..=max`.
fn number(flag: &str, text: &str, min: u32, max: u32) -> anyhow::Result<u32> {
    let text = text.trim();
    let value: i128 = text
        .parse()
        .map_err(|_| usage(format!("invalid {flag} '{text}': not a whole number (allowed: {min}–{max})")))?;
    if value < i128::from(min) || value > i128::from(max) {
        return Err(usage(format!("invalid {flag} {value}: out of range (allowed: {min}–{max})")));
    }
    Ok(value as u32)
}

/// A list of numbers, each within `min..=max`.
fn numbers(flag: &str, spec: &str, min: u32, max: u32) -> anyhow::Result<Vec<u32>> {
    let values = parse_u32_list(flag, spec).map_err(|e| usage(format!("{e} (allowed: {min}–{max})")))?;
    match values.iter().find(|&&v| v < min || v > max) {
        Some(v) => Err(usage(format!("invalid {flag} {v}: out of range (allowed: {min}–{max})"))),
        None => Ok(values),
    }
}

fn typed<T: std::str::FromStr + PartialEq>(flag: &str, spec: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    parse_value_list(flag, spec).map_err(|e| usage(e.to_string()))
}

impl BenchmarkArgs {
    /// The backends to run, in order (`-b a,b`), with `auto` resolved so the header and the results name the
    /// engine that runs.
    pub fn backends(&self) -> anyhow::Result<Vec<String>> {
        let typed: Vec<&str> = self.backend.split(',').map(str::trim).collect();
        if typed.iter().any(|b| b.is_empty()) {
            return Err(usage(format!(
                "invalid --backend '{}': expected a name or a comma list such as llamacpp,ollama",
                self.backend
            )));
        }
        let names = typed
            .iter()
            .map(|b| velollm_benchmarks::resolve_backend(b).map(str::to_string))
            .collect::<Result<Vec<String>, _>>()?;
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != names.len() {
            return Err(usage(format!("--backend '{}' names a backend twice", self.backend)));
        }
        Ok(names)
    }

    /// The models: `-m` (a comma list), else the default of the backends (Ollama's when it is among them, so a
    /// comparison runs the same model on every backend).
    pub fn models(&self, backends: &[String]) -> anyhow::Result<Vec<String>> {
        match &self.model {
            Some(list) => {
                let models: Vec<String> = list.split(',').map(|m| m.trim().to_string()).collect();
                if models.iter().any(String::is_empty) {
                    return Err(usage(format!("invalid --model '{list}': an item of the list is empty")));
                }
                let mut unique = models.clone();
                unique.sort();
                unique.dedup();
                if unique.len() != models.len() {
                    return Err(usage(format!("--model '{list}' names a model twice")));
                }
                Ok(models)
            }
            None if backends.iter().any(|b| b == "openai") => {
                Err(usage("-b openai needs -m MODEL: a model id the server lists at GET /v1/models".to_string()))
            }
            None if backends.iter().any(|b| b == "ollama") => Ok(vec![default_model_for("ollama").to_string()]),
            None => Ok(vec![default_model_for(backends.first().map_or("", String::as_str)).to_string()]),
        }
    }

    /// The load flags, checked: each bad value is one line naming the flag and the allowed range.
    pub fn load(&self) -> anyhow::Result<velollm_benchmarks::LoadOptions> {
        use velollm_benchmarks::load as spec;
        let mut options = velollm_benchmarks::LoadOptions {
            seed: u64::from(self.seed),
            warmup_requests: self.warmup()?,
            ..Default::default()
        };
        if let Some(list) = &self.concurrency {
            options.concurrency = numbers("--concurrency", list, 1, spec::MAX_CONCURRENCY)?;
        }
        if let Some(list) = &self.request_rate {
            options.rates = spec::parse_rates(list).map_err(|e| usage(e.to_string()))?;
        }
        options.burstiness = self.burstiness.trim().parse().map_err(|_| {
            usage(format!("invalid --burstiness '{}': expected a number such as 1 or 0.5", self.burstiness))
        })?;
        options.max_concurrency = number("--max-concurrency", &self.max_concurrency, 1, spec::MAX_CONCURRENCY)?;
        options.slo_attainment = self.slo_attainment.trim().parse().map_err(|_| {
            usage(format!("invalid --slo-attainment '{}': expected a fraction such as 0.9", self.slo_attainment))
        })?;
        match (&self.requests, &self.duration) {
            (Some(_), Some(_)) => return Err(usage("give --requests or --duration, not both")),
            (Some(n), None) => {
                let n: u64 = n.trim().parse().map_err(|_| {
                    usage(format!("invalid --requests '{n}': expected a whole number from 1 to {}", spec::MAX_REQUESTS))
                })?;
                options.stop = velollm_core::LoadStop::Requests(n);
            }
            (None, Some(time)) => {
                let ms = spec::parse_duration_ms("--duration", time).map_err(|e| usage(e.to_string()))?;
                options.stop = velollm_core::LoadStop::DurationS(ms / 1e3);
            }
            (None, None) => {}
        }
        if let Some(text) = &self.slo {
            options.slo = Some(spec::parse_slo(text).map_err(|e| usage(e.to_string()))?);
        }
        if let Some(k) = &self.sweep {
            options.sweep = Some(number("--sweep", k, 1, 100)?);
            if options.concurrency.len() + options.rates.len() > 0 {
                return Err(usage("--sweep chooses its own load; leave out --concurrency and --request-rate"));
            }
        }
        options.validate().map_err(|e| usage(e.to_string()))?;
        if !options.is_active() {
            let given = [
                (self.requests.is_some(), "--requests"),
                (self.duration.is_some(), "--duration"),
                (self.slo.is_some(), "--slo"),
            ];
            if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
                return Err(usage(format!("{flag} sets up a load run: add --concurrency, --request-rate or --sweep")));
            }
        }
        Ok(options)
    }

    /// Which engine parameters the user set (a server is sent only those).
    pub fn explicit(&self) -> ExplicitEngineParams {
        ExplicitEngineParams {
            threads: self.threads.is_some(),
            n_gpu_layers: self.n_gpu_layers.is_some(),
            batch_size: self.batch_size.is_some(),
        }
    }

    pub fn warmup(&self) -> anyhow::Result<u32> {
        number("--warmup", &self.warmup, 0, MAX_WARMUP)
    }

    fn token_tests(&self) -> anyhow::Result<Vec<TokenTest>> {
        if let Some(spec) = &self.parallel {
            return self.batched_tests(spec);
        }
        if self.shared_prompt {
            return Err(usage("--shared-prompt applies to batched tests: give --parallel (-npl) too"));
        }
        let depths = match &self.depth {
            Some(spec) => numbers("--depth", spec, 0, MAX_CTX)?,
            None => vec![0],
        };
        let mut shapes: Vec<(u32, u32)> = Vec::new();
        if let Some(spec) = &self.pp {
            shapes.extend(numbers("--pp", spec, 1, MAX_CTX)?.into_iter().map(|n| (n, 0)));
        }
        if let Some(spec) = &self.tg {
            shapes.extend(numbers("--tg", spec, 1, MAX_CTX)?.into_iter().map(|n| (0, n)));
        }
        for pg in &self.pg {
            let values = parse_u32_list("--pg", pg).map_err(|e| usage(e.to_string()))?;
            match values.as_slice() {
                [p, t] if *p >= 1 && *t >= 1 && *p <= MAX_CTX && *t <= MAX_CTX => shapes.push((*p, *t)),
                _ => {
                    return Err(usage(format!(
                        "invalid --pg '{pg}': expected two numbers P,T (prompt and generated tokens, each 1–{MAX_CTX})"
                    )))
                }
            }
        }
        let mut tests = Vec::new();
        for (n_prompt, n_gen) in shapes {
            for &n_depth in &depths {
                tests.push(TokenTest::single(n_prompt, n_gen, n_depth));
            }
        }
        if tests.is_empty() && self.depth.is_some() {
            return Err(usage("--depth applies to llama-bench tests: give --pp, --tg or --pg too"));
        }
        Ok(tests)
    }

    /// `--parallel`: llama-batched-bench's tests, every (PP, TG) of `--pp` × `--tg` and of `--pg`, for every B.
    fn batched_tests(&self, spec: &str) -> anyhow::Result<Vec<TokenTest>> {
        let sequences = numbers("--parallel", spec, 1, MAX_PARALLEL_SEQUENCES)?;
        if self.depth.is_some() {
            return Err(usage("--depth does not apply to --parallel (llama-batched-bench's tests have no depth)"));
        }
        let mut shapes: Vec<(u32, u32)> = Vec::new();
        match (&self.pp, &self.tg) {
            (Some(pp), Some(tg)) => {
                let tgs = numbers("--tg", tg, 1, MAX_CTX)?;
                for n_prompt in numbers("--pp", pp, 1, MAX_CTX)? {
                    shapes.extend(tgs.iter().map(|&n_gen| (n_prompt, n_gen)));
                }
            }
            (None, None) => {}
            _ => {
                return Err(usage("--parallel needs both --pp (each prompt) and --tg (generation steps), or --pg P,T"))
            }
        }
        for pg in &self.pg {
            match parse_u32_list("--pg", pg).map_err(|e| usage(e.to_string()))?.as_slice() {
                [p, t] if *p >= 1 && *t >= 1 && *p <= MAX_CTX && *t <= MAX_CTX => shapes.push((*p, *t)),
                _ => {
                    return Err(usage(format!(
                        "invalid --pg '{pg}': expected two numbers P,T (prompt and generated tokens, each 1–{MAX_CTX})"
                    )))
                }
            }
        }
        if shapes.is_empty() {
            return Err(usage(
                "--parallel needs --pp and --tg (or --pg P,T): the prompt and generation of each sequence",
            ));
        }
        let mut tests = Vec::new();
        for (n_prompt, n_gen) in shapes {
            for &n_sequences in &sequences {
                let test = TokenTest {
                    parallel: Some(Parallel { n_sequences, shared_prompt: self.shared_prompt }),
                    ..TokenTest::single(n_prompt, n_gen, 0)
                };
                if test.context_needed() > u64::from(MAX_CTX) {
                    return Err(usage(format!(
                        "{}: {n_sequences} sequences of {n_prompt}+{n_gen} tokens need {} tokens of context (at most {MAX_CTX})",
                        test.name(),
                        test.context_needed()
                    )));
                }
                tests.push(test);
            }
        }
        Ok(tests)
    }

    /// The repetition rule and the fixed count of llama-bench tests.
    pub fn repetitions(&self) -> anyhow::Result<(Repetitions, u32)> {
        let auto_asked = self.repetitions.as_deref().map(str::trim) == Some("auto");
        let fixed = match self.repetitions.as_deref().map(str::trim) {
            None | Some("auto") => DEFAULT_TOKEN_REPETITIONS,
            Some(text) => {
                number("--repetitions", text, 1, MAX_ITERATIONS).map_err(|e| usage(format!("{e}; or 'auto'")))?
            }
        };
        let target = self
            .target_ci
            .as_deref()
            .map(|text| {
                let value: f64 = text.trim().parse().map_err(|_| {
                    usage(format!("invalid --target-ci '{text}': not a number (allowed: more than 0, at most 100)"))
                })?;
                if !(value > 0.0 && value <= 100.0) {
                    return Err(usage(format!(
                        "invalid --target-ci {value}: out of range (allowed: more than 0, at most 100)"
                    )));
                }
                Ok(value)
            })
            .transpose()?;
        let max_time = self
            .max_time
            .as_deref()
            .map(|text| {
                let value: f64 = text.trim().parse().map_err(|_| {
                    usage(format!("invalid --max-time '{text}': not a number of seconds (allowed: 1–86400)"))
                })?;
                if !(1.0..=86_400.0).contains(&value) {
                    return Err(usage(format!("invalid --max-time {value}: out of range (allowed: 1–86400 seconds)")));
                }
                Ok(Duration::from_secs_f64(value))
            })
            .transpose()?;
        let defaults = AutoRepetitions::default();
        let min_repetitions = self
            .min_repetitions
            .as_deref()
            .map(|text| number("--min-repetitions", text, 2, defaults.max_repetitions))
            .transpose()?;
        let min_time = self
            .min_time
            .as_deref()
            .map(|text| {
                let value: f64 = text.trim().parse().map_err(|_| {
                    usage(format!("invalid --min-time '{text}': not a number of seconds (allowed: 0–86400)"))
                })?;
                if !(0.0..=86_400.0).contains(&value) {
                    return Err(usage(format!("invalid --min-time {value}: out of range (allowed: 0–86400 seconds)")));
                }
                Ok(Duration::from_secs_f64(value))
            })
            .transpose()?;
        let auto_flags = target.is_some() || max_time.is_some() || min_repetitions.is_some() || min_time.is_some();
        if auto_flags && self.repetitions.is_some() && !auto_asked {
            return Err(usage(
                "--target-ci, --max-time, --min-repetitions and --min-time go with --repetitions auto, not a fixed count",
            ));
        }
        if auto_asked || auto_flags {
            let auto = AutoRepetitions {
                target_ci_percent: target.unwrap_or(defaults.target_ci_percent),
                max_time: max_time.unwrap_or(defaults.max_time),
                min_repetitions: min_repetitions.unwrap_or(defaults.min_repetitions),
                min_time: min_time.unwrap_or(defaults.min_time),
                ..defaults
            };
            if auto.min_time > auto.max_time {
                return Err(usage(format!(
                    "--min-time {} is more than --max-time {}: the CI would never be checked",
                    auto.min_time.as_secs_f64(),
                    auto.max_time.as_secs_f64()
                )));
            }
            return Ok((Repetitions::Auto(auto), fixed));
        }
        Ok((Repetitions::Fixed, fixed))
    }

    /// The sweep: every list, checked, and the tests to run.
    pub fn sweep(&self, models: Vec<String>, backends: Vec<String>) -> anyhow::Result<SweepSpec> {
        let n_threads = match &self.threads {
            Some(spec) => numbers("--threads", spec, 1, MAX_THREADS)?,
            None => vec![velollm_hw::default_threads()],
        };
        let n_gpu_layers = match &self.n_gpu_layers {
            Some(spec) => {
                let values = parse_u32_list_with_word("--n-gpu-layers", spec, "all")
                    .map_err(|e| usage(format!("{e} (allowed: 0–{MAX_LAYERS} or all)")))?;
                if let Some(v) = values.iter().flatten().find(|&&v| v > MAX_LAYERS) {
                    return Err(usage(format!(
                        "invalid --n-gpu-layers {v}: out of range (allowed: 0–{MAX_LAYERS} or all)"
                    )));
                }
                values.into_iter().map(|v| v.map_or(GpuLayers::All, GpuLayers::Count)).collect()
            }
            None => vec![GpuLayers::All],
        };
        let (n_ctx, largest_ctx) = match &self.ctx_size {
            Some(spec) => {
                let n_ctx = numbers("--ctx-size", spec, 1, MAX_CTX)?;
                let largest = n_ctx.iter().copied().max().unwrap_or(DEFAULT_CTX);
                (n_ctx, largest)
            }
            // llama-bench's sizing: each of its tests gets n_prompt + n_gen + n_depth, text tests DEFAULT_CTX.
            None => (vec![velollm_benchmarks::CTX_PER_TEST], DEFAULT_CTX),
        };
        let n_batch = match &self.batch_size {
            Some(spec) => numbers("--batch-size", spec, 1, largest_ctx).map_err(|e| {
                usage(format!("{e}; the batch cannot be larger than the context (--ctx-size {largest_ctx})"))
            })?,
            // llama-bench's default, clamped to the context by the engine (the row records the value used).
            None => vec![DEFAULT_BATCH],
        };
        let largest_batch = n_batch.iter().copied().max().unwrap_or(DEFAULT_BATCH);
        let n_ubatch = match &self.ubatch_size {
            Some(spec) => numbers("--ubatch-size", spec, 1, largest_batch.min(largest_ctx))
                .map_err(|e| usage(format!("{e}; the micro-batch cannot be larger than the batch or the context")))?,
            None => vec![DEFAULT_UBATCH],
        };
        let flash_attn: Vec<FlashAttention> = typed("--flash-attn", &self.flash_attn)?;
        let type_k: Vec<KvCacheType> = typed("--cache-type-k", &self.cache_type_k)?;
        let type_v: Vec<KvCacheType> = typed("--cache-type-v", &self.cache_type_v)?;
        let split_mode: Vec<SplitMode> = typed("--split-mode", &self.split_mode)?;
        let main_gpu = numbers("--main-gpu", &self.main_gpu, 0, MAX_GPUS)?;
        let devices: Vec<DeviceSelection> = typed("--device", &self.device)?;
        let tensor_split: Vec<TensorSplit> = typed("--tensor-split", &self.tensor_split)?;

        let max_tokens = self
            .max_tokens
            .as_deref()
            .map(|text| number("--max-tokens", text, 1, largest_ctx.saturating_sub(1).max(1)))
            .transpose()
            .map_err(|e| usage(format!("{e}; the output must fit the context (--ctx-size {largest_ctx})")))?;
        let iterations =
            self.iterations.as_deref().map(|text| number("--iterations", text, 1, MAX_ITERATIONS)).transpose()?;
        let (_, token_repetitions) = self.repetitions()?;
        let token_tests = self.token_tests()?;
        if self.parallel.is_some() {
            if let Some(other) = backends.iter().find(|b| b.as_str() != "llamacpp") {
                return Err(usage(format!(
                    "--parallel (batched sequences) runs in-process on llama.cpp only, not on -b {other}{}",
                    match other.as_str() {
                        "candle" => ": candle's models hold one sequence's cache",
                        "ollama" | "openai" => {
                            ": a server's concurrency is a load profile (--concurrency), not batched-bench's test"
                        }
                        _ => "",
                    }
                )));
            }
        }
        let mut tests: Vec<TestCase> = Vec::new();
        let text_wanted = token_tests.is_empty() || self.suite || self.prompt.is_some();
        if text_wanted {
            let model = models.first().cloned().unwrap_or_default();
            let configs = match &self.prompt {
                Some(prompt) if prompt.trim().is_empty() => return Err(usage("invalid --prompt: it is empty")),
                Some(prompt) => vec![BenchmarkConfig {
                    name: "custom".into(),
                    model,
                    prompt: prompt.clone(),
                    max_tokens: max_tokens.unwrap_or(100),
                    iterations: iterations.unwrap_or(5),
                }],
                None => standard_suite(&model)
                    .into_iter()
                    .map(|mut config| {
                        config.max_tokens = max_tokens.unwrap_or(config.max_tokens);
                        config.iterations = iterations.unwrap_or(config.iterations);
                        config
                    })
                    .collect(),
            };
            tests.extend(configs.into_iter().map(TestCase::Text));
        }
        tests.extend(token_tests.into_iter().map(|test| TestCase::Tokens { test, repetitions: token_repetitions }));
        Ok(SweepSpec {
            models,
            backends,
            n_gpu_layers,
            split_mode,
            main_gpu,
            use_mmap: vec![!self.no_mmap],
            devices,
            tensor_split,
            n_ctx,
            n_batch,
            n_ubatch,
            n_threads,
            flash_attn,
            type_k,
            type_v,
            tests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_the_flag_and_the_range() {
        let err = numbers("--threads", "0", 1, 1024).unwrap_err().to_string();
        assert_eq!(err, "invalid --threads 0: out of range (allowed: 1–1024)");
        let err = number("--iterations", "-3", 1, 10).unwrap_err().to_string();
        assert_eq!(err, "invalid --iterations -3: out of range (allowed: 1–10)");
        let err = number("--iterations", "many", 1, 10).unwrap_err().to_string();
        assert!(err.contains("not a whole number (allowed: 1–10)"), "{err}");
        let err = numbers("--threads", "1-8+0", 1, 1024).unwrap_err().to_string();
        assert!(err.starts_with("invalid --threads '1-8+0': the step"), "{err}");
        assert!(err.ends_with("(allowed: 1–1024)"), "{err}");
        assert_eq!(numbers("--ctx-size", "512,1024-2048*2", 1, MAX_CTX).unwrap(), [512, 1024, 2048]);
    }
}
