//! Interop with real SIP peers nobody here wrote: Kamailio 5.6 as registrar
//! and proxy (`tests/interop/kamailio.cfg`) and SIPp
//! (`tests/interop/sipp/`), installed from Debian packages by
//! `scripts/install-interop-deps` when missing (see
//! `sipline_tests::kamailio`). Each test starts its own Kamailio on its own
//! loopback ports; every process is bounded by `timeout`.
//!
//! These prove the peers and the scenarios themselves (SIPp against
//! Kamailio, SIPp against SIPp), the routes of the config that need no
//! credentials (raw datagrams), and that sipline reaches Kamailio over UDP,
//! TCP and TLS, IPv4 and IPv6.

use sipline::driver::Error;
use sipline::endpoint::{EndpointConfig, Request, RequestError};
use sipline::message::Method;
use sipline::transport::{TlsConfig, Transport};
use sipline_tests::kamailio::{
    free_port, status_code, udp_exchange, DigestAlgorithm, Kamailio, KamailioOptions, KamailioTls, Sipp, SippOutput,
    DOMAIN, LOOPBACK_V4, LOOPBACK_V6, USERS,
};
use std::net::SocketAddr;
use std::time::Duration;

fn assert_ok(what: &str, out: &SippOutput, kamailio: Option<&Kamailio>) {
    assert!(
        out.success(),
        "{what} failed:\n{out}\n--- Kamailio log ---\n{}",
        kamailio.map(Kamailio::log).unwrap_or_default()
    );
}

/// (a) SIPp registers alice over UDP: 401, then 200 with a GRUU.
#[test]
fn sipp_registers_over_udp() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let out = Sipp::scenario("register_auth.xml")
        .remote(kamailio.udp_addr())
        .register_as(kamailio.user("alice"), DOMAIN)
        .run();
    assert_ok("REGISTER over UDP", &out, Some(&kamailio));
    assert!(out.messages.contains("SIP/2.0 401"), "no challenge seen:\n{out}");
    assert!(out.messages.contains("pub-gruu="), "no GRUU in the 200:\n{out}");
}

/// (b) The same over TCP.
#[test]
fn sipp_registers_over_tcp() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let out = Sipp::scenario("register_auth.xml")
        .remote(kamailio.tcp_addr())
        .transport(Transport::Tcp)
        .register_as(kamailio.user("bob"), DOMAIN)
        .run();
    assert_ok("REGISTER over TCP", &out, Some(&kamailio));
    assert!(out.messages.contains("TCP message received"), "not over TCP:\n{out}");
}

/// A wrong password is challenged again, never accepted.
#[test]
fn sipp_register_with_a_wrong_password_fails() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let mut carol = kamailio.user("carol");
    carol.password = "not-carols";
    let out = Sipp::scenario("register_auth.xml").remote(kamailio.udp_addr()).register_as(carol, DOMAIN).run();
    assert!(!out.success(), "a wrong password was accepted:\n{out}");
    assert!(!out.messages.contains("SIP/2.0 200"), "a wrong password was accepted:\n{out}");
}

/// (c) The MESSAGE scenarios against each other, no proxy in between.
#[test]
fn sipp_message_uac_to_sipp_uas() {
    let uas_addr = SocketAddr::new(LOOPBACK_V4, free_port(&[LOOPBACK_V4]));
    let uas = Sipp::scenario("message_uas.xml").local(uas_addr).time_limit(Duration::from_secs(15)).spawn();
    assert!(uas.wait_listening(Duration::from_secs(10)), "SIPp UAS not up:\n{}", uas.wait());
    let uac = Sipp::scenario("message_uac.xml").remote(uas_addr).from_to(USERS[2], "alice", DOMAIN).run();
    let uas = uas.wait();
    assert_ok("MESSAGE (UAC)", &uac, None);
    assert_ok("MESSAGE (UAS)", &uas, None);
    assert!(uas.messages.contains("Hello from SIPp"), "body not carried:\n{uas}");
}

/// (d) Kamailio routes a MESSAGE from an authenticated user (carol, 407
/// then credentials) to a registered SIPp UAS (alice).
#[test]
fn kamailio_routes_message_to_registered_sipp() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let uas_addr = SocketAddr::new(LOOPBACK_V4, free_port(&[LOOPBACK_V4]));

    // alice's binding: the Contact is the address the UAS will listen on.
    let reg = Sipp::scenario("register_auth.xml")
        .remote(kamailio.udp_addr())
        .local(uas_addr)
        .register_as(kamailio.user("alice"), DOMAIN)
        .run();
    assert_ok("REGISTER", &reg, Some(&kamailio));

    let uas = Sipp::scenario("message_uas.xml").local(uas_addr).time_limit(Duration::from_secs(15)).spawn();
    assert!(uas.wait_listening(Duration::from_secs(10)), "SIPp UAS not up:\n{}", uas.wait());
    let uac = Sipp::scenario("message_uac.xml")
        .remote(kamailio.udp_addr())
        .from_to(kamailio.user("carol"), "alice", DOMAIN)
        .run();
    let uas = uas.wait();
    assert_ok("MESSAGE via Kamailio (UAC)", &uac, Some(&kamailio));
    assert_ok("MESSAGE via Kamailio (UAS)", &uas, Some(&kamailio));
    assert!(uac.messages.contains("SIP/2.0 407"), "no proxy challenge:\n{uac}");
    assert!(uac.messages.contains("Proxy-Authorization: Digest"), "no credentials sent:\n{uac}");
    // What alice got went through Kamailio, without carol's credentials.
    let via = format!("Via: SIP/2.0/UDP {};branch=", kamailio.udp_addr());
    assert!(uas.messages.contains(&via), "not relayed by Kamailio:\n{uas}");
    assert!(!uas.messages.contains("Proxy-Authorization"), "credentials not consumed:\n{uas}");
    assert!(uas.messages.contains("Hello from SIPp"), "body not carried:\n{uas}");
}

/// (c) The INVITE scenarios against each other: INVITE, 180, 200, ACK,
/// BYE, 200.
#[test]
fn sipp_invite_uac_to_sipp_uas() {
    let uas_addr = SocketAddr::new(LOOPBACK_V4, free_port(&[LOOPBACK_V4]));
    let uas = Sipp::scenario("invite_uas.xml").local(uas_addr).time_limit(Duration::from_secs(15)).spawn();
    assert!(uas.wait_listening(Duration::from_secs(10)), "SIPp UAS not up:\n{}", uas.wait());
    let uac = Sipp::scenario("invite_uac.xml").remote(uas_addr).from_to(USERS[2], "alice", DOMAIN).run();
    let uas = uas.wait();
    assert_ok("call (UAC)", &uac, None);
    assert_ok("call (UAS)", &uas, None);
}

/// (d) A call through Kamailio: carol (407, then credentials) calls the
/// registered alice; the 200 carries Kamailio's Record-Route, and the ACK
/// and BYE are loose-routed through it.
#[test]
fn kamailio_routes_a_call_to_registered_sipp() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let uas_addr = SocketAddr::new(LOOPBACK_V4, free_port(&[LOOPBACK_V4]));
    let reg = Sipp::scenario("register_auth.xml")
        .remote(kamailio.udp_addr())
        .local(uas_addr)
        .register_as(kamailio.user("alice"), DOMAIN)
        .run();
    assert_ok("REGISTER", &reg, Some(&kamailio));

    let uas = Sipp::scenario("invite_uas.xml").local(uas_addr).time_limit(Duration::from_secs(15)).spawn();
    assert!(uas.wait_listening(Duration::from_secs(10)), "SIPp UAS not up:\n{}", uas.wait());
    let uac = Sipp::scenario("invite_uac.xml")
        .remote(kamailio.udp_addr())
        .from_to(kamailio.user("carol"), "alice", DOMAIN)
        .run();
    let uas = uas.wait();
    assert_ok("call via Kamailio (UAC)", &uac, Some(&kamailio));
    assert_ok("call via Kamailio (UAS)", &uas, Some(&kamailio));
    assert!(uac.messages.contains("SIP/2.0 407"), "no proxy challenge:\n{uac}");
    let record_route = format!("Record-Route: <sip:{};lr", kamailio.udp_addr());
    assert!(uac.messages.contains(&record_route), "no Record-Route in the 200:\n{uac}");
    let routed = format!("Route: <sip:{};lr", kamailio.udp_addr());
    assert!(uac.messages.contains(&routed), "ACK and BYE not sent along the route set:\n{uac}");
    // alice got the ACK and the BYE from Kamailio.
    let via = format!("Via: SIP/2.0/UDP {};branch=", kamailio.udp_addr());
    for method in ["ACK", "BYE"] {
        let got = uas
            .messages
            .split("message received")
            .find(|m| m.contains(&format!("\n{method} sip:")))
            .unwrap_or_else(|| panic!("alice got no {method}:\n{uas}"));
        assert!(got.contains(&via), "{method} not relayed by Kamailio:\n{got}");
    }
}

/// 404 for a user Kamailio does not know, 480 for one with no binding.
#[test]
fn kamailio_answers_404_unknown_and_480_unregistered() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let carol = kamailio.user("carol");
    for (to, code) in [("dave", "404"), ("bob", "480")] {
        let out = Sipp::scenario("message_uac.xml").remote(kamailio.udp_addr()).from_to(carol, to, DOMAIN).run();
        assert!(!out.success(), "MESSAGE to {to} succeeded:\n{out}");
        assert!(out.messages.contains(&format!("SIP/2.0 {code} ")), "MESSAGE to {to}: no {code}:\n{out}");
    }
}

/// A request without credentials, as a datagram from `from`.
fn request(method: &str, uri: &str, from_user: &str, to_user: &str, from: SocketAddr, extra: &str) -> String {
    let tag = from.port();
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-raw-{method}-{tag};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@{DOMAIN}>;tag=raw{tag}\r\n\
         To: <sip:{to_user}@{DOMAIN}>\r\n\
         Call-ID: raw-{method}-{tag}@{DOMAIN}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:{from_user}@{from}>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

fn exchange(kamailio: &Kamailio, method: &str, uri: &str, extra: &str) -> String {
    let to = kamailio.udp_addr();
    udp_exchange(to, |from| request(method, uri, "alice", "bob", from, extra), Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer to {method} {uri}\n--- Kamailio log ---\n{}", kamailio.log()))
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The config's answers that need no credentials: 401 for REGISTER with
/// the realm and qop=auth, 407 for anything else, 483 at Max-Forwards 0,
/// 200 for OPTIONS to the server itself.
#[test]
fn kamailio_challenges_and_checks() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let registrar = format!("sip:{DOMAIN}");
    let bob = format!("sip:bob@{}", kamailio.udp_addr());

    let r = exchange(&kamailio, "REGISTER", &registrar, "");
    assert_eq!(status_code(&r), Some(401), "{r}");
    let challenge = header(&r, "WWW-Authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate:\n{r}"));
    assert!(challenge.starts_with("Digest "), "{challenge}");
    assert!(challenge.contains(&format!("realm=\"{DOMAIN}\"")), "{challenge}");
    assert!(challenge.contains("qop=\"auth\""), "{challenge}");
    assert!(!challenge.contains("SHA-256"), "{challenge}");

    let r = exchange(&kamailio, "MESSAGE", &bob, "");
    assert_eq!(status_code(&r), Some(407), "{r}");
    let challenge = header(&r, "Proxy-Authenticate").unwrap_or_else(|| panic!("no Proxy-Authenticate:\n{r}"));
    assert!(challenge.contains(&format!("realm=\"{DOMAIN}\"")), "{challenge}");

    let r = exchange(&kamailio, "INVITE", &bob, "");
    assert_eq!(status_code(&r), Some(407), "{r}");

    let to = kamailio.udp_addr();
    let r = udp_exchange(
        to,
        |from| request("MESSAGE", &bob, "alice", "bob", from, "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
        Duration::from_secs(3),
    )
    .expect("an answer at Max-Forwards 0");
    assert_eq!(status_code(&r), Some(483), "{r}");

    assert!(kamailio.ping(), "OPTIONS to the server not answered 200");
}

/// The options that change challenges: SHA-256, no qop.
#[test]
fn kamailio_challenge_options() {
    let kamailio = Kamailio::start(&KamailioOptions {
        algorithm: DigestAlgorithm::Sha256,
        qop: false,
        ..KamailioOptions::default()
    });
    let r = exchange(&kamailio, "REGISTER", &format!("sip:{DOMAIN}"), "");
    assert_eq!(status_code(&r), Some(401), "{r}");
    let challenge = header(&r, "WWW-Authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate:\n{r}"));
    assert!(challenge.contains("algorithm=SHA-256"), "{challenge}");
    assert!(!challenge.contains("qop="), "{challenge}");
}

/// sipline (blocking runtime) reaches Kamailio over UDP, TCP and TLS on
/// 127.0.0.1, and over UDP, TCP and TLS on ::1: OPTIONS to the server is
/// answered 200, an unauthenticated MESSAGE 407.
#[test]
fn sipline_reaches_kamailio_over_every_transport() {
    let kamailio = Kamailio::start(&KamailioOptions { tls: KamailioTls::On, ipv6: true, ..KamailioOptions::default() });
    let roots = kamailio.ca_pem_path().expect("TLS is on");
    let mut config = EndpointConfig::new(&kamailio.user("alice").aor());
    config.transport.tls =
        TlsConfig::default().with_roots_pem(&std::fs::read(roots).expect("read the CA PEM file")).expect("CA PEM");
    // UDP requests need a socket of the target's family.
    config = config.listen(Transport::Udp, SocketAddr::new(LOOPBACK_V4, 0));
    config = config.listen(Transport::Udp, SocketAddr::new(LOOPBACK_V6, 0));
    let (endpoint, _events) = sipline_blocking::bind(config).expect("bind");

    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        for addr in [kamailio.addr(transport), kamailio.addr6(transport)] {
            let addr = addr.expect("listening");
            let (scheme, param) = match transport {
                Transport::Udp => ("sip", ""),
                Transport::Tcp => ("sip", ";transport=tcp"),
                Transport::Tls => ("sips", ""),
            };
            let server = format!("{scheme}:{addr}{param}");
            let ok = endpoint
                .send(Request::new(Method::Options, &server))
                .unwrap_or_else(|e| panic!("OPTIONS {server}: {e}\n--- Kamailio log ---\n{}", kamailio.log()));
            assert_eq!(ok.code, 200, "OPTIONS {server}");

            let bob = format!("{scheme}:bob@{addr}{param}");
            match endpoint.send(Request::message(&bob, "text/plain", b"hi".to_vec())) {
                Err(Error::Failed(RequestError::Failure(r))) => assert_eq!(r.code, 407, "MESSAGE {bob}"),
                other => {
                    panic!("MESSAGE {bob} without credentials: {other:?}\n--- Kamailio log ---\n{}", kamailio.log())
                }
            }
        }
    }
    endpoint.shutdown();
}

/// Mutual TLS: Kamailio (OpenSSL) accepts sipline's client certificate
/// issued by its CA, and refuses a client without one.
#[test]
fn sipline_mutual_tls_with_kamailio() {
    let kamailio = Kamailio::start(&KamailioOptions { tls: KamailioTls::Mutual, ..KamailioOptions::default() });
    let ca = kamailio.ca().expect("TLS is on");
    let server = kamailio.uri(Transport::Tls);

    let mut config = EndpointConfig::new(&kamailio.user("alice").aor());
    config.transport.tls = ca.issue(&["alice.sipline.test"]).tls(&[ca]);
    let (endpoint, _events) = sipline_blocking::bind(config).expect("bind");
    let ok = endpoint
        .send(Request::new(Method::Options, &server))
        .unwrap_or_else(|e| panic!("OPTIONS {server} with a client certificate: {e}\n{}", kamailio.log()));
    assert_eq!(ok.code, 200);
    endpoint.shutdown();

    let mut config = EndpointConfig::new(&kamailio.user("bob").aor());
    config.transport.tls = sipline_tests::certs::trusting(&[ca]);
    let (endpoint, _events) = sipline_blocking::bind(config).expect("bind");
    match endpoint.send(Request::new(Method::Options, &server)) {
        Err(Error::Failed(RequestError::Tls(_) | RequestError::ConnectionFailed(_))) => {}
        other => panic!("OPTIONS {server} without a client certificate: {other:?}\n{}", kamailio.log()),
    }
    endpoint.shutdown();
}
