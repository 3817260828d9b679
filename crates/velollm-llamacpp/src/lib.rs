//! The `llamacpp` backend: GGUF models run inside velollm's own process through llama.cpp.
//!
//! A llama.cpp context may not move between threads, so each loaded model lives on an engine thread of
//! its own that owns the model, the context and the batch; the [`Session`] handed to the runner sends it
//! requests over a channel. Everything timed happens on the engine thread, so the channel adds nothing to
//! any measurement.
//!
//! Timing: every clock read follows `llama_synchronize`, because `llama_decode` may return before the
//! device has finished (GPU backends). llama.cpp's own perf counters are enabled and read per request, so
//! each sample carries the engine's account of the same work beside velollm's.

pub mod devices;

use std::ffi::CStr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};
use velollm_core::{
    argmax, decode_greedy, elapsed_ns, Backend, BackendError, EngineCounters, EngineInfo, EngineParams, FlashAttention,
    GenerationRequest, RawSample, Session,
};

/// The version of the llama-cpp-sys-2 crate whose llama.cpp sources are compiled in.
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// llama.cpp's backend may be initialised once per process; every session shares it.
static LLAMA_BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn shared_backend(engine_logs: bool) -> Result<&'static LlamaBackend, BackendError> {
    LLAMA_BACKEND
        .get_or_init(|| {
            // Must precede initialisation. Disabled, llama.cpp's log lines are dropped at the source; enabled,
            // they become `tracing` events the CLI shows with -v.
            send_logs_to_tracing(LogOptions::default().with_logs_enabled(engine_logs));
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| BackendError::Load { path: String::new(), reason: format!("llama.cpp init: {reason}") })
}

/// The in-process llama.cpp engine.
#[derive(Debug, Clone, Default)]
pub struct LlamaCppBackend {
    /// Route llama.cpp's own log output into `tracing` (off: silenced). Fixed by the first load in a process.
    pub engine_logs: bool,
}

impl LlamaCppBackend {
    pub fn new(engine_logs: bool) -> LlamaCppBackend {
        LlamaCppBackend { engine_logs }
    }
}

/// llama.cpp's version string and build description.
pub fn engine_info() -> EngineInfo {
    // SAFETY: these functions return pointers to static, NUL-terminated strings owned by llama.cpp.
    let read = |ptr: *const std::os::raw::c_char| {
        (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().trim().to_string())
    };
    let ggml_version = read(unsafe { llama_cpp_sys_2::ggml_version() });
    let ggml_commit = read(unsafe { llama_cpp_sys_2::ggml_commit() });
    let system_info = read(unsafe { llama_cpp_sys_2::llama_print_system_info() });
    let version = format!(
        "llama.cpp (llama-cpp-sys-2 {LLAMA_CPP_SYS_VERSION}, ggml {} commit {})",
        ggml_version.as_deref().unwrap_or("unknown"),
        ggml_commit.as_deref().unwrap_or("unknown"),
    );
    EngineInfo { version: Some(version), build: system_info }
}

impl Backend for LlamaCppBackend {
    fn name(&self) -> &'static str {
        "llamacpp"
    }

    fn load(&self, model: &Path, params: &EngineParams) -> Result<Box<dyn Session>, BackendError> {
        let backend = shared_backend(self.engine_logs)?;
        let (command_tx, command_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let path = model.to_path_buf();
        let params = params.clone();
        let worker = thread::Builder::new()
            .name("llamacpp-engine".into())
            .spawn(move || engine_thread(backend, path, params, ready_tx, command_rx))
            .map_err(|e| load_error(model, format!("cannot start engine thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(ready)) => Ok(Box::new(LlamaCppSession {
                commands: Some(command_tx),
                worker: Some(worker),
                load_ms: ready.load_ms,
                context_size: ready.context_size,
            })),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => Err(load_error(model, "engine thread ended while loading".into())),
        }
    }
}

fn load_error(path: &Path, reason: String) -> BackendError {
    BackendError::Load { path: path.display().to_string(), reason }
}

struct Ready {
    load_ms: f64,
    context_size: u32,
}

enum Command {
    CountTokens(String, Sender<Result<u64, BackendError>>),
    Generate(GenerationRequest, Arc<AtomicBool>, Sender<Result<RawSample, BackendError>>),
    Detokenize(Vec<u32>, Sender<Result<String, BackendError>>),
}

/// A model loaded on its engine thread.
struct LlamaCppSession {
    commands: Option<Sender<Command>>,
    worker: Option<JoinHandle<()>>,
    load_ms: f64,
    context_size: u32,
}

impl LlamaCppSession {
    fn call<T>(&self, make: impl FnOnce(Sender<Result<T, BackendError>>) -> Command) -> Result<T, BackendError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let gone = || BackendError::Generation("the llama.cpp engine thread has stopped".into());
        self.commands.as_ref().ok_or_else(gone)?.send(make(reply_tx)).map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }
}

impl Session for LlamaCppSession {
    fn load_ms(&self) -> f64 {
        self.load_ms
    }

    fn engine_info(&self) -> EngineInfo {
        engine_info()
    }

    fn context_size(&self) -> u32 {
        self.context_size
    }

    fn count_prompt_tokens(&mut self, prompt: &str) -> Result<u64, BackendError> {
        self.call(|reply| Command::CountTokens(prompt.to_string(), reply))
    }

    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        self.call(|reply| Command::Generate(request.clone(), Arc::clone(cancel), reply))
    }

    fn detokenize(&mut self, token_ids: &[u32]) -> Result<String, BackendError> {
        self.call(|reply| Command::Detokenize(token_ids.to_vec(), reply))
    }
}

impl Drop for LlamaCppSession {
    fn drop(&mut self) {
        // Closing the channel ends the engine thread, which frees the context and then the model.
        self.commands.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn model_params(params: &EngineParams) -> LlamaModelParams {
    LlamaModelParams::default().with_n_gpu_layers(params.n_gpu_layers).with_use_mmap(params.use_mmap)
}

fn context_params(params: &EngineParams) -> LlamaContextParams {
    let flash_attn = match params.flash_attn {
        FlashAttention::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
        FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    };
    let threads = i32::try_from(params.threads).unwrap_or(i32::MAX);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(params.ctx_size))
        .with_n_batch(params.batch_size)
        .with_n_ubatch(params.ubatch_size)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_flash_attention_policy(flash_attn)
        // llama.cpp's perf counters: the cross-check against velollm's clock.
        .with_no_perf(false)
        // llama-bench's setting; llama-cpp-2 defaults to a full-size sliding-window cache.
        .with_swa_full(false)
}

fn engine_thread(
    backend: &'static LlamaBackend,
    path: PathBuf,
    params: EngineParams,
    ready: SyncSender<Result<Ready, BackendError>>,
    commands: Receiver<Command>,
) {
    let load_start = Instant::now();
    let model = match LlamaModel::load_from_file(backend, &path, &model_params(&params)) {
        Ok(model) => model,
        Err(e) => {
            let _ = ready.send(Err(load_error(&path, format!("llama.cpp could not load it ({e})"))));
            return;
        }
    };
    let mut context = match model.new_context(backend, context_params(&params)) {
        Ok(context) => context,
        Err(e) => {
            let _ = ready.send(Err(load_error(&path, format!("llama.cpp could not create a context ({e})"))));
            return;
        }
    };
    context.synchronize();
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let mut engine = Engine { model: &model, batch: LlamaBatch::new(params.batch_size.max(1) as usize, 1) };
    if ready.send(Ok(Ready { load_ms, context_size: context.n_ctx() })).is_err() {
        return;
    }
    for command in commands {
        match command {
            Command::CountTokens(prompt, reply) => {
                let _ = reply.send(Ok(engine.tokenize(&prompt).len() as u64));
            }
            Command::Generate(request, cancel, reply) => {
                let _ = reply.send(engine.generate(&mut context, &request, &cancel));
            }
            Command::Detokenize(ids, reply) => {
                let _ = reply.send(Ok(engine.detokenize(&ids)));
            }
        }
    }
}

struct Engine<'m> {
    model: &'m LlamaModel,
    batch: LlamaBatch<'static>,
}

impl Engine<'_> {
    /// The prompt as llama.cpp's own tools tokenize it: BOS added when the vocabulary asks for it,
    /// special-token text parsed.
    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(prompt.as_bytes(), true, true)
    }

    fn detokenize(&self, ids: &[u32]) -> String {
        let tokens: Vec<LlamaToken> = ids.iter().map(|&id| LlamaToken(id as i32)).collect();
        String::from_utf8_lossy(&self.model.vocab().detokenize(&tokens, false, false)).into_owned()
    }

    /// One request from an empty KV cache: prefill, then exactly `max_tokens` greedy tokens (fewer only
    /// with `stop_at_eos`), with a timestamp for every token.
    fn generate(
        &mut self,
        context: &mut LlamaContext<'_>,
        request: &GenerationRequest,
        cancel: &AtomicBool,
    ) -> Result<RawSample, BackendError> {
        let vocab = self.model.vocab();
        let max_tokens = request.max_tokens as usize;
        context.clear_kv_cache();
        context.reset_timings();

        let start = Instant::now();
        let prompt = self.tokenize(&request.prompt);
        let tokenize_ns = elapsed_ns(start);
        let ctx_size = context.n_ctx();
        if prompt.is_empty() || prompt.len() + max_tokens > ctx_size as usize {
            return Err(BackendError::ContextTooSmall {
                prompt_tokens: prompt.len() as u64,
                max_tokens: request.max_tokens,
                ctx_size,
            });
        }

        // Prefill in chunks of the logical batch size; logits only for the prompt's last token.
        let prefill_start_ns = elapsed_ns(start);
        let batch_capacity = context.n_batch().max(1) as usize;
        let mut position = 0i32;
        for chunk in prompt.chunks(batch_capacity) {
            self.batch.clear();
            for &token in chunk {
                let is_last = position as usize == prompt.len() - 1;
                self.batch.add(token, position, &[0], is_last).map_err(generation_error)?;
                position += 1;
            }
            context.decode(&mut self.batch).map_err(generation_error)?;
        }
        context.synchronize();
        let prompt_eval_ns = elapsed_ns(start) - prefill_start_ns;

        let prompt_logits_index = self.batch.n_tokens() - 1;
        let batch = &mut self.batch;
        let decoded = decode_greedy(
            start,
            request,
            cancel,
            |token| vocab.is_eog(LlamaToken(token as i32)),
            |previous| {
                let logits_index = match previous {
                    None => prompt_logits_index,
                    Some(token) => {
                        batch.clear();
                        batch.add(LlamaToken(token as i32), position, &[0], true).map_err(generation_error)?;
                        position += 1;
                        context.decode(batch).map_err(generation_error)?;
                        context.synchronize();
                        0
                    }
                };
                Ok(argmax(context.get_logits_ith(logits_index)) as u32)
            },
        )?;

        let timings = context.timings();
        let engine_counters = EngineCounters {
            prompt_eval_count: u64::try_from(timings.n_p_eval()).unwrap_or(0),
            prompt_eval_ms: timings.t_p_eval_ms(),
            eval_count: u64::try_from(timings.n_eval()).unwrap_or(0),
            eval_ms: timings.t_eval_ms(),
        };
        Ok(RawSample {
            prompt_tokens: prompt.len() as u64,
            tokenize_ns,
            prompt_eval_ns,
            token_times_ns: decoded.token_times_ns,
            stop_reason: decoded.stop_reason,
            eog_tokens: decoded.eog_tokens,
            token_ids: decoded.token_ids,
            engine_counters: Some(engine_counters),
            server: None,
        })
    }
}

fn generation_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Generation(format!("llama.cpp: {e}"))
}
