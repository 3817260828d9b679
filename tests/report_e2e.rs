//! `velollm report` as a user sees it: the page is rendered by headless Chromium (Debian's `chromium`, which
//! scripts/test.sh installs) and the rendered DOM is checked: the charts exist, with the right number of points,
//! bars and bins, failed rows marked, and nothing fetched from the network.
//!
//! `VELOLLM_REPORT_KEEP=DIR` keeps the input files, the page and a screenshot in DIR.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use velollm_core::GpuLayers;
use velollm_fixtures::{json_array, text_sample, token_samples_at, Row};

/// A deterministic wobble in [-1, 1].
fn wobble(i: usize, seed: usize) -> f64 {
    (((i * 7919 + seed * 104_729) % 1000) as f64 / 500.0) - 1.0
}

/// Rates around `mean` (1.5 % spread), five repetitions.
fn reps(mean: f64, seed: usize) -> Vec<f64> {
    (0..5).map(|i| mean * (1.0 + 0.015 * wobble(i, seed))).collect()
}

/// A text benchmark whose tokens come `gap_ms` apart, drifting up with the context and with an occasional stall.
fn text_row(name: &str, prompt: &str, tokens: usize, gap_ms: f64, ttft_ms: f64, seed: usize) -> Row {
    let samples = (0..5)
        .map(|it| {
            let gaps: Vec<f64> = (0..tokens - 1)
                .map(|i| {
                    let stall = if (i + 3 * it) % 41 == 0 { 2.2 } else { 1.0 };
                    (gap_ms * (1.0 + 0.0015 * i as f64) + 0.9 * wobble(i + it * 31, seed)) * stall
                })
                .collect();
            text_sample(12, ttft_ms * 0.7, ttft_ms * (1.0 + 0.03 * wobble(it, seed)), &gaps)
        })
        .collect();
    Row::text(name, prompt, tokens as u32, samples)
}

const LAYERS: [(GpuLayers, &str); 5] = [
    (GpuLayers::Count(0), "0"),
    (GpuLayers::Count(8), "8"),
    (GpuLayers::Count(16), "16"),
    (GpuLayers::Count(24), "24"),
    (GpuLayers::All, "all"),
];

/// A run: an offload × threads sweep of pp512 and tg128 (pp512 with every layer failed), and two text
/// benchmarks on llama.cpp and candle. `tg_factor` scales the tg128 rates (a slower or faster build).
fn sweep_run(tg_factor: f64, pp_factor: f64, extra: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for threads in [4u32, 8] {
        for (i, (layers, _)) in LAYERS.iter().enumerate() {
            let speed = 1.0 + 0.9 * (i as f64).powf(1.6) / 4f64.powf(1.6) * 3.0;
            let thread_gain: f64 = if threads == 8 { 1.25 } else { 1.0 };
            let tg = 20.0 * speed * thread_gain.min(if i >= 3 { 1.05 } else { 1.25 }) * tg_factor;
            let pp = 280.0 * speed * speed * thread_gain * pp_factor;
            let seed = i * 10 + threads as usize;
            rows.push(
                Row::tokens(0, 128, 0, token_samples_at(0, 128, &reps(tg, seed))).gpu_layers(*layers).threads(threads),
            );
            let pp_row = Row::tokens(512, 0, 0, token_samples_at(512, 0, &reps(pp, seed + 1)))
                .gpu_layers(*layers)
                .threads(threads);
            rows.push(if *layers == GpuLayers::All && threads == 8 {
                pp_row.failed("cannot allocate the compute buffer: out of device memory (needs 1.2 GiB, 0.9 GiB free)")
            } else {
                pp_row
            });
        }
    }
    for (backend, slower) in [("llamacpp", 1.0), ("candle", 1.45)] {
        rows.push(text_row("short_completion", "Say hello.", 50, 18.0 * slower, 42.0 * slower, 1).backend(backend));
        rows.push(text_row("code_generation", "def fib(n):", 120, 19.0 * slower, 55.0 * slower, 2).backend(backend));
    }
    if extra {
        rows.push(Row::tokens(0, 128, 0, token_samples_at(0, 128, &reps(50.0, 99))).threads(2));
    }
    rows
}

fn write(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, json_array(rows)).unwrap();
    path
}

fn chromium() -> Command {
    let mut cmd = Command::new("chromium");
    let profile = std::env::temp_dir().join(format!("velollm-chromium-{}", std::process::id()));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The DOM after Chromium parsed and laid out the page.
fn rendered_dom(page: &Path) -> String {
    let out = chromium()
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("headless Chromium runs (Debian package chromium; scripts/test.sh installs it)");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// Each rendered `<svg …>…</svg>` whose opening tag contains every one of `attributes`.
fn charts<'a>(dom: &'a str, attributes: &[&str]) -> Vec<&'a str> {
    dom.split("<svg ")
        .skip(1)
        .map(|rest| &rest[..rest.find("</svg>").unwrap_or(rest.len())])
        .filter(|svg| {
            let open = &svg[..svg.find('>').unwrap_or(0)];
            attributes.iter().all(|a| open.contains(a))
        })
        .collect()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn the_report_renders_in_chromium_with_every_chart_and_point() {
    let keep = std::env::var_os("VELOLLM_REPORT_KEEP").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| scratch("report"));
    std::fs::create_dir_all(&dir).unwrap();
    let base = write(&dir, "base.json", &sweep_run(1.0, 1.0, false));
    let new = write(&dir, "new.json", &sweep_run(0.9, 1.04, true));
    let page = dir.join("report.html");
    let out = run(&[
        "report",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
        "--fail-if-slower",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Report written to"), "{}", stdout(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch, no script.
    for forbidden in ["<script", "http://", "https://", "<link", "@import", "url("] {
        assert!(!html.contains(forbidden), "the page must not load anything ({forbidden})");
    }

    let dom = rendered_dom(&page);
    // The layer-offload curve of tg128: 5 offload values × 2 thread counts × 2 files; a colour per thread count,
    // a line style per file.
    let curve = charts(&dom, &["data-chart=\"sweep\"", "data-param=\"n_gpu_layers\"", "data-test=\"tg128\""]);
    assert_eq!(curve.len(), 1);
    assert_eq!(count(curve[0], "class=\"point\""), 2 * 10 + 1, "and the new file's one 2-thread row");
    assert_eq!(count(curve[0], "class=\"series-line\""), 4);
    assert_eq!(count(curve[0], "stroke-dasharray=\"7 4\""), 2, "the new file's lines are dashed");
    assert_eq!(count(curve[0], "class=\"failed-point\""), 0);
    // pp512: the failed rows (every layer, 8 threads, in both files) are crosses on the axis, not points.
    let pp = charts(&dom, &["data-chart=\"sweep\"", "data-param=\"n_gpu_layers\"", "data-test=\"pp512\""]);
    assert_eq!(count(pp[0], "class=\"point\""), 2 * 9);
    assert_eq!(count(pp[0], "class=\"failed-point\" data-x=\"all\""), 2);
    assert!(pp[0].contains("out of device memory"), "the failed row's error is its tooltip");
    // The thread sweeps: a line per offload value and file.
    let threads = charts(&dom, &["data-chart=\"sweep\"", "data-param=\"n_threads\"", "data-test=\"tg128\""]);
    assert_eq!(count(threads[0], "class=\"point\""), 21);
    assert_eq!(count(threads[0], "class=\"series-line\""), 10);
    assert_eq!(charts(&dom, &["data-chart=\"sweep\""]).len(), 4, "ngl and threads, for tg128 and pp512");
    // Backends side by side: two text benchmarks × two backends, for tok/s, TTFT and prompt tok/s.
    let backends = charts(&dom, &["data-chart=\"backends\""]);
    assert_eq!(backends.len(), 3);
    assert!(backends.iter().all(|b| count(b, "class=\"bar\"") == 4), "{}", backends[0]);
    // Per-token latency: a histogram per text row with every gap counted (49 and 119 gaps × 5 iterations).
    let latency = charts(&dom, &["data-chart=\"latency\""]);
    assert_eq!(latency.len(), 12, "capped at 12 cards");
    let gaps: usize = latency[0]
        .split("data-count=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse::<usize>().unwrap())
        .sum();
    assert_eq!(gaps, 49 * 5);
    assert!(latency[0].contains("data-marker=\"p99\""));
    assert_eq!(charts(&dom, &["data-chart=\"token-positions\""]).len(), 12);
    // The comparison: every matched metric, the 10 % slower tg128 rows in red, the extra row listed.
    let compare = charts(&dom, &["data-chart=\"compare\""]);
    assert_eq!(compare.len(), 1);
    // 19 token rows with a rate, the pp512 row that failed on both sides (a cross), 4 text rows × 4 metrics.
    assert_eq!(count(compare[0], "class=\"change\""), 19 + 1 + 16);
    assert_eq!(count(compare[0], "data-verdict=\"failed\""), 1);
    assert_eq!(count(compare[0], "data-verdict=\"slower\""), 10, "every tg128 row");
    assert!(count(compare[0], "data-verdict=\"faster\"") >= 5, "pp512 rose 4 %");
    assert_eq!(count(compare[0], "class=\"threshold\""), 2);
    assert!(dom.contains("data-unmatched=\"1\""), "the new run's extra row is listed");
    // Every row is in the tables, failed ones marked with their error.
    assert_eq!(count(&dom, "<tr class=\"failed\">"), 2);
    assert_eq!(count(&dom, "<tr class="), 24 + 25);

    if keep.is_some() {
        let shot = dir.join("report.png");
        let status = chromium()
            .args([format!("--screenshot={}", shot.display()), "--window-size=1400,2000".into()])
            .arg(format!("file://{}", page.display()))
            .status()
            .unwrap();
        assert!(status.success());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_single_file_report_and_bad_input() {
    let dir = scratch("report-one");
    let results = write(&dir, "r.json", &[text_row("short_completion", "Hi", 20, 20.0, 40.0, 3)]);
    let page = dir.join("one.html");
    let out = run(&["report", results.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("data-chart=\"compare\"") && !html.contains("data-chart=\"sweep\""),
        "nothing to compare or sweep"
    );
    assert_eq!(count(&html, "data-chart=\"latency\""), 1);
    assert_clean_failure(
        &run(&["report", "/nonexistent.json", "-o", page.to_str().unwrap()]),
        "cannot read /nonexistent.json",
    );
    assert_clean_failure(
        &run(&["report", results.to_str().unwrap(), "-o", "/nonexistent-dir/r.html"]),
        "directory /nonexistent-dir does not exist",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
