//! The `ollama` backend: a running Ollama server measured over its HTTP API, and Ollama's on-disk model
//! store, so that the in-process engines can run the very same GGUF file.
//!
//! - [`client`]: a blocking HTTP client for the endpoints a benchmark needs (`/api/version`, `/api/tags`,
//!   `/api/show`, `/api/ps`, streaming `/api/generate`). Chunk arrival times are read where the bytes arrive.
//! - [`backend`]: [`OllamaBackend`] / [`OllamaSession`], the `Backend`/`Session` pair. Like every backend it
//!   records timestamps and the server's counters only; rates are derived in `velollm-core`.
//! - [`store`]: `name:tag` → `manifests/…` → the GGUF blob in Ollama's model store.
//! - [`url`]: `--ollama-url` / `OLLAMA_HOST` in any of the forms Ollama accepts.
//!
//! The protocol is implemented from Ollama's documentation (docs/ollama.md says how it is tested).

pub mod backend;
pub mod client;
pub mod store;
pub mod url;

pub use backend::{ExplicitOptions, OllamaBackend, OllamaSettings};
pub use client::OllamaError;
pub use store::{parse_model_name, resolve_in_store, store_roots, ModelName, StoreModel};
pub use url::{base_url, DEFAULT_URL};

/// The prefix that marks a model reference as an Ollama name (`ollama:llama3.2:3b`).
pub const REFERENCE_PREFIX: &str = "ollama:";

/// The Ollama model name in `reference`: without its `ollama:` prefix, if any.
pub fn model_name(reference: &str) -> &str {
    reference.strip_prefix(REFERENCE_PREFIX).unwrap_or(reference)
}
