//! A blocking client for the parts of OpenAI's HTTP API a benchmark touches.
//!
//! Streams are Server-Sent Events: `data: {json}` lines, ended by `data: [DONE]`. Each line's arrival time is
//! taken the moment the line is complete, as the Ollama client does for its NDJSON.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// Why talking to the server failed. One line each, saying what to do next; never the API key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OpenAiError {
    #[error("invalid server address '{url}': {reason}; pass --url http://HOST:PORT/v1")]
    BadUrl { url: String, reason: String },
    #[error("no OpenAI-compatible server is running at {url} ({reason}); start the server, or point --url at it")]
    NotRunning { url: String, reason: String },
    #[error("the server at {url} did not answer within {seconds} s while {during}; check the server, or raise --ollama-idle-timeout (it applies to -b openai too)")]
    Timeout { url: String, during: String, seconds: u64 },
    #[error("the server at {url} wants an API key (HTTP {status}); put it in an environment variable and name it with --api-key-env VAR")]
    KeyMissing { url: String, status: u16 },
    #[error("the server at {url} refused the API key from ${var} (HTTP {status}: {message})")]
    KeyRefused { url: String, var: String, status: u16, message: String },
    #[error("the API key variable ${0} named by --api-key-env is not set (or empty)")]
    KeyVariableUnset(String),
    #[error("model '{model}' is not served at {url} (it serves: {served}); pass one of those with -m")]
    ModelMissing { model: String, url: String, served: String },
    #[error("the server at {url} answered {endpoint} with HTTP {status}: {message}")]
    Http { url: String, endpoint: String, status: u16, message: String },
    #[error("the server at {url} does not answer like an OpenAI-compatible API ({endpoint}: {detail}); check --url (it ends in /v1)")]
    NotOpenAi { url: String, endpoint: String, detail: String },
    #[error("the server reported an error during generation: {0}")]
    InStream(String),
    #[error("the response stream ended before its end (no [DONE] or finish_reason) after {chunks} chunks; the server may have crashed or closed the connection")]
    Truncated { chunks: usize },
    #[error(
        "the server ended the stream ([DONE]) without a finish_reason after {chunks} chunks: it stopped the request \
         (llama-cpp-python does so when another request arrives unless started with --interrupt_requests False)"
    )]
    Unfinished { chunks: usize },
    #[error("connection to {url} failed while {during}: {reason}")]
    Transport { url: String, during: String, reason: String },
    #[error("interrupted")]
    Cancelled,
}

impl OpenAiError {
    /// The failure's cause without what differs between requests (chunk counts), so a load run counts
    /// equal causes together.
    pub fn reason(&self) -> String {
        match self {
            OpenAiError::Truncated { .. } => "the response stream ended before its end (no [DONE])".into(),
            OpenAiError::Unfinished { .. } => "the server ended the stream without a finish_reason".into(),
            OpenAiError::Http { status, message, .. } => format!("HTTP {status}: {message}"),
            OpenAiError::Transport { reason, .. } => format!("connection failed: {reason}"),
            other => other.to_string(),
        }
    }

    /// The HTTP status the failure came with, when it came with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            OpenAiError::Http { status, .. }
            | OpenAiError::KeyMissing { status, .. }
            | OpenAiError::KeyRefused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An API key, and the name of the variable it came from. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub variable: String,
    value: String,
}

impl ApiKey {
    /// Reads the key from the environment variable `variable`; an unset or empty variable is an error.
    pub fn from_env(variable: &str) -> Result<ApiKey, OpenAiError> {
        match std::env::var(variable) {
            Ok(value) if !value.trim().is_empty() => {
                Ok(ApiKey { variable: variable.to_string(), value: value.trim().to_string() })
            }
            _ => Err(OpenAiError::KeyVariableUnset(variable.to_string())),
        }
    }

    /// `text` with every occurrence of the key replaced (servers echo a wrong key in their error text).
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.value, "[key]")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey(${}, hidden)", self.variable)
    }
}

/// Which OpenAI endpoint generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/chat/completions`: the prompt as one user message, the server's chat template applied.
    Chat,
    /// `/completions`: the prompt as is.
    Completions,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }
}

/// Connection limits: `idle` bounds every wait for the next bytes of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(5), idle: Duration::from_secs(120) }
    }
}

/// `http://host:port/v1` as given, without a trailing slash; a URL without a path gets `/v1`.
pub fn normalize_url(raw: &str) -> Result<String, OpenAiError> {
    let bad = |reason: &str| OpenAiError::BadUrl { url: raw.to_string(), reason: reason.to_string() };
    let trimmed = raw.trim().trim_end_matches('/');
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        return Err(bad("it needs http:// or https://"));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(bad("only http:// and https:// are supported"));
    }
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(bad("it names no host"));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(bad("it contains spaces"));
    }
    if let Some((_, port)) = host_port.rsplit_once(':').filter(|_| !host_port.ends_with(']')) {
        port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    }
    let path = if path.is_empty() { "/v1" } else { path };
    Ok(format!("{}://{host_port}{path}", scheme.to_ascii_lowercase()))
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default)]
    pub owned_by: Option<String>,
    /// vLLM's context length.
    #[serde(default)]
    pub max_model_len: Option<u64>,
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// OpenAI's and vLLM's `prompt_tokens_details.cached_tokens` (prefix-cache hits), when sent.
    #[serde(skip)]
    pub cached_tokens: Option<u64>,
}

/// llama.cpp's `timings` (llama-server): the server's own clock for the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct ServerTimings {
    #[serde(default)]
    pub prompt_n: Option<u64>,
    #[serde(default)]
    pub prompt_ms: Option<f64>,
    #[serde(default)]
    pub predicted_n: Option<u64>,
    #[serde(default)]
    pub predicted_ms: Option<f64>,
    #[serde(default)]
    pub cache_n: Option<u64>,
}

/// A streamed response as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    /// Request start → status line and headers received.
    pub response: Duration,
    /// Request start → each chunk's line received, and its text (content, or reasoning text; may be empty).
    pub chunks: Vec<(Duration, String)>,
    /// Request start → `[DONE]` (or the end of the body after a finish reason).
    pub total: Duration,
    pub usage: Option<Usage>,
    pub timings: Option<ServerTimings>,
    pub finish_reason: Option<String>,
    pub http_status: u16,
}

/// An OpenAI-compatible server at one base URL (`…/v1`).
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    url: String,
    key: Option<ApiKey>,
    timeouts: Timeouts,
    agent: ureq::Agent,
}

impl OpenAiClient {
    /// `pool` is the most connections kept open to the server (a load run's concurrency).
    pub fn new(url: &str, key: Option<ApiKey>, timeouts: Timeouts, pool: usize) -> OpenAiClient {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeouts.connect)
            .timeout_read(timeouts.idle)
            .timeout_write(timeouts.idle)
            .max_idle_connections(pool.max(1))
            .max_idle_connections_per_host(pool.max(1))
            .build();
        OpenAiClient { url: url.to_string(), key, timeouts, agent }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.url));
        match &self.key {
            Some(key) => request.set("Authorization", &format!("Bearer {}", key.value)),
            None => request,
        }
    }

    /// `GET /models`: the models served. The availability check: a server that is not there, wants a key, or
    /// is not an OpenAI-compatible API is said here, before any benchmark.
    pub fn models(&self) -> Result<Vec<ModelEntry>, OpenAiError> {
        #[derive(Deserialize)]
        struct Models {
            data: Vec<ModelEntry>,
        }
        let during = "listing its models (GET /models)";
        let response = self.request("GET", "/models").call().map_err(|e| self.error(e, "/models", during))?;
        let mut body = Vec::new();
        response.into_reader().take(16 << 20).read_to_end(&mut body).map_err(|e| self.io_error(&e, during))?;
        serde_json::from_slice::<Models>(&body).map(|m| m.data).map_err(|e| OpenAiError::NotOpenAi {
            url: self.url.clone(),
            endpoint: "GET /models".into(),
            detail: format!("{} ({})", e, one_line(&String::from_utf8_lossy(&body), 80)),
        })
    }

    /// A streaming request to `endpoint`. `start` is taken before the request is written; `cancel` is asked
    /// between chunks.
    pub fn stream(&self, endpoint: Endpoint, body: &Value, cancel: &AtomicBool) -> Result<Streamed, OpenAiError> {
        let during = "generating";
        let start = Instant::now();
        let response = self
            .request("POST", endpoint.path())
            .send_json(body)
            .map_err(|e| self.error(e, endpoint.path(), during))?;
        let response_at = start.elapsed();
        let http_status = response.status();
        let mut reader = BufReader::new(response.into_reader());
        let mut streamed = Streamed {
            response: response_at,
            chunks: Vec::new(),
            total: Duration::ZERO,
            usage: None,
            timings: None,
            finish_reason: None,
            http_status,
        };
        let mut line = Vec::new();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(OpenAiError::Cancelled);
            }
            line.clear();
            let read = reader.read_until(b'\n', &mut line);
            let arrived = start.elapsed();
            let ended = match read {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if is_timeout(&e) => return Err(self.io_error(&e, during)),
                // Any other failure once the body has begun (a reset, a chunked body cut short) is the stream
                // breaking off: the same cause, whatever the transport's wording.
                Err(_) => true,
            };
            if ended {
                // Some servers close without `[DONE]`; a finish reason says the answer was complete.
                if streamed.finish_reason.is_some() {
                    streamed.total = arrived;
                    return Ok(streamed);
                }
                return Err(OpenAiError::Truncated { chunks: streamed.chunks.len() });
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            let Some(data) = text.strip_prefix("data:") else {
                // Blank lines separate events; `:` comments, `event:` and `id:` lines carry nothing to time.
                if text.starts_with('{') {
                    return Err(self.not_openai(endpoint, "a JSON body instead of an event stream", text));
                }
                if !text.is_empty() && !text.starts_with(':') && !text.contains(':') {
                    return Err(self.not_openai(endpoint, "a body that is not an event stream", text));
                }
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                if streamed.finish_reason.is_none() {
                    return Err(OpenAiError::Unfinished { chunks: streamed.chunks.len() });
                }
                streamed.total = arrived;
                return Ok(streamed);
            }
            let event: Value = serde_json::from_str(data)
                .map_err(|e| self.not_openai(endpoint, &format!("an event that is not JSON ({e})"), data))?;
            if let Some(error) = event.get("error").filter(|e| !e.is_null()) {
                let message =
                    error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_string);
                return Err(OpenAiError::InStream(self.scrub(&one_line(&message, 300))));
            }
            if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                streamed.usage = Some(parse_usage(usage));
            }
            if let Some(timings) = event.get("timings").filter(|t| t.is_object()) {
                streamed.timings = serde_json::from_value(timings.clone()).ok();
            }
            let choice = event.get("choices").and_then(|c| c.get(0));
            if let Some(choice) = choice {
                let text = choice_text(choice);
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    streamed.finish_reason = Some(reason.to_string());
                }
                if let Some(text) = text {
                    streamed.chunks.push((arrived, text));
                }
            }
        }
    }

    fn not_openai(&self, endpoint: Endpoint, what: &str, sample: &str) -> OpenAiError {
        OpenAiError::NotOpenAi {
            url: self.url.clone(),
            endpoint: format!("POST {}", endpoint.path()),
            detail: format!("{what}: {}", self.scrub(&one_line(sample, 80))),
        }
    }

    fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.scrub(text),
            None => text.to_string(),
        }
    }

    fn error(&self, error: ureq::Error, endpoint: &str, during: &str) -> OpenAiError {
        match error {
            ureq::Error::Status(status, response) => {
                let body = response.into_string().unwrap_or_default();
                let message = self.scrub(&error_message(&body));
                match (status, &self.key) {
                    (401 | 403, None) => OpenAiError::KeyMissing { url: self.url.clone(), status },
                    (401 | 403, Some(key)) => {
                        OpenAiError::KeyRefused { url: self.url.clone(), var: key.variable.clone(), status, message }
                    }
                    _ => OpenAiError::Http { url: self.url.clone(), endpoint: endpoint.to_string(), status, message },
                }
            }
            ureq::Error::Transport(transport) => {
                let io = std::error::Error::source(&transport).and_then(|s| s.downcast_ref::<std::io::Error>());
                if let Some(io) = io.filter(|io| is_timeout(io)) {
                    return self.io_error(io, during);
                }
                let reason = self.scrub(&one_line(&transport.to_string(), 200));
                match transport.kind() {
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => OpenAiError::NotRunning {
                        url: self.url.clone(),
                        reason: match io.map(std::io::Error::kind) {
                            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".into(),
                            _ => reason,
                        },
                    },
                    ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => OpenAiError::NotOpenAi {
                        url: self.url.clone(),
                        endpoint: endpoint.to_string(),
                        detail: format!("not an HTTP response ({reason})"),
                    },
                    ureq::ErrorKind::Io if reason.contains("timed out") => self.timeout(during),
                    _ => OpenAiError::Transport { url: self.url.clone(), during: during.into(), reason },
                }
            }
        }
    }

    fn io_error(&self, error: &std::io::Error, during: &str) -> OpenAiError {
        if is_timeout(error) {
            return self.timeout(during);
        }
        OpenAiError::Transport { url: self.url.clone(), during: during.into(), reason: error.to_string() }
    }

    fn timeout(&self, during: &str) -> OpenAiError {
        OpenAiError::Timeout { url: self.url.clone(), during: during.into(), seconds: self.timeouts.idle.as_secs() }
    }
}

/// A choice's text: chat's `delta.content` (or `delta.reasoning_content` of reasoning models), completions'
/// `text`. `None` when the chunk has no text field at all (a usage-only or finish-only chunk).
fn choice_text(choice: &Value) -> Option<String> {
    if let Some(delta) = choice.get("delta") {
        let content = delta.get("content").and_then(Value::as_str);
        let reasoning = delta.get("reasoning_content").or_else(|| delta.get("reasoning")).and_then(Value::as_str);
        return match (reasoning, content) {
            (None, None) => None,
            (r, c) => Some(format!("{}{}", r.unwrap_or(""), c.unwrap_or(""))),
        };
    }
    choice.get("text").and_then(Value::as_str).map(str::to_string)
}

fn parse_usage(usage: &Value) -> Usage {
    let mut parsed: Usage = serde_json::from_value(usage.clone()).unwrap_or_default();
    parsed.cached_tokens = usage.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64);
    parsed
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// `text` on one line, at most `limit` characters.
fn one_line(text: &str, limit: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > limit {
        format!("{}…", line.chars().take(limit).collect::<String>())
    } else {
        line
    }
}

/// The message of an OpenAI error body (`{"error": {"message": …}}`, `{"error": "…"}`, `{"detail": …}`,
/// `{"message": …}`), or the body itself; one line, bounded.
fn error_message(body: &str) -> String {
    let value: Option<Value> = serde_json::from_str(body).ok();
    let message = value.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("message"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
    });
    let message = one_line(&message.unwrap_or_else(|| body.to_string()), 300);
    if message.is_empty() {
        "(empty body)".into()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_v1_when_they_have_no_path() {
        assert_eq!(normalize_url("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000/v1");
        assert_eq!(normalize_url("http://h:8000/v1/").unwrap(), "http://h:8000/v1");
        assert_eq!(normalize_url("HTTPS://h/api/v1").unwrap(), "https://h/api/v1");
        assert!(normalize_url("h:8000").unwrap_err().to_string().contains("http://"));
        assert!(normalize_url("ftp://h").is_err());
        assert!(normalize_url("http://h:99999/v1").unwrap_err().to_string().contains("port"));
        assert!(normalize_url("http://:80").is_err());
    }

    #[test]
    fn error_bodies_of_every_dialect() {
        assert_eq!(
            error_message(r#"{"error":{"message":"The model `x` does not exist.","code":404}}"#),
            "The model `x` does not exist."
        );
        assert_eq!(error_message(r#"{"error":"Model is overloaded"}"#), "Model is overloaded");
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_message("<html>\n<b>502</b></html>"), "<html> <b>502</b></html>");
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn chunk_text_of_chat_completions_and_reasoning() {
        let chat: Value = serde_json::json!({"delta": {"role": "assistant", "content": "Hi"}});
        assert_eq!(choice_text(&chat).as_deref(), Some("Hi"));
        let role_only: Value = serde_json::json!({"delta": {"role": "assistant"}});
        assert_eq!(choice_text(&role_only), None);
        let reasoning: Value = serde_json::json!({"delta": {"reasoning_content": "hm", "content": null}});
        assert_eq!(choice_text(&reasoning).as_deref(), Some("hm"));
        let completion: Value = serde_json::json!({"text": " world", "index": 0});
        assert_eq!(choice_text(&completion).as_deref(), Some(" world"));
        let usage = parse_usage(&serde_json::json!({"prompt_tokens": 5, "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 3}}));
        assert_eq!(usage, Usage { prompt_tokens: Some(5), completion_tokens: Some(7), cached_tokens: Some(3) });
    }

    #[test]
    fn the_key_never_shows() {
        std::env::set_var("VELOLLM_TEST_KEY_UNIT", "sk-secret-value");
        let key = ApiKey::from_env("VELOLLM_TEST_KEY_UNIT").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(key.scrub("Incorrect API key provided: sk-secret-value."), "Incorrect API key provided: [key].");
        assert!(ApiKey::from_env("VELOLLM_TEST_KEY_UNSET_X")
            .unwrap_err()
            .to_string()
            .contains("VELOLLM_TEST_KEY_UNSET_X"));
    }
}
