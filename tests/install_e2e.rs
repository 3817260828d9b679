//! What an installed `velollm` offers besides its work, run from the real binary: shell completions and man
//! pages generated from its argument definitions, read back by the tools that use them (bash, man's
//! formatter), and a `--version` that names the engines compiled in.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bash_completion_registers_and_knows_the_subcommands_and_flags() {
    let out = run(&["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    for word in ["benchmark", "compare", "report", "--n-gpu-layers", "--max-tokens", "completions", "man"] {
        assert!(script.contains(word), "the bash completion does not mention {word}");
    }
    // bash itself loads it and registers a completion for velollm.
    let dir = scratch("bash-completion");
    let path = dir.join("velollm.bash");
    std::fs::write(&path, &script).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && complete -p velollm", path.display()))
        .output()
        .expect("bash runs");
    assert!(loaded.status.success(), "bash could not load the completion: {}", String::from_utf8_lossy(&loaded.stderr));
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("velollm"), "{loaded:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands_and_flags() {
    for (shell, header) in [("zsh", "#compdef velollm"), ("fish", "complete -c velollm")] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(header), "{shell}: no {header:?}");
        for word in ["benchmark", "n-gpu-layers", "ubatch-size"] {
            assert!(script.contains(word), "the {shell} completion does not mention {word}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = run(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cmd.exe"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn man_pages_are_roff_that_man_formats() {
    let out = run(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH velollm 1"), "no title line: {}", &page[..page.len().min(300)]);
    assert!(page.contains("benchmark") && page.contains("completions"), "the page lists the subcommands");

    let out = run(&["man", "benchmark"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH velollm-benchmark 1"), "{}", &page[..page.len().min(300)]);
    assert!(page.contains("n\\-gpu\\-layers"), "the benchmark page documents --n-gpu-layers");

    // man's formatter renders it (groff, as `man` runs it on a terminal, in plain ASCII without overstrikes).
    let dir = scratch("man-page");
    let path = dir.join("velollm-benchmark.1");
    std::fs::write(&path, &page).unwrap();
    let rendered = Command::new("groff").args(["-man", "-Tascii", "-P-cbou"]).arg(&path).output().expect("groff runs");
    assert!(rendered.status.success());
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("velollm-benchmark") && text.contains("--n-gpu-layers"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);

    let out = run(&["man", "no-such-command"]);
    assert_clean_failure(&out, "no subcommand 'no-such-command'");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version_names_the_engines_and_features_compiled_in() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with(&format!("velollm {}", env!("CARGO_PKG_VERSION"))), "{text}");
    if cfg!(feature = "llamacpp") {
        let line = text.lines().find(|l| l.starts_with("backend llamacpp: ")).unwrap_or_else(|| panic!("{text}"));
        // The linked library says ggml's version (its commit is "unknown": llama-cpp-sys-2 builds llama.cpp from
        // its packaged sources, without git).
        assert!(line.contains("llama-cpp-sys-2 0.1.") && line.contains(" commit "), "{line}");
        assert!(line.contains("ggml 0.") && !line.contains("ggml unknown"), "{line}");
    }
    if cfg!(feature = "candle") {
        assert!(text.lines().any(|l| l.starts_with("backend candle: candle 0.")), "{text}");
    }
    if cfg!(feature = "ollama") {
        assert!(text.contains("backend ollama: "), "{text}");
    }
    let features = text.lines().find(|l| l.starts_with("features: ")).unwrap_or_else(|| panic!("{text}"));
    for (feature, on) in [("fetch", cfg!(feature = "fetch")), ("hf", cfg!(feature = "hf"))] {
        assert_eq!(features.contains(feature), on, "{features}");
    }
    // -V is the short form: the version line alone.
    let short = stdout(&run(&["-V"]));
    assert_eq!(short.trim(), first, "{short}");
}
