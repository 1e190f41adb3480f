//! `sipline::auth::DigestServer`: challenges, verification, stale and replayed nonces, 403.
//! Guessing (uniform answers, spent nonces, bans): `auth_guessing.rs`.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::auth::*;
use sipline::message::headers::{Challenge, HeaderValue};
use sipline::message::{HeaderName, Message, StatusCode};
use sipline::rng::Rng;
use std::time::{Duration, Instant};

/// Any instant to count from; every later time is derived from it.
fn start() -> Instant {
    Instant::now()
}

const REALM: &str = "biloxi.com";
const URI: &str = "sip:biloxi.com";

fn users() -> Users {
    let text = format!(
        "alice:wonderland\nbob:{REALM}:{}\nbob:{REALM}:{}\ncarol:{REALM}:{}\ndave:atlanta.com:{}\n",
        ha1(Algorithm::Md5, "bob", REALM, "zanzibar"),
        ha1(Algorithm::Sha256, "bob", REALM, "zanzibar"),
        ha1(Algorithm::Md5, "carol", REALM, "secret"),
        ha1(Algorithm::Md5, "dave", "atlanta.com", "secret"),
    );
    Users::parse(&text).unwrap()
}

fn server(t0: Instant, nonces: impl FnOnce(Nonces) -> Nonces) -> DigestServer {
    DigestServer::new(REALM, users(), nonces(Nonces::new(t0, &mut Rng::new(3)))).unwrap()
}

/// A request from `user`, with `extra` header lines.
fn request(method: &str, uri: &str, user: &str, extra: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n\
         From: <sip:{user}@biloxi.com>;tag=a73kszlfl\r\nTo: <sip:{user}@biloxi.com>\r\n\
         Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn decide(server: &mut DigestServer, now: Instant, text: &str, role: Role, expected: Option<&str>) -> Decision {
    let message = Message::parse(text.as_bytes()).expect("test request parses");
    server.authenticate(now, &message, role, expected)
}

/// The challenge headers and reason of a decision that must be one.
fn challenged(decision: Decision, role: Role) -> (Vec<String>, ChallengeReason) {
    let Decision::Challenge { code, headers, reason } = decision else {
        panic!("expected a challenge, got {decision:?}");
    };
    assert_eq!(code, role.status());
    assert!(headers.iter().all(|(name, _)| *name == role.challenge_header()));
    (headers.into_iter().map(|(_, value)| value).collect(), reason)
}

fn parse(value: &str) -> Challenge<'_> {
    Challenge::parse_value(value.as_bytes()).expect("challenge parses")
}

/// The credentials header line answering `challenge`.
fn answer(client: &mut DigestClient, challenge: &str, method: &str, uri: &str, role: Role, rng: &mut Rng) -> String {
    let value = client.authorize(&parse(challenge), method, uri, rng).unwrap();
    format!("{}: {value}\r\n", role.credentials_header())
}

fn client(user: &str, password: &str) -> DigestClient {
    DigestClient::new(DigestCredentials::new(user, password))
}

#[test]
fn challenges_offer_sha256_then_md5_with_one_fresh_nonce() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    for role in [Role::Registrar, Role::Proxy] {
        let (headers, reason) =
            challenged(decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), role, None), role);
        assert_eq!(reason, ChallengeReason::NoCredentials);
        assert_eq!(headers.len(), 2);
        let (sha, md5) = (parse(&headers[0]), parse(&headers[1]));
        assert_eq!(sha.algorithm().unwrap(), "SHA-256");
        assert_eq!(md5.algorithm().unwrap(), "MD5");
        for c in [&sha, &md5] {
            assert_eq!(c.realm().unwrap(), REALM);
            assert_eq!(c.qop_options().collect::<Vec<_>>(), ["auth"]);
            assert!(!c.stale());
        }
        assert_eq!(sha.nonce(), md5.nonce());
        assert_eq!(sha.nonce().unwrap().len(), 64);
    }
    // Each challenge has its own nonce.
    let a = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    )
    .0;
    let b = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    )
    .0;
    assert_ne!(parse(&a[0]).nonce(), parse(&b[0]).nonce());
    assert_eq!(Role::Registrar.status().as_u16(), 401);
    assert_eq!(Role::Proxy.status().as_u16(), 407);
    assert_eq!(Role::Proxy.credentials_header(), HeaderName::ProxyAuthorization);
}

#[test]
fn the_offer_sets_the_challenges_and_their_order() {
    let t0 = start();
    let mut rng = Rng::new(5);
    let algorithms = |server: &mut DigestServer| -> Vec<String> {
        let (headers, _) = challenged(
            decide(server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
            Role::Registrar,
        );
        headers.iter().map(|h| parse(h).algorithm().unwrap().into_owned()).collect()
    };
    let mut md5_first = server(t0, |n| n).md5_first(true);
    assert_eq!(algorithms(&mut md5_first), ["MD5", "SHA-256"]);
    let mut back = server(t0, |n| n).md5_first(true).md5_first(false);
    assert_eq!(algorithms(&mut back), ["SHA-256", "MD5"]);
    // Duplicates are dropped; an empty offer keeps the default.
    let twice = server(t0, |n| n).offer(&[Algorithm::Md5, Algorithm::Md5]);
    assert_eq!(twice.offered(), [Algorithm::Md5]);
    assert_eq!(server(t0, |n| n).offer(&[]).offered(), DEFAULT_ALGORITHMS);

    // MD5 alone (for clients that refuse any other challenge): one
    // challenge, and SHA-256 credentials — answering a challenge from a
    // server that offered it — are challenged again, with MD5 only.
    let mut md5_only = server(t0, |n| n).offer(&[Algorithm::Md5]);
    assert_eq!(algorithms(&mut md5_only), ["MD5"]);
    let mut sha = server(t0, |n| n);
    let (offered, _) =
        challenged(decide(&mut sha, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None), Role::Registrar);
    let line = answer(&mut client("bob", "zanzibar"), &offered[0], "REGISTER", URI, Role::Registrar, &mut rng);
    assert!(line.contains("algorithm=SHA-256"), "{line}");
    let decision = decide(&mut md5_only, t0, &request("REGISTER", URI, "bob", &line), Role::Registrar, None);
    let (again, _) = challenged(decision, Role::Registrar);
    assert_eq!(again.len(), 1);
    assert_eq!(parse(&again[0]).algorithm().unwrap(), "MD5");
    // A user whose only secret is SHA-256 has nothing in an MD5-only
    // offer: treated as unknown (issue 18: a wrong answer, not a 403
    // that would tell the name exists).
    let sha_only = format!("erin:{REALM}:{}\n", ha1(Algorithm::Sha256, "erin", REALM, "pw"));
    let nonces = Nonces::new(t0, &mut Rng::new(4));
    let mut erin_server =
        DigestServer::new(REALM, Users::parse(&sha_only).unwrap(), nonces).unwrap().offer(&[Algorithm::Md5]);
    let (challenge, _) = challenged(
        decide(&mut erin_server, t0, &request("REGISTER", URI, "erin", ""), Role::Registrar, None),
        Role::Registrar,
    );
    let line = answer(&mut client("erin", "pw"), &challenge[0], "REGISTER", URI, Role::Registrar, &mut rng);
    let decision = decide(&mut erin_server, t0, &request("REGISTER", URI, "erin", &line), Role::Registrar, None);
    let (again, reason) = challenged(decision, Role::Registrar);
    assert_eq!(reason, ChallengeReason::UnknownUser);
    assert_eq!(again.len(), 1);
    assert_eq!(parse(&again[0]).algorithm().unwrap(), "MD5");
}

#[test]
fn round_trip_md5_and_sha256_for_password_and_ha1_users() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let mut accepted = 0;
    for role in [Role::Registrar, Role::Proxy] {
        let method = if role == Role::Registrar { "REGISTER" } else { "INVITE" };
        let uri = if role == Role::Registrar { URI } else { "sip:alice@atlanta.com" };
        for (user, password) in [("alice", "wonderland"), ("bob", "zanzibar")] {
            for (index, algorithm) in [(0, "SHA-256"), (1, "MD5")] {
                let first = request(method, uri, user, "");
                let (headers, _) = challenged(decide(&mut server, t0, &first, role, Some(user)), role);
                let mut c = client(user, password);
                let line = answer(&mut c, &headers[index], method, uri, role, &mut rng);
                assert!(line.contains(&format!("algorithm={algorithm}")), "{line}");
                let second = request(method, uri, user, &line);
                let decision = decide(&mut server, t0, &second, role, Some(user));
                assert_eq!(decision, Decision::Authenticated { username: user.into() }, "{role:?} {user} {algorithm}");
                assert_eq!(decision.status(), None);
                accepted += 1;
                // The answer in the other header kind is not looked at.
                let other = if role == Role::Registrar { Role::Proxy } else { Role::Registrar };
                let (_, reason) = challenged(decide(&mut server, t0, &second, other, Some(user)), other);
                assert_eq!(reason, ChallengeReason::NoCredentials);
            }
        }
    }
    assert_eq!(accepted, 8);
    assert_eq!(server.nonces().tracked(), 8);
}

#[test]
fn growing_nonce_counts_pass_and_replays_are_challenged() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let (headers, _) = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    );
    let mut bob = client("bob", "zanzibar");
    let mut sent = Vec::new();
    sent.push(request(
        "REGISTER",
        URI,
        "bob",
        &answer(&mut bob, &headers[0], "REGISTER", URI, Role::Registrar, &mut rng),
    ));
    for _ in 0..2 {
        let value = bob.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
        sent.push(request("REGISTER", URI, "bob", &format!("Authorization: {value}\r\n")));
    }
    for (i, text) in sent.iter().enumerate() {
        assert!(text.contains(&format!("nc=0000000{}", i + 1)));
        let t = t0 + Duration::from_secs(10 * i as u64);
        assert_eq!(
            decide(&mut server, t, text, Role::Registrar, Some("bob")),
            Decision::Authenticated { username: "bob".into() }
        );
    }
    // The same answers again: replays, challenged with stale=true
    // (the digest itself was right).
    for text in [&sent[1], &sent[2], &sent[0]] {
        let (headers, reason) = challenged(
            decide(&mut server, t0 + Duration::from_secs(30), text, Role::Registrar, Some("bob")),
            Role::Registrar,
        );
        assert_eq!(reason, ChallengeReason::Replayed);
        assert!(headers.iter().all(|h| h.contains("stale=true")), "{headers:?}");
    }
    // The count goes on from the highest seen.
    let value = bob.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
    let next = request("REGISTER", URI, "bob", &format!("Authorization: {value}\r\n"));
    assert_eq!(
        decide(&mut server, t0 + Duration::from_secs(31), &next, Role::Registrar, None),
        Decision::Authenticated { username: "bob".into() }
    );
}

#[test]
fn an_expired_nonce_is_challenged_with_stale_true() {
    let t0 = start();
    let mut server = server(t0, |n| n.with_lifetime(Duration::from_secs(30)));
    let mut rng = Rng::new(9);
    let (headers, _) =
        challenged(decide(&mut server, t0, &request("REGISTER", URI, "alice", ""), Role::Proxy, None), Role::Proxy);
    let mut alice = client("alice", "wonderland");
    let late =
        request("REGISTER", URI, "alice", &answer(&mut alice, &headers[0], "REGISTER", URI, Role::Proxy, &mut rng));
    let t1 = t0 + Duration::from_secs(30);
    let (headers, reason) = challenged(decide(&mut server, t1, &late, Role::Proxy, None), Role::Proxy);
    assert_eq!(reason, ChallengeReason::StaleNonce);
    assert_eq!(headers.len(), 2);
    for h in &headers {
        assert!(h.contains("stale=true"), "{h}");
        assert!(parse(h).stale());
    }
    // The client retries with the new nonce, without asking the user.
    let retry =
        request("REGISTER", URI, "alice", &answer(&mut alice, &headers[0], "REGISTER", URI, Role::Proxy, &mut rng));
    assert_eq!(
        decide(&mut server, t1, &retry, Role::Proxy, None),
        Decision::Authenticated { username: "alice".into() }
    );
    // A wrong password on an expired nonce is not checked (issue 18: an
    // old nonce buys no guess): stale=true all the same (RFC 7616 §3.3),
    // and the answer to the fresh nonce tells the user to try again.
    let (old, _) =
        challenged(decide(&mut server, t1, &request("REGISTER", URI, "alice", ""), Role::Proxy, None), Role::Proxy);
    let mut wrong = client("alice", "looking-glass");
    let text = request("REGISTER", URI, "alice", &answer(&mut wrong, &old[0], "REGISTER", URI, Role::Proxy, &mut rng));
    let t2 = t1 + Duration::from_secs(60);
    let (headers, reason) = challenged(decide(&mut server, t2, &text, Role::Proxy, None), Role::Proxy);
    assert_eq!(reason, ChallengeReason::StaleNonce);
    assert!(headers.iter().all(|h| h.contains("stale=true")), "{headers:?}");
    assert!(server.bans().tracked() == 0, "no digest checked, no failure counted");
    let text =
        request("REGISTER", URI, "alice", &answer(&mut wrong, &headers[0], "REGISTER", URI, Role::Proxy, &mut rng));
    let (headers, reason) = challenged(decide(&mut server, t2, &text, Role::Proxy, None), Role::Proxy);
    assert_eq!(reason, ChallengeReason::Invalid(VerifyError::WrongResponse));
    assert!(headers.iter().all(|h| !h.contains("stale")), "{headers:?}");
}

#[test]
fn forged_or_garbled_nonces_are_challenged_without_stale() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let (headers, _) = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    );
    let nonce = parse(&headers[0]).nonce().unwrap().into_owned();
    let mut flipped = nonce.clone().into_bytes();
    flipped[3] = if flipped[3] == b'f' { b'e' } else { b'f' };
    let flipped = String::from_utf8(flipped).unwrap();
    let foreign = Nonces::new(t0, &mut Rng::new(4)).issue(t0);
    for bad in [flipped.as_str(), &foreign, "dcd98b7102dd2f0e8b11d0f600bfb0c093", &nonce[..40]] {
        let challenge = headers[0].replace(&nonce, bad);
        let mut bob = client("bob", "zanzibar");
        let text =
            request("REGISTER", URI, "bob", &answer(&mut bob, &challenge, "REGISTER", URI, Role::Registrar, &mut rng));
        let (again, reason) = challenged(decide(&mut server, t0, &text, Role::Registrar, None), Role::Registrar);
        assert_eq!(reason, ChallengeReason::UnknownNonce, "{bad}");
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|h| !h.contains("stale")), "{again:?}");
    }
}

#[test]
fn a_wrong_password_is_challenged_again() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    // Carol has only an MD5 HA1, so she answers the second (MD5) challenge.
    for (user, password, index) in [("bob", "zanzibar!", 0), ("alice", "Wonderland", 0), ("carol", "", 1)] {
        let (headers, _) = challenged(
            decide(&mut server, t0, &request("REGISTER", URI, user, ""), Role::Registrar, None),
            Role::Registrar,
        );
        let mut c = client(user, password);
        let text = request(
            "REGISTER",
            URI,
            user,
            &answer(&mut c, &headers[index], "REGISTER", URI, Role::Registrar, &mut rng),
        );
        let decision = decide(&mut server, t0, &text, Role::Registrar, Some(user));
        assert_eq!(decision.status().map(StatusCode::as_u16), Some(401));
        let (again, reason) = challenged(decision, Role::Registrar);
        assert_eq!(reason, ChallengeReason::Invalid(VerifyError::WrongResponse), "{user}");
        assert!(again.iter().all(|h| !h.contains("stale")));
    }
    assert_eq!(server.nonces().tracked(), 3, "each failed answer spent its nonce (issue 18)");
    assert_eq!(server.bans().tracked(), 3, "one failure per user, none from a source");
}

#[test]
fn unknown_users_are_challenged_again_and_other_users_forbidden() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let fresh = |server: &mut DigestServer, user: &str| {
        challenged(decide(server, t0, &request("REGISTER", URI, user, ""), Role::Registrar, None), Role::Registrar).0
    };
    // Eve is unknown; Dave only has a secret for another realm. Issue 18:
    // both get what a wrong password gets, a fresh 401 (no 403 that
    // would tell which names exist).
    for user in ["eve", "dave"] {
        let headers = fresh(&mut server, user);
        let mut c = client(user, "secret");
        let text =
            request("REGISTER", URI, user, &answer(&mut c, &headers[0], "REGISTER", URI, Role::Registrar, &mut rng));
        let decision = decide(&mut server, t0, &text, Role::Registrar, Some(user));
        assert_eq!(decision.status().map(StatusCode::as_u16), Some(401));
        let (again, reason) = challenged(decision, Role::Registrar);
        assert_eq!(reason, ChallengeReason::UnknownUser);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|h| !h.contains("stale")));
    }
    // Bob authenticates, but registers Alice's address of record.
    let headers = fresh(&mut server, "alice");
    let mut bob = client("bob", "zanzibar");
    let text =
        request("REGISTER", URI, "alice", &answer(&mut bob, &headers[0], "REGISTER", URI, Role::Registrar, &mut rng));
    assert_eq!(
        decide(&mut server, t0, &text, Role::Registrar, Some("alice")),
        Decision::Forbidden { username: "bob".into(), reason: ForbiddenReason::WrongUser }
    );
    let value = bob.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
    let text = request("REGISTER", URI, "bob", &format!("Authorization: {value}\r\n"));
    assert_eq!(
        decide(&mut server, t0, &text, Role::Registrar, Some("bob")),
        Decision::Authenticated { username: "bob".into() }
    );
}

#[test]
fn a_user_with_one_hash_is_offered_only_that_one() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let mut carol = client("carol", "secret");
    let first = request("REGISTER", URI, "carol", "");
    let Decision::Challenge { headers, .. } = decide(&mut server, t0, &first, Role::Registrar, None) else { panic!() };
    // The client prefers SHA-256, but only an MD5 HA1 is stored.
    let challenge = format!(
        "SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: {}\r\nWWW-Authenticate: {}\r\n\r\n",
        headers[0].1, headers[1].1
    );
    let response = Message::parse(challenge.as_bytes()).unwrap();
    let answers = carol.authorize_response(&response, "REGISTER", URI, &mut rng).unwrap();
    let text = request("REGISTER", URI, "carol", &format!("{}: {}\r\n", answers[0].0, answers[0].1));
    let (md5_only, reason) = challenged(decide(&mut server, t0, &text, Role::Registrar, None), Role::Registrar);
    assert_eq!(reason, ChallengeReason::AlgorithmNotOffered { algorithm: "SHA-256".into() });
    assert_eq!(md5_only.len(), 1);
    assert!(md5_only[0].contains("algorithm=MD5"));
    let challenge = format!("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: {}\r\n\r\n", md5_only[0]);
    let response = Message::parse(challenge.as_bytes()).unwrap();
    let answers = carol.authorize_response(&response, "REGISTER", URI, &mut rng).unwrap();
    let text = request("REGISTER", URI, "carol", &format!("{}: {}\r\n", answers[0].0, answers[0].1));
    assert_eq!(
        decide(&mut server, t0, &text, Role::Registrar, None),
        Decision::Authenticated { username: "carol".into() }
    );
    // Algorithms never offered: "-sess", unknown ones.
    for algorithm in ["MD5-sess", "SHA-512-256"] {
        let (headers, _) = challenged(
            decide(&mut server, t0, &request("REGISTER", URI, "alice", ""), Role::Registrar, None),
            Role::Registrar,
        );
        let challenge = headers[1].replace("algorithm=MD5", &format!("algorithm={algorithm}"));
        let line = if algorithm == "MD5-sess" {
            answer(&mut client("alice", "wonderland"), &challenge, "REGISTER", URI, Role::Registrar, &mut rng)
        } else {
            // The client cannot answer it; write what a peer might send.
            let ok =
                answer(&mut client("alice", "wonderland"), &headers[1], "REGISTER", URI, Role::Registrar, &mut rng);
            ok.replace("algorithm=MD5", &format!("algorithm={algorithm}"))
        };
        let text = request("REGISTER", URI, "alice", &line);
        let (again, reason) = challenged(decide(&mut server, t0, &text, Role::Registrar, None), Role::Registrar);
        assert_eq!(reason, ChallengeReason::AlgorithmNotOffered { algorithm: algorithm.into() });
        assert_eq!(again.len(), 2);
    }
}

#[test]
fn malformed_credentials_are_challenged() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let (headers, _) = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    );
    let good = answer(&mut client("bob", "zanzibar"), &headers[0], "REGISTER", URI, Role::Registrar, &mut rng);
    let value = good.trim_end().trim_start_matches("Authorization: ").to_owned();
    let without = |name: &str| {
        let params: Vec<&str> =
            value["Digest ".len()..].split(", ").filter(|p| !p.starts_with(&format!("{name}="))).collect();
        format!("Authorization: Digest {}\r\n", params.join(", "))
    };
    let missing = |name| ChallengeReason::Invalid(VerifyError::MissingParameter { name });
    let cases = [
        ("Authorization: Basic Ym9iOnphbnppYmFy\r\n".to_owned(), ChallengeReason::NoCredentials),
        ("Authorization: Digest realm=\"biloxi.com\r\n".to_owned(), ChallengeReason::NoCredentials),
        ("Authorization: Digest\r\n".to_owned(), ChallengeReason::NoCredentials),
        (good.replace("realm=\"biloxi.com\"", "realm=\"atlanta.com\""), ChallengeReason::NoCredentials),
        (without("realm"), ChallengeReason::NoCredentials),
        (without("nonce"), missing("nonce")),
        (without("username"), missing("username")),
        (without("response"), missing("response")),
        (without("uri"), missing("uri")),
        (without("cnonce"), missing("cnonce")),
        (without("qop"), ChallengeReason::Invalid(VerifyError::QopRequired)),
        (
            good.replace("nc=00000001", "nc=1"),
            ChallengeReason::Invalid(VerifyError::MalformedNonceCount { nc: "1".into() }),
        ),
    ];
    for (line, expected) in cases {
        let text = request("REGISTER", URI, "bob", &line);
        let (again, reason) = challenged(decide(&mut server, t0, &text, Role::Registrar, None), Role::Registrar);
        assert_eq!(reason, expected, "{line}");
        assert_eq!(again.len(), 2);
    }
    // A response is not a request to authenticate.
    let response = "SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\n";
    assert_eq!(
        challenged(decide(&mut server, t0, response, Role::Registrar, None), Role::Registrar).1,
        ChallengeReason::NoCredentials
    );
    // Credentials for another realm next to ours: ours are found.
    let other = good.replace("realm=\"biloxi.com\"", "realm=\"atlanta.com\"");
    let text = request("REGISTER", URI, "bob", &format!("{other}{good}"));
    assert_eq!(
        decide(&mut server, t0, &text, Role::Registrar, None),
        Decision::Authenticated { username: "bob".into() }
    );
}

#[test]
fn the_digest_uri_must_name_the_request_uri() {
    let t0 = start();
    let mut server = server(t0, |n| n);
    let mut rng = Rng::new(9);
    let (headers, _) = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    );
    let mut bob = client("bob", "zanzibar");
    let line = answer(&mut bob, &headers[0], "REGISTER", "sip:atlanta.com", Role::Registrar, &mut rng);
    let decision = decide(&mut server, t0, &request("REGISTER", URI, "bob", &line), Role::Registrar, None);
    assert_eq!(decision, Decision::BadRequest);
    assert_eq!(decision.status().map(StatusCode::as_u16), Some(400));
    // Equivalent under RFC 3261 §19.1.4 (the host is case-insensitive).
    let value = bob.reauthorize(REALM, "REGISTER", "sip:BILOXI.com", &mut rng).unwrap();
    let text = request("REGISTER", URI, "bob", &format!("Authorization: {value}\r\n"));
    assert_eq!(
        decide(&mut server, t0, &text, Role::Registrar, None),
        Decision::Authenticated { username: "bob".into() }
    );
}

#[test]
fn at_the_table_cap_an_old_nonce_is_re_challenged() {
    let t0 = start();
    let mut server = server(t0, |n| n.with_capacity(1));
    let mut rng = Rng::new(9);
    let mut bob = client("bob", "zanzibar");
    let mut alice = client("alice", "wonderland");
    for (user, c) in [("bob", &mut bob), ("alice", &mut alice)] {
        let (headers, _) = challenged(
            decide(&mut server, t0, &request("REGISTER", URI, user, ""), Role::Registrar, None),
            Role::Registrar,
        );
        let text = request("REGISTER", URI, user, &answer(c, &headers[0], "REGISTER", URI, Role::Registrar, &mut rng));
        assert_eq!(
            decide(&mut server, t0, &text, Role::Registrar, None),
            Decision::Authenticated { username: user.into() }
        );
        assert_eq!(server.nonces().tracked(), 1);
    }
    // Bob's nonce was dropped for Alice's: his next count is stale, not
    // a first use.
    let value = bob.reauthorize(REALM, "REGISTER", URI, &mut rng).unwrap();
    let text = request("REGISTER", URI, "bob", &format!("Authorization: {value}\r\n"));
    let (headers, reason) = challenged(decide(&mut server, t0, &text, Role::Registrar, None), Role::Registrar);
    assert_eq!(reason, ChallengeReason::StaleNonce);
    assert!(headers[0].contains("stale=true"));
}

#[test]
fn an_accepted_answer_arms_no_timer() {
    // Issue 19: the nonces' replay table is a fixed ring; nothing in it
    // expires on a timer, so authentication alone never wakes the server.
    let t0 = start();
    let mut server = server(t0, |n| n.with_lifetime(Duration::from_secs(60)));
    assert_eq!(server.poll_timeout(), None);
    let mut rng = Rng::new(9);
    let (headers, _) = challenged(
        decide(&mut server, t0, &request("REGISTER", URI, "bob", ""), Role::Registrar, None),
        Role::Registrar,
    );
    let text = request(
        "REGISTER",
        URI,
        "bob",
        &answer(&mut client("bob", "zanzibar"), &headers[0], "REGISTER", URI, Role::Registrar, &mut rng),
    );
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        decide(&mut server, t1, &text, Role::Registrar, None),
        Decision::Authenticated { username: "bob".into() }
    );
    assert_eq!(server.nonces().tracked(), 1);
    assert_eq!(server.poll_timeout(), None);
    // Past the lifetime the entry no longer counts, and the answer is stale.
    let late = t0 + Duration::from_secs(61);
    assert!(matches!(decide(&mut server, late, &text, Role::Registrar, None), Decision::Challenge { .. }));
    assert_eq!(server.nonces().tracked(), 0);
}

#[test]
fn debug_shows_no_secret() {
    let t0 = start();
    let server = server(t0, |n| n);
    let shown = format!("{server:?}");
    for secret in [
        "wonderland",
        &ha1(Algorithm::Md5, "bob", REALM, "zanzibar")[..12],
        &ha1(Algorithm::Sha256, "bob", REALM, "zanzibar")[..12],
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("biloxi.com") && shown.contains("alice"), "{shown}");
    assert!(DigestServer::new("bad\r\nrealm", Users::new(), Nonces::new(t0, &mut Rng::new(1))).is_err());
}
