//! The guide's standard suite, exactly as `docs/guide-benchmarking.md` defines it.

use velollm_core::BenchmarkConfig;

/// (name, prompt, max tokens, iterations) of the three standard benchmarks.
const STANDARD: [(&str, &str, u32, u32); 3] = [
    ("short_completion", "Write a hello world program in Python", 50, 5),
    ("medium_completion", "Explain how neural networks learn through backpropagation in detail", 150, 3),
    ("code_generation", "Write a Rust function to compute the Fibonacci sequence using dynamic programming", 200, 3),
];

/// The three standard benchmarks for `model`.
pub fn standard_suite(model: &str) -> Vec<BenchmarkConfig> {
    STANDARD
        .iter()
        .map(|&(name, prompt, max_tokens, iterations)| BenchmarkConfig {
            name: name.to_string(),
            model: model.to_string(),
            prompt: prompt.to_string(),
            max_tokens,
            iterations,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_matches_the_guide() {
        let suite = standard_suite("m");
        let summary: Vec<(&str, u32, u32)> =
            suite.iter().map(|c| (c.name.as_str(), c.max_tokens, c.iterations)).collect();
        assert_eq!(summary, [("short_completion", 50, 5), ("medium_completion", 150, 3), ("code_generation", 200, 3)]);
        assert_eq!(suite[0].prompt, "Write a hello world program in Python");
        assert!(suite.iter().all(|c| c.model == "m"));
    }
}
