//! "What changed": each new file (or selection) against the base, through velollm-compare: every matched
//! metric's change with its interval and verdict, the pairs that could not be compared, and the rows without a
//! partner.

use std::collections::BTreeMap;

use velollm_compare::{compare, select, Comparison, Method, Selector, Unmatched, Verdict};
use velollm_results::{Run, Status};

use super::{file_label, short_name};

/// The comparisons, in new-file order; a selection that keeps no row is said instead of its card.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparisons {
    /// `--base` selects nothing: no comparison at all.
    BaseError(String),
    Cards(Vec<Result<ComparisonCard, String>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonCard {
    pub base: String,
    pub new: String,
    pub matched: usize,
    /// How many lines each verdict has, in the order slower, faster, no change, too few samples, then the rest.
    pub tally: Vec<(&'static str, usize)>,
    /// Pairs compared round by round and the interleaved runs they came from.
    pub paired: Option<(usize, Vec<String>)>,
    /// Why a pair was compared with another method than its rows suggest, once each.
    pub method_notes: Vec<String>,
    pub changes: Vec<ChangeLine>,
    pub only_in_base: Vec<Lonely>,
    pub only_in_new: Vec<Lonely>,
}

/// A row without a partner, with the nearest candidate when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Lonely {
    pub row: usize,
    pub label: String,
    pub nearest: Option<String>,
}

fn lonely(unmatched: &[Unmatched]) -> Vec<Lonely> {
    unmatched.iter().map(|u| Lonely { row: u.row, label: u.label.clone(), nearest: u.nearest.clone() }).collect()
}

/// One line of the forest plot.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeLine {
    /// The pair's test and what tells it apart from the other pairs (model, backend, parameters that vary among
    /// the pairs that record them).
    pub who: String,
    pub change: ChangeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// A pair with no metric both rows measured: `detail` in a word, `why` with the error.
    NotCompared { detail: &'static str, why: String },
    Measured {
        metric: &'static str,
        base_mean: f64,
        new_mean: f64,
        change_percent: f64,
        interval: Option<(f64, f64)>,
        p_value: Option<f64>,
        /// `Welch`, or `paired over N rounds`.
        method: String,
        verdict: Verdict,
    },
}

/// Every comparison of the page: each new file against the base (or, with one file and both selections, one
/// side of it against the other). The parameters that tell the sides apart are left out of the matching.
pub fn comparisons(
    runs: &[Run],
    base_rows: Option<&Selector>,
    new_rows: Option<&Selector>,
    ignore: &[String],
) -> Comparisons {
    let pick = |run: &Run, selector: Option<&Selector>| match selector {
        Some(s) => select(run, s),
        None => Ok(run.clone()),
    };
    let news: Vec<&Run> = if runs.len() >= 2 { runs[1..].iter().collect() } else { vec![&runs[0]] };
    let mut ignore = ignore.to_vec();
    for name in velollm_compare::differing_names(base_rows, new_rows) {
        if !ignore.contains(&name) {
            ignore.push(name);
        }
    }
    let base = match pick(&runs[0], base_rows) {
        Ok(base) => base,
        Err(e) => return Comparisons::BaseError(e),
    };
    Comparisons::Cards(
        news.into_iter()
            .map(|new| pick(new, new_rows).map(|new| comparison_card(&compare(&base, &new, &ignore), &base, &new)))
            .collect(),
    )
}

fn comparison_card(c: &Comparison, base: &Run, new: &Run) -> ComparisonCard {
    let mut varying: Vec<String> = Vec::new();
    for pair in &c.pairs {
        for name in pair.parameters.keys() {
            // Only the pairs that record the parameter: one that does not is no difference (the module's rule).
            let values: Vec<&String> = c.pairs.iter().filter_map(|p| p.parameters.get(name)).collect();
            if values.iter().any(|v| *v != values[0]) && !varying.contains(name) {
                varying.push(name.clone());
            }
        }
    }
    let several_models = c.pairs.iter().any(|p| p.model != c.pairs[0].model);
    let several_backends = c.pairs.iter().any(|p| p.backend != c.pairs[0].backend);
    let mut changes = Vec::new();
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    for pair in &c.pairs {
        let mut parts = vec![pair.test.name.clone()];
        if several_models {
            parts.push(pair.model.clone());
        }
        if several_backends {
            parts.push(pair.backend.clone());
        }
        for p in &varying {
            if let Some(value) = pair.parameters.get(p) {
                parts.push(format!("{} {value}", short_name(p)));
            }
        }
        let who = parts.join(" · ");
        if pair.metrics.is_empty() {
            let unknown = |error: &Option<String>| error.as_deref().unwrap_or("?").to_string();
            let (detail, why) = match (pair.base_status, pair.new_status) {
                _ if pair.new_invalid.is_some() => {
                    ("invalid in new", format!("invalid in new: {}", unknown(&pair.new_invalid)))
                }
                _ if pair.base_invalid.is_some() => {
                    ("invalid in base", format!("invalid in base: {}", unknown(&pair.base_invalid)))
                }
                (Status::Failed, Status::Failed) => {
                    ("failed in both", format!("failed in both: {}", unknown(&pair.new_error)))
                }
                (_, Status::Failed) => ("failed in new", format!("failed in new: {}", unknown(&pair.new_error))),
                (Status::Failed, _) => ("failed in base", format!("failed in base: {}", unknown(&pair.base_error))),
                _ => ("nothing to compare", "no metric both rows measured".to_string()),
            };
            *tally.entry(detail).or_default() += 1;
            changes.push(ChangeLine { who, change: ChangeKind::NotCompared { detail, why } });
            continue;
        }
        for m in &pair.metrics {
            *tally.entry(m.verdict.word()).or_default() += 1;
            changes.push(ChangeLine {
                who: who.clone(),
                change: ChangeKind::Measured {
                    metric: m.label,
                    base_mean: m.base.mean,
                    new_mean: m.new.mean,
                    change_percent: m.change_percent,
                    interval: m.ci95_low_percent.zip(m.ci95_high_percent),
                    p_value: m.p_value,
                    method: match m.method {
                        Method::Paired => format!("paired over {} rounds", m.log_ratios.map_or(m.base.n, |r| r.n)),
                        Method::Welch => "Welch".to_string(),
                    },
                    verdict: m.verdict,
                },
            });
        }
    }
    let order = ["slower", "faster", "no significant change", "too few samples"];
    let mut tally: Vec<(&'static str, usize)> = tally.into_iter().collect();
    tally.sort_by_key(|(word, _)| order.iter().position(|o| o == word).unwrap_or(order.len()));
    let mut interleaved: Vec<String> = c.pairs.iter().filter_map(|p| p.interleaved_run.clone()).collect();
    interleaved.dedup();
    let paired = (!interleaved.is_empty())
        .then(|| (c.pairs.iter().filter(|p| p.interleaved_run.is_some()).count(), interleaved));
    let mut method_notes: Vec<String> = c.pairs.iter().filter_map(|p| p.method_note.clone()).collect();
    method_notes.sort();
    method_notes.dedup();
    ComparisonCard {
        base: file_label(base),
        new: file_label(new),
        matched: c.pairs.len(),
        tally,
        paired,
        method_notes,
        changes,
        only_in_base: lonely(&c.only_in_base),
        only_in_new: lonely(&c.only_in_new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tests::llama_bench_beside_velollm;
    use serde_json::json;
    use velollm_fixtures::{token_samples_at, Row};
    use velollm_results::read_str;

    #[test]
    fn llama_bench_against_velollm_matches_by_test_and_threads_only() {
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let Comparisons::Cards(cards) = comparisons(&runs, None, None, &[]) else { panic!("no base selection") };
        let card = cards[0].as_ref().expect("no new selection");
        assert_eq!((card.base.as_str(), card.new.as_str()), ("llama-bench.json", "velollm.json"));
        assert_eq!(card.matched, 3);
        let who: Vec<&str> = card.changes.iter().map(|c| c.who.as_str()).collect();
        // Only the threads tell the pairs apart: none of llama-bench's unrecorded parameters.
        assert_eq!(who, ["pp512 · threads 2", "tg128 · threads 2", "tg128 · threads 1"]);
        let ChangeKind::Measured { metric, new_mean, .. } = &card.changes[2].change else { panic!("measured") };
        assert_eq!(*metric, "tok/s");
        assert!((new_mean - (33.0 + 33.4 + 33.1) / 3.0).abs() < 1e-6);
        assert_eq!(card.tally.iter().map(|(_, n)| n).sum::<usize>(), 3);
    }

    #[test]
    fn one_interleaved_file_is_compared_side_against_side_round_by_round() {
        let mut rows = Vec::new();
        for (slot, threads) in [1u32, 2].into_iter().enumerate() {
            let rates: Vec<f64> = (0..6).map(|i| 60.0 + i as f64 + slot as f64 * 3.0).collect();
            let mut row = Row::tokens(0, 128, 0, token_samples_at(0, 128, &rates)).threads(threads).to_json();
            row["interleaved"] = json!({"run": "r-9", "combinations": 2, "slot": slot});
            rows.push(row);
        }
        let mut run = read_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        run.path = "sweep.json".into();
        let runs = [run];
        let (one, two) = (Selector::parse("n_threads=1").unwrap(), Selector::parse("n_threads=2").unwrap());
        let Comparisons::Cards(cards) = comparisons(&runs, Some(&one), Some(&two), &[]) else { panic!() };
        let card = cards[0].as_ref().unwrap();
        assert_eq!(card.new, "sweep.json [n_threads=2]");
        assert_eq!(card.paired, Some((1, vec!["r-9".to_string()])));
        let ChangeKind::Measured { method, verdict, .. } = &card.changes[0].change else { panic!() };
        assert_eq!((method.as_str(), *verdict), ("paired over 6 rounds", Verdict::Faster));
        // A selection that keeps nothing is an error in place of its card.
        let eight = Selector::parse("n_threads=8").unwrap();
        let Comparisons::Cards(cards) = comparisons(&runs, Some(&one), Some(&eight), &[]) else { panic!() };
        assert!(cards[0].as_ref().unwrap_err().contains("selects no row"), "{cards:?}");
        assert!(matches!(comparisons(&runs, Some(&eight), Some(&two), &[]), Comparisons::BaseError(_)));
    }
}
