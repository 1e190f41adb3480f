//! The proxy rules on real SIP bytes, checked through `Message::parse`.

use super::*;
use crate::message::headers::{Challenge, HeaderValue};

fn me() -> ProxyIdentity {
    ProxyIdentity::new()
        .host("proxy.example.com")
        .host("192.0.2.10")
        .port(5060)
        .domain("example.com")
        .supported("sec-agree")
}

fn code(c: u16) -> StatusCode {
    StatusCode::new(c).unwrap()
}

/// An INVITE as a UA sends it to us, with a body, a compact form, an
/// extension header with odd spacing and an earlier Record-Route.
const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.net:5060;branch=z9hG4bK776asdhds;received=198.51.100.7\r\n\
Max-Forwards: 70\r\n\
Record-Route: <sip:p1.example.net;lr>\r\n\
To: Bob <sip:bob@example.com>\r\n\
f: Alice <sip:alice@example.net>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example.net\r\n\
CSeq: 314159 INVITE\r\n\
X-Custom:   spaced ,  value\r\n\
Contact: <sip:alice@pc33.example.net>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\
\r\n\
v=0\r\n";

fn parse(b: &[u8]) -> Message<'_> {
    Message::parse(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// `INVITE` with `from` replaced by `to`.
fn invite_with(from: &str, to: &str) -> Vec<u8> {
    assert!(INVITE.contains(from), "{from}");
    INVITE.replacen(from, to, 1).into_bytes()
}

/// What another element does to a request it forwards: a new top Via,
/// and possibly a new Request-URI.
fn hop(bytes: &[u8], via: &str, request_uri: Option<&str>) -> Vec<u8> {
    let s = String::from_utf8(bytes.to_vec()).unwrap();
    let (first, rest) = s.split_once("\r\n").unwrap();
    let first = match request_uri {
        Some(u) => {
            let mut parts = first.split(' ');
            format!("{} {u} {}", parts.next().unwrap(), parts.nth(1).unwrap())
        }
        None => first.to_owned(),
    };
    format!("{first}\r\nVia: {via}\r\n{rest}").into_bytes()
}

fn forward_plain(m: &Message<'_>, index: u32, target: Option<&str>) -> Vec<u8> {
    let routes = preprocess_routes(m, &me()).unwrap();
    let branch = branch_for(m, index);
    let mut f = Forward::new(&routes, "UDP", "proxy.example.com:5060", &branch);
    if let Some(t) = target {
        f = f.target(t);
    }
    forward_request(m, &f).unwrap()
}

#[test]
fn identity_recognises_names_addresses_and_default_ports() {
    fn via(s: &str) -> crate::message::headers::Via<'_> {
        crate::message::headers::Via::parse_value(s.as_bytes()).unwrap()
    }
    fn uri(s: &str) -> Uri<'_> {
        Uri::parse(s).unwrap()
    }
    let id = ProxyIdentity::new().host("Proxy.Example.COM.").host("[2001:db8::10]").domain("Example.com");
    // No port configured: 5060 and 5061 are ours, written or implied.
    assert!(id.is_me_via(&via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1")));
    assert!(id.is_me_via(&via("SIP/2.0/TLS [2001:db8::10];branch=z9hG4bK1")));
    assert!(id.is_me_via(&via("SIP/2.0/TCP PROXY.example.com.:5061;branch=z9hG4bK1")));
    assert!(!id.is_me_via(&via("SIP/2.0/UDP proxy.example.com:5070;branch=z9hG4bK1")));
    assert!(!id.is_me_via(&via("SIP/2.0/UDP [2001:db8::11];branch=z9hG4bK1")));
    assert!(id.is_me_uri(&uri("sip:[2001:db8::10]:5060;lr")));
    assert!(id.is_me_uri(&uri("sips:proxy.example.com;lr")));
    assert!(!id.is_me_uri(&uri("tel:+15551234")));
    // With ports configured, an implied port must be one of them.
    let id = id.port(5080);
    assert!(!id.is_me_uri(&uri("sip:proxy.example.com;lr")));
    assert!(id.is_me_uri(&uri("sip:proxy.example.com:5080;lr")));
    assert!(!id.is_me_via(&via("SIP/2.0/TLS proxy.example.com;branch=z9hG4bK1")));
    // Responsibility (§16.5, §19.1.4): our domains and our hosts, at one
    // of our ports or with none written; another port of our own address
    // is another UA.
    assert!(id.is_responsible_for(&uri("sip:bob@example.COM")));
    assert!(id.is_responsible_for(&uri("sip:bob@proxy.example.com:5080")));
    assert!(id.is_responsible_for(&uri("sip:bob@[2001:db8::10];gr=urn:uuid:1")));
    assert!(!id.is_responsible_for(&uri("sip:bob@proxy.example.com:9999")));
    assert!(!id.is_responsible_for(&uri("sip:carol@[2001:db8::10]:37290")));
    assert!(!id.is_responsible_for(&uri("sip:bob@example.com:5070")));
    assert!(!id.is_responsible_for(&uri("sip:bob@sub.example.com")));
}

// §16.3 step 3 ------------------------------------------------------------

#[test]
fn max_forwards_zero_is_483() {
    let raw = invite_with("Max-Forwards: 70", "Max-Forwards: 0");
    let m = parse(&raw);
    let r = check_request(&m, &me()).unwrap_err();
    assert_eq!(r.kind, RejectKind::TooManyHops);
    assert_eq!((r.code.as_u16(), r.reason), (483, "Too Many Hops"));
    let mut out = Vec::new();
    assert!(r.write_response(&m, "px1", &mut out));
    let resp = parse(&out);
    assert_eq!(resp.status(), Some(code(483)));
    assert_eq!(resp.to().unwrap().unwrap().tag(), Some("px1"));
    assert_eq!(resp.vias().count(), 1);
    // 1 still goes through: the copy carries 0.
    let raw = invite_with("Max-Forwards: 70", "Max-Forwards: 1");
    assert_eq!(check_request(&parse(&raw), &me()), Ok(()));
}

#[test]
fn options_with_zero_max_forwards_is_ours_to_answer() {
    let raw = b"OPTIONS sip:proxy.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.net;branch=z9hG4bKopt1\r\n\
Max-Forwards: 0\r\n\
To: <sip:proxy.example.com>\r\n\
From: <sip:alice@example.net>;tag=9\r\n\
Call-ID: opt1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";
    let r = check_request(&parse(raw), &me()).unwrap_err();
    assert_eq!(r.kind, RejectKind::OptionsForUs);
    // What to send if the proxy does not answer the OPTIONS itself.
    assert_eq!(r.code.as_u16(), 483);
}

#[test]
fn missing_or_malformed_max_forwards() {
    let raw = invite_with("Max-Forwards: 70\r\n", "");
    assert_eq!(check_request(&parse(&raw), &me()), Ok(()));
    for bad in ["Max-Forwards: lots", "Max-Forwards: 256"] {
        let raw = invite_with("Max-Forwards: 70", bad);
        let r = check_request(&parse(&raw), &me()).unwrap_err();
        assert_eq!(r.kind, RejectKind::Malformed(HeaderName::MaxForwards), "{bad}");
        assert_eq!(r.code.as_u16(), 400);
    }
}

// §16.3 step 4 ------------------------------------------------------------

#[test]
fn a_request_back_unchanged_is_a_loop_a_retargeted_one_spirals() {
    let m0 = parse(INVITE.as_bytes());
    assert_eq!(check_request(&m0, &me()), Ok(()));
    // We retarget to bob-cell, which (misconfigured) points back at us.
    let f1 = forward_plain(&m0, 0, Some("sip:bob-cell@example.com"));
    // The next element stamps our Via (received, rport) and adds its own.
    let f1 = String::from_utf8(f1).unwrap().replacen(";rport", ";rport=5060;received=192.0.2.10", 1);
    let m1_raw = hop(f1.as_bytes(), "SIP/2.0/UDP x.example.org;branch=z9hG4bKx1", None);
    let m1 = parse(&m1_raw);
    // Our Via is there, but the Request-URI changed since: a spiral.
    assert_eq!(check_request(&m1, &me()), Ok(()));
    // The location service sends bob-cell back to bob: the request comes
    // back as we first received it.
    let f2 = forward_plain(&m1, 0, Some("sip:bob@example.com"));
    let m2_raw = hop(&f2, "SIP/2.0/UDP x.example.org;branch=z9hG4bKx2", None);
    let m2 = parse(&m2_raw);
    assert_eq!(m2.vias().count(), 5);
    let r = check_request(&m2, &me()).unwrap_err();
    assert_eq!(r.kind, RejectKind::LoopDetected);
    assert_eq!((r.code.as_u16(), r.reason), (482, "Loop Detected"));
}

#[test]
fn loops_are_found_on_any_fork_branch_and_only_for_our_sent_by() {
    let m0 = parse(INVITE.as_bytes());
    // Branch 3 of a fork, sent straight back to us (our Via on top).
    let back = forward_plain(&m0, 3, None);
    assert_eq!(check_request(&parse(&back), &me()).unwrap_err().kind, RejectKind::LoopDetected);
    // Someone else's Via with a branch of the same shape is not ours.
    let theirs = String::from_utf8(back.clone()).unwrap().replacen("proxy.example.com:5060;", "other.example.org;", 1);
    assert_eq!(check_request(&parse(theirs.as_bytes()), &me()), Ok(()));
    // Ours on another port is not ours either.
    let port =
        String::from_utf8(back.clone()).unwrap().replacen("proxy.example.com:5060;", "proxy.example.com:5070;", 1);
    assert_eq!(check_request(&parse(port.as_bytes()), &me()), Ok(()));
    // A changed To tag (say a fork answered and a new request came) is no loop.
    let changed =
        String::from_utf8(back).unwrap().replacen("<sip:bob@example.com>\r\n", "<sip:bob@example.com>;tag=zz\r\n", 1);
    assert_eq!(check_request(&parse(changed.as_bytes()), &me()), Ok(()));
}

// §16.3 step 5 ------------------------------------------------------------

#[test]
fn unsupported_proxy_require_is_420_listing_them() {
    let raw = invite_with(
        "CSeq: 314159 INVITE\r\n",
        "CSeq: 314159 INVITE\r\nProxy-Require: sec-agree, foo\r\nProxy-Require: bar, foo\r\n",
    );
    let m = parse(&raw);
    let r = check_request(&m, &me()).unwrap_err();
    assert_eq!(r.kind, RejectKind::BadExtension);
    assert_eq!((r.code.as_u16(), r.reason), (420, "Bad Extension"));
    assert_eq!(r.headers, [("Unsupported".to_owned(), "foo, bar".to_owned())]);
    let mut out = Vec::new();
    assert!(r.write_response(&m, "t1", &mut out));
    let resp = parse(&out);
    assert_eq!(resp.status(), Some(code(420)));
    assert_eq!(resp.unsupported().map(Result::unwrap).collect::<Vec<_>>(), ["foo", "bar"]);
    // Everything supported (case-insensitively): fine.
    let raw = invite_with("CSeq: 314159 INVITE\r\n", "CSeq: 314159 INVITE\r\nProxy-Require: Sec-Agree\r\n");
    assert_eq!(check_request(&parse(&raw), &me()), Ok(()));
    // A malformed option tag is a 400.
    let raw = invite_with("CSeq: 314159 INVITE\r\n", "CSeq: 314159 INVITE\r\nProxy-Require: a b\r\n");
    assert_eq!(check_request(&parse(&raw), &me()).unwrap_err().kind, RejectKind::Malformed(HeaderName::ProxyRequire));
}

#[test]
fn ack_and_cancel_are_not_refused_for_extensions() {
    for method in ["ACK", "CANCEL"] {
        let raw = INVITE.replace("INVITE", method).replacen("CSeq: 314159 ", "Proxy-Require: foo\r\nCSeq: 314159 ", 1);
        assert_eq!(check_request(&parse(raw.as_bytes()), &me()), Ok(()), "{method}");
    }
}

// §16.6 step 8 ------------------------------------------------------------

#[test]
fn branches_are_deterministic_and_differ_per_fork() {
    let m = parse(INVITE.as_bytes());
    let b0 = branch_for(&m, 0);
    assert!(b0.starts_with("z9hG4bK"));
    assert_eq!(b0.len(), "z9hG4bK".len() + 32 + 2);
    assert_eq!(b0, branch_for(&parse(INVITE.as_bytes()), 0));
    let (b1, b2) = (branch_for(&m, 1), branch_for(&m, 2));
    assert!(b0 != b1 && b1 != b2 && b0 != b2);
    let hash = |b: &str| b[..b.len() - 2].to_owned();
    assert_eq!(hash(&b0), hash(&b1));
    // The branch is a valid Via branch token.
    let v = format!("SIP/2.0/UDP h;branch={b0}");
    assert!(crate::message::headers::Via::parse_value(v.as_bytes()).is_some());

    // What §16.6 step 8 lists changes the hash…
    for (from, to) in [
        ("INVITE sip:bob@example.com", "INVITE sip:carol@example.com"),
        ("branch=z9hG4bK776asdhds", "branch=z9hG4bK776asdhdt"),
        ("tag=1928301774", "tag=1928301775"),
        ("<sip:bob@example.com>\r\n", "<sip:bob@example.com>;tag=a\r\n"),
        ("i: a84b4c76e66710", "i: a84b4c76e66711"),
        ("CSeq: 314159", "CSeq: 314160"),
        ("Contact:", "Proxy-Authorization: Digest username=\"a\"\r\nContact:"),
        ("Contact:", "Proxy-Require: foo\r\nContact:"),
        ("Contact:", "Route: <sip:p2.example.org;lr>\r\nContact:"),
    ] {
        let other = invite_with(from, to);
        assert_ne!(branch_for(&parse(&other), 0), b0, "{to}");
    }
    // …what it does not list leaves it alone, as do the parameters a hop
    // stamps on the top Via.
    for (from, to) in [
        ("Max-Forwards: 70", "Max-Forwards: 12"),
        ("X-Custom:   spaced ,  value", "X-Custom: other"),
        (";received=198.51.100.7", ""),
        (";received=198.51.100.7", ";rport=5060;received=198.51.100.8"),
        ("f: Alice <sip:alice", "From: \"A\" <sip:al"),
        ("CSeq: 314159", "CSeq: 0314159"),
    ] {
        let other = invite_with(from, to);
        assert_eq!(branch_for(&parse(&other), 0), b0, "{to}");
    }
    // The CANCEL a UAC sends for this INVITE hashes the same way.
    let cancel = INVITE.replace("INVITE", "CANCEL");
    assert_eq!(branch_for(&parse(cancel.as_bytes()), 0), b0);
}

// §16.4 -------------------------------------------------------------------

#[test]
fn our_domain_without_route_goes_to_the_location_service() {
    let info = preprocess_routes(&parse(INVITE.as_bytes()), &me()).unwrap();
    assert!(info.lookup());
    assert_eq!(info.next_hop(), &NextHop::Target);
    assert_eq!((info.request_uri(), info.removes_own_route(), info.removes_last_route()), (None, false, false));
    let raw = invite_with("INVITE sip:bob@example.com", "INVITE sip:carol@other.example.org");
    let info = preprocess_routes(&parse(&raw), &me()).unwrap();
    assert!(!info.lookup());
    assert_eq!(info.next_hop(), &NextHop::Target);
    // A tel: URI is not ours to look up, and does not trouble anything.
    let raw = invite_with("INVITE sip:bob@example.com", "INVITE tel:+15551234");
    assert!(!preprocess_routes(&parse(&raw), &me()).unwrap().lookup());
}

#[test]
fn our_top_route_is_removed_and_the_next_loose_route_is_the_hop() {
    // One line with two values, and the same as two lines.
    for routes in [
        "Route: <sip:proxy.example.com;lr>, <sip:next.example.org;lr>\r\n",
        "Route: <sip:192.0.2.10:5060;lr>\r\nRoute: <sip:next.example.org;lr>\r\n",
    ] {
        let raw = invite_with("To:", &format!("{routes}To:"));
        let m = parse(&raw);
        let info = preprocess_routes(&m, &me()).unwrap();
        assert!(info.removes_own_route());
        assert!(!info.lookup());
        assert_eq!(info.next_hop(), &NextHop::Loose("sip:next.example.org;lr".to_owned()));
        let out = forward_request(&m, &Forward::new(&info, "UDP", "proxy.example.com", "z9hG4bKb.0")).unwrap();
        let out = parse(&out);
        assert_eq!(out.request_line().unwrap().uri, "sip:bob@example.com");
        let r: Vec<_> = out.routes().map(|r| r.unwrap().uri().as_str()).collect();
        assert_eq!(r, ["sip:next.example.org;lr"]);
        assert_eq!(out.headers().count(HeaderName::Route), 1);
    }
    // Another port of our host is someone else.
    let raw = invite_with("To:", "Route: <sip:proxy.example.com:5070;lr>\r\nTo:");
    let info = preprocess_routes(&parse(&raw), &me()).unwrap();
    assert!(!info.removes_own_route());
    assert_eq!(info.next_hop(), &NextHop::Loose("sip:proxy.example.com:5070;lr".to_owned()));
}

#[test]
fn both_entries_of_a_double_record_route_are_removed() {
    // RFC 5658 §3.4: a proxy that record-routed twice (transport or
    // interface change) finds both of its entries on top of the route set
    // and removes both; what follows is the next hop, or the target.
    for (routes, next) in [
        (
            "Route: <sip:192.0.2.10:5060;transport=tcp;lr>, <sip:192.0.2.10:5060;transport=udp;lr>\r\n",
            NextHop::Target,
        ),
        (
            "Route: <sip:proxy.example.com:5060;transport=tls;lr>\r\nRoute: <sip:192.0.2.10;transport=udp;lr>, <sip:next.example.org;lr>\r\n",
            NextHop::Loose("sip:next.example.org;lr".to_owned()),
        ),
    ] {
        let raw = invite_with("To:", &format!("{routes}To:"));
        let m = parse(&raw);
        let info = preprocess_routes(&m, &me()).unwrap();
        assert_eq!(info.own_routes(), 2, "{routes}");
        assert_eq!(info.next_hop(), &next);
        let out = forward_request(&m, &Forward::new(&info, "UDP", "proxy.example.com", "z9hG4bKb.0")).unwrap();
        let out = parse(&out);
        let r: Vec<_> = out.routes().map(|r| r.unwrap().uri().as_str()).collect();
        let expected: Vec<&str> = match &next {
            NextHop::Loose(u) => vec![u.as_str()],
            _ => vec![],
        };
        assert_eq!(r, expected);
    }
    // Our entry, someone else's, ours again: only the leading one is ours
    // to remove (a spiral back through us later keeps its entry).
    let raw = invite_with(
        "To:",
        "Route: <sip:192.0.2.10;lr>, <sip:next.example.org;lr>, <sip:192.0.2.10;transport=tcp;lr>\r\nTo:",
    );
    let info = preprocess_routes(&parse(&raw), &me()).unwrap();
    assert_eq!(info.own_routes(), 1);
}

#[test]
fn after_a_strict_router_the_last_route_is_the_request_uri() {
    // A strict router upstream put our Record-Route URI in the Request-URI
    // and the remote target at the end of the Route.
    let raw = invite_with("INVITE sip:bob@example.com", "INVITE sip:proxy.example.com:5060;transport=udp;lr");
    let raw = String::from_utf8(raw).unwrap().replacen(
        "To:",
        "Route: <sip:p2.example.org;lr>, <sip:bob@192.0.2.4:5062>\r\nTo:",
        1,
    );
    let m = parse(raw.as_bytes());
    assert_eq!(check_request(&m, &me()), Ok(()));
    let info = preprocess_routes(&m, &me()).unwrap();
    assert_eq!(info.request_uri(), Some("sip:bob@192.0.2.4:5062"));
    assert!(info.removes_last_route());
    assert!(!info.removes_own_route());
    assert_eq!(info.next_hop(), &NextHop::Loose("sip:p2.example.org;lr".to_owned()));
    let out = forward_request(&m, &Forward::new(&info, "UDP", "proxy.example.com", "z9hG4bKb.0")).unwrap();
    let out = parse(&out);
    assert_eq!(out.request_line().unwrap().uri, "sip:bob@192.0.2.4:5062");
    assert_eq!(out.routes().map(|r| r.unwrap().as_str()).collect::<Vec<_>>(), ["<sip:p2.example.org;lr>"]);

    // With the target the only Route value: nothing remains, and a target
    // in our domain goes to the location service.
    let raw = invite_with("INVITE sip:bob@example.com", "INVITE sip:proxy.example.com;lr");
    let raw = String::from_utf8(raw).unwrap().replacen("To:", "Route: <sip:bob@example.com>\r\nTo:", 1);
    let m = parse(raw.as_bytes());
    let info = preprocess_routes(&m, &me()).unwrap();
    assert_eq!(info.request_uri(), Some("sip:bob@example.com"));
    assert_eq!(info.next_hop(), &NextHop::Target);
    assert!(info.lookup());
    let out = forward_request(&m, &Forward::new(&info, "UDP", "proxy.example.com", "z9hG4bKb.0")).unwrap();
    let out = parse(&out);
    assert_eq!(out.request_line().unwrap().uri, "sip:bob@example.com");
    assert_eq!(out.routes().count(), 0);
    // A request to a user at our host is not a Record-Route value.
    let raw = invite_with("INVITE sip:bob@example.com", "INVITE sip:bob@proxy.example.com;lr");
    let raw = String::from_utf8(raw).unwrap().replacen("To:", "Route: <sip:x.example.org;lr>\r\nTo:", 1);
    assert_eq!(preprocess_routes(&parse(raw.as_bytes()), &me()).unwrap().request_uri(), None);
}

#[test]
fn a_strict_router_next_gets_the_request_uri_slot() {
    // §16.6 step 6.
    let raw = invite_with(
        "To:",
        "Route: <sip:proxy.example.com;lr>, <sip:strict.example.org>\r\nRoute: <sip:p3.example.org;lr>\r\nTo:",
    );
    let m = parse(&raw);
    let info = preprocess_routes(&m, &me()).unwrap();
    assert_eq!(info.next_hop(), &NextHop::Strict("sip:strict.example.org".to_owned()));
    let f = Forward::new(&info, "TCP", "proxy.example.com", "z9hG4bKs.0").target("sip:bob@192.0.2.4");
    let out = forward_request(&m, &f).unwrap();
    let out = parse(&out);
    assert_eq!(out.request_line().unwrap().uri, "sip:strict.example.org");
    let r: Vec<_> = out.routes().map(|r| r.unwrap().as_str()).collect();
    assert_eq!(r, ["<sip:p3.example.org;lr>", "<sip:bob@192.0.2.4>"]);
    assert_eq!(out.via().unwrap().unwrap().transport(), "TCP");
}

#[test]
fn malformed_route_or_request_uri_is_a_clear_400() {
    let raw = invite_with("To:", "Route: <sip:proxy.example.com;lr>, <sip:next.example.org;lr\r\nTo:");
    let r = preprocess_routes(&parse(&raw), &me()).unwrap_err();
    assert_eq!(r.kind, RejectKind::Malformed(HeaderName::Route));
    assert_eq!((r.code.as_u16(), r.reason), (400, "Bad Request"));
    assert_eq!(r.to_string(), "400 Bad Request");
    let raw = invite_with("INVITE sip:bob@example.com", "INVITE sip:bob@exa_mple.com");
    let r = preprocess_routes(&parse(&raw), &me()).unwrap_err();
    assert_eq!(r.kind, RejectKind::MalformedRequestUri);
}

// §16.6 -------------------------------------------------------------------

#[test]
fn forwarded_copy_byte_for_byte() {
    let m = parse(INVITE.as_bytes());
    let info = preprocess_routes(&m, &me()).unwrap();
    let branch = branch_for(&m, 0);
    let rr = record_route_value("proxy.example.com", 5060, "UDP");
    let f = Forward::new(&info, "udp", "proxy.example.com:5060", &branch)
        .target("sip:bob@192.0.2.4:5062")
        .record_route(&rr);
    let out = forward_request(&m, &f).unwrap();
    let want = format!(
        "INVITE sip:bob@192.0.2.4:5062 SIP/2.0\r\n\
Via: SIP/2.0/UDP proxy.example.com:5060;branch={branch};rport\r\n\
Via: SIP/2.0/UDP pc33.example.net:5060;branch=z9hG4bK776asdhds;received=198.51.100.7\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:proxy.example.com:5060;transport=udp;lr>\r\n\
Record-Route: <sip:p1.example.net;lr>\r\n\
To: Bob <sip:bob@example.com>\r\n\
f: Alice <sip:alice@example.net>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example.net\r\n\
CSeq: 314159 INVITE\r\n\
X-Custom: spaced ,  value\r\n\
Contact: <sip:alice@pc33.example.net>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\
\r\n\
v=0\r\n"
    );
    assert_eq!(String::from_utf8(out.clone()).unwrap(), want);
    let o = parse(&out);
    assert_eq!(o.request_line().unwrap().uri, "sip:bob@192.0.2.4:5062");
    let vias: Vec<_> = o.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 2);
    assert_eq!((vias[0].host_str(), vias[0].port()), ("proxy.example.com", Some(5060)));
    assert_eq!(vias[0].branch(), Some(branch.as_str()));
    assert_eq!(vias[0].rport(), Some(None));
    assert_eq!(vias[1].as_str(), "SIP/2.0/UDP pc33.example.net:5060;branch=z9hG4bK776asdhds;received=198.51.100.7");
    assert_eq!(o.max_forwards(), Some(Ok(69)));
    let rr: Vec<_> = o.record_routes().map(|r| r.unwrap().uri().as_str()).collect();
    assert_eq!(rr, ["sip:proxy.example.com:5060;transport=udp;lr", "sip:p1.example.net;lr"]);
    assert_eq!(o.body(), b"v=0\r\n");
    assert_eq!(o.content_length(), Some(5));
    assert_eq!(o.from().unwrap().unwrap().tag(), Some("1928301774"));
    assert_eq!(o.headers().get("X-Custom").unwrap().value(), b"spaced ,  value");
    assert_eq!(crate::message::validate::validate(&o), Ok(()));
}

#[test]
fn missing_max_forwards_is_added_and_record_route_goes_after_the_vias() {
    let raw = b"MESSAGE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP pc33.example.net;branch=z9hG4bKm1\r\n\
v: SIP/2.0/TCP relay.example.net;branch=z9hG4bKm0\r\n\
To: <sip:bob@example.com>\r\n\
From: <sip:alice@example.net>;tag=7\r\n\
Call-ID: m1\r\n\
CSeq: 2 MESSAGE\r\n\
Content-Type: text/plain\r\n\
\r\n\
hello, world";
    let m = parse(raw);
    assert_eq!(check_request(&m, &me()), Ok(()));
    let info = preprocess_routes(&m, &me()).unwrap();
    let rr = record_route_value("[2001:db8::10]", 5061, "TLS");
    let f = Forward::new(&info, "TLS", "[2001:db8::10]:5061", "z9hG4bKq.1").record_route(&rr);
    let out = forward_request(&m, &f).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with(
        "MESSAGE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS [2001:db8::10]:5061;branch=z9hG4bKq.1;rport\r\n\
v: SIP/2.0/UDP pc33.example.net;branch=z9hG4bKm1\r\n\
v: SIP/2.0/TCP relay.example.net;branch=z9hG4bKm0\r\n\
Record-Route: <sip:[2001:db8::10]:5061;transport=tls;lr>\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n"
    ));
    let o = parse(&out);
    assert_eq!(o.max_forwards(), Some(Ok(70)));
    assert_eq!(o.vias().count(), 3);
    // No Content-Length came in (a datagram): the copy carries one.
    assert_eq!(o.content_length(), Some(12));
    assert_eq!(o.body(), b"hello, world");
}

#[test]
fn repeated_max_forwards_leaves_one_and_extra_headers_are_added() {
    let raw = invite_with("Max-Forwards: 70", "Max-Forwards: 10\r\nMax-Forwards: 70");
    let m = parse(&raw);
    let info = RouteInfo::default();
    let extra = [("X-Proxied", "yes")];
    let out = forward_request(&m, &Forward::new(&info, "UDP", "p", "z9hG4bKe.0").extra_headers(&extra)).unwrap();
    let o = parse(&out);
    assert_eq!(o.headers().count(HeaderName::MaxForwards), 1);
    assert_eq!(o.max_forwards(), Some(Ok(9)));
    assert_eq!(o.headers().get("x-proxied").unwrap().value(), b"yes");
    assert_eq!(o.body(), b"v=0\r\n");
}

#[test]
fn credentials_for_our_realm_are_consumed_others_go_on() {
    // §22.3: two proxies' credentials; we checked the one for example.com.
    let ours = "Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n\", uri=\"sip:bob@example.com\", response=\"r\"";
    let theirs = "Proxy-Authorization: Digest username=\"alice\", realm=\"example.net\", nonce=\"m\", uri=\"sip:bob@example.com\", response=\"s\"";
    let raw = invite_with("Contact:", &format!("{ours}\r\n{theirs}\r\nContact:"));
    let m = parse(&raw);
    let info = RouteInfo::default();
    let f = Forward::new(&info, "UDP", "p", "z9hG4bKe.0");
    let out = String::from_utf8(forward_request(&m, &f.consume_credentials("example.com")).unwrap()).unwrap();
    assert!(!out.contains("realm=\"example.com\""), "{out}");
    assert!(out.contains(theirs), "{out}");
    // Without a realm to consume, both go on as written.
    let kept = String::from_utf8(forward_request(&m, &f).unwrap()).unwrap();
    assert!(kept.contains(ours) && kept.contains(theirs), "{kept}");
    // A realm that matches none consumes nothing.
    let none = String::from_utf8(forward_request(&m, &f.consume_credentials("example.org")).unwrap()).unwrap();
    assert_eq!(none, kept);
}

// §16.10 ------------------------------------------------------------------

#[test]
fn cancel_for_a_branch_follows_9_1() {
    let raw = invite_with("To:", "Route: <sip:next.example.org;lr>\r\nRoute: <sip:last.example.org;lr>\r\nTo:");
    let m = parse(&raw);
    let info = preprocess_routes(&m, &me()).unwrap();
    let branch = branch_for(&m, 2);
    let sent = forward_request(&m, &Forward::new(&info, "UDP", "proxy.example.com:5060", &branch)).unwrap();
    let sent = parse(&sent);
    let cancel = forward_cancel(&sent).unwrap();
    let c = parse(&cancel);
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.request_line().unwrap().uri, sent.request_line().unwrap().uri);
    let vias: Vec<_> = c.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 1);
    assert_eq!(vias[0], sent.via().unwrap().unwrap());
    assert_eq!(vias[0].branch(), Some(branch.as_str()));
    assert_eq!(c.from(), sent.from());
    assert_eq!(c.to(), sent.to());
    assert_eq!(c.call_id(), sent.call_id());
    let cseq = c.cseq().unwrap().unwrap();
    assert_eq!((cseq.seq(), cseq.method()), (314_159, Method::Cancel));
    let routes: Vec<_> = c.routes().map(|r| r.unwrap().as_str()).collect();
    assert_eq!(routes, ["<sip:next.example.org;lr>", "<sip:last.example.org;lr>"]);
    assert_eq!(c.max_forwards(), Some(Ok(70)));
    assert_eq!((c.body(), c.content_length()), (&b""[..], Some(0)));
    assert!(c.headers().first(HeaderName::ContentType).is_none());
    assert!(c.headers().first(HeaderName::Contact).is_none());
    assert_eq!(crate::message::validate::validate(&c), Ok(()));
    // Only an INVITE is cancelled.
    let msg = INVITE.replace("INVITE", "MESSAGE");
    assert_eq!(forward_cancel(&parse(msg.as_bytes())), None);
}

// §16.7 step 3 / 9 --------------------------------------------------------

fn response(status: &str, vias: &str, extra: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {status}\r\n\
{vias}\
To: Bob <sip:bob@example.com>;tag=8321234356\r\n\
From: Alice <sip:alice@example.net>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.net\r\n\
CSeq: 314159 INVITE\r\n\
{extra}\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

const OUR_VIA: &str = "SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bKp.0;rport=5060;received=192.0.2.10";
const UA_VIA: &str = "SIP/2.0/UDP pc33.example.net:5060;branch=z9hG4bK776asdhds;received=198.51.100.7";

#[test]
fn responses_lose_our_via_only() {
    // Two lines.
    let raw =
        response("180 Ringing", &format!("Via: {OUR_VIA}\r\nVia: {UA_VIA}\r\n"), "Contact: <sip:bob@192.0.2.4>\r\n");
    let out = forward_response(&parse(&raw)).unwrap();
    let expect = response("180 Ringing", &format!("Via: {UA_VIA}\r\n"), "Contact: <sip:bob@192.0.2.4>\r\n");
    assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(expect).unwrap());
    // One line holding both, then a third Via line.
    let raw = response(
        "200 OK",
        &format!("Via: {OUR_VIA} ,  {UA_VIA}, SIP/2.0/TCP a.example.net;branch=z9hG4bKa\r\nv: SIP/2.0/UDP b;branch=z9hG4bKb\r\n"),
        "",
    );
    let out = forward_response(&parse(&raw)).unwrap();
    let o = parse(&out);
    let vias: Vec<_> = o.vias().map(|v| v.unwrap().as_str()).collect();
    assert_eq!(vias, [UA_VIA, "SIP/2.0/TCP a.example.net;branch=z9hG4bKa", "SIP/2.0/UDP b;branch=z9hG4bKb"]);
    assert_eq!(o.headers().count(HeaderName::Via), 2);
    assert_eq!(o.status(), Some(code(200)));
    assert_eq!(o.status_line().unwrap().reason, b"OK");
    // Only our Via: the response was for us.
    let raw = response("200 OK", &format!("Via: {OUR_VIA}\r\n"), "");
    assert_eq!(forward_response(&parse(&raw)), None);
    // No Via at all, or a request: nothing to forward.
    assert_eq!(forward_response(&parse(&response("200 OK", "", ""))), None);
    assert_eq!(forward_response(&parse(INVITE.as_bytes())), None);
}

// §16.7 steps 4–7 ---------------------------------------------------------

fn branch_response(status: &str, extra: &str) -> Vec<u8> {
    response(status, &format!("Via: {OUR_VIA}\r\nVia: {UA_VIA}\r\n"), extra)
}

#[test]
fn provisionals_and_2xx_are_never_held() {
    let mut ctx = ResponseContext::new();
    let (a, b) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!((a.index(), b.index()), (0, 1));
    assert_eq!(ctx.on_response(a, code(100), b""), Action::Absorb);
    assert_eq!(ctx.on_response(a, code(180), b""), Action::ForwardNow);
    assert_eq!(ctx.on_response(b, code(183), b""), Action::ForwardNow);
    assert_eq!(ctx.on_response(a, code(200), b""), Action::ForwardNow);
    assert!(ResponseContext::should_cancel_others(code(200)));
    assert_eq!(ctx.pending().collect::<Vec<_>>(), [b]);
    // After a 2xx: late provisionals and the cancelled branch's 487 are
    // absorbed, another 2xx still goes up, and there is no best response.
    assert_eq!(ctx.on_response(b, code(180), b""), Action::Absorb);
    assert_eq!(ctx.on_response(b, code(487), &branch_response("487 Request Terminated", "")), Action::Absorb);
    assert_eq!(ctx.on_response(b, code(200), b""), Action::ForwardNow);
    assert!(ctx.is_complete());
    assert_eq!(ctx.best(), None);
    assert_eq!(ctx.write_best(), None);
    assert_eq!(ctx.add_branch(), None);
    let mut bigger = ResponseContext::new();
    let unknown = (0..5).filter_map(|_| bigger.add_branch()).last().unwrap();
    assert_eq!(ctx.on_response(unknown, code(180), b""), Action::Absorb);
}

#[test]
fn a_6xx_goes_up_at_once_and_closes_the_context() {
    // §16.7 steps 5–6: a 6xx cancels the pending branches, opens no new
    // one and is the best response whatever they answer (only a 2xx beats
    // it, and a 2xx is forwarded anyway): it goes up without waiting.
    let mut ctx = ResponseContext::new();
    let (a, b, c) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!(ctx.on_response(a, code(486), &branch_response("486 Busy Here", "")), Action::Hold);
    assert_eq!(ctx.best(), None, "two branches are pending");
    assert_eq!(ctx.on_response(b, code(603), &branch_response("603 Decline", "")), Action::SendBest(Best::Branch(b)));
    assert!(ResponseContext::should_cancel_others(code(603)));
    assert!(!ResponseContext::should_cancel_others(code(486)));
    assert_eq!(ctx.pending().collect::<Vec<_>>(), [c], "c is still to be cancelled");
    assert_eq!(ctx.add_branch(), None, "no new branches after a 6xx");
    assert_eq!(ctx.best(), Some(Best::Branch(b)));
    let out = ctx.write_best().unwrap();
    let o = parse(&out);
    assert_eq!(o.status(), Some(code(603)));
    assert_eq!(o.vias().map(|v| v.unwrap().as_str()).collect::<Vec<_>>(), [UA_VIA]);
    // The cancelled branch's 487, a repeated final: absorbed.
    assert_eq!(ctx.on_response(c, code(487), &branch_response("487 Request Terminated", "")), Action::Absorb);
    assert_eq!(ctx.on_response(a, code(486), &branch_response("486 Busy Here", "")), Action::Absorb);
    assert_eq!(ctx.on_response(c, code(500), b""), Action::Absorb);
    // A 2xx from a branch the CANCEL came too late for still goes up (step 5).
    let mut ctx = ResponseContext::new();
    let (a, b) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!(
        ctx.on_response(a, code(600), &branch_response("600 Busy Everywhere", "")),
        Action::SendBest(Best::Branch(a))
    );
    assert_eq!(ctx.on_response(b, code(200), &branch_response("200 OK", "")), Action::ForwardNow);
}

#[test]
fn the_lowest_class_wins_and_4xx_beats_5xx() {
    let run = |finals: &[(u16, &str)]| {
        let mut ctx = ResponseContext::new();
        let ids: Vec<_> = finals.iter().map(|_| ctx.add_branch().unwrap()).collect();
        let mut last = Action::Absorb;
        for (id, (c, status)) in ids.iter().zip(finals) {
            last = ctx.on_response(*id, code(*c), &branch_response(status, ""));
            if matches!(last, Action::SendBest(_)) {
                break;
            }
        }
        let Action::SendBest(Best::Branch(b)) = last else { panic!("{last:?}") };
        assert_eq!(ctx.best(), Some(Best::Branch(b)));
        parse(&ctx.write_best().unwrap()).status().unwrap().as_u16()
    };
    assert_eq!(run(&[(500, "500 Server Internal Error"), (404, "404 Not Found")]), 404);
    assert_eq!(run(&[(404, "404 Not Found"), (500, "500 Server Internal Error")]), 404);
    assert_eq!(run(&[(500, "500 Oops"), (404, "404 Not Found"), (302, "302 Moved Temporarily")]), 302);
    assert_eq!(run(&[(480, "480 Temporarily Unavailable"), (484, "484 Address Incomplete")]), 484);
    assert_eq!(run(&[(404, "404 Not Found"), (486, "486 Busy Here")]), 404);
    assert_eq!(run(&[(486, "486 Busy Here"), (600, "600 Busy Everywhere"), (301, "301 Moved")]), 600);
    assert_eq!(run(&[(302, "302 Moved Temporarily"), (603, "603 Decline")]), 603);
}

#[test]
fn a_503_goes_up_as_500() {
    let mut ctx = ResponseContext::new();
    let a = ctx.add_branch().unwrap();
    let raw = branch_response("503 Service Unavailable", "Retry-After: 30\r\n");
    assert_eq!(ctx.on_response(a, code(503), &raw), Action::SendBest(Best::Branch(a)));
    let out = ctx.write_best().unwrap();
    let o = parse(&out);
    assert_eq!(o.status(), Some(code(500)));
    assert_eq!(o.status_line().unwrap().reason, b"Server Internal Error");
    assert_eq!(o.vias().count(), 1);
    assert_eq!(o.retry_after().unwrap().unwrap().seconds(), 30);
}

#[test]
fn challenges_of_401_and_407_branches_are_merged() {
    let mut ctx = ResponseContext::new();
    let ids: Vec<_> = (0..4).map(|_| ctx.add_branch().unwrap()).collect();
    let www_a = "WWW-Authenticate: Digest realm=\"a.example.com\", nonce=\"n1\", algorithm=SHA-256\r\n";
    let www_a2 = "WWW-Authenticate: Digest realm=\"a.example.com\", nonce=\"n1\", algorithm=MD5\r\n";
    let proxy_b = "Proxy-Authenticate: Digest realm=\"b.example.com\", nonce=\"n2\"\r\n";
    let www_c = "WWW-Authenticate: Digest realm=\"c.example.com\", nonce=\"n3\"\r\n";
    let r404 = branch_response("404 Not Found", "");
    let r401 = branch_response("401 Unauthorized", &format!("{www_a}{www_a2}"));
    let r407 = branch_response("407 Proxy Authentication Required", proxy_b);
    let r401c = branch_response("401 Unauthorized", www_c);
    assert_eq!(ctx.on_response(ids[0], code(404), &r404), Action::Hold);
    assert_eq!(ctx.on_response(ids[1], code(401), &r401), Action::Hold);
    assert_eq!(ctx.on_response(ids[2], code(407), &r407), Action::Hold);
    // 401 and 407 are preferred over the earlier 404 (§16.7 step 6).
    assert_eq!(ctx.on_response(ids[3], code(401), &r401c), Action::SendBest(Best::Branch(ids[1])));
    let out = ctx.write_best().unwrap();
    let o = parse(&out);
    assert_eq!(o.status(), Some(code(401)));
    let realms = |it: &mut dyn Iterator<Item = Result<Challenge<'_>, _>>| {
        it.map(|c| c.unwrap().params().get("realm").unwrap().into_owned()).collect::<Vec<_>>()
    };
    assert_eq!(realms(&mut o.www_authenticate()), ["a.example.com", "a.example.com", "c.example.com"]);
    assert_eq!(realms(&mut o.proxy_authenticate()), ["b.example.com"]);
    // Copied without modification.
    let www: Vec<_> = o.headers().all(HeaderName::WwwAuthenticate).map(crate::message::Header::value).collect();
    assert_eq!(www[2], www_c.trim_start_matches("WWW-Authenticate: ").trim_end().as_bytes());
    assert_eq!(o.vias().count(), 1);
}

#[test]
fn timeouts_and_transport_errors() {
    // Nobody answered: 408 made by the caller.
    let mut ctx = ResponseContext::new();
    let (a, b) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!(ctx.on_timeout(a), Action::Hold);
    assert_eq!(ctx.on_timeout(a), Action::Absorb);
    assert_eq!(ctx.on_timeout(b), Action::SendBest(Best::Generate(code(408))));
    assert_eq!(ctx.write_best(), None);
    // A transport error counts as a 503, sent as 500.
    let mut ctx = ResponseContext::new();
    let a = ctx.add_branch().unwrap();
    assert_eq!(ctx.on_transport_error(a), Action::SendBest(Best::Generate(code(500))));
    // A real response beats a timeout of the same class; a timeout beats a 5xx.
    let mut ctx = ResponseContext::new();
    let (a, b, c) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!(ctx.on_timeout(a), Action::Hold);
    assert_eq!(ctx.on_response(b, code(500), &branch_response("500 Oops", "")), Action::Hold);
    assert_eq!(
        ctx.on_response(c, code(480), &branch_response("480 Temporarily Unavailable", "")),
        Action::SendBest(Best::Branch(c))
    );
    let mut ctx = ResponseContext::new();
    let (a, b) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!(ctx.on_transport_error(a), Action::Hold);
    assert_eq!(ctx.on_timeout(b), Action::SendBest(Best::Generate(code(408))));
    // A 2xx after a branch timed out still goes up, and ends the choosing.
    let mut ctx = ResponseContext::new();
    let (a, b) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
    assert_eq!(ctx.on_timeout(a), Action::Hold);
    assert_eq!(ctx.on_response(a, code(200), b""), Action::ForwardNow);
    assert_eq!(ctx.on_response(b, code(486), &branch_response("486 Busy Here", "")), Action::Absorb);
    assert_eq!(ctx.best(), None);
    // No branch at all: 408.
    assert_eq!(ResponseContext::new().best(), Some(Best::Generate(code(408))));
}

// Odd input ---------------------------------------------------------------

#[test]
fn responses_and_odd_requests_do_not_panic() {
    let resp = branch_response("200 OK", "");
    let r = parse(&resp);
    assert_eq!(check_request(&r, &me()).unwrap_err().kind, RejectKind::NotARequest);
    assert_eq!(preprocess_routes(&r, &me()).unwrap_err().kind, RejectKind::NotARequest);
    assert_eq!(forward_request(&r, &Forward::new(&RouteInfo::default(), "UDP", "p", "z9hG4bK1")), None);
    assert_eq!(forward_cancel(&r), None);
    // A request with almost nothing in it.
    let bare = b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n";
    let m = parse(bare);
    assert_eq!(check_request(&m, &me()), Ok(()));
    let info = preprocess_routes(&m, &me()).unwrap();
    let out = forward_request(&m, &Forward::new(&info, "UDP", "p", &branch_for(&m, 0))).unwrap();
    let o = parse(&out);
    assert_eq!(o.vias().count(), 1);
    assert_eq!(o.max_forwards(), Some(Ok(70)));
    assert_eq!(forward_cancel(&m), None);
    let mut buf = Vec::new();
    let reject = Reject::malformed(HeaderName::Via);
    assert!(!reject.write_response(&m, "t", &mut buf));
    assert!(buf.is_empty());
}

/// Every single-octet change of a request and a response that still
/// parses goes through every rule without a panic.
#[test]
fn mutated_messages_never_panic() {
    let with_route =
        invite_with("To:", "Route: <sip:proxy.example.com;lr>, <sip:s.example.org>\r\nProxy-Require: foo\r\nTo:");
    let resp = branch_response("401 Unauthorized", "WWW-Authenticate: Digest realm=\"r\"\r\n");
    for base in [&with_route[..], &resp[..]] {
        for at in 0..base.len() {
            for c in [b',', b';', b'<', b'>', b'"', b' ', b'0', b':', b'\r'] {
                let mut raw = base.to_vec();
                raw[at] = c;
                let Ok(m) = Message::parse(&raw) else { continue };
                let _ = check_request(&m, &me());
                let _ = branch_for(&m, 1);
                if let Ok(info) = preprocess_routes(&m, &me()) {
                    let f = Forward::new(&info, "UDP", "proxy.example.com", "z9hG4bKx").record_route("<sip:p;lr>");
                    if let Some(out) = forward_request(&m, &f) {
                        assert!(Message::parse(&out).is_ok(), "{}", String::from_utf8_lossy(&out));
                    }
                }
                let _ = forward_cancel(&m);
                let _ = forward_response(&m);
                let mut ctx = ResponseContext::new();
                let id = ctx.add_branch().unwrap();
                if let Some(code) = m.status() {
                    let _ = ctx.on_response(id, code, &raw);
                    let _ = ctx.write_best();
                }
            }
        }
    }
}
