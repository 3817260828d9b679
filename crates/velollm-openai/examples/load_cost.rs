//! The load generator's own cost per request (docs/performance.md, "The load generator"):
//!
//! 1. against an instant in-process sender (no I/O: a timeline returned at once), what the generator itself
//!    costs — threads, the request counter, the arrival schedule, collecting timelines;
//! 2. through the real OpenAI client against velollm-fixtures' instant stand-in server on loopback (16 chunks
//!    per answer, no delay): generator + HTTP + SSE parsing, i.e. everything velollm adds to a request.
//!
//! `cargo run --release -p velollm-openai --example load_cost [REQUESTS]`

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use velollm_core::{
    Backend, LoadProfile, LoadRequest, LoadShape, LoadStop, ModelSource, RequestSender, RequestTimeline,
    TokenCountSource,
};

/// Answers at once: the generator's cost with nothing behind it.
struct Instant16;

impl RequestSender for Instant16 {
    fn send(&self, request: &LoadRequest, origin: Instant, _cancel: &AtomicBool) -> RequestTimeline {
        let now = origin.elapsed().as_nanos() as u64;
        RequestTimeline {
            index: request.index,
            scheduled_ns: None,
            sent_ns: now,
            response_ns: Some(now),
            chunk_times_ns: vec![now; 16],
            end_ns: now,
            http_status: Some(200),
            prompt_tokens: Some(8),
            output_tokens: Some(16),
            output_tokens_source: Some(TokenCountSource::Usage),
            error: None,
        }
    }
}

fn measure(label: &str, sender: &dyn RequestSender, shape: LoadShape, requests: u64) {
    let profile =
        LoadProfile { shape, stop: LoadStop::Requests(requests), warmup_requests: 0, max_concurrency: 256, seed: 1 };
    let make = |index| LoadRequest { index, prompt: "Count:".into(), max_tokens: 16, seed: 42, stop_at_eos: false };
    let start = Instant::now();
    let run = velollm_load::run_profile(sender, &profile, &make, &AtomicBool::new(false));
    let wall = start.elapsed().as_secs_f64();
    let record = velollm_load::summarize(&profile, run.timed, 0, None);
    assert_eq!(record.completed, requests, "{label}: {:?}", record.failures);
    println!(
        "{label:<44} {requests:>6} requests  {:>9.0} req/s  {:>7.1} µs/request (wall)",
        requests as f64 / wall,
        wall * 1e6 / requests as f64
    );
}

fn main() {
    let requests: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    println!("1. the generator alone (instant in-process sender)");
    for c in [1, 16, 256] {
        measure(&format!("closed loop, concurrency {c}"), &Instant16, LoadShape::Closed { concurrency: c }, requests);
    }
    measure(
        "open loop, rate inf (≤ 256 in flight)",
        &Instant16,
        LoadShape::Open { rate: None, burstiness: 1.0 },
        requests,
    );

    println!("2. generator + OpenAI client over loopback HTTP (instant stand-in, 16 chunks per answer)");
    let standin = velollm_fixtures::openai_standin::StandIn::start(velollm_fixtures::openai_standin::Script::instant(
        "standin-model",
        16,
    ));
    let backend = velollm_openai::OpenAiBackend::new(velollm_openai::OpenAiSettings {
        url: standin.url(),
        key: None,
        endpoint: velollm_openai::Endpoint::Chat,
        timeouts: velollm_openai::Timeouts::default(),
        pool: 256,
    });
    let cancel = Arc::new(AtomicBool::new(false));
    let mut model = backend
        .load_model(&ModelSource::Server("standin-model".into()), &Default::default(), &cancel)
        .expect("the stand-in serves its model");
    let session = model.new_context(&velollm_core::ContextParams::with_threads(1)).expect("a session");
    let sender = session.request_sender().expect("the openai session sends concurrently");
    let http_requests = (requests / 10).max(100);
    for c in [1, 16, 64] {
        measure(
            &format!("closed loop, concurrency {c}"),
            sender.as_ref(),
            LoadShape::Closed { concurrency: c },
            http_requests,
        );
    }
    measure(
        "open loop, rate inf (≤ 256 in flight)",
        sender.as_ref(),
        LoadShape::Open { rate: None, burstiness: 1.0 },
        http_requests,
    );
}
