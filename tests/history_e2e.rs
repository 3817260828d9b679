//! The results history as a user meets it: every `velollm benchmark` adds its run and rows, two processes
//! writing at once lose nothing, a killed run keeps its finished rows, a corrupt or newer file is one line and
//! left untouched, a model file already hashed is not read again, and `velollm history`, `compare --baseline`,
//! `optimize --from history` and `report --history` read it. Real llama.cpp on the real SmolLM2 model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use velollm_history::hashes::FileKey;
use velollm_history::{History, RunFilter};

/// A quick real benchmark: one repetition of the `tg` tests per thread count.
fn quick(history: &Path, tg: &str, extra: &[&str]) -> Command {
    let mut cmd = velollm();
    cmd.args(["benchmark", "-m", model(SMOLLM2).to_str().unwrap(), "--tg", tg, "-r", "1", "--warmup", "0", "-q"])
        .arg("--history")
        .arg(history)
        .args(extra);
    cmd
}

fn history_json(history: &Path, args: &[&str]) -> Value {
    let out = velollm().arg("history").arg("--history").arg(history).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn a_run_and_its_rows_are_kept_and_every_history_command_reads_them() {
    let dir = scratch("history-kept");
    let db = dir.join("history.db");
    let results = dir.join("first.json");
    let out =
        quick(&db, "16", &["-t", "1,2", "-o", results.to_str().unwrap(), "--machine", "bench-a"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();

    let runs = history_json(&db, &["list"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let first_run = &runs[0];
    assert_eq!(first_run["status"], "completed");
    assert_eq!(first_run["machine"], "bench-a");
    assert_eq!(first_run["rows"], 2);
    assert!(first_run["command_line"].as_str().unwrap().contains("--tg 16 -r 1"), "{first_run}");
    assert!(first_run["ended_at"].as_str().unwrap() >= first_run["started_at"].as_str().unwrap());
    assert_eq!(first_run["software_fingerprint"].as_str().unwrap().len(), 16);
    assert!(first_run["context"]["memory_available_bytes"].as_u64().unwrap() > 0, "{first_run}");

    // The rows are the rows the results file has, byte for byte as JSON values.
    let shown = history_json(&db, &["show", "last"]);
    let rows = shown["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (stored, file_row) in rows.iter().zip(&written) {
        assert_eq!(&stored["row"], file_row);
        assert_eq!(stored["test"], "tg16");
        assert_eq!(stored["status"], "ok");
        let rate = file_row["tokens_per_second"].as_f64().unwrap();
        assert!((stored["tokens_per_second"].as_f64().unwrap() - rate).abs() / rate < 1e-9);
    }

    // A second run: the trend has two points per thread count, the same build; best picks the faster row.
    let second = dir.join("second.json");
    let out =
        quick(&db, "16", &["-t", "1,2", "-o", second.to_str().unwrap(), "--machine", "bench-a"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let trend = history_json(&db, &["trend", "tokens_per_second", "--machine", "bench-a"]);
    let points = trend.as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert!(points.iter().all(|p| p["build_changed"] == false), "one build: {trend}");
    let best = history_json(&db, &["best", "--model", "smollm2"]);
    let best = best.as_array().unwrap();
    assert_eq!(best.len(), 1, "one model, one machine, one test");
    let fastest = points.iter().map(|p| p["value"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(best[0]["tokens_per_second"].as_f64().unwrap(), fastest);
    assert_eq!(best[0]["candidates"], 4);

    // The second run against the first, with the base taken from the history.
    let out = run(&[
        "compare",
        "--baseline",
        "last",
        second.to_str().unwrap(),
        "--history",
        db.to_str().unwrap(),
        "--machine",
        "bench-a",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Base: history run 1 (the last on bench-a)") && text.contains("2 matched"), "{text}");
    let out = run(&[
        "compare",
        "--baseline",
        "best",
        second.to_str().unwrap(),
        "--history",
        db.to_str().unwrap(),
        "--machine",
        "bench-a",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 matched"), "{}", stdout(&out));

    // Export gives rows velollm compare reads; rm removes a run and its rows.
    let exported = dir.join("export.jsonl");
    let out = velollm()
        .args(["history", "--history", db.to_str().unwrap(), "export", "1", "-o", exported.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["compare", exported.to_str().unwrap(), second.to_str().unwrap()]);
    assert!(out.status.success() && stdout(&out).contains("2 matched"), "{}", stdout(&out));
    let out = velollm().args(["history", "rm", "1", "--history", db.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(history_json(&db, &["list"]).as_array().unwrap().len(), 1);

    // optimize and report read it too.
    let out =
        run(&["optimize", "--dry-run", "--from", "history", "--history", db.to_str().unwrap(), "--machine", "bench-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("measured results (history: 2 of 2 rows ok"), "{}", stdout(&out));
    let page = dir.join("report.html");
    let history_flag = format!("--history={}", db.display());
    let out = run(&["report", &history_flag, second.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("data-chart=\"history-trend\"").count(), 2, "one chart per thread count");
    assert!(html.contains("2 rows from 1 file"), "the results file given is drawn too");
}

#[test]
fn two_processes_writing_at_once_lose_nothing() {
    let dir = scratch("history-concurrent");
    let db = dir.join("history.db");
    let start = |machine: &str| {
        quick(&db, "16,8", &["-t", "1,2", "--machine", machine])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start("writer-a"), start("writer-b"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let history = History::open(&db).unwrap();
    assert_eq!(history.integrity_check().unwrap(), "ok");
    let runs = history.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(run.status, "completed");
        assert_eq!(run.rows, 4, "two thread counts × two tests, every row kept: {run:?}");
        let rows = history.rows_of(run.id).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }
    let mut machines: Vec<String> = runs.iter().filter_map(|r| r.machine.clone()).collect();
    machines.sort();
    assert_eq!(machines, ["writer-a", "writer-b"]);
}

#[test]
fn a_run_killed_mid_way_keeps_its_finished_rows_and_is_not_completed() {
    let dir = scratch("history-killed");
    let db = dir.join("history.db");
    // tg16 finishes in a second; tg4096 then runs for minutes until the kill.
    let mut child = quick(&db, "16,4096", &["-t", "1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        assert!(Instant::now() < deadline, "no row reached the history in 120 s");
        if db.exists() {
            if let Ok(history) = History::open(&db) {
                if history.rows(&RunFilter::default()).map(|r| r.len()).unwrap_or(0) >= 1 {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();

    let history = History::open(&db).unwrap();
    assert_eq!(history.integrity_check().unwrap(), "ok");
    let runs = history.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "running", "never marked completed: {:?}", runs[0]);
    assert_eq!(runs[0].ended_at, None);
    let rows = history.rows_of(runs[0].id).unwrap();
    assert_eq!(rows.len(), 1, "the finished tg16 row, and nothing of the killed tg4096");
    assert_eq!((rows[0].test.as_str(), rows[0].status.as_str()), ("tg16", "ok"));
    // And the next run is added after it as usual.
    let out = quick(&db, "16", &["-t", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(History::open(&db).unwrap().runs(&RunFilter::default()).unwrap().len(), 2);
}

fn assert_untouched_after(db: &Path, expected: &str) {
    let before = std::fs::read(db).unwrap();
    let out = quick(db, "16", &["-t", "1"]).output().unwrap();
    assert_clean_failure(&out, expected);
    assert_eq!(std::fs::read(db).unwrap(), before, "{} was written", db.display());
    let out = velollm().args(["history", "--history", db.to_str().unwrap(), "list"]).output().unwrap();
    assert_clean_failure(&out, expected);
    assert_eq!(std::fs::read(db).unwrap(), before);
}

#[test]
fn a_corrupt_foreign_or_newer_history_is_one_line_and_left_untouched() {
    let dir = scratch("history-refused");
    let garbage = dir.join("garbage.db");
    std::fs::write(&garbage, "notes, not a database\n".repeat(500)).unwrap();
    assert_untouched_after(&garbage, "is not a velollm history (not a SQLite database");

    let newer = dir.join("newer.db");
    drop(History::open(&newer).unwrap());
    let sqlite = Command::new("sqlite3")
        .arg(&newer)
        .arg("PRAGMA user_version = 7; PRAGMA journal_mode = DELETE;")
        .stdout(Stdio::null())
        .status()
        .expect("sqlite3 (scripts/test.sh installs it)");
    assert!(sqlite.success());
    assert_untouched_after(&newer, "written by a newer velollm (history schema 7");
}

#[test]
fn no_history_writes_no_history() {
    let dir = scratch("history-none");
    let db = dir.join("history.db");
    let out = velollm()
        .env("VELOLLM_HISTORY", &db)
        .args([
            "benchmark",
            "-m",
            model(SMOLLM2).to_str().unwrap(),
            "--tg",
            "8",
            "-r",
            "1",
            "-t",
            "1",
            "--warmup",
            "0",
            "-q",
            "--no-history",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!db.exists(), "--no-history created {}", db.display());
    // Without the flag the same command goes to VELOLLM_HISTORY.
    let out = velollm()
        .env("VELOLLM_HISTORY", &db)
        .args([
            "benchmark",
            "-m",
            model(SMOLLM2).to_str().unwrap(),
            "--tg",
            "8",
            "-r",
            "1",
            "-t",
            "1",
            "--warmup",
            "0",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(History::open(&db).unwrap().rows(&RunFilter::default()).unwrap().len(), 1);
}

fn row_sha256(results: &Path) -> String {
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(results).unwrap()).unwrap();
    rows[0]["model"]["sha256"].as_str().unwrap().to_string()
}

#[test]
fn a_model_file_already_hashed_is_not_read_again_and_a_changed_one_is() {
    let dir = scratch("history-hashes");
    let db = dir.join("history.db");
    let copy: PathBuf = dir.join("smollm2.gguf");
    std::fs::copy(model(SMOLLM2), &copy).unwrap();
    let results = dir.join("r.json");
    let bench = || {
        let mut cmd = velollm();
        cmd.args(["benchmark", "-m", copy.to_str().unwrap(), "--tg", "4", "-r", "1", "-t", "1", "--warmup", "0", "-q"])
            .arg("--history")
            .arg(&db)
            .arg("-o")
            .arg(&results);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        row_sha256(&results)
    };
    let real = bench();
    assert_eq!(real, velollm_fixtures::SMOLLM2_SHA256);
    let history = History::open(&db).unwrap();
    let key = FileKey::of(&copy).unwrap();
    assert_eq!(history.cached_sha256(&key).as_deref(), Some(real.as_str()), "the first run cached the hash");

    // A planted value for exactly this version of the file: a run that reads it from the cache reports it,
    // which shows the file was not hashed again.
    let planted = "0".repeat(64);
    history.store_sha256(&key, &planted, "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(bench(), planted);

    // The file changes (here only its modification time): it is hashed again, and the real hash comes back.
    let file = std::fs::File::options().write(true).open(&copy).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    drop(file);
    assert_eq!(bench(), real);
    assert_eq!(history.cached_sha256(&FileKey::of(&copy).unwrap()).as_deref(), Some(real.as_str()));
}

#[test]
fn a_run_stopped_by_ctrl_c_is_marked_interrupted_with_what_it_finished() {
    let dir = scratch("history-ctrl-c");
    let db = dir.join("history.db");
    let model = model(SMOLLM2);
    // tg16 finishes quickly; tg64 × 20 repetitions is still running when Ctrl-C comes.
    let mut child = velollm()
        .args([
            "benchmark",
            "-m",
            model.to_str().unwrap(),
            "--tg",
            "16,64",
            "-r",
            "20",
            "-t",
            "1",
            "--warmup",
            "0",
            "-q",
        ])
        .arg("--history")
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before Ctrl-C");
        assert!(Instant::now() < deadline, "no row reached the history in 120 s");
        let rows = History::open(&db).ok().and_then(|h| h.rows(&RunFilter::default()).ok()).unwrap_or_default();
        if !rows.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A little into tg64, so that it has finished repetitions to keep.
    std::thread::sleep(Duration::from_secs(3));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));

    let history = History::open(&db).unwrap();
    let runs = history.runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "interrupted");
    assert!(runs[0].ended_at.is_some());
    let rows = history.rows_of(runs[0].id).unwrap();
    assert_eq!((rows[0].test.as_str(), rows[0].status.as_str()), ("tg16", "ok"));
    // The row in progress, when it had finished repetitions, is kept marked incomplete, as in a results file.
    assert!(rows.len() <= 2);
    if let Some(partial) = rows.get(1) {
        assert_eq!((partial.test.as_str(), partial.status.as_str()), ("tg64", "incomplete"));
    }
    assert_eq!(history.integrity_check().unwrap(), "ok");
}
