//! SDP, the Session Description Protocol (RFC 8866): a zero-copy parser
//! and a writer, owned descriptions with a typed builder, and the
//! offer/answer model of RFC 3264 (issue 21).
//!
//! [`SessionDescription::parse`] borrows every value from the input; its
//! [`Display`](std::fmt::Display) writes the description back in the
//! order RFC 8866 §5 requires, lines ending in CRLF.
//!
//! ```
//! use sipline::sdp::{Direction, SessionDescription};
//!
//! let offer = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n\
//!     c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 101\r\n\
//!     a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";
//! let sdp = SessionDescription::parse(offer)?;
//! let audio = &sdp.media[0];
//! assert_eq!((audio.kind, audio.port, audio.formats.as_slice()), ("audio", 49170, &["0", "101"][..]));
//! assert_eq!(audio.rtpmap("101").map(|r| r.encoding), Some("telephone-event"));
//! assert_eq!(audio.direction(), Direction::SendOnly);
//! assert_eq!(sdp.to_string().as_bytes(), &offer[..]);
//! # Ok::<(), sipline::sdp::SdpError>(())
//! ```
//!
//! [`OwnedDescription`] is the owned form (`OwnedDescription::from(&sdp)`
//! keeps a parsed one; [`OwnedOrigin::new`], [`OwnedMedia::with_codec`]
//! and the other `with_*` methods build one), written by the same writer.
//!
//! Offer/answer (RFC 3264): our [`Capabilities`] list the [`Codec`]s we
//! support per media type; [`answer`] answers an offer (§6: one `m=` line
//! per offered one, unsupported streams at port 0, the offer's payload
//! type numbers, directions mirrored); [`offer`] makes an offer and
//! [`negotiated`] reads the answer to it (codec, remote RTP address and
//! direction per stream). A [`LocalSession`] owns our `o=` line (§8: the
//! version goes up by one exactly when the description changes) and
//! puts the session on hold and back (§8.4).

use std::fmt;

mod builder;
mod codec;
mod offer_answer;

pub use builder::{OwnedAttribute, OwnedConnection, OwnedDescription, OwnedMedia, OwnedOrigin};
pub use codec::{static_payload_type, Capabilities, Codec, Encoding, MediaCapability};
pub use offer_answer::{
    answer, held, negotiated, offer, resumed, ActiveStream, LocalSession, Negotiated, NegotiatedCodec,
    OfferAnswerError, Stream,
};

/// Why a description was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Not UTF-8 (RFC 8866 §5: the text is UTF-8 by default).
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// A line is not `<type>=<value>` with a one-letter type (§5).
    #[error("SDP line {line} is not <type>=<value>")]
    Malformed {
        /// The line number, from 1.
        line: usize,
    },
    /// A required line is missing or out of order (§5: `v=`, `o=`, `s=`
    /// first, then at least one `t=`; `m=` sections last).
    #[error("SDP line {line}: {expected} expected")]
    Order {
        /// The line number, from 1 (one past the end when missing).
        line: usize,
        /// What the grammar wants there.
        expected: &'static str,
    },
    /// `v=` other than 0.
    #[error("SDP version is not 0")]
    Version,
    /// A field of an `o=`, `c=`, `t=` or `m=` line is missing or not a
    /// number where one is due.
    #[error("SDP line {line}: bad {field}")]
    Field {
        /// The line number, from 1.
        line: usize,
        /// Which field.
        field: &'static str,
    },
    /// A line type this parser does not know (§5: such a description is
    /// ignored entirely).
    #[error("SDP line {line}: unknown type {kind:?}")]
    UnknownType {
        /// The line number, from 1.
        line: usize,
        /// The type letter.
        kind: char,
    },
}

/// The `o=` line (RFC 8866 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The user's login, or `-`.
    pub username: &'a str,
    /// The session id (digits).
    pub session_id: &'a str,
    /// The version of this description: an answer or a re-offer that
    /// changes anything increments it (RFC 3264 §8).
    pub session_version: u64,
    /// `IN`.
    pub net_type: &'a str,
    /// `IP4` or `IP6`.
    pub addr_type: &'a str,
    /// The address (or name) of the originator.
    pub address: &'a str,
}

/// A `c=` line (RFC 8866 §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// `IN`.
    pub net_type: &'a str,
    /// `IP4` or `IP6`.
    pub addr_type: &'a str,
    /// The address, with any `/ttl/count` suffix as written.
    pub address: &'a str,
}

/// An `a=` line (RFC 8866 §5.13): a property (`a=sendonly`) or a value
/// (`a=rtpmap:0 PCMU/8000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The name, before any `:`.
    pub name: &'a str,
    /// The value after the `:`, if any.
    pub value: Option<&'a str>,
}

/// An `a=rtpmap` value (RFC 8866 §6.6): a payload type's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// The payload type.
    pub payload: &'a str,
    /// The encoding name (`PCMU`, `opus`, `telephone-event`…).
    pub encoding: &'a str,
    /// The clock rate, Hz.
    pub clock_rate: u32,
    /// The encoding parameters (audio: the channels), if given.
    pub parameters: Option<&'a str>,
}

/// Which way media flow (RFC 8866 §6.7; RFC 3264 §5.1, §8.4 hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways (the default).
    SendRecv,
    /// Only from the describer.
    SendOnly,
    /// Only towards the describer.
    RecvOnly,
    /// Neither way.
    Inactive,
}

impl Direction {
    /// The attribute's name (`sendrecv`, `sendonly`, `recvonly`,
    /// `inactive`).
    pub fn name(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction that sends when `send` and receives when `receive`.
    pub fn from_flags(send: bool, receive: bool) -> Direction {
        match (send, receive) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether the describer sends.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the describer receives.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same flow seen from the other side: `sendonly` ↔ `recvonly`
    /// (RFC 3264 §6.1).
    #[must_use]
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// What both allow: sends only if both send, receives only if both
    /// receive.
    #[must_use]
    pub fn and(self, other: Direction) -> Direction {
        Direction::from_flags(self.sends() && other.sends(), self.receives() && other.receives())
    }
}

/// One media description: an `m=` line and what follows it (§5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// `audio`, `video`, `text`, `application`, `message`…
    pub kind: &'a str,
    /// The transport port; 0: the stream is rejected or removed (RFC 3264
    /// §6, §8.2).
    pub port: u16,
    /// The number of ports (`m=video 49170/2 …`), if given.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`…
    pub proto: &'a str,
    /// The formats: payload types for RTP.
    pub formats: Vec<&'a str>,
    /// The `i=` line, if any.
    pub title: Option<&'a str>,
    /// The `c=` lines of this media.
    pub connections: Vec<Connection<'a>>,
    /// The `b=` lines, as written.
    pub bandwidths: Vec<&'a str>,
    /// The `a=` lines, in order.
    pub attributes: Vec<Attribute<'a>>,
}

impl<'a> Media<'a> {
    /// The first attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute<'a>> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The `a=rtpmap` of payload type `payload`, if given (static payload
    /// types may have none).
    pub fn rtpmap(&self, payload: &str) -> Option<RtpMap<'a>> {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| parse_rtpmap(a.value?))
            .find(|r| r.payload == payload)
    }

    /// The media's direction attribute, `sendrecv` when none is given
    /// (RFC 8866 §6.7: the session-level one applies then; see
    /// [`SessionDescription::direction_of`]).
    pub fn direction(&self) -> Direction {
        direction_in(&self.attributes).unwrap_or(Direction::SendRecv)
    }
}

/// A parsed session description (RFC 8866 §5), borrowing its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription<'a> {
    /// `o=`.
    pub origin: Origin<'a>,
    /// `s=` (`-` when the session has no name).
    pub name: &'a str,
    /// `i=`, if any.
    pub info: Option<&'a str>,
    /// `u=`, if any.
    pub uri: Option<&'a str>,
    /// `e=` lines.
    pub emails: Vec<&'a str>,
    /// `p=` lines.
    pub phones: Vec<&'a str>,
    /// The session-level `c=`, if any.
    pub connection: Option<Connection<'a>>,
    /// Session-level `b=` lines, as written.
    pub bandwidths: Vec<&'a str>,
    /// `t=` lines: (start, stop), NTP seconds (0 0: unbounded).
    pub times: Vec<(u64, u64)>,
    /// `r=` and `z=` lines, as written (type letter and value).
    pub repeats: Vec<(char, &'a str)>,
    /// `k=`, if any (obsolete, kept to write back).
    pub key: Option<&'a str>,
    /// Session-level `a=` lines, in order.
    pub attributes: Vec<Attribute<'a>>,
    /// The media descriptions, in order (their index is their identity in
    /// offer/answer, RFC 3264 §6).
    pub media: Vec<Media<'a>>,
}

impl<'a> SessionDescription<'a> {
    /// Parses `bytes` (lines ending in CRLF, or LF as §5 allows
    /// receivers to take). Values are borrowed.
    pub fn parse(bytes: &'a [u8]) -> Result<SessionDescription<'a>, SdpError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SdpError::NotUtf8)?;
        let mut lines = Vec::new();
        for (n, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(SdpError::Malformed { line: n + 1 });
            }
            lines.push((n + 1, char::from(b[0]), &line[2..]));
        }
        Parser { lines, at: 0 }.description()
    }

    /// The direction of media `index`: its own attribute, else the
    /// session-level one, else `sendrecv` (RFC 8866 §6.7).
    pub fn direction_of(&self, index: usize) -> Option<Direction> {
        let m = self.media.get(index)?;
        Some(direction_in(&m.attributes).or_else(|| direction_in(&self.attributes)).unwrap_or(Direction::SendRecv))
    }

    /// The connection address of media `index`: its own `c=`, else the
    /// session's.
    pub fn connection_of(&self, index: usize) -> Option<Connection<'a>> {
        let m = self.media.get(index)?;
        m.connections.first().copied().or(self.connection)
    }
}

struct Parser<'a> {
    lines: Vec<(usize, char, &'a str)>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<(usize, char, &'a str)> {
        self.lines.get(self.at).copied()
    }

    fn end_line(&self) -> usize {
        self.lines.last().map_or(1, |l| l.0 + 1)
    }

    /// The next line, which must be of type `kind`.
    fn need(&mut self, kind: char, expected: &'static str) -> Result<(usize, &'a str), SdpError> {
        match self.peek() {
            Some((n, k, v)) if k == kind => {
                self.at += 1;
                Ok((n, v))
            }
            Some((n, ..)) => Err(SdpError::Order { line: n, expected }),
            None => Err(SdpError::Order { line: self.end_line(), expected }),
        }
    }

    /// The next line's value if it is of type `kind`.
    fn optional(&mut self, kind: char) -> Option<&'a str> {
        match self.peek() {
            Some((_, k, v)) if k == kind => {
                self.at += 1;
                Some(v)
            }
            _ => None,
        }
    }

    fn many(&mut self, kind: char) -> Vec<&'a str> {
        std::iter::from_fn(|| self.optional(kind)).collect()
    }

    fn description(mut self) -> Result<SessionDescription<'a>, SdpError> {
        // §5: v=, o=, s=, then the optional lines in their order.
        let (_, v) = self.need('v', "v=")?;
        if v != "0" {
            return Err(SdpError::Version);
        }
        let (n, o) = self.need('o', "o=")?;
        let origin = parse_origin(n, o)?;
        let (_, name) = self.need('s', "s=")?;
        let info = self.optional('i');
        let uri = self.optional('u');
        let emails = self.many('e');
        let phones = self.many('p');
        let connection = match self.peek() {
            Some((n, 'c', c)) => {
                self.at += 1;
                Some(parse_connection(n, c)?)
            }
            _ => None,
        };
        let bandwidths = self.many('b');
        let mut times = Vec::new();
        let mut repeats = Vec::new();
        while let Some((n, 't', t)) = self.peek() {
            self.at += 1;
            times.push(parse_time(n, t)?);
            while let Some((_, k @ ('r' | 'z'), r)) = self.peek() {
                self.at += 1;
                repeats.push((k, r));
            }
        }
        if times.is_empty() {
            let line = self.peek().map_or_else(|| self.end_line(), |l| l.0);
            return Err(SdpError::Order { line, expected: "t=" });
        }
        let key = self.optional('k');
        let attributes = self.many('a').into_iter().map(parse_attribute).collect();
        let mut media = Vec::new();
        while let Some((n, k, m)) = self.peek() {
            if k != 'm' {
                return Err(unexpected(n, k));
            }
            self.at += 1;
            media.push(self.media(n, m)?);
        }
        Ok(SessionDescription {
            origin,
            name,
            info,
            uri,
            emails,
            phones,
            connection,
            bandwidths,
            times,
            repeats,
            key,
            attributes,
            media,
        })
    }

    fn media(&mut self, n: usize, m: &'a str) -> Result<Media<'a>, SdpError> {
        let mut fields = m.split(' ');
        let bad = |field| SdpError::Field { line: n, field };
        let kind = fields.next().filter(|k| !k.is_empty()).ok_or(bad("media"))?;
        let port_field = fields.next().ok_or(bad("port"))?;
        let (port, port_count) = match port_field.split_once('/') {
            Some((p, c)) => (p, Some(c.parse().map_err(|_| bad("port count"))?)),
            None => (port_field, None),
        };
        let port = port.parse().map_err(|_| bad("port"))?;
        let proto = fields.next().filter(|p| !p.is_empty()).ok_or(bad("proto"))?;
        let formats: Vec<&str> = fields.filter(|f| !f.is_empty()).collect();
        let title = self.optional('i');
        let mut connections = Vec::new();
        while let Some((cn, 'c', c)) = self.peek() {
            self.at += 1;
            connections.push(parse_connection(cn, c)?);
        }
        let bandwidths = self.many('b');
        let _ = self.optional('k');
        let attributes = self.many('a').into_iter().map(parse_attribute).collect();
        Ok(Media { kind, port, port_count, proto, formats, title, connections, bandwidths, attributes })
    }
}

fn unexpected(line: usize, kind: char) -> SdpError {
    if "vosiuepcbtrzkam".contains(kind) {
        SdpError::Order { line, expected: "m= or the end" }
    } else {
        SdpError::UnknownType { line, kind }
    }
}

fn parse_origin(line: usize, o: &str) -> Result<Origin<'_>, SdpError> {
    let f: Vec<&str> = o.split(' ').collect();
    let [username, session_id, version, net_type, addr_type, address] = f[..] else {
        return Err(SdpError::Field { line, field: "origin" });
    };
    let session_version = version.parse().map_err(|_| SdpError::Field { line, field: "session version" })?;
    Ok(Origin { username, session_id, session_version, net_type, addr_type, address })
}

fn parse_connection(line: usize, c: &str) -> Result<Connection<'_>, SdpError> {
    let f: Vec<&str> = c.split(' ').collect();
    let [net_type, addr_type, address] = f[..] else {
        return Err(SdpError::Field { line, field: "connection" });
    };
    Ok(Connection { net_type, addr_type, address })
}

fn parse_time(line: usize, t: &str) -> Result<(u64, u64), SdpError> {
    let bad = SdpError::Field { line, field: "time" };
    let (start, stop) = t.split_once(' ').ok_or(bad)?;
    Ok((start.parse().map_err(|_| bad)?, stop.parse().map_err(|_| bad)?))
}

fn parse_attribute(a: &str) -> Attribute<'_> {
    match a.split_once(':') {
        Some((name, value)) => Attribute { name, value: Some(value) },
        None => Attribute { name: a, value: None },
    }
}

fn parse_rtpmap(value: &str) -> Option<RtpMap<'_>> {
    let (payload, rest) = value.split_once(' ')?;
    let mut parts = rest.trim().splitn(3, '/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse().ok()?;
    Some(RtpMap { payload, encoding, clock_rate, parameters: parts.next() })
}

pub(crate) fn direction_in(attributes: &[Attribute<'_>]) -> Option<Direction> {
    attributes.iter().find_map(|a| match (a.name, a.value) {
        ("sendrecv", None) => Some(Direction::SendRecv),
        ("sendonly", None) => Some(Direction::SendOnly),
        ("recvonly", None) => Some(Direction::RecvOnly),
        ("inactive", None) => Some(Direction::Inactive),
        _ => None,
    })
}

impl fmt::Display for Connection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c={} {} {}\r\n", self.net_type, self.addr_type, self.address)
    }
}

impl fmt::Display for Attribute<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Some(v) => write!(f, "a={}:{v}\r\n", self.name),
            None => write!(f, "a={}\r\n", self.name),
        }
    }
}

impl fmt::Display for Media<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.kind, self.port)?;
        if let Some(c) = self.port_count {
            write!(f, "/{c}")?;
        }
        write!(f, " {}", self.proto)?;
        for format in &self.formats {
            write!(f, " {format}")?;
        }
        f.write_str("\r\n")?;
        if let Some(i) = self.title {
            write!(f, "i={i}\r\n")?;
        }
        for c in &self.connections {
            write!(f, "{c}")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        self.attributes.iter().try_for_each(|a| write!(f, "{a}"))
    }
}

impl fmt::Display for SessionDescription<'_> {
    /// The description in RFC 8866 §5's order, every line ending in CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        f.write_str("v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\ns={}\r\n",
            o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address, self.name
        )?;
        if let Some(i) = self.info {
            write!(f, "i={i}\r\n")?;
        }
        if let Some(u) = self.uri {
            write!(f, "u={u}\r\n")?;
        }
        for e in &self.emails {
            write!(f, "e={e}\r\n")?;
        }
        for p in &self.phones {
            write!(f, "p={p}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "{c}")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        for (start, stop) in &self.times {
            write!(f, "t={start} {stop}\r\n")?;
        }
        for (k, r) in &self.repeats {
            write!(f, "{k}={r}\r\n")?;
        }
        if let Some(k) = self.key {
            write!(f, "k={k}\r\n")?;
        }
        for a in &self.attributes {
            write!(f, "{a}")?;
        }
        self.media.iter().try_for_each(|m| write!(f, "{m}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8866 §5's example, byte for byte.
    const RFC_EXAMPLE: &str = "v=0\r\n\
        o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\r\n\
        s=Call to John Smith\r\n\
        i=SDP Offer #1\r\n\
        u=http://www.jdoe.example.com/home.html\r\n\
        e=Jane Doe <jane@jdoe.example.com>\r\n\
        p=+1 617 555-6011\r\n\
        c=IN IP4 198.51.100.1\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 0\r\n\
        m=audio 49180 RTP/AVP 0\r\n\
        m=video 51372 RTP/AVP 99\r\n\
        c=IN IP6 2001:db8::2\r\n\
        a=rtpmap:99 h263-1998/90000\r\n";

    #[test]
    fn the_rfc_8866_example_parses_and_writes_back_byte_for_byte() {
        let sdp = SessionDescription::parse(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(sdp.origin.session_version, 3_724_394_405);
        assert_eq!(sdp.name, "Call to John Smith");
        assert_eq!(sdp.media.len(), 3);
        assert_eq!(sdp.connection_of(0).map(|c| c.address), Some("198.51.100.1"));
        assert_eq!(sdp.connection_of(2).map(|c| c.address), Some("2001:db8::2"));
        let video = sdp.media[2].rtpmap("99").unwrap();
        assert_eq!((video.encoding, video.clock_rate, video.parameters), ("h263-1998", 90_000, None));
        assert_eq!(sdp.to_string(), RFC_EXAMPLE);
    }

    #[test]
    fn directions_fall_back_from_media_to_session_to_sendrecv_6_7() {
        let text =
            "v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\na=recvonly\nm=audio 1 RTP/AVP 0\nm=audio 2 RTP/AVP 0\na=inactive\n";
        let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.direction_of(0), Some(Direction::RecvOnly));
        assert_eq!(sdp.direction_of(1), Some(Direction::Inactive));
        assert_eq!(sdp.media[0].direction(), Direction::SendRecv);
        assert_eq!(sdp.direction_of(2), None);
    }

    #[test]
    fn a_rejected_stream_has_port_0_3264_6() {
        let text = "v=0\r\no=- 1 2 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 31\r\n";
        let sdp = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.media[0].port, 0);
    }

    #[test]
    fn bad_descriptions_get_typed_errors() {
        fn parse(t: &str) -> Result<SessionDescription<'_>, SdpError> {
            SessionDescription::parse(t.as_bytes())
        }
        assert_eq!(parse("v=1\r\n"), Err(SdpError::Version));
        assert_eq!(parse("o=- 1 1 IN IP4 h\r\n"), Err(SdpError::Order { line: 1, expected: "v=" }));
        assert_eq!(parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n"), Err(SdpError::Order { line: 4, expected: "t=" }));
        assert_eq!(parse("v=0\r\no=- 1 x IN IP4 h\r\n"), Err(SdpError::Field { line: 2, field: "session version" }));
        assert_eq!(parse("v=0\r\nbogus\r\n"), Err(SdpError::Malformed { line: 2 }));
        assert_eq!(
            parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nx=1\r\n"),
            Err(SdpError::UnknownType { line: 5, kind: 'x' })
        );
        assert_eq!(
            parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\ns=late\r\n"),
            Err(SdpError::Order { line: 6, expected: "m= or the end" })
        );
        assert_eq!(
            parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n"),
            Err(SdpError::Field { line: 5, field: "port" })
        );
        assert_eq!(SessionDescription::parse(&[0xff, 0xfe]), Err(SdpError::NotUtf8));
    }

    proptest::proptest! {
        /// Any bytes: a description or a typed error, never a panic; and
        /// what parses writes back to text that parses to the same.
        #[test]
        fn any_input_parses_or_is_refused_and_round_trips(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("[vosiuepcbtrzkam]=[ -~]{0,30}").unwrap(),
                    proptest::string::string_regex("m=(audio|video) [0-9]{1,5}(/[0-9])? RTP/AVP( [0-9]{1,3}){0,3}").unwrap(),
                    proptest::string::string_regex("a=(rtpmap:[0-9]{1,3} [a-zA-Z]{1,8}/[0-9]{1,6}|sendonly|inactive|x:y)").unwrap(),
                    proptest::string::string_regex("[ -~]{0,20}").unwrap(),
                ],
                0..12,
            )
        ) {
            let head = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n";
            for text in [lines.join("\r\n"), format!("{head}{}", lines.join("\r\n"))] {
                if let Ok(sdp) = SessionDescription::parse(text.as_bytes()) {
                    let written = sdp.to_string();
                    let again = SessionDescription::parse(written.as_bytes()).expect("what was written parses");
                    proptest::prop_assert_eq!(again, sdp);
                }
            }
        }
    }
}
