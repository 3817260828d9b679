//! Result rows: the guide's JSON object, extended (never renamed) with what makes a number trustworthy.

use serde::{Deserialize, Serialize};

use crate::metrics::inter_token_gaps_ms;
use crate::{
    DecodeEfficiency, EffectiveParams, GenerationParams, HardwareInfo, IterationMetrics, LatencyPercentiles, RawSample,
    RequestedParams, RowTelemetry, Summary, TestShape,
};

/// Version of the JSON layout (docs/result.schema.json). Bumped on any incompatible change: 2 split the
/// parameters into requested and effective values and added failed/incomplete rows and llama-bench tests; 3 left
/// out what another field already said: `complete` (`status == "ok"`), `avg_ts` (`tokens_per_second`) and
/// `stddev_ts` (`statistics.tokens_per_second.stddev`). velollm-results reads every version.
pub const SCHEMA_VERSION: u32 = 3;

/// A measured value, or absent when nothing could measure it (never a guess, never zero).
///
/// Serialised as a number or `null`; displayed as the number (honouring `{:.1}`-style precision) or
/// `n/a`, so the guide's `println!("Tokens/s: {}", result.tokens_per_second)` works unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Measured(pub Option<f64>);

impl Measured {
    pub fn value(self) -> Option<f64> {
        self.0
    }
}

impl From<Option<f64>> for Measured {
    fn from(value: Option<f64>) -> Self {
        Measured(value)
    }
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => std::fmt::Display::fmt(&v, f),
            None => f.pad("n/a"),
        }
    }
}

/// A benchmark as the guide defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchmarkConfig {
    pub name: String,
    pub model: String,
    pub prompt: String,
    pub max_tokens: u32,
    pub iterations: u32,
}

/// What the model file is, read from the file itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The reference as the user gave it (`-m`).
    pub reference: String,
    /// The file that was loaded.
    pub path: String,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub architecture: Option<String>,
    /// Exact count of tensor elements.
    pub parameter_count: Option<u64>,
    pub quantization: Option<String>,
    /// `general.name` from the file.
    pub name: Option<String>,
    /// True for files with random weights written to mimic a real architecture's shapes.
    pub synthetic: bool,
    /// Ollama's digest of the model (its manifest's sha256, as `/api/tags` lists it), when the model came
    /// from Ollama's server or store: the same digest on both backends means the same model.
    #[serde(default)]
    pub digest: Option<String>,
    /// Bytes of weights read per generated token, from the file's tensors (docs/metrics.md).
    #[serde(default)]
    pub weight_bytes_per_token: Option<u64>,
}

/// Options sent to a server with every request. Load-time options the user did not set are not sent, so
/// the server's own defaults apply (and are `None` here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRequestOptions {
    /// Always sent: newer Ollama versions otherwise pick a context length from the free VRAM.
    pub num_ctx: u32,
    pub temperature: f64,
    pub num_gpu: Option<u32>,
    pub num_thread: Option<u32>,
    pub num_batch: Option<u32>,
}

/// How a server backend was reached and what it reported about the loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub url: String,
    /// The server's own version (`/api/version`).
    pub version: Option<String>,
    pub options: ServerRequestOptions,
    /// Client wall clock of the untimed preload request (empty prompt).
    pub load_client_ms: f64,
    /// The server's `load_duration` for that request (includes its queueing).
    pub load_server_ms: Option<f64>,
    /// From `/api/ps` after the preload: bytes the loaded model takes, and how many of them sit in VRAM.
    pub size_bytes: Option<u64>,
    pub size_vram_bytes: Option<u64>,
    /// The context length the server allocated (`/api/ps`, newer versions).
    pub context_length: Option<u64>,
}

/// Every parameter a row used: what was asked for, and what the engine made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunParameters {
    /// The parameters as requested (for a server: what velollm would use in-process; what was actually sent
    /// is `server.options`).
    pub requested: RequestedParams,
    /// The parameters as the engine applied them; absent when the row failed before a context existed.
    pub effective: Option<EffectiveParams>,
    pub generation: GenerationParams,
    pub warmup_iterations: u32,
}

/// Where a result was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub velollm_version: String,
    pub velollm_git_commit: Option<String>,
    pub backend: String,
    /// The engine's version (llama.cpp's ggml version and commit, candle's crate version, Ollama's server).
    pub backend_version: Option<String>,
    /// The engine's own description of its build (llama.cpp's system info: SIMD features, backends).
    pub backend_build: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_physical_cores: Option<u32>,
    pub cpu_logical_cpus: Option<u32>,
    pub ram_bytes: Option<u64>,
    pub os: String,
    pub kernel: Option<String>,
    pub hostname: Option<String>,
}

/// velollm's clock against the engine's own perf counters over all timed iterations of a benchmark.
///
/// `ratio = velollm_ms / engine_ms`; `overhead_percent = (ratio − 1) · 100`. velollm's decode interval
/// also holds sampling and bookkeeping between decode calls, so the overhead is what the harness adds
/// around the engine's compute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HarnessOverhead {
    pub eval_ms_velollm: f64,
    pub eval_ms_engine: f64,
    pub eval_ratio: Option<f64>,
    pub eval_overhead_percent: Option<f64>,
    pub prompt_eval_ms_velollm: f64,
    pub prompt_eval_ms_engine: f64,
    pub prompt_eval_ratio: Option<f64>,
    pub prompt_eval_overhead_percent: Option<f64>,
}

/// The client's clock against the server's over all timed iterations of an HTTP benchmark.
///
/// `overhead_ms = client_total_ms − server_total_ms` (sums over iterations); `overhead_percent =
/// overhead_ms / server_total_ms · 100`; `client_tokens_per_second` is the mean of the per-iteration
/// client-side decode rates, beside the headline server rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HttpOverhead {
    pub client_total_ms: f64,
    pub server_total_ms: f64,
    pub overhead_ms: f64,
    pub overhead_ms_per_request: f64,
    pub overhead_percent: Option<f64>,
    pub client_tokens_per_second: Option<f64>,
}

/// A batched test's row: llama-batched-bench's columns (its JSONL names; times in seconds) as the mean over
/// the repetitions, each sequence's latencies, and velollm's clock against llama.cpp's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchedFigures {
    pub pp: u32,
    pub tg: u32,
    /// `B`: sequences decoded together.
    pub pl: u32,
    pub is_pp_shared: bool,
    pub n_kv: u64,
    pub t_pp: Option<f64>,
    pub speed_pp: Option<f64>,
    pub t_tg: Option<f64>,
    pub speed_tg: Option<f64>,
    pub t: Option<f64>,
    pub speed: Option<f64>,
    /// Sequence i's time to first token, ms, averaged over the repetitions (index = sequence id).
    pub ttft_ms_per_sequence: Vec<f64>,
    /// Every sequence's TTFT in every repetition, pooled: mean and percentiles, ms.
    pub ttft_mean_ms: Option<f64>,
    pub ttft_ms: Option<LatencyPercentiles>,
    /// Every sequence's inter-token gaps in every repetition, pooled: mean and percentiles, ms.
    pub inter_token_latency_mean_ms: Option<f64>,
    pub inter_token_latency_ms: Option<LatencyPercentiles>,
    /// The timed regions against llama.cpp's own counters, when every repetition has them.
    pub engine_check: Option<EngineCheck>,
}

/// velollm's timed regions against the engine's counters over every repetition of a batched test. llama.cpp
/// counts a decode call of one token as "eval" and of more as "prompt eval", so with B > 1 every generation
/// step is "prompt eval" to it: the check is on the totals. `ratio = velollm_ms / engine_ms`; the tokens
/// must match exactly (`N_KV` per repetition).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngineCheck {
    /// Σ T over the repetitions, ms.
    pub velollm_ms: f64,
    /// Σ (t_p_eval + t_eval) over the repetitions, ms.
    pub engine_ms: f64,
    pub ratio: Option<f64>,
    /// Σ N_KV over the repetitions.
    pub tokens_velollm: u64,
    /// Σ (n_p_eval + n_eval) over the repetitions.
    pub tokens_engine: u64,
}

impl BatchedFigures {
    /// The row's figures from its repetitions' metrics; `None` when none is a batched test.
    fn of(records: &[IterationRecord]) -> Option<BatchedFigures> {
        let metrics: Vec<&crate::BatchedMetrics> = records.iter().filter_map(|r| r.metrics.batched.as_ref()).collect();
        let first = metrics.first()?;
        let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        let mean_of =
            |f: fn(&crate::BatchedMetrics) -> Option<f64>| mean(metrics.iter().filter_map(|m| f(m)).collect());
        let ttft_ms_per_sequence = (0..first.pl as usize)
            .filter_map(|i| mean(metrics.iter().filter_map(|m| m.ttft_ms.get(i).copied()).collect()))
            .collect();
        let all_ttft: Vec<f64> = metrics.iter().flat_map(|m| m.ttft_ms.iter().copied()).collect();
        let all_gaps: Vec<f64> = records
            .iter()
            .filter_map(|r| r.raw.batched.as_ref())
            .flat_map(|b| b.sequence_token_times_ns.iter().flat_map(|times| inter_token_gaps_ms(times)))
            .collect();
        let engine_check = (records.iter().all(|r| r.raw.engine_counters.is_some())).then(|| {
            let velollm_ms = records.iter().filter_map(|r| r.raw.test_ns).map(|ns| ns as f64 / 1e6).sum::<f64>();
            let engine_ms =
                records.iter().filter_map(|r| r.raw.engine_counters).map(|c| c.prompt_eval_ms + c.eval_ms).sum::<f64>();
            EngineCheck {
                velollm_ms,
                engine_ms,
                ratio: (engine_ms > 0.0).then(|| velollm_ms / engine_ms),
                tokens_velollm: metrics.iter().map(|m| m.n_kv).sum(),
                tokens_engine: records
                    .iter()
                    .filter_map(|r| r.raw.engine_counters)
                    .map(|c| c.prompt_eval_count + c.eval_count)
                    .sum(),
            }
        });
        Some(BatchedFigures {
            pp: first.pp,
            tg: first.tg,
            pl: first.pl,
            is_pp_shared: first.is_pp_shared,
            n_kv: first.n_kv,
            t_pp: mean_of(|m| Some(m.t_pp)),
            speed_pp: mean_of(|m| m.speed_pp),
            t_tg: mean_of(|m| Some(m.t_tg)),
            speed_tg: mean_of(|m| m.speed_tg),
            t: mean_of(|m| Some(m.t)),
            speed: mean_of(|m| m.speed),
            ttft_ms_per_sequence,
            ttft_mean_ms: mean(all_ttft.clone()),
            ttft_ms: LatencyPercentiles::of(&all_ttft),
            inter_token_latency_mean_ms: mean(all_gaps.clone()),
            inter_token_latency_ms: LatencyPercentiles::of(&all_gaps),
            engine_check,
        })
    }
}

/// Spread statistics of a benchmark's timed iterations. A metric that no iteration measured is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkStatistics {
    pub tokens_per_second: Option<Summary>,
    pub time_to_first_token_ms: Option<Summary>,
    pub prompt_tokens_per_second: Option<Summary>,
    pub prompt_eval_ms: Option<Summary>,
    pub eval_ms: Option<Summary>,
    pub total_time_ms: Option<Summary>,
    /// Percentiles over the gaps of all timed iterations pooled together.
    pub inter_token_latency_ms: Option<LatencyPercentiles>,
}

/// One timed iteration: its derived metrics and the raw sample they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub iteration: u32,
    pub metrics: IterationMetrics,
    pub raw: RawSample,
}

/// Whether a row holds everything it was asked to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    /// Every requested iteration finished.
    Ok,
    /// Some iterations finished before an error or an interruption; they are kept, the row says why it stopped.
    Incomplete,
    /// Nothing was measured (the model, the context or the first iteration failed); `error` says why.
    Failed,
}

/// Why a row's repetitions ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// The fixed count was reached.
    Count,
    /// `--repetitions auto`: the confidence interval became narrow enough.
    CiTarget,
    /// `--repetitions auto`: the time cap was reached first.
    TimeCap,
    /// `--repetitions auto`: the most repetitions allowed were run.
    MaxRepetitions,
    Interrupted,
    Error,
}

/// How many repetitions a row asked for and why they ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepetitionRecord {
    /// `fixed` or `auto`.
    pub mode: String,
    /// Fixed mode: the count asked for. Auto mode: the most allowed.
    pub requested: u32,
    /// Auto mode: the 95 % CI half-width to reach, in per cent of the mean.
    pub target_ci_percent: Option<f64>,
    /// Auto mode: the time cap in seconds of timed work.
    pub max_time_s: Option<f64>,
    /// Auto mode: the fewest repetitions before the CI is trusted.
    pub min_repetitions: Option<u32>,
    pub stopped_because: StopRule,
    /// The CI half-width reached, in per cent of the mean (auto mode, and whenever it is defined).
    pub ci_half_width_percent: Option<f64>,
    /// Auto mode: the least timed work, in seconds, before the interval is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_time_s: Option<f64>,
    /// Auto mode: how many checks in a row had to meet the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_required: Option<u32>,
    /// Auto mode: the checks made (repetitions after both minimums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<u32>,
    /// Repetitions whose rate is an outlier by the robust rule of [`crate::Outliers`] (three rates or more);
    /// flagged only, they stay in the statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outliers: Option<crate::Outliers>,
}

/// One row: one test on one model, backend and set of parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResult {
    // ---- the guide's fields, names and meaning unchanged ----
    pub config: BenchmarkConfig,
    /// Text tests: mean of the per-iteration decode rates. Token tests: llama-bench's `avg_ts`.
    pub tokens_per_second: Measured,
    /// Mean of the per-iteration TTFTs (text tests).
    pub time_to_first_token_ms: Measured,
    /// Sum of the iterations' total times; absent when no iteration finished.
    pub total_time_ms: Measured,
    /// Sum of the tokens generated over all timed iterations.
    pub total_tokens: u64,
    /// Prompt tokens per iteration (mean, rounded).
    pub prompt_eval_count: u64,
    /// Tokens generated per iteration (mean, rounded).
    pub eval_count: u64,
    /// When the row finished (RFC 3339, UTC).
    pub timestamp: String,
    // ---- extensions ----
    pub schema_version: u32,
    pub backend: String,
    pub status: RowStatus,
    /// Why the row is incomplete or failed, in one line.
    pub error: Option<String>,
    pub iterations_completed: u32,
    /// What was measured, with llama-bench's field names.
    pub test: TestShape,
    /// llama-bench's figures for token tests (absent for text tests): mean and sample standard deviation of
    /// the per-repetition time (ns), and the per-repetition times and rates themselves. The mean rate is
    /// `tokens_per_second` and its spread `statistics.tokens_per_second` (llama-bench's `avg_ts`, `stddev_ts`).
    pub avg_ns: Option<f64>,
    pub stddev_ns: Option<f64>,
    #[serde(default)]
    pub samples_ns: Vec<u64>,
    #[serde(default)]
    pub samples_ts: Vec<f64>,
    pub repetitions: RepetitionRecord,
    /// `--interleave`: the run this row's repetitions were interleaved in; its i-th sample ran in round i.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interleaved: Option<crate::Interleaved>,
    /// Mean of the per-iteration prompt-evaluation rates.
    pub prompt_tokens_per_second: Option<f64>,
    /// Model load (file to ready model), once per load group, never part of an iteration.
    pub load_time_ms: Option<f64>,
    /// Context creation (KV cache allocation), once per context, never part of an iteration.
    pub context_time_ms: Option<f64>,
    /// This backend's start (process start for the first backend of a run; the backend's first step for
    /// the others) → its first timed iteration.
    pub startup_to_first_timed_iteration_ms: Option<f64>,
    pub statistics: BenchmarkStatistics,
    pub harness_overhead: Option<HarnessOverhead>,
    /// Over HTTP: the client's clock against the server's durations.
    #[serde(default)]
    pub http_overhead: Option<HttpOverhead>,
    /// Server backends: how the server was reached, what it was sent, what it loaded.
    #[serde(default)]
    pub server: Option<ServerRecord>,
    /// Things that make a number less trustworthy (early stops, high spread, ignored parameters), in words.
    pub warnings: Vec<String>,
    /// Text of the first timed iteration (decoded after timing).
    pub generated_text: Option<String>,
    pub samples: Vec<IterationRecord>,
    pub model: ModelIdentity,
    pub parameters: RunParameters,
    pub environment: Environment,
    /// The machine, as `velollm detect` describes it, when the row was measured.
    #[serde(default)]
    pub hardware: Option<HardwareInfo>,
    /// GPU power, energy and memory, and the process's peak memory, over the timed iterations (model load and
    /// warm-up excluded).
    #[serde(default)]
    pub telemetry: Option<RowTelemetry>,
    /// The decode rate against the memory-bandwidth roofline, when a bandwidth applies (docs/metrics.md).
    #[serde(default)]
    pub decode_efficiency: Option<DecodeEfficiency>,
    /// Load runs (`--concurrency`, `--request-rate`): the profile, the throughput and latency distributions over
    /// many requests in flight, and every request's timeline. Absent for one-request-at-a-time rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::LoadRecord>,
    /// Batched tests (`-npl`): llama-batched-bench's columns, per-sequence latencies, the engine check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batched: Option<BatchedFigures>,
}

impl BenchmarkResult {
    /// The row's rate, when it has one.
    pub fn rate(&self) -> Option<f64> {
        self.tokens_per_second.value()
    }
}

/// The per-row aggregates that follow from the raw samples alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregates {
    pub tokens_per_second: Option<f64>,
    pub time_to_first_token_ms: Option<f64>,
    pub total_time_ms: Option<f64>,
    pub total_tokens: u64,
    pub prompt_eval_count: u64,
    pub eval_count: u64,
    pub prompt_tokens_per_second: Option<f64>,
    pub statistics: BenchmarkStatistics,
    pub harness_overhead: Option<HarnessOverhead>,
    pub http_overhead: Option<HttpOverhead>,
    pub avg_ns: Option<f64>,
    pub stddev_ns: Option<f64>,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
    pub records: Vec<IterationRecord>,
    pub warnings: Vec<String>,
    pub batched: Option<BatchedFigures>,
}

/// Spread above which a warning says the numbers are noisy (coefficient of variation).
const NOISY_RELATIVE_STDDEV: f64 = 0.10;

impl Aggregates {
    /// Derives everything a row says about its iterations. Every sample is kept and counted, including one
    /// that generated no token (its figures that need a token are absent, and a warning says so).
    /// `expected_tokens` is the output length every iteration was asked for.
    pub fn from_samples(samples: Vec<RawSample>, expected_tokens: u32) -> Aggregates {
        let records: Vec<IterationRecord> = samples
            .into_iter()
            .enumerate()
            .map(|(i, raw)| IterationRecord {
                iteration: i as u32 + 1,
                metrics: IterationMetrics::from_sample(&raw),
                raw,
            })
            .collect();
        let collect = |f: fn(&IterationMetrics) -> Option<f64>| -> Vec<f64> {
            records.iter().filter_map(|r| f(&r.metrics)).collect()
        };
        let rates = collect(|m| m.tokens_per_second);
        let totals = collect(|m| m.total_ms);
        // A batched test's gaps are each sequence's own (its token times differ when a step spans calls).
        let all_gaps: Vec<f64> = records
            .iter()
            .flat_map(|r| match &r.raw.batched {
                Some(b) => b.sequence_token_times_ns.iter().flat_map(|times| inter_token_gaps_ms(times)).collect(),
                None => inter_token_gaps_ms(&r.raw.token_times_ns),
            })
            .collect();
        let statistics = BenchmarkStatistics {
            tokens_per_second: Summary::of(&rates),
            time_to_first_token_ms: Summary::of(&collect(|m| m.ttft_ms)),
            prompt_tokens_per_second: Summary::of(&collect(|m| m.prompt_tokens_per_second)),
            prompt_eval_ms: Summary::of(&collect(|m| m.prompt_eval_ms)),
            eval_ms: Summary::of(&collect(|m| m.eval_ms)),
            total_time_ms: Summary::of(&totals),
            inter_token_latency_ms: LatencyPercentiles::of(&all_gaps),
        };

        let n = records.len() as u64;
        let total_tokens: u64 = records.iter().map(|r| r.metrics.eval_count).sum();
        let total_prompt: u64 = records.iter().map(|r| r.metrics.prompt_eval_count).sum();
        let rounded_mean = |sum: u64| (sum + n / 2).checked_div(n).unwrap_or(0);

        // llama-bench's figures, for token tests only: per-repetition t_ns and t/s, mean ± sample stddev.
        let samples_ns: Vec<u64> = records.iter().filter_map(|r| r.metrics.test_ns).collect();
        let is_token_test = !samples_ns.is_empty();
        let samples_ts: Vec<f64> = if is_token_test { rates.clone() } else { Vec::new() };
        let ns_summary = Summary::of(&samples_ns.iter().map(|&ns| ns as f64).collect::<Vec<_>>());

        let mut warnings = Vec::new();
        let empty: Vec<u32> =
            records.iter().filter(|r| r.metrics.eval_count == 0 && !is_token_test).map(|r| r.iteration).collect();
        if !empty.is_empty() {
            warnings.push(format!(
                "iterations {empty:?} generated no token: they are counted, but have no TTFT and no decode rate"
            ));
        }
        let short: Vec<u32> = records
            .iter()
            .filter(|r| r.metrics.eval_count > 0 && r.metrics.eval_count < u64::from(expected_tokens))
            .map(|r| r.iteration)
            .collect();
        if !short.is_empty() {
            warnings.push(format!(
                "iterations {short:?} stopped before {expected_tokens} tokens (end of sequence or the server's stop); their rates cover fewer tokens"
            ));
        }
        let truncated: Vec<u32> = records
            .iter()
            .filter(|r| r.raw.server.as_ref().and_then(|s| s.truncated) == Some(true))
            .map(|r| r.iteration)
            .collect();
        if !truncated.is_empty() {
            warnings.push(format!(
                "iterations {truncated:?} filled the server's context (prompt_eval_count + eval_count reached num_ctx): \
                 the server truncated the prompt or shifted the context; raise --ctx-size"
            ));
        }
        if let Some(cv) = statistics.tokens_per_second.as_ref().and_then(Summary::relative_stddev) {
            if cv > NOISY_RELATIVE_STDDEV {
                warnings.push(format!(
                    "rate varies by {:.0} % (stddev/mean) across iterations: background load or throttling?",
                    cv * 100.0
                ));
            }
        }

        Aggregates {
            tokens_per_second: statistics.tokens_per_second.map(|s| s.mean),
            time_to_first_token_ms: statistics.time_to_first_token_ms.map(|s| s.mean),
            total_time_ms: (!totals.is_empty()).then(|| totals.iter().sum()),
            total_tokens,
            prompt_eval_count: rounded_mean(total_prompt),
            eval_count: rounded_mean(total_tokens),
            prompt_tokens_per_second: statistics.prompt_tokens_per_second.map(|s| s.mean),
            statistics,
            harness_overhead: harness_overhead(&records),
            http_overhead: http_overhead(&records),
            batched: BatchedFigures::of(&records),
            avg_ns: ns_summary.map(|s| s.mean),
            stddev_ns: ns_summary.and_then(|s| s.stddev),
            samples_ns,
            samples_ts,
            records,
            warnings,
        }
    }
}

fn http_overhead(records: &[IterationRecord]) -> Option<HttpOverhead> {
    let http: Vec<&crate::HttpMetrics> = records.iter().filter_map(|r| r.metrics.http.as_ref()).collect();
    // Only when every iteration has both clocks: a partial sum would compare different sets of requests.
    if http.is_empty() || http.len() != records.len() || http.iter().any(|h| h.server_total_ms.is_none()) {
        return None;
    }
    let client_total_ms: f64 = http.iter().map(|h| h.client_total_ms).sum();
    let server_total_ms: f64 = http.iter().filter_map(|h| h.server_total_ms).sum();
    let overhead_ms = client_total_ms - server_total_ms;
    let client_rates: Vec<f64> = http.iter().filter_map(|h| h.client_tokens_per_second).collect();
    Some(HttpOverhead {
        client_total_ms,
        server_total_ms,
        overhead_ms,
        overhead_ms_per_request: overhead_ms / http.len() as f64,
        overhead_percent: (server_total_ms > 0.0).then(|| overhead_ms / server_total_ms * 100.0),
        client_tokens_per_second: Summary::of(&client_rates).map(|s| s.mean),
    })
}

fn harness_overhead(records: &[IterationRecord]) -> Option<HarnessOverhead> {
    if records.is_empty() || records.iter().any(|r| r.raw.engine_counters.is_none()) {
        return None;
    }
    // llama.cpp files a multi-token generation step under prompt eval: a batched test's check is on the
    // totals ([`EngineCheck`]), not this split.
    if records.iter().any(|r| r.raw.batched.is_some()) {
        return None;
    }
    let sum = |f: &dyn Fn(&IterationRecord) -> f64| records.iter().map(f).sum::<f64>();
    // Text requests: first → last token spans the single-token decodes the engine counts (the first token
    // comes from the prompt's logits). Token tests decode every generated token: their decode interval is
    // the timed region after the prompt part.
    let eval_ms_velollm = sum(&|r| match r.raw.test_ns {
        Some(test_ns) => test_ns.saturating_sub(r.raw.prompt_eval_ns) as f64 / 1e6,
        None => r.metrics.eval_ms.unwrap_or(0.0),
    });
    let eval_ms_engine = sum(&|r| r.raw.engine_counters.map_or(0.0, |c| c.eval_ms));
    let prompt_eval_ms_velollm = sum(&|r| r.metrics.prompt_eval_ms.unwrap_or(0.0));
    let prompt_eval_ms_engine = sum(&|r| r.raw.engine_counters.map_or(0.0, |c| c.prompt_eval_ms));
    let ratio = |ours: f64, theirs: f64| (theirs > 0.0).then(|| ours / theirs);
    let eval_ratio = ratio(eval_ms_velollm, eval_ms_engine);
    let prompt_eval_ratio = ratio(prompt_eval_ms_velollm, prompt_eval_ms_engine);
    Some(HarnessOverhead {
        eval_ms_velollm,
        eval_ms_engine,
        eval_ratio,
        eval_overhead_percent: eval_ratio.map(|r| (r - 1.0) * 100.0),
        prompt_eval_ms_velollm,
        prompt_eval_ms_engine,
        prompt_eval_ratio,
        prompt_eval_overhead_percent: prompt_eval_ratio.map(|r| (r - 1.0) * 100.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineCounters, StopReason};

    fn sample(first_ms: u64, gap_ms: u64, tokens: usize, engine_eval_ms: f64) -> RawSample {
        RawSample {
            prompt_tokens: 9,
            tokenize_ns: 50_000,
            prompt_eval_ns: 18_000_000,
            token_times_ns: (0..tokens as u64).map(|i| (first_ms + i * gap_ms) * 1_000_000).collect(),
            stop_reason: StopReason::Length,
            eog_tokens: 0,
            token_ids: vec![7; tokens],
            engine_counters: Some(EngineCounters {
                prompt_eval_count: 9,
                prompt_eval_ms: 18.0,
                eval_count: tokens as u64 - 1,
                eval_ms: engine_eval_ms,
            }),
            server: None,
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        }
    }

    #[test]
    fn aggregates_follow_the_guide() {
        // Two iterations of 5 tokens: decode rates 4/40ms = 100 tok/s and 4/80ms = 50 tok/s.
        let agg = Aggregates::from_samples(vec![sample(20, 10, 5, 39.0), sample(30, 20, 5, 78.0)], 5);
        assert_eq!(agg.records.len(), 2);
        assert_eq!(agg.tokens_per_second, Some(75.0));
        assert_eq!(agg.time_to_first_token_ms, Some(25.0));
        assert_eq!(agg.total_time_ms, Some(60.0 + 110.0));
        assert_eq!((agg.avg_ns, agg.samples_ns.len()), (None, 0), "llama-bench figures are for token tests");
        assert_eq!(agg.total_tokens, 10);
        assert_eq!((agg.eval_count, agg.prompt_eval_count), (5, 9));
        assert_eq!(agg.prompt_tokens_per_second, Some(500.0));
        let overhead = agg.harness_overhead.unwrap();
        assert_eq!(overhead.eval_ms_velollm, 120.0);
        assert_eq!(overhead.eval_ms_engine, 117.0);
        assert!((overhead.eval_overhead_percent.unwrap() - (120.0 / 117.0 - 1.0) * 100.0).abs() < 1e-12);
        assert_eq!(overhead.prompt_eval_ratio, Some(1.0));
        // 100 vs 50 tok/s is a 47 % coefficient of variation: warned about.
        assert!(agg.warnings.iter().any(|w| w.contains("varies")));
    }

    fn http_sample(client_total_ms: u64, server_total_ms: Option<u64>) -> RawSample {
        RawSample {
            prompt_tokens: 4,
            tokenize_ns: 0,
            prompt_eval_ns: 2_000_000,
            token_times_ns: vec![],
            stop_reason: StopReason::Length,
            eog_tokens: 0,
            token_ids: vec![],
            engine_counters: None,
            server: Some(crate::ServerSample {
                prompt: "[1] p".into(),
                prompt_eval_count: Some(4),
                prompt_eval_duration_ns: Some(2_000_000),
                eval_count: Some(3),
                eval_duration_ns: Some(30_000_000),
                total_duration_ns: server_total_ms.map(|ms| ms * 1_000_000),
                load_duration_ns: None,
                done_reason: Some("length".into()),
                chunks: [10u64, 20, 30]
                    .iter()
                    .map(|&ms| crate::ChunkArrival { time_ns: ms * 1_000_000, text: "x".into() })
                    .collect(),
                client_total_ns: client_total_ms * 1_000_000,
                truncated: Some(false),
                rate_from_client: false,
                eval_count_source: None,
                prompt_cached_tokens: None,
            }),
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        }
    }

    #[test]
    fn http_overhead_compares_the_client_clock_with_the_server_total() {
        let agg = Aggregates::from_samples(vec![http_sample(50, Some(40)), http_sample(70, Some(40))], 3);
        let http = agg.http_overhead.unwrap();
        assert_eq!((http.client_total_ms, http.server_total_ms, http.overhead_ms), (120.0, 80.0, 40.0));
        assert_eq!(http.overhead_ms_per_request, 20.0);
        assert_eq!(http.overhead_percent, Some(50.0));
        // Client rate: (3 − 1) tokens over 20 ms between the first and last text chunk.
        assert_eq!(http.client_tokens_per_second, Some(100.0));
        assert_eq!(agg.tokens_per_second, Some(100.0), "server: 3 tokens in 30 ms");
        assert!(agg.harness_overhead.is_none());
        assert!(agg.statistics.inter_token_latency_ms.is_none(), "chunks are not tokens");
        // One iteration without the server's total: no overhead figure rather than a partial one.
        let agg = Aggregates::from_samples(vec![http_sample(50, Some(40)), http_sample(70, None)], 3);
        assert!(agg.http_overhead.is_none());
    }

    #[test]
    fn measured_displays_value_or_absence() {
        assert_eq!(format!("{:.1}", Measured(Some(84.04))), "84.0");
        assert_eq!(format!("{}", Measured(None)), "n/a");
        assert_eq!(serde_json::to_string(&Measured(None)).unwrap(), "null");
        assert_eq!(serde_json::to_string(&Measured(Some(1.5))).unwrap(), "1.5");
    }

    #[test]
    fn short_iterations_are_flagged() {
        let agg = Aggregates::from_samples(vec![sample(20, 10, 3, 20.0)], 5);
        assert!(agg.warnings.iter().any(|w| w.contains("stopped before 5 tokens")));
    }

    #[test]
    fn an_iteration_without_tokens_is_kept_and_counted() {
        let agg = Aggregates::from_samples(vec![sample(20, 10, 5, 39.0), sample(0, 0, 0, 0.0)], 5);
        assert_eq!(agg.records.len(), 2, "the empty iteration is recorded");
        assert_eq!(agg.records[1].metrics.eval_count, 0);
        assert_eq!(agg.statistics.tokens_per_second.unwrap().n, 1, "only one iteration has a rate");
        assert_eq!((agg.total_tokens, agg.eval_count), (5, 3), "the mean count includes the empty iteration");
        assert!(agg.warnings.iter().any(|w| w.contains("iterations [2] generated no token")), "{:?}", agg.warnings);
    }

    #[test]
    fn token_tests_get_llama_bench_figures() {
        // tg4 twice: 4 tokens in 40 ms (100 t/s) and in 80 ms (50 t/s).
        let tg = |gap_ms: u64| {
            let mut s = sample(gap_ms, gap_ms, 4, 0.0);
            s.prompt_tokens = 0;
            s.prompt_eval_ns = 0;
            s.test_ns = Some(4 * gap_ms * 1_000_000);
            s.engine_counters = Some(EngineCounters {
                prompt_eval_count: 0,
                prompt_eval_ms: 0.0,
                eval_count: 4,
                eval_ms: 4.0 * gap_ms as f64 * 0.99,
            });
            s
        };
        let agg = Aggregates::from_samples(vec![tg(10), tg(20)], 4);
        assert_eq!(agg.samples_ns, [40_000_000, 80_000_000]);
        assert_eq!(agg.samples_ts, [100.0, 50.0]);
        // llama-bench's avg_ts and stddev_ts: the row's rate and the spread of its statistics.
        assert_eq!((agg.avg_ns, agg.tokens_per_second), (Some(60e6), Some(75.0)));
        let spread = agg.statistics.tokens_per_second.unwrap().stddev.unwrap();
        assert!((spread - 1250f64.sqrt()).abs() < 1e-9, "sample stddev of 100 and 50");
        // The decode interval compared with the engine's is the whole region after the prompt part.
        let overhead = agg.harness_overhead.unwrap();
        assert_eq!(overhead.eval_ms_velollm, 120.0);
        assert!((overhead.eval_ms_engine - 118.8).abs() < 1e-9);
    }

    #[test]
    fn truncated_server_requests_are_flagged() {
        let mut s = http_sample(50, Some(40));
        s.server.as_mut().unwrap().truncated = Some(true);
        let agg = Aggregates::from_samples(vec![s], 3);
        assert!(agg.warnings.iter().any(|w| w.contains("iterations [1] filled the server's context")));
    }

    #[test]
    fn nothing_measured_is_absent_not_zero() {
        let agg = Aggregates::from_samples(vec![], 5);
        assert_eq!(agg.tokens_per_second, None);
        assert_eq!(agg.total_time_ms, None);
        assert_eq!(agg.time_to_first_token_ms, None);
        assert!(agg.harness_overhead.is_none());
        assert!(agg.statistics.tokens_per_second.is_none());
    }

    #[test]
    fn batched_rows_average_the_columns_and_check_the_engine_on_totals() {
        let with_counters = |counters: EngineCounters| {
            let mut s = crate::metrics::tests::batched_sample(false);
            s.engine_counters = Some(counters);
            s
        };
        // llama.cpp filed the two-token steps as prompt eval: 12 tokens in 99 ms, then 12 in 98 ms.
        let first =
            with_counters(EngineCounters { prompt_eval_count: 12, prompt_eval_ms: 99.0, eval_count: 0, eval_ms: 0.0 });
        let mut second =
            with_counters(EngineCounters { prompt_eval_count: 12, prompt_eval_ms: 98.0, eval_count: 0, eval_ms: 0.0 });
        second.test_ns = Some(200_000_000);
        let agg = Aggregates::from_samples(vec![first, second], 2);
        let b = agg.batched.unwrap();
        assert!((b.t.unwrap() - 0.15).abs() < 1e-12, "mean of 0.1 and 0.2 s");
        assert!((b.speed.unwrap() - (120.0 + 60.0) / 2.0).abs() < 1e-9);
        assert_eq!(b.ttft_ms_per_sequence, [30.0, 40.0]);
        assert_eq!(b.ttft_mean_ms, Some(35.0));
        let check = b.engine_check.unwrap();
        assert_eq!((check.tokens_velollm, check.tokens_engine), (24, 24));
        assert!((check.ratio.unwrap() - 300.0 / 197.0).abs() < 1e-12);
        assert!(agg.harness_overhead.is_none(), "llama.cpp's eval/prompt split does not fit batched steps");
        assert_eq!(agg.tokens_per_second, b.speed);
        // Pooled ITL from every sequence's own gaps.
        assert_eq!(agg.statistics.inter_token_latency_ms.unwrap().max, 40.0);
        // A row without counters has no check, and a text row no batched figures.
        let agg = Aggregates::from_samples(vec![crate::metrics::tests::batched_sample(false)], 2);
        assert!(agg.batched.unwrap().engine_check.is_none());
        assert!(Aggregates::from_samples(vec![sample(20, 10, 5, 39.0)], 5).batched.is_none());
    }
}
