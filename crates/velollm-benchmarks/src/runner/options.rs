//! How a run is carried out: the options every row records.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use velollm_core::GenerationParams;

use crate::plan::Repetitions;

/// How to reach a server backend (Ollama). Ignored by in-process engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConnection {
    /// `--ollama-url`; `None` falls back to `OLLAMA_HOST`, then `http://localhost:11434`.
    pub url: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (a stalled stream fails instead of hanging).
    pub idle_timeout: Duration,
    /// Longest wait for the untimed model load.
    pub load_timeout: Duration,
    /// Leave the model loaded on the server after the run (default: unload it).
    pub keep_loaded: bool,
}

impl Default for ServerConnection {
    fn default() -> Self {
        ServerConnection {
            url: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            load_timeout: Duration::from_secs(600),
            keep_loaded: false,
        }
    }
}

/// How to reach an OpenAI-compatible server (`-b openai`). Timeouts are [`ServerConnection`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenAiConnection {
    /// `--url`: the API's base URL (`http://HOST:PORT/v1`).
    pub url: Option<String>,
    /// `--api-key-env`: the environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// `--endpoint completions`: plain completions instead of chat completions.
    pub completions: bool,
}

/// Which engine parameters the user set explicitly. A server applies its own defaults to the rest, so only
/// these are forwarded to it (in-process engines use every parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExplicitEngineParams {
    pub threads: bool,
    pub n_gpu_layers: bool,
    pub batch_size: bool,
}

/// How a run is carried out. Every field ends up in the results.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub generation: GenerationParams,
    /// Untimed iterations before each test's timed ones.
    pub warmup_iterations: u32,
    pub repetitions: Repetitions,
    /// Show the engine's own log output (through `tracing`).
    pub engine_logs: bool,
    /// Set it (e.g. on Ctrl-C) to stop after the current token; finished repetitions are kept.
    pub cancel: Arc<AtomicBool>,
    /// When the process started, to report the time to the first timed iteration.
    pub process_start: Option<Instant>,
    /// Server backends: where the server is and how long to wait for it.
    pub server: ServerConnection,
    /// Which parameters the user chose (server backends forward only those).
    pub explicit: ExplicitEngineParams,
    /// Draw a progress bar while a model is downloaded.
    pub download_progress: bool,
    /// Record GPU telemetry (NVML) and the process's peak memory around every timed iteration, and embed the
    /// hardware snapshot in every row.
    pub telemetry: bool,
    /// `--interleave`: run the combinations' repetitions round-robin, one repetition of each per round.
    pub interleave: bool,
    /// `-b openai`: where the server is and how to authenticate.
    pub openai: OpenAiConnection,
    /// Load profiles (`--concurrency`, `--request-rate`, `--sweep`) for server backends; inactive by default.
    pub load: velollm_load::LoadOptions,
    /// Where model files' sha256 are remembered between runs (the CLI's history); `None`: every run hashes.
    pub hash_cache: Option<Arc<dyn crate::HashCache>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            generation: GenerationParams::default(),
            warmup_iterations: 1,
            repetitions: Repetitions::Fixed,
            engine_logs: false,
            cancel: Arc::new(AtomicBool::new(false)),
            process_start: None,
            server: ServerConnection::default(),
            explicit: ExplicitEngineParams::default(),
            download_progress: false,
            telemetry: true,
            interleave: false,
            openai: OpenAiConnection::default(),
            load: velollm_load::LoadOptions::default(),
            hash_cache: None,
        }
    }
}
