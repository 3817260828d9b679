//! The load generator: sends a profile's requests through a [`RequestSender`] on plain threads and keeps
//! every request's timeline. The HTTP clients block, so one thread per request in flight is the honest model
//! of that many users; the generator's own cost per request is measured in docs/performance.md.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use velollm_core::{LoadProfile, LoadRequest, LoadShape, LoadStop, RequestSender, RequestTimeline};

use crate::rng::Rng;

/// Stack of each request thread: the HTTP client and a JSON parser need little.
const THREAD_STACK: usize = 256 * 1024;

/// What one profile's run produced.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// Untimed warm-up requests, one after another, before the timed ones.
    pub warmup: Vec<RequestTimeline>,
    /// Timed requests in order of issue.
    pub timed: Vec<RequestTimeline>,
    /// Whether `cancel` ended the run early.
    pub interrupted: bool,
    /// A request thread the system refused to start (the run used the threads it had).
    pub thread_error: Option<String>,
}

/// Runs `profile`: its warm-up requests one at a time, then the timed ones as its shape says. `make` builds
/// request `index` (warm-up requests take the first indices). Every timestamp is relative to one origin,
/// taken before the first timed request.
pub fn run_profile(
    sender: &dyn RequestSender,
    profile: &LoadProfile,
    make: &(dyn Fn(u64) -> LoadRequest + Sync),
    cancel: &AtomicBool,
) -> LoadRun {
    let warmup_origin = Instant::now();
    let mut warmup = Vec::new();
    for index in 0..u64::from(profile.warmup_requests) {
        if cancel.load(Ordering::Relaxed) {
            return LoadRun { warmup, timed: Vec::new(), interrupted: true, thread_error: None };
        }
        warmup.push(sender.send(&make(index), warmup_origin, cancel));
    }
    let first_index = u64::from(profile.warmup_requests);
    let (mut timed, thread_error) = match profile.shape {
        LoadShape::Closed { concurrency } => closed_loop(sender, profile, concurrency, first_index, make, cancel),
        LoadShape::Open { rate, burstiness } => open_loop(sender, profile, rate, burstiness, first_index, make, cancel),
    };
    timed.sort_by_key(|t| t.index);
    LoadRun { warmup, timed, interrupted: cancel.load(Ordering::Relaxed), thread_error }
}

/// Whether another request may be issued: `issued` so far, `origin` the run's start.
fn may_issue(stop: LoadStop, issued: u64, origin: Instant) -> bool {
    match stop {
        LoadStop::Requests(n) => issued < n,
        LoadStop::DurationS(s) => origin.elapsed().as_secs_f64() < s,
    }
}

/// `concurrency` users, each sending its next request as soon as its previous one ended.
fn closed_loop(
    sender: &dyn RequestSender,
    profile: &LoadProfile,
    concurrency: u32,
    first_index: u64,
    make: &(dyn Fn(u64) -> LoadRequest + Sync),
    cancel: &AtomicBool,
) -> (Vec<RequestTimeline>, Option<String>) {
    let issued = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    let mut thread_error = None;
    let origin = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            let user = || {
                let mut mine = Vec::new();
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    // Claim a slot first so that `--requests N` issues exactly N across all users.
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if !may_issue(profile.stop, n, origin) {
                        break;
                    }
                    mine.push(sender.send(&make(first_index + n), origin, cancel));
                }
                results.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            };
            if let Err(e) = std::thread::Builder::new().stack_size(THREAD_STACK).spawn_scoped(scope, user) {
                thread_error = Some(format!("could not start a request thread ({e}); the run used fewer users"));
                break;
            }
        }
    });
    (results.into_inner().unwrap_or_else(|p| p.into_inner()), thread_error)
}

/// Arrivals at `rate` per second (gamma gaps of shape `burstiness`; `None`: all at once), whatever the
/// server's state. A pool of request threads grows on demand up to `max_concurrency`; an arrival finding
/// every thread busy waits, and its lag is kept (`sent_ns − scheduled_ns`).
fn open_loop(
    sender: &dyn RequestSender,
    profile: &LoadProfile,
    rate: Option<f64>,
    burstiness: f64,
    first_index: u64,
    make: &(dyn Fn(u64) -> LoadRequest + Sync),
    cancel: &AtomicBool,
) -> (Vec<RequestTimeline>, Option<String>) {
    let results = Mutex::new(Vec::new());
    // Requests handed to the pool and not finished: queued or running. A thread is added while it exceeds the
    // threads there are, so every request is running unless `max_concurrency` threads are busy.
    let in_flight = AtomicUsize::new(0);
    let (queue, jobs) = mpsc::channel::<(u64, u64)>();
    let jobs = Arc::new(Mutex::new(jobs));
    let mut rng = Rng::new(profile.seed);
    let mut thread_error = None;
    let origin = Instant::now();
    std::thread::scope(|scope| {
        let mut threads = 0u32;
        let mut next_arrival_s = 0.0f64;
        let mut issued = 0u64;
        loop {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            let scheduled = Duration::from_secs_f64(next_arrival_s);
            let within = match profile.stop {
                LoadStop::Requests(n) => issued < n,
                LoadStop::DurationS(s) => next_arrival_s < s,
            };
            if !within {
                break;
            }
            // Absolute arrival times: a late wake-up delays one send, never the schedule after it.
            let now = origin.elapsed();
            if scheduled > now {
                sleep_cancellable(scheduled - now, cancel);
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
            }
            let wanted = in_flight.fetch_add(1, Ordering::AcqRel) + 1;
            if wanted > threads as usize && threads < profile.max_concurrency {
                let worker = {
                    let jobs = Arc::clone(&jobs);
                    let (results, in_flight) = (&results, &in_flight);
                    move || loop {
                        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((index, scheduled_ns)) = job else { break };
                        let mut timeline = sender.send(&make(index), origin, cancel);
                        timeline.scheduled_ns = Some(scheduled_ns);
                        results.lock().unwrap_or_else(|p| p.into_inner()).push(timeline);
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                };
                match std::thread::Builder::new().stack_size(THREAD_STACK).spawn_scoped(scope, worker) {
                    Ok(_) => threads += 1,
                    Err(e) if threads == 0 => {
                        thread_error = Some(format!("could not start a request thread: {e}"));
                        break;
                    }
                    Err(e) => {
                        thread_error.get_or_insert(format!(
                            "could not start more than {threads} request threads ({e}); later arrivals waited"
                        ));
                    }
                }
            }
            let scheduled_ns = u64::try_from(scheduled.as_nanos()).unwrap_or(u64::MAX);
            if queue.send((first_index + issued, scheduled_ns)).is_err() {
                break;
            }
            issued += 1;
            if let Some(rate) = rate {
                next_arrival_s += rng.arrival_gap_s(rate, burstiness);
            }
        }
        // Closing the queue lets every idle thread end; busy ones end after their request.
        drop(queue);
    });
    (results.into_inner().unwrap_or_else(|p| p.into_inner()), thread_error)
}

/// Sleeps `duration`, waking at least every 100 ms to notice a cancel.
fn sleep_cancellable(duration: Duration, cancel: &AtomicBool) {
    let end = Instant::now() + duration;
    loop {
        let now = Instant::now();
        if now >= end || cancel.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use velollm_core::TokenCountSource;

    /// A labelled stand-in for a server: answers after a fixed delay with a fixed number of chunks, and tracks
    /// how many requests were in flight at once (what the generator promises to control).
    struct Delayed {
        delay: Duration,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl Delayed {
        fn new(ms: u64) -> Delayed {
            Delayed {
                delay: Duration::from_millis(ms),
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
            }
        }
    }

    impl RequestSender for Delayed {
        fn send(&self, request: &LoadRequest, origin: Instant, _cancel: &AtomicBool) -> RequestTimeline {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let sent_ns = origin.elapsed().as_nanos() as u64;
            std::thread::sleep(self.delay);
            let end_ns = origin.elapsed().as_nanos() as u64;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            RequestTimeline {
                index: request.index,
                scheduled_ns: None,
                sent_ns,
                response_ns: Some(sent_ns),
                chunk_times_ns: vec![end_ns - 1, end_ns],
                end_ns,
                http_status: Some(200),
                prompt_tokens: Some(3),
                output_tokens: Some(2),
                output_tokens_source: Some(TokenCountSource::Usage),
                error: None,
            }
        }
    }

    fn request(index: u64) -> LoadRequest {
        LoadRequest { index, prompt: "p".into(), max_tokens: 2, seed: 0, stop_at_eos: false }
    }

    fn profile(shape: LoadShape, stop: LoadStop, warmup_requests: u32, max_concurrency: u32) -> LoadProfile {
        LoadProfile { shape, stop, warmup_requests, max_concurrency, seed: 1 }
    }

    #[test]
    fn closed_loop_issues_exactly_n_with_c_in_flight() {
        let sender = Delayed::new(20);
        let p = profile(LoadShape::Closed { concurrency: 4 }, LoadStop::Requests(12), 2, 1);
        let run = run_profile(&sender, &p, &request, &AtomicBool::new(false));
        assert_eq!(run.warmup.iter().map(|t| t.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(run.timed.iter().map(|t| t.index).collect::<Vec<_>>(), (2..14).collect::<Vec<_>>());
        assert_eq!(sender.most_in_flight.load(Ordering::SeqCst), 4, "four users, never more");
        assert!(!run.interrupted);
    }

    #[test]
    fn open_loop_inf_sends_everything_at_once_up_to_the_cap() {
        let sender = Delayed::new(50);
        let p = profile(LoadShape::Open { rate: None, burstiness: 1.0 }, LoadStop::Requests(10), 0, 6);
        let run = run_profile(&sender, &p, &request, &AtomicBool::new(false));
        assert_eq!(run.timed.len(), 10);
        assert_eq!(sender.most_in_flight.load(Ordering::SeqCst), 6, "max-concurrency caps the requests in flight");
        assert!(run.timed.iter().all(|t| t.scheduled_ns == Some(0)));
        let indices: BTreeSet<u64> = run.timed.iter().map(|t| t.index).collect();
        assert_eq!(indices.len(), 10);
    }

    #[test]
    fn open_loop_follows_its_schedule() {
        // 20 requests/s for 10 requests: the last arrival is scheduled near 0.45 s (9 gaps of 50 ms on average),
        // and each request is sent at (not before) its scheduled time.
        let sender = Delayed::new(1);
        let p = profile(LoadShape::Open { rate: Some(20.0), burstiness: 1.0 }, LoadStop::Requests(10), 0, 8);
        let run = run_profile(&sender, &p, &request, &AtomicBool::new(false));
        assert_eq!(run.timed.len(), 10);
        let mut previous = 0;
        for t in &run.timed {
            let scheduled = t.scheduled_ns.unwrap();
            assert!(scheduled >= previous, "arrivals are in order");
            assert!(t.sent_ns >= scheduled, "never sent before its arrival");
            previous = scheduled;
        }
        assert!(previous > 0, "a finite rate spreads the arrivals");
    }

    #[test]
    fn duration_stops_issuing_and_cancel_ends_the_run() {
        let sender = Delayed::new(10);
        let p = profile(LoadShape::Closed { concurrency: 2 }, LoadStop::DurationS(0.2), 0, 1);
        let run = run_profile(&sender, &p, &request, &AtomicBool::new(false));
        // Each request takes at least 10 ms, so two users issue at most 2 · (200 / 10 + 1) in 0.2 s.
        assert!(!run.timed.is_empty() && run.timed.len() <= 42, "{} requests", run.timed.len());

        let cancel = AtomicBool::new(true);
        let run = run_profile(&sender, &p, &request, &cancel);
        assert!(run.interrupted && run.timed.is_empty());
    }
}
