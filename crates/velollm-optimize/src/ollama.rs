//! The Ollama server's environment variables that `velollm optimize` may write, each checked against Ollama's
//! source. Per-request options (`num_ctx`, `num_gpu`, `num_batch`, `num_thread`) are not among them: Ollama reads
//! those from a request's `options` or a Modelfile's `PARAMETER` lines, never from the environment
//! (`OLLAMA_NUM_CTX`, `OLLAMA_NUM_GPU`, `OLLAMA_NUM_BATCH`, `OLLAMA_NUM_THREAD` appear nowhere in its source).

/// The Ollama source every citation below refers to.
pub const OLLAMA_SOURCE: &str = "ollama/ollama commit fb30760 (2026-08-21)";

/// A server variable and where Ollama reads and uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVariable {
    pub name: &'static str,
    /// Where `envconfig` reads it.
    pub read_at: &'static str,
    /// Where the value takes effect.
    pub used_at: &'static str,
    /// The server's behaviour when unset.
    pub default: &'static str,
}

pub const FLASH_ATTENTION: ServerVariable = ServerVariable {
    name: "OLLAMA_FLASH_ATTENTION",
    read_at: "envconfig/config.go:216",
    used_at: "llm/llama_server.go:598 (--flash-attn on/off; unset: auto where supported)",
    default: "auto",
};
pub const KV_CACHE_TYPE: ServerVariable = ServerVariable {
    name: "OLLAMA_KV_CACHE_TYPE",
    read_at: "envconfig/config.go:222",
    used_at: "llm/server.go:118, llm/llama_server.go:395 (--cache-type-k and --cache-type-v)",
    default: "f16",
};
pub const CONTEXT_LENGTH: ServerVariable = ServerVariable {
    name: "OLLAMA_CONTEXT_LENGTH",
    read_at: "envconfig/config.go:230",
    used_at: "api/types.go:1115 (the default num_ctx of every request)",
    default: "by VRAM: 4k/32k/256k",
};
pub const NUM_PARALLEL: ServerVariable = ServerVariable {
    name: "OLLAMA_NUM_PARALLEL",
    read_at: "envconfig/config.go:275",
    used_at: "server/sched.go:497; llm/llama_server.go:375 (the KV cache holds num_ctx × this many tokens)",
    default: "1",
};
pub const MAX_LOADED_MODELS: ServerVariable = ServerVariable {
    name: "OLLAMA_MAX_LOADED_MODELS",
    read_at: "envconfig/config.go:277",
    used_at: "server/sched.go:226",
    default: "0, meaning 3 per GPU",
};
pub const KEEP_ALIVE: ServerVariable = ServerVariable {
    name: "OLLAMA_KEEP_ALIVE",
    read_at: "envconfig/config.go:131",
    used_at: "server/sched.go:512",
    default: "5m",
};
pub const SCHED_SPREAD: ServerVariable = ServerVariable {
    name: "OLLAMA_SCHED_SPREAD",
    read_at: "envconfig/config.go:228",
    used_at: "server/sched.go:1009",
    default: "false (one GPU when the model fits on one)",
};

/// Every variable `velollm optimize` may write.
pub const SERVER_VARIABLES: &[ServerVariable] =
    &[FLASH_ATTENTION, KV_CACHE_TYPE, CONTEXT_LENGTH, NUM_PARALLEL, MAX_LOADED_MODELS, KEEP_ALIVE, SCHED_SPREAD];

/// Names that circulate as Ollama settings but are request options, with the option that does the job.
pub const NOT_SERVER_VARIABLES: &[(&str, &str)] = &[
    ("OLLAMA_NUM_GPU", "num_gpu"),
    ("OLLAMA_NUM_CTX", "num_ctx (or the server-wide OLLAMA_CONTEXT_LENGTH)"),
    ("OLLAMA_NUM_BATCH", "num_batch"),
    ("OLLAMA_NUM_THREAD", "num_thread"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shell_identifiers_and_distinct() {
        let mut names: Vec<&str> = SERVER_VARIABLES.iter().map(|v| v.name).collect();
        for name in &names {
            assert!(name.starts_with("OLLAMA_"));
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SERVER_VARIABLES.len());
        for (name, _) in NOT_SERVER_VARIABLES {
            assert!(!names.contains(name));
        }
    }
}
