//! The guide's "Custom Benchmarks" API on the real default model, in-process.

use velollm_benchmarks::{BenchmarkConfig, BenchmarkRunner, ContextParams, LoadParams, RunOptions};

fn default_model_path() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "run scripts/fetch-models.sh first (scripts/test.sh does)");
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn guide_example_runs_on_llamacpp() -> anyhow::Result<()> {
    let config = BenchmarkConfig {
        name: "custom_test".to_string(),
        model: default_model_path(),
        prompt: "Your custom prompt here".to_string(),
        max_tokens: 12,
        iterations: 3,
    };

    let runner = BenchmarkRunner::new("llamacpp");
    let result = runner.run(&config).await?;

    println!("Tokens/s: {}", result.tokens_per_second);
    let rate = result.tokens_per_second.value().expect("a decode rate was measured");
    assert!(rate > 0.0);
    assert_eq!(result.samples.len(), 3);
    assert_eq!(result.eval_count, 12);
    assert_eq!(result.config, config);
    // The headline is the mean of the per-iteration decode rates, each (tokens − 1) / (last − first token).
    let rates: Vec<f64> = result
        .samples
        .iter()
        .map(|s| {
            let times = &s.raw.token_times_ns;
            assert_eq!(times.len(), 12, "every iteration generates exactly max_tokens");
            11.0 / ((times[11] - times[0]) as f64 / 1e9)
        })
        .collect();
    let mean = rates.iter().sum::<f64>() / 3.0;
    assert!((rate - mean).abs() < 1e-9 * mean, "headline {rate} is not the mean of {rates:?}");
    assert_eq!(result.statistics.tokens_per_second.unwrap().n, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_and_warmup_are_recorded() -> anyhow::Result<()> {
    let options = RunOptions { warmup_iterations: 0, ..RunOptions::default() };
    let config = BenchmarkConfig {
        name: "one_thread".into(),
        model: default_model_path(),
        prompt: "Hello".into(),
        max_tokens: 3,
        iterations: 1,
    };
    let result = BenchmarkRunner::new("llamacpp")
        .with_options(options)
        .with_params(LoadParams::default(), ContextParams::with_threads(1))
        .run(&config)
        .await?;
    assert_eq!(result.parameters.requested.context.n_threads, 1);
    assert_eq!(result.parameters.effective.as_ref().unwrap().context.n_threads, Some(1));
    assert_eq!(result.parameters.warmup_iterations, 0);
    Ok(())
}

/// A sweep loads each model once per set of load parameters and creates a context once per set of context
/// parameters: counted as they happen, on the real engine.
#[test]
fn a_sweep_loads_once_per_load_group_and_creates_one_context_per_context_group() {
    use velollm_benchmarks::{prepare, run_plan, GpuLayers, NoObserver, Plan, SweepSpec, TestCase, TokenTest};
    let tests = vec![
        TestCase::Tokens { test: TokenTest::single(16, 0, 0), repetitions: 1 },
        TestCase::Tokens { test: TokenTest::single(0, 4, 0), repetitions: 1 },
    ];
    let mut spec = SweepSpec::single(&default_model_path(), "llamacpp", 1, tests);
    spec.n_gpu_layers = vec![GpuLayers::Count(0), GpuLayers::All];
    spec.n_threads = vec![1, 2];
    let plan = Plan::new(spec).unwrap();
    assert_eq!((plan.load_count(), plan.context_count(), plan.instances.len()), (2, 4, 8));
    let options = RunOptions { warmup_iterations: 0, telemetry: false, ..RunOptions::default() };
    let prepared = prepare(&plan, &options, None).unwrap();
    let outcome = run_plan(&plan, &prepared, &options, &mut NoObserver).unwrap();
    assert_eq!((outcome.loads, outcome.contexts), (2, 4), "what the engine actually did");
    assert_eq!(outcome.rows.len(), 8);
    assert!(outcome.rows.iter().all(|r| r.status == velollm_benchmarks::RowStatus::Ok));
}
