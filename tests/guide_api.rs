//! The guide's "Custom Benchmarks" API on the real default model, in-process.

use velollm_benchmarks::{BenchmarkConfig, BenchmarkRunner, RunOptions};

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
    // The mean is the mean of the per-iteration rates, and lies within their range.
    let stats = result.statistics.tokens_per_second.unwrap();
    assert!(stats.min <= rate && rate <= stats.max);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_and_warmup_are_recorded() -> anyhow::Result<()> {
    let mut options = RunOptions { warmup_iterations: 0, ..RunOptions::default() };
    options.engine.threads = 1;
    let config = BenchmarkConfig {
        name: "one_thread".into(),
        model: default_model_path(),
        prompt: "Hello".into(),
        max_tokens: 3,
        iterations: 1,
    };
    let result = BenchmarkRunner::new("llamacpp").with_options(options).run(&config).await?;
    assert_eq!(result.parameters.engine.as_ref().unwrap().threads, 1);
    assert_eq!(result.parameters.warmup_iterations, 0);
    Ok(())
}
