//! The devices llama.cpp itself sees (ggml's backend registry): what `-ngl` can offload to in this build.

use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};
use velollm_core::EngineDevice;

/// Every ggml backend device compiled into this build (always the CPU; CUDA, Vulkan, Metal devices when
/// those backends are built in and a device is present). Needs no loaded model.
pub fn devices() -> Vec<EngineDevice> {
    // A build with dynamically loaded backends sees its devices only once they are loaded.
    crate::load_dynamic_backends();
    list_llama_ggml_backend_devices()
        .into_iter()
        .map(|device| EngineDevice {
            engine: "llamacpp".to_string(),
            backend: device.backend,
            name: device.name,
            description: device.description,
            kind: match device.device_type {
                LlamaBackendDeviceType::Cpu => "cpu",
                LlamaBackendDeviceType::Gpu => "gpu",
                LlamaBackendDeviceType::IntegratedGpu => "igpu",
                LlamaBackendDeviceType::Accelerator => "accel",
                LlamaBackendDeviceType::Unknown => "unknown",
            }
            .to_string(),
            memory_total_bytes: device.memory_total as u64,
            memory_free_bytes: device.memory_free as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_is_always_a_device() {
        let devices = super::devices();
        assert!(devices.iter().any(|d| d.kind == "cpu"), "{devices:?}");
        assert!(devices.iter().all(|d| d.engine == "llamacpp" && !d.name.is_empty()));
    }
}
