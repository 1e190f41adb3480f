//! The SDP of the command's calls, made with `sipline::sdp` (RFC 3264):
//! an audio offer (PCMU, PCMA, telephone-event) on the discard port — the
//! command carries no media, but user agents insist on a description —,
//! the answer to a peer's offer (its payload types, its direction
//! mirrored), and hold (`sendonly`, RFC 3264 §8.4).

use sipline::sdp::{self, Capabilities, Codec, LocalSession, MediaCapability, SessionDescription};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// The discard port (RFC 863): where the peer's RTP goes.
const DISCARD: u16 = 9;

/// What the command offers and accepts.
fn capabilities() -> Capabilities {
    Capabilities::new(vec![
        MediaCapability::audio(vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event(101)]).with_ptime(20)
    ])
}

/// A session id unique to the user and host (RFC 8866 §5.2): the
/// process's random hash keys of the wall clock and a per-process counter
/// (two processes started in the same second draw different ids). Below
/// 2^62, so that its version can count up as an unsigned decimal.
fn session_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish() >> 2
}

/// One call's side of the offer/answer exchange.
#[derive(Clone)]
pub(crate) struct Media {
    session: LocalSession,
    at: SocketAddr,
}

impl Media {
    /// Media at `ip` (the discard port).
    pub(crate) fn new(ip: IpAddr) -> Media {
        let id = session_id();
        Media { session: LocalSession::new("-", id, id, ip), at: SocketAddr::new(ip, DISCARD) }
    }

    /// An offer (a new version only if it changed, RFC 3264 §8).
    pub(crate) fn offer(&mut self) -> Vec<u8> {
        match sdp::offer(&capabilities(), &[self.at], &mut self.session) {
            Ok(d) => d.to_string().into_bytes(),
            // The capabilities above always make an offer.
            Err(_) => Vec::new(),
        }
    }

    /// The answer to `offer` (RFC 3264 §6), or with none an offer of ours
    /// (a late offer: the answer comes in the ACK). `None`: nothing in the
    /// offer is acceptable (answer 488, RFC 3261 §21.4.26).
    pub(crate) fn answer(&mut self, offer: Option<&[u8]>) -> Option<Vec<u8>> {
        let Some(bytes) = offer.filter(|b| !b.is_empty()) else { return Some(self.offer()) };
        let parsed = SessionDescription::parse(bytes).ok()?;
        let local = vec![self.at; parsed.media.len()];
        let answer = sdp::answer(&parsed, &capabilities(), &local, &mut self.session).ok()?;
        Some(answer.to_string().into_bytes())
    }

    /// The offer that puts the call on hold (`sendonly`, RFC 3264 §8.4).
    pub(crate) fn hold(&mut self) -> Option<Vec<u8>> {
        if self.session.last().is_none() {
            self.offer();
        }
        self.session.hold().ok().map(|d| d.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_answer_and_hold() {
        let mut ours = Media::new(IpAddr::from([127, 0, 0, 1]));
        let offer = String::from_utf8(ours.offer()).unwrap();
        assert!(offer.contains("m=audio 9 RTP/AVP 0 8 101\r\n"), "{offer}");
        assert!(offer.contains("a=sendrecv"), "{offer}");
        // The same offer again keeps its version (a refresh).
        assert_eq!(String::from_utf8(ours.offer()).unwrap(), offer);
        let held = String::from_utf8(ours.hold().unwrap()).unwrap();
        assert!(held.contains("a=sendonly"), "{held}");
        let version =
            |s: &str| s.split("\r\n").find(|l| l.starts_with("o=")).unwrap().split(' ').nth(2).unwrap().to_owned();
        assert_eq!(version(&held).parse::<u64>().unwrap(), version(&offer).parse::<u64>().unwrap() + 1);
        // The peer answers a held call recvonly; an opus-only offer is
        // not acceptable.
        let mut theirs = Media::new(IpAddr::from([127, 0, 0, 2]));
        let answer = String::from_utf8(theirs.answer(Some(held.as_bytes())).unwrap()).unwrap();
        assert!(answer.contains("a=recvonly"), "{answer}");
        let opus = b"v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(theirs.answer(Some(opus)), None);
    }
}
