//! How `velollm history` shows what it found: plain aligned tables.

use velollm_history::{BestRow, RunSummary, StoredRow, TrendMetric, TrendPoint};

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn short_time(time: &str) -> String {
    // 2026-12-06T10:02:03.123Z → 2026-12-06 10:02:03
    time.replace('T', " ").chars().take(19).collect()
}

fn number(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

pub fn runs_table(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "no runs in the history match\n".into();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                short_time(&r.started_at),
                r.status.clone(),
                r.machine.clone().unwrap_or_else(|| "-".into()),
                r.rows.to_string(),
                r.models.join(", "),
                r.tests.join(", "),
                r.software_fingerprint.clone().or_else(|| r.source.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["run", "started (UTC)", "status", "machine", "rows", "models", "tests", "build / source"], &rows)
}

pub fn run_detail(run: &RunSummary, rows: &[StoredRow]) -> String {
    let mut out = format!("run {}  {}\n", run.id, run.status);
    out.push_str(&format!("command:  {}\n", run.command_line));
    out.push_str(&format!(
        "started:  {}   ended: {}\n",
        short_time(&run.started_at),
        run.ended_at.as_deref().map(short_time).unwrap_or_else(|| "never (still running, or killed)".into())
    ));
    out.push_str(&format!(
        "machine:  {} (hardware {})\n",
        run.machine.as_deref().unwrap_or("-"),
        run.hardware_fingerprint.as_deref().unwrap_or("-")
    ));
    if let Some(software) = &run.software_fingerprint {
        out.push_str(&format!(
            "build:    {software} (velollm {}, {})\n",
            run.velollm_version.as_deref().unwrap_or("?"),
            run.llama_cpp_build.as_deref().unwrap_or("no llama.cpp")
        ));
    }
    if let Some(source) = &run.source {
        out.push_str(&format!("imported: {source}\n"));
    }
    if let Some(context) = &run.context {
        out.push_str(&format!("context:  {context}\n"));
    }
    out.push('\n');
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let params: Vec<String> = r
                .parameters
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "n_prompt" | "n_gen" | "n_depth"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![
                r.seq.to_string(),
                r.model.clone(),
                r.test.clone(),
                r.backend.clone(),
                r.status.clone(),
                number(r.tokens_per_second),
                number(r.time_to_first_token_ms),
                params.join(" "),
            ]
        })
        .collect();
    out.push_str(&table(&["row", "model", "test", "backend", "status", "tok/s", "TTFT ms", "parameters"], &table_rows));
    out
}

pub fn trend_table(metric: TrendMetric, points: &[TrendPoint]) -> String {
    if points.is_empty() {
        return format!("no rows in the history have {} for this selection\n", metric.name());
    }
    let mut out = String::new();
    let mut series: Vec<&str> = points.iter().map(|p| p.series.as_str()).collect();
    series.sort();
    series.dedup();
    for name in series {
        out.push_str(&format!("{name}\n"));
        let rows: Vec<Vec<String>> = points
            .iter()
            .filter(|p| p.series == name)
            .map(|p| {
                vec![
                    p.run_id.to_string(),
                    short_time(&p.started_at),
                    format!("{:.2}", p.value),
                    format!("{}{}", if p.build_changed { "* " } else { "  " }, p.build),
                ]
            })
            .collect();
        for line in table(&["run", "started (UTC)", metric.name(), "build (* changed)"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push('\n');
    }
    out
}

pub fn best_table(best: &[BestRow]) -> String {
    if best.is_empty() {
        return "no ok rows in the history match\n".into();
    }
    let rows: Vec<Vec<String>> = best
        .iter()
        .map(|b| {
            let params: Vec<String> = b
                .parameters
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "n_prompt" | "n_gen" | "n_depth"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![
                b.machine.clone().unwrap_or_else(|| "-".into()),
                b.model.clone(),
                b.test.clone(),
                b.backend.clone(),
                format!("{:.2}", b.tokens_per_second),
                b.peak_memory_bytes
                    .map(|m| format!("{:.2}", m as f64 / (1u64 << 30) as f64))
                    .unwrap_or_else(|| "-".into()),
                format!("{}#{} of {}", b.run_id, b.seq, b.candidates),
                params.join(" "),
            ]
        })
        .collect();
    table(&["machine", "model", "test", "backend", "tok/s", "peak GiB", "run#row of", "parameters"], &rows)
}
