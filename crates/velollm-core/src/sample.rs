//! Raw samples: what a backend measured for one request, timestamps and counts only.

use serde::{Deserialize, Serialize};

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
}
