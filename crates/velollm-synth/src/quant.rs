//! The weight types a synthetic file can have, and which tensor gets which type.

use velollm_gguf::GgmlType;

/// The file's weight type (`--quant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    Q4_0,
    Q8_0,
    F16,
}

/// Every `--quant` value, in the order error messages list them.
pub const QUANTS: &[Quant] = &[Quant::Q4_0, Quant::Q8_0, Quant::F16];

/// What a tensor is, as far as its storage type goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix of a layer, or an untied token embedding.
    Matrix,
    /// The matrix that produces the logits: `output.weight`, or `token_embd.weight` when tied to it.
    Output,
    /// Norm weights, biases, RoPE factors: one-dimensional, kept in F32 by every conversion.
    Vector,
}

impl Quant {
    /// Parses a `--quant` value (`q4_0`, `Q8_0`, `f16`, …).
    pub fn parse(name: &str) -> Option<Quant> {
        QUANTS.iter().copied().find(|q| q.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The ggml name: `Q4_0`, `Q8_0`, `F16`.
    pub fn name(self) -> &'static str {
        match self {
            Quant::Q4_0 => "Q4_0",
            Quant::Q8_0 => "Q8_0",
            Quant::F16 => "F16",
        }
    }

    /// llama.cpp's `llama_ftype` for `general.file_type` (`LLAMA_FTYPE_MOSTLY_Q4_0` = 2, `_Q8_0` = 7,
    /// `_F16` = 1).
    pub fn file_type(self) -> u32 {
        match self {
            Quant::Q4_0 => 2,
            Quant::Q8_0 => 7,
            Quant::F16 => 1,
        }
    }

    /// The storage type of a tensor of `role` whose rows have `row_elements` elements, as a real file of this
    /// type has it. Conversions keep vectors in F32. `llama-quantize` (without `--pure`) stores the output
    /// matrix in Q6_K for Q4_0 (Q8_0 when its rows are not whole 256-element blocks), and leaves it in the
    /// file's type for Q8_0 (llama.cpp's `llama_tensor_get_type`).
    pub fn tensor_type(self, role: Role, row_elements: u64) -> GgmlType {
        match (role, self) {
            (Role::Vector, _) => GgmlType::F32,
            (_, Quant::F16) => GgmlType::F16,
            (_, Quant::Q8_0) => GgmlType::Q8_0,
            (Role::Output, Quant::Q4_0) if row_elements.is_multiple_of(256) => GgmlType::Q6_K,
            (Role::Output, Quant::Q4_0) => GgmlType::Q8_0,
            (Role::Matrix, Quant::Q4_0) => GgmlType::Q4_0,
        }
    }
}

/// The `--quant` values, comma-separated, for error messages.
pub fn known_names() -> String {
    QUANTS.iter().map(|q| q.name().to_ascii_lowercase()).collect::<Vec<_>>().join(", ")
}
