//! llama-batched-bench's measurement: B sequences decoded together, one batch per step.
//!
//! For one repetition of `(PP, TG, B)`: the cache is emptied (outside the timed region), then the prompt
//! phase evaluates B prompts of PP random tokens, one sequence each (or a single prompt in sequence 0,
//! copied to sequences 1…B−1 with `llama_memory_seq_cp` when the prompt is shared), and TG generation steps
//! each evaluate one random token of every sequence in one batch. Every decode call holds at most the
//! context's logical batch (`n_batch`) tokens and is followed by a device synchronize, as batched-bench's
//! `decode_helper` does; the clock is read after each synchronize, so each sequence's tokens are timed by the
//! call that computed them.
//!
//! Differences from batched-bench, on purpose: the token ids are llama-bench's random ones (batched-bench
//! feeds token 0); every sequence's last prompt token asks for logits (batched-bench asks only for the
//! batch's last one), because every sequence needs its own first token, and that is what its time to first
//! token measures; emptying the cache is outside the timed region (batched-bench's T_PP includes it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use velollm_core::{elapsed_ns, BackendError, BatchedSample, Parallel, RawSample, StopReason, TokenRequest, TokenRng};

use crate::engine::{empty_cache, engine_counters, generation_error, vocab_size, ContextState};

/// One token to evaluate: its id, position, sequence and whether its logits are wanted.
#[derive(Clone, Copy)]
struct Entry {
    token: u32,
    position: i32,
    sequence: i32,
    logits: bool,
}

/// Evaluates `entries` in calls of at most `n_batch` tokens, each synchronized, and returns the time (since
/// `start`) at which each call's results were available: call `k` holds entries `k·n_batch ..`.
fn decode_in_calls(
    state: &mut ContextState<'_>,
    entries: &[Entry],
    start: Instant,
    cancel: &AtomicBool,
) -> Result<Vec<u64>, BackendError> {
    let n_batch = state.context.n_batch().max(1) as usize;
    let mut call_ends = Vec::with_capacity(entries.len().div_ceil(n_batch));
    for call in entries.chunks(n_batch) {
        if cancel.load(Ordering::Relaxed) {
            return Err(BackendError::Cancelled);
        }
        state.batch.clear();
        for entry in call {
            state
                .batch
                .add(LlamaToken(entry.token as i32), entry.position, &[entry.sequence], entry.logits)
                .map_err(generation_error)?;
        }
        state.context.decode(&mut state.batch).map_err(generation_error)?;
        state.context.synchronize();
        call_ends.push(elapsed_ns(start));
    }
    Ok(call_ends)
}

/// One repetition of a batched test (the context was created with `n_seq_max = B` and holds `B·(PP+TG)`).
pub(crate) fn run(
    model: &LlamaModel,
    state: &mut ContextState<'_>,
    request: &TokenRequest,
    parallel: Parallel,
    cancel: &AtomicBool,
) -> Result<RawSample, BackendError> {
    let test = request.test;
    if test.n_depth > 0 {
        return Err(BackendError::Unsupported(format!(
            "{}: a batched test has no depth (llama-batched-bench's has none)",
            test.name()
        )));
    }
    if test.n_prompt == 0 || parallel.n_sequences == 0 {
        return Err(BackendError::Unsupported(format!(
            "{}: a batched test needs a prompt and at least one sequence",
            test.name()
        )));
    }
    let sequences = parallel.n_sequences as usize;
    let (n_prompt, n_gen) = (test.n_prompt as usize, test.n_gen as usize);
    let n_batch = state.context.n_batch().max(1) as usize;

    // Every id is drawn before the clock starts.
    let vocab = model.vocab();
    let bos = vocab.should_add_bos().then(|| vocab.bos().0 as u32);
    let n_vocab = vocab_size(model);
    let mut rng = TokenRng::new(request.seed);
    let prompts = if parallel.shared_prompt { 1 } else { sequences };
    let mut prompt_entries = Vec::with_capacity(prompts * n_prompt);
    for sequence in 0..prompts {
        for (position, token) in rng.tokens(n_prompt, n_vocab, bos).into_iter().enumerate() {
            let logits = position + 1 == n_prompt;
            prompt_entries.push(Entry { token, position: position as i32, sequence: sequence as i32, logits });
        }
    }
    let steps: Vec<Vec<Entry>> = (0..n_gen)
        .map(|step| {
            (0..sequences)
                .map(|sequence| Entry {
                    token: rng.token(n_vocab),
                    position: (n_prompt + step) as i32,
                    sequence: sequence as i32,
                    logits: true,
                })
                .collect()
        })
        .collect();

    empty_cache(&mut state.context);
    // The engine's counters then cover exactly the timed work.
    state.context.reset_timings();
    let mut sequence_token_times_ns: Vec<Vec<u64>> = vec![Vec::with_capacity(n_gen + 1); sequences];

    let start = Instant::now();
    let call_ends = decode_in_calls(state, &prompt_entries, start, cancel)?;
    if parallel.shared_prompt {
        for sequence in 1..sequences {
            state.context.copy_kv_cache_seq(0, sequence as i32, None, None).map_err(generation_error)?;
        }
        // Across llama.cpp's per-sequence cache streams the copy itself is queued and done at the next decode
        // (the first generation step); this synchronize only orders the clock after the calls above.
        state.context.synchronize();
    }
    // The prompt phase ends when its last call's results are there (shared: after the copies).
    let prompt_eval_ns = match call_ends.last() {
        Some(&end) if !parallel.shared_prompt => end,
        _ => elapsed_ns(start),
    };
    for (sequence, times) in sequence_token_times_ns.iter_mut().enumerate() {
        let first = if parallel.shared_prompt {
            // One prompt, one set of logits: every sequence's first token is there when the phase ends.
            prompt_eval_ns
        } else {
            call_ends[(sequence * n_prompt + n_prompt - 1) / n_batch]
        };
        times.push(first);
    }

    let mut step_ends = Vec::with_capacity(n_gen);
    for step in &steps {
        let call_ends = decode_in_calls(state, step, start, cancel)?;
        for (sequence, times) in sequence_token_times_ns.iter_mut().enumerate() {
            times.push(call_ends[sequence / n_batch]);
        }
        step_ends.push(*call_ends.last().unwrap_or(&prompt_eval_ns));
    }
    let test_ns = elapsed_ns(start);

    Ok(RawSample {
        prompt_tokens: prompt_entries.len() as u64,
        tokenize_ns: 0,
        prompt_eval_ns,
        token_times_ns: step_ends,
        stop_reason: StopReason::Length,
        eog_tokens: 0,
        // Random ids of many sequences: not a text anyone reads.
        token_ids: Vec::new(),
        engine_counters: Some(engine_counters(&mut state.context)),
        server: None,
        test_ns: Some(test_ns),
        depth_tokens: 0,
        depth_prepare_ns: None,
        batched: Some(BatchedSample {
            n_sequences: parallel.n_sequences,
            shared_prompt: parallel.shared_prompt,
            n_prompt: test.n_prompt,
            n_gen: test.n_gen,
            sequence_token_times_ns,
        }),
    })
}
