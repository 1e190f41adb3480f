//! A registered endpoint against a registrar double, in virtual time:
//! REGISTER contents (§10.2.1: Contact with `+sip.instance`, Expires,
//! Supported: gruu; the same Call-ID and rising CSeq, §10.2.4), the granted
//! interval and GRUUs, refresh before expiry, 423 (§10.2.8), re-registration
//! after the registrar's connection drops, the public address learned from
//! `received`/`rport` (RFC 3581), retry with back-off, requests routed
//! through the registrar with a pre-loaded Route, and shutdown that
//! unregisters first.

use sipline::auth::{Algorithm, DigestChallenge, DigestCredentials, Secret};
use sipline::endpoint::RequestError;
use sipline::endpoint::{
    Endpoint, EndpointConfig, EndpointState, Event, Output, RegistrationConfig, RegistrationState, Request,
};
use sipline::message::Message;
use sipline::transport::{ConnId, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const UA: &str = "192.0.2.10:5060";
const REGISTRAR: &str = "192.0.2.1:5060";
const INSTANCE: &str = "00000000-0000-1000-8000-000a95a0e128";

/// How the double answers.
#[derive(Clone)]
struct Rules {
    /// Longest interval granted.
    max_expires: u32,
    /// 423 below this.
    min_expires: Option<u32>,
    /// Answer nothing (timeouts).
    silent: bool,
    /// Stamp this as `received`/`rport` in the Via (a NAT in between).
    nat: Option<SocketAddr>,
    /// Challenge every request (401 for REGISTER, 407 for others) in this
    /// realm with this algorithm, for alice's password `secret`.
    digest: Option<(&'static str, Algorithm)>,
    /// Call every nonce stale after its first use.
    one_shot_nonces: bool,
}

struct Harness {
    ua: Endpoint,
    /// Nonces issued, and whether each is used up.
    nonces: Vec<(String, bool)>,
    now: Instant,
    rules: Rules,
    /// Requests the registrar got (text), with when.
    seen: Vec<(Instant, String)>,
    events: Vec<(Instant, Event)>,
    conn: Option<ConnId>,
    keepalives: usize,
}

impl Harness {
    fn new(transport: Transport, rules: Rules, expires: u32) -> Harness {
        let mut config = EndpointConfig::new("sip:alice@example.com");
        let t = transport.as_str().to_ascii_lowercase();
        let mut reg = RegistrationConfig::new(&format!("sip:{REGISTRAR};transport={t}"));
        reg.expires = expires;
        reg.retry_base = Duration::from_secs(10);
        config.registration = Some(reg);
        config.instance = Some(INSTANCE.to_owned());
        config.seed = 7;
        config.credentials = vec![DigestCredentials::new("alice", "secret")];
        let mut ua = Endpoint::new(config).unwrap();
        ua.add_listener(transport, UA.parse().unwrap());
        Harness {
            ua,
            now: Instant::now(),
            rules,
            seen: Vec::new(),
            events: Vec::new(),
            conn: None,
            keepalives: 0,
            nonces: Vec::new(),
        }
    }

    fn answer(&mut self, request: &str) -> Option<String> {
        let m = Message::parse(request.as_bytes()).unwrap();
        let method = m.method().unwrap().as_str().to_owned();
        self.seen.push((self.now, request.to_owned()));
        if self.rules.silent {
            return None;
        }
        let header = |name: &str| -> String {
            request
                .split("\r\n")
                .filter(|l| {
                    l.len() > name.len()
                        && l[..name.len()].eq_ignore_ascii_case(name)
                        && l[name.len()..].starts_with(':')
                })
                .map(|l| l[name.len() + 1..].trim().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut via = header("Via");
        if let Some(nat) = self.rules.nat {
            via = via.replace(";rport", &format!(";received={};rport={}", nat.ip(), nat.port()));
        }
        let common = format!(
            "Via: {via}\r\nFrom: {}\r\nTo: {};tag=reg\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            header("From"),
            header("To"),
            header("Call-ID"),
            header("CSeq")
        );
        if let Some(challenge) = self.check_credentials(&m, &method) {
            let (code, reason, name) = if method == "REGISTER" {
                (401, "Unauthorized", "WWW-Authenticate")
            } else {
                (407, "Proxy Authentication Required", "Proxy-Authenticate")
            };
            return Some(format!(
                "SIP/2.0 {code} {reason}\r\n{common}{name}: {challenge}\r\nContent-Length: 0\r\n\r\n"
            ));
        }
        if method != "REGISTER" {
            return Some(format!("SIP/2.0 200 OK\r\n{common}Content-Length: 0\r\n\r\n"));
        }
        let asked: u32 = header("Expires").parse().unwrap();
        if let Some(min) = self.rules.min_expires {
            if asked != 0 && asked < min {
                return Some(format!(
                    "SIP/2.0 423 Interval Too Brief\r\n{common}Min-Expires: {min}\r\nContent-Length: 0\r\n\r\n"
                ));
            }
        }
        let granted = asked.min(self.rules.max_expires);
        let contact = header("Contact");
        let gruus = format!(
            ";pub-gruu=\"sip:alice@example.com;gr=urn:uuid:{INSTANCE}\";temp-gruu=\"sip:tgruu.1@example.com;gr\""
        );
        let contact =
            if granted == 0 { String::new() } else { format!("Contact: {contact};expires={granted}{gruus}\r\n") };
        Some(format!("SIP/2.0 200 OK\r\n{common}{contact}Content-Length: 0\r\n\r\n"))
    }

    /// `None` if the request carries a right answer to a live nonce, else
    /// the challenge to send.
    fn check_credentials(&mut self, m: &Message<'_>, method: &str) -> Option<String> {
        let (realm, algorithm) = self.rules.digest?;
        let answer = m.authorization().chain(m.proxy_authorization()).find_map(Result::ok);
        let mut stale = false;
        if let Some(c) = answer {
            let nonce = c.nonce().unwrap_or_default().into_owned();
            if let Some(i) = self.nonces.iter().position(|(n, _)| *n == nonce) {
                let check = DigestChallenge::new(realm, &nonce, algorithm).unwrap();
                let right = check.verify(&c, method, Secret::Password("secret")).is_ok();
                if right && !self.nonces[i].1 {
                    self.nonces[i].1 = self.rules.one_shot_nonces;
                    return None;
                }
                stale = right;
            }
        }
        let nonce = format!("nonce{}", self.nonces.len());
        self.nonces.push((nonce.clone(), false));
        Some(DigestChallenge::new(realm, &nonce, algorithm).unwrap().with_stale(stale).header_value())
    }

    /// Runs until quiet, then on through timers up to `until`.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..100_000 {
            self.settle();
            match self.ua.poll_timeout() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.ua.handle_timeout(self.now);
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("no end");
    }

    fn settle(&mut self) {
        let registrar: SocketAddr = REGISTRAR.parse().unwrap();
        for _ in 0..10_000 {
            let Some(o) = self.ua.poll_output() else { return };
            let now = self.now;
            match o {
                Output::Datagram { remote, bytes, .. } => {
                    assert_eq!(remote, registrar, "everything goes to the registrar");
                    if let Some(r) = self.answer(&String::from_utf8_lossy(&bytes)) {
                        self.ua.handle_datagram(now, UA.parse().unwrap(), registrar, r.as_bytes());
                    }
                }
                Output::Open { conn, remote, .. } => {
                    assert_eq!(remote, registrar);
                    self.conn = Some(conn);
                    self.ua.handle_connected(now, conn);
                }
                Output::Write { bytes, .. } if bytes == b"\r\n\r\n" => self.keepalives += 1,
                Output::Write { conn, bytes } => {
                    if let Some(r) = self.answer(&String::from_utf8_lossy(&bytes)) {
                        self.ua.handle_stream_data(now, conn, r.as_bytes());
                    }
                }
                Output::Close { conn } => {
                    if self.conn == Some(conn) {
                        self.conn = None;
                    }
                }
                Output::Event(e) => self.events.push((now, e)),
                Output::Resolve { .. } => panic!("an address needs no lookup"),
                Output::Worker { .. } => panic!("no endpoint here is one of several workers"),
            }
        }
    }

    fn registers(&self) -> Vec<(Duration, String)> {
        let t0 = self.seen.first().map_or(self.now, |s| s.0);
        self.seen.iter().filter(|(_, r)| r.starts_with("REGISTER ")).map(|(t, r)| (*t - t0, r.clone())).collect()
    }

    fn registration_states(&self) -> Vec<RegistrationState> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Registration(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

fn line<'a>(request: &'a str, name: &str) -> &'a str {
    request.split("\r\n").find(|l| l.starts_with(&format!("{name}: "))).map_or("", |l| &l[name.len() + 2..])
}

fn rules() -> Rules {
    Rules { max_expires: 3600, min_expires: None, silent: false, nat: None, digest: None, one_shot_nonces: false }
}

#[test]
fn digest_challenges_are_answered_for_register_and_other_requests() {
    for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
        let digest = Some(("example.com", algorithm));
        let mut h = Harness::new(Transport::Udp, Rules { digest, max_expires: 600, ..rules() }, 3600);
        let t0 = h.now;
        h.ua.start(t0);
        h.run_until(t0 + Duration::from_secs(1));
        assert!(matches!(h.ua.registration(), Some(RegistrationState::Registered { .. })), "{algorithm:?}");
        h.ua.send_request(h.now, Request::message("sip:bob@example.com", "text/plain", b"hi".to_vec())).unwrap();
        h.run_until(t0 + Duration::from_secs(700));
        let seen: Vec<(String, &str, bool)> = h
            .seen
            .iter()
            .map(|(_, r)| {
                let m = Message::parse(r.as_bytes()).unwrap();
                let creds = m.authorization().next().is_some() || m.proxy_authorization().next().is_some();
                (m.method().unwrap().as_str().to_owned(), line(r, "CSeq"), creds)
            })
            .collect();
        let expect: Vec<(String, &str, bool)> = [
            ("REGISTER", "1 REGISTER", false),
            ("REGISTER", "2 REGISTER", true),
            ("MESSAGE", "1 MESSAGE", false),
            ("MESSAGE", "2 MESSAGE", true),
            // The refresh at 540 s is challenged again (a fresh REGISTER).
            ("REGISTER", "3 REGISTER", false),
            ("REGISTER", "4 REGISTER", true),
        ]
        .into_iter()
        .map(|(a, b, c)| (a.to_owned(), b, c))
        .collect();
        assert_eq!(seen, expect, "{algorithm:?}");
        let outcome = h.events.iter().find_map(|(_, e)| match e {
            Event::Outcome { result, .. } => Some(result.as_ref().map(|r| r.code).map_err(Clone::clone)),
            _ => None,
        });
        assert_eq!(outcome, Some(Ok(200)));
        // The same Call-ID across the challenge and the answer (§22.2).
        let register_ids: Vec<&str> =
            h.seen.iter().filter(|(_, r)| r.starts_with("REGISTER")).map(|(_, r)| line(r, "Call-ID")).collect();
        assert!(register_ids.iter().all(|c| *c == register_ids[0]));
    }
}

#[test]
fn a_stale_nonce_is_answered_again_and_a_wrong_password_fails() {
    let digest = Some(("example.com", Algorithm::Md5));
    let mut h = Harness::new(Transport::Udp, Rules { digest, one_shot_nonces: true, ..rules() }, 3600);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(1));
    // MESSAGE: 407, answered; a second MESSAGE reuses nothing and is
    // challenged again; both succeed.
    for _ in 0..2 {
        h.ua.send_request(h.now, Request::message("sip:bob@example.com", "text/plain", b"x".to_vec())).unwrap();
    }
    h.run_until(t0 + Duration::from_secs(2));
    let ok = h.events.iter().filter(|(_, e)| matches!(e, Event::Outcome { result: Ok(_), .. })).count();
    assert_eq!(ok, 2);

    // Wrong password: one answer, then the failure is reported.
    let mut h = Harness::new(Transport::Udp, Rules { digest, ..rules() }, 3600);
    h.rules.digest = Some(("example.com", Algorithm::Sha256));
    let mut config = EndpointConfig::new("sip:alice@example.com");
    config.registration = Some(RegistrationConfig::new(&format!("sip:{REGISTRAR}")));
    config.credentials = vec![DigestCredentials::new("alice", "wrong")];
    h.ua = Endpoint::new(config).unwrap();
    h.ua.add_listener(Transport::Udp, UA.parse().unwrap());
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(1));
    assert_eq!(h.registers().len(), 2, "one answer to the challenge, no loop");
    match h.ua.registration() {
        Some(RegistrationState::Failed { error: RequestError::Failure(r), .. }) => assert_eq!(r.code, 401),
        other => panic!("{other:?}"),
    }
}

#[test]
fn registers_with_instance_and_gruu_and_refreshes_before_expiry() {
    let mut h = Harness::new(Transport::Udp, Rules { max_expires: 600, ..rules() }, 3600);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(1500));
    let regs = h.registers();
    // Granted 600 s: refreshed at 540 s and 1080 s.
    let times: Vec<u64> = regs.iter().map(|(t, _)| t.as_secs()).collect();
    assert_eq!(times, [0, 540, 1080]);
    let first = &regs[0].1;
    assert!(first.starts_with(&format!("REGISTER sip:{REGISTRAR};transport=udp SIP/2.0\r\n")), "{first}");
    assert_eq!(line(first, "To"), "<sip:alice@example.com>");
    assert!(line(first, "From").starts_with("<sip:alice@example.com>;tag="));
    assert_eq!(line(first, "Contact"), format!("<sip:alice@{UA}>;+sip.instance=\"<urn:uuid:{INSTANCE}>\""));
    assert_eq!(line(first, "Expires"), "3600");
    assert_eq!(line(first, "Supported"), "gruu");
    // §10.2.4: one Call-ID, CSeq rising.
    let call_ids: Vec<&str> = regs.iter().map(|(_, r)| line(r, "Call-ID")).collect();
    assert!(call_ids.iter().all(|c| *c == call_ids[0]));
    let cseqs: Vec<&str> = regs.iter().map(|(_, r)| line(r, "CSeq")).collect();
    assert_eq!(cseqs, ["1 REGISTER", "2 REGISTER", "3 REGISTER"]);
    let states = h.registration_states();
    assert_eq!(states[0], RegistrationState::Registering);
    assert_eq!(
        states[1],
        RegistrationState::Registered {
            registrar: format!("sip:{REGISTRAR};transport=udp"),
            expires: Duration::from_secs(600),
            contact: format!("sip:alice@{UA}"),
            pub_gruu: Some(format!("sip:alice@example.com;gr=urn:uuid:{INSTANCE}")),
            temp_gruu: Some("sip:tgruu.1@example.com;gr".to_owned()),
        }
    );
    let endpoint: Vec<EndpointState> =
        h.events.iter().filter_map(|(_, e)| if let Event::State(s) = e { Some(*s) } else { None }).collect();
    assert_eq!(endpoint, [EndpointState::Establishing, EndpointState::Established]);
}

#[test]
fn interval_too_brief_is_retried_with_min_expires() {
    let mut h = Harness::new(Transport::Udp, Rules { min_expires: Some(1800), ..rules() }, 300);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(10));
    let regs = h.registers();
    let expires: Vec<&str> = regs.iter().map(|(_, r)| line(r, "Expires")).collect();
    assert_eq!(expires, ["300", "1800"]);
    assert!(
        matches!(h.ua.registration(), Some(RegistrationState::Registered { expires, .. }) if expires.as_secs() == 1800)
    );
}

#[test]
fn a_dropped_registrar_connection_is_reopened_and_registered_again() {
    let mut h = Harness::new(Transport::Tcp, rules(), 3600);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(5));
    let first = h.conn.expect("connected");
    // The registrar's connection breaks.
    h.now = t0 + Duration::from_secs(100);
    h.ua.handle_closed(h.now, first);
    h.run_until(t0 + Duration::from_secs(200));
    let regs = h.registers();
    let times: Vec<u64> = regs.iter().map(|(t, _)| t.as_secs()).collect();
    assert_eq!(times, [0, 100], "registered again at once");
    let second = h.conn.expect("a new connection");
    assert_ne!(first, second);
    // The connection stays up (pinned, with CRLF keep-alives every 90 s)
    // past the ad hoc linger time and the idle limit.
    h.run_until(t0 + Duration::from_secs(2000));
    assert_eq!(h.conn, Some(second));
    assert!(h.keepalives >= 20, "{} keep-alives", h.keepalives);
}

#[test]
fn the_address_the_registrar_saw_goes_into_the_contact() {
    let nat: SocketAddr = "198.51.100.7:40123".parse().unwrap();
    let mut h = Harness::new(Transport::Udp, Rules { nat: Some(nat), ..rules() }, 3600);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(10));
    let regs = h.registers();
    let contacts: Vec<&str> = regs.iter().map(|(_, r)| line(r, "Contact")).collect();
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    assert!(contacts[0].starts_with(&format!("<sip:alice@{UA}>")));
    assert!(contacts[1].starts_with(&format!("<sip:alice@{nat}>")));
    assert!(
        matches!(h.ua.registration(), Some(RegistrationState::Registered { contact, .. }) if *contact == format!("sip:alice@{nat}"))
    );
}

#[test]
fn failures_are_retried_with_back_off_and_reported() {
    let mut h = Harness::new(Transport::Udp, Rules { silent: true, ..rules() }, 3600);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(190));
    // Timer F at 32 s, retry 10 s later; again at 74 s, 20 s later; …
    let firsts: Vec<u64> = {
        let regs = h.registers();
        let mut starts = Vec::new();
        let mut last_call = String::new();
        for (t, r) in &regs {
            let cseq = line(r, "CSeq").to_owned();
            if cseq != last_call {
                starts.push(t.as_secs());
                last_call = cseq;
            }
        }
        starts
    };
    assert_eq!(firsts, [0, 42, 94, 166]);
    let failed: Vec<Duration> = h
        .registration_states()
        .iter()
        .filter_map(|s| if let RegistrationState::Failed { retry_in, .. } = s { Some(*retry_in) } else { None })
        .collect();
    assert_eq!(failed, [Duration::from_secs(10), Duration::from_secs(20), Duration::from_secs(40)]);
    assert_eq!(h.ua.state(), EndpointState::Establishing);
}

#[test]
fn requests_go_through_the_registrar_and_shutdown_unregisters_first() {
    let mut h = Harness::new(Transport::Udp, rules(), 3600);
    let t0 = h.now;
    h.ua.start(t0);
    h.run_until(t0 + Duration::from_secs(1));
    h.ua.send_request(h.now, Request::message("sip:bob@example.com", "text/plain", b"hi".to_vec())).unwrap();
    h.run_until(t0 + Duration::from_secs(2));
    let message = h.seen.iter().find(|(_, r)| r.starts_with("MESSAGE ")).expect("sent").1.clone();
    assert!(message.starts_with("MESSAGE sip:bob@example.com SIP/2.0\r\n"), "{message}");
    assert_eq!(line(&message, "Route"), format!("<sip:{REGISTRAR};transport=udp;lr>"));
    h.ua.shutdown(h.now);
    assert_eq!(h.ua.state(), EndpointState::Draining);
    h.run_until(t0 + Duration::from_secs(3));
    let last = h.registers().last().unwrap().1.clone();
    assert_eq!(line(&last, "Expires"), "0");
    assert_eq!(h.ua.state(), EndpointState::Terminated);
    assert!(matches!(h.events.last(), Some((_, Event::ShutDown))));
    assert_eq!(h.ua.registration(), Some(&RegistrationState::Unregistered));
}
