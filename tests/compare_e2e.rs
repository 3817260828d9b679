//! `velollm compare` as a user runs it: files written by velollm (constructed rows) and by llama-bench (its
//! documented JSON), the table, `--format json`, and the `--fail-if-slower` exit status.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use velollm_fixtures::{json_array, text_samples_at, token_samples_at, Row};

/// Rates around `mean`: a fixed pattern with the given relative spread.
fn around(mean: f64, spread: f64) -> Vec<f64> {
    [0.0, 1.0, -1.0, 0.5, -0.5, 0.8, -0.8].iter().map(|k| mean * (1.0 + spread * k)).collect()
}

fn write(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, json_array(rows)).unwrap();
    path
}

fn runs(dir: &Path, new_tg: f64) -> (PathBuf, PathBuf) {
    let suite = |rate: f64| Row::text("short_completion", "Hi", 16, text_samples_at(&around(rate, 0.01), 16, 25.0));
    let tg = |rate: f64| Row::tokens(0, 128, 0, token_samples_at(0, 128, &around(rate, 0.01)));
    let base = write(dir, "base.json", &[suite(50.0), tg(60.0), tg(40.0).threads(1)]);
    let new = write(dir, "new.json", &[suite(50.0), tg(new_tg), Row::tokens(512, 0, 0, vec![]).failed("no memory")]);
    (base, new)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_ten_percent_slowdown_fails_a_five_percent_gate() {
    let dir = scratch("compare-slow");
    let (base, new) = runs(&dir, 54.0);
    let out = run(&["compare", arg(&base), arg(&new)]);
    let text = stdout(&out);
    assert!(out.status.success(), "without a gate a slowdown is reported, not an error: {}", stderr(&out));
    assert!(text.contains("2 matched, 1 only in base, 1 only in new"), "{text}");
    let tg = text.lines().find(|l| l.starts_with("| tg128")).expect("a tg128 line");
    assert!(tg.contains("-10.0 %") && tg.contains("slower"), "{tg}");
    assert!(text.contains("row 3: tg128") && text.contains("nearest: row 2 differs in n_threads (1 → 2)"), "{text}");
    assert!(text.contains("row 3: pp512"), "the new run's failed pp512 has no counterpart: {text}");

    let out = run(&["compare", arg(&base), arg(&new), "--fail-if-slower", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: 1 regression beyond --fail-if-slower 5%: tg128"), "{err}");
    assert!(stdout(&out).contains("✗ --fail-if-slower 5 %: failed"));

    let out = run(&["compare", arg(&base), arg(&new), "--fail-if-slower", "15"]);
    assert_eq!(out.status.code(), Some(0), "a 10 % slowdown passes a 15 % gate: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn noise_passes_the_gate() {
    let dir = scratch("compare-noise");
    let (base, new) = runs(&dir, 60.3);
    let out = run(&["compare", arg(&base), arg(&new), "--fail-if-slower", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let tg = text.lines().find(|l| l.starts_with("| tg128")).unwrap();
    assert!(tg.contains("no significant change"), "{tg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_output_holds_every_pair_and_the_gate() {
    let dir = scratch("compare-json");
    let (base, new) = runs(&dir, 54.0);
    let out = run(&["compare", arg(&base), arg(&new), "--format", "json", "--fail-if-slower", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_str(&stdout(&out)).expect("stdout is one JSON document");
    let comparison = &answer["comparisons"][0];
    assert_eq!(comparison["pairs"].as_array().unwrap().len(), 2);
    let tg = &comparison["pairs"][1]["metrics"][0];
    assert_eq!(tg["metric"], "tokens_per_second");
    assert_eq!(tg["verdict"], "slower");
    assert!(tg["ci95_high_percent"].as_f64().unwrap() < -5.0, "{tg}");
    assert_eq!(comparison["only_in_new"][0]["status"], "failed");
    assert_eq!(answer["gate"]["failed"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn velollm_against_llama_bench_json_and_jsonl() {
    let dir = scratch("compare-llama-bench");
    let documented = repo_root().join("crates/velollm-compare/tests/data/llama-bench.json");
    let velollm = write(
        &dir,
        "velollm.json",
        &[
            Row::tokens(512, 0, 0, token_samples_at(512, 0, &around(1049.0, 0.005))),
            Row::tokens(0, 128, 0, token_samples_at(0, 128, &around(58.0, 0.005))),
        ],
    );
    // llama-bench's -o jsonl: the same objects, one per line.
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&documented).unwrap()).unwrap();
    let jsonl = dir.join("llama-bench.jsonl");
    std::fs::write(&jsonl, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    for llama_bench in [documented.as_path(), jsonl.as_path()] {
        let out = run(&["compare", arg(llama_bench), arg(&velollm)]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(text.contains("(llama-bench, 3 rows)") && text.contains("(velollm, 2 rows): 2 matched"), "{text}");
        assert!(text.contains("Recorded by one side only, not compared:") && text.contains("n_ctx"), "{text}");
        let tg = text.lines().find(|l| l.starts_with("| tg128")).unwrap();
        assert!(tg.contains("slower"), "llama-bench 61.0 t/s against velollm 58.0: {tg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_one_line() {
    let dir = scratch("compare-bad");
    let (base, new) = runs(&dir, 60.0);
    assert_clean_failure(&run(&["compare", arg(&base), "/nonexistent/x.json"]), "cannot read /nonexistent/x.json");
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "[{\"hello\": 1}]").unwrap();
    assert_clean_failure(&run(&["compare", arg(&base), arg(&junk)]), "row 1: neither a velollm result");
    let out = run(&["compare", arg(&base), arg(&new), "--ignore", "nthreads"]);
    assert_clean_failure(&out, "invalid --ignore 'nthreads': the files record model, backend");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["compare", arg(&base), arg(&new), "--fail-if-slower", "-3"]);
    assert_clean_failure(&out, "invalid --fail-if-slower '-3'");
    let out = run(&["compare", arg(&base)]);
    assert_clean_failure(&out, "NEW");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_gate_threshold_must_be_above_zero() {
    let dir = scratch("compare-threshold");
    let (base, new) = runs(&dir, 60.0);
    for bad in ["0", "0%", "NaN", "-0", "101", "inf"] {
        let out = run(&["compare", arg(&base), arg(&new), "--fail-if-slower", bad]);
        assert_clean_failure(&out, &format!("invalid --fail-if-slower '{bad}': a per cent above 0 and at most 100"));
        assert_eq!(out.status.code(), Some(2));
    }
    let out = run(&["report", arg(&base), arg(&new), "--fail-if-slower", "0", "-o", arg(&dir.join("r.html"))]);
    assert_clean_failure(&out, "invalid --fail-if-slower '0'");
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_row_with_a_non_positive_rate_is_invalid_with_one_warning() {
    let dir = scratch("compare-invalid");
    let (base, _) = runs(&dir, 60.0);
    let mut rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    rows[1]["samples_ts"][2] = serde_json::json!(-4.0);
    let bad = dir.join("bad.json");
    std::fs::write(&bad, serde_json::to_string(&rows).unwrap()).unwrap();
    let out = run(&["compare", arg(&base), arg(&bad), "--fail-if-slower", "5"]);
    assert_eq!(out.status.code(), Some(1), "an invalid new row fails the gate: {}", stdout(&out));
    let err = stderr(&out);
    let warning = err.lines().find(|l| l.starts_with("warning:")).expect("a warning");
    assert!(
        warning.contains("bad.json: row 2 (tg128 · ") && warning.contains("tok/s of repetition 3 is -4.0"),
        "{warning}"
    );
    assert!(stdout(&out).contains("invalid in new: tok/s of repetition 3"), "{}", stdout(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_interleaved_file_two_combinations_paired() {
    let dir = scratch("compare-interleaved");
    // Two combinations measured round by round through a machine that drifts ±15 %; 2 threads are 3 % faster.
    let drift = [1.0, 0.85, 1.12, 0.9, 1.15, 0.95];
    let mut rows = Vec::new();
    for (slot, (threads, gain)) in [(1u32, 1.0), (2, 1.03)].into_iter().enumerate() {
        let rates: Vec<f64> =
            drift.iter().enumerate().map(|(i, d)| 60.0 * gain * d * (1.0 + 0.002 * ((i + slot) % 3) as f64)).collect();
        let mut row = Row::tokens(0, 128, 0, token_samples_at(0, 128, &rates)).threads(threads).to_json();
        row["interleaved"] = serde_json::json!({"run": "7f3a", "combinations": 2, "slot": slot});
        rows.push(row);
    }
    let sweep = dir.join("sweep.json");
    std::fs::write(&sweep, serde_json::to_string(&rows).unwrap()).unwrap();
    let out = run(&["compare", arg(&sweep), "--base", "n_threads=1", "--new", "n_threads=2", "--fail-if-slower", "1"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("sweep.json [n_threads=1]") && text.contains("sweep.json [n_threads=2]"), "{text}");
    let tg = text.lines().find(|l| l.starts_with("| tg128")).expect("a tg128 line");
    assert!(tg.contains("paired (6 rounds)") && tg.contains("faster"), "{tg}");
    assert!(text.contains("Paired: rows of interleaved run 7f3a are compared round by round"), "{text}");
    assert!(text.contains("Holm's correction over 1 test"), "{text}");
    // The other way round, 3 % slower by more than 1 %: the gate fails on the paired test.
    let out = run(&["compare", arg(&sweep), "--base", "n_threads=2", "--new", "n_threads=1", "--fail-if-slower", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("paired"), "{}", stderr(&out));
    // Usage errors: a selection that keeps nothing, one side only, the same rows on both sides.
    let only = run(&["compare", arg(&sweep), "--base", "n_threads=1"]);
    assert_clean_failure(&only, "one file and no NEW");
    let nothing = run(&["compare", arg(&sweep), "--base", "n_threads=1", "--new", "n_threads=8"]);
    assert_clean_failure(&nothing, "invalid --new: 'n_threads=8' selects no row");
    let same = run(&["compare", arg(&sweep), "--base", "n_threads=1", "--new", "n_threads=1"]);
    assert_clean_failure(&same, "--base and --new select the same rows");
    // The report draws the same comparison.
    let html = dir.join("r.html");
    let out = run(&["report", arg(&sweep), "--base", "n_threads=1", "--new", "n_threads=2", "-o", arg(&html)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("data-method=\"paired\"") && page.contains("paired over 6 rounds"));
    let _ = std::fs::remove_dir_all(&dir);
}
