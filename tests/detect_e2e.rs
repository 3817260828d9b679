//! `velollm detect` and `velollm optimize`, end to end through the real binary.

mod common;

use std::process::Command;

use common::{run, scratch, stderr, stdout, velollm};

#[test]
fn detect_writes_json_when_piped_with_the_expected_keys() {
    // stdout is a pipe here, so JSON is the default; --format json says the same explicitly.
    for args in [&["detect"][..], &["detect", "--format", "json"][..]] {
        let out = run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
        for key in ["cpu", "memory", "os", "gpus", "nvml", "backends", "engine_devices", "memory_bandwidth"] {
            assert!(json.get(key).is_some(), "{key} missing: {json:#}");
        }
        let logical = json["cpu"]["logical_cpus"].as_u64().expect("logical CPUs");
        assert!((1..=4096).contains(&logical));
        assert!(json["memory"]["total_bytes"].as_u64().unwrap() > 256 << 20);
        assert!(json["gpus"].is_array());
        if json["nvml"]["available"] == false {
            // No NVIDIA driver is normal: no NVML GPUs, and the reason is recorded.
            assert!(json["nvml"]["error"].is_string());
            assert!(json["gpus"].as_array().unwrap().iter().all(|g| g["source"] == "sysfs"));
        }
        let backends: Vec<&str> = json["backends"].as_array().unwrap().iter().filter_map(|b| b.as_str()).collect();
        assert!(backends.contains(&"llamacpp"), "{backends:?}");
        assert!(json["engine_devices"].as_array().unwrap().iter().any(|d| d["kind"] == "cpu"));
    }
}

#[test]
fn detect_table_is_readable() {
    let out = run(&["detect", "--format", "table"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for label in ["CPU", "Memory", "OS", "NVML", "Backends", "Devices", "Bandwidth"] {
        assert!(text.lines().any(|l| l.starts_with(label)), "{label} missing:\n{text}");
    }
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
}

#[test]
fn detect_bandwidth_measures_and_caches() {
    let dir = scratch("detect-bandwidth");
    let out =
        velollm().args(["detect", "--bandwidth", "--format", "json"]).env("XDG_CACHE_HOME", &dir).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON despite the progress lines");
    let bandwidth = &json["memory_bandwidth"];
    for kernel in ["copy_gb_per_s", "triad_gb_per_s", "read_gb_per_s"] {
        let rate = bandwidth[kernel].as_f64().unwrap();
        assert!(rate > 1.0 && rate < 5000.0, "{kernel} {rate}");
    }
    let cache = dir.join("velollm/bandwidth.json");
    assert!(cache.is_file(), "{}", stderr(&out));
    // A later plain `detect` reports the cached measurement.
    let out = velollm().args(["detect", "--format", "json"]).env("XDG_CACHE_HOME", &dir).output().unwrap();
    let later: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(later["memory_bandwidth"], *bandwidth);
}

#[test]
fn optimize_dry_run_explains_each_setting() {
    let out = run(&["optimize", "--dry-run", "-m", common::model(common::SMOLLM2).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("nothing is written"), "{text}");
    assert!(text.contains("OLLAMA_NUM_PARALLEL") && text.contains("→"), "{text}");
    assert!(text.contains("num_thread"), "{text}");
    assert!(text.contains("--threads"), "{text}");
}

#[test]
fn optimize_writes_a_script_that_bash_accepts_and_sources() {
    let dir = scratch("optimize-script");
    let script = dir.join("x.sh");
    let out =
        run(&["optimize", "-o", script.to_str().unwrap(), "-m", common::model(common::SMOLLM2).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("source"), "{}", stdout(&out));
    let syntax = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    let sourced = Command::new("bash")
        .arg("-c")
        .arg("source \"$1\" && printf '%s|%s' \"$OLLAMA_NUM_PARALLEL\" \"$OLLAMA_CONTEXT_LENGTH\"")
        .arg("bash")
        .arg(&script)
        .output()
        .unwrap();
    assert!(sourced.status.success(), "{}", String::from_utf8_lossy(&sourced.stderr));
    assert_eq!(String::from_utf8_lossy(&sourced.stdout), "1|4096");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(!text.contains("export OLLAMA_NUM_GPU") && !text.contains("export OLLAMA_NUM_CTX"));
}

#[test]
fn optimize_from_results_picks_the_measured_best() {
    let dir = scratch("optimize-from");
    let row = |tps: f64, threads: u32| {
        serde_json::json!({
            "config": {"name": "tg128", "model": "smollm2-135m"}, "tokens_per_second": tps, "status": "ok",
            "backend": "llamacpp", "test": {"kind": "tg", "n_prompt": 0, "n_gen": 128, "n_depth": 0},
            "model": {"reference": "smollm2-135m", "path": "models/SmolLM2-135M-Instruct.Q4_1.gguf"},
            "parameters": {"requested": {"n_threads": threads, "n_gpu_layers": 0, "flash_attn": "off",
                                         "n_batch": 2048, "n_ubatch": 512, "type_k": "f16", "type_v": "f16"}}
        })
    };
    let sweep = dir.join("sweep.jsonl");
    let lines: String =
        [row(60.0, 1), row(97.5, 2), row(80.0, 3)].iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(&sweep, lines).unwrap();
    let out = run(&["optimize", "--dry-run", "--from", sweep.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("num_thread"), "{text}");
    assert!(text.contains("→ 2\n"), "{text}");
    assert!(text.contains("measured: the fastest decode (97.5 tok/s on tg128"), "{text}");

    let script = dir.join("velollm.sh");
    let out = run(&["optimize", "--from", sweep.to_str().unwrap(), "-o", script.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&script).unwrap().contains("velollm benchmark -m smollm2-135m --threads 2"));

    // Unreadable results: one clean error line.
    let out = run(&["optimize", "--from", dir.join("missing.jsonl").to_str().unwrap()]);
    common::assert_clean_failure(&out, "cannot read results");
}
