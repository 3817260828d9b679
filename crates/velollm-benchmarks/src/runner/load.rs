//! Load runs (`--concurrency`, `--request-rate`, `--sweep`) on a server backend's session: each text test is
//! sent under every load profile, one row per (test, profile). The generator and the statistics are
//! `velollm-load`'s; this file only turns their record into a row.

use velollm_core::{
    trim_float, BenchmarkResult, LoadProfile, LoadRecord, LoadRequest, RequestSender, RowStatus, Session, SweepStep,
};
use velollm_load::Sweep;

use super::{PlanRunner, RowBase};
use crate::plan::{Instance, TestCase};
use crate::BenchError;

impl PlanRunner<'_> {
    /// Every load profile of one text test. `Ok(true)` when interrupted.
    pub(super) fn run_load_instance(
        &mut self,
        session: &mut dyn Session,
        base: &RowBase,
        instance: &Instance,
    ) -> Result<bool, BenchError> {
        let test = self.plan.test(instance).clone();
        let TestCase::Text(config) = &test else {
            let error = "load profiles send text requests (the suite or --prompt); token tests (--pp/--tg/--pg) \
                         measure an in-process engine"
                .to_string();
            let row = self.row(base, instance, Vec::new(), Vec::new(), RowStatus::Failed, Some(error), None, None);
            self.emit(row);
            return Ok(false);
        };
        let Some(sender) = session.request_sender() else {
            let error = format!(
                "backend {} serves one request at a time; load profiles need a server backend (-b openai or -b ollama)",
                base.backend
            );
            let row = self.row(base, instance, Vec::new(), Vec::new(), RowStatus::Failed, Some(error), None, None);
            self.emit(row);
            return Ok(false);
        };
        let load = self.options.load.clone();
        let generation = self.options.generation.clone();
        let make = |index: u64| LoadRequest {
            index,
            prompt: config.prompt.clone(),
            max_tokens: config.max_tokens,
            seed: generation.seed,
            stop_at_eos: generation.stop_at_eos,
        };
        if let Some(between) = load.sweep {
            let mut sweep = Sweep::new(between);
            while let Some((shape, step)) = sweep.next(&load) {
                let profile = load.profile(shape);
                let (record, interrupted) =
                    self.run_one_profile(sender.as_ref(), &profile, Some(step), base, instance, &make);
                if let Some(record) = &record {
                    sweep.record(shape, record);
                }
                if interrupted {
                    return Ok(true);
                }
                if !matches!(&record, Some(r) if r.completed > 0) {
                    self.observer.notice("sweep: a step finished no request, so the sweep stops there");
                    break;
                }
            }
            let verdict = match (load.slo, sweep.highest_rate_meeting_slo(load.slo_attainment)) {
                (None, _) => "sweep done (no --slo given, so no rate is judged)".to_string(),
                (Some(_), Some(rate)) => format!(
                    "sweep: the highest rate meeting the SLO for {:.0} % of requests is {} requests/s",
                    load.slo_attainment * 100.0,
                    trim_float(rate)
                ),
                (Some(_), None) => format!(
                    "sweep: no step met the SLO for {:.0} % of requests, not even one request at a time",
                    load.slo_attainment * 100.0
                ),
            };
            self.observer.notice(&verdict);
            return Ok(false);
        }
        for profile in load.profiles() {
            if self.cancelled() {
                return Ok(true);
            }
            let (_, interrupted) = self.run_one_profile(sender.as_ref(), &profile, None, base, instance, &make);
            if interrupted {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One profile: its run, its row (emitted), its record, and whether Ctrl-C ended it.
    fn run_one_profile(
        &mut self,
        sender: &dyn RequestSender,
        profile: &LoadProfile,
        sweep: Option<SweepStep>,
        base: &RowBase,
        instance: &Instance,
        make: &(dyn Fn(u64) -> LoadRequest + Sync),
    ) -> (Option<LoadRecord>, bool) {
        let test_name = self.plan.test(instance).name();
        self.observer.notice(&format!("{test_name} @ {}: {}", profile.label(), describe(profile)));
        let run = velollm_load::run_profile(sender, profile, make, &self.options.cancel);
        let warmup_failed = run.warmup.iter().filter(|t| !t.succeeded()).count() as u64;
        if run.interrupted && run.timed.is_empty() {
            return (None, true);
        }
        let mut record = velollm_load::summarize(profile, run.timed, warmup_failed, self.options.load.slo);
        record.sweep = sweep;
        let mut row = self.row(base, instance, Vec::new(), Vec::new(), RowStatus::Ok, None, None, None);
        fill_load_row(&mut row, &record, run.interrupted, run.thread_error);
        self.emit(row);
        (Some(record), run.interrupted)
    }
}

fn describe(profile: &LoadProfile) -> String {
    use velollm_core::{LoadShape, LoadStop};
    let shape = match profile.shape {
        LoadShape::Closed { concurrency } => format!("closed loop, {concurrency} at a time"),
        LoadShape::Open { rate: Some(rate), burstiness: 1.0 } => {
            format!("Poisson arrivals at {} requests/s", trim_float(rate))
        }
        LoadShape::Open { rate: Some(rate), burstiness } => {
            format!("gamma arrivals at {} requests/s, burstiness {}", trim_float(rate), trim_float(burstiness))
        }
        LoadShape::Open { rate: None, .. } => format!("all at once (at most {} in flight)", profile.max_concurrency),
    };
    let stop = match profile.stop {
        LoadStop::Requests(n) => format!("{n} requests"),
        LoadStop::DurationS(s) => format!("for {} s", trim_float(s)),
    };
    format!("{shape}, {stop}, {} warm-up", profile.warmup_requests)
}

/// A load row: the guide's headline fields hold the run's figures (tokens/s = output tokens per second over
/// the run, TTFT = mean TTFT, total time = the run's duration), the `load` object everything else.
fn fill_load_row(row: &mut BenchmarkResult, record: &LoadRecord, interrupted: bool, thread_error: Option<String>) {
    row.config.name = format!("{} @ {}", row.config.name, record.profile.label());
    row.config.iterations = u32::try_from(record.requests_sent).unwrap_or(u32::MAX);
    row.tokens_per_second = record.output_tokens_per_second.into();
    row.time_to_first_token_ms = record.ttft_ms.map(|d| d.mean).into();
    row.total_time_ms = (record.duration_ms > 0.0).then_some(record.duration_ms).into();
    row.total_tokens = record.total_output_tokens;
    row.iterations_completed = u32::try_from(record.completed).unwrap_or(u32::MAX);
    let per_request = |total: u64| (total + record.completed / 2).checked_div(record.completed).unwrap_or(0);
    row.eval_count = per_request(record.total_output_tokens);
    row.prompt_eval_count = per_request(record.total_prompt_tokens);
    row.test.n_prompt = row.prompt_eval_count;
    if record.failed > 0 {
        let reasons: Vec<String> = record.failures.iter().map(|(why, n)| format!("{n} × {why}")).collect();
        row.warnings.push(format!(
            "{} of {} requests failed: {}",
            record.failed,
            record.requests_sent,
            reasons.join("; ")
        ));
    }
    if record.warmup_requests_failed > 0 {
        row.warnings.push(format!("{} warm-up request(s) failed", record.warmup_requests_failed));
    }
    if let Some(error) = thread_error {
        row.warnings.push(error);
    }
    if record.output_tokens_counted_by.as_deref() == Some("chunks") {
        row.warnings
            .push("the server reported no usage in its streams: output tokens were counted as chunks with text".into());
    }
    (row.status, row.error) = match (record.completed, interrupted) {
        (0, _) => (
            RowStatus::Failed,
            Some(
                record
                    .failures
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map_or("no request was sent".into(), |(w, _)| w.clone()),
            ),
        ),
        (_, true) => (RowStatus::Incomplete, Some("interrupted".into())),
        _ => (RowStatus::Ok, None),
    };
    row.load = Some(record.clone());
}
