//! Issue 20, clients fail over (RFC 3263 §4.3): a request outside a dialog
//! whose attempt times out (Timer F/B, 64·T1), fails at the transport or
//! gets a 503 goes again, as a new transaction with a new branch, to the
//! next address of the resolved list (SRV targets by priority, then
//! weight, RFC 2782); a 503's Retry-After rests its address (RFC 3261
//! §21.5.4); requests inside a dialog keep their route; a registered
//! endpoint moves to its next registrar when the one in use stops
//! answering, backs off when all are silent, and goes back to the first
//! when it answers again. Bytes on the wire, in virtual time.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::endpoint::{
    Endpoint, EndpointConfig, Event, Output, RegistrationConfig, RegistrationState, Request, RequestError, SessionEnd,
    SessionEvent,
};
use sipline::transport::{Answer, ConnId, Lookup, SrvRecord, Transport};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const UA: &str = "192.0.2.10:5060";
/// 64·T1 with the default T1 (Timers B and F).
const TIMEOUT: Duration = Duration::from_secs(32);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// What the endpoint put on the wire.
#[derive(Debug, Clone)]
enum Wire {
    Datagram { at: Duration, to: SocketAddr, text: String },
    Open { at: Duration, conn: ConnId, to: SocketAddr },
    Write { conn: ConnId, text: String },
}

struct Ua {
    ep: Endpoint,
    origin: Instant,
    now: Instant,
    /// Name → answer, for the endpoint's lookups.
    dns: BTreeMap<String, Answer>,
    wire: Vec<Wire>,
    events: Vec<(Duration, Event)>,
}

impl Ua {
    fn new(setup: impl FnOnce(&mut EndpointConfig)) -> Ua {
        let mut c = EndpointConfig::new("sip:alice@example.com");
        c.seed = 11;
        setup(&mut c);
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(UA));
        ep.add_listener(Transport::Tcp, addr(UA));
        let now = Instant::now();
        Ua { ep, origin: now, now, dns: BTreeMap::new(), wire: Vec::new(), events: Vec::new() }
    }

    fn at(&self) -> Duration {
        self.now - self.origin
    }

    fn srv(&mut self, name: &str, records: &[(u16, u16, u16, &str)]) {
        let records = records
            .iter()
            .map(|&(priority, weight, port, target)| SrvRecord { priority, weight, port, target: target.into() })
            .collect();
        self.dns.insert(name.to_owned(), Answer::Srv(records));
    }

    fn a(&mut self, name: &str, ips: &[&str]) {
        let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
        self.dns.insert(name.to_owned(), Answer::Ips(ips));
    }

    /// Drains the outputs, answering lookups from `dns`.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let Some(o) = self.ep.poll_output() else { return };
            let at = self.at();
            match o {
                Output::Resolve { query, name, lookup } => {
                    let answer = self.dns.get(&name).cloned().unwrap_or(Answer::NotFound);
                    let answer = match (lookup, answer) {
                        (Lookup::Srv, a @ Answer::Srv(_)) | (Lookup::Ip, a @ Answer::Ips(_)) => a,
                        _ => Answer::NotFound,
                    };
                    self.ep.handle_resolved(self.now, query, answer);
                }
                Output::Datagram { remote, bytes, .. } => {
                    self.wire.push(Wire::Datagram { at, to: remote, text: String::from_utf8_lossy(&bytes).into() });
                }
                Output::Open { conn, remote, .. } => self.wire.push(Wire::Open { at, conn, to: remote }),
                Output::Write { conn, bytes } => {
                    self.wire.push(Wire::Write { conn, text: String::from_utf8_lossy(&bytes).into() });
                }
                Output::Event(e) => self.events.push((at, e)),
                _ => {}
            }
        }
        panic!("outputs never ended");
    }

    /// Runs the endpoint's timers up to `secs` after the origin.
    fn run_to(&mut self, until: Duration) {
        let until = self.origin + until;
        for _ in 0..100_000 {
            self.drain();
            match self.ep.poll_timeout() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.ep.handle_timeout(self.now);
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        panic!("timers never settled");
    }

    /// Runs the endpoint's timers until `done` holds (checked after each),
    /// or up to `limit` after the origin; returns whether it held.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Ua) -> bool) -> bool {
        let limit = self.origin + limit;
        for _ in 0..100_000 {
            self.drain();
            if done(self) {
                return true;
            }
            match self.ep.poll_timeout() {
                Some(t) if t <= limit => {
                    self.now = self.now.max(t);
                    self.ep.handle_timeout(self.now);
                }
                _ => return false,
            }
        }
        panic!("timers never settled");
    }

    /// Datagrams sent so far: (when, where, text).
    fn datagrams(&self) -> Vec<(Duration, SocketAddr, String)> {
        self.wire
            .iter()
            .filter_map(|w| match w {
                Wire::Datagram { at, to, text } => Some((*at, *to, text.clone())),
                _ => None,
            })
            .collect()
    }

    /// First sends of requests (a branch not seen before), in order.
    fn attempts(&self, method: &str) -> Vec<(Duration, SocketAddr, String)> {
        let mut seen = Vec::new();
        self.datagrams()
            .into_iter()
            .filter(|(_, _, t)| t.starts_with(&format!("{method} ")))
            .filter(|(_, _, t)| {
                let b = header(t, "Via");
                let fresh = !seen.contains(&b);
                seen.push(b);
                fresh
            })
            .collect()
    }

    /// Answers `request` (as sent to `from`) with `status` and `extra`
    /// header lines.
    fn reply(&mut self, from: SocketAddr, request: &str, status: &str, extra: &str) {
        let text = response(request, status, extra);
        self.ep.handle_datagram(self.now, addr(UA), from, text.as_bytes());
        self.drain();
    }

    fn outcomes(&self) -> Vec<(Duration, Result<u16, RequestError>)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Outcome { result, .. } => Some((*at, result.clone().map(|r| r.code))),
                _ => None,
            })
            .collect()
    }

    fn registrations(&self) -> Vec<(Duration, RegistrationState)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Registration(s) => Some((*at, s.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The value of the first `name` header of `text`.
fn header(text: &str, name: &str) -> String {
    text.split("\r\n")
        .find(|l| {
            l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name) && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim().to_owned())
        .unwrap_or_default()
}

fn request_line(text: &str) -> &str {
    text.split("\r\n").next().unwrap_or_default()
}

/// A response to `request` (§8.2.6: Via, From, To with a tag, Call-ID,
/// CSeq copied).
fn response(request: &str, status: &str, extra: &str) -> String {
    let to = header(request, "To");
    let to = if to.contains(";tag=") { to } else { format!("{to};tag=far") };
    format!(
        "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        header(request, "Via"),
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
    )
}

fn message(uri: &str) -> Request {
    Request::message(uri, "text/plain", b"hi".to_vec())
}

#[test]
fn a_timeout_moves_on_to_the_next_srv_target_with_a_new_branch_4_3() {
    let mut ua = Ua::new(|_| {});
    ua.srv("_sip._udp.example.com", &[(20, 0, 5070, "b.example.com"), (10, 0, 5060, "a.example.com")]);
    ua.a("a.example.com", &["192.0.2.1"]);
    ua.a("b.example.com", &["192.0.2.2"]);
    ua.ep.send_request(ua.now, message("sip:bob@example.com")).unwrap();
    ua.drain();
    ua.run_to(Duration::from_millis(31_999));
    // Priority 10 first; Timer E retransmissions, one branch.
    let sent = ua.datagrams();
    assert!(sent.len() > 5 && sent.iter().all(|(_, to, _)| *to == addr("192.0.2.1:5060")), "{sent:?}");
    let first = sent[0].2.clone();
    assert!(sent.iter().all(|(_, _, t)| header(t, "Via") == header(&first, "Via")));
    ua.run_to(TIMEOUT + Duration::from_secs(1));
    let attempts = ua.attempts("MESSAGE");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let (at, to, second) = &attempts[1];
    // Timer F (64·T1) ended the first; the next target at that instant.
    assert_eq!((*at, *to), (TIMEOUT, addr("192.0.2.2:5070")));
    assert_ne!(header(second, "Via"), header(&first, "Via"));
    assert!(header(second, "Via").contains(";branch=z9hG4bK"));
    // "identical to the previous" otherwise (§4.3).
    for h in ["Call-ID", "CSeq", "From", "To"] {
        assert_eq!(header(second, h), header(&first, h), "{h}");
    }
    assert_eq!(request_line(second), request_line(&first));
    assert!(ua.outcomes().is_empty());
    let second = second.clone();
    ua.reply(addr("192.0.2.2:5070"), &second, "200 OK", "");
    assert_eq!(ua.outcomes(), [(TIMEOUT + Duration::from_secs(1), Ok(200))]);
}

#[test]
fn a_refused_connection_moves_on_at_once_4_3() {
    let mut ua = Ua::new(|c| c.default_transport = Transport::Tcp);
    ua.srv("_sip._tcp.example.com", &[(10, 0, 5060, "a.example.com"), (20, 0, 5060, "b.example.com")]);
    ua.a("a.example.com", &["192.0.2.1"]);
    ua.a("b.example.com", &["192.0.2.2"]);
    ua.ep.send_request(ua.now, message("sip:bob@example.com")).unwrap();
    ua.drain();
    let Some(Wire::Open { conn, to, .. }) = ua.wire.first().cloned() else { panic!("{:?}", ua.wire) };
    assert_eq!(to, addr("192.0.2.1:5060"));
    ua.now += Duration::from_millis(3);
    ua.ep.handle_connect_failed(ua.now, conn);
    ua.drain();
    // At once, not after Timer F.
    let opens: Vec<(Duration, SocketAddr)> = ua
        .wire
        .iter()
        .filter_map(|w| match w {
            Wire::Open { at, to, .. } => Some((*at, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(opens, [(Duration::ZERO, addr("192.0.2.1:5060")), (Duration::from_millis(3), addr("192.0.2.2:5060"))]);
    let Some(Wire::Open { conn: second, .. }) = ua.wire.last().cloned() else { panic!() };
    ua.ep.handle_connected(ua.now, second);
    ua.drain();
    let Some(Wire::Write { conn, text, .. }) = ua.wire.last().cloned() else { panic!("{:?}", ua.wire) };
    assert_eq!(conn, second);
    assert!(text.starts_with("MESSAGE sip:bob@example.com SIP/2.0\r\n"));
    assert!(header(&text, "Via").starts_with("SIP/2.0/TCP "));
    assert!(ua.outcomes().is_empty());
}

#[test]
fn a_503_moves_on_and_its_retry_after_rests_the_address_21_5_4() {
    let mut ua = Ua::new(|_| {});
    // A name with a port: A records only (§4.2), two addresses.
    ua.a("example.com", &["192.0.2.1", "192.0.2.2"]);
    let (a, b) = (addr("192.0.2.1:5060"), addr("192.0.2.2:5060"));
    ua.ep.send_request(ua.now, message("sip:bob@example.com:5060")).unwrap();
    ua.drain();
    let first = ua.attempts("MESSAGE")[0].clone();
    assert_eq!(first.1, a);
    ua.now += Duration::from_millis(40);
    ua.reply(a, &first.2, "503 Service Unavailable", "Retry-After: 60\r\n");
    let attempts = ua.attempts("MESSAGE");
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[1].0, attempts[1].1), (Duration::from_millis(40), b));
    assert_ne!(header(&attempts[1].2, "Via"), header(&first.2, "Via"));
    assert_eq!(header(&attempts[1].2, "CSeq"), header(&first.2, "CSeq"));
    let second = attempts[1].2.clone();
    ua.reply(b, &second, "200 OK", "");
    assert_eq!(ua.outcomes().len(), 1);

    // Within the 60 s: straight to the other address.
    ua.run_to(Duration::from_secs(59));
    ua.ep.send_request(ua.now, message("sip:bob@example.com:5060")).unwrap();
    ua.drain();
    let third = ua.attempts("MESSAGE")[2].clone();
    assert_eq!(third.1, b);
    ua.reply(b, &third.2, "200 OK", "");
    // After them, the first address is first again.
    ua.run_to(Duration::from_secs(61));
    ua.ep.send_request(ua.now, message("sip:bob@example.com:5060")).unwrap();
    ua.drain();
    let fourth = ua.attempts("MESSAGE")[3].clone();
    assert_eq!(fourth.1, a);
    // A 503 without Retry-After moves on too, but rests nothing.
    ua.reply(a, &fourth.2, "503 Service Unavailable", "");
    let fifth = ua.attempts("MESSAGE")[4].clone();
    assert_eq!(fifth.1, b);
    ua.reply(b, &fifth.2, "200 OK", "");
    ua.ep.send_request(ua.now, message("sip:bob@example.com:5060")).unwrap();
    ua.drain();
    assert_eq!(ua.attempts("MESSAGE")[5].1, a);
    assert!(ua.outcomes().iter().all(|(_, r)| *r == Ok(200)), "{:?}", ua.outcomes());
}

#[test]
fn with_every_address_resting_the_503_is_the_answer_at_once() {
    let mut ua = Ua::new(|_| {});
    let a = addr("192.0.2.1:5060");
    ua.ep.send_request(ua.now, message("sip:bob@192.0.2.1")).unwrap();
    ua.drain();
    let first = ua.attempts("MESSAGE")[0].clone();
    ua.reply(a, &first.2, "503 Service Unavailable", "Retry-After: 30\r\n");
    assert!(matches!(&ua.outcomes()[..], [(_, Err(RequestError::Failure(r)))] if r.code == 503));
    ua.run_to(Duration::from_secs(10));
    ua.ep.send_request(ua.now, message("sip:bob@192.0.2.1")).unwrap();
    ua.drain();
    // Nothing sent; the 503 it gave is the answer.
    assert_eq!(ua.attempts("MESSAGE").len(), 1);
    let outcomes = ua.outcomes();
    assert!(
        matches!(&outcomes[1], (t, Err(RequestError::Failure(r))) if *t == Duration::from_secs(10) && r.code == 503)
    );
    ua.run_to(Duration::from_secs(31));
    ua.ep.send_request(ua.now, message("sip:bob@192.0.2.1")).unwrap();
    ua.drain();
    assert_eq!(ua.attempts("MESSAGE").len(), 2);
}

#[test]
fn the_list_spent_the_caller_gets_the_last_error() {
    let mut ua = Ua::new(|_| {});
    ua.a("example.com", &["192.0.2.1", "192.0.2.2"]);
    ua.ep.send_request(ua.now, message("sip:bob@example.com:5060")).unwrap();
    ua.run_to(TIMEOUT * 3);
    let attempts = ua.attempts("MESSAGE");
    let got: Vec<(Duration, SocketAddr)> = attempts.iter().map(|a| (a.0, a.1)).collect();
    assert_eq!(got, [(Duration::ZERO, addr("192.0.2.1:5060")), (TIMEOUT, addr("192.0.2.2:5060"))]);
    assert_eq!(ua.outcomes(), [(TIMEOUT * 2, Err(RequestError::Timeout))]);
}

#[test]
fn a_provisional_answer_keeps_the_request_where_it_is() {
    let mut ua = Ua::new(|_| {});
    ua.a("example.com", &["192.0.2.1", "192.0.2.2"]);
    ua.ep.send_request(ua.now, message("sip:bob@example.com:5060")).unwrap();
    ua.drain();
    let first = ua.attempts("MESSAGE")[0].clone();
    ua.reply(first.1, &first.2, "100 Trying", "");
    ua.run_to(TIMEOUT * 2);
    // The server has it: Timer F ends it there (§17.1.2.2).
    assert_eq!(ua.attempts("MESSAGE").len(), 1);
    assert_eq!(ua.outcomes(), [(TIMEOUT, Err(RequestError::Timeout))]);
}

#[test]
fn an_invite_goes_to_the_next_address_after_a_503_and_the_call_stays_there() {
    let mut ua = Ua::new(|_| {});
    ua.a("example.com", &["192.0.2.1", "192.0.2.2"]);
    // The callee's Contact names a host with two addresses.
    ua.a("bob.example.com", &["192.0.2.3", "192.0.2.4"]);
    let (a, b) = (addr("192.0.2.1:5060"), addr("192.0.2.2:5060"));
    let call =
        ua.ep.invite(ua.now, Request::invite("sip:bob@example.com:5060", "application/sdp", b"v=0\r\n".to_vec()));
    let call = call.unwrap();
    ua.drain();
    let first = ua.attempts("INVITE")[0].clone();
    assert_eq!(first.1, a);
    ua.reply(a, &first.2, "503 Service Unavailable", "");
    // §17.1.1.3: the 503 is ACKed on its transaction; the INVITE goes
    // again to the next address with a new branch, same CSeq and Call-ID.
    let sent = ua.datagrams();
    let ack = sent.iter().find(|(_, _, t)| t.starts_with("ACK ")).unwrap();
    assert_eq!((ack.1, header(&ack.2, "Via")), (a, header(&first.2, "Via")));
    let invites = ua.attempts("INVITE");
    assert_eq!(invites.len(), 2);
    let second = invites[1].2.clone();
    assert_eq!(invites[1].1, b);
    assert_ne!(header(&second, "Via"), header(&first.2, "Via"));
    assert_eq!(header(&second, "CSeq"), "1 INVITE");
    assert_eq!(header(&second, "Call-ID"), header(&first.2, "Call-ID"));
    ua.reply(b, &second, "200 OK", "Contact: <sip:bob@bob.example.com:5060>\r\n");
    let answered = ua
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Session { session, event: SessionEvent::Answered(_) } if *session == call));
    assert!(answered, "{:?}", ua.events);
    let acks: Vec<_> = ua.datagrams().into_iter().filter(|(_, _, t)| t.starts_with("ACK ")).collect();
    assert_eq!(acks.last().unwrap().1, addr("192.0.2.3:5060"));
    // A BYE in the dialog goes to the remote target's first address and,
    // unanswered, ends there: no failover inside a dialog.
    ua.ep.hangup(ua.now, call).unwrap();
    ua.run_to(TIMEOUT * 3);
    let byes = ua.attempts("BYE");
    assert_eq!(byes.len(), 1, "{byes:?}");
    assert_eq!(byes[0].1, addr("192.0.2.3:5060"));
    assert!(!ua.datagrams().iter().any(|(_, to, _)| *to == addr("192.0.2.4:5060")));
    let ended = ua
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Session { event: SessionEvent::Ended(SessionEnd::HungUp), .. }));
    assert!(ended);
}

#[test]
fn an_invite_hung_up_before_any_answer_is_not_tried_elsewhere() {
    let mut ua = Ua::new(|_| {});
    ua.a("example.com", &["192.0.2.1", "192.0.2.2"]);
    let call =
        ua.ep.invite(ua.now, Request::invite("sip:bob@example.com:5060", "application/sdp", b"v=0\r\n".to_vec()));
    let call = call.unwrap();
    ua.drain();
    ua.run_to(Duration::from_secs(3));
    // No provisional answer yet: the CANCEL waits for one (§9.1).
    ua.ep.hangup(ua.now, call).unwrap();
    ua.run_to(TIMEOUT * 3);
    let invites = ua.attempts("INVITE");
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert!(!ua.datagrams().iter().any(|(_, to, _)| *to == addr("192.0.2.2:5060")));
    let ended = ua.events.iter().any(|(at, e)| {
        *at == TIMEOUT && matches!(e, Event::Session { event: SessionEvent::Ended(SessionEnd::Cancelled), .. })
    });
    assert!(ended, "{:?}", ua.events);
}

#[test]
fn srv_priorities_come_first_then_weights_share_the_order_2782() {
    let mut ua = Ua::new(|c| c.max_outstanding = None);
    ua.srv(
        "_sip._udp.example.net",
        &[
            (10, 60, 5060, "a.example.net"),
            (20, 0, 5060, "d.example.net"),
            (10, 30, 5060, "b.example.net"),
            (10, 10, 5060, "c.example.net"),
        ],
    );
    for (name, ip) in [("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3"), ("d", "192.0.2.4")] {
        ua.a(&format!("{name}.example.net"), &[ip]);
    }
    let name = |to: SocketAddr| match to.ip() {
        IpAddr::V4(v4) => ["?", "a", "b", "c", "d"][usize::from(v4.octets()[3]).min(4)],
        IpAddr::V6(_) => "?",
    };
    let runs: u32 = 600;
    let mut orders: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..runs {
        ua.wire.clear();
        ua.ep.send_request(ua.now, message("sip:svc@example.net")).unwrap();
        ua.drain();
        // Priority 10 answers 503 (no Retry-After): each goes on at once.
        for _ in 0..4 {
            let last = ua.attempts("MESSAGE").last().cloned().unwrap();
            let status = if last.1 == addr("192.0.2.4:5060") { "200 OK" } else { "503 Service Unavailable" };
            ua.reply(last.1, &last.2, status, "");
        }
        let order: String = ua.attempts("MESSAGE").iter().map(|a| name(a.1)).collect();
        *orders.entry(order).or_default() += 1;
    }
    assert_eq!(ua.outcomes().len(), usize::try_from(runs).unwrap());
    assert!(ua.outcomes().iter().all(|(_, r)| *r == Ok(200)));
    // Priority 20 only after every priority-10 target, each tried once.
    assert!(orders.keys().all(|o| o.len() == 4 && o.ends_with('d')), "{orders:?}");
    let first = |c: char| {
        f64::from(orders.iter().filter(|(o, _)| o.starts_with(c)).map(|(_, n)| *n).sum::<u32>()) / f64::from(runs)
    };
    // RFC 2782: first place by weight, 60:30:10 (±0.06; the draw is
    // uniform over 0..=sum, so the first listed gets one part in 101 more).
    for (c, share) in [('a', 0.6), ('b', 0.3), ('c', 0.1)] {
        assert!((first(c) - share).abs() < 0.06, "{c}: {} of first places; {orders:?}", first(c));
    }
    // Second place, given a first: by the weights left (a then b: 30 of 40).
    let share = |o: &str| f64::from(orders.get(o).copied().unwrap_or(0)) / f64::from(runs);
    assert!((share("abcd") / first('a') - 0.75).abs() < 0.1, "{orders:?}");
    assert!((share("bacd") / first('b') - 60.0 / 70.0).abs() < 0.1, "{orders:?}");
}

/// A registered endpoint with registrars .1, .2 (and .3 with `three`),
/// asking for `expires` seconds.
fn registered_ua(three: bool, expires: u32) -> Ua {
    Ua::new(|c| {
        let mut fallbacks = vec!["sip:192.0.2.2".to_owned()];
        if three {
            fallbacks.push("sip:192.0.2.3".to_owned());
        }
        let mut r = RegistrationConfig::new("sip:192.0.2.1").with_fallbacks(fallbacks);
        r.expires = expires;
        r.keepalive = None;
        c.registration = Some(r);
    })
}

/// Answers the last REGISTER with 200 granting what it asked.
fn grant(ua: &mut Ua) {
    let (_, to, text) = ua.attempts("REGISTER").last().cloned().unwrap();
    let contact = format!("Contact: {};expires={}\r\n", header(&text, "Contact"), header(&text, "Expires"));
    ua.reply(to, &text, "200 OK", &contact);
}

fn registrar_of(state: &RegistrationState) -> Option<&str> {
    match state {
        RegistrationState::Registered { registrar, .. } => Some(registrar),
        _ => None,
    }
}

#[test]
fn a_silent_registrar_hands_over_to_the_next_within_one_refresh() {
    let mut ua = registered_ua(false, 300);
    ua.ep.start(ua.now);
    ua.drain();
    grant(&mut ua);
    assert_eq!(registrar_of(&ua.registrations().last().unwrap().1), Some("sip:192.0.2.1"));
    // The refresh at 240 s (a minute before expiry) goes unanswered.
    ua.run_to(Duration::from_secs(240) + TIMEOUT + Duration::from_secs(1));
    let regs = ua.attempts("REGISTER");
    let got: Vec<(Duration, SocketAddr, &str)> = regs.iter().map(|(at, to, t)| (*at, *to, request_line(t))).collect();
    assert_eq!(
        got,
        [
            (Duration::ZERO, addr("192.0.2.1:5060"), "REGISTER sip:192.0.2.1 SIP/2.0"),
            (Duration::from_secs(240), addr("192.0.2.1:5060"), "REGISTER sip:192.0.2.1 SIP/2.0"),
            (Duration::from_secs(240) + TIMEOUT, addr("192.0.2.2:5060"), "REGISTER sip:192.0.2.2 SIP/2.0"),
        ]
    );
    // §10.2.4: one Call-ID, CSeq rising.
    let cseqs: Vec<String> = regs.iter().map(|r| header(&r.2, "CSeq")).collect();
    assert_eq!(cseqs, ["1 REGISTER", "2 REGISTER", "3 REGISTER"]);
    assert!(regs.iter().all(|r| header(&r.2, "Call-ID") == header(&regs[0].2, "Call-ID")));
    grant(&mut ua);
    let states: Vec<RegistrationState> = ua.registrations().into_iter().map(|s| s.1).collect();
    assert!(
        matches!(&states[..], [RegistrationState::Registering, RegistrationState::Registered { .. }, RegistrationState::Failed { error: RequestError::Timeout, retry_in }, RegistrationState::Registering, RegistrationState::Registered { registrar, .. }] if retry_in.is_zero() && registrar == "sip:192.0.2.2"),
        "{states:?}"
    );
    // Requests now go through the registrar in use.
    ua.ep.send_request(ua.now, message("sip:bob@example.com")).unwrap();
    ua.drain();
    let (_, to, text) = ua.attempts("MESSAGE")[0].clone();
    assert_eq!((to, header(&text, "Route")), (addr("192.0.2.2:5060"), "<sip:192.0.2.2;lr>".to_owned()));
}

#[test]
fn back_to_the_first_registrar_once_it_answers_again_5626_4_5() {
    let mut ua = registered_ua(false, 3600);
    ua.ep.start(ua.now);
    ua.drain();
    // The first is silent from the start: the second takes the binding.
    ua.run_to(TIMEOUT);
    grant(&mut ua);
    let with_fallback = ua.at();
    assert_eq!(registrar_of(&ua.registrations().last().unwrap().1), Some("sip:192.0.2.2"));
    // The first try to go back: 45–90 s later (90 s base, 50–100 %).
    ua.run_to(with_fallback + Duration::from_secs(91));
    let regs = ua.attempts("REGISTER");
    assert_eq!(regs.len(), 3, "{regs:?}");
    let (at, to, _) = regs[2].clone();
    assert_eq!(to, addr("192.0.2.1:5060"));
    let wait = at.checked_sub(with_fallback).unwrap();
    assert!(wait >= Duration::from_secs(45) && wait <= Duration::from_secs(90), "{wait:?}");
    // Unanswered: nothing changes — no event, no REGISTER to the second
    // until its refresh is due, requests still through the second.
    let events_before = ua.registrations().len();
    ua.run_to(at + TIMEOUT + Duration::from_secs(1));
    assert_eq!(ua.registrations().len(), events_before);
    assert_eq!(ua.attempts("REGISTER").len(), 3);
    assert_eq!(registrar_of(ua.ep.registration().unwrap()), Some("sip:192.0.2.2"));
    // The second try 90–180 s after that; the first answers now.
    let tried = at + TIMEOUT;
    assert!(ua.run_until(tried + Duration::from_secs(181), |ua| ua.attempts("REGISTER").len() == 4));
    let regs = ua.attempts("REGISTER");
    assert_eq!(regs[3].1, addr("192.0.2.1:5060"), "{regs:?}");
    let wait = regs[3].0.checked_sub(tried).unwrap();
    assert!(wait >= Duration::from_secs(90) && wait <= Duration::from_secs(180), "{wait:?}");
    let (_, to, text) = regs[3].clone();
    ua.reply(to, &text, "200 OK", &format!("Contact: {};expires=300\r\n", header(&text, "Contact")));
    assert_eq!(registrar_of(ua.ep.registration().unwrap()), Some("sip:192.0.2.1"));
    assert_eq!(registrar_of(&ua.registrations().last().unwrap().1), Some("sip:192.0.2.1"));
    ua.ep.send_request(ua.now, message("sip:bob@example.com")).unwrap();
    ua.drain();
    assert_eq!(ua.attempts("MESSAGE")[0].1, addr("192.0.2.1:5060"));
    // Home again: no more tries.
    let n = ua.attempts("REGISTER").len();
    ua.run_to(ua.at() + Duration::from_secs(200));
    assert_eq!(ua.attempts("REGISTER").len(), n);
}

#[test]
fn with_every_registrar_silent_rounds_back_off_and_start_with_the_first() {
    let mut ua = registered_ua(true, 300);
    ua.ep.start(ua.now);
    ua.run_to(Duration::from_secs(700));
    let regs = ua.attempts("REGISTER");
    let got: Vec<(u64, u8)> = regs
        .iter()
        .map(|(at, to, _)| match to.ip() {
            IpAddr::V4(v4) => (at.as_secs(), v4.octets()[3]),
            IpAddr::V6(_) => unreachable!(),
        })
        .collect();
    // Rounds .1 .2 .3, Timer F apart; then 30 s, 60 s, 120 s of back-off.
    assert_eq!(
        got,
        [
            (0, 1),
            (32, 2),
            (64, 3),
            (126, 1),
            (158, 2),
            (190, 3),
            (282, 1),
            (314, 2),
            (346, 3),
            (498, 1),
            (530, 2),
            (562, 3)
        ]
    );
    let retries: Vec<Duration> = ua
        .registrations()
        .into_iter()
        .filter_map(|(_, s)| match s {
            RegistrationState::Failed { retry_in, .. } => Some(retry_in),
            _ => None,
        })
        .collect();
    let s = Duration::from_secs;
    assert_eq!(retries[..6], [Duration::ZERO, Duration::ZERO, s(30), Duration::ZERO, Duration::ZERO, s(60)]);
}

#[test]
fn a_503_from_the_registrar_hands_over_at_once_and_its_retry_after_is_kept() {
    let mut ua = registered_ua(false, 300);
    ua.ep.start(ua.now);
    ua.drain();
    let (_, to, text) = ua.attempts("REGISTER")[0].clone();
    ua.now += Duration::from_millis(30);
    ua.reply(to, &text, "503 Service Unavailable", "Retry-After: 600\r\n");
    let regs = ua.attempts("REGISTER");
    assert_eq!((regs[1].0, regs[1].1), (Duration::from_millis(30), addr("192.0.2.2:5060")));
    // The second one too: the round ends, and waits out the Retry-After.
    let (_, to, text) = regs[1].clone();
    ua.reply(to, &text, "503 Service Unavailable", "Retry-After: 100\r\n");
    assert!(matches!(
        ua.registrations().last(),
        Some((_, RegistrationState::Failed { retry_in, .. })) if *retry_in == Duration::from_secs(100)
    ));
    // Then .1 rests still (600 s): the round goes straight to .2.
    ua.run_to(Duration::from_secs(101));
    let regs = ua.attempts("REGISTER");
    assert_eq!(regs.len(), 3, "{regs:?}");
    assert_eq!(regs[2].1, addr("192.0.2.2:5060"));
    assert_eq!(request_line(&regs[2].2), "REGISTER sip:192.0.2.2 SIP/2.0");
}

#[test]
fn a_request_through_a_silent_registrar_tries_the_next() {
    let mut ua = registered_ua(false, 300);
    ua.ep.start(ua.now);
    ua.drain();
    grant(&mut ua);
    ua.ep.send_request(ua.now, message("sip:bob@example.com")).unwrap();
    ua.run_to(TIMEOUT + Duration::from_secs(1));
    let attempts = ua.attempts("MESSAGE");
    let got: Vec<(Duration, SocketAddr, String)> =
        attempts.iter().map(|(at, to, t)| (*at, *to, header(t, "Route"))).collect();
    assert_eq!(
        got,
        [
            (Duration::ZERO, addr("192.0.2.1:5060"), "<sip:192.0.2.1;lr>".to_owned()),
            (TIMEOUT, addr("192.0.2.2:5060"), "<sip:192.0.2.2;lr>".to_owned()),
        ]
    );
    assert_ne!(header(&attempts[0].2, "Via"), header(&attempts[1].2, "Via"));
    let (_, to, text) = attempts[1].clone();
    ua.reply(to, &text, "200 OK", "");
    assert_eq!(ua.outcomes(), [(TIMEOUT + Duration::from_secs(1), Ok(200))]);
    // A MESSAGE is no REGISTER: the registration stays with the first.
    assert_eq!(registrar_of(ua.ep.registration().unwrap()), Some("sip:192.0.2.1"));
}
