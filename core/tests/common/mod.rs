//! Sample messages shared by the integration tests of `sipline`.
#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use sipline::message::INLINE_HEADERS;
use std::fmt::Write as _;

pub const INVITE: &[u8] = include_bytes!("../../benches/data/invite_sdp.sip");
pub const OK_200: &[u8] = include_bytes!("../../benches/data/ok_200.sip");
pub const REGISTER: &[u8] = include_bytes!("../../benches/data/register_auth.sip");
pub const UNAUTHORIZED: &[u8] = include_bytes!("../../benches/data/unauthorized_401.sip");
pub const HTTP_REQUEST: &[u8] = include_bytes!("../../benches/data/http_request.txt");
/// RFC 4475 §3.1.1.1 "A Short Tortuous INVITE", byte for byte.
pub const WSINV: &[u8] = include_bytes!("../../benches/data/rfc4475_wsinv.sip");

/// The benchmark's SIP samples, by file name.
pub const SIP_SAMPLES: [(&str, &[u8]); 4] = [
    ("invite_sdp.sip", INVITE),
    ("ok_200.sip", OK_200),
    ("register_auth.sip", REGISTER),
    ("unauthorized_401.sip", UNAUTHORIZED),
];

/// How many header fields the spill message carries: past the inline table.
pub const SPILL_FIELDS: usize = INLINE_HEADERS + 8;

/// Every LF is preceded by a CR and every CR followed by a LF.
pub fn crlf_only(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &c)| match c {
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// An OPTIONS request with [`SPILL_FIELDS`] header fields.
pub fn spill_message() -> Vec<u8> {
    let mut s = String::from(
        "OPTIONS sip:carol@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKspill01\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:carol@example.com>\r\n\
         From: <sip:dave@example.com>;tag=83748\r\n\
         Call-ID: spill-7731@192.0.2.7\r\n\
         CSeq: 1 OPTIONS\r\n",
    );
    let fixed = 7; // the six above plus Content-Length
    for i in 0..SPILL_FIELDS - fixed {
        writeln!(s, "X-Trace-{i}: hop {i}\r").unwrap();
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}
