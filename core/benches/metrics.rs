//! What counting for operators costs (issue 22): the same requests handled
//! by two `serve` endpoints, one with `EndpointConfig::metrics` and one
//! without, in batches that alternate (order flipped every round) so that
//! the drift of a shared machine hits both alike; the distribution of the
//! per-round ratios (with ÷ without) is printed.
//!
//! Each request is a new REGISTER without credentials (401 through a server
//! transaction: parse, transaction, digest challenge, registrar counters)
//! or an OPTIONS to the server (200), the virtual clock moving 500 µs a
//! request and the timers run, so that transactions end (Timer J) and the
//! endpoints stay in their steady state.
//!
//! `cargo bench -p sipline --bench metrics [-- ROUNDS BATCH]` (defaults 200
//! and 200).

// A benchmark measures wall time (the sans-IO rule is for core/src), and
// its statistics are floating point.
#![allow(
    clippy::disallowed_methods,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use sipline::auth::Users;
use sipline::endpoint::{Endpoint, EndpointConfig, ServerConfig};
use sipline::metrics::Metrics;
use sipline::transport::Transport;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";
const STEP: Duration = Duration::from_micros(500);

struct Bench {
    ep: Endpoint,
    now: Instant,
    n: u64,
    local: SocketAddr,
    remote: SocketAddr,
}

impl Bench {
    fn new(metrics: Option<Arc<Metrics>>) -> Bench {
        let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
        let mut config = ServerConfig::new(DOMAIN, users);
        config.flood = None;
        let mut c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(config);
        c.seed = 7;
        c.metrics = metrics;
        let mut ep = Endpoint::new(c).expect("endpoint");
        let local: SocketAddr = "192.0.2.10:5060".parse().expect("address");
        ep.add_listener(Transport::Udp, local);
        Bench { ep, now: Instant::now(), n: 0, local, remote: "192.0.2.20:5060".parse().expect("address") }
    }

    fn request(&self) -> Vec<u8> {
        let (n, from) = (self.n, self.remote);
        let method = if n % 2 == 0 { "REGISTER" } else { "OPTIONS" };
        let ruri = if n % 2 == 0 { format!("sip:{DOMAIN}") } else { format!("sip:{}", self.local) };
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{n};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:bob@{DOMAIN}>;tag=t{n}\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: c{n}\r\nCSeq: 1 {method}\r\n\
             Contact: <sip:bob@{from}>\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// `batch` requests with their timers; seconds per request.
    fn batch(&mut self, batch: u64) -> f64 {
        let requests: Vec<Vec<u8>> = (0..batch)
            .map(|_| {
                self.n += 1;
                self.request()
            })
            .collect();
        let t = Instant::now();
        for r in &requests {
            self.ep.handle_datagram_received(self.now, self.now, self.local, self.remote, black_box(r));
            while let Some(o) = self.ep.poll_output() {
                black_box(o);
            }
            self.now += STEP;
            if self.ep.poll_timeout().is_some_and(|at| at <= self.now) {
                self.ep.handle_timeout(self.now);
                while let Some(o) = self.ep.poll_output() {
                    black_box(o);
                }
            }
        }
        t.elapsed().as_secs_f64() / batch as f64
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(200) as usize;
    let batch = args.get(1).copied().unwrap_or(200);
    let metrics = Arc::new(Metrics::new(1));
    let mut benches = [Bench::new(None), Bench::new(Some(Arc::clone(&metrics)))];
    // Into the steady state: 32 s of Timer J.
    for b in &mut benches {
        for _ in 0..(70_000 / batch).max(1) {
            b.batch(batch);
        }
    }
    let (mut ratio, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut t = [0.0; 2];
        for k in order {
            t[k] = benches[k].batch(batch);
        }
        ratio.push(t[1] / t[0]);
        off.push(t[0]);
        on.push(t[1]);
    }
    for v in [&mut ratio, &mut off, &mut on] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "with metrics ÷ without, {rounds} rounds of {batch} requests each way, interleaved: median {:.3} \
         (quartiles {:.3}–{:.3}); without {:.2} µs, with {:.2} µs a request (medians)",
        percentile(&ratio, 0.5),
        percentile(&ratio, 0.25),
        percentile(&ratio, 0.75),
        percentile(&off, 0.5) * 1e6,
        percentile(&on, 0.5) * 1e6
    );
    let s = metrics.snapshot();
    println!(
        "(counted: {} requests, {} registrations challenged)",
        s.total("sipline_requests_received_total"),
        s.value("sipline_registrations_total", &[("result", "challenged")]).unwrap_or(0.0)
    );
}
