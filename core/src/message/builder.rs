//! Serializing messages (§7): start line, header fields and body written
//! straight into one buffer, Content-Length computed from the body.

use super::HeaderName;
use super::{Message, Method, StartLine, StatusCode};
use std::fmt::{self, Write as _};

/// Writes one message into a caller-owned buffer.
///
/// ```
/// use sipline::message::{Message, MessageWriter, Method, StatusCode, Uri};
/// let mut buf = Vec::new();
/// let uri = Uri::parse("sip:bob@example.com").unwrap();
/// MessageWriter::request(&mut buf, Method::Message, uri.as_str())
///     .header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1")
///     .header("Max-Forwards", 70)
///     .header("From", "<sip:alice@example.com>;tag=1")
///     .header("To", "<sip:bob@example.com>")
///     .header("Call-ID", "c1")
///     .header("CSeq", "1 MESSAGE")
///     .header("Content-Type", "text/plain")
///     .finish(b"hello");
/// let msg = Message::parse(&buf).unwrap();
/// assert_eq!(msg.body(), b"hello");
/// assert_eq!(msg.content_length(), Some(5));
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
}

/// Lets `write!` format straight into the byte buffer.
struct Sink<'b>(&'b mut Vec<u8>);
impl fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl<'b> MessageWriter<'b> {
    /// Starts a request: `Method SP Request-URI SP SIP/2.0 CRLF` (§7.1).
    pub fn request(buf: &'b mut Vec<u8>, method: Method<'_>, uri: &str) -> Self {
        buf.extend_from_slice(method.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(uri.as_bytes());
        buf.extend_from_slice(b" SIP/2.0\r\n");
        MessageWriter { buf }
    }

    /// Starts a response: `SIP/2.0 SP Status-Code SP Reason-Phrase CRLF`
    /// (§7.2). An empty `reason` uses the RFC's phrase for the code.
    pub fn response(buf: &'b mut Vec<u8>, code: StatusCode, reason: &str) -> Self {
        let reason = if reason.is_empty() { code.canonical_reason() } else { reason };
        buf.extend_from_slice(b"SIP/2.0 ");
        push_decimal(buf, u32::from(code.as_u16()));
        buf.push(b' ');
        buf.extend_from_slice(reason.as_bytes());
        buf.extend_from_slice(b"\r\n");
        MessageWriter { buf }
    }

    /// Appends header lines to `buf` as it stands (no start line): for
    /// pieces of a message kept and copied in whole later.
    pub(crate) fn append(buf: &'b mut Vec<u8>) -> Self {
        MessageWriter { buf }
    }

    /// Appends header lines already written (each ending in CRLF).
    pub(crate) fn lines(&mut self, lines: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(lines);
        self
    }

    /// Appends `name: value CRLF`. Do not add Content-Length: [`finish`]
    /// writes it.
    ///
    /// [`finish`]: MessageWriter::finish
    pub fn header(&mut self, name: &str, value: impl fmt::Display) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        let _ = write!(Sink(self.buf), "{value}");
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a header whose value is raw bytes (copied from another message).
    pub fn header_bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a header whose value is the concatenation of `parts`
    /// (e.g. a copied To value plus `;tag=…`), without an intermediate copy.
    pub fn header_parts(&mut self, name: &str, parts: &[&[u8]]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Writes `Content-Length`, the empty line and the body.
    pub fn finish(&mut self, body: &[u8]) {
        self.buf.extend_from_slice(b"Content-Length: ");
        push_decimal(self.buf, u32::try_from(body.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(b"\r\n\r\n");
        self.buf.extend_from_slice(body);
    }
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(buf: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        // `n % 10` is below 10.
        digits[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

impl Message<'_> {
    /// Serializes the message: the start line, every header field as
    /// written (name and value, folds kept), a Content-Length that matches
    /// the body, and the body.
    pub fn write_to(&self, buf: &mut Vec<u8>) {
        let mut w = match self.start_line() {
            StartLine::Request(r) => MessageWriter::request(buf, r.method, r.uri),
            StartLine::Response(s) => {
                buf.extend_from_slice(b"SIP/2.0 ");
                push_decimal(buf, u32::from(s.code.as_u16()));
                buf.push(b' ');
                buf.extend_from_slice(s.reason);
                buf.extend_from_slice(b"\r\n");
                MessageWriter { buf }
            }
        };
        for h in self.headers().iter() {
            if h.kind() != HeaderName::ContentLength {
                w.header_bytes(h.name(), h.value());
            }
        }
        w.finish(self.body());
    }
}
