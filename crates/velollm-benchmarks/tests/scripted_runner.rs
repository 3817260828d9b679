//! The runner driven through the scripted engine of velollm-fixtures: warm-up, fixed and automatic
//! repetitions, errors and Ctrl-C, rows in progress, and `--interleave` — everything but the engine.

use std::time::Duration;

use velollm_benchmarks::{
    run_plan_with, AutoRepetitions, Observer, Plan, Position, PreparedModels, Repetitions, RowInProgress, RunOptions,
    RunOutcome, SweepSpec, TestCase,
};
use velollm_core::{BenchmarkConfig, BenchmarkResult, RowStatus, StopRule, TokenTest};
use velollm_fixtures::scripted::{Reply, Scripted};

fn text(name: &str, iterations: u32, max_tokens: u32) -> TestCase {
    TestCase::Text(BenchmarkConfig {
        name: name.into(),
        model: "m".into(),
        prompt: "Hello".into(),
        max_tokens,
        iterations,
    })
}

fn tg(n_gen: u32, repetitions: u32) -> TestCase {
    TestCase::Tokens { test: TokenTest::single(0, n_gen, 0), repetitions }
}

fn plan(tests: Vec<TestCase>, threads: &[u32]) -> Plan {
    Plan::new(SweepSpec { n_threads: threads.to_vec(), ..SweepSpec::single("m", "scripted", 1, tests) }).unwrap()
}

fn options(warmup: u32, repetitions: Repetitions) -> RunOptions {
    RunOptions { warmup_iterations: warmup, repetitions, telemetry: false, ..RunOptions::default() }
}

/// Keeps what the runner says: the rows, and each row in progress as it stood before every repetition.
#[derive(Default)]
struct Recorder {
    rows: Vec<BenchmarkResult>,
    handles: Vec<RowInProgress>,
    /// Before each timed repetition k: the repetitions the rows in progress held (k − 1 for the current one).
    kept_before: Vec<(u32, usize)>,
}

impl Observer for Recorder {
    fn row_in_progress(&mut self, row: &RowInProgress) {
        self.handles.push(row.clone());
    }
    fn iteration_started(&mut self, _at: &Position<'_>, iteration: u32, warmup: bool) {
        if let (false, Some(handle)) = (warmup, self.handles.last()) {
            let kept = handle.snapshot().map_or(0, |row| row.samples.len());
            self.kept_before.push((iteration, kept));
        }
    }
    fn row_finished(&mut self, row: &BenchmarkResult) {
        self.rows.push(row.clone());
    }
}

fn run(plan: &Plan, options: &RunOptions, script: &Scripted) -> (RunOutcome, Recorder) {
    let mut recorder = Recorder::default();
    let script = script.clone();
    let factory = move |name: &str| (name == "scripted").then(|| script.backend());
    let outcome = run_plan_with(plan, &PreparedModels::default(), options, &mut recorder, Some(&factory)).unwrap();
    (outcome, recorder)
}

fn rates(row: &BenchmarkResult) -> Vec<f64> {
    row.samples.iter().map(|s| (s.metrics.tokens_per_second.unwrap() * 1e3).round() / 1e3).collect()
}

#[test]
fn warm_up_runs_first_and_is_not_timed() {
    let script =
        Scripted::new([Reply::rate(1.0), Reply::rate(2.0), Reply::rate(100.0), Reply::rate(101.0), Reply::rate(102.0)]);
    let (outcome, rec) = run(&plan(vec![text("t", 3, 8)], &[1]), &options(2, Repetitions::Fixed), &script);
    assert!(!outcome.interrupted);
    let row = &outcome.rows[0];
    assert_eq!((row.status, row.iterations_completed), (RowStatus::Ok, 3));
    assert_eq!(rates(row), [100.0, 101.0, 102.0], "the warm-ups' samples are not in the row");
    assert_eq!(script.calls().len(), 5, "two warm-ups, three timed");
    assert_eq!(row.parameters.warmup_iterations, 2);
    assert_eq!(row.repetitions.stopped_because, StopRule::Count);
    assert_eq!(rec.rows.len(), 1);
    // A token test's warm-up is llama-bench's: one generated token.
    let script = Scripted::new([]);
    let (outcome, _) = run(&plan(vec![tg(16, 4)], &[1]), &options(1, Repetitions::Fixed), &script);
    let n_gen: Vec<u32> = script.calls().iter().map(|c| c.n_gen).collect();
    assert_eq!(n_gen, [1, 16, 16, 16, 16]);
    assert_eq!(outcome.rows[0].samples_ts.len(), 4);
}

#[test]
fn the_row_in_progress_holds_every_finished_repetition() {
    let script = Scripted::new([]);
    let (_, rec) = run(&plan(vec![tg(8, 5)], &[1]), &options(1, Repetitions::Fixed), &script);
    assert_eq!(rec.kept_before, [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]);
    let handle = &rec.handles[0];
    assert!(handle.is_finished());
    assert_eq!(handle.snapshot().as_ref(), Some(&rec.rows[0]), "once finished, the handle gives the finished row");
}

#[test]
fn the_partial_row_is_marked_interrupted() {
    let script = Scripted::new([Reply::rate(100.0), Reply::rate(100.0), Reply::rate(100.0)]);
    // An observer that snapshots before the third repetition: two repetitions, incomplete, "interrupted".
    struct Snap(Vec<RowInProgress>, Option<BenchmarkResult>);
    impl Observer for Snap {
        fn row_in_progress(&mut self, row: &RowInProgress) {
            self.0.push(row.clone());
        }
        fn iteration_started(&mut self, _: &Position<'_>, iteration: u32, warmup: bool) {
            if !warmup && iteration == 3 {
                self.1 = self.0[0].snapshot();
            }
        }
    }
    let mut snap = Snap(Vec::new(), None);
    let factory = move |_: &str| Some(script.backend());
    run_plan_with(
        &plan(vec![tg(8, 4)], &[1]),
        &PreparedModels::default(),
        &options(0, Repetitions::Fixed),
        &mut snap,
        Some(&factory),
    )
    .unwrap();
    let partial = snap.1.unwrap();
    assert_eq!((partial.status, partial.iterations_completed), (RowStatus::Incomplete, 2));
    assert_eq!(partial.error.as_deref(), Some("interrupted"));
    assert_eq!(partial.repetitions.stopped_because, StopRule::Interrupted);
}

fn auto(min_repetitions: u32, consecutive: u32, max_repetitions: u32) -> Repetitions {
    Repetitions::Auto(AutoRepetitions {
        min_repetitions,
        consecutive,
        max_repetitions,
        min_time: Duration::ZERO,
        ..AutoRepetitions::default()
    })
}

#[test]
fn auto_repetitions_follow_the_policy() {
    // Steady rates: the target is met on every check; the row stops at the second consecutive one.
    let script = Scripted::new([]);
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1]), &options(0, auto(4, 2, 50)), &script);
    let row = &outcome.rows[0];
    assert_eq!(row.iterations_completed, 5);
    let record = &row.repetitions;
    assert_eq!((record.mode.as_str(), record.stopped_because), ("auto", StopRule::CiTarget));
    assert_eq!((record.checks, record.consecutive_required, record.min_repetitions), (Some(2), Some(2), Some(4)));
    assert_eq!(record.min_time_s, Some(0.0));
    // Wide rates never meet 2 %: the cap on repetitions ends the row.
    let wide: Vec<Reply> = (0..20).map(|i| Reply::rate(if i % 2 == 0 { 50.0 } else { 150.0 })).collect();
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1]), &options(0, auto(4, 2, 12)), &Scripted::new(wide.clone()));
    let row = &outcome.rows[0];
    assert_eq!((row.iterations_completed, row.repetitions.stopped_because), (12, StopRule::MaxRepetitions));
    assert_eq!(row.repetitions.checks, Some(9));
    assert_eq!(row.status, RowStatus::Ok);
    // ...or the time cap, counted in timed work.
    let slow: Vec<Reply> = wide
        .iter()
        .map(|r| match r {
            Reply::Rate { rate, .. } => Reply::slow(*rate, Duration::from_millis(10)),
            other => other.clone(),
        })
        .collect();
    let capped = Repetitions::Auto(AutoRepetitions {
        min_repetitions: 4,
        min_time: Duration::ZERO,
        max_time: Duration::from_millis(55),
        ..AutoRepetitions::default()
    });
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1]), &options(0, capped), &Scripted::new(slow));
    let row = &outcome.rows[0];
    assert_eq!(row.repetitions.stopped_because, StopRule::TimeCap);
    // Each repetition takes at least 10 ms (a busy machine may make it longer): 6 reach 55 ms for certain.
    assert!((1..=6).contains(&row.iterations_completed), "{}", row.iterations_completed);
    // The minimum time is timed work: 5 ms repetitions need at least 8 to reach 40 ms.
    let timed = Repetitions::Auto(AutoRepetitions {
        min_repetitions: 2,
        consecutive: 1,
        min_time: Duration::from_millis(40),
        ..AutoRepetitions::default()
    });
    let script = Scripted::new([]);
    script.lock().default_reply = Some(Reply::slow(100.0, Duration::from_millis(5)));
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1]), &options(1, timed), &script);
    let row = &outcome.rows[0];
    assert_eq!(row.repetitions.stopped_because, StopRule::CiTarget);
    // Identical rates meet the target at the first check, so the row ends once 40 ms of timed work are done: a
    // sleep never ends early, so 8 repetitions always get there, and a busy machine's longer sleeps get there
    // sooner (7 was seen under load). A rule that ignored the minimum time would stop at the second.
    assert!((3..=8).contains(&row.iterations_completed), "{}", row.iterations_completed);
    assert_eq!(row.repetitions.checks, Some(1));
}

#[test]
fn outlying_repetitions_are_flagged_and_kept() {
    let mut replies: Vec<Reply> = [100.0, 100.4, 99.6, 100.2, 99.8, 92.0, 100.1, 99.9].map(Reply::rate).to_vec();
    replies.insert(0, Reply::rate(1.0));
    let (outcome, _) = run(&plan(vec![tg(8, 8)], &[1]), &options(1, Repetitions::Fixed), &Scripted::new(replies));
    let row = &outcome.rows[0];
    let outliers = row.repetitions.outliers.as_ref().unwrap();
    assert_eq!((outliers.count, outliers.repetitions.as_slice()), (1, &[6][..]));
    assert_eq!(row.samples_ts.len(), 8, "flagged, not removed");
}

#[test]
fn an_error_at_repetition_k_keeps_the_k_minus_1_before_it() {
    let script = Scripted::new([
        Reply::rate(1.0),
        Reply::rate(100.0),
        Reply::rate(100.0),
        Reply::Fail("device lost".into()),
        // The next test of the sweep still runs.
        Reply::rate(1.0),
    ]);
    let (outcome, _) = run(&plan(vec![tg(8, 5), tg(16, 2)], &[1]), &options(1, Repetitions::Fixed), &script);
    assert!(!outcome.interrupted);
    let row = &outcome.rows[0];
    assert_eq!((row.status, row.iterations_completed), (RowStatus::Incomplete, 2));
    assert_eq!(row.error.as_deref(), Some("repetition 3: generation failed: device lost"));
    assert_eq!(row.repetitions.stopped_because, StopRule::Error);
    assert_eq!((outcome.rows[1].status, outcome.rows[1].iterations_completed), (RowStatus::Ok, 2));
    // At the first repetition nothing is kept: a failed row. In the warm-up: said as a warm-up failure.
    let script = Scripted::new([Reply::rate(1.0), Reply::Fail("boom".into())]);
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1]), &options(1, Repetitions::Fixed), &script);
    assert_eq!((outcome.rows[0].status, outcome.rows[0].iterations_completed), (RowStatus::Failed, 0));
    let script = Scripted::new([Reply::Fail("boom".into())]);
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1]), &options(1, Repetitions::Fixed), &script);
    assert_eq!(outcome.rows[0].error.as_deref(), Some("warm-up: generation failed: boom"));
    // A load that fails makes failed rows, with the reason.
    let script = Scripted::new([]);
    script.lock().load_error = Some("out of memory".into());
    let (outcome, _) = run(&plan(vec![tg(8, 5), tg(16, 5)], &[1]), &options(1, Repetitions::Fixed), &script);
    assert_eq!(outcome.rows.len(), 2);
    assert!(outcome.rows.iter().all(|r| r.status == RowStatus::Failed));
    assert!(outcome.rows[0].error.as_deref().unwrap().contains("out of memory"));
}

#[test]
fn ctrl_c_keeps_the_finished_repetitions_and_stops_the_run() {
    let script = Scripted::new([Reply::rate(1.0), Reply::rate(100.0), Reply::rate(100.0), Reply::Interrupt]);
    let (outcome, rec) = run(&plan(vec![tg(8, 5), tg(16, 5)], &[1]), &options(1, Repetitions::Fixed), &script);
    assert!(outcome.interrupted);
    assert_eq!(outcome.rows.len(), 1, "the second test never started");
    let row = &outcome.rows[0];
    assert_eq!((row.status, row.iterations_completed), (RowStatus::Incomplete, 2));
    assert_eq!(row.error.as_deref(), Some("interrupted"));
    assert_eq!(row.repetitions.stopped_because, StopRule::Interrupted);
    assert_eq!(rec.rows, outcome.rows);
    // Interrupted during the warm-up: nothing to keep, no row.
    let (outcome, _) =
        run(&plan(vec![tg(8, 5)], &[1]), &options(1, Repetitions::Fixed), &Scripted::new([Reply::Interrupt]));
    assert!(outcome.interrupted && outcome.rows.is_empty());
}

fn interleaved(options: RunOptions) -> RunOptions {
    RunOptions { interleave: true, ..options }
}

#[test]
fn interleave_runs_one_repetition_of_each_combination_per_round() {
    // Two thread counts: two contexts on one model, created again in every round, each warmed up again.
    let script = Scripted::new([]);
    let (outcome, rec) = run(&plan(vec![tg(8, 3)], &[1, 2]), &interleaved(options(1, Repetitions::Fixed)), &script);
    assert!(!outcome.interrupted);
    let calls = script.calls();
    let order: Vec<(u32, u32)> = calls.iter().map(|c| (c.context.n_threads, c.n_gen)).collect();
    // Plan order, then the reverse every other round (a steady drift then falls on both alike).
    let forward = [(1, 1), (1, 8), (2, 1), (2, 8)];
    let backward = [(2, 1), (2, 8), (1, 1), (1, 8)];
    assert_eq!(order, [forward, backward, forward].concat());
    assert_eq!(script.lock().loads, 1);
    assert_eq!(script.lock().contexts, 2 + 3 * 2, "created once to check the fit, then once per round");
    assert_eq!(outcome.rows.len(), 2);
    let run_ids: Vec<&str> = outcome.rows.iter().map(|r| r.interleaved.as_ref().unwrap().run.as_str()).collect();
    assert_eq!(run_ids[0], run_ids[1]);
    for (slot, row) in outcome.rows.iter().enumerate() {
        let tag = row.interleaved.as_ref().unwrap();
        assert_eq!((tag.combinations, tag.slot), (2, slot as u32));
        assert_eq!((row.status, row.iterations_completed), (RowStatus::Ok, 3));
    }
    assert_eq!(rec.handles.len(), 2);
    // Two tests on one context: the context is kept, the warm-up runs once per test.
    let script = Scripted::new([]);
    let tests = vec![tg(8, 3), tg(16, 3)];
    let (outcome, _) = run(&plan(tests, &[1]), &interleaved(options(1, Repetitions::Fixed)), &script);
    let order: Vec<u32> = script.calls().iter().map(|c| c.n_gen).collect();
    assert_eq!(order, [1, 8, 1, 16, 16, 8, 8, 16]);
    assert_eq!(script.lock().contexts, 1);
    assert!(outcome.rows.iter().all(|r| r.status == RowStatus::Ok && r.samples_ts.len() == 3));
    // JSON: the contract with `velollm compare`.
    let json = serde_json::to_value(&outcome.rows[1]).unwrap();
    assert_eq!(json["interleaved"]["combinations"], 2);
    assert_eq!(json["interleaved"]["slot"], 1);
    assert!(json["interleaved"]["run"].is_string());
}

#[test]
fn interleaved_auto_rows_stop_each_by_their_own_policy() {
    // Threads 1: steady (stops at its minimum); threads 2: wide (runs to the cap). Rounds go on until both
    // are done; the steady one is skipped once it stopped.
    let wide: Vec<Reply> = (0..40).map(|i| Reply::rate(if i % 2 == 0 { 50.0 } else { 150.0 })).collect();
    let script = Scripted::new([]).for_threads(2, wide);
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1, 2]), &interleaved(options(0, auto(4, 2, 10))), &script);
    let steady = &outcome.rows[0];
    let noisy = &outcome.rows[1];
    assert_eq!((steady.iterations_completed, steady.repetitions.stopped_because), (5, StopRule::CiTarget));
    assert_eq!((noisy.iterations_completed, noisy.repetitions.stopped_because), (10, StopRule::MaxRepetitions));
    assert_eq!(steady.interleaved.as_ref().unwrap().slot, 0);
    // Rounds 1–5 hold both (in reverse order every other round); rounds 6–10 threads 2 only.
    let threads: Vec<u32> = script.calls().iter().map(|c| c.context.n_threads).collect();
    assert_eq!(threads, [vec![1, 2, 2, 1, 1, 2, 2, 1, 1, 2], vec![2; 5]].concat());
}

#[test]
fn interleaved_errors_and_ctrl_c() {
    // Threads 2 fails in round 2; threads 1 goes on to its count.
    let script = Scripted::new([]).for_threads(2, [Reply::rate(100.0), Reply::Fail("lost".into())]);
    let (outcome, _) = run(&plan(vec![tg(8, 3)], &[1, 2]), &interleaved(options(0, Repetitions::Fixed)), &script);
    let (ok, broken) = (&outcome.rows[1], &outcome.rows[0]);
    assert_eq!((broken.status, broken.iterations_completed), (RowStatus::Incomplete, 1));
    assert_eq!(broken.error.as_deref(), Some("repetition 2: generation failed: lost"));
    assert_eq!((ok.status, ok.iterations_completed), (RowStatus::Ok, 3));
    // Ctrl-C in round 3: every combination keeps the repetitions it finished.
    let script = Scripted::new([]).for_threads(2, [Reply::rate(100.0), Reply::rate(100.0), Reply::Interrupt]);
    let (outcome, _) = run(&plan(vec![tg(8, 5)], &[1, 2]), &interleaved(options(0, Repetitions::Fixed)), &script);
    assert!(outcome.interrupted);
    let kept: Vec<(RowStatus, u32)> = outcome.rows.iter().map(|r| (r.status, r.iterations_completed)).collect();
    assert_eq!(kept, [(RowStatus::Incomplete, 3), (RowStatus::Incomplete, 2)]);
    assert!(outcome.rows.iter().all(|r| r.error.as_deref() == Some("interrupted")));
}
