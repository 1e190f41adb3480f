//! URIs: SIP and SIPS (RFC 3261 §19.1), `tel` (RFC 3966) and any other
//! scheme as an opaque absolute URI (§25 `absoluteURI`).
//!
//! Parsing borrows from the input. `%HH` escapes are kept as written and
//! decoded on demand ([`SipUri::user_unescaped`]); comparison follows §19.1.4
//! ([`Uri::equivalent`]).

use super::grammar::{
    ascii, escaped_run, fail, is_escape, is_header_char, is_host_char, is_password_char, is_scheme_char, is_uric,
    is_user_char, is_userinfo_char, unescape, PResult,
};
use super::params::{ParamSyntax, Params};
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Any URI a SIP message may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:` (§19.1).
    Sip(SipUri<'a>),
    /// `tel:` (RFC 3966).
    Tel(TelUri<'a>),
    /// Any other scheme, kept opaque (§25 `absoluteURI`).
    Absolute(AbsoluteUri<'a>),
}

/// The host part of a SIP URI or a Via `sent-by` (§25 `host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written.
    Domain(&'a str),
    /// A dotted IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference (written in brackets in URIs and Via).
    Ipv6(Ipv6Addr),
}

impl Host<'_> {
    /// The address, if the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Domain(_) => None,
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a)),
        }
    }

    /// §19.1.4: hosts compare case-insensitively; IP literals by address.
    pub fn equivalent(&self, other: &Host<'_>) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.')),
            (Host::Ipv4(a), Host::Ipv4(b)) => a == b,
            (Host::Ipv6(a), Host::Ipv6(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A `sip:` or `sips:` URI (§19.1.1).
///
/// ```
/// use sipline::message::Uri;
/// let uri = Uri::parse("sips:alice%40home@[2001:db8::1]:5071;transport=tcp?subject=hi").unwrap();
/// let Uri::Sip(sip) = uri else { unreachable!() };
/// assert!(sip.is_secure());
/// assert_eq!(&*sip.user_unescaped().unwrap(), b"alice@home");
/// assert_eq!(sip.port(), Some(5071));
/// assert_eq!(sip.params().value("transport"), Some("tcp"));
/// assert_eq!(sip.headers(), Some("subject=hi"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    raw: &'a str,
    secure: bool,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: Host<'a>,
    host_raw: &'a str,
    port: Option<u16>,
    params: Params<'a>,
    headers: Option<&'a str>,
}

impl<'a> SipUri<'a> {
    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// `true` for `sips:` (§19.1: TLS on every hop).
    pub fn is_secure(&self) -> bool {
        self.secure
    }
    /// The user part as written (escapes kept). A telephone-subscriber with
    /// `;` parameters stays whole here (RFC 4475 §3.1.1.9).
    pub fn user(&self) -> Option<&'a str> {
        self.user
    }
    /// The user part with `%HH` decoded. Bytes, not text: `%00` is a NUL
    /// that must not truncate the user (RFC 4475 §3.1.1.4).
    pub fn user_unescaped(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(unescape)
    }
    /// The password (deprecated by §19.1.1, but parsed).
    pub fn password(&self) -> Option<&'a str> {
        self.password
    }
    /// The host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }
    /// The host as written (IPv6 with brackets).
    pub fn host_str(&self) -> &'a str {
        self.host_raw
    }
    /// The explicit port, if any (§19.1.1: absent is not the same as 5060).
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// The URI parameters (`;transport=…;lr`).
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `transport` URI parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.value("transport")
    }
    /// The header part after `?`, as written.
    pub fn headers(&self) -> Option<&'a str> {
        self.headers
    }
    /// The `hname=hvalue` pairs of the header part, escapes kept.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.headers.into_iter().flat_map(|h| h.split('&')).filter_map(|kv| kv.split_once('='))
    }

    /// §19.1.4 URI comparison.
    pub fn equivalent(&self, other: &SipUri<'_>) -> bool {
        if self.secure != other.secure {
            return false;
        }
        // userinfo: case-sensitive, after unescaping.
        if self.user.map(unescape) != other.user.map(unescape)
            || self.password.map(unescape) != other.password.map(unescape)
        {
            return false;
        }
        if !self.host.equivalent(&other.host) || self.port != other.port {
            return false;
        }
        // user, ttl, method, maddr and transport must match if either has
        // them; any other parameter must match if both have it. A name given
        // twice is compared occurrence by occurrence.
        for name in ["user", "ttl", "method", "maddr", "transport"] {
            if !same_values(self.params, other.params, name) {
                return false;
            }
        }
        for a in self.params {
            if other.params.contains(a.name()) && !same_values(self.params, other.params, a.name()) {
                return false;
            }
        }
        // Headers: every header in either must be in both, equal.
        let covered = |x: &SipUri<'_>, y: &SipUri<'_>| {
            x.header_pairs().all(|(n, v)| {
                y.header_pairs().any(|(n2, v2)| eq_escaped_ci(Some(n), Some(n2)) && unescape(v) == unescape(v2))
            })
        };
        covered(self, other) && covered(other, self)
    }
}

/// Whether both lists give parameter `name` the same values, in order
/// (case-insensitive, after `%HH` decoding, §19.1.4).
fn same_values(a: Params<'_>, b: Params<'_>, name: &str) -> bool {
    let mut x = a.into_iter().filter(|p| p.name().eq_ignore_ascii_case(name));
    let mut y = b.into_iter().filter(|p| p.name().eq_ignore_ascii_case(name));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if eq_escaped_ci(p.value(), q.value()) => {}
            _ => return false,
        }
    }
}

/// Case-insensitive comparison after `%HH` decoding (§19.1.4).
fn eq_escaped_ci(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => unescape(a).eq_ignore_ascii_case(&unescape(b)),
        _ => false,
    }
}

/// A `tel:` URI (RFC 3966): the number and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelUri<'a> {
    raw: &'a str,
    number: &'a str,
    params: Params<'a>,
}

impl<'a> TelUri<'a> {
    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// The telephone number, visual separators kept.
    pub fn number(&self) -> &'a str {
        self.number
    }
    /// Whether the number is global (`+` prefix, RFC 3966 §5.1.4).
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }
    /// The parameters (`;phone-context=…`).
    pub fn params(&self) -> Params<'a> {
        self.params
    }
}

/// A URI of a scheme the stack does not interpret (§25 `absoluteURI`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsoluteUri<'a> {
    raw: &'a str,
    scheme_len: usize,
}

impl<'a> AbsoluteUri<'a> {
    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// The scheme, as written.
    pub fn scheme(&self) -> &'a str {
        &self.raw[..self.scheme_len]
    }
    /// Everything after `scheme:`.
    pub fn opaque(&self) -> &'a str {
        &self.raw[self.scheme_len + 1..]
    }
}

/// Why a string is not a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed URI")]
pub struct UriError;

impl<'a> Uri<'a> {
    /// Parses a whole string as a URI.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        match uri(s.as_bytes(), UriContext::Whole) {
            Ok(([], u)) => Ok(u),
            _ => Err(UriError),
        }
    }

    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        match self {
            Uri::Sip(u) => u.raw,
            Uri::Tel(u) => u.raw,
            Uri::Absolute(u) => u.raw,
        }
    }

    /// The scheme in lower case where known (`sip`, `sips`, `tel`), else as
    /// written.
    pub fn scheme(&self) -> &'a str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Absolute(u) => u.scheme(),
        }
    }

    /// The SIP/SIPS view, if it is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// §19.1.4 comparison for SIP URIs; other schemes compare by their
    /// scheme case-insensitively and the rest after unescaping.
    pub fn equivalent(&self, other: &Uri<'_>) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => {
                a.number.replace(['-', '.', '(', ')'], "") == b.number.replace(['-', '.', '(', ')'], "")
                    && a.params.iter().count() == b.params.iter().count()
                    && a.params.iter().all(|p| same_values(a.params, b.params, p.name()))
            }
            (Uri::Absolute(a), Uri::Absolute(b)) => {
                a.scheme().eq_ignore_ascii_case(b.scheme()) && unescape(a.opaque()) == unescape(b.opaque())
            }
            _ => false,
        }
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SipUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

/// Where a URI is being read: it decides what may follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriContext {
    /// The whole input, a Request-URI, or inside `<…>`: parameters and
    /// headers belong to the URI.
    Whole,
    /// An `addr-spec` without angle brackets in a header (§20.10): a `;`
    /// starts header parameters and a `?` is not allowed.
    BareAddrSpec,
}

/// Parses a URI at the start of `i`.
pub(crate) fn uri(i: &[u8], ctx: UriContext) -> PResult<'_, Uri<'_>> {
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let Some(first) = i.first() else {
        return fail(i);
    };
    if !first.is_ascii_alphabetic() {
        return fail(i);
    }
    let n = i.iter().take_while(|&&c| is_scheme_char(c)).count();
    if i.get(n) != Some(&b':') {
        return fail(i);
    }
    let scheme = &i[..n];
    let after = &i[n + 1..];
    if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        let (rest, u) = sip_uri(i, after, scheme.len() == 4, ctx)?;
        Ok((rest, Uri::Sip(u)))
    } else if scheme.eq_ignore_ascii_case(b"tel") {
        let (rest, u) = tel_uri(i, after, ctx)?;
        Ok((rest, Uri::Tel(u)))
    } else {
        // absoluteURI = scheme ":" ( hier-part / opaque-part ), all `uric`.
        let stop_semi = ctx == UriContext::BareAddrSpec;
        let m =
            after.iter().take_while(|&&c| is_uric(c) && !(stop_semi && (c == b';' || c == b'?')) && c != b',').count();
        // `%` must begin a valid escape.
        let body = &after[..m];
        if m == 0 || body.iter().enumerate().any(|(k, &c)| c == b'%' && !is_escape(&body[k..])) {
            return fail(i);
        }
        let end = n + 1 + m;
        let raw = ascii(&i[..end]).map_or_else(|| fail(i), |r| Ok((&i[end..], r)))?.1;
        Ok((&i[end..], Uri::Absolute(AbsoluteUri { raw, scheme_len: n })))
    }
}

fn sip_uri<'a>(whole: &'a [u8], after: &'a [u8], secure: bool, ctx: UriContext) -> PResult<'a, SipUri<'a>> {
    // Offsets into `whole`; one UTF-8 conversion at the end serves every part.
    let base = whole.len() - after.len();
    // userinfo: an '@' can only appear escaped elsewhere, so the first '@'
    // reached through userinfo characters ends it.
    let mut k = 0;
    while k < after.len() && is_userinfo_char(after[k]) {
        k += 1;
    }
    let (mut rest, user, password) = if after.get(k) == Some(&b'@') {
        let info = &after[..k];
        let colon = info.iter().position(|&c| c == b':');
        let user_len = colon.unwrap_or(k);
        if super::grammar::escaped_len(is_user_char, &info[..user_len]) != user_len || user_len == 0 {
            return fail(whole);
        }
        let password = match colon {
            None => None,
            Some(c) => {
                let p = &info[c + 1..];
                if !p.is_empty() && super::grammar::escaped_len(is_password_char, p) != p.len() {
                    return fail(whole);
                }
                Some(base + c + 1..base + k)
            }
        };
        (&after[k + 1..], Some(base..base + user_len), password)
    } else {
        (after, None, None)
    };
    let host_start = whole.len() - rest.len();
    let (r, host) = host_kind(rest)?;
    let host_end = whole.len() - r.len();
    rest = r;
    let mut port = None;
    if let Some((&b':', r)) = rest.split_first() {
        let (r, p) = port_number(r)?;
        port = Some(p);
        rest = r;
    }
    let mut params = Params::empty(ParamSyntax::Uri);
    let mut headers = None;
    if ctx == UriContext::Whole {
        if rest.first() == Some(&b';') {
            let (r, p) = Params::parse(rest, ParamSyntax::Uri)?;
            params = p;
            rest = r;
        }
        if let Some((&b'?', r)) = rest.split_first() {
            let (r, h) = uri_headers(r)?;
            headers = Some(h);
            rest = r;
        }
    }
    let end = whole.len() - rest.len();
    let Some(raw) = ascii(&whole[..end]) else {
        return fail(whole);
    };
    let part = |r: std::ops::Range<usize>| raw.get(r).unwrap_or_default();
    let host_raw = part(host_start..host_end);
    let host = match host {
        HostKind::Domain => Host::Domain(host_raw),
        HostKind::Ipv4(a) => Host::Ipv4(a),
        HostKind::Ipv6(a) => Host::Ipv6(a),
    };
    Ok((
        rest,
        SipUri {
            raw,
            secure,
            user: user.map(part),
            password: password.map(part),
            host,
            host_raw,
            port,
            params,
            headers,
        },
    ))
}

/// `headers = "?" header *( "&" header )`, `header = hname "=" hvalue`.
fn uri_headers(i: &[u8]) -> PResult<'_, &str> {
    let mut rest = i;
    loop {
        let (r, _) = escaped_run(is_header_char)(rest)?;
        let Some((&b'=', r)) = r.split_first() else {
            return fail(rest);
        };
        let r = match escaped_run(is_header_char)(r) {
            Ok((r, _)) => r,
            Err(_) => r, // hvalue may be empty
        };
        rest = r;
        match rest.split_first() {
            Some((&b'&', r)) => rest = r,
            _ => break,
        }
    }
    let end = i.len() - rest.len();
    match ascii(&i[..end]) {
        Some(h) => Ok((rest, h)),
        None => fail(i),
    }
}

/// `port = 1*DIGIT`, at most 65535.
pub(crate) fn port_number(i: &[u8]) -> PResult<'_, u16> {
    let (rest, v) = super::grammar::u32_digits(i)?;
    match u16::try_from(v) {
        Ok(p) => Ok((rest, p)),
        Err(_) => fail(i),
    }
}

/// `host = hostname / IPv4address / IPv6reference` (§25).
pub(crate) fn host(i: &[u8]) -> PResult<'_, Host<'_>> {
    let (rest, kind) = host_kind(i)?;
    Ok((
        rest,
        match kind {
            HostKind::Domain => match ascii(&i[..i.len() - rest.len()]) {
                Some(d) => Host::Domain(d),
                None => return fail(i),
            },
            HostKind::Ipv4(a) => Host::Ipv4(a),
            HostKind::Ipv6(a) => Host::Ipv6(a),
        },
    ))
}

/// What [`host_kind`] found; a domain is the consumed octets.
pub(crate) enum HostKind {
    /// A domain name: the consumed octets.
    Domain,
    /// A dotted IPv4 address.
    Ipv4(Ipv4Addr),
    /// A bracketed IPv6 reference.
    Ipv6(Ipv6Addr),
}

pub(crate) fn host_kind(i: &[u8]) -> PResult<'_, HostKind> {
    if i.first() == Some(&b'[') {
        let Some(close) = i.iter().position(|&c| c == b']') else {
            return fail(i);
        };
        return match ipv6(&i[1..close]) {
            Some(a) => Ok((&i[close + 1..], HostKind::Ipv6(a))),
            None => fail(i),
        };
    }
    let n = i.iter().take_while(|&&c| is_host_char(c)).count();
    let h = &i[..n];
    // A hostname's last label starts with a letter, an IPv4 address's with a digit.
    if h.first().is_some_and(u8::is_ascii_digit) {
        if let Some(a) = ipv4(h) {
            return Ok((&i[n..], HostKind::Ipv4(a)));
        }
    }
    if !is_hostname(h) {
        return fail(i);
    }
    Ok((&i[n..], HostKind::Domain))
}

/// `hostname = *( domainlabel "." ) toplabel [ "." ]` (§25).
fn is_hostname(h: &[u8]) -> bool {
    let h = h.strip_suffix(b".").unwrap_or(h);
    if h.is_empty() {
        return false;
    }
    let mut last = &h[..0];
    for label in h.split(|&c| c == b'.') {
        let ok = !label.is_empty()
            && label[0].is_ascii_alphanumeric()
            && label[label.len() - 1].is_ascii_alphanumeric()
            && label.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-');
        if !ok {
            return false;
        }
        last = label;
    }
    last.first().is_some_and(u8::is_ascii_alphabetic)
}

/// `IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT` (§25),
/// each part at most 255.
pub(crate) fn ipv4(h: &[u8]) -> Option<Ipv4Addr> {
    let mut out = [0u8; 4];
    let (mut part, mut value, mut digits) = (0usize, 0u16, 0u8);
    for &c in h {
        match c {
            b'0'..=b'9' if digits < 3 => {
                value = value * 10 + u16::from(c - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && part < 3 => {
                out[part] = u8::try_from(value).ok()?;
                (part, value, digits) = (part + 1, 0, 0);
            }
            _ => return None,
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    out[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(out))
}

/// `IPv6address = hexpart [ ":" IPv4address ]` (§25). Follows RFC 3261's ABNF,
/// which admits `2001:db8:::192.0.2.1` (RFC 5118 §4.10): such an address is
/// read as `2001:db8::192.0.2.1`.
pub(crate) fn ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    // Split off a trailing IPv4 part, keeping a "::" that precedes it.
    let (hex, v4) = match s.iter().rposition(|&c| c == b':') {
        Some(p) if s[p + 1..].contains(&b'.') => {
            let hex = if p > 0 && s[p - 1] == b':' { &s[..=p] } else { &s[..p] };
            (hex, Some(ipv4(&s[p + 1..])?))
        }
        _ => (s, None),
    };
    let max_groups = if v4.is_some() { 6 } else { 8 };
    // Up to eight 16-bit groups, without allocating.
    let parse_seq = |seq: &[u8]| -> Option<([u16; 8], usize)> {
        let mut out = [0u16; 8];
        if seq.is_empty() {
            return Some((out, 0));
        }
        let mut n = 0;
        for g in seq.split(|&c| c == b':') {
            if n == 8 || g.is_empty() || g.len() > 4 || !g.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out[n] = g.iter().fold(0u16, |a, &c| a << 4 | u16::from(hex_digit(c)));
            n += 1;
        }
        Some((out, n))
    };
    let mut groups = [0u16; 8];
    let (head, tail, compressed) = match find_double_colon(hex) {
        Some(p) => {
            let mut t = &hex[p + 2..];
            // `hexseq "::" ":" IPv4address` — the ABNF bug of RFC 5118 §4.10.
            if v4.is_some() && t == b":" {
                t = &[];
            }
            (parse_seq(&hex[..p])?, parse_seq(t)?, true)
        }
        None => (parse_seq(hex)?, ([0; 8], 0), false),
    };
    let ((head, head_len), (tail, tail_len)) = (head, tail);
    let used = head_len + tail_len;
    if used > max_groups || (!compressed && used != max_groups) || (compressed && used == 8) {
        return None;
    }
    groups[..head_len].copy_from_slice(&head[..head_len]);
    let start = max_groups - tail_len;
    groups[start..max_groups].copy_from_slice(&tail[..tail_len]);
    if let Some(v4) = v4 {
        let o = v4.octets();
        groups[6] = u16::from_be_bytes([o[0], o[1]]);
        groups[7] = u16::from_be_bytes([o[2], o[3]]);
    }
    Some(Ipv6Addr::from(groups))
}

fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c.wrapping_sub(b'A').wrapping_add(10) & 0xf,
    }
}

fn find_double_colon(s: &[u8]) -> Option<usize> {
    s.windows(2).position(|w| w == b"::")
}

/// `telephone-subscriber` of RFC 3966, read leniently: the number is digits,
/// hex digits, `* # +` and visual separators; parameters follow as in SIP URIs.
fn tel_uri<'a>(whole: &'a [u8], after: &'a [u8], ctx: UriContext) -> PResult<'a, TelUri<'a>> {
    let n = after
        .iter()
        .take_while(|&&c| c.is_ascii_hexdigit() || matches!(c, b'*' | b'#' | b'+' | b'-' | b'.' | b'(' | b')'))
        .count();
    if n == 0 {
        return fail(whole);
    }
    let Some(number) = ascii(&after[..n]) else {
        return fail(whole);
    };
    let mut rest = &after[n..];
    let mut params = Params::empty(ParamSyntax::Uri);
    if ctx == UriContext::Whole {
        let (r, p) = Params::parse(rest, ParamSyntax::Uri)?;
        params = p;
        rest = r;
    }
    let end = whole.len() - rest.len();
    let Some(raw) = ascii(&whole[..end]) else {
        return fail(whole);
    };
    Ok((rest, TelUri { raw, number, params }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_sip_uri_part() {
        let u = sip("sip:alice:secret@atlanta.com:5060;transport=tcp;lr?subject=project%20x&priority=urgent");
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(u.host(), Host::Domain("atlanta.com"));
        assert_eq!(u.port(), Some(5060));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.params().contains("lr"));
        assert_eq!(u.header_pairs().collect::<Vec<_>>(), [("subject", "project%20x"), ("priority", "urgent")]);
    }

    #[test]
    fn user_part_may_hold_semicolons_and_escapes() {
        // RFC 4475 §3.1.1.9
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(&*u.user_unescaped().unwrap(), b"user;par=u@example.net");
        assert!(u.params().is_empty());
    }

    #[test]
    fn hosts_ipv4_ipv6_and_names() {
        assert_eq!(sip("sip:192.0.2.1").host(), Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(sip("sip:[2001:db8::10]:5070").port(), Some(5070));
        // RFC 5118 §4.3: the port sits inside the brackets, so it is a group.
        let amb = sip("sip:[2001:db8::10:5070]");
        assert_eq!(amb.port(), None);
        assert_eq!(amb.host(), Host::Ipv6("2001:db8::10:5070".parse().unwrap()));
        // RFC 5118 §4.10: three colons tolerated.
        assert_eq!(sip("sip:u@[2001:db8:::192.0.2.1]").host(), sip("sip:u@[2001:db8::192.0.2.1]").host());
        assert_eq!(sip("sip:[::ffff:192.0.2.10]:19823").host(), Host::Ipv6("::ffff:192.0.2.10".parse().unwrap()));
        assert!(Uri::parse("sip:2001:db8::10").is_err(), "RFC 5118 §4.2");
        assert!(Uri::parse("sip:[2001:db8::10").is_err());
        assert!(Uri::parse("sip:host:70000").is_err());
        assert!(Uri::parse("sip:-bad.example.com").is_err());
        assert!(Uri::parse("sip:example.123").is_err());
        assert!(Uri::parse("sip:256.1.1.1").is_err());
        assert_eq!(sip("sip:example.com.").host(), Host::Domain("example.com."));
    }

    #[test]
    fn ipv6_grammar_edges() {
        for ok in ["::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.4", "1::2:3"] {
            assert!(ipv6(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in ["", ":", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "g::", "1:2:3:4:5:6:7:1.2.3.4"]
        {
            assert!(ipv6(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn other_schemes_stay_opaque() {
        let u = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme(), "soap.beep");
        let Uri::Absolute(a) = u else { panic!() };
        assert_eq!(a.opaque(), "//192.0.2.103:3002");
        assert!(
            matches!(Uri::parse("tel:+1-201-555-0123;phone-context=example.com"), Ok(Uri::Tel(t)) if t.is_global())
        );
        assert!(Uri::parse("isbn:2983792873").is_ok());
        assert!(Uri::parse("1sip:x").is_err());
        assert!(Uri::parse("nocolon").is_err());
    }

    #[test]
    fn comparison_follows_19_1_4() {
        let eq = |a: &str, b: &str| Uri::parse(a).unwrap().equivalent(&Uri::parse(b).unwrap());
        // The RFC's own examples of equivalent URIs.
        assert!(eq("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"));
        assert!(eq("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"));
        assert!(eq("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
        ));
        // And of URIs that are not.
        assert!(!eq("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"));
        assert!(!eq("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"));
        assert!(!eq("sip:a@x", "sips:a@x"));
        assert!(eq("sip:[2001:db8::1]", "sip:[2001:DB8:0::1]"));
        // Repeated parameters (found by fuzzing): reflexive, compared in order.
        for u in ["sip:h;x=1;x=2", "sip:h;x;x=1", "sip:h;x=1;X=2", "sip:h;maddr=a;maddr=b", "tel:1;a=1;a=2"] {
            assert!(eq(u, u), "{u}");
        }
        assert!(!eq("sip:h;x=1;x=2", "sip:h;x=2;x=1"));
        assert!(!eq("sip:h;maddr=a;maddr=b", "sip:h;maddr=a"));
        assert!(!eq("tel:1;a=1;a=2", "tel:1;a=1;b=2"));
    }
}
