//! What the runner tells its caller as it goes (progress, rows as they exist), between timed regions only.

use velollm_core::{
    BenchmarkConfig, BenchmarkResult, EffectiveContext, EffectiveLoad, EngineInfo, IterationMetrics, LoadParams,
    ModelIdentity,
};

use crate::plan::{Instance, Plan};
use crate::row::RowInProgress;

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
