//! Session timers (RFC 4028) in the simulated network: refreshes keep a
//! session alive over many intervals under 30 % loss, duplication and
//! reordering, every early end justified by what the loss did; a peer
//! that dies gets BYE at the interval less min(32 s, interval/3) after the
//! last refresh (§10), or, when the dead one is the other side, the
//! refresh times out and the refresher sends BYE (§10).

mod sim_ua;

use sim_ua::{uri, Policy, Ua};
use sipline::endpoint::{Body, Event, Request, RequestError, SessionEnd, SessionEvent, SessionTimerConfig};
use sipline_tests::sim::{for_each_seed, top_branch, LinkConfig, Sim};
use std::cell::Cell;
use std::time::{Duration, Instant};

const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\n";
const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 192.0.2.2\r\n";

/// 90 s: the shortest interval (§4), the most refreshes per run.
const INTERVAL: u32 = 90;

fn answering() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.accept(now, *session, Some(&Body::sdp(ANSWER))).unwrap();
        }
    })
}

fn sim(link: LinkConfig, seed: u64) -> Sim<Ua> {
    let t0 = Instant::now();
    let timers = |c: &mut sipline::endpoint::EndpointConfig| {
        c.session_timers = Some(SessionTimerConfig::new(INTERVAL, 90));
    };
    let a = Ua::new(0, "alice", t0, timers, Box::new(|_, _, _| {}));
    let b = Ua::new(1, "bob", t0, timers, answering());
    let mut s = Sim::new(vec![a, b], link, seed, t0);
    s.nodes[0].ep.invite(t0, Request::invite(&uri(1, "bob"), "application/sdp", OFFER.to_vec())).unwrap();
    s.nodes[0].pump();
    s
}

fn go(s: &mut Sim<Ua>, secs: u64) {
    let until = s.elapsed() + Duration::from_secs(secs);
    s.run(until, 1_000_000);
}

/// When each side agreed or refreshed its timer.
fn refreshes(ua: &Ua) -> Vec<Instant> {
    ua.session_events().into_iter().filter(|(_, e)| matches!(e, SessionEvent::Refreshed { .. })).map(|e| e.0).collect()
}

/// When each new request (the first copy of each transaction) whose
/// line starts with `prefix` went.
fn first_copies(ua: &Ua, prefix: &str) -> Vec<Instant> {
    let mut seen = Vec::new();
    let mut times = Vec::new();
    for (t, m) in ua.sent(prefix, "") {
        let b = top_branch(m.as_bytes()).to_owned();
        if !seen.contains(&b) {
            seen.push(b);
            times.push(t);
        }
    }
    times
}

/// The session was up on both sides (Alice answered, Bob's timer set).
fn established(s: &Sim<Ua>) -> bool {
    let answered = s.nodes[0].session_events().iter().any(|(_, e)| matches!(e, SessionEvent::Answered(_)));
    answered && !refreshes(&s.nodes[1]).is_empty()
}

#[test]
fn refreshes_keep_the_session_alive_over_many_intervals_under_loss() {
    let (alive, runs) = (Cell::new(0u32), Cell::new(0u32));
    for_each_seed(50, |seed| {
        let mut s = sim(LinkConfig::lossy(), seed);
        go(&mut s, 40);
        if !established(&s) {
            // 30 % loss can defeat the INVITE transaction or every ACK.
            return;
        }
        runs.set(runs.get() + 1);
        // Ten intervals.
        go(&mut s, 10 * u64::from(INTERVAL));
        let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
        let trace = s.trace();
        let watch = Duration::from_secs(u64::from(INTERVAL - 30));
        // Bob (watching, §10) never went longer than the interval less a
        // third without a refresh while the session lived.
        let bob_refreshed = refreshes(bob);
        for w in bob_refreshed.windows(2) {
            assert!(w[1] - w[0] <= watch, "a refresh came too late to count\n{trace}");
        }
        // Alice refreshes at half the interval (§10), counted from when
        // she sent the request that set it (the INVITE at 0, then each
        // UPDATE): new transactions exactly 45 s apart.
        let half = Duration::from_secs(u64::from(INTERVAL / 2));
        let starts = first_copies(alice, "UPDATE ");
        assert_eq!(starts.first().map(|t| *t - s.nodes[0].wire[0].0), Some(half), "{trace}");
        for w in starts.windows(2) {
            assert_eq!(w[1] - w[0], half, "§10: refresh at half the interval\n{trace}");
        }
        match (alice.ended(), bob.ended()) {
            (None, None) => {
                let span = *bob_refreshed.last().unwrap() - *bob_refreshed.first().unwrap();
                assert!(span >= Duration::from_secs(9 * u64::from(INTERVAL)), "{trace}");
                alive.set(alive.get() + 1);
            }
            // Every copy of a refresh lost in the watch window: Bob's
            // timer ran out (justified: no UPDATE reached him in time).
            (_, Some((t, SessionEnd::Expired))) => {
                let last = *bob_refreshed.last().unwrap();
                assert_eq!(t - last, watch, "§10: BYE at the interval less a third\n{trace}");
                // (Copies of the refresh that set `last` do not count.)
                let seen: Vec<&str> = bob
                    .got("UPDATE ", "")
                    .iter()
                    .filter(|(g, _)| *g <= last)
                    .map(|(_, m)| top_branch(m.as_bytes()))
                    .collect();
                let late = bob
                    .got("UPDATE ", "")
                    .into_iter()
                    .find(|(g, m)| *g > last && *g < t && !seen.contains(&top_branch(m.as_bytes())));
                assert!(late.is_none(), "a new UPDATE arrived in time yet Bob expired\n{trace}");
                assert_eq!(first_copies(bob, "BYE ").len(), 1, "{trace}");
            }
            // Every 200 to a refresh lost: Alice's UPDATE timed out (Timer
            // F) and she ended it with BYE (§10).
            (Some((_, SessionEnd::Failed(RequestError::Timeout))), _) => {
                let cseq = alice.sent("UPDATE ", "").last().map(|u| sim_ua::header(u.1, "CSeq").unwrap().to_owned());
                let cseq = cseq.unwrap();
                assert!(alice.got("SIP/2.0 200", &format!("CSeq: {cseq}")).is_empty(), "{trace}");
                assert!(!alice.sent("BYE ", "").is_empty(), "{trace}");
            }
            // Alice's BYE ended Bob's side.
            (Some((_, SessionEnd::Failed(_))), Some((_, SessionEnd::PeerHungUp))) => {}
            other => panic!("unexpected end: {other:?}\n{trace}"),
        }
    });
    eprintln!("{} of {} sessions lived ten intervals", alive.get(), runs.get());
    assert!(alive.get() * 100 >= runs.get() * 95, "{} of {}", alive.get(), runs.get());
}

#[test]
fn a_dead_refresher_gets_bye_at_the_interval_less_a_third() {
    for_each_seed(50, |seed| {
        let mut s = sim(LinkConfig::lossy(), seed);
        go(&mut s, 40);
        if !established(&s) || s.nodes[1].ended().is_some() {
            return;
        }
        go(&mut s, 100);
        if s.nodes[0].ended().is_some() || s.nodes[1].ended().is_some() {
            return; // the loss ended it already (the first test covers why)
        }
        // Alice (the refresher) dies.
        s.nodes[0].dead = true;
        go(&mut s, 200);
        let bob = &s.nodes[1];
        let trace = s.trace();
        let last = *refreshes(bob).last().unwrap();
        let (t, why) = bob.ended().unwrap_or_else(|| panic!("Bob's session never ended\n{trace}"));
        // §10: BYE at the last refresh + interval − min(32 s, interval/3).
        assert_eq!(why, SessionEnd::Expired, "{trace}");
        assert_eq!(t - last, Duration::from_secs(u64::from(INTERVAL - 30)), "{trace}");
        let byes = bob.sent("BYE ", "");
        assert!(!byes.is_empty() && byes[0].0 == t, "{trace}");
        assert_eq!(bob.ep.session_count(), 0);
    });
}

#[test]
fn a_dead_peer_of_the_refresher_gets_bye_when_the_refresh_times_out() {
    for_each_seed(50, |seed| {
        let mut s = sim(LinkConfig::lossy(), seed);
        go(&mut s, 40);
        if !established(&s) || s.nodes[1].ended().is_some() || s.nodes[0].ended().is_some() {
            return;
        }
        go(&mut s, 100);
        if s.nodes[0].ended().is_some() {
            return; // the loss ended it already (the first test covers why)
        }
        s.nodes[1].dead = true;
        go(&mut s, 200);
        let alice = &s.nodes[0];
        let trace = s.trace();
        let last = *first_copies(alice, "UPDATE ").last().unwrap();
        let (t, why) = alice.ended().unwrap_or_else(|| panic!("Alice's session never ended\n{trace}"));
        // §10: the last refresh timed out (Timer F, 64·T1): BYE.
        assert_eq!(why, SessionEnd::Failed(RequestError::Timeout), "{trace}");
        assert_eq!(t - last, Duration::from_secs(32), "{trace}");
        assert!(alice.sent("BYE ", "").first().is_some_and(|b| b.0 == t), "{trace}");
        assert_eq!(alice.ep.session_count(), 0);
    });
}
