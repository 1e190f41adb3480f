//! A deterministic network simulation for sans-IO cores.
//!
//! Nodes exchange datagrams over a virtual network whose links add
//! latency, jitter, loss, duplication and (through jitter) reordering, all
//! drawn from one seeded generator. Time is virtual: the simulation jumps
//! straight to the next delivery or the earliest `poll_timeout()`, so hours
//! of protocol time run in milliseconds, and the same seed replays the
//! same run exactly.

use sipline::rng::Rng;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// A node's address in the simulation.
pub type NodeId = usize;

/// What the simulation needs of a sans-IO core.
pub trait Node {
    /// A datagram from `from` arrived at `now`.
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]);
    /// Time passed; fire what is due.
    fn handle_timeout(&mut self, now: Instant);
    /// When `handle_timeout` is next needed.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next datagram to send, with its destination.
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)>;
    /// Lines for the trace: events this node saw since the last call.
    fn drain_events(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// How a link treats datagrams.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Base one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` (reorders datagrams).
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { latency: Duration::from_millis(20), jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }
}

/// The branch of the top Via of a SIP message (its transaction, for
/// traces), or "" if none.
pub fn top_branch(bytes: &[u8]) -> &str {
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    let Some(at) = text.find(";branch=") else { return "" };
    let rest = &text[at + 8..];
    &rest[..rest.find([';', '\r', ',', ' ']).unwrap_or(rest.len())]
}

/// `true` with probability `p` (53 random bits to a float in [0, 1)).
pub fn chance(rng: &mut Rng, p: f64) -> bool {
    #[allow(clippy::cast_precision_loss)]
    let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    x < p
}

impl LinkConfig {
    /// One delivery delay: the latency plus a uniform draw of jitter.
    pub fn delay(&self, rng: &mut Rng) -> Duration {
        let j = u64::try_from(self.jitter.as_micros()).unwrap_or(u64::MAX);
        let extra = if j == 0 { 0 } else { rng.next_u64() % (j + 1) };
        self.latency + Duration::from_micros(extra)
    }

    /// The harsh link of issue 3: 30 % loss, 10 % duplication, jitter that
    /// reorders.
    pub fn lossy() -> Self {
        LinkConfig {
            latency: Duration::from_millis(30),
            jitter: Duration::from_millis(120),
            loss: 0.30,
            duplicate: 0.10,
        }
    }
}

/// The simulation: nodes, links, datagrams in flight, a virtual clock and
/// a trace of everything that happened.
pub struct Sim<N> {
    /// The nodes, by id.
    pub nodes: Vec<N>,
    link: LinkConfig,
    rng: Rng,
    now: Instant,
    origin: Instant,
    /// (delivery time, sequence) -> (from, to, bytes)
    in_flight: BTreeMap<(Instant, u64), (NodeId, NodeId, Vec<u8>)>,
    seq: u64,
    trace: String,
    /// Datagrams sent and delivered, for statistics.
    pub sent: u64,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Delay spikes: a datagram sent between `from` and `to` (virtual time
    /// since the start) takes `extra` longer.
    pub spikes: Vec<(Duration, Duration, Duration)>,
}

impl<N> Drop for Sim<N> {
    fn drop(&mut self) {
        keep_trace_if_panicking(&self.trace);
    }
}

impl<N: Node> Sim<N> {
    /// A simulation of `nodes` over identical links, starting at `origin`.
    pub fn new(nodes: Vec<N>, link: LinkConfig, seed: u64, origin: Instant) -> Self {
        Sim {
            nodes,
            link,
            rng: Rng::new(seed ^ 0x005e_ed0f_5111),
            now: origin,
            origin,
            in_flight: BTreeMap::new(),
            seq: 0,
            trace: String::new(),
            sent: 0,
            delivered: 0,
            spikes: Vec::new(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// The trace so far: every datagram sent (with its fate) and every
    /// node event, stamped with virtual time.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    fn chance(&mut self, p: f64) -> bool {
        chance(&mut self.rng, p)
    }

    fn delay(&mut self) -> Duration {
        let at = self.now - self.origin;
        let spike = self.spikes.iter().filter(|(from, to, _)| *from <= at && at < *to).map(|s| s.2).max();
        self.link.delay(&mut self.rng) + spike.unwrap_or_default()
    }

    /// Changes how the links treat datagrams from now on (a network that
    /// heals, say).
    pub fn set_link(&mut self, link: LinkConfig) {
        self.link = link;
    }

    /// Adds a line to the trace, stamped with virtual time.
    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.trace, "{:>10.3} {line}", (self.now - self.origin).as_secs_f64());
    }

    /// Collects every node's outputs and puts them on the wire.
    pub fn flush(&mut self) {
        for from in 0..self.nodes.len() {
            while let Some((to, bytes)) = self.nodes[from].poll_transmit() {
                self.sent += 1;
                let lost = self.chance(self.link.loss);
                let copies = if lost {
                    0
                } else if self.chance(self.link.duplicate) {
                    2
                } else {
                    1
                };
                let first = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
                let _ = writeln!(
                    self.trace,
                    "{:>10.3} {from}->{to} {} [{}] {} ({})",
                    (self.now - self.origin).as_secs_f64(),
                    if lost {
                        "lost"
                    } else if copies == 2 {
                        "dup "
                    } else {
                        "sent"
                    },
                    bytes.len(),
                    String::from_utf8_lossy(first),
                    top_branch(&bytes)
                );
                for _ in 0..copies {
                    let at = self.now + self.delay();
                    self.seq += 1;
                    self.in_flight.insert((at, self.seq), (from, to, bytes.clone()));
                }
            }
            for e in self.nodes[from].drain_events() {
                let _ = writeln!(self.trace, "{:>10.3} {from} {e}", (self.now - self.origin).as_secs_f64());
            }
        }
    }

    /// The next moment something happens: a delivery or a node timer.
    pub fn next_event(&self) -> Option<Instant> {
        let delivery = self.in_flight.keys().next().map(|&(at, _)| at);
        let timer = self.nodes.iter().filter_map(Node::poll_timeout).min();
        match (delivery, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances to the next event and processes everything due then.
    /// Returns `false` when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.flush();
        let Some(at) = self.next_event() else { return false };
        // Time never goes backwards.
        self.now = self.now.max(at);
        while let Some((&(t, seq), _)) = self.in_flight.iter().next() {
            if t > self.now {
                break;
            }
            if let Some((from, to, bytes)) = self.in_flight.remove(&(t, seq)) {
                self.delivered += 1;
                self.nodes[to].handle_datagram(self.now, from, &bytes);
            }
        }
        for n in &mut self.nodes {
            if n.poll_timeout().is_some_and(|t| t <= self.now) {
                n.handle_timeout(self.now);
                // A stuck deadline would make every runtime spin.
                assert!(
                    n.poll_timeout().is_none_or(|t| t > self.now),
                    "poll_timeout not past now after handle_timeout"
                );
            }
        }
        self.flush();
        true
    }

    /// Runs until `done` holds (checked before every step), nothing is
    /// left, or `limit` of virtual time has passed, with at most
    /// `max_steps` steps. Returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, max_steps: usize, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..max_steps {
            self.flush();
            if done(self) {
                return true;
            }
            if self.elapsed() > limit || !self.step() {
                return done(self);
            }
        }
        panic!("simulation did not settle within {max_steps} steps");
    }

    /// Runs until nothing is left or `limit` of virtual time has passed,
    /// with at most `max_steps` steps (a bound against livelock).
    pub fn run(&mut self, limit: Duration, max_steps: usize) {
        for _ in 0..max_steps {
            if self.elapsed() > limit || !self.step() {
                return;
            }
        }
        panic!("simulation did not settle within {max_steps} steps");
    }
}

/// The seeds to run: `SIPLINE_SEED=n` runs one, `SIPLINE_SEEDS=n` runs
/// `0..n` (`SIPLINE_SEED_FROM=k`: `k..k+n`), else `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SIPLINE_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n: u64 = std::env::var("SIPLINE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    // `SIPLINE_SEED_FROM=k` shifts the range to `k..k+n` (to split a long
    // soak across processes).
    let from: u64 = std::env::var("SIPLINE_SEED_FROM").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (from..from.saturating_add(n)).collect()
}

thread_local! {
    /// The trace of the last simulation dropped while its thread panicked
    /// (a failing seed), for [`for_each_seed`] to report.
    static FAILED_TRACE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps `trace` as the trace of the failing run, if this thread is
/// panicking. Simulations call it from `Drop`.
pub fn keep_trace_if_panicking(trace: &str) {
    if std::thread::panicking() {
        FAILED_TRACE.with(|t| *t.borrow_mut() = Some(trace.to_owned()));
    }
}

fn take_failed_trace() -> Option<String> {
    FAILED_TRACE.with(|t| t.borrow_mut().take())
}

/// The command that replays one seed of the running test.
fn replay_command(seed: u64) -> String {
    // The test binary is `target/<profile>/deps/<name>-<hash>`; libtest
    // names the test's thread after the test.
    let exe = std::env::args().next().unwrap_or_default();
    let file = std::path::Path::new(&exe).file_name().and_then(|f| f.to_str()).unwrap_or("?");
    let binary = file.rsplit_once('-').map_or(file, |(name, _)| name);
    let release = if exe.contains("/release/") { " --release" } else { "" };
    let test = std::thread::current().name().unwrap_or("").rsplit("::").next().unwrap_or("").to_owned();
    format!("SIPLINE_SEED={seed} cargo test{release} -p sipline-tests --test {binary} -- --exact {test}")
}

/// Where a failing seed's trace is written: `target/sim-failures/`.
fn trace_path(seed: u64) -> std::path::PathBuf {
    let test = std::thread::current().name().unwrap_or("sim").replace("::", "-");
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/sim-failures")
        .join(format!("{test}-seed{seed}.trace"))
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len();
    for _ in 0..=n {
        match s[..at].rfind('\n') {
            Some(i) if i > 0 => at = i,
            _ => return s,
        }
    }
    &s[at + 1..]
}

/// Runs `f` for every seed and reports every failing one: the failure
/// rate (`failed 3/20000: 71, 912, 4040`), the command that replays the
/// first, and its trace (the messages with virtual timestamps and their
/// fate), written whole to `target/sim-failures/` and its end printed.
/// Panics at the end if any seed failed.
pub fn for_each_seed(default: u64, mut f: impl FnMut(u64)) {
    let seeds = seeds(default);
    let mut failed: Vec<(u64, String)> = Vec::new();
    for &seed in &seeds {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = r {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            let trace = take_failed_trace();
            eprintln!("seed {seed} failed: {why}\n  replay: {}", replay_command(seed));
            if let Some(trace) = trace {
                let path = trace_path(seed);
                let written = std::fs::create_dir_all(path.parent().unwrap_or(&path))
                    .and_then(|()| std::fs::write(&path, &trace))
                    .is_ok();
                if failed.is_empty() {
                    eprintln!("  trace (last 40 lines):\n{}", tail(&trace, 40));
                }
                if written {
                    eprintln!("  whole trace: {}", path.display());
                }
            }
            failed.push((seed, why));
        }
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().take(50).map(|(s, _)| s.to_string()).collect();
        let more = if failed.len() > 50 { ", …" } else { "" };
        panic!(
            "failed {}/{}: {}{more}\nfirst: {}\nreplay: {}",
            failed.len(),
            seeds.len(),
            list.join(", "),
            failed[0].1,
            replay_command(failed[0].0)
        );
    }
}
