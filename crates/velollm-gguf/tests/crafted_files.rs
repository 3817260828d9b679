//! Crafted files, one per rule of the reader (docs/gguf.md): each is refused with its own typed problem, in one
//! line that names the key or tensor, before anything is allocated for what the file claims.

mod common;

use std::path::Path;

use common::*;
use velollm_gguf::{GgufError, GgufFile, HeaderProblem, ReadOptions};

const LABEL: &str = "crafted.gguf";

/// Reads `bytes` both ways (arrays skipped and kept): the outcome must not depend on it.
fn read(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let skipped = GgufFile::from_bytes(Path::new(LABEL), bytes, ReadOptions { keep_arrays: false });
    let kept = GgufFile::from_bytes(Path::new(LABEL), bytes, ReadOptions { keep_arrays: true });
    assert_eq!(skipped.as_ref().err().map(|e| e.to_string()), kept.as_ref().err().map(|e| e.to_string()));
    skipped
}

/// The problem and its byte offset; the message is one line naming the file.
fn problem(bytes: &[u8]) -> (HeaderProblem, u64) {
    match read(bytes) {
        Err(err @ GgufError::Invalid { .. }) => {
            let message = err.to_string();
            assert!(!message.contains('\n') && message.contains(LABEL), "{message}");
            let GgufError::Invalid { problem, at, .. } = err else { unreachable!() };
            (problem, at)
        }
        other => panic!("expected an invalid header, got {other:?}"),
    }
}

fn message(bytes: &[u8]) -> String {
    read(bytes).unwrap_err().to_string()
}

/// Where the first key starts: after magic, version and the two counts.
const FIRST_KEY_AT: u64 = 4 + 4 + 8 + 8;

#[test]
fn nested_arrays_of_issue_18_are_refused_without_recursing() {
    // 1.2 MB of arrays inside arrays: a recursive reader overflows its stack and aborts the process.
    let bytes = nested_arrays(100_000);
    assert!(bytes.len() > 1_200_000);
    // The outer array's item type (after the key "nested" and its value type) is the refused field.
    let outer_item_type_at = FIRST_KEY_AT + 8 + 6 + 4;
    assert_eq!(problem(&bytes), (HeaderProblem::NestedArray { key: "nested".into() }, outer_item_type_at));
    assert!(message(&bytes).contains("\"nested\" is an array of arrays"), "{}", message(&bytes));

    // The same from disk, as `velollm benchmark` reads a model before any engine loads it.
    let path = std::env::temp_dir().join(format!("velollm-gguf-nested-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let from_disk = GgufFile::read(&path, ReadOptions::default());
    let _ = std::fs::remove_file(&path);
    assert!(matches!(from_disk, Err(GgufError::Invalid { problem: HeaderProblem::NestedArray { .. }, .. })));
}

#[test]
fn metadata_keys_must_be_unique_and_non_empty() {
    let duplicate = RawGguf::new(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2).build();
    let second_key_at = FIRST_KEY_AT + 8 + 3 + 4 + 4;
    assert_eq!(problem(&duplicate), (HeaderProblem::DuplicateKey { key: "a.b".into() }, second_key_at));
    let empty = RawGguf::new(0, 1).kv_u32("", 1).build();
    assert_eq!(problem(&empty).0, HeaderProblem::EmptyKey { index: 0 });
}

#[test]
fn value_types_must_be_known() {
    let scalar = RawGguf::new(0, 1).key("k", 13).u8(0).build();
    assert_eq!(problem(&scalar), (HeaderProblem::UnknownValueType { key: "k".into(), type_id: 13 }, FIRST_KEY_AT + 9));
    let items = RawGguf::new(0, 1).key("k", ARRAY).u32(u32::MAX).u64(0).build();
    assert_eq!(problem(&items).0, HeaderProblem::UnknownValueType { key: "k".into(), type_id: u32::MAX });
}

#[test]
fn lengths_over_gguf_limits_are_invalid_and_lengths_past_the_end_are_truncation() {
    let string = RawGguf::new(0, 1).key("k", STRING).u64(u64::MAX).build();
    let (p, _) = problem(&string);
    assert_eq!(p, HeaderProblem::StringTooLong { place: "metadata \"k\"".into(), len: u64::MAX });
    let key = RawGguf::new(0, 1).u64(1 << 31).data(1, 32).build();
    assert_eq!(problem(&key).0, HeaderProblem::StringTooLong { place: "metadata key #0".into(), len: 1 << 31 });
    let array = RawGguf::new(0, 1).key("k", ARRAY).u32(U8).u64(1 << 31).build();
    assert_eq!(problem(&array).0, HeaderProblem::ArrayTooLong { key: "k".into(), len: 1 << 31 });

    // Within the limits but longer than the file: nothing is allocated for them, the file is cut short.
    let long_string = RawGguf::new(0, 1).key("k", STRING).u64(1 << 29).build();
    assert!(matches!(read(&long_string), Err(GgufError::TruncatedHeader { .. })));
    let long_array = RawGguf::new(0, 1).key("k", ARRAY).u32(STRING).u64(1 << 29).build();
    assert!(matches!(read(&long_array), Err(GgufError::TruncatedHeader { .. })));
}

#[test]
fn counts_the_file_cannot_hold_are_refused_before_reading() {
    for (tensors, kvs) in [(u64::MAX, 0), (0, u64::MAX), (1 << 40, 1 << 40), (u64::MAX / 24 + 1, 0)] {
        let bytes = RawGguf::new(tensors, kvs).kv_u32("k", 1).build();
        assert!(matches!(read(&bytes), Err(GgufError::TruncatedHeader { .. })), "{tensors} tensors, {kvs} keys");
    }
}

#[test]
fn alignment_must_be_a_u32_power_of_two() {
    for value in [0, 3, 48, u32::MAX] {
        let bytes = RawGguf::new(0, 2).kv_string("x", "y").kv_u32("general.alignment", value).build();
        let alignment_key_at = FIRST_KEY_AT + 8 + 1 + 4 + 8 + 1;
        assert_eq!(problem(&bytes), (HeaderProblem::AlignmentNotPowerOfTwo { value }, alignment_key_at));
    }
    let wide = RawGguf::new(0, 1).key("general.alignment", U64).u64(64).build();
    assert_eq!(problem(&wide).0, HeaderProblem::AlignmentNotU32 { found: "u64" });
    let array = RawGguf::new(0, 1).key("general.alignment", ARRAY).u32(U32).u64(1).u32(64).build();
    assert_eq!(problem(&array).0, HeaderProblem::AlignmentNotU32 { found: "array" });

    // A valid alignment places the data section and every tensor.
    let aligned = RawGguf::new(2, 1)
        .kv_u32("general.alignment", 64)
        .tensor("a", &[4], F32, 0)
        .tensor("b", &[4], F32, 64)
        .data(64, 64 + 16)
        .build();
    let file = read(&aligned).unwrap();
    assert_eq!(file.data_offset % 64, 0);
    assert_eq!(file.data_offset + 64 + 16, aligned.len() as u64);
}

#[test]
fn tensor_names_must_fit_ggml_and_be_unique() {
    let long = "n".repeat(64);
    let bytes = RawGguf::new(1, 0).tensor(&long, &[4], F32, 0).data(32, 16).build();
    assert_eq!(problem(&bytes), (HeaderProblem::TensorNameTooLong { index: 0, len: 64 }, FIRST_KEY_AT));
    let longest = "n".repeat(63);
    read(&RawGguf::new(1, 0).tensor(&longest, &[4], F32, 0).data(32, 16).build()).unwrap();

    let twice = RawGguf::new(2, 0).tensor("w", &[4], F32, 0).tensor("w", &[4], F32, 32).data(32, 48).build();
    let second_at = FIRST_KEY_AT + (8 + 1 + 4 + 8 + 4 + 8);
    assert_eq!(problem(&twice), (HeaderProblem::DuplicateTensor { name: "w".into() }, second_at));
}

#[test]
fn shapes_must_fit_ggml() {
    let five = RawGguf::new(1, 0).tensor("w", &[1, 1, 1, 1, 1], F32, 0).data(32, 4).build();
    assert_eq!(problem(&five).0, HeaderProblem::TooManyDimensions { name: "w".into(), n_dims: 5 });
    let huge_count = RawGguf::new(1, 0).string("w").u32(u32::MAX).data(1, 32).build();
    assert_eq!(problem(&huge_count).0, HeaderProblem::TooManyDimensions { name: "w".into(), n_dims: u32::MAX });

    let negative = RawGguf::new(1, 0).tensor("w", &[4, 1 << 63], F32, 0).build();
    assert_eq!(problem(&negative).0, HeaderProblem::NegativeDimension { name: "w".into(), index: 1, value: 1 << 63 });
    let dims = [1 << 32, 1 << 31, 0];
    let overflow = RawGguf::new(1, 0).tensor("w", &dims, F32, 0).build();
    assert_eq!(problem(&overflow).0, HeaderProblem::TooManyElements { name: "w".into(), dims: dims.to_vec() });

    // 2^62 F64 elements count in ggml, but their 2^65 bytes do not fit in a size.
    let too_big = RawGguf::new(1, 0).tensor("w", &[1 << 62], F64, 0).build();
    assert_eq!(problem(&too_big).0, HeaderProblem::SizeOverflow { name: "w".into() });

    // An empty tensor is allowed, as llama.cpp allows it.
    let empty = RawGguf::new(1, 0).tensor("w", &[4, 0], F32, 0).data(32, 0).build();
    assert_eq!(read(&empty).unwrap().tensors[0].element_count(), 0);
}

#[test]
fn tensor_types_must_be_known_with_whole_blocks() {
    // 4 and 5 (Q4_2, Q4_3) and 31 (Q4_0_4_4) were removed from ggml; 43 is past its last type.
    for type_id in [4, 5, 31, 43, u32::MAX] {
        let bytes = RawGguf::new(1, 0).tensor("w", &[32], type_id, 0).data(32, 32).build();
        assert_eq!(problem(&bytes).0, HeaderProblem::UnknownTensorType { name: "w".into(), type_id });
    }
    let partial = RawGguf::new(1, 0).tensor("w", &[48, 2], Q4_0, 0).data(32, 64).build();
    let expected = HeaderProblem::PartialBlock { name: "w".into(), row: 48, type_name: "Q4_0".into(), block: 32 };
    assert_eq!(problem(&partial).0, expected);
}

#[test]
fn tensors_must_follow_each_other_at_aligned_offsets() {
    let first_not_at_zero = RawGguf::new(1, 0).tensor("a", &[4], F32, 32).data(32, 48).build();
    let expected = HeaderProblem::MisplacedTensor { name: "a".into(), offset: 32, expected: 0 };
    assert_eq!(problem(&first_not_at_zero).0, expected);
    let misaligned = RawGguf::new(2, 0).tensor("a", &[4], F32, 0).tensor("b", &[4], F32, 16).data(32, 32).build();
    let expected = HeaderProblem::MisplacedTensor { name: "b".into(), offset: 16, expected: 32 };
    assert_eq!(problem(&misaligned).0, expected);
    let overlapping = RawGguf::new(2, 0).tensor("a", &[64], F32, 0).tensor("b", &[4], F32, 32).data(32, 288).build();
    let expected = HeaderProblem::MisplacedTensor { name: "b".into(), offset: 32, expected: 256 };
    assert_eq!(problem(&overlapping).0, expected);
    let far = RawGguf::new(1, 0).tensor("a", &[4], F32, u64::MAX - 3).build();
    assert!(matches!(problem(&far).0, HeaderProblem::MisplacedTensor { .. }));
}

#[test]
fn tensor_data_must_lie_within_the_file() {
    let bytes = small_valid();
    let file = read(&bytes).unwrap();
    assert_eq!(file.tensors.len(), 2);
    assert_eq!(file.data_offset + 32 + 36, bytes.len() as u64);
    let cut = &bytes[..bytes.len() - 1];
    match read(cut) {
        Err(GgufError::Truncated { expected, actual, .. }) => {
            assert_eq!((expected, actual), (bytes.len() as u64, cut.len() as u64))
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn a_file_without_tensors_needs_no_padding() {
    // llama.cpp aligns the data section only when there is one.
    let bytes = RawGguf::new(0, 1).kv_string("general.architecture", "llama").build();
    let file = read(&bytes).unwrap();
    assert_eq!(file.data_offset, bytes.len() as u64);
    assert_eq!(file.architecture(), Some("llama"));
}

#[test]
fn offsets_past_two_to_the_64_are_refused_not_wrapped() {
    // A first tensor of 2^63 bytes puts the second at 2^63; a second of 2^63 bytes would end at 2^64, which
    // wraps to 0 in unchecked arithmetic and would make the file look long enough.
    let half = 1u64 << 63;
    let bytes = RawGguf::new(2, 0).tensor("a", &[half >> 3], F64, 0).tensor("b", &[half >> 3], F64, half).build();
    assert_eq!(problem(&bytes).0, HeaderProblem::SizeOverflow { name: "b".into() });
}
