//! What a model file is: its GGUF header read and checked, and its sha256. The hash comes from a function
//! handed in ([`identify_model_with`]; [`sha256_file`] reads the whole file), so a cache of hashes (kept by path,
//! size, mtime and inode, say) can wrap it and hash only a file it has not seen.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use velollm_core::ModelIdentity;
use velollm_gguf::{GgufFile, ReadOptions};

use crate::ModelError;

/// Reads and checks the file's header, hashes it, and describes it. Fails on a missing, foreign or
/// truncated file before any engine sees it. Hashing a multi-GB file polls `cancel` between megabytes.
pub fn identify_model(reference: &str, path: &Path, cancel: &AtomicBool) -> Result<ModelIdentity, ModelError> {
    identify_model_with(reference, path, |path| sha256_file(path, cancel))
}

/// [`identify_model`] with the file's sha256 from `hash` (`Ok(None)`: interrupted), asked only once the header
/// has been read and found sound.
pub fn identify_model_with(
    reference: &str,
    path: &Path,
    hash: impl FnOnce(&Path) -> std::io::Result<Option<String>>,
) -> Result<ModelIdentity, ModelError> {
    let gguf = GgufFile::read(path, ReadOptions::default()).map_err(|e| ModelError::Invalid(e.to_string()))?;
    let sha256 = match hash(path) {
        Ok(Some(hash)) => hash,
        Ok(None) => return Err(ModelError::Interrupted),
        Err(e) => return Err(ModelError::Invalid(format!("cannot read {}: {e}", path.display()))),
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
pub fn sha256_file(path: &Path, cancel: &AtomicBool) -> std::io::Result<Option<String>> {
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
