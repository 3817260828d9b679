//! The guide's console view of finished rows: the summary block, the side-by-side backend table, and the
//! llama-bench-style table of a sweep ([`crate::markdown`]). Pure functions of the rows; the live progress
//! display is the CLI's.

use velollm_core::{BenchmarkResult, ModelIdentity, RowStatus, Summary, TestKind};

use crate::figures::mean_pm;

pub const RULE: &str = "═══════════════════════════════════════════════════════";

/// The run header: backend, model, and the parameters that shape the numbers.
pub fn header(backend: &str, model: &str, settings: &str) -> String {
    format!("🚀 VeloLLM Benchmark Suite\n\nBackend: {backend}\nModel: {model}\nSettings: {settings}\n")
}

/// A model in a few words: architecture, size, quantization, and whether its weights are synthetic.
pub fn describe_model(model: &ModelIdentity) -> String {
    let mut parts = Vec::new();
    if let Some(arch) = &model.architecture {
        parts.push(arch.clone());
    }
    if let Some(params) = model.parameter_count {
        parts.push(format!("{:.1}M params", params as f64 / 1e6));
    }
    if let Some(q) = &model.quantization {
        parts.push(q.clone());
    }
    if model.bytes > 0 {
        parts.push(format!("{:.1} MB", model.bytes as f64 / 1e6));
    }
    if model.synthetic {
        parts.push("SYNTHETIC weights".into());
    }
    if let Some(digest) = &model.digest {
        parts.push(format!("Ollama digest {}", short_digest(digest)));
    }
    parts.join(", ")
}

/// The first 12 hex digits, as `ollama list` shows digests.
fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// How the guide names a backend in prose.
pub fn display_name(backend: &str) -> &str {
    match backend {
        "ollama" => "Ollama",
        other => other,
    }
}

fn status_note(row: &BenchmarkResult) -> String {
    match row.status {
        RowStatus::Ok => String::new(),
        RowStatus::Incomplete => format!(
            " (incomplete: {} of {} iterations; {})",
            row.iterations_completed,
            row.repetitions.requested,
            row.error.as_deref().unwrap_or("stopped")
        ),
        RowStatus::Failed => " (failed)".to_string(),
    }
}

/// The guide's summary block for the text rows, and a line per failed row.
pub fn summary(results: &[BenchmarkResult], saved_to: &[String]) -> String {
    let mut out = format!("\n{RULE}\n\n📊 Benchmark Summary\n");
    let several_backends = results.iter().any(|r| r.backend != results[0].backend);
    let several_models = results.iter().any(|r| r.config.model != results[0].config.model);
    for r in results.iter().filter(|r| r.test.kind == TestKind::Text) {
        let s = &r.statistics;
        let mut label = r.config.name.clone();
        if several_backends {
            label.push_str(&format!(" [{}]", r.backend));
        }
        if several_models {
            label.push_str(&format!(" [{}]", r.config.model));
        }
        out.push_str(&format!("\n{label}:{}\n", status_note(r)));
        if r.status == RowStatus::Failed {
            out.push_str(&format!("  Error: {}\n", r.error.as_deref().unwrap_or("unknown")));
            continue;
        }
        out.push_str(&format!("  Tokens/s: {}", mean_pm(s.tokens_per_second.as_ref(), "")));
        if let Some(Summary { ci95_low: Some(lo), ci95_high: Some(hi), median, .. }) = s.tokens_per_second {
            out.push_str(&format!(" (median {median:.1}, 95% CI {lo:.1}–{hi:.1})"));
        }
        out.push('\n');
        out.push_str(&format!("  TTFT: {}\n", mean_pm(s.time_to_first_token_ms.as_ref(), "ms")));
        if let Some(rate) = r.prompt_tokens_per_second {
            out.push_str(&format!("  Prompt: {} tokens at {rate:.1} tok/s\n", r.prompt_eval_count));
        }
        if let Some(itl) = s.inter_token_latency_ms {
            out.push_str(&format!(
                "  Inter-token latency: p50 {:.1}ms, p90 {:.1}ms, p99 {:.1}ms, max {:.1}ms\n",
                itl.p50, itl.p90, itl.p99, itl.max
            ));
        }
        if let Some(http) = r.http_overhead {
            out.push_str(&format!(
                "  HTTP overhead: {:.1}ms per request (client {:.1}ms vs server {:.1}ms{}); client-side decode {}\n",
                http.overhead_ms_per_request,
                http.client_total_ms,
                http.server_total_ms,
                http.overhead_percent.map(|p| format!(", {p:+.1} %")).unwrap_or_default(),
                http.client_tokens_per_second.map_or("n/a".into(), |t| format!("{t:.1} tok/s")),
            ));
        }
        out.push_str(&format!("  Total tokens: {}\n", r.total_tokens));
        match r.total_time_ms.value() {
            Some(ms) => out.push_str(&format!("  Total time: {:.1}s\n", ms / 1000.0)),
            None => out.push_str("  Total time: n/a\n"),
        }
    }
    // One overall line per backend: averaging llama.cpp's rows with candle's or Ollama's would describe no engine.
    let text_rows: Vec<&BenchmarkResult> =
        results.iter().filter(|r| r.test.kind == TestKind::Text && r.status != RowStatus::Failed).collect();
    let mut backends: Vec<&str> = Vec::new();
    for r in &text_rows {
        if !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
    }
    for backend in &backends {
        let rows = text_rows.iter().filter(|r| r.backend == *backend);
        let rates: Vec<f64> = rows.clone().filter_map(|r| r.tokens_per_second.value()).collect();
        let ttfts: Vec<f64> = rows.clone().filter_map(|r| r.time_to_first_token_ms.value()).collect();
        match backends.len() {
            1 => out.push_str("\nOverall Average:\n"),
            _ => out.push_str(&format!("\nOverall Average [{backend}]:\n")),
        }
        out.push_str(&format!("  Tokens/s: {}\n", mean_of(&rates, "")));
        out.push_str(&format!("  TTFT: {}\n", mean_of(&ttfts, "ms")));
        if let Some(pct) = pooled_overhead_percent(rows.copied()) {
            out.push_str(&format!("  Harness overhead vs the engine's own decode timer: {pct:+.2} %\n"));
        }
    }
    if saved_to.is_empty() {
        out.push_str("\n💡 Tip: Use -o <file> to save results to JSON\n");
    } else {
        for path in saved_to {
            out.push_str(&format!("\n💾 Results saved to {path}\n"));
        }
    }
    out
}

/// Pooled over rows: velollm's decode time against the engine's own counters, in per cent.
pub fn pooled_overhead_percent<'a>(rows: impl Iterator<Item = &'a BenchmarkResult>) -> Option<f64> {
    let (ours, engine) = rows
        .filter_map(|r| r.harness_overhead)
        .fold((0.0, 0.0), |(a, b), o| (a + o.eval_ms_velollm, b + o.eval_ms_engine));
    (engine > 0.0).then(|| (ours / engine - 1.0) * 100.0)
}

/// The side-by-side table of a comparison run (`-b llamacpp,ollama`): per benchmark, each backend's decode
/// rate, TTFT and prompt rate. `None` unless the text rows come from more than one backend.
pub fn comparison(results: &[BenchmarkResult]) -> Option<String> {
    let results: Vec<&BenchmarkResult> = results.iter().filter(|r| r.test.kind == TestKind::Text).collect();
    let mut backends: Vec<&str> = Vec::new();
    let mut benchmarks: Vec<&str> = Vec::new();
    for r in &results {
        if !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
        if !benchmarks.contains(&r.config.name.as_str()) {
            benchmarks.push(&r.config.name);
        }
    }
    if backends.len() < 2 {
        return None;
    }
    let number = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "\n⚖ Backend comparison\n\n{:<20} {:<10} {:>10} {:>10} {:>14}\n",
        "benchmark", "backend", "tok/s", "TTFT ms", "prompt tok/s"
    );
    for name in &benchmarks {
        for backend in &backends {
            let Some(r) = results.iter().find(|r| r.config.name == *name && r.backend == *backend) else {
                out.push_str(&format!("{name:<20} {backend:<10} {:>10} {:>10} {:>14}\n", "-", "-", "-"));
                continue;
            };
            out.push_str(&format!(
                "{name:<20} {backend:<10} {:>10} {:>10} {:>14}\n",
                number(r.tokens_per_second.value()),
                number(r.time_to_first_token_ms.value()),
                number(r.prompt_tokens_per_second),
            ));
        }
    }
    Some(out)
}

fn mean_of(values: &[f64], unit: &str) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    format!("{:.1}{unit}", values.iter().sum::<f64>() / values.len() as f64)
}

/// llama-batched-bench's table of the batched rows (`-npl`), one line per row with its columns as means over
/// the repetitions, then each row's time to first token (mean over every sequence and repetition) and
/// inter-token latency (p50 and p99 of every sequence's gaps); `None` when no row is batched. A column a row
/// could not measure shows `n/a`.
pub fn batched_table(rows: &[BenchmarkResult]) -> Option<String> {
    let batched: Vec<(&BenchmarkResult, &velollm_core::BatchedFigures)> =
        rows.iter().filter_map(|r| r.batched.as_ref().map(|b| (r, b))).collect();
    if batched.is_empty() {
        return None;
    }
    let seconds = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let speed = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    let mut out = format!(
        "|{:>6} | {:>6} | {:>4} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} | {:>17} |\n",
        "PP",
        "TG",
        "B",
        "N_KV",
        "T_PP s",
        "S_PP t/s",
        "T_TG s",
        "S_TG t/s",
        "T s",
        "S t/s",
        "TTFT ms",
        "ITL ms p50 / p99"
    );
    out.push_str(&format!(
        "|{}-|-{}-|-{}-|-{}-|-{}-|-{}-|-{}-|-{}-|-{}-|-{}-|-{}-|-{}-|\n",
        "-".repeat(6),
        "-".repeat(6),
        "-".repeat(4),
        "-".repeat(6),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(8),
        "-".repeat(9),
        "-".repeat(17)
    ));
    let mut shared = false;
    for (row, b) in batched {
        shared |= b.is_pp_shared;
        let itl = b.inter_token_latency_ms.map_or("n/a".to_string(), |p| format!("{:.1} / {:.1}", p.p50, p.p99));
        out.push_str(&format!(
            "|{:>6} | {:>6} | {:>4} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} | {:>17} |{}\n",
            b.pp,
            b.tg,
            b.pl,
            b.n_kv,
            seconds(b.t_pp),
            speed(b.speed_pp),
            seconds(b.t_tg),
            speed(b.speed_tg),
            seconds(b.t),
            speed(b.speed),
            ms(b.ttft_mean_ms),
            itl,
            status_note(row),
        ));
    }
    if shared {
        out.push_str("(shared prompt: N_KV = PP + B·TG, S_PP = PP / T_PP)\n");
    }
    Some(out)
}

/// The llama-bench-style table of `rows` (only the parameters that vary), as the markdown exporter writes it.
pub fn sweep_table(rows: &[BenchmarkResult]) -> String {
    crate::markdown::table(rows)
}

#[cfg(test)]
mod tests {
    use velollm_core::{Aggregates, BatchedSample, RawSample};

    /// A batched repetition of B = 2, PP = 4, TG = 2: prompt phase 40 ms, steps ending at 60 and 100 ms.
    fn batched_row() -> velollm_core::BenchmarkResult {
        let ms = |v: u64| v * 1_000_000;
        let mut sample: RawSample = velollm_fixtures::token_sample(8, 2, 40.0, 30.0);
        sample.prompt_eval_ns = ms(40);
        sample.token_times_ns = vec![ms(60), ms(100)];
        sample.test_ns = Some(ms(100));
        sample.batched = Some(BatchedSample {
            n_sequences: 2,
            shared_prompt: false,
            n_prompt: 4,
            n_gen: 2,
            sequence_token_times_ns: vec![vec![ms(30), ms(60), ms(100)], vec![ms(40), ms(60), ms(100)]],
        });
        let mut row = velollm_fixtures::Row::tokens(4, 2, 0, vec![]).build();
        row.batched = Aggregates::from_samples(vec![sample], 2).batched;
        row
    }

    #[test]
    fn batched_rows_get_batched_bench_s_table_and_flat_columns() {
        let row = batched_row();
        let table = super::batched_table(std::slice::from_ref(&row)).unwrap();
        assert!(table.starts_with("|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |"), "{table}");
        // N_KV 12, T_PP 0.040 s, S_PP 200, T_TG 0.060 s, S_TG 66.67, T 0.100 s, S 120, TTFT mean 35 ms,
        // gaps 30, 40 / 20, 40 ms.
        assert!(
            table.contains(
                "|     4 |      2 |    2 |     12 |    0.040 |   200.00 |    0.060 |    66.67 |    0.100 |   120.00 |      35.0 |       35.0 / 40.0 |"
            ),
            "{table}"
        );
        assert!(super::batched_table(&[velollm_fixtures::Row::tokens(4, 2, 0, vec![]).build()]).is_none());
        let names: Vec<&str> = crate::flat::COLUMNS.iter().map(|c| c.name).collect();
        let cells = crate::flat::cells(&row);
        let cell = |name: &str| format!("{:?}", cells[names.iter().position(|n| *n == name).unwrap()]);
        assert!(cell("batched_n_kv").contains("12"), "{}", cell("batched_n_kv"));
        assert!(cell("batched_speed").contains("120"), "{}", cell("batched_speed"));
    }
}
