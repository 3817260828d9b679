//! The GGUF-metadata tokenizer against llama.cpp's own, on the three real test models: the same text must
//! give the same ids as `llama_tokenize(text, add_special = true, parse_special = true)`, which is what the
//! llamacpp backend evaluates.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use velollm_candle::Tokenizer;
use velollm_gguf::{GgufFile, ReadOptions};

/// Texts covering what the tokenizers treat differently: the suite's prompts, code, digits, scripts,
/// emoji, whitespace runs, contractions and special-token text.
const CASES: &[(&str, &str)] = &[
    ("suite short", "Write a hello world program in Python"),
    ("suite medium", "Explain how neural networks learn through backpropagation in detail"),
    ("suite code", "Write a Rust function to compute the Fibonacci sequence using dynamic programming"),
    (
        "rust code",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!(\"{v:?}\");\n}\n",
    ),
    ("python code", "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n\treturn -x\n"),
    ("digits", "12345678"),
    ("numbers in text", "Pi is 3.14159, not 1,000,000 or -42e10."),
    ("accents", "Café naïve résumé über straße Ångström"),
    ("combining marks", "e\u{301}te\u{301} n\u{303}o"),
    ("cjk", "中文测试：你好，世界！日本語のテキストと한국어"),
    ("emoji", "I ❤️ 🦀 and 👩‍👩‍👧 🇫🇷!"),
    ("other scripts", "Привет мир. مرحبا بالعالم. नमस्ते"),
    ("whitespace runs", "  two leading,   three inside,\t\ttabs\n\n\nnewlines \r\n crlf   "),
    ("only spaces", "     "),
    ("only newlines", "\n\n\n"),
    ("unicode spaces", "a\u{a0}b\u{3000}c\u{2009}d"),
    ("contractions", "I'M sure they've said it's WE'LL, can't they'd"),
    ("punctuation", "!!!???...--- $100 + <b>=</b> ^~| @home #tag `code`"),
    ("repeats", "aaaaaaaaaaaaaaaaaaaa ================ ////"),
    (
        "chatml",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    ),
    ("gemma turns", "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n"),
    ("bos and eos text", "<bos>text<eos> <|endoftext|> <s></s>"),
    ("control characters", "a\u{1}b\u{7f}c\u{0}d"),
    ("empty", ""),
];

fn llama_backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
        LlamaBackend::init().expect("llama.cpp initialises")
    })
}

/// Every case where the two tokenizers disagree, as a readable line.
fn mismatches(path: &Path) -> Vec<String> {
    let header = GgufFile::read(path, ReadOptions { keep_arrays: true }).expect("GGUF header");
    let ours = Tokenizer::from_gguf(&header).expect("tokenizer from metadata");
    let params = LlamaModelParams::default().with_vocab_only(true);
    let model = LlamaModel::load_from_file(llama_backend(), path, &params).expect("llama.cpp loads the vocabulary");
    let mut found = Vec::new();
    for (name, text) in CASES {
        let expected: Vec<u32> =
            model.vocab().tokenize(text.as_bytes(), true, true).iter().map(|t| t.0 as u32).collect();
        let actual = ours.encode(text);
        if actual != expected {
            found.push(format!("{name} ({text:?}):\n  llama.cpp {expected:?}\n  velollm   {actual:?}"));
        }
    }
    found
}

fn assert_same_ids(file: &str) {
    let found = mismatches(&common::model(file));
    assert!(found.is_empty(), "{file}: {} of {} cases differ:\n{}", found.len(), CASES.len(), found.join("\n"));
}

#[test]
fn smollm2_gpt2_bpe_smollm_pre_matches_llamacpp() {
    assert_same_ids(common::SMOLLM2);
}

#[test]
fn qwen25_gpt2_bpe_qwen2_pre_matches_llamacpp() {
    assert_same_ids(common::QWEN25);
}

#[test]
fn gemma3_sentencepiece_matches_llamacpp() {
    assert_same_ids(common::GEMMA3);
}

#[test]
fn decode_inverts_encode_on_plain_text() {
    for file in [common::SMOLLM2, common::QWEN25, common::GEMMA3] {
        let header = GgufFile::read(&common::model(file), ReadOptions { keep_arrays: true }).unwrap();
        let tokenizer = Tokenizer::from_gguf(&header).unwrap();
        let text = "Café 中文 🦀 x = 12345;\n\tdone";
        let ids = tokenizer.encode(text);
        assert_eq!(tokenizer.decode(&ids), text, "{file}");
    }
}
