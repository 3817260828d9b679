//! Interleaved runs: rows that carry `"interleaved": {"run", "combinations", "slot"}` and measured their i-th
//! repetitions in the same round i are compared round by round (a paired t-test on log-ratios), so drift between
//! rounds cannot pass for a difference; the two sides can come from one file (`select`). And the A/A simulation:
//! how often Welch on blocks and the paired test on interleaved rounds call a difference between two identical
//! configurations on a drifting machine.

use serde_json::{json, Value};
use velollm_compare::{
    compare, differing_names, gate, read_str, select, stats, Method, Moments, Run, Selector, Verdict, ALPHA,
};
use velollm_fixtures::{text_samples_at, token_samples_at, Row};

fn tg(rates: &[f64], threads: u32) -> Value {
    Row::tokens(0, 128, 0, token_samples_at(0, 128, rates)).threads(threads).to_json()
}

/// A tg128 row whose `samples_ts` are exactly `rates` (not through the fixture's nanoseconds).
fn tg_exact(rates: &[f64], threads: u32) -> Value {
    let mut row = tg(rates, threads);
    row["samples_ts"] = json!(rates);
    row
}

fn interleaved(mut row: Value, run: &str, slot: u64) -> Value {
    row["interleaved"] = json!({"run": run, "combinations": 2, "slot": slot});
    row
}

fn run_of(rows: &[Value]) -> Run {
    read_str(&serde_json::to_string(rows).unwrap()).unwrap()
}

/// The machine's speed in each of 6 rounds: ±15 % swings, far more than the 3 % the new setting gains.
const DRIFT: [f64; 6] = [1.0, 0.85, 1.12, 0.9, 1.15, 0.95];
const JITTER: [f64; 6] = [1.002, 0.998, 1.001, 0.999, 1.003, 0.997];

/// One interleaved sweep: n_threads 1 (slot 0) and n_threads 2 (slot 1), the latter `gain` times faster, both
/// through the same drift, round by round.
fn sweep(gain: f64) -> Run {
    let one: Vec<f64> = DRIFT.iter().zip(JITTER).map(|(d, j)| 60.0 * d * j).collect();
    let two: Vec<f64> = DRIFT.iter().zip(JITTER.iter().rev()).map(|(d, j)| 60.0 * gain * d * j).collect();
    run_of(&[interleaved(tg(&one, 1), "r-1", 0), interleaved(tg(&two, 2), "r-1", 1)])
}

fn sides(run: &Run, base: &str, new: &str) -> (Run, Run, Vec<String>) {
    let (b, n) = (Selector::parse(base).unwrap(), Selector::parse(new).unwrap());
    let ignore = differing_names(Some(&b), Some(&n));
    (select(run, &b).unwrap(), select(run, &n).unwrap(), ignore)
}

#[test]
fn the_reader_takes_the_interleaved_field_as_the_contract_writes_it() {
    let run = sweep(1.0);
    let e = &run.entries[1];
    let i = e.interleaved.as_ref().unwrap();
    assert_eq!((i.run.as_str(), i.combinations, i.slot), ("r-1", 2, 1));
    assert_eq!(e.rounds[&velollm_compare::Metric::TokensPerSecond], [0, 1, 2, 3, 4, 5]);
    // Absent: not interleaved. Present without a field the contract writes: an error that names the field
    // (read as not interleaved, the row would be compared by Welch's test without a word).
    let plain = run_of(&[tg(&[60.0, 61.0], 1)]);
    assert!(plain.entries[0].interleaved.is_none());
    let mut broken = tg(&[60.0, 61.0], 1);
    broken["interleaved"] = json!({"run": "x"});
    let err = read_str(&serde_json::to_string(&[broken]).unwrap()).unwrap_err();
    assert_eq!(err, "row 1: no `interleaved.combinations` field");
}

#[test]
fn one_file_two_combinations_paired_sees_through_the_drift() {
    let run = sweep(1.03);
    let (base, new, ignore) = sides(&run, "n_threads=1", "n_threads=2");
    assert_eq!((base.entries.len(), new.entries.len()), (1, 1));
    assert_eq!(base.name(), " [n_threads=1]", "the file's path (none here) and the selection");
    let c = compare(&base, &new, &ignore);
    assert_eq!(c.pairs.len(), 1, "{:?}", c.only_in_base);
    let pair = &c.pairs[0];
    assert_eq!(pair.interleaved_run.as_deref(), Some("r-1"));
    assert_eq!(pair.method_note, None);
    assert_eq!(pair.ignored_differences, ["n_threads: 1 → 2"]);
    let m = &pair.metrics[0];
    assert_eq!(m.method, Method::Paired);
    assert_eq!(m.verdict, Verdict::Faster, "{m:?}");
    assert!((m.change_percent - 3.0).abs() < 0.3, "{}", m.change_percent);
    assert!(m.ci95_low_percent.unwrap() > 2.0 && m.ci95_high_percent.unwrap() < 4.0, "{m:?}");
    assert_eq!(m.df, Some(5.0));
    // The same rows taken as independent samples: the drift (±15 %) swamps the 3 % gain.
    let welch = velollm_compare::welch(&m.base, &m.new).unwrap();
    assert!(welch.p_value > ALPHA, "Welch on drifting rounds: p = {}", welch.p_value);
    // The gate tests the paired change: 3 % faster is not slower by more than 1 %.
    assert!(!gate(std::slice::from_ref(&c), 1.0).failed);
    // And the other way round, 3 % slower by more than 1 %: the gate fails, on the paired test.
    let c = compare(&new, &base, &ignore);
    let g = gate(&[c], 1.0);
    assert!(g.failed && g.reasons[0].contains("paired"), "{:?}", g.reasons);
}

#[test]
fn identical_combinations_are_no_change() {
    let run = run_of(&[
        interleaved(tg(&DRIFT.map(|d| 60.0 * d), 1), "r-2", 0),
        interleaved(tg(&DRIFT.map(|d| 60.0 * d), 2), "r-2", 1),
    ]);
    let (base, new, ignore) = sides(&run, "n_threads=1", "n_threads=2");
    let m = &compare(&base, &new, &ignore).pairs[0].metrics[0];
    assert_eq!((m.method, m.verdict, m.p_value), (Method::Paired, Verdict::NoChange, None));
    // A constant ratio in every round and no spread: no test, the observed change.
    let run = run_of(&[
        interleaved(tg_exact(&DRIFT.map(|d| 60.0 * d), 1), "r-3", 0),
        interleaved(tg_exact(&DRIFT.map(|d| 54.0 * d), 2), "r-3", 1),
    ]);
    let (base, new, ignore) = sides(&run, "n_threads=1", "n_threads=2");
    let c = compare(&base, &new, &ignore);
    let m = &c.pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::DiffersZeroVariance, "{m:?}");
    assert!((m.change_percent + 10.0).abs() < 1e-6);
    assert!(gate(&[c], 5.0).failed);
}

#[test]
fn rows_from_different_runs_fall_back_to_welch_and_say_so() {
    let a = run_of(&[interleaved(tg(&[60.0, 61.0, 59.0], 1), "r-a", 0)]);
    let b = run_of(&[interleaved(tg(&[60.0, 61.0, 59.0], 1), "r-b", 0)]);
    let plain = run_of(&[tg(&[60.0, 61.0, 59.0], 1)]);
    let c = compare(&a, &b, &[]);
    assert_eq!(c.pairs[0].metrics[0].method, Method::Welch);
    assert!(c.pairs[0].method_note.as_deref().unwrap().contains("different interleaved runs (r-a and r-b)"));
    let c = compare(&plain, &b, &[]);
    assert_eq!(c.pairs[0].method_note.as_deref(), Some("Welch's test: only the new row comes from an interleaved run"));
    let c = compare(&plain, &plain, &[]);
    assert_eq!((c.pairs[0].metrics[0].method, c.pairs[0].method_note.as_ref()), (Method::Welch, None));
}

#[test]
fn rounds_pair_by_repetition_index() {
    // The new row stopped after 3 rounds (incomplete): the first 3 rounds are compared.
    let run = run_of(&[
        interleaved(tg(&[60.0, 50.0, 70.0, 65.0, 55.0], 1), "r-4", 0),
        interleaved(tg(&[63.0, 52.0, 74.0], 2), "r-4", 1),
    ]);
    let (base, new, ignore) = sides(&run, "n_threads=1", "n_threads=2");
    let m = &compare(&base, &new, &ignore).pairs[0].metrics[0];
    assert_eq!((m.base.n, m.new.n, m.df), (3, 3, Some(2.0)));
    // Text rows: a null in one round leaves that round out of that metric only.
    let text = |rates: &[f64], slot: u64, threads: u32| {
        let mut row = Row::text("short", "Hi", 20, text_samples_at(rates, 20, 30.0)).threads(threads).to_json();
        if slot == 1 {
            row["samples"][0]["metrics"]["prompt_tokens_per_second"] = Value::Null;
        }
        interleaved(row, "r-5", slot)
    };
    let run = run_of(&[text(&[50.0, 40.0, 55.0, 45.0], 0, 1), text(&[52.0, 41.0, 57.0, 47.0], 1, 2)]);
    let (base, new, ignore) = sides(&run, "n_threads=1", "n_threads=2");
    let pair = &compare(&base, &new, &ignore).pairs[0];
    let n: Vec<(&str, usize)> = pair.metrics.iter().map(|m| (m.label, m.base.n)).collect();
    assert_eq!(n, [("tok/s", 4), ("TTFT ms", 4), ("prompt tok/s", 3), ("total ms", 4)]);
    assert!(pair.metrics.iter().all(|m| m.method == Method::Paired));
    // A single common round: too few.
    let run = run_of(&[interleaved(tg(&[60.0, 50.0], 1), "r-6", 0), interleaved(tg(&[63.0], 2), "r-6", 1)]);
    let (base, new, ignore) = sides(&run, "n_threads=1", "n_threads=2");
    assert_eq!(compare(&base, &new, &ignore).pairs[0].metrics[0].verdict, Verdict::TooFewSamples);
}

#[test]
fn selections_are_checked() {
    let run = sweep(1.0);
    let err = |text: &str| match Selector::parse(text) {
        Err(e) => e,
        Ok(s) => select(&run, &s).unwrap_err(),
    };
    assert!(err("n_threads").contains("'n_threads' is not name=value"));
    assert!(err("").contains("an empty selection"));
    assert!(err("threads=1").contains("'threads' is not recorded by the rows"), "{}", err("threads=1"));
    let e = err("n_threads=3");
    assert!(e.contains("'n_threads=3' selects no row") && e.contains("n_threads: 1, 2"), "{e}");
    // Spellings as compare normalises them, and several terms.
    let s = Selector::parse(" N_Threads = 2 , backend=LLAMACPP, flash_attn=auto, test=TG128").unwrap();
    assert_eq!(select(&run, &s).unwrap().entries.len(), 1);
    assert_eq!(select(&run, &Selector::parse("backend=llamacpp").unwrap()).unwrap().entries.len(), 2);
    // Only what both sides select with different values is left out of the matching.
    let (one, two) =
        (Selector::parse("n_threads=1,backend=llamacpp").unwrap(), Selector::parse("n_threads=2").unwrap());
    assert_eq!(differing_names(Some(&one), Some(&two)), ["n_threads"]);
    assert!(differing_names(Some(&one), None).is_empty());
}

/// SplitMix64 and Box–Muller: standard normal draws from a seed.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn draw(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// How often each method calls a difference between two identical configurations.
struct Rates {
    welch_blocks: f64,
    welch_interleaved: f64,
    paired_interleaved: f64,
}

/// `trials` A/A experiments: configurations A and B are the same (rate 60), `reps` repetitions each, 1 %
/// measurement noise; the machine's speed drifts as a random walk in log space, `drift` per measurement, plus
/// `trend` per measurement (a steady slow-down). Blocks: A's repetitions, then B's. Interleaved: A, B, A, B, …
/// (round i = A's and B's i-th repetitions).
fn aa(trials: usize, reps: usize, drift: f64, trend: f64, seed: u64) -> Rates {
    let mut rng = Normal(seed);
    let (mut welch_blocks, mut welch_interleaved, mut paired_interleaved) = (0, 0, 0);
    for _ in 0..trials {
        // The machine's log-speed at each of the 2·reps measurement slots.
        let mut level = 0.0;
        let speed: Vec<f64> = (0..2 * reps)
            .map(|t| {
                if t > 0 {
                    level += drift * rng.draw() + trend;
                }
                level
            })
            .collect();
        let mut measure = |slot: usize| 60.0 * speed[slot].exp() * (1.0 + 0.01 * rng.draw());
        let block_a: Vec<f64> = (0..reps).map(&mut measure).collect();
        let block_b: Vec<f64> = (reps..2 * reps).map(&mut measure).collect();
        let round_a: Vec<f64> = (0..reps).map(|i| measure(2 * i)).collect();
        let round_b: Vec<f64> = (0..reps).map(|i| measure(2 * i + 1)).collect();
        let significant = |a: &[f64], b: &[f64]| {
            velollm_compare::welch(&Moments::of(a).unwrap(), &Moments::of(b).unwrap())
                .is_some_and(|w| w.p_value < ALPHA)
        };
        welch_blocks += usize::from(significant(&block_a, &block_b));
        welch_interleaved += usize::from(significant(&round_a, &round_b));
        paired_interleaved += usize::from(stats::paired(&round_a, &round_b).is_some_and(|p| p.p_value < ALPHA));
    }
    let rate = |n: usize| n as f64 / trials as f64;
    Rates {
        welch_blocks: rate(welch_blocks),
        welch_interleaved: rate(welch_interleaved),
        paired_interleaved: rate(paired_interleaved),
    }
}

/// The A/A simulation docs/metrics.md reports ("Interleaving and the paired test"): 4,000 seeded trials of
/// 5 repetitions per configuration, 1 % noise, a random-walk drift of 1 % per measurement.
#[test]
fn a_a_simulation_paired_on_interleaved_rounds_errs_about_five_per_cent() {
    let (trials, reps) = (4000, 5);
    let r = aa(trials, reps, 0.01, 0.0, 2026);
    eprintln!(
        "A/A, random-walk drift 1 %/measurement, {trials} trials × {reps} reps: Welch on blocks {:.1} %, Welch on \
         interleaved rounds {:.1} %, paired on interleaved rounds {:.1} %",
        r.welch_blocks * 100.0,
        r.welch_interleaved * 100.0,
        r.paired_interleaved * 100.0
    );
    assert!(r.paired_interleaved <= 0.08 && r.paired_interleaved >= 0.03, "paired: {}", r.paired_interleaved);
    assert!(r.welch_blocks >= 0.2, "Welch on blocks should be fooled by the drift: {}", r.welch_blocks);
    // Without drift every method holds its 5 %.
    let quiet = aa(trials, reps, 0.0, 0.0, 7);
    eprintln!(
        "A/A, no drift: Welch on blocks {:.1} %, Welch interleaved {:.1} %, paired {:.1} %",
        quiet.welch_blocks * 100.0,
        quiet.welch_interleaved * 100.0,
        quiet.paired_interleaved * 100.0
    );
    for rate in [quiet.welch_blocks, quiet.welch_interleaved, quiet.paired_interleaved] {
        assert!((0.03..=0.075).contains(&rate), "{rate}");
    }
    // What interleaving in a fixed order (A before B in every round) does not remove: a steady trend. A
    // slow-down of 0.5 % per measurement makes B 0.5 % slower than A in every round.
    let trend = aa(trials, reps, 0.0, -0.005, 11);
    eprintln!(
        "A/A, steady trend −0.5 %/measurement: Welch on blocks {:.1} %, Welch interleaved {:.1} %, paired {:.1} %",
        trend.welch_blocks * 100.0,
        trend.welch_interleaved * 100.0,
        trend.paired_interleaved * 100.0
    );
}
