//! UPDATE (RFC 3311) between two endpoints in memory, and from a peer
//! played by the test: an offer answered by the application in confirmed
//! and early dialogs (§5.1, §5.2), glare (491 and the back-off, §5.2), 500
//! with Retry-After while the peer's offer waits for its answer (§5.2),
//! UPDATE with no body answered 200 at once, Contact in both directions.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

mod pair;

use pair::{first_line, header, idle, uri, Pair, Policy, ANSWER, OFFER};
use sipline::endpoint::{Body, Event, PrackMode, Request, SessionError, SessionEvent, SessionId};
use std::net::SocketAddr;

const OFFER2: &[u8] = b"v=0\r\no=alice 1 2 IN IP4 192.0.2.1\r\n";
const ANSWER2: &[u8] = b"v=0\r\no=bob 2 3 IN IP4 192.0.2.2\r\n";

/// Answers the session with ANSWER and UPDATE offers with ANSWER2.
fn answering() -> Policy {
    Box::new(|ep, now, e| match e {
        Event::IncomingSession { session, .. } => ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap(),
        Event::Session { session, event: SessionEvent::UpdateOffer { .. } } => {
            ep.accept_update(now, *session, Some(&Body::sdp(ANSWER2))).unwrap();
        }
        _ => {}
    })
}

fn call(p: &mut Pair) -> SessionId {
    p.with(0, |ep, now| ep.invite(now, Request::invite(&uri(1, "bob"), "application/sdp", OFFER.to_vec()))).unwrap()
}

fn updated(p: &Pair, id: usize) -> Vec<u16> {
    p.nodes[id]
        .session_events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            SessionEvent::Updated(r) => Some(r.map_or_else(|e| format!("{e}")[..3].parse().unwrap_or(0), |r| r.code)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_update_with_an_offer_in_the_session_is_answered_by_the_application() {
    let mut p = Pair::new(|_| {}, |_| {}, idle(), answering());
    let s = call(&mut p);
    p.with(0, |ep, now| ep.update(now, s, Some(Body::sdp(OFFER2)))).unwrap();
    let update = p.nodes[0].sent("UPDATE ", "").remove(0).1;
    assert!(update.ends_with(std::str::from_utf8(OFFER2).unwrap()));
    assert_eq!(header(&update, "CSeq"), Some("2 UPDATE"));
    assert!(header(&update, "Contact").is_some(), "§5.1: a target refresh");
    // Bob's application saw the offer and answered it.
    let offered = p.nodes[1].session_events().into_iter().find_map(|(_, e)| match e {
        SessionEvent::UpdateOffer { body, .. } => body,
        _ => None,
    });
    assert_eq!(offered, Some(Body::sdp(OFFER2)));
    let ok = p.nodes[1].sent("SIP/2.0 200", "CSeq: 2 UPDATE").remove(0).1;
    assert!(ok.ends_with(std::str::from_utf8(ANSWER2).unwrap()));
    assert!(header(&ok, "Contact").is_some(), "§5.2: the 2xx carries Contact");
    assert_eq!(updated(&p, 0), vec![200]);
    // No ACK for an UPDATE.
    assert_eq!(p.nodes[0].sent("ACK ", "").len(), 1);
    // Bob rejects the next one; the session stays.
    p.nodes[1].policy = Box::new(|ep, now, e| {
        if let Event::Session { session, event: SessionEvent::UpdateOffer { .. } } = e {
            ep.reject_update(now, *session, 488, "Not Acceptable Here").unwrap();
        }
    });
    p.with(0, |ep, now| ep.update(now, s, Some(Body::sdp(OFFER2)))).unwrap();
    assert_eq!(updated(&p, 0), vec![200, 488]);
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(true));
}

#[test]
fn an_update_with_no_body_is_answered_200_at_once() {
    let mut p = Pair::new(|_| {}, |_| {}, idle(), answering());
    let s = call(&mut p);
    p.with(0, |ep, now| ep.update(now, s, None)).unwrap();
    assert!(!p.nodes[1].session_events().iter().any(|(_, e)| matches!(e, SessionEvent::UpdateOffer { .. })));
    assert_eq!(updated(&p, 0), vec![200]);
}

#[test]
fn glare_both_get_491_and_try_again_after_the_back_off() {
    let mut p = Pair::new(|_| {}, |_| {}, answering(), answering());
    let s = call(&mut p);
    let b = p.nodes[1].incoming().unwrap();
    // Both at once, before either arrives.
    let now = p.now;
    p.nodes[0].ep.update(now, s, Some(Body::sdp(OFFER2))).unwrap();
    p.nodes[1].ep.update(now, b, Some(Body::sdp(ANSWER2))).unwrap();
    p.deliver();
    assert_eq!(p.nodes[0].sent("SIP/2.0 491", "UPDATE").len(), 1);
    assert_eq!(p.nodes[1].sent("SIP/2.0 491", "UPDATE").len(), 1);
    // While the back-off runs, another offer is refused locally.
    assert_eq!(p.with(0, |ep, now| ep.update(now, s, None)), Err(SessionError::State));
    p.secs(10);
    // §5.2 / RFC 3261 §14.1: Bob (not the Call-ID's owner) tries within
    // 2 s, Alice after 2.1–4 s: both succeed.
    let t = |id: usize| p.nodes[id].sent("UPDATE ", "")[1].0.as_secs_f64();
    assert!(t(1) < 2.0 && (2.1..=4.0).contains(&t(0)), "{} {}", t(0), t(1));
    assert_eq!(updated(&p, 0), vec![200]);
    assert_eq!(updated(&p, 1), vec![200]);
}

#[test]
fn an_update_in_the_early_dialog_after_a_reliable_answer() {
    let bob: Policy = Box::new(|ep, now, e| match e {
        Event::IncomingSession { session, .. } => ep.ring(now, *session, 183, Some(&Body::sdp(ANSWER))).unwrap(),
        Event::Session { session, event: SessionEvent::UpdateOffer { .. } } => {
            ep.accept_update(now, *session, Some(&Body::sdp(ANSWER2))).unwrap();
        }
        _ => {}
    });
    let mut p = Pair::new(|c| c.prack = PrackMode::Required, |c| c.prack = PrackMode::Supported, idle(), bob);
    let s = call(&mut p);
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(false), "early");
    p.with(0, |ep, now| ep.update(now, s, Some(Body::sdp(OFFER2)))).unwrap();
    let update = p.nodes[0].sent("UPDATE ", "").remove(0).1;
    // CSeq after the INVITE (1) and the PRACK (2).
    assert_eq!(header(&update, "CSeq"), Some("3 UPDATE"));
    assert_eq!(updated(&p, 0), vec![200]);
    let b = p.nodes[1].incoming().unwrap();
    p.with(1, |ep, now| ep.accept(now, b, None)).unwrap();
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(true));
}

#[test]
fn no_update_with_an_offer_before_the_early_answer() {
    let bob: Policy = Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
        }
    });
    let mut p = Pair::new(|_| {}, |_| {}, idle(), bob);
    let s = call(&mut p);
    // The INVITE's offer has no answer yet (§5.1).
    assert_eq!(p.with(0, |ep, now| ep.update(now, s, Some(Body::sdp(OFFER2)))), Err(SessionError::State));
}

fn carol() -> SocketAddr {
    "192.0.2.9:5060".parse().unwrap()
}

#[test]
fn a_second_offer_while_the_first_waits_gets_500_with_retry_after_and_ours_491() {
    let invite = "INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-i1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: <sip:bob@192.0.2.2>\r\n\
        Call-ID: raw-update-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@192.0.2.9:5060>\r\nContent-Length: 0\r\n\r\n";
    let bob: Policy = Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.accept(now, *session, Some(&Body::sdp(OFFER))).unwrap();
        }
    });
    let mut p = Pair::new(|_| {}, |_| {}, idle(), bob);
    p.inject(1, carol(), invite);
    let ok = p.nodes[1].sent("SIP/2.0 200", "").remove(0).1;
    let to = header(&ok, "To").unwrap().to_owned();
    let ack = format!(
        "ACK sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-a1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: {to}\r\nCall-ID: raw-update-1\r\n\
         CSeq: 1 ACK\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
        ANSWER.len(),
        std::str::from_utf8(ANSWER).unwrap()
    );
    p.inject(1, carol(), &ack);
    let update = |cseq: u32| {
        let body = std::str::from_utf8(OFFER2).unwrap();
        format!(
            "UPDATE sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-u{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: {to}\r\nCall-ID: raw-update-1\r\n\
             CSeq: {cseq} UPDATE\r\nContact: <sip:carol@192.0.2.9:5061>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Bob's application leaves the first offer unanswered.
    p.inject(1, carol(), &update(2));
    p.inject(1, carol(), &update(3));
    let second = p.nodes[1].sent("SIP/2.0", "z9hG4bK-u3").remove(0).1;
    assert_eq!(first_line(&second), "SIP/2.0 500 Server Internal Error");
    assert!(header(&second, "Retry-After").is_some());
    // The first is answered; Bob now makes an offer of his own and Carol's
    // next one crosses it: 491.
    let b = p.nodes[1].incoming().unwrap();
    p.with(1, |ep, now| ep.accept_update(now, b, Some(&Body::sdp(ANSWER2)))).unwrap();
    let first = p.nodes[1].sent("SIP/2.0", "z9hG4bK-u2").remove(0).1;
    assert_eq!(first_line(&first), "SIP/2.0 200 OK");
    p.with(1, |ep, now| ep.update(now, b, Some(Body::sdp(ANSWER)))).unwrap();
    // Bob's UPDATE goes to Carol's new Contact (the UPDATE refreshed it).
    let ours = p.nodes[1].sent("UPDATE ", "").remove(0).1;
    assert!(ours.starts_with("UPDATE sip:carol@192.0.2.9:5061 "), "{ours}");
    p.inject(1, carol(), &update(4));
    let crossed = p.nodes[1].sent("SIP/2.0", "z9hG4bK-u4").remove(0).1;
    assert_eq!(first_line(&crossed), "SIP/2.0 491 Request Pending");
}
