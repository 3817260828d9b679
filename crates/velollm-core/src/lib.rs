//! The shared vocabulary of velollm.
//!
//! Data flows one way: a [`Backend`] loads a model ([`LoadParams`]) into a [`LoadedModel`], which creates
//! a [`Session`] ([`ContextParams`]); the session turns a [`GenerationRequest`] or a [`TokenRequest`] into a
//! [`RawSample`] (timestamps and counts only); [`IterationMetrics`] are derived from raw samples in exactly
//! one place, so every backend is measured by the same formulas (docs/metrics.md); [`Aggregates`] condense
//! iterations into the statistics a result row ([`BenchmarkResult`]) carries.
//!
//! This crate has no heavy dependencies: it is what backends, the runner and exporters agree on.

pub mod atomic;
mod backend;
mod efficiency;
mod hardware;
mod load;
mod metrics;
mod params;
mod repetition;
mod result;
mod row;
mod sample;
mod stats;
mod telemetry;
mod workload;

pub use backend::{
    decode_greedy, timed_token_test, Backend, BackendError, DecodedTokens, EngineInfo, GenerationRequest, LoadedModel,
    ModelSource, Session, SourceKind, TokenRequest,
};
pub use efficiency::{decode_efficiency, roofline_bandwidth, DecodeEfficiency};
pub use hardware::{
    nominal_vram_gb, theoretical_bandwidth_gb_per_s, BandwidthMeasurement, CpuDetails, EngineDevice, GpuInfo,
    GpuSource, GpuVendor, HardwareInfo, MemoryDetails, NvmlStatus, OsDetails,
};
pub use load::{
    trim_float, LatencyDistribution, LoadProfile, LoadRecord, LoadRequest, LoadShape, LoadStop, RequestSender,
    RequestTimeline, Slo, SweepStep, TokenCountSource,
};
pub use metrics::{percentile, BatchedMetrics, HttpMetrics, IterationMetrics, LatencyPercentiles};
pub use params::{
    ContextParams, DevicePlacement, DeviceSelection, EffectiveContext, EffectiveLoad, EffectiveParams, EngineBuffer,
    FlashAttention, GenerationParams, GpuLayers, KvCacheType, LoadParams, RequestedParams, SplitMode, TensorSplit,
};
pub use repetition::{
    ci_half_width_percent, outlier_indices, outliers, AutoRepetitions, Decision, Interleaved, Outliers, PolicyState,
    RepetitionPolicy, Repetitions, OUTLIER_Z,
};
pub use result::{
    Aggregates, BatchedFigures, BenchmarkConfig, BenchmarkResult, BenchmarkStatistics, EngineCheck, Environment,
    HarnessOverhead, HttpOverhead, IterationRecord, Measured, ModelIdentity, RepetitionRecord, RowStatus,
    RunParameters, ServerRecord, ServerRequestOptions, StopRule, SCHEMA_VERSION,
};
pub use row::{RowBase, RowBuilder};
pub use sample::{
    argmax, elapsed_ns, BatchedSample, ChunkArrival, EngineCounters, RawSample, ServerSample, StopReason,
};
pub use stats::{student_t_975, Summary};
pub use telemetry::{
    power_integral_joules, EnergySource, GpuIterationTelemetry, GpuRowTelemetry, GpuSample, IterationTelemetry,
    RowTelemetry,
};
pub use workload::{Parallel, TestCase, TestKind, TestShape, TokenRng, TokenTest, MAX_PARALLEL_SEQUENCES};
