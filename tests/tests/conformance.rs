//! RFC 4475 (SIP torture messages) and RFC 5118 (IPv6 torture messages):
//! every vector is handled as `expected.tsv` says, and none panics.
//!
//! The vectors are fed to the parser in memory only; their addresses are
//! never contacted.

use sipline::message::headers::Contact;
use sipline::message::validate::{inspect_request, inspect_response, validate, Capabilities};
use sipline::message::{HeaderName, Host, Message, Method, Salvaged, Uri};
use sipline_tests::corpus_dir;
use std::fs;

/// What the stack does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Accepted for processing.
    Accept,
    /// Answered with this status.
    Respond(u16),
    /// Silently discarded (responses, or requests that cannot be answered).
    Drop,
}

fn read(path: &str) -> Vec<u8> {
    fs::read(corpus_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Methods of a user agent that is also a registrar.
const METHODS: &[Method<'static>] = &[
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Options,
    Method::Message,
    Method::Register,
    Method::Subscribe,
    Method::Notify,
];

fn caps() -> Capabilities<'static> {
    Capabilities { methods: METHODS, ..Capabilities::default() }
}

fn rejected(bytes: &[u8], status: u16) -> Outcome {
    if Salvaged::scan(bytes).can_respond() {
        Outcome::Respond(status)
    } else {
        Outcome::Drop
    }
}

/// Parsing plus the syntax checks every element makes (§8.2 / §16.3).
fn syntax_outcome(bytes: &[u8]) -> Outcome {
    match Message::parse(bytes) {
        Err(e) => rejected(bytes, e.status().as_u16()),
        Ok(m) => match validate(&m) {
            Ok(()) => Outcome::Accept,
            Err(_) if !m.is_request() => Outcome::Drop,
            Err(e) => Outcome::Respond(e.status().as_u16()),
        },
    }
}

/// Everything a UAS/registrar checks before acting (§8.2.1–§8.2.3).
fn uas_outcome(bytes: &[u8]) -> Outcome {
    match Message::parse(bytes) {
        Err(e) => rejected(bytes, e.status().as_u16()),
        Ok(m) if m.is_request() => match inspect_request(&m, &caps()) {
            Ok(()) => Outcome::Accept,
            Err(e) => Outcome::Respond(e.status().as_u16()),
        },
        Ok(m) => match inspect_response(&m) {
            Ok(()) => Outcome::Accept,
            Err(_) => Outcome::Drop,
        },
    }
}

/// Whether `got` is one of the `|`-separated alternatives of `expected`.
fn matches(expected: &str, got: Outcome) -> bool {
    expected.split('|').any(|alt| match (alt, got) {
        ("accept", Outcome::Accept) => true,
        ("reject", Outcome::Drop | Outcome::Respond(400..=699)) => true,
        (code, Outcome::Respond(c)) => code.parse::<u16>().is_ok_and(|x| x == c),
        _ => false,
    })
}

fn rows(tsv: &str) -> Vec<(String, String, String)> {
    let text = String::from_utf8(read(tsv)).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

#[test]
fn rfc4475_every_vector_as_expected() {
    let mut checked = 0;
    for (file, class, expected) in rows("rfc4475/expected.tsv") {
        let bytes = read(&format!("rfc4475/{file}"));
        let got = match class.as_str() {
            "valid" | "invalid" => syntax_outcome(&bytes),
            "semantic" => uas_outcome(&bytes),
            _ => {
                // test.dat: no expectation, only no panic.
                let _ = uas_outcome(&bytes);
                continue;
            }
        };
        assert!(matches(&expected, got), "{file} ({class}): expected {expected}, got {got:?}");
        checked += 1;
    }
    assert_eq!(checked, 49, "every RFC 4475 vector with an expectation");
    // The archive's baddn.dat lacks its closing empty line; the terminated
    // variant must be refused for its display names, not its framing.
    let v = read("rfc4475/variants/baddn.terminated.dat");
    assert!(Message::parse(&v).is_ok());
    assert_eq!(syntax_outcome(&v), Outcome::Respond(400));
}

#[test]
fn rfc5118_every_vector_as_expected() {
    let mut checked = 0;
    for (file, _class, expected) in rows("rfc5118/expected.tsv") {
        let wire = file.replace(".dat", ".sip");
        let got = syntax_outcome(&read(&format!("rfc5118/wire/{wire}")));
        assert!(matches(&expected, got), "{wire}: expected {expected}, got {got:?}");
        // The archive copies use bare LF: refused as malformed, never a panic.
        let archive = read(&format!("rfc5118/{file}"));
        assert_ne!(syntax_outcome(&archive), Outcome::Accept, "{file} (bare LF)");
        checked += 1;
    }
    assert_eq!(checked, 12);
}

fn parse(path: &str) -> (Vec<u8>, usize) {
    let b = read(path);
    let n = b.len();
    (b, n)
}

#[test]
fn wsinv_values() {
    let (b, _) = parse("rfc4475/wsinv.dat");
    let m = Message::parse(&b).unwrap();
    let to = m.to().unwrap().unwrap();
    assert_eq!(to.tag(), Some("1918181833n"));
    assert_eq!(to.uri().as_str(), "sip:vivekg@chair-dnrc.example.com");
    let from = m.from().unwrap().unwrap();
    assert_eq!(from.display_name().unwrap().text(), "J Rosenberg \\\"");
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards().unwrap(), Ok(68));
    let cseq = m.cseq().unwrap().unwrap();
    assert_eq!((cseq.seq(), cseq.method()), (9, Method::Invite));
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[1].transport(), "TCP");
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(m.headers().first(HeaderName::Subject).unwrap().value(), b"");
    assert_eq!(m.headers().get("UnknownHeaderWithUnusualValue").unwrap().value(), b";;,,;;,;");
    assert_eq!(
        m.headers().get("NewFangledHeader").unwrap().value(),
        b"newfangled value\r\n continued newfangled value"
    );
    let c: Vec<Contact<'_>> = m.contacts().map(Result::unwrap).collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].q(), Some(330));
    assert_eq!(c[0].address().unwrap().params().value("newparam"), Some("newvalue"));
    assert_eq!(
        m.routes().next().unwrap().unwrap().uri().as_sip().unwrap().params().value("unknownwith"),
        Some("value")
    );
    assert_eq!(m.body().len(), 150);
}

#[test]
fn intmeth_values() {
    let (b, _) = parse("rfc4475/intmeth.dat");
    let m = Message::parse(&b).unwrap();
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(m.method(), Some(&Method::Extension(method)));
    assert_eq!(m.cseq().unwrap().unwrap().method(), Method::Extension(method));
    let to = m.to().unwrap().unwrap();
    assert_eq!(to.display_name().unwrap().text(), "BEL:\x07 NUL:\0 DEL:\x7f");
    assert_eq!(m.via().unwrap().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
    let ext = m.headers().get("extensionHeader-!.%*+_`'~").unwrap();
    assert_eq!(ext.value_str(), Some("\u{FEFF}大停電"));
    // An endpoint answers an unknown method with 501 (§8.2.1).
    assert_eq!(uas_outcome(&b), Outcome::Respond(501));
}

#[test]
fn escaping_vectors() {
    let (b, _) = parse("rfc4475/esc01.dat");
    let m = Message::parse(&b).unwrap();
    let ruri = m.request_uri().unwrap().unwrap().as_sip().unwrap().user_unescaped().unwrap().into_owned();
    assert_eq!(ruri, b"sips:user@example.com");
    let to = m.to().unwrap().unwrap();
    assert_eq!(&*to.uri().as_sip().unwrap().user_unescaped().unwrap(), b"user");
    let contact = m.contacts().next().unwrap().unwrap();
    let uri = *contact.address().unwrap().uri().as_sip().unwrap();
    assert_eq!(&*uri.user_unescaped().unwrap(), b"caller");
    let p: Vec<_> = uri.params().iter().map(|p| (p.unescaped().map(std::borrow::Cow::into_owned), p.name())).collect();
    assert_eq!(p[1].0.as_deref(), Some(&b"value%41"[..]));

    let (b, _) = parse("rfc4475/escnull.dat");
    let m = Message::parse(&b).unwrap();
    let to = m.to().unwrap().unwrap();
    assert_eq!(&*to.uri().as_sip().unwrap().user_unescaped().unwrap(), b"null-\0-null");
    let users: Vec<Vec<u8>> = m
        .contacts()
        .map(|c| c.unwrap().address().unwrap().uri().as_sip().unwrap().user_unescaped().unwrap().into_owned())
        .collect();
    assert_eq!(users, [b"\0".to_vec(), b"\0\0".to_vec()]);
    let c: Vec<_> = m.contacts().map(Result::unwrap).collect();
    assert!(!c[0].address().unwrap().uri().equivalent(c[1].address().unwrap().uri()), "two distinct bindings");

    let (b, _) = parse("rfc4475/esc02.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.method(), Some(&Method::Extension("RE%47IST%45R")));
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(m.headers().get("C%6Fntact").unwrap().kind(), HeaderName::Other);
    assert_eq!(m.from().unwrap().unwrap().display_name().unwrap().as_str(), "%Z%45");
    assert_eq!(uas_outcome(&b), Outcome::Respond(501));

    let (b, _) = parse("rfc4475/semiuri.dat");
    let m = Message::parse(&b).unwrap();
    let u = *m.request_uri().unwrap().unwrap().as_sip().unwrap();
    assert_eq!(&*u.user_unescaped().unwrap(), b"user;par=u@example.net");
    assert_eq!(u.host(), Host::Domain("example.com"));
}

#[test]
fn framing_and_body_vectors() {
    let (b, n) = parse("rfc4475/dblreq.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body().is_empty());
    assert!(m.len() < n, "the trailing INVITE octets are ignored (§18.3)");

    let (b, _) = parse("rfc4475/mpart01.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.body().len(), m.content_length().unwrap() as usize);
    assert!(m.body().contains(&0));
    assert!(m.content_type().unwrap().unwrap().is("multipart", "mixed"));

    let (b, _) = parse("rfc4475/inv2543.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.content_length(), None);
    assert!(!m.body().is_empty(), "no Content-Length: body runs to the end");
    assert_eq!(m.via().unwrap().unwrap().branch(), None);
    assert_eq!(m.from().unwrap().unwrap().tag(), None);

    let (b, _) = parse("rfc4475/longreq.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.vias().count(), 34);
    assert!(m.vias().all(|v| v.is_ok()));

    let (b, _) = parse("rfc4475/transports.dat");
    let m = Message::parse(&b).unwrap();
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

    let (b, _) = parse("rfc4475/unreason.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.status_line().unwrap().reason(), "= 2**3 * 5**2 но сто девяносто девять - простое");

    let (b, _) = parse("rfc4475/noreason.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.status_line().unwrap().reason(), "");

    let (b, _) = parse("rfc4475/lwsdisp.dat");
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.from().unwrap().unwrap().display_name().unwrap().as_str(), "caller");
}

#[test]
fn register_contact_params() {
    // RFC 4475 §3.3.12: a header parameter, not a URI parameter.
    let (b, _) = parse("rfc4475/cparam01.dat");
    let m = Message::parse(&b).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    let a = c.address().unwrap();
    assert!(a.params().contains("unknownparam"));
    assert!(!a.uri().as_sip().unwrap().params().contains("unknownparam"));
    // §3.3.13: a URI parameter.
    let (b, _) = parse("rfc4475/cparam02.dat");
    let m = Message::parse(&b).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    assert!(c.address().unwrap().uri().as_sip().unwrap().params().contains("unknownparam"));
    // §3.3.14: the escaped Route header stays in the contact URI.
    let (b, _) = parse("rfc4475/regescrt.dat");
    let m = Message::parse(&b).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    let uri = c.address().unwrap().uri().as_sip().unwrap();
    assert_eq!(uri.header_pairs().collect::<Vec<_>>(), [("Route", "%3Csip:sip.example.com%3E")]);
}

#[test]
fn rfc5118_values() {
    let host = |f: &str| {
        let b = read(&format!("rfc5118/wire/{f}"));
        let m = Message::parse(&b).unwrap();
        let u = *m.request_uri().unwrap().unwrap().as_sip().unwrap();
        (u.host().to_string(), u.port())
    };
    let v6 = |s: &str| Host::Ipv6(s.parse().unwrap()).to_string();
    assert_eq!(host("ipv6-good.sip"), (v6("2001:db8::10"), None));
    assert_eq!(host("port-ambiguous.sip"), (v6("2001:db8::10:5070"), None));
    assert_eq!(host("port-unambiguous.sip"), (v6("2001:db8::10"), Some(5070)));
    for f in ["via-received-param-with-delim.sip", "via-received-param-no-delim.sip"] {
        let b = read(&format!("rfc5118/wire/{f}"));
        let m = Message::parse(&b).unwrap();
        let via = m.via().unwrap().unwrap();
        assert_eq!(via.received(), Some("2001:db8::9:255".parse().unwrap()), "{f}");
        assert!(via.branch().is_some(), "{f}");
    }
    let b = read("rfc5118/wire/ipv6-bug-abnf-3-colons.sip");
    let three = Message::parse(&b).unwrap();
    let b2 = read("rfc5118/wire/ipv6-correct-abnf-2-colons.sip");
    let two = Message::parse(&b2).unwrap();
    assert!(three.request_uri().unwrap().unwrap().equivalent(&two.request_uri().unwrap().unwrap()));
    let b = read("rfc5118/wire/mult-ip-in-header.sip");
    let m = Message::parse(&b).unwrap();
    let hosts: Vec<String> = m.vias().map(|v| v.unwrap().host().to_string()).collect();
    assert_eq!(hosts, ["[2001:db8::9:1]", "192.0.2.1", "[2001:db8::9:255]"]);
    assert!(Uri::parse("sip:[::ffff:192.0.2.10]:19823").is_ok());
}
