//! What a receiver checks before acting on a message, and what it answers.
//!
//! [`validate`] is the syntax check every element owes a message (RFC 3261
//! §8.2, §16.3 step 1): the mandatory header fields exist once each and
//! parse, CSeq agrees with the method, and every header the stack types
//! follows its grammar. [`inspect_request`] goes on with the UAS steps of
//! §8.2.1–§8.2.3 (method, URI scheme, Require, body) for given
//! [`Capabilities`]; [`inspect_response`] applies §8.1.3.3.

use super::header::kind_bit;
use super::headers::Date;
use super::headers::{
    Address, CSeq, Challenge, Contact, Credentials, HeaderError, HeaderValue, MediaType, RetryAfter, ServerVal, Via,
    Warning,
};
use super::{HeaderName, Message, Method, StatusCode, Uri, UriError};

/// Why a message was refused, and the status a request deserves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid<'a> {
    /// A header field is missing, repeated or malformed (400).
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// CSeq names another method than the request line (400, §8.1.1.5).
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    /// The Request-URI does not follow the URI grammar (400, §25).
    #[error("malformed Request-URI")]
    RequestUri,
    /// The Request-URI carries headers (400, §19.1.1 table 1).
    #[error("Request-URI must not carry headers")]
    RequestUriHeaders,
    /// The method is not known (501) or not allowed here (405), §8.2.1.
    #[error("method {0} not supported")]
    Method(Method<'a>),
    /// The Request-URI scheme is not supported (416, §8.2.2.1).
    #[error("URI scheme {0} not supported")]
    Scheme(&'a str),
    /// Require lists option tags not supported (420, §8.2.2.3); the tags
    /// go into the response's Unsupported header.
    #[error("unsupported extensions required")]
    Extensions(Vec<&'a str>),
    /// The body's type or encoding is not understood (415, §8.2.3).
    #[error("unsupported media type")]
    MediaType,
    /// No acceptable body can be produced (406, §8.2.3 / §21.4.7).
    #[error("no acceptable response body")]
    NotAcceptable,
    /// A REGISTER whose To is not a SIP or SIPS URI (400, §10.3).
    #[error("address-of-record must be a SIP or SIPS URI")]
    AddressOfRecord,
    /// A response with more than one Via reached its UAC (§8.1.3.3): discard.
    #[error("response carries more than one Via")]
    ExtraVia,
}

impl Invalid<'_> {
    /// The status code a UAS answers with (responses are discarded instead).
    pub fn status(&self) -> StatusCode {
        let code = match self {
            Invalid::Method(Method::Extension(_)) => 501,
            Invalid::Method(_) => 405,
            Invalid::Scheme(_) => 416,
            Invalid::Extensions(_) => 420,
            Invalid::MediaType => 415,
            Invalid::NotAcceptable => 406,
            _ => 400,
        };
        StatusCode(code)
    }
}

fn check<'a, T: HeaderValue<'a>>(m: &Message<'a>, name: HeaderName) -> Result<(), HeaderError> {
    m.values::<T>(name).try_for_each(|r| r.map(|_| ()))
}

/// [`check`] when `name` is among `present` (a [`Headers::kinds`] set):
/// absent kinds cost no scan.
fn check_in<'a, T: HeaderValue<'a>>(m: &Message<'a>, present: u128, name: HeaderName) -> Result<(), HeaderError> {
    let bit = kind_bit(name);
    if bit != 0 && present & bit == 0 {
        return Ok(());
    }
    check::<T>(m, name)
}

/// The syntax checks a proxy owes a request before it forwards it (§16.3
/// step 1): what its server transaction and the forwarding rules use —
/// CSeq, Call-ID, From, To, Max-Forwards, Via, the Request-URI, Route,
/// Record-Route, Path, Contact, the credentials and the option tags. Any
/// other field, well-formed or not, is left as it is (§16.3: "SHOULD be
/// ignored and remain unchanged"), so a peer's odd `Subscription-State`
/// still reaches the user agent it is for.
pub fn validate_for_proxy<'a>(m: &Message<'a>) -> Result<(), Invalid<'a>> {
    validate_head(m)?;
    let present = m.headers().kinds();
    check_in::<Contact<'a>>(m, present, HeaderName::Contact)?;
    for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        check_in::<Address<'a>>(m, present, name)?;
    }
    for name in [HeaderName::Require, HeaderName::ProxyRequire] {
        check_in::<&'a str>(m, present, name)?;
    }
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        check_in::<Credentials<'a>>(m, present, name)?;
    }
    Ok(())
}

/// The syntax checks every element owes a message (§8.2, §16.3 step 1).
pub fn validate<'a>(m: &Message<'a>) -> Result<(), Invalid<'a>> {
    validate_head(m)?;
    validate_rest(m)
}

/// The fields every element uses: one CSeq, Call-ID, From and To, at most
/// one Max-Forwards, a Via, a Request-URI without headers and a CSeq
/// method that matches it.
fn validate_head<'a>(m: &Message<'a>) -> Result<(), Invalid<'a>> {
    // Exactly one of each (§8.1.1); Max-Forwards may be absent (RFC 2543
    // peers, RFC 4475 §3.4.1) but not repeated.
    let cseq: CSeq<'a> = m.single_cseq()?;
    m.single_call_id()?;
    m.single_from()?;
    m.single_to()?;
    if m.headers().count(HeaderName::MaxForwards) > 0 {
        let _: u8 = m.single(HeaderName::MaxForwards)?;
    }
    if m.headers().first(HeaderName::Via).is_none() {
        return Err(HeaderError::Missing(HeaderName::Via).into());
    }
    check::<Via<'a>>(m, HeaderName::Via)?;
    if let Some(rl) = m.request_line() {
        if cseq.method() != rl.method {
            return Err(Invalid::CSeqMismatch);
        }
        let uri = m.request_uri().unwrap_or(Err(UriError)).map_err(|_| Invalid::RequestUri)?;
        if let Uri::Sip(u) = &uri {
            if u.headers().is_some() {
                return Err(Invalid::RequestUriHeaders);
            }
        }
    }
    Ok(())
}

/// Every other typed header present must parse. Expires is left out on
/// purpose (§20.19 treats a malformed value as 3600), and so are Event and
/// Subscription-State: the subscriptions read them and answer what they
/// cannot (400, 489; RFC 6665 §4.1.3).
fn validate_rest<'a>(m: &Message<'a>) -> Result<(), Invalid<'a>> {
    let present = m.headers().kinds();
    check_in::<Contact<'a>>(m, present, HeaderName::Contact)?;
    for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path, HeaderName::ReplyTo] {
        check_in::<Address<'a>>(m, present, name)?;
    }
    check_in::<MediaType<'a>>(m, present, HeaderName::ContentType)?;
    check_in::<MediaType<'a>>(m, present, HeaderName::Accept)?;
    check_in::<u32>(m, present, HeaderName::MinExpires)?;
    check_in::<Method<'a>>(m, present, HeaderName::Allow)?;
    for name in [
        HeaderName::Supported,
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Unsupported,
        HeaderName::ContentEncoding,
    ] {
        check_in::<&'a str>(m, present, name)?;
    }
    for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
        check_in::<Challenge<'a>>(m, present, name)?;
    }
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        check_in::<Credentials<'a>>(m, present, name)?;
    }
    check_in::<RetryAfter<'a>>(m, present, HeaderName::RetryAfter)?;
    check_in::<Date<'a>>(m, present, HeaderName::Date)?;
    check_in::<Warning<'a>>(m, present, HeaderName::Warning)?;
    check_in::<ServerVal<'a>>(m, present, HeaderName::UserAgent)?;
    check_in::<ServerVal<'a>>(m, present, HeaderName::Server)?;
    Ok(())
}

/// What a UAS supports, for [`inspect_request`].
#[derive(Debug, Clone, Copy)]
pub struct Capabilities<'c> {
    /// Methods it handles (others: 405 if standard, 501 if unknown).
    pub methods: &'c [Method<'static>],
    /// Request-URI schemes it accepts (lower case).
    pub schemes: &'c [&'c str],
    /// Option tags it supports (Require checks, §8.2.2.3).
    pub extensions: &'c [&'c str],
    /// Body types it understands and produces (`type/subtype`; `*/*`:
    /// any).
    pub media_types: &'c [&'c str],
}

impl Default for Capabilities<'static> {
    /// A user agent: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO,
    /// UPDATE, SUBSCRIBE, NOTIFY; `sip` and `sips`; no extensions;
    /// `application/sdp` and `text/plain` bodies.
    fn default() -> Self {
        Capabilities {
            methods: &[
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Message,
                Method::Info,
                Method::Update,
                Method::Subscribe,
                Method::Notify,
            ],
            schemes: &["sip", "sips"],
            extensions: &[],
            media_types: &["application/sdp", "text/plain"],
        }
    }
}

/// §8.2.1–§8.2.3 after [`validate`]: the checks a UAS makes, in the RFC's
/// order, with the response each failure earns ([`Invalid::status`]).
pub fn inspect_request<'a>(m: &Message<'a>, caps: &Capabilities<'_>) -> Result<(), Invalid<'a>> {
    validate(m)?;
    let Some(rl) = m.request_line() else {
        return Ok(());
    };
    // §8.2.1 Method inspection.
    if !caps.methods.contains(&rl.method) {
        return Err(Invalid::Method(rl.method));
    }
    // §8.2.2.1 To and Request-URI.
    let uri = m.request_uri().unwrap_or(Err(UriError)).map_err(|_| Invalid::RequestUri)?;
    let scheme = uri.scheme();
    if !caps.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(Invalid::Scheme(scheme));
    }
    if rl.method == Method::Register {
        let to: Address<'a> = m.single_to()?;
        if to.uri().as_sip().is_none() {
            return Err(Invalid::AddressOfRecord);
        }
    }
    // §8.2.2.3 Require — never for ACK or CANCEL.
    if !matches!(rl.method, Method::Ack | Method::Cancel) {
        let unknown: Vec<&'a str> = m
            .require()
            .filter_map(Result::ok)
            .filter(|t| !caps.extensions.iter().any(|e| e.eq_ignore_ascii_case(t)))
            .collect();
        if !unknown.is_empty() {
            return Err(Invalid::Extensions(unknown));
        }
    }
    // §8.2.3 Content processing.
    let understood = |t: &MediaType<'_>| {
        caps.media_types.iter().any(|s| *s == "*/*" || s.split_once('/').is_some_and(|(a, b)| t.is(a, b)))
    };
    if !m.body().is_empty() {
        let ok_type = match m.content_type() {
            Some(Ok(t)) => understood(&t) || t.top().eq_ignore_ascii_case("multipart"),
            _ => false,
        };
        let ok_encoding =
            m.values::<&str>(HeaderName::ContentEncoding).all(|e| e.is_ok_and(|e| e.eq_ignore_ascii_case("identity")));
        if !ok_type || !ok_encoding {
            return Err(Invalid::MediaType);
        }
    }
    // §21.4.7: an INVITE must be able to carry our answer in a type its Accept admits.
    if rl.method == Method::Invite && m.headers().first(HeaderName::Accept).is_some() {
        let mut ranges = m.accept().filter_map(Result::ok).peekable();
        if ranges.peek().is_some()
            && !ranges.any(|r| caps.media_types.iter().any(|s| s.split_once('/').is_some_and(|(a, b)| r.admits(a, b))))
        {
            return Err(Invalid::NotAcceptable);
        }
    }
    Ok(())
}

/// §8.1.3.3: a UAC discards a response with more than one Via, after the
/// [`validate`] checks.
pub fn inspect_response<'a>(m: &Message<'a>) -> Result<(), Invalid<'a>> {
    validate(m)?;
    if m.vias().count() > 1 {
        return Err(Invalid::ExtraVia);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:alice@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKn1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:bob@192.0.2.2>;tag=b\r\nTo: <sip:alice@192.0.2.1>;tag=a\r\nCall-ID: c\r\n\
        CSeq: 113 NOTIFY\r\nSubscription-State: terminated;reason=reason=noresource\r\nEvent: refer\r\n";

    #[test]
    fn fields_left_to_their_readers_do_not_fail_the_message() {
        // liblinphone 5.1's last refer NOTIFY: the subscriptions read its
        // state leniently; neither a user agent nor a proxy refuses it.
        let text = format!("{NOTIFY}Content-Length: 0\r\n\r\n");
        let m = Message::parse(text.as_bytes()).unwrap();
        assert!(validate(&m).is_ok());
        assert!(validate_for_proxy(&m).is_ok());
    }

    #[test]
    fn a_proxy_checks_only_what_it_uses() {
        // §16.3 step 1: a malformed Warning is the user agent's to judge,
        // a malformed Route the proxy's.
        let warning = format!("{NOTIFY}Warning: not a warning\r\nContent-Length: 0\r\n\r\n");
        let m = Message::parse(warning.as_bytes()).unwrap();
        assert!(validate(&m).is_err());
        assert!(validate_for_proxy(&m).is_ok());
        let route = format!("{NOTIFY}Route: <<<\r\nContent-Length: 0\r\n\r\n");
        let m = Message::parse(route.as_bytes()).unwrap();
        assert!(validate_for_proxy(&m).is_err());
    }
}
