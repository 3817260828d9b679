//! `velollm benchmark`: arguments → plan → runner (on a blocking thread) → rows → outputs and the summary.
//!
//! Nothing measured is lost: rows are written as they finish; a write that fails is said at once and tried
//! again at the end (then saved to a fallback file the error names); Ctrl-C stops the run within about a
//! second in every phase and keeps every finished repetition, also when the engine is inside a long call
//! (the interrupt handler then saves and exits itself).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use velollm_benchmarks::{
    prepare, run_plan, validate_tests, BenchError, GenerationParams, OpenAiConnection, Plan, RunOptions,
    ServerConnection,
};
use velollm_core::{BenchmarkResult, RowStatus};
use velollm_export::{console, Outputs, Saved};

use crate::args::BenchmarkArgs;
use crate::collect::{lock, Both, Collected, Collector, FailedLoad, Shared};
use crate::progress::{final_report, Progress, Style};
use crate::{show, UsageError};
use velollm_history::RunStatus;

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT), after saving what was measured.
const EXIT_INTERRUPTED: u8 = 130;

/// How long the run gets to stop by itself after Ctrl-C before the handler saves and exits.
const INTERRUPT_GRACE: Duration = Duration::from_millis(1200);

pub async fn run(args: BenchmarkArgs, verbose: u8, process_start: Instant) -> anyhow::Result<ExitCode> {
    // Every input is checked before anything slow: the output paths, the backends, every number and list.
    let mut outputs = Outputs::prepare(&args.output).map_err(|e| UsageError(e.to_string()))?;
    if let Some(format) = args.format {
        // stdout carries only the results; progress and the summary go to stderr.
        outputs = outputs.with_stdout(format);
        crate::reserve_stdout();
    }
    let backends = args.backends()?;
    let models = args.models(&backends)?;
    let spec = args.sweep(models, backends)?;
    validate_tests(&spec.tests).map_err(|e| UsageError(e.to_string()))?;
    let (repetitions, _) = args.repetitions()?;
    let warmup_iterations = args.warmup()?;
    let load = args.load()?;
    let plan = Plan::new(spec).map_err(|e| UsageError(e.to_string()))?;
    // Remote devices are contacted and every named device checked before anything slow.
    offload_devices(&args, &plan, verbose > 0)?;
    // The history is opened (a corrupt or foreign file is refused here, untouched) and the run recorded as
    // started; it also remembers model files' hashes, so a file already seen is not read again.
    let recorder = crate::history::Recorder::start(&args.history)?;
    let hash_cache = recorder.as_ref().map(crate::history::Recorder::hash_cache);

    let cancel = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        generation: GenerationParams { seed: args.seed, stop_at_eos: args.stop_at_eos, ..GenerationParams::default() },
        warmup_iterations,
        repetitions,
        engine_logs: verbose > 0,
        cancel: Arc::clone(&cancel),
        process_start: Some(process_start),
        server: ServerConnection {
            url: args.ollama_url.clone(),
            connect_timeout: Duration::from_secs(args.ollama_connect_timeout),
            idle_timeout: Duration::from_secs(args.ollama_idle_timeout),
            load_timeout: Duration::from_secs(args.ollama_load_timeout),
            keep_loaded: args.keep_loaded,
        },
        explicit: args.explicit(),
        download_progress: !args.quiet,
        telemetry: !args.no_telemetry,
        interleave: args.interleave,
        openai: OpenAiConnection {
            url: args.url.clone(),
            api_key_env: args.api_key_env.clone(),
            completions: args.endpoint == "completions",
        },
        load,
        hash_cache,
    };
    let is_sweep = plan.instances.len() > plan.spec.tests.len() || plan.spec.tests.iter().any(is_token_test);
    let style = Style::choose(args.quiet, plan.spec.varying().iter().any(|v| !matches!(*v, "test")));
    if style != Style::Quiet {
        show(&format!("{}\n", header(&plan, &args)));
        if plan.instances.len() > plan.spec.tests.len() {
            show(&format!(
                "Plan: {} runs ({} model load{}, {} context{})\n\n",
                plan.instances.len(),
                plan.load_count(),
                if plan.load_count() == 1 { "" } else { "s" },
                plan.context_count(),
                if plan.context_count() == 1 { "" } else { "s" },
            ));
        }
    }

    let shared: Shared = Arc::new(Mutex::new(Collected::new(outputs)));
    lock(&shared).history = recorder;
    lock(&shared).phase = "reading and hashing the model file".into();
    on_engine_abort(&shared);
    watch_ctrl_c(Arc::clone(&cancel), Arc::clone(&shared));
    let mut progress = Both(Progress::new(style, Arc::clone(&shared)), Collector::new(Arc::clone(&shared)));
    let joined = tokio::task::spawn_blocking(move || {
        let outcome = prepare(&plan, &options, Some(&mut progress))
            .and_then(|prepared| run_plan(&plan, &prepared, &options, &mut progress));
        progress.0.finish();
        (outcome, plan)
    })
    .await;
    let (outcome, plan) = match joined {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };

    let mut collected = lock(&shared);
    collected.finalizing = true;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(BenchError::Interrupted) => {
            end_history(&mut collected, RunStatus::Interrupted);
            eprintln!("interrupted before any benchmark ran: nothing to save");
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        // Failed before any row: bad input, said in one line (no results file is written).
        Err(e) => {
            end_history(&mut collected, RunStatus::Failed);
            return Err(anyhow::Error::new(e));
        }
    };
    let rows = outcome.rows;
    let history = collected.history.take();
    let saved = if collected.outputs.is_empty() { Vec::new() } else { collected.outputs.finish(&rows) };
    let failed_loads = collected.failed_loads.clone();
    drop(collected);
    let (saved_to, save_errors) = describe_saves(&saved);
    // A model that did not load was said when it failed and is said again in the final error line; its failed
    // rows are not listed once more in the summary.
    let summarised: Vec<BenchmarkResult> =
        rows.iter().filter(|r| !from_failed_load(r, &failed_loads)).cloned().collect();
    if !summarised.is_empty() {
        show(&final_report(&summarised, &saved_to, is_sweep));
    } else if !saved_to.is_empty() {
        show(&format!("\n{}", final_report(&[], &saved_to, false)));
    }
    for error in &save_errors {
        eprintln!("error: {error}");
    }

    let failed: Vec<&BenchmarkResult> = rows.iter().filter(|r| r.status != RowStatus::Ok).collect();
    let failure = run_failure(&rows, &failed, &failed_loads, &saved_to, plan.spec.backends.len() > 1);
    if let Some(history) = &history {
        history.end(match () {
            _ if outcome.interrupted => RunStatus::Interrupted,
            _ if !save_errors.is_empty() || failure.is_some() => RunStatus::Failed,
            _ => RunStatus::Completed,
        });
    }
    if outcome.interrupted {
        let kept: u32 = rows.iter().map(|r| r.iterations_completed).sum();
        eprintln!(
            "interrupted: {} row{} ({kept} timed iteration{}) kept{}",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            if kept == 1 { "" } else { "s" },
            if saved_to.is_empty() { String::new() } else { format!(" in {}", saved_to.join(", ")) }
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if !save_errors.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(message) => Err(anyhow::anyhow!("{message}")),
    }
}

/// Whether `row` is one of the failed rows of a model that did not load (it has no load time and that error).
fn from_failed_load(row: &BenchmarkResult, failed_loads: &[FailedLoad]) -> bool {
    row.status == RowStatus::Failed
        && row.load_time_ms.is_none()
        && failed_loads.iter().any(|f| row.error.as_ref() == Some(&f.error))
}

/// The one line that says a run did not fully succeed, or `None` when every row is ok. A model that did not
/// load is one failure (its rows are all failed the same way), not "3 of 3 runs did not complete".
fn run_failure(
    rows: &[BenchmarkResult],
    failed: &[&BenchmarkResult],
    failed_loads: &[FailedLoad],
    saved_to: &[String],
    several_backends: bool,
) -> Option<String> {
    let others: Vec<&BenchmarkResult> = failed.iter().copied().filter(|r| !from_failed_load(r, failed_loads)).collect();
    let on = |backend: &str| if several_backends { format!(" on {backend}") } else { String::new() };
    let plural = |n: usize, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
    let rows_in = |n: usize| match saved_to.is_empty() {
        true => String::new(),
        false if n == 1 => format!("; its row, marked failed, is in {}", saved_to.join(", ")),
        false => format!("; its {n} rows, marked failed, are in {}", saved_to.join(", ")),
    };
    match (failed_loads, others.first()) {
        ([], None) => None,
        ([load], None) => Some(format!("{}{}", load.error, rows_in(load.rows))),
        ([first, ..], None) => Some(format!(
            "{} failed{} (first{}): {}",
            plural(failed_loads.len(), "model load"),
            if saved_to.is_empty() {
                String::new()
            } else {
                format!("; every row, marked failed, is in {}", saved_to.join(", "))
            },
            on(&first.backend),
            first.error
        )),
        (loads, Some(first)) => {
            let what = if rows.len() == 1 {
                "benchmark failed".to_string()
            } else {
                format!("{} of {} runs did not complete", others.len(), rows.len())
            };
            let loads = match loads {
                [] => String::new(),
                [load] => format!(" and a model did not load ({})", load.error),
                _ => format!(" and {} failed (first: {})", plural(loads.len(), "model load"), loads[0].error),
            };
            let kept = if saved_to.is_empty() {
                String::new()
            } else {
                format!("; every row, marked {}, is in {}", status_word(first.status), saved_to.join(", "))
            };
            Some(format!(
                "{what}{loads}{kept} (first{}, {}): {}",
                on(&first.backend),
                first.config.name,
                first.error.clone().unwrap_or_default()
            ))
        }
    }
}

fn is_token_test(test: &velollm_benchmarks::TestCase) -> bool {
    matches!(test, velollm_benchmarks::TestCase::Tokens { .. })
}

fn status_word(status: RowStatus) -> &'static str {
    match status {
        RowStatus::Ok => "ok",
        RowStatus::Incomplete => "incomplete",
        RowStatus::Failed => "failed",
    }
}

/// The saved paths for the summary, and one line per output that could not be written where asked.
fn describe_saves(saved: &[Saved]) -> (Vec<String>, Vec<String>) {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for save in saved {
        match save {
            Saved::Written(path) => paths.push(path.display().to_string()),
            Saved::Fallback { wanted, reason, saved_to } => {
                paths.push(saved_to.display().to_string());
                errors.push(format!(
                    "could not write {} ({reason}); the results were saved to {} instead",
                    wanted.display(),
                    saved_to.display()
                ));
            }
            Saved::Lost { wanted, reason } => {
                errors.push(format!("could not write {} ({reason}) nor any fallback file", wanted.display()))
            }
        }
    }
    (paths, errors)
}

/// The context sizes for the header: the `--ctx-size` list, or without it the sizes each test gets (llama-bench's
/// `n_prompt + n_gen + n_depth` for its tests).
fn context_sizes(spec: &velollm_benchmarks::SweepSpec) -> String {
    if spec.n_ctx != [velollm_benchmarks::CTX_PER_TEST] {
        return spec.n_ctx.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    }
    let per_test = velollm_core::ContextParams {
        n_ctx: velollm_benchmarks::CTX_PER_TEST,
        ..velollm_core::ContextParams::with_threads(1)
    };
    let mut sizes: Vec<u32> = Vec::new();
    for test in &spec.tests {
        let n_ctx = velollm_benchmarks::sized_for_test(&per_test, test).n_ctx;
        if !sizes.contains(&n_ctx) {
            sizes.push(n_ctx);
        }
    }
    let sizes = sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    if spec.tests.iter().any(is_token_test) {
        format!("{sizes} (per test)")
    } else {
        sizes
    }
}

/// The run header: backend(s), model(s), and every parameter that shapes the numbers (lists when swept).
fn header(plan: &Plan, args: &BenchmarkArgs) -> String {
    let spec = &plan.spec;
    let list = |values: Vec<String>| values.join(",");
    let backends = spec.backends.join(", ");
    let models = spec.models.join(", ");
    let settings = if spec.backends.iter().all(|b| b == "ollama") {
        let explicit = args.explicit();
        let sent = |values: String, given: bool| if given { values } else { "server default".to_string() };
        format!(
            "num_ctx {} · num_gpu {} · num_thread {} · num_batch {} · warm-up {} · temperature 0, seed {}",
            context_sizes(spec),
            sent(list(spec.n_gpu_layers.iter().map(ToString::to_string).collect()), explicit.n_gpu_layers),
            sent(list(spec.n_threads.iter().map(ToString::to_string).collect()), explicit.threads),
            sent(list(spec.n_batch.iter().map(ToString::to_string).collect()), explicit.batch_size),
            args.warmup,
            args.seed
        )
    } else {
        format!(
            "threads {} · ctx {} · batch {}/{} · n_gpu_layers {} · flash-attn {} · KV {}/{} · warm-up {} · greedy, seed {}",
            list(spec.n_threads.iter().map(ToString::to_string).collect()),
            context_sizes(spec),
            list(spec.n_batch.iter().map(ToString::to_string).collect()),
            list(spec.n_ubatch.iter().map(ToString::to_string).collect()),
            list(spec.n_gpu_layers.iter().map(ToString::to_string).collect()),
            list(spec.flash_attn.iter().map(ToString::to_string).collect()),
            list(spec.type_k.iter().map(ToString::to_string).collect()),
            list(spec.type_v.iter().map(ToString::to_string).collect()),
            args.warmup,
            args.seed
        )
    };
    let mut out = console::header(&backends, &models, &settings);
    if spec.backends.len() > 1 && spec.backends.iter().any(|b| b == "ollama") {
        out.push_str(
            "Ollama is sent num_ctx always; num_gpu, num_thread and num_batch only when given on the command line.\n",
        );
    }
    out
}

/// First Ctrl-C: stop the run (the engine ends its current token or batch) and save every finished
/// repetition. If the run has not wound down within [`INTERRUPT_GRACE`] (a long prompt batch, a server that
/// has not answered, a download), or on a second Ctrl-C, save here and exit at once.
fn watch_ctrl_c(cancel: Arc<AtomicBool>, shared: Shared) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        cancel.store(true, Ordering::Relaxed);
        let phase = lock(&shared).phase.clone();
        eprintln!(
            "\ninterrupting: stopping {phase}; finished iterations are kept (Ctrl-C again to exit at once, still saving them)"
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => save_and_exit(&shared, "second Ctrl-C"),
            _ = tokio::time::sleep(INTERRUPT_GRACE) => save_and_exit(&shared, "the engine is still busy"),
        }
    });
}

/// Saves every finished row and the repetitions of the row in progress, then ends the process without
/// waiting for the engine thread (which may be inside a long call into llama.cpp).
fn save_and_exit(shared: &Shared, why: &str) {
    let collected = lock(shared);
    if collected.finalizing {
        // The main flow is writing the results itself.
        return;
    }
    let rows = collected.all_rows();
    save_rows_and_exit(collected, rows, &format!("interrupted ({why})"), EXIT_INTERRUPTED)
}

/// Exit status when llama.cpp had to stop the process (an RPC server went away), after saving every row.
#[cfg(feature = "llamacpp")]
const EXIT_ENGINE_STOPPED: u8 = 1;

/// `--rpc`: contacts every server and registers its devices; with llama.cpp in the plan, every device named by
/// `--device` must then exist. One line and exit 2 otherwise, before any model is read.
#[cfg(feature = "llamacpp")]
fn offload_devices(args: &BenchmarkArgs, plan: &Plan, engine_logs: bool) -> anyhow::Result<()> {
    use velollm_benchmarks::{llamacpp_devices, llamacpp_rpc};
    use velollm_core::DeviceSelection;
    let on_llamacpp = plan.spec.backends.iter().any(|b| b == "llamacpp");
    if let Some(list) = &args.rpc {
        if !on_llamacpp {
            return Err(UsageError("--rpc offloads llama.cpp's layers: it needs -b llamacpp".into()).into());
        }
        let endpoints = llamacpp_rpc::parse_endpoints(list).map_err(UsageError)?;
        llamacpp_rpc::connect(&endpoints, engine_logs).map_err(UsageError)?;
    }
    if !on_llamacpp {
        return Ok(());
    }
    let devices = llamacpp_devices::devices();
    for selection in &plan.spec.devices {
        let DeviceSelection::Named(names) = selection else { continue };
        for name in names {
            match devices.iter().find(|d| &d.name == name) {
                Some(d) if d.kind != "cpu" && d.kind != "accel" => {}
                Some(_) => {
                    return Err(UsageError(format!(
                        "invalid --device '{name}': the CPU is not an offload device (--device none keeps every layer on it)"
                    ))
                    .into())
                }
                None => {
                    let offload: Vec<&str> =
                        devices.iter().filter(|d| d.kind == "gpu" || d.kind == "igpu").map(|d| d.name.as_str()).collect();
                    let known = if offload.is_empty() { "none; add RPC servers with --rpc".into() } else { offload.join(", ") };
                    return Err(UsageError(format!("invalid --device '{name}': no such device (offload devices: {known})")).into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "llamacpp"))]
fn offload_devices(args: &BenchmarkArgs, _plan: &Plan, _engine_logs: bool) -> anyhow::Result<()> {
    if args.rpc.is_some() {
        return Err(UsageError("--rpc needs llama.cpp, which this build leaves out".into()).into());
    }
    Ok(())
}

/// The run's rows, for the handler that runs when llama.cpp must end the process.
#[cfg(feature = "llamacpp")]
static ABORT_SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();

/// When llama.cpp or ggml is about to end the process (ggml's RPC client does when a server goes away
/// mid-run), the row in progress is marked failed with the endpoint that no longer answers, every row is saved,
/// and the process exits with one line instead of an abort and a backtrace.
fn on_engine_abort(shared: &Shared) {
    #[cfg(feature = "llamacpp")]
    if ABORT_SHARED.set(Arc::clone(shared)).is_ok() {
        velollm_benchmarks::llamacpp_rpc::on_fatal_engine_error(engine_stopped);
    }
    #[cfg(not(feature = "llamacpp"))]
    let _ = shared;
}

#[cfg(feature = "llamacpp")]
fn engine_stopped(message: &str) {
    let Some(shared) = ABORT_SHARED.get() else { return };
    let gone = velollm_benchmarks::llamacpp_rpc::unreachable_endpoints();
    let ggml_said = message.rsplit(": ").next().unwrap_or(message).trim();
    let why = if gone.is_empty() {
        format!("llama.cpp stopped the run: {ggml_said}")
    } else {
        format!("RPC server {} went away during the run (ggml: {ggml_said})", gone.join(", "))
    };
    let collected = lock(shared);
    // The rows being measured end here: failed, with what was measured of them and the endpoint named.
    let mut rows = collected.rows.clone();
    for mut row in collected.in_progress.iter().filter(|r| !r.is_finished()).filter_map(|r| r.snapshot()) {
        row.status = RowStatus::Failed;
        row.error = Some(why.clone());
        rows.push(row);
    }
    let phase = collected.phase.clone();
    eprintln!();
    save_rows_and_exit(collected, rows, &format!("{why}; while {phase}"), EXIT_ENGINE_STOPPED)
}

/// Marks the run's end in the history, if it is kept in one.
fn end_history(collected: &mut Collected, status: RunStatus) {
    if let Some(history) = collected.history.take() {
        history.end(status);
    }
}

/// Writes `rows` (every finished row, those in progress last) to the outputs, says what was kept, and ends the
/// process.
fn save_rows_and_exit(
    mut collected: std::sync::MutexGuard<'_, Collected>,
    rows: Vec<BenchmarkResult>,
    what: &str,
    code: u8,
) -> ! {
    let saved = if collected.finalizing { Vec::new() } else { collected.outputs.finish(&rows) };
    // The rows still in progress (their finished repetitions, marked incomplete) join the finished ones in
    // the history; the run is marked as not completed.
    let finished = collected.rows.len();
    if let Some(mut history) = collected.history.take() {
        for row in rows.iter().skip(finished) {
            history.row_finished(row);
        }
        history.end(if code == EXIT_INTERRUPTED { RunStatus::Interrupted } else { RunStatus::Failed });
    }
    let (saved_to, errors) = describe_saves(&saved);
    for error in &errors {
        eprintln!("error: {error}");
    }
    let kept: u32 = rows.iter().map(|r| r.iterations_completed).sum();
    eprintln!(
        "{what}: {} row{} ({kept} timed iteration{}) kept{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if kept == 1 { "" } else { "s" },
        if saved_to.is_empty() { String::new() } else { format!(" in {}", saved_to.join(", ")) }
    );
    // SAFETY: `_exit` ends the process without running C++ static destructors while an engine thread may
    // still be inside llama.cpp; everything velollm must keep has been written and synced above.
    unsafe { libc::_exit(i32::from(code)) }
}

#[cfg(test)]
mod tests {
    use velollm_fixtures::{text_samples_at, Row};

    use super::*;

    const LOAD_ERROR: &str = "failed to load model m.gguf: llama.cpp could not load it (tensor 'x' not found)";

    fn failed_load_row(name: &str) -> BenchmarkResult {
        let mut row = Row::text(name, "Hi", 4, vec![]).failed(LOAD_ERROR).build();
        row.load_time_ms = None;
        row
    }

    fn loads(rows: usize) -> Vec<FailedLoad> {
        vec![FailedLoad { backend: "llamacpp".into(), error: LOAD_ERROR.into(), rows }]
    }

    fn failure(rows: &[BenchmarkResult], failed_loads: &[FailedLoad], saved: &[&str]) -> Option<String> {
        let failed: Vec<&BenchmarkResult> = rows.iter().filter(|r| r.status != RowStatus::Ok).collect();
        let saved: Vec<String> = saved.iter().map(|s| s.to_string()).collect();
        run_failure(rows, &failed, failed_loads, &saved, false)
    }

    #[test]
    fn a_model_that_did_not_load_is_one_failure_not_one_per_run() {
        let rows: Vec<BenchmarkResult> = ["a", "b", "c"].map(failed_load_row).into();
        assert_eq!(
            failure(&rows, &loads(3), &["r.jsonl"]).unwrap(),
            format!("{LOAD_ERROR}; its 3 rows, marked failed, are in r.jsonl")
        );
        assert_eq!(failure(&rows[..1], &loads(1), &[]).unwrap(), LOAD_ERROR);
    }

    #[test]
    fn other_failures_are_still_counted_per_run() {
        let mut rows: Vec<BenchmarkResult> = vec![failed_load_row("a")];
        let mut failed = Row::text("b", "Hi", 4, vec![]).failed("generation failed: x").build();
        failed.load_time_ms = Some(10.0);
        rows.push(failed);
        rows.push(Row::text("c", "Hi", 4, text_samples_at(&[50.0], 4, 20.0)).build());
        let message = failure(&rows, &loads(1), &[]).unwrap();
        assert!(message.starts_with("1 of 3 runs did not complete and a model did not load"), "{message}");
        assert!(message.ends_with("(first, b): generation failed: x"), "{message}");
        let ok = vec![Row::text("c", "Hi", 4, text_samples_at(&[50.0], 4, 20.0)).build()];
        assert_eq!(failure(&ok, &[], &[]), None);
    }
}
