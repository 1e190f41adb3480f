//! The transaction layer between two cores over a simulated network:
//! under loss, duplication and reordering every transaction ends the way
//! RFC 3261 §17 requires, within its time bound, and nothing is left
//! behind. Seeds: `SIPLINE_SEED=n` (one) or `SIPLINE_SEEDS=n` (`0..n`).

use sipline::rng::Rng;
use sipline::transaction::TimerConfig;
use sipline_tests::sim::{for_each_seed, LinkConfig, Node, NodeId, Sim};
use sipline_tests::tu::{expected_code, Outcome, Plan, Uac, Uas};
use std::time::{Duration, Instant};

enum Peer {
    Uac(Uac),
    Uas(Uas),
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        match self {
            Peer::Uac(n) => n.handle_datagram(now, from, bytes),
            Peer::Uas(n) => n.handle_datagram(now, from, bytes),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Peer::Uac(n) => n.handle_timeout(now),
            Peer::Uas(n) => n.handle_timeout(now),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Peer::Uac(n) => n.poll_timeout(),
            Peer::Uas(n) => n.poll_timeout(),
        }
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        match self {
            Peer::Uac(n) => n.poll_transmit(),
            Peer::Uas(n) => n.poll_transmit(),
        }
    }
    fn drain_events(&mut self) -> Vec<String> {
        match self {
            Peer::Uac(n) => n.drain_events(),
            Peer::Uas(n) => n.drain_events(),
        }
    }
}

/// `count` transactions, INVITE or MESSAGE at random, starting at random
/// times within the first `spread`.
fn plans(seed: u64, origin: Instant, count: u32, spread: Duration) -> Vec<Plan> {
    let mut rng = Rng::new(seed);
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut v: Vec<Plan> = (1..=count)
        .map(|seq| Plan {
            at: origin + Duration::from_millis(rng.next_u64() % spread_ms),
            method: if rng.next_u64() % 2 == 0 { "INVITE" } else { "MESSAGE" },
            seq,
        })
        .collect();
    v.sort_by_key(|p| (p.at, p.seq));
    v
}

struct Run {
    sim: Sim<Peer>,
    plans: Vec<Plan>,
}

fn simulate(seed: u64, link: LinkConfig, count: u32) -> Run {
    // An arbitrary origin: all time after it is virtual.
    let origin = Instant::now();
    let plans = plans(seed, origin, count, Duration::from_secs(20));
    let nodes = vec![Peer::Uac(Uac::new(seed, 1, plans.clone())), Peer::Uas(Uas::new(seed.wrapping_add(1)))];
    let mut sim = Sim::new(nodes, link, seed, origin);
    // Bounded in virtual time and in steps.
    sim.run(Duration::from_secs(3600), 2_000_000);
    Run { sim, plans }
}

/// Every planned transaction ended as §17 requires and nothing is left.
fn check(run: &Run, lossless: bool) {
    let timeout = TimerConfig::default().transaction_timeout();
    let (Peer::Uac(uac), Peer::Uas(uas)) = (&run.sim.nodes[0], &run.sim.nodes[1]) else { panic!("node layout") };
    assert!(uac.all_started());
    for plan in &run.plans {
        let start = uac
            .started
            .values()
            .find(|(p, _)| p.seq == plan.seq)
            .map_or_else(|| panic!("request {} never started", plan.seq), |&(_, t)| t);
        match uac.outcomes.get(&plan.seq) {
            Some(Outcome::Final(code, at)) => {
                assert_eq!(*code, expected_code(plan.method, plan.seq), "request {}", plan.seq);
                assert!(*at - start <= timeout, "request {} answered after 64·T1", plan.seq);
            }
            // Timer B / F: exactly 64·T1 after the start (no provisionals here).
            Some(Outcome::Timeout(at)) => {
                assert!(!lossless, "request {} timed out on a lossless link", plan.seq);
                assert_eq!(*at - start, timeout, "request {} timed out off schedule", plan.seq);
            }
            None => panic!("request {} ({}) never ended\n{}", plan.seq, plan.method, run.sim.trace()),
        }
    }
    // Nothing leaks: every transaction ended and no timer is armed.
    assert!(uac.layer.is_empty(), "client transactions left: {:?}", uac.layer.len());
    assert!(uas.layer.is_empty(), "server transactions left: {:?}", uas.layer.len());
    assert!(uas.pending_2xx.is_empty(), "2xx still retransmitted");
    assert_eq!(uac.layer.poll_timeout(), None);
    assert_eq!(uas.layer.poll_timeout(), None);
}

#[test]
fn lossless_every_transaction_completes() {
    for_each_seed(20, |seed| {
        let run = simulate(seed, LinkConfig::default(), 20);
        check(&run, true);
    });
}

#[test]
fn lossy_duplicating_reordering_network() {
    for_each_seed(300, |seed| {
        let run = simulate(seed, LinkConfig::lossy(), 20);
        check(&run, false);
    });
}

#[test]
fn same_seed_same_trace_byte_for_byte() {
    let a = simulate(7, LinkConfig::lossy(), 30);
    let b = simulate(7, LinkConfig::lossy(), 30);
    assert!(a.sim.trace().lines().count() > 100, "a trace worth comparing");
    assert_eq!(a.sim.trace(), b.sim.trace());
    let c = simulate(8, LinkConfig::lossy(), 30);
    assert_ne!(a.sim.trace(), c.sim.trace());
}

#[test]
fn loss_actually_happens() {
    // The lossy link is as bad as it says: a test that cannot fail proves nothing.
    let run = simulate(3, LinkConfig::lossy(), 40);
    let lost = run.sim.trace().lines().filter(|l| l.contains(" lost ")).count();
    let dup = run.sim.trace().lines().filter(|l| l.contains(" dup ")).count();
    let sent = run.sim.sent;
    assert!(sent > 80);
    // 20 %..40 % of what was sent, for a 30 % loss setting.
    let lost = u64::try_from(lost).unwrap_or(u64::MAX);
    assert!(lost * 5 > sent && lost * 5 < sent * 2, "{lost} of {sent} lost");
    assert!(dup > 0);
}
