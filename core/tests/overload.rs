//! Issue 19, overload control of the server role (`ServerConfig::overload`,
//! `Endpoint::handle_datagram_received`): past `D` of queueing delay new
//! requests get one 503 with Retry-After, statelessly from a glance at the
//! datagram (or, with `stateless` off, with no more state than their
//! server transaction); retransmissions of a refused request get the same
//! 503 and its ACK is absorbed; what finishes accepted work passes;
//! retransmissions of held transactions are absorbed; refreshes are
//! preferred; Retry-After grows with the overload; RFC 7339 `oc` Via
//! parameters for clients that ask.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::auth::{DigestClient, DigestCredentials, Users};
use sipline::endpoint::{Endpoint, EndpointConfig, Output, OverloadConfig, ServerConfig};
use sipline::message::headers::{Challenge, HeaderValue};
use sipline::message::Message;
use sipline::rng::Rng;
use sipline::transport::Transport;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";

fn server_addr() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

fn bob_addr() -> SocketAddr {
    "192.0.2.20:5060".parse().unwrap()
}

/// A caller from outside the domain.
fn carol_addr() -> SocketAddr {
    "198.51.100.7:5060".parse().unwrap()
}

/// The server (guests allowed, so an INVITE from outside is proxied at
/// once), seed fixed, overload control as by default (`D` = 125 ms,
/// stateless refusals).
fn server() -> Endpoint {
    server_with(true)
}

/// [`server`], refusing statelessly or through a server transaction.
fn server_with(stateless: bool) -> Endpoint {
    let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut config = ServerConfig::new(DOMAIN, users);
    config.allow_guests = true;
    let mut overload = OverloadConfig::default();
    overload.stateless = stateless;
    config.overload = Some(overload);
    let mut c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(config);
    c.seed = 7;
    let mut ep = Endpoint::new(c).unwrap();
    ep.add_listener(Transport::Udp, server_addr());
    ep
}

/// Hands `text` to `ep` from `from` at `now`, after it waited `waited`
/// (`None`: through the old, unstamped `handle_datagram`); the datagrams
/// it sends, as (destination, text).
fn deliver(
    ep: &mut Endpoint,
    now: Instant,
    waited: Option<Duration>,
    from: SocketAddr,
    text: &str,
) -> Vec<(SocketAddr, String)> {
    match waited {
        Some(w) => ep.handle_datagram_received(now, now.checked_sub(w).unwrap(), server_addr(), from, text.as_bytes()),
        None => ep.handle_datagram(now, server_addr(), from, text.as_bytes()),
    }
    drain(ep)
}

fn drain(ep: &mut Endpoint) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    while let Some(o) = ep.poll_output() {
        if let Output::Datagram { remote, bytes, .. } = o {
            out.push((remote, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

/// `Some(n ms)`: how long a message waited.
#[allow(clippy::unnecessary_wraps)]
fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

fn register(user: &str, from: SocketAddr, call: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call}-{cseq}\r\n\
         From: <sip:{user}@{DOMAIN}>;tag=r{call}\r\nTo: <sip:{user}@{DOMAIN}>\r\nCall-ID: {call}\r\n\
         CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{from}>\r\nExpires: 3600\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Registers `user` from `from` (401, then the answer), below any
/// threshold.
fn register_user(ep: &mut Endpoint, now: Instant, user: &str, from: SocketAddr) {
    let out = deliver(ep, now, ms(1), from, &register(user, from, "reg-1", 1, ""));
    assert!(out[0].1.starts_with("SIP/2.0 401"), "{}", out[0].1);
    let challenge = header(&out[0].1, "WWW-Authenticate");
    let parsed = Challenge::parse_value(challenge.as_bytes()).unwrap();
    let mut client = DigestClient::new(DigestCredentials::new(user, format!("{user}-pw")));
    let value = client.authorize(&parsed, "REGISTER", &format!("sip:{DOMAIN}"), &mut Rng::new(1)).unwrap();
    let text = register(user, from, "reg-1", 2, &format!("Authorization: {value}\r\n"));
    let out = deliver(ep, now, ms(1), from, &text);
    assert!(out[0].1.starts_with("SIP/2.0 200"), "{}", out[0].1);
}

/// An INVITE from carol (outside the domain) to bob; `via_params` end
/// her Via.
fn invite(branch: &str, via_params: &str) -> String {
    let from = carol_addr();
    format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{branch}{via_params}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.net>;tag=c-{branch}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{from}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// `method` for `branch`'s INVITE (same Call-ID; CANCEL keeps the branch, §9.1).
fn follow_up(method: &str, branch: &str, to_tag: Option<&str>) -> String {
    let from = carol_addr();
    let via_branch =
        if method == "CANCEL" { format!("z9hG4bK-{branch}") } else { format!("z9hG4bK-{branch}-{method}") };
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let cseq = if method == "BYE" { 2 } else { 1 };
    format!(
        "{method} sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={via_branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.net>;tag=c-{branch}\r\nTo: <sip:bob@{DOMAIN}>{to_tag}\r\n\
         Call-ID: call-{branch}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The value of the first `name` header line of `text`.
fn header(text: &str, name: &str) -> String {
    let line = text.split("\r\n").find(|l| {
        l.len() > name.len()
            && l[..name.len()].eq_ignore_ascii_case(name)
            && l[name.len()..].trim_start().starts_with(':')
    });
    let line = line.unwrap_or_else(|| panic!("no {name} in {text}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

fn statuses(out: &[(SocketAddr, String)]) -> Vec<&str> {
    out.iter().map(|(_, t)| t.split("\r\n").next().unwrap_or_default()).collect()
}

fn rejected(ep: &Endpoint) -> u64 {
    ep.overload_stats().expect("serving with overload control").rejected
}

#[test]
fn below_the_threshold_nothing_changes() {
    let t0 = Instant::now();
    // The same inputs, unstamped and stamped just under D (125 ms):
    // byte-identical outputs.
    let mut plain = server();
    let mut stamped = server();
    register_user(&mut plain, t0, "bob", bob_addr());
    register_user(&mut stamped, t0, "bob", bob_addr());
    for (i, branch) in ["a", "b", "c"].into_iter().enumerate() {
        let now = t0 + Duration::from_millis(10 * i as u64);
        let a = deliver(&mut plain, now, None, carol_addr(), &invite(branch, ""));
        let b = deliver(&mut stamped, now, ms(124), carol_addr(), &invite(branch, ""));
        assert_eq!(a, b);
        assert!(b.iter().any(|(to, t)| *to == bob_addr() && t.starts_with("INVITE ")), "{b:?}");
    }
    assert_eq!(rejected(&stamped), 0);
    assert_eq!(plain.tables(), stamped.tables());
}

#[test]
fn a_new_invite_past_the_threshold_gets_one_503_and_no_state() {
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    let before = ep.tables();
    // The first refusal of an overload: past 2·D (250 ms).
    let out = deliver(&mut ep, t0, ms(251), carol_addr(), &invite("x", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"], "{out:?}");
    assert_eq!(out[0].0, carol_addr());
    let retry: u64 = header(&out[0].1, "Retry-After").parse().unwrap();
    assert!((5..10).contains(&retry), "Retry-After {retry}");
    assert!(!out[0].1.contains("oc="), "no RFC 7339 parameters for a client that did not ask");
    // §8.2.6.2: what a response copies, copied; a To tag added.
    let request = invite("x", "");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        assert_eq!(header(&out[0].1, name), header(&request, name), "{name}");
    }
    let tag = to_tag(&out[0].1);
    assert!(!tag.is_empty());
    assert_eq!(rejected(&ep), 1);
    let stats = ep.overload_stats().unwrap();
    assert!(stats.overloaded);
    assert_eq!((stats.stateless, stats.absorbed), (1, 0));
    // No state at all: no transaction, no proxy context, nothing to bob.
    assert_eq!(ep.tables(), before);
    // Its retransmission gets the same 503, byte for byte, however long
    // it waited (§17.2.1: what its transaction would have sent), and no
    // second decision; the ACK is absorbed, answered by nothing.
    let again = deliver(&mut ep, t0 + Duration::from_millis(500), ms(10), carol_addr(), &invite("x", ""));
    assert_eq!(again, out);
    assert_eq!(rejected(&ep), 1);
    let ack = invite("x", "").replace("INVITE sip:", "ACK sip:").replace("1 INVITE", "1 ACK");
    let ack = ack.replacen("To: <sip:bob@example.com>", &format!("To: <sip:bob@example.com>;tag={tag}"), 1);
    assert!(deliver(&mut ep, t0 + Duration::from_millis(600), ms(10), carol_addr(), &ack).is_empty());
    let stats = ep.overload_stats().unwrap();
    assert_eq!((stats.rejected, stats.stateless, stats.absorbed), (1, 1, 2));
    assert_eq!(ep.tables(), before);
    // Another request with the same Call-ID but its own branch is a new
    // request, judged afresh (here: taken, it did not wait).
    let out = deliver(&mut ep, t0 + Duration::from_millis(700), ms(10), carol_addr(), &invite("x2", ""));
    assert!(out.iter().any(|(to, t)| *to == bob_addr() && t.starts_with("INVITE ")), "{out:?}");
}

#[test]
fn stateful_refusal_gets_one_503_and_only_a_transaction() {
    let t0 = Instant::now();
    let mut ep = server_with(false);
    register_user(&mut ep, t0, "bob", bob_addr());
    let before = ep.tables();
    let out = deliver(&mut ep, t0, ms(251), carol_addr(), &invite("x", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"], "{out:?}");
    assert_eq!(out[0].0, carol_addr());
    let retry: u64 = header(&out[0].1, "Retry-After").parse().unwrap();
    assert!((5..10).contains(&retry), "Retry-After {retry}");
    assert!(!out[0].1.contains("oc="), "no RFC 7339 parameters for a client that did not ask");
    assert_eq!(rejected(&ep), 1);
    assert!(ep.overload_stats().unwrap().overloaded);
    // Nothing went to bob; one server transaction (to absorb the
    // retransmissions), no proxy context, no client transaction.
    let after = ep.tables();
    assert_eq!(after.server_transactions, before.server_transactions + 1);
    assert_eq!((after.client_transactions, after.proxied, after.proxy_index), (0, 0, 0));
    // Its retransmission gets the 503 again from the transaction, not a
    // second decision; the ACK is absorbed, answered by nothing.
    let again = deliver(&mut ep, t0 + Duration::from_millis(500), ms(600), carol_addr(), &invite("x", ""));
    assert_eq!(statuses(&again), ["SIP/2.0 503 Service Unavailable"]);
    assert_eq!(rejected(&ep), 1);
    let ack = invite("x", "").replace("INVITE sip:", "ACK sip:").replace("1 INVITE", "1 ACK");
    let ack =
        ack.replacen("To: <sip:bob@example.com>", &format!("To: <sip:bob@example.com>;tag={}", to_tag(&out[0].1)), 1);
    assert!(deliver(&mut ep, t0 + Duration::from_millis(600), ms(600), carol_addr(), &ack).is_empty());
    // Then it goes, with nothing left behind (Timer I, T4 on UDP).
    let later = t0 + Duration::from_secs(40);
    ep.handle_timeout(later);
    drain(&mut ep);
    let end = ep.tables();
    assert_eq!((end.server_transactions, end.client_transactions, end.proxied), (0, 0, 0));
}

fn to_tag(response: &str) -> String {
    let m = Message::parse(response.as_bytes()).unwrap();
    m.to().unwrap().unwrap().tag().unwrap().to_owned()
}

#[test]
fn what_finishes_accepted_work_passes_and_held_retransmissions_are_absorbed() {
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    // Accepted below the threshold: proxied to bob.
    let out = deliver(&mut ep, t0, ms(10), carol_addr(), &invite("held", ""));
    let forwarded =
        out.iter().find(|(to, t)| *to == bob_addr() && t.starts_with("INVITE ")).expect("forwarded").1.clone();
    // Past every threshold (the highest is 3·D = 375 ms) from here on,
    // and under the 2·T1 at which request copies go unread.
    let late = ms(900);
    let t = t0 + Duration::from_millis(300);
    // A new INVITE is refused, so the server is overloaded...
    assert_eq!(
        statuses(&deliver(&mut ep, t, late, carol_addr(), &invite("new", ""))),
        ["SIP/2.0 503 Service Unavailable"]
    );
    // ...but the held INVITE's retransmission is absorbed by its
    // transaction (at most its 100 Trying again), never refused.
    let again = deliver(&mut ep, t, late, carol_addr(), &invite("held", ""));
    assert!(statuses(&again).iter().all(|s| s.starts_with("SIP/2.0 100")), "{again:?}");
    assert_eq!(rejected(&ep), 1);
    // bob's 180 is relayed to carol.
    let ringing = forwarded.replacen("INVITE sip:", "SIP/2.0 180 Ringing\r\nX-Old: ", 1).replacen(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=bob-1",
        1,
    );
    let relayed = deliver(&mut ep, t, late, bob_addr(), &ringing);
    assert!(relayed.iter().any(|(to, t)| *to == carol_addr() && t.starts_with("SIP/2.0 180")), "{relayed:?}");
    // A CANCEL is answered 200 and goes on to bob.
    let cancel = deliver(&mut ep, t, late, carol_addr(), &follow_up("CANCEL", "held", None));
    assert!(statuses(&cancel).contains(&"SIP/2.0 200 OK"), "{cancel:?}");
    assert!(cancel.iter().any(|(to, t)| *to == bob_addr() && t.starts_with("CANCEL ")), "{cancel:?}");
    // An in-dialog BYE is not refused for overload (whatever else it gets).
    let bye = deliver(&mut ep, t, late, carol_addr(), &follow_up("BYE", "other", Some("x1")));
    assert!(statuses(&bye).iter().all(|s| !s.starts_with("SIP/2.0 503")), "{bye:?}");
    // An ACK is never answered (here it follows its route to bob).
    let ack = deliver(&mut ep, t, late, carol_addr(), &follow_up("ACK", "other", Some("x1")));
    assert!(ack.iter().all(|(to, _)| *to != carol_addr()), "{ack:?}");
    assert_eq!(rejected(&ep), 1);
}

#[test]
fn refreshes_pass_longest() {
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    let alice: SocketAddr = "192.0.2.30:5060".parse().unwrap();
    let first = |out: Vec<(SocketAddr, String)>| out[0].1.split("\r\n").next().unwrap().to_owned();
    // An overload begins (the thresholds below hold during one).
    let out = deliver(&mut ep, t0, ms(400), carol_addr(), &invite("start", ""));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    // D = 125 ms. Past D: a REGISTER (refresh or not) still goes on to
    // its challenge.
    let out = deliver(&mut ep, t0, ms(150), bob_addr(), &register("bob", bob_addr(), "ref-1", 1, ""));
    assert!(first(out).starts_with("SIP/2.0 401"));
    let out = deliver(&mut ep, t0, ms(150), alice, &register("alice", alice, "new-1", 1, ""));
    assert!(first(out).starts_with("SIP/2.0 401"));
    // Past 1.25·D: bob's refresh still, alice's new registration no more.
    let out = deliver(&mut ep, t0, ms(170), bob_addr(), &register("bob", bob_addr(), "ref-2", 1, ""));
    assert!(first(out).starts_with("SIP/2.0 401"));
    let out = deliver(&mut ep, t0, ms(170), alice, &register("alice", alice, "new-2", 1, ""));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    // Past 1.5·D: the refresh too; but an answer to a challenge (its
    // first half already paid for) still goes on to the registrar...
    let out = deliver(&mut ep, t0, ms(200), bob_addr(), &register("bob", bob_addr(), "ref-3", 1, ""));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    let answer = register("alice", alice, "new-3", 2, "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"x\", uri=\"sip:example.com\", response=\"00000000000000000000000000000000\"\r\n");
    let out = deliver(&mut ep, t0, ms(370), alice, &answer);
    assert!(!first(out).starts_with("SIP/2.0 503"));
    let proxy_answer = answer.replace("new-3", "new-5").replace("Authorization:", "Proxy-Authorization:");
    let out = deliver(&mut ep, t0, ms(370), alice, &proxy_answer);
    assert!(!first(out).starts_with("SIP/2.0 503"));
    // ...up to 3·D.
    let out = deliver(&mut ep, t0, ms(380), alice, &answer.replace("new-3", "new-4"));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    assert_eq!(rejected(&ep), 4);
}

#[test]
fn refreshes_pass_longest_when_refused_statefully_too() {
    let t0 = Instant::now();
    let mut ep = server_with(false);
    register_user(&mut ep, t0, "bob", bob_addr());
    let alice: SocketAddr = "192.0.2.30:5060".parse().unwrap();
    let first = |out: Vec<(SocketAddr, String)>| out[0].1.split("\r\n").next().unwrap().to_owned();
    let out = deliver(&mut ep, t0, ms(400), carol_addr(), &invite("start", ""));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    let out = deliver(&mut ep, t0, ms(170), bob_addr(), &register("bob", bob_addr(), "ref-2", 1, ""));
    assert!(first(out).starts_with("SIP/2.0 401"));
    let out = deliver(&mut ep, t0, ms(170), alice, &register("alice", alice, "new-2", 1, ""));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    let out = deliver(&mut ep, t0, ms(200), bob_addr(), &register("bob", bob_addr(), "ref-3", 1, ""));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    let answer = register("alice", alice, "new-3", 2, "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"x\", uri=\"sip:example.com\", response=\"00000000000000000000000000000000\"\r\n");
    let out = deliver(&mut ep, t0, ms(370), alice, &answer);
    assert!(!first(out).starts_with("SIP/2.0 503"));
    let out = deliver(&mut ep, t0, ms(380), alice, &answer.replace("new-3", "new-4"));
    assert_eq!(first(out), "SIP/2.0 503 Service Unavailable");
    let stats = ep.overload_stats().unwrap();
    assert_eq!((stats.rejected, stats.stateless, stats.screened), (4, 0, 0));
}

#[test]
fn a_burst_passes_and_the_first_refusal_waits_for_twice_d() {
    // Outside an overload the thresholds are doubled: a new INVITE that
    // waited 200 ms (past D = 125 ms, under 2·D) is taken...
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    let taken = |out: &[(SocketAddr, String)]| out.iter().any(|(to, t)| *to == bob_addr() && t.starts_with("INVITE "));
    let out = deliver(&mut ep, t0, ms(200), carol_addr(), &invite("b1", ""));
    assert!(taken(&out), "{out:?}");
    // ...one past 2·D is refused, and the overload begins...
    let out = deliver(&mut ep, t0, ms(260), carol_addr(), &invite("b2", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"]);
    assert!(ep.overload_stats().unwrap().overloaded);
    // ...during which D holds: 130 ms is too long.
    let t = t0 + Duration::from_millis(500);
    let out = deliver(&mut ep, t, ms(130), carol_addr(), &invite("b3", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"]);
    // A validity (1 s) without a refusal ends it: 200 ms passes again.
    let t = t + Duration::from_millis(1100);
    let out = deliver(&mut ep, t, ms(200), carol_addr(), &invite("b4", ""));
    assert!(taken(&out), "{out:?}");
    assert!(!ep.overload_stats().unwrap().overloaded);
    // The same with refusals through server transactions.
    let mut ep = server_with(false);
    register_user(&mut ep, t0, "bob", bob_addr());
    assert!(taken(&deliver(&mut ep, t0, ms(200), carol_addr(), &invite("s1", ""))));
    let out = deliver(&mut ep, t0, ms(260), carol_addr(), &invite("s2", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"]);
    let out = deliver(&mut ep, t0, ms(130), carol_addr(), &invite("s3", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"]);
    assert_eq!(rejected(&ep), 2);
}

#[test]
fn unstamped_messages_and_off_mean_no_refusal() {
    let t0 = Instant::now();
    // The old entry point knows no delay: never refused.
    let mut ep = server();
    let out = deliver(&mut ep, t0, None, carol_addr(), &invite("a", ""));
    assert!(!statuses(&out).contains(&"SIP/2.0 503 Service Unavailable"));
    // `overload: None`: stamps are ignored.
    let users = Users::from_passwords([("bob", "bob-pw")]);
    let mut config = ServerConfig::new(DOMAIN, users);
    config.overload = None;
    let mut off = Endpoint::new(EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(config)).unwrap();
    off.add_listener(Transport::Udp, server_addr());
    let out = deliver(&mut off, t0, ms(5000), carol_addr(), &invite("b", ""));
    assert!(!statuses(&out).contains(&"SIP/2.0 503 Service Unavailable"), "{out:?}");
    assert!(off.overload_stats().is_none());
    assert_eq!(off.tables().proxied, 0);
}

/// The RFC 7339 parameters of the top Via of `response`, if any:
/// (oc, oc-algo, oc-validity, oc-seq).
fn oc_params(response: &str) -> Option<(String, String, String, String)> {
    let m = Message::parse(response.as_bytes()).unwrap();
    let via = m.via().unwrap().unwrap();
    let p = via.params();
    let v = p.get("oc-seq")?;
    Some((
        p.value("oc")?.to_owned(),
        p.value("oc-algo")?.to_owned(),
        p.value("oc-validity")?.to_owned(),
        v.value()?.to_owned(),
    ))
}

#[test]
fn rfc7339_oc_parameters_for_clients_that_ask() {
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    // Not overloaded: an `oc` client's response carries nothing.
    let out = deliver(&mut ep, t0, ms(10), carol_addr(), &invite("calm", ";oc"));
    assert!(out.iter().all(|(_, t)| !t.contains("oc=")), "{out:?}");
    // Overloaded: the 503 carries the loss algorithm's feedback in the
    // client's Via (which it parses back).
    let t1 = t0 + Duration::from_millis(100);
    let out = deliver(&mut ep, t1, ms(400), carol_addr(), &invite("busy", ";oc;oc-algo=\"loss,A\""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"]);
    let (oc, algo, validity, seq) = oc_params(&out[0].1).unwrap_or_else(|| panic!("oc parameters: {}", out[0].1));
    let oc: u8 = oc.parse().unwrap();
    assert!((1..=100).contains(&oc), "oc={oc}");
    assert_eq!(algo, "loss");
    assert!(out[0].1.contains(";oc-algo=\"loss\";"), "quoted (§9): {}", out[0].1);
    assert_eq!(validity, "1000");
    let (whole, frac) = seq.split_once('.').unwrap();
    assert!(
        whole.len() <= 12 && frac.len() == 5 && (whole.to_owned() + frac).bytes().all(|b| b.is_ascii_digit()),
        "{seq}"
    );
    assert!(out[0].1.contains(";branch=z9hG4bK-busy;oc="), "set in the client's own Via: {}", out[0].1);
    assert_eq!(out[0].1.matches("oc-algo").count(), 1, "the client's list replaced by the choice");
    // A client without `oc` gets the plain 503.
    let out = deliver(&mut ep, t1, ms(400), carol_addr(), &invite("plain", ""));
    assert!(oc_params(&out[0].1).is_none());
    // A second value later has a larger oc-seq when the value changes.
    let t2 = t1 + Duration::from_millis(1500);
    let out = deliver(&mut ep, t2, ms(400), carol_addr(), &invite("busy2", ";oc"));
    let (_, _, _, seq2) = oc_params(&out[0].1).unwrap_or_else(|| panic!("oc parameters: {out:?}"));
    let num = |s: &str| s.replace('.', "").parse::<u64>().unwrap();
    assert!(num(&seq2) >= num(&seq), "{seq2} after {seq}");
    // After the overload (a validity without refusals), oc clients are
    // told to stop: oc=0, oc-validity=0.
    let t3 = t2 + Duration::from_millis(1100);
    let out = deliver(
        &mut ep,
        t3,
        ms(10),
        bob_addr(),
        &register("bob", bob_addr(), "ref-9", 1, "").replace(";branch=", ";oc;branch="),
    );
    assert!(!ep.overload_stats().unwrap().overloaded);
    let (oc, _, validity, _) = oc_params(&out[0].1).expect("the end is told");
    assert_eq!((oc.as_str(), validity.as_str()), ("0", "0"));
    // And later nothing again.
    let t4 = t3 + Duration::from_millis(1100);
    let out = deliver(
        &mut ep,
        t4,
        ms(10),
        bob_addr(),
        &register("bob", bob_addr(), "ref-10", 1, "").replace(";branch=", ";oc;branch="),
    );
    assert!(oc_params(&out[0].1).is_none());
}

#[test]
fn request_copies_that_waited_two_t1_go_unread_and_acks_never_do() {
    // §17.1.1.2: a UDP client sends its request again after T1 (500 ms),
    // then 2·T1…; a copy that waited a whole second has a newer one queued
    // behind it. Deep in an overload such copies are dropped before any
    // parse: no answer, no state.
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    let before = ep.tables();
    let out = deliver(&mut ep, t0, ms(1000), carol_addr(), &invite("stale", ""));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(ep.tables(), before);
    assert_eq!(ep.overload_stats().map(|s| (s.dropped, s.rejected)), Some((1, 0)));
    // Just under 2·T1 it is read (and refused with a 503: past D).
    let out = deliver(&mut ep, t0, ms(999), carol_addr(), &invite("late", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"], "{out:?}");
    // An ACK that waited as long is still read (here one with a branch of
    // its own, as for a 2xx: relayed on to bob).
    let ack = follow_up("ACK", "late", Some(&to_tag(&out[0].1)));
    let out = deliver(&mut ep, t0 + Duration::from_millis(600), ms(1500), carol_addr(), &ack);
    assert!(out.iter().any(|(to, t)| *to == bob_addr() && t.starts_with("ACK ")), "{out:?}");
    assert_eq!(ep.overload_stats().map(|s| s.dropped), Some(1));
    // Unstamped datagrams are never dropped (this one is judged by the
    // smoothed delay: a 503).
    let out = deliver(&mut ep, t0 + Duration::from_millis(700), None, carol_addr(), &invite("plain", ""));
    assert!(!out.is_empty());
    assert_eq!(ep.overload_stats().map(|s| s.dropped), Some(1));
}

/// Every header line of `text` named `name` (or its compact form `short`),
/// values trimmed.
fn header_lines(text: &str, name: &str, short: &str) -> Vec<String> {
    text.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(short)).then(|| v.trim().to_owned())
        })
        .collect()
}

#[test]
fn a_stateless_refusal_answers_as_the_stateful_one_would() {
    // Compact header names, a Via folded over two lines and a second Via
    // value, `rport` from behind a NAT (§7.3.3, §18.2.1, RFC 3581): the
    // glance copies what a response copies and stamps the top Via as the
    // transport does, and the 503 goes where the stateful one goes.
    let nat: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let request = format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.5:5062;rport\r\n ;branch=z9hG4bK-nat1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-2\r\n\
         Max-Forwards: 70\r\nf: <sip:carol@example.net>;tag=n1\r\nt: <sip:bob@{DOMAIN}>\r\ni: nat-call-1\r\n\
         CSeq: 7 INVITE\r\nl: 0\r\n\r\n"
    );
    let t0 = Instant::now();
    let mut answers = Vec::new();
    for stateless in [true, false] {
        let mut ep = server_with(stateless);
        let out = deliver(&mut ep, t0, ms(300), nat, &request);
        assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"], "{out:?}");
        assert_eq!(out[0].0, nat, "to the address and port it came from");
        assert_eq!(ep.overload_stats().unwrap().stateless, u64::from(stateless));
        answers.push(out[0].1.clone());
    }
    let vias = |t: &str| header_lines(t, "Via", "v");
    assert_eq!(vias(&answers[0]), vias(&answers[1]));
    let m = Message::parse(answers[0].as_bytes()).unwrap();
    let top = m.via().unwrap().unwrap();
    assert_eq!((top.rport(), top.received()), (Some(Some(40000)), Some(nat.ip())));
    assert_eq!(m.vias().count(), 2);
    for (name, short) in [("From", "f"), ("Call-ID", "i"), ("CSeq", "")] {
        assert_eq!(header_lines(&answers[0], name, short), header_lines(&answers[1], name, short), "{name}");
    }
    assert_eq!(m.call_id().unwrap().unwrap().as_str(), "nat-call-1");
    assert!(m.to().unwrap().unwrap().tag().is_some());
}

#[test]
fn retry_after_grows_with_the_share_refused() {
    let t0 = Instant::now();
    let mut ep = server();
    let retry = |out: &[(SocketAddr, String)]| header(&out[0].1, "Retry-After").parse::<u64>().unwrap();
    // The first refusals of an overload get the least: 5–9 s.
    let out = deliver(&mut ep, t0, ms(400), carol_addr(), &invite("r0", ""));
    assert!((5..10).contains(&retry(&out)), "{}", retry(&out));
    // A second in which nine new requests in ten are refused...
    for i in 1..9 {
        let t = t0 + Duration::from_millis(100 * i);
        deliver(&mut ep, t, ms(400), carol_addr(), &invite(&format!("r{i}"), ""));
    }
    deliver(&mut ep, t0 + Duration::from_millis(950), ms(10), carol_addr(), &invite("taken", ""));
    assert_eq!(rejected(&ep), 9);
    // ...and the next ones are told to stay away ten times as long:
    // b = 5 s / (1 − 0.9) = 50 s, drawn from [50, 100).
    let out = deliver(&mut ep, t0 + Duration::from_millis(1100), ms(400), carol_addr(), &invite("r9", ""));
    assert!((50..100).contains(&retry(&out)), "{}", retry(&out));
    // The stateful refusal follows the same rule.
    let mut ep = server_with(false);
    for i in 0..9 {
        deliver(&mut ep, t0 + Duration::from_millis(100 * i), ms(400), carol_addr(), &invite(&format!("s{i}"), ""));
    }
    deliver(&mut ep, t0 + Duration::from_millis(950), ms(10), carol_addr(), &invite("taken", ""));
    let out = deliver(&mut ep, t0 + Duration::from_millis(1100), ms(400), carol_addr(), &invite("s9", ""));
    assert!((50..100).contains(&retry(&out)), "{}", retry(&out));
}

#[test]
fn refusals_are_remembered_for_64_t1_only() {
    let t0 = Instant::now();
    let mut ep = server();
    register_user(&mut ep, t0, "bob", bob_addr());
    let out = deliver(&mut ep, t0, ms(400), carol_addr(), &invite("once", ""));
    assert_eq!(statuses(&out), ["SIP/2.0 503 Service Unavailable"]);
    // Within 64·T1 (32 s) a copy gets the 503 again...
    let t = t0 + Duration::from_secs(31);
    assert_eq!(deliver(&mut ep, t, ms(10), carol_addr(), &invite("once", "")), out);
    // ...after it, the request is new again to a stateless server (§8.2.7),
    // judged afresh: here taken and proxied.
    let t = t0 + Duration::from_secs(33);
    let again = deliver(&mut ep, t, ms(10), carol_addr(), &invite("once", ""));
    assert!(again.iter().any(|(to, t)| *to == bob_addr() && t.starts_with("INVITE ")), "{again:?}");
    assert_eq!(ep.overload_stats().map(|s| (s.rejected, s.absorbed)), Some((1, 1)));
}
