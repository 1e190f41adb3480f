//! `sipline::auth::Nonces`: issue, expiry (stale), nonce-count replay, the table's cap.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::auth::*;
use sipline::rng::Rng;
use std::time::{Duration, Instant};

/// Any instant to count from; every later time is derived from it.
fn start() -> Instant {
    Instant::now()
}

fn nonces(start: Instant) -> Nonces {
    Nonces::new(start, &mut Rng::new(11))
}

#[test]
fn issued_nonces_check_and_are_distinct() {
    let t0 = start();
    let mut n = nonces(t0);
    let a = n.issue(t0);
    let b = n.issue(t0);
    assert_ne!(a, b, "same millisecond, different serial");
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
    assert_eq!(n.check(t0, &a), Ok(()));
    assert_eq!(n.check(t0 + Duration::from_secs(299), &b), Ok(()));
    assert_eq!(n.tracked(), 0, "checking records nothing");
}

#[test]
fn forged_garbled_and_foreign_nonces_are_unknown() {
    let t0 = start();
    let mut n = nonces(t0);
    let good = n.issue(t0);
    // One digit of the time changed: the MAC no longer checks.
    let mut forged = good.clone().into_bytes();
    forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(n.check(t0, &forged), Err(NonceError::Unknown));
    assert_eq!(n.check(t0, &good.to_ascii_uppercase()), Err(NonceError::Unknown));
    assert_eq!(n.check(t0, &good[..63]), Err(NonceError::Unknown));
    assert_eq!(n.check(t0, ""), Err(NonceError::Unknown));
    assert_eq!(n.check(t0, &"zz".repeat(32)), Err(NonceError::Unknown));
    assert_eq!(n.check(t0, "dcd98b7102dd2f0e8b11d0f600bfb0c093"), Err(NonceError::Unknown));
    assert_eq!(n.record(t0, &forged, Some(1)), Err(NonceError::Unknown));
    // Another server's key.
    let mut other = Nonces::new(t0, &mut Rng::new(12));
    assert_eq!(n.check(t0, &other.issue(t0)), Err(NonceError::Unknown));
    // The same secret reads the nonce back.
    let mut twin = Nonces::with_secret(t0, b"shared secret");
    let mut again = Nonces::with_secret(t0, b"shared secret");
    assert_eq!(again.check(t0, &twin.issue(t0)), Ok(()));
}

#[test]
fn nonces_go_stale_after_their_lifetime() {
    let t0 = start();
    let mut n = nonces(t0).with_lifetime(Duration::from_secs(30));
    assert_eq!(n.lifetime(), Duration::from_secs(30));
    let nonce = n.issue(t0 + Duration::from_secs(1));
    assert_eq!(n.check(t0 + Duration::from_millis(30_999), &nonce), Ok(()));
    assert_eq!(n.check(t0 + Duration::from_secs(31), &nonce), Err(NonceError::Stale));
    assert_eq!(n.record(t0 + Duration::from_secs(40), &nonce, Some(1)), Err(NonceError::Stale));
    assert_eq!(nonces(t0).lifetime(), DEFAULT_NONCE_LIFETIME);
}

#[test]
fn nonce_counts_must_grow() {
    let t0 = start();
    let mut n = nonces(t0);
    let nonce = n.issue(t0);
    assert_eq!(n.record(t0, &nonce, Some(1)), Ok(()));
    assert_eq!(n.record(t0, &nonce, Some(1)), Err(NonceError::Replayed));
    assert_eq!(n.record(t0, &nonce, Some(2)), Ok(()));
    assert_eq!(n.record(t0, &nonce, Some(5)), Ok(()), "gaps are fine");
    assert_eq!(n.record(t0, &nonce, Some(4)), Err(NonceError::Replayed));
    assert_eq!(n.record(t0, &nonce, None), Err(NonceError::Replayed), "no qop after qop");
    assert_eq!(n.check(t0, &nonce), Ok(()), "check does not judge counts");
    let other = n.issue(t0);
    assert_eq!(n.record(t0, &other, Some(0)), Err(NonceError::Replayed), "counts start at 1");
    assert_eq!(n.record(t0, &other, Some(3)), Ok(()));
    assert_eq!(n.tracked(), 2);
}

#[test]
fn an_answer_without_qop_uses_the_nonce_up() {
    let t0 = start();
    let mut n = nonces(t0);
    let nonce = n.issue(t0);
    assert_eq!(n.record(t0, &nonce, None), Ok(()));
    assert_eq!(n.record(t0, &nonce, None), Err(NonceError::Replayed));
    assert_eq!(n.record(t0, &nonce, Some(u32::MAX)), Err(NonceError::Replayed));
}

#[test]
fn the_table_is_capped_and_a_dropped_nonce_is_never_accepted_again() {
    let t0 = start();
    let mut n = nonces(t0).with_capacity(2);
    assert_eq!(n.capacity(), 2);
    let (a, b, c, d) = (n.issue(t0), n.issue(t0), n.issue(t0), n.issue(t0));
    for nonce in [&a, &b, &c] {
        assert_eq!(n.record(t0, nonce, Some(1)), Ok(()));
        assert!(n.tracked() <= 2);
    }
    assert_eq!(n.tracked(), 2);
    // `a` was dropped: a replay of it is stale, not a first use.
    assert_eq!(n.check(t0, &a), Err(NonceError::Stale));
    assert_eq!(n.record(t0, &a, Some(1)), Err(NonceError::Stale));
    assert_eq!(n.record(t0, &a, Some(2)), Err(NonceError::Stale));
    // The others keep their counts.
    assert_eq!(n.record(t0, &b, Some(1)), Err(NonceError::Replayed));
    assert_eq!(n.record(t0, &c, Some(2)), Ok(()));
    // A newer nonce answered late drops `b`, and `d` stays usable.
    assert_eq!(n.record(t0, &d, Some(1)), Ok(()));
    assert_eq!(n.record(t0, &b, Some(9)), Err(NonceError::Stale));
    assert_eq!(n.record(t0, &d, Some(2)), Ok(()));
    assert_eq!(n.tracked(), 2);
    // A nonce older than the drop mark answered for the first time is
    // refused too (it cannot be told from a dropped one).
    let mut m = nonces(t0).with_capacity(1);
    let (old, new1, new2) = (m.issue(t0), m.issue(t0), m.issue(t0));
    assert_eq!(m.record(t0, &new1, Some(1)), Ok(()));
    assert_eq!(m.record(t0, &new2, Some(1)), Ok(()));
    assert_eq!(m.record(t0, &old, Some(1)), Err(NonceError::Stale));
    assert_eq!(m.record(t0, &new1, Some(2)), Err(NonceError::Stale));
    assert_eq!(m.tracked(), 1);
    assert_eq!(nonces(t0).with_capacity(0).capacity(), 1);
}

#[test]
fn expired_entries_count_no_more_and_stay_stale() {
    let t0 = start();
    let mut n = nonces(t0).with_lifetime(Duration::from_secs(10));
    let a = n.issue(t0);
    let b = n.issue(t0 + Duration::from_secs(4));
    n.record(t0 + Duration::from_secs(5), &a, Some(1)).unwrap();
    n.record(t0 + Duration::from_secs(5), &b, Some(1)).unwrap();
    assert_eq!(n.tracked(), 2);
    // No timer: time seen by any call ends what expired.
    assert_eq!(n.check(t0 + Duration::from_secs(10), &b), Ok(()));
    assert_eq!(n.tracked(), 1, "a expired at 10 s");
    assert_eq!(n.check(t0 + Duration::from_secs(14), &b), Err(NonceError::Stale));
    assert_eq!(n.tracked(), 0);
    // Expired entries are stale, never a first use again.
    assert_eq!(n.record(t0 + Duration::from_secs(20), &a, Some(1)), Err(NonceError::Stale));
    assert_eq!(n.record(t0 + Duration::from_secs(20), &b, Some(2)), Err(NonceError::Stale));
}

#[test]
fn the_table_is_a_ring_of_a_power_of_two_entries() {
    let t0 = start();
    assert_eq!(nonces(t0).capacity(), DEFAULT_NONCE_CAPACITY);
    assert_eq!(nonces(t0).with_capacity(3).capacity(), 4);
    assert_eq!(nonces(t0).with_capacity(usize::MAX).capacity(), 1 << 20);
    // Nonces issued 4 apart share an entry in a table of 4: answering the
    // later one makes the earlier stale; the others keep theirs.
    let mut n = nonces(t0).with_capacity(4);
    let all: Vec<String> = (0..8).map(|_| n.issue(t0)).collect();
    for nonce in &all[..4] {
        assert_eq!(n.record(t0, nonce, Some(1)), Ok(()));
    }
    assert_eq!(n.record(t0, &all[5], Some(1)), Ok(()));
    assert_eq!(n.record(t0, &all[1], Some(2)), Err(NonceError::Stale));
    assert_eq!(n.record(t0, &all[2], Some(2)), Ok(()));
    assert_eq!(n.tracked(), 4);
    // A nonce never answered whose entry holds an earlier one is fresh.
    assert_eq!(n.check(t0, &all[7]), Ok(()));
    assert_eq!(n.record(t0, &all[7], Some(1)), Ok(()));
    assert_eq!(n.record(t0, &all[3], Some(2)), Err(NonceError::Stale));
}

#[test]
fn debug_leaves_the_key_out() {
    let t0 = start();
    let n = Nonces::with_secret(t0, b"very secret key");
    let shown = format!("{n:?}");
    assert!(shown.contains("<redacted>") && !shown.contains("very secret"), "{shown}");
}

/// Issue 19: the workers of one server share a ledger. Nonces issued by
/// any are distinct; an answer is accepted once among them all, a spent
/// nonce is spent at every one, and a later nonce taking a shared entry
/// makes the older stale at every one.
#[test]
fn workers_sharing_a_ledger_accept_each_answer_once_among_them() {
    let t0 = start();
    let ledger = NonceLedger::with_capacity(4);
    let worker = || Nonces::with_secret(t0, b"one secret").with_ledger(&ledger);
    let (mut a, mut b) = (worker(), worker());
    let issued: Vec<String> = (0..4).map(|k| if k % 2 == 0 { a.issue(t0) } else { b.issue(t0) }).collect();
    let mut distinct = issued.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "one counter: no two workers issue one nonce");

    // Answered at b, replayed at a: refused (before: each worker's own table accepted it).
    assert_eq!(b.record(t0, &issued[0], Some(1)), Ok(()));
    assert_eq!(a.record(t0, &issued[0], Some(1)), Err(NonceError::Replayed));
    assert_eq!(a.record(t0, &issued[0], Some(2)), Ok(()), "a higher count is a new request");
    assert_eq!(b.record(t0, &issued[0], Some(2)), Err(NonceError::Replayed));
    // No qop: one use among all.
    assert_eq!(a.record(t0, &issued[1], None), Ok(()));
    assert_eq!(b.record(t0, &issued[1], None), Err(NonceError::Replayed));
    // A failed answer at a spends the nonce at b.
    assert_eq!(a.spend(t0, &issued[2]), Ok(()));
    assert_eq!(b.check(t0, &issued[2]), Err(NonceError::Spent));
    assert_eq!(b.record(t0, &issued[2], Some(1)), Err(NonceError::Spent));
    // Four entries: the fifth nonce takes the first's entry; the first is
    // then stale at both workers.
    let fifth = b.issue(t0);
    assert_eq!(a.record(t0, &fifth, Some(1)), Ok(()));
    assert_eq!(b.record(t0, &issued[0], Some(9)), Err(NonceError::Stale));
    assert_eq!(a.check(t0, &issued[0]), Err(NonceError::Stale));
}

/// Issue 19: answers recorded by many threads at once, each nonce's counts
/// offered by every thread: every (nonce, count) is accepted exactly once.
#[test]
fn concurrent_answers_are_each_accepted_exactly_once() {
    let t0 = start();
    let ledger = NonceLedger::with_capacity(64);
    let mut issuer = Nonces::with_secret(t0, b"s").with_ledger(&ledger);
    let issued: Vec<String> = (0..32).map(|_| issuer.issue(t0)).collect();
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let mut mine = Nonces::with_secret(t0, b"s").with_ledger(&ledger);
            let (issued, accepted) = (&issued, &accepted);
            s.spawn(move || {
                for nc in 1..=50 {
                    for nonce in issued {
                        if mine.record(t0, nonce, Some(nc)).is_ok() {
                            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    // Counts must rise, so a thread that lost a race for count k may
    // still win k+1: at most 50 per nonce, at least one.
    let accepted = accepted.into_inner();
    assert!(accepted <= 32 * 50, "{accepted} accepted: a count accepted twice");
    assert!(accepted >= 32, "{accepted}");
    // Each nonce's highest count is taken: nothing above it is a replay.
    for nonce in &issued {
        assert_eq!(issuer.record(t0, nonce, Some(50)), Err(NonceError::Replayed));
        assert_eq!(issuer.record(t0, nonce, Some(51)), Ok(()));
    }
}

/// Issue 20: instances on two machines sharing a secret date nonces by the
/// wall clock: a nonce issued by one is fresh at the other for exactly its
/// lifetime, though their `Instant`s have nothing in common.
#[test]
fn instances_dating_by_the_wall_clock_read_each_others_nonces_alike() {
    // Some Unix time in ms.
    const WALL: u64 = 1_796_000_000_000;
    let t0 = start();
    // Machine A's clock reading at t0; machine B read its clock 7 s later
    // (in this process's Instants) and found the wall clock 7 s on.
    let mut a = Nonces::with_secret(t0, b"shared").with_wall_clock(t0, WALL);
    let mut b = Nonces::with_secret(t0 + Duration::from_secs(7), b"shared")
        .with_wall_clock(t0 + Duration::from_secs(7), WALL + 7_000);
    let nonce = a.issue(t0 + Duration::from_secs(10));
    assert_eq!(b.check(t0 + Duration::from_secs(10), &nonce), Ok(()));
    assert_eq!(b.check(t0 + Duration::from_millis(309_999), &nonce), Ok(()));
    assert_eq!(b.check(t0 + Duration::from_secs(310), &nonce), Err(NonceError::Stale));
    // Dated from its own start instead, an instance judges A's nonce by
    // another origin: here it would take it for fresh long past its
    // lifetime.
    let mut c = Nonces::with_secret(t0 + Duration::from_secs(7), b"shared");
    assert_eq!(c.check(t0 + Duration::from_secs(400), &nonce), Ok(()));
}

/// Issue 20: instances of a domain tell each other the answers they
/// recorded (`NonceLedger::with_journal`, `NonceLedger::apply`): once the
/// use has arrived, the same answer is refused at the other instance, and
/// a nonce spent at one is spent at the other.
#[test]
fn uses_told_to_another_instance_refuse_the_replay_there() {
    let t0 = start();
    let (ledger_a, journal_a) = NonceLedger::with_journal(1 << 40, || {});
    let ledger_b = NonceLedger::new();
    let mut a = Nonces::with_secret(t0, b"domain").with_salt(1).with_ledger(&ledger_a);
    let mut b = Nonces::with_secret(t0, b"domain").with_salt(2).with_ledger(&ledger_b);
    let nonce = a.issue(t0);
    let other = a.issue(t0);
    assert_eq!(a.record(t0, &nonce, Some(1)), Ok(()));
    assert_eq!(a.spend(t0, &other), Ok(()));
    // Not told yet: b would take the replay.
    assert_eq!(b.check_count(t0, &nonce, Some(1)), Ok(()));
    assert_eq!(b.check(t0, &other), Ok(()));
    let told: Vec<NonceUse> = std::iter::from_fn(|| journal_a.try_next()).collect();
    assert_eq!(told.len(), 2);
    assert_eq!((told[0].last_nc, told[0].spent, told[1].spent), (1, false, true));
    for u in told {
        ledger_b.apply(u);
    }
    assert_eq!(b.check_count(t0, &nonce, Some(1)), Err(NonceError::Replayed));
    assert_eq!(b.record(t0, &nonce, Some(1)), Err(NonceError::Replayed));
    assert_eq!(b.check_count(t0, &nonce, Some(2)), Ok(()), "a higher count is a new request");
    assert_eq!(b.check(t0, &other), Err(NonceError::Spent));
    // What b learned by being told is not told again.
    assert!(journal_a.try_next().is_none());
}
