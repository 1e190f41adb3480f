//! Typed views of header field values (RFC 3261 §20, §25 and the RFCs that
//! add headers). Each view borrows from the message and is parsed on demand.
//!
//! List headers (§7.3.1: `Via`, `Contact`, `Route`, `Allow`…) may carry
//! several comma-separated values per line and several lines; the accessors
//! on [`Message`] walk every value in order. Commas inside quoted strings and
//! angle brackets do not split.

mod address;
mod auth;
mod content;
mod event;
mod misc;
mod via;

pub use address::{Address, Contact, DisplayName};
pub use auth::{AuthParams, Challenge, Credentials};
pub use content::MediaType;
pub use event::{Event, SubState, SubscriptionState};
pub use misc::{CSeq, CallId, Date, RetryAfter, ServerVal, Warning};
pub use via::{Via, MAGIC_COOKIE};

use super::grammar::{quoted_string, sws, trim};
use super::{HeaderName, Headers, Message, Method, Uri, UriError};
use std::cell::OnceCell;

/// One remembered value: absent, malformed, or parsed.
type Slot<T> = OnceCell<Option<Result<T, HeaderError>>>;

/// The values of a [`Message`] that every layer reads, parsed on first
/// use (see [`Message`]). A cache never makes two messages differ: it
/// compares equal to any other and shows nothing in `Debug`.
#[derive(Clone, Default)]
pub(crate) struct Cache<'a> {
    via: Slot<Via<'a>>,
    from: Slot<Address<'a>>,
    to: Slot<Address<'a>>,
    call_id: Slot<CallId<'a>>,
    cseq: Slot<CSeq<'a>>,
    pub(crate) request_uri: OnceCell<Result<Uri<'a>, UriError>>,
}

impl PartialEq for Cache<'_> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cache<'_> {}

impl std::fmt::Debug for Cache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

/// Why a header value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value does not follow the header's grammar.
    #[error("malformed {0} header")]
    Malformed(HeaderName),
    /// A required header is absent.
    #[error("missing {0} header")]
    Missing(HeaderName),
    /// A single-valued header appears more than once.
    #[error("more than one {0} header")]
    Multiple(HeaderName),
}

/// A type that one header value (one list element, for list headers) parses
/// into. Implemented by every typed view in this module.
pub trait HeaderValue<'a>: Sized {
    /// Parses one value, already trimmed of surrounding whitespace.
    fn parse_value(value: &'a [u8]) -> Option<Self>;
}

/// Whether a header's grammar is a comma-separated list (§7.3.1).
pub fn is_list(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::Contact
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::Path
            | HeaderName::Allow
            | HeaderName::AllowEvents
            | HeaderName::Supported
            | HeaderName::Require
            | HeaderName::ProxyRequire
            | HeaderName::Unsupported
            | HeaderName::Accept
            | HeaderName::AcceptEncoding
            | HeaderName::AcceptLanguage
            | HeaderName::ContentEncoding
            | HeaderName::ContentLanguage
            | HeaderName::Warning
            | HeaderName::AlertInfo
            | HeaderName::CallInfo
            | HeaderName::ErrorInfo
            | HeaderName::InReplyTo
    )
}

/// Splits a list header value at the commas that separate elements.
#[derive(Debug, Clone)]
pub struct ListIter<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> ListIter<'a> {
    /// Splits `value`. An empty value (allowed for `Supported`, `Allow`,
    /// `Accept`…) has no elements.
    pub fn new(value: &'a [u8]) -> Self {
        let v = trim(value);
        ListIter { rest: if v.is_empty() { None } else { Some(v) } }
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let v = self.rest?;
        // Most values are a single element with nothing to skip over.
        if memchr::memchr3(b',', b'"', b'<', v).is_none() {
            self.rest = None;
            return Some(trim(v));
        }
        let mut k = 0;
        let mut angle = false;
        while k < v.len() {
            match v[k] {
                b'"' => match quoted_string(&v[k..]) {
                    Ok((r, _)) => {
                        k = v.len() - r.len();
                        continue;
                    }
                    // An unbalanced quote: the element runs to the end.
                    Err(_) => k = v.len(),
                },
                b'<' => angle = true,
                b'>' => angle = false,
                b',' if !angle => {
                    self.rest = Some(&v[k + 1..]);
                    return Some(trim(&v[..k]));
                }
                _ => {}
            }
            k += 1;
        }
        self.rest = None;
        Some(trim(v))
    }
}

/// Iterator over the values of one header (see [`Message::values`]).
#[derive(Debug, Clone)]
pub struct ValueIter<'m, 'a, T> {
    headers: &'m Headers<'a>,
    pos: usize,
    current: Option<ListIter<'a>>,
    name: HeaderName,
    list: bool,
    _t: std::marker::PhantomData<T>,
}

impl<'a, T: HeaderValue<'a>> Iterator for ValueIter<'_, 'a, T> {
    type Item = Result<T, HeaderError>;
    fn next(&mut self) -> Option<Self::Item> {
        let raw = loop {
            if let Some(cur) = &mut self.current {
                if let Some(e) = cur.next() {
                    break e;
                }
                self.current = None;
            }
            let line = loop {
                let h = self.headers.at(self.pos)?;
                self.pos += 1;
                if h.kind() == self.name {
                    break h.value();
                }
            };
            if self.list {
                self.current = Some(ListIter::new(line));
            } else {
                break line;
            }
        };
        Some(T::parse_value(raw).ok_or(HeaderError::Malformed(self.name)))
    }
}

impl<'a> Message<'a> {
    /// Every value of header `name` parsed as `T`, in order: list headers
    /// are split at commas, others give one value per line.
    pub fn values<T: HeaderValue<'a>>(&self, name: HeaderName) -> ValueIter<'_, 'a, T> {
        ValueIter {
            headers: self.headers(),
            pos: 0,
            current: None,
            name,
            list: is_list(name),
            _t: std::marker::PhantomData,
        }
    }

    /// The first value of header `name` as `T`; `None` if absent.
    pub fn value<T: HeaderValue<'a>>(&self, name: HeaderName) -> Option<Result<T, HeaderError>> {
        let h = self.headers().first(name)?;
        let raw = if is_list(name) { ListIter::new(h.value()).next().unwrap_or_default() } else { h.value() };
        Some(T::parse_value(raw).ok_or(HeaderError::Malformed(name)))
    }

    /// The value of a header that must appear exactly once (§20: Call-ID,
    /// CSeq, From, To, Max-Forwards…).
    pub fn single<T: HeaderValue<'a>>(&self, name: HeaderName) -> Result<T, HeaderError> {
        let mut it = self.headers().all(name);
        let h = it.next().ok_or(HeaderError::Missing(name))?;
        if it.next().is_some() {
            return Err(HeaderError::Multiple(name));
        }
        T::parse_value(h.value()).ok_or(HeaderError::Malformed(name))
    }

    /// The first value of `name`, remembered in `slot`.
    fn remembered<T: HeaderValue<'a> + Copy>(
        &self,
        slot: &Slot<T>,
        name: HeaderName,
    ) -> Option<Result<T, HeaderError>> {
        *slot.get_or_init(|| self.value(name))
    }

    /// [`Message::single`] for a remembered value: the count is checked
    /// each time (cheap), the value parsed once.
    fn single_remembered<T: HeaderValue<'a> + Copy>(&self, slot: &Slot<T>, name: HeaderName) -> Result<T, HeaderError> {
        match self.headers().count(name) {
            0 => Err(HeaderError::Missing(name)),
            1 => self.remembered(slot, name).unwrap_or(Err(HeaderError::Missing(name))),
            _ => Err(HeaderError::Multiple(name)),
        }
    }

    /// From, which must appear exactly once (§8.1.1.3).
    pub fn single_from(&self) -> Result<Address<'a>, HeaderError> {
        self.single_remembered(&self.cache.from, HeaderName::From)
    }
    /// To, which must appear exactly once (§8.1.1.2).
    pub fn single_to(&self) -> Result<Address<'a>, HeaderError> {
        self.single_remembered(&self.cache.to, HeaderName::To)
    }
    /// Call-ID, which must appear exactly once (§8.1.1.4).
    pub fn single_call_id(&self) -> Result<CallId<'a>, HeaderError> {
        self.single_remembered(&self.cache.call_id, HeaderName::CallId)
    }
    /// CSeq, which must appear exactly once (§8.1.1.5).
    pub fn single_cseq(&self) -> Result<CSeq<'a>, HeaderError> {
        self.single_remembered(&self.cache.cseq, HeaderName::CSeq)
    }

    /// The topmost Via value (§8.1.1.7, §18.2.1).
    pub fn via(&self) -> Option<Result<Via<'a>, HeaderError>> {
        self.remembered(&self.cache.via, HeaderName::Via)
    }
    /// Every Via value, top first.
    pub fn vias(&self) -> ValueIter<'_, 'a, Via<'a>> {
        self.values(HeaderName::Via)
    }
    /// The From header (§20.20).
    pub fn from(&self) -> Option<Result<Address<'a>, HeaderError>> {
        self.remembered(&self.cache.from, HeaderName::From)
    }
    /// The To header (§20.39).
    pub fn to(&self) -> Option<Result<Address<'a>, HeaderError>> {
        self.remembered(&self.cache.to, HeaderName::To)
    }
    /// The Call-ID (§20.8).
    pub fn call_id(&self) -> Option<Result<CallId<'a>, HeaderError>> {
        self.remembered(&self.cache.call_id, HeaderName::CallId)
    }
    /// The CSeq (§20.16).
    pub fn cseq(&self) -> Option<Result<CSeq<'a>, HeaderError>> {
        self.remembered(&self.cache.cseq, HeaderName::CSeq)
    }
    /// Max-Forwards (§20.22), 0–255.
    pub fn max_forwards(&self) -> Option<Result<u8, HeaderError>> {
        self.value(HeaderName::MaxForwards)
    }
    /// Every Contact value (§20.10), including `*`.
    pub fn contacts(&self) -> ValueIter<'_, 'a, Contact<'a>> {
        self.values(HeaderName::Contact)
    }
    /// Every Route value (§20.34), top first.
    pub fn routes(&self) -> ValueIter<'_, 'a, Address<'a>> {
        self.values(HeaderName::Route)
    }
    /// Every Record-Route value (§20.30), top first.
    pub fn record_routes(&self) -> ValueIter<'_, 'a, Address<'a>> {
        self.values(HeaderName::RecordRoute)
    }
    /// Content-Type (§20.15).
    pub fn content_type(&self) -> Option<Result<MediaType<'a>, HeaderError>> {
        self.value(HeaderName::ContentType)
    }
    /// Expires (§20.19), delta-seconds.
    pub fn expires(&self) -> Option<Result<u32, HeaderError>> {
        self.value(HeaderName::Expires)
    }
    /// Min-Expires (§20.23), delta-seconds.
    pub fn min_expires(&self) -> Option<Result<u32, HeaderError>> {
        self.value(HeaderName::MinExpires)
    }
    /// Allow (§20.5): the methods the sender supports.
    pub fn allow(&self) -> ValueIter<'_, 'a, Method<'a>> {
        self.values(HeaderName::Allow)
    }
    /// Supported (§20.37) option tags.
    pub fn supported(&self) -> ValueIter<'_, 'a, &'a str> {
        self.values(HeaderName::Supported)
    }
    /// Require (§20.32) option tags.
    pub fn require(&self) -> ValueIter<'_, 'a, &'a str> {
        self.values(HeaderName::Require)
    }
    /// Proxy-Require (§20.29) option tags.
    pub fn proxy_require(&self) -> ValueIter<'_, 'a, &'a str> {
        self.values(HeaderName::ProxyRequire)
    }
    /// Unsupported (§20.40) option tags.
    pub fn unsupported(&self) -> ValueIter<'_, 'a, &'a str> {
        self.values(HeaderName::Unsupported)
    }
    /// Accept (§20.1) media ranges.
    pub fn accept(&self) -> ValueIter<'_, 'a, MediaType<'a>> {
        self.values(HeaderName::Accept)
    }
    /// WWW-Authenticate challenges (§20.44), one per line.
    pub fn www_authenticate(&self) -> ValueIter<'_, 'a, Challenge<'a>> {
        self.values(HeaderName::WwwAuthenticate)
    }
    /// Proxy-Authenticate challenges (§20.27), one per line.
    pub fn proxy_authenticate(&self) -> ValueIter<'_, 'a, Challenge<'a>> {
        self.values(HeaderName::ProxyAuthenticate)
    }
    /// Authorization credentials (§20.7), one per line.
    pub fn authorization(&self) -> ValueIter<'_, 'a, Credentials<'a>> {
        self.values(HeaderName::Authorization)
    }
    /// Proxy-Authorization credentials (§20.28), one per line.
    pub fn proxy_authorization(&self) -> ValueIter<'_, 'a, Credentials<'a>> {
        self.values(HeaderName::ProxyAuthorization)
    }
    /// Event (RFC 6665 §8.2.1).
    pub fn event(&self) -> Option<Result<Event<'a>, HeaderError>> {
        self.value(HeaderName::Event)
    }
    /// Subscription-State (RFC 6665 §8.2.3).
    pub fn subscription_state(&self) -> Option<Result<SubscriptionState<'a>, HeaderError>> {
        self.value(HeaderName::SubscriptionState)
    }
    /// Retry-After (§20.33).
    pub fn retry_after(&self) -> Option<Result<RetryAfter<'a>, HeaderError>> {
        self.value(HeaderName::RetryAfter)
    }
    /// Date (§20.17), RFC 1123 form in GMT.
    pub fn date(&self) -> Option<Result<Date<'a>, HeaderError>> {
        self.value(HeaderName::Date)
    }
    /// Warning values (§20.43).
    pub fn warnings(&self) -> ValueIter<'_, 'a, Warning<'a>> {
        self.values(HeaderName::Warning)
    }
    /// User-Agent (§20.41) as text.
    pub fn user_agent(&self) -> Option<Result<misc::ServerVal<'a>, HeaderError>> {
        self.value(HeaderName::UserAgent)
    }
    /// Server (§20.35) as text.
    pub fn server(&self) -> Option<Result<misc::ServerVal<'a>, HeaderError>> {
        self.value(HeaderName::Server)
    }
}

/// An option tag or other bare token (`Supported`, `Require`,
/// `Content-Encoding`…).
impl<'a> HeaderValue<'a> for &'a str {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        match super::grammar::token(value) {
            Ok(([], t)) => Some(t),
            _ => None,
        }
    }
}

/// A method in `Allow` (§20.5).
impl<'a> HeaderValue<'a> for Method<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        <&str>::parse_value(value).and_then(Method::from_token)
    }
}

/// `delta-seconds` and other `1*DIGIT` values within 32 bits.
impl<'a> HeaderValue<'a> for u32 {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        super::grammar::whole_u32(value)
    }
}

/// Max-Forwards: `1*DIGIT` within 0–255 (§20.22).
impl<'a> HeaderValue<'a> for u8 {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        u32::parse_value(value).and_then(|v| u8::try_from(v).ok())
    }
}

/// Parses a whole value with `f`, allowing only trailing whitespace.
pub(crate) fn whole<'a, T>(value: &'a [u8], f: impl FnOnce(&'a [u8]) -> super::grammar::PResult<'a, T>) -> Option<T> {
    match f(value) {
        Ok((rest, t)) if sws(rest).is_empty() => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(headers: &str) -> Vec<u8> {
        format!("OPTIONS sip:a@b SIP/2.0\r\n{headers}\r\n").into_bytes()
    }

    #[test]
    fn token_list_headers_span_lines_and_commas() {
        let raw = msg("Allow: INVITE, ACK,OPTIONS\r\nAllow: MESSAGE\r\nSupported:\r\nk: 100rel, timer\r\nRequire: gruu\r\nProxy-Require: sec-agree\r\nUnsupported: foo\r\n");
        let m = Message::parse(&raw).unwrap();
        let allow: Vec<_> = m.allow().map(Result::unwrap).collect();
        assert_eq!(allow, [Method::Invite, Method::Ack, Method::Options, Method::Message]);
        // An empty Supported is legal (§20.37) and contributes nothing.
        let sup: Vec<_> = m.supported().map(Result::unwrap).collect();
        assert_eq!(sup, ["100rel", "timer"]);
        assert_eq!(m.require().map(Result::unwrap).collect::<Vec<_>>(), ["gruu"]);
        assert_eq!(m.proxy_require().map(Result::unwrap).collect::<Vec<_>>(), ["sec-agree"]);
        assert_eq!(m.unsupported().map(Result::unwrap).collect::<Vec<_>>(), ["foo"]);
        let bad = msg("Allow: INVITE,,ACK\r\n");
        let m = Message::parse(&bad).unwrap();
        assert_eq!(m.allow().filter(Result::is_err).count(), 1);
    }

    #[test]
    fn numeric_headers() {
        let raw = msg("Max-Forwards: 0068\r\nExpires: 3600\r\nMin-Expires: 60\r\n");
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.max_forwards(), Some(Ok(68)));
        assert_eq!(m.expires(), Some(Ok(3600)));
        assert_eq!(m.min_expires(), Some(Ok(60)));
        let raw = msg("Max-Forwards: 300\r\nExpires: 10000000000000\r\n");
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.max_forwards(), Some(Err(HeaderError::Malformed(HeaderName::MaxForwards))));
        assert_eq!(m.expires(), Some(Err(HeaderError::Malformed(HeaderName::Expires))));
        assert_eq!(m.min_expires(), None);
    }

    #[test]
    fn single_valued_access() {
        let raw = msg("Call-ID: a\r\ni: b\r\n");
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.single::<CallId<'_>>(HeaderName::CallId), Err(HeaderError::Multiple(HeaderName::CallId)));
        assert_eq!(m.single::<CSeq<'_>>(HeaderName::CSeq), Err(HeaderError::Missing(HeaderName::CSeq)));
        assert_eq!(m.call_id().unwrap().unwrap().as_str(), "a");
        // The remembered values keep `single`'s rules, asked once or twice.
        for _ in 0..2 {
            assert_eq!(m.single_call_id(), Err(HeaderError::Multiple(HeaderName::CallId)));
            assert_eq!(m.single_cseq(), Err(HeaderError::Missing(HeaderName::CSeq)));
        }
    }

    #[test]
    fn remembered_values_match_fresh_parses() {
        let raw = msg("Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/UDP h2\r\nFrom: <sip:a@x>;tag=f\r\nTo: B <sip:b@x>\r\nCSeq: 7 OPTIONS\r\nTo: C <sip:c@x>\r\n");
        let m = Message::parse(&raw).unwrap();
        let fresh = Message::parse(&raw).unwrap();
        // Asked twice: the second answer comes from the cache and is the same.
        for _ in 0..2 {
            assert_eq!(m.via().unwrap().unwrap().host_str(), "h1");
            assert_eq!(m.from().unwrap().unwrap().tag(), Some("f"));
            assert_eq!(m.to().unwrap().unwrap().uri().as_str(), "sip:b@x");
            assert_eq!(m.single_to(), Err(HeaderError::Multiple(HeaderName::To)));
            assert_eq!(m.single_from().unwrap().tag(), Some("f"));
            assert_eq!(m.cseq().unwrap().unwrap().seq(), 7);
            assert_eq!(m.request_uri().unwrap().unwrap().as_str(), "sip:a@b");
        }
        // A filled cache does not make the message differ from a fresh parse.
        assert_eq!(m, fresh);
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v: Vec<_> = ListIter::new(b"\"a, b\" <sip:x,y@h>;p=1 , <sip:z>,\r\n w").collect();
        assert_eq!(v, [&b"\"a, b\" <sip:x,y@h>;p=1"[..], b"<sip:z>", b"w"]);
        assert_eq!(ListIter::new(b"  ").count(), 0);
        assert_eq!(ListIter::new(b"a,,b").collect::<Vec<_>>(), [&b"a"[..], b"", b"b"]);
    }
}
