//! "Per-token latency": for each row with raw token timestamps, the distribution of the gaps between consecutive
//! tokens (a histogram with p50/p90/p99) and the gap at each token position.

use serde_json::Value;
use velollm_results::{Entry, Metric, Run, Status};

use super::{backend_names, Dims, Item};

#[derive(Debug, Clone, PartialEq)]
pub struct Latencies {
    /// At most the limit's cards, text tests first.
    pub cards: Vec<LatencyCard>,
    /// Rows with token timestamps beyond the limit.
    pub omitted: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyCard {
    /// The row's number in its file.
    pub row: usize,
    /// The test and what tells the row apart from the page's others.
    pub title: String,
    /// The row's backend, by position in [`super::backend_names`] (its colour in the backends chart).
    pub colour: usize,
    pub ttft_ms: Option<f64>,
    /// Iterations with two gaps or more.
    pub iterations: usize,
    /// Every gap of those iterations, ascending, in ms.
    pub pooled: Vec<f64>,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub histogram: Bins,
    /// Per token position: the median gap over iterations, the fastest and the slowest.
    pub positions: Vec<(f64, f64, f64)>,
}

/// Equal bins between `edges`; gaps above the last edge in `overflow`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
    pub overflow: usize,
}

/// The gaps between consecutive tokens of each iteration, in ms (iterations with fewer than two gaps left out).
pub fn token_gaps(entry: &Entry) -> Vec<Vec<f64>> {
    let Some(samples) = entry.source.get("samples").and_then(Value::as_array) else { return Vec::new() };
    samples
        .iter()
        .filter_map(|s| s.pointer("/raw/token_times_ns").and_then(Value::as_array))
        .map(|times| {
            let times: Vec<u64> = times.iter().filter_map(Value::as_u64).collect();
            times.windows(2).map(|w| w[1].saturating_sub(w[0]) as f64 / 1e6).collect::<Vec<f64>>()
        })
        .filter(|gaps| gaps.len() >= 2)
        .collect()
}

/// The latency section, or none when no row that did not fail has token timestamps.
pub fn latencies(items: &[Item], runs: &[Run], limit: usize) -> Option<Latencies> {
    let mut candidates: Vec<(&Item, Vec<Vec<f64>>)> = items
        .iter()
        .filter(|i| i.entry.status != Status::Failed)
        .map(|i| (i, token_gaps(i.entry)))
        .filter(|(_, gaps)| !gaps.is_empty())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    // Text benchmarks first: their latency is what a user of the model feels.
    candidates.sort_by_key(|(i, _)| (i.entry.test.kind != "text", i.run));
    let omitted = candidates.len().saturating_sub(limit);
    candidates.truncate(limit);
    let all: Vec<&Item> = items.iter().collect();
    let dims = Dims::of(&all, runs, None);
    let backends = backend_names(items);
    let cards = candidates
        .iter()
        .map(|(item, gaps)| {
            let label = dims.label(item, runs);
            let title = if label.is_empty() {
                item.entry.test.name.clone()
            } else {
                format!("{} · {label}", item.entry.test.name)
            };
            let colour = backends.iter().position(|b| *b == item.entry.backend).unwrap_or(0);
            latency_card(item, gaps, title, colour)
        })
        .collect();
    Some(Latencies { cards, omitted })
}

fn latency_card(item: &Item, gaps: &[Vec<f64>], title: String, colour: usize) -> LatencyCard {
    let mut pooled: Vec<f64> = gaps.iter().flatten().copied().collect();
    pooled.sort_by(f64::total_cmp);
    let p = |q: f64| velollm_core::percentile(&pooled, q);
    let (p50, p90, p99) = (p(50.0), p(90.0), p(99.0));
    let (min, max) = (pooled[0], pooled[pooled.len() - 1]);
    // Equal bins from the fastest gap to the slowest, or to 1.5 × p99 with the rest in an overflow bin, so one
    // stall does not squash the distribution into a single bar.
    let cap = if max > p99 * 1.5 && p99 > min { p99 * 1.5 } else { max };
    // At least ±5 % of the median wide: steady gaps show as one narrow peak, not as noise blown up to fill the axis.
    let median = p50.max(1e-9);
    let (low, high) = if cap - min >= median * 0.1 {
        (min, cap)
    } else {
        let centre = (min + cap) / 2.0;
        ((centre - median * 0.05).max(0.0), centre + median * 0.05)
    };
    let bins = ((pooled.len() as f64).sqrt() * 1.5).ceil().clamp(8.0, 40.0) as usize;
    let width = (high - low) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| low + width * i as f64).collect();
    let mut counts = vec![0usize; bins];
    let mut overflow = 0;
    for &g in &pooled {
        if g > high {
            overflow += 1;
        } else {
            counts[(((g - low) / width) as usize).min(bins - 1)] += 1;
        }
    }
    let positions = gaps.iter().map(Vec::len).max().unwrap_or(0);
    let positions: Vec<(f64, f64, f64)> = (0..positions)
        .map(|k| {
            let mut at: Vec<f64> = gaps.iter().filter_map(|g| g.get(k).copied()).collect();
            at.sort_by(f64::total_cmp);
            (velollm_core::percentile(&at, 50.0), at[0], at[at.len() - 1])
        })
        .collect();
    LatencyCard {
        row: item.entry.row,
        title,
        colour,
        ttft_ms: item.mean_sd(Metric::TimeToFirstTokenMs).map(|(mean, _, _)| mean),
        iterations: gaps.len(),
        pooled,
        p50,
        p90,
        p99,
        histogram: Bins { edges, counts, overflow },
        positions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::items;
    use velollm_fixtures::{text_sample, token_samples_at, Row};
    use velollm_results::read_str;

    /// A text row whose iterations' gaps are `gaps` (ms), three times.
    fn text_row(backend: &str, gaps: &[f64]) -> serde_json::Value {
        let samples = (0..3).map(|_| text_sample(5, 3.0, 20.0, gaps)).collect();
        Row::text("short", "Hi", gaps.len() as u32 + 1, samples).backend(backend).to_json()
    }

    #[test]
    fn a_card_per_row_with_timestamps_text_first_with_its_gaps_binned() {
        // Nine gaps of 10 ms and a stall of 100 ms: the stalls are the slowest 10 %, within the bins (p99).
        let mut gaps = vec![10.0; 9];
        gaps.push(100.0);
        let rows = [
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0, 91.0])).backend("llamacpp").to_json(),
            text_row("candle", &gaps),
            text_row("llamacpp", &[10.0, 12.0, 14.0]),
        ];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        let view = latencies(&items(&runs), &runs, 12).expect("rows with token timestamps");
        let titles: Vec<(&str, usize)> = view.cards.iter().map(|c| (c.title.as_str(), c.colour)).collect();
        assert_eq!(
            titles[..2],
            [("short · candle", 1), ("short · llamacpp", 0)],
            "text tests first, a colour per backend"
        );
        let card = &view.cards[0];
        assert_eq!((card.iterations, card.pooled.len(), card.ttft_ms), (3, 30, Some(20.0)));
        assert!((card.p50 - 10.0).abs() < 1e-6, "{}", card.p50);
        let bins = &card.histogram;
        assert_eq!((bins.overflow, bins.counts[0], bins.counts[bins.counts.len() - 1]), (0, 27, 3));
        assert_eq!(bins.counts.len() + 1, bins.edges.len());
        assert_eq!((bins.edges[0], bins.edges[bins.edges.len() - 1]), (10.0, 100.0));
        assert_eq!(card.positions.len(), 10);
        assert!((card.positions[9].0 - 100.0).abs() < 1e-6, "the stall at its position");
        assert_eq!(view.omitted, 0);
        // A limit of one keeps the first card and counts the rest.
        let total = view.cards.len();
        let view = latencies(&items(&runs), &runs, 1).unwrap();
        assert_eq!((view.cards.len(), view.omitted), (1, total - 1));
    }
}
