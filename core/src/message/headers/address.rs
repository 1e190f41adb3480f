//! `name-addr` / `addr-spec` headers: From, To (§20.20, §20.39), Contact
//! (§20.10), Route and Record-Route (§20.34, §20.30), Reply-To, Path.

use super::super::grammar::{ascii, fail, quoted_string, sws, token, unquote, PResult};
use super::super::params::{ParamSyntax, Params};
use super::super::uri::{uri, Uri, UriContext};
use super::{whole, HeaderValue};
use std::borrow::Cow;
use std::fmt;

/// A display name: `*(token LWS)` or a quoted string (§25 `display-name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayName<'a> {
    raw: &'a str,
    quoted: bool,
}

impl<'a> DisplayName<'a> {
    /// As written, without the quotes (escapes kept).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// Whether it was a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }
    /// The text with quoted-pair escapes removed.
    pub fn text(&self) -> Cow<'a, str> {
        if self.quoted {
            unquote(self.raw)
        } else {
            Cow::Borrowed(self.raw)
        }
    }
}

/// An address: `( name-addr / addr-spec ) *( SEMI param )`.
///
/// Without angle brackets, parameters after the URI belong to the header,
/// not the URI (§20.10, RFC 4475 §3.3.12).
///
/// ```
/// use sipline::message::headers::{Address, HeaderValue};
/// let a = Address::parse_value(br#""Bob \"B\"" <sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf"#).unwrap();
/// assert_eq!(a.display_name().unwrap().text(), r#"Bob "B""#);
/// assert_eq!(a.uri().as_str(), "sip:bob@biloxi.com;transport=tcp");
/// assert_eq!(a.tag(), Some("a6c85cf"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    raw: &'a str,
    display: Option<DisplayName<'a>>,
    uri: Uri<'a>,
    angle: bool,
    params: Params<'a>,
}

impl<'a> Address<'a> {
    /// The value as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// The display name, if any.
    pub fn display_name(&self) -> Option<DisplayName<'a>> {
        self.display
    }
    /// The URI.
    pub fn uri(&self) -> &Uri<'a> {
        &self.uri
    }
    /// Whether the URI was in angle brackets (`name-addr` form).
    pub fn is_name_addr(&self) -> bool {
        self.angle
    }
    /// The header parameters after the address.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `tag` parameter of From/To (§19.3).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.value("tag")
    }
}

impl fmt::Display for Address<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

pub(crate) fn address(i: &[u8]) -> PResult<'_, Address<'_>> {
    let start = sws(i);
    let mut display = None;
    let mut j = start;
    if start.first() == Some(&b'"') {
        let (r, q) = quoted_string(start)?;
        display = Some(DisplayName { raw: q, quoted: true });
        j = sws(r);
        if j.first() != Some(&b'<') {
            return fail(i);
        }
    } else {
        // Tokens followed by '<' are a display name (LWS before '<' may be
        // missing: RFC 4475 §3.1.1.6); anything else is an addr-spec.
        let mut k = start;
        let mut end = start;
        while let Ok((r, _)) = token(k) {
            end = r;
            k = sws(r);
        }
        if k.first() == Some(&b'<') {
            if end.len() != start.len() {
                let raw = ascii(&start[..start.len() - end.len()]).unwrap_or_default();
                display = Some(DisplayName { raw, quoted: false });
            }
            j = k;
        }
    }
    let (rest, uri, angle) = if let Some((&b'<', inner)) = j.split_first() {
        // LAQUOT / RAQUOT: no whitespace inside the brackets (§25).
        let (r, u) = uri(inner, UriContext::Whole)?;
        let Some((&b'>', r)) = r.split_first() else {
            return fail(i);
        };
        (r, u, true)
    } else {
        let (r, u) = uri(start, UriContext::BareAddrSpec)?;
        (r, u, false)
    };
    let (rest, params) = Params::parse(rest, ParamSyntax::Header)?;
    let Some(raw) = ascii(&start[..start.len() - rest.len()]) else {
        return fail(i);
    };
    Ok((rest, Address { raw, display, uri, angle, params }))
}

impl<'a> HeaderValue<'a> for Address<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        whole(value, address)
    }
}

/// One Contact value (§20.10): `*` or an address with contact-params.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a borrowed view: boxing would allocate per value
pub enum Contact<'a> {
    /// `Contact: *` — remove every binding (§10.2.2).
    Wildcard,
    /// A contact address.
    Address(Address<'a>),
}

impl<'a> Contact<'a> {
    /// The address, unless this is the wildcard.
    pub fn address(&self) -> Option<&Address<'a>> {
        match self {
            Contact::Wildcard => None,
            Contact::Address(a) => Some(a),
        }
    }
    /// The `expires` contact-param (§10.2.1.1), if present and numeric.
    pub fn expires(&self) -> Option<u32> {
        self.address()?.params.value("expires")?.parse().ok()
    }
    /// The `q` contact-param in thousandths (`q=0.7` is 700), 0–1000.
    pub fn q(&self) -> Option<u16> {
        parse_q(self.address()?.params.value("q")?)
    }
    /// The `+sip.instance` contact-param (RFC 5626 §4.1), quotes removed.
    pub fn instance(&self) -> Option<Cow<'a, str>> {
        self.address()?.params.get("+sip.instance")?.unquoted()
    }
    /// The `pub-gruu` contact-param (RFC 5627 §5.3), quotes removed.
    pub fn pub_gruu(&self) -> Option<Cow<'a, str>> {
        self.address()?.params.get("pub-gruu")?.unquoted()
    }
    /// The `temp-gruu` contact-param (RFC 5627 §5.3), quotes removed.
    pub fn temp_gruu(&self) -> Option<Cow<'a, str>> {
        self.address()?.params.get("temp-gruu")?.unquoted()
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (§25).
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let f: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(f),
        "1" if f == 0 => Some(1000),
        _ => None,
    }
}

impl<'a> HeaderValue<'a> for Contact<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        if value == b"*" {
            return Some(Contact::Wildcard);
        }
        let a = Address::parse_value(value)?;
        let c = Contact::Address(a);
        // contact-params whose grammar §25 fixes.
        if a.params.get("q").is_some_and(|p| p.value().and_then(parse_q).is_none()) {
            return None;
        }
        if a.params
            .get("expires")
            .is_some_and(|p| p.value().is_none_or(|v| !v.bytes().all(|b| b.is_ascii_digit()) || v.is_empty()))
        {
            return None;
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Option<Address<'_>> {
        Address::parse_value(s.as_bytes())
    }

    #[test]
    fn forms_of_an_address() {
        let x = a("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert!(!x.is_name_addr());
        assert_eq!(x.tag(), Some("1918181833n"));
        let x = a("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8").unwrap();
        assert_eq!(x.display_name().unwrap().text(), "J Rosenberg \\\"");
        assert_eq!(x.tag(), Some("98asjd8"));
        let x = a("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(x.display_name().unwrap().as_str(), "caller");
        let x = a("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;tag=_token~1'+`*%!-.").unwrap();
        assert_eq!(x.display_name().unwrap().as_str(), "token1~` token2'+_ token3*%!.-");
        // addr-spec: parameters belong to the header (RFC 4475 §3.3.12)
        let x = a("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(x.params().contains("unknownparam"));
        assert!(x.uri().as_sip().unwrap().params().is_empty());
        let x = a("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(x.params().is_empty());
        assert!(x.uri().as_sip().unwrap().params().contains("unknownparam"));
        assert!(a("isbn:2983792873").is_some());
        assert!(a("<http://www.example.com>;tag=3234233").is_some());
    }

    #[test]
    fn malformed_addresses() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",               // unbalanced quote
            "\"Watson, Thomas\" < sip:t.watson@example.org >",      // spaces in <>
            "Bell, Alexander <sip:a.g.bell@bell-tel.com>",          // unquoted comma
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E", // headers need <>
            "<sip:user@example.com",
            "",
        ] {
            assert!(a(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn contact_params() {
        let c = Contact::parse_value(
            b"<sip:a@b>;expires=60;q=0.7;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"",
        )
        .unwrap();
        assert_eq!(c.expires(), Some(60));
        assert_eq!(c.q(), Some(700));
        assert_eq!(c.instance().unwrap(), "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>");
        assert_eq!(Contact::parse_value(b"*"), Some(Contact::Wildcard));
        assert!(Contact::parse_value(b"<sip:a@b>;q=1.5").is_none());
        assert!(Contact::parse_value(b"<sip:a@b>;expires=soon").is_none());
        let g = Contact::parse_value(b"<sip:a@b>;pub-gruu=\"sip:a@b;gr=x\";temp-gruu=\"sip:t@b;gr\"").unwrap();
        assert_eq!(g.pub_gruu().unwrap(), "sip:a@b;gr=x");
        assert_eq!(g.temp_gruu().unwrap(), "sip:t@b;gr");
    }
}
