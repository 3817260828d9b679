//! `velollm`: argument parsing and rendering only; the work happens in the library crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use velollm_benchmarks::{
    default_model_for, standard_suite, BenchError, BenchmarkConfig, BenchmarkRunner, EngineParams,
    ExplicitEngineParams, FlashAttention, GenerationParams, RunOptions, ServerConnection,
};
use velollm_export::{console, ConsoleReporter, JsonFile};

mod synth;

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
    /// Write a synthetic GGUF model: a public architecture's exact shapes with random weights (--list).
    Synth(synth::SynthArgs),
}

#[derive(Args)]
struct BenchmarkArgs {
    /// Model: a GGUF file, a known model name (models/manifest.tsv), an Ollama name (llama3.2:3b or
    /// ollama:NAME; in-process backends read it from Ollama's model store) or hf:ORG/REPO/FILE.gguf[@REV].
    /// Default: llama3.2:3b when the ollama backend is used, else smollm2-135m.
    #[arg(short, long)]
    model: Option<String>,
    /// Save results as JSON (the guide's schema, extended); rewritten after each finished benchmark.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Backend: auto (llamacpp when compiled in, else candle), llamacpp (in-process llama.cpp), candle
    /// (in-process, pure Rust) or ollama (a running Ollama server); a comma list (llamacpp,candle,ollama) runs
    /// each in turn on the same model and compares them. Results record the backend that ran.
    #[arg(short, long, default_value = velollm_benchmarks::AUTO_BACKEND)]
    backend: String,
    /// Ollama's address (default: OLLAMA_HOST, else http://localhost:11434).
    #[arg(long)]
    ollama_url: Option<String>,
    /// Seconds to wait for a connection to Ollama.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    ollama_connect_timeout: u64,
    /// Seconds to wait for the next bytes of an Ollama response before giving up.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    ollama_idle_timeout: u64,
    /// Seconds to wait for Ollama to load the model (untimed).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    ollama_load_timeout: u64,
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
    /// Layers to offload to the GPU (0 = CPU only; default all; Ollama: sent as num_gpu only when given).
    #[arg(long)]
    n_gpu_layers: Option<u32>,
    /// Context size in tokens.
    #[arg(long, default_value_t = 2048)]
    ctx_size: u32,
    /// Logical batch size for prompt evaluation (default 2048; Ollama: sent as num_batch only when given).
    #[arg(long)]
    batch_size: Option<u32>,
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
    /// The backends to run, in order (`-b a,b`).
    fn backends(&self) -> anyhow::Result<Vec<String>> {
        let typed: Vec<&str> = self.backend.split(',').map(str::trim).collect();
        if typed.iter().any(|b| b.is_empty()) {
            anyhow::bail!(
                "invalid --backend '{}': expected a name or a comma list such as llamacpp,ollama",
                self.backend
            );
        }
        // `auto` is resolved here so the header and the results name the engine that runs.
        let names = typed
            .iter()
            .map(|b| velollm_benchmarks::resolve_backend(b).map(str::to_string))
            .collect::<Result<Vec<String>, _>>()?;
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != names.len() {
            anyhow::bail!("--backend '{}' names a backend twice", self.backend);
        }
        Ok(names)
    }

    /// The model: `-m`, else the default of the backends (Ollama's when it is among them, so a comparison
    /// runs the same model on every backend).
    fn model(&self, backends: &[String]) -> String {
        match &self.model {
            Some(model) => model.clone(),
            None if backends.iter().any(|b| b == "ollama") => default_model_for("ollama").to_string(),
            None => default_model_for(backends.first().map_or("", String::as_str)).to_string(),
        }
    }

    fn benchmarks(&self, model: &str) -> Vec<BenchmarkConfig> {
        match &self.prompt {
            Some(prompt) => vec![BenchmarkConfig {
                name: "custom".into(),
                model: model.to_string(),
                prompt: prompt.clone(),
                max_tokens: self.max_tokens.unwrap_or(100),
                iterations: self.iterations.unwrap_or(5),
            }],
            None => standard_suite(model)
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
        let defaults = EngineParams::with_threads(threads);
        EngineParams {
            n_gpu_layers: self.n_gpu_layers.unwrap_or(defaults.n_gpu_layers),
            ctx_size: self.ctx_size,
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            ubatch_size: self.ubatch_size,
            flash_attn: self.flash_attn,
            use_mmap: !self.no_mmap,
            ..defaults
        }
    }

    fn explicit(&self) -> ExplicitEngineParams {
        ExplicitEngineParams {
            threads: self.threads.is_some(),
            n_gpu_layers: self.n_gpu_layers.is_some(),
            batch_size: self.batch_size.is_some(),
        }
    }

    fn server(&self) -> ServerConnection {
        ServerConnection {
            url: self.ollama_url.clone(),
            connect_timeout: Duration::from_secs(self.ollama_connect_timeout),
            idle_timeout: Duration::from_secs(self.ollama_idle_timeout),
            load_timeout: Duration::from_secs(self.ollama_load_timeout),
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
            Command::Synth(args) => synth::run(args),
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
    let backends = args.backends()?;
    let model = args.model(&backends);
    let configs = args.benchmarks(&model);
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
        server: args.server(),
        explicit: args.explicit(),
        download_progress: !args.quiet,
    };
    let show_progress = !args.quiet;
    if show_progress {
        let settings = if backends.iter().all(|b| b == "ollama") {
            let sent = |value: u32, given: bool| if given { value.to_string() } else { "server default".to_string() };
            let explicit = args.explicit();
            format!(
                "num_ctx {} · num_gpu {} · num_thread {} · num_batch {} · warm-up {} · temperature 0, seed {}",
                engine.ctx_size,
                sent(engine.n_gpu_layers, explicit.n_gpu_layers),
                sent(engine.threads, explicit.threads),
                sent(engine.batch_size, explicit.batch_size),
                args.warmup,
                args.seed
            )
        } else {
            format!(
                "threads {} · ctx {} · batch {}/{} · n_gpu_layers {} · flash-attn {} · warm-up {} · greedy, seed {}",
                engine.threads,
                engine.ctx_size,
                engine.batch_size,
                engine.ubatch_size,
                engine.n_gpu_layers,
                engine.flash_attn,
                args.warmup,
                args.seed
            )
        };
        show(&format!("{}\n", console::header(&backends.join(", "), &model, &settings)));
        if backends.len() > 1 && backends.iter().any(|b| b == "ollama") {
            show("Ollama is sent num_ctx always; num_gpu, num_thread and num_batch only when given on the command line.\n\n");
        }
    }
    let mut reporter = ConsoleReporter::new(show_progress, json.clone());
    let mut results = Vec::new();
    // The first failure, with its backend; in a comparison the other backends still run (their rows are
    // worth having), unless the user interrupted.
    let mut failure: Option<(String, BenchError)> = None;
    let mut failed_backends = 0;
    for backend in &backends {
        if show_progress && backends.len() > 1 {
            show(&format!("── Backend: {backend} ──\n\n"));
        }
        let runner = BenchmarkRunner::new(backend).with_options(options.clone());
        reporter.announcement =
            Some(format!("Running {} benchmark{}...", configs.len(), if configs.len() == 1 { "" } else { "s" }));
        let (outcome, handed_back) = runner.run_suite(&model, configs.clone(), reporter).await;
        reporter = handed_back;
        results.extend(outcome.results);
        if let Some(error) = outcome.error {
            let interrupted = matches!(error, BenchError::Interrupted);
            failed_backends += 1;
            failure.get_or_insert((backend.clone(), error));
            if interrupted {
                break;
            }
        }
    }
    if let Some(save_error) = &reporter.save_error {
        anyhow::bail!("{save_error}");
    }
    let interrupted = matches!(failure, Some((_, BenchError::Interrupted)));
    if !results.is_empty() {
        let saved_to = json.as_ref().map(|j| j.path().display().to_string());
        show(&console::summary(&results, saved_to.as_deref()));
        if let Some(table) = console::comparison(&results) {
            show(&table);
        }
    }
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(_) if interrupted => {
            let kept = results.len();
            eprintln!(
                "interrupted: {kept} benchmark{} kept{}",
                if kept == 1 { "" } else { "s" },
                json.as_ref().filter(|_| kept > 0).map(|j| format!(" in {}", j.path().display())).unwrap_or_default()
            );
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Some((backend, error)) => {
            let on_backend = if backends.len() > 1 { format!(" on {backend}") } else { String::new() };
            let others = match failed_backends {
                0 | 1 => String::new(),
                n => format!(" ({} other backend{} failed too)", n - 1, if n == 2 { "" } else { "s" }),
            };
            Err(anyhow::Error::new(error)).context(if results.is_empty() {
                format!("benchmark failed{on_backend}{others}")
            } else {
                format!(
                    "benchmark failed{on_backend}{others} after {} finished benchmark(s), which were kept",
                    results.len()
                )
            })
        }
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

/// Writes to stdout, ignoring a closed pipe (`velollm benchmark | head` must not panic the way `println!` does;
/// the results file, if any, is written regardless).
fn show(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
