//! A load run's timelines → its [`LoadRecord`]. docs/metrics.md ("Load runs") states each formula; the
//! percentiles are core's (linear interpolation between closest ranks, numpy's default).

use std::collections::BTreeMap;

use velollm_core::{percentile, LatencyDistribution, LoadProfile, LoadRecord, RequestTimeline, Slo, TokenCountSource};

const NS_PER_MS: f64 = 1e6;

/// Mean and p50/p90/p99/max of `values`; `None` when there are none.
pub fn distribution(values: &[f64]) -> Option<LatencyDistribution> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(LatencyDistribution {
        count: sorted.len() as u64,
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        p50: percentile(&sorted, 50.0),
        p90: percentile(&sorted, 90.0),
        p99: percentile(&sorted, 99.0),
        max: sorted[sorted.len() - 1],
    })
}

/// One finished request's latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestLatencies {
    /// Sent → first chunk with text; absent when no text arrived.
    pub ttft_ms: Option<f64>,
    /// `(e2e − ttft) / (output_tokens − 1)`; absent below two output tokens.
    pub tpot_ms: Option<f64>,
    /// Sent → response complete.
    pub e2e_ms: f64,
}

impl RequestLatencies {
    pub fn of(t: &RequestTimeline) -> RequestLatencies {
        let ms = |ns: u64| ns as f64 / NS_PER_MS;
        let e2e_ms = ms(t.end_ns.saturating_sub(t.sent_ns));
        let ttft_ms = t.chunk_times_ns.first().map(|&first| ms(first.saturating_sub(t.sent_ns)));
        let tpot_ms = match (ttft_ms, t.output_tokens) {
            (Some(ttft), Some(n)) if n >= 2 => Some((e2e_ms - ttft) / (n - 1) as f64),
            _ => None,
        };
        RequestLatencies { ttft_ms, tpot_ms, e2e_ms }
    }

    /// Whether every bound of `slo` holds. A bound on a figure the request does not have (TPOT of a
    /// one-token answer) is not checked; a TTFT bound on a request without text fails.
    pub fn meets(&self, slo: &Slo) -> bool {
        let within = |bound: Option<f64>, value: Option<f64>, required: bool| match (bound, value) {
            (None, _) => true,
            (Some(b), Some(v)) => v <= b,
            (Some(_), None) => !required,
        };
        within(slo.ttft_ms, self.ttft_ms, true)
            && within(slo.tpot_ms, self.tpot_ms, false)
            && within(slo.e2e_ms, Some(self.e2e_ms), true)
    }
}

/// The record of one profile's run: `timed` are its timed requests, `warmup_failed` how many warm-up requests
/// failed.
pub fn summarize(
    profile: &LoadProfile,
    timed: Vec<RequestTimeline>,
    warmup_failed: u64,
    slo: Option<Slo>,
) -> LoadRecord {
    let ms = |ns: u64| ns as f64 / NS_PER_MS;
    let start = timed.iter().map(|t| t.sent_ns).min();
    let end = timed.iter().map(|t| t.end_ns).max();
    let duration_ms = start.zip(end).map_or(0.0, |(s, e)| ms(e.saturating_sub(s)));
    let per_second = |count: f64| (duration_ms > 0.0).then(|| count / (duration_ms / 1e3));

    let done: Vec<&RequestTimeline> = timed.iter().filter(|t| t.succeeded()).collect();
    let mut failures = BTreeMap::new();
    for t in timed.iter().filter(|t| !t.succeeded()) {
        *failures.entry(t.error.clone().unwrap_or_default()).or_insert(0u64) += 1;
    }
    let latencies: Vec<RequestLatencies> = done.iter().map(|t| RequestLatencies::of(t)).collect();
    let gaps: Vec<f64> =
        done.iter().flat_map(|t| t.chunk_times_ns.windows(2).map(|w| ms(w[1].saturating_sub(w[0])))).collect();
    let lags: Vec<f64> = timed.iter().filter_map(|t| t.scheduled_ns.map(|s| ms(t.sent_ns.saturating_sub(s)))).collect();
    let total_output_tokens: u64 = done.iter().filter_map(|t| t.output_tokens).sum();
    let total_prompt_tokens: u64 = done.iter().filter_map(|t| t.prompt_tokens).sum();
    let sources: std::collections::BTreeSet<TokenCountSource> =
        done.iter().filter_map(|t| t.output_tokens_source).collect();
    let output_tokens_counted_by = match sources.len() {
        0 => None,
        1 => sources.iter().next().map(|s| match s {
            TokenCountSource::Usage => "usage".to_string(),
            TokenCountSource::Chunks => "chunks".to_string(),
        }),
        _ => Some("mixed".to_string()),
    };
    let good = slo.map(|slo| latencies.iter().filter(|l| l.meets(&slo)).count() as f64);

    LoadRecord {
        profile: *profile,
        sweep: None,
        duration_ms,
        requests_sent: timed.len() as u64,
        completed: done.len() as u64,
        failed: (timed.len() - done.len()) as u64,
        failures,
        max_in_flight: max_in_flight(&timed),
        request_throughput: per_second(done.len() as f64),
        output_tokens_per_second: per_second(total_output_tokens as f64),
        total_tokens_per_second: per_second((total_output_tokens + total_prompt_tokens) as f64),
        total_output_tokens,
        total_prompt_tokens,
        output_tokens_counted_by,
        ttft_ms: distribution(&latencies.iter().filter_map(|l| l.ttft_ms).collect::<Vec<_>>()),
        tpot_ms: distribution(&latencies.iter().filter_map(|l| l.tpot_ms).collect::<Vec<_>>()),
        itl_ms: distribution(&gaps),
        e2e_ms: distribution(&latencies.iter().map(|l| l.e2e_ms).collect::<Vec<_>>()),
        send_lag_ms: distribution(&lags),
        slo,
        goodput: good.and_then(per_second),
        slo_attainment: good.filter(|_| !timed.is_empty()).map(|g| g / timed.len() as f64),
        warmup_requests_failed: warmup_failed,
        requests: timed,
    }
}

/// The most requests whose [sent, end) intervals overlap.
fn max_in_flight(timed: &[RequestTimeline]) -> u32 {
    let mut events: Vec<(u64, i32)> = timed.iter().flat_map(|t| [(t.sent_ns, 1), (t.end_ns, -1)]).collect();
    // An end and a send at the same instant: the end first (the slot was free).
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use velollm_core::{LoadShape, LoadStop};

    const MS: u64 = 1_000_000;

    fn ok(index: u64, sent_ms: u64, chunks_ms: &[u64], end_ms: u64, output_tokens: u64) -> RequestTimeline {
        RequestTimeline {
            index,
            scheduled_ns: None,
            sent_ns: sent_ms * MS,
            response_ns: Some(sent_ms * MS),
            chunk_times_ns: chunks_ms.iter().map(|c| c * MS).collect(),
            end_ns: end_ms * MS,
            http_status: Some(200),
            prompt_tokens: Some(10),
            output_tokens: Some(output_tokens),
            output_tokens_source: Some(TokenCountSource::Usage),
            error: None,
        }
    }

    fn profile() -> LoadProfile {
        LoadProfile {
            shape: LoadShape::Closed { concurrency: 2 },
            stop: LoadStop::Requests(3),
            warmup_requests: 0,
            max_concurrency: 1,
            seed: 0,
        }
    }

    /// Hand-checked: two requests overlap, one fails with 503.
    #[test]
    fn figures_by_hand() {
        let timed = vec![
            // ttft 100, e2e 400, 4 tokens → tpot (400 − 100) / 3 = 100; gaps 100, 100, 100
            ok(0, 0, &[100, 200, 300, 400], 400, 4),
            // ttft 50, e2e 250, 3 tokens → tpot 100; gaps 100, 100
            ok(1, 50, &[100, 200, 300], 300, 3),
            RequestTimeline::failed(2, 400 * MS, 1000 * MS, Some(503), "HTTP 503: overloaded".into()),
        ];
        let slo = Slo { ttft_ms: Some(80.0), tpot_ms: None, e2e_ms: None };
        let r = summarize(&profile(), timed, 1, Some(slo));
        assert_eq!((r.requests_sent, r.completed, r.failed), (3, 2, 1));
        assert_eq!(r.failures.get("HTTP 503: overloaded"), Some(&1));
        assert_eq!(r.duration_ms, 1000.0, "first send (0) → last end (1000)");
        assert_eq!(r.request_throughput, Some(2.0));
        assert_eq!(r.total_output_tokens, 7);
        assert_eq!(r.output_tokens_per_second, Some(7.0));
        assert_eq!(r.total_tokens_per_second, Some(27.0), "(7 + 2 · 10) tokens in 1 s");
        let ttft = r.ttft_ms.unwrap();
        assert_eq!((ttft.count, ttft.mean, ttft.p50, ttft.max), (2, 75.0, 75.0, 100.0));
        assert!((ttft.p90 - 95.0).abs() < 1e-9, "50 + 0.9 · 50");
        let tpot = r.tpot_ms.unwrap();
        assert_eq!((tpot.mean, tpot.p99), (100.0, 100.0));
        assert_eq!(r.itl_ms.unwrap().count, 5);
        assert_eq!(r.e2e_ms.unwrap().mean, 325.0);
        assert_eq!(r.max_in_flight, 2, "0–400 and 50–300 overlap; 400–1000 starts as the first ends");
        assert_eq!(r.goodput, Some(1.0), "only the 50 ms TTFT meets ttft ≤ 80 ms");
        assert_eq!(r.slo_attainment, Some(1.0 / 3.0), "failed requests count against attainment");
        assert_eq!(r.warmup_requests_failed, 1);
        assert_eq!(r.output_tokens_counted_by.as_deref(), Some("usage"));
    }

    #[test]
    fn nothing_finished_means_absent_figures_not_zeros() {
        let r = summarize(&profile(), vec![RequestTimeline::failed(0, 0, 5 * MS, None, "refused".into())], 0, None);
        assert_eq!((r.completed, r.failed), (0, 1));
        assert_eq!(r.ttft_ms, None);
        assert_eq!(r.request_throughput, Some(0.0), "a measured zero: nothing finished in 5 ms");
        assert_eq!(r.goodput, None, "no SLO asked for");
        let empty = summarize(&profile(), Vec::new(), 0, None);
        assert_eq!((empty.duration_ms, empty.request_throughput), (0.0, None));
    }

    #[test]
    fn slo_bounds_and_missing_figures() {
        let l = RequestLatencies { ttft_ms: Some(100.0), tpot_ms: None, e2e_ms: 900.0 };
        assert!(
            l.meets(&Slo { ttft_ms: Some(100.0), tpot_ms: Some(1.0), e2e_ms: Some(900.0) }),
            "bounds inclusive; TPOT of one token unchecked"
        );
        assert!(!l.meets(&Slo { ttft_ms: Some(99.0), ..Slo::default() }));
        assert!(!l.meets(&Slo { e2e_ms: Some(899.0), ..Slo::default() }));
        let no_text = RequestLatencies { ttft_ms: None, tpot_ms: None, e2e_ms: 1.0 };
        assert!(!no_text.meets(&Slo { ttft_ms: Some(1e9), ..Slo::default() }));
    }
}
