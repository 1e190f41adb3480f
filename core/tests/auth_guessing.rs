//! Issue 18, password guessing against `sipline::auth::DigestServer`:
//! unknown users answered like known ones, failed answers spending their
//! nonce, failures counted per user and per source with bans, nonces
//! that show no counter.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]
// The log collector must be Send + Sync for `tracing`; tests own threads.
#![allow(clippy::disallowed_types)]

use sipline::auth::*;
use sipline::message::headers::{Challenge, HeaderValue};
use sipline::message::{Message, StatusCode};
use sipline::rng::Rng;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests of this file, one at a time: `each_ban_is_logged_once…`
/// watches `tracing` through a scoped subscriber, and another test
/// reaching the same `warn!` callsite at the same moment on another thread
/// (with no subscriber) can leave its interest cached as "never".
static SERIAL: Mutex<()> = Mutex::new(());

/// The test's origin of time, and its turn (held for the whole test).
fn start() -> (Instant, std::sync::MutexGuard<'static, ()>) {
    (Instant::now(), SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

const REALM: &str = "biloxi.com";
const URI: &str = "sip:biloxi.com";

fn users() -> Users {
    Users::from_passwords([("alice", "wonderland"), ("bob", "zanzibar")])
}

fn server(t0: Instant, policy: BanPolicy) -> DigestServer {
    DigestServer::new(REALM, users(), Nonces::new(t0, &mut Rng::new(3))).unwrap().with_bans(policy)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn request(user: &str, extra: &str) -> String {
    format!(
        "REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n\
         From: <sip:{user}@biloxi.com>;tag=a73kszlfl\r\nTo: <sip:{user}@biloxi.com>\r\n\
         Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn decide(server: &mut DigestServer, now: Instant, text: &str, role: Role, source: Option<IpAddr>) -> Decision {
    let message = Message::parse(text.as_bytes()).expect("test request parses");
    server.authenticate_from(now, &message, role, None, source)
}

/// A fresh challenge's header values.
fn challenge(server: &mut DigestServer, now: Instant, user: &str, role: Role) -> Vec<String> {
    match decide(server, now, &request(user, ""), role, None) {
        Decision::Challenge { headers, .. } => headers.into_iter().map(|(_, v)| v).collect(),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// The credentials line of `user` with `password` answering `challenge`.
fn answer(challenge: &str, user: &str, password: &str, role: Role, rng: &mut Rng) -> String {
    let parsed = Challenge::parse_value(challenge.as_bytes()).unwrap();
    let mut client = DigestClient::new(DigestCredentials::new(user, password));
    let value = client.authorize(&parsed, "REGISTER", URI, rng).unwrap();
    format!("{}: {value}\r\n", role.credentials_header())
}

/// One full guess: a fresh challenge, then an answer with `password`.
fn guess(server: &mut DigestServer, now: Instant, user: &str, password: &str, source: IpAddr) -> Decision {
    let headers = challenge(server, now, user, Role::Registrar);
    let line = answer(&headers[0], user, password, Role::Registrar, &mut Rng::new(1));
    decide(server, now, &request(user, &line), Role::Registrar, Some(source))
}

fn is_banned(decision: &Decision, banned: Banned) -> bool {
    matches!(decision, Decision::Forbidden { reason: ForbiddenReason::Banned(b), .. } if *b == banned)
}

/// The wire shape of a decision: status and header lines, byte for byte.
fn wire(decision: &Decision) -> (Option<u16>, Vec<String>) {
    let headers = match decision {
        Decision::Challenge { headers, .. } => headers.iter().map(|(n, v)| format!("{n}: {v}")).collect(),
        _ => Vec::new(),
    };
    (decision.status().map(StatusCode::as_u16), headers)
}

#[test]
fn unknown_and_known_users_get_byte_identical_answers() {
    let (t0, _turn) = start();
    let stores = [
        // Passwords: every offered algorithm.
        (users(), vec![Algorithm::Sha256, Algorithm::Md5]),
        // MD5 HA1 values only, SHA-256 offered too: a known user's
        // re-challenge narrows to MD5, and so does an unknown one's.
        (
            Users::parse(&format!(
                "alice:{REALM}:{}\nbob:{REALM}:{}\n",
                ha1(Algorithm::Md5, "alice", REALM, "wonderland"),
                ha1(Algorithm::Md5, "bob", REALM, "zanzibar")
            ))
            .unwrap(),
            vec![Algorithm::Sha256, Algorithm::Md5],
        ),
    ];
    for (store, offer) in stores {
        for role in [Role::Registrar, Role::Proxy] {
            // Two servers issuing the same nonces: one sees bob, the other
            // eve (unknown), step for step.
            let make = || {
                DigestServer::new(REALM, store.clone(), Nonces::with_secret(t0, b"same secret")).unwrap().offer(&offer)
            };
            let (mut known, mut unknown) = (make(), make());
            let mut rng = Rng::new(4);
            let src = Some(ip(1));
            let headers_of = |d: &Decision| match d {
                Decision::Challenge { headers, .. } => headers.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
                other => panic!("expected a challenge, got {other:?}"),
            };
            // A wrong password for bob, any password for eve, in each
            // algorithm; then the re-challenge answered wrong again.
            for (i, algorithm) in ["SHA-256", "MD5", "SHA-256", "MD5"].into_iter().enumerate() {
                let now = t0 + Duration::from_secs(i as u64);
                let a = decide(&mut known, now, &request("bob", ""), role, src);
                let b = decide(&mut unknown, now, &request("eve", ""), role, src);
                assert_eq!(wire(&a), wire(&b), "no credentials");
                let offered = headers_of(&a);
                let h = offered.iter().find(|h| h.contains(&format!("algorithm={algorithm},"))).unwrap();
                let a = decide(&mut known, now, &request("bob", &answer(h, "bob", "wrong", role, &mut rng)), role, src);
                let b = decide(&mut unknown, now, &request("eve", &answer(h, "eve", "x", role, &mut rng)), role, src);
                assert_eq!(wire(&a), wire(&b), "{role:?} {algorithm}: {a:?} / {b:?}");
                assert_eq!(a.status(), Some(role.status()), "{a:?}");
                let again = headers_of(&a);
                let a =
                    decide(&mut known, now, &request("bob", &answer(&again[0], "bob", "w", role, &mut rng)), role, src);
                let b = decide(
                    &mut unknown,
                    now,
                    &request("eve", &answer(&again[0], "eve", "y", role, &mut rng)),
                    role,
                    src,
                );
                assert_eq!(wire(&a), wire(&b), "{role:?} {algorithm}, second answer: {a:?} / {b:?}");
                assert_eq!(a.status(), Some(role.status()), "{a:?}");
            }
        }
    }
}

#[test]
fn a_wrong_password_gets_the_same_status_for_known_and_unknown_users() {
    let (t0, _turn) = start();
    let mut server = server(t0, BanPolicy::default());
    for (role, status) in [(Role::Registrar, 401), (Role::Proxy, 407)] {
        for (user, password) in [("bob", "zanzibar?"), ("eve", "zanzibar"), ("", "x")] {
            let headers = challenge(&mut server, t0, user, role);
            let line = answer(&headers[0], user, password, role, &mut Rng::new(2));
            let decision = decide(&mut server, t0, &request(user, &line), role, Some(ip(2)));
            assert_eq!(decision.status().map(StatusCode::as_u16), Some(status), "{user}: {decision:?}");
            let Decision::Challenge { headers: again, .. } = &decision else { panic!("{decision:?}") };
            assert_eq!(again.len(), 2, "{user}");
            assert!(again.iter().all(|(_, v)| !v.contains("stale")), "{user}");
        }
    }
}

#[test]
fn the_dummy_secret_of_unknown_users_is_never_accepted() {
    let (t0, _turn) = start();
    let mut server = server(t0, BanPolicy::disabled());
    // Whatever an attacker guesses the dummy secret to be, including the
    // source's own, an unknown name does not authenticate.
    for password in ["sipline: no such user", "", "zanzibar"] {
        let decision = guess(&mut server, t0, "eve", password, ip(3));
        assert!(matches!(decision, Decision::Challenge { reason: ChallengeReason::UnknownUser, .. }), "{decision:?}");
    }
    // With no user in the realm at all, unknown names are challenged with
    // every algorithm offered.
    let mut empty = DigestServer::new(REALM, Users::new(), Nonces::new(t0, &mut Rng::new(1))).unwrap();
    let decision = guess(&mut empty, t0, "eve", "x", ip(3));
    let Decision::Challenge { headers, reason, .. } = decision else { panic!() };
    assert_eq!((reason, headers.len()), (ChallengeReason::UnknownUser, 2));
}

#[test]
fn a_failed_answer_spends_its_nonce() {
    let (t0, _turn) = start();
    let mut server = server(t0, BanPolicy::default());
    let headers = challenge(&mut server, t0, "bob", Role::Registrar);
    let mut rng = Rng::new(5);
    // The attack of issue 18: one nonce, nc counting up, a guess each.
    let parsed = Challenge::parse_value(headers[0].as_bytes()).unwrap();
    let mut attacker = DigestClient::new(DigestCredentials::new("bob", "guess"));
    let first = attacker.authorize(&parsed, "REGISTER", URI, &mut rng).unwrap();
    let decision =
        decide(&mut server, t0, &request("bob", &format!("Authorization: {first}\r\n")), Role::Registrar, None);
    assert!(
        matches!(decision, Decision::Challenge { reason: ChallengeReason::Invalid(VerifyError::WrongResponse), .. }),
        "{decision:?}"
    );
    for _ in 0..20 {
        let next = attacker.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
        let decision =
            decide(&mut server, t0, &request("bob", &format!("Authorization: {next}\r\n")), Role::Registrar, None);
        let Decision::Challenge { reason, headers, .. } = decision else { panic!("{decision:?}") };
        assert_eq!(reason, ChallengeReason::SpentNonce, "refused before any digest is computed");
        assert!(headers.iter().all(|(_, v)| !v.contains("stale")));
    }
    // Not even the right password goes through on it now.
    let right = answer(&headers[0], "bob", "zanzibar", Role::Registrar, &mut rng).replace("nc=00000001", "nc=00000099");
    let decision = decide(&mut server, t0, &request("bob", &right), Role::Registrar, None);
    assert!(matches!(decision, Decision::Challenge { reason: ChallengeReason::SpentNonce, .. }), "{decision:?}");
    // One failure counted, not 21: spent nonces cost no guess.
    assert_eq!(server.bans().tracked(), 1);
    // A nonce that had authenticated, then failed, is spent too.
    let fresh = challenge(&mut server, t0, "bob", Role::Registrar);
    let mut bob = DigestClient::new(DigestCredentials::new("bob", "zanzibar"));
    let ok = bob.authorize(&Challenge::parse_value(fresh[0].as_bytes()).unwrap(), "REGISTER", URI, &mut rng).unwrap();
    let ok = request("bob", &format!("Authorization: {ok}\r\n"));
    assert_eq!(decide(&mut server, t0, &ok, Role::Registrar, None), Decision::Authenticated { username: "bob".into() });
    let wrong = answer(&fresh[0], "bob", "nope", Role::Registrar, &mut rng).replace("nc=00000001", "nc=00000002");
    decide(&mut server, t0, &request("bob", &wrong), Role::Registrar, None);
    let next = bob.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
    let decision =
        decide(&mut server, t0, &request("bob", &format!("Authorization: {next}\r\n")), Role::Registrar, None);
    assert!(matches!(decision, Decision::Challenge { reason: ChallengeReason::SpentNonce, .. }), "{decision:?}");
    // Nor once it has expired and left the replay table: stale, unchecked.
    let late = t0 + DEFAULT_NONCE_LIFETIME;
    let next = attacker.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
    let decision =
        decide(&mut server, late, &request("bob", &format!("Authorization: {next}\r\n")), Role::Registrar, None);
    assert!(matches!(decision, Decision::Challenge { reason: ChallengeReason::StaleNonce, .. }), "{decision:?}");
    assert_eq!(server.nonces().tracked(), 0);
}

#[test]
fn failures_for_one_user_from_many_sources_ban_the_user() {
    let (t0, _turn) = start();
    let mut server = server(t0, BanPolicy::default());
    for i in 0..10u8 {
        let decision = guess(&mut server, t0 + Duration::from_secs(u64::from(i)), "bob", "guess", ip(10 + i));
        assert_eq!(decision.status().map(StatusCode::as_u16), Some(401), "failure {i}: {decision:?}");
    }
    let t1 = t0 + Duration::from_secs(10);
    // Banned: even the right password, from a new source, is refused.
    let decision = guess(&mut server, t1, "bob", "zanzibar", ip(99));
    assert!(is_banned(&decision, Banned::User), "{decision:?}");
    assert_eq!(decision.status().map(StatusCode::as_u16), Some(403));
    // Others are not: alice from one of those sources gets in.
    assert_eq!(
        guess(&mut server, t1, "alice", "wonderland", ip(10)),
        Decision::Authenticated { username: "alice".into() }
    );
    // Unknown names count alike (nothing tells them from real ones).
    for i in 0..10u8 {
        guess(&mut server, t1, "eve", "guess", ip(50 + i));
    }
    assert!(is_banned(&guess(&mut server, t1, "eve", "guess", ip(99)), Banned::User));
}

#[test]
fn failures_from_one_source_ban_the_source() {
    let (t0, _turn) = start();
    let mut server = server(t0, BanPolicy::default());
    let attacker = ip(66);
    for i in 0..10 {
        let decision = guess(&mut server, t0, &format!("user{i}"), "guess", attacker);
        assert_eq!(decision.status().map(StatusCode::as_u16), Some(401), "failure {i}");
    }
    let decision = guess(&mut server, t0, "bob", "zanzibar", attacker);
    assert!(is_banned(&decision, Banned::Source), "{decision:?}");
    // Bob from elsewhere is fine.
    assert_eq!(guess(&mut server, t0, "bob", "zanzibar", ip(7)), Decision::Authenticated { username: "bob".into() });
    // IPv6: the /64 is one source.
    let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
    for i in 0..10u16 {
        guess(&mut server, t0, &format!("v6user{i}"), "guess", v6(i));
    }
    assert!(is_banned(&guess(&mut server, t0, "bob", "zanzibar", v6(999)), Banned::Source));
    let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
    assert_eq!(guess(&mut server, t0, "bob", "zanzibar", other), Decision::Authenticated { username: "bob".into() });
}

#[test]
fn bans_end_after_the_cool_down_and_failures_outside_the_window_do_not_add_up() {
    let (t0, _turn) = start();
    let policy = BanPolicy::new(3, Duration::from_secs(60), Duration::from_secs(300));
    let mut server = server(t0, policy);
    let src = ip(8);
    for _ in 0..3 {
        guess(&mut server, t0, "bob", "guess", src);
    }
    assert!(is_banned(&guess(&mut server, t0 + Duration::from_secs(299), "bob", "zanzibar", ip(9)), Banned::User));
    // Cool-down over: the right password gets in again.
    let t1 = t0 + Duration::from_secs(300);
    assert_eq!(guess(&mut server, t1, "bob", "zanzibar", ip(9)), Decision::Authenticated { username: "bob".into() });
    assert_eq!(guess(&mut server, t1, "bob", "zanzibar", src), Decision::Authenticated { username: "bob".into() });
    // Two failures, then the window passes: the count starts over.
    guess(&mut server, t1, "alice", "guess", ip(20));
    guess(&mut server, t1, "alice", "guess", ip(21));
    let t2 = t1 + Duration::from_secs(60);
    guess(&mut server, t2, "alice", "guess", ip(22));
    guess(&mut server, t2, "alice", "guess", ip(23));
    assert_eq!(
        guess(&mut server, t2, "alice", "wonderland", ip(24)),
        Decision::Authenticated { username: "alice".into() }
    );
    // Finished entries are dropped on time.
    let deadline = server.poll_timeout().expect("entries are tracked");
    server.handle_timeout(t2 + Duration::from_secs(3600));
    assert_eq!(server.bans().tracked(), 0);
    assert!(deadline <= t2 + Duration::from_secs(3600));
    // Off: no counting at all.
    let mut off = self::server(t0, BanPolicy::disabled());
    for _ in 0..50 {
        guess(&mut off, t0, "bob", "guess", src);
    }
    assert_eq!(off.bans().tracked(), 0);
    assert_eq!(guess(&mut off, t0, "bob", "zanzibar", src), Decision::Authenticated { username: "bob".into() });
}

#[test]
fn the_table_is_bounded_and_drops_the_oldest_entry() {
    let (t0, _turn) = start();
    let policy = BanPolicy::new(2, Duration::from_secs(60), Duration::from_secs(300)).with_capacity(4);
    let mut server = server(t0, policy);
    // One failure from source 1 for "u1" (two entries), then others.
    guess(&mut server, t0, "u1", "guess", ip(1));
    for i in 2..=5u8 {
        guess(&mut server, t0 + Duration::from_secs(u64::from(i)), &format!("u{i}"), "guess", ip(i));
        assert!(server.bans().tracked() <= 4);
    }
    assert_eq!(server.bans().tracked(), 4);
    // Source 1's first failure was dropped: a second one does not ban it.
    guess(&mut server, t0 + Duration::from_secs(10), "v", "guess", ip(1));
    assert_eq!(
        guess(&mut server, t0 + Duration::from_secs(10), "bob", "zanzibar", ip(1)),
        Decision::Authenticated { username: "bob".into() }
    );
    // Whereas source 5's, recent, is still there.
    guess(&mut server, t0 + Duration::from_secs(11), "w", "guess", ip(5));
    assert!(is_banned(&guess(&mut server, t0 + Duration::from_secs(11), "bob", "zanzibar", ip(5)), Banned::Source));
    assert_eq!(server.bans().tracked(), 4);
    // Long usernames are tracked by a bounded prefix.
    let long = "x".repeat(10_000);
    guess(&mut server, t0 + Duration::from_secs(12), &long, "guess", ip(30));
    guess(&mut server, t0 + Duration::from_secs(12), &format!("{long}y"), "guess", ip(31));
    assert!(is_banned(&guess(&mut server, t0 + Duration::from_secs(12), &long, "guess", ip(32)), Banned::User));
}

/// Collects the events at `warn` and above: level, target, fields.
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let all = format!("{} {} {}", event.metadata().level(), event.metadata().target(), fields.0);
        self.0.lock().unwrap().push(all);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn each_ban_is_logged_once_at_warn_without_credentials() {
    let (t0, _turn) = start();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut responses = Vec::new();
    tracing::subscriber::with_default(Warnings(events.clone()), || {
        let mut server = server(t0, BanPolicy::default());
        for i in 0..30 {
            let now = t0 + Duration::from_secs(i);
            let headers = challenge(&mut server, now, "bob", Role::Registrar);
            let line = answer(&headers[0], "bob", &format!("hunter{i}"), Role::Registrar, &mut Rng::new(6));
            responses.push(line.split("response=\"").nth(1).unwrap()[..32].to_owned());
            decide(&mut server, now, &request("bob", &line), Role::Registrar, Some(ip(77)));
        }
    });
    let events = events.lock().unwrap();
    let warnings: Vec<&String> = events.iter().filter(|e| e.starts_with("WARN")).collect();
    // The 10th failure bans both the user and the source: one line each,
    // and none for the 20 refused answers after.
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    for w in &warnings {
        assert!(w.contains("sipline::serve") && w.contains("192.0.2.77") && w.contains("\"bob\""), "{w}");
    }
    assert!(warnings[0].contains("banned=\"user\"") && warnings[1].contains("banned=\"source\""), "{warnings:#?}");
    // No password, response or HA1 at any level.
    for event in events.iter() {
        assert!(!event.contains("hunter") && !event.contains("zanzibar"), "{event}");
        for secret in responses
            .iter()
            .map(String::as_str)
            .chain([&ha1(Algorithm::Md5, "bob", REALM, "zanzibar")[..], "response="])
        {
            assert!(!event.contains(secret), "{event}");
        }
    }
}

#[test]
fn nonces_show_no_counter_and_no_time() {
    let (t0, _turn) = start();
    let mut n = Nonces::new(t0, &mut Rng::new(11));
    // 512 nonces at one instant, and 512 a millisecond apart: in clear, a
    // serial number or a time would leave bytes that hardly change. Every
    // byte position takes about as many values as random bytes would
    // (256 · (1 − e^−2) ≈ 221 expected; a counter's high bytes take 1).
    for step in [Duration::ZERO, Duration::from_millis(1)] {
        let nonces: Vec<Vec<u8>> = (0..512u32)
            .map(|i| {
                let hex = n.issue(t0 + step * i);
                (0..32).map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).unwrap()).collect()
            })
            .collect();
        for position in 0..32 {
            let mut seen = [false; 256];
            for nonce in &nonces {
                seen[usize::from(nonce[position])] = true;
            }
            let distinct = seen.iter().filter(|&&s| s).count();
            assert!(distinct > 180, "byte {position}: {distinct} values ({step:?})");
        }
    }
    // Still dated and checked: fresh now, stale after the lifetime.
    let nonce = n.issue(t0 + Duration::from_secs(1));
    assert_eq!(n.check(t0 + Duration::from_secs(2), &nonce), Ok(()));
    assert_eq!(n.check(t0 + Duration::from_secs(301), &nonce), Err(NonceError::Stale));
    // Two servers with one secret still issue different nonces.
    let mut a = Nonces::new(t0, &mut Rng::new(1));
    let mut b = Nonces::new(t0, &mut Rng::new(2));
    assert_ne!(a.issue(t0), b.issue(t0));
}

#[test]
fn spending_refuses_the_nonce_and_the_table_keeps_counting_right() {
    let (t0, _turn) = start();
    let mut n = Nonces::new(t0, &mut Rng::new(11));
    let (a, b) = (n.issue(t0), n.issue(t0));
    assert_eq!(n.spend(t0, &a), Ok(()));
    assert_eq!(n.check(t0, &a), Err(NonceError::Spent));
    assert_eq!(n.record(t0, &a, Some(1)), Err(NonceError::Spent));
    // A nonce in use, then spent.
    assert_eq!(n.record(t0, &b, Some(1)), Ok(()));
    assert_eq!(n.spend(t0, &b), Ok(()));
    assert_eq!(n.record(t0, &b, Some(2)), Err(NonceError::Spent));
    assert_eq!(n.tracked(), 2);
    assert_eq!(n.spend(t0, "not a nonce"), Err(NonceError::Unknown));
    // Spending an expired nonce stores nothing; it stays stale.
    let old = n.issue(t0);
    let late = t0 + DEFAULT_NONCE_LIFETIME;
    assert_eq!(n.spend(late, &old), Ok(()));
    assert_eq!(n.tracked(), 0, "the expired entries were pruned");
    assert_eq!(n.check(late, &old), Err(NonceError::Stale));
}

/// Issue 19: the workers of one server share one table of failed answers.
/// A guesser whose requests the kernel spreads over two workers is banned
/// after `max_failures` failures in all, at both workers — not after
/// `max_failures` at each. Workers with tables of their own let it guess
/// twice as often.
#[test]
fn workers_sharing_a_ban_table_ban_a_guesser_spread_over_them_once() {
    let (t0, _turn) = start();
    let policy = BanPolicy::new(4, Duration::from_secs(60), Duration::from_secs(300));
    let table = BanTable::new();
    let worker = |seed| {
        DigestServer::new(REALM, users(), Nonces::new(t0, &mut Rng::new(seed))).unwrap().with_ban_table(policy, &table)
    };
    let (mut a, mut b) = (worker(3), worker(4));
    let src = ip(66);
    for k in 0..4 {
        let w = if k % 2 == 0 { &mut a } else { &mut b };
        assert!(!is_banned(&guess(w, t0, "bob", "guess", src), Banned::User), "failure {k} is counted, not refused");
    }
    for w in [&mut a, &mut b] {
        assert!(is_banned(&guess(w, t0, "bob", "zanzibar", src), Banned::User), "banned at both workers");
        assert_eq!(w.bans().tracked(), 2, "one entry per key, whichever worker counted");
    }
    // The ban ends at both; whichever worker sweeps, the table empties.
    let later = t0 + Duration::from_secs(301);
    assert_eq!(guess(&mut b, later, "bob", "zanzibar", src), Decision::Authenticated { username: "bob".into() });
    a.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(b.bans().tracked(), 0);

    // Tables of their own: eight guesses before a ban.
    let (mut c, mut d) = (server(t0, policy), server(t0, policy));
    for k in 0..6 {
        let w = if k % 2 == 0 { &mut c } else { &mut d };
        assert!(!is_banned(&guess(w, t0, "alice", "guess", ip(77)), Banned::User));
    }
}
