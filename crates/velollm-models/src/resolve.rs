//! Model references, resolved to a local GGUF file and identified from the file itself:
//! - a path to a GGUF file;
//! - the name of one of the project's models (`models/manifest.tsv`);
//! - an Ollama name (`ollama:llama3.2:3b`, or `llama3.2:3b`: any name with a tag), found in Ollama's model
//!   store so the in-process engines run the very file Ollama serves (feature `ollama`);
//! - `hf:ORG/REPO/FILE.gguf[@REVISION]`, from the Hugging Face cache or downloaded (feature `hf`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::manifest::{known_models, model_dirs};
use crate::ModelError;

/// A model reference resolved to a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    /// Ollama's digest when the file came from Ollama's model store.
    pub digest: Option<String>,
}

/// Resolves a model reference to a file path (see [`resolve_model_source`]).
pub fn resolve_model(reference: &str) -> Result<PathBuf, ModelError> {
    resolve_model_source(reference, false, &AtomicBool::new(false)).map(|resolved| resolved.path)
}

/// Resolves any model reference (module docs) to a local file. `show_progress` draws a progress bar for a
/// Hugging Face download; `cancel` is checked before and after it (a download in progress is ended by the
/// CLI's interrupt handling).
pub fn resolve_model_source(
    reference: &str,
    show_progress: bool,
    cancel: &AtomicBool,
) -> Result<ResolvedModel, ModelError> {
    let _ = show_progress;
    if cancel.load(Ordering::Relaxed) {
        return Err(ModelError::Interrupted);
    }
    if reference.starts_with("hf:") {
        #[cfg(feature = "hf")]
        return crate::hf::resolve(reference, show_progress).map(|path| ResolvedModel { path, digest: None });
        #[cfg(not(feature = "hf"))]
        return Err(ModelError::Invalid(format!(
            "{reference}: hf: references need velollm built with the `hf` feature"
        )));
    }
    let is_ollama_name = reference.starts_with("ollama:")
        || (reference.contains(':') && !reference.ends_with(".gguf") && !Path::new(reference).exists());
    if is_ollama_name {
        return resolve_ollama_name(reference);
    }
    resolve_local(reference).map(|path| ResolvedModel { path, digest: None })
}

#[cfg(feature = "ollama")]
fn resolve_ollama_name(reference: &str) -> Result<ResolvedModel, ModelError> {
    let found = velollm_ollama::resolve_in_store(reference).map_err(|e| ModelError::Invalid(e.to_string()))?;
    Ok(ResolvedModel { path: found.path, digest: Some(found.digest) })
}

#[cfg(not(feature = "ollama"))]
fn resolve_ollama_name(reference: &str) -> Result<ResolvedModel, ModelError> {
    Err(ModelError::Invalid(format!(
        "{reference} looks like an Ollama model name; resolving it needs velollm built with the `ollama` feature"
    )))
}

/// Paths and the project's model names. Existing paths are taken as they are (the GGUF reader then says
/// what is wrong with them); names of known models map into [`model_dir`].
fn resolve_local(reference: &str) -> Result<PathBuf, ModelError> {
    let as_path = Path::new(reference);
    if as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    let known = known_models();
    if let Some(model) = known.iter().find(|m| m.name == reference || m.file == reference) {
        let dirs = model_dirs();
        if let Some(path) = dirs.iter().map(|dir| dir.join(model.file)).find(|path| path.is_file()) {
            return Ok(path);
        }
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(ModelError::Missing {
            reference: reference.to_string(),
            file: model.file.to_string(),
            searched: searched.join(", "),
            fetch_command: fetch_command(model.name),
        });
    }
    let looks_like_path = reference.contains('/') || reference.ends_with(".gguf");
    if looks_like_path {
        return Err(ModelError::Invalid(format!("model file not found: {reference}")));
    }
    let names: Vec<&str> = known.iter().map(|m| m.name).collect();
    Err(ModelError::Invalid(format!(
        "model '{reference}' is neither a file nor a known model name ({})",
        names.join(", ")
    )))
}

/// How a user gets a missing model: `velollm fetch NAME`, or, in a build without the `fetch` feature, the
/// script of a clone.
fn fetch_command(name: &str) -> String {
    if cfg!(feature = "fetch") {
        format!("velollm fetch {name}")
    } else {
        format!("scripts/fetch-models.sh {name} in a clone of velollm (this build has no `fetch` feature)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_references_say_what_is_known() {
        let err = resolve_model("no-such-model").unwrap_err().to_string();
        assert!(err.contains("smollm2-135m"), "{err}");
        let err = resolve_model("/nonexistent/m.gguf").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
