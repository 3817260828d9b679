//! The reader against files of every layout that was ever written: velollm's schema 1 (written by hand after the
//! layout of commit 131b831's result.rs: no velollm of that version is built here), schema 2 (the export
//! golden files as they stood before schema 3, written by velollm's own exporters), the current schema (a row
//! built by the fixtures crate and written by velollm-export), and llama-bench's `-o json` / `-o jsonl` rows in
//! its documented layout (no llama-bench binary exists on this machine; see crates/velollm-compare/tests/data).

use std::path::{Path, PathBuf};

use serde_json::Value;
use velollm_results::{read_file, read_str, Layout, Metric, Status, Tool};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn rows_of(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(rows)) => rows,
        _ => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
    }
}

#[test]
fn schema_one_rows_are_read_with_their_version() {
    let run = read_file(&data("schema-1.json")).unwrap();
    assert_eq!(run.layout, Layout::JsonArray);
    assert_eq!(run.entries.len(), 2);
    let (done, cut) = (&run.entries[0], &run.entries[1]);
    assert_eq!((done.tool, done.schema_version), (Tool::Velollm, Some(1)));
    assert_eq!((done.status, cut.status), (Status::Ok, Status::Incomplete), "schema 1 said so with `complete`");
    assert_eq!((done.test.kind.as_str(), done.test.name.as_str(), done.test.n_gen), ("text", "short_completion", 5));
    // Schema 1's engine names, in today's names.
    assert_eq!(done.parameters["n_threads"], "2");
    assert_eq!(done.parameters["n_ctx"], "2048");
    assert_eq!(done.samples[&Metric::TokensPerSecond], [50.0, 52.0, 51.0]);
    assert_eq!(cut.samples[&Metric::TokensPerSecond], [48.0, 47.5]);
    assert_eq!(done.model.sha256.as_deref(), Some("ab12"));
    assert_eq!(done.model.bytes, Some(96_574_880));
}

#[test]
fn schema_two_reads_the_same_from_an_array_and_from_lines() {
    let array = read_file(&data("schema-2.json")).unwrap();
    let lines = read_file(&data("schema-2.jsonl")).unwrap();
    assert_eq!((array.layout, lines.layout), (Layout::JsonArray, Layout::JsonLines));
    assert_eq!(array.entries.len(), 4);
    for (a, l) in array.entries.iter().zip(&lines.entries) {
        assert_eq!(a.schema_version, Some(2));
        assert_eq!((a.label(), a.status, &a.samples, &a.parameters), (l.label(), l.status, &l.samples, &l.parameters));
    }
    let statuses: Vec<Status> = array.entries.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Status::Ok, Status::Ok, Status::Incomplete, Status::Failed]);
    let kinds: Vec<&str> = array.entries.iter().map(|e| e.test.kind.as_str()).collect();
    assert_eq!(kinds, ["text", "pp", "tg", "pp"]);
    assert_eq!(lines.entries[2].line, 3);
    assert_eq!(array.entries[1].samples[&Metric::TokensPerSecond].len(), 3, "pp512's three repetitions");
}

#[test]
fn llama_bench_rows_are_read_from_json_and_jsonl() {
    for (name, layout) in [("llama-bench.json", Layout::JsonArray), ("llama-bench.jsonl", Layout::JsonLines)] {
        let run = read_file(&data(name)).unwrap();
        assert_eq!(run.layout, layout);
        assert_eq!(run.entries.len(), 3);
        let pp = &run.entries[0];
        assert_eq!((pp.tool, pp.schema_version), (Tool::LlamaBench, None));
        assert_eq!((pp.test.name.as_str(), pp.backend.as_str()), ("pp512", "llamacpp"));
        assert_eq!(pp.model.file_name, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(pp.samples[&Metric::TokensPerSecond].len(), 5);
        assert_eq!(pp.parameters["n_gpu_layers"], "all", "llama-bench's 99");
        assert!(!pp.parameters.contains_key("avg_ts"), "a result is not a parameter");
        assert_eq!(run.tools(), "llama-bench");
    }
}

/// The text of `rows` as JSON Lines with `edit` applied to the row at `index`.
fn lines_with(mut rows: Vec<Value>, index: usize, edit: impl FnOnce(&mut Value)) -> String {
    edit(&mut rows[index]);
    rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect()
}

fn remove(row: &mut Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    row.pointer_mut(if parent.is_empty() { "" } else { parent }).unwrap().as_object_mut().unwrap().remove(key).unwrap()
}

#[test]
fn a_missing_or_renamed_field_is_an_error_that_names_it() {
    for (file, pointer, field) in [
        ("schema-2.jsonl", "/status", "status"),
        ("schema-2.jsonl", "/backend", "backend"),
        ("schema-2.jsonl", "/config/max_tokens", "config.max_tokens"),
        ("schema-2.jsonl", "/test/n_gen", "test.n_gen"),
        ("schema-2.jsonl", "/parameters/requested", "parameters.requested"),
        ("schema-2.jsonl", "/samples_ts", "samples_ts"),
        ("schema-2.jsonl", "/schema_version", "schema_version"),
        ("schema-1.json", "/complete", "complete"),
        ("schema-1.json", "/parameters/engine", "parameters.engine"),
        ("llama-bench.jsonl", "/n_gen", "n_gen"),
        ("llama-bench.jsonl", "/model_type", "model_type"),
    ] {
        // Removed, then renamed (a `_renamed` suffix): both name the field the version requires.
        for rename in [false, true] {
            let text = lines_with(rows_of(file), 1, |row| {
                let value = remove(row, pointer);
                if rename {
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    let object = row.pointer_mut(parent).unwrap().as_object_mut().unwrap();
                    object.insert(format!("{key}_renamed"), value);
                }
            });
            let err = read_str(&text).unwrap_err();
            assert_eq!(err, format!("row 2: no `{field}` field"), "{file} without {pointer}");
        }
    }
    // The line is named where it differs from the row's position (a blank line before it).
    let text = lines_with(rows_of("schema-2.jsonl"), 0, |row| {
        remove(row, "/status");
    });
    assert_eq!(read_str(&format!("\n{text}")).unwrap_err(), "row 1 (line 2): no `status` field");
}

#[test]
fn a_wrong_type_a_wrong_status_and_an_unknown_version_are_named() {
    let text = lines_with(rows_of("schema-2.jsonl"), 0, |row| row["test"]["n_gen"] = "five".into());
    assert_eq!(read_str(&text).unwrap_err(), "row 1: `test.n_gen` is \"five\", not a whole number");
    let text = lines_with(rows_of("schema-2.jsonl"), 0, |row| row["status"] = "done".into());
    assert_eq!(read_str(&text).unwrap_err(), "row 1: `status` is \"done\", not ok, incomplete or failed");
    let text = lines_with(rows_of("schema-2.jsonl"), 3, |row| row["schema_version"] = 99.into());
    let err = read_str(&text).unwrap_err();
    assert!(err.starts_with("row 4: schema_version 99 is not one this velollm reads (1 to "), "{err}");
}

#[test]
fn the_file_is_named_and_a_single_row_is_a_file() {
    let dir = std::env::temp_dir().join(format!("velollm-results-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let single = dir.join("one.json");
    std::fs::write(&single, serde_json::to_string_pretty(&rows_of("schema-2.json")[0]).unwrap()).unwrap();
    let run = read_file(&single).unwrap();
    assert_eq!((run.layout, run.entries.len()), (Layout::SingleObject, 1));
    let missing = dir.join("missing.json");
    let err = read_file(&missing).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot read {}: ", missing.display())), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The current schema, as velollm's own exporter writes it (the export crate's golden files).
fn current(layout: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../velollm-export/tests/golden").join(format!("rows.{layout}"))
}

#[test]
fn the_current_schema_reads_as_schema_two_did() {
    // The same four rows written before and after schema 3 left out `complete`, `avg_ts` and `stddev_ts`: the
    // reader sees the same rows.
    for layout in ["json", "jsonl"] {
        let old = read_file(&data(&format!("schema-2.{layout}"))).unwrap();
        let new = read_file(&current(layout)).unwrap();
        assert_eq!(old.entries.len(), new.entries.len());
        for (o, n) in old.entries.iter().zip(&new.entries) {
            assert_eq!((o.schema_version, n.schema_version), (Some(2), Some(velollm_core::SCHEMA_VERSION)));
            assert_eq!(
                (o.label(), o.status, &o.samples, &o.parameters),
                (n.label(), n.status, &n.samples, &n.parameters)
            );
        }
    }
    // Schema 3 has no `complete`: its status is `status`, which it must have.
    let text = lines_with(rows_of("schema-2.jsonl"), 0, |row| {
        row["schema_version"] = velollm_core::SCHEMA_VERSION.into();
        remove(row, "/complete");
        remove(row, "/status");
    });
    assert_eq!(read_str(&text).unwrap_err(), "row 1: no `status` field");
}

#[test]
fn the_guides_jq_example_reads_the_rate() {
    // `jq '.[0].tokens_per_second' results.json`, the guide's example, on the current layout.
    let out = std::process::Command::new("jq").arg(".[0].tokens_per_second").arg(current("json")).output();
    let Ok(out) = out else {
        panic!("jq is not installed (apt-get install jq): the guide's example cannot be checked");
    };
    assert!(out.status.success());
    let rate: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(rate, 45.0, "the fixture's short_completion: rates 50 and 40");
}
