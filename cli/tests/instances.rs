//! Issue 20: two `sipline serve` processes serve one domain over one Redis
//! (`--location redis://… --secret-file FILE`), with a `redis-server` of
//! the test's own on loopback.
//!
//! - bob registers at A; alice's MESSAGE through B reaches him;
//! - a challenge from A is answered at B (one secret, nonces dated by the
//!   wall clock), and the same answer replayed to B is refused;
//! - A restarts: bob is reached through the new A without registering
//!   again;
//! - Redis stops: B still routes to bob from memory; carol registers at A
//!   meanwhile, and once Redis is back B reaches her too.

mod support;

use sipline::auth::{DigestClient, DigestCredentials};
use sipline::message::headers::{Challenge, HeaderValue};
use sipline::rng::Rng;
use sipline_tests::kamailio::{programs, wait_until, TempDir, DOMAIN};
use sipline_tests::redis::Redis;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;
use support::Listener;

const STEP: Duration = Duration::from_secs(20);

/// `sipline serve` as instance `name` of the domain, over `redis`.
fn instance(redis: &Redis, dir: &TempDir, name: &str) -> (Listener, SocketAddr) {
    instance_at(redis, dir, name, "127.0.0.1:0")
}

/// [`instance`] bound to `bind` (a restart keeps its address).
fn instance_at(redis: &Redis, dir: &TempDir, name: &str, bind: &str) -> (Listener, SocketAddr) {
    let users = support::users_file(dir);
    let secret = dir.write("secret", "one secret for the whole domain, shared by its instances\n");
    let url = redis.url();
    let secret = secret.to_str().expect("utf-8").to_owned();
    let args = [
        "serve",
        "--bind",
        bind,
        "--domain",
        DOMAIN,
        "--users",
        &users,
        "--min-expires",
        "10",
        "--location",
        &url,
        "--instance",
        name,
        "--secret-file",
        &secret,
        "--workers",
        "2",
    ];
    let mut out = Listener::start_for(&args, 120);
    let udp = out.bound("udp");
    out.lines_starting("serving ", 1);
    (out, udp)
}

/// `sipline ARGS` to its end (bounded).
fn run(args: &[&str]) -> Output {
    Command::new(&programs().timeout)
        .args(["--kill-after=2", "30", env!("CARGO_BIN_EXE_sipline")])
        .args(args)
        .output()
        .expect("run sipline")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A `sipline register` for `user`, registered at `registrar` over UDP.
fn register(user: &str, password: &str, registrar: SocketAddr) -> Listener {
    register_over(user, password, &format!("sip:{registrar}"), "udp")
}

/// A `sipline register` for `user`, registered at `registrar` (a URI) over
/// `transport`.
fn register_over(user: &str, password: &str, registrar: &str, transport: &str) -> Listener {
    let aor = format!("sip:{user}@{DOMAIN}");
    let args = [
        "register",
        &aor,
        "--registrar",
        registrar,
        "--user",
        user,
        "--password",
        password,
        "--bind",
        "127.0.0.1:0",
        "--transport",
        transport,
    ];
    let mut out = Listener::start_for(&args, 120);
    out.lines_starting("registration: registered as ", 1);
    out
}

/// alice's MESSAGE `body` to `to` through the proxy at `via`: its output.
fn message(to: &str, body: &str, via: SocketAddr) -> Output {
    let target = format!("sip:{to}@{DOMAIN}");
    let (from, proxy) = (format!("sip:alice@{DOMAIN}"), format!("sip:{via}"));
    let args = [
        "message",
        &target,
        body,
        "--from",
        &from,
        "--proxy",
        &proxy,
        "--user",
        "alice",
        "--password",
        "alicepw",
        "--bind",
        "127.0.0.1:0",
    ];
    run(&args)
}

/// [`message`] until it succeeds (bounded): an instance answers 480
/// until the binding made at another has reached it.
fn reach(to: &str, body: &str, via: SocketAddr) {
    let mut last = None;
    let reached = wait_until(STEP, || {
        let out = message(to, body, via);
        let ok = out.status.code() == Some(0);
        last = Some(out);
        ok
    });
    assert!(reached, "{}", last.as_ref().map(text).unwrap_or_default());
}

fn delivered(to: &mut Listener, body: &str) {
    let line = format!("MESSAGE from sip:alice@{DOMAIN} (text/plain): {body}");
    to.lines_starting(&line, 1);
}

/// bob registers at A over TCP: only A holds his connection. alice's
/// MESSAGE through B goes to A (the binding's Path, RFC 3327) and on over
/// bob's connection; A takes it from B without a second challenge (B's
/// route token), and bob sees who sent it.
#[test]
fn an_instance_reaches_a_user_over_the_connection_another_holds() {
    let dir = TempDir::new("instances-tcp");
    let redis = Redis::start();
    let (mut a, _) = instance(&redis, &dir, "a");
    let a_tcp = a.bound("tcp");
    let (_b, b_addr) = instance(&redis, &dir, "b");
    let mut bob = register_over("bob", "bobpw", &format!("sip:{a_tcp};transport=tcp"), "tcp");
    // B learns of the binding within milliseconds: 480 until then.
    reach("bob", "over a's connection", b_addr);
    delivered(&mut bob, "over a's connection");
}

/// A call across instances: bob registered over TCP at A answers; alice
/// calls through B. The INVITE goes B → A (bob's Path) → bob's connection,
/// both instances record-route, and the ACK and alice's BYE follow that
/// route set back to bob.
#[test]
fn a_call_through_one_instance_reaches_a_user_whose_connection_another_holds() {
    let dir = TempDir::new("instances-call");
    let redis = Redis::start();
    let (mut a, _) = instance(&redis, &dir, "a");
    let a_tcp = a.bound("tcp");
    let (_b, b_addr) = instance(&redis, &dir, "b");
    let aor = format!("sip:bob@{DOMAIN}");
    let registrar = format!("sip:{a_tcp};transport=tcp");
    let args = [
        "register",
        &aor,
        "--registrar",
        &registrar,
        "--user",
        "bob",
        "--password",
        "bobpw",
        "--bind",
        "127.0.0.1:0",
        "--transport",
        "tcp",
        "--answer",
    ];
    let mut bob = Listener::start_for(&args, 120);
    bob.lines_starting("registration: registered as ", 1);
    let (from, proxy) = (format!("sip:alice@{DOMAIN}"), format!("sip:{b_addr}"));
    let call = [
        "call",
        &aor,
        "--from",
        &from,
        "--proxy",
        &proxy,
        "--user",
        "alice",
        "--password",
        "alicepw",
        "--bind",
        "127.0.0.1:0",
        "--hangup-after",
        "0.5",
    ];
    // 480 until B has bob's binding (milliseconds).
    let mut last = None;
    let answered = wait_until(STEP, || {
        let out = run(&call);
        let ok = out.status.code() == Some(0);
        last = Some(out);
        ok
    });
    assert!(answered, "{}", last.as_ref().map(text).unwrap_or_default());
    bob.lines_starting(&format!("INVITE from {from}"), 1);
    bob.lines_starting("ACK", 1);
    bob.lines_starting(&format!("BYE from {from}"), 1);
}

/// bob registers over TCP with A first and B second (`--registrar`
/// twice, RFC 3263 §4.3); A is killed: within one registration refresh
/// (10 s here; in practice at once, as bob's connection to A closes and
/// a new one is refused) bob is registered at B, and alice reaches him
/// through B.
#[test]
fn an_endpoint_with_two_registrars_moves_to_the_other_instance_when_one_dies() {
    let dir = TempDir::new("instances-failover");
    let redis = Redis::start();
    let (mut a, _) = instance(&redis, &dir, "a");
    let a_tcp = a.bound("tcp");
    let (mut b, b_addr) = instance(&redis, &dir, "b");
    let b_tcp = b.bound("tcp");
    let aor = format!("sip:bob@{DOMAIN}");
    let (first, second) = (format!("sip:{a_tcp};transport=tcp"), format!("sip:{b_tcp};transport=tcp"));
    let args = [
        "register",
        &aor,
        "--registrar",
        &first,
        "--registrar",
        &second,
        "--user",
        "bob",
        "--password",
        "bobpw",
        "--bind",
        "127.0.0.1:0",
        "--transport",
        "tcp",
        "--expires",
        "10",
    ];
    let mut bob = Listener::start_for(&args, 120);
    bob.lines_starting("registration: registered as ", 1);
    reach("bob", "before", b_addr);
    delivered(&mut bob, "before");
    let killed = std::time::Instant::now();
    drop(a);
    // The next REGISTER (at the latest the refresh, within 10 s) finds A
    // gone and goes to B.
    bob.lines_starting("registration: registered as ", 2);
    let moved = killed.elapsed();
    assert!(moved < Duration::from_secs(12), "took {moved:?}");
    eprintln!("registered at b {moved:?} after a was killed");
    b.drain();
    assert!(
        b.seen.iter().any(|l| l.starts_with("REGISTER ") && l.contains("for sip:bob@") && l.contains("200 OK")),
        "B never registered bob: {:#?}",
        b.seen
    );
    reach("bob", "after a died", b_addr);
    delivered(&mut bob, "after a died");
}

/// A REGISTER for carol from `socket`, with `authorization` if given.
fn register_request(socket: &UdpSocket, cseq: u32, authorization: Option<&str>) -> Vec<u8> {
    register_request_for(socket, cseq, authorization, 60)
}

/// [`register_request`] asking for `expires` seconds (0: unregister).
fn register_request_for(socket: &UdpSocket, cseq: u32, authorization: Option<&str>, expires: u32) -> Vec<u8> {
    let me = socket.local_addr().expect("bound");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-inst-{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@{DOMAIN}>;tag=c1\r\nTo: <sip:carol@{DOMAIN}>\r\n\
         Call-ID: instances-carol\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:carol@{me}>\r\nExpires: {expires}\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `bytes` to `to` and returns the first final response's text.
fn exchange(socket: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> String {
    socket.send_to(bytes, to).expect("send");
    let mut buf = vec![0u8; 65_536];
    for _ in 0..20 {
        let Ok((n, _)) = socket.recv_from(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
    panic!("no final response from {to}");
}

#[test]
fn two_instances_serve_one_domain_over_redis() {
    let dir = TempDir::new("instances");
    let mut redis = Redis::start();
    let (a, a_addr) = instance(&redis, &dir, "a");
    let (mut b, b_addr) = instance(&redis, &dir, "b");

    // bob registers at A; alice's MESSAGE through B reaches him (480
    // for the milliseconds until B has the binding).
    let mut bob = register("bob", "bobpw", a_addr);
    reach("bob", "through b", b_addr);
    delivered(&mut bob, "through b");

    // A's challenge answered at B: 200; the same answer again at B: 401.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let challenge = exchange(&socket, a_addr, &register_request(&socket, 1, None));
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let value = challenge
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .unwrap_or_else(|| panic!("a challenge: {challenge}"));
    let parsed = Challenge::parse_value(value.as_bytes()).expect("a challenge");
    let mut digest = DigestClient::new(DigestCredentials::new("carol", "carolpw"));
    let answer = digest.authorize(&parsed, "REGISTER", &format!("sip:{DOMAIN}"), &mut Rng::new(5)).expect("answer");
    let accepted = exchange(&socket, b_addr, &register_request(&socket, 2, Some(&answer)));
    assert!(accepted.starts_with("SIP/2.0 200"), "A's nonce refused at B: {accepted}");
    let replayed = exchange(&socket, b_addr, &register_request(&socket, 3, Some(&answer)));
    assert!(replayed.starts_with("SIP/2.0 401"), "a replayed answer accepted: {replayed}");
    // A new count on the same nonce is a new request: this socket's
    // binding goes (nobody answers here).
    let again = digest.authorize(&parsed, "REGISTER", &format!("sip:{DOMAIN}"), &mut Rng::new(6)).expect("answer");
    let removed = exchange(&socket, b_addr, &register_request_for(&socket, 4, Some(&again), 0));
    assert!(removed.starts_with("SIP/2.0 200"), "{removed}");

    // A restarts (at its address); bob is reached through the new A
    // without registering again.
    drop(a);
    let (mut new_a, a_addr) = instance_at(&redis, &dir, "a", &a_addr.to_string());
    let out = message("bob", "through the new a", a_addr);
    new_a.drain();
    assert_eq!(out.status.code(), Some(0), "{}\n--- new a ---\n{}", text(&out), new_a.seen.join("\n"));
    delivered(&mut bob, "through the new a");

    // Redis stops: B still routes to bob from memory. carol registers at
    // A meanwhile; once Redis is back, B reaches her too.
    redis.stop();
    let out = message("bob", "without redis", b_addr);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    delivered(&mut bob, "without redis");
    let mut carol = register("carol", "carolpw", a_addr);
    redis.resume();
    let mut last = None;
    let reached = wait_until(STEP, || {
        let out = message("carol", "after redis came back", b_addr);
        let ok = out.status.code() == Some(0);
        last = Some(out);
        ok
    });
    b.drain();
    new_a.drain();
    assert!(
        reached,
        "B never reached carol after Redis came back: {}\n--- b ---\n{}\n--- a ---\n{}",
        last.as_ref().map(text).unwrap_or_default(),
        b.seen.join("\n"),
        new_a.seen.join("\n")
    );
    delivered(&mut carol, "after redis came back");
}
