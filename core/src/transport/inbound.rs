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
    let m = match Message::parse(bytes) {
        Ok(m) => m,
        Err(ParseError::Empty) => return Inbound::KeepAlive,
        Err(e) => return Inbound::Malformed(e),
    };
    if m.is_request() {
        let exact = &bytes[..m.len()];
        return Inbound::Request(stamp_parsed(&m, exact, source).unwrap_or_else(|| exact.to_vec()));
    }
    // §18.1.2: the top Via must carry a sent-by this endpoint inserts.
    match m.via() {
        Some(Ok(via)) if ours(via.host_str(), via.port()) => Inbound::Response(bytes[..m.len()].to_vec()),
        _ => Inbound::ForeignResponse,
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
