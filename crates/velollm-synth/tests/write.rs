//! Writing synthetic files: a round trip through velollm-gguf's reader for every architecture (one or two
//! layers and a small vocabulary, so no file is large), the real SmolLM2 tokenizer padded and carried over
//! unchanged, and candle running every architecture with finite logits.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use velollm_candle::CandleModel;
use velollm_gguf::{GgufFile, MetadataValue, ReadOptions};
use velollm_synth::{
    check_replaceable, write_model, write_vocabulary, PendingFile, SynthError, SynthSpec, Vocabulary, ARCHITECTURES,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("velollm-synth-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn real_model(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)", path.display());
    path
}

/// A small GPT-2-style vocabulary: enough for candle's tokenizer to build, `size` tokens.
fn test_vocabulary(size: usize) -> Vocabulary {
    let mut tokens = vec!["<|endoftext|>".to_string()];
    tokens.extend((b'!'..=b'~').map(|b| (b as char).to_string()));
    tokens.push("Ġ".into());
    let filler = size - tokens.len();
    tokens.extend((0..filler).map(|i| format!("w{i}")));
    let strings = |v: Vec<String>| MetadataValue::Array {
        len: v.len() as u64,
        items: Some(v.into_iter().map(MetadataValue::String).collect()),
    };
    let types: Vec<MetadataValue> = (0..size).map(|i| MetadataValue::I32(if i == 0 { 3 } else { 1 })).collect();
    let entries = vec![
        ("tokenizer.ggml.model".to_string(), MetadataValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), MetadataValue::String("smollm".into())),
        ("tokenizer.ggml.tokens".to_string(), strings(tokens)),
        ("tokenizer.ggml.token_type".to_string(), MetadataValue::Array { len: size as u64, items: Some(types) }),
        ("tokenizer.ggml.merges".to_string(), strings(vec!["Ġ w".into()])),
        ("tokenizer.ggml.bos_token_id".to_string(), MetadataValue::U32(0)),
        ("tokenizer.ggml.eos_token_id".to_string(), MetadataValue::U32(0)),
    ];
    Vocabulary::from_entries("test vocabulary", entries)
}

/// `like` with `layers` layers and only `vocab` embedding rows: every other shape as in the table.
fn small_spec(like: &str, quant: &str, layers: u32, vocab: u32) -> SynthSpec {
    let mut spec = SynthSpec::new(like, quant, Some(layers), 7).unwrap();
    spec.arch.vocab_size = vocab;
    spec
}

fn write(spec: &SynthSpec, vocab: &Vocabulary, path: &Path) -> velollm_synth::Written {
    check_replaceable(path).unwrap();
    write_model(spec, vocab, PendingFile::create(path).unwrap(), 2, None).unwrap()
}

/// Reads `path` back and checks it is exactly what `spec` planned.
fn assert_round_trip(spec: &SynthSpec, vocab: &Vocabulary, path: &Path, bytes: u64) {
    let read = GgufFile::read(path, ReadOptions { keep_arrays: true }).unwrap();
    assert_eq!(read.file_bytes, bytes);
    let want: BTreeMap<String, MetadataValue> = spec.metadata(vocab).unwrap().into_iter().collect();
    assert_eq!(read.metadata, want, "{}: metadata", spec.arch.name);
    let planned: Vec<_> = spec.tensors().into_iter().map(|t| (t.name, t.dims, t.ggml_type)).collect();
    let got: Vec<_> = read.tensors.iter().map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type)).collect();
    assert_eq!(got, planned, "{}: tensors", spec.arch.name);
    assert_eq!(read.get("general.synthetic").and_then(MetadataValue::as_bool), Some(true));
    assert_eq!(read.get_str("velollm.synthetic.like"), Some(spec.arch.name));
    assert_eq!(read.get_u64("velollm.synthetic.seed"), Some(spec.seed));
    assert!(read.get_str("general.name").unwrap().contains("synthetic"));
    assert_eq!(read.quantization(), spec.quant.name());
}

/// Runs a prompt of three tokens and one more step through candle; every logit must be finite, and they
/// must differ from each other (a model of zeros would pass the first check).
fn assert_finite_logits(path: &Path, vocab: usize) {
    let mut model = CandleModel::load(path, 64).unwrap_or_else(|e| panic!("candle loads {}: {e}", path.display()));
    for (tokens, position) in [(&[1u32, 2, 3][..], 0), (&[4][..], 3)] {
        let logits = model.forward(tokens, position).unwrap();
        assert_eq!(logits.len(), vocab);
        assert!(logits.iter().all(|l| l.is_finite()), "{}: non-finite logits", path.display());
        let (min, max) = logits.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
        assert!(max - min > 1e-3 && max.abs() < 1e3, "{}: logits from {min} to {max}", path.display());
    }
}

#[test]
fn every_architecture_round_trips_and_runs_finite() {
    let dir = scratch("archs");
    let vocab = test_vocabulary(300);
    for arch in ARCHITECTURES {
        let spec = small_spec(arch.name, "q4_0", 1, 512);
        let path = dir.join(format!("{}.gguf", arch.name));
        let written = write(&spec, &vocab, &path);
        assert_eq!(written.bytes, fs::metadata(&path).unwrap().len());
        assert_eq!(written.parameters, spec.parameter_count());
        assert_round_trip(&spec, &vocab, &path, written.bytes);
        assert_finite_logits(&path, 512);
        fs::remove_file(&path).unwrap();
    }
}

#[test]
fn every_type_runs_finite() {
    let dir = scratch("types");
    let vocab = test_vocabulary(300);
    for like in ["smollm2-135m", "qwen2.5-0.5b"] {
        for quant in ["q8_0", "f16"] {
            let spec = small_spec(like, quant, 2, 512);
            let path = dir.join(format!("{like}.{quant}.gguf"));
            let written = write(&spec, &vocab, &path);
            assert_round_trip(&spec, &vocab, &path, written.bytes);
            assert_finite_logits(&path, 512);
            fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn the_real_vocabulary_is_padded_and_otherwise_unchanged() {
    let source = real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let vocab = Vocabulary::read(&source).unwrap();
    assert_eq!(vocab.token_count(), 49152);
    assert_eq!(vocab.source, "SmolLM2-135M-Instruct.Q4_1.gguf");
    let padded: BTreeMap<String, MetadataValue> = vocab.padded(128_256).unwrap().into_iter().collect();
    let original: BTreeMap<String, MetadataValue> = vocab.entries().iter().cloned().collect();
    assert_eq!(padded.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>());
    for (key, value) in &original {
        let (Some(before), Some(after)) = (value.as_array(), padded[key].as_array()) else {
            assert_eq!(&padded[key], value, "{key} is carried over");
            continue;
        };
        match key.as_str() {
            "tokenizer.ggml.tokens" | "tokenizer.ggml.token_type" => {
                assert_eq!(after.len(), 128_256, "{key}");
                assert_eq!(&after[..before.len()], before, "{key}: the real entries come first, unchanged");
            }
            _ => assert_eq!(after, before, "{key} is carried over"),
        }
    }
    let tokens = padded["tokenizer.ggml.tokens"].as_array().unwrap();
    assert_eq!(tokens[49152], MetadataValue::String("[PAD49152]".into()));
    assert_eq!(tokens[128_255], MetadataValue::String("[PAD128255]".into()));
    assert_eq!(padded["tokenizer.ggml.token_type"].as_array().unwrap()[128_255], MetadataValue::I32(5));
    let err = vocab.padded(1000).unwrap_err().to_string();
    assert!(err.contains("49152 tokens, more than the 1000 embedding rows"), "{err}");

    // In a written file the tokenizer reads back exactly as padded, and candle's tokenizer accepts it.
    let dir = scratch("vocab");
    let spec = SynthSpec::new("smollm2-135m", "q4_0", Some(1), 1).unwrap();
    let path = dir.join("smollm2.gguf");
    let written = write(&spec, &vocab, &path);
    assert_round_trip(&spec, &vocab, &path, written.bytes);
    let header = GgufFile::read(&path, ReadOptions { keep_arrays: true }).unwrap();
    let tokenizer = velollm_candle::Tokenizer::from_gguf(&header).unwrap();
    assert_eq!(tokenizer.vocab_size(), 49152);
    // Seven tokens, as llama.cpp and candle tokenize this prompt with the real SmolLM2 file.
    assert_eq!(tokenizer.encode("Write a hello world program in Python").len(), 7);
}

#[test]
fn a_vocabulary_only_file_carries_the_tokenizer() {
    let dir = scratch("vocab-only");
    let vocab = Vocabulary::read(&real_model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let path = dir.join("vocab.gguf");
    let bytes = write_vocabulary(&vocab, PendingFile::create(&path).unwrap()).unwrap();
    assert!(bytes < 3_000_000, "{bytes} bytes");
    let again = Vocabulary::read(&path).unwrap();
    assert_eq!(again.source, "SmolLM2-135M-Instruct.Q4_1.gguf", "the origin is kept");
    assert_eq!(again.entries(), vocab.entries());
}

#[test]
fn the_same_seed_gives_the_same_file() {
    let dir = scratch("seed");
    let vocab = test_vocabulary(300);
    let a = small_spec("llama-3.2-1b", "q4_0", 1, 512);
    let mut b = a.clone();
    write(&a, &vocab, &dir.join("a.gguf"));
    write(&a, &vocab, &dir.join("a-again.gguf"));
    b.seed = 8;
    write(&b, &vocab, &dir.join("b.gguf"));
    let read = |name: &str| fs::read(dir.join(name)).unwrap();
    assert!(read("a.gguf") == read("a-again.gguf"), "same seed, different bytes");
    assert!(read("a.gguf") != read("b.gguf"), "different seeds, same bytes");
}

#[test]
fn only_synthetic_files_are_replaced() {
    let dir = scratch("replace");
    assert!(check_replaceable(&dir.join("absent.gguf")).is_ok());
    let junk = dir.join("notes.txt");
    fs::write(&junk, "not a model").unwrap();
    assert!(matches!(check_replaceable(&junk), Err(SynthError::WouldReplace(_))));
    let real = real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let err = check_replaceable(&real).unwrap_err().to_string();
    assert!(err.starts_with("refusing to replace") && err.contains("not a synthetic model"), "{err}");
    let synthetic = dir.join("synthetic.gguf");
    write(&small_spec("smollm2-135m", "q4_0", 1, 512), &test_vocabulary(300), &synthetic);
    assert!(check_replaceable(&synthetic).is_ok());
}
