//! The transaction layer (RFC 3261 §17, RFC 6026): client and server
//! transactions, their timers, and matching messages to them.
//!
//! [`TransactionLayer`] is sans-IO in the manner of the rest of the core:
//! feed it messages ([`TransactionLayer::handle_message`]) and the time
//! ([`TransactionLayer::handle_timeout`]), give it commands
//! ([`TransactionLayer::send_request`], [`TransactionLayer::respond`]), then
//! drain [`TransactionLayer::poll_output`] until `None` and read
//! [`TransactionLayer::poll_timeout`].
//!
//! ```
//! use sipline::transaction::{Output, TransactionLayer};
//! use std::time::{Duration, Instant};
//!
//! # fn demo(t0: Instant) {
//! let mut layer: TransactionLayer<&str> = TransactionLayer::new(Default::default(), 1);
//! let branch = layer.new_branch();
//! let request = format!(
//!     "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch={branch}\r\n\
//!      Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
//!      Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
//! );
//! let tx = layer.send_request(t0, request.into_bytes(), "bob", false).unwrap();
//! assert!(matches!(layer.poll_output(), Some(Output::Transmit { peer: "bob", .. })));
//! assert_eq!(layer.poll_output(), None);
//! // Timer E: the first retransmission is due T1 later.
//! assert_eq!(layer.poll_timeout(), Some(t0 + Duration::from_millis(500)));
//! # let _ = tx;
//! # }
//! ```

mod ack;
mod client;
mod key;
mod server;
mod timer;

pub use ack::{ack_for, trying_for};
pub use client::{ClientKind, ClientState, ClientTransaction};
pub(crate) use key::has_tag;
pub use key::{ClientKey, MergeKey, ServerKey};
pub use server::{Absorbed, ServerKind, ServerState, ServerTransaction};
pub use timer::{Timer, TimerConfig};

use crate::message::{Message, Method, ParseError};
use crate::rng::Rng;
use crate::shed::shed;
use crate::slab::Slab;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// What a transaction machine asks for (internal currency between the
/// machines and the layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send these bytes to the transaction's peer.
    Transmit(Arc<[u8]>),
    /// Hand a response to the TU.
    Response(Arc<[u8]>),
    /// Send 100 Trying on the TU's behalf (§17.2.1).
    SendTrying,
    /// The transaction timed out (B, F or H).
    Timeout,
    /// The transport failed (§17.1.4, §17.2.4).
    TransportError,
    /// The transaction ended.
    Terminated,
}

/// A client transaction handle: a slot index with a generation, so a stale
/// handle never reaches a later transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    index: u32,
    generation: u32,
}

impl ClientId {
    /// The least handle in the order (a range bound for maps keyed by it).
    pub const MIN: ClientId = ClientId { index: 0, generation: 0 };
}

/// A server transaction handle (see [`ClientId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId {
    index: u32,
    generation: u32,
}

/// Either kind of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxId {
    /// A client transaction.
    Client(ClientId),
    /// A server transaction.
    Server(ServerId),
}

/// What the layer reports to the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new request created a server transaction. `merged` is set when it
    /// is a copy of one already being handled that came another way
    /// (§8.2.2.2: answer 482).
    Request {
        /// The new transaction.
        server: ServerId,
        /// The request bytes.
        request: Arc<[u8]>,
        /// §8.2.2.2 merged request.
        merged: bool,
    },
    /// An ACK that belongs to no server transaction, or one in Accepted:
    /// the ACK for a 2xx, which the dialog layer handles (RFC 6026 §8.5).
    Ack {
        /// The ACK bytes.
        request: Arc<[u8]>,
    },
    /// A response for a client transaction.
    Response {
        /// The transaction.
        client: ClientId,
        /// The response bytes.
        response: Arc<[u8]>,
    },
    /// A response that matched no transaction (§17.1.3: a 2xx retransmitted
    /// after the transaction ended goes to the TU this way).
    StrayResponse {
        /// The response bytes.
        response: Arc<[u8]>,
    },
    /// A transaction timed out (timer B, F or H).
    Timeout {
        /// The transaction.
        tx: TxId,
    },
    /// The transport failed for a transaction.
    TransportError {
        /// The transaction.
        tx: TxId,
    },
    /// A transaction ended and its handle is no longer valid.
    Terminated {
        /// The transaction.
        tx: TxId,
    },
}

/// What the runtime (through the transport layer) must do, or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<P> {
    /// Send `bytes` to `peer`.
    Transmit {
        /// Where to.
        peer: P,
        /// The message.
        bytes: Arc<[u8]>,
    },
    /// Something for the TU.
    Event(Event),
}

/// Why [`TransactionLayer::send_request`] refused a request; the request
/// comes back inside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The bytes are not a request.
    #[error("not a SIP request: {1}")]
    Malformed(Vec<u8>, ParseError),
    /// No top Via branch or no CSeq: the transaction cannot be identified.
    #[error("request lacks a Via branch or CSeq")]
    NoKey(Vec<u8>),
    /// ACK is not sent through a client transaction (§17.1.1.3: the TU sends
    /// the ACK for a 2xx itself; the transaction sends the one for a non-2xx).
    #[error("ACK has no client transaction")]
    Ack(Vec<u8>),
    /// A transaction with the same branch and method is already running.
    #[error("a transaction with this branch and method exists")]
    Duplicate(Vec<u8>),
}

/// Why [`TransactionLayer::respond`] refused a response; the response comes
/// back inside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The handle is stale or unknown.
    #[error("no such server transaction")]
    UnknownTransaction(Vec<u8>),
    /// The bytes are not a response.
    #[error("not a SIP response")]
    Malformed(Vec<u8>),
    /// The transaction's state takes no such response (e.g. a second final).
    #[error("the transaction does not take this response now")]
    WrongState(Vec<u8>),
}

/// The status code of `SIP/2.0 NNN …`, 100–699.
fn status_code(response: &[u8]) -> Option<u16> {
    let rest = response.strip_prefix(b"SIP/2.0 ")?;
    let d = rest.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), Some(b' ' | b'\r')) {
        return None;
    }
    let code = d.iter().fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
    crate::message::StatusCode::new(code).map(crate::message::StatusCode::as_u16)
}

struct ClientEntry<P> {
    tx: ClientTransaction,
    key: String,
    peer: P,
    deadline: Option<Instant>,
    tracked: crate::metrics::Tracked,
}

struct ServerEntry<P> {
    tx: ServerTransaction,
    key: String,
    merge: Option<String>,
    /// An INVITE until the TU first answers it: the 100 Trying the layer
    /// sends on the TU's behalf is built from it (§17.2.1). Nothing else
    /// needs the request once an answer went: retransmissions of the
    /// request are answered with the last response (§17.2.1, §17.2.2).
    trying_from: Option<Arc<[u8]>>,
    peer: P,
    deadline: Option<Instant>,
    tracked: crate::metrics::Tracked,
}

/// All transactions of one endpoint.
pub struct TransactionLayer<P> {
    config: TimerConfig,
    rng: Rng,
    clients: Slab<ClientEntry<P>>,
    servers: Slab<ServerEntry<P>>,
    client_keys: BTreeMap<String, ClientId>,
    server_keys: BTreeMap<String, ServerId>,
    merge_keys: BTreeMap<String, ServerId>,
    /// Reused for building lookup keys without allocating.
    scratch: String,
    timers: BTreeSet<(Instant, TxId)>,
    outputs: VecDeque<Output<P>>,
    effects: Vec<Effect>,
    last_now: Option<Instant>,
    /// Appended to every new branch (a worker's tag; empty: none).
    branch_tag: String,
    /// Counts for operators (issue 22).
    metrics: crate::metrics::Recorder,
}

impl<P: Clone> TransactionLayer<P> {
    /// A layer with the given timers and RNG seed (for branches).
    pub fn new(config: TimerConfig, seed: u64) -> Self {
        TransactionLayer {
            config,
            rng: Rng::new(seed),
            clients: Slab::default(),
            servers: Slab::default(),
            client_keys: BTreeMap::new(),
            server_keys: BTreeMap::new(),
            merge_keys: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            effects: Vec::new(),
            scratch: String::new(),
            last_now: None,
            branch_tag: String::new(),
            metrics: crate::metrics::Recorder::default(),
        }
    }

    /// Counts into `metrics` (issue 22).
    #[must_use]
    pub(crate) fn with_metrics(mut self, metrics: crate::metrics::Recorder) -> Self {
        self.metrics = metrics;
        self
    }

    /// Ends every branch [`new_branch`](Self::new_branch) makes with
    /// `tag` (the worker's, [`crate::endpoint::Worker::tag`]); `None`: no tag.
    #[must_use]
    pub fn with_branch_tag(mut self, tag: Option<String>) -> Self {
        self.branch_tag = tag.unwrap_or_default();
        self
    }

    /// A fresh RFC 3261 branch (`z9hG4bK` and 20 random hex digits, §8.1.1.7,
    /// then the tag if one was set).
    pub fn new_branch(&mut self) -> String {
        format!("{}{}{}", crate::message::headers::MAGIC_COOKIE, self.rng.hex(20), self.branch_tag)
    }

    /// Live client and server transactions.
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len, self.servers.len)
    }

    /// Whether no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.clients.len == 0 && self.servers.len == 0
    }

    /// The state of a client transaction, if it is alive.
    pub fn client_state(&mut self, id: ClientId) -> Option<ClientState> {
        self.clients.get_mut(id.index, id.generation).map(|e| e.tx.state())
    }

    /// Whether a server transaction is held for a request of `method`
    /// whose top Via is `via` (§17.2.3, RFC 3261 branches only: `false`
    /// without one), found without the rest of the request.
    pub(crate) fn holds_server(&mut self, method: Method<'_>, via: &crate::message::headers::Via<'_>) -> bool {
        ServerKey::write_branch(method, via, &mut self.scratch) && self.server_keys.contains_key(self.scratch.as_str())
    }

    /// The state of a server transaction, if it is alive.
    pub fn server_state(&mut self, id: ServerId) -> Option<ServerState> {
        self.servers.get_mut(id.index, id.generation).map(|e| e.tx.state())
    }

    /// `now` never goes backwards (DESIGN.md, "Time").
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = match self.last_now {
            Some(last) if now < last => {
                debug_assert!(now >= last, "time went backwards");
                last
            }
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    /// Sends a request through a new client transaction (§17.1). The request
    /// must carry a top Via with a unique branch and a CSeq. `reliable` says
    /// whether the transport is reliable (no retransmissions, §17.1.1.2).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Vec<u8>,
        peer: P,
        reliable: bool,
    ) -> Result<ClientId, SendError> {
        let now = self.clamp(now);
        let (key, kind) = match Message::parse(&request) {
            Err(e) => return Err(SendError::Malformed(request, e)),
            Ok(m) if !m.is_request() => return Err(SendError::Malformed(request, ParseError::RequestLine)),
            Ok(m) => {
                let kind = match m.method() {
                    Some(Method::Ack) => return Err(SendError::Ack(request)),
                    Some(Method::Invite) => ClientKind::Invite,
                    _ => ClientKind::NonInvite,
                };
                match ClientKey::of(&m) {
                    Some(k) => (k.into_string(), kind),
                    None => return Err(SendError::NoKey(request)),
                }
            }
        };
        if self.client_keys.contains_key(&key) {
            return Err(SendError::Duplicate(request));
        }
        let mut effects = std::mem::take(&mut self.effects);
        let tx = ClientTransaction::start(now, kind, Arc::from(request), reliable, self.config, &mut effects);
        let (index, generation) = self.clients.insert(ClientEntry {
            tx,
            key: key.clone(),
            peer,
            deadline: None,
            tracked: crate::metrics::Tracked::default(),
        });
        let id = ClientId { index, generation };
        self.client_keys.insert(key, id);
        self.apply(now, TxId::Client(id), &mut effects);
        self.effects = effects;
        Ok(id)
    }

    /// Tells the INVITE client transaction `id` that its TU gave up on it:
    /// a CANCEL for it went (§9.1), or what it belonged to ended. With no
    /// final response within 64·T1 it ends with an [`Event::Timeout`], as
    /// if by timer B, instead of waiting forever in Proceeding ("the client
    /// SHOULD then consider the original transaction cancelled and SHOULD
    /// destroy the client transaction", §9.1). Nothing changes for other
    /// transactions.
    pub fn give_up(&mut self, now: Instant, id: ClientId) {
        let now = self.clamp(now);
        let Some(e) = self.clients.get_mut(id.index, id.generation) else { return };
        e.tx.on_give_up(now);
        let mut effects = std::mem::take(&mut self.effects);
        self.apply(now, TxId::Client(id), &mut effects);
        self.effects = effects;
    }

    /// Sends a response through a server transaction (§17.2).
    pub fn respond(&mut self, now: Instant, server: ServerId, response: Vec<u8>) -> Result<(), RespondError> {
        let now = self.clamp(now);
        // The TU wrote the response: its status line is all the layer reads.
        let Some(code) = status_code(&response) else {
            return Err(RespondError::Malformed(response));
        };
        let Some(entry) = self.servers.get_mut(server.index, server.generation) else {
            return Err(RespondError::UnknownTransaction(response));
        };
        if !entry.tx.accepts_response(code) {
            return Err(RespondError::WrongState(response));
        }
        // Answered: the request is not needed any more (see `trying_from`).
        entry.trying_from = None;
        let mut effects = std::mem::take(&mut self.effects);
        entry.tx.on_tu_response(now, code, Arc::from(response), &mut effects);
        self.metrics.response_sent(code);
        self.apply(now, TxId::Server(server), &mut effects);
        self.effects = effects;
        Ok(())
    }

    /// The transport could not deliver for `tx` (§17.1.4, §17.2.4).
    pub fn transport_error(&mut self, now: Instant, tx: TxId) {
        let now = self.clamp(now);
        let mut effects = std::mem::take(&mut self.effects);
        match tx {
            TxId::Client(id) => {
                if let Some(e) = self.clients.get_mut(id.index, id.generation) {
                    e.tx.on_transport_error(&mut effects);
                }
            }
            TxId::Server(id) => {
                if let Some(e) = self.servers.get_mut(id.index, id.generation) {
                    e.tx.on_transport_error(&mut effects);
                }
            }
        }
        self.apply(now, tx, &mut effects);
        self.effects = effects;
    }

    /// A message arrived from `peer` over a transport that is `reliable`
    /// or not. Responses go to their client transaction (§17.1.3),
    /// requests to their server transaction or a new one (§17.2.3).
    /// Messages that cannot be matched for want of fields are dropped.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8], peer: P, reliable: bool) {
        if let Ok(m) = Message::parse(bytes) {
            self.handle_parsed(now, &m, bytes, peer, reliable);
        }
    }

    /// [`handle_message`](Self::handle_message) for a message the caller
    /// has parsed already: `m` must be `bytes` parsed.
    pub fn handle_parsed(&mut self, now: Instant, m: &Message<'_>, bytes: &[u8], peer: P, reliable: bool) {
        let now = self.clamp(now);
        let mut effects = std::mem::take(&mut self.effects);
        if let Some(code) = m.status() {
            let id = if ClientKey::write(m, &mut self.scratch) {
                self.client_keys.get(self.scratch.as_str()).copied()
            } else {
                None
            };
            let shared: Arc<[u8]> = Arc::from(bytes);
            match id.and_then(|id| self.clients.get_mut(id.index, id.generation).map(|e| (id, e))) {
                Some((id, entry)) => {
                    let request = entry.tx.request().clone();
                    entry.tx.on_response(
                        now,
                        code.as_u16(),
                        &shared,
                        || Message::parse(&request).ok().and_then(|req| ack_for(&req, m)),
                        &mut effects,
                    );
                    self.apply(now, TxId::Client(id), &mut effects);
                }
                None => self.outputs.push_back(Output::Event(Event::StrayResponse { response: shared })),
            }
        } else {
            if !ServerKey::write(m, &mut self.scratch) {
                self.effects = effects;
                return;
            }
            let is_ack = m.method() == Some(&Method::Ack);
            let found = self.server_keys.get(self.scratch.as_str()).copied();
            match found.and_then(|id| self.servers.get_mut(id.index, id.generation).map(|e| (id, e))) {
                Some((id, entry)) => {
                    if entry.tx.on_request(now, is_ack, &mut effects) == Absorbed::AckForTu {
                        self.outputs.push_back(Output::Event(Event::Ack { request: Arc::from(bytes) }));
                    }
                    self.metrics.request_copy(is_ack, &effects);
                    self.apply(now, TxId::Server(id), &mut effects);
                }
                None if is_ack => {
                    self.outputs.push_back(Output::Event(Event::Ack { request: Arc::from(bytes) }));
                }
                None => {
                    let kind =
                        if m.method() == Some(&Method::Invite) { ServerKind::Invite } else { ServerKind::NonInvite };
                    let key = self.scratch.clone();
                    let merge = MergeKey::of(m).map(MergeKey::into_string);
                    let merged = merge.as_ref().is_some_and(|k| self.merge_keys.contains_key(k));
                    let request: Arc<[u8]> = Arc::from(bytes);
                    let tx = ServerTransaction::start(now, kind, reliable, self.config);
                    let trying_from = (kind == ServerKind::Invite).then(|| request.clone());
                    let (index, generation) = self.servers.insert(ServerEntry {
                        tx,
                        key: key.clone(),
                        merge: if merged { None } else { merge.clone() },
                        trying_from,
                        peer,
                        deadline: None,
                        tracked: crate::metrics::Tracked::default(),
                    });
                    let id = ServerId { index, generation };
                    self.server_keys.insert(key, id);
                    if let (Some(k), false) = (merge, merged) {
                        self.merge_keys.insert(k, id);
                    }
                    self.outputs.push_back(Output::Event(Event::Request { server: id, request, merged }));
                    self.apply(now, TxId::Server(id), &mut effects);
                }
            }
        }
        self.effects = effects;
    }

    /// Fires every timer due at `now`. Idempotent; calling early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        let mut effects = std::mem::take(&mut self.effects);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match id {
                TxId::Client(c) => {
                    if let Some(e) = self.clients.get_mut(c.index, c.generation) {
                        e.deadline = None;
                        e.tx.on_timeout(now, &mut effects);
                        self.metrics.timer_effects(&effects);
                    }
                }
                TxId::Server(s) => {
                    if let Some(e) = self.servers.get_mut(s.index, s.generation) {
                        e.deadline = None;
                        e.tx.on_timeout(now, &mut effects);
                        self.metrics.timer_effects(&effects);
                    }
                }
            }
            self.apply(now, id, &mut effects);
        }
        self.effects = effects;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called;
    /// `None` when no timer is armed. Always later than the last `now`
    /// passed to `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next thing to transmit or report. Drain until `None` after every
    /// `handle_*` call and command.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// Drops the storage of emptied tables (after a burst; see `shed`).
    pub(crate) fn shed(&mut self) {
        shed(&mut self.client_keys);
        shed(&mut self.server_keys);
        shed(&mut self.merge_keys);
        shed(&mut self.timers);
        shed(&mut self.outputs);
    }

    /// Turns a machine's effects into outputs, reschedules its timer and
    /// removes it once terminated.
    fn apply(&mut self, now: Instant, id: TxId, effects: &mut Vec<Effect>) {
        let mut terminated = false;
        let mut send_trying = false;
        for effect in effects.drain(..) {
            let peer = match id {
                TxId::Client(c) => self.clients.get_mut(c.index, c.generation).map(|e| e.peer.clone()),
                TxId::Server(s) => self.servers.get_mut(s.index, s.generation).map(|e| e.peer.clone()),
            };
            let out = match effect {
                Effect::Transmit(bytes) => match peer {
                    Some(peer) => Output::Transmit { peer, bytes },
                    None => continue,
                },
                Effect::Response(response) => match id {
                    TxId::Client(client) => Output::Event(Event::Response { client, response }),
                    TxId::Server(_) => continue,
                },
                Effect::SendTrying => {
                    send_trying = true;
                    continue;
                }
                Effect::Timeout => {
                    self.count_timeout(id);
                    Output::Event(Event::Timeout { tx: id })
                }
                Effect::TransportError => Output::Event(Event::TransportError { tx: id }),
                Effect::Terminated => {
                    terminated = true;
                    continue;
                }
            };
            self.outputs.push_back(out);
        }
        if send_trying {
            self.send_trying(now, id);
        }
        // Reschedule.
        let (old, new) = match id {
            TxId::Client(c) => match self.clients.get_mut(c.index, c.generation) {
                Some(e) => {
                    self.metrics.track_client(&mut e.tracked, &e.tx);
                    let new = if terminated { None } else { e.tx.deadline() };
                    (std::mem::replace(&mut e.deadline, new), new)
                }
                None => (None, None),
            },
            TxId::Server(s) => match self.servers.get_mut(s.index, s.generation) {
                Some(e) => {
                    self.metrics.track_server(&mut e.tracked, &e.tx);
                    let new = if terminated { None } else { e.tx.deadline() };
                    (std::mem::replace(&mut e.deadline, new), new)
                }
                None => (None, None),
            },
        };
        if let Some(at) = old {
            self.timers.remove(&(at, id));
        }
        if let Some(at) = new {
            self.timers.insert((at, id));
        }
        if terminated {
            self.remove(id);
            self.outputs.push_back(Output::Event(Event::Terminated { tx: id }));
        }
    }

    fn send_trying(&mut self, now: Instant, id: TxId) {
        let TxId::Server(s) = id else { return };
        let Some(e) = self.servers.get_mut(s.index, s.generation) else { return };
        let Some(request) = e.trying_from.take() else { return };
        let Some(trying) = Message::parse(&request).ok().and_then(|m| trying_for(&m)) else { return };
        let mut effects = Vec::new();
        e.tx.on_tu_response(now, 100, Arc::from(trying), &mut effects);
        self.metrics.response_sent(100);
        for effect in effects {
            if let Effect::Transmit(bytes) = effect {
                self.outputs.push_back(Output::Transmit { peer: e.peer.clone(), bytes });
            }
        }
    }

    /// Counts a timeout of `id` (B, F or H) by its role and kind.
    fn count_timeout(&mut self, id: TxId) {
        let invite = match id {
            TxId::Client(c) => self.clients.get_mut(c.index, c.generation).map(|e| e.tx.kind() == ClientKind::Invite),
            TxId::Server(s) => self.servers.get_mut(s.index, s.generation).map(|e| e.tx.kind() == ServerKind::Invite),
        };
        self.metrics.timeout(invite.map(|i| crate::metrics::role_kind(id, i)));
    }

    fn remove(&mut self, id: TxId) {
        match id {
            TxId::Client(c) => {
                if let Some(e) = self.clients.remove(c.index, c.generation) {
                    self.metrics.untrack(e.tracked);
                    self.client_keys.remove(&e.key);
                }
            }
            TxId::Server(s) => {
                if let Some(e) = self.servers.remove(s.index, s.generation) {
                    self.metrics.untrack(e.tracked);
                    self.server_keys.remove(&e.key);
                    if let Some(k) = e.merge {
                        self.merge_keys.remove(&k);
                    }
                }
            }
        }
    }
}
