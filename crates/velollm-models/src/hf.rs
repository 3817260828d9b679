//! `hf:ORG/REPO/FILE.gguf[@REVISION]` references: a file of a Hugging Face model repository, taken from the
//! standard local cache when it is there and downloaded into it (with a progress bar) when it is not.
//!
//! Cache directory: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; layout
//! `models--ORG--REPO/refs/<revision>` (a commit hash) → `snapshots/<commit>/FILE`. `HF_HUB_OFFLINE=1`
//! forbids the network, as it does for Hugging Face's own tools.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::ModelError;

/// The prefix that marks a Hugging Face reference.
pub const PREFIX: &str = "hf:";

/// A parsed `hf:` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfReference {
    /// `ORG/REPO`.
    pub repo: String,
    /// The file's path inside the repository.
    pub file: String,
    /// Branch, tag or commit hash (default `main`).
    pub revision: String,
}

/// Parses `hf:ORG/REPO/FILE[@REVISION]`.
pub fn parse(reference: &str) -> Result<HfReference, ModelError> {
    let bad = || {
        ModelError::Invalid(format!(
            "invalid Hugging Face reference '{reference}': expected hf:ORG/REPO/FILE.gguf or hf:ORG/REPO/FILE.gguf@REVISION"
        ))
    };
    let rest = reference.strip_prefix(PREFIX).ok_or_else(bad)?;
    let (path, revision) = match rest.rsplit_once('@') {
        Some((path, rev)) if !rev.is_empty() && !rev.contains('/') => (path, rev),
        Some(_) => return Err(bad()),
        None => (rest, "main"),
    };
    let mut parts = path.splitn(3, '/');
    let (Some(org), Some(repo), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let parts_ok = [org, repo].iter().all(|p| !p.is_empty() && *p != "." && *p != "..")
        && !file.is_empty()
        && file.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if !parts_ok {
        return Err(bad());
    }
    Ok(HfReference { repo: format!("{org}/{repo}"), file: file.to_string(), revision: revision.to_string() })
}

/// The Hugging Face hub cache directory.
pub fn hub_cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    var("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache/huggingface/hub")
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// The local path of the referenced file: from the cache, else downloaded into it (unless offline).
pub fn resolve(reference: &str, show_progress: bool) -> Result<PathBuf, ModelError> {
    let parsed = parse(reference)?;
    let cache_dir = hub_cache_dir();
    let repo = Repo::with_revision(parsed.repo.clone(), RepoType::Model, parsed.revision.clone());
    if let Some(path) = find_in_cache(&cache_dir, &repo, &parsed) {
        return Ok(path);
    }
    let repo_dir = cache_dir.join(repo.folder_name());
    if offline() {
        return Err(ModelError::Invalid(format!(
            "{reference} is not in the Hugging Face cache (looked in {}) and HF_HUB_OFFLINE is set; \
             unset it to download, or set HF_HUB_CACHE / HF_HOME to the cache that holds it",
            repo_dir.display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache_dir.clone())
        .with_progress(show_progress)
        .with_token(std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()))
        .build()
        .map_err(|e| ModelError::Invalid(format!("cannot start a Hugging Face client: {e}")))?;
    api.repo(repo).get(&parsed.file).map_err(|e| {
        let reason = e.to_string().lines().next().unwrap_or_default().to_string();
        ModelError::Invalid(format!(
            "cannot download {reference} ({reason}); it is not in the Hugging Face cache at {} either: check \
             the name and the network, or put the file in the cache",
            repo_dir.display()
        ))
    })
}

/// hf-hub's cache lookup goes through `refs/<revision>`; a revision that is itself a commit hash names its
/// snapshot directly.
fn find_in_cache(cache_dir: &Path, repo: &Repo, parsed: &HfReference) -> Option<PathBuf> {
    if let Some(path) = Cache::new(cache_dir.to_path_buf()).repo(repo.clone()).get(&parsed.file) {
        return Some(path);
    }
    let is_commit = parsed.revision.len() == 40 && parsed.revision.bytes().all(|b| b.is_ascii_hexdigit());
    let snapshot = cache_dir.join(repo.folder_name()).join("snapshots").join(&parsed.revision).join(&parsed.file);
    (is_commit && snapshot.is_file()).then_some(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = parse("hf:org/repo/model.Q4.gguf").unwrap();
        assert_eq!((r.repo.as_str(), r.file.as_str(), r.revision.as_str()), ("org/repo", "model.Q4.gguf", "main"));
        let r = parse("hf:org/repo/sub/m.gguf@v1.0").unwrap();
        assert_eq!((r.file.as_str(), r.revision.as_str()), ("sub/m.gguf", "v1.0"));
        for bad in ["hf:org/repo", "hf:org//m.gguf", "hf:org/repo/m.gguf@", "hf:org/repo/../m.gguf", "org/repo/m"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_files_by_ref_and_by_commit() {
        let dir = std::env::temp_dir().join(format!("velollm-hf-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo_dir = dir.join("models--org--repo");
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::create_dir_all(repo_dir.join("snapshots").join(commit)).unwrap();
        std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
        std::fs::write(repo_dir.join("snapshots").join(commit).join("m.gguf"), b"GGUF").unwrap();
        for reference in ["hf:org/repo/m.gguf", &format!("hf:org/repo/m.gguf@{commit}")] {
            let parsed = parse(reference).unwrap();
            let repo = Repo::with_revision(parsed.repo.clone(), RepoType::Model, parsed.revision.clone());
            assert!(find_in_cache(&dir, &repo, &parsed).is_some(), "{reference}");
        }
        let parsed = parse("hf:org/repo/other.gguf").unwrap();
        let repo = Repo::with_revision(parsed.repo.clone(), RepoType::Model, parsed.revision.clone());
        assert!(find_in_cache(&dir, &repo, &parsed).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
