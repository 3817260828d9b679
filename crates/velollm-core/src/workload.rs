//! What a row measures: a text prompt (the benchmarking guide's suite) or a llama-bench-style token test
//! (`pp512`, `tg128`, `pp512+tg128`, each optionally `@ d4096`).

use serde::{Deserialize, Serialize};

use crate::BenchmarkConfig;

/// A llama-bench test: `n_prompt` random tokens evaluated as a prompt, then `n_gen` tokens decoded one at a
/// time, after `n_depth` tokens were put in the KV cache outside the timed region.
///
/// With `parallel` it is llama-batched-bench's test instead: `n_sequences` sequences of `n_prompt` tokens
/// (or one prompt shared by all), then `n_gen` steps each decoding one token of every sequence in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenTest {
    pub n_prompt: u32,
    pub n_gen: u32,
    pub n_depth: u32,
    /// Several sequences decoded together (`-npl`); absent for llama-bench's single-sequence tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Parallel>,
}

/// llama-batched-bench's shape: how many sequences run together and whether they share one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Parallel {
    /// Sequences decoded together (batched-bench's `B`, its `-npl` value).
    pub n_sequences: u32,
    /// One prompt evaluated once and copied to every sequence (batched-bench's `-pps`).
    pub shared_prompt: bool,
}

/// The most sequences llama.cpp decodes together (its `LLAMA_MAX_SEQ`).
pub const MAX_PARALLEL_SEQUENCES: u32 = 256;

impl TokenTest {
    pub fn kind(&self) -> TestKind {
        match (self.n_prompt > 0, self.n_gen > 0) {
            (true, true) => TestKind::Pg,
            (true, false) => TestKind::Pp,
            _ => TestKind::Tg,
        }
    }

    /// A llama-bench test of `n_prompt` prompt and `n_gen` generated tokens after `n_depth` cached ones.
    pub fn single(n_prompt: u32, n_gen: u32, n_depth: u32) -> TokenTest {
        TokenTest { n_prompt, n_gen, n_depth, parallel: None }
    }

    /// llama-bench's name: `pp512`, `tg128`, `pp512+tg128`, with ` @ d4096` when the cache is pre-filled.
    /// A batched test is named `pp128+tg32 x4` (B = 4), `pp128+tg32 x4 shared` with one shared prompt.
    pub fn name(&self) -> String {
        if let Some(parallel) = self.parallel {
            let shared = if parallel.shared_prompt { " shared" } else { "" };
            return format!("pp{}+tg{} x{}{shared}", self.n_prompt, self.n_gen, parallel.n_sequences);
        }
        let base = match self.kind() {
            TestKind::Pp => format!("pp{}", self.n_prompt),
            TestKind::Tg => format!("tg{}", self.n_gen),
            TestKind::Pg | TestKind::Text => format!("pp{}+tg{}", self.n_prompt, self.n_gen),
        };
        if self.n_depth > 0 {
            format!("{base} @ d{}", self.n_depth)
        } else {
            base
        }
    }

    /// Tokens the timed region evaluates (llama-bench's t/s numerator; batched-bench's `N_KV`).
    pub fn timed_tokens(&self) -> u64 {
        match self.parallel {
            Some(parallel) => {
                let b = u64::from(parallel.n_sequences);
                let prompts = if parallel.shared_prompt { 1 } else { b };
                prompts * u64::from(self.n_prompt) + b * u64::from(self.n_gen)
            }
            None => u64::from(self.n_prompt) + u64::from(self.n_gen),
        }
    }

    /// Sequences the context must hold at once: 1, or B for a batched test.
    pub fn sequences(&self) -> u32 {
        self.parallel.map_or(1, |p| p.n_sequences.max(1))
    }

    /// Cache positions the test needs: depth, prompt and generated tokens. A batched test needs `B·(PP + TG)`
    /// also with a shared prompt: llama.cpp's default (non-unified) cache gives each sequence its own
    /// `n_ctx / B` cells, and the shared prompt is copied into every one of them.
    pub fn context_needed(&self) -> u64 {
        match self.parallel {
            Some(_) => {
                u64::from(self.sequences())
                    * (u64::from(self.n_depth) + u64::from(self.n_prompt) + u64::from(self.n_gen))
            }
            None => u64::from(self.n_depth) + self.timed_tokens(),
        }
    }
}

/// The shape of a row's test, with llama-bench's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    /// A text prompt through the tokenizer, greedy decoding (the guide's benchmarks).
    Text,
    /// Prompt processing only.
    Pp,
    /// Token generation only.
    Tg,
    /// Prompt then generation, timed together.
    Pg,
}

/// What a row measured, as llama-bench describes a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TestShape {
    pub kind: TestKind,
    /// Prompt tokens (for text tests: per iteration, as tokenized; 0 when unknown, e.g. a failed row).
    pub n_prompt: u64,
    pub n_gen: u32,
    pub n_depth: u32,
    /// Batched tests: the sequences and whether they shared a prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Parallel>,
}

impl TestShape {
    pub fn of_tokens(test: &TokenTest) -> TestShape {
        TestShape {
            kind: test.kind(),
            n_prompt: test.n_prompt.into(),
            n_gen: test.n_gen,
            n_depth: test.n_depth,
            parallel: test.parallel,
        }
    }
}

/// A deterministic source of random token ids, the same on every engine for the same seed and vocabulary
/// (llama-bench draws with `std::rand()`; only the ids' randomness matters, not the generator).
/// SplitMix64: tiny, fast, and good enough to spread ids over a vocabulary.
#[derive(Debug, Clone)]
pub struct TokenRng {
    state: u64,
}

impl TokenRng {
    pub fn new(seed: u64) -> TokenRng {
        TokenRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A token id in `0..n_vocab`.
    pub fn token(&mut self, n_vocab: u32) -> u32 {
        assert!(n_vocab > 0, "a vocabulary has at least one token");
        // Lemire's multiply-shift: unbiased enough for 2^32-sized ranges and branch-free.
        (((self.next_u64() >> 32) * u64::from(n_vocab)) >> 32) as u32
    }

    /// `count` token ids; the first is `first` when given (llama-bench starts with BOS when the vocabulary
    /// adds one).
    pub fn tokens(&mut self, count: usize, n_vocab: u32, first: Option<u32>) -> Vec<u32> {
        (0..count)
            .map(|i| if i == 0 { first.unwrap_or_else(|| self.token(n_vocab)) } else { self.token(n_vocab) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_bench() {
        let t = |n_prompt, n_gen, n_depth| TokenTest::single(n_prompt, n_gen, n_depth).name();
        assert_eq!(t(512, 0, 0), "pp512");
        assert_eq!(t(0, 128, 0), "tg128");
        assert_eq!(t(512, 128, 0), "pp512+tg128");
        assert_eq!(t(0, 128, 4096), "tg128 @ d4096");
        assert_eq!(TokenTest::single(64, 0, 0).kind(), TestKind::Pp);
        assert_eq!(TokenTest::single(64, 16, 8).context_needed(), 88);
    }

    #[test]
    fn batched_tests_count_batched_bench_s_n_kv() {
        let batched = |shared_prompt| TokenTest {
            parallel: Some(Parallel { n_sequences: 4, shared_prompt }),
            ..TokenTest::single(32, 8, 0)
        };
        assert_eq!(batched(false).name(), "pp32+tg8 x4");
        assert_eq!(batched(true).name(), "pp32+tg8 x4 shared");
        // N_KV: B·(PP + TG) apart, PP + B·TG shared.
        assert_eq!(batched(false).timed_tokens(), 160);
        assert_eq!(batched(true).timed_tokens(), 64);
        // Every sequence holds its own copy of the prompt in llama.cpp's per-sequence cache.
        assert_eq!(batched(true).context_needed(), 160);
        assert_eq!(batched(true).sequences(), 4);
        assert_eq!(TokenTest::single(32, 8, 0).sequences(), 1);
        // Old rows without the field read as single-sequence tests; single tests write no field.
        let old: TokenTest = serde_json::from_str(r#"{"n_prompt":1,"n_gen":2,"n_depth":0}"#).unwrap();
        assert_eq!(old, TokenTest::single(1, 2, 0));
        assert!(!serde_json::to_string(&old).unwrap().contains("parallel"));
    }

    #[test]
    fn random_tokens_are_deterministic_and_in_range() {
        let a = TokenRng::new(7).tokens(1000, 50, Some(1));
        let b = TokenRng::new(7).tokens(1000, 50, Some(1));
        assert_eq!(a, b);
        assert_eq!(a[0], 1);
        assert!(a.iter().all(|&t| t < 50));
        // Every id of a small vocabulary shows up: the draw spreads over the range.
        let mut seen = [false; 50];
        a.iter().for_each(|&t| seen[t as usize] = true);
        assert!(seen.iter().all(|&s| s));
        assert_ne!(TokenRng::new(8).tokens(10, 1000, None), TokenRng::new(7).tokens(10, 1000, None));
    }
}

/// One test of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum TestCase {
    /// The guide's benchmark: a prompt, a fixed output length, `iterations` timed runs.
    Text(BenchmarkConfig),
    /// A llama-bench test with its repetition count.
    Tokens { test: TokenTest, repetitions: u32 },
}

impl TestCase {
    pub fn name(&self) -> String {
        match self {
            TestCase::Text(config) => config.name.clone(),
            TestCase::Tokens { test, .. } => test.name(),
        }
    }

    /// The repetitions a fixed-count run does.
    pub fn fixed_count(&self) -> u32 {
        match self {
            TestCase::Text(config) => config.iterations,
            TestCase::Tokens { repetitions, .. } => *repetitions,
        }
    }

    /// The guide's config of this test's row on `model`: text tests carry theirs; token tests are named like
    /// llama-bench's.
    pub fn row_config(&self, model: &str) -> BenchmarkConfig {
        match self {
            TestCase::Text(config) => BenchmarkConfig { model: model.to_string(), ..config.clone() },
            TestCase::Tokens { test, repetitions } => BenchmarkConfig {
                name: test.name(),
                model: model.to_string(),
                prompt: String::new(),
                max_tokens: test.n_gen,
                iterations: *repetitions,
            },
        }
    }
}
