//! The `llamacpp` backend: GGUF models run inside velollm's own process through llama.cpp.
//!
//! A llama.cpp model and its contexts may not move between threads, so each loaded model lives on an engine
//! thread of its own that owns the model, its current context and the batch; the [`LoadedModel`] and
//! [`Session`] handed to the runner send it commands over a channel. Everything timed happens on the engine
//! thread, so the channel adds nothing to any measurement.
//!
//! Timing: every clock read follows `llama_synchronize`, because `llama_decode` may return before the
//! device has finished (GPU backends). llama.cpp's own perf counters are enabled and read per request, so
//! each sample carries the engine's account of the same work beside velollm's.

mod batched;
pub mod devices;
mod engine;
mod load;
mod logs;
mod reason;
pub mod rpc;

use std::ffi::CStr;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};

use llama_cpp_2::llama_backend::LlamaBackend;
use velollm_core::{
    Backend, BackendError, ContextParams, EffectiveContext, EffectiveLoad, EngineInfo, GenerationRequest, LoadParams,
    LoadedModel, ModelSource, RawSample, Session, TokenRequest,
};

use engine::{Command, ContextReady, ModelReady};

/// The version of the llama-cpp-sys-2 crate whose llama.cpp sources are compiled in.
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// llama.cpp's backend may be initialised once per process; every model shares it.
static LLAMA_BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

pub(crate) fn shared_backend(engine_logs: bool) -> Result<&'static LlamaBackend, BackendError> {
    LLAMA_BACKEND
        .get_or_init(|| {
            // Must precede initialisation: llama.cpp's lines are captured (they say what it decided) and,
            // with -v, forwarded to `tracing`.
            logs::install(engine_logs);
            load_dynamic_backends();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| BackendError::Load { path: String::new(), reason: format!("llama.cpp init: {reason}") })
}

/// With the `dynamic-backends` feature ggml's backends are shared libraries, loaded before llama.cpp starts: from
/// `$VELOLLM_GGML_BACKENDS` (a directory) when set, else from the `backends/` directory beside the executable,
/// else from the directory the build installed them in. Without the feature they are linked in.
pub(crate) fn load_dynamic_backends() {
    #[cfg(feature = "dynamic-backends")]
    static LOADED: std::sync::Once = std::sync::Once::new();
    #[cfg(feature = "dynamic-backends")]
    LOADED.call_once(|| {
        // ggml says which libraries it loaded: through velollm's log callback, not straight to stderr.
        logs::install(logs::forwarding());
        let beside_exe = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|p| p.join("backends")));
        match std::env::var_os("VELOLLM_GGML_BACKENDS").map(std::path::PathBuf::from).or(beside_exe) {
            Some(dir) if dir.is_dir() => llama_cpp_2::llama_backend::load_backends_from_path(&dir),
            _ => llama_cpp_2::llama_backend::load_backends(),
        }
    });
}

/// The in-process llama.cpp engine.
#[derive(Debug, Clone, Default)]
pub struct LlamaCppBackend {
    /// Route llama.cpp's own log output into `tracing` (off: silenced). Fixed by the first load in a process.
    pub engine_logs: bool,
}

impl LlamaCppBackend {
    pub fn new(engine_logs: bool) -> LlamaCppBackend {
        LlamaCppBackend { engine_logs }
    }
}

/// llama.cpp's version string and build description.
pub fn engine_info() -> EngineInfo {
    // SAFETY: llama_print_system_info returns a pointer to a static, NUL-terminated string owned by llama.cpp.
    let system_info = read_static(unsafe { llama_cpp_sys_2::llama_print_system_info() });
    EngineInfo { version: Some(version()), build: system_info }
}

/// llama.cpp's version as this build links it: the llama-cpp-sys-2 release, and ggml's version and commit as
/// the library reports them (llama-cpp-sys-2 does not expose llama.cpp's build number). Reads two static
/// strings; no backend is initialised.
pub fn version() -> String {
    // SAFETY: these functions return pointers to static, NUL-terminated strings owned by ggml.
    let ggml_version = read_static(unsafe { llama_cpp_sys_2::ggml_version() });
    let ggml_commit = read_static(unsafe { llama_cpp_sys_2::ggml_commit() });
    format!(
        "llama.cpp (llama-cpp-sys-2 {LLAMA_CPP_SYS_VERSION}, ggml {} commit {})",
        ggml_version.as_deref().unwrap_or("unknown"),
        ggml_commit.as_deref().unwrap_or("unknown"),
    )
}

/// A static C string of llama.cpp's, trimmed; `None` for a null pointer.
fn read_static(ptr: *const std::os::raw::c_char) -> Option<String> {
    // SAFETY: callers pass pointers to static, NUL-terminated strings owned by llama.cpp, or null.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_string_lossy().trim().to_string())
}

/// Whether llama.cpp has a device to offload layers to: a GPU it sees, or an RPC server registered with
/// `--rpc`. (`llama_supports_gpu_offload` also says yes for a build with the RPC backend and no server.)
pub fn gpu_offload_supported() -> bool {
    devices::devices().iter().any(|d| d.kind == "gpu" || d.kind == "igpu")
}

impl Backend for LlamaCppBackend {
    fn name(&self) -> &'static str {
        "llamacpp"
    }

    fn gpu_offload_available(&self) -> bool {
        shared_backend(self.engine_logs).is_ok() && gpu_offload_supported()
    }

    fn load_model(
        &self,
        source: &ModelSource,
        params: &LoadParams,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        let ModelSource::File(path) = source else {
            return Err(BackendError::Unsupported(format!(
                "llama.cpp runs local GGUF files; '{}' is a server model name",
                source.describe()
            )));
        };
        let backend = shared_backend(self.engine_logs)?;
        let (command_tx, command_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let engine_path = path.clone();
        let params = params.clone();
        let cancel = Arc::clone(cancel);
        let worker = thread::Builder::new()
            .name("llamacpp-engine".into())
            .spawn(move || engine::run(backend, engine_path, params, cancel, ready_tx, command_rx))
            .map_err(|e| load_error(path, format!("cannot start engine thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(ready)) => Ok(Box::new(LlamaCppModel { commands: Some(command_tx), worker: Some(worker), ready })),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => Err(load_error(path, "engine thread ended while loading".into())),
        }
    }
}

pub(crate) fn load_error(path: &Path, reason: String) -> BackendError {
    BackendError::Load { path: path.display().to_string(), reason }
}

/// A model loaded on its engine thread.
struct LlamaCppModel {
    commands: Option<Sender<Command>>,
    worker: Option<JoinHandle<()>>,
    ready: ModelReady,
}

/// Sends a command to the engine thread and waits for its answer.
fn call<T>(
    commands: Option<&Sender<Command>>,
    make: impl FnOnce(Sender<Result<T, BackendError>>) -> Command,
) -> Result<T, BackendError> {
    let (reply_tx, reply_rx) = mpsc::channel();
    let gone = || BackendError::Generation("the llama.cpp engine thread has stopped".into());
    commands.ok_or_else(gone)?.send(make(reply_tx)).map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

impl LoadedModel for LlamaCppModel {
    fn load_ms(&self) -> f64 {
        self.ready.load_ms
    }

    fn engine_info(&self) -> EngineInfo {
        engine_info()
    }

    fn effective_load(&self) -> EffectiveLoad {
        self.ready.effective.clone()
    }

    fn new_context(&mut self, params: &ContextParams) -> Result<Box<dyn Session + '_>, BackendError> {
        let params = params.clone();
        let ready = call(self.commands.as_ref(), |reply| Command::NewContext(params, reply))?;
        let commands = self.commands.clone().ok_or_else(|| BackendError::Context("engine thread stopped".into()))?;
        Ok(Box::new(LlamaCppSession { commands, ready, _model: PhantomData }))
    }
}

impl Drop for LlamaCppModel {
    fn drop(&mut self) {
        // Closing the channel ends the engine thread, which frees the context and then the model.
        self.commands.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A context on the engine thread's model. It borrows its model, so the model outlives it.
struct LlamaCppSession<'m> {
    commands: Sender<Command>,
    ready: ContextReady,
    _model: PhantomData<&'m mut LlamaCppModel>,
}

impl Session for LlamaCppSession<'_> {
    fn effective_context(&self) -> EffectiveContext {
        self.ready.effective.clone()
    }

    fn context_ms(&self) -> Option<f64> {
        Some(self.ready.context_ms)
    }

    fn count_prompt_tokens(&mut self, prompt: &str) -> Result<Option<u64>, BackendError> {
        call(Some(&self.commands), |reply| Command::CountTokens(prompt.to_string(), reply)).map(Some)
    }

    fn generate(&mut self, request: &GenerationRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        call(Some(&self.commands), |reply| Command::Generate(request.clone(), Arc::clone(cancel), reply))
    }

    fn run_tokens(&mut self, request: &TokenRequest, cancel: &Arc<AtomicBool>) -> Result<RawSample, BackendError> {
        call(Some(&self.commands), |reply| Command::RunTokens(*request, Arc::clone(cancel), reply))
    }

    fn detokenize(&mut self, token_ids: &[u32]) -> Result<String, BackendError> {
        call(Some(&self.commands), |reply| Command::Detokenize(token_ids.to_vec(), reply))
    }
}

impl Drop for LlamaCppSession<'_> {
    fn drop(&mut self) {
        // Frees the context (its KV cache) before the next one is created.
        let _ = self.commands.send(Command::DropContext);
    }
}
