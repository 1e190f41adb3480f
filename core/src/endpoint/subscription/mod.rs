//! Subscriptions (RFC 6665, SIP-specific event notification), both roles,
//! as a dialog usage next to INVITE sessions.
//!
//! Subscriber ([`Endpoint::subscribe`]): a SUBSCRIBE with `Event`,
//! `Expires` and `Accept`; its 2xx arrives as
//! [`SubscriptionEvent::Accepted`] and each NOTIFY (answered 200 by the
//! endpoint) as [`SubscriptionEvent::Notified`] with its state and body. A
//! NOTIFY may come before the 2xx and then forms the dialog itself
//! (§4.1.2.4); NOTIFYs from other forks of the SUBSCRIBE each make a
//! subscription of their own ([`SubscriptionEvent::Forked`]). No NOTIFY
//! within Timer N (64·T1) after the SUBSCRIBE went: the subscription
//! failed (§4.1.2.4, [`SubscriptionEnd::NoNotify`]). The endpoint refreshes
//! the subscription when three quarters of its duration have passed
//! (§4.1.2.2: a 481 to the refresh ends it, another failure lets it run
//! out), and [`Endpoint::unsubscribe`] sends `Expires: 0` and waits for the
//! last NOTIFY (§4.1.2.3).
//!
//! Notifier ([`Event::IncomingSubscription`] for the packages in
//! [`EndpointConfig::events`](super::EndpointConfig::events); others get
//! 489 with `Allow-Events`, §4.2.1.1): [`Endpoint::accept_subscription`]
//! answers 200 and sends the first NOTIFY at once (§4.2.1.2),
//! [`Endpoint::notify`] tells a new state, [`Endpoint::terminate_subscription`]
//! ends it with a reason. A refresh is answered by the endpoint with the
//! current state again (§4.2.1.2); a subscription not refreshed in time
//! ends with `terminated;reason=timeout` (§4.2.2). NOTIFYs of one
//! subscription go one at a time, in order; a state given while one is
//! under way waits, and only the latest waits (the subscriber wants the
//! current state, §4.2.2). A NOTIFY answered 481, or timing out, ends the
//! subscription (§4.2.2).

use super::{loose_route, uas, Body, Endpoint, Event, Origin, Output, RequestError, RequestId, Response, SendError};
use super::{Pending, Request, SessionId};
use crate::dialog::{Dialog, DialogError};
use crate::message::{HeaderName, Message, Method, ResponseHead};
use crate::transaction::ServerId;
use crate::transport::{ConnId, Peer, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod refer;
mod reg;

/// A subscription handle (either role); what happens to it comes as
/// [`Event::Subscription`] events carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(super) u64);

/// A subscription the application asks for ([`Endpoint::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Whose state: the Request-URI and To.
    pub target: String,
    /// The `Event` value: a package (`presence`, `reg`,
    /// `message-summary`…), with an `id` parameter if wanted.
    pub event: String,
    /// The duration asked for, in seconds (§4.1.2.1; the notifier may
    /// shorten it).
    pub expires: u32,
    /// Body types taken in NOTIFYs (`Accept`; none: the package's default).
    pub accept: Vec<String>,
    /// A body for the SUBSCRIBE (a filter, say).
    pub body: Option<Body>,
    /// Extra header fields (name, value).
    pub headers: Vec<(String, String)>,
}

impl Subscribe {
    /// A subscription to `event` at `target` for an hour.
    pub fn new(target: &str, event: &str) -> Subscribe {
        Subscribe {
            target: target.to_owned(),
            event: event.to_owned(),
            expires: 3600,
            accept: Vec::new(),
            body: None,
            headers: Vec::new(),
        }
    }
}

/// The state of a subscription as a NOTIFY tells it (`Subscription-State`,
/// RFC 6665 §8.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    /// Accepted.
    Active,
    /// Received, not yet authorized.
    Pending,
    /// Over.
    Terminated,
}

impl SubState {
    fn as_str(self) -> &'static str {
        match self {
            SubState::Active => "active",
            SubState::Pending => "pending",
            SubState::Terminated => "terminated",
        }
    }
}

/// A NOTIFY that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The subscription's state.
    pub state: SubState,
    /// Seconds left, if given.
    pub expires: Option<u32>,
    /// Why it terminated (`deactivated`, `timeout`, `rejected`,
    /// `noresource`…), if it did and said.
    pub reason: Option<String>,
    /// When to try again (`retry-after`), if said.
    pub retry_after: Option<u32>,
    /// The body (the state of the resource), if any.
    pub body: Option<Body>,
    /// The whole NOTIFY.
    pub request: Arc<[u8]>,
}

/// What happened in a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// Subscriber: a 2xx answered the SUBSCRIBE.
    Accepted(Response),
    /// Subscriber: a NOTIFY arrived (and was answered 200).
    Notified(Notification),
    /// Subscriber: this subscription was made by a NOTIFY from another
    /// fork of the SUBSCRIBE of `original` (§4.1.2.4). Notifications
    /// follow as for any other.
    Forked {
        /// The subscription whose SUBSCRIBE forked.
        original: SubscriptionId,
    },
    /// The subscription was refreshed (subscriber: our refresh got its 2xx;
    /// notifier: the subscriber's refresh was answered), for `expires`
    /// seconds.
    Refreshed {
        /// The new duration, in seconds.
        expires: u32,
    },
    /// The subscription is over; its handle is no longer valid.
    Ended(SubscriptionEnd),
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEnd {
    /// Subscriber: the notifier terminated it (the NOTIFY came as
    /// [`SubscriptionEvent::Notified`] first).
    Terminated {
        /// Its reason, if any (§4.1.3: `deactivated` and `timeout` invite
        /// a new subscription at once, `probation` and `giveup` after
        /// `retry_after`, `rejected` and `noresource` not at all).
        reason: Option<String>,
        /// `retry-after`, in seconds.
        retry_after: Option<u32>,
    },
    /// Subscriber: our unsubscription completed. Notifier: the subscriber
    /// unsubscribed.
    Unsubscribed,
    /// Subscriber: the SUBSCRIBE (or a refresh) failed with a 481, 408 or
    /// a timeout, or the first one with any failure. Notifier: a NOTIFY
    /// failed so (§4.2.2).
    Failed(RequestError),
    /// Subscriber: no NOTIFY within Timer N of the SUBSCRIBE (§4.1.2.4).
    NoNotify,
    /// Not refreshed in time (notifier: `terminated;reason=timeout` sent).
    Expired,
    /// Notifier: we ended it ([`Endpoint::terminate_subscription`]).
    Ended,
    /// Notifier: we rejected it ([`Endpoint::reject_subscription`]).
    Rejected,
    /// Notifier: the application neither accepted nor rejected it in time
    /// (480 sent).
    Unanswered,
    /// The endpoint shut down (subscriber: after unsubscribing; notifier:
    /// after `terminated;reason=noresource`).
    ShutDown,
}

/// Why a subscription command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// No such subscription (it ended, or never was).
    #[error("no such subscription")]
    Unknown,
    /// Not in a state for this (accepting a subscription twice, notifying
    /// one not yet accepted, a subscriber's command on a notifier's
    /// subscription…).
    #[error("the subscription cannot do this now")]
    State,
    /// The status code does not fit the command.
    #[error("invalid status code for this command")]
    Status,
    /// The request could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Subscriber,
    Notifier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Subscriber: the first SUBSCRIBE went, no 2xx or NOTIFY yet.
    Subscribing,
    /// Notifier: the SUBSCRIBE waits for the application.
    Offered,
    /// Running.
    Active,
    /// Subscriber: `Expires: 0` sent, waiting for the last NOTIFY.
    /// Notifier: the last NOTIFY is under way.
    Ending,
}

/// Subscription timers, each at most once per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Subscriber: time to refresh.
    Refresh,
    /// Both: the subscription runs out.
    Expiry,
    /// Subscriber: Timer N, no NOTIFY (§4.1.2.4); after `Expires: 0`, the
    /// wait for the last NOTIFY.
    N,
    /// Notifier: the application did not answer the SUBSCRIBE.
    Unanswered,
    /// Notifier of `reg`: time to look at the bindings again.
    RegPoll,
}

/// What the SUBSCRIBE under way (subscriber) asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    Initial,
    Refresh,
    Unsubscribe,
}

/// A NOTIFY to send: state, reason, body.
type Notice = (SubState, Option<String>, Option<Body>);

/// An incoming SUBSCRIBE waiting for the application's answer.
struct Offer {
    server: ServerId,
    head: ResponseHead,
    peer: Peer,
}

/// One subscription.
struct Subscription {
    role: Role,
    phase: Phase,
    /// The `Event` value sent in every request (package and `id`).
    event: String,
    /// The package, lower case, and the `id` (matching, §4.1.2.4, §8.2.1).
    package: String,
    id: Option<String>,
    call_id: String,
    local_tag: String,
    /// The peer's tag, once known (the index key with ours).
    remote_tag: Option<String>,
    dialog: Option<Dialog>,
    /// The INVITE session whose dialog it shares (REFER in a call); its
    /// dialog is used instead of `dialog` while the session lives.
    usage: Option<SessionId>,
    /// Subscriber: refreshes it (not the implicit subscription of a
    /// REFER, which the notifier ends, RFC 3515 §2.4.6).
    refreshes: bool,
    /// Seconds asked for (subscriber: every refresh asks the same) or
    /// granted (notifier).
    expires: u32,
    /// Subscriber: what every SUBSCRIBE carries.
    accept: Vec<String>,
    headers: Vec<(String, String)>,
    /// Subscriber: the first SUBSCRIBE as last sent (its 2xx forms the
    /// dialog, §12.1.2), and its CSeq.
    sent: Option<Arc<[u8]>>,
    /// Our request (SUBSCRIBE or NOTIFY) under way, and what it asks.
    request: Option<RequestId>,
    asking: Asking,
    /// Subscriber: a NOTIFY arrived.
    notified: bool,
    /// Subscriber: the application unsubscribed before the dialog existed.
    unsubscribe_when_ready: bool,
    /// Subscriber: the subscription this one forked from.
    original: Option<SubscriptionId>,
    /// Notifier: the SUBSCRIBE to answer.
    offer: Option<Offer>,
    /// Notifier: the state and body last told (sent again on a refresh).
    current: Option<(SubState, Option<Body>)>,
    /// Notifier: the NOTIFY waiting for the one under way.
    queued: Option<Notice>,
    /// Notifier: why it ends once the last NOTIFY is answered.
    ending: Option<SubscriptionEnd>,
    /// When it runs out.
    expires_at: Option<Instant>,
    /// Notifier of `reg` (RFC 3680): the AOR watched, and what was told.
    reg: Option<Box<reg::RegWatch>>,
    conn: Option<ConnId>,
    timers: BTreeMap<Timer, Instant>,
}

impl Subscription {
    fn new(role: Role, phase: Phase, event: String, call_id: String, local_tag: String) -> Subscription {
        let (package, id) = parse_event(&event).unwrap_or_default();
        Subscription {
            role,
            phase,
            event,
            package,
            id,
            call_id,
            local_tag,
            remote_tag: None,
            dialog: None,
            usage: None,
            refreshes: true,
            expires: 0,
            accept: Vec::new(),
            headers: Vec::new(),
            sent: None,
            request: None,
            asking: Asking::Initial,
            notified: false,
            unsubscribe_when_ready: false,
            original: None,
            offer: None,
            current: None,
            queued: None,
            ending: None,
            expires_at: None,
            reg: None,
            conn: None,
            timers: BTreeMap::new(),
        }
    }
}

/// (our tag, the peer's tag, event key).
type Key = (String, String, String);

/// Every subscription of an endpoint, and the indexes to find them.
#[derive(Default)]
pub(super) struct Subscriptions {
    next: u64,
    all: BTreeMap<SubscriptionId, Subscription>,
    /// (our tag, the peer's tag or "" while unknown, event key) →
    /// subscription: several may share a dialog (an INVITE session's, for
    /// REFER), told apart by event type and `id` (§4.1.2.4).
    by_tags: BTreeMap<Key, SubscriptionId>,
    /// Subscriber: our tag → the subscription whose SUBSCRIBE may still
    /// fork (until Timer N after it went).
    forking: BTreeMap<String, (SubscriptionId, Instant)>,
    timers: BTreeSet<(Instant, SubscriptionId, Timer)>,
}

impl Subscriptions {
    /// (subscriptions, index entries and timers), for `Endpoint::tables`.
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.all.len(), self.by_tags.len() + self.forking.len() + self.timers.len())
    }

    /// Drops the storage of emptied tables.
    pub(super) fn shed(&mut self) {
        crate::shed::shed(&mut self.all);
        crate::shed::shed(&mut self.by_tags);
        crate::shed::shed(&mut self.forking);
        crate::shed::shed(&mut self.timers);
    }

    /// Live subscriptions.
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether our tag `tag` is taken by a subscription.
    pub(super) fn uses_tag(&self, tag: &str) -> bool {
        self.by_tags
            .range((tag.to_owned(), String::new(), String::new())..)
            .next()
            .is_some_and(|((t, _, _), _)| t == tag)
    }

    /// The next deadline.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    fn set_timer(&mut self, s: SubscriptionId, timer: Timer, at: Instant) {
        if let Some(x) = self.all.get_mut(&s) {
            if let Some(old) = x.timers.insert(timer, at) {
                self.timers.remove(&(old, s, timer));
            }
            self.timers.insert((at, s, timer));
        }
    }

    fn clear_timer(&mut self, s: SubscriptionId, timer: Timer) {
        if let Some(old) = self.all.get_mut(&s).and_then(|x| x.timers.remove(&timer)) {
            self.timers.remove(&(old, s, timer));
        }
    }

    /// Indexes `s` under its tags (the peer's now known).
    fn rekey(&mut self, s: SubscriptionId, remote_tag: &str) {
        let Some(x) = self.all.get_mut(&s) else { return };
        let old = x.remote_tag.replace(remote_tag.to_owned()).unwrap_or_default();
        let (local, event) = (x.local_tag.clone(), event_key(&x.package, x.id.as_deref()));
        self.by_tags.remove(&(local.clone(), old, event.clone()));
        self.by_tags.insert((local, remote_tag.to_owned(), event), s);
    }

    /// The subscription in dialog (`local`, `remote`) for `event`: the
    /// exact key, else for a `refer` NOTIFY without `id` (RFC 3515
    /// §2.4.6 lets the first REFER's omit it) the dialog's refer
    /// subscription.
    fn find(&self, local: &str, remote: &str, package: &str, id: Option<&str>) -> Option<SubscriptionId> {
        let key = (local.to_owned(), remote.to_owned(), event_key(package, id));
        if let Some(&s) = self.by_tags.get(&key) {
            return Some(s);
        }
        if package != "refer" || id.is_some() {
            return None;
        }
        let from = (local.to_owned(), remote.to_owned(), "refer".to_owned());
        self.by_tags
            .range(from..)
            .next()
            .filter(|((l, r, e), _)| l == local && r == remote && e.starts_with("refer;"))
            .map(|(_, s)| *s)
    }

    /// A session ended: the subscriptions in its dialog keep a copy of it
    /// (RFC 5057: BYE ends the INVITE usage, not the others).
    pub(super) fn detach(&mut self, session: SessionId, dialog: &Dialog) {
        for x in self.all.values_mut().filter(|x| x.usage == Some(session)) {
            x.usage = None;
            x.dialog = Some(dialog.clone());
        }
    }
}

/// `Event` (RFC 6665 §8.2.1): the event type (package and templates,
/// compared as written, §8.2.1) and the `id`.
fn parse_event(value: &str) -> Option<(String, Option<String>)> {
    let e = crate::event::Event::parse(value).ok()?;
    Some((e.event_type().to_owned(), e.id().map(str::to_owned)))
}

/// A `Subscription-State` value: state, expires, reason, retry-after.
type StateValue = (SubState, Option<u32>, Option<String>, Option<u32>);

/// `Subscription-State` (§8.2.3): the state and its parameters. An
/// extension state counts as pending (§8.2.3: not yet active, not over).
/// A value that breaks the grammar in its parameters is read leniently
/// (the state, numbers that parse, a reason's last `=` part): liblinphone
/// 5.1 ends a transfer with `terminated;reason=reason=noresource`, and the
/// subscription is over all the same.
fn parse_state(value: &str) -> Option<StateValue> {
    use crate::event::SubState as S;
    let Ok(v) = crate::event::SubscriptionState::parse(value) else { return lenient_state(value) };
    let state = match v.state() {
        S::Active => SubState::Active,
        S::Terminated => SubState::Terminated,
        _ => SubState::Pending,
    };
    let reason = v.reason().map(|r| r.as_str().to_ascii_lowercase());
    Some((state, v.expires(), reason, v.retry_after()))
}

/// [`parse_state`] for a value the grammar refuses.
fn lenient_state(value: &str) -> Option<StateValue> {
    let mut parts = value.split(';');
    let state = match parts.next()?.trim().to_ascii_lowercase().as_str() {
        "active" => SubState::Active,
        "pending" => SubState::Pending,
        "terminated" => SubState::Terminated,
        _ => return None,
    };
    let (mut expires, mut reason, mut retry) = (None, None, None);
    for p in parts {
        let Some((name, v)) = p.split_once('=') else { continue };
        let v = v.rsplit('=').next().unwrap_or(v).trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "expires" => expires = v.parse().ok(),
            "reason" if !v.is_empty() => reason = Some(v.to_ascii_lowercase()),
            "retry-after" => retry = v.parse().ok(),
            _ => {}
        }
    }
    Some((state, expires, reason, retry))
}

/// The key telling subscriptions in one dialog apart: event type and `id`
/// (§4.1.2.4, §8.2.1).
fn event_key(package: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{package};id={id}"),
        None => package.to_owned(),
    }
}

/// The Expires of a message, in seconds.
fn expires_of(m: &Message<'_>) -> Option<u32> {
    m.headers().first(HeaderName::Expires)?.value_str()?.trim().parse().ok()
}

/// When a subscriber refreshes a subscription of `secs` seconds: three
/// quarters through.
fn refresh_after(secs: u32) -> Duration {
    Duration::from_millis(u64::from(secs) * 750)
}

impl Endpoint {
    /// Subscribes to `sub.event` at `sub.target` (RFC 6665 §4.1.2.1).
    /// Returns the subscription's handle at once; [`Event::Subscription`]
    /// events follow.
    ///
    /// ```
    /// use sipline::endpoint::{Endpoint, EndpointConfig, Subscribe};
    /// use std::time::Instant;
    ///
    /// # fn demo(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut ep = Endpoint::new(EndpointConfig::new("sip:alice@example.com"))?;
    /// ep.start(now);
    /// let mut presence = Subscribe::new("sip:bob@192.0.2.7", "presence");
    /// presence.accept = vec!["application/pidf+xml".into()];
    /// let watching = ep.subscribe(now, presence)?;
    /// // Event::Subscription { subscription: watching, event: Notified(..) } follow.
    /// # let _ = watching;
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&mut self, now: Instant, sub: Subscribe) -> Result<SubscriptionId, SendError> {
        let now = self.clamp(now);
        if self.shutting_down {
            return Err(SendError::ShuttingDown);
        }
        crate::message::Uri::parse(&sub.target).map_err(|_| SendError::InvalidUri)?;
        if parse_event(&sub.event).is_none() {
            return Err(SendError::Header("Event".to_owned()));
        }
        let (hop, routes) = self.first_hop(&sub.target);
        let call_id = self.rng.hex(20);
        let tag = self.subscription_tag();
        let mut request = Request::new(Method::Subscribe, &sub.target);
        request.headers = subscribe_headers(&sub.event, sub.expires, &sub.accept, &sub.headers);
        if let Some(b) = &sub.body {
            request.content_type = Some(b.content_type.clone());
            request.body.clone_from(&b.bytes);
        }
        let id = self.enqueue(&hop, request, Origin::Subscribe, (call_id.clone(), tag.clone(), 1), None, routes)?;
        let s = self.new_subscription(Role::Subscriber, Phase::Subscribing, sub.event, call_id, tag.clone());
        let event = self.subscriptions.all.get(&s).map(|x| event_key(&x.package, x.id.as_deref())).unwrap_or_default();
        self.subscriptions.by_tags.insert((tag, String::new(), event), s);
        if let Some(x) = self.subscriptions.all.get_mut(&s) {
            x.expires = sub.expires;
            x.accept = sub.accept;
            x.headers = sub.headers;
            x.request = Some(id);
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.contact = true;
            p.subscription = Some(s);
        }
        self.queued.push_back(id);
        self.start_queued();
        self.pump(now);
        Ok(s)
    }

    /// Ends a subscription of ours: `Expires: 0` (§4.1.2.3); it ends when
    /// the last NOTIFY comes ([`SubscriptionEnd::Unsubscribed`]), or Timer
    /// N after.
    pub fn unsubscribe(&mut self, now: Instant, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        let x = self.subscriptions.all.get_mut(&subscription).ok_or(SubscriptionError::Unknown)?;
        if x.role != Role::Subscriber {
            return Err(SubscriptionError::State);
        }
        match x.phase {
            Phase::Ending => Ok(()),
            Phase::Subscribing if x.dialog.is_none() && x.usage.is_none() => {
                // Nothing to send it in yet: once the dialog exists.
                x.unsubscribe_when_ready = true;
                Ok(())
            }
            _ => {
                self.send_unsubscribe(now, subscription);
                Ok(())
            }
        }
    }

    /// Live subscriptions (both roles).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Accepts an incoming subscription ([`Event::IncomingSubscription`]):
    /// 200, then at once the first NOTIFY with `state` (active, or pending
    /// while the application decides) and `body` (§4.2.1.2). A
    /// subscription asked with `Expires: 0` (a fetch) gets its one NOTIFY,
    /// terminated.
    pub fn accept_subscription(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        self.accept_as(now, subscription, (200, "OK"), state, body)
    }

    /// Accepts the SUBSCRIBE (or REFER) `subscription` waits to answer
    /// with `status` and sends the first NOTIFY (§4.2.1.2).
    fn accept_as(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        (code, reason): (u16, &str),
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        if state == SubState::Terminated {
            return Err(SubscriptionError::State);
        }
        let x = self.subscriptions.all.get(&subscription).ok_or(SubscriptionError::Unknown)?;
        if x.phase != Phase::Offered {
            return Err(SubscriptionError::State);
        }
        let expires = x.expires;
        let header = expires.to_string();
        self.answer_subscribe(now, subscription, code, reason, &[("Expires", &header)]);
        self.subscriptions.clear_timer(subscription, Timer::Unanswered);
        let Some(x) = self.subscriptions.all.get_mut(&subscription) else { return Ok(()) };
        x.phase = Phase::Active;
        if let Some(d) = x.dialog.as_mut().filter(|_| x.usage.is_none()) {
            d.confirm();
        }
        if expires == 0 {
            // §4.2.1.1: a fetch: one NOTIFY, terminated.
            x.current = Some((state, body.clone()));
            self.end_with_notify(now, subscription, "timeout", body, SubscriptionEnd::Expired);
            return Ok(());
        }
        let at = now + Duration::from_secs(u64::from(expires));
        x.expires_at = Some(at);
        self.subscriptions.set_timer(subscription, Timer::Expiry, at);
        self.send_notify(now, subscription, (state, None, body));
        Ok(())
    }

    /// Refuses an incoming subscription with a final status 300–699
    /// (403 to refuse it, 489 for an event the application does not
    /// serve…).
    pub fn reject_subscription(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        if !(300..700).contains(&code) {
            return Err(SubscriptionError::Status);
        }
        let x = self.subscriptions.all.get(&subscription).ok_or(SubscriptionError::Unknown)?;
        if x.phase != Phase::Offered {
            return Err(SubscriptionError::State);
        }
        self.answer_subscribe(now, subscription, code, reason, &[]);
        self.end_subscription(now, subscription, SubscriptionEnd::Rejected);
        Ok(())
    }

    /// Tells the subscriber a new state of the resource (§4.2.2): a NOTIFY
    /// with `state` and `body`, after the one under way if any.
    pub fn notify(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        let x = self.subscriptions.all.get(&subscription).ok_or(SubscriptionError::Unknown)?;
        if x.role != Role::Notifier || x.phase != Phase::Active || state == SubState::Terminated {
            return Err(SubscriptionError::State);
        }
        self.send_notify(now, subscription, (state, None, body));
        Ok(())
    }

    /// Ends a subscription we serve: a last NOTIFY with
    /// `terminated;reason=REASON` (`noresource`, `rejected`, `deactivated`,
    /// `giveup`…; §4.2.2) and `body`; [`SubscriptionEnd::Ended`] follows
    /// its answer.
    pub fn terminate_subscription(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        let now = self.clamp(now);
        let x = self.subscriptions.all.get(&subscription).ok_or(SubscriptionError::Unknown)?;
        if x.role != Role::Notifier {
            return Err(SubscriptionError::State);
        }
        match x.phase {
            Phase::Offered => {
                self.answer_subscribe(now, subscription, 403, "Forbidden", &[]);
                self.end_subscription(now, subscription, SubscriptionEnd::Rejected);
            }
            Phase::Active => self.end_with_notify(now, subscription, reason, body, SubscriptionEnd::Ended),
            Phase::Subscribing | Phase::Ending => {}
        }
        Ok(())
    }

    // ----- common -----

    /// A local tag no session or subscription uses.
    fn subscription_tag(&mut self) -> String {
        let mut tag = self.rng.hex(10);
        for _ in 0..8 {
            if !self.subscriptions.uses_tag(&tag) && !self.session_uses_tag(&tag) {
                break;
            }
            tag = self.rng.hex(10);
        }
        tag
    }

    fn new_subscription(
        &mut self,
        role: Role,
        phase: Phase,
        event: String,
        call_id: String,
        tag: String,
    ) -> SubscriptionId {
        self.subscriptions.next += 1;
        let s = SubscriptionId(self.subscriptions.next);
        self.subscriptions.all.insert(s, Subscription::new(role, phase, event, call_id, tag));
        s
    }

    fn emit_subscription(&mut self, subscription: SubscriptionId, event: SubscriptionEvent) {
        self.out.push_back(Output::Event(Event::Subscription { subscription, event }));
    }

    /// Ends `s`: forgets it and its indexes, releases its connection,
    /// reports `why`.
    fn end_subscription(&mut self, now: Instant, s: SubscriptionId, why: SubscriptionEnd) {
        if self.subscriptions.all.get(&s).is_some_and(|x| x.offer.is_some()) {
            self.answer_subscribe(now, s, 480, "Temporarily Unavailable", &[]);
        }
        let Some(x) = self.subscriptions.all.remove(&s) else { return };
        let key =
            (x.local_tag.clone(), x.remote_tag.clone().unwrap_or_default(), event_key(&x.package, x.id.as_deref()));
        if self.subscriptions.by_tags.get(&key) == Some(&s) {
            self.subscriptions.by_tags.remove(&key);
        }
        if self.subscriptions.forking.get(&x.local_tag).is_some_and(|(f, _)| *f == s) {
            self.subscriptions.forking.remove(&x.local_tag);
        }
        for (timer, at) in x.timers {
            self.subscriptions.timers.remove(&(at, s, timer));
        }
        if let Some(conn) = x.conn {
            self.transport.unpin(now, conn);
        }
        if let Some(id) = x.request {
            if let Some(c) = self.pending.get(&id).and_then(Pending::client) {
                self.transactions.give_up(now, c);
            }
            self.abandon(id);
        }
        self.emit_subscription(s, SubscriptionEvent::Ended(why));
        self.shutdown_progress(now);
    }

    /// Pins `conn` for `s` (once).
    fn pin_subscription(&mut self, now: Instant, s: SubscriptionId, conn: Option<ConnId>) {
        let Some(conn) = conn else { return };
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        super::repin(&mut self.transport, now, &mut x.conn, conn);
    }

    /// Where a request in a dialog with `head` goes first, and its Route
    /// values: the route set, or with none the outbound proxy or registrar
    /// if there is one (§8.1.2, §12.2.1.1).
    fn in_dialog_hop(&self, head: &crate::dialog::RequestHead) -> (String, Vec<String>) {
        if !head.routes.is_empty() {
            return (head.next_hop(), head.routes.clone());
        }
        match self.next_hop() {
            Some(proxy) => (proxy.clone(), vec![loose_route(&proxy)]),
            None => (head.uri.clone(), Vec::new()),
        }
    }

    /// The dialog `s` lives in: its own, or its session's.
    fn dialog_of(&mut self, s: SubscriptionId) -> Option<&mut Dialog> {
        match self.subscriptions.all.get(&s)?.usage {
            Some(session) => self.sessions.dialog_mut(session),
            None => self.subscriptions.all.get_mut(&s)?.dialog.as_mut(),
        }
    }

    /// Sends `request` inside the dialog of `s` (SUBSCRIBE or NOTIFY).
    fn send_in_subscription(&mut self, now: Instant, s: SubscriptionId, mut request: Request) -> Option<RequestId> {
        let origin = if request.method == Method::Notify { Origin::Notify } else { Origin::Subscribe };
        let head = self.dialog_of(s)?.next_request();
        request.uri.clone_from(&head.uri);
        let (hop, routes) = self.in_dialog_hop(&head);
        let ids = (head.call_id.clone(), String::new(), head.cseq);
        let id = self.enqueue(&hop, request, origin, ids, None, routes).ok()?;
        if let Some(p) = self.pending.get_mut(&id) {
            p.dialog_head = Some((head.from, head.to));
            p.contact = true;
            p.subscription = Some(s);
        }
        if let Some(x) = self.subscriptions.all.get_mut(&s) {
            x.request = Some(id);
        }
        self.start_now(id);
        self.pump(now);
        Some(id)
    }

    /// A request of `s` was sent as `bytes` (the first SUBSCRIBE is kept:
    /// its 2xx forms the dialog). Timer N runs from here (§4.1.2.4).
    pub(super) fn subscription_sent(&mut self, now: Instant, s: SubscriptionId, bytes: &[u8]) {
        let t1 = self.config.timers.t1;
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        if x.role != Role::Subscriber {
            return;
        }
        match x.asking {
            Asking::Initial => {
                x.sent = Some(Arc::from(bytes));
                let until = now + t1 * 64;
                let tag = x.local_tag.clone();
                // A request in an existing dialog (REFER in a call) does
                // not fork.
                if x.usage.is_none() {
                    self.subscriptions.forking.insert(tag, (s, until));
                }
                if !self.subscriptions.all.get(&s).is_some_and(|x| x.notified) {
                    self.subscriptions.set_timer(s, Timer::N, until);
                }
            }
            Asking::Unsubscribe => self.subscriptions.set_timer(s, Timer::N, now + t1 * 64),
            Asking::Refresh => {}
        }
    }

    /// Our SUBSCRIBE or NOTIFY `p` of `s` ended with `result`.
    pub(super) fn subscription_finished(
        &mut self,
        now: Instant,
        s: SubscriptionId,
        result: Result<Response, RequestError>,
    ) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        x.request = None;
        match x.role {
            Role::Subscriber => self.subscribe_finished(now, s, result),
            Role::Notifier => self.notify_finished(now, s, result),
        }
    }

    // ----- subscriber -----

    fn subscribe_finished(&mut self, now: Instant, s: SubscriptionId, result: Result<Response, RequestError>) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        let asking = x.asking;
        match (asking, result) {
            (Asking::Initial, Ok(response)) => {
                let Ok(m) = Message::parse(&response.bytes) else { return };
                self.pin_subscription(now, s, self.responding.and_then(|src| src.conn));
                let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
                let to_tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
                if let Some(d) = x.dialog.as_mut().filter(|d| Some(&d.id().remote_tag) == to_tag.as_ref()) {
                    // A NOTIFY formed the dialog first: the 2xx's Contact
                    // is the peer's target (it may have had none).
                    d.refresh_target(&m);
                }
                if x.dialog.is_none() && x.usage.is_none() {
                    let formed = x.sent.as_ref().and_then(|b| Message::parse(b).ok()).map(|r| Dialog::from_uac(&r, &m));
                    match formed {
                        Some(Ok(d)) => {
                            let tag = d.id().remote_tag.clone();
                            x.dialog = Some(d);
                            self.subscriptions.rekey(s, &tag);
                        }
                        // A 2xx that cannot form a dialog: nothing to
                        // refresh or unsubscribe in.
                        _ => {
                            return self.end_subscription(
                                now,
                                s,
                                SubscriptionEnd::Failed(RequestError::Failure(response)),
                            );
                        }
                    }
                }
                let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
                // §4.1.2.1: the 2xx's Expires is the duration granted.
                let granted = expires_of(&m).unwrap_or(x.expires);
                // (Never longer than asked; a REFER asks nothing.)
                let granted = if x.refreshes { granted.min(x.expires) } else { granted };
                if x.phase == Phase::Subscribing {
                    x.phase = Phase::Active;
                }
                let later = x.unsubscribe_when_ready;
                self.schedule_refresh(now, s, granted);
                self.emit_subscription(s, SubscriptionEvent::Accepted(response));
                if later {
                    self.send_unsubscribe(now, s);
                }
            }
            (Asking::Initial, Err(e)) => self.end_subscription(now, s, SubscriptionEnd::Failed(e)),
            (Asking::Refresh, Ok(_)) if x.unsubscribe_when_ready => self.send_unsubscribe(now, s),
            (Asking::Refresh, Ok(response)) => {
                let granted = Message::parse(&response.bytes).ok().and_then(|m| expires_of(&m));
                let granted = granted.unwrap_or(x.expires);
                self.schedule_refresh(now, s, granted);
                self.emit_subscription(s, SubscriptionEvent::Refreshed { expires: granted });
            }
            (Asking::Refresh, Err(e)) => {
                // §4.1.2.2: a 481 (or a dead dialog) ends it; another
                // failure leaves it running until it expires.
                let gone = match &e {
                    RequestError::Failure(r) => matches!(r.code, 481 | 408),
                    RequestError::Timeout => true,
                    _ => false,
                };
                if gone {
                    self.end_subscription(now, s, SubscriptionEnd::Failed(e));
                } else if x.unsubscribe_when_ready {
                    self.send_unsubscribe(now, s);
                }
            }
            (Asking::Unsubscribe, Ok(_)) => {
                // The last NOTIFY follows (Timer N bounds the wait).
            }
            (Asking::Unsubscribe, Err(_)) => self.end_subscription(now, s, SubscriptionEnd::Unsubscribed),
        }
    }

    /// Arms the refresh and expiry of a subscription granted `secs`.
    fn schedule_refresh(&mut self, now: Instant, s: SubscriptionId, secs: u32) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        // Zero: a fetch (§4.2.1.1), over with its one NOTIFY (Timer N
        // bounds the wait for it); nothing to refresh.
        if x.phase == Phase::Ending || secs == 0 {
            return;
        }
        let refreshes = x.refreshes;
        // (`expires` stays what the subscriber asks for: each refresh asks
        // it again, §4.1.2.2.)
        let at = now + Duration::from_secs(u64::from(secs));
        x.expires_at = Some(at);
        let refresh = now + refresh_after(secs);
        self.subscriptions.set_timer(s, Timer::Expiry, at);
        if refreshes {
            self.subscriptions.set_timer(s, Timer::Refresh, refresh);
        }
    }

    /// Sends `Expires: 0` in the dialog of `s` (§4.1.2.3), once a refresh
    /// under way has its answer (else the notifier could see the refresh
    /// after the unsubscription).
    fn send_unsubscribe(&mut self, now: Instant, s: SubscriptionId) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        x.phase = Phase::Ending;
        self.subscriptions.clear_timer(s, Timer::Refresh);
        self.subscriptions.clear_timer(s, Timer::Expiry);
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        if x.request.is_some() {
            x.unsubscribe_when_ready = true;
            return;
        }
        x.unsubscribe_when_ready = false;
        x.asking = Asking::Unsubscribe;
        let mut request = Request::new(Method::Subscribe, "");
        request.headers = subscribe_headers(&x.event, 0, &x.accept, &x.headers);
        if self.send_in_subscription(now, s, request).is_none() {
            self.end_subscription(now, s, SubscriptionEnd::Unsubscribed);
        }
    }

    /// Sends a refresh of `s` (§4.1.2.2).
    fn send_refresh(&mut self, now: Instant, s: SubscriptionId) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        if x.phase != Phase::Active || x.request.is_some() {
            return;
        }
        x.asking = Asking::Refresh;
        let mut request = Request::new(Method::Subscribe, "");
        request.headers = subscribe_headers(&x.event, x.expires, &x.accept, &x.headers);
        self.send_in_subscription(now, s, request);
    }

    /// A NOTIFY (§4.1.3). Returns `false` if it belongs to no subscription
    /// (then an INVITE session may own its dialog).
    fn notify_arrived(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) -> bool {
        let local = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let remote = m.from().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned()).unwrap_or_default();
        let (Some(local), Some(remote)) = (local, remote) else { return false };
        let event =
            m.headers().first(HeaderName::Event).and_then(crate::message::Header::value_str).and_then(parse_event);
        let matches = |x: &Subscription| {
            x.role == Role::Subscriber
                && x.call_id == call_id
                && event
                    .as_ref()
                    .is_some_and(|(p, id)| *p == x.package && (*id == x.id || (p == "refer" && id.is_none())))
        };
        let (package, id) = event.clone().unwrap_or_default();
        let mut forked = None;
        let s = if let Some(s) = self.subscriptions.find(&local, &remote, &package, id.as_deref()) {
            s
        } else if let Some(s) = self.subscriptions.find(&local, "", &package, id.as_deref()) {
            s
        } else if let Some(&(s, until)) = self.subscriptions.forking.get(&local) {
            if until < now {
                return false;
            }
            forked = Some(s);
            s
        } else {
            return false;
        };
        if !self.subscriptions.all.get(&s).is_some_and(matches) {
            // Same dialog, another package or id: no such subscription.
            self.answer(now, server, m, uas::status(481), "Subscription Does Not Exist");
            return true;
        }
        // §4.1.3 / §8.2.3: a NOTIFY without a state is malformed.
        let state =
            m.headers().get("Subscription-State").and_then(crate::message::Header::value_str).and_then(parse_state);
        let Some((state, expires, reason, retry_after)) = state else {
            self.answer(now, server, m, uas::status(400), "Bad Subscription-State");
            return true;
        };
        let seq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq());
        let s = if let Some(original) = forked {
            // A fork's dialog is formed by this very NOTIFY (its CSeq is
            // the first seen).
            let Some(f) = self.fork_subscription(now, original, m) else {
                self.answer(now, server, m, uas::status(400), "Bad Request");
                return true;
            };
            f
        } else {
            s
        };
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return true };
        if x.dialog.is_some() || x.usage.is_some() {
            let Some(d) = self.dialog_of(s) else { return true };
            // §12.2.2: order, and NOTIFY refreshes the target (§4.1.3).
            if forked.is_none() && d.check_remote_seq(seq).is_err() {
                self.answer(now, server, m, uas::status(500), "CSeq Out of Order");
                return true;
            }
            d.refresh_target(m);
        } else {
            // §4.1.2.4: the NOTIFY came before the 2xx: it forms the
            // dialog.
            let sent = x.sent.as_ref().and_then(|b| Message::parse(b).ok());
            let local_seq = sent.as_ref().and_then(|r| r.cseq()?.ok());
            // A NOTIFY without Contact (liblinphone's): the SUBSCRIBE's
            // target stands in until the 2xx brings the peer's.
            let target = sent.as_ref().and_then(|r| r.request_line().map(|l| l.uri.to_owned())).unwrap_or_default();
            match Dialog::from_uas_or(m, &x.local_tag, &target) {
                Ok(mut d) => {
                    d.set_local_seq(local_seq.map_or(1, |c| c.seq()));
                    d.confirm();
                    x.dialog = Some(d);
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
            self.subscriptions.rekey(s, &remote);
        }
        self.answer(now, server, m, uas::status(200), "OK");
        self.pin_subscription(now, s, source.conn);
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return true };
        x.notified = true;
        let ending = x.phase == Phase::Ending;
        let later = x.unsubscribe_when_ready && x.phase == Phase::Subscribing;
        if x.phase == Phase::Subscribing {
            x.phase = Phase::Active;
        }
        if !ending {
            self.subscriptions.clear_timer(s, Timer::N);
        }
        if let (Some(secs @ 1..), SubState::Active | SubState::Pending, false) = (expires, state, ending) {
            // §4.1.3: the notifier's count is the one that holds.
            self.schedule_refresh(now, s, secs);
        }
        let notification = Notification {
            state,
            expires,
            reason: reason.clone(),
            retry_after,
            body: super::Body::of(m),
            request: bytes.clone(),
        };
        self.emit_subscription(s, SubscriptionEvent::Notified(notification));
        if state == SubState::Terminated {
            let why = if ending {
                SubscriptionEnd::Unsubscribed
            } else {
                SubscriptionEnd::Terminated { reason, retry_after }
            };
            self.end_subscription(now, s, why);
        } else if later {
            self.send_unsubscribe(now, s);
        }
        true
    }

    /// §4.1.2.4: a NOTIFY from another fork of the SUBSCRIBE of `original`
    /// makes a subscription of its own.
    fn fork_subscription(&mut self, now: Instant, original: SubscriptionId, m: &Message<'_>) -> Option<SubscriptionId> {
        let x = self.subscriptions.all.get(&original)?;
        let local_seq = x.sent.as_ref().and_then(|b| Message::parse(b).ok()).and_then(|r| r.cseq()?.ok())?.seq();
        let mut dialog = Dialog::from_uas(m, &x.local_tag).ok()?;
        dialog.set_local_seq(local_seq);
        dialog.confirm();
        let (event, call_id, tag) = (x.event.clone(), x.call_id.clone(), x.local_tag.clone());
        let (expires, accept, headers) = (x.expires, x.accept.clone(), x.headers.clone());
        let remote = dialog.id().remote_tag.clone();
        let f = self.new_subscription(Role::Subscriber, Phase::Active, event, call_id, tag);
        if let Some(y) = self.subscriptions.all.get_mut(&f) {
            y.dialog = Some(dialog);
            y.expires = expires;
            y.accept = accept;
            y.headers = headers;
            y.original = Some(original);
        }
        self.subscriptions.rekey(f, &remote);
        self.schedule_refresh(now, f, expires);
        self.emit_subscription(f, SubscriptionEvent::Forked { original });
        Some(f)
    }

    // ----- notifier -----

    /// A SUBSCRIBE with no To tag: a new subscription for the application
    /// (§4.2.1.1), or 489 for a package it does not serve.
    fn subscribe_arrived(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) {
        let value = m.headers().first(HeaderName::Event).and_then(crate::message::Header::value_str).map(str::to_owned);
        // RFC 3515 §2.4.4: the refer package comes with REFER, not asked
        // for by SUBSCRIBE.
        let served = value.as_deref().and_then(parse_event).filter(|(p, _)| p != "refer" && self.serves_event(p));
        let (Some(value), Some(_)) = (value, served) else {
            // §4.2.1.1, §8.3.2: Allow-Events lists what we serve.
            let allow = self.config.events.join(", ");
            self.answer_with(now, server, m, uas::status(489), "Bad Event", &[("Allow-Events", &allow)]);
            return;
        };
        let asked = expires_of(m).unwrap_or(self.config.subscription_expires.default);
        let limits = self.config.subscription_expires;
        if asked != 0 && asked < limits.min {
            // §4.2.1.1: too brief.
            let min = limits.min.to_string();
            self.answer_with(now, server, m, uas::status(423), "Interval Too Brief", &[("Min-Expires", &min)]);
            return;
        }
        let granted = asked.min(limits.max);
        let tag = self.subscription_tag();
        let dialog = match Dialog::from_uas(m, &tag) {
            Ok(d) => d,
            Err(DialogError::NoContact) => {
                self.answer(now, server, m, uas::status(400), "Missing Contact");
                return;
            }
            Err(_) => {
                self.answer(now, server, m, uas::status(400), "Bad Request");
                return;
            }
        };
        let Some(head) = ResponseHead::of(m, &tag) else { return };
        let call_id = dialog.id().call_id.clone();
        let remote = dialog.id().remote_tag.clone();
        let s = self.new_subscription(Role::Notifier, Phase::Offered, value.clone(), call_id, tag);
        if let Some(x) = self.subscriptions.all.get_mut(&s) {
            x.dialog = Some(dialog);
            x.expires = granted;
            x.offer = Some(Offer { server, head, peer: Peer::reply_to_message(&source, m) });
        }
        self.subscriptions.rekey(s, &remote);
        self.pin_subscription(now, s, source.conn);
        self.subscriptions.set_timer(s, Timer::Unanswered, now + self.config.answer_within);
        let uri = |a: Option<Result<crate::message::headers::Address<'_>, _>>| {
            a.and_then(Result::ok).map(|a| a.uri().as_str().to_owned()).unwrap_or_default()
        };
        let accept = m
            .headers()
            .all(HeaderName::Accept)
            .filter_map(crate::message::Header::value_str)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        self.out.push_back(Output::Event(Event::IncomingSubscription {
            subscription: s,
            event: value,
            from: uri(m.from()),
            to: uri(m.to()),
            expires: granted,
            accept,
            body: super::Body::of(m),
            source,
            request: bytes.clone(),
        }));
    }

    /// Whether the application serves `package` (lower case).
    fn serves_event(&self, package: &str) -> bool {
        self.config.events.iter().any(|e| e.eq_ignore_ascii_case(package))
    }

    /// A SUBSCRIBE in the dialog of a subscription we serve: a refresh or
    /// an unsubscription (§4.2.1.2). `false` if no subscription has it.
    fn resubscribe_arrived(&mut self, now: Instant, server: ServerId, m: &Message<'_>) -> bool {
        let local = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let remote = m.from().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let (Some(local), Some(remote)) = (local, remote) else { return false };
        let event =
            m.headers().first(HeaderName::Event).and_then(crate::message::Header::value_str).and_then(parse_event);
        let Some((package, id)) = event else { return false };
        let Some(s) = self.subscriptions.find(&local, &remote, &package, id.as_deref()) else { return false };
        let limits = self.config.subscription_expires;
        if self.subscriptions.all.get(&s).is_none_or(|x| x.role != Role::Notifier) {
            self.answer(now, server, m, uas::status(481), "Subscription Does Not Exist");
            return true;
        }
        let Some(d) = self.dialog_of(s) else { return false };
        if !d.matches_request(m) {
            return false;
        }
        let seq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq());
        if d.check_remote_seq(seq).is_err() {
            self.answer(now, server, m, uas::status(500), "CSeq Out of Order");
            return true;
        }
        d.refresh_target(m);
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return true };
        let asked = expires_of(m).unwrap_or(limits.default);
        if x.phase != Phase::Active {
            // Ending already: its last NOTIFY is under way.
            self.answer_with(now, server, m, uas::status(200), "OK", &[("Expires", "0")]);
            return true;
        }
        if asked == 0 {
            // §4.2.1.2: unsubscribed: 200 and a last NOTIFY.
            let reg = x.reg.is_some();
            let mut body = x.current.as_ref().and_then(|c| c.1.clone());
            if reg {
                body = self.reg_document(now, s, true);
            }
            self.answer_with(now, server, m, uas::status(200), "OK", &[("Expires", "0")]);
            self.end_with_notify(now, s, "timeout", body, SubscriptionEnd::Unsubscribed);
            return true;
        }
        if asked < limits.min {
            let min = limits.min.to_string();
            self.answer_with(now, server, m, uas::status(423), "Interval Too Brief", &[("Min-Expires", &min)]);
            return true;
        }
        let granted = asked.min(limits.max);
        x.expires = granted;
        let at = now + Duration::from_secs(u64::from(granted));
        x.expires_at = Some(at);
        let mut current = x.current.clone().unwrap_or((SubState::Active, None));
        if x.reg.is_some() {
            // RFC 3680 §5.1: each document a new version, in full.
            current.1 = self.reg_document(now, s, true);
        }
        let header = granted.to_string();
        self.answer_with(now, server, m, uas::status(200), "OK", &[("Expires", &header)]);
        self.subscriptions.set_timer(s, Timer::Expiry, at);
        self.emit_subscription(s, SubscriptionEvent::Refreshed { expires: granted });
        // §4.2.1.2: the current state at once after a refresh.
        self.send_notify(now, s, (current.0, None, current.1));
        true
    }

    /// Answers the SUBSCRIBE `s` waits to answer.
    fn answer_subscribe(&mut self, now: Instant, s: SubscriptionId, code: u16, reason: &str, headers: &[(&str, &str)]) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        let Some(offer) = x.offer.take() else { return };
        let ok = (200..300).contains(&code);
        let contact = ok.then(|| format!("<{}>", self.contact_for(offer.peer.transport)));
        let mut extra: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 2);
        if let Some(c) = &contact {
            extra.push(("Contact", c));
        }
        extra.extend_from_slice(headers);
        if let Some(ua) = self.config.user_agent.as_deref() {
            extra.push(("Server", ua));
        }
        let mut bytes = Vec::new();
        offer.head.write(&mut bytes, uas::status(code), reason, ok, &extra, b"");
        let _ = self.transactions.respond(now, offer.server, bytes);
        // Out at once (a refusal sends nothing else that would carry it).
        self.pump(now);
    }

    /// Sends (or queues) a NOTIFY with `notice` on `s` (§4.2.2).
    fn send_notify(&mut self, now: Instant, s: SubscriptionId, notice: Notice) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        if notice.0 != SubState::Terminated {
            x.current = Some((notice.0, notice.2.clone()));
        }
        if x.request.is_some() {
            // One at a time, in order; only the latest state waits.
            x.queued = Some(notice);
            return;
        }
        let (state, reason, body) = notice;
        let value = match (state, reason) {
            (SubState::Terminated, Some(r)) => format!("terminated;reason={r}"),
            (SubState::Terminated, None) => "terminated".to_owned(),
            _ => {
                // §4.2.2: the time left, rounded up.
                let left = x.expires_at.map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                format!("{};expires={secs}", state.as_str())
            }
        };
        let mut request = Request::new(Method::Notify, "");
        request.headers = vec![("Event".to_owned(), x.event.clone()), ("Subscription-State".to_owned(), value)];
        if let Some(b) = body {
            request.content_type = Some(b.content_type);
            request.body = b.bytes;
        }
        if self.send_in_subscription(now, s, request).is_none() {
            self.end_subscription(now, s, SubscriptionEnd::Failed(RequestError::Timeout));
        }
    }

    /// The last NOTIFY of `s` (`terminated;reason=REASON`); `why` reported
    /// once it is answered.
    fn end_with_notify(
        &mut self,
        now: Instant,
        s: SubscriptionId,
        reason: &str,
        body: Option<Body>,
        why: SubscriptionEnd,
    ) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        x.phase = Phase::Ending;
        x.ending = Some(why);
        x.queued = None;
        self.subscriptions.clear_timer(s, Timer::Expiry);
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        if x.request.is_some() {
            x.queued = Some((SubState::Terminated, Some(reason.to_owned()), body));
        } else {
            self.send_notify(now, s, (SubState::Terminated, Some(reason.to_owned()), body));
        }
    }

    /// A NOTIFY of ours on `s` was answered (§4.2.2).
    fn notify_finished(&mut self, now: Instant, s: SubscriptionId, result: Result<Response, RequestError>) {
        let Some(x) = self.subscriptions.all.get_mut(&s) else { return };
        if let Err(e) = result {
            // §4.2.2: 481 (the subscriber has none) or no answer: gone.
            // Any other failure ends it too: the subscriber cannot be
            // told.
            let why = x.ending.take().filter(|_| x.queued.is_none()).unwrap_or(SubscriptionEnd::Failed(e));
            return self.end_subscription(now, s, why);
        }
        if let Some(next) = x.queued.take() {
            return self.send_notify(now, s, next);
        }
        if x.phase == Phase::Ending {
            let why = x.ending.take().unwrap_or(SubscriptionEnd::Ended);
            self.end_subscription(now, s, why);
        }
    }

    // ----- dispatch and timers -----

    /// A SUBSCRIBE or NOTIFY the application does not handle itself.
    /// Returns `false` if it belongs to no subscription (an INVITE
    /// session's dialog may own it).
    pub(super) fn subscription_request(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) -> bool {
        let in_dialog = m.to().and_then(Result::ok).is_some_and(|t| t.tag().is_some());
        match (m.method().copied(), in_dialog) {
            (Some(Method::Notify), true) => self.notify_arrived(now, server, bytes, m, source),
            (Some(Method::Subscribe), true) => self.resubscribe_arrived(now, server, m),
            (Some(Method::Subscribe), false) => {
                self.subscribe_arrived(now, server, bytes, m, source);
                true
            }
            (Some(Method::Refer), _) => self.refer_arrived(now, server, bytes, m, source),
            (Some(Method::Notify), false) => {
                // §4.1.3: a NOTIFY outside any dialog matches nothing.
                self.answer(now, server, m, uas::status(481), "Subscription Does Not Exist");
                true
            }
            _ => false,
        }
    }

    /// Runs the subscription timers that are due.
    pub(super) fn subscription_timeouts(&mut self, now: Instant) {
        while let Some(&(at, s, timer)) = self.subscriptions.timers.first() {
            if at > now {
                break;
            }
            self.subscriptions.timers.pop_first();
            if let Some(x) = self.subscriptions.all.get_mut(&s) {
                x.timers.remove(&timer);
            }
            self.subscription_timer(now, s, timer);
        }
        let t = now;
        self.subscriptions.forking.retain(|_, (_, until)| *until >= t);
    }

    fn subscription_timer(&mut self, now: Instant, s: SubscriptionId, timer: Timer) {
        let Some(x) = self.subscriptions.all.get(&s) else { return };
        match (timer, x.role) {
            (Timer::Refresh, Role::Subscriber) => self.send_refresh(now, s),
            (Timer::Expiry, Role::Subscriber) => self.end_subscription(now, s, SubscriptionEnd::Expired),
            (Timer::Expiry, Role::Notifier) => {
                // §4.2.2: not refreshed: over, and the subscriber is told.
                let body = x.current.as_ref().and_then(|c| c.1.clone());
                self.end_with_notify(now, s, "timeout", body, SubscriptionEnd::Expired);
            }
            (Timer::N, _) => {
                let why =
                    if x.phase == Phase::Ending { SubscriptionEnd::Unsubscribed } else { SubscriptionEnd::NoNotify };
                if x.phase == Phase::Ending || !x.notified {
                    self.end_subscription(now, s, why);
                }
            }
            (Timer::Unanswered, _) => self.end_subscription(now, s, SubscriptionEnd::Unanswered),
            (Timer::RegPoll, _) => self.reg_poll(now, s),
            (Timer::Refresh, Role::Notifier) => {}
        }
    }

    /// At shutdown: ours are unsubscribed, those we serve terminated
    /// (`noresource`); shutdown waits for them (each bounded by Timer N or
    /// its NOTIFY's transaction).
    pub(super) fn shutdown_subscriptions(&mut self, now: Instant) {
        let all: Vec<SubscriptionId> = self.subscriptions.all.keys().copied().collect();
        for s in all {
            let Some(x) = self.subscriptions.all.get(&s) else { continue };
            match (x.role, x.phase) {
                (_, Phase::Ending) => {}
                (Role::Subscriber, Phase::Active) => self.send_unsubscribe(now, s),
                (Role::Subscriber, _) => self.end_subscription(now, s, SubscriptionEnd::ShutDown),
                (Role::Notifier, Phase::Active) => {
                    let body = x.current.as_ref().and_then(|c| c.1.clone());
                    self.end_with_notify(now, s, "noresource", body, SubscriptionEnd::ShutDown);
                }
                (Role::Notifier, _) => {
                    self.answer_subscribe(now, s, 503, "Service Unavailable", &[]);
                    self.end_subscription(now, s, SubscriptionEnd::ShutDown);
                }
            }
        }
    }
}

/// The header fields of a SUBSCRIBE: Event, Expires, Accept, the
/// application's.
fn subscribe_headers(
    event: &str,
    expires: u32,
    accept: &[String],
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut h = vec![("Event".to_owned(), event.to_owned()), ("Expires".to_owned(), expires.to_string())];
    if !accept.is_empty() {
        h.push(("Accept".to_owned(), accept.join(", ")));
    }
    h.extend(extra.iter().cloned());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_header_package_and_id() {
        assert_eq!(parse_event("presence"), Some(("presence".into(), None)));
        assert_eq!(parse_event("refer;id=93809824"), Some(("refer".into(), Some("93809824".into()))));
        assert_eq!(parse_event("presence.winfo"), Some(("presence.winfo".into(), None)));
        assert_eq!(parse_event(""), None);
        assert_eq!(parse_event("a b"), None);
    }

    #[test]
    fn subscription_state_section_8_2_3() {
        assert_eq!(parse_state("active;expires=600"), Some((SubState::Active, Some(600), None, None)));
        assert_eq!(
            parse_state("terminated; reason=probation; retry-after=30"),
            Some((SubState::Terminated, None, Some("probation".into()), Some(30)))
        );
        assert_eq!(parse_state("Pending"), Some((SubState::Pending, None, None, None)));
        // An extension state counts as pending; garbage is refused.
        assert_eq!(parse_state("waiting"), Some((SubState::Pending, None, None, None)));
        assert_eq!(parse_state(";;"), None);
        // liblinphone 5.1's last refer NOTIFY.
        assert_eq!(
            parse_state("terminated;reason=reason=noresource"),
            Some((SubState::Terminated, None, Some("noresource".into()), None))
        );
    }

    #[test]
    fn refresh_comes_three_quarters_through() {
        assert_eq!(refresh_after(3600), Duration::from_secs(2700));
        assert_eq!(refresh_after(60), Duration::from_secs(45));
    }
}
