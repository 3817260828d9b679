//! A row flattened to named scalar columns: what the CSV and SQL exporters write, one column set for both.
//!
//! Requested parameters keep llama-bench's names (`n_threads`, `n_batch`, …); what the engine applied is
//! beside them as `effective_…`. Lists (samples, GPU devices, warnings) become one text cell. A value that was
//! not measured or does not apply is empty (CSV) or `NULL` (SQL), never zero.

use velollm_core::{
    BenchmarkResult, EngineBuffer, LatencyDistribution, LoadRecord, LoadShape, RowStatus, Summary, TestKind,
};

/// A cell's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

/// The SQL type a column is declared with (SQLite stores what it is given; `n_gpu_layers` holds a number or
/// the word `all`, which sorts after every number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Integer,
    Real,
    Text,
}

impl SqlType {
    pub fn name(self) -> &'static str {
        match self {
            SqlType::Integer => "INTEGER",
            SqlType::Real => "REAL",
            SqlType::Text => "TEXT",
        }
    }
}

/// One column: its name, its declared type, and how a row gives its value.
pub struct Column {
    pub name: &'static str,
    pub sql_type: SqlType,
    pub cell: fn(&BenchmarkResult) -> Cell,
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> Cell {
    s.map_or(Cell::Null, text)
}

fn int(v: impl TryInto<i64>) -> Cell {
    v.try_into().map_or(Cell::Null, Cell::Int)
}

fn opt_int<T: TryInto<i64>>(v: Option<T>) -> Cell {
    v.map_or(Cell::Null, int)
}

fn real(v: Option<f64>) -> Cell {
    match v {
        Some(v) if v.is_finite() => Cell::Real(v),
        _ => Cell::Null,
    }
}

fn word<T: serde::Serialize>(value: &T) -> Cell {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Cell::Text(s),
        Ok(serde_json::Value::Null) | Err(_) => Cell::Null,
        Ok(other) => Cell::Text(other.to_string()),
    }
}

fn list<T: ToString>(values: &[T]) -> Cell {
    if values.is_empty() {
        Cell::Null
    } else {
        Cell::Text(values.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
    }
}

fn stat(summary: Option<&Summary>, f: fn(&Summary) -> Option<f64>) -> Cell {
    real(summary.and_then(f))
}

fn buffer_bytes(buffers: &[EngineBuffer], kind: &str) -> Option<u64> {
    let matching = buffers.iter().filter(|b| b.kind == kind);
    matching.clone().next().map(|_| matching.map(|b| b.bytes).sum())
}

fn status_word(status: RowStatus) -> &'static str {
    match status {
        RowStatus::Ok => "ok",
        RowStatus::Incomplete => "incomplete",
        RowStatus::Failed => "failed",
    }
}

/// A load row's figure (absent on other rows).
fn load_real(r: &BenchmarkResult, f: fn(&LoadRecord) -> Option<f64>) -> Cell {
    real(r.load.as_ref().and_then(f))
}

/// A figure of one of a load row's latency distributions.
fn load_dist(
    r: &BenchmarkResult,
    pick: fn(&LoadRecord) -> Option<&LatencyDistribution>,
    f: fn(&LatencyDistribution) -> f64,
) -> Cell {
    real(r.load.as_ref().and_then(pick).map(f))
}

macro_rules! col {
    ($name:literal, $ty:ident, $f:expr) => {
        Column { name: $name, sql_type: SqlType::$ty, cell: $f }
    };
}

/// Every column, in order.
pub const COLUMNS: &[Column] = &[
    // What ran, and how it ended.
    col!("timestamp", Text, |r| text(&r.timestamp)),
    col!("schema_version", Integer, |r| int(r.schema_version)),
    col!("benchmark", Text, |r| text(&r.config.name)),
    col!("backend", Text, |r| text(&r.backend)),
    col!("status", Text, |r| text(status_word(r.status))),
    col!("error", Text, |r| opt_text(r.error.as_deref())),
    col!("test_kind", Text, |r| word(&r.test.kind)),
    col!("n_prompt", Integer, |r| int(r.test.n_prompt)),
    col!("n_gen", Integer, |r| int(r.test.n_gen)),
    col!("n_depth", Integer, |r| int(r.test.n_depth)),
    col!("prompt", Text, |r| if r.test.kind == TestKind::Text { text(&r.config.prompt) } else { Cell::Null }),
    col!("max_tokens", Integer, |r| int(r.config.max_tokens)),
    col!("iterations", Integer, |r| int(r.config.iterations)),
    col!("iterations_completed", Integer, |r| int(r.iterations_completed)),
    col!("repetitions_mode", Text, |r| text(&r.repetitions.mode)),
    col!("stopped_because", Text, |r| word(&r.repetitions.stopped_because)),
    col!("warmup_iterations", Integer, |r| int(r.parameters.warmup_iterations)),
    col!("seed", Integer, |r| int(r.parameters.generation.seed)),
    col!("sampler", Text, |r| text(&r.parameters.generation.sampler)),
    col!("stop_at_eos", Integer, |r| Cell::Bool(r.parameters.generation.stop_at_eos)),
    // Requested parameters (llama-bench's names).
    col!("n_gpu_layers", Integer, |r| match r.parameters.requested.load.n_gpu_layers {
        velollm_core::GpuLayers::Count(n) => int(n),
        velollm_core::GpuLayers::All => text("all"),
    }),
    col!("split_mode", Text, |r| text(&r.parameters.requested.load.split_mode.to_string())),
    col!("main_gpu", Integer, |r| int(r.parameters.requested.load.main_gpu)),
    col!("use_mmap", Integer, |r| Cell::Bool(r.parameters.requested.load.use_mmap)),
    col!("devices", Text, |r| text(&r.parameters.requested.load.devices.to_string())),
    col!("tensor_split", Text, |r| text(&r.parameters.requested.load.tensor_split.to_string())),
    col!("n_ctx", Integer, |r| int(r.parameters.requested.context.n_ctx)),
    col!("n_batch", Integer, |r| int(r.parameters.requested.context.n_batch)),
    col!("n_ubatch", Integer, |r| int(r.parameters.requested.context.n_ubatch)),
    col!("n_threads", Integer, |r| int(r.parameters.requested.context.n_threads)),
    col!("flash_attn", Text, |r| text(&r.parameters.requested.context.flash_attn.to_string())),
    col!("type_k", Text, |r| text(r.parameters.requested.context.type_k.name())),
    col!("type_v", Text, |r| text(r.parameters.requested.context.type_v.name())),
    // What the engine applied (empty when the row failed before a context existed).
    col!("effective_n_gpu_layers", Integer, |r| opt_int(
        r.parameters.effective.as_ref().and_then(|e| e.load.n_gpu_layers)
    )),
    col!("n_layers_total", Integer, |r| opt_int(r.parameters.effective.as_ref().and_then(|e| e.load.n_layers_total))),
    col!("gpu_devices", Text, |r| r.parameters.effective.as_ref().map_or(Cell::Null, |e| list(&e.load.gpu_devices))),
    // Where llama.cpp put the layers: `CPU:11,RPC0:10,RPC1:10` (empty when the engine does not say).
    col!("layers_per_device", Text, |r| {
        r.parameters.effective.as_ref().map_or(Cell::Null, |e| {
            list(&e.load.devices.iter().map(|d| format!("{}:{}", d.name, d.layers)).collect::<Vec<_>>())
        })
    }),
    col!("effective_split_mode", Text, |r| {
        opt_text(r.parameters.effective.as_ref().and_then(|e| e.load.split_mode).map(|s| s.to_string()).as_deref())
    }),
    col!("effective_main_gpu", Integer, |r| opt_int(r.parameters.effective.as_ref().and_then(|e| e.load.main_gpu))),
    col!("effective_use_mmap", Integer, |r| {
        r.parameters.effective.as_ref().and_then(|e| e.load.use_mmap).map_or(Cell::Null, Cell::Bool)
    }),
    col!("effective_n_ctx", Integer, |r| opt_int(r.parameters.effective.as_ref().map(|e| e.context.n_ctx))),
    col!("effective_n_batch", Integer, |r| opt_int(r.parameters.effective.as_ref().and_then(|e| e.context.n_batch))),
    col!("effective_n_ubatch", Integer, |r| opt_int(r.parameters.effective.as_ref().and_then(|e| e.context.n_ubatch))),
    col!("effective_n_threads", Integer, |r| {
        opt_int(r.parameters.effective.as_ref().and_then(|e| e.context.n_threads))
    }),
    col!("effective_flash_attn", Text, |r| {
        opt_text(r.parameters.effective.as_ref().and_then(|e| e.context.flash_attn).map(|f| f.to_string()).as_deref())
    }),
    col!("effective_type_k", Text, |r| opt_text(
        r.parameters.effective.as_ref().and_then(|e| e.context.type_k.as_deref())
    )),
    col!("effective_type_v", Text, |r| opt_text(
        r.parameters.effective.as_ref().and_then(|e| e.context.type_v.as_deref())
    )),
    col!("model_buffer_bytes", Integer, |r| {
        opt_int(r.parameters.effective.as_ref().and_then(|e| buffer_bytes(&e.load.model_buffers, "model")))
    }),
    col!("kv_cache_bytes", Integer, |r| {
        opt_int(r.parameters.effective.as_ref().and_then(|e| buffer_bytes(&e.context.context_buffers, "kv_cache")))
    }),
    col!("compute_buffer_bytes", Integer, |r| {
        opt_int(r.parameters.effective.as_ref().and_then(|e| buffer_bytes(&e.context.context_buffers, "compute")))
    }),
    // Rates and their spread (docs/metrics.md).
    col!("tokens_per_second", Real, |r| real(r.tokens_per_second.value())),
    col!("tokens_per_second_stddev", Real, |r| stat(r.statistics.tokens_per_second.as_ref(), |s| s.stddev)),
    col!("tokens_per_second_median", Real, |r| stat(r.statistics.tokens_per_second.as_ref(), |s| Some(s.median))),
    col!("tokens_per_second_min", Real, |r| stat(r.statistics.tokens_per_second.as_ref(), |s| Some(s.min))),
    col!("tokens_per_second_max", Real, |r| stat(r.statistics.tokens_per_second.as_ref(), |s| Some(s.max))),
    col!("tokens_per_second_ci95_low", Real, |r| stat(r.statistics.tokens_per_second.as_ref(), |s| s.ci95_low)),
    col!("tokens_per_second_ci95_high", Real, |r| stat(r.statistics.tokens_per_second.as_ref(), |s| s.ci95_high)),
    col!("time_to_first_token_ms", Real, |r| real(r.time_to_first_token_ms.value())),
    col!("time_to_first_token_ms_stddev", Real, |r| stat(r.statistics.time_to_first_token_ms.as_ref(), |s| s.stddev)),
    col!("time_to_first_token_ms_median", Real, |r| {
        stat(r.statistics.time_to_first_token_ms.as_ref(), |s| Some(s.median))
    }),
    col!("prompt_tokens_per_second", Real, |r| real(r.prompt_tokens_per_second)),
    col!("prompt_tokens_per_second_stddev", Real, |r| {
        stat(r.statistics.prompt_tokens_per_second.as_ref(), |s| s.stddev)
    }),
    col!("total_time_ms", Real, |r| real(r.total_time_ms.value())),
    col!("total_tokens", Integer, |r| int(r.total_tokens)),
    col!("prompt_eval_count", Integer, |r| int(r.prompt_eval_count)),
    col!("eval_count", Integer, |r| int(r.eval_count)),
    col!("inter_token_latency_p50_ms", Real, |r| real(r.statistics.inter_token_latency_ms.map(|l| l.p50))),
    col!("inter_token_latency_p90_ms", Real, |r| real(r.statistics.inter_token_latency_ms.map(|l| l.p90))),
    col!("inter_token_latency_p99_ms", Real, |r| real(r.statistics.inter_token_latency_ms.map(|l| l.p99))),
    col!("inter_token_latency_max_ms", Real, |r| real(r.statistics.inter_token_latency_ms.map(|l| l.max))),
    // llama-bench's figures (token tests).
    col!("avg_ns", Real, |r| real(r.avg_ns)),
    col!("stddev_ns", Real, |r| real(r.stddev_ns)),
    // llama-bench's column names for the row's rate and its spread (the JSON row keeps one name for each since
    // schema 3: `tokens_per_second`, `statistics.tokens_per_second`); token tests only, as llama-bench's.
    col!("avg_ts", Real, |r| real(r.rate().filter(|_| !r.samples_ts.is_empty()))),
    col!("stddev_ts", Real, |r| {
        real(r.statistics.tokens_per_second.and_then(|s| s.stddev).filter(|_| !r.samples_ts.is_empty()))
    }),
    col!("samples_ns", Text, |r| list(&r.samples_ns)),
    col!("samples_ts", Text, |r| list(&r.samples_ts)),
    // Times kept out of every iteration, and the cross-checks.
    col!("load_time_ms", Real, |r| real(r.load_time_ms)),
    col!("context_time_ms", Real, |r| real(r.context_time_ms)),
    col!("startup_to_first_timed_iteration_ms", Real, |r| real(r.startup_to_first_timed_iteration_ms)),
    col!("harness_eval_overhead_percent", Real, |r| real(r.harness_overhead.and_then(|h| h.eval_overhead_percent))),
    col!("http_overhead_ms_per_request", Real, |r| real(r.http_overhead.map(|h| h.overhead_ms_per_request))),
    col!("warnings", Text, |r| if r.warnings.is_empty() { Cell::Null } else { Cell::Text(r.warnings.join("; ")) }),
    // The model.
    col!("model", Text, |r| text(&r.config.model)),
    col!("model_name", Text, |r| opt_text(r.model.name.as_deref())),
    col!("model_path", Text, |r| text(&r.model.path)),
    col!("model_bytes", Integer, |r| int(r.model.bytes)),
    col!("model_sha256", Text, |r| opt_text(r.model.sha256.as_deref())),
    col!("model_architecture", Text, |r| opt_text(r.model.architecture.as_deref())),
    col!("model_parameter_count", Integer, |r| opt_int(r.model.parameter_count)),
    col!("model_quantization", Text, |r| opt_text(r.model.quantization.as_deref())),
    col!("model_synthetic", Integer, |r| Cell::Bool(r.model.synthetic)),
    col!("model_digest", Text, |r| opt_text(r.model.digest.as_deref())),
    // Where it ran.
    col!("velollm_version", Text, |r| text(&r.environment.velollm_version)),
    col!("velollm_git_commit", Text, |r| opt_text(r.environment.velollm_git_commit.as_deref())),
    col!("backend_version", Text, |r| opt_text(r.environment.backend_version.as_deref())),
    col!("backend_build", Text, |r| opt_text(r.environment.backend_build.as_deref())),
    col!("cpu_model", Text, |r| opt_text(r.environment.cpu_model.as_deref())),
    col!("cpu_physical_cores", Integer, |r| opt_int(r.environment.cpu_physical_cores)),
    col!("cpu_logical_cpus", Integer, |r| opt_int(r.environment.cpu_logical_cpus)),
    col!("ram_bytes", Integer, |r| opt_int(r.environment.ram_bytes)),
    col!("os", Text, |r| text(&r.environment.os)),
    col!("kernel", Text, |r| opt_text(r.environment.kernel.as_deref())),
    col!("hostname", Text, |r| opt_text(r.environment.hostname.as_deref())),
    col!("server_url", Text, |r| opt_text(r.server.as_ref().map(|s| s.url.as_str()))),
    col!("server_version", Text, |r| opt_text(r.server.as_ref().and_then(|s| s.version.as_deref()))),
    col!("weight_bytes_per_token", Integer, |r| opt_int(r.model.weight_bytes_per_token)),
    col!("decode_efficiency_percent", Real, |r| real(r.decode_efficiency.as_ref().map(|e| e.percent_of_roofline))),
    col!("telemetry_sampler", Text, |r| opt_text(r.telemetry.as_ref().map(|t| t.sampler.as_str()))),
    col!("energy_joules", Real, |r| real(r.telemetry.as_ref().and_then(|t| t.energy_joules))),
    col!("joules_per_token", Real, |r| real(r.telemetry.as_ref().and_then(|t| t.joules_per_token))),
    col!("peak_rss_bytes", Integer, |r| opt_int(r.telemetry.as_ref().and_then(|t| t.peak_rss_bytes))),
    col!("peak_vram_used_bytes", Integer, |r| {
        opt_int(r.telemetry.as_ref().and_then(|t| t.gpus.iter().filter_map(|g| g.peak_vram_used_bytes).max()))
    }),
    col!("gpu_names", Text, |r| r
        .hardware
        .as_ref()
        .map_or(Cell::Null, |h| { list(&h.gpus.iter().filter_map(|g| g.name.clone()).collect::<Vec<_>>()) })),
    // Load runs (--concurrency, --request-rate, --sweep): empty on other rows.
    col!("load_mode", Text, |r| opt_text(r.load.as_ref().map(|l| match l.profile.shape {
        LoadShape::Closed { .. } => "closed",
        LoadShape::Open { .. } => "open",
    }))),
    col!("load_concurrency", Integer, |r| opt_int(r.load.as_ref().and_then(|l| match l.profile.shape {
        LoadShape::Closed { concurrency } => Some(concurrency),
        LoadShape::Open { .. } => None,
    }))),
    col!("load_request_rate", Text, |r| opt_text(
        r.load
            .as_ref()
            .and_then(|l| match l.profile.shape {
                LoadShape::Open { rate: Some(rate), .. } => Some(velollm_core::trim_float(rate)),
                LoadShape::Open { rate: None, .. } => Some("inf".to_string()),
                LoadShape::Closed { .. } => None,
            })
            .as_deref()
    )),
    col!("load_burstiness", Real, |r| load_real(r, |l| match l.profile.shape {
        LoadShape::Open { burstiness, .. } => Some(burstiness),
        LoadShape::Closed { .. } => None,
    })),
    col!("load_sweep_phase", Text, |r| opt_text(
        r.load.as_ref().and_then(|l| l.sweep.as_ref()).map(|s| s.phase.as_str())
    )),
    col!("load_requests_sent", Integer, |r| opt_int(r.load.as_ref().map(|l| l.requests_sent))),
    col!("load_completed", Integer, |r| opt_int(r.load.as_ref().map(|l| l.completed))),
    col!("load_failed", Integer, |r| opt_int(r.load.as_ref().map(|l| l.failed))),
    col!("load_failures", Text, |r| r.load.as_ref().filter(|l| !l.failures.is_empty()).map_or(Cell::Null, |l| {
        Cell::Text(l.failures.iter().map(|(why, n)| format!("{n} x {why}")).collect::<Vec<_>>().join("; "))
    })),
    col!("load_max_in_flight", Integer, |r| opt_int(r.load.as_ref().map(|l| l.max_in_flight))),
    col!("load_duration_ms", Real, |r| load_real(r, |l| Some(l.duration_ms))),
    col!("load_request_throughput", Real, |r| load_real(r, |l| l.request_throughput)),
    col!("load_output_tokens_per_second", Real, |r| load_real(r, |l| l.output_tokens_per_second)),
    col!("load_total_tokens_per_second", Real, |r| load_real(r, |l| l.total_tokens_per_second)),
    col!("load_output_tokens_counted_by", Text, |r| opt_text(
        r.load.as_ref().and_then(|l| l.output_tokens_counted_by.as_deref())
    )),
    col!("load_ttft_mean_ms", Real, |r| load_dist(r, |l| l.ttft_ms.as_ref(), |d| d.mean)),
    col!("load_ttft_p50_ms", Real, |r| load_dist(r, |l| l.ttft_ms.as_ref(), |d| d.p50)),
    col!("load_ttft_p90_ms", Real, |r| load_dist(r, |l| l.ttft_ms.as_ref(), |d| d.p90)),
    col!("load_ttft_p99_ms", Real, |r| load_dist(r, |l| l.ttft_ms.as_ref(), |d| d.p99)),
    col!("load_tpot_mean_ms", Real, |r| load_dist(r, |l| l.tpot_ms.as_ref(), |d| d.mean)),
    col!("load_tpot_p50_ms", Real, |r| load_dist(r, |l| l.tpot_ms.as_ref(), |d| d.p50)),
    col!("load_tpot_p90_ms", Real, |r| load_dist(r, |l| l.tpot_ms.as_ref(), |d| d.p90)),
    col!("load_tpot_p99_ms", Real, |r| load_dist(r, |l| l.tpot_ms.as_ref(), |d| d.p99)),
    col!("load_itl_mean_ms", Real, |r| load_dist(r, |l| l.itl_ms.as_ref(), |d| d.mean)),
    col!("load_itl_p50_ms", Real, |r| load_dist(r, |l| l.itl_ms.as_ref(), |d| d.p50)),
    col!("load_itl_p90_ms", Real, |r| load_dist(r, |l| l.itl_ms.as_ref(), |d| d.p90)),
    col!("load_itl_p99_ms", Real, |r| load_dist(r, |l| l.itl_ms.as_ref(), |d| d.p99)),
    col!("load_e2e_mean_ms", Real, |r| load_dist(r, |l| l.e2e_ms.as_ref(), |d| d.mean)),
    col!("load_e2e_p50_ms", Real, |r| load_dist(r, |l| l.e2e_ms.as_ref(), |d| d.p50)),
    col!("load_e2e_p90_ms", Real, |r| load_dist(r, |l| l.e2e_ms.as_ref(), |d| d.p90)),
    col!("load_e2e_p99_ms", Real, |r| load_dist(r, |l| l.e2e_ms.as_ref(), |d| d.p99)),
    col!("load_goodput", Real, |r| load_real(r, |l| l.goodput)),
    col!("load_slo_attainment", Real, |r| load_real(r, |l| l.slo_attainment)),
    // Batched tests (-npl): llama-batched-bench's columns, means over the repetitions (times in seconds).
    col!("batched_pl", Integer, |r| opt_int(r.batched.as_ref().map(|b| b.pl))),
    col!("batched_is_pp_shared", Integer, |r| r.batched.as_ref().map_or(Cell::Null, |b| Cell::Bool(b.is_pp_shared))),
    col!("batched_n_kv", Integer, |r| opt_int(r.batched.as_ref().map(|b| b.n_kv))),
    col!("batched_t_pp", Real, |r| real(r.batched.as_ref().and_then(|b| b.t_pp))),
    col!("batched_speed_pp", Real, |r| real(r.batched.as_ref().and_then(|b| b.speed_pp))),
    col!("batched_t_tg", Real, |r| real(r.batched.as_ref().and_then(|b| b.t_tg))),
    col!("batched_speed_tg", Real, |r| real(r.batched.as_ref().and_then(|b| b.speed_tg))),
    col!("batched_t", Real, |r| real(r.batched.as_ref().and_then(|b| b.t))),
    col!("batched_speed", Real, |r| real(r.batched.as_ref().and_then(|b| b.speed))),
    col!("batched_ttft_mean_ms", Real, |r| real(r.batched.as_ref().and_then(|b| b.ttft_mean_ms))),
    col!("batched_itl_p99_ms", Real, |r| real(
        r.batched.as_ref().and_then(|b| b.inter_token_latency_ms).map(|p| p.p99)
    )),
];

/// Every cell of `row`, in column order.
pub fn cells(row: &BenchmarkResult) -> Vec<Cell> {
    COLUMNS.iter().map(|c| (c.cell)(row)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique_sql_identifiers() {
        let mut names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate column names");
    }
}
