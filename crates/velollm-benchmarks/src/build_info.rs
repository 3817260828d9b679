//! What this build holds (`velollm --version`): the backends compiled in with their engines' versions, and the
//! engines' optional parts.

use crate::available_backends;

/// What this build holds, for `velollm --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Each backend compiled in, in `auto`'s order, with its engine's version (a server's is the server's, known
    /// only once it answers: `None`).
    pub engines: Vec<(&'static str, Option<String>)>,
    /// The engines' optional parts compiled in: `cuda`, `dynamic-backends`, `rpc`.
    pub features: Vec<&'static str>,
}

/// This build's backends with their engine versions, and their optional parts. Reads static strings only: no
/// engine is started.
pub fn build_info() -> BuildInfo {
    let engines = available_backends()
        .into_iter()
        .map(|name| {
            let version = match name {
                #[cfg(feature = "llamacpp")]
                "llamacpp" => Some(velollm_llamacpp::version()),
                #[cfg(feature = "candle")]
                "candle" => Some(format!("candle {}", velollm_candle::CANDLE_VERSION)),
                _ => None,
            };
            (name, version)
        })
        .collect();
    let mut features = Vec::new();
    if cfg!(feature = "cuda") {
        features.push("cuda");
    }
    if cfg!(feature = "dynamic-backends") {
        features.push("dynamic-backends");
    }
    #[cfg(feature = "llamacpp")]
    if velollm_llamacpp::rpc::compiled_in() {
        features.push("rpc");
    }
    BuildInfo { engines, features }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_info_lists_every_compiled_backend_with_its_engine_version() {
        let info = build_info();
        let names: Vec<&str> = info.engines.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, available_backends());
        for (name, version) in &info.engines {
            match *name {
                "llamacpp" => {
                    let version = version.as_deref().unwrap();
                    assert!(version.starts_with("llama.cpp (llama-cpp-sys-2 0.1."), "{version}");
                    // ggml's own version comes from the linked library, not from a constant.
                    assert!(version.contains("ggml 0.") && !version.contains("ggml unknown"), "{version}");
                }
                "candle" => assert!(version.as_deref().unwrap().starts_with("candle 0."), "{version:?}"),
                _ => assert_eq!(*version, None, "a server's version is known only once it answers"),
            }
        }
        // The workspace builds llama.cpp with GGML_RPC=ON (.cargo/config.toml).
        if cfg!(feature = "llamacpp") {
            assert!(info.features.contains(&"rpc"), "{:?}", info.features);
        }
    }
}
