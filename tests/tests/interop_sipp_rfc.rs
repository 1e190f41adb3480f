//! sipline's session extensions against SIPp scenarios written from the
//! RFCs (`tests/interop/sipp/`), on each of the three runtimes (through
//! the `Runtime` facade of `sipline_tests::runtimes`), over UDP and TCP on
//! loopback:
//!
//! - RFC 3262 (PRACK), sipline as UAC (`prack_uas.xml`): SIPp checks
//!   `Supported: 100rel` in the INVITE, rings reliably (180, RSeq 1), then
//!   sends early media reliably (183 with SDP, RSeq 2), each PRACK checked
//!   for its RAck; the 200 without a body follows, sipline hangs up.
//! - RFC 3262, sipline as UAS (`prack_uac.xml`): SIPp's INVITE requires
//!   (or supports) `100rel`; the application rings and accepts once
//!   PRACKed; SIPp checks `Require: 100rel` and RSeq in the 180 and the
//!   200 of its PRACK before the 200 of its INVITE. And with an
//!   application that accepts at once, against `prack_late_uac.xml`,
//!   which PRACKs only after the 2xx and its ACK: the PRACK still gets 200
//!   (§3).
//! - RFC 4028 (session timers), sipline as UAS (`timer_uac.xml`): SIPp asks
//!   for 90 s, refreshing itself; the 200 must say `Session-Expires:
//!   90;refresher=uac` and `Require: timer`; SIPp refreshes by UPDATE and
//!   by re-INVITE, each 200 saying so again.
//! - RFC 4028, 422 (`timer_422_uac.xml`): SIPp asks for 30 s; sipline
//!   answers 422 with `Min-SE: 90`; SIPp asks again with 90 and the call
//!   goes on.
//! - RFC 4028, sipline as UAC (`timer_uas.xml`): SIPp lowers sipline's
//!   1800 s to 90 s and takes the refreshing on itself; its UPDATE refresh
//!   is answered with `Session-Expires: 90;refresher=uac`.
//!
//! Left out: sipline as UAS sending early media reliably (a 183 with SDP,
//! the 2xx held for its PRACK): the facade's `ring` carries no body (the
//! core tests and `prack_sim.rs` cover it). And sipline as the refresher
//! against SIPp: its first refresh comes at half the interval, and RFC
//! 4028 §4 puts the interval at 90 s at least: 45 s of waiting per run
//! (the simulations, `session_timer_sim.rs`, cover it in virtual time).
//!
//! SIPp's `ereg`/`strcmp` checks (`check_it="true"`) fail the call on a
//! miss, and so its exit status. These tests assert that exit status, what
//! its message trace shows, and the events sipline's application saw.
//! Every process is bounded by `timeout`; every wait here is bounded.

use sipline::endpoint::{
    Body, EndpointConfig, Event, PrackMode, Request, SessionEnd, SessionEvent, SessionId, SessionTimerConfig,
};
use sipline::transport::Transport;
use sipline_tests::calls::{header, is_ended, loopback, media_port, media_socket, sdp, session_events, text};
use sipline_tests::kamailio::{free_port, Sipp, SippOutput, SippRun, LOOPBACK_V4};
use sipline_tests::runtimes::{Blocking, Runtime, Smol, Tokio};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the application does with incoming sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Rings (180) at once, and accepts with SDP once the ring is PRACKed
    /// ([`SessionEvent::Pracked`]).
    RingThenAcceptWhenPracked,
    /// Rings (180) and accepts with SDP at once: the 2xx goes before the
    /// PRACK comes (RFC 3262 §3 allows it after a ring without a body).
    RingAndAccept,
    /// Accepts with SDP at once, and accepts every re-INVITE.
    Accept,
}

/// An endpoint's application on a thread of its own: it answers incoming
/// sessions as its [`Behaviour`] says and records each session's events.
struct App {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<BTreeMap<SessionId, Vec<SessionEvent>>>>,
}

impl App {
    fn start<R: Runtime>(rt: &Arc<R>, endpoint: &R::Endpoint, mut events: R::Events, behaviour: Behaviour) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let (rt, endpoint, halt) = (rt.clone(), endpoint.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let media = media_socket();
            let answer = Body::sdp(sdp("sipline", media_port(&media)));
            let mut sessions: BTreeMap<SessionId, Vec<SessionEvent>> = BTreeMap::new();
            let ended = |s: &BTreeMap<SessionId, Vec<SessionEvent>>| s.values().all(|e| e.iter().any(is_ended));
            // Bounded: a minute in all; once told to stop, as soon as
            // every session has ended and nothing more is queued, or 10 s.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut halted_at: Option<Instant> = None;
            while Instant::now() < deadline {
                if halted_at.is_none() && halt.load(Ordering::Acquire) {
                    halted_at = Some(Instant::now());
                }
                match rt.next_event(&mut events, Duration::from_millis(50)) {
                    None if halted_at.is_some_and(|t| ended(&sessions) || t.elapsed() > Duration::from_secs(10)) => {
                        break
                    }
                    Some(Event::IncomingSession { session, .. }) => {
                        sessions.insert(session, Vec::new());
                        match behaviour {
                            Behaviour::RingThenAcceptWhenPracked => rt.ring(&endpoint, session, 180).expect("ring"),
                            Behaviour::RingAndAccept => {
                                rt.ring(&endpoint, session, 180).expect("ring");
                                rt.accept(&endpoint, session, Some(&answer)).expect("accept");
                            }
                            Behaviour::Accept => rt.accept(&endpoint, session, Some(&answer)).expect("accept"),
                        }
                    }
                    Some(Event::Session { session, event }) => {
                        match (&event, behaviour) {
                            (SessionEvent::Pracked { .. }, Behaviour::RingThenAcceptWhenPracked)
                            | (SessionEvent::Reoffer { .. }, Behaviour::Accept) => {
                                rt.accept(&endpoint, session, Some(&answer)).expect("accept");
                            }
                            _ => {}
                        }
                        sessions.entry(session).or_default().push(event);
                    }
                    Some(Event::ShutDown) => break,
                    _ => {}
                }
            }
            sessions
        });
        App { stop, thread: Some(thread) }
    }

    /// Stops (once every session has ended and nothing more is queued)
    /// and gives each session's events.
    fn stop(mut self) -> BTreeMap<SessionId, Vec<SessionEvent>> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().expect("running").join().expect("application thread")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The messages of SIPp's message trace, each with whether SIPp sent it.
fn trace(out: &SippOutput) -> Vec<(bool, String)> {
    out.messages
        .split("\n-----------------------------------------------")
        .filter_map(|chunk| {
            let (head, message) = chunk.split_once("\n\n")?;
            // Not "Unexpected … message received:" (a copy of one traced).
            let sent = head.contains(" message sent");
            (sent || (head.contains(" message received") && !head.contains("Unexpected")))
                .then(|| (sent, message.trim_start_matches(['\r', '\n']).to_owned()))
        })
        .collect()
}

/// The messages SIPp received (`sent == false`) or sent whose first line
/// starts with `start`, retransmissions left out.
fn messages(out: &SippOutput, sent: bool, start: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for (s, m) in trace(out) {
        if s == sent && m.starts_with(start) && !seen.contains(&m) {
            seen.push(m);
        }
    }
    seen
}

fn assert_sipp_ok(what: &str, out: &SippOutput) {
    assert!(out.success(), "{what} failed:\n{out}");
}

fn endpoint_config(transport: Transport, prack: PrackMode, timers: Option<SessionTimerConfig>) -> EndpointConfig {
    let mut config = EndpointConfig::new("sip:sipline@127.0.0.1").listen(transport, loopback(0));
    config.prack = prack;
    config.session_timers = timers;
    config
}

/// A SIPp UAS running `scenario`, listening on a port of its own, and a
/// Request-URI reaching it.
fn sipp_uas(scenario: &str, transport: Transport) -> (SippRun, String) {
    let addr = loopback(free_port(&[LOOPBACK_V4]));
    let run = Sipp::scenario(scenario).local(addr).transport(transport).spawn();
    assert!(run.wait_listening(Duration::from_secs(10)), "SIPp {scenario} not up:\n{}", run.wait());
    let target = format!("sip:sipp@{addr};transport={}", transport.as_str().to_ascii_lowercase());
    (run, target)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The CSeq number of a message.
fn cseq_number(m: &str) -> String {
    header(m, "CSeq").and_then(|c| c.split_whitespace().next().map(str::to_owned)).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// RFC 3262

/// sipline (Supported: 100rel) calls SIPp's `prack_uas.xml`: a reliable
/// 180 and a reliable 183 with the SDP answer are each PRACKed with the
/// right RAck, each reported once as progress (the 183 with its SDP), the
/// 200 with no body completes the call (ACK), and sipline's BYE ends it.
fn sipline_pracks_reliable_provisionals<R: Runtime>(transport: Transport) {
    let what = format!("{}: sipline -> SIPp prack_uas over {transport:?}", R::NAME);
    let (uas, target) = sipp_uas("prack_uas.xml", transport);
    let rt = R::new();
    let (endpoint, mut events) = rt.bind(endpoint_config(transport, PrackMode::Supported, None)).expect("bind");
    let media = media_socket();
    let request = Request::invite(&target, "application/sdp", sdp("sipline", media_port(&media)));
    let session = rt.invite(&endpoint, request).expect("INVITE sent");
    let progress =
        session_events(&rt, &mut events, session, |e| matches!(e, SessionEvent::Answered(_) | SessionEvent::Ended(_)));
    let answered = progress.iter().any(|e| matches!(e, SessionEvent::Answered(_)));
    if answered {
        rt.hangup(&endpoint, session).expect("hangup");
    }
    let end = if answered { session_events(&rt, &mut events, session, is_ended) } else { Vec::new() };
    // Over TCP, closing the connection (shutting down) before SIPp ends
    // would fail its call.
    let out = uas.wait();
    rt.shutdown(&endpoint);
    assert_sipp_ok(&what, &out);

    // sipline saw: 180, 183 (with SIPp's SDP), 200 — each once.
    let summary: Vec<(u16, bool)> = progress
        .iter()
        .map(|e| match e {
            SessionEvent::Progress(r) | SessionEvent::Answered(r) => (r.code, text(&r.bytes).contains("m=audio ")),
            other => panic!("{what}: unexpected {other:?}: {progress:#?}"),
        })
        .collect();
    assert_eq!(summary, [(180, false), (183, true), (200, false)], "{what}: {progress:#?}");
    assert_eq!(end, [SessionEvent::Ended(SessionEnd::HungUp)], "{what}");

    // On the wire (SIPp's trace): the INVITE offered 100rel; one PRACK per
    // reliable response, in the early dialog, RAck = RSeq, INVITE CSeq.
    let invite = messages(&out, false, "INVITE ");
    assert_eq!(invite.len(), 1, "{what}: {invite:#?}");
    let invite = &invite[0];
    assert!(header(invite, "Supported").is_some_and(|s| s.contains("100rel")), "{what}:\n{invite}");
    assert_eq!(header(invite, "Require"), None, "{what}: only Supported in PrackMode::Supported:\n{invite}");
    let n = cseq_number(invite);
    let pracks = messages(&out, false, "PRACK ");
    let racks: Vec<_> = pracks.iter().map(|p| header(p, "RAck").unwrap_or_default()).collect();
    assert_eq!(racks, [format!("1 {n} INVITE"), format!("2 {n} INVITE")], "{what}: {pracks:#?}");
    let to_tag = |m: &str| header(m, "To").and_then(|t| t.split(";tag=").nth(1).map(str::to_owned));
    assert!(pracks.iter().all(|p| to_tag(p).is_some()), "{what}: PRACK outside the early dialog: {pracks:#?}");
    let cseqs: Vec<_> = pracks.iter().map(|p| header(p, "CSeq").unwrap_or_default()).collect();
    let n: u32 = n.parse().expect("CSeq number");
    assert_eq!(cseqs, [format!("{} PRACK", n + 1), format!("{} PRACK", n + 2)], "{what}");
    assert_eq!(messages(&out, false, "ACK ").len(), 1, "{what}");
    let bye = messages(&out, false, "BYE ");
    assert_eq!(bye.len(), 1, "{what}");
    assert_eq!(header(&bye[0], "CSeq"), Some(format!("{} BYE", n + 3)), "{what}: §12.2.1.1");
}

/// SIPp's `scenario` (`prack_uac.xml` or `prack_late_uac.xml`) calls a
/// sipline endpoint in `mode`, its INVITE carrying `rel: 100rel`
/// (`Require` or `Supported`), the application doing as `behaviour` says. Gives SIPp's output (asserted successful)
/// and the session's events; checks the reliable 180 (§3, §7.1), one
/// only, and SIPp's PRACK.
fn prack_uac<R: Runtime>(
    what: &str,
    scenario: &str,
    transport: Transport,
    mode: PrackMode,
    rel: &str,
    behaviour: Behaviour,
) -> (SippOutput, Vec<SessionEvent>) {
    let rt = Arc::new(R::new());
    let (endpoint, events) = rt.bind(endpoint_config(transport, mode, None)).expect("bind");
    let at = R::local_addr(&endpoint, transport).expect("bound");
    let app = App::start(&rt, &endpoint, events, behaviour);
    let out = Sipp::scenario(scenario).remote(at).transport(transport).service("sipline").key("rel", rel).run();
    let sessions = app.stop();
    rt.shutdown(&endpoint);
    assert_sipp_ok(what, &out);
    assert_eq!(sessions.len(), 1, "{what}: {sessions:#?}");
    let events = sessions.into_values().next().expect("one session");
    let ringing = messages(&out, false, "SIP/2.0 180 ");
    assert_eq!(ringing.len(), 1, "{what}: one 180, not sent again: {ringing:#?}");
    let ringing = &ringing[0];
    assert_eq!(header(ringing, "Require"), Some("100rel".to_owned()), "{what}:\n{ringing}");
    let rseq: u32 = header(ringing, "RSeq").and_then(|r| r.parse().ok()).expect("RSeq");
    assert!((1..1 << 31).contains(&rseq), "{what}: §3: RSeq {rseq}");
    let prack = messages(&out, true, "PRACK ");
    assert_eq!(header(&prack[0], "RAck"), Some(format!("{rseq} 1 INVITE")), "{what}");
    (out, events)
}

/// The CSeq of each 200 SIPp received, in order.
fn oks_received(out: &SippOutput) -> Vec<String> {
    trace(out)
        .into_iter()
        .filter(|(sent, m)| !sent && m.starts_with("SIP/2.0 200"))
        .map(|(_, m)| header(&m, "CSeq").unwrap_or_default())
        .collect()
}

/// SIPp's `prack_uac.xml` calls a sipline endpoint in `mode`, its INVITE
/// carrying `rel: 100rel`; the application rings and accepts once
/// PRACKed. The 180 went reliably, SIPp got the PRACK's 200 before the
/// INVITE's; sipline saw the PRACK, the ACK and the BYE.
fn sipp_pracks_sipline<R: Runtime>(transport: Transport, mode: PrackMode, rel: &str) {
    let what = format!("{}: SIPp prack_uac ({rel}: 100rel) -> sipline ({mode:?}) over {transport:?}", R::NAME);
    let behaviour = Behaviour::RingThenAcceptWhenPracked;
    let (out, events) = prack_uac::<R>(&what, "prack_uac.xml", transport, mode, rel, behaviour);
    assert_eq!(
        events,
        [
            SessionEvent::Pracked { body: None },
            SessionEvent::Confirmed { body: None },
            SessionEvent::Ended(SessionEnd::PeerHungUp)
        ],
        "{what}"
    );
    assert_eq!(oks_received(&out), ["2 PRACK", "1 INVITE", "3 BYE"], "{what}");
}

/// SIPp's `prack_late_uac.xml` requires `100rel` of a sipline endpoint
/// whose application rings and accepts at once, and PRACKs only once the
/// 2xx came: the 2xx went without waiting for the PRACK (§3 allows it, the
/// 180 having no body), the 180 was not sent again, and the PRACK coming
/// after the ACK is still answered 200 (§3: the UAS "MUST be prepared to
/// process PRACK requests for those outstanding responses").
fn sipp_pracks_after_the_2xx<R: Runtime>(transport: Transport) {
    let what = format!("{}: SIPp prack_late_uac -> sipline accepting at once over {transport:?}", R::NAME);
    let behaviour = Behaviour::RingAndAccept;
    let (out, events) =
        prack_uac::<R>(&what, "prack_late_uac.xml", transport, PrackMode::Supported, "Require", behaviour);
    assert_eq!(oks_received(&out), ["1 INVITE", "2 PRACK", "3 BYE"], "{what}");
    assert_eq!(
        events,
        [
            SessionEvent::Confirmed { body: None },
            SessionEvent::Pracked { body: None },
            SessionEvent::Ended(SessionEnd::PeerHungUp)
        ],
        "{what}"
    );
}

// ---------------------------------------------------------------------------
// RFC 4028

/// Session timers wanting 1800 s, Min-SE 90 (the RFC 4028 §4 floor).
fn timers() -> SessionTimerConfig {
    SessionTimerConfig::new(1800, 90)
}

fn refreshed_90() -> SessionEvent {
    SessionEvent::Refreshed { interval: secs(90), we_refresh: false }
}

/// SIPp's `timer_uac.xml` calls a sipline endpoint with session timers
/// (1800 s wanted, Min-SE 90) asking for 90 s, refreshing itself: sipline
/// takes 90 s (§9: never more than asked), leaves the refreshing to SIPp
/// (`Require: timer`), and each refresh — UPDATE with no body, re-INVITE
/// with SDP — is answered with the interval again and restarts its timer.
fn sipp_refreshes_sipline<R: Runtime>(transport: Transport) {
    let what = format!("{}: SIPp timer_uac -> sipline over {transport:?}", R::NAME);
    let rt = Arc::new(R::new());
    let (endpoint, events) = rt.bind(endpoint_config(transport, PrackMode::Off, Some(timers()))).expect("bind");
    let at = R::local_addr(&endpoint, transport).expect("bound");
    let app = App::start(&rt, &endpoint, events, Behaviour::Accept);
    let out = Sipp::scenario("timer_uac.xml").remote(at).transport(transport).service("sipline").run();
    let sessions = app.stop();
    rt.shutdown(&endpoint);
    assert_sipp_ok(&what, &out);
    assert_eq!(sessions.len(), 1, "{what}: {sessions:#?}");
    let events = sessions.into_values().next().expect("one session");
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            SessionEvent::Reoffer { .. } => "Reoffer".to_owned(),
            e if *e == refreshed_90() => "Refreshed(90 s, peer refreshes)".to_owned(),
            e => format!("{e:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Refreshed(90 s, peer refreshes)",
            "Confirmed { body: None }",
            "Refreshed(90 s, peer refreshes)",
            "Reoffer",
            "Refreshed(90 s, peer refreshes)",
            "Confirmed { body: None }",
            "Ended(PeerHungUp)",
        ],
        "{what}: {events:#?}"
    );
    // Each 2xx of sipline's says so; SIPp checked it, the trace shows it.
    let oks = messages(&out, false, "SIP/2.0 200");
    let by_method: Vec<(String, Option<String>, Option<String>)> = oks
        .iter()
        .map(|m| (header(m, "CSeq").unwrap_or_default(), header(m, "Session-Expires"), header(m, "Require")))
        .collect();
    let timer = |cseq: &str| (cseq.to_owned(), Some("90;refresher=uac".to_owned()), Some("timer".to_owned()));
    assert_eq!(
        by_method,
        [timer("1 INVITE"), timer("2 UPDATE"), timer("3 INVITE"), ("4 BYE".to_owned(), None, None)],
        "{what}"
    );
}

/// SIPp's `timer_422_uac.xml` asks a sipline endpoint (Min-SE 90) for
/// 30 s: 422 with `Min-SE: 90` and no session for the application; SIPp's
/// second INVITE (90 s) makes the one session.
fn sipline_refuses_too_small_an_interval<R: Runtime>(transport: Transport) {
    let what = format!("{}: SIPp timer_422_uac -> sipline over {transport:?}", R::NAME);
    let rt = Arc::new(R::new());
    let (endpoint, events) = rt.bind(endpoint_config(transport, PrackMode::Off, Some(timers()))).expect("bind");
    let at = R::local_addr(&endpoint, transport).expect("bound");
    let app = App::start(&rt, &endpoint, events, Behaviour::Accept);
    let out = Sipp::scenario("timer_422_uac.xml").remote(at).transport(transport).service("sipline").run();
    let sessions = app.stop();
    rt.shutdown(&endpoint);
    assert_sipp_ok(&what, &out);
    assert_eq!(sessions.len(), 1, "{what}: only the second INVITE makes a session: {sessions:#?}");
    let events = sessions.into_values().next().expect("one session");
    assert_eq!(
        events,
        [refreshed_90(), SessionEvent::Confirmed { body: None }, SessionEvent::Ended(SessionEnd::PeerHungUp)],
        "{what}"
    );
    let refusal = messages(&out, false, "SIP/2.0 422 ");
    assert_eq!(refusal.len(), 1, "{what}: {refusal:#?}");
    assert!(refusal[0].starts_with("SIP/2.0 422 Session Interval Too Small\r\n"), "{what}:\n{}", refusal[0]);
    assert_eq!(header(&refusal[0], "Min-SE"), Some("90".to_owned()), "{what}");
    assert_eq!(header(&refusal[0], "CSeq"), Some("1 INVITE".to_owned()), "{what}");
    let ok = messages(&out, false, "SIP/2.0 200");
    assert_eq!(header(&ok[0], "CSeq"), Some("2 INVITE".to_owned()), "{what}");
}

/// sipline (session timers: 1800 s wanted, Min-SE 90) calls SIPp's
/// `timer_uas.xml`, which lowers the interval to 90 s and refreshes
/// itself: sipline takes it as given (§7.2), watching (its refresh event
/// says the peer refreshes), and answers SIPp's UPDATE refresh with the
/// interval and `refresher=uac` (§9) before hanging up.
fn sipp_uas_refreshes_sipline<R: Runtime>(transport: Transport) {
    let what = format!("{}: sipline -> SIPp timer_uas over {transport:?}", R::NAME);
    let (uas, target) = sipp_uas("timer_uas.xml", transport);
    let rt = R::new();
    let (endpoint, mut events) = rt.bind(endpoint_config(transport, PrackMode::Off, Some(timers()))).expect("bind");
    let media = media_socket();
    let request = Request::invite(&target, "application/sdp", sdp("sipline", media_port(&media)));
    let session = rt.invite(&endpoint, request).expect("INVITE sent");
    // Up to the refresh SIPp sends after the call is up (or the end).
    let refreshes = std::cell::Cell::new(0);
    let seen = session_events(&rt, &mut events, session, |e| {
        refreshes.set(refreshes.get() + usize::from(*e == refreshed_90()));
        refreshes.get() == 2 || matches!(e, SessionEvent::Ended(_))
    });
    let up = refreshes.get() == 2;
    if up {
        rt.hangup(&endpoint, session).expect("hangup");
    }
    let end = if up { session_events(&rt, &mut events, session, is_ended) } else { Vec::new() };
    let out = uas.wait();
    rt.shutdown(&endpoint);
    assert_sipp_ok(&what, &out);
    let kinds: Vec<String> = seen
        .iter()
        .map(|e| match e {
            SessionEvent::Answered(r) => format!("Answered({})", r.code),
            e => format!("{e:?}"),
        })
        .collect();
    // The 2xx agreed the interval (reported with the answer, in either
    // order: sipline reports the agreement first), SIPp's UPDATE
    // refreshed it.
    let refresh = format!("{:?}", refreshed_90());
    let mut first = kinds.get(..2).unwrap_or_default().to_vec();
    first.sort();
    assert_eq!(first, ["Answered(200)".to_owned(), refresh.clone()], "{what}: {kinds:#?}");
    assert_eq!(kinds.get(2..), Some([refresh].as_slice()), "{what}: {kinds:#?}");
    assert_eq!(end, [SessionEvent::Ended(SessionEnd::HungUp)], "{what}");
    // §7.1: the INVITE asked for 1800 s with Min-SE 90, supporting timer.
    let invite = messages(&out, false, "INVITE ");
    assert_eq!(invite.len(), 1, "{what}: {invite:#?}");
    assert_eq!(header(&invite[0], "Session-Expires"), Some("1800".to_owned()), "{what}:\n{}", invite[0]);
    assert_eq!(header(&invite[0], "Min-SE"), Some("90".to_owned()), "{what}");
    let update_ok: Vec<String> =
        messages(&out, false, "SIP/2.0 200").into_iter().filter(|m| m.contains("CSeq: 1 UPDATE")).collect();
    assert_eq!(update_ok.len(), 1, "{what}");
    assert_eq!(header(&update_ok[0], "Session-Expires"), Some("90;refresher=uac".to_owned()), "{what}");
    // No refresh of sipline's own: SIPp refreshes.
    assert!(messages(&out, false, "UPDATE ").is_empty(), "{what}");
    assert_eq!(messages(&out, false, "BYE ").len(), 1, "{what}");
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
    sipline_pracks_reliable_provisionals_over_udp => sipline_pracks_reliable_provisionals::<R>(Transport::Udp);
    sipline_pracks_reliable_provisionals_over_tcp => sipline_pracks_reliable_provisionals::<R>(Transport::Tcp);
    sipp_requires_100rel_over_udp => sipp_pracks_sipline::<R>(Transport::Udp, PrackMode::Supported, "Require");
    sipp_requires_100rel_over_tcp => sipp_pracks_sipline::<R>(Transport::Tcp, PrackMode::Supported, "Require");
    sipp_pracks_after_the_2xx_over_udp => sipp_pracks_after_the_2xx::<R>(Transport::Udp);
    sipp_pracks_after_the_2xx_over_tcp => sipp_pracks_after_the_2xx::<R>(Transport::Tcp);
    sipp_supports_100rel_sipline_requires_over_udp =>
        sipp_pracks_sipline::<R>(Transport::Udp, PrackMode::Required, "Supported");
    sipp_refreshes_by_update_and_reinvite_over_udp => sipp_refreshes_sipline::<R>(Transport::Udp);
    sipp_refreshes_by_update_and_reinvite_over_tcp => sipp_refreshes_sipline::<R>(Transport::Tcp);
    too_small_an_interval_gets_422_over_udp => sipline_refuses_too_small_an_interval::<R>(Transport::Udp);
    too_small_an_interval_gets_422_over_tcp => sipline_refuses_too_small_an_interval::<R>(Transport::Tcp);
    sipp_uas_lowers_the_interval_and_refreshes_over_udp => sipp_uas_refreshes_sipline::<R>(Transport::Udp);
    sipp_uas_lowers_the_interval_and_refreshes_over_tcp => sipp_uas_refreshes_sipline::<R>(Transport::Tcp);
}
