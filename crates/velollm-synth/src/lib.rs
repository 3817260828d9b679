//! Synthetic GGUF models: the exact tensor shapes, metadata and layer count of a public architecture, with
//! seeded random weights and a real model's tokenizer.
//!
//! Decode and prompt speed depend on the tensor shapes and storage types, not on the values: a file with
//! Llama-3.2-3B's shapes in Q4_0 moves the same bytes and does the same arithmetic per token as the real
//! Llama-3.2-3B-Q4_0, so it benchmarks like it, while its generated text is meaningless. Such a file says so:
//! `general.synthetic = true` (velollm records it with every result), `general.name` says synthetic, and
//! `velollm.synthetic.*` keys name the architecture copied, the seed and the vocabulary's origin.
//!
//! - [`arch`]: the architecture table, with the sources of its numbers;
//! - [`SynthSpec`]: an architecture, a weight type, a layer count and a seed; it plans every tensor and the
//!   metadata without writing anything, and [`write_model`] writes the file;
//! - [`Vocabulary`]: the tokenizer, read from a real model and padded.

pub mod arch;
mod quant;
mod random;
mod vocab;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use velollm_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Layout, MetadataValue, ReadOptions, WriteOptions};

pub use arch::{Architecture, Llama3RopeScaling, ARCHITECTURES};
pub use quant::{Quant, Role, QUANTS};
pub use random::{f16_bits, f16_to_f32, Fill, Generator, Xoshiro256};
pub use velollm_gguf::{PendingFile, WriteError};
pub use vocab::Vocabulary;

/// `general.quantization_version` of llama.cpp's quantized files.
const QUANTIZATION_VERSION: u32 = 2;

/// Why a synthetic model could not be made. One line each.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown shape '{0}' for --like (known: {known})", known = arch::known_names())]
    UnknownArchitecture(String),
    #[error("unknown type '{0}' for --quant (known: {known})", known = quant::known_names())]
    UnknownQuant(String),
    #[error("--layers must be 1 to {max} for {arch} ({given} given)")]
    Layers { arch: String, given: u32, max: u32 },
    #[error("cannot use the vocabulary of {path}: {reason}")]
    Vocabulary { path: String, reason: String },
    #[error("the vocabulary of {origin} has {tokens} tokens, more than the {size} embedding rows of the shape")]
    VocabularyTooLarge { origin: String, tokens: usize, size: usize },
    #[error("refusing to replace {0}: it is not a synthetic model written by velollm synth (remove it first)")]
    WouldReplace(String),
    #[error(transparent)]
    Read(#[from] GgufError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// One tensor of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// ggml order: the first dimension is the row (the input side of a weight matrix).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub fill: Fill,
}

impl PlannedTensor {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        self.ggml_type.storage_bytes(self.elements()).expect("only known types are planned")
    }
}

/// What to write: an architecture, a weight type, how many of its layers, and the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub arch: Architecture,
    pub quant: Quant,
    /// Layers written: the architecture's, or fewer (`--layers`, for tests).
    pub layers: u32,
    pub seed: u64,
}

impl SynthSpec {
    /// Checks the names and the layer count (`None`: all of the architecture's layers).
    pub fn new(like: &str, quant: &str, layers: Option<u32>, seed: u64) -> Result<SynthSpec, SynthError> {
        let arch = arch::find(like).ok_or_else(|| SynthError::UnknownArchitecture(like.to_string()))?;
        let quant = Quant::parse(quant).ok_or_else(|| SynthError::UnknownQuant(quant.to_string()))?;
        let max = arch.block_count;
        let layers = layers.unwrap_or(max);
        if !(1..=max).contains(&layers) {
            return Err(SynthError::Layers { arch: arch.name.to_string(), given: layers, max });
        }
        Ok(SynthSpec { arch: arch.clone(), quant, layers, seed })
    }

    /// Every tensor, in file order, with its shape, storage type and values.
    pub fn tensors(&self) -> Vec<PlannedTensor> {
        let a = &self.arch;
        let d = u64::from(a.embedding_length);
        let ffn = u64::from(a.feed_forward_length);
        let vocab = u64::from(a.vocab_size);
        let (q, kv, head_dim) = (a.q_width(), a.kv_width(), u64::from(a.head_dim));
        let matrix = |name: String, dims: [u64; 2], role: Role| PlannedTensor {
            name,
            ggml_type: self.quant.tensor_type(role, dims[0]),
            fill: Fill::Random { rms: 1.0 / (dims[0] as f32).sqrt() },
            dims: dims.to_vec(),
        };
        let vector = |name: String, len: u64, fill: &Fill| PlannedTensor {
            name,
            dims: vec![len],
            ggml_type: self.quant.tensor_type(Role::Vector, len),
            fill: fill.clone(),
        };
        let ones = Fill::Constant(1.0);
        let bias = Fill::Uniform(0.02);
        let gemma = a.gguf_arch == "gemma3";

        let embedding_role = if a.tied_embeddings { Role::Output } else { Role::Matrix };
        let mut tensors = vec![matrix("token_embd.weight".into(), [d, vocab], embedding_role)];
        if let Some(factors) = a.rope_factors() {
            tensors.push(vector("rope_freqs.weight".into(), factors.len() as u64, &Fill::Values(factors)));
        }
        for layer in 0..self.layers {
            let n = |suffix: &str| format!("blk.{layer}.{suffix}");
            tensors.push(vector(n("attn_norm.weight"), d, &ones));
            tensors.push(matrix(n("attn_q.weight"), [d, q], Role::Matrix));
            tensors.push(matrix(n("attn_k.weight"), [d, kv], Role::Matrix));
            tensors.push(matrix(n("attn_v.weight"), [d, kv], Role::Matrix));
            if a.qkv_bias {
                tensors.push(vector(n("attn_q.bias"), q, &bias));
                tensors.push(vector(n("attn_k.bias"), kv, &bias));
                tensors.push(vector(n("attn_v.bias"), kv, &bias));
            }
            tensors.push(matrix(n("attn_output.weight"), [q, d], Role::Matrix));
            if gemma {
                tensors.push(vector(n("attn_q_norm.weight"), head_dim, &ones));
                tensors.push(vector(n("attn_k_norm.weight"), head_dim, &ones));
                tensors.push(vector(n("post_attention_norm.weight"), d, &ones));
            }
            tensors.push(vector(n("ffn_norm.weight"), d, &ones));
            tensors.push(matrix(n("ffn_gate.weight"), [d, ffn], Role::Matrix));
            tensors.push(matrix(n("ffn_up.weight"), [d, ffn], Role::Matrix));
            tensors.push(matrix(n("ffn_down.weight"), [ffn, d], Role::Matrix));
            if gemma {
                tensors.push(vector(n("post_ffw_norm.weight"), d, &ones));
            }
        }
        tensors.push(vector("output_norm.weight".into(), d, &ones));
        if !a.tied_embeddings {
            tensors.push(matrix("output.weight".into(), [d, vocab], Role::Output));
        }
        tensors
    }

    /// The number of weights (all tensor elements, as llama.cpp and velollm count them).
    pub fn parameter_count(&self) -> u64 {
        self.tensors().iter().map(PlannedTensor::elements).sum()
    }

    /// Bytes of tensor data (the file adds the header, a few MB with the vocabulary, and alignment).
    pub fn data_bytes(&self) -> u64 {
        self.tensors().iter().map(PlannedTensor::bytes).sum()
    }

    /// `general.name`: the model's name, saying synthetic (and how many layers, when fewer).
    pub fn display_name(&self) -> String {
        let a = &self.arch;
        if self.layers == a.block_count {
            format!("{} (synthetic: random weights)", a.display_name)
        } else {
            format!("{} (synthetic: random weights, {} of {} layers)", a.display_name, self.layers, a.block_count)
        }
    }

    /// Every metadata key/value of the file, the tokenizer from `vocab` padded to the architecture's size.
    pub fn metadata(&self, vocab: &Vocabulary) -> Result<Vec<(String, MetadataValue)>, SynthError> {
        let a = &self.arch;
        let s = |v: &str| MetadataValue::String(v.to_string());
        let arch_key = |suffix: &str| format!("{}.{suffix}", a.gguf_arch);
        let mut m: Vec<(String, MetadataValue)> = vec![
            ("general.architecture".into(), s(a.gguf_arch)),
            ("general.type".into(), s("model")),
            ("general.name".into(), MetadataValue::String(self.display_name())),
            ("general.size_label".into(), s(a.size_label)),
            (
                "general.description".into(),
                MetadataValue::String(format!(
                    "Random weights in the exact tensor shapes of {} (https://huggingface.co/{}), written by \
                     velollm synth to benchmark the architecture without downloading it. Its speed is the real \
                     model's; its text is meaningless.",
                    a.display_name, a.source
                )),
            ),
            ("general.synthetic".into(), MetadataValue::Bool(true)),
            ("general.file_type".into(), MetadataValue::U32(self.quant.file_type())),
            ("velollm.synthetic.like".into(), s(a.name)),
            ("velollm.synthetic.seed".into(), MetadataValue::U64(self.seed)),
            ("velollm.synthetic.source".into(), MetadataValue::String(format!("https://huggingface.co/{}", a.source))),
            ("velollm.synthetic.block_count".into(), MetadataValue::U32(a.block_count)),
            (vocab::VOCAB_FROM.into(), MetadataValue::String(vocab.source.clone())),
            (arch_key("block_count"), MetadataValue::U32(self.layers)),
            (arch_key("context_length"), MetadataValue::U32(a.context_length)),
            (arch_key("embedding_length"), MetadataValue::U32(a.embedding_length)),
            (arch_key("feed_forward_length"), MetadataValue::U32(a.feed_forward_length)),
            (arch_key("attention.head_count"), MetadataValue::U32(a.head_count)),
            (arch_key("attention.head_count_kv"), MetadataValue::U32(a.head_count_kv)),
            (arch_key("rope.freq_base"), MetadataValue::F32(a.rope_freq_base)),
            (arch_key("attention.layer_norm_rms_epsilon"), MetadataValue::F32(a.rms_norm_eps)),
        ];
        match a.gguf_arch {
            "llama" => {
                m.push((arch_key("attention.key_length"), MetadataValue::U32(a.head_dim)));
                m.push((arch_key("attention.value_length"), MetadataValue::U32(a.head_dim)));
                m.push((arch_key("vocab_size"), MetadataValue::U32(a.vocab_size)));
                m.push((arch_key("rope.dimension_count"), MetadataValue::U32(a.head_dim)));
            }
            "gemma3" => {
                m.push((arch_key("attention.key_length"), MetadataValue::U32(a.head_dim)));
                m.push((arch_key("attention.value_length"), MetadataValue::U32(a.head_dim)));
            }
            _ => {}
        }
        if let Some(window) = a.sliding_window {
            m.push((arch_key("attention.sliding_window"), MetadataValue::U32(window)));
        }
        if self.quant != Quant::F16 {
            m.push(("general.quantization_version".into(), MetadataValue::U32(QUANTIZATION_VERSION)));
        }
        m.extend(vocab.padded(a.vocab_size as usize)?);
        Ok(m)
    }

    /// The file's writer (metadata and tensors declared) and the fills of its tensors.
    pub fn writer(&self, vocab: &Vocabulary) -> Result<(GgufWriter, Vec<PlannedTensor>), SynthError> {
        let mut writer = GgufWriter::new();
        for (key, value) in self.metadata(vocab)? {
            writer.add_metadata(&key, value)?;
        }
        let tensors = self.tensors();
        for t in &tensors {
            writer.add_tensor(&t.name, &t.dims, t.ggml_type)?;
        }
        Ok((writer, tensors))
    }
}

/// What [`write_model`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub bytes: u64,
    pub tensors: usize,
    pub parameters: u64,
    /// Tensor types and counts, most frequent first: `Q4_0 ×196, F32 ×58, Q6_K ×1`.
    pub types: String,
    pub elapsed: Duration,
}

/// Refuses to let `path` replace an existing file that is not a synthetic model: a real model written over
/// by mistake would be lost.
pub fn check_replaceable(path: &Path) -> Result<(), SynthError> {
    if !path.exists() || path.is_dir() {
        return Ok(()); // a directory is refused by PendingFile with its own message
    }
    let synthetic = GgufFile::read(path, ReadOptions::default())
        .ok()
        .and_then(|f| f.get("general.synthetic").and_then(MetadataValue::as_bool))
        .unwrap_or(false);
    if synthetic {
        Ok(())
    } else {
        Err(SynthError::WouldReplace(path.display().to_string()))
    }
}

/// Writes the model `spec` describes to `out` (created with [`PendingFile::create`], after
/// [`check_replaceable`]): header and tensors, the data generated by `threads` threads. `cancel` stops it,
/// leaving nothing behind.
pub fn write_model(
    spec: &SynthSpec,
    vocab: &Vocabulary,
    out: PendingFile,
    threads: usize,
    cancel: Option<&AtomicBool>,
) -> Result<Written, SynthError> {
    let started = Instant::now();
    let (writer, tensors) = spec.writer(vocab)?;
    let layout: Layout = writer.layout();
    let fills: Vec<Fill> = tensors.iter().map(|t| t.fill.clone()).collect();
    let types: Vec<GgmlType> = tensors.iter().map(|t| t.ggml_type).collect();
    let generator = Generator::new(spec.seed, &fills, &types);
    out.write(&layout, &generator, &WriteOptions { threads, cancel })?;
    Ok(Written {
        bytes: layout.file_bytes,
        tensors: tensors.len(),
        parameters: tensors.iter().map(PlannedTensor::elements).sum(),
        types: type_summary(&types),
        elapsed: started.elapsed(),
    })
}

/// Writes a GGUF file holding only `vocab`'s tokenizer (no tensors, about a megabyte for SmolLM2's): a
/// vocabulary to carry to a machine that has none of the test models, and pass there as `--vocab`.
pub fn write_vocabulary(vocab: &Vocabulary, out: PendingFile) -> Result<u64, SynthError> {
    let mut writer = GgufWriter::new();
    writer.add_metadata("general.type", MetadataValue::String("vocab".into()))?;
    writer.add_metadata("general.name", MetadataValue::String(format!("vocabulary of {}", vocab.source)))?;
    writer.add_metadata(vocab::VOCAB_FROM, MetadataValue::String(vocab.source.clone()))?;
    for (key, value) in vocab.entries() {
        writer.add_metadata(key, value.clone())?;
    }
    let layout = writer.layout();
    out.write(&layout, &Generator::new(0, &[], &[]), &WriteOptions::default())?;
    Ok(layout.file_bytes)
}

fn type_summary(types: &[GgmlType]) -> String {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for &t in types {
        match counts.iter_mut().find(|(seen, _)| *seen == t) {
            Some((_, n)) => *n += 1,
            None => counts.push((t, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts.iter().map(|(t, n)| format!("{} ×{n}", t.name())).collect::<Vec<_>>().join(", ")
}
