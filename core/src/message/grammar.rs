//! Basic rules of the SIP grammar (RFC 3261 §25.1) as byte classes and small
//! `nom` parsers shared by every other part of the message layer.
//!
//! Everything here works on `&[u8]`, borrows from its input and never
//! allocates.

use nom::bytes::complete::take_while1;
use nom::error::{Error, ErrorKind};
use nom::{IResult, Parser};

/// A parser result over raw bytes.
pub(crate) type PResult<'a, T> = IResult<&'a [u8], T>;

const ALNUM: u16 = 1;
/// `token` (§25.1): alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
const TOKEN: u16 = 1 << 1;
/// `word` (§25.1): token chars plus `( ) < > : \ DQUOTE / [ ] ? { }`
const WORD: u16 = 1 << 2;
/// `unreserved` (§25.1): alphanum / mark
const UNRESERVED: u16 = 1 << 3;
/// `user-unreserved` (§25): `& = + $ , ; ? /`
const USER_UNRESERVED: u16 = 1 << 4;
/// `param-unreserved` (§25): `[ ] / : & + $`
const PARAM_UNRESERVED: u16 = 1 << 5;
/// `hnv-unreserved` (§25): `[ ] / ? : + $`
const HNV_UNRESERVED: u16 = 1 << 6;
/// password extras (§25): `& = + $ ,`
const PASSWORD_EXTRA: u16 = 1 << 7;
/// `reserved` (§25.1): `; / ? : @ & = + $ ,`
const RESERVED: u16 = 1 << 8;
/// Characters of a domain name or IPv4 address.
const HOST: u16 = 1 << 9;
/// `scheme` characters after the first (§25): ALPHA / DIGIT / "+" / "-" / "."
const SCHEME: u16 = 1 << 10;

const fn build_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)] // i < 256
        let c = i as u8;
        let alnum = c.is_ascii_alphanumeric();
        let mut f = 0;
        if alnum {
            f |= ALNUM | TOKEN | WORD | UNRESERVED | HOST | SCHEME;
        }
        if matches!(c, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~') {
            f |= TOKEN | WORD;
        }
        if matches!(c, b'(' | b')' | b'<' | b'>' | b':' | b'\\' | b'"' | b'/' | b'[' | b']' | b'?' | b'{' | b'}') {
            f |= WORD;
        }
        if matches!(c, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')') {
            f |= UNRESERVED;
        }
        if matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            f |= USER_UNRESERVED;
        }
        if matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            f |= PARAM_UNRESERVED;
        }
        if matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            f |= HNV_UNRESERVED;
        }
        if matches!(c, b'&' | b'=' | b'+' | b'$' | b',') {
            f |= PASSWORD_EXTRA;
        }
        if matches!(c, b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b',') {
            f |= RESERVED;
        }
        if matches!(c, b'-' | b'.') {
            f |= HOST | SCHEME;
        }
        if c == b'+' {
            f |= SCHEME;
        }
        t[i] = f;
        i += 1;
    }
    t
}

static TABLE: [u16; 256] = build_table();

#[inline]
fn has(c: u8, class: u16) -> bool {
    TABLE[c as usize] & class != 0
}

/// `token` character (§25.1).
#[inline]
pub(crate) fn is_token(c: u8) -> bool {
    has(c, TOKEN)
}
/// `word` character (§25.1), used by Call-ID.
#[inline]
pub(crate) fn is_word(c: u8) -> bool {
    has(c, WORD)
}
/// A character allowed unescaped in the user part of a SIP URI (§25).
#[inline]
pub(crate) fn is_user_char(c: u8) -> bool {
    has(c, UNRESERVED | USER_UNRESERVED)
}
/// A character allowed unescaped in the password of a SIP URI (§25).
#[inline]
pub(crate) fn is_password_char(c: u8) -> bool {
    has(c, UNRESERVED | PASSWORD_EXTRA)
}
/// `paramchar` without escapes (§25): param-unreserved / unreserved.
#[inline]
pub(crate) fn is_param_char(c: u8) -> bool {
    has(c, UNRESERVED | PARAM_UNRESERVED)
}
/// `hname`/`hvalue` characters without escapes (§25): hnv-unreserved / unreserved.
#[inline]
pub(crate) fn is_header_char(c: u8) -> bool {
    has(c, UNRESERVED | HNV_UNRESERVED)
}
/// A character that may appear in the userinfo of a SIP URI before the
/// `@`: user and password characters, `:` and the `%` of escapes.
#[inline]
pub(crate) fn is_userinfo_char(c: u8) -> bool {
    has(c, UNRESERVED | USER_UNRESERVED | PASSWORD_EXTRA) || c == b':' || c == b'%'
}
/// A character of a domain name or dotted IPv4 address.
#[inline]
pub(crate) fn is_host_char(c: u8) -> bool {
    has(c, HOST)
}
/// A `scheme` character after the leading ALPHA (§25).
#[inline]
pub(crate) fn is_scheme_char(c: u8) -> bool {
    has(c, SCHEME)
}
/// `uric` (RFC 2396, used by `absoluteURI` in §25): reserved / unreserved / escaped.
#[inline]
pub(crate) fn is_uric(c: u8) -> bool {
    has(c, RESERVED | UNRESERVED) || c == b'%'
}

/// A character that may appear in a Request-URI of any scheme: `uric`
/// (reserved / unreserved / `%`) plus the brackets of IPv6 references.
#[inline]
pub(crate) fn is_uri_char(c: u8) -> bool {
    is_uric(c) || c == b'[' || c == b']'
}

/// `WSP`: SP or HTAB.
#[inline]
pub(crate) fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Skips `SWS` (§25.1): `[LWS]` where `LWS = [*WSP CRLF] 1*WSP` — any run of
/// spaces and tabs, including line folds (a CRLF followed by whitespace).
#[inline]
pub(crate) fn sws(mut i: &[u8]) -> &[u8] {
    loop {
        match i {
            [c, rest @ ..] if is_wsp(*c) => i = rest,
            [b'\r', b'\n', c, rest @ ..] if is_wsp(*c) => i = rest,
            _ => return i,
        }
    }
}

/// Trims whitespace and folds from both ends of a header value.
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    trim_end(sws(v))
}

/// Trims whitespace and folds from the end of a header value.
#[inline]
pub(crate) fn trim_end(v: &[u8]) -> &[u8] {
    let mut end = v.len();
    while end > 0 && matches!(v[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    &v[..end]
}

/// A failure at `i` for hand-written `nom` parsers.
#[inline]
pub(crate) fn fail<T>(i: &[u8]) -> PResult<'_, T> {
    Err(nom::Err::Error(Error::new(i, ErrorKind::Verify)))
}

/// Bytes known to be ASCII (checked by the grammar) as `&str`.
///
/// The grammar rules that call this only admit ASCII, so the conversion
/// cannot fail in practice; if it ever did, the parse fails instead.
#[inline]
pub(crate) fn ascii(i: &[u8]) -> Option<&str> {
    std::str::from_utf8(i).ok()
}

/// `part`, a sub-slice of `base.as_bytes()`, as a `&str` of `base`: the
/// UTF-8 check was done once on `base`, so this only checks char
/// boundaries. `None` if `part` does not lie within `base`.
#[inline]
pub(crate) fn sub<'a>(base: &'a str, part: &[u8]) -> Option<&'a str> {
    let off = offset_of(base.as_bytes(), part)?;
    base.get(off..off + part.len())
}

/// Where `part`, a sub-slice of `whole`, starts in it; `None` if it does
/// not lie within `whole`. Address arithmetic only: nothing is dereferenced.
#[inline]
pub(crate) fn offset_of(whole: &[u8], part: &[u8]) -> Option<usize> {
    let off = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (off.checked_add(part.len())? <= whole.len()).then_some(off)
}

/// `token` (§25.1) as bytes.
#[inline]
pub(crate) fn token_bytes(i: &[u8]) -> PResult<'_, &[u8]> {
    take_while1(is_token).parse(i)
}

/// `token` (§25.1) as `&str`.
pub(crate) fn token(i: &[u8]) -> PResult<'_, &str> {
    let (rest, t) = take_while1(is_token).parse(i)?;
    match ascii(t) {
        Some(s) => Ok((rest, s)),
        None => fail(i),
    }
}

/// `SWS` then a single separator character then `SWS` — the shape of
/// `COLON`, `SEMI`, `EQUAL`, `COMMA`, `SLASH`, `LAQUOT`/`RAQUOT` (§25.1).
pub(crate) fn sep(c: u8) -> impl Fn(&[u8]) -> PResult<'_, ()> {
    move |i: &[u8]| {
        let j = sws(i);
        match j.first() {
            Some(&x) if x == c => Ok((sws(&j[1..]), ())),
            _ => fail(i),
        }
    }
}

/// `quoted-string` (§25.1): `SWS DQUOTE *(qdtext / quoted-pair) DQUOTE`.
/// Returns the raw text between the quotes, escapes kept.
pub(crate) fn quoted_string(i: &[u8]) -> PResult<'_, &str> {
    let j = sws(i);
    let Some((&b'"', body)) = j.split_first() else {
        return fail(i);
    };
    let mut k = 0;
    while k < body.len() {
        match body[k] {
            b'"' => {
                return match std::str::from_utf8(&body[..k]) {
                    Ok(s) => Ok((&body[k + 1..], s)),
                    Err(_) => fail(i),
                };
            }
            // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
            b'\\' => match body.get(k + 1) {
                Some(&c) if c <= 0x7f && c != b'\n' && c != b'\r' => k += 2,
                _ => return fail(i),
            },
            // qdtext admits LWS; a CR must begin a fold.
            b'\r' if body.get(k + 1) == Some(&b'\n') && body.get(k + 2).is_some_and(|&c| is_wsp(c)) => k += 3,
            b'\r' => return fail(i),
            b'\n' => return fail(i),
            // qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
            c if c == b' ' || c == b'\t' || c >= 0x21 => k += 1,
            _ => return fail(i),
        }
    }
    fail(i)
}

/// Removes the quoted-pair escapes from the inside of a quoted string.
pub(crate) fn unquote(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('\\') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `1*DIGIT` as a `u32`; an overlarge value is an error, never a wrap.
pub(crate) fn u32_digits(i: &[u8]) -> PResult<'_, u32> {
    let (rest, d) = take_while1(|c: u8| c.is_ascii_digit()).parse(i)?;
    let mut v: u32 = 0;
    for &c in d {
        v = match v.checked_mul(10).and_then(|v| v.checked_add(u32::from(c - b'0'))) {
            Some(v) => v,
            None => return fail(i),
        };
    }
    Ok((rest, v))
}

/// Parses a whole value as `1*DIGIT` into a `u32`, rejecting anything else.
pub(crate) fn whole_u32(v: &[u8]) -> Option<u32> {
    match u32_digits(v) {
        Ok(([], n)) => Some(n),
        _ => None,
    }
}

/// `%HH` — whether `i` starts with a valid escape (§25.1 `escaped`).
#[inline]
pub(crate) fn is_escape(i: &[u8]) -> bool {
    matches!(i, [b'%', a, b, ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit())
}

/// How many octets at the start of `i` are accepted by `ok` or form `%HH`
/// escapes.
pub(crate) fn escaped_len(ok: fn(u8) -> bool, i: &[u8]) -> usize {
    let mut k = 0;
    while k < i.len() {
        if ok(i[k]) {
            k += 1;
        } else if is_escape(&i[k..]) {
            k += 3;
        } else {
            break;
        }
    }
    k
}

/// Consumes characters accepted by `ok` or `%HH` escapes (at least one).
pub(crate) fn escaped_run(ok: fn(u8) -> bool) -> impl Fn(&[u8]) -> PResult<'_, &str> {
    move |i: &[u8]| {
        let k = escaped_len(ok, i);
        if k == 0 {
            return fail(i);
        }
        match ascii(&i[..k]) {
            Some(s) => Ok((&i[k..], s)),
            None => fail(i),
        }
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Decodes `%HH` escapes (§19.1.2). Invalid escapes are kept literally.
/// The result is bytes: an escaped `%00` is a real NUL (RFC 4475 §3.1.1.4).
pub(crate) fn unescape(raw: &str) -> std::borrow::Cow<'_, [u8]> {
    let b = raw.as_bytes();
    if !b.contains(&b'%') {
        return std::borrow::Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if is_escape(&b[k..]) {
            out.push(hex_val(b[k + 1]) << 4 | hex_val(b[k + 2]));
            k += 3;
        } else {
            out.push(b[k]);
            k += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_class_matches_rfc3261_25_1() {
        for c in b"-.!%*_+`'~aZ09" {
            assert!(is_token(*c), "{}", *c as char);
        }
        for c in b"()<>:\\\"/[]?{} \t;@,=" {
            assert!(!is_token(*c), "{}", *c as char);
        }
    }

    #[test]
    fn word_admits_call_id_punctuation() {
        for c in b"()<>:\\\"/[]?{}" {
            assert!(is_word(*c));
        }
        assert!(!is_word(b'@'));
        assert!(!is_word(b' '));
    }

    #[test]
    fn sws_skips_folds_but_not_bare_crlf() {
        assert_eq!(sws(b" \t\r\n  x"), b"x");
        assert_eq!(sws(b"\r\nx"), b"\r\nx");
        assert_eq!(sws(b"x"), b"x");
    }

    #[test]
    fn quoted_string_handles_pairs_and_folds() {
        let (rest, s) = quoted_string(br#" "a \"b\" \\" rest"#).unwrap();
        assert_eq!(s, r#"a \"b\" \\"#);
        assert_eq!(rest, b" rest");
        assert_eq!(unquote(s), r#"a "b" \"#);
        assert!(quoted_string(b"\"unterminated").is_err());
        assert!(quoted_string(b"\"bad\\\n\"").is_err());
        let (_, s) = quoted_string(b"\"a\r\n b\"").unwrap();
        assert_eq!(s, "a\r\n b");
        // A raw NUL may only appear escaped (RFC 4475 §3.1.1.2).
        assert!(quoted_string(b"\"\\\0\"").is_ok());
        assert!(quoted_string(b"\"\0\"").is_err());
    }

    #[test]
    fn sub_slices_a_str_by_address() {
        let base = "abc;déf";
        let b = base.as_bytes();
        assert_eq!(sub(base, &b[4..]), Some("déf"));
        assert_eq!(sub(base, &b[..3]), Some("abc"));
        assert_eq!(sub(base, &b[5..6]), None, "not on a char boundary");
        assert_eq!(sub(base, b"elsewhere"), None);
    }

    #[test]
    fn digits_never_overflow() {
        assert_eq!(whole_u32(b"0009"), Some(9));
        assert_eq!(whole_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(whole_u32(b"4294967296"), None);
        assert_eq!(whole_u32(b"36893488147419103232"), None);
        assert_eq!(whole_u32(b"-1"), None);
        assert_eq!(whole_u32(b""), None);
    }

    #[test]
    fn unescape_decodes_only_valid_escapes() {
        assert_eq!(&*unescape("null-%00-null"), b"null-\0-null");
        assert_eq!(&*unescape("%Z%45"), b"%ZE");
        assert_eq!(&*unescape("plain"), b"plain");
    }

    #[test]
    fn separators_absorb_lws() {
        let (rest, ()) = sep(b';')(b"  ;\r\n  x").unwrap();
        assert_eq!(rest, b"x");
        assert!(sep(b';')(b"x").is_err());
    }
}
