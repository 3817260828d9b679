//! The `openai` backend: any server that speaks OpenAI's HTTP API (`/v1/models`, streaming
//! `/v1/chat/completions` and `/v1/completions`), measured from the client with the server's own counts.
//!
//! - [`client`]: a blocking client; Server-Sent Events read line by line, each chunk timed as its line is
//!   complete; usage (`usage`), llama.cpp's `timings` and vLLM/OpenAI's cached-token count when sent.
//! - [`backend`]: [`OpenAiBackend`], the `Backend`/`Session` pair for the one-request-at-a-time suite, and
//!   [`backend::OpenAiSender`], the [`velollm_core::RequestSender`] the load generator drives.
//!
//! The API key is read from an environment variable the user names (`--api-key-env VAR`); it is held in an
//! [`ApiKey`] whose `Debug` hides it, sent only in the `Authorization` header, and scrubbed from any error
//! text a server echoes. docs/servers.md says what each server returns.

pub mod backend;
pub mod client;

pub use backend::{OpenAiBackend, OpenAiSettings};
pub use client::{normalize_url, ApiKey, Endpoint, OpenAiClient, OpenAiError, Timeouts};
