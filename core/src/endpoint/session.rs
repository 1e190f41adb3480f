//! Signaling sessions: INVITE dialogs in both directions (RFC 3261
//! §12–§15). Bodies (SDP) are opaque: the application gives offers and
//! answers, the endpoint carries them.
//!
//! Outgoing ([`Endpoint::invite`]): provisional responses arrive as
//! [`SessionEvent::Progress`]; a 2xx confirms the dialog and the endpoint
//! sends the ACK itself (§13.2.2.4) — or, for a late offer (an INVITE with
//! no body answered by a 2xx with one), waits for
//! [`Endpoint::acknowledge`] to carry the answer; later 2xx copies get the
//! same ACK again; a 2xx from another fork is ACKed and ended with BYE.
//! [`Endpoint::hangup`] before the answer sends CANCEL (§9.1, only after a
//! provisional response) and after it BYE (§15.1.1).
//!
//! Incoming ([`Event::IncomingSession`]): [`Endpoint::ring`],
//! [`Endpoint::accept`] or [`Endpoint::reject`]. An accepted session's 2xx
//! is retransmitted until the ACK comes (§13.3.1.4); with none in 64·T1
//! the session ends with a BYE ([`SessionEnd::NoAck`]). A CANCEL ends a
//! session not yet answered: 200 to the CANCEL, 487 to the INVITE (§9.2).
//! Shutdown ends every session at once but such an accepted one: its BYE
//! waits for the ACK, or for the 64·T1 give-up (§15).
//! An incoming session the application leaves untouched for
//! [`EndpointConfig::answer_within`](super::EndpointConfig::answer_within)
//! gets 480; once it rang, it waits for the caller.
//!
//! In the session: BYE either way; re-INVITE either way
//! ([`Endpoint::reinvite`], [`SessionEvent::Reoffer`]) with 491 on glare
//! and the §14.1 random back-off; any other request inside the dialog
//! ([`Endpoint::send_in_session`], answered ones arrive as
//! [`Event::Incoming`] or [`Event::Message`] with their session); 481 for
//! requests that match no dialog, 500 for a CSeq lower than the last
//! (§12.2.2); route sets from Record-Route (§12.1). A session over TCP or
//! TLS pins its connection while it lives.
//!
//! Reliable provisional responses (RFC 3262, [`PrackMode`] in
//! [`EndpointConfig::prack`](super::EndpointConfig::prack)): our INVITEs
//! say `Supported` (or `Require`) `100rel`; a provisional response that
//! requires it is PRACKed in its early dialog (RAck, §7.2), its
//! retransmissions absorbed and one out of order ignored (§4). As UAS,
//! [`Endpoint::ring`] sends reliably when the INVITE asks for it (RSeq
//! from a random start, §3): again at T1, 2·T1… until the PRACK
//! ([`SessionEvent::Pracked`]); with none in 64·T1 the INVITE gets 500 and
//! the session ends ([`SessionEnd::NoPrack`]). One is unacknowledged at a
//! time (the next waits its turn), and a 2xx waits for the PRACK of one
//! that carried a body (§3). A PRACK matching nothing gets 481.
//!
//! UPDATE (RFC 3311) both ways in early and confirmed dialogs:
//! [`Endpoint::update`] ([`SessionEvent::Updated`] follows), and the
//! peer's as [`SessionEvent::UpdateOffer`], answered with
//! [`Endpoint::accept_update`] or [`Endpoint::reject_update`]; one with no
//! body is answered 200 at once. An offer while another is under way gets
//! 491 or 500 (§5.2).
//!
//! Session timers (RFC 4028, [`SessionTimerConfig`] in
//! [`EndpointConfig::session_timers`](super::EndpointConfig::session_timers)):
//! our INVITEs ask for Session-Expires (again with the larger Min-SE after
//! a 422, §7.4); as UAS the interval is checked (422, §9) and the refresher
//! chosen (§9). The refresher sends UPDATE (or a re-INVITE with the last
//! session description when the peer does not allow UPDATE) at half the
//! interval; the other side sends BYE when no refresh came by the interval
//! less min(32 s, interval/3) ([`SessionEnd::Expired`], §10). Each agreed
//! interval is reported as [`SessionEvent::Refreshed`].

use super::{
    loose_route, uas, Endpoint, Event, IncomingId, Origin, Output, Pending, Request, RequestError, RequestId, Response,
    SendError,
};
use crate::dialog::{Dialog, DialogError, DialogState};
use crate::message::headers::ListIter;
use crate::message::{HeaderName, Message, MessageWriter, Method, ResponseHead, StatusCode};
use crate::transaction::{ClientId, ServerId};
use crate::transport::{ConnId, Peer, Source, Transport};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod reliable;
mod timer;

pub use reliable::PrackMode;
use reliable::{Held, InFlight, Reliable};
pub use timer::SessionTimerConfig;
use timer::{Agreed, Negotiation, Side};

/// A session handle, returned at once; what happens to the session comes
/// as [`Event::Session`] events carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(super) u64);

/// A message body with its type (an SDP offer or answer, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The Content-Type (`application/sdp`).
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Body {
    /// A body of type `content_type`.
    pub fn new(content_type: &str, bytes: impl Into<Vec<u8>>) -> Body {
        Body { content_type: content_type.to_owned(), bytes: bytes.into() }
    }

    /// An `application/sdp` body.
    pub fn sdp(bytes: impl Into<Vec<u8>>) -> Body {
        Body::new("application/sdp", bytes)
    }

    /// The body of `m`, if it has one.
    pub(super) fn of(m: &Message<'_>) -> Option<Body> {
        if m.body().is_empty() {
            return None;
        }
        let content_type = m.content_type().and_then(Result::ok).map(|t| t.as_str().to_owned());
        Some(Body { content_type: content_type.unwrap_or_default(), bytes: m.body().to_vec() })
    }
}

/// What happened in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// Outgoing: a provisional response (100, 180, 183…; a body is in
    /// `response.bytes`).
    Progress(Response),
    /// Outgoing: a 2xx answered the INVITE; the ACK is sent (or waits for
    /// [`Endpoint::acknowledge`] when the offer is late).
    Answered(Response),
    /// Incoming: the caller's ACK for our 2xx arrived (with the answer to a
    /// late offer, if any). Also after an accepted re-INVITE.
    Confirmed {
        /// The ACK's body.
        body: Option<Body>,
    },
    /// The peer sent a re-INVITE: answer it with [`Endpoint::accept`] or
    /// [`Endpoint::reject`] on this session.
    Reoffer {
        /// The offer, if any.
        body: Option<Body>,
        /// The whole request.
        request: Arc<[u8]>,
    },
    /// Our re-INVITE or UPDATE ended: its 2xx (ACK sent), or why not. The
    /// session goes on unless [`SessionEvent::Ended`] follows.
    Updated(Result<Response, RequestError>),
    /// Incoming: the PRACK for our reliable provisional response arrived
    /// and was answered 200 (RFC 3262 §3), with its body, if any.
    Pracked {
        /// The PRACK's body.
        body: Option<Body>,
    },
    /// The peer sent an UPDATE with an offer (RFC 3311 §5.2): answer it
    /// with [`Endpoint::accept_update`] or [`Endpoint::reject_update`].
    UpdateOffer {
        /// The offer.
        body: Option<Body>,
        /// The whole request.
        request: Arc<[u8]>,
    },
    /// A session timer was agreed or refreshed (RFC 4028): the session
    /// ends unless refreshed within `interval`.
    Refreshed {
        /// The session interval (Session-Expires).
        interval: Duration,
        /// We send the refreshes (else the peer does).
        we_refresh: bool,
    },
    /// The session is over; its handle is no longer valid.
    Ended(SessionEnd),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// We hung up (BYE, or CANCEL before the answer).
    HungUp,
    /// The peer sent BYE.
    PeerHungUp,
    /// Incoming: the caller cancelled before we answered. Outgoing: our
    /// CANCEL took effect (487).
    Cancelled,
    /// Incoming: we rejected it.
    Rejected,
    /// Outgoing: the INVITE failed (a 3xx–6xx, timeout, connection or TLS
    /// failure); or a request in the dialog got 481 or 408 (§12.2.1.2).
    Failed(RequestError),
    /// Incoming: no ACK came for our 2xx within 64·T1; BYE sent
    /// (§13.3.1.4).
    NoAck,
    /// Incoming: the application neither rang nor answered in time; 480
    /// sent.
    Unanswered,
    /// The endpoint shut down (an incoming session whose 2xx was not yet
    /// acknowledged ends so when its ACK comes, BYE following, §15).
    ShutDown,
    /// Incoming: no PRACK came for our reliable provisional response
    /// within 64·T1; the INVITE got 500 (RFC 3262 §3).
    NoPrack,
    /// No session refresh came in time: BYE sent (RFC 4028 §10).
    Expired,
}

/// Why a session command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No such session (it ended, or never was).
    #[error("no such session")]
    Unknown,
    /// The session is not in a state for this (e.g. ringing an outgoing
    /// session, a re-INVITE while another is under way).
    #[error("the session cannot do this now")]
    State,
    /// The status code does not fit the command.
    #[error("invalid status code for this command")]
    Status,
    /// The request could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Outgoing: INVITE sent, no final response yet.
    Calling,
    /// Incoming: not answered finally yet.
    Offered,
    /// Incoming: 2xx sent, waiting for the ACK.
    Accepted,
    /// Both: the dialog is confirmed.
    Confirmed,
    /// We sent BYE.
    Ending,
}

/// Session timers, each at most once per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// §13.3.1.4: the 2xx again.
    Retransmit,
    /// §13.3.1.4: no ACK in 64·T1.
    NoAck,
    /// The application did not react to an incoming session (or re-INVITE).
    Unanswered,
    /// §9.1: no final response 64·T1 after our CANCEL.
    CancelGiveUp,
    /// §14.1: try the re-INVITE again after a 491.
    Glare,
    /// Late offer: the application did not give the ACK's body in time.
    AckWait,
    /// RFC 3262 §3: the reliable provisional response again.
    PrackRetransmit,
    /// RFC 3262 §3: no PRACK in 64·T1.
    PrackGiveUp,
    /// RFC 4028 §10: time to refresh (we are the refresher).
    Refresh,
    /// RFC 4028 §10: the session expires.
    Expiry,
    /// RFC 3311 §5.1: try the UPDATE again after a 491.
    GlareUpdate,
    /// The application did not answer the peer's UPDATE in time.
    UpdateUnanswered,
}

/// The offer of our re-INVITE (none: the peer makes one in its 2xx).
struct OurOffer(Option<Body>);

/// A 2xx we retransmit until its ACK (§13.3.1.4).
struct Unacked {
    bytes: Arc<[u8]>,
    peer: Peer,
    cseq: u32,
    interval: Duration,
}

/// An incoming INVITE (initial or re-INVITE) not yet answered finally.
struct Offer {
    server: ServerId,
    /// What each response to the INVITE copies from it, written once.
    head: ResponseHead,
    /// The INVITE's CSeq number (its ACK carries the same, §13.2.2.4).
    cseq: u32,
    peer: Peer,
    /// What its 2xx says about the session timer (RFC 4028 §9).
    timer: Negotiation,
}

impl Offer {
    /// The INVITE (or re-INVITE, or UPDATE) `m` waiting in transaction
    /// `server` for the application's answer; `None` if it cannot be
    /// answered.
    fn of(server: ServerId, m: &Message<'_>, local_tag: &str, source: &Source) -> Option<Offer> {
        Some(Offer {
            server,
            head: ResponseHead::of(m, local_tag)?,
            cseq: m.cseq().and_then(Result::ok).map_or(0, |c| c.seq()),
            peer: Peer::reply_to_message(source, m),
            timer: Negotiation::None,
        })
    }
}

/// One session.
// Its flags are independent facts of the protocol (a provisional came, the
// offer was late, BYE waits for the ACK…), not states of one machine.
#[allow(clippy::struct_excessive_bools)]
pub(super) struct Session {
    role: Role,
    phase: Phase,
    dialog: Option<Dialog>,
    call_id: String,
    local_tag: String,
    /// Our INVITE (initial or re-INVITE) under way.
    invite: Option<RequestId>,
    /// The last INVITE we sent and where (CANCEL copies it, §9.1).
    sent: Option<(Arc<[u8]>, Peer)>,
    /// A provisional response arrived for our INVITE (CANCEL may go).
    provisional: bool,
    /// We want the INVITE cancelled; `true` once the CANCEL is sent.
    cancel: Option<bool>,
    /// The INVITE had no body (a 2xx with one carries a late offer).
    late_offer: bool,
    /// Authorization values of our last INVITE (§13.2.2.4: the ACK carries
    /// the same credentials).
    credentials: Vec<(String, String)>,
    /// The last ACK we sent (CSeq, bytes, where): sent again for each copy
    /// of its 2xx.
    ack: Option<(u32, Arc<[u8]>, Peer)>,
    /// A 2xx waiting for [`Endpoint::acknowledge`] (CSeq).
    ack_wait: Option<u32>,
    /// Incoming INVITE (or re-INVITE) to answer.
    offer: Option<Offer>,
    /// Our 2xx waiting for its ACK.
    unacked: Option<Unacked>,
    /// BYE as soon as the ACK comes (§15: not before).
    bye_after_ack: bool,
    /// Our re-INVITE's offer, kept to try again after a 491.
    glare_body: Option<OurOffer>,
    /// The top Via branch of the incoming INVITE (CANCEL matching, §9.2).
    branch: Option<String>,
    /// The stream connection pinned for the session.
    conn: Option<ConnId>,
    timers: BTreeMap<Timer, Instant>,
    /// Incoming: the reliable provisional responses of the INVITE, when
    /// they go reliably (RFC 3262 §3).
    reliable: Option<Reliable>,
    /// Outgoing: the last RSeq PRACKed, per early dialog (To tag), RFC
    /// 3262 §4.
    rseq_in: BTreeMap<String, u32>,
    /// Outgoing: a reliable provisional response carried the answer.
    early_answer: bool,
    /// An UPDATE of the peer with an offer, to answer (RFC 3311 §5.2).
    update_offer: Option<Offer>,
    /// Our UPDATE under way, and whether it carries an offer.
    update_out: Option<(RequestId, bool)>,
    /// Our UPDATE's offer, kept to try again after a 491 (RFC 3311 §5.1).
    glare_update: Option<OurOffer>,
    /// The session timer in force (RFC 4028).
    timer: Option<Agreed>,
    /// The Min-SE a 422 asked of us (RFC 4028 §7.4).
    min_se: u32,
    /// Our re-INVITE or UPDATE under way is a session refresh.
    refreshing: bool,
    /// The peer allows UPDATE (its Allow).
    peer_update: bool,
    /// The last session description we sent (offer or answer): a refresh
    /// re-INVITE carries it again (RFC 4028 §10).
    local_body: Option<Body>,
    /// When our INVITE, re-INVITE or UPDATE under way was sent: the session
    /// timer its 2xx sets runs from then (the peer's started in between).
    sent_at: Option<Instant>,
}

impl Session {
    fn new(role: Role, phase: Phase, call_id: String, local_tag: String) -> Session {
        Session {
            role,
            phase,
            dialog: None,
            call_id,
            local_tag,
            invite: None,
            sent: None,
            provisional: false,
            cancel: None,
            late_offer: false,
            credentials: Vec::new(),
            ack: None,
            ack_wait: None,
            offer: None,
            unacked: None,
            bye_after_ack: false,
            glare_body: None,
            branch: None,
            conn: None,
            timers: BTreeMap::new(),
            reliable: None,
            rseq_in: BTreeMap::new(),
            early_answer: false,
            update_offer: None,
            update_out: None,
            glare_update: None,
            timer: None,
            min_se: 0,
            refreshing: false,
            peer_update: false,
            local_body: None,
            sent_at: None,
        }
    }

    /// An offer-answer exchange is under way, either way (RFC 3311 §5.2,
    /// RFC 3261 §14).
    fn offer_pending(&self) -> bool {
        ((self.invite.is_some() || self.offer.is_some()) && self.phase == Phase::Confirmed)
            || self.update_out.is_some()
            || self.update_offer.is_some()
            || self.glare_body.is_some()
            || self.glare_update.is_some()
    }
}

/// Every session of an endpoint, and the indexes to find them.
#[derive(Default)]
pub(super) struct Sessions {
    next: u64,
    all: BTreeMap<SessionId, Session>,
    /// Our tag → session. Our tags are unique among live sessions (a new
    /// one is drawn until it is free, `fresh_tag`), so the tag alone finds
    /// the session; the Call-ID is then checked (§12: the dialog ID is
    /// Call-ID and both tags). Keyed by one string so that a lookup needs
    /// no allocation.
    by_dialog: BTreeMap<String, SessionId>,
    /// (Call-ID, INVITE branch) → incoming session (CANCEL, §9.2).
    by_branch: BTreeMap<(String, String), SessionId>,
    /// INVITE client transactions that got a 2xx, kept until they end so
    /// that later 2xx copies and forks are ACKed (RFC 6026 §7.2).
    pub(super) invite_clients: BTreeMap<ClientId, SessionId>,
    /// Deadlines: (when, session, which).
    timers: std::collections::BTreeSet<(Instant, SessionId, Timer)>,
}

impl Sessions {
    /// (sessions, index entries, timers armed), for `Endpoint::tables`.
    pub(super) fn sizes(&self) -> (usize, usize, usize) {
        (self.all.len(), self.by_dialog.len() + self.by_branch.len() + self.invite_clients.len(), self.timers.len())
    }

    /// Drops the storage of emptied tables (after a burst; see `shed`).
    pub(super) fn shed(&mut self) {
        crate::shed::shed(&mut self.all);
        crate::shed::shed(&mut self.by_dialog);
        crate::shed::shed(&mut self.by_branch);
        crate::shed::shed(&mut self.invite_clients);
        crate::shed::shed(&mut self.timers);
    }

    /// Whether the application asked for the INVITE of `s` to be
    /// cancelled (then it is not tried elsewhere, RFC 3263 §4.3).
    pub(super) fn cancelling(&self, s: SessionId) -> bool {
        self.all.get(&s).is_some_and(|x| x.cancel.is_some())
    }

    /// Live sessions.
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    /// The next deadline.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    fn set_timer(&mut self, s: SessionId, timer: Timer, at: Instant) {
        if let Some(session) = self.all.get_mut(&s) {
            if let Some(old) = session.timers.insert(timer, at) {
                self.timers.remove(&(old, s, timer));
            }
            self.timers.insert((at, s, timer));
        }
    }

    fn clear_timer(&mut self, s: SessionId, timer: Timer) {
        if let Some(old) = self.all.get_mut(&s).and_then(|x| x.timers.remove(&timer)) {
            self.timers.remove(&(old, s, timer));
        }
    }

    /// The session a request with this Call-ID and our tag belongs to.
    pub(super) fn find(&self, call_id: &str, local_tag: &str) -> Option<SessionId> {
        let s = *self.by_dialog.get(local_tag)?;
        (self.all.get(&s)?.call_id == call_id).then_some(s)
    }

    /// The dialog of `s`, if it has one (subscriptions sharing it, REFER).
    pub(super) fn dialog_mut(&mut self, s: SessionId) -> Option<&mut Dialog> {
        self.all.get_mut(&s)?.dialog.as_mut()
    }

    /// Which sessions are alive (for shutdown).
    fn ids(&self) -> Vec<SessionId> {
        self.all.keys().copied().collect()
    }
}

/// Adds the option tags of the extensions `config` turns on (`100rel`,
/// `timer`) to its supported ones, so that Supported and the Require
/// checks (§8.2.2.3) say so.
pub(super) fn add_option_tags(config: &mut super::EndpointConfig) {
    let mut tags = Vec::new();
    if config.prack.enabled() {
        tags.push(reliable::TAG);
    }
    if config.session_timers.is_some() {
        tags.push(timer::TAG);
    }
    for tag in tags {
        if !config.extensions.iter().any(|e| e.eq_ignore_ascii_case(tag)) {
            config.extensions.push(tag.to_owned());
        }
    }
}

/// The status code `code` (a constant known to be valid).
fn status(code: u16) -> StatusCode {
    uas::status(code)
}

/// §9.1: a CANCEL for `invite`: its Request-URI, Call-ID, From, To, CSeq
/// number and Route, and a single Via equal to its top Via.
fn cancel_for(invite: &Message<'_>) -> Option<Vec<u8>> {
    let rl = invite.request_line()?;
    let h = invite.headers();
    let top_via = ListIter::new(h.first(HeaderName::Via)?.value()).next()?;
    let seq = invite.cseq()?.ok()?.seq();
    let mut buf = Vec::with_capacity(invite.len().min(1024));
    let mut w = MessageWriter::request(&mut buf, Method::Cancel, rl.uri);
    w.header_bytes("Via", top_via);
    w.header("Max-Forwards", 70);
    w.header_bytes("From", h.first(HeaderName::From)?.value());
    w.header_bytes("To", h.first(HeaderName::To)?.value());
    w.header_bytes("Call-ID", h.first(HeaderName::CallId)?.value());
    w.header("CSeq", format_args!("{seq} CANCEL"));
    for route in h.all(HeaderName::Route) {
        w.header_bytes("Route", route.value());
    }
    w.finish(b"");
    Some(buf)
}

/// The top Via branch of `m`.
fn branch_of(m: &Message<'_>) -> Option<String> {
    m.via().and_then(Result::ok).and_then(|v| v.branch().map(str::to_owned))
}

/// RFC 4028 §10: a refresh that failed (not fatally) is tried again
/// after this.
const REFRESH_RETRY: Duration = Duration::from_secs(2);

/// §14.1: how long to wait before trying a re-INVITE again after a 491:
/// 2.1–4 s for the owner of the Call-ID (who sent the first INVITE),
/// 0–2 s for the other side, in units of 10 ms.
fn glare_backoff(owner: bool, draw: u64) -> Duration {
    let tens = draw % 200;
    Duration::from_millis(if owner { 2100 + (tens * 19 / 20) * 10 } else { tens * 10 })
}

impl Endpoint {
    /// Starts a session: sends an INVITE to `request.uri` with
    /// `request.body` as the offer (or none: a late offer). Returns the
    /// session's handle at once; [`Event::Session`] events follow.
    ///
    /// ```
    /// use sipline::endpoint::{Endpoint, EndpointConfig, Request};
    /// use std::time::Instant;
    ///
    /// // `now` comes from the runtime's clock; the core reads none.
    /// # fn demo(now: Instant) {
    /// let mut ep = Endpoint::new(EndpointConfig::new("sip:alice@example.com")).unwrap();
    /// ep.start(now);
    /// let offer = b"v=0\r\n".to_vec();
    /// let call = ep.invite(now, Request::invite("sip:bob@192.0.2.7", "application/sdp", offer)).unwrap();
    /// // The runtime now drains ep.poll_output(): a name to resolve, then the INVITE.
    /// # let _ = call;
    /// # }
    /// ```
    pub fn invite(&mut self, now: Instant, request: Request) -> Result<SessionId, SendError> {
        let now = self.clamp(now);
        if self.shutting_down {
            return Err(SendError::ShuttingDown);
        }
        crate::message::Uri::parse(&request.uri).map_err(|_| SendError::InvalidUri)?;
        let mut request = request;
        request.method = Method::Invite;
        request.headers.extend(self.session_headers(None, true));
        let (hop, routes) = self.first_hop(&request.uri);
        let (call_id, tag) = (self.rng.hex(20), self.fresh_tag());
        let late_offer = request.body.is_empty();
        let offer =
            (!late_offer).then(|| Body::new(request.content_type.as_deref().unwrap_or_default(), request.body.clone()));
        let ids = (call_id.clone(), tag.clone(), 1);
        let id = self.enqueue(&hop, request, Origin::Invite, ids, None, routes)?;
        let s = self.new_session(Role::Uac, Phase::Calling, call_id, tag);
        if let Some(p) = self.pending.get_mut(&id) {
            p.contact = true;
            p.session = Some(s);
        }
        if let Some(session) = self.sessions.all.get_mut(&s) {
            session.invite = Some(id);
            session.late_offer = late_offer;
            session.local_body = offer;
            session.sent_at = Some(now);
        }
        self.queued.push_back(id);
        self.start_queued();
        self.pump(now);
        Ok(s)
    }

    /// Header fields of our INVITE, re-INVITE or UPDATE for the extensions
    /// in use (none when neither is configured): Supported and Allow;
    /// `Require: 100rel` on an initial INVITE in [`PrackMode::Required`]
    /// (RFC 3262 §4); Session-Expires and Min-SE (RFC 4028 §7.1, §7.4),
    /// naming the refresher once one is agreed (we are the UAC of this
    /// request: `uac` when we refresh).
    fn session_headers(&self, x: Option<&Session>, initial: bool) -> Vec<(String, String)> {
        let mut h = Vec::new();
        let timers = self.config.session_timers;
        if !self.config.prack.enabled() && timers.is_none() {
            return h;
        }
        h.push(("Supported".to_owned(), self.config.extensions.join(", ")));
        h.push(("Allow".to_owned(), self.allow_value()));
        if initial && self.config.prack == PrackMode::Required {
            h.push(("Require".to_owned(), reliable::TAG.to_owned()));
        }
        if let Some(t) = timers {
            let min = t.floor().max(x.map_or(0, |x| x.min_se));
            let agreed = x.and_then(|x| x.timer);
            let interval = agreed.map_or(t.expires, |a| a.interval).max(min);
            let se = match agreed {
                Some(a) if a.we_refresh => format!("{interval};refresher=uac"),
                Some(_) => format!("{interval};refresher=uas"),
                None => interval.to_string(),
            };
            h.push(("Session-Expires".to_owned(), se));
            h.push(("Min-SE".to_owned(), min.to_string()));
        }
        h
    }

    /// Arms the session timer `agreed` on `s` (RFC 4028 §10), counted from
    /// `since` (now, or when our request that set it was sent: a refresh
    /// delayed by loss must not make the next one late for the peer,
    /// whose timer started when the request reached it): the refresh at
    /// half the interval when we refresh, the expiry either way; `None`
    /// disarms it. Reports it.
    fn arm_session_timer(&mut self, now: Instant, since: Instant, s: SessionId, agreed: Option<Agreed>) {
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        x.timer = agreed;
        x.refreshing = false;
        self.sessions.clear_timer(s, Timer::Refresh);
        self.sessions.clear_timer(s, Timer::Expiry);
        let Some(a) = agreed else { return };
        let since = since.min(now);
        if a.we_refresh {
            self.sessions.set_timer(s, Timer::Refresh, (since + a.refresh_in()).max(now));
        }
        self.sessions.set_timer(s, Timer::Expiry, (since + a.expires_in()).max(now));
        let interval = Duration::from_secs(u64::from(a.interval));
        self.emit(s, SessionEvent::Refreshed { interval, we_refresh: a.we_refresh });
    }

    /// Live sessions (ringing, answered or established).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether a live session has our tag `tag`.
    pub(super) fn session_uses_tag(&self, tag: &str) -> bool {
        self.sessions.by_dialog.contains_key(tag)
    }

    /// A local tag (§19.3: random, 40 bits here) no live session uses.
    fn fresh_tag(&mut self) -> String {
        let mut tag = self.rng.hex(10);
        // A clash is a one-in-a-trillion event per pair; a few draws end it.
        for _ in 0..8 {
            if !self.sessions.by_dialog.contains_key(&tag) {
                break;
            }
            tag = self.rng.hex(10);
        }
        tag
    }

    fn new_session(&mut self, role: Role, phase: Phase, call_id: String, tag: String) -> SessionId {
        self.sessions.next += 1;
        let s = SessionId(self.sessions.next);
        self.sessions.by_dialog.insert(tag.clone(), s);
        self.sessions.all.insert(s, Session::new(role, phase, call_id, tag));
        s
    }

    fn emit(&mut self, session: SessionId, event: SessionEvent) {
        self.out.push_back(Output::Event(Event::Session { session, event }));
    }

    /// Ends `s`: forgets it and its indexes, releases its connection, and
    /// reports `why`.
    fn end_session(&mut self, now: Instant, s: SessionId, why: SessionEnd) {
        // An INVITE or re-INVITE of the peer still waiting for an answer
        // gets one (§15.1.2: 487 to requests pending when the dialog
        // ends): its server transaction has no timer of its own in
        // Proceeding and would wait forever. The usual ends answer first
        // (reject, CANCEL, the answer timer); this catches the others, such
        // as a 481 to our own request in the dialog (§12.2.1.2; found by
        // fuzzing the user agent).
        if self.sessions.all.get(&s).is_some_and(|x| x.offer.is_some()) {
            self.answer_offer(now, s, 487, "Request Terminated", &[], None);
        }
        if self.sessions.all.get(&s).is_some_and(|x| x.update_offer.is_some()) {
            self.answer_update(now, s, 487, "Request Terminated", None);
        }
        let Some(session) = self.sessions.all.remove(&s) else { return };
        if let Some(d) = &session.dialog {
            // Subscriptions in the dialog (REFER) outlive the session.
            self.subscriptions.detach(s, d);
        }
        if self.sessions.by_dialog.get(&session.local_tag) == Some(&s) {
            self.sessions.by_dialog.remove(&session.local_tag);
        }
        if let Some(b) = session.branch {
            self.sessions.by_branch.remove(&(session.call_id.clone(), b));
        }
        for (timer, at) in session.timers {
            self.sessions.timers.remove(&(at, s, timer));
        }
        if let Some(conn) = session.conn {
            self.transport.unpin(now, conn);
        }
        // Our requests of the session still under way end quietly; their
        // transactions finish on their own — a (re-)INVITE in Proceeding
        // within 64·T1 (§9.1), not waiting for a final response forever.
        let own: Vec<(RequestId, Option<ClientId>)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.session == Some(s) && p.origin != Origin::App)
            .map(|(id, p)| (*id, p.client()))
            .collect();
        for (id, client) in own {
            if let Some(c) = client {
                self.transactions.give_up(now, c);
            }
            self.abandon(id);
        }
        self.emit(s, SessionEvent::Ended(why));
        // The last session kept for its ACK may let shutdown finish.
        self.shutdown_progress(now);
    }

    /// Pins `conn` for `s` (once).
    fn pin_for(&mut self, now: Instant, s: SessionId, conn: Option<ConnId>) {
        let Some(conn) = conn else { return };
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        super::repin(&mut self.transport, now, &mut session.conn, conn);
    }

    /// Our Contact for a session over `transport` (§8.1.1.8, §12.1.1): the
    /// registered Contact when registered, else the user of the AOR at a
    /// listening address.
    pub(super) fn contact_for(&self, transport: Transport) -> String {
        if self.config.server.is_some() {
            // The registrar and proxy: its own address, no user (a user
            // part would name one of the domain's users).
            let at = self.sent_by(transport);
            return match transport {
                Transport::Udp => format!("sip:{at}"),
                t => format!("sip:{at};transport={}", t.as_str().to_ascii_lowercase()),
            };
        }
        if let Some(super::RegistrationState::Registered { contact, .. }) = self.registration() {
            return contact.clone();
        }
        let user = crate::message::Uri::parse(&self.config.aor)
            .ok()
            .and_then(|u| u.as_sip().and_then(|s| s.user().map(str::to_owned)))
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let at = self.sent_by(transport);
        match transport {
            Transport::Udp => format!("sip:{user}{at}"),
            t => format!("sip:{user}{at};transport={}", t.as_str().to_ascii_lowercase()),
        }
    }

    // ----- outgoing -----

    /// The INVITE of `s` was sent as `bytes` to `peer` (kept for CANCEL).
    pub(super) fn session_sent(&mut self, s: SessionId, bytes: &[u8], peer: &Peer) {
        if let Some(session) = self.sessions.all.get_mut(&s) {
            session.sent = Some((Arc::from(bytes), peer.clone()));
        }
    }

    /// A provisional response to the INVITE of `s` (§13.2.2.1).
    pub(super) fn session_progress(&mut self, now: Instant, s: SessionId, response: Response, conn: Option<ConnId>) {
        self.pin_for(now, s, conn);
        let Ok(m) = Message::parse(&response.bytes) else { return };
        // RFC 3262 §4: a reliable provisional response (Require: 100rel
        // and an RSeq), when we support the extension.
        let reliable = response.code > 100 && self.config.prack.enabled() && reliable::requires(&m, reliable::TAG);
        let rseq = if reliable { reliable::rseq(&m) } else { None };
        let tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        session.provisional = true;
        if let (Some(rseq), Some(tag)) = (rseq, &tag) {
            match session.rseq_in.get(tag) {
                // §4: a retransmission (or an older one): absorbed, its
                // PRACK is under way.
                Some(&last) if rseq <= last => return,
                // §4: not one more than the last: neither PRACKed nor
                // processed further.
                Some(&last) if Some(rseq) != last.checked_add(1) => return,
                _ => {}
            }
            session.rseq_in.insert(tag.clone(), rseq);
        }
        // §12.1.2: a 1xx with a To tag (and a Contact) makes an early dialog.
        if session.dialog.is_none() && response.code > 100 {
            if let Some((sent, _)) = &session.sent {
                if let Ok(request) = Message::parse(sent) {
                    session.dialog = Dialog::from_uac(&request, &m).ok();
                }
            }
        }
        if let (Some(rseq), Some(tag)) = (rseq, tag) {
            if !m.body().is_empty() {
                // The answer (early media) came in it: the early
                // offer-answer is done (RFC 3311 §5.1 allows UPDATE).
                session.early_answer = true;
            }
            let cseq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq());
            self.send_prack(now, s, &m, &tag, rseq, cseq);
        }
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        let cancel_now = session.cancel == Some(false);
        self.emit(s, SessionEvent::Progress(response));
        if cancel_now {
            self.send_cancel(now, s);
        }
    }

    /// RFC 3262 §7.2: PRACKs the reliable provisional response `m` (RSeq
    /// `rseq`, to the INVITE with CSeq number `cseq`) in its early dialog
    /// (the one of `s`, or another fork's).
    fn send_prack(&mut self, now: Instant, s: SessionId, m: &Message<'_>, tag: &str, rseq: u32, cseq: u32) {
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        let mut request = Request::new(Method::Prack, "");
        request.headers.push(("RAck".to_owned(), format!("{rseq} {cseq} INVITE")));
        let ours = session.dialog.as_mut().filter(|d| d.id().remote_tag == tag);
        if let Some(dialog) = ours {
            let head = dialog.next_request();
            request.uri.clone_from(&head.uri);
            self.send_in_dialog(now, s, request, head, Origin::Prack);
            return;
        }
        // Another fork's early dialog: the PRACK goes in it, kept by no
        // session.
        let Some(sent) = session.sent.as_ref().and_then(|(b, _)| Message::parse(b).ok()) else { return };
        let Ok(mut fork) = Dialog::from_uac(&sent, m) else { return };
        let head = fork.next_request();
        request.uri.clone_from(&head.uri);
        self.send_detached(now, request, head);
    }

    /// §9.1: sends the CANCEL of the INVITE of `s`.
    fn send_cancel(&mut self, now: Instant, s: SessionId) {
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        let Some((sent, peer)) = session.sent.clone() else { return };
        session.cancel = Some(true);
        let invite = session.invite;
        let Some(cancel) = Message::parse(&sent).ok().and_then(|m| cancel_for(&m)) else { return };
        let reliable = peer.transport.is_reliable();
        let _ = self.transactions.send_request(now, cancel, peer, reliable);
        // §9.1: the INVITE's transaction ends 64·T1 after the CANCEL if no
        // final response comes.
        if let Some(client) = invite.and_then(|r| self.pending.get(&r)).and_then(Pending::client) {
            self.transactions.give_up(now, client);
        }
        let give_up = now + self.config.timers.t1 * 64;
        self.sessions.set_timer(s, Timer::CancelGiveUp, give_up);
    }

    /// The INVITE (or re-INVITE) `p` of `s`, sent last through `client`,
    /// ended with `result`.
    pub(super) fn invite_finished(
        &mut self,
        now: Instant,
        s: SessionId,
        p: Pending,
        client: Option<ClientId>,
        result: Result<Response, RequestError>,
    ) {
        let reinvite = p.origin == Origin::Reinvite;
        let cseq = p.cseq;
        let credentials = p
            .request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization") || n.eq_ignore_ascii_case("Proxy-Authorization"))
            .cloned()
            .collect();
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        session.invite = None;
        session.credentials = credentials;
        // RFC 4028 §7.4: a 422 names the Min-SE the peer takes: again with
        // it (once per larger value).
        if let Err(RequestError::Failure(r)) = &result {
            let min = Message::parse(&r.bytes).ok().and_then(|m| timer::min_se(&m));
            let asked = self.config.session_timers.map_or(0, SessionTimerConfig::floor).max(session.min_se);
            if let Some(min) = min.filter(|m| r.code == 422 && *m > asked && self.config.session_timers.is_some()) {
                session.min_se = min;
                if reinvite {
                    let body = session.glare_body.take().and_then(|OurOffer(b)| b);
                    self.start_reinvite(now, s, body);
                } else {
                    self.resend_invite(now, s, p);
                }
                return;
            }
        }
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        match result {
            Ok(response) => {
                if let Some(c) = client {
                    self.sessions.invite_clients.insert(c, s);
                }
                self.invite_accepted(now, s, reinvite, cseq, response);
            }
            Err(e) if reinvite => {
                // §14.1: glare: try again after a random back-off.
                if matches!(&e, RequestError::Failure(r) if r.code == 491) {
                    let owner = session.role == Role::Uac;
                    let wait = glare_backoff(owner, self.rng.next_u64());
                    self.sessions.set_timer(s, Timer::Glare, now + wait);
                    return;
                }
                session.glare_body = None;
                let refreshing = std::mem::take(&mut session.refreshing);
                self.offer_failed(now, s, e, refreshing);
            }
            Err(e) => {
                let cancelled = session.cancel.is_some() && matches!(&e, RequestError::Failure(r) if r.code == 487)
                    || (session.cancel == Some(false) && e == RequestError::Timeout);
                let why = if cancelled { SessionEnd::Cancelled } else { SessionEnd::Failed(e) };
                self.end_session(now, s, why);
            }
        }
    }

    /// RFC 4028 §7.4: the initial INVITE `p` of `s` again after a 422,
    /// with the larger Session-Expires and Min-SE (same Call-ID and tag,
    /// the next CSeq).
    fn resend_invite(&mut self, now: Instant, s: SessionId, p: Pending) {
        let headers = self.session_headers(self.sessions.all.get(&s), true);
        let mut request = p.request;
        request.headers.retain(|(n, _)| {
            !["Supported", "Allow", "Require", "Session-Expires", "Min-SE"].iter().any(|h| n.eq_ignore_ascii_case(h))
        });
        request.headers.extend(headers);
        let (hop, routes) = self.first_hop(&request.uri);
        let ids = (p.call_id, p.tag, p.cseq.wrapping_add(1));
        let Ok(id) = self.enqueue(&hop, request, Origin::Invite, ids, None, routes) else {
            return self.end_session(now, s, SessionEnd::Failed(RequestError::Timeout));
        };
        if let Some(p) = self.pending.get_mut(&id) {
            p.contact = true;
            p.session = Some(s);
        }
        if let Some(x) = self.sessions.all.get_mut(&s) {
            x.invite = Some(id);
            x.provisional = false;
        }
        self.start_now(id);
    }

    /// Our session refresh failed with `e` (RFC 4028 §10): a timeout, 408
    /// or 481 ends the session (BYE but after 481); anything else tries
    /// again shortly, until the expiry.
    fn refresh_failed(&mut self, now: Instant, s: SessionId, e: RequestError, lost: bool) {
        if lost {
            if !matches!(&e, RequestError::Failure(r) if r.code == 481) {
                self.bye_detached(now, s);
            }
            self.end_session(now, s, SessionEnd::Failed(e));
        } else {
            self.sessions.set_timer(s, Timer::Refresh, now + REFRESH_RETRY);
        }
    }

    /// What the 2xx `m` to our INVITE, re-INVITE or UPDATE on `s` tells of
    /// the peer and the session timer (RFC 4028 §7.2): arms it, or none.
    fn learn_from_2xx(&mut self, now: Instant, s: SessionId, m: &Message<'_>) {
        let allows = m.allow().filter_map(Result::ok).any(|x| x == Method::Update);
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        if m.headers().first(HeaderName::Allow).is_some() {
            x.peer_update = allows;
        }
        if self.config.session_timers.is_some() {
            // §7.2: no Session-Expires in the 2xx: no session timer. But a
            // peer that does not support the extension cannot say so: when
            // we refresh already (§9: a UAS refreshing for such a UAC), the
            // timer stays as it was.
            let keep = x.timer.filter(|a| a.we_refresh && !reliable::supports(m, timer::TAG));
            let agreed = timer::from_response(m).or(keep);
            let since = x.sent_at.take().unwrap_or(now);
            self.arm_session_timer(now, since, s, agreed);
        }
    }

    /// Our re-INVITE or UPDATE on `s` failed with `e` (other than a 491
    /// tried again): a session-timer refresh's failure goes to the timer;
    /// otherwise it is reported, and a 481, 408 or timeout ends the dialog
    /// (§12.2.1.2).
    fn offer_failed(&mut self, now: Instant, s: SessionId, e: RequestError, refreshing: bool) {
        let lost = matches!(&e, RequestError::Failure(r) if matches!(r.code, 481 | 408)) || e == RequestError::Timeout;
        if refreshing {
            return self.refresh_failed(now, s, e, lost);
        }
        self.emit(s, SessionEvent::Updated(Err(e.clone())));
        if lost {
            self.end_session(now, s, SessionEnd::Failed(e));
        }
    }

    /// A 2xx to our INVITE or re-INVITE: the dialog is confirmed (or its
    /// target refreshed) and the ACK goes (§13.2.2.4).
    fn invite_accepted(&mut self, now: Instant, s: SessionId, reinvite: bool, cseq: u32, response: Response) {
        let Ok(m) = Message::parse(&response.bytes) else { return };
        // The stream the answer came on is the session's while it lives.
        self.pin_for(now, s, self.responding.and_then(|src| src.conn));
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        if reinvite {
            if let Some(OurOffer(Some(b))) = session.glare_body.take() {
                session.local_body = Some(b);
            }
            if let Some(d) = session.dialog.as_mut() {
                d.refresh_target(&m);
            }
            let refreshing = session.refreshing;
            self.send_ack(now, s, cseq, None);
            self.learn_from_2xx(now, s, &m);
            if !refreshing {
                self.emit(s, SessionEvent::Updated(Ok(response)));
            }
            return;
        }
        let tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let same = session.dialog.as_ref().is_some_and(|d| Some(&d.id().remote_tag) == tag.as_ref());
        if same {
            if let Some(d) = session.dialog.as_mut() {
                d.confirm_with(&m);
            }
        } else {
            let request = session.sent.as_ref().and_then(|(b, _)| Message::parse(b).ok());
            match request.map(|r| Dialog::from_uac(&r, &m)) {
                Some(Ok(d)) => session.dialog = Some(d),
                // A 2xx that cannot form a dialog: nothing to ACK it with.
                _ => return self.end_session(now, s, SessionEnd::Failed(RequestError::Failure(response))),
            }
        }
        session.phase = Phase::Confirmed;
        self.sessions.clear_timer(s, Timer::CancelGiveUp);
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        let cancelled = session.cancel.is_some();
        let wait = session.late_offer && !m.body().is_empty() && !cancelled;
        // The answer first, then what it says of the session timer.
        self.emit(s, SessionEvent::Answered(response.clone()));
        if !cancelled {
            self.learn_from_2xx(now, s, &m);
        }
        if wait {
            if let Some(session) = self.sessions.all.get_mut(&s) {
                session.ack_wait = Some(cseq);
            }
            let at = now + self.config.answer_within;
            self.sessions.set_timer(s, Timer::AckWait, at);
            return;
        }
        self.send_ack(now, s, cseq, None);
        if cancelled {
            // §9.1: the 2xx won the race with our CANCEL: end it with BYE.
            self.send_bye(now, s);
        }
    }

    /// Sends the ACK for the 2xx to our INVITE with CSeq `cseq`.
    fn send_ack(&mut self, now: Instant, s: SessionId, cseq: u32, body: Option<Body>) {
        let Some(session) = self.sessions.all.get(&s) else { return };
        let Some(dialog) = session.dialog.as_ref() else { return };
        let head = dialog.head(cseq);
        let mut request = Request::new(Method::Ack, &head.uri);
        request.headers.clone_from(&session.credentials);
        if let Some(b) = body {
            request.content_type = Some(b.content_type);
            request.body = b.bytes;
        }
        self.send_in_dialog(now, s, request, head, Origin::Ack);
    }

    /// Sends `request` inside the dialog of `s` with `head`.
    fn send_in_dialog(
        &mut self,
        now: Instant,
        s: SessionId,
        request: Request,
        head: crate::dialog::RequestHead,
        origin: Origin,
    ) -> Option<RequestId> {
        // §8.1.2 / DESIGN.md: with no route set, a registered endpoint or
        // one with an outbound proxy still goes through it.
        let (hop, routes) = if head.routes.is_empty() {
            match self.next_hop() {
                Some(proxy) => (proxy.clone(), vec![loose_route(&proxy)]),
                None => (head.uri.clone(), Vec::new()),
            }
        } else {
            (head.next_hop(), head.routes.clone())
        };
        // A target refresh carries our Contact (§12.2.1.1; UPDATE: RFC
        // 3311 §5.1).
        let contact = matches!(request.method, Method::Invite | Method::Update);
        let ids = (head.call_id.clone(), String::new(), head.cseq);
        let id = self.enqueue(&hop, request, origin, ids, None, routes).ok()?;
        if let Some(p) = self.pending.get_mut(&id) {
            p.dialog_head = Some((head.from, head.to));
            p.contact = contact;
            p.session = Some(s);
        }
        // In-dialog requests of the stack (ACK, BYE, re-INVITE) are never
        // throttled: the dialog depends on them.
        if origin == Origin::App {
            self.queued.push_back(id);
            self.start_queued();
        } else {
            self.start_now(id);
        }
        self.pump(now);
        Some(id)
    }

    /// An ACK request was built for `s`: sent straight to the transport
    /// (the ACK of a 2xx has no transaction, §17.1.1.3) and kept for 2xx
    /// copies.
    pub(super) fn ack_dispatched(&mut self, now: Instant, s: SessionId, cseq: u32, bytes: Vec<u8>, peer: Peer) {
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let _ = self.transport.send(now, &peer, bytes.clone());
        if let Some(session) = self.sessions.all.get_mut(&s) {
            session.ack = Some((cseq, bytes, peer));
        }
    }

    /// A 2xx for an INVITE client transaction that already had its 2xx
    /// (a copy, or another fork's), or one that came after the
    /// transaction ended.
    pub(super) fn session_2xx_again(&mut self, now: Instant, s: SessionId, bytes: &Arc<[u8]>) {
        let Ok(m) = Message::parse(bytes) else { return };
        if m.status().is_none_or(|c| !(200..300).contains(&c.as_u16())) {
            return;
        }
        let Some(session) = self.sessions.all.get(&s) else { return };
        let tag = m.to().and_then(Result::ok).and_then(|t| t.tag());
        let cseq = m.cseq().and_then(Result::ok).map(|c| c.seq());
        let ours = session.dialog.as_ref().is_some_and(|d| Some(d.id().remote_tag.as_str()) == tag);
        if ours {
            // §13.2.2.4: each copy of the 2xx gets the ACK again.
            if let Some((ack_seq, ack, peer)) = &session.ack {
                if Some(*ack_seq) == cseq {
                    let (ack, peer) = (ack.clone(), peer.clone());
                    let _ = self.transport.send(now, &peer, ack);
                }
            }
            return;
        }
        // §13.2.2.4: a 2xx from another fork: ACK it, then BYE it.
        let Some(request) = session.sent.as_ref().and_then(|(b, _)| Message::parse(b).ok()) else { return };
        let Ok(mut fork) = Dialog::from_uac(&request, &m) else { return };
        let credentials = session.credentials.clone();
        let seq = cseq.unwrap_or(1);
        let mut ack = Request::new(Method::Ack, "");
        ack.headers = credentials;
        let head = fork.head(seq);
        ack.uri.clone_from(&head.uri);
        self.send_detached(now, ack, head);
        let head = fork.next_request();
        let bye = Request::new(Method::Bye, &head.uri);
        self.send_detached(now, bye, head);
    }

    /// A request in a dialog no session keeps (a fork we end).
    fn send_detached(&mut self, now: Instant, request: Request, head: crate::dialog::RequestHead) {
        let (hop, routes) =
            if head.routes.is_empty() { self.first_hop(&head.uri) } else { (head.next_hop(), head.routes.clone()) };
        let ids = (head.call_id.clone(), String::new(), head.cseq);
        let Ok(id) = self.enqueue(&hop, request, Origin::Detached, ids, None, routes) else { return };
        if let Some(p) = self.pending.get_mut(&id) {
            p.dialog_head = Some((head.from, head.to));
        }
        self.start_now(id);
        self.pump(now);
    }

    /// Sends BYE in the dialog of `s` as a request no session keeps (at
    /// shutdown: the session ends without waiting for the answer).
    fn bye_detached(&mut self, now: Instant, s: SessionId) {
        let head = self.sessions.all.get_mut(&s).and_then(|x| x.dialog.as_mut()).map(Dialog::next_request);
        if let Some(head) = head {
            self.send_detached(now, Request::new(Method::Bye, &head.uri), head);
        }
    }

    /// Sends the ACK (no body) for the 2xx with CSeq `cseq` of `s` as a
    /// request no session keeps, so that ending `s` does not drop it.
    fn ack_detached(&mut self, now: Instant, s: SessionId, cseq: u32) {
        let Some(x) = self.sessions.all.get(&s) else { return };
        let Some(head) = x.dialog.as_ref().map(|d| d.head(cseq)) else { return };
        let mut ack = Request::new(Method::Ack, &head.uri);
        ack.headers.clone_from(&x.credentials);
        self.send_detached(now, ack, head);
    }

    /// A response that matched no transaction: a 2xx copy for one of our
    /// sessions after its INVITE transaction ended.
    pub(super) fn stray_response(&mut self, now: Instant, bytes: &Arc<[u8]>) {
        let Ok(m) = Message::parse(bytes) else { return };
        let invite = m.cseq().and_then(Result::ok).is_some_and(|c| c.method() == Method::Invite);
        if !invite {
            return;
        }
        let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned());
        let tag = m.from().and_then(Result::ok).and_then(|f| f.tag().map(str::to_owned));
        if let (Some(call_id), Some(tag)) = (call_id, tag) {
            if let Some(s) = self.sessions.find(&call_id, &tag) {
                self.session_2xx_again(now, s, bytes);
            }
        }
    }

    /// Sends BYE on `s` (§15.1.1); the session ends when it is answered.
    fn send_bye(&mut self, now: Instant, s: SessionId) {
        let Some(session) = self.sessions.all.get_mut(&s) else { return };
        let Some(dialog) = session.dialog.as_mut() else { return };
        session.phase = Phase::Ending;
        let head = dialog.next_request();
        let request = Request::new(Method::Bye, &head.uri);
        if self.send_in_dialog(now, s, request, head, Origin::Bye).is_none() {
            self.end_session(now, s, SessionEnd::HungUp);
        }
    }

    /// Our BYE on `s` was answered (or failed): the session is over either
    /// way (§15.1.1).
    pub(super) fn bye_finished(&mut self, now: Instant, s: SessionId) {
        self.end_session(now, s, SessionEnd::HungUp);
    }

    /// A request of the application inside `s` got `result`: a 481 or 408
    /// ends the dialog (§12.2.1.2).
    pub(super) fn in_session_outcome(&mut self, now: Instant, s: SessionId, result: &Result<Response, RequestError>) {
        let lost = match result {
            Err(RequestError::Failure(r)) => matches!(r.code, 481 | 408),
            Err(RequestError::Timeout) => true,
            _ => false,
        };
        if lost {
            if let Err(e) = result {
                self.end_session(now, s, SessionEnd::Failed(e.clone()));
            }
        }
    }

    // ----- commands -----

    /// Ends a session: CANCEL before the answer (sent as soon as a
    /// provisional response allows, §9.1), BYE after it; an incoming
    /// session not answered yet is declined (603).
    pub fn hangup(&mut self, now: Instant, session: SessionId) -> Result<(), SessionError> {
        let now = self.clamp(now);
        let s = session;
        let (role, phase, provisional) = {
            let x = self.sessions.all.get_mut(&s).ok_or(SessionError::Unknown)?;
            (x.role, x.phase, x.provisional)
        };
        match (role, phase) {
            (_, Phase::Ending) => return Err(SessionError::State),
            (Role::Uac, Phase::Calling) => {
                if let Some(x) = self.sessions.all.get_mut(&s) {
                    if x.cancel.is_some() {
                        return Err(SessionError::State);
                    }
                    x.cancel = Some(false);
                }
                if provisional {
                    self.send_cancel(now, s);
                }
            }
            (Role::Uas, Phase::Offered) => {
                self.answer_offer(now, s, 603, "Decline", &[], None);
                self.end_session(now, s, SessionEnd::HungUp);
            }
            (Role::Uas, Phase::Accepted) => {
                // §15: no BYE before the ACK (or its timeout).
                if let Some(x) = self.sessions.all.get_mut(&s) {
                    x.bye_after_ack = true;
                }
            }
            _ => self.send_bye(now, s),
        }
        self.pump(now);
        Ok(())
    }

    /// Sends a provisional response (101–199, with a body for early media)
    /// to an incoming session; the answer may then take as long as the
    /// caller waits.
    pub fn ring(
        &mut self,
        now: Instant,
        session: SessionId,
        code: u16,
        body: Option<&Body>,
    ) -> Result<(), SessionError> {
        let now = self.clamp(now);
        if !(101..200).contains(&code) {
            return Err(SessionError::Status);
        }
        let x = self.sessions.all.get_mut(&session).ok_or(SessionError::Unknown)?;
        if x.phase != Phase::Offered || x.reliable.as_ref().is_some_and(|r| r.deferred.is_some()) {
            return Err(SessionError::State);
        }
        let state = x.reliable.as_ref().map(Reliable::unacked);
        if state == Some(true) {
            if let Some(r) = x.reliable.as_mut() {
                r.queue.push_back((code, body.cloned()));
            }
        }
        self.sessions.clear_timer(session, Timer::Unanswered);
        match state {
            // RFC 3262 §3: one unacknowledged at a time; this one waits.
            Some(true) => {}
            Some(false) => self.send_reliable(now, session, code, body),
            None => {
                let reason = status(code).canonical_reason();
                self.respond_offer(now, session, code, reason, &[], body);
            }
        }
        self.pump(now);
        Ok(())
    }

    /// RFC 3262 §3: sends a reliable provisional response (Require:
    /// 100rel, the next RSeq), again at T1, 2·T1… over UDP until its PRACK,
    /// and gives up after 64·T1.
    fn send_reliable(&mut self, now: Instant, s: SessionId, code: u16, body: Option<&Body>) {
        let Some(r) = self.sessions.all.get_mut(&s).and_then(|x| x.reliable.as_mut()) else { return };
        let rseq = r.next;
        r.next = if rseq >= reliable::MAX_RSEQ { 1 } else { rseq + 1 };
        let rseq_value = rseq.to_string();
        let supported = self.config.extensions.join(", ");
        let headers = [("Require", reliable::TAG), ("RSeq", rseq_value.as_str()), ("Supported", supported.as_str())];
        let reason = status(code).canonical_reason();
        let Some(bytes) = self.respond_offer(now, s, code, reason, &headers, body) else { return };
        let t1 = self.config.timers.t1;
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        let Some(peer) = x.offer.as_ref().map(|o| o.peer.clone()) else { return };
        if let Some(b) = body {
            x.local_body = Some(b.clone());
        }
        let over_udp = !peer.transport.is_reliable();
        let Some(r) = x.reliable.as_mut() else { return };
        let body = body.is_some();
        r.last = Some(InFlight { rseq, bytes: Arc::from(bytes), peer, interval: t1, body, acked: false });
        if over_udp {
            self.sessions.set_timer(s, Timer::PrackRetransmit, now + t1);
        }
        self.sessions.set_timer(s, Timer::PrackGiveUp, now + t1 * 64);
    }

    /// Accepts an incoming session (200 with the answer, or with the offer
    /// when the INVITE had none), or the peer's re-INVITE. While a reliable
    /// provisional response with a body waits for its PRACK, the 200 waits
    /// too (RFC 3262 §3).
    pub fn accept(&mut self, now: Instant, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        let now = self.clamp(now);
        let x = self.sessions.all.get_mut(&session).ok_or(SessionError::Unknown)?;
        if x.offer.is_none() {
            return Err(SessionError::State);
        }
        if let Some(r) = x.reliable.as_mut().filter(|r| r.unacked_body() && x.phase == Phase::Offered) {
            if r.deferred.is_some() {
                return Err(SessionError::State);
            }
            r.deferred = Some(Held(body.cloned()));
            self.sessions.clear_timer(session, Timer::Unanswered);
            return Ok(());
        }
        self.sessions.clear_timer(session, Timer::Unanswered);
        self.send_accept(now, session, body)?;
        self.pump(now);
        Ok(())
    }

    /// Sends the 2xx of [`accept`](Self::accept): with the session timer
    /// the INVITE led to (RFC 4028 §9), retransmitted until the ACK.
    fn send_accept(&mut self, now: Instant, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        let x = self.sessions.all.get_mut(&session).ok_or(SessionError::Unknown)?;
        let negotiation = x.offer.as_ref().map_or(Negotiation::None, |o| o.timer);
        let (headers, agreed) = self.timer_response_headers(negotiation);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let Some(bytes) = self.respond_offer(now, session, 200, "OK", &headers, body) else {
            return Err(SessionError::State);
        };
        self.final_sent(session);
        let Some(x) = self.sessions.all.get_mut(&session) else { return Ok(()) };
        let Some(offer) = x.offer.take() else { return Ok(()) };
        if let Some(b) = body {
            x.local_body = Some(b.clone());
        }
        if x.phase == Phase::Offered {
            x.phase = Phase::Accepted;
        }
        if let Some(d) = x.dialog.as_mut() {
            d.confirm();
        }
        let t1 = self.config.timers.t1;
        let reliable = offer.peer.transport.is_reliable();
        x.unacked = Some(Unacked { bytes: Arc::from(bytes), peer: offer.peer, cseq: offer.cseq, interval: t1 });
        // §13.3.1.4: over UDP the 2xx goes again at T1, 2·T1… up to T2;
        // a stream carries it reliably. Either way the ACK is awaited 64·T1.
        if !reliable {
            self.sessions.set_timer(session, Timer::Retransmit, now + t1);
        }
        self.sessions.set_timer(session, Timer::NoAck, now + t1 * 64);
        if self.config.session_timers.is_some() {
            self.arm_session_timer(now, now, session, agreed);
        }
        Ok(())
    }

    /// The final response to the INVITE went: reliable provisional
    /// responses are no longer sent (again), nor waited for (RFC 3262 §3);
    /// a PRACK for the last one is still answered 200.
    fn final_sent(&mut self, s: SessionId) {
        if let Some(r) = self.sessions.all.get_mut(&s).and_then(|x| x.reliable.as_mut()) {
            r.queue.clear();
            r.deferred = None;
            self.sessions.clear_timer(s, Timer::PrackRetransmit);
            self.sessions.clear_timer(s, Timer::PrackGiveUp);
        }
    }

    /// The header fields of a 2xx for the session timer `negotiation`
    /// (RFC 4028 §9: Session-Expires with the refresher, `Require: timer`
    /// when the UAC refreshes), and the timer it sets for us.
    fn timer_response_headers(&self, negotiation: Negotiation) -> (Vec<(&'static str, String)>, Option<Agreed>) {
        let Negotiation::Use { interval, refresher } = negotiation else { return (Vec::new(), None) };
        if self.config.session_timers.is_none() {
            return (Vec::new(), None);
        }
        let mut h = vec![
            ("Session-Expires", format!("{interval};refresher={}", refresher.as_str())),
            ("Supported", self.config.extensions.join(", ")),
        ];
        if refresher == Side::Uac {
            h.push(("Require", timer::TAG.to_owned()));
        }
        (h, Some(Agreed { interval, we_refresh: refresher == Side::Uas }))
    }

    /// Rejects an incoming session or the peer's re-INVITE with a final
    /// `code` of 300–699 and extra header fields (Retry-After, …). A
    /// rejected session ends ([`SessionEnd::Rejected`]); a rejected
    /// re-INVITE leaves the session as it was (§14.2).
    pub fn reject(
        &mut self,
        now: Instant,
        session: SessionId,
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), SessionError> {
        let now = self.clamp(now);
        if !(300..700).contains(&code) {
            return Err(SessionError::Status);
        }
        let x = self.sessions.all.get(&session).ok_or(SessionError::Unknown)?;
        if x.offer.is_none() {
            return Err(SessionError::State);
        }
        let initial = x.phase == Phase::Offered;
        self.answer_offer(now, session, code, reason, headers, None);
        if initial {
            self.end_session(now, session, SessionEnd::Rejected);
        }
        self.pump(now);
        Ok(())
    }

    /// Sends a re-INVITE on an established session with a new offer
    /// (§14.1); [`SessionEvent::Updated`] follows. After a 491 (glare) it
    /// is tried again after the §14.1 back-off.
    pub fn reinvite(&mut self, now: Instant, session: SessionId, body: Option<Body>) -> Result<(), SessionError> {
        let now = self.clamp(now);
        let x = self.sessions.all.get(&session).ok_or(SessionError::Unknown)?;
        // §14.1: not while another INVITE transaction is under way either
        // way (nor an UPDATE's offer, RFC 3311 §5.1).
        if x.phase != Phase::Confirmed || x.invite.is_some() || x.offer.is_some() || x.offer_pending() {
            return Err(SessionError::State);
        }
        self.start_reinvite(now, session, body);
        self.pump(now);
        Ok(())
    }

    fn start_reinvite(&mut self, now: Instant, s: SessionId, body: Option<Body>) {
        let headers = self.session_headers(self.sessions.all.get(&s), false);
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        let Some(dialog) = x.dialog.as_mut() else { return };
        let head = dialog.next_request();
        x.glare_body = Some(OurOffer(body.clone()));
        x.sent_at = Some(now);
        let mut request = Request::new(Method::Invite, &head.uri);
        request.headers = headers;
        if let Some(b) = body {
            request.content_type = Some(b.content_type);
            request.body = b.bytes;
        }
        let id = self.send_in_dialog(now, s, request, head, Origin::Reinvite);
        if let Some(x) = self.sessions.all.get_mut(&s) {
            x.invite = id;
        }
    }

    /// Sends an UPDATE (RFC 3311) in the session's dialog, early or
    /// confirmed, with an offer (or none: a target or session refresh);
    /// [`SessionEvent::Updated`] follows. Refused while an offer-answer
    /// exchange is under way (§5.1), or in an early dialog before the
    /// INVITE's offer was answered reliably. After a 491 it is tried again
    /// after the RFC 3261 §14.1 back-off.
    pub fn update(&mut self, now: Instant, session: SessionId, body: Option<Body>) -> Result<(), SessionError> {
        let now = self.clamp(now);
        if self.shutting_down {
            return Err(SessionError::Send(SendError::ShuttingDown));
        }
        let x = self.sessions.all.get(&session).ok_or(SessionError::Unknown)?;
        let early_ok = match x.phase {
            Phase::Calling => x.dialog.is_some() && (x.early_answer || body.is_none()),
            Phase::Offered => x.reliable.as_ref().is_some_and(|r| r.early_answer) || body.is_none(),
            Phase::Accepted | Phase::Confirmed => true,
            Phase::Ending => false,
        };
        if !early_ok || x.offer_pending() {
            return Err(SessionError::State);
        }
        self.start_update(now, session, body, false);
        self.pump(now);
        Ok(())
    }

    fn start_update(&mut self, now: Instant, s: SessionId, body: Option<Body>, refresh: bool) {
        let headers = self.session_headers(self.sessions.all.get(&s), false);
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        let Some(dialog) = x.dialog.as_mut() else { return };
        let head = dialog.next_request();
        let mut request = Request::new(Method::Update, &head.uri);
        request.headers = headers;
        let offer = body.is_some();
        x.glare_update = Some(OurOffer(body.clone()));
        x.refreshing = refresh;
        x.sent_at = Some(now);
        if let Some(b) = body {
            request.content_type = Some(b.content_type);
            request.body = b.bytes;
        }
        let id = self.send_in_dialog(now, s, request, head, Origin::Update);
        if let Some(x) = self.sessions.all.get_mut(&s) {
            x.update_out = id.map(|id| (id, offer));
            if id.is_none() {
                x.glare_update = None;
            }
        }
    }

    /// Our UPDATE on `s` ended (RFC 3311 §5.1): a 2xx refreshes the target
    /// and the session timer; 491 tries again after the back-off; 481, 408
    /// or a timeout end the session (§12.2.1.2).
    pub(super) fn update_finished(&mut self, now: Instant, s: SessionId, result: Result<Response, RequestError>) {
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        x.update_out = None;
        match result {
            Ok(response) => {
                let Ok(m) = Message::parse(&response.bytes) else { return };
                if let Some(d) = x.dialog.as_mut() {
                    d.refresh_target(&m);
                }
                if let Some(OurOffer(Some(b))) = x.glare_update.take() {
                    x.local_body = Some(b);
                }
                let refreshing = x.refreshing;
                self.learn_from_2xx(now, s, &m);
                if !refreshing {
                    self.emit(s, SessionEvent::Updated(Ok(response)));
                }
            }
            Err(e) => {
                if matches!(&e, RequestError::Failure(r) if r.code == 491) {
                    let owner = x.role == Role::Uac;
                    let wait = glare_backoff(owner, self.rng.next_u64());
                    self.sessions.set_timer(s, Timer::GlareUpdate, now + wait);
                    return;
                }
                // RFC 4028 §7.4: a 422: again with the larger Min-SE.
                if let RequestError::Failure(r) = &e {
                    let min = Message::parse(&r.bytes).ok().and_then(|m| timer::min_se(&m));
                    let asked = self.config.session_timers.map_or(0, SessionTimerConfig::floor).max(x.min_se);
                    if let Some(min) = min.filter(|m| r.code == 422 && *m > asked) {
                        x.min_se = min;
                        let body = x.glare_update.take().and_then(|OurOffer(b)| b);
                        let refresh = x.refreshing;
                        self.start_update(now, s, body, refresh);
                        return;
                    }
                }
                x.glare_update = None;
                let refreshing = std::mem::take(&mut x.refreshing);
                self.offer_failed(now, s, e, refreshing);
            }
        }
    }

    /// Accepts the peer's UPDATE ([`SessionEvent::UpdateOffer`]) with 200
    /// and the answer (RFC 3311 §5.2).
    pub fn accept_update(&mut self, now: Instant, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        let now = self.clamp(now);
        let x = self.sessions.all.get(&session).ok_or(SessionError::Unknown)?;
        if x.update_offer.is_none() {
            return Err(SessionError::State);
        }
        if !self.answer_update(now, session, 200, "OK", body) {
            return Err(SessionError::State);
        }
        self.pump(now);
        Ok(())
    }

    /// Rejects the peer's UPDATE ([`SessionEvent::UpdateOffer`]) with a
    /// final `code` of 300–699; the session stays as it was (RFC 3311
    /// §5.2).
    pub fn reject_update(
        &mut self,
        now: Instant,
        session: SessionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SessionError> {
        let now = self.clamp(now);
        if !(300..700).contains(&code) {
            return Err(SessionError::Status);
        }
        let x = self.sessions.all.get(&session).ok_or(SessionError::Unknown)?;
        if x.update_offer.is_none() {
            return Err(SessionError::State);
        }
        self.answer_update(now, session, code, reason, None);
        self.pump(now);
        Ok(())
    }

    /// Gives the body of the ACK for a late offer (the answer to the
    /// offer in the 2xx) and sends the ACK.
    pub fn acknowledge(&mut self, now: Instant, session: SessionId, body: Option<Body>) -> Result<(), SessionError> {
        let now = self.clamp(now);
        let x = self.sessions.all.get_mut(&session).ok_or(SessionError::Unknown)?;
        let Some(cseq) = x.ack_wait.take() else { return Err(SessionError::State) };
        self.sessions.clear_timer(session, Timer::AckWait);
        self.send_ack(now, session, cseq, body);
        self.pump(now);
        Ok(())
    }

    /// Sends a request inside the session's dialog (INFO, MESSAGE,
    /// UPDATE…); its outcome comes as [`Event::Outcome`]. A 481 or 408
    /// answer also ends the session (§12.2.1.2).
    pub fn send_in_session(
        &mut self,
        now: Instant,
        session: SessionId,
        request: Request,
    ) -> Result<RequestId, SessionError> {
        let now = self.clamp(now);
        if matches!(request.method, Method::Invite | Method::Ack | Method::Cancel | Method::Bye) {
            return Err(SessionError::Send(SendError::Method(request.method.as_str().to_owned())));
        }
        // A session shutdown keeps for its ACK only waits to end.
        if self.shutting_down {
            return Err(SessionError::Send(SendError::ShuttingDown));
        }
        let x = self.sessions.all.get_mut(&session).ok_or(SessionError::Unknown)?;
        let Some(dialog) = x.dialog.as_mut() else { return Err(SessionError::State) };
        let head = dialog.next_request();
        let mut request = request;
        request.uri.clone_from(&head.uri);
        self.send_in_dialog(now, session, request, head, Origin::App).ok_or(SessionError::State)
    }

    // ----- incoming -----

    /// Answers the INVITE (or re-INVITE) `s` waits to answer with a final
    /// non-2xx `code`.
    fn answer_offer(
        &mut self,
        now: Instant,
        s: SessionId,
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: Option<&Body>,
    ) {
        self.respond_offer(now, s, code, reason, headers, body);
        self.sessions.clear_timer(s, Timer::Unanswered);
        self.final_sent(s);
        if let Some(x) = self.sessions.all.get_mut(&s) {
            x.offer = None;
        }
    }

    /// Writes and sends a response to the offer `s` waits to answer:
    /// our tag, Contact and the request's Record-Route for 101–299
    /// (§12.1.1), `headers`, and `body`. Returns the bytes sent.
    fn respond_offer(
        &mut self,
        now: Instant,
        s: SessionId,
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: Option<&Body>,
    ) -> Option<Vec<u8>> {
        self.respond_pending(now, s, false, code, reason, headers, body)
    }

    /// [`respond_offer`](Self::respond_offer) for the INVITE, or (`update`)
    /// for the peer's UPDATE waiting for its answer.
    #[allow(clippy::too_many_arguments)]
    fn respond_pending(
        &mut self,
        now: Instant,
        s: SessionId,
        update: bool,
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: Option<&Body>,
    ) -> Option<Vec<u8>> {
        let x = self.sessions.all.get(&s)?;
        let offer = if update { x.update_offer.as_ref()? } else { x.offer.as_ref()? };
        let dialog_forming = (101..300).contains(&code);
        let contact = dialog_forming.then(|| format!("<{}>", self.contact_for(offer.peer.transport)));
        let mut extra: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 4);
        if let Some(c) = &contact {
            extra.push(("Contact", c));
        }
        let allow = (200..300).contains(&code).then(|| self.allow_value());
        if let Some(a) = &allow {
            extra.push(("Allow", a));
        }
        extra.extend_from_slice(headers);
        if let Some(b) = body {
            extra.push(("Content-Type", &b.content_type));
        }
        if let Some(ua) = self.config.user_agent.as_deref() {
            extra.push(("Server", ua));
        }
        let mut bytes = Vec::new();
        let empty: &[u8] = &[];
        // §12.1.1: the Record-Route of the request goes into every
        // dialog-creating response.
        offer.head.write(&mut bytes, status(code), reason, dialog_forming, &extra, body.map_or(empty, |b| &b.bytes));
        let server = offer.server;
        self.transactions.respond(now, server, bytes.clone()).ok()?;
        Some(bytes)
    }

    /// A request the transaction layer handed up that belongs to sessions
    /// (INVITE, CANCEL, or any request with a To tag). Always answered.
    pub(super) fn session_request(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) {
        let method = m.method().copied();
        let to_tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        match (method, to_tag) {
            (Some(Method::Cancel), _) => self.cancel_arrived(now, server, m),
            (Some(Method::Invite), None) => self.invite_arrived(now, server, bytes, m, source),
            (_, Some(tag)) => self.in_dialog_request(now, server, bytes, m, source, &tag),
            (_, None) => {
                self.answer(now, server, m, status(481), "Call/Transaction Does Not Exist");
            }
        }
    }

    /// A new INVITE: a new incoming session.
    fn invite_arrived(&mut self, now: Instant, server: ServerId, bytes: &Arc<[u8]>, m: &Message<'_>, source: Source) {
        let tag = self.fresh_tag();
        let dialog = match Dialog::from_uas(m, &tag) {
            Ok(d) => d,
            Err(DialogError::NoContact) => {
                self.answer(now, server, m, status(400), "Missing Contact");
                return;
            }
            Err(_) => {
                self.answer(now, server, m, status(400), "Bad Request");
                return;
            }
        };
        let Some(negotiation) = self.timer_check(now, server, m) else { return };
        // RFC 3262 §3: provisional responses go reliably when the INVITE
        // requires it (or, with `PrackMode::Required`, supports it).
        let reliably = match self.config.prack {
            PrackMode::Off => false,
            PrackMode::Supported => reliable::requires(m, reliable::TAG),
            PrackMode::Required => reliable::supports(m, reliable::TAG),
        };
        let reliable = reliably.then(|| {
            let cseq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq());
            Reliable::new(cseq, self.rng.next_u64())
        });
        let peer_update = m.allow().filter_map(Result::ok).any(|x| x == Method::Update);
        let call_id = dialog.id().call_id.clone();
        let s = self.new_session(Role::Uas, Phase::Offered, call_id.clone(), tag);
        let branch = branch_of(m);
        if let Some(b) = &branch {
            self.sessions.by_branch.insert((call_id, b.clone()), s);
        }
        if let Some(x) = self.sessions.all.get_mut(&s) {
            x.dialog = Some(dialog);
            x.branch = branch;
            x.offer = Offer::of(server, m, &x.local_tag, &source).map(|o| Offer { timer: negotiation, ..o });
            x.reliable = reliable;
            x.peer_update = peer_update;
        }
        self.pin_for(now, s, source.conn);
        self.sessions.set_timer(s, Timer::Unanswered, now + self.config.answer_within);
        let name = |a: Option<Result<crate::message::headers::Address<'_>, _>>| {
            a.and_then(Result::ok).map(|a| a.uri().as_str().to_owned()).unwrap_or_default()
        };
        self.out.push_back(Output::Event(Event::IncomingSession {
            session: s,
            from: name(m.from()),
            to: name(m.to()),
            body: Body::of(m),
            source,
            request: bytes.clone(),
        }));
    }

    /// RFC 4028 §9: what our 2xx to the INVITE, re-INVITE or UPDATE `m`
    /// will say of the session timer; `None` when `m` was answered 422
    /// (its interval is below our Min-SE, which the 422 names).
    fn timer_check(&mut self, now: Instant, server: ServerId, m: &Message<'_>) -> Option<Negotiation> {
        let Some(config) = self.config.session_timers else { return Some(Negotiation::None) };
        match timer::negotiate(m, config) {
            Negotiation::TooSmall(min) => {
                let min = min.to_string();
                let headers = [("Min-SE", min.as_str())];
                self.answer_with(now, server, m, status(422), "Session Interval Too Small", &headers);
                None
            }
            n => Some(n),
        }
    }

    /// §9.2: a CANCEL ends the matching INVITE not yet answered (487) and
    /// is answered 200; with no match, 481.
    fn cancel_arrived(&mut self, now: Instant, server: ServerId, m: &Message<'_>) {
        let key = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned()).zip(branch_of(m));
        let Some(s) = key.and_then(|k| self.sessions.by_branch.get(&k).copied()) else {
            self.answer(now, server, m, status(481), "Call/Transaction Does Not Exist");
            return;
        };
        self.answer(now, server, m, status(200), "OK");
        if self.sessions.all.get(&s).is_some_and(|x| x.phase == Phase::Offered) {
            self.answer_offer(now, s, 487, "Request Terminated", &[], None);
            self.end_session(now, s, SessionEnd::Cancelled);
        }
    }

    /// A request with a To tag: it must match a dialog (§12.2.2).
    fn in_dialog_request(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
        tag: &str,
    ) {
        let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned()).unwrap_or_default();
        let found = self
            .sessions
            .find(&call_id, tag)
            .filter(|s| self.sessions.all.get(s).and_then(|x| x.dialog.as_ref()).is_some_and(|d| d.matches_request(m)));
        let Some(s) = found else {
            self.answer(now, server, m, status(481), "Call/Transaction Does Not Exist");
            return;
        };
        let seq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq());
        let method = m.method().copied();
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        let Some(dialog) = x.dialog.as_mut() else { return };
        // §12.2.2: lower CSeq than the last: 500.
        if dialog.check_remote_seq(seq).is_err() {
            self.answer(now, server, m, status(500), "CSeq Out of Order");
            return;
        }
        match method {
            Some(Method::Bye) => {
                self.answer(now, server, m, status(200), "OK");
                if self.sessions.all.get(&s).is_some_and(|x| x.phase == Phase::Offered) {
                    // §15.1.2: BYE on an early dialog: the INVITE gets 487.
                    self.answer_offer(now, s, 487, "Request Terminated", &[], None);
                }
                self.end_session(now, s, SessionEnd::PeerHungUp);
            }
            Some(Method::Invite) => self.reinvite_arrived(now, s, server, bytes, m, source),
            Some(Method::Prack) => self.prack_arrived(now, s, server, m),
            Some(Method::Update) if !self.config.handle_methods.contains(&Method::Update) => {
                self.update_arrived(now, s, server, bytes, m, source);
            }
            _ => self.deliver_in_session(now, s, server, bytes, m, source),
        }
    }

    /// RFC 3262 §3: a PRACK: 200 when its RAck names our reliable
    /// provisional response not yet acknowledged (its retransmissions
    /// stop; a 2xx waiting for it goes, or the next provisional response),
    /// else 481.
    fn prack_arrived(&mut self, now: Instant, s: SessionId, server: ServerId, m: &Message<'_>) {
        let rack = reliable::rack(m);
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        let r = x.reliable.as_mut();
        let hit = r.and_then(|r| {
            let (rseq, cseq, method) = rack?;
            let last = r.last.as_mut()?;
            let matches = last.rseq == rseq && r.cseq == cseq && method.eq_ignore_ascii_case("INVITE");
            (matches && !last.acked).then(|| {
                last.acked = true;
                if last.body {
                    r.early_answer = true;
                }
                // The next waiting one goes first; a 2xx held for the
                // PRACKs goes once none is left (§3).
                let next = r.queue.pop_front();
                let deferred = if next.is_none() { r.deferred.take() } else { None };
                (deferred, next)
            })
        });
        let Some((deferred, next)) = hit else {
            self.answer(now, server, m, status(481), "Call/Transaction Does Not Exist");
            return;
        };
        self.answer(now, server, m, status(200), "OK");
        self.sessions.clear_timer(s, Timer::PrackRetransmit);
        self.sessions.clear_timer(s, Timer::PrackGiveUp);
        self.emit(s, SessionEvent::Pracked { body: Body::of(m) });
        let offered = self.sessions.all.get(&s).is_some_and(|x| x.phase == Phase::Offered && x.offer.is_some());
        if !offered {
            return;
        }
        if let Some((code, body)) = next {
            self.send_reliable(now, s, code, body.as_ref());
            // A 2xx held for one with a body waits on; else it goes now.
            let hold = self.sessions.all.get(&s).and_then(|x| x.reliable.as_ref()).is_some_and(Reliable::unacked_body);
            let deferred = self.sessions.all.get_mut(&s).and_then(|x| x.reliable.as_mut()).and_then(|r| {
                if hold {
                    None
                } else {
                    r.deferred.take()
                }
            });
            if let Some(Held(body)) = deferred {
                let _ = self.send_accept(now, s, body.as_ref());
            }
        } else if let Some(Held(body)) = deferred {
            // §3: the 2xx waited for this PRACK.
            let _ = self.send_accept(now, s, body.as_ref());
        }
    }

    /// RFC 3311 §5.2: an UPDATE from the peer (a target refresh, and a
    /// session refresh, RFC 4028 §10). With no body it is answered 200 at
    /// once; an offer goes to the application, unless one is under way:
    /// 491 when ours waits for its answer, 500 with Retry-After when
    /// theirs does.
    fn update_arrived(
        &mut self,
        now: Instant,
        s: SessionId,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) {
        let has_offer = !m.body().is_empty();
        let Some(x) = self.sessions.all.get(&s) else { return };
        if has_offer {
            // Ours: an UPDATE or re-INVITE with an offer, or the initial
            // INVITE's offer not answered yet (no reliable answer).
            let ours = x.update_out.is_some_and(|(_, offer)| offer)
                || (x.invite.is_some() && x.phase == Phase::Confirmed)
                || (x.role == Role::Uac && x.phase == Phase::Calling && !x.early_answer);
            let theirs = x.update_offer.is_some()
                || (x.offer.is_some() && x.phase == Phase::Confirmed)
                || (x.phase == Phase::Offered && !x.reliable.as_ref().is_some_and(|r| r.early_answer));
            if ours {
                self.answer(now, server, m, status(491), "Request Pending");
                return;
            }
            if theirs {
                let wait = format!("{}", 1 + self.rng.next_u64() % 10);
                self.answer_with(now, server, m, status(500), "Server Internal Error", &[("Retry-After", &wait)]);
                return;
            }
        } else if x.update_offer.is_some() {
            self.answer(now, server, m, status(500), "Server Internal Error");
            return;
        }
        let Some(negotiation) = self.timer_check(now, server, m) else { return };
        let allows = m.allow().filter_map(Result::ok).any(|x| x == Method::Update);
        let listed = m.headers().first(HeaderName::Allow).is_some();
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        if let Some(d) = x.dialog.as_mut() {
            d.refresh_target(m);
        }
        if listed {
            x.peer_update = allows;
        }
        x.update_offer = Offer::of(server, m, &x.local_tag, &source).map(|o| Offer { timer: negotiation, ..o });
        if has_offer {
            self.sessions.set_timer(s, Timer::UpdateUnanswered, now + self.config.answer_within);
            self.emit(s, SessionEvent::UpdateOffer { body: Body::of(m), request: bytes.clone() });
        } else {
            self.answer_update(now, s, 200, "OK", None);
        }
    }

    /// Answers the peer's UPDATE of `s` with `code`: a 2xx with Contact
    /// (RFC 3311 §5.2), `body` and the session timer (RFC 4028 §9), which
    /// it then arms.
    fn answer_update(&mut self, now: Instant, s: SessionId, code: u16, reason: &str, body: Option<&Body>) -> bool {
        let Some(x) = self.sessions.all.get(&s) else { return false };
        let Some(negotiation) = x.update_offer.as_ref().map(|o| o.timer) else { return false };
        let success = (200..300).contains(&code);
        let (headers, agreed) = if success { self.timer_response_headers(negotiation) } else { (Vec::new(), None) };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let sent = self.respond_pending(now, s, true, code, reason, &headers, body).is_some();
        self.sessions.clear_timer(s, Timer::UpdateUnanswered);
        if let Some(x) = self.sessions.all.get_mut(&s) {
            x.update_offer = None;
            if let (true, Some(b)) = (success, body) {
                x.local_body = Some(b.clone());
            }
        }
        if success && self.config.session_timers.is_some() {
            self.arm_session_timer(now, now, s, agreed);
        }
        sent
    }

    /// §14.2: a re-INVITE from the peer.
    fn reinvite_arrived(
        &mut self,
        now: Instant,
        s: SessionId,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) {
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        if x.invite.is_some() || x.update_out.is_some_and(|(_, offer)| offer) {
            // §14.2: ours is under way: glare (RFC 3311 §5.2 for an
            // UPDATE's offer). (While ours waits out its §14.1 back-off,
            // theirs goes ahead.)
            self.answer(now, server, m, status(491), "Request Pending");
            return;
        }
        if x.offer.is_some() || x.unacked.is_some() || x.update_offer.is_some() || x.phase != Phase::Confirmed {
            // §14.2: one of theirs is still unanswered (or unacknowledged).
            let wait = format!("{}", 1 + self.rng.next_u64() % 10);
            self.answer_with(now, server, m, status(500), "Server Internal Error", &[("Retry-After", &wait)]);
            return;
        }
        let Some(negotiation) = self.timer_check(now, server, m) else { return };
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        if let Some(d) = x.dialog.as_mut() {
            d.refresh_target(m);
        }
        x.offer = Offer::of(server, m, &x.local_tag, &source).map(|o| Offer { timer: negotiation, ..o });
        self.sessions.set_timer(s, Timer::Unanswered, now + self.config.answer_within);
        self.emit(s, SessionEvent::Reoffer { body: Body::of(m), request: bytes.clone() });
    }

    /// Any other request in a dialog: MESSAGE answered 200 and reported
    /// (unless the application handles MESSAGE), the rest handed to the
    /// application as [`Event::Incoming`].
    fn deliver_in_session(
        &mut self,
        now: Instant,
        s: SessionId,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) {
        let method = m.method().copied();
        if method == Some(Method::Message) && !self.config.handle_methods.contains(&Method::Message) {
            self.answer(now, server, m, status(200), "OK");
            self.out.push_back(Output::Event(Event::Message {
                from: m.from().and_then(Result::ok).map(|a| a.uri().to_string()).unwrap_or_default(),
                content_type: m.content_type().and_then(Result::ok).map(|t| t.to_string()),
                body: m.body().to_vec(),
                source,
                request: bytes.clone(),
                session: Some(s),
            }));
            return;
        }
        let deadline = now + self.config.answer_within;
        self.incoming.insert(server, (bytes.clone(), deadline));
        self.answer_deadlines.insert((deadline, server));
        self.out.push_back(Output::Event(Event::Incoming {
            incoming: IncomingId(server),
            method: method.map(|x| x.as_str().to_owned()).unwrap_or_default(),
            source,
            request: bytes.clone(),
            session: Some(s),
        }));
    }

    /// An ACK the transaction layer passed up: for a 2xx we sent.
    pub(super) fn ack_arrived(&mut self, now: Instant, m: &Message<'_>) {
        let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned());
        let tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let (Some(call_id), Some(tag)) = (call_id, tag) else { return };
        let Some(s) = self.sessions.find(&call_id, &tag) else { return };
        let seq = m.cseq().and_then(Result::ok).map(|c| c.seq());
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        if x.unacked.as_ref().map(|u| u.cseq) != seq {
            return; // a copy, or an ACK for something else
        }
        x.unacked = None;
        if x.phase == Phase::Accepted {
            x.phase = Phase::Confirmed;
        }
        let bye = std::mem::take(&mut x.bye_after_ack);
        self.sessions.clear_timer(s, Timer::Retransmit);
        self.sessions.clear_timer(s, Timer::NoAck);
        self.emit(s, SessionEvent::Confirmed { body: Body::of(m) });
        if self.shutting_down {
            // §15: the ACK came: the BYE shutdown held back goes now, and
            // the session ends as the others did at shutdown.
            self.bye_detached(now, s);
            self.end_session(now, s, SessionEnd::ShutDown);
        } else if bye {
            self.send_bye(now, s);
        }
    }

    // ----- time and shutdown -----

    /// Fires the session timers due at `now`.
    pub(super) fn session_timeouts(&mut self, now: Instant) {
        while let Some(&(at, s, timer)) = self.sessions.timers.first() {
            if at > now {
                break;
            }
            self.sessions.timers.pop_first();
            if let Some(x) = self.sessions.all.get_mut(&s) {
                x.timers.remove(&timer);
            }
            self.session_timer(now, s, timer);
        }
    }

    fn session_timer(&mut self, now: Instant, s: SessionId, timer: Timer) {
        let t2 = self.config.timers.t2;
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        match timer {
            Timer::Retransmit => {
                let Some(u) = x.unacked.as_mut() else { return };
                u.interval = (u.interval * 2).min(t2);
                let (bytes, peer, next) = (u.bytes.clone(), u.peer.clone(), now + u.interval);
                let _ = self.transport.send(now, &peer, bytes);
                self.sessions.set_timer(s, Timer::Retransmit, next);
            }
            Timer::NoAck => {
                if x.unacked.take().is_none() {
                    return;
                }
                self.sessions.clear_timer(s, Timer::Retransmit);
                // §13.3.1.4: confirmed but useless: BYE, and it is over
                // (also for a session shutdown kept for its ACK).
                self.bye_detached(now, s);
                self.end_session(now, s, SessionEnd::NoAck);
            }
            Timer::Unanswered => {
                let initial = x.phase == Phase::Offered;
                if initial {
                    self.answer_offer(now, s, 480, "Temporarily Unavailable", &[], None);
                    self.end_session(now, s, SessionEnd::Unanswered);
                } else {
                    // A re-INVITE left unanswered: the endpoint's rule for
                    // every request (§21.4.9).
                    self.answer_offer(now, s, 408, "Request Timeout", &[], None);
                }
            }
            Timer::CancelGiveUp => {
                // §9.1: no final response 64·T1 after the CANCEL.
                if let Some(id) = x.invite.take() {
                    self.abandon(id);
                }
                self.end_session(now, s, SessionEnd::Cancelled);
            }
            Timer::Glare => {
                if let Some(OurOffer(body)) = x.glare_body.take() {
                    self.start_reinvite(now, s, body);
                }
            }
            Timer::AckWait => {
                if let Some(cseq) = x.ack_wait.take() {
                    self.send_ack(now, s, cseq, None);
                }
            }
            Timer::PrackRetransmit => {
                // RFC 3262 §3: T1, doubling each time (no T2 cap).
                let Some(last) = x.reliable.as_mut().and_then(|r| r.last.as_mut()).filter(|l| !l.acked) else {
                    return;
                };
                last.interval *= 2;
                let (bytes, peer, next) = (last.bytes.clone(), last.peer.clone(), now + last.interval);
                let _ = self.transport.send(now, &peer, bytes);
                self.sessions.set_timer(s, Timer::PrackRetransmit, next);
            }
            Timer::PrackGiveUp => {
                // RFC 3262 §3: no PRACK in 64·T1: the INVITE gets a 5xx.
                if !x.reliable.as_ref().is_some_and(Reliable::unacked) || x.phase != Phase::Offered {
                    return;
                }
                self.answer_offer(now, s, 500, "Reliable Provisional Response Not Acknowledged", &[], None);
                self.end_session(now, s, SessionEnd::NoPrack);
            }
            Timer::Refresh => self.refresh(now, s),
            Timer::Expiry => {
                // RFC 4028 §10: no refresh in time: BYE, and it is over.
                if x.timer.is_none() {
                    return;
                }
                self.bye_detached(now, s);
                self.end_session(now, s, SessionEnd::Expired);
            }
            Timer::GlareUpdate => {
                if let Some(OurOffer(body)) = x.glare_update.take() {
                    let refresh = x.refreshing;
                    self.start_update(now, s, body, refresh);
                }
            }
            Timer::UpdateUnanswered => {
                // The rule for every request the application lets lie
                // (§21.4.9).
                self.answer_update(now, s, 408, "Request Timeout", None);
            }
        }
    }

    /// RFC 4028 §10: our refresh is due: an UPDATE with no body when the
    /// peer allows it, else a re-INVITE with the last session description
    /// we sent. While another exchange is under way, a little later.
    fn refresh(&mut self, now: Instant, s: SessionId) {
        let Some(x) = self.sessions.all.get_mut(&s) else { return };
        if x.timer.is_none() || x.phase == Phase::Ending {
            return;
        }
        let busy = x.phase != Phase::Confirmed || x.invite.is_some() || x.offer.is_some() || x.offer_pending();
        if busy || x.unacked.is_some() {
            self.sessions.set_timer(s, Timer::Refresh, now + REFRESH_RETRY);
            return;
        }
        if x.peer_update {
            self.start_update(now, s, None, true);
        } else {
            x.refreshing = true;
            let body = x.local_body.clone();
            self.start_reinvite(now, s, body);
        }
    }

    /// Shutdown: every session ends ([`SessionEnd::ShutDown`]) with the
    /// message its state calls for — BYE, CANCEL, or 503 to an INVITE not
    /// answered — but one whose 2xx still waits for its ACK: §15 forbids
    /// the BYE until the ACK comes or the 2xx retransmission gives up at
    /// 64·T1 (§13.3.1.4), so that session stays until either (it alone
    /// keeps its timers) and the endpoint drains until it ends.
    pub(super) fn shutdown_sessions(&mut self, now: Instant) {
        for s in self.sessions.ids() {
            let Some(x) = self.sessions.all.get(&s) else { continue };
            match (x.role, x.phase) {
                (Role::Uac, Phase::Calling) if x.provisional && x.cancel != Some(true) => self.send_cancel(now, s),
                (_, Phase::Offered) => self.answer_offer(now, s, 503, "Service Unavailable", &[], None),
                // §15: no BYE before the ACK (`ack_arrived`) or the
                // 64·T1 give-up (`Timer::NoAck`); either ends it.
                (_, Phase::Accepted) => continue,
                (_, Phase::Confirmed) => {
                    // §13.2.2.4: a 2xx of a late offer still waiting for
                    // `acknowledge` gets its ACK before the BYE.
                    if let Some(cseq) = self.sessions.all.get_mut(&s).and_then(|x| x.ack_wait.take()) {
                        self.sessions.clear_timer(s, Timer::AckWait);
                        self.ack_detached(now, s, cseq);
                    }
                    self.bye_detached(now, s);
                }
                _ => {}
            }
            if let Some(x) = self.sessions.all.get_mut(&s) {
                x.invite = None;
            }
            self.end_session(now, s, SessionEnd::ShutDown);
        }
    }

    /// While shutting down every new request gets 503, but a BYE in the
    /// dialog of a session kept for its ACK is answered and ends it
    /// (§15.1.2); `true` if `m` was one.
    pub(super) fn shutdown_bye(
        &mut self,
        now: Instant,
        server: ServerId,
        bytes: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) -> bool {
        if m.method().copied() != Some(Method::Bye) {
            return false;
        }
        let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned());
        let tag = m.to().and_then(Result::ok).and_then(|t| t.tag().map(str::to_owned));
        let (Some(call_id), Some(tag)) = (call_id, tag) else { return false };
        let live = self
            .sessions
            .find(&call_id, &tag)
            .and_then(|s| self.sessions.all.get(&s))
            .and_then(|x| x.dialog.as_ref())
            .is_some_and(|d| d.matches_request(m));
        if live {
            self.in_dialog_request(now, server, bytes, m, source, &tag);
        }
        live
    }

    /// Dialog state of a session (for tests and the application).
    pub fn session_confirmed(&self, session: SessionId) -> Option<bool> {
        let x = self.sessions.all.get(&session)?;
        Some(x.dialog.as_ref().is_some_and(|d| d.state() == DialogState::Confirmed))
    }
}
