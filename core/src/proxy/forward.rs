//! Writing the messages a proxy sends: the copy of a request for one
//! branch (RFC 3261 §16.6), the CANCEL for one branch (§16.10, §9.1) and a
//! response passed upstream (§16.7 steps 3 and 9).
//!
//! Every header field the proxy does not own is copied as written — its
//! name (compact forms too) and its value, folds included — in order; the
//! spacing around the colon becomes `": "`.

use super::RouteInfo;
use crate::message::grammar::offset_of;
use crate::message::headers::{Address, Credentials, HeaderValue, ListIter};
use crate::message::{HeaderName, Message, Method, StatusCode};
use std::fmt::Write as _;

/// How to write the copy of a request for one branch (§16.6).
///
/// ```
/// use sipline::proxy::{record_route_value, Forward, RouteInfo};
/// let routes = RouteInfo::default();
/// let rr = record_route_value("proxy.example.com", 5060, "UDP");
/// let f = Forward::new(&routes, "UDP", "proxy.example.com:5060", "z9hG4bKx.0").record_route(&rr);
/// assert_eq!(f.record_route, Some("<sip:proxy.example.com:5060;transport=udp;lr>"));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Forward<'f> {
    /// What §16.4 decided ([`preprocess_routes`](super::preprocess_routes)):
    /// the Request-URI fix-up and the Route values to remove.
    pub routes: &'f RouteInfo,
    /// §16.6 step 2: the target's URI, written as the new Request-URI;
    /// `None` keeps the Request-URI (after the §16.4 fix-up).
    pub target: Option<&'f str>,
    /// §16.6 step 4: a Record-Route value to insert above the existing ones
    /// (see [`record_route_value`]).
    pub record_route: Option<&'f str>,
    /// §16.6 step 8: the transport of our Via (`UDP`, `TCP`, `TLS`…).
    pub transport: &'f str,
    /// §16.6 step 8: the sent-by of our Via, `host[:port]` (IPv6 in brackets).
    pub sent_by: &'f str,
    /// §16.6 step 8: the branch of our Via ([`branch_for`](super::branch_for)).
    pub branch: &'f str,
    /// §16.6 step 5: further header fields to add, as (name, value).
    pub extra_headers: &'f [(&'f str, &'f str)],
    /// §22.3: our realm, when we checked the request's credentials: the
    /// Proxy-Authorization lines for it are consumed (not forwarded);
    /// those for other realms always go on.
    pub consume_realm: Option<&'f str>,
    /// Header fields left out of the copy, by name (compared
    /// case-insensitively): e.g. an identity an untrusted sender asserted
    /// (RFC 3325 §5: `P-Asserted-Identity`).
    pub remove_headers: &'f [&'f str],
}

impl<'f> Forward<'f> {
    /// A copy that keeps the Request-URI, adds no Record-Route and carries
    /// `Via: SIP/2.0/TRANSPORT sent_by;branch=branch;rport`.
    pub fn new(routes: &'f RouteInfo, transport: &'f str, sent_by: &'f str, branch: &'f str) -> Forward<'f> {
        Forward {
            routes,
            target: None,
            record_route: None,
            transport,
            sent_by,
            branch,
            extra_headers: &[],
            consume_realm: None,
            remove_headers: &[],
        }
    }

    /// Sets the new Request-URI (§16.6 step 2).
    #[must_use]
    pub fn target(mut self, uri: &'f str) -> Forward<'f> {
        self.target = Some(uri);
        self
    }

    /// Sets the Record-Route value to insert (§16.6 step 4).
    #[must_use]
    pub fn record_route(mut self, value: &'f str) -> Forward<'f> {
        self.record_route = Some(value);
        self
    }

    /// Consumes the Proxy-Authorization lines for `realm` (§22.3: a
    /// proxy may remove the credentials it checked, and must keep those
    /// for other realms).
    #[must_use]
    pub fn consume_credentials(mut self, realm: &'f str) -> Forward<'f> {
        self.consume_realm = Some(realm);
        self
    }

    /// Leaves the header fields named `names` out of the copy.
    #[must_use]
    pub fn remove_headers(mut self, names: &'f [&'f str]) -> Forward<'f> {
        self.remove_headers = names;
        self
    }

    /// Sets header fields to add (§16.6 step 5).
    #[must_use]
    pub fn extra_headers(mut self, headers: &'f [(&'f str, &'f str)]) -> Forward<'f> {
        self.extra_headers = headers;
        self
    }
}

/// A Record-Route value naming this proxy (§16.6 step 4), in the form
/// [`preprocess_routes`](super::preprocess_routes) recognises when it comes
/// back as a Request-URI: `<sip:HOST:PORT;transport=T;lr>` (`lr`: we are a
/// loose router, §16.12). `host` is written as given (IPv6 in brackets).
pub fn record_route_value(host: &str, port: u16, transport: &str) -> String {
    format!("<sip:{host}:{port};transport={};lr>", transport.to_ascii_lowercase())
}

/// Appends `name: value CRLF`.
fn push_header(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Ends the header section (§16.6 step 9: a Content-Length is added when
/// the message had none, as stream transports need it) and appends the body.
fn push_end(buf: &mut Vec<u8>, m: &Message<'_>) {
    if m.content_length().is_none() {
        let _ = write!(Sink(buf), "Content-Length: {}\r\n", m.body().len());
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(m.body());
}

/// Lets `write!` format into a byte buffer.
struct Sink<'b>(&'b mut Vec<u8>);
impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Whether a Proxy-Authorization value carries credentials for `realm`
/// (§22.3: one value per line, its `realm` parameter compared exactly).
fn credentials_for(value: &[u8], realm: &str) -> bool {
    Credentials::parse_value(value).is_some_and(|c| c.realm().is_some_and(|r| r == realm))
}

fn is_loose(a: &Address<'_>) -> bool {
    a.uri().as_sip().is_some_and(|s| s.params().contains("lr"))
}

/// §16.6 steps 1–9: the bytes of the copy of request `m` for one branch.
/// `None` if `m` is a response.
///
/// 1. The copy keeps every header field as written, in order, and the body.
/// 2. Request-URI: [`Forward::target`], else the §16.4 fix-up, else as received.
/// 3. Max-Forwards decremented; added as 70 after the Via fields when
///    absent (or unreadable).
/// 4. [`Forward::record_route`] inserted above the existing Record-Route
///    fields (after the Via fields when there are none).
/// 5. [`Forward::extra_headers`] appended; the Proxy-Authorization lines
///    for [`Forward::consume_realm`] left out (§22.3).
/// 6. Our Route values removed (§16.4, RFC 5658); if the top remaining Route value is
///    a strict router (no `lr`), it becomes the Request-URI and the
///    Request-URI goes to the end of the Route.
/// 7. The next hop is the caller's ([`RouteInfo::next_hop`]).
/// 8. `Via: SIP/2.0/TRANSPORT sent-by;branch=…;rport` (RFC 3581) inserted
///    above the existing Via fields.
/// 9. Content-Length kept; added when absent.
pub fn forward_request(m: &Message<'_>, f: &Forward<'_>) -> Option<Vec<u8>> {
    let rl = m.request_line()?;
    let headers = m.headers();
    // Every Route value with the index of its line, top first.
    let routes: Vec<(usize, &[u8])> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.kind() == HeaderName::Route)
        .flat_map(|(i, h)| ListIter::new(h.value()).map(move |v| (i, v)))
        .collect();
    let mut drop = vec![false; routes.len()];
    // §16.4: the last value became the Request-URI; the first named us.
    if f.routes.removes_last_route() {
        if let Some(d) = drop.last_mut() {
            *d = true;
        }
    }
    for d in drop.iter_mut().take(f.routes.own_routes()) {
        *d = true;
    }
    // §16.6 step 2: the Request-URI.
    let mut request_uri = f.target.or(f.routes.request_uri()).unwrap_or(rl.uri);
    // §16.6 step 6: a strict router next takes the Request-URI slot, and
    // the Request-URI goes to the end of the Route.
    let mut append_route = None;
    if let Some(k) = drop.iter().position(|d| !d) {
        if let Some(top) = routes.get(k).and_then(|(_, v)| Address::parse_value(v)) {
            if !is_loose(&top) {
                append_route = Some(request_uri);
                request_uri = top.uri().as_str();
                drop[k] = true;
            }
        }
    }
    let kinds: Vec<HeaderName> = headers.iter().map(crate::message::Header::kind).collect();
    let first = |k: HeaderName| kinds.iter().position(|&x| x == k);
    let last = |k: HeaderName| kinds.iter().rposition(|&x| x == k);
    let (first_via, last_via) = (first(HeaderName::Via), last(HeaderName::Via));
    let first_rr = first(HeaderName::RecordRoute);
    let first_mf = first(HeaderName::MaxForwards);
    let last_route = last(HeaderName::Route);
    // §16.6 step 3: Max-Forwards.
    let max_forwards = match m.max_forwards() {
        Some(Ok(v)) => v.saturating_sub(1),
        _ => 70,
    };
    // §16.6 step 8: our Via, with rport (RFC 3581).
    let via = format!("SIP/2.0/{} {};branch={};rport", f.transport.to_ascii_uppercase(), f.sent_by, f.branch);

    let mut buf = Vec::with_capacity(m.len() + via.len() + 128);
    buf.extend_from_slice(rl.method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(request_uri.as_bytes());
    buf.extend_from_slice(b" SIP/2.0\r\n");
    // What goes after the Via fields when there is nothing to stand next to.
    let after_vias = |buf: &mut Vec<u8>| {
        if let (None, Some(rr)) = (first_rr, f.record_route) {
            push_header(buf, "Record-Route", rr.as_bytes());
        }
        if first_mf.is_none() {
            push_header(buf, "Max-Forwards", b"70");
        }
    };
    if first_via.is_none() {
        push_header(&mut buf, "Via", via.as_bytes());
        after_vias(&mut buf);
    }
    let mut route_at = 0;
    for (i, h) in headers.iter().enumerate() {
        if Some(i) == first_via {
            push_header(&mut buf, "Via", via.as_bytes());
        }
        if Some(i) == first_rr {
            if let Some(rr) = f.record_route {
                push_header(&mut buf, "Record-Route", rr.as_bytes());
            }
        }
        match h.kind() {
            HeaderName::MaxForwards => {
                // A repeated Max-Forwards is dropped: the copy carries one.
                if Some(i) == first_mf {
                    push_header(&mut buf, h.name(), max_forwards.to_string().as_bytes());
                }
            }
            HeaderName::Route => {
                // The values of this line, with their drop marks.
                let n = routes[route_at..].iter().take_while(|(line, _)| *line == i).count();
                let line = &routes[route_at..route_at + n];
                let marks = &drop[route_at..route_at + n];
                route_at += n;
                if !marks.contains(&true) {
                    push_header(&mut buf, h.name(), h.value());
                } else if marks.contains(&false) {
                    let kept: Vec<&[u8]> = line.iter().zip(marks).filter(|(_, d)| !**d).map(|(r, _)| r.1).collect();
                    push_header(&mut buf, h.name(), &kept.join(&b", "[..]));
                }
            }
            HeaderName::ProxyAuthorization if f.consume_realm.is_some_and(|r| credentials_for(h.value(), r)) => {}
            _ if f.remove_headers.iter().any(|n| n.eq_ignore_ascii_case(h.name())) => {}
            _ => push_header(&mut buf, h.name(), h.value()),
        }
        if Some(i) == last_via {
            after_vias(&mut buf);
        }
        if Some(i) == last_route {
            if let Some(uri) = append_route {
                push_header(&mut buf, "Route", format!("<{uri}>").as_bytes());
            }
        }
    }
    // §16.6 step 5.
    for (name, value) in f.extra_headers {
        push_header(&mut buf, name, value.as_bytes());
    }
    push_end(&mut buf, m);
    Some(buf)
}

/// §16.10 / §9.1: the CANCEL for one branch, built from the INVITE we sent
/// on it (`invite`: the bytes [`forward_request`] wrote, parsed): the same
/// Request-URI, only our Via (so the branch matches), From, To, Call-ID,
/// the CSeq number with method CANCEL, the Route values, Max-Forwards 70
/// and no body. `None` if `invite` is not an INVITE or lacks one of those.
pub fn forward_cancel(invite: &Message<'_>) -> Option<Vec<u8>> {
    let rl = invite.request_line()?;
    if rl.method != Method::Invite {
        return None;
    }
    let h = invite.headers();
    // "A CANCEL constructed by a client MUST have only a single Via header
    // field value matching the top Via value in the request being cancelled."
    let via = ListIter::new(h.first(HeaderName::Via)?.value()).next()?;
    let from = h.first(HeaderName::From)?.value();
    let to = h.first(HeaderName::To)?.value();
    let call_id = h.first(HeaderName::CallId)?.value();
    let seq = invite.cseq()?.ok()?.seq();
    let mut buf = Vec::with_capacity(invite.len().min(2048));
    buf.extend_from_slice(b"CANCEL ");
    buf.extend_from_slice(rl.uri.as_bytes());
    buf.extend_from_slice(b" SIP/2.0\r\n");
    push_header(&mut buf, "Via", via);
    push_header(&mut buf, "Max-Forwards", b"70");
    // "The Request-URI, Call-ID, To, the numeric part of CSeq, and From
    // header fields in the CANCEL request MUST be identical to those in the
    // request being cancelled, including tags."
    push_header(&mut buf, "From", from);
    push_header(&mut buf, "To", to);
    push_header(&mut buf, "Call-ID", call_id);
    push_header(&mut buf, "CSeq", format!("{seq} CANCEL").as_bytes());
    // "If the request being cancelled contains a Route header field, the
    // CANCEL request MUST include that Route header field's values."
    for route in h.all(HeaderName::Route) {
        push_header(&mut buf, "Route", route.value());
    }
    buf.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(buf)
}

/// §16.7 step 3 / step 9: response `m` with its top Via value (ours)
/// removed, everything else as written. Only the first value goes when
/// the top Via line holds several. `None` if `m` is a request or no Via
/// value remains: the response was for this element and is not forwarded.
pub fn forward_response(m: &Message<'_>) -> Option<Vec<u8>> {
    rewrite_response(m, None, &[])
}

/// [`forward_response`], also replacing the status code (its reason phrase
/// becomes the RFC's) and appending header fields (name, value).
pub(super) fn rewrite_response(
    m: &Message<'_>,
    status: Option<StatusCode>,
    extra: &[(&str, &[u8])],
) -> Option<Vec<u8>> {
    let sl = m.status_line()?;
    let headers = m.headers();
    let top = headers.iter().position(|h| h.kind() == HeaderName::Via)?;
    let line = headers.at(top)?.value();
    let mut values = ListIter::new(line);
    values.next()?;
    // What stays of the top Via line: from its second value on, as written.
    let rest = values.next().and_then(|second| offset_of(line, second)).and_then(|at| line.get(at..));
    if rest.is_none() && headers.count(HeaderName::Via) < 2 {
        return None;
    }
    let mut buf = Vec::with_capacity(m.len() + extra.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
    buf.extend_from_slice(b"SIP/2.0 ");
    if let Some(code) = status {
        let _ = write!(Sink(&mut buf), "{} {}", code, code.canonical_reason());
    } else {
        let _ = write!(Sink(&mut buf), "{} ", sl.code);
        buf.extend_from_slice(sl.reason);
    }
    buf.extend_from_slice(b"\r\n");
    for (i, h) in headers.iter().enumerate() {
        if i == top {
            if let Some(rest) = rest {
                push_header(&mut buf, h.name(), rest);
            }
        } else {
            push_header(&mut buf, h.name(), h.value());
        }
    }
    for (name, value) in extra {
        push_header(&mut buf, name, value);
    }
    push_end(&mut buf, m);
    Some(buf)
}
