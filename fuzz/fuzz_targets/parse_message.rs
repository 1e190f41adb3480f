//! Fuzzes `Message::parse` on arbitrary bytes.
//!
//! Checks that parsing never panics; that on success every typed header
//! accessor, `validate` and `inspect_request` run without panicking; and
//! that `write_to` round-trips: its output parses again with the same start
//! line, the same header fields in order (Content-Length aside, since
//! `write_to` writes a fresh one) and the same body. Also runs
//! `Salvaged::scan` + `write_response` on the raw input, and, for short
//! UTF-8 input, `Uri::parse`, checking that a parsed URI is equivalent to
//! itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline::message::headers::{Address, Contact};
use sipline::message::validate::{inspect_request, validate, Capabilities};
use sipline::message::{HeaderName, Message, Params, Salvaged, StatusCode, Uri};
use std::fmt::Debug;
use std::hint::black_box;
use std::io::Write as _;

/// Longest input also tried as a bare URI.
const MAX_URI_INPUT: usize = 1024;

/// Formats a value through `Debug` into nowhere: runs every lazy `Debug`
/// impl (parameter walkers and the like) without keeping anything.
fn touch<T: Debug>(v: &T) {
    let _ = write!(std::io::sink(), "{v:?}");
}

/// Walks a parameter list and every lookup on it.
fn walk_params(p: &Params<'_>) {
    black_box(p.as_str());
    black_box(p.is_empty());
    for param in p.iter() {
        black_box(param.name());
        black_box(param.value());
        black_box(param.is_quoted());
        black_box(param.unquoted());
        black_box(param.unescaped());
        black_box(p.get(param.name()));
        black_box(p.contains(param.name()));
    }
}

/// Exercises a URI's views and checks it is equivalent to itself.
fn walk_uri(u: &Uri<'_>) {
    black_box(u.as_str());
    black_box(u.scheme());
    if let Some(s) = u.as_sip() {
        black_box(s.is_secure());
        black_box(s.user());
        black_box(s.user_unescaped());
        black_box(s.password());
        black_box(s.host().ip());
        black_box(s.host_str());
        black_box(s.port());
        black_box(s.transport());
        black_box(s.headers());
        for pair in s.header_pairs() {
            black_box(pair);
        }
        walk_params(&s.params());
        assert!(s.host().equivalent(&s.host()), "host not equivalent to itself: {s:?}");
    }
    touch(u);
    assert!(u.equivalent(u), "URI not equivalent to itself: {:?}", u.as_str());
}

fn walk_address(a: &Address<'_>) {
    black_box(a.as_str());
    if let Some(d) = a.display_name() {
        black_box(d.as_str());
        black_box(d.is_quoted());
        black_box(d.text());
    }
    black_box(a.is_name_addr());
    black_box(a.tag());
    walk_params(&a.params());
    walk_uri(a.uri());
}

/// Every typed accessor, iterators run to the end.
fn walk_typed(m: &Message<'_>) {
    if let Some(Ok(v)) = m.via() {
        touch(&v);
    }
    for v in m.vias() {
        touch(&v);
        if let Ok(v) = v {
            black_box((v.as_str(), v.protocol(), v.version(), v.transport()));
            black_box((v.host().ip(), v.host_str(), v.port()));
            black_box((v.branch(), v.has_magic_cookie(), v.received()));
            black_box((v.rport(), v.maddr(), v.ttl()));
            walk_params(&v.params());
        }
    }
    for a in [m.from(), m.to()].into_iter().flatten() {
        touch(&a);
        if let Ok(a) = a {
            walk_address(&a);
        }
    }
    if let Some(c) = m.call_id() {
        touch(&c);
        if let Ok(c) = c {
            black_box(c.as_str());
        }
    }
    if let Some(c) = m.cseq() {
        touch(&c);
        if let Ok(c) = c {
            black_box((c.seq(), c.method().as_str()));
        }
    }
    touch(&m.max_forwards());
    for c in m.contacts() {
        touch(&c);
        if let Ok(c) = c {
            black_box((c.expires(), c.q(), c.instance(), c.pub_gruu(), c.temp_gruu()));
            if let Contact::Address(a) = &c {
                walk_address(a);
            }
        }
    }
    for a in m.routes().chain(m.record_routes()) {
        touch(&a);
        if let Ok(a) = a {
            walk_address(&a);
        }
    }
    if let Some(Ok(t)) = m.content_type() {
        black_box((t.as_str(), t.top(), t.sub(), t.is("application", "sdp")));
        black_box(t.admits("text", "plain"));
        walk_params(&t.params());
    }
    touch(&m.expires());
    for x in m.allow() {
        touch(&x);
    }
    for x in m.supported().chain(m.require()) {
        touch(&x);
    }
    for x in m.accept() {
        touch(&x);
        if let Ok(t) = x {
            black_box(t.admits("application", "sdp"));
            walk_params(&t.params());
        }
    }
    for c in m.www_authenticate() {
        touch(&c);
        if let Ok(c) = c {
            black_box((c.as_str(), c.scheme(), c.is_digest(), c.token68()));
            black_box((c.realm(), c.nonce(), c.opaque(), c.algorithm(), c.stale()));
            for q in c.qop_options() {
                black_box(q);
            }
            for p in c.params().iter() {
                black_box(p.unquoted());
            }
        }
    }
    for c in m.authorization() {
        touch(&c);
        if let Ok(c) = c {
            black_box((c.as_str(), c.scheme(), c.is_digest(), c.token68()));
            black_box((c.username(), c.uri(), c.response(), c.cnonce(), c.nc(), c.qop()));
            black_box(c.params().get("realm"));
        }
    }
    if let Some(Ok(e)) = m.event() {
        black_box((e.package(), e.id()));
        walk_params(&e.params());
    }
    if let Some(Ok(s)) = m.subscription_state() {
        black_box((s.state(), s.reason(), s.expires(), s.retry_after()));
        walk_params(&s.params());
    }
    if let Some(Ok(r)) = m.retry_after() {
        black_box((r.seconds(), r.comment(), r.duration()));
    }
    touch(&m.date());
    for w in m.warnings() {
        touch(&w);
        if let Ok(w) = w {
            black_box((w.code(), w.agent(), w.text()));
        }
    }
    touch(&m.user_agent());
}

/// The header fields the round trip must preserve, in order.
fn fields<'m>(m: &'m Message<'_>) -> Vec<(&'m str, &'m [u8])> {
    m.headers().iter().filter(|h| h.kind() != HeaderName::ContentLength).map(|h| (h.name(), h.value())).collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        assert!(m.len() <= data.len(), "message longer than its input");
        assert!(!m.is_empty());
        for h in m.headers().iter() {
            black_box((h.kind(), h.name(), h.value(), h.value_str()));
        }
        black_box((m.method(), m.status(), m.content_length()));
        if let Some(Ok(u)) = m.request_uri() {
            walk_uri(&u);
        }
        if let Some(s) = m.status_line() {
            black_box(s.reason());
        }
        walk_typed(&m);
        let _ = black_box(validate(&m));
        let _ = black_box(inspect_request(&m, &Capabilities::default()));

        // Round trip through the serializer.
        let mut out = Vec::new();
        m.write_to(&mut out);
        let again = match Message::parse(&out) {
            Ok(again) => again,
            Err(e) => panic!("write_to output does not parse: {e:?}\noutput: {:?}", String::from_utf8_lossy(&out)),
        };
        assert_eq!(m.start_line(), again.start_line(), "start line changed");
        assert_eq!(fields(&m), fields(&again), "header fields changed");
        assert_eq!(m.body(), again.body(), "body changed");
    }

    let salvaged = Salvaged::scan(data);
    black_box(salvaged.can_respond());
    let mut out = Vec::new();
    let code = StatusCode::new(400).expect("400 is a status code");
    let wrote = salvaged.write_response(&mut out, code, "", "tag");
    assert_eq!(wrote, !out.is_empty(), "write_response result disagrees with output");

    if data.len() <= MAX_URI_INPUT {
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(u) = Uri::parse(s) {
                assert_eq!(u.as_str(), s, "parsed URI is not the whole input");
                walk_uri(&u);
            }
        }
    }
});
