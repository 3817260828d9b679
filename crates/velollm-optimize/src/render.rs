//! A [`Plan`] as a sourceable shell script (`-o FILE`) or as `current → recommended` lines (`--dry-run`).
//!
//! The script exports only Ollama server variables ([`crate::ollama`]); everything else is comments: the
//! per-request options in a Modelfile and as API `options`, and the `velollm benchmark` and llama.cpp flags. Values
//! are single-quoted and every comment is stripped of control characters, so no model name or reason can break
//! out of its line.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::ollama::{self, ServerVariable};
use crate::{GpuLayers, Plan};

/// `value` as one single-quoted shell word (`it's` → `'it'\''s'`).
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Text safe inside a `#` comment: control characters (newlines included) become spaces.
fn comment_text(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `text` as `#` comment lines of at most ~110 characters.
fn comment(text: &str, indent: &str) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in comment_text(text).split_whitespace() {
        if !line.is_empty() && line.len() + word.len() + 1 > 108 - indent.len() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines.iter().map(|l| format!("#{indent} {l}").trim_end().to_string() + "\n").collect()
}

/// One server variable to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSetting {
    pub variable: ServerVariable,
    pub value: String,
    pub reason: String,
}

/// The Ollama server variables of a plan, in [`ollama::SERVER_VARIABLES`] order.
pub fn server_settings(plan: &Plan) -> Vec<ServerSetting> {
    let r = &plan.recommended;
    let mut out = Vec::new();
    let mut push = |variable: ServerVariable, value: Option<(String, &String)>| {
        if let Some((value, reason)) = value {
            out.push(ServerSetting { variable, value, reason: reason.clone() });
        }
    };
    push(
        ollama::FLASH_ATTENTION,
        r.flash_attn.as_ref().map(|c| ((if c.value { "1" } else { "0" }).to_string(), &c.reason)),
    );
    // Ollama has one type for K and V: only written when they agree.
    if r.v_cache_type.is_none() {
        push(ollama::KV_CACHE_TYPE, r.kv_cache_type.as_ref().map(|c| (c.value.clone(), &c.reason)));
    }
    push(ollama::CONTEXT_LENGTH, r.ctx_size.as_ref().map(|c| (c.value.to_string(), &c.reason)));
    push(ollama::NUM_PARALLEL, r.num_parallel.as_ref().map(|c| (c.value.to_string(), &c.reason)));
    push(ollama::MAX_LOADED_MODELS, r.max_loaded_models.as_ref().map(|c| (c.value.to_string(), &c.reason)));
    push(ollama::KEEP_ALIVE, r.keep_alive.as_ref().map(|c| (c.value.clone(), &c.reason)));
    push(
        ollama::SCHED_SPREAD,
        r.sched_spread.as_ref().map(|c| ((if c.value { "1" } else { "0" }).to_string(), &c.reason)),
    );
    out
}

/// A per-request option: name, JSON value, reason, Ollama's behaviour without it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOption {
    pub name: &'static str,
    pub value: Value,
    pub reason: String,
    pub default: &'static str,
}

/// The request options of a plan. `num_gpu` is written only for a partial (or no) offload: Ollama fits the
/// layers itself by default. `num_batch` sets both llama.cpp batch sizes in Ollama (llm/llama_server.go:590), so
/// it takes the physical batch (`ubatch`).
pub fn request_options(plan: &Plan) -> Vec<RequestOption> {
    let r = &plan.recommended;
    let mut out = Vec::new();
    if let Some(c) = &r.ctx_size {
        out.push(RequestOption {
            name: "num_ctx",
            value: json!(c.value),
            reason: c.reason.clone(),
            default: "OLLAMA_CONTEXT_LENGTH",
        });
    }
    if let Some(c) = &r.threads {
        out.push(RequestOption {
            name: "num_thread",
            value: json!(c.value),
            reason: c.reason.clone(),
            default: "chosen by the runner",
        });
    }
    if let Some(c) = &r.gpu_layers {
        if let GpuLayers::Count(n) = c.value {
            out.push(RequestOption {
                name: "num_gpu",
                value: json!(n),
                reason: c.reason.clone(),
                default: "fitted automatically",
            });
        }
    }
    if let Some(c) = &r.ubatch_size {
        out.push(RequestOption { name: "num_batch", value: json!(c.value), reason: c.reason.clone(), default: "512" });
    }
    out
}

/// `(flag, recommended value, velollm's default)` for `velollm benchmark`.
pub fn velollm_flags(plan: &Plan) -> Vec<(&'static str, String, &'static str)> {
    let r = &plan.recommended;
    let mut out = Vec::new();
    if let Some(c) = &r.threads {
        out.push(("--threads", c.value.to_string(), "physical cores"));
    }
    if let Some(c) = &r.gpu_layers {
        out.push(("--n-gpu-layers", c.value.to_string(), "all"));
    }
    if let Some(c) = &r.ctx_size {
        out.push(("--ctx-size", c.value.to_string(), "2048"));
    }
    if let Some(c) = &r.batch_size {
        out.push(("--batch-size", c.value.to_string(), "2048"));
    }
    if let Some(c) = &r.ubatch_size {
        out.push(("--ubatch-size", c.value.to_string(), "512"));
    }
    if let Some(c) = &r.flash_attn {
        out.push(("--flash-attn", (if c.value { "on" } else { "off" }).to_string(), "auto"));
    }
    if let Some(c) = &r.kv_cache_type {
        out.push(("--cache-type-k", c.value.clone(), "f16"));
        let v = r.v_cache_type.as_ref().map_or(&c.value, |v| &v.value);
        out.push(("--cache-type-v", v.clone(), "f16"));
    }
    out
}

/// The same settings as llama.cpp's own flags (llama-server, llama-cli, llama-bench).
pub fn llama_cpp_flags(plan: &Plan) -> Vec<String> {
    let r = &plan.recommended;
    let mut out = Vec::new();
    if let Some(c) = &r.threads {
        out.push(format!("-t {}", c.value));
    }
    if let Some(c) = &r.gpu_layers {
        out.push(match c.value {
            GpuLayers::All => "-ngl 999".to_string(),
            GpuLayers::Count(n) => format!("-ngl {n}"),
        });
    }
    if let Some(c) = &r.ctx_size {
        out.push(format!("-c {}", c.value));
    }
    if let Some(c) = &r.batch_size {
        out.push(format!("-b {}", c.value));
    }
    if let Some(c) = &r.ubatch_size {
        out.push(format!("-ub {}", c.value));
    }
    if let Some(c) = &r.flash_attn {
        out.push(format!("-fa {}", if c.value { "on" } else { "off" }));
    }
    if let Some(c) = &r.kv_cache_type {
        let v = r.v_cache_type.as_ref().map_or(&c.value, |v| &v.value);
        out.push(format!("-ctk {} -ctv {v}", c.value));
    }
    out
}

fn model_or_placeholder(plan: &Plan) -> String {
    plan.model.as_deref().map(comment_text).unwrap_or_else(|| "MODEL".to_string())
}

/// The sourceable script.
pub fn script(plan: &Plan, generated_at: &str, velollm_version: &str) -> String {
    let mut s = String::from("# shellcheck shell=bash\n");
    s += &comment(&format!("velollm optimize {velollm_version}, {generated_at}"), "");
    s += &comment(&format!("Machine: {}", plan.machine), "");
    if let Some(model) = &plan.model {
        s += &comment(&format!("Model: {model}"), "");
    }
    s += &comment(&format!("Based on: {}", plan.basis), "");
    s += "#\n";
    s += "# Use: source this file, then start the Ollama server from the same shell:\n";
    s += "#   source velollm.sh && ollama serve\n";
    s += "# A server run by systemd does not read your shell: add the same variables with `systemctl edit ollama`\n";
    s += "# as Environment=\"NAME=value\" lines under [Service], then `systemctl restart ollama`.\n";
    s += "#\n";
    s += &comment(
        &format!(
            "Only variables the Ollama server reads are exported; each cites where Ollama's source ({}) reads \
             and uses it. {} are not Ollama settings at all: they are per-request options, written further down \
             where they take effect.",
            ollama::OLLAMA_SOURCE,
            ollama::NOT_SERVER_VARIABLES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
        ),
        "",
    );
    for note in &plan.notes {
        s += &comment(&format!("Note: {note}"), "");
    }
    for setting in server_settings(plan) {
        s += "\n";
        s += &comment(&setting.reason, "");
        s += &comment(
            &format!(
                "{}: read at {}; used at {}; unset: {}.",
                setting.variable.name, setting.variable.read_at, setting.variable.used_at, setting.variable.default
            ),
            "",
        );
        s += &format!("export {}={}\n", setting.variable.name, shell_quote(&setting.value));
    }

    let options = request_options(plan);
    if !options.is_empty() {
        let model = model_or_placeholder(plan);
        s += "\n# ---- Per-request options (not environment variables) ----\n";
        for option in &options {
            s += &comment(&format!("{} {}: {}", option.name, option.value, option.reason), "");
        }
        s += "# In a Modelfile (then: ollama create NAME -f Modelfile):\n";
        s += &comment(&format!("FROM {model}"), "  ");
        for option in &options {
            s += &comment(&format!("PARAMETER {} {}", option.name, option.value), "  ");
        }
        // A GGUF path is not an Ollama model name: the request names the model created from the Modelfile.
        let api_model = match plan.model.as_deref() {
            Some(name) if !name.ends_with(".gguf") => name,
            _ => "NAME",
        };
        s += "# Or in each request to /api/generate or /api/chat:\n";
        let object: Map<String, Value> = options.iter().map(|o| (o.name.to_string(), o.value.clone())).collect();
        let body = json!({"model": api_model, "prompt": "...", "options": object});
        s += &format!("#   {}\n", comment_text(&body.to_string()));
    }

    let flags = velollm_flags(plan);
    if !flags.is_empty() {
        let model = model_or_placeholder(plan);
        s += "\n# ---- The same settings for velollm and llama.cpp ----\n";
        let velollm: Vec<String> = flags.iter().map(|(flag, value, _)| format!("{flag} {value}")).collect();
        s += &format!("#   velollm benchmark -m {model} {}\n", velollm.join(" "));
        s += &format!("#   llama-server -m {model} {}\n", llama_cpp_flags(plan).join(" "));
    }
    s
}

/// `current → recommended` with the reason, for every setting (`--dry-run`). `environment` holds the Ollama
/// variables set in velollm's own environment (the server's may differ).
pub fn dry_run(plan: &Plan, environment: &BTreeMap<String, String>) -> String {
    let mut s = format!("velollm optimize --dry-run: nothing is written\nMachine: {}\n", plan.machine);
    if let Some(model) = &plan.model {
        s += &format!("Model: {}\n", comment_text(model));
    }
    s += &format!("Based on: {}\n", plan.basis);
    let line = |name: &str, current: String, recommended: &str, reason: &str| {
        format!("  {name:<26} {current} → {recommended}\n      {}\n", comment_text(reason))
    };
    s += "\nOllama server (environment, read when `ollama serve` starts; current = this shell's):\n";
    for setting in server_settings(plan) {
        let current = match environment.get(setting.variable.name) {
            Some(value) => value.clone(),
            None => format!("unset ({})", setting.variable.default),
        };
        s += &line(setting.variable.name, current, &setting.value, &setting.reason);
    }
    let options = request_options(plan);
    if !options.is_empty() {
        s += "\nPer request (Modelfile PARAMETER or API options):\n";
        for option in options {
            s += &line(option.name, format!("default ({})", option.default), &option.value.to_string(), &option.reason);
        }
    }
    let flags = velollm_flags(plan);
    if !flags.is_empty() {
        s += "\nvelollm benchmark flags (llama.cpp: ";
        s += &llama_cpp_flags(plan).join(" ");
        s += "):\n";
        let reasons = flag_reasons(plan);
        for (flag, value, default) in flags {
            s += &line(flag, format!("default ({default})"), &value, reasons.get(flag).map_or("", |r| r.as_str()));
        }
    }
    for note in &plan.notes {
        s += &format!("\nNote: {}\n", comment_text(note));
    }
    s
}

fn flag_reasons(plan: &Plan) -> BTreeMap<&'static str, String> {
    let r = &plan.recommended;
    let mut out = BTreeMap::new();
    let mut put = |flag: &'static str, reason: Option<&String>| {
        if let Some(reason) = reason {
            out.insert(flag, reason.clone());
        }
    };
    put("--threads", r.threads.as_ref().map(|c| &c.reason));
    put("--n-gpu-layers", r.gpu_layers.as_ref().map(|c| &c.reason));
    put("--ctx-size", r.ctx_size.as_ref().map(|c| &c.reason));
    put("--batch-size", r.batch_size.as_ref().map(|c| &c.reason));
    put("--ubatch-size", r.ubatch_size.as_ref().map(|c| &c.reason));
    put("--flash-attn", r.flash_attn.as_ref().map(|c| &c.reason));
    put("--cache-type-k", r.kv_cache_type.as_ref().map(|c| &c.reason));
    put("--cache-type-v", r.v_cache_type.as_ref().or(r.kv_cache_type.as_ref()).map(|c| &c.reason));
    out
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::{Choice, Recommended};

    fn plan() -> Plan {
        Plan {
            recommended: Recommended {
                threads: Some(Choice::new(8, "eight cores")),
                gpu_layers: Some(Choice::new(GpuLayers::Count(20), "partial")),
                ctx_size: Some(Choice::new(4096, "default")),
                ubatch_size: Some(Choice::new(256, "measured")),
                batch_size: Some(Choice::new(1024, "measured")),
                flash_attn: Some(Choice::new(true, "supported")),
                kv_cache_type: Some(Choice::new("q8_0".into(), "memory")),
                num_parallel: Some(Choice::new(1, "one at a time")),
                keep_alive: Some(Choice::new("30m".into(), "it's kept; $HOME `x` \"y\" \\ z")),
                ..Recommended::default()
            },
            machine: "Test CPU; 64 GiB RAM; GPU 0".into(),
            model: Some("evil'model\nexport PWNED=1 $(touch /tmp/x)".into()),
            basis: "hardware rules".into(),
            notes: vec!["a note\nwith a newline".into()],
        }
    }

    fn bash(script: &str) -> std::process::Output {
        Command::new("bash").arg("-c").arg(script).output().expect("bash runs")
    }

    #[test]
    fn quoting_survives_any_value() {
        for value in ["plain", "it's", "$(touch /tmp/no)", "a b\nc", "'", "\\", "`x`", ""] {
            let out = bash(&format!("printf %s {}", shell_quote(value)));
            assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }

    #[test]
    fn the_script_passes_bash_n_and_sources_to_the_expected_values() {
        let text = script(&plan(), "2026-11-28T17:00:00Z", "0.1.0");
        let dir = std::env::temp_dir().join(format!("velollm-optimize-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("velollm.sh");
        std::fs::write(&path, &text).unwrap();
        let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "bash -n: {}\n{text}", String::from_utf8_lossy(&syntax.stderr));
        let out = bash(&format!(
            "source {} && printf '%s|%s|%s|%s|%s|%s' \"$OLLAMA_FLASH_ATTENTION\" \"$OLLAMA_KV_CACHE_TYPE\" \
             \"$OLLAMA_CONTEXT_LENGTH\" \"$OLLAMA_NUM_PARALLEL\" \"$OLLAMA_KEEP_ALIVE\" \"${{PWNED:-unset}}\"",
            shell_quote(&path.display().to_string())
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1|q8_0|4096|1|30m|unset");
        // Only verified server variables are exported; request options are comments.
        let exported: Vec<&str> = text.lines().filter(|l| l.starts_with("export ")).collect();
        assert_eq!(exported.len(), 5, "{text}");
        for line in &exported {
            let name = line.trim_start_matches("export ").split('=').next().unwrap();
            assert!(ollama::SERVER_VARIABLES.iter().any(|v| v.name == name), "{name}");
        }
        assert!(!text.lines().any(|l| !l.starts_with('#') && !l.starts_with("export ") && !l.is_empty()), "{text}");
        for expected in
            ["PARAMETER num_ctx 4096", "PARAMETER num_gpu 20", "PARAMETER num_batch 256", "\"num_thread\":8"]
        {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
        assert!(text.contains("velollm benchmark -m evil'model export PWNED=1"), "{text}");
        assert!(text.contains("-t 8 -ngl 20 -c 4096 -b 1024 -ub 256 -fa on -ctk q8_0 -ctv q8_0"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dry_run_shows_current_and_recommended_with_reasons() {
        let mut env = BTreeMap::new();
        env.insert("OLLAMA_FLASH_ATTENTION".to_string(), "0".to_string());
        let text = dry_run(&plan(), &env);
        assert!(text.contains("OLLAMA_FLASH_ATTENTION     0 → 1"), "{text}");
        assert!(text.contains("OLLAMA_KV_CACHE_TYPE       unset (f16) → q8_0"), "{text}");
        assert!(text.contains("num_gpu"), "{text}");
        assert!(text.contains("--threads"), "{text}");
        assert!(text.contains("      supported"), "{text}");
    }

    #[test]
    fn differing_k_and_v_types_keep_ollamas_single_variable_out() {
        let mut p = plan();
        p.recommended.v_cache_type = Some(Choice::new("f16".into(), "measured"));
        assert!(!server_settings(&p).iter().any(|s| s.variable.name == "OLLAMA_KV_CACHE_TYPE"));
        assert!(llama_cpp_flags(&p).contains(&"-ctk q8_0 -ctv f16".to_string()));
    }

    #[test]
    fn comments_wrap_and_never_hold_a_newline() {
        let long = "word ".repeat(60);
        let text = comment(&format!("{long}\nexport X=1"), "");
        assert!(text.lines().all(|l| l.starts_with("# ") && l.len() <= 110), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("export")));
    }
}
