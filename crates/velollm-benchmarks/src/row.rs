//! The row in progress ([`RowInProgress`], rows themselves are built by velollm-core's `RowBuilder`): a handle that holds
//! a row's finished repetitions, shared with whoever may have to save them while the engine is busy (the CLI's
//! Ctrl-C handler). The handle only stores each repetition as it finishes; the row itself is built when someone
//! asks for it, so the work between two repetitions does not grow with the number of repetitions.

use std::sync::{Arc, Mutex, MutexGuard};

use velollm_core::{BenchmarkResult, IterationTelemetry, PolicyState, RawSample, RowBuilder, RowStatus, StopRule};

/// A row whose timed repetitions are under way: every finished repetition, kept as it finishes. Cloning the
/// handle shares it. [`RowInProgress::snapshot`] builds the row as it would be saved if the run ended now.
#[derive(Clone)]
pub struct RowInProgress(Arc<Mutex<InProgress>>);

struct InProgress {
    maker: RowBuilder,
    samples: Vec<RawSample>,
    telemetry: Vec<IterationTelemetry>,
    state: Option<PolicyState>,
    startup_ms: Option<f64>,
    /// Set when the runner is done with the row: the finished row (`None` when it kept nothing).
    done: Option<Option<BenchmarkResult>>,
}

impl RowInProgress {
    pub(crate) fn new(maker: RowBuilder) -> RowInProgress {
        RowInProgress(Arc::new(Mutex::new(InProgress {
            maker,
            samples: Vec::new(),
            telemetry: Vec::new(),
            state: None,
            startup_ms: None,
            done: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, InProgress> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A finished repetition (constant work: the sample moves in, nothing is recomputed).
    pub(crate) fn push(&self, sample: RawSample, telemetry: IterationTelemetry, state: Option<PolicyState>) {
        let mut inner = self.lock();
        inner.samples.push(sample);
        inner.telemetry.push(telemetry);
        inner.state = state;
    }

    pub(crate) fn set_startup_ms(&self, startup_ms: Option<f64>) {
        self.lock().startup_ms = startup_ms;
    }

    /// Repetitions kept so far.
    pub fn len(&self) -> usize {
        self.lock().samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `f` makes of the first kept sample (the generated text of a text row), outside any timed region.
    pub(crate) fn with_first_sample<T>(&self, f: impl FnOnce(&RawSample) -> Option<T>) -> Option<T> {
        self.lock().samples.first().and_then(f)
    }

    /// Ends the row: builds it from every kept repetition, and keeps it for a [`RowInProgress::snapshot`] taken
    /// before whoever holds the handle hears of the finished row.
    pub(crate) fn finish(
        &self,
        status: RowStatus,
        stopped_because: StopRule,
        error: Option<String>,
        generated_text: Option<String>,
    ) -> BenchmarkResult {
        let mut inner = self.lock();
        let samples = std::mem::take(&mut inner.samples);
        let telemetry = std::mem::take(&mut inner.telemetry);
        let record = inner.maker.record(stopped_because, &samples, inner.state);
        let mut row = inner.maker.row(samples, telemetry, status, error, Some(record), generated_text);
        row.startup_to_first_timed_iteration_ms = inner.startup_ms;
        inner.done = Some(Some(row.clone()));
        row
    }

    /// Ends the row without a row (interrupted before any repetition finished).
    pub(crate) fn abandon(&self) {
        self.lock().done = Some(None);
    }

    /// Whether the runner is done with the row (its finished row, if any, is or is about to be handed over).
    pub fn is_finished(&self) -> bool {
        self.lock().done.is_some()
    }

    /// The row as it would be saved now: the finished row once there is one; before that every finished
    /// repetition in a row marked incomplete ("interrupted"); `None` while nothing is kept.
    pub fn snapshot(&self) -> Option<BenchmarkResult> {
        let inner = self.lock();
        if let Some(done) = &inner.done {
            return done.clone();
        }
        if inner.samples.is_empty() {
            return None;
        }
        let record = inner.maker.record(StopRule::Interrupted, &inner.samples, inner.state);
        let mut row = inner.maker.row(
            inner.samples.clone(),
            inner.telemetry.clone(),
            RowStatus::Incomplete,
            Some("interrupted".into()),
            Some(record),
            None,
        );
        row.startup_to_first_timed_iteration_ms = inner.startup_ms;
        Some(row)
    }
}
