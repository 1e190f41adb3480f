//! Media types: Content-Type (§20.15) and Accept (§20.1).

use super::super::grammar::{sep, token, PResult};
use super::super::params::{ParamSyntax, Params};
use super::{whole, HeaderValue};
use std::fmt;

/// `m-type SLASH m-subtype *( SEMI m-parameter )`; in Accept, `*` is a
/// valid type or subtype.
///
/// ```
/// use sipline::message::headers::{HeaderValue, MediaType};
/// let m = MediaType::parse_value(b"multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=boundary42").unwrap();
/// assert!(m.is("multipart", "signed"));
/// assert_eq!(m.params().value("boundary"), Some("boundary42"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    raw: &'a str,
    top: &'a str,
    sub: &'a str,
    params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// The value as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// The top-level type (`application`).
    pub fn top(&self) -> &'a str {
        self.top
    }
    /// The subtype (`sdp`).
    pub fn sub(&self) -> &'a str {
        self.sub
    }
    /// The parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// Case-insensitive type check (media types are case-insensitive, RFC 2045 §5.1).
    pub fn is(&self, top: &str, sub: &str) -> bool {
        self.top.eq_ignore_ascii_case(top) && self.sub.eq_ignore_ascii_case(sub)
    }
    /// Whether this media range (from Accept) admits `top/sub`.
    pub fn admits(&self, top: &str, sub: &str) -> bool {
        (self.top == "*" || self.top.eq_ignore_ascii_case(top))
            && (self.sub == "*" || self.sub.eq_ignore_ascii_case(sub))
    }
}

impl fmt::Display for MediaType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

fn media_type(i: &[u8]) -> PResult<'_, MediaType<'_>> {
    let (r, top) = token(i)?;
    let (r, ()) = sep(b'/')(r)?;
    let (r, sub) = token(r)?;
    let (rest, params) = Params::parse(r, ParamSyntax::Header)?;
    let raw = std::str::from_utf8(&i[..i.len() - rest.len()]).unwrap_or_default();
    Ok((rest, MediaType { raw, top, sub, params }))
}

impl<'a> HeaderValue<'a> for MediaType<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        whole(value, media_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let m = MediaType::parse_value(b"Application/SDP").unwrap();
        assert!(m.is("application", "sdp"));
        let any = MediaType::parse_value(b"*/*;q=0.5").unwrap();
        assert!(any.admits("text", "plain"));
        assert!(!MediaType::parse_value(b"text/nobodyknowsthis").unwrap().admits("application", "sdp"));
        assert!(MediaType::parse_value(b"application").is_none());
        assert!(MediaType::parse_value(b"a/b;").is_none());
    }
}
