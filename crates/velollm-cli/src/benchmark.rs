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

use anyhow::Context;
use velollm_benchmarks::{
    prepare, run_plan, validate_tests, BenchError, GenerationParams, Plan, RunOptions, ServerConnection,
};
use velollm_core::{BenchmarkResult, RowStatus};
use velollm_export::{console, Outputs, Saved};

use crate::args::BenchmarkArgs;
use crate::collect::{lock, Both, Collected, Collector, Shared};
use crate::progress::{final_report, Progress, Style};
use crate::{show, UsageError};

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
    let plan = Plan::new(spec).map_err(|e| UsageError(e.to_string()))?;

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
    lock(&shared).phase = "reading and hashing the model file".into();
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
            eprintln!("interrupted before any benchmark ran: nothing to save");
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        // Failed before any row: bad input, said in one line (no results file is written).
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let rows = outcome.rows;
    let saved = if collected.outputs.is_empty() { Vec::new() } else { collected.outputs.finish(&rows) };
    drop(collected);
    let (saved_to, save_errors) = describe_saves(&saved);
    if !rows.is_empty() {
        show(&final_report(&rows, &saved_to, is_sweep));
    }
    for error in &save_errors {
        eprintln!("error: {error}");
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
    let failed: Vec<&BenchmarkResult> = rows.iter().filter(|r| r.status != RowStatus::Ok).collect();
    match failed.first() {
        None => Ok(ExitCode::SUCCESS),
        Some(first) => {
            let what = if rows.len() == 1 {
                "benchmark failed".to_string()
            } else {
                format!("{} of {} runs did not complete", failed.len(), rows.len())
            };
            let kept = if saved_to.is_empty() {
                String::new()
            } else {
                format!("; every row, marked {}, is in {}", status_word(first.status), saved_to.join(", "))
            };
            let on = if plan.spec.backends.len() > 1 { format!(" on {}", first.backend) } else { String::new() };
            Err(anyhow::anyhow!("{}", first.error.clone().unwrap_or_default()))
                .context(format!("{what}{kept} (first{on}, {})", first.config.name))
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
            list(spec.n_ctx.iter().map(ToString::to_string).collect()),
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
            list(spec.n_ctx.iter().map(ToString::to_string).collect()),
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
    let mut collected = lock(shared);
    if collected.finalizing {
        // The main flow is writing the results itself.
        return;
    }
    let rows = collected.all_rows();
    let saved = collected.outputs.finish(&rows);
    let (saved_to, errors) = describe_saves(&saved);
    for error in &errors {
        eprintln!("error: {error}");
    }
    let kept: u32 = rows.iter().map(|r| r.iterations_completed).sum();
    eprintln!(
        "interrupted ({why}): {} row{} ({kept} timed iteration{}) kept{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if kept == 1 { "" } else { "s" },
        if saved_to.is_empty() { String::new() } else { format!(" in {}", saved_to.join(", ")) }
    );
    // SAFETY: `_exit` ends the process without running C++ static destructors while an engine thread may
    // still be inside llama.cpp; everything velollm must keep has been written and synced above.
    unsafe { libc::_exit(i32::from(EXIT_INTERRUPTED)) }
}
