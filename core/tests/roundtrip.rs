//! Property tests of the message layer:
//! - parse(serialize(m)) == m for generated messages,
//! - serialize(parse(x)) == x for canonical messages, and a fixed point for
//!   any message that parses,
//! - arbitrary or mutated bytes never panic the parser, the framer or the
//!   typed views, and chunked framing equals framing all at once.

use proptest::prelude::*;
use sipline::message::validate::{inspect_request, validate, Capabilities};
use sipline::message::{
    Framed, HeaderName, Message, MessageWriter, Method, Salvaged, StartLine, StatusCode, StreamFramer, Uri,
};

#[derive(Debug, Clone)]
enum Start {
    Request(String, String),
    Response(u16, String),
}

#[derive(Debug, Clone)]
struct Spec {
    start: Start,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("INVITE".to_owned()),
        Just("ACK".to_owned()),
        Just("MESSAGE".to_owned()),
        Just("REGISTER".to_owned()),
        "[A-Za-z0-9!%*_+`'~.-]{1,12}",
    ]
}

fn uri() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("sip"), Just("sips")],
        proptest::option::of("[a-z0-9_.!~*'()&=+$,;?/-]{1,10}"),
        prop_oneof![
            "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,2}",
            "192\\.0\\.2\\.[0-9]{1,2}",
            Just("[2001:db8::1]".to_owned())
        ],
        proptest::option::of(1u16..),
        proptest::collection::vec("[a-z]{1,6}(=[a-z0-9]{1,6})?", 0..3),
    )
        .prop_map(|(scheme, user, host, port, params)| {
            let mut s = format!("{scheme}:");
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push(':');
                s.push_str(&p.to_string());
            }
            for p in params {
                s.push(';');
                s.push_str(&p);
            }
            s
        })
}

fn header() -> impl Strategy<Value = (String, String)> {
    let name = "[A-Za-z][A-Za-z0-9!%*_+`'~.-]{0,14}".prop_filter("Content-Length is written by the serializer", |n| {
        HeaderName::from_bytes(n.as_bytes()) != HeaderName::ContentLength
    });
    // Values: visible text, inner spaces, optionally folded over lines.
    let value = proptest::collection::vec("[!-~]([ -~]{0,20}[!-~])?", 0..3).prop_map(|parts| parts.join("\r\n "));
    (name, value)
}

fn spec() -> impl Strategy<Value = Spec> {
    let start = prop_oneof![
        (method(), uri()).prop_map(|(m, u)| Start::Request(m, u)),
        (100u16..700, "[ -~]{0,20}").prop_map(|(c, r)| Start::Response(c, r)),
    ];
    (start, proptest::collection::vec(header(), 0..40), proptest::collection::vec(any::<u8>(), 0..200))
        .prop_map(|(start, headers, body)| Spec { start, headers, body })
}

fn serialize(spec: &Spec) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = match &spec.start {
        Start::Request(m, u) => {
            let method = Method::from_token(m).unwrap();
            assert!(Uri::parse(u).is_ok(), "{u}");
            MessageWriter::request(&mut buf, method, u)
        }
        Start::Response(c, r) => MessageWriter::response(&mut buf, StatusCode::new(*c).unwrap(), r),
    };
    for (n, v) in &spec.headers {
        w.header(n, v);
    }
    w.finish(&spec.body);
    buf
}

/// Start line, headers other than Content-Length, and body.
type Shape<'a> = (StartLine<'a>, Vec<(&'a str, &'a [u8])>, &'a [u8]);

fn shape<'a>(m: &Message<'a>) -> Shape<'a> {
    let headers =
        m.headers().iter().filter(|h| h.kind() != HeaderName::ContentLength).map(|h| (h.name(), h.value())).collect();
    (*m.start_line(), headers, m.body())
}

/// Exercise every typed view; none may panic, whatever the input.
fn touch_everything(m: &Message<'_>) {
    let _ = (m.via(), m.from(), m.to(), m.call_id(), m.cseq(), m.max_forwards(), m.content_type());
    let _ = (m.expires(), m.min_expires(), m.event(), m.subscription_state(), m.retry_after(), m.date());
    let _ = (m.user_agent(), m.server());
    m.vias().for_each(drop);
    m.contacts().for_each(drop);
    m.routes().for_each(drop);
    m.record_routes().for_each(drop);
    m.allow().for_each(drop);
    m.supported().for_each(drop);
    m.require().for_each(drop);
    m.accept().for_each(drop);
    m.warnings().for_each(drop);
    m.www_authenticate().for_each(|c| {
        if let Ok(c) = c {
            let _ = (c.realm(), c.nonce(), c.stale(), c.qop_options().count());
        }
    });
    m.authorization().for_each(|c| {
        if let Ok(c) = c {
            let _ = (c.username(), c.response(), c.uri());
        }
    });
    let _ = validate(m);
    let _ = inspect_request(m, &Capabilities::default());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_of_serialized_is_the_spec(spec in spec()) {
        let bytes = serialize(&spec);
        let m = Message::parse(&bytes).unwrap();
        match (&spec.start, m.start_line()) {
            (Start::Request(meth, u), StartLine::Request(r)) => {
                prop_assert_eq!(r.method.as_str(), meth.as_str());
                prop_assert_eq!(r.uri, u.as_str());
                prop_assert_eq!(r.parse_uri().unwrap().as_str(), u.as_str());
            }
            (Start::Response(c, reason), StartLine::Response(s)) => {
                prop_assert_eq!(s.code.as_u16(), *c);
                let want = if reason.is_empty() { StatusCode::new(*c).unwrap().canonical_reason() } else { reason.as_str() };
                prop_assert_eq!(s.reason, want.as_bytes());
            }
            _ => prop_assert!(false, "start line kind changed"),
        }
        let got: Vec<(String, Vec<u8>)> = m.headers().iter()
            .filter(|h| h.kind() != HeaderName::ContentLength)
            .map(|h| (h.name().to_owned(), h.value().to_vec()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = spec.headers.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(m.body(), &spec.body[..]);
        prop_assert_eq!(m.len(), bytes.len());
        // Canonical input: serialize(parse(x)) == x, byte for byte.
        let mut again = Vec::new();
        m.write_to(&mut again);
        prop_assert_eq!(again, bytes.clone());
        // Stream framing finds the same message, fed in two pieces.
        let mut f = StreamFramer::default();
        let cut = bytes.len() / 2;
        prop_assert_eq!(f.advance(&bytes[..cut]).unwrap(), Framed::NeedMore);
        prop_assert_eq!(f.advance(&bytes).unwrap(), Framed::Message { len: bytes.len() });
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = Message::parse(&bytes) {
            touch_everything(&m);
            let mut out = Vec::new();
            m.write_to(&mut out);
            let again = Message::parse(&out).unwrap();
            prop_assert_eq!(shape(&m), shape(&again));
        }
        let s = Salvaged::scan(&bytes);
        let _ = s.write_response(&mut Vec::new(), StatusCode::new(400).unwrap(), "", "t");
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(u) = Uri::parse(text) {
                prop_assert!(u.equivalent(&u));
            }
        }
    }

    #[test]
    fn mutated_torture_vectors_never_panic(idx in 0usize..64, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/rfc4475");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(Result::ok)
            .map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "dat")).collect();
        files.sort();
        let mut bytes = std::fs::read(&files[idx % files.len()]).unwrap();
        for (at, b) in edits {
            if !bytes.is_empty() {
                let n = bytes.len();
                bytes[at % n] = b;
            }
        }
        if let Ok(m) = Message::parse(&bytes) {
            touch_everything(&m);
            let mut out = Vec::new();
            m.write_to(&mut out);
            prop_assert_eq!(shape(&m), shape(&Message::parse(&out).unwrap()));
        }
    }

    #[test]
    fn chunked_framing_equals_whole(spec_a in spec(), spec_b in spec(), chunk in 1usize..64, pings in 0usize..3) {
        let mut stream = b"\r\n\r\n".repeat(pings);
        stream.extend(serialize(&spec_a));
        stream.extend(serialize(&spec_b));
        let frames = |chunk: usize| {
            let mut f = StreamFramer::default();
            let mut out = Vec::new();
            let mut start = 0;
            let mut end = 0;
            while start < stream.len() && out.len() < 64 {
                end = (end + chunk).min(stream.len()).max(end);
                match f.advance(&stream[start..end]).unwrap() {
                    Framed::NeedMore if end == stream.len() => break,
                    Framed::NeedMore => {}
                    Framed::Ping { len } | Framed::Pong { len } | Framed::Message { len } => {
                        out.push(stream[start..start + len].to_vec());
                        start += len;
                    }
                }
            }
            out
        };
        // Messages come out identical however the stream is cut; keep-alive
        // CRLFs too, except that a ping cut in half reads as pong + ping.
        let split = |frames: Vec<Vec<u8>>| -> (Vec<Vec<u8>>, usize) {
            let crlf: usize = frames.iter().filter(|f| f.starts_with(b"\r\n")).map(Vec::len).sum();
            (frames.into_iter().filter(|f| !f.starts_with(b"\r\n")).collect(), crlf)
        };
        let whole = split(frames(stream.len()));
        prop_assert_eq!(&split(frames(chunk)), &whole);
        prop_assert_eq!(whole.0.len(), 2);
        prop_assert_eq!(whole.1, 4 * pings);
    }
}
