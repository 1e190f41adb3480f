//! Reliable provisional responses (RFC 3262) between two endpoints in
//! memory, and against a peer played by the test: the PRACK and its RAck
//! (§7.2), retransmissions at T1 doubling until it (§3), the give-up after
//! 64·T1 with a 5xx (§3), one unacknowledged at a time (§3), the 2xx held
//! for the PRACK of a provisional response with a body (§3), 481 for a
//! PRACK matching nothing (§3), duplicates absorbed and out-of-order RSeq
//! ignored by the UAC (§4), 420 when the extension is off (RFC 3261
//! §8.2.2.3).
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

mod pair;

use pair::{first_line, header, idle, uri, Pair, Policy, ANSWER, OFFER};
use sipline::endpoint::{Body, Event, PrackMode, Request, SessionEnd, SessionEvent};
use std::net::SocketAddr;
use std::time::Duration;

fn carol() -> SocketAddr {
    "192.0.2.9:5060".parse().unwrap()
}

/// Bob rings with `code` (and `body`), reliably when the INVITE asks.
fn ringing(code: u16, body: Option<&'static [u8]>) -> Policy {
    Box::new(move |ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, code, body.map(Body::sdp).as_ref()).unwrap();
        }
    })
}

/// Bob rings with `code` (and `body`), then answers at once with ANSWER.
fn ring_and_answer(code: u16, body: Option<&'static [u8]>) -> Policy {
    Box::new(move |ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, code, body.map(Body::sdp).as_ref()).unwrap();
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
    })
}

fn pair(alice: PrackMode, bob: PrackMode, bob_policy: Policy) -> Pair {
    Pair::new(|c| c.prack = alice, |c| c.prack = bob, idle(), bob_policy)
}

fn call(p: &mut Pair) -> sipline::endpoint::SessionId {
    p.with(0, |ep, now| ep.invite(now, Request::invite(&uri(1, "bob"), "application/sdp", OFFER.to_vec()))).unwrap()
}

fn rseq(msg: &str) -> u32 {
    header(msg, "RSeq").unwrap().parse().unwrap()
}

#[test]
fn a_reliable_180_is_pracked_in_the_early_dialog_and_the_call_completes() {
    let mut p = pair(PrackMode::Required, PrackMode::Supported, ringing(180, None));
    let s = call(&mut p);
    let invite = p.nodes[0].sent("INVITE ", "").remove(0).1;
    // §4: the UAC says it requires (so supports) the extension.
    assert_eq!(header(&invite, "Require"), Some("100rel"));
    assert!(header(&invite, "Supported").unwrap().contains("100rel"), "{invite}");
    assert!(header(&invite, "Allow").unwrap().contains("PRACK"), "{invite}");
    let ringing = p.nodes[1].sent("SIP/2.0 180", "").remove(0).1;
    assert_eq!(header(&ringing, "Require"), Some("100rel"));
    let n = rseq(&ringing);
    assert!((1..1 << 31).contains(&n), "§3: RSeq in 1..2^31-1: {n}");
    // §7.2: the PRACK: in the early dialog (Bob's tag), CSeq one more than
    // the INVITE's, RAck = RSeq, CSeq number and method of the response.
    let pracks = p.nodes[0].sent("PRACK ", "");
    assert_eq!(pracks.len(), 1);
    let prack = &pracks[0].1;
    assert_eq!(header(prack, "RAck"), Some(format!("{n} 1 INVITE").as_str()));
    assert_eq!(header(prack, "CSeq"), Some("2 PRACK"));
    assert_eq!(header(prack, "Call-ID"), header(&invite, "Call-ID"));
    assert_eq!(header(prack, "To"), header(&ringing, "To"));
    assert!(prack.starts_with("PRACK sip:bob@192.0.2.2:5060 SIP/2.0"), "remote target: {prack}");
    assert!(p.nodes[1].sent("SIP/2.0 200", "PRACK").len() == 1);
    let bob = p.nodes[1].incoming().unwrap();
    assert!(p.nodes[1].session_events().iter().any(|(_, e)| matches!(e, SessionEvent::Pracked { body: None })));
    // Progress reported once to Alice.
    let progress = p.nodes[0].session_events().iter().filter(|(_, e)| matches!(e, SessionEvent::Progress(_))).count();
    assert_eq!(progress, 1);
    p.with(1, |ep, now| ep.accept(now, bob, Some(&Body::sdp(ANSWER)))).unwrap();
    p.secs(1);
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(true));
    assert_eq!(p.nodes[1].ep.session_confirmed(bob), Some(true));
    // The BYE comes after the PRACK's CSeq (§12.2.1.1).
    p.with(0, |ep, now| ep.hangup(now, s)).unwrap();
    let bye = p.nodes[0].sent("BYE ", "").remove(0).1;
    assert_eq!(header(&bye, "CSeq"), Some("3 BYE"));
    p.secs(1);
    assert_eq!(p.nodes[1].ep.session_count(), 0);
    assert_eq!(p.nodes[0].ep.session_count(), 0);
}

#[test]
fn early_media_the_183_carries_the_answer_and_the_2xx_waits_for_its_prack() {
    let mut p = pair(PrackMode::Required, PrackMode::Supported, ring_and_answer(183, Some(ANSWER)));
    // The first two PRACKs are lost: Bob holds the 200 meanwhile.
    let mut lost = 0;
    p.drop = Box::new(move |from, m| {
        let hit = from == 0 && m.starts_with("PRACK ") && lost < 2;
        lost += usize::from(hit);
        hit
    });
    let s = call(&mut p);
    let progress = p.nodes[0].session_events().into_iter().find_map(|(_, e)| match e {
        SessionEvent::Progress(r) => Some(r),
        _ => None,
    });
    let progress = progress.unwrap();
    assert_eq!(progress.code, 183);
    assert!(String::from_utf8_lossy(&progress.bytes).ends_with(std::str::from_utf8(ANSWER).unwrap()));
    assert!(p.nodes[1].sent("SIP/2.0 200", "INVITE").is_empty(), "§3: no 2xx before the PRACK");
    p.secs(10);
    // The PRACK went again by Timer E (0.5 s, 1.5 s): the third got there.
    let prack_in = p.nodes[1].received.iter().find(|(_, m)| m.starts_with("PRACK ")).unwrap().0;
    let ok = p.nodes[1].sent("SIP/2.0 200", "INVITE");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].0, prack_in, "the 2xx goes with the PRACK's 200");
    assert_eq!(p.nodes[0].ep.session_confirmed(s), Some(true));
}

#[test]
fn unacknowledged_it_goes_again_at_t1_doubling_and_after_64_t1_the_invite_gets_500() {
    let mut p = pair(PrackMode::Required, PrackMode::Supported, ringing(180, None));
    p.drop = Box::new(|from, m| from == 0 && m.starts_with("PRACK "));
    let s = call(&mut p);
    p.secs(40);
    let bob = &p.nodes[1];
    let times: Vec<f64> = bob.sent("SIP/2.0 180", "").iter().map(|(t, _)| t.as_secs_f64()).collect();
    // §3: at 0, then T1, 2·T1, 4·T1… (no T2 cap) until 64·T1 = 32 s.
    assert_eq!(times, vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    let copies = bob.sent("SIP/2.0 180", "");
    assert!(copies.iter().all(|(_, m)| *m == copies[0].1), "the same response each time");
    // §3: no PRACK in 64·T1: a 5xx, and the session is over.
    let fail = bob.sent("SIP/2.0 5", "INVITE");
    assert_eq!(fail.len(), 1);
    assert_eq!(fail[0].0, Duration::from_secs(32));
    assert!(bob.session_events().iter().any(|(_, e)| *e == SessionEvent::Ended(SessionEnd::NoPrack)));
    assert_eq!(bob.ep.session_count(), 0);
    // Alice only absorbed the copies: one PRACK transaction.
    let pracks = p.nodes[0].sent("PRACK ", "");
    assert!(pracks.iter().all(|(_, m)| *m == pracks[0].1), "retransmissions of one PRACK only");
    let ended = p.nodes[0].session_events().into_iter().any(|(_, e)| matches!(e, SessionEvent::Ended(_)));
    assert!(ended);
    assert_eq!(p.nodes[0].ep.session_confirmed(s), None);
}

#[test]
fn one_unacknowledged_at_a_time_the_next_waits_for_the_prack() {
    let policy: Policy = Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
            ep.ring(now, *session, 183, Some(&Body::sdp(ANSWER))).unwrap();
        }
    });
    let mut p = pair(PrackMode::Required, PrackMode::Supported, policy);
    let mut lost = false;
    p.drop = Box::new(move |from, m| {
        let hit = from == 0 && m.starts_with("PRACK ") && !lost;
        lost |= hit;
        hit
    });
    call(&mut p);
    assert!(p.nodes[1].sent("SIP/2.0 183", "").is_empty(), "§3: the 183 waits for the 180's PRACK");
    p.secs(5);
    let bob = &p.nodes[1];
    let first = bob.sent("SIP/2.0 180", "").remove(0).1;
    let second = bob.sent("SIP/2.0 183", "");
    assert_eq!(second.len(), 1);
    assert_eq!(rseq(&second[0].1), rseq(&first) + 1, "§3: RSeq one more each time");
    let prack_in = bob.received.iter().find(|(_, m)| m.starts_with("PRACK ")).unwrap().0;
    assert_eq!(second[0].0, prack_in);
    // Alice PRACKed both, each with its RSeq, CSeq rising.
    let racks: Vec<String> = p.nodes[0]
        .sent("PRACK ", "")
        .iter()
        .map(|(_, m)| format!("{} / {}", header(m, "RAck").unwrap(), header(m, "CSeq").unwrap()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = rseq(&first);
    assert_eq!(racks, vec![format!("{n} 1 INVITE / 2 PRACK"), format!("{} 1 INVITE / 3 PRACK", n + 1)]);
}

#[test]
fn unreliable_when_the_invite_does_not_ask_unless_required() {
    // Bob supports 100rel; Alice's INVITE does not mention it.
    let mut p = pair(PrackMode::Off, PrackMode::Supported, ringing(180, None));
    call(&mut p);
    let first = p.nodes[1].sent("SIP/2.0 180", "").remove(0).1;
    assert_eq!(header(&first, "RSeq"), None);
    p.secs(5);
    assert_eq!(p.nodes[1].sent("SIP/2.0 180", "").len(), 1, "no retransmission");
    // Alice supports it, Bob requires it: reliable.
    let mut p = pair(PrackMode::Supported, PrackMode::Required, ringing(180, None));
    call(&mut p);
    let invite = p.nodes[0].sent("INVITE ", "").remove(0).1;
    assert_eq!(header(&invite, "Require"), None);
    assert!(header(&p.nodes[1].sent("SIP/2.0 180", "").remove(0).1, "RSeq").is_some());
    assert_eq!(p.nodes[0].sent("PRACK ", "").len(), 1);
}

#[test]
fn require_100rel_without_support_gets_420_with_unsupported() {
    let mut p = pair(PrackMode::Required, PrackMode::Off, ringing(180, None));
    let s = call(&mut p);
    let refusal = p.nodes[1].sent("SIP/2.0 420", "").remove(0).1;
    assert_eq!(header(&refusal, "Unsupported"), Some("100rel"));
    assert_eq!(p.nodes[1].ep.session_count(), 0);
    assert!(p.nodes[0].session_events().iter().any(|(_, e)| matches!(e, SessionEvent::Ended(SessionEnd::Failed(_)))));
    assert_eq!(p.nodes[0].ep.session_confirmed(s), None);
}

// ----- against a peer played by the test -----

fn carol_invite(extra: &str) -> String {
    let body = std::str::from_utf8(OFFER).unwrap();
    format!(
        "INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-inv1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: <sip:bob@192.0.2.2>\r\n\
         Call-ID: raw-prack-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@192.0.2.9:5060>\r\n{extra}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn carol_prack(branch: &str, cseq: u32, to_tag: &str, rack: &str) -> String {
    format!(
        "PRACK sip:bob@192.0.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@192.0.2.9>;tag=c1\r\nTo: <sip:bob@192.0.2.2>;tag={to_tag}\r\n\
         Call-ID: raw-prack-1\r\nCSeq: {cseq} PRACK\r\nRAck: {rack}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn tag_of(to: &str) -> &str {
    to.split(";tag=").nth(1).unwrap()
}

#[test]
fn a_prack_matching_nothing_gets_481_and_the_right_one_200() {
    let mut p = pair(PrackMode::Off, PrackMode::Supported, ringing(180, None));
    p.inject(1, carol(), &carol_invite("Require: 100rel\r\n"));
    let ringing = p.nodes[1].sent("SIP/2.0 180", "").remove(0).1;
    let (n, tag) = (rseq(&ringing), tag_of(header(&ringing, "To").unwrap()).to_owned());
    let answers = |p: &Pair, branch: &str| -> Vec<String> {
        p.nodes[1].sent("SIP/2.0", branch).iter().map(|(_, m)| first_line(m).to_owned()).collect()
    };
    // §3: wrong RSeq, wrong CSeq number, wrong method: 481.
    p.inject(1, carol(), &carol_prack("p1", 2, &tag, &format!("{} 1 INVITE", n + 1)));
    p.inject(1, carol(), &carol_prack("p2", 3, &tag, &format!("{n} 7 INVITE")));
    p.inject(1, carol(), &carol_prack("p3", 4, &tag, &format!("{n} 1 UPDATE")));
    p.inject(1, carol(), &carol_prack("p4", 5, &tag, "garbage"));
    for b in ["p1", "p2", "p3", "p4"] {
        assert_eq!(answers(&p, b), vec!["SIP/2.0 481 Call/Transaction Does Not Exist"], "{b}");
    }
    p.inject(1, carol(), &carol_prack("p5", 6, &tag, &format!("{n} 1 INVITE")));
    assert_eq!(answers(&p, "p5"), vec!["SIP/2.0 200 OK"]);
    // A PRACK in no dialog: 481 as well.
    p.inject(1, carol(), &carol_prack("p6", 7, "nosuchtag", &format!("{n} 1 INVITE")));
    assert_eq!(answers(&p, "p6"), vec!["SIP/2.0 481 Call/Transaction Does Not Exist"]);
    // Acknowledged: again, it matches nothing unacknowledged.
    p.inject(1, carol(), &carol_prack("p7", 8, &tag, &format!("{n} 1 INVITE")));
    assert_eq!(answers(&p, "p7"), vec!["SIP/2.0 481 Call/Transaction Does Not Exist"]);
    p.secs(5);
    assert_eq!(p.nodes[1].sent("SIP/2.0 180", "").len(), 1, "no retransmission once PRACKed");
}

/// A response from Carol to Alice's INVITE.
fn carol_response(invite: &str, status: &str, extra: &str, body: &str) -> String {
    let via = header(invite, "Via").unwrap();
    let from = header(invite, "From").unwrap();
    let call_id = header(invite, "Call-ID").unwrap();
    let ct = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".to_owned() };
    format!(
        "SIP/2.0 {status}\r\nVia: {via}\r\nFrom: {from}\r\nTo: <sip:carol@192.0.2.9>;tag=k9\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@192.0.2.9:5060>\r\n{extra}{ct}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn the_uac_absorbs_duplicates_and_ignores_rseq_out_of_order_section_4() {
    let mut p = pair(PrackMode::Supported, PrackMode::Off, idle());
    p.with(0, |ep, now| ep.invite(now, Request::invite("sip:carol@192.0.2.9:5060", "application/sdp", OFFER.to_vec())))
        .unwrap();
    let invite = p.nodes[0].sent("INVITE ", "").remove(0).1;
    assert!(header(&invite, "Supported").unwrap().contains("100rel"));
    let reliable =
        |rseq: u32| carol_response(&invite, "180 Ringing", &format!("Require: 100rel\r\nRSeq: {rseq}\r\n"), "");
    let progress =
        |p: &Pair| p.nodes[0].session_events().iter().filter(|(_, e)| matches!(e, SessionEvent::Progress(_))).count();
    let racks = |p: &Pair| -> Vec<String> {
        let mut v: Vec<String> =
            p.nodes[0].sent("PRACK ", "").iter().map(|(_, m)| header(m, "RAck").unwrap().to_owned()).collect();
        v.dedup();
        v
    };
    p.inject(0, carol(), &reliable(5));
    assert_eq!((progress(&p), racks(&p)), (1, vec!["5 1 INVITE".to_owned()]));
    // The same RSeq again: a retransmission, absorbed.
    p.inject(0, carol(), &reliable(5));
    assert_eq!((progress(&p), racks(&p)), (1, vec!["5 1 INVITE".to_owned()]));
    // Not one more than the last: neither PRACKed nor processed.
    p.inject(0, carol(), &reliable(7));
    assert_eq!((progress(&p), racks(&p)), (1, vec!["5 1 INVITE".to_owned()]));
    // The next in order.
    p.inject(0, carol(), &reliable(6));
    assert_eq!((progress(&p), racks(&p)), (2, vec!["5 1 INVITE".to_owned(), "6 1 INVITE".to_owned()]));
    // An unreliable 183 in between passes as ever, with no PRACK.
    p.inject(0, carol(), &carol_response(&invite, "183 Session Progress", "", ""));
    assert_eq!((progress(&p), racks(&p).len()), (3, 2));
    let prack = p.nodes[0].sent("PRACK ", "").remove(0).1;
    assert!(prack.starts_with("PRACK sip:carol@192.0.2.9:5060 "), "{prack}");
    assert!(header(&prack, "To").unwrap().ends_with(";tag=k9"));
}
