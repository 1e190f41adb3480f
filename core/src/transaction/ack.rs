//! Messages the transaction layer writes itself: the ACK for a non-2xx
//! final response to INVITE (RFC 3261 §17.1.1.3) and the 100 Trying an
//! INVITE server transaction sends when its TU is slow (§17.2.1).

use crate::message::headers::ListIter;
use crate::message::{HeaderName, Message, MessageWriter, Method, Salvaged, StatusCode};

/// §17.1.1.3: the ACK for a non-2xx final response, built from the INVITE
/// and the response. `None` if either lacks a field the ACK must copy.
pub fn ack_for(request: &Message<'_>, response: &Message<'_>) -> Option<Vec<u8>> {
    let rl = request.request_line()?;
    let headers = request.headers();
    // "a single Via header field … equal to the top Via … of the original request"
    let top_via = ListIter::new(headers.first(HeaderName::Via)?.value()).next()?;
    let from = headers.first(HeaderName::From)?.value();
    let call_id = headers.first(HeaderName::CallId)?.value();
    let seq = request.cseq()?.ok()?.seq();
    let to = response.headers().first(HeaderName::To)?.value();
    let mut buf = Vec::with_capacity(request.len().min(1024));
    let mut w = MessageWriter::request(&mut buf, Method::Ack, rl.uri);
    w.header_bytes("Via", top_via);
    w.header("Max-Forwards", 70);
    w.header_bytes("From", from);
    w.header_bytes("To", to);
    w.header_bytes("Call-ID", call_id);
    w.header("CSeq", format_args!("{seq} ACK"));
    // "If the INVITE request … contained Route header fields, the ACK MUST
    // contain those header fields."
    for route in headers.all(HeaderName::Route) {
        w.header_bytes("Route", route.value());
    }
    w.finish(b"");
    Some(buf)
}

/// §17.2.1 / §8.2.6.1: a 100 Trying for `request` (no To tag is added).
pub fn trying_for(request: &Message<'_>) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let code = StatusCode::new(100)?;
    Salvaged::from_message(request).write_response(&mut buf, code, "", "").then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_copies_what_17_1_1_3_says() {
        let inv = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8, SIP/2.0/UDP other\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Route: <sip:p2.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        let resp = b"SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        let ack = ack_for(&Message::parse(inv).unwrap(), &Message::parse(resp).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(ack).unwrap(),
            "ACK sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 ACK\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Route: <sip:p2.example.com;lr>\r\n\
Content-Length: 0\r\n\r\n"
        );
        let trying = trying_for(&Message::parse(inv).unwrap()).unwrap();
        let t = Message::parse(&trying).unwrap();
        assert_eq!(t.status().unwrap().as_u16(), 100);
        assert_eq!(t.to().unwrap().unwrap().tag(), None);
        assert_eq!(t.vias().count(), 2);
    }
}
