//! The transaction layer (RFC 3261 §17, RFC 6026) driven through its public
//! API: states, bytes sent, events and exact timer schedules.
// Each test takes one arbitrary origin from the clock; after that, time only
// moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::transaction::{
    ClientState, Event, Output, RespondError, SendError, ServerId, ServerState, TimerConfig, TransactionLayer, TxId,
};
use std::time::{Duration, Instant};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn request(method: &str, branch: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=ft1\r\n\
To: <sip:bob@example.com>{extra}\r\n\
Call-ID: call-1@192.0.2.1\r\n\
CSeq: 7 {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn response(code: u16, method: &str, branch: &str) -> Vec<u8> {
    let cseq_method = if method == "ACK" { "INVITE" } else { method };
    format!(
        "SIP/2.0 {code} Whatever\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
From: <sip:alice@example.com>;tag=ft1\r\n\
To: <sip:bob@example.com>;tag=tt1\r\n\
Call-ID: call-1@192.0.2.1\r\n\
CSeq: 7 {cseq_method}\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Everything the layer put out, as (what, first line) pairs.
fn drain(layer: &mut TransactionLayer<u8>) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(o) = layer.poll_output() {
        v.push(match o {
            Output::Transmit { bytes, .. } => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                format!("tx {}", s.lines().next().unwrap_or_default())
            }
            Output::Event(Event::Response { response, .. }) => {
                format!("response {}", String::from_utf8_lossy(&response).lines().next().unwrap_or_default())
            }
            Output::Event(Event::Request { merged, .. }) => format!("request merged={merged}"),
            Output::Event(Event::Ack { .. }) => "ack".to_owned(),
            Output::Event(Event::StrayResponse { .. }) => "stray".to_owned(),
            Output::Event(Event::Timeout { .. }) => "timeout".to_owned(),
            Output::Event(Event::TransportError { .. }) => "transport error".to_owned(),
            Output::Event(Event::Terminated { .. }) => "terminated".to_owned(),
            Output::Event(other) => format!("{other:?}"),
        });
    }
    v
}

/// The server transaction the next output announces.
fn next_request(layer: &mut TransactionLayer<u8>) -> ServerId {
    match layer.poll_output() {
        Some(Output::Event(Event::Request { server, .. })) => server,
        other => panic!("expected a new request, got {other:?}"),
    }
}

/// Runs the clock from timer to timer until nothing is armed or `until`,
/// recording (offset from t0, output) for every output.
fn run(layer: &mut TransactionLayer<u8>, t0: Instant, until: Duration) -> Vec<(Duration, String)> {
    let mut log = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > t0 + until {
            break;
        }
        layer.handle_timeout(at);
        // After handle_timeout(t), poll_timeout is None or later than t.
        assert!(layer.poll_timeout().is_none_or(|next| next > at), "stuck deadline");
        for o in drain(layer) {
            log.push((at - t0, o));
        }
    }
    log
}

fn sends(log: &[(Duration, String)]) -> Vec<Duration> {
    log.iter().filter(|(_, o)| o.starts_with("tx")).map(|(t, _)| *t).collect()
}

#[test]
fn non_invite_client_retransmits_on_timer_e_then_times_out_on_f() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let id = l.send_request(t0, request("MESSAGE", "z9hG4bKm1", ""), 9, false).unwrap();
    assert_eq!(drain(&mut l), ["tx MESSAGE sip:bob@example.com SIP/2.0"]);
    assert_eq!(l.client_state(id), Some(ClientState::Trying));
    let log = run(&mut l, t0, Duration::from_secs(60));
    // E doubles from T1 and is capped at T2 (§17.1.2.2).
    let want: Vec<Duration> = [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500].map(MS).to_vec();
    assert_eq!(sends(&log), want);
    // F = 64·T1.
    let tail: Vec<_> = log.iter().filter(|(_, o)| !o.starts_with("tx")).cloned().collect();
    assert_eq!(tail, [(MS(32000), "timeout".to_owned()), (MS(32000), "terminated".to_owned())]);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn non_invite_client_in_proceeding_retransmits_every_t2() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let id = l.send_request(t0, request("OPTIONS", "z9hG4bKo1", ""), 9, false).unwrap();
    drain(&mut l);
    l.handle_timeout(t0 + MS(500));
    drain(&mut l);
    l.handle_message(t0 + MS(600), &response(100, "OPTIONS", "z9hG4bKo1"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 100 Whatever"]);
    assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
    let log = run(&mut l, t0, Duration::from_secs(10));
    // The pending E (1.5 s) fires, then every T2.
    assert_eq!(sends(&log), [1500, 5500, 9500].map(MS));
    // A final response: Completed, K = T4, retransmissions absorbed.
    l.handle_message(t0 + MS(10_000), &response(200, "OPTIONS", "z9hG4bKo1"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 200 Whatever"]);
    assert_eq!(l.client_state(id), Some(ClientState::Completed));
    l.handle_message(t0 + MS(10_100), &response(200, "OPTIONS", "z9hG4bKo1"), 9, false);
    assert!(drain(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(t0 + MS(15_000)));
    l.handle_timeout(t0 + MS(15_000));
    assert_eq!(drain(&mut l), ["terminated"]);
    assert!(l.is_empty());
}

#[test]
fn reliable_transports_do_not_retransmit() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.send_request(t0, request("MESSAGE", "z9hG4bKr1", ""), 9, true).unwrap();
    l.send_request(t0, request("INVITE", "z9hG4bKr2", ""), 9, true).unwrap();
    assert_eq!(drain(&mut l).len(), 2);
    let log = run(&mut l, t0, Duration::from_secs(60));
    assert!(sends(&log).is_empty());
    // F and B still bound the transactions at 64·T1.
    assert_eq!(log.iter().filter(|(t, o)| o == "timeout" && *t == MS(32_000)).count(), 2);
    // K = 0 on a reliable transport: Completed ends at once.
    let id = l.send_request(t0 + MS(40_000), request("MESSAGE", "z9hG4bKr3", ""), 9, true).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(40_001), &response(404, "MESSAGE", "z9hG4bKr3"), 9, true);
    assert_eq!(drain(&mut l), ["response SIP/2.0 404 Whatever", "terminated"]);
    assert_eq!(l.client_state(id), None);
}

#[test]
fn invite_client_timer_a_doubles_until_b() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.send_request(t0, request("INVITE", "z9hG4bKi1", ""), 9, false).unwrap();
    drain(&mut l);
    let log = run(&mut l, t0, Duration::from_secs(60));
    assert_eq!(sends(&log), [500, 1500, 3500, 7500, 15500, 31500].map(MS));
    assert_eq!(log.last().map(|(t, o)| (*t, o.as_str())), Some((MS(32_000), "terminated")));
    assert!(l.is_empty());
}

#[test]
fn invite_client_non_2xx_is_acked_by_the_transaction() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let id = l.send_request(t0, request("INVITE", "z9hG4bKi2", ""), 9, false).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(100), &response(180, "INVITE", "z9hG4bKi2"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 180 Whatever"]);
    assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
    // Proceeding neither retransmits nor times out.
    assert_eq!(l.poll_timeout(), None);
    l.handle_message(t0 + MS(90_000), &response(486, "INVITE", "z9hG4bKi2"), 9, false);
    assert_eq!(drain(&mut l), ["tx ACK sip:bob@example.com SIP/2.0", "response SIP/2.0 486 Whatever"]);
    assert_eq!(l.client_state(id), Some(ClientState::Completed));
    // A retransmitted 486: ACK again, the TU hears nothing.
    l.handle_message(t0 + MS(90_500), &response(486, "INVITE", "z9hG4bKi2"), 9, false);
    assert_eq!(drain(&mut l), ["tx ACK sip:bob@example.com SIP/2.0"]);
    // Timer D: 32 s.
    assert_eq!(l.poll_timeout(), Some(t0 + MS(122_000)));
    l.handle_timeout(t0 + MS(122_000));
    assert_eq!(drain(&mut l), ["terminated"]);
}

#[test]
fn invite_client_given_up_in_proceeding_ends_64_t1_later_9_1() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let id = l.send_request(t0, request("INVITE", "z9hG4bKi9", ""), 9, false).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(100), &response(180, "INVITE", "z9hG4bKi9"), 9, false);
    drain(&mut l);
    assert_eq!(l.poll_timeout(), None, "Proceeding waits on the TU");
    // The TU sent a CANCEL (or its session ended) at 10 s: with no final
    // response by 10 s + 64·T1 the transaction is destroyed (§9.1).
    l.give_up(t0 + MS(10_000), id);
    assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
    assert_eq!(l.poll_timeout(), Some(t0 + MS(42_000)));
    // More provisionals (a retransmitted 100, a 180) do not lift the bound.
    l.handle_message(t0 + MS(11_000), &response(180, "INVITE", "z9hG4bKi9"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 180 Whatever"]);
    assert_eq!(l.poll_timeout(), Some(t0 + MS(42_000)));
    l.handle_timeout(t0 + MS(42_000));
    assert_eq!(drain(&mut l), ["timeout", "terminated"]);
    assert!(l.is_empty());
    // A final response in time ends it as usual instead.
    let t1 = t0 + MS(50_000);
    let id = l.send_request(t1, request("INVITE", "z9hG4bKi8", ""), 9, false).unwrap();
    l.handle_message(t1 + MS(100), &response(180, "INVITE", "z9hG4bKi8"), 9, false);
    l.give_up(t1 + MS(10_000), id);
    l.handle_message(t1 + MS(10_200), &response(487, "INVITE", "z9hG4bKi8"), 9, false);
    drain(&mut l);
    assert_eq!(l.client_state(id), Some(ClientState::Completed));
    // Given up while still Calling: timer B keeps running past the first
    // provisional and ends it 64·T1 after the start.
    let t2 = t1 + MS(50_000);
    l.handle_timeout(t2); // the Completed one ends (timer D)
    drain(&mut l);
    let id = l.send_request(t2, request("INVITE", "z9hG4bKi7", ""), 9, false).unwrap();
    l.give_up(t2 + MS(100), id);
    l.handle_message(t2 + MS(200), &response(100, "INVITE", "z9hG4bKi7"), 9, false);
    drain(&mut l);
    assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
    assert_eq!(l.poll_timeout(), Some(t2 + MS(32_000)));
    l.handle_timeout(t2 + MS(32_000));
    assert_eq!(drain(&mut l), ["timeout", "terminated"]);
}

#[test]
fn invite_client_2xx_goes_to_accepted_and_every_2xx_reaches_the_tu() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let id = l.send_request(t0, request("INVITE", "z9hG4bKi3", ""), 9, false).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(200), &response(200, "INVITE", "z9hG4bKi3"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 200 Whatever"]);
    assert_eq!(l.client_state(id), Some(ClientState::Accepted));
    l.handle_message(t0 + MS(700), &response(200, "INVITE", "z9hG4bKi3"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 200 Whatever"], "RFC 6026: 2xx retransmission to the TU");
    // Timer M = 64·T1, then 2xx arrive as stray responses for the TU.
    assert_eq!(l.poll_timeout(), Some(t0 + MS(32_200)));
    l.handle_timeout(t0 + MS(32_200));
    assert_eq!(drain(&mut l), ["terminated"]);
    l.handle_message(t0 + MS(33_000), &response(200, "INVITE", "z9hG4bKi3"), 9, false);
    assert_eq!(drain(&mut l), ["stray"]);
}

#[test]
fn invite_server_trying_retransmissions_g_h_and_ack() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let inv = request("INVITE", "z9hG4bKs1", "");
    l.handle_message(t0, &inv, 4, false);
    let server = match l.poll_output() {
        Some(Output::Event(Event::Request { server, merged: false, .. })) => server,
        other => panic!("{other:?}"),
    };
    assert_eq!(l.server_state(server), Some(ServerState::Proceeding));
    // §17.2.1: 100 Trying after 200 ms without the TU.
    assert_eq!(l.poll_timeout(), Some(t0 + MS(200)));
    l.handle_timeout(t0 + MS(200));
    assert_eq!(drain(&mut l), ["tx SIP/2.0 100 Trying"]);
    // A retransmitted INVITE gets the last provisional again.
    l.handle_message(t0 + MS(500), &inv, 4, false);
    assert_eq!(drain(&mut l), ["tx SIP/2.0 100 Trying"]);
    l.respond(t0 + MS(1000), server, response(486, "INVITE", "z9hG4bKs1")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 486 Whatever"]);
    assert_eq!(l.server_state(server), Some(ServerState::Completed));
    // A second final response is refused and handed back.
    let again = response(500, "INVITE", "z9hG4bKs1");
    assert_eq!(l.respond(t0 + MS(1001), server, again.clone()), Err(RespondError::WrongState(again)));
    let log = run(&mut l, t0 + MS(1000), Duration::from_secs(40));
    // G doubles from T1 to T2; H = 64·T1 ends it with a timeout.
    let want = [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500].map(MS);
    assert_eq!(sends(&log), want);
    assert_eq!(log.last().map(|(t, o)| (*t, o.as_str())), Some((MS(32_000), "terminated")));
    assert!(log.iter().any(|(t, o)| o == "timeout" && *t == MS(32_000)));

    // Again, this time with the ACK: Confirmed, then I = T4.
    let t0 = t0 + MS(60_000);
    let inv = request("INVITE", "z9hG4bKs2", "");
    l.handle_message(t0, &inv, 4, false);
    let server = next_request(&mut l);
    l.respond(t0 + MS(10), server, response(603, "INVITE", "z9hG4bKs2")).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(20), &request("ACK", "z9hG4bKs2", ";tag=tt1"), 4, false);
    assert!(drain(&mut l).is_empty(), "the ACK for a non-2xx stays in the transaction");
    assert_eq!(l.server_state(server), Some(ServerState::Confirmed));
    assert_eq!(l.poll_timeout(), Some(t0 + MS(5020)));
    l.handle_timeout(t0 + MS(5020));
    assert_eq!(drain(&mut l), ["terminated"]);
    assert!(l.is_empty());
}

#[test]
fn invite_server_2xx_acks_go_to_the_tu() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.handle_message(t0, &request("INVITE", "z9hG4bKs3", ""), 4, false);
    let server = next_request(&mut l);
    l.respond(t0 + MS(50), server, response(180, "INVITE", "z9hG4bKs3")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 180 Whatever"]);
    l.respond(t0 + MS(60), server, response(200, "INVITE", "z9hG4bKs3")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever"]);
    assert_eq!(l.server_state(server), Some(ServerState::Accepted));
    // The TU retransmits its 2xx through the transaction (RFC 6026 §8.5).
    l.respond(t0 + MS(560), server, response(200, "INVITE", "z9hG4bKs3")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever"]);
    l.handle_message(t0 + MS(600), &request("ACK", "z9hG4bKs3", ";tag=tt1"), 4, false);
    assert_eq!(drain(&mut l), ["ack"]);
    // Timer L = 64·T1.
    assert_eq!(l.poll_timeout(), Some(t0 + MS(32_060)));
    l.handle_timeout(t0 + MS(32_060));
    assert_eq!(drain(&mut l), ["terminated"]);
    // A stale handle reaches nothing, and the response comes back.
    let late = response(200, "INVITE", "z9hG4bKs3");
    assert_eq!(l.respond(t0 + MS(40_000), server, late.clone()), Err(RespondError::UnknownTransaction(late)));
    // An ACK with a new branch (2xx ACKs are new transactions at proxies) goes to the TU too.
    l.handle_message(t0 + MS(40_001), &request("ACK", "z9hG4bKother", ";tag=tt1"), 4, false);
    assert_eq!(drain(&mut l), ["ack"]);
}

#[test]
fn non_invite_server_states_and_timer_j() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let req = request("MESSAGE", "z9hG4bKn1", "");
    l.handle_message(t0, &req, 4, false);
    let server = next_request(&mut l);
    assert_eq!(l.server_state(server), Some(ServerState::Trying));
    assert_eq!(l.poll_timeout(), None, "no 100 Trying timer for non-INVITE");
    // A retransmission in Trying is absorbed silently.
    l.handle_message(t0 + MS(500), &req, 4, false);
    assert!(drain(&mut l).is_empty());
    l.respond(t0 + MS(600), server, response(180, "MESSAGE", "z9hG4bKn1")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 180 Whatever"]);
    assert_eq!(l.server_state(server), Some(ServerState::Proceeding));
    l.handle_message(t0 + MS(1500), &req, 4, false);
    assert_eq!(drain(&mut l), ["tx SIP/2.0 180 Whatever"]);
    l.respond(t0 + MS(1600), server, response(200, "MESSAGE", "z9hG4bKn1")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever"]);
    l.handle_message(t0 + MS(3500), &req, 4, false);
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever"]);
    assert_eq!(l.poll_timeout(), Some(t0 + MS(33_600)));
    l.handle_timeout(t0 + MS(33_600));
    assert_eq!(drain(&mut l), ["terminated"]);
    // Reliable: J = 0.
    l.handle_message(t0 + MS(40_000), &request("MESSAGE", "z9hG4bKn2", ""), 4, true);
    let server = next_request(&mut l);
    l.respond(t0 + MS(40_001), server, response(200, "MESSAGE", "z9hG4bKn2")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever", "terminated"]);
    assert!(l.is_empty());
}

#[test]
fn matching_rules() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    // §17.1.3: the branch and the CSeq method must both match.
    let inv = l.send_request(t0, request("INVITE", "z9hG4bKx1", ""), 9, false).unwrap();
    let cancel = l.send_request(t0, request("CANCEL", "z9hG4bKx1", ""), 9, false).unwrap();
    assert_ne!(inv, cancel, "CANCEL shares the branch but is its own transaction");
    drain(&mut l);
    l.handle_message(t0, &response(200, "CANCEL", "z9hG4bKx1"), 9, false);
    match l.poll_output() {
        Some(Output::Event(Event::Response { client, .. })) => assert_eq!(client, cancel),
        other => panic!("{other:?}"),
    }
    drain(&mut l);
    l.handle_message(t0, &response(200, "INVITE", "z9hG4bKnope"), 9, false);
    assert_eq!(drain(&mut l), ["stray"]);
    let dup = request("INVITE", "z9hG4bKx1", "");
    assert_eq!(l.send_request(t0, dup.clone(), 9, false), Err(SendError::Duplicate(dup)));
    let ack = request("ACK", "z9hG4bKx9", "");
    assert_eq!(l.send_request(t0, ack.clone(), 9, false), Err(SendError::Ack(ack)));

    // §17.2.3: sent-by matters as much as the branch.
    l.handle_message(t0, &request("OPTIONS", "z9hG4bKy1", ""), 4, false);
    let other_host =
        String::from_utf8(request("OPTIONS", "z9hG4bKy1", ";tag=x")).unwrap().replace("192.0.2.1:5060", "192.0.2.99");
    l.handle_message(t0, other_host.as_bytes(), 4, false);
    assert_eq!(drain(&mut l), ["request merged=false", "request merged=false"]);

    // RFC 2543 fallback: no magic cookie, matched on the other fields.
    let old = request("INVITE", "old1", "");
    l.handle_message(t0, &old, 4, false);
    assert_eq!(drain(&mut l), ["request merged=false"]);
    l.handle_timeout(t0 + MS(200));
    assert_eq!(drain(&mut l), ["tx SIP/2.0 100 Trying"]);
    l.handle_message(t0 + MS(250), &old, 4, false);
    assert_eq!(drain(&mut l), ["tx SIP/2.0 100 Trying"], "the retransmission matched the transaction");
}

#[test]
fn merged_requests_are_flagged() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.handle_message(t0, &request("INVITE", "z9hG4bKpath1", ""), 4, false);
    // The same request forked back to us along another path: another branch.
    l.handle_message(t0, &request("INVITE", "z9hG4bKpath2", ""), 5, false);
    assert_eq!(drain(&mut l), ["request merged=false", "request merged=true"]);
}

#[test]
fn transport_errors_end_the_transaction() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let id = l.send_request(t0, request("MESSAGE", "z9hG4bKt1", ""), 9, false).unwrap();
    drain(&mut l);
    l.transport_error(t0 + MS(1), TxId::Client(id));
    assert_eq!(drain(&mut l), ["transport error", "terminated"]);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn branches_are_unique_and_seeded() {
    let mut a: TransactionLayer<u8> = TransactionLayer::new(TimerConfig::default(), 42);
    let mut b: TransactionLayer<u8> = TransactionLayer::new(TimerConfig::default(), 42);
    let x: Vec<String> = (0..100).map(|_| a.new_branch()).collect();
    let y: Vec<String> = (0..100).map(|_| b.new_branch()).collect();
    assert_eq!(x, y);
    assert!(x[0].starts_with("z9hG4bK") && x[0].len() == 27);
    let unique: std::collections::BTreeSet<_> = x.iter().collect();
    assert_eq!(unique.len(), 100);
}

#[test]
fn invite_server_accepted_absorbs_retransmitted_invites() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    let inv = request("INVITE", "z9hG4bKa1", "");
    l.handle_message(t0, &inv, 4, false);
    let server = next_request(&mut l);
    l.respond(t0 + MS(10), server, response(200, "INVITE", "z9hG4bKa1")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever"]);
    // RFC 6026 §8.5: the retransmitted INVITE is absorbed; the TU retransmits the 2xx.
    l.handle_message(t0 + MS(500), &inv, 4, false);
    assert!(drain(&mut l).is_empty());
    assert_eq!(l.server_state(server), Some(ServerState::Accepted));
    // A non-2xx is no longer allowed.
    let late = response(486, "INVITE", "z9hG4bKa1");
    assert_eq!(l.respond(t0 + MS(600), server, late.clone()), Err(RespondError::WrongState(late)));
}

#[test]
fn reliable_invite_server_has_no_g_and_zero_i() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.handle_message(t0, &request("INVITE", "z9hG4bKrel", ""), 4, true);
    let server = next_request(&mut l);
    l.respond(t0 + MS(10), server, response(500, "INVITE", "z9hG4bKrel")).unwrap();
    drain(&mut l);
    // Only H (64·T1) is armed: no retransmission timer G on a reliable transport.
    assert_eq!(l.poll_timeout(), Some(t0 + MS(32_010)));
    l.handle_message(t0 + MS(20), &request("ACK", "z9hG4bKrel", ";tag=tt1"), 4, true);
    // I = 0: Confirmed ends at once.
    assert_eq!(drain(&mut l), ["terminated"]);
    assert!(l.is_empty());
}

#[test]
fn reliable_invite_client_ends_at_once_after_a_non_2xx() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.send_request(t0, request("INVITE", "z9hG4bKrc", ""), 9, true).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(5), &response(404, "INVITE", "z9hG4bKrc"), 9, true);
    // ACK, the response to the TU, and D = 0 ends it.
    assert_eq!(drain(&mut l), ["tx ACK sip:bob@example.com SIP/2.0", "response SIP/2.0 404 Whatever", "terminated"]);
    assert!(l.is_empty());
}

#[test]
fn server_transport_error_ends_the_transaction() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.handle_message(t0, &request("INVITE", "z9hG4bKte", ""), 4, false);
    let server = next_request(&mut l);
    l.transport_error(t0 + MS(1), TxId::Server(server));
    assert_eq!(drain(&mut l), ["transport error", "terminated"]);
    assert!(l.is_empty());
    // The layer never goes back in time, and malformed input is dropped quietly.
    l.handle_message(t0 + MS(2), b"garbage", 4, false);
    l.handle_message(t0 + MS(2), b"OPTIONS sip:a SIP/2.0\r\n\r\n", 4, false);
    assert!(drain(&mut l).is_empty());
}

#[test]
fn respond_refuses_what_is_not_a_response_and_gives_it_back() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);
    l.handle_message(t0, &request("OPTIONS", "z9hG4bKbad", ""), 4, false);
    let server = next_request(&mut l);
    for bad in [
        &b"OPTIONS sip:x SIP/2.0\r\n\r\n"[..],
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"",
        b"SIP/2.0 2000 X\r\n",
    ] {
        assert_eq!(l.respond(t0, server, bad.to_vec()), Err(RespondError::Malformed(bad.to_vec())));
    }
    assert_eq!(l.server_state(server), Some(ServerState::Trying));
    l.respond(t0, server, response(200, "OPTIONS", "z9hG4bKbad")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 200 Whatever"]);
}

#[test]
fn remaining_transitions_of_figures_5_to_8() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default(), 1);

    // Figure 7: Completed resends the final response on a retransmitted
    // INVITE; Confirmed absorbs retransmitted ACKs.
    let inv = request("INVITE", "z9hG4bKf7", "");
    l.handle_message(t0, &inv, 4, false);
    let server = next_request(&mut l);
    l.respond(t0 + MS(1), server, response(480, "INVITE", "z9hG4bKf7")).unwrap();
    assert_eq!(drain(&mut l), ["tx SIP/2.0 480 Whatever"]);
    l.handle_message(t0 + MS(100), &inv, 4, false);
    assert_eq!(drain(&mut l), ["tx SIP/2.0 480 Whatever"]);
    let ack = request("ACK", "z9hG4bKf7", ";tag=tt1");
    l.handle_message(t0 + MS(200), &ack, 4, false);
    l.handle_message(t0 + MS(300), &ack, 4, false);
    assert!(drain(&mut l).is_empty());
    assert_eq!(l.server_state(server), Some(ServerState::Confirmed));

    // Figure 5 (RFC 6026): Proceeding -> Accepted on a 2xx.
    let client = l.send_request(t0 + MS(400), request("INVITE", "z9hG4bKf5", ""), 9, false).unwrap();
    drain(&mut l);
    l.handle_message(t0 + MS(450), &response(183, "INVITE", "z9hG4bKf5"), 9, false);
    l.handle_message(t0 + MS(500), &response(200, "INVITE", "z9hG4bKf5"), 9, false);
    assert_eq!(drain(&mut l), ["response SIP/2.0 183 Whatever", "response SIP/2.0 200 Whatever"]);
    assert_eq!(l.client_state(client), Some(ClientState::Accepted));

    // Figure 6: timer F also ends a transaction in Proceeding.
    let t1 = t0 + MS(100_000);
    l.handle_timeout(t1);
    assert_eq!(drain(&mut l), ["terminated", "terminated"], "I and M ran out meanwhile");
    let client = l.send_request(t1, request("OPTIONS", "z9hG4bKf6", ""), 9, false).unwrap();
    drain(&mut l);
    l.handle_message(t1 + MS(10), &response(100, "OPTIONS", "z9hG4bKf6"), 9, false);
    drain(&mut l);
    assert_eq!(l.client_state(client), Some(ClientState::Proceeding));
    let log = run(&mut l, t1, Duration::from_secs(40));
    assert!(log.iter().any(|(t, o)| o == "timeout" && *t == MS(32_000)));
    assert_eq!(l.client_state(client), None);
}
