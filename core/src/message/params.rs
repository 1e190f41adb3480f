//! Parameter lists: `;name[=value]` runs in URIs (§19.1.1 `uri-parameters`)
//! and in header fields (§25 `generic-param`, `via-params`, `contact-params`…).
//!
//! A [`Params`] is a validated, borrowed slice; it is walked lazily, so a
//! message with parameters costs no allocation.

use super::grammar::{escaped_len, fail, is_param_char, is_token, quoted_string, sep, unescape, unquote, PResult};
use std::borrow::Cow;
use std::fmt;

/// Where a parameter list lives: it decides the grammar of names and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamSyntax {
    /// `uri-parameter` (§19.1.1): no whitespace, `%HH` escapes, no quotes.
    Uri,
    /// `generic-param` (§25): LWS around `;` and `=`, token, host or quoted values.
    Header,
}

/// One parameter: a name and an optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    name: &'a str,
    value: Option<&'a str>,
    quoted: bool,
}

impl<'a> Param<'a> {
    pub(crate) fn new(name: &'a str, value: Option<&'a str>, quoted: bool) -> Self {
        Param { name, value, quoted }
    }
    /// The name as written (compare case-insensitively, §7.3.1 / §19.1.4).
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// The value as written, without surrounding quotes; `None` for a flag
    /// parameter such as `;lr`.
    pub fn value(&self) -> Option<&'a str> {
        self.value
    }
    /// Whether the value was a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }
    /// The value with quoted-pair escapes (header params) removed.
    pub fn unquoted(&self) -> Option<Cow<'a, str>> {
        self.value.map(|v| if self.quoted { unquote(v) } else { Cow::Borrowed(v) })
    }
    /// The value with `%HH` escapes (URI params, §19.1.2) decoded.
    pub fn unescaped(&self) -> Option<Cow<'a, [u8]>> {
        self.value.map(unescape)
    }
}

/// A validated parameter list, borrowed from the message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a str,
    syntax: ParamSyntax,
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Params<'a> {
    pub(crate) const fn empty(syntax: ParamSyntax) -> Self {
        Params { raw: "", syntax }
    }

    /// [`Params::parse`] for input that lies within `base`, an already
    /// checked `&str`: no second UTF-8 check.
    pub(crate) fn parse_within(base: &'a str, i: &'a [u8], syntax: ParamSyntax) -> PResult<'a, Params<'a>> {
        let mut end = 0;
        while let Some(span) = param(&i[end..], syntax) {
            end += span.len;
        }
        match super::grammar::sub(base, &i[..end]) {
            Some(raw) => Ok((&i[end..], Params { raw, syntax })),
            None => fail(i),
        }
    }

    /// The list as written, including the leading `;` (empty if none).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Walks the parameters in order.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { raw: self.raw, pos: 0, syntax: self.syntax }
    }

    /// The first parameter named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<Param<'a>> {
        self.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Whether a parameter named `name` is present (with or without value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of `name`, if present with a value.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|p| p.value)
    }

    /// Parses `*( SEMI param )`, returning the validated list and the rest.
    pub(crate) fn parse(i: &'a [u8], syntax: ParamSyntax) -> PResult<'a, Params<'a>> {
        let mut end = 0;
        while let Some(span) = param(&i[end..], syntax) {
            end += span.len;
        }
        let raw = &i[..end];
        // The grammar below admits only ASCII names; values may be UTF-8
        // inside quotes.
        match std::str::from_utf8(raw) {
            Ok(raw) => Ok((&i[end..], Params { raw, syntax })),
            Err(_) => fail(i),
        }
    }
}

impl<'a> IntoIterator for &Params<'a> {
    type Item = Param<'a>;
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = Param<'a>;
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    raw: &'a str,
    pos: usize,
    syntax: ParamSyntax,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        let rest = self.raw.get(self.pos..)?;
        let span = param(rest.as_bytes(), self.syntax)?;
        let part = |(a, b): (usize, usize)| rest.get(a..b);
        let p = Param { name: part(span.name)?, value: span.value.and_then(part), quoted: span.quoted };
        self.pos += span.len;
        Some(p)
    }
}

/// Value characters of a header `gen-value` (token / host / quoted-string).
/// `host` brings `[`, `]` and `:` for IPv6 references; a bare IPv6 address is
/// admitted too because `via-received` uses it (RFC 5118 §4.5).
fn is_gen_value_char(c: u8) -> bool {
    is_token(c) || matches!(c, b':' | b'[' | b']')
}

/// Where one parameter lies, as offsets into the input of [`param`].
struct Span {
    /// Octets consumed, leading separator and LWS included.
    len: usize,
    name: (usize, usize),
    value: Option<(usize, usize)>,
    quoted: bool,
}

/// One `SEMI name [EQUAL value]`, located without building strings: the
/// caller slices the one `&str` it already has, so iterating parameters
/// costs no UTF-8 checks.
fn param(i: &[u8], syntax: ParamSyntax) -> Option<Span> {
    let at = |rest: &[u8]| i.len() - rest.len();
    match syntax {
        ParamSyntax::Uri => {
            let (&b';', rest) = i.split_first()? else { return None };
            let n = escaped_len(is_param_char, rest);
            if n == 0 {
                return None;
            }
            let name = (1, 1 + n);
            let rest = &rest[n..];
            if let Some((&b'=', vrest)) = rest.split_first() {
                let v = escaped_len(is_param_char, vrest);
                if v == 0 {
                    return None;
                }
                let start = at(vrest);
                Some(Span { len: start + v, name, value: Some((start, start + v)), quoted: false })
            } else {
                Some(Span { len: name.1, name, value: None, quoted: false })
            }
        }
        ParamSyntax::Header => {
            let (rest, ()) = sep(b';')(i).ok()?;
            let n = rest.iter().take_while(|&&c| is_token(c)).count();
            if n == 0 {
                return None;
            }
            let name = (at(rest), at(rest) + n);
            let rest = &rest[n..];
            let Ok((vrest, ())) = sep(b'=')(rest) else {
                return Some(Span { len: name.1, name, value: None, quoted: false });
            };
            if vrest.first() == Some(&b'"') {
                let (after, inner) = quoted_string(vrest).ok()?;
                let start = at(vrest) + 1;
                return Some(Span { len: at(after), name, value: Some((start, start + inner.len())), quoted: true });
            }
            let v = vrest.iter().take_while(|&&c| is_gen_value_char(c)).count();
            if v == 0 {
                return None;
            }
            let start = at(vrest);
            Some(Span { len: start + v, name, value: Some((start, start + v)), quoted: false })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_params_are_flags_or_pairs() {
        let (rest, p) = Params::parse(b";transport=tcp;lr;maddr=%31.2?x", ParamSyntax::Uri).unwrap();
        assert_eq!(rest, b"?x");
        assert_eq!(p.value("TRANSPORT"), Some("tcp"));
        assert!(p.contains("lr"));
        assert_eq!(p.get("lr").unwrap().value(), None);
        assert_eq!(&*p.get("maddr").unwrap().unescaped().unwrap(), b"1.2");
        assert_eq!(p.iter().count(), 3);
    }

    #[test]
    fn header_params_take_lws_and_quotes() {
        let (rest, p) =
            Params::parse(b" ;   tag    = 1918181833n ;\r\n q = 0.33;x=\"a;b\" , next", ParamSyntax::Header).unwrap();
        assert_eq!(rest, b" , next");
        assert_eq!(p.value("tag"), Some("1918181833n"));
        assert_eq!(p.value("q"), Some("0.33"));
        let x = p.get("x").unwrap();
        assert!(x.is_quoted());
        assert_eq!(x.value(), Some("a;b"));
    }

    #[test]
    fn empty_param_name_stops_the_list() {
        let (rest, p) = Params::parse(b";;", ParamSyntax::Header).unwrap();
        assert!(p.is_empty());
        assert_eq!(rest, b";;");
    }
}
