//! Reliable provisional responses (RFC 3262): the option tag, the RSeq and
//! RAck header fields, and what a UAS keeps for the reliable provisional
//! responses of one INVITE.

use super::Body;
use crate::message::{HeaderName, Message};
use crate::transport::Peer;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The option tag of RFC 3262 (§3).
pub(super) const TAG: &str = "100rel";

/// Whether (and how) an endpoint uses reliable provisional responses
/// (RFC 3262, PRACK).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrackMode {
    /// Not supported: an INVITE that requires `100rel` gets 420 with
    /// `Unsupported: 100rel` (RFC 3261 §8.2.2.3); provisional responses
    /// are never sent reliably.
    #[default]
    Off,
    /// Supported: our INVITEs carry `Supported: 100rel` and reliable
    /// provisional responses to them are PRACKed (§4); as UAS, provisional
    /// responses go reliably when the INVITE requires it.
    Supported,
    /// Required: our INVITEs carry `Require: 100rel` (§4); as UAS,
    /// provisional responses go reliably whenever the INVITE supports or
    /// requires it.
    Required,
}

impl PrackMode {
    /// Whether `100rel` is supported at all.
    pub fn enabled(self) -> bool {
        self != PrackMode::Off
    }
}

/// Whether `m` lists `tag` in Require.
pub(super) fn requires(m: &Message<'_>, tag: &str) -> bool {
    m.require().filter_map(Result::ok).any(|t| t.eq_ignore_ascii_case(tag))
}

/// Whether `m` lists `tag` in Supported (or in Require, which implies it).
pub(super) fn supports(m: &Message<'_>, tag: &str) -> bool {
    m.supported().filter_map(Result::ok).any(|t| t.eq_ignore_ascii_case(tag)) || requires(m, tag)
}

/// The leading decimal number of `value` (after white space), if any, as
/// long as it fits 32 bits.
pub(super) fn leading_number(value: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?.trim_start();
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text[..end].parse().ok()
}

/// §7.1: the RSeq of a response (1 to 2³¹−1).
pub(super) fn rseq(m: &Message<'_>) -> Option<u32> {
    let value = m.headers().first(HeaderName::RSeq)?.value();
    leading_number(value).filter(|n| (1..=MAX_RSEQ).contains(n))
}

/// §7.2: a PRACK's RAck: (response number, CSeq number, method).
pub(super) fn rack(m: &Message<'_>) -> Option<(u32, u32, String)> {
    let value = std::str::from_utf8(m.headers().first(HeaderName::RAck)?.value()).ok()?;
    let mut parts = value.split_ascii_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let cseq = parts.next()?.parse().ok()?;
    let method = parts.next()?.to_owned();
    parts.next().is_none().then_some((rseq, cseq, method))
}

/// §7.1: RSeq values are at most 2³¹−1.
pub(super) const MAX_RSEQ: u32 = (1 << 31) - 1;

/// §3: the first RSeq of an INVITE, from a random draw: 1 to 2³¹−1.
pub(super) fn first_rseq(draw: u64) -> u32 {
    // Below 2^31 - 1, so it fits.
    u32::try_from(draw % u64::from(MAX_RSEQ)).unwrap_or(0) + 1
}

/// The body of a 2xx held back until a PRACK (§3).
pub(super) struct Held(pub(super) Option<Body>);

/// A reliable provisional response in flight (§3).
pub(super) struct InFlight {
    /// Its RSeq.
    pub(super) rseq: u32,
    /// The response, sent again until its PRACK.
    pub(super) bytes: Arc<[u8]>,
    /// Where it goes.
    pub(super) peer: Peer,
    /// The next retransmission interval (T1, doubling).
    pub(super) interval: Duration,
    /// It carried a body (then no 2xx may go before its PRACK, §3).
    pub(super) body: bool,
    /// Its PRACK came.
    pub(super) acked: bool,
}

/// What a UAS keeps of the reliable provisional responses to one INVITE
/// (§3).
pub(super) struct Reliable {
    /// The INVITE's CSeq number (the RAck's second number).
    pub(super) cseq: u32,
    /// The RSeq of the next reliable provisional response.
    pub(super) next: u32,
    /// The last one sent (acknowledged or not).
    pub(super) last: Option<InFlight>,
    /// §3: one unacknowledged at a time; the next ones wait here.
    pub(super) queue: VecDeque<(u16, Option<Body>)>,
    /// `accept` came while one with a body was unacknowledged: its 2xx
    /// goes when the PRACK comes (§3).
    pub(super) deferred: Option<Held>,
    /// A reliable provisional response with a body was acknowledged (the
    /// offer-answer of the INVITE is done in the early dialog).
    pub(super) early_answer: bool,
}

impl Reliable {
    /// For an INVITE with CSeq number `cseq`, the first RSeq drawn from
    /// `draw`.
    pub(super) fn new(cseq: u32, draw: u64) -> Reliable {
        Reliable {
            cseq,
            next: first_rseq(draw),
            last: None,
            queue: VecDeque::new(),
            deferred: None,
            early_answer: false,
        }
    }

    /// One is in flight, not yet acknowledged.
    pub(super) fn unacked(&self) -> bool {
        self.last.as_ref().is_some_and(|l| !l.acked)
    }

    /// An unacknowledged one carries a body, or one with a body waits its
    /// turn: a 2xx must wait (§3; the application's order kept).
    pub(super) fn unacked_body(&self) -> bool {
        self.unacked() && (self.last.as_ref().is_some_and(|l| l.body) || self.queue.iter().any(|(_, b)| b.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(extra: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 183 Session Progress\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>;tag=2\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn rseq_and_rack_parse_section_7() {
        let m = msg("RSeq: 988789\r\nRequire: 100rel\r\n");
        let m = Message::parse(&m).unwrap();
        assert_eq!(rseq(&m), Some(988_789));
        assert!(requires(&m, TAG) && supports(&m, TAG));
        for bad in ["RSeq: 0\r\n", "RSeq: x\r\n", "RSeq: 2147483648\r\n"] {
            let b = msg(bad);
            assert_eq!(rseq(&Message::parse(&b).unwrap()), None, "{bad}");
        }
        let p = msg("RAck: 776656 1 INVITE\r\n");
        assert_eq!(rack(&Message::parse(&p).unwrap()), Some((776_656, 1, "INVITE".to_owned())));
        for bad in ["RAck: 1 INVITE\r\n", "RAck: 1 2 INVITE x\r\n", "RAck: a 2 INVITE\r\n"] {
            let b = msg(bad);
            assert_eq!(rack(&Message::parse(&b).unwrap()), None, "{bad}");
        }
    }

    #[test]
    fn first_rseq_is_within_1_to_2_31_minus_1_section_3() {
        for draw in [0, 1, u64::from(MAX_RSEQ) - 1, u64::from(MAX_RSEQ), u64::MAX] {
            let r = first_rseq(draw);
            assert!((1..=MAX_RSEQ).contains(&r), "{draw} -> {r}");
        }
    }
}
