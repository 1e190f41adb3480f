//! The offer/answer model (RFC 3264): answering an offer from our
//! [`Capabilities`] ([`answer`]), making offers ([`offer`]), reading what
//! an exchange agreed ([`negotiated`]), hold and resume (§8.4) and the
//! version of our `o=` line (§8, [`LocalSession`]).

use std::net::{IpAddr, SocketAddr};

use super::builder::{OwnedDescription, OwnedMedia};
use super::codec::{Capabilities, Codec, Encoding, MediaCapability};
use super::{Direction, Media, SessionDescription};

/// Why an offer, an answer or a step of offer/answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferAnswerError {
    /// The answer's `m=` lines are not as many as the offer's (RFC 3264
    /// §6: "exactly the same number").
    #[error("the answer has {answer} m= lines, the offer {offer} (RFC 3264 §6)")]
    MediaCount {
        /// `m=` lines in the offer.
        offer: usize,
        /// `m=` lines in the answer.
        answer: usize,
    },
    /// An answer's `m=` line has another media type or protocol than the
    /// offer's at the same index (RFC 3264 §6).
    #[error("m= line {index}: the answer's media type or protocol is not the offer's (RFC 3264 §6)")]
    MediaMismatch {
        /// The `m=` line's index, from 0.
        index: usize,
    },
    /// The answer accepts a stream the offer had disabled with port 0
    /// (RFC 3264 §6: it MUST be port 0 in the answer too).
    #[error("m= line {index}: port 0 in the offer but not in the answer (RFC 3264 §6)")]
    RevivedStream {
        /// The `m=` line's index, from 0.
        index: usize,
    },
    /// An active stream has no `c=` line, at media or session level (RFC
    /// 8866 §5.7).
    #[error("m= line {index} has no c= line (RFC 8866 §5.7)")]
    MissingConnection {
        /// The `m=` line's index, from 0.
        index: usize,
    },
    /// A stream's connection address is not an IP address (a name would
    /// need resolving, which the sans-IO core does not do).
    #[error("m= line {index}: the connection address is not an IP address")]
    Address {
        /// The `m=` line's index, from 0.
        index: usize,
    },
    /// An accepted stream of the answer lists no format of the offer
    /// (RFC 3264 §6.1).
    #[error("m= line {index}: the answer accepts the stream with no format of the offer (RFC 3264 §6.1)")]
    NoCommonFormat {
        /// The `m=` line's index, from 0.
        index: usize,
    },
    /// Not one offered stream can be accepted: no common media type,
    /// protocol or codec. A SIP UAS refuses such an offer with 488 (RFC
    /// 3261 §13.3.1.1, §21.4.26), which leaves any session as it was.
    #[error("no offered stream can be accepted (488, RFC 3261 §21.4.26)")]
    NothingAccepted,
    /// The capabilities hold no media to offer.
    #[error("nothing to offer")]
    NothingToOffer,
    /// No local RTP address was given for stream `index`.
    #[error("no local address for stream {index}")]
    MissingLocalAddress {
        /// The stream's index, from 0.
        index: usize,
    },
    /// A codec's payload type is above 127 or used twice in one stream
    /// (RFC 3550 §5.1: 7 bits).
    #[error("payload type {payload_type} is above 127 or used twice in one stream")]
    PayloadType {
        /// The payload type.
        payload_type: u8,
    },
    /// Capability `index` has no codec that carries media (only
    /// `telephone-event` and the like, or none).
    #[error("capability {index} has no media codec")]
    NoCodec {
        /// The capability's index, from 0.
        index: usize,
    },
    /// Hold or resume before any description was sent.
    #[error("no description was sent yet")]
    NothingSent,
}

/// Our side of a session's descriptions: our `o=` line and the last
/// description we sent (RFC 3264 §8, RFC 8866 §5.2).
///
/// The session id stays the same throughout; the version goes up by
/// exactly one each time the description changes and stays the same when
/// the same description is sent again (a re-INVITE that only refreshes
/// the session). [`answer`] and [`offer`] pass what they build through
/// [`LocalSession::describe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    username: String,
    session_id: u64,
    version: u64,
    address: IpAddr,
    last: Option<OwnedDescription>,
    holding: bool,
}

impl LocalSession {
    /// A session whose `o=` line is
    /// `o=<username> <session_id> <version> IN IP4|IP6 <address>`;
    /// `version` is the first description's (RFC 8866 §5.2
    /// suggests an NTP timestamp for both numbers; the caller picks them,
    /// the core has no clock).
    pub fn new(username: impl Into<String>, session_id: u64, version: u64, address: IpAddr) -> Self {
        LocalSession { username: username.into(), session_id, version, address, last: None, holding: false }
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version of the last description sent (or of the first, before
    /// any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The address in our `o=` line, and in `c=` when no stream has one.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The last description sent, to send again unchanged (same version).
    pub fn last(&self) -> Option<&OwnedDescription> {
        self.last.as_ref()
    }

    /// Whether we hold the session ([`LocalSession::hold`]): our offers
    /// and answers then ask the peer not to send (RFC 3264 §8.4).
    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// Stamps `description` with our `o=` line and records it as sent: the
    /// version is the previous one if it equals the last description apart
    /// from `o=`, else one more (RFC 3264 §8: "incremented by one"; the
    /// first description keeps the version given to
    /// [`LocalSession::new`]).
    pub fn describe(&mut self, mut description: OwnedDescription) -> OwnedDescription {
        if let Some(last) = &self.last {
            if !last.same_apart_from_origin(&description) {
                self.version = self.version.saturating_add(1);
            }
        }
        description.origin =
            super::builder::OwnedOrigin::new(self.username.as_str(), self.session_id, self.version, self.address);
        self.last = Some(description.clone());
        description
    }

    /// A new offer that puts the session on hold (RFC 3264 §8.4): each
    /// active stream of the last description loses its receive side,
    /// `sendrecv` becoming `sendonly` and `recvonly` (the peer holds us)
    /// `inactive`. Later answers keep the hold until
    /// [`LocalSession::resume`].
    pub fn hold(&mut self) -> Result<OwnedDescription, OfferAnswerError> {
        let last = self.last.as_ref().ok_or(OfferAnswerError::NothingSent)?;
        let next = held(last);
        self.holding = true;
        Ok(self.describe(next))
    }

    /// A new offer that takes the session off hold (RFC 3264 §8.4): each
    /// active stream gets its receive side back, `sendonly` becoming
    /// `sendrecv` and `inactive` `recvonly`.
    pub fn resume(&mut self) -> Result<OwnedDescription, OfferAnswerError> {
        let last = self.last.as_ref().ok_or(OfferAnswerError::NothingSent)?;
        let next = resumed(last);
        self.holding = false;
        Ok(self.describe(next))
    }

    /// The directions we want: everything, or only to send while we hold.
    fn wish(&self) -> Direction {
        if self.holding {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        }
    }
}

/// `previous` with every active stream's receive side taken away (hold,
/// RFC 3264 §8.4); the `o=` line is left for [`LocalSession::describe`].
pub fn held(previous: &OwnedDescription) -> OwnedDescription {
    redirect(previous, |d| d.and(Direction::SendOnly))
}

/// `previous` with every active stream's receive side given back (resume,
/// RFC 3264 §8.4).
pub fn resumed(previous: &OwnedDescription) -> OwnedDescription {
    redirect(previous, |d| Direction::from_flags(d.sends(), true))
}

fn redirect(previous: &OwnedDescription, change: impl Fn(Direction) -> Direction) -> OwnedDescription {
    let mut next = previous.clone();
    for (index, media) in next.media.iter_mut().enumerate() {
        if media.port == 0 {
            continue;
        }
        let now = previous.direction_of(index).unwrap_or(Direction::SendRecv);
        media.set_direction(change(now));
    }
    next
}

/// Answers `offer` (RFC 3264 §6) from `capabilities`, with our RTP
/// address for stream `i` at `local[i]`, stamped by `session`.
///
/// - The answer has one `m=` line per offered one, in the same order
///   (§6). A stream is rejected with port 0 (§6; the line stays, §8.2)
///   when the offer disabled it, when we support no such media type and
///   protocol, when no codec is common, or when `local` has no address
///   (or port 0) for it.
/// - Codecs match by encoding name (case-insensitive), clock rate and
///   channels; a static payload type without `a=rtpmap` stands for RFC
///   3551's codec. The answer lists the common ones in the offer's order
///   with the offer's payload type numbers (§6.1), each with `a=rtpmap`
///   and our `a=fmtp`. `telephone-event` is answered only when offered
///   (with the events both sides support, RFC 4733 §2.4.1) and never
///   counts as a common codec on its own.
/// - Direction (§6.1): `sendonly` is answered `recvonly`, `recvonly`
///   `sendonly`, `inactive` `inactive`, `sendrecv` `sendrecv`, each
///   further restricted while `session` holds (we then only send). A
///   stream offered with `c=0.0.0.0` (RFC 2543 hold, §8.4) is taken as
///   not receiving: we do not send to it.
///
/// An offer with active streams of which none can be accepted is refused
/// with [`OfferAnswerError::NothingAccepted`] (SIP answers 488); an offer
/// whose streams are all disabled gets an answer with all of them at port
/// 0. A stream we would accept but that has no `c=` anywhere refuses the
/// offer ([`OfferAnswerError::MissingConnection`]).
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr, SocketAddr};
/// use sipline::sdp::{answer, Capabilities, Direction, LocalSession, SessionDescription};
///
/// // Audio and video, opus on 97 and DTMF on 100; we only do audio.
/// let offer = SessionDescription::parse(
///     b"v=0\r\no=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\ns=-\r\n\
///       c=IN IP4 198.51.100.1\r\nt=0 0\r\n\
///       m=audio 49170 RTP/AVP 97 0 100\r\na=rtpmap:97 opus/48000/2\r\n\
///       a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\n\
///       m=video 51372 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\n",
/// )?;
/// let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
/// let mut session = LocalSession::new("bob", 7, 1, ip);
/// let local = [SocketAddr::new(ip, 40000), SocketAddr::new(ip, 40002)];
/// let ours = answer(&offer, &Capabilities::telephony(), &local, &mut session)?;
/// assert_eq!(
///     ours.to_string(),
///     "v=0\r\no=bob 7 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
///      m=audio 40000 RTP/AVP 97 0 100\r\na=rtpmap:97 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n\
///      a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\na=ptime:20\r\na=sendrecv\r\n\
///      m=video 0 RTP/AVP 31\r\n"
/// );
/// assert_eq!(ours.direction_of(0), Some(Direction::SendRecv));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn answer(
    offer: &SessionDescription<'_>,
    capabilities: &Capabilities,
    local: &[SocketAddr],
    session: &mut LocalSession,
) -> Result<OwnedDescription, OfferAnswerError> {
    let wish = session.wish();
    let mut media = Vec::with_capacity(offer.media.len());
    let mut addresses = Vec::with_capacity(offer.media.len());
    let mut active = false;
    for (index, offered) in offer.media.iter().enumerate() {
        // §6: a stream disabled in the offer is disabled in the answer.
        if offered.port == 0 {
            media.push(rejected(offered));
            addresses.push(None);
            continue;
        }
        active = true;
        let Some(capability) = capabilities.find(offered.kind, offered.proto) else {
            tracing::debug!(index, kind = offered.kind, proto = offered.proto, "SDP answer: stream type not supported");
            media.push(rejected(offered));
            addresses.push(None);
            continue;
        };
        let Some(address) = local.get(index).filter(|a| a.port() != 0) else {
            tracing::debug!(index, "SDP answer: no local address for the stream");
            media.push(rejected(offered));
            addresses.push(None);
            continue;
        };
        let common = common_formats(offered, capability);
        if !common.iter().any(|(_, codec, _)| !codec.encoding().is_auxiliary()) {
            tracing::debug!(index, "SDP answer: no codec in common");
            media.push(rejected(offered));
            addresses.push(None);
            continue;
        }
        // RFC 8866 §5.7: a stream we take needs somewhere to send to.
        let connection = offer.connection_of(index).ok_or(OfferAnswerError::MissingConnection { index })?;
        let mut ours = OwnedMedia::new(offered.kind, address.port(), offered.proto);
        for (payload_type, codec, fmtp) in &common {
            ours.push_codec(*payload_type, codec, fmtp.as_deref());
        }
        if let Some(ms) = capability.ptime {
            ours = ours.with_ptime(ms);
        }
        // §6.1: the answer's direction mirrors the offer's, restricted by
        // what we want (hold); c=0.0.0.0 (§8.4) means the offerer does not
        // receive.
        let offered_direction =
            offer.direction_of(index).unwrap_or(Direction::SendRecv).and(receiving(connection.address));
        ours.set_direction(offered_direction.reversed().and(wish));
        media.push(ours);
        addresses.push(Some(address.ip()));
    }
    if active && addresses.iter().all(Option::is_none) {
        return Err(OfferAnswerError::NothingAccepted);
    }
    Ok(session.describe(assemble(session.address, media, &addresses)))
}

/// Makes an offer from `capabilities` (RFC 3264 §5): one stream per
/// [`MediaCapability`], in order, with our RTP address for stream `i` at
/// `local[i]`, codecs in our order of preference on their preferred
/// payload types (§5.1), `sendrecv` (`sendonly` while `session` holds),
/// stamped by `session`.
pub fn offer(
    capabilities: &Capabilities,
    local: &[SocketAddr],
    session: &mut LocalSession,
) -> Result<OwnedDescription, OfferAnswerError> {
    if capabilities.media.is_empty() {
        return Err(OfferAnswerError::NothingToOffer);
    }
    let wish = session.wish();
    let mut media = Vec::with_capacity(capabilities.media.len());
    let mut addresses = Vec::with_capacity(capabilities.media.len());
    for (index, capability) in capabilities.media.iter().enumerate() {
        let address = local.get(index).ok_or(OfferAnswerError::MissingLocalAddress { index })?;
        media.push(offered_media(index, capability, address.port(), wish)?);
        addresses.push(Some(address.ip()));
    }
    Ok(session.describe(assemble(session.address, media, &addresses)))
}

fn offered_media(
    index: usize,
    capability: &MediaCapability,
    port: u16,
    wish: Direction,
) -> Result<OwnedMedia, OfferAnswerError> {
    if !capability.codecs.iter().any(|c| !c.encoding().is_auxiliary()) {
        return Err(OfferAnswerError::NoCodec { index });
    }
    let mut seen = [false; 128];
    let mut media = OwnedMedia::new(capability.kind.as_str(), port, capability.proto.as_str());
    for codec in &capability.codecs {
        let payload_type = codec.payload_type;
        match seen.get_mut(usize::from(payload_type)) {
            Some(used @ false) => *used = true,
            _ => return Err(OfferAnswerError::PayloadType { payload_type }),
        }
        media.push_codec(payload_type, codec, codec.fmtp.as_deref());
    }
    if let Some(ms) = capability.ptime {
        media = media.with_ptime(ms);
    }
    media.set_direction(wish);
    Ok(media)
}

/// The description around `media`: the first active stream's address as
/// the session-level `c=` (else `fallback`), and a media-level `c=` for a
/// stream on another address.
fn assemble(fallback: IpAddr, media: Vec<OwnedMedia>, addresses: &[Option<IpAddr>]) -> OwnedDescription {
    let session_ip = addresses.iter().flatten().next().copied().unwrap_or(fallback);
    let mut description =
        OwnedDescription::new(super::builder::OwnedOrigin::new("-", 0, 0, fallback)).with_connection(session_ip);
    for (mut m, ip) in media.into_iter().zip(addresses.iter()) {
        if let Some(ip) = ip.filter(|ip| *ip != session_ip) {
            m = m.with_connection(ip);
        }
        description.media.push(m);
    }
    description
}

/// The answer's line for a rejected stream: port 0, the offer's formats
/// (the grammar wants one), nothing else (§6).
fn rejected(offered: &Media<'_>) -> OwnedMedia {
    let mut m = OwnedMedia::new(offered.kind, 0, offered.proto);
    m.formats = offered.formats.iter().map(|f| (*f).to_owned()).collect();
    if m.formats.is_empty() {
        m.formats.push("0".to_owned());
    }
    m
}

/// `sendrecv`, or `sendonly` for the unspecified address (`c=0.0.0.0`:
/// send nothing to it, RFC 3264 §8.4).
fn receiving(address: &str) -> Direction {
    match connection_ip(address) {
        Some(ip) if ip.is_unspecified() => Direction::SendOnly,
        _ => Direction::SendRecv,
    }
}

/// The IP address of a `c=` value, without a `/ttl/count` suffix.
fn connection_ip(address: &str) -> Option<IpAddr> {
    address.split('/').next()?.parse().ok()
}

/// The offered formats we support, in the offer's order, each with its
/// offered payload type (§6.1), our codec and the `a=fmtp` to answer.
fn common_formats<'c>(offered: &Media<'_>, capability: &'c MediaCapability) -> Vec<(u8, &'c Codec, Option<String>)> {
    let mut common: Vec<(u8, &Codec, Option<String>)> = Vec::new();
    for format in &offered.formats {
        let Some(payload_type) = payload_type(format) else { continue };
        if common.iter().any(|(pt, ..)| *pt == payload_type) {
            continue;
        }
        let Some(encoding) = Encoding::of(offered, payload_type) else { continue };
        let Some(codec) = capability.codecs.iter().find(|c| c.matches(&encoding)) else { continue };
        let fmtp = if codec.is_telephone_event() {
            match event_fmtp(codec.fmtp.as_deref(), fmtp_of(offered, format)) {
                Some(fmtp) => Some(fmtp),
                None => continue,
            }
        } else {
            codec.fmtp.clone()
        };
        common.push((payload_type, codec, fmtp));
    }
    common
}

/// An RTP format as a payload type: 0–127 written plainly (no sign, no
/// leading zero), else `None` (RFC 3551 §3, RFC 3550 §5.1).
fn payload_type(format: &str) -> Option<u8> {
    let plain = format.bytes().all(|b| b.is_ascii_digit()) && (format == "0" || !format.starts_with('0'));
    format.parse::<u8>().ok().filter(|pt| plain && *pt <= 127)
}

/// The `a=fmtp` value of `format` in `media`, if any.
fn fmtp_of<'a>(media: &Media<'a>, format: &str) -> Option<&'a str> {
    media
        .attributes
        .iter()
        .filter(|a| a.name == "fmtp")
        .filter_map(|a| a.value?.split_once(' '))
        .find(|(pt, _)| *pt == format)
        .map(|(_, params)| params.trim())
}

/// The `telephone-event` parameters to answer: the events both sides
/// support (absent: 0–15, RFC 4733 §2.4.1); the offer's as written when
/// either side's cannot be read; `None` when no event is common.
fn event_fmtp(ours: Option<&str>, offered: Option<&str>) -> Option<String> {
    let default = "0-15";
    match (Events::parse(ours.unwrap_or(default)), Events::parse(offered.unwrap_or(default))) {
        (Some(a), Some(b)) => Some(a.and(&b)).filter(|both| !both.is_empty()).map(|both| both.to_string()),
        _ => Some(offered.unwrap_or(default).to_owned()),
    }
}

/// A set of RFC 4733 event codes (0–255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Events([u64; 4]);

impl Events {
    /// `0-15,66,70` (RFC 4733 §2.4.1); `None` when malformed.
    fn parse(text: &str) -> Option<Events> {
        let mut bits = [0u64; 4];
        for part in text.split(',') {
            let part = part.trim();
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let (low, high) = (low.trim().parse::<u8>().ok()?, high.trim().parse::<u8>().ok()?);
            if low > high {
                return None;
            }
            for event in low..=high {
                bits[usize::from(event / 64)] |= 1 << (event % 64);
            }
        }
        Some(Events(bits))
    }

    fn and(&self, other: &Events) -> Events {
        Events([self.0[0] & other.0[0], self.0[1] & other.0[1], self.0[2] & other.0[2], self.0[3] & other.0[3]])
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn has(&self, event: u16) -> bool {
        event < 256 && self.0[usize::from(event / 64)] & (1 << (event % 64)) != 0
    }
}

impl std::fmt::Display for Events {
    /// Ranges, comma-separated (`0-15,66`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut event = 0u16;
        while event < 256 {
            if !self.has(event) {
                event += 1;
                continue;
            }
            let start = event;
            while self.has(event + 1) {
                event += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == event {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{event}")?;
            }
            event += 1;
        }
        Ok(())
    }
}

/// What one offer/answer exchange agreed, stream by stream, from our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// One entry per `m=` line, in order.
    pub streams: Vec<Stream>,
}

impl Negotiated {
    /// The result of `answer` to `offer` when we answered (see
    /// [`negotiated`] for the offerer's side): the same rules, with the
    /// remote address and the payload types we send taken from the offer.
    pub fn as_answerer(
        offer: &SessionDescription<'_>,
        answer: &SessionDescription<'_>,
    ) -> Result<Negotiated, OfferAnswerError> {
        negotiate(offer, answer, false)
    }

    /// The first active stream of media type `kind`.
    pub fn active(&self, kind: &str) -> Option<&ActiveStream> {
        self.streams.iter().find_map(|s| match s {
            Stream::Active(a) if a.kind.eq_ignore_ascii_case(kind) => Some(a),
            _ => None,
        })
    }
}

/// One stream's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    /// Port 0 in the offer or the answer (RFC 3264 §6): no media flow.
    Rejected {
        /// The media type.
        kind: String,
    },
    /// Accepted.
    Active(ActiveStream),
}

/// An accepted stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveStream {
    /// The media type.
    pub kind: String,
    /// Where to send RTP: the peer's connection address and port (RTCP on
    /// the next port, RFC 3550 §11). `0.0.0.0` (RFC 2543 hold) shows in
    /// `direction`, which then does not send.
    pub remote: SocketAddr,
    /// Which way media flow, from our side: our description's direction
    /// met with the peer's, reversed (RFC 3264 §6.1).
    pub direction: Direction,
    /// The codec: the first format of the answer that the offer has
    /// (§6.1: the answer's order is the preference).
    pub codec: NegotiatedCodec,
    /// `telephone-event` (RFC 4733), when both sides have it (the one at
    /// the codec's clock rate first).
    pub telephone_event: Option<NegotiatedCodec>,
    /// The peer's `a=ptime` (what it wants to receive), if any.
    pub ptime: Option<u32>,
}

/// A codec both sides have, with each side's payload type for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    /// The encoding name, as the answer writes it.
    pub name: String,
    /// The clock rate, Hz.
    pub clock_rate: u32,
    /// The channels.
    pub channels: u16,
    /// The payload type to send with: the peer's number (each side's
    /// description gives the numbers it receives, RFC 3264 §5.1).
    pub send_payload_type: u8,
    /// The payload type we receive it with: our number.
    pub receive_payload_type: u8,
    /// The peer's `a=fmtp` for it (what it receives), if any.
    pub fmtp: Option<String>,
}

/// The result of `answer` to our `offer` (RFC 3264 §6, §7): per stream,
/// rejected or the codec, remote RTP address and direction agreed.
///
/// The answer must have as many `m=` lines as the offer, each of the same
/// media type and protocol ([`OfferAnswerError::MediaCount`],
/// [`OfferAnswerError::MediaMismatch`]); a stream the offer disabled stays
/// disabled ([`OfferAnswerError::RevivedStream`]); an accepted stream must
/// have a format of the offer ([`OfferAnswerError::NoCommonFormat`]) and
/// an IP connection address.
pub fn negotiated(
    offer: &SessionDescription<'_>,
    answer: &SessionDescription<'_>,
) -> Result<Negotiated, OfferAnswerError> {
    negotiate(offer, answer, true)
}

fn negotiate(
    offer: &SessionDescription<'_>,
    answer: &SessionDescription<'_>,
    we_offered: bool,
) -> Result<Negotiated, OfferAnswerError> {
    if offer.media.len() != answer.media.len() {
        return Err(OfferAnswerError::MediaCount { offer: offer.media.len(), answer: answer.media.len() });
    }
    let (ours, theirs) = if we_offered { (offer, answer) } else { (answer, offer) };
    let mut streams = Vec::with_capacity(offer.media.len());
    for (index, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        if !o.kind.eq_ignore_ascii_case(a.kind) || !o.proto.eq_ignore_ascii_case(a.proto) {
            return Err(OfferAnswerError::MediaMismatch { index });
        }
        if o.port == 0 && a.port != 0 {
            return Err(OfferAnswerError::RevivedStream { index });
        }
        if a.port == 0 {
            streams.push(Stream::Rejected { kind: a.kind.to_owned() });
            continue;
        }
        let remote_media = if we_offered { a } else { o };
        let connection = theirs.connection_of(index).ok_or(OfferAnswerError::MissingConnection { index })?;
        let ip = connection_ip(connection.address).ok_or(OfferAnswerError::Address { index })?;
        let codec = agreed(o, a, we_offered, None).ok_or(OfferAnswerError::NoCommonFormat { index })?;
        let telephone_event =
            agreed(o, a, we_offered, Some(codec.clock_rate)).or_else(|| agreed(o, a, we_offered, Some(0)));
        let mine = ours
            .direction_of(index)
            .unwrap_or(Direction::SendRecv)
            .and(receiving(ours.connection_of(index).map_or("", |c| c.address)));
        let peer = theirs.direction_of(index).unwrap_or(Direction::SendRecv).and(receiving(connection.address));
        let ptime = remote_media.attribute("ptime").and_then(|p| p.value?.trim().parse().ok());
        streams.push(Stream::Active(ActiveStream {
            kind: a.kind.to_owned(),
            remote: SocketAddr::new(ip, remote_media.port),
            direction: mine.and(peer.reversed()),
            codec,
            telephone_event,
            ptime,
        }));
    }
    Ok(Negotiated { streams })
}

/// The first format of the answer `a` that the offer `o` has: a media
/// codec when `events` is `None`, else `telephone-event` at clock rate
/// `events` (any rate for `Some(0)`).
fn agreed(o: &Media<'_>, a: &Media<'_>, we_offered: bool, events: Option<u32>) -> Option<NegotiatedCodec> {
    let wanted = |e: &Encoding<'_>| match events {
        None => !e.is_auxiliary(),
        Some(rate) => e.name.eq_ignore_ascii_case("telephone-event") && (rate == 0 || e.clock_rate == rate),
    };
    let same = |x: &Encoding<'_>, y: &Encoding<'_>| {
        x.name.eq_ignore_ascii_case(y.name) && x.clock_rate == y.clock_rate && x.channels == y.channels
    };
    for answered in &a.formats {
        let Some(a_pt) = payload_type(answered) else { continue };
        let Some(encoding) = Encoding::of(a, a_pt).filter(|e| wanted(e)) else { continue };
        let offered = o.formats.iter().filter_map(|f| payload_type(f));
        let mut matching = offered.filter(|pt| Encoding::of(o, *pt).is_some_and(|e| same(&e, &encoding)));
        let Some(o_pt) = matching.clone().find(|pt| *pt == a_pt).or_else(|| matching.next()) else { continue };
        let (send, receive, remote) = if we_offered { (a_pt, o_pt, a) } else { (o_pt, a_pt, o) };
        return Some(NegotiatedCodec {
            name: encoding.name.to_owned(),
            clock_rate: encoding.clock_rate,
            channels: encoding.channels,
            send_payload_type: send,
            receive_payload_type: receive,
            fmtp: fmtp_of(remote, &send.to_string()).map(str::to_owned),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sets_parse_intersect_and_print_as_ranges() {
        let text = |e: Option<Events>| e.map(|e| e.to_string());
        let a = Events::parse("0-16");
        let b = Events::parse("0-15, 66,70-71");
        assert_eq!(text(a.zip(b).map(|(a, b)| a.and(&b))), Some("0-15".to_owned()));
        assert_eq!(text(b), Some("0-15,66,70-71".to_owned()));
        assert_eq!(text(Events::parse("255")), Some("255".to_owned()));
        assert_eq!(Events::parse("5-3"), None);
        assert_eq!(Events::parse("256"), None);
        assert_eq!(Events::parse(""), None);
        assert_eq!(Events::parse("1,,2"), None);
    }

    #[test]
    fn telephone_event_parameters_rfc_4733_2_4_1() {
        assert_eq!(event_fmtp(Some("0-16"), None), Some("0-15".to_owned()));
        assert_eq!(event_fmtp(Some("0-16"), Some("0-11,16")), Some("0-11,16".to_owned()));
        assert_eq!(event_fmtp(Some("0-16"), Some("32-40")), None);
        assert_eq!(event_fmtp(Some("0-16"), Some("junk")), Some("junk".to_owned()));
        assert_eq!(event_fmtp(Some("junk"), None), Some("0-15".to_owned()));
        assert_eq!(event_fmtp(None, None), Some("0-15".to_owned()));
    }

    #[test]
    fn payload_types_are_plain_numbers_up_to_127() {
        assert_eq!(payload_type("0"), Some(0));
        assert_eq!(payload_type("127"), Some(127));
        assert_eq!(payload_type("128"), None);
        assert_eq!(payload_type("097"), None);
        assert_eq!(payload_type("+5"), None);
        assert_eq!(payload_type(""), None);
        assert_eq!(payload_type("x"), None);
    }

    #[test]
    fn connection_addresses_lose_their_ttl() {
        assert_eq!(connection_ip("224.2.1.1/127/3"), Some(IpAddr::from([224, 2, 1, 1])));
        assert_eq!(connection_ip("host.example"), None);
        assert_eq!(receiving("0.0.0.0"), Direction::SendOnly);
        assert_eq!(receiving("::"), Direction::SendOnly);
        assert_eq!(receiving("192.0.2.1"), Direction::SendRecv);
    }
}
