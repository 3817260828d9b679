//! How load rows read on the console: one line per finished profile, and the table at the end.

use velollm_core::{BenchmarkResult, LatencyDistribution, LoadRecord};

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn percentiles(name: &str, d: Option<&LatencyDistribution>) -> Option<String> {
    d.map(|d| format!("{name} p50 {} p90 {} p99 {} ms", ms(d.p50), ms(d.p90), ms(d.p99)))
}

fn rate(value: Option<f64>) -> String {
    value.map_or("n/a".to_string(), |v| format!("{v:.2}"))
}

/// The line said as a profile finishes.
pub fn line(row: &BenchmarkResult, load: &LoadRecord) -> String {
    let mut parts = vec![
        format!("{}/{} ok", load.completed, load.requests_sent),
        format!("{} req/s", rate(load.request_throughput)),
        format!("{} output tok/s", rate(load.output_tokens_per_second)),
    ];
    parts.extend(percentiles("TTFT", load.ttft_ms.as_ref()));
    parts.extend(percentiles("TPOT", load.tpot_ms.as_ref()));
    parts.extend(percentiles("E2E", load.e2e_ms.as_ref()));
    if let (Some(goodput), Some(attained)) = (load.goodput, load.slo_attainment) {
        parts.push(format!("goodput {goodput:.2} req/s ({:.0} % within the SLO)", attained * 100.0));
    }
    let mut out = format!("  {}: {}\n", row.config.name, parts.join(" · "));
    for (why, n) in &load.failures {
        out.push_str(&format!("    ✗ {n} failed: {why}\n"));
    }
    out
}

/// The table of every load row at the end of the run.
pub fn table(rows: &[&BenchmarkResult]) -> String {
    let header = [
        "test",
        "backend",
        "ok/sent",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "ITL p50",
        "E2E p50",
        "E2E p99",
        "goodput",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let Some(load) = &row.load else { continue };
        let p =
            |d: Option<&LatencyDistribution>, f: fn(&LatencyDistribution) -> f64| d.map_or("n/a".into(), |d| ms(f(d)));
        lines.push(vec![
            row.config.name.clone(),
            row.backend.clone(),
            format!("{}/{}", load.completed, load.requests_sent),
            rate(load.request_throughput),
            rate(load.output_tokens_per_second),
            p(load.ttft_ms.as_ref(), |d| d.p50),
            p(load.ttft_ms.as_ref(), |d| d.p99),
            p(load.tpot_ms.as_ref(), |d| d.p50),
            p(load.tpot_ms.as_ref(), |d| d.p99),
            p(load.itl_ms.as_ref(), |d| d.p50),
            p(load.e2e_ms.as_ref(), |d| d.p50),
            p(load.e2e_ms.as_ref(), |d| d.p99),
            load.goodput.map_or("–".into(), |g| format!("{g:.2}")),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::from("\nLoad (latencies in ms; req/s, tok/s and goodput over each run's duration)\n");
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| if c < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        }
    }
    out
}
