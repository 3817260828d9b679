//! The hardware snapshot as a result row records it: `velollm-hw`'s detection plus what only this crate knows,
//! the backends compiled into the build and the devices their engines see.

use velollm_core::{EngineDevice, HardwareInfo};

/// The devices the compiled-in engines see (llama.cpp's ggml devices; none without the `llamacpp` feature).
pub fn engine_devices() -> Vec<EngineDevice> {
    #[cfg(feature = "llamacpp")]
    return velollm_llamacpp::devices::devices();
    #[cfg(not(feature = "llamacpp"))]
    Vec::new()
}

/// [`velollm_hw::detect`] with this build's backends and engine devices filled in (`velollm detect`).
pub fn hardware_info() -> HardwareInfo {
    let mut hardware = velollm_hw::detect();
    hardware.backends = crate::available_backends().into_iter().map(str::to_string).collect();
    hardware.engine_devices = engine_devices();
    hardware
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_snapshot_names_this_builds_backends() {
        let hardware = super::hardware_info();
        assert_eq!(hardware.backends, crate::available_backends());
        if cfg!(feature = "llamacpp") {
            assert!(hardware.engine_devices.iter().any(|d| d.kind == "cpu"));
        }
    }
}
