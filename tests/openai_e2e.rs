//! `-b openai` against a real OpenAI-compatible server: llama-cpp-python's (PyPI `llama-cpp-python[server]`,
//! installed by scripts/pyserver.sh, which the test command runs) on SmolLM2, on a free loopback port, with an
//! API key. One server for the whole file (started once, stopped when the last test ends), bounded in
//! requests: the guide's suite, a fixed prompt's token counts against the server's own usage, and the load
//! profiles (concurrency 1, 2, 4 and a Poisson rate).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY_VAR: &str = "VELOLLM_TEST_OPENAI_KEY";
/// The key the server is started with; it must appear in no output velollm writes.
const KEY: &str = "sk-velollm-e2e-7f3c1d9a";
const MODEL_ALIAS: &str = "smollm2";

/// The venv scripts/pyserver.sh installs llama-cpp-python into.
fn pyserver_python() -> PathBuf {
    let venv = std::env::var("VELOLLM_PYSERVER").unwrap_or_else(|_| "/var/tmp/velollm-pyserver".into());
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/pyserver.sh (scripts/test.sh does) to install llama-cpp-python's server",
        python.display()
    );
    python
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared server, started on first use. `--interrupt_requests False`: by default llama-cpp-python ends
/// a stream early when another request arrives (docs/servers.md), which a load test must not do.
fn server() -> &'static Mutex<Option<Server>> {
    static SERVER: OnceLock<Mutex<Option<Server>>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("velollm-pyserver-{port}.log"))).unwrap();
        // The server outlives no test run: a watcher thread ends it when this test process (its parent) is gone,
        // since a static is never dropped.
        let watched = "import os, sys, threading, time, runpy\n\
                       parent = os.getppid()\n\
                       def watch():\n    while os.getppid() == parent: time.sleep(0.5)\n    os._exit(0)\n\
                       threading.Thread(target=watch, daemon=True).start()\n\
                       sys.argv = ['llama_cpp.server'] + sys.argv[1:]\n\
                       runpy.run_module('llama_cpp.server', run_name='__main__')\n";
        let child = Command::new(pyserver_python())
            .args(["-c", watched, "--model"])
            .arg(model(SMOLLM2))
            .args(["--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--n_threads", "1", "--n_ctx", "2048", "--interrupt_requests", "False", "--api_key", KEY])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start llama-cpp-python's server");
        let server = Server { child, url: format!("http://127.0.0.1:{port}/v1") };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = ureq_get(&format!("{}/models", server.url)).is_some();
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "llama-cpp-python's server did not start within 120 s");
            std::thread::sleep(Duration::from_millis(250));
        }
        Mutex::new(Some(server))
    })
}

/// The server's URL, keeping it alive for the caller's test.
fn url() -> String {
    server().lock().unwrap_or_else(|p| p.into_inner()).as_ref().expect("server running").url.clone()
}

/// GET with the key, through the standard library only (the test must not share velollm's client).
fn ureq_get(url: &str) -> Option<String> {
    http("GET", url, None).filter(|(status, _)| *status == 200).map(|(_, body)| body)
}

/// A minimal HTTP/1.1 exchange over a TcpStream (Connection: close), with the key.
fn http(method: &str, url: &str, body: Option<&Value>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn bench(args: &[&str], out: &Path) -> Output {
    let output = velollm()
        .args(["benchmark", "-b", "openai", "--url", &url(), "-m", MODEL_ALIAS, "--api-key-env", KEY_VAR])
        .args(args)
        .arg("-o")
        .arg(out)
        .env(KEY_VAR, KEY)
        .output()
        .expect("velollm runs");
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!all.contains(KEY), "the API key was printed: {all}");
    let saved = std::fs::read_to_string(out).unwrap_or_default();
    assert!(!saved.contains(KEY), "the API key was saved in {}", out.display());
    output
}

fn rows(path: &Path) -> Vec<Value> {
    serde_json::from_str::<Value>(&std::fs::read_to_string(path).unwrap()).unwrap().as_array().unwrap().clone()
}

#[test]
fn the_guides_suite_runs_on_a_real_server_with_the_servers_token_counts() {
    let dir = scratch("openai-suite");
    let out = dir.join("suite.json");
    let run = bench(&["--iterations", "1", "--warmup", "0", "--max-tokens", "12"], &out);
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = rows(&out);
    assert_eq!(rows.len(), 3, "the guide's three benchmarks");
    for row in &rows {
        assert_eq!(row["status"], "ok", "{row}");
        assert_eq!(row["backend"], "openai");
        assert_eq!(row["model"]["name"], MODEL_ALIAS);
        assert_eq!(row["load_time_ms"], Value::Null, "the server loaded the model before velollm came");
        let server = &row["samples"][0]["raw"]["server"];
        // llama-cpp-python sends no usage in a stream (stream_options is ignored): chunks are counted, and said.
        assert_eq!(server["eval_count_source"], "chunks", "{server}");
        let text_chunks = server["chunks"].as_array().unwrap().iter().filter(|c| c["text"] != "").count() as u64;
        assert_eq!(server["eval_count"].as_u64(), Some(text_chunks));
        assert!((1..=12).contains(&text_chunks), "{text_chunks}");
        // No `timings`: the headline rate is the client's, from chunk arrivals.
        assert_eq!(server["rate_from_client"], true);
        assert!(row["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
        if text_chunks >= 2 {
            assert!(row["tokens_per_second"].as_f64().unwrap() > 0.0);
        }
    }
}

/// The chunks counted in a stream are the tokens the server's own usage reports for the same request
/// (the exact prompt velollm sent, greedy, non-streaming), and the texts agree.
#[test]
fn streamed_chunks_equal_the_servers_usage_for_the_same_request() {
    let dir = scratch("openai-usage");
    for endpoint in ["chat", "completions"] {
        // llama-cpp-python reuses the cached prefix of the previous prompt, and a different split of the prompt's
        // evaluation can change a greedy answer: both requests follow the same other request, so they start from
        // the same cache.
        let path = if endpoint == "chat" { "chat/completions" } else { "completions" };
        let reset = || {
            let body = json!({ "model": MODEL_ALIAS, "max_tokens": 1, "messages": [{ "role": "user", "content": "Zebra." }],
                               "prompt": "Zebra." });
            http("POST", &format!("{}/{path}", url()), Some(&body)).expect("the server answers");
        };
        reset();
        let out = dir.join(format!("{endpoint}.json"));
        let run = bench(
            &[
                "--prompt",
                "Name three colours.",
                "--max-tokens",
                "20",
                "--iterations",
                "1",
                "--warmup",
                "0",
                "--endpoint",
                endpoint,
            ],
            &out,
        );
        assert!(run.status.success(), "{}", stderr(&run));
        let row = &rows(&out)[0];
        let server = &row["samples"][0]["raw"]["server"];
        let prompt = server["prompt"].as_str().unwrap();
        let mut body = json!({ "model": MODEL_ALIAS, "max_tokens": 20, "temperature": 0, "seed": 42 });
        if endpoint == "chat" {
            body["messages"] = json!([{ "role": "user", "content": prompt }]);
        } else {
            body["prompt"] = json!(prompt);
        }
        reset();
        let (status, answer) = http("POST", &format!("{}/{path}", url()), Some(&body)).expect("the server answers");
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        let usage_tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
        assert_eq!(server["eval_count"].as_u64(), Some(usage_tokens), "{endpoint}: chunks vs usage");
        let streamed: String =
            server["chunks"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
        let text =
            answer["choices"][0]["message"]["content"].as_str().or(answer["choices"][0]["text"].as_str()).unwrap();
        assert_eq!(streamed, text, "{endpoint}: the streamed text is the non-streamed answer");
    }
}

#[test]
fn load_profiles_on_a_real_server_keep_every_request() {
    let dir = scratch("openai-load");
    let out = dir.join("load.json");
    let run = bench(
        &[
            "--prompt",
            "Say hello.",
            "--max-tokens",
            "6",
            "--concurrency",
            "1,2,4",
            "--request-rate",
            "4",
            "--requests",
            "4",
            "--warmup",
            "1",
            "--slo",
            "ttft=60s",
        ],
        &out,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = rows(&out);
    let names: Vec<&str> = rows.iter().map(|r| r["config"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["custom @ c1", "custom @ c2", "custom @ c4", "custom @ rate4"]);
    for (row, concurrency) in rows.iter().zip([Some(1), Some(2), Some(4), None]) {
        assert_eq!(row["status"], "ok", "{}", row["error"]);
        let load = &row["load"];
        assert_eq!((load["requests_sent"].as_u64(), load["completed"].as_u64()), (Some(4), Some(4)), "{load}");
        assert_eq!(load["failed"], 0);
        let requests = load["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 4, "every request's timeline is kept");
        let mut total = 0;
        for r in requests {
            let chunks = r["chunk_times_ns"].as_array().unwrap().len() as u64;
            assert_eq!(r["output_tokens"].as_u64(), Some(chunks), "counted as chunks with text: {r}");
            assert_eq!(r["output_tokens_source"], "chunks");
            assert!(
                r["sent_ns"].as_u64() <= r["response_ns"].as_u64() && r["response_ns"].as_u64() <= r["end_ns"].as_u64()
            );
            total += chunks;
        }
        assert_eq!(load["total_output_tokens"].as_u64(), Some(total));
        for metric in ["ttft_ms", "e2e_ms"] {
            let d = &load[metric];
            assert_eq!(d["count"], 4, "{metric}");
            let (p50, p90, p99, max) = (
                d["p50"].as_f64().unwrap(),
                d["p90"].as_f64().unwrap(),
                d["p99"].as_f64().unwrap(),
                d["max"].as_f64().unwrap(),
            );
            assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{metric}: {d}");
        }
        assert_eq!(
            load["goodput"].as_f64(),
            load["request_throughput"].as_f64(),
            "a 60 s TTFT bound: every request meets it"
        );
        match concurrency {
            // llama-cpp-python serves one request at a time; the client keeps c in flight (queued at the server).
            Some(c) => assert_eq!(load["max_in_flight"].as_u64(), Some(c), "closed loop of {c}"),
            None => {
                assert_eq!(load["profile"]["shape"]["mode"], "open");
                assert!(requests.iter().all(|r| r["scheduled_ns"].as_u64() <= r["sent_ns"].as_u64()));
            }
        }
    }
}

#[test]
fn a_real_server_refuses_a_missing_or_wrong_key_in_one_line() {
    let url = url();
    let missing = velollm()
        .args(["benchmark", "-b", "openai", "--url", &url, "-m", MODEL_ALIAS, "--prompt", "x", "--max-tokens", "2"])
        .output()
        .unwrap();
    assert_clean_failure(&missing, "wants an API key (HTTP 401)");
    let wrong = velollm()
        .args(["benchmark", "-b", "openai", "--url", &url, "-m", MODEL_ALIAS, "--prompt", "x", "--max-tokens", "2"])
        .args(["--api-key-env", KEY_VAR])
        .env(KEY_VAR, "sk-wrong-key-0000")
        .output()
        .unwrap();
    assert_clean_failure(&wrong, &format!("refused the API key from ${KEY_VAR}"));
    assert!(!stderr(&wrong).contains("sk-wrong-key-0000"));
    let unknown = velollm()
        .args(["benchmark", "-b", "openai", "--url", &url, "-m", "gpt-9", "--prompt", "x", "--max-tokens", "2"])
        .args(["--api-key-env", KEY_VAR, "--warmup", "0", "--iterations", "1"])
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    let err = stderr(&unknown);
    assert!(
        !unknown.status.success() && err.contains("model 'gpt-9' is not served") && err.contains(MODEL_ALIAS),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}
