//! `velollm rpc-server`: ggml's RPC server, started inside this binary, so the protocol spoken by the
//! server and by `velollm benchmark --rpc` on another host is the same whenever both run the same build.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::UsageError;

#[derive(Args)]
pub struct RpcServerArgs {
    /// Address to listen on. Anything beyond loopback exposes this machine to whoever can reach the port:
    /// ggml's RPC protocol has no authentication.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(short, long, default_value_t = 50052, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Threads for the CPU device (default: the physical core count).
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Devices to expose, comma-separated (default: every GPU, or the CPU when there is none); see
    /// `velollm detect`.
    #[arg(short, long, value_name = "LIST")]
    pub device: Option<String>,
    /// Keep large tensors in this directory, so a client sends a model's weights once (ggml's local cache).
    #[arg(short, long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Memory to advertise. Not supported by this build's ggml RPC server (protocol 7), which reports each
    /// device's own memory; use `--tensor-split` on the client to set the share of each server.
    #[arg(short, long, value_name = "MiB", hide = true)]
    pub mem: Option<u64>,
}

/// ggml's own warning for a server reachable from other hosts (its rpc-server prints the same).
#[cfg(feature = "llamacpp")]
const EXPOSED_WARNING: &str =
    "WARNING: the RPC server is listening on a non-loopback address. The RPC protocol has no \
authentication or encryption: never run it on an open network or in a sensitive environment.";

#[cfg(feature = "llamacpp")]
pub fn run(args: RpcServerArgs) -> anyhow::Result<ExitCode> {
    use std::net::IpAddr;
    use velollm_benchmarks::llamacpp_rpc::{self, ServeOptions};

    if args.mem.is_some() {
        return Err(UsageError(
            "--mem is not supported: this build's ggml RPC server reports each device's own memory; set the share of \
             each server with --tensor-split on the benchmarking host"
                .into(),
        )
        .into());
    }
    let loopback = match args.host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => args.host == "localhost",
    };
    let devices: Vec<String> = args
        .device
        .as_deref()
        .map(|list| list.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect())
        .unwrap_or_default();
    let options = ServeOptions {
        host: args.host.clone(),
        port: args.port,
        threads: args.threads.unwrap_or_else(velollm_hw::default_threads),
        devices,
        cache_dir: args.cache.clone(),
    };
    // Every check that can fail does so before the server starts: an unknown device, a busy port.
    let server = llamacpp_rpc::prepare_server(&options).map_err(UsageError)?;
    if !loopback {
        eprintln!("{EXPOSED_WARNING}");
    }
    eprintln!(
        "velollm rpc-server {} on {}:{} ({} threads; Ctrl-C stops it)",
        env!("CARGO_PKG_VERSION"),
        options.host,
        options.port,
        options.threads
    );
    // ggml's server loop never returns while it serves; Ctrl-C (or SIGTERM) ends the process, and nothing needs
    // saving. The handler is installed before the port opens, so a signal can never find the default action.
    // SAFETY: `stop` only calls async-signal-safe functions (write, _exit).
    unsafe {
        libc::signal(libc::SIGINT, stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, stop as *const () as libc::sighandler_t);
    }
    Err(anyhow::anyhow!(server.run()))
}

/// Ends `velollm rpc-server` on Ctrl-C without running static destructors while ggml's server thread is
/// inside accept() or serving a client.
#[cfg(feature = "llamacpp")]
extern "C" fn stop(_signal: libc::c_int) {
    const STOPPED: &[u8] = b"rpc-server: stopped\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, STOPPED.as_ptr().cast(), STOPPED.len());
        libc::_exit(0);
    }
}

#[cfg(not(feature = "llamacpp"))]
pub fn run(_args: RpcServerArgs) -> anyhow::Result<ExitCode> {
    Err(UsageError("rpc-server needs llama.cpp, which this build leaves out".into()).into())
}
