//! Issue 20, clients fail over (RFC 3263 §4.3), on one virtual network and
//! clock under 0–30 % loss (duplication and reordering too):
//!
//! - three registrars (`EndpointConfig::serve`, each its own location
//!   service) and alice, registered with them in that order of preference
//!   (`RegistrationConfig::with_fallbacks`). The first dies (cut off, or
//!   crashed and restarted empty later): alice is registered with the next
//!   within one refresh cycle plus the timeouts — the refresh to the dead
//!   one ends at Timer F (64·T1) and the next REGISTER leaves that very
//!   instant — and a MESSAGE to herself goes through the registrar in use.
//!   When the first answers again she goes back to it (RFC 5626 §4.5
//!   back-off). With every registrar silent, the REGISTERs go round them in
//!   order, Timer F apart, with the back-off between rounds doubling to its
//!   ceiling; when they come back, the first takes her binding again.
//! - SRV (RFC 2782): four targets, three of priority 10 weighted 60:30:10
//!   that answer 503, one of priority 20 that answers 200. Every MESSAGE
//!   visits each priority-10 target once, then the priority-20 one; over
//!   all seeds the first and second places follow the weights.
//!
//! Seeds: `SIPLINE_SEED=n` (one), `SIPLINE_SEEDS=n` (`0..n`),
//! `SIPLINE_SEED_FROM=k` (from `k`).
// Shares of a count are small numbers turned into floats.
#![allow(clippy::cast_precision_loss)]

use sipline::auth::{DigestCredentials, Users};
use sipline::endpoint::{
    Endpoint, EndpointConfig, Event, Output, RegistrationConfig, RegistrationState, Request, RequestId, ServerConfig,
};
use sipline::message::{Method, Uri};
use sipline::rng::Rng;
use sipline::transport::{Answer, Lookup, SrvRecord, Transport};
use sipline_tests::sim::{for_each_seed, top_branch, LinkConfig, Node, NodeId, Sim};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";
/// Registrars are nodes 0, 1, 2; alice is node 3.
const REGISTRARS: usize = 3;
const ALICE: NodeId = 3;
/// Timers B and F (64·T1).
const TIMEOUT: Duration = Duration::from_secs(32);
/// Alice asks for 120 s: she refreshes every 60 s (`refresh_after`).
const EXPIRES: u32 = 120;
const REFRESH: Duration = Duration::from_secs(60);
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);
const HOME_BASE: Duration = Duration::from_secs(30);
const STEPS: usize = 2_000_000;

fn addr(id: NodeId) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

fn node_of(a: SocketAddr) -> Option<NodeId> {
    match a.ip() {
        IpAddr::V4(v4) => usize::from(v4.octets()[3]).checked_sub(1),
        IpAddr::V6(_) => None,
    }
}

fn registrar_uri(id: NodeId) -> String {
    format!("sip:192.0.2.{}", id + 1)
}

/// One node: a registrar, alice, or (SRV test) a server double or the
/// client, with what it did.
struct Host {
    id: NodeId,
    ep: Endpoint,
    now: Instant,
    /// Cut off: nothing in or out.
    down: bool,
    out: VecDeque<(NodeId, Vec<u8>)>,
    notes: Vec<String>,
    /// What the application answers requests it handles with.
    answer: u16,
    /// Answers to the endpoint's lookups.
    dns: BTreeMap<String, Answer>,
    events: Vec<(Instant, Event)>,
    /// First sends of requests (a branch not seen before): when, to whom,
    /// the request line, the Call-ID.
    firsts: Vec<(Instant, NodeId, String, String)>,
    branches: BTreeSet<String>,
}

impl Host {
    fn new(id: NodeId, config: EndpointConfig, now: Instant) -> Host {
        Host {
            id,
            ep: boot(id, config, now),
            now,
            down: false,
            out: VecDeque::new(),
            notes: Vec::new(),
            answer: 501,
            dns: BTreeMap::new(),
            events: Vec::new(),
            firsts: Vec::new(),
            branches: BTreeSet::new(),
        }
    }

    fn pump(&mut self) {
        for _ in 0..100_000 {
            let Some(o) = self.ep.poll_output() else { return };
            match o {
                Output::Datagram { remote, bytes, .. } => {
                    let text = String::from_utf8_lossy(&bytes);
                    let line = text.split("\r\n").next().unwrap_or_default().to_owned();
                    if self.down {
                        self.notes.push(format!("down: out {line}"));
                        continue;
                    }
                    let Some(to) = node_of(remote) else {
                        self.notes.push(format!("no such node: {remote}"));
                        continue;
                    };
                    if !line.starts_with("SIP/2.0") && self.branches.insert(top_branch(&bytes).to_owned()) {
                        let call_id = header(&text, "Call-ID");
                        self.firsts.push((self.now, to, line, call_id));
                    }
                    self.out.push_back((to, bytes.to_vec()));
                }
                Output::Resolve { query, name, lookup } => {
                    let answer = match (lookup, self.dns.get(&name)) {
                        (Lookup::Srv, Some(a @ Answer::Srv(_))) | (Lookup::Ip, Some(a @ Answer::Ips(_))) => a.clone(),
                        _ => Answer::NotFound,
                    };
                    self.ep.handle_resolved(self.now, query, answer);
                }
                Output::Event(e) => {
                    if let Event::Incoming { incoming, .. } = &e {
                        let _ = self.ep.respond(self.now, *incoming, self.answer, "");
                    }
                    self.notes.push(format!("{e:?}").chars().take(160).collect());
                    self.events.push((self.now, e));
                }
                other => self.notes.push(format!("output ignored: {other:?}").chars().take(120).collect()),
            }
        }
        panic!("node {}: outputs never ended", self.id);
    }

    fn registered_at(&self) -> Option<&str> {
        match self.ep.registration() {
            Some(RegistrationState::Registered { registrar, .. }) => Some(registrar),
            _ => None,
        }
    }

    fn contact(&self) -> Option<&str> {
        match self.ep.registration() {
            Some(RegistrationState::Registered { contact, .. }) => Some(contact),
            _ => None,
        }
    }

    fn outcome(&self, id: RequestId) -> Option<bool> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::Outcome { request, result } if *request == id => Some(result.as_ref().is_ok_and(|r| r.code == 200)),
            _ => None,
        })
    }
}

impl Node for Host {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.now = now;
        if self.down {
            let line = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
            self.notes.push(format!("down: in {}", String::from_utf8_lossy(line)));
            return;
        }
        self.ep.handle_datagram(now, addr(self.id), addr(from), bytes);
        self.pump();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.ep.handle_timeout(now);
        self.pump();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
    }

    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.out.pop_front()
    }

    fn drain_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

fn boot(id: NodeId, config: EndpointConfig, now: Instant) -> Endpoint {
    let mut ep = Endpoint::new(config).unwrap();
    ep.add_listener(Transport::Udp, addr(id));
    ep.start(now);
    ep
}

fn header(text: &str, name: &str) -> String {
    text.split("\r\n")
        .find(|l| {
            l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name) && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim().to_owned())
        .unwrap_or_default()
}

fn server_config(seed: u64) -> EndpointConfig {
    let users = Users::from_passwords([("alice", "alice-pw")]);
    let mut c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(ServerConfig::new(DOMAIN, users));
    c.seed = seed;
    c
}

fn alice_config(seed: u64) -> EndpointConfig {
    let mut c = EndpointConfig::new(&format!("sip:alice@{DOMAIN}"));
    let fallbacks = (1..REGISTRARS).map(registrar_uri).collect();
    let mut r = RegistrationConfig::new(&registrar_uri(0)).with_fallbacks(fallbacks);
    r.expires = EXPIRES;
    r.retry_base = RETRY_BASE;
    r.retry_max = RETRY_MAX;
    r.home_base = HOME_BASE;
    c.registration = Some(r);
    c.credentials.push(DigestCredentials::new("alice", "alice-pw"));
    c.seed = seed;
    c
}

/// The link of a seed: 0–30 % loss (none for every tenth seed), up to
/// 10 % duplicates, jitter that reorders.
fn link(seed: u64) -> LinkConfig {
    let mut rng = Rng::new(seed ^ 0x1055);
    let loss = if seed % 10 == 0 { 0.0 } else { (rng.next_u64() % 301) as f64 / 1000.0 };
    LinkConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(rng.next_u64() % 120),
        loss,
        duplicate: (rng.next_u64() % 11) as f64 / 100.0,
    }
}

fn network(seed: u64) -> Sim<Host> {
    let t0 = Instant::now();
    let mut nodes: Vec<Host> =
        (0..REGISTRARS).map(|id| Host::new(id, server_config(seed.wrapping_mul(7) + id as u64), t0)).collect();
    nodes.push(Host::new(ALICE, alice_config(seed.wrapping_mul(13) + 5), t0));
    Sim::new(nodes, link(seed), seed, t0)
}

/// Whether registrar `r` holds alice's binding with the Contact she
/// believes registered.
fn holds(s: &Sim<Host>, r: NodeId) -> bool {
    let Some(contact) = s.nodes[ALICE].contact() else { return false };
    let aor = format!("sip:alice@{DOMAIN}");
    let uri = Uri::parse(&aor).unwrap();
    match s.nodes[r].ep.registrar().map(|x| x.targets(s.now(), &uri)) {
        Some(sipline::registrar::Lookup::Aor(b)) => b.iter().any(|b| b.contact == contact),
        _ => false,
    }
}

/// Whether alice is registered with registrar `r`, and `r` knows it.
fn with(s: &Sim<Host>, r: NodeId) -> bool {
    s.nodes[ALICE].registered_at() == Some(registrar_uri(r).as_str()) && holds(s, r)
}

/// Runs `s` for `d` of virtual time.
fn run_for(s: &mut Sim<Host>, d: Duration) {
    let until = s.elapsed() + d;
    s.run_until(until + Duration::from_secs(1), STEPS, |s| s.elapsed() >= until);
}

/// A uniform draw in `lo..hi` seconds.
fn secs(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(lo * 1000 + rng.next_u64() % ((hi - lo) * 1000).max(1))
}

/// Alice's REGISTERs (first sends) from `since`: (when, to).
fn registers(s: &Sim<Host>, since: Instant) -> Vec<(Instant, NodeId)> {
    s.nodes[ALICE]
        .firsts
        .iter()
        .filter(|(at, _, line, _)| *at >= since && line.starts_with("REGISTER "))
        .map(|(at, to, _, _)| (*at, *to))
        .collect()
}

/// Alice sends MESSAGEs to her own AOR until one comes back 200 and
/// reached her (at most three tries, under loss): through the registrar
/// in use, which forwards it to her binding there.
fn message_to_herself(s: &mut Sim<Host>, tag: &str) -> bool {
    for attempt in 0..3 {
        let body = format!("{tag}-{attempt}");
        let now = s.now();
        let request = Request::message(&format!("sip:alice@{DOMAIN}"), "text/plain", body.clone().into_bytes());
        let id = s.nodes[ALICE].ep.send_request(now, request).unwrap();
        s.nodes[ALICE].pump();
        let limit = s.elapsed() + TIMEOUT * 4;
        s.run_until(limit, STEPS, |s| s.nodes[ALICE].outcome(id).is_some());
        let got = s.nodes[ALICE]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Message { body: b, .. } if *b == body.as_bytes()));
        if s.nodes[ALICE].outcome(id) == Some(true) && got {
            return true;
        }
    }
    false
}

/// The first registrar dies (cut off or crashed); alice moves on within
/// one refresh cycle plus the timeouts, keeps working, and goes back to
/// the first once it answers again.
fn primary_dies(seed: u64) {
    let mut s = network(seed);
    let lossless = seed % 10 == 0;
    let mut rng = Rng::new(seed ^ 0xfa11);
    // Registered with the first (under loss, a lost exchange may hand her
    // over for a while; she comes back).
    let ok = s.run_until(Duration::from_secs(900), STEPS, |s| with(s, 0));
    assert!(ok, "never registered with the first registrar");
    let wait = secs(&mut rng, 0, 60);
    run_for(&mut s, wait);
    let ok = s.run_until(Duration::from_secs(2000), STEPS, |s| with(s, 0));
    assert!(ok, "not with the first registrar before it dies");
    let crash = rng.next_u64() % 2 == 0;
    s.nodes[0].down = true;
    let killed = s.now();
    s.note(&format!("registrar 0 {}", if crash { "crashes" } else { "is cut off" }));

    // Within one refresh cycle plus the timeouts: the refresh (at most
    // REFRESH away) times out at Timer F, the next REGISTER leaves that
    // instant; at the next registrar a challenge and the answer take at
    // most two transactions (Timer F each, under loss), three registrars
    // at worst.
    let bound = if lossless {
        REFRESH + TIMEOUT + Duration::from_secs(2)
    } else {
        REFRESH + TIMEOUT + TIMEOUT * 4 + Duration::from_secs(2)
    };
    let limit = s.elapsed() + bound;
    let moved = s.run_until(limit, STEPS, |s| with(s, 1) || with(s, 2));
    assert!(moved, "not registered with a live registrar {bound:?} after the first died");
    let moved_at = s.now();
    let now_with = (1..REGISTRARS).find(|&r| with(&s, r)).unwrap();
    if lossless {
        assert_eq!(now_with, 1, "lossless: the second registrar takes over");
    }
    // The first REGISTER to another registrar left the instant the last one
    // to the dead registrar timed out (Timer F).
    let regs = registers(&s, killed.checked_sub(TIMEOUT).unwrap_or(killed));
    let handover = regs.iter().position(|(_, to)| *to != 0).unwrap();
    assert!(handover > 0, "{regs:?}");
    let (last_dead, next) = (regs[handover - 1], regs[handover]);
    assert_eq!((last_dead.1, next.0 - last_dead.0), (0, TIMEOUT), "{regs:?}");
    assert!(next.0 >= killed, "{regs:?}");
    // Keeps working: a MESSAGE through the registrar in use reaches her.
    assert!(message_to_herself(&mut s, "after-failover"), "no MESSAGE through registrar {now_with}");
    s.note(&format!("moved to registrar {now_with} after {:?}", moved_at - killed));

    // The first comes back (its state lost, if it crashed).
    let down_for = secs(&mut rng, 10, 300);
    run_for(&mut s, down_for);
    if crash {
        let now = s.now();
        s.nodes[0].ep = boot(0, server_config(seed.wrapping_mul(7) + 99), now);
    }
    s.nodes[0].down = false;
    let healed = s.now();
    s.note("registrar 0 answers again");
    // Back within the longest wait between tries (RETRY_MAX) plus a try's
    // Timer F, three tries at worst under loss.
    let limit = s.elapsed() + (RETRY_MAX + TIMEOUT * 2) * 3 + TIMEOUT;
    let back = s.run_until(limit, STEPS, |s| with(s, 0));
    assert!(back, "not back with the first registrar {:?} after it healed", s.now() - healed);
    if lossless {
        // One try in flight at most, then one wait of at most RETRY_MAX.
        assert!(s.now() - healed <= RETRY_MAX + TIMEOUT + Duration::from_secs(1), "{:?}", s.now() - healed);
    }
    assert!(message_to_herself(&mut s, "back-home"), "no MESSAGE through the first registrar");
}

#[test]
fn the_first_registrar_dies_the_endpoint_moves_on_and_comes_back() {
    for_each_seed(40, primary_dies);
}

/// Every registrar goes silent: rounds in order, Timer F apart, backing
/// off between rounds; when they answer again, the first has her.
fn all_silent(seed: u64) {
    let mut s = network(seed);
    let mut rng = Rng::new(seed ^ 0xa11);
    // Right after a REGISTER with the first succeeded: nothing in flight.
    let ok = s.run_until(Duration::from_secs(900), STEPS, |s| with(s, 0));
    assert!(ok, "never registered with the first registrar");
    let registered = s.nodes[ALICE].events.iter().filter(|(_, e)| matches!(e, Event::Registration(_))).count();
    let ok = s.run_until(Duration::from_secs(2000), STEPS, |s| {
        with(s, 0)
            && s.nodes[ALICE].events.iter().filter(|(_, e)| matches!(e, Event::Registration(_))).count() == registered
            && s.nodes[ALICE]
                .firsts
                .last()
                .is_some_and(|(at, _, line, _)| !line.starts_with("REGISTER") || s.now() - *at > TIMEOUT)
    });
    assert!(ok);
    let silent = s.now();
    for r in 0..REGISTRARS {
        s.nodes[r].down = true;
    }
    s.note("every registrar silent");
    run_for(&mut s, Duration::from_secs(900));
    let regs = registers(&s, silent);
    assert!(regs.len() >= 12, "{regs:?}");
    // In order of preference, each REGISTER the instant the last timed out,
    // rounds apart by the back-off (5 s doubling to 60 s).
    let mut round = 0u32;
    for (i, pair) in regs.windows(2).enumerate() {
        let ((t0, r0), (t1, r1)) = (pair[0], pair[1]);
        assert_eq!(r0, i % REGISTRARS, "REGISTER {i} to registrar {r0}: {regs:?}");
        assert_eq!(r1, (i + 1) % REGISTRARS, "{regs:?}");
        let gap = t1 - t0;
        if r1 == 0 {
            round += 1;
            let backoff = RETRY_BASE.saturating_mul(1 << (round - 1).min(8)).min(RETRY_MAX);
            assert_eq!(gap, TIMEOUT + backoff, "round {round}: {regs:?}");
        } else {
            assert_eq!(gap, TIMEOUT, "REGISTER {i}: {regs:?}");
        }
    }
    // The first REGISTER is the refresh to the first registrar.
    assert_eq!(regs[0].1, 0);
    assert!(regs[0].0 - silent <= REFRESH, "{regs:?}");

    // Back: all answer again; the next REGISTER takes (within a round's
    // wait), and the first registrar has her soon after.
    let heal_in = secs(&mut rng, 0, 100);
    run_for(&mut s, heal_in);
    for r in 0..REGISTRARS {
        s.nodes[r].down = false;
    }
    let healed = s.now();
    s.note("every registrar answers again");
    let limit = s.elapsed() + RETRY_MAX + TIMEOUT * 5 + (RETRY_MAX + TIMEOUT * 2) * 2;
    let ok = s.run_until(limit, STEPS, |s| with(s, 0));
    assert!(ok, "not with the first registrar {:?} after the heal", s.now() - healed);
}

#[test]
fn every_registrar_silent_rounds_back_off_and_the_first_takes_her_back() {
    for_each_seed(40, all_silent);
}

/// SRV targets: a, b, c (priority 10, weights 60, 30, 10) answer 503; d
/// (priority 20) answers 200. Returns, per MESSAGE, the targets it visited.
fn srv_orders(seed: u64, messages: usize) -> Vec<String> {
    let t0 = Instant::now();
    let mut nodes: Vec<Host> = (0..4)
        .map(|id| {
            let mut c = EndpointConfig::new(&format!("sip:{}@example.net", ["a", "b", "c", "d"][id]));
            c.handle_methods = vec![Method::Message];
            c.seed = seed.wrapping_mul(3) + id as u64;
            let mut h = Host::new(id, c, t0);
            h.answer = if id == 3 { 200 } else { 503 };
            h
        })
        .collect();
    let mut c = EndpointConfig::new("sip:carol@example.org");
    c.seed = seed.wrapping_mul(17) + 1;
    let mut carol = Host::new(4, c, t0);
    let rec = |priority, weight, target: &str| SrvRecord { priority, weight, port: 5060, target: target.into() };
    carol.dns.insert(
        "_sip._udp.example.net".into(),
        Answer::Srv(vec![
            rec(10, 60, "a.example.net"),
            rec(10, 30, "b.example.net"),
            rec(20, 0, "d.example.net"),
            rec(10, 10, "c.example.net"),
        ]),
    );
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let ip = addr(i).ip();
        carol.dns.insert(format!("{name}.example.net"), Answer::Ips(vec![ip]));
    }
    nodes.push(carol);
    let mut s = Sim::new(nodes, link(seed), seed, t0);
    for n in 0..messages {
        let now = s.now();
        let request = Request::message("sip:svc@example.net", "text/plain", format!("m{n}").into_bytes());
        let id = s.nodes[4].ep.send_request(now, request).unwrap();
        s.nodes[4].pump();
        // Every attempt ends (a 503, or Timer F when the network ate it).
        let limit = s.elapsed() + TIMEOUT * 5;
        assert!(s.run_until(limit, STEPS, |s| s.nodes[4].outcome(id).is_some()), "MESSAGE {n} never ended");
    }
    let mut by_call: Vec<(String, String)> = Vec::new();
    for (_, to, line, call_id) in &s.nodes[4].firsts {
        if !line.starts_with("MESSAGE ") {
            continue;
        }
        let name = ["a", "b", "c", "d"][*to];
        match by_call.iter_mut().find(|(c, _)| c == call_id) {
            Some((_, order)) => order.push_str(name),
            None => by_call.push((call_id.clone(), name.to_owned())),
        }
    }
    by_call.into_iter().map(|(_, o)| o).collect()
}

#[test]
fn srv_priorities_and_weights_order_the_failover_under_loss() {
    let mut orders: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for_each_seed(40, |seed| {
        let got = srv_orders(seed, 10);
        assert_eq!(got.len(), 10, "{got:?}");
        for o in &got {
            // Each priority-10 target once, in any order, then priority 20.
            let mut first3: Vec<char> = o.chars().take(3).collect();
            first3.sort_unstable();
            assert!(o.len() == 4 && first3 == ['a', 'b', 'c'] && o.ends_with('d'), "visited {o}");
            *orders.entry(o.clone()).or_default() += 1;
            total += 1;
        }
    });
    let n = total as f64;
    let share = |f: &dyn Fn(&str) -> bool| orders.iter().filter(|(o, _)| f(o)).map(|(_, c)| *c).sum::<u64>() as f64 / n;
    // Within 5 standard deviations (and 1 %: RFC 2782's draw over
    // 0..=sum gives the first listed one part in sum+1 more).
    let within = |got: f64, p: f64| (got - p).abs() <= 0.01 + 5.0 * (p * (1.0 - p) / n).sqrt();
    for (c, p) in [('a', 0.6), ('b', 0.3), ('c', 0.1)] {
        let got = share(&|o: &str| o.starts_with(c));
        assert!(within(got, p), "{c} first in {got:.3} of {total}, expected {p}: {orders:?}");
    }
    let shares: Vec<String> = ["a", "b", "c", "ab", "ba", "ca"]
        .iter()
        .map(|o| format!("{o} {:.4}", share(&|x: &str| x.starts_with(o))))
        .collect();
    eprintln!("{total} MESSAGEs, first places and pairs: {}", shares.join(", "));
    // Second place by the weights left: after a, b has 30 of 40; after
    // b, a has 60 of 70; after c, a has 60 of 90.
    for (order, p) in [("ab", 0.6 * 0.75), ("ba", 0.3 * 60.0 / 70.0), ("ca", 0.1 * 60.0 / 90.0)] {
        let got = share(&|o: &str| o.starts_with(order));
        assert!(within(got, p), "{order} in {got:.3} of {total}, expected {p:.3}: {orders:?}");
    }
}
