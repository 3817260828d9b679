//! Ollama's model store on disk: a name such as `llama3.2:3b` → its manifest → the GGUF blob, so an
//! in-process engine can benchmark exactly the file Ollama serves.
//!
//! Layout: `<root>/manifests/<registry>/<namespace>/<model>/<tag>` is a JSON manifest whose `layers` hold
//! a `mediaType` and a `digest` (`sha256:<hex>`); the layer of type
//! `application/vnd.ollama.image.model` is the GGUF, stored at `<root>/blobs/sha256-<hex>`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::OllamaError;

const DEFAULT_REGISTRY: &str = "registry.ollama.ai";
const DEFAULT_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";
const MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// A model name split the way Ollama stores it: `[registry/][namespace/]model[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName {
    pub registry: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

impl ModelName {
    /// Where this name's manifest sits below a store root.
    pub fn manifest_path(&self, root: &Path) -> PathBuf {
        root.join("manifests").join(&self.registry).join(&self.namespace).join(&self.model).join(&self.tag)
    }
}

/// Parses `name` (an optional `ollama:` prefix is ignored). The tag defaults to `latest`, the namespace to
/// `library`, the registry to `registry.ollama.ai`.
pub fn parse_model_name(name: &str) -> Result<ModelName, OllamaError> {
    let name = crate::model_name(name.trim());
    let bad = |reason: &str| OllamaError::BadName { name: name.to_string(), reason: reason.to_string() };
    // The tag follows the last ':' after the last '/' (a registry may carry a port: `host:5000/ns/m:tag`).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, DEFAULT_TAG),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (registry, namespace, model) = match parts.as_slice() {
        [model] => (DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *model),
        [namespace, model] => (DEFAULT_REGISTRY, *namespace, *model),
        [registry, namespace, model] => (*registry, *namespace, *model),
        _ => return Err(bad("expected [registry/][namespace/]model[:tag]")),
    };
    for part in [registry, namespace, model, tag] {
        if part.is_empty() {
            return Err(bad("a part of it is empty"));
        }
        if part == "." || part == ".." || part.contains('\\') || part.chars().any(char::is_whitespace) {
            return Err(bad("it contains characters a model name cannot hold"));
        }
    }
    Ok(ModelName {
        registry: registry.to_string(),
        namespace: namespace.to_string(),
        model: model.to_string(),
        tag: tag.to_string(),
    })
}

/// Store roots in the order they are searched: `OLLAMA_MODELS` when set, then `~/.ollama/models`, then the
/// Linux service's `/usr/share/ollama/.ollama/models`.
pub fn store_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("OLLAMA_MODELS").filter(|d| !d.is_empty()) {
        roots.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        roots.push(Path::new(&home).join(".ollama/models"));
    }
    roots.push(PathBuf::from("/usr/share/ollama/.ollama/models"));
    roots
}

/// A model found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreModel {
    /// The GGUF blob.
    pub path: PathBuf,
    pub manifest_path: PathBuf,
    /// `sha256:<hex>` of the manifest file: the digest `ollama list` and `/api/tags` show.
    pub digest: String,
    /// The blob's sha256 as the manifest names it (the GGUF file's own sha256).
    pub blob_sha256: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
}

/// Finds `name` in the first of [`store_roots`] that has its manifest.
pub fn resolve_in_store(name: &str) -> Result<StoreModel, OllamaError> {
    resolve_in_roots(name, &store_roots())
}

/// Finds `name` in the first of `roots` that has its manifest.
pub fn resolve_in_roots(name: &str, roots: &[PathBuf]) -> Result<StoreModel, OllamaError> {
    let parsed = parse_model_name(name)?;
    let Some((manifest_path, root)) =
        roots.iter().map(|root| (parsed.manifest_path(root), root)).find(|(path, _)| path.is_file())
    else {
        let looked_in: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(OllamaError::NotInStore {
            name: crate::model_name(name).to_string(),
            looked_in: looked_in.join(", "),
        });
    };
    let entry_error = |reason: String| OllamaError::BadStoreEntry { path: manifest_path.display().to_string(), reason };
    let bytes = std::fs::read(&manifest_path).map_err(|e| entry_error(format!("cannot read it: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| entry_error(format!("not a manifest: {e}")))?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == MODEL_MEDIA_TYPE)
        .ok_or_else(|| entry_error(format!("no layer of type {MODEL_MEDIA_TYPE}")))?;
    let hex = layer
        .digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| entry_error(format!("model layer digest '{}' is not sha256:<64 hex digits>", layer.digest)))?
        .to_ascii_lowercase();
    let blob = root.join("blobs").join(format!("sha256-{hex}"));
    if !blob.is_file() {
        return Err(entry_error(format!("its model blob {} is missing; pull the model again", blob.display())));
    }
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    Ok(StoreModel { path: blob, manifest_path, digest: format!("sha256:{digest}"), blob_sha256: hex })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_like_ollama() {
        let n = parse_model_name("llama3.2").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.namespace.as_str(), n.model.as_str(), n.tag.as_str()),
            ("registry.ollama.ai", "library", "llama3.2", "latest")
        );
        let n = parse_model_name("ollama:user/m:q4").unwrap();
        assert_eq!((n.namespace.as_str(), n.model.as_str(), n.tag.as_str()), ("user", "m", "q4"));
        let n = parse_model_name("host:5000/ns/m").unwrap();
        assert_eq!((n.registry.as_str(), n.tag.as_str()), ("host:5000", "latest"));
        let n = parse_model_name("hf.co/org/repo:Q4_K_M").unwrap();
        assert_eq!((n.registry.as_str(), n.namespace.as_str(), n.tag.as_str()), ("hf.co", "org", "Q4_K_M"));
        assert!(parse_model_name("a/b/c/d").is_err());
        assert!(parse_model_name("../x").is_err());
        assert!(parse_model_name("m:").is_err());
    }

    #[test]
    fn resolves_a_manifest_to_its_blob() {
        let root = std::env::temp_dir().join(format!("velollm-store-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let hex = "ab".repeat(32);
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::write(root.join(format!("blobs/sha256-{hex}")), b"GGUF").unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"layers":[{{"mediaType":"application/vnd.ollama.image.license","digest":"sha256:{}"}},{{"mediaType":"{MODEL_MEDIA_TYPE}","digest":"sha256:{hex}","size":4}}]}}"#,
            "cd".repeat(32)
        );
        let dir = root.join("manifests/registry.ollama.ai/library/tiny");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1b"), &manifest).unwrap();
        let found = resolve_in_roots("tiny:1b", std::slice::from_ref(&root)).unwrap();
        assert_eq!(found.path, root.join(format!("blobs/sha256-{hex}")));
        assert_eq!(found.blob_sha256, hex);
        assert!(found.digest.starts_with("sha256:") && found.digest.len() == 71);
        let err = resolve_in_roots("tiny", std::slice::from_ref(&root)).unwrap_err().to_string();
        assert!(err.contains("ollama pull tiny"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
