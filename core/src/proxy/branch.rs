//! The branch parameter of a forwarded request (RFC 3261 §16.6 step 8)
//! and the loop check built on it (§16.3 step 4).
//!
//! A branch is `z9hG4bK`, 32 hex digits of a SHA-256 hash (truncated to
//! 128 bits) of the fields §16.6 step 8 lists, a `.` and the index of the
//! branch within its fork. The hash covers what a looped request keeps and
//! a spiraling one changes, so a request that comes back unchanged hashes
//! the same way it did when we forwarded it.

use super::ProxyIdentity;
use crate::message::headers::{Address, HeaderValue, ListIter, Via, MAGIC_COOKIE};
use crate::message::{Header, HeaderName, Message};
use ring::digest::{Context, SHA256};
use std::fmt::Write as _;

/// Octets of the hash kept in the branch (128 bits, 32 hex digits).
const HASH_LEN: usize = 16;

/// §16.6 step 8: the branch for the copy of `m` sent on fork branch
/// `index` — the magic cookie (§8.1.1.7), a hash of the Request-URI as
/// received, the top Via, the To and From tags, Call-ID, the CSeq number,
/// Proxy-Require, Proxy-Authorization and Route, then `.index`, so every
/// branch of a fork differs while the hash part stays the same for the
/// same request.
///
/// Deterministic: the same request gives the same branch, with no RNG.
/// Call it on the request as received, before any rewriting. The method is
/// left out, as §16.6 step 8 does, so a CANCEL hashes like its INVITE.
///
/// ```
/// use sipline::message::Message;
/// use sipline::proxy::branch_for;
/// let m = Message::parse(b"MESSAGE sip:bob@example.com SIP/2.0\r\n\
/// Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\
/// From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\r\n").unwrap();
/// let (b0, b1) = (branch_for(&m, 0), branch_for(&m, 1));
/// assert!(b0.starts_with("z9hG4bK") && b0.ends_with(".0"));
/// assert_ne!(b0, b1);
/// assert_eq!(b0, branch_for(&m, 0));
/// ```
pub fn branch_for(m: &Message<'_>, index: u32) -> String {
    let hash = loop_hash(m, via_values(m).next());
    let mut s = String::with_capacity(MAGIC_COOKIE.len() + 2 * HASH_LEN + 11);
    s.push_str(MAGIC_COOKIE);
    push_hex(&mut s, &hash);
    let _ = write!(s, ".{index}");
    s
}

/// Every Via value of `m`, top first, as written.
fn via_values<'m, 'a>(m: &'m Message<'a>) -> impl Iterator<Item = &'a [u8]> + 'm {
    m.headers().all(HeaderName::Via).flat_map(|h| ListIter::new(h.value()))
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// The hash part of a branch [`branch_for`] wrote, if `branch` is one.
fn hash_part(branch: &str) -> Option<&str> {
    let rest = branch.strip_prefix(MAGIC_COOKIE)?;
    let hash = rest.split_once('.').map_or(rest, |(h, _)| h);
    (hash.len() == 2 * HASH_LEN && hash.bytes().all(|c| c.is_ascii_hexdigit())).then_some(hash)
}

/// The hash of §16.6 step 8 over `m`, with `top_via` standing for its top
/// Via value. Each field goes in as a tag octet, a 32-bit length and its
/// octets, so no two different field lists hash the same input.
fn loop_hash(m: &Message<'_>, top_via: Option<&[u8]>) -> [u8; HASH_LEN] {
    let mut ctx = Context::new(&SHA256);
    let mut field = |tag: u8, bytes: &[u8]| {
        ctx.update(&[tag]);
        ctx.update(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        ctx.update(bytes);
    };
    let h = m.headers();
    let raw = |name| h.first(name).map(Header::value).unwrap_or_default();
    // "the Request-URI of the request received (before translation)"
    field(b'R', m.request_line().map_or("", |r| r.uri).as_bytes());
    // "the topmost Via header": the sent-protocol's transport, sent-by and
    // branch. Parameters a hop adds on receipt (received, rport, §18.2.1,
    // RFC 3581) are left out, so a stamped copy hashes like the original.
    match top_via.map(|raw| (raw, Via::parse_value(raw))) {
        Some((_, Some(v))) => {
            let mut s = String::with_capacity(v.host_str().len() + 48);
            s.push_str(&v.transport().to_ascii_uppercase());
            s.push(' ');
            s.push_str(&v.host_str().to_ascii_lowercase());
            let _ = write!(s, ":{} {}", v.port().unwrap_or(0), v.branch().unwrap_or_default());
            field(b'V', s.as_bytes());
        }
        Some((raw, None)) => field(b'v', raw),
        None => field(b'V', b""),
    }
    // "the values of the To tag, From tag, Call-ID header field"
    for (tag, name) in [(b'T', HeaderName::To), (b'F', HeaderName::From)] {
        match m.value::<Address<'_>>(name) {
            Some(Ok(a)) => field(tag, a.tag().unwrap_or_default().as_bytes()),
            // A value that does not parse goes in whole.
            Some(Err(_)) => field(tag.to_ascii_lowercase(), raw(name)),
            None => field(tag, b""),
        }
    }
    field(b'I', raw(HeaderName::CallId));
    // "the sequence number from the CSeq header field"
    match m.cseq() {
        Some(Ok(c)) => field(b'C', c.seq().to_string().as_bytes()),
        Some(Err(_)) => field(b'c', raw(HeaderName::CSeq)),
        None => field(b'C', b""),
    }
    // "in addition to any Proxy-Require and Proxy-Authorization header
    // fields that may be present", and the Route set as received.
    for (tag, name) in
        [(b'P', HeaderName::ProxyRequire), (b'A', HeaderName::ProxyAuthorization), (b'O', HeaderName::Route)]
    {
        for x in h.all(name) {
            field(tag, x.value());
        }
    }
    let digest = ctx.finish();
    let mut out = [0u8; HASH_LEN];
    if let Some(d) = digest.as_ref().get(..HASH_LEN) {
        out.copy_from_slice(d);
    }
    out
}

/// §16.3 step 4: whether `m` has looped. For each Via value with our
/// sent-by and a branch [`branch_for`] wrote, the hash is computed again
/// for `m` as it is now, with the Via value below ours standing for the
/// top Via the request had when we forwarded it. Equal: the request came
/// back unchanged (a loop). Different: it changed on the way, e.g. a new
/// Request-URI (a spiral, allowed).
pub(super) fn is_loop(m: &Message<'_>, me: &ProxyIdentity) -> bool {
    let vias: Vec<&[u8]> = via_values(m).collect();
    vias.iter().enumerate().any(|(i, raw)| {
        let Some(via) = Via::parse_value(raw) else { return false };
        let Some(ours) = via.branch().and_then(hash_part) else { return false };
        if !me.is_me_via(&via) {
            return false;
        }
        let mut now = String::with_capacity(2 * HASH_LEN);
        push_hex(&mut now, &loop_hash(m, vias.get(i + 1).copied()));
        now.eq_ignore_ascii_case(ours)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_part_reads_only_our_shape() {
        let h = "0123456789abcdef0123456789abcdef";
        assert_eq!(hash_part(&format!("z9hG4bK{h}.3")), Some(h));
        assert_eq!(hash_part(&format!("z9hG4bK{h}")), Some(h));
        assert_eq!(hash_part("z9hG4bK776asdhds"), None);
        assert_eq!(hash_part(&format!("z9hG4bK{}.0", &h[1..])), None);
        assert_eq!(hash_part(&format!("xz9hG4bK{h}.0")), None);
    }
}
