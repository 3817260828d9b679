//! A blocking client for the parts of Ollama's HTTP API a benchmark touches.
//!
//! Blocking on purpose: sessions run on the runner's blocking thread, and a streamed response is read line
//! by line from the socket, so each chunk's arrival time is taken the moment its line is complete.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// Why talking to Ollama failed. One line each, saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum OllamaError {
    #[error("invalid Ollama address '{url}': {reason}; pass --ollama-url http://HOST:PORT")]
    BadUrl { url: String, reason: String },
    #[error(
        "Ollama is not running at {url} ({reason}); start it with `ollama serve` (or `systemctl start ollama`), \
         or point --ollama-url (or OLLAMA_HOST) at the server"
    )]
    NotRunning { url: String, reason: String },
    #[error("Ollama at {url} did not answer within {seconds} s while {during}; check the server, or raise {flag}")]
    Timeout { url: String, during: String, seconds: u64, flag: &'static str },
    #[error("model '{model}' is not available on the Ollama server at {url}; pull it with: ollama pull {model}")]
    ModelMissing { model: String, url: String },
    #[error("Ollama at {url} answered {endpoint} with HTTP {status}: {message}")]
    Http { url: String, endpoint: String, status: u16, message: String },
    #[error("Ollama reported an error during generation: {0}")]
    InStream(String),
    #[error("Ollama sent a malformed response from {endpoint}: {detail}")]
    Malformed { endpoint: String, detail: String },
    #[error(
        "Ollama's response stream ended without its final chunk (done: true) after {chunks} chunks; the server \
         may have crashed or closed the connection (see its log)"
    )]
    Truncated { chunks: usize },
    #[error("connection to Ollama at {url} failed while {during}: {reason}")]
    Transport { url: String, during: String, reason: String },
    #[error(
        "the ollama backend takes a model name such as llama3.2:3b, not a file ('{0}'); use -b llamacpp for files"
    )]
    NotAName(String),
    #[error("model '{name}' is not in the Ollama model store (looked in {looked_in}); pull it with: ollama pull {name}, or set OLLAMA_MODELS")]
    NotInStore { name: String, looked_in: String },
    #[error("invalid Ollama model name '{name}': {reason}")]
    BadName { name: String, reason: String },
    #[error("Ollama model store entry {path} is unusable: {reason}")]
    BadStoreEntry { path: String, reason: String },
}

/// Connection limits. `idle` bounds every wait for the next bytes of a response, so a stalled stream
/// fails instead of hanging; `load` replaces it for the preload, where a large model may take minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub idle: Duration,
    pub load: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(5), idle: Duration::from_secs(120), load: Duration::from_secs(600) }
    }
}

/// One entry of `/api/tags`.
#[derive(Debug, Clone, Deserialize)]
pub struct TagEntry {
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub digest: Option<String>,
}

/// One entry of `/api/ps`.
#[derive(Debug, Clone, Deserialize)]
pub struct RunningModel {
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub size_vram: Option<u64>,
    #[serde(default)]
    pub context_length: Option<u64>,
}

/// What `/api/show` says about a model (the parts velollm records).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ShowResponse {
    #[serde(default)]
    pub details: ShowDetails,
    #[serde(default)]
    pub model_info: serde_json::Map<String, Value>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub modelfile: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ShowDetails {
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub parameter_size: Option<String>,
    #[serde(default)]
    pub quantization_level: Option<String>,
}

/// One NDJSON line of `/api/generate`. Every metric is optional: Ollama omits fields equal to zero.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerateChunk {
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub total_duration: Option<u64>,
    #[serde(default)]
    pub load_duration: Option<u64>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub eval_duration: Option<u64>,
}

/// A streamed generation as received: every chunk with its arrival time, and the final chunk.
#[derive(Debug, Clone)]
pub struct StreamedGeneration {
    /// (request start → line received, text) for every chunk before the final one (and the final one too
    /// when it carries text).
    pub chunks: Vec<(Duration, String)>,
    pub last: GenerateChunk,
    /// Request start → final chunk received.
    pub total: Duration,
}

/// An Ollama server at one address.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    url: String,
    timeouts: Timeouts,
    agent: ureq::Agent,
    load_agent: ureq::Agent,
}

impl OllamaClient {
    pub fn new(url: &str, timeouts: Timeouts) -> OllamaClient {
        let agent_with = |read: Duration| {
            ureq::AgentBuilder::new().timeout_connect(timeouts.connect).timeout_read(read).timeout_write(read).build()
        };
        OllamaClient {
            url: url.to_string(),
            timeouts,
            agent: agent_with(timeouts.idle),
            load_agent: agent_with(timeouts.load),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /api/version`: the server's version. The availability check.
    pub fn version(&self) -> Result<String, OllamaError> {
        #[derive(Deserialize)]
        struct Version {
            version: String,
        }
        let during = "checking its version (/api/version)";
        let response = self.agent.get(&self.endpoint("/api/version")).call().map_err(|e| self.error(e, during))?;
        let version: Version = self.read_json(response, "/api/version")?;
        Ok(version.version)
    }

    /// `GET /api/tags`: the models the server has.
    pub fn tags(&self) -> Result<Vec<TagEntry>, OllamaError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Vec<TagEntry>,
        }
        let response = self
            .agent
            .get(&self.endpoint("/api/tags"))
            .call()
            .map_err(|e| self.error(e, "listing its models (/api/tags)"))?;
        Ok(self.read_json::<Tags>(response, "/api/tags")?.models)
    }

    /// `POST /api/show`: details of `model`; a missing model is [`OllamaError::ModelMissing`].
    pub fn show(&self, model: &str) -> Result<ShowResponse, OllamaError> {
        let response = self
            .agent
            .post(&self.endpoint("/api/show"))
            .send_json(serde_json::json!({ "model": model }))
            .map_err(|e| self.model_error(e, model, "describing the model (/api/show)"))?;
        self.read_json(response, "/api/show")
    }

    /// `GET /api/ps`: the models loaded now.
    pub fn running(&self) -> Result<Vec<RunningModel>, OllamaError> {
        #[derive(Deserialize)]
        struct Ps {
            #[serde(default)]
            models: Vec<RunningModel>,
        }
        let response = self
            .agent
            .get(&self.endpoint("/api/ps"))
            .call()
            .map_err(|e| self.error(e, "listing loaded models (/api/ps)"))?;
        Ok(self.read_json::<Ps>(response, "/api/ps")?.models)
    }

    /// Loads the model with an empty prompt (no generation) and returns the final response and the client's
    /// wall clock for it.
    pub fn preload(&self, body: &Value) -> Result<(GenerateChunk, Duration), OllamaError> {
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let start = Instant::now();
        let response = self
            .load_agent
            .post(&self.endpoint("/api/generate"))
            .send_json(body)
            .map_err(|e| self.model_error(e, &model, "loading the model"))?;
        let chunk: GenerateChunk = self.read_json(response, "/api/generate")?;
        let elapsed = start.elapsed();
        if let Some(error) = chunk.error {
            return Err(OllamaError::InStream(error));
        }
        Ok((chunk, elapsed))
    }

    /// Unloads the model from the server's memory (`keep_alive: 0` on an empty request).
    pub fn unload(&self, model: &str) -> Result<(), OllamaError> {
        let body = serde_json::json!({ "model": model, "prompt": "", "stream": false, "keep_alive": 0 });
        let response = self
            .agent
            .post(&self.endpoint("/api/generate"))
            .send_json(&body)
            .map_err(|e| self.model_error(e, model, "unloading the model"))?;
        let chunk: GenerateChunk = self.read_json(response, "/api/generate")?;
        match chunk.error {
            Some(error) => Err(OllamaError::InStream(error)),
            None => Ok(()),
        }
    }

    /// A streaming `/api/generate`. `start` is taken before the request is sent; each chunk's time is read
    /// when its line has arrived. `keep_going` is asked between chunks; when it says no, the stream is
    /// dropped and `Ok(None)` returned.
    pub fn generate_stream(
        &self,
        body: &Value,
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<Option<StreamedGeneration>, OllamaError> {
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let during = "generating (/api/generate)";
        let start = Instant::now();
        let response = self
            .agent
            .post(&self.endpoint("/api/generate"))
            .send_json(body)
            .map_err(|e| self.model_error(e, &model, during))?;
        let mut reader = BufReader::new(response.into_reader());
        let mut chunks = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line);
            let arrived = start.elapsed();
            match read {
                Ok(0) => return Err(OllamaError::Truncated { chunks: chunks.len() }),
                Ok(_) => {}
                // A server that dies mid-stream leaves the chunked body unfinished.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Err(OllamaError::Truncated { chunks: chunks.len() })
                }
                Err(e) => return Err(self.io_error(&e, during)),
            }
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            let chunk: GenerateChunk = serde_json::from_str(text.trim()).map_err(|e| OllamaError::Malformed {
                endpoint: "/api/generate".into(),
                detail: format!("line {}: {e}", chunks.len() + 1),
            })?;
            if let Some(error) = chunk.error {
                return Err(OllamaError::InStream(error));
            }
            if chunk.done {
                // The final chunk normally has no text; if a server puts some there, it still counts.
                if let Some(text) = chunk.response.as_ref().filter(|t| !t.is_empty()) {
                    chunks.push((arrived, text.clone()));
                }
                return Ok(Some(StreamedGeneration { chunks, last: chunk, total: arrived }));
            }
            chunks.push((arrived, chunk.response.unwrap_or_default()));
            if !keep_going() {
                return Ok(None);
            }
        }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: ureq::Response,
        endpoint: &str,
    ) -> Result<T, OllamaError> {
        let mut body = Vec::new();
        response.into_reader().read_to_end(&mut body).map_err(|e| self.io_error(&e, &format!("reading {endpoint}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| OllamaError::Malformed { endpoint: endpoint.to_string(), detail: e.to_string() })
    }

    /// Like [`Self::error`], but a 404 (or an error body saying "not found") means the model is missing.
    fn model_error(&self, error: ureq::Error, model: &str, during: &str) -> OllamaError {
        match self.error(error, during) {
            OllamaError::Http { status, message, .. }
                if status == 404 || (message.contains("not found") && message.contains(model)) =>
            {
                OllamaError::ModelMissing { model: model.to_string(), url: self.url.clone() }
            }
            other => other,
        }
    }

    fn error(&self, error: ureq::Error, during: &str) -> OllamaError {
        match error {
            ureq::Error::Status(status, response) => {
                let endpoint = response.get_url().rsplit_once(&self.url).map_or("", |(_, p)| p).to_string();
                let body = response.into_string().unwrap_or_default();
                OllamaError::Http { url: self.url.clone(), endpoint, status, message: error_message(&body) }
            }
            ureq::Error::Transport(transport) => {
                let io = std::error::Error::source(&transport).and_then(|s| s.downcast_ref::<std::io::Error>());
                if let Some(io) = io.filter(|io| is_timeout(io)) {
                    return self.io_error(io, during);
                }
                let reason = transport.to_string();
                match transport.kind() {
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                        OllamaError::NotRunning { url: self.url.clone(), reason: short_reason(&reason, io) }
                    }
                    ureq::ErrorKind::Io if reason.contains("timed out") => self.timeout(during, false),
                    _ => OllamaError::Transport { url: self.url.clone(), during: during.into(), reason },
                }
            }
        }
    }

    fn io_error(&self, error: &std::io::Error, during: &str) -> OllamaError {
        if is_timeout(error) {
            return self.timeout(during, error.to_string().contains("connect"));
        }
        OllamaError::Transport { url: self.url.clone(), during: during.into(), reason: error.to_string() }
    }

    fn timeout(&self, during: &str, connecting: bool) -> OllamaError {
        let (limit, flag) = if connecting {
            (self.timeouts.connect, "--ollama-connect-timeout")
        } else if during.starts_with("loading") {
            (self.timeouts.load, "--ollama-load-timeout")
        } else {
            (self.timeouts.idle, "--ollama-idle-timeout")
        };
        OllamaError::Timeout { url: self.url.clone(), during: during.into(), seconds: limit.as_secs(), flag }
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

/// "Connection refused" rather than ureq's full chain.
fn short_reason(reason: &str, io: Option<&std::io::Error>) -> String {
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".into(),
        _ => reason.lines().next().unwrap_or(reason).to_string(),
    }
}

/// The message in Ollama's `{"error": "…"}` body, or the body itself (one line, bounded).
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    one_line.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line() {
        assert_eq!(error_message(r#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(error_message("bad\ngateway"), "bad gateway");
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn chunks_parse_with_fields_omitted() {
        let c: GenerateChunk = serde_json::from_str(r#"{"model":"m","response":"Hi","done":false}"#).unwrap();
        assert_eq!((c.response.as_deref(), c.done, c.eval_count), (Some("Hi"), false, None));
        let last: GenerateChunk =
            serde_json::from_str(r#"{"done":true,"done_reason":"length","eval_count":3,"eval_duration":9}"#).unwrap();
        assert_eq!((last.done, last.eval_count, last.prompt_eval_count), (true, Some(3), None));
    }
}
