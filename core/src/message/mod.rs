//! The message layer: a zero-copy SIP parser (RFC 3261 §7, §25), typed
//! headers, URIs (§19.1), stream framing (§18.3, RFC 5626 §3.5.1) and a
//! serializer.
//!
//! [`Message::parse`] reads one message the way `httparse` reads HTTP: it
//! finds the start line, every header field and the body, borrowing all of
//! it from the input, and allocates nothing for messages of up to
//! [`INLINE_HEADERS`] header fields. Typed views of header values and the
//! Request-URI are parsed on demand ([`Message::via`], [`Message::value`],
//! [`Message::request_uri`]…), and [`validate`] checks a whole message the
//! way §8.2 and §16.3 ask a receiver to.
//!
//! ```
//! use sipline::message::{Message, Method};
//!
//! let bytes = b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
//! Max-Forwards: 70\r\n\
//! To: <sip:bob@example.com>\r\n\
//! From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
//! Call-ID: a84b4c76e66710\r\n\
//! CSeq: 63104 OPTIONS\r\n\
//! Content-Length: 0\r\n\r\n";
//!
//! let msg = Message::parse(bytes)?;
//! assert_eq!(msg.method(), Some(&Method::Options));
//! assert_eq!(msg.via().unwrap()?.branch(), Some("z9hG4bK776asdhds"));
//! assert_eq!(msg.from().unwrap()?.tag(), Some("1928301774"));
//! assert_eq!(msg.cseq().unwrap()?.seq(), 63104);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod framing;
pub(crate) mod grammar;
mod header;
pub mod headers;
mod params;
mod salvage;
mod uri;
pub mod validate;

pub use builder::MessageWriter;
pub use framing::{Framed, FramingError, FramingLimits, StreamFramer};
pub use header::{Header, HeaderName, Headers, INLINE_HEADERS};
pub use headers::HeaderError;
pub use params::{Param, ParamIter, Params};
pub use salvage::{ResponseHead, Salvaged};
pub use uri::{AbsoluteUri, Host, SipUri, TelUri, Uri, UriError};

use grammar::{ascii, is_token, is_wsp, sws, trim_end};
use std::borrow::Cow;
use std::fmt;

/// A SIP method (§7.1; methods are case-sensitive tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method<'a> {
    /// `INVITE` (RFC 3261)
    Invite,
    /// `ACK` (RFC 3261)
    Ack,
    /// `BYE` (RFC 3261)
    Bye,
    /// `CANCEL` (RFC 3261)
    Cancel,
    /// `REGISTER` (RFC 3261)
    Register,
    /// `OPTIONS` (RFC 3261)
    Options,
    /// `INFO` (RFC 6086)
    Info,
    /// `MESSAGE` (RFC 3428)
    Message,
    /// `SUBSCRIBE` (RFC 6665)
    Subscribe,
    /// `NOTIFY` (RFC 6665)
    Notify,
    /// `REFER` (RFC 3515)
    Refer,
    /// `PRACK` (RFC 3262)
    Prack,
    /// `UPDATE` (RFC 3311)
    Update,
    /// `PUBLISH` (RFC 3903)
    Publish,
    /// Any other token (`extension-method`).
    Extension(&'a str),
}

impl<'a> Method<'a> {
    /// Classifies a method token, case-sensitively. Returns `None` if `s` is
    /// not a token.
    pub fn from_token(s: &'a str) -> Option<Method<'a>> {
        if s.is_empty() || !s.bytes().all(is_token) {
            return None;
        }
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "MESSAGE" => Method::Message,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other),
        })
    }

    /// [`Method::from_token`] on raw bytes: the standard methods are
    /// matched without a UTF-8 conversion.
    pub fn from_bytes(b: &'a [u8]) -> Option<Method<'a>> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"MESSAGE" => Method::Message,
            _ => return ascii(b).and_then(Method::from_token),
        })
    }

    /// The method as it goes on the wire.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Message => "MESSAGE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response status code, always within 100–699 (§7.2, §21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    /// A status code, or `None` outside 100–699.
    pub const fn new(code: u16) -> Option<StatusCode> {
        if code >= 100 && code <= 699 {
            Some(StatusCode(code))
        } else {
            None
        }
    }
    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }
    /// `1xx`: provisional.
    pub const fn is_provisional(self) -> bool {
        self.0 < 200
    }
    /// `2xx`: success.
    pub const fn is_success(self) -> bool {
        self.0 >= 200 && self.0 < 300
    }
    /// The class digit (1–6).
    pub const fn class(self) -> u16 {
        self.0 / 100
    }
    /// The reason phrase RFC 3261 §21 gives the code, or `""`.
    pub fn canonical_reason(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            305 => "Use Proxy",
            380 => "Alternative Service",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            485 => "Ambiguous",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            489 => "Bad Event",
            491 => "Request Pending",
            493 => "Undecipherable",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            _ => "",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `Method SP Request-URI SP SIP-Version` (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// The method.
    pub method: Method<'a>,
    /// The Request-URI as written. [`Message::parse`] checks only that it
    /// is a scheme followed by URI characters; like header values it is
    /// parsed on demand ([`RequestLine::parse_uri`]) and fully checked by
    /// [`validate`](validate::validate).
    pub uri: &'a str,
}

impl<'a> RequestLine<'a> {
    /// The Request-URI, parsed (§19.1, §25).
    pub fn parse_uri(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri)
    }
}

/// `SIP-Version SP Status-Code SP Reason-Phrase` (§7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// The status code.
    pub code: StatusCode,
    /// The reason phrase as raw bytes (UTF-8 by the grammar, not checked).
    pub reason: &'a [u8],
}

impl<'a> StatusLine<'a> {
    /// The reason phrase as text (lossy if it is not UTF-8).
    pub fn reason(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.reason)
    }
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// A request.
    Request(RequestLine<'a>),
    /// A response.
    Response(StatusLine<'a>),
}

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No bytes but CRLF keep-alives.
    #[error("no message: empty input or only CRLF")]
    Empty,
    /// The header section does not end with an empty line.
    #[error("header section not terminated by an empty line")]
    Unterminated,
    /// The request line is not `Method SP Request-URI SP SIP-Version`.
    #[error("malformed request line")]
    RequestLine,
    /// The Request-URI is not a URI.
    #[error("malformed Request-URI")]
    RequestUri,
    /// The status line is not `SIP-Version SP Status-Code SP Reason-Phrase`.
    #[error("malformed status line")]
    StatusLine,
    /// A status code outside 100–699 (or not three digits).
    #[error("status code out of range 100-699")]
    StatusCode,
    /// A well-formed version other than SIP/2.0 (answer 505, §8.2.6.1... §21.5.6).
    #[error("SIP version not supported")]
    Version,
    /// A header line that is not `name HCOLON value`.
    #[error("malformed header field at byte {offset}")]
    HeaderField {
        /// Offset of the offending line in the input.
        offset: usize,
    },
    /// A CR not followed by LF, or a LF not preceded by CR.
    #[error("bare CR or LF at byte {offset}")]
    LineEnding {
        /// Offset of the stray octet.
        offset: usize,
    },
    /// The input is 4 GiB or larger.
    #[error("message too large")]
    TooLarge,
    /// Content-Length is not `1*DIGIT` within 32 bits.
    #[error("malformed Content-Length")]
    ContentLength,
    /// More than one Content-Length field (RFC 4475 §3.3.9).
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// Fewer body octets than Content-Length declares (§18.3: answer 400).
    #[error("body truncated: Content-Length {declared}, {available} octets present")]
    Truncated {
        /// The declared length.
        declared: u32,
        /// What was there.
        available: usize,
    },
}

impl ParseError {
    /// The response a UAS owes a request that failed this way (§8.2, §21.5.6):
    /// 505 for a foreign version, else 400.
    pub fn status(&self) -> StatusCode {
        match self {
            ParseError::Version => StatusCode(505),
            _ => StatusCode(400),
        }
    }
}

/// A parsed SIP message borrowing from its input.
///
/// The header values every layer reads (top Via, From, To, Call-ID, CSeq,
/// the Request-URI) are parsed on first use and remembered, so one parse
/// of a message serves the transport, transaction, dialog and endpoint
/// layers without reading those values again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    start: StartLine<'a>,
    headers: Headers<'a>,
    body: &'a [u8],
    content_length: Option<u32>,
    len: usize,
    cache: headers::Cache<'a>,
}

impl<'a> Message<'a> {
    /// Parses one message from a datagram or a framed stream message.
    ///
    /// Leading CRLFs are skipped (§7.5). A missing Content-Length means the
    /// body runs to the end of the input and octets past Content-Length are
    /// ignored (§18.3: datagram rules; [`Message::len`] says where the
    /// message ended). A Content-Length larger than the body is an error.
    pub fn parse(input: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if u32::try_from(input.len()).is_err() {
            return Err(ParseError::TooLarge);
        }
        let mut start = 0;
        while input[start..].starts_with(b"\r\n") {
            start += 2;
        }
        let buf = &input[start..];
        if buf.is_empty() {
            return Err(ParseError::Empty);
        }
        let line_end = crlf_from(buf, 0)?;
        let first = &buf[..line_end];
        let start_line = if first.len() >= 4 && first[..4].eq_ignore_ascii_case(b"SIP/") {
            StartLine::Response(status_line(first)?)
        } else {
            StartLine::Request(request_line(first)?)
        };
        let mut headers = Headers::new(input);
        let mut content_length = None;
        let mut pos = line_end + 2;
        loop {
            let rest = &buf[pos..];
            match rest {
                [b'\r', b'\n', ..] => {
                    pos += 2;
                    break;
                }
                [] | [b'\r'] => return Err(ParseError::Unterminated),
                _ => {}
            }
            // field-name HCOLON (§7.3.1): HCOLON = *( SP / HTAB ) ":" SWS
            let mut name_len = name_run(rest);
            while name_len < rest.len() && is_token(rest[name_len]) {
                name_len += 1;
            }
            let mut k = name_len;
            while k < rest.len() && is_wsp(rest[k]) {
                k += 1;
            }
            if name_len == 0 || rest.get(k) != Some(&b':') {
                return Err(ParseError::HeaderField { offset: start + pos });
            }
            let mut vs = pos + k + 1;
            while buf.get(vs).is_some_and(|&c| is_wsp(c)) {
                vs += 1;
            }
            // §7.3.1: a line starting with SP or HTAB continues the value.
            let mut end = crlf_from(buf, vs).map_err(|e| shift(e, start))?;
            while buf.get(end + 2).is_some_and(|&c| is_wsp(c)) {
                end = crlf_from(buf, end + 3).map_err(|e| shift(e, start))?;
            }
            let kind = HeaderName::from_token(&rest[..name_len]);
            // The value may begin on a continuation line: trim folds too.
            let raw = &buf[vs..end];
            let (value, value_start) = if raw.first() == Some(&b'\r') {
                let v = sws(raw);
                (trim_end(v), end - v.len())
            } else {
                (trim_end(raw), vs)
            };
            if kind == HeaderName::ContentLength {
                if content_length.is_some() {
                    return Err(ParseError::DuplicateContentLength);
                }
                content_length = Some(grammar::whole_u32(value).ok_or(ParseError::ContentLength)?);
            }
            headers.push(kind, (start + pos, name_len), (start + value_start, value.len()));
            pos = end + 2;
        }
        let available = buf.len() - pos;
        let body_len = match content_length {
            Some(cl) => {
                let n = cl as usize;
                if n > available {
                    return Err(ParseError::Truncated { declared: cl, available });
                }
                n
            }
            None => available,
        };
        Ok(Message {
            start: start_line,
            headers,
            body: &buf[pos..pos + body_len],
            content_length,
            len: start + pos + body_len,
            cache: headers::Cache::default(),
        })
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }
    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }
    /// The request line, for a request.
    pub fn request_line(&self) -> Option<&RequestLine<'a>> {
        match &self.start {
            StartLine::Request(r) => Some(r),
            StartLine::Response(_) => None,
        }
    }
    /// The status line, for a response.
    pub fn status_line(&self) -> Option<&StatusLine<'a>> {
        match &self.start {
            StartLine::Response(s) => Some(s),
            StartLine::Request(_) => None,
        }
    }
    /// The method of a request.
    pub fn method(&self) -> Option<&Method<'a>> {
        self.request_line().map(|r| &r.method)
    }
    /// The Request-URI of a request, parsed on demand like a header value.
    pub fn request_uri(&self) -> Option<Result<Uri<'a>, UriError>> {
        let rl = self.request_line()?;
        Some(*self.cache.request_uri.get_or_init(|| rl.parse_uri()))
    }
    /// The status code of a response.
    pub fn status(&self) -> Option<StatusCode> {
        self.status_line().map(|s| s.code)
    }
    /// All header fields, in order.
    pub fn headers(&self) -> &Headers<'a> {
        &self.headers
    }
    /// The body (exactly Content-Length octets when the header is present).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// The Content-Length value, if the header is present.
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }
    /// How many input octets the message occupied (leading CRLFs included,
    /// ignored trailing datagram octets excluded).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the message occupied no octets (never true for a parsed message).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn shift(e: ParseError, by: usize) -> ParseError {
    match e {
        ParseError::LineEnding { offset } => ParseError::LineEnding { offset: offset + by },
        ParseError::HeaderField { offset } => ParseError::HeaderField { offset: offset + by },
        e => e,
    }
}

/// Offset of the first CR or LF at or after `from`.
///
/// Lines are short, so instead of a vector search per line this looks at
/// sixteen octets at a time for any octet below 0x0E (SWAR: the lowest
/// flagged byte is always a real one), then checks which it was; TAB and
/// other control octets inside a value just resume the scan.
#[inline]
fn find_line_end(buf: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u128 = u128::from_le_bytes([1; 16]);
    const HIGH: u128 = u128::from_le_bytes([0x80; 16]);
    while let Some(chunk) = buf.get(from..).and_then(<[u8]>::first_chunk::<16>) {
        let w = u128::from_le_bytes(*chunk);
        let mut hits = w.wrapping_sub(ONES * 0x0e) & !w & HIGH;
        while hits != 0 {
            let at = from + (hits.trailing_zeros() / 8) as usize;
            if matches!(buf[at], b'\r' | b'\n') {
                return Some(at);
            }
            hits &= hits - 1;
        }
        from += 16;
    }
    buf.get(from..)?.iter().position(|&c| c == b'\r' || c == b'\n').map(|k| from + k)
}

/// How many leading octets of `s` are letters or `-`, counted eight at a
/// time (SWAR); the caller finishes the token byte by byte. Most header
/// names are made of nothing else.
#[inline]
fn name_run(s: &[u8]) -> usize {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let mut n = 0;
    while let Some(chunk) = s.get(n..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let x = w | (L * 0x20);
        // Per byte, with the high bit clear: x >= 'a', x > 'z', w == '-'.
        let ge_a = (x & !H).wrapping_add(L * (0x80 - 0x61));
        let gt_z = (x & !H).wrapping_add(L * (0x80 - 0x7b));
        let d = w ^ (L * 0x2d);
        let dash = !(((d & !H).wrapping_add(!H)) | d | !H);
        let ok = ((ge_a & !gt_z) | dash) & !w & H;
        if ok != H {
            return n + ((!ok & H).trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n
}

/// Offset of the CRLF that ends the line containing `from`; a bare CR or
/// LF is an error.
#[inline]
fn crlf_from(buf: &[u8], from: usize) -> Result<usize, ParseError> {
    let at = find_line_end(buf, from).ok_or(ParseError::Unterminated)?;
    match (buf[at], buf.get(at + 1)) {
        (b'\r', Some(b'\n')) => Ok(at),
        (b'\r', None) => Err(ParseError::Unterminated),
        _ => Err(ParseError::LineEnding { offset: at }),
    }
}

/// Offset of the CRLF ending the line that starts at `from`.
fn line_end(buf: &[u8], from: usize) -> Result<usize, ParseError> {
    match memchr::memchr2(b'\r', b'\n', &buf[from..]) {
        None => Err(ParseError::Unterminated),
        Some(k) => {
            let at = from + k;
            match (buf[at], buf.get(at + 1)) {
                (b'\r', Some(b'\n')) => Ok(at),
                (b'\r', None) => Err(ParseError::Unterminated),
                _ => Err(ParseError::LineEnding { offset: at }),
            }
        }
    }
}

/// Offset of the CRLF ending a header value that may be folded over several
/// lines (§7.3.1: a line starting with SP or HTAB continues the previous one).
fn value_end(buf: &[u8], mut from: usize) -> Result<usize, ParseError> {
    loop {
        let at = line_end(buf, from)?;
        match buf.get(at + 2) {
            Some(&c) if is_wsp(c) => from = at + 3,
            Some(_) => return Ok(at),
            None => return Err(ParseError::Unterminated),
        }
    }
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT` (§25), case-insensitive.
fn version(v: &[u8]) -> Result<(), ParseError> {
    if v == b"SIP/2.0" || v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let well_formed = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && matches!(v[4..].iter().position(|&c| c == b'.'), Some(d) if d > 0
            && d + 5 < v.len()
            && v[4..4 + d].iter().all(u8::is_ascii_digit)
            && v[5 + d..].iter().all(u8::is_ascii_digit));
    Err(if well_formed { ParseError::Version } else { ParseError::StatusLine })
}

fn request_line(line: &[u8]) -> Result<RequestLine<'_>, ParseError> {
    // Exactly one SP between the three elements (§7.1); none at the end.
    let mut parts = line.split(|&c| c == b' ');
    let (Some(m), Some(u), Some(v), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::RequestLine);
    };
    let method = Method::from_bytes(m).ok_or(ParseError::RequestLine)?;
    match version(v) {
        Ok(()) => {}
        Err(ParseError::Version) => return Err(ParseError::Version),
        Err(_) => return Err(ParseError::RequestLine),
    }
    // `scheme ":" 1*URI-character` — enough to frame and route a 400; the
    // full grammar is checked lazily (RFC 4475 §3.1.2.7: no '<', no LWS).
    let scheme = u.iter().take_while(|&&c| grammar::is_scheme_char(c)).count();
    let well_formed = u.first().is_some_and(u8::is_ascii_alphabetic)
        && u.get(scheme) == Some(&b':')
        && u.len() > scheme + 1
        && u.iter().all(|&c| grammar::is_uri_char(c));
    let uri = ascii(u).filter(|_| well_formed).ok_or(ParseError::RequestUri)?;
    Ok(RequestLine { method, uri })
}

fn status_line(line: &[u8]) -> Result<StatusLine<'_>, ParseError> {
    let Some(sp) = line.iter().position(|&c| c == b' ') else {
        return Err(ParseError::StatusLine);
    };
    version(&line[..sp])?;
    let rest = &line[sp + 1..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits != 3 {
        return Err(if digits == 0 { ParseError::StatusLine } else { ParseError::StatusCode });
    }
    let code = rest[..3].iter().fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
    let code = StatusCode::new(code).ok_or(ParseError::StatusCode)?;
    // `SP Reason-Phrase`; a missing SP and phrase is tolerated (RFC 4475 §3.1.1.13).
    let reason = match &rest[3..] {
        [] => &[][..],
        [b' ', reason @ ..] => reason,
        _ => return Err(ParseError::StatusLine),
    };
    Ok(StatusLine { code, reason })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod swar_tests {
    use super::*;

    #[test]
    fn name_run_counts_letters_and_dashes() {
        for s in [
            &b"Via: x"[..],
            b"Content-Length: 0",
            b"Max-Forwards:",
            b"X_Y",
            b"abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ:",
        ] {
            let want = s.iter().take_while(|c| c.is_ascii_alphabetic() || **c == b'-').count();
            let got = name_run(s);
            // Exact while whole words remain; the caller finishes the tail.
            assert!(got == want || (got < want && s.len() - got < 8), "{}: {got}", String::from_utf8_lossy(s));
        }
        // Every single octet in every position of a word.
        for c in 0..=255u8 {
            for at in 0..8 {
                let mut w = *b"abcdefgh:";
                w[at] = c;
                let want = w.iter().take_while(|c| c.is_ascii_alphabetic() || **c == b'-').count();
                assert_eq!(name_run(&w), want, "octet {c:#x} at {at}");
            }
        }
    }

    #[test]
    fn line_end_finds_cr_and_lf_past_other_controls() {
        for len in 0..40 {
            for ctl in [b'\t', 0u8, 0x0b, 0x0c] {
                let mut v = vec![b'a'; len];
                if len > 3 {
                    v[len / 2] = ctl;
                }
                v.extend_from_slice(b"\r\nrest");
                assert_eq!(find_line_end(&v, 0), Some(len));
                v[len] = b'\n';
                assert_eq!(find_line_end(&v, 0), Some(len));
            }
        }
        assert_eq!(find_line_end(b"no end here", 0), None);
        assert_eq!(find_line_end(b"ab\r", 5), None);
    }
}
