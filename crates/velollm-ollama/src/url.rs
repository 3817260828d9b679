//! The server address: `--ollama-url`, else `OLLAMA_HOST`, else the default, in any of the forms Ollama
//! itself accepts (`host`, `host:port`, `:port`, with or without `http://` / `https://`).

use crate::OllamaError;

/// Where Ollama listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://localhost:11434";
const DEFAULT_PORT: u16 = 11434;

/// The base URL to talk to: `explicit` (the `--ollama-url` flag) wins, then `OLLAMA_HOST`, then
/// [`DEFAULT_URL`]. Returned without a trailing slash.
pub fn base_url(explicit: Option<&str>) -> Result<String, OllamaError> {
    match explicit {
        Some(url) => normalize(url),
        None => match std::env::var("OLLAMA_HOST") {
            Ok(host) if !host.trim().is_empty() => normalize(&host),
            _ => Ok(DEFAULT_URL.to_string()),
        },
    }
}

/// Completes a host specification to `scheme://host:port[/path]`.
pub fn normalize(raw: &str) -> Result<String, OllamaError> {
    let bad = |reason: &str| OllamaError::BadUrl { url: raw.to_string(), reason: reason.to_string() };
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_string(), trimmed),
    };
    let default_port = match scheme.as_str() {
        "http" => DEFAULT_PORT,
        "https" => 443,
        _ => return Err(bad("only http:// and https:// are supported")),
    };
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host_port.chars().any(char::is_whitespace) {
        return Err(bad("it contains spaces"));
    }
    // `:11434` means this machine; an IPv6 literal is bracketed and may have colons of its own.
    let host_port = if host_port.starts_with(':') { format!("127.0.0.1{host_port}") } else { host_port.to_string() };
    let port_part = if host_port.starts_with('[') {
        host_port.split_once("]:").map(|(_, port)| port)
    } else {
        host_port.rsplit_once(':').map(|(_, port)| port)
    };
    let host = match port_part {
        Some(port) => {
            port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
            host_port
        }
        None => format!("{host_port}:{default_port}"),
    };
    if host.starts_with(':') || host.is_empty() {
        return Err(bad("it names no host"));
    }
    Ok(format!("{scheme}://{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_ollama_accepts() {
        assert_eq!(normalize("localhost").unwrap(), "http://localhost:11434");
        assert_eq!(normalize("0.0.0.0:8080").unwrap(), "http://0.0.0.0:8080");
        assert_eq!(normalize(":9999").unwrap(), "http://127.0.0.1:9999");
        assert_eq!(normalize("http://example.com/").unwrap(), "http://example.com:11434");
        assert_eq!(normalize("https://example.com").unwrap(), "https://example.com:443");
        assert_eq!(normalize("HTTP://h:1/ollama").unwrap(), "http://h:1/ollama");
        assert_eq!(normalize("[::1]").unwrap(), "http://[::1]:11434");
        assert_eq!(normalize("[::1]:5").unwrap(), "http://[::1]:5");
    }

    #[test]
    fn rejects_what_cannot_be_an_address() {
        assert!(normalize("").is_err());
        assert!(normalize("ftp://h").unwrap_err().to_string().contains("http://"));
        assert!(normalize("h:notaport").unwrap_err().to_string().contains("port"));
        assert!(normalize("h:70000").is_err());
    }
}
