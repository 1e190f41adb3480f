//! Reliable provisional responses (RFC 3262) in the simulated network:
//! 30 % loss, duplication and reordering. Alice requires `100rel`, Bob
//! rings reliably (a 180, then a 183 with early media that waits its turn)
//! and answers at once; the 2xx waits for the PRACK of the 183 (§3). Per
//! seed the run is checked against the RFC, whatever the loss did; the
//! call completes in nearly every seed.

mod sim_ua;

use sim_ua::{header, uri, Policy, Ua};
use sipline::endpoint::{Body, Event, PrackMode, Request, RequestError, SessionEnd, SessionEvent};
use sipline_tests::sim::{for_each_seed, LinkConfig, Sim};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\n";
const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 192.0.2.2\r\n";

/// Bob: 180, 183 with the answer (both reliable, the second queued), then
/// 200 at once (held until the 183's PRACK).
fn bob() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
            ep.ring(now, *session, 183, Some(&Body::sdp(ANSWER))).unwrap();
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
    })
}

fn rseq(m: &str) -> u32 {
    header(m, "RSeq").unwrap().parse().unwrap()
}

fn go(s: &mut Sim<Ua>, secs: u64) {
    let until = s.elapsed() + Duration::from_secs(secs);
    s.run(until, 1_000_000);
}

#[test]
fn reliable_provisionals_are_pracked_under_loss_and_the_call_completes() {
    let completed = Cell::new(0u32);
    let runs = Cell::new(0u32);
    for_each_seed(50, |seed| {
        let t0 = Instant::now();
        let a = Ua::new(0, "alice", t0, |c| c.prack = PrackMode::Required, Box::new(|_, _, _| {}));
        let b = Ua::new(1, "bob", t0, |c| c.prack = PrackMode::Supported, bob());
        let mut s = Sim::new(vec![a, b], LinkConfig::lossy(), seed, t0);
        let call = s.nodes[0].ep.invite(t0, Request::invite(&uri(1, "bob"), "application/sdp", OFFER.to_vec()));
        let call = call.unwrap();
        s.nodes[0].pump();
        go(&mut s, 60);
        runs.set(runs.get() + 1);
        let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
        let trace = s.trace();

        // Bob: reliable provisionals in RSeq order, one more each (§3),
        // the 183 only once the 180 was PRACKed (one unacknowledged at a
        // time), the 200 only once the 183 was.
        let r180: BTreeSet<u32> = bob.sent("SIP/2.0 180", "").iter().map(|(_, m)| rseq(m)).collect();
        let r183: BTreeSet<u32> = bob.sent("SIP/2.0 183", "").iter().map(|(_, m)| rseq(m)).collect();
        assert!(r180.len() == 1 && r183.len() <= 1, "{r180:?} {r183:?}\n{trace}");
        let n = *r180.first().unwrap();
        assert!(r183.iter().all(|&r| r == n + 1), "§3: RSeq + 1\n{trace}");
        let prack_of = |r: u32| bob.got("PRACK ", &format!("RAck: {r} 1 INVITE")).first().map(|p| p.0);
        if let Some((t, _)) = bob.sent("SIP/2.0 183", "").first() {
            assert!(prack_of(n).is_some_and(|p| p <= *t), "§3: the 183 waited for the 180's PRACK\n{trace}");
        }
        if let Some((t, _)) = bob.sent("SIP/2.0 200", "CSeq: 1 INVITE").first() {
            assert!(prack_of(n + 1).is_some_and(|p| p <= *t), "§3: the 2xx waited for the 183's PRACK\n{trace}");
        }
        // Alice PRACKed each RSeq (retransmissions aside) once, in order,
        // and nothing else; each was reported once.
        // (Timer E retransmissions of one may interleave with the next.)
        let mut racks: Vec<&str> = Vec::new();
        for (_, m) in alice.sent("PRACK ", "") {
            let rack = header(m, "RAck").unwrap();
            if !racks.contains(&rack) {
                racks.push(rack);
            }
        }
        let expected: Vec<String> =
            (0..racks.len()).map(|i| format!("{} 1 INVITE", n + u32::try_from(i).unwrap())).collect();
        assert_eq!(racks, expected, "§7.2\n{trace}");
        let progress = alice
            .session_events()
            .iter()
            .filter(|(_, e)| matches!(e, SessionEvent::Progress(r) if r.code > 100))
            .count();
        assert_eq!(progress, racks.len(), "§4: duplicates absorbed\n{trace}");

        match bob.ended() {
            // §3: no PRACK for 64·T1: 500, over.
            Some((t, SessionEnd::NoPrack)) => {
                let pracked = bob.got("PRACK ", "").iter().filter(|(p, _)| *p <= t).count();
                let last = bob.sent("SIP/2.0 18", "").last().map(|x| header(x.1, "RSeq").unwrap().to_owned());
                let acked =
                    last.is_some_and(|r| bob.got("PRACK ", &format!("RAck: {r} ")).iter().any(|(p, _)| *p <= t));
                assert!(!acked, "gave up on an acknowledged response ({pracked} PRACKs)\n{trace}");
                assert_eq!(bob.sent("SIP/2.0 500", "CSeq: 1 INVITE").len(), 1);
                assert!(alice.ended().is_some(), "{trace}");
                return;
            }
            Some((_, SessionEnd::NoAck | SessionEnd::PeerHungUp)) | None => {}
            other => panic!("Bob: {other:?}\n{trace}"),
        }
        let answered = alice.session_events().iter().any(|(_, e)| matches!(e, SessionEvent::Answered(_)));
        if !answered {
            // 30 % loss can defeat a whole INVITE transaction (Timer B).
            let why = alice.ended().map(|e| e.1);
            assert!(matches!(why, Some(SessionEnd::Failed(RequestError::Timeout))), "{why:?}\n{trace}");
            return;
        }
        // The early media: the 183 carried the answer to Alice.
        let early = alice.session_events().into_iter().find_map(|(_, e)| match e {
            SessionEvent::Progress(r) if r.code == 183 => Some(r),
            _ => None,
        });
        assert!(early.is_some_and(|r| r.bytes.ends_with(ANSWER)), "{trace}");
        if alice.ep.session_confirmed(call) != Some(true) || bob.ended().is_some() {
            // Every ACK lost: Bob gave up at 64·T1 with BYE (§13.3.1.4).
            assert!(matches!(bob.ended(), Some((_, SessionEnd::NoAck))), "{trace}");
            return;
        }
        completed.set(completed.get() + 1);
        let now = s.now();
        s.nodes[0].ep.hangup(now, call).unwrap();
        go(&mut s, 60);
        assert_eq!(s.nodes[0].ep.session_count(), 0);
        assert_eq!(s.nodes[0].ep.tables().session_timers, 0);
    });
    // Loss may defeat a call now and then; nearly all complete.
    eprintln!("{} of {} calls completed", completed.get(), runs.get());
    assert!(completed.get() * 100 >= runs.get() * 95, "{} of {} completed", completed.get(), runs.get());
}
