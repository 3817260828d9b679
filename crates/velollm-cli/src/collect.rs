//! The collection of a run's rows, apart from the live display: every finished row, the row in progress (so
//! the interrupt handler can save its finished repetitions even while the engine is busy), and the outputs
//! each finished row is handed to. The display is `progress.rs`; formatting and writing are velollm-export's.

use std::sync::{Arc, Mutex, MutexGuard};

use velollm_benchmarks::{EngineInfo, Observer, Plan, Position, RowInProgress};
use velollm_core::{BenchmarkResult, EffectiveContext, EffectiveLoad, IterationMetrics, LoadParams, ModelIdentity};
use velollm_export::Outputs;

/// What the run has produced so far, shared with the interrupt handler.
pub struct Collected {
    pub rows: Vec<BenchmarkResult>,
    /// The rows being measured (several under --interleave): each handle holds its finished repetitions and
    /// builds the row (incomplete) only if the run must end now.
    pub in_progress: Vec<RowInProgress>,
    pub outputs: Outputs,
    /// What the run is doing, for the interrupt message ("loading the model", "repetition 3/5 of pp512"…).
    pub phase: String,
    /// Set once the main flow writes the final results; the interrupt handler then leaves them alone.
    pub finalizing: bool,
    /// Models that did not load: each is one failure, however many rows it failed.
    pub failed_loads: Vec<FailedLoad>,
    /// The run's place in the results history (`None` with --no-history): each finished row is added to it.
    pub history: Option<crate::history::Recorder>,
}

/// A model that did not load, and how many rows that failed.
#[derive(Debug, Clone)]
pub struct FailedLoad {
    pub backend: String,
    pub error: String,
    pub rows: usize,
}

impl Collected {
    pub fn new(outputs: Outputs) -> Collected {
        Collected {
            rows: Vec::new(),
            in_progress: Vec::new(),
            outputs,
            phase: "starting".into(),
            finalizing: false,
            failed_loads: Vec::new(),
            history: None,
        }
    }

    /// Every row, with those in progress (any with a finished repetition) last.
    pub fn all_rows(&self) -> Vec<BenchmarkResult> {
        let mut rows = self.rows.clone();
        rows.extend(self.in_progress.iter().filter_map(RowInProgress::snapshot));
        rows
    }
}

pub type Shared = Arc<Mutex<Collected>>;

pub fn lock(shared: &Shared) -> MutexGuard<'_, Collected> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The observer that keeps rows and writes them: nothing it does draws on the console, except the warning
/// that a write failed (said at once; the run goes on and the end of the run retries).
pub struct Collector {
    shared: Shared,
}

impl Collector {
    pub fn new(shared: Shared) -> Collector {
        Collector { shared }
    }
}

impl Observer for Collector {
    fn model_load_failed(&mut self, backend: &str, error: &str, rows: usize) {
        let failed = FailedLoad { backend: backend.to_string(), error: error.to_string(), rows };
        lock(&self.shared).failed_loads.push(failed);
    }

    fn row_in_progress(&mut self, row: &RowInProgress) {
        lock(&self.shared).in_progress.push(row.clone());
    }

    fn row_finished(&mut self, row: &BenchmarkResult) {
        let mut shared = lock(&self.shared);
        // The runner marks a row's handle finished before it hands the row over, so the handle that goes
        // here is this row's (a snapshot taken in between gives the finished row, not a duplicate).
        shared.in_progress.retain(|r| !r.is_finished());
        shared.rows.push(row.clone());
        let rows = shared.rows.clone();
        let errors = shared.outputs.row_finished(&rows);
        if let Some(history) = shared.history.as_mut() {
            history.row_finished(row);
        }
        drop(shared);
        for error in errors {
            eprintln!("warning: {error}; results are kept in memory and written again at the end");
        }
    }
}

/// Two observers told everything in turn: the live display first, then the collector.
pub struct Both<A, B>(pub A, pub B);

impl<A: Observer, B: Observer> Observer for Both<A, B> {
    fn plan_started(&mut self, plan: &Plan) {
        self.0.plan_started(plan);
        self.1.plan_started(plan);
    }
    fn notice(&mut self, text: &str) {
        self.0.notice(text);
        self.1.notice(text);
    }
    fn group_started(&mut self, backend: &str, model: &str) {
        self.0.group_started(backend, model);
        self.1.group_started(backend, model);
    }
    fn server_checking(&mut self, backend: &str) {
        self.0.server_checking(backend);
        self.1.server_checking(backend);
    }
    fn server_available(&mut self, backend: &str, version: Option<&str>) {
        self.0.server_available(backend, version);
        self.1.server_available(backend, version);
    }
    fn server_unavailable(&mut self, backend: &str) {
        self.0.server_unavailable(backend);
        self.1.server_unavailable(backend);
    }
    fn model_identified(&mut self, model: &ModelIdentity) {
        self.0.model_identified(model);
        self.1.model_identified(model);
    }
    fn model_loading(&mut self, backend: &str, load: &LoadParams) {
        self.0.model_loading(backend, load);
        self.1.model_loading(backend, load);
    }
    fn model_loaded(&mut self, load_ms: f64, engine: &EngineInfo, effective: &EffectiveLoad) {
        self.0.model_loaded(load_ms, engine, effective);
        self.1.model_loaded(load_ms, engine, effective);
    }
    fn model_load_failed(&mut self, backend: &str, error: &str, rows: usize) {
        self.0.model_load_failed(backend, error, rows);
        self.1.model_load_failed(backend, error, rows);
    }
    fn context_created(&mut self, effective: &EffectiveContext, warnings: &[String]) {
        self.0.context_created(effective, warnings);
        self.1.context_created(effective, warnings);
    }
    fn test_started(&mut self, at: &Position<'_>, warmup_iterations: u32) {
        self.0.test_started(at, warmup_iterations);
        self.1.test_started(at, warmup_iterations);
    }
    fn iteration_started(&mut self, at: &Position<'_>, iteration: u32, warmup: bool) {
        self.0.iteration_started(at, iteration, warmup);
        self.1.iteration_started(at, iteration, warmup);
    }
    fn warmup_finished(&mut self, at: &Position<'_>, iteration: u32) {
        self.0.warmup_finished(at, iteration);
        self.1.warmup_finished(at, iteration);
    }
    fn iteration_finished(&mut self, at: &Position<'_>, iteration: u32, metrics: &IterationMetrics) {
        self.0.iteration_finished(at, iteration, metrics);
        self.1.iteration_finished(at, iteration, metrics);
    }
    fn row_in_progress(&mut self, row: &RowInProgress) {
        self.0.row_in_progress(row);
        self.1.row_in_progress(row);
    }
    fn row_finished(&mut self, row: &BenchmarkResult) {
        self.0.row_finished(row);
        self.1.row_finished(row);
    }
}
