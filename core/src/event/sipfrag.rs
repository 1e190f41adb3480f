//! `message/sipfrag` (RFC 3420) as the NOTIFYs of a REFER use it
//! (RFC 3515 §2.4.5): a status line, perhaps followed by headers.

use super::EventError;
use std::borrow::Cow;
use std::fmt;

const BODY: &str = "sipfrag";

/// The status line of a sipfrag body: `SIP/2.0 200 OK` (RFC 3261 §7.2
/// `Status-Line`, RFC 3420 §2).
///
/// ```
/// use sipline::event::StatusFrag;
/// let frag = StatusFrag::new(100, "Trying")?;
/// assert_eq!(frag.to_string(), "SIP/2.0 100 Trying\r\n");
/// let back = StatusFrag::parse(b"SIP/2.0 603 Declined\r\nWarning: 399 x \"no\"\r\n")?;
/// assert_eq!((back.code, &*back.reason), (603, "Declined"));
/// assert!(back.is_final());
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFrag<'a> {
    /// The status code, 100–699.
    pub code: u16,
    /// The reason phrase (may be empty).
    pub reason: Cow<'a, str>,
    /// What follows the status line, as written (headers and perhaps a
    /// body; empty when there is nothing). Not written by `Display`.
    pub rest: &'a str,
}

impl<'a> StatusFrag<'a> {
    /// The MIME type of the body. RFC 3515 §2.4.5 has a NOTIFY's body be
    /// `message/sipfrag`, with `;version=2.0` (RFC 3420 §3) commonly added.
    pub const CONTENT_TYPE: &'static str = "message/sipfrag;version=2.0";

    /// A status line with `code` (100–699) and `reason` (one line).
    pub fn new(code: u16, reason: impl Into<Cow<'a, str>>) -> Result<Self, EventError> {
        let reason = reason.into();
        if !(100..=699).contains(&code) {
            return Err(EventError::BadValue { field: "status code" });
        }
        // Reason-Phrase admits no CR or LF (§25).
        if reason.contains(['\r', '\n']) {
            return Err(EventError::Unwritable { field: "reason phrase" });
        }
        Ok(StatusFrag { code, reason, rest: "" })
    }

    /// Whether the status is final (≥ 200): the NOTIFY carrying it ends the
    /// implicit subscription (RFC 3515 §2.4.7).
    pub fn is_final(&self) -> bool {
        self.code >= 200
    }

    /// Whether the status is a success (2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Parses the status line of a sipfrag body. Tolerated: a bare LF or
    /// no line end at all, a missing reason, leading blank lines.
    pub fn parse(body: &'a [u8]) -> Result<Self, EventError> {
        let bad = EventError::Line { body: BODY, line: 1 };
        let text = std::str::from_utf8(body).map_err(|_| EventError::NotUtf8)?;
        let text = text.trim_start_matches(['\r', '\n']);
        let (line, rest) = match text.find('\n') {
            Some(i) => (text[..i].trim_end_matches('\r'), &text[i + 1..]),
            None => (text, ""),
        };
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        let (version, after) = line.split_once(' ').ok_or(bad)?;
        let numbers = match version.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("SIP/") => version.get(4..),
            _ => None,
        };
        let (major, minor) = numbers.and_then(|n| n.split_once('.')).ok_or(bad)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(bad);
        }
        let (code, reason) = after.split_once(' ').unwrap_or((after, ""));
        if code.len() != 3 || !digits(code) {
            return Err(bad);
        }
        let code: u16 = code.parse().map_err(|_| bad)?;
        if !(100..=699).contains(&code) {
            return Err(bad);
        }
        Ok(StatusFrag { code, reason: Cow::Borrowed(reason), rest })
    }
}

/// `SIP/2.0 <code> <reason>` and CRLF.
impl fmt::Display for StatusFrag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0 {} {}\r\n", self.code, self.reason)
    }
}
