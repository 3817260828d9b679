//! The live console: the guide's per-iteration lines (and plain lines for a sweep when stdout is not a
//! terminal), or a progress bar with the combination, the repetition and the time left for a sweep on a
//! terminal. It only draws: keeping rows and writing them is `collect.rs`.
//!
//! Everything here runs between timed regions: the runner calls its observer only before or after an
//! iteration, never inside one.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use velollm_benchmarks::{EngineInfo, Observer, Plan, Position};
use velollm_core::{
    BenchmarkResult, EffectiveContext, EffectiveLoad, IterationMetrics, LoadParams, ModelIdentity, RowStatus,
};
use velollm_export::console::{self, describe_model, display_name, RULE};
use velollm_export::figures::mean_pm;

use crate::collect::{lock, Shared};
use crate::show;

/// How progress is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Summary only (`-q`).
    Quiet,
    /// The guide's lines, one per step.
    Lines,
    /// A progress bar (a sweep on a terminal), with a line per finished row above it.
    Bar,
}

impl Style {
    pub fn choose(quiet: bool, sweep: bool) -> Style {
        if quiet {
            Style::Quiet
        } else if sweep && std::io::stdout().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

pub struct Progress {
    style: Style,
    shared: Shared,
    bar: Option<ProgressBar>,
    /// Whether the rule before the first benchmark was drawn.
    started: bool,
    /// Set after a load: the guide's "Running N benchmarks..." line is due before the next test.
    announce: bool,
    /// Instances per (model, backend) group.
    per_group: usize,
    /// Whether the plan varies any parameter (then each context gets a line naming its values).
    sweep: bool,
    varying: Vec<&'static str>,
    /// Failed rows still to come from a model that did not load: the load failure was said once, they are not.
    silent_failed_rows: usize,
}

impl Progress {
    pub fn new(style: Style, shared: Shared) -> Progress {
        Progress {
            style,
            shared,
            bar: None,
            started: false,
            announce: false,
            per_group: 0,
            sweep: false,
            varying: Vec::new(),
            silent_failed_rows: 0,
        }
    }

    fn say(&self, text: &str) {
        match (self.style, &self.bar) {
            (Style::Quiet, _) => {}
            (Style::Bar, Some(bar)) => {
                // A bar prints whole lines above itself.
                for line in text.trim_end_matches('\n').split('\n') {
                    bar.println(line);
                }
            }
            _ => show(text),
        }
    }

    /// Lines only in the guide's line style (the bar shows the same facts itself).
    fn line(&self, text: &str) {
        if self.style == Style::Lines {
            show(text);
        }
    }

    fn set_phase(&self, phase: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(phase.clone());
        }
        lock(&self.shared).phase = phase;
    }

    /// The parameters of a context that the plan varies, as `name value` pairs.
    fn describe_context(&self, at: &Position<'_>) -> String {
        let load = &at.instance.load;
        let ctx = &at.instance.context;
        let mut parts = Vec::new();
        for name in &self.varying {
            let value = match *name {
                "n_gpu_layers" => load.n_gpu_layers.to_string(),
                "split_mode" => load.split_mode.to_string(),
                "main_gpu" => load.main_gpu.to_string(),
                "use_mmap" => load.use_mmap.to_string(),
                "n_ctx" => ctx.n_ctx.to_string(),
                "n_batch" => ctx.n_batch.to_string(),
                "n_ubatch" => ctx.n_ubatch.to_string(),
                "n_threads" => ctx.n_threads.to_string(),
                "flash_attn" => ctx.flash_attn.to_string(),
                "type_k" => ctx.type_k.to_string(),
                "type_v" => ctx.type_v.to_string(),
                _ => continue,
            };
            parts.push(format!("{name} {value}"));
        }
        parts.join(" · ")
    }
}

impl Observer for Progress {
    fn plan_started(&mut self, plan: &Plan) {
        self.varying = plan.spec.varying();
        self.per_group = plan.instances.len() / (plan.spec.models.len() * plan.spec.backends.len()).max(1);
        self.sweep = self.varying.iter().any(|v| !matches!(*v, "model" | "backend" | "test"));
        if self.style == Style::Bar {
            let bar = ProgressBar::new(plan.instances.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("[{pos}/{len}] {wide_msg} {elapsed_precise} · ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some(bar);
        }
    }

    fn notice(&mut self, text: &str) {
        self.say(&format!("ℹ {text}\n"));
    }

    fn group_started(&mut self, backend: &str, model: &str) {
        let several = self.varying.iter().any(|v| matches!(*v, "model" | "backend"));
        if several {
            self.say(&format!("\n── {model} on {backend} ──\n\n"));
        }
        self.set_phase(format!("starting {backend} on {model}"));
        self.announce = true;
    }

    fn server_checking(&mut self, backend: &str) {
        self.line(&format!("Checking {} availability... ", display_name(backend)));
        self.set_phase(format!("waiting for the {} server", display_name(backend)));
    }

    fn server_available(&mut self, _backend: &str, version: Option<&str>) {
        match version {
            Some(version) => self.line(&format!("✓ (version {version})\n\n")),
            None => self.line("✓\n\n"),
        }
    }

    fn server_unavailable(&mut self, _backend: &str) {
        self.line("✗\n");
    }

    fn model_identified(&mut self, model: &ModelIdentity) {
        if model.path.is_empty() {
            return;
        }
        self.line(&format!("File: {} ({})\n", model.path, describe_model(model)));
        if model.synthetic {
            self.say("⚠ This model has SYNTHETIC (random) weights: its speed is representative, its text is not.\n");
        }
    }

    fn model_loading(&mut self, backend: &str, load: &LoadParams) {
        self.line("\nLoading model... ");
        self.set_phase(format!("loading the model on {backend} (n_gpu_layers {})", load.n_gpu_layers));
    }

    fn model_loaded(&mut self, load_ms: f64, engine: &EngineInfo, effective: &EffectiveLoad) {
        let version = engine.version.as_deref().unwrap_or("engine version unknown");
        let offload = match (effective.n_gpu_layers, effective.n_layers_total) {
            // With an offload device in play, say where every layer went (CPU 11 · RPC0 10 · RPC1 10).
            (Some(_), Some(total)) if effective.devices.iter().any(|d| d.backend != "CPU") => {
                let split: Vec<String> = effective.devices.iter().map(|d| format!("{} {}", d.name, d.layers)).collect();
                format!("; layers of {total}: {}", split.join(" · "))
            }
            (Some(done), Some(total)) => format!("; {done}/{total} layers on a GPU"),
            _ => String::new(),
        };
        self.line(&format!("✓ ({load_ms:.0} ms; {version}{offload})\n"));
    }

    fn model_load_failed(&mut self, _backend: &str, error: &str, rows: usize) {
        // Said once, where the load was announced; the rows it fails are not listed one by one.
        match self.style {
            Style::Lines => self.line(&format!("✗ {error}\n")),
            _ => self.say(&format!("✗ {error}\n")),
        }
        self.silent_failed_rows += rows;
    }

    fn context_created(&mut self, effective: &EffectiveContext, warnings: &[String]) {
        for warning in warnings {
            self.say(&format!("  ⚠ {warning}\n"));
        }
        let _ = effective;
    }

    fn test_started(&mut self, at: &Position<'_>, _warmup_iterations: u32) {
        if std::mem::take(&mut self.announce) {
            let n = self.per_group;
            self.line(&format!("\nRunning {n} benchmark{}...\n", if n == 1 { "" } else { "s" }));
        }
        if !self.started {
            self.started = true;
            self.line(&format!("\n{RULE}\n"));
        }
        let what = if at.auto {
            format!("up to {} iterations, until the 95% CI is narrow enough", at.planned)
        } else {
            format!("{} iterations", at.planned)
        };
        let context = if self.sweep { format!(" [{}]", self.describe_context(at)) } else { String::new() };
        self.line(&format!("\nRunning benchmark: {}{context} ({what})\n", at.config.name));
    }

    fn iteration_started(&mut self, at: &Position<'_>, iteration: u32, warmup: bool) {
        let name = &at.config.name;
        if warmup {
            self.line(&format!("  Warm-up {iteration}... "));
            self.set_phase(format!("the warm-up of {name}"));
        } else {
            self.line(&format!("  Iteration {iteration}/{}... ", at.planned));
            let context = if self.sweep { format!(" [{}]", self.describe_context(at)) } else { String::new() };
            self.set_phase(format!("iteration {iteration}/{} of {name}{context}", at.planned));
        }
    }

    fn warmup_finished(&mut self, _at: &Position<'_>, _iteration: u32) {
        self.line("done (not timed)\n");
    }

    fn iteration_finished(&mut self, _at: &Position<'_>, _iteration: u32, metrics: &IterationMetrics) {
        let rate = metrics.tokens_per_second.map_or("n/a".to_string(), |r| format!("{r:.1}"));
        let total = metrics.total_ms.map_or("n/a".to_string(), |t| format!("{t:.0}ms"));
        self.line(&format!("{rate} tok/s ({total})\n"));
    }

    fn row_finished(&mut self, row: &BenchmarkResult) {
        let stats = &row.statistics;
        match row.status {
            RowStatus::Failed if self.silent_failed_rows > 0 => self.silent_failed_rows -= 1,
            RowStatus::Failed => {
                let error = row.error.as_deref().unwrap_or("unknown error");
                if self.style == Style::Lines {
                    self.line(&format!("\nRunning benchmark: {}\n", row.config.name));
                }
                self.say(&format!("  ✗ {} failed: {error}\n", row.config.name));
            }
            _ if row.load.is_some() => {
                if let Some(load) = &row.load {
                    self.say(&crate::load_view::line(row, load));
                }
            }
            _ if self.style == Style::Bar => {
                self.say(&format!(
                    "  {} {}: {} tok/s{}\n",
                    row.config.name,
                    row_context(row, &self.varying),
                    mean_pm(stats.tokens_per_second.as_ref(), ""),
                    if row.status == RowStatus::Incomplete { " (incomplete)" } else { "" }
                ));
            }
            _ => {
                let ttft = stats.time_to_first_token_ms.as_ref();
                let ttft = if ttft.is_some() { format!(", TTFT: {}", mean_pm(ttft, " ms")) } else { String::new() };
                self.line(&format!("  Average: {}{ttft}\n", mean_pm(stats.tokens_per_second.as_ref(), " tok/s")));
                if let Some(half) = row.repetitions.ci_half_width_percent.filter(|_| row.repetitions.mode == "auto") {
                    self.line(&format!(
                        "  Stopped after {} iterations ({}): 95% CI ±{half:.1} %\n",
                        row.iterations_completed,
                        serde_name(&row.repetitions.stopped_because)
                    ));
                }
            }
        }
        if row.status != RowStatus::Failed {
            for warning in &row.warnings {
                self.say(&format!("  ⚠ {warning}\n"));
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }
}

impl Progress {
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The row's swept parameters, for its one-line result.
fn row_context(row: &BenchmarkResult, varying: &[&str]) -> String {
    let requested = &row.parameters.requested;
    let mut parts = Vec::new();
    for name in varying {
        let value = match *name {
            "model" => row.config.model.clone(),
            "backend" => row.backend.clone(),
            "n_gpu_layers" => requested.load.n_gpu_layers.to_string(),
            "n_ctx" => requested.context.n_ctx.to_string(),
            "n_batch" => requested.context.n_batch.to_string(),
            "n_ubatch" => requested.context.n_ubatch.to_string(),
            "n_threads" => requested.context.n_threads.to_string(),
            "flash_attn" => requested.context.flash_attn.to_string(),
            "type_k" => requested.context.type_k.to_string(),
            "type_v" => requested.context.type_v.to_string(),
            _ => continue,
        };
        parts.push(format!("{name} {value}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("[{}]", parts.join(" · "))
    }
}

fn serde_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The summary at the end: the guide's block for text rows, the backend comparison, and the sweep table.
pub fn final_report(rows: &[BenchmarkResult], saved_to: &[String], table: bool) -> String {
    let (load_rows, rows): (Vec<&BenchmarkResult>, Vec<&BenchmarkResult>) = rows.iter().partition(|r| r.load.is_some());
    let rows: Vec<BenchmarkResult> = rows.into_iter().cloned().collect();
    let rows = rows.as_slice();
    if !load_rows.is_empty() {
        let mut out = crate::load_view::table(&load_rows);
        if !rows.is_empty() {
            out.push_str(&final_report(rows, &[], table));
        }
        out.push('\n');
        for path in saved_to {
            out.push_str(&format!("💾 Results saved to {path}\n"));
        }
        return out;
    }
    let has_text_rows = rows.iter().any(|r| r.test.kind == velollm_core::TestKind::Text);
    let mut out = if has_text_rows {
        console::summary(rows, saved_to)
    } else {
        // Token tests only: the table is the summary.
        let mut saved = String::new();
        for path in saved_to {
            saved.push_str(&format!("💾 Results saved to {path}\n"));
        }
        saved
    };
    if let Some(comparison) = console::comparison(rows) {
        out.push_str(&comparison);
    }
    if table {
        out.push('\n');
        out.push_str(&console::sweep_table(rows));
    }
    if let Some(batched) = console::batched_table(rows) {
        out.push_str("\nllama-batched-bench's columns (means over the repetitions):\n\n");
        out.push_str(&batched);
    }
    out
}
