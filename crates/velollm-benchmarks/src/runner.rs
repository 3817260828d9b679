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
    Backend, BackendError, BenchmarkConfig, BenchmarkResult, Decision, EffectiveContext, EffectiveLoad,
    EffectiveParams, EngineInfo, Environment, GenerationParams, GenerationRequest, GpuLayers, HardwareInfo,
    Interleaved, IterationMetrics, LoadParams, LoadedModel, ModelIdentity, ModelSource, PolicyState, RawSample,
    RowStatus, Session, SourceKind, StopRule, TokenRequest, TokenTest,
};
use velollm_hw::telemetry::Telemetry;

use crate::model::{identify_model, resolve_model_source};
use crate::plan::{Instance, Plan, Repetitions, TestCase};
use crate::row::{RowBase, RowInProgress, RowMaker};
use crate::BenchError;

mod interleave;

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
    /// `--interleave`: run the combinations' repetitions round-robin, one repetition of each per round.
    pub interleave: bool,
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
            interleave: false,
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
    /// A row's timed repetitions begin. The handle holds every repetition as it finishes, and builds the row
    /// as it would be saved if the run stopped now ([`RowInProgress::snapshot`]): a caller that keeps it can
    /// save every finished repetition even if the process must end before the runner returns. Said once per
    /// row; under `--interleave` several rows are in progress at once.
    fn row_in_progress(&mut self, row: &RowInProgress) {}
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
#[derive(Debug, Clone, Default)]
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
    let mut server_backends = Vec::new();
    for (index, name) in plan.spec.backends.iter().enumerate() {
        let backend = make_backend(name, options, first_threads(plan))?;
        match backend.source_kind() {
            SourceKind::File => needs_file = true,
            SourceKind::Server => {
                backend.check_available()?;
                server_backends.push(index);
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
    if options.interleave {
        let bytes = |model: usize| files.get(&plan.spec.models[model]).map(|(_, identity)| identity.bytes);
        interleave::check_interleave(plan, &server_backends, bytes)?;
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
    run_plan_with(plan, prepared, options, observer, None)
}

/// [`run_plan`] with backends made by `factory` where it makes one (a scripted backend in tests).
pub fn run_plan_with(
    plan: &Plan,
    prepared: &PreparedModels,
    options: &RunOptions,
    observer: &mut dyn Observer,
    factory: Option<&BackendFactory>,
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
        factory,
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
    /// Backends handed in by the caller (tests), tried before the compiled-in ones.
    factory: Option<&'p BackendFactory>,
}

/// Makes the backend named by a plan, or `None` to use the compiled-in one of that name.
pub type BackendFactory = dyn Fn(&str) -> Option<Box<dyn Backend>> + Sync;

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

/// A (model, backend) group's backend and model source.
struct OpenGroup {
    backend: Box<dyn Backend>,
    source: ModelSource,
    file_model: Option<ModelIdentity>,
    group_start: Option<Instant>,
}

/// A loaded model and what its rows share.
struct LoadedGroup {
    model: Box<dyn LoadedModel>,
    base: RowBase,
    engine: EngineInfo,
    effective_load: EffectiveLoad,
}

enum Loading {
    Loaded(Box<LoadedGroup>),
    /// The load failed; its rows say why.
    Failed,
    Interrupted,
}

/// A row whose timed repetitions are under way.
struct Repeating {
    row: RowInProgress,
    rates: Vec<f64>,
    state: PolicyState,
    /// Timed work so far: the repetitions' own durations.
    timed: Duration,
    repetition: u32,
    first_timed: Option<Instant>,
    group_start: Option<Instant>,
}

/// After one timed repetition: go on, or stop (why, and the error if one ended it).
enum Step {
    Continue,
    Stop(StopRule, Option<String>),
}

/// One request of `test`: a timed repetition, or a warm-up (llama-bench's: the prompt and one generated token).
fn run_once(
    options: &RunOptions,
    session: &mut dyn Session,
    test: &TestCase,
    repetition: u32,
    warmup: bool,
) -> Result<RawSample, BackendError> {
    let seed = u64::from(options.generation.seed);
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
            let test = if warmup { TokenTest { n_gen: test.n_gen.min(1), ..*test } } else { *test };
            let request = TokenRequest {
                test,
                seed: (seed << 32) ^ u64::from(repetition) ^ if warmup { 1 << 31 } else { 0 },
                depth_seed: (seed << 32) ^ 0xDE_97,
            };
            session.run_tokens(&request, &options.cancel)
        }
    }
}

impl PlanRunner<'_> {
    /// Runs every instance; `Ok(true)` when interrupted.
    fn run(&mut self) -> Result<bool, BenchError> {
        if self.options.interleave {
            return self.run_interleaved();
        }
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
        let Some(open) = self.open_group(group)? else {
            return Ok(false);
        };
        let mut start = 0;
        while start < group.len() {
            let end = start + group[start..].iter().take_while(|i| i.load == group[start].load).count();
            if self.run_load_group(&open, &group[start..end])? {
                return Ok(true);
            }
            start = end;
        }
        Ok(false)
    }

    /// A (model, backend) group begins: its backend, and where its model comes from. `None` when the server
    /// does not answer (every row of the group is then a failed row).
    fn open_group(&mut self, group: &[Instance]) -> Result<Option<OpenGroup>, BenchError> {
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
        let backend = self.make_backend(backend_name)?;
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
                        self.fail_all(group, &base, &e.to_string())?;
                        return Ok(None);
                    }
                }
                (ModelSource::Server(reference.to_string()), None)
            }
        };
        self.cpu_only_notice(backend.as_ref(), group);
        Ok(Some(OpenGroup { backend, source, file_model, group_start }))
    }

    fn make_backend(&self, name: &str) -> Result<Box<dyn Backend>, BenchError> {
        if let Some(backend) = self.factory.and_then(|factory| factory(name)) {
            return Ok(backend);
        }
        make_backend(name, self.options, first_threads(self.plan))
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
    fn run_load_group(&mut self, open: &OpenGroup, instances: &[Instance]) -> Result<bool, BenchError> {
        let mut loaded = match self.load(open, instances)? {
            Loading::Loaded(loaded) => loaded,
            Loading::Failed => return Ok(false),
            Loading::Interrupted => return Ok(true),
        };
        let mut start = 0;
        while start < instances.len() {
            let end = start + instances[start..].iter().take_while(|i| i.context == instances[start].context).count();
            let context_group = &instances[start..end];
            if self.run_context_group(
                loaded.model.as_mut(),
                &loaded.base,
                &loaded.engine,
                &loaded.effective_load,
                context_group,
            )? {
                return Ok(true);
            }
            start = end;
        }
        Ok(false)
    }

    /// Loads the model of a load group (instances sharing model, backend and load parameters); a load that
    /// fails makes every instance a failed row.
    fn load(&mut self, open: &OpenGroup, instances: &[Instance]) -> Result<Loading, BenchError> {
        let backend = open.backend.as_ref();
        let backend_name = backend.name();
        let reference = self.plan.spec.models[instances[0].model].as_str();
        let load_params = &instances[0].load;
        if self.cancelled() {
            return Ok(Loading::Interrupted);
        }
        self.observer.model_loading(backend_name, load_params);
        let loaded = match backend.load_model(&open.source, load_params, &self.options.cancel) {
            Ok(loaded) => loaded,
            Err(BackendError::Cancelled) => return Ok(Loading::Interrupted),
            Err(e) => {
                let base = self.placeholder_base(backend_name, reference, open.file_model.as_ref(), open.group_start);
                self.observer.model_load_failed(backend_name, &e.to_string(), instances.len());
                self.fail_all(instances, &base, &e.to_string())?;
                return Ok(Loading::Failed);
            }
        };
        self.loads += 1;
        let engine = loaded.engine_info();
        let effective_load = loaded.effective_load();
        let model = match &open.file_model {
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
            group_start: open.group_start,
        };
        Ok(Loading::Loaded(Box::new(LoadedGroup { model: loaded, base, engine, effective_load })))
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
        let base = self.context_base(session.as_mut(), base, engine, effective_load, model_load_ms);
        let fits = self.check_fit(session.as_mut(), &base, instances)?;
        for (instance, fits) in instances.iter().zip(fits) {
            if !fits {
                continue;
            }
            if self.cancelled() {
                return Ok(true);
            }
            if self.run_instance(session.as_mut(), &base, instance)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The base of the rows of a new context: what the engine made of the context parameters.
    fn context_base(
        &mut self,
        session: &mut dyn Session,
        base: &RowBase,
        engine: &EngineInfo,
        effective_load: &EffectiveLoad,
        model_load_ms: f64,
    ) -> RowBase {
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
        RowBase {
            load_ms: Some(load_ms),
            context_ms: session.context_ms(),
            effective: Some(EffectiveParams { load: effective_load.clone(), context: effective_context }),
            server,
            warnings,
            ..base.clone()
        }
    }

    /// Every test must fit before any is timed (a failure an hour into a sweep loses the hour): a test that
    /// does not fit becomes a failed row now. Which instances fit.
    fn check_fit(
        &mut self,
        session: &mut dyn Session,
        base: &RowBase,
        instances: &[Instance],
    ) -> Result<Vec<bool>, BenchError> {
        let n_ctx = base.effective.as_ref().map_or(0, |e| e.context.n_ctx);
        let mut unfit: Vec<Option<String>> = Vec::with_capacity(instances.len());
        for instance in instances {
            unfit.push(self.fit_error(session, self.plan.test(instance), n_ctx)?);
        }
        let mut fits = Vec::with_capacity(instances.len());
        for (instance, unfit) in instances.iter().zip(unfit) {
            fits.push(unfit.is_none());
            if let Some(error) = unfit {
                let row = self.row(base, instance, Vec::new(), Vec::new(), RowStatus::Failed, Some(error), None, None);
                self.emit(row);
            }
        }
        Ok(fits)
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

    /// Where an instance stands, for the observer.
    fn position<'a>(&self, instance: &'a Instance, base: &'a RowBase, config: &'a BenchmarkConfig) -> Position<'a> {
        let test = self.plan.test(instance);
        let (planned, auto) = match self.options.repetitions {
            Repetitions::Fixed => (test.fixed_count(), false),
            Repetitions::Auto(rule) => (rule.max_repetitions, true),
        };
        Position { instance, total: self.plan.instances.len(), backend: &base.backend, config, planned, auto }
    }

    /// One test on an open session: warm-up, then timed repetitions until the rule says stop, then its row.
    /// `Ok(true)` when interrupted.
    fn run_instance(
        &mut self,
        session: &mut dyn Session,
        base: &RowBase,
        instance: &Instance,
    ) -> Result<bool, BenchError> {
        let test = self.plan.test(instance);
        let config = row_config(&self.plan.spec.models[instance.model], test);
        let at = self.position(instance, base, &config);
        self.observer.test_started(&at, self.options.warmup_iterations);
        self.busy_machine = busy_machine_warning(instance.context.n_threads);
        if let Err((rule, error)) = self.warm_up(session, test, &at) {
            if rule == StopRule::Interrupted {
                // Stopped before anything of this test was measured: there is nothing to keep.
                return Ok(true);
            }
            let row = self.row(base, instance, Vec::new(), Vec::new(), RowStatus::Failed, Some(error), None, None);
            self.emit(row);
            return Ok(false);
        }
        let mut repeating = self.start_repeating(base, instance, None);
        loop {
            if let Step::Stop(rule, error) = self.timed_step(session, test, &at, &mut repeating) {
                return Ok(self.finish(Some(session), test, repeating, rule, error));
            }
        }
    }

    /// The untimed warm-up iterations; on failure why (the rule, and the row's one-line error).
    fn warm_up(
        &mut self,
        session: &mut dyn Session,
        test: &TestCase,
        at: &Position<'_>,
    ) -> Result<(), (StopRule, String)> {
        for i in 1..=self.options.warmup_iterations {
            self.observer.iteration_started(at, i, true);
            match run_once(self.options, session, test, 0, true) {
                Ok(_) => self.observer.warmup_finished(at, i),
                Err(BackendError::Cancelled) => return Err((StopRule::Interrupted, "interrupted".into())),
                // Something the engine cannot do at all is said as it is, not as a warm-up failure.
                Err(e @ BackendError::Unsupported(_)) => return Err((StopRule::Error, e.to_string())),
                Err(e) => return Err((StopRule::Error, format!("warm-up: {e}"))),
            }
        }
        Ok(())
    }

    /// The row maker of an instance (everything its row holds besides the samples).
    fn maker(&self, base: &RowBase, instance: &Instance, interleaved: Option<Interleaved>) -> RowMaker {
        RowMaker {
            base: base.clone(),
            instance: instance.clone(),
            test: self.plan.test(instance).clone(),
            model_reference: self.plan.spec.models[instance.model].clone(),
            repetitions: self.options.repetitions,
            generation: self.options.generation.clone(),
            warmup_iterations: self.options.warmup_iterations,
            hardware: self.hardware.clone(),
            busy_machine: self.busy_machine.clone(),
            interleaved,
        }
    }

    /// A row's timed repetitions begin: its handle is made and handed to the observer.
    fn start_repeating(&mut self, base: &RowBase, instance: &Instance, interleaved: Option<Interleaved>) -> Repeating {
        let row = RowInProgress::new(self.maker(base, instance, interleaved));
        self.observer.row_in_progress(&row);
        Repeating {
            row,
            rates: Vec::new(),
            state: PolicyState::default(),
            timed: Duration::ZERO,
            repetition: 0,
            first_timed: None,
            group_start: base.group_start,
        }
    }

    /// One timed repetition, kept in the row's handle, and the rule's verdict. The work around the timed
    /// region does not grow with the repetitions done (the policy's interval over the rates aside: a sum over
    /// at most `max_repetitions` numbers).
    fn timed_step(&mut self, session: &mut dyn Session, test: &TestCase, at: &Position<'_>, r: &mut Repeating) -> Step {
        r.repetition += 1;
        self.observer.iteration_started(at, r.repetition, false);
        if r.first_timed.is_none() {
            let now = Instant::now();
            r.first_timed = Some(now);
            r.row.set_startup_ms(r.group_start.map(|s| now.duration_since(s).as_secs_f64() * 1e3));
        }
        // Telemetry brackets the engine's whole request; its own clock starts inside it.
        self.telemetry.begin_iteration(Instant::now());
        let started = Instant::now();
        let result = run_once(self.options, session, test, r.repetition, false);
        let took = started.elapsed();
        let iteration_telemetry = self.telemetry.end_iteration();
        match result {
            Ok(sample) => {
                let metrics = IterationMetrics::from_sample(&sample);
                self.observer.iteration_finished(at, r.repetition, &metrics);
                r.rates.extend(metrics.tokens_per_second);
                r.timed += took;
                let decision = match self.options.repetitions {
                    Repetitions::Fixed if r.repetition >= test.fixed_count() => Decision::Stop(StopRule::Count),
                    Repetitions::Fixed => Decision::Continue,
                    Repetitions::Auto(policy) => {
                        let (state, decision) = policy.decide(r.state, &r.rates, r.repetition, r.timed);
                        r.state = state;
                        decision
                    }
                };
                let state = matches!(self.options.repetitions, Repetitions::Auto(_)).then_some(r.state);
                r.row.push(sample, iteration_telemetry, state);
                match decision {
                    Decision::Continue => Step::Continue,
                    Decision::Stop(rule) => Step::Stop(rule, None),
                }
            }
            Err(BackendError::Cancelled) => Step::Stop(StopRule::Interrupted, Some("interrupted".into())),
            Err(e) => Step::Stop(StopRule::Error, Some(format!("repetition {}: {e}", r.repetition))),
        }
    }

    /// The row of a test whose repetitions ended: finished, incomplete (kept repetitions, with the error) or
    /// failed (none kept). Returns whether the run was interrupted.
    fn finish(
        &mut self,
        session: Option<&mut dyn Session>,
        test: &TestCase,
        repeating: Repeating,
        stopped_because: StopRule,
        error: Option<String>,
    ) -> bool {
        let interrupted = stopped_because == StopRule::Interrupted;
        let kept = repeating.row.len();
        if interrupted && kept == 0 {
            // Stopped before anything of this test was measured: there is nothing to keep.
            repeating.row.abandon();
            return true;
        }
        let status = match (kept == 0, error.is_some()) {
            (true, _) => RowStatus::Failed,
            (false, true) => RowStatus::Incomplete,
            (false, false) => RowStatus::Ok,
        };
        let generated_text = match test {
            TestCase::Text(_) => {
                session.and_then(|session| repeating.row.with_first_sample(|s| session.generated_text(s)))
            }
            TestCase::Tokens { .. } => None,
        };
        let row = repeating.row.finish(status, stopped_because, error, generated_text);
        self.emit(row);
        interrupted
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        base: &RowBase,
        instance: &Instance,
        samples: Vec<RawSample>,
        telemetry: Vec<velollm_core::IterationTelemetry>,
        status: RowStatus,
        error: Option<String>,
        repetitions: Option<velollm_core::RepetitionRecord>,
        generated_text: Option<String>,
    ) -> BenchmarkResult {
        self.maker(base, instance, None).row(samples, telemetry, status, error, repetitions, generated_text)
    }
}

/// The 95 % CI half-width of the mean of `rates`, in per cent of the mean; absent below two values.
pub use velollm_core::ci_half_width_percent;

/// The guide's config for a row: text tests carry theirs; token tests are named like llama-bench's.
pub(crate) fn row_config(model: &str, test: &TestCase) -> BenchmarkConfig {
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
