//! Blind transfer (REFER, RFC 3515) from the command line: `call
//! --transfer-to` sends one and follows its NOTIFYs; `listen --answer` and
//! `register --answer` take one, call its target (with `Referred-By`, RFC
//! 3892, and `Replaces`, RFC 3891, when the `Refer-To` carries one) and
//! report that call's progress to the transferor.

use crate::media::Media;
use crate::net::Calls;
use crate::out::emit;
use serde_json::json;
use sipline::endpoint::{
    Request, RequestError, SessionEnd, SessionEvent, SessionId, SubscriptionEnd, SubscriptionEvent, SubscriptionId,
};
use sipline::event::{ReferTo, StatusFrag};
use sipline::transport::Source;

/// The transferor's side of one transfer (`call --transfer-to`).
#[derive(Default)]
pub(crate) struct Transferor {
    subscription: Option<SubscriptionId>,
    /// The last status the transferee reported.
    last: Option<u16>,
    /// Over: the subscription ended, or the REFER could not go.
    done: bool,
    /// A REFER was asked for.
    started: bool,
}

impl Transferor {
    /// Sends the REFER for `session` to `target`. `true`: give up on the
    /// transfer and hang up at once.
    pub(crate) async fn start(&mut self, endpoint: &sipline_tokio::Endpoint, session: SessionId, target: &str) -> bool {
        self.started = true;
        emit("transfer", &format!("REFER to {target}"), json!({"target": target}));
        match endpoint.refer(session, target).await {
            Ok(s) => {
                self.subscription = Some(s);
                false
            }
            Err(e) => {
                emit("failed", &format!("cannot transfer: {e}"), json!({"error": e.to_string()}));
                self.done = true;
                false
            }
        }
    }

    /// A subscription event; the transfer's are printed.
    pub(crate) fn event(&mut self, subscription: SubscriptionId, event: SubscriptionEvent) {
        if self.subscription != Some(subscription) {
            return;
        }
        match event {
            SubscriptionEvent::Accepted(r) => {
                emit(
                    "transfer",
                    &format!("REFER: {} {}", r.code, r.reason),
                    json!({"code": r.code, "reason": r.reason}),
                );
            }
            SubscriptionEvent::Notified(n) => {
                // §2.4.5: the body is the status line of the new call.
                let frag = n.body.as_ref().and_then(|b| StatusFrag::parse(&b.bytes).ok());
                match frag {
                    Some(f) => {
                        let text = format!("transfer: {} {}", f.code, f.reason);
                        emit("transfer", &text, json!({"code": f.code, "reason": f.reason}));
                        self.last = Some(f.code);
                    }
                    None => emit("transfer", &format!("transfer: NOTIFY ({:?})", n.state), json!({})),
                }
            }
            SubscriptionEvent::Ended(why) => {
                match why {
                    SubscriptionEnd::Terminated { .. } => {}
                    SubscriptionEnd::Failed(RequestError::Failure(r)) => {
                        let text = format!("REFER: {} {}", r.code, r.reason);
                        emit("transfer", &text, json!({"code": r.code, "reason": r.reason}));
                    }
                    other => {
                        emit("transfer", &format!("transfer ended: {other:?}"), json!({"why": format!("{other:?}")}));
                    }
                }
                self.done = true;
            }
            _ => {}
        }
    }

    /// Whether the transfer is over (the call should end).
    pub(crate) fn finished(&self) -> bool {
        self.done
    }

    /// Whether the transfer went through (or none was asked for).
    pub(crate) fn succeeded(&self) -> bool {
        !self.started || self.last.is_some_and(|c| (200..300).contains(&c))
    }
}

/// A REFER arrived (`listen`/`register` with `--answer`, which serves the
/// `refer` package; without it the endpoint answers 405): accept it and call
/// its target; decline one whose target cannot be read (603).
pub(crate) async fn transferred(
    endpoint: &sipline_tokio::Endpoint,
    calls: &mut Calls,
    subscription: SubscriptionId,
    refer_to: &str,
    referred_by: Option<String>,
    source: Source,
) {
    // The URI as the Refer-To wrote it (headers included): inside <…>
    // its parameters stay the URI's.
    let quoted = format!("<{refer_to}>");
    let parsed = ReferTo::parse(&quoted).ok();
    let target = parsed.as_ref().map(|r| r.target().as_str().to_owned());
    let (Some(target), true) = (target, calls.answers()) else {
        calls.say("transfer", &format!("REFER to {refer_to}: declined"));
        let _ = endpoint.reject_subscription(subscription, 603, "Decline").await;
        return;
    };
    if let Err(e) = endpoint.accept_refer(subscription).await {
        emit("failed", &format!("cannot accept the REFER: {e}"), json!({"error": e.to_string()}));
        return;
    }
    calls.say("transfer", &format!("REFER to {target}: calling"));
    let local = source.local.or_else(|| endpoint.local_addr(source.transport));
    let offer = Media::new(crate::net::media_ip(local, source.remote)).offer();
    let mut invite = Request::invite(&target, "application/sdp", offer);
    if let Some(by) = referred_by {
        invite.headers.push(("Referred-By".to_owned(), by));
    }
    // RFC 3891: an attended transfer names the call to replace.
    if let Some(replaces) = parsed.as_ref().and_then(|r| r.header("Replaces")) {
        invite.headers.push(("Replaces".to_owned(), replaces.to_owned()));
    }
    match endpoint.invite(invite).await {
        Ok(call) => {
            calls.placed(call, subscription, &target);
        }
        Err(e) => {
            emit("failed", &format!("cannot call {target}: {e}"), json!({"error": e.to_string()}));
            let _ = endpoint.refer_progress(subscription, 503, "Service Unavailable").await;
        }
    }
}

/// An event of a call placed for a transfer: its progress goes to the
/// transferor (RFC 3515 §2.4.5).
pub(crate) async fn progress(
    endpoint: &sipline_tokio::Endpoint,
    calls: &mut Calls,
    session: SessionId,
    event: SessionEvent,
) {
    let Some(subscription) = calls.transfer_of(session) else { return };
    let report = match &event {
        SessionEvent::Progress(r) if r.code > 100 => Some((r.code, r.reason.clone(), false)),
        SessionEvent::Answered(r) => Some((r.code, r.reason.clone(), true)),
        SessionEvent::Ended(why) => Some(match why {
            SessionEnd::Failed(RequestError::Failure(r)) => (r.code, r.reason.clone(), true),
            SessionEnd::Failed(RequestError::Timeout) => (408, "Request Timeout".to_owned(), true),
            SessionEnd::Cancelled | SessionEnd::HungUp => (487, "Request Terminated".to_owned(), true),
            _ => (503, "Service Unavailable".to_owned(), true),
        }),
        _ => None,
    };
    if let Some((code, reason, last)) = report {
        calls.say("transfer", &format!("transfer call: {code} {reason}"));
        let _ = endpoint.refer_progress(subscription, code, &reason).await;
        if last {
            calls.transferred(session);
        }
    }
}
