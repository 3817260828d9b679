//! A labelled stand-in for an OpenAI-compatible server, for what the real server in the tests
//! (llama-cpp-python on a CPU) cannot show: API keys, 401/429/503 back-pressure, a stream cut mid-way, a
//! server on the port that is not OpenAI-compatible, vLLM's extra usage fields, and answers with no work
//! behind them (the load generator's own cost). Written from OpenAI's API reference and vLLM's documentation
//! (docs/servers.md), never from a server's source.
//!
//! It listens on 127.0.0.1 on an ephemeral port and answers each connection on a thread of its own, one
//! request per connection (`Connection: close`). Every request is recorded (path, authorization header, body)
//! so tests can check what velollm sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// How the generation endpoints misbehave, if at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    None,
    /// Every `every`-th generation request (1-based: 2 means requests 2, 4, 6, …) gets this status and an
    /// OpenAI error body: 429 or 503 back-pressure.
    Status {
        every: usize,
        status: u16,
        message: String,
    },
    /// Each stream is cut (the connection closed) after this many chunks, without `[DONE]`.
    CutAfter(usize),
    /// Every answer, `/models` included, is a plain web page: some other server holds the port.
    NotOpenAi,
}

/// The script the stand-in follows.
#[derive(Debug, Clone)]
pub struct Script {
    pub models: Vec<String>,
    /// Requests must carry `Authorization: Bearer KEY`; a wrong key is echoed in the 401 body, as OpenAI does.
    pub api_key: Option<String>,
    /// Text of each chunk, and the delay before it.
    pub chunks: Vec<(Duration, String)>,
    /// Send `usage` in a final chunk when the request asked for `stream_options.include_usage`.
    pub usage: bool,
    pub prompt_tokens: u64,
    /// vLLM's and OpenAI's `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
    /// vLLM's `max_model_len` in `/models`.
    pub max_model_len: Option<u64>,
    pub failure: Failure,
}

impl Script {
    /// A vLLM-like server: usage in the stream, cached tokens, `max_model_len`; 4 chunks 20 ms apart.
    pub fn vllm_like(model: &str) -> Script {
        let gap = Duration::from_millis(20);
        Script {
            models: vec![model.to_string()],
            api_key: None,
            chunks: vec![(gap, "One".into()), (gap, " two".into()), (gap, " three".into()), (gap, " four".into())],
            usage: true,
            prompt_tokens: 11,
            cached_tokens: Some(3),
            max_model_len: Some(4096),
            failure: Failure::None,
        }
    }

    /// Answers at once (no delay), `chunks` chunks of one word: the load generator's own cost, measured.
    pub fn instant(model: &str, chunks: usize) -> Script {
        Script { chunks: (0..chunks).map(|i| (Duration::ZERO, format!(" w{i}"))).collect(), ..Script::vllm_like(model) }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A running stand-in; it stops accepting when dropped.
pub struct StandIn {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl StandIn {
    /// Starts a stand-in following `script`.
    pub fn start(script: Script) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let generation_count = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (script, received, count) =
                        (Arc::clone(&script), Arc::clone(&received), Arc::clone(&generation_count));
                    std::thread::spawn(move || {
                        let _ = serve(stream, &script, &received, &count);
                    });
                }
            });
        }
        StandIn { port, received, stop }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    stream: TcpStream,
    script: &Script,
    received: &Mutex<Vec<Received>>,
    count: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    received.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        body: body.clone(),
    });

    if script.failure == Failure::NotOpenAi {
        return respond(&mut out, 200, "text/html", "<html><body>It works!</body></html>");
    }
    if let Some(key) = &script.api_key {
        let sent = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        if sent != Some(key.as_str()) {
            let message = match sent {
                Some(wrong) => format!("Incorrect API key provided: {wrong}."),
                None => "You didn't provide an API key.".to_string(),
            };
            return respond(&mut out, 401, "application/json", &error_body(&message, "invalid_request_error"));
        }
    }
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/v1/models") => {
            let data: Vec<Value> = script
                .models
                .iter()
                .map(|id| {
                    let mut entry = json!({ "id": id, "object": "model", "owned_by": "standin" });
                    if let Some(len) = script.max_model_len {
                        entry["max_model_len"] = json!(len);
                    }
                    entry
                })
                .collect();
            respond(&mut out, 200, "application/json", &json!({ "object": "list", "data": data }).to_string())
        }
        ("POST", "/v1/chat/completions" | "/v1/completions") => {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let model = body["model"].as_str().unwrap_or_default();
            if !script.models.iter().any(|m| m == model) {
                let message = format!("The model `{model}` does not exist.");
                return respond(&mut out, 404, "application/json", &error_body(&message, "NotFoundError"));
            }
            if let Failure::Status { every, status, message } = &script.failure {
                if n.is_multiple_of(*every) {
                    return respond(&mut out, *status, "application/json", &error_body(message, "server_error"));
                }
            }
            stream_answer(&mut out, script, &body, path.contains("chat"))
        }
        _ => respond(&mut out, 404, "application/json", &json!({ "detail": "Not Found" }).to_string()),
    }
}

fn error_body(message: &str, kind: &str) -> String {
    json!({ "error": { "message": message, "type": kind, "code": null } }).to_string()
}

fn respond(out: &mut TcpStream, status: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

/// A chunked event stream: one event per chunk, then usage (when asked and scripted), then `[DONE]`.
fn stream_answer(out: &mut TcpStream, script: &Script, body: &Value, chat: bool) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    let send = |out: &mut TcpStream, data: &str| -> std::io::Result<()> {
        let event = format!("data: {data}\n\n");
        out.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())?;
        out.flush()
    };
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(16) as usize;
    let chunks = &script.chunks[..script.chunks.len().min(max_tokens)];
    for (i, (delay, text)) in chunks.iter().enumerate() {
        if script.failure == Failure::CutAfter(i) {
            // Closing without the chunked terminator: the body ends mid-stream.
            return Ok(());
        }
        if !delay.is_zero() {
            std::thread::sleep(*delay);
        }
        let last = i + 1 == chunks.len();
        let finish = if last { json!("length") } else { Value::Null };
        let choice = if chat {
            json!({ "index": 0, "delta": { "content": text }, "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": text, "finish_reason": finish })
        };
        send(out, &json!({ "id": "standin", "object": "chunk", "choices": [choice] }).to_string())?;
    }
    let wants_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    if script.usage && wants_usage {
        let mut usage = json!({
            "prompt_tokens": script.prompt_tokens,
            "completion_tokens": chunks.len(),
            "total_tokens": script.prompt_tokens + chunks.len() as u64,
        });
        if let Some(cached) = script.cached_tokens {
            usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
        }
        send(out, &json!({ "id": "standin", "object": "chunk", "choices": [], "usage": usage }).to_string())?;
    }
    send(out, "[DONE]")?;
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}
