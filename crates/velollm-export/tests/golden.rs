//! Every exporter against a golden file, from constructed rows that hold what breaks formats: quotes, commas,
//! pipes and line breaks in a prompt, a model name and an error; an incomplete row; a failed row. Then the
//! files are read back the way their users read them: the SQL by the `sqlite3` command line, the CSV by an
//! RFC 4180 reader, the JSON Lines line by line.
//!
//! `VELOLLM_UPDATE_GOLDEN=1 cargo test -p velollm-export --test golden` rewrites the golden files after a
//! deliberate change; review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use velollm_core::BenchmarkResult;
use velollm_export::Format;
use velollm_fixtures::{text_samples_at, token_samples_at, Row};

const TRICKY_PROMPT: &str = "Say \"hi\", then: a|b\nnext line; it's done";
const TRICKY_MODEL: &str = "SmolLM2 \"135M\", test|model";
const TRICKY_ERROR: &str =
    "cannot create a context: \"n_ctx\" 99999, too big | try --ctx-size 4096\nsee docs/metrics.md; it's not a bug";

fn rows() -> Vec<BenchmarkResult> {
    let model = |row: Row| row.model(TRICKY_MODEL, "models/SmolLM2-135M-Instruct.Q4_1.gguf", Some("ab12"));
    [
        model(Row::text("short_completion", TRICKY_PROMPT, 5, text_samples_at(&[50.0, 40.0], 5, 21.5))),
        model(Row::tokens(512, 0, 0, token_samples_at(512, 0, &[1000.0, 1100.0, 1050.0]))),
        model(Row::tokens(0, 128, 0, token_samples_at(0, 128, &[60.0, 62.0])).threads(4).incomplete("interrupted")),
        model(Row::tokens(512, 0, 0, vec![]).threads(4).failed(TRICKY_ERROR)),
    ]
    .iter()
    .map(Row::build)
    .collect()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check_golden(format: Format, text: &str) {
    let path = golden_dir().join(format!("rows.{}", format.name()));
    if std::env::var_os("VELOLLM_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (VELOLLM_UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != text {
        let line = expected.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{} differs from the golden file at line {}:\n  golden: {:?}\n  now:    {:?}\n(VELOLLM_UPDATE_GOLDEN=1 rewrites it after a deliberate change)",
            format,
            line + 1,
            expected.lines().nth(line),
            text.lines().nth(line)
        );
    }
}

#[test]
fn every_format_matches_its_golden_file() {
    let rows = rows();
    for format in Format::ALL {
        check_golden(format, &format.exporter().document(&rows));
    }
}

#[test]
fn appending_formats_are_a_prelude_and_one_record_per_row() {
    let rows = rows();
    for format in Format::ALL {
        let exporter = format.exporter();
        let Some(appending) = exporter.appending() else { continue };
        let mut text = appending.prelude();
        for (i, row) in rows.iter().enumerate() {
            text.push_str(&appending.record(row));
            // A file cut after any record is the document of the rows so far.
            assert_eq!(text, exporter.document(&rows[..=i]), "{format} after row {i}");
        }
    }
}

/// An RFC 4180 reader, written independently of the exporter: fields, with quoted fields unquoted.
fn read_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && record.is_empty(), "the CSV ends inside a record");
    records
}

#[test]
fn csv_reads_back_field_for_field() {
    let rows = rows();
    let text = Format::Csv.exporter().document(&rows);
    assert!(text.ends_with("\r\n"));
    let records = read_csv(&text);
    assert_eq!(records.len(), 1 + rows.len(), "a header and a record per row");
    let header = &records[0];
    assert!(records.iter().all(|r| r.len() == header.len()), "every record has every column");
    let column = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(records[1][column("prompt")], TRICKY_PROMPT);
    assert_eq!(records[1][column("model_name")], TRICKY_MODEL);
    assert_eq!(records[4][column("status")], "failed");
    assert_eq!(records[4][column("error")], TRICKY_ERROR);
    assert_eq!(records[4][column("tokens_per_second")], "", "nothing measured is empty, not zero");
    assert_eq!(records[3][column("status")], "incomplete");
    assert_eq!(records[3][column("n_threads")], "4");
    assert_eq!(records[2][column("samples_ts")].split(',').count(), 3);
    assert_eq!(records[1][column("n_gpu_layers")], "all");
    let rate: f64 = records[2][column("avg_ts")].parse().unwrap();
    assert!((rate - 1050.0).abs() < 1e-6, "{rate}");
}

#[test]
fn markdown_cells_cannot_break_the_table() {
    let text = Format::Markdown.exporter().document(&rows());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 4, "header, rule, a line per row:\n{text}");
    let unescaped_pipes = |line: &str| line.match_indices('|').filter(|(i, _)| !line[..*i].ends_with('\\')).count();
    let columns = unescaped_pipes(lines[0]);
    assert!(lines.iter().all(|l| unescaped_pipes(l) == columns), "{text}");
    assert!(lines[0].contains("threads"), "threads vary: {}", lines[0]);
    assert!(!lines[0].contains("n_batch"), "constant parameters are not columns: {}", lines[0]);
    assert!(lines[5].contains("failed: cannot create a context"), "{}", lines[5]);
    assert!(lines[4].contains("(incomplete)"), "{}", lines[4]);
    assert!(lines[2].contains("test\\|model"), "{}", lines[2]);
}

fn sqlite3(db: &Path, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the sqlite3 command line is installed (Debian package sqlite3; scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "sqlite3 failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sql_loads_into_sqlite_and_keeps_every_value() {
    let rows = rows();
    let sql = Format::Sql.exporter().document(&rows);
    let dir = std::env::temp_dir().join(format!("velollm-golden-sql-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("results.db");
    // `sqlite3 db < results.sql`, twice: the table is created once, the second run's rows are appended.
    sqlite3(&db, &sql);
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM velollm;").trim(), "4");
    sqlite3(&db, &sql);
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM velollm;").trim(), "8");
    // Strings come back byte for byte (quotes, pipes, line breaks), checked by SQLite itself.
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let same = sqlite3(
        &db,
        &format!(
            "SELECT count(*) FROM velollm WHERE error = {} AND status = 'failed' AND tokens_per_second IS NULL;",
            quoted(TRICKY_ERROR)
        ),
    );
    assert_eq!(same.trim(), "2");
    let same = sqlite3(&db, &format!("SELECT count(*) FROM velollm WHERE prompt = {};", quoted(TRICKY_PROMPT)));
    assert_eq!(same.trim(), "2");
    // Numbers are numbers: a query can sort and compute on them.
    let out = sqlite3(
        &db,
        "SELECT benchmark, n_threads, typeof(avg_ts), round(avg_ts, 1) FROM velollm \
         WHERE rowid <= 4 AND avg_ts IS NOT NULL ORDER BY avg_ts DESC;",
    );
    assert_eq!(out, "pp512|2|real|1050.0\ntg128|4|real|61.0\n");
    assert_eq!(sqlite3(&db, "SELECT DISTINCT n_gpu_layers, typeof(n_gpu_layers) FROM velollm;"), "all|text\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn jsonl_lines_are_whole_rows() {
    let rows = rows();
    let text = Format::Jsonl.exporter().document(&rows);
    // Compared as JSON values: serde_json's default float parsing may differ from the original in the last bit.
    let value = |rows: &[BenchmarkResult]| serde_json::to_value(rows).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), rows.len());
    let array: serde_json::Value = serde_json::from_str(&Format::Json.exporter().document(&rows)).unwrap();
    assert_eq!(serde_json::Value::Array(lines.clone()), array, "the JSON array holds the same objects");
    for (line, row) in lines.iter().zip(&rows) {
        let back: BenchmarkResult = serde_json::from_value(line.clone()).unwrap();
        assert_eq!((&back.config, back.status, &back.error), (&row.config, row.status, &row.error));
        assert_eq!(back.samples.len(), row.samples.len());
    }
    assert_eq!(value(&rows).as_array().unwrap().len(), 4);
}
