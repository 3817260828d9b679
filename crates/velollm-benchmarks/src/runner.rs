//! The runner: model load, warm-up, timed iterations, cancellation, and result rows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use velollm_core::{
    Aggregates, Backend, BackendError, BenchmarkConfig, BenchmarkResult, EngineInfo, EngineParams, Environment,
    GenerationParams, GenerationRequest, IterationMetrics, ModelIdentity, RunParameters, ServerRecord, Session,
    SCHEMA_VERSION,
};

use crate::model::{identify_model, resolve_model_source};
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
    let unknown = || BenchError::UnknownBackend {
        name: name.to_string(),
        available: if available.is_empty() { "none".to_string() } else { format!("auto, {}", available.join(", ")) },
    };
    if name == AUTO_BACKEND {
        return available.iter().copied().find(|&b| b == "llamacpp" || b == "candle").ok_or_else(unknown);
    }
    available.iter().copied().find(|&b| b == name).ok_or_else(unknown)
}

fn make_backend(name: &str, options: &RunOptions) -> Result<Box<dyn Backend>, BenchError> {
    match resolve_backend(name)? {
        #[cfg(feature = "llamacpp")]
        "llamacpp" => Ok(Box::new(velollm_llamacpp::LlamaCppBackend::new(options.engine_logs))),
        #[cfg(feature = "candle")]
        "candle" => Ok(Box::new(velollm_candle::CandleBackend::new())),
        #[cfg(feature = "ollama")]
        "ollama" => {
            let server = &options.server;
            let url = velollm_ollama::base_url(server.url.as_deref())
                .map_err(|e| BenchError::Backend(BackendError::Server(e.to_string())))?;
            let explicit = options.explicit;
            let engine = &options.engine;
            Ok(Box::new(velollm_ollama::OllamaBackend::new(velollm_ollama::OllamaSettings {
                url,
                timeouts: velollm_ollama::client::Timeouts {
                    connect: server.connect_timeout,
                    idle: server.idle_timeout,
                    load: server.load_timeout,
                },
                num_gpu: explicit.n_gpu_layers.then_some(engine.n_gpu_layers),
                num_thread: explicit.threads.then_some(engine.threads),
                num_batch: explicit.batch_size.then_some(engine.batch_size),
            })))
        }
        other => {
            let _ = options;
            Err(BenchError::Internal(format!("backend '{other}' is listed but not constructible")))
        }
    }
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
}

impl Default for ServerConnection {
    fn default() -> Self {
        ServerConnection {
            url: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            load_timeout: Duration::from_secs(600),
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
    pub engine: EngineParams,
    pub generation: GenerationParams,
    /// Untimed iterations before each benchmark's timed ones.
    pub warmup_iterations: u32,
    /// Show the engine's own log output (through `tracing`).
    pub engine_logs: bool,
    /// Set it (e.g. on Ctrl-C) to stop after the current token; completed benchmarks are kept.
    pub cancel: Arc<AtomicBool>,
    /// When the process started, to report the time to the first timed iteration.
    pub process_start: Option<Instant>,
    /// Server backends: where the server is and how long to wait for it.
    pub server: ServerConnection,
    /// Which of `engine`'s parameters the user chose (server backends forward only those).
    pub explicit: ExplicitEngineParams,
    /// Draw a progress bar while a model is downloaded.
    pub download_progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            engine: EngineParams::with_threads(velollm_hw::default_threads()),
            generation: GenerationParams::default(),
            warmup_iterations: 1,
            engine_logs: false,
            cancel: Arc::new(AtomicBool::new(false)),
            process_start: None,
            server: ServerConnection::default(),
            explicit: ExplicitEngineParams::default(),
            download_progress: false,
        }
    }
}

/// Hears about each step of a run. Called between timed regions, never inside one.
#[allow(unused_variables)]
pub trait Observer: Send {
    /// A server backend is about to be checked (before anything else happens).
    fn server_checking(&mut self, backend: &str) {}
    /// The server answered, with its version when it says one.
    fn server_available(&mut self, backend: &str, version: Option<&str>) {}
    /// The server did not answer (the run's error says why).
    fn server_unavailable(&mut self, backend: &str) {}
    fn model_identified(&mut self, model: &ModelIdentity) {}
    fn model_loaded(&mut self, load_ms: f64, engine: &EngineInfo) {}
    fn benchmark_started(&mut self, config: &BenchmarkConfig, warmup_iterations: u32) {}
    fn iteration_started(&mut self, config: &BenchmarkConfig, iteration: u32, warmup: bool) {}
    fn iteration_finished(&mut self, config: &BenchmarkConfig, iteration: u32, metrics: &IterationMetrics) {}
    fn warmup_finished(&mut self, config: &BenchmarkConfig, iteration: u32) {}
    /// A finished benchmark (also an interrupted one with at least one timed iteration, `complete: false`).
    fn benchmark_finished(&mut self, result: &BenchmarkResult) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// What a suite produced: every benchmark that finished, and the error that stopped it, if any.
#[derive(Debug)]
pub struct SuiteOutcome {
    pub results: Vec<BenchmarkResult>,
    pub error: Option<BenchError>,
}

/// Runs benchmarks on one backend.
pub struct BenchmarkRunner {
    backend: String,
    options: RunOptions,
}

impl BenchmarkRunner {
    /// A runner for the backend named `backend` with default options. An unknown name is reported when
    /// the runner runs, with the list of backends compiled in.
    pub fn new(backend: &str) -> BenchmarkRunner {
        BenchmarkRunner { backend: backend.to_string(), options: RunOptions::default() }
    }

    pub fn with_options(mut self, options: RunOptions) -> BenchmarkRunner {
        self.options = options;
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
        match outcome.error {
            Some(error) => Err(error),
            None => outcome.results.pop().ok_or_else(|| BenchError::Internal("no result".into())),
        }
    }

    /// Loads `model` once and runs `configs` in order on it. The observer is handed back at the end.
    pub async fn run_suite<O: Observer + 'static>(
        &self,
        model: &str,
        configs: Vec<BenchmarkConfig>,
        mut observer: O,
    ) -> (SuiteOutcome, O) {
        let backend = self.backend.clone();
        let options = self.options.clone();
        let model = model.to_string();
        // In-process engines block and are timing-sensitive: they run on a blocking thread.
        let joined = tokio::task::spawn_blocking(move || {
            let mut results = Vec::new();
            let error = run_suite_blocking(&backend, &options, &model, &configs, &mut observer, &mut results).err();
            (SuiteOutcome { results, error }, observer)
        })
        .await;
        // The blocking task owns the observer; if it panicked there is nothing to hand back.
        match joined {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Checks what can be checked without a model.
fn validate(configs: &[BenchmarkConfig]) -> Result<(), BenchError> {
    if configs.is_empty() {
        return Err(BenchError::InvalidConfig("no benchmarks to run".into()));
    }
    for config in configs {
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
    Ok(())
}

fn run_suite_blocking(
    backend_name: &str,
    options: &RunOptions,
    model_ref: &str,
    configs: &[BenchmarkConfig],
    observer: &mut dyn Observer,
    results: &mut Vec<BenchmarkResult>,
) -> Result<(), BenchError> {
    validate(configs)?;
    let backend = make_backend(backend_name, options)?;
    // In-process engines get a local file, identified before loading; a server gets the name it knows and
    // describes the model itself once it has loaded it.
    let (load_target, file_model) = if backend.needs_local_file() {
        let resolved = resolve_model_source(model_ref, options.download_progress)?;
        let mut model = identify_model(model_ref, &resolved.path)?;
        model.digest = resolved.digest;
        observer.model_identified(&model);
        (resolved.path, Some(model))
    } else {
        observer.server_checking(backend.name());
        let version = backend.check_available().inspect_err(|_| observer.server_unavailable(backend.name()))?;
        observer.server_available(backend.name(), version.as_deref());
        (PathBuf::from(model_ref), None)
    };

    let mut session = backend.load(&load_target, &options.engine)?;
    let model = match file_model {
        Some(model) => model,
        None => {
            let model = session.model_identity().ok_or_else(|| {
                BenchError::Internal(format!("backend {} did not describe its model", backend.name()))
            })?;
            observer.model_identified(&model);
            model
        }
    };
    let server = session.server_record();
    let load_ms = session.load_ms();
    let engine = session.engine_info();
    observer.model_loaded(load_ms, &engine);

    // Every prompt must fit before anything is timed: a failure an hour into a suite loses the hour.
    for config in configs {
        let prompt_tokens = session.count_prompt_tokens(&config.prompt)?;
        let ctx_size = session.context_size();
        if prompt_tokens + u64::from(config.max_tokens) > u64::from(ctx_size) {
            return Err(BackendError::ContextTooSmall { prompt_tokens, max_tokens: config.max_tokens, ctx_size }.into());
        }
    }

    let environment = velollm_hw::environment(backend.name(), engine.version.clone(), engine.build.clone());
    let mut run =
        RunState { session: session.as_mut(), options, environment, model, server, load_ms, first_timed: None };
    for config in configs {
        if options.cancel.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        let (result, interrupted) = run.benchmark(backend.name(), config, observer)?;
        if let Some(result) = result {
            observer.benchmark_finished(&result);
            results.push(result);
        }
        if interrupted {
            return Err(BenchError::Interrupted);
        }
    }
    Ok(())
}

struct RunState<'s> {
    session: &'s mut dyn Session,
    options: &'s RunOptions,
    environment: Environment,
    model: ModelIdentity,
    server: Option<ServerRecord>,
    load_ms: f64,
    first_timed: Option<Instant>,
}

impl RunState<'_> {
    /// Runs one benchmark. Returns its result (absent if interrupted before any timed iteration finished)
    /// and whether it was interrupted.
    fn benchmark(
        &mut self,
        backend: &str,
        config: &BenchmarkConfig,
        observer: &mut dyn Observer,
    ) -> Result<(Option<BenchmarkResult>, bool), BenchError> {
        let options = self.options;
        let request = GenerationRequest {
            prompt: config.prompt.clone(),
            max_tokens: config.max_tokens,
            seed: options.generation.seed,
            stop_at_eos: options.generation.stop_at_eos,
        };
        observer.benchmark_started(config, options.warmup_iterations);
        for i in 1..=options.warmup_iterations {
            observer.iteration_started(config, i, true);
            match self.session.generate(&request, &options.cancel) {
                Ok(_) => observer.warmup_finished(config, i),
                Err(BackendError::Cancelled) => return Ok((None, true)),
                Err(e) => return Err(e.into()),
            }
        }

        let mut samples = Vec::with_capacity(config.iterations as usize);
        let mut interrupted = false;
        for i in 1..=config.iterations {
            observer.iteration_started(config, i, false);
            self.first_timed.get_or_insert_with(Instant::now);
            match self.session.generate(&request, &options.cancel) {
                Ok(sample) => {
                    if let Some(metrics) = IterationMetrics::from_sample(&sample) {
                        observer.iteration_finished(config, i, &metrics);
                    }
                    samples.push(sample);
                }
                Err(BackendError::Cancelled) => {
                    interrupted = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if samples.is_empty() {
            return Ok((None, interrupted));
        }

        // Decoding the output happens after timing and is informational only.
        let generated_text = self.session.generated_text(&samples[0]);
        let iterations_completed = samples.len() as u32;
        let agg = Aggregates::from_samples(samples, config.max_tokens);
        let startup_ms = match (options.process_start, self.first_timed) {
            (Some(start), Some(first)) => Some(first.duration_since(start).as_secs_f64() * 1e3),
            _ => None,
        };
        let result = BenchmarkResult {
            config: config.clone(),
            tokens_per_second: agg.tokens_per_second.into(),
            time_to_first_token_ms: agg.time_to_first_token_ms.into(),
            total_time_ms: agg.total_time_ms,
            total_tokens: agg.total_tokens,
            prompt_eval_count: agg.prompt_eval_count,
            eval_count: agg.eval_count,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            schema_version: SCHEMA_VERSION,
            backend: backend.to_string(),
            complete: !interrupted,
            iterations_completed,
            prompt_tokens_per_second: agg.prompt_tokens_per_second,
            load_time_ms: self.load_ms,
            startup_to_first_timed_iteration_ms: startup_ms,
            statistics: agg.statistics,
            harness_overhead: agg.harness_overhead,
            http_overhead: agg.http_overhead,
            server: self.server.clone(),
            warnings: agg.warnings,
            generated_text,
            samples: agg.records,
            model: self.model.clone(),
            parameters: RunParameters {
                // A server decides its own engine parameters; what it was sent is in `server.options`.
                engine: self.server.is_none().then(|| options.engine.clone()),
                generation: options.generation.clone(),
                warmup_iterations: options.warmup_iterations,
            },
            environment: self.environment.clone(),
        };
        Ok((Some(result), interrupted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(iterations: u32, max_tokens: u32) -> BenchmarkConfig {
        BenchmarkConfig { name: "t".into(), model: "m".into(), prompt: "p".into(), max_tokens, iterations }
    }

    #[test]
    fn rejects_zero_iterations_and_tokens() {
        assert!(validate(&[config(0, 5)]).unwrap_err().to_string().contains("iterations must be at least 1"));
        assert!(validate(&[config(1, 0)]).unwrap_err().to_string().contains("max_tokens must be at least 1"));
        assert!(validate(&[config(1, 1)]).is_ok());
    }

    #[test]
    fn auto_resolves_to_the_preferred_compiled_backend() {
        let available = available_backends();
        match available.first() {
            Some(&first) => assert_eq!(resolve_backend("auto").unwrap(), first),
            None => assert!(resolve_backend("auto").is_err()),
        }
        if cfg!(feature = "llamacpp") {
            assert_eq!(resolve_backend("auto").unwrap(), "llamacpp");
        }
        for name in available {
            assert_eq!(resolve_backend(name).unwrap(), name);
        }
    }

    #[tokio::test]
    async fn unknown_backend_is_a_clear_error() {
        let err = BenchmarkRunner::new("nope").run(&config(1, 1)).await.unwrap_err().to_string();
        assert!(err.starts_with("unknown backend 'nope'"), "{err}");
        assert!(err.contains("available in this build"), "{err}");
    }
}
