//! A seeded mutation fuzzer over the reader, run by the ordinary test command with a fixed budget.
//!
//! Seeds: the committed corpus (`tests/corpus/`: real models' headers with their tensor infos, shrunk to one block
//! per tensor by `examples/fuzz_corpus.rs`, and the first 4 KiB of a real file) and the crafted files of
//! `common` (among them those that allocate the most per byte: many keys, many tensors, a long u8 array). Each iteration applies a few mutations (bit flips, random bytes, insertions, deletions, copied
//! chunks, boundary values written over 4- or 8-byte fields, truncation), mostly inside the header, and reads the
//! result with arrays skipped and kept. It must not panic (nor abort: a stack overflow ends the test binary),
//! must give a one-line error or a file whose every tensor lies within it, and must not allocate beyond a small
//! multiple of the input's length, measured by a counting allocator.
//!
//! `VELOLLM_FUZZ_ITERATIONS` (per seed) and `VELOLLM_FUZZ_SEED` run it longer or elsewhere; a failing input is
//! written to the temporary directory, to be added to the corpus once fixed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use velollm_gguf::{GgufFile, MetadataValue, ReadOptions};

/// Iterations per seed when `VELOLLM_FUZZ_ITERATIONS` is not set: about 6 s in release on a shared 2-core
/// machine (72,000 reads).
const DEFAULT_ITERATIONS_PER_SEED: u64 = 4_000;
const DEFAULT_SEED: u64 = 0x5EED_6611_F00D;
/// What a read may allocate, at most, beyond its bounded tables: a constant for the few fixed-size structures.
const FIXED_ALLOWANCE: usize = 64 << 10;
/// Arrays skipped, a read holds the keys, the strings and the tensor infos of the header: a few allocated bytes
/// per header byte (a `BTreeMap` entry is 56 bytes for at least 14 bytes of file, in nodes at least half full;
/// 6.8 was the most seen, on the many-keys seed).
const SKIPPED_BYTES_PER_INPUT_BYTE: usize = 12;

// ---- Allocation accounting, per thread (tests run in parallel threads). ----

thread_local! {
    static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<usize> = const { Cell::new(0) };
}

struct CountingAllocator;

fn note_allocated(bytes: usize) {
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn note_freed(bytes: usize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            note_allocated(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            note_allocated(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        note_freed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_ptr = System.realloc(ptr, layout, new_size);
        if !new_ptr.is_null() {
            note_freed(layout.size());
            note_allocated(new_size);
        }
        new_ptr
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the most bytes it held allocated at once (on this thread).
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(before));
    let result = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (result, peak - before)
}

// ---- A small deterministic generator (splitmix64). ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---- Seeds and mutations. ----

struct Seed {
    name: String,
    bytes: Vec<u8>,
    /// Where the tensor data starts (the whole input when the seed does not read): most mutations land before.
    header_bytes: usize,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn seeds() -> Vec<Seed> {
    let mut named: Vec<(String, Vec<u8>)> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus is committed")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gguf"))
        .collect();
    files.sort();
    for path in files {
        named.push((path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()));
    }
    named.push(("crafted: small valid".into(), common::small_valid()));
    named.push(("crafted: nested arrays".into(), common::nested_arrays(64)));
    named.push(("crafted: many keys".into(), common::many_keys(2_000)));
    named.push(("crafted: many empty tensors".into(), common::many_empty_tensors(2_000)));
    named.push(("crafted: long u8 array".into(), common::long_u8_array(20_000)));
    named.into_iter().map(|(name, bytes)| seed(name, bytes)).collect()
}

fn seed(name: String, bytes: Vec<u8>) -> Seed {
    let header_bytes = match GgufFile::from_bytes(Path::new(&name), &bytes, ReadOptions::default()) {
        Ok(file) => file.data_offset as usize,
        Err(_) => bytes.len(),
    };
    Seed { name, bytes, header_bytes: header_bytes.max(1) }
}

/// Values that sit on the edges of the reader's checks, for counts, lengths, type ids, dimensions and offsets.
fn boundary_value(rng: &mut Rng, input_len: usize) -> u64 {
    const VALUES: [u64; 20] = [
        0,
        1,
        2,
        4,
        5,
        8,
        9,
        12,
        13,
        31,
        32,
        43,
        63,
        64,
        1 << 30,
        (1 << 30) + 1,
        1 << 32,
        i64::MAX as u64,
        1 << 63,
        u64::MAX,
    ];
    match rng.below(4) {
        0 => input_len as u64 + rng.below(64) as u64,
        1 => u32::MAX as u64 - rng.below(2) as u64,
        _ => VALUES[rng.below(VALUES.len())],
    }
}

/// A position to mutate: nine times in ten inside the header.
fn position(rng: &mut Rng, len: usize, header_bytes: usize) -> usize {
    let span = if rng.below(10) < 9 { header_bytes.min(len) } else { len };
    rng.below(span.max(1))
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, header_bytes: usize) {
    if input.is_empty() {
        input.extend_from_slice(b"GGUF");
    }
    let at = position(rng, input.len(), header_bytes);
    match rng.below(8) {
        0 => input[at] ^= 1 << rng.below(8),
        1 => input[at] = rng.next() as u8,
        2 => {
            let count = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..count).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 => {
            let end = (at + 1 + rng.below(16)).min(input.len());
            input.drain(at..end);
        }
        4 => {
            // A chunk copied elsewhere: repeats keys and tensor infos.
            let len = (1 + rng.below(64)).min(input.len() - at);
            let chunk = input[at..at + len].to_vec();
            let to = position(rng, input.len(), header_bytes);
            input.splice(to..to, chunk);
        }
        5 => input.truncate(at),
        _ => {
            let value = boundary_value(rng, input.len());
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            let bytes = value.to_le_bytes();
            let end = (at + width).min(input.len());
            input[at..end].copy_from_slice(&bytes[..end - at]);
        }
    }
}

// ---- Checks on one input. ----

/// What a read may allocate for `input_len` bytes of input.
fn allocation_cap(input_len: usize, keep_arrays: bool) -> usize {
    // Kept arrays hold one `MetadataValue` per item, and an item takes as little as one byte of file (a u8
    // array), plus the item's own string.
    let per_byte = if keep_arrays {
        std::mem::size_of::<MetadataValue>() + SKIPPED_BYTES_PER_INPUT_BYTE
    } else {
        SKIPPED_BYTES_PER_INPUT_BYTE
    };
    per_byte * input_len + FIXED_ALLOWANCE
}

/// Reads `input` one way and checks the outcome; `Err` says what is wrong.
fn check_read(input: &[u8], keep_arrays: bool) -> Result<bool, String> {
    let label = Path::new("fuzz.gguf");
    let read = || catch_unwind(AssertUnwindSafe(|| GgufFile::from_bytes(label, input, ReadOptions { keep_arrays })));
    let (outcome, peak) = peak_allocation(read);
    let outcome = outcome.map_err(|_| "the reader panicked".to_string())?;
    let cap = allocation_cap(input.len(), keep_arrays);
    if peak > cap {
        return Err(format!("a read of {} bytes allocated {peak} bytes (cap {cap})", input.len()));
    }
    match outcome {
        Err(e) => {
            let message = e.to_string();
            if message.contains('\n') || message.is_empty() {
                return Err(format!("the error is not one line: {message:?}"));
            }
            Ok(false)
        }
        Ok(file) => check_accepted(&file, input.len() as u64).map(|()| true),
    }
}

/// What an accepted file guarantees: every tensor is of a known type, at most 4-dimensional, uniquely named, and
/// lies within the file, after the header.
fn check_accepted(file: &GgufFile, input_len: u64) -> Result<(), String> {
    if file.data_offset > input_len {
        return Err(format!("data offset {} past the end ({input_len})", file.data_offset));
    }
    let mut names = std::collections::HashSet::new();
    for tensor in &file.tensors {
        let bytes = tensor.ggml_type.storage_bytes(tensor.element_count()).ok_or("a tensor without a size")?;
        let end = file.data_offset.checked_add(tensor.offset).and_then(|start| start.checked_add(bytes));
        if end.is_none_or(|end| end > input_len) || tensor.dims.len() > 4 || !names.insert(&tensor.name) {
            return Err(format!("accepted a bad tensor {tensor:?} (data offset {})", file.data_offset));
        }
    }
    Ok(())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Keeps a failing input where it can be picked up and added to the corpus.
fn save_reproducer(input: &[u8], seed: u64, iteration: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("velollm-gguf-fuzz-{seed:x}-{iteration}.gguf"));
    let _ = std::fs::write(&path, input);
    path
}

#[test]
fn mutated_headers_never_panic_nor_allocate_beyond_the_file() {
    let iterations = env_u64("VELOLLM_FUZZ_ITERATIONS", DEFAULT_ITERATIONS_PER_SEED);
    let fuzz_seed = env_u64("VELOLLM_FUZZ_SEED", DEFAULT_SEED);
    let seeds = seeds();
    assert!(seeds.len() >= 4, "the corpus is missing: {}", corpus_dir().display());
    let started = Instant::now();
    let mut rng = Rng(fuzz_seed);
    let (mut reads, mut accepted) = (0u64, 0u64);
    for seed in &seeds {
        // The unmutated seeds behave, and the shrunk real headers are valid files.
        for keep_arrays in [false, true] {
            let outcome = check_read(&seed.bytes, keep_arrays);
            assert!(outcome.is_ok(), "{}: {outcome:?}", seed.name);
            if seed.name.ends_with(".header.gguf") {
                assert_eq!(outcome, Ok(true), "{}", seed.name);
            }
        }
        for iteration in 0..iterations {
            let mut input = seed.bytes.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input, seed.header_bytes);
            }
            for keep_arrays in [false, true] {
                match check_read(&input, keep_arrays) {
                    Ok(ok) => accepted += u64::from(ok),
                    Err(what) => {
                        let path = save_reproducer(&input, fuzz_seed, iteration);
                        panic!("{} iteration {iteration}: {what}; input saved to {}", seed.name, path.display());
                    }
                }
                reads += 1;
            }
        }
    }
    eprintln!(
        "fuzz: {reads} reads of {} seeds ({iterations} mutated inputs each, seed {fuzz_seed:#x}), {accepted} accepted, \
         in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    // The mutations reach past the checks into files that read: a fuzzer refused at the magic tests little.
    assert!(accepted > 0, "no mutated input was accepted");
}

#[test]
fn the_allocation_accounting_sees_a_read() {
    // Guards the harness itself: reading the real-model seed with its arrays kept must show allocations.
    let seeds = seeds();
    let real = seeds.iter().find(|s| s.name.ends_with(".header.gguf")).expect("a real header in the corpus");
    let read = || GgufFile::from_bytes(Path::new("seed"), &real.bytes, ReadOptions { keep_arrays: true });
    let (file, peak) = peak_allocation(read);
    let file = file.unwrap();
    assert!(!file.tensors.is_empty());
    assert!(peak >= real.header_bytes / 2, "only {peak} bytes counted for a {} byte header", real.header_bytes);
}
