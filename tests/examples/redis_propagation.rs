//! Issue 20: how long a binding committed at one instance takes to be
//! readable at another through Redis (`sipline_tokio::redis_location`),
//! and what mirroring costs the instance that commits.
//!
//! Starts a `redis-server` of its own (loopback, temporary directory), two
//! mirrored stores `a` and `b` as two `serve` instances hold them, and
//! inserts `--count` bindings at `a` one after another (each a new AOR,
//! `--gap` ms apart); for each, the time until `b` reads it (polled every
//! 50 µs) is recorded. Prints p50/p90/p99/max, and the time `a`'s commits
//! took with the mirror against a store without one (the core never waits
//! on Redis: the commit only queues the change). `--burst`: commits them
//! all at once (a busy server), then waits until `b` has them all.
//!
//!     cargo run --release -p sipline-tests --example redis_propagation -- --count 2000
//!     cargo run --release -p sipline-tests --example redis_propagation -- --count 20000 --burst
// A benchmark program: it reads the clock.
#![allow(
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use sipline::registrar::{Binding, Location, SharedLocation};
use sipline_tests::redis::Redis;
use sipline_tokio::redis_location::mirror;
use std::time::{Duration, Instant};

fn binding(aor: &str, now: Instant) -> Binding {
    Binding {
        aor: aor.into(),
        contact: format!("sip:{}@127.0.0.1:5070", &aor[4..aor.find('@').unwrap_or(5)]),
        q: None,
        expires: now + Duration::from_secs(3600),
        registered_at: now,
        call_id: format!("c-{aor}"),
        cseq: 1,
        instance: None,
        reg_id: None,
        temp_gruus: Vec::new(),
        source: None,
        path: vec!["sip:127.0.0.1:5060;lr".into()],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn main() {
    let mut count = 1000usize;
    let mut gap = Duration::from_millis(1);
    let mut args = std::env::args().skip(1);
    let mut burst = false;
    while let Some(a) = args.next() {
        if a == "--burst" {
            burst = true;
            continue;
        }
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--count" => count = v.parse().expect("--count N"),
            "--gap" => gap = Duration::from_millis(v.parse().expect("--gap MS")),
            _ => panic!("options: --count N --gap MS"),
        }
    }
    let redis = Redis::start();
    let ma = mirror(&redis.url(), "a", "bench", (1, 2)).expect("mirror a");
    let mb = mirror(&redis.url(), "b", "bench", (1, 2)).expect("mirror b");
    let (mut a, b, ma, mb) = (ma.location, mb.location, ma.handle, mb.handle);
    assert!(ma.wait_synced(Duration::from_secs(10)) && mb.wait_synced(Duration::from_secs(10)));
    let mut plain = SharedLocation::new();
    if burst {
        let t0 = Instant::now();
        for k in 0..count {
            let t = Instant::now();
            plain.insert(t, binding(&format!("sip:p{k}@example.com"), t)).expect("insert");
        }
        let plain_took = t0.elapsed();
        let t0 = Instant::now();
        for k in 0..count {
            let t = Instant::now();
            a.insert(t, binding(&format!("sip:u{k}@example.com"), t)).expect("insert");
        }
        let mirrored_took = t0.elapsed();
        let last = format!("sip:u{}@example.com", count - 1);
        while b.bindings(&last, Instant::now()).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(60), "never reached b");
            std::thread::sleep(Duration::from_micros(200));
        }
        let all = t0.elapsed();
        println!("{count} bindings committed at a at once, read at b:");
        println!(
            "  the last one readable at b {all:?} after the first commit ({:.0} bindings/s)",
            count as f64 / all.as_secs_f64()
        );
        println!(
            "  commit at a: {:.2} µs mirrored, {:.2} µs without a mirror ({:.2}×)",
            mirrored_took.as_secs_f64() * 1e6 / count as f64,
            plain_took.as_secs_f64() * 1e6 / count as f64,
            mirrored_took.as_secs_f64() / plain_took.as_secs_f64()
        );
        return;
    }

    let mut seen = Vec::with_capacity(count);
    let (mut commit_mirrored, mut commit_plain) = (Duration::ZERO, Duration::ZERO);
    for k in 0..count {
        let aor = format!("sip:u{k}@example.com");
        let t = Instant::now();
        plain.insert(t, binding(&aor, t)).expect("insert");
        commit_plain += t.elapsed();
        let t = Instant::now();
        a.insert(t, binding(&aor, t)).expect("insert");
        commit_mirrored += t.elapsed();
        let limit = t + Duration::from_secs(5);
        loop {
            if !b.bindings(&aor, Instant::now()).is_empty() {
                seen.push(t.elapsed());
                break;
            }
            assert!(Instant::now() < limit, "{aor} never reached b");
            std::thread::sleep(Duration::from_micros(50));
        }
        std::thread::sleep(gap);
    }
    seen.sort();
    let mean = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    println!("{count} bindings committed at a, read at b (Redis on loopback, redis-server {}):", redis.url());
    println!(
        "  a → b: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&seen, 0.5),
        percentile(&seen, 0.9),
        percentile(&seen, 0.99),
        seen[seen.len() - 1]
    );
    println!(
        "  commit at a: {:.2} µs mirrored, {:.2} µs without a mirror ({:.2}×)",
        mean(commit_mirrored),
        mean(commit_plain),
        commit_mirrored.as_secs_f64() / commit_plain.as_secs_f64()
    );
}
