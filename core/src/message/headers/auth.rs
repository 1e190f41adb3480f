//! Authentication headers (RFC 3261 §20.7, §20.27, §20.28, §20.44, §25;
//! Digest details from RFC 7616/8760): WWW-Authenticate and
//! Proxy-Authenticate carry a [`Challenge`]; Authorization and
//! Proxy-Authorization carry [`Credentials`].

use super::super::grammar::{ascii, fail, quoted_string, sep, sws, token, PResult};
use super::super::params::Param;
use super::{whole, HeaderValue};
use std::borrow::Cow;
use std::fmt;

/// The `auth-param` list after the scheme: `name=value` pairs separated by
/// commas, values tokens or quoted strings. Borrowed and walked lazily.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthParams<'a> {
    raw: &'a [u8],
}

impl fmt::Debug for AuthParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> AuthParams<'a> {
    /// Walks the parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        let mut rest = self.raw;
        let mut first = true;
        std::iter::from_fn(move || {
            let r = if first { Ok((rest, ())) } else { sep(b',')(rest) };
            first = false;
            let (r, ()) = r.ok()?;
            let (r, p) = auth_param(r).ok()?;
            rest = r;
            Some(p)
        })
    }
    /// The value of a parameter (name case-insensitive, §22.4), unquoted.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter().find(|p| p.name().eq_ignore_ascii_case(name)).and_then(|p| p.unquoted())
    }
}

/// `auth-param = auth-param-name EQUAL ( token / quoted-string )`.
fn auth_param(i: &[u8]) -> PResult<'_, Param<'_>> {
    let (r, name) = token(i)?;
    let (r, ()) = sep(b'=')(r)?;
    if sws(r).first() == Some(&b'"') {
        let (r, v) = quoted_string(r)?;
        Ok((r, Param::new(name, Some(v), true)))
    } else {
        let (r, v) = token(r)?;
        Ok((r, Param::new(name, Some(v), false)))
    }
}

/// `auth-scheme LWS auth-param *(COMMA auth-param)`, or a bare scheme, or a
/// scheme with a token68 blob (e.g. `Bearer`, RFC 8898).
fn scheme_and_params(i: &[u8]) -> PResult<'_, (&str, AuthParams<'_>, Option<&str>)> {
    let (r, scheme) = token(i)?;
    let after = sws(r);
    if after.is_empty() {
        return Ok((after, (scheme, AuthParams { raw: b"" }, None)));
    }
    if after.len() == r.len() {
        return fail(i);
    }
    // Try the auth-param list first.
    let mut rest = after;
    let mut ok = true;
    let mut first = true;
    loop {
        let step = if first { Ok((rest, ())) } else { sep(b',')(rest) };
        first = false;
        if let Ok((r, _)) = step.and_then(|(r, ())| auth_param(r)) {
            rest = r;
        } else {
            ok = !first && sws(rest).is_empty();
            break;
        }
        if sws(rest).is_empty() {
            break;
        }
    }
    if ok {
        let raw = &after[..after.len() - rest.len()];
        return Ok((rest, (scheme, AuthParams { raw }, None)));
    }
    // token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let n = after
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
        .count();
    let m = n + after[n..].iter().take_while(|&&c| c == b'=').count();
    if n == 0 {
        return fail(i);
    }
    let Some(t68) = ascii(&after[..m]) else {
        return fail(i);
    };
    Ok((&after[m..], (scheme, AuthParams { raw: b"" }, Some(t68))))
}

macro_rules! auth_value {
    ($ty:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty<'a> {
            raw: &'a str,
            scheme: &'a str,
            params: AuthParams<'a>,
            token68: Option<&'a str>,
        }

        impl<'a> $ty<'a> {
            /// The value as written.
            pub fn as_str(&self) -> &'a str {
                self.raw
            }
            /// The scheme as written (`Digest`, …).
            pub fn scheme(&self) -> &'a str {
                self.scheme
            }
            /// Whether the scheme is `Digest` (case-insensitive).
            pub fn is_digest(&self) -> bool {
                self.scheme.eq_ignore_ascii_case("Digest")
            }
            /// The parameters.
            pub fn params(&self) -> AuthParams<'a> {
                self.params
            }
            /// A token68 blob in place of parameters (RFC 7235 §2.1).
            pub fn token68(&self) -> Option<&'a str> {
                self.token68
            }
            /// One parameter, unquoted.
            pub fn param(&self, name: &str) -> Option<Cow<'a, str>> {
                self.params.get(name)
            }
            /// `realm`.
            pub fn realm(&self) -> Option<Cow<'a, str>> {
                self.param("realm")
            }
            /// `nonce`.
            pub fn nonce(&self) -> Option<Cow<'a, str>> {
                self.param("nonce")
            }
            /// `opaque`.
            pub fn opaque(&self) -> Option<Cow<'a, str>> {
                self.param("opaque")
            }
            /// `algorithm` (MD5 when absent, RFC 7616 §3.3).
            pub fn algorithm(&self) -> Option<Cow<'a, str>> {
                self.param("algorithm")
            }
        }

        impl fmt::Display for $ty<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.raw)
            }
        }

        impl<'a> HeaderValue<'a> for $ty<'a> {
            fn parse_value(value: &'a [u8]) -> Option<Self> {
                let (scheme, params, token68) = whole(value, scheme_and_params)?;
                let raw = std::str::from_utf8(value).ok()?;
                Some($ty { raw, scheme, params, token68 })
            }
        }
    };
}

auth_value!(
    Challenge,
    "A challenge from WWW-Authenticate or Proxy-Authenticate (§20.44, §20.27).\n\n```\nuse sipline::message::headers::{Challenge, HeaderValue};\n# fn main() { assert!(run().is_some()); }\n# fn run() -> Option<()> {\nlet c = Challenge::parse_value(br#\"Digest realm=\"atlanta.com\", qop=\"auth,auth-int\", nonce=\"ea9c8e88\", stale=TRUE, algorithm=SHA-256\"#)?;\nassert!(c.is_digest());\nassert_eq!(c.realm()?, \"atlanta.com\");\nassert_eq!(c.qop_options().collect::<Vec<_>>(), [\"auth\", \"auth-int\"]);\nassert!(c.stale());\n# Some(())\n# }\n```"
);
auth_value!(Credentials, "Credentials from Authorization or Proxy-Authorization (§20.7, §20.28).");

impl<'a> Challenge<'a> {
    /// `stale=true` (case-insensitive): retry with the new nonce without
    /// asking the user again (RFC 7616 §3.3).
    pub fn stale(&self) -> bool {
        self.param("stale").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
    /// The `qop` options offered (`auth`, `auth-int`).
    pub fn qop_options(&self) -> impl Iterator<Item = String> + 'a {
        let q = self.param("qop").unwrap_or_default().into_owned();
        q.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>().into_iter()
    }
}

impl<'a> Credentials<'a> {
    /// `username`.
    pub fn username(&self) -> Option<Cow<'a, str>> {
        self.param("username")
    }
    /// `uri` (the digest-uri).
    pub fn uri(&self) -> Option<Cow<'a, str>> {
        self.param("uri")
    }
    /// `response`.
    pub fn response(&self) -> Option<Cow<'a, str>> {
        self.param("response")
    }
    /// `cnonce`.
    pub fn cnonce(&self) -> Option<Cow<'a, str>> {
        self.param("cnonce")
    }
    /// `nc` (nonce-count, 8 hex digits).
    pub fn nc(&self) -> Option<Cow<'a, str>> {
        self.param("nc")
    }
    /// `qop` chosen by the client.
    pub fn qop(&self) -> Option<Cow<'a, str>> {
        self.param("qop")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_credentials() {
        let c = Credentials::parse_value(
            b"Digest username=\"bob\", realm=\"biloxi.com\",\r\n nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(c.username().unwrap(), "bob");
        assert_eq!(c.uri().unwrap(), "sip:bob@biloxi.com");
        assert_eq!(c.nc().unwrap(), "00000001");
        assert_eq!(c.qop().unwrap(), "auth");
        assert_eq!(c.params().iter().count(), 9);
    }

    #[test]
    fn other_schemes() {
        let c = Credentials::parse_value(b"NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert_eq!(c.scheme(), "NoOneKnowsThisScheme");
        assert_eq!(c.param("opaque-data").unwrap(), "here");
        let b = Credentials::parse_value(b"Bearer eyJhbGciOi.JIUzI1NiJ9==").unwrap();
        assert_eq!(b.token68(), Some("eyJhbGciOi.JIUzI1NiJ9=="));
        assert!(Challenge::parse_value(b"Digest realm=\"unterminated").is_none());
        assert!(Challenge::parse_value(b"Digest realm=\"a\",, nonce=\"b\"").is_none());
        assert!(Challenge::parse_value(b"").is_none());
    }
}
