//! The runner: a [`Plan`] carried out instance by instance — model loads, contexts, warm-up, timed
//! repetitions, cancellation — with one row per instance, handed to an [`Observer`] the moment it exists.
//!
//! What can be checked without an engine (unknown backends, models that are missing or corrupt) is checked
//! by [`prepare`] before anything slow. Everything that fails later (a load that does not fit in memory, a
//! context the engine rejects, a prompt that does not fit, an error in iteration k) becomes a row marked
//! failed or incomplete with its one-line error, and the sweep goes on. Ctrl-C (the `cancel` flag) ends
//! the current repetition and the run; every finished repetition is kept in an incomplete row.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use velollm_core::{
    Aggregates, Backend, BackendError, BenchmarkConfig, BenchmarkResult, DecodeEfficiency, EffectiveContext,
    EffectiveLoad, EffectiveParams, EngineInfo, Environment, GenerationParams, GenerationRequest, GpuLayers,
    HardwareInfo, IterationMetrics, IterationTelemetry, LoadParams, LoadedModel, ModelIdentity, ModelSource, RawSample,
    RepetitionRecord, RequestedParams, RowStatus, RowTelemetry, RunParameters, ServerRecord, Session, SourceKind,
    StopRule, Summary, TestKind, TestShape, TokenRequest, TokenTest, SCHEMA_VERSION,
};
use velollm_hw::telemetry::Telemetry;

use crate::model::{identify_model, resolve_model_source};
use crate::plan::{Instance, Plan, Repetitions, TestCase};
use crate::BenchError;

/// The backends compiled into this build, in the order `auto` prefers them.
pub fn available_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "llamacpp") {
        names.push("llamacpp");
    }
    if cfg!(feature = "candle") {
        names.push("candle");
    }
    if cfg!(feature = "ollama") {
        names.push("ollama");
    }
    names
}

/// The name `auto` stands for: llama.cpp when compiled in, otherwise candle (never a server backend, which
/// measures something else).
pub const AUTO_BACKEND: &str = "auto";

/// Resolves a backend name as users type it (`auto` included) to a backend compiled into this build.
pub fn resolve_backend(name: &str) -> Result<&'static str, BenchError> {
    let available = available_backends();
    let in_process: Vec<&str> = available.iter().copied().filter(|&b| b == "llamacpp" || b == "candle").collect();
    if name == AUTO_BACKEND {
        return in_process.first().copied().ok_or_else(|| BenchError::UnknownBackend {
            name: name.to_string(),
            available: if available.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{}; -b auto picks an in-process engine (llamacpp or candle) and this build has neither, so name \
                     the backend",
                    available.join(", ")
                )
            },
        });
    }
    available.iter().copied().find(|&b| b == name).ok_or_else(|| BenchError::UnknownBackend {
        name: name.to_string(),
        available: if available.is_empty() {
            "none".to_string()
        } else if in_process.is_empty() {
            available.join(", ")
        } else {
            format!("auto, {}", available.join(", "))
        },
    })
}

/// How to reach a server backend (Ollama). Ignored by in-process engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConnection {
    /// `--ollama-url`; `None` falls back to `OLLAMA_HOST`, then `http://localhost:11434`.
    pub url: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (a stalled stream fails instead of hanging).
    pub idle_timeout: Duration,
    /// Longest wait for the untimed model load.
    pub load_timeout: Duration,
    /// Leave the model loaded on the server after the run (default: unload it).
    pub keep_loaded: bool,
}

impl Default for ServerConnection {
    fn default() -> Self {
        ServerConnection {
            url: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            load_timeout: Duration::from_secs(600),
            keep_loaded: false,
        }
    }
}

/// Which engine parameters the user set explicitly. A server applies its own defaults to the rest, so only
/// these are forwarded to it (in-process engines use every parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExplicitEngineParams {
    pub threads: bool,
    pub n_gpu_layers: bool,
    pub batch_size: bool,
}

/// How a run is carried out. Every field ends up in the results.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub generation: GenerationParams,
    /// Untimed iterations before each test's timed ones.
    pub warmup_iterations: u32,
    pub repetitions: Repetitions,
    /// Show the engine's own log output (through `tracing`).
    pub engine_logs: bool,
    /// Set it (e.g. on Ctrl-C) to stop after the current token; finished repetitions are kept.
    pub cancel: Arc<AtomicBool>,
    /// When the process started, to report the time to the first timed iteration.
    pub process_start: Option<Instant>,
    /// Server backends: where the server is and how long to wait for it.
    pub server: ServerConnection,
    /// Which parameters the user chose (server backends forward only those).
    pub explicit: ExplicitEngineParams,
    /// Draw a progress bar while a model is downloaded.
    pub download_progress: bool,
    /// Record GPU telemetry (NVML) and the process's peak memory around every timed iteration, and embed the
    /// hardware snapshot in every row.
    pub telemetry: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            generation: GenerationParams::default(),
            warmup_iterations: 1,
            repetitions: Repetitions::Fixed,
            engine_logs: false,
            cancel: Arc::new(AtomicBool::new(false)),
            process_start: None,
            server: ServerConnection::default(),
            explicit: ExplicitEngineParams::default(),
            download_progress: false,
            telemetry: true,
        }
    }
}

/// Where in the plan an event happens.
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub instance: &'a Instance,
    /// Instances in the plan.
    pub total: usize,
    pub backend: &'a str,
    /// The row's config (the guide's; for token tests `name` is `pp512`, …).
    pub config: &'a BenchmarkConfig,
    /// Timed repetitions planned: the fixed count, or the most `--repetitions auto` allows.
    pub planned: u32,
    /// Whether the count is decided by `--repetitions auto`.
    pub auto: bool,
}

/// Hears about each step of a run. Called between timed regions, never inside one.
#[allow(unused_variables)]
pub trait Observer: Send {
    fn plan_started(&mut self, plan: &Plan) {}
    /// A note said once, up front (e.g. that an `-ngl` sweep runs on the CPU in this build).
    fn notice(&mut self, text: &str) {}
    /// Work on a (model, backend) pair begins.
    fn group_started(&mut self, backend: &str, model: &str) {}
    /// A server backend is about to be checked.
    fn server_checking(&mut self, backend: &str) {}
    /// The server answered, with its version when it says one.
    fn server_available(&mut self, backend: &str, version: Option<&str>) {}
    /// The server did not answer (the rows say why).
    fn server_unavailable(&mut self, backend: &str) {}
    fn model_identified(&mut self, model: &ModelIdentity) {}
    fn model_loading(&mut self, backend: &str, load: &LoadParams) {}
    fn model_loaded(&mut self, load_ms: f64, engine: &EngineInfo, effective: &EffectiveLoad) {}
    /// The model did not load: one failure, said once; the `rows` rows it was to run follow as failed rows with
    /// `error` (through [`Observer::row_finished`]).
    fn model_load_failed(&mut self, backend: &str, error: &str, rows: usize) {}
    fn context_created(&mut self, effective: &EffectiveContext, warnings: &[String]) {}
    fn test_started(&mut self, at: &Position<'_>, warmup_iterations: u32) {}
    fn iteration_started(&mut self, at: &Position<'_>, iteration: u32, warmup: bool) {}
    fn warmup_finished(&mut self, at: &Position<'_>, iteration: u32) {}
    fn iteration_finished(&mut self, at: &Position<'_>, iteration: u32, metrics: &IterationMetrics) {}
    /// The row in progress after each timed repetition, as it would be saved if the run stopped now
    /// (incomplete, "interrupted"): lets a caller keep every finished repetition even if the process must end
    /// before the runner returns.
    fn row_progress(&mut self, row: &BenchmarkResult) {}
    /// A row exists: finished, incomplete (kept repetitions, with the error) or failed.
    fn row_finished(&mut self, row: &BenchmarkResult) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// What a run produced: every row, and whether it was interrupted.
#[derive(Debug)]
pub struct RunOutcome {
    pub rows: Vec<BenchmarkResult>,
    pub interrupted: bool,
    /// Models loaded and contexts created, as they happened (a sweep's reuse, counted).
    pub loads: usize,
    pub contexts: usize,
}

/// The models of a plan, resolved and identified before anything slow happens.
#[derive(Debug, Clone)]
pub struct PreparedModels {
    /// Per model reference: its file and identity, for the in-process backends that need a file.
    files: BTreeMap<String, (std::path::PathBuf, ModelIdentity)>,
}

/// Checks everything that can be checked without an engine: backends compiled in, every server reachable, and
/// every model the file backends need resolved, read and hashed. A missing or corrupt file, or a server that is
/// not running, is a one-line error before any load, not a run of failed rows (possibly after hours of another
/// backend's benchmarks). A server that goes away later fails its rows, and the run goes on.
pub fn prepare(
    plan: &Plan,
    options: &RunOptions,
    mut observer: Option<&mut dyn Observer>,
) -> Result<PreparedModels, BenchError> {
    let mut needs_file = false;
    for name in &plan.spec.backends {
        let backend = make_backend(name, options, first_threads(plan))?;
        match backend.source_kind() {
            SourceKind::File => needs_file = true,
            SourceKind::Server => {
                backend.check_available()?;
            }
        }
    }
    let mut files = BTreeMap::new();
    if needs_file {
        for reference in &plan.spec.models {
            if files.contains_key(reference) {
                continue;
            }
            let resolved = resolve_model_source(reference, options.download_progress, &options.cancel)?;
            let mut model = identify_model(reference, &resolved.path, &options.cancel)?;
            model.digest = resolved.digest;
            if let Some(observer) = observer.as_deref_mut() {
                observer.model_identified(&model);
            }
            files.insert(reference.clone(), (resolved.path, model));
        }
    }
    Ok(PreparedModels { files })
}

/// The thread count candle's process-wide pools get: the first the plan asks for.
fn first_threads(plan: &Plan) -> u32 {
    plan.spec.n_threads.first().copied().unwrap_or(1)
}

fn make_backend(name: &str, options: &RunOptions, threads: u32) -> Result<Box<dyn Backend>, BenchError> {
    let _ = threads;
    match resolve_backend(name)? {
        #[cfg(feature = "llamacpp")]
        "llamacpp" => Ok(Box::new(velollm_llamacpp::LlamaCppBackend::new(options.engine_logs))),
        #[cfg(feature = "candle")]
        "candle" => Ok(Box::new(velollm_candle::CandleBackend::new(threads))),
        #[cfg(feature = "ollama")]
        "ollama" => {
            let server = &options.server;
            let url = velollm_ollama::base_url(server.url.as_deref())
                .map_err(|e| BenchError::Backend(BackendError::Server(e.to_string())))?;
            let explicit = options.explicit;
            Ok(Box::new(velollm_ollama::OllamaBackend::new(velollm_ollama::OllamaSettings {
                url,
                timeouts: velollm_ollama::client::Timeouts {
                    connect: server.connect_timeout,
                    idle: server.idle_timeout,
                    load: server.load_timeout,
                },
                explicit: velollm_ollama::ExplicitOptions {
                    num_gpu: explicit.n_gpu_layers,
                    num_thread: explicit.threads,
                    num_batch: explicit.batch_size,
                },
                keep_loaded: server.keep_loaded,
            })))
        }
        other => {
            let _ = options;
            Err(BenchError::Internal(format!("backend '{other}' is listed but not constructible")))
        }
    }
}

/// Carries out `plan`. Rows reach `observer` as they finish; the outcome holds them all.
pub fn run_plan(
    plan: &Plan,
    prepared: &PreparedModels,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutcome, BenchError> {
    // The machine and its sampler, once per run: detection reads /proc, /sys, NVML and the engines' devices.
    let (hardware, telemetry) =
        if options.telemetry { (Some(crate::hardware_info()), Telemetry::start()) } else { (None, Telemetry::none()) };
    let mut runner = PlanRunner {
        plan,
        prepared,
        options,
        observer,
        rows: Vec::new(),
        loads: 0,
        contexts: 0,
        cpu_notice_given: Vec::new(),
        first_group: true,
        hardware,
        telemetry,
        busy_machine: None,
    };
    runner.observer.plan_started(plan);
    let interrupted = runner.run()?;
    Ok(RunOutcome { rows: runner.rows, interrupted, loads: runner.loads, contexts: runner.contexts })
}

struct PlanRunner<'p> {
    plan: &'p Plan,
    prepared: &'p PreparedModels,
    options: &'p RunOptions,
    observer: &'p mut dyn Observer,
    rows: Vec<BenchmarkResult>,
    loads: usize,
    contexts: usize,
    cpu_notice_given: Vec<String>,
    first_group: bool,
    hardware: Option<HardwareInfo>,
    telemetry: Telemetry,
    /// Said on the row being measured when other processes competed for the cores as it started.
    busy_machine: Option<String>,
}

/// A warning when the machine was busy with other work as a test started: the one-minute load average minus
/// this run's own threads (which the average also counts, from the test before) is at least one more runnable
/// process than there are cores left. On a small machine competing processes slow busy-waiting engines down far
/// more than their share, so such numbers are low and say so.
fn busy_machine_warning(threads: u32) -> Option<String> {
    let load = velollm_hw::load_average_1m()?;
    let cores = velollm_hw::CpuInfo::detect().logical_cpus? as f64;
    let others = load - f64::from(threads).min(cores);
    (others >= 1.0 && others > cores - f64::from(threads)).then(|| {
        format!(
            "the machine was busy as this test started (load average {load:.1} on {cores:.0} CPUs, {threads} of them \
             this run's threads): other processes competed for the cores, so these numbers are likely low"
        )
    })
}

/// What every row of one context shares.
#[derive(Clone)]
struct RowBase {
    backend: String,
    model: ModelIdentity,
    environment: Environment,
    load_ms: Option<f64>,
    context_ms: Option<f64>,
    effective: Option<EffectiveParams>,
    server: Option<ServerRecord>,
    warnings: Vec<String>,
    /// Start of this (model, backend) group's clock, for the start-up figure.
    group_start: Option<Instant>,
}

/// How a test's repetitions went.
struct Repeated {
    samples: Vec<RawSample>,
    /// One per sample, taken around it (outside its timed region).
    telemetry: Vec<IterationTelemetry>,
    stopped_because: StopRule,
    error: Option<String>,
}

impl PlanRunner<'_> {
    /// Runs every instance; `Ok(true)` when interrupted.
    fn run(&mut self) -> Result<bool, BenchError> {
        let instances = &self.plan.instances;
        let mut start = 0;
        while start < instances.len() {
            // A (model, backend) group: the contiguous instances sharing both.
            let first = &instances[start];
            let end = start
                + instances[start..]
                    .iter()
                    .take_while(|i| i.model == first.model && i.backend == first.backend)
                    .count();
            if self.run_group(&instances[start..end])? {
                return Ok(true);
            }
            start = end;
        }
        Ok(false)
    }

    fn cancelled(&self) -> bool {
        self.options.cancel.load(Ordering::Relaxed)
    }

    /// One model on one backend: availability, then each load group. `Ok(true)` when interrupted.
    fn run_group(&mut self, group: &[Instance]) -> Result<bool, BenchError> {
        let plan = self.plan;
        let backend_name = plan.spec.backends[group[0].backend].as_str();
        let reference = plan.spec.models[group[0].model].as_str();
        // The first group's start-up clock starts with the process; a later group's with its own first step,
        // so no group's figure includes another group's benchmarks.
        let group_start = if std::mem::take(&mut self.first_group) {
            self.options.process_start.or_else(|| Some(Instant::now()))
        } else {
            Some(Instant::now())
        };
        self.observer.group_started(backend_name, reference);
        let backend = make_backend(backend_name, self.options, first_threads(plan))?;
        let (source, file_model) = match backend.source_kind() {
            SourceKind::File => {
                let (path, model) = self.prepared.files.get(reference).cloned().ok_or_else(|| {
                    BenchError::Internal(format!("model {reference} was not prepared before the run"))
                })?;
                (ModelSource::File(path), Some(model))
            }
            SourceKind::Server => {
                self.observer.server_checking(backend_name);
                match backend.check_available() {
                    Ok(version) => self.observer.server_available(backend_name, version.as_deref()),
                    Err(e) => {
                        self.observer.server_unavailable(backend_name);
                        let base = self.placeholder_base(backend_name, reference, None, group_start);
                        return self.fail_all(group, &base, &e.to_string());
                    }
                }
                (ModelSource::Server(reference.to_string()), None)
            }
        };
        self.cpu_only_notice(backend.as_ref(), group);

        let mut start = 0;
        while start < group.len() {
            let end = start + group[start..].iter().take_while(|i| i.load == group[start].load).count();
            if self.run_load_group(backend.as_ref(), &source, file_model.as_ref(), &group[start..end], group_start)? {
                return Ok(true);
            }
            start = end;
        }
        Ok(false)
    }

    /// Said once per backend: in a build without a GPU backend every `-ngl` value runs on the CPU.
    fn cpu_only_notice(&mut self, backend: &dyn Backend, group: &[Instance]) {
        let asks_for_gpu = group.iter().any(|i| i.load.n_gpu_layers != GpuLayers::Count(0));
        let swept = self.plan.spec.n_gpu_layers.len() > 1;
        if backend.source_kind() == SourceKind::Server
            || !(asks_for_gpu || swept)
            || self.cpu_notice_given.iter().any(|b| b == backend.name())
            || backend.gpu_offload_available()
        {
            return;
        }
        self.cpu_notice_given.push(backend.name().to_string());
        let values: Vec<String> = self.plan.spec.n_gpu_layers.iter().map(ToString::to_string).collect();
        self.observer.notice(&format!(
            "{}: this build has no GPU backend (or sees no GPU): every -ngl value ({}) runs on the CPU, and rows \
             record 0 layers offloaded",
            backend.name(),
            values.join(", ")
        ));
    }

    fn environment(&self, backend: &str, engine: Option<&EngineInfo>) -> Environment {
        velollm_hw::environment(backend, engine.and_then(|e| e.version.clone()), engine.and_then(|e| e.build.clone()))
    }

    /// The base of rows that failed before the model said what it is.
    fn placeholder_base(
        &self,
        backend: &str,
        reference: &str,
        file_model: Option<&ModelIdentity>,
        group_start: Option<Instant>,
    ) -> RowBase {
        let model = file_model.cloned().unwrap_or_else(|| ModelIdentity {
            reference: reference.to_string(),
            path: String::new(),
            bytes: 0,
            sha256: None,
            architecture: None,
            parameter_count: None,
            quantization: None,
            name: None,
            synthetic: false,
            digest: None,
            weight_bytes_per_token: None,
        });
        RowBase {
            backend: backend.to_string(),
            model,
            environment: self.environment(backend, None),
            load_ms: None,
            context_ms: None,
            effective: None,
            server: None,
            warnings: Vec::new(),
            group_start,
        }
    }

    /// Every instance of `instances` becomes a failed row with `error`. `Ok(true)` when it was an interruption.
    fn fail_all(&mut self, instances: &[Instance], base: &RowBase, error: &str) -> Result<bool, BenchError> {
        for instance in instances {
            let row = self.row(
                base,
                instance,
                Vec::new(),
                Vec::new(),
                RowStatus::Failed,
                Some(error.to_string()),
                None,
                None,
            );
            self.emit(row);
        }
        Ok(false)
    }

    fn emit(&mut self, row: BenchmarkResult) {
        self.observer.row_finished(&row);
        self.rows.push(row);
    }

    /// One loaded model and its contexts. `Ok(true)` when interrupted.
    fn run_load_group(
        &mut self,
        backend: &dyn Backend,
        source: &ModelSource,
        file_model: Option<&ModelIdentity>,
        instances: &[Instance],
        group_start: Option<Instant>,
    ) -> Result<bool, BenchError> {
        let backend_name = backend.name();
        let reference = self.plan.spec.models[instances[0].model].as_str();
        let load_params = &instances[0].load;
        if self.cancelled() {
            return Ok(true);
        }
        self.observer.model_loading(backend_name, load_params);
        let mut loaded = match backend.load_model(source, load_params, &self.options.cancel) {
            Ok(loaded) => loaded,
            Err(BackendError::Cancelled) => return Ok(true),
            Err(e) => {
                let base = self.placeholder_base(backend_name, reference, file_model, group_start);
                self.observer.model_load_failed(backend_name, &e.to_string(), instances.len());
                return self.fail_all(instances, &base, &e.to_string());
            }
        };
        self.loads += 1;
        let engine = loaded.engine_info();
        let effective_load = loaded.effective_load();
        let model = match file_model {
            Some(model) => model.clone(),
            None => {
                let model = loaded.model_identity().ok_or_else(|| {
                    BenchError::Internal(format!("backend {backend_name} did not describe its model"))
                })?;
                self.observer.model_identified(&model);
                model
            }
        };
        if backend.source_kind() == SourceKind::File {
            self.observer.model_loaded(loaded.load_ms(), &engine, &effective_load);
        }
        let base = RowBase {
            backend: backend_name.to_string(),
            model,
            environment: self.environment(backend_name, Some(&engine)),
            load_ms: Some(loaded.load_ms()),
            context_ms: None,
            effective: None,
            server: None,
            warnings: loaded.load_warnings(),
            group_start,
        };

        let mut start = 0;
        while start < instances.len() {
            let end = start + instances[start..].iter().take_while(|i| i.context == instances[start].context).count();
            let context_group = &instances[start..end];
            if self.run_context_group(loaded.as_mut(), &base, &engine, &effective_load, context_group)? {
                return Ok(true);
            }
            start = end;
        }
        Ok(false)
    }

    /// One context and its tests. `Ok(true)` when interrupted.
    fn run_context_group(
        &mut self,
        loaded: &mut dyn LoadedModel,
        base: &RowBase,
        engine: &EngineInfo,
        effective_load: &EffectiveLoad,
        instances: &[Instance],
    ) -> Result<bool, BenchError> {
        if self.cancelled() {
            return Ok(true);
        }
        let model_load_ms = loaded.load_ms();
        let mut session = match loaded.new_context(&instances[0].context) {
            Ok(session) => session,
            Err(BackendError::Cancelled) => return Ok(true),
            Err(e) => return self.fail_all(instances, base, &e.to_string()),
        };
        self.contexts += 1;
        let effective_context = session.effective_context();
        let mut warnings = base.warnings.clone();
        let context_warnings = session.context_warnings();
        warnings.extend(context_warnings.iter().cloned());
        self.observer.context_created(&effective_context, &context_warnings);
        let server = session.server_record();
        // A server loads the model when it first sees a context's options: that load is this context's.
        let load_ms = server.as_ref().map_or(model_load_ms, |s| s.load_client_ms);
        if server.is_some() {
            self.observer.model_loaded(load_ms, engine, effective_load);
        }
        let base = RowBase {
            load_ms: Some(load_ms),
            context_ms: session.context_ms(),
            effective: Some(EffectiveParams { load: effective_load.clone(), context: effective_context.clone() }),
            server,
            warnings,
            ..base.clone()
        };

        // Every test must fit before any is timed: a failure an hour into a sweep loses the hour.
        let mut unfit: Vec<Option<String>> = Vec::with_capacity(instances.len());
        for instance in instances {
            unfit.push(self.fit_error(session.as_mut(), self.plan.test(instance), effective_context.n_ctx)?);
        }
        for (instance, unfit) in instances.iter().zip(unfit) {
            if let Some(error) = unfit {
                let row = self.row(&base, instance, Vec::new(), Vec::new(), RowStatus::Failed, Some(error), None, None);
                self.emit(row);
                continue;
            }
            if self.cancelled() {
                return Ok(true);
            }
            let test = self.plan.test(instance);
            let config = row_config(&self.plan.spec.models[instance.model], test);
            let (planned, auto) = match self.options.repetitions {
                Repetitions::Fixed => (test.fixed_count(), false),
                Repetitions::Auto(rule) => (rule.max, true),
            };
            let at = Position {
                instance,
                total: self.plan.instances.len(),
                backend: &base.backend,
                config: &config,
                planned,
                auto,
            };
            let repeated = self.repeat(session.as_mut(), test, &at, &base)?;
            let first_timed_ms = repeated.first_timed_ms;
            let repeated = repeated.outcome;
            let status = match (repeated.samples.is_empty(), repeated.error.is_some()) {
                (true, _) => RowStatus::Failed,
                (false, true) => RowStatus::Incomplete,
                (false, false) => RowStatus::Ok,
            };
            let generated_text = match test {
                TestCase::Text(_) => repeated.samples.first().and_then(|s| session.generated_text(s)),
                TestCase::Tokens { .. } => None,
            };
            let interrupted = repeated.stopped_because == StopRule::Interrupted;
            if interrupted && repeated.samples.is_empty() {
                // Stopped before anything of this test was measured: there is nothing to keep.
                return Ok(true);
            }
            let rule = self.repetition_record(test, repeated.stopped_because, &repeated.samples);
            let mut row = self.row(
                &base,
                instance,
                repeated.samples,
                repeated.telemetry,
                status,
                repeated.error,
                Some(rule),
                generated_text,
            );
            row.startup_to_first_timed_iteration_ms = first_timed_ms;
            self.emit(row);
            if interrupted {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Why `test` cannot run on this context, if it cannot.
    fn fit_error(&self, session: &mut dyn Session, test: &TestCase, n_ctx: u32) -> Result<Option<String>, BenchError> {
        match test {
            TestCase::Text(config) => {
                let prompt_tokens = match session.count_prompt_tokens(&config.prompt) {
                    Ok(count) => count,
                    Err(e) => return Ok(Some(e.to_string())),
                };
                let needed = prompt_tokens.unwrap_or(0) + u64::from(config.max_tokens);
                Ok((needed > u64::from(n_ctx)).then(|| {
                    BackendError::ContextTooSmall {
                        prompt_tokens: prompt_tokens.unwrap_or(0),
                        max_tokens: config.max_tokens,
                        ctx_size: n_ctx,
                    }
                    .to_string()
                }))
            }
            TestCase::Tokens { test, .. } => Ok((test.context_needed() > u64::from(n_ctx)).then(|| {
                BackendError::TestTooLarge { test: test.name(), needed: test.context_needed(), ctx_size: n_ctx }
                    .to_string()
            })),
        }
    }

    /// Warm-up, then timed repetitions until the rule says stop.
    fn repeat(
        &mut self,
        session: &mut dyn Session,
        test: &TestCase,
        at: &Position<'_>,
        base: &RowBase,
    ) -> Result<RepeatOutcome, BenchError> {
        let options = self.options;
        let group_start = base.group_start;
        let seed = u64::from(options.generation.seed);
        let run_once = |session: &mut dyn Session, repetition: u32, warmup: bool| -> Result<RawSample, BackendError> {
            match test {
                TestCase::Text(config) => session.generate(
                    &GenerationRequest {
                        prompt: config.prompt.clone(),
                        max_tokens: config.max_tokens,
                        seed: options.generation.seed,
                        stop_at_eos: options.generation.stop_at_eos,
                    },
                    &options.cancel,
                ),
                TestCase::Tokens { test, .. } => {
                    // llama-bench's warm-up: a full prompt and a single generated token.
                    let test = if warmup { TokenTest { n_gen: test.n_gen.min(1), ..*test } } else { *test };
                    let request = TokenRequest {
                        test,
                        seed: (seed << 32) ^ u64::from(repetition) ^ if warmup { 1 << 31 } else { 0 },
                        depth_seed: (seed << 32) ^ 0xDE_97,
                    };
                    session.run_tokens(&request, &options.cancel)
                }
            }
        };
        self.observer.test_started(at, options.warmup_iterations);
        self.busy_machine = busy_machine_warning(at.instance.context.n_threads);
        let mut telemetry: Vec<IterationTelemetry> = Vec::new();
        let stopped = |samples: Vec<RawSample>,
                       telemetry: Vec<IterationTelemetry>,
                       rule: StopRule,
                       error: Option<String>,
                       first_timed_ms| {
            Ok(RepeatOutcome { outcome: Repeated { samples, telemetry, stopped_because: rule, error }, first_timed_ms })
        };
        for i in 1..=options.warmup_iterations {
            self.observer.iteration_started(at, i, true);
            match run_once(session, 0, true) {
                Ok(_) => self.observer.warmup_finished(at, i),
                Err(BackendError::Cancelled) => {
                    return stopped(Vec::new(), Vec::new(), StopRule::Interrupted, Some("interrupted".into()), None)
                }
                // Something the engine cannot do at all is said as it is, not as a warm-up failure.
                Err(e @ BackendError::Unsupported(_)) => {
                    return stopped(Vec::new(), Vec::new(), StopRule::Error, Some(e.to_string()), None)
                }
                Err(e) => return stopped(Vec::new(), Vec::new(), StopRule::Error, Some(format!("warm-up: {e}")), None),
            }
        }

        let mut samples = Vec::new();
        let mut rates = Vec::new();
        let mut first_timed: Option<Instant> = None;
        let first_timed_ms =
            |first: Option<Instant>| group_start.zip(first).map(|(s, f)| f.duration_since(s).as_secs_f64() * 1e3);
        let mut repetition = 0;
        loop {
            repetition += 1;
            self.observer.iteration_started(at, repetition, false);
            let started = *first_timed.get_or_insert_with(Instant::now);
            // Telemetry brackets the engine's whole request; its own clock starts inside it.
            self.telemetry.begin_iteration(Instant::now());
            let result = run_once(session, repetition, false);
            let iteration_telemetry = self.telemetry.end_iteration();
            match result {
                Ok(sample) => {
                    let metrics = IterationMetrics::from_sample(&sample);
                    self.observer.iteration_finished(at, repetition, &metrics);
                    rates.extend(metrics.tokens_per_second);
                    samples.push(sample);
                    telemetry.push(iteration_telemetry);
                    let record = self.repetition_record(test, StopRule::Interrupted, &samples);
                    let mut partial = self.row(
                        base,
                        at.instance,
                        samples.clone(),
                        telemetry.clone(),
                        RowStatus::Incomplete,
                        Some("interrupted".into()),
                        Some(record),
                        None,
                    );
                    partial.startup_to_first_timed_iteration_ms = first_timed_ms(first_timed);
                    self.observer.row_progress(&partial);
                }
                Err(BackendError::Cancelled) => {
                    let first = first_timed_ms(first_timed);
                    return stopped(samples, telemetry, StopRule::Interrupted, Some("interrupted".into()), first);
                }
                Err(e) => {
                    let error = format!("repetition {repetition}: {e}");
                    return stopped(samples, telemetry, StopRule::Error, Some(error), first_timed_ms(first_timed));
                }
            }
            let rule = match options.repetitions {
                Repetitions::Fixed if repetition >= test.fixed_count() => Some(StopRule::Count),
                Repetitions::Fixed => None,
                Repetitions::Auto(auto) => {
                    let half_width = ci_half_width_percent(&rates);
                    if repetition >= auto.min.max(2) && half_width.is_some_and(|w| w <= auto.target_ci_percent) {
                        Some(StopRule::CiTarget)
                    } else if repetition >= auto.max {
                        Some(StopRule::MaxRepetitions)
                    } else if started.elapsed() >= auto.max_time {
                        Some(StopRule::TimeCap)
                    } else {
                        None
                    }
                }
            };
            if let Some(rule) = rule {
                return stopped(samples, telemetry, rule, None, first_timed_ms(first_timed));
            }
        }
    }

    fn repetition_record(&self, test: &TestCase, stopped_because: StopRule, samples: &[RawSample]) -> RepetitionRecord {
        let rates: Vec<f64> =
            samples.iter().filter_map(|s| IterationMetrics::from_sample(s).tokens_per_second).collect();
        let ci_half_width_percent = ci_half_width_percent(&rates);
        match self.options.repetitions {
            Repetitions::Fixed => RepetitionRecord {
                mode: "fixed".into(),
                requested: test.fixed_count(),
                target_ci_percent: None,
                max_time_s: None,
                min_repetitions: None,
                stopped_because,
                ci_half_width_percent,
            },
            Repetitions::Auto(auto) => RepetitionRecord {
                mode: "auto".into(),
                requested: auto.max,
                target_ci_percent: Some(auto.target_ci_percent),
                max_time_s: Some(auto.max_time.as_secs_f64()),
                min_repetitions: Some(auto.min),
                stopped_because,
                ci_half_width_percent,
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        base: &RowBase,
        instance: &Instance,
        samples: Vec<RawSample>,
        telemetry: Vec<IterationTelemetry>,
        status: RowStatus,
        error: Option<String>,
        repetitions: Option<RepetitionRecord>,
        generated_text: Option<String>,
    ) -> BenchmarkResult {
        let test = self.plan.test(instance);
        let config = row_config(&self.plan.spec.models[instance.model], test);
        let expected_tokens = match test {
            TestCase::Text(config) => config.max_tokens,
            TestCase::Tokens { test, .. } => test.n_gen,
        };
        let iterations_completed = samples.len() as u32;
        // Energy per token counts the tokens the test is about: generated ones, and the prompt's for pp/pg.
        let counted_tokens: Vec<u64> = samples
            .iter()
            .map(|s| match test {
                TestCase::Tokens { test, .. } if test.n_prompt > 0 => s.prompt_tokens + s.token_times_ns.len() as u64,
                _ => s.token_times_ns.len() as u64 + s.server.as_ref().and_then(|v| v.eval_count).unwrap_or(0),
            })
            .collect();
        let telemetry = (!telemetry.is_empty()).then(|| RowTelemetry::from_iterations(&telemetry, &counted_tokens));
        let agg = Aggregates::from_samples(samples, expected_tokens);
        let shape = match test {
            TestCase::Text(config) => TestShape {
                kind: TestKind::Text,
                n_prompt: agg.prompt_eval_count,
                n_gen: config.max_tokens,
                n_depth: 0,
            },
            TestCase::Tokens { test, .. } => TestShape::of_tokens(test),
        };
        let stopped_because = match status {
            RowStatus::Failed if error.as_deref() == Some("interrupted") => StopRule::Interrupted,
            RowStatus::Failed => StopRule::Error,
            _ => StopRule::Count,
        };
        let repetitions = repetitions.unwrap_or_else(|| self.repetition_record(test, stopped_because, &[]));
        let mut warnings = base.warnings.clone();
        warnings.extend(self.busy_machine.clone().filter(|_| iterations_completed > 0));
        warnings.extend(agg.warnings);
        BenchmarkResult {
            config,
            tokens_per_second: agg.tokens_per_second.into(),
            time_to_first_token_ms: agg.time_to_first_token_ms.into(),
            total_time_ms: agg.total_time_ms.into(),
            total_tokens: agg.total_tokens,
            prompt_eval_count: agg.prompt_eval_count,
            eval_count: agg.eval_count,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            schema_version: SCHEMA_VERSION,
            backend: base.backend.clone(),
            status,
            error,
            complete: status == RowStatus::Ok,
            iterations_completed,
            test: shape,
            avg_ns: agg.avg_ns,
            stddev_ns: agg.stddev_ns,
            avg_ts: agg.avg_ts,
            stddev_ts: agg.stddev_ts,
            samples_ns: agg.samples_ns,
            samples_ts: agg.samples_ts,
            repetitions,
            prompt_tokens_per_second: agg.prompt_tokens_per_second,
            load_time_ms: base.load_ms,
            context_time_ms: base.context_ms,
            startup_to_first_timed_iteration_ms: None,
            statistics: agg.statistics,
            harness_overhead: agg.harness_overhead,
            http_overhead: agg.http_overhead,
            server: base.server.clone(),
            warnings,
            generated_text,
            samples: agg.records,
            decode_efficiency: self.decode_efficiency(base, test, agg.tokens_per_second),
            model: base.model.clone(),
            parameters: RunParameters {
                requested: RequestedParams { load: instance.load.clone(), context: instance.context.clone() },
                effective: base.effective.clone(),
                generation: self.options.generation.clone(),
                warmup_iterations: self.options.warmup_iterations,
            },
            environment: base.environment.clone(),
            hardware: self.hardware.clone(),
            telemetry,
        }
    }

    /// The decode rate against the memory-bandwidth roofline: text and generation-only tests, where every
    /// token reads the weights once; `None` without a bandwidth for where the weights are (docs/metrics.md).
    fn decode_efficiency(&self, base: &RowBase, test: &TestCase, rate: Option<f64>) -> Option<DecodeEfficiency> {
        let decode_only = match test {
            TestCase::Text(_) => true,
            TestCase::Tokens { test, .. } => test.n_prompt == 0,
        };
        let load = &base.effective.as_ref()?.load;
        let bytes_per_token = base.model.weight_bytes_per_token?;
        let hardware = self.hardware.as_ref()?;
        if !decode_only {
            return None;
        }
        DecodeEfficiency::for_run(bytes_per_token, rate?, hardware, load.n_gpu_layers?, load.n_layers_total?)
    }
}

struct RepeatOutcome {
    outcome: Repeated,
    first_timed_ms: Option<f64>,
}

/// The 95 % CI half-width of the mean of `rates`, in per cent of the mean; absent below two values.
pub fn ci_half_width_percent(rates: &[f64]) -> Option<f64> {
    let summary = Summary::of(rates)?;
    let high = summary.ci95_high?;
    (summary.mean != 0.0).then(|| (high - summary.mean) / summary.mean.abs() * 100.0)
}

/// The guide's config for a row: text tests carry theirs; token tests are named like llama-bench's.
fn row_config(model: &str, test: &TestCase) -> BenchmarkConfig {
    match test {
        TestCase::Text(config) => BenchmarkConfig { model: model.to_string(), ..config.clone() },
        TestCase::Tokens { test, repetitions } => BenchmarkConfig {
            name: test.name(),
            model: model.to_string(),
            prompt: String::new(),
            max_tokens: test.n_gen,
            iterations: *repetitions,
        },
    }
}

/// Runs benchmarks on one backend: the guide's API.
pub struct BenchmarkRunner {
    backend: String,
    options: RunOptions,
    load: LoadParams,
    context: velollm_core::ContextParams,
}

/// What a suite produced: every row that finished, and the error that stopped it, if any.
#[derive(Debug)]
pub struct SuiteOutcome {
    pub results: Vec<BenchmarkResult>,
    pub error: Option<BenchError>,
}

impl BenchmarkRunner {
    /// A runner for the backend named `backend` with default options: llama-bench's parameters with the
    /// physical core count as threads. An unknown name is reported when the runner runs, with the list of
    /// backends compiled in.
    pub fn new(backend: &str) -> BenchmarkRunner {
        BenchmarkRunner {
            backend: backend.to_string(),
            options: RunOptions::default(),
            load: LoadParams::default(),
            context: velollm_core::ContextParams::with_threads(velollm_hw::default_threads()),
        }
    }

    pub fn with_options(mut self, options: RunOptions) -> BenchmarkRunner {
        self.options = options;
        self
    }

    /// The load and context parameters every benchmark of this runner uses.
    pub fn with_params(mut self, load: LoadParams, context: velollm_core::ContextParams) -> BenchmarkRunner {
        self.load = load;
        self.context = context;
        self
    }

    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Loads `config.model` and runs one benchmark.
    pub async fn run(&self, config: &BenchmarkConfig) -> Result<BenchmarkResult, BenchError> {
        let (mut outcome, _) = self.run_suite(&config.model, vec![config.clone()], NoObserver).await;
        match (outcome.error, outcome.results.pop()) {
            (Some(error), _) => Err(error),
            (None, Some(row)) if row.status == RowStatus::Failed => {
                Err(BenchError::Backend(BackendError::Generation(row.error.unwrap_or_default())))
            }
            (None, Some(row)) => Ok(row),
            (None, None) => Err(BenchError::Internal("no result".into())),
        }
    }

    /// Loads `model` once and runs `configs` in order on it. The observer is handed back at the end.
    pub async fn run_suite<O: Observer + 'static>(
        &self,
        model: &str,
        configs: Vec<BenchmarkConfig>,
        mut observer: O,
    ) -> (SuiteOutcome, O) {
        let options = self.options.clone();
        let spec = crate::plan::SweepSpec {
            models: vec![model.to_string()],
            backends: vec![self.backend.clone()],
            n_gpu_layers: vec![self.load.n_gpu_layers],
            split_mode: vec![self.load.split_mode],
            main_gpu: vec![self.load.main_gpu],
            use_mmap: vec![self.load.use_mmap],
            devices: vec![self.load.devices.clone()],
            tensor_split: vec![self.load.tensor_split.clone()],
            n_ctx: vec![self.context.n_ctx],
            n_batch: vec![self.context.n_batch],
            n_ubatch: vec![self.context.n_ubatch],
            n_threads: vec![self.context.n_threads],
            flash_attn: vec![self.context.flash_attn],
            type_k: vec![self.context.type_k],
            type_v: vec![self.context.type_v],
            tests: configs.into_iter().map(TestCase::Text).collect(),
        };
        // In-process engines block and are timing-sensitive: they run on a blocking thread.
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = validate_tests(&spec.tests).and_then(|()| Plan::new(spec)).and_then(|plan| {
                let prepared = prepare(&plan, &options, Some(&mut observer))?;
                run_plan(&plan, &prepared, &options, &mut observer)
            });
            let outcome = match outcome {
                Ok(run) => {
                    SuiteOutcome { error: run.interrupted.then_some(BenchError::Interrupted), results: run.rows }
                }
                Err(error) => SuiteOutcome { results: Vec::new(), error: Some(error) },
            };
            (outcome, observer)
        })
        .await;
        // The blocking task owns the observer; if it panicked there is nothing to hand back.
        match joined {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Checks what can be checked of the tests without a model.
pub fn validate_tests(tests: &[TestCase]) -> Result<(), BenchError> {
    if tests.is_empty() {
        return Err(BenchError::InvalidConfig("no benchmarks to run".into()));
    }
    for test in tests {
        match test {
            TestCase::Text(config) => {
                if config.iterations == 0 {
                    return Err(BenchError::InvalidConfig(format!("{}: iterations must be at least 1", config.name)));
                }
                if config.max_tokens == 0 {
                    return Err(BenchError::InvalidConfig(format!("{}: max_tokens must be at least 1", config.name)));
                }
                if config.prompt.is_empty() {
                    return Err(BenchError::InvalidConfig(format!("{}: the prompt is empty", config.name)));
                }
            }
            TestCase::Tokens { test, repetitions } => {
                if *repetitions == 0 {
                    return Err(BenchError::InvalidConfig(format!("{}: repetitions must be at least 1", test.name())));
                }
                if test.timed_tokens() == 0 {
                    return Err(BenchError::InvalidConfig("a test must process at least one token".into()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(iterations: u32, max_tokens: u32) -> BenchmarkConfig {
        BenchmarkConfig { name: "t".into(), model: "m".into(), prompt: "p".into(), max_tokens, iterations }
    }

    #[test]
    fn rejects_zero_iterations_and_tokens() {
        let text = |c| vec![TestCase::Text(c)];
        assert!(validate_tests(&text(config(0, 5))).unwrap_err().to_string().contains("iterations must be at least 1"));
        assert!(validate_tests(&text(config(1, 0))).unwrap_err().to_string().contains("max_tokens must be at least 1"));
        assert!(validate_tests(&text(config(1, 1))).is_ok());
        let none = vec![TestCase::Tokens { test: TokenTest { n_prompt: 0, n_gen: 0, n_depth: 0 }, repetitions: 1 }];
        assert!(validate_tests(&none).unwrap_err().to_string().contains("at least one token"));
    }

    #[test]
    fn auto_resolves_to_the_preferred_compiled_backend() {
        let available = available_backends();
        if cfg!(feature = "llamacpp") {
            assert_eq!(resolve_backend("auto").unwrap(), "llamacpp");
        } else if cfg!(feature = "candle") {
            assert_eq!(resolve_backend("auto").unwrap(), "candle");
        } else {
            let err = resolve_backend("auto").unwrap_err().to_string();
            assert!(err.contains("-b auto picks an in-process engine"), "{err}");
        }
        for name in available {
            assert_eq!(resolve_backend(name).unwrap(), name);
        }
    }

    #[test]
    fn ci_half_width_is_relative_to_the_mean() {
        assert_eq!(ci_half_width_percent(&[10.0]), None);
        // mean 10, sample sd 1 over 4 values: half width = t(3) · 1 / 2 = 1.591 → 15.91 %.
        let w = ci_half_width_percent(&[9.0, 11.0, 9.0, 11.0]).unwrap();
        let sd = (4.0f64 / 3.0).sqrt();
        assert!((w - 3.182 * sd / 2.0 / 10.0 * 100.0).abs() < 1e-9, "{w}");
    }

    #[tokio::test]
    async fn unknown_backend_is_a_clear_error() {
        let err = BenchmarkRunner::new("nope").run(&config(1, 1)).await.unwrap_err().to_string();
        assert!(err.starts_with("unknown backend 'nope'"), "{err}");
        assert!(err.contains("available in this build"), "{err}");
    }
}
