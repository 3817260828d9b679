//! candle runs one sequence per model (its quantized models hold one KV cache): a batched test (`-npl`) that
//! reaches its session through the library is refused in one line, never run as a single sequence.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use velollm_candle::{CandleBackend, CANDLE_NO_PARALLEL};
use velollm_core::{Backend, BackendError, ContextParams, LoadParams, ModelSource, Parallel, TokenRequest, TokenTest};

#[test]
fn a_batched_test_is_refused_and_a_single_one_still_runs() {
    let source = ModelSource::File(common::model(common::SMOLLM2));
    let cancel = Arc::new(AtomicBool::new(false));
    let mut model = CandleBackend::new(2).load_model(&source, &LoadParams::default(), &cancel).expect("candle loads");
    let context = ContextParams { n_ctx: 256, ..ContextParams::with_threads(2) };
    let mut session = model.new_context(&context).expect("candle creates a context");
    let single = TokenTest::single(8, 2, 0);
    let batched = TokenTest { parallel: Some(Parallel { n_sequences: 2, shared_prompt: false }), ..single };
    let request = |test| TokenRequest { test, seed: 1, depth_seed: 2 };
    match session.run_tokens(&request(batched), &cancel) {
        Err(BackendError::Unsupported(reason)) => {
            assert_eq!(reason, CANDLE_NO_PARALLEL);
            assert!(!reason.contains('\n'));
        }
        other => panic!("a batched test ran on candle: {other:?}"),
    }
    let sample = session.run_tokens(&request(single), &cancel).expect("the single-sequence test runs");
    assert_eq!((sample.prompt_tokens, sample.token_times_ns.len()), (8, 2));
    assert!(sample.batched.is_none());
}
