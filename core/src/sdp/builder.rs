//! Owned session descriptions and a typed way to build them (RFC 8866 §5).
//!
//! [`OwnedDescription`] mirrors [`SessionDescription`] field for field
//! with owned strings, so an application can keep a description after the
//! bytes it was parsed from are gone (`OwnedDescription::from(&parsed)`),
//! or build one from typed parts ([`OwnedOrigin::new`],
//! [`OwnedConnection::ip`], [`OwnedMedia::with_codec`]…). It is written
//! by the same writer as the borrowed form: its `Display` goes through
//! [`OwnedDescription::borrowed`].

use std::fmt;
use std::net::IpAddr;

use super::codec::Codec;
use super::{direction_in, Attribute, Connection, Direction, Media, Origin, SdpError, SessionDescription};

/// An owned `o=` line (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedOrigin {
    /// The user's login, or `-`.
    pub username: String,
    /// The session id (digits).
    pub session_id: String,
    /// The version of the description (RFC 3264 §8: incremented by one
    /// each time it changes; see [`LocalSession`](super::LocalSession)).
    pub session_version: u64,
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// The address of the originator.
    pub address: String,
}

impl OwnedOrigin {
    /// An origin for an IPv4 or IPv6 address (`IN IP4`/`IN IP6`). An
    /// empty `username` is written `-` (RFC 8866 §5.2).
    pub fn new(username: impl Into<String>, session_id: u64, session_version: u64, address: IpAddr) -> Self {
        let username = username.into();
        let username = if username.is_empty() || username.contains(' ') { "-".to_owned() } else { username };
        let c = OwnedConnection::ip(address);
        OwnedOrigin {
            username,
            session_id: session_id.to_string(),
            session_version,
            net_type: c.net_type,
            addr_type: c.addr_type,
            address: c.address,
        }
    }

    /// The borrowed form.
    pub fn borrowed(&self) -> Origin<'_> {
        Origin {
            username: &self.username,
            session_id: &self.session_id,
            session_version: self.session_version,
            net_type: &self.net_type,
            addr_type: &self.addr_type,
            address: &self.address,
        }
    }
}

impl From<&Origin<'_>> for OwnedOrigin {
    fn from(o: &Origin<'_>) -> Self {
        OwnedOrigin {
            username: o.username.to_owned(),
            session_id: o.session_id.to_owned(),
            session_version: o.session_version,
            net_type: o.net_type.to_owned(),
            addr_type: o.addr_type.to_owned(),
            address: o.address.to_owned(),
        }
    }
}

/// An owned `c=` line (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedConnection {
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// The address, with any `/ttl/count` suffix.
    pub address: String,
}

impl OwnedConnection {
    /// `c=IN IP4 <v4>` or `c=IN IP6 <v6>`.
    pub fn ip(address: IpAddr) -> Self {
        let addr_type = if address.is_ipv4() { "IP4" } else { "IP6" };
        OwnedConnection { net_type: "IN".to_owned(), addr_type: addr_type.to_owned(), address: address.to_string() }
    }

    /// The borrowed form.
    pub fn borrowed(&self) -> Connection<'_> {
        Connection { net_type: &self.net_type, addr_type: &self.addr_type, address: &self.address }
    }
}

impl From<&Connection<'_>> for OwnedConnection {
    fn from(c: &Connection<'_>) -> Self {
        OwnedConnection {
            net_type: c.net_type.to_owned(),
            addr_type: c.addr_type.to_owned(),
            address: c.address.to_owned(),
        }
    }
}

/// An owned `a=` line (RFC 8866 §5.13).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedAttribute {
    /// The name, before any `:`.
    pub name: String,
    /// The value after the `:`, if any.
    pub value: Option<String>,
}

impl OwnedAttribute {
    /// A property attribute (`a=sendonly`).
    pub fn property(name: impl Into<String>) -> Self {
        OwnedAttribute { name: name.into(), value: None }
    }

    /// A value attribute (`a=ptime:20`).
    pub fn value(name: impl Into<String>, value: impl Into<String>) -> Self {
        OwnedAttribute { name: name.into(), value: Some(value.into()) }
    }

    /// The borrowed form.
    pub fn borrowed(&self) -> Attribute<'_> {
        Attribute { name: &self.name, value: self.value.as_deref() }
    }
}

impl From<&Attribute<'_>> for OwnedAttribute {
    fn from(a: &Attribute<'_>) -> Self {
        OwnedAttribute { name: a.name.to_owned(), value: a.value.map(str::to_owned) }
    }
}

/// An owned media description (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedMedia {
    /// `audio`, `video`…
    pub kind: String,
    /// The transport port; 0: rejected or removed (RFC 3264 §6, §8.2).
    pub port: u16,
    /// The number of ports, if given.
    pub port_count: Option<u16>,
    /// `RTP/AVP`…
    pub proto: String,
    /// The formats (RTP payload types).
    pub formats: Vec<String>,
    /// The `i=` line, if any.
    pub title: Option<String>,
    /// The `c=` lines of this media.
    pub connections: Vec<OwnedConnection>,
    /// The `b=` lines, as written.
    pub bandwidths: Vec<String>,
    /// The `a=` lines, in order.
    pub attributes: Vec<OwnedAttribute>,
}

impl OwnedMedia {
    /// `m=<kind> <port> <proto>` with no formats yet (add some: the
    /// grammar wants at least one, RFC 8866 §5.14).
    pub fn new(kind: impl Into<String>, port: u16, proto: impl Into<String>) -> Self {
        OwnedMedia {
            kind: kind.into(),
            port,
            port_count: None,
            proto: proto.into(),
            formats: Vec::new(),
            title: None,
            connections: Vec::new(),
            bandwidths: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// Adds a format as written (no attributes).
    #[must_use]
    pub fn with_format(mut self, format: impl Into<String>) -> Self {
        self.formats.push(format.into());
        self
    }

    /// Adds RTP payload type `payload_type` for `codec`: the format, its
    /// `a=rtpmap` (RFC 8866 §6.6; written for static types too, as RFC
    /// 3264 §6.1 recommends) and its `a=fmtp` if the codec has one. The
    /// codec's own preferred payload type is not used.
    #[must_use]
    pub fn with_codec(mut self, payload_type: u8, codec: &Codec) -> Self {
        self.push_codec(payload_type, codec, codec.fmtp.as_deref());
        self
    }

    pub(crate) fn push_codec(&mut self, payload_type: u8, codec: &Codec, fmtp: Option<&str>) {
        self.formats.push(payload_type.to_string());
        self.attributes.push(OwnedAttribute::value("rtpmap", format!("{payload_type} {}", codec.rtpmap())));
        if let Some(fmtp) = fmtp {
            self.attributes.push(OwnedAttribute::value("fmtp", format!("{payload_type} {fmtp}")));
        }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn with_attribute(mut self, attribute: OwnedAttribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// Adds `a=ptime:<ms>` (RFC 8866 §6.4).
    #[must_use]
    pub fn with_ptime(self, ms: u32) -> Self {
        self.with_attribute(OwnedAttribute::value("ptime", ms.to_string()))
    }

    /// Sets the direction attribute (see [`OwnedMedia::set_direction`]).
    #[must_use]
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.set_direction(direction);
        self
    }

    /// Adds a media-level `c=` line for `address`.
    #[must_use]
    pub fn with_connection(mut self, address: IpAddr) -> Self {
        self.connections.push(OwnedConnection::ip(address));
        self
    }

    /// Replaces any direction attributes with one for `direction`,
    /// written explicitly even for `sendrecv` (RFC 8866 §6.7), at the end.
    pub fn set_direction(&mut self, direction: Direction) {
        self.attributes.retain(|a| {
            a.value.is_some() || !matches!(a.name.as_str(), "sendrecv" | "sendonly" | "recvonly" | "inactive")
        });
        self.attributes.push(OwnedAttribute::property(direction.name()));
    }

    /// The media's own direction attribute, `sendrecv` when none.
    pub fn direction(&self) -> Direction {
        self.borrowed().direction()
    }

    /// The borrowed form.
    pub fn borrowed(&self) -> Media<'_> {
        Media {
            kind: &self.kind,
            port: self.port,
            port_count: self.port_count,
            proto: &self.proto,
            formats: self.formats.iter().map(String::as_str).collect(),
            title: self.title.as_deref(),
            connections: self.connections.iter().map(OwnedConnection::borrowed).collect(),
            bandwidths: self.bandwidths.iter().map(String::as_str).collect(),
            attributes: self.attributes.iter().map(OwnedAttribute::borrowed).collect(),
        }
    }
}

impl From<&Media<'_>> for OwnedMedia {
    fn from(m: &Media<'_>) -> Self {
        OwnedMedia {
            kind: m.kind.to_owned(),
            port: m.port,
            port_count: m.port_count,
            proto: m.proto.to_owned(),
            formats: m.formats.iter().map(|f| (*f).to_owned()).collect(),
            title: m.title.map(str::to_owned),
            connections: m.connections.iter().map(OwnedConnection::from).collect(),
            bandwidths: m.bandwidths.iter().map(|b| (*b).to_owned()).collect(),
            attributes: m.attributes.iter().map(OwnedAttribute::from).collect(),
        }
    }
}

/// An owned session description: what an application keeps, and what
/// offer/answer produces. Written by the same writer as
/// [`SessionDescription`].
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use sipline::sdp::{Codec, Direction, OwnedDescription, OwnedMedia, OwnedOrigin};
///
/// let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
/// let sdp = OwnedDescription::new(OwnedOrigin::new("alice", 2890844526, 1, ip))
///     .with_connection(ip)
///     .with_media(
///         OwnedMedia::new("audio", 49170, "RTP/AVP")
///             .with_codec(0, &Codec::pcmu())
///             .with_codec(101, &Codec::telephone_event(101))
///             .with_ptime(20)
///             .with_direction(Direction::SendOnly),
///     );
/// assert_eq!(
///     sdp.to_string(),
///     "v=0\r\no=alice 2890844526 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
///      m=audio 49170 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
///      a=fmtp:101 0-16\r\na=ptime:20\r\na=sendonly\r\n"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedDescription {
    /// `o=`.
    pub origin: OwnedOrigin,
    /// `s=` (`-` when the session has no name).
    pub name: String,
    /// `i=`, if any.
    pub info: Option<String>,
    /// `u=`, if any.
    pub uri: Option<String>,
    /// `e=` lines.
    pub emails: Vec<String>,
    /// `p=` lines.
    pub phones: Vec<String>,
    /// The session-level `c=`, if any.
    pub connection: Option<OwnedConnection>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<String>,
    /// `t=` lines: (start, stop).
    pub times: Vec<(u64, u64)>,
    /// `r=` and `z=` lines (type letter and value).
    pub repeats: Vec<(char, String)>,
    /// `k=`, if any.
    pub key: Option<String>,
    /// Session-level `a=` lines.
    pub attributes: Vec<OwnedAttribute>,
    /// The media descriptions, in order.
    pub media: Vec<OwnedMedia>,
}

impl OwnedDescription {
    /// A description with `origin`, `s=-` and `t=0 0` (RFC 8866 §5.9: an
    /// unbounded session), and nothing else yet.
    pub fn new(origin: OwnedOrigin) -> Self {
        OwnedDescription {
            origin,
            name: "-".to_owned(),
            info: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            times: vec![(0, 0)],
            repeats: Vec::new(),
            key: None,
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// Parses `bytes` and keeps an owned copy.
    pub fn parse(bytes: &[u8]) -> Result<Self, SdpError> {
        SessionDescription::parse(bytes).map(|sdp| OwnedDescription::from(&sdp))
    }

    /// Sets the session-level `c=` line for `address`.
    #[must_use]
    pub fn with_connection(mut self, address: IpAddr) -> Self {
        self.connection = Some(OwnedConnection::ip(address));
        self
    }

    /// Sets the session name (`s=`; empty is written `-`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.name = if name.is_empty() { "-".to_owned() } else { name };
        self
    }

    /// Adds a session-level attribute.
    #[must_use]
    pub fn with_attribute(mut self, attribute: OwnedAttribute) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// Adds a media description.
    #[must_use]
    pub fn with_media(mut self, media: OwnedMedia) -> Self {
        self.media.push(media);
        self
    }

    /// The direction of media `index`: its own attribute, else the
    /// session's, else `sendrecv` (RFC 8866 §6.7).
    pub fn direction_of(&self, index: usize) -> Option<Direction> {
        let m = self.media.get(index)?;
        let own = direction_in(&m.borrowed().attributes);
        let session = || direction_in(&self.attributes.iter().map(OwnedAttribute::borrowed).collect::<Vec<_>>());
        Some(own.or_else(session).unwrap_or(Direction::SendRecv))
    }

    /// The borrowed form, for everything that reads a
    /// [`SessionDescription`] (and for writing).
    pub fn borrowed(&self) -> SessionDescription<'_> {
        SessionDescription {
            origin: self.origin.borrowed(),
            name: &self.name,
            info: self.info.as_deref(),
            uri: self.uri.as_deref(),
            emails: self.emails.iter().map(String::as_str).collect(),
            phones: self.phones.iter().map(String::as_str).collect(),
            connection: self.connection.as_ref().map(OwnedConnection::borrowed),
            bandwidths: self.bandwidths.iter().map(String::as_str).collect(),
            times: self.times.clone(),
            repeats: self.repeats.iter().map(|(k, r)| (*k, r.as_str())).collect(),
            key: self.key.as_deref(),
            attributes: self.attributes.iter().map(OwnedAttribute::borrowed).collect(),
            media: self.media.iter().map(OwnedMedia::borrowed).collect(),
        }
    }

    /// Whether `self` and `other` describe the same session apart from
    /// their `o=` lines (RFC 3264 §8: what decides a new version).
    pub fn same_apart_from_origin(&self, other: &OwnedDescription) -> bool {
        let OwnedDescription {
            origin: _,
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
        } = other;
        self.name == *name
            && self.info == *info
            && self.uri == *uri
            && self.emails == *emails
            && self.phones == *phones
            && self.connection == *connection
            && self.bandwidths == *bandwidths
            && self.times == *times
            && self.repeats == *repeats
            && self.key == *key
            && self.attributes == *attributes
            && self.media == *media
    }
}

impl From<&SessionDescription<'_>> for OwnedDescription {
    fn from(s: &SessionDescription<'_>) -> Self {
        OwnedDescription {
            origin: OwnedOrigin::from(&s.origin),
            name: s.name.to_owned(),
            info: s.info.map(str::to_owned),
            uri: s.uri.map(str::to_owned),
            emails: s.emails.iter().map(|e| (*e).to_owned()).collect(),
            phones: s.phones.iter().map(|p| (*p).to_owned()).collect(),
            connection: s.connection.as_ref().map(OwnedConnection::from),
            bandwidths: s.bandwidths.iter().map(|b| (*b).to_owned()).collect(),
            times: s.times.clone(),
            repeats: s.repeats.iter().map(|(k, r)| (*k, (*r).to_owned())).collect(),
            key: s.key.map(str::to_owned),
            attributes: s.attributes.iter().map(OwnedAttribute::from).collect(),
            media: s.media.iter().map(OwnedMedia::from).collect(),
        }
    }
}

impl SessionDescription<'_> {
    /// An owned copy that outlives the parsed bytes.
    pub fn to_owned_description(&self) -> OwnedDescription {
        OwnedDescription::from(self)
    }
}

impl fmt::Display for OwnedDescription {
    /// The same text the borrowed form writes (RFC 8866 §5 order, CRLF).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.borrowed(), f)
    }
}

impl fmt::Display for OwnedMedia {
    /// The `m=` section as the borrowed form writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.borrowed(), f)
    }
}
