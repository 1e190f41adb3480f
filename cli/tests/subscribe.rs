//! `sipline subscribe` end to end on loopback (RFC 6665): against `sipline
//! listen --presence` (RFC 3856, PIDF bodies, RFC 3863) and against a bare
//! UDP notifier played by the test (message-summary, reg and sipfrag
//! bodies, a refresh, the notifier's own end). What the commands print is
//! checked, and with `-v` the messages on the wire. Every process is
//! stopped on drop and every wait is bounded.

mod support;

use rustix::process::Signal;
use std::net::TcpListener;
use support::cmd::{Dir, Peer, Sipline, Wire};

fn sent_request(method: &'static str) -> impl Fn(&Wire) -> bool {
    move |w| w.dir == Dir::Sent && w.is_request(method)
}

/// Presence over UDP: the SUBSCRIBE asks for what was given, `listen`
/// answers with a PIDF NOTIFY (open, with the note), `subscribe` prints it;
/// SIGINT unsubscribes (Expires: 0 in the dialog, a last NOTIFY
/// terminated) and the exit status is 0.
#[test]
fn presence_is_notified_and_sigint_unsubscribes() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--presence", "open:at lunch", "-v"]);
    let at = listen.bound("udp");
    let target = format!("sip:bob@{at}");
    let mut sub = Sipline::start(&["subscribe", &target, "--event", "presence", "--expires", "120", "-v"]);
    sub.line("NOTIFY active (120 s)");
    sub.line(&format!("  presence of {target}: open"));
    sub.line("  note: at lunch");
    listen.line("SUBSCRIBE presence from sip:sipline@sipline.invalid");

    // §4.1.2.1: the SUBSCRIBE's Event, Expires and Accept (the package's
    // default type, RFC 3856 §6.7).
    let subscribe = sub.wait_wire("the SUBSCRIBE", sent_request("SUBSCRIBE"));
    assert_eq!(subscribe.start_line(), format!("SUBSCRIBE {target} SIP/2.0"));
    assert_eq!(subscribe.header("Event"), Some("presence"), "{}", subscribe.text());
    assert_eq!(subscribe.header("Expires"), Some("120"), "{}", subscribe.text());
    assert_eq!(subscribe.header("Accept"), Some("application/pidf+xml"), "{}", subscribe.text());
    // §4.2.1: the NOTIFY that follows the 200, with the state and a PIDF
    // document for the entity asked about.
    let ok = listen.wait_wire("the 200 to SUBSCRIBE", |w| w.dir == Dir::Sent && w.is_response(200, "SUBSCRIBE"));
    assert_eq!(ok.header("Expires"), Some("120"), "{}", ok.text());
    let notify = listen.wait_wire("the NOTIFY", sent_request("NOTIFY"));
    assert_eq!(notify.header("Event"), Some("presence"), "{}", notify.text());
    assert_eq!(notify.header("Subscription-State"), Some("active;expires=120"), "{}", notify.text());
    assert_eq!(notify.header("Content-Type"), Some("application/pidf+xml"), "{}", notify.text());
    assert_eq!(notify.header("Call-ID"), subscribe.header("Call-ID"), "{}", notify.text());
    let body = notify.body().join("\n");
    assert!(body.contains(&format!("entity=\"{target}\"")), "{body}");
    assert!(body.contains("<basic>open</basic>"), "{body}");
    assert!(body.contains("<note>at lunch</note>"), "{body}");

    sub.signal(Signal::INT);
    let status = sub.finish();
    assert_eq!(status.code(), Some(0), "{}", sub.transcript());
    sub.assert_order(&[
        "200 OK",
        "NOTIFY active (120 s)",
        "unsubscribing",
        "NOTIFY terminated (timeout)",
        "unsubscribed",
    ]);
    // §4.1.2.3: unsubscribing is a SUBSCRIBE in the dialog with Expires: 0.
    let subscribes: Vec<Wire> = sub.wire().into_iter().filter(sent_request("SUBSCRIBE")).collect();
    assert_eq!(subscribes.len(), 2, "{}", sub.transcript());
    let (first, last) = (&subscribes[0], &subscribes[1]);
    assert_eq!(last.header("Expires"), Some("0"), "{}", last.text());
    assert_eq!(last.header("Event"), Some("presence"), "{}", last.text());
    assert_eq!(last.header("Call-ID"), first.header("Call-ID"));
    assert!(last.header("To").is_some_and(|t| t.contains(";tag=")), "{}", last.text());
    assert!(last.seq() > first.seq(), "{}", sub.transcript());
    // §4.2.1.2: the notifier's last NOTIFY.
    let gone = listen.wait_wire("the last NOTIFY", |w| {
        w.dir == Dir::Sent
            && w.is_request("NOTIFY")
            && w.header("Subscription-State") == Some("terminated;reason=timeout")
    });
    assert_eq!(gone.header("Content-Type"), Some("application/pidf+xml"), "{}", gone.text());
    listen.line("subscription ended");
}

/// Presence over TCP, closed and without a note; two `--accept` types,
/// the default Expires (3600); SIGTERM unsubscribes as SIGINT does.
#[test]
fn closed_presence_over_tcp_and_sigterm_unsubscribes() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--transport", "tcp", "--presence", "closed"]);
    let at = listen.bound("tcp");
    let target = format!("sip:carol@{at};transport=tcp");
    let mut sub = Sipline::start(&[
        "subscribe",
        &target,
        "--event",
        "presence",
        "--accept",
        "application/pidf+xml",
        "--accept",
        "application/xpidf+xml",
        "--transport",
        "tcp",
        "-v",
    ]);
    let presence = sub.line_starting("  presence of ");
    assert!(presence.starts_with("  presence of sip:carol@") && presence.ends_with(": closed"), "{presence}");
    let subscribe = sub.wait_wire("the SUBSCRIBE", sent_request("SUBSCRIBE"));
    assert!(subscribe.headers("Via").iter().all(|v| v.starts_with("SIP/2.0/TCP ")), "{}", subscribe.text());
    assert_eq!(subscribe.header("Expires"), Some("3600"), "{}", subscribe.text());
    assert_eq!(subscribe.header("Accept"), Some("application/pidf+xml, application/xpidf+xml"), "{}", subscribe.text());
    // The state line says the duration the notifier granted (its 200).
    let ok = sub.wait_wire("the 200", |w| w.dir == Dir::Received && w.is_response(200, "SUBSCRIBE"));
    let granted = ok.header("Expires").expect("the 200's Expires");
    sub.line(&format!("NOTIFY active ({granted} s)"));

    sub.signal(Signal::TERM);
    let status = sub.finish();
    assert_eq!(status.code(), Some(0), "{}", sub.transcript());
    sub.assert_order(&["200 OK", "unsubscribing", "unsubscribed"]);
    assert!(!sub.out.iter().any(|l| l.starts_with("  note:")), "{}", sub.transcript());
    listen.line("subscription ended");
}

/// `--presence` serves presence alone: another package gets 489 Bad Event
/// (RFC 6665 §4.2.1.1), printed as the failure, exit 1.
#[test]
fn another_package_gets_489() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--presence", "open", "-v"]);
    let at = listen.bound("udp");
    let mut sub = Sipline::start(&["subscribe", &format!("sip:bob@{at}"), "--event", "dialog"]);
    let status = sub.finish();
    assert_eq!(status.code(), Some(1), "{}", sub.transcript());
    assert!(sub.out.iter().any(|l| l == "failed: 489 Bad Event"), "{}", sub.transcript());
    let refused = listen.wait_wire("the 489", |w| w.dir == Dir::Sent && w.is_response(489, "SUBSCRIBE"));
    assert!(!listen.wire().iter().any(|w| w.is_request("NOTIFY")), "{}", refused.text());
    assert!(!listen.out.iter().any(|l| l.starts_with("SUBSCRIBE ")), "{}", listen.transcript());
}

/// A listener without `--presence` serves no package: SUBSCRIBE is not
/// allowed there (405, its Allow without SUBSCRIBE, RFC 3261 §8.2.1),
/// printed as the failure, exit 1.
#[test]
fn listen_without_presence_refuses() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "-v"]);
    let at = listen.bound("udp");
    let mut sub = Sipline::start(&["subscribe", &format!("sip:bob@{at}"), "--event", "presence"]);
    let status = sub.finish();
    assert_eq!(status.code(), Some(1), "{}", sub.transcript());
    assert!(sub.out.iter().any(|l| l == "failed: 405 Method Not Allowed"), "{}", sub.transcript());
    let refusal = listen.wait_wire("the 405", |w| w.dir == Dir::Sent && w.is_response(405, "SUBSCRIBE"));
    let allow = refusal.header("Allow").expect("Allow");
    assert!(!allow.split(',').any(|m| m.trim() == "SUBSCRIBE"), "{}", refusal.text());
}

/// An Expires under the notifier's minimum: 423 with Min-Expires (RFC
/// 6665 §4.2.1.1), printed, exit 1.
#[test]
fn too_brief_an_interval_gets_423() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--presence", "open"]);
    let at = listen.bound("udp");
    let mut sub =
        Sipline::start(&["subscribe", &format!("sip:bob@{at}"), "--event", "presence", "--expires", "5", "-v"]);
    let status = sub.finish();
    assert_eq!(status.code(), Some(1), "{}", sub.transcript());
    assert!(sub.out.iter().any(|l| l == "failed: 423 Interval Too Brief"), "{}", sub.transcript());
    let refused = sub.wait_wire("the 423", |w| w.dir == Dir::Received && w.is_response(423, "SUBSCRIBE"));
    let min: u32 = refused.header("Min-Expires").and_then(|m| m.parse().ok()).expect("Min-Expires");
    assert!(min > 5, "{}", refused.text());
}

/// Nobody at the port (TCP: the connection is refused): `failed: …`,
/// exit 1, well before any transaction timer.
#[test]
fn dead_port_fails() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a probe port").port();
    let target = format!("sip:bob@127.0.0.1:{port};transport=tcp");
    let mut sub = Sipline::start(&["subscribe", &target, "--event", "presence", "--transport", "tcp"]);
    // `finish` waits 20 s at most; UDP would take Timer F (32 s).
    let status = sub.finish();
    assert_eq!(status.code(), Some(1), "{}", sub.transcript());
    let failed = sub.line_starting("failed: ");
    assert!(failed.contains("connection"), "{failed}");
    assert!(!sub.out.iter().any(|l| l == "unsubscribed" || l.starts_with("NOTIFY")), "{}", sub.transcript());
}

/// Usage errors exit 2 and say what is wrong (clap's messages).
#[test]
fn usage_errors_exit_2() {
    let usage = |args: &[&str]| {
        let mut s = Sipline::start(args);
        let status = s.finish();
        assert_eq!(status.code(), Some(2), "{}", s.transcript());
        assert!(s.err.iter().any(|l| l == "For more information, try '--help'."), "{}", s.transcript());
        assert!(s.err.first().is_some_and(|l| l.starts_with("error: ")), "{}", s.transcript());
        s.err.join("\n")
    };
    let missing = "error: the following required arguments were not provided:";
    let said = usage(&["subscribe", "sip:bob@127.0.0.1:9"]);
    assert!(said.starts_with(missing) && said.contains("--event <EVENT>"), "{said}");
    let said = usage(&["subscribe", "--event", "presence"]);
    assert!(said.starts_with(missing) && said.contains("<TARGET>"), "{said}");
    assert!(usage(&["subscribe", "sip:bob@127.0.0.1:9", "--event"]).contains("--event"));
    assert!(
        usage(&["subscribe", "sip:bob@127.0.0.1:9", "--event", "presence", "--expires", "soon"]).contains("--expires")
    );
    assert!(usage(&["listen", "--presence", "away"]).contains("--presence"));
}

/// The test as notifier (a bare UDP socket): answers the SUBSCRIBE with
/// 200 granting 4 s, sends one NOTIFY with `body`, answers the refresh that
/// comes before the 4 s are up (§4.1.2.2) with 600 s, then ends the
/// subscription itself (NOTIFY terminated;reason=noresource).
/// `subscribe` must have asked for `accept` and printed `lines` for the
/// body; it exits 0 (it was accepted).
fn notified(event: &str, extra: &[&str], accept: &str, content_type: &str, body: &str, lines: &[&str]) {
    let peer = Peer::bind();
    let target = format!("sip:box@{}", peer.addr);
    let mut args = vec!["subscribe", &target, "--event", event, "--expires", "600", "-v"];
    args.extend(extra);
    let mut sub = Sipline::start(&args);

    let (subscribe, from) = peer.recv("the SUBSCRIBE", |w| w.is_request("SUBSCRIBE"));
    assert_eq!(subscribe.header("Event"), Some(event), "{}", subscribe.text());
    assert_eq!(subscribe.header("Expires"), Some("600"), "{}", subscribe.text());
    assert_eq!(subscribe.header("Accept"), Some(accept), "{}", subscribe.text());
    let contact = format!("Contact: <sip:notifier@{}>", peer.addr);
    peer.respond(from, &subscribe, 200, "OK", "n1", &["Expires: 4".to_owned(), contact.clone()]);
    // The NOTIFY goes to the subscriber's Contact, in the dialog.
    let remote_target = subscribe.header("Contact").expect("Contact").trim_matches(['<', '>']).to_owned();
    let notify = |seq: u32, state: &str, body: &str| {
        let head = vec![
            format!("NOTIFY {remote_target} SIP/2.0"),
            format!("Via: SIP/2.0/UDP {};branch=z9hG4bK-notify-{seq}", peer.addr),
            "Max-Forwards: 70".to_owned(),
            format!("From: {};tag=n1", subscribe.header("To").expect("To")),
            format!("To: {}", subscribe.header("From").expect("From")),
            format!("Call-ID: {}", subscribe.header("Call-ID").expect("Call-ID")),
            format!("CSeq: {seq} NOTIFY"),
            contact.clone(),
            format!("Event: {event}"),
            format!("Subscription-State: {state}"),
            format!("Content-Type: {content_type}"),
        ];
        peer.send(from, &head, body);
        peer.recv("the 200 to NOTIFY", |w| w.is_response(200, "NOTIFY"));
    };
    notify(1, "active;expires=4", body);
    sub.line("NOTIFY active (4 s)");
    for l in lines {
        sub.line(l);
    }

    // §4.1.2.2: refreshed in the dialog (at its remote target, with the
    // notifier's tag), asking the same duration again.
    let (refresh, from) = peer.recv("the refresh", |w| w.is_request("SUBSCRIBE"));
    assert_eq!(refresh.start_line(), format!("SUBSCRIBE sip:notifier@{} SIP/2.0", peer.addr));
    assert_eq!(refresh.header("Call-ID"), subscribe.header("Call-ID"));
    assert!(refresh.header("To").is_some_and(|t| t.ends_with(";tag=n1")), "{}", refresh.text());
    assert!(refresh.seq() > subscribe.seq(), "{}", refresh.text());
    assert_eq!(refresh.header("Expires"), Some("600"), "{}", refresh.text());
    peer.respond(from, &refresh, 200, "OK", "n1", &["Expires: 600".to_owned(), contact.clone()]);
    sub.line("refreshed for 600 s");

    // §4.2.2: the notifier ends it.
    notify(2, "terminated;reason=noresource", "");
    let status = sub.finish();
    assert_eq!(status.code(), Some(0), "{}", sub.transcript());
    sub.assert_order(&["200 OK", "NOTIFY active (4 s)", "refreshed for 600 s", "NOTIFY terminated (noresource)"]);
    assert_eq!(sub.out.last().map(String::as_str), Some("terminated (noresource)"), "{}", sub.transcript());
    // Ended by the notifier: no unsubscription.
    assert!(!sub.out.iter().any(|l| l == "unsubscribing"), "{}", sub.transcript());
    let subscribes = sub.wire().into_iter().filter(sent_request("SUBSCRIBE")).count();
    assert_eq!(subscribes, 2, "{}", sub.transcript());
}

/// Message waiting (RFC 3842): the counts per class.
#[test]
fn message_summary_is_read() {
    notified(
        "message-summary",
        &[],
        "application/simple-message-summary",
        "application/simple-message-summary",
        "Messages-Waiting: yes\r\nMessage-Account: sip:box@127.0.0.1\r\nVoice-Message: 2/8 (0/2)\r\n",
        &["  messages waiting: yes", "  Voice-Message: 2 new, 8 old"],
    );
}

/// Registrations (RFC 3680): the document's version and state, each AOR
/// and each contact.
#[test]
fn reginfo_is_read() {
    let body = "<?xml version=\"1.0\"?>\r\n\
        <reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"0\" state=\"full\">\r\n\
        <registration aor=\"sip:alice@example.com\" id=\"a7\" state=\"active\">\r\n\
        <contact id=\"76\" state=\"active\" event=\"registered\" expires=\"3600\">\r\n\
        <uri>sip:alice@192.0.2.4</uri>\r\n\
        </contact>\r\n\
        </registration>\r\n\
        </reginfo>\r\n";
    notified(
        "reg",
        &[],
        "application/reginfo+xml",
        "application/reginfo+xml",
        body,
        &[
            "  reginfo version 0 (full)",
            "  sip:alice@example.com: active",
            "    sip:alice@192.0.2.4 active (registered, expires 3600 s)",
        ],
    );
}

/// `--accept message/sipfrag` for a package the command does not know: the
/// Accept is what was given, and a sipfrag body (RFC 3420) reads as its
/// status line.
#[test]
fn sipfrag_is_read() {
    notified(
        "x-progress",
        &["--accept", "message/sipfrag"],
        "message/sipfrag",
        "message/sipfrag",
        "SIP/2.0 180 Ringing\r\n",
        &["  180 Ringing"],
    );
}

/// A body of a type not read is printed as text.
#[test]
fn unknown_body_is_printed_as_text() {
    notified(
        "x-text",
        &["--accept", "text/plain"],
        "text/plain",
        "text/plain",
        "first line\r\nsecond line\r\n",
        &["  first line", "  second line"],
    );
}
