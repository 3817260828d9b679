//! What the model-hash cache saves before a run's first number: the time the model identification takes on a model
//! file with no cache (the header read and the whole file hashed, what every run did before), against the same
//! call answered by a history that holds the file's hash (the header read, the file's key taken, one SQLite
//! lookup). Monotonic clock around each call; ROUNDS alternations; the file is in the page cache for both.
//!
//! cargo run --release -p velollm-history --example hash_cache_cost -- models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf 10

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use velollm_benchmarks::HashCache;
use velollm_history::hashes::FileKey;
use velollm_history::History;
use velollm_models::{identify_model_with, sha256_file};

/// The CLI's cache in miniature: the history's hash for exactly this version of the file.
#[derive(Debug)]
struct Cache(History);

impl HashCache for Cache {
    fn cached(&self, path: &Path) -> Option<String> {
        self.0.cached_sha256(&FileKey::of(path).ok()?)
    }
    fn hashed(&self, path: &Path, sha256: &str) {
        if let Ok(key) = FileKey::of(path) {
            let _ = self.0.store_sha256(&key, sha256, "now");
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(args.next().expect("usage: hash_cache_cost MODEL.gguf [ROUNDS]"));
    let rounds: usize = args.next().map(|r| r.parse().expect("ROUNDS is a number")).unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("velollm-hash-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cache = Cache(History::open(&dir.join("history.db")).unwrap());
    let cancel = AtomicBool::new(false);
    let reference = model.display().to_string();
    // Fills the cache (and the page cache).
    let hash = sha256_file(&model, &cancel).unwrap().unwrap();
    cache.hashed(&model, &hash);
    let (mut hashed, mut cached) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for with_cache in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let start = Instant::now();
            let identity = identify_model_with(&reference, &model, |path| match with_cache {
                true => Ok(cache.cached(path)),
                false => sha256_file(path, &cancel),
            })
            .unwrap();
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(identity.sha256.as_ref().map(String::len), Some(64));
            if with_cache {
                cached.push(ms)
            } else {
                hashed.push(ms)
            }
        }
    }
    let bytes = std::fs::metadata(&model).unwrap().len();
    let (min_hashed, min_cached) =
        (hashed.iter().copied().fold(f64::MAX, f64::min), cached.iter().copied().fold(f64::MAX, f64::min));
    println!(
        "{} ({:.1} MB), {rounds} rounds: hashed median {:.1} ms (min {min_hashed:.1}); from the cache median {:.2} ms (min {min_cached:.2})",
        model.display(),
        bytes as f64 / 1e6,
        median(&mut hashed),
        median(&mut cached)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
