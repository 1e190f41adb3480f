//! What the transport does with a message that arrived, before any
//! transaction sees it (RFC 3261 §18.1.2, §18.2.1, §18.3).

use super::received::stamp_parsed;
use crate::message::{Message, ParseError};
use std::net::SocketAddr;

/// The verdict on one arrived message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// A request, its top Via stamped with `received`/`rport` where §18.2.1
    /// and RFC 3581 ask for it: pass it up.
    Request(Vec<u8>),
    /// A response whose top Via is ours: pass it up.
    Response(Vec<u8>),
    /// A response whose top Via names someone else: §18.1.2 says discard.
    ForeignResponse,
    /// Nothing but CRLFs (a keep-alive on a datagram transport).
    KeepAlive,
    /// Not a SIP message. For a request, answer 400 if it can be salvaged
    /// ([`crate::message::Salvaged`]); otherwise drop it.
    Malformed(ParseError),
}

/// Classifies `bytes` from `source`. `ours` says whether a Via sent-by
/// (`host`, optional port) is one this endpoint puts in its requests.
pub fn inbound(bytes: &[u8], source: SocketAddr, ours: impl Fn(&str, Option<u16>) -> bool) -> Inbound {
    match judge(bytes, source, ours) {
        Judged::Pass(exact, m) if m.is_request() => Inbound::Request(exact.to_vec()),
        Judged::Pass(exact, _) => Inbound::Response(exact.to_vec()),
        Judged::Stamped(bytes) => Inbound::Request(bytes),
        Judged::ForeignResponse => Inbound::ForeignResponse,
        Judged::KeepAlive => Inbound::KeepAlive,
        Judged::Malformed(e) => Inbound::Malformed(e),
    }
}

/// [`inbound`] without copying: a message that passes unchanged comes
/// back borrowed, with its parse, so the layers above need not parse it
/// again.
#[allow(clippy::large_enum_variant)] // moved once per message; boxing would allocate per message
pub(crate) enum Judged<'b> {
    /// A request needing no stamp, or a response whose top Via is ours:
    /// exactly the message's octets, and their parse.
    Pass(&'b [u8], Message<'b>),
    /// A request with its top Via stamped (§18.2.1, RFC 3581).
    Stamped(Vec<u8>),
    /// See [`Inbound::ForeignResponse`].
    ForeignResponse,
    /// See [`Inbound::KeepAlive`].
    KeepAlive,
    /// See [`Inbound::Malformed`].
    Malformed(ParseError),
}

/// The verdict of [`inbound`] on one message, borrowing it.
pub(crate) fn judge(bytes: &[u8], source: SocketAddr, ours: impl Fn(&str, Option<u16>) -> bool) -> Judged<'_> {
    let m = match Message::parse(bytes) {
        Ok(m) => m,
        Err(ParseError::Empty) => return Judged::KeepAlive,
        Err(e) => return Judged::Malformed(e),
    };
    let exact = &bytes[..m.len()];
    if m.is_request() {
        return match stamp_parsed(&m, exact, source) {
            Some(stamped) => Judged::Stamped(stamped),
            None => Judged::Pass(exact, m),
        };
    }
    // §18.1.2: the top Via must carry a sent-by this endpoint inserts.
    match m.via() {
        Some(Ok(via)) if ours(via.host_str(), via.port()) => Judged::Pass(exact, m),
        _ => Judged::ForeignResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SocketAddr {
        "192.0.2.77:5060".parse().unwrap()
    }

    fn ours(host: &str, port: Option<u16>) -> bool {
        host.eq_ignore_ascii_case("uac.example.com") && port.unwrap_or(5060) == 5060
    }

    const RESP: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP uac.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn responses_must_carry_our_sent_by_18_1_2() {
        assert_eq!(inbound(RESP.as_bytes(), src(), ours), Inbound::Response(RESP.as_bytes().to_vec()));
        let foreign = RESP.replace("uac.example.com", "elsewhere.example.com");
        assert_eq!(inbound(foreign.as_bytes(), src(), ours), Inbound::ForeignResponse);
        let other_port = RESP.replace("uac.example.com;", "uac.example.com:5070;");
        assert_eq!(inbound(other_port.as_bytes(), src(), ours), Inbound::ForeignResponse);
    }

    #[test]
    fn requests_are_stamped_and_trailing_octets_dropped() {
        let req = "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP host.example.com;branch=z9hG4bK9\r\nContent-Length: 0\r\n\r\njunk after";
        match inbound(req.as_bytes(), src(), ours) {
            Inbound::Request(bytes) => {
                let m = Message::parse(&bytes).unwrap();
                assert_eq!(m.via().unwrap().unwrap().received(), Some(src().ip()));
                assert!(!bytes.ends_with(b"junk after"), "§18.3: octets past Content-Length are not the message");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(inbound(b"\r\n\r\n", src(), ours), Inbound::KeepAlive);
        assert_eq!(inbound(b"INVITE  sip:x SIP/2.0\r\n\r\n", src(), ours), Inbound::Malformed(ParseError::RequestLine));
    }
}
