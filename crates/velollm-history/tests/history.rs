//! The history's contract on real SQLite files: migration, refusing what it must not write into, writers at
//! once, fingerprints, imports of llama-bench's real output, trends, best, baselines and the hash cache.

use std::path::{Path, PathBuf};

use serde_json::Value;
use velollm_fixtures::{token_samples_at, Row};
use velollm_history::baseline::Baseline;
use velollm_history::hashes::FileKey;
use velollm_history::{
    schema, HardwareIdentity, History, HistoryError, MachineIdentity, NewRun, RunFilter, RunStatus, SoftwareIdentity,
    TrendMetric, VolatileContext,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("velollm-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn machine(alias: &str) -> MachineIdentity {
    MachineIdentity {
        alias: alias.into(),
        machine_key: None,
        hardware: HardwareIdentity {
            cpu_model: Some("Test CPU".into()),
            physical_cores: Some(2),
            logical_cpus: Some(2),
            sockets: Some(1),
            ram_gib: Some(24),
            gpus: Vec::new(),
        },
    }
}

fn software(llama_cpp_build: &str) -> SoftwareIdentity {
    let hardware = velollm_hw::detect();
    SoftwareIdentity::new(
        "0.1.0",
        Some("abc1234"),
        Some("llama.cpp test".into()),
        Some(llama_cpp_build.into()),
        vec![],
        &hardware,
    )
}

fn new_run(alias: &str, build: &str, started_at: &str) -> NewRun {
    NewRun {
        command_line: "velollm benchmark --tg 128".into(),
        started_at: started_at.into(),
        machine: machine(alias),
        software: software(build),
        context: VolatileContext::default(),
    }
}

/// A tg128 row at `rate` tok/s with `threads` threads, finished at `timestamp`.
fn tg128(rate: f64, threads: u32, timestamp: &str) -> Value {
    let mut row = Row::tokens(0, 128, 0, token_samples_at(0, 128, &[rate * 0.99, rate, rate * 1.01])).threads(threads);
    row.timestamp = timestamp.into();
    row.to_json()
}

#[test]
fn a_v1_history_is_migrated_with_its_runs_and_rows() {
    let dir = scratch("migrate");
    let path = dir.join("history.db");
    {
        // A file as velollm with schema 1 left it: its tables, its version, one run with a row.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::V1).unwrap();
        conn.execute_batch(&format!("PRAGMA application_id = {}; PRAGMA user_version = 1;", schema::APPLICATION_ID))
            .unwrap();
        conn.execute(
            "INSERT INTO runs (command_line, started_at, status) VALUES ('velollm benchmark', '2026-01-01T00:00:00Z', 'completed')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO rows (run_id, seq, recorded_at, tool, test, model, model_file, backend, status, parameters, tokens_per_second, row)
             VALUES (1, 1, '2026-01-01T00:00:01Z', 'velollm', 'tg128', 'SmolLM2', 'smol.gguf', 'llamacpp', 'ok', '{}', 50.0, '{}')",
            [],
        )
        .unwrap();
    }
    let history = History::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), schema::CURRENT_VERSION);
    let rows = history.rows(&RunFilter::default()).unwrap();
    assert_eq!(rows.len(), 1, "the row of version 1 is kept");
    assert_eq!(rows[0].tokens_per_second, Some(50.0));
    assert_eq!(rows[0].peak_memory_bytes, None, "the column version 2 added is empty for old rows");
    // Version 2's hash cache works on the migrated file.
    let key = FileKey { path: "/m.gguf".into(), size: 1, mtime_ns: 2, inode: 3 };
    history.store_sha256(&key, "ab", "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(history.cached_sha256(&key).as_deref(), Some("ab"));
    assert_eq!(history.integrity_check().unwrap(), "ok");
}

fn assert_refused_untouched(path: &Path, expected: &str) {
    let before = std::fs::read(path).unwrap();
    let error = History::open(path).expect_err("must be refused");
    let line = error.to_string();
    assert!(line.contains(expected), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert_eq!(std::fs::read(path).unwrap(), before, "the file must not be written");
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        !dir.join(format!("{name}-wal")).exists()
            || std::fs::metadata(dir.join(format!("{name}-wal"))).unwrap().len() == 0
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = scratch("garbage");
    let path = dir.join("history.db");
    std::fs::write(&path, b"this is not a database, but the user's notes\n".repeat(100)).unwrap();
    assert_refused_untouched(&path, "not a velollm history");
    // A file of zeros, which SQLite itself would take as empty and write over.
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    assert_refused_untouched(&path, "not a SQLite database");
}

#[test]
fn another_programs_sqlite_database_is_refused_and_left_untouched() {
    let dir = scratch("foreign");
    let path = dir.join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE accounts (id INTEGER, balance REAL); INSERT INTO accounts VALUES (1, 9.5);")
            .unwrap();
    }
    assert_refused_untouched(&path, "another program");
}

#[test]
fn a_history_from_a_newer_velollm_is_refused_and_left_untouched() {
    let dir = scratch("newer");
    let path = dir.join("history.db");
    drop(History::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .unwrap();
    }
    assert_refused_untouched(&path, "newer velollm (history schema 99; this velollm reads up to 2)");
}

#[test]
fn a_damaged_database_is_refused_and_left_untouched() {
    let dir = scratch("damaged");
    let path = dir.join("history.db");
    {
        let history = History::open(&path).unwrap();
        let run = history.begin_run(&new_run("box", "b1", "2026-01-01T00:00:00Z")).unwrap();
        for i in 0..50 {
            history
                .add_row(run, &tg128(50.0 + i as f64, 2, &format!("2026-01-01T00:00:{i:02}Z")), "2026-01-01T00:01:00Z")
                .unwrap();
        }
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
    }
    // Overwrite the middle of the file (table and index pages) with garbage; the header stays valid.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 4096, "{} bytes", bytes.len());
    let middle = bytes.len() / 2;
    for (i, b) in bytes[middle - 4096..middle + 4096].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_refused_untouched(&path, "is corrupt (");
}

#[test]
fn rows_from_many_writers_at_once_are_all_kept() {
    // Four connections in threads, each with its own run (the end-to-end test does the same with two real
    // velollm processes); SQLite's locking is per connection either way.
    let dir = scratch("writers");
    let path = dir.join("history.db");
    drop(History::open(&path).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let history = History::open(&path).unwrap();
                let run = history.begin_run(&new_run(&format!("writer{w}"), "b1", "2026-01-01T00:00:00Z")).unwrap();
                for i in 0..40 {
                    history
                        .add_row(run, &tg128(40.0 + i as f64, 1 + w, "2026-01-01T00:00:00Z"), "2026-01-01T00:00:01Z")
                        .unwrap();
                }
                history.end_run(run, RunStatus::Completed, "2026-01-01T00:00:02Z").unwrap();
                run
            })
        })
        .collect();
    let runs: Vec<i64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let history = History::open(&path).unwrap();
    for run in runs {
        let rows = history.rows_of(run).unwrap();
        assert_eq!(rows.len(), 40);
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    }
    assert_eq!(history.integrity_check().unwrap(), "ok");
}

#[test]
fn fingerprints_are_stable_across_runs_and_change_with_the_build() {
    let first = velollm_hw::detect();
    let second = velollm_hw::detect();
    let hardware = HardwareIdentity::from_hardware(&first);
    assert_eq!(hardware.fingerprint(), HardwareIdentity::from_hardware(&second).fingerprint());
    assert_eq!(hardware.fingerprint().len(), 16);
    let build = |llama: &str, hw: &velollm_core::HardwareInfo| {
        SoftwareIdentity::new("0.1.0", Some("abc1234"), Some("llama.cpp".into()), Some(llama.into()), vec![], hw)
    };
    assert_eq!(build("CPU : AVX2 = 1", &first).fingerprint(), build("CPU : AVX2 = 1", &second).fingerprint());
    assert_ne!(
        build("CPU : AVX2 = 1", &first).fingerprint(),
        build("CPU : AVX2 = 1 | AVX512 = 1", &first).fingerprint()
    );
    let other_commit = SoftwareIdentity::new("0.1.0", Some("def5678"), Some("llama.cpp".into()), None, vec![], &first);
    assert_ne!(other_commit.fingerprint(), build("CPU : AVX2 = 1", &first).fingerprint());
    // What changes by the minute is not identity.
    let mut busier = first.clone();
    busier.memory.available_bytes = busier.memory.available_bytes.map(|b| b / 2);
    assert_eq!(HardwareIdentity::from_hardware(&busier).fingerprint(), hardware.fingerprint());
    assert_eq!(build("x", &busier).fingerprint(), build("x", &first).fingerprint());
    // More RAM is another machine.
    let mut bigger = first.clone();
    bigger.memory.total_bytes = Some(bigger.memory.total_bytes.unwrap_or(0) + (64 << 30));
    assert_ne!(HardwareIdentity::from_hardware(&bigger).fingerprint(), hardware.fingerprint());

    // Recorded twice, the same machine and build are one machine row and one software row.
    let dir = scratch("fingerprints");
    let history = History::open(&dir.join("history.db")).unwrap();
    let a = history.begin_run(&new_run("box", "b1", "2026-01-01T00:00:00Z")).unwrap();
    let b = history.begin_run(&new_run("box", "b1", "2026-01-02T00:00:00Z")).unwrap();
    let c = history.begin_run(&new_run("box", "b2", "2026-01-03T00:00:00Z")).unwrap();
    let (ra, rb, rc) =
        (history.run(a).unwrap().unwrap(), history.run(b).unwrap().unwrap(), history.run(c).unwrap().unwrap());
    assert_eq!(ra.hardware_fingerprint, rb.hardware_fingerprint);
    assert_eq!(ra.software_fingerprint, rb.software_fingerprint);
    assert_eq!(rb.hardware_fingerprint, rc.hardware_fingerprint);
    assert_ne!(rb.software_fingerprint, rc.software_fingerprint);
}

/// llama-bench's `-o sql` for rows of its `-o json`: its sql printer's statements (a CREATE TABLE of every
/// field with SQLite types, then one INSERT per test with every value quoted). Built here from the repository's
/// captured llama-bench JSON, because no llama-bench binary is available on this machine; the samples arrays
/// are JSON-only fields and are not in its SQL.
fn llama_bench_sql(rows: &[Value]) -> String {
    let first = rows[0].as_object().unwrap();
    let fields: Vec<&String> = first.keys().filter(|k| !k.starts_with("samples_")).collect();
    let kind = |v: &Value| match v {
        Value::String(_) => "TEXT",
        Value::Number(n) if n.is_f64() => "REAL",
        _ => "INTEGER",
    };
    let mut sql = String::from("CREATE TABLE IF NOT EXISTS test (\n");
    for (i, field) in fields.iter().enumerate() {
        sql.push_str(&format!(
            "  {field} {}{}\n",
            kind(&first[field.as_str()]),
            if i + 1 < fields.len() { "," } else { "" }
        ));
    }
    sql.push_str(");\n\n");
    for row in rows {
        let names: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
        let values: Vec<String> = fields
            .iter()
            .map(|f| match &row[f.as_str()] {
                Value::String(s) => format!("'{s}'"),
                Value::Bool(b) => format!("'{}'", u8::from(*b)),
                other => format!("'{other}'"),
            })
            .collect();
        sql.push_str(&format!("INSERT INTO test ({}) VALUES ({});\n", names.join(", "), values.join(", ")));
    }
    sql
}

#[test]
fn llama_bench_json_jsonl_and_sql_output_are_imported() {
    let dir = scratch("import");
    let fixture = repo_root().join("crates/velollm-compare/tests/data/llama-bench.json");
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let jsonl = dir.join("llama-bench.jsonl");
    std::fs::write(&jsonl, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let sql = dir.join("llama-bench.sql");
    std::fs::write(&sql, llama_bench_sql(&rows)).unwrap();

    let history = History::open(&dir.join("history.db")).unwrap();
    for file in [fixture.as_path(), jsonl.as_path(), sql.as_path()] {
        let imported = history.import(file, &machine("bench-box"), "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(imported.rows, rows.len(), "{}", file.display());
        assert_eq!(imported.tools, "llama-bench");
        let stored = history.rows_of(imported.run).unwrap();
        let tests: Vec<&str> = stored.iter().map(|r| r.test.as_str()).collect();
        assert_eq!(tests[..2], ["pp512", "tg128"], "{}", file.display());
        for (row, original) in stored.iter().zip(&rows) {
            let avg_ts = original["avg_ts"].as_f64().unwrap();
            let mean = row.tokens_per_second.unwrap();
            // The JSON forms average the samples; the SQL form has llama-bench's own avg_ts only.
            assert!((mean - avg_ts).abs() / avg_ts < 0.001, "{}: {mean} vs {avg_ts}", file.display());
            assert_eq!(row.tool, "llama-bench");
            assert_eq!(row.backend, "llamacpp");
            assert_eq!(row.build.as_deref(), Some("llama-bench 1d36b367 (CPU)"));
            assert_eq!(
                row.parameters.get("n_threads").map(String::as_str),
                original["n_threads"].to_string().as_str().into()
            );
        }
        let run = history.run(imported.run).unwrap().unwrap();
        assert_eq!(run.status, "imported");
        assert_eq!(run.started_at, "2025-05-01T12:10:00Z", "the run starts at its first test's time");
    }
    // Something that is neither is refused with nothing added.
    let bad = dir.join("bad.sql");
    std::fs::write(&bad, "CREATE TABLE other (x INTEGER);").unwrap();
    let before = history.runs(&RunFilter::default()).unwrap().len();
    let error = history.import(&bad, &machine("bench-box"), "2026-01-01T00:00:00Z").unwrap_err();
    assert!(error.to_string().contains("no llama-bench table"), "{error}");
    assert_eq!(history.runs(&RunFilter::default()).unwrap().len(), before);
}

#[test]
fn trend_marks_a_changed_build_and_best_picks_the_fastest_row_that_ran() {
    let dir = scratch("trend");
    let history = History::open(&dir.join("history.db")).unwrap();
    let record = |build: &str, day: u32, rows: &[Value]| {
        let run = history.begin_run(&new_run("box", build, &format!("2026-01-{day:02}T00:00:00Z"))).unwrap();
        for row in rows {
            history.add_row(run, row, "2026-01-01T00:00:00Z").unwrap();
        }
        history.end_run(run, RunStatus::Completed, "2026-01-01T00:00:00Z").unwrap();
        run
    };
    let a = record("b1", 1, &[tg128(50.0, 2, "2026-01-01T00:00:01Z"), tg128(30.0, 1, "2026-01-01T00:00:02Z")]);
    // Run b's row has the same timestamp as run c's: a timestamp does not tell two runs' rows apart.
    let b = record("b1", 2, &[tg128(51.0, 2, "2026-01-03T00:00:01Z")]);
    let failed = Row::tokens(0, 128, 0, Vec::new()).threads(4).failed("out of memory").to_json();
    let c = record("b2", 3, &[tg128(40.0, 2, "2026-01-03T00:00:01Z"), failed]);

    let points = history.trend(TrendMetric::TokensPerSecond, &RunFilter::default()).unwrap();
    let two_threads: Vec<_> = points.iter().filter(|p| p.series.contains("n_threads=2")).collect();
    assert_eq!(two_threads.iter().map(|p| p.run_id).collect::<Vec<_>>(), vec![a, b, c]);
    assert_eq!(two_threads.iter().map(|p| p.build_changed).collect::<Vec<_>>(), vec![false, false, true]);
    assert!((two_threads[2].value - 40.0).abs() < 0.5, "{}", two_threads[2].value);
    assert!(points.iter().all(|p| !p.series.contains("n_threads=4")), "a failed row has no value to follow");

    let best = history.best(&RunFilter::default(), None).unwrap();
    assert_eq!(best.len(), 1, "one model, one machine, one test");
    assert_eq!((best[0].run_id, best[0].seq), (b, 1), "51 tok/s with 2 threads, run {b}");
    assert_eq!(best[0].candidates, 4, "every ok row counted, the failed one not");
    // Rows that recorded no peak memory do not count under a memory limit.
    assert!(history.best(&RunFilter::default(), Some(1 << 30)).unwrap().is_empty());

    // Filters.
    let on_day_3 = RunFilter { since: Some("2026-01-03".into()), ..RunFilter::default() };
    assert_eq!(history.runs(&on_day_3).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![c]);
    let other = RunFilter { machine: Some("elsewhere".into()), ..RunFilter::default() };
    assert!(history.rows(&other).unwrap().is_empty());

    // Baselines for new rows of run c: the last other run is b; the best of the same configuration is b's row.
    let news: Vec<velollm_results::Entry> =
        history.rows_of(c).unwrap().iter().map(|r| velollm_history::entry_of_row(&r.row).unwrap()).collect();
    let last = history.baseline(Baseline::Last, &news, Some("box")).unwrap();
    assert!(last.label.contains(&format!("run {b}")), "{}", last.label);
    let best_base = history.baseline(Baseline::Best, &news, Some("box")).unwrap();
    assert_eq!(best_base.rows.len(), 1);
    assert_eq!(best_base.rows[0], history.rows_of(b).unwrap()[0].row, "run b's 51 tok/s row");
    assert!(matches!(history.baseline(Baseline::Run(999), &news, None), Err(HistoryError::Invalid(_))));

    assert_eq!(history.remove_runs(&[a, 999]).unwrap(), 1);
    assert!(history.rows_of(a).unwrap().is_empty());
}

#[test]
fn the_hash_cache_answers_only_for_the_same_version_of_a_file() {
    let dir = scratch("hashes");
    let history = History::open(&dir.join("history.db")).unwrap();
    let file = dir.join("model.gguf");
    std::fs::write(&file, b"weights").unwrap();
    let key = FileKey::of(&file).unwrap();
    assert_eq!(history.cached_sha256(&key), None);
    history.store_sha256(&key, "1111", "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(history.cached_sha256(&FileKey::of(&file).unwrap()).as_deref(), Some("1111"));
    // Rewritten with other contents of the same size: the modification time differs.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, b"WEIGHTS").unwrap();
    assert_eq!(history.cached_sha256(&FileKey::of(&file).unwrap()), None);
    // Replaced by another file (another inode) with the same time: still a miss.
    let replacement = dir.join("new.gguf");
    std::fs::write(&replacement, b"weights").unwrap();
    let moved_key = FileKey { path: key.path.clone(), ..FileKey::of(&replacement).unwrap() };
    assert_eq!(history.cached_sha256(&moved_key), None);
}
