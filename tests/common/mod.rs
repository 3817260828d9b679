//! Helpers shared by the end-to-end tests: the built `velollm` binary, the real test models, scratch dirs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// A real model from models/ (fetched by scripts/fetch-models.sh, which the test command runs first).
pub fn model(file: &str) -> PathBuf {
    let path = repo_root().join("models").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)", path.display());
    path
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
pub const QWEN25: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

pub fn velollm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_velollm"));
    cmd.current_dir(repo_root());
    // Every benchmark adds its run to a history; the tests' runs go to one of their own, never to the
    // user's ~/.local/share (a test that checks the history passes --history or sets this itself).
    cmd.env("VELOLLM_HISTORY", test_history());
    cmd
}

/// The history the end-to-end tests' benchmarks are kept in: one file per test binary, in the temp dir.
pub fn test_history() -> PathBuf {
    std::env::temp_dir().join(format!("velollm-e2e-history-{}.db", std::process::id()))
}

pub fn run(args: &[&str]) -> Output {
    velollm().args(args).output().expect("velollm runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh scratch directory unique to this test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("velollm-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts the failure contract: non-zero exit, exactly one line on stderr starting with `error:` and
/// containing `expected`, no panic.
pub fn assert_clean_failure(out: &Output, expected: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    assert_ne!(out.status.code(), Some(101), "exit code 101 means a panic: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "error line must start with 'error: ': {err}");
    assert!(lines[0].contains(expected), "expected '{expected}' in: {err}");
}

/// Records of an RFC 4180 document (quoted fields may hold line breaks).
pub fn csv_records(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}
