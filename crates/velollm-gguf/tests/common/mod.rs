//! Raw GGUF bytes for tests that need files this crate's writer refuses to produce (it checks what it writes).

#![allow(dead_code)] // each test binary uses part of this

/// GGUF type ids of metadata values.
pub const U8: u32 = 0;
pub const U32: u32 = 4;
pub const STRING: u32 = 8;
pub const ARRAY: u32 = 9;
pub const U64: u32 = 10;
/// ggml type ids.
pub const F32: u32 = 0;
pub const Q4_0: u32 = 2;
pub const F64: u32 = 28;

/// A GGUF file assembled field by field, in file order.
pub struct RawGguf {
    pub bytes: Vec<u8>,
}

impl RawGguf {
    /// Magic, version 3 and the two counts.
    pub fn new(tensor_count: u64, kv_count: u64) -> RawGguf {
        let mut raw = RawGguf { bytes: b"GGUF".to_vec() };
        raw.u32(3).u64(tensor_count).u64(kv_count);
        raw
    }

    pub fn u8(&mut self, value: u8) -> &mut RawGguf {
        self.bytes.push(value);
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut RawGguf {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut RawGguf {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn string(&mut self, s: &str) -> &mut RawGguf {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    /// A key and a value type; the value follows.
    pub fn key(&mut self, key: &str, value_type: u32) -> &mut RawGguf {
        self.string(key).u32(value_type)
    }

    pub fn kv_u32(&mut self, key: &str, value: u32) -> &mut RawGguf {
        self.key(key, U32).u32(value)
    }

    pub fn kv_string(&mut self, key: &str, value: &str) -> &mut RawGguf {
        self.key(key, STRING).string(value)
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut RawGguf {
        self.string(name).u32(dims.len() as u32);
        for &dim in dims {
            self.u64(dim);
        }
        self.u32(ggml_type).u64(offset)
    }

    /// Zeros up to the next multiple of `alignment`, then `data_bytes` bytes of tensor data.
    pub fn data(&mut self, alignment: usize, data_bytes: usize) -> &mut RawGguf {
        let padded = self.bytes.len().next_multiple_of(alignment);
        self.bytes.resize(padded + data_bytes, 0);
        self
    }

    pub fn build(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// The file of issue 18: one key whose value is an array of arrays of arrays …, `depth` levels deep (12 bytes
/// a level), which once overflowed the stack of a recursive reader.
pub fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut raw = RawGguf::new(0, 1);
    raw.key("nested", ARRAY);
    for _ in 0..depth {
        raw.u32(ARRAY).u64(1);
    }
    raw.u32(U8).u64(1).u8(7);
    raw.build()
}

/// A small valid file: an architecture, an F32 tensor of 8 elements and a Q4_0 tensor of 64 (two blocks).
pub fn small_valid() -> Vec<u8> {
    RawGguf::new(2, 1)
        .kv_string("general.architecture", "llama")
        .tensor("a.weight", &[8], F32, 0)
        .tensor("b.weight", &[32, 2], Q4_0, 32)
        .data(32, 32 + 36)
        .build()
}

/// Files that make a reader allocate the most per byte of input, to hold it to its bound.
/// `count` distinct keys with one-byte values: a table entry for every 15–19 bytes of file.
pub fn many_keys(count: usize) -> Vec<u8> {
    let mut raw = RawGguf::new(0, count as u64);
    for index in 0..count {
        raw.key(&format!("{index:x}"), U8).u8(1);
    }
    raw.build()
}

/// `count` empty tensors (a zero dimension: no data, all at offset 0): a tensor info for every 33–37 bytes.
pub fn many_empty_tensors(count: usize) -> Vec<u8> {
    let mut raw = RawGguf::new(count as u64, 0);
    for index in 0..count {
        raw.tensor(&format!("{index:x}"), &[0], F32, 0);
    }
    raw.data(32, 0).build()
}

/// One array of `count` u8 items: kept, each one-byte item becomes a whole `MetadataValue`.
pub fn long_u8_array(count: usize) -> Vec<u8> {
    let mut raw = RawGguf::new(0, 1);
    raw.key("bytes", ARRAY).u32(U8).u64(count as u64);
    for index in 0..count {
        raw.u8(index as u8);
    }
    raw.build()
}
