//! The hardware rules, and how measured results override them (docs/hardware.md lists every rule).

use velollm_core::{nominal_vram_gb, GpuInfo, GpuVendor, HardwareInfo};

use crate::measured::{BestRow, Measured};
use crate::{Choice, GpuLayers, ModelFacts, Plan, Recommended, Request};

/// Memory set aside beside weights and KV cache for compute buffers, the CUDA context and the like.
pub const WORKING_SPACE_BYTES: u64 = 1 << 30;
/// The context recommended when none is asked for (capped at the model's training context).
pub const DEFAULT_CTX: u32 = 4096;
/// Below this nominal VRAM (GB): small models; up to and including [`LARGE_VRAM_GB`]: 7–8B at 4 bits.
pub const SMALL_VRAM_GB: u64 = 8;
pub const LARGE_VRAM_GB: u64 = 16;

/// KV cache bytes for `ctx` tokens at `kv_type`, from the f16 size per token. Quantized types scale by their
/// block size: q8_0 stores 32 values in 34 bytes (f16: 64), q4_0 in 18.
pub fn kv_cache_bytes(per_token_f16: u64, ctx: u32, kv_type: &str) -> Option<u64> {
    let (numerator, denominator) = match kv_type {
        "f16" | "bf16" => (1, 1),
        "f32" => (2, 1),
        "q8_0" => (34, 64),
        "q5_1" => (24, 64),
        "q5_0" => (22, 64),
        "q4_1" => (20, 64),
        "q4_0" | "iq4_nl" => (18, 64),
        _ => return None,
    };
    Some(per_token_f16 * u64::from(ctx) * numerator / denominator)
}

/// Whether weights and KV cache fit in `capacity` bytes with [`WORKING_SPACE_BYTES`] to spare.
pub fn fits(weights: u64, kv: u64, capacity: u64) -> bool {
    weights.saturating_add(kv).saturating_add(WORKING_SPACE_BYTES) <= capacity
}

/// The model sizes the guide advises for a GPU's nominal VRAM.
pub fn model_size_advice(nominal_gb: u64) -> &'static str {
    if nominal_gb < SMALL_VRAM_GB {
        "models up to 3B parameters at Q4_K_M (e.g. llama3.2:1b, llama3.2:3b)"
    } else if nominal_gb <= LARGE_VRAM_GB {
        "7B-8B models at Q4_K_M (e.g. llama3.1:8b)"
    } else {
        "13B and larger models at Q4_K_M, or 7B-8B at Q8_0"
    }
}

/// GPUs a model can be offloaded to: NVIDIA and AMD GPUs that report their VRAM.
fn offload_gpus(hw: &HardwareInfo) -> Vec<&GpuInfo> {
    hw.gpus
        .iter()
        .filter(|g| matches!(g.vendor, GpuVendor::Nvidia | GpuVendor::Amd) && g.vram_total_bytes.is_some())
        .collect()
}

/// Ollama's own rule (ml/device.go: `cudaFlashAttentionSupported`): CUDA compute capability ≥ 6.0 except 7.2;
/// ROCm GPUs are supported. `None` when the compute capability is unknown.
pub fn flash_attention_supported(gpu: &GpuInfo) -> Option<bool> {
    match gpu.vendor {
        GpuVendor::Amd => Some(true),
        GpuVendor::Intel => None,
        GpuVendor::Nvidia => {
            let (major, minor) = gpu.compute_capability.as_deref()?.split_once('.')?;
            let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
            Some(major >= 6 && (major, minor) != (7, 2))
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn gpu_label(gpu: &GpuInfo) -> String {
    let name = gpu.name.clone().unwrap_or_else(|| format!("{} GPU", gpu.vendor));
    format!("GPU {} ({name}, {} GB)", gpu.index, gpu.vram_total_bytes.map_or(0, nominal_vram_gb))
}

/// One line describing the machine.
pub fn describe_machine(hw: &HardwareInfo) -> String {
    let cpu = format!(
        "{} ({} cores / {} threads)",
        hw.cpu.model.as_deref().unwrap_or("unknown CPU"),
        hw.cpu.physical_cores.map_or("?".to_string(), |n| n.to_string()),
        hw.cpu.logical_cpus.map_or("?".to_string(), |n| n.to_string())
    );
    let ram = hw.memory.total_bytes.map_or("unknown RAM".to_string(), |b| format!("{} RAM", gib(b)));
    let gpus = if hw.gpus.is_empty() {
        "no GPU".to_string()
    } else {
        hw.gpus.iter().map(gpu_label).collect::<Vec<_>>().join(", ")
    };
    format!("{cpu}; {ram}; {gpus}")
}

/// The plan for `request`: hardware rules first, then measured results where there are some.
pub fn recommend(request: &Request<'_>) -> Plan {
    let hw = request.hardware;
    let mut r = Recommended::default();
    let mut notes = Vec::new();

    if let Some(cores) = hw.cpu.physical_cores.or(hw.cpu.logical_cpus) {
        r.threads = Some(Choice::new(
            cores,
            format!(
                "one thread per physical core ({cores}): hyper-threads share a core's SIMD units, and llama.cpp \
                 slows down with more threads than cores"
            ),
        ));
    }
    r.num_parallel = Some(Choice::new(
        1,
        "one request at a time, as a benchmark sends them: the KV cache holds num_ctx x OLLAMA_NUM_PARALLEL \
         tokens, so 1 leaves the most memory to the model",
    ));
    r.max_loaded_models = Some(Choice::new(
        1,
        "one model resident at a time: no second model shares the memory of the one being measured",
    ));
    r.keep_alive = Some(Choice::new(
        "30m".to_string(),
        "keeps the model loaded between benchmark runs (the default unloads it after 5 minutes idle, and the \
         next run would reload it)",
    ));

    let gpus = offload_gpus(hw);
    let largest = gpus.iter().copied().max_by_key(|g| g.vram_total_bytes.unwrap_or(0));
    if !gpus.is_empty() {
        let support: Vec<Option<bool>> = gpus.iter().map(|g| flash_attention_supported(g)).collect();
        if let Some(index) = support.iter().position(|s| *s == Some(false)) {
            r.flash_attn = Some(Choice::new(
                false,
                format!(
                    "{} (compute capability {}) does not run flash attention in Ollama (needs CUDA compute \
                     capability 6.0 or newer, not 7.2)",
                    gpu_label(gpus[index]),
                    gpus[index].compute_capability.as_deref().unwrap_or("?")
                ),
            ));
        } else if support.iter().all(|s| *s == Some(true)) {
            r.flash_attn = Some(Choice::new(
                true,
                format!(
                    "{} supports flash attention: it cuts the attention's working memory, and a quantized KV \
                     cache needs it",
                    gpus.iter().map(|g| gpu_label(g)).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if let (Some(gpu), None) = (largest, request.model) {
        let nominal = nominal_vram_gb(gpu.vram_total_bytes.unwrap_or(0));
        notes.push(format!("{nominal} GB of VRAM on {}: {}", gpu_label(gpu), model_size_advice(nominal)));
    }

    if let Some(model) = request.model {
        model_rules(request, model, &gpus, &mut r, &mut notes);
    } else if let Some(ctx) = request.ctx_size {
        r.ctx_size = Some(Choice::new(ctx, "as asked (--ctx-size)"));
    }

    let mut basis = "hardware rules".to_string();
    if let Some(measured) = request.measured {
        apply_measured(&mut r, measured, &mut notes);
        basis = format!(
            "measured results ({}: {} of {} rows ok and within this machine's memory) over hardware rules",
            measured.source, measured.eligible_rows, measured.rows
        );
    }
    Plan {
        recommended: r,
        machine: describe_machine(hw),
        model: request.model.map(|m| m.name.clone()).or_else(|| request.measured.and_then(|m| m.model.clone())),
        basis,
        notes,
    }
}

fn model_rules(
    request: &Request<'_>,
    model: &ModelFacts,
    gpus: &[&GpuInfo],
    r: &mut Recommended,
    notes: &mut Vec<String>,
) {
    let hw = request.hardware;
    let ctx = request.ctx_size.unwrap_or_else(|| DEFAULT_CTX.min(model.context_train.unwrap_or(DEFAULT_CTX)));
    let asked = if request.ctx_size.is_some() {
        "as asked (--ctx-size)".to_string()
    } else {
        format!("optimize's default context ({DEFAULT_CTX} tokens, capped at the model's training context); choose another with --ctx-size")
    };
    let kv = |kv_type: &str| model.kv_bytes_per_token_f16.and_then(|per_token| kv_cache_bytes(per_token, ctx, kv_type));
    if model.kv_bytes_per_token_f16.is_none() {
        notes.push(format!(
            "{}: the KV cache size is unknown (header fields missing); only weights are counted",
            model.name
        ));
    }
    let kv_f16 = kv("f16").unwrap_or(0);
    let weights = model.weights_bytes;
    let budget = |kv_bytes: u64, kv_type: &str, capacity: u64, place: &str| {
        format!(
            "weights {} + KV cache {} ({kv_type}, {ctx} tokens) + {} working space {} {place} {}",
            gib(weights),
            gib(kv_bytes),
            gib(WORKING_SPACE_BYTES),
            if fits(weights, kv_bytes, capacity) { "fit in" } else { "exceed" },
            gib(capacity)
        )
    };

    let Some(largest) = gpus.iter().copied().max_by_key(|g| g.vram_total_bytes.unwrap_or(0)) else {
        // CPU only: the model lives in RAM.
        let available = hw.memory.available_bytes.or(hw.memory.total_bytes);
        let mut reason = asked;
        if let Some(available) = available {
            let fit = budget(kv_f16, "f16", available, "the available memory");
            if fits(weights, kv_f16, available) {
                reason = format!("{reason}; {fit}");
            } else {
                notes.push(format!("{}: {fit}: expect swapping; choose a smaller model or quantization", model.name));
            }
        }
        r.ctx_size = Some(Choice::new(ctx, reason));
        return;
    };
    let vram = largest.vram_total_bytes.unwrap_or(0);
    let total_vram: u64 = gpus.iter().filter_map(|g| g.vram_total_bytes).sum();
    let flash = r.flash_attn.as_ref().is_some_and(|c| c.value);
    let on = format!("the VRAM of {}", gpu_label(largest));
    r.ctx_size = Some(Choice::new(ctx, asked));
    if fits(weights, kv_f16, vram) {
        r.gpu_layers =
            Some(Choice::new(GpuLayers::All, format!("the whole model fits: {}", budget(kv_f16, "f16", vram, &on))));
        r.kv_cache_type = Some(Choice::new("f16".to_string(), "the model fits with a full-precision KV cache"));
        return;
    }
    let kv_q8 = kv("q8_0").unwrap_or(0);
    if flash && kv_f16 > 0 && fits(weights, kv_q8, vram) {
        r.gpu_layers =
            Some(Choice::new(GpuLayers::All, format!("the whole model fits: {}", budget(kv_q8, "q8_0", vram, &on))));
        r.kv_cache_type = Some(Choice::new(
            "q8_0".to_string(),
            format!(
                "at f16 it would not fit ({}); q8_0 halves the KV cache at a very small loss",
                budget(kv_f16, "f16", vram, &on)
            ),
        ));
        return;
    }
    if gpus.len() > 1 && fits(weights, kv_f16, total_vram) {
        r.gpu_layers = Some(Choice::new(
            GpuLayers::All,
            format!("the model fits across all GPUs: {}", budget(kv_f16, "f16", total_vram, "the VRAM of all GPUs")),
        ));
        r.sched_spread =
            Some(Choice::new(true, format!("it does not fit on one GPU ({})", budget(kv_f16, "f16", vram, &on))));
        return;
    }
    // Partial offload: each offloaded layer takes its share of the weights and of the KV cache.
    let Some(layers) = model.n_layers.filter(|n| *n > 0) else {
        notes.push(format!("{}: does not fit in VRAM and its layer count is unknown", model.name));
        return;
    };
    let per_layer = (weights + kv_f16).div_ceil(u64::from(layers));
    let fitting = (vram.saturating_sub(WORKING_SPACE_BYTES) / per_layer).min(u64::from(layers)) as u32;
    r.gpu_layers = Some(Choice::new(
        GpuLayers::Count(fitting),
        format!(
            "the model does not fit ({}); {fitting} of {layers} layers do, at {} each (weights and KV cache)",
            budget(kv_f16, "f16", vram, &on),
            gib(per_layer)
        ),
    ));
}

fn measured_reason(kind: &str, best: &BestRow, setting: &str) -> String {
    let mut reason = format!(
        "measured: the fastest {kind} ({:.1} tok/s on {}, {} configurations) ran with {setting}",
        best.tokens_per_second, best.test, best.candidates
    );
    if let Some((rate, differences)) = &best.runner_up {
        let gap = 100.0 * (best.tokens_per_second - rate) / best.tokens_per_second;
        let noise = best.stddev.is_some_and(|sd| best.tokens_per_second - rate < sd);
        reason.push_str(&format!(
            "; next best {rate:.1} tok/s (-{gap:.1} %{}) with {}",
            if noise { ", within noise" } else { "" },
            if differences.is_empty() { "the same settings".to_string() } else { differences.join(", ") }
        ));
    }
    reason
}

fn apply_measured(r: &mut Recommended, measured: &Measured, notes: &mut Vec<String>) {
    if let Some(best) = &measured.decode {
        let p = &best.params;
        if let Some(threads) = p.threads {
            r.threads = Some(Choice::new(threads, measured_reason("decode", best, &format!("{threads} threads"))));
        }
        if let Some(layers) = p.gpu_layers {
            r.gpu_layers = Some(Choice::new(layers, measured_reason("decode", best, &format!("{layers} GPU layers"))));
        }
        if let Some(flash) = p.flash_attn.as_deref().and_then(|f| match f {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        }) {
            let setting = format!("flash attention {}", if flash { "on" } else { "off" });
            r.flash_attn = Some(Choice::new(flash, measured_reason("decode", best, &setting)));
        }
        match (&p.type_k, &p.type_v) {
            (Some(k), Some(v)) if k == v => {
                r.kv_cache_type =
                    Some(Choice::new(k.clone(), measured_reason("decode", best, &format!("a {k} KV cache"))));
                r.v_cache_type = None;
            }
            (Some(k), Some(v)) => {
                r.kv_cache_type =
                    Some(Choice::new(k.clone(), measured_reason("decode", best, &format!("K cache {k}"))));
                r.v_cache_type = Some(Choice::new(v.clone(), measured_reason("decode", best, &format!("V cache {v}"))));
                notes.push(format!(
                    "the fastest configuration used different K ({k}) and V ({v}) cache types; Ollama sets one type \
                     for both, so OLLAMA_KV_CACHE_TYPE is left out"
                ));
            }
            _ => {}
        }
    }
    if let Some(best) = &measured.prompt {
        let p = &best.params;
        if let Some(batch) = p.batch {
            r.batch_size =
                Some(Choice::new(batch, measured_reason("prompt processing", best, &format!("batch {batch}"))));
        }
        if let Some(ubatch) = p.ubatch {
            r.ubatch_size =
                Some(Choice::new(ubatch, measured_reason("prompt processing", best, &format!("ubatch {ubatch}"))));
        }
    }
    if measured.decode.is_none() && measured.prompt.is_none() {
        notes.push(format!("{}: no usable rows; the hardware rules stand", measured.source));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use velollm_core::{CpuDetails, GpuSource, MemoryDetails};

    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn machine(gpus: Vec<GpuInfo>) -> HardwareInfo {
        HardwareInfo {
            cpu: CpuDetails { physical_cores: Some(8), logical_cpus: Some(16), ..CpuDetails::default() },
            memory: MemoryDetails {
                total_bytes: Some(64 * GIB),
                available_bytes: Some(60 * GIB),
                ..Default::default()
            },
            gpus,
            ..HardwareInfo::default()
        }
    }

    fn nvidia(index: u32, vram_mib: u64, cc: &str) -> GpuInfo {
        let mut gpu = GpuInfo::new(index, GpuVendor::Nvidia, GpuSource::Nvml);
        gpu.name = Some("Test GPU".into());
        gpu.vram_total_bytes = Some(vram_mib * MIB);
        gpu.compute_capability = Some(cc.into());
        gpu
    }

    fn model(weights: u64, kv_per_token: u64) -> ModelFacts {
        ModelFacts {
            name: "test-model".into(),
            weights_bytes: weights,
            n_layers: Some(32),
            kv_bytes_per_token_f16: Some(kv_per_token),
            context_train: Some(131_072),
        }
    }

    fn plan(hw: &HardwareInfo, model: Option<&ModelFacts>, ctx: Option<u32>) -> Plan {
        let env = BTreeMap::new();
        recommend(&Request { hardware: hw, model, ctx_size: ctx, measured: None, environment: &env })
    }

    #[test]
    fn kv_cache_sizes_scale_with_type() {
        assert_eq!(kv_cache_bytes(1024, 4096, "f16"), Some(4 * MIB));
        assert_eq!(kv_cache_bytes(1024, 4096, "q8_0"), Some(4 * MIB * 34 / 64));
        assert_eq!(kv_cache_bytes(1024, 4096, "q4_0"), Some(4 * MIB * 18 / 64));
        assert_eq!(kv_cache_bytes(1024, 4096, "f32"), Some(8 * MIB));
        assert_eq!(kv_cache_bytes(1024, 4096, "q3_k"), None);
    }

    #[test]
    fn vram_thresholds_of_the_size_advice() {
        // A card reporting 24,564 MiB is a 24 GB card: the top tier.
        assert_eq!(nominal_vram_gb(24_564 * MIB), 24);
        assert!(model_size_advice(24).starts_with("13B"));
        assert!(model_size_advice(7).starts_with("models up to 3B")); // 7 GB: below 8
        assert!(model_size_advice(8).starts_with("7B-8B")); // exactly 8: middle tier
        assert!(model_size_advice(16).starts_with("7B-8B")); // exactly 16: middle tier
        assert!(model_size_advice(17).starts_with("13B"));
        // Reported sizes round to the tier the card is sold as.
        assert_eq!(nominal_vram_gb(7_577 * MIB), 7);
        assert_eq!(nominal_vram_gb(7_982 * MIB), 8);
        assert_eq!(nominal_vram_gb(16_376 * MIB), 16);
        let p = plan(&machine(vec![nvidia(0, 24_564, "8.9")]), None, None);
        assert!(p.notes.iter().any(|n| n.starts_with("24 GB of VRAM") && n.contains("13B")), "{:?}", p.notes);
        let p = plan(&machine(vec![nvidia(0, 7_982, "8.6")]), None, None);
        assert!(p.notes.iter().any(|n| n.starts_with("8 GB of VRAM") && n.contains("7B-8B")), "{:?}", p.notes);
    }

    #[test]
    fn flash_attention_follows_ollamas_support_rule() {
        let fa =
            |cc: &str| plan(&machine(vec![nvidia(0, 8192, cc)]), None, None).recommended.flash_attn.map(|c| c.value);
        assert_eq!(fa("5.2"), Some(false));
        assert_eq!(fa("6.0"), Some(true));
        assert_eq!(fa("7.2"), Some(false));
        assert_eq!(fa("7.5"), Some(true));
        assert_eq!(fa("8.9"), Some(true));
        let mut unknown = nvidia(0, 8192, "8.9");
        unknown.compute_capability = None;
        assert_eq!(plan(&machine(vec![unknown]), None, None).recommended.flash_attn, None);
        // CPU only: left to the server's auto.
        assert_eq!(plan(&machine(vec![]), None, None).recommended.flash_attn, None);
    }

    #[test]
    fn threads_default_to_physical_cores() {
        let p = plan(&machine(vec![]), None, None);
        assert_eq!(p.recommended.threads.unwrap().value, 8);
        assert_eq!(p.recommended.num_parallel.unwrap().value, 1);
        assert_eq!(p.basis, "hardware rules");
    }

    #[test]
    fn a_model_that_just_fits_is_fully_offloaded_and_one_byte_more_is_not() {
        let vram_mib = 24_564;
        let kv_per_token = 128 * 1024; // 128 KiB per token: 512 MiB at 4096 tokens
        let kv = kv_per_token * 4096;
        let just_fits = vram_mib * MIB - kv - WORKING_SPACE_BYTES;
        // Flash attention unsupported (CC 5.2), so no q8_0 escape: the threshold is exact.
        let hw = machine(vec![nvidia(0, vram_mib, "5.2")]);
        let p = plan(&hw, Some(&model(just_fits, kv_per_token)), None);
        assert_eq!(p.recommended.gpu_layers.as_ref().unwrap().value, GpuLayers::All, "{p:?}");
        assert_eq!(p.recommended.kv_cache_type.as_ref().unwrap().value, "f16");
        assert_eq!(p.recommended.ctx_size.as_ref().unwrap().value, 4096);

        let p = plan(&hw, Some(&model(just_fits + 1, kv_per_token)), None);
        match p.recommended.gpu_layers.as_ref().unwrap().value {
            GpuLayers::Count(n) => assert!((30..32).contains(&n), "{n}"),
            other => panic!("expected a partial offload, got {other}"),
        }
        assert!(p.recommended.gpu_layers.unwrap().reason.contains("does not fit"));
    }

    #[test]
    fn a_q8_0_kv_cache_rescues_a_model_that_just_misses_at_f16() {
        let vram_mib = 16_376;
        let kv_per_token = 256 * 1024; // 1 GiB at 4096 tokens
        let kv_f16 = kv_per_token * 4096;
        let weights = vram_mib * MIB - kv_f16 - WORKING_SPACE_BYTES + 1; // just misses at f16
        let hw = machine(vec![nvidia(0, vram_mib, "8.9")]);
        let p = plan(&hw, Some(&model(weights, kv_per_token)), None);
        assert_eq!(p.recommended.gpu_layers.unwrap().value, GpuLayers::All);
        assert_eq!(p.recommended.kv_cache_type.unwrap().value, "q8_0");
        assert!(p.recommended.flash_attn.unwrap().value);
    }

    #[test]
    fn two_gpus_take_a_model_that_one_cannot() {
        let hw = machine(vec![nvidia(0, 24_564, "8.9"), nvidia(1, 24_564, "8.9")]);
        let p = plan(&hw, Some(&model(30 * GIB, 0)), None);
        assert_eq!(p.recommended.gpu_layers.unwrap().value, GpuLayers::All);
        assert!(p.recommended.sched_spread.unwrap().value);
    }

    #[test]
    fn context_is_capped_at_training_length_and_follows_ctx_size() {
        let hw = machine(vec![]);
        let mut m = model(GIB, 1024);
        m.context_train = Some(2048);
        assert_eq!(plan(&hw, Some(&m), None).recommended.ctx_size.unwrap().value, 2048);
        assert_eq!(plan(&hw, Some(&m), Some(8192)).recommended.ctx_size.unwrap().value, 8192);
        // CPU only: nothing to offload, and a model larger than RAM is flagged.
        let p = plan(&hw, Some(&model(100 * GIB, 1024)), None);
        assert!(p.recommended.gpu_layers.is_none());
        assert!(p.notes.iter().any(|n| n.contains("expect swapping")), "{:?}", p.notes);
    }
}
