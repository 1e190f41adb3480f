//! `Via` (RFC 3261 §20.42, §18.2.1; `rport` from RFC 3581; IPv6 `received`
//! forms from RFC 5118 §4.5).

use super::super::grammar::{fail, is_wsp, sep, sub, sws, token_bytes, PResult};
use super::super::params::{ParamSyntax, Params};
use super::super::uri::{host, host_kind, ipv4, ipv6, port_number, Host, HostKind};
use super::{whole, HeaderValue};
use std::fmt;
use std::net::IpAddr;

/// The branch magic cookie of RFC 3261 transactions (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value: `sent-protocol LWS sent-by *( SEMI via-params )`.
///
/// ```
/// use sipline::message::headers::Via;
/// use sipline::message::headers::HeaderValue;
/// let v = Via::parse_value(b"SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKas3;rport").unwrap();
/// assert_eq!(v.transport(), "UDP");
/// assert_eq!(v.port(), Some(6050));
/// assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
/// assert_eq!(v.rport(), Some(None));
/// assert!(v.has_magic_cookie());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    raw: &'a str,
    protocol: &'a str,
    version: &'a str,
    transport: &'a str,
    host: Host<'a>,
    host_raw: &'a str,
    port: Option<u16>,
    params: Params<'a>,
    branch: Option<&'a str>,
    // The parameters §18.2 reads for every response, found while parsing.
    received: Option<IpAddr>,
    #[allow(clippy::option_option)] // the same three cases `rport()` reports (RFC 3581)
    rport: Option<Option<u16>>,
    maddr: Option<&'a str>,
}

impl<'a> Via<'a> {
    /// The value as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// `protocol-name`, normally `SIP`.
    pub fn protocol(&self) -> &'a str {
        self.protocol
    }
    /// `protocol-version`, normally `2.0`.
    pub fn version(&self) -> &'a str {
        self.version
    }
    /// The transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`… or
    /// any other token, RFC 4475 §3.1.1.10).
    pub fn transport(&self) -> &'a str {
        self.transport
    }
    /// The host of `sent-by`.
    pub fn host(&self) -> Host<'a> {
        self.host
    }
    /// The host of `sent-by` as written.
    pub fn host_str(&self) -> &'a str {
        self.host_raw
    }
    /// The port of `sent-by`, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// All via-params.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `branch` parameter (§8.1.1.7).
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }
    /// Whether the branch starts with the RFC 3261 magic cookie (§17.2.3).
    pub fn has_magic_cookie(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }
    /// The `received` parameter (§18.2.1), bracketed or not (RFC 5118 §4.5).
    pub fn received(&self) -> Option<IpAddr> {
        self.received
    }
    /// `rport` (RFC 3581): `None` if absent, `Some(None)` if present without
    /// a value, `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport
    }
    /// The `maddr` parameter (§18.2.2).
    pub fn maddr(&self) -> Option<&'a str> {
        self.maddr
    }
    /// The `ttl` parameter, 0–255.
    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

fn parse_received(v: &str) -> Option<IpAddr> {
    let b = v.as_bytes();
    if let Some(inner) = b.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
        return ipv6(inner).map(IpAddr::V6);
    }
    ipv4(b).map(IpAddr::V4).or_else(|| ipv6(b).map(IpAddr::V6))
}

/// Parses a Via value lying within `base` (already checked UTF-8), so
/// every part is a slice of `base` rather than a new UTF-8 check.
fn via<'a>(base: &'a str, i: &'a [u8]) -> PResult<'a, Via<'a>> {
    let text = |part: &[u8]| sub(base, part).map_or_else(|| fail(i).map(|(_, ())| ""), Ok);
    let (r, protocol) = token_bytes(i)?;
    let (r, ()) = sep(b'/')(r)?;
    let (r, version) = token_bytes(r)?;
    let (r, ()) = sep(b'/')(r)?;
    let (r, transport) = token_bytes(r)?;
    let (protocol, version, transport) = (text(protocol)?, text(version)?, text(transport)?);
    // LWS is mandatory between sent-protocol and sent-by.
    let lws = sws(r);
    if lws.len() == r.len() || !r.first().is_some_and(|&c| is_wsp(c) || c == b'\r') {
        return fail(r);
    }
    let (r, kind) = host_kind(lws)?;
    let host_raw = text(&lws[..lws.len() - r.len()])?;
    let h = match kind {
        HostKind::Domain => Host::Domain(host_raw),
        HostKind::Ipv4(a) => Host::Ipv4(a),
        HostKind::Ipv6(a) => Host::Ipv6(a),
    };
    let (r, port) = match sep(b':')(r) {
        Ok((r2, ())) => {
            let (r2, p) = port_number(r2)?;
            (r2, Some(p))
        }
        Err(_) => (r, None),
    };
    let (rest, params) = Params::parse_within(base, r, ParamSyntax::Header)?;
    // Check the parameters whose grammar §25 fixes (and keep the branch,
    // which every transaction lookup asks for).
    let (mut branch, mut received, mut rport, mut maddr) = (None, None, None, None);
    // The first of each name counts, as `Params::get` would find it.
    let mut seen = (false, false, false, false);
    for p in params {
        let is = |n: &str| p.name().eq_ignore_ascii_case(n);
        let ok = if is("ttl") {
            p.value().is_some_and(|v| v.len() <= 3 && v.parse::<u8>().is_ok())
        } else if is("maddr") {
            if !std::mem::replace(&mut seen.3, true) {
                maddr = p.value();
            }
            p.value().is_some_and(|v| host(v.as_bytes()).is_ok_and(|(r, _)| r.is_empty()))
        } else if is("received") {
            let addr = p.value().and_then(parse_received);
            if !std::mem::replace(&mut seen.1, true) {
                received = addr;
            }
            addr.is_some()
        } else if is("branch") {
            if !std::mem::replace(&mut seen.0, true) {
                branch = p.value();
            }
            p.value().is_some_and(|v| !p.is_quoted() && !v.is_empty())
        } else if is("rport") {
            let port = p.value().map(|v| v.parse::<u16>().ok());
            if !std::mem::replace(&mut seen.2, true) {
                rport = Some(port.flatten());
            }
            port.is_none_or(|r| r.is_some())
        } else {
            true
        };
        if !ok {
            return fail(i);
        }
    }
    let raw = text(&i[..i.len() - rest.len()])?;
    Ok((
        rest,
        Via { raw, protocol, version, transport, host: h, host_raw, port, params, branch, received, rport, maddr },
    ))
}

impl<'a> HeaderValue<'a> for Via<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let base = std::str::from_utf8(value).ok()?;
        whole(value, |i| via(base, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Via<'_>> {
        Via::parse_value(s.as_bytes())
    }

    #[test]
    fn folded_and_spaced_via_from_rfc4475_wsinv() {
        let via = v("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!((via.protocol(), via.version(), via.transport()), ("SIP", "2.0", "UDP"));
        assert_eq!(via.branch(), Some("390skdjuw"));
        assert!(!via.has_magic_cookie());
        let via = v("SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(via.host(), Host::Domain("spindle.example.com"));
        assert_eq!(via.branch(), Some("z9hG4bK9ikj8"));
    }

    #[test]
    fn sent_by_and_params() {
        let via = v("SIP/2.0/TLS client.biloxi.example.com:5061;branch=z9hG4bKnashds7;received=192.0.2.201;ttl=16;maddr=224.2.0.1").unwrap();
        assert_eq!(via.port(), Some(5061));
        assert_eq!(via.received(), Some("192.0.2.201".parse().unwrap()));
        assert_eq!(via.ttl(), Some(16));
        assert_eq!(via.maddr(), Some("224.2.0.1"));
        assert_eq!(via.rport(), None);
        assert_eq!(v("SIP/2.0/UDP h;rport=5066;branch=z9hG4bKx").unwrap().rport(), Some(Some(5066)));
        let br = v("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3").unwrap();
        assert_eq!(br.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(br.branch(), Some("z9hG4bKas3"));
    }

    #[test]
    fn malformed_vias_are_rejected() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP192.0.2.1",
            "SIP/2.0 192.0.2.1",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host;ttl=256",
            "SIP/2.0/UDP host;received=example.com",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP host;rport=x",
            "",
        ] {
            assert!(v(bad).is_none(), "{bad}");
        }
    }
}
