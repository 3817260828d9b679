//! The backends compiled into this build: their names, what `-b auto` means, and how each is made.

use velollm_core::{Backend, BackendError};

use super::RunOptions;
use crate::plan::Plan;
use crate::BenchError;

/// The backends compiled into this build, in the order `auto` prefers them.
pub fn available_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "llamacpp") {
        names.push("llamacpp");
    }
    if cfg!(feature = "candle") {
        names.push("candle");
    }
    if cfg!(feature = "ollama") {
        names.push("ollama");
    }
    if cfg!(feature = "openai") {
        names.push("openai");
    }
    names
}

/// The name `auto` stands for: llama.cpp when compiled in, otherwise candle (never a server backend, which
/// measures something else).
pub const AUTO_BACKEND: &str = "auto";

/// Resolves a backend name as users type it (`auto` included) to a backend compiled into this build.
pub fn resolve_backend(name: &str) -> Result<&'static str, BenchError> {
    let available = available_backends();
    let in_process: Vec<&str> = available.iter().copied().filter(|&b| b == "llamacpp" || b == "candle").collect();
    if name == AUTO_BACKEND {
        return in_process.first().copied().ok_or_else(|| BenchError::UnknownBackend {
            name: name.to_string(),
            available: if available.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{}; -b auto picks an in-process engine (llamacpp or candle) and this build has neither, so name \
                     the backend",
                    available.join(", ")
                )
            },
        });
    }
    available.iter().copied().find(|&b| b == name).ok_or_else(|| BenchError::UnknownBackend {
        name: name.to_string(),
        available: if available.is_empty() {
            "none".to_string()
        } else if in_process.is_empty() {
            available.join(", ")
        } else {
            format!("auto, {}", available.join(", "))
        },
    })
}

/// Makes the backend named by a plan, or `None` to use the compiled-in one of that name.
pub type BackendFactory = dyn Fn(&str) -> Option<Box<dyn Backend>> + Sync;

/// The thread count candle's process-wide pools get: the first the plan asks for.
pub(super) fn first_threads(plan: &Plan) -> u32 {
    plan.spec.n_threads.first().copied().unwrap_or(1)
}

pub(super) fn make_backend(name: &str, options: &RunOptions, threads: u32) -> Result<Box<dyn Backend>, BenchError> {
    let _ = threads;
    match resolve_backend(name)? {
        #[cfg(feature = "llamacpp")]
        "llamacpp" => Ok(Box::new(velollm_llamacpp::LlamaCppBackend::new(options.engine_logs))),
        #[cfg(feature = "candle")]
        "candle" => Ok(Box::new(velollm_candle::CandleBackend::new(threads))),
        #[cfg(feature = "ollama")]
        "ollama" => {
            let server = &options.server;
            let url = velollm_ollama::base_url(server.url.as_deref())
                .map_err(|e| BenchError::Backend(BackendError::Server(e.to_string())))?;
            let explicit = options.explicit;
            Ok(Box::new(velollm_ollama::OllamaBackend::new(velollm_ollama::OllamaSettings {
                url,
                timeouts: velollm_ollama::client::Timeouts {
                    connect: server.connect_timeout,
                    idle: server.idle_timeout,
                    load: server.load_timeout,
                },
                explicit: velollm_ollama::ExplicitOptions {
                    num_gpu: explicit.n_gpu_layers,
                    num_thread: explicit.threads,
                    num_batch: explicit.batch_size,
                },
                keep_loaded: server.keep_loaded,
            })))
        }
        #[cfg(feature = "openai")]
        "openai" => make_openai(options),
        other => {
            let _ = options;
            Err(BenchError::Internal(format!("backend '{other}' is listed but not constructible")))
        }
    }
}

/// `-b openai`: the URL, the key from the variable `--api-key-env` names, the endpoint, and a connection pool
/// as large as the most requests a load run keeps in flight.
#[cfg(feature = "openai")]
fn make_openai(options: &RunOptions) -> Result<Box<dyn Backend>, BenchError> {
    let server_error = |e: velollm_openai::OpenAiError| BenchError::Backend(BackendError::Server(e.to_string()));
    let Some(url) = options.openai.url.as_deref() else {
        return Err(BenchError::Backend(BackendError::Server(
            "-b openai needs the server's address: --url http://HOST:PORT/v1".into(),
        )));
    };
    let url = velollm_openai::normalize_url(url).map_err(server_error)?;
    let key = match options.openai.api_key_env.as_deref() {
        Some(variable) => Some(velollm_openai::ApiKey::from_env(variable).map_err(server_error)?),
        None => None,
    };
    let load = &options.load;
    let open_loop = !load.rates.is_empty() || load.sweep.is_some();
    let closed = load.concurrency.iter().copied().max().unwrap_or(1);
    let pool = if open_loop { closed.max(load.max_concurrency) } else { closed };
    Ok(Box::new(velollm_openai::OpenAiBackend::new(velollm_openai::OpenAiSettings {
        url,
        key,
        endpoint: if options.openai.completions {
            velollm_openai::Endpoint::Completions
        } else {
            velollm_openai::Endpoint::Chat
        },
        timeouts: velollm_openai::Timeouts {
            connect: options.server.connect_timeout,
            idle: options.server.idle_timeout,
        },
        pool: pool as usize,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_resolves_to_the_preferred_compiled_backend() {
        let available = available_backends();
        if cfg!(feature = "llamacpp") {
            assert_eq!(resolve_backend("auto").unwrap(), "llamacpp");
        } else if cfg!(feature = "candle") {
            assert_eq!(resolve_backend("auto").unwrap(), "candle");
        } else {
            let err = resolve_backend("auto").unwrap_err().to_string();
            assert!(err.contains("-b auto picks an in-process engine"), "{err}");
        }
        for name in available {
            assert_eq!(resolve_backend(name).unwrap(), name);
        }
    }
}
