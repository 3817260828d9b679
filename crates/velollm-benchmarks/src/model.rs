//! Model references, resolved to a local GGUF file and identified from the file itself:
//! - a path to a GGUF file;
//! - the name of one of the project's models (`models/manifest.tsv`);
//! - an Ollama name (`ollama:llama3.2:3b`, or `llama3.2:3b`: any name with a tag), found in Ollama's model
//!   store so the in-process engines run the very file Ollama serves (feature `ollama`);
//! - `hf:ORG/REPO/FILE.gguf[@REVISION]`, from the Hugging Face cache or downloaded (feature `hf`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use velollm_core::ModelIdentity;
use velollm_gguf::{GgufFile, ReadOptions};

use crate::BenchError;

/// The manifest of the project's models, compiled in so the binary knows their names.
const MANIFEST: &str = include_str!("../../../models/manifest.tsv");

/// The model benchmarked when none is given.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// The model the `ollama` backend benchmarks when none is given (the benchmarking guide's).
pub const DEFAULT_OLLAMA_MODEL: &str = "llama3.2:3b";

/// The default model of a backend: a server benchmarks a model it can pull, in-process engines the
/// project's own small model.
pub fn default_model_for(backend: &str) -> &'static str {
    match backend {
        "ollama" => DEFAULT_OLLAMA_MODEL,
        _ => DEFAULT_MODEL,
    }
}

/// One entry of `models/manifest.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    /// Where it is published: space-separated `PACKAGE==VERSION:MEMBER` wheel members, concatenated in order.
    pub parts: &'static str,
}

/// The project's models, in manifest order.
pub fn known_models() -> Vec<KnownModel> {
    MANIFEST
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut cols = line.split('\t');
            Some(KnownModel {
                name: cols.next()?,
                file: cols.next()?,
                bytes: cols.next()?.parse().ok()?,
                sha256: cols.next()?,
                parts: cols.next().unwrap_or(""),
            })
        })
        .collect()
}

/// The directories a model name is looked up in, in order: `./models` (a clone of the repository),
/// `$VELOLLM_MODELS`, then the user's data directory (`$XDG_DATA_HOME/velollm/models`, by default
/// `~/.local/share/velollm/models`), where `velollm fetch` puts models for an installed binary.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("models")];
    if let Some(dir) = std::env::var_os("VELOLLM_MODELS").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    dirs.extend(user_model_dir());
    dirs
}

/// `$XDG_DATA_HOME/velollm/models`, else `$HOME/.local/share/velollm/models`.
pub fn user_model_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("XDG_DATA_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".local/share")))
        .map(|data| data.join("velollm").join("models"))
}

/// Where `velollm fetch` puts a model: `$VELOLLM_MODELS` when set, `./models` inside a clone of the
/// repository, else the user's data directory.
pub fn fetch_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VELOLLM_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if Path::new("models/manifest.tsv").is_file() {
        return PathBuf::from("models");
    }
    user_model_dir().unwrap_or_else(|| PathBuf::from("models"))
}

/// A model reference resolved to a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    /// Ollama's digest when the file came from Ollama's model store.
    pub digest: Option<String>,
}

/// Resolves a model reference to a file path (see [`resolve_model_source`]).
pub fn resolve_model(reference: &str) -> Result<PathBuf, BenchError> {
    resolve_model_source(reference, false, &AtomicBool::new(false)).map(|resolved| resolved.path)
}

/// Resolves any model reference (module docs) to a local file. `show_progress` draws a progress bar for a
/// Hugging Face download; `cancel` is checked before and after it (a download in progress is ended by the
/// CLI's interrupt handling).
pub fn resolve_model_source(
    reference: &str,
    show_progress: bool,
    cancel: &AtomicBool,
) -> Result<ResolvedModel, BenchError> {
    let _ = show_progress;
    if cancel.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted);
    }
    if reference.starts_with("hf:") {
        #[cfg(feature = "hf")]
        return crate::hf::resolve(reference, show_progress).map(|path| ResolvedModel { path, digest: None });
        #[cfg(not(feature = "hf"))]
        return Err(BenchError::Model(format!("{reference}: hf: references need velollm built with the `hf` feature")));
    }
    let is_ollama_name = reference.starts_with("ollama:")
        || (reference.contains(':') && !reference.ends_with(".gguf") && !Path::new(reference).exists());
    if is_ollama_name {
        return resolve_ollama_name(reference);
    }
    resolve_local(reference).map(|path| ResolvedModel { path, digest: None })
}

#[cfg(feature = "ollama")]
fn resolve_ollama_name(reference: &str) -> Result<ResolvedModel, BenchError> {
    let found = velollm_ollama::resolve_in_store(reference).map_err(|e| BenchError::Model(e.to_string()))?;
    Ok(ResolvedModel { path: found.path, digest: Some(found.digest) })
}

#[cfg(not(feature = "ollama"))]
fn resolve_ollama_name(reference: &str) -> Result<ResolvedModel, BenchError> {
    Err(BenchError::Model(format!(
        "{reference} looks like an Ollama model name; resolving it needs velollm built with the `ollama` feature"
    )))
}

/// Paths and the project's model names. Existing paths are taken as they are (the GGUF reader then says
/// what is wrong with them); names of known models map into [`model_dir`].
fn resolve_local(reference: &str) -> Result<PathBuf, BenchError> {
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
        return Err(BenchError::ModelMissing {
            reference: reference.to_string(),
            file: model.file.to_string(),
            searched: searched.join(", "),
            fetch_command: fetch_command(model.name),
        });
    }
    let looks_like_path = reference.contains('/') || reference.ends_with(".gguf");
    if looks_like_path {
        return Err(BenchError::Model(format!("model file not found: {reference}")));
    }
    let names: Vec<&str> = known.iter().map(|m| m.name).collect();
    Err(BenchError::Model(format!(
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

/// Reads and checks the file's header, hashes it, and describes it. Fails on a missing, foreign or
/// truncated file before any engine sees it. Hashing a multi-GB file polls `cancel` between megabytes.
pub fn identify_model(reference: &str, path: &Path, cancel: &AtomicBool) -> Result<ModelIdentity, BenchError> {
    let gguf = GgufFile::read(path, ReadOptions::default()).map_err(|e| BenchError::Model(e.to_string()))?;
    let sha256 = match sha256_file(path, cancel) {
        Ok(Some(hash)) => hash,
        Ok(None) => return Err(BenchError::Interrupted),
        Err(e) => return Err(BenchError::Model(format!("cannot read {}: {e}", path.display()))),
    };
    let synthetic = gguf.get("general.synthetic").and_then(|v| v.as_bool()).unwrap_or(false);
    Ok(ModelIdentity {
        reference: reference.to_string(),
        path: path.display().to_string(),
        bytes: gguf.file_bytes,
        sha256: Some(sha256),
        architecture: gguf.architecture().map(str::to_string),
        parameter_count: Some(gguf.parameter_count()),
        quantization: Some(gguf.quantization()),
        name: gguf.get_str("general.name").map(str::to_string),
        synthetic,
        digest: None,
        weight_bytes_per_token: gguf.weight_bytes_per_token().map(|w| w.total),
    })
}

/// The file's sha256, or `None` when `cancel` was set while hashing.
pub(crate) fn sha256_file(path: &Path, cancel: &AtomicBool) -> std::io::Result<Option<String>> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_the_three_test_models() {
        let names: Vec<&str> = known_models().iter().map(|m| m.name).collect();
        assert_eq!(names, ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"]);
        assert!(known_models().iter().all(|m| m.sha256.len() == 64 && m.bytes > 0 && !m.parts.is_empty()));
        assert!(names.contains(&DEFAULT_MODEL));
    }

    #[test]
    fn unknown_references_say_what_is_known() {
        let err = resolve_model("no-such-model").unwrap_err().to_string();
        assert!(err.contains("smollm2-135m"), "{err}");
        let err = resolve_model("/nonexistent/m.gguf").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn hashing_gives_the_sha256_and_stops_between_megabytes_when_cancelled() {
        let path = std::env::temp_dir().join(format!("velollm-hash-{}.bin", std::process::id()));
        // 3 MiB + 1 byte: several reads, the last one short.
        let data: Vec<u8> = (0..(3 << 20) + 1).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let expected: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sha256_file(&path, &AtomicBool::new(false)).unwrap(), Some(expected));
        assert_eq!(sha256_file(&path, &AtomicBool::new(true)).unwrap(), None, "a set flag stops before reading on");
        std::fs::remove_file(&path).unwrap();
        // A known vector, so the hex formatting itself is checked too.
        let abc = std::env::temp_dir().join(format!("velollm-hash-abc-{}.bin", std::process::id()));
        std::fs::write(&abc, b"abc").unwrap();
        assert_eq!(
            sha256_file(&abc, &AtomicBool::new(false)).unwrap().as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        std::fs::remove_file(&abc).unwrap();
    }
}
