//! The trait triple every engine implements, split the way llama.cpp splits its own objects:
//!
//! - [`Backend::load_model`] turns a [`ModelSource`] and [`LoadParams`] into a [`LoadedModel`];
//! - [`LoadedModel::new_context`] turns [`ContextParams`] into a [`Session`] on that model;
//! - a session turns a [`GenerationRequest`] (text) or a [`TokenRequest`] (llama-bench test) into a
//!   [`RawSample`]: timestamps and counts only.
//!
//! A sweep therefore loads a model once per distinct set of load parameters and creates a context only
//! when a context parameter changes. Backends never compute rates and never print: metrics come from
//! [`crate::IterationMetrics`] so that every engine is measured by the same formulas.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::{
    ContextParams, EffectiveContext, EffectiveLoad, LoadParams, ModelIdentity, RawSample, ServerRecord, TokenTest,
};

/// Why a backend could not do what was asked. Messages are one line and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("failed to load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot create a context: {0}")]
    Context(String),
    #[error(
        "prompt of {prompt_tokens} tokens plus {max_tokens} generated tokens does not fit the context of \
         {ctx_size} tokens; raise --ctx-size or shorten the prompt"
    )]
    ContextTooSmall { prompt_tokens: u64, max_tokens: u32, ctx_size: u32 },
    #[error("{test} needs {needed} tokens of context but the context holds {ctx_size}; raise --ctx-size")]
    TestTooLarge { test: String, needed: u64, ctx_size: u32 },
    #[error("{0}")]
    Unsupported(String),
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("interrupted")]
    Cancelled,
    /// A server backend's own one-line message (it names the server and what to do next).
    #[error("{0}")]
    Server(String),
}

/// What engine measured, for the environment record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The engine's version (e.g. llama.cpp's ggml version and commit).
    pub version: Option<String>,
    /// The engine's description of its build (SIMD features, compiled-in devices).
    pub build: Option<String>,
}

/// Where a model comes from: a local file for in-process engines, a name for a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file on this machine (already resolved and identified by the runner).
    File(PathBuf),
    /// A model the server knows by this name (e.g. Ollama's `llama3.2:3b`).
    Server(String),
}

impl ModelSource {
    /// For messages: the path or the name.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Server(name) => name.clone(),
        }
    }
}

/// Which kind of [`ModelSource`] a backend takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Server,
}

/// One text request: the prompt and how many tokens to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRequest {
    pub prompt: String,
    pub max_tokens: u32,
    pub seed: u32,
    pub stop_at_eos: bool,
}

/// One repetition of a llama-bench test. The ids are drawn from [`crate::TokenRng`] seeded with `seed`; the
/// depth's ids with `depth_seed`, the same for every repetition of a test, so an engine can fill the cache
/// once and restore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest {
    pub test: TokenTest,
    pub seed: u64,
    pub depth_seed: u64,
}

/// An engine that can load models.
pub trait Backend: Send + Sync {
    /// The name users select it by (`-b NAME`).
    fn name(&self) -> &'static str;

    /// Whether `load_model` takes a local file (in-process engines: the runner resolves and identifies the
    /// file first) or a name the backend's server knows (server backends describe the model themselves
    /// through [`LoadedModel::model_identity`]).
    fn source_kind(&self) -> SourceKind {
        SourceKind::File
    }

    /// For server backends: checks that the server answers, before anything else happens, and returns
    /// its version. In-process engines have nothing to check.
    fn check_available(&self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }

    /// Whether the engine can offload layers to a GPU in this build (llama.cpp without a GPU backend
    /// cannot; an `-ngl` sweep there is said to run on the CPU).
    fn gpu_offload_available(&self) -> bool {
        false
    }

    /// Loads a model. The load is timed by the backend (file to ready model) and reported by
    /// [`LoadedModel::load_ms`], never as part of an iteration. `cancel` is polled while loading.
    fn load_model(
        &self,
        source: &ModelSource,
        params: &LoadParams,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Box<dyn LoadedModel>, BackendError>;
}

/// A loaded model, on which contexts are created.
pub trait LoadedModel: Send {
    /// Milliseconds from opening the file to a model ready for a context.
    fn load_ms(&self) -> f64;

    fn engine_info(&self) -> EngineInfo;

    /// The load parameters as the engine applied them.
    fn effective_load(&self) -> EffectiveLoad;

    /// Creates a context; the previous session on this model must have been dropped (the borrow says so).
    fn new_context(&mut self, params: &ContextParams) -> Result<Box<dyn Session + '_>, BackendError>;

    /// Server backends: the model as the server describes it (in-process engines are described from the
    /// file by the runner, and return `None`).
    fn model_identity(&self) -> Option<ModelIdentity> {
        None
    }

    /// Whether this backend loads nothing itself (an OpenAI-compatible server serves a model it loaded before
    /// velollm came): the row's load time is then absent, not zero.
    fn loads_nothing(&self) -> bool {
        false
    }

    /// Warnings about parameters the engine ignores or overrides, said once per load.
    fn load_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A context on a loaded model, serving requests one at a time.
pub trait Session: Send {
    /// The context parameters as the engine applied them (padding, clamping, resolved policies).
    fn effective_context(&self) -> EffectiveContext;

    /// Milliseconds the context took to create (KV cache allocation), apart from the model load; absent for
    /// an engine that allocates nothing up front.
    fn context_ms(&self) -> Option<f64> {
        None
    }

    /// Server backends: how the server was reached, what it was sent and what it reported at load.
    fn server_record(&self) -> Option<ServerRecord> {
        None
    }

    /// Warnings about context parameters the engine ignores (candle has no flash attention, …).
    fn context_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Tokens the prompt occupies, exactly as [`Session::generate`] will evaluate it, when the engine can
    /// count them locally (a server tokenizes remotely: `None`). Lets the runner reject a prompt that does
    /// not fit before any benchmark starts.
    fn count_prompt_tokens(&mut self, prompt: &str) -> Result<Option<u64>, BackendError>;

    /// Runs one text request from an empty cache. `cancel` is polled between tokens (and prompt batches);
    /// when it is set the request ends with [`BackendError::Cancelled`].
    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError>;

    /// Runs one repetition of a llama-bench test: the cache holds exactly `n_depth` tokens (filled outside
    /// the timed region), then `n_prompt` random tokens are evaluated and `n_gen` decoded one at a time, with
    /// the device synchronized before the clock stops. Engines that cannot take token ids return
    /// [`BackendError::Unsupported`].
    fn run_tokens(&mut self, request: &TokenRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        let _ = (request, cancel);
        Err(BackendError::Unsupported("this backend cannot run token-level tests (pp/tg)".into()))
    }

    /// Server backends: a sender that many threads can use at once, for load runs (`--concurrency`,
    /// `--request-rate`). In-process engines serve one request at a time and return `None`.
    fn request_sender(&self) -> Option<Arc<dyn crate::RequestSender>> {
        None
    }

    /// Decodes token ids to text (outside any timed region).
    fn detokenize(&mut self, token_ids: &[u32]) -> Result<String, BackendError>;

    /// The text a sample generated (outside any timed region). Server samples carry their text.
    fn generated_text(&mut self, sample: &RawSample) -> Option<String> {
        match &sample.server {
            Some(server) => Some(server.chunks.iter().map(|c| c.text.as_str()).collect()),
            None => self.detokenize(&sample.token_ids).ok(),
        }
    }
}

/// The tokens of one request, as [`decode_greedy`] produced and timed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedTokens {
    pub token_times_ns: Vec<u64>,
    pub token_ids: Vec<u32>,
    pub eog_tokens: u64,
    pub stop_reason: crate::StopReason,
}

/// The decode loop every in-process engine shares, so that fixed output length, end-of-generation handling,
/// per-token timestamps and cancellation mean the same thing for each of them.
///
/// `next_token(None)` returns the greedy token from the prompt's logits; `next_token(Some(t))` feeds `t` to
/// the engine (position bookkeeping is the engine's) and returns the next greedy token, with the device
/// synchronized. Each token is timestamped (nanoseconds since `start`) the moment it is available. Exactly
/// `request.max_tokens` tokens are produced unless `stop_at_eos` lets an end-of-generation token end early;
/// `cancel` is polled between tokens.
pub fn decode_greedy(
    start: std::time::Instant,
    request: &GenerationRequest,
    cancel: &AtomicBool,
    is_end_of_generation: impl Fn(u32) -> bool,
    mut next_token: impl FnMut(Option<u32>) -> Result<u32, BackendError>,
) -> Result<DecodedTokens, BackendError> {
    let max_tokens = request.max_tokens as usize;
    let mut decoded = DecodedTokens {
        token_times_ns: Vec::with_capacity(max_tokens),
        token_ids: Vec::with_capacity(max_tokens),
        eog_tokens: 0,
        stop_reason: crate::StopReason::Length,
    };
    let mut previous = None;
    loop {
        let token = next_token(previous)?;
        decoded.token_times_ns.push(crate::elapsed_ns(start));
        decoded.token_ids.push(token);
        if is_end_of_generation(token) {
            decoded.eog_tokens += 1;
            if request.stop_at_eos {
                decoded.stop_reason = crate::StopReason::EndOfSequence;
                break;
            }
        }
        if decoded.token_ids.len() >= max_tokens {
            break;
        }
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        previous = Some(token);
    }
    Ok(decoded)
}

/// The timed region of a llama-bench test, the same for every in-process engine: `n_prompt` random ids (the
/// first one `bos` when the vocabulary adds BOS) handed to `evaluate_prompt` (which evaluates them after the
/// cached depth and synchronizes the device), then `n_gen` single-token decodes through `decode_one` (each
/// synchronized), starting with `bos` (else a random id) as llama-bench does, each timestamped. No sampling.
/// The engine adds its counters and the depth's preparation time to the sample.
pub fn timed_token_test(
    test: &crate::TokenTest,
    seed: u64,
    n_vocab: u32,
    bos: Option<u32>,
    cancel: &AtomicBool,
    mut evaluate_prompt: impl FnMut(&[u32]) -> Result<(), BackendError>,
    mut decode_one: impl FnMut(u32) -> Result<(), BackendError>,
) -> Result<RawSample, BackendError> {
    use std::sync::atomic::Ordering;
    let mut rng = crate::TokenRng::new(seed);
    let prompt = rng.tokens(test.n_prompt as usize, n_vocab, bos);
    let start = std::time::Instant::now();
    if !prompt.is_empty() {
        evaluate_prompt(&prompt)?;
    }
    let prompt_eval_ns = if prompt.is_empty() { 0 } else { crate::elapsed_ns(start) };
    let mut token_times_ns = Vec::with_capacity(test.n_gen as usize);
    let mut token_ids = Vec::with_capacity(test.n_gen as usize);
    let mut token = bos.unwrap_or_else(|| rng.token(n_vocab));
    for _ in 0..test.n_gen {
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        decode_one(token)?;
        token_times_ns.push(crate::elapsed_ns(start));
        token_ids.push(token);
        token = rng.token(n_vocab);
    }
    Ok(RawSample {
        prompt_tokens: prompt.len() as u64,
        tokenize_ns: 0,
        prompt_eval_ns,
        token_times_ns,
        stop_reason: crate::StopReason::Length,
        eog_tokens: 0,
        token_ids,
        engine_counters: None,
        server: None,
        test_ns: Some(crate::elapsed_ns(start)),
        depth_tokens: test.n_depth.into(),
        depth_prepare_ns: None,
        batched: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_tokens: u32, stop_at_eos: bool) -> GenerationRequest {
        GenerationRequest { prompt: "p".into(), max_tokens, seed: 0, stop_at_eos }
    }

    #[test]
    fn produces_exactly_max_tokens_and_feeds_each_back() {
        let mut fed = Vec::new();
        let start = std::time::Instant::now();
        let out = decode_greedy(
            start,
            &request(4, false),
            &AtomicBool::new(false),
            |t| t == 2,
            |prev| {
                fed.push(prev);
                Ok(fed.len() as u32) // tokens 1, 2 (end of generation, decoded past), 3, 4
            },
        )
        .unwrap();
        assert_eq!(out.token_ids, [1, 2, 3, 4]);
        assert_eq!(fed, [None, Some(1), Some(2), Some(3)], "the last token is never fed back");
        assert_eq!(out.eog_tokens, 1);
        assert_eq!(out.stop_reason, crate::StopReason::Length);
        assert!(out.token_times_ns.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn token_tests_time_prompt_and_each_decode() {
        let test = crate::TokenTest::single(5, 3, 7);
        let (mut prompts, mut decoded) = (Vec::new(), Vec::new());
        let sample = timed_token_test(
            &test,
            9,
            100,
            Some(1),
            &AtomicBool::new(false),
            |p| {
                prompts.push(p.to_vec());
                Ok(())
            },
            |t| {
                decoded.push(t);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(prompts.len(), 1);
        assert_eq!((prompts[0].len(), prompts[0][0]), (5, 1), "the prompt starts with BOS");
        assert_eq!(decoded[0], 1, "generation starts from BOS, as llama-bench's does");
        assert_eq!(sample.token_ids, decoded);
        assert_eq!((sample.prompt_tokens, sample.token_times_ns.len(), sample.depth_tokens), (5, 3, 7));
        assert!(sample.test_ns.unwrap() >= *sample.token_times_ns.last().unwrap());
        let tg = crate::TokenTest::single(0, 2, 0);
        let sample =
            timed_token_test(&tg, 9, 100, None, &AtomicBool::new(false), |_| unreachable!(), |_| Ok(())).unwrap();
        assert_eq!((sample.prompt_tokens, sample.prompt_eval_ns), (0, 0));
        let cancelled = timed_token_test(&tg, 9, 100, None, &AtomicBool::new(true), |_| Ok(()), |_| Ok(()));
        assert!(matches!(cancelled, Err(BackendError::Cancelled)));
    }

    /// Work of known duration inside the timed regions: every measured interval holds at least that work
    /// (lower bounds only; a busy machine may stretch any step, so no upper bound is asserted).
    #[test]
    fn timed_token_intervals_hold_the_work_inside_them() {
        use std::time::Duration;
        let (prompt, step) = (Duration::from_millis(20), Duration::from_millis(4));
        let test = crate::TokenTest::single(6, 5, 0);
        let before = std::time::Instant::now();
        let sample = timed_token_test(
            &test,
            3,
            100,
            None,
            &AtomicBool::new(false),
            |_| {
                std::thread::sleep(prompt);
                Ok(())
            },
            |_| {
                std::thread::sleep(step);
                Ok(())
            },
        )
        .unwrap();
        let outside = before.elapsed().as_nanos() as u64;
        let ns = |d: Duration| d.as_nanos() as u64;
        assert!(sample.prompt_eval_ns >= ns(prompt), "prompt {} ns", sample.prompt_eval_ns);
        for (i, &t) in sample.token_times_ns.iter().enumerate() {
            assert!(t >= ns(prompt) + ns(step) * (i as u64 + 1), "token {i} at {t} ns");
        }
        for gap in sample.token_times_ns.windows(2).map(|w| w[1] - w[0]) {
            assert!(gap >= ns(step), "gap {gap} ns");
        }
        let test_ns = sample.test_ns.unwrap();
        assert!(test_ns >= ns(prompt) + 5 * ns(step), "test {test_ns} ns");
        assert!(test_ns <= outside, "the timed region lies inside the call");
        // Through the one place rates are computed: the rate is at most the work allows.
        let metrics = crate::IterationMetrics::from_sample(&sample);
        let rate = metrics.tokens_per_second.unwrap();
        let fastest = 11.0 / (prompt + 5 * step).as_secs_f64();
        assert!(rate <= fastest, "{rate} t/s > {fastest}");
    }

    #[test]
    fn timed_text_intervals_hold_the_work_inside_them() {
        use std::time::Duration;
        let (before_first, step) = (Duration::from_millis(15), Duration::from_millis(4));
        let start = std::time::Instant::now();
        // Tokenization and prompt evaluation happen after `start` and before the first token.
        std::thread::sleep(before_first);
        let out = decode_greedy(
            start,
            &request(6, false),
            &AtomicBool::new(false),
            |_| false,
            |previous| {
                if previous.is_some() {
                    std::thread::sleep(step);
                }
                Ok(1)
            },
        )
        .unwrap();
        let ns = |d: Duration| d.as_nanos() as u64;
        assert!(out.token_times_ns[0] >= ns(before_first));
        for gap in out.token_times_ns.windows(2).map(|w| w[1] - w[0]) {
            assert!(gap >= ns(step), "gap {gap} ns");
        }
        let sample = crate::RawSample {
            prompt_tokens: 3,
            tokenize_ns: 0,
            prompt_eval_ns: ns(before_first),
            token_times_ns: out.token_times_ns,
            stop_reason: out.stop_reason,
            eog_tokens: 0,
            token_ids: out.token_ids,
            engine_counters: None,
            server: None,
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        };
        let metrics = crate::IterationMetrics::from_sample(&sample);
        assert!(metrics.ttft_ms.unwrap() >= before_first.as_secs_f64() * 1e3);
        assert!(metrics.eval_ms.unwrap() >= (5 * step).as_secs_f64() * 1e3);
        assert!(metrics.tokens_per_second.unwrap() <= 1.0 / step.as_secs_f64());
    }

    #[test]
    fn stop_at_eos_and_cancel() {
        let start = std::time::Instant::now();
        let mut n = 0;
        let out = decode_greedy(
            start,
            &request(9, true),
            &AtomicBool::new(false),
            |t| t == 2,
            |_| {
                n += 1;
                Ok(n)
            },
        )
        .unwrap();
        assert_eq!((out.token_ids, out.stop_reason), (vec![1, 2], crate::StopReason::EndOfSequence));
        let cancelled = decode_greedy(start, &request(9, false), &AtomicBool::new(true), |_| false, |_| Ok(7));
        assert!(matches!(cancelled, Err(BackendError::Cancelled)));
    }
}
