//! Route information preprocessing (RFC 3261 §16.4) and the next hop it
//! leads to (§16.6 step 7, loose routing §16.12).

use super::{code, ProxyIdentity, Reject, RejectKind};
use crate::message::headers::Address;
use crate::message::{HeaderName, Message, Uri};

/// Where a request goes after §16.4, before any location lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NextHop {
    /// No Route value remains: send to the target — the Request-URI, or
    /// the URIs the location service gives (§16.5) — resolved per RFC 3263.
    #[default]
    Target,
    /// The top remaining Route value is a loose router (`;lr`, §16.12):
    /// send to this URI; the Request-URI stays the target.
    Loose(String),
    /// The top remaining Route value is a strict router (no `;lr`):
    /// [`forward_request`](super::forward_request) moves it into the
    /// Request-URI and the target to the end of the Route (§16.6 step 6);
    /// send to this URI.
    Strict(String),
}

/// What §16.4 decided for a request: how its Request-URI and Route are to
/// be rewritten, where it goes next and whether the location service is
/// asked. Pass it to [`Forward`](super::Forward).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteInfo {
    request_uri: Option<String>,
    drop_last: bool,
    /// How many of the top Route values name us (removed).
    drop_first: usize,
    next_hop: NextHop,
    lookup: bool,
}

impl RouteInfo {
    /// §16.4: the Request-URI was a value we placed in Record-Route (a
    /// strict router before us moved it there), so the request's real
    /// Request-URI is this — the last Route value, which is removed.
    pub fn request_uri(&self) -> Option<&str> {
        self.request_uri.as_deref()
    }

    /// Whether the last Route value goes (it became the Request-URI).
    pub fn removes_last_route(&self) -> bool {
        self.drop_last
    }

    /// §16.4: whether the top Route value named this proxy and goes.
    pub fn removes_own_route(&self) -> bool {
        self.drop_first > 0
    }

    /// How many of the top Route values name this proxy and go: one, or
    /// two when we record-routed twice (RFC 5658 §3.4: a proxy that changed
    /// transport or interface between the legs of a dialog finds both of
    /// its entries on top of the route set), 0 when none does.
    pub fn own_routes(&self) -> usize {
        self.drop_first
    }

    /// Where the request goes next (§16.6 step 7, before any retargeting).
    pub fn next_hop(&self) -> &NextHop {
        &self.next_hop
    }

    /// §16.5: whether to ask the location service for the targets — no
    /// Route value remains and the Request-URI (after the fix-up) is for a
    /// domain this proxy is responsible for. Otherwise the Request-URI is
    /// the only target.
    pub fn lookup(&self) -> bool {
        self.lookup
    }
}

/// Whether `uri` is one of the values we place in Record-Route (see
/// [`record_route_value`](super::record_route_value)): our host and port,
/// no user part, and the `lr` parameter we always write.
fn is_our_record_route(uri: &Uri<'_>, me: &ProxyIdentity) -> bool {
    uri.as_sip().is_some_and(|s| s.user().is_none() && s.params().contains("lr")) && me.is_me_uri(uri)
}

/// §16.4 Route information preprocessing, on a request that passed
/// [`check_request`](super::check_request).
///
/// 1. If the Request-URI is a value we placed in Record-Route and a Route
///    is present, a strict router upstream moved it there: the real
///    Request-URI is the last Route value, which is removed.
/// 2. If the (remaining) top Route value names us, it is removed — and
///    so is every value after it that names us too (RFC 5658: the two
///    entries of a double Record-Route).
/// 3. The next hop is the new top Route value (loose with `;lr`, §16.12,
///    else strict), or the target when none remains; the location service
///    is consulted only then, and only for our domains (§16.5).
///
/// Refused with 400 when the Request-URI or a Route value is malformed.
pub fn preprocess_routes(m: &Message<'_>, me: &ProxyIdentity) -> Result<RouteInfo, Reject> {
    let Some(rl) = m.request_line() else {
        return Err(Reject::new(RejectKind::NotARequest, code::BAD_REQUEST));
    };
    let uri = rl.parse_uri().map_err(|_| Reject::new(RejectKind::MalformedRequestUri, code::BAD_REQUEST))?;
    let routes: Vec<Address<'_>> =
        m.routes().collect::<Result<_, _>>().map_err(|_| Reject::malformed(HeaderName::Route))?;
    let mut info = RouteInfo::default();
    let mut target = uri;
    let mut rest = &routes[..];
    // §16.4: "If the Request-URI of the request contains a value this proxy
    // previously placed into a Record-Route header field …, the proxy MUST
    // replace the Request-URI in the request with the last value from the
    // Route header field, and remove that value from the Route header field."
    if let (Some((last, before)), true) = (routes.split_last(), is_our_record_route(&uri, me)) {
        target = *last.uri();
        info.request_uri = Some(last.uri().as_str().to_owned());
        info.drop_last = true;
        rest = before;
    }
    // §16.4: "If the first value in the Route header field indicates this
    // proxy, the proxy MUST remove that value from the request." RFC 5658
    // §3.4: with double Record-Route, the next value is ours as well.
    while let Some((first, after)) = rest.split_first() {
        if !me.is_me_uri(first.uri()) {
            break;
        }
        info.drop_first += 1;
        rest = after;
    }
    // §16.6 step 7 / §16.12: the next hop is the top remaining Route value.
    info.next_hop = match rest.first() {
        None => NextHop::Target,
        Some(r) if r.uri().as_sip().is_some_and(|s| s.params().contains("lr")) => {
            NextHop::Loose(r.uri().as_str().to_owned())
        }
        Some(r) => NextHop::Strict(r.uri().as_str().to_owned()),
    };
    // §16.5: the location service only for our domains, with no Route left.
    info.lookup = info.next_hop == NextHop::Target && me.is_responsible_for(&target);
    Ok(info)
}
