//! The tokenizer of a synthetic file: a real model's vocabulary, padded to the architecture's size.
//!
//! llama.cpp requires the token count to equal the rows of the embedding matrix, and both engines need a
//! working tokenizer, so the file carries every `tokenizer.*` key of a real GGUF model (tokens, types, scores,
//! merges, special token ids, flags) with unused `[PAD<id>]` tokens appended, as Qwen's own conversions pad
//! their vocabularies.

use std::path::Path;

use velollm_gguf::{GgufFile, MetadataValue, ReadOptions};

use crate::SynthError;

const TOKENS: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPES: &str = "tokenizer.ggml.token_type";
const SCORES: &str = "tokenizer.ggml.scores";
/// `tokenizer.ggml.token_type` of a padding token (llama.cpp's `LLAMA_TOKEN_TYPE_UNUSED`).
const TYPE_UNUSED: i32 = 5;
/// The key naming the model a vocabulary came from, kept through synthetic and vocabulary-only files.
pub(crate) const VOCAB_FROM: &str = "velollm.synthetic.vocab_from";

/// A tokenizer read from a GGUF file.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// The model the vocabulary comes from (its file name, or what the file says it was copied from).
    pub source: String,
    /// `tokenizer.*` keys with their values (arrays with their items).
    entries: Vec<(String, MetadataValue)>,
    token_count: usize,
}

impl Vocabulary {
    /// Reads the tokenizer of any GGUF file that has one (a model, a synthetic model, a vocabulary-only file).
    pub fn read(path: &Path) -> Result<Vocabulary, SynthError> {
        let file = GgufFile::read(path, ReadOptions { keep_arrays: true })?;
        let fail = |reason: String| SynthError::Vocabulary { path: path.display().to_string(), reason };
        let entries: Vec<(String, MetadataValue)> = file
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if file.get_str("tokenizer.ggml.model").is_none() {
            return Err(fail("it has no tokenizer (no tokenizer.ggml.model)".into()));
        }
        let tokens = file.get(TOKENS).and_then(MetadataValue::as_array).ok_or_else(|| fail(format!("no {TOKENS}")))?;
        if tokens.is_empty() || !tokens.iter().all(|t| matches!(t, MetadataValue::String(_))) {
            return Err(fail(format!("{TOKENS} is not a list of strings")));
        }
        for key in [TOKEN_TYPES, SCORES] {
            if let Some(value) = file.get(key) {
                let len = value.as_array().map_or(0, <[MetadataValue]>::len);
                if len != tokens.len() {
                    return Err(fail(format!("{} tokens but {len} entries in {key}", tokens.len())));
                }
            }
        }
        let file_name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        let source = file.get_str(VOCAB_FROM).map_or(file_name, str::to_string);
        Ok(Vocabulary { source, token_count: tokens.len(), entries })
    }

    /// A vocabulary from metadata entries (tests).
    pub fn from_entries(source: &str, entries: Vec<(String, MetadataValue)>) -> Vocabulary {
        let token_count =
            entries.iter().find(|(k, _)| k == TOKENS).and_then(|(_, v)| v.as_array()).map_or(0, <[MetadataValue]>::len);
        Vocabulary { source: source.to_string(), entries, token_count }
    }

    pub fn token_count(&self) -> usize {
        self.token_count
    }

    /// The tokenizer keys as they are.
    pub fn entries(&self) -> &[(String, MetadataValue)] {
        &self.entries
    }

    /// The tokenizer keys with the vocabulary padded to `size` tokens: `[PAD<id>]` tokens of type unused,
    /// score 0.
    pub fn padded(&self, size: usize) -> Result<Vec<(String, MetadataValue)>, SynthError> {
        if size < self.token_count {
            return Err(SynthError::VocabularyTooLarge { origin: self.source.clone(), tokens: self.token_count, size });
        }
        let pad = self.token_count..size;
        Ok(self
            .entries
            .iter()
            .map(|(key, value)| {
                let extra: Option<Vec<MetadataValue>> = match key.as_str() {
                    TOKENS => Some(pad.clone().map(|id| MetadataValue::String(format!("[PAD{id}]"))).collect()),
                    TOKEN_TYPES => Some(pad.clone().map(|_| like_first(value, TYPE_UNUSED.into(), 0.0)).collect()),
                    SCORES => Some(pad.clone().map(|_| like_first(value, 0, 0.0)).collect()),
                    _ => None,
                };
                match (extra, value.as_array()) {
                    (Some(extra), Some(items)) if !extra.is_empty() => {
                        let mut items = items.to_vec();
                        items.extend(extra);
                        (key.clone(), MetadataValue::Array { len: items.len() as u64, items: Some(items) })
                    }
                    _ => (key.clone(), value.clone()),
                }
            })
            .collect())
    }
}

/// `int` or `float` as a value of the same type as the first item of the array `like` (token types are
/// I32 in llama.cpp's files, scores F32, but a file may use another width).
fn like_first(like: &MetadataValue, int: i64, float: f64) -> MetadataValue {
    match like.as_array().and_then(<[MetadataValue]>::first) {
        Some(MetadataValue::U8(_)) => MetadataValue::U8(int as u8),
        Some(MetadataValue::I8(_)) => MetadataValue::I8(int as i8),
        Some(MetadataValue::U16(_)) => MetadataValue::U16(int as u16),
        Some(MetadataValue::I16(_)) => MetadataValue::I16(int as i16),
        Some(MetadataValue::U32(_)) => MetadataValue::U32(int as u32),
        Some(MetadataValue::U64(_)) => MetadataValue::U64(int as u64),
        Some(MetadataValue::I64(_)) => MetadataValue::I64(int),
        Some(MetadataValue::F64(_)) => MetadataValue::F64(float),
        Some(MetadataValue::F32(_)) => MetadataValue::F32(float as f32),
        _ => MetadataValue::I32(int as i32),
    }
}
