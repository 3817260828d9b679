//! The one small trait pair every engine implements.
//!
//! `Backend::load` turns a model file into a `Session`; `Session::generate` turns a request into a
//! [`RawSample`]. Backends never compute rates and never print: metrics come from [`crate::IterationMetrics`]
//! so that every engine is measured by the same formulas.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::{EngineParams, ModelIdentity, RawSample, ServerRecord};

/// Why a backend could not do what was asked. Messages are one line and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("failed to load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error(
        "prompt of {prompt_tokens} tokens plus {max_tokens} generated tokens does not fit the context of \
         {ctx_size} tokens; raise --ctx-size or shorten the prompt"
    )]
    ContextTooSmall { prompt_tokens: u64, max_tokens: u32, ctx_size: u32 },
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("interrupted")]
    Cancelled,
    /// A server backend's own one-line message (it names the server and what to do next).
    #[error("{0}")]
    Server(String),
}

/// What engine measured, for the environment record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The engine's version (e.g. llama.cpp's ggml version and commit).
    pub version: Option<String>,
    /// The engine's description of its build (SIMD features, compiled-in devices).
    pub build: Option<String>,
}

/// One request: the prompt and how many tokens to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRequest {
    pub prompt: String,
    pub max_tokens: u32,
    pub seed: u32,
    pub stop_at_eos: bool,
}

/// An engine that can load models.
pub trait Backend: Send + Sync {
    /// The name users select it by (`-b NAME`).
    fn name(&self) -> &'static str;

    /// Whether `load` takes a local model file (in-process engines: the runner resolves and identifies the
    /// file first) or a name the backend's server knows (server backends: `model` is that name, and the
    /// session describes the model through [`Session::model_identity`]).
    fn needs_local_file(&self) -> bool {
        true
    }

    /// For server backends: checks that the server answers, before anything else happens, and returns
    /// its version. In-process engines have nothing to check.
    fn check_available(&self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }

    /// Loads `model` with `params`. The load is timed by the backend (file to ready context) and reported
    /// by [`Session::load_ms`], never as part of an iteration.
    fn load(&self, model: &Path, params: &EngineParams) -> Result<Box<dyn Session>, BackendError>;
}

/// A loaded model with a context, ready to serve requests one at a time.
pub trait Session: Send {
    /// Milliseconds from opening the file to a context ready for the first request.
    fn load_ms(&self) -> f64;

    fn engine_info(&self) -> EngineInfo;

    /// The context size in tokens.
    fn context_size(&self) -> u32;

    /// Tokens the prompt occupies, exactly as [`Session::generate`] will evaluate it. Lets the runner
    /// reject a prompt that does not fit before any benchmark starts.
    fn count_prompt_tokens(&mut self, prompt: &str) -> Result<u64, BackendError>;

    /// Runs one request from an empty cache. `cancel` is polled between tokens; when it is set the
    /// request ends with [`BackendError::Cancelled`].
    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError>;

    /// Decodes token ids to text (outside any timed region).
    fn detokenize(&mut self, token_ids: &[u32]) -> Result<String, BackendError>;

    /// The text a sample generated (outside any timed region). Server samples carry their text.
    fn generated_text(&mut self, sample: &RawSample) -> Option<String> {
        match &sample.server {
            Some(server) => Some(server.chunks.iter().map(|c| c.text.as_str()).collect()),
            None => self.detokenize(&sample.token_ids).ok(),
        }
    }

    /// Server backends: the model as the server describes it (in-process engines are described from the
    /// file by the runner, and return `None`).
    fn model_identity(&self) -> Option<ModelIdentity> {
        None
    }

    /// Server backends: how the server was reached and what it reported at load.
    fn server_record(&self) -> Option<ServerRecord> {
        None
    }
}
