//! ggml tensor types as stored in GGUF tensor infos, with their block layout.

/// A ggml tensor type id and what is known about its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q6_K: GgmlType = GgmlType(14);

    /// `(name, elements per block, bytes per block)` for the types the linked ggml defines (ids it has removed,
    /// such as 4, 5 and 31–33, have no layout there either); `None` for ids this reader does not know.
    fn layout(self) -> Option<(&'static str, u64, u64)> {
        let layout = match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            40 => ("NVFP4", 64, 36),
            41 => ("Q1_0", 128, 18),
            42 => ("Q2_0", 64, 18),
            _ => return None,
        };
        Some(layout)
    }

    /// The type's ggml name (`Q4_K`, `F32`, …), or `type<id>` for an unknown id.
    pub fn name(self) -> String {
        match self.layout() {
            Some((name, _, _)) => name.to_string(),
            None => format!("type{}", self.0),
        }
    }

    /// `(elements per block, bytes per block)`, if the type is known. A row of a tensor (its first
    /// dimension) must be a whole number of blocks.
    pub fn block(self) -> Option<(u64, u64)> {
        self.layout().map(|(_, elements, bytes)| (elements, bytes))
    }

    /// Bytes taken by a tensor of `elements` elements, if the type is known and the size fits in a `u64`.
    pub fn storage_bytes(self, elements: u64) -> Option<u64> {
        let (_, block_elements, block_bytes) = self.layout()?;
        elements.div_ceil(block_elements).checked_mul(block_bytes)
    }

    /// Whether this is a quantized (block) type rather than a plain float or integer type.
    pub fn is_quantized(self) -> bool {
        matches!(self.layout(), Some((_, block, _)) if block > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_types_round_up_to_whole_blocks() {
        // 576 elements of Q4_1 = 18 blocks of 20 bytes.
        assert_eq!(GgmlType(3).storage_bytes(576), Some(360));
        // A partial block still takes a whole block.
        assert_eq!(GgmlType(12).storage_bytes(257), Some(288));
        assert_eq!(GgmlType(0).storage_bytes(10), Some(40));
        assert_eq!(GgmlType(999).storage_bytes(10), None);
        // A size beyond u64 is no size.
        assert_eq!(GgmlType(28).storage_bytes(u64::MAX / 4), None);
        assert_eq!(GgmlType(999).name(), "type999");
        assert!(GgmlType(14).is_quantized());
        assert!(!GgmlType(1).is_quantized());
    }
}
