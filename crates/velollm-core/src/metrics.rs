//! Metrics derived from raw samples. This is the only place where rates are computed, so every backend
//! is measured by the same formulas (docs/metrics.md).

use serde::{Deserialize, Serialize};

use crate::{RawSample, ServerSample, StopReason};

const NS_PER_MS: f64 = 1e6;

/// p50 / p90 / p99 / max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyPercentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyPercentiles {
    /// `None` when there are no values.
    pub fn of(values_ms: &[f64]) -> Option<LatencyPercentiles> {
        if values_ms.is_empty() {
            return None;
        }
        let mut sorted = values_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(LatencyPercentiles {
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The `p`-th percentile of ascending `sorted` values by linear interpolation between closest ranks
/// (the "type 7" definition used by numpy and R by default): rank = p/100 · (n − 1).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of an empty set");
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;
    sorted[lower] + (sorted[upper] - sorted[lower]) * (rank - lower as f64)
}

/// Everything derived from one raw sample. A figure the sample cannot give (no token generated, a field a
/// server omitted) is absent, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    /// Request start → first generated token available (text requests only).
    pub ttft_ms: Option<f64>,
    pub prompt_eval_count: u64,
    pub prompt_eval_ms: Option<f64>,
    /// `prompt_eval_count / prompt_eval_ms`; absent when the evaluation took no measurable time.
    pub prompt_tokens_per_second: Option<f64>,
    /// Generated tokens.
    pub eval_count: u64,
    /// First token available → last token available.
    pub eval_ms: Option<f64>,
    /// Text requests: decode rate `(eval_count − 1) / eval_ms`, absent with fewer than two tokens.
    /// Token tests: llama-bench's rate of the test, `(n_prompt + n_gen) / test time`.
    pub tokens_per_second: Option<f64>,
    /// Request start → last token available (token tests: the timed region).
    pub total_ms: Option<f64>,
    /// Gaps between consecutive tokens; absent with fewer than two tokens.
    pub inter_token_latency_ms: Option<LatencyPercentiles>,
    pub stop_reason: StopReason,
    /// Over HTTP: the client's own figures beside the server's (absent in-process).
    #[serde(default)]
    pub http: Option<HttpMetrics>,
    /// Token tests: the timed region in nanoseconds (llama-bench's per-sample `t_ns`).
    #[serde(default)]
    pub test_ns: Option<u64>,
    /// Batched tests: llama-batched-bench's columns for this repetition and every sequence's latencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batched: Option<BatchedMetrics>,
}

/// llama-batched-bench's columns for one repetition, under the names of its JSONL output (`pl` is `B`,
/// `speed*` are its `S` columns; times in seconds), and each sequence's latencies on velollm's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchedMetrics {
    /// `PP`: prompt tokens per sequence.
    pub pp: u32,
    /// `TG`: generation steps (tokens decoded per sequence).
    pub tg: u32,
    /// `B`: sequences decoded together.
    pub pl: u32,
    pub is_pp_shared: bool,
    /// `N_KV`: tokens evaluated, `B·PP + B·TG`, or `PP + B·TG` with a shared prompt.
    pub n_kv: u64,
    /// `T_PP`: the prompt phase, seconds.
    pub t_pp: f64,
    /// `S_PP`: `B·PP / T_PP` (`PP / T_PP` shared).
    pub speed_pp: Option<f64>,
    /// `T_TG`: the generation steps, seconds.
    pub t_tg: f64,
    /// `S_TG`: `B·TG / T_TG`; absent without generation steps.
    pub speed_tg: Option<f64>,
    /// `T = T_PP + T_TG`.
    pub t: f64,
    /// `S = N_KV / T`.
    pub speed: Option<f64>,
    /// Each sequence's time to first token, ms: timed-region start → its first next-token logits available.
    pub ttft_ms: Vec<f64>,
    /// Each sequence's gaps between consecutive next-token logits, pooled over the sequences, ms.
    pub inter_token_latency_ms: Option<LatencyPercentiles>,
}

/// The client's clock against the server's for one HTTP request (docs/ollama.md states every formula).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpMetrics {
    /// First chunk with text → last chunk with text, on the client.
    pub client_eval_ms: Option<f64>,
    /// `(eval_count − 1) / client_eval_ms`: the decode rate as the client saw it arrive.
    pub client_tokens_per_second: Option<f64>,
    /// Request start → final chunk received, on the client.
    pub client_total_ms: f64,
    /// The server's `total_duration` (includes its `load_duration`).
    pub server_total_ms: Option<f64>,
    /// The server's `load_duration` for this request (queueing and any reload).
    pub server_load_ms: Option<f64>,
    /// `client_total_ms − server_total_ms`: what HTTP, JSON and the client add to the request.
    pub http_overhead_ms: Option<f64>,
    /// Chunks received before the final one.
    pub chunk_count: u64,
    /// Gaps between consecutive chunks with text (chunks, not tokens).
    pub inter_chunk_latency_ms: Option<LatencyPercentiles>,
}

impl IterationMetrics {
    /// Derives the metrics of one sample. A sample without any generated token still gives metrics (its
    /// counts, its prompt figures); the figures that need a token are absent.
    pub fn from_sample(sample: &RawSample) -> IterationMetrics {
        if let Some(server) = &sample.server {
            return Self::from_server_sample(sample, server);
        }
        if let (Some(batched), Some(test_ns)) = (&sample.batched, sample.test_ns) {
            return Self::from_batched_test(sample, batched, test_ns);
        }
        if let Some(test_ns) = sample.test_ns {
            return Self::from_token_test(sample, test_ns);
        }
        let first = sample.token_times_ns.first().copied();
        let last = sample.token_times_ns.last().copied();
        let eval_count = sample.token_times_ns.len() as u64;
        let eval_ms = first.zip(last).map(|(first, last)| (last - first) as f64 / NS_PER_MS);
        let prompt_eval_ms = sample.prompt_eval_ns as f64 / NS_PER_MS;
        let gaps = inter_token_gaps_ms(&sample.token_times_ns);
        IterationMetrics {
            ttft_ms: first.map(|t| t as f64 / NS_PER_MS),
            prompt_eval_count: sample.prompt_tokens,
            prompt_eval_ms: Some(prompt_eval_ms),
            prompt_tokens_per_second: rate(sample.prompt_tokens as f64, prompt_eval_ms),
            eval_count,
            eval_ms,
            tokens_per_second: eval_ms.filter(|_| eval_count >= 2).and_then(|ms| rate((eval_count - 1) as f64, ms)),
            total_ms: last.map(|t| t as f64 / NS_PER_MS),
            inter_token_latency_ms: LatencyPercentiles::of(&gaps),
            stop_reason: sample.stop_reason,
            http: None,
            test_ns: None,
            batched: None,
        }
    }

    /// llama-batched-bench's test: the rate is `S = N_KV / T`, every token the timed region evaluated over
    /// its duration (llama-bench's formula on the same region). TTFT is the mean of the sequences' own.
    fn from_batched_test(sample: &RawSample, batched: &crate::BatchedSample, test_ns: u64) -> IterationMetrics {
        let b = u64::from(batched.n_sequences);
        let generated = b * u64::from(batched.n_gen);
        let n_kv = sample.prompt_tokens + generated;
        let t_pp = sample.prompt_eval_ns as f64 / 1e9;
        let t = test_ns as f64 / 1e9;
        let t_tg = test_ns.saturating_sub(sample.prompt_eval_ns) as f64 / 1e9;
        let per_second = |tokens: u64, seconds: f64| (tokens > 0 && seconds > 0.0).then(|| tokens as f64 / seconds);
        let ttft_ms: Vec<f64> = batched
            .sequence_token_times_ns
            .iter()
            .filter_map(|times| times.first().map(|&t| t as f64 / NS_PER_MS))
            .collect();
        let gaps: Vec<f64> =
            batched.sequence_token_times_ns.iter().flat_map(|times| inter_token_gaps_ms(times)).collect();
        let first = sample.token_times_ns.first().copied();
        let last = sample.token_times_ns.last().copied();
        let inter_token_latency_ms = LatencyPercentiles::of(&gaps);
        IterationMetrics {
            ttft_ms: (!ttft_ms.is_empty()).then(|| ttft_ms.iter().sum::<f64>() / ttft_ms.len() as f64),
            prompt_eval_count: sample.prompt_tokens,
            prompt_eval_ms: Some(sample.prompt_eval_ns as f64 / NS_PER_MS),
            prompt_tokens_per_second: per_second(sample.prompt_tokens, t_pp),
            eval_count: generated,
            eval_ms: first.zip(last).map(|(first, last)| (last - first) as f64 / NS_PER_MS),
            tokens_per_second: per_second(n_kv, t),
            total_ms: Some(test_ns as f64 / NS_PER_MS),
            inter_token_latency_ms,
            stop_reason: sample.stop_reason,
            http: None,
            test_ns: Some(test_ns),
            batched: Some(BatchedMetrics {
                pp: batched.n_prompt,
                tg: batched.n_gen,
                pl: batched.n_sequences,
                is_pp_shared: batched.shared_prompt,
                n_kv,
                t_pp,
                speed_pp: per_second(sample.prompt_tokens, t_pp),
                t_tg,
                speed_tg: per_second(generated, t_tg),
                t,
                speed: per_second(n_kv, t),
                ttft_ms,
                inter_token_latency_ms,
            }),
        }
    }

    /// llama-bench's test: the rate is every token the timed region processed over its duration.
    fn from_token_test(sample: &RawSample, test_ns: u64) -> IterationMetrics {
        let eval_count = sample.token_times_ns.len() as u64;
        let test_ms = test_ns as f64 / NS_PER_MS;
        let prompt_eval_ms = (sample.prompt_tokens > 0).then(|| sample.prompt_eval_ns as f64 / NS_PER_MS);
        let first = sample.token_times_ns.first().copied();
        let last = sample.token_times_ns.last().copied();
        IterationMetrics {
            ttft_ms: None,
            prompt_eval_count: sample.prompt_tokens,
            prompt_eval_ms,
            prompt_tokens_per_second: prompt_eval_ms.and_then(|ms| rate(sample.prompt_tokens as f64, ms)),
            eval_count,
            eval_ms: first.zip(last).map(|(first, last)| (last - first) as f64 / NS_PER_MS),
            tokens_per_second: rate((sample.prompt_tokens + eval_count) as f64, test_ms),
            total_ms: Some(test_ms),
            inter_token_latency_ms: LatencyPercentiles::of(&inter_token_gaps_ms(&sample.token_times_ns)),
            stop_reason: sample.stop_reason,
            http: None,
            test_ns: Some(test_ns),
            batched: None,
        }
    }

    /// Over HTTP the server counts tokens and times its own work; the client times arrivals. Headline
    /// decode rate = server `eval_count / eval_duration` (Ollama's "eval rate"); TTFT and total are the
    /// client's (first and last chunk with text).
    fn from_server_sample(sample: &RawSample, server: &ServerSample) -> IterationMetrics {
        let text_times: Vec<u64> = server.chunks.iter().filter(|c| !c.text.is_empty()).map(|c| c.time_ns).collect();
        let first = text_times.first().copied();
        let last = text_times.last().copied();
        let ms = |ns: u64| ns as f64 / NS_PER_MS;
        let eval_count = server.eval_count.unwrap_or(0);
        let prompt_eval_count = server.prompt_eval_count.unwrap_or(0);
        let eval_ms = server.eval_duration_ns.map(ms);
        let prompt_eval_ms = server.prompt_eval_duration_ns.map(ms);
        let client_eval_ms = first.zip(last).map(|(first, last)| ms(last - first));
        let client_total_ms = ms(server.client_total_ns);
        let server_total_ms = server.total_duration_ns.map(ms);
        IterationMetrics {
            ttft_ms: first.map(ms),
            prompt_eval_count,
            prompt_eval_ms,
            prompt_tokens_per_second: prompt_eval_ms.and_then(|t| rate(prompt_eval_count as f64, t)),
            eval_count,
            eval_ms,
            tokens_per_second: if server.rate_from_client {
                client_eval_ms.filter(|_| eval_count >= 2).and_then(|t| rate((eval_count - 1) as f64, t))
            } else {
                eval_ms.filter(|_| eval_count > 0).and_then(|t| rate(eval_count as f64, t))
            },
            total_ms: last.map(ms),
            // Chunks are not tokens: no per-token latencies exist over HTTP (see `http`).
            inter_token_latency_ms: None,
            stop_reason: sample.stop_reason,
            http: Some(HttpMetrics {
                client_eval_ms,
                client_tokens_per_second: client_eval_ms
                    .filter(|_| eval_count >= 2)
                    .and_then(|t| rate((eval_count - 1) as f64, t)),
                client_total_ms,
                server_total_ms,
                server_load_ms: server.load_duration_ns.map(ms),
                http_overhead_ms: server_total_ms.map(|s| client_total_ms - s),
                chunk_count: server.chunks.len() as u64,
                inter_chunk_latency_ms: LatencyPercentiles::of(&inter_token_gaps_ms(&text_times)),
            }),
            test_ns: None,
            batched: None,
        }
    }
}

/// Gaps between consecutive token timestamps, in milliseconds.
pub(crate) fn inter_token_gaps_ms(token_times_ns: &[u64]) -> Vec<f64> {
    token_times_ns.windows(2).map(|w| (w[1] - w[0]) as f64 / NS_PER_MS).collect()
}

/// `count / ms` in per-second units; absent when no time elapsed.
fn rate(count: f64, ms: f64) -> Option<f64> {
    (ms > 0.0).then(|| count * 1000.0 / ms)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ChunkArrival;

    fn sample(token_times_ns: Vec<u64>) -> RawSample {
        RawSample {
            prompt_tokens: 10,
            tokenize_ns: 100_000,
            prompt_eval_ns: 20_000_000,
            token_ids: vec![1; token_times_ns.len()],
            token_times_ns,
            stop_reason: StopReason::Length,
            eog_tokens: 0,
            engine_counters: None,
            server: None,
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        }
    }

    fn server_sample(chunks: &[(u64, &str)], eval_count: Option<u64>) -> RawSample {
        RawSample {
            prompt_tokens: 12,
            tokenize_ns: 0,
            prompt_eval_ns: 6_000_000,
            token_times_ns: vec![],
            stop_reason: StopReason::Length,
            eog_tokens: 0,
            token_ids: vec![],
            engine_counters: None,
            server: Some(ServerSample {
                prompt: "(1) p".into(),
                prompt_eval_count: Some(12),
                prompt_eval_duration_ns: Some(6_000_000),
                eval_count,
                eval_duration_ns: Some(50_000_000),
                total_duration_ns: Some(70_000_000),
                load_duration_ns: None,
                done_reason: Some("length".into()),
                chunks: chunks
                    .iter()
                    .map(|&(ms, t)| ChunkArrival { time_ns: ms * 1_000_000, text: t.into() })
                    .collect(),
                client_total_ns: 75_000_000,
                truncated: None,
                rate_from_client: false,
                eval_count_source: None,
                prompt_cached_tokens: None,
            }),
            test_ns: None,
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: None,
        }
    }

    #[test]
    fn server_samples_use_server_counts_and_client_arrivals() {
        // An empty first chunk does not count as the first token; the last chunk holds two tokens.
        let raw = server_sample(&[(10, ""), (20, "a"), (40, "b"), (60, "c d")], Some(5));
        let m = IterationMetrics::from_sample(&raw);
        assert_eq!(m.ttft_ms, Some(20.0));
        assert_eq!(m.total_ms, Some(60.0));
        assert_eq!(m.eval_count, 5);
        assert_eq!(m.eval_ms, Some(50.0));
        assert_eq!(m.tokens_per_second, Some(100.0), "server eval_count / eval_duration");
        assert_eq!(m.prompt_tokens_per_second, Some(2000.0));
        assert_eq!(m.inter_token_latency_ms, None, "chunks are not tokens");
        let http = m.http.unwrap();
        assert_eq!(http.client_eval_ms, Some(40.0));
        assert_eq!(http.client_tokens_per_second, Some(100.0));
        assert_eq!(http.http_overhead_ms, Some(5.0));
        assert_eq!(http.chunk_count, 4);
        assert_eq!(http.inter_chunk_latency_ms.unwrap().max, 20.0);
    }

    #[test]
    fn server_fields_omitted_as_zero_are_absent_rates() {
        let raw = server_sample(&[(20, "a")], None);
        let m = IterationMetrics::from_sample(&raw);
        assert_eq!(m.eval_count, 0);
        assert_eq!(m.tokens_per_second, None);
        // A stream whose chunks carried no text: counted, with no time to first token.
        let empty = IterationMetrics::from_sample(&server_sample(&[(5, "")], Some(1)));
        assert_eq!((empty.ttft_ms, empty.total_ms, empty.eval_count), (None, None, 1));
    }

    #[test]
    fn derives_rates_from_timestamps() {
        // First token at 25 ms, then one every 10 ms: 4 tokens, 3 gaps of 10 ms.
        let m = IterationMetrics::from_sample(&sample(vec![25_000_000, 35_000_000, 45_000_000, 55_000_000]));
        assert_eq!(m.ttft_ms, Some(25.0));
        assert_eq!(m.eval_count, 4);
        assert_eq!(m.eval_ms, Some(30.0));
        assert_eq!(m.tokens_per_second, Some(100.0));
        assert_eq!(m.total_ms, Some(55.0));
        assert_eq!(m.prompt_eval_ms, Some(20.0));
        assert_eq!(m.prompt_tokens_per_second, Some(500.0));
        let itl = m.inter_token_latency_ms.unwrap();
        assert_eq!((itl.p50, itl.p99, itl.max), (10.0, 10.0, 10.0));
    }

    #[test]
    fn single_token_has_no_decode_rate_and_no_token_no_ttft() {
        let m = IterationMetrics::from_sample(&sample(vec![30_000_000]));
        assert_eq!(m.tokens_per_second, None);
        assert_eq!(m.inter_token_latency_ms, None);
        assert_eq!(m.ttft_ms, m.total_ms);
        let none = IterationMetrics::from_sample(&sample(vec![]));
        assert_eq!((none.ttft_ms, none.total_ms, none.eval_ms, none.eval_count), (None, None, None, 0));
        assert_eq!(none.prompt_tokens_per_second, Some(500.0), "the prompt was still evaluated");
    }

    #[test]
    fn token_tests_rate_every_timed_token_over_the_region() {
        // pp64+tg4: prompt in 40 ms, then 4 tokens at 50, 60, 70, 80 ms; the region ends at 80 ms.
        let mut raw = sample(vec![50_000_000, 60_000_000, 70_000_000, 80_000_000]);
        raw.prompt_tokens = 64;
        raw.prompt_eval_ns = 40_000_000;
        raw.test_ns = Some(80_000_000);
        let m = IterationMetrics::from_sample(&raw);
        assert_eq!(m.tokens_per_second, Some(68.0 / 0.080));
        assert_eq!(m.ttft_ms, None);
        assert_eq!(m.total_ms, Some(80.0));
        assert_eq!(m.prompt_tokens_per_second, Some(1600.0));
        assert_eq!(m.test_ns, Some(80_000_000));
        // tg only: no prompt figures.
        let mut tg = sample(vec![10_000_000, 20_000_000]);
        tg.prompt_tokens = 0;
        tg.prompt_eval_ns = 0;
        tg.test_ns = Some(20_000_000);
        let m = IterationMetrics::from_sample(&tg);
        assert_eq!((m.prompt_eval_ms, m.tokens_per_second), (None, Some(100.0)));
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 5.5);
        assert!((percentile(&sorted, 90.0) - 9.1).abs() < 1e-12);
        assert!((percentile(&sorted, 99.0) - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&sorted, 100.0), 10.0);
        assert_eq!(percentile(&[4.0], 99.0), 4.0);
    }

    /// A batched repetition of known times: B = 2, PP = 4, TG = 2, prompt phase 40 ms, steps ending at 60 and
    /// 100 ms; sequence 0's prompt finished in an earlier call (30 ms) than sequence 1's.
    pub(crate) fn batched_sample(shared_prompt: bool) -> RawSample {
        let ms = |v: u64| v * 1_000_000;
        RawSample {
            prompt_tokens: if shared_prompt { 4 } else { 8 },
            tokenize_ns: 0,
            prompt_eval_ns: ms(40),
            token_times_ns: vec![ms(60), ms(100)],
            stop_reason: StopReason::Length,
            eog_tokens: 0,
            token_ids: vec![],
            engine_counters: None,
            server: None,
            test_ns: Some(ms(100)),
            depth_tokens: 0,
            depth_prepare_ns: None,
            batched: Some(crate::BatchedSample {
                n_sequences: 2,
                shared_prompt,
                n_prompt: 4,
                n_gen: 2,
                sequence_token_times_ns: vec![vec![ms(30), ms(60), ms(100)], vec![ms(40), ms(60), ms(100)]],
            }),
        }
    }

    #[test]
    fn batched_columns_follow_batched_bench_s_formulas() {
        let m = IterationMetrics::from_sample(&batched_sample(false));
        let b = m.batched.clone().unwrap();
        assert_eq!((b.pp, b.tg, b.pl, b.n_kv), (4, 2, 2, 12), "N_KV = B·PP + B·TG");
        let close = |a: f64, e: f64| assert!((a - e).abs() < 1e-9, "{a} vs {e}");
        close(b.t_pp, 0.04);
        close(b.speed_pp.unwrap(), 8.0 / 0.04);
        close(b.t_tg, 0.06);
        close(b.speed_tg.unwrap(), 4.0 / 0.06);
        close(b.t, 0.1);
        close(b.speed.unwrap(), 12.0 / 0.1);
        // The row's rate is S; TTFT the sequences' mean; the counts those of the timed region.
        close(m.tokens_per_second.unwrap(), 120.0);
        assert_eq!(b.ttft_ms, [30.0, 40.0]);
        close(m.ttft_ms.unwrap(), 35.0);
        assert_eq!((m.prompt_eval_count, m.eval_count), (8, 4));
        // Gaps per sequence: 30, 40 and 20, 40 ms.
        let itl = b.inter_token_latency_ms.unwrap();
        assert_eq!((itl.max, itl.p50), (40.0, 35.0));
        // Shared: one prompt of PP tokens, S_PP = PP / T_PP, N_KV = PP + B·TG.
        let shared = IterationMetrics::from_sample(&batched_sample(true)).batched.unwrap();
        assert_eq!(shared.n_kv, 8);
        close(shared.speed_pp.unwrap(), 4.0 / 0.04);
        close(shared.speed.unwrap(), 80.0);
        // No generation step: no S_TG rather than a division by zero.
        let mut prompt_only = batched_sample(false);
        prompt_only.test_ns = Some(40_000_000);
        prompt_only.token_times_ns.clear();
        let b = prompt_only.batched.as_mut().unwrap();
        b.n_gen = 0;
        b.sequence_token_times_ns.iter_mut().for_each(|t| t.truncate(1));
        let m = IterationMetrics::from_sample(&prompt_only).batched.unwrap();
        assert_eq!((m.speed_tg, m.n_kv), (None, 8));
        assert!(m.inter_token_latency_ms.is_none());
    }
}
