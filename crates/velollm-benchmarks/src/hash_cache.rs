//! A place that remembers model files' sha256, so a file already hashed is not read again before a run's
//! first number (hashing a 40 GB model takes half a minute). The runner asks it before hashing and tells it
//! what it hashed; the implementation decides what identifies "the same file" (the history keys it by path,
//! size, modification time and inode) and must not keep a hash of a file that changed while it was read.

use std::path::Path;
use std::sync::atomic::AtomicBool;

pub trait HashCache: Send + Sync + std::fmt::Debug {
    /// The sha256 of the file as it is now, when known.
    fn cached(&self, path: &Path) -> Option<String>;
    /// `sha256` was just computed from the file (after a [`HashCache::cached`] that found nothing).
    fn hashed(&self, path: &Path, sha256: &str);
}

/// The file's sha256 from `cache` when it has this version of the file; otherwise read and hashed
/// (`Ok(None)`: `cancel` was set), and the cache told.
pub(crate) fn sha256_through(
    cache: Option<&dyn HashCache>,
    path: &Path,
    cancel: &AtomicBool,
) -> std::io::Result<Option<String>> {
    if let Some(hit) = cache.and_then(|c| c.cached(path)) {
        return Ok(Some(hit));
    }
    let hash = velollm_models::sha256_file(path, cancel)?;
    if let (Some(cache), Some(hash)) = (cache, &hash) {
        cache.hashed(path, hash);
    }
    Ok(hash)
}
