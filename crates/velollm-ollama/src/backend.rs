//! [`OllamaBackend`]: the `Backend`/`Session` pair over Ollama's HTTP API.
//!
//! What it does to keep the numbers honest (docs/ollama.md explains each):
//! - the model is loaded by an untimed empty-prompt request first; its client wall clock and the server's
//!   `load_duration` are recorded apart from every iteration;
//! - every request carries the same load-time options (`num_ctx` always; `num_gpu`, `num_thread`,
//!   `num_batch` only when the user set them), so no request triggers a reload;
//! - each request's prompt starts with a unique prefix, so no prefix-cache hit inflates prompt rates;
//! - `raw: true` (no chat template), temperature 0 and a fixed seed; `think: false` for models that think;
//! - each chunk's arrival time and text are recorded; tokens are counted by the server (`eval_count`),
//!   never by counting chunks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};
use velollm_core::{
    Backend, BackendError, ChunkArrival, ContextParams, EffectiveContext, EffectiveLoad, EngineInfo, GenerationRequest,
    LoadParams, LoadRequest, LoadedModel, ModelIdentity, ModelSource, RawSample, RequestSender, RequestTimeline,
    ServerRecord, ServerRequestOptions, ServerSample, Session, SourceKind, StopReason, TokenCountSource,
};

use crate::client::{OllamaClient, ShowResponse, TagEntry, Timeouts};
use crate::OllamaError;

/// Which load-time options the user set on the command line: only those are sent, so the server's own
/// defaults apply to the rest (and are recorded as absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExplicitOptions {
    /// `--n-gpu-layers` given: sent as `num_gpu`.
    pub num_gpu: bool,
    /// `--threads` given: sent as `num_thread`.
    pub num_thread: bool,
    /// `--batch-size` given: sent as `num_batch`.
    pub num_batch: bool,
}

/// How to reach the server, and what to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaSettings {
    /// Base URL, already normalised (see [`crate::base_url`]).
    pub url: String,
    pub timeouts: Timeouts,
    pub explicit: ExplicitOptions,
    /// Leave the model loaded after the run (`--keep-loaded`). By default it is unloaded (`keep_alive: 0`) so
    /// the server is left as it was found and a following in-process run does not compete for its memory.
    pub keep_loaded: bool,
}

impl Default for OllamaSettings {
    fn default() -> Self {
        OllamaSettings {
            url: crate::DEFAULT_URL.to_string(),
            timeouts: Timeouts::default(),
            explicit: ExplicitOptions::default(),
            keep_loaded: false,
        }
    }
}

/// A running Ollama server, measured over HTTP.
#[derive(Debug, Clone)]
pub struct OllamaBackend {
    settings: OllamaSettings,
    client: OllamaClient,
}

impl OllamaBackend {
    pub fn new(settings: OllamaSettings) -> OllamaBackend {
        let client = OllamaClient::new(&settings.url, settings.timeouts);
        OllamaBackend { settings, client }
    }
}

fn server_error(error: OllamaError) -> BackendError {
    BackendError::Server(error.to_string())
}

impl Backend for OllamaBackend {
    fn name(&self) -> &'static str {
        "ollama"
    }

    fn source_kind(&self) -> SourceKind {
        SourceKind::Server
    }

    fn check_available(&self) -> Result<Option<String>, BackendError> {
        self.client.version().map(Some).map_err(server_error)
    }

    /// Checks the model exists and describes it; the server loads it when a context (its options) is known.
    fn load_model(
        &self,
        source: &ModelSource,
        params: &LoadParams,
        _cancel: &Arc<AtomicBool>,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let ModelSource::Server(reference) = source else {
            return Err(server_error(OllamaError::NotAName(source.describe())));
        };
        let name = crate::model_name(reference).to_string();
        if name.starts_with("hf:") || name.ends_with(".gguf") || std::path::Path::new(&name).exists() {
            return Err(server_error(OllamaError::NotAName(reference.clone())));
        }
        let version = self.client.version().map_err(server_error)?;
        let show = self.client.show(&name).map_err(server_error)?;
        // `/api/tags` only adds to the record (the digest): a server that cannot answer it (an older version,
        // a proxy that hides it) still gets measured, with that field null.
        let tag = self.client.tags().unwrap_or_default().into_iter().find(|t| same_model(&name, &t.name));
        Ok(Box::new(OllamaModel {
            client: self.client.clone(),
            settings: self.settings.clone(),
            identity: identity(reference, &name, &show, tag.as_ref()),
            thinks: show.capabilities.iter().any(|c| c == "thinking"),
            n_layers: show
                .model_info
                .iter()
                .find(|(key, _)| key.ends_with(".block_count"))
                .and_then(|(_, value)| value.as_u64())
                .and_then(|n| u32::try_from(n).ok()),
            load: params.clone(),
            name,
            version,
            last_load_ms: 0.0,
        }))
    }
}

/// A model the server knows. Each context is a load on the server (its options decide the runner it gets).
struct OllamaModel {
    client: OllamaClient,
    settings: OllamaSettings,
    name: String,
    version: String,
    identity: ModelIdentity,
    thinks: bool,
    n_layers: Option<u32>,
    load: LoadParams,
    /// Client wall clock of the most recent untimed preload.
    last_load_ms: f64,
}

impl LoadedModel for OllamaModel {
    fn load_ms(&self) -> f64 {
        self.last_load_ms
    }

    fn engine_info(&self) -> EngineInfo {
        EngineInfo {
            version: Some(format!("Ollama {}", self.version)),
            build: Some(format!("server at {}", self.settings.url)),
        }
    }

    fn effective_load(&self) -> EffectiveLoad {
        // The server places layers itself and does not say how many it offloaded (only bytes in VRAM, which
        // the server record keeps): absent, not guessed.
        EffectiveLoad {
            n_gpu_layers: None,
            n_layers_total: self.n_layers.map(|n| n + 1),
            gpu_devices: Vec::new(),
            split_mode: None,
            main_gpu: None,
            use_mmap: None,
            model_buffers: Vec::new(),
            devices: Vec::new(),
        }
    }

    fn model_identity(&self) -> Option<ModelIdentity> {
        Some(self.identity.clone())
    }

    fn new_context(&mut self, params: &ContextParams) -> Result<Box<dyn Session + '_>, BackendError> {
        let explicit = self.settings.explicit;
        let options = ServerRequestOptions {
            num_ctx: params.n_ctx,
            temperature: 0.0,
            num_gpu: explicit.num_gpu.then(|| self.load.n_gpu_layers.as_count()),
            num_thread: explicit.num_thread.then_some(params.n_threads),
            num_batch: explicit.num_batch.then_some(params.n_batch),
        };
        let load_options = load_time_options(&options);
        // An empty prompt only loads the model: its cost is recorded apart, never inside an iteration.
        let preload = json!({ "model": self.name, "prompt": "", "stream": false, "options": load_options });
        let (loaded, load_wall) = self.client.preload(&preload).map_err(server_error)?;
        self.last_load_ms = load_wall.as_secs_f64() * 1e3;
        let running = self.client.running().unwrap_or_default();
        let running = running
            .iter()
            .find(|m| same_model(&self.name, &m.name) || m.model.as_deref().is_some_and(|n| same_model(&self.name, n)));
        let record = ServerRecord {
            url: self.settings.url.clone(),
            version: Some(self.version.clone()),
            options,
            load_client_ms: self.last_load_ms,
            load_server_ms: loaded.load_duration.map(|ns| ns as f64 / 1e6),
            size_bytes: running.and_then(|m| m.size),
            size_vram_bytes: running.and_then(|m| m.size_vram),
            context_length: running.and_then(|m| m.context_length),
        };
        let effective = EffectiveContext {
            // What the server allocated when it says (newer versions), else what it was sent.
            n_ctx: record.context_length.and_then(|n| u32::try_from(n).ok()).unwrap_or(params.n_ctx),
            n_batch: record.options.num_batch,
            n_ubatch: None,
            n_threads: record.options.num_thread,
            flash_attn: None,
            type_k: None,
            type_v: None,
            context_buffers: Vec::new(),
            n_seq_max: None,
            kv_unified: None,
            n_ctx_seq: None,
        };
        Ok(Box::new(OllamaSession {
            client: self.client.clone(),
            name: self.name.clone(),
            record,
            load_options,
            thinks: self.thinks,
            effective,
        }))
    }
}

impl Drop for OllamaModel {
    fn drop(&mut self) {
        if self.settings.keep_loaded {
            return;
        }
        // Leave the server as it was found: unload the model (`keep_alive: 0`).
        if let Err(e) = self.client.unload(&self.name) {
            tracing::warn!("could not unload {} from Ollama after the run: {e}", self.name);
        }
    }
}

/// `llama3.2` and `llama3.2:latest` are the same model.
fn same_model(wanted: &str, listed: &str) -> bool {
    let with_tag = |n: &str| {
        if n.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            n.to_string()
        } else {
            format!("{n}:latest")
        }
    };
    with_tag(wanted) == with_tag(listed)
}

/// The load-time options as Ollama names them: only those that were decided, never a guess.
fn load_time_options(options: &ServerRequestOptions) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("num_ctx".into(), json!(options.num_ctx));
    if let Some(v) = options.num_gpu {
        map.insert("num_gpu".into(), json!(v));
    }
    if let Some(v) = options.num_thread {
        map.insert("num_thread".into(), json!(v));
    }
    if let Some(v) = options.num_batch {
        map.insert("num_batch".into(), json!(v));
    }
    map
}

/// The model as the server describes it: `/api/show` for the architecture and sizes, `/api/tags` for the
/// digest, and the Modelfile's `FROM` blob for the GGUF's own sha256.
fn identity(reference: &str, name: &str, show: &ShowResponse, tag: Option<&TagEntry>) -> ModelIdentity {
    let info = |key: &str| show.model_info.get(key);
    let blob = show
        .modelfile
        .as_deref()
        .and_then(|m| m.lines().find_map(|l| l.trim().strip_prefix("FROM ")))
        .map(str::trim)
        .filter(|path| path.contains("sha256-"));
    let sha256 = blob
        .and_then(|path| path.rsplit("sha256-").next())
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase);
    ModelIdentity {
        reference: reference.to_string(),
        path: blob.map_or_else(|| format!("ollama:{name}"), str::to_string),
        bytes: tag.and_then(|t| t.size).unwrap_or(0),
        sha256,
        architecture: info("general.architecture")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| show.details.family.clone()),
        parameter_count: info("general.parameter_count").and_then(Value::as_u64),
        quantization: show.details.quantization_level.clone(),
        name: Some(name.to_string()),
        synthetic: false,
        digest: tag.and_then(|t| t.digest.clone()).map(|d| if d.contains(':') { d } else { format!("sha256:{d}") }),
        weight_bytes_per_token: None,
    }
}

/// Distinguishes requests across processes and within one: the prefix that defeats prefix caching.
static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The model loaded on the server with one set of options.
pub struct OllamaSession {
    client: OllamaClient,
    name: String,
    record: ServerRecord,
    load_options: Map<String, Value>,
    thinks: bool,
    effective: EffectiveContext,
}

/// The session's requests, sent from the load generator's threads (`--concurrency`, `--request-rate`).
struct OllamaSender {
    client: OllamaClient,
    name: String,
    load_options: Map<String, Value>,
    thinks: bool,
}

impl RequestSender for OllamaSender {
    /// One streamed `/api/generate`: the server's `eval_count` and `prompt_eval_count`, the client's arrivals.
    fn send(&self, request: &LoadRequest, origin: Instant, cancel: &AtomicBool) -> RequestTimeline {
        let at = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let nonce = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prompt = format!("[{:x}-{nonce}] {}", std::process::id(), request.prompt);
        let body = request_body(&self.name, &self.load_options, self.thinks, &prompt, request.max_tokens, request.seed);
        let sent = origin.elapsed();
        match self.client.generate_stream(&body, || !cancel.load(Ordering::Relaxed)) {
            Ok(Some(streamed)) => RequestTimeline {
                index: request.index,
                scheduled_ns: None,
                sent_ns: at(sent),
                response_ns: None,
                chunk_times_ns: streamed
                    .chunks
                    .iter()
                    .filter(|(_, text)| !text.is_empty())
                    .map(|(t, _)| at(sent + *t))
                    .collect(),
                end_ns: at(sent + streamed.total),
                http_status: Some(200),
                prompt_tokens: streamed.last.prompt_eval_count,
                output_tokens: streamed.last.eval_count,
                output_tokens_source: streamed.last.eval_count.map(|_| TokenCountSource::Usage),
                error: None,
            },
            Ok(None) => {
                RequestTimeline::failed(request.index, at(sent), at(origin.elapsed()), None, "interrupted".into())
            }
            Err(error) => {
                let status = match &error {
                    OllamaError::Http { status, .. } => Some(*status),
                    _ => None,
                };
                let reason = match error {
                    OllamaError::Truncated { .. } => "the response stream ended without its final chunk".to_string(),
                    other => other.to_string(),
                };
                RequestTimeline::failed(request.index, at(sent), at(origin.elapsed()), status, reason)
            }
        }
    }
}

/// A streaming `/api/generate` body: raw prompt, the load-time options, greedy, the seed, `num_predict`.
fn request_body(
    name: &str,
    load_options: &Map<String, Value>,
    thinks: bool,
    prompt: &str,
    max_tokens: u32,
    seed: u32,
) -> Value {
    let mut options = load_options.clone();
    options.insert("num_predict".into(), json!(max_tokens));
    options.insert("temperature".into(), json!(0));
    options.insert("seed".into(), json!(seed));
    let mut body = json!({ "model": name, "prompt": prompt, "stream": true, "raw": true, "options": options });
    // Sent only to models that think: older servers reject `think` for models without the capability.
    if thinks {
        body["think"] = json!(false);
    }
    body
}

impl OllamaSession {
    fn request_body(&self, prompt: &str, request: &GenerationRequest) -> Value {
        request_body(&self.name, &self.load_options, self.thinks, prompt, request.max_tokens, request.seed)
    }
}

impl Session for OllamaSession {
    fn effective_context(&self) -> EffectiveContext {
        self.effective.clone()
    }

    fn request_sender(&self) -> Option<Arc<dyn RequestSender>> {
        Some(Arc::new(OllamaSender {
            client: self.client.clone(),
            name: self.name.clone(),
            load_options: self.load_options.clone(),
            thinks: self.thinks,
        }))
    }

    fn server_record(&self) -> Option<ServerRecord> {
        Some(self.record.clone())
    }

    /// The server tokenizes: nothing here can count its tokens without a request, so only `max_tokens` is
    /// checked against the context (each request's prompt length is checked after it ran: `truncated`).
    fn count_prompt_tokens(&mut self, _prompt: &str) -> Result<Option<u64>, BackendError> {
        Ok(None)
    }

    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        let nonce = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prompt = format!("[{:x}-{nonce}] {}", std::process::id(), request.prompt);
        let body = self.request_body(&prompt, request);
        let streamed = self
            .client
            .generate_stream(&body, || !cancel.load(Ordering::Relaxed))
            .map_err(server_error)?
            .ok_or(BackendError::Cancelled)?;
        let last = &streamed.last;
        let stop_reason = match last.done_reason.as_deref() {
            Some("length") => StopReason::Length,
            Some(_) => StopReason::EndOfSequence,
            None if last.eval_count.unwrap_or(0) >= u64::from(request.max_tokens) => StopReason::Length,
            None => StopReason::EndOfSequence,
        };
        let truncated = match (last.prompt_eval_count, last.eval_count) {
            (Some(prompt_tokens), Some(generated)) => {
                Some(prompt_tokens + generated >= u64::from(self.record.options.num_ctx))
            }
            _ => None,
        };
        let as_ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Ok(RawSample {
            prompt_tokens: last.prompt_eval_count.unwrap_or(0),
            tokenize_ns: 0,
            prompt_eval_ns: last.prompt_eval_duration.unwrap_or(0),
            token_times_ns: Vec::new(),
            stop_reason,
            eog_tokens: 0,
            token_ids: Vec::new(),
            engine_counters: None,
            server: Some(ServerSample {
                prompt,
                prompt_eval_count: last.prompt_eval_count,
                prompt_eval_duration_ns: last.prompt_eval_duration,
                eval_count: last.eval_count,
                eval_duration_ns: last.eval_duration,
                total_duration_ns: last.total_duration,
                load_duration_ns: last.load_duration,
                done_reason: last.done_reason.clone(),
                chunks: streamed
                    .chunks
                    .iter()
                    .map(|(at, text)| ChunkArrival { time_ns: as_ns(*at), text: text.clone() })
                    .collect(),
                client_total_ns: as_ns(streamed.total),
                truncated,
                rate_from_client: false,
                eval_count_source: None,
                prompt_cached_tokens: None,
            }),
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        })
    }

    fn run_tokens(
        &mut self,
        _request: &velollm_core::TokenRequest,
        _cancel: &Arc<AtomicBool>,
    ) -> Result<RawSample, BackendError> {
        Err(BackendError::Unsupported(
            "Ollama tokenizes on the server, so token-level tests (--pp/--tg/--pg) need an in-process engine \
             (-b llamacpp or -b candle on the same file)"
                .into(),
        ))
    }

    fn detokenize(&mut self, _token_ids: &[u32]) -> Result<String, BackendError> {
        // Server samples carry their text; see `Session::generated_text`.
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_the_default_tag() {
        assert!(same_model("llama3.2", "llama3.2:latest"));
        assert!(same_model("llama3.2:3b", "llama3.2:3b"));
        assert!(!same_model("llama3.2:3b", "llama3.2:latest"));
        assert!(same_model("user/m", "user/m:latest"));
    }

    #[test]
    fn only_decided_options_are_sent() {
        let options = ServerRequestOptions {
            num_ctx: 2048,
            temperature: 0.0,
            num_gpu: None,
            num_thread: Some(4),
            num_batch: None,
        };
        let map = load_time_options(&options);
        assert_eq!(Value::Object(map), json!({ "num_ctx": 2048, "num_thread": 4 }));
    }
}
