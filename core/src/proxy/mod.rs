//! The stateless message rules of a SIP proxy (RFC 3261 §16).
//!
//! A stateful proxy (server transaction, one client transaction per branch,
//! timer C) is built from these pure functions; each one reads parsed
//! messages and returns bytes or a decision, holding no state beyond what
//! it is given:
//!
//! - [`check_request`] — §16.3 steps 3–5: Max-Forwards (483, or answer an
//!   OPTIONS yourself), loop detection (482), Proxy-Require (420).
//! - [`preprocess_routes`] — §16.4: the strict-router Request-URI fix-up,
//!   our own Route value removed, the next hop and whether the location
//!   service is to be consulted (§16.5).
//! - [`branch_for`] — §16.6 step 8: a branch hashed from the request, so
//!   a looped request gives the same value (the check of §16.3 step 4).
//! - [`forward_request`] — §16.6 steps 1–9: the bytes of the copy sent on
//!   one branch. [`forward_cancel`] — §16.10: the CANCEL for one branch.
//! - [`forward_response`] — §16.7 step 3/9: a response with our Via removed.
//! - [`ResponseContext`] — §16.7 steps 4–7: what to do with each response,
//!   and the best final response once every branch has answered.
//!
//! Rewriting keeps every header field the proxy does not own as written —
//! its name (compact forms too) and its value octet for octet, folds
//! included — in order; only the spacing around the colon becomes `": "`.
//!
//! ```
//! use sipline::message::Message;
//! use sipline::proxy::{branch_for, check_request, forward_request, preprocess_routes, Forward, ProxyIdentity};
//!
//! let me = ProxyIdentity::new().host("proxy.example.com").port(5060).domain("example.com");
//! let invite = b"INVITE sip:bob@example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP pc33.example.net;branch=z9hG4bK776asdhds\r\n\
//! Max-Forwards: 70\r\n\
//! To: Bob <sip:bob@example.com>\r\n\
//! From: Alice <sip:alice@example.net>;tag=1928301774\r\n\
//! Call-ID: a84b4c76e66710\r\n\
//! CSeq: 314159 INVITE\r\n\
//! Content-Length: 0\r\n\r\n";
//! let m = Message::parse(invite)?;
//! check_request(&m, &me)?;
//! let routes = preprocess_routes(&m, &me)?;
//! assert!(routes.lookup()); // for example.com, no Route: ask the location service
//! let branch = branch_for(&m, 0);
//! let fwd = Forward::new(&routes, "UDP", "proxy.example.com:5060", &branch)
//!     .target("sip:bob@192.0.2.4")
//!     .record_route("<sip:proxy.example.com:5060;transport=udp;lr>");
//! let bytes = forward_request(&m, &fwd).expect("a request");
//! let out = Message::parse(&bytes)?;
//! assert_eq!(out.request_line().unwrap().uri, "sip:bob@192.0.2.4");
//! assert_eq!(out.max_forwards(), Some(Ok(69)));
//! assert_eq!(out.via().unwrap()?.branch(), Some(branch.as_str()));
//! assert_eq!(out.vias().count(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod branch;
mod forward;
mod response;
mod route;

pub use branch::branch_for;
pub use forward::{forward_cancel, forward_request, forward_response, record_route_value, Forward};
pub use response::{Action, Best, BranchId, ResponseContext};
pub use route::{preprocess_routes, NextHop, RouteInfo};

use crate::message::headers::Via;
use crate::message::{HeaderName, Host, Message, Method, Salvaged, StatusCode, Uri};
use std::fmt;
use std::net::IpAddr;

/// The status codes the rules produce, checked at compile time.
mod code {
    use crate::message::StatusCode;

    const fn status(code: u16) -> StatusCode {
        match StatusCode::new(code) {
            Some(c) => c,
            None => unreachable!(),
        }
    }

    pub(super) const BAD_REQUEST: StatusCode = status(400);
    pub(super) const REQUEST_TIMEOUT: StatusCode = status(408);
    pub(super) const BAD_EXTENSION: StatusCode = status(420);
    pub(super) const LOOP_DETECTED: StatusCode = status(482);
    pub(super) const TOO_MANY_HOPS: StatusCode = status(483);
    pub(super) const SERVER_ERROR: StatusCode = status(500);
    pub(super) const UNAVAILABLE: StatusCode = status(503);
}

/// Who "we" are: the host names and addresses, ports, domains and option
/// tags a proxy uses to recognise itself in a Via sent-by (§16.3 step 4),
/// a Route or a Request-URI (§16.4), and to decide what it serves (§16.5).
///
/// A sent-by or URI names us when its host is one of [`host`](Self::host)
/// (names compare case-insensitively, addresses by value) and its port —
/// the default one for its transport when not written (5060, 5061 for TLS
/// and `sips:`) — is one of [`port`](Self::port). With no port configured,
/// 5060 and 5061 are ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyIdentity {
    hosts: Vec<OurHost>,
    ports: Vec<u16>,
    domains: Vec<String>,
    supported: Vec<String>,
}

/// One of our host names or addresses, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OurHost {
    /// A name, lower case, without a trailing dot.
    Name(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

/// Lower case, trailing dot removed (§19.1.4: hosts compare case-insensitively).
fn normalise_name(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

impl OurHost {
    fn parse(s: &str) -> OurHost {
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        match bare.parse::<IpAddr>() {
            Ok(ip) => OurHost::Ip(ip),
            Err(_) => OurHost::Name(normalise_name(s)),
        }
    }

    fn matches(&self, host: &Host<'_>) -> bool {
        match (self, host) {
            (OurHost::Name(n), Host::Domain(d)) => n.eq_ignore_ascii_case(d.trim_end_matches('.')),
            (OurHost::Ip(ip), h) => h.ip() == Some(*ip),
            (OurHost::Name(_), _) => false,
        }
    }
}

impl ProxyIdentity {
    /// An identity with no hosts, ports, domains or option tags.
    pub fn new() -> ProxyIdentity {
        ProxyIdentity::default()
    }

    /// Adds a host name or address that names this proxy (`proxy.example.com`,
    /// `192.0.2.10`, `[2001:db8::10]`): every name it may appear under in a
    /// Via sent-by, Record-Route or Route.
    #[must_use]
    pub fn host(mut self, host: &str) -> ProxyIdentity {
        self.hosts.push(OurHost::parse(host));
        self
    }

    /// Adds a port this proxy listens on.
    #[must_use]
    pub fn port(mut self, port: u16) -> ProxyIdentity {
        self.ports.push(port);
        self
    }

    /// Adds a domain this proxy is responsible for (§16.5): requests for it
    /// go to the location service.
    #[must_use]
    pub fn domain(mut self, domain: &str) -> ProxyIdentity {
        self.domains.push(normalise_name(domain));
        self
    }

    /// Adds an option tag this proxy understands (§16.3 step 5, §19.2).
    #[must_use]
    pub fn supported(mut self, tag: &str) -> ProxyIdentity {
        self.supported.push(tag.to_owned());
        self
    }

    /// Whether this proxy understands option tag `tag` (compared
    /// case-insensitively, as [`crate::message::validate`] does for Require).
    pub fn supports(&self, tag: &str) -> bool {
        self.supported.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }

    fn is_our_port(&self, port: u16) -> bool {
        if self.ports.is_empty() {
            port == 5060 || port == 5061
        } else {
            self.ports.contains(&port)
        }
    }

    fn is_our_host(&self, host: &Host<'_>) -> bool {
        self.hosts.iter().any(|h| h.matches(host))
    }

    /// Whether a Via sent-by names this proxy (§16.3 step 4): our host, and
    /// our port (written, or the transport's default).
    pub fn is_me_via(&self, via: &Via<'_>) -> bool {
        let default = if via.transport().eq_ignore_ascii_case("TLS") { 5061 } else { 5060 };
        self.is_our_host(&via.host()) && self.is_our_port(via.port().unwrap_or(default))
    }

    /// Whether a URI names this proxy itself (§16.4: a Route value or a
    /// Request-URI we placed in Record-Route): a SIP or SIPS URI with our
    /// host and port (written, or the default for `sips:` / `transport=tls`).
    /// The user part is not looked at.
    pub fn is_me_uri(&self, uri: &Uri<'_>) -> bool {
        let Some(sip) = uri.as_sip() else { return false };
        let tls = sip.is_secure() || sip.transport().is_some_and(|t| t.eq_ignore_ascii_case("tls"));
        let default = if tls { 5061 } else { 5060 };
        self.is_our_host(&sip.host()) && self.is_our_port(sip.port().unwrap_or(default))
    }

    /// Whether a Request-URI is one this proxy is responsible for (§16.5):
    /// a SIP or SIPS URI whose host is one of our domains or one of our
    /// hosts, and whose port is one of ours or not written (§19.1.4: the
    /// port is part of the URI). A UA at another port of our own address
    /// is not us: `sip:carol@192.0.2.10:37290` is somebody else's, and
    /// requests for it are forwarded there.
    pub fn is_responsible_for(&self, uri: &Uri<'_>) -> bool {
        let Some(sip) = uri.as_sip() else { return false };
        let host = sip.host();
        let our_host = self.is_our_host(&host)
            || matches!(host, Host::Domain(d) if self.domains.iter().any(|x| x.eq_ignore_ascii_case(d.trim_end_matches('.'))));
        our_host && sip.port().is_none_or(|p| self.is_our_port(p))
    }
}

/// Why [`check_request`] (or [`preprocess_routes`]) refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectKind {
    /// Max-Forwards is 0 (§16.3 step 3): answer 483.
    TooManyHops,
    /// Max-Forwards is 0 on an OPTIONS (§16.3 step 3, §11): the proxy may
    /// answer it itself as a UAS; if it does not, it answers with the
    /// carried 483.
    OptionsForUs,
    /// The request has been here before unchanged (§16.3 step 4): 482.
    LoopDetected,
    /// Proxy-Require names option tags we do not support (§16.3 step 5):
    /// 420 with an Unsupported header listing them.
    BadExtension,
    /// A header this step reads is malformed (400).
    Malformed(HeaderName),
    /// The Request-URI does not parse (400).
    MalformedRequestUri,
    /// The message is a response, not a request.
    NotARequest,
}

/// A refusal: the kind, and the response it earns — status code, reason
/// phrase and extra header fields (§16.3: "the element MUST return …").
///
/// An ACK is never answered (§17): drop it whatever the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Which rule refused the request.
    pub kind: RejectKind,
    /// The status code to answer with.
    pub code: StatusCode,
    /// The reason phrase.
    pub reason: &'static str,
    /// Header fields the response carries besides the copied ones
    /// (Unsupported for a 420), as (name, value).
    pub headers: Vec<(String, String)>,
}

impl Reject {
    fn new(kind: RejectKind, code: StatusCode) -> Reject {
        Reject { kind, code, reason: code.canonical_reason(), headers: Vec::new() }
    }

    pub(crate) fn malformed(name: HeaderName) -> Reject {
        Reject::new(RejectKind::Malformed(name), code::BAD_REQUEST)
    }

    /// Writes the response to `request` into `buf` (§8.2.6: Via, From, To,
    /// Call-ID and CSeq copied, `to_tag` added to a To without one, then
    /// [`headers`](Self::headers)). `false` (nothing written) if the
    /// request lacks a field the response copies, or is an ACK.
    pub fn write_response(&self, request: &Message<'_>, to_tag: &str, buf: &mut Vec<u8>) -> bool {
        let extra: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        Salvaged::from_message(request).write_response_with(buf, self.code, self.reason, to_tag, &extra)
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

impl std::error::Error for Reject {}

/// §16.3 steps 3–5: the checks a proxy makes on a request after its syntax
/// (step 1, [`crate::message::validate::validate`]) and before routing.
///
/// - Step 3, Max-Forwards: absent is fine (the forwarded copy gets 70);
///   0 refuses with 483 — or, for OPTIONS, [`RejectKind::OptionsForUs`].
/// - Step 4, loop detection: a Via with our sent-by whose branch holds
///   the hash [`branch_for`] computes for this request now (with the Via
///   below ours standing for the top Via it had when we forwarded it) is
///   a loop: 482. Our Via with another hash is a spiral, allowed.
/// - Step 5, Proxy-Require: option tags we do not support earn a 420
///   listing them in Unsupported (not for ACK or CANCEL, which cannot be
///   refused for extensions, as in §8.2.2.3).
///
/// Steps 2 (URI scheme) and 6 (Proxy-Authorization) are the caller's.
pub fn check_request(m: &Message<'_>, me: &ProxyIdentity) -> Result<(), Reject> {
    let Some(method) = m.method() else {
        return Err(Reject::new(RejectKind::NotARequest, code::BAD_REQUEST));
    };
    // §16.3 step 3: Max-Forwards.
    match m.max_forwards() {
        None | Some(Ok(1..)) => {}
        Some(Ok(0)) if *method == Method::Options => {
            return Err(Reject::new(RejectKind::OptionsForUs, code::TOO_MANY_HOPS));
        }
        Some(Ok(0)) => return Err(Reject::new(RejectKind::TooManyHops, code::TOO_MANY_HOPS)),
        Some(Err(_)) => return Err(Reject::malformed(HeaderName::MaxForwards)),
    }
    // §16.3 step 4: loop detection.
    if branch::is_loop(m, me) {
        return Err(Reject::new(RejectKind::LoopDetected, code::LOOP_DETECTED));
    }
    // §16.3 step 5: Proxy-Require.
    if !matches!(method, Method::Ack | Method::Cancel) {
        let mut unknown: Vec<&str> = Vec::new();
        for tag in m.proxy_require() {
            let tag = tag.map_err(|_| Reject::malformed(HeaderName::ProxyRequire))?;
            if !me.supports(tag) && !unknown.contains(&tag) {
                unknown.push(tag);
            }
        }
        if !unknown.is_empty() {
            let mut r = Reject::new(RejectKind::BadExtension, code::BAD_EXTENSION);
            r.headers.push(("Unsupported".to_owned(), unknown.join(", ")));
            return Err(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
