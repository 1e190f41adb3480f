//! `sipline::registrar::SharedLocation`: the lock-free store the workers of
//! one `serve` share (issue 19) and its journal (issue 20).
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::registrar::{Binding, Gruu, Location, LocationError, SharedLocation};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn binding(aor: &str, contact: &str, now: Instant, secs: u64) -> Binding {
    Binding {
        aor: aor.into(),
        contact: contact.into(),
        q: None,
        expires: now + Duration::from_secs(secs),
        registered_at: now,
        call_id: "c".into(),
        cseq: 1,
        instance: None,
        reg_id: None,
        temp_gruus: Vec::new(),
        source: None,
        path: Vec::new(),
    }
}

#[test]
fn a_write_over_a_set_that_changed_is_refused_and_changes_nothing() {
    let now = Instant::now();
    let mut a = SharedLocation::new();
    let mut b = a.clone();
    let (set, v0) = a.snapshot("sip:x@h", now);
    assert!(set.is_empty());
    assert_eq!(v0, 0);
    // b commits first.
    b.replace_if("sip:x@h", v0, vec![binding("sip:x@h", "sip:b@1", now, 60)]).unwrap();
    // a decided on the empty set: refused.
    let lost = a.replace_if("sip:x@h", v0, vec![binding("sip:x@h", "sip:a@1", now, 60)]);
    assert_eq!(lost, Err(LocationError::Changed));
    let (set, v1) = a.snapshot("sip:x@h", now);
    assert_eq!(set.iter().map(|b| b.contact.as_str()).collect::<Vec<_>>(), ["sip:b@1"]);
    assert_ne!(v1, 0);
    // Decided again on b's set: committed.
    let mut both = set;
    both.push(binding("sip:x@h", "sip:a@1", now, 60));
    a.replace_if("sip:x@h", v1, both).unwrap();
    assert_eq!(b.bindings("sip:x@h", now).len(), 2);
    assert_eq!(b.binding_count(), 2);
    // Removing through a stale version is refused too.
    assert_eq!(b.replace_if("sip:x@h", v1, Vec::new()), Err(LocationError::Changed));
}

#[test]
fn expiries_prune_once_across_clones_and_leave_nothing() {
    let now = Instant::now();
    let mut a = SharedLocation::new();
    let mut b = a.clone();
    a.insert(now, binding("sip:x@h", "sip:1@1", now, 10)).unwrap();
    a.insert(now, binding("sip:x@h", "sip:2@1", now, 20)).unwrap();
    a.insert(now, binding("sip:y@h", "sip:3@1", now, 30)).unwrap();
    assert_eq!(a.next_expiry(), Some(now + Duration::from_secs(10)));
    let t = now + Duration::from_secs(10);
    assert_eq!(b.prune(t).len(), 1);
    assert!(a.prune(t).is_empty());
    assert_eq!(a.next_expiry(), Some(now + Duration::from_secs(20)));
    assert_eq!(a.binding_count(), 2);
    let end = now + Duration::from_secs(30);
    let gone: Vec<String> = b.prune(end).into_iter().map(|b| b.contact).collect();
    assert_eq!(gone, ["sip:2@1", "sip:3@1"]);
    assert_eq!((a.binding_count(), a.aor_count(), a.next_expiry()), (0, 0, None));
    assert!(a.index_sizes().0 == 0);
}

#[test]
fn a_refresh_moves_the_expiry_index_instead_of_adding_to_it() {
    let now = Instant::now();
    let mut a = SharedLocation::new();
    for k in 0..100u64 {
        let t = now + Duration::from_secs(k);
        a.insert(t, binding("sip:x@h", "sip:1@1", t, 60)).unwrap();
    }
    assert_eq!(a.index_sizes().0, 1);
    assert_eq!(a.next_expiry(), Some(now + Duration::from_secs(99 + 60)));
}

#[test]
fn temporary_gruus_follow_their_binding() {
    let now = Instant::now();
    let mut a = SharedLocation::new();
    let mut b = binding("sip:x@h", "sip:1@1", now, 60);
    b.instance = Some("urn:uuid:1".into());
    b.temp_gruus = vec!["sip:tgruu.1@h".into()];
    a.insert(now, b).unwrap();
    assert!(a.find_gruu(Gruu::Temporary("sip:tgruu.1@h"), now).is_some());
    assert!(a.find_gruu(Gruu::Public { aor: "sip:x@h", instance: "URN:uuid:1" }, now).is_some());
    a.remove_all("sip:x@h").unwrap();
    assert!(a.find_gruu(Gruu::Temporary("sip:tgruu.1@h"), now).is_none());
    assert!(a.index_sizes().1 == 0);
}

#[test]
fn workers_writing_one_aor_at_once_lose_no_binding() {
    // Four threads each add their own contacts to one AOR with
    // read-decide-write over versions: every binding survives.
    let now = Instant::now();
    let store = SharedLocation::new();
    std::thread::scope(|s| {
        for w in 0..4 {
            let mut mine = store.clone();
            s.spawn(move || {
                for k in 0..200 {
                    let contact = format!("sip:{w}.{k}@1");
                    for _attempt in 0..1000 {
                        let (mut set, v) = mine.snapshot("sip:x@h", now);
                        set.push(binding("sip:x@h", &contact, now, 60));
                        match mine.replace_if("sip:x@h", v, set) {
                            Ok(()) => break,
                            Err(LocationError::Changed) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(store.bindings("sip:x@h", now).len(), 800);
    assert_eq!(store.binding_count(), 800);
    assert_eq!(store.index_sizes().0, 1);
}

#[test]
fn the_journal_carries_every_committed_change_but_applied_ones() {
    let now = Instant::now();
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    let (mut a, journal) = SharedLocation::with_journal(1, 2, move || {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut b = a.clone();
    a.insert(now, binding("sip:x@h", "sip:1@1", now, 10)).unwrap();
    b.insert(now, binding("sip:x@h", "sip:2@1", now, 60)).unwrap();
    let first = journal.try_next().unwrap();
    assert_eq!((first.aor.as_str(), first.before.len(), first.after.len()), ("sip:x@h", 0, 1));
    let second = journal.try_next().unwrap();
    assert_eq!((second.before.len(), second.after.len()), (1, 2));
    // One wake-up for the batch; the next after the reader found the
    // journal empty.
    assert_eq!(woken.load(Ordering::Relaxed), 1);
    assert!(journal.try_next().is_none());
    b.insert(now, binding("sip:x@h", "sip:2@1", now, 60)).unwrap();
    assert_eq!(woken.load(Ordering::Relaxed), 2);
    assert!(journal.try_next().is_some());
    // What the mirror reports is applied, not echoed back.
    a.apply("sip:y@h", None, vec![binding("sip:y@h", "sip:3@1", now, 60)]).unwrap();
    assert_eq!(b.bindings("sip:y@h", now).len(), 1);
    assert!(journal.try_next().is_none());
    // Applied over a version that moved on: refused, nothing changes.
    let (_, v) = a.snapshot("sip:x@h", now);
    b.remove_all("sip:x@h").unwrap();
    assert_eq!(a.apply("sip:x@h", Some(v), Vec::new()), Err(LocationError::Changed));
    let removed = journal.try_next().unwrap();
    assert_eq!((removed.before.len(), removed.after.len()), (2, 0));
    // Expiry is a change too.
    a.insert(now, binding("sip:z@h", "sip:4@1", now, 10)).unwrap();
    let _ = journal.try_next().unwrap();
    assert_eq!(b.prune(now + Duration::from_secs(10)).len(), 1);
    let expired = journal.try_next().unwrap();
    assert_eq!((expired.aor.as_str(), expired.before.len(), expired.after.len()), ("sip:z@h", 1, 0));
    assert!(journal.try_next().is_none());
}
