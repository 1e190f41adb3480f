//! sipline endpoints against real peers, through each runtime
//! (`sipline-tokio`, `sipline-smol`, `sipline-blocking`; see the `suite!`
//! invocation at the bottom):
//!
//! - registered endpoints: the scenario of `sipline_tests::registered`
//!   (register with digest, MESSAGE both ways, refresh, unregister,
//!   shutdown) with Kamailio (`tests/interop/kamailio.cfg`, `min_expires`
//!   10 s) over UDP, TCP and TLS — the same scenario runs against
//!   `sipline serve` in `cli/tests/serve_endpoints.rs`;
//! - peer to peer: a SIPp UAC (`tests/interop/sipp/message_uac.xml`) sends
//!   MESSAGE straight to a sipline endpoint over UDP and TCP.
//!
//! Each test starts its own Kamailio on its own loopback ports; every wait
//! is bounded, every process runs under `timeout` (see
//! `sipline_tests::kamailio`).

use sipline::endpoint::{EndpointConfig, Event};
use sipline::transport::Transport;
use sipline_tests::kamailio::{Kamailio, KamailioOptions, KamailioTls, Sipp, DOMAIN, LOOPBACK_V4, USERS};
use sipline_tests::registered::registered_endpoints;
use sipline_tests::runtimes::{Blocking, Runtime, Smol, Tokio};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The longest a step may take.
const STEP: Duration = Duration::from_secs(10);

/// The scenario of `sipline_tests::registered` against a Kamailio of its
/// own over `transport`.
fn registered_with_kamailio<R: Runtime>(transport: Transport) {
    let tls = if transport == Transport::Tls { KamailioTls::On } else { KamailioTls::Off };
    let kamailio = Kamailio::start(&KamailioOptions { tls, ..KamailioOptions::default() });
    registered_endpoints::<R, Kamailio>(&kamailio, transport);
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
                registered_with_kamailio::<$rt>(Transport::Udp);
            }
            #[test]
            fn registered_endpoints_over_tcp() {
                registered_with_kamailio::<$rt>(Transport::Tcp);
            }
            #[test]
            fn registered_endpoints_over_tls() {
                registered_with_kamailio::<$rt>(Transport::Tls);
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
