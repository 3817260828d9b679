//! Seeded random weights, fast enough to write gigabytes in seconds.
//!
//! The generator is xoshiro256++ (Blackman and Vigna), seeded through splitmix64: a few shifts, rotations and
//! additions per 8 random bytes. Each piece of a tensor gets its own generator, seeded from the file's seed,
//! the tensor and the piece, so pieces can be produced on any thread in any order with the same result.
//!
//! The values are chosen to keep every activation finite, not to mean anything: each matrix's elements have
//! a root mean square of `1 / sqrt(row length)`, so a matrix–vector product keeps the scale of its input
//! (activations stay near 1, logits stay small), whatever the depth. Quantized blocks get uniformly random
//! quants and a scale of random sign whose size gives that root mean square.

use velollm_gguf::{GgmlType, TensorData, TensorInfo};

/// splitmix64: the recommended seeder for xoshiro, and a good 64-bit mixer.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub fn seed(seed: u64) -> Xoshiro256 {
        let mut state = seed;
        let s = [splitmix64(&mut state), splitmix64(&mut state), splitmix64(&mut state), splitmix64(&mut state)];
        Xoshiro256 { s }
    }

    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Fills `out` with random bytes.
    #[inline(always)]
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        let mut words = out.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let bytes = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }

    /// A uniform f32 in [-1, 1).
    pub fn next_signed_unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The bits of the IEEE half-precision value nearest to `x` (ties to even).
pub fn f16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        return sign | 0x7c00 | if mantissa != 0 { 0x200 } else { 0 };
    }
    let half_exponent = exponent - 127 + 15;
    if half_exponent >= 0x1f {
        return sign | 0x7c00;
    }
    // The 24-bit significand (with its implicit 1) and how far it must move right.
    let (significand, shift, base) = if half_exponent <= 0 {
        if exponent == 0 || half_exponent < -10 {
            return sign;
        }
        (mantissa | 0x80_0000, (14 - half_exponent) as u32, 0u32)
    } else {
        (mantissa, 13, (half_exponent as u32) << 10)
    };
    let kept = significand >> shift;
    let rest = significand & ((1 << shift) - 1);
    let halfway = 1 << (shift - 1);
    let mut half = base + kept;
    if rest > halfway || (rest == halfway && kept & 1 == 1) {
        half += 1; // may carry into the exponent, which is the correct rounding
    }
    sign | half as u16
}

/// The f32 value of half-precision bits (for checks).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let mantissa = f32::from(h & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        0x1f if mantissa == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}

/// How a tensor's values are made.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// Random values with about this root mean square (weight matrices, any type).
    Random { rms: f32 },
    /// Every element this value (norm weights).
    Constant(f32),
    /// Uniformly random in ±amplitude (biases).
    Uniform(f32),
    /// Exactly these values (RoPE factors).
    Values(Vec<f32>),
}

/// Root mean square of a Q4_0 quant minus its offset, `q - 8` for q uniform in 0..16: sqrt(344 / 16).
const Q4_0_QUANT_RMS: f32 = 4.636_809;
/// Root mean square of a Q8_0 quant, uniform in -128..128: sqrt(1398144 / 256).
const Q8_0_QUANT_RMS: f32 = 73.902_64;
/// Root mean square of a Q6_K quant minus its offset, `q - 32` for q uniform in 0..64: sqrt(21856 / 64).
const Q6_K_QUANT_RMS: f32 = 18.479_72;
/// Q6_K sub-block scales are drawn uniformly from ±(1..=8); their root mean square is sqrt(204 / 8).
const Q6_K_SCALE_RMS: f32 = 5.049_752;
/// Entries in the table F16 values are drawn from (12 random bits each).
const F16_TABLE: usize = 4096;

/// Random signs for block scales, 64 from each random number. The quants of Q4_0, Q8_0 and Q6_K are
/// slightly lopsided (Q4_0's `q - 8` averages -0.5); with scales of random sign, as `llama-quantize` writes
/// them too, every weight averages zero and no direction builds up in the activations layer after layer.
#[derive(Default)]
struct Signs {
    bits: u64,
    left: u32,
}

impl Signs {
    #[inline(always)]
    fn apply(&mut self, d: u16, rng: &mut Xoshiro256) -> [u8; 2] {
        if self.left == 0 {
            self.bits = rng.next_u64();
            self.left = 64;
        }
        let sign = ((self.bits & 1) as u16) << 15;
        self.bits >>= 1;
        self.left -= 1;
        (d ^ sign).to_le_bytes()
    }
}

/// A [`Fill`] made ready for one storage type.
#[derive(Debug, Clone)]
enum Prepared {
    Q4_0 { d: u16 },
    Q8_0 { d: u16 },
    Q6K { d: u16 },
    F16 { table: Box<[u16]> },
    Constant(f32),
    Uniform(f32),
    Values(Vec<f32>),
}

impl Prepared {
    fn new(fill: &Fill, ggml_type: GgmlType) -> Prepared {
        match fill {
            Fill::Random { rms } => match ggml_type {
                GgmlType::Q4_0 => Prepared::Q4_0 { d: f16_bits(rms / Q4_0_QUANT_RMS) },
                GgmlType::Q8_0 => Prepared::Q8_0 { d: f16_bits(rms / Q8_0_QUANT_RMS) },
                GgmlType::Q6_K => Prepared::Q6K { d: f16_bits(rms / (Q6_K_QUANT_RMS * Q6_K_SCALE_RMS)) },
                GgmlType::F16 => {
                    // Uniform in ±a has root mean square a / sqrt(3).
                    let amplitude = rms * 3f32.sqrt();
                    let table = (0..F16_TABLE)
                        .map(|i| f16_bits(amplitude * ((2 * i + 1) as f32 / F16_TABLE as f32 - 1.0)))
                        .collect();
                    Prepared::F16 { table }
                }
                _ => Prepared::Uniform(rms * 3f32.sqrt()),
            },
            Fill::Constant(v) => Prepared::Constant(*v),
            Fill::Uniform(a) => Prepared::Uniform(*a),
            Fill::Values(values) => Prepared::Values(values.clone()),
        }
    }
}

/// The tensor data of a synthetic file: one [`Fill`] per tensor, made from the seed.
pub struct Generator {
    seed: u64,
    fills: Vec<Prepared>,
}

impl Generator {
    /// `fills[i]` makes tensor `i`, stored as `types[i]`.
    pub fn new(seed: u64, fills: &[Fill], types: &[GgmlType]) -> Generator {
        let fills = fills.iter().zip(types).map(|(fill, &t)| Prepared::new(fill, t)).collect();
        Generator { seed, fills }
    }

    fn rng(&self, index: usize, start: u64) -> Xoshiro256 {
        let mut state = self.seed;
        let a = splitmix64(&mut state);
        let mut state = a ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let b = splitmix64(&mut state);
        let mut state = b ^ start;
        Xoshiro256::seed(splitmix64(&mut state))
    }
}

impl TensorData for Generator {
    fn fill(&self, index: usize, _tensor: &TensorInfo, start: u64, out: &mut [u8]) {
        let mut rng = self.rng(index, start);
        match &self.fills[index] {
            Prepared::Q4_0 { d } => {
                let mut signs = Signs::default();
                for block in out.chunks_exact_mut(18) {
                    block[..2].copy_from_slice(&signs.apply(*d, &mut rng));
                    rng.fill_bytes(&mut block[2..]);
                }
            }
            Prepared::Q8_0 { d } => {
                let mut signs = Signs::default();
                for block in out.chunks_exact_mut(34) {
                    block[..2].copy_from_slice(&signs.apply(*d, &mut rng));
                    rng.fill_bytes(&mut block[2..]);
                }
            }
            Prepared::Q6K { d } => {
                // block_q6_K: ql[128], qh[64] (the quants), scales[16] (int8), d (f16).
                for block in out.chunks_exact_mut(210) {
                    rng.fill_bytes(&mut block[..208]);
                    for scale in &mut block[192..208] {
                        // ±(1..=8): bit 3 is the sign.
                        let magnitude = 1 + (*scale & 7) as i8;
                        *scale = (if *scale & 8 != 0 { -magnitude } else { magnitude }) as u8;
                    }
                    block[208..].copy_from_slice(&d.to_le_bytes());
                }
            }
            Prepared::F16 { table } => {
                let mut values = out.chunks_exact_mut(8);
                for four in &mut values {
                    let r = rng.next_u64();
                    for (lane, pair) in four.chunks_exact_mut(2).enumerate() {
                        let index = (r >> (16 * lane)) as usize % F16_TABLE;
                        pair.copy_from_slice(&table[index].to_le_bytes());
                    }
                }
                for pair in values.into_remainder().chunks_exact_mut(2) {
                    let index = rng.next_u64() as usize % F16_TABLE;
                    pair.copy_from_slice(&table[index].to_le_bytes());
                }
            }
            Prepared::Constant(v) => {
                for value in out.chunks_exact_mut(4) {
                    value.copy_from_slice(&v.to_le_bytes());
                }
            }
            Prepared::Uniform(amplitude) => {
                for value in out.chunks_exact_mut(4) {
                    value.copy_from_slice(&(amplitude * rng.next_signed_unit()).to_le_bytes());
                }
            }
            Prepared::Values(values) => {
                let first = (start / 4) as usize;
                for (i, value) in out.chunks_exact_mut(4).enumerate() {
                    value.copy_from_slice(&values.get(first + i).copied().unwrap_or(0.0).to_le_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversion() {
        for (x, bits) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (0.5, 0x3800),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // rounds up to infinity
            (1e6, 0x7c00),
            (6.103_515_6e-5, 0x0400), // smallest normal
            (5.960_464_5e-8, 0x0001), // smallest subnormal
            (1e-7, 0x0002),
            (1e-9, 0x0000),
            (1.000_488_3, 0x3c00), // exactly halfway between 1 and the next: ties to even
            (1.000_488_4, 0x3c01),
            (0.333_333_34, 0x3555),
        ] {
            assert_eq!(f16_bits(x), bits, "{x}");
        }
        assert_eq!(f16_bits(f32::INFINITY), 0x7c00);
        assert!(f16_to_f32(f16_bits(f32::NAN)).is_nan());
        for bits in [0x0001u16, 0x03ff, 0x0400, 0x3c00, 0x3555, 0x7bff, 0xc000] {
            assert_eq!(f16_bits(f16_to_f32(bits)), bits, "{bits:#x} round trip");
        }
    }

    #[test]
    fn the_generator_is_reproducible_and_seed_dependent() {
        let mut a = Xoshiro256::seed(1);
        let mut b = Xoshiro256::seed(1);
        let mut c = Xoshiro256::seed(2);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        let mut bytes = [0u8; 13];
        a.fill_bytes(&mut bytes);
        assert!(bytes.iter().any(|&x| x != 0));
    }

    /// Dequantizes what the generator wrote and checks the root mean square it promises.
    #[test]
    fn random_blocks_have_the_intended_scale() {
        let rms = 1.0 / 3072f32.sqrt();
        let info = |t| TensorInfo { name: "t".into(), dims: vec![3072, 64], ggml_type: t, offset: 0 };
        let measure = |ggml_type: GgmlType, dequantize: &dyn Fn(&[u8]) -> Vec<f32>| {
            let tensor = info(ggml_type);
            let bytes = ggml_type.storage_bytes(tensor.element_count()).unwrap() as usize;
            let mut out = vec![0u8; bytes];
            Generator::new(7, &[Fill::Random { rms }], &[ggml_type]).fill(0, &tensor, 0, &mut out);
            let values = dequantize(&out);
            assert_eq!(values.len() as u64, tensor.element_count());
            assert!(values.iter().all(|v| v.is_finite()));
            (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt()
        };
        let q4_0 = measure(GgmlType::Q4_0, &|bytes| {
            bytes
                .chunks_exact(18)
                .flat_map(|b| {
                    let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    b[2..].iter().flat_map(move |&q| [d * (f32::from(q & 15) - 8.0), d * (f32::from(q >> 4) - 8.0)])
                })
                .collect()
        });
        let q8_0 = measure(GgmlType::Q8_0, &|bytes| {
            bytes
                .chunks_exact(34)
                .flat_map(|b| {
                    let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    b[2..].iter().map(move |&q| d * f32::from(q as i8))
                })
                .collect()
        });
        let q6_k = measure(GgmlType::Q6_K, &|bytes| {
            bytes
                .chunks_exact(210)
                .flat_map(|b| {
                    let d = f16_to_f32(u16::from_le_bytes([b[208], b[209]]));
                    // The quant's bit layout does not matter for its distribution: take the low nibbles of ql
                    // with two bits of qh, one element per ql nibble.
                    (0..256).map(move |i| {
                        let low = (b[i / 2] >> (4 * (i % 2))) & 15;
                        let high = (b[128 + i / 4] >> (2 * (i % 4))) & 3;
                        let q = f32::from(low | (high << 4)) - 32.0;
                        d * f32::from(b[192 + i / 16] as i8) * q
                    })
                })
                .collect()
        });
        let f16 = measure(GgmlType::F16, &|bytes| {
            bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect()
        });
        for (name, got) in [("Q4_0", q4_0), ("Q8_0", q8_0), ("Q6_K", q6_k), ("F16", f16)] {
            assert!((got / rms - 1.0).abs() < 0.03, "{name}: rms {got}, wanted {rms}");
        }
    }

    #[test]
    fn pieces_do_not_depend_on_each_other() {
        let tensor = TensorInfo { name: "t".into(), dims: vec![64, 4], ggml_type: GgmlType::Q8_0, offset: 0 };
        let generator = Generator::new(3, &[Fill::Random { rms: 0.1 }], &[GgmlType::Q8_0]);
        let (mut first, mut again) = (vec![0u8; 136], vec![0u8; 136]);
        generator.fill(0, &tensor, 136, &mut first);
        generator.fill(0, &tensor, 0, &mut [0u8; 136]);
        generator.fill(0, &tensor, 136, &mut again);
        assert_eq!(first, again);
        let other_seed = Generator::new(4, &[Fill::Random { rms: 0.1 }], &[GgmlType::Q8_0]);
        other_seed.fill(0, &tensor, 136, &mut again);
        assert_ne!(first, again);
    }
}
