//! Framing SIP messages on stream transports (TCP, TLS): RFC 3261 §18.3
//! (Content-Length is mandatory on streams), §7.5 (CRLFs before a start line
//! are ignored) and RFC 5626 §3.5.1 (CRLF keep-alives: a double CRLF "ping",
//! a single CRLF "pong").
//!
//! The framer is incremental: each call scans only the octets that arrived
//! since the last call, and every limit is checked before the caller's
//! buffer grows past it, so a slow or hostile peer costs linear time and
//! bounded memory.

use super::grammar::whole_u32;
use super::grammar::{is_token, is_wsp, trim};
use super::{line_end, value_end, HeaderName};

/// Limits a stream peer must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Largest message (header section plus body), octets.
    pub max_message: usize,
    /// Most header lines (folds count as lines).
    pub max_headers: usize,
    /// Longest single line, octets.
    pub max_line: usize,
}

impl Default for FramingLimits {
    /// 64 KiB messages, 256 header lines, 8 KiB lines.
    fn default() -> Self {
        FramingLimits { max_message: 64 * 1024, max_headers: 256, max_line: 8 * 1024 }
    }
}

/// What the buffered octets hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// Not a whole message yet: read more and call again with the same
    /// buffer (grown).
    NeedMore,
    /// A keep-alive ping (CRLF CRLF, RFC 5626 §3.5.1) of `len` octets;
    /// answer it with a single CRLF. A ping split across reads may arrive
    /// as a [`Framed::Pong`] followed by a two-octet ping.
    Ping {
        /// Octets to consume.
        len: usize,
    },
    /// A keep-alive pong (a lone CRLF) of `len` octets.
    Pong {
        /// Octets to consume.
        len: usize,
    },
    /// A complete message in the first `len` octets: pass them to
    /// [`Message::parse`](super::Message::parse), then consume them.
    Message {
        /// Octets to consume.
        len: usize,
    },
}

/// Why a stream cannot be framed. The stream cannot be resynchronized
/// after any of these: answer if possible, then close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The message would exceed [`FramingLimits::max_message`] (answer 513).
    #[error("message larger than {limit} octets")]
    MessageTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A line exceeds [`FramingLimits::max_line`].
    #[error("line longer than {limit} octets")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// More header lines than [`FramingLimits::max_headers`].
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// No Content-Length on a stream (§18.3: it MUST be present).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is not `1*DIGIT` within 32 bits (RFC 4475 §3.1.2.3).
    #[error("malformed Content-Length")]
    InvalidContentLength,
    /// More than one Content-Length (RFC 4475 §3.3.9).
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// A CR not followed by LF or a LF without CR.
    #[error("bare CR or LF in the header section")]
    LineEnding,
}

/// Finds message boundaries in a stream.
///
/// ```
/// use sipline::message::{Framed, StreamFramer};
/// let mut framer = StreamFramer::default();
/// let stream = b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nhi";
/// assert_eq!(framer.advance(&stream[..10]), Ok(Framed::Ping { len: 4 }));
/// let rest = &stream[4..];
/// assert_eq!(framer.advance(&rest[..20]), Ok(Framed::NeedMore));
/// assert_eq!(framer.advance(rest), Ok(Framed::Message { len: rest.len() }));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StreamFramer {
    limits: FramingLimits,
    /// Octets already scanned for line ends.
    scanned: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Lines seen, start line included.
    lines: usize,
    /// Start of the Content-Length line, once seen.
    cl_line: Option<usize>,
    /// Header section end and Content-Length, once known.
    frame: Option<(usize, usize)>,
    /// The previous call returned a lone CRLF.
    after_crlf: bool,
}

impl StreamFramer {
    /// A framer with the given limits.
    pub fn new(limits: FramingLimits) -> Self {
        StreamFramer { limits, ..StreamFramer::default() }
    }

    /// The limits in force.
    pub fn limits(&self) -> FramingLimits {
        self.limits
    }

    fn reset(&mut self) {
        *self = StreamFramer { limits: self.limits, ..StreamFramer::default() };
    }

    /// Looks at the unconsumed octets `buf`, which start where the previous
    /// frame ended and extend what was passed before. After any answer but
    /// [`Framed::NeedMore`], consume `len` octets before calling again.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Framed, FramingError> {
        if buf.len() < self.scanned {
            // The caller broke the contract (passed less than before): start over.
            self.reset();
        }
        if let Some((header_end, cl)) = self.frame {
            return Ok(self.complete(buf, header_end, cl));
        }
        if self.scanned == 0 {
            // §7.5 / RFC 5626 §3.5.1: CRLFs before a start line are keep-alives.
            match buf {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.after_crlf = false;
                    return Ok(Framed::Ping { len: 4 });
                }
                [b'\r', b'\n', ..] => {
                    let second = std::mem::replace(&mut self.after_crlf, true);
                    if buf.len() == 2 || buf.get(2) != Some(&b'\r') {
                        if second {
                            self.after_crlf = false;
                            return Ok(Framed::Ping { len: 2 });
                        }
                        return Ok(Framed::Pong { len: 2 });
                    }
                    if buf.len() == 3 {
                        self.after_crlf = second;
                        return Ok(Framed::NeedMore); // "\r\n\r" — wait for the next octet
                    }
                    // "\r\n\rX": a pong; the stray CR fails as a line ending next.
                    self.after_crlf = false;
                    return Ok(Framed::Pong { len: 2 });
                }
                [b'\r'] | [] => return Ok(Framed::NeedMore),
                _ => self.after_crlf = false,
            }
        }
        // One pass finds line ends and stray CR or LF octets alike.
        while let Some(n) = memchr::memchr2(b'\r', b'\n', &buf[self.scanned..]) {
            let cr = self.scanned + n;
            match (buf[cr], buf.get(cr + 1)) {
                (b'\r', Some(b'\n')) => {}
                (b'\r', None) => {
                    // The LF may be in the next read: look at this CR again then.
                    self.scanned = cr;
                    break;
                }
                _ => return Err(FramingError::LineEnding),
            }
            let nl = cr + 1;
            self.scanned = nl + 1;
            if nl + 1 - self.line_start > self.limits.max_line {
                return Err(FramingError::LineTooLong { limit: self.limits.max_line });
            }
            let line = &buf[self.line_start..nl - 1];
            let start = self.line_start;
            self.line_start = nl + 1;
            if line.is_empty() {
                let header_end = nl + 1;
                let cl = self.content_length(buf)?;
                if header_end.saturating_add(cl) > self.limits.max_message {
                    return Err(FramingError::MessageTooLarge { limit: self.limits.max_message });
                }
                self.frame = Some((header_end, cl));
                return Ok(self.complete(buf, header_end, cl));
            }
            self.lines += 1;
            if self.lines > self.limits.max_headers + 1 {
                return Err(FramingError::TooManyHeaders { limit: self.limits.max_headers });
            }
            if self.lines > 1 && !is_wsp(line[0]) {
                let name_len = line.iter().take_while(|&&c| is_token(c)).count();
                if HeaderName::from_token(&line[..name_len]) == HeaderName::ContentLength {
                    if self.cl_line.is_some() {
                        return Err(FramingError::DuplicateContentLength);
                    }
                    self.cl_line = Some(start);
                }
            }
        }
        if self.scanned < buf.len() && buf[self.scanned] != b'\r' {
            self.scanned = buf.len();
        }
        if buf.len() - self.line_start > self.limits.max_line {
            return Err(FramingError::LineTooLong { limit: self.limits.max_line });
        }
        if buf.len() > self.limits.max_message {
            return Err(FramingError::MessageTooLarge { limit: self.limits.max_message });
        }
        Ok(Framed::NeedMore)
    }

    fn content_length(&self, buf: &[u8]) -> Result<usize, FramingError> {
        let start = self.cl_line.ok_or(FramingError::MissingContentLength)?;
        let colon = buf[start..].iter().position(|&c| c == b':').ok_or(FramingError::InvalidContentLength)?;
        let from = start + colon + 1;
        let end = value_end(buf, from).or_else(|_| line_end(buf, from)).map_err(|_| FramingError::LineEnding)?;
        whole_u32(trim(&buf[from..end])).map(|v| v as usize).ok_or(FramingError::InvalidContentLength)
    }

    fn complete(&mut self, buf: &[u8], header_end: usize, cl: usize) -> Framed {
        let len = header_end + cl;
        if buf.len() >= len {
            self.reset();
            Framed::Message { len }
        } else {
            Framed::NeedMore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let mut f = StreamFramer::default();
        for k in 0..MSG.len() {
            assert_eq!(f.advance(&MSG[..k]), Ok(Framed::NeedMore), "at {k}");
        }
        assert_eq!(f.advance(MSG), Ok(Framed::Message { len: MSG.len() }));
        // Two messages back to back: the first is framed, then the second.
        let two = [MSG, MSG].concat();
        assert_eq!(f.advance(&two), Ok(Framed::Message { len: MSG.len() }));
        assert_eq!(f.advance(&two[MSG.len()..]), Ok(Framed::Message { len: MSG.len() }));
    }

    #[test]
    fn a_cr_at_the_end_of_a_read_waits_for_its_lf() {
        let mut f = StreamFramer::default();
        let msg = b"OPTIONS sip:a SIP/2.0\r\nl: 0\r\n\r\n";
        for cut in 1..msg.len() {
            let mut f2 = StreamFramer::default();
            assert_eq!(f2.advance(&msg[..cut]), Ok(Framed::NeedMore), "cut at {cut}");
            assert_eq!(f2.advance(msg), Ok(Framed::Message { len: msg.len() }), "cut at {cut}");
        }
        assert_eq!(f.advance(b"OPTIONS sip:a SIP/2.0\rX"), Err(FramingError::LineEnding));
    }

    #[test]
    fn keepalives() {
        let mut f = StreamFramer::default();
        assert_eq!(f.advance(b"\r\n\r\n"), Ok(Framed::Ping { len: 4 }));
        assert_eq!(f.advance(b"\r\nINV"), Ok(Framed::Pong { len: 2 }));
        assert_eq!(f.advance(b"\r"), Ok(Framed::NeedMore));
        // A ping split across two reads: pong, then the rest as a ping.
        let mut f = StreamFramer::default();
        assert_eq!(f.advance(b"\r\n"), Ok(Framed::Pong { len: 2 }));
        assert_eq!(f.advance(b"\r\n"), Ok(Framed::Ping { len: 2 }));
    }

    #[test]
    fn a_stray_cr_after_a_crlf_cannot_stall_the_framer() {
        // Found by reading the fuzz target: "\r\n\rX…" used to wait forever.
        let limits = FramingLimits { max_message: 1024, max_headers: 16, max_line: 128 };
        let mut f = StreamFramer::new(limits);
        let mut buf = b"\r\n\rX".to_vec();
        buf.extend(std::iter::repeat_n(b'A', 100_000));
        assert_eq!(f.advance(&buf), Ok(Framed::Pong { len: 2 }));
        // The stray CR is seen at once.
        assert_eq!(f.advance(&buf[2..]), Err(FramingError::LineEnding));
        let mut f = StreamFramer::new(limits);
        assert_eq!(f.advance(b"\r\n\rX\r\n"), Ok(Framed::Pong { len: 2 }));
        assert_eq!(f.advance(b"\rX\r\n"), Err(FramingError::LineEnding));
        let mut f = StreamFramer::new(limits);
        assert_eq!(f.advance(b"\r\n\r"), Ok(Framed::NeedMore));
        assert_eq!(f.advance(b"\r\n\r\n"), Ok(Framed::Ping { len: 4 }));
    }

    #[test]
    fn content_length_rules() {
        let mut f = StreamFramer::default();
        assert_eq!(f.advance(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n"), Err(FramingError::MissingContentLength));
        let mut f = StreamFramer::default();
        assert_eq!(
            f.advance(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: -999\r\n\r\n"),
            Err(FramingError::InvalidContentLength)
        );
        let mut f = StreamFramer::default();
        assert_eq!(
            f.advance(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n"),
            Err(FramingError::DuplicateContentLength)
        );
        let mut f = StreamFramer::default();
        assert_eq!(
            f.advance(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: five\r\n\r\n"),
            Err(FramingError::InvalidContentLength)
        );
    }

    #[test]
    fn limits_bite_before_the_buffer_grows() {
        let limits = FramingLimits { max_message: 100, max_headers: 2, max_line: 40 };
        let mut f = StreamFramer::new(limits);
        assert_eq!(f.advance(&[b'A'; 41]), Err(FramingError::LineTooLong { limit: 40 }));
        let mut f = StreamFramer::new(limits);
        assert_eq!(
            f.advance(b"A sip:a SIP/2.0\r\na: 1\r\nb: 2\r\nc: 3\r\n"),
            Err(FramingError::TooManyHeaders { limit: 2 })
        );
        let mut f = StreamFramer::new(limits);
        // The declared body would overflow the limit: refused before it arrives.
        assert_eq!(f.advance(b"A sip:a SIP/2.0\r\nl: 90\r\n\r\n"), Err(FramingError::MessageTooLarge { limit: 100 }));
        let mut f = StreamFramer::new(limits);
        assert_eq!(f.advance(b"A sip:a SIP/2.0\nl: 0\r\n\r\n"), Err(FramingError::LineEnding));
    }
}
