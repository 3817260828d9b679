//! End-to-end runs of the real `velollm` binary against a stand-in Ollama server (tests/common/
//! ollama_standin.rs, written from Ollama's API documentation, not a real Ollama), an Ollama-style model
//! store and a Hugging Face-style cache laid out in temporary directories around a real GGUF model.

mod common;
#[path = "common/ollama_standin.rs"]
mod ollama_standin;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;
use ollama_standin::{closed_port_url, Failure, Script, StandIn};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SmolLM2's sha256 (models/manifest.tsv): the blob name it gets in a test store.
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn assert_valid(results: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/result.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("docs/result.schema.json is a valid JSON Schema");
    let errors: Vec<String> =
        validator.iter_errors(results).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "output does not match docs/result.schema.json: {errors:#?}");
}

/// `velollm benchmark` with a short custom benchmark, extra `args`, and `env`; `-o out` when given.
fn bench(args: &[&str], env: &[(&str, &str)], out: Option<&Path>) -> Output {
    let mut cmd = velollm();
    cmd.args(["benchmark", "--prompt", "Count to ten:", "--max-tokens", "5"]);
    // Three timed iterations and one warm-up unless the test says otherwise.
    for (flag, default) in [("--iterations", "3"), ("--warmup", "1")] {
        if !args.contains(&flag) {
            cmd.args([flag, default]);
        }
    }
    cmd.args(args);
    if let Some(out) = out {
        cmd.arg("-o").arg(out);
    }
    // A test must not reach a real server or store by accident.
    cmd.env_remove("OLLAMA_HOST").env("OLLAMA_MODELS", "/nonexistent/velollm-store").env("HF_HUB_OFFLINE", "1");
    cmd.env("HF_HUB_CACHE", "/nonexistent/velollm-hf");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("velollm runs")
}

fn read_results(path: &Path) -> Value {
    let results: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_valid(&results);
    results
}

/// An Ollama-style store with `name:tag` → SmolLM2 (symlinked as its blob). Returns the root and the digest
/// Ollama would list (the manifest's sha256).
fn ollama_store(dir: &Path, model: &str, tag: &str) -> (PathBuf, String) {
    let root = dir.join("ollama-models");
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    let blob = root.join(format!("blobs/sha256-{SMOLLM2_SHA256}"));
    if !blob.exists() {
        std::os::unix::fs::symlink(common::model(SMOLLM2), &blob).unwrap();
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "digest": format!("sha256:{}", "c0".repeat(32)), "size": 400 },
        "layers": [
            { "mediaType": "application/vnd.ollama.image.template", "digest": format!("sha256:{}", "e1".repeat(32)), "size": 10 },
            { "mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{SMOLLM2_SHA256}"), "size": 98_000_000u64 }
        ]
    })
    .to_string();
    let manifest_dir = root.join("manifests/registry.ollama.ai/library").join(model);
    std::fs::create_dir_all(&manifest_dir).unwrap();
    std::fs::write(manifest_dir.join(tag), &manifest).unwrap();
    let digest: String = Sha256::digest(manifest.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    (root, format!("sha256:{digest}"))
}

#[test]
fn ollama_benchmark_records_client_and_server_clocks() {
    let server = StandIn::start(Script::healthy("tiny:1b"));
    let dir = scratch("ollama-run");
    let out_path = dir.join("r.json");
    let out =
        bench(&["-b", "ollama", "-m", "tiny:1b", "--ollama-url", &server.url, "--threads", "3"], &[], Some(&out_path));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("Backend: ollama"), "{text}");
    assert!(text.contains("Checking Ollama availability... ✓ (version 0.5.1)"), "{text}");
    assert!(text.contains("HTTP overhead:"), "{text}");

    let results = read_results(&out_path);
    let row = &results[0];
    assert_eq!(row["backend"], "ollama");
    assert_eq!(row["environment"]["backend_version"], "Ollama 0.5.1");
    // The headline decode rate is the server's: 5 tokens in 40 ms.
    assert_eq!(row["tokens_per_second"], 125.0);
    assert_eq!(row["prompt_tokens_per_second"], 2000.0);
    assert_eq!(row["eval_count"], 5);
    assert_eq!(row["total_tokens"], 15);
    // A server decides its own engine parameters: what it did not say is absent, not guessed.
    let effective = &row["parameters"]["effective"];
    assert!(effective["n_gpu_layers"].is_null() && effective["flash_attn"].is_null(), "{effective}");
    assert_eq!(effective["n_ctx"], 2048, "the context the server was given");
    assert_eq!(effective["n_threads"], 3, "sent because --threads was given");
    let model = &row["model"];
    assert_eq!(model["digest"], format!("sha256:{}", "d1".repeat(32)));
    assert_eq!(model["sha256"], "b1".repeat(32));
    assert_eq!(model["architecture"], "llama");
    assert_eq!(model["parameter_count"], 134_515_008u64);
    let record = &row["server"];
    assert_eq!(record["size_bytes"], 120_000_000u64);
    assert_eq!(record["size_vram_bytes"], 90_000_000u64);
    assert_eq!(record["load_server_ms"], 2.0);
    assert_eq!(record["options"]["num_thread"], 3);
    assert!(record["options"]["num_gpu"].is_null());
    assert!(row["load_time_ms"].as_f64().unwrap() > 0.0);

    let mut prompts = Vec::new();
    for sample in row["samples"].as_array().unwrap() {
        let m = &sample["metrics"];
        let raw = &sample["raw"]["server"];
        // The first chunk (60 ms) is empty: TTFT is the first chunk with text, one 30 ms gap later.
        let ttft = m["ttft_ms"].as_f64().unwrap();
        assert!((89.0..1000.0).contains(&ttft), "client-side TTFT {ttft}");
        assert_eq!(raw["chunks"].as_array().unwrap().len(), 5, "every chunk is kept with its arrival time");
        assert_eq!(raw["chunks"][2]["text"], " wide world");
        assert_eq!(raw["eval_duration_ns"], 40_000_000);
        assert_eq!(raw["total_duration_ns"], 100_000_000);
        let http = &m["http"];
        let client_total = http["client_total_ms"].as_f64().unwrap();
        assert!(client_total >= 180.0, "five chunks over 180 ms of delays: {client_total}");
        assert!((http["http_overhead_ms"].as_f64().unwrap() - (client_total - 100.0)).abs() < 1e-9);
        assert!(http["client_tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(m["inter_token_latency_ms"].is_null(), "chunks are not tokens");
        prompts.push(raw["prompt"].as_str().unwrap().to_string());
    }
    let overhead = &row["http_overhead"];
    assert!(overhead["overhead_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(overhead["server_total_ms"], 300.0);

    // What went over the wire: a preload, then warm-up and iterations with unique prompts.
    let preloads = server.requests_to("/api/generate");
    assert_eq!(preloads[0]["prompt"], "", "the model is preloaded with an empty prompt");
    assert_eq!(preloads[0]["options"]["num_ctx"], 2048);
    let sent = server.generations();
    assert_eq!(sent.len(), 4, "one warm-up and three iterations");
    for body in &sent {
        assert_eq!(body["raw"], true);
        assert_eq!(body["stream"], true);
        let options = &body["options"];
        assert_eq!((options["num_predict"].as_u64(), options["temperature"].as_f64()), (Some(5), Some(0.0)));
        assert_eq!((options["seed"].as_u64(), options["num_ctx"].as_u64()), (Some(42), Some(2048)));
        assert_eq!(options["num_thread"], 3, "--threads was given");
        assert!(options.get("num_gpu").is_none() && options.get("num_batch").is_none(), "not given: not sent");
        assert!(body["prompt"].as_str().unwrap().ends_with("Count to ten:"));
    }
    let mut unique: Vec<&str> = sent.iter().map(|b| b["prompt"].as_str().unwrap()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "every request has its own prompt prefix");
    assert!(prompts.iter().all(|p| unique.contains(&p.as_str())), "the recorded prompt is the one sent");
    // The server is left as it was found: the last request unloads the model.
    let generate_requests = server.requests_to("/api/generate");
    let last = generate_requests.last().unwrap();
    assert_eq!((last["prompt"].as_str(), last["keep_alive"].as_i64()), (Some(""), Some(0)), "{last}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keep_loaded_leaves_the_model_in_memory() {
    let server = StandIn::start(Script::healthy("tiny"));
    let out = bench(
        &[
            "-b",
            "ollama",
            "-m",
            "tiny",
            "--ollama-url",
            &server.url,
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--keep-loaded",
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let generate_requests = server.requests_to("/api/generate");
    assert_eq!(generate_requests.len(), 2, "a preload and one iteration: {generate_requests:?}");
    assert!(generate_requests.iter().all(|b| b.get("keep_alive").is_none()), "{generate_requests:?}");
}

#[test]
fn a_prompt_the_server_truncated_is_flagged() {
    // 12 prompt tokens + 5 generated fill a 16-token context: the server must have cut something.
    let server = StandIn::start(Script::healthy("tiny"));
    let dir = scratch("ollama-truncated");
    let out_path = dir.join("r.json");
    let out =
        bench(&["-b", "ollama", "-m", "tiny", "--ollama-url", &server.url, "--ctx-size", "16"], &[], Some(&out_path));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("filled the server's context"), "{}", stdout(&out));
    let row = &read_results(&out_path)[0];
    assert_eq!(row["samples"][0]["raw"]["server"]["truncated"], true);
    assert!(row["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("iterations [1, 2, 3]")));
    // With room to spare nothing is flagged.
    let out = bench(&["-b", "ollama", "-m", "tiny", "--ollama-url", &server.url], &[], Some(&out_path));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("filled the server's context"));
    assert_eq!(read_results(&out_path)[0]["samples"][0]["raw"]["server"]["truncated"], false);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_dying_in_iteration_k_keeps_iterations_before_it() {
    // Two requests are answered, the third stream is cut off mid-way.
    let script = Script { failure: Failure::Truncated, fail_after: 2, ..Script::healthy("tiny") };
    let server = StandIn::start(script);
    let dir = scratch("ollama-dies");
    let out_path = dir.join("r.json");
    let out = bench(
        &["-b", "ollama", "-m", "tiny", "--ollama-url", &server.url, "--iterations", "4", "--warmup", "0"],
        &[],
        Some(&out_path),
    );
    assert_clean_failure(&out, "benchmark failed; every row, marked incomplete, is in");
    assert!(stderr(&out).contains("repetition 3: "), "{}", stderr(&out));
    let row = &read_results(&out_path)[0];
    assert_eq!(row["status"], "incomplete");
    assert_eq!(row["iterations_completed"], 2);
    assert_eq!(row["samples"].as_array().unwrap().len(), 2);
    assert!(row["error"].as_str().unwrap().contains("ended without its final chunk"), "{}", row["error"]);
    assert_eq!(row["repetitions"]["stopped_because"], "error");
    assert!(row["tokens_per_second"].as_f64().is_some(), "the two finished iterations are measured");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn short_stops_and_omitted_fields_are_reported_not_hidden() {
    let mut script = Script::healthy("tiny");
    script.eval_count = 3;
    script.prompt_eval_count = 0;
    script.prompt_eval_duration_ns = 0;
    script.total_duration_ns = 0;
    script.load_duration_ns = 0;
    let server = StandIn::start(script);
    let dir = scratch("ollama-short");
    let out_path = dir.join("r.json");
    // OLLAMA_HOST without a scheme is honoured.
    let host = server.url.trim_start_matches("http://").to_string();
    let out = bench(
        &["-b", "ollama", "-m", "tiny", "--n-gpu-layers", "0", "--batch-size", "64"],
        &[("OLLAMA_HOST", &host)],
        Some(&out_path),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("stopped before 5 tokens"), "{}", stdout(&out));
    let row = &read_results(&out_path)[0];
    assert_eq!(row["eval_count"], 3);
    assert!(row["prompt_tokens_per_second"].is_null(), "no prompt fields: no prompt rate, not zero");
    assert!(row["http_overhead"].is_null(), "no server total: no overhead figure");
    assert_eq!(row["samples"][0]["metrics"]["stop_reason"], "end_of_sequence");
    assert_eq!(row["samples"][0]["raw"]["server"]["done_reason"], "stop");
    let sent = server.generations();
    assert_eq!(sent[0]["options"]["num_gpu"], 0);
    assert_eq!(sent[0]["options"]["num_batch"], 64);
    assert!(sent[0]["options"].get("num_thread").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_ollama_failure(script: Script, extra: &[&str], expected: &str) {
    let server = StandIn::start(script);
    let mut args = vec!["-b", "ollama", "-m", "tiny", "--ollama-url", &server.url];
    args.extend_from_slice(extra);
    let out = bench(&args, &[], None);
    assert_clean_failure(&out, expected);
}

#[test]
fn server_failures_are_one_line_errors() {
    let dir = scratch("ollama-down");
    let out_path = dir.join("r.json");
    let not_running = bench(&["-b", "ollama", "-m", "tiny", "--ollama-url", &closed_port_url()], &[], Some(&out_path));
    assert_clean_failure(&not_running, "Ollama is not running");
    assert!(stderr(&not_running).contains("ollama serve"), "{}", stderr(&not_running));
    // Checked before anything runs: no benchmark is attempted, no results file is written.
    assert!(!stdout(&not_running).contains("Running benchmark"), "{}", stdout(&not_running));
    assert!(!out_path.exists());
    let _ = std::fs::remove_dir_all(&dir);

    assert_ollama_failure(Script::healthy("other:7b"), &[], "pull it with: ollama pull tiny");
    let server = StandIn::start(Script::healthy("tiny"));
    let file = bench(&["-b", "ollama", "-m", "models/x.gguf", "--ollama-url", &server.url], &[], None);
    assert_clean_failure(&file, "takes a model name such as llama3.2:3b, not a file");
    let bad_url = bench(&["-b", "ollama", "-m", "tiny", "--ollama-url", "ftp://h"], &[], None);
    assert_clean_failure(&bad_url, "invalid Ollama address 'ftp://h'");
    let bad_list = bench(&["-b", "llamacpp,,ollama"], &[], None);
    assert_clean_failure(&bad_list, "expected a name or a comma list");
    let failing = |failure: Failure| Script { failure, ..Script::healthy("tiny") };
    assert_ollama_failure(failing(Failure::Status(500, "out of memory".into())), &[], "HTTP 500: out of memory");
    assert_ollama_failure(
        failing(Failure::InStream("runner crashed".into())),
        &[],
        "during generation: runner crashed",
    );
    assert_ollama_failure(failing(Failure::Malformed), &[], "malformed response from /api/generate");
    assert_ollama_failure(failing(Failure::Truncated), &[], "ended without its final chunk");
    assert_ollama_failure(
        failing(Failure::Stall(Duration::from_secs(4))),
        &["--ollama-idle-timeout", "1"],
        "did not answer within 1 s",
    );
}

#[test]
fn finished_benchmarks_survive_a_later_server_failure() {
    // Iterations 1 and warm-up 0 per benchmark: the suite's first benchmark finishes, the second fails.
    let script = Script { failure: Failure::InStream("boom".into()), fail_after: 1, ..Script::healthy("tiny") };
    let server = StandIn::start(script);
    let dir = scratch("ollama-partial");
    let out_path = dir.join("r.json");
    let out = velollm()
        .args(["benchmark", "-b", "ollama", "-m", "tiny", "--ollama-url", &server.url, "--max-tokens", "5"])
        .args(["--iterations", "1", "--warmup", "0", "-o", out_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_failure(&out, "2 of 3 runs did not complete; every row, marked failed, is in");
    assert!(stderr(&out).contains("Ollama reported an error during generation: boom"), "{}", stderr(&out));
    // The finished benchmark is kept; the ones the server failed are rows that say why.
    let results = read_results(&out_path);
    let rows = results.as_array().unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["ok", "failed", "failed"]);
    assert_eq!(rows[0]["config"]["name"], "short_completion");
    assert_eq!(rows[0]["samples"].as_array().unwrap().len(), 1);
    assert!(rows[1]["error"].as_str().unwrap().contains("boom"), "{}", rows[1]["error"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn llamacpp_runs_the_file_from_the_ollama_store_and_compares_backends() {
    let dir = scratch("ollama-compare");
    let (store, digest) = ollama_store(&dir, "tiny", "1b");
    let script = Script { digest: digest.clone(), blob_sha256: SMOLLM2_SHA256.into(), ..Script::healthy("tiny:1b") };
    let server = StandIn::start(script);
    let out_path = dir.join("r.json");
    // One thread and one iteration keep llama.cpp quick on a small, shared machine.
    let out = bench(
        &[
            "-b",
            "llamacpp,ollama",
            "-m",
            "ollama:tiny:1b",
            "--ollama-url",
            &server.url,
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ],
        &[("OLLAMA_MODELS", store.to_str().unwrap())],
        Some(&out_path),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("Backend comparison"), "{text}");
    assert!(text.contains("custom [llamacpp]:") && text.contains("custom [ollama]:"), "{text}");
    // Overall averages per backend: one engine's rows are never averaged with another's.
    assert!(text.contains("Overall Average [llamacpp]:") && text.contains("Overall Average [ollama]:"), "{text}");
    let results = read_results(&out_path);
    let rows = results.as_array().unwrap();
    let backends: Vec<&str> = rows.iter().map(|r| r["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["llamacpp", "ollama"]);
    for row in rows {
        assert_eq!(row["model"]["digest"], digest.as_str(), "the same model on both backends");
        assert_eq!(row["model"]["sha256"], SMOLLM2_SHA256);
    }
    assert!(rows[0]["model"]["path"].as_str().unwrap().ends_with(&format!("blobs/sha256-{SMOLLM2_SHA256}")));
    assert_eq!(rows[0]["eval_count"], 5, "llama.cpp generated max_tokens from the store's file");

    // A name without the prefix resolves the same way; a missing one says how to get it.
    let out = bench(
        &["-m", "tiny:1b", "--iterations", "1", "--warmup", "0", "--threads", "1", "-q"],
        &[("OLLAMA_MODELS", store.to_str().unwrap())],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bench(&["-m", "tiny:7b"], &[("OLLAMA_MODELS", store.to_str().unwrap())], None);
    assert_clean_failure(&out, "pull it with: ollama pull tiny:7b");

    // A model the in-process engine cannot find is bad input, said before any backend runs: the comparison
    // would be one-sided.
    let partial = dir.join("partial.json");
    let out = bench(
        &["-b", "llamacpp,ollama", "-m", "tiny:1b", "--ollama-url", &server.url, "--iterations", "1", "--warmup", "0"],
        &[],
        Some(&partial),
    );
    assert_clean_failure(&out, "model 'tiny:1b' is not in the Ollama model store");
    assert!(!stdout(&out).contains("Checking Ollama availability"), "{}", stdout(&out));
    assert!(!partial.exists(), "nothing ran, nothing was written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hugging_face_references_resolve_from_the_local_cache() {
    let dir = scratch("hf-cache");
    let commit = "4f3c2b1a00000000000000000000000000000000";
    let repo = dir.join("models--test-org--smol-GGUF");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::os::unix::fs::symlink(common::model(SMOLLM2), repo.join("snapshots").join(commit).join("smol.gguf")).unwrap();
    let out_path = dir.join("r.json");
    let env = [("HF_HUB_CACHE", dir.to_str().unwrap())];
    let out = bench(
        &["-m", "hf:test-org/smol-GGUF/smol.gguf", "--iterations", "1", "--warmup", "0", "--threads", "1"],
        &env,
        Some(&out_path),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let row = &read_results(&out_path)[0];
    assert_eq!(row["model"]["sha256"], SMOLLM2_SHA256);
    assert_eq!(row["model"]["reference"], "hf:test-org/smol-GGUF/smol.gguf");

    let out = bench(&["-m", "hf:test-org/smol-GGUF/missing.gguf"], &env, None);
    assert_clean_failure(&out, "is not in the Hugging Face cache");
    assert!(stderr(&out).contains(repo.to_str().unwrap()), "names the cache path: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_tests_on_a_server_are_failed_rows_that_say_why() {
    let server = StandIn::start(Script::healthy("tiny"));
    let dir = scratch("ollama-tokens");
    let out_path = dir.join("r.json");
    let out = velollm()
        .args(["benchmark", "-b", "ollama", "-m", "tiny", "--ollama-url", &server.url, "--tg", "4", "-r", "1"])
        .args(["-o", out_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clean_failure(&out, "(first, tg4): Ollama tokenizes on the server, so token-level tests");
    let row = &read_results(&out_path)[0];
    assert_eq!(row["status"], "failed");
    assert!(row["error"].as_str().unwrap().contains("need an in-process engine"), "{}", row["error"]);
    assert!(server.generations().is_empty(), "nothing was sent for a test the server cannot run");
    let _ = std::fs::remove_dir_all(&dir);
}
