//! The sample messages in `benches/data/` (used by the `parse` benchmark and
//! the allocation test) are what they claim to be: exact CRLFs, right
//! Content-Length, valid, and of the intended size and shape.

#[path = "common/mod.rs"]
mod common;

use common::*;
use sipline::message::validate::validate;
use sipline::message::{Message, INLINE_HEADERS};

#[test]
fn samples_parse_validate_and_are_framed_exactly() {
    for (name, bytes) in SIP_SAMPLES {
        assert!(crlf_only(bytes), "{name}: bare CR or LF");
        let m = Message::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        validate(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.len(), bytes.len(), "{name}: octets after the message");
        let body_len = u32::try_from(m.body().len()).unwrap();
        assert_eq!(m.content_length(), Some(body_len), "{name}: Content-Length");
        assert!(m.headers().len() < INLINE_HEADERS, "{name}: too many fields");
        assert!(m.via().unwrap().unwrap().has_magic_cookie(), "{name}: branch");
        assert!(m.from().unwrap().unwrap().tag().is_some(), "{name}: From tag");
    }

    let invite = Message::parse(INVITE).unwrap();
    assert!((900..=1100).contains(&INVITE.len()));
    assert!((250..=300).contains(&invite.body().len()));
    assert_eq!(invite.vias().count(), 2);

    let register = Message::parse(REGISTER).unwrap();
    let creds = register.authorization().next().unwrap().unwrap();
    assert!(creds.is_digest());
    assert_eq!(creds.username().as_deref(), Some("alice"));
    assert_eq!(creds.realm().as_deref(), Some("example.com"));
    assert_eq!(creds.algorithm().as_deref(), Some("MD5"));
    assert_eq!(creds.nc().as_deref(), Some("00000001"));
    assert_eq!(creds.response().map(|r| r.len()), Some(32));

    let challenge = Message::parse(UNAUTHORIZED).unwrap();
    let ch = challenge.www_authenticate().next().unwrap().unwrap();
    assert!(ch.is_digest());
    assert_eq!(ch.realm(), creds.realm());
    assert_eq!(ch.nonce(), creds.nonce());
    assert_eq!(ch.opaque(), creds.opaque());
    assert_eq!(ch.qop_options().collect::<Vec<_>>(), ["auth"]);

    // The httparse reference input: a complete request of about the
    // INVITE's size, within the benchmark's 32 header slots.
    assert!(crlf_only(HTTP_REQUEST));
    assert!(HTTP_REQUEST.len().abs_diff(INVITE.len()) < 50);
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    assert_eq!(req.parse(HTTP_REQUEST).unwrap(), httparse::Status::Complete(HTTP_REQUEST.len()));
}

#[test]
fn probe_inputs_have_the_intended_shape() {
    let m = Message::parse(WSINV).unwrap();
    validate(&m).unwrap();
    let fields = m.headers().len();
    assert!((12..INLINE_HEADERS).contains(&fields), "wsinv: {fields}");

    let spill = spill_message();
    let m = Message::parse(&spill).unwrap();
    validate(&m).unwrap();
    assert_eq!(m.headers().len(), SPILL_FIELDS);
    assert_eq!(m.len(), spill.len());
}
