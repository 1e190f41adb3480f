//! The headers of event notification (RFC 6665 §8.2) and transfer
//! (RFC 3515, RFC 3891, RFC 3892, RFC 4488) as typed values.
//!
//! Parsing reuses the message layer's grammar: the parameter lists are its
//! [`Params`] (borrowed, walked lazily), addresses its [`Address`] and URIs
//! its [`Uri`]. `Display` writes a value in canonical form (no optional
//! whitespace, known parameters first), which parses back to the same
//! value.

use super::EventError;
use crate::message::grammar::{is_header_char, is_token, trim, whole_u32};
use crate::message::headers::{
    Address, CallId, Event as EventView, HeaderValue, ListIter, SubState as ViewState, SubscriptionState as StateView,
};
use crate::message::{Param, Params, Uri};
use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

fn write_param(f: &mut fmt::Formatter<'_>, p: &Param<'_>) -> fmt::Result {
    match p.value() {
        None => write!(f, ";{}", p.name()),
        Some(v) if p.is_quoted() => write!(f, ";{}=\"{v}\"", p.name()),
        Some(v) => write!(f, ";{}={v}", p.name()),
    }
}

/// Writes the parameters of `params` whose names are not in `known`.
fn write_other_params(f: &mut fmt::Formatter<'_>, params: Option<Params<'_>>, known: &[&str]) -> fmt::Result {
    for p in params.iter().flat_map(Params::iter) {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(p.name())) {
            write_param(f, &p)?;
        }
    }
    Ok(())
}

fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// `event-type = event-package *( "." event-template )`, each part a
/// `token-nodot` (RFC 6665 §8.4).
fn is_event_type(s: &str) -> bool {
    s.split('.').all(|part| !part.is_empty() && part.bytes().all(|c| is_token(c) && c != b'.'))
}

/// The value trimmed of surrounding whitespace.
fn value_bytes<V: AsRef<[u8]> + ?Sized>(value: &V) -> &[u8] {
    trim(value.as_ref())
}

/// The header parameters after a head of `v` that ends at `head_end` (a
/// `;` or whitespace follows it, or nothing). The message layer parses
/// `token *( SEMI generic-param )`; the head's trailing token characters
/// stand in for that token, so the parameters stay borrowed from `v`.
/// `bad` when the head does not end in a token character and parameters
/// follow.
fn params_after(v: &[u8], head_end: usize, bad: EventError) -> Result<Option<Params<'_>>, EventError> {
    let head = v.get(..head_end).ok_or(bad)?;
    let start = head.iter().rposition(|&c| !is_token(c)).map_or(0, |i| i + 1);
    if start == head_end {
        return if trim(&v[head_end..]).is_empty() { Ok(None) } else { Err(bad) };
    }
    EventView::parse_value(&v[start..]).map(|e| Some(e.params())).ok_or(bad)
}

// ---------------------------------------------------------------------------
// Event (RFC 6665 §8.2.1)

/// `Event: event-type *( SEMI event-param )` (RFC 6665 §8.2.1, grammar
/// §8.4): the package, its templates and the `id` that tells apart
/// subscriptions of one dialog.
///
/// ```
/// use sipline::event::Event;
/// let e = Event::parse("presence.winfo;id=7")?;
/// assert_eq!((e.package(), e.templates().collect::<Vec<_>>(), e.id()), ("presence", vec!["winfo"], Some("7")));
/// assert_eq!(Event::new("refer")?.with_id("93809824")?.to_string(), "refer;id=93809824");
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    kind: &'a str,
    id: Option<&'a str>,
    params: Option<Params<'a>>,
}

impl<'a> Event<'a> {
    /// An Event value for `event_type` (`presence`, `reg`, `refer`,
    /// `message-summary`, `presence.winfo`…).
    pub fn new(event_type: &'a str) -> Result<Self, EventError> {
        if !is_event_type(event_type) {
            return Err(EventError::BadValue { field: "event-type" });
        }
        Ok(Event { kind: event_type, id: None, params: None })
    }

    /// The same value with an `id` parameter (a token).
    pub fn with_id(mut self, id: &'a str) -> Result<Self, EventError> {
        if !is_token_str(id) {
            return Err(EventError::BadValue { field: "id" });
        }
        self.id = Some(id);
        self.params = None;
        Ok(self)
    }

    /// Parses a header value.
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let bad = EventError::Header { header: "Event" };
        let view = EventView::parse_value(value_bytes(value)).ok_or(bad)?;
        if !is_event_type(view.package()) {
            return Err(bad);
        }
        // event-param = generic-param / ( "id" EQUAL token )
        let id = match view.params().get("id") {
            None => None,
            Some(p) => Some(p.value().filter(|v| !p.is_quoted() && is_token_str(v)).ok_or(bad)?),
        };
        Ok(Event { kind: view.package(), id, params: Some(view.params()) })
    }

    /// The whole event type: the package and its templates
    /// (`presence.winfo`).
    pub fn event_type(&self) -> &'a str {
        self.kind
    }

    /// The package (`presence` of `presence.winfo`).
    pub fn package(&self) -> &'a str {
        self.kind.split('.').next().unwrap_or(self.kind)
    }

    /// The templates after the package, in order (`winfo`).
    pub fn templates(&self) -> impl Iterator<Item = &'a str> {
        self.kind.split('.').skip(1)
    }

    /// The `id` parameter.
    pub fn id(&self) -> Option<&'a str> {
        self.id
    }

    /// Every parameter as parsed (`id` included); none for a built value.
    pub fn params(&self) -> impl Iterator<Item = Param<'a>> {
        self.params.into_iter().flat_map(Params::into_iter)
    }

    /// Whether `other` names the same subscription: the event types and
    /// the `id`s (present in both or in neither) are equal byte for byte;
    /// other parameters do not count (RFC 6665 §8.2.1).
    pub fn matches(&self, other: &Event<'_>) -> bool {
        self.kind == other.kind && self.id == other.id
    }
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        if let Some(id) = self.id {
            write!(f, ";id={id}")?;
        }
        write_other_params(f, self.params, &["id"])
    }
}

impl<'a> HeaderValue<'a> for Event<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        Event::parse(value).ok()
    }
}

// ---------------------------------------------------------------------------
// Subscription-State (RFC 6665 §8.2.3)

/// The `substate-value` of Subscription-State (RFC 6665 §8.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubState<'a> {
    /// `active`: the subscription was accepted.
    Active,
    /// `pending`: received, awaiting authorization.
    Pending,
    /// `terminated`: over.
    Terminated,
    /// `extension-substate`: a token this stack does not know.
    Extension(&'a str),
}

impl<'a> SubState<'a> {
    /// The value as written.
    pub fn as_str(&self) -> &'a str {
        match self {
            SubState::Active => "active",
            SubState::Pending => "pending",
            SubState::Terminated => "terminated",
            SubState::Extension(s) => s,
        }
    }
}

/// The `reason` of a terminated subscription (RFC 6665 §8.2.3
/// `event-reason-value`; what each asks of the subscriber is in §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason<'a> {
    /// `deactivated`: subscribe again at once.
    Deactivated,
    /// `probation`: subscribe again later (after `retry-after`).
    Probation,
    /// `rejected`: refused by policy; do not subscribe again.
    Rejected,
    /// `timeout`: not refreshed in time; subscribe again at once.
    Timeout,
    /// `giveup`: authorization took too long; subscribe again later.
    Giveup,
    /// `noresource`: the resource no longer exists; do not subscribe again.
    Noresource,
    /// `invariant`: the state will never change; do not subscribe again.
    Invariant,
    /// `event-reason-extension`.
    Extension(&'a str),
}

impl<'a> Reason<'a> {
    fn from_token(s: &'a str) -> Self {
        const KNOWN: [(&str, Reason<'static>); 7] = [
            ("deactivated", Reason::Deactivated),
            ("probation", Reason::Probation),
            ("rejected", Reason::Rejected),
            ("timeout", Reason::Timeout),
            ("giveup", Reason::Giveup),
            ("noresource", Reason::Noresource),
            ("invariant", Reason::Invariant),
        ];
        KNOWN.iter().find(|(k, _)| k.eq_ignore_ascii_case(s)).map_or(Reason::Extension(s), |&(_, r)| r)
    }

    /// The value as written.
    pub fn as_str(&self) -> &'a str {
        match self {
            Reason::Deactivated => "deactivated",
            Reason::Probation => "probation",
            Reason::Rejected => "rejected",
            Reason::Timeout => "timeout",
            Reason::Giveup => "giveup",
            Reason::Noresource => "noresource",
            Reason::Invariant => "invariant",
            Reason::Extension(s) => s,
        }
    }
}

/// `Subscription-State: substate-value *( SEMI subexp-params )`
/// (RFC 6665 §8.2.3): `expires`, `reason` and `retry-after` typed.
///
/// ```
/// use sipline::event::{Reason, SubState, SubscriptionState};
/// let s = SubscriptionState::parse("terminated;reason=probation;retry-after=30")?;
/// assert_eq!((s.state(), s.reason(), s.retry_after()), (SubState::Terminated, Some(Reason::Probation), Some(30)));
/// assert_eq!(SubscriptionState::active(600).to_string(), "active;expires=600");
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    state: SubState<'a>,
    reason: Option<Reason<'a>>,
    expires: Option<u32>,
    retry_after: Option<u32>,
    params: Option<Params<'a>>,
}

impl<'a> SubscriptionState<'a> {
    fn with_state(state: SubState<'a>) -> Self {
        SubscriptionState { state, reason: None, expires: None, retry_after: None, params: None }
    }

    /// `active;expires=N` (RFC 6665 §4.2.2: an active or pending state
    /// carries the remaining duration).
    pub fn active(expires: u32) -> Self {
        SubscriptionState { expires: Some(expires), ..Self::with_state(SubState::Active) }
    }

    /// `pending;expires=N`.
    pub fn pending(expires: u32) -> Self {
        SubscriptionState { expires: Some(expires), ..Self::with_state(SubState::Pending) }
    }

    /// `terminated`, with a reason if given (RFC 6665 §4.2.2).
    pub fn terminated(reason: Option<Reason<'a>>) -> Self {
        SubscriptionState { reason, ..Self::with_state(SubState::Terminated) }
    }

    /// The same value with `retry-after` (RFC 6665 §8.2.3; meaningful with
    /// `probation` and `giveup`).
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self.params = None;
        self
    }

    /// Parses a header value. `expires` and `retry-after` must be
    /// delta-seconds, `reason` a token.
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let bad = EventError::Header { header: "Subscription-State" };
        let view = StateView::parse_value(value_bytes(value)).ok_or(bad)?;
        let state = match view.state() {
            ViewState::Active => SubState::Active,
            ViewState::Pending => SubState::Pending,
            ViewState::Terminated => SubState::Terminated,
            ViewState::Other(s) => SubState::Extension(s),
        };
        let params = view.params();
        let seconds = |name: &str| -> Result<Option<u32>, EventError> {
            match params.get(name) {
                None => Ok(None),
                Some(p) => {
                    p.value().filter(|_| !p.is_quoted()).and_then(|v| whole_u32(v.as_bytes())).map(Some).ok_or(bad)
                }
            }
        };
        let reason = match params.get("reason") {
            None => None,
            Some(p) => Some(Reason::from_token(p.value().filter(|v| !p.is_quoted() && is_token_str(v)).ok_or(bad)?)),
        };
        Ok(SubscriptionState {
            state,
            reason,
            expires: seconds("expires")?,
            retry_after: seconds("retry-after")?,
            params: Some(params),
        })
    }

    /// The state.
    pub fn state(&self) -> SubState<'a> {
        self.state
    }
    /// The `reason` parameter.
    pub fn reason(&self) -> Option<Reason<'a>> {
        self.reason
    }
    /// The `expires` parameter, seconds.
    pub fn expires(&self) -> Option<u32> {
        self.expires
    }
    /// The `retry-after` parameter, seconds.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after
    }
    /// Every parameter as parsed; none for a built value.
    pub fn params(&self) -> impl Iterator<Item = Param<'a>> {
        self.params.into_iter().flat_map(Params::into_iter)
    }
}

impl fmt::Display for SubscriptionState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.state.as_str())?;
        if let Some(r) = self.reason {
            write!(f, ";reason={}", r.as_str())?;
        }
        if let Some(e) = self.expires {
            write!(f, ";expires={e}")?;
        }
        if let Some(r) = self.retry_after {
            write!(f, ";retry-after={r}")?;
        }
        write_other_params(f, self.params, &["reason", "expires", "retry-after"])
    }
}

impl<'a> HeaderValue<'a> for SubscriptionState<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        SubscriptionState::parse(value).ok()
    }
}

// ---------------------------------------------------------------------------
// Allow-Events (RFC 6665 §8.2.2)

/// `Allow-Events: event-type *( COMMA event-type )` (RFC 6665 §8.2.2):
/// the event packages a UA accepts.
///
/// ```
/// use sipline::event::AllowEvents;
/// let a = AllowEvents::parse("presence, refer,message-summary")?;
/// assert!(a.contains("refer") && !a.contains("reg"));
/// assert_eq!(a.to_string(), "presence, refer, message-summary");
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowEvents<'a> {
    /// The event types, in order.
    pub types: Vec<&'a str>,
}

impl<'a> AllowEvents<'a> {
    /// A list of event types; each must be an `event-type`.
    pub fn new(types: &[&'a str]) -> Result<Self, EventError> {
        if types.iter().any(|t| !is_event_type(t)) {
            return Err(EventError::BadValue { field: "event-type" });
        }
        Ok(AllowEvents { types: types.to_vec() })
    }

    /// Parses one header value (a comma-separated list, at least one).
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let bad = EventError::Header { header: "Allow-Events" };
        let mut types = Vec::new();
        for t in ListIter::new(value.as_ref()) {
            let t = std::str::from_utf8(t).ok().filter(|t| is_event_type(t)).ok_or(bad)?;
            types.push(t);
        }
        if types.is_empty() {
            return Err(bad);
        }
        Ok(AllowEvents { types })
    }

    /// Whether `event_type` is listed (byte for byte, as RFC 6665 §8.2.1
    /// compares event types).
    pub fn contains(&self, event_type: &str) -> bool {
        self.types.contains(&event_type)
    }
}

impl fmt::Display for AllowEvents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.types.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t)?;
        }
        Ok(())
    }
}

impl<'a> HeaderValue<'a> for AllowEvents<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        AllowEvents::parse(value).ok()
    }
}

// ---------------------------------------------------------------------------
// Name-addr helpers

/// `name-addr` with an optional quoted display name (RFC 3261 §25).
fn write_name_addr(out: &mut String, display: Option<&str>, uri: &str) -> Result<(), EventError> {
    if let Some(d) = display {
        if d.chars().any(char::is_control) {
            return Err(EventError::Unwritable { field: "display name" });
        }
        out.push('"');
        for c in d.chars() {
            // quoted-pair for the two characters qdtext excludes.
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\" ");
    }
    out.push('<');
    out.push_str(uri);
    out.push('>');
    Ok(())
}

/// `%HH`-escapes what an `hname`/`hvalue` may not hold (RFC 3261 §19.1.1,
/// §25 `hnv-unreserved` / `unreserved`).
fn escape_hnv(out: &mut String, s: &str) {
    for &c in s.as_bytes() {
        if is_header_char(c) {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
}

fn decode(raw: &str) -> Option<Cow<'_, str>> {
    match crate::message::grammar::unescape(raw) {
        Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
        Cow::Owned(b) => String::from_utf8(b).ok().map(Cow::Owned),
    }
}

// ---------------------------------------------------------------------------
// Refer-To (RFC 3515 §2.1)

/// `Refer-To: ( name-addr / addr-spec ) *( SEMI generic-param )`
/// (RFC 3515 §2.1): the target of a REFER. A SIP target may carry headers
/// for the request the REFER asks for, escaped in its URI (`?Replaces=…`,
/// RFC 3891 §6.1); they are decoded here.
///
/// ```
/// use sipline::event::ReferTo;
/// let r = ReferTo::parse("<sip:dave@denver.example.org?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994>")?;
/// assert_eq!(r.target().as_str(), "sip:dave@denver.example.org");
/// let rep = r.replaces().transpose()?;
/// let tags = rep.map(|rep| (rep.call_id(), rep.to_tag(), rep.from_tag()));
/// assert_eq!(tags, Some(("12345@192.168.118.3", "12345", "5FFE-3994")));
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo<'a> {
    address: Address<'a>,
    target: Uri<'a>,
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> ReferTo<'a> {
    /// Parses a header value.
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let bad = EventError::Header { header: "Refer-To" };
        let address = Address::parse_value(value_bytes(value)).ok_or(bad)?;
        let mut target = *address.uri();
        let mut headers = Vec::new();
        if let Some(sip) = address.uri().as_sip() {
            if let Some(h) = sip.headers() {
                // The URI without "?" and its headers.
                let raw = sip.as_str();
                let bare = raw.get(..raw.len().saturating_sub(h.len() + 1)).ok_or(bad)?;
                target = Uri::parse(bare).map_err(|_| bad)?;
                for (name, value) in sip.header_pairs() {
                    headers.push((decode(name).ok_or(bad)?, decode(value).ok_or(bad)?));
                }
            }
        }
        Ok(ReferTo { address, target, headers })
    }

    /// The whole address as parsed (display name, URI with headers,
    /// parameters).
    pub fn address(&self) -> &Address<'a> {
        &self.address
    }

    /// The URI as written, headers included.
    pub fn uri(&self) -> &Uri<'a> {
        self.address.uri()
    }

    /// The target: the URI without its `?headers` part.
    pub fn target(&self) -> &Uri<'a> {
        &self.target
    }

    /// The `method` URI parameter: the request the REFER asks for
    /// (RFC 3515 §2.2; INVITE when absent).
    pub fn method(&self) -> Option<&'a str> {
        self.target.as_sip()?.params().value("method")
    }

    /// The headers embedded in the URI, `%HH` decoded, in order.
    pub fn headers(&self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        &self.headers
    }

    /// The first embedded header named `name` (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
    }

    /// The embedded Replaces header (RFC 3891 §6.1: attended transfer),
    /// parsed.
    pub fn replaces(&self) -> Option<Result<Replaces<'_>, EventError>> {
        self.header("Replaces").map(Replaces::parse)
    }

    /// Writes a Refer-To value: `<target?name=value&…>` with the names and
    /// values escaped (headers only on a SIP target; added after any it
    /// already has).
    pub fn format(target: &Uri<'_>, headers: &[(&str, &str)]) -> Result<String, EventError> {
        let mut uri = String::from(target.as_str());
        if !headers.is_empty() {
            let Some(sip) = target.as_sip() else {
                return Err(EventError::BadValue { field: "Refer-To target" });
            };
            let mut sep = if sip.headers().is_some() { '&' } else { '?' };
            for (name, value) in headers {
                if name.is_empty() {
                    return Err(EventError::BadValue { field: "embedded header name" });
                }
                uri.push(sep);
                escape_hnv(&mut uri, name);
                uri.push('=');
                escape_hnv(&mut uri, value);
                sep = '&';
            }
        }
        let mut out = String::with_capacity(uri.len() + 2);
        write_name_addr(&mut out, None, &uri)?;
        Ok(out)
    }

    /// Writes the Refer-To of an attended transfer: `target` with
    /// `replaces` embedded (RFC 3891 §6.1, RFC 5589 §7).
    pub fn with_replaces(target: &Uri<'_>, replaces: &Replaces<'_>) -> Result<String, EventError> {
        Self::format(target, &[("Replaces", &replaces.to_string())])
    }
}

impl fmt::Display for ReferTo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.address, f)
    }
}

impl<'a> HeaderValue<'a> for ReferTo<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        ReferTo::parse(value).ok()
    }
}

// ---------------------------------------------------------------------------
// Referred-By (RFC 3892 §3)

/// `Referred-By: referrer-uri *( SEMI ( referredby-id-param /
/// generic-param ) )` (RFC 3892 §3): who asked for a transfer.
///
/// ```
/// use sipline::event::ReferredBy;
/// use sipline::message::Uri;
/// let v = ReferredBy::format(Some("Alice"), &Uri::parse("sip:alice@atlanta.example.com")?)?;
/// assert_eq!(v, "\"Alice\" <sip:alice@atlanta.example.com>");
/// assert_eq!(ReferredBy::parse(&v)?.uri().as_str(), "sip:alice@atlanta.example.com");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferredBy<'a> {
    address: Address<'a>,
}

impl<'a> ReferredBy<'a> {
    /// Parses a header value.
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let bad = EventError::Header { header: "Referred-By" };
        let address = Address::parse_value(value_bytes(value)).ok_or(bad)?;
        // referredby-id-param = "cid" EQUAL sip-clean-msg-id (quoted)
        if address.params().get("cid").is_some_and(|p| !p.is_quoted()) {
            return Err(bad);
        }
        Ok(ReferredBy { address })
    }

    /// The whole address as parsed.
    pub fn address(&self) -> &Address<'a> {
        &self.address
    }

    /// The referrer's URI.
    pub fn uri(&self) -> &Uri<'a> {
        self.address.uri()
    }

    /// The `cid` parameter without its quotes: the Content-ID of the
    /// referrer's signed token (RFC 3892 §3).
    pub fn cid(&self) -> Option<Cow<'a, str>> {
        self.address.params().get("cid")?.unquoted()
    }

    /// The header parameters.
    pub fn params(&self) -> Params<'a> {
        self.address.params()
    }

    /// Writes a Referred-By value: a name-addr with an optional display
    /// name.
    pub fn format(display_name: Option<&str>, uri: &Uri<'_>) -> Result<String, EventError> {
        let mut out = String::new();
        write_name_addr(&mut out, display_name, uri.as_str())?;
        Ok(out)
    }
}

impl fmt::Display for ReferredBy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.address, f)
    }
}

impl<'a> HeaderValue<'a> for ReferredBy<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        ReferredBy::parse(value).ok()
    }
}

// ---------------------------------------------------------------------------
// Replaces (RFC 3891 §6.1)

/// `Replaces: callid *( SEMI replaces-param )` (RFC 3891 §6.1): the dialog
/// a new INVITE replaces, by Call-ID and both tags, and whether only an
/// early dialog may be replaced (`early-only`).
///
/// The UA that receives it matches the dialog's Call-ID, its own local tag
/// against `to-tag` and its remote tag against `from-tag` (RFC 3891 §3).
///
/// ```
/// use sipline::event::Replaces;
/// let r = Replaces::parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff;early-only")?;
/// assert_eq!((r.call_id(), r.to_tag(), r.from_tag(), r.early_only()), ("98732@sip.example.com", "ff87ff", "r33th4x0r", true));
/// assert_eq!(r.to_string(), "98732@sip.example.com;to-tag=ff87ff;from-tag=r33th4x0r;early-only");
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaces<'a> {
    call_id: &'a str,
    to_tag: &'a str,
    from_tag: &'a str,
    early_only: bool,
    params: Option<Params<'a>>,
}

impl<'a> Replaces<'a> {
    /// A Replaces value; the Call-ID must follow RFC 3261 §25 `callid`,
    /// the tags must be tokens.
    pub fn new(call_id: &'a str, to_tag: &'a str, from_tag: &'a str) -> Result<Self, EventError> {
        if CallId::parse_value(call_id.as_bytes()).is_none() {
            return Err(EventError::BadValue { field: "call-id" });
        }
        if !is_token_str(to_tag) || !is_token_str(from_tag) {
            return Err(EventError::BadValue { field: "tag" });
        }
        Ok(Replaces { call_id, to_tag, from_tag, early_only: false, params: None })
    }

    /// The same value with or without the `early-only` flag.
    #[must_use]
    pub fn with_early_only(mut self, early_only: bool) -> Self {
        self.early_only = early_only;
        self
    }

    /// Parses a header value (also the decoded `Replaces` of a Refer-To).
    ///
    /// A Call-ID that ends in a `word` character outside `token` (`]`,
    /// `>`, `}`…) is refused, a limit of how the parameters are read.
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let header = "Replaces";
        let bad = EventError::Header { header };
        let v = value_bytes(value);
        // callid = word [ "@" word ]: it ends where the parameters begin.
        let mut at = false;
        let end = v
            .iter()
            .position(|&c| {
                if c == b'@' && !at {
                    at = true;
                    false
                } else {
                    !crate::message::grammar::is_word(c)
                }
            })
            .unwrap_or(v.len());
        let call_id = CallId::parse_value(&v[..end]).ok_or(bad)?.as_str();
        let params = params_after(v, end, bad)?.ok_or(EventError::MissingParam { header, param: "to-tag" })?;
        let tag = |name: &'static str| -> Result<&'a str, EventError> {
            let p = params.get(name).ok_or(EventError::MissingParam { header, param: name })?;
            p.value().filter(|t| !p.is_quoted() && is_token_str(t)).ok_or(bad)
        };
        // §6.1: exactly one of each tag.
        for name in ["to-tag", "from-tag"] {
            if params.iter().filter(|p| p.name().eq_ignore_ascii_case(name)).count() > 1 {
                return Err(bad);
            }
        }
        Ok(Replaces {
            call_id,
            to_tag: tag("to-tag")?,
            from_tag: tag("from-tag")?,
            early_only: params.contains("early-only"),
            params: Some(params),
        })
    }

    /// The Call-ID of the dialog to replace.
    pub fn call_id(&self) -> &'a str {
        self.call_id
    }
    /// `to-tag`: compared with the receiver's local tag (RFC 3891 §3).
    pub fn to_tag(&self) -> &'a str {
        self.to_tag
    }
    /// `from-tag`: compared with the receiver's remote tag (RFC 3891 §3).
    pub fn from_tag(&self) -> &'a str {
        self.from_tag
    }
    /// `early-only`: only an early dialog may be replaced (RFC 3891 §3).
    pub fn early_only(&self) -> bool {
        self.early_only
    }
    /// Every parameter as parsed; none for a built value.
    pub fn params(&self) -> impl Iterator<Item = Param<'a>> {
        self.params.into_iter().flat_map(Params::into_iter)
    }
}

impl fmt::Display for Replaces<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};to-tag={};from-tag={}", self.call_id, self.to_tag, self.from_tag)?;
        if self.early_only {
            f.write_str(";early-only")?;
        }
        write_other_params(f, self.params, &["to-tag", "from-tag", "early-only"])
    }
}

impl<'a> HeaderValue<'a> for Replaces<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        Replaces::parse(value).ok()
    }
}

// ---------------------------------------------------------------------------
// Refer-Sub (RFC 4488 §3)

/// `Refer-Sub: refer-sub-value *( SEMI exten )`, `true` or `false`
/// (RFC 4488 §3): whether a REFER creates the implicit subscription.
///
/// ```
/// use sipline::event::ReferSub;
/// assert!(!ReferSub::parse("false")?.value());
/// assert_eq!(ReferSub::new(true).to_string(), "true");
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferSub<'a> {
    value: bool,
    params: Option<Params<'a>>,
}

impl<'a> ReferSub<'a> {
    /// `true` or `false`.
    pub fn new(value: bool) -> Self {
        ReferSub { value, params: None }
    }

    /// Parses a header value.
    pub fn parse<V: AsRef<[u8]> + ?Sized>(value: &'a V) -> Result<Self, EventError> {
        let bad = EventError::Header { header: "Refer-Sub" };
        let view = EventView::parse_value(value_bytes(value)).ok_or(bad)?;
        let value = if view.package().eq_ignore_ascii_case("true") {
            true
        } else if view.package().eq_ignore_ascii_case("false") {
            false
        } else {
            return Err(bad);
        };
        Ok(ReferSub { value, params: Some(view.params()) })
    }

    /// The value: `false` asks for no implicit subscription.
    pub fn value(&self) -> bool {
        self.value
    }

    /// The extension parameters as parsed.
    pub fn params(&self) -> impl Iterator<Item = Param<'a>> {
        self.params.into_iter().flat_map(Params::into_iter)
    }
}

impl fmt::Display for ReferSub<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.value { "true" } else { "false" })?;
        write_other_params(f, self.params, &[])
    }
}

impl<'a> HeaderValue<'a> for ReferSub<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        ReferSub::parse(value).ok()
    }
}
