//! The benchmarking guide's "Custom Benchmarks" example, with the API unchanged.
//!
//! Run it with `cargo run --release -p velollm-benchmarks --example custom_benchmark` after
//! `scripts/fetch-models.sh smollm2-135m`. The guide's `"ollama"` and `"llama3.2:3b"` become the
//! in-process `"llamacpp"` backend and the project's default model, which this machine has.
use velollm_benchmarks::{BenchmarkConfig, BenchmarkRunner};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = BenchmarkConfig {
        name: "custom_test".to_string(),
        model: "smollm2-135m".to_string(),
        prompt: "Your custom prompt here".to_string(),
        max_tokens: 100,
        iterations: 5,
    };

    let runner = BenchmarkRunner::new("llamacpp");
    let result = runner.run(&config).await?;

    println!("Tokens/s: {}", result.tokens_per_second);
    Ok(())
}
