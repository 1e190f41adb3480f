//! Issue 22: the metrics of the server role (`EndpointConfig::metrics`)
//! move with the events they count — a REGISTER challenged then accepted,
//! an unregistration, retransmissions both ways, a transaction timing out,
//! failed digest answers leading to a ban, refusals for overload, stream
//! connections — and the gauges come back down when what they count ends.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
// Counts are whole numbers, exact in an f64: compared exactly.
#![allow(clippy::disallowed_methods, clippy::float_cmp)]

use sipline::auth::{DigestClient, DigestCredentials, Users};
use sipline::endpoint::{Endpoint, EndpointConfig, Output, OverloadConfig, ServerConfig, Worker};
use sipline::message::headers::{Challenge, HeaderValue};
use sipline::metrics::{Metrics, Snapshot};
use sipline::rng::Rng;
use sipline::transport::Transport;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";

fn server_addr() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

fn bob_addr() -> SocketAddr {
    "192.0.2.20:5060".parse().unwrap()
}

fn carol_addr() -> SocketAddr {
    "198.51.100.7:5060".parse().unwrap()
}

/// The server's settings: guests allowed (an INVITE from outside is
/// proxied at once), a ban after 2 failed answers, overload control as by
/// default (`D` = 125 ms) refusing statelessly or not.
fn config(stateless: bool) -> ServerConfig {
    let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut config = ServerConfig::new(DOMAIN, users);
    config.allow_guests = true;
    config.bans.max_failures = 2;
    let mut overload = OverloadConfig::default();
    overload.stateless = stateless;
    config.overload = Some(overload);
    config
}

/// A server endpoint counting into `metrics`, as worker `worker` if any.
fn server(metrics: &Arc<Metrics>, server: ServerConfig, worker: Option<Worker>) -> Endpoint {
    let mut c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(server);
    c.seed = 7;
    c.worker = worker;
    c.metrics = Some(Arc::clone(metrics));
    let mut ep = Endpoint::new(c).unwrap();
    ep.add_listener(Transport::Udp, server_addr());
    ep
}

/// Hands `text` to `ep` from `from`, stamped as having waited `waited`;
/// the datagrams it sends, as text.
fn deliver(ep: &mut Endpoint, now: Instant, waited: Duration, from: SocketAddr, text: &str) -> Vec<String> {
    ep.handle_datagram_received(now, now.checked_sub(waited).unwrap(), server_addr(), from, text.as_bytes());
    drain(ep)
}

fn drain(ep: &mut Endpoint) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(o) = ep.poll_output() {
        if let Output::Datagram { bytes, .. } = o {
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// Runs `ep`'s timers up to `until`, one due time after the other.
fn run_until(ep: &mut Endpoint, until: Instant) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match ep.poll_timeout() {
            Some(t) if t <= until => {
                ep.handle_timeout(t);
                out.extend(drain(ep));
            }
            _ => break,
        }
    }
    ep.handle_timeout(until);
    out.extend(drain(ep));
    out
}

fn register(user: &str, from: SocketAddr, call: &str, cseq: u32, expires: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call}-{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r{call}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{from}>\r\nExpires: {expires}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// The Authorization header line answering the challenge in `response`.
fn answer(response: &str, user: &str, password: &str) -> String {
    let challenge = header(response, "WWW-Authenticate");
    let parsed = Challenge::parse_value(challenge.as_bytes()).unwrap();
    let mut client = DigestClient::new(DigestCredentials::new(user, password));
    let value = client.authorize(&parsed, "REGISTER", &format!("sip:{DOMAIN}"), &mut Rng::new(1)).unwrap();
    format!("Authorization: {value}\r\n")
}

/// The value of the first `name` header line of `text`.
fn header(text: &str, name: &str) -> String {
    let line = text.split("\r\n").find(|l| l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name));
    let line = line.unwrap_or_else(|| panic!("no {name} in {text}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

fn status(text: &str) -> &str {
    text.split("\r\n").next().unwrap_or_default()
}

/// An INVITE from carol (outside the domain) to bob.
fn invite(branch: &str) -> String {
    let from = carol_addr();
    format!(
        "INVITE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@example.net>;tag=c-{branch}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{from}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A value that must be there.
fn value(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.value(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in {s:#?}"))
}

fn registrations(s: &Snapshot, result: &str) -> f64 {
    value(s, "sipline_registrations_total", &[("result", result)])
}

fn live(s: &Snapshot, role: &str, kind: &str, state: &str) -> f64 {
    value(s, "sipline_transactions", &[("role", role), ("kind", kind), ("state", state)])
}

const QUICK: Duration = Duration::from_millis(1);

/// Registers `user` from `from` (401, then the answer).
fn register_user(ep: &mut Endpoint, now: Instant, user: &str, from: SocketAddr) {
    let out = deliver(ep, now, QUICK, from, &register(user, from, "reg-1", 1, 3600, ""));
    assert_eq!(status(&out[0]), "SIP/2.0 401 Unauthorized");
    let auth = answer(&out[0], user, &format!("{user}-pw"));
    let out = deliver(ep, now, QUICK, from, &register(user, from, "reg-1", 2, 3600, &auth));
    assert_eq!(status(&out[0]), "SIP/2.0 200 OK");
}

#[test]
fn a_register_challenged_then_accepted_then_removed() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::new(1));
    let mut ep = server(&metrics, config(true), None);
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_registrar_bindings", &[]), 0.0);
    assert_eq!(s.total("sipline_requests_received_total"), 0.0);

    register_user(&mut ep, t0, "bob", bob_addr());
    let s = metrics.snapshot();
    assert_eq!(registrations(&s, "challenged"), 1.0);
    assert_eq!(registrations(&s, "ok"), 1.0);
    assert_eq!(registrations(&s, "rejected"), 0.0);
    assert_eq!(value(&s, "sipline_auth_decisions_total", &[("result", "challenged")]), 1.0);
    assert_eq!(value(&s, "sipline_auth_decisions_total", &[("result", "authenticated")]), 1.0);
    assert_eq!(value(&s, "sipline_registrar_bindings", &[]), 1.0);
    assert_eq!(value(&s, "sipline_registrar_aors", &[]), 1.0);
    assert_eq!(value(&s, "sipline_requests_received_total", &[("method", "REGISTER")]), 2.0);
    assert_eq!(value(&s, "sipline_responses_sent_total", &[("class", "4xx")]), 1.0);
    assert_eq!(value(&s, "sipline_responses_sent_total", &[("class", "2xx")]), 1.0);
    let created = [("role", "server"), ("kind", "non_invite")];
    assert_eq!(value(&s, "sipline_transactions_created_total", &created), 2.0);
    // Both answered over UDP: each lingers in Completed for Timer J
    // (§17.2.2), the worker's only incoming work.
    assert_eq!(live(&s, "server", "non_invite", "completed"), 2.0);
    assert_eq!(value(&s, "sipline_worker_server_transactions", &[("worker", "0")]), 2.0);
    assert_eq!(value(&s, "sipline_auth_failures_total", &[]), 0.0);

    // Timer J (64·T1) ends them.
    run_until(&mut ep, t0 + Duration::from_secs(33));
    let s = metrics.snapshot();
    assert_eq!(live(&s, "server", "non_invite", "completed"), 0.0);
    assert_eq!(s.total("sipline_transactions"), 0.0);
    assert_eq!(value(&s, "sipline_worker_server_transactions", &[("worker", "0")]), 0.0);
    assert_eq!(s.total("sipline_transaction_timeouts_total"), 0.0, "Timer J is no timeout");

    // Unregistering (Expires: 0) removes the binding.
    let now = t0 + Duration::from_secs(34);
    let out = deliver(&mut ep, now, QUICK, bob_addr(), &register("bob", bob_addr(), "reg-2", 1, 0, ""));
    let auth = answer(&out[0], "bob", "bob-pw");
    let out = deliver(&mut ep, now, QUICK, bob_addr(), &register("bob", bob_addr(), "reg-2", 2, 0, &auth));
    assert_eq!(status(&out[0]), "SIP/2.0 200 OK");
    let s = metrics.snapshot();
    assert_eq!(registrations(&s, "unregistered"), 1.0);
    assert_eq!(registrations(&s, "challenged"), 2.0);
    assert_eq!(registrations(&s, "ok"), 1.0);
    assert_eq!(value(&s, "sipline_registrar_bindings", &[]), 0.0);
}

#[test]
fn retransmissions_both_ways_and_a_timeout() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::new(1));
    let mut ep = server(&metrics, config(true), None);
    register_user(&mut ep, t0, "bob", bob_addr());
    // A copy of the last REGISTER: absorbed by its transaction, which
    // sends its 200 again (§17.2.2).
    let auth = {
        let out = deliver(&mut ep, t0, QUICK, bob_addr(), &register("bob", bob_addr(), "reg-9", 1, 3600, ""));
        answer(&out[0], "bob", "bob-pw")
    };
    let accepted = register("bob", bob_addr(), "reg-9", 2, 3600, &auth);
    assert_eq!(status(&deliver(&mut ep, t0, QUICK, bob_addr(), &accepted)[0]), "SIP/2.0 200 OK");
    let s = metrics.snapshot();
    let before = value(&s, "sipline_retransmissions_total", &[("direction", "received")]);
    let sent_before = value(&s, "sipline_retransmissions_total", &[("direction", "sent")]);
    let again = deliver(&mut ep, t0 + QUICK, QUICK, bob_addr(), &accepted);
    assert_eq!(status(&again[0]), "SIP/2.0 200 OK");
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_retransmissions_total", &[("direction", "received")]), before + 1.0);
    assert_eq!(value(&s, "sipline_retransmissions_total", &[("direction", "sent")]), sent_before + 1.0);
    assert_eq!(registrations(&s, "ok"), 2.0, "a copy is no second registration");
    assert_eq!(value(&s, "sipline_requests_received_total", &[("method", "REGISTER")]), 5.0);

    // carol calls bob, who never answers: the proxied INVITE goes again
    // at T1 (timer A, §17.1.1.2), then times out (timer B, 64·T1).
    let out = deliver(&mut ep, t0, QUICK, carol_addr(), &invite("x"));
    assert!(out.iter().any(|t| t.starts_with("INVITE sip:bob@")), "{out:?}");
    let s = metrics.snapshot();
    assert_eq!(live(&s, "client", "invite", "calling"), 1.0);
    assert_eq!(live(&s, "server", "invite", "proceeding"), 1.0);
    let sent = value(&s, "sipline_retransmissions_total", &[("direction", "sent")]);
    let out = run_until(&mut ep, t0 + Duration::from_millis(600));
    assert_eq!(out.iter().filter(|t| t.starts_with("INVITE sip:bob@")).count(), 1, "{out:?}");
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_retransmissions_total", &[("direction", "sent")]), sent + 1.0);
    // The INVITE's 100 Trying went at 200 ms (§17.2.1), not again.
    assert_eq!(value(&s, "sipline_responses_sent_total", &[("class", "1xx")]), 1.0, "100 Trying");
    assert_eq!(value(&s, "sipline_transaction_timeouts_total", &[("role", "client"), ("kind", "invite")]), 0.0);
    let out = run_until(&mut ep, t0 + Duration::from_secs(33));
    assert!(out.iter().any(|t| t.starts_with("SIP/2.0 408")), "carol hears 408: {out:?}");
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_transaction_timeouts_total", &[("role", "client"), ("kind", "invite")]), 1.0);
    assert_eq!(live(&s, "client", "invite", "calling"), 0.0);
    let created = [("role", "client"), ("kind", "invite")];
    assert_eq!(value(&s, "sipline_transactions_created_total", &created), 1.0);
}

#[test]
fn failed_answers_lead_to_a_ban_and_banned_refusals() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::new(1));
    let mut ep = server(&metrics, config(true), None);
    let mut refused = Vec::new();
    for (i, password) in ["guess-1", "guess-2", "guess-3"].into_iter().enumerate() {
        let call = format!("g{i}");
        let out = deliver(&mut ep, t0, QUICK, carol_addr(), &register("bob", carol_addr(), &call, 1, 3600, ""));
        assert_eq!(status(&out[0]), "SIP/2.0 401 Unauthorized");
        let auth = answer(&out[0], "bob", password);
        let out = deliver(&mut ep, t0, QUICK, carol_addr(), &register("bob", carol_addr(), &call, 2, 3600, &auth));
        refused.push(status(&out[0]).to_owned());
    }
    // Two failures ban the username and the source; the third answer is
    // refused unread.
    assert_eq!(refused, ["SIP/2.0 401 Unauthorized", "SIP/2.0 401 Unauthorized", "SIP/2.0 403 Forbidden"]);
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_auth_failures_total", &[]), 2.0);
    assert_eq!(value(&s, "sipline_auth_bans_total", &[("kind", "user")]), 1.0);
    assert_eq!(value(&s, "sipline_auth_bans_total", &[("kind", "source")]), 1.0);
    assert_eq!(value(&s, "sipline_auth_banned_refusals_total", &[]), 1.0);
    assert_eq!(value(&s, "sipline_auth_decisions_total", &[("result", "forbidden")]), 1.0);
    assert_eq!(registrations(&s, "challenged"), 5.0);
    assert_eq!(registrations(&s, "rejected"), 1.0);
    assert_eq!(registrations(&s, "ok"), 0.0);
    assert_eq!(value(&s, "sipline_registrar_bindings", &[]), 0.0);
}

#[test]
fn overload_refusals_stateless_and_stateful() {
    for (stateless, how) in [(true, "stateless"), (false, "stateful")] {
        let t0 = Instant::now();
        let metrics = Arc::new(Metrics::new(1));
        let mut ep = server(&metrics, config(stateless), None);
        register_user(&mut ep, t0, "bob", bob_addr());
        let s = metrics.snapshot();
        assert_eq!(s.total("sipline_overload_rejections_total"), 0.0);
        assert_eq!(value(&s, "sipline_worker_queue_delay_seconds", &[("worker", "0")]), 0.001);
        // Past 2·D (250 ms) of queueing: one 503.
        let out = deliver(&mut ep, t0, Duration::from_millis(251), carol_addr(), &invite("x"));
        assert_eq!(out.iter().map(|t| status(t)).collect::<Vec<_>>(), ["SIP/2.0 503 Service Unavailable"]);
        let s = metrics.snapshot();
        assert_eq!(value(&s, "sipline_overload_rejections_total", &[("how", how)]), 1.0, "{how}");
        assert_eq!(s.total("sipline_overload_rejections_total"), 1.0, "{how}");
        assert_eq!(value(&s, "sipline_responses_sent_total", &[("class", "5xx")]), 1.0, "{how}");
        let delay = value(&s, "sipline_worker_queue_delay_seconds", &[("worker", "0")]);
        assert!(delay > 0.05, "{how}: the smoothed delay rose: {delay}");
        // A copy that waited past 2·T1 is dropped unread.
        assert!(deliver(&mut ep, t0, Duration::from_millis(1001), carol_addr(), &invite("y")).is_empty());
        assert_eq!(value(&metrics.snapshot(), "sipline_overload_dropped_total", &[]), 1.0, "{how}");
        // A quiet spell (4·D without a stamped datagram): the published
        // delay goes back to 0 at the next timer tick.
        run_until(&mut ep, t0 + Duration::from_secs(2));
        assert_eq!(value(&metrics.snapshot(), "sipline_worker_queue_delay_seconds", &[("worker", "0")]), 0.0);
    }
}

#[test]
fn stream_connections_by_transport() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::new(1));
    let mut ep = server(&metrics, config(true), None);
    let conns = |m: &Metrics, t: &str| value(&m.snapshot(), "sipline_connections", &[("transport", t)]);
    let a = ep.handle_accepted(t0, Transport::Tcp, bob_addr()).expect("accepted");
    let _b = ep.handle_accepted(t0, Transport::Tcp, carol_addr()).expect("accepted");
    drain(&mut ep);
    assert_eq!(conns(&metrics, "tcp"), 2.0);
    assert_eq!(conns(&metrics, "tls"), 0.0);
    ep.handle_closed(t0, a);
    drain(&mut ep);
    assert_eq!(conns(&metrics, "tcp"), 1.0);
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_connections_opened_total", &[("transport", "tcp")]), 2.0);
    // Shutting down closes the rest.
    ep.shutdown(t0);
    run_until(&mut ep, t0 + Duration::from_secs(40));
    assert_eq!(conns(&metrics, "tcp"), 0.0);
}

#[test]
fn workers_count_into_their_own_slots_and_the_snapshot_adds_them_up() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::new(2));
    let shared = config(true);
    let mut w0 = server(&metrics, shared.clone(), Some(Worker::new(0, 2)));
    let mut w1 = server(&metrics, shared, Some(Worker::new(1, 2)));
    register_user(&mut w0, t0, "bob", bob_addr());
    // Worker 1 sees one new REGISTER only (challenged).
    let out = deliver(&mut w1, t0, QUICK, carol_addr(), &register("alice", carol_addr(), "a", 1, 3600, ""));
    assert_eq!(status(&out[0]), "SIP/2.0 401 Unauthorized");
    let s = metrics.snapshot();
    assert_eq!(value(&s, "sipline_worker_server_transactions", &[("worker", "0")]), 2.0);
    assert_eq!(value(&s, "sipline_worker_server_transactions", &[("worker", "1")]), 1.0);
    assert_eq!(live(&s, "server", "non_invite", "completed"), 3.0);
    assert_eq!(registrations(&s, "challenged"), 2.0);
    assert_eq!(value(&s, "sipline_requests_received_total", &[("method", "REGISTER")]), 3.0);
    // One location service: the binding worker 0 made.
    assert_eq!(value(&s, "sipline_registrar_bindings", &[]), 1.0);
}

#[test]
fn an_endpoint_without_metrics_counts_nothing_and_a_client_counts_too() {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::new(1));
    let mut plain = {
        let mut c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(config(true));
        c.seed = 7;
        Endpoint::new(c).unwrap()
    };
    register_user(&mut plain, t0, "bob", bob_addr());
    assert_eq!(metrics.snapshot().total("sipline_requests_received_total"), 0.0);
    // Not serving: no location service to read, the rest as usual.
    let mut c = EndpointConfig::new("sip:alice@192.0.2.1");
    c.metrics = Some(Arc::clone(&metrics));
    let mut client = Endpoint::new(c).unwrap();
    client
        .send_request(t0, sipline::endpoint::Request::message("sip:bob@192.0.2.2", "text/plain", b"hi".to_vec()))
        .unwrap();
    drain(&mut client);
    let s = metrics.snapshot();
    assert!(s.value("sipline_registrar_bindings", &[]).is_none());
    assert_eq!(live(&s, "client", "non_invite", "trying"), 1.0);
}

/// The example of `Metrics`' docs, run: an OPTIONS answered by a user agent
/// endpoint counts a request, a 2xx sent and a server transaction lingering
/// in Completed (Timer J, RFC 3261 §17.2.2).
#[test]
fn the_docs_example_runs() {
    let metrics = Arc::new(Metrics::new(1));
    let mut config = sipline::endpoint::EndpointConfig::new("sip:alice@192.0.2.1");
    config.metrics = Some(Arc::clone(&metrics));
    let mut ep = Endpoint::new(config).unwrap();
    let options = "OPTIONS sip:alice@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK-1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:bob@192.0.2.2>;tag=b\r\nTo: <sip:alice@192.0.2.1>\r\n\
        Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let (local, remote) = ("192.0.2.1:5060".parse().unwrap(), "192.0.2.2:5060".parse().unwrap());
    ep.handle_datagram(Instant::now(), local, remote, options.as_bytes());
    while ep.poll_output().is_some() {}
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.value("sipline_requests_received_total", &[("method", "OPTIONS")]), Some(1.0));
    assert_eq!(snapshot.value("sipline_responses_sent_total", &[("class", "2xx")]), Some(1.0));
    assert_eq!(live(&snapshot, "server", "non_invite", "completed"), 1.0);
}
