//! A row built from its samples ([`RowMaker`]), and the row in progress ([`RowInProgress`]): a handle that holds
//! a row's finished repetitions, shared with whoever may have to save them while the engine is busy (the CLI's
//! Ctrl-C handler). The handle only stores each repetition as it finishes; the row itself is built when someone
//! asks for it, so the work between two repetitions does not grow with the number of repetitions.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use velollm_core::{
    Aggregates, BenchmarkResult, DecodeEfficiency, EffectiveParams, Environment, GenerationParams, HardwareInfo,
    Interleaved, IterationMetrics, IterationTelemetry, ModelIdentity, PolicyState, RawSample, RepetitionRecord,
    RequestedParams, RowStatus, RowTelemetry, RunParameters, ServerRecord, StopRule, TestKind, TestShape,
    SCHEMA_VERSION,
};

use crate::plan::{Instance, Repetitions, TestCase};

/// What every row of one context shares.
#[derive(Clone)]
pub(crate) struct RowBase {
    pub backend: String,
    pub model: ModelIdentity,
    pub environment: Environment,
    pub load_ms: Option<f64>,
    pub context_ms: Option<f64>,
    pub effective: Option<EffectiveParams>,
    pub server: Option<ServerRecord>,
    pub warnings: Vec<String>,
    /// Start of this (model, backend) group's clock, for the start-up figure.
    pub group_start: Option<Instant>,
}

/// Everything a row holds besides its samples, owned, so a row in progress can be built on any thread.
#[derive(Clone)]
pub(crate) struct RowMaker {
    pub base: RowBase,
    pub instance: Instance,
    pub test: TestCase,
    pub model_reference: String,
    pub repetitions: Repetitions,
    pub generation: GenerationParams,
    pub warmup_iterations: u32,
    pub hardware: Option<HardwareInfo>,
    /// Said on the row when other processes competed for the cores as its test started.
    pub busy_machine: Option<String>,
    pub interleaved: Option<Interleaved>,
}

impl RowMaker {
    /// How the repetitions went: the mode and its settings, why they stopped, the interval reached, the
    /// repetitions flagged as outliers, and (auto) the checks the rule made.
    pub fn record(
        &self,
        stopped_because: StopRule,
        samples: &[RawSample],
        state: Option<PolicyState>,
    ) -> RepetitionRecord {
        let rates: Vec<f64> =
            samples.iter().filter_map(|s| IterationMetrics::from_sample(s).tokens_per_second).collect();
        let ci_half_width_percent = velollm_core::ci_half_width_percent(&rates);
        let outliers = velollm_core::outliers(&rates);
        match self.repetitions {
            Repetitions::Fixed => RepetitionRecord {
                mode: "fixed".into(),
                requested: self.test.fixed_count(),
                target_ci_percent: None,
                max_time_s: None,
                min_repetitions: None,
                stopped_because,
                ci_half_width_percent,
                min_time_s: None,
                consecutive_required: None,
                checks: None,
                outliers,
            },
            Repetitions::Auto(policy) => RepetitionRecord {
                mode: "auto".into(),
                requested: policy.max_repetitions,
                target_ci_percent: Some(policy.target_ci_percent),
                max_time_s: Some(policy.max_time.as_secs_f64()),
                min_repetitions: Some(policy.min_repetitions),
                stopped_because,
                ci_half_width_percent,
                min_time_s: Some(policy.min_time.as_secs_f64()),
                consecutive_required: Some(policy.consecutive),
                checks: Some(state.unwrap_or_default().checks),
                outliers,
            },
        }
    }

    /// The row of these samples.
    pub fn row(
        &self,
        samples: Vec<RawSample>,
        telemetry: Vec<IterationTelemetry>,
        status: RowStatus,
        error: Option<String>,
        repetitions: Option<RepetitionRecord>,
        generated_text: Option<String>,
    ) -> BenchmarkResult {
        let test = &self.test;
        let base = &self.base;
        let config = crate::runner::row_config(&self.model_reference, test);
        let expected_tokens = match test {
            TestCase::Text(config) => config.max_tokens,
            TestCase::Tokens { test, .. } => test.n_gen,
        };
        let iterations_completed = samples.len() as u32;
        // Energy per token counts the tokens the test is about: generated ones, and the prompt's for pp/pg.
        let counted_tokens: Vec<u64> = samples
            .iter()
            .map(|s| match test {
                TestCase::Tokens { test, .. } if test.n_prompt > 0 => s.prompt_tokens + s.token_times_ns.len() as u64,
                _ => s.token_times_ns.len() as u64 + s.server.as_ref().and_then(|v| v.eval_count).unwrap_or(0),
            })
            .collect();
        let telemetry = (!telemetry.is_empty()).then(|| RowTelemetry::from_iterations(&telemetry, &counted_tokens));
        let agg = Aggregates::from_samples(samples, expected_tokens);
        let shape = match test {
            TestCase::Text(config) => TestShape {
                kind: TestKind::Text,
                n_prompt: agg.prompt_eval_count,
                n_gen: config.max_tokens,
                n_depth: 0,
            },
            TestCase::Tokens { test, .. } => TestShape::of_tokens(test),
        };
        let stopped_because = match status {
            RowStatus::Failed if error.as_deref() == Some("interrupted") => StopRule::Interrupted,
            RowStatus::Failed => StopRule::Error,
            _ => StopRule::Count,
        };
        let repetitions = repetitions.unwrap_or_else(|| self.record(stopped_because, &[], None));
        let mut warnings = base.warnings.clone();
        warnings.extend(self.busy_machine.clone().filter(|_| iterations_completed > 0));
        warnings.extend(agg.warnings);
        BenchmarkResult {
            config,
            tokens_per_second: agg.tokens_per_second.into(),
            time_to_first_token_ms: agg.time_to_first_token_ms.into(),
            total_time_ms: agg.total_time_ms.into(),
            total_tokens: agg.total_tokens,
            prompt_eval_count: agg.prompt_eval_count,
            eval_count: agg.eval_count,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            schema_version: SCHEMA_VERSION,
            backend: base.backend.clone(),
            status,
            error,
            complete: status == RowStatus::Ok,
            iterations_completed,
            test: shape,
            avg_ns: agg.avg_ns,
            stddev_ns: agg.stddev_ns,
            avg_ts: agg.avg_ts,
            stddev_ts: agg.stddev_ts,
            samples_ns: agg.samples_ns,
            samples_ts: agg.samples_ts,
            repetitions,
            interleaved: self.interleaved.clone(),
            prompt_tokens_per_second: agg.prompt_tokens_per_second,
            load_time_ms: base.load_ms,
            context_time_ms: base.context_ms,
            startup_to_first_timed_iteration_ms: None,
            statistics: agg.statistics,
            harness_overhead: agg.harness_overhead,
            http_overhead: agg.http_overhead,
            server: base.server.clone(),
            warnings,
            generated_text,
            samples: agg.records,
            decode_efficiency: self.decode_efficiency(agg.tokens_per_second),
            model: base.model.clone(),
            parameters: RunParameters {
                requested: RequestedParams { load: self.instance.load.clone(), context: self.instance.context.clone() },
                effective: base.effective.clone(),
                generation: self.generation.clone(),
                warmup_iterations: self.warmup_iterations,
            },
            environment: base.environment.clone(),
            hardware: self.hardware.clone(),
            telemetry,
        }
    }

    /// The decode rate against the memory-bandwidth roofline: text and generation-only tests, where every
    /// token reads the weights once; `None` without a bandwidth for where the weights are (docs/metrics.md).
    fn decode_efficiency(&self, rate: Option<f64>) -> Option<DecodeEfficiency> {
        let decode_only = match &self.test {
            TestCase::Text(_) => true,
            TestCase::Tokens { test, .. } => test.n_prompt == 0,
        };
        let load = &self.base.effective.as_ref()?.load;
        let bytes_per_token = self.base.model.weight_bytes_per_token?;
        let hardware = self.hardware.as_ref()?;
        if !decode_only {
            return None;
        }
        DecodeEfficiency::for_run(bytes_per_token, rate?, hardware, load.n_gpu_layers?, load.n_layers_total?)
    }
}

/// A row whose timed repetitions are under way: every finished repetition, kept as it finishes. Cloning the
/// handle shares it. [`RowInProgress::snapshot`] builds the row as it would be saved if the run ended now.
#[derive(Clone)]
pub struct RowInProgress(Arc<Mutex<InProgress>>);

struct InProgress {
    maker: RowMaker,
    samples: Vec<RawSample>,
    telemetry: Vec<IterationTelemetry>,
    state: Option<PolicyState>,
    startup_ms: Option<f64>,
    /// Set when the runner is done with the row: the finished row (`None` when it kept nothing).
    done: Option<Option<BenchmarkResult>>,
}

impl RowInProgress {
    pub(crate) fn new(maker: RowMaker) -> RowInProgress {
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
