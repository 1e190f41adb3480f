//! `--json` (issue 22): every line a command prints about what happens is
//! one JSON object, `{"event": KIND, …fields, "text": the line it replaces}`,
//! for `listen`, `call` and `subscribe` alike.

mod support;

use rustix::process::Signal;
use serde_json::Value;
use support::cmd::Sipline;

/// Every line of `out` as JSON (each must parse).
fn objects(out: &[String]) -> Vec<Value> {
    out.iter().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| o["event"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn every_line_is_an_event_object() {
    let mut bob = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "--presence", "open:here", "--json"]);
    let at = bob.wait_out("bob bound", |l| l.contains("\"event\":\"bound\""));
    let bound: Value = serde_json::from_str(&at).unwrap();
    let address = bound["address"].as_str().unwrap().to_owned();
    let target = format!("sip:bob@{address}");

    let mut call = Sipline::start(&["call", &target, "--hangup-after", "0.2", "--json"]);
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    let events = objects(&call.out);
    let answered = events.iter().find(|o| o["event"] == "response").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!((answered["code"].as_u64(), answered["reason"].as_str()), (Some(200), Some("OK")));
    assert_eq!(answered["text"], "200 OK");
    assert!(kinds(&events).ends_with(&["hangup".to_owned(), "ended".to_owned()]), "{events:?}");

    let mut watch = Sipline::start(&["subscribe", &target, "--event", "presence", "--json"]);
    watch.wait_out("the first NOTIFY", |l| l.contains("\"event\":\"notify\""));
    watch.signal(Signal::INT);
    let status = watch.finish();
    assert_eq!(status.code(), Some(0), "{}", watch.transcript());
    let events = objects(&watch.out);
    let notify = events.iter().find(|o| o["event"] == "notify").unwrap();
    assert_eq!(notify["state"], "active");
    assert_eq!(notify["content_type"], "application/pidf+xml");
    assert_eq!(notify["summary"][1], "note: here");
    assert_eq!(events.last().map(|o| o["why"].clone()), Some(Value::from("unsubscribed")), "{events:?}");

    // Bob's side: the call and the subscription, as events.
    bob.wait_out("bob's subscription end", |l| l.contains("\"event\":\"subscription_ended\""));
    bob.signal(Signal::TERM);
    bob.finish();
    let bob_events = kinds(&objects(&bob.out));
    for kind in ["incoming_call", "answered", "ack", "ended", "subscribed", "subscription_ended"] {
        assert!(bob_events.iter().any(|k| k == kind), "{kind} missing: {bob_events:?}");
    }
}
