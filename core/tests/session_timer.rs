//! Session timers (RFC 4028) between two endpoints in memory, and against
//! a peer played by the test: Session-Expires and Min-SE in the INVITE
//! (§7.1), the UAS's choice of refresher and `Require: timer` (§9), 422
//! for too small an interval and the UAC's retry with the larger Min-SE
//! (§7.4), refreshes at half the interval by UPDATE or, when the peer does
//! not allow UPDATE, by re-INVITE with the last session description
//! (§10), and BYE at the interval less min(32 s, interval/3) when no
//! refresh comes (§10).
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

mod pair;

use pair::{first_line, header, idle, uri, Pair, Policy, ANSWER, OFFER};
use sipline::endpoint::{Body, Event, Request, SessionEnd, SessionEvent, SessionId, SessionTimerConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// Answers the session, and any re-INVITE, with ANSWER.
fn answering() -> Policy {
    Box::new(|ep, now, e| match e {
        Event::IncomingSession { session, .. } => ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap(),
        Event::Session { session, event: SessionEvent::Reoffer { .. } } => {
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
        _ => {}
    })
}

/// Accepts re-INVITEs with OFFER (Alice's side).
fn reoffer_ok() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::Session { session, event: SessionEvent::Reoffer { .. } } = e {
            ep.accept(now, *session, Some(&Body::sdp(OFFER))).unwrap();
        }
    })
}

#[allow(clippy::unnecessary_wraps)] // the config field's type
fn timers(expires: u32, min_se: u32) -> Option<SessionTimerConfig> {
    Some(SessionTimerConfig::new(expires, min_se))
}

fn call(p: &mut Pair) -> SessionId {
    p.with(0, |ep, now| ep.invite(now, Request::invite(&uri(1, "bob"), "application/sdp", OFFER.to_vec()))).unwrap()
}

fn refreshed(p: &Pair, id: usize) -> Vec<(Duration, Duration, bool)> {
    p.nodes[id]
        .session_events()
        .into_iter()
        .filter_map(|(t, e)| match e {
            SessionEvent::Refreshed { interval, we_refresh } => Some((t, interval, we_refresh)),
            _ => None,
        })
        .collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_uac_asks_and_the_uas_leaves_the_refreshing_to_it_with_require_timer() {
    let mut p = Pair::new(
        |c| c.session_timers = timers(1800, 90),
        |c| c.session_timers = timers(1800, 90),
        idle(),
        answering(),
    );
    call(&mut p);
    let invite = p.nodes[0].sent("INVITE ", "").remove(0).1;
    // §7.1: Supported: timer, Session-Expires (refresher left open), Min-SE.
    assert!(header(&invite, "Supported").unwrap().contains("timer"), "{invite}");
    assert_eq!(header(&invite, "Session-Expires"), Some("1800"));
    assert_eq!(header(&invite, "Min-SE"), Some("90"));
    assert!(header(&invite, "Allow").unwrap().contains("UPDATE"));
    // §9: left open and the UAC supports timers: it refreshes; Require.
    let ok = p.nodes[1].sent("SIP/2.0 200", "INVITE").remove(0).1;
    assert_eq!(header(&ok, "Session-Expires"), Some("1800;refresher=uac"));
    assert_eq!(header(&ok, "Require"), Some("timer"));
    assert_eq!(refreshed(&p, 0), vec![(secs(0), secs(1800), true)]);
    assert_eq!(refreshed(&p, 1), vec![(secs(0), secs(1800), false)]);
}

#[test]
fn the_refresher_updates_at_half_the_interval_and_the_session_lives_on() {
    let mut p =
        Pair::new(|c| c.session_timers = timers(90, 90), |c| c.session_timers = timers(90, 90), idle(), answering());
    let s = call(&mut p);
    p.secs(400);
    // §10: every 45 s an UPDATE with no body (Bob allows UPDATE).
    let updates: Vec<Duration> = p.nodes[0].sent("UPDATE ", "").iter().map(|u| u.0).collect();
    assert_eq!(updates, (1..=8).map(|i| secs(45 * i)).collect::<Vec<_>>());
    let update = p.nodes[0].sent("UPDATE ", "").remove(0).1;
    assert_eq!(header(&update, "Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(header(&update, "Content-Length"), Some("0"));
    assert!(header(&update, "Contact").is_some(), "RFC 3311 §5.1: a target refresh");
    let ok = p.nodes[1].sent("SIP/2.0 200", "CSeq: 2 UPDATE").remove(0).1;
    assert_eq!(header(&ok, "Session-Expires"), Some("90;refresher=uac"));
    assert!(p.nodes[0].sent("INVITE ", "").len() == 1, "no re-INVITE");
    assert_eq!(refreshed(&p, 1).len(), 9);
    assert!(p.nodes[1].sent("BYE ", "").is_empty());
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(true));
    assert_eq!(p.nodes[1].ep.session_count(), 1);
}

#[test]
fn with_no_refresh_the_other_side_sends_bye_at_the_interval_less_a_third() {
    let mut p =
        Pair::new(|c| c.session_timers = timers(90, 90), |c| c.session_timers = timers(90, 90), idle(), answering());
    call(&mut p);
    p.secs(1);
    // Alice falls silent.
    p.drop = Box::new(|from, _| from == 0);
    p.secs(200);
    let bob = &p.nodes[1];
    // §10: 90 − min(32, 30) = 60 s after the 2xx.
    let bye = bob.sent("BYE ", "");
    assert_eq!(bye[0].0, secs(60), "{bye:?}");
    assert!(bob.session_events().iter().any(|(t, e)| *t == secs(60) && *e == SessionEvent::Ended(SessionEnd::Expired)));
    assert_eq!(bob.ep.session_count(), 0);
    // Alice's refresh at 45 s went nowhere; Bob's BYE ended her side.
    let alice = &p.nodes[0];
    assert_eq!(alice.sent("UPDATE ", "")[0].0, secs(45));
    let end = alice.session_events().into_iter().find(|(_, e)| matches!(e, SessionEvent::Ended(_)));
    assert_eq!(end, Some((secs(60), SessionEvent::Ended(SessionEnd::PeerHungUp))));
    assert_eq!(alice.ep.session_count(), 0);
}

#[test]
fn a_refresh_that_times_out_ends_the_session_with_bye() {
    let mut p = Pair::new(
        |c| c.session_timers = timers(1800, 90),
        |c| c.session_timers = timers(1800, 90),
        idle(),
        answering(),
    );
    call(&mut p);
    p.secs(1);
    // Bob falls silent (and deaf).
    p.drop = Box::new(|from, m| from == 1 || m.starts_with("BYE "));
    p.secs(1000);
    let alice = &p.nodes[0];
    // §10: the UPDATE at 900 s, Timer F 32 s later: BYE, and it is over.
    assert_eq!(alice.sent("UPDATE ", "")[0].0, secs(900));
    assert_eq!(alice.sent("BYE ", "")[0].0, secs(932));
    let end = alice.session_events().into_iter().find(|(_, e)| matches!(e, SessionEvent::Ended(_)));
    assert!(matches!(end, Some((t, SessionEvent::Ended(SessionEnd::Failed(_)))) if t == secs(932)), "{end:?}");
}

#[test]
fn too_small_an_interval_gets_422_and_the_uac_asks_again_with_the_larger_min_se() {
    let mut p = Pair::new(
        |c| c.session_timers = timers(120, 90),
        |c| c.session_timers = timers(1800, 600),
        idle(),
        answering(),
    );
    let s = call(&mut p);
    let refusal = p.nodes[1].sent("SIP/2.0 422", "").remove(0).1;
    assert_eq!(header(&refusal, "Min-SE"), Some("600"));
    let invites = p.nodes[0].sent("INVITE ", "");
    assert_eq!(invites.len(), 2);
    let again = &invites[1].1;
    // §7.4: same Call-ID and tag, the next CSeq, the larger values.
    assert_eq!(header(again, "CSeq"), Some("2 INVITE"));
    assert_eq!(header(again, "Call-ID"), header(&invites[0].1, "Call-ID"));
    assert_eq!(header(again, "From"), header(&invites[0].1, "From"));
    assert_eq!(header(again, "Session-Expires"), Some("600"));
    assert_eq!(header(again, "Min-SE"), Some("600"));
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(true));
    assert_eq!(refreshed(&p, 0), vec![(secs(0), secs(600), true)]);
}

#[test]
fn a_uac_without_timers_leaves_the_refreshing_to_the_uas_by_reinvite() {
    // Alice does not support timers (and does not say she allows UPDATE).
    let mut p = Pair::new(|_| {}, |c| c.session_timers = timers(90, 90), reoffer_ok(), answering());
    call(&mut p);
    let ok = p.nodes[1].sent("SIP/2.0 200", "INVITE").remove(0).1;
    // §9: the UAS refreshes; no Require (the UAC would not understand).
    assert_eq!(header(&ok, "Session-Expires"), Some("90;refresher=uas"));
    assert_eq!(header(&ok, "Require"), None);
    p.secs(100);
    // §10: Bob re-INVITEs with the last session description he sent (her
    // INVITE had no Allow); her 2xx lists UPDATE, so the next is one.
    let wire: Vec<_> = p.nodes[1].wire.iter().map(|(t, _, m)| (t.as_secs(), first_line(m).to_owned())).collect();
    let expected = [
        (0, "SIP/2.0 200 OK"),
        (45, "INVITE sip:alice@192.0.2.1:5060 SIP/2.0"),
        (45, "ACK sip:alice@192.0.2.1:5060 SIP/2.0"),
        (90, "UPDATE sip:alice@192.0.2.1:5060 SIP/2.0"),
    ];
    assert_eq!(wire, expected.map(|(t, l)| (t, l.to_owned())));
    let reinvites = p.nodes[1].sent("INVITE ", "");
    assert!(reinvites[0].1.ends_with(std::str::from_utf8(ANSWER).unwrap()));
    assert_eq!(header(&reinvites[0].1, "Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(p.nodes[1].ep.session_count(), 1);
    // Bob's application heard of refreshes, not of re-INVITE outcomes.
    assert!(!p.nodes[1].session_events().iter().any(|(_, e)| matches!(e, SessionEvent::Updated(_))));
    assert_eq!(refreshed(&p, 1).len(), 3);
}

fn carol() -> SocketAddr {
    "192.0.2.9:5060".parse().unwrap()
}

#[test]
fn a_peer_that_does_not_allow_update_is_refreshed_by_reinvite_with_our_offer() {
    let mut p = Pair::new(|c| c.session_timers = timers(90, 90), |_| {}, idle(), idle());
    p.with(0, |ep, now| ep.invite(now, Request::invite("sip:carol@192.0.2.9:5060", "application/sdp", OFFER.to_vec())))
        .unwrap();
    let invite = p.nodes[0].sent("INVITE ", "").remove(0).1;
    let body = std::str::from_utf8(ANSWER).unwrap();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: <sip:carol@192.0.2.9>;tag=k9\r\nCall-ID: {}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:carol@192.0.2.9:5060>\r\nAllow: INVITE, ACK, BYE, CANCEL\r\n\
         Session-Expires: 90;refresher=uac\r\nRequire: timer\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        header(&invite, "Via").unwrap(),
        header(&invite, "From").unwrap(),
        header(&invite, "Call-ID").unwrap(),
        body.len()
    );
    p.inject(0, carol(), &ok);
    p.secs(46);
    let sent: Vec<String> =
        p.nodes[0].wire.iter().map(|(t, _, m)| format!("{} {}", t.as_secs(), first_line(m))).collect();
    assert_eq!(sent[1], "0 ACK sip:carol@192.0.2.9:5060 SIP/2.0");
    assert_eq!(sent[2], "45 INVITE sip:carol@192.0.2.9:5060 SIP/2.0", "{sent:?}");
    let reinvite = p.nodes[0].sent("INVITE ", "").remove(1).1;
    assert!(reinvite.ends_with(std::str::from_utf8(OFFER).unwrap()), "§10: the last offer again");
    assert_eq!(header(&reinvite, "CSeq"), Some("2 INVITE"));
    assert_eq!(header(&reinvite, "Session-Expires"), Some("90;refresher=uac"));
}

#[test]
fn a_uas_checks_min_se_of_reinvites_too() {
    let invite = |cseq: u32, se: u32| {
        format!(
            "INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-i{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: <sip:bob@192.0.2.2>\r\n\
             Call-ID: raw-timer-1\r\nCSeq: {cseq} INVITE\r\nContact: <sip:carol@192.0.2.9:5060>\r\n\
             Supported: timer\r\nSession-Expires: {se}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut p = Pair::new(|_| {}, |c| c.session_timers = timers(1800, 300), idle(), idle());
    p.inject(1, carol(), &invite(1, 120));
    let refusal = p.nodes[1].sent("SIP/2.0 422", "").remove(0).1;
    assert_eq!(first_line(&refusal), "SIP/2.0 422 Session Interval Too Small");
    assert_eq!(header(&refusal, "Min-SE"), Some("300"));
    assert_eq!(p.nodes[1].ep.session_count(), 0, "no session for a refused INVITE");
    assert!(p.nodes[1].incoming().is_none());
}
