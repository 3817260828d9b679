//! The architecture table against published numbers and real files, and every architecture's planned tensors
//! against its table entry. Nothing here writes a file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use velollm_gguf::{GgmlType, GgufFile, MetadataValue, ReadOptions};
use velollm_synth::{Architecture, SynthSpec, Vocabulary, ARCHITECTURES};

fn spec(name: &str, quant: &str) -> SynthSpec {
    SynthSpec::new(name, quant, None, 0).unwrap()
}

/// A real test model from the repository's models/ (scripts/fetch-models.sh fetches them).
fn real_model(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)", path.display());
    path
}

#[test]
fn parameter_counts_are_the_published_ones() {
    // The parameter counts of the Hugging Face checkpoints (safetensors metadata; tied embeddings counted
    // once). The GGUF adds only Llama 3's rope_freqs (head_dim / 2 values), which is not a weight.
    let published = [
        ("smollm2-135m", 134_515_008u64),
        ("qwen2.5-0.5b", 494_032_768),
        ("gemma-3-1b", 999_885_952),
        ("llama-3.2-1b", 1_235_814_400),
        ("llama-3.2-3b", 3_212_749_824),
        ("qwen2.5-7b", 7_615_616_512),
        ("llama-3.1-8b", 8_030_261_248),
    ];
    assert_eq!(published.len(), ARCHITECTURES.len(), "every architecture has a published count here");
    for (name, count) in published {
        let s = spec(name, "q4_0");
        let rope_freqs: u64 = s.tensors().iter().filter(|t| t.name == "rope_freqs.weight").map(|t| t.elements()).sum();
        assert_eq!(s.parameter_count() - rope_freqs, count, "{name}");
    }
}

#[test]
fn the_table_holds_the_published_hyper_parameters() {
    // (name, layers, d_model, heads, kv heads, head_dim, FFN, vocab, rope theta, rms eps, tied)
    type Row = (&'static str, u32, u32, u32, u32, u32, u32, u32, f32, f32, bool);
    let rows: [Row; 7] = [
        ("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, 100_000.0, 1e-5, true),
        ("qwen2.5-0.5b", 24, 896, 14, 2, 64, 4864, 151_936, 1e6, 1e-6, true),
        ("gemma-3-1b", 26, 1152, 4, 1, 256, 6912, 262_144, 1e6, 1e-6, true),
        ("llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, 128_256, 500_000.0, 1e-5, true),
        ("llama-3.2-3b", 28, 3072, 24, 8, 128, 8192, 128_256, 500_000.0, 1e-5, true),
        ("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152_064, 1e6, 1e-6, false),
        ("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128_256, 500_000.0, 1e-5, false),
    ];
    for (name, layers, d, heads, kv, head_dim, ffn, vocab, theta, eps, tied) in rows {
        let a = velollm_synth::arch::find(name).unwrap();
        let got = (
            a.block_count,
            a.embedding_length,
            a.head_count,
            a.head_count_kv,
            a.head_dim,
            a.feed_forward_length,
            a.vocab_size,
            a.rope_freq_base,
            a.rms_norm_eps,
            a.tied_embeddings,
        );
        assert_eq!(got, (layers, d, heads, kv, head_dim, ffn, vocab, theta, eps, tied), "{name}");
    }
    let llama32 = velollm_synth::arch::find("llama-3.2-3b").unwrap().rope_scaling.unwrap();
    assert_eq!((llama32.factor, llama32.original_context_length), (32.0, 8192));
    let llama31 = velollm_synth::arch::find("llama-3.1-8b").unwrap().rope_scaling.unwrap();
    assert_eq!((llama31.factor, llama31.original_context_length), (8.0, 8192));
    assert!(velollm_synth::arch::find("qwen2.5-7b").unwrap().qkv_bias);
    assert_eq!(velollm_synth::arch::find("gemma-3-1b").unwrap().sliding_window, Some(512));
}

/// Every tensor of the plan, derived again from the table entry: names, shapes, and nothing else.
fn expected_shapes(a: &Architecture, layers: u32) -> BTreeMap<String, Vec<u64>> {
    let d = u64::from(a.embedding_length);
    let (q, kv) = (u64::from(a.head_count * a.head_dim), u64::from(a.head_count_kv * a.head_dim));
    let (ffn, vocab, head_dim) = (u64::from(a.feed_forward_length), u64::from(a.vocab_size), u64::from(a.head_dim));
    let mut m = BTreeMap::new();
    m.insert("token_embd.weight".to_string(), vec![d, vocab]);
    m.insert("output_norm.weight".to_string(), vec![d]);
    if !a.tied_embeddings {
        m.insert("output.weight".to_string(), vec![d, vocab]);
    }
    if a.rope_scaling.is_some() {
        m.insert("rope_freqs.weight".to_string(), vec![head_dim / 2]);
    }
    for i in 0..layers {
        let mut put = |suffix: &str, dims: Vec<u64>| m.insert(format!("blk.{i}.{suffix}"), dims);
        put("attn_norm.weight", vec![d]);
        put("attn_q.weight", vec![d, q]);
        put("attn_k.weight", vec![d, kv]);
        put("attn_v.weight", vec![d, kv]);
        put("attn_output.weight", vec![q, d]);
        put("ffn_norm.weight", vec![d]);
        put("ffn_gate.weight", vec![d, ffn]);
        put("ffn_up.weight", vec![d, ffn]);
        put("ffn_down.weight", vec![ffn, d]);
        if a.qkv_bias {
            put("attn_q.bias", vec![q]);
            put("attn_k.bias", vec![kv]);
            put("attn_v.bias", vec![kv]);
        }
        if a.gguf_arch == "gemma3" {
            put("attn_q_norm.weight", vec![head_dim]);
            put("attn_k_norm.weight", vec![head_dim]);
            put("post_attention_norm.weight", vec![d]);
            put("post_ffw_norm.weight", vec![d]);
        }
    }
    m
}

#[test]
fn every_planned_tensor_follows_the_table() {
    for a in ARCHITECTURES {
        for layers in [1, a.block_count] {
            let s = SynthSpec::new(a.name, "q4_0", Some(layers), 0).unwrap();
            let planned: BTreeMap<String, Vec<u64>> = s.tensors().into_iter().map(|t| (t.name, t.dims)).collect();
            assert_eq!(planned.len(), s.tensors().len(), "{}: duplicate tensor names", a.name);
            assert_eq!(planned, expected_shapes(a, layers), "{} with {layers} layers", a.name);
        }
    }
    // A few shapes written out, as a reader of a real file would see them.
    let shape = |name: &str, tensor: &str| {
        spec(name, "q4_0").tensors().into_iter().find(|t| t.name == tensor).map(|t| t.dims).unwrap_or_default()
    };
    assert_eq!(shape("llama-3.2-3b", "blk.27.attn_k.weight"), [3072, 1024]);
    assert_eq!(shape("llama-3.2-3b", "token_embd.weight"), [3072, 128_256]);
    assert_eq!(shape("llama-3.2-3b", "output.weight"), Vec::<u64>::new(), "tied: no output matrix");
    assert_eq!(shape("llama-3.2-3b", "rope_freqs.weight"), [64]);
    assert_eq!(shape("llama-3.2-1b", "rope_freqs.weight"), [32]);
    assert_eq!(shape("llama-3.1-8b", "blk.31.ffn_down.weight"), [14336, 4096]);
    assert_eq!(shape("llama-3.1-8b", "output.weight"), [4096, 128_256]);
    assert_eq!(shape("qwen2.5-7b", "blk.0.attn_k.bias"), [512]);
    assert_eq!(shape("qwen2.5-7b", "output.weight"), [3584, 152_064]);
    assert_eq!(shape("gemma-3-1b", "blk.25.attn_q.weight"), [1152, 1024]);
    assert_eq!(spec("llama-3.2-3b", "q4_0").tensors().len(), 1 + 1 + 28 * 9 + 1);
}

#[test]
fn types_are_those_of_real_files() {
    for a in ARCHITECTURES {
        let d = u64::from(a.embedding_length);
        for (quant, matrix) in [("q4_0", GgmlType::Q4_0), ("q8_0", GgmlType::Q8_0), ("f16", GgmlType::F16)] {
            let s = spec(a.name, quant);
            for t in s.tensors() {
                let logits = t.name == "output.weight" || (a.tied_embeddings && t.name == "token_embd.weight");
                let want = if t.dims.len() == 1 {
                    GgmlType::F32
                } else if logits && quant == "q4_0" {
                    // llama-quantize: Q6_K, or Q8_0 where rows are not whole 256-element blocks.
                    if d % 256 == 0 {
                        GgmlType::Q6_K
                    } else {
                        GgmlType::Q8_0
                    }
                } else {
                    matrix
                };
                assert_eq!(t.ggml_type, want, "{} {quant} {}", a.name, t.name);
            }
        }
    }
}

#[test]
fn llama3_rope_factors_are_those_of_the_converter() {
    // Llama 3.2 (factor 32): short wavelengths unscaled, long ones divided by 32, a smooth blend between.
    let f = velollm_synth::arch::find("llama-3.2-3b").unwrap().rope_factors().unwrap();
    assert_eq!(f.len(), 64);
    assert!(f[..29].iter().all(|&x| x == 1.0), "{f:?}");
    assert!(f[35..].iter().all(|&x| x == 32.0), "{f:?}");
    assert!(f[29..35].windows(2).all(|w| w[0] < w[1]) && f[29] > 1.0 && f[34] < 32.0, "{f:?}");
    let f = velollm_synth::arch::find("llama-3.1-8b").unwrap().rope_factors().unwrap();
    assert!(f[35..].iter().all(|&x| x == 8.0), "{f:?}");
    assert!(velollm_synth::arch::find("qwen2.5-7b").unwrap().rope_factors().is_none());
}

#[test]
fn names_and_layer_counts_are_checked() {
    let err = |r: Result<SynthSpec, velollm_synth::SynthError>| r.unwrap_err().to_string();
    let unknown = err(SynthSpec::new("llama-9", "q4_0", None, 0));
    assert!(unknown.contains("unknown shape 'llama-9'") && unknown.contains("llama-3.2-3b, qwen2.5-7b"), "{unknown}");
    assert!(err(SynthSpec::new("llama-3.2-3b", "q5_k", None, 0)).contains("(known: q4_0, q8_0, f16)"));
    assert!(err(SynthSpec::new("llama-3.2-3b", "q4_0", Some(0), 0)).contains("1 to 28"));
    assert!(err(SynthSpec::new("llama-3.2-3b", "q4_0", Some(29), 0)).contains("1 to 28"));
    let s = SynthSpec::new("LLAMA-3.2-3B", "Q8_0", Some(2), 5).unwrap();
    assert_eq!((s.arch.name, s.layers, s.seed), ("llama-3.2-3b", 2, 5));
    assert_eq!(s.display_name(), "Llama 3.2 3B (synthetic: random weights, 2 of 28 layers)");
}

/// SmolLM2-135M and Qwen2.5-0.5B (as Qwen2.5-Coder-0.5B-Instruct) exist as real files: the plan must match
/// them tensor for tensor, and the metadata key for key.
#[test]
fn the_plan_matches_the_real_files() {
    for (name, file) in [
        ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("qwen2.5-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    ] {
        let path = real_model(file);
        let real = GgufFile::read(&path, ReadOptions::default()).unwrap();
        let s = spec(name, "q4_0");
        let mut real_shapes: BTreeMap<String, Vec<u64>> =
            real.tensors.iter().map(|t| (t.name.clone(), t.dims.clone())).collect();
        if name == "qwen2.5-0.5b" {
            // This AWQ export stores the tied output matrix separately; Qwen2.5-0.5B ties it.
            assert_eq!(real_shapes.remove("output.weight"), Some(vec![896, 151_936]));
        }
        let planned: BTreeMap<String, Vec<u64>> = s.tensors().into_iter().map(|t| (t.name, t.dims)).collect();
        assert_eq!(planned, real_shapes, "{name}");

        let vocab = Vocabulary::read(&path).unwrap();
        let metadata: BTreeMap<String, MetadataValue> = s.metadata(&vocab).unwrap().into_iter().collect();
        let arch = real.architecture().unwrap();
        assert_eq!(metadata["general.architecture"].as_str(), Some(arch));
        for key in [
            "block_count",
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
        ] {
            let key = format!("{arch}.{key}");
            assert_eq!(metadata[&key].as_u64(), real.get_u64(&key), "{name}: {key}");
        }
        for key in ["rope.freq_base", "attention.layer_norm_rms_epsilon"] {
            let key = format!("{arch}.{key}");
            assert_eq!(metadata[&key].as_f64(), real.get(&key).and_then(MetadataValue::as_f64), "{name}: {key}");
        }
        // The tokenizer is the real file's, unpadded at this size.
        let Some(MetadataValue::Array { len: real_tokens, .. }) = real.get("tokenizer.ggml.tokens") else {
            panic!("{file} has no vocabulary");
        };
        assert_eq!(metadata["tokenizer.ggml.tokens"].as_array().map(|t| t.len() as u64), Some(*real_tokens));
        assert_eq!(metadata["tokenizer.ggml.model"], real.get("tokenizer.ggml.model").cloned().unwrap());
        assert_eq!(metadata["general.synthetic"], MetadataValue::Bool(true));
    }
}
