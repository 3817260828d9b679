//! A stand-in for an Ollama server, written from Ollama's API documentation (docs/ollama.md): enough of
//! `/api/version`, `/api/tags`, `/api/show`, `/api/ps` and streaming `/api/generate` to drive velollm end to
//! end, with scripted chunk delays, multi-token chunks and every failure the client must survive.
//!
//! It listens on 127.0.0.1 on an ephemeral port, answers each connection on a thread of its own, and
//! records every request so tests can check what velollm sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// How `/api/generate` misbehaves, if at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    None,
    /// HTTP status with Ollama's `{"error": …}` body.
    Status(u16, String),
    /// A `{"error": …}` line after the first chunk of a 200 stream.
    InStream(String),
    /// A line that is not JSON after the first chunk.
    Malformed,
    /// The stream ends (cleanly) without a `done: true` chunk.
    Truncated,
    /// The server stops sending after the first chunk for this long, then closes.
    Stall(Duration),
}

/// The script the stand-in follows.
#[derive(Debug, Clone)]
pub struct Script {
    pub version: String,
    /// The one model it has: (name as listed, digest, GGUF blob sha256).
    pub model: String,
    pub digest: String,
    pub blob_sha256: String,
    /// Text of each chunk, and the delay before it is sent.
    pub chunks: Vec<(Duration, String)>,
    /// Tokens the server claims per request; fewer than `num_predict` makes a short stop.
    pub eval_count: u64,
    pub prompt_eval_count: u64,
    /// Server-side durations reported in the final chunk (0 = omitted, as Ollama does).
    pub eval_duration_ns: u64,
    pub prompt_eval_duration_ns: u64,
    pub total_duration_ns: u64,
    pub load_duration_ns: u64,
    pub failure: Failure,
    /// Generate requests (not counting the preload) answered normally before `failure` applies.
    pub fail_after: usize,
}

impl Script {
    /// A healthy server with `model`: 4 chunks (one empty, one of two tokens) 30 ms apart; 5 tokens in
    /// 40 ms of server decode time (125 tok/s), 12 prompt tokens in 6 ms.
    pub fn healthy(model: &str) -> Script {
        let gap = Duration::from_millis(30);
        Script {
            version: "0.5.1".into(),
            model: model.into(),
            digest: "sha256:".to_string() + &"d1".repeat(32),
            blob_sha256: "b1".repeat(32),
            chunks: vec![
                (Duration::from_millis(60), String::new()),
                (gap, "Hello".into()),
                (gap, " wide world".into()),
                (gap, "!".into()),
                (gap, " Bye".into()),
            ],
            eval_count: 5,
            prompt_eval_count: 12,
            eval_duration_ns: 40_000_000,
            prompt_eval_duration_ns: 6_000_000,
            total_duration_ns: 100_000_000,
            load_duration_ns: 2_000_000,
            failure: Failure::None,
            fail_after: 0,
        }
    }
}

/// A request as received: path and JSON body (Null when empty).
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
}

pub struct StandIn {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl StandIn {
    pub fn start(script: Script) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let generates = Arc::new(Mutex::new(0usize));
        let log = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (script, log, generates) = (Arc::clone(&script), Arc::clone(&log), Arc::clone(&generates));
                std::thread::spawn(move || {
                    let _ = serve(stream, &script, &log, &generates);
                });
            }
        });
        StandIn { url, received }
    }

    /// Bodies of the generate requests with a non-empty prompt, in order.
    pub fn generations(&self) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.path == "/api/generate" && r.body["prompt"].as_str().is_some_and(|p| !p.is_empty()))
            .map(|r| r.body.clone())
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Value> {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).map(|r| r.body.clone()).collect()
    }
}

/// A port on which nothing listens (bound, then released).
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn serve(
    stream: TcpStream,
    script: &Script,
    log: &Mutex<Vec<Received>>,
    generates: &Mutex<usize>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Received { path: path.clone(), body: body.clone() });

    let mut out = stream;
    let name_matches = |wanted: &str| {
        let full = |n: &str| if n.contains(':') { n.to_string() } else { format!("{n}:latest") };
        full(wanted) == full(&script.model)
    };
    let not_found =
        |out: &mut TcpStream, model: &str| respond(out, 404, &json!({ "error": format!("model '{model}' not found") }));
    match (method.as_str(), path.as_str()) {
        ("GET", "/api/version") => respond(&mut out, 200, &json!({ "version": script.version })),
        ("GET", "/api/tags") => respond(
            &mut out,
            200,
            &json!({ "models": [{ "name": script.model, "model": script.model, "size": 98_000_000u64,
                "digest": script.digest.trim_start_matches("sha256:"),
                "details": { "format": "gguf", "family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1" } }] }),
        ),
        ("GET", "/api/ps") => respond(
            &mut out,
            200,
            &json!({ "models": [{ "name": script.model, "model": script.model, "size": 120_000_000u64,
                "size_vram": 90_000_000u64, "context_length": 2048 }] }),
        ),
        ("POST", "/api/show") => {
            let model = body["model"].as_str().unwrap_or_default();
            if !name_matches(model) {
                return not_found(&mut out, model);
            }
            respond(
                &mut out,
                200,
                &json!({
                    "modelfile": format!("# Modelfile\nFROM /var/lib/ollama/blobs/sha256-{}\nPARAMETER stop x\n", script.blob_sha256),
                    "details": { "family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1" },
                    "model_info": { "general.architecture": "llama", "general.parameter_count": 134_515_008u64 },
                    "capabilities": ["completion"]
                }),
            )
        }
        ("POST", "/api/generate") => {
            let model = body["model"].as_str().unwrap_or_default();
            if !name_matches(model) {
                return not_found(&mut out, model);
            }
            if body["prompt"].as_str().unwrap_or_default().is_empty() {
                // An empty prompt loads the model, or unloads it with `keep_alive: 0` (Ollama's API docs).
                let unload = body["keep_alive"].as_i64() == Some(0) || body["keep_alive"].as_str() == Some("0");
                let reason = if unload { "unload" } else { "load" };
                return respond(
                    &mut out,
                    200,
                    &json!({ "model": model, "response": "", "done": true, "done_reason": reason,
                             "load_duration": script.load_duration_ns }),
                );
            }
            let index = {
                let mut count = generates.lock().unwrap();
                *count += 1;
                *count
            };
            let failure = if index > script.fail_after { script.failure.clone() } else { Failure::None };
            stream_generation(&mut out, script, &body, &failure)
        }
        _ => respond(&mut out, 404, &json!({ "error": "404 page not found" })),
    }
}

fn respond(out: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let text = body.to_string();
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}

/// One NDJSON line as an HTTP chunk (Ollama streams with chunked transfer encoding).
fn send_line(out: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let line = format!("{line}\n");
    write!(out, "{:x}\r\n{line}\r\n", line.len())?;
    out.flush()
}

fn stream_generation(out: &mut TcpStream, script: &Script, body: &Value, failure: &Failure) -> std::io::Result<()> {
    if let Failure::Status(status, message) = failure {
        return respond(out, *status, &json!({ "error": message }));
    }
    let model = body["model"].as_str().unwrap_or_default();
    let num_predict = body["options"]["num_predict"].as_u64().unwrap_or(u64::MAX);
    write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
    out.flush()?;
    for (i, (delay, text)) in script.chunks.iter().enumerate() {
        std::thread::sleep(*delay);
        send_line(
            out,
            &json!({ "model": model, "created_at": "2026-01-01T00:00:00Z", "response": text, "done": false })
                .to_string(),
        )?;
        if i == 0 {
            match failure {
                Failure::InStream(message) => {
                    return send_line(out, &json!({ "error": message }).to_string()).and_then(|_| end_chunks(out))
                }
                Failure::Malformed => {
                    return send_line(out, "{\"response\": \"oops\", \"done\": fal").and_then(|_| end_chunks(out))
                }
                Failure::Truncated => return end_chunks(out),
                Failure::Stall(pause) => {
                    std::thread::sleep(*pause);
                    return Ok(());
                }
                _ => {}
            }
        }
    }
    let eval_count = script.eval_count.min(num_predict);
    let mut last = json!({ "model": model, "created_at": "2026-01-01T00:00:01Z", "response": "", "done": true,
        "done_reason": if eval_count >= num_predict { "length" } else { "stop" } });
    // Ollama omits every field that is zero.
    for (key, value) in [
        ("total_duration", script.total_duration_ns),
        ("load_duration", script.load_duration_ns),
        ("prompt_eval_count", script.prompt_eval_count),
        ("prompt_eval_duration", script.prompt_eval_duration_ns),
        ("eval_count", eval_count),
        ("eval_duration", script.eval_duration_ns),
    ] {
        if value > 0 {
            last[key] = json!(value);
        }
    }
    send_line(out, &last.to_string())?;
    end_chunks(out)
}

fn end_chunks(out: &mut TcpStream) -> std::io::Result<()> {
    write!(out, "0\r\n\r\n")?;
    out.flush()
}
