//! The engine thread: owns one llama.cpp model, its current context and batch, and serves commands.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::params::{KvCacheType as LlamaKvType, LlamaContextParams};
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use velollm_core::{
    argmax, decode_greedy, elapsed_ns, timed_token_test, BackendError, ContextParams, EffectiveContext, EffectiveLoad,
    EngineCounters, FlashAttention, GenerationRequest, KvCacheType, LoadParams, RawSample, TokenRequest, TokenRng,
};

use crate::{load, load_error, logs};

pub(crate) struct ModelReady {
    pub load_ms: f64,
    pub effective: EffectiveLoad,
}

pub(crate) struct ContextReady {
    pub context_ms: f64,
    pub effective: EffectiveContext,
}

type Reply<T> = Sender<Result<T, BackendError>>;

pub(crate) enum Command {
    NewContext(ContextParams, Reply<ContextReady>),
    DropContext,
    CountTokens(String, Reply<u64>),
    Generate(GenerationRequest, Arc<AtomicBool>, Reply<RawSample>),
    RunTokens(TokenRequest, Arc<AtomicBool>, Reply<RawSample>),
    Detokenize(Vec<u32>, Reply<String>),
}

fn kv_type(kind: KvCacheType) -> LlamaKvType {
    match kind {
        KvCacheType::F32 => LlamaKvType::F32,
        KvCacheType::F16 => LlamaKvType::F16,
        KvCacheType::Bf16 => LlamaKvType::BF16,
        KvCacheType::Q8_0 => LlamaKvType::Q8_0,
        KvCacheType::Q4_0 => LlamaKvType::Q4_0,
        KvCacheType::Q4_1 => LlamaKvType::Q4_1,
        KvCacheType::Iq4Nl => LlamaKvType::IQ4_NL,
        KvCacheType::Q5_0 => LlamaKvType::Q5_0,
        KvCacheType::Q5_1 => LlamaKvType::Q5_1,
    }
}

fn context_params(params: &ContextParams) -> LlamaContextParams {
    let flash_attn = match params.flash_attn {
        FlashAttention::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
        FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    };
    let threads = i32::try_from(params.n_threads).unwrap_or(i32::MAX);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(params.n_ctx))
        .with_n_batch(params.n_batch)
        .with_n_ubatch(params.n_ubatch)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_flash_attention_policy(flash_attn)
        .with_type_k(kv_type(params.type_k))
        .with_type_v(kv_type(params.type_v))
        // llama.cpp's perf counters: the cross-check against velollm's clock.
        .with_no_perf(false)
        // llama-bench's setting; llama-cpp-2 defaults to a full-size sliding-window cache.
        .with_swa_full(false)
        // Batched tests: room for B sequences. llama-cpp-2 has no setter for `kv_unified`, so llama.cpp's
        // default (and batched-bench's) applies: one cache stream of n_ctx / n_seq_max cells per sequence.
        .with_n_seq_max(params.n_seq_max.max(1))
}

/// What the model load did with the load parameters: where llama.cpp put every layer (its own
/// `assigned to device` lines, not its "offloaded N/M layers to GPU" summary, which it prints also when no
/// device exists), the buffers it allocated, and each device's memory before and after.
fn effective_load(model: &LlamaModel, params: &LoadParams, devices: &[load::LoadDevice], log: &str) -> EffectiveLoad {
    let layers_total = model.n_layer() + 1;
    let model_buffers = logs::buffers(log);
    let placement = load::placement(devices, log, &model_buffers);
    let assigned: u32 = placement.iter().map(|d| d.layers).sum();
    let offloaded = placement.iter().filter(|d| d.backend != "CPU").map(|d| d.layers).sum::<u32>();
    EffectiveLoad {
        // Without the per-layer lines (a wording change upstream) the count is unknown, not zero.
        n_gpu_layers: (assigned > 0).then_some(offloaded),
        n_layers_total: Some(layers_total),
        gpu_devices: placement
            .iter()
            .filter(|d| d.backend != "CPU" && d.layers > 0)
            .map(|d| if d.description.is_empty() { d.name.clone() } else { format!("{} ({})", d.name, d.description) })
            .collect(),
        split_mode: Some(params.split_mode),
        main_gpu: Some(params.main_gpu),
        use_mmap: Some(params.use_mmap),
        model_buffers,
        devices: placement,
    }
}

pub(crate) fn run(
    backend: &'static LlamaBackend,
    path: PathBuf,
    params: LoadParams,
    cancel: Arc<AtomicBool>,
    ready: SyncSender<Result<ModelReady, BackendError>>,
    commands: Receiver<Command>,
) {
    let load_start = Instant::now();
    logs::start_capture();
    let loaded = load::load(&path, &params, &cancel);
    let log = logs::finish_capture();
    let (model, devices) = match loaded {
        Ok(loaded) => loaded,
        Err(load::LoadFailure::Cancelled) => {
            let _ = ready.send(Err(BackendError::Cancelled));
            return;
        }
        Err(load::LoadFailure::Parameters(reason)) => {
            let _ = ready.send(Err(BackendError::Unsupported(reason)));
            return;
        }
        Err(load::LoadFailure::Engine) => {
            let reason = last_error_line(&log).unwrap_or_else(|| "it returned no model".to_string());
            let _ = ready.send(Err(load_error(&path, format!("llama.cpp could not load it ({reason})"))));
            return;
        }
    };
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let effective = effective_load(&model, &params, &devices, &log);
    if ready.send(Ok(ModelReady { load_ms, effective })).is_err() {
        return;
    }

    let mut engine = Engine { model: &model, path: &path, context: None };
    for command in commands {
        match command {
            Command::NewContext(params, reply) => {
                let _ = reply.send(engine.new_context(backend, &params));
            }
            Command::DropContext => engine.context = None,
            Command::CountTokens(prompt, reply) => {
                let _ = reply.send(Ok(engine.tokenize(&prompt).len() as u64));
            }
            Command::Detokenize(ids, reply) => {
                let _ = reply.send(Ok(engine.detokenize(&ids)));
            }
            Command::Generate(request, cancel, reply) => {
                let _ = reply.send(engine.with_context(|model, ctx| generate(model, ctx, &request, &cancel)));
            }
            Command::RunTokens(request, cancel, reply) => {
                let _ = reply.send(engine.with_context(|model, ctx| run_tokens(model, ctx, &request, &cancel)));
            }
        }
    }
}

/// llama.cpp's own reason, the most specific of its error lines (`crate::reason`): more useful than "null
/// result" or its final "failed to load model".
fn last_error_line(log: &str) -> Option<String> {
    crate::reason::most_specific(log)
}

/// A context and what belongs to it: the batch sized to its logical batch, and the saved cache of a depth.
pub(crate) struct ContextState<'m> {
    pub context: LlamaContext<'m>,
    pub batch: LlamaBatch<'static>,
    /// `(n_depth, depth_seed)` → the sequence state after filling the cache with those tokens.
    depth_state: Option<(u32, u64, SeqState)>,
}

struct Engine<'m> {
    model: &'m LlamaModel,
    path: &'m Path,
    context: Option<ContextState<'m>>,
}

impl<'m> Engine<'m> {
    fn new_context(&mut self, backend: &LlamaBackend, params: &ContextParams) -> Result<ContextReady, BackendError> {
        self.context = None;
        let start = Instant::now();
        logs::start_capture();
        let created = self.model.new_context(backend, context_params(params));
        let log = logs::finish_capture();
        let context = created.map_err(|e| {
            let reason = last_error_line(&log).unwrap_or_else(|| e.to_string());
            BackendError::Context(format!("llama.cpp rejected the context parameters ({reason})"))
        })?;
        context.synchronize();
        let context_ms = start.elapsed().as_secs_f64() * 1e3;
        let flash_attn = match params.flash_attn {
            FlashAttention::Auto => logs::flash_attention_resolved(&log),
            forced => Some(forced),
        };
        let effective = EffectiveContext {
            n_ctx: context.n_ctx(),
            n_batch: Some(context.n_batch()),
            n_ubatch: Some(context.n_ubatch()),
            // Passed explicitly for both generation and batch evaluation, so this is the count that runs.
            n_threads: Some(params.n_threads),
            flash_attn,
            type_k: Some(params.type_k.to_string()),
            type_v: Some(params.type_v.to_string()),
            context_buffers: logs::buffers(&log),
            // Said only for contexts of several sequences, as llama.cpp printed them (absent if it did not).
            n_seq_max: (params.n_seq_max > 1)
                .then(|| logs::context_setting(&log, "n_seq_max").and_then(|v| v.parse().ok()))
                .flatten(),
            kv_unified: (params.n_seq_max > 1)
                .then(|| logs::context_setting(&log, "kv_unified").map(|v| v == "true"))
                .flatten(),
            n_ctx_seq: (params.n_seq_max > 1)
                .then(|| logs::context_setting(&log, "n_ctx_seq").and_then(|v| v.parse().ok()))
                .flatten(),
        };
        let batch = LlamaBatch::new(context.n_batch().max(1) as usize, 1);
        self.context = Some(ContextState { context, batch, depth_state: None });
        Ok(ContextReady { context_ms, effective })
    }

    fn with_context<T>(
        &mut self,
        f: impl FnOnce(&LlamaModel, &mut ContextState<'m>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let model = self.model;
        let path = self.path;
        let state =
            self.context.as_mut().ok_or_else(|| BackendError::Context(format!("no context on {}", path.display())))?;
        f(model, state)
    }

    /// The prompt as llama.cpp's own tools tokenize it: BOS added when the vocabulary asks for it,
    /// special-token text parsed.
    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        tokenize(self.model, prompt)
    }

    fn detokenize(&self, ids: &[u32]) -> String {
        let tokens: Vec<LlamaToken> = ids.iter().map(|&id| LlamaToken(id as i32)).collect();
        String::from_utf8_lossy(&self.model.vocab().detokenize(&tokens, false, false)).into_owned()
    }
}

fn tokenize(model: &LlamaModel, prompt: &str) -> Vec<LlamaToken> {
    model.vocab().tokenize(prompt.as_bytes(), true, true)
}

pub(crate) fn generation_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::Generation(format!("llama.cpp: {e}"))
}

/// Evaluates `tokens` at positions `first_position..` in chunks of the context's logical batch, asking for
/// logits at the end of each chunk (llama-bench's `llama_batch_get_one` does the same) or, with
/// `logits_only_last`, only for the very last token. Polls `cancel` between chunks.
fn evaluate(
    state: &mut ContextState<'_>,
    tokens: &[LlamaToken],
    first_position: i32,
    logits_only_last: bool,
    cancel: &AtomicBool,
) -> Result<(), BackendError> {
    let chunk_size = state.context.n_batch().max(1) as usize;
    let mut position = first_position;
    let last_index = tokens.len().saturating_sub(1);
    for (chunk_index, chunk) in tokens.chunks(chunk_size).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        state.batch.clear();
        for (i, &token) in chunk.iter().enumerate() {
            let index = chunk_index * chunk_size + i;
            let logits = if logits_only_last { index == last_index } else { i == chunk.len() - 1 };
            state.batch.add(token, position, &[0], logits).map_err(generation_error)?;
            position += 1;
        }
        state.context.decode(&mut state.batch).map_err(generation_error)?;
    }
    Ok(())
}

pub(crate) fn engine_counters(context: &mut LlamaContext<'_>) -> EngineCounters {
    let timings = context.timings();
    // llama.cpp reports each count as at least 1 (`std::max(1, n)`, to keep its printed rates finite); a count
    // whose time is exactly zero is that floor, not a token it evaluated.
    let count = |n: i32, ms: f64| if ms == 0.0 { 0 } else { u64::try_from(n).unwrap_or(0) };
    EngineCounters {
        prompt_eval_count: count(timings.n_p_eval(), timings.t_p_eval_ms()),
        prompt_eval_ms: timings.t_p_eval_ms(),
        eval_count: count(timings.n_eval(), timings.t_eval_ms()),
        eval_ms: timings.t_eval_ms(),
    }
}

/// One text request from an empty KV cache: prefill, then exactly `max_tokens` greedy tokens (fewer only
/// with `stop_at_eos`), with a timestamp for every token.
fn generate(
    model: &LlamaModel,
    state: &mut ContextState<'_>,
    request: &GenerationRequest,
    cancel: &AtomicBool,
) -> Result<RawSample, BackendError> {
    let vocab = model.vocab();
    let max_tokens = request.max_tokens as usize;
    empty_cache(&mut state.context);
    state.context.reset_timings();

    let start = Instant::now();
    let prompt = tokenize(model, &request.prompt);
    let tokenize_ns = elapsed_ns(start);
    let ctx_size = state.context.n_ctx();
    if prompt.is_empty() || prompt.len() + max_tokens > ctx_size as usize {
        return Err(BackendError::ContextTooSmall {
            prompt_tokens: prompt.len() as u64,
            max_tokens: request.max_tokens,
            ctx_size,
        });
    }

    // Prefill in chunks of the logical batch size; logits only for the prompt's last token.
    let prefill_start_ns = elapsed_ns(start);
    evaluate(state, &prompt, 0, true, cancel)?;
    state.context.synchronize();
    let prompt_eval_ns = elapsed_ns(start) - prefill_start_ns;

    let prompt_logits_index = state.batch.n_tokens() - 1;
    let mut position = prompt.len() as i32;
    let ContextState { context, batch, .. } = state;
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
    let counters = engine_counters(context);
    Ok(RawSample::text(prompt.len() as u64, tokenize_ns, prompt_eval_ns, decoded, Some(counters)))
}

/// Empties the KV cache between repetitions as llama-bench does (`llama_memory_clear(mem, false)`): every cell
/// freed, the buffers left as they are. llama-cpp-2's `clear_kv_cache` passes `data = true`, which also zeroes
/// the whole cache (a memset of every K and V buffer before each repetition, which llama-bench does not do) and
/// exposes no other choice; removing every sequence's tokens (`llama_memory_seq_rm(mem, -1, -1, -1)`) frees the
/// same cells and resets the search head the same way, without touching the data.
pub(crate) fn empty_cache(context: &mut LlamaContext<'_>) {
    if !matches!(context.clear_kv_cache_seq(None, None, None), Ok(true)) {
        // A memory that cannot remove a partial range (never the case for a whole one): clear it fully.
        context.clear_kv_cache();
    }
}

/// Puts `n_depth` random tokens in the cache outside any timed region: the first time by evaluating them
/// (then saving the sequence's state), later by restoring that state, as llama-bench does. Returns how long
/// it took.
fn fill_depth(
    model: &LlamaModel,
    state: &mut ContextState<'_>,
    n_depth: u32,
    seed: u64,
    cancel: &AtomicBool,
) -> Result<u64, BackendError> {
    let start = Instant::now();
    if let Some((depth, saved_seed, saved)) = &state.depth_state {
        if *depth == n_depth && *saved_seed == seed {
            state.context.state_seq_set(saved, 0).map_err(generation_error)?;
            state.context.synchronize();
            return Ok(elapsed_ns(start));
        }
    }
    let vocab = model.vocab();
    let first = vocab.should_add_bos().then(|| vocab.bos().0 as u32);
    let ids = TokenRng::new(seed).tokens(n_depth as usize, vocab_size(model), first);
    let tokens: Vec<LlamaToken> = ids.into_iter().map(|id| LlamaToken(id as i32)).collect();
    evaluate(state, &tokens, 0, false, cancel)?;
    state.context.synchronize();
    let saved = state.context.state_seq_get(0, LlamaStateSeqFlags::empty()).map_err(generation_error)?;
    state.depth_state = Some((n_depth, seed, saved));
    Ok(elapsed_ns(start))
}

pub(crate) fn vocab_size(model: &LlamaModel) -> u32 {
    u32::try_from(model.n_vocab()).unwrap_or(1).max(1)
}

/// One repetition of a llama-bench test. The timed region is llama-bench's: the prompt's evaluation calls
/// and the single-token decodes, each followed by a device synchronize, with random token ids (the first one
/// BOS when the vocabulary adds BOS) and no sampling.
fn run_tokens(
    model: &LlamaModel,
    state: &mut ContextState<'_>,
    request: &TokenRequest,
    cancel: &AtomicBool,
) -> Result<RawSample, BackendError> {
    let test = request.test;
    let ctx_size = state.context.n_ctx();
    if test.context_needed() > u64::from(ctx_size) {
        return Err(BackendError::TestTooLarge { test: test.name(), needed: test.context_needed(), ctx_size });
    }
    if let Some(parallel) = test.parallel {
        return crate::batched::run(model, state, request, parallel, cancel);
    }
    empty_cache(&mut state.context);
    let depth_prepare_ns =
        if test.n_depth > 0 { Some(fill_depth(model, state, test.n_depth, request.depth_seed, cancel)?) } else { None };
    // The engine's counters then cover exactly the timed work.
    state.context.reset_timings();

    let vocab = model.vocab();
    let bos = vocab.should_add_bos().then(|| vocab.bos().0 as u32);
    // Both steps advance the same cache position and use the same context: shared through cells.
    let position = std::cell::Cell::new(test.n_depth as i32);
    let context = std::cell::RefCell::new(&mut *state);
    let mut sample = timed_token_test(
        &test,
        request.seed,
        vocab_size(model),
        bos,
        cancel,
        |prompt| {
            let tokens: Vec<LlamaToken> = prompt.iter().map(|&id| LlamaToken(id as i32)).collect();
            let mut state = context.borrow_mut();
            evaluate(&mut state, &tokens, position.get(), false, cancel)?;
            state.context.synchronize();
            position.set(position.get() + tokens.len() as i32);
            Ok(())
        },
        |token| {
            let mut state = context.borrow_mut();
            let ContextState { context, batch, .. } = &mut **state;
            batch.clear();
            batch.add(LlamaToken(token as i32), position.get(), &[0], true).map_err(generation_error)?;
            context.decode(batch).map_err(generation_error)?;
            context.synchronize();
            position.set(position.get() + 1);
            Ok(())
        },
    )?;
    sample.engine_counters = Some(engine_counters(&mut state.context));
    sample.depth_prepare_ns = depth_prepare_ns;
    Ok(sample)
}
