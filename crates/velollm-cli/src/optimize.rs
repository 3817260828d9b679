//! `velollm optimize`: recommended Ollama server variables, request options and velollm / llama.cpp flags for
//! this machine (and a model, and measured results), as a sourceable script or a dry run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use velollm_gguf::{GgufFile, ReadOptions};
use velollm_optimize::{render, ModelFacts, Request};

#[derive(Args)]
pub struct OptimizeArgs {
    /// Print each setting as current → recommended with its reason, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the script to FILE (default: print it). Then: source FILE && ollama serve.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Measured results (files written by velollm benchmark -o, JSON or JSON Lines; several allowed): recommend
    /// what was actually fastest among the rows that ran ok within this machine's memory. `history`: every
    /// row the results history holds for this machine (see --history, --machine).
    #[arg(long, value_name = "RESULTS", num_args = 1..)]
    pub from: Vec<PathBuf>,
    /// The model to plan for (a GGUF file or any reference velollm benchmark accepts): checks that it fits in
    /// VRAM and how many layers do; with --from, selects its rows.
    #[arg(short, long)]
    pub model: Option<String>,
    /// The context size you want, in tokens (default 4096, capped at the model's training context).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub ctx_size: Option<u32>,
    #[command(flatten)]
    pub history: crate::history::HistoryFile,
    /// With --from history: the machine whose rows count (its alias in the history; default: the host name).
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,
}

pub fn run(args: OptimizeArgs) -> anyhow::Result<ExitCode> {
    let hardware = velollm_benchmarks::hardware_info();
    let model = match &args.model {
        Some(reference) => {
            let path = velollm_models::resolve_model(reference)?;
            let gguf = GgufFile::read(&path, ReadOptions::default())?;
            Some(ModelFacts::from_gguf(reference, &gguf))
        }
        None => None,
    };
    let measured = if args.from.is_empty() {
        None
    } else {
        let mut rows = Vec::new();
        for path in &args.from {
            // `history` means the results history, unless a file of that name is here.
            if path.as_os_str() == "history" && !path.exists() {
                let history = crate::history::open_existing(args.history.history.as_deref())?;
                let machine = args.machine.clone().or_else(crate::history::host_name);
                let filter = velollm_history::RunFilter { machine, ..Default::default() };
                rows.extend(history.rows(&filter)?.into_iter().filter(|r| r.tool == "velollm").map(|r| r.row));
                continue;
            }
            rows.extend(velollm_optimize::read_results(path)?);
        }
        let source = args.from.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        Some(velollm_optimize::best_from_rows(&rows, args.model.as_deref(), &hardware, &source)?)
    };
    let environment = velollm_optimize::current_ollama_environment();
    let plan = velollm_optimize::recommend(&Request {
        hardware: &hardware,
        model: model.as_ref(),
        ctx_size: args.ctx_size,
        measured: measured.as_ref(),
        environment: &environment,
    });

    if args.dry_run {
        show(&render::dry_run(&plan, &environment));
        return Ok(ExitCode::SUCCESS);
    }
    let generated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let script = render::script(&plan, &generated_at, env!("CARGO_PKG_VERSION"));
    match &args.output {
        Some(path) => {
            velollm_core::atomic::write_atomically(path, script.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            show(&format!(
                "wrote {} ({} Ollama server variables); use: source {} && ollama serve\n",
                path.display(),
                render::server_settings(&plan).len(),
                path.display()
            ));
        }
        None => show(&script),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe (`velollm optimize | head`) is not an error.
fn show(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
