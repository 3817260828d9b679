//! What an installed command offers besides its work, generated from the argument definitions so it cannot
//! drift from them: shell completions (`velollm completions bash`), the man page (`velollm man`), and the long
//! version (`velollm --version`: the engine builds and the parts compiled in).

use std::io::Write;

use clap::{Args, Command};

/// `velollm completions SHELL`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for (bash, zsh, fish, elvish, powershell).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `velollm man [SUBCOMMAND]`.
#[derive(Args)]
pub struct ManArgs {
    /// A subcommand's own page (e.g. `benchmark`) instead of velollm's.
    pub subcommand: Option<String>,
}

/// Writes the completion script for `shell` to stdout (e.g. `velollm completions bash >
/// ~/.local/share/bash-completion/completions/velollm`).
pub fn completions(args: CompletionsArgs, mut command: Command) -> anyhow::Result<std::process::ExitCode> {
    let mut script = Vec::new();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    write_stdout(&script)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes the roff man page of velollm or of one subcommand to stdout (e.g. `velollm man >
/// ~/.local/share/man/man1/velollm.1`; `velollm man benchmark > velollm-benchmark.1`).
pub fn man(args: ManArgs, command: Command) -> anyhow::Result<std::process::ExitCode> {
    let command = match &args.subcommand {
        None => command,
        Some(name) => {
            let Some(sub) = command.find_subcommand(name).cloned() else {
                let names: Vec<&str> = command.get_subcommands().map(Command::get_name).collect();
                return Err(crate::UsageError(format!(
                    "no subcommand '{name}' (velollm's subcommands: {})",
                    names.join(", ")
                ))
                .into());
            };
            // The page is named like git's: velollm-benchmark(1).
            let page = format!("{}-{}", command.get_name(), sub.get_name());
            sub.name(page).version(command.get_version().map(str::to_string).unwrap_or_default())
        }
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    write_stdout(&page)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `velollm --version`: velollm's version and commit, then each engine compiled in with its build, then the
/// optional parts of this build.
pub fn long_version() -> String {
    let build = velollm_benchmarks::build_info();
    let mut text = short_version();
    text.push('\n');
    for (backend, version) in &build.engines {
        let version = version.as_deref().unwrap_or("a server's client; the server says its version when it answers");
        text.push_str(&format!("backend {backend}: {version}\n"));
    }
    if build.engines.is_empty() {
        text.push_str("backends: none compiled in\n");
    }
    let mut features = build.features.clone();
    if cfg!(feature = "hf") {
        features.push("hf");
    }
    if cfg!(feature = "fetch") {
        features.push("fetch");
    }
    text.push_str(&format!("features: {}", if features.is_empty() { "none".into() } else { features.join(", ") }));
    text
}

/// `velollm -V`: the version and, when built from a git checkout, the commit.
pub fn short_version() -> String {
    match velollm_hw::git_commit() {
        Some(commit) => format!("{} (commit {commit})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// stdout, where a closed pipe (`velollm man | head`) is not an error worth a message.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
        _ => Ok(()),
    }
}
