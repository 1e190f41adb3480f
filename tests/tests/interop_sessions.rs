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
//! The last two are the scenarios of `sipline_tests::calls`, which
//! `cli/tests/serve_endpoints.rs` runs against `sipline serve` too.
//!
//! `cli/tests/interop_sipp.rs` runs SIPp's `uac` against `sipline listen
//! --answer`. Every process is bounded by `timeout`; every wait here is
//! bounded.

use sipline::endpoint::{Body, EndpointConfig, Event, Request, SessionEnd, SessionEvent, SessionId};
use sipline::transport::Transport;
use sipline_tests::calls::{
    self, answered, is_answered, is_ended, loopback, media_port, media_socket, sdp, session_events, text,
};
use sipline_tests::kamailio::{free_port, Kamailio, KamailioOptions, Sipp, SippOutput, LOOPBACK_V4};
use sipline_tests::runtimes::{Blocking, Runtime, Smol, Tokio};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    registered_endpoints_call_through_kamailio =>
        calls::registered_endpoints_call_each_other::<R, Kamailio>(&Kamailio::start(&KamailioOptions::default()));
    sipline_and_baresip_call_each_other =>
        calls::sipline_and_baresip_call_each_other::<R, Kamailio>(&Kamailio::start(&KamailioOptions::default()));
}
