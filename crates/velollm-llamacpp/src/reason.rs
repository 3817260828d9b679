//! Why llama.cpp refused a model or a context, in its own words: the most specific of the error lines it
//! logged while trying, not its generic last word (`llama_model_load_from_file_impl: failed to load model`).
//!
//! llama.cpp logs the cause first and then each caller's summary on the way out: ggml's GGUF parser says what
//! is wrong with the file (`gguf_init_from_file_impl: tensor 'x' has invalid ggml type 99 …`), the loader then
//! says `llama_model_load: error loading model: <the exception>`, whose text is either the cause itself
//! (`check_tensor_dims: tensor 'blk.0.attn_q.weight' not found`, `error loading model hyperparameters: key not
//! found in model: llama.context_length`) or another summary (`llama_model_loader: failed to load model from
//! PATH`), and finally `llama_model_load_from_file_impl: failed to load model`.

/// Whether a line is an error (the captured text has no log levels): every line of ggml's GGUF parser
/// (`gguf_…`, which logs only errors), and lines with an error's words. The loader's dump of the file's
/// metadata (`llama_model_loader: - kv …`, `print_info: …`) quotes the file's own strings and is never one.
fn is_error(line: &str) -> bool {
    if line.starts_with("llama_model_loader: - ") || line.starts_with("print_info:") {
        return false;
    }
    if line.starts_with("gguf_") {
        return true;
    }
    let lower = line.to_ascii_lowercase();
    ["error", "failed", "not found", "invalid", "wrong", "missing", "corrupted"].iter().any(|word| lower.contains(word))
}

/// A summary that only says that something failed, not what.
fn is_generic(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    let text = lower.trim_end_matches('.');
    text.ends_with("failed to load model")
        || text.contains("failed to load model from")
        || text.ends_with("failed to read header")
        || text.ends_with("failed to read tensor info")
        || text.ends_with("failed to read tensor data")
        || text.ends_with("failed to read key-value pairs")
        || text.ends_with("failed to initialize the context")
        || text.ends_with("failed to initialize context")
        || text.contains("failed to create context")
}

/// Drops the `function_name: ` prefix llama.cpp puts before every message.
fn without_function(line: &str) -> &str {
    match line.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && head.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => rest,
        _ => line,
    }
}

/// The most specific reason in `log`: the loader's exception text when it names the cause; otherwise the first
/// error line that is not a generic summary (the cause is logged before the summaries); otherwise the last
/// error line. `None` when nothing in the log looks like an error.
pub(crate) fn most_specific(log: &str) -> Option<String> {
    let errors: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty() && is_error(l)).collect();
    let loader = errors.iter().find_map(|l| l.split_once("error loading model: ").map(|(_, reason)| reason.trim()));
    if let Some(reason) = loader.filter(|r| !r.is_empty() && !is_generic(r)) {
        return Some(reason.to_string());
    }
    if let Some(first) = errors.iter().find(|l| !is_generic(without_function(l)) && !l.contains("error loading model"))
    {
        return Some(without_function(first).to_string());
    }
    errors.last().map(|l| l.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of llama.cpp's log (this build) for SmolLM2 with `blk.0.attn_q.weight` renamed in the file.
    const MISSING_TENSOR: &str = "\
llama_model_loader: - kv  12:                      tokenizer.ggml.tokens arr[str,49152]   = [\"error\", \"wrong\", ...
llama_model_loader: - type q4_1:  211 tensors
print_info: file format = GGUF V3 (latest)
load_tensors: loading model tensors, this can take a while... (mmap = true, direct_io = false)
llama_model_load: error loading model: check_tensor_dims: tensor 'blk.0.attn_q.weight' not found
llama_model_load_from_file_impl: failed to load model
";

    /// SmolLM2 with the key `llama.context_length` renamed.
    const MISSING_KEY: &str = "\
llama_model_loader: - type q4_1:  211 tensors
llama_model_load: error loading model: error loading model hyperparameters: key not found in model: llama.context_length
llama_model_load_from_file_impl: failed to load model
";

    /// SmolLM2 with `token_embd.weight` declared one row short: ggml's GGUF parser refuses the file with its own
    /// line first; the loader's line is only a summary.
    const BAD_OFFSET: &str = "\
gguf_init_from_reader: tensor 'blk.0.attn_norm.weight' has offset 30081024, expected 30080416
gguf_init_from_reader: failed to read tensor data
llama_model_load: error loading model: llama_model_loader: failed to load model from /tmp/wrong-shape.gguf
llama_model_load_from_file_impl: failed to load model
";

    #[test]
    fn the_loader_s_own_reason_wins_over_the_final_summary() {
        assert_eq!(most_specific(MISSING_TENSOR).unwrap(), "check_tensor_dims: tensor 'blk.0.attn_q.weight' not found");
        assert_eq!(
            most_specific(MISSING_KEY).unwrap(),
            "error loading model hyperparameters: key not found in model: llama.context_length"
        );
    }

    #[test]
    fn a_generic_loader_line_gives_way_to_the_parser_s_cause() {
        assert_eq!(
            most_specific(BAD_OFFSET).unwrap(),
            "tensor 'blk.0.attn_norm.weight' has offset 30081024, expected 30080416"
        );
    }

    #[test]
    fn only_generic_lines_give_the_last_one_and_no_error_gives_none() {
        assert_eq!(
            most_specific("llama_model_load_from_file_impl: failed to load model\n").unwrap(),
            "llama_model_load_from_file_impl: failed to load model"
        );
        assert_eq!(most_specific("print_info: file type   = Q4_1\n"), None);
    }
}
