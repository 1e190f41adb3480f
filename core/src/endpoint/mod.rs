//! The endpoint: what an application embeds. It owns a transaction layer
//! and a transport layer, builds requests (RFC 3261 §8.1.1), follows each
//! one from name resolution to its final response, and hands incoming
//! requests to the application to answer (§8.2.6).
//!
//! Sans-IO like the layers under it: feed it the runtime's inputs (the
//! `handle_*` methods), give it commands ([`Endpoint::send_request`],
//! [`Endpoint::respond`]), then drain [`Endpoint::poll_output`] until
//! `None` and sleep until [`Endpoint::poll_timeout`].
//!
//! ```
//! use sipline::endpoint::{Endpoint, EndpointConfig, Output, Request};
//! use std::time::Instant;
//!
//! # fn demo(now: Instant) {
//! let mut ep = Endpoint::new(EndpointConfig::new("sip:alice@192.0.2.1")).unwrap();
//! let id = ep.send_request(now, Request::message("sip:bob@192.0.2.2", "text/plain", b"hi".to_vec())).unwrap();
//! // The target is an address: the MESSAGE leaves at once over UDP.
//! assert!(matches!(ep.poll_output(), Some(Output::Datagram { .. })));
//! # let _ = id;
//! # }
//! ```

mod flood;
mod overload;
mod registration;
mod sdp_body;
mod server;
mod session;
mod subscription;
mod uas;
mod worker;

pub use flood::{FloodLimit, FloodTable};
pub use overload::{wants_overload_control, OverloadConfig, OverloadStats};
use registration::Registration;
pub use registration::{RegistrationConfig, RegistrationState};
pub use server::ServerConfig;
pub use session::{Body, PrackMode, SessionEnd, SessionError, SessionEvent, SessionId, SessionTimerConfig};
pub use subscription::{
    Notification, SubState, Subscribe, SubscriptionEnd, SubscriptionError, SubscriptionEvent, SubscriptionId,
};
pub use worker::{response_worker, Worker};

use crate::auth::{DigestClient, DigestCredentials};
use crate::message::{HeaderName, Message, MessageWriter, Method, Salvaged, StatusCode, Uri};
use crate::rng::Rng;
use crate::transaction::{self, ClientId, ServerId, TimerConfig, TransactionLayer, TxId};
use crate::transport::{
    self, target_for, transport_for_size, CloseReason, ConnId, Peer, QueryId, ResolveError, Source, TargetError,
    TlsConfigError, TlsFailure, Transport, TransportConfig, TransportEvent, TransportLayer,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uas::{Abilities, Verdict};

/// How an endpoint is set up.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The endpoint's address of record (`From` of its requests).
    pub aor: String,
    /// Display name for `From`.
    pub display_name: Option<String>,
    /// User-Agent / Server header value.
    pub user_agent: Option<String>,
    /// Transport when a URI names none (`sips:` is always TLS).
    pub default_transport: Transport,
    /// Transport layer settings (connections, TLS).
    pub transport: TransportConfig,
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// Seed for tags, branches, Call-IDs and cnonces. The runtimes replace
    /// 0 (the default) with a seed from the operating system, so that
    /// two processes never draw the same identifiers; a simulation keeps
    /// its own.
    pub seed: u64,
    /// Where a runtime listens: (transport, address) pairs; port 0 lets the
    /// OS choose. The core binds nothing: a runtime binds these and reports
    /// each bound address with [`Endpoint::add_listener`].
    pub listen: Vec<(Transport, SocketAddr)>,
    /// Methods the application answers itself: they arrive as
    /// [`Event::Incoming`]. Others are answered by the endpoint (RFC 3261
    /// §8.2): OPTIONS with what it supports, MESSAGE with 200 and an
    /// [`Event::Message`], anything else with 405 and Allow.
    pub handle_methods: Vec<Method<'static>>,
    /// Body types the endpoint takes (`type/subtype`, §8.2.3; others: 415).
    pub accept: Vec<String>,
    /// Option tags it supports (Supported, and Require checks §8.2.2.3).
    pub extensions: Vec<String>,
    /// Reliable provisional responses (RFC 3262, PRACK); off by default.
    /// On, `100rel` joins the supported option tags.
    pub prack: PrackMode,
    /// Session timers (RFC 4028); none by default. Set, `timer` joins the
    /// supported option tags.
    pub session_timers: Option<SessionTimerConfig>,
    /// How long the application has to answer an [`Event::Incoming`]
    /// before the endpoint answers 408 for it (default 16 s: half of
    /// Timer F, so the sender still hears it).
    pub answer_within: Duration,
    /// At most this many requests outstanding at once; later ones wait
    /// their turn in order. `None`: no limit (servers). Default 20.
    /// REGISTER requests of the endpoint's own registration never wait.
    pub max_outstanding: Option<usize>,
    /// The endpoint id, unique within the address of record (several
    /// endpoints may share one AOR): sent as the Contact's `+sip.instance`
    /// (RFC 5626 §4.1). A UUID is used as `<urn:uuid:…>`; anything else as
    /// given inside `<…>`.
    pub instance: Option<String>,
    /// Register with a registrar; then every request goes through it.
    pub registration: Option<RegistrationConfig>,
    /// Credentials answering digest challenges (401/407, RFC 3261 §22.2)
    /// on any request: one per realm, or one for any realm.
    pub credentials: Vec<DigestCredentials>,
    /// Send every request through this proxy (a URI) with a pre-loaded
    /// `Route: <…;lr>` (RFC 3261 §8.1.2). With a registration and no
    /// proxy, the registrar plays this part.
    pub outbound_proxy: Option<String>,
    /// Serve a domain as its registrar and proxy (see [`EndpointConfig::serve`]).
    pub server: Option<ServerConfig>,
    /// One of several endpoints serving together (issue 19): every branch
    /// it writes carries its tag, so that a response another worker
    /// received can be handed to it ([`response_worker`]).
    pub worker: Option<Worker>,
    /// Event packages the application serves as a notifier (RFC 6665:
    /// `presence`, `message-summary`…): a SUBSCRIBE for one arrives as
    /// [`Event::IncomingSubscription`]; for any other, 489 with these in
    /// `Allow-Events` (§4.2.1.1). Empty (the default): SUBSCRIBE is not
    /// allowed (405).
    pub events: Vec<String>,
    /// Durations a notifier grants (seconds).
    pub subscription_expires: SubscriptionExpires,
    /// Where the endpoint counts what it does for operators (issue 22):
    /// the workers of one server share one ([`crate::metrics::Metrics`]).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The durations a notifier grants (RFC 6665 §4.2.1.1), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionExpires {
    /// Shorter than this (but not 0): 423 with `Min-Expires`.
    pub min: u32,
    /// When the SUBSCRIBE has no `Expires`.
    pub default: u32,
    /// Longer is cut to this.
    pub max: u32,
}

impl Default for SubscriptionExpires {
    fn default() -> SubscriptionExpires {
        SubscriptionExpires { min: 60, default: 3600, max: 7200 }
    }
}

impl EndpointConfig {
    /// Defaults for the address of record `aor`: UDP, default timers.
    pub fn new(aor: &str) -> EndpointConfig {
        EndpointConfig {
            aor: aor.to_owned(),
            display_name: None,
            user_agent: Some(concat!("sipline/", env!("CARGO_PKG_VERSION")).to_owned()),
            default_transport: Transport::Udp,
            transport: TransportConfig::default(),
            timers: TimerConfig::default(),
            seed: 0,
            listen: Vec::new(),
            handle_methods: Vec::new(),
            accept: vec!["text/plain".to_owned(), "application/sdp".to_owned(), "message/cpim".to_owned()],
            extensions: vec!["gruu".to_owned()],
            prack: PrackMode::Off,
            session_timers: None,
            answer_within: Duration::from_secs(16),
            max_outstanding: Some(20),
            instance: None,
            credentials: Vec::new(),
            registration: None,
            outbound_proxy: None,
            server: None,
            worker: None,
            events: Vec::new(),
            subscription_expires: SubscriptionExpires::default(),
            metrics: None,
        }
    }

    /// Makes the endpoint a registrar (RFC 3261 §10.3, with digest
    /// authentication and GRUUs) and a stateful proxy (§16) for
    /// `server.domain`: REGISTERs for the domain and requests for its users
    /// are handled by the endpoint itself; anything else (an OPTIONS to the
    /// server, a MESSAGE to its own AOR) reaches the application as usual.
    /// No throttle on outstanding requests (a server forwards what comes).
    ///
    /// ```
    /// use sipline::auth::Users;
    /// use sipline::endpoint::{Endpoint, EndpointConfig, ServerConfig};
    /// use sipline::transport::Transport;
    ///
    /// let users = Users::parse("alice:secret\nbob:hunter2\n").unwrap();
    /// let config = EndpointConfig::new("sip:sipline@127.0.0.1")
    ///     .listen(Transport::Udp, "127.0.0.1:5060".parse().unwrap())
    ///     .serve(ServerConfig::new("127.0.0.1", users));
    /// let server = Endpoint::new(config).unwrap();
    /// assert!(server.registrar().is_none()); // made on the first request
    /// ```
    #[must_use]
    pub fn serve(mut self, server: ServerConfig) -> EndpointConfig {
        self.max_outstanding = None;
        self.server = Some(server);
        self
    }

    /// Adds an address to listen on over `transport` (port 0: the OS picks).
    #[must_use]
    pub fn listen(mut self, transport: Transport, addr: SocketAddr) -> EndpointConfig {
        self.listen.push((transport, addr));
        self
    }
}

/// Why an endpoint cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The address of record is not a SIP or SIPS URI.
    #[error("the address of record is not a SIP URI")]
    Aor,
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// A request the application sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (not ACK or CANCEL, which belong to sessions).
    pub method: Method<'static>,
    /// The Request-URI, also the `To` URI.
    pub uri: String,
    /// Extra header lines (name, value), written as given.
    pub headers: Vec<(String, String)>,
    /// Content-Type, when there is a body.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A page-mode MESSAGE (RFC 3428) to `uri`.
    pub fn message(uri: &str, content_type: &str, body: Vec<u8>) -> Request {
        Request {
            method: Method::Message,
            uri: uri.to_owned(),
            headers: Vec::new(),
            content_type: Some(content_type.to_owned()),
            body,
        }
    }

    /// An INVITE to `uri` with an offer (see [`Endpoint::invite`]; an
    /// empty body makes a late offer).
    pub fn invite(uri: &str, content_type: &str, body: Vec<u8>) -> Request {
        let content_type = (!body.is_empty()).then(|| content_type.to_owned());
        Request { method: Method::Invite, uri: uri.to_owned(), headers: Vec::new(), content_type, body }
    }

    /// Any method to `uri`, with no body.
    pub fn new(method: Method<'static>, uri: &str) -> Request {
        Request { method, uri: uri.to_owned(), headers: Vec::new(), content_type: None, body: Vec::new() }
    }
}

/// A request handle, returned at once; its outcome comes as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// An incoming request to answer with [`Endpoint::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(ServerId);

/// A response, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub code: u16,
    /// The reason phrase.
    pub reason: String,
    /// The whole response.
    pub bytes: Arc<[u8]>,
}

impl Response {
    fn from_bytes(bytes: &Arc<[u8]>) -> Option<Response> {
        let m = Message::parse(bytes).ok()?;
        let line = m.status_line()?;
        let (code, reason) = (line.code.as_u16(), line.reason().into_owned());
        Some(Response { code, reason, bytes: bytes.clone() })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No final response in time (timer B or F, 64·T1).
    #[error("request timed out")]
    Timeout,
    /// A final response of 300 or above.
    #[error("{} {}", .0.code, .0.reason)]
    Failure(Response),
    /// The connection could not be made or broke before the answer.
    #[error("connection failed: {0:?}")]
    ConnectionFailed(CloseReason),
    /// TLS failed.
    #[error(transparent)]
    Tls(TlsFailure),
    /// The connection limit was reached; no connection could be opened.
    #[error("too many connections")]
    TooManyConnections,
    /// The target's name did not resolve.
    #[error(transparent)]
    Resolve(ResolveError),
    /// The endpoint shut down first.
    #[error("the endpoint shut down")]
    ShutDown,
}

/// Why a command was refused at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The Request-URI does not parse.
    #[error("invalid Request-URI")]
    InvalidUri,
    /// The URI cannot be a target.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// ACK and CANCEL are not sent this way.
    #[error("{0} is not sent on its own")]
    Method(String),
    /// The endpoint is shutting down.
    #[error("the endpoint is shutting down")]
    ShuttingDown,
    /// A header field value the request needs is malformed (its name).
    #[error("malformed {0} value")]
    Header(String),
}

/// Why [`Endpoint::respond`] refused; the transaction layer's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The incoming request is unknown or already answered finally.
    #[error("no such incoming request")]
    Unknown,
    /// The status code is out of range.
    #[error("invalid status code")]
    Status,
}

/// What the endpoint reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A provisional (1xx) response to a request.
    Provisional {
        /// The request.
        request: RequestId,
        /// The response.
        response: Response,
    },
    /// A request ended: a 2xx, or why not.
    Outcome {
        /// The request.
        request: RequestId,
        /// The 2xx, or the failure.
        result: Result<Response, RequestError>,
    },
    /// A request arrived; answer it with [`Endpoint::respond`].
    Incoming {
        /// The handle to answer with.
        incoming: IncomingId,
        /// Its method.
        method: String,
        /// Where it came from.
        source: Source,
        /// The request.
        request: Arc<[u8]>,
        /// The session whose dialog it came in, if any.
        session: Option<SessionId>,
    },
    /// A page-mode MESSAGE arrived (RFC 3428) and was answered 200.
    Message {
        /// The sender (From URI).
        from: String,
        /// The Content-Type, if any.
        content_type: Option<String>,
        /// The body.
        body: Vec<u8>,
        /// Where it came from.
        source: Source,
        /// The whole request.
        request: Arc<[u8]>,
        /// The session whose dialog it came in, if any.
        session: Option<SessionId>,
    },
    /// A new INVITE: answer with [`Endpoint::ring`], [`Endpoint::accept`]
    /// or [`Endpoint::reject`].
    IncomingSession {
        /// The session's handle.
        session: SessionId,
        /// The caller (From URI).
        from: String,
        /// Who is called (To URI).
        to: String,
        /// The offer, if any.
        body: Option<Body>,
        /// Where it came from.
        source: Source,
        /// The INVITE.
        request: Arc<[u8]>,
    },
    /// A SUBSCRIBE for a package in [`EndpointConfig::events`]: answer
    /// with [`Endpoint::accept_subscription`] (which sends the first
    /// NOTIFY) or [`Endpoint::reject_subscription`].
    IncomingSubscription {
        /// The subscription's handle.
        subscription: SubscriptionId,
        /// The `Event` value (package and parameters).
        event: String,
        /// The subscriber (From URI).
        from: String,
        /// Whose state (To URI).
        to: String,
        /// The duration that accepting grants, in seconds (0: a fetch).
        expires: u32,
        /// The body types the subscriber takes (`Accept`).
        accept: Vec<String>,
        /// The SUBSCRIBE's body, if any.
        body: Option<Body>,
        /// Where it came from.
        source: Source,
        /// The SUBSCRIBE.
        request: Arc<[u8]>,
    },
    /// A REFER (RFC 3515): the peer asks us to call `refer_to`. Accept
    /// with [`Endpoint::accept_refer`] (then report the new call's progress
    /// with [`Endpoint::refer_progress`]) or refuse with
    /// [`Endpoint::reject_subscription`]. Taken when
    /// [`EndpointConfig::events`] lists `refer`.
    Refer {
        /// The implicit subscription (its NOTIFYs carry the progress).
        subscription: SubscriptionId,
        /// The session whose dialog it came in, if any (a transfer of a
        /// call).
        session: Option<SessionId>,
        /// The `Refer-To` URI, with any headers it carries (`?Replaces=…`;
        /// read them with [`crate::event::ReferTo`]).
        refer_to: String,
        /// The `Referred-By` value (RFC 3892), if any.
        referred_by: Option<String>,
        /// Where it came from.
        source: Source,
        /// The REFER.
        request: Arc<[u8]>,
    },
    /// Something happened in a subscription.
    Subscription {
        /// The subscription.
        subscription: SubscriptionId,
        /// What.
        event: SubscriptionEvent,
    },
    /// Something happened in a session.
    Session {
        /// The session.
        session: SessionId,
        /// What.
        event: SessionEvent,
    },
    /// The endpoint's state changed.
    State(EndpointState),
    /// The registration's state changed.
    Registration(RegistrationState),
    /// Shutdown finished: nothing is left running.
    ShutDown,
}

/// An endpoint's life: `Idle` until started, `Establishing` while its first
/// registration is under way (peer-to-peer endpoints go straight on),
/// `Established`, `Draining` while shutdown unregisters or waits for the
/// ACK of an answered session, `Terminated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Created, not started.
    Idle,
    /// Registering for the first time.
    Establishing,
    /// Ready.
    Established,
    /// Shutting down: unregistering, or waiting for the ACK of a 2xx
    /// already sent (at most 64·T1, §13.3.1.4, §15).
    Draining,
    /// Shut down.
    Terminated,
}

/// The sizes of an endpoint's tables ([`Endpoint::tables`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tables {
    /// Live client transactions.
    pub client_transactions: usize,
    /// Live server transactions.
    pub server_transactions: usize,
    /// Entries of the application's requests waiting for an outcome (the
    /// requests, and their indexes by transaction, name query and queue).
    pub requests: usize,
    /// Entries of incoming requests the application has yet to answer
    /// (the requests and their answer deadlines).
    pub incoming: usize,
    /// Live INVITE sessions.
    pub sessions: usize,
    /// Entries of the session indexes (by dialog, by INVITE branch, INVITE
    /// transactions kept for 2xx copies).
    pub session_index: usize,
    /// Session timers armed.
    pub session_timers: usize,
    /// Live subscriptions (both roles).
    pub subscriptions: usize,
    /// Entries of the subscription indexes and timers.
    pub subscription_index: usize,
    /// Requests being proxied (server role).
    pub proxied: usize,
    /// Entries of the proxy's indexes (by branch transaction, by INVITE
    /// for CANCEL).
    pub proxy_index: usize,
    /// Stream connections.
    pub connections: usize,
}

/// What the runtime must do (the transport layer's actions), or an event
/// for the application.
pub type Output = transport::Output<Event>;

const LOOP_DETECTED: StatusCode = match StatusCode::new(482) {
    Some(c) => c,
    None => unreachable!(),
};
const UNAVAILABLE: StatusCode = match StatusCode::new(503) {
    Some(c) => c,
    None => unreachable!(),
};

/// At most this many addresses rest after a 503 at once (the soonest back
/// make room).
const RESTING_MAX: usize = 256;

/// The longest Retry-After honoured: a server asking for more is tried
/// again after this.
const RESTING_LONGEST: Duration = Duration::from_secs(3600);

/// A 503's Retry-After (§20.33), if it has one.
fn retry_after(response: &Response) -> Option<Duration> {
    let m = Message::parse(&response.bytes).ok()?;
    let seconds = m.retry_after()?.ok()?.seconds();
    Some(Duration::from_secs(u64::from(seconds)))
}

/// The Via sent-by host when no listening address names us (a wildcard
/// listener, or none): RFC 6761's reserved `.invalid`, so nothing resolves
/// it; answers come back by `received`/`rport` (RFC 3581) or on the
/// connection.
const PLACEHOLDER_HOST: &str = "sipline.invalid";

/// `uri` as a loose-routing Route value (RFC 3261 §16.12.1.1, §8.1.2).
fn loose_route(uri: &str) -> String {
    if uri.to_ascii_lowercase().contains(";lr") {
        format!("<{uri}>")
    } else {
        format!("<{uri};lr>")
    }
}

/// Pins `conn` as the stream a dialog usage lives on (a session's, a
/// subscription's), releasing the one `slot` held before.
fn repin(transport: &mut TransportLayer, now: Instant, slot: &mut Option<ConnId>, conn: ConnId) {
    if *slot == Some(conn) {
        return;
    }
    let old = slot.replace(conn);
    transport.pin(conn);
    if let Some(old) = old {
        transport.unpin(now, old);
    }
}

/// A Contact header value with the instance id (RFC 5626 §4.1).
fn contact_value(display: Option<&str>, contact: &str, instance: Option<&str>) -> String {
    let name = display.map(|d| format!("\"{d}\" ")).unwrap_or_default();
    match instance {
        Some(i) => format!("{name}<{contact}>;+sip.instance=\"{i}\""),
        None => format!("{name}<{contact}>"),
    }
}

/// Who is waiting for a request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The application ([`Event::Outcome`]).
    App,
    /// The endpoint's registration (`true`: an unregister).
    Register { unregister: bool },
    /// A session's INVITE.
    Invite,
    /// A session's re-INVITE.
    Reinvite,
    /// A session's BYE.
    Bye,
    /// The ACK of a 2xx (no transaction, §17.1.1.3).
    Ack,
    /// A request of a dialog no session keeps (ending another fork).
    Detached,
    /// A subscription's SUBSCRIBE.
    Subscribe,
    /// A subscription's NOTIFY.
    Notify,
    /// A session's PRACK (RFC 3262).
    Prack,
    /// A session's UPDATE (RFC 3311).
    Update,
}

enum Stage {
    /// Waiting for a turn under [`EndpointConfig::max_outstanding`].
    Queued,
    Resolving(QueryId),
    Sent(ClientId),
}

struct Pending {
    request: Request,
    origin: Origin,
    /// Call-ID and From tag, fixed for every attempt (§8.1.1.3, §8.1.1.4;
    /// §22.2: a retry with credentials keeps them).
    call_id: String,
    tag: String,
    /// CSeq of the next attempt (§8.1.1.5; +1 per retry).
    cseq: u32,
    /// The To URI, when not the Request-URI (REGISTER: the AOR).
    to: Option<String>,
    /// Route values: a pre-loaded one (outbound proxy, §8.1.2) or a
    /// dialog's route set (§12.2.1.1).
    routes: Vec<String>,
    /// Inside a dialog: its From and To values (with tags), §12.2.1.1.
    dialog_head: Option<(String, String)>,
    /// Write a Contact for the transport the request leaves on (INVITE,
    /// §8.1.1.8).
    contact: bool,
    /// The session the request belongs to, if any.
    session: Option<SessionId>,
    /// The subscription the request belongs to, if any.
    subscription: Option<SubscriptionId>,
    /// Where it goes (RFC 3263 target of the next hop).
    target: transport::Target,
    /// Where the last attempt went (a retry with credentials goes there too).
    last_peer: Option<Peer>,
    /// Attempts answered with credentials so far.
    auth_rounds: u8,
    target_forced: bool,
    stage: Stage,
    /// Where the request went (streams: failures of that connection end it).
    peer: Option<(Transport, SocketAddr)>,
    /// A transport failure seen for this request's connection.
    failure: Option<RequestError>,
    /// RFC 3263 §4.3: the addresses still to try, in order, should the
    /// attempt under way time out, fail at the transport or get a 503.
    alternates: VecDeque<Peer>,
    /// Next hops to try once `alternates` run out: the other registrars,
    /// for a request routed through the registrar.
    hops: VecDeque<String>,
    /// A provisional response came for the attempt under way: the server
    /// has the request, so it is not tried elsewhere.
    provisional: bool,
}

impl Pending {
    /// The client transaction of the attempt under way, once sent.
    fn client(&self) -> Option<ClientId> {
        match self.stage {
            Stage::Sent(c) => Some(c),
            _ => None,
        }
    }
}

/// A message that just arrived, with its parse: `(bytes, parsed)`.
type Arrived<'b, 'm> = Option<(&'b [u8], &'m Message<'b>)>;

/// A SIP endpoint, sans-IO.
pub struct Endpoint {
    config: EndpointConfig,
    transactions: TransactionLayer<Peer>,
    transport: TransportLayer,
    rng: Rng,
    next_id: u64,
    pending: BTreeMap<RequestId, Pending>,
    by_client: BTreeMap<ClientId, RequestId>,
    by_query: BTreeMap<QueryId, RequestId>,
    /// Stream connections and the (transport, address) they lead to.
    conn_peer: BTreeMap<ConnId, (Transport, SocketAddr)>,
    incoming: BTreeMap<ServerId, (Arc<[u8]>, Instant)>,
    /// When the application's time to answer each incoming request ends.
    answer_deadlines: BTreeSet<(Instant, ServerId)>,
    /// Requests waiting for a turn, oldest first.
    queued: VecDeque<RequestId>,
    state: EndpointState,
    registration: Option<Registration>,
    /// One digest client per configured credential.
    digest: Vec<DigestClient>,
    /// The source of the request being handed to the transaction layer.
    arriving: Option<Source>,
    /// The source of the response being handed to the transaction layer.
    responding: Option<Source>,
    sessions: session::Sessions,
    subscriptions: subscription::Subscriptions,
    /// The registrar and proxy, when serving (made on the first request).
    server: Option<server::Server>,
    /// Overload control's state (issue 19, `overload.rs`).
    overload: overload::Overload,
    /// Addresses that answered 503 with Retry-After (RFC 3261 §21.5.4):
    /// until when, and the 503. Requests outside a dialog skip them.
    resting: BTreeMap<SocketAddr, (Instant, Response)>,
    out: VecDeque<Output>,
    shutting_down: bool,
    shut_down: bool,
    last_now: Option<Instant>,
    /// Counts for operators (issue 22); does nothing without metrics.
    metrics: crate::metrics::Recorder,
}

impl Endpoint {
    /// An endpoint with `config`.
    pub fn new(mut config: EndpointConfig) -> Result<Endpoint, ConfigError> {
        session::add_option_tags(&mut config);
        match Uri::parse(&config.aor) {
            Ok(u) if u.as_sip().is_some() => {}
            _ => return Err(ConfigError::Aor),
        }
        let mut transport_config = config.transport.clone();
        // The placeholder sent-by of requests from wildcard or no listeners
        // is ours when the answer carries it back (§18.1.2).
        transport_config.local_names.push(PLACEHOLDER_HOST.to_owned());
        let mut transport = TransportLayer::new(transport_config, config.seed ^ 0x7a)?;
        if let Some(w) = config.worker {
            transport.set_worker(w.id);
        }
        let metrics = crate::metrics::Recorder::for_endpoint(&config);
        Ok(Endpoint {
            transactions: TransactionLayer::new(config.timers, config.seed)
                .with_branch_tag(config.worker.map(|w| w.tag("")))
                .with_metrics(metrics.share()),
            metrics,
            transport,
            rng: Rng::new(config.seed ^ 0xe9d),
            next_id: 0,
            pending: BTreeMap::new(),
            by_client: BTreeMap::new(),
            by_query: BTreeMap::new(),
            conn_peer: BTreeMap::new(),
            incoming: BTreeMap::new(),
            answer_deadlines: BTreeSet::new(),
            queued: VecDeque::new(),
            state: EndpointState::Idle,
            digest: config.credentials.iter().cloned().map(DigestClient::new).collect(),
            registration: config.registration.clone().map(|c| Registration::new(c, &mut Rng::new(config.seed ^ 0x2e6))),
            arriving: None,
            responding: None,
            sessions: session::Sessions::default(),
            subscriptions: subscription::Subscriptions::default(),
            server: None,
            overload: overload::Overload::default(),
            resting: BTreeMap::new(),
            out: VecDeque::new(),
            shutting_down: false,
            shut_down: false,
            last_now: None,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The transport layer (listeners, connections, statistics).
    pub fn transport(&self) -> &TransportLayer {
        &self.transport
    }

    /// Requests still waiting for their outcome.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// How many entries each of the endpoint's tables holds: what an idle
    /// endpoint must have let go of (transactions, requests, sessions,
    /// proxy contexts, connections, timers), for leak checks and metrics.
    ///
    /// ```
    /// use sipline::endpoint::{Endpoint, EndpointConfig, Tables};
    /// let ep = Endpoint::new(EndpointConfig::new("sip:alice@example.com")).unwrap();
    /// assert_eq!(ep.tables(), Tables::default());
    /// ```
    pub fn tables(&self) -> Tables {
        let (client_transactions, server_transactions) = self.transactions.len();
        let (sessions, session_index, session_timers) = self.sessions.sizes();
        let (subscriptions, subscription_index) = self.subscriptions.sizes();
        let (proxied, proxy_index) = self.server.as_ref().map_or((0, 0), server::Server::sizes);
        Tables {
            client_transactions,
            server_transactions,
            requests: self.pending.len() + self.by_client.len() + self.by_query.len() + self.queued.len(),
            incoming: self.incoming.len() + self.answer_deadlines.len(),
            sessions,
            session_index,
            session_timers,
            subscriptions,
            subscription_index,
            proxied,
            proxy_index,
            connections: self.transport.connections().len(),
        }
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |l| l.max(now));
        self.last_now = Some(now);
        now
    }

    /// Records an address the runtime listens on (the OS's choice for
    /// port 0). Requests name it in their Via.
    pub fn add_listener(&mut self, transport: Transport, local: SocketAddr) {
        self.transport.add_listener(transport, local);
    }

    /// Tells the core the wall-clock time, for TLS certificate checks.
    pub fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        let now = self.clamp(now);
        self.transport.set_wall_clock(now, unix);
    }

    /// Sends `request`; the outcome arrives as [`Event::Outcome`].
    pub fn send_request(&mut self, now: Instant, request: Request) -> Result<RequestId, SendError> {
        let now = self.clamp(now);
        if self.shutting_down {
            return Err(SendError::ShuttingDown);
        }
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Err(SendError::Method(request.method.as_str().to_owned()));
        }
        Uri::parse(&request.uri).map_err(|_| SendError::InvalidUri)?;
        // §8.1.2: through the outbound proxy (or the registrar) when there
        // is one, with a pre-loaded loose Route to it.
        if request.method == Method::Invite {
            return Err(SendError::Method("INVITE (use Endpoint::invite)".to_owned()));
        }
        let (hop, routes) = self.first_hop(&request.uri);
        let (call_id, tag) = (self.rng.hex(20), self.rng.hex(10));
        let id = self.enqueue(&hop, request, Origin::App, (call_id, tag, 1), None, routes)?;
        self.queued.push_back(id);
        self.start_queued();
        self.pump(now);
        Ok(id)
    }

    /// Where a request outside a dialog to `uri` goes first, and its
    /// pre-loaded Route (§8.1.2): the outbound proxy (or the registrar)
    /// when there is one, else `uri` itself.
    fn first_hop(&self, uri: &str) -> (String, Vec<String>) {
        match self.next_hop() {
            Some(proxy) => (proxy.clone(), vec![loose_route(&proxy)]),
            None => (uri.to_owned(), Vec::new()),
        }
    }

    /// The proxy every request goes through, if any: the outbound proxy,
    /// else the registrar in use.
    fn next_hop(&self) -> Option<String> {
        self.config.outbound_proxy.clone().or_else(|| {
            let reg = self.registration.as_ref()?;
            Some(reg.config.registrar_at(reg.bound.unwrap_or(reg.at)).to_owned())
        })
    }

    /// For a request whose first hop is `hop`: the other registrars, in
    /// order, when `hop` is the registrar in use and there is no outbound
    /// proxy (RFC 3263 §4.3 across registrars); else none.
    fn fallback_hops(&self, hop: &str) -> VecDeque<String> {
        let Some(reg) = self.registration.as_ref().filter(|_| self.config.outbound_proxy.is_none()) else {
            return VecDeque::new();
        };
        if reg.config.registrar_at(reg.bound.unwrap_or(reg.at)) != hop {
            return VecDeque::new();
        }
        reg.config.registrars().filter(|r| *r != hop).map(str::to_owned).collect()
    }

    /// Records a request bound for `hop` (resolved per RFC 3263).
    fn enqueue(
        &mut self,
        hop: &str,
        request: Request,
        origin: Origin,
        (call_id, tag, cseq): (String, String, u32),
        to: Option<String>,
        routes: Vec<String>,
    ) -> Result<RequestId, SendError> {
        let uri = Uri::parse(hop).map_err(|_| SendError::InvalidUri)?;
        let target = target_for(&uri, self.config.default_transport)?;
        let target_forced = uri.as_sip().is_some_and(|s| s.transport().is_some());
        // Only the application's requests and INVITEs move on to another
        // registrar (a REGISTER's registrar is the registration's choice).
        let hops =
            if matches!(origin, Origin::App | Origin::Invite) { self.fallback_hops(hop) } else { VecDeque::new() };
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let pending = Pending {
            request,
            origin,
            call_id,
            tag,
            cseq,
            to,
            routes,
            dialog_head: None,
            contact: false,
            session: None,
            subscription: None,
            target,
            last_peer: None,
            auth_rounds: 0,
            target_forced,
            stage: Stage::Queued,
            peer: None,
            failure: None,
            alternates: VecDeque::new(),
            hops,
            provisional: false,
        };
        self.pending.insert(id, pending);
        Ok(id)
    }

    /// Starts a request at once, whatever the throttle says.
    fn start_now(&mut self, id: RequestId) {
        let Some(p) = self.pending.get_mut(&id) else { return };
        let query = self.transport.resolve(&p.target);
        p.stage = Stage::Resolving(query);
        self.by_query.insert(query, id);
    }

    /// The endpoint's state.
    pub fn state(&self) -> EndpointState {
        self.state
    }

    /// The registration's state (`None` for a peer-to-peer endpoint).
    pub fn registration(&self) -> Option<&RegistrationState> {
        self.registration.as_ref().map(|r| &r.state)
    }

    fn set_state(&mut self, state: EndpointState) {
        if self.state != state {
            self.state = state;
            self.out.push_back(Output::Event(Event::State(state)));
        }
    }

    fn set_registration(&mut self, state: RegistrationState) {
        let Some(reg) = self.registration.as_mut() else { return };
        if reg.state != state {
            reg.state = state.clone();
            self.out.push_back(Output::Event(Event::Registration(state)));
        }
    }

    /// Starts the endpoint: a registered endpoint sends its first REGISTER
    /// (state `Establishing` until the registrar accepts it); a
    /// peer-to-peer endpoint is `Established` at once. Requests may be sent
    /// before, too. Does nothing once started.
    pub fn start(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.state != EndpointState::Idle {
            return;
        }
        if self.registration.is_some() {
            self.set_state(EndpointState::Establishing);
            self.register(now, false);
        } else {
            self.set_state(EndpointState::Established);
        }
        self.pump(now);
    }

    /// Removes the registration (REGISTER with `Expires: 0`, §10.2.2); the
    /// endpoint stays up and can [`reregister`](Self::reregister).
    pub fn unregister(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.registration.as_ref().is_some_and(|r| !matches!(r.state, RegistrationState::Unregistered)) {
            self.register(now, true);
            self.pump(now);
        }
    }

    /// Registers again after [`unregister`](Self::unregister) (or at once
    /// after a failure, not waiting for the retry).
    pub fn reregister(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.registration.is_some() && !self.shutting_down {
            self.register(now, false);
            self.pump(now);
        }
    }

    /// Sends a REGISTER (§10.2) for the binding, or to remove it, to the
    /// registrar in turn (`Registration::at`).
    fn register(&mut self, now: Instant, unregister: bool) {
        // A try to go back to the first registrar gives way to a refresh
        // or an unregistration where the binding is (counted as failed).
        if self.registration.as_ref().is_some_and(|r| r.returning && r.request.is_some()) {
            self.return_failed(now);
        }
        let contact = self.contact_uri();
        let instance = self.instance();
        let display = self.config.display_name.clone();
        let aor = self.config.aor.clone();
        let Some(reg) = self.registration.as_mut() else { return };
        // One REGISTER at a time (§10.2: they must not overlap); the one
        // under way is given up.
        let previous = reg.request.take();
        reg.refresh_at = None;
        reg.cseq += 1;
        let expires = if unregister { 0 } else { reg.expires };
        reg.contact.clone_from(&contact);
        let value = contact_value(display.as_deref(), &contact, instance.as_deref());
        let registrar = reg.config.registrar_at(reg.at).to_owned();
        let request = Request {
            method: Method::Register,
            uri: registrar.clone(),
            headers: vec![
                ("Contact".to_owned(), value),
                ("Expires".to_owned(), expires.to_string()),
                ("Supported".to_owned(), "gruu".to_owned()),
            ],
            content_type: None,
            body: Vec::new(),
        };
        let ids = (reg.call_id.clone(), reg.tag.clone(), reg.cseq);
        let several = reg.config.count() > 1;
        if let Some(old) = previous {
            self.abandon(old);
        }
        let Ok(id) = self.enqueue(&registrar, request, Origin::Register { unregister }, ids, Some(aor), Vec::new())
        else {
            // A registrar URI that is not a target: nothing will fix it
            // (with others to try, it counts as one not answering).
            let error = RequestError::Resolve(ResolveError::NotFound(registrar));
            if several && !unregister {
                self.registration_failed(now, error);
            } else {
                self.set_registration(RegistrationState::Failed { error, retry_in: Duration::MAX });
            }
            return;
        };
        let refreshing = matches!(self.registration(), Some(RegistrationState::Registered { .. }));
        if let Some(reg) = self.registration.as_mut() {
            reg.request = Some(id);
        }
        // A refresh keeps the state Registered: nothing to report.
        if unregister {
            self.set_registration(RegistrationState::Unregistering);
        } else if !refreshing {
            self.set_registration(RegistrationState::Registering);
        }
        self.start_now(id);
    }

    /// Forgets a request without reporting it; returns what it was.
    fn abandon(&mut self, id: RequestId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        match p.stage {
            Stage::Queued => self.queued.retain(|q| *q != id),
            Stage::Resolving(q) => {
                self.by_query.remove(&q);
            }
            Stage::Sent(client) => {
                self.by_client.remove(&client);
            }
        }
        Some(p)
    }

    /// The `+sip.instance` value (RFC 5626 §4.1), `<urn:uuid:…>` for a UUID.
    fn instance(&self) -> Option<String> {
        let id = self.config.instance.as_deref()?;
        let uuid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        Some(if uuid { format!("<urn:uuid:{id}>") } else { format!("<{id}>") })
    }

    /// Our Contact URI (§10.2.1): the user of the AOR at the address the
    /// registrar saw us at (RFC 3581) once known, else a listening address.
    fn contact_uri(&self) -> String {
        let user = Uri::parse(&self.config.aor)
            .ok()
            .and_then(|u| u.as_sip().and_then(|s| s.user().map(str::to_owned)))
            .unwrap_or_default();
        let transport = self
            .registration
            .as_ref()
            .and_then(|r| {
                let registrar = r.config.registrar_at(r.at);
                Uri::parse(registrar).ok().and_then(|u| target_for(&u, self.config.default_transport).ok())
            })
            .map_or(self.config.default_transport, |t| t.transport);
        let at = match self.registration.as_ref().and_then(|r| r.public) {
            Some(a) => a.to_string(),
            None => self.sent_by(transport),
        };
        let user = if user.is_empty() { String::new() } else { format!("{user}@") };
        match transport {
            Transport::Udp => format!("sip:{user}{at}"),
            t => format!("sip:{user}{at};transport={}", t.as_str().to_ascii_lowercase()),
        }
    }

    /// A REGISTER ended (§10.2.4); it went last to `peer`.
    fn registered(
        &mut self,
        now: Instant,
        unregister: bool,
        result: Result<Response, RequestError>,
        peer: Option<(Transport, SocketAddr)>,
    ) {
        let instance = self.instance();
        let Some(reg) = self.registration.as_mut() else { return };
        reg.request = None;
        if reg.returning && !unregister {
            if let Err(e) = &result {
                // §10.2.8: the next try asks for what the first registrar takes.
                if let RequestError::Failure(r) = e {
                    let min = Message::parse(&r.bytes).ok().and_then(|m| m.min_expires().and_then(Result::ok));
                    if let Some(min) = min.filter(|m| r.code == 423 && *m > reg.expires) {
                        reg.expires = min;
                    }
                }
                // Not back yet: the fallback keeps the binding (its
                // refresh still runs); the next try backs off.
                self.return_failed(now);
                return;
            }
            // Back at the first registrar: its connection is the one kept.
            reg.returning = false;
            reg.peer = peer;
            self.repin_registrar(now);
        }
        let Some(reg) = self.registration.as_mut() else { return };
        if unregister {
            if let Some(conn) = reg.conn.take() {
                self.transport.unpin(now, conn);
            }
            self.set_registration(RegistrationState::Unregistered);
            self.shutdown_progress(now);
            return;
        }
        match result {
            Ok(response) => {
                let Ok(m) = Message::parse(&response.bytes) else { return };
                let g = registration::granted(&m, instance.as_deref(), &reg.contact, reg.expires);
                reg.failures = 0;
                reg.tried = 0;
                reg.bound = Some(reg.at);
                if reg.at == 0 {
                    reg.home_at = None;
                    reg.home_failures = 0;
                } else if reg.home_at.is_none() {
                    let wait = registration::home_after(&reg.config, reg.home_failures, self.rng.next_u64());
                    reg.home_at = Some(now + wait);
                }
                // RFC 3581: registered from behind a NAT, our Contact says
                // the wrong address: register the one the registrar saw.
                let seen = registration::public_address(&m);
                let moved = seen.is_some() && seen != reg.public;
                if moved {
                    reg.public = seen;
                }
                reg.refresh_at = Some(if moved { now } else { now + registration::refresh_after(g.expires) });
                let reliable = reg.peer.is_some_and(|(t, _)| t.is_reliable());
                reg.keepalive_at = reg.config.keepalive.filter(|_| reliable).map(|k| now + k);
                let state = RegistrationState::Registered {
                    registrar: reg.config.registrar_at(reg.at).to_owned(),
                    expires: g.expires,
                    contact: reg.contact.clone(),
                    pub_gruu: g.pub_gruu,
                    temp_gruu: g.temp_gruu,
                };
                self.set_registration(state);
                if self.state == EndpointState::Establishing {
                    self.set_state(EndpointState::Established);
                }
            }
            // §10.2.8: 423 Interval Too Brief: again with Min-Expires.
            Err(RequestError::Failure(r)) if r.code == 423 => {
                let min = Message::parse(&r.bytes).ok().and_then(|m| m.min_expires().and_then(Result::ok));
                match min {
                    Some(min) if min > reg.expires => {
                        reg.expires = min;
                        self.register(now, false);
                    }
                    _ => self.registration_failed(now, RequestError::Failure(r)),
                }
            }
            Err(e) => self.registration_failed(now, e),
        }
    }

    /// §22.2: answers a 401/407 with credentials and sends the request
    /// again (same Call-ID and tag, CSeq + 1, to the same place). A second
    /// challenge fails the request unless it says the nonce was only stale.
    fn authenticate(&mut self, now: Instant, id: RequestId, response: &Response) -> bool {
        let Ok(m) = Message::parse(&response.bytes) else { return false };
        let Some(p) = self.pending.get(&id) else { return false };
        let stale = m.www_authenticate().chain(m.proxy_authenticate()).filter_map(Result::ok).any(|c| c.stale());
        if p.auth_rounds >= 3 || (p.auth_rounds >= 1 && !stale) {
            return false;
        }
        let (method, uri) = (p.request.method.as_str().to_owned(), p.request.uri.clone());
        let mut answers: Vec<(HeaderName, String)> = Vec::new();
        for client in &mut self.digest {
            if let Ok(headers) = client.authorize_response(&m, &method, &uri, &mut self.rng) {
                answers.extend(headers);
            }
        }
        if answers.is_empty() {
            return false;
        }
        // A REGISTER learns our address from the challenge already.
        let register = matches!(p.origin, Origin::Register { unregister: false });
        if register {
            if let (Some(reg), Some(seen)) = (self.registration.as_mut(), registration::public_address(&m)) {
                reg.public = Some(seen);
            }
        }
        let contact = register.then(|| (self.contact_uri(), self.instance()));
        let Some(p) = self.pending.get_mut(&id) else { return false };
        let Some(peer) = p.last_peer.clone() else { return false };
        p.auth_rounds += 1;
        p.cseq += 1;
        p.request.headers.retain(|(n, _)| {
            !n.eq_ignore_ascii_case("Authorization") && !n.eq_ignore_ascii_case("Proxy-Authorization")
        });
        for (name, value) in answers {
            p.request.headers.push((name.as_str().to_owned(), value));
        }
        // §10.2.4: the registration's CSeq keeps rising past this retry.
        let (cseq, is_register) = (p.cseq, matches!(p.origin, Origin::Register { .. }));
        if let (true, Some(reg)) = (is_register, self.registration.as_mut()) {
            reg.cseq = reg.cseq.max(cseq);
        }
        let display = self.config.display_name.clone();
        let Some(p) = self.pending.get_mut(&id) else { return false };
        if let Some((contact, instance)) = contact {
            for (n, v) in &mut p.request.headers {
                if n == "Contact" {
                    *v = contact_value(display.as_deref(), &contact, instance.as_deref());
                }
            }
            if let Some(reg) = self.registration.as_mut() {
                reg.contact = contact;
            }
        }
        if let Stage::Sent(client) = p.stage {
            self.by_client.remove(&client);
        }
        self.dispatch(now, id, peer);
        true
    }

    /// Sends a CRLF CRLF keep-alive on the registrar's connection when due
    /// (RFC 5626 §3.5.1) and schedules the next.
    fn keepalive(&mut self, now: Instant) {
        let Some(reg) = self.registration.as_mut() else { return };
        let (Some(at), Some(conn), Some((transport, remote))) = (reg.keepalive_at, reg.conn, reg.peer) else {
            reg.keepalive_at = None;
            return;
        };
        if at > now {
            return;
        }
        reg.keepalive_at = reg.config.keepalive.map(|k| now + k);
        let mut peer = Peer::new(transport, remote);
        peer.conn = Some(conn);
        let _ = self.transport.send(now, &peer, Arc::from(&b"\r\n\r\n"[..]));
    }

    /// A REGISTER failed with `error`. With several registrars, one that
    /// does not answer (`registration::unreachable`) hands over to the next
    /// at once; when all failed in a row, the next round starts with the
    /// first after the back-off (see `registration.rs`).
    fn registration_failed(&mut self, now: Instant, error: RequestError) {
        let Some(reg) = self.registration.as_mut() else { return };
        let count = reg.config.count();
        if count > 1 && registration::unreachable(&error) {
            reg.bound = None;
            reg.tried += 1;
            if reg.tried < count {
                reg.at = (reg.at + 1) % count;
                tracing::info!(%error, next = reg.config.registrar_at(reg.at), "registrar not answering: trying the next");
                self.set_registration(RegistrationState::Failed { error, retry_in: Duration::ZERO });
                self.register(now, false);
                return;
            }
            reg.tried = 0;
            reg.at = 0;
        }
        reg.failures += 1;
        let mut retry_in = registration::retry_after(&reg.config, reg.failures);
        // §21.5.4: a 503 that says when to come back is waited out.
        if let RequestError::Failure(r) = &error {
            if let Some(wait) = retry_after(r).filter(|_| r.code == 503) {
                retry_in = retry_in.max(wait.min(RESTING_LONGEST));
            }
        }
        reg.refresh_at = Some(now + retry_in);
        self.set_registration(RegistrationState::Failed { error, retry_in });
    }

    /// Registered with a fallback: tries to register with the first
    /// registrar again (the fallback's binding and refresh stay as they
    /// are until it succeeds).
    fn start_return(&mut self, now: Instant) {
        let Some(reg) = self.registration.as_mut() else { return };
        let keep = reg.refresh_at;
        reg.at = 0;
        reg.returning = true;
        tracing::debug!(registrar = reg.config.registrar_at(0), "trying the first registrar again");
        self.register(now, false);
        if let Some(reg) = self.registration.as_mut() {
            reg.refresh_at = keep;
            if reg.request.is_none() {
                reg.returning = false;
                reg.at = reg.bound.unwrap_or(0);
            }
        }
    }

    /// A try to go back to the first registrar failed or gave way: the
    /// registrar in use stays, the next try waits longer (RFC 5626 §4.5).
    fn return_failed(&mut self, now: Instant) {
        let draw = self.rng.next_u64();
        let Some(reg) = self.registration.as_mut() else { return };
        let old = if reg.returning { reg.request.take() } else { None };
        if let Some(old) = old {
            self.abandon(old);
        }
        let Some(reg) = self.registration.as_mut() else { return };
        reg.returning = false;
        reg.at = reg.bound.unwrap_or(0);
        reg.home_failures = reg.home_failures.saturating_add(1);
        reg.home_at = Some(now + registration::home_after(&reg.config, reg.home_failures, draw));
    }

    /// Pins the connection to the registrar in use (`Registration::peer`),
    /// if one is open, in place of the one pinned before.
    fn repin_registrar(&mut self, now: Instant) {
        let Some(reg) = self.registration.as_mut() else { return };
        let Some(key) = reg.peer.filter(|(t, _)| t.is_reliable()) else { return };
        let conn = self.conn_peer.iter().filter(|(_, k)| **k == key).map(|(c, _)| *c).max();
        if conn.is_some() && conn != reg.conn {
            if let Some(old) = std::mem::replace(&mut reg.conn, conn) {
                self.transport.unpin(now, old);
            }
            if let Some(c) = conn {
                self.transport.pin(c);
            }
        }
    }

    /// Requests under way (resolving or sent).
    fn active(&self) -> usize {
        self.pending.len() - self.queued.len()
    }

    /// Starts queued requests while the throttle allows, oldest first.
    fn start_queued(&mut self) {
        while self.config.max_outstanding.is_none_or(|max| self.active() < max) {
            let Some(id) = self.queued.pop_front() else { return };
            let Some(p) = self.pending.get_mut(&id) else { continue };
            let query = self.transport.resolve(&p.target);
            p.stage = Stage::Resolving(query);
            self.by_query.insert(query, id);
        }
    }

    /// Answers an incoming request with `code` (a final code ends it).
    pub fn respond(&mut self, now: Instant, incoming: IncomingId, code: u16, reason: &str) -> Result<(), RespondError> {
        let now = self.clamp(now);
        let status = StatusCode::new(code).ok_or(RespondError::Status)?;
        let (request, deadline) = self.incoming.get(&incoming.0).ok_or(RespondError::Unknown)?.clone();
        if !self.answer_bytes(now, incoming.0, &request, status, reason) {
            return Err(RespondError::Unknown);
        }
        if code >= 200 {
            self.incoming.remove(&incoming.0);
            self.answer_deadlines.remove(&(deadline, incoming.0));
        }
        self.pump(now);
        Ok(())
    }

    /// Answers `request` (§8.2.6: Via, From, To with a tag, Call-ID and
    /// CSeq copied); `false` if it cannot be answered or the transaction
    /// does not take the response.
    fn answer(
        &mut self,
        now: Instant,
        server: ServerId,
        request: &Message<'_>,
        code: StatusCode,
        reason: &str,
    ) -> bool {
        self.answer_with(now, server, request, code, reason, &[])
    }

    /// [`answer`](Self::answer) for a request kept as bytes.
    fn answer_bytes(&mut self, now: Instant, server: ServerId, request: &[u8], code: StatusCode, reason: &str) -> bool {
        Message::parse(request).is_ok_and(|m| self.answer(now, server, &m, code, reason))
    }

    /// The Allow value: what the endpoint takes (§20.5).
    fn allow_value(&self) -> String {
        let extensions: Vec<&str> = self.config.extensions.iter().map(String::as_str).collect();
        let accept: Vec<&str> = self.config.accept.iter().map(String::as_str).collect();
        Abilities {
            handled: &self.config.handle_methods,
            accept: &accept,
            extensions: &extensions,
            events: !self.config.events.is_empty() || self.config.server.is_some(),
            refer: self.config.events.iter().any(|e| e == "refer"),
        }
        .allow()
    }

    /// [`answer`](Self::answer) with extra header fields.
    fn answer_with(
        &mut self,
        now: Instant,
        server: ServerId,
        m: &Message<'_>,
        code: StatusCode,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> bool {
        let mut response = Vec::with_capacity(m.len() + 64);
        let tag = self.rng.hex(8);
        let mut extra: Vec<(&str, &str)> = headers.to_vec();
        let server_header = self.config.user_agent.clone();
        if let Some(ua) = server_header.as_deref() {
            extra.push(("Server", ua));
        }
        if !Salvaged::from_message(m).write_response_with(&mut response, code, reason, &tag, &extra) {
            // A request that lacks what a response copies (§8.2.6.2: From,
            // To, Call-ID, CSeq, Via) cannot be answered: its transaction
            // ends here rather than waiting forever in Proceeding (an
            // INVITE server transaction has no timer of its own there;
            // found by fuzzing the server role).
            self.transactions.transport_error(now, TxId::Server(server));
            return false;
        }
        self.overload_mark(now, m, &mut response);
        self.transactions.respond(now, server, response).is_ok()
    }

    /// Stops taking requests; outstanding ones fail with
    /// [`RequestError::ShutDown`], open connections close, and
    /// [`Event::ShutDown`] follows.
    ///
    /// A registered endpoint unregisters first (state `Draining`): the
    /// rest follows the registrar's answer (or its Timer F). An incoming
    /// session whose 2xx still waits for its ACK also keeps the endpoint
    /// `Draining`: §15 forbids its BYE before the ACK, so the BYE goes when
    /// the ACK comes, or when the 2xx retransmission gives up at 64·T1
    /// ([`SessionEnd::NoAck`], §13.3.1.4) — shutdown ends within 64·T1
    /// (or the unregistration's Timer F, whichever is later).
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.shutdown_sessions(now);
        self.shutdown_subscriptions(now);
        let apps: Vec<RequestId> =
            self.pending.iter().filter(|(_, p)| p.origin == Origin::App).map(|(id, _)| *id).collect();
        for id in apps {
            self.finish(now, id, Err(RequestError::ShutDown));
        }
        self.answer_deadlines.clear();
        for (server, (request, _)) in std::mem::take(&mut self.incoming) {
            // Unanswered requests get a 503 (§21.5.4) so the peer stops waiting.
            self.answer_bytes(now, server, &request, UNAVAILABLE, "Service Unavailable");
        }
        let bound = self.registration.as_ref().is_some_and(|r| {
            matches!(r.state, RegistrationState::Registered { .. } | RegistrationState::Registering)
                || r.request.is_some()
        });
        // Sessions still here wait for their ACK (`shutdown_sessions`),
        // subscriptions for their last request.
        if bound || self.sessions.len() > 0 || self.subscriptions.len() > 0 {
            self.set_state(EndpointState::Draining);
            if bound {
                self.register(now, true);
                self.pump(now);
            }
            self.shutdown_progress(now);
        } else {
            self.complete_shutdown(now);
        }
    }

    /// While `Draining`: completes shutdown once the unregistration has
    /// ended and no session waits for its ACK any more.
    fn shutdown_progress(&mut self, now: Instant) {
        if self.state != EndpointState::Draining {
            return;
        }
        let unregistering = self.registration.as_ref().is_some_and(|r| r.request.is_some());
        if !unregistering && self.sessions.len() == 0 && self.subscriptions.len() == 0 {
            self.complete_shutdown(now);
        }
    }

    /// The last of shutdown: what is left fails, connections close.
    fn complete_shutdown(&mut self, now: Instant) {
        let left: Vec<RequestId> = self.pending.keys().copied().collect();
        for id in left {
            self.abandon(id);
        }
        self.pump(now);
        self.transport.close_all();
        self.pump(now);
        self.set_state(EndpointState::Terminated);
        if !self.shut_down {
            self.shut_down = true;
            self.out.push_back(Output::Event(Event::ShutDown));
        }
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        let now = self.clamp(now);
        // The transport's parse serves every layer (DESIGN.md, "one parse
        // per message"); only a request it stamped is parsed again.
        match self.transport.receive_datagram(now, local, remote, bytes) {
            Some(transport::Arrival::Parsed { source, bytes, message }) => self.arrived(now, source, bytes, &message),
            Some(transport::Arrival::Stamped { source, bytes }) => {
                if let Ok(m) = Message::parse(&bytes) {
                    self.arrived(now, source, &bytes, &m);
                }
            }
            _ => {}
        }
        self.pump(now);
    }

    /// A message the transport passed up, parsed: to the transaction layer,
    /// and whatever it hands up in turn.
    fn arrived<'b>(&mut self, now: Instant, source: Source, bytes: &'b [u8], m: &Message<'b>) {
        let reliable = source.transport.is_reliable();
        self.metrics.arrived(m);
        if m.is_request() {
            // A flood from one source stops here, before a transaction.
            if !self.flood_allows(now, source.remote.ip()) {
                return;
            }
            let peer = Peer::reply_to_message(&source, m);
            self.arriving = Some(source);
            self.transactions.handle_parsed(now, m, bytes, peer, reliable);
            self.drain_transactions(now, Some((bytes, m)));
            self.arriving = None;
        } else {
            let mut peer = Peer::new(source.transport, source.remote);
            peer.conn = source.conn;
            self.responding = Some(source);
            self.transactions.handle_parsed(now, m, bytes, peer, reliable);
            self.drain_transactions(now, Some((bytes, m)));
            self.responding = None;
        }
    }

    /// The runtime accepted a TCP or TLS connection; `None`: close it.
    pub fn handle_accepted(&mut self, now: Instant, transport: Transport, remote: SocketAddr) -> Option<ConnId> {
        let now = self.clamp(now);
        let conn = self.transport.handle_accepted(now, transport, remote);
        self.metrics.accepted(conn, transport);
        self.pump(now);
        conn
    }

    /// An [`Output::Open`] connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.transport.handle_connected(now, conn);
        self.pump(now);
    }

    /// An [`Output::Open`] failed.
    pub fn handle_connect_failed(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.transport.handle_connect_failed(now, conn);
        self.pump(now);
    }

    /// Bytes arrived on a connection.
    pub fn handle_stream_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let now = self.clamp(now);
        self.transport.handle_stream_data(now, conn, bytes);
        self.pump(now);
    }

    /// A message another worker handed over ([`Output::Worker`] there;
    /// issue 19): a message to send over a connection held here, or a
    /// response received on another worker's connection that belongs to a
    /// transaction here.
    pub fn handle_worker_message(&mut self, now: Instant, message: transport::WorkerMessage) {
        let now = self.clamp(now);
        self.transport.handle_worker_message(now, message);
        self.pump(now);
    }

    /// A connection closed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.transport.handle_closed(now, conn);
        self.pump(now);
    }

    /// An answer to an [`Output::Resolve`].
    pub fn handle_resolved(&mut self, now: Instant, query: QueryId, answer: transport::Answer) {
        let now = self.clamp(now);
        self.transport.handle_resolved(now, query, answer);
        self.pump(now);
    }

    /// Time passed. Idempotent; early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        self.transactions.handle_timeout(now);
        self.transport.handle_timeout(now);
        if let Some(s) = self.server.as_mut() {
            s.handle_timeout(now);
        }
        self.proxy_timer_c(now);
        self.keepalive(now);
        self.session_timeouts(now);
        self.subscription_timeouts(now);
        self.publish_queue_delay(now);
        // Registration refresh or retry (§10.2.4).
        let due = self.registration.as_ref().is_some_and(|r| r.refresh_at.is_some_and(|t| t <= now));
        if due && !self.shutting_down {
            self.register(now, false);
        }
        // Time to try the first registrar again (registration.rs).
        if let Some(reg) = self.registration.as_mut().filter(|r| r.home_at.is_some_and(|t| t <= now)) {
            reg.home_at = None;
            let settled = matches!(reg.state, RegistrationState::Registered { .. }) && reg.request.is_none();
            if settled && reg.bound.is_some_and(|b| b > 0) && !self.shutting_down {
                self.start_return(now);
            }
            // Otherwise the next success with a fallback sets it again.
        }
        // Incoming requests the application let lie get 408 (§21.4.9).
        while let Some(&(deadline, server)) = self.answer_deadlines.first() {
            if deadline > now {
                break;
            }
            self.answer_deadlines.pop_first();
            if let Some((request, _)) = self.incoming.remove(&server) {
                self.answer_bytes(now, server, &request, uas::status(408), "Request Timeout");
            }
        }
        self.pump(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let refresh = self.registration.as_ref().and_then(|r| r.refresh_at);
        [
            self.transactions.poll_timeout(),
            self.transport.poll_timeout(),
            self.answer_deadlines.first().map(|d| d.0),
            self.sessions.poll_timeout(),
            self.subscriptions.poll_timeout(),
            refresh.filter(|_| !self.shutting_down),
            self.registration.as_ref().and_then(|r| r.home_at).filter(|_| !self.shutting_down),
            self.registration.as_ref().and_then(|r| r.keepalive_at),
            self.server.as_ref().and_then(server::Server::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next output; drain until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        let next = self.out.pop_front();
        if next.is_none() {
            crate::shed::shed(&mut self.out);
        }
        next
    }

    /// Moves everything between the layers until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(o) = self.transactions.poll_output() {
                moved = true;
                self.on_transactions(now, o, None);
            }
            while let Some(o) = self.transport.poll_output() {
                moved = true;
                self.on_transport(now, o);
            }
            if !moved {
                self.shed();
                return;
            }
        }
    }

    /// Drops the storage of tables a burst emptied, in every layer, so an
    /// idle endpoint gives its peak back (see `crate::shed`).
    fn shed(&mut self) {
        use crate::shed::shed;
        self.transactions.shed();
        self.transport.shed();
        self.sessions.shed();
        self.subscriptions.shed();
        if let Some(s) = self.server.as_mut() {
            s.shed();
        }
        shed(&mut self.pending);
        shed(&mut self.by_client);
        shed(&mut self.by_query);
        shed(&mut self.conn_peer);
        shed(&mut self.incoming);
        shed(&mut self.answer_deadlines);
        shed(&mut self.queued);
        shed(&mut self.resting);
    }

    /// One output of the transaction layer; `arrived` is the message being
    /// handed to it, already parsed (so its events need no second parse).
    fn on_transactions(&mut self, now: Instant, o: transaction::Output<Peer>, arrived: Arrived<'_, '_>) {
        match o {
            transaction::Output::Transmit { peer, bytes } => match self.transport.send(now, &peer, bytes) {
                Ok(Some(conn)) => {
                    let key = (peer.transport, peer.remote);
                    self.conn_peer.insert(conn, key);
                    // One cached connection to the server, kept while
                    // registered (DESIGN.md: registered endpoint).
                    if let Some(reg) = self.registration.as_mut() {
                        if reg.peer == Some(key) && reg.conn != Some(conn) && !self.shutting_down {
                            if let Some(old) = reg.conn.replace(conn) {
                                self.transport.unpin(now, old);
                            }
                            self.transport.pin(conn);
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => self.connection_failed(now, (peer.transport, peer.remote), &RequestError::TooManyConnections),
            },
            transaction::Output::Event(e) => self.transaction_event(now, e, arrived),
        }
    }

    /// Drains the transaction layer right away (so an incoming request is
    /// paired with the source it came from).
    fn drain_transactions(&mut self, now: Instant, arrived: Arrived<'_, '_>) {
        while let Some(o) = self.transactions.poll_output() {
            self.on_transactions(now, o, arrived);
        }
    }

    fn on_transport(&mut self, now: Instant, o: transport::Output) {
        let event = match o.into_action() {
            Ok(action) => {
                self.metrics.action(&action);
                return self.out.push_back(action);
            }
            Err(event) => event,
        };
        match event {
            // One parse per arrived message, shared by every layer above
            // the transport (the transport's own check parsed it once).
            TransportEvent::Request { source, bytes } | TransportEvent::Response { source, bytes } => {
                if let Ok(m) = Message::parse(&bytes) {
                    self.arrived(now, source, &bytes, &m);
                }
            }
            TransportEvent::Resolved { query, result } => {
                let Some(id) = self.by_query.remove(&query) else { return };
                match result {
                    Ok(peers) => self.resolved(now, id, peers),
                    Err(e) => {
                        let e = RequestError::Resolve(e);
                        if !self.fail_over(now, id, &e) {
                            self.finish(now, id, Err(e));
                        }
                    }
                }
            }
            TransportEvent::Closed { conn, reason } => {
                self.metrics.closed(conn);
                // The registrar's connection dropped: register again, which
                // opens a new one (RFC 5626 §4.4.1 in spirit).
                if let Some(reg) = self.registration.as_mut() {
                    if reg.conn == Some(conn) {
                        reg.conn = None;
                        if matches!(reg.state, RegistrationState::Registered { .. }) && !self.shutting_down {
                            reg.refresh_at = Some(now);
                        }
                    }
                }
                if let Some(key) = self.conn_peer.remove(&conn) {
                    let failure = match reason {
                        CloseReason::Tls(t) => RequestError::Tls(t),
                        r => RequestError::ConnectionFailed(r),
                    };
                    self.connection_failed(now, key, &failure);
                }
            }
            _ => {}
        }
    }

    /// The next hop of request `id` resolved to `peers` (RFC 3263 §4): the
    /// first goes now; outside a dialog the others are kept, in order, to
    /// fail over to (§4.3), and addresses resting after a 503 with
    /// Retry-After are skipped. A dialog's request goes to the first, as
    /// its route says.
    fn resolved(&mut self, now: Instant, id: RequestId, peers: Vec<Peer>) {
        let Some(in_dialog) = self.pending.get(&id).map(|p| p.dialog_head.is_some()) else { return };
        let mut peers: VecDeque<Peer> = peers.into();
        let mut rested = None;
        if !in_dialog {
            self.resting.retain(|_, (until, _)| *until > now);
            peers.retain(|peer| match self.resting.get(&peer.remote) {
                Some((_, response)) => {
                    rested.get_or_insert_with(|| response.clone());
                    false
                }
                None => true,
            });
        }
        let Some(first) = peers.pop_front() else {
            // Nothing to try: every address rests (their 503 is the
            // answer), or there were none.
            let e = match rested {
                Some(response) => RequestError::Failure(response),
                None => RequestError::Resolve(ResolveError::NotFound(String::new())),
            };
            if !self.fail_over(now, id, &e) {
                self.finish(now, id, Err(e));
            }
            return;
        };
        if let Some(p) = self.pending.get_mut(&id) {
            p.alternates = if in_dialog { VecDeque::new() } else { peers };
        }
        self.dispatch(now, id, first);
    }

    /// RFC 3263 §4.3: the attempt of request `id` under way failed with
    /// `error` (a timeout, a transport failure, a 503, a name that did not
    /// resolve): "the client SHOULD create a new request, which is
    /// identical to the previous, but has a different value of the Via
    /// branch ID" and send it to the next address in the list — or, the
    /// list spent, to the next hop (another registrar) once resolved.
    /// Returns whether another attempt is under way. Requests inside a
    /// dialog keep their route; a request a server already answered
    /// provisionally, or an INVITE being cancelled, is not sent elsewhere.
    fn fail_over(&mut self, now: Instant, id: RequestId, error: &RequestError) -> bool {
        let Some(p) = self.pending.get(&id) else { return false };
        let cancelling = p.session.is_some_and(|s| self.sessions.cancelling(s));
        if p.dialog_head.is_some() || p.provisional || cancelling {
            return false;
        }
        self.resting.retain(|_, (until, _)| *until > now);
        let Some(p) = self.pending.get_mut(&id) else { return false };
        let mut next = None;
        while let Some(peer) = p.alternates.pop_front() {
            if !self.resting.contains_key(&peer.remote) {
                next = Some(peer);
                break;
            }
        }
        let hop = if next.is_none() { p.hops.pop_front() } else { None };
        if next.is_none() && hop.is_none() {
            return false;
        }
        // A new attempt: the old transaction is left to end on its own.
        if let Stage::Sent(client) = p.stage {
            self.by_client.remove(&client);
        }
        p.auth_rounds = 0;
        p.failure = None;
        if let Some(peer) = next {
            tracing::debug!(%error, next = %peer.remote, "RFC 3263 §4.3: trying the next address");
            self.dispatch(now, id, peer);
            return true;
        }
        let Some(hop) = hop else { return false };
        let target = Uri::parse(&hop).ok().and_then(|u| {
            let forced = u.as_sip().is_some_and(|s| s.transport().is_some());
            target_for(&u, self.config.default_transport).ok().map(|t| (t, forced))
        });
        let Some((target, forced)) = target else {
            // Not a usable URI: on to the one after, if any.
            return self.fail_over(now, id, error);
        };
        tracing::debug!(%error, next = %hop, "RFC 3263 §4.3: trying the next registrar");
        p.routes = vec![loose_route(&hop)];
        p.target = target;
        p.target_forced = forced;
        let query = self.transport.resolve(&p.target);
        p.stage = Stage::Resolving(query);
        self.by_query.insert(query, id);
        true
    }

    /// A 503 with Retry-After for request `id` (RFC 3261 §21.5.4): its
    /// address rests that long (at most [`RESTING_LONGEST`]); requests
    /// outside a dialog skip it meanwhile.
    fn rest(&mut self, now: Instant, id: RequestId, response: &Response) {
        let Some((_, remote)) = self.pending.get(&id).and_then(|p| p.peer) else { return };
        let Some(wait) = retry_after(response).filter(|w| !w.is_zero()) else { return };
        let Some(until) = now.checked_add(wait.min(RESTING_LONGEST)) else { return };
        self.resting.retain(|_, (u, _)| *u > now);
        if self.resting.len() >= RESTING_MAX && !self.resting.contains_key(&remote) {
            let soonest = self.resting.iter().min_by_key(|(_, (u, _))| *u).map(|(a, _)| *a);
            if let Some(a) = soonest {
                self.resting.remove(&a);
            }
        }
        tracing::debug!(%remote, ?wait, "503 with Retry-After: the address rests");
        self.resting.insert(remote, (until, response.clone()));
    }

    /// A stream connection ended or could not be opened: requests sent to
    /// its peer and not yet answered fail (§17.1.4) with `failure`.
    fn connection_failed(&mut self, now: Instant, key: (Transport, SocketAddr), failure: &RequestError) {
        if !key.0.is_reliable() {
            return;
        }
        let hit: Vec<(RequestId, ClientId)> = self
            .pending
            .iter()
            .filter_map(|(id, p)| match p.stage {
                Stage::Sent(client) if p.peer == Some(key) => Some((*id, client)),
                _ => None,
            })
            .collect();
        for (id, client) in hit {
            if let Some(p) = self.pending.get_mut(&id) {
                p.failure = Some(failure.clone());
            }
            self.transactions.transport_error(now, TxId::Client(client));
        }
        // The server role's branches over it fail too, at once (§16.9: as
        // a 503 for the best-response choice) rather than by Timer B.
        for client in self.proxy_branches_to(key) {
            self.transactions.transport_error(now, TxId::Client(client));
        }
    }

    /// Builds the request for `peer` (§8.1.1) and starts its client
    /// transaction.
    fn dispatch(&mut self, now: Instant, id: RequestId, mut peer: Peer) {
        let Some(forced) = self.pending.get(&id).map(|p| p.target_forced) else { return };
        let branch = self.transactions.new_branch();
        let mut bytes = self.build(id, &peer, &branch);
        // §18.1.1: a request over 1300 octets leaves UDP for TCP unless the
        // URI insists on UDP; rebuilt so that the Via says TCP.
        let transport = transport_for_size(peer.transport, forced, bytes.len());
        if transport != peer.transport {
            peer.transport = transport;
            bytes = self.build(id, &peer, &branch);
        }
        let reliable = peer.transport.is_reliable();
        let key = (peer.transport, peer.remote);
        let Some(p) = self.pending.get_mut(&id) else { return };
        p.last_peer = Some(peer.clone());
        // A new transaction: no provisional answer to it yet.
        p.provisional = false;
        match (p.request.method, p.origin, p.session) {
            (Method::Ack, _, session) => {
                // §17.1.1.3: the ACK of a 2xx has no transaction.
                let cseq = p.cseq;
                self.abandon(id);
                if let Some(s) = session {
                    self.ack_dispatched(now, s, cseq, bytes, peer);
                } else {
                    let _ = self.transport.send(now, &peer, Arc::from(bytes));
                }
                return;
            }
            (_, Origin::Invite, Some(s)) => self.session_sent(s, &bytes, &peer),
            (_, Origin::Subscribe, _) => {
                if let Some(s) = p.subscription {
                    self.subscription_sent(now, s, &bytes);
                }
            }
            _ => {}
        }
        match self.transactions.send_request(now, bytes, peer, reliable) {
            Ok(client) => {
                self.by_client.insert(client, id);
                if let Some(p) = self.pending.get_mut(&id) {
                    p.stage = Stage::Sent(client);
                    p.peer = Some(key);
                    if let (Origin::Register { .. }, Some(reg)) = (p.origin, self.registration.as_mut()) {
                        // A try to go back to the first registrar keeps
                        // the fallback's connection until it succeeds.
                        if !reg.returning {
                            reg.peer = Some(key);
                        }
                    }
                }
            }
            // The layer refuses only requests it cannot key, and `build`
            // always writes a branch and a CSeq.
            Err(e) => debug_assert!(false, "built request refused: {e}"),
        }
    }

    /// The sent-by for a Via over `transport`: a listening address of that
    /// transport, else any listening address, else a placeholder (the
    /// answer comes back on the connection, or to `received`/`rport`).
    fn sent_by(&self, transport: Transport) -> String {
        let listeners = self.transport.listeners();
        let pick = listeners.iter().find(|(t, _)| *t == transport).or_else(|| listeners.first());
        match pick {
            Some((_, a)) if !a.ip().is_unspecified() => a.to_string(),
            Some((_, a)) => format!("{PLACEHOLDER_HOST}:{}", a.port()),
            None => PLACEHOLDER_HOST.to_owned(),
        }
    }

    fn build(&self, id: RequestId, peer: &Peer, branch: &str) -> Vec<u8> {
        let sent_by = self.sent_by(peer.transport);
        let Some(p) = self.pending.get(&id) else { return Vec::new() };
        let (tag, call_id) = (&p.tag, &p.call_id);
        let r = &p.request;
        let mut buf = Vec::with_capacity(r.body.len() + 512);
        let mut w = MessageWriter::request(&mut buf, r.method, &r.uri);
        let via = format!("SIP/2.0/{} {sent_by};branch={branch};rport", peer.transport.as_str());
        w.header("Via", &via);
        w.header("Max-Forwards", "70");
        if let Some((from, to)) = &p.dialog_head {
            w.header("From", from);
            w.header("To", to);
        } else {
            match &self.config.display_name {
                Some(d) => w.header("From", format_args!("\"{d}\" <{}>;tag={tag}", self.config.aor)),
                None => w.header("From", format_args!("<{}>;tag={tag}", self.config.aor)),
            };
            w.header("To", format_args!("<{}>", p.to.as_deref().unwrap_or(&r.uri)));
        }
        w.header("Call-ID", call_id);
        w.header("CSeq", format_args!("{} {}", p.cseq, r.method.as_str()));
        for route in &p.routes {
            w.header("Route", route);
        }
        if p.contact {
            w.header("Contact", format_args!("<{}>", self.contact_for(peer.transport)));
        }
        if let Some(ua) = &self.config.user_agent {
            w.header("User-Agent", ua);
        }
        for (name, value) in &r.headers {
            w.header(name, value);
        }
        if let Some(ct) = &r.content_type {
            w.header("Content-Type", ct);
        }
        w.finish(&r.body);
        buf
    }

    /// Ends a request with its outcome.
    fn finish(&mut self, now: Instant, id: RequestId, result: Result<Response, RequestError>) {
        let client = self.pending.get(&id).and_then(Pending::client);
        let Some(p) = self.abandon(id) else { return };
        match (p.origin, p.session) {
            (Origin::App, session) => {
                if let Some(s) = session {
                    self.in_session_outcome(now, s, &result);
                }
                self.out.push_back(Output::Event(Event::Outcome { request: id, result }));
            }
            (Origin::Invite | Origin::Reinvite, Some(s)) => self.invite_finished(now, s, p, client, result),
            (Origin::Bye, Some(s)) => self.bye_finished(now, s),
            (Origin::Update, Some(s)) => self.update_finished(now, s, result),
            (Origin::Subscribe | Origin::Notify, _) => {
                if let Some(s) = p.subscription {
                    self.subscription_finished(now, s, result);
                }
            }
            (Origin::Invite | Origin::Reinvite | Origin::Bye | Origin::Ack | Origin::Detached, _) => {}
            (Origin::Prack | Origin::Update, _) => {}
            (Origin::Register { unregister }, _) => {
                // Only the REGISTER the registration waits for counts.
                if self.registration.as_ref().is_some_and(|r| r.request == Some(id)) {
                    self.registered(now, unregister, result, p.peer);
                }
            }
        }
        if !self.shutting_down {
            self.start_queued();
        }
    }

    /// A new request handed up by the transaction layer, with its parse:
    /// the checks of §8.2 and what follows from them (`uas::Verdict`).
    fn incoming_request(
        &mut self,
        now: Instant,
        server: ServerId,
        request: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) {
        if self.serve_request(now, server, request, m, source) {
            return;
        }
        let extensions: Vec<&str> = self.config.extensions.iter().map(String::as_str).collect();
        let accept: Vec<&str> = self.config.accept.iter().map(String::as_str).collect();
        let abilities = Abilities {
            handled: &self.config.handle_methods,
            accept: &accept,
            extensions: &extensions,
            events: !self.config.events.is_empty() || self.config.server.is_some(),
            refer: self.config.events.iter().any(|e| e == "refer"),
        };
        match abilities.judge(m) {
            Verdict::Absorb => {}
            Verdict::Subscription => {
                if !self.subscription_request(now, server, request, m, source) {
                    self.session_request(now, server, request, m, source);
                }
            }
            Verdict::Session => self.session_request(now, server, request, m, source),
            Verdict::Reply { code, reason, headers } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                self.answer_with(now, server, m, uas::status(code), &reason, &headers);
            }
            Verdict::Message => {
                let event = Event::Message {
                    from: m.from().and_then(Result::ok).map(|a| a.uri().to_string()).unwrap_or_default(),
                    content_type: m.content_type().and_then(Result::ok).map(|t| t.to_string()),
                    body: m.body().to_vec(),
                    source,
                    request: request.clone(),
                    session: None,
                };
                self.answer(now, server, m, uas::status(200), "OK");
                self.out.push_back(Output::Event(event));
            }
            Verdict::Deliver => {
                let method = m.method().map(|x| x.as_str().to_owned()).unwrap_or_default();
                let deadline = now + self.config.answer_within;
                self.incoming.insert(server, (request.clone(), deadline));
                self.answer_deadlines.insert((deadline, server));
                self.out.push_back(Output::Event(Event::Incoming {
                    incoming: IncomingId(server),
                    method,
                    source,
                    request: request.clone(),
                    session: None,
                }));
            }
        }
    }

    fn transaction_event(&mut self, now: Instant, e: transaction::Event, arrived: Arrived<'_, '_>) {
        use transaction::Event as E;
        match e {
            E::Response { client, response } => {
                if self.proxy_response(now, client, &response) {
                    return;
                }
                let Some(&id) = self.by_client.get(&client) else {
                    // A 2xx copy (or another fork's) for an answered INVITE.
                    if let Some(&s) = self.sessions.invite_clients.get(&client) {
                        self.session_2xx_again(now, s, &response);
                    }
                    return;
                };
                let Some(response) = Response::from_bytes(&response) else { return };
                let (origin, session) =
                    self.pending.get(&id).map_or((Origin::Detached, None), |p| (p.origin, p.session));
                if response.code < 200 {
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.provisional = true;
                    }
                    match (origin, session) {
                        (Origin::Invite, Some(s)) => {
                            let conn = self.responding.and_then(|src| src.conn);
                            self.session_progress(now, s, response, conn);
                        }
                        (Origin::App, _) => {
                            self.out.push_back(Output::Event(Event::Provisional { request: id, response }));
                        }
                        _ => {}
                    }
                } else if matches!(response.code, 401 | 407) && self.authenticate(now, id, &response) {
                    // Sent again with credentials.
                } else if response.code < 300 {
                    self.finish(now, id, Ok(response));
                } else if response.code == 503 {
                    // RFC 3263 §4.3, §21.5.4: the next address, and this
                    // one rests for its Retry-After.
                    self.rest(now, id, &response);
                    let e = RequestError::Failure(response);
                    if !self.fail_over(now, id, &e) {
                        self.finish(now, id, Err(e));
                    }
                } else {
                    self.finish(now, id, Err(RequestError::Failure(response)));
                }
            }
            E::Timeout { tx: TxId::Client(client) } => {
                if self.proxy_client_failed(now, client, true) {
                    return;
                }
                if let Some(&id) = self.by_client.get(&client) {
                    // Timer B or F (64·T1): RFC 3263 §4.3, the next address.
                    if !self.fail_over(now, id, &RequestError::Timeout) {
                        self.finish(now, id, Err(RequestError::Timeout));
                    }
                }
            }
            E::TransportError { tx: TxId::Client(client) } => {
                if self.proxy_client_failed(now, client, false) {
                    return;
                }
                if let Some(&id) = self.by_client.get(&client) {
                    let failure = self
                        .pending
                        .get_mut(&id)
                        .and_then(|p| p.failure.take())
                        .unwrap_or(RequestError::ConnectionFailed(CloseReason::Closed));
                    // §17.1.4 / RFC 3263 §4.3: the next address.
                    if !self.fail_over(now, id, &failure) {
                        self.finish(now, id, Err(failure));
                    }
                }
            }
            E::Request { server, request, merged } => {
                // A BYE for a session shutdown keeps for its ACK ends it.
                if self.shutting_down && !merged && self.sessions.len() > 0 {
                    if let Some(source) = self.arriving {
                        let handled = match arrived {
                            Some((bytes, m)) if bytes == &request[..] => {
                                self.shutdown_bye(now, server, &request, m, source)
                            }
                            _ => Message::parse(&request)
                                .is_ok_and(|m| self.shutdown_bye(now, server, &request, &m, source)),
                        };
                        if handled {
                            return;
                        }
                    }
                }
                // The last NOTIFY of a subscription shutdown unsubscribed.
                if self.shutting_down && !merged && self.subscriptions.len() > 0 {
                    if let (Some(source), Ok(m)) = (self.arriving, Message::parse(&request)) {
                        let ours = matches!(m.method(), Some(Method::Notify | Method::Subscribe));
                        if ours && self.subscription_request(now, server, &request, &m, source) {
                            return;
                        }
                    }
                }
                if self.shutting_down || merged {
                    // §8.2.2.2: a merged request gets 482; while shutting
                    // down, 503.
                    let (code, reason) =
                        if merged { (LOOP_DETECTED, "Loop Detected") } else { (UNAVAILABLE, "Service Unavailable") };
                    self.answer_bytes(now, server, &request, code, reason);
                    return;
                }
                let Some(source) = self.arriving else { return };
                // Past capacity, new work is refused here (overload.rs).
                if self.overload_refuses(now, server, &request, arrived) {
                    return;
                }
                match arrived {
                    Some((bytes, m)) if bytes == &request[..] => {
                        self.incoming_request(now, server, &request, m, source);
                    }
                    _ => {
                        let Ok(m) = Message::parse(&request) else { return };
                        self.incoming_request(now, server, &request, &m, source);
                    }
                }
            }
            E::Terminated { tx: TxId::Server(server) } => {
                self.proxy_terminated(None, Some(server));
                if let Some((_, deadline)) = self.incoming.remove(&server) {
                    self.answer_deadlines.remove(&(deadline, server));
                }
            }
            E::Terminated { tx: TxId::Client(client) } => {
                self.proxy_terminated(Some(client), None);
                self.by_client.remove(&client);
                self.sessions.invite_clients.remove(&client);
            }
            E::Ack { request } => match arrived {
                Some((bytes, m)) if bytes == &request[..] => {
                    if !self.serve_ack(now, m) {
                        self.ack_arrived(now, m);
                    }
                }
                _ => {
                    if let Ok(m) = Message::parse(&request) {
                        if !self.serve_ack(now, &m) {
                            self.ack_arrived(now, &m);
                        }
                    }
                }
            },
            E::StrayResponse { response } if !self.proxy_stray(now, &response) => {
                self.stray_response(now, &response);
            }
            _ => {}
        }
    }
}
