//! What refusing a request for overload costs (issue 19): the stateless
//! refusal from a glance at the datagram (`OverloadConfig::stateless`, the
//! default) against the full parse and a 503 through a server
//! transaction, on the same endpoint set-up and the same requests.
//!
//! Groups (each benchmark times one message handled by a `serve` endpoint,
//! stamped as having waited 400 ms, past every threshold, through
//! `Endpoint::handle_datagram_received`, outputs drained):
//!
//! - `invite_503`: a new INVITE from a phone (one Via with `rport`, SDP
//!   body, 1 KB) refused; its timers (the transaction's, when there is one)
//!   are run and timed with it, the virtual clock moving 500 µs a request.
//! - `ack_of_503`: the ACK of that 503 (§17.1.1.3), absorbed.
//! - `register_503`: a new REGISTER (no credentials) refused, timers
//!   included (a non-INVITE transaction lingers 32 s over UDP, Timer J).
//! - `glance_then_pass`: an in-dialog BYE (To tag: never refused), the
//!   glance's cost on a request it lets go the full way (here to a 481).
//! - `parse`: `Message::parse` of the INVITE alone, for scale.
//!
//! `stateful` and `stateless` are the two settings of
//! `OverloadConfig::stateless`. Run with
//! `cargo bench -p sipline --bench overload`; see BENCHMARKS.md
//! ("Overload").
//!
//! On a shared machine criterion's one-benchmark-after-another figures
//! drift by tens of percent, more than the ratio between two of them. So
//! `cargo bench -p sipline --bench overload -- ratios [ROUNDS BATCH]`
//! (defaults 300 and 200) measures the stateless ÷ stateful ratio of each
//! group interleaved instead: batches of each setting alternate (order
//! flipped every round) on two endpoints kept in their steady state, and
//! the distribution of per-round ratios is printed.
//! `tests/tests/overload_sim.rs` takes its cost model's ratios from there.

// A benchmark measures wall time (the sans-IO rule is for core/src), and
// its statistics are floating point.
#![allow(
    clippy::disallowed_methods,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use criterion::{criterion_group, BenchmarkId, Criterion};
use sipline::auth::Users;
use sipline::endpoint::{Endpoint, EndpointConfig, OverloadConfig, ServerConfig};
use sipline::message::Message;
use sipline::transport::Transport;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";
/// How long every request waited before it was handled.
const WAITED: Duration = Duration::from_millis(400);
/// Virtual time between two requests.
const STEP: Duration = Duration::from_micros(500);

fn server_addr() -> SocketAddr {
    "192.0.2.10:5060".parse().expect("address")
}

fn phone_addr() -> SocketAddr {
    "198.51.100.7:5060".parse().expect("address")
}

/// A registrar and proxy for `DOMAIN` (guests allowed, no flood limit),
/// overload control on, refusing statelessly or not.
fn server(stateless: bool) -> Endpoint {
    let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut config = ServerConfig::new(DOMAIN, users);
    config.allow_guests = true;
    config.flood = None;
    let mut overload = OverloadConfig::default();
    overload.stateless = stateless;
    config.overload = Some(overload);
    let mut c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(config);
    c.seed = 7;
    let mut ep = Endpoint::new(c).expect("endpoint");
    ep.add_listener(Transport::Udp, server_addr());
    ep
}

const SDP: &str = "v=0\r\no=carol 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
t=0 0\r\nm=audio 49170 RTP/AVP 0 8 97 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

/// The `n`th INVITE (its own branch, Call-ID and From tag).
fn invite(n: u64) -> Vec<u8> {
    let from = phone_addr();
    format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bK-inv{n}\r\n\
         Max-Forwards: 70\r\nTo: <sip:bob@{DOMAIN}>\r\nFrom: \"Carol\" <sip:carol@example.net>;tag=c{n}\r\n\
         Call-ID: call-{n}@198.51.100.7\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{from};transport=udp>\r\n\
         Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n\
         Supported: replaces, timer\r\nUser-Agent: Example-Softphone/4.2.1\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

/// The ACK of the 503 to the `n`th INVITE (same branch, §17.1.1.3).
fn ack(n: u64) -> Vec<u8> {
    let from = phone_addr();
    format!(
        "ACK sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bK-inv{n}\r\n\
         Max-Forwards: 70\r\nTo: <sip:bob@{DOMAIN}>;tag=srv\r\nFrom: \"Carol\" <sip:carol@example.net>;tag=c{n}\r\n\
         Call-ID: call-{n}@198.51.100.7\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The `n`th new REGISTER (no credentials).
fn register(n: u64) -> Vec<u8> {
    let from = phone_addr();
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bK-reg{n}\r\n\
         Max-Forwards: 70\r\nTo: <sip:alice@{DOMAIN}>\r\nFrom: <sip:alice@{DOMAIN}>;tag=r{n}\r\n\
         Call-ID: reg-{n}@198.51.100.7\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{from};transport=udp>;expires=3600\r\n\
         Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE\r\n\
         User-Agent: Example-Softphone/4.2.1\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The `n`th BYE of a dialog the server does not know (To tag).
fn bye(n: u64) -> Vec<u8> {
    let from = phone_addr();
    format!(
        "BYE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bK-bye{n}\r\n\
         Max-Forwards: 70\r\nTo: <sip:bob@{DOMAIN}>;tag=b{n}\r\nFrom: \"Carol\" <sip:carol@example.net>;tag=c{n}\r\n\
         Call-ID: call-{n}@198.51.100.7\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An endpoint under a steady stream of refusals, on a virtual clock.
struct Bench {
    ep: Endpoint,
    now: Instant,
    n: u64,
    /// The server's address and the phone's.
    local: SocketAddr,
    remote: SocketAddr,
}

impl Bench {
    fn new(stateless: bool) -> Bench {
        Bench { ep: server(stateless), now: Instant::now(), n: 0, local: server_addr(), remote: phone_addr() }
    }

    /// Hands `bytes` in, stamped `WAITED` ago, and drains the outputs.
    fn deliver(&mut self, bytes: &[u8]) {
        let received = self.now.checked_sub(WAITED).expect("clock");
        self.ep.handle_datagram_received(self.now, received, self.local, self.remote, black_box(bytes));
        while let Some(o) = self.ep.poll_output() {
            black_box(o);
        }
    }

    /// Moves the clock one step and runs the timers due.
    fn tick(&mut self) {
        self.now += STEP;
        if self.ep.poll_timeout().is_some_and(|t| t <= self.now) {
            self.ep.handle_timeout(self.now);
            while let Some(o) = self.ep.poll_output() {
                black_box(o);
            }
        }
    }

    /// `iters` rounds of one INVITE refused and its ACK; the time of the
    /// INVITEs with the timers, and of the ACKs.
    fn invites(&mut self, iters: u64) -> (Duration, Duration) {
        let (mut refusing, mut acking) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iters {
            self.n += 1;
            let (i, a) = (invite(self.n), ack(self.n));
            let t = Instant::now();
            self.deliver(&i);
            self.tick();
            refusing += t.elapsed();
            let t = Instant::now();
            self.deliver(&a);
            acking += t.elapsed();
        }
        (refusing, acking)
    }

    /// `iters` new REGISTERs refused, with the timers.
    fn registers(&mut self, iters: u64) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            self.n += 1;
            let r = register(self.n);
            let t = Instant::now();
            self.deliver(&r);
            self.tick();
            spent += t.elapsed();
        }
        spent
    }

    /// `iters` BYEs, with the timers.
    fn byes(&mut self, iters: u64) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            self.n += 1;
            let b = bye(self.n);
            let t = Instant::now();
            self.deliver(&b);
            self.tick();
            spent += t.elapsed();
        }
        spent
    }
}

const SETTINGS: [(&str, bool); 2] = [("stateful", false), ("stateless", true)];

/// One group's time per message for `batch` messages: the INVITEs
/// (with timers), their ACKs, REGISTERs, or BYEs.
fn batch_time(bench: &mut Bench, group: usize, batch: u64) -> f64 {
    let d = match group {
        0 => bench.invites(batch).0,
        1 => bench.invites(batch).1,
        2 => bench.registers(batch),
        _ => bench.byes(batch),
    };
    d.as_secs_f64() / batch as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The interleaved ratios (module docs).
fn ratios(rounds: usize, batch: u64) {
    let groups = ["invite_503", "ack_of_503", "register_503", "glance_then_pass"];
    println!("stateless ÷ stateful, {rounds} rounds of {batch} messages each way, interleaved");
    for (g, name) in groups.into_iter().enumerate() {
        let mut benches = [Bench::new(false), Bench::new(true)];
        // Into the steady state: the transactions of 5 s (INVITE, Timer I)
        // and 32 s (REGISTER, Timer J) of refusals.
        for b in &mut benches {
            for _ in 0..(80_000 / batch).max(1) {
                batch_time(b, g, batch);
            }
        }
        let (mut r, mut stateful, mut stateless) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut t = [0.0; 2];
            for k in order {
                t[k] = batch_time(&mut benches[k], g, batch);
            }
            r.push(t[1] / t[0]);
            stateful.push(t[0]);
            stateless.push(t[1]);
        }
        for v in [&mut r, &mut stateful, &mut stateless] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "{name:<18} ratio median {:.3} (quartiles {:.3}–{:.3}); stateful median {:.2} µs, stateless {:.2} µs",
            percentile(&r, 0.5),
            percentile(&r, 0.25),
            percentile(&r, 0.75),
            percentile(&stateful, 0.5) * 1e6,
            percentile(&stateless, 0.5) * 1e6
        );
    }
}

fn refusals(c: &mut Criterion) {
    let mut g = c.benchmark_group("invite_503");
    for (name, stateless) in SETTINGS {
        let mut bench = Bench::new(stateless);
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter_custom(|iters| bench.invites(iters).0));
    }
    g.finish();
    let mut g = c.benchmark_group("ack_of_503");
    for (name, stateless) in SETTINGS {
        let mut bench = Bench::new(stateless);
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter_custom(|iters| bench.invites(iters).1));
    }
    g.finish();
    let mut g = c.benchmark_group("register_503");
    for (name, stateless) in SETTINGS {
        let mut bench = Bench::new(stateless);
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter_custom(|iters| bench.registers(iters)));
    }
    g.finish();
    let mut g = c.benchmark_group("glance_then_pass");
    for (name, stateless) in SETTINGS {
        let mut bench = Bench::new(stateless);
        g.bench_function(BenchmarkId::from_parameter(name), |b| b.iter_custom(|iters| bench.byes(iters)));
    }
    g.finish();
    let sample = invite(1);
    c.bench_function("parse/invite", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&sample)).expect("sample parses");
            black_box(&m);
        });
    });
}

criterion_group!(benches, refusals);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if let Some(at) = args.iter().position(|a| a == "ratios") {
        let rounds = args.get(at + 1).and_then(|a| a.parse().ok()).unwrap_or(300);
        let batch = args.get(at + 2).and_then(|a| a.parse().ok()).unwrap_or(200);
        ratios(rounds, batch);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
