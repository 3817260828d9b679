//! [`OpenAiBackend`]: the `Backend`/`Session` pair over an OpenAI-compatible API, and [`OpenAiSender`], the
//! same requests sent from many threads for load runs.
//!
//! What keeps the numbers honest (docs/servers.md has each server's answers):
//! - token counts are the server's (`usage`); a stream without usage (llama-cpp-python) is counted by its
//!   chunks with text, and the sample says so (`eval_count_source: chunks`);
//! - the server's own durations are used where it sends them (llama.cpp's `timings`); otherwise the headline
//!   decode rate is the client's, from chunk arrivals, and the sample says so (`rate_from_client`);
//! - each request's prompt starts with a unique prefix, so no prefix-cache hit inflates prompt rates;
//! - temperature 0 and a fixed seed; without `--stop-at-eos` the server is asked to ignore end-of-sequence
//!   (`ignore_eos`, honoured by llama.cpp's server, vLLM and SGLang) so every request generates `max_tokens`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use velollm_core::{
    Backend, BackendError, ChunkArrival, ContextParams, EffectiveContext, EffectiveLoad, EngineInfo, GenerationRequest,
    LoadParams, LoadRequest, LoadedModel, ModelIdentity, ModelSource, RawSample, RequestSender, RequestTimeline,
    ServerSample, Session, SourceKind, StopReason, TokenCountSource,
};

use crate::client::{ApiKey, Endpoint, OpenAiClient, OpenAiError, Streamed, Timeouts};

/// How to reach the server and what to ask of it.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// Base URL ending in the API version (`http://host:port/v1`), see [`crate::normalize_url`].
    pub url: String,
    pub key: Option<ApiKey>,
    pub endpoint: Endpoint,
    pub timeouts: Timeouts,
    /// Connections kept open (the load run's most requests in flight).
    pub pool: usize,
}

/// The prefix that marks a model reference for this backend (`openai:NAME`); optional.
pub const REFERENCE_PREFIX: &str = "openai:";

/// An OpenAI-compatible server, measured over HTTP.
#[derive(Debug, Clone)]
pub struct OpenAiBackend {
    settings: OpenAiSettings,
    client: OpenAiClient,
}

impl OpenAiBackend {
    pub fn new(settings: OpenAiSettings) -> OpenAiBackend {
        let client = OpenAiClient::new(&settings.url, settings.key.clone(), settings.timeouts, settings.pool);
        OpenAiBackend { settings, client }
    }
}

fn server_error(error: OpenAiError) -> BackendError {
    match error {
        OpenAiError::Cancelled => BackendError::Cancelled,
        other => BackendError::Server(other.to_string()),
    }
}

impl Backend for OpenAiBackend {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn source_kind(&self) -> SourceKind {
        SourceKind::Server
    }

    /// The API has no version endpoint: the check is `GET /models`, and what it says is how many it serves.
    fn check_available(&self) -> Result<Option<String>, BackendError> {
        let models = self.client.models().map_err(server_error)?;
        Ok(Some(format!("OpenAI-compatible API, {} model(s) served", models.len())))
    }

    fn load_model(
        &self,
        source: &ModelSource,
        _params: &LoadParams,
        _cancel: &Arc<AtomicBool>,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let reference = source.describe();
        let name = reference.strip_prefix(REFERENCE_PREFIX).unwrap_or(&reference).to_string();
        let models = self.client.models().map_err(server_error)?;
        let Some(entry) = models.iter().find(|m| m.id == name) else {
            let served: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
            return Err(server_error(OpenAiError::ModelMissing {
                model: name,
                url: self.settings.url.clone(),
                served: if served.is_empty() { "nothing".into() } else { served.join(", ") },
            }));
        };
        Ok(Box::new(OpenAiModel {
            client: self.client.clone(),
            settings: self.settings.clone(),
            identity: ModelIdentity {
                reference: reference.clone(),
                path: format!("{}#{}", self.settings.url, entry.id),
                bytes: 0,
                sha256: None,
                architecture: None,
                parameter_count: None,
                quantization: None,
                name: Some(entry.id.clone()),
                synthetic: false,
                digest: None,
                weight_bytes_per_token: None,
            },
            owned_by: entry.owned_by.clone(),
            max_model_len: entry.max_model_len,
            name,
        }))
    }
}

/// A model the server serves.
struct OpenAiModel {
    client: OpenAiClient,
    settings: OpenAiSettings,
    name: String,
    identity: ModelIdentity,
    owned_by: Option<String>,
    max_model_len: Option<u64>,
}

impl LoadedModel for OpenAiModel {
    fn load_ms(&self) -> f64 {
        0.0
    }

    fn loads_nothing(&self) -> bool {
        true
    }

    fn engine_info(&self) -> EngineInfo {
        EngineInfo {
            version: self.owned_by.as_ref().map(|o| format!("OpenAI-compatible server (model owned by {o})")),
            build: Some(format!("server at {}, {} endpoint", self.settings.url, self.settings.endpoint.name())),
        }
    }

    /// The server placed the model itself and does not say how: every field absent, not guessed.
    fn effective_load(&self) -> EffectiveLoad {
        EffectiveLoad {
            n_gpu_layers: None,
            n_layers_total: None,
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

    fn load_warnings(&self) -> Vec<String> {
        vec!["an OpenAI-compatible server runs with its own settings: the engine parameters (-t, -ngl, --batch-size, …) are not sent".into()]
    }

    fn new_context(&mut self, params: &ContextParams) -> Result<Box<dyn Session + '_>, BackendError> {
        let mut warnings = Vec::new();
        let n_ctx = match self.max_model_len.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                warnings.push(format!(
                    "the server does not say its context length; the prompt-fit check used --ctx-size ({})",
                    params.n_ctx
                ));
                params.n_ctx
            }
        };
        let sender = Arc::new(OpenAiSender {
            client: self.client.clone(),
            model: self.name.clone(),
            endpoint: self.settings.endpoint,
        });
        Ok(Box::new(OpenAiSession {
            sender,
            warnings,
            effective: EffectiveContext {
                n_ctx,
                n_batch: None,
                n_ubatch: None,
                n_threads: None,
                flash_attn: None,
                type_k: None,
                type_v: None,
                context_buffers: Vec::new(),
                n_seq_max: None,
                kv_unified: None,
                n_ctx_seq: None,
            },
        }))
    }
}

/// Distinguishes requests across processes and within one: the prefix that defeats prefix caching.
static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Sends requests to one model; shared by the session and the load generator's threads.
pub struct OpenAiSender {
    client: OpenAiClient,
    model: String,
    endpoint: Endpoint,
}

/// One request as sent and received.
pub struct Exchange {
    pub prompt: String,
    pub result: Result<Streamed, OpenAiError>,
}

impl OpenAiSender {
    /// The request body: temperature 0, the seed, usage asked for in the stream, and (for a fixed output
    /// length) `ignore_eos`.
    pub fn body(&self, prompt: &str, max_tokens: u32, seed: u32, stop_at_eos: bool) -> Value {
        let mut body = match self.endpoint {
            Endpoint::Chat => json!({ "model": self.model, "messages": [{ "role": "user", "content": prompt }] }),
            Endpoint::Completions => json!({ "model": self.model, "prompt": prompt }),
        };
        body["max_tokens"] = json!(max_tokens);
        body["temperature"] = json!(0);
        body["seed"] = json!(seed);
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        if !stop_at_eos {
            body["ignore_eos"] = json!(true);
        }
        body
    }

    /// Sends `prompt` behind a unique prefix and streams the answer.
    pub fn exchange(
        &self,
        prompt: &str,
        max_tokens: u32,
        seed: u32,
        stop_at_eos: bool,
        cancel: &AtomicBool,
    ) -> Exchange {
        let nonce = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prompt = format!("[{:x}-{nonce}] {prompt}", std::process::id());
        let body = self.body(&prompt, max_tokens, seed, stop_at_eos);
        let result = self.client.stream(self.endpoint, &body, cancel);
        Exchange { prompt, result }
    }
}

/// The output token count of a stream: the server's usage, else its chunks with text.
fn output_tokens(streamed: &Streamed) -> (u64, TokenCountSource) {
    match streamed.usage.and_then(|u| u.completion_tokens) {
        Some(n) => (n, TokenCountSource::Usage),
        None => (streamed.chunks.iter().filter(|(_, t)| !t.is_empty()).count() as u64, TokenCountSource::Chunks),
    }
}

impl RequestSender for OpenAiSender {
    fn send(&self, request: &LoadRequest, origin: Instant, cancel: &AtomicBool) -> RequestTimeline {
        let at = |offset: std::time::Duration| u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
        let sent = origin.elapsed();
        let exchange = self.exchange(&request.prompt, request.max_tokens, request.seed, request.stop_at_eos, cancel);
        match exchange.result {
            Ok(streamed) => {
                let (output, source) = output_tokens(&streamed);
                RequestTimeline {
                    index: request.index,
                    scheduled_ns: None,
                    sent_ns: at(sent),
                    response_ns: Some(at(sent + streamed.response)),
                    chunk_times_ns: streamed
                        .chunks
                        .iter()
                        .filter(|(_, text)| !text.is_empty())
                        .map(|(t, _)| at(sent + *t))
                        .collect(),
                    end_ns: at(sent + streamed.total),
                    http_status: Some(streamed.http_status),
                    prompt_tokens: streamed.usage.and_then(|u| u.prompt_tokens),
                    output_tokens: Some(output),
                    output_tokens_source: Some(source),
                    error: None,
                }
            }
            Err(error) => {
                RequestTimeline::failed(request.index, at(sent), at(origin.elapsed()), error.status(), error.reason())
            }
        }
    }
}

/// The model on the server, one request at a time.
pub struct OpenAiSession {
    sender: Arc<OpenAiSender>,
    warnings: Vec<String>,
    effective: EffectiveContext,
}

impl Session for OpenAiSession {
    fn effective_context(&self) -> EffectiveContext {
        self.effective.clone()
    }

    fn context_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// The server tokenizes: only `max_tokens` is checked against the context.
    fn count_prompt_tokens(&mut self, _prompt: &str) -> Result<Option<u64>, BackendError> {
        Ok(None)
    }

    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        let exchange =
            self.sender.exchange(&request.prompt, request.max_tokens, request.seed, request.stop_at_eos, cancel);
        let streamed = exchange.result.map_err(server_error)?;
        Ok(raw_sample(exchange.prompt, &streamed, request.max_tokens))
    }

    fn request_sender(&self) -> Option<Arc<dyn RequestSender>> {
        Some(self.sender.clone())
    }

    fn run_tokens(
        &mut self,
        _request: &velollm_core::TokenRequest,
        _cancel: &Arc<AtomicBool>,
    ) -> Result<RawSample, BackendError> {
        Err(BackendError::Unsupported(
            "an OpenAI-compatible server tokenizes itself, so token-level tests (--pp/--tg/--pg) need an in-process \
             engine; over HTTP use --prompt with --max-tokens (a fixed output length where the server honours \
             ignore_eos)"
                .into(),
        ))
    }

    fn detokenize(&mut self, _token_ids: &[u32]) -> Result<String, BackendError> {
        Ok(String::new())
    }
}

/// A stream as a raw sample: the server's counts and durations where it sent them, the client's arrivals.
pub fn raw_sample(prompt: String, streamed: &Streamed, max_tokens: u32) -> RawSample {
    let as_ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let ms_to_ns = |ms: f64| (ms * 1e6).round() as u64;
    let (eval_count, source) = output_tokens(streamed);
    let timings = streamed.timings;
    // llama.cpp's prompt_n counts the tokens its prompt_ms evaluated (cache hits excluded): the pair that
    // makes a rate. Without timings, usage's prompt_tokens is the count.
    let prompt_eval_count = timings.and_then(|t| t.prompt_n).or(streamed.usage.and_then(|u| u.prompt_tokens));
    let prompt_eval_duration_ns = timings.and_then(|t| t.prompt_ms).map(ms_to_ns);
    let eval_duration_ns = timings.and_then(|t| t.predicted_ms).map(ms_to_ns);
    let stop_reason = match streamed.finish_reason.as_deref() {
        Some("length") => StopReason::Length,
        Some(_) => StopReason::EndOfSequence,
        None if eval_count >= u64::from(max_tokens) => StopReason::Length,
        None => StopReason::EndOfSequence,
    };
    RawSample {
        prompt_tokens: prompt_eval_count.unwrap_or(0),
        tokenize_ns: 0,
        prompt_eval_ns: prompt_eval_duration_ns.unwrap_or(0),
        token_times_ns: Vec::new(),
        stop_reason,
        eog_tokens: 0,
        token_ids: Vec::new(),
        engine_counters: None,
        batched: None,
        server: Some(ServerSample {
            prompt,
            prompt_eval_count,
            prompt_eval_duration_ns,
            eval_count: Some(eval_count),
            eval_duration_ns,
            total_duration_ns: prompt_eval_duration_ns.zip(eval_duration_ns).map(|(p, e)| p + e),
            load_duration_ns: None,
            done_reason: streamed.finish_reason.clone(),
            chunks: streamed
                .chunks
                .iter()
                .map(|(at, text)| ChunkArrival { time_ns: as_ns(*at), text: text.clone() })
                .collect(),
            client_total_ns: as_ns(streamed.total),
            truncated: None,
            rate_from_client: eval_duration_ns.is_none(),
            eval_count_source: (source == TokenCountSource::Chunks).then_some(source),
            prompt_cached_tokens: streamed.usage.and_then(|u| u.cached_tokens).or(timings.and_then(|t| t.cache_n)),
        }),
        test_ns: None,
        depth_tokens: 0,
        depth_prepare_ns: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn streamed(usage: Option<crate::client::Usage>, timings: Option<crate::client::ServerTimings>) -> Streamed {
        let ms = Duration::from_millis;
        Streamed {
            response: ms(5),
            chunks: vec![(ms(6), String::new()), (ms(10), "a".into()), (ms(20), "b".into()), (ms(40), "c".into())],
            total: ms(41),
            usage,
            timings,
            finish_reason: Some("length".into()),
            http_status: 200,
        }
    }

    #[test]
    fn usage_counts_and_client_rate_without_timings() {
        let usage = crate::client::Usage { prompt_tokens: Some(9), completion_tokens: Some(3), cached_tokens: None };
        let raw = raw_sample("p".into(), &streamed(Some(usage), None), 3);
        let server = raw.server.as_ref().unwrap();
        assert_eq!((server.eval_count, server.prompt_eval_count), (Some(3), Some(9)));
        assert!(server.rate_from_client && server.eval_count_source.is_none());
        let m = velollm_core::IterationMetrics::from_sample(&raw);
        assert_eq!(m.ttft_ms, Some(10.0), "the first chunk with text");
        assert_eq!(m.tokens_per_second, Some(2.0 / 0.030), "(3 − 1) tokens over the 30 ms from first to last text");
        assert_eq!(raw.stop_reason, StopReason::Length);
    }

    #[test]
    fn chunks_counted_when_the_stream_has_no_usage_and_timings_win() {
        let raw = raw_sample("p".into(), &streamed(None, None), 3);
        let server = raw.server.as_ref().unwrap();
        assert_eq!((server.eval_count, server.eval_count_source), (Some(3), Some(TokenCountSource::Chunks)));
        let timings = crate::client::ServerTimings {
            prompt_n: Some(4),
            prompt_ms: Some(2.0),
            predicted_n: Some(3),
            predicted_ms: Some(30.0),
            cache_n: Some(5),
        };
        let usage = crate::client::Usage { prompt_tokens: Some(9), completion_tokens: Some(3), cached_tokens: None };
        let raw = raw_sample("p".into(), &streamed(Some(usage), Some(timings)), 3);
        let server = raw.server.as_ref().unwrap();
        assert_eq!(server.prompt_eval_count, Some(4), "llama.cpp's prompt_n pairs with its prompt_ms");
        assert_eq!(server.prompt_cached_tokens, Some(5));
        assert!(!server.rate_from_client);
        let m = velollm_core::IterationMetrics::from_sample(&raw);
        assert_eq!(m.tokens_per_second, Some(100.0), "the server's 3 tokens in 30 ms");
    }
}
