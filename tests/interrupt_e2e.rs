//! Nothing lost: Ctrl-C in every phase (hashing, loading, a prompt batch, a server's wait) stops within about a
//! second and keeps what was measured; results survive a results directory that disappears mid-run; each
//! backend's start-up figure is its own.

mod common;
#[path = "common/ollama_standin.rs"]
#[allow(dead_code)]
mod ollama_standin;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ollama_standin::{Script, StandIn};
use serde_json::Value;

/// A running `velollm` whose stdout is collected as it is written.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child =
            velollm().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("velollm starts");
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stdout }
    }

    /// Waits until stdout contains `marker` (the phase to interrupt has begun).
    fn wait_for(&mut self, marker: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stdout.lock().unwrap().contains(marker) {
            assert!(self.child.try_wait().unwrap().is_none(), "velollm ended before '{marker}': {}", self.stdout());
            assert!(Instant::now() < deadline, "'{marker}' never appeared: {}", self.stdout());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends SIGINT and waits for the exit; returns (exit code, stderr, seconds from the signal to the exit).
    fn interrupt(mut self) -> (Option<i32>, String, f64) {
        let sent = Instant::now();
        let status = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = sent + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(Instant::now() < deadline, "velollm did not stop within 30 s of Ctrl-C");
            std::thread::sleep(Duration::from_millis(10));
        };
        let seconds = sent.elapsed().as_secs_f64();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (code, err, seconds)
    }
}

fn read_rows(path: &Path) -> Vec<Value> {
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rows.as_array().unwrap().clone()
}

/// The stop must come "within about a second": the handler waits 1.2 s for the run to wind down by itself, and a
/// loaded 2-core machine adds scheduling delays, so 4 s is the bound asserted.
const STOP_BOUND_S: f64 = 4.0;

#[test]
fn ctrl_c_during_a_long_prompt_batch_saves_the_finished_iterations() {
    // pp2048 in one batch of 2048 on Qwen2.5-0.5B takes seconds on the CPU: the interrupt lands inside one
    // llama_decode call, which cannot be stopped, so the handler saves and exits itself.
    let dir = scratch("int-prefill");
    let out_path = dir.join("r.json");
    let model_path = model(QWEN25);
    let mut run = Running::start(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "--pp",
        "2048",
        "--ctx-size",
        "2048",
        "-r",
        "5",
        "--warmup",
        "0",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    run.wait_for("Iteration 2/5...", Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(300));
    let (code, err, seconds) = run.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(seconds < STOP_BOUND_S, "stopped {seconds:.1} s after Ctrl-C");
    assert!(err.contains("interrupting: stopping iteration 2/5 of pp2048"), "says what it is finishing: {err}");
    // The finished first iteration is kept, in a row marked incomplete.
    let rows = read_rows(&out_path);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "incomplete");
    assert_eq!(rows[0]["error"], "interrupted");
    assert_eq!(rows[0]["samples"].as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["samples"][0]["raw"]["prompt_tokens"], 2048);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_while_loading_stops_the_load() {
    // Reading (not mapping) Qwen's 491 MB with --no-mmap: the load's progress callback sees the interrupt.
    let model_path = model(QWEN25);
    let mut run = Running::start(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "--no-mmap",
        "--prompt",
        "Hi",
        "--max-tokens",
        "2",
        "--iterations",
        "1",
    ]);
    run.wait_for("Loading model...", Duration::from_secs(120));
    let (code, err, seconds) = run.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(seconds < STOP_BOUND_S, "stopped {seconds:.1} s after Ctrl-C");
    // Either the load itself was stopped or (on a fast disk) the first warm-up right after it.
    assert!(
        err.contains("interrupting: stopping loading the model") || err.contains("interrupting: stopping the warm-up"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_while_hashing_a_multi_gb_file() {
    // A 3.4 GB synthetic Llama-3.2-3B Q8_0, written by velollm in seconds: hashing it takes seconds too, and
    // the header is printed just before the hashing starts.
    let dir = scratch("hashing");
    let path = dir.join("llama-3.2-3b.Q8_0.gguf");
    let out = run(&["synth", "--like", "llama-3.2-3b", "--quant", "q8_0", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let mut run =
        Running::start(&["benchmark", "-m", path.to_str().unwrap(), "--max-tokens", "2", "--iterations", "1"]);
    run.wait_for("greedy, seed", Duration::from_secs(60));
    let (code, err, seconds) = run.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(130), "{err}");
    assert!(seconds < STOP_BOUND_S, "stopped {seconds:.1} s after Ctrl-C");
    assert!(err.contains("interrupting: stopping reading and hashing the model file"), "{err}");
    assert!(err.contains("interrupted before any benchmark ran: nothing to save"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ctrl_c_while_waiting_for_a_servers_first_chunk() {
    // The stand-in holds its first chunk back for 20 s.
    let mut script = Script::healthy("tiny");
    script.chunks[0].0 = Duration::from_secs(20);
    let server = StandIn::start(script);
    let dir = scratch("int-server");
    let out_path = dir.join("r.json");
    let mut run = Running::start(&[
        "benchmark",
        "-b",
        "ollama",
        "-m",
        "tiny",
        "--ollama-url",
        &server.url,
        "--prompt",
        "Count:",
        "--max-tokens",
        "5",
        "--warmup",
        "0",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    run.wait_for("Iteration 1/", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let (code, err, seconds) = run.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(seconds < STOP_BOUND_S, "stopped {seconds:.1} s after Ctrl-C: {err}");
    assert!(err.contains("interrupting: stopping iteration 1/5 of custom"), "{err}");
    assert!(err.contains("0 rows"), "nothing was finished, nothing is claimed: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_results_directory_removed_mid_run_loses_nothing() {
    let dir = scratch("vanishing");
    let target = dir.join("gone");
    std::fs::create_dir_all(&target).unwrap();
    let out_path = target.join("r.json");
    let model_path = model(SMOLLM2);
    let run = Running::start(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "--max-tokens",
        "24",
        "--iterations",
        "2",
        "--warmup",
        "0",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    // Once the first row is written, the directory disappears.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out_path.exists() {
        assert!(Instant::now() < deadline, "the first row was never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&target).unwrap();
    let output = run.child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    let text = run.stdout.lock().unwrap().clone();
    assert_eq!(output.status.code(), Some(1), "{err}");
    // Said at once, while the run went on…
    assert!(err.contains("warning: cannot write results to"), "{err}");
    // …the summary still printed, and everything saved elsewhere, named in the error.
    assert!(text.contains("📊 Benchmark Summary"), "{text}");
    let line = err.lines().find(|l| l.contains("the results were saved to")).expect(&err);
    assert!(line.starts_with(&format!("error: could not write {}", out_path.display())), "{line}");
    let saved = line.rsplit("saved to ").next().unwrap().trim_end_matches(" instead");
    let rows = read_rows(Path::new(saved));
    assert_eq!(rows.len(), 3, "all three benchmarks are in the fallback file");
    assert!(rows.iter().all(|r| r["status"] == "ok"));
    let _ = std::fs::remove_file(saved);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_backend_times_its_own_start_up() {
    let dir = scratch("startup");
    let out_path = dir.join("r.json");
    let model_path = model(SMOLLM2);
    let out = run(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "-b",
        "llamacpp,candle",
        "-t",
        "1",
        "--prompt",
        "Write a hello world program in Python",
        "--max-tokens",
        "40",
        "--iterations",
        "3",
        "--warmup",
        "0",
        "-q",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_rows(&out_path);
    let (llamacpp, candle) = (&rows[0], &rows[1]);
    assert_eq!((llamacpp["backend"].as_str(), candle["backend"].as_str()), (Some("llamacpp"), Some("candle")));
    let candle_startup = candle["startup_to_first_timed_iteration_ms"].as_f64().unwrap();
    let llamacpp_work = llamacpp["total_time_ms"].as_f64().unwrap();
    // candle's figure covers its own load, not llama.cpp's three timed iterations before it.
    assert!(
        candle_startup < llamacpp_work + candle["load_time_ms"].as_f64().unwrap(),
        "candle's start-up {candle_startup} ms includes llama.cpp's run ({llamacpp_work} ms)"
    );
    assert!(candle_startup >= candle["load_time_ms"].as_f64().unwrap(), "it does include candle's own load");
    // candle ignores what it cannot do, and says so.
    let effective = &candle["parameters"]["effective"];
    assert_eq!((effective["type_k"].as_str(), effective["flash_attn"].as_str()), (Some("f32"), Some("off")));
    assert!(effective["n_batch"].is_null(), "candle has no batch size");
    assert!(candle["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("KV cache in f32")));
    let _ = std::fs::remove_dir_all(&dir);
}
