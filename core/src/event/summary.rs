//! Message waiting indication: the `application/simple-message-summary`
//! body of the message-summary event package (RFC 3842 §5).

use super::EventError;
use crate::message::grammar::{is_token, offset_of, sws, u32_digits};
use std::fmt::Write as _;

const BODY: &str = "message-summary";

/// The counts of one message class (RFC 3842 §5.2 `msg-summary-line`):
/// `new/old (urgent new/urgent old)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageCounts {
    /// New messages.
    pub new: u32,
    /// Old (read) messages.
    pub old: u32,
    /// The urgent ones among them as `(new, old)`, when given.
    pub urgent: Option<(u32, u32)>,
}

impl MessageCounts {
    /// Counts without the urgent part.
    pub fn new(new: u32, old: u32) -> Self {
        MessageCounts { new, old, urgent: None }
    }

    /// The same counts with urgent new and old messages.
    #[must_use]
    pub fn with_urgent(mut self, new: u32, old: u32) -> Self {
        self.urgent = Some((new, old));
        self
    }
}

/// A message summary (RFC 3842 §5.2).
///
/// ```
/// use sipline::event::{MessageCounts, MessageSummary};
/// let body = b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\nVoice-Message: 2/8 (0/2)\r\n";
/// let s = MessageSummary::parse(body)?;
/// assert!(s.waiting);
/// assert_eq!(s.voice(), Some(MessageCounts::new(2, 8).with_urgent(0, 2)));
/// assert_eq!(s.to_body()?.as_bytes(), body);
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageSummary<'a> {
    /// `Messages-Waiting: yes` (`true`) or `no`.
    pub waiting: bool,
    /// `Message-Account`: the mailbox's URI, as written.
    pub account: Option<&'a str>,
    /// Each `message-context-class` line (`Voice-Message`, `Fax-Message`…,
    /// RFC 3458 §3) with its counts, in order; names as written.
    pub classes: Vec<(&'a str, MessageCounts)>,
    /// The extension headers after the blank line (`opt-msg-headers`):
    /// name and value as written (a folded value keeps its folds).
    pub headers: Vec<(&'a str, &'a str)>,
}

/// `name HCOLON value` of one line: the name, and the value trimmed.
fn header_line(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim_end_matches([' ', '\t']);
    if name.is_empty() || !name.bytes().all(is_token) {
        return None;
    }
    Some((name, value.trim_matches([' ', '\t'])))
}

/// Whether every line break in `v` is a fold: CRLF (or LF) then
/// whitespace (RFC 3261 §7.3.1).
fn folds_only(v: &str) -> bool {
    let b = v.as_bytes();
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        b'\n' => matches!(b.get(i + 1), Some(b' ' | b'\t')),
        _ => true,
    })
}

/// `newmsgs SLASH oldmsgs [ LPAREN new-urgentmsgs SLASH old-urgentmsgs RPAREN ]`.
fn counts(v: &str) -> Option<MessageCounts> {
    let pair = |i: &[u8]| -> Option<(usize, u32, u32)> {
        let (r, a) = u32_digits(sws(i)).ok()?;
        let r = sws(r);
        let r = r.strip_prefix(b"/")?;
        let (r, b) = u32_digits(sws(r)).ok()?;
        Some((i.len() - r.len(), a, b))
    };
    let b = v.as_bytes();
    let (used, new, old) = pair(b)?;
    let rest = sws(&b[used..]);
    if rest.is_empty() {
        return Some(MessageCounts::new(new, old));
    }
    let inner = rest.strip_prefix(b"(")?;
    let (used, un, uo) = pair(inner)?;
    let rest = sws(&inner[used..]).strip_prefix(b")")?;
    sws(rest).is_empty().then_some(MessageCounts::new(new, old).with_urgent(un, uo))
}

impl<'a> MessageSummary<'a> {
    /// The MIME type of the body (RFC 3842 §5).
    pub const CONTENT_TYPE: &'static str = "application/simple-message-summary";

    /// A summary with only the status line.
    pub fn new(waiting: bool) -> Self {
        MessageSummary { waiting, ..MessageSummary::default() }
    }

    /// The counts of class `name` (`voice-message`…, compared
    /// case-insensitively).
    pub fn counts(&self, name: &str) -> Option<MessageCounts> {
        self.classes.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, c)| c)
    }

    /// The `Voice-Message` counts.
    pub fn voice(&self) -> Option<MessageCounts> {
        self.counts("voice-message")
    }

    /// Parses a body. Lines may end in CRLF or a bare LF; the last may
    /// lack its end.
    pub fn parse(body: &'a [u8]) -> Result<Self, EventError> {
        let text = std::str::from_utf8(body).map_err(|_| EventError::NotUtf8)?;
        let mut lines = text.split_inclusive('\n').map(|l| l.trim_end_matches('\n').trim_end_matches('\r')).enumerate();
        let bad = |n: usize| EventError::Line { body: BODY, line: n + 1 };
        // msg-status-line = "Messages-Waiting" HCOLON msg-status
        let (n, first) = lines.next().ok_or(bad(0))?;
        let waiting = match header_line(first) {
            Some((name, v)) if name.eq_ignore_ascii_case("Messages-Waiting") => {
                if v.eq_ignore_ascii_case("yes") {
                    true
                } else if v.eq_ignore_ascii_case("no") {
                    false
                } else {
                    return Err(bad(n));
                }
            }
            _ => return Err(bad(n)),
        };
        let mut s = MessageSummary::new(waiting);
        // The summary lines, up to a blank line.
        let mut more = false;
        for (n, line) in lines.by_ref() {
            if line.is_empty() {
                more = true;
                break;
            }
            let (name, v) = header_line(line).ok_or(bad(n))?;
            if name.eq_ignore_ascii_case("Message-Account") && s.account.is_none() && s.classes.is_empty() {
                if v.is_empty() {
                    return Err(bad(n));
                }
                s.account = Some(v);
            } else {
                s.classes.push((name, counts(v).ok_or(bad(n))?));
            }
        }
        // opt-msg-headers = CRLF 1*(extension-header CRLF); a line that
        // starts with whitespace continues the one before (RFC 3261 §7.3.1).
        if more {
            for (n, line) in lines {
                if line.starts_with([' ', '\t']) {
                    let Some(last) = s.headers.last_mut() else { return Err(bad(n)) };
                    // The value runs on over the fold, still one slice of the body.
                    let span = offset_of(text.as_bytes(), last.1.as_bytes())
                        .zip(offset_of(text.as_bytes(), line.as_bytes()).map(|o| o + line.len()));
                    let value = span.and_then(|(start, end)| text.get(start..end)).ok_or(bad(n))?;
                    last.1 = value.trim_end_matches([' ', '\t']);
                } else if line.is_empty() {
                    // A trailing blank line.
                } else {
                    s.headers.push(header_line(line).ok_or(bad(n))?);
                }
            }
        }
        Ok(s)
    }

    /// Writes the body, lines ending in CRLF. Refused: names that are not
    /// tokens and values holding line breaks.
    pub fn to_body(&self) -> Result<String, EventError> {
        let line_safe = |v: &str, field: &'static str| {
            if v.contains(['\r', '\n']) {
                Err(EventError::Unwritable { field })
            } else {
                Ok(())
            }
        };
        let token = |v: &str, field: &'static str| {
            if v.is_empty() || !v.bytes().all(is_token) {
                Err(EventError::BadValue { field })
            } else {
                Ok(())
            }
        };
        let mut out = String::with_capacity(96);
        out.push_str(if self.waiting { "Messages-Waiting: yes\r\n" } else { "Messages-Waiting: no\r\n" });
        if let Some(a) = self.account {
            line_safe(a, "Message-Account")?;
            let _ = write!(out, "Message-Account: {a}\r\n");
        }
        for (name, c) in &self.classes {
            token(name, "message-context-class")?;
            let _ = write!(out, "{name}: {}/{}", c.new, c.old);
            if let Some((n, o)) = c.urgent {
                let _ = write!(out, " ({n}/{o})");
            }
            out.push_str("\r\n");
        }
        if !self.headers.is_empty() {
            out.push_str("\r\n");
            for (name, v) in &self.headers {
                token(name, "extension header name")?;
                if !folds_only(v) {
                    return Err(EventError::Unwritable { field: "extension header" });
                }
                let _ = write!(out, "{name}: {v}\r\n");
            }
        }
        Ok(out)
    }
}
