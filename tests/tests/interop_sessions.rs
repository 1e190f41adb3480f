//! sipline's INVITE sessions against peers nobody here wrote, on each of
//! the three runtimes (through the `Runtime` facade of
//! `sipline_tests::runtimes`):
//!
//! - SIPp's built-in `uac` calls a sipline endpoint that accepts every
//!   call (UDP and TCP);
//! - a sipline endpoint calls SIPp's built-in `uas` and hangs up (UDP and
//!   TCP);
//! - two sipline endpoints registered at Kamailio (digest) call each other
//!   through it, in-dialog requests following its Record-Route;
//! - a registered sipline endpoint calls baresip and is called by it.
//!
//! `cli/tests/interop_sipp.rs` runs SIPp's `uac` against `sipline listen
//! --answer`. Every process is bounded by `timeout`; every wait here is
//! bounded.

use sipline::auth::DigestCredentials;
use sipline::endpoint::{
    Body, EndpointConfig, Event, RegistrationConfig, RegistrationState, Request, SessionEnd, SessionEvent, SessionId,
};
use sipline::transport::Transport;
use sipline_tests::baresip::{Baresip, BaresipOptions};
use sipline_tests::kamailio::{free_port, Kamailio, KamailioOptions, Sipp, SippOutput, DOMAIN, LOOPBACK_V4};
use sipline_tests::runtimes::{Blocking, Runtime, Smol, Tokio};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any one event may take to come.
const WAIT: Duration = Duration::from_secs(15);

/// A minimal audio SDP (PCMU) on 127.0.0.1 at `port`.
fn sdp(user: &str, port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// A UDP socket on 127.0.0.1 that the media of a call may reach (nothing
/// reads it; it only keeps the port taken while the call lives).
fn media_socket() -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(LOOPBACK_V4, 0)).expect("media socket")
}

fn media_port(socket: &UdpSocket) -> u16 {
    socket.local_addr().expect("media address").port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(LOOPBACK_V4, port)
}

/// A string form of `bytes` for messages and searches.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of header `name` in the message `m`.
fn header(m: &str, name: &str) -> Option<String> {
    m.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The first event on `events` that `wanted` accepts, within [`WAIT`];
/// events before it are kept in `skipped`.
fn wait_event<R: Runtime>(
    rt: &R,
    events: &mut R::Events,
    what: &str,
    skipped: &mut Vec<Event>,
    mut wanted: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rt.next_event(events, left) {
            Some(e) if wanted(&e) => return e,
            Some(e) => skipped.push(e),
            None => panic!("{}: no {what} within {WAIT:?}; other events: {skipped:#?}", R::NAME),
        }
    }
}

/// The session events of `session` up to the first that `last` accepts.
fn session_events<R: Runtime>(
    rt: &R,
    events: &mut R::Events,
    session: SessionId,
    last: impl Fn(&SessionEvent) -> bool,
) -> Vec<SessionEvent> {
    let mut seen = Vec::new();
    let mut other = Vec::new();
    loop {
        let e = wait_event(
            rt,
            events,
            "session event",
            &mut other,
            |e| matches!(e, Event::Session { session: s, .. } if *s == session),
        );
        let Event::Session { event, .. } = e else { unreachable!() };
        let done = last(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn is_answered(e: &SessionEvent) -> bool {
    matches!(e, SessionEvent::Answered(_) | SessionEvent::Ended(_))
}

fn is_ended(e: &SessionEvent) -> bool {
    matches!(e, SessionEvent::Ended(_))
}

/// The 2xx at the end of `events`, or a panic naming what came instead.
fn answered(what: &str, events: &[SessionEvent]) -> sipline::endpoint::Response {
    match events.last() {
        Some(SessionEvent::Answered(ok)) => ok.clone(),
        _ => panic!("{what}: not answered: {events:#?}"),
    }
}

/// An endpoint's application that accepts every incoming session with an
/// SDP answer and records each session's events, on a thread of its own.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<BTreeMap<SessionId, Vec<SessionEvent>>>>,
}

impl Acceptor {
    fn start<R: Runtime>(rt: &Arc<R>, endpoint: &R::Endpoint, mut events: R::Events) -> Acceptor {
        let stop = Arc::new(AtomicBool::new(false));
        let (rt, endpoint, halt) = (rt.clone(), endpoint.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let media = media_socket();
            let answer = Body::sdp(sdp("sipline", media_port(&media)));
            let mut sessions: BTreeMap<SessionId, Vec<SessionEvent>> = BTreeMap::new();
            // Bounded by the caller's stop (and by a minute in any case).
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match rt.next_event(&mut events, Duration::from_millis(50)) {
                    None if halt.load(Ordering::Acquire) => break,
                    Some(Event::IncomingSession { session, .. }) => {
                        sessions.insert(session, Vec::new());
                        rt.accept(&endpoint, session, Some(&answer)).expect("accept");
                    }
                    Some(Event::Session { session, event }) => sessions.entry(session).or_default().push(event),
                    Some(Event::ShutDown) => break,
                    _ => {}
                }
            }
            sessions
        });
        Acceptor { stop, thread: Some(thread) }
    }

    /// Stops (once nothing more is queued) and gives each session's events.
    fn stop(mut self) -> BTreeMap<SessionId, Vec<SessionEvent>> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().expect("running").join().expect("acceptor thread")
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn assert_sipp_ok(what: &str, out: &SippOutput, kamailio: Option<&Kamailio>) {
    assert!(
        out.success(),
        "{what} failed:\n{out}\n--- Kamailio log ---\n{}",
        kamailio.map(Kamailio::log).unwrap_or_default()
    );
}

const SIPP_CALLS: u32 = 5;

/// SIPp's built-in `uac` places [`SIPP_CALLS`] calls to a sipline endpoint
/// that accepts each: every call succeeds for SIPp, and the endpoint saw
/// each one confirmed by the ACK and ended by SIPp's BYE.
fn sipp_uac_calls_sipline<R: Runtime>(transport: Transport) {
    let rt = Arc::new(R::new());
    let config = EndpointConfig::new("sip:sipline@127.0.0.1").listen(transport, loopback(0));
    let (endpoint, events) = rt.bind(config).expect("bind");
    let at = R::local_addr(&endpoint, transport).expect("bound");
    let acceptor = Acceptor::start(&rt, &endpoint, events);
    let out = Sipp::builtin("uac").remote(at).transport(transport).calls(SIPP_CALLS).run();
    // The last BYE's 200 may still be on its way to the acceptor's log.
    std::thread::sleep(Duration::from_millis(200));
    let sessions = acceptor.stop();
    rt.shutdown(&endpoint);
    let what = format!("{}: SIPp uac -> sipline over {transport:?}", R::NAME);
    assert_sipp_ok(&what, &out, None);
    assert!(out.messages.contains("SIP/2.0 200"), "{what}: no 200 seen by SIPp:\n{out}");
    assert_eq!(sessions.len(), SIPP_CALLS as usize, "{what}: sessions {sessions:#?}");
    for (id, events) in &sessions {
        assert_eq!(
            events.as_slice(),
            [SessionEvent::Confirmed { body: None }, SessionEvent::Ended(SessionEnd::PeerHungUp)],
            "{what}: session {id:?}"
        );
    }
}

/// A sipline endpoint calls SIPp's built-in `uas` twice: each call is
/// answered (180, then 200 with SDP), sipline hangs up (BYE), and SIPp
/// reports both calls successful.
fn sipline_calls_sipp_uas<R: Runtime>(transport: Transport) {
    const CALLS: u32 = 2;
    let uas_addr = loopback(free_port(&[LOOPBACK_V4]));
    let uas = Sipp::builtin("uas").local(uas_addr).transport(transport).calls(CALLS).spawn();
    assert!(uas.wait_listening(Duration::from_secs(10)), "SIPp uas not up:\n{}", uas.wait());

    let rt = R::new();
    let config = EndpointConfig::new("sip:sipline@127.0.0.1").listen(transport, loopback(0));
    let (endpoint, mut events) = rt.bind(config).expect("bind");
    let what = format!("{}: sipline -> SIPp uas over {transport:?}", R::NAME);
    let media = media_socket();
    let target = format!("sip:service@{uas_addr};transport={}", transport.as_str().to_ascii_lowercase());
    let mut outcomes = Vec::new();
    for _ in 0..CALLS {
        let request = Request::invite(&target, "application/sdp", sdp("sipline", media_port(&media)));
        let session = rt.invite(&endpoint, request).expect("INVITE sent");
        let progress = session_events(&rt, &mut events, session, is_answered);
        let ok = answered(&what, &progress);
        let ringing = progress.iter().any(|e| matches!(e, SessionEvent::Progress(r) if r.code == 180));
        rt.hangup(&endpoint, session).expect("hangup");
        let end = session_events(&rt, &mut events, session, is_ended);
        outcomes.push((ok, ringing, end));
    }
    // SIPp ends each call with a pause; over TCP, closing the connection
    // (shutting down) before it ends fails the calls still pausing.
    let out = uas.wait();
    rt.shutdown(&endpoint);
    assert_sipp_ok(&what, &out, None);
    for (ok, ringing, end) in outcomes {
        assert_eq!(ok.code, 200, "{what}");
        assert!(ringing, "{what}: no 180 before the 200");
        let ok = text(&ok.bytes);
        assert!(ok.contains("application/sdp") && ok.contains("m=audio "), "{what}: no SDP answer:\n{ok}");
        assert_eq!(end, [SessionEvent::Ended(SessionEnd::HungUp)], "{what}");
    }
    // SIPp got ACKs and BYEs over the transport asked for.
    let acks = out.messages.matches("\nACK sip:").count();
    let byes = out.messages.matches("\nBYE sip:").count();
    assert_eq!((acks, byes), (CALLS as usize, CALLS as usize), "{what}:\n{out}");
}

/// A sipline endpoint registered at `kamailio` as `user` (digest), over
/// UDP on 127.0.0.1; returned once the registration is done.
fn registered<R: Runtime>(rt: &R, kamailio: &Kamailio, user: &str, config: EndpointConfig) -> (R::Endpoint, R::Events) {
    let user = kamailio.user(user);
    let mut config = config.listen(Transport::Udp, loopback(0));
    config.registration = Some(RegistrationConfig::new(&kamailio.uri(Transport::Udp)));
    config.credentials = vec![DigestCredentials::new(user.name, user.password)];
    let (endpoint, mut events) = rt.bind(config).expect("bind");
    let mut other = Vec::new();
    wait_event(rt, &mut events, "registration", &mut other, |e| {
        matches!(e, Event::Registration(RegistrationState::Registered { .. }))
    });
    (endpoint, events)
}

/// alice and bob, both sipline endpoints registered at Kamailio, call each
/// other through it: alice (407, then credentials) invites bob, bob
/// accepts, an INFO and alice's BYE follow Kamailio's Record-Route.
fn registered_endpoints_call_through_kamailio<R: Runtime>() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let rt = R::new();
    let (alice, mut alice_events) =
        registered(&rt, &kamailio, "alice", EndpointConfig::new(&kamailio.user("alice").aor()));
    let mut bob_config = EndpointConfig::new(&kamailio.user("bob").aor());
    bob_config.handle_methods = vec![sipline::message::Method::Info];
    bob_config.accept.push("application/dtmf-relay".to_owned());
    let (bob, mut bob_events) = registered(&rt, &kamailio, "bob", bob_config);
    let what = format!("{}: alice -> bob via Kamailio", R::NAME);
    let media = media_socket();

    let offer = sdp("alice", media_port(&media));
    let session = rt
        .invite(&alice, Request::invite(&format!("sip:bob@{DOMAIN}"), "application/sdp", offer.clone()))
        .expect("INVITE sent");
    let mut other = Vec::new();
    let incoming = wait_event(&rt, &mut bob_events, "incoming session", &mut other, |e| {
        matches!(e, Event::IncomingSession { .. })
    });
    let Event::IncomingSession { session: bob_session, from, body, source, request, .. } = incoming else {
        unreachable!()
    };
    let invite = text(&request);
    assert_eq!(body, Some(Body::sdp(offer)), "{what}");
    assert!(from.starts_with("sip:alice@sipline.test"), "{what}: From {from}");
    assert_eq!(source.remote, kamailio.udp_addr(), "{what}: INVITE not from Kamailio:\n{invite}");
    let record_route = format!("<sip:{};lr", kamailio.udp_addr());
    assert!(
        header(&invite, "Record-Route").is_some_and(|r| r.contains(&record_route)),
        "{what}: Kamailio did not record-route:\n{invite}"
    );
    let answer = sdp("bob", media_port(&media));
    rt.accept(&bob, bob_session, Some(&Body::sdp(answer.clone()))).expect("accept");

    let progress = session_events(&rt, &mut alice_events, session, is_answered);
    let ok = answered(&what, &progress);
    assert_eq!(ok.code, 200, "{what}");
    let ok_text = text(&ok.bytes);
    assert!(ok_text.contains(&text(&answer)), "{what}: not bob's answer:\n{ok_text}");
    assert!(
        header(&ok_text, "Record-Route").is_some_and(|r| r.contains(&record_route)),
        "{what}: no Record-Route in the 200:\n{ok_text}"
    );
    let call_id = header(&ok_text, "Call-ID").expect("Call-ID");
    let confirmed = session_events(&rt, &mut bob_events, bob_session, |e| {
        matches!(e, SessionEvent::Confirmed { .. } | SessionEvent::Ended(_))
    });
    assert_eq!(confirmed, [SessionEvent::Confirmed { body: None }], "{what}");

    // An INFO inside the dialog goes through Kamailio too.
    let mut info = Request::new(sipline::message::Method::Info, "sip:placeholder@127.0.0.1");
    info.content_type = Some("application/dtmf-relay".to_owned());
    info.body = b"Signal=5\r\nDuration=160\r\n".to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let (rt_ref, caller) = (&rt, alice.clone());
        s.spawn(move || {
            let _ = tx.send(rt_ref.send_in_session(&caller, session, info));
        });
        let got = wait_event(&rt, &mut bob_events, "INFO", &mut other, |e| matches!(e, Event::Incoming { .. }));
        let Event::Incoming { incoming, method, session: in_session, source, request, .. } = got else {
            unreachable!()
        };
        assert_eq!((method.as_str(), in_session), ("INFO", Some(bob_session)), "{what}");
        assert_eq!(source.remote, kamailio.udp_addr(), "{what}: INFO not through Kamailio:\n{}", text(&request));
        rt.respond(&bob, incoming, 200).expect("respond");
    });
    let info_outcome = rx.recv_timeout(WAIT).expect("INFO outcome");
    assert_eq!(info_outcome.map(|r| r.code), Ok(200), "{what}");

    rt.hangup(&alice, session).expect("hangup");
    let bob_end = session_events(&rt, &mut bob_events, bob_session, is_ended);
    assert_eq!(bob_end, [SessionEvent::Ended(SessionEnd::PeerHungUp)], "{what}");
    let alice_end = session_events(&rt, &mut alice_events, session, is_ended);
    assert_eq!(alice_end, [SessionEvent::Ended(SessionEnd::HungUp)], "{what}");
    // Kamailio saw the BYE (its log names every request it handles).
    let log = kamailio.log();
    let bye = log.lines().find(|l| l.contains("sipline: request BYE ") && l.contains(&call_id));
    assert!(bye.is_some(), "{what}: the BYE did not go through Kamailio:\n{log}");
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// A registered sipline endpoint (alice) and baresip (carol, answering
/// automatically) call each other through Kamailio.
fn sipline_and_baresip_call_each_other<R: Runtime>() {
    let kamailio = Kamailio::start(&KamailioOptions::default());
    let carol = Baresip::start(&BaresipOptions::new(kamailio.user("carol"), kamailio.udp_addr()));
    let rt = R::new();
    let (alice, mut events) = registered(&rt, &kamailio, "alice", EndpointConfig::new(&kamailio.user("alice").aor()));
    let what = format!("{}: sipline <-> baresip", R::NAME);
    let media = media_socket();
    let logs = || format!("--- Kamailio log ---\n{}\n--- baresip log ---\n{}", kamailio.log(), carol.log());

    // alice calls carol; baresip answers with SDP; alice hangs up.
    let offer = sdp("alice", media_port(&media));
    let session = rt
        .invite(&alice, Request::invite(&format!("sip:carol@{DOMAIN}"), "application/sdp", offer))
        .expect("INVITE sent");
    let progress = session_events(&rt, &mut events, session, is_answered);
    let ok = match progress.last() {
        Some(SessionEvent::Answered(ok)) => ok.clone(),
        _ => panic!("{what}: baresip did not answer: {progress:#?}\n{}", logs()),
    };
    let ok = text(&ok.bytes);
    assert!(ok.contains("Server: baresip") || ok.contains("User-Agent: baresip"), "{what}: not baresip's:\n{ok}");
    assert!(ok.contains("application/sdp") && ok.contains("m=audio ") && ok.contains("RTP/AVP 0"), "{what}:\n{ok}");
    let up = carol.wait_call_event("CALL_ESTABLISHED", WAIT);
    let up = up.unwrap_or_else(|| panic!("{what}: baresip reported no established call\n{}", logs()));
    assert_eq!(up.direction.as_deref(), Some("incoming"), "{up:?}");
    rt.hangup(&alice, session).expect("hangup");
    let end = session_events(&rt, &mut events, session, is_ended);
    assert_eq!(end, [SessionEvent::Ended(SessionEnd::HungUp)], "{what}");
    let closed = carol.wait_call_event("CALL_CLOSED", WAIT);
    let closed = closed.unwrap_or_else(|| panic!("{what}: baresip reported no closed call\n{}", logs()));
    assert_eq!(closed.call_id, up.call_id, "{closed:?}");

    // carol calls alice; alice accepts with SDP; carol hangs up.
    let before = carol.events().len();
    carol.dial(&format!("sip:alice@{DOMAIN}")).unwrap_or_else(|e| panic!("dial: {e}\n{}", logs()));
    let mut other = Vec::new();
    let incoming =
        wait_event(&rt, &mut events, "incoming session", &mut other, |e| matches!(e, Event::IncomingSession { .. }));
    let Event::IncomingSession { session, from, body, .. } = incoming else { unreachable!() };
    assert!(from.starts_with("sip:carol@sipline.test"), "{what}: From {from}");
    let offer = body.unwrap_or_else(|| panic!("{what}: baresip sent no offer"));
    assert!(text(&offer.bytes).contains("m=audio "), "{what}: {offer:?}");
    rt.accept(&alice, session, Some(&Body::sdp(sdp("alice", media_port(&media))))).expect("accept");
    let confirmed = session_events(&rt, &mut events, session, |e| {
        matches!(e, SessionEvent::Confirmed { .. } | SessionEvent::Ended(_))
    });
    assert_eq!(confirmed, [SessionEvent::Confirmed { body: None }], "{what}\n{}", logs());
    let established =
        carol.wait_event(WAIT, |e| e.kind == "CALL_ESTABLISHED" && e.direction.as_deref() == Some("outgoing"));
    let established = established.unwrap_or_else(|| panic!("{what}: baresip's call not established\n{}", logs()));
    assert!(carol.events().len() > before, "{what}");
    carol.hangup().unwrap_or_else(|e| panic!("hangup: {e}"));
    let end = session_events(&rt, &mut events, session, is_ended);
    assert_eq!(end, [SessionEvent::Ended(SessionEnd::PeerHungUp)], "{what}\n{}", logs());
    let closed = carol.wait_event(WAIT, |e| e.kind == "CALL_CLOSED" && e.call_id == established.call_id);
    assert!(closed.is_some(), "{what}: baresip reported no closed call\n{}", logs());
    rt.shutdown(&alice);
}

macro_rules! on_every_runtime {
    ($($name:ident => $body:expr;)*) => {
        mod tokio_rt {
            use super::*;
            $(#[test] fn $name() { type R = Tokio; $body })*
        }
        mod smol_rt {
            use super::*;
            $(#[test] fn $name() { type R = Smol; $body })*
        }
        mod blocking_rt {
            use super::*;
            $(#[test] fn $name() { type R = Blocking; $body })*
        }
    };
}

on_every_runtime! {
    sipp_uac_calls_sipline_over_udp => sipp_uac_calls_sipline::<R>(Transport::Udp);
    sipp_uac_calls_sipline_over_tcp => sipp_uac_calls_sipline::<R>(Transport::Tcp);
    sipline_calls_sipp_uas_over_udp => sipline_calls_sipp_uas::<R>(Transport::Udp);
    sipline_calls_sipp_uas_over_tcp => sipline_calls_sipp_uas::<R>(Transport::Tcp);
    registered_endpoints_call_through_kamailio => super::registered_endpoints_call_through_kamailio::<R>();
    sipline_and_baresip_call_each_other => super::sipline_and_baresip_call_each_other::<R>();
}
