//! Matching messages to transactions: responses to client transactions
//! (RFC 3261 §17.1.3) and requests to server transactions (§17.2.3),
//! including the RFC 2543 fallback for branches without the magic cookie.

use crate::message::headers::MAGIC_COOKIE;
use crate::message::{Message, Method};

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
        out.push_str(method.as_str());
        match via.branch() {
            // "z9hG4bK" alone is no identifier (RFC 4475 §3.2.1): fall back.
            Some(b) if b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len() => {
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
            _ => {
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
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// §8.2.2.2: requests are merged (arrived twice by different paths) when
/// they have no To tag and share From tag, Call-ID and CSeq but not the
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MergeKey(String);

impl MergeKey {
    /// The key of a request without a To tag (others cannot be merged).
    pub fn of(m: &Message<'_>) -> Option<MergeKey> {
        if m.to()?.ok()?.tag().is_some() {
            return None;
        }
        let cseq = m.cseq()?.ok()?;
        Some(MergeKey(format!("{}\n{}\n{}\n{}", m.from()?.ok()?.tag()?, m.call_id()?.ok()?, cseq.seq(), cseq.method())))
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}
