//! The benchmarking guide's API: [`BenchmarkRunner`] runs configs on one backend, through the same plan and
//! runner as a sweep.

use velollm_core::{BackendError, BenchmarkConfig, BenchmarkResult, LoadParams, RowStatus};

use super::{prepare, run_plan, NoObserver, Observer, RunOptions};
use crate::plan::{Plan, TestCase};
use crate::BenchError;

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
    use velollm_core::TokenTest;

    fn config(iterations: u32, max_tokens: u32) -> BenchmarkConfig {
        BenchmarkConfig { name: "t".into(), model: "m".into(), prompt: "p".into(), max_tokens, iterations }
    }

    #[test]
    fn rejects_zero_iterations_and_tokens() {
        let text = |c| vec![TestCase::Text(c)];
        assert!(validate_tests(&text(config(0, 5))).unwrap_err().to_string().contains("iterations must be at least 1"));
        assert!(validate_tests(&text(config(1, 0))).unwrap_err().to_string().contains("max_tokens must be at least 1"));
        assert!(validate_tests(&text(config(1, 1))).is_ok());
        let none = vec![TestCase::Tokens { test: TokenTest::single(0, 0, 0), repetitions: 1 }];
        assert!(validate_tests(&none).unwrap_err().to_string().contains("at least one token"));
    }

    #[tokio::test]
    async fn unknown_backend_is_a_clear_error() {
        let err = BenchmarkRunner::new("nope").run(&config(1, 1)).await.unwrap_err().to_string();
        assert!(err.starts_with("unknown backend 'nope'"), "{err}");
        assert!(err.contains("available in this build"), "{err}");
    }
}
