//! `velollm`: argument parsing and rendering only; the work happens in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use velollm_benchmarks::{
    standard_suite, BenchError, BenchmarkConfig, BenchmarkRunner, EngineParams, FlashAttention, GenerationParams,
    RunOptions, DEFAULT_MODEL,
};
use velollm_export::{console, ConsoleReporter, JsonFile};

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT), after saving what was measured.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "velollm", version, about = "Measure how fast large language models run on this machine")]
struct Cli {
    /// More output: -v shows the engine's own log lines, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the standard benchmark suite (or a custom prompt) and report tokens/s, TTFT and total time.
    Benchmark(BenchmarkArgs),
}

#[derive(Args)]
struct BenchmarkArgs {
    /// Model: a GGUF file path or a known model name (see models/manifest.tsv).
    #[arg(short, long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Save results as JSON (the guide's schema, extended); rewritten after each finished benchmark.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Backend: auto (llamacpp when compiled in, else candle), llamacpp (in-process llama.cpp) or candle
    /// (in-process, pure Rust). Results record the backend that ran.
    #[arg(short, long, default_value = velollm_benchmarks::AUTO_BACKEND)]
    backend: String,
    /// Timed iterations per benchmark (default: the suite's own, 5/3/3; 5 for --prompt).
    #[arg(long)]
    iterations: Option<u32>,
    /// Untimed warm-up iterations before each benchmark.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Tokens to generate per iteration (default: the suite's own, 50/150/200; 100 for --prompt).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Run one custom benchmark with this prompt instead of the standard suite.
    #[arg(long)]
    prompt: Option<String>,
    /// Seed recorded with the results (greedy sampling is deterministic).
    #[arg(long, default_value_t = 42)]
    seed: u32,
    /// Let an end-of-generation token end an iteration early (default: always generate max tokens).
    #[arg(long)]
    stop_at_eos: bool,
    /// Engine threads (default: physical core count).
    #[arg(short, long)]
    threads: Option<u32>,
    /// Layers to offload to the GPU (0 = CPU only; default all).
    #[arg(long, default_value_t = 999)]
    n_gpu_layers: u32,
    /// Context size in tokens.
    #[arg(long, default_value_t = 2048)]
    ctx_size: u32,
    /// Logical batch size for prompt evaluation.
    #[arg(long, default_value_t = 2048)]
    batch_size: u32,
    /// Physical batch size.
    #[arg(long, default_value_t = 512)]
    ubatch_size: u32,
    /// Flash attention: auto, on or off.
    #[arg(long, default_value = "auto")]
    flash_attn: FlashAttention,
    /// Read the model into memory instead of mapping it.
    #[arg(long)]
    no_mmap: bool,
    /// Print only the summary.
    #[arg(short, long)]
    quiet: bool,
}

impl BenchmarkArgs {
    fn benchmarks(&self) -> Vec<BenchmarkConfig> {
        match &self.prompt {
            Some(prompt) => vec![BenchmarkConfig {
                name: "custom".into(),
                model: self.model.clone(),
                prompt: prompt.clone(),
                max_tokens: self.max_tokens.unwrap_or(100),
                iterations: self.iterations.unwrap_or(5),
            }],
            None => standard_suite(&self.model)
                .into_iter()
                .map(|mut config| {
                    config.max_tokens = self.max_tokens.unwrap_or(config.max_tokens);
                    config.iterations = self.iterations.unwrap_or(config.iterations);
                    config
                })
                .collect(),
        }
    }

    fn engine_params(&self) -> EngineParams {
        let threads = self.threads.unwrap_or_else(velollm_hw::default_threads);
        EngineParams {
            n_gpu_layers: self.n_gpu_layers,
            ctx_size: self.ctx_size,
            batch_size: self.batch_size,
            ubatch_size: self.ubatch_size,
            flash_attn: self.flash_attn,
            use_mmap: !self.no_mmap,
            ..EngineParams::with_threads(threads)
        }
    }
}

fn main() -> ExitCode {
    let process_start = Instant::now();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Benchmark(args) => benchmark(args, cli.verbose, process_start).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    // One line: the error and its causes, joined.
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VELOLLM_LOG").unwrap_or_else(|_| level.into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn benchmark(args: BenchmarkArgs, verbose: u8, process_start: Instant) -> anyhow::Result<ExitCode> {
    // Checked before anything slow: an unwritable output path must not cost a whole run.
    let json = args.output.as_deref().map(JsonFile::prepare).transpose()?;
    // `auto` is resolved here so the header names the engine that will run.
    let backend = velollm_benchmarks::resolve_backend(&args.backend)?;
    let configs = args.benchmarks();
    let engine = args.engine_params();
    let cancel = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(Arc::clone(&cancel));

    let options = RunOptions {
        engine: engine.clone(),
        generation: GenerationParams { seed: args.seed, stop_at_eos: args.stop_at_eos, ..GenerationParams::default() },
        warmup_iterations: args.warmup,
        engine_logs: verbose > 0,
        cancel: Arc::clone(&cancel),
        process_start: Some(process_start),
    };
    let show_progress = !args.quiet;
    if show_progress {
        let settings = format!(
            "threads {} · ctx {} · batch {}/{} · n_gpu_layers {} · flash-attn {} · warm-up {} · greedy, seed {}",
            engine.threads,
            engine.ctx_size,
            engine.batch_size,
            engine.ubatch_size,
            engine.n_gpu_layers,
            engine.flash_attn,
            args.warmup,
            args.seed
        );
        println!("{}", console::header(backend, &args.model, &settings));
    }
    let reporter = ConsoleReporter::new(show_progress, json.clone());
    let runner = BenchmarkRunner::new(backend).with_options(options);
    if show_progress {
        println!("Running {} benchmark{}...\n", configs.len(), if configs.len() == 1 { "" } else { "s" });
    }
    let (outcome, reporter) = runner.run_suite(&args.model, configs, reporter).await;
    if let Some(save_error) = &reporter.save_error {
        anyhow::bail!("{save_error}");
    }
    let interrupted = matches!(outcome.error, Some(BenchError::Interrupted));
    if !outcome.results.is_empty() {
        let saved_to = json.as_ref().map(|j| j.path().display().to_string());
        print!("{}", console::summary(&outcome.results, saved_to.as_deref()));
    }
    match outcome.error {
        None => Ok(ExitCode::SUCCESS),
        Some(_) if interrupted => {
            let kept = outcome.results.len();
            eprintln!(
                "interrupted: {kept} benchmark{} kept{}",
                if kept == 1 { "" } else { "s" },
                json.as_ref().filter(|_| kept > 0).map(|j| format!(" in {}", j.path().display())).unwrap_or_default()
            );
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Some(error) => Err(anyhow::Error::new(error)).context(if outcome.results.is_empty() {
            "benchmark failed".to_string()
        } else {
            format!("benchmark failed after {} finished benchmark(s), which were kept", outcome.results.len())
        }),
    }
}

/// First Ctrl-C: stop after the current token and save what was measured. Second: exit at once.
fn watch_ctrl_c(cancel: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.store(true, Ordering::Relaxed);
            eprintln!("\ninterrupting: finishing the current token, then saving results (Ctrl-C again to abort)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });
}
