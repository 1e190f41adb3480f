//! Matching messages to transactions: responses to client transactions
//! (RFC 3261 §17.1.3) and requests to server transactions (§17.2.3),
//! including the RFC 2543 fallback for branches without the magic cookie.

use crate::message::headers::{Via, MAGIC_COOKIE};
use crate::message::{HeaderName, Message, Method};

/// §17.1.3: a response matches the client transaction whose request had
/// the same top Via branch and the same CSeq method. Kept as one string
/// (`METHOD SP branch`) so a lookup can be built in a reused buffer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey(String);

impl ClientKey {
    /// The key of a request we send or of a response we receive; `None`
    /// without a top Via branch or a CSeq.
    pub fn of(m: &Message<'_>) -> Option<ClientKey> {
        let mut s = String::new();
        ClientKey::write(m, &mut s).then_some(ClientKey(s))
    }

    /// Writes the key of `m` into `out` (cleared first); `false` if `m`
    /// has none.
    pub fn write(m: &Message<'_>, out: &mut String) -> bool {
        out.clear();
        let (Some(Ok(via)), Some(Ok(cseq))) = (m.via(), m.cseq()) else { return false };
        let Some(branch) = via.branch() else { return false };
        out.push_str(cseq.method().as_str());
        out.push(' ');
        out.push_str(branch);
        true
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// §17.2.3: how a request finds its server transaction, as one string:
/// with an RFC 3261 branch (`z9hG4bK…`), the method (ACK standing for
/// INVITE), the branch and the sent-by; otherwise the RFC 2543 fallback —
/// method, Request-URI, From tag, Call-ID, CSeq number and the whole top
/// Via. (The To tag is left out so the ACK, which carries the tag of our
/// response, matches its INVITE.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerKey(String);

impl ServerKey {
    /// The key of a received request; `None` if it lacks what matching needs.
    pub fn of(m: &Message<'_>) -> Option<ServerKey> {
        let mut s = String::new();
        ServerKey::write(m, &mut s).then_some(ServerKey(s))
    }

    /// Writes the key of `m` into `out` (cleared first); `false` if `m`
    /// has none.
    pub fn write(m: &Message<'_>, out: &mut String) -> bool {
        use std::fmt::Write as _;
        out.clear();
        let Some(method) = m.method() else { return false };
        let method = if *method == Method::Ack { Method::Invite } else { *method };
        let Some(Ok(via)) = m.via() else { return false };
        if ServerKey::write_branch(method, &via, out) {
            return true;
        }
        out.push_str(method.as_str());
        let (Some(rl), Some(Ok(from)), Some(Ok(call_id)), Some(Ok(cseq))) =
            (m.request_line(), m.from(), m.call_id(), m.cseq())
        else {
            return false;
        };
        let _ = write!(
            out,
            "\n2543\n{}\n{}\n{}\n{}\n{}",
            rl.uri,
            from.tag().unwrap_or_default(),
            call_id,
            cseq.seq(),
            via.as_str()
        );
        true
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Writes the key of a request of `method` (ACK standing for INVITE)
    /// whose top Via is `via`, into `out` (cleared first), when `via` has
    /// an RFC 3261 branch; `false` otherwise (the RFC 2543 fallback needs
    /// more of the message).
    pub(crate) fn write_branch(method: Method<'_>, via: &Via<'_>, out: &mut String) -> bool {
        use std::fmt::Write as _;
        out.clear();
        let method = if method == Method::Ack { Method::Invite } else { method };
        // "z9hG4bK" alone is no identifier (RFC 4475 §3.2.1): fall back.
        let Some(b) = via.branch().filter(|b| b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len()) else {
            return false;
        };
        out.push_str(method.as_str());
        out.push(' ');
        out.push_str(b);
        out.push(' ');
        for c in via.host_str().chars() {
            out.push(c.to_ascii_lowercase());
        }
        if let Some(p) = via.port() {
            let _ = write!(out, ":{p}");
        }
        true
    }
}

/// §8.2.2.2: requests are merged (arrived twice by different paths) when
/// they have no To tag and share From tag, Call-ID and CSeq but not the
/// transaction. The key uses the whole From value, which no proxy changes,
/// so no header needs a full parse on this per-request path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MergeKey(String);

impl MergeKey {
    /// The key of a request without a To tag (others cannot be merged).
    pub fn of(m: &Message<'_>) -> Option<MergeKey> {
        let h = m.headers();
        let to = h.first(HeaderName::To)?.value();
        if has_tag(to) {
            return None;
        }
        let from = h.first(HeaderName::From)?.value();
        let call_id = h.first(HeaderName::CallId)?.value();
        let cseq = h.first(HeaderName::CSeq)?.value();
        let mut s = String::with_capacity(from.len() + call_id.len() + cseq.len() + 2);
        for (i, part) in [from, call_id, cseq].into_iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str(std::str::from_utf8(part).ok()?);
        }
        Some(MergeKey(s))
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Whether a From/To value carries a `tag` header parameter: the
/// parameters follow the last `>` of a name-addr, or the first `;` of an
/// addr-spec (§20.10).
pub(crate) fn has_tag(v: &[u8]) -> bool {
    let params = match memchr::memrchr(b'>', v) {
        Some(p) => &v[p + 1..],
        None => v,
    };
    params.split(|&c| c == b';').skip(1).any(|p| {
        let name = p.split(|&c| c == b'=').next().unwrap_or_default();
        crate::message::grammar::trim(name).eq_ignore_ascii_case(b"tag")
    })
}

#[cfg(test)]
mod tests {
    use super::has_tag;

    #[test]
    fn tag_detection_on_raw_values() {
        assert!(has_tag(b"<sip:b@x>;tag=1"));
        assert!(has_tag(b"Bob <sip:b@x> ; TAG = 1"));
        assert!(has_tag(b"sip:b@x;tag=1"));
        assert!(!has_tag(b"<sip:b@x;tag=1>"), "a URI parameter is not the header's tag");
        assert!(!has_tag(b"\"a>b\" <sip:b@x>"));
        assert!(!has_tag(b"sip:b@x"));
        assert!(!has_tag(b"<sip:b@x>;tagx=1"));
    }
}
