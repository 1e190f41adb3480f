//! Small headers: Call-ID (§20.8), CSeq (§20.16), Date (§20.17),
//! Retry-After (§20.33), Warning (§20.43), User-Agent/Server (§20.41, §20.35).

use super::super::grammar::{ascii, fail, is_word, quoted_string, sep, sws, token, u32_digits, PResult};
use super::super::params::{ParamSyntax, Params};
use super::super::uri::{host, port_number};
use super::super::Method;
use super::{whole, HeaderValue};
use std::fmt;

/// `Call-ID = word [ "@" word ]` (§25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId<'a>(&'a str);

impl<'a> CallId<'a> {
    /// The Call-ID (compared byte for byte, §20.8).
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for CallId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<'a> HeaderValue<'a> for CallId<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let word = |s: &[u8]| !s.is_empty() && s.iter().all(|&c| is_word(c));
        let ok = match value.iter().position(|&c| c == b'@') {
            Some(at) => word(&value[..at]) && word(&value[at + 1..]),
            None => word(value),
        };
        if ok {
            ascii(value).map(CallId)
        } else {
            None
        }
    }
}

/// `CSeq = 1*DIGIT LWS Method` (§20.16); the number fits 32 bits (§8.1.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    seq: u32,
    method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// A CSeq value.
    pub fn new(seq: u32, method: Method<'a>) -> Self {
        CSeq { seq, method }
    }
    /// The sequence number.
    pub fn seq(&self) -> u32 {
        self.seq
    }
    /// The method.
    pub fn method(&self) -> Method<'a> {
        self.method
    }
}

impl fmt::Display for CSeq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

impl<'a> HeaderValue<'a> for CSeq<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let (r, seq) = u32_digits(value).ok()?;
        let m = sws(r);
        if m.len() == r.len() {
            return None; // LWS is required
        }
        let method = Method::from_token(ascii(m)?)?;
        Some(CSeq { seq, method })
    }
}

const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// `Date: rfc1123-date` (§20.17) — only `GMT` is valid (RFC 4475 §3.1.2.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date<'a> {
    raw: &'a str,
    /// Year.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–60.
    pub second: u8,
}

impl<'a> Date<'a> {
    /// The value as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
}

impl<'a> HeaderValue<'a> for Date<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        // wkday "," SP 2DIGIT SP month SP 4DIGIT SP 2DIGIT ":" 2DIGIT ":" 2DIGIT SP "GMT"
        let raw = ascii(value)?;
        let b = value;
        if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
            return None;
        }
        if !DAYS.contains(&&b[..3]) {
            return None;
        }
        let num = |s: &[u8]| -> Option<u16> {
            s.iter().all(u8::is_ascii_digit).then(|| s.iter().fold(0u16, |a, &c| a * 10 + u16::from(c - b'0')))
        };
        let two = |s: &[u8]| num(s).and_then(|v| u8::try_from(v).ok());
        let day = two(&b[5..7])?;
        let month = u8::try_from(MONTHS.iter().position(|m| *m == &b[8..11])? + 1).ok()?;
        let year = num(&b[12..16])?;
        let (hour, minute, second) = (two(&b[17..19])?, two(&b[20..22])?, two(&b[23..25])?);
        let seps = b[7] == b' ' && b[11] == b' ' && b[16] == b' ' && b[19] == b':' && b[22] == b':';
        (seps && (1..=31).contains(&day) && hour < 24 && minute < 60 && second <= 60).then_some(Date {
            raw,
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }
}

/// `comment = LPAREN *(ctext / quoted-pair / comment) RPAREN` (§25), nested.
fn comment(i: &[u8]) -> PResult<'_, &[u8]> {
    let j = sws(i);
    if j.first() != Some(&b'(') {
        return fail(i);
    }
    let mut depth = 0usize;
    let mut k = 0;
    while k < j.len() {
        match j[k] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&j[k + 1..], &j[1..k]));
                }
            }
            b'\\' => k += 1,
            b'\r' | b'\n' if !matches!(j.get(k + 2), Some(b' ' | b'\t')) => return fail(i),
            _ => {}
        }
        k += 1;
    }
    fail(i)
}

/// `Retry-After = delta-seconds [ comment ] *( SEMI retry-param )` (§20.33).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter<'a> {
    seconds: u32,
    comment: Option<&'a [u8]>,
    params: Params<'a>,
}

impl<'a> RetryAfter<'a> {
    /// Seconds to wait.
    pub fn seconds(&self) -> u32 {
        self.seconds
    }
    /// The comment, without parentheses.
    pub fn comment(&self) -> Option<&'a [u8]> {
        self.comment
    }
    /// The `duration` parameter, seconds.
    pub fn duration(&self) -> Option<u32> {
        self.params.value("duration")?.parse().ok()
    }
}

impl<'a> HeaderValue<'a> for RetryAfter<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let (seconds, comment, params) = whole(value, |i| {
            let (r, s) = u32_digits(i)?;
            let (r, c) = match comment(r) {
                Ok((r, c)) => (r, Some(c)),
                Err(_) => (r, None),
            };
            let (r, p) = Params::parse(r, ParamSyntax::Header)?;
            Ok((r, (s, c, p)))
        })?;
        if params.get("duration").is_some_and(|p| p.value().is_none_or(|v| v.parse::<u32>().is_err())) {
            return None;
        }
        Some(RetryAfter { seconds, comment, params })
    }
}

/// `warning-value = warn-code SP warn-agent SP warn-text` (§20.43).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warning<'a> {
    code: u16,
    agent: &'a str,
    text: &'a str,
}

impl<'a> Warning<'a> {
    /// The three-digit warn-code.
    pub fn code(&self) -> u16 {
        self.code
    }
    /// The warn-agent (hostport or pseudonym).
    pub fn agent(&self) -> &'a str {
        self.agent
    }
    /// The warn-text, escapes kept.
    pub fn text(&self) -> &'a str {
        self.text
    }
}

impl<'a> HeaderValue<'a> for Warning<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        if value.len() < 4 || !value[..3].iter().all(u8::is_ascii_digit) || value[3] != b' ' {
            return None;
        }
        let code = value[..3].iter().fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
        let rest = &value[4..];
        let agent_len = rest.iter().position(|&c| c == b' ')?;
        let agent_b = &rest[..agent_len];
        let agent_ok = token(agent_b).is_ok_and(|(r, _)| r.is_empty())
            || host(agent_b).is_ok_and(|(r, _)| {
                r.is_empty() || (r[0] == b':' && port_number(&r[1..]).is_ok_and(|(r, _)| r.is_empty()))
            });
        if !agent_ok {
            return None;
        }
        let text = whole(&rest[agent_len + 1..], quoted_string)?;
        Some(Warning { code, agent: ascii(agent_b)?, text })
    }
}

/// User-Agent / Server text: `server-val *(LWS server-val)`, where
/// `server-val = product / comment` and `product = token [SLASH token]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVal<'a>(&'a str);

impl<'a> ServerVal<'a> {
    /// The text as written.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl<'a> HeaderValue<'a> for ServerVal<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let mut r = value;
        if value.is_empty() {
            return None;
        }
        while !sws(r).is_empty() {
            if let Ok((r2, _)) = comment(r) {
                r = r2;
                continue;
            }
            let (r2, _) = token(sws(r)).ok()?;
            r = match sep(b'/')(r2) {
                Ok((r3, ())) => token(r3).ok()?.0,
                Err(_) => r2,
            };
        }
        std::str::from_utf8(value).ok().map(ServerVal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_cseq() {
        assert!(CallId::parse_value(b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_some());
        assert!(CallId::parse_value(b"a@b@c").is_none());
        assert!(CallId::parse_value(b"has space").is_none());
        let c = CSeq::parse_value(b"0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq(), c.method()), (9, Method::Invite));
        assert!(CSeq::parse_value(b"36893488147419103232 INVITE").is_none());
        assert!(CSeq::parse_value(b"1INVITE").is_none());
        assert!(CSeq::parse_value(b"1 IN VITE").is_none());
    }

    #[test]
    fn date_only_gmt() {
        let d = Date::parse_value(b"Sat, 13 Nov 2010 23:29:00 GMT").unwrap();
        assert_eq!((d.year, d.month, d.day, d.hour, d.minute, d.second), (2010, 11, 13, 23, 29, 0));
        assert!(Date::parse_value(b"Fri, 01 Jan 2010 16:00:00 EST").is_none());
        assert!(Date::parse_value(b"Fri, 01 Foo 2010 16:00:00 GMT").is_none());
    }

    #[test]
    fn retry_after_warning_server() {
        let r = RetryAfter::parse_value(b"18000 (in a meeting);duration=3600").unwrap();
        assert_eq!((r.seconds(), r.duration()), (18000, Some(3600)));
        assert_eq!(r.comment(), Some(&b"in a meeting"[..]));
        assert!(RetryAfter::parse_value(b"1000000000000000000000000000").is_none());
        let w = Warning::parse_value(b"307 isi.edu \"Session parameter 'foo' not understood\"").unwrap();
        assert_eq!((w.code(), w.agent()), (307, "isi.edu"));
        assert!(Warning::parse_value(b"1812 overture \"In Progress\"").is_none());
        assert!(ServerVal::parse_value(b"HomeServer v2 (Linux; x86) sipline/0.1").is_some());
        assert!(ServerVal::parse_value(b"bad @ value").is_none());
    }
}
