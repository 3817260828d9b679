//! `velollm report RESULTS… -o report.html`: one self-contained HTML page of result files (velollm-report
//! draws it); with two or more files, the first is the base the others are compared with.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use velollm_compare::{select, Selector};
use velollm_report::{render, Options};
use velollm_results::{read_file, Run};

use crate::{show, UsageError};

#[derive(Args)]
pub struct ReportArgs {
    /// Results files: velollm's .json or .jsonl, or llama-bench's json/jsonl. With several, the first is the
    /// base the others are compared with.
    #[arg(value_name = "RESULTS", required_unless_present = "history", num_args = 1..)]
    pub results: Vec<PathBuf>,
    /// The HTML file to write (one file, no network needed to view it).
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
    /// The page's title.
    #[arg(long, default_value = "velollm report")]
    pub title: String,
    /// Draw this slowdown threshold (per cent) on the comparison, as `velollm compare --fail-if-slower` uses it.
    #[arg(long, value_name = "PCT")]
    pub fail_if_slower: Option<f64>,
    /// Leave out of the comparison's matching (comma list): model, backend, or a parameter.
    #[arg(long, value_name = "LIST")]
    pub ignore: Option<String>,
    /// The comparison's base rows by what they ran (name=value list, as `velollm compare --base`); with one
    /// file and --new, two sides of that file.
    #[arg(long = "base", value_name = "SEL")]
    pub base_rows: Option<String>,
    /// The comparison's new rows by what they ran (as `velollm compare --new`).
    #[arg(long = "new", value_name = "SEL")]
    pub new_rows: Option<String>,
    /// Add the results history's trends: tokens/s over runs and builds per configuration and machine, and the
    /// same test across machines (`--history=PATH` for another file than $VELOLLM_HISTORY or
    /// $XDG_DATA_HOME/velollm/history.db; the `=` keeps a results file after it a results file).
    #[arg(long, value_name = "PATH", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub history: Option<PathBuf>,
    /// With --history: only configurations of this model (part of its name or file name).
    #[arg(long, value_name = "MODEL", requires = "history")]
    pub history_model: Option<String>,
    /// With --history: at most this many trend charts (the configurations with the most runs first).
    #[arg(long, value_name = "N", default_value_t = 24, requires = "history")]
    pub history_charts: usize,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    velollm_export::check_writable(&args.output).map_err(|e| UsageError(e.to_string()))?;
    if let Some(pct) = args.fail_if_slower.filter(|p| !(*p > 0.0 && *p <= 100.0)) {
        return Err(UsageError(format!("invalid --fail-if-slower '{pct}': a per cent above 0 and at most 100")).into());
    }
    let selector = |text: &Option<String>, flag: &str| {
        text.as_deref().map(Selector::parse).transpose().map_err(|e| UsageError(format!("invalid --{flag}: {e}")))
    };
    let (base_rows, new_rows) = (selector(&args.base_rows, "base")?, selector(&args.new_rows, "new")?);
    let runs = args.results.iter().map(|p| read_file(p)).collect::<Result<Vec<Run>, _>>()?;
    // Selections that keep nothing are usage errors here, before the page is written.
    if let Some(s) = &base_rows {
        select(&runs[0], s).map_err(|e| UsageError(format!("invalid --base: {e}")))?;
    }
    if let Some(s) = &new_rows {
        for run in if runs.len() > 1 { &runs[1..] } else { &runs[..] } {
            select(run, s).map_err(|e| UsageError(format!("invalid --new: {e}")))?;
        }
    }
    for run in &runs {
        for warning in &run.warnings {
            eprintln!("warning: {}: {warning}", run.path.display());
        }
    }
    let history = match &args.history {
        Some(path) => {
            let explicit = Some(path.as_path()).filter(|p| !p.as_os_str().is_empty());
            Some(crate::history::report_view(explicit, args.history_model.as_deref(), args.history_charts)?)
        }
        None => None,
    };
    let options = Options {
        title: args.title,
        fail_if_slower: args.fail_if_slower,
        ignore: args
            .ignore
            .as_deref()
            .map(|l| l.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default(),
        base_rows,
        new_rows,
        history,
        ..Options::default()
    };
    let page = render(&runs, &options);
    velollm_export::write_atomically(&args.output, &page).context("writing the report")?;
    let rows: usize = runs.iter().map(|r| r.entries.len()).sum();
    let charts = page.matches("<svg class=\"chart\"").count();
    show(&format!(
        "Report written to {} ({rows} rows, {charts} charts, {} KB; open it in a browser)\n",
        args.output.display(),
        page.len() / 1024
    ));
    Ok(ExitCode::SUCCESS)
}
