//! Loading a model with every load parameter llama.cpp takes, and reading where it put each layer.
//!
//! llama-cpp-2 0.1.160's `LlamaModelParams` has no setter for `tensor_split`, so the model is loaded here with
//! llama.cpp's own parameter struct and handed to llama-cpp-2 as the owned `LlamaModel` it would have made.

use std::ffi::{c_void, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use llama_cpp_2::model::LlamaModel;
use llama_cpp_sys_2::ggml_backend_dev_t;
use velollm_core::{DevicePlacement, DeviceSelection, EngineBuffer, LoadParams, SplitMode};

/// Why a load did not give a model.
pub(crate) enum LoadFailure {
    /// The parameters name something this build or machine does not have (an unknown device, too many
    /// proportions): nothing was attempted.
    Parameters(String),
    /// Ctrl-C during the load.
    Cancelled,
    /// llama.cpp refused or failed; its reason is in its log.
    Engine,
}

/// A device of the load and what it looked like before the model arrived.
pub(crate) struct LoadDevice {
    handle: ggml_backend_dev_t,
    name: String,
    backend: String,
    description: String,
    memory_before: Option<(u64, u64)>,
}

/// The devices a load with `selection` may use, CPU first; unknown names are a one-line error.
fn load_devices(selection: &DeviceSelection) -> Result<(Vec<ggml_backend_dev_t>, Vec<LoadDevice>), String> {
    let all = crate::devices::devices();
    let offload: Vec<String> = match selection {
        DeviceSelection::None => Vec::new(),
        DeviceSelection::Auto => {
            all.iter().filter(|d| d.kind == "gpu" || d.kind == "igpu").map(|d| d.name.clone()).collect()
        }
        DeviceSelection::Named(names) => {
            for name in names {
                match all.iter().find(|d| &d.name == name) {
                    None => {
                        let offloadable: Vec<&str> = all
                            .iter()
                            .filter(|d| d.kind != "cpu" && d.kind != "accel")
                            .map(|d| d.name.as_str())
                            .collect();
                        return Err(format!(
                            "invalid --device '{name}': no such device in this build or machine (offload devices: {})",
                            if offloadable.is_empty() {
                                "none; add RPC servers with --rpc".to_string()
                            } else {
                                offloadable.join(", ")
                            }
                        ));
                    }
                    Some(d) if d.kind == "cpu" || d.kind == "accel" => {
                        return Err(format!(
                            "invalid --device '{name}': the CPU is not an offload device (use --device none to keep every layer on it)"
                        ));
                    }
                    Some(_) => {}
                }
            }
            names.clone()
        }
    };
    let mut handles = Vec::new();
    let mut devices = Vec::new();
    let cpu = all.iter().find(|d| d.kind == "cpu").map(|d| d.name.clone());
    for name in cpu.iter().chain(&offload) {
        let c_name = CString::new(name.as_str()).map_err(|_| format!("invalid device name '{name}'"))?;
        // SAFETY: a registry lookup by NUL-terminated name.
        let handle = unsafe { llama_cpp_sys_2::ggml_backend_dev_by_name(c_name.as_ptr()) };
        if handle.is_null() {
            return Err(format!("device {name} is not registered"));
        }
        let known = all.iter().find(|d| &d.name == name);
        if Some(name) != cpu.as_ref() {
            handles.push(handle);
        }
        devices.push(LoadDevice {
            handle,
            name: name.clone(),
            backend: known.map(|d| d.backend.clone()).unwrap_or_default(),
            description: known.map(|d| d.description.clone()).unwrap_or_default(),
            memory_before: device_memory(handle),
        });
    }
    Ok((handles, devices))
}

/// A device's free and total memory as ggml reports it; `None` when it reports nothing.
fn device_memory(handle: ggml_backend_dev_t) -> Option<(u64, u64)> {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: a registered device; ggml writes both values.
    unsafe { llama_cpp_sys_2::ggml_backend_dev_memory(handle, &mut free, &mut total) };
    (total > 0).then_some((free as u64, total as u64))
}

unsafe extern "C" fn keep_loading(_progress: f32, cancel: *mut c_void) -> bool {
    // SAFETY: `cancel` points at the AtomicBool owned by `load` for the whole call.
    !unsafe { &*cancel.cast::<AtomicBool>() }.load(Ordering::Relaxed)
}

/// Loads `path` with `params`. Returns the model and the devices of the load (memory before it).
pub(crate) fn load(
    path: &Path,
    params: &LoadParams,
    cancel: &AtomicBool,
) -> Result<(LlamaModel, Vec<LoadDevice>), LoadFailure> {
    let (mut offload_handles, devices) = load_devices(&params.devices).map_err(LoadFailure::Parameters)?;
    // SAFETY: llama.cpp's defaults, then plain fields set below.
    let mut raw = unsafe { llama_cpp_sys_2::llama_model_default_params() };
    raw.n_gpu_layers = i32::try_from(params.n_gpu_layers.as_count()).unwrap_or(i32::MAX);
    raw.split_mode = match params.split_mode {
        SplitMode::None => llama_cpp_sys_2::LLAMA_SPLIT_MODE_NONE,
        SplitMode::Layer => llama_cpp_sys_2::LLAMA_SPLIT_MODE_LAYER,
        SplitMode::Row => llama_cpp_sys_2::LLAMA_SPLIT_MODE_ROW,
    };
    raw.main_gpu = i32::try_from(params.main_gpu).unwrap_or(i32::MAX);
    raw.load_mode =
        if params.use_mmap { llama_cpp_sys_2::LLAMA_LOAD_MODE_MMAP } else { llama_cpp_sys_2::LLAMA_LOAD_MODE_NONE };
    // `Auto` leaves the list null: llama.cpp then takes every GPU and RPC device itself.
    if params.devices != DeviceSelection::Auto {
        offload_handles.push(std::ptr::null_mut());
        raw.devices = offload_handles.as_mut_ptr();
    }
    // SAFETY: a constant of this build.
    let max_devices = unsafe { llama_cpp_sys_2::llama_max_devices() };
    let proportions = params.tensor_split.proportions();
    if proportions.len() > max_devices {
        return Err(LoadFailure::Parameters(format!(
            "invalid --tensor-split {}: {} proportions, this build supports {max_devices} devices",
            params.tensor_split,
            proportions.len()
        )));
    }
    let mut split = vec![0f32; max_devices];
    split[..proportions.len()].copy_from_slice(proportions);
    if !params.tensor_split.is_default() {
        raw.tensor_split = split.as_ptr();
    }
    raw.progress_callback = Some(keep_loading);
    raw.progress_callback_user_data = std::ptr::from_ref(cancel).cast_mut().cast::<c_void>();

    let c_path = path
        .to_str()
        .and_then(|p| CString::new(p).ok())
        .ok_or_else(|| LoadFailure::Parameters(format!("the path {} is not valid UTF-8", path.display())))?;
    // SAFETY: every pointer in `raw` (devices, split, cancel) outlives the call.
    let model = unsafe { llama_cpp_sys_2::llama_model_load_from_file(c_path.as_ptr(), raw) };
    let Some(model) = NonNull::new(model) else {
        return Err(if cancel.load(Ordering::Relaxed) { LoadFailure::Cancelled } else { LoadFailure::Engine });
    };
    // SAFETY: `LlamaModel` is `repr(transparent)` over llama-cpp-2's `Ptr`, itself `repr(transparent)` over
    // `NonNull<llama_model>` (llama-cpp-2 =0.1.160, pinned), and owns the model exactly as
    // `LlamaModel::load_from_file` would: it frees it on drop.
    let model: LlamaModel = unsafe { std::mem::transmute::<NonNull<llama_cpp_sys_2::llama_model>, LlamaModel>(model) };
    Ok((model, devices))
}

/// Every device of the load with the layers llama.cpp assigned to it (its `layer N assigned to device X`
/// lines), its weight buffers and its memory before and after.
pub(crate) fn placement(devices: &[LoadDevice], log: &str, buffers: &[EngineBuffer]) -> Vec<DevicePlacement> {
    let layers = crate::logs::layer_devices(log);
    let all = crate::devices::devices();
    devices
        .iter()
        .map(|device| {
            let model_buffer_bytes = buffers
                .iter()
                .filter(|b| {
                    b.kind == "model" && buffer_device(&b.device, &all).as_deref() == Some(device.name.as_str())
                })
                .map(|b| b.bytes)
                .sum();
            let after = device_memory(device.handle);
            DevicePlacement {
                name: device.name.clone(),
                backend: device.backend.clone(),
                description: device.description.clone(),
                layers: layers.iter().filter(|d| *d == &device.name).count() as u32,
                model_buffer_bytes,
                memory_free_before_bytes: device.memory_before.map(|m| m.0),
                memory_total_before_bytes: device.memory_before.map(|m| m.1),
                memory_free_after_bytes: after.map(|m| m.0),
                memory_total_after_bytes: after.map(|m| m.1),
            }
        })
        .collect()
}

/// The device a buffer llama.cpp named lives on: `CPU`, `CPU_Mapped`, `CPU_REPACK` and `CUDA_Host` (pinned
/// host memory) on the CPU; `CUDA0` on CUDA0; an RPC buffer `RPC<i>[host:port]` on the i-th device of that
/// server (the buffer counts devices per server, the device names across servers).
pub(crate) fn buffer_device(buffer: &str, devices: &[velollm_core::EngineDevice]) -> Option<String> {
    if let Some((prefix, rest)) = buffer.split_once('[') {
        let endpoint = rest.strip_suffix(']')?;
        let local_index: usize = prefix.strip_prefix("RPC")?.parse().ok()?;
        return devices
            .iter()
            .filter(|d| d.backend == "RPC" && d.description == endpoint)
            .nth(local_index)
            .map(|d| d.name.clone());
    }
    if let Some(device) = devices.iter().find(|d| d.name == buffer) {
        return Some(device.name.clone());
    }
    let cpu = devices.iter().find(|d| d.kind == "cpu").map(|d| d.name.clone());
    if buffer.starts_with("CPU") || buffer.ends_with("_Host") {
        return cpu;
    }
    devices.iter().find(|d| buffer.starts_with(&format!("{}_", d.name))).map(|d| d.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use velollm_core::EngineDevice;

    fn device(name: &str, backend: &str, description: &str, kind: &str) -> EngineDevice {
        EngineDevice {
            engine: "llamacpp".into(),
            backend: backend.into(),
            name: name.into(),
            description: description.into(),
            kind: kind.into(),
            memory_total_bytes: 0,
            memory_free_bytes: 0,
        }
    }

    #[test]
    fn buffers_are_attributed_to_their_devices() {
        let devices = [
            device("CPU", "CPU", "Xeon", "cpu"),
            device("RPC0", "RPC", "127.0.0.1:5001", "gpu"),
            device("RPC1", "RPC", "127.0.0.1:5002", "gpu"),
            device("RPC2", "RPC", "127.0.0.1:5002", "gpu"),
            device("CUDA0", "CUDA", "NVIDIA H100", "gpu"),
        ];
        let on = |buffer: &str| buffer_device(buffer, &devices);
        assert_eq!(on("CPU_Mapped").as_deref(), Some("CPU"));
        assert_eq!(on("CPU_REPACK").as_deref(), Some("CPU"));
        assert_eq!(on("CUDA_Host").as_deref(), Some("CPU"));
        assert_eq!(on("CUDA0").as_deref(), Some("CUDA0"));
        assert_eq!(on("RPC0[127.0.0.1:5001]").as_deref(), Some("RPC0"));
        // The second server's buffers count its own devices from 0.
        assert_eq!(on("RPC0[127.0.0.1:5002]").as_deref(), Some("RPC1"));
        assert_eq!(on("RPC1[127.0.0.1:5002]").as_deref(), Some("RPC2"));
        assert_eq!(on("RPC0[127.0.0.1:9999]"), None);
        assert_eq!(on("Metal"), None);
    }
}
