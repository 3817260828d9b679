//! The runner: a [`Plan`] carried out instance by instance — model loads, contexts, warm-up, timed
//! repetitions, cancellation — with one row per instance, handed to an [`Observer`] the moment it exists.
//!
//! What can be checked without an engine (unknown backends, models that are missing or corrupt) is checked
//! by [`prepare`] before anything slow. Everything that fails later (a load that does not fit in memory, a
//! context the engine rejects, a prompt that does not fit, an error in iteration k) becomes a row marked
//! failed or incomplete with its one-line error, and the sweep goes on. Ctrl-C (the `cancel` flag) ends
//! the current repetition and the run; every finished repetition is kept in an incomplete row.
//!
//! In parts: which backends exist and how each is made (`registry`), the options of a run (`options`), what the
//! caller hears (`observer`), the guide's API on top (`guide`), the round-robin order of `--interleave`
//! (`interleave`). When to stop repeating is velollm-core's pure [`Repetitions::decide`], and rows are built by
//! velollm-core's [`RowBuilder`]; this file only carries the plan out.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use velollm_core::{
    Backend, BackendError, BenchmarkConfig, BenchmarkResult, Decision, EffectiveLoad, EffectiveParams, EngineInfo,
    Environment, GenerationRequest, GpuLayers, HardwareInfo, Interleaved, IterationMetrics, LoadedModel, ModelIdentity,
    ModelSource, PolicyState, RawSample, RequestedParams, RowBuilder, RowStatus, Session, SourceKind, StopRule,
    TokenRequest, TokenTest,
};
use velollm_hw::telemetry::Telemetry;
use velollm_models::{identify_model_with, resolve_model_source};

use crate::plan::{Instance, Plan, Repetitions, TestCase};
use crate::row::RowInProgress;
use crate::BenchError;

mod guide;
mod interleave;
mod load;
mod observer;
mod options;
mod registry;

pub use guide::{validate_tests, BenchmarkRunner, SuiteOutcome};
pub use observer::{NoObserver, Observer, Position};
pub use options::{ExplicitEngineParams, OpenAiConnection, RunOptions, ServerConnection};
pub use registry::{available_backends, resolve_backend, BackendFactory, AUTO_BACKEND};
use registry::{first_threads, make_backend};

/// What every row of one context shares, and when its (model, backend) group started (for the start-up
/// figure, which only the runner knows).
#[derive(Clone)]
pub(crate) struct RowBase {
    pub row: velollm_core::RowBase,
    pub group_start: Option<Instant>,
}

impl Deref for RowBase {
    type Target = velollm_core::RowBase;
    fn deref(&self) -> &velollm_core::RowBase {
        &self.row
    }
}

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
            SourceKind::File if options.load.is_active() => {
                return Err(BenchError::Backend(BackendError::Unsupported(format!(
                    "--concurrency, --request-rate and --sweep need a server backend (-b openai or -b ollama); {} \
                     serves one request at a time in this process",
                    backend.name()
                ))))
            }
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
            let cache = options.hash_cache.as_deref();
            let mut model = identify_model_with(reference, &resolved.path, |path| {
                crate::hash_cache::sha256_through(cache, path, &options.cancel)
            })?;
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
            row: velollm_core::RowBase {
                backend: backend.to_string(),
                model,
                environment: self.environment(backend, None),
                load_ms: None,
                context_ms: None,
                effective: None,
                server: None,
                warnings: Vec::new(),
            },
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
            row: velollm_core::RowBase {
                backend: backend_name.to_string(),
                model,
                environment: self.environment(backend_name, Some(&engine)),
                load_ms: Some(loaded.load_ms()),
                context_ms: None,
                effective: None,
                server: None,
                warnings: loaded.load_warnings(),
            },
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
        let loaded_nothing = loaded.loads_nothing();
        let mut session = match loaded.new_context(&instances[0].context) {
            Ok(session) => session,
            Err(BackendError::Cancelled) => return Ok(true),
            Err(e) => return self.fail_all(instances, base, &e.to_string()),
        };
        self.contexts += 1;
        let mut base = self.context_base(session.as_mut(), base, engine, effective_load, model_load_ms);
        if loaded_nothing {
            // An OpenAI-compatible server loaded its model before velollm came: no load time, rather than 0.
            base.row.load_ms = None;
        }
        let fits = self.check_fit(session.as_mut(), &base, instances)?;
        for (instance, fits) in instances.iter().zip(fits) {
            if !fits {
                continue;
            }
            if self.cancelled() {
                return Ok(true);
            }
            let interrupted = if self.options.load.is_active() {
                self.run_load_instance(session.as_mut(), &base, instance)?
            } else {
                self.run_instance(session.as_mut(), &base, instance)?
            };
            if interrupted {
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
            row: velollm_core::RowBase {
                load_ms: Some(load_ms),
                context_ms: session.context_ms(),
                effective: Some(EffectiveParams { load: effective_load.clone(), context: effective_context }),
                server,
                warnings,
                ..base.row.clone()
            },
            group_start: base.group_start,
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
        let repetitions = self.options.repetitions;
        let (planned, auto) = (repetitions.planned(test.fixed_count()), matches!(repetitions, Repetitions::Auto(_)));
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
        let config = test.row_config(&self.plan.spec.models[instance.model]);
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
    fn maker(&self, base: &RowBase, instance: &Instance, interleaved: Option<Interleaved>) -> RowBuilder {
        RowBuilder {
            base: base.row.clone(),
            requested: RequestedParams { load: instance.load.clone(), context: instance.context.clone() },
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
                let (state, decision) =
                    self.options.repetitions.decide(test.fixed_count(), r.state, &r.rates, r.repetition, r.timed);
                r.state = state;
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
