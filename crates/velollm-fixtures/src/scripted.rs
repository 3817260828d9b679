//! A scripted engine: a [`Backend`] whose sessions answer every request (warm-ups included, in the order the
//! runner makes them) with the next reply of a script — a sample at a given rate, after a given delay, or an
//! error, or a Ctrl-C — and log every call. It drives the runner's warm-up, repetitions, stopping rule, error
//! paths and interleaving in tests, without a model.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use velollm_core::{
    Backend, BackendError, ContextParams, EffectiveContext, EffectiveLoad, EngineInfo, FlashAttention,
    GenerationRequest, LoadParams, LoadedModel, ModelIdentity, ModelSource, RawSample, Session, SourceKind,
    TokenRequest,
};

/// One answer of the script.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A sample whose rate (decode tok/s for text, t/s for a token test) is this, returned after `delay`.
    Rate { rate: f64, delay: Duration },
    /// The request fails with this message (`BackendError::Generation`).
    Fail(String),
    /// Ctrl-C during the request: the cancel flag is set and the request ends as cancelled.
    Interrupt,
}

impl Reply {
    pub fn rate(rate: f64) -> Reply {
        Reply::Rate { rate, delay: Duration::ZERO }
    }
    pub fn slow(rate: f64, delay: Duration) -> Reply {
        Reply::Rate { rate, delay }
    }
}

/// What a request was, as the log records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The context it ran on (its threads and size tell combinations apart).
    pub context: ContextParams,
    /// `text` or `tokens`.
    pub kind: &'static str,
    /// Tokens asked for: `max_tokens`, or a token test's `n_gen` (a warm-up's is at most 1).
    pub n_gen: u32,
    pub started: Instant,
    pub ended: Instant,
    /// The reply given.
    pub reply: Reply,
}

/// The script and the log, shared by the backend and everything it makes.
#[derive(Debug, Default)]
pub struct Script {
    replies: VecDeque<Reply>,
    /// Replies for the sessions of one thread count, before the shared ones (tells combinations apart).
    by_threads: BTreeMap<u32, VecDeque<Reply>>,
    /// Given when the script has run out.
    pub default_reply: Option<Reply>,
    /// Every request, in order.
    pub calls: Vec<Call>,
    /// Models loaded and contexts created.
    pub loads: usize,
    pub contexts: usize,
    /// Fail the load / every context creation with this message.
    pub load_error: Option<String>,
    pub context_error: Option<String>,
}

/// A handle on the script: clone it into the backend and keep one to read the log.
#[derive(Debug, Clone, Default)]
pub struct Scripted(Arc<Mutex<Script>>);

impl Scripted {
    /// A script of these replies, then `rate(100)` for every request after them.
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> Scripted {
        let script = Script {
            replies: replies.into_iter().collect(),
            default_reply: Some(Reply::rate(100.0)),
            ..Script::default()
        };
        Scripted(Arc::new(Mutex::new(script)))
    }

    /// Replies for requests on contexts with `threads` threads, taken before the shared script.
    pub fn for_threads(self, threads: u32, replies: impl IntoIterator<Item = Reply>) -> Scripted {
        self.lock().by_threads.insert(threads, replies.into_iter().collect());
        self
    }

    pub fn lock(&self) -> MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backend (named `scripted`, a server-kind backend so the runner needs no model file).
    pub fn backend(&self) -> Box<dyn Backend> {
        Box::new(ScriptedBackend(self.clone()))
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn next_reply(&self, threads: u32) -> Reply {
        let mut script = self.lock();
        if let Some(reply) = script.by_threads.get_mut(&threads).and_then(VecDeque::pop_front) {
            return reply;
        }
        match script.replies.pop_front() {
            Some(reply) => reply,
            None => script.default_reply.clone().unwrap_or(Reply::rate(100.0)),
        }
    }
}

struct ScriptedBackend(Scripted);

impl Backend for ScriptedBackend {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn source_kind(&self) -> SourceKind {
        SourceKind::Server
    }

    fn check_available(&self) -> Result<Option<String>, BackendError> {
        Ok(Some("scripted".into()))
    }

    fn load_model(
        &self,
        source: &ModelSource,
        params: &LoadParams,
        _cancel: &Arc<AtomicBool>,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let mut script = self.0.lock();
        if let Some(reason) = script.load_error.clone() {
            return Err(BackendError::Load { path: source.describe(), reason });
        }
        script.loads += 1;
        Ok(Box::new(ScriptedModel { script: self.0.clone(), name: source.describe(), load: params.clone() }))
    }
}

struct ScriptedModel {
    script: Scripted,
    name: String,
    load: LoadParams,
}

impl LoadedModel for ScriptedModel {
    fn load_ms(&self) -> f64 {
        1.0
    }

    fn engine_info(&self) -> EngineInfo {
        EngineInfo { version: Some("scripted".into()), build: None }
    }

    fn effective_load(&self) -> EffectiveLoad {
        EffectiveLoad { n_layers_total: Some(1), ..EffectiveLoad::default() }
    }

    fn new_context(&mut self, params: &ContextParams) -> Result<Box<dyn Session + '_>, BackendError> {
        let mut script = self.script.lock();
        if let Some(reason) = script.context_error.clone() {
            return Err(BackendError::Context(reason));
        }
        script.contexts += 1;
        let _ = &self.load;
        Ok(Box::new(ScriptedSession { script: self.script.clone(), context: params.clone() }))
    }

    fn model_identity(&self) -> Option<ModelIdentity> {
        Some(ModelIdentity {
            reference: self.name.clone(),
            path: String::new(),
            bytes: 1,
            sha256: None,
            architecture: Some("scripted".into()),
            parameter_count: None,
            quantization: None,
            name: Some(self.name.clone()),
            synthetic: true,
            digest: None,
            weight_bytes_per_token: None,
        })
    }
}

struct ScriptedSession {
    script: Scripted,
    context: ContextParams,
}

/// Tokens of the prompt every text request counts.
pub const PROMPT_TOKENS: u64 = 9;

impl ScriptedSession {
    fn answer(
        &mut self,
        kind: &'static str,
        n_gen: u32,
        cancel: &Arc<AtomicBool>,
        sample: impl FnOnce(f64) -> RawSample,
    ) -> Result<RawSample, BackendError> {
        let started = Instant::now();
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        let reply = self.script.next_reply(self.context.n_threads);
        let result = match &reply {
            Reply::Rate { rate, delay } => {
                spin_or_sleep(*delay);
                Ok(sample(*rate))
            }
            Reply::Fail(message) => Err(BackendError::Generation(message.clone())),
            Reply::Interrupt => {
                cancel.store(true, Ordering::Relaxed);
                Err(BackendError::Cancelled)
            }
        };
        let call = Call { context: self.context.clone(), kind, n_gen, started, ended: Instant::now(), reply };
        self.script.lock().calls.push(call);
        result
    }
}

fn spin_or_sleep(delay: Duration) {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

impl Session for ScriptedSession {
    fn effective_context(&self) -> EffectiveContext {
        EffectiveContext {
            n_ctx: self.context.n_ctx,
            n_batch: Some(self.context.n_batch),
            n_ubatch: Some(self.context.n_ubatch),
            n_threads: Some(self.context.n_threads),
            flash_attn: Some(FlashAttention::Off),
            type_k: Some(self.context.type_k.to_string()),
            type_v: Some(self.context.type_v.to_string()),
            context_buffers: Vec::new(),
            n_seq_max: None,
            kv_unified: None,
            n_ctx_seq: None,
        }
    }

    fn count_prompt_tokens(&mut self, _prompt: &str) -> Result<Option<u64>, BackendError> {
        Ok(Some(PROMPT_TOKENS))
    }

    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        let tokens = request.max_tokens.max(2) as usize;
        self.answer("text", request.max_tokens, cancel, |rate| {
            crate::text_sample(PROMPT_TOKENS, 4.0, 5.0, &vec![1000.0 / rate; tokens - 1])
        })
    }

    fn run_tokens(&mut self, request: &TokenRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        let test = request.test;
        self.answer("tokens", test.n_gen, cancel, |rate| {
            let mut sample = crate::token_samples_at(u64::from(test.n_prompt), test.n_gen, &[rate]).remove(0);
            sample.depth_tokens = test.n_depth.into();
            sample
        })
    }

    fn detokenize(&mut self, token_ids: &[u32]) -> Result<String, BackendError> {
        Ok(format!("{} tokens", token_ids.len()))
    }
}
