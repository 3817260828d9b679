//! ggml's RPC backend: another process, on this host or another machine, as an offload device.
//!
//! A `velollm rpc-server` exposes its devices over TCP; `--rpc HOST:PORT` here registers each server's
//! devices (`RPC0`, `RPC1`, … in the order given) with ggml, after which llama.cpp offloads layers to them as
//! to any GPU. The crate's bindings omit `ggml-rpc.h`, so its two entry points are looked up by name through
//! the RPC backend's registry (`ggml_backend_reg_get_proc_address`), as llama.cpp's own tools do.
//!
//! ggml's client ends the process (`GGML_ABORT`) when a server cannot be reached, answers a handshake it
//! does not accept, or goes away mid-run. So every endpoint is first contacted here, in Rust, with the same
//! handshake (`probe`), and turned into a one-line error; a server that dies later is reported through
//! [`on_fatal_engine_error`], which lets the caller save what was measured before the process ends.

use std::ffi::{c_char, CStr, CString};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use velollm_core::EngineDevice;

/// The protocol version this build's ggml speaks (`RPC_PROTO_*_VERSION` in ggml-rpc.h). A client accepts a
/// server with the same major version and a minor version not above its own.
pub const PROTOCOL_VERSION: (u8, u8, u8) = (7, 0, 0);

/// `RPC_CMD_HELLO`: always command 14, whatever the protocol version.
const CMD_HELLO: u8 = 14;
/// The hello request carries the client's transport capabilities (`RPC_CONN_CAPS_SIZE` bytes, all zero: plain
/// TCP); the answer is major, minor, patch, a padding byte and the server's capabilities.
const CONN_CAPS_SIZE: usize = 24;
const HELLO_ANSWER_SIZE: usize = 4 + CONN_CAPS_SIZE;

/// How long contacting a server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A server that answered the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcServer {
    pub endpoint: String,
    pub protocol: (u8, u8, u8),
}

/// Splits `HOST:PORT` as ggml does (at the first ':'), checking both parts.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let endpoint = endpoint.trim();
    let invalid =
        |why: &str| format!("invalid RPC endpoint '{endpoint}': {why} (expected HOST:PORT, e.g. 127.0.0.1:50052)");
    if endpoint.matches(':').count() > 1 {
        return Err(invalid("ggml's RPC client takes an IPv4 address or a host name, not an IPv6 address"));
    }
    let (host, port) = endpoint.split_once(':').ok_or_else(|| invalid("no port"))?;
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(|| invalid("the port is not 1–65535"))?;
    Ok((host.to_string(), port))
}

/// Parses a comma-separated `--rpc` list, refusing duplicates (ggml would register one server twice).
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    let mut endpoints: Vec<String> = Vec::new();
    for item in list.split(',') {
        let (host, port) = parse_endpoint(item)?;
        let endpoint = format!("{host}:{port}");
        if endpoints.contains(&endpoint) {
            return Err(format!("invalid --rpc: {endpoint} is given twice"));
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let (host, port) = parse_endpoint(endpoint)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("RPC server {endpoint}: cannot resolve '{host}': {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("RPC server {endpoint}: '{host}' has no IPv4 address"))
}

/// Contacts a server and performs ggml's handshake, then hangs up (a server serves one client at a time, so
/// the connection must be closed before the engine opens its own).
pub fn probe(endpoint: &str) -> Result<RpcServer, String> {
    let address = resolve(endpoint)?;
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "nothing is listening there (start `velollm rpc-server` on that host)".to_string()
            }
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
            }
            _ => e.to_string(),
        };
        format!("RPC server {endpoint}: cannot connect: {why}")
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).ok();
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).ok();
    stream.set_nodelay(true).ok();

    let mut hello = vec![CMD_HELLO];
    hello.extend_from_slice(&(CONN_CAPS_SIZE as u64).to_le_bytes());
    hello.extend_from_slice(&[0; CONN_CAPS_SIZE]);
    stream.write_all(&hello).map_err(|e| format!("RPC server {endpoint}: the handshake could not be sent: {e}"))?;

    let mut size = [0u8; 8];
    read_answer(&mut stream, &mut size, endpoint)?;
    if u64::from_le_bytes(size) != HELLO_ANSWER_SIZE as u64 {
        return Err(format!(
            "RPC server {endpoint}: the port does not speak ggml RPC (it answered the handshake with {})",
            describe_bytes(&size, &mut stream)
        ));
    }
    let mut answer = [0u8; HELLO_ANSWER_SIZE];
    read_answer(&mut stream, &mut answer, endpoint)?;
    let protocol = (answer[0], answer[1], answer[2]);
    if protocol.0 != PROTOCOL_VERSION.0 || protocol.1 > PROTOCOL_VERSION.1 {
        return Err(format!(
            "RPC server {endpoint}: it speaks RPC protocol {}.{}.{}, this velollm {}.{}.{}: run the same velollm build on both hosts",
            protocol.0, protocol.1, protocol.2, PROTOCOL_VERSION.0, PROTOCOL_VERSION.1, PROTOCOL_VERSION.2
        ));
    }
    Ok(RpcServer { endpoint: endpoint.to_string(), protocol })
}

fn read_answer(stream: &mut TcpStream, buffer: &mut [u8], endpoint: &str) -> Result<(), String> {
    stream.read_exact(buffer).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            format!("RPC server {endpoint}: it hung up during the handshake (a server of another llama.cpp version, or not an RPC server)")
        }
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "RPC server {endpoint}: no answer to the handshake within {} s (not an RPC server, or one busy with another client: ggml's server serves one at a time)",
            ANSWER_TIMEOUT.as_secs()
        ),
        _ => format!("RPC server {endpoint}: the handshake failed: {e}"),
    })
}

/// What a peer that is not an RPC server sent, for the error: its first bytes as text when they are text.
fn describe_bytes(first: &[u8], stream: &mut TcpStream) -> String {
    let mut more = [0u8; 24];
    stream.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let n = stream.read(&mut more).unwrap_or(0);
    let bytes: Vec<u8> = first.iter().chain(&more[..n]).copied().collect();
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or("").trim();
    if !line.is_empty() && line.chars().all(|c| !c.is_control()) {
        format!("'{line}'")
    } else {
        format!("{} bytes that are not ggml's answer", bytes.len())
    }
}

/// Whether this build has ggml's RPC backend (built with `GGML_RPC=ON`; with `dynamic-backends`, once the
/// backends are loaded).
pub fn compiled_in() -> bool {
    let reg_name = CString::new("RPC").expect("no NUL");
    // SAFETY: a registry query by NUL-terminated name; null when there is none.
    !unsafe { llama_cpp_sys_2::ggml_backend_reg_by_name(reg_name.as_ptr()) }.is_null()
}

/// The RPC backend's registry and one of its functions, looked up by name.
fn rpc_function(name: &str) -> Result<*mut std::ffi::c_void, String> {
    let missing = || format!("this velollm was built without ggml's RPC backend (no {name}); rebuild with GGML_RPC=ON");
    let reg_name = CString::new("RPC").expect("no NUL");
    let function = CString::new(name).expect("no NUL");
    // SAFETY: registry queries by NUL-terminated name; a null registry is handled.
    unsafe {
        let reg = llama_cpp_sys_2::ggml_backend_reg_by_name(reg_name.as_ptr());
        if reg.is_null() {
            return Err(missing());
        }
        let address = llama_cpp_sys_2::ggml_backend_reg_get_proc_address(reg, function.as_ptr());
        if address.is_null() {
            return Err(missing());
        }
        Ok(address)
    }
}

type AddServerFn = unsafe extern "C" fn(endpoint: *const c_char) -> llama_cpp_sys_2::ggml_backend_reg_t;
type StartServerFn = unsafe extern "C" fn(
    endpoint: *const c_char,
    cache_dir: *const c_char,
    n_threads: usize,
    n_devices: usize,
    devices: *mut llama_cpp_sys_2::ggml_backend_dev_t,
);

/// Endpoints whose devices are registered in this process, in order.
static CONNECTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Contacts every endpoint, then registers each server's devices with ggml, in order. A second call with an
/// endpoint already connected leaves it as it is. Returns the devices llama.cpp now sees.
pub fn connect(endpoints: &[String], engine_logs: bool) -> Result<Vec<EngineDevice>, String> {
    for endpoint in endpoints {
        probe(endpoint)?;
    }
    // Initialises llama.cpp (and velollm's log callback) before ggml's RPC client says anything.
    crate::shared_backend(engine_logs).map_err(|e| e.to_string())?;
    let mut connected = CONNECTED.lock().map_err(|_| "RPC registry poisoned".to_string())?;
    for endpoint in endpoints {
        if connected.contains(endpoint) {
            continue;
        }
        let add_server = rpc_function("ggml_backend_rpc_add_server")?;
        // SAFETY: the address is ggml's `ggml_backend_rpc_add_server`, whose signature AddServerFn restates.
        let add_server: AddServerFn = unsafe { std::mem::transmute(add_server) };
        let c_endpoint = CString::new(endpoint.as_str()).map_err(|_| format!("invalid RPC endpoint '{endpoint}'"))?;
        // SAFETY: ggml copies the endpoint; the server answered the handshake just now.
        let server_reg = unsafe { add_server(c_endpoint.as_ptr()) };
        if server_reg.is_null() {
            return Err(format!("RPC server {endpoint}: it offers no device"));
        }
        // SAFETY: a registry ggml created; registering makes its devices visible to llama.cpp.
        unsafe { llama_cpp_sys_2::ggml_backend_register(server_reg) };
        connected.push(endpoint.clone());
    }
    Ok(crate::devices::devices())
}

/// The endpoints this process registered.
pub fn connected_endpoints() -> Vec<String> {
    CONNECTED.lock().map(|c| c.clone()).unwrap_or_default()
}

/// The connected endpoints that no longer accept connections (a killed server's port refuses; a live one,
/// even busy with this process, still accepts). A dying server's connection may close a moment before its
/// listening socket does, so an answer of "all alive" is asked again for up to a second.
pub fn unreachable_endpoints() -> Vec<String> {
    let refusing = || -> Vec<String> {
        connected_endpoints()
            .into_iter()
            .filter(|endpoint| {
                resolve(endpoint)
                    .and_then(|address| {
                        TcpStream::connect_timeout(&address, Duration::from_millis(500)).map_err(|e| e.to_string())
                    })
                    .is_err()
            })
            .collect()
    };
    for _ in 0..10 {
        let gone = refusing();
        if !gone.is_empty() {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Vec::new()
}

static FATAL_HOOK: OnceLock<fn(&str)> = OnceLock::new();

/// Calls `hook` with ggml's message when llama.cpp or ggml is about to end the process (`GGML_ABORT`: an RPC
/// server that went away, a broken invariant). The hook should save what was measured and exit itself;
/// if it returns, ggml aborts as before.
pub fn on_fatal_engine_error(hook: fn(&str)) {
    if FATAL_HOOK.set(hook).is_ok() {
        // SAFETY: installs a plain function that stays valid for the life of the process.
        unsafe { llama_cpp_sys_2::ggml_set_abort_callback(Some(on_abort)) };
    }
}

unsafe extern "C" fn on_abort(message: *const c_char) {
    let text = if message.is_null() {
        String::new()
    } else {
        // SAFETY: ggml passes a NUL-terminated buffer valid for the call.
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    };
    if let Some(hook) = FATAL_HOOK.get() {
        hook(text.trim());
    }
}

/// What `velollm rpc-server` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub threads: u32,
    /// Device names to expose; empty: every GPU, or the CPU when there is none (ggml's rpc-server default).
    pub devices: Vec<String>,
    /// Where large tensors are cached between runs (ggml's `-c`); `None`: no cache.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// The devices a server would expose, resolved by name (one-line error for an unknown one).
pub fn serve_devices(names: &[String]) -> Result<Vec<EngineDevice>, String> {
    crate::shared_backend(false).map_err(|e| e.to_string())?;
    let all = crate::devices::devices();
    let local: Vec<&EngineDevice> = all.iter().filter(|d| d.backend != "RPC").collect();
    if names.is_empty() {
        let gpus: Vec<EngineDevice> =
            local.iter().filter(|d| d.kind == "gpu" || d.kind == "igpu").map(|d| (*d).clone()).collect();
        if !gpus.is_empty() {
            return Ok(gpus);
        }
        return local
            .iter()
            .find(|d| d.kind == "cpu")
            .map(|d| vec![(*d).clone()])
            .ok_or_else(|| "no CPU device in this build".to_string());
    }
    names
        .iter()
        .map(|name| {
            local.iter().find(|d| &d.name == name).map(|d| (*d).clone()).ok_or_else(|| {
                let known: Vec<&str> = local.iter().map(|d| d.name.as_str()).collect();
                format!("invalid --device '{name}': no such device here (devices: {})", known.join(", "))
            })
        })
        .collect()
}

/// Checks that the address can be listened on (a busy port or a foreign address is a one-line error).
pub fn check_listen(host: &str, port: u16) -> Result<(), String> {
    let endpoint = format!("{host}:{port}");
    let address = resolve(&endpoint)?;
    TcpListener::bind(address).map(drop).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("cannot listen on {endpoint}: the port is in use"),
        std::io::ErrorKind::AddrNotAvailable => format!("cannot listen on {endpoint}: not an address of this host"),
        _ => format!("cannot listen on {endpoint}: {e}"),
    })
}

/// A server whose every check passed (devices, address, cache directory), ready to run.
pub struct PreparedServer {
    start_server: StartServerFn,
    devices: Vec<llama_cpp_sys_2::ggml_backend_dev_t>,
    endpoint: CString,
    cache: Option<CString>,
    threads: usize,
}

/// Checks everything a server needs before it starts: its devices exist, the port is free, the cache
/// directory can be created. Each failure is one line.
pub fn prepare_server(options: &ServeOptions) -> Result<PreparedServer, String> {
    let devices = serve_devices(&options.devices)?;
    check_listen(&options.host, options.port)?;
    let cache = options.cache_dir.as_deref().map(cache_dir_c_string).transpose()?;
    let start_server = rpc_function("ggml_backend_rpc_start_server")?;
    // SAFETY: the address is ggml's `ggml_backend_rpc_start_server`, whose signature StartServerFn restates.
    let start_server: StartServerFn = unsafe { std::mem::transmute(start_server) };
    let mut handles = Vec::new();
    for device in &devices {
        let name = CString::new(device.name.as_str()).map_err(|_| "invalid device name".to_string())?;
        // SAFETY: a registry lookup by NUL-terminated name.
        let handle = unsafe { llama_cpp_sys_2::ggml_backend_dev_by_name(name.as_ptr()) };
        if handle.is_null() {
            return Err(format!("device {} disappeared", device.name));
        }
        handles.push(handle);
    }
    let endpoint =
        CString::new(format!("{}:{}", options.host, options.port)).map_err(|_| "invalid host".to_string())?;
    Ok(PreparedServer { start_server, devices: handles, endpoint, cache, threads: options.threads as usize })
}

impl PreparedServer {
    /// Runs ggml's RPC server in this thread until the process ends. Returns only when ggml gives up (it
    /// could not listen or accept).
    pub fn run(mut self) -> String {
        // SAFETY: every pointer outlives the call, which only returns when the server stops.
        unsafe {
            (self.start_server)(
                self.endpoint.as_ptr(),
                self.cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                self.threads,
                self.devices.len(),
                self.devices.as_mut_ptr(),
            )
        };
        format!("the RPC server on {} stopped (ggml could not listen or accept)", self.endpoint.to_string_lossy())
    }
}

fn cache_dir_c_string(dir: &Path) -> Result<CString, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the cache directory {}: {e}", dir.display()))?;
    let text = dir.to_str().ok_or_else(|| format!("the cache directory {} is not UTF-8", dir.display()))?;
    CString::new(text).map_err(|_| format!("invalid cache directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_like_ggml_reads_them() {
        assert_eq!(parse_endpoint("127.0.0.1:50052").unwrap(), ("127.0.0.1".to_string(), 50052));
        assert_eq!(parse_endpoint(" gpu-box:1 ").unwrap(), ("gpu-box".to_string(), 1));
        for bad in ["127.0.0.1", ":50052", "host:0", "host:70000", "host:port", "::1:50052"] {
            let err = parse_endpoint(bad).unwrap_err();
            assert!(err.starts_with("invalid RPC endpoint"), "{bad}: {err}");
        }
        assert!(parse_endpoint("::1:50052").unwrap_err().contains("not an IPv6 address"));
        assert_eq!(parse_endpoints("a:1,b:2").unwrap(), ["a:1", "b:2"]);
        assert!(parse_endpoints("a:1,a:1").unwrap_err().contains("given twice"));
    }

    #[test]
    fn nobody_listening_is_one_line() {
        // A port just released by this process: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = probe(&format!("127.0.0.1:{port}")).unwrap_err();
        assert!(err.contains("nothing is listening there"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_port_that_speaks_http_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 33];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        });
        let err = probe(&format!("127.0.0.1:{port}")).unwrap_err();
        server.join().unwrap();
        assert!(err.contains("does not speak ggml RPC") && err.contains("HTTP/1.1 400 Bad Request"), "{err}");
    }

    /// A server of another protocol version answers the handshake with its version: refused, both named.
    #[test]
    fn a_server_of_another_protocol_version_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut hello = [0u8; 1 + 8 + CONN_CAPS_SIZE];
            stream.read_exact(&mut hello).unwrap();
            assert_eq!(hello[0], CMD_HELLO, "the handshake is ggml's HELLO");
            assert_eq!(u64::from_le_bytes(hello[1..9].try_into().unwrap()), CONN_CAPS_SIZE as u64);
            let mut answer = (HELLO_ANSWER_SIZE as u64).to_le_bytes().to_vec();
            answer.extend_from_slice(&[6, 1, 0, 0]);
            answer.extend_from_slice(&[0; CONN_CAPS_SIZE]);
            stream.write_all(&answer).unwrap();
        });
        let err = probe(&format!("127.0.0.1:{port}")).unwrap_err();
        server.join().unwrap();
        assert!(err.contains("it speaks RPC protocol 6.1.0, this velollm 7.0.0"), "{err}");
        assert!(err.contains("run the same velollm build on both hosts"), "{err}");
    }

    #[test]
    fn a_silent_peer_times_out_with_a_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and says nothing, then hangs up.
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(stream);
        });
        let err = probe(&format!("127.0.0.1:{port}")).unwrap_err();
        server.join().unwrap();
        assert!(err.contains("hung up during the handshake"), "{err}");
    }
}
