//! The architectures `velollm synth` can copy: the hyper-parameters of public models, exactly.
//!
//! Every number comes from the model's published Hugging Face `config.json` (the URL is in
//! [`Architecture::source`]), cross-checked where possible:
//! - `hidden_size` → `embedding_length`, `intermediate_size` → `feed_forward_length`, `num_hidden_layers` →
//!   `block_count`, `num_attention_heads` / `num_key_value_heads` → head counts, `head_dim` (or
//!   `hidden_size / num_attention_heads`), `vocab_size` (the embedding rows, padding rows included),
//!   `rope_theta`, `rms_norm_eps`, `tie_word_embeddings`, `max_position_embeddings` → `context_length`
//!   (Qwen2.5: the 32,768 of the Instruct configs, which llama.cpp conversions record), and Llama 3.1/3.2's
//!   `rope_scaling` (`rope_type: llama3`).
//! - How llama.cpp's `convert_hf_to_gguf.py` maps them: GGUF keys `{arch}.block_count` etc.; tensor names
//!   `token_embd`, `blk.N.attn_q` …, `output_norm`, `output` (absent when the embeddings are tied); Qwen2's
//!   q/k/v biases (`attn_q.bias` …); Gemma 3's `attn_q_norm`/`attn_k_norm`/`post_attention_norm`/
//!   `post_ffw_norm`; and Llama 3's `rope_freqs.weight`, the per-frequency RoPE divisors it computes from
//!   `rope_scaling` (reproduced in [`Architecture::rope_factors`]).
//! - SmolLM2-135M and Qwen2.5-0.5B are also checked tensor by tensor against the real GGUF files in `models/`
//!   (SmolLM2-135M-Instruct; Qwen2.5-Coder-0.5B-Instruct, which has Qwen2.5-0.5B's shapes), see the tests.

/// Llama 3's RoPE frequency scaling (`rope_scaling` with `rope_type: llama3` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context_length: u32,
}

/// The shape of a public model.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// The name `--like` takes, e.g. `llama-3.2-3b`.
    pub name: &'static str,
    /// The model's public name, e.g. `Llama 3.2 3B`.
    pub display_name: &'static str,
    /// The Hugging Face repository whose `config.json` the numbers come from.
    pub source: &'static str,
    /// `general.architecture`: `llama`, `qwen2` or `gemma3`.
    pub gguf_arch: &'static str,
    /// `general.size_label`, as conversions write it.
    pub size_label: &'static str,
    pub block_count: u32,
    pub embedding_length: u32,
    pub feed_forward_length: u32,
    pub head_count: u32,
    pub head_count_kv: u32,
    pub head_dim: u32,
    /// Rows of the embedding (and output) matrix: the tokenizer is padded to exactly this many tokens.
    pub vocab_size: u32,
    pub context_length: u32,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f32,
    /// The output projection is the token embedding matrix (no `output.weight` tensor).
    pub tied_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Gemma 3: the sliding-window size of its local attention layers (five of every six).
    pub sliding_window: Option<u32>,
    /// The project model (a `models/manifest.tsv` name) whose tokenizer the file reuses.
    pub vocab_source: &'static str,
}

const LLAMA_3_2_SCALING: Llama3RopeScaling =
    Llama3RopeScaling { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context_length: 8192 };
const LLAMA_3_1_SCALING: Llama3RopeScaling =
    Llama3RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context_length: 8192 };

/// The architectures, smallest first.
pub const ARCHITECTURES: &[Architecture] = &[
    // https://huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json, and models/SmolLM2-135M-Instruct.
    Architecture {
        name: "smollm2-135m",
        display_name: "SmolLM2 135M",
        source: "HuggingFaceTB/SmolLM2-135M",
        gguf_arch: "llama",
        size_label: "135M",
        block_count: 30,
        embedding_length: 576,
        feed_forward_length: 1536,
        head_count: 9,
        head_count_kv: 3,
        head_dim: 64,
        vocab_size: 49152,
        context_length: 8192,
        rope_freq_base: 100_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
        qkv_bias: false,
        rope_scaling: None,
        sliding_window: None,
        vocab_source: "smollm2-135m",
    },
    // https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json
    Architecture {
        name: "qwen2.5-0.5b",
        display_name: "Qwen2.5 0.5B",
        source: "Qwen/Qwen2.5-0.5B-Instruct",
        gguf_arch: "qwen2",
        size_label: "0.5B",
        block_count: 24,
        embedding_length: 896,
        feed_forward_length: 4864,
        head_count: 14,
        head_count_kv: 2,
        head_dim: 64,
        vocab_size: 151_936,
        context_length: 32768,
        rope_freq_base: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tied_embeddings: true,
        qkv_bias: true,
        rope_scaling: None,
        sliding_window: None,
        vocab_source: "qwen2.5-coder-0.5b",
    },
    // https://huggingface.co/google/gemma-3-1b-it/blob/main/config.json (rope_local_base_freq 10000 and
    // query_pre_attn_scalar 256 are what llama.cpp assumes for gemma3 without keys).
    Architecture {
        name: "gemma-3-1b",
        display_name: "Gemma 3 1B",
        source: "google/gemma-3-1b-it",
        gguf_arch: "gemma3",
        size_label: "1B",
        block_count: 26,
        embedding_length: 1152,
        feed_forward_length: 6912,
        head_count: 4,
        head_count_kv: 1,
        head_dim: 256,
        vocab_size: 262_144,
        context_length: 32768,
        rope_freq_base: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tied_embeddings: true,
        qkv_bias: false,
        rope_scaling: None,
        sliding_window: Some(512),
        vocab_source: "gemma3-270m",
    },
    // https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
    Architecture {
        name: "llama-3.2-1b",
        display_name: "Llama 3.2 1B",
        source: "meta-llama/Llama-3.2-1B",
        gguf_arch: "llama",
        size_label: "1B",
        block_count: 16,
        embedding_length: 2048,
        feed_forward_length: 8192,
        head_count: 32,
        head_count_kv: 8,
        head_dim: 64,
        vocab_size: 128_256,
        context_length: 131_072,
        rope_freq_base: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
        qkv_bias: false,
        rope_scaling: Some(LLAMA_3_2_SCALING),
        sliding_window: None,
        vocab_source: "smollm2-135m",
    },
    // https://huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json
    Architecture {
        name: "llama-3.2-3b",
        display_name: "Llama 3.2 3B",
        source: "meta-llama/Llama-3.2-3B",
        gguf_arch: "llama",
        size_label: "3B",
        block_count: 28,
        embedding_length: 3072,
        feed_forward_length: 8192,
        head_count: 24,
        head_count_kv: 8,
        head_dim: 128,
        vocab_size: 128_256,
        context_length: 131_072,
        rope_freq_base: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
        qkv_bias: false,
        rope_scaling: Some(LLAMA_3_2_SCALING),
        sliding_window: None,
        vocab_source: "smollm2-135m",
    },
    // https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json
    Architecture {
        name: "qwen2.5-7b",
        display_name: "Qwen2.5 7B",
        source: "Qwen/Qwen2.5-7B-Instruct",
        gguf_arch: "qwen2",
        size_label: "7B",
        block_count: 28,
        embedding_length: 3584,
        feed_forward_length: 18944,
        head_count: 28,
        head_count_kv: 4,
        head_dim: 128,
        vocab_size: 152_064,
        context_length: 32768,
        rope_freq_base: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tied_embeddings: false,
        qkv_bias: true,
        rope_scaling: None,
        sliding_window: None,
        vocab_source: "qwen2.5-coder-0.5b",
    },
    // https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json
    Architecture {
        name: "llama-3.1-8b",
        display_name: "Llama 3.1 8B",
        source: "meta-llama/Llama-3.1-8B",
        gguf_arch: "llama",
        size_label: "8B",
        block_count: 32,
        embedding_length: 4096,
        feed_forward_length: 14336,
        head_count: 32,
        head_count_kv: 8,
        head_dim: 128,
        vocab_size: 128_256,
        context_length: 131_072,
        rope_freq_base: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
        qkv_bias: false,
        rope_scaling: Some(LLAMA_3_1_SCALING),
        sliding_window: None,
        vocab_source: "smollm2-135m",
    },
];

/// The architecture `--like` names (case-insensitive).
pub fn find(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().find(|a| a.name.eq_ignore_ascii_case(name.trim()))
}

/// The names `--like` takes, comma-separated, for error messages.
pub fn known_names() -> String {
    ARCHITECTURES.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

impl Architecture {
    /// `head_count × head_dim`: the width of the query projection (and of the attention output's input).
    pub fn q_width(&self) -> u64 {
        u64::from(self.head_count) * u64::from(self.head_dim)
    }

    /// `head_count_kv × head_dim`: the width of the key and value projections.
    pub fn kv_width(&self) -> u64 {
        u64::from(self.head_count_kv) * u64::from(self.head_dim)
    }

    /// Llama 3's `rope_freqs.weight`: for each of the `head_dim / 2` rotary frequencies, the divisor llama.cpp
    /// applies to it, computed from `rope_scaling` the way `convert_hf_to_gguf.py` does (1 for short
    /// wavelengths, `factor` for long ones, a smooth blend between).
    pub fn rope_factors(&self) -> Option<Vec<f32>> {
        let scaling = self.rope_scaling?;
        let dim = f64::from(self.head_dim);
        let base = f64::from(self.rope_freq_base);
        let factor = f64::from(scaling.factor);
        let (low, high) = (f64::from(scaling.low_freq_factor), f64::from(scaling.high_freq_factor));
        let old_context = f64::from(scaling.original_context_length);
        let low_freq_wavelen = old_context / low;
        let high_freq_wavelen = old_context / high;
        let factors = (0..self.head_dim / 2)
            .map(|i| {
                // Computed in f32 by the converter (torch.float32); f64 here differs only in the last bits.
                let freq = 1.0 / base.powf(f64::from(2 * i) / dim);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let divisor = if wavelen < high_freq_wavelen {
                    1.0
                } else if wavelen > low_freq_wavelen {
                    factor
                } else {
                    let smooth = (old_context / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                divisor as f32
            })
            .collect();
        Some(factors)
    }
}
