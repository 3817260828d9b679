//! llama.cpp's log output: forwarded to `tracing` when the user asks for it (`-v`), and captured while a
//! model or a context is created, because some of what the engine decided is only said there: how many
//! layers it offloaded and to which device, how an automatic flash-attention policy resolved, and how big
//! its buffers are. llama.cpp has no getter for these, so reading its own words is the honest source; a
//! line that is not found leaves the value absent.

use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

use velollm_core::{EngineBuffer, FlashAttention};

/// Whether log lines go to `tracing`, and the text captured since [`start_capture`].
struct LogState {
    forward: bool,
    capture: Option<String>,
    /// The current line, which llama.cpp may deliver in pieces (`GGML_LOG_LEVEL_CONT`).
    pending: String,
    pending_level: u32,
}

static STATE: Mutex<LogState> =
    Mutex::new(LogState { forward: false, capture: None, pending: String::new(), pending_level: 0 });

/// Installs velollm's log callback for llama.cpp and ggml. Called once, before the backend is initialised.
pub(crate) fn install(forward: bool) {
    if let Ok(mut state) = STATE.lock() {
        state.forward = forward;
    }
    // SAFETY: the callback is a plain function that only touches the static state above; it stays valid for
    // the life of the process.
    unsafe {
        llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut());
        llama_cpp_sys_2::ggml_log_set(Some(on_log), std::ptr::null_mut());
    }
}

/// Whether log lines currently go to `tracing` (read by the loader of dynamic backends).
#[cfg_attr(not(feature = "dynamic-backends"), allow(dead_code))]
pub(crate) fn forwarding() -> bool {
    STATE.lock().map(|state| state.forward).unwrap_or(false)
}

/// Starts collecting log text (a model load or a context creation is about to happen).
pub(crate) fn start_capture() {
    if let Ok(mut state) = STATE.lock() {
        state.capture = Some(String::new());
    }
}

/// Stops collecting and returns what was said since [`start_capture`].
pub(crate) fn finish_capture() -> String {
    STATE.lock().ok().and_then(|mut state| state.capture.take()).unwrap_or_default()
}

unsafe extern "C" fn on_log(level: llama_cpp_sys_2::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let Ok(mut state) = STATE.lock() else { return };
    if let Some(capture) = state.capture.as_mut() {
        capture.push_str(&text);
    }
    if !state.forward {
        return;
    }
    if level != llama_cpp_sys_2::GGML_LOG_LEVEL_CONT {
        state.pending_level = level;
    }
    state.pending.push_str(&text);
    while let Some(newline) = state.pending.find('\n') {
        let line: String = state.pending.drain(..=newline).collect();
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        match state.pending_level {
            llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "llama.cpp", "{line}"),
            llama_cpp_sys_2::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{line}"),
            llama_cpp_sys_2::GGML_LOG_LEVEL_DEBUG => tracing::debug!(target: "llama.cpp", "{line}"),
            _ => tracing::info!(target: "llama.cpp", "{line}"),
        }
    }
}

/// The device of every layer, in layer order, from the load's `layer N assigned to device X` lines (llama.cpp
/// prints one per repeating layer and one for the output layer, at debug level).
pub(crate) fn layer_devices(log: &str) -> Vec<String> {
    let mut layers: Vec<(u32, String)> = log
        .lines()
        .filter_map(|line| {
            let rest = line.split("layer ").nth(1)?;
            let (index, tail) = rest.trim_start().split_once(' ')?;
            let device = tail.strip_prefix("assigned to device ")?;
            let device = device.split(',').next()?.trim();
            Some((index.parse().ok()?, device.to_string()))
        })
        .collect();
    layers.sort_by_key(|(index, _)| *index);
    layers.dedup_by_key(|(index, _)| *index);
    layers.into_iter().map(|(_, device)| device).collect()
}

/// How llama.cpp resolved an automatic flash-attention policy: `Flash Attention enabled` or
/// `Flash Attention not supported, set to disabled`.
pub(crate) fn flash_attention_resolved(log: &str) -> Option<FlashAttention> {
    log.lines().rev().find_map(|line| {
        if line.contains("Flash Attention enabled") {
            Some(FlashAttention::On)
        } else if line.contains("Flash Attention not supported") {
            Some(FlashAttention::Off)
        } else {
            None
        }
    })
}

/// A setting llama.cpp printed while creating a context, `llama_context: NAME = VALUE` (`n_seq_max`,
/// `n_ctx_seq`, `kv_unified`, …): what it decided, not what was asked. The last such line wins.
pub(crate) fn context_setting(log: &str, name: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let (function, rest) = line.split_once(':')?;
        let (key, value) = rest.split_once('=')?;
        (function.trim() == "llama_context" && key.trim() == name).then(|| value.trim().to_string())
    })
}

/// The buffers llama.cpp reported: `<device> model buffer size = X MiB`, `<device> KV buffer size = X MiB`,
/// `<device> compute buffer size = X MiB`.
pub(crate) fn buffers(log: &str) -> Vec<EngineBuffer> {
    const KINDS: [(&str, &str); 3] = [
        (" model buffer size = ", "model"),
        (" KV buffer size = ", "kv_cache"),
        (" compute buffer size = ", "compute"),
    ];
    log.lines()
        .filter_map(|line| {
            let (marker, kind) = KINDS.iter().find(|(marker, _)| line.contains(marker))?;
            let (before, after) = line.split_once(marker)?;
            // `function: NAME`: the name itself may hold a colon (`RPC0[127.0.0.1:50052]`).
            let device = before.split_once(':').map_or(before, |(_, name)| name).trim().to_string();
            let mib: f64 = after.split_whitespace().next()?.parse().ok()?;
            Some(EngineBuffer { device, kind: kind.to_string(), bytes: (mib * 1024.0 * 1024.0).round() as u64 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as llama.cpp (llama-cpp-sys-2 0.1.161) prints them.
    const LOAD_LOG: &str = "\
llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H200) (0000:19:00.0) - 142000 MiB free
load_tensors: offloading output layer to GPU
load_tensors: offloading 28 repeating layers to GPU
load_tensors: offloaded 29/29 layers to GPU
load_tensors:   CPU_Mapped model buffer size =   308.23 MiB
load_tensors:        CUDA0 model buffer size =  1918.35 MiB
";

    #[test]
    fn reads_model_buffers() {
        let buffers = buffers(LOAD_LOG);
        assert_eq!(buffers.len(), 2);
        assert_eq!((buffers[1].device.as_str(), buffers[1].kind.as_str()), ("CUDA0", "model"));
        assert_eq!(buffers[1].bytes, (1918.35f64 * 1048576.0).round() as u64);
    }

    #[test]
    fn reads_where_each_layer_went_and_rpc_buffers() {
        let log = "\
load_tensors: layer   0 assigned to device CPU, is_swa = 0
load_tensors: layer   1 assigned to device RPC0, is_swa = 0
load_tensors: layer  10 assigned to device RPC1, is_swa = 0
load_tensors: layer   2 assigned to device RPC0, is_swa = 0
load_tensors:   CPU_Mapped model buffer size =    25.66 MiB
load_tensors: RPC0[127.0.0.1:50052] model buffer size =    38.42 MiB
";
        assert_eq!(layer_devices(log), ["CPU", "RPC0", "RPC0", "RPC1"]);
        let buffers = buffers(log);
        assert_eq!(buffers[0].device, "CPU_Mapped");
        assert_eq!(buffers[1].device, "RPC0[127.0.0.1:50052]");
        assert_eq!(buffers[1].bytes, (38.42f64 * 1048576.0).round() as u64);
    }

    #[test]
    fn reads_the_resolved_flash_attention_policy() {
        let ctx_log = "llama_context: flash_attn = auto\nllama_context: Flash Attention enabled\n\
                       llama_kv_cache:        CPU KV buffer size =    45.00 MiB\n\
                       llama_context:        CPU compute buffer size =   300.76 MiB\n";
        assert_eq!(flash_attention_resolved(ctx_log), Some(FlashAttention::On));
        assert_eq!(
            flash_attention_resolved("x: Flash Attention not supported, set to disabled\n"),
            Some(FlashAttention::Off)
        );
        assert_eq!(flash_attention_resolved("llama_context: flash_attn = auto\n"), None);
        let kinds: Vec<String> = buffers(ctx_log).into_iter().map(|b| b.kind).collect();
        assert_eq!(kinds, ["kv_cache", "compute"]);
    }

    #[test]
    fn reads_the_sequences_a_context_holds() {
        let ctx_log = "\
llama_context: constructing llama_context
llama_context: n_seq_max             = 4
llama_context: n_ctx                 = 1024
llama_context: n_ctx_seq             = 256
llama_context: kv_unified            = false
llama_kv_cache: size =    6.00 MiB (   256 cells,  30 layers,  4/4 seqs), K (f16):    3.00 MiB
";
        assert_eq!(context_setting(ctx_log, "n_seq_max").as_deref(), Some("4"));
        assert_eq!(context_setting(ctx_log, "n_ctx_seq").as_deref(), Some("256"));
        assert_eq!(context_setting(ctx_log, "kv_unified").as_deref(), Some("false"));
        assert_eq!(context_setting(ctx_log, "n_ctx_train"), None);
        assert_eq!(context_setting("llama_kv_cache: n_seq_max = 9\n", "n_seq_max"), None, "another function's line");
    }
}
