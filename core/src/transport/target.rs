//! Where a request goes (RFC 3261 §18.1.1, RFC 3263 §4) and where a
//! response goes (§18.2.2).

use crate::message::headers::Via;
use crate::message::{Host, SipUri, Uri};
use std::net::{IpAddr, SocketAddr};

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP (unreliable, datagrams).
    Udp,
    /// TCP (reliable stream).
    Tcp,
    /// TLS over TCP (reliable stream).
    Tls,
}

impl Transport {
    /// Whether the transport is reliable (no retransmissions, §17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    /// The default port (§19.1.2): 5060, or 5061 for TLS.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
    /// The token in a Via or a `transport=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Reads a transport token, case-insensitively.
    pub fn from_token(t: &str) -> Option<Transport> {
        if t.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if t.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if t.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

/// Where to send: a transport, a host (to resolve unless it is an IP
/// literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The transport.
    pub transport: Transport,
    /// The host name or address, as written (IPv6 without brackets).
    pub host: String,
    /// The address, when the host is an IP literal.
    pub ip: Option<IpAddr>,
    /// The port.
    pub port: u16,
    /// RFC 3263 §4.2: the host is a name and no port was given, so SRV
    /// records are looked up first (`port` is then the fallback default).
    pub srv: bool,
}

impl Target {
    /// The socket address, when no name resolution is needed.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// Why a URI cannot be a request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Only SIP and SIPS URIs can be routed (a `tel:` URI needs a gateway).
    #[error("not a SIP or SIPS URI")]
    NotSip,
    /// The `transport=` parameter names a transport this stack lacks.
    #[error("unsupported transport")]
    UnsupportedTransport,
    /// `sips:` with a transport other than TLS (§26.2.2).
    #[error("sips: URI with a non-TLS transport")]
    InsecureTransport,
}

/// RFC 3263 §4.1–4.2 without DNS SRV/NAPTR: the transport comes from
/// `transport=`, else `sips:` means TLS, else `default`; the port from the
/// URI, else the transport's default; `maddr` overrides the host (§19.1.1).
pub fn target_for(uri: &Uri<'_>, default: Transport) -> Result<Target, TargetError> {
    let Some(sip) = uri.as_sip() else { return Err(TargetError::NotSip) };
    target_for_sip(sip, default)
}

fn target_for_sip(sip: &SipUri<'_>, default: Transport) -> Result<Target, TargetError> {
    let transport = match sip.transport() {
        Some(t) => Transport::from_token(t).ok_or(TargetError::UnsupportedTransport)?,
        None if sip.is_secure() => Transport::Tls,
        None => default,
    };
    if sip.is_secure() && transport != Transport::Tls {
        return Err(TargetError::InsecureTransport);
    }
    let (host, ip) = match sip.params().value("maddr") {
        Some(m) => (m.trim_matches(['[', ']']).to_owned(), m.trim_matches(['[', ']']).parse().ok()),
        None => match sip.host() {
            Host::Domain(d) => (d.to_owned(), None),
            h => (h.ip().map(|a| a.to_string()).unwrap_or_default(), h.ip()),
        },
    };
    let srv = ip.is_none() && sip.port().is_none();
    Ok(Target { transport, host, ip, port: sip.port().unwrap_or(transport.default_port()), srv })
}

/// §18.1.1: a request within 200 bytes of the path MTU (1500, so over
/// 1300 bytes) must not go over UDP when a congestion-controlled transport
/// can be used; it goes over TCP instead unless the target forbids that
/// (an explicit `transport=udp`). Returns the transport to use.
pub fn transport_for_size(transport: Transport, uri_forces_transport: bool, len: usize) -> Transport {
    if transport == Transport::Udp && len > 1300 && !uri_forces_transport {
        Transport::Tcp
    } else {
        transport
    }
}

/// §18.2.2: where a response goes, from the top Via of the request it
/// answers. `maddr` wins; otherwise the `received` address (falling back to
/// the sent-by host) with the `rport` port (RFC 3581 §4) or the sent-by
/// port. Over a reliable transport the response goes back on the
/// connection the request came on while it is open; this gives the target
/// for opening a new one.
pub fn response_target(via: &Via<'_>) -> Option<Target> {
    let hop = response_hop(via)?;
    let host = match (hop.name, hop.ip) {
        (Some(name), _) => name.to_owned(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => String::new(),
    };
    Some(Target { transport: hop.transport, host, ip: hop.ip, port: hop.port, srv: false })
}

/// [`response_target`] without owned strings (the receive path computes
/// one per request).
pub(crate) struct ResponseHop<'a> {
    pub(crate) transport: Transport,
    /// The host as written, when it is a name (or an `maddr`); `None` when
    /// the address comes from `received` or an IP sent-by.
    pub(crate) name: Option<&'a str>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: u16,
}

/// The §18.2.2 rules of [`response_target`].
pub(crate) fn response_hop<'a>(via: &Via<'a>) -> Option<ResponseHop<'a>> {
    let transport = Transport::from_token(via.transport())?;
    let default_port = via.port().unwrap_or(transport.default_port());
    if let Some(maddr) = via.maddr() {
        let name = maddr.trim_matches(['[', ']']);
        return Some(ResponseHop { transport, name: Some(name), ip: name.parse().ok(), port: default_port });
    }
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => default_port,
    };
    let (name, ip) = match via.received() {
        Some(ip) => (None, Some(ip)),
        None => match via.host() {
            Host::Domain(d) => (Some(d), None),
            h => (None, h.ip()),
        },
    };
    Some(ResponseHop { transport, name, ip, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::headers::HeaderValue;

    fn t(uri: &str, default: Transport) -> Result<Target, TargetError> {
        target_for(&Uri::parse(uri).unwrap(), default)
    }

    #[test]
    fn uri_to_target_rfc3263_without_dns() {
        let a = t("sip:bob@192.0.2.4", Transport::Udp).unwrap();
        assert_eq!(
            (a.transport, a.port, a.socket_addr()),
            (Transport::Udp, 5060, Some("192.0.2.4:5060".parse().unwrap()))
        );
        let b = t("sip:bob@example.com;transport=tcp", Transport::Udp).unwrap();
        assert_eq!((b.transport, b.host.as_str(), b.port, b.ip), (Transport::Tcp, "example.com", 5060, None));
        let c = t("sips:bob@example.com", Transport::Udp).unwrap();
        assert_eq!((c.transport, c.port), (Transport::Tls, 5061));
        let d = t("sip:[2001:db8::1]:5070;transport=TLS", Transport::Udp).unwrap();
        assert_eq!(d.socket_addr(), Some("[2001:db8::1]:5070".parse().unwrap()));
        let e = t("sip:bob@example.com;maddr=192.0.2.9", Transport::Tcp).unwrap();
        assert_eq!(e.socket_addr(), Some("192.0.2.9:5060".parse().unwrap()));
        assert_eq!(t("sips:bob@example.com;transport=udp", Transport::Udp), Err(TargetError::InsecureTransport));
        assert_eq!(t("sip:bob@example.com;transport=sctp", Transport::Udp), Err(TargetError::UnsupportedTransport));
        assert_eq!(t("tel:+15551234", Transport::Udp), Err(TargetError::NotSip));
    }

    #[test]
    fn large_requests_leave_udp_18_1_1() {
        let target = t("sip:bob@192.0.2.4", Transport::Udp).unwrap();
        assert_eq!(transport_for_size(target.transport, false, 1300), Transport::Udp);
        assert_eq!(transport_for_size(target.transport, false, 1301), Transport::Tcp);
        assert_eq!(
            transport_for_size(target.transport, true, 5000),
            Transport::Udp,
            "transport=udp forbids the switch"
        );
    }

    #[test]
    fn responses_follow_the_top_via_18_2_2() {
        let v = |s: &str| response_target(&Via::parse_value(s.as_bytes()).unwrap()).unwrap();
        let a = v("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;received=192.0.2.101");
        assert_eq!(a.socket_addr(), Some("192.0.2.101:5060".parse().unwrap()));
        let b = v("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK1;received=192.0.2.101;rport=40000");
        assert_eq!(b.socket_addr(), Some("192.0.2.101:40000".parse().unwrap()));
        let c = v("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1");
        assert_eq!(c.socket_addr(), Some("192.0.2.7:5070".parse().unwrap()));
        let d = v("SIP/2.0/UDP h.example.com;branch=z9hG4bK1;maddr=224.0.1.75;ttl=1");
        assert_eq!(d.socket_addr(), Some("224.0.1.75:5060".parse().unwrap()));
        let e = v("SIP/2.0/TLS h.example.com;branch=z9hG4bK1");
        assert_eq!((e.transport, e.host.as_str(), e.port, e.ip), (Transport::Tls, "h.example.com", 5061, None));
        assert!(response_target(&Via::parse_value(b"SIP/2.0/SCTP h;branch=z9hG4bK1").unwrap()).is_none());
    }
}
