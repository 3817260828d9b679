//! Hostile input: values that are not positive finite numbers, values at the ends of f64's range, empty and
//! single-sample rows, zero variance, and the `--fail-if-slower` gate's threshold and family-wise error.
//! Nothing may panic, and every number that comes out must be finite.

use serde_json::{json, Value};
use velollm_compare::{compare, gate, holm, parse_threshold, read_str, Comparison, Metric, Run, Verdict};
use velollm_fixtures::{text_samples_at, token_samples_at, Row};

fn tg_json(rates: &[f64]) -> Value {
    Row::tokens(0, 128, 0, token_samples_at(0, 128, rates)).to_json()
}

/// A tg128 row whose `samples_ts` are exactly `values` (any JSON).
fn tg_with(values: Vec<Value>) -> Value {
    let mut row = tg_json(&[60.0, 61.0, 59.0]);
    row["samples_ts"] = Value::Array(values);
    row
}

fn run_of(rows: &[Value]) -> Run {
    read_str(&serde_json::to_string(rows).unwrap()).unwrap()
}

/// JSON numbers and non-numbers no measured rate or time can be.
fn hostile_json() -> Vec<Value> {
    vec![
        json!(0.0),
        json!(0),
        json!(-0.0),
        json!(-1.0),
        json!(-1e308),
        json!(null),
        json!("61.0"),
        json!(true),
        json!([1.0]),
        json!({"v": 1.0}),
    ]
}

/// Positive finite, but at the ends of the range.
fn extreme() -> Vec<f64> {
    vec![1e308, f64::MAX, 1e-308, f64::MIN_POSITIVE, 5e-324, 1e300, 1e-300, 1.0]
}

fn assert_finite(c: &Comparison) {
    for pair in &c.pairs {
        for m in &pair.metrics {
            let numbers = [Some(m.change_percent), m.ci95_low_percent, m.ci95_high_percent, m.p_value, m.df];
            assert!(numbers.iter().flatten().all(|x| x.is_finite()), "{m:?}");
            if let Some(p) = m.p_value {
                assert!((0.0..=1.0).contains(&p));
            }
        }
    }
    // Everything serialises (serde_json would turn a NaN into null silently: check the text too).
    let text = serde_json::to_string(c).unwrap();
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
}

#[test]
fn a_value_that_is_not_a_positive_finite_number_makes_the_row_invalid() {
    let good = tg_json(&[60.0, 61.0, 59.0]);
    for bad in hostile_json() {
        for position in 0..3 {
            let mut values = vec![json!(60.0), json!(61.0), json!(59.0)];
            values[position] = bad.clone();
            let run = run_of(&[good.clone(), tg_with(values)]);
            let e = &run.entries[1];
            let why = e.invalid.as_deref().unwrap_or_else(|| panic!("{bad} at {position} was accepted"));
            assert!(why.contains(&format!("tok/s of repetition {}", position + 1)), "{why}");
            assert!(e.samples.is_empty(), "an invalid row enters no statistic");
            assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
            let warning = &run.warnings[0];
            assert!(
                warning.starts_with("row 2 (tg128 · SmolLM2 135M Instruct · llamacpp): tok/s of repetition"),
                "{warning}"
            );
            assert!(warning.ends_with("the row is invalid and left out of every statistic") && !warning.contains('\n'));
            // Compared either way: the pair is there, with nothing to test; no panic, nothing non-finite.
            let base = run_of(std::slice::from_ref(&good));
            let new = run_of(&[tg_with(vec![json!(60.0), bad.clone(), json!(61.0)])]);
            for (b, n) in [(&base, &new), (&new, &base), (&new, &new)] {
                let c = compare(b, n, &[]);
                assert_eq!(c.pairs.len(), 1);
                assert!(c.pairs[0].metrics.is_empty());
                assert_finite(&c);
            }
            // An invalid new row fails a gate (it cannot show that nothing got slower); an invalid base does not.
            let g = gate(&[compare(&base, &new, &[])], 5.0);
            assert!(g.failed && g.reasons[0].contains("invalid in"), "{:?}", g.reasons);
            assert!(!gate(&[compare(&new, &base, &[])], 5.0).failed);
        }
    }
}

#[test]
fn text_rows_check_every_metric_and_skip_only_nulls() {
    let mut row = Row::text("short", "Hi", 20, text_samples_at(&[50.0, 51.0, 52.0], 20, 30.0)).to_json();
    row["samples"][1]["metrics"]["prompt_tokens_per_second"] = Value::Null;
    let run = run_of(&[row.clone()]);
    assert!(run.entries[0].invalid.is_none(), "{:?}", run.entries[0].invalid);
    assert_eq!(run.entries[0].rounds[&Metric::PromptTokensPerSecond], [0, 2], "a null is skipped, its round kept");
    for bad in [json!(0.0), json!(-3.0), json!("x")] {
        let mut row = row.clone();
        row["samples"][2]["metrics"]["ttft_ms"] = bad.clone();
        let run = run_of(&[row]);
        let why = run.entries[0].invalid.as_deref().unwrap();
        assert!(why.starts_with("TTFT ms of repetition 3 is"), "{bad}: {why}");
    }
}

#[test]
fn numbers_beyond_f64_are_a_one_line_error_not_a_panic() {
    for text in ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"] {
        let row = serde_json::to_string(&tg_json(&[60.0, 61.0])).unwrap();
        let row = row.replacen("\"samples_ts\":[", &format!("\"samples_ts\":[{text},"), 1);
        let err = read_str(&format!("[{row}]")).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn extreme_but_finite_values_never_panic() {
    let mut values: Vec<Vec<f64>> = vec![vec![60.0], vec![60.0, 60.0], vec![59.0, 60.0, 61.0]];
    for x in extreme() {
        values.push(vec![x]);
        values.push(vec![x, x]);
        values.push(vec![x, x, x * 0.5]);
        values.push(vec![x, 60.0, 61.0]);
    }
    let rows: Vec<Value> = values.iter().map(|v| tg_with(v.iter().map(|x| json!(x)).collect())).collect();
    for a in &rows {
        for b in &rows {
            let (base, new) = (run_of(std::slice::from_ref(a)), run_of(std::slice::from_ref(b)));
            for e in base.entries.iter().chain(&new.entries) {
                // Values whose sum overflows are invalid (and half of the smallest subnormal is 0); the others
                // are read as they are.
                if let Some(why) = &e.invalid {
                    assert!(why.contains("too large to average") || why.contains("is 0.0, not"), "{why}");
                }
            }
            let c = compare(&base, &new, &[]);
            assert_finite(&c);
            for pct in [0.001, 5.0, 100.0] {
                let g = gate(std::slice::from_ref(&c), pct);
                assert!(g.reasons.iter().all(|r| !r.contains("NaN") && !r.contains("inf")), "{:?}", g.reasons);
            }
        }
    }
}

#[test]
fn empty_and_single_sample_rows() {
    let empty = run_of(&[tg_with(vec![])]);
    let one = run_of(&[tg_with(vec![json!(60.0)])]);
    let three = run_of(&[tg_json(&[60.0, 61.0, 59.0])]);
    // An empty samples_ts falls back to the per-iteration rates, which this row has.
    assert_eq!(empty.entries[0].samples[&Metric::TokensPerSecond].len(), 3);
    let c = compare(&one, &three, &[]);
    assert_eq!(c.pairs[0].metrics[0].verdict, Verdict::TooFewSamples);
    assert_eq!(c.pairs[0].metrics[0].p_value, None);
    assert!(!gate(&[c], 1.0).failed);
    let failed = run_of(&[Row::tokens(0, 128, 0, vec![]).failed("out of memory").to_json()]);
    let c = compare(&failed, &failed, &[]);
    assert!(c.pairs[0].metrics.is_empty());
    assert!(!gate(&[c], 5.0).failed, "failed in both: not a regression");
}

#[test]
fn zero_variance_gives_an_honest_verdict() {
    let flat = |v: f64| run_of(&[tg_with(vec![json!(v), json!(v), json!(v)])]);
    // Identical on both sides: no change.
    let m = &compare(&flat(60.0), &flat(60.0), &[]).pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::NoChange);
    assert_eq!((m.p_value, m.change_percent), (None, 0.0));
    // Different, without any spread: no p = 0, but the observed change, said to be untested.
    let c = compare(&flat(60.0), &flat(54.0), &[]);
    let m = &c.pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::DiffersZeroVariance);
    assert_eq!(m.verdict.word(), "differs, zero variance: no statistical test possible");
    assert_eq!((m.p_value, m.ci95_low_percent), (None, None));
    assert!((m.change_percent + 10.0).abs() < 1e-9);
    // The gate goes by the observed change (there is nothing else), and says so.
    let g = gate(std::slice::from_ref(&c), 5.0);
    assert!(g.failed && g.reasons[0].contains("zero variance"), "{:?}", g.reasons);
    assert_eq!(g.hypotheses, 0);
    assert!(!gate(&[c], 15.0).failed);
    // Values equal to within rounding are no spread either (no t of 10¹⁵).
    let rounded = run_of(&[tg_with(vec![json!(0.1 + 0.2), json!(0.3), json!(0.3)])]);
    let m = &compare(&rounded, &flat(0.4), &[]).pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::DiffersZeroVariance);
    // One side without spread: Welch's test works with the other side's.
    let spread = run_of(&[tg_json(&[53.0, 54.0, 55.0, 54.5, 53.5])]);
    let m = &compare(&flat(60.0), &spread, &[]).pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::Slower);
    assert!((m.df.unwrap() - 4.0).abs() < 1e-6, "the spread side's n − 1: {:?}", m.df);
    assert!(m.p_value.unwrap() < 0.001);
    let m = &compare(&spread, &flat(54.0), &[]).pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::NoChange);
}

#[test]
fn the_threshold_must_be_a_per_cent_above_zero() {
    for bad in ["0", "0%", "-0", "-3", "NaN", "nan", "inf", "-inf", "", "abc", "101", "1e400", "0.0"] {
        let err = parse_threshold(bad).unwrap_err();
        assert!(err.starts_with(&format!("invalid --fail-if-slower '{bad}'")) && !err.contains('\n'), "{err}");
    }
    for (good, value) in [("5", 5.0), ("5%", 5.0), (" 2.5 ", 2.5), ("100", 100.0), ("0.1 %", 0.1)] {
        assert_eq!(parse_threshold(good), Ok(value));
    }
}

#[test]
fn holm_by_hand() {
    // m = 4 at α = 0.05: sorted 0.01 ≤ 0.05/4, 0.015 ≤ 0.05/3, 0.03 > 0.05/2: the first two only.
    let out = holm(&[0.03, 0.01, 0.5, 0.015], 0.05);
    let rejected: Vec<bool> = out.iter().map(|o| o.0).collect();
    assert_eq!(rejected, [false, true, false, true]);
    let adjusted: Vec<f64> = out.iter().map(|o| o.1).collect();
    for (a, b) in adjusted.iter().zip([0.06, 0.04, 0.5, 0.045]) {
        assert!((a - b).abs() < 1e-12, "{adjusted:?}");
    }
    // Step-down: once one is kept, every larger p is kept, and adjusted p-values never decrease.
    let out = holm(&[0.001, 0.02, 0.04, f64::NAN], 0.05);
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), [true, false, false, false]);
    assert!(holm(&[], 0.05).is_empty());
}

/// `n` values around `mean` with relative spread `cv`, deterministic (SplitMix64 and Box–Muller).
fn normal(seed: &mut u64, mean: f64, cv: f64, n: usize) -> Vec<f64> {
    let mut next = || {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            mean * (1.0 + cv * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos())
        })
        .collect()
}

/// The least a velollm tg128 row needs to be read and compared (every field the reader requires of a schema-2
/// row; quicker to build than a whole fixture row).
fn small_tg(rates: &[f64], threads: u32) -> Value {
    json!({
        "schema_version": 2,
        "config": {"name": "tg128", "model": "m.gguf", "prompt": "", "max_tokens": 128},
        "backend": "llamacpp", "status": "ok", "samples": [],
        "test": {"kind": "tg", "n_prompt": 0, "n_gen": 128, "n_depth": 0},
        "samples_ts": rates,
        "model": {"path": "m.gguf", "name": "M", "sha256": "aa"},
        "parameters": {"requested": {"n_threads": threads}}
    })
}

#[test]
fn the_gate_holds_its_family_wise_error_across_many_rows() {
    // 20 rows of noise only (the new run is the base's distribution), a threshold just above 0 (the null
    // hypothesis at its boundary, where a test errs most): the gate may fail at most 2.5 % of the time; the
    // old per-metric rule ("its whole interval lies beyond the threshold") failed 1 − 0.975²⁰ ≈ 40 %.
    let (trials, rows, pct) = (300, 20, 0.001);
    let mut seed = 42u64;
    let (mut holm_failed, mut per_metric_failed) = (0, 0);
    for _ in 0..trials {
        let (mut base, mut new) = (Vec::new(), Vec::new());
        for r in 0..rows {
            base.push(small_tg(&normal(&mut seed, 60.0, 0.02, 5), r + 1));
            new.push(small_tg(&normal(&mut seed, 60.0, 0.02, 5), r + 1));
        }
        let c = compare(&run_of(&base), &run_of(&new), &[]);
        assert_eq!(c.pairs.len(), rows as usize);
        let per_metric = c.pairs.iter().any(|p| p.metrics[0].certain_slowdown_percent().is_some_and(|s| s > pct));
        per_metric_failed += usize::from(per_metric);
        let g = gate(&[c], pct);
        assert_eq!(g.hypotheses, rows as usize);
        holm_failed += usize::from(g.failed);
    }
    let (holm_rate, per_metric_rate) = (holm_failed as f64 / trials as f64, per_metric_failed as f64 / trials as f64);
    eprintln!(
        "noise fails the gate: Holm {holm_rate:.3}, per metric {per_metric_rate:.3} ({trials} trials, {rows} rows)"
    );
    assert!(holm_rate <= 0.045, "Holm: {holm_rate}");
    assert!(per_metric_rate >= 0.25, "the uncorrected rule should fail often: {per_metric_rate}");
}

#[test]
fn with_one_hypothesis_the_gate_is_the_interval_rule() {
    let mut seed = 7u64;
    for k in 0..200 {
        let shift = 1.0 - 0.0005 * k as f64;
        let base = run_of(&[tg_json(&normal(&mut seed, 60.0, 0.02, 5))]);
        let new = run_of(&[tg_json(&normal(&mut seed, 60.0 * shift, 0.02, 5))]);
        let c = compare(&base, &new, &[]);
        let m = &c.pairs[0].metrics[0];
        let by_interval = m.certain_slowdown_percent().is_some_and(|s| s > 5.0);
        assert_eq!(gate(std::slice::from_ref(&c), 5.0).failed, by_interval, "{m:?}");
    }
}
