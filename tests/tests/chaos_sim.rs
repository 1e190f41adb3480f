//! The whole system under chaos: one server (`EndpointConfig::serve`:
//! registrar and proxy) and twenty registered endpoints on one virtual
//! network and clock. Each endpoint's application does a seeded random mix
//! of MESSAGE, INVITE (answered at once or after ringing, rejected, left
//! ringing, cancelled), re-INVITE (glare when two cross), BYE, unregister
//! and register again, while the network loses (0–30 %), duplicates,
//! reorders and delays datagrams, adds delay spikes, cuts nodes off for
//! 5–120 s and crash-restarts them (all state lost, the same AOR).
//!
//! Then the network heals, the applications hang up, and the invariants
//! are checked:
//! - every request the application issued ended in exactly one outcome
//!   event, every session in exactly one `Ended` (but what a crash took);
//! - after the calls end, no session is left anywhere: no dialog stays
//!   confirmed on one side and unknown on the other;
//! - every MESSAGE answered 2xx was delivered to the application of its
//!   target, and no incarnation of an application got one twice;
//! - the registrar's bindings are what each endpoint believes of its own
//!   registration;
//! - after shutdown every core's tables are empty and no timer is armed.
//!
//! Same seed, same trace, byte for byte. Seeds: `SIPLINE_SEED=n` (one),
//! `SIPLINE_SEEDS=n` (`0..n`), `SIPLINE_SEED_FROM=k` (from `k`).

use sipline::auth::{DigestCredentials, Users};
use sipline::endpoint::{
    Body, Endpoint, EndpointConfig, Event, Output, RegistrationConfig, RegistrationState, Request, RequestId,
    ServerConfig, SessionEnd, SessionEvent, SessionId, Tables,
};
use sipline::message::Uri;
use sipline::rng::Rng;
use sipline::transport::Transport;
use sipline_tests::sim::{for_each_seed, LinkConfig, Node, NodeId, Sim};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";
/// Endpoints (nodes 1..=USERS); node 0 is the server.
const USERS: usize = 20;
/// How long the applications act and the faults strike.
const CHAOS: Duration = Duration::from_secs(600);
/// How long the healed network gets to settle: past every retry and past
/// a registration's expiry (120 s), with the calls hung up.
const SETTLE: Duration = Duration::from_secs(400);

fn addr(id: NodeId) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

fn node_of(a: SocketAddr) -> Option<NodeId> {
    match a.ip() {
        std::net::IpAddr::V4(v4) => Some(usize::from(v4.octets()[3]).checked_sub(1)?),
        std::net::IpAddr::V6(_) => None,
    }
}

fn user(id: NodeId) -> String {
    format!("u{id}")
}

/// Something the application does later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Accept(SessionId),
    Reject(SessionId),
    Hangup(SessionId),
}

/// A MESSAGE the application sent.
#[derive(Debug)]
struct Sent {
    body: String,
    to: NodeId,
    outcomes: u32,
    ok: bool,
    /// Its endpoint crashed before the outcome.
    crashed: bool,
}

/// A session of the application, either direction.
#[derive(Debug, Default)]
struct Call {
    answered: bool,
    confirmed: bool,
    ends: u32,
    end: Option<SessionEnd>,
    crashed: bool,
}

/// The records that outlive crashes: what the application did and saw,
/// by (incarnation, handle).
#[derive(Debug, Default)]
struct Book {
    sent: BTreeMap<(u32, RequestId), Sent>,
    calls: BTreeMap<(u32, SessionId), Call>,
    /// MESSAGE bodies delivered: incarnation, body, when.
    delivered: Vec<(u32, String, Instant)>,
    shut_down: u32,
}

/// One node: the server or an endpoint with its application, its faults
/// and its book.
struct Chaos {
    id: NodeId,
    config: EndpointConfig,
    ep: Endpoint,
    incarnation: u32,
    now: Instant,
    out: VecDeque<(NodeId, Vec<u8>)>,
    notes: Vec<String>,
    /// Cut off from the network in these intervals.
    cuts: Vec<(Instant, Instant)>,
    /// Crash-restarts still to come, earliest first.
    crashes: VecDeque<Instant>,
    /// The application: acting (chaos phase) or only answering.
    acting: bool,
    rng: Rng,
    next_action: Option<Instant>,
    tasks: BTreeMap<(Instant, u64), Task>,
    task_seq: u64,
    msg_seq: u64,
    book: Book,
}

fn server_config() -> EndpointConfig {
    let users: Vec<(String, String)> = (1..=USERS).map(|i| (user(i), format!("{}-pw", user(i)))).collect();
    let users = Users::from_passwords(users.iter().map(|(u, p)| (u.as_str(), p.as_str())));
    EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(ServerConfig::new(DOMAIN, users))
}

fn endpoint_config(id: NodeId) -> EndpointConfig {
    let mut c = EndpointConfig::new(&format!("sip:{}@{DOMAIN}", user(id)));
    let mut r = RegistrationConfig::new(&format!("sip:{}", addr(0)));
    r.expires = 120;
    r.retry_base = Duration::from_secs(5);
    r.retry_max = Duration::from_secs(60);
    c.registration = Some(r);
    c.credentials.push(DigestCredentials::new(user(id), format!("{}-pw", user(id))));
    c
}

impl Chaos {
    fn new(id: NodeId, config: EndpointConfig, seed: u64, now: Instant) -> Chaos {
        let ep = Self::boot(id, &config, seed, 0, now);
        Chaos {
            id,
            config,
            ep,
            incarnation: 0,
            now,
            out: VecDeque::new(),
            notes: Vec::new(),
            cuts: Vec::new(),
            crashes: VecDeque::new(),
            acting: id != 0,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            next_action: None,
            tasks: BTreeMap::new(),
            task_seq: 0,
            msg_seq: 0,
            book: Book::default(),
        }
    }

    fn boot(id: NodeId, config: &EndpointConfig, seed: u64, incarnation: u32, now: Instant) -> Endpoint {
        let mut c = config.clone();
        c.seed = seed.wrapping_mul(31).wrapping_add(id as u64 * 1009 + u64::from(incarnation) * 7919);
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(id));
        ep.start(now);
        ep
    }

    fn cut(&self, now: Instant) -> bool {
        self.cuts.iter().any(|&(a, b)| a <= now && now < b)
    }

    /// A uniform draw in `0..n` (`n` > 0).
    fn pick(&mut self, n: usize) -> usize {
        usize::try_from(self.rng.next_u64() % n as u64).unwrap_or(0)
    }

    /// A uniform draw in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.next_u64() % (hi - lo).max(1))
    }

    fn later(&mut self, after: Duration, task: Task) {
        self.task_seq += 1;
        self.tasks.insert((self.now + after, self.task_seq), task);
    }

    fn pump(&mut self) {
        loop {
            let mut events = Vec::new();
            while let Some(o) = self.ep.poll_output() {
                match o {
                    Output::Datagram { remote, bytes, .. } => {
                        if self.cut(self.now) {
                            let first = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
                            self.notes.push(format!("cut: out {}", String::from_utf8_lossy(first)));
                        } else if let Some(to) = node_of(remote) {
                            self.out.push_back((to, bytes.to_vec()));
                        } else {
                            self.notes.push(format!("no such node: {remote}"));
                        }
                    }
                    Output::Event(e) => events.push(e),
                    other => self.notes.push(format!("output ignored: {other:?}").chars().take(120).collect()),
                }
            }
            if events.is_empty() {
                return;
            }
            for e in events {
                self.on_event(e);
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        let inc = self.incarnation;
        let now = self.now;
        match e {
            Event::Outcome { request, result } => {
                let code = match &result {
                    Ok(r) => r.code.to_string(),
                    Err(e) => format!("{e}"),
                };
                self.notes.push(format!("outcome {request:?}: {code}"));
                if let Some(s) = self.book.sent.get_mut(&(inc, request)) {
                    s.outcomes += 1;
                    s.ok = matches!(&result, Ok(r) if (200..300).contains(&r.code));
                }
            }
            Event::Message { body, .. } => {
                let body = String::from_utf8_lossy(&body).into_owned();
                self.notes.push(format!("message {body}"));
                self.book.delivered.push((inc, body, now));
            }
            Event::Incoming { incoming, method, .. } => {
                let _ = self.ep.respond(now, incoming, if method == "OPTIONS" { 200 } else { 501 }, "");
            }
            Event::IncomingSession { session, from, .. } => {
                self.notes.push(format!("incoming {session:?} from {from}"));
                self.book.calls.insert((inc, session), Call::default());
                if !self.acting {
                    let _ = self.ep.reject(now, session, 480, "", &[]);
                    return;
                }
                match self.rng.next_u64() % 100 {
                    0..25 => {
                        let _ = self.ep.accept(now, session, Some(&Body::sdp(b"v=0\r\n".to_vec())));
                    }
                    25..60 => {
                        let _ = self.ep.ring(now, session, 180, None);
                        let after = self.millis(200, 8000);
                        self.later(after, Task::Accept(session));
                    }
                    60..75 => {
                        let _ = self.ep.reject(now, session, 486, "", &[]);
                    }
                    _ => {
                        // Left ringing: the caller may cancel first.
                        let _ = self.ep.ring(now, session, 180, None);
                        self.later(Duration::from_secs(20), Task::Reject(session));
                    }
                }
            }
            Event::Session { session, event } => {
                let short = match &event {
                    SessionEvent::Progress(r) => format!("progress {}", r.code),
                    SessionEvent::Answered(r) => format!("answered {}", r.code),
                    SessionEvent::Updated(r) => format!("updated {:?}", r.as_ref().map(|r| r.code)),
                    other => format!("{other:?}").chars().take(60).collect(),
                };
                self.notes.push(format!("session {session:?}: {short}"));
                let call = self.book.calls.entry((inc, session)).or_default();
                match event {
                    SessionEvent::Answered(_) => call.answered = true,
                    SessionEvent::Confirmed { .. } => call.confirmed = true,
                    SessionEvent::Ended(why) => {
                        call.ends += 1;
                        call.end = Some(why);
                    }
                    SessionEvent::Reoffer { .. } => {
                        let _ = self.ep.accept(now, session, Some(&Body::sdp(b"v=0\r\n".to_vec())));
                    }
                    _ => {}
                }
            }
            Event::Registration(state) => {
                let short: String = format!("{state:?}").chars().take(50).collect();
                self.notes.push(format!("registration {short}"));
            }
            Event::ShutDown => self.book.shut_down += 1,
            _ => {}
        }
    }

    /// Sessions of this incarnation not ended yet.
    fn live_calls(&self) -> Vec<SessionId> {
        let inc = self.incarnation;
        self.book.calls.iter().filter(|((i, _), c)| *i == inc && c.ends == 0).map(|((_, s), _)| *s).collect()
    }

    /// One random thing the application does.
    fn act(&mut self) {
        let now = self.now;
        let inc = self.incarnation;
        let other = {
            let j = 1 + self.pick(USERS - 1);
            if j >= self.id {
                j + 1
            } else {
                j
            }
        };
        let roll = self.rng.next_u64() % 100;
        let live = self.live_calls();
        match roll {
            0..40 => {
                self.msg_seq += 1;
                let body = format!("m{}.{}.{}", self.id, inc, self.msg_seq);
                let to = format!("sip:{}@{DOMAIN}", user(other));
                match self.ep.send_request(now, Request::message(&to, "text/plain", body.clone().into_bytes())) {
                    Ok(id) => {
                        self.notes.push(format!("send {id:?} {body} to {}", user(other)));
                        self.book
                            .sent
                            .insert((inc, id), Sent { body, to: other, outcomes: 0, ok: false, crashed: false });
                    }
                    Err(e) => self.notes.push(format!("send refused: {e}")),
                }
            }
            40..60 if live.len() < 2 => {
                let to = format!("sip:{}@{DOMAIN}", user(other));
                if let Ok(s) = self.ep.invite(now, Request::invite(&to, "application/sdp", b"v=0\r\n".to_vec())) {
                    self.notes.push(format!("invite {s:?} to {}", user(other)));
                    self.book.calls.insert((inc, s), Call::default());
                    let after = self.millis(1000, 40_000);
                    self.later(after, Task::Hangup(s));
                }
            }
            60..70 if !live.is_empty() => {
                let s = live[self.pick(live.len())];
                let r = self.ep.reinvite(now, s, Some(Body::sdp(b"v=0\r\ns=re\r\n".to_vec())));
                self.notes.push(format!("reinvite {s:?}: {r:?}"));
            }
            70..78 if !live.is_empty() => {
                let s = live[self.pick(live.len())];
                let r = self.ep.hangup(now, s);
                self.notes.push(format!("hangup {s:?}: {r:?}"));
            }
            78..83 => match self.ep.registration() {
                Some(RegistrationState::Registered { .. }) => {
                    self.notes.push("unregister".into());
                    self.ep.unregister(now);
                }
                Some(RegistrationState::Unregistered) => {
                    self.notes.push("register again".into());
                    self.ep.reregister(now);
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn run_task(&mut self, task: Task) {
        let now = self.now;
        let r = match task {
            Task::Accept(s) => self.ep.accept(now, s, Some(&Body::sdp(b"v=0\r\n".to_vec()))),
            Task::Reject(s) => self.ep.reject(now, s, 480, "", &[]),
            Task::Hangup(s) => self.ep.hangup(now, s),
        };
        self.notes.push(format!("{task:?}: {r:?}"));
    }

    /// Loses every bit of state and starts again with the same AOR.
    fn crash(&mut self) {
        let inc = self.incarnation;
        for ((i, _), s) in &mut self.book.sent {
            if *i == inc && s.outcomes == 0 {
                s.crashed = true;
            }
        }
        for ((i, _), c) in &mut self.book.calls {
            if *i == inc && c.ends == 0 {
                c.crashed = true;
            }
        }
        self.incarnation += 1;
        self.tasks.clear();
        self.out.clear();
        while self.ep.poll_output().is_some() {}
        let seed = self.rng.next_u64();
        self.ep = Self::boot(self.id, &self.config, seed, self.incarnation, self.now);
        self.notes.push(format!("crash: restarted as incarnation {}", self.incarnation));
    }

    /// The network healed and the chaos is over: no more actions or
    /// faults; the application hangs up every call and answers no more.
    fn calm(&mut self) {
        self.acting = false;
        self.next_action = None;
        self.crashes.clear();
        self.cuts.clear();
        self.tasks.clear();
        let now = self.now;
        for s in self.live_calls() {
            let r = self.ep.hangup(now, s);
            self.notes.push(format!("calm: hangup {s:?}: {r:?}"));
        }
        self.pump();
    }
}

impl Node for Chaos {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.now = now;
        if self.cut(now) {
            let first = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
            self.notes.push(format!("cut: in {}", String::from_utf8_lossy(first)));
            return;
        }
        self.ep.handle_datagram(now, addr(self.id), addr(from), bytes);
        self.pump();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        while self.crashes.front().is_some_and(|&t| t <= now) {
            self.crashes.pop_front();
            self.crash();
        }
        self.ep.handle_timeout(now);
        self.pump();
        while let Some((&(at, seq), &task)) = self.tasks.iter().next() {
            if at > now {
                break;
            }
            self.tasks.remove(&(at, seq));
            self.run_task(task);
            self.pump();
        }
        if self.acting {
            match self.next_action {
                Some(t) if t <= now => {
                    self.act();
                    self.pump();
                    let after = self.millis(1000, 15_000);
                    self.next_action = Some(now + after);
                }
                None => {
                    let after = self.millis(1000, 15_000);
                    self.next_action = Some(now + after);
                }
                _ => {}
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let action = if self.acting { Some(self.next_action.unwrap_or(self.now)) } else { None };
        [self.ep.poll_timeout(), action, self.tasks.keys().next().map(|k| k.0), self.crashes.front().copied()]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.pump();
        self.out.pop_front()
    }

    fn drain_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

/// One seed's network and faults.
struct Plan {
    link: LinkConfig,
    spikes: Vec<(Duration, Duration, Duration)>,
}

fn plan(seed: u64, t0: Instant, nodes: &mut [Chaos]) -> Plan {
    let mut rng = Rng::new(seed ^ 0xc4a0_5eed);
    let mut draw = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo).max(1);
    #[allow(clippy::cast_precision_loss)]
    let link = LinkConfig {
        latency: Duration::from_millis(draw(5, 60)),
        jitter: Duration::from_millis(draw(0, 150)),
        loss: draw(0, 301) as f64 / 1000.0,
        duplicate: draw(0, 101) as f64 / 1000.0,
    };
    let mut spikes = Vec::new();
    for _ in 0..draw(0, 4) {
        let from = Duration::from_secs(draw(0, CHAOS.as_secs()));
        spikes.push((from, from + Duration::from_secs(draw(1, 30)), Duration::from_millis(draw(300, 4000))));
    }
    for n in nodes.iter_mut() {
        // Partitions: the server rarely, an endpoint up to twice.
        let cuts = if n.id == 0 { u64::from(draw(0, 100) < 15) } else { draw(0, 3) };
        for _ in 0..cuts {
            let from = t0 + Duration::from_secs(draw(0, CHAOS.as_secs()));
            n.cuts.push((from, from + Duration::from_secs(draw(5, 121))));
        }
        // Crash-restarts: the server in one seed of ten, an endpoint in one of four.
        let odds = if n.id == 0 { 10 } else { 25 };
        if draw(0, 100) < odds {
            n.crashes.push_back(t0 + Duration::from_secs(draw(1, CHAOS.as_secs())));
        }
    }
    Plan { link, spikes }
}

fn bindings(s: &Sim<Chaos>, id: NodeId) -> Vec<String> {
    let aor = format!("sip:{}@{DOMAIN}", user(id));
    let uri = Uri::parse(&aor).unwrap();
    match s.nodes[0].ep.registrar().map(|r| r.targets(s.now(), &uri)) {
        Some(sipline::registrar::Lookup::Aor(b)) => b.into_iter().map(|b| b.contact).collect(),
        _ => Vec::new(),
    }
}

/// Runs one seed to the end and checks every invariant; returns the trace.
fn chaos(seed: u64) -> String {
    let t0 = Instant::now();
    let mut nodes: Vec<Chaos> = (0..=USERS)
        .map(|id| Chaos::new(id, if id == 0 { server_config() } else { endpoint_config(id) }, seed, t0))
        .collect();
    let plan = plan(seed, t0, &mut nodes);
    let mut s = Sim::new(nodes, plan.link, seed, t0);
    s.spikes = plan.spikes;
    s.note(&format!("link {:?}", plan.link));
    s.run(CHAOS, 5_000_000);

    // The network heals; the applications hang up and stop acting.
    s.set_link(LinkConfig::default());
    s.spikes.clear();
    s.note("heal");
    for n in &mut s.nodes {
        n.calm();
    }
    let until = s.elapsed() + SETTLE;
    s.run(until, 5_000_000);
    check_settled(&s);

    // Everyone shuts down (unregistering); then nothing may be left.
    let now = s.now();
    for n in s.nodes.iter_mut().skip(1) {
        n.ep.shutdown(now);
        n.pump();
    }
    s.note("shutdown");
    let until = s.elapsed() + Duration::from_secs(120);
    s.run(until, 5_000_000);
    check_empty(&s);
    s.trace().to_owned()
}

/// After the heal: calls, messages and registrations.
fn check_settled(s: &Sim<Chaos>) {
    for n in &s.nodes {
        // No session left: none confirmed here and unknown there.
        assert_eq!(n.ep.session_count(), 0, "node {}: sessions left after the heal", n.id);
        for ((inc, sid), c) in &n.book.calls {
            if c.crashed {
                assert!(c.ends <= 1, "node {} {sid:?}/{inc}: ended twice", n.id);
            } else {
                assert_eq!(c.ends, 1, "node {} {sid:?}/{inc}: {c:?} not ended exactly once", n.id);
            }
        }
        for ((inc, id), m) in &n.book.sent {
            if m.crashed {
                assert!(m.outcomes <= 1, "node {} {id:?}/{inc}: two outcomes", n.id);
            } else {
                assert_eq!(m.outcomes, 1, "node {} {id:?}/{inc} ({}): not exactly one outcome", n.id, m.body);
            }
            // 2xx means delivered to the target's application.
            if m.ok {
                let got = s.nodes[m.to].book.delivered.iter().filter(|(_, b, _)| *b == m.body).count();
                assert!(got >= 1, "node {}: {} answered 2xx, never delivered", n.id, m.body);
            }
        }
        // No incarnation of an application got a MESSAGE twice while the
        // server transaction of the first delivery lived: its Timer J
        // (64·T1, §17.2.2) absorbs every retransmission sent before the
        // client's Timer F; only a copy the network held past that (a delay
        // spike on the last retransmission) makes a new transaction.
        let j = sipline::transaction::TimerConfig::default().transaction_timeout();
        let mut first: BTreeMap<(u32, &str), Instant> = BTreeMap::new();
        for (inc, body, at) in &n.book.delivered {
            match first.get(&(*inc, body.as_str())) {
                Some(t) => assert!(*at - *t > j, "node {}: {body} delivered twice to incarnation {inc}", n.id),
                None => {
                    first.insert((*inc, body.as_str()), *at);
                }
            }
        }
    }
    // The registrar holds exactly what each endpoint believes.
    for n in s.nodes.iter().skip(1) {
        let held = bindings(s, n.id);
        match n.ep.registration() {
            Some(RegistrationState::Registered { contact, .. }) => {
                assert_eq!(held.len(), 1, "node {}: registered, bindings {held:?}", n.id);
                assert_eq!(&held[0], contact, "node {}: the binding is the endpoint's Contact", n.id);
            }
            Some(RegistrationState::Unregistered) => {
                assert!(held.is_empty(), "node {}: unregistered, bindings {held:?}", n.id);
            }
            other => panic!("node {}: registration still {other:?} after the heal", n.id),
        }
    }
}

/// After shutdown: every table empty, no timer armed.
fn check_empty(s: &Sim<Chaos>) {
    for n in &s.nodes {
        let t = n.ep.tables();
        assert_eq!(t, Tables::default(), "node {}: tables left after shutdown", n.id);
        if n.id != 0 {
            assert_eq!(n.book.shut_down, 1, "node {}: ShutDown once", n.id);
            assert_eq!(n.ep.poll_timeout(), None, "node {}: a timer left after shutdown", n.id);
        }
    }
    for id in 1..=USERS {
        assert!(bindings(s, id).is_empty(), "{} still bound after shutdown", user(id));
    }
}

#[test]
fn the_whole_system_under_chaos_keeps_every_invariant() {
    for_each_seed(30, |seed| {
        chaos(seed);
    });
}

/// The chaos simulation's first seeds all failed when it was written
/// (issue 16): transactions left behind after shutdown — an INVITE client
/// transaction in Proceeding whose session had ended or whose CANCEL got
/// no answer (now bounded by 64·T1, §9.1), and proxy branches that rang
/// and went silent (now cancelled by Timer C, §16.8). They replay by name.
///
/// Later seeds found three more: a restarted server dropped an in-dialog
/// request that was its first (49, 218, 273, …: its state was made only by
/// requests outside dialogs); a retransmitted provisional lifted the §9.1
/// bound of a cancelled INVITE (212, 252, 387, …); and an INVITE given up
/// while still Calling lost its timer B at the first provisional (533, 608).
#[test]
fn regression_chaos_seeds_that_leaked_transactions() {
    for seed in (0..10).chain([49, 212, 218, 252, 273, 387, 533, 608, 873]) {
        chaos(seed);
    }
}

#[test]
fn same_seed_same_trace_byte_for_byte() {
    let a = chaos(3);
    let b = chaos(3);
    assert!(a.lines().count() > 1000, "a trace worth comparing");
    assert!(a == b, "traces differ");
    assert!(chaos(4) != a);
}

/// The chaos is real: over a few seeds, datagrams are lost and duplicated,
/// nodes are cut off and crash, calls are answered, rejected and
/// cancelled, MESSAGEs are delivered — a run where none of this happens
/// would prove nothing.
#[test]
fn the_faults_and_the_traffic_actually_happen() {
    let mut all = String::new();
    for seed in 0..6 {
        all.push_str(&chaos(seed));
    }
    for what in
        [" lost ", " dup ", "cut: ", "crash: ", " message m", "answered 200", "Ended(Cancelled)", "Ended(Rejected)"]
    {
        assert!(all.contains(what), "no {what:?} in six seeds");
    }
}
