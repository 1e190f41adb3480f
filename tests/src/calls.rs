//! Calls through a registrar and proxy — Kamailio or `sipline serve`, any
//! [`SipServer`] — so that the same assertions hold against each: two
//! registered sipline endpoints call each other (407, Record-Route, an
//! in-dialog INFO, BYE), and a registered sipline endpoint and baresip
//! call each other. Plus the helpers the session interop tests share
//! (SDP, event waits). Every wait is bounded.

use crate::baresip::{Baresip, BaresipOptions};
use crate::kamailio::{DOMAIN, LOOPBACK_V4};
use crate::registered::{user, SipServer};
use crate::runtimes::Runtime;
use sipline::auth::DigestCredentials;
use sipline::endpoint::{
    Body, EndpointConfig, Event, RegistrationConfig, RegistrationState, Request, SessionEnd, SessionEvent, SessionId,
};
use sipline::transport::Transport;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long any one event may take to come.
pub const WAIT: Duration = Duration::from_secs(15);

/// A minimal audio SDP (PCMU) on 127.0.0.1 at `port`.
pub fn sdp(user: &str, port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// A UDP socket on 127.0.0.1 that the media of a call may reach (nothing
/// reads it; it only keeps the port taken while the call lives).
pub fn media_socket() -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(LOOPBACK_V4, 0)).expect("media socket")
}

/// The port of `socket`.
pub fn media_port(socket: &UdpSocket) -> u16 {
    socket.local_addr().expect("media address").port()
}

/// 127.0.0.1 at `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(LOOPBACK_V4, port)
}

/// A string form of `bytes` for messages and searches.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of header `name` in the message `m`.
pub fn header(m: &str, name: &str) -> Option<String> {
    m.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The first event on `events` that `wanted` accepts, within [`WAIT`];
/// events before it are kept in `skipped`.
pub fn wait_event<R: Runtime>(
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
pub fn session_events<R: Runtime>(
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

/// A session's answer, or its end before one.
pub fn is_answered(e: &SessionEvent) -> bool {
    matches!(e, SessionEvent::Answered(_) | SessionEvent::Ended(_))
}

/// A session's end.
pub fn is_ended(e: &SessionEvent) -> bool {
    matches!(e, SessionEvent::Ended(_))
}

/// The 2xx at the end of `events`, or a panic naming what came instead.
pub fn answered(what: &str, events: &[SessionEvent]) -> sipline::endpoint::Response {
    match events.last() {
        Some(SessionEvent::Answered(ok)) => ok.clone(),
        _ => panic!("{what}: not answered: {events:#?}"),
    }
}

/// A sipline endpoint registered with `server` as `user` (digest), over
/// UDP on 127.0.0.1; returned once the registration is done.
pub fn registered<R: Runtime, S: SipServer>(
    rt: &R,
    server: &S,
    user: &str,
    config: EndpointConfig,
) -> (R::Endpoint, R::Events) {
    let user = crate::registered::user(user);
    let mut config = config.listen(Transport::Udp, loopback(0));
    config.registration = Some(RegistrationConfig::new(&server.uri(Transport::Udp)));
    config.credentials = vec![DigestCredentials::new(user.name, user.password)];
    let (endpoint, mut events) = rt.bind(config).expect("bind");
    let mut other = Vec::new();
    wait_event(rt, &mut events, "registration", &mut other, |e| {
        matches!(e, Event::Registration(RegistrationState::Registered { .. }))
    });
    (endpoint, events)
}

/// alice and bob, both sipline endpoints registered with `server`, call
/// each other through it: alice (407, then credentials) invites bob, bob
/// accepts, an INFO and alice's BYE follow the server's Record-Route.
pub fn registered_endpoints_call_each_other<R: Runtime, S: SipServer>(server: &S) {
    let rt = R::new();
    let (alice, mut alice_events) = registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let mut bob_config = EndpointConfig::new(&user("bob").aor());
    bob_config.handle_methods = vec![sipline::message::Method::Info];
    bob_config.accept.push("application/dtmf-relay".to_owned());
    let (bob, mut bob_events) = registered(&rt, server, "bob", bob_config);
    let what = format!("{}: alice -> bob via {}", R::NAME, server.name());
    let at = server.udp_addr();
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
    assert_eq!(source.remote, at, "{what}: INVITE not from the server:\n{invite}");
    // `<sip:ADDR;lr>` (Kamailio) or `<sip:ADDR;transport=udp;lr>` (serve).
    let names_server = |r: &str| r.contains(&format!("<sip:{at};")) && r.contains(";lr");
    assert!(
        header(&invite, "Record-Route").is_some_and(|r| names_server(&r)),
        "{what}: the server did not record-route:\n{invite}"
    );
    let answer = sdp("bob", media_port(&media));
    rt.accept(&bob, bob_session, Some(&Body::sdp(answer.clone()))).expect("accept");

    let progress = session_events(&rt, &mut alice_events, session, is_answered);
    let ok = answered(&what, &progress);
    assert_eq!(ok.code, 200, "{what}");
    let ok_text = text(&ok.bytes);
    assert!(ok_text.contains(&text(&answer)), "{what}: not bob's answer:\n{ok_text}");
    assert!(
        header(&ok_text, "Record-Route").is_some_and(|r| names_server(&r)),
        "{what}: no Record-Route in the 200:\n{ok_text}"
    );
    let call_id = header(&ok_text, "Call-ID").expect("Call-ID");
    let confirmed = session_events(&rt, &mut bob_events, bob_session, |e| {
        matches!(e, SessionEvent::Confirmed { .. } | SessionEvent::Ended(_))
    });
    assert_eq!(confirmed, [SessionEvent::Confirmed { body: None }], "{what}");

    // An INFO inside the dialog goes through the server too.
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
        assert_eq!(source.remote, at, "{what}: INFO not through the server:\n{}", text(&request));
        rt.respond(&bob, incoming, 200).expect("respond");
    });
    let info_outcome = rx.recv_timeout(WAIT).expect("INFO outcome");
    assert_eq!(info_outcome.map(|r| r.code), Ok(200), "{what}");

    rt.hangup(&alice, session).expect("hangup");
    let bob_end = session_events(&rt, &mut bob_events, bob_session, is_ended);
    assert_eq!(bob_end, [SessionEvent::Ended(SessionEnd::PeerHungUp)], "{what}");
    let alice_end = session_events(&rt, &mut alice_events, session, is_ended);
    assert_eq!(alice_end, [SessionEvent::Ended(SessionEnd::HungUp)], "{what}");
    // The server saw the BYE (its log reaches us through a pipe and a
    // reader thread: on a loaded machine it may lag the answer).
    let saw = crate::kamailio::wait_until(WAIT, || server.saw_request("BYE", &call_id));
    assert!(saw, "{what}: the BYE did not go through it:\n{}", server.log());
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// A registered sipline endpoint (alice) and baresip (carol, answering
/// automatically) call each other through `server`.
pub fn sipline_and_baresip_call_each_other<R: Runtime, S: SipServer>(server: &S) {
    let carol = Baresip::start(&BaresipOptions::new(user("carol"), server.udp_addr()));
    let rt = R::new();
    let (alice, mut events) = registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let what = format!("{}: sipline <-> baresip via {}", R::NAME, server.name());
    let media = media_socket();
    let logs = || format!("--- {} log ---\n{}\n--- baresip log ---\n{}", server.name(), server.log(), carol.log());

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
