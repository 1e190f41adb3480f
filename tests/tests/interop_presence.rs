//! Presence (RFC 3856 over RFC 6665 subscriptions, PIDF bodies per RFC
//! 3863) between sipline endpoints and peers nobody here wrote, on
//! loopback:
//!
//! 1. linphone (`linphonec`, its `friend add`) watches a sipline endpoint,
//!    both registered at `sipline serve` (the CLI binary): its SUBSCRIBE
//!    reaches the endpoint through serve, the endpoint accepts with PIDF
//!    (open, with a note), linphone prints the friend online, then
//!    offline after a NOTIFY with `closed`;
//! 2. the reverse: a sipline endpoint watches linphone (its PIDF, open)
//!    until linphone quits (terminated);
//! 3. a sipline endpoint watches baresip (its `presence` module as
//!    notifier): NOTIFYs with baresip's PIDF, `open` and then `closed`
//!    after baresip's `presence_offline`; the unsubscription ends it;
//! 4. baresip watches a sipline endpoint (its `presence` module as
//!    subscriber, for a contact marked `presence=p2p`): baresip lists the
//!    contact online, then offline;
//! 5. Kamailio's presence server (`presence` and `presence_xml`, Debian
//!    kamailio-presence-modules) as notifier of what a sipline endpoint
//!    PUBLISHed (RFC 3903), to another sipline endpoint.
//!
//! The sipline endpoints run here on the tokio runtime. Every wait is
//! bounded; every process runs under `timeout` and is stopped on drop.

mod events_support;

use events_support::{header_any, run, subscription_event, wait_for, Serve};
use sipline::endpoint::{
    Body, EndpointConfig, Event, Request, SubState, Subscribe, SubscriptionEnd, SubscriptionEvent,
};
use sipline::event::{Basic, Note, Presence, Tuple};
use sipline::message::Method;
use sipline::transport::Transport;
use sipline_tests::baresip::{Baresip, BaresipOptions};
use sipline_tests::calls::{self, text, WAIT};
use sipline_tests::kamailio::{wait_until, Kamailio, KamailioOptions, TempDir};
use sipline_tests::linphone::{user, Direction, Linphone, LinphoneOptions};
use sipline_tests::registered::SipServer;
use sipline_tests::runtimes::{Runtime, Tokio};

/// A PIDF document for `aor`: one tuple, `basic`, with `note`.
fn pidf(aor: &str, basic: Basic, note: &str) -> Body {
    let doc = Presence::new(aor, Tuple::new("t1", basic).with_contact(aor).with_note(Note::new(note).with_lang("en")));
    Body::new(Presence::CONTENT_TYPE, doc.to_body().expect("a valid PIDF document"))
}

/// An endpoint config for `name` that serves the presence package.
fn presence_config(name: &str) -> EndpointConfig {
    let mut config = EndpointConfig::new(&user(name).aor());
    config.events = vec!["presence".to_owned()];
    config
}

/// (1) linphone watches a sipline endpoint's presence through serve.
#[test]
fn linphone_watches_sipline_presence_through_serve() {
    let serve = Serve::start();
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, &serve, "alice", presence_config("alice"));
    let mut options = LinphoneOptions::new(user("carol"), serve.udp_addr());
    options.gruu = true;
    let carol = Linphone::start(&options);
    let aor = user("alice").aor();

    // linphone subscribes to its new friend.
    carol.command(&format!("friend add alice {aor}")).expect("friend add");
    let mut seen = Vec::new();
    let incoming = wait_for(&rt, &mut events, "SUBSCRIBE from linphone", WAIT, &mut seen, |e| {
        matches!(e, Event::IncomingSubscription { .. })
    });
    let Some(Event::IncomingSubscription { subscription, event, from, to, accept, source, request, .. }) = incoming
    else {
        panic!("linphone's SUBSCRIBE did not come:\n{}\n--- serve ---\n{}", carol.report(), serve.log());
    };
    let subscribe = text(&request);
    assert_eq!(event, "presence", "{subscribe}");
    assert!(from.starts_with(&user("carol").aor()), "From {from}:\n{subscribe}");
    assert!(to.starts_with(&aor), "To {to}:\n{subscribe}");
    // linphone sends no Accept: PIDF, the package's default (RFC 3856 §6.2).
    assert!(accept.is_empty() || accept.iter().any(|a| a == Presence::CONTENT_TYPE), "Accept {accept:?}:\n{subscribe}");
    assert_eq!(source.remote, serve.udp_addr(), "not through serve:\n{subscribe}");
    let sent = carol.wait_sip(WAIT, |m| m.direction == Direction::Sent && m.is_request("SUBSCRIBE"));
    assert!(sent.is_some_and(|m| m.header("Event") == Some("presence")), "{}", carol.sip_summary());

    // alice accepts: 200, then NOTIFY with PIDF open + note.
    run(alice.accept_subscription(subscription, SubState::Active, Some(pidf(&aor, Basic::Open, "in the lab"))))
        .expect("accept");
    let online = carol.wait_line(WAIT, |l| l.starts_with("Friend ") && l.contains("alice@sipline.test"));
    let online = online.unwrap_or_else(|| panic!("linphone did not show alice's status\n{}", carol.report()));
    assert!(online.ends_with(" is Online"), "{online}");
    let notify = carol
        .wait_sip(WAIT, |m| m.direction == Direction::Received && m.is_request("NOTIFY"))
        .unwrap_or_else(|| panic!("no NOTIFY in linphone's log:\n{}", carol.sip_summary()));
    assert_eq!(notify.header("Content-Type"), Some(Presence::CONTENT_TYPE), "{}", notify.text);
    assert!(notify.text.contains("<basic>open</basic>") && notify.text.contains("in the lab"), "{}", notify.text);
    assert!(notify.header("Subscription-State").is_some_and(|s| s.starts_with("active")), "{}", notify.text);
    let call_id = notify.header("Call-ID").unwrap_or_default().to_owned();
    let ok = carol.wait_sip(WAIT, |m| {
        m.direction == Direction::Sent && m.is_response(200) && m.cseq_method() == Some("NOTIFY") && m.in_call(&call_id)
    });
    assert!(ok.is_some(), "linphone did not answer the NOTIFY 200:\n{}", carol.sip_summary());
    // The NOTIFY went through serve (it record-routed the SUBSCRIBE).
    assert!(serve.relayed("NOTIFY sip:", &call_id), "the NOTIFY did not go through serve:\n{}", serve.log());

    // alice goes offline: linphone shows it.
    run(alice.notify(subscription, SubState::Active, Some(pidf(&aor, Basic::Closed, "gone home")))).expect("notify");
    let offline = carol.wait_line(WAIT, |l| l.starts_with("Friend ") && l.ends_with(" is Offline"));
    assert!(offline.is_some(), "linphone did not show alice offline\n{}", carol.report());
    rt.shutdown(&alice);
}

/// Starts baresip as carol at `server` with the presence module, and
/// `contacts` (each a `"Name" <uri>;presence=p2p` line) to watch.
fn baresip_with_presence<S: SipServer>(server: &S, contacts: &[&str]) -> Baresip {
    let mut options = BaresipOptions::new(user("carol"), server.udp_addr());
    options.presence = true;
    options.contacts = contacts.iter().map(|c| (*c).to_owned()).collect();
    Baresip::start(&options)
}

/// (3) A sipline endpoint watches baresip's presence through serve.
#[test]
fn sipline_watches_baresip_presence_through_serve() {
    let serve = Serve::start();
    let carol = baresip_with_presence(&serve, &[]);
    // baresip starts with its status unknown, which its PIDF says as
    // `<basic>?</basic>` (not a PIDF value, RFC 3863 §4.1.4): online first.
    carol.command("presence_online", "").unwrap_or_else(|e| panic!("presence_online: {e}"));
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, &serve, "alice", EndpointConfig::new(&user("alice").aor()));
    let mut seen = Vec::new();
    let mut sub = Subscribe::new(&user("carol").aor(), "presence");
    sub.expires = 600;
    sub.accept = vec![Presence::CONTENT_TYPE.to_owned()];
    let s = run(alice.subscribe(sub)).expect("SUBSCRIBE sent");

    // 200 and the first NOTIFY (in either order): open.
    let mut accepted = false;
    let mut first = None;
    while !(accepted && first.is_some()) {
        match subscription_event(&rt, &mut events, s, "baresip's answer", &mut seen) {
            SubscriptionEvent::Accepted(ok) => {
                assert_eq!(ok.code, 200, "{}", text(&ok.bytes));
                accepted = true;
            }
            SubscriptionEvent::Notified(n) if first.is_none() => first = Some(n),
            other => panic!("baresip's subscription: {other:?}\n{}", serve.log()),
        }
    }
    let first = first.expect("a NOTIFY");
    assert_eq!(first.state, SubState::Active, "{}", text(&first.request));
    let body = first.body.as_ref().unwrap_or_else(|| panic!("no body:\n{}", text(&first.request)));
    assert_eq!(body.content_type, Presence::CONTENT_TYPE);
    let doc = Presence::parse(&body.bytes).unwrap_or_else(|e| panic!("{e}:\n{}", text(&body.bytes)));
    assert!(doc.is_open(), "{doc:?}");
    assert!(doc.entity.contains("carol"), "{doc:?}");
    let notify = text(&first.request);
    assert!(header_any(&notify, "User-Agent", "").is_some_and(|u| u.contains("baresip")), "{notify}");
    // It came through serve.
    let call_id = header_any(&notify, "Call-ID", "i").expect("Call-ID");
    assert!(serve.relayed("NOTIFY sip:", &call_id), "the NOTIFY did not go through serve:\n{}", serve.log());

    // baresip goes offline: a NOTIFY with closed.
    carol.command("presence_offline", "").unwrap_or_else(|e| panic!("presence_offline: {e}"));
    let closed = loop {
        match subscription_event(&rt, &mut events, s, "NOTIFY closed", &mut seen) {
            SubscriptionEvent::Notified(n) => {
                let body = n.body.clone().unwrap_or_else(|| panic!("no body:\n{}", text(&n.request)));
                let doc = Presence::parse(&body.bytes).unwrap_or_else(|e| panic!("{e}:\n{}", text(&body.bytes)));
                if !doc.is_open() {
                    break n;
                }
            }
            other => panic!("while waiting for closed: {other:?}"),
        }
    };
    assert_eq!(closed.state, SubState::Active, "{}", text(&closed.request));

    // alice unsubscribes: baresip's last NOTIFY says terminated.
    run(alice.unsubscribe(s)).expect("unsubscribe");
    let end = loop {
        match subscription_event(&rt, &mut events, s, "end of the subscription", &mut seen) {
            SubscriptionEvent::Ended(end) => break end,
            SubscriptionEvent::Notified(_) | SubscriptionEvent::Accepted(_) | SubscriptionEvent::Refreshed { .. } => {}
            other => panic!("while unsubscribing: {other:?}"),
        }
    };
    assert!(
        matches!(end, SubscriptionEnd::Unsubscribed | SubscriptionEnd::Terminated { .. }),
        "{end:?}\n{}",
        serve.log()
    );
    rt.shutdown(&alice);
}

/// (4) baresip watches a sipline endpoint's presence through serve.
#[test]
fn baresip_watches_sipline_presence_through_serve() {
    let serve = Serve::start();
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, &serve, "alice", presence_config("alice"));
    let aor = user("alice").aor();
    let carol = baresip_with_presence(&serve, &[&format!("\"Alice\" <{aor}>;presence=p2p")]);

    let mut seen = Vec::new();
    let incoming = wait_for(&rt, &mut events, "SUBSCRIBE from baresip", WAIT, &mut seen, |e| {
        matches!(e, Event::IncomingSubscription { .. })
    });
    let Some(Event::IncomingSubscription { subscription, event, from, source, request, .. }) = incoming else {
        panic!("baresip's SUBSCRIBE did not come\n--- serve ---\n{}", serve.log());
    };
    let subscribe = text(&request);
    assert_eq!(event, "presence", "{subscribe}");
    assert!(from.starts_with(&user("carol").aor()), "From {from}:\n{subscribe}");
    assert_eq!(source.remote, serve.udp_addr(), "not through serve:\n{subscribe}");
    run(alice.accept_subscription(subscription, SubState::Active, Some(pidf(&aor, Basic::Open, "in the lab"))))
        .expect("accept");
    // baresip's `contacts` lists each contact with its presence.
    let shows = |status: &str| {
        let mut last = String::new();
        let shown = wait_until(WAIT, || {
            last = carol.command("contacts", "").unwrap_or_default();
            last.lines().any(|l| l.contains(&aor) && l.contains(status))
        });
        assert!(shown, "baresip does not show alice {status}: {last:?}");
    };
    shows("Online");
    let trace = carol.sip_trace();
    let notify = trace.iter().find(|m| m.is_request("NOTIFY")).expect("a NOTIFY in baresip's trace");
    assert_eq!(notify.header("Content-Type"), Some(Presence::CONTENT_TYPE), "{}", notify.text);
    let cseq = notify.header("CSeq").unwrap_or_default().to_owned();
    assert!(
        trace.iter().any(|m| m.is_response(200) && m.header("CSeq") == Some(cseq.as_str())),
        "baresip did not answer the NOTIFY 200"
    );

    run(alice.notify(subscription, SubState::Active, Some(pidf(&aor, Basic::Closed, "gone home")))).expect("notify");
    shows("Offline");
    rt.shutdown(&alice);
}

/// A Kamailio presence server for [`DOMAIN`] (`presence` and
/// `presence_xml`, everything in memory; db_text tables in a directory of
/// the test's own for what the modules insist on reading), no
/// authentication: PUBLISH and SUBSCRIBE (initial or in a dialog) for the
/// domain go to `handle_publish` / `handle_subscribe`, anything else gets
/// 405. Started by [`Kamailio::start`] with its defines, plus
/// `SIPLINE_DB_URL`.
const PRESENCE_CFG: &str = r#"#!KAMAILIO
# Written by tests/tests/interop_presence.rs: a presence server only.
debug=SIPLINE_DEBUG
log_stderror=yes
auto_aliases=no
exit_timeout=1
dns=no
rev_dns=no
use_dns_cache=no
dns_try_ipv6=no
listen=udp:SIPLINE_IP:SIPLINE_PORT
listen=tcp:SIPLINE_IP:SIPLINE_PORT
alias=SIPLINE_DOMAIN
server_header="Server: sipline-interop (Kamailio presence)"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "db_text.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"

modparam("presence", "db_url", SIPLINE_DB_URL)
# Subscriptions and publications in memory only.
modparam("presence", "subs_db_mode", 0)
modparam("presence", "publ_cache", 2)
modparam("presence_xml", "db_url", SIPLINE_DB_URL)
# Every watcher may see every presentity (no XCAP authorization rules).
modparam("presence_xml", "force_active", 1)

request_route {
	xlog("L_INFO", "sipline: request $rm $ru from $si:$sp/$proto (From $fu, Call-ID $ci)\n");
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {
		sl_send_reply("200", "OK");
		exit;
	}
	# The clients' outbound proxy Route names this server.
	remove_hf("Route");
	if (is_method("PUBLISH|SUBSCRIBE") && uri == myself) {
		if (!t_newtran()) {
			sl_reply_error();
			exit;
		}
		if (is_method("PUBLISH")) {
			handle_publish();
		} else {
			handle_subscribe();
		}
		t_release();
		exit;
	}
	if (is_method("ACK")) {
		exit;
	}
	sl_send_reply("405", "Method Not Allowed");
}

onreply_route {
	xlog("L_INFO", "sipline: reply $rs $rr to $rm from $si:$sp/$proto\n");
}
"#;

/// The db_text tables the presence modules read, copied from Kamailio's
/// own (Debian: /usr/share/kamailio/dbtext/kamailio) into `dir`.
fn presence_tables(dir: &std::path::Path) -> Result<(), String> {
    let source = ["/usr/share/kamailio/dbtext/kamailio", "/usr/local/share/kamailio/dbtext/kamailio"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|d| d.join("presentity").is_file())
        .ok_or("no db_text tables of Kamailio's (package kamailio)")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for table in ["version", "presentity", "active_watchers", "watchers", "xcap"] {
        std::fs::copy(source.join(table), dir.join(table)).map_err(|e| format!("{table}: {e}"))?;
    }
    Ok(())
}

/// Makes sure Kamailio's presence modules (Debian
/// kamailio-presence-modules) are there, next to its TLS module: installed
/// by `scripts/install-interop-deps` if not (unless `SIPLINE_NO_INSTALL`
/// is set). Panics with the reason when they cannot be had.
fn ensure_presence_modules() {
    let programs = sipline_tests::kamailio::programs();
    let dir = programs.tls_module.parent().expect("Kamailio's module directory").to_path_buf();
    let there = || ["presence.so", "presence_xml.so"].iter().all(|m| dir.join(m).is_file());
    if there() {
        return;
    }
    let script = sipline_tests::kamailio::install_script();
    assert!(
        std::env::var_os("SIPLINE_NO_INSTALL").is_none(),
        "Kamailio's presence modules are missing from {} (package kamailio-presence-modules); \
         SIPLINE_NO_INSTALL is set, so {} was not run",
        dir.display(),
        script.display()
    );
    let out = std::process::Command::new(&programs.timeout)
        .arg("--kill-after=10")
        .arg("1800")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && there(), "{} did not install the presence modules:\n{log}", script.display());
}

/// An endpoint for `name` sending everything through `kamailio`.
fn through(kamailio: &Kamailio, name: &str) -> EndpointConfig {
    let mut config = EndpointConfig::new(&user(name).aor()).listen(Transport::Udp, calls::loopback(0));
    config.outbound_proxy = Some(format!("sip:{}", kamailio.udp_addr()));
    config
}

/// (5) Kamailio's presence server as notifier: bob (a sipline endpoint)
/// PUBLISHes PIDF (RFC 3903), alice (another) subscribes to bob's
/// presence there and gets Kamailio's NOTIFY with bob's state (open, his
/// note); bob publishes `closed` and alice hears it; alice unsubscribes.
#[test]
fn kamailio_presence_server_notifies_what_sipline_published() {
    ensure_presence_modules();
    let dir = TempDir::new("kamailio-presence");
    let db = dir.path().join("db");
    presence_tables(&db).unwrap_or_else(|e| panic!("{e}"));
    let cfg = dir.write("presence.cfg", PRESENCE_CFG);
    let kamailio = Kamailio::start(&KamailioOptions {
        config: Some(cfg),
        defines: vec![format!("SIPLINE_DB_URL=\"text://{}\"", db.display())],
        ..KamailioOptions::default()
    });
    let rt = Tokio::new();
    let (bob, _bob_events) = rt.bind(through(&kamailio, "bob")).expect("bind bob");
    let (alice, mut events) = rt.bind(through(&kamailio, "alice")).expect("bind alice");
    let bob_aor = user("bob").aor();

    // bob publishes: open, with a note.
    let publish = |body: Body, etag: Option<&str>| {
        let mut request = Request::new(Method::Publish, &bob_aor);
        request.headers.push(("Event".to_owned(), "presence".to_owned()));
        request.headers.push(("Expires".to_owned(), "600".to_owned()));
        if let Some(etag) = etag {
            request.headers.push(("SIP-If-Match".to_owned(), etag.to_owned()));
        }
        request.content_type = Some(body.content_type);
        request.body = body.bytes;
        rt.send(&bob, request).unwrap_or_else(|e| panic!("PUBLISH: {e}\n{}", kamailio.log()))
    };
    let ok = publish(pidf(&bob_aor, Basic::Open, "at the desk"), None);
    assert_eq!(ok.code, 200, "{}", text(&ok.bytes));
    let etag =
        header_any(&text(&ok.bytes), "SIP-ETag", "").unwrap_or_else(|| panic!("no SIP-ETag:\n{}", text(&ok.bytes)));

    // alice subscribes to bob's presence at the server.
    let mut sub = Subscribe::new(&bob_aor, "presence");
    sub.expires = 600;
    sub.accept = vec![Presence::CONTENT_TYPE.to_owned()];
    let s = run(alice.subscribe(sub)).expect("SUBSCRIBE sent");
    let mut seen = Vec::new();
    let first = loop {
        match subscription_event(&rt, &mut events, s, "Kamailio's NOTIFY", &mut seen) {
            SubscriptionEvent::Accepted(ok) => assert!(ok.code / 100 == 2, "{}", text(&ok.bytes)),
            SubscriptionEvent::Notified(n) => break n,
            other => panic!("subscription at Kamailio: {other:?}\n{}", kamailio.log()),
        }
    };
    let notify = text(&first.request);
    assert_eq!(first.state, SubState::Active, "{notify}");
    // Kamailio's own NOTIFY, from its presence module.
    assert!(header_any(&notify, "User-Agent", "").is_some_and(|u| u.starts_with("kamailio")), "{notify}");
    let via = format!("SIP/2.0/UDP {};", kamailio.udp_addr());
    assert!(header_any(&notify, "Via", "v").is_some_and(|v| v.starts_with(&via)), "{notify}");
    let body = first.body.clone().unwrap_or_else(|| panic!("no body:\n{notify}"));
    assert_eq!(body.content_type, Presence::CONTENT_TYPE, "{notify}");
    let doc = Presence::parse(&body.bytes).unwrap_or_else(|e| panic!("{e}:\n{notify}"));
    assert!(doc.is_open(), "{notify}");
    assert!(doc.entity.contains("bob@sipline.test"), "{notify}");
    let notes: Vec<&str> = doc.tuples.iter().flat_map(|t| t.notes.iter().map(|n| n.text.as_ref())).collect();
    assert!(notes.contains(&"at the desk"), "{notes:?}\n{notify}");

    // bob goes away: alice hears closed.
    let ok = publish(pidf(&bob_aor, Basic::Closed, "out for lunch"), Some(&etag));
    assert_eq!(ok.code, 200, "{}", text(&ok.bytes));
    let closed = loop {
        match subscription_event(&rt, &mut events, s, "NOTIFY closed", &mut seen) {
            SubscriptionEvent::Notified(n) => {
                let body = n.body.clone().unwrap_or_else(|| panic!("no body:\n{}", text(&n.request)));
                let doc = Presence::parse(&body.bytes).unwrap_or_else(|e| panic!("{e}:\n{}", text(&n.request)));
                if !doc.is_open() {
                    break doc
                        .tuples
                        .iter()
                        .flat_map(|t| t.notes.iter().map(|n| n.text.to_string()))
                        .collect::<Vec<_>>();
                }
            }
            SubscriptionEvent::Accepted(_) | SubscriptionEvent::Refreshed { .. } => {}
            other => panic!("while waiting for closed: {other:?}\n{}", kamailio.log()),
        }
    };
    assert!(closed.iter().any(|n| n == "out for lunch"), "{closed:?}");

    // alice unsubscribes: Kamailio's last NOTIFY says terminated.
    run(alice.unsubscribe(s)).expect("unsubscribe");
    let end = loop {
        if let SubscriptionEvent::Ended(end) = subscription_event(&rt, &mut events, s, "the end", &mut seen) {
            break end;
        }
    };
    assert!(matches!(end, SubscriptionEnd::Unsubscribed | SubscriptionEnd::Terminated { .. }), "{end:?}");
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// (2) A sipline endpoint watches linphone's presence through serve:
/// linphone NOTIFYs its PIDF (open) to a watcher that is its friend
/// (linphonec cannot accept a stranger's subscription: it answers 200 and
/// never NOTIFYs), and ends the subscription when alice unsubscribes.
#[test]
fn sipline_watches_linphone_presence_through_serve() {
    let serve = Serve::start();
    let mut options = LinphoneOptions::new(user("carol"), serve.udp_addr());
    options.gruu = true;
    let mut carol = Linphone::start(&options);
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, &serve, "alice", EndpointConfig::new(&user("alice").aor()));
    // alice is carol's friend, so carol lets her watch (and tries to watch
    // her back: alice serves no event package, 405).
    carol.command(&format!("friend add alice {}", user("alice").aor())).expect("friend add");
    let befriended = carol.wait_sip(WAIT, |m| m.direction == Direction::Sent && m.is_request("SUBSCRIBE"));
    assert!(befriended.is_some(), "linphone did not take the friend:\n{}", carol.sip_summary());

    let mut sub = Subscribe::new(&user("carol").aor(), "presence");
    sub.expires = 600;
    sub.accept = vec![Presence::CONTENT_TYPE.to_owned()];
    let s = run(alice.subscribe(sub)).expect("SUBSCRIBE sent");
    let mut seen = Vec::new();
    let mut accepted = false;
    let mut first = None;
    while !(accepted && first.is_some()) {
        match subscription_event(&rt, &mut events, s, "linphone's answer", &mut seen) {
            SubscriptionEvent::Accepted(ok) => {
                assert_eq!(ok.code, 200, "{}", text(&ok.bytes));
                accepted = true;
            }
            SubscriptionEvent::Notified(n) if first.is_none() => first = Some(n),
            other => panic!("linphone's subscription: {other:?}\n{}", carol.sip_summary()),
        }
    }
    let first = first.expect("a NOTIFY");
    let notify = text(&first.request);
    assert_eq!(first.state, SubState::Active, "{notify}");
    assert!(header_any(&notify, "User-Agent", "").is_some_and(|u| u.starts_with("Linphone")), "{notify}");
    let via = format!("SIP/2.0/UDP {};", serve.udp_addr());
    assert!(header_any(&notify, "Via", "v").is_some_and(|v| v.starts_with(&via)), "not through serve:\n{notify}");
    let body = first.body.as_ref().unwrap_or_else(|| panic!("no body:\n{notify}"));
    assert_eq!(body.content_type, Presence::CONTENT_TYPE, "{notify}");
    // Its PIDF carries linphone's own namespace inside <status>: skipped.
    let doc = Presence::parse(&body.bytes).unwrap_or_else(|e| panic!("{e}:\n{notify}"));
    assert!(doc.is_open(), "{doc:?}");
    assert_eq!(doc.entity, user("carol").aor(), "{doc:?}");

    // linphone quits: its last NOTIFY says terminated, which ends the
    // subscription. (An unsubscription it answers 200 but without that
    // NOTIFY, RFC 6665 §4.2.1.2; sipline then waits out Timer N.)
    carol.stop();
    let end = loop {
        match subscription_event(&rt, &mut events, s, "end of the subscription", &mut seen) {
            SubscriptionEvent::Ended(end) => break end,
            SubscriptionEvent::Notified(n) => assert!(n.state != SubState::Pending, "{}", text(&n.request)),
            other => panic!("while linphone quits: {other:?}"),
        }
    };
    assert!(matches!(end, SubscriptionEnd::Terminated { .. }), "{end:?}");
    rt.shutdown(&alice);
}
