//! The shared vocabulary of velollm.
//!
//! Data flows one way: a [`Backend`] loads a model into a [`Session`]; the session turns a
//! [`GenerationRequest`] into a [`RawSample`] (timestamps and counts only); [`IterationMetrics`] are derived
//! from raw samples in exactly one place, so every backend is measured by the same formulas
//! (docs/metrics.md); [`Summary`] condenses iterations into the statistics a result row carries.
//!
//! This crate has no heavy dependencies: it is what backends, the runner and exporters agree on.

mod backend;
mod metrics;
mod params;
mod result;
mod sample;
mod stats;

pub use backend::{Backend, BackendError, EngineInfo, GenerationRequest, Session};
pub use metrics::{percentile, IterationMetrics, LatencyPercentiles};
pub use params::{EngineParams, FlashAttention, GenerationParams};
pub use result::{
    Aggregates, BenchmarkConfig, BenchmarkResult, BenchmarkStatistics, Environment, HarnessOverhead, IterationRecord,
    Measured, ModelIdentity, RunParameters, SCHEMA_VERSION,
};
pub use sample::{EngineCounters, RawSample, StopReason};
pub use stats::{student_t_975, Summary};
