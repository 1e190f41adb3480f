//! Dialogs (RFC 3261 §12): the peer-to-peer relationship an INVITE sets up,
//! kept as plain state — Call-ID, tags, URIs, sequence numbers, the remote
//! target and the route set — with the rules for building the requests
//! inside it (§12.2.1.1) and checking the ones that arrive (§12.2.2).
//!
//! A [`Dialog`] does no IO and keeps no timers; the endpoint's sessions
//! (`endpoint::session`) drive it.
//!
//! ```
//! use sipline::dialog::Dialog;
//! use sipline::message::Message;
//!
//! let invite = Message::parse(
//!     b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//!       From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n\
//!       CSeq: 7 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\n\
//!       Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nContent-Length: 0\r\n\r\n",
//! )
//! .unwrap();
//! let mut dialog = Dialog::from_uas(&invite, "b2").unwrap();
//! let bye = dialog.next_request();
//! assert_eq!(bye.uri, "sip:alice@192.0.2.1");
//! // §12.1.1: the UAS keeps the Record-Route order.
//! assert_eq!(bye.routes, ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]);
//! assert_eq!(bye.to, "<sip:alice@example.com>;tag=a1");
//! ```

use crate::message::headers::{Address, HeaderValue};
use crate::message::{Message, Uri};

/// Why a dialog could not be formed from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// A From, To, Call-ID or CSeq header is missing or malformed.
    #[error("a header the dialog needs is missing or malformed")]
    Headers,
    /// The message lacks the tag that names the other side.
    #[error("no remote tag")]
    NoTag,
    /// There is no usable Contact to be the remote target (§12.1.1).
    #[error("no Contact to use as the remote target")]
    NoContact,
}

/// Whether a dialog is early (from a provisional response) or confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a 1xx with a To tag (§12.1).
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// The three values that identify a dialog (§12: Call-ID, local tag,
/// remote tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// The head of a request inside a dialog (§12.2.1.1), for the endpoint to
/// complete with a Via, Max-Forwards and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The Request-URI.
    pub uri: String,
    /// Route header values, in order.
    pub routes: Vec<String>,
    /// The From value (our URI and tag).
    pub from: String,
    /// The To value (the peer's URI and tag).
    pub to: String,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
}

impl RequestHead {
    /// The URI the request is sent to first: the first Route, or the
    /// Request-URI with no route set (§8.1.2, §12.2.1.1).
    pub fn next_hop(&self) -> String {
        match self.routes.first() {
            Some(r) => route_uri(r).unwrap_or_else(|| self.uri.clone()),
            None => self.uri.clone(),
        }
    }
}

/// A Route value's URI (`<sip:p1;lr>` → `sip:p1;lr`).
fn route_uri(route: &str) -> Option<String> {
    let a = Address::parse_value(route.as_bytes())?;
    Some(a.uri().as_str().to_owned())
}

/// Why an arriving request was refused by its dialog (§12.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// Its CSeq is lower than one already seen: answer 500.
    #[error("CSeq out of order")]
    OutOfOrder,
}

/// One dialog's state (§12.1, §12.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    local_uri: String,
    remote_uri: String,
    /// The last CSeq we used; `None` until we send (a UAS dialog, §12.1.1).
    local_seq: Option<u32>,
    /// The last CSeq the peer used; `None` until it sends (§12.1.2).
    remote_seq: Option<u32>,
    remote_target: String,
    /// Route values, in the order requests carry them.
    route_set: Vec<String>,
    secure: bool,
    state: DialogState,
}

/// From/To/Call-ID/CSeq of `m`.
struct Ids<'m> {
    from: Address<'m>,
    to: Address<'m>,
    call_id: &'m str,
    seq: u32,
}

fn ids<'m>(m: &Message<'m>) -> Result<Ids<'m>, DialogError> {
    let from = m.from().and_then(Result::ok).ok_or(DialogError::Headers)?;
    let to = m.to().and_then(Result::ok).ok_or(DialogError::Headers)?;
    let call_id = m.call_id().and_then(Result::ok).ok_or(DialogError::Headers)?;
    let seq = m.cseq().and_then(Result::ok).ok_or(DialogError::Headers)?.seq();
    Ok(Ids { from, to, call_id: call_id.as_str(), seq })
}

/// The first Contact's URI (§12.1.1, §12.1.2: the remote target).
fn contact_target(m: &Message<'_>) -> Option<String> {
    let c = m.contacts().next()?.ok()?;
    Some(c.address()?.uri().as_str().to_owned())
}

/// Record-Route values in the order they appear.
fn record_route(m: &Message<'_>) -> Vec<String> {
    m.record_routes().filter_map(Result::ok).map(|a| a.as_str().to_owned()).collect()
}

fn is_sips(uri: &str) -> bool {
    Uri::parse(uri).is_ok_and(|u| u.scheme().eq_ignore_ascii_case("sips"))
}

impl Dialog {
    /// §12.1.2: the UAC's dialog from the request it sent and a response
    /// with a To tag — a 1xx makes it early, a 2xx confirmed. The route
    /// set is the response's Record-Route in reverse.
    pub fn from_uac(request: &Message<'_>, response: &Message<'_>) -> Result<Dialog, DialogError> {
        let sent = ids(request)?;
        let got = ids(response)?;
        let local_tag = sent.from.tag().ok_or(DialogError::Headers)?;
        let remote_tag = got.to.tag().ok_or(DialogError::NoTag)?;
        let remote_target = contact_target(response).ok_or(DialogError::NoContact)?;
        let mut route_set = record_route(response);
        route_set.reverse();
        let code = response.status().map_or(0, crate::message::StatusCode::as_u16);
        let uri = request.request_line().map(|r| r.uri).unwrap_or_default();
        Ok(Dialog {
            id: DialogId {
                call_id: sent.call_id.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            local_uri: sent.from.uri().as_str().to_owned(),
            remote_uri: sent.to.uri().as_str().to_owned(),
            local_seq: Some(sent.seq),
            remote_seq: None,
            remote_target,
            route_set,
            secure: is_sips(uri),
            state: if code < 200 { DialogState::Early } else { DialogState::Confirmed },
        })
    }

    /// §12.1.1: the UAS's dialog from the request that creates it and the
    /// tag we put in our responses. Early until [`confirm`](Self::confirm).
    pub fn from_uas(request: &Message<'_>, local_tag: &str) -> Result<Dialog, DialogError> {
        Dialog::uas(request, local_tag, None)
    }

    /// [`from_uas`](Self::from_uas) for a request that may lack a Contact:
    /// `target` stands for the peer's until a target refresh brings one (a
    /// NOTIFY without Contact, as liblinphone sends, forming the dialog
    /// of our SUBSCRIBE before its 2xx: its Request-URI goes there).
    pub fn from_uas_or(request: &Message<'_>, local_tag: &str, target: &str) -> Result<Dialog, DialogError> {
        Dialog::uas(request, local_tag, Some(target))
    }

    fn uas(request: &Message<'_>, local_tag: &str, fallback: Option<&str>) -> Result<Dialog, DialogError> {
        let got = ids(request)?;
        let remote_tag = got.from.tag().ok_or(DialogError::NoTag)?;
        let remote_target =
            contact_target(request).or_else(|| fallback.map(str::to_owned)).ok_or(DialogError::NoContact)?;
        let uri = request.request_line().map(|r| r.uri).unwrap_or_default();
        Ok(Dialog {
            id: DialogId {
                call_id: got.call_id.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            local_uri: got.to.uri().as_str().to_owned(),
            remote_uri: got.from.uri().as_str().to_owned(),
            local_seq: None,
            remote_seq: Some(got.seq),
            remote_target,
            route_set: record_route(request),
            secure: is_sips(uri),
            state: DialogState::Early,
        })
    }

    /// The dialog's identifiers.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The peer's current target (its Contact).
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The route set, in the order requests carry it.
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// Whether the dialog is secure (`sips:` Request-URI, §12.1.1).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The last CSeq number we used, if any.
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// Sets the last CSeq number we used: a dialog formed by a request of
    /// the peer that answers one of ours (a NOTIFY before the 2xx of our
    /// SUBSCRIBE, RFC 6665 §4.1.2.4) goes on from that request's number.
    pub fn set_local_seq(&mut self, seq: u32) {
        self.local_seq = Some(seq);
    }

    /// Marks the dialog confirmed (a 2xx sent or received).
    pub fn confirm(&mut self) {
        self.state = DialogState::Confirmed;
    }

    /// A UAC's early dialog confirmed by a 2xx (§13.2.2.4): the 2xx's
    /// Contact and Record-Route replace those of the provisional.
    pub fn confirm_with(&mut self, response: &Message<'_>) {
        if let Some(target) = contact_target(response) {
            self.remote_target = target;
        }
        let mut routes = record_route(response);
        if !routes.is_empty() || self.state == DialogState::Early {
            routes.reverse();
            self.route_set = routes;
        }
        self.state = DialogState::Confirmed;
    }

    /// A target refresh (§12.2.1.2, §12.2.2): a re-INVITE or its 2xx
    /// carries the peer's new Contact.
    pub fn refresh_target(&mut self, m: &Message<'_>) {
        if let Some(target) = contact_target(m) {
            self.remote_target = target;
        }
    }

    /// Whether `request` belongs here: same Call-ID, its To tag ours and
    /// its From tag the peer's (§12.2.2).
    pub fn matches_request(&self, request: &Message<'_>) -> bool {
        let Ok(i) = ids(request) else { return false };
        i.call_id == self.id.call_id
            && i.to.tag() == Some(self.id.local_tag.as_str())
            && i.from.tag() == Some(self.id.remote_tag.as_str())
    }

    /// §12.2.2: an arriving request's CSeq must be higher than the last
    /// one (retransmissions never reach here: the transaction layer
    /// absorbs them). ACK and CANCEL reuse their INVITE's number and are
    /// not checked.
    pub fn check_remote_seq(&mut self, seq: u32) -> Result<(), OrderError> {
        match self.remote_seq {
            Some(last) if seq <= last => Err(OrderError::OutOfOrder),
            _ => {
                self.remote_seq = Some(seq);
                Ok(())
            }
        }
    }

    /// The head of the next request in the dialog (§12.2.1.1), taking a
    /// new CSeq number.
    pub fn next_request(&mut self) -> RequestHead {
        // §12.2.1.1: an empty local sequence starts per §8.1.1.5.
        let seq = self.local_seq.map_or(1, |s| s.wrapping_add(1));
        self.local_seq = Some(seq);
        self.head(seq)
    }

    /// The head of a request with CSeq `seq` (an ACK reuses its INVITE's).
    ///
    /// With a loose first route the Request-URI is the remote target and
    /// the route set goes in Route as is; with a strict one (no `lr`), the
    /// Request-URI is that route's URI and the remote target goes last in
    /// Route.
    pub fn head(&self, seq: u32) -> RequestHead {
        let from = format!("<{}>;tag={}", self.local_uri, self.id.local_tag);
        let to = format!("<{}>;tag={}", self.remote_uri, self.id.remote_tag);
        let strict = self.route_set.first().and_then(|r| {
            let a = Address::parse_value(r.as_bytes())?;
            let loose = a.uri().as_sip().is_some_and(|s| s.params().contains("lr"));
            (!loose).then(|| a.uri().as_str().to_owned())
        });
        let (uri, routes) = match strict {
            Some(first) => {
                let mut routes: Vec<String> = self.route_set[1..].to_vec();
                routes.push(format!("<{}>", self.remote_target));
                (first, routes)
            }
            None => (self.remote_target.clone(), self.route_set.clone()),
        };
        RequestHead { uri, routes, from, to, call_id: self.id.call_id.clone(), cseq: seq }
    }
}

#[cfg(test)]
mod tests;
