//! Issue 18: what a password guesser gets from `DigestServer`, and what a
//! refused answer costs the server.
//!
//! First, with no clock (virtual time, printed as a table): the digests an
//! attacker gets checked in one simulated hour, sending 50 answers a
//! second, for three strategies: the script of issue 18 (one nonce, `nc`
//! counting up), svcrack's (a fresh challenge per guess, one source), and
//! a fresh challenge per guess from a new source each time. Then, with
//! criterion, the server's time per request of each kind, against the
//! time to answer a request without credentials (a challenge) in the same
//! run.
//!
//! Run: `cargo bench -p sipline-tests --bench auth`.
#![allow(clippy::disallowed_methods)] // a bench reads the clock

use criterion::{criterion_group, Criterion};
use sipline::auth::{
    BanPolicy, ChallengeReason, Decision, DigestClient, DigestCredentials, DigestServer, Nonces, Role, Users,
    VerifyError,
};
use sipline::message::headers::{Challenge, HeaderValue};
use sipline::message::Message;
use sipline::rng::Rng;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const REALM: &str = "biloxi.com";
const URI: &str = "sip:biloxi.com";

fn request(user: &str, extra: &str) -> String {
    format!(
        "REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n\
         From: <sip:{user}@biloxi.com>;tag=a73kszlfl\r\nTo: <sip:{user}@biloxi.com>\r\n\
         Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn server(t0: Instant, policy: BanPolicy) -> DigestServer {
    let users = Users::from_passwords((0..1000).map(|i| (format!("user{i}"), format!("pw{i}"))));
    let mut users = users;
    users.insert_password("bob", "zanzibar");
    DigestServer::new(REALM, users, Nonces::with_secret(t0, b"bench"))
        .unwrap()
        .offer(&[sipline::auth::Algorithm::Md5])
        .with_bans(policy)
}

fn decide(server: &mut DigestServer, now: Instant, text: &str, source: IpAddr) -> Decision {
    let m = Message::parse(text.as_bytes()).unwrap();
    server.authenticate_from(now, &m, Role::Registrar, None, Some(source))
}

fn first_challenge(decision: &Decision) -> String {
    match decision {
        Decision::Challenge { headers, .. } => headers[0].1.clone(),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// An answer to `challenge` as `user` with `password`.
fn answer(client: &mut DigestClient, challenge: &str, rng: &mut Rng) -> String {
    let parsed = Challenge::parse_value(challenge.as_bytes()).unwrap();
    format!("Authorization: {}\r\n", client.authorize(&parsed, "REGISTER", URI, rng).unwrap())
}

/// Whether the server checked a digest (a guess it could have accepted).
fn checked(decision: &Decision) -> bool {
    matches!(
        decision,
        Decision::Challenge {
            reason: ChallengeReason::Invalid(VerifyError::WrongResponse) | ChallengeReason::UnknownUser,
            ..
        } | Decision::Authenticated { .. }
    )
}

/// Guesses checked in one virtual hour at 50 answers a second.
fn attack(strategy: &str) -> (u64, u64) {
    let t0 = Instant::now();
    let mut server = server(t0, BanPolicy::default());
    let mut rng = Rng::new(1);
    let (mut sent, mut hits) = (0u64, 0u64);
    let mut reused: Option<DigestClient> = None;
    for i in 0..50 * 3600u32 {
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        let source = match strategy {
            "many sources" => IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        };
        let mut guesser = DigestClient::new(DigestCredentials::new("bob", format!("guess{i}")));
        let line = if let Some(client) = reused.as_mut() {
            // The script of issue 18: the next nc on the same nonce (the
            // digest changes with nc; the guess is in the hash).
            format!("Authorization: {}\r\n", client.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap())
        } else {
            let challenge = first_challenge(&decide(&mut server, now, &request("bob", ""), source));
            let line = answer(&mut guesser, &challenge, &mut rng);
            if strategy == "one nonce" {
                reused = Some(guesser);
            }
            line
        };
        let decision = decide(&mut server, now, &request("bob", &line), source);
        sent += 1;
        hits += u64::from(checked(&decision));
    }
    (sent, hits)
}

fn attack_table() {
    println!("issue 18 attacks, one virtual hour at 50 answers/s against user bob (defaults: 10 failures / 60 s, 5 min bans)");
    println!("| strategy | answers sent | digests checked | checked/s |");
    println!("|---|---:|---:|---:|");
    for strategy in ["one nonce", "fresh challenge, one source", "many sources"] {
        let (sent, hits) = attack(strategy);
        #[allow(clippy::cast_precision_loss)]
        let rate = hits as f64 / 3600.0;
        println!("| {strategy} | {sent} | {hits} | {rate:.4} |");
    }
}

/// Times `iters` runs of `routine` on inputs from `setup`, made in chunks
/// outside the timing.
fn timed<S, R>(iters: u64, mut setup: impl FnMut() -> S, mut routine: impl FnMut(S) -> R) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(512);
        let inputs: Vec<S> = (0..n).map(|_| setup()).collect();
        let start = Instant::now();
        for input in inputs {
            black_box(routine(input));
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn costs(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth");
    let t0 = Instant::now();
    let src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    // Counting on, never banning: every wrong answer goes the whole way.
    let counting = BanPolicy::new(u32::MAX, Duration::from_secs(60), Duration::from_secs(300));
    let none = request("bob", "");

    // The reference: a request without credentials, answered with a
    // challenge (what every REGISTER costs first).
    group.bench_function("challenge (reference)", |b| {
        let mut s = server(t0, counting);
        b.iter(|| black_box(decide(&mut s, t0, black_box(&none), src)));
    });

    // A wrong password for a known user, and a guess for an unknown one:
    // each on a fresh nonce (made outside the timing).
    for (name, user, password) in
        [("wrong password, known user", "bob", "guess"), ("any password, unknown user", "mallory", "guess")]
    {
        group.bench_function(name, |b| {
            let s = std::cell::RefCell::new(server(t0, counting));
            let mut rng = Rng::new(2);
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        let challenge = first_challenge(&decide(&mut s.borrow_mut(), t0, &request(user, ""), src));
                        let mut client = DigestClient::new(DigestCredentials::new(user, password));
                        request(user, &answer(&mut client, &challenge, &mut rng))
                    },
                    |text| {
                        let d = decide(&mut s.borrow_mut(), t0, &text, src);
                        debug_assert!(checked(&d));
                        d
                    },
                )
            });
        });
    }

    // The right password (the next nc on a nonce in use).
    group.bench_function("right password", |b| {
        let s = std::cell::RefCell::new(server(t0, counting));
        let mut rng = Rng::new(3);
        let challenge = first_challenge(&decide(&mut s.borrow_mut(), t0, &none, src));
        let mut bob = DigestClient::new(DigestCredentials::new("bob", "zanzibar"));
        let first = request("bob", &answer(&mut bob, &challenge, &mut rng));
        assert!(matches!(decide(&mut s.borrow_mut(), t0, &first, src), Decision::Authenticated { .. }));
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    let value = bob.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
                    request("bob", &format!("Authorization: {value}\r\n"))
                },
                |text| decide(&mut s.borrow_mut(), t0, &text, src),
            )
        });
    });

    // The script of issue 18 now: answers on a spent nonce.
    group.bench_function("answer on a spent nonce", |b| {
        let mut s = server(t0, counting);
        let mut rng = Rng::new(4);
        let challenge = first_challenge(&decide(&mut s, t0, &none, src));
        let spent =
            request("bob", &answer(&mut DigestClient::new(DigestCredentials::new("bob", "x")), &challenge, &mut rng));
        decide(&mut s, t0, &spent, src);
        b.iter(|| black_box(decide(&mut s, t0, black_box(&spent), src)));
    });

    // A banned source's answer: 403 before any digest.
    group.bench_function("answer from a banned source", |b| {
        let mut s = server(t0, BanPolicy::default());
        let mut rng = Rng::new(5);
        let mut last = String::new();
        for i in 0..10 {
            let challenge = first_challenge(&decide(&mut s, t0, &none, src));
            let user = format!("user{i}");
            last = request(
                &user,
                &answer(&mut DigestClient::new(DigestCredentials::new(&user, "x")), &challenge, &mut rng),
            );
            decide(&mut s, t0, &last, src);
        }
        assert!(matches!(decide(&mut s, t0, &last, src), Decision::Forbidden { .. }));
        b.iter(|| black_box(decide(&mut s, t0, black_box(&last), src)));
    });
    group.finish();
}

criterion_group!(benches, costs);

fn main() {
    attack_table();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
