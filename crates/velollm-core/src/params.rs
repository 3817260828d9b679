//! Parameters handed to engines. Every field is recorded with each result.

use serde::{Deserialize, Serialize};

/// Flash-attention policy, as llama.cpp names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    /// The engine decides (llama.cpp enables it where the backend supports it).
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for FlashAttention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(FlashAttention::Auto),
            "on" | "1" | "true" | "enabled" => Ok(FlashAttention::On),
            "off" | "0" | "false" | "disabled" => Ok(FlashAttention::Off),
            other => Err(format!("invalid flash-attention policy '{other}' (expected auto, on or off)")),
        }
    }
}

impl std::fmt::Display for FlashAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlashAttention::Auto => "auto",
            FlashAttention::On => "on",
            FlashAttention::Off => "off",
        })
    }
}

/// Load-time and context parameters of an in-process engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineParams {
    /// Threads for generation and for prompt evaluation.
    pub threads: u32,
    /// Layers offloaded to a GPU (llama.cpp clamps to the model's layer count; 0 = CPU only).
    pub n_gpu_layers: u32,
    /// Context size in tokens (KV cache capacity).
    pub ctx_size: u32,
    /// Logical batch size for prompt evaluation.
    pub batch_size: u32,
    /// Physical (micro-)batch size.
    pub ubatch_size: u32,
    pub flash_attn: FlashAttention,
    /// Map the model file instead of reading it.
    pub use_mmap: bool,
    /// KV cache element types. Not configurable yet; recorded so results say what they measured.
    pub type_k: String,
    pub type_v: String,
}

impl EngineParams {
    /// llama-bench's defaults (batch 2048, ubatch 512, f16 KV cache, all layers offloadable) with the given
    /// thread count, so velollm numbers read like llama-bench's.
    pub fn with_threads(threads: u32) -> EngineParams {
        EngineParams {
            threads,
            n_gpu_layers: 999,
            ctx_size: 2048,
            batch_size: 2048,
            ubatch_size: 512,
            flash_attn: FlashAttention::Auto,
            use_mmap: true,
            type_k: "f16".into(),
            type_v: "f16".into(),
        }
    }
}

/// How tokens are chosen and when generation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// Recorded with every result; greedy sampling does not draw from it.
    pub seed: u32,
    /// `greedy` (argmax) is the only sampler: it makes output, and so timing, deterministic.
    pub sampler: String,
    /// Whether an end-of-generation token ends an iteration early. Off by default: the output length is fixed.
    pub stop_at_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams { seed: 42, sampler: "greedy".into(), stop_at_eos: false }
    }
}
