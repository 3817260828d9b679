//! Raw samples: what a backend measured for one request, timestamps and counts only.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Greedy sampling, shared by the in-process backends so both engines choose tokens identically: the index
/// of the largest logit, the lowest index among equals (as llama.cpp's greedy sampler picks). Done on the
/// logits directly: llama.cpp's sampler chain first copies the whole vocabulary into a candidate array, which
/// cost 2 % of SmolLM2's decode time and is not the engine's work.
///
/// Two passes the compiler vectorizes: the maximum over 16 independent lanes (a plain index-tracking loop is a
/// serial dependency chain; on Gemma 3's 262,144-entry vocabulary it cost 2 % of decode), then the first index
/// holding it. NaN logits are never the maximum; with no finite maximum the answer is 0.
pub fn argmax(logits: &[f32]) -> usize {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &logit) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(logit);
        }
    }
    let max = rest.iter().chain(lanes.iter()).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    logits.iter().position(|&logit| logit == max).unwrap_or(0)
}

/// Nanoseconds on the monotonic clock since `start`: the unit of every raw-sample timestamp.
pub fn elapsed_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The requested number of tokens was generated.
    Length,
    /// An end-of-generation token ended the request (only with `stop_at_eos`, or when a server decides).
    EndOfSequence,
}

/// An engine's own account of the same request (llama.cpp's perf counters), kept beside velollm's clock.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngineCounters {
    pub prompt_eval_count: u64,
    pub prompt_eval_ms: f64,
    /// Single-token decode calls.
    pub eval_count: u64,
    pub eval_ms: f64,
}

/// One streamed chunk of a server's response: when it arrived and what it held. Chunks are not tokens (one
/// chunk can carry several), so they are never counted as tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkArrival {
    /// Request start → the chunk's line fully received by the client.
    pub time_ns: u64,
    pub text: String,
}

/// What a server backend (Ollama) reported for one request, beside the client's own clock.
///
/// The server's metrics are optional because Ollama omits every field that is zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSample {
    /// The exact prompt sent (the benchmark's prompt behind a per-request prefix that defeats prefix caching).
    pub prompt: String,
    pub prompt_eval_count: Option<u64>,
    pub prompt_eval_duration_ns: Option<u64>,
    pub eval_count: Option<u64>,
    pub eval_duration_ns: Option<u64>,
    pub total_duration_ns: Option<u64>,
    pub load_duration_ns: Option<u64>,
    /// The server's reason for stopping (`length`, `stop`, …).
    pub done_reason: Option<String>,
    /// Every chunk received before the final one, in order, with its arrival time.
    pub chunks: Vec<ChunkArrival>,
    /// Request start → the final (`done`) chunk received: the client's whole request.
    pub client_total_ns: u64,
    /// Whether `prompt_eval_count + eval_count` reached the context the server was given (`num_ctx`): the
    /// server then truncated the prompt or shifted the context, and the request did not run as asked.
    /// Absent when the server did not report both counts.
    #[serde(default)]
    pub truncated: Option<bool>,
    /// The server reports no durations of its own (an OpenAI-compatible server without llama.cpp's
    /// `timings`): the headline decode rate is then the client's, from chunk arrivals.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rate_from_client: bool,
    /// Where `eval_count` came from when it is not the server's own count (chunks of a stream without usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count_source: Option<crate::TokenCountSource>,
    /// Prompt tokens the server took from its prefix cache (OpenAI's and vLLM's
    /// `usage.prompt_tokens_details.cached_tokens`, llama.cpp's `timings.cache_n`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cached_tokens: Option<u64>,
}

/// One request as measured. All times are nanoseconds since the request started (monotonic clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawSample {
    /// Tokens evaluated for the prompt.
    pub prompt_tokens: u64,
    /// Request start → prompt tokenized.
    pub tokenize_ns: u64,
    /// Duration of the prompt evaluation itself, up to the device having finished it.
    pub prompt_eval_ns: u64,
    /// For every generated token, request start → token available to the caller.
    pub token_times_ns: Vec<u64>,
    pub stop_reason: StopReason,
    /// End-of-generation tokens generated (and, without `stop_at_eos`, decoded past).
    pub eog_tokens: u64,
    /// The generated token ids, in order.
    pub token_ids: Vec<u32>,
    /// The engine's own counters for this request, when it has them.
    pub engine_counters: Option<EngineCounters>,
    /// Present for server backends: the server's own durations and the chunk arrival times. Such samples
    /// have no per-token timestamps (`token_times_ns` is empty) because the client never sees tokens.
    #[serde(default)]
    pub server: Option<ServerSample>,
    /// Token tests (llama-bench's pp/tg/pg): the timed region, from the first evaluation call to the device
    /// synchronized after the last one. Absent for text requests.
    #[serde(default)]
    pub test_ns: Option<u64>,
    /// Tokens in the KV cache before the timed region (llama-bench's depth).
    #[serde(default)]
    pub depth_tokens: u64,
    /// How long putting those tokens in the cache took (a prefill, or a restore of a saved state). Never
    /// part of any timed figure; recorded so a reader can see it happened.
    #[serde(default)]
    pub depth_prepare_ns: Option<u64>,
    /// Batched tests (llama-batched-bench's): when each sequence's tokens became available. Its
    /// `token_times_ns` are then the ends of the generation steps (every sequence's token of the step
    /// decoded), `prompt_tokens` the tokens the prompt phase evaluated and `test_ns` the prompt and
    /// generation phases together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batched: Option<BatchedSample>,
}

/// The per-sequence timeline of one repetition of a batched test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchedSample {
    pub n_sequences: u32,
    pub shared_prompt: bool,
    /// Tokens of each sequence's prompt (batched-bench's `PP`).
    pub n_prompt: u32,
    /// Generation steps (batched-bench's `TG`): each decodes one token of every sequence.
    pub n_gen: u32,
    /// For every sequence, nanoseconds since the timed region began until each of its next-token logits
    /// were available (device synchronized after the decode call that computed them): the first at the end
    /// of the prompt phase's call holding the sequence's last prompt token (its time to first token), then
    /// one per generation step. `n_gen + 1` entries per sequence.
    pub sequence_token_times_ns: Vec<Vec<u64>>,
}

impl RawSample {
    /// A sample for a text request; the fields that only token tests have are empty.
    pub fn text(
        prompt_tokens: u64,
        tokenize_ns: u64,
        prompt_eval_ns: u64,
        decoded: crate::DecodedTokens,
        engine_counters: Option<EngineCounters>,
    ) -> RawSample {
        RawSample {
            prompt_tokens,
            tokenize_ns,
            prompt_eval_ns,
            token_times_ns: decoded.token_times_ns,
            stop_reason: decoded.stop_reason,
            eog_tokens: decoded.eog_tokens,
            token_ids: decoded.token_ids,
            engine_counters,
            server: None,
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[0.1, 3.0, -2.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN]), 1, "NaN is never the maximum");
        assert_eq!(argmax(&[f32::NAN; 3]), 0);
        assert_eq!(argmax(&[]), 0);
        // Past the 16 lanes and in the remainder, the first of equal maxima still wins.
        let mut long: Vec<f32> = (0..100).map(|i| (i % 7) as f32).collect();
        long[40] = 9.0;
        long[97] = 9.0;
        assert_eq!(argmax(&long), 40);
        long[40] = 0.0;
        assert_eq!(argmax(&long), 97);
    }
}
