//! Load runs against a server backend: many requests in flight at once, as a user of vLLM's `bench serve` or
//! GuideLLM expects.
//!
//! - [`spec`]: the profiles as users give them (`--concurrency 1,4,16`, `--request-rate 2,inf`,
//!   `--burstiness`, `--requests`/`--duration`, `--slo ttft=500ms,tpot=50ms`), checked with one-line errors.
//! - [`generator`]: sends the requests through a backend's [`velollm_core::RequestSender`] on plain threads
//!   (the HTTP clients block): a closed loop of N users, or an open loop of Poisson/gamma arrivals.
//! - [`summary`]: a run's timelines → a [`velollm_core::LoadRecord`] (TTFT, TPOT, ITL, end-to-end latency
//!   percentiles, throughput, failures by reason, goodput). docs/metrics.md ("Load runs") states every formula.
//! - [`sweep`]: `--sweep`'s steps (one at a time, flat out, rates between) and its verdict.
//!
//! Nothing here prints; timing is the generator's monotonic clock, shared by every request of a run.

pub mod generator;
pub mod rng;
pub mod spec;
pub mod summary;
pub mod sweep;

pub use generator::{run_profile, LoadRun};
pub use spec::{parse_duration_ms, parse_rates, parse_slo, LoadOptions, LoadSpecError};
pub use summary::summarize;
pub use sweep::Sweep;
