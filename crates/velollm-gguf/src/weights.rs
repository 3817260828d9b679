//! Bytes of weights read per generated token: the numerator of the decode roofline (docs/metrics.md).
//!
//! One decode step multiplies the new token's activations by every weight matrix of every layer and by the
//! output matrix, and applies every norm, so all those tensors are read once per token. Embedding tables are
//! the exception: a lookup reads one row (`token_embd` — unless the model ties it to the output, when the output
//! product reads all of it). Mixture-of-experts layers read only the experts the router picks: their expert
//! tensors count `expert_used_count / expert_count` of their size, the expected share per token.
//!
//! KV-cache reads (which grow with the context) and activations are not weights and are not counted, so the
//! figure is a lower bound on the bytes decode moves.

use crate::{GgufFile, TensorInfo};

/// What one generated token reads, by part of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightBytesPerToken {
    pub total: u64,
    /// `blk.*` tensors (expert tensors scaled to the experts used).
    pub layers: u64,
    /// The output matrix (`output.weight`, or the whole `token_embd.weight` when tied).
    pub output: u64,
    /// One row of each embedding table looked up per token.
    pub embedding_rows: u64,
    /// Everything else (`output_norm`, `rope_freqs`, …).
    pub other: u64,
    /// `token_embd.weight` doubles as the output matrix (no `output.weight` in the file).
    pub tied_embeddings: bool,
}

/// Tables read one row per token.
fn is_row_lookup(name: &str) -> bool {
    name.ends_with("token_embd.weight") || name == "position_embd.weight" || name == "token_types.weight"
}

fn is_expert_tensor(name: &str) -> bool {
    name.starts_with("blk.") && name.contains("_exps.")
}

impl GgufFile {
    /// Bytes of weights read per generated token (module docs). `None` when a tensor's type is unknown to this
    /// reader (its size, and so the total, cannot be known) or the file has no tensors.
    pub fn weight_bytes_per_token(&self) -> Option<WeightBytesPerToken> {
        if self.tensors.is_empty() {
            return None;
        }
        let tied_embeddings = !self.tensors.iter().any(|t| t.name == "output.weight");
        let experts = match (self.arch_u64("expert_count"), self.arch_u64("expert_used_count")) {
            (Some(count), Some(used)) if count > 0 && used <= count => Some((used, count)),
            _ => None,
        };
        let size = |t: &TensorInfo| t.ggml_type.storage_bytes(t.element_count());
        let mut bytes =
            WeightBytesPerToken { total: 0, layers: 0, output: 0, embedding_rows: 0, other: 0, tied_embeddings };
        for tensor in &self.tensors {
            let full = size(tensor)?;
            if tensor.name == "output.weight" || (tied_embeddings && tensor.name == "token_embd.weight") {
                bytes.output += full;
            } else if is_row_lookup(&tensor.name) {
                let row_elements = tensor.dims.first().copied().unwrap_or(0);
                bytes.embedding_rows += tensor.ggml_type.storage_bytes(row_elements)?;
            } else if tensor.name.starts_with("blk.") {
                bytes.layers += match experts {
                    Some((used, count)) if is_expert_tensor(&tensor.name) => {
                        (u128::from(full) * u128::from(used) / u128::from(count)) as u64
                    }
                    _ => full,
                };
            } else {
                bytes.other += full;
            }
        }
        bytes.total = bytes.layers + bytes.output + bytes.embedding_rows + bytes.other;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use crate::{GgmlType, GgufFile, MetadataValue, TensorInfo};

    const F32: GgmlType = GgmlType(0);
    const Q4_0: GgmlType = GgmlType(2);

    fn tensor(name: &str, dims: &[u64], ggml_type: GgmlType) -> TensorInfo {
        TensorInfo { name: name.into(), dims: dims.to_vec(), ggml_type, offset: 0 }
    }

    fn file(tensors: Vec<TensorInfo>, metadata: &[(&str, MetadataValue)]) -> GgufFile {
        GgufFile {
            path: PathBuf::from("test.gguf"),
            version: 3,
            file_bytes: 0,
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
            tensors,
            data_offset: 0,
        }
    }

    /// A two-layer model: n_embd 64, vocab 1000, Q4_0 matrices (18 bytes per 32 weights), F32 norms.
    fn layers() -> Vec<TensorInfo> {
        let mut tensors = Vec::new();
        for layer in 0..2 {
            tensors.push(tensor(&format!("blk.{layer}.attn_norm.weight"), &[64], F32)); // 256 B
            tensors.push(tensor(&format!("blk.{layer}.attn_q.weight"), &[64, 64], Q4_0)); // 128 blocks: 2304 B
            tensors.push(tensor(&format!("blk.{layer}.ffn_up.weight"), &[64, 128], Q4_0));
            // 4608 B
        }
        tensors.push(tensor("output_norm.weight", &[64], F32)); // 256 B
        tensors
    }

    #[test]
    fn untied_model_reads_one_embedding_row_and_the_output_matrix() {
        let mut tensors = layers();
        tensors.push(tensor("token_embd.weight", &[64, 1000], Q4_0)); // row: 2 blocks = 36 B
        tensors.push(tensor("output.weight", &[64, 1000], Q4_0)); // 2000 blocks = 36000 B
        let b = file(tensors, &[]).weight_bytes_per_token().unwrap();
        assert!(!b.tied_embeddings);
        assert_eq!(b.layers, 2 * (256 + 2304 + 4608));
        assert_eq!(b.embedding_rows, 36);
        assert_eq!(b.output, 36_000);
        assert_eq!(b.other, 256);
        assert_eq!(b.total, 14_336 + 36 + 36_000 + 256);
    }

    #[test]
    fn tied_embeddings_are_read_whole_by_the_output_product() {
        let mut tensors = layers();
        tensors.push(tensor("token_embd.weight", &[64, 1000], Q4_0));
        let b = file(tensors, &[]).weight_bytes_per_token().unwrap();
        assert!(b.tied_embeddings);
        assert_eq!(b.embedding_rows, 0);
        assert_eq!(b.output, 36_000);
        assert_eq!(b.total, 14_336 + 36_000 + 256);
    }

    #[test]
    fn experts_count_in_proportion_to_those_used() {
        let mut tensors = layers();
        tensors.push(tensor("token_embd.weight", &[64, 1000], Q4_0));
        // 8 experts of 64×128: 8 × 4608 B; 2 used per token → 2 × 4608.
        tensors.push(tensor("blk.0.ffn_up_exps.weight", &[64, 128, 8], Q4_0));
        tensors.push(tensor("blk.0.ffn_up_shexp.weight", &[64, 128], Q4_0));
        let metadata = [
            ("general.architecture", MetadataValue::String("qwen3moe".into())),
            ("qwen3moe.expert_count", MetadataValue::U32(8)),
            ("qwen3moe.expert_used_count", MetadataValue::U32(2)),
        ];
        let b = file(tensors.clone(), &metadata).weight_bytes_per_token().unwrap();
        assert_eq!(b.layers, 14_336 + 2 * 4608 + 4608);
        // Without the expert counts the experts count whole (an upper bound, never an invented share).
        let b = file(tensors, &metadata[..1]).weight_bytes_per_token().unwrap();
        assert_eq!(b.layers, 14_336 + 8 * 4608 + 4608);
    }

    #[test]
    fn unknown_types_and_empty_files_give_no_figure() {
        assert_eq!(file(vec![], &[]).weight_bytes_per_token(), None);
        let tensors = vec![tensor("blk.0.attn_q.weight", &[64, 64], GgmlType(999))];
        assert_eq!(file(tensors, &[]).weight_bytes_per_token(), None);
    }
}
