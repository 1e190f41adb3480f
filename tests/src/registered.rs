//! One scenario, any registrar: two sipline endpoints register with a
//! server (Kamailio, or `sipline serve`) over UDP, TCP or TLS and live
//! their whole life through it, so that the same assertions hold against
//! each (issue 8: "endpoints must behave the same against it as against
//! Kamailio").
//!
//! alice and bob register with digest authentication, send each other
//! MESSAGE through the server (its 407 answered with credentials, which
//! the server consumes), refresh their 10 s bindings and stay reachable
//! past the first binding's expiry; then alice unregisters and becomes
//! unreachable (480) — she can still send — until she registers again;
//! and bob shuts down, unregistering first (480).

use crate::kamailio::{Kamailio, User, DOMAIN, LOOPBACK_V4, USERS};
use crate::runtimes::Runtime;
use sipline::auth::DigestCredentials;
use sipline::driver::Error;
use sipline::endpoint::{EndpointConfig, Event, RegistrationConfig, RegistrationState, Request, RequestError};
use sipline::transport::{TlsConfig, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The registration interval asked for: the servers' Min-Expires, so the
/// endpoint refreshes after 5 s (halfway, for short intervals).
pub const EXPIRES: u32 = 10;

/// The longest any single step may take (a REGISTER with its challenge, a
/// MESSAGE through the proxy with its own).
const STEP: Duration = Duration::from_secs(10);

/// A registrar and proxy for [`DOMAIN`] with the users of [`USERS`], as
/// the scenario sees it.
pub trait SipServer {
    /// What it is, for failure messages.
    fn name(&self) -> &'static str;
    /// A URI reaching it over `transport` (the endpoints' registrar).
    fn uri(&self, transport: Transport) -> String;
    /// The TLS config of an endpoint registering over TLS: an identity to
    /// listen with (so that its Contact names a TLS address) and the
    /// roots that verify the server.
    fn endpoint_tls(&self) -> TlsConfig;
    /// Its log so far, for failure messages.
    fn log(&self) -> String;
    /// How many REGISTER requests for `user`'s AOR it has logged (each
    /// challenge and each answer).
    fn registers(&self, user: &str) -> usize;
    /// Checks, from its log, that requests came over `transport`.
    fn check_transport(&self, transport: Transport) -> Result<(), String>;
    /// Its UDP address on 127.0.0.1 (where requests it relays come from,
    /// and its Record-Route).
    fn udp_addr(&self) -> SocketAddr;
    /// Whether its log shows a `method` request of the call `call_id`.
    fn saw_request(&self, method: &str, call_id: &str) -> bool;
}

impl SipServer for Kamailio {
    fn name(&self) -> &'static str {
        "Kamailio"
    }

    fn uri(&self, transport: Transport) -> String {
        Kamailio::uri(self, transport)
    }

    fn endpoint_tls(&self) -> TlsConfig {
        let ca = self.ca().expect("Kamailio was started without TLS");
        ca.issue(&["127.0.0.1"]).tls(&[ca])
    }

    fn log(&self) -> String {
        Kamailio::log(self)
    }

    fn registers(&self, user: &str) -> usize {
        let from = format!("(From sip:{user}@{DOMAIN},");
        self.log().lines().filter(|l| l.contains("sipline: request REGISTER ") && l.contains(&from)).count()
    }

    fn check_transport(&self, transport: Transport) -> Result<(), String> {
        let log = self.log();
        let t = format!("/{}", transport.as_str().to_ascii_lowercase());
        if log.contains(&t) {
            Ok(())
        } else {
            Err(format!("nothing over {}:\n{log}", transport.as_str()))
        }
    }

    fn udp_addr(&self) -> SocketAddr {
        Kamailio::udp_addr(self)
    }

    fn saw_request(&self, method: &str, call_id: &str) -> bool {
        // Its log names every request it handles, with the Call-ID.
        let request = format!("sipline: request {method} ");
        self.log().lines().any(|l| l.contains(&request) && l.contains(call_id))
    }
}

/// One registered endpoint and what it has reported so far.
struct Member<'s, R: Runtime, S: SipServer> {
    name: &'static str,
    server: &'s S,
    endpoint: R::Endpoint,
    events: R::Events,
    seen: Vec<Event>,
}

/// The harness's user called `name` (see [`USERS`]).
pub fn user(name: &str) -> User {
    *USERS.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("no user {name}"))
}

impl<'s, R: Runtime, S: SipServer> Member<'s, R, S> {
    /// Binds `name` registering with `server` over `transport`, listening
    /// on 127.0.0.1 over that transport.
    fn bind(rt: &R, server: &'s S, transport: Transport, name: &'static str) -> Member<'s, R, S> {
        let user = user(name);
        let mut config = EndpointConfig::new(&user.aor());
        config.credentials.push(DigestCredentials::new(user.name, user.password));
        let mut registration = RegistrationConfig::new(&server.uri(transport));
        registration.expires = EXPIRES;
        registration.retry_base = Duration::from_secs(1);
        config.registration = Some(registration);
        if transport == Transport::Tls {
            config.transport.tls = server.endpoint_tls();
        }
        config = config.listen(transport, SocketAddr::new(LOOPBACK_V4, 0));
        let (endpoint, events) = rt.bind(config).unwrap_or_else(|e| panic!("{}: bind {name}: {e}", R::NAME));
        Member { name, server, endpoint, events, seen: Vec::new() }
    }

    /// Waits (at most `limit`) for an event `wanted` accepts and returns
    /// it; every event read is kept in `seen`. Panics on timeout with
    /// what was seen and the server's log.
    fn wait_for(&mut self, rt: &R, what: &str, limit: Duration, mut wanted: impl FnMut(&Event) -> bool) -> Event {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} via {}: {} saw no {what} within {limit:?}; events: {:#?}\n--- log ---\n{}",
                R::NAME,
                self.server.name(),
                self.name,
                self.seen,
                self.server.log()
            );
            if let Some(event) = rt.next_event(&mut self.events, left.min(Duration::from_millis(100))) {
                self.seen.push(event.clone());
                if wanted(&event) {
                    return event;
                }
            }
        }
    }

    fn wait_registered(&mut self, rt: &R) -> String {
        let event = self.wait_for(rt, "Registered", STEP, |e| {
            matches!(e, Event::Registration(RegistrationState::Registered { .. }))
        });
        match event {
            Event::Registration(RegistrationState::Registered { contact, expires, .. }) => {
                assert_eq!(expires, Duration::from_secs(u64::from(EXPIRES)), "{}: {}", R::NAME, self.name);
                contact
            }
            _ => unreachable!(),
        }
    }

    /// Waits for the MESSAGE `body` and checks who it came from.
    fn wait_message(&mut self, rt: &R, from: &str, body: &str) {
        let event = self.wait_for(
            rt,
            &format!("MESSAGE {body:?}"),
            STEP,
            |e| matches!(e, Event::Message { body: b, .. } if b == body.as_bytes()),
        );
        let Event::Message { from: sender, content_type, request, .. } = event else { unreachable!() };
        assert_eq!(sender, from, "{}: {} got {body:?}", R::NAME, self.name);
        assert_eq!(content_type.as_deref(), Some("text/plain"));
        // It came through the proxy, which consumed the sender's
        // credentials (RFC 3261 §22.3: they were for its realm).
        let text = String::from_utf8_lossy(&request);
        assert!(!text.contains("Proxy-Authorization"), "{}: credentials not consumed:\n{text}", self.server.name());
        assert!(text.starts_with("MESSAGE sip:"), "{text}");
    }

    /// Fails the test if the registration ever failed.
    fn assert_never_failed(&self) {
        let failed: Vec<&Event> =
            self.seen.iter().filter(|e| matches!(e, Event::Registration(RegistrationState::Failed { .. }))).collect();
        assert!(
            failed.is_empty(),
            "{} via {}: {}'s registration failed: {failed:#?}\n--- log ---\n{}",
            R::NAME,
            self.server.name(),
            self.name,
            self.server.log()
        );
    }

    /// Sends `body` to `to`'s address of record, through the server.
    fn send(&self, rt: &R, to: &str, body: &str) -> Result<u16, Error> {
        let aor = format!("sip:{to}@{DOMAIN}");
        rt.send(&self.endpoint, Request::message(&aor, "text/plain", body.as_bytes().to_vec())).map(|r| r.code)
    }

    /// Sends `body` to `to` and expects the 200.
    fn send_ok(&self, rt: &R, to: &str, body: &str) {
        let sent = self.send(rt, to, body).map_err(|e| e.to_string());
        assert_eq!(
            sent,
            Ok(200),
            "{} via {}: {} to {to}\n{}",
            R::NAME,
            self.server.name(),
            self.name,
            self.server.log()
        );
    }

    /// Sends to `to` and expects the failure `code`.
    fn send_fails(&self, rt: &R, to: &str, code: u16) {
        match self.send(rt, to, "anyone there?") {
            Err(Error::Failed(RequestError::Failure(r))) => assert_eq!(r.code, code, "{}: {r:?}", R::NAME),
            other => {
                panic!("{} via {}: MESSAGE to {to}: {other:?}\n{}", R::NAME, self.server.name(), self.server.log())
            }
        }
    }
}

/// The whole life of two endpoints registered with `server` over
/// `transport` (see the module's documentation).
pub fn registered_endpoints<R: Runtime, S: SipServer>(server: &S, transport: Transport) {
    let rt = R::new();
    let t = transport.as_str();
    let mut alice = Member::<R, S>::bind(&rt, server, transport, "alice");
    let mut bob = Member::<R, S>::bind(&rt, server, transport, "bob");

    // Both register (401, then credentials, then 200).
    let alice_contact = alice.wait_registered(&rt);
    let bob_contact = bob.wait_registered(&rt);
    let registered_at = Instant::now();
    for contact in [&alice_contact, &bob_contact] {
        let listening = match transport {
            Transport::Udp => String::new(),
            other => format!(";transport={}", other.as_str().to_ascii_lowercase()),
        };
        assert!(contact.ends_with(&listening), "{}: Contact {contact} over {t}", R::NAME);
    }
    if let Err(e) = server.check_transport(transport) {
        panic!("{} via {}: {e}", R::NAME, server.name());
    }

    // MESSAGE both ways through the proxy.
    let (alice_aor, bob_aor) = (format!("sip:alice@{DOMAIN}"), format!("sip:bob@{DOMAIN}"));
    let ab = format!("alice to bob over {t} ({})", R::NAME);
    alice.send_ok(&rt, "bob", &ab);
    bob.wait_message(&rt, &alice_aor, &ab);
    let ba = format!("bob to alice over {t} ({})", R::NAME);
    bob.send_ok(&rt, "alice", &ba);
    alice.wait_message(&rt, &bob_aor, &ba);

    // Refresh: each sends REGISTER again after about 5 s …
    // (The server's log comes through a pipe and a reader thread: on a
    // loaded machine it may lag what the endpoints saw.)
    let logged = crate::kamailio::wait_until(Duration::from_secs(15), || {
        server.registers("alice") >= 2 && server.registers("bob") >= 2
    });
    assert!(logged, "a challenge and an answer each:\n{}", server.log());
    let (alice_before, bob_before) = (server.registers("alice"), server.registers("bob"));
    let refreshed = crate::kamailio::wait_until(Duration::from_secs(EXPIRES.into()), || {
        server.registers("alice") > alice_before && server.registers("bob") > bob_before
    });
    assert!(refreshed, "{} via {}: no refresh over {t} within {EXPIRES} s:\n{}", R::NAME, server.name(), server.log());
    // … and both are still reachable after the first binding would have
    // lapsed (a lookup skips expired bindings: 480).
    let lapsed = registered_at + Duration::from_secs(u64::from(EXPIRES) + 1);
    std::thread::sleep(lapsed.saturating_duration_since(Instant::now()));
    let ab2 = format!("alice to bob after the refresh over {t} ({})", R::NAME);
    alice.send_ok(&rt, "bob", &ab2);
    bob.wait_message(&rt, &alice_aor, &ab2);
    let ba2 = format!("bob to alice after the refresh over {t} ({})", R::NAME);
    bob.send_ok(&rt, "alice", &ba2);
    alice.wait_message(&rt, &bob_aor, &ba2);
    alice.assert_never_failed();
    bob.assert_never_failed();

    // alice unregisters: the server has no binding for her any more.
    R::unregister(&alice.endpoint);
    alice.wait_for(&rt, "Unregistered", STEP, |e| matches!(e, Event::Registration(RegistrationState::Unregistered)));
    bob.send_fails(&rt, "alice", 480);
    // She can still send (through the server, with credentials).
    alice.send_ok(&rt, "bob", "still here");
    bob.wait_message(&rt, &alice_aor, "still here");

    // She registers again and is reachable again.
    R::reregister(&alice.endpoint);
    alice.wait_registered(&rt);
    let back = format!("welcome back over {t} ({})", R::NAME);
    bob.send_ok(&rt, "alice", &back);
    alice.wait_message(&rt, &bob_aor, &back);

    // bob shuts down, unregistering on the way; then alice cannot reach him.
    rt.shutdown(&bob.endpoint);
    bob.wait_for(&rt, "ShutDown", STEP, |e| matches!(e, Event::ShutDown));
    assert!(
        bob.seen.iter().any(|e| matches!(e, Event::Registration(RegistrationState::Unregistered))),
        "{}: bob did not unregister at shutdown: {:#?}",
        R::NAME,
        bob.seen
    );
    alice.send_fails(&rt, "bob", 480);
    rt.shutdown(&alice.endpoint);
}
