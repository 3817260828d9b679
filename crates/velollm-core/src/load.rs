//! Load runs: many requests in flight against a server at once. What a backend's [`RequestSender`] measured
//! for one request ([`RequestTimeline`]: timestamps and counts only), and what a load row records
//! ([`LoadRecord`]). The generator and the statistics live in `velollm-load`; the formulas are in
//! docs/metrics.md ("Load runs").

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One request a load generator asks a server backend to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRequest {
    /// Order of issue within the run (warm-up requests included), from 0.
    pub index: u64,
    pub prompt: String,
    pub max_tokens: u32,
    pub seed: u32,
    /// Let end-of-generation end the request (otherwise servers that can ignore it are asked to).
    pub stop_at_eos: bool,
}

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCountSource {
    /// The server's own count (OpenAI `usage.completion_tokens`, Ollama `eval_count`).
    Usage,
    /// Streamed chunks with text, for a server that reports no usage in a stream and sends one token per
    /// chunk (llama-cpp-python): an upper bound when a chunk holds several tokens.
    Chunks,
}

/// One request of a load run as the client saw it. Every time is nanoseconds since the run's origin (the
/// generator's monotonic clock), so requests of one run share one time axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTimeline {
    pub index: u64,
    /// Open loop: when the arrival process scheduled the request (the send may be later if the generator
    /// fell behind; `sent_ns − scheduled_ns` is that lag). Absent in a closed loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_ns: Option<u64>,
    /// Just before the request's bytes were written.
    pub sent_ns: u64,
    /// The response's status line and headers received.
    pub response_ns: Option<u64>,
    /// Each streamed chunk that carried text, when its line was complete.
    pub chunk_times_ns: Vec<u64>,
    /// The response complete (or the failure seen).
    pub end_ns: u64,
    pub http_status: Option<u16>,
    pub prompt_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub output_tokens_source: Option<TokenCountSource>,
    /// Why the request failed, in one line without request-specific details (so equal causes count together);
    /// `None` for a request that finished.
    pub error: Option<String>,
}

impl RequestTimeline {
    /// A request that failed before or while it was sent.
    pub fn failed(index: u64, sent_ns: u64, end_ns: u64, http_status: Option<u16>, error: String) -> RequestTimeline {
        RequestTimeline {
            index,
            scheduled_ns: None,
            sent_ns,
            response_ns: None,
            chunk_times_ns: Vec::new(),
            end_ns,
            http_status,
            prompt_tokens: None,
            output_tokens: None,
            output_tokens_source: None,
            error: Some(error),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// A server backend's way of sending requests concurrently: shared by the generator's threads, it never
/// panics and never prints; a failure is a timeline with its `error`. `cancel` is polled between chunks (a
/// cancelled request ends with the error `interrupted`).
pub trait RequestSender: Send + Sync {
    fn send(&self, request: &LoadRequest, origin: Instant, cancel: &AtomicBool) -> RequestTimeline;
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadShape {
    /// Closed loop: `concurrency` users, each sending its next request when the previous one ends.
    Closed { concurrency: u32 },
    /// Open loop: arrivals at `rate` requests per second (`None`: all at once, "inf"), gaps drawn from a gamma
    /// distribution of shape `burstiness` (1 = Poisson), whatever the server's state.
    Open { rate: Option<f64>, burstiness: f64 },
}

/// When a load run ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStop {
    /// After this many timed requests were issued (and have finished).
    Requests(u64),
    /// No request is issued after this many seconds; those in flight finish.
    DurationS(f64),
}

/// One load combination as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadProfile {
    pub shape: LoadShape,
    pub stop: LoadStop,
    /// Untimed requests sent one at a time before the timed ones.
    pub warmup_requests: u32,
    /// Open loop: the most requests in flight at once (arrivals beyond it wait; their lag is recorded).
    pub max_concurrency: u32,
    /// Seeds the arrival process.
    pub seed: u64,
}

impl LoadProfile {
    /// The row's test name: `c4` (closed loop), `rate2.5` / `rate-inf` (open loop).
    pub fn label(&self) -> String {
        match self.shape {
            LoadShape::Closed { concurrency } => format!("c{concurrency}"),
            LoadShape::Open { rate: Some(rate), .. } => format!("rate{}", trim_float(rate)),
            LoadShape::Open { rate: None, .. } => "rate-inf".to_string(),
        }
    }
}

/// `2.50` → `2.5`, `4.0` → `4`.
pub fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Mean and percentiles of one latency over the requests of a run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyDistribution {
    /// Values the figures are over (requests, or gaps for ITL).
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Service-level objectives a request must meet to count towards goodput (each bound optional).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

/// `--sweep`'s place for a row: which step found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepStep {
    /// `one_at_a_time`, `flat_out` or `between`.
    pub phase: String,
    /// 1-based position in the sweep.
    pub step: u32,
}

/// What a load row measured. Every formula is in docs/metrics.md ("Load runs").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    pub profile: LoadProfile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepStep>,
    /// First timed request sent → last timed request ended.
    pub duration_ms: f64,
    pub requests_sent: u64,
    pub completed: u64,
    pub failed: u64,
    /// Failed requests by reason.
    pub failures: BTreeMap<String, u64>,
    /// Most requests in flight at once, as observed from the timelines.
    pub max_in_flight: u32,
    /// `completed / duration`.
    pub request_throughput: Option<f64>,
    /// Output tokens of completed requests / duration.
    pub output_tokens_per_second: Option<f64>,
    /// (Prompt + output tokens of completed requests) / duration.
    pub total_tokens_per_second: Option<f64>,
    pub total_output_tokens: u64,
    pub total_prompt_tokens: u64,
    /// How output tokens were counted (`usage`, `chunks`, or `mixed` when requests differ).
    pub output_tokens_counted_by: Option<String>,
    pub ttft_ms: Option<LatencyDistribution>,
    /// `(e2e − ttft) / (output_tokens − 1)` per request with two tokens or more.
    pub tpot_ms: Option<LatencyDistribution>,
    /// Gaps between consecutive text chunks, pooled over requests.
    pub itl_ms: Option<LatencyDistribution>,
    pub e2e_ms: Option<LatencyDistribution>,
    /// Open loop: how late requests were sent after their scheduled arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<LatencyDistribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    /// Completed requests meeting every SLO bound / duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput: Option<f64>,
    /// Requests meeting every SLO bound / requests sent (failed ones never meet it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_attainment: Option<f64>,
    pub warmup_requests_failed: u64,
    /// Every timed request, in order of issue.
    pub requests: Vec<RequestTimeline>,
}
