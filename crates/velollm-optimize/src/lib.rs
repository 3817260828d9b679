//! `velollm optimize`: settings for this machine, from its hardware and, better, from what was measured on it.
//!
//! Two sources, in order of trust:
//! 1. **Measured results** (`--from sweep.jsonl`): among the rows with `status == "ok"` (a configuration that ran
//!    out of memory failed and is not there) whose recorded peak memory fits this machine, the fastest decode
//!    row gives threads, GPU layers, flash attention and KV cache types, the fastest prompt row the batch sizes.
//! 2. **Hardware rules** ([`rules`]): one thread per physical core; flash attention where Ollama supports it on
//!    the GPU; with a model (`-m`), whether weights + KV cache + 1 GiB of working space fit in VRAM, then with a
//!    q8_0 KV cache, then spread over several GPUs, else how many layers fit.
//!
//! The result is a [`Plan`]: each recommended value with its reason, rendered as a sourceable script of Ollama
//! server variables (only names Ollama reads, [`ollama`]), the per-request options where they take effect
//! (Modelfile, API `options`), and the matching `velollm benchmark` and llama.cpp flags ([`render`]).

pub mod measured;
pub mod ollama;
pub mod render;
pub mod rules;

use std::collections::BTreeMap;

use velollm_core::HardwareInfo;
use velollm_gguf::GgufFile;

pub use measured::{best_from_rows, read_results, BestRow, Measured, MeasuredParams};
pub use rules::{fits, kv_cache_bytes, recommend, WORKING_SPACE_BYTES};

/// Why optimize could not proceed; one line each.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("cannot read results {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Results(String),
}

/// What the rules need to know about a model, read from its GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    /// As the user named it (`-m`).
    pub name: String,
    /// Bytes of all tensors: what loading the model puts in memory.
    pub weights_bytes: u64,
    /// Repeating layers (`block_count`).
    pub n_layers: Option<u32>,
    /// KV cache bytes per token of context at f16: `2 bytes × layers × KV heads × (key length + value length)`.
    pub kv_bytes_per_token_f16: Option<u64>,
    /// The context the model was trained for (`context_length`).
    pub context_train: Option<u32>,
}

impl ModelFacts {
    pub fn from_gguf(name: &str, gguf: &GgufFile) -> ModelFacts {
        let weights_bytes: u64 =
            gguf.tensors.iter().filter_map(|t| t.ggml_type.storage_bytes(t.element_count())).sum::<u64>();
        let n_layers = gguf.arch_u64("block_count").and_then(|n| u32::try_from(n).ok());
        let heads = gguf.arch_u64("attention.head_count");
        // Some architectures store per-layer arrays here; those are not read, and the figure stays absent.
        let kv_heads = gguf.arch_u64("attention.head_count_kv").or(heads);
        let head_dim = match (gguf.arch_u64("embedding_length"), heads) {
            (Some(embd), Some(h)) if h > 0 => Some(embd / h),
            _ => None,
        };
        let key_length = gguf.arch_u64("attention.key_length").or(head_dim);
        let value_length = gguf.arch_u64("attention.value_length").or(head_dim);
        let kv_bytes_per_token_f16 = match (n_layers, kv_heads, key_length, value_length) {
            (Some(layers), Some(kv_heads), Some(k), Some(v)) => Some(2 * u64::from(layers) * kv_heads * (k + v)),
            _ => None,
        };
        ModelFacts {
            name: name.to_string(),
            weights_bytes: if weights_bytes > 0 { weights_bytes } else { gguf.file_bytes },
            n_layers,
            kv_bytes_per_token_f16,
            context_train: gguf.arch_u64("context_length").and_then(|n| u32::try_from(n).ok()),
        }
    }
}

/// GPU layers to offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuLayers {
    All,
    Count(u32),
}

impl std::fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuLayers::All => f.pad("all"),
            GpuLayers::Count(n) => f.pad(&n.to_string()),
        }
    }
}

/// A recommended value and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice<T> {
    pub value: T,
    pub reason: String,
}

impl<T> Choice<T> {
    pub fn new(value: T, reason: impl Into<String>) -> Choice<T> {
        Choice { value, reason: reason.into() }
    }
}

/// Everything `velollm optimize` recommends; an absent field means "leave the default".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recommended {
    pub threads: Option<Choice<u32>>,
    pub gpu_layers: Option<Choice<GpuLayers>>,
    pub ctx_size: Option<Choice<u32>>,
    pub batch_size: Option<Choice<u32>>,
    pub ubatch_size: Option<Choice<u32>>,
    pub flash_attn: Option<Choice<bool>>,
    /// K and V cache type (Ollama sets both with one variable).
    pub kv_cache_type: Option<Choice<String>>,
    /// A V cache type differing from K (llama.cpp only; measured).
    pub v_cache_type: Option<Choice<String>>,
    pub num_parallel: Option<Choice<u32>>,
    pub max_loaded_models: Option<Choice<u32>>,
    pub keep_alive: Option<Choice<String>>,
    pub sched_spread: Option<Choice<bool>>,
}

/// What optimize decided, with the context it decided in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub recommended: Recommended,
    /// One line describing the machine.
    pub machine: String,
    /// The model the plan is for, when one was given or found in the results.
    pub model: Option<String>,
    /// What the plan rests on: `hardware rules`, or the measured results.
    pub basis: String,
    /// Advice that is not a setting (model size for the VRAM, memory warnings).
    pub notes: Vec<String>,
}

/// What the rules take.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub hardware: &'a HardwareInfo,
    pub model: Option<&'a ModelFacts>,
    /// The context the user wants (`--ctx-size`); default 4096 capped at the model's training context.
    pub ctx_size: Option<u32>,
    pub measured: Option<&'a Measured>,
    /// The current values of the Ollama variables in velollm's environment (for `--dry-run`'s "current").
    pub environment: &'a BTreeMap<String, String>,
}

/// The Ollama server variables set in this process's environment.
pub fn current_ollama_environment() -> BTreeMap<String, String> {
    ollama::SERVER_VARIABLES
        .iter()
        .filter_map(|v| std::env::var(v.name).ok().map(|value| (v.name.to_string(), value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;
    use velollm_core::{CpuDetails, GpuInfo, GpuSource, GpuVendor};
    use velollm_gguf::{GgmlType, MetadataValue, TensorInfo};

    use super::*;

    #[test]
    fn model_facts_from_the_header() {
        let metadata = [
            ("general.architecture", MetadataValue::String("llama".into())),
            ("llama.block_count", MetadataValue::U32(30)),
            ("llama.embedding_length", MetadataValue::U32(576)),
            ("llama.attention.head_count", MetadataValue::U32(9)),
            ("llama.attention.head_count_kv", MetadataValue::U32(3)),
            ("llama.context_length", MetadataValue::U32(8192)),
        ];
        let gguf = GgufFile {
            path: PathBuf::from("m.gguf"),
            version: 3,
            file_bytes: 1_000_000,
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            tensors: vec![TensorInfo { name: "w".into(), dims: vec![1000], ggml_type: GgmlType(0), offset: 0 }],
            data_offset: 0,
        };
        let facts = ModelFacts::from_gguf("smollm2-135m", &gguf);
        assert_eq!(facts.weights_bytes, 4000);
        assert_eq!(facts.n_layers, Some(30));
        // SmolLM2-135M's shape: 2 bytes × 30 layers × 3 KV heads × (64 + 64) = 23,040 bytes per token.
        assert_eq!(facts.kv_bytes_per_token_f16, Some(23_040));
        assert_eq!(facts.context_train, Some(8192));
    }

    #[test]
    fn measured_results_override_the_hardware_rules() {
        let hw = HardwareInfo {
            cpu: CpuDetails { physical_cores: Some(16), ..CpuDetails::default() },
            gpus: vec![{
                let mut g = GpuInfo::new(0, GpuVendor::Nvidia, GpuSource::Nvml);
                g.vram_total_bytes = Some(24_564 << 20);
                g.compute_capability = Some("8.9".into());
                g
            }],
            ..HardwareInfo::default()
        };
        let row = |tps: f64, threads: u32, fa: &str| {
            json!({"config": {"name": "tg128", "model": "m"}, "tokens_per_second": tps, "status": "ok",
                   "test": {"kind": "tg"}, "model": {"reference": "m"},
                   "parameters": {"requested": {"n_threads": threads, "n_gpu_layers": "all", "flash_attn": fa,
                                                "type_k": "q8_0", "type_v": "q8_0"},
                                  "effective": {"n_gpu_layers": 33, "n_layers_total": 33}}})
        };
        let rows = vec![row(100.0, 4, "off"), row(120.0, 8, "off"), row(110.0, 16, "on")];
        let measured = best_from_rows(&rows, None, &hw, "sweep.jsonl").unwrap();
        let env = BTreeMap::new();
        let plan = recommend(&Request {
            hardware: &hw,
            model: None,
            ctx_size: None,
            measured: Some(&measured),
            environment: &env,
        });
        let r = &plan.recommended;
        assert_eq!(r.threads.as_ref().unwrap().value, 8);
        assert!(r.threads.as_ref().unwrap().reason.starts_with("measured: the fastest decode (120.0 tok/s on tg128"));
        assert!(!r.flash_attn.as_ref().unwrap().value, "measured off beats the hardware rule's on");
        assert_eq!(r.gpu_layers.as_ref().unwrap().value, GpuLayers::All);
        assert_eq!(r.kv_cache_type.as_ref().unwrap().value, "q8_0");
        assert!(plan.basis.starts_with("measured results (sweep.jsonl: 3 of 3 rows"), "{}", plan.basis);
        assert_eq!(plan.model.as_deref(), Some("m"));
    }
}
