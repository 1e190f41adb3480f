//! Interop with a real softphone: baresip (Debian baresip-core) registered
//! at Kamailio, proven against peers that already work (Kamailio, SIPp)
//! before sipline's own INVITE sessions meet it. See
//! `sipline_tests::baresip` for the harness and `tests/interop/README.md`
//! for baresip's configuration.
//!
//! Each test starts its own Kamailio and baresip on their own loopback
//! ports; every process is bounded by `timeout`.

use sipline::transport::Transport;
use sipline_tests::baresip::{AnswerMode, Baresip, BaresipOptions, TracedMessage};
use sipline_tests::kamailio::{free_port, Kamailio, KamailioOptions, Sipp, SippOutput, DOMAIN, LOOPBACK_V4};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const EVENT_WAIT: Duration = Duration::from_secs(10);

fn assert_ok(what: &str, out: &SippOutput, kamailio: &Kamailio, baresip: &Baresip) {
    assert!(
        out.success(),
        "{what} failed:\n{out}\n--- Kamailio log ---\n{}\n--- baresip log ---\n{}",
        kamailio.log(),
        baresip.log()
    );
}

/// Every SIP message baresip sent or received went between loopback
/// addresses; gives its trace.
fn loopback_trace(baresip: &Baresip) -> Vec<TracedMessage> {
    let trace = baresip.sip_trace();
    assert!(!trace.is_empty(), "no SIP trace in baresip's log:\n{}", baresip.log());
    for m in &trace {
        assert!(
            m.from.starts_with("127.0.0.1:") && m.to.starts_with("127.0.0.1:"),
            "baresip's SIP left loopback: {} {} -> {}\n{}",
            m.transport,
            m.from,
            m.to,
            m.text
        );
    }
    trace
}

/// The first message in `trace` that `wanted` accepts.
fn find<'a>(trace: &'a [TracedMessage], what: &str, wanted: impl Fn(&TracedMessage) -> bool) -> &'a TracedMessage {
    trace.iter().find(|m| wanted(m)).unwrap_or_else(|| {
        let lines: Vec<String> =
            trace.iter().map(|m| format!("{} {} -> {}: {}", m.transport, m.from, m.to, m.start_line())).collect();
        panic!("baresip's trace has no {what}:\n{}", lines.join("\n"))
    })
}

/// A MESSAGE from alice to `to` through Kamailio (alice answers the 407).
fn message_to(kamailio: &Kamailio, to: &str) -> SippOutput {
    Sipp::scenario("message_uac.xml").remote(kamailio.udp_addr()).from_to(kamailio.user("alice"), to, DOMAIN).run()
}

/// (a) baresip registers carol with digest authentication (401, then
/// credentials, then 200); Kamailio then routes to its binding (a MESSAGE
/// from alice reaches baresip, which answers 200), and after baresip stops
/// (unregistering) carol has no binding left (480).
#[test]
fn baresip_registers_at_kamailio_with_digest_auth() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let mut carol = Baresip::start(&BaresipOptions::new(kamailio.user("carol"), kamailio.udp_addr()));
    assert!(carol.registrations() >= 1, "{}", carol.log());
    let trace = loopback_trace(&carol);
    let registrar = kamailio.udp_addr().to_string();
    let first = find(&trace, "REGISTER", |m| m.is_request("REGISTER") && m.to == registrar);
    assert!(first.header("Authorization").is_none(), "credentials before a challenge:\n{}", first.text);
    let contact = first.header("Contact").unwrap_or_default();
    assert!(contact.contains(&format!("@{}", carol.sip_addr())), "Contact not baresip's address: {contact}");
    let challenge = find(&trace, "401", |m| m.is_response(401) && m.from == registrar);
    assert!(challenge.header("WWW-Authenticate").is_some_and(|h| h.contains("realm=\"sipline.test\"")));
    let answer =
        find(&trace, "REGISTER with credentials", |m| m.is_request("REGISTER") && m.header("Authorization").is_some());
    let credentials = answer.header("Authorization").unwrap_or_default();
    assert!(credentials.starts_with("Digest ") && credentials.contains("username=\"carol\""), "{credentials}");
    assert!(credentials.contains("qop=auth"), "{credentials}");

    let out = message_to(&kamailio, "carol");
    assert_ok("MESSAGE to the registered carol", &out, &kamailio, &carol);
    assert!(out.messages.contains("Server: baresip"), "the 200 is not baresip's:\n{out}");

    carol.stop();
    // baresip 1.0 unregisters on SIGTERM (REGISTER with Expires: 0), but it
    // may exit before answering the registrar's 401 to it (seen on loaded
    // and quiet machines alike): then its binding stays until it expires
    // and the MESSAGE goes to a dead address (408). Kamailio answers 480
    // exactly when the unregistration was accepted.
    // The 200 to the unregistration may be lost to baresip's exit too
    // (its log then lacks it): what counts is that the answer to the 401
    // went out, which Kamailio, on loopback, receives and accepts.
    let unregistered = carol.unregistered() || carol.sent_unregistration_with_credentials();
    eprintln!("baresip unregistered before exiting: {unregistered}");
    let out = message_to(&kamailio, "carol");
    assert!(!out.success(), "MESSAGE to carol succeeded after baresip stopped:\n{out}");
    if unregistered {
        assert!(out.messages.contains("SIP/2.0 480 "), "carol still has a binding after baresip stopped:\n{out}");
    } else {
        assert!(out.messages.contains("SIP/2.0 408 "), "no unregistration, yet no 408:\n{out}");
    }
}

/// baresip over TCP: it registers over a connection to Kamailio, which
/// then reaches it over that connection for a MESSAGE.
#[test]
fn baresip_registers_over_tcp() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let carol = Baresip::start(&BaresipOptions {
        transport: Transport::Tcp,
        ..BaresipOptions::new(kamailio.user("carol"), kamailio.tcp_addr())
    });
    let out = message_to(&kamailio, "carol");
    assert_ok("MESSAGE to carol over TCP", &out, &kamailio, &carol);
    assert!(out.messages.contains("Server: baresip"), "the 200 is not baresip's:\n{out}");
    let trace = loopback_trace(&carol);
    let register = find(&trace, "REGISTER", |m| m.is_request("REGISTER"));
    assert_eq!(register.transport, "TCP", "REGISTER not over TCP:\n{}", register.text);
    let message = find(&trace, "MESSAGE", |m| m.is_request("MESSAGE"));
    assert_eq!(message.transport, "TCP", "MESSAGE not over TCP:\n{}", message.text);
    let via = format!("SIP/2.0/TCP {};branch=", kamailio.tcp_addr());
    assert!(message.header("Via").is_some_and(|v| v.starts_with(&via)), "not relayed by Kamailio:\n{}", message.text);
}

/// (b) A SIPp UAC (alice) calls carol through Kamailio; baresip answers
/// automatically with 200 and an SDP answer (PCMU, on loopback), SIPp
/// ACKs and hangs up with BYE, baresip answers 200.
#[test]
fn sipp_calls_baresip_through_kamailio() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let carol = Baresip::start(&BaresipOptions::new(kamailio.user("carol"), kamailio.udp_addr()));
    let started = Instant::now();
    let uac = Sipp::scenario("invite_uac.xml")
        .remote(kamailio.udp_addr())
        .from_to(kamailio.user("alice"), "carol", DOMAIN)
        .run();
    assert_ok("call to baresip (SIPp UAC)", &uac, &kamailio, &carol);
    eprintln!("call from SIPp to baresip took {:?}", started.elapsed());

    // The 200 is baresip's, with an SDP answer on loopback in PCMU.
    let ok = uac
        .messages
        .split("message received")
        .find(|m| m.contains("CSeq: 2 INVITE") && m.contains("\nSIP/2.0 200 "))
        .unwrap_or_else(|| panic!("no 200 to the INVITE:\n{uac}"));
    assert!(ok.contains("Server: baresip"), "not baresip's 200:\n{ok}");
    assert!(ok.contains("Content-Type: application/sdp"), "no SDP in the 200:\n{ok}");
    assert!(ok.contains("c=IN IP4 127.0.0.1"), "media not on loopback:\n{ok}");
    assert!(ok.contains("m=audio ") && ok.contains("RTP/AVP 0"), "no PCMU audio answer:\n{ok}");
    assert!(!ok.contains("a=candidate"), "ICE candidates offered:\n{ok}");

    let up = carol.wait_call_event("CALL_ESTABLISHED", EVENT_WAIT).expect("baresip reported no established call");
    assert_eq!(up.direction.as_deref(), Some("incoming"), "{up:?}");
    assert_eq!(up.peer_uri.as_deref(), Some("sip:alice@sipline.test"), "{up:?}");
    let closed = carol.wait_call_event("CALL_CLOSED", EVENT_WAIT).expect("baresip reported no closed call");
    assert_eq!(closed.call_id, up.call_id, "{closed:?}");
    // baresip got the ACK and the BYE through Kamailio and answered the BYE.
    let trace = loopback_trace(&carol);
    let kamailio_addr = kamailio.udp_addr().to_string();
    for method in ["INVITE", "ACK", "BYE"] {
        find(&trace, &format!("{method} from Kamailio"), |m| m.is_request(method) && m.from == kamailio_addr);
    }
    find(&trace, "200 to the BYE", |m| {
        m.is_response(200) && m.header("CSeq") == Some("10 BYE") && m.to == kamailio_addr
    });
}

/// (c) baresip (carol) dials bob, a SIPp UAS registered at Kamailio:
/// Kamailio challenges (407), baresip answers with credentials, the call
/// is established (180, 200, ACK) and baresip ends it with BYE.
#[test]
fn baresip_calls_registered_sipp_through_kamailio() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let uas_addr = SocketAddr::new(LOOPBACK_V4, free_port(&[LOOPBACK_V4]));
    let carol = Baresip::start(&BaresipOptions::new(kamailio.user("carol"), kamailio.udp_addr()));
    let reg = Sipp::scenario("register_auth.xml")
        .remote(kamailio.udp_addr())
        .local(uas_addr)
        .register_as(kamailio.user("bob"), DOMAIN)
        .run();
    assert_ok("REGISTER bob", &reg, &kamailio, &carol);

    let uas = Sipp::scenario("invite_uas.xml").local(uas_addr).time_limit(Duration::from_secs(20)).spawn();
    assert!(uas.wait_listening(Duration::from_secs(10)), "SIPp UAS not up:\n{}", uas.wait());
    carol.dial(&format!("sip:bob@{DOMAIN}")).unwrap_or_else(|e| panic!("dial: {e}\n{}", carol.log()));
    let up = carol.wait_call_event("CALL_ESTABLISHED", EVENT_WAIT);
    let hangup = carol.hangup();
    let closed = carol.wait_call_event("CALL_CLOSED", EVENT_WAIT);
    let uas = uas.wait();
    assert_ok("call from baresip (SIPp UAS)", &uas, &kamailio, &carol);
    let up = up.unwrap_or_else(|| panic!("baresip reported no established call:\n{}", carol.log()));
    assert_eq!(up.direction.as_deref(), Some("outgoing"), "{up:?}");
    assert_eq!(up.peer_uri.as_deref(), Some("sip:bob@sipline.test"), "{up:?}");
    hangup.unwrap_or_else(|e| panic!("hangup: {e}"));
    let closed = closed.unwrap_or_else(|| panic!("baresip reported no closed call:\n{}", carol.log()));
    assert_eq!(closed.call_id, up.call_id, "{closed:?}");

    let trace = loopback_trace(&carol);
    let kamailio_addr = kamailio.udp_addr().to_string();
    find(&trace, "407 from Kamailio", |m| m.is_response(407) && m.from == kamailio_addr);
    let invite = find(&trace, "INVITE with credentials", |m| {
        m.is_request("INVITE") && m.to == kamailio_addr && m.header("Proxy-Authorization").is_some()
    });
    let credentials = invite.header("Proxy-Authorization").unwrap_or_default();
    assert!(credentials.contains("username=\"carol\""), "{credentials}");
    find(&trace, "BYE to Kamailio", |m| m.is_request("BYE") && m.to == kamailio_addr);
    // bob got the INVITE, ACK and BYE through Kamailio; the INVITE is
    // baresip's, with an SDP offer on loopback.
    let via = format!("Via: SIP/2.0/UDP {};branch=", kamailio.udp_addr());
    for method in ["INVITE", "ACK", "BYE"] {
        let got = uas
            .messages
            .split("message received")
            .find(|m| m.contains(&format!("\n{method} sip:")))
            .unwrap_or_else(|| panic!("bob got no {method}:\n{uas}"));
        assert!(got.contains(&via), "{method} not relayed by Kamailio:\n{got}");
        if method == "INVITE" {
            assert!(got.contains("User-Agent: baresip"), "not baresip's INVITE:\n{got}");
            assert!(got.contains("c=IN IP4 127.0.0.1"), "media not on loopback:\n{got}");
            assert!(!got.contains("a=candidate"), "ICE candidates offered:\n{got}");
        }
    }
}

/// Manual answer mode: baresip rings (180) until told to answer; the call
/// then completes as in the automatic case.
#[test]
fn baresip_answers_on_command_in_manual_mode() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let carol = Baresip::start(&BaresipOptions {
        answer_mode: AnswerMode::Manual,
        ..BaresipOptions::new(kamailio.user("carol"), kamailio.udp_addr())
    });
    let uac = Sipp::scenario("invite_uac.xml")
        .remote(kamailio.udp_addr())
        .from_to(kamailio.user("alice"), "carol", DOMAIN)
        .spawn();
    let ringing = carol.wait_call_event("CALL_INCOMING", EVENT_WAIT);
    // Not answered yet a while after it rang.
    std::thread::sleep(Duration::from_millis(500));
    let early = carol.events().iter().any(|e| e.kind == "CALL_ESTABLISHED");
    let answered = carol.answer();
    let uac = uac.wait();
    assert_ok("call to baresip answered by command (SIPp UAC)", &uac, &kamailio, &carol);
    let ringing = ringing.unwrap_or_else(|| panic!("baresip reported no incoming call:\n{}", carol.log()));
    assert_eq!(ringing.peer_uri.as_deref(), Some("sip:alice@sipline.test"), "{ringing:?}");
    assert!(!early, "baresip answered before it was told to");
    answered.unwrap_or_else(|e| panic!("accept: {e}"));
    assert!(uac.messages.contains("SIP/2.0 180 "), "no 180 while ringing:\n{uac}");
    assert!(carol.wait_call_event("CALL_CLOSED", EVENT_WAIT).is_some(), "no closed call:\n{}", carol.log());
}
