//! Tests of the message parser as a whole (§7, §18.3).

use super::*;

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

#[test]
fn parses_the_rfc3261_invite() {
    let m = Message::parse(INVITE).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(m.request_uri().unwrap().unwrap().as_str(), "sip:bob@biloxi.com");
    assert_eq!(m.headers().len(), 9);
    assert_eq!(m.body(), b"v=0\n");
    assert_eq!(m.len(), INVITE.len());
    assert_eq!(m.max_forwards().unwrap(), Ok(70));
    assert_eq!(m.call_id().unwrap().unwrap().as_str(), "a84b4c76e66710@pc33.atlanta.com");
    assert_eq!(m.to().unwrap().unwrap().display_name().unwrap().as_str(), "Bob");
    assert!(m.content_type().unwrap().unwrap().is("application", "sdp"));
    assert_eq!(m.contacts().count(), 1);
    validate::validate(&m).unwrap();
}

#[test]
fn parses_responses() {
    let m = Message::parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(m.status().map(StatusCode::as_u16), Some(180));
    assert_eq!(m.status_line().unwrap().reason(), "Ringing");
    // Empty reason with and without the SP (RFC 4475 §3.1.1.13).
    assert!(Message::parse(b"SIP/2.0 100 \r\nl: 0\r\n\r\n").is_ok());
    assert!(Message::parse(b"SIP/2.0 100\r\nl: 0\r\n\r\n").is_ok());
    assert_eq!(Message::parse(b"SIP/2.0 099 Low\r\n\r\n"), Err(ParseError::StatusCode));
    assert_eq!(Message::parse(b"SIP/2.0 700 High\r\n\r\n"), Err(ParseError::StatusCode));
    assert_eq!(Message::parse(b"SIP/2.0 4294967301 Big\r\n\r\n"), Err(ParseError::StatusCode));
    assert_eq!(Message::parse(b"SIP/2.0 OK\r\n\r\n"), Err(ParseError::StatusLine));
    assert_eq!(Message::parse(b"SIP/3.0 200 OK\r\n\r\n"), Err(ParseError::Version));
}

#[test]
fn request_line_is_strict() {
    let bad = |s: &[u8], e: ParseError| assert_eq!(Message::parse(s), Err(e), "{}", String::from_utf8_lossy(s));
    bad(b"INVITE  sip:a@b SIP/2.0\r\n\r\n", ParseError::RequestLine);
    bad(b"INVITE sip:a@b SIP/2.0  \r\n\r\n", ParseError::RequestLine);
    bad(b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", ParseError::RequestUri);
    bad(b"INVITE sip: SIP/2.0\r\n\r\n", ParseError::RequestUri);
    bad(b"INVITE nocolon SIP/2.0\r\n\r\n", ParseError::RequestUri);
    bad(b"INVITE sip:a\"b SIP/2.0\r\n\r\n", ParseError::RequestUri);
    // Well-formed characters, malformed URI: found by validate (RFC 5118 §4.2).
    let m = Message::parse(b"REGISTER sip:2001:db8::10 SIP/2.0\r\n\r\n").unwrap();
    assert!(m.request_uri().unwrap().is_err());
    bad(b"INVITE sip:a@b SIP/7.0\r\n\r\n", ParseError::Version);
    bad(b"INVITE sip:a@b HTTP/1.1\r\n\r\n", ParseError::RequestLine);
    bad(b"INV(TE sip:a@b SIP/2.0\r\n\r\n", ParseError::RequestLine);
    bad(b"INVITE sip:a@b\r\n\r\n", ParseError::RequestLine);
    // Methods are case-sensitive: "invite" is an extension method.
    let m = Message::parse(b"invite sip:a@b SIP/2.0\r\n\r\n").unwrap();
    assert_eq!(m.method(), Some(&Method::Extension("invite")));
    // The version token is case-insensitive.
    assert!(Message::parse(b"OPTIONS sip:a@b sip/2.0\r\n\r\n").is_ok());
}

#[test]
fn header_section_rules() {
    // Folding, spaces before the colon, compact names, empty values.
    let m =
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nSubject  :  hello\r\n  world \r\ns:\r\nv: SIP/2.0/UDP h\r\n\r\n")
            .unwrap();
    let subj = m.headers().get("subject").unwrap();
    assert_eq!(subj.value(), b"hello\r\n  world");
    assert_eq!(subj.name(), "Subject");
    assert_eq!(m.headers().all(HeaderName::Subject).count(), 2);
    assert_eq!(m.headers().all(HeaderName::Subject).nth(1).unwrap().value(), b"");
    assert_eq!(m.via().unwrap().unwrap().host_str(), "h");
    assert!(m.headers().get("v").is_some());
    // Broken lines.
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nNoColon\r\n\r\n"),
        Err(ParseError::HeaderField { offset: 25 })
    );
    assert_eq!(Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n"), Err(ParseError::HeaderField { offset: 25 }));
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nA: x\nB: y\r\n\r\n"),
        Err(ParseError::LineEnding { offset: 29 })
    );
    assert_eq!(Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nA: x\r\n"), Err(ParseError::Unterminated));
    assert_eq!(Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nA: x"), Err(ParseError::Unterminated));
    assert_eq!(Message::parse(b"\r\n\r\n"), Err(ParseError::Empty));
    assert_eq!(Message::parse(b""), Err(ParseError::Empty));
}

#[test]
fn datagram_body_rules_18_3() {
    let head = b"MESSAGE sip:a@b SIP/2.0\r\n";
    // No Content-Length: the body runs to the end of the datagram.
    let raw = [&head[..], b"\r\nhello"].concat();
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.body(), b"hello");
    assert_eq!(m.content_length(), None);
    // Octets past Content-Length are ignored.
    let raw = [&head[..], b"l: 2\r\n\r\nhello"].concat();
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.body(), b"he");
    assert_eq!(m.len(), raw.len() - 3);
    // A Content-Length beyond the datagram is an error (RFC 4475 §3.1.2.2).
    assert_eq!(
        Message::parse(&[&head[..], b"l: 9\r\n\r\nhello"].concat()),
        Err(ParseError::Truncated { declared: 9, available: 5 })
    );
    assert_eq!(Message::parse(&[&head[..], b"l: -1\r\n\r\n"].concat()), Err(ParseError::ContentLength));
    assert_eq!(Message::parse(&[&head[..], b"l: 99999999999\r\n\r\n"].concat()), Err(ParseError::ContentLength));
    assert_eq!(
        Message::parse(&[&head[..], b"l: 1\r\nl: 1\r\n\r\nx"].concat()),
        Err(ParseError::DuplicateContentLength)
    );
    // Binary bodies with NULs and bare LFs are framed by length.
    let body = b"\0\n\r\x7f\xff";
    let raw = [&head[..], b"Content-Length: 5\r\n\r\n", body].concat();
    assert_eq!(Message::parse(&raw).unwrap().body(), body);
}

#[test]
fn parse_errors_map_to_responses() {
    assert_eq!(ParseError::Version.status().as_u16(), 505);
    assert_eq!(ParseError::RequestUri.status().as_u16(), 400);
}

#[test]
fn write_to_reproduces_canonical_messages() {
    let m = Message::parse(INVITE).unwrap();
    let mut out = Vec::new();
    m.write_to(&mut out);
    assert_eq!(out, INVITE);
}

#[test]
fn validate_finds_missing_and_repeated_fields() {
    let base = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";
    let ok = format!("{base}\r\n");
    validate::validate(&Message::parse(ok.as_bytes()).unwrap()).unwrap();
    let twice = format!("{base}Call-ID: d\r\n\r\n");
    assert_eq!(
        validate::validate(&Message::parse(twice.as_bytes()).unwrap()),
        Err(validate::Invalid::Header(HeaderError::Multiple(HeaderName::CallId)))
    );
    let missing = ok.replace("Call-ID: c\r\n", "");
    assert_eq!(
        validate::validate(&Message::parse(missing.as_bytes()).unwrap()),
        Err(validate::Invalid::Header(HeaderError::Missing(HeaderName::CallId)))
    );
    let mismatch = ok.replace("1 OPTIONS", "1 INVITE");
    assert_eq!(validate::validate(&Message::parse(mismatch.as_bytes()).unwrap()), Err(validate::Invalid::CSeqMismatch));
    let mf = ok.replace("CSeq", "Max-Forwards: 256\r\nCSeq");
    assert_eq!(
        validate::validate(&Message::parse(mf.as_bytes()).unwrap()),
        Err(validate::Invalid::Header(HeaderError::Malformed(HeaderName::MaxForwards)))
    );
}
