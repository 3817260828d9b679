//! A tokenizer built from a GGUF file's own metadata, producing the same token ids as llama.cpp's
//! `llama_tokenize(text, add_special = true, parse_special = true)`.
//!
//! Two vocabulary kinds are supported, named by `tokenizer.ggml.model`:
//! - `gpt2`: byte-level BPE. Text is split into words by the pre-tokenizer named in `tokenizer.ggml.pre`,
//!   each word's UTF-8 bytes are mapped to GPT-2's printable byte alphabet, and adjacent symbols are merged
//!   lowest merge rank first (ties: leftmost first).
//! - `llama`: SentencePiece as llama.cpp runs it: spaces become `▁` (with a leading one when
//!   `add_space_prefix` asks), code points are merged highest token score first (ties: leftmost first) as
//!   long as the merged text is a token, and what remains unknown falls back to `<0xXX>` byte tokens.
//!
//! In both, control, user-defined and unknown tokens written out in the text (`<|im_start|>`, `<bos>`) are
//! cut out first, longest text first, and become their token directly.

mod bpe;
mod pretokenize;
mod spm;
mod unicode;

use std::collections::HashMap;

use velollm_gguf::{GgufFile, MetadataValue};

pub(crate) use pretokenize::PreTokenizer;

/// Why a vocabulary could not be turned into a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the GGUF file has no {0} (it carries no usable vocabulary)")]
    Missing(&'static str),
    #[error("unsupported tokenizer model '{0}' (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("unsupported BPE pre-tokenizer '{name}' (supported: {supported})")]
    UnsupportedPre { name: String, supported: &'static str },
    #[error("invalid vocabulary: {0}")]
    Invalid(String),
}

/// `tokenizer.ggml.token_type` values.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// Token texts llama.cpp ends generation on (its EOG list, `llama-vocab.cpp`).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "</s>",
    "<|fim_pad|>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// Token texts llama.cpp makes control tokens whatever their declared type: its EOG list and the
/// fill-in-the-middle tokens.
const CONTROL_LOOKING: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "</s>",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<PRE>",
    "▁<PRE>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<SUF>",
    "▁<SUF>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<MID>",
    "▁<MID>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

#[derive(Debug, Clone)]
enum Kind {
    Bpe {
        pre: PreTokenizer,
        merge_ranks: HashMap<String, u32>,
        byte_chars: Box<[char; 256]>,
        char_bytes: HashMap<char, u8>,
    },
    Spm {
        add_space_prefix: bool,
    },
}

/// A vocabulary and the rules to turn text into its token ids.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    kind: Kind,
    tokens: Vec<String>,
    token_types: Vec<i32>,
    scores: Vec<f32>,
    token_ids: HashMap<String, u32>,
    /// Control, user-defined and unknown tokens, longest text first: matched in text before anything else.
    special_tokens: Vec<u32>,
    /// Tokens that end generation, as llama.cpp's `llama_vocab_is_eog` decides.
    end_of_generation: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// One piece of the input: text still to tokenize, or a special token already recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl Tokenizer {
    /// Builds the tokenizer from a header read with `keep_arrays: true`.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file.get_str("tokenizer.ggml.model").ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
        let tokens: Vec<String> =
            string_array(file, "tokenizer.ggml.tokens")?.ok_or(TokenizerError::Missing("tokenizer.ggml.tokens"))?;
        let n_tokens = tokens.len();
        let token_types: Vec<i32> = match file.get("tokenizer.ggml.token_type").and_then(MetadataValue::as_array) {
            Some(items) => items.iter().map(|v| v.as_u64().map_or(TYPE_NORMAL, |t| t as i32)).collect(),
            None => vec![TYPE_NORMAL; n_tokens],
        };
        let scores: Vec<f32> = match file.get("tokenizer.ggml.scores").and_then(MetadataValue::as_array) {
            Some(items) => items.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
            None => vec![0.0; n_tokens],
        };
        if token_types.len() != n_tokens || scores.len() != n_tokens {
            return Err(TokenizerError::Invalid(format!(
                "{n_tokens} tokens but {} token types and {} scores",
                token_types.len(),
                scores.len()
            )));
        }
        // Later duplicates win, as in llama.cpp's text-to-id map.
        let token_ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let id_key =
            |key: &str| file.get_u64(key).and_then(|id| u32::try_from(id).ok()).filter(|&id| (id as usize) < n_tokens);
        let flag = |key: &str| file.get(key).and_then(MetadataValue::as_bool);

        let (kind, default_add_bos, bos, eos) = match model {
            "gpt2" => {
                let pre_name = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
                let pre = PreTokenizer::from_gguf_name(pre_name).ok_or_else(|| TokenizerError::UnsupportedPre {
                    name: pre_name.to_string(),
                    supported: pretokenize::SUPPORTED_PRE,
                })?;
                let merges = string_array(file, "tokenizer.ggml.merges")?
                    .ok_or(TokenizerError::Missing("tokenizer.ggml.merges"))?;
                let mut merge_ranks = HashMap::with_capacity(merges.len());
                for (rank, merge) in merges.into_iter().enumerate() {
                    // The pair splits at the first space after the first byte; the first listing of a pair wins.
                    if merge.as_bytes().iter().skip(1).any(|&b| b == b' ') {
                        merge_ranks.entry(merge).or_insert(rank as u32);
                    }
                }
                let byte_chars = Box::new(unicode::byte_to_char_table());
                let char_bytes = byte_chars.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
                let llama3_like = matches!(pre, PreTokenizer::Llama3 { max_digits: 3 });
                // llama.cpp's BPE defaults: BOS 11 / EOS 11 (GPT-2's <|endoftext|>) unless the file says otherwise.
                (
                    Kind::Bpe { pre, merge_ranks, byte_chars, char_bytes },
                    llama3_like,
                    id_key("tokenizer.ggml.bos_token_id").or(Some(11).filter(|&i| (i as usize) < n_tokens)),
                    id_key("tokenizer.ggml.eos_token_id").or(Some(11).filter(|&i| (i as usize) < n_tokens)),
                )
            }
            "llama" => {
                let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
                let bos = id_key("tokenizer.ggml.bos_token_id").or(Some(1).filter(|&i| (i as usize) < n_tokens));
                let eos = id_key("tokenizer.ggml.eos_token_id").or(Some(2).filter(|&i| (i as usize) < n_tokens));
                (Kind::Spm { add_space_prefix }, true, bos, eos)
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos);
        let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::Invalid("the vocabulary asks for a BOS token but has none".into()));
        }

        // llama.cpp also treats end-of-turn and fill-in-the-middle tokens as control tokens by their text,
        // whatever type the file gives them (Qwen2.5's `</s>` is typed normal, yet `</s>` in text becomes it).
        let control_looking = |id: usize| CONTROL_LOOKING.contains(&tokens[id].as_str());
        let mut special_tokens: Vec<u32> = (0..n_tokens)
            .filter(|&id| {
                (matches!(token_types[id], TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN) || control_looking(id))
                    && !tokens[id].is_empty()
            })
            .map(|id| id as u32)
            .collect();
        special_tokens.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].len()));
        let mut end_of_generation: Vec<u32> = (0..n_tokens)
            .filter(|&id| END_OF_GENERATION.contains(&tokens[id].as_str()))
            .map(|id| id as u32)
            .chain(eos)
            .chain(id_key("tokenizer.ggml.eot_token_id"))
            .chain(id_key("tokenizer.ggml.eom_token_id"))
            .collect();
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        Ok(Tokenizer {
            kind,
            tokens,
            token_types,
            scores,
            token_ids,
            special_tokens,
            end_of_generation,
            bos,
            eos,
            add_bos,
            add_eos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_token(&self) -> Option<u32> {
        self.bos
    }

    /// Whether encoding starts with BOS (`tokenizer.ggml.add_bos_token`, or the model type's default).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    pub fn eos_token(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `id` ends generation: the EOS token or one of the end-of-turn tokens llama.cpp recognises.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// The token ids of `text`, with BOS/EOS added when the vocabulary asks for them and special-token text
    /// recognised: the same as llama.cpp's `tokenize(text, add_special = true, parse_special = true)`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let fragments = self.split_special(text);
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if self.add_bos {
            ids.extend(self.bos);
        }
        match &self.kind {
            Kind::Bpe { pre, merge_ranks, byte_chars, .. } => {
                let ignore_merges = matches!(pre, PreTokenizer::Llama3 { max_digits: 3 });
                let merger = bpe::Merger { token_ids: &self.token_ids, merge_ranks, byte_chars, ignore_merges };
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(text) => {
                            for word in pre.split(text) {
                                merger.encode_word(word, &mut ids);
                            }
                        }
                        Fragment::Token(id) => ids.push(id),
                    }
                }
            }
            Kind::Spm { add_space_prefix } => {
                let merger = spm::Merger { token_ids: &self.token_ids, scores: &self.scores };
                // A space is prefixed to text at the start and after each special token.
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(text) => {
                            let mut escaped = String::with_capacity(text.len() + 3);
                            if *add_space_prefix && after_special {
                                escaped.push('▁');
                            }
                            escaped.extend(text.chars().map(|c| if c == ' ' { '▁' } else { c }));
                            merger.encode(&escaped, &mut ids);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            ids.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if self.add_eos {
            ids.extend(self.eos);
        }
        ids
    }

    /// Cuts special-token text out of `text`, longest token first, as llama.cpp's `tokenizer_st_partition`.
    fn split_special<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.special_tokens {
            let needle = self.tokens[id as usize].as_str();
            if !fragments.iter().any(|f| matches!(f, Fragment::Text(t) if t.contains(needle))) {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The text of `ids`, as llama.cpp's detokenizer without special tokens' text: control tokens print
    /// nothing, byte tokens their byte.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(text) = self.tokens.get(id as usize) else { continue };
            match self.token_types[id as usize] {
                TYPE_CONTROL => {}
                TYPE_BYTE => bytes.extend(parse_byte_token(text)),
                TYPE_USER_DEFINED => bytes.extend_from_slice(text.as_bytes()),
                _ => match &self.kind {
                    Kind::Bpe { char_bytes, .. } => {
                        for c in text.chars() {
                            match char_bytes.get(&c) {
                                Some(&b) => bytes.push(b),
                                None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                            }
                        }
                    }
                    Kind::Spm { .. } => bytes.extend_from_slice(text.replace('▁', " ").as_bytes()),
                },
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `<0x41>` → 0x41.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

fn string_array(file: &GgufFile, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(value) = file.get(key) else { return Ok(None) };
    let items = value.as_array().ok_or_else(|| TokenizerError::Invalid(format!("{key} is not an array of strings")))?;
    items
        .iter()
        .map(|item| item.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
        .map(Some)
        .ok_or_else(|| TokenizerError::Invalid(format!("{key} holds a value that is not a string")))
}
