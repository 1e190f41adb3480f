//! Stamping a received request with where it really came from: the
//! `received` parameter (RFC 3261 §18.2.1) and a filled-in `rport`
//! (RFC 3581 §4) on the top Via.

use crate::message::headers::Via;
use crate::message::{Host, Message};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The request with its top Via stamped for a packet from `source`, or
/// `None` if nothing needs to change (or the request has no readable Via).
///
/// §18.2.1: `received` is added when the sent-by host is a name or an
/// address other than the source. RFC 3581 §4: an `rport` without a value
/// gets the source port, and then `received` is added in any case.
pub fn stamp_received(request: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    stamp_parsed(&Message::parse(request).ok()?, request, source)
}

/// [`stamp_received`] for a request already parsed: `m` is `request` parsed.
pub(crate) fn stamp_parsed(m: &Message<'_>, request: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let via = m.via()?.ok()?;
    let element = via.as_str().as_bytes();
    let out = stamped_via(&via, source)?;
    // Splice it in place of the old element.
    let start = crate::message::grammar::offset_of(request, element)?;
    let mut stamped = Vec::with_capacity(request.len() + 40);
    stamped.extend_from_slice(&request[..start]);
    stamped.extend_from_slice(out.as_bytes());
    stamped.extend_from_slice(&request[start + element.len()..]);
    Some(stamped)
}

/// The top Via element `via` of a request from `source`, stamped (see
/// [`stamp_received`]); `None` if it needs no stamp.
pub(crate) fn stamped_via(via: &Via<'_>, source: SocketAddr) -> Option<String> {
    let rport_empty = via.rport() == Some(None);
    let same_ip = match via.host() {
        Host::Domain(_) => false,
        h => h.ip() == Some(source.ip()),
    };
    if same_ip && !rport_empty {
        return None;
    }
    // Rebuild the element: sent-protocol, sent-by, then the parameters
    // with rport filled in and any stale received replaced. (Written
    // piece by piece: `write!` costs more than the rest of the stamp, and
    // every request from behind a NAT is stamped.)
    let mut out = String::with_capacity(via.as_str().len() + 40);
    for (part, then) in [(via.protocol(), "/"), (via.version(), "/"), (via.transport(), " "), (via.host_str(), "")] {
        out.push_str(part);
        out.push_str(then);
    }
    if let Some(p) = via.port() {
        out.push(':');
        push_decimal(&mut out, p);
    }
    for p in via.params() {
        if p.name().eq_ignore_ascii_case("received") {
            continue;
        }
        if p.name().eq_ignore_ascii_case("rport") {
            out.push_str(";rport=");
            push_decimal(&mut out, source.port());
            continue;
        }
        out.push(';');
        out.push_str(p.name());
        if let Some(v) = p.value() {
            if p.is_quoted() {
                out.push_str("=\"");
                out.push_str(v);
                out.push('"');
            } else {
                out.push('=');
                out.push_str(v);
            }
        }
    }
    // `received` holds a bare address, IPv6 included (§25 via-received).
    out.push_str(";received=");
    match source.ip() {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(&mut out, u16::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
    Some(out)
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789"[usize::from(n % 10)];
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(via: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:b@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn top_via(bytes: &[u8]) -> String {
        let m = Message::parse(bytes).unwrap();
        m.via().unwrap().unwrap().as_str().to_owned()
    }

    #[test]
    fn received_added_for_names_and_other_addresses() {
        let src: SocketAddr = "192.0.2.77:5060".parse().unwrap();
        let out = stamp_received(&req("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1"), src).unwrap();
        assert_eq!(top_via(&out), "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;received=192.0.2.77");
        let out = stamp_received(&req("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"), src).unwrap();
        assert_eq!(top_via(&out), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.77");
        // Same address as the sent-by: nothing to do.
        assert_eq!(stamp_received(&req("SIP/2.0/UDP 192.0.2.77;branch=z9hG4bK1"), src), None);
        // The stamped request still parses, with the rest untouched.
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.via().unwrap().unwrap().received(), Some(src.ip()));
        assert_eq!(m.call_id().unwrap().unwrap().as_str(), "c");
    }

    #[test]
    fn rport_filled_in_rfc3581() {
        let src: SocketAddr = "192.0.2.77:40123".parse().unwrap();
        let out = stamp_received(&req("SIP/2.0/UDP 192.0.2.77:5060;rport;branch=z9hG4bK1"), src).unwrap();
        assert_eq!(top_via(&out), "SIP/2.0/UDP 192.0.2.77:5060;rport=40123;branch=z9hG4bK1;received=192.0.2.77");
        // Only the top Via of a multi-value line changes; a stale received is replaced.
        let out = stamp_received(
            &req("SIP/2.0/UDP h.example.com;received=10.9.9.9;branch=z9hG4bK2, SIP/2.0/UDP other;branch=z9hG4bK3"),
            src,
        )
        .unwrap();
        let m = Message::parse(&out).unwrap();
        let vias: Vec<String> = m.vias().map(|v| v.unwrap().as_str().to_owned()).collect();
        assert_eq!(
            vias,
            ["SIP/2.0/UDP h.example.com;branch=z9hG4bK2;received=192.0.2.77", "SIP/2.0/UDP other;branch=z9hG4bK3"]
        );
        // IPv6 sources are written bare (§25 via-received).
        let v6: SocketAddr = "[2001:db8::9]:5060".parse().unwrap();
        let out = stamp_received(&req("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK4"), v6).unwrap();
        assert_eq!(top_via(&out), "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK4;received=2001:db8::9");
        assert_eq!(stamp_received(b"not sip", src), None);
    }
}
