//! A TCP relay that delays every byte by a fixed one-way latency in each direction, and counts the round
//! trips that cross it: the stand-in for a network between `velollm benchmark --rpc` and a `velollm
//! rpc-server` on another host, where this machine's kernel has no netem.
//!
//! `delay-relay --listen 127.0.0.1:P --to 127.0.0.1:Q --delay-us D [--max-seconds S] [--stats FILE]`
//!
//! Loopback only (both addresses must be 127.0.0.0/8), and it ends by itself after `--max-seconds` (default
//! 600). Every chunk read from one side is written to the other `D` µs after it arrived, in order, so the
//! relay adds latency without limiting throughput. A round trip is counted each time data flows from the
//! server back to the client after the client sent something: the number of times the client had to wait for
//! an answer. The counts are written as JSON to `--stats` after every change (at most every 100 ms) and at
//! the end.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    /// Which way the last chunk went: 0 client→server, 1 server→client.
    last_direction: Option<usize>,
    /// Bursts of data per direction; server→client bursts are the round trips.
    bursts: [u64; 2],
    bytes: [u64; 2],
    /// Bursts forwarded per direction, and the sum of how long the first chunk of each was held in the relay
    /// (arrival to the moment its write began): the one-way latency actually added to each message, which a
    /// loaded machine stretches beyond the one asked for (a late wake-up). Later chunks of a burst are left
    /// out: they also wait behind the chunks before them (throughput, not latency).
    chunks: [u64; 2],
    held_ns: [u128; 2],
    connections: u64,
}

struct Options {
    listen: SocketAddr,
    upstream: SocketAddr,
    delay: Duration,
    max_run: Duration,
    stats: Option<std::path::PathBuf>,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream, mut delay_us, mut max_seconds, mut stats) = (None, None, 0u64, 600u64, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--to" => upstream = Some(value()?),
            "--delay-us" => delay_us = value()?.parse().map_err(|_| "invalid --delay-us".to_string())?,
            "--max-seconds" => max_seconds = value()?.parse().map_err(|_| "invalid --max-seconds".to_string())?,
            "--stats" => stats = Some(std::path::PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let loopback = |text: Option<String>, flag: &str| -> Result<SocketAddr, String> {
        let address: SocketAddr =
            text.ok_or_else(|| format!("{flag} is required"))?.parse().map_err(|_| format!("invalid {flag}"))?;
        if !address.ip().is_loopback() {
            return Err(format!("{flag} {address}: the relay only serves loopback addresses"));
        }
        Ok(address)
    };
    if delay_us > 1_000_000 || max_seconds == 0 || max_seconds > 3600 {
        return Err("--delay-us is at most 1000000 and --max-seconds 1–3600".into());
    }
    Ok(Options {
        listen: loopback(listen, "--listen")?,
        upstream: loopback(upstream, "--to")?,
        delay: Duration::from_micros(delay_us),
        max_run: Duration::from_secs(max_seconds),
        stats,
    })
}

fn write_stats(path: &Option<std::path::PathBuf>, counts: &Counts) {
    let Some(path) = path else { return };
    let mean_held_us = |d: usize| {
        if counts.chunks[d] == 0 {
            0.0
        } else {
            counts.held_ns[d] as f64 / counts.chunks[d] as f64 / 1e3
        }
    };
    let text = format!(
        "{{\"connections\": {}, \"client_to_server_bursts\": {}, \"round_trips\": {}, \"client_to_server_bytes\": {}, \"server_to_client_bytes\": {}, \"mean_one_way_delay_us\": [{:.1}, {:.1}]}}\n",
        counts.connections,
        counts.bursts[0],
        counts.bursts[1],
        counts.bytes[0],
        counts.bytes[1],
        mean_held_us(0),
        mean_held_us(1)
    );
    let partial = path.with_extension("partial");
    if std::fs::write(&partial, text).is_ok() {
        let _ = std::fs::rename(&partial, path);
    }
}

/// Sleeps until `deadline`: the last stretch spun, since a sleep alone overshoots by tens of microseconds.
fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(150));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Moves bytes from `from` to `to`, each chunk `delay` after it arrived, counting bursts for `direction`.
fn pump(mut from: TcpStream, mut to: TcpStream, direction: usize, delay: Duration, counts: Arc<Mutex<Counts>>) {
    let (queue, delayed) = mpsc::channel::<(Instant, bool, Vec<u8>)>();
    let writer_counts = Arc::clone(&counts);
    let writer = std::thread::spawn(move || {
        for (arrived, burst_start, chunk) in delayed {
            wait_until(arrived + delay);
            let held = arrived.elapsed().as_nanos();
            if to.write_all(&chunk).is_err() {
                break;
            }
            if burst_start {
                if let Ok(mut counts) = writer_counts.lock() {
                    counts.chunks[direction] += 1;
                    counts.held_ns[direction] += held;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let arrived = Instant::now();
        let mut burst_start = false;
        if let Ok(mut counts) = counts.lock() {
            if counts.last_direction != Some(direction) {
                counts.bursts[direction] += 1;
                counts.last_direction = Some(direction);
                burst_start = true;
            }
            counts.bytes[direction] += n as u64;
        }
        if queue.send((arrived, burst_start, buffer[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(queue);
    let _ = writer.join();
}

fn main() {
    let options = match parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(options.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", options.listen);
            std::process::exit(2);
        }
    };
    let counts = Arc::new(Mutex::new(Counts::default()));
    let started = Instant::now();
    let (stats_path, stats_counts) = (options.stats.clone(), Arc::clone(&counts));
    let max_run = options.max_run;
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(counts) = stats_counts.lock() {
            write_stats(&stats_path, &counts);
        }
        if started.elapsed() >= max_run {
            eprintln!("delay-relay: --max-seconds reached, stopping");
            std::process::exit(0);
        }
    });
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect_timeout(&options.upstream, Duration::from_secs(5)) else {
            eprintln!("delay-relay: cannot reach {}", options.upstream);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        if let Ok(mut counts) = counts.lock() {
            counts.connections += 1;
        }
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else { continue };
        let (delay, up, down) = (options.delay, Arc::clone(&counts), Arc::clone(&counts));
        std::thread::spawn(move || pump(client_reader, server, 0, delay, up));
        std::thread::spawn(move || pump(server_reader, client, 1, delay, down));
    }
}
