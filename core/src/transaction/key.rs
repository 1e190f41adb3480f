//! Matching messages to transactions: responses to client transactions
//! (RFC 3261 §17.1.3) and requests to server transactions (§17.2.3),
//! including the RFC 2543 fallback for branches without the magic cookie.

use crate::message::headers::MAGIC_COOKIE;
use crate::message::{Message, Method};

/// §17.1.3: a response matches the client transaction whose request had
/// the same top Via branch and the same CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey {
    /// The top Via branch.
    pub branch: String,
    /// The CSeq method (CANCEL has its own transaction).
    pub method: String,
}

impl ClientKey {
    /// The key of a request we send or of a response we receive; `None`
    /// without a top Via branch or a CSeq.
    pub fn of(m: &Message<'_>) -> Option<ClientKey> {
        let via = m.via()?.ok()?;
        let cseq = m.cseq()?.ok()?;
        Some(ClientKey { branch: via.branch()?.to_owned(), method: cseq.method().as_str().to_owned() })
    }
}

/// §17.2.3: how a request finds its server transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerKey {
    /// RFC 3261 branch (`z9hG4bK…`): branch, sent-by and method, with ACK
    /// standing for INVITE.
    Rfc3261 {
        /// The top Via branch.
        branch: String,
        /// The top Via sent-by (`host[:port]`, lower case).
        sent_by: String,
        /// The request method, ACK mapped to INVITE.
        method: String,
    },
    /// RFC 2543 fallback: Request-URI, From tag, Call-ID, CSeq number and
    /// the whole top Via, with ACK standing for INVITE. (The To tag is left
    /// out so the ACK, which carries the tag of our response, matches.)
    Rfc2543 {
        /// The Request-URI as written.
        request_uri: String,
        /// The From tag.
        from_tag: String,
        /// The Call-ID.
        call_id: String,
        /// The CSeq number.
        cseq: u32,
        /// The top Via as written.
        via: String,
        /// The request method, ACK mapped to INVITE.
        method: String,
    },
}

impl ServerKey {
    /// The key of a received request; `None` if it lacks what matching needs.
    pub fn of(m: &Message<'_>) -> Option<ServerKey> {
        let method = match m.method()? {
            Method::Ack => Method::Invite,
            other => *other,
        }
        .as_str()
        .to_owned();
        let via = m.via()?.ok()?;
        match via.branch() {
            // "z9hG4bK" alone is no identifier (RFC 4475 §3.2.1): fall back.
            Some(b) if b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len() => {
                let sent_by = match via.port() {
                    Some(p) => format!("{}:{p}", via.host_str()),
                    None => via.host_str().to_owned(),
                }
                .to_ascii_lowercase();
                Some(ServerKey::Rfc3261 { branch: b.to_owned(), sent_by, method })
            }
            _ => Some(ServerKey::Rfc2543 {
                request_uri: m.request_line()?.uri.to_owned(),
                from_tag: m.from()?.ok()?.tag().unwrap_or_default().to_owned(),
                call_id: m.call_id()?.ok()?.as_str().to_owned(),
                cseq: m.cseq()?.ok()?.seq(),
                via: via.as_str().to_owned(),
                method,
            }),
        }
    }
}

/// §8.2.2.2: requests are merged (arrived twice by different paths) when
/// they have no To tag and share From tag, Call-ID and CSeq but not the
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MergeKey {
    from_tag: String,
    call_id: String,
    cseq: u32,
    method: String,
}

impl MergeKey {
    /// The key of a request without a To tag (others cannot be merged).
    pub fn of(m: &Message<'_>) -> Option<MergeKey> {
        if m.to()?.ok()?.tag().is_some() {
            return None;
        }
        let cseq = m.cseq()?.ok()?;
        Some(MergeKey {
            from_tag: m.from()?.ok()?.tag()?.to_owned(),
            call_id: m.call_id()?.ok()?.as_str().to_owned(),
            cseq: cseq.seq(),
            method: cseq.method().as_str().to_owned(),
        })
    }
}
