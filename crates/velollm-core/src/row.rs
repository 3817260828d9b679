//! A result row built from its raw samples and what the run knew around them: the one place a
//! [`BenchmarkResult`] is assembled, by the runner and by the constructed rows of tests alike. Every statistic
//! comes from [`Aggregates`] (docs/metrics.md).

use crate::{
    Aggregates, BenchmarkResult, DecodeEfficiency, EffectiveParams, Environment, GenerationParams, HardwareInfo,
    Interleaved, IterationMetrics, IterationTelemetry, ModelIdentity, PolicyState, RawSample, RepetitionRecord,
    Repetitions, RequestedParams, RowStatus, RowTelemetry, RunParameters, ServerRecord, StopRule, TestCase, TestKind,
    TestShape, SCHEMA_VERSION,
};

/// What every row of one context shares.
#[derive(Debug, Clone)]
pub struct RowBase {
    pub backend: String,
    pub model: ModelIdentity,
    pub environment: Environment,
    pub load_ms: Option<f64>,
    pub context_ms: Option<f64>,
    pub effective: Option<EffectiveParams>,
    pub server: Option<ServerRecord>,
    pub warnings: Vec<String>,
}

/// Everything a row holds besides its samples, owned, so a row in progress can be built on any thread. The runner
/// and the constructed rows of tests (velollm-fixtures) both build rows through it, so a constructed row is what
/// a run with those samples writes.
#[derive(Debug, Clone)]
pub struct RowBuilder {
    pub base: RowBase,
    /// The parameters as requested (the instance's load and context parameters).
    pub requested: RequestedParams,
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

impl RowBuilder {
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
        let ci_half_width_percent = crate::ci_half_width_percent(&rates);
        let outliers = crate::outliers(&rates);
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
        let config = test.row_config(&self.model_reference);
        let expected_tokens = match test {
            TestCase::Text(config) => config.max_tokens,
            TestCase::Tokens { test, .. } => test.n_gen,
        };
        let iterations_completed = samples.len() as u32;
        // Energy per token counts the tokens the test is about: generated ones, and the prompt's for pp/pg.
        let counted_tokens: Vec<u64> = samples
            .iter()
            .map(|s| match test {
                // A batched test's timed tokens: N_KV (its steps decode B tokens each).
                TestCase::Tokens { test, .. } if s.batched.is_some() => {
                    s.prompt_tokens + u64::from(test.sequences()) * s.token_times_ns.len() as u64
                }
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
                parallel: None,
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
            iterations_completed,
            test: shape,
            avg_ns: agg.avg_ns,
            stddev_ns: agg.stddev_ns,
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
                requested: self.requested.clone(),
                effective: base.effective.clone(),
                generation: self.generation.clone(),
                warmup_iterations: self.warmup_iterations,
            },
            environment: base.environment.clone(),
            hardware: self.hardware.clone(),
            telemetry,
            load: None,
            batched: agg.batched,
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
