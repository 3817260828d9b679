//! Layer offload over ggml's RPC backend, through the real binary: two `velollm rpc-server`s on loopback become
//! devices RPC0 and RPC1 of `velollm benchmark --rpc`, and llama.cpp places SmolLM2's layers on them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `velollm rpc-server` child on a free loopback port, killed when dropped.
struct RpcServer {
    child: Child,
    endpoint: String,
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a server and waits until its port accepts connections.
fn rpc_server() -> RpcServer {
    let port = free_port();
    let child = velollm()
        .args(["rpc-server", "--port", &port.to_string(), "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("velollm rpc-server starts");
    let mut server = RpcServer { child, endpoint: format!("127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&server.endpoint).is_err() {
        assert!(server.child.try_wait().unwrap().is_none(), "rpc-server on {} exited early", server.endpoint);
        assert!(Instant::now() < deadline, "rpc-server on {} did not listen within 60 s", server.endpoint);
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn rows_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a whole row"))
        .collect()
}

fn device<'a>(row: &'a Value, name: &str) -> &'a Value {
    row["parameters"]["effective"]["devices"]
        .as_array()
        .and_then(|devices| devices.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("no device {name} in {}", row["parameters"]["effective"]))
}

fn layers(row: &Value, name: &str) -> u64 {
    device(row, name)["layers"].as_u64().unwrap()
}

#[test]
fn layer_offload_curve_over_two_rpc_servers() {
    let (a, b) = (rpc_server(), rpc_server());
    let dir = scratch("rpc-curve");
    let jsonl = dir.join("curve.jsonl");
    let model_path = model(SMOLLM2);
    let rpc = format!("{},{}", a.endpoint, b.endpoint);
    let out = run(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "--rpc",
        &rpc,
        "-ngl",
        "0,10,20,all",
        "--pp",
        "16",
        "--tg",
        "4",
        "-r",
        "1",
        "--warmup",
        "0",
        "-t",
        "1",
        "-o",
        jsonl.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "stdout: {text}\nstderr: {}", stderr(&out));
    let rows = rows_of(&jsonl);
    assert_eq!(rows.len(), 8, "4 offload points × pp16, tg4");
    for row in &rows {
        assert_eq!(row["status"], "ok", "{row}");
        let effective = &row["parameters"]["effective"];
        let total = effective["n_layers_total"].as_u64().unwrap();
        assert_eq!(total, 31, "SmolLM2: 30 repeating layers and the output layer");
        let (cpu, rpc0, rpc1) = (layers(row, "CPU"), layers(row, "RPC0"), layers(row, "RPC1"));
        assert_eq!(cpu + rpc0 + rpc1, total, "every layer is placed exactly once: {effective}");
        let offloaded = match row["parameters"]["requested"]["n_gpu_layers"].as_u64() {
            Some(n) => n,
            None => total, // "all"
        };
        assert_eq!(effective["n_gpu_layers"].as_u64(), Some(offloaded), "{effective}");
        assert_eq!(rpc0 + rpc1, offloaded);
        // The servers are alike, so llama.cpp splits the offloaded layers between both (by free memory).
        for (name, count, endpoint) in [("RPC0", rpc0, &a.endpoint), ("RPC1", rpc1, &b.endpoint)] {
            let placed = device(row, name);
            assert_eq!(placed["description"], endpoint.as_str(), "RPC devices are named by their endpoint");
            assert!(placed["memory_total_before_bytes"].as_u64().unwrap_or(0) > 0, "{placed}");
            if offloaded >= 10 {
                assert!(count > 0, "{name} holds some of {offloaded} layers: {effective}");
                assert!(placed["model_buffer_bytes"].as_u64().unwrap() > 0, "{placed}");
            } else {
                assert_eq!(count, 0);
            }
        }
        // KV cache and compute buffers are on the RPC servers too once layers are there.
        if offloaded == total {
            let context_buffers = effective["context_buffers"].as_array().unwrap();
            for endpoint in [&a.endpoint, &b.endpoint] {
                assert!(
                    context_buffers.iter().any(|b| b["kind"] == "kv_cache"
                        && b["device"].as_str().unwrap().contains(endpoint.as_str())
                        && b["bytes"].as_u64().unwrap() > 0),
                    "a KV buffer on {endpoint}: {context_buffers:?}"
                );
            }
        }
    }
    assert!(text.contains("layers of 31: CPU 31 · RPC0 0 · RPC1 0"), "{text}");

    // Named devices and proportions: RPC0/RPC1 at 3/1 gives RPC0 three quarters; RPC1 alone takes all.
    let split = dir.join("split.jsonl");
    let out = run(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "--rpc",
        &rpc,
        "-dev",
        "RPC0/RPC1,RPC1",
        "-ts",
        "3/1",
        "--tg",
        "2",
        "-r",
        "1",
        "--warmup",
        "0",
        "-t",
        "1",
        "-o",
        split.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let rows = rows_of(&split);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["parameters"]["requested"]["devices"], "RPC0/RPC1");
    assert_eq!(rows[0]["parameters"]["requested"]["tensor_split"], "3/1");
    let (rpc0, rpc1) = (layers(&rows[0], "RPC0"), layers(&rows[0], "RPC1"));
    assert_eq!(rpc0 + rpc1, 31);
    assert!(rpc0 > 2 * rpc1 && rpc1 > 0, "3/1 split: RPC0 {rpc0}, RPC1 {rpc1}");
    assert_eq!(layers(&rows[1], "RPC1"), 31, "-dev RPC1 puts every layer there");
    assert!(rows[1]["parameters"]["effective"]["devices"].as_array().unwrap().iter().all(|d| d["name"] != "RPC0"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn detect_lists_the_remote_devices() {
    let server = rpc_server();
    let out = run(&["detect", "--format", "json", "--rpc", &server.endpoint]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let hardware: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let devices = hardware["engine_devices"].as_array().unwrap();
    let remote = devices.iter().find(|d| d["backend"] == "RPC").unwrap_or_else(|| panic!("{devices:?}"));
    assert_eq!(remote["name"], "RPC0");
    assert_eq!(remote["description"], server.endpoint.as_str());
    assert!(remote["memory_total_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn an_endpoint_nobody_listens_on_is_one_line_and_writes_nothing() {
    let dir = scratch("rpc-nobody");
    let json = dir.join("r.json");
    let endpoint = format!("127.0.0.1:{}", free_port());
    let out = run(&["benchmark", "--rpc", &endpoint, "--tg", "4", "-o", json.to_str().unwrap()]);
    assert_clean_failure(&out, &format!("RPC server {endpoint}: cannot connect: nothing is listening there"));
    assert_eq!(out.status.code(), Some(2));
    assert!(!json.exists(), "nothing is written before the servers answered");
    let out = run(&["benchmark", "--rpc", "127.0.0.1", "--tg", "4"]);
    assert_clean_failure(&out, "invalid RPC endpoint '127.0.0.1': no port");
    let out = run(&["benchmark", "--device", "RPC7", "--tg", "4"]);
    assert_clean_failure(&out, "invalid --device 'RPC7': no such device");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_that_speaks_http_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let http = std::thread::spawn(move || {
        // One connection: velollm's handshake; answered as an HTTP server would.
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let out = run(&["benchmark", "--rpc", &endpoint, "--tg", "4"]);
    http.join().unwrap();
    assert_clean_failure(&out, &format!("RPC server {endpoint}: the port does not speak ggml RPC"));
    assert!(stderr(&out).contains("HTTP/1.1 400 Bad Request"));
}

#[test]
fn a_server_killed_mid_sweep_fails_its_combination_and_keeps_every_row() {
    let (a, mut b) = (rpc_server(), rpc_server());
    let dir = scratch("rpc-killed");
    let jsonl = dir.join("r.jsonl");
    let json = dir.join("r.json");
    let model_path = model(SMOLLM2);
    let rpc = format!("{},{}", a.endpoint, b.endpoint);
    let mut child = velollm()
        .args([
            "benchmark",
            "-m",
            model_path.to_str().unwrap(),
            "--rpc",
            &rpc,
            "-ngl",
            "10,20,all",
            "--tg",
            "32",
            "-r",
            "20",
            "--warmup",
            "0",
            "-t",
            "1",
            "-o",
            jsonl.to_str().unwrap(),
            "-o",
            json.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill server B once the first combination has finished and the second is under way.
    let deadline = Instant::now() + Duration::from_secs(300);
    while rows_of(&jsonl).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "velollm ended before the first row");
        assert!(Instant::now() < deadline, "no row within 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let mut err = String::new();
    let stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "velollm did not stop after the server died");
        std::thread::sleep(Duration::from_millis(100));
    };
    err.push_str(&reader.join().unwrap());
    assert_eq!(status.code(), Some(1), "a clean exit, not an abort: {err}");
    assert!(!err.contains("panicked") && !err.contains("GGML_ABORT"), "{err}");
    assert!(err.contains(&format!("RPC server {} went away", b.endpoint)), "{err}");
    let kept = rows_of(&jsonl);
    assert!(!kept.is_empty());
    assert_eq!(kept[0]["status"], "ok", "the finished combination is kept whole");
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(rows.len() >= kept.len(), "the JSON array has every finished row");
    if rows.len() > kept.len() {
        let last = rows.last().unwrap();
        assert_eq!(last["status"], "failed", "{last}");
        assert!(last["error"].as_str().unwrap().contains(&b.endpoint), "{last}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rpc_server_refuses_a_busy_port_and_stops_on_ctrl_c() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = run(&["rpc-server", "--port", &port]);
    assert_clean_failure(&out, &format!("cannot listen on 127.0.0.1:{port}: the port is in use"));
    drop(busy);

    let out = run(&["rpc-server", "--device", "GPU9", "--port", &free_port().to_string()]);
    assert_clean_failure(&out, "invalid --device 'GPU9': no such device here");
    // A cache directory that cannot be made is refused before the server says it started.
    let out = run(&["rpc-server", "--cache", "/proc/velollm-cache", "--port", &free_port().to_string()]);
    assert_clean_failure(&out, "cannot create the cache directory /proc/velollm-cache");
    assert_eq!(out.status.code(), Some(2));

    // Beyond loopback: ggml's warning that the protocol has no authentication, then Ctrl-C stops it.
    let port = free_port();
    let mut child = velollm()
        .args(["rpc-server", "--host", "0.0.0.0", "--port", &port.to_string(), "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = lines.next().unwrap().unwrap();
    assert!(warning.contains("no authentication"), "{warning}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rpc-server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: sends SIGINT to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "Ctrl-C did not stop rpc-server");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
