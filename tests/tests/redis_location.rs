//! Issue 20: the location service mirrored to Redis
//! (`sipline_tokio::redis_location`), with a `redis-server` of the test's
//! own on loopback. Two mirrors stand for two `serve` instances: what one
//! commits the other reads from memory moments later; a restarted instance
//! finds every binding; Redis going away stops nothing, and what changed
//! meanwhile reaches the other instance once it is back.
// Bindings are dated from the real clock here: the mirror converts them
// to wall-clock times for Redis.
#![allow(clippy::disallowed_methods)]

use sipline::auth::{NonceError, NonceLedger, Nonces};
use sipline::registrar::{Binding, Location, SharedLocation, Source};
use sipline_tests::kamailio::wait_until;
use sipline_tests::redis::Redis;
use sipline_tokio::redis_location::{mirror, MirrorHandle};
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(10);

fn instance(redis: &Redis, name: &str) -> (SharedLocation, MirrorHandle) {
    let (location, _, handle) = instance_with_ledger(redis, name);
    (location, handle)
}

fn instance_with_ledger(redis: &Redis, name: &str) -> (SharedLocation, NonceLedger, MirrorHandle) {
    // Keys of its own per instance, as the CLI draws them.
    let k = name.bytes().fold(0x5eed_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let m = mirror(&redis.url(), name, "sipline", (k, k.rotate_left(31))).expect("a mirror");
    assert!(m.handle.wait_synced(SYNC), "{name} never got in sync");
    (m.location, m.nonce_ledger, m.handle)
}

fn binding(aor: &str, contact: &str, secs: u64) -> Binding {
    let now = Instant::now();
    Binding {
        aor: aor.into(),
        contact: contact.into(),
        q: Some(500),
        expires: now + Duration::from_secs(secs),
        registered_at: now,
        call_id: format!("call-{contact}"),
        cseq: 7,
        instance: None,
        reg_id: None,
        temp_gruus: Vec::new(),
        source: Some(Source { addr: "127.0.0.1:5099".parse().unwrap(), transport: "TCP".into() }),
        path: Vec::new(),
    }
}

fn contacts(location: &SharedLocation, aor: &str) -> Vec<String> {
    let mut all: Vec<String> = location.bindings(aor, Instant::now()).into_iter().map(|b| b.contact).collect();
    all.sort();
    all
}

fn sees(location: &SharedLocation, aor: &str, want: &[&str]) -> bool {
    wait_until(SYNC, || contacts(location, aor) == want)
}

#[test]
fn a_binding_made_at_one_instance_is_read_at_the_other() {
    let redis = Redis::start();
    let (mut a, _ma) = instance(&redis, "a");
    let (mut b, _mb) = instance(&redis, "b");
    let bob = "sip:bob@example.com";
    let t = Instant::now();
    a.insert(Instant::now(), binding(bob, "sip:bob@127.0.0.1:5071", 3600)).unwrap();
    assert!(sees(&b, bob, &["sip:bob@127.0.0.1:5071"]), "b never saw a's binding: {:?}", contacts(&b, bob));
    eprintln!("a → b: {:?}", t.elapsed());
    // Everything a binding holds comes across, times within a millisecond.
    let (at_a, at_b) = (a.bindings(bob, Instant::now()), b.bindings(bob, Instant::now()));
    assert_eq!(
        (at_b[0].q, at_b[0].cseq, &at_b[0].call_id, &at_b[0].source),
        (at_a[0].q, 7, &at_a[0].call_id, &at_a[0].source)
    );
    let skew = if at_a[0].expires > at_b[0].expires {
        at_a[0].expires - at_b[0].expires
    } else {
        at_b[0].expires - at_a[0].expires
    };
    assert!(skew <= Duration::from_millis(2), "{skew:?}");
    // A second device of bob's registers at b: both instances hold both.
    b.insert(Instant::now(), binding(bob, "sip:bob@127.0.0.1:5072", 3600)).unwrap();
    let both = ["sip:bob@127.0.0.1:5071", "sip:bob@127.0.0.1:5072"];
    assert!(sees(&a, bob, &both), "{:?}", contacts(&a, bob));
    // Unregistered at a: gone at b.
    a.remove(bob, "sip:bob@127.0.0.1:5071", Instant::now()).unwrap();
    assert!(sees(&b, bob, &["sip:bob@127.0.0.1:5072"]), "{:?}", contacts(&b, bob));
    a.remove_all(bob).unwrap();
    assert!(sees(&b, bob, &[]), "{:?}", contacts(&b, bob));
    assert!(
        wait_until(SYNC, || redis.command(&["EXISTS", "sipline:loc:sip:bob@example.com"]).as_deref() == Some(":0\r\n"))
    );
}

#[test]
fn a_restarted_instance_finds_every_binding() {
    let redis = Redis::start();
    let (mut a, ma) = instance(&redis, "a");
    let (mut b, _mb) = instance(&redis, "b");
    a.insert(Instant::now(), binding("sip:bob@example.com", "sip:bob@127.0.0.1:5071", 3600)).unwrap();
    assert!(sees(&b, "sip:bob@example.com", &["sip:bob@127.0.0.1:5071"]));
    // a stops; carol registers at b meanwhile; a starts again, empty.
    drop((a, ma));
    b.insert(Instant::now(), binding("sip:carol@example.com", "sip:carol@127.0.0.1:5073", 3600)).unwrap();
    let (a, _ma) = instance(&redis, "a");
    assert_eq!(contacts(&a, "sip:bob@example.com"), ["sip:bob@127.0.0.1:5071"]);
    assert_eq!(contacts(&a, "sip:carol@example.com"), ["sip:carol@127.0.0.1:5073"]);
}

#[test]
fn without_redis_each_instance_serves_from_memory_and_catches_up_when_it_is_back() {
    let mut redis = Redis::start();
    let (mut a, ma) = instance(&redis, "a");
    let (b, mb) = instance(&redis, "b");
    a.insert(Instant::now(), binding("sip:bob@example.com", "sip:bob@127.0.0.1:5071", 3600)).unwrap();
    assert!(sees(&b, "sip:bob@example.com", &["sip:bob@127.0.0.1:5071"]));
    redis.stop();
    assert!(wait_until(SYNC, || ma.status() != sipline_tokio::redis_location::MirrorStatus::Synced));
    // Writes and reads go on, from memory, without waiting.
    let t = Instant::now();
    a.insert(Instant::now(), binding("sip:carol@example.com", "sip:carol@127.0.0.1:5073", 3600)).unwrap();
    assert!(t.elapsed() < Duration::from_millis(500), "a write waited on Redis: {:?}", t.elapsed());
    assert_eq!(contacts(&b, "sip:bob@example.com"), ["sip:bob@127.0.0.1:5071"]);
    // Back: a writes what waited, b reads it.
    redis.resume();
    assert!(ma.wait_synced(SYNC) && mb.wait_synced(SYNC));
    assert!(
        sees(&b, "sip:carol@example.com", &["sip:carol@127.0.0.1:5073"]),
        "{:?}",
        contacts(&b, "sip:carol@example.com")
    );
    assert_eq!(contacts(&b, "sip:bob@example.com"), ["sip:bob@127.0.0.1:5071"]);
}

#[test]
fn redis_keys_expire_with_their_bindings() {
    let redis = Redis::start();
    let (mut a, _ma) = instance(&redis, "a");
    a.insert(Instant::now(), binding("sip:dave@example.com", "sip:dave@127.0.0.1:5074", 2)).unwrap();
    let key = "sipline:loc:sip:dave@example.com";
    assert!(wait_until(SYNC, || redis.command(&["EXISTS", key]).as_deref() == Some(":1\r\n")));
    let ttl = redis.command(&["PTTL", key]).unwrap_or_default();
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap_or(-9);
    assert!((1..=2100).contains(&ms), "TTL {ttl:?}");
    // A dead instance leaves nothing: the key goes with the binding.
    assert!(wait_until(Duration::from_secs(5), || redis.command(&["EXISTS", key]).as_deref() == Some(":0\r\n")));
    let _ = &mut a;
}

/// An answer recorded at one instance is refused at the other once the
/// use has arrived through Redis; a nonce spent at one is spent at the
/// other.
#[test]
fn an_answer_taken_at_one_instance_is_refused_at_the_other() {
    let redis = Redis::start();
    let (_la, ledger_a, _ma) = instance_with_ledger(&redis, "a");
    let (_lb, ledger_b, _mb) = instance_with_ledger(&redis, "b");
    let t0 = Instant::now();
    let clock = |t: Instant| {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        (t, u64::try_from(ms).unwrap())
    };
    let (at, ms) = clock(t0);
    let mut a = Nonces::with_secret(t0, b"domain").with_wall_clock(at, ms).with_salt(1).with_ledger(&ledger_a);
    let mut b = Nonces::with_secret(t0, b"domain").with_wall_clock(at, ms).with_salt(2).with_ledger(&ledger_b);
    let nonce = a.issue(t0);
    let other = b.issue(t0);
    assert_eq!(b.check_count(t0, &nonce, Some(1)), Ok(()));
    assert_eq!(a.record(t0, &nonce, Some(1)), Ok(()));
    assert_eq!(b.spend(t0, &other), Ok(()));
    assert!(
        wait_until(SYNC, || b.check_count(t0, &nonce, Some(1)) == Err(NonceError::Replayed)),
        "b never learned that a took the answer; channels {:?}, numsub {:?}",
        redis.command(&["PUBSUB", "CHANNELS"]),
        redis.command(&["PUBSUB", "NUMSUB", "sipline:nonce", "sipline:loc"])
    );
    assert!(wait_until(SYNC, || a.check(t0, &other) == Err(NonceError::Spent)), "a never learned the spent nonce");
    assert_eq!(b.check_count(t0, &nonce, Some(2)), Ok(()));
}
