//! Comparisons with known outcomes: a clear 10 % slowdown, noise only, unmatched rows, llama-bench's own
//! output beside velollm's, and the `--fail-if-slower` gate.

use velollm_compare::{compare, gate, read_file, read_str, Metric, Run, Status, Verdict};
use velollm_core::GpuLayers;
use velollm_fixtures::{json_array, text_samples_at, token_samples_at, Row};

/// `n` values around `mean` with relative spread `cv`, deterministic (a fixed linear congruential sequence
/// through a sum of uniforms, roughly normal).
fn noisy(mean: f64, cv: f64, n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut uniform = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let z = (0..12).map(|_| uniform()).sum::<f64>() - 6.0;
            mean * (1.0 + cv * z)
        })
        .collect()
}

fn run(rows: &[Row]) -> Run {
    read_str(&json_array(rows)).unwrap()
}

fn tg(rates: Vec<f64>) -> Row {
    Row::tokens(0, 128, 0, token_samples_at(0, 128, &rates))
}

#[test]
fn a_clear_ten_percent_slowdown_is_significant() {
    let base = run(&[tg(noisy(60.0, 0.01, 5, 1))]);
    let new = run(&[tg(noisy(54.0, 0.01, 5, 2))]);
    let c = compare(&base, &new, &[]);
    assert_eq!(c.pairs.len(), 1);
    let m = &c.pairs[0].metrics[0];
    assert_eq!(m.metric, Metric::TokensPerSecond);
    assert_eq!(m.verdict, Verdict::Slower);
    assert!((m.change_percent + 10.0).abs() < 2.0, "{}", m.change_percent);
    let (low, high) = (m.ci95_low_percent.unwrap(), m.ci95_high_percent.unwrap());
    assert!(low < m.change_percent && m.change_percent < high && high < -5.0, "{low} … {high}");
    assert!(m.p_value.unwrap() < 0.001);
    // Slower by more than 5 % with 95 % confidence: the gate fails; by more than 15 %: it does not.
    let failed = gate(std::slice::from_ref(&c), 5.0);
    assert!(failed.failed && failed.reasons[0].contains("tg128"), "{:?}", failed.reasons);
    assert!(!gate(&[c], 15.0).failed);
}

#[test]
fn noise_only_is_not_significant() {
    // Both runs draw from the same distribution (5 % spread): no verdict either way, for many seeds.
    let mut significant = 0;
    for seed in 0..40 {
        let base = run(&[tg(noisy(60.0, 0.05, 5, 100 + seed))]);
        let new = run(&[tg(noisy(60.0, 0.05, 5, 200 + seed))]);
        let c = compare(&base, &new, &[]);
        let m = &c.pairs[0].metrics[0];
        if m.verdict != Verdict::NoChange {
            significant += 1;
        }
        assert!(!gate(&[c], 5.0).failed, "seed {seed}: noise must not fail a 5 % gate");
    }
    // At a 5 % level about 2 of 40 tests of pure noise come out significant; many more would be a broken test.
    assert!(significant <= 6, "{significant} of 40 noise-only comparisons were significant");
    let base = run(&[tg(noisy(60.0, 0.05, 5, 7))]);
    let new = run(&[tg(noisy(60.0, 0.05, 5, 8))]);
    let m = &compare(&base, &new, &[]).pairs[0].metrics[0];
    assert_eq!(m.verdict, Verdict::NoChange, "p = {:?}", m.p_value);
    assert!(m.ci95_low_percent.unwrap() < 0.0 && m.ci95_high_percent.unwrap() > 0.0);
}

#[test]
fn text_tests_compare_every_metric_and_faster_is_faster() {
    let base = run(&[Row::text("short_completion", "Hi", 20, text_samples_at(&noisy(50.0, 0.01, 5, 3), 20, 30.0))]);
    let new = run(&[Row::text("short_completion", "Hi", 20, text_samples_at(&noisy(60.0, 0.01, 5, 4), 20, 30.0))]);
    let pair = &compare(&base, &new, &[]).pairs[0];
    let metrics: Vec<Metric> = pair.metrics.iter().map(|m| m.metric).collect();
    assert_eq!(
        metrics,
        [Metric::TokensPerSecond, Metric::TimeToFirstTokenMs, Metric::PromptTokensPerSecond, Metric::TotalMs]
    );
    assert_eq!(pair.metrics[0].verdict, Verdict::Faster);
    // The total time fell: lower is better, so that is faster too.
    assert_eq!(pair.metrics[3].verdict, Verdict::Faster);
    assert!(pair.metrics[3].change_percent < 0.0);
    // TTFT did not move at all.
    assert_eq!(pair.metrics[1].verdict, Verdict::NoChange);
}

#[test]
fn unmatched_rows_are_listed_with_their_nearest_candidate() {
    let base = run(&[
        tg(noisy(60.0, 0.01, 5, 1)).threads(2),
        tg(noisy(40.0, 0.01, 5, 1)).threads(1),
        Row::tokens(512, 0, 0, token_samples_at(512, 0, &noisy(1000.0, 0.01, 5, 9))),
    ]);
    let new = run(&[
        tg(noisy(60.0, 0.01, 5, 2)).threads(2),
        tg(noisy(40.0, 0.01, 5, 2)).threads(4),
        Row::tokens(0, 64, 0, token_samples_at(0, 64, &noisy(60.0, 0.01, 5, 9))),
    ]);
    let c = compare(&base, &new, &[]);
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(c.pairs[0].parameters["n_threads"], "2");
    let base_only: Vec<&str> = c.only_in_base.iter().map(|u| u.label.as_str()).collect();
    assert_eq!(base_only, ["tg128 · SmolLM2 135M Instruct · llamacpp", "pp512 · SmolLM2 135M Instruct · llamacpp"]);
    assert_eq!(c.only_in_base[0].nearest.as_deref(), Some("row 2 differs in n_threads (1 → 4)"));
    assert_eq!(c.only_in_base[1].nearest, None, "no pp512 in the new run");
    let new_only: Vec<usize> = c.only_in_new.iter().map(|u| u.row).collect();
    assert_eq!(new_only, [2, 3]);
    // `--ignore n_threads` pairs the 1-thread and 4-thread rows and says so.
    let c = compare(&base, &new, &["n_threads".to_string()]);
    assert_eq!(c.pairs.len(), 2);
    assert_eq!(c.pairs[1].ignored_differences, ["n_threads: 1 → 4"]);
}

#[test]
fn models_backends_and_parameters_must_agree() {
    let base = run(&[tg(noisy(60.0, 0.01, 5, 1))]);
    let other_model = run(&[tg(noisy(60.0, 0.01, 5, 1)).model("Qwen", "models/qwen.gguf", Some("ff00"))]);
    assert!(compare(&base, &other_model, &[]).pairs.is_empty());
    assert_eq!(compare(&base, &other_model, &["model".to_string()]).pairs.len(), 1);
    let candle = run(&[tg(noisy(60.0, 0.01, 5, 1)).backend("candle")]);
    assert!(compare(&base, &candle, &[]).pairs.is_empty());
    let c = compare(&base, &candle, &["backend".to_string()]);
    assert_eq!(c.pairs[0].backend, "llamacpp → candle");
    let offload = run(&[tg(noisy(60.0, 0.01, 5, 1)).gpu_layers(GpuLayers::Count(8))]);
    let c = compare(&base, &offload, &[]);
    assert!(c.only_in_base[0].nearest.as_deref().unwrap().contains("n_gpu_layers (all → 8)"));
}

#[test]
fn a_failed_row_in_the_new_run_fails_the_gate() {
    let base = run(&[tg(noisy(60.0, 0.01, 5, 1))]);
    let new = run(&[tg(vec![]).failed("cannot allocate the KV cache")]);
    let c = compare(&base, &new, &[]);
    assert_eq!(c.pairs[0].new_status, Status::Failed);
    assert!(c.pairs[0].metrics.is_empty());
    let g = gate(&[c], 5.0);
    assert!(g.failed);
    assert!(g.reasons[0].contains("failed in") && g.reasons[0].contains("KV cache"), "{:?}", g.reasons);
}

#[test]
fn velollm_beside_llama_bench_on_the_same_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama-bench.json");
    let llama_bench = read_file(&path).unwrap();
    assert_eq!(llama_bench.tools(), "llama-bench");
    assert_eq!(llama_bench.entries.len(), 3);
    assert_eq!(llama_bench.entries[0].parameters["n_gpu_layers"], "all", "llama-bench's 99 is every layer");
    assert_eq!(llama_bench.entries[0].parameters["flash_attn"], "auto");
    assert_eq!(llama_bench.entries[1].build.as_deref(), Some("llama-bench 1d36b367 (CPU)"));
    // velollm's pp512 and tg128 on the same file (by name and parameter count; llama-bench records no hash).
    let velollm = run(&[
        Row::tokens(512, 0, 0, token_samples_at(512, 0, &[1052.0, 1046.0, 1050.0, 1049.0, 1051.0])),
        tg(vec![58.1, 58.3, 57.9, 58.2, 58.0]),
    ]);
    let c = compare(&llama_bench, &velollm, &[]);
    assert_eq!(c.pairs.len(), 2, "{:?}", c.only_in_base);
    assert_eq!(c.base_tool, "llama-bench");
    let pp = &c.pairs[0];
    assert_eq!(pp.test.name, "pp512");
    assert_eq!(pp.metrics[0].verdict, Verdict::NoChange);
    assert!(pp.not_compared.contains(&"n_ctx".to_string()) && pp.not_compared.contains(&"cpu_mask".to_string()));
    assert_eq!(pp.parameters["n_threads"], "2");
    let tg = &c.pairs[1];
    assert_eq!(tg.metrics[0].verdict, Verdict::Slower, "61.0 → 58.1 t/s");
    assert!((tg.metrics[0].change_percent - (58.1 / 61.006 - 1.0) * 100.0).abs() < 0.1);
    // llama-bench's 1-thread tg128 has no velollm counterpart.
    assert_eq!(c.only_in_base.len(), 1);
    assert!(c.only_in_base[0].nearest.as_deref().unwrap().contains("n_threads (1 → 2)"));
}

#[test]
fn schema_one_rows_are_read() {
    let row = r#"{"config":{"name":"short_completion","model":"m.gguf","prompt":"Hi","max_tokens":5,"iterations":2},
        "schema_version":1,"backend":"llamacpp","complete":true,
        "model":{"path":"models/m.gguf","sha256":"aa","parameter_count":10,"name":"M"},
        "parameters":{"engine":{"threads":2,"n_gpu_layers":999,"ctx_size":2048,"batch_size":512,"ubatch_size":512,
            "flash_attn":"auto","use_mmap":true,"type_k":"f16","type_v":"f16"}},
        "samples":[{"metrics":{"tokens_per_second":50.0,"ttft_ms":20.0,"total_ms":100.0}},
                   {"metrics":{"tokens_per_second":52.0,"ttft_ms":21.0,"total_ms":98.0}}]}"#;
    let run = read_str(&format!("[{}]", row)).unwrap();
    let e = &run.entries[0];
    assert_eq!((e.test.kind.as_str(), e.test.n_gen), ("text", 5));
    assert_eq!(e.parameters["n_threads"], "2");
    assert_eq!(e.parameters["n_batch"], "512");
    assert_eq!(e.samples[&Metric::TokensPerSecond], [50.0, 52.0]);
    assert_eq!(e.status, Status::Ok);
}
