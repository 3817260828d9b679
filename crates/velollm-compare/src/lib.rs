//! `velollm compare`: what changed between two runs, and whether the change is more than noise.
//!
//! - reading is velollm-results' (re-exported here): velollm's rows of every schema version and llama-bench's
//!   rows, read into [`Entry`]s: the test, the model, the backend, every parameter, and the raw samples;
//! - matching ([`compare`]): a row of the base run and a row of the new run are the same test when the test
//!   (text prompt and length, or llama-bench's `n_prompt`/`n_gen`/`n_depth`), the model, the backend and every
//!   parameter both rows record are the same (rules in docs/metrics.md, "Comparing runs");
//! - [`stats`]: per metric, Welch's t-test on the raw samples and Fieller's 95 % interval of the change; for two
//!   rows of the same interleaved run (`velollm benchmark --interleave`), a paired t-test on the per-round
//!   log-ratios instead, which drift between rounds cannot fool;
//! - [`select`]: the two sides from one file (`--base 'n_threads=1' --new 'n_threads=2'`);
//! - [`gate`]: the `--fail-if-slower` decision, with Holm's step-down over every hypothesis it tests.
//!
//! Rendering is the CLI's (`velollm compare`) and the HTML report's; this crate only computes.

pub mod select;
pub mod stats;

use std::collections::BTreeMap;

use serde::Serialize;

pub use select::{differing_names, select, Selector};
pub use stats::{paired, welch, Moments, Paired, Welch};
pub use velollm_results::{
    read_file, read_str, Entry, Interleaved, Layout, Metric, ModelId, ReadError, Run, Status, TestId, Tool,
};

/// Significance level of every verdict (two-sided).
pub const ALPHA: f64 = 0.05;

/// Family-wise error of `--fail-if-slower`: the probability that noise alone fails the gate, whatever the number
/// of rows and metrics it tests (one-sided; with one hypothesis, the same decision as "the whole 95 % interval
/// lies beyond the threshold").
pub const GATE_ALPHA: f64 = 0.025;

/// What can be left out of the matching (`--ignore`): the model, the backend, or any parameter.
pub fn ignorable(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = vec!["model".into(), "backend".into()];
    for run in runs {
        for entry in &run.entries {
            for name in entry.parameters.keys() {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
    }
    names
}

/// What a metric did, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly better (higher rate, lower time).
    Faster,
    /// Significantly worse.
    Slower,
    /// No significant difference at 5 %.
    NoChange,
    /// Fewer than two samples on a side: no test is possible.
    TooFewSamples,
    /// The means differ but no side has any spread (or, paired, every round has the same ratio): no statistical
    /// test is possible; the change is what was observed.
    DiffersZeroVariance,
    /// The values are so extreme that the change is not a finite number.
    NotComparable,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::NoChange => "no significant change",
            Verdict::TooFewSamples => "too few samples",
            Verdict::DiffersZeroVariance => "differs, zero variance: no statistical test possible",
            Verdict::NotComparable => "not comparable (values out of range)",
        }
    }
}

/// Which test a metric's verdict comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Welch's t-test on the two rows' samples as independent samples (rows not from one interleaved run).
    Welch,
    /// A paired t-test on the log-ratios of the repetitions measured in the same round (both rows from the same
    /// interleaved run).
    Paired,
}

/// The log-ratios `ln(newᵢ / baseᵢ)` of a paired comparison: how many, their mean and standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogRatios {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
}

/// One metric of a matched pair.
#[derive(Debug, Clone, Serialize)]
pub struct MetricChange {
    pub metric: Metric,
    pub label: &'static str,
    pub higher_is_better: bool,
    /// The samples compared (paired: those of the rounds both rows measured).
    pub base: Moments,
    pub new: Moments,
    pub method: Method,
    /// Welch: `(mean_new / mean_base − 1) · 100`; paired: the change of the geometric mean over the rounds,
    /// `(exp(d̄) − 1) · 100`.
    pub change_percent: f64,
    pub ci95_low_percent: Option<f64>,
    pub ci95_high_percent: Option<f64>,
    pub p_value: Option<f64>,
    pub df: Option<f64>,
    /// Paired comparisons: the per-round log-ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_ratios: Option<LogRatios>,
    pub verdict: Verdict,
}

impl MetricChange {
    fn verdict(metric: Metric, p_value: f64, change_percent: f64) -> Verdict {
        if p_value >= ALPHA {
            Verdict::NoChange
        } else if (change_percent > 0.0) == metric.higher_is_better() {
            Verdict::Faster
        } else {
            Verdict::Slower
        }
    }

    /// Without a test: equal means are no change, different ones differ (zero variance), else not comparable.
    fn untested(base: &Moments, new: &Moments, change_percent: f64) -> Verdict {
        if !change_percent.is_finite() {
            Verdict::NotComparable
        } else if base.n < 2 || new.n < 2 {
            Verdict::TooFewSamples
        } else if base.no_spread() && new.no_spread() {
            if (new.mean - base.mean).abs() <= stats::NO_SPREAD * base.mean.abs() {
                Verdict::NoChange
            } else {
                Verdict::DiffersZeroVariance
            }
        } else {
            Verdict::NotComparable
        }
    }

    fn welch(metric: Metric, base: &[f64], new: &[f64]) -> Option<MetricChange> {
        let (b, n) = (Moments::of(base)?, Moments::of(new)?);
        let change_percent = (n.mean / b.mean - 1.0) * 100.0;
        let test = welch(&b, &n).filter(|_| change_percent.is_finite());
        let verdict = match test {
            Some(w) => Self::verdict(metric, w.p_value, n.mean - b.mean),
            None => Self::untested(&b, &n, change_percent),
        };
        let ci = test.and_then(|w| w.ci95_percent);
        Some(MetricChange {
            metric,
            label: metric.label(),
            higher_is_better: metric.higher_is_better(),
            base: b,
            new: n,
            method: Method::Welch,
            change_percent: if change_percent.is_finite() { change_percent } else { 0.0 },
            ci95_low_percent: ci.map(|c| c.0),
            ci95_high_percent: ci.map(|c| c.1),
            p_value: test.map(|w| w.p_value),
            df: test.map(|w| w.df),
            log_ratios: None,
            verdict,
        })
    }

    /// The values of the rounds both rows measured, paired by round.
    fn paired(metric: Metric, base: (&[f64], &[usize]), new: (&[f64], &[usize])) -> Option<MetricChange> {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for (value, round) in base.0.iter().zip(base.1) {
            if let Some(other) = new.1.iter().position(|r| r == round).and_then(|i| new.0.get(i)) {
                xs.push(*value);
                ys.push(*other);
            }
        }
        let (b, n) = (Moments::of(&xs).or(Moments::of(base.0))?, Moments::of(&ys).or(Moments::of(new.0))?);
        let ratios = stats::log_ratio_moments(&xs, &ys).map(|(n, mean, sd)| LogRatios { n, mean, sd });
        let test = paired(&xs, &ys);
        let change_percent = match (test, ratios) {
            (Some(p), _) => p.change_percent,
            (None, Some(r)) => r.mean.exp_m1() * 100.0,
            (None, None) => (n.mean / b.mean - 1.0) * 100.0,
        };
        let verdict = match (test, ratios) {
            (Some(p), _) => Self::verdict(metric, p.p_value, p.change_percent),
            _ if xs.len() < 2 => Verdict::TooFewSamples,
            (None, Some(r)) if r.sd <= stats::NO_SPREAD && r.mean.abs() <= stats::NO_SPREAD => Verdict::NoChange,
            (None, Some(r)) if r.sd <= stats::NO_SPREAD && change_percent.is_finite() => Verdict::DiffersZeroVariance,
            _ => Verdict::NotComparable,
        };
        Some(MetricChange {
            metric,
            label: metric.label(),
            higher_is_better: metric.higher_is_better(),
            base: b,
            new: n,
            method: Method::Paired,
            change_percent: if change_percent.is_finite() { change_percent } else { 0.0 },
            ci95_low_percent: test.map(|p| p.ci95_percent.0),
            ci95_high_percent: test.map(|p| p.ci95_percent.1),
            p_value: test.map(|p| p.p_value),
            df: test.map(|p| p.df),
            log_ratios: ratios,
            verdict,
        })
    }

    /// The smallest slowdown the 95 % interval allows, in per cent (positive: slower for sure by at least that
    /// much); absent when the interval is unbounded or there is none.
    pub fn certain_slowdown_percent(&self) -> Option<f64> {
        let (low, high) = (self.ci95_low_percent?, self.ci95_high_percent?);
        Some(if self.higher_is_better { -high } else { low })
    }

    /// The one-sided p-value of "slower by at most `percent` %" (the gate's null hypothesis): for a rate, that
    /// the ratio new/base is at least `ρ₀ = 1 − percent/100`; for a time, at most `ρ₀ = 1 + percent/100`.
    /// Absent when no test is possible.
    pub fn p_slower_than(&self, percent: f64) -> Option<f64> {
        if matches!(self.verdict, Verdict::TooFewSamples | Verdict::DiffersZeroVariance | Verdict::NotComparable)
            || self.verdict == Verdict::NoChange && self.p_value.is_none()
        {
            return None;
        }
        let rho = if self.higher_is_better { 1.0 - percent / 100.0 } else { 1.0 + percent / 100.0 };
        let (t, df) = match self.method {
            Method::Welch => stats::welch_ratio_t(&self.base, &self.new, rho)?,
            Method::Paired => {
                let r = self.log_ratios?;
                ((r.mean - rho.ln()) / (r.sd / (r.n as f64).sqrt()), (r.n - 1) as f64)
            }
        };
        if t.is_nan() {
            return None;
        }
        // Small p: the data are unlikely under "not slower than the threshold".
        Some(if self.higher_is_better { stats::student_cdf(t, df) } else { stats::student_cdf(-t, df) })
    }

    /// The observed slowdown in per cent (positive: slower), for a verdict that has no test.
    fn observed_slowdown_percent(&self) -> f64 {
        if self.higher_is_better {
            -self.change_percent
        } else {
            self.change_percent
        }
    }
}

/// Two rows that ran the same test.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub test: TestId,
    pub model: String,
    pub backend: String,
    /// Positions in their files, from 1.
    pub base_row: usize,
    pub new_row: usize,
    pub base_status: Status,
    pub new_status: Status,
    pub base_error: Option<String>,
    pub new_error: Option<String>,
    /// Why a row's samples could not be used (see [`Entry::invalid`]).
    pub base_invalid: Option<String>,
    pub new_invalid: Option<String>,
    /// The interleaved run both rows come from, when the metrics are compared round by round.
    pub interleaved_run: Option<String>,
    /// Why the rows are compared with Welch's test although one of them comes from an interleaved run.
    pub method_note: Option<String>,
    /// The parameters both rows record, with their (equal) values.
    pub parameters: BTreeMap<String, String>,
    /// Parameters only one of the rows records (not compared).
    pub not_compared: Vec<String>,
    /// Parameters left out of the matching by `--ignore` that differ: `name: base → new`.
    pub ignored_differences: Vec<String>,
    pub metrics: Vec<MetricChange>,
}

/// A row without a counterpart in the other run.
#[derive(Debug, Clone, Serialize)]
pub struct Unmatched {
    pub row: usize,
    pub label: String,
    pub status: Status,
    /// The closest row of the other run that ran the same test, and how it differs.
    pub nearest: Option<String>,
}

/// A base run against one new run.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub base: String,
    pub new: String,
    pub base_tool: &'static str,
    pub new_tool: &'static str,
    pub pairs: Vec<Pair>,
    pub only_in_base: Vec<Unmatched>,
    pub only_in_new: Vec<Unmatched>,
    pub warnings: Vec<String>,
}

/// How two rows differ in what makes them the same test (test, model, backend, shared parameters), except
/// what `ignore` leaves out; empty when they ran the same test.
pub fn differences(a: &Entry, b: &Entry, ignore: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let ignored = |name: &str| ignore.iter().any(|i| i == name);
    if !a.test.same_test(&b.test) {
        out.push(format!("test ({} → {})", a.test.name, b.test.name));
    }
    if !ignored("model") && !a.model.same_model(&b.model) {
        out.push(format!("model ({} → {})", a.model.label, b.model.label));
    }
    if !ignored("backend") && a.backend != b.backend {
        out.push(format!("backend ({} → {})", a.backend, b.backend));
    }
    for (name, value) in &a.parameters {
        if ignored(name) {
            continue;
        }
        if let Some(other) = b.parameters.get(name) {
            if other != value {
                out.push(format!("{name} ({value} → {other})"));
            }
        }
    }
    out
}

fn pair(base: &Entry, new: &Entry, ignore: &[String]) -> Pair {
    let mut parameters = BTreeMap::new();
    let mut not_compared = Vec::new();
    let mut ignored_differences = Vec::new();
    for (name, value) in &base.parameters {
        match new.parameters.get(name) {
            Some(other) if other != value => ignored_differences.push(format!("{name}: {value} → {other}")),
            Some(_) if ignore.contains(name) => {}
            Some(_) => {
                parameters.insert(name.clone(), value.clone());
            }
            None => not_compared.push(name.clone()),
        }
    }
    not_compared.extend(new.parameters.keys().filter(|k| !base.parameters.contains_key(*k)).cloned());
    not_compared.sort();
    if base.backend != new.backend {
        ignored_differences.insert(0, format!("backend: {} → {}", base.backend, new.backend));
    }
    if !base.model.same_model(&new.model) {
        ignored_differences.insert(0, format!("model: {} → {}", base.model.label, new.model.label));
    }
    let (interleaved_run, method_note) = match (&base.interleaved, &new.interleaved) {
        (Some(a), Some(b)) if a.run == b.run => (Some(a.run.clone()), None),
        (Some(a), Some(b)) => (
            None,
            Some(format!(
                "Welch's test: the rows come from different interleaved runs ({} and {}), not measured round by round together",
                a.run, b.run
            )),
        ),
        (Some(_), None) | (None, Some(_)) => (
            None,
            Some(format!(
                "Welch's test: only the {} row comes from an interleaved run",
                if base.interleaved.is_some() { "base" } else { "new" }
            )),
        ),
        (None, None) => (None, None),
    };
    let empty: Vec<usize> = Vec::new();
    let rounds = |entry: &'_ Entry, metric: &Metric| entry.rounds.get(metric).cloned().unwrap_or_else(|| empty.clone());
    let metrics = base
        .samples
        .iter()
        .filter_map(|(metric, values)| {
            let other = new.samples.get(metric)?;
            if interleaved_run.is_some() {
                let (rb, rn) = (rounds(base, metric), rounds(new, metric));
                MetricChange::paired(*metric, (values, &rb), (other, &rn))
            } else {
                MetricChange::welch(*metric, values, other)
            }
        })
        .collect();
    Pair {
        test: base.test.clone(),
        model: base.model.label.clone(),
        backend: if base.backend == new.backend {
            base.backend.clone()
        } else {
            format!("{} → {}", base.backend, new.backend)
        },
        base_row: base.row,
        new_row: new.row,
        base_status: base.status,
        new_status: new.status,
        base_error: base.error.clone(),
        new_error: new.error.clone(),
        base_invalid: base.invalid.clone(),
        new_invalid: new.invalid.clone(),
        interleaved_run,
        method_note,
        parameters,
        not_compared,
        ignored_differences,
        metrics,
    }
}

/// The row of the other run closest to `entry` among those that ran the same test (fewest differences; a
/// row without a partner before one with), and how it differs.
fn nearest(entry: &Entry, others: &[Entry], paired: &[bool], ignore: &[String]) -> Option<String> {
    others
        .iter()
        .zip(paired)
        .filter(|(c, _)| c.test.same_test(&entry.test))
        .map(|(c, paired)| (c, *paired, differences(entry, c, ignore)))
        .min_by_key(|(_, paired, d)| (d.len(), *paired))
        .map(|(c, _, d)| format!("row {} differs in {}", c.row, d.join(", ")))
}

/// Matches the rows of `new` to those of `base` (each row at most once, in file order) and compares every
/// metric both rows of a pair measured.
pub fn compare(base: &Run, new: &Run, ignore: &[String]) -> Comparison {
    let mut taken = vec![false; new.entries.len()];
    let mut base_paired = vec![false; base.entries.len()];
    let mut pairs = Vec::new();
    for (j, b) in base.entries.iter().enumerate() {
        let found = new.entries.iter().enumerate().find(|(i, n)| !taken[*i] && differences(b, n, ignore).is_empty());
        if let Some((i, n)) = found {
            taken[i] = true;
            base_paired[j] = true;
            pairs.push(pair(b, n, ignore));
        }
    }
    let unmatched = |entry: &Entry, others: &Run, paired: &[bool]| Unmatched {
        row: entry.row,
        label: entry.label(),
        status: entry.status,
        nearest: nearest(entry, &others.entries, paired, ignore),
    };
    let only_in_base =
        base.entries.iter().zip(&base_paired).filter(|(_, p)| !**p).map(|(e, _)| unmatched(e, new, &taken)).collect();
    let only_in_new =
        new.entries.iter().zip(&taken).filter(|(_, p)| !**p).map(|(e, _)| unmatched(e, base, &base_paired)).collect();
    let mut warnings: Vec<String> = base.warnings.iter().map(|w| format!("{}: {w}", base.path.display())).collect();
    if new.path != base.path {
        warnings.extend(new.warnings.iter().map(|w| format!("{}: {w}", new.path.display())));
    }
    Comparison {
        base: base.name(),
        new: new.name(),
        base_tool: base.tools(),
        new_tool: new.tools(),
        only_in_base,
        only_in_new,
        pairs,
        warnings,
    }
}

/// The `--fail-if-slower` threshold from its text (`5`, `5%`, ` 2.5 `): a per cent above 0 and at most 100. A
/// threshold of 0 is refused: "slower by more than 0 %" is any significant slowdown, which is what the verdict
/// column already says, not a gate.
pub fn parse_threshold(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches('%').trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
        _ => Err(format!("invalid --fail-if-slower '{text}': a per cent above 0 and at most 100")),
    }
}

/// The `--fail-if-slower` decision.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub fail_if_slower_percent: f64,
    pub failed: bool,
    /// How many (row, metric) hypotheses were tested, the family Holm's procedure controls.
    pub hypotheses: usize,
    /// The family-wise error: the chance that noise alone fails the gate ([`GATE_ALPHA`]).
    pub family_alpha: f64,
    /// One line per reason: a metric slower by more than the threshold (Holm's step-down over every tested
    /// metric at [`GATE_ALPHA`]), a metric whose two sides have no spread and that is observed slower by more
    /// than the threshold, or a test that ran in the base run and failed (or became invalid) in the new one.
    pub reasons: Vec<String>,
}

/// Holm's step-down procedure: with the p-values sorted, `p₍₁₎ ≤ … ≤ p₍ₘ₎`, rejects the hypotheses
/// `(1) … (k−1)` for the first `k` with `p₍ₖ₎ > α / (m − k + 1)`; returns, per input, whether it is rejected and
/// its adjusted p-value `max_{j ≤ k} min(1, (m − j + 1) p₍ⱼ₎)`.
pub fn holm(p_values: &[f64], alpha: f64) -> Vec<(bool, f64)> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut out = vec![(false, 1.0); m];
    let mut running = 0.0f64;
    let mut rejecting = true;
    for (k, &i) in order.iter().enumerate() {
        let p = if p_values[i].is_nan() { 1.0 } else { p_values[i] };
        running = running.max(((m - k) as f64 * p).min(1.0));
        rejecting = rejecting && p <= alpha / (m - k) as f64;
        out[i] = (rejecting, running);
    }
    out
}

/// Fails when some metric is slower than in the base by more than `percent` per cent, with the family-wise
/// error across every (row, metric) tested held at [`GATE_ALPHA`] by Holm's procedure, or when a test that ran
/// in the base run failed in the new run.
pub fn gate(comparisons: &[Comparison], percent: f64) -> Gate {
    let mut reasons = Vec::new();
    // (what, metric, one-sided p)
    let mut tested: Vec<(String, &MetricChange, f64)> = Vec::new();
    for comparison in comparisons {
        for pair in &comparison.pairs {
            let what = format!("{} · {} · {}", pair.test.name, pair.model, pair.backend);
            if pair.new_status == Status::Failed && pair.base_status != Status::Failed {
                reasons.push(format!(
                    "{what}: failed in {} ({})",
                    comparison.new,
                    pair.new_error.as_deref().unwrap_or("no error recorded")
                ));
                continue;
            }
            if let (Some(why), None) = (&pair.new_invalid, &pair.base_invalid) {
                reasons.push(format!("{what}: invalid in {} ({why})", comparison.new));
                continue;
            }
            for m in &pair.metrics {
                if m.verdict == Verdict::DiffersZeroVariance && m.observed_slowdown_percent() > percent {
                    reasons.push(format!(
                        "{what}: {} {:+.1} %, slower by more than {percent} % with zero variance on both sides (no test \
                         possible; the observed change)",
                        m.label, m.change_percent
                    ));
                } else if let Some(p) = m.p_slower_than(percent) {
                    tested.push((what.clone(), m, p));
                }
            }
        }
    }
    let p_values: Vec<f64> = tested.iter().map(|t| t.2).collect();
    let m = tested.len();
    for ((what, change, _), (rejected, adjusted)) in tested.iter().zip(holm(&p_values, GATE_ALPHA)) {
        if rejected {
            let test = match change.method {
                Method::Welch => "Welch",
                Method::Paired => "paired",
            };
            let ci = match (change.ci95_low_percent, change.ci95_high_percent) {
                (Some(low), Some(high)) => format!("95 % CI {low:+.1} … {high:+.1} %"),
                _ => "no bounded 95 % CI".to_string(),
            };
            reasons.push(format!(
                "{what}: {} {:+.1} % ({ci}, {test}), slower by more than {percent} %: Holm-adjusted p = {} ≤ \
                 {GATE_ALPHA} over {m} test{}",
                change.label,
                change.change_percent,
                format_p(adjusted),
                if m == 1 { "" } else { "s" }
            ));
        }
    }
    Gate {
        fail_if_slower_percent: percent,
        failed: !reasons.is_empty(),
        hypotheses: m,
        family_alpha: GATE_ALPHA,
        reasons,
    }
}

fn format_p(p: f64) -> String {
    if p < 0.0001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}
