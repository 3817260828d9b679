//! The guide's console view, drawn from runner events.
//!
//! Everything here runs between timed regions: the runner calls an observer only before or after an
//! iteration, never inside one.

use std::io::Write;

use velollm_benchmarks::{EngineInfo, Observer};
use velollm_core::{BenchmarkConfig, BenchmarkResult, IterationMetrics, ModelIdentity, Summary};

use crate::JsonFile;

const RULE: &str = "═══════════════════════════════════════════════════════";

/// Prints progress the way the guide shows it and saves results to JSON as each benchmark finishes.
pub struct ConsoleReporter {
    /// Progress lines (header, iterations); the summary is printed regardless.
    pub show_progress: bool,
    /// Where to save results, rewritten after every finished benchmark so an interruption loses nothing.
    pub json: Option<JsonFile>,
    /// Results so far.
    pub results: Vec<BenchmarkResult>,
    /// The first error met while saving, reported at the end.
    pub save_error: Option<String>,
    /// A line printed before the next benchmark starts (the guide's "Running 3 benchmarks..."), so it follows
    /// the availability check and the model load, as in the guide.
    pub announcement: Option<String>,
}

impl ConsoleReporter {
    pub fn new(show_progress: bool, json: Option<JsonFile>) -> ConsoleReporter {
        ConsoleReporter { show_progress, json, results: Vec::new(), save_error: None, announcement: None }
    }

    fn say(&self, text: std::fmt::Arguments<'_>) {
        if self.show_progress {
            let mut out = std::io::stdout().lock();
            let _ = out.write_fmt(text);
            let _ = out.flush();
        }
    }
}

/// The run header: backend, model, and the parameters that shape the numbers.
pub fn header(backend: &str, model: &str, settings: &str) -> String {
    format!("🚀 VeloLLM Benchmark Suite\n\nBackend: {backend}\nModel: {model}\nSettings: {settings}\n")
}

fn describe_model(model: &ModelIdentity) -> String {
    let mut parts = Vec::new();
    if let Some(arch) = &model.architecture {
        parts.push(arch.clone());
    }
    if let Some(params) = model.parameter_count {
        parts.push(format!("{:.1}M params", params as f64 / 1e6));
    }
    if let Some(q) = &model.quantization {
        parts.push(q.clone());
    }
    if model.bytes > 0 {
        parts.push(format!("{:.1} MB", model.bytes as f64 / 1e6));
    }
    if model.synthetic {
        parts.push("SYNTHETIC weights".into());
    }
    if let Some(digest) = &model.digest {
        parts.push(format!("Ollama digest {}", short_digest(digest)));
    }
    parts.join(", ")
}

fn mean_pm(summary: Option<&Summary>, unit: &str) -> String {
    match summary {
        Some(s) => match s.stddev {
            Some(sd) => format!("{:.1} ± {:.1}{unit}", s.mean, sd),
            None => format!("{:.1}{unit}", s.mean),
        },
        None => "n/a".to_string(),
    }
}

/// The first 12 hex digits, as `ollama list` shows digests.
fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// How the guide names a backend in prose.
fn display_name(backend: &str) -> &str {
    match backend {
        "ollama" => "Ollama",
        other => other,
    }
}

impl Observer for ConsoleReporter {
    fn server_checking(&mut self, backend: &str) {
        self.say(format_args!("Checking {} availability... ", display_name(backend)));
    }

    fn server_available(&mut self, _backend: &str, version: Option<&str>) {
        match version {
            Some(version) => self.say(format_args!("✓ (version {version})\n\n")),
            None => self.say(format_args!("✓\n\n")),
        }
    }

    fn server_unavailable(&mut self, _backend: &str) {
        self.say(format_args!("✗\n"));
    }

    fn model_identified(&mut self, model: &ModelIdentity) {
        self.say(format_args!("File: {} ({})\n\nLoading model... ", model.path, describe_model(model)));
    }

    fn model_loaded(&mut self, load_ms: f64, engine: &EngineInfo) {
        let version = engine.version.as_deref().unwrap_or("engine version unknown");
        self.say(format_args!("✓ ({load_ms:.0} ms; {version})\n"));
    }

    fn benchmark_started(&mut self, config: &BenchmarkConfig, _warmup: u32) {
        if let Some(line) = self.announcement.take() {
            self.say(format_args!("\n{line}\n"));
        }
        if self.results.is_empty() {
            self.say(format_args!("\n{RULE}\n"));
        }
        self.say(format_args!("\nRunning benchmark: {} ({} iterations)\n", config.name, config.iterations));
    }

    fn iteration_started(&mut self, config: &BenchmarkConfig, iteration: u32, warmup: bool) {
        if warmup {
            self.say(format_args!("  Warm-up {iteration}... "));
        } else {
            self.say(format_args!("  Iteration {iteration}/{}... ", config.iterations));
        }
    }

    fn warmup_finished(&mut self, _config: &BenchmarkConfig, _iteration: u32) {
        self.say(format_args!("done (not timed)\n"));
    }

    fn iteration_finished(&mut self, _config: &BenchmarkConfig, _iteration: u32, metrics: &IterationMetrics) {
        match metrics.tokens_per_second {
            Some(rate) => self.say(format_args!("{rate:.1} tok/s ({:.0}ms)\n", metrics.total_ms)),
            None => self.say(format_args!("n/a tok/s ({:.0}ms)\n", metrics.total_ms)),
        }
    }

    fn benchmark_finished(&mut self, result: &BenchmarkResult) {
        let stats = &result.statistics;
        self.say(format_args!(
            "  Average: {}, TTFT: {}\n",
            mean_pm(stats.tokens_per_second.as_ref(), " tok/s"),
            mean_pm(stats.time_to_first_token_ms.as_ref(), " ms"),
        ));
        for warning in &result.warnings {
            self.say(format_args!("  ⚠ {warning}\n"));
        }
        self.results.push(result.clone());
        if let Some(json) = &self.json {
            if let Err(e) = json.write(&self.results) {
                self.save_error.get_or_insert(e.to_string());
            }
        }
    }
}

/// The guide's summary block for finished results.
pub fn summary(results: &[BenchmarkResult], saved_to: Option<&str>) -> String {
    let mut out = format!("\n{RULE}\n\n📊 Benchmark Summary\n");
    let several_backends = results.iter().any(|r| r.backend != results[0].backend);
    for r in results {
        let s = &r.statistics;
        let backend = if several_backends { format!(" [{}]", r.backend) } else { String::new() };
        out.push_str(&format!("\n{}{backend}:{}\n", r.config.name, if r.complete { "" } else { " (interrupted)" }));
        out.push_str(&format!("  Tokens/s: {}", mean_pm(s.tokens_per_second.as_ref(), "")));
        if let Some(Summary { ci95_low: Some(lo), ci95_high: Some(hi), median, .. }) = s.tokens_per_second {
            out.push_str(&format!(" (median {median:.1}, 95% CI {lo:.1}–{hi:.1})"));
        }
        out.push('\n');
        out.push_str(&format!("  TTFT: {}\n", mean_pm(s.time_to_first_token_ms.as_ref(), "ms")));
        if let Some(rate) = r.prompt_tokens_per_second {
            out.push_str(&format!("  Prompt: {} tokens at {rate:.1} tok/s\n", r.prompt_eval_count));
        }
        if let Some(itl) = s.inter_token_latency_ms {
            out.push_str(&format!(
                "  Inter-token latency: p50 {:.1}ms, p90 {:.1}ms, p99 {:.1}ms, max {:.1}ms\n",
                itl.p50, itl.p90, itl.p99, itl.max
            ));
        }
        if let Some(http) = r.http_overhead {
            out.push_str(&format!(
                "  HTTP overhead: {:.1}ms per request (client {:.1}ms vs server {:.1}ms{}); client-side decode {}\n",
                http.overhead_ms_per_request,
                http.client_total_ms,
                http.server_total_ms,
                http.overhead_percent.map(|p| format!(", {p:+.1} %")).unwrap_or_default(),
                http.client_tokens_per_second.map_or("n/a".into(), |t| format!("{t:.1} tok/s")),
            ));
        }
        out.push_str(&format!("  Total tokens: {}\n", r.total_tokens));
        out.push_str(&format!("  Total time: {:.1}s\n", r.total_time_ms / 1000.0));
    }
    // One overall line per backend: averaging llama.cpp's rows with candle's or Ollama's would describe no engine.
    let mut backends: Vec<&str> = Vec::new();
    for r in results {
        if !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
    }
    for backend in &backends {
        let rows = results.iter().filter(|r| r.backend == *backend);
        let rates: Vec<f64> = rows.clone().filter_map(|r| r.tokens_per_second.value()).collect();
        let ttfts: Vec<f64> = rows.clone().filter_map(|r| r.time_to_first_token_ms.value()).collect();
        // Pooled over the backend's benchmarks: velollm's decode time against the engine's own counters.
        let (ours, engine) = rows
            .filter_map(|r| r.harness_overhead)
            .fold((0.0, 0.0), |(a, b), o| (a + o.eval_ms_velollm, b + o.eval_ms_engine));
        match backends.len() {
            1 => out.push_str("\nOverall Average:\n"),
            _ => out.push_str(&format!("\nOverall Average [{backend}]:\n")),
        }
        out.push_str(&format!("  Tokens/s: {}\n", mean_of(&rates, "")));
        out.push_str(&format!("  TTFT: {}\n", mean_of(&ttfts, "ms")));
        if engine > 0.0 {
            let pct = (ours / engine - 1.0) * 100.0;
            out.push_str(&format!("  Harness overhead vs the engine's own decode timer: {pct:+.2} %\n"));
        }
    }
    match saved_to {
        Some(path) => out.push_str(&format!("\n💾 Results saved to {path}\n")),
        None => out.push_str("\n💡 Tip: Use -o <file> to save results to JSON\n"),
    }
    out
}

/// The side-by-side table of a comparison run (`-b llamacpp,ollama`): per benchmark, each backend's decode
/// rate, TTFT and prompt rate. `None` unless the results come from more than one backend.
pub fn comparison(results: &[BenchmarkResult]) -> Option<String> {
    let mut backends: Vec<&str> = Vec::new();
    let mut benchmarks: Vec<&str> = Vec::new();
    for r in results {
        if !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
        if !benchmarks.contains(&r.config.name.as_str()) {
            benchmarks.push(&r.config.name);
        }
    }
    if backends.len() < 2 {
        return None;
    }
    let number = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "\n⚖ Backend comparison\n\n{:<20} {:<10} {:>10} {:>10} {:>14}\n",
        "benchmark", "backend", "tok/s", "TTFT ms", "prompt tok/s"
    );
    for name in &benchmarks {
        for backend in &backends {
            let Some(r) = results.iter().find(|r| r.config.name == *name && r.backend == *backend) else {
                out.push_str(&format!("{name:<20} {backend:<10} {:>10} {:>10} {:>14}\n", "-", "-", "-"));
                continue;
            };
            out.push_str(&format!(
                "{name:<20} {backend:<10} {:>10} {:>10} {:>14}\n",
                number(r.tokens_per_second.value()),
                number(r.time_to_first_token_ms.value()),
                number(r.prompt_tokens_per_second),
            ));
        }
    }
    Some(out)
}

fn mean_of(values: &[f64], unit: &str) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    format!("{:.1}{unit}", values.iter().sum::<f64>() / values.len() as f64)
}
