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

/// `binary_size` of the CLI, written again here from its definition (1024-based units, one decimal unless whole).
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A size as the table prints it, back to bytes (to the precision shown).
fn parse_size(text: &str) -> f64 {
    let (number, unit) = text.trim().split_once(' ').unwrap_or_else(|| panic!("not a size: {text}"));
    let power = ["B", "KiB", "MiB", "GiB", "TiB"].iter().position(|u| *u == unit).unwrap_or_else(|| panic!("{text}"));
    number.parse::<f64>().unwrap() * 1024f64.powi(power as i32)
}

/// JSON value as the table prints it: a string's text, a number's digits, `n/a` for null.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "n/a".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn size_of(value: &serde_json::Value) -> String {
    value.as_u64().map_or_else(|| "n/a".to_string(), binary_size)
}

/// Every value of the table is the JSON's value, both from the same binary (two runs: values that move between
/// runs — free memory, free VRAM, the current clock — are checked within a tolerance, the rest exactly).
#[test]
fn detect_table_matches_its_json() {
    let dir = scratch("detect-table-json");
    let cmd = |format: &str| {
        let out = velollm().args(["detect", "--format", format]).env("XDG_CACHE_HOME", &dir).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let hw: serde_json::Value = serde_json::from_str(&cmd("json")).unwrap();
    let table = cmd("table");
    let has = |expected: &str| assert!(table.contains(expected), "'{expected}' missing from the table:\n{table}");
    // A moving size: the text between `before` and `after` on the line starting with `label` is within 10 % (or
    // 512 MiB) of the JSON's bytes.
    let near = |line_start: &str, before: &str, after: &str, bytes: &serde_json::Value| {
        let line = table.lines().find(|l| l.contains(line_start)).unwrap_or_else(|| panic!("{line_start}:\n{table}"));
        let rest = &line[line.find(before).unwrap_or_else(|| panic!("{before} in {line}")) + before.len()..];
        let text = &rest[..rest.find(after).unwrap_or_else(|| panic!("{after} in {line}"))];
        match bytes.as_u64() {
            None => assert_eq!(text, "n/a", "{line}"),
            Some(bytes) => {
                let diff = (parse_size(text) - bytes as f64).abs();
                assert!(diff <= (bytes as f64 * 0.1).max(512.0 * 1024.0 * 1024.0), "{text} vs {bytes} B: {line}");
            }
        }
    };

    let cpu = &hw["cpu"];
    let or = |v: &serde_json::Value, absent: &str| v.as_str().unwrap_or(absent).to_string();
    has(&format!("CPU        {} ({})", or(&cpu["model"], "unknown model"), or(&cpu["vendor"], "unknown vendor")));
    has(&format!(
        "{} physical cores, {} logical CPUs, {} socket(s); MHz: base {}, max {}, reported ",
        shown(&cpu["physical_cores"]),
        shown(&cpu["logical_cpus"]),
        shown(&cpu["sockets"]),
        shown(&cpu["base_mhz"]),
        shown(&cpu["max_mhz"])
    ));
    let reported = table.lines().find_map(|l| l.split("reported ").nth(1)).unwrap().trim();
    assert_eq!(reported == "n/a", cpu["reported_mhz"].is_null(), "reported MHz {reported} vs {}", cpu["reported_mhz"]);
    has(&format!(
        "caches: L1d {}, L2 {}, L3 {} (last level, all instances: {})",
        size_of(&cpu["l1d_bytes"]),
        size_of(&cpu["l2_bytes"]),
        size_of(&cpu["l3_bytes"]),
        size_of(&cpu["last_level_cache_total_bytes"])
    ));
    let simd: Vec<String> = cpu["simd"].as_array().unwrap().iter().map(shown).collect();
    has(&format!("SIMD: {}", if simd.is_empty() { "none reported".to_string() } else { simd.join(" ") }));

    let memory = &hw["memory"];
    has(&format!("Memory     {} total, ", size_of(&memory["total_bytes"])));
    near("Memory", "total, ", " available", &memory["available_bytes"]);
    has(&format!("; swap {} (", size_of(&memory["swap_total_bytes"])));
    near("Memory", &format!("swap {} (", size_of(&memory["swap_total_bytes"])), " free)", &memory["swap_free_bytes"]);

    let os = &hw["os"];
    has(&format!("OS         {}, kernel {}, {}", or(&os["name"], "unknown"), shown(&os["kernel"]), shown(&os["arch"])));

    let gpus = hw["gpus"].as_array().unwrap();
    if gpus.is_empty() {
        has("GPUs       none");
    }
    for gpu in gpus {
        let index = &gpu["index"];
        has(&format!("GPU {index}"));
        if let Some(name) = gpu["name"].as_str() {
            has(name);
        }
        has(&format!("VRAM {} total, ", size_of(&gpu["vram_total_bytes"])));
        has(&format!(
            "driver {} ({}), CUDA {}, compute capability {}",
            shown(&gpu["driver_version"]),
            shown(&gpu["kernel_driver"]),
            shown(&gpu["cuda_driver_version"]),
            shown(&gpu["compute_capability"])
        ));
        has(&format!(
            "(max gen {} x{}); power limit {} W; memory {} MHz × {} bit → ",
            shown(&gpu["pcie_gen_max"]),
            shown(&gpu["pcie_width_max"]),
            shown(&gpu["power_limit_watts"]),
            shown(&gpu["max_memory_clock_mhz"]),
            shown(&gpu["memory_bus_width_bits"])
        ));
    }

    let nvml = &hw["nvml"];
    let nvml_text = match (nvml["available"].as_bool().unwrap(), nvml["error"].as_str()) {
        (true, None) => format!("loaded (version {})", shown(&nvml["version"])),
        (true, Some(e)) => format!("loaded, with errors: {e}"),
        (false, e) => format!("unavailable: {}", e.unwrap_or("unknown reason")),
    };
    has(&format!("NVML       {nvml_text}"));
    let backends: Vec<String> = hw["backends"].as_array().unwrap().iter().map(shown).collect();
    has(&format!("Backends   {}", if backends.is_empty() { "none".to_string() } else { backends.join(", ") }));
    let devices = hw["engine_devices"].as_array().unwrap();
    if devices.is_empty() {
        has("Devices    none reported by the engines");
    }
    for device in devices {
        let head = format!(
            "{} {} [{}, {}]: {}, ",
            shown(&device["engine"]),
            shown(&device["name"]),
            shown(&device["backend"]),
            shown(&device["kind"]),
            shown(&device["description"])
        );
        has(&head);
        has(&format!(" free of {}", size_of(&device["memory_total_bytes"])));
        near(&head, &head, " free of", &device["memory_free_bytes"]);
    }
    // A fresh cache directory: nothing measured.
    assert!(hw["memory_bandwidth"].is_null());
    has("Bandwidth  not measured (velollm detect --bandwidth)");
    // Every labelled line of the table was checked above.
    let labels: Vec<&str> =
        table.lines().filter(|l| !l.starts_with(' ')).map(|l| l.get(..11).unwrap_or(l).trim()).collect();
    for label in labels {
        assert!(
            ["CPU", "Memory", "OS", "GPUs", "NVML", "Backends", "Devices", "Bandwidth"].contains(&label)
                || label.starts_with("GPU "),
            "a table line the test does not check: {label}"
        );
    }
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
            // Every field the reader requires of a schema-2 row, and the ones optimize reads.
            "schema_version": 2, "samples": [], "samples_ts": [],
            "config": {"name": "tg128", "model": "smollm2-135m", "prompt": "", "max_tokens": 128},
            "tokens_per_second": tps, "status": "ok",
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
