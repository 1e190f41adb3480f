//! Blind transfer from the command line (REFER, RFC 3515; Referred-By, RFC
//! 3892): `call --transfer-to` asks the callee (`listen --answer`) to call
//! a third party, follows the transfer's NOTIFYs and hangs up; the
//! callee calls the target with Referred-By. A REFER sent by the test
//! itself (a bare UDP peer) checks what `listen` does without `--answer`
//! and with a Refer-To that names a call to replace (RFC 3891). Output
//! lines and, with `-v`, the messages on the wire are checked. Every
//! process is stopped on drop and every wait is bounded.

mod support;

use std::net::SocketAddr;
use support::cmd::{Dir, Peer, Sipline, Wire};

fn sent_request(method: &'static str) -> impl Fn(&Wire) -> bool {
    move |w| w.dir == Dir::Sent && w.is_request(method)
}

fn received_request(method: &'static str) -> impl Fn(&Wire) -> bool {
    move |w| w.dir == Dir::Received && w.is_request(method)
}

/// The sipfrag NOTIFYs the transferor received, in order (RFC 3515
/// §2.4.5), each checked for its Event (`refer;id=` the REFER's CSeq,
/// §2.4.6) and Content-Type: their Subscription-State and status line.
fn transfer_notifies(transferor: &Sipline) -> Vec<(String, String)> {
    let wire = transferor.wire();
    let refer = wire.iter().find(|w| sent_request("REFER")(w)).expect("the REFER");
    let event = format!("refer;id={}", refer.seq());
    wire.into_iter()
        .filter(received_request("NOTIFY"))
        .map(|n| {
            assert_eq!(n.header("Event"), Some(event.as_str()), "{}", n.text());
            assert!(n.header("Content-Type").is_some_and(|t| t.starts_with("message/sipfrag")), "{}", n.text());
            let state = n.header("Subscription-State").expect("Subscription-State").to_owned();
            let frag = n.body().first().map(|l| (*l).to_owned()).unwrap_or_default();
            (state, frag)
        })
        .collect()
}

/// alice calls bob, then transfers him to carol: REFER in the call's
/// dialog with Refer-To and Referred-By, 202, NOTIFYs 100 Trying and 200
/// OK (the last ends the subscription), BYE; bob calls carol with
/// Referred-By; `call` exits 0.
#[test]
fn blind_transfer_succeeds() {
    let mut carol = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let carol_uri = format!("sip:carol@{}", carol.bound("udp"));
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let bob_uri = format!("sip:bob@{}", bob.bound("udp"));
    let alice = "sip:alice@127.0.0.1";
    let mut call = Sipline::start(&[
        "call",
        &bob_uri,
        "--from",
        alice,
        "--transfer-to",
        &carol_uri,
        "--transfer-after",
        "0.2",
        "-v",
    ]);
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    let refer_line = format!("REFER to {carol_uri}");
    call.assert_order(&[
        "200 OK",
        &refer_line,
        "REFER: 202 Accepted",
        "transfer: 100 Trying",
        "transfer: 200 OK",
        "BYE",
        "hung up",
    ]);

    // The REFER goes in the call's dialog (§2.4.1) and names the target
    // and the referrer (RFC 3892 §3).
    let wire = call.wire();
    let invite = wire.iter().find(|w| sent_request("INVITE")(w)).expect("the INVITE");
    let refer = wire.iter().find(|w| sent_request("REFER")(w)).unwrap_or_else(|| panic!("{}", call.transcript()));
    assert_eq!(refer.header("Call-ID"), invite.header("Call-ID"), "{}", refer.text());
    assert!(refer.header("To").is_some_and(|t| t.contains(";tag=")), "{}", refer.text());
    assert!(refer.seq() > invite.seq(), "{}", refer.text());
    assert_eq!(refer.header("Refer-To"), Some(format!("<{carol_uri}>").as_str()), "{}", refer.text());
    assert_eq!(refer.header("Referred-By"), Some(format!("<{alice}>").as_str()), "{}", refer.text());
    assert!(wire.iter().any(|w| w.dir == Dir::Received && w.is_response(202, "REFER")), "{}", call.transcript());
    // §2.4.5: the transfer's progress as sipfrag; the final one ends it.
    let notifies = transfer_notifies(&call);
    assert!(notifies.len() >= 2, "{notifies:?}");
    assert!(notifies[0].0.starts_with("active"), "{notifies:?}");
    assert_eq!(notifies[0].1, "SIP/2.0 100 Trying", "{notifies:?}");
    let last = notifies.last().expect("a NOTIFY");
    assert_eq!(last.0, "terminated;reason=noresource", "{notifies:?}");
    assert_eq!(last.1, "SIP/2.0 200 OK", "{notifies:?}");
    // The call with bob ends after the transfer.
    let bye = wire.iter().find(|w| sent_request("BYE")(w)).expect("the BYE");
    assert_eq!(bye.header("Call-ID"), invite.header("Call-ID"));

    // bob: took the REFER, called carol, reported the 200.
    bob.line(&format!("INVITE from {alice}"));
    bob.line(&format!("REFER to {carol_uri}: calling"));
    bob.line("transfer call: 200 OK");
    bob.line(&format!("BYE from {alice}"));
    bob.assert_order(&["answered 200 OK", &format!("REFER to {carol_uri}: calling"), "transfer call: 200 OK"]);
    let taken = bob.wait_wire("the 202", |w| w.dir == Dir::Sent && w.is_response(202, "REFER"));
    assert_eq!(taken.header("Call-ID"), invite.header("Call-ID"));
    // RFC 3892 §3: the transferee's INVITE carries Referred-By; its offer
    // is the command's (PCMU, PCMA, telephone-event).
    let onward = bob.wait_wire("bob's INVITE to carol", sent_request("INVITE"));
    assert_eq!(onward.start_line(), format!("INVITE {carol_uri} SIP/2.0"));
    assert_eq!(onward.header("Referred-By"), Some(format!("<{alice}>").as_str()), "{}", onward.text());
    assert_ne!(onward.header("Call-ID"), invite.header("Call-ID"), "a new call");
    assert!(onward.body().contains(&"m=audio 9 RTP/AVP 0 8 101"), "{}", onward.text());

    // carol: the call from bob, with Referred-By.
    carol.line_starting("INVITE from ");
    carol.line("answered 200 OK");
    let arrived = carol.wait_wire("carol's INVITE", received_request("INVITE"));
    assert_eq!(arrived.header("Referred-By"), Some(format!("<{alice}>").as_str()), "{}", arrived.text());
    assert_eq!(arrived.header("Call-ID"), onward.header("Call-ID"));
}

/// carol is busy (no `--answer`: 486): the transfer's last NOTIFY says so,
/// `call` hangs up all the same and exits 1.
#[test]
fn transfer_to_a_busy_target_exits_1() {
    let mut carol = Sipline::start(&["listen", "--bind", "127.0.0.1:0"]);
    let carol_uri = format!("sip:carol@{}", carol.bound("udp"));
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer"]);
    let bob_uri = format!("sip:bob@{}", bob.bound("udp"));
    let mut call = Sipline::start(&["call", &bob_uri, "--transfer-to", &carol_uri, "-v"]);
    let status = call.finish();
    assert_eq!(status.code(), Some(1), "{}", call.transcript());
    call.assert_order(&["200 OK", "REFER: 202 Accepted", "transfer: 486 Busy Here", "BYE", "hung up"]);
    assert!(!call.out.iter().any(|l| l == "transfer: 200 OK"), "{}", call.transcript());
    let notifies = transfer_notifies(&call);
    let last = notifies.last().expect("a NOTIFY");
    assert_eq!(last.0, "terminated;reason=noresource", "{notifies:?}");
    assert_eq!(last.1, "SIP/2.0 486 Busy Here", "{notifies:?}");
    bob.line(&format!("REFER to {carol_uri}: calling"));
    bob.line("transfer call: 486 Busy Here");
    carol.line("answered 486 Busy Here");
}

/// A REFER outside any dialog (RFC 3515 §2.4.1 allows it), from `peer` to
/// `to`, asking it to call `refer_to`.
fn send_refer(peer: &Peer, to: SocketAddr, refer_to: &str) {
    let head = vec![
        format!("REFER sip:bob@{to} SIP/2.0"),
        format!("Via: SIP/2.0/UDP {};branch=z9hG4bK-refer-1;rport", peer.addr),
        "Max-Forwards: 70".to_owned(),
        "From: <sip:dave@127.0.0.1>;tag=d1".to_owned(),
        format!("To: <sip:bob@{to}>"),
        "Call-ID: refer-from-the-test@127.0.0.1".to_owned(),
        "CSeq: 1 REFER".to_owned(),
        format!("Contact: <sip:dave@{}>", peer.addr),
        format!("Refer-To: {refer_to}"),
        "Referred-By: <sip:dave@127.0.0.1>".to_owned(),
    ];
    peer.send(to, &head, "");
}

/// Without `--answer` a REFER is refused (never 2xx) and nobody is
/// called.
#[test]
fn refer_without_answer_is_refused() {
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "-v"]);
    let at = bob.bound("udp");
    let peer = Peer::bind();
    send_refer(&peer, at, "<sip:carol@127.0.0.1:9>");
    let (answer, _) = peer.recv("the final answer to REFER", |w| {
        w.start_line().starts_with("SIP/2.0 ") && !w.start_line().starts_with("SIP/2.0 1")
    });
    let code: u16 = answer.start_line()[8..11].parse().expect("a status code");
    assert!(code >= 400, "{}", answer.text());
    bob.wait_wire("the refusal", |w| w.dir == Dir::Sent && w.is_response(code, "REFER"));
    assert!(!bob.wire().iter().any(|w| w.is_request("INVITE")), "{}", bob.transcript());
    assert!(!bob.out.iter().any(|l| l.ends_with(": calling")), "{}", bob.transcript());
}

/// Without `--answer` a listener takes no transfers: REFER is not allowed
/// (405, and not in Allow), nobody is called.
#[test]
fn refer_without_answer_is_not_allowed() {
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "-v"]);
    let at = bob.bound("udp");
    let peer = Peer::bind();
    send_refer(&peer, at, "<sip:carol@127.0.0.1:9>");
    let (answer, _) = peer.recv("the final answer to REFER", |w| {
        w.start_line().starts_with("SIP/2.0 ") && !w.start_line().starts_with("SIP/2.0 1")
    });
    assert_eq!(answer.start_line(), "SIP/2.0 405 Method Not Allowed", "{}", answer.text());
    assert!(answer.header("Allow").is_some_and(|a| !a.contains("REFER")), "{}", answer.text());
}

/// A REFER whose Refer-To carries a Replaces (an attended transfer, RFC
/// 3891 §3): `listen --answer` takes it (202), calls the target with the
/// Replaces header and the Referred-By, and reports the outcome in
/// sipfrag NOTIFYs whose last ends the subscription.
#[test]
fn refer_with_replaces_is_passed_on() {
    let mut carol = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let carol_at = carol.bound("udp");
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let at = bob.bound("udp");
    let peer = Peer::bind();
    let refer_to = format!("<sip:carol@{carol_at}?Replaces=old-call%40127.0.0.1%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>");
    send_refer(&peer, at, &refer_to);
    let (accepted, from) = peer.recv("the 202", |w| w.start_line().starts_with("SIP/2.0 2"));
    assert!(accepted.is_response(202, "REFER"), "{}", accepted.text());
    bob.line(&format!("REFER to sip:carol@{carol_at}: calling"));

    let arrived = carol.wait_wire("carol's INVITE", received_request("INVITE"));
    assert_eq!(arrived.start_line(), format!("INVITE sip:carol@{carol_at} SIP/2.0"));
    assert_eq!(arrived.header("Replaces"), Some("old-call@127.0.0.1;to-tag=t1;from-tag=f1"), "{}", arrived.text());
    assert_eq!(arrived.header("Referred-By"), Some("<sip:dave@127.0.0.1>"), "{}", arrived.text());

    // The NOTIFYs, answered 200, until the one that ends it.
    let mut frags = Vec::new();
    for _ in 0..10 {
        let (notify, _) = peer.recv("a NOTIFY", |w| w.is_request("NOTIFY"));
        assert!(notify.header("Event").is_some_and(|e| e.starts_with("refer")), "{}", notify.text());
        assert!(notify.header("Content-Type").is_some_and(|t| t.starts_with("message/sipfrag")), "{}", notify.text());
        assert_eq!(notify.header("Call-ID"), Some("refer-from-the-test@127.0.0.1"), "{}", notify.text());
        assert!(notify.header("To").is_some_and(|t| t.ends_with(";tag=d1")), "{}", notify.text());
        peer.respond(from, &notify, 200, "OK", "d1", &[]);
        let state = notify.header("Subscription-State").unwrap_or_default().to_owned();
        frags.push(notify.body().first().map(|l| (*l).to_owned()).unwrap_or_default());
        if state.starts_with("terminated") {
            break;
        }
    }
    // carol knows no such call: whatever she answered is the last report.
    let last = frags.last().cloned().unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 ") && !last.starts_with("SIP/2.0 1"), "{frags:?}");
    bob.line(&format!("transfer call: {}", &last["SIP/2.0 ".len()..]));
}

/// The transfer target's URI parameters survive (`;transport=tcp`): bob
/// calls carol over TCP, where she listens.
#[test]
fn transfer_keeps_the_targets_uri_parameters() {
    let mut carol = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--transport", "tcp", "--answer"]);
    let carol_uri = format!("sip:carol@{};transport=tcp", carol.bound("tcp"));
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let bob_uri = format!("sip:bob@{}", bob.bound("udp"));
    let mut call = Sipline::start(&["call", &bob_uri, "--transfer-to", &carol_uri]);
    bob.line(&format!("REFER to {carol_uri}: calling"));
    let onward = bob.wait_wire("bob's INVITE to carol", sent_request("INVITE"));
    assert_eq!(onward.start_line(), format!("INVITE {carol_uri} SIP/2.0"));
    assert!(onward.headers("Via").iter().all(|v| v.starts_with("SIP/2.0/TCP ")), "{}", onward.text());
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    call.line("transfer: 200 OK");
    carol.line("answered 200 OK");
}
