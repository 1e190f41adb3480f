//! sipline endpoints against real peers, through each runtime
//! (`sipline-tokio`, `sipline-smol`, `sipline-blocking`; see the `suite!`
//! invocation at the bottom):
//!
//! - registered endpoints: alice and bob register with Kamailio
//!   (`tests/interop/kamailio.cfg`) with digest authentication over UDP,
//!   TCP and TLS, send each other MESSAGE through it (its 407 answered
//!   with credentials), refresh their 10 s bindings (Kamailio's
//!   `min_expires`) and stay reachable past the first binding's expiry,
//!   then alice unregisters and becomes unreachable (480) until she
//!   registers again, and bob shuts down, unregistering first (480);
//! - peer to peer: a SIPp UAC (`tests/interop/sipp/message_uac.xml`) sends
//!   MESSAGE straight to a sipline endpoint over UDP and TCP.
//!
//! Each test starts its own Kamailio on its own loopback ports; every wait
//! is bounded, every process runs under `timeout` (see
//! `sipline_tests::kamailio`).

use sipline::auth::DigestCredentials;
use sipline::driver::Error;
use sipline::endpoint::{EndpointConfig, Event, RegistrationConfig, RegistrationState, Request, RequestError};
use sipline::transport::Transport;
use sipline_tests::kamailio::{Kamailio, KamailioOptions, KamailioTls, Sipp, DOMAIN, LOOPBACK_V4, USERS};
use sipline_tests::runtimes::{Blocking, Runtime, Smol, Tokio};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The registration interval asked for: Kamailio's `min_expires`, so the
/// endpoint refreshes after 5 s (halfway, for short intervals).
const EXPIRES: u32 = 10;

/// The longest any single step may take (a REGISTER with its challenge, a
/// MESSAGE through the proxy with its own).
const STEP: Duration = Duration::from_secs(10);

/// One registered endpoint and what it has reported so far.
struct User<R: Runtime> {
    name: &'static str,
    endpoint: R::Endpoint,
    events: R::Events,
    seen: Vec<Event>,
}

impl<R: Runtime> User<R> {
    /// Binds `name` (a Kamailio user) registering with `kamailio` over
    /// `transport`, listening on 127.0.0.1 over that transport.
    fn bind(rt: &R, kamailio: &Kamailio, transport: Transport, name: &'static str) -> User<R> {
        let user = kamailio.user(name);
        let mut config = EndpointConfig::new(&user.aor());
        config.credentials.push(DigestCredentials::new(user.name, user.password));
        let mut registration = RegistrationConfig::new(&kamailio.uri(transport));
        registration.expires = EXPIRES;
        registration.retry_base = Duration::from_secs(1);
        config.registration = Some(registration);
        if transport == Transport::Tls {
            // An identity to listen with (so that the Contact names a TLS
            // address), and Kamailio's CA to verify it with.
            let ca = kamailio.ca().expect("TLS is on");
            config.transport.tls = ca.issue(&["127.0.0.1"]).tls(&[ca]);
        }
        config = config.listen(transport, SocketAddr::new(LOOPBACK_V4, 0));
        let (endpoint, events) = rt.bind(config).unwrap_or_else(|e| panic!("{}: bind {name}: {e}", R::NAME));
        User { name, endpoint, events, seen: Vec::new() }
    }

    /// Waits (at most `limit`) for an event `wanted` accepts and returns
    /// it; every event read is kept in `seen`. Panics on timeout with
    /// what was seen and Kamailio's log.
    fn wait_for(
        &mut self,
        rt: &R,
        kamailio: &Kamailio,
        what: &str,
        limit: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: {} saw no {what} within {limit:?}; events: {:#?}\n--- Kamailio log ---\n{}",
                R::NAME,
                self.name,
                self.seen,
                kamailio.log()
            );
            if let Some(event) = rt.next_event(&mut self.events, left.min(Duration::from_millis(100))) {
                self.seen.push(event.clone());
                if wanted(&event) {
                    return event;
                }
            }
        }
    }

    fn wait_registered(&mut self, rt: &R, kamailio: &Kamailio) -> String {
        let event = self.wait_for(rt, kamailio, "Registered", STEP, |e| {
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
    fn wait_message(&mut self, rt: &R, kamailio: &Kamailio, from: &str, body: &str) {
        let event = self.wait_for(
            rt,
            kamailio,
            &format!("MESSAGE {body:?}"),
            STEP,
            |e| matches!(e, Event::Message { body: b, .. } if b == body.as_bytes()),
        );
        let Event::Message { from: sender, content_type, request, .. } = event else { unreachable!() };
        assert_eq!(sender, from, "{}: {} got {body:?}", R::NAME, self.name);
        assert_eq!(content_type.as_deref(), Some("text/plain"));
        // It came through Kamailio, which consumed the sender's credentials.
        let text = String::from_utf8_lossy(&request);
        assert!(!text.contains("Proxy-Authorization"), "credentials not consumed:\n{text}");
        assert!(text.starts_with("MESSAGE sip:"), "{text}");
    }

    /// Fails the test if the registration ever failed.
    fn assert_never_failed(&self) {
        let failed: Vec<&Event> =
            self.seen.iter().filter(|e| matches!(e, Event::Registration(RegistrationState::Failed { .. }))).collect();
        assert!(failed.is_empty(), "{}: {}'s registration failed: {failed:#?}", R::NAME, self.name);
    }
}

/// Sends `body` from `from` to `to`'s address of record, through Kamailio.
fn send<R: Runtime>(rt: &R, from: &User<R>, to: &str, body: &str) -> Result<u16, Error> {
    let aor = format!("sip:{to}@{DOMAIN}");
    rt.send(&from.endpoint, Request::message(&aor, "text/plain", body.as_bytes().to_vec())).map(|r| r.code)
}

/// The REGISTER requests Kamailio has logged from `user`.
fn registers(kamailio: &Kamailio, user: &str) -> usize {
    let from = format!("(From sip:{user}@{DOMAIN},");
    kamailio.log().lines().filter(|l| l.contains("sipline: request REGISTER ") && l.contains(&from)).count()
}

/// The whole life of two registered endpoints over `transport`.
fn registered_endpoints<R: Runtime>(transport: Transport) {
    let tls = if transport == Transport::Tls { KamailioTls::On } else { KamailioTls::Off };
    let kamailio = Kamailio::start(&KamailioOptions { tls, ..KamailioOptions::default() });
    let rt = R::new();
    let t = transport.as_str();
    let mut alice = User::<R>::bind(&rt, &kamailio, transport, "alice");
    let mut bob = User::<R>::bind(&rt, &kamailio, transport, "bob");

    // Both register (401, then credentials, then 200).
    let alice_contact = alice.wait_registered(&rt, &kamailio);
    let bob_contact = bob.wait_registered(&rt, &kamailio);
    let registered_at = Instant::now();
    for contact in [&alice_contact, &bob_contact] {
        let listening = match transport {
            Transport::Udp => String::new(),
            other => format!(";transport={}", other.as_str().to_ascii_lowercase()),
        };
        assert!(contact.ends_with(&listening), "{}: Contact {contact} over {t}", R::NAME);
    }
    let log = kamailio.log();
    assert!(log.contains(&format!("/{}", t.to_ascii_lowercase())), "nothing over {t}:\n{log}");

    // MESSAGE both ways through the proxy.
    let ab = format!("alice to bob over {t} ({})", R::NAME);
    assert_eq!(send(&rt, &alice, "bob", &ab).map_err(|e| e.to_string()), Ok(200), "{}", kamailio.log());
    bob.wait_message(&rt, &kamailio, &format!("sip:alice@{DOMAIN}"), &ab);
    let ba = format!("bob to alice over {t} ({})", R::NAME);
    assert_eq!(send(&rt, &bob, "alice", &ba).map_err(|e| e.to_string()), Ok(200), "{}", kamailio.log());
    alice.wait_message(&rt, &kamailio, &format!("sip:bob@{DOMAIN}"), &ba);

    // Refresh: each sends REGISTER again after about 5 s …
    let (alice_before, bob_before) = (registers(&kamailio, "alice"), registers(&kamailio, "bob"));
    assert!(alice_before >= 2 && bob_before >= 2, "a challenge and an answer each:\n{}", kamailio.log());
    let refreshed = sipline_tests::kamailio::wait_until(Duration::from_secs(EXPIRES.into()), || {
        registers(&kamailio, "alice") > alice_before && registers(&kamailio, "bob") > bob_before
    });
    assert!(refreshed, "{}: no refresh over {t} within {EXPIRES} s:\n{}", R::NAME, kamailio.log());
    // … and both are still reachable after the first binding would have
    // lapsed (Kamailio's lookup skips expired contacts: 480).
    let lapsed = registered_at + Duration::from_secs(u64::from(EXPIRES) + 1);
    std::thread::sleep(lapsed.saturating_duration_since(Instant::now()));
    let ab2 = format!("alice to bob after the refresh over {t} ({})", R::NAME);
    assert_eq!(send(&rt, &alice, "bob", &ab2).map_err(|e| e.to_string()), Ok(200), "{}", kamailio.log());
    bob.wait_message(&rt, &kamailio, &format!("sip:alice@{DOMAIN}"), &ab2);
    let ba2 = format!("bob to alice after the refresh over {t} ({})", R::NAME);
    assert_eq!(send(&rt, &bob, "alice", &ba2).map_err(|e| e.to_string()), Ok(200), "{}", kamailio.log());
    alice.wait_message(&rt, &kamailio, &format!("sip:bob@{DOMAIN}"), &ba2);
    alice.assert_never_failed();
    bob.assert_never_failed();

    // alice unregisters: Kamailio has no binding for her any more.
    R::unregister(&alice.endpoint);
    alice.wait_for(&rt, &kamailio, "Unregistered", STEP, |e| {
        matches!(e, Event::Registration(RegistrationState::Unregistered))
    });
    match send(&rt, &bob, "alice", "anyone there?") {
        Err(Error::Failed(RequestError::Failure(r))) => assert_eq!(r.code, 480, "{}: {r:?}", R::NAME),
        other => panic!("{}: MESSAGE to the unregistered alice: {other:?}\n{}", R::NAME, kamailio.log()),
    }
    // She can still send (through the registrar, with credentials).
    assert_eq!(send(&rt, &alice, "bob", "still here").map_err(|e| e.to_string()), Ok(200));
    bob.wait_message(&rt, &kamailio, &format!("sip:alice@{DOMAIN}"), "still here");

    // She registers again and is reachable again.
    R::reregister(&alice.endpoint);
    alice.wait_registered(&rt, &kamailio);
    let back = format!("welcome back over {t} ({})", R::NAME);
    assert_eq!(send(&rt, &bob, "alice", &back).map_err(|e| e.to_string()), Ok(200), "{}", kamailio.log());
    alice.wait_message(&rt, &kamailio, &format!("sip:bob@{DOMAIN}"), &back);

    // bob shuts down, unregistering on the way; then alice cannot reach him.
    rt.shutdown(&bob.endpoint);
    bob.wait_for(&rt, &kamailio, "ShutDown", STEP, |e| matches!(e, Event::ShutDown));
    assert!(
        bob.seen.iter().any(|e| matches!(e, Event::Registration(RegistrationState::Unregistered))),
        "{}: bob did not unregister at shutdown: {:#?}",
        R::NAME,
        bob.seen
    );
    match send(&rt, &alice, "bob", "gone?") {
        Err(Error::Failed(RequestError::Failure(r))) => assert_eq!(r.code, 480, "{}: {r:?}", R::NAME),
        other => panic!("{}: MESSAGE to the shut-down bob: {other:?}\n{}", R::NAME, kamailio.log()),
    }
    rt.shutdown(&alice.endpoint);
}

/// A SIPp UAC sends MESSAGE straight to a peer-to-peer sipline endpoint
/// over `transport`: SIPp gets its 200, the endpoint reports the body.
fn sipp_message_to_endpoint<R: Runtime>(transport: Transport) {
    let rt = R::new();
    let config = EndpointConfig::new("sip:bob@127.0.0.1").listen(transport, SocketAddr::new(LOOPBACK_V4, 0));
    let (endpoint, mut events) = rt.bind(config).expect("bind");
    let at = R::local_addr(&endpoint, transport).expect("bound");
    let out = Sipp::scenario("message_uac.xml").remote(at).transport(transport).from_to(USERS[2], "bob", DOMAIN).run();
    assert!(out.success(), "{}: SIPp MESSAGE over {}:\n{out}", R::NAME, transport.as_str());
    assert!(out.messages.contains("SIP/2.0 200 OK"), "{out}");
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    let message = loop {
        assert!(Instant::now() < deadline, "{}: no MESSAGE event; events: {seen:#?}", R::NAME);
        match rt.next_event(&mut events, Duration::from_millis(100)) {
            Some(Event::Message { from, content_type, body, source, .. }) => break (from, content_type, body, source),
            Some(other) => seen.push(other),
            None => {}
        }
    };
    let (from, content_type, body, source) = message;
    assert_eq!(from, format!("sip:carol@{DOMAIN}"));
    assert_eq!(content_type.as_deref(), Some("text/plain"));
    assert_eq!(String::from_utf8_lossy(&body).trim_end(), "Hello from SIPp, call 1");
    assert_eq!(source.transport, transport);
    rt.shutdown(&endpoint);
}

macro_rules! suite {
    ($($name:ident => $rt:ty),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[test]
            fn registered_endpoints_over_udp() {
                registered_endpoints::<$rt>(Transport::Udp);
            }
            #[test]
            fn registered_endpoints_over_tcp() {
                registered_endpoints::<$rt>(Transport::Tcp);
            }
            #[test]
            fn registered_endpoints_over_tls() {
                registered_endpoints::<$rt>(Transport::Tls);
            }
            #[test]
            fn sipp_message_to_endpoint_over_udp() {
                sipp_message_to_endpoint::<$rt>(Transport::Udp);
            }
            #[test]
            fn sipp_message_to_endpoint_over_tcp() {
                sipp_message_to_endpoint::<$rt>(Transport::Tcp);
            }
        }
    )*};
}

suite!(tokio => Tokio, smol => Smol, blocking => Blocking);
