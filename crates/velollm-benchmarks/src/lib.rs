//! The benchmarking guide's public API.
//!
//! ```no_run
//! use velollm_benchmarks::{BenchmarkConfig, BenchmarkRunner};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let config = BenchmarkConfig {
//!     name: "custom_test".to_string(),
//!     model: "smollm2-135m".to_string(),
//!     prompt: "Your custom prompt here".to_string(),
//!     max_tokens: 100,
//!     iterations: 5,
//! };
//! let runner = BenchmarkRunner::new("llamacpp");
//! let result = runner.run(&config).await?;
//! println!("Tokens/s: {}", result.tokens_per_second);
//! # Ok(())
//! # }
//! ```
//!
//! A [`BenchmarkRunner`] picks a backend by name from those compiled in (cargo features), loads the model
//! once, and for each benchmark runs the warm-up and timed iterations, turning raw samples into a
//! [`BenchmarkResult`] through `velollm-core`'s formulas. An [`Observer`] hears about every step, which is
//! how the CLI draws progress and saves each result the moment it exists.

mod build_info;
mod hardware;
mod hash_cache;
pub mod plan;
mod row;
mod runner;
mod suite;

pub use build_info::{build_info, BuildInfo};
pub use hardware::{engine_devices, hardware_info};
pub use hash_cache::HashCache;
pub use plan::{sized_for_test, AutoRepetitions, Instance, Plan, Repetitions, SweepSpec, TestCase, CTX_PER_TEST};
pub use row::RowInProgress;
pub use runner::{
    available_backends, prepare, resolve_backend, run_plan, run_plan_with, validate_tests, BackendFactory,
    BenchmarkRunner, ExplicitEngineParams, NoObserver, Observer, OpenAiConnection, Position, PreparedModels,
    RunOptions, RunOutcome, ServerConnection, SuiteOutcome, AUTO_BACKEND,
};
pub use suite::standard_suite;
/// The 95 % CI half-width of the mean of `rates`, in per cent of the mean; absent below two values.
pub use velollm_core::ci_half_width_percent;
pub use velollm_core::{
    BackendError, BenchmarkConfig, BenchmarkResult, ContextParams, EngineInfo, FlashAttention, GenerationParams,
    GpuLayers, IterationMetrics, KvCacheType, LoadParams, Measured, ModelIdentity, RowStatus, SplitMode, TokenTest,
};
/// The devices llama.cpp sees (`velollm_llamacpp::devices`).
#[cfg(feature = "llamacpp")]
pub use velollm_llamacpp::devices as llamacpp_devices;
/// ggml's RPC backend: remote devices and `velollm rpc-server` (`velollm_llamacpp::rpc`).
#[cfg(feature = "llamacpp")]
pub use velollm_llamacpp::rpc as llamacpp_rpc;
/// The load generator's profiles and checks (`--concurrency`, `--request-rate`, `--slo`, …).
pub use velollm_load::spec as load;
pub use velollm_load::LoadOptions;

/// llama.cpp's version and build line, when this build has llama.cpp (for the history's software identity).
pub fn llamacpp_engine_info() -> Option<EngineInfo> {
    #[cfg(feature = "llamacpp")]
    return Some(velollm_llamacpp::engine_info());
    #[cfg(not(feature = "llamacpp"))]
    None
}

/// Why a benchmark run could not proceed. One line each, saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown backend '{name}' (available in this build: {available})")]
    UnknownBackend { name: String, available: String },
    #[error("invalid benchmark: {0}")]
    InvalidConfig(String),
    #[error("{0}")]
    Model(String),
    #[error("model '{reference}' is not downloaded (looked for {file} in {searched}); get it with: {fetch_command}")]
    ModelMissing { reference: String, file: String, searched: String, fetch_command: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("interrupted")]
    Interrupted,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<velollm_models::ModelError> for BenchError {
    fn from(error: velollm_models::ModelError) -> BenchError {
        use velollm_models::ModelError;
        match error {
            ModelError::Invalid(message) => BenchError::Model(message),
            ModelError::Missing { reference, file, searched, fetch_command } => {
                BenchError::ModelMissing { reference, file, searched, fetch_command }
            }
            ModelError::Interrupted => BenchError::Interrupted,
        }
    }
}
