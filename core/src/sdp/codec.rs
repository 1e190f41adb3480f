//! Local media capabilities: the codecs we can send and receive, per
//! media type, for offer/answer (RFC 3264).

use super::Media;

/// A codec we support: an RTP encoding (RFC 8866 §6.6) and the payload
/// type we prefer for it in our own offers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    /// The encoding name (`PCMU`, `opus`…), matched case-insensitively
    /// (RFC 4855 §3).
    pub name: String,
    /// The RTP clock rate, Hz.
    pub clock_rate: u32,
    /// Audio channels (1 unless stated; written in `a=rtpmap` only when
    /// not 1, RFC 8866 §6.6).
    pub channels: u16,
    /// The `a=fmtp` parameters we receive with, if any.
    pub fmtp: Option<String>,
    /// The payload type our offers use (a static one from RFC 3551 §6, or
    /// 96–127).
    pub payload_type: u8,
}

impl Codec {
    /// A mono codec with no parameters.
    pub fn new(name: impl Into<String>, clock_rate: u32, payload_type: u8) -> Self {
        Codec { name: name.into(), clock_rate, channels: 1, fmtp: None, payload_type }
    }

    /// Sets the channel count.
    #[must_use]
    pub fn with_channels(mut self, channels: u16) -> Self {
        self.channels = channels;
        self
    }

    /// Sets the `a=fmtp` parameters.
    #[must_use]
    pub fn with_fmtp(mut self, fmtp: impl Into<String>) -> Self {
        self.fmtp = Some(fmtp.into());
        self
    }

    /// G.711 µ-law, static payload type 0 (RFC 3551 §4.5.14).
    pub fn pcmu() -> Self {
        Codec::new("PCMU", 8000, 0)
    }

    /// G.711 A-law, static payload type 8 (RFC 3551 §4.5.14).
    pub fn pcma() -> Self {
        Codec::new("PCMA", 8000, 8)
    }

    /// G.722, static payload type 9; its RTP clock is 8000 although it
    /// samples at 16 kHz (RFC 3551 §4.5.2).
    pub fn g722() -> Self {
        Codec::new("G722", 8000, 9)
    }

    /// Opus on dynamic payload type `payload_type`: always `opus/48000/2`
    /// (RFC 7587 §7).
    pub fn opus(payload_type: u8) -> Self {
        Codec::new("opus", 48_000, payload_type).with_channels(2)
    }

    /// DTMF events (RFC 4733) on dynamic payload type `payload_type`,
    /// events 0–16 (digits, `*`, `#`, A–D and flash).
    pub fn telephone_event(payload_type: u8) -> Self {
        Codec::new("telephone-event", 8000, payload_type).with_fmtp("0-16")
    }

    /// Whether this is `telephone-event` (RFC 4733).
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// Whether this codec is `encoding` (name case-insensitive, clock
    /// rate, channels).
    pub fn matches(&self, encoding: &Encoding<'_>) -> bool {
        self.name.eq_ignore_ascii_case(encoding.name)
            && self.clock_rate == encoding.clock_rate
            && self.channels == encoding.channels
    }

    /// The `a=rtpmap` value after the payload type: `name/rate[/channels]`.
    pub fn rtpmap(&self) -> String {
        if self.channels == 1 {
            format!("{}/{}", self.name, self.clock_rate)
        } else {
            format!("{}/{}/{}", self.name, self.clock_rate, self.channels)
        }
    }

    pub(crate) fn encoding(&self) -> Encoding<'_> {
        Encoding { name: &self.name, clock_rate: self.clock_rate, channels: self.channels }
    }
}

/// What an RTP payload type stands for in a description: from its
/// `a=rtpmap`, or from RFC 3551's table for a static type without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoding<'a> {
    /// The encoding name.
    pub name: &'a str,
    /// The clock rate, Hz.
    pub clock_rate: u32,
    /// The channels (1 when not given, RFC 8866 §6.6).
    pub channels: u16,
}

impl<'a> Encoding<'a> {
    /// The encoding of payload type `payload_type` in `media`: its
    /// `a=rtpmap` if any, else the static assignment (RFC 3551 §6), else
    /// none (a dynamic type without `a=rtpmap` means nothing).
    pub fn of(media: &Media<'a>, payload_type: u8) -> Option<Encoding<'a>> {
        let text = payload_type.to_string();
        match media.rtpmap(&text) {
            Some(map) => {
                let channels = match map.parameters {
                    None => 1,
                    Some(p) => p.trim().parse().ok()?,
                };
                Some(Encoding { name: map.encoding, clock_rate: map.clock_rate, channels })
            }
            None => static_payload_type(payload_type),
        }
    }

    /// Whether this is an auxiliary encoding that carries no media of its
    /// own (`telephone-event`, comfort noise, redundancy, FEC,
    /// retransmission): a stream needs a real codec besides.
    pub fn is_auxiliary(&self) -> bool {
        ["telephone-event", "CN", "red", "ulpfec", "flexfec", "rtx"].iter().any(|n| n.eq_ignore_ascii_case(self.name))
    }
}

/// The static payload types of RFC 3551 §6 (tables 4 and 5), by number.
pub fn static_payload_type(payload_type: u8) -> Option<Encoding<'static>> {
    let (name, clock_rate, channels) = match payload_type {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16_000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44_100, 2),
        11 => ("L16", 44_100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90_000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11_025, 1),
        17 => ("DVI4", 22_050, 1),
        18 => ("G729", 8000, 1),
        25 => ("CelB", 90_000, 1),
        26 => ("JPEG", 90_000, 1),
        28 => ("nv", 90_000, 1),
        31 => ("H261", 90_000, 1),
        32 => ("MPV", 90_000, 1),
        33 => ("MP2T", 90_000, 1),
        34 => ("H263", 90_000, 1),
        _ => return None,
    };
    Some(Encoding { name, clock_rate, channels })
}

/// What we support for one media type and transport protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaCapability {
    /// The media type (`audio`, `video`…).
    pub kind: String,
    /// The transport protocol (`RTP/AVP`…), matched case-insensitively.
    pub proto: String,
    /// The codecs, in our order of preference (our offers list them so,
    /// RFC 3264 §5.1).
    pub codecs: Vec<Codec>,
    /// The packet time we want to receive (`a=ptime`, RFC 8866 §6.4), if
    /// any.
    pub ptime: Option<u32>,
}

impl MediaCapability {
    /// Codecs for `kind` over `proto`.
    pub fn new(kind: impl Into<String>, proto: impl Into<String>, codecs: Vec<Codec>) -> Self {
        MediaCapability { kind: kind.into(), proto: proto.into(), codecs, ptime: None }
    }

    /// Audio over `RTP/AVP` (RFC 3551).
    pub fn audio(codecs: Vec<Codec>) -> Self {
        MediaCapability::new("audio", "RTP/AVP", codecs)
    }

    /// Sets the packet time.
    #[must_use]
    pub fn with_ptime(mut self, ms: u32) -> Self {
        self.ptime = Some(ms);
        self
    }
}

/// Everything we support: one entry per media type and protocol, in the
/// order our offers list their streams.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    /// The media we support.
    pub media: Vec<MediaCapability>,
}

impl Capabilities {
    /// Capabilities from a list.
    pub fn new(media: Vec<MediaCapability>) -> Self {
        Capabilities { media }
    }

    /// A telephone's audio: PCMU (0), PCMA (8), G722 (9), opus/48000/2
    /// (111) and telephone-event/8000 (101, events 0–16), ptime 20.
    pub fn telephony() -> Self {
        Capabilities::new(vec![MediaCapability::audio(vec![
            Codec::pcmu(),
            Codec::pcma(),
            Codec::g722(),
            Codec::opus(111),
            Codec::telephone_event(101),
        ])
        .with_ptime(20)])
    }

    /// What we support for `kind` over `proto`, if anything.
    pub fn find(&self, kind: &str, proto: &str) -> Option<&MediaCapability> {
        self.media.iter().find(|m| m.kind.eq_ignore_ascii_case(kind) && m.proto.eq_ignore_ascii_case(proto))
    }
}
