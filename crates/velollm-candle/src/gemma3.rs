//! Gemma 3 on candle's quantized kernels, written here because candle 0.11.1's `quantized_gemma3` differs
//! from Gemma 3 as llama.cpp runs it:
//! - its feed-forward gate uses SiLU; Gemma 3 uses GELU (tanh approximation), so its greedy output shared
//!   no token with llama.cpp's on the test model;
//! - it applies the sliding window only while evaluating a prompt, not during decode;
//! - it precomputes RoPE tables for 131,072 positions in every layer (seconds of load time, gigabytes).
//!
//! This module follows llama.cpp's graph: scaled embeddings; per layer RMS-normed attention with per-head
//! q/k norms, RoPE (1e6 base on global layers, 10k on sliding ones), GQA, a post-attention norm; a GELU-gated
//! feed-forward with pre/post norms; a final norm and the tied output matrix. Sliding layers attend to the
//! previous `sliding_window` positions including their own (llama.cpp: masked when `i - j >= window`), and
//! their KV cache keeps only that many entries.

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

/// Every `SLIDING_PATTERN`-th layer attends globally; the others use the sliding window (Gemma 3's 5:1).
const SLIDING_PATTERN: usize = 6;

struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for `positions` positions (only as many as the context can hold).
    fn new(head_dim: usize, base: f32, positions: usize, device: &Device) -> Result<Rope> {
        let inv_freq: Vec<f32> = (0..head_dim / 2).map(|i| base.powf(-2.0 * i as f32 / head_dim as f32)).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        let angles = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?
            .matmul(&inv_freq)?;
        Ok(Rope { cos: angles.cos()?, sin: angles.sin()? })
    }

    fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, start, len)?;
        let sin = self.sin.narrow(0, start, len)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

struct Layer {
    attn_norm: RmsNorm,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    post_ffn_norm: RmsNorm,
    rope: Rope,
    /// `Some(window)` on sliding layers.
    window: Option<usize>,
    kv_cache: Option<(Tensor, Tensor)>,
}

pub struct Gemma3 {
    embeddings: Tensor,
    embedding_scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Gemma3 {
    /// Builds the model from a GGUF file with `gemma3.*` metadata; RoPE tables cover `positions` positions.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        positions: usize,
        device: &Device,
    ) -> Result<Gemma3> {
        let meta = |key: &str| {
            content
                .metadata
                .get(&format!("gemma3.{key}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("missing gemma3.{key} in the metadata")))
        };
        let n_head = meta("attention.head_count")?.to_u32()? as usize;
        let n_kv_head = meta("attention.head_count_kv")?.to_u32()? as usize;
        let n_layer = meta("block_count")?.to_u32()? as usize;
        let d_model = meta("embedding_length")?.to_u32()? as usize;
        let head_dim = meta("attention.key_length")?.to_u32()? as usize;
        let eps = meta("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let window = meta("attention.sliding_window")?.to_u32()? as usize;
        let global_base = meta("rope.freq_base").and_then(|v| v.to_f32()).unwrap_or(1_000_000.0);
        let local_base = meta("rope.local_freq_base").and_then(|v| v.to_f32()).unwrap_or(10_000.0);

        let mut tensor = |name: &str| content.tensor(reader, name, device);
        let embedding_q = tensor("token_embd.weight")?;
        let embeddings = embedding_q.dequantize(device)?;
        let output = match tensor("output.weight") {
            Ok(t) => QMatMul::from_qtensor(t)?,
            Err(_) => QMatMul::from_qtensor(embedding_q)?,
        };
        let norm = RmsNorm::from_qtensor(tensor("output_norm.weight")?, eps)?;
        let global_rope_positions = positions.max(1);
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut t = |suffix: &str| tensor(&format!("blk.{i}.{suffix}"));
            let sliding = (i + 1) % SLIDING_PATTERN != 0;
            let base = if sliding { local_base } else { global_base };
            layers.push(Layer {
                attn_norm: RmsNorm::from_qtensor(t("attn_norm.weight")?, eps)?,
                q: QMatMul::from_qtensor(t("attn_q.weight")?)?,
                k: QMatMul::from_qtensor(t("attn_k.weight")?)?,
                v: QMatMul::from_qtensor(t("attn_v.weight")?)?,
                o: QMatMul::from_qtensor(t("attn_output.weight")?)?,
                q_norm: RmsNorm::from_qtensor(t("attn_q_norm.weight")?, eps)?,
                k_norm: RmsNorm::from_qtensor(t("attn_k_norm.weight")?, eps)?,
                post_attn_norm: RmsNorm::from_qtensor(t("post_attention_norm.weight")?, eps)?,
                ffn_norm: RmsNorm::from_qtensor(t("ffn_norm.weight")?, eps)?,
                gate: QMatMul::from_qtensor(t("ffn_gate.weight")?)?,
                up: QMatMul::from_qtensor(t("ffn_up.weight")?)?,
                down: QMatMul::from_qtensor(t("ffn_down.weight")?)?,
                post_ffn_norm: RmsNorm::from_qtensor(t("post_ffw_norm.weight")?, eps)?,
                rope: Rope::new(head_dim, base, global_rope_positions, device)?,
                window: sliding.then_some(window),
                kv_cache: None,
            });
        }
        Ok(Gemma3 {
            embeddings,
            embedding_scale: (d_model as f64).sqrt(),
            layers,
            norm,
            output,
            n_head,
            n_kv_head,
            head_dim,
        })
    }

    /// Logits of the last of `tokens` (`[1, len]`), placed at positions `start..`; `start == 0` empties
    /// the KV cache.
    pub fn forward(&mut self, tokens: &Tensor, start: usize) -> Result<Tensor> {
        let (batch, len) = tokens.dims2()?;
        let device = tokens.device().clone();
        let ids = tokens.flatten_all()?;
        let mut x = (self.embeddings.index_select(&ids, 0)?.reshape((batch, len, ()))? * self.embedding_scale)?;
        for layer in self.layers.iter_mut() {
            if start == 0 {
                layer.kv_cache = None;
            }
            let residual = x.clone();
            let h = layer.attn_norm.forward(&x)?;
            let h = attention(layer, &h, start, self.n_head, self.n_kv_head, self.head_dim, &device)?;
            let x_attn = (layer.post_attn_norm.forward(&h)? + residual)?;
            let h = layer.ffn_norm.forward(&x_attn)?;
            let gated = (layer.gate.forward(&h)?.gelu()? * layer.up.forward(&h)?)?;
            let h = layer.post_ffn_norm.forward(&layer.down.forward(&gated)?)?;
            x = (h + x_attn)?;
        }
        let last = x.narrow(1, len - 1, 1)?.squeeze(1)?;
        self.output.forward(&self.norm.forward(&last)?)
    }
}

fn attention(
    layer: &mut Layer,
    x: &Tensor,
    start: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    device: &Device,
) -> Result<Tensor> {
    let (batch, len, _) = x.dims3()?;
    let split = |t: Tensor, heads: usize| t.reshape((batch, len, heads, head_dim))?.transpose(1, 2);
    let q = split(layer.q.forward(x)?, n_head)?;
    let k = split(layer.k.forward(x)?, n_kv_head)?;
    let v = split(layer.v.forward(x)?, n_kv_head)?.contiguous()?;
    let q = layer.rope.apply(&layer.q_norm.forward(&q.contiguous()?)?, start)?;
    let k = layer.rope.apply(&layer.k_norm.forward(&k.contiguous()?)?, start)?;

    let (k, v) = match &layer.kv_cache {
        Some((k_cache, v_cache)) => (Tensor::cat(&[k_cache, &k], 2)?, Tensor::cat(&[v_cache, &v], 2)?),
        None => (k, v),
    };
    // Positions held in k/v: `first_pos..start + len`.
    let kv_len = k.dim(2)?;
    let first_pos = start + len - kv_len;
    layer.kv_cache = Some(match layer.window {
        // A sliding layer never needs more than the last window - 1 entries for the tokens to come.
        Some(window) if kv_len >= window => {
            let keep = window - 1;
            (k.narrow(2, kv_len - keep, keep)?, v.narrow(2, kv_len - keep, keep)?)
        }
        _ => (k.clone(), v.clone()),
    });

    let group = n_head / n_kv_head;
    let k = candle_transformers::utils::repeat_kv(k, group)?.contiguous()?;
    let v = candle_transformers::utils::repeat_kv(v, group)?.contiguous()?;
    let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?;
    let scores = match attention_mask(len, start, first_pos, kv_len, layer.window, device)? {
        Some(mask) => scores.broadcast_add(&mask)?,
        None => scores,
    };
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, n_head * head_dim))?;
    layer.o.forward(&out)
}

/// Additive mask (0 or −∞), `[len, kv_len]`: query at position `i` sees key position `j` when `j <= i` and,
/// on sliding layers, `i - j < window`. `None` when nothing is masked (one query over a trimmed cache).
fn attention_mask(
    len: usize,
    start: usize,
    first_pos: usize,
    kv_len: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let visible = |i: usize, j: usize| {
        j <= i
            && match window {
                Some(w) => i - j < w,
                None => true,
            }
    };
    let mut any_masked = false;
    let mut mask = Vec::with_capacity(len * kv_len);
    for qi in 0..len {
        let i = start + qi;
        for kj in 0..kv_len {
            let seen = visible(i, first_pos + kj);
            any_masked |= !seen;
            mask.push(if seen { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    if !any_masked {
        return Ok(None);
    }
    Tensor::from_vec(mask, (len, kv_len), device).map(Some)
}

#[cfg(test)]
mod tests {
    use super::attention_mask;
    use candle_core::Device;

    fn visible(mask: Option<candle_core::Tensor>, len: usize, kv_len: usize) -> Vec<Vec<bool>> {
        match mask {
            None => vec![vec![true; kv_len]; len],
            Some(m) => {
                m.to_vec2::<f32>().unwrap().into_iter().map(|row| row.into_iter().map(|v| v == 0.0).collect()).collect()
            }
        }
    }

    #[test]
    fn prefill_is_causal_and_sliding_layers_see_window_positions() {
        let global = visible(attention_mask(3, 0, 0, 3, None, &Device::Cpu).unwrap(), 3, 3);
        assert_eq!(global, [[true, false, false], [true, true, false], [true, true, true]]);
        // Window 2: position i sees i-1 and i (llama.cpp masks i - j >= window).
        let sliding = visible(attention_mask(3, 0, 0, 3, Some(2), &Device::Cpu).unwrap(), 3, 3);
        assert_eq!(sliding, [[true, false, false], [true, true, false], [false, true, true]]);
    }

    #[test]
    fn decode_over_a_trimmed_cache_needs_no_mask() {
        // One query at position 10 over keys 9..=10 (window 2): nothing masked.
        assert!(attention_mask(1, 10, 9, 2, Some(2), &Device::Cpu).unwrap().is_none());
    }
}
