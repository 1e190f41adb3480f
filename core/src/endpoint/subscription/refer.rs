//! Transfer: REFER (RFC 3515) with its implicit `refer` subscription,
//! `Referred-By` (RFC 3892).
//!
//! Transferor ([`Endpoint::refer`]): a REFER in a session's dialog names
//! where the peer should call (`Refer-To`); its 202 arrives as
//! [`SubscriptionEvent::Accepted`], and the peer's progress as NOTIFYs
//! with `message/sipfrag` bodies ([`SubscriptionEvent::Notified`]; parse
//! them with [`crate::event::StatusFrag`]) until the one that says
//! terminated. The subscription shares the session's dialog (RFC 5057:
//! a BYE ends the call, not the subscription).
//!
//! Transferee ([`Event::Refer`], when [`EndpointConfig::events`] lists
//! `refer`): [`Endpoint::accept_refer`] answers 202 and sends the first
//! NOTIFY, `SIP/2.0 100 Trying` (§2.4.4); the application places the new
//! call and reports its progress with [`Endpoint::refer_progress`]: a
//! final status ends the subscription (§2.4.5).
//!
//! [`EndpointConfig::events`]: super::super::EndpointConfig::events

use super::super::{uas, Body, Endpoint, Event, Output, Request, SendError, SessionId};
use super::{event_key, Phase, Role, SubState, SubscriptionEnd, SubscriptionError, SubscriptionId, Timer};
use crate::dialog::{Dialog, DialogError, DialogState};
use crate::event::{ReferTo, StatusFrag};
use crate::message::{Message, Method, ResponseHead};
use crate::transaction::ServerId;
use crate::transport::{Peer, Source};
use std::sync::Arc;
use std::time::Instant;

/// The `message/sipfrag` body of a refer NOTIFY for `code` and `reason`.
fn sipfrag(code: u16, reason: &str) -> Option<Body> {
    let frag = StatusFrag::new(code, reason).ok()?;
    Some(Body::new(StatusFrag::CONTENT_TYPE, frag.to_string()))
}

impl Endpoint {
    /// Asks the peer of `session` to call `refer_to` (a blind transfer,
    /// RFC 3515): a REFER in the session's dialog with `Refer-To` and
    /// `Referred-By` (RFC 3892). Returns the implicit subscription, whose
    /// NOTIFYs tell how the new call goes; the session itself goes on
    /// until someone hangs up.
    ///
    /// ```
    /// use sipline::endpoint::{Endpoint, EndpointConfig, SessionId};
    /// use std::time::Instant;
    ///
    /// # fn demo(ep: &mut Endpoint, call: SessionId, now: Instant) -> Result<(), Box<dyn std::error::Error>> {
    /// // `call` is an established session with Bob: send him to Carol.
    /// let transfer = ep.refer(now, call, "sip:carol@192.0.2.9")?;
    /// // Event::Subscription { subscription: transfer, event: Notified(..) }
    /// // follow with "SIP/2.0 100 Trying", "SIP/2.0 200 OK"…
    /// # let _ = transfer;
    /// # Ok(()) }
    /// ```
    pub fn refer(
        &mut self,
        now: Instant,
        session: SessionId,
        refer_to: &str,
    ) -> Result<SubscriptionId, SubscriptionError> {
        let now = self.clamp(now);
        if self.shutting_down {
            return Err(SendError::ShuttingDown.into());
        }
        let target = crate::message::Uri::parse(refer_to).map_err(|_| SendError::InvalidUri)?;
        let refer_to_value = format!("<{}>", target.as_str());
        let referred_by = format!("<{}>", self.config.aor);
        let dialog = self.sessions.dialog_mut(session).ok_or(SubscriptionError::Unknown)?;
        if dialog.state() != DialogState::Confirmed {
            return Err(SubscriptionError::State);
        }
        // RFC 3515 §2.4.6: the NOTIFYs carry `id` = the REFER's CSeq, the
        // dialog's next.
        let seq = dialog.local_seq().map_or(1, |s| s.wrapping_add(1));
        let (call_id, local, remote) = {
            let id = dialog.id();
            (id.call_id.clone(), id.local_tag.clone(), id.remote_tag.clone())
        };
        let event = format!("refer;id={seq}");
        let s = self.new_subscription(Role::Subscriber, Phase::Subscribing, event, call_id, local);
        if let Some(x) = self.subscriptions.all.get_mut(&s) {
            x.usage = Some(session);
            x.refreshes = false;
        }
        self.subscriptions.rekey(s, &remote);
        let mut request = Request::new(Method::Refer, "");
        request.headers = vec![("Refer-To".to_owned(), refer_to_value), ("Referred-By".to_owned(), referred_by)];
        if self.send_in_subscription(now, s, request).is_none() {
            self.forget_subscription(s);
            return Err(SubscriptionError::State);
        }
        Ok(s)
    }

    /// Accepts a transfer ([`Event::Refer`]): 202 Accepted, then the first
    /// NOTIFY, `SIP/2.0 100 Trying` (RFC 3515 §2.4.4). The application then
    /// calls the `refer_to` target and reports with
    /// [`refer_progress`](Self::refer_progress).
    pub fn accept_refer(&mut self, now: Instant, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        self.refer_of(subscription, Phase::Offered)?;
        let trying = sipfrag(100, "Trying");
        self.accept_as(now, subscription, (202, "Accepted"), SubState::Active, trying)
    }

    /// Tells the transferor how the call it asked for goes (RFC 3515
    /// §2.4.5): a NOTIFY with `SIP/2.0 CODE REASON`; a final status
    /// (200–699) ends the subscription (`terminated;reason=noresource`).
    pub fn refer_progress(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        self.refer_of(subscription, Phase::Active)?;
        let body = sipfrag(code, reason).ok_or(SubscriptionError::Status)?;
        if code >= 200 {
            self.end_with_notify(now, subscription, "noresource", Some(body), SubscriptionEnd::Ended);
        } else {
            self.send_notify(now, subscription, (SubState::Active, None, Some(body)));
        }
        Ok(())
    }

    /// Checks that `s` is a transfer we are asked (notifier of `refer`) in
    /// `phase`.
    fn refer_of(&self, s: SubscriptionId, phase: Phase) -> Result<(), SubscriptionError> {
        let x = self.subscriptions.all.get(&s).ok_or(SubscriptionError::Unknown)?;
        if x.role != Role::Notifier || x.package != "refer" || x.phase != phase {
            return Err(SubscriptionError::State);
        }
        Ok(())
    }

    /// Drops a subscription never announced (its request could not go).
    fn forget_subscription(&mut self, s: SubscriptionId) {
        let Some(x) = self.subscriptions.all.remove(&s) else { return };
        let key = (x.local_tag, x.remote_tag.unwrap_or_default(), event_key(&x.package, x.id.as_deref()));
        self.subscriptions.by_tags.remove(&key);
    }

    /// A REFER (RFC 3515 §2.4.2): in a session's dialog or outside any, a
    /// transfer for the application to accept or refuse. `false` if it is
    /// in a dialog we do not know (then 481 follows).
    pub(super) fn refer_arrived(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) -> bool {
        // §2.4.1: exactly one Refer-To.
        let mut values = m.headers().iter().filter(|h| h.is("Refer-To") || h.is("r"));
        let (Some(value), None) = (values.next(), values.next()) else {
            self.answer(now, server, m, uas::status(400), "Bad Refer-To");
            return true;
        };
        let Some(refer_to) = ReferTo::parse(value.value()).ok().map(|r| r.uri().as_str().to_owned()) else {
            self.answer(now, server, m, uas::status(400), "Bad Refer-To");
            return true;
        };
        let referred_by = m
            .headers()
            .iter()
            .find(|h| h.is("Referred-By") || h.is("b"))
            .and_then(crate::message::Header::value_str)
            .map(str::to_owned);
        let seq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq());
        let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned()).unwrap_or_default();
        let to_tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let (local, remote, session, dialog) = if let Some(tag) = to_tag {
            // In a dialog: an INVITE session's (§2.4.2, RFC 5057).
            let Some(session) = self.sessions.find(&call_id, &tag) else { return false };
            let Some(d) = self.sessions.dialog_mut(session).filter(|d| d.matches_request(m)) else {
                return false;
            };
            if d.check_remote_seq(seq).is_err() {
                self.answer(now, server, m, uas::status(500), "CSeq Out of Order");
                return true;
            }
            d.refresh_target(m);
            let remote = d.id().remote_tag.clone();
            (tag, remote, Some(session), None)
        } else {
            // Outside a dialog: the REFER makes one, as SUBSCRIBE does.
            let tag = self.subscription_tag();
            match Dialog::from_uas(m, &tag) {
                Ok(d) => {
                    let remote = d.id().remote_tag.clone();
                    (tag, remote, None, Some(d))
                }
                Err(DialogError::NoContact) => {
                    self.answer(now, server, m, uas::status(400), "Missing Contact");
                    return true;
                }
                Err(_) => {
                    self.answer(now, server, m, uas::status(400), "Bad Request");
                    return true;
                }
            }
        };
        let Some(head) = ResponseHead::of(m, &local) else { return true };
        let limits = self.config.subscription_expires;
        let event = format!("refer;id={seq}");
        let s = self.new_subscription(Role::Notifier, Phase::Offered, event, call_id, local);
        if let Some(x) = self.subscriptions.all.get_mut(&s) {
            x.usage = session;
            x.dialog = dialog;
            x.expires = limits.default.min(limits.max);
            x.offer = Some(super::Offer { server, head, peer: Peer::reply_to_message(&source, m) });
        }
        self.subscriptions.rekey(s, &remote);
        self.pin_subscription(now, s, source.conn);
        self.subscriptions.set_timer(s, Timer::Unanswered, now + self.config.answer_within);
        self.out.push_back(Output::Event(Event::Refer {
            subscription: s,
            session,
            refer_to,
            referred_by,
            source,
            request: bytes.clone(),
        }));
        true
    }
}
