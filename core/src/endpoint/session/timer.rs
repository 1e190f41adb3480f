//! Session timers (RFC 4028): the configuration, the Session-Expires and
//! Min-SE header fields, and the negotiation of the UAS (§9).

use super::reliable::{leading_number, supports};
use crate::message::{HeaderName, Message};
use std::time::Duration;

/// The option tag of RFC 4028 (§3).
pub(super) const TAG: &str = "timer";

/// §4: Min-SE is never below 90 seconds.
pub(super) const MIN_SE_FLOOR: u32 = 90;

/// Session timers (RFC 4028): how long a session lives without a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionTimerConfig {
    /// The session interval asked for, in seconds (Session-Expires;
    /// default 1800, §4).
    pub expires: u32,
    /// The smallest session interval taken, in seconds (Min-SE; default
    /// and at least 90, §4).
    pub min_se: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig { expires: 1800, min_se: MIN_SE_FLOOR }
    }
}

impl SessionTimerConfig {
    /// Session-Expires `expires` and Min-SE `min_se` (raised to 90, and
    /// `expires` to `min_se`).
    pub fn new(expires: u32, min_se: u32) -> SessionTimerConfig {
        let min_se = min_se.max(MIN_SE_FLOOR);
        SessionTimerConfig { expires: expires.max(min_se), min_se }
    }

    /// The Min-SE in force (at least 90, §4).
    pub(super) fn floor(self) -> u32 {
        self.min_se.max(MIN_SE_FLOOR)
    }
}

/// Who refreshes the session (the `refresher` parameter, §4): the UAC or
/// the UAS of the transaction that set the interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Uac,
    Uas,
}

impl Side {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Side::Uac => "uac",
            Side::Uas => "uas",
        }
    }
}

/// A Session-Expires value: the interval in seconds and the refresher,
/// if named.
pub(super) fn session_expires(m: &Message<'_>) -> Option<(u32, Option<Side>)> {
    let value = std::str::from_utf8(m.headers().first(HeaderName::SessionExpires)?.value()).ok()?;
    let mut parts = value.split(';');
    let secs = parts.next()?.trim().parse().ok()?;
    let mut side = None;
    for p in parts {
        if let Some((name, v)) = p.split_once('=') {
            if name.trim().eq_ignore_ascii_case("refresher") {
                let v = v.trim();
                if v.eq_ignore_ascii_case("uac") {
                    side = Some(Side::Uac);
                } else if v.eq_ignore_ascii_case("uas") {
                    side = Some(Side::Uas);
                }
            }
        }
    }
    Some((secs, side))
}

/// The Min-SE of a request or 422 (§5), if any.
pub(super) fn min_se(m: &Message<'_>) -> Option<u32> {
    leading_number(m.headers().first(HeaderName::MinSe)?.value())
}

/// The session timer agreed for a dialog: its interval and whether we
/// refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Agreed {
    /// The session interval in seconds.
    pub(super) interval: u32,
    /// We send the refreshes (else the peer does and we watch).
    pub(super) we_refresh: bool,
}

impl Agreed {
    /// §10: the refresher refreshes at half the interval.
    pub(super) fn refresh_in(self) -> Duration {
        Duration::from_secs(u64::from(self.interval)) / 2
    }

    /// §10: the other side gives up at the interval less a third of it or
    /// 32 seconds, whichever is less; the refresher at the interval
    /// itself (its refresh transaction has ended by then, §10).
    pub(super) fn expires_in(self) -> Duration {
        let interval = Duration::from_secs(u64::from(self.interval));
        if self.we_refresh {
            interval
        } else {
            interval.saturating_sub((interval / 3).min(Duration::from_secs(32)))
        }
    }
}

/// What the UAS of an INVITE, re-INVITE or UPDATE does about its session
/// timer (§9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Negotiation {
    /// §9 (and §6): the interval asked for is below our Min-SE: 422 with
    /// this Min-SE.
    TooSmall(u32),
    /// The 2xx carries `Session-Expires: interval;refresher=…` (and
    /// `Require: timer` when the refresher is the UAC, §9).
    Use { interval: u32, refresher: Side },
    /// No session timer.
    None,
}

/// §9: the UAS's decision on `request`, with our configuration.
pub(super) fn negotiate(request: &Message<'_>, config: SessionTimerConfig) -> Negotiation {
    let ours = config.floor();
    let theirs_min = min_se(request).unwrap_or(0).max(MIN_SE_FLOOR);
    let uac_supports = supports(request, TAG);
    match session_expires(request) {
        // §9: below our Min-SE: 422 (the UAC learns ours, §7.4).
        Some((asked, _)) if asked < ours => Negotiation::TooSmall(ours),
        Some((asked, refresher)) => {
            // §9: the UAS may lower the interval, never below the Min-SE
            // of the request (nor ours).
            let interval = asked.min(config.expires.max(ours)).max(theirs_min).max(ours);
            // §9: the refresher the UAC named stands; left open, the UAC
            // when it supports timers, else we (a UAC without the
            // extension cannot refresh knowingly).
            let refresher = refresher.unwrap_or(if uac_supports { Side::Uac } else { Side::Uas });
            let refresher = if uac_supports { refresher } else { Side::Uas };
            Negotiation::Use { interval, refresher }
        }
        // §9: no Session-Expires: the UAS may still ask for one, and
        // refreshes itself when the UAC does not support timers.
        None => {
            let interval = config.expires.max(ours).max(theirs_min);
            Negotiation::Use { interval, refresher: if uac_supports { Side::Uac } else { Side::Uas } }
        }
    }
}

/// §7.2: the UAC of a transaction reading the Session-Expires of its 2xx:
/// `None` means no session timer.
pub(super) fn from_response(response: &Message<'_>) -> Option<Agreed> {
    let (interval, side) = session_expires(response)?;
    // §7.2: a 2xx naming no refresher (it should) leaves it to the UAC.
    Some(Agreed { interval: interval.max(1), we_refresh: side != Some(Side::Uas) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn judge(extra: &str, config: SessionTimerConfig) -> Negotiation {
        negotiate(&Message::parse(&request(extra)).unwrap(), config)
    }

    #[test]
    fn session_expires_parses_with_and_without_refresher() {
        let r = request("Session-Expires: 4000;refresher=UAS\r\n");
        assert_eq!(session_expires(&Message::parse(&r).unwrap()), Some((4000, Some(Side::Uas))));
        let r = request("x: 1800 ; foo=bar\r\nMin-SE: 120;x=1\r\n");
        let m = Message::parse(&r).unwrap();
        assert_eq!(session_expires(&m), Some((1800, None)));
        assert_eq!(min_se(&m), Some(120));
    }

    #[test]
    fn too_small_an_interval_gets_422_with_our_min_se_section_9() {
        let c = SessionTimerConfig::new(1800, 300);
        assert_eq!(judge("Supported: timer\r\nSession-Expires: 200\r\n", c), Negotiation::TooSmall(300));
        assert_eq!(
            judge("Supported: timer\r\nSession-Expires: 300\r\n", c),
            Negotiation::Use { interval: 300, refresher: Side::Uac }
        );
    }

    #[test]
    fn the_uas_keeps_a_named_refresher_and_picks_one_left_open_section_9() {
        let c = SessionTimerConfig::default();
        assert_eq!(
            judge("Supported: timer\r\nSession-Expires: 600;refresher=uas\r\n", c),
            Negotiation::Use { interval: 600, refresher: Side::Uas }
        );
        // Open, the UAC supports timers: it refreshes.
        assert_eq!(
            judge("Supported: timer\r\nSession-Expires: 600\r\n", c),
            Negotiation::Use { interval: 600, refresher: Side::Uac }
        );
        // A UAC without the extension: we refresh, with our interval.
        assert_eq!(judge("", c), Negotiation::Use { interval: 1800, refresher: Side::Uas });
        // Asked for more than we want: lowered, not below their Min-SE.
        assert_eq!(
            judge("Supported: timer\r\nSession-Expires: 7200\r\nMin-SE: 3600\r\n", c),
            Negotiation::Use { interval: 3600, refresher: Side::Uac }
        );
    }

    #[test]
    fn refresh_at_half_and_expiry_before_the_end_section_10() {
        let watch = Agreed { interval: 90, we_refresh: false };
        assert_eq!(watch.expires_in(), Duration::from_secs(60));
        let watch = Agreed { interval: 1800, we_refresh: false };
        assert_eq!(watch.expires_in(), Duration::from_secs(1768));
        let refresh = Agreed { interval: 1800, we_refresh: true };
        assert_eq!(refresh.refresh_in(), Duration::from_secs(900));
    }
}
