//! The sipline/httparse throughput ratio, measured interleaved.
//!
//! On a shared (virtual) machine, criterion's one-benchmark-after-another
//! figures drift by tens of percent between benchmarks, which swamps the
//! ratio between two of them. This bench alternates short batches of the
//! two parsers (order flipped every round) and reports the distribution of
//! per-round ratios of bytes/s, so both sides see the same noise.
//!
//! Run: `cargo bench -p sipline --bench ratio` (optionally
//! `-- ROUNDS BATCH`, defaults 400 and 2000). For instruction counts, run the
//! built bench binary under callgrind as `ratio count sipline N` or
//! `ratio count httparse N`: it then only parses N times.

// A benchmark measures wall time (the sans-IO rule is for core/src), and
// its statistics are floating point.
#![allow(
    clippy::disallowed_methods,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use sipline::message::Message;
use std::hint::black_box;
use std::time::{Duration, Instant};

const INVITE: &[u8] = include_bytes!("data/invite_sdp.sip");
const HTTP_REQUEST: &[u8] = include_bytes!("data/http_request.txt");

fn sipline_batch(n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let m = Message::parse(black_box(INVITE)).expect("sample parses");
        black_box(&m);
    }
    t.elapsed()
}

fn httparse_batch(n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let status = req.parse(black_box(HTTP_REQUEST)).expect("request parses");
        black_box(&req);
        black_box(status);
    }
    t.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let [_, count, which, n, ..] = argv.as_slice() {
        if count == "count" {
            let n: usize = n.parse().expect("count N");
            let d = if which == "sipline" { sipline_batch(n) } else { httparse_batch(n) };
            println!("{which}: {n} parses in {d:?}");
            return;
        }
    }
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    // Warm up both.
    sipline_batch(batch);
    httparse_batch(batch);
    let (mut ratios, mut best_sip, mut best_http) = (Vec::with_capacity(rounds), f64::MAX, f64::MAX);
    for round in 0..rounds {
        let (s, h) = if round % 2 == 0 {
            let s = sipline_batch(batch);
            (s, httparse_batch(batch))
        } else {
            let h = httparse_batch(batch);
            (sipline_batch(batch), h)
        };
        let ns = |d: Duration| d.as_secs_f64() * 1e9 / batch as f64;
        let (s, h) = (ns(s), ns(h));
        best_sip = best_sip.min(s);
        best_http = best_http.min(h);
        // bytes/s of sipline on the INVITE over bytes/s of httparse on the request.
        ratios.push((INVITE.len() as f64 / s) / (HTTP_REQUEST.len() as f64 / h));
    }
    ratios.sort_by(f64::total_cmp);
    let gbs = |len: usize, ns: f64| len as f64 / ns;
    println!("rounds {rounds} x batch {batch}, interleaved");
    println!(
        "best: sipline INVITE {best_sip:.0} ns ({:.2} GB/s), httparse request {best_http:.0} ns ({:.2} GB/s), ratio of bests {:.3}",
        gbs(INVITE.len(), best_sip),
        gbs(HTTP_REQUEST.len(), best_http),
        gbs(INVITE.len(), best_sip) / gbs(HTTP_REQUEST.len(), best_http)
    );
    println!(
        "per-round ratio (sipline bytes/s / httparse bytes/s): p10 {:.3}  p25 {:.3}  median {:.3}  p75 {:.3}  p90 {:.3}",
        percentile(&ratios, 0.10),
        percentile(&ratios, 0.25),
        percentile(&ratios, 0.50),
        percentile(&ratios, 0.75),
        percentile(&ratios, 0.90)
    );
}
