//! INVITE sessions between endpoints in the simulated network (virtual
//! time, seeded loss, duplication and reordering): answered calls with the
//! ACK and BYE on the wire, 2xx retransmission until the ACK (§13.3.1.4),
//! CANCEL before the answer and racing it (§9), rejection, re-INVITE both
//! ways and glare (§14), requests inside the dialog, 481/500 (§12.2.2),
//! forked 2xx (§13.2.2.4), digest on INVITE, and sessions freed at the end.

use sipline::auth::{Algorithm, DigestChallenge, DigestCredentials, Secret};
use sipline::endpoint::{
    Body, Endpoint, EndpointConfig, EndpointState, Event, Output, RegistrationConfig, Request, RequestError,
    SessionEnd, SessionEvent, SessionId, Tables,
};
use sipline::message::Message;
use sipline::transport::Transport;
use sipline_tests::sim::{for_each_seed, LinkConfig, Node, NodeId, Sim};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the application behind an endpoint does with an event.
type Policy = Box<dyn FnMut(&mut Endpoint, Instant, &Event)>;

/// One endpoint as a simulation node at 192.0.2.(id+1):5060.
struct Ua {
    ep: Endpoint,
    now: Instant,
    events: Vec<(Instant, Event)>,
    policy: Policy,
    out: VecDeque<(NodeId, Vec<u8>)>,
    /// Every message sent, in order (text), for assertions on the wire.
    wire: Vec<String>,
    /// The first line of every message received, in order.
    received: Vec<String>,
    /// Every message sent (`> …`, dropped or not) and received (`< …`),
    /// with when.
    log: Vec<(Instant, String)>,
    /// Outgoing messages whose first line starts with this are dropped
    /// (this many times).
    drop: Option<(&'static str, usize)>,
}

fn addr(id: NodeId) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

fn node_of(a: SocketAddr) -> Option<NodeId> {
    match a.ip() {
        std::net::IpAddr::V4(v4) => Some(usize::from(v4.octets()[3]) - 1),
        std::net::IpAddr::V6(_) => None,
    }
}

fn uri(id: NodeId, user: &str) -> String {
    format!("sip:{user}@{}", addr(id))
}

impl Ua {
    fn new(id: NodeId, user: &str, now: Instant, setup: impl FnOnce(&mut EndpointConfig), policy: Policy) -> Ua {
        let mut c = EndpointConfig::new(&uri(id, user));
        c.seed = 7 + id as u64;
        setup(&mut c);
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(id));
        ep.start(now);
        Ua {
            ep,
            now,
            events: Vec::new(),
            policy,
            out: VecDeque::new(),
            wire: Vec::new(),
            received: Vec::new(),
            log: Vec::new(),
            drop: None,
        }
    }

    fn pump(&mut self) {
        loop {
            let mut events = Vec::new();
            while let Some(o) = self.ep.poll_output() {
                match o {
                    Output::Datagram { remote, bytes, .. } => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        self.log.push((self.now, format!("> {text}")));
                        if let Some((prefix, n)) = &mut self.drop {
                            if *n > 0 && text.starts_with(*prefix) {
                                *n -= 1;
                                self.wire.push(format!("(dropped) {text}"));
                                continue;
                            }
                        }
                        self.wire.push(text);
                        if let Some(to) = node_of(remote) {
                            self.out.push_back((to, bytes.to_vec()));
                        }
                    }
                    Output::Event(e) => events.push(e),
                    _ => {}
                }
            }
            if events.is_empty() {
                return;
            }
            for e in events {
                (self.policy)(&mut self.ep, self.now, &e);
                self.events.push((self.now, e));
            }
        }
    }

    fn sent(&self, prefix: &str) -> Vec<&String> {
        self.wire.iter().filter(|m| m.starts_with(prefix)).collect()
    }

    fn session_events(&self) -> Vec<SessionEvent> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Session { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn ended(&self) -> Option<SessionEnd> {
        self.session_events().into_iter().find_map(|e| match e {
            SessionEvent::Ended(why) => Some(why),
            _ => None,
        })
    }
}

impl Node for Ua {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.now = now;
        let first = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
        self.received.push(String::from_utf8_lossy(first).into_owned());
        self.log.push((now, format!("< {}", String::from_utf8_lossy(bytes))));
        let local = self.ep.transport().listeners()[0].1;
        self.ep.handle_datagram(now, local, addr(from), bytes);
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
        self.pump();
        self.out.pop_front()
    }
    fn drain_events(&mut self) -> Vec<String> {
        Vec::new()
    }
}

const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\n";
const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 192.0.2.2\r\n";

/// Bob's application: ring, then answer with `ANSWER`.
fn answering() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
    })
}

/// Does nothing.
fn idle() -> Policy {
    Box::new(|_, _, _| {})
}

fn sim(alice: Policy, bob: Policy, link: LinkConfig, seed: u64) -> Sim<Ua> {
    let t0 = Instant::now();
    let a = Ua::new(0, "alice", t0, |_| {}, alice);
    let b = Ua::new(1, "bob", t0, |_| {}, bob);
    Sim::new(vec![a, b], link, seed, t0)
}

fn invite(s: &mut Sim<Ua>) -> SessionId {
    let now = s.now();
    let call = s.nodes[0].ep.invite(now, Request::invite(&uri(1, "bob"), "application/sdp", OFFER.to_vec()));
    s.nodes[0].pump();
    call.unwrap()
}

/// Runs the simulation `secs` of virtual time further.
fn go(s: &mut Sim<Ua>, secs: u64) {
    let until = s.elapsed() + Duration::from_secs(secs);
    s.run(until, 1_000_000);
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

fn cseq(msg: &str) -> u32 {
    header(msg, "CSeq").and_then(|c| c.split(' ').next()).unwrap().parse().unwrap()
}

#[test]
fn answered_call_acked_and_hung_up_on_a_lossy_network() {
    for_each_seed(20, |seed| {
        let mut s = sim(idle(), answering(), LinkConfig::lossy(), seed);
        let call = invite(&mut s);
        go(&mut s, 40);
        answered_call_then_hangup(&mut s, call);
    });
}

/// Seeds once reported as failures (issue 16: `session_confirmed` was
/// `None`): every copy of the ACK was lost, so Bob ended the session after
/// 64·T1 (§13.3.1.4) and his BYE ended Alice's. They replay here by name.
#[test]
fn regression_every_ack_lost_bob_ends_with_no_ack_and_bye() {
    let mut no_ack = 0;
    for seed in [2970, 3670, 4717, 7644, 9808, 11448, 12449, 15140, 15551, 16640, 19652] {
        let mut s = sim(idle(), answering(), LinkConfig::lossy(), seed);
        let call = invite(&mut s);
        go(&mut s, 40);
        no_ack += usize::from(s.nodes[1].ended() == Some(SessionEnd::NoAck));
        answered_call_then_hangup(&mut s, call);
    }
    assert!(no_ack > 0, "no seed lost every ACK: pick new ones with scripts/sim-soak");
}

/// An answered call over a lossy link, checked against what §13 allows,
/// then hung up by Alice.
fn answered_call_then_hangup(s: &mut Sim<Ua>, call: SessionId) {
    let alice = &s.nodes[0];
    let answered = alice.session_events().into_iter().find_map(|e| match e {
        SessionEvent::Answered(r) => Some(r),
        _ => None,
    });
    let Some(answered) = answered else {
        // 30 % loss can defeat a whole INVITE transaction (Timer B).
        assert!(matches!(alice.ended(), Some(SessionEnd::Failed(RequestError::Timeout))), "{}", s.trace());
        return;
    };
    assert_eq!(answered.code, 200);
    assert!(Message::parse(&answered.bytes).unwrap().body() == ANSWER);
    // §13.2.2.4: the ACK reuses the INVITE's CSeq number, with a new branch.
    let invite = alice.sent("INVITE ")[0].clone();
    let ack = alice.sent("ACK ")[0].clone();
    assert_eq!(cseq(&ack), cseq(&invite));
    assert!(header(&invite, "Contact").is_some_and(|c| c.contains("192.0.2.1:5060")), "{invite}");
    assert_ne!(header(&ack, "Via"), header(&invite, "Via"));
    assert!(ack.starts_with("ACK sip:bob@192.0.2.2:5060 "), "Request-URI = remote target: {ack}");
    // Bob's session is confirmed exactly when an ACK reached him. If none
    // did, he retransmitted his 200 until 64·T1, then ended the session
    // (NoAck) with a BYE (§13.3.1.4); Alice's then ends when that BYE
    // reaches her, and stays confirmed if every copy of it was lost.
    let bob = &s.nodes[1];
    let bob_got_ack = bob.received.iter().any(|l| l.starts_with("ACK "));
    let confirmed = bob.session_events().iter().any(|e| matches!(e, SessionEvent::Confirmed { .. }));
    assert_eq!(confirmed, bob_got_ack, "Bob confirmed iff an ACK reached him\n{}", s.trace());
    if !confirmed {
        assert_eq!(bob.ended(), Some(SessionEnd::NoAck), "{}", s.trace());
        // One BYE (retransmitted by Timer E while unanswered: §17.1.2.2).
        let byes = bob.sent("BYE ");
        assert!(!byes.is_empty() && byes.iter().all(|b| *b == byes[0]), "§13.3.1.4: BYE after 64·T1");
        let bye_arrived = alice.received.iter().any(|l| l.starts_with("BYE "));
        if bye_arrived {
            assert_eq!(alice.ended(), Some(SessionEnd::PeerHungUp));
            assert_eq!(alice.ep.session_confirmed(call), None);
        } else {
            assert_eq!(alice.ep.session_confirmed(call), Some(true));
        }
        return;
    }
    assert_eq!(alice.ep.session_confirmed(call), Some(true));
    let now = s.now();
    s.nodes[0].ep.hangup(now, call).unwrap();
    go(s, 200);
    let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
    let bye = alice.sent("BYE ")[0].clone();
    assert_eq!(cseq(&bye), cseq(&invite) + 1, "§12.2.1.1");
    assert_eq!(alice.ended(), Some(SessionEnd::HungUp));
    // A BYE lost 11 times ends Alice's side alone (Timer F); Bob's
    // stays (his application would time it out).
    if bob.ended().is_some() {
        assert_eq!(bob.ended(), Some(SessionEnd::PeerHungUp));
        assert_eq!(bob.ep.session_count(), 0);
    }
    assert_eq!(alice.ep.session_count(), 0);
}

#[test]
fn lost_acks_get_the_2xx_again_at_t1_doubling_to_t2_then_bye() {
    let mut s = sim(idle(), answering(), LinkConfig::default(), 1);
    s.nodes[0].drop = Some(("ACK ", usize::MAX));
    invite(&mut s);
    go(&mut s, 60);
    let bob = &s.nodes[1];
    let oks: Vec<_> = bob.wire.iter().filter(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE")).collect();
    // 200 at 0, then T1·(1, 2, 4, 8, 8, …) until 64·T1 = 32 s: 0.5, 1.5,
    // 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5 → 11 copies in all.
    assert_eq!(oks.len(), 11, "{}", s.trace());
    assert_eq!(bob.ended(), Some(SessionEnd::NoAck));
    assert_eq!(bob.sent("BYE ").len(), 1, "§13.3.1.4: BYE after 64·T1");
    // Alice answered every copy with an ACK (all dropped here) and then
    // the BYE with 200.
    assert_eq!(s.nodes[0].wire.iter().filter(|m| m.starts_with("(dropped) ACK")).count(), 11);
    assert_eq!(s.nodes[0].ended(), Some(SessionEnd::PeerHungUp));
    assert_eq!(bob.ep.session_count(), 0);
}

#[test]
fn retransmission_stops_once_the_ack_arrives() {
    let mut s = sim(idle(), answering(), LinkConfig::default(), 1);
    s.nodes[0].drop = Some(("ACK ", 2));
    invite(&mut s);
    go(&mut s, 60);
    let bob = &s.nodes[1];
    let oks = bob.wire.iter().filter(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE")).count();
    assert_eq!(oks, 3, "the first two ACKs lost, the third stops it:\n{}", s.trace());
    assert!(bob.session_events().iter().any(|e| matches!(e, SessionEvent::Confirmed { .. })));
    assert_eq!(bob.ended(), None);
}

#[test]
fn cancel_waits_for_a_provisional_and_ends_both_sides() {
    // Bob rings and never answers; Alice hangs up at once, before any
    // provisional: §9.1 holds the CANCEL until the 100/180.
    let ringing: Policy = Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
        }
    });
    let mut s = sim(idle(), ringing, LinkConfig::default(), 1);
    let call = invite(&mut s);
    let now = s.now();
    s.nodes[0].ep.hangup(now, call).unwrap();
    s.nodes[0].pump();
    assert!(s.nodes[0].sent("CANCEL ").is_empty(), "no CANCEL before a provisional");
    go(&mut s, 40);
    let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
    let cancel = alice.sent("CANCEL ")[0].clone();
    let invite = alice.sent("INVITE ")[0].clone();
    assert_eq!(header(&cancel, "Via"), header(&invite, "Via"), "§9.1: the INVITE's top Via");
    assert_eq!(cseq(&cancel), cseq(&invite));
    assert!(bob.wire.iter().any(|m| m.starts_with("SIP/2.0 487")), "§9.2: 487 to the INVITE");
    assert!(bob.wire.iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains(" CANCEL\r\n")));
    assert_eq!(alice.ended(), Some(SessionEnd::Cancelled));
    assert_eq!(bob.ended(), Some(SessionEnd::Cancelled));
    assert_eq!((alice.ep.session_count(), bob.ep.session_count()), (0, 0));
}

#[test]
fn a_200_racing_the_cancel_is_acked_then_byed() {
    // Bob answers 1 s after ringing; Alice cancels when the 180 arrives,
    // on a link slow enough that the CANCEL and the 200 cross.
    let slow_answer: Policy = Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
    });
    let cancel_on_ring: Policy = Box::new(|ep, now, e| {
        if let Event::Session { session, event: SessionEvent::Progress(r) } = e {
            if r.code == 180 {
                ep.hangup(now, *session).unwrap();
            }
        }
    });
    let link = LinkConfig { latency: Duration::from_millis(300), ..LinkConfig::default() };
    let mut s = sim(cancel_on_ring, slow_answer, link, 1);
    invite(&mut s);
    go(&mut s, 60);
    let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
    let cancels = alice.sent("CANCEL ");
    assert!(!cancels.is_empty() && cancels.iter().all(|c| *c == cancels[0]), "one CANCEL (and its copies)");
    assert!(alice.session_events().iter().any(|e| matches!(e, SessionEvent::Answered(_))));
    // The 2xx is ACKed (each copy of it with the same ACK)…
    let acks = alice.sent("ACK ");
    assert!(!acks.is_empty() && acks.iter().all(|a| *a == acks[0]));
    // …and ended with BYE (one request, perhaps retransmitted).
    let byes = alice.sent("BYE ");
    assert!(!byes.is_empty() && byes.iter().all(|b| *b == byes[0]));
    assert_eq!(alice.ended(), Some(SessionEnd::HungUp));
    assert_eq!(bob.ended(), Some(SessionEnd::PeerHungUp));
}

#[test]
fn rejection_carries_its_headers_and_ends_the_session() {
    let busy: Policy = Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.reject(now, *session, 486, "Busy Here", &[("Retry-After", "30")]).unwrap();
        }
    });
    let mut s = sim(idle(), busy, LinkConfig::default(), 1);
    invite(&mut s);
    go(&mut s, 60);
    let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
    match alice.ended() {
        Some(SessionEnd::Failed(RequestError::Failure(r))) => {
            assert_eq!(r.code, 486);
            let text = String::from_utf8_lossy(&r.bytes).into_owned();
            assert_eq!(header(&text, "Retry-After"), Some("30"));
        }
        other => panic!("{other:?}"),
    }
    // §17.1.1.3: the transaction ACKs a failure; the session sends none.
    assert_eq!(alice.sent("ACK ").len(), 1);
    assert_eq!(bob.ended(), Some(SessionEnd::Rejected));
    assert_eq!(bob.ep.session_count(), 0);
}

#[test]
fn an_untouched_incoming_session_gets_480() {
    let mut s = sim(idle(), idle(), LinkConfig::default(), 1);
    invite(&mut s);
    go(&mut s, 60);
    assert!(s.nodes[1].wire.iter().any(|m| m.starts_with("SIP/2.0 480")));
    assert_eq!(s.nodes[1].ended(), Some(SessionEnd::Unanswered));
    assert!(matches!(s.nodes[0].ended(), Some(SessionEnd::Failed(RequestError::Failure(r))) if r.code == 480));
}

/// Both sides establish a call; returns the two session handles.
fn established(link: LinkConfig, alice: Policy, bob: Policy) -> (Sim<Ua>, SessionId, SessionId) {
    let mut s = sim(alice, bob, link, 3);
    let a = invite(&mut s);
    go(&mut s, 5);
    let b = s.nodes[1]
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::IncomingSession { session, .. } => Some(*session),
            _ => None,
        })
        .unwrap();
    assert!(s.nodes[1].session_events().iter().any(|e| matches!(e, SessionEvent::Confirmed { .. })));
    (s, a, b)
}

/// Accepts incoming sessions and re-INVITEs.
fn accepting_all() -> Policy {
    Box::new(|ep, now, e| match e {
        Event::IncomingSession { session, .. } => ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap(),
        Event::Session { session, event: SessionEvent::Reoffer { .. } } => {
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
        _ => {}
    })
}

#[test]
fn reinvite_both_ways_refreshes_the_target() {
    let (mut s, a, b) = established(LinkConfig::default(), accepting_all(), accepting_all());
    let now = s.now();
    s.nodes[0].ep.reinvite(now, a, Some(Body::sdp(&b"v=0 new"[..]))).unwrap();
    s.nodes[0].pump();
    go(&mut s, 10);
    assert!(s.nodes[1]
        .session_events()
        .iter()
        .any(|e| matches!(e, SessionEvent::Reoffer { body: Some(b), .. } if b.bytes == b"v=0 new")));
    assert!(s.nodes[0].session_events().iter().any(|e| matches!(e, SessionEvent::Updated(Ok(r)) if r.code == 200)));
    let reinvites = s.nodes[0].sent("INVITE ");
    assert_eq!(reinvites.len(), 2);
    assert!(header(reinvites[1], "To").unwrap().contains("tag="), "in the dialog");
    assert_eq!(cseq(reinvites[1]), cseq(reinvites[0]) + 1);
    // And from Bob's side: his first request in the dialog takes CSeq 1.
    let now = s.now();
    s.nodes[1].ep.reinvite(now, b, None).unwrap();
    s.nodes[1].pump();
    go(&mut s, 20);
    let bobs = s.nodes[1].sent("INVITE ");
    assert_eq!(bobs.len(), 1);
    assert!(bobs[0].starts_with("INVITE sip:alice@192.0.2.1:5060 "));
    assert!(s.nodes[1].session_events().iter().any(|e| matches!(e, SessionEvent::Updated(Ok(_)))));
    assert_eq!(s.nodes[0].ended(), None);
}

#[test]
fn glare_gets_491_and_both_retry_after_the_back_off() {
    let (mut s, a, b) = established(LinkConfig::default(), accepting_all(), accepting_all());
    let now = s.now();
    s.nodes[0].ep.reinvite(now, a, Some(Body::sdp(&b"alice"[..]))).unwrap();
    s.nodes[1].ep.reinvite(now, b, Some(Body::sdp(&b"bob"[..]))).unwrap();
    go(&mut s, 30);
    for n in &s.nodes {
        assert!(n.wire.iter().any(|m| m.starts_with("SIP/2.0 491")), "§14.2: 491 on glare");
        assert!(
            n.session_events().iter().any(|e| matches!(e, SessionEvent::Updated(Ok(_)))),
            "retried after the back-off: {}",
            s.trace()
        );
    }
    // §14.1: Alice owns the Call-ID (2.1–4 s), Bob not (0–2 s): Bob's retry
    // goes first.
    let retry = |n: &Ua| n.sent("INVITE ").len();
    assert_eq!((retry(&s.nodes[0]), retry(&s.nodes[1])), (3, 2));
}

#[test]
fn requests_inside_the_dialog_carry_the_session() {
    let (mut s, a, b) = established(
        LinkConfig::default(),
        accepting_all(),
        Box::new(|ep, now, e| match e {
            Event::IncomingSession { session, .. } => ep.accept(now, *session, None).unwrap(),
            Event::Incoming { incoming, .. } => ep.respond(now, *incoming, 200, "OK").unwrap(),
            _ => {}
        }),
    );
    let now = s.now();
    s.nodes[0].ep.send_in_session(now, a, Request::message("", "text/plain", b"in dialog".to_vec())).unwrap();
    s.nodes[0].pump();
    go(&mut s, 10);
    let got = s.nodes[1].events.iter().find_map(|(_, e)| match e {
        Event::Message { session, body, .. } => Some((*session, body.clone())),
        _ => None,
    });
    assert_eq!(got, Some((Some(b), b"in dialog".to_vec())));
    let msg = s.nodes[0].sent("MESSAGE ")[0].clone();
    assert!(header(&msg, "To").unwrap().contains("tag="), "{msg}");
    assert!(s.nodes[0].events.iter().any(|(_, e)| matches!(e, Event::Outcome { result: Ok(r), .. } if r.code == 200)));
}

/// One endpoint fed raw datagrams from 192.0.2.9.
struct Raw {
    ep: Endpoint,
    now: Instant,
    sent: Vec<String>,
    /// When each of `sent` went.
    sent_at: Vec<Instant>,
    events: Vec<Event>,
}

const FAR: &str = "192.0.2.9:5060";

impl Raw {
    fn new(setup: impl FnOnce(&mut EndpointConfig)) -> Raw {
        let now = Instant::now();
        let mut c = EndpointConfig::new(&uri(1, "bob"));
        c.seed = 5;
        setup(&mut c);
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(1));
        ep.start(now);
        let mut r = Raw { ep, now, sent: Vec::new(), sent_at: Vec::new(), events: Vec::new() };
        r.drain();
        r
    }

    fn drain(&mut self) {
        while let Some(o) = self.ep.poll_output() {
            match o {
                Output::Datagram { bytes, .. } => {
                    self.sent.push(String::from_utf8_lossy(&bytes).into_owned());
                    self.sent_at.push(self.now);
                }
                Output::Event(e) => self.events.push(e),
                _ => {}
            }
        }
    }

    /// Lets time pass up to `until`, timer by timer.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..100_000 {
            match self.ep.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.ep.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.ep.handle_timeout(self.now);
        self.drain();
    }

    /// The messages sent whose first line starts with `prefix`.
    fn sent_starting(&self, prefix: &str) -> Vec<&String> {
        self.sent.iter().filter(|m| m.starts_with(prefix)).collect()
    }

    fn feed(&mut self, text: &str) -> Vec<String> {
        let before = self.sent.len();
        self.ep.handle_datagram(self.now, addr(1), FAR.parse().unwrap(), text.as_bytes());
        self.drain();
        self.sent[before..].to_vec()
    }
}

fn raw_request(method: &str, to_tag: &str, seq: u32, branch: &str) -> String {
    let to_tag = if to_tag.is_empty() { String::new() } else { format!(";tag={to_tag}") };
    format!(
        "{method} sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {FAR};branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: <sip:bob@192.0.2.2>{to_tag}\r\n\
Call-ID: raw-call\r\nCSeq: {seq} {method}\r\nContact: <sip:carol@{FAR}>\r\n\
Record-Route: <sip:p1.example.com;lr>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn unknown_dialogs_get_481_and_old_cseqs_500() {
    let mut r = Raw::new(|_| {});
    let out = r.feed(&raw_request("BYE", "nope", 2, "b1"));
    assert!(out[0].starts_with("SIP/2.0 481"), "{out:?}");
    let out = r.feed(&raw_request("CANCEL", "", 1, "nothing"));
    assert!(out[0].starts_with("SIP/2.0 481"), "§9.2: {out:?}");
    // An INVITE; accept it and take our tag from the 200.
    r.feed(&raw_request("INVITE", "", 10, "i1"));
    let s = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::IncomingSession { session, .. } => Some(*session),
            _ => None,
        })
        .unwrap();
    r.ep.accept(r.now, s, None).unwrap();
    r.drain();
    let ok = r.sent.iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap().clone();
    // §12.1.1: Record-Route copied, Contact added.
    assert_eq!(header(&ok, "Record-Route"), Some("<sip:p1.example.com;lr>"));
    assert_eq!(header(&ok, "Contact"), Some("<sip:bob@192.0.2.2:5060>"));
    let tag = header(&ok, "To").unwrap().split("tag=").nth(1).unwrap().to_owned();
    r.feed(&raw_request("ACK", &tag, 10, "a1"));
    // §12.2.2: CSeq 9 after 10 → 500; a request in the dialog with a wrong
    // From tag → 481.
    let out = r.feed(&raw_request("MESSAGE", &tag, 9, "x1"));
    assert!(out[0].starts_with("SIP/2.0 500"), "{out:?}");
    let wrong = raw_request("BYE", &tag, 12, "x2").replace("tag=c1", "tag=zz");
    assert!(r.feed(&wrong)[0].starts_with("SIP/2.0 481"));
    let out = r.feed(&raw_request("BYE", &tag, 11, "x3"));
    assert!(out[0].starts_with("SIP/2.0 200"));
    assert_eq!(r.ep.session_count(), 0);
}

fn raw_response(invite: &str, code: u16, to_tag: &str, extra: &str) -> String {
    let pick = |name: &str| header(invite, name).unwrap().to_owned();
    format!(
        "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
{extra}Content-Length: 0\r\n\r\n",
        pick("Via"),
        pick("From"),
        pick("To"),
        pick("Call-ID"),
        pick("CSeq")
    )
}

#[test]
fn a_second_forks_2xx_is_acked_and_byed() {
    let mut r = Raw::new(|_| {});
    let s =
        r.ep.invite(r.now, Request::invite(&format!("sip:carol@{FAR}"), "application/sdp", OFFER.to_vec())).unwrap();
    r.drain();
    let invite = r.sent.iter().find(|m| m.starts_with("INVITE")).unwrap().clone();
    r.feed(&raw_response(&invite, 200, "fork1", &format!("Contact: <sip:carol@{FAR}>\r\n")));
    r.feed(&raw_response(&invite, 200, "fork2", "Contact: <sip:carol2@192.0.2.9:5062>\r\n"));
    let acks: Vec<_> = r.sent.iter().filter(|m| m.starts_with("ACK")).collect();
    assert_eq!(acks.len(), 2, "{:?}", r.sent);
    assert!(header(acks[1], "To").unwrap().ends_with("tag=fork2"));
    let byes: Vec<_> = r.sent.iter().filter(|m| m.starts_with("BYE")).collect();
    assert_eq!(byes.len(), 1);
    assert!(byes[0].starts_with("BYE sip:carol2@192.0.2.9:5062 "), "{}", byes[0]);
    // The first fork's session goes on; a copy of its 2xx gets the same ACK.
    assert_eq!(r.ep.session_confirmed(s), Some(true));
    r.feed(&raw_response(&invite, 200, "fork1", &format!("Contact: <sip:carol@{FAR}>\r\n")));
    let acks: Vec<_> = r.sent.iter().filter(|m| m.starts_with("ACK")).cloned().collect();
    assert_eq!(acks.len(), 3);
    assert_eq!(acks[2], acks[0], "§13.2.2.4: the same ACK again");
}

#[test]
fn invite_challenged_with_407_keeps_its_dialog_identifiers() {
    let mut r = Raw::new(|c| c.credentials = vec![DigestCredentials::new("bob", "secret")]);
    r.ep.invite(r.now, Request::invite(&format!("sip:carol@{FAR}"), "application/sdp", OFFER.to_vec())).unwrap();
    r.drain();
    let first = r.sent.iter().find(|m| m.starts_with("INVITE")).unwrap().clone();
    let challenge = DigestChallenge::new("example.com", "n0nce", Algorithm::Md5).unwrap();
    let extra = format!("Proxy-Authenticate: {}\r\n", challenge.header_value());
    r.feed(&raw_response(&first, 407, "p", &extra));
    let invites: Vec<_> = r.sent.iter().filter(|m| m.starts_with("INVITE")).cloned().collect();
    assert_eq!(invites.len(), 2);
    let again = &invites[1];
    assert_eq!(header(again, "Call-ID"), header(&first, "Call-ID"));
    assert_eq!(header(again, "From"), header(&first, "From"), "same From tag (§22.2)");
    assert_eq!(cseq(again), cseq(&first) + 1);
    let creds = header(again, "Proxy-Authorization").unwrap();
    let parsed = Message::parse(again.as_bytes()).unwrap();
    let c = parsed.proxy_authorization().next().unwrap().unwrap();
    assert!(challenge.verify(&c, "INVITE", Secret::Password("secret")).is_ok(), "{creds}");
    r.feed(&raw_response(again, 200, "t", &format!("Contact: <sip:carol@{FAR}>\r\n")));
    let ack = r.sent.iter().find(|m| m.starts_with("ACK") && m.contains("tag=t")).unwrap();
    assert_eq!(cseq(ack), cseq(again));
    assert_eq!(header(ack, "Proxy-Authorization"), Some(creds), "§13.2.2.4: same credentials");
}

#[test]
fn many_calls_leave_nothing_behind() {
    let mut s = sim(idle(), answering(), LinkConfig::default(), 9);
    for _ in 0..200 {
        let call = invite(&mut s);
        go(&mut s, 2);
        let now = s.now();
        s.nodes[0].ep.hangup(now, call).unwrap();
        s.nodes[0].pump();
        go(&mut s, 4);
    }
    // Let every transaction and timer run out.
    go(&mut s, 1000);
    for n in &s.nodes {
        assert_eq!(n.ep.session_count(), 0);
        assert_eq!(n.ep.outstanding(), 0);
        assert_eq!(n.ep.poll_timeout(), None, "nothing left to time");
    }
    let ended =
        s.nodes[1].session_events().iter().filter(|e| matches!(e, SessionEvent::Ended(SessionEnd::PeerHungUp))).count();
    assert_eq!(ended, 200);
}

#[test]
fn glare_and_hangup_on_a_lossy_network_leave_nothing_behind() {
    for_each_seed(20, |seed| {
        let t0 = Instant::now();
        let a = Ua::new(0, "alice", t0, |_| {}, accepting_all());
        let b = Ua::new(1, "bob", t0, |_| {}, accepting_all());
        let mut s = Sim::new(vec![a, b], LinkConfig::lossy(), seed, t0);
        let call = invite(&mut s);
        go(&mut s, 40);
        let Some(bob_call) = s.nodes[1].events.iter().find_map(|(_, e)| match e {
            Event::IncomingSession { session, .. } => Some(*session),
            _ => None,
        }) else {
            return; // the INVITE never got through (Timer B)
        };
        if s.nodes[0].ended().is_some() || s.nodes[1].ended().is_some() {
            return; // lost before it was established (timeout or no ACK)
        }
        let now = s.now();
        // Both re-INVITE at once (glare), then Alice hangs up mid-way.
        let _ = s.nodes[0].ep.reinvite(now, call, Some(Body::sdp(&b"a2"[..])));
        let _ = s.nodes[1].ep.reinvite(now, bob_call, Some(Body::sdp(&b"b2"[..])));
        go(&mut s, 3);
        let now = s.now();
        let _ = s.nodes[0].ep.hangup(now, call);
        go(&mut s, 300);
        let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
        assert_eq!(alice.ep.session_count(), 0, "seed {seed}\n{}", s.trace());
        // Bob's ends by Alice's BYE, or (every BYE lost) stays for his
        // application to end; nothing else may keep it.
        if bob.ep.session_count() != 0 {
            assert!(alice.wire.iter().filter(|m| m.starts_with("BYE ")).count() >= 1);
        }
        assert_eq!(alice.ep.outstanding(), 0);
        assert_eq!(alice.ep.poll_timeout(), None, "seed {seed}: a timer left behind");
    });
}

#[test]
fn a_481_to_our_request_in_an_early_dialog_ends_it_and_answers_the_invite_487() {
    // §12.2.1.2: a 481 to a request inside the dialog ends it; the peer's
    // INVITE, still unanswered, gets 487 (§15.1.2) — else its server
    // transaction would wait for an answer forever (found by fuzzing the
    // user agent, fuzz/fuzz_targets/ua_inputs.rs).
    let mut r = Raw::new(|_| {});
    // No Record-Route: the INFO goes straight to the Contact (an address).
    r.feed(&raw_request("INVITE", "", 1, "inv").replace("Record-Route: <sip:p1.example.com;lr>\r\n", ""));
    let session = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::IncomingSession { session, .. } => Some(*session),
            _ => None,
        })
        .expect("an incoming session");
    r.ep.send_in_session(r.now, session, Request::new(sipline::message::Method::Info, "sip:ignored")).unwrap();
    r.drain();
    let info = r.sent.iter().rev().find(|m| m.starts_with("INFO ")).expect("the INFO").clone();
    let copy = |name: &str| {
        info.split("\r\n").find(|l| l.starts_with(&format!("{name}:"))).map(|l| format!("{l}\r\n")).unwrap_or_default()
    };
    let answer = format!(
        "SIP/2.0 481 Call/Transaction Does Not Exist\r\n{}{}{}{}{}Content-Length: 0\r\n\r\n",
        copy("Via"),
        copy("From"),
        copy("To"),
        copy("Call-ID"),
        copy("CSeq")
    );
    let out = r.feed(&answer);
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 487 ") && m.contains("CSeq: 1 INVITE")), "{out:?}");
    assert!(r.events.iter().any(|e| matches!(e,
        Event::Session { session: s, event: SessionEvent::Ended(SessionEnd::Failed(RequestError::Failure(f))) }
            if *s == session && f.code == 481)));
    // Timer H (64·T1) ends the INVITE's server transaction, ACK or not.
    for _ in 0..100 {
        match r.ep.poll_timeout() {
            Some(at) if at <= r.now + Duration::from_secs(40) => {
                r.now = r.now.max(at);
                r.ep.handle_timeout(r.now);
                r.drain();
            }
            _ => break,
        }
    }
    assert_eq!(r.ep.tables().server_transactions, 0, "{:?}", r.ep.tables());
    assert_eq!(r.ep.session_count(), 0);
}

// ----- shutdown while a session waits for its ACK (§15, §13.3.1.4) -----

/// An INVITE from Carol (no Record-Route: requests in the dialog go straight
/// to her Contact), accepted; returns the session and Bob's tag.
fn accepted_incoming(r: &mut Raw) -> (SessionId, String) {
    r.feed(&raw_request("INVITE", "", 1, "inv").replace("Record-Route: <sip:p1.example.com;lr>\r\n", ""));
    let session = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::IncomingSession { session, .. } => Some(*session),
            _ => None,
        })
        .expect("an incoming session");
    r.ep.accept(r.now, session, Some(&Body::sdp(ANSWER))).unwrap();
    r.drain();
    let ok = r.sent.iter().find(|m| m.starts_with("SIP/2.0 200")).expect("the 200").clone();
    let tag = header(&ok, "To").unwrap().split("tag=").nth(1).unwrap().to_owned();
    (session, tag)
}

fn ended_with(events: &[Event], session: SessionId) -> Option<SessionEnd> {
    events.iter().find_map(|e| match e {
        Event::Session { session: s, event: SessionEvent::Ended(why) } if *s == session => Some(why.clone()),
        _ => None,
    })
}

fn shut_down_events(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::ShutDown)).count()
}

/// Two hours pass: every transaction and timer runs out.
fn nothing_left_after_hours(r: &mut Raw) {
    let end = r.now + Duration::from_secs(7200);
    r.run_until(end);
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    assert_eq!(r.ep.tables(), Tables::default());
    assert_eq!(r.ep.poll_timeout(), None, "a timer left after shutdown");
    assert_eq!(shut_down_events(&r.events), 1, "ShutDown once");
}

#[test]
fn shutdown_holds_the_bye_of_an_unacknowledged_session_until_the_ack() {
    // §15: the callee MUST NOT send BYE on a confirmed dialog before the
    // ACK for its 2xx; shutdown used to send it at once.
    let mut r = Raw::new(|_| {});
    let (session, tag) = accepted_incoming(&mut r);
    let t0 = r.now;
    r.ep.shutdown(r.now);
    r.drain();
    assert!(r.sent_starting("BYE ").is_empty(), "no BYE before the ACK: {:?}", r.sent);
    assert_eq!(r.ep.state(), EndpointState::Draining);
    assert_eq!(r.ep.session_count(), 1);
    assert_eq!(shut_down_events(&r.events), 0);
    assert_eq!(ended_with(&r.events, session), None);
    // The 2xx goes on being retransmitted meanwhile (T1, then 2·T1).
    r.run_until(t0 + Duration::from_secs(2));
    assert_eq!(r.sent_starting("SIP/2.0 200").len(), 3, "{:?}", r.sent);
    assert!(r.sent_starting("BYE ").is_empty());
    // The ACK: the BYE goes right away, and shutdown finishes.
    let before = r.events.len();
    let out = r.feed(&raw_request("ACK", &tag, 1, "ack"));
    assert_eq!(out.len(), 1, "{out:?}");
    let bye = &out[0];
    assert!(bye.starts_with(&format!("BYE sip:carol@{FAR} ")), "{bye}");
    assert_eq!(header(bye, "Call-ID"), Some("raw-call"));
    assert!(header(bye, "From").unwrap().ends_with(&format!("tag={tag}")), "{bye}");
    assert!(header(bye, "To").unwrap().ends_with("tag=c1"), "{bye}");
    let after: Vec<&Event> = r.events[before..].iter().collect();
    assert!(matches!(after[0], Event::Session { event: SessionEvent::Confirmed { .. }, .. }), "{after:?}");
    assert_eq!(ended_with(&r.events, session), Some(SessionEnd::ShutDown));
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    assert_eq!(r.ep.session_count(), 0);
    assert_eq!(shut_down_events(&r.events), 1);
    // No 2xx after the ACK; the BYE only retransmitted (Timer E), itself.
    r.run_until(r.now + Duration::from_secs(60));
    assert_eq!(r.sent_starting("SIP/2.0 200").len(), 3);
    assert!(r.sent_starting("BYE ").iter().all(|b| *b == bye));
    nothing_left_after_hours(&mut r);
}

#[test]
fn shutdown_with_no_ack_byes_when_the_2xx_gives_up_at_64_t1() {
    let mut r = Raw::new(|_| {});
    let (session, _) = accepted_incoming(&mut r);
    let t0 = r.now;
    r.ep.shutdown(r.now);
    r.drain();
    let t1 = sipline::transaction::TimerConfig::default().t1;
    let give_up = t0 + t1 * 64;
    r.run_until(t0 + t1 * 63);
    assert!(r.sent_starting("BYE ").is_empty(), "no BYE before 64·T1: {:?}", r.sent);
    assert_eq!(r.ep.state(), EndpointState::Draining);
    // 0, then T1·(1, 2, 4, 8, 8, …) until 64·T1 = 32 s: 11 copies.
    assert_eq!(r.sent_starting("SIP/2.0 200").len(), 11);
    r.run_until(give_up);
    let byes: Vec<usize> = (0..r.sent.len()).filter(|&i| r.sent[i].starts_with("BYE ")).collect();
    assert_eq!(byes.len(), 1, "§13.3.1.4: BYE at 64·T1: {:?}", r.sent);
    assert_eq!(r.sent_at[byes[0]], give_up);
    assert_eq!(ended_with(&r.events, session), Some(SessionEnd::NoAck));
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    assert_eq!(shut_down_events(&r.events), 1);
    nothing_left_after_hours(&mut r);
}

#[test]
fn a_bye_from_the_caller_while_shutdown_waits_for_the_ack_ends_the_session() {
    let mut r = Raw::new(|_| {});
    let (session, tag) = accepted_incoming(&mut r);
    r.ep.shutdown(r.now);
    r.drain();
    // Other new requests are refused while shutting down…
    let out = r.feed(&raw_request("OPTIONS", "", 1, "opt"));
    assert!(out[0].starts_with("SIP/2.0 503"), "{out:?}");
    // …but the BYE of the session waiting for its ACK is taken (§15.1.2).
    let out = r.feed(&raw_request("BYE", &tag, 2, "bye"));
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 BYE")), "{out:?}");
    assert_eq!(ended_with(&r.events, session), Some(SessionEnd::PeerHungUp));
    assert!(r.sent_starting("BYE ").is_empty(), "no BYE of ours: {:?}", r.sent);
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    nothing_left_after_hours(&mut r);
}

#[test]
fn a_registered_endpoint_shuts_down_after_both_the_unregistration_and_the_ack() {
    let mut r = Raw::new(|c| c.registration = Some(RegistrationConfig::new(&format!("sip:{FAR}"))));
    let register = r.sent_starting("REGISTER ")[0].clone();
    r.feed(&raw_response(&register, 200, "reg", ""));
    assert_eq!(r.ep.state(), EndpointState::Established);
    let (session, tag) = accepted_incoming(&mut r);
    r.ep.shutdown(r.now);
    r.drain();
    let unregister = (*r.sent_starting("REGISTER ").last().unwrap()).clone();
    assert_eq!(header(&unregister, "Expires"), Some("0"));
    assert_eq!(r.ep.state(), EndpointState::Draining);
    // The ACK first: its BYE goes, the unregistration still pending.
    let out = r.feed(&raw_request("ACK", &tag, 1, "ack"));
    assert!(out[0].starts_with("BYE "), "{out:?}");
    assert_eq!(ended_with(&r.events, session), Some(SessionEnd::ShutDown));
    assert_eq!(r.ep.state(), EndpointState::Draining);
    r.feed(&raw_response(&unregister, 200, "reg", ""));
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    assert_eq!(shut_down_events(&r.events), 1);
    // And the other order: unregistered first, then the ACK ends it.
    let mut r = Raw::new(|c| c.registration = Some(RegistrationConfig::new(&format!("sip:{FAR}"))));
    let register = r.sent_starting("REGISTER ")[0].clone();
    r.feed(&raw_response(&register, 200, "reg", ""));
    let (_, tag) = accepted_incoming(&mut r);
    r.ep.shutdown(r.now);
    r.drain();
    let unregister = (*r.sent_starting("REGISTER ").last().unwrap()).clone();
    r.feed(&raw_response(&unregister, 200, "reg", ""));
    assert_eq!(r.ep.state(), EndpointState::Draining, "the session still waits for its ACK");
    assert!(r.sent_starting("BYE ").is_empty());
    let out = r.feed(&raw_request("ACK", &tag, 1, "ack"));
    assert!(out[0].starts_with("BYE "), "{out:?}");
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    nothing_left_after_hours(&mut r);
}

/// A 200 to `invite` with Carol's Contact and `body` (an SDP offer when
/// the INVITE had none).
fn ok_with_body(invite: &str, body: &str) -> String {
    raw_response(invite, 200, "t", &format!("Contact: <sip:carol@{FAR}>\r\n")).replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    )
}

#[test]
fn shutdown_after_our_invite_was_answered_acks_before_it_byes() {
    // The caller's side: the ACK goes when the 2xx comes (§13.2.2.4), so
    // the BYE of shutdown follows it.
    let mut r = Raw::new(|_| {});
    let s =
        r.ep.invite(r.now, Request::invite(&format!("sip:carol@{FAR}"), "application/sdp", OFFER.to_vec())).unwrap();
    r.drain();
    let invite = r.sent_starting("INVITE ")[0].clone();
    r.feed(&ok_with_body(&invite, "v=0\r\n"));
    r.ep.shutdown(r.now);
    r.drain();
    let first = |p: &str| r.sent.iter().position(|m| m.starts_with(p));
    let (ack, bye) = (first("ACK ").expect("an ACK"), first("BYE ").expect("a BYE"));
    assert!(ack < bye, "{:?}", r.sent);
    assert_eq!(cseq(&r.sent[ack]), cseq(&invite));
    assert_eq!(cseq(&r.sent[bye]), cseq(&invite) + 1);
    assert_eq!(ended_with(&r.events, s), Some(SessionEnd::ShutDown));
    assert_eq!(r.ep.state(), EndpointState::Terminated, "nothing to wait for");

    // A late offer: the 2xx carries the offer and its ACK waits for
    // `acknowledge`. Shutdown must not BYE a 2xx it never ACKed.
    let mut r = Raw::new(|_| {});
    let s = r.ep.invite(r.now, Request::invite(&format!("sip:carol@{FAR}"), "application/sdp", Vec::new())).unwrap();
    r.drain();
    let invite = r.sent_starting("INVITE ")[0].clone();
    r.feed(&ok_with_body(&invite, "v=0\r\n"));
    assert!(r.sent_starting("ACK ").is_empty(), "the ACK waits for acknowledge()");
    r.ep.shutdown(r.now);
    r.drain();
    let first = |p: &str| r.sent.iter().position(|m| m.starts_with(p));
    let (ack, bye) = (first("ACK ").expect("an ACK"), first("BYE ").expect("a BYE"));
    assert!(ack < bye, "§13.2.2.4: the 2xx ACKed before the BYE: {:?}", r.sent);
    assert_eq!(cseq(&r.sent[ack]), cseq(&invite));
    assert!(header(&r.sent[ack], "To").unwrap().ends_with("tag=t"));
    assert_eq!(ended_with(&r.events, s), Some(SessionEnd::ShutDown));
    assert_eq!(r.ep.state(), EndpointState::Terminated);
    nothing_left_after_hours(&mut r);
}

#[test]
fn shutdown_right_after_answering_never_byes_before_the_ack_on_a_lossy_network() {
    // Bob answers and shuts down at once. His BYE goes the moment the
    // first ACK reaches him, or, if none does, when his 2xx gives up at
    // 64·T1 (§13.3.1.4, §15); either way his shutdown finishes.
    for_each_seed(20, |seed| {
        let answer_and_quit: Policy = Box::new(|ep, now, e| {
            if let Event::IncomingSession { session, .. } = e {
                ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
                ep.shutdown(now);
            }
        });
        let mut s = sim(idle(), answer_and_quit, LinkConfig::lossy(), seed);
        invite(&mut s);
        go(&mut s, 200);
        let bob = &s.nodes[1];
        let at = |prefix: &str| bob.log.iter().find(|(_, m)| m.starts_with(prefix)).map(|(t, _)| *t);
        let Some(answered) = at("> SIP/2.0 200") else {
            // The INVITE never reached Bob (Timer B).
            assert!(bob.events.iter().all(|(_, e)| !matches!(e, Event::IncomingSession { .. })));
            return;
        };
        let give_up = answered + sipline::transaction::TimerConfig::default().t1 * 64;
        let (ack, bye) = (at("< ACK "), at("> BYE "));
        let bye = bye.unwrap_or_else(|| panic!("seed {seed}: no BYE\n{}", s.trace()));
        match bob.ended() {
            Some(SessionEnd::ShutDown) => {
                assert_eq!(Some(bye), ack, "seed {seed}: BYE right at the first ACK\n{}", s.trace());
                assert!(bye <= give_up);
            }
            Some(SessionEnd::NoAck) => {
                assert_eq!(bye, give_up, "seed {seed}: BYE at 64·T1\n{}", s.trace());
                assert!(ack.is_none_or(|a| a >= give_up), "seed {seed}: an ACK came in time\n{}", s.trace());
            }
            other => panic!("seed {seed}: {other:?}\n{}", s.trace()),
        }
        assert_eq!(bob.ep.state(), EndpointState::Terminated, "seed {seed}");
        assert_eq!(bob.ep.session_count(), 0);
        assert_eq!(bob.events.iter().filter(|(_, e)| matches!(e, Event::ShutDown)).count(), 1);
        go(&mut s, 600);
        assert_eq!(s.nodes[1].ep.tables(), Tables::default(), "seed {seed}");
    });
}

/// The session API carries typed SDP: Bob answers Alice's offer with
/// `sipline::sdp::answer`, Alice reads the answer out of the 200 with
/// `Response::description` and the negotiated codec with
/// `sipline::sdp::negotiated` (RFC 3264 §6.1: the offer's payload type).
#[test]
fn typed_sdp_offer_and_answer_through_a_call() {
    use sipline::sdp::{self, Capabilities, Codec, LocalSession, MediaCapability};
    let caps = Capabilities::new(vec![MediaCapability::audio(vec![Codec::pcma(), Codec::telephone_event(101)])]);
    let answering_sdp: Policy = Box::new(move |ep, now, e| {
        if let Event::IncomingSession { session, body, .. } = e {
            let offer = body.as_ref().unwrap().description().unwrap().unwrap();
            let mut ours = LocalSession::new("bob", 7, 7, [192, 0, 2, 2].into());
            let answer = sdp::answer(&offer, &caps, &["192.0.2.2:40000".parse().unwrap()], &mut ours).unwrap();
            ep.accept(now, *session, Some(&Body::from(&answer))).unwrap();
        }
    });
    let mut s = sim(idle(), answering_sdp, LinkConfig::default(), 1);
    let mut mine = LocalSession::new("alice", 1, 1, [192, 0, 2, 1].into());
    let offer = sdp::offer(&Capabilities::telephony(), &["192.0.2.1:30000".parse().unwrap()], &mut mine).unwrap();
    let now = s.now();
    let call =
        s.nodes[0].ep.invite(now, Request::invite(&uri(1, "bob"), "application/sdp", offer.to_string().into_bytes()));
    let call = call.unwrap();
    s.nodes[0].pump();
    go(&mut s, 5);
    let answered = s.nodes[0]
        .session_events()
        .into_iter()
        .find_map(|e| match e {
            SessionEvent::Answered(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let answer = answered.description().unwrap().unwrap();
    let got = sdp::negotiated(&offer.borrowed(), &answer).unwrap();
    let audio = got.active("audio").unwrap();
    assert_eq!((audio.codec.name.as_str(), audio.codec.send_payload_type), ("PCMA", 8));
    assert_eq!(audio.remote, "192.0.2.2:40000".parse().unwrap());
    assert!(audio.telephone_event.is_some());
    assert_eq!(s.nodes[0].ep.session_confirmed(call), Some(true));
}
