//! `velollm compare`: what changed between two runs, and whether the change is more than noise.
//!
//! - [`read`]: velollm's JSON and JSON Lines (schema 2 and 1) and llama-bench's `-o json`/`-o jsonl` rows,
//!   read into [`Entry`]s: the test, the model, the backend, every parameter, and the raw samples;
//! - matching ([`compare`]): a row of the base run and a row of the new run are the same test when the test
//!   (text prompt and length, or llama-bench's `n_prompt`/`n_gen`/`n_depth`), the model, the backend and every
//!   parameter both rows record are the same (rules in docs/metrics.md, "Comparing runs");
//! - [`stats`]: per metric, Welch's t-test on the raw samples and Fieller's 95 % interval of the change;
//! - [`gate`]: the `--fail-if-slower` decision.
//!
//! Rendering is the CLI's (`velollm compare`) and the HTML report's; this crate only computes.

pub mod read;
pub mod stats;

use std::collections::BTreeMap;

use serde::Serialize;

pub use read::{read_file, read_str, Entry, Metric, ModelId, Run, Status, TestId, Tool};
pub use stats::{welch, Moments, Welch};

/// Significance level of every verdict (two-sided).
pub const ALPHA: f64 = 0.05;

/// Why a comparison could not start.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
}

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
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::NoChange => "no significant change",
            Verdict::TooFewSamples => "too few samples",
        }
    }
}

/// One metric of a matched pair.
#[derive(Debug, Clone, Serialize)]
pub struct MetricChange {
    pub metric: Metric,
    pub label: &'static str,
    pub higher_is_better: bool,
    pub base: Moments,
    pub new: Moments,
    /// `(mean_new / mean_base − 1) · 100`.
    pub change_percent: f64,
    pub ci95_low_percent: Option<f64>,
    pub ci95_high_percent: Option<f64>,
    pub p_value: Option<f64>,
    pub df: Option<f64>,
    pub verdict: Verdict,
}

impl MetricChange {
    fn of(metric: Metric, base: &[f64], new: &[f64]) -> Option<MetricChange> {
        let (b, n) = (Moments::of(base)?, Moments::of(new)?);
        let change_percent = (n.mean / b.mean - 1.0) * 100.0;
        let test = welch(&b, &n);
        let verdict = match test {
            None => Verdict::TooFewSamples,
            Some(w) if w.p_value >= ALPHA => Verdict::NoChange,
            Some(_) if (n.mean > b.mean) == metric.higher_is_better() => Verdict::Faster,
            Some(_) => Verdict::Slower,
        };
        let ci = test.and_then(|w| w.ci95_percent);
        Some(MetricChange {
            metric,
            label: metric.label(),
            higher_is_better: metric.higher_is_better(),
            base: b,
            new: n,
            change_percent,
            ci95_low_percent: ci.map(|c| c.0),
            ci95_high_percent: ci.map(|c| c.1),
            p_value: test.map(|w| w.p_value),
            df: test.map(|w| w.df),
            verdict,
        })
    }

    /// The smallest slowdown the 95 % interval allows, in per cent (positive: slower for sure by at least that
    /// much); absent when the interval is unbounded or there is none.
    pub fn certain_slowdown_percent(&self) -> Option<f64> {
        let (low, high) = (self.ci95_low_percent?, self.ci95_high_percent?);
        Some(if self.higher_is_better { -high } else { low })
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
    let metrics = base
        .samples
        .iter()
        .filter_map(|(metric, values)| MetricChange::of(*metric, values, new.samples.get(metric)?))
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
    warnings.extend(new.warnings.iter().map(|w| format!("{}: {w}", new.path.display())));
    Comparison {
        base: base.path.display().to_string(),
        new: new.path.display().to_string(),
        base_tool: base.tools(),
        new_tool: new.tools(),
        only_in_base,
        only_in_new,
        pairs,
        warnings,
    }
}

/// The `--fail-if-slower` decision.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub fail_if_slower_percent: f64,
    pub failed: bool,
    /// One line per reason: a metric slower by more than the threshold with 95 % confidence, or a test that
    /// ran in the base run and failed in the new one.
    pub reasons: Vec<String>,
}

/// Fails when some metric is slower by more than `percent` with 95 % confidence (the whole confidence
/// interval of the change lies beyond it), or when a test that ran in the base run failed in the new run.
pub fn gate(comparisons: &[Comparison], percent: f64) -> Gate {
    let mut reasons = Vec::new();
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
            for m in &pair.metrics {
                if let Some(slowdown) = m.certain_slowdown_percent().filter(|s| *s > percent) {
                    reasons.push(format!(
                        "{what}: {} {:+.1} % (95 % CI {:+.1} … {:+.1} %), slower by at least {slowdown:.1} % > {percent} %",
                        m.label,
                        m.change_percent,
                        m.ci95_low_percent.unwrap_or(f64::NAN),
                        m.ci95_high_percent.unwrap_or(f64::NAN),
                    ));
                }
            }
        }
    }
    Gate { fail_if_slower_percent: percent, failed: !reasons.is_empty(), reasons }
}
