//! Bad input and bad servers for `-b openai` and the load profiles, against labelled stand-ins (velollm-fixtures'
//! `openai_standin` and tests/common/ollama_standin.rs, both written from the servers' documentation): what the
//! real server in openai_e2e.rs cannot show on a CPU machine — API keys refused, 429/503 back-pressure, a
//! stream cut mid-way, another kind of server on the port, vLLM's extra usage fields — and absurd load flags.
//! Every case is one clear line or a counted failure, never a panic, and every finished request is kept.

mod common;
// Only its server and closed-port helper are used here.
#[allow(dead_code)]
#[path = "common/ollama_standin.rs"]
mod ollama_standin;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;
use velollm_fixtures::openai_standin::{Failure, Script, StandIn};

fn assert_valid(results: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/result.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("docs/result.schema.json is a valid JSON Schema");
    let errors: Vec<String> =
        validator.iter_errors(results).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "output does not match docs/result.schema.json: {errors:#?}");
}

fn openai(url: &str, args: &[&str], env: &[(&str, &str)], out: Option<&Path>) -> Output {
    let mut cmd = velollm();
    cmd.args([
        "benchmark",
        "-b",
        "openai",
        "--url",
        url,
        "-m",
        "standin-model",
        "--prompt",
        "Count:",
        "--max-tokens",
        "4",
    ]);
    cmd.args(args);
    if let Some(out) = out {
        cmd.arg("-o").arg(out);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("velollm runs")
}

fn rows(path: &Path) -> Vec<Value> {
    let value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_valid(&value);
    value.as_array().unwrap().clone()
}

fn no_panic(out: &Output) {
    assert_ne!(out.status.code(), Some(101), "a panic: {}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

#[test]
fn vllm_like_usage_cached_tokens_and_context_are_recorded() {
    let standin = StandIn::start(Script::vllm_like("standin-model"));
    let dir = scratch("load-vllm");
    let out = dir.join("r.json");
    let run = openai(&standin.url(), &["--iterations", "2", "--warmup", "0"], &[], Some(&out));
    assert!(run.status.success(), "{}", stderr(&run));
    let row = &rows(&out)[0];
    let server = &row["samples"][0]["raw"]["server"];
    assert_eq!(server["eval_count"], 4, "usage.completion_tokens");
    assert_eq!(server["prompt_eval_count"], 11, "usage.prompt_tokens");
    assert_eq!(server["prompt_cached_tokens"], 3, "vLLM's prompt_tokens_details.cached_tokens");
    assert_eq!(server.get("eval_count_source"), None, "the server counted");
    assert_eq!(row["parameters"]["effective"]["n_ctx"], 4096, "max_model_len from /v1/models");
    // What velollm sent: greedy, the seed, usage asked for, ignore_eos for a fixed length, a unique prefix.
    let generations: Vec<Value> =
        standin.requests().into_iter().filter(|r| r.path.ends_with("/completions")).map(|r| r.body).collect();
    assert_eq!(generations.len(), 2);
    for body in &generations {
        assert_eq!(
            (body["temperature"].as_i64(), body["seed"].as_i64(), body["max_tokens"].as_i64()),
            (Some(0), Some(42), Some(4))
        );
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["ignore_eos"], true);
    }
    assert_ne!(generations[0]["messages"][0]["content"], generations[1]["messages"][0]["content"], "unique prefixes");
    let stop = openai(&standin.url(), &["--iterations", "1", "--warmup", "0", "--stop-at-eos"], &[], None);
    assert!(stop.status.success());
    let last = standin.requests().into_iter().last().unwrap();
    assert_eq!(last.body.get("ignore_eos"), None, "--stop-at-eos lets the server stop");
}

#[test]
fn keys_missing_wrong_and_right_and_never_shown() {
    const SECRET: &str = "sk-standin-secret-51e0";
    let standin = StandIn::start(Script { api_key: Some(SECRET.into()), ..Script::vllm_like("standin-model") });
    let url = standin.url();
    assert_clean_failure(&openai(&url, &[], &[], None), "wants an API key (HTTP 401)");
    let wrong = openai(&url, &["--api-key-env", "VELOLLM_E2E_KEY"], &[("VELOLLM_E2E_KEY", "sk-not-it-9")], None);
    assert_clean_failure(&wrong, "refused the API key from $VELOLLM_E2E_KEY");
    assert!(stderr(&wrong).contains("Incorrect API key provided: [key]"), "echoed key scrubbed: {}", stderr(&wrong));
    let unset = openai(&url, &["--api-key-env", "VELOLLM_E2E_KEY_UNSET"], &[], None);
    assert_clean_failure(&unset, "$VELOLLM_E2E_KEY_UNSET named by --api-key-env is not set");

    let dir = scratch("load-keys");
    let outputs: Vec<_> = ["r.json", "r.jsonl", "r.csv", "r.sql", "r.md"].iter().map(|f| dir.join(f)).collect();
    let mut args =
        vec!["--api-key-env", "VELOLLM_E2E_KEY", "--iterations", "1", "--concurrency", "2", "--requests", "2", "-v"];
    let paths: Vec<String> = outputs.iter().map(|p| p.display().to_string()).collect();
    for path in &paths {
        args.extend(["-o", path.as_str()]);
    }
    let run = openai(&url, &args, &[("VELOLLM_E2E_KEY", SECRET), ("RUST_LOG", "trace")], None);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!stdout(&run).contains(SECRET) && !stderr(&run).contains(SECRET), "the key was printed");
    for path in &outputs {
        assert!(!std::fs::read_to_string(path).unwrap().contains(SECRET), "the key was saved in {}", path.display());
    }
    let bearer = format!("Bearer {SECRET}");
    let sent = standin.requests().into_iter().filter(|r| r.path.ends_with("/completions")).collect::<Vec<_>>();
    assert!(sent.len() >= 3, "one warm-up and two timed requests");
    assert!(sent.iter().all(|r| r.authorization.as_deref() == Some(bearer.as_str())), "the key went in the header");
}

#[test]
fn a_server_that_is_down_or_not_openai_is_one_line() {
    let closed = ollama_standin::closed_port_url() + "/v1";
    assert_clean_failure(&openai(&closed, &[], &[], None), "no OpenAI-compatible server is running");
    let web = StandIn::start(Script { failure: Failure::NotOpenAi, ..Script::vllm_like("standin-model") });
    assert_clean_failure(&openai(&web.url(), &[], &[], None), "does not answer like an OpenAI-compatible API");
    assert_clean_failure(&openai("localhost:8000", &[], &[], None), "invalid server address");
    let no_url = velollm().args(["benchmark", "-b", "openai", "-m", "x", "--prompt", "p"]).output().unwrap();
    assert_clean_failure(&no_url, "--url http://HOST:PORT/v1");
    let no_model = velollm().args(["benchmark", "-b", "openai", "--url", &web.url()]).output().unwrap();
    assert_clean_failure(&no_model, "-b openai needs -m MODEL");
}

#[test]
fn back_pressure_is_counted_per_reason_and_the_run_goes_on() {
    let script = Script {
        failure: Failure::Status { every: 2, status: 429, message: "Too many requests; slow down".into() },
        ..Script::vllm_like("standin-model")
    };
    let standin = StandIn::start(script);
    let dir = scratch("load-429");
    let out = dir.join("r.json");
    let csv = dir.join("r.csv");
    let csv_arg = csv.display().to_string();
    let run = openai(
        &standin.url(),
        &["--concurrency", "1,2", "--request-rate", "50", "--requests", "6", "--warmup", "0", "-o", &csv_arg],
        &[],
        Some(&out),
    );
    no_panic(&run);
    assert!(run.status.success(), "some requests finished in every row: {}", stderr(&run));
    let rows = rows(&out);
    assert_eq!(rows.len(), 3, "every profile ran");
    let mut failed = 0;
    for row in &rows {
        let load = &row["load"];
        assert_eq!(row["status"], "ok");
        assert_eq!(load["requests_sent"], 6);
        assert_eq!(load["completed"].as_u64().unwrap() + load["failed"].as_u64().unwrap(), 6);
        failed += load["failed"].as_u64().unwrap();
        for (reason, count) in load["failures"].as_object().unwrap() {
            assert_eq!(reason, "HTTP 429: Too many requests; slow down");
            assert!(count.as_u64().unwrap() >= 1);
        }
        let kept = load["requests"].as_array().unwrap();
        assert_eq!(kept.len(), 6, "failed requests are kept too");
        assert!(kept.iter().filter(|r| r["error"].is_string()).all(|r| r["http_status"] == 429));
        assert!(row["warnings"].to_string().contains("requests failed"));
    }
    assert_eq!(failed, 9, "every second of the stand-in's 18 generation requests");
    assert!(stdout(&run).contains("failed: HTTP 429"), "{}", stdout(&run));
    // The CSV flattens the load figures: one column each, the failures as one cell.
    let csv = csv_records(&std::fs::read_to_string(&csv).unwrap());
    let cell = |name: &str| {
        csv[1][csv[0].iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))].as_str()
    };
    assert_eq!((cell("load_mode"), cell("load_concurrency"), cell("load_requests_sent")), ("closed", "1", "6"));
    assert_eq!(cell("load_failures"), "3 x HTTP 429: Too many requests; slow down");
    assert!(cell("load_ttft_p99_ms").parse::<f64>().unwrap() > 0.0);
    // The report draws latency and throughput against the three profiles.
    let html = dir.join("r.html");
    let report = velollm().arg("report").arg(&out).arg("-o").arg(&html).output().unwrap();
    assert!(report.status.success(), "{}", stderr(&report));
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("data-chart=\"load-latency\"").count(), 1, "one test, one backend: one latency chart");
    assert_eq!(page.matches("data-chart=\"load-throughput\"").count(), 1);
    for profile in ["c1", "c2", "rate50"] {
        assert!(page.contains(&format!("data-x=\"{profile}\" data-y=")), "a point at {profile}");
    }
}

#[test]
fn a_stream_cut_mid_way_fails_its_request_not_the_run() {
    let standin = StandIn::start(Script { failure: Failure::CutAfter(2), ..Script::vllm_like("standin-model") });
    let dir = scratch("load-cut");
    let out = dir.join("r.json");
    let run = openai(&standin.url(), &["--concurrency", "2", "--requests", "3", "--warmup", "0"], &[], Some(&out));
    no_panic(&run);
    assert!(!run.status.success(), "no request finished");
    let load_rows = rows(&out);
    assert_eq!(load_rows[0]["status"], "failed");
    assert_eq!(load_rows[0]["load"]["failures"]["the response stream ended before its end (no [DONE])"], 3);
    assert!(stderr(&run).lines().last().unwrap().starts_with("error: "), "{}", stderr(&run));

    // The suite path: the row fails with the same cause.
    let out = dir.join("suite.json");
    let run = openai(&standin.url(), &["--iterations", "1", "--warmup", "0"], &[], Some(&out));
    no_panic(&run);
    let row = &rows(&out)[0];
    assert_eq!(row["status"], "failed");
    assert!(row["error"].as_str().unwrap().contains("stream ended before its end"), "{}", row["error"]);
}

#[test]
fn absurd_load_flags_are_one_line_before_any_request() {
    let standin = StandIn::start(Script::vllm_like("standin-model"));
    let url = standin.url();
    for (args, expected) in [
        (vec!["--concurrency", "100000"], "invalid --concurrency 100000: out of range"),
        (vec!["--concurrency", "0"], "invalid --concurrency 0"),
        (vec!["--request-rate", "0"], "invalid --request-rate value '0'"),
        (vec!["--request-rate", "1e12"], "at most 100000"),
        (vec!["--request-rate", "fast"], "invalid --request-rate value 'fast'"),
        (vec!["--request-rate", "2", "--burstiness", "0"], "invalid --burstiness"),
        (vec!["--concurrency", "2", "--requests", "0"], "invalid --requests"),
        (vec!["--concurrency", "2", "--requests", "4", "--duration", "2s"], "not both"),
        (vec!["--concurrency", "2", "--duration", "forever"], "invalid --duration"),
        (vec!["--concurrency", "2", "--slo", "ttft=fast"], "invalid --slo"),
        (vec!["--requests", "4"], "add --concurrency, --request-rate or --sweep"),
        (vec!["--sweep", "--concurrency", "2"], "leave out --concurrency"),
        (vec!["--request-rate", "2", "--max-concurrency", "99999"], "invalid --max-concurrency"),
    ] {
        let run = openai(&url, &args, &[], None);
        assert_clean_failure(&run, expected);
    }
    assert!(standin.requests().iter().all(|r| !r.path.ends_with("completions")), "nothing was sent");
    let in_process = run(&["benchmark", "-m", SMOLLM2_PATH, "--concurrency", "2", "--prompt", "x"]);
    assert_clean_failure(&in_process, "need a server backend (-b openai or -b ollama)");
}

const SMOLLM2_PATH: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn sweep_finds_the_highest_rate_meeting_the_slo() {
    // 4 chunks 20 ms apart: every request takes about 80 ms, far inside a 10 s bound, so every step meets it
    // and the highest rate offered is the verdict.
    let standin = StandIn::start(Script::vllm_like("standin-model"));
    let dir = scratch("load-sweep");
    let out = dir.join("r.json");
    let run = openai(
        &standin.url(),
        &["--sweep", "2", "--requests", "4", "--warmup", "0", "--slo", "e2e=10s", "--max-concurrency", "8"],
        &[],
        Some(&out),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = rows(&out);
    let phases: Vec<&str> = rows.iter().map(|r| r["load"]["sweep"]["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["one_at_a_time", "flat_out", "between", "between"]);
    let rates: Vec<f64> = rows[2..].iter().map(|r| r["load"]["profile"]["shape"]["rate"].as_f64().unwrap()).collect();
    assert!(rates[0] < rates[1], "rates rise: {rates:?}");
    let highest = rates[1];
    let said = velollm_core::trim_float(highest);
    assert!(stdout(&run).contains(&format!("is {said} requests/s")), "{}", stdout(&run));
}

#[test]
fn ollamas_native_backend_takes_the_load_profiles_too() {
    let standin = ollama_standin::StandIn::start(ollama_standin::Script::healthy("llama3.2:3b"));
    let dir = scratch("load-ollama");
    let out = dir.join("r.json");
    let run = velollm()
        .args(["benchmark", "-b", "ollama", "--ollama-url", &standin.url, "-m", "llama3.2:3b", "--prompt", "Hi"])
        .args(["--max-tokens", "5", "--concurrency", "2", "--request-rate", "20", "--requests", "4", "--warmup", "0"])
        .arg("-o")
        .arg(&out)
        .env("OLLAMA_MODELS", "/nonexistent/velollm-store")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = rows(&out);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let load = &row["load"];
        assert_eq!((load["completed"].as_u64(), load["failed"].as_u64()), (Some(4), Some(0)));
        assert_eq!(load["total_output_tokens"], 20, "the server's eval_count (5) per request");
        assert_eq!(load["output_tokens_counted_by"], "usage");
        // The stand-in's chunks: four with text 30 ms apart after 60 ms.
        assert_eq!(load["itl_ms"]["count"], 4 * 3);
    }
    // compare pairs each profile with itself and tests it request by request (its samples are the requests).
    let copy = dir.join("copy.json");
    std::fs::copy(&out, &copy).unwrap();
    let compared = velollm().args(["compare", "--format", "json"]).arg(&out).arg(&copy).output().unwrap();
    assert!(compared.status.success(), "{}", stderr(&compared));
    let report: Value = serde_json::from_str(&stdout(&compared)).unwrap();
    let pairs = report["comparisons"][0]["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 2, "c2 with c2, rate20 with rate20: {report}");
    for pair in pairs {
        let metrics: Vec<(&str, u64, &str)> = pair["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["metric"].as_str().unwrap(), m["new"]["n"].as_u64().unwrap(), m["verdict"].as_str().unwrap()))
            .collect();
        assert_eq!(
            metrics,
            [
                ("tokens_per_second", 4, "no_change"),
                ("time_to_first_token_ms", 4, "no_change"),
                ("total_ms", 4, "no_change")
            ],
            "one sample per finished request"
        );
    }
}
