//! `sipline subscribe TARGET --event EVENT`: one subscription (RFC 6665);
//! prints each NOTIFY — its state and its body, read for the packages the
//! stack knows (presence, reg, message-summary, refer) — until the
//! notifier ends it or Ctrl-C, which unsubscribes first.

use crate::out::emit;
use serde_json::json;
use sipline::endpoint::{Body, Event, Notification, SubState, Subscribe, SubscriptionEnd, SubscriptionEvent};
use sipline::event::{MessageSummary, Presence, Reginfo, StatusFrag};
use std::time::Duration;

/// How long an unsubscription may take to finish (Timer N, 64·T1, and a
/// little more).
const UNSUBSCRIBE_WAIT: Duration = Duration::from_secs(35);

/// What `subscribe` asks for.
pub(crate) struct Asked<'a> {
    pub(crate) target: &'a str,
    pub(crate) event: &'a str,
    pub(crate) expires: Option<u32>,
    pub(crate) accept: &'a [String],
}

/// Subscribes and prints until the end. Whether the subscription was
/// accepted.
pub(crate) async fn run(
    endpoint: &sipline_tokio::Endpoint,
    events: &mut sipline_tokio::Events,
    asked: &Asked<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> bool {
    let mut sub = Subscribe::new(asked.target, asked.event);
    if let Some(e) = asked.expires {
        sub.expires = e;
    }
    sub.accept = if asked.accept.is_empty() { default_accept(asked.event) } else { asked.accept.to_vec() };
    let subscription = match endpoint.subscribe(sub).await {
        Ok(s) => s,
        Err(e) => {
            emit("failed", &format!("failed: {e}"), json!({"error": e.to_string()}));
            return false;
        }
    };
    tokio::pin!(stop);
    let mut accepted = false;
    let mut ending_by: Option<tokio::time::Instant> = None;
    loop {
        let give_up = async {
            match ending_by {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop, if ending_by.is_none() => {
                emit("unsubscribing", "unsubscribing", json!({}));
                ending_by = Some(tokio::time::Instant::now() + UNSUBSCRIBE_WAIT);
                if endpoint.unsubscribe(subscription).await.is_err() {
                    return accepted;
                }
            }
            () = give_up => {
                let secs = UNSUBSCRIBE_WAIT.as_secs();
                emit("failed", &format!("no end to the unsubscription in {secs} s"), json!({"error": "unsubscription unanswered"}));
                return accepted;
            }
            event = events.next() => {
                let Some(event) = event else { return accepted };
                match event {
                    Event::Subscription { subscription: s, event } if s == subscription => match event {
                        SubscriptionEvent::Accepted(r) => {
                            accepted = true;
                            emit("response", &format!("{} {}", r.code, r.reason), json!({"code": r.code, "reason": r.reason}));
                        }
                        SubscriptionEvent::Notified(n) => {
                            accepted = true;
                            print_notify(&n);
                        }
                        SubscriptionEvent::Refreshed { expires } => {
                            emit("refreshed", &format!("refreshed for {expires} s"), json!({"expires": expires}));
                        }
                        SubscriptionEvent::Ended(why) => {
                            let text = end_text(&why);
                            emit("ended", &text, json!({"why": text}));
                            return accepted;
                        }
                        _ => {}
                    },
                    // A fork's subscription (RFC 6665 §4.1.2.4): its NOTIFYs too.
                    Event::Subscription { event: SubscriptionEvent::Notified(n), .. } => print_notify(&n),
                    Event::ShutDown => return accepted,
                    _ => {}
                }
            }
        }
    }
}

/// The body types a package's NOTIFYs carry.
fn default_accept(event: &str) -> Vec<String> {
    let t = match event.split(';').next().unwrap_or_default() {
        "presence" => Presence::CONTENT_TYPE,
        "reg" => Reginfo::CONTENT_TYPE,
        "message-summary" => MessageSummary::CONTENT_TYPE,
        "refer" => "message/sipfrag",
        _ => return Vec::new(),
    };
    vec![t.to_owned()]
}

fn end_text(why: &SubscriptionEnd) -> String {
    match why {
        SubscriptionEnd::Terminated { reason, retry_after } => {
            let reason = reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            let retry = retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default();
            format!("terminated{reason}{retry}")
        }
        SubscriptionEnd::Unsubscribed => "unsubscribed".to_owned(),
        SubscriptionEnd::Failed(e) => format!("failed: {e}"),
        SubscriptionEnd::NoNotify => "failed: no NOTIFY came".to_owned(),
        SubscriptionEnd::Expired => "expired".to_owned(),
        other => format!("ended: {other:?}"),
    }
}

/// `NOTIFY active (600 s)` and the body, read where the package is known.
fn print_notify(n: &Notification) {
    let state = match n.state {
        SubState::Active => "active",
        SubState::Pending => "pending",
        SubState::Terminated => "terminated",
    };
    let detail = match (n.expires, &n.reason) {
        (Some(e), _) if n.state != SubState::Terminated => format!(" ({e} s)"),
        (_, Some(r)) => format!(" ({r})"),
        _ => String::new(),
    };
    let lines = n.body.as_ref().map(describe_body).unwrap_or_default();
    let mut text = format!("NOTIFY {state}{detail}");
    for line in &lines {
        text.push_str("\n  ");
        text.push_str(line);
    }
    let body = n.body.as_ref().map(|b| String::from_utf8_lossy(&b.bytes).into_owned());
    let fields = json!({
        "state": state,
        "expires": n.expires,
        "reason": n.reason,
        "content_type": n.body.as_ref().map(|b| b.content_type.clone()),
        "body": body,
        "summary": lines,
    });
    emit("notify", &text, fields);
}

/// The lines that tell what a NOTIFY body says.
fn describe_body(body: &Body) -> Vec<String> {
    let media = body.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let read = match media.as_str() {
        "application/pidf+xml" => Presence::parse(&body.bytes).ok().map(|p| presence_lines(&p)),
        "application/reginfo+xml" => Reginfo::parse(&body.bytes).ok().map(|r| reginfo_lines(&r)),
        "application/simple-message-summary" => MessageSummary::parse(&body.bytes).ok().map(|m| summary_lines(&m)),
        "message/sipfrag" => StatusFrag::parse(&body.bytes).ok().map(|f| vec![format!("{} {}", f.code, f.reason)]),
        _ => None,
    };
    read.unwrap_or_else(|| String::from_utf8_lossy(&body.bytes).lines().map(str::to_owned).collect())
}

fn presence_lines(p: &Presence<'_>) -> Vec<String> {
    let mut lines = vec![format!("presence of {}: {}", p.entity, if p.is_open() { "open" } else { "closed" })];
    for t in &p.tuples {
        for n in &t.notes {
            lines.push(format!("note: {}", n.text));
        }
    }
    for n in p.notes.iter().chain(p.persons.iter().flat_map(|x| x.notes.iter())) {
        lines.push(format!("note: {}", n.text));
    }
    lines
}

fn reginfo_lines(r: &Reginfo<'_>) -> Vec<String> {
    let mut lines = vec![format!("reginfo version {} ({})", r.version, r.state.as_str())];
    for reg in &r.registrations {
        lines.push(format!("{}: {}", reg.aor, reg.state.as_str()));
        for c in &reg.contacts {
            let expires = c.expires.map(|e| format!(", expires {e} s")).unwrap_or_default();
            lines.push(format!("  {} {} ({}{expires})", c.uri, c.state.as_str(), c.event.as_str()));
        }
    }
    lines
}

fn summary_lines(m: &MessageSummary<'_>) -> Vec<String> {
    let mut lines = vec![format!("messages waiting: {}", if m.waiting { "yes" } else { "no" })];
    for (class, c) in &m.classes {
        lines.push(format!("{class}: {} new, {} old", c.new, c.old));
    }
    lines
}
