//! Parameters handed to engines, split the way llama.cpp splits them:
//! - [`LoadParams`] give a loaded model (which layers go where, how the file is read);
//! - [`ContextParams`] give a context on a loaded model (KV cache size and types, batches, threads, attention).
//!
//! A sweep loads each model once per distinct [`LoadParams`] and creates a new context only when a
//! [`ContextParams`] value changes. What the engine actually did with each request is recorded separately as
//! [`EffectiveLoad`] and [`EffectiveContext`]: a context padded, a batch clamped, an automatic flash-attention
//! policy resolved, layers that could not be offloaded.
//!
//! Field names are llama-bench's (`n_ctx`, `n_batch`, …) so rows read like its output.

use serde::{Deserialize, Serialize};

/// Flash-attention policy, as llama.cpp names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    /// The engine decides (llama.cpp enables it where the backend supports it).
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for FlashAttention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "-1" => Ok(FlashAttention::Auto),
            "on" | "1" | "true" | "enabled" => Ok(FlashAttention::On),
            "off" | "0" | "false" | "disabled" => Ok(FlashAttention::Off),
            other => Err(format!("invalid flash-attention policy '{other}' (expected auto, on or off)")),
        }
    }
}

impl std::fmt::Display for FlashAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            FlashAttention::Auto => "auto",
            FlashAttention::On => "on",
            FlashAttention::Off => "off",
        })
    }
}

/// How many layers to offload to GPUs: a count, or every layer of the model (`-ngl all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum GpuLayers {
    Count(u32),
    /// Every layer of the model being loaded, whatever its layer count.
    #[default]
    All,
}

impl GpuLayers {
    /// The count to hand an engine that takes a number (llama.cpp offloads `min(n, layers + 1)`).
    pub fn as_count(self) -> u32 {
        match self {
            GpuLayers::Count(n) => n,
            // llama.cpp's own convention for "all": any count above the layer count (llama-bench uses 99).
            GpuLayers::All => 999,
        }
    }
}

impl std::str::FromStr for GpuLayers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" | "ALL" | "All" => Ok(GpuLayers::All),
            other => other
                .parse::<u32>()
                .map(GpuLayers::Count)
                .map_err(|_| format!("invalid layer count '{other}' (expected a number ≥ 0 or 'all')")),
        }
    }
}

impl std::fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuLayers::Count(n) => f.pad(&n.to_string()),
            GpuLayers::All => f.pad("all"),
        }
    }
}

impl Serialize for GpuLayers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GpuLayers::Count(n) => serializer.serialize_u32(*n),
            GpuLayers::All => serializer.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for GpuLayers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Word(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(n) => Ok(GpuLayers::Count(n)),
            Raw::Word(w) => w.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// How a model is split across several GPUs (llama.cpp's `--split-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// One GPU only (`main_gpu`).
    None,
    /// Whole layers per GPU.
    #[default]
    Layer,
    /// Rows of each matrix across GPUs.
    Row,
}

impl std::str::FromStr for SplitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(SplitMode::None),
            "layer" => Ok(SplitMode::Layer),
            "row" => Ok(SplitMode::Row),
            other => Err(format!("invalid split mode '{other}' (expected none, layer or row)")),
        }
    }
}

impl std::fmt::Display for SplitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            SplitMode::None => "none",
            SplitMode::Layer => "layer",
            SplitMode::Row => "row",
        })
    }
}

/// Element type of the KV cache (llama-bench's `-ctk` / `-ctv` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    F32,
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Iq4Nl,
    Q5_0,
    Q5_1,
}

impl KvCacheType {
    pub const ALL: [KvCacheType; 9] = [
        KvCacheType::F32,
        KvCacheType::F16,
        KvCacheType::Bf16,
        KvCacheType::Q8_0,
        KvCacheType::Q4_0,
        KvCacheType::Q4_1,
        KvCacheType::Iq4Nl,
        KvCacheType::Q5_0,
        KvCacheType::Q5_1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::Bf16 => "bf16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
            KvCacheType::Q4_1 => "q4_1",
            KvCacheType::Iq4Nl => "iq4_nl",
            KvCacheType::Q5_0 => "q5_0",
            KvCacheType::Q5_1 => "q5_1",
        }
    }

    /// Whether the type is quantized (llama.cpp needs flash attention for a quantized V cache).
    pub fn is_quantized(self) -> bool {
        !matches!(self, KvCacheType::F32 | KvCacheType::F16 | KvCacheType::Bf16)
    }
}

impl std::str::FromStr for KvCacheType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        KvCacheType::ALL.into_iter().find(|t| t.name() == lower).ok_or_else(|| {
            let names: Vec<&str> = KvCacheType::ALL.iter().map(|t| t.name()).collect();
            format!("invalid KV cache type '{s}' (expected one of {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for KvCacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Which devices offloaded layers may go to (llama-bench's `-dev`): the engine's choice, none (the CPU
/// only), or named devices in order (`RPC0/RPC1`, `CUDA0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum DeviceSelection {
    /// Every GPU-like device the engine sees (llama.cpp's default: local GPUs and RPC servers).
    #[default]
    Auto,
    /// No offload device: every layer stays on the CPU.
    None,
    /// These devices, in this order (the order layers are handed out in).
    Named(Vec<String>),
}

impl std::str::FromStr for DeviceSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceSelection::Auto),
            "none" => Ok(DeviceSelection::None),
            list => {
                let names: Vec<String> = list.split('/').map(|name| name.trim().to_string()).collect();
                if names.iter().any(|name| name.is_empty() || name.contains(char::is_whitespace)) {
                    return Err(format!(
                        "invalid device list '{list}' (expected auto, none or device names joined by '/', e.g. RPC0/RPC1)"
                    ));
                }
                Ok(DeviceSelection::Named(names))
            }
        }
    }
}

impl std::fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSelection::Auto => f.pad("auto"),
            DeviceSelection::None => f.pad("none"),
            DeviceSelection::Named(names) => f.pad(&names.join("/")),
        }
    }
}

impl Serialize for DeviceSelection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceSelection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// How offloaded layers are shared between devices (llama-bench's `-ts`): proportions in device order,
/// `3/1` giving the first device three quarters. Empty: the engine's default (llama.cpp: each device's free
/// memory).
#[derive(Debug, Clone, Default)]
pub struct TensorSplit(Vec<f32>);

impl TensorSplit {
    /// The proportions as given (not normalised); empty for the engine's default.
    pub fn proportions(&self) -> &[f32] {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }
}

// Proportions are finite and non-negative (checked when parsed), so comparing their bit patterns orders
// them as numbers and makes equal values hash alike.
impl PartialEq for TensorSplit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for TensorSplit {}
impl std::hash::Hash for TensorSplit {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.iter().for_each(|p| p.to_bits().hash(state));
    }
}
impl PartialOrd for TensorSplit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TensorSplit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.iter().map(|p| p.to_bits()).cmp(other.0.iter().map(|p| p.to_bits()))
    }
}

impl std::str::FromStr for TensorSplit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() || text == "auto" {
            return Ok(TensorSplit::default());
        }
        let invalid = || {
            format!("invalid tensor split '{text}' (expected proportions joined by '/', e.g. 3/1 or 0.5/0.5, at least one above 0)")
        };
        let proportions: Vec<f32> = text
            .split('/')
            .map(|part| part.trim().parse::<f32>().ok().filter(|p| p.is_finite() && *p >= 0.0))
            .collect::<Option<_>>()
            .ok_or_else(invalid)?;
        if proportions.len() > 16 {
            return Err(format!(
                "invalid tensor split '{text}': {} proportions, at most 16 devices",
                proportions.len()
            ));
        }
        if proportions.iter().all(|p| *p == 0.0) {
            return Err(invalid());
        }
        Ok(TensorSplit(proportions))
    }
}

impl std::fmt::Display for TensorSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.pad("auto");
        }
        let parts: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        f.pad(&parts.join("/"))
    }
}

impl Serialize for TensorSplit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TensorSplit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Load-time parameters: a model loaded with one set is reused for every context and test that shares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LoadParams {
    /// Layers to offload to GPUs.
    pub n_gpu_layers: GpuLayers,
    pub split_mode: SplitMode,
    /// The GPU used with `split_mode = none` (and for intermediate results).
    pub main_gpu: u32,
    /// Map the model file instead of reading it into memory.
    pub use_mmap: bool,
    /// The devices offloaded layers may go to (rows written before devices were recorded read as `auto`).
    #[serde(default)]
    pub devices: DeviceSelection,
    /// How offloaded layers are shared between those devices.
    #[serde(default)]
    pub tensor_split: TensorSplit,
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            n_gpu_layers: GpuLayers::All,
            split_mode: SplitMode::Layer,
            main_gpu: 0,
            use_mmap: true,
            devices: DeviceSelection::Auto,
            tensor_split: TensorSplit::default(),
        }
    }
}

/// Context parameters: a new context is created whenever one of these changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContextParams {
    /// Context size in tokens (KV cache capacity).
    pub n_ctx: u32,
    /// Logical batch size: the most tokens handed to the engine in one call.
    pub n_batch: u32,
    /// Physical (micro-)batch size.
    pub n_ubatch: u32,
    /// Threads for generation and for prompt evaluation.
    pub n_threads: u32,
    pub flash_attn: FlashAttention,
    pub type_k: KvCacheType,
    pub type_v: KvCacheType,
    /// Sequences the context holds at once (llama.cpp's `n_seq_max`): 1, or B for a batched test, whose
    /// context the plan creates with it. Rows of single-sequence tests do not write it.
    #[serde(default = "one_sequence", skip_serializing_if = "is_one_sequence")]
    pub n_seq_max: u32,
}

fn one_sequence() -> u32 {
    1
}

fn is_one_sequence(n: &u32) -> bool {
    *n == 1
}

impl ContextParams {
    /// llama-bench's defaults (batch 2048, ubatch 512, f16 KV cache) with the given thread count and a
    /// 2048-token context, so velollm numbers read like llama-bench's.
    pub fn with_threads(n_threads: u32) -> ContextParams {
        ContextParams {
            n_ctx: 2048,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads,
            flash_attn: FlashAttention::Auto,
            type_k: KvCacheType::F16,
            type_v: KvCacheType::F16,
            n_seq_max: 1,
        }
    }
}

/// Every parameter a run asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestedParams {
    #[serde(flatten)]
    pub load: LoadParams,
    #[serde(flatten)]
    pub context: ContextParams,
}

/// A buffer the engine allocated, as it reported it (llama.cpp's model, KV cache and compute buffers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineBuffer {
    /// The buffer's device or buffer type (`CPU`, `CUDA0`, `CPU_Mapped`, `RPC0[host:port]`, …).
    pub device: String,
    /// `model`, `kv_cache` or `compute`.
    pub kind: String,
    pub bytes: u64,
}

/// Where a loaded model sits on one device, as the engine placed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DevicePlacement {
    /// The engine's device name (`CPU`, `RPC0`, `CUDA0`).
    pub name: String,
    /// The engine's backend for it (`CPU`, `RPC`, `CUDA`).
    pub backend: String,
    /// What the engine says the device is: an RPC server's `host:port`, a GPU's model.
    pub description: String,
    /// Layers the engine assigned to the device (its repeating layers and the output layer).
    pub layers: u32,
    /// Bytes of model weights in the device's buffers, as the engine reported them.
    pub model_buffer_bytes: u64,
    /// The device's memory as the engine saw it just before and just after the load (`None`: not reported).
    pub memory_free_before_bytes: Option<u64>,
    pub memory_total_before_bytes: Option<u64>,
    pub memory_free_after_bytes: Option<u64>,
    pub memory_total_after_bytes: Option<u64>,
}

/// What a loaded model actually got. `None` where the engine does not say (never a guess).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EffectiveLoad {
    /// Layers actually offloaded to a GPU (0 on a build or machine without one).
    pub n_gpu_layers: Option<u32>,
    /// Layers that could be offloaded: the model's repeating layers plus its output layer.
    pub n_layers_total: Option<u32>,
    /// The GPUs holding offloaded layers (empty when none does).
    pub gpu_devices: Vec<String>,
    pub split_mode: Option<SplitMode>,
    pub main_gpu: Option<u32>,
    pub use_mmap: Option<bool>,
    /// The model's weight buffers, as the engine reported them.
    #[serde(default)]
    pub model_buffers: Vec<EngineBuffer>,
    /// Every device of the load with its layers, weights and memory (empty where the engine does not say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DevicePlacement>,
}

/// What a context actually got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EffectiveContext {
    /// Context size after the engine's padding.
    pub n_ctx: u32,
    /// Logical batch after clamping; `None` for an engine without batches (candle evaluates a prompt in one call).
    pub n_batch: Option<u32>,
    pub n_ubatch: Option<u32>,
    pub n_threads: Option<u32>,
    /// The policy as resolved (`on` or `off`); `None` when the engine does not say.
    pub flash_attn: Option<FlashAttention>,
    /// The K/V cache element types passed to the engine (or the ones it always uses).
    pub type_k: Option<String>,
    pub type_v: Option<String>,
    /// The context's KV cache and compute buffers, as the engine reported them.
    #[serde(default)]
    pub context_buffers: Vec<EngineBuffer>,
    /// Batched tests: the sequences the context holds, whether their KV cache is one pool (llama.cpp's
    /// `kv_unified`) or one stream of `n_ctx / n_seq_max` cells per sequence, and that per-sequence size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_seq_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_unified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_ctx_seq: Option<u32>,
}

/// Every parameter as the engine applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EffectiveParams {
    #[serde(flatten)]
    pub load: EffectiveLoad,
    #[serde(flatten)]
    pub context: EffectiveContext,
}

/// How tokens are chosen and when generation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// Seeds the random token ids of llama-bench-style tests; recorded with every result (greedy sampling
    /// does not draw from it).
    pub seed: u32,
    /// `greedy` (argmax) is the only sampler: it makes output, and so timing, deterministic.
    pub sampler: String,
    /// Whether an end-of-generation token ends an iteration early. Off by default: the output length is fixed.
    pub stop_at_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams { seed: 42, sampler: "greedy".into(), stop_at_eos: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_layers_parse_and_serialize() {
        assert_eq!("all".parse::<GpuLayers>().unwrap(), GpuLayers::All);
        assert_eq!("16".parse::<GpuLayers>().unwrap(), GpuLayers::Count(16));
        assert!("-1".parse::<GpuLayers>().unwrap_err().contains("invalid layer count"));
        assert_eq!(serde_json_string(&GpuLayers::All), "\"all\"");
        assert_eq!(serde_json_string(&GpuLayers::Count(8)), "8");
        let back: GpuLayers = serde_json::from_str("\"all\"").unwrap();
        assert_eq!(back, GpuLayers::All);
        let back: GpuLayers = serde_json::from_str("12").unwrap();
        assert_eq!(back, GpuLayers::Count(12));
    }

    #[test]
    fn kv_cache_types_are_llama_bench_names() {
        assert_eq!("q8_0".parse::<KvCacheType>().unwrap(), KvCacheType::Q8_0);
        assert_eq!("IQ4_NL".parse::<KvCacheType>().unwrap(), KvCacheType::Iq4Nl);
        assert_eq!(serde_json_string(&KvCacheType::Iq4Nl), "\"iq4_nl\"");
        let err = "q3_k".parse::<KvCacheType>().unwrap_err();
        assert!(err.contains("expected one of f32, f16, bf16, q8_0"), "{err}");
        assert!(KvCacheType::Q4_0.is_quantized() && !KvCacheType::Bf16.is_quantized());
    }

    #[test]
    fn requested_params_serialize_flat() {
        let params = RequestedParams { load: LoadParams::default(), context: ContextParams::with_threads(2) };
        let value: serde_json::Value = serde_json::to_value(&params).unwrap();
        assert_eq!(value["n_gpu_layers"], "all");
        assert_eq!(value["n_threads"], 2);
        assert_eq!(value["type_k"], "f16");
        assert_eq!(value["flash_attn"], "auto");
        let back: RequestedParams = serde_json::from_value(value).unwrap();
        assert_eq!(back, params);
    }

    #[test]
    fn device_selections_and_tensor_splits_parse_like_llama_bench() {
        assert_eq!("none".parse::<DeviceSelection>().unwrap(), DeviceSelection::None);
        assert_eq!("auto".parse::<DeviceSelection>().unwrap(), DeviceSelection::Auto);
        let named: DeviceSelection = "RPC0/RPC1".parse().unwrap();
        assert_eq!(named, DeviceSelection::Named(vec!["RPC0".into(), "RPC1".into()]));
        assert_eq!(named.to_string(), "RPC0/RPC1");
        assert!("RPC0//RPC1".parse::<DeviceSelection>().unwrap_err().contains("invalid device list"));
        let split: TensorSplit = "3/1".parse().unwrap();
        assert_eq!(split.proportions(), [3.0, 1.0]);
        assert_eq!(split.to_string(), "3/1");
        assert!("auto".parse::<TensorSplit>().unwrap().is_default());
        assert!("1/".repeat(17).trim_end_matches('/').parse::<TensorSplit>().unwrap_err().contains("at most 16"));
        for bad in ["0/0", "1/-1", "a/b", "nan", "inf/1"] {
            assert!(bad.parse::<TensorSplit>().is_err(), "{bad}");
        }
        assert!("1/3".parse::<TensorSplit>().unwrap() < "3/1".parse::<TensorSplit>().unwrap());
        // Rows written before these fields existed read as the defaults.
        let old = serde_json::json!({"n_gpu_layers": 0, "split_mode": "layer", "main_gpu": 0, "use_mmap": true});
        let load: LoadParams = serde_json::from_value(old).unwrap();
        assert_eq!((load.devices, load.tensor_split.is_default()), (DeviceSelection::Auto, true));
    }

    fn serde_json_string<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }
}
