//! The `candle` backend: GGUF models run in-process on [candle](https://github.com/huggingface/candle), a
//! pure-Rust engine, so velollm can benchmark without llama.cpp (and without a C++ toolchain).
//!
//! - The model is chosen from `general.architecture`: `llama` and `qwen2` run candle-transformers' quantized
//!   modules; `gemma3` runs this crate's own graph on candle's kernels, because candle 0.11.1's module
//!   computes a different function (see `gemma3.rs`).
//! - The tokenizer is built from the file's own vocabulary ([`Tokenizer`]) and gives llama.cpp's token ids.
//! - Each request starts from an empty KV cache (`forward(prompt, 0)`), evaluates the prompt in one call
//!   (chunked prefill is broken in candle's Gemma 3), then decodes greedily one token at a time, with a
//!   timestamp per token. candle runs on the CPU synchronously, so every clock read follows finished work.
//! - Threads: candle sizes its thread pools from `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` the first time
//!   it computes anything, once per process. The first load sets both; a later load asking for another
//!   count is refused rather than silently run with the old one.

pub mod gemma3;
mod tokenizer;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use velollm_core::{
    argmax, decode_greedy, elapsed_ns, timed_token_test, Backend, BackendError, ContextParams, EffectiveContext,
    EffectiveLoad, EngineInfo, FlashAttention, GenerationRequest, KvCacheType, LoadParams, ModelSource, RawSample,
    Session, TokenRequest, TokenRng,
};
use velollm_gguf::{GgufFile, ReadOptions};

pub use tokenizer::{Tokenizer, TokenizerError};

/// Why candle runs no batched test: its quantized models keep one KV cache, for one sequence.
pub const CANDLE_NO_PARALLEL: &str =
    "candle cannot decode several sequences together (its models hold one sequence's cache); run -npl/--parallel on -b llamacpp";

/// The candle version compiled in (pinned exactly in Cargo.toml).
pub const CANDLE_VERSION: &str = "0.11.1";

/// The architectures this backend runs, for error messages.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, gemma3";

/// GGUF tensor types candle 0.11 can compute with.
const SUPPORTED_TENSOR_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// The thread count candle's pools were created with in this process (set by the first load).
static POOL_THREADS: Mutex<Option<u32>> = Mutex::new(None);

/// Sets candle's thread-pool sizes before its first use, or checks that `threads` matches what they were
/// created with. Returns the count in effect.
pub fn configure_threads(threads: u32) -> Result<u32, String> {
    let threads = threads.max(1);
    let mut pool = POOL_THREADS.lock().map_err(|_| "thread configuration lock poisoned".to_string())?;
    match *pool {
        Some(current) if current != threads => Err(format!(
            "candle's thread pools already run {current} threads in this process and cannot be resized; \
             run again with --threads {current} or in a new process"
        )),
        Some(current) => Ok(current),
        None => {
            // candle creates its pools lazily from these variables; nothing in this process has computed
            // with candle yet, because every load goes through here first.
            std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            *pool = Some(threads);
            Ok(threads)
        }
    }
}

/// The in-process candle engine (CPU).
#[derive(Debug, Clone)]
pub struct CandleBackend {
    /// The thread count candle's pools are created with. candle sizes them once per process, before its first
    /// computation (which happens while a model loads), so this is fixed when the backend is made; a context
    /// asking for another count is refused with a one-line error rather than silently run with this one.
    threads: u32,
}

impl CandleBackend {
    pub fn new(threads: u32) -> CandleBackend {
        CandleBackend { threads: threads.max(1) }
    }
}

/// candle's version and what this build computes with.
pub fn engine_info(threads: u32) -> EngineInfo {
    // Compile-time features: they, not the CPU's, decide whether candle's kernels are vectorised.
    let simd: Vec<&str> = [
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("f16c", cfg!(target_feature = "f16c")),
        ("avx512f", cfg!(target_feature = "avx512f")),
        ("neon", cfg!(target_feature = "neon")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let simd = if simd.is_empty() { "none".to_string() } else { simd.join(" ") };
    EngineInfo {
        version: Some(format!("candle {CANDLE_VERSION}")),
        build: Some(format!("device cpu | threads {threads} | compiled with SIMD: {simd}")),
    }
}

impl Backend for CandleBackend {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn load_model(
        &self,
        source: &ModelSource,
        params: &LoadParams,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Box<dyn velollm_core::LoadedModel>, BackendError> {
        let ModelSource::File(path) = source else {
            return Err(BackendError::Unsupported(format!(
                "candle runs local GGUF files; '{}' is a server model name",
                source.describe()
            )));
        };
        let load_error = |reason: String| BackendError::Load { path: path.display().to_string(), reason };
        let threads = configure_threads(self.threads).map_err(load_error)?;
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        let start = Instant::now();
        let model = CandleModel::load(path, u32::MAX).map_err(load_error)?;
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut warnings = Vec::new();
        if !params.use_mmap {
            warnings.push("candle reads the model into memory whatever --no-mmap says".to_string());
        }
        Ok(Box::new(CandleLoaded { model, load_ms, threads, warnings }))
    }
}

/// A candle model with its weights in memory. Contexts only set the limits a request may use: candle's KV
/// cache grows with each request and is dropped when the next one starts at position 0.
struct CandleLoaded {
    model: CandleModel,
    load_ms: f64,
    threads: u32,
    warnings: Vec<String>,
}

impl velollm_core::LoadedModel for CandleLoaded {
    fn load_ms(&self) -> f64 {
        self.load_ms
    }

    fn engine_info(&self) -> EngineInfo {
        engine_info(self.threads)
    }

    fn effective_load(&self) -> EffectiveLoad {
        EffectiveLoad {
            // This build of candle computes on the CPU only.
            n_gpu_layers: Some(0),
            n_layers_total: self.model.n_layers.map(|n| n + 1),
            gpu_devices: Vec::new(),
            split_mode: None,
            main_gpu: None,
            use_mmap: Some(false),
            model_buffers: Vec::new(),
            devices: Vec::new(),
        }
    }

    fn load_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn new_context(&mut self, params: &ContextParams) -> Result<Box<dyn Session + '_>, BackendError> {
        if params.n_threads.max(1) != self.threads {
            return Err(BackendError::Context(format!(
                "candle's thread pools run {} threads in this process and cannot be resized; run --threads {} \
                 in a separate invocation",
                self.threads, params.n_threads
            )));
        }
        let context_size = params.n_ctx.min(self.model.position_limit);
        let mut warnings = Vec::new();
        if context_size < params.n_ctx {
            warnings.push(format!(
                "candle's {} module computes {} positions at most: the context is {context_size}, not {}",
                self.model.architecture, self.model.position_limit, params.n_ctx
            ));
        }
        if params.flash_attn == FlashAttention::On {
            warnings.push("candle has no flash attention: it ran with flash attention off".to_string());
        }
        let kv = KvCacheType::F32;
        if params.type_k != kv || params.type_v != kv {
            warnings.push(format!(
                "candle keeps its KV cache in f32 (requested K {}, V {}): recorded as f32",
                params.type_k, params.type_v
            ));
        }
        let effective = EffectiveContext {
            n_ctx: context_size,
            // A prompt is evaluated in one call: candle has no logical or physical batch to set.
            n_batch: None,
            n_ubatch: None,
            n_threads: Some(self.threads),
            flash_attn: Some(FlashAttention::Off),
            type_k: Some(kv.to_string()),
            type_v: Some(kv.to_string()),
            context_buffers: Vec::new(),
            n_seq_max: None,
            kv_unified: None,
            n_ctx_seq: None,
        };
        self.model.context_size = context_size;
        Ok(Box::new(CandleSession { model: &mut self.model, effective, warnings }))
    }
}

/// The model modules candle has for the supported architectures.
enum Weights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    /// velollm's own Gemma 3 graph (see `gemma3.rs` for why not candle's).
    Gemma3(gemma3::Gemma3),
}

impl Weights {
    /// Logits of the last position of `tokens`, evaluated at positions `index_pos..`; `index_pos == 0`
    /// starts a fresh KV cache.
    fn forward(&mut self, tokens: &Tensor, index_pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Weights::Llama(m) => m.forward(tokens, index_pos),
            Weights::Qwen2(m) => m.forward(tokens, index_pos),
            Weights::Gemma3(m) => m.forward(tokens, index_pos),
        }
    }
}

/// A model ready to generate: weights, tokenizer and the context it may use.
pub struct CandleModel {
    weights: Weights,
    pub tokenizer: Tokenizer,
    /// Tokens a request may occupy (prompt plus output).
    pub context_size: u32,
    /// The most positions candle's module for this architecture computes correctly.
    pub position_limit: u32,
    pub architecture: String,
    /// Repeating layers (`<arch>.block_count`).
    pub n_layers: Option<u32>,
    device: Device,
}

/// Positions prepared for architectures whose tables velollm builds (Gemma 3): enough for any test here,
/// and small (RoPE tables of this many rows).
const GEMMA3_MAX_POSITIONS: u64 = 32_768;

impl CandleModel {
    /// Reads `path`: checks architecture and tensor types first (one-line errors), then builds the tokenizer
    /// and candle's model. `ctx_size` is capped to what candle's module computes correctly.
    pub fn load(path: &Path, ctx_size: u32) -> Result<CandleModel, String> {
        let header = GgufFile::read(path, ReadOptions { keep_arrays: true }).map_err(|e| e.to_string())?;
        let architecture = header.architecture().unwrap_or("unknown").to_string();
        if !matches!(architecture.as_str(), "llama" | "qwen2" | "gemma3") {
            return Err(format!(
                "unsupported architecture '{architecture}' for the candle backend (supported: {SUPPORTED_ARCHITECTURES})"
            ));
        }
        if let Some(bad) = header.tensors.iter().find(|t| !is_supported_type(t.ggml_type.0)) {
            return Err(format!(
                "tensor {} has type {}, which candle cannot run (supported: {SUPPORTED_TENSOR_TYPES})",
                bad.name,
                bad.ggml_type.name()
            ));
        }
        let tokenizer = Tokenizer::from_gguf(&header).map_err(|e| e.to_string())?;
        let trained = header.arch_u64("context_length");
        let model_limit = match architecture.as_str() {
            // candle's llama module precomputes RoPE for this many positions.
            "llama" => quantized_llama::MAX_SEQ_LEN as u64,
            "gemma3" => trained.unwrap_or(GEMMA3_MAX_POSITIONS).min(GEMMA3_MAX_POSITIONS),
            _ => trained.unwrap_or(u64::from(u32::MAX)),
        };
        let position_limit = model_limit.min(u64::from(u32::MAX)) as u32;
        let context_size = u64::from(ctx_size).min(model_limit) as u32;
        let n_layers = header.arch_u64("block_count").and_then(|n| u32::try_from(n).ok());

        let device = Device::Cpu;
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| format!("candle could not read the GGUF header: {}", one_line(&e)))?;
        let build_error =
            |e: candle_core::Error| format!("candle could not build the {architecture} model: {}", one_line(&e));
        let weights = match architecture.as_str() {
            "llama" => Weights::Llama(
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, &device).map_err(build_error)?,
            ),
            "qwen2" => Weights::Qwen2(
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &device).map_err(build_error)?,
            ),
            _ => Weights::Gemma3(
                gemma3::Gemma3::from_gguf(&content, &mut reader, position_limit as usize, &device)
                    .map_err(build_error)?,
            ),
        };
        Ok(CandleModel { weights, tokenizer, context_size, position_limit, architecture, n_layers, device })
    }

    /// Evaluates `tokens` starting at position `index_pos` and returns the last position's logits.
    pub fn forward(&mut self, tokens: &[u32], index_pos: usize) -> Result<Vec<f32>, String> {
        forward(&mut self.weights, &self.device, tokens, index_pos)
    }

    /// One request from an empty KV cache: prompt in one call, then exactly `max_tokens` greedy tokens
    /// (fewer only with `stop_at_eos`), each timestamped.
    pub fn generate(&mut self, request: &GenerationRequest, cancel: &AtomicBool) -> Result<RawSample, BackendError> {
        let max_tokens = request.max_tokens as usize;

        let start = Instant::now();
        let prompt = self.tokenizer.encode(&request.prompt);
        let tokenize_ns = elapsed_ns(start);
        if prompt.is_empty() || prompt.len() + max_tokens > self.context_size as usize {
            return Err(BackendError::ContextTooSmall {
                prompt_tokens: prompt.len() as u64,
                max_tokens: request.max_tokens,
                ctx_size: self.context_size,
            });
        }

        let prefill_start_ns = elapsed_ns(start);
        let mut logits = self.forward(&prompt, 0).map_err(BackendError::Generation)?;
        let prompt_eval_ns = elapsed_ns(start) - prefill_start_ns;

        let mut position = prompt.len();
        // Split borrows: the decode step runs the weights while the end-of-generation check reads the tokenizer.
        let CandleModel { weights, tokenizer, device, .. } = self;
        let decoded = decode_greedy(
            start,
            request,
            cancel,
            |token| tokenizer.is_end_of_generation(token),
            |previous| {
                if let Some(token) = previous {
                    logits = forward(weights, device, &[token], position).map_err(BackendError::Generation)?;
                    position += 1;
                }
                Ok(argmax(&logits) as u32)
            },
        )?;
        // candle keeps no performance counters of its own.
        Ok(RawSample::text(prompt.len() as u64, tokenize_ns, prompt_eval_ns, decoded, None))
    }

    /// One repetition of a llama-bench test with the same random ids llama.cpp gets for the same seed. candle
    /// cannot save its cache, so a depth is re-evaluated before every repetition, outside the timed region.
    pub fn run_tokens(&mut self, request: &TokenRequest, cancel: &AtomicBool) -> Result<RawSample, BackendError> {
        let test = request.test;
        if test.parallel.is_some() {
            return Err(BackendError::Unsupported(CANDLE_NO_PARALLEL.to_string()));
        }
        if test.context_needed() > u64::from(self.context_size) {
            return Err(BackendError::TestTooLarge {
                test: test.name(),
                needed: test.context_needed(),
                ctx_size: self.context_size,
            });
        }
        if test.n_depth > 0 && test.n_prompt > 0 {
            return Err(BackendError::Unsupported(format!(
                "{}: candle's attention cannot evaluate a multi-token batch after cached tokens (prompt tests at a depth)",
                test.name()
            )));
        }
        let n_vocab = u32::try_from(self.tokenizer.vocab_size()).unwrap_or(u32::MAX).max(1);
        let bos = self.tokenizer.adds_bos().then(|| self.tokenizer.bos_token()).flatten();
        let mut position = 0usize;
        let depth_prepare_ns = if test.n_depth > 0 {
            let started = Instant::now();
            let depth = TokenRng::new(request.depth_seed).tokens(test.n_depth as usize, n_vocab, bos);
            self.forward(&depth, 0).map_err(BackendError::Generation)?;
            position = depth.len();
            Some(elapsed_ns(started))
        } else {
            None
        };
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        // Both steps advance the same cache position on the same weights: shared through cells. Position 0
        // would reset candle's cache, which is exactly where a test from an empty cache starts.
        let position = std::cell::Cell::new(position);
        let model = std::cell::RefCell::new(&mut *self);
        let mut sample = timed_token_test(
            &test,
            request.seed,
            n_vocab,
            bos,
            cancel,
            |prompt| {
                model.borrow_mut().forward(prompt, position.get()).map_err(BackendError::Generation)?;
                position.set(position.get() + prompt.len());
                Ok(())
            },
            |token| {
                model.borrow_mut().forward(&[token], position.get()).map_err(BackendError::Generation)?;
                position.set(position.get() + 1);
                Ok(())
            },
        )?;
        // candle keeps no performance counters of its own.
        sample.depth_prepare_ns = depth_prepare_ns;
        Ok(sample)
    }
}

/// Evaluates `tokens` from position `index_pos` and returns the last position's logits.
fn forward(weights: &mut Weights, device: &Device, tokens: &[u32], index_pos: usize) -> Result<Vec<f32>, String> {
    let mut run = || -> candle_core::Result<Vec<f32>> {
        let input = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let logits = weights.forward(&input, index_pos)?;
        logits.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()
    };
    run().map_err(|e| format!("candle: {}", one_line(&e)))
}

/// A candle error as one line: without the backtrace candle appends to its message when `RUST_BACKTRACE` is
/// set (19 lines for a missing tensor), with a context or a path kept before the reason.
fn one_line(e: &candle_core::Error) -> String {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => one_line(inner),
        Error::Context { inner, context } => format!("{context}: {}", one_line(inner)),
        Error::WithPath { inner, path } => format!("{}: {}", path.display(), one_line(inner)),
        other => {
            let text = other.to_string();
            let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            lines.join("; ")
        }
    }
}

/// GGUF type ids candle 0.11 implements (F32, F16, Q4_0 … Q8_K, BF16).
fn is_supported_type(ggml_type: u32) -> bool {
    matches!(ggml_type, 0 | 1 | 2 | 3 | 6..=15 | 30)
}

/// A context on a candle model: the limits its requests run under.
struct CandleSession<'m> {
    model: &'m mut CandleModel,
    effective: EffectiveContext,
    warnings: Vec<String>,
}

impl Session for CandleSession<'_> {
    fn effective_context(&self) -> EffectiveContext {
        self.effective.clone()
    }

    fn context_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn count_prompt_tokens(&mut self, prompt: &str) -> Result<Option<u64>, BackendError> {
        Ok(Some(self.model.tokenizer.encode(prompt).len() as u64))
    }

    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        self.model.generate(request, cancel)
    }

    fn run_tokens(&mut self, request: &TokenRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        self.model.run_tokens(request, cancel)
    }

    fn detokenize(&mut self, token_ids: &[u32]) -> Result<String, BackendError> {
        Ok(self.model.tokenizer.decode(token_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_errors_are_one_line_without_their_backtrace() {
        let missing = candle_core::Error::Msg("cannot find tensor info for blk.0.attn_q.weight".into());
        let with_backtrace = candle_core::Error::WithBacktrace {
            inner: Box::new(missing),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(with_backtrace.to_string().lines().count() > 1, "candle's own Display carries the backtrace");
        assert_eq!(one_line(&with_backtrace), "cannot find tensor info for blk.0.attn_q.weight");
        let nested = with_backtrace.context("loading the weights").with_path("m.gguf");
        assert_eq!(one_line(&nested), "m.gguf: loading the weights: cannot find tensor info for blk.0.attn_q.weight");
    }

    #[test]
    fn supported_types_exclude_iq_quants() {
        assert!(is_supported_type(2) && is_supported_type(12) && is_supported_type(30));
        assert!(!is_supported_type(16) && !is_supported_type(20) && !is_supported_type(39));
    }

    #[test]
    fn engine_info_names_candle() {
        let info = engine_info(2);
        assert_eq!(info.version.as_deref(), Some("candle 0.11.1"));
        assert!(info.build.unwrap().contains("threads 2"));
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    /// A GGUF header with one string of metadata and no tensors.
    fn gguf_with_architecture(arch: &str) -> std::path::PathBuf {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        let key = "general.architecture";
        bytes.extend((key.len() as u64).to_le_bytes());
        bytes.extend(key.as_bytes());
        bytes.extend(8u32.to_le_bytes());
        bytes.extend((arch.len() as u64).to_le_bytes());
        bytes.extend(arch.as_bytes());
        // The (empty) data section starts at the next 32-byte boundary.
        bytes.resize(bytes.len().div_ceil(32) * 32, 0);
        let path = std::env::temp_dir().join(format!("velollm-candle-arch-{arch}-{}.gguf", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn unsupported_architecture_is_a_one_line_error_naming_the_supported_ones() {
        let path = gguf_with_architecture("phi3");
        let err = CandleModel::load(&path, 512).err().expect("phi3 is refused");
        let _ = std::fs::remove_file(&path);
        assert_eq!(err, "unsupported architecture 'phi3' for the candle backend (supported: llama, qwen2, gemma3)");
    }

    #[test]
    fn a_second_thread_count_in_one_process_is_refused() {
        let first = configure_threads(3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, 3);
        assert_eq!(configure_threads(3), Ok(3));
        assert!(configure_threads(4).unwrap_err().contains("--threads 3"));
    }
}
