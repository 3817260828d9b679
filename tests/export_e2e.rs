//! Every output format of a real `velollm benchmark` run: files chosen by extension, several at once, `--format`
//! on stdout, and the formats written as rows finish surviving a SIGKILL with every finished row readable.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use velollm_core::BenchmarkResult;

fn sqlite_count(sql: &Path) -> usize {
    let db = sql.with_extension("db");
    let _ = std::fs::remove_file(&db);
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(".read {}", sql.display()))
        .arg("SELECT count(*) FROM velollm;")
        .output()
        .expect("the sqlite3 command line is installed (Debian package sqlite3; scripts/test.sh installs it)");
    assert!(out.status.success() && out.stderr.is_empty(), "sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn appended_formats_survive_a_kill_with_every_finished_row() {
    let dir = scratch("export-kill");
    let path = |name: &str| dir.join(name);
    let child = velollm()
        .args(["benchmark", "-m", model(SMOLLM2).to_str().unwrap(), "--max-tokens", "24", "--iterations", "3"])
        .args(["-o", path("r.jsonl").to_str().unwrap(), "-o", path("r.csv").to_str().unwrap()])
        .args(["-o", path("r.sql").to_str().unwrap(), "-o", path("r.json").to_str().unwrap()])
        .args(["-o", path("r.md").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    // Kill (SIGKILL: no handler runs, nothing is flushed at exit) as soon as the first row is on disk in every
    // appended format. The formats are written one after the other, so waiting for the JSON Lines alone could kill
    // between its append and the CSV's (seen while four builds shared the machine's two cores).
    let deadline = Instant::now() + Duration::from_secs(600);
    let has_first_row = |name: &str, mark: &str| std::fs::read_to_string(path(name)).is_ok_and(|t| t.contains(mark));
    while !(has_first_row("r.jsonl", "\n") && has_first_row("r.sql", "INSERT") && {
        std::fs::read_to_string(path("r.csv")).is_ok_and(|t| t.lines().count() >= 2)
    }) {
        assert!(Instant::now() < deadline, "the first row never finished");
        assert!(child.try_wait().unwrap().is_none(), "velollm exited before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished");

    let jsonl = std::fs::read_to_string(path("r.jsonl")).unwrap();
    let rows: Vec<BenchmarkResult> =
        jsonl.lines().map(|l| serde_json::from_str(l).expect("every line is a whole row")).collect();
    assert!(!rows.is_empty() && rows.len() < 3, "a partial run: {} rows", rows.len());
    assert_eq!(rows[0].config.name, "short_completion");
    assert_eq!(rows[0].samples.len(), 3, "the finished row has all its iterations");
    let n = rows.len();
    // CSV and SQL are appended and synced per row too: a header and whole rows, the first one at least, and at
    // most one row behind the JSON Lines (the kill may fall between two formats' appends of a later row).
    let csv = csv_records(&std::fs::read_to_string(path("r.csv")).unwrap());
    assert!(csv.len() == 1 + n || (n > 1 && csv.len() == n), "{} CSV records, {n} rows in the JSON Lines", csv.len());
    assert!(csv.iter().all(|r| r.len() == csv[0].len()));
    assert_eq!(csv[1][csv[0].iter().position(|h| h == "benchmark").unwrap()], "short_completion");
    let sql_rows = sqlite_count(&path("r.sql"));
    assert!(sql_rows == n || (n > 1 && sql_rows + 1 == n), "sqlite3 loads {sql_rows} rows, {n} in the JSON Lines");
    // The whole-file formats were rewritten atomically after each row: complete documents, at most one row behind.
    // (The kill may fall between the JSON Lines append and their rewrite: before the first rewrite, no file.)
    let json: Vec<Value> = match std::fs::read_to_string(path("r.json")) {
        Ok(text) => serde_json::from_str(&text).expect("the JSON file is a whole array"),
        Err(_) => Vec::new(),
    };
    assert!(json.len() == n || json.len() + 1 == n, "{} rows in the JSON, {n} in the JSON Lines", json.len());
    if let Ok(md) = std::fs::read_to_string(path("r.md")) {
        assert!(md.starts_with("| model") && md.lines().count() + 1 >= 2 + n, "{md}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(
        leftovers.iter().all(|l| l.contains(".tmp.")),
        "only a temporary file of a cut rewrite may remain: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn format_puts_only_the_results_on_stdout() {
    let dir = scratch("export-stdout");
    let json_path = dir.join("r.json");
    let args = |format: &str| {
        vec![
            "benchmark".to_string(),
            "-m".into(),
            model(SMOLLM2).to_str().unwrap().into(),
            "--prompt".into(),
            "Say \"hi\", please".into(),
            "--max-tokens".into(),
            "3".into(),
            "--iterations".into(),
            "2".into(),
            "--warmup".into(),
            "0".into(),
            "--format".into(),
            format.into(),
            "-o".into(),
            json_path.to_str().unwrap().into(),
        ]
    };
    let out = velollm().args(args("csv")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let records = csv_records(&stdout(&out));
    assert_eq!(records.len(), 2, "a header and the one row, nothing else: {}", stdout(&out));
    let prompt = records[0].iter().position(|h| h == "prompt").unwrap();
    assert_eq!(records[1][prompt], "Say \"hi\", please");
    // The console's text went to stderr.
    assert!(
        stderr(&out).contains("📊 Benchmark Summary") && stderr(&out).contains("Iteration 1/2"),
        "{}",
        stderr(&out)
    );

    let out = velollm().args(args("json")).output().unwrap();
    assert!(out.status.success());
    let printed: Vec<BenchmarkResult> = serde_json::from_str(&stdout(&out)).expect("stdout is the JSON array");
    let saved: Vec<BenchmarkResult> = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!((printed.len(), &printed[0].config), (1, &saved[0].config));

    let out = velollm().args(args("md")).output().unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("| model") && text.lines().count() == 3, "{text}");

    assert_clean_failure(
        &run(&["benchmark", "-o", dir.join("r.txt").to_str().unwrap()]),
        "known: .json, .jsonl, .csv, .sql, .md",
    );
    let out = run(&["benchmark", "--format", "xml"]);
    assert_clean_failure(&out, "unknown format 'xml'");
    let _ = std::fs::remove_dir_all(&dir);
}
