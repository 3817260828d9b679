//! The results history in the CLI: the `--history`/`--no-history`/`--machine` flags, the recorder that adds
//! each finished row of `velollm benchmark`, the model-hash cache, and `velollm history` (list, show, trend,
//! best, import, export, rm). The database itself is velollm-history's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};
use velollm_benchmarks::HashCache;
use velollm_core::BenchmarkResult;
use velollm_history::hashes::FileKey;
use velollm_history::{
    History, MachineIdentity, NewRun, RunFilter, RunId, RunStatus, SoftwareIdentity, TrendMetric, VolatileContext,
};

use crate::{show, UsageError};

/// Where `velollm benchmark` keeps its runs.
#[derive(Args, Clone, Default)]
pub struct HistoryOptions {
    /// The results history to add this run to (default: $VELOLLM_HISTORY, else
    /// $XDG_DATA_HOME/velollm/history.db, i.e. ~/.local/share/velollm/history.db).
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,
    /// Keep this run out of the history (model files are then hashed again too: the hash cache is in it).
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
    /// This machine's name in the history (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,
}

/// `--history PATH` of the commands that read the history.
#[derive(Args, Clone, Default)]
pub struct HistoryFile {
    /// The results history (default: $VELOLLM_HISTORY, else $XDG_DATA_HOME/velollm/history.db).
    // Global: `velollm history list --history X` as well as `velollm history --history X list`.
    #[arg(long, value_name = "PATH", global = true)]
    pub history: Option<PathBuf>,
}

/// The history file to use: `--history`, else the default location.
pub fn history_path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(path) => Ok(path.to_path_buf()),
        None => velollm_history::default_path().ok_or_else(|| {
            anyhow::Error::new(UsageError(
                "no place for the history: HOME, XDG_DATA_HOME and VELOLLM_HISTORY are all unset (use --history PATH or --no-history)"
                    .into(),
            ))
        }),
    }
}

/// Opens the history a command reads; a missing file is an error there (nothing to read).
pub fn open_existing(explicit: Option<&Path>) -> anyhow::Result<History> {
    let path = history_path(explicit)?;
    if !path.exists() {
        anyhow::bail!("no history at {} yet: `velollm benchmark` starts one (or give --history PATH)", path.display());
    }
    Ok(History::open(&path)?)
}

/// This host's name (the default machine alias).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
}

/// The machine's alias, identity and current state, and this build's software identity.
pub fn identities(alias: Option<&str>) -> (MachineIdentity, SoftwareIdentity, VolatileContext) {
    let hardware = velollm_benchmarks::hardware_info();
    let alias = alias.map(str::to_string).or_else(host_name).unwrap_or_else(|| "localhost".into());
    let machine = MachineIdentity {
        alias,
        machine_key: velollm_history::machine_key(),
        hardware: velollm_history::HardwareIdentity::from_hardware(&hardware),
    };
    let engine = velollm_benchmarks::llamacpp_engine_info();
    let features: Vec<String> =
        [("cuda", cfg!(feature = "cuda")), ("dynamic-backends", cfg!(feature = "dynamic-backends"))]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name.to_string())
            .collect();
    let software = SoftwareIdentity::new(
        velollm_hw::VELOLLM_VERSION,
        velollm_hw::git_commit(),
        engine.as_ref().and_then(|e| e.version.clone()),
        engine.and_then(|e| e.build),
        features,
        &hardware,
    );
    let context = VolatileContext::now(hardware.memory.available_bytes);
    (machine, software, context)
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The command line as typed, each argument quoted where a shell would need it.
pub fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c)) {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A benchmark run's place in the history: rows are added as they finish.
pub struct Recorder {
    history: Arc<History>,
    run: RunId,
    /// A write that failed is said once; the run goes on (its results files are unaffected).
    warned: bool,
}

impl Recorder {
    /// Opens the history (unless `--no-history`) and records the run's start. Fails, before anything slow,
    /// on a history that cannot be used (corrupt, another program's, a newer velollm's).
    pub fn start(options: &HistoryOptions) -> anyhow::Result<Option<Recorder>> {
        if options.no_history {
            return Ok(None);
        }
        let path = history_path(options.history.as_deref())?;
        let history = Arc::new(History::open(&path)?);
        let (machine, software, context) = identities(options.machine.as_deref());
        let run = history.begin_run(&NewRun {
            command_line: command_line(),
            started_at: now(),
            machine,
            software,
            context,
        })?;
        Ok(Some(Recorder { history, run, warned: false }))
    }

    pub fn hash_cache(&self) -> Arc<dyn HashCache> {
        Arc::new(HistoryHashCache { history: Arc::clone(&self.history), seen: Mutex::new(HashMap::new()) })
    }

    pub fn row_finished(&mut self, row: &BenchmarkResult) {
        let result = serde_json::to_value(row)
            .map_err(|e| e.to_string())
            .and_then(|value| self.history.add_row(self.run, &value, &now()).map_err(|e| e.to_string()));
        if let Err(e) = result {
            if !self.warned {
                eprintln!("warning: a row could not be added to the history ({e}); the results files have it");
                self.warned = true;
            }
        }
    }

    pub fn end(&self, status: RunStatus) {
        if let Err(e) = self.history.end_run(self.run, status, &now()) {
            eprintln!("warning: the history could not mark run {} {} ({e})", self.run, status.word());
        }
    }
}

/// The model-hash cache kept in the history: a file's sha256 is reused while its path, size, modification
/// time and inode are unchanged, and stored only if they did not change while it was hashed.
#[derive(Debug)]
struct HistoryHashCache {
    history: Arc<History>,
    /// The key of each file looked up and not found, to compare with after hashing.
    seen: Mutex<HashMap<PathBuf, FileKey>>,
}

impl HashCache for HistoryHashCache {
    fn cached(&self, path: &Path) -> Option<String> {
        let key = FileKey::of(path).ok()?;
        let hit = self.history.cached_sha256(&key);
        if hit.is_none() {
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf(), key);
        }
        hit
    }

    fn hashed(&self, path: &Path, sha256: &str) {
        let before = self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
        if let (Some(before), Ok(after)) = (before, FileKey::of(path)) {
            if before == after {
                // A cache that cannot be written only costs the next run a hash.
                let _ = self.history.store_sha256(&after, sha256, &now());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// `velollm history`

#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub file: HistoryFile,
    #[command(subcommand)]
    pub command: HistoryCommand,
}

#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Rows of this model (a part of its name or file name, or the start of its sha256).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Rows of this backend (llamacpp, candle, ollama).
    #[arg(long, short)]
    pub backend: Option<String>,
    /// Runs on this machine (its alias: --machine when it ran, by default the host name).
    #[arg(long)]
    pub machine: Option<String>,
    /// Rows of this test (tg128, pp512, short_completion, ...).
    #[arg(long)]
    pub test: Option<String>,
    /// Runs started at or after this time: a date (2026-12-01), an RFC 3339 time, or an age (7d, 12h).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Runs started before this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// The runs kept, oldest first (filters: --model, --backend, --machine, --test, --since, --until).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One run: its command, machine, build, state of the machine, and every row.
    Show {
        /// The run's id (`history list` shows them), or `last`.
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// A metric across runs, one series per machine, model, test, backend and parameters; `*` marks a point
    /// whose build (velollm, llama.cpp, drivers, kernel) differs from the series' previous point.
    Trend {
        /// tokens_per_second (default), time_to_first_token_ms, prompt_tokens_per_second, total_ms.
        #[arg(default_value = "tokens_per_second")]
        metric: String,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// The fastest configuration measured per model, machine and test over every run kept (failed rows,
    /// such as a configuration that did not fit in memory, never count).
    Best {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only rows whose recorded peak memory (RSS plus VRAM) is at most this many GiB.
        #[arg(long, value_name = "GIB")]
        max_memory: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Add result files to the history, one run each: velollm's json/jsonl, llama-bench's -o json/jsonl/sql.
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The machine the files' rows ran on (default: the host name a velollm row records, else "imported").
        #[arg(long, value_name = "NAME")]
        machine: Option<String>,
    },
    /// Write rows as JSON Lines, as they were written (velollm compare, report and optimize read them):
    /// the runs named, else every row matching the filters.
    Export {
        #[arg(value_name = "RUN")]
        runs: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Remove runs and their rows.
    Rm {
        #[arg(required = true, value_name = "RUN")]
        runs: Vec<String>,
    },
}

/// A time as the history stores it (RFC 3339, UTC): a date, an RFC 3339 time, or an age like `7d`/`12h`.
pub fn parse_when(text: &str) -> anyhow::Result<String> {
    let bad = || {
        anyhow::Error::new(UsageError(format!(
            "'{text}' is not a time (a date like 2026-12-01, an RFC 3339 time, or an age like 7d or 12h)"
        )))
    };
    if let Some(number) = text.strip_suffix('d').or_else(|| text.strip_suffix('h')) {
        let n: i64 = number.parse().map_err(|_| bad())?;
        let hours = if text.ends_with('d') { n.checked_mul(24).ok_or_else(bad)? } else { n };
        let at = chrono::Utc::now() - chrono::Duration::try_hours(hours).ok_or_else(bad)?;
        return Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(format!("{date}T00:00:00.000Z"));
    }
    Err(bad())
}

impl FilterArgs {
    pub fn to_filter(&self) -> anyhow::Result<RunFilter> {
        Ok(RunFilter {
            model: self.model.clone(),
            backend: self.backend.clone(),
            machine: self.machine.clone(),
            test: self.test.clone(),
            since: self.since.as_deref().map(parse_when).transpose()?,
            until: self.until.as_deref().map(parse_when).transpose()?,
            runs: Vec::new(),
        })
    }
}

/// The history's tokens/s trends as `velollm report --history` draws them.
pub fn report_view(
    explicit: Option<&Path>,
    model: Option<&str>,
    max_charts: usize,
) -> anyhow::Result<velollm_report::trend::HistoryView> {
    use velollm_report::trend::{HistoryView, TrendConfiguration, TrendValue};
    let history = open_existing(explicit)?;
    let filter = RunFilter { model: model.map(str::to_string), ..RunFilter::default() };
    let points = history.trend(TrendMetric::TokensPerSecond, &filter)?;
    let mut configurations: Vec<TrendConfiguration> = Vec::new();
    for point in points {
        let label = point.configuration.clone();
        let test = point.test.clone();
        let value = TrendValue {
            machine: point.machine.clone().unwrap_or_else(|| "?".into()),
            started_at: point.started_at.clone(),
            run: point.run_id,
            value: point.value,
            build: point.build.clone(),
            build_changed: point.build_changed,
        };
        match configurations.iter_mut().find(|c| c.label == label) {
            Some(c) => c.values.push(value),
            None => configurations.push(TrendConfiguration { label, test, values: vec![value] }),
        }
    }
    Ok(HistoryView {
        metric: "tokens/s".into(),
        source: format!("the history {}", history.path().display()),
        configurations,
        max_charts,
    })
}

/// A run named on the command line: its id, or `last` (the latest run with rows).
pub fn run_id(history: &History, text: &str) -> anyhow::Result<RunId> {
    if text == "last" {
        return history.last_run(None)?.ok_or_else(|| anyhow::anyhow!("the history holds no run with rows yet"));
    }
    let id: RunId = text
        .parse()
        .map_err(|_| UsageError(format!("'{text}' is not a run id (a number from `velollm history list`, or last)")))?;
    match history.run(id)? {
        Some(_) => Ok(id),
        None => anyhow::bail!("the history has no run {id} (`velollm history list` shows them)"),
    }
}

pub fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let explicit = args.file.history.as_deref();
    match args.command {
        HistoryCommand::Import { files, machine } => {
            let path = history_path(explicit)?;
            let history = History::open(&path)?;
            for file in &files {
                // Every file is read before the first is added: a bad one is refused with nothing imported.
                velollm_history::import::read_rows(file)?;
            }
            for file in &files {
                let (rows, _) = velollm_history::import::read_rows(file)?;
                let identity = velollm_history::import::machine_of_rows(&rows, machine.as_deref());
                let imported = history.import(file, &identity, &now())?;
                for warning in &imported.warnings {
                    eprintln!("warning: {}: {warning}", file.display());
                }
                show(&format!(
                    "imported {} ({} row{} from {}) as run {} on {}\n",
                    file.display(),
                    imported.rows,
                    if imported.rows == 1 { "" } else { "s" },
                    imported.tools,
                    imported.run,
                    identity.alias
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::List { filter, json } => {
            let history = open_existing(explicit)?;
            let runs = history.runs(&filter.to_filter()?)?;
            if json {
                show(&format!("{}\n", serde_json::to_string_pretty(&runs)?));
            } else {
                show(&crate::history_view::runs_table(&runs));
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Show { run, json } => {
            let history = open_existing(explicit)?;
            let id = run_id(&history, &run)?;
            let summary = history.run(id)?.ok_or_else(|| anyhow::anyhow!("the history has no run {id}"))?;
            let rows = history.rows_of(id)?;
            if json {
                let value = serde_json::json!({ "run": summary, "rows": rows });
                show(&format!("{}\n", serde_json::to_string_pretty(&value)?));
            } else {
                show(&crate::history_view::run_detail(&summary, &rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Trend { metric, filter, json } => {
            let metric = TrendMetric::parse(&metric).ok_or_else(|| {
                UsageError(format!("unknown metric '{metric}' (one of: {})", TrendMetric::NAMES.join(", ")))
            })?;
            let history = open_existing(explicit)?;
            let points = history.trend(metric, &filter.to_filter()?)?;
            if json {
                show(&format!("{}\n", serde_json::to_string_pretty(&points)?));
            } else {
                show(&crate::history_view::trend_table(metric, &points));
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Best { filter, max_memory, json } => {
            let limit = match max_memory {
                Some(gib) if gib.is_finite() && gib > 0.0 => Some((gib * (1u64 << 30) as f64) as u64),
                Some(_) => return Err(UsageError("--max-memory must be a positive number of GiB".into()).into()),
                None => None,
            };
            let history = open_existing(explicit)?;
            let best = history.best(&filter.to_filter()?, limit)?;
            if json {
                show(&format!("{}\n", serde_json::to_string_pretty(&best)?));
            } else {
                show(&crate::history_view::best_table(&best));
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Export { runs, filter, output } => {
            let history = open_existing(explicit)?;
            let mut selection = filter.to_filter()?;
            for run in &runs {
                selection.runs.push(run_id(&history, run)?);
            }
            let rows = history.rows(&selection)?;
            let mut text = String::new();
            for row in &rows {
                text.push_str(&row.row.to_string());
                text.push('\n');
            }
            match output {
                Some(path) => {
                    velollm_export::write_atomically(&path, &text)?;
                    eprintln!(
                        "{} row{} written to {}",
                        rows.len(),
                        if rows.len() == 1 { "" } else { "s" },
                        path.display()
                    );
                }
                None => {
                    crate::reserve_stdout();
                    let mut out = std::io::stdout().lock();
                    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Rm { runs } => {
            let history = open_existing(explicit)?;
            let ids = runs.iter().map(|r| run_id(&history, r)).collect::<anyhow::Result<Vec<_>>>()?;
            let removed = history.remove_runs(&ids)?;
            show(&format!("removed {removed} run{}\n", if removed == 1 { "" } else { "s" }));
            Ok(ExitCode::SUCCESS)
        }
    }
}
