//! `velollm compare BASE NEW [MORE…]`: every new run against the base, a table (or JSON) of what changed, and
//! the `--fail-if-slower` exit status for CI gates. `velollm compare SWEEP --base 'n_threads=1' --new
//! 'n_threads=2'` takes both sides from one file (an interleaved sweep's rows are then compared round by round).
//! The reading, matching and statistics are velollm-compare's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use velollm_compare::{
    compare, differing_names, gate, ignorable, parse_threshold, read_file, select, Comparison, Gate, Method,
    MetricChange, Pair, Run, Selector, Status, GATE_ALPHA,
};

use crate::{show, UsageError};

/// Exit status when the gate fails (a usage error is 2, an unreadable file 1 as well).
const EXIT_SLOWER: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompareFormat {
    /// A markdown table per new run, then the rows without a counterpart.
    Table,
    /// Everything as one JSON object (comparisons, pairs, metrics, unmatched rows, the gate).
    Json,
}

#[derive(Args)]
pub struct CompareArgs {
    /// The base run: velollm's .json or .jsonl, or llama-bench's `-o json` / `-o jsonl` output. Alone, with
    /// --base and --new, both sides come from it.
    /// With --baseline, the first NEW file instead.
    #[arg(value_name = "BASE", required_unless_present = "baseline")]
    pub base_file: Option<PathBuf>,
    /// The run(s) to compare with the base, each against the base.
    #[arg(value_name = "NEW", num_args = 0..)]
    pub new_files: Vec<PathBuf>,
    /// Only the base rows that ran with these settings (comma list of name=value: a parameter such as
    /// n_threads=1, backend=…, model=…, test=…). With one file, the base side of a comparison within it.
    #[arg(long = "base", value_name = "SEL")]
    pub base_rows: Option<String>,
    /// Only the new rows that ran with these settings (as --base). A name --base and --new give different
    /// values is left out of the matching: `velollm compare sweep.json --base n_threads=1 --new n_threads=2`.
    #[arg(long = "new", value_name = "SEL")]
    pub new_rows: Option<String>,
    /// Exit with status 1 when a metric is slower than in the base by more than PCT per cent (one-sided tests,
    /// Holm's correction over every row and metric: noise alone fails the gate at most 2.5 % of the time), or
    /// a test that ran in the base failed. PCT is above 0 and at most 100.
    #[arg(long, value_name = "PCT", allow_hyphen_values = true)]
    pub fail_if_slower: Option<String>,
    /// Leave out of the matching (comma list): model, backend, or a parameter such as n_threads, to compare
    /// rows that differ in it on purpose.
    #[arg(long, value_name = "LIST")]
    pub ignore: Option<String>,
    /// Take the base from the results history instead of a file: `last` (the latest earlier run on this
    /// machine), a run id (`velollm history list`), or `best` (for each new row, the fastest ok row of the
    /// same test, model, backend and parameters ever measured on this machine). Every file given is then NEW.
    #[arg(long, value_name = "last|RUN|best")]
    pub baseline: Option<String>,
    /// The machine whose runs --baseline looks at (its alias in the history; default: the host name).
    #[arg(long, value_name = "NAME", requires = "baseline")]
    pub machine: Option<String>,
    #[command(flatten)]
    pub history: crate::history::HistoryFile,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
    pub format: CompareFormat,
}

/// The whole answer, as `--format json` prints it.
#[derive(Serialize)]
struct Answer<'a> {
    comparisons: &'a [Comparison],
    #[serde(skip_serializing_if = "Option::is_none")]
    gate: Option<&'a Gate>,
}

pub fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let threshold = args.fail_if_slower.as_deref().map(parse_threshold).transpose().map_err(UsageError)?;
    let selector = |text: &Option<String>, flag: &str| {
        text.as_deref().map(Selector::parse).transpose().map_err(|e| UsageError(format!("invalid --{flag}: {e}")))
    };
    let (base_selector, new_selector) = (selector(&args.base_rows, "base")?, selector(&args.new_rows, "new")?);
    if let Some(baseline) = &args.baseline {
        return run_against_history(&args, baseline, threshold, base_selector, new_selector);
    }
    let Some(base_path) = &args.base_file else {
        return Err(UsageError("no BASE: give a results file, or --baseline last|RUN|best".into()).into());
    };
    let base_file = read_file(base_path)?;
    let mut new_files = args.new_files.iter().map(|p| read_file(p)).collect::<Result<Vec<Run>, _>>()?;
    if new_files.is_empty() {
        if base_selector.is_none() || new_selector.is_none() {
            return Err(UsageError(format!(
                "one file and no NEW: give a second file, or say which of its rows are the base and which the new \
                 (velollm compare {} --base 'n_threads=1' --new 'n_threads=2')",
                base_path.display()
            ))
            .into());
        }
        new_files.push(base_file.clone());
    }
    let base = match &base_selector {
        Some(s) => select(&base_file, s).map_err(|e| UsageError(format!("invalid --base: {e}")))?,
        None => base_file,
    };
    let news = match &new_selector {
        Some(s) => new_files
            .iter()
            .map(|run| select(run, s))
            .collect::<Result<Vec<Run>, _>>()
            .map_err(|e| UsageError(format!("invalid --new: {e}")))?,
        None => new_files,
    };
    if news.len() == 1 && news[0].path == base.path {
        let rows = |run: &Run| run.entries.iter().map(|e| e.row).collect::<Vec<_>>();
        if rows(&news[0]) == rows(&base) {
            return Err(UsageError("--base and --new select the same rows: nothing to compare".into()).into());
        }
    }
    let mut ignore: Vec<String> = args
        .ignore
        .as_deref()
        .map(|list| list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut all = vec![base.clone()];
    all.extend(news.iter().cloned());
    let known = ignorable(&all);
    if let Some(unknown) = ignore.iter().find(|i| !known.contains(i)) {
        return Err(UsageError(format!("invalid --ignore '{unknown}': the files record {}", known.join(", "))).into());
    }
    // The sides differ on purpose in what selected them.
    for name in differing_names(base_selector.as_ref(), new_selector.as_ref()) {
        if !ignore.contains(&name) {
            ignore.push(name);
        }
    }

    finish(&args, &base, &news, &ignore, threshold)
}

/// `--baseline`: every file is NEW; the base is taken from the history (velollm-history says which rows).
fn run_against_history(
    args: &CompareArgs,
    baseline: &str,
    threshold: Option<f64>,
    base_selector: Option<Selector>,
    new_selector: Option<Selector>,
) -> anyhow::Result<ExitCode> {
    let which = velollm_history::baseline::Baseline::parse(baseline).ok_or_else(|| {
        UsageError(format!("invalid --baseline '{baseline}': last, best, or a run id from `velollm history list`"))
    })?;
    let paths: Vec<&PathBuf> = args.base_file.iter().chain(&args.new_files).collect();
    if paths.is_empty() {
        return Err(UsageError("--baseline needs the NEW results file(s) to compare with it".into()).into());
    }
    let mut news = paths.iter().map(|p| read_file(p)).collect::<Result<Vec<Run>, _>>()?;
    if let Some(s) = &new_selector {
        news = news
            .iter()
            .map(|run| select(run, s))
            .collect::<Result<Vec<Run>, _>>()
            .map_err(|e| UsageError(format!("invalid --new: {e}")))?;
    }
    let history = crate::history::open_existing(args.history.history.as_deref())?;
    let machine = args.machine.clone().or_else(crate::history::host_name);
    let new_entries: Vec<velollm_compare::Entry> = news.iter().flat_map(|r| r.entries.iter().cloned()).collect();
    let base_rows = history.baseline(which, &new_entries, machine.as_deref())?;
    let text: String = base_rows.rows.iter().map(|r| format!("{r}\n")).collect();
    let mut base = velollm_compare::read_str(&text).map_err(|e| anyhow::anyhow!("the history's rows: {e}"))?;
    base.path = PathBuf::from(&base_rows.label);
    if let Some(s) = &base_selector {
        base = select(&base, s).map_err(|e| UsageError(format!("invalid --base: {e}")))?;
    }
    let ignore: Vec<String> = args
        .ignore
        .as_deref()
        .map(|list| list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    finish(args, &base, &news, &ignore, threshold)
}

/// Compares each new run with the base, prints the answer, and applies the gate.
fn finish(
    args: &CompareArgs,
    base: &Run,
    news: &[Run],
    ignore: &[String],
    threshold: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let comparisons: Vec<Comparison> = news.iter().map(|new| compare(base, new, ignore)).collect();
    let gate = threshold.map(|pct| gate(&comparisons, pct));
    match args.format {
        CompareFormat::Json => {
            let answer = Answer { comparisons: &comparisons, gate: gate.as_ref() };
            show(&format!("{}\n", serde_json::to_string_pretty(&answer)?));
        }
        CompareFormat::Table => {
            let mut out = String::new();
            for (comparison, new) in comparisons.iter().zip(news) {
                out.push_str(&render(comparison, base, new));
            }
            if let Some(gate) = &gate {
                out.push_str(&render_gate(gate));
            }
            show(&out);
        }
    }
    for comparison in &comparisons {
        for warning in &comparison.warnings {
            eprintln!("warning: {warning}");
        }
    }
    match gate {
        Some(gate) if gate.failed => {
            let n = gate.reasons.len();
            eprintln!(
                "error: {n} regression{} beyond --fail-if-slower {}%: {}",
                if n == 1 { "" } else { "s" },
                gate.fail_if_slower_percent,
                gate.reasons[0]
            );
            Ok(ExitCode::from(EXIT_SLOWER))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Decimals that suit a value's size (1 from 100 up, 2 from 1, else 3).
fn decimals(v: f64) -> usize {
    if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    }
}

/// `mean ± sd (n=…)`, both with the mean's precision.
fn moments(m: &velollm_compare::Moments) -> String {
    let d = decimals(m.mean);
    match m.stddev {
        Some(sd) => format!("{:.d$} ± {sd:.d$} (n={})", m.mean, m.n),
        None => format!("{:.d$} (n={})", m.mean, m.n),
    }
}

fn p_value(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
        None => "-".into(),
    }
}

fn verdict(m: &MetricChange) -> String {
    match m.verdict {
        velollm_compare::Verdict::Faster => "faster ▲".into(),
        velollm_compare::Verdict::Slower => "slower ▼".into(),
        other => other.word().into(),
    }
}

fn status_note(pair: &Pair) -> Option<String> {
    let side = |status: Status, error: &Option<String>, which: &str| match status {
        Status::Failed => Some(format!("failed in {which}: {}", error.as_deref().unwrap_or("?"))),
        Status::Incomplete => Some(format!("incomplete in {which}")),
        Status::Ok => None,
    };
    let invalid = |why: &Option<String>, which: &str| why.as_ref().map(|w| format!("invalid in {which}: {w}"));
    let notes: Vec<String> = [
        side(pair.base_status, &pair.base_error, "base"),
        side(pair.new_status, &pair.new_error, "new"),
        invalid(&pair.base_invalid, "base"),
        invalid(&pair.new_invalid, "new"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// Markdown cell text: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if right[i] { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&rows[0]);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| if right[i] { format!("{}:", "-".repeat(w.max(2) - 1)) } else { "-".repeat(w) })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in &rows[1..] {
        out.push_str(&line(row));
    }
    out
}

fn render(c: &Comparison, base: &Run, new: &Run) -> String {
    let mut out = format!(
        "\nBase: {} ({}, {} rows)\nNew:  {} ({}, {} rows): {} matched, {} only in base, {} only in new\n\n",
        c.base,
        c.base_tool,
        base.entries.len(),
        c.new,
        c.new_tool,
        new.entries.len(),
        c.pairs.len(),
        c.only_in_base.len(),
        c.only_in_new.len()
    );
    if !c.pairs.is_empty() {
        // Columns for what tells the pairs apart: the model and backend when they differ, and every parameter
        // whose value differs between pairs.
        let several = |f: &dyn Fn(&Pair) -> String| c.pairs.iter().any(|p| f(p) != f(&c.pairs[0]));
        let show_model = several(&|p| p.model.clone());
        let show_backend = several(&|p| p.backend.clone());
        let mut varying: Vec<&str> = Vec::new();
        for pair in &c.pairs {
            for name in pair.parameters.keys() {
                let values: Vec<Option<&String>> = c.pairs.iter().map(|p| p.parameters.get(name)).collect();
                if values.iter().any(|v| *v != values[0]) && !varying.contains(&name.as_str()) {
                    varying.push(name);
                }
            }
        }
        let mut header: Vec<String> = vec!["test".into()];
        if show_model {
            header.push("model".into());
        }
        if show_backend {
            header.push("backend".into());
        }
        header.extend(varying.iter().map(|v| v.to_string()));
        let fixed = header.len();
        header.extend(
            ["metric", "base", "new", "change", "95 % CI", "p", "method", "verdict"].iter().map(|s| s.to_string()),
        );
        let mut rows = vec![header];
        for pair in &c.pairs {
            let mut lead: Vec<String> = vec![pair.test.name.clone()];
            if show_model {
                lead.push(pair.model.clone());
            }
            if show_backend {
                lead.push(pair.backend.clone());
            }
            lead.extend(varying.iter().map(|v| pair.parameters.get(*v).cloned().unwrap_or_else(|| "-".into())));
            let blank = vec![String::new(); lead.len()];
            let note = status_note(pair);
            if pair.metrics.is_empty() {
                let mut row = lead.clone();
                row.extend(["-", "-", "-", "-", "-", "-", "-"].iter().map(|s| s.to_string()));
                row.push(note.clone().unwrap_or_else(|| "nothing to compare".into()));
                rows.push(row.iter().map(|c| cell(c)).collect());
                continue;
            }
            for (i, m) in pair.metrics.iter().enumerate() {
                let mut row = if i == 0 { lead.clone() } else { blank.clone() };
                let ci = match (m.ci95_low_percent, m.ci95_high_percent, m.p_value) {
                    (Some(lo), Some(hi), _) => format!("{lo:+.1} … {hi:+.1} %"),
                    // The base mean is not distinguishable from zero: the ratio has no bounded interval.
                    (_, _, Some(_)) => "unbounded".into(),
                    _ => "-".into(),
                };
                let mut verdict = verdict(m);
                if i == 0 {
                    if let Some(note) = &note {
                        verdict.push_str(&format!(" ({note})"));
                    }
                }
                row.extend([
                    m.label.to_string(),
                    moments(&m.base),
                    moments(&m.new),
                    format!("{:+.1} %", m.change_percent),
                    ci,
                    p_value(m.p_value),
                    match m.method {
                        Method::Paired => format!("paired ({} rounds)", m.log_ratios.map_or(m.base.n, |r| r.n)),
                        Method::Welch => "Welch".into(),
                    },
                    verdict,
                ]);
                rows.push(row.iter().map(|c| cell(c)).collect());
            }
        }
        let right: Vec<bool> = (0..rows[0].len()).map(|i| i > fixed && i < fixed + 6).collect();
        out.push_str(&table(&rows, &right));
    }
    for (title, lonely) in [(&c.base, &c.only_in_base), (&c.new, &c.only_in_new)] {
        if lonely.is_empty() {
            continue;
        }
        out.push_str(&format!("\nOnly in {title}:\n"));
        for u in lonely {
            let nearest = u.nearest.as_ref().map(|n| format!(" (nearest: {n})")).unwrap_or_default();
            out.push_str(&format!("  row {}: {}{nearest}\n", u.row, u.label));
        }
    }
    let paired: Vec<&str> = c.pairs.iter().filter_map(|p| p.interleaved_run.as_deref()).collect();
    if let Some(run) = paired.first() {
        out.push_str(&format!(
            "\nPaired: rows of interleaved run {run} are compared round by round (t-test on the log-ratios of the \
             repetitions measured in the same round; the change is that of the geometric mean), so drift between \
             rounds does not count as a difference.\n"
        ));
    }
    let mut notes: Vec<&str> = c.pairs.iter().filter_map(|p| p.method_note.as_deref()).collect();
    notes.sort();
    notes.dedup();
    for note in notes {
        out.push_str(&format!("{note}: drift between when the two were measured counts as a difference.\n"));
    }
    let mut not_compared: Vec<&str> = c.pairs.iter().flat_map(|p| p.not_compared.iter().map(String::as_str)).collect();
    not_compared.sort();
    not_compared.dedup();
    if !not_compared.is_empty() {
        out.push_str(&format!("\nRecorded by one side only, not compared: {}\n", not_compared.join(", ")));
    }
    let mut ignored: Vec<&str> =
        c.pairs.iter().flat_map(|p| p.ignored_differences.iter().map(String::as_str)).collect();
    ignored.sort();
    ignored.dedup();
    if !ignored.is_empty() {
        out.push_str(&format!("Different on purpose (--ignore, --base/--new): {}\n", ignored.join("; ")));
    }
    out
}

fn render_gate(gate: &Gate) -> String {
    if gate.failed {
        let mut out = format!("\n✗ --fail-if-slower {} %: failed\n", gate.fail_if_slower_percent);
        for reason in &gate.reasons {
            out.push_str(&format!("  {reason}\n"));
        }
        out
    } else {
        format!(
            "\n✓ --fail-if-slower {} %: passed (no metric is slower by more than that: Holm's correction over {} \
             test{}, family-wise error {} %)\n",
            gate.fail_if_slower_percent,
            gate.hypotheses,
            if gate.hypotheses == 1 { "" } else { "s" },
            GATE_ALPHA * 100.0
        )
    }
}
