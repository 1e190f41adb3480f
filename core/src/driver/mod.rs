//! What the three runtime crates share, written once on `futures`
//! (feature `driver`; DESIGN.md, "Runtimes").
//!
//! A runtime owns sockets, timers and its event loop. Everything else that
//! would be the same in all three lives here:
//!
//! - the **command channel** from the application's [`Handle`] to the
//!   [`Driver`], and the futures that complete when the core reports a
//!   request's outcome ([`Handle::send`]);
//! - the **event stream** ([`Events`]) the application reads;
//! - the **dispatch** of the core's outputs onto a runtime's [`Io`]
//!   (datagram, connect, write, close, resolve) and of the runtime's
//!   [`Input`]s into the core, with the bookkeeping of connections still
//!   being opened;
//! - the async **run loop** ([`Driver::run`]) for the runtime crates built
//!   on futures: wait for an input, a command or the core's deadline,
//!   pass the time it woke at, drain every output;
//! - the **socket loops** of the async runtimes ([`DatagramReaders`],
//!   polled by the run loop itself, [`accept_streams`], and [`read_stream`] / [`write_stream`] over
//!   `futures-io`), and small policies ([`UdpSockets`]: which socket sends
//!   a datagram; [`answer_from`]: how a system lookup becomes an [`Answer`]).
//!
//! It owns no sockets, threads, clocks or files: the runtime hands the time
//! in (through [`AsyncIo::now`] or the `now` arguments), and the
//! application hands TLS material in as bytes
//! ([`TlsConfig`](crate::transport::TlsConfig)).
//!
//! A runtime's bind function, in outline:
//!
//! ```text
//! let mut driver = Driver::new(config, entropy)?;
//! for (transport, addr) in driver.listeners() {
//!     let bound = my_io.listen(transport, addr, driver.inputs())?;
//!     driver.add_listener(transport, bound);
//! }
//! let (handle, events) = driver.start(now, unix_time);
//! spawn(driver.run(my_io));
//! ```

use crate::endpoint::{
    response_worker, Body, ConfigError, Endpoint, EndpointConfig, Event, IncomingId, Output, Request, RequestError,
    RequestId, RespondError, Response, SendError, SessionError, SessionId, Subscribe, SubscriptionError,
    SubscriptionId,
};
use crate::transport::{Answer, ConnId, Lookup, QueryId, Transport, WorkerMessage};
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use std::collections::{BTreeMap, BTreeSet};
use std::future::{poll_fn, Future};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use subscriptions::SubscriptionAction;

mod subscriptions;

/// How long a runtime waits for an outbound TCP connection before it
/// reports the attempt failed: 64·T1 with the default T1, the time a
/// request over it would wait for its answer anyway (§17.1.1.2).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(32);

/// How many bytes a runtime reads from a stream at once: what the core
/// takes in one piece ([`crate::transport::INTAKE_CHUNK`]).
pub const READ_CHUNK: usize = crate::transport::INTAKE_CHUNK;

/// How long shutdown waits for queued stream writes (the last responses,
/// TLS close_notify) to reach the peer before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How many runtime inputs may wait for the driver; a full queue makes the
/// runtime's readers wait (and the kernel's buffers take the pressure).
const INPUT_QUEUE: usize = 1024;

/// What a runtime's IO tasks report to the driver. `S` is the runtime's
/// stream type (a TCP connection).
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<S> {
    /// A datagram arrived on the UDP socket bound at `local`.
    Datagram {
        /// The socket's bound address.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A listener accepted a connection.
    Accepted {
        /// TCP or TLS (the listener's transport).
        transport: Transport,
        /// The peer.
        remote: SocketAddr,
        /// The connection.
        stream: S,
    },
    /// An [`Io::connect`] succeeded.
    Connected {
        /// The connection's handle.
        conn: ConnId,
        /// The connection.
        stream: S,
    },
    /// An [`Io::connect`] failed or timed out.
    ConnectFailed {
        /// The connection's handle.
        conn: ConnId,
    },
    /// Bytes arrived on a connection.
    StreamData {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A connection reached its end or failed.
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// Another worker of the same server handed a message over (issue 19;
    /// [`Driver::set_workers`]).
    Worker {
        /// What to do with it.
        message: WorkerMessage,
    },
    /// An [`Io::resolve`] finished.
    Resolved {
        /// The query.
        query: QueryId,
        /// What the lookup found.
        answer: Answer,
    },
}

/// The sending side of the driver's input queue; each IO task keeps a clone.
#[derive(Debug)]
pub struct Inputs<S>(mpsc::Sender<Input<S>>);

impl<S> Clone for Inputs<S> {
    fn clone(&self) -> Self {
        Inputs(self.0.clone())
    }
}

impl<S> Inputs<S> {
    /// Queues `input`, waiting while the queue is full; `false` once the
    /// driver has stopped (the task should end).
    pub async fn send(&mut self, input: Input<S>) -> bool {
        if poll_fn(|cx| self.0.poll_ready(cx)).await.is_err() {
            return false;
        }
        self.0.start_send(input).is_ok()
    }

    /// Queues `input` without waiting, for a report made on the driver's
    /// own thread (where waiting for room would wait forever). Every clone
    /// has room for one input of its own, so call this on a fresh clone.
    pub fn try_send(&mut self, input: Input<S>) -> bool {
        self.0.try_send(input).is_ok()
    }
}

/// The IO a runtime performs for the driver. Every method returns at once;
/// what takes time (connecting, resolving) runs in the runtime's own task
/// or thread and reports back through [`Inputs`].
pub trait Io {
    /// The runtime's TCP stream type.
    type Stream;

    /// Sends a datagram from the UDP socket [`UdpSockets::send`] chooses.
    fn send_datagram(&mut self, local: Option<SocketAddr>, remote: SocketAddr, bytes: &[u8]);
    /// Starts connecting to `remote` (within [`CONNECT_TIMEOUT`]); reports
    /// [`Input::Connected`] or [`Input::ConnectFailed`].
    fn connect(&mut self, conn: ConnId, remote: SocketAddr);
    /// Starts reading and writing a connected or accepted stream; reports
    /// [`Input::StreamData`] and, at its end (the peer's FIN, a read or
    /// write error), [`Input::Closed`].
    fn adopt(&mut self, conn: ConnId, stream: Self::Stream);
    /// Queues bytes for a connection (in order, after what is queued).
    fn write(&mut self, conn: ConnId, bytes: Vec<u8>);
    /// Closes a connection (or abandons connecting it) after queued writes,
    /// and lets go of everything the runtime holds for it: the socket, its
    /// reader and writer, its queue. The driver calls it once for every
    /// connection: when the core closes it, and after the runtime reported
    /// [`Input::Closed`]; a call for a connection already let go does
    /// nothing. No report follows.
    fn close(&mut self, conn: ConnId);
    /// Looks up the A and AAAA records of `name` (see [`answer_from`]);
    /// reports [`Input::Resolved`].
    fn resolve(&mut self, query: QueryId, name: String);
}

/// What [`Driver::run`] needs besides [`Io`]: the clock, a timer and a
/// graceful end.
pub trait AsyncIo: Io {
    /// A timer future (its output is ignored).
    type Sleep: Future;
    /// The monotonic time now.
    fn now(&self) -> Instant;
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;
    /// Stops listeners and readers, waits up to [`SHUTDOWN_GRACE`] for
    /// queued writes, and ends every task the runtime started.
    fn shutdown(&mut self) -> impl Future<Output = ()>;
    /// A datagram waiting on one of the runtime's UDP sockets, received
    /// into `buf`; `Pending` (the waker kept) when none is. The driver
    /// reads datagrams itself this way, straight into one buffer it reuses
    /// — no task, copy or queue per datagram ([`DatagramReaders`] does the
    /// polling).
    fn poll_datagram(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Received>;
}

/// A datagram a runtime received ([`AsyncIo::poll_datagram`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The socket's bound address.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// How many bytes of the buffer it filled.
    pub len: usize,
    /// When it reached the machine, if the socket tells (kernel receive
    /// timestamps): the driver then hands the core how long it waited, the
    /// load signal of overload control ([`Endpoint::handle_datagram_received`]).
    pub at: Option<Instant>,
}

/// Why a request sent through a runtime did not end in a 2xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint refused to send it (bad URI, shutting down…).
    #[error(transparent)]
    Refused(#[from] SendError),
    /// It was sent and failed (timeout, failure response, connection…).
    #[error(transparent)]
    Failed(#[from] RequestError),
    /// The session refused it ([`Handle::send_in_session`]: no such
    /// session, or no dialog yet).
    #[error(transparent)]
    Session(SessionError),
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Error {
        match e {
            SessionError::Send(e) => Error::Refused(e),
            other => Error::Session(other),
        }
    }
}

/// Why a runtime could not bind an endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening address could not be bound.
    #[error("cannot listen on {} {addr}: {source}", .transport.as_str())]
    Listen {
        /// The transport.
        transport: Transport,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A worker thread or its runtime could not be started.
    #[error("cannot start a worker: {0}")]
    Worker(std::io::Error),
}

enum Command {
    Send {
        request: Box<Request>,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Respond {
        incoming: IncomingId,
        code: u16,
        reason: String,
        reply: oneshot::Sender<Result<(), RespondError>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    Unregister,
    Reregister,
    Invite {
        request: Box<Request>,
        reply: oneshot::Sender<Result<SessionId, SendError>>,
    },
    Session {
        session: SessionId,
        action: SessionAction,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    SendInSession {
        session: SessionId,
        request: Box<Request>,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Subscribe {
        sub: Box<Subscribe>,
        reply: oneshot::Sender<Result<SubscriptionId, SendError>>,
    },
    Refer {
        session: SessionId,
        refer_to: String,
        reply: oneshot::Sender<Result<SubscriptionId, SubscriptionError>>,
    },
    Subscription {
        subscription: SubscriptionId,
        action: SubscriptionAction,
        reply: oneshot::Sender<Result<(), SubscriptionError>>,
    },
}

/// A session command's arguments, owned to cross the channel.
enum SessionAction {
    Ring { code: u16, body: Option<Body> },
    Accept { body: Option<Body> },
    Reject { code: u16, reason: String, headers: Vec<(String, String)> },
    Hangup,
    Reinvite { body: Option<Body> },
    Acknowledge { body: Option<Body> },
}

/// What woke the driver: an application command or a runtime input.
pub struct Message<S>(Woken<S>);

enum Woken<S> {
    Command(Command),
    /// Every [`Handle`] is gone: nobody can use the endpoint any more.
    Abandoned,
    Input(Input<S>),
}

/// The application's side: a cheap, cloneable handle to a running endpoint.
/// The runtime crates export it as their `Endpoint`.
///
/// ```text
/// let (endpoint, mut events) = runtime_crate::bind(config).await?;
/// let ok = endpoint.send(Request::message("sip:bob@127.0.0.1:5060", "text/plain", b"hi".to_vec())).await?;
/// endpoint.shutdown().await;
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    local: Arc<[(Transport, SocketAddr)]>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Send { .. } => "Send",
            Command::Respond { .. } => "Respond",
            Command::Shutdown { .. } => "Shutdown",
            Command::Unregister => "Unregister",
            Command::Reregister => "Reregister",
            Command::Invite { .. } => "Invite",
            Command::Subscribe { .. } => "Subscribe",
            Command::Refer { .. } => "Refer",
            Command::Subscription { action, .. } => action.name(),
            Command::Session { action, .. } => match action {
                SessionAction::Ring { .. } => "Ring",
                SessionAction::Accept { .. } => "Accept",
                SessionAction::Reject { .. } => "Reject",
                SessionAction::Hangup => "Hangup",
                SessionAction::Reinvite { .. } => "Reinvite",
                SessionAction::Acknowledge { .. } => "Acknowledge",
            },
            Command::SendInSession { .. } => "SendInSession",
        })
    }
}

impl Handle {
    /// Sends `request`; resolves to the 2xx, or to why there is none.
    /// Dropping the future does not cancel the request.
    pub fn send(&self, request: Request) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.unbounded_send(Command::Send { request: Box::new(request), reply }).is_ok();
        async move {
            if !queued {
                return Err(Error::Refused(SendError::ShuttingDown));
            }
            answer.await.unwrap_or(Err(Error::Refused(SendError::ShuttingDown)))
        }
    }

    /// Answers an incoming request ([`Event::Incoming`]) with `code`.
    pub fn respond(
        &self,
        incoming: IncomingId,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<(), RespondError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let command = Command::Respond { incoming, code, reason: reason.to_owned(), reply };
        let queued = self.commands.unbounded_send(command).is_ok();
        async move {
            if !queued {
                return Err(RespondError::Unknown);
            }
            answer.await.unwrap_or(Err(RespondError::Unknown))
        }
    }

    /// Shuts the endpoint down: outstanding requests fail with
    /// [`RequestError::ShutDown`], unanswered incoming requests get 503,
    /// connections and listeners close. Resolves when every task the
    /// runtime started has ended (at once if that already happened).
    ///
    /// A call this endpoint answered whose ACK has not come yet holds the
    /// shutdown until the ACK arrives (then BYE) or the 2xx is given up
    /// after 64·T1, 32 s by default (RFC 3261 §15: no BYE before the
    /// ACK); so does a registration's removal (see `Endpoint::shutdown`).
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done, finished) = oneshot::channel();
        let queued = self.commands.unbounded_send(Command::Shutdown { done }).is_ok();
        async move {
            if queued {
                // A dropped sender means the driver ended: also done.
                let _ = finished.await;
            }
        }
    }

    /// Removes the registration (REGISTER with `Expires: 0`); the outcome
    /// arrives as [`Event::Registration`].
    pub fn unregister(&self) {
        let _ = self.commands.unbounded_send(Command::Unregister);
    }

    /// Registers again (after [`unregister`](Self::unregister), or at once
    /// after a failure).
    pub fn reregister(&self) {
        let _ = self.commands.unbounded_send(Command::Reregister);
    }

    /// Starts a session: sends the INVITE `request` (see
    /// [`Request::invite`]; an empty body makes a late offer) and resolves
    /// to the session's handle at once, before any answer. What happens
    /// next comes through [`Events`] as [`Event::Session`] events:
    /// [`SessionEvent::Progress`](crate::endpoint::SessionEvent::Progress),
    /// [`Answered`](crate::endpoint::SessionEvent::Answered) (the ACK is
    /// sent) or [`Ended`](crate::endpoint::SessionEvent::Ended).
    ///
    /// ```text
    /// let call = endpoint.invite(Request::invite("sip:bob@127.0.0.1:5060", "application/sdp", offer)).await?;
    /// while let Some(event) = events.next().await {
    ///     if let Event::Session { session, event: SessionEvent::Answered(ok) } = event {
    ///         println!("{} {}", ok.code, ok.reason);
    ///         endpoint.hangup(session).await?;
    ///     }
    /// }
    /// ```
    pub fn invite(&self, request: Request) -> impl Future<Output = Result<SessionId, SendError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.unbounded_send(Command::Invite { request: Box::new(request), reply }).is_ok();
        async move {
            if !queued {
                return Err(SendError::ShuttingDown);
            }
            answer.await.unwrap_or(Err(SendError::ShuttingDown))
        }
    }

    fn session_command(
        &self,
        session: SessionId,
        action: SessionAction,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.unbounded_send(Command::Session { session, action, reply }).is_ok();
        async move {
            // A stopped driver has ended every session.
            if !queued {
                return Err(SessionError::Unknown);
            }
            answer.await.unwrap_or(Err(SessionError::Unknown))
        }
    }

    /// Sends a provisional response (101–199, a body for early media) to
    /// an incoming session ([`Event::IncomingSession`]); see
    /// [`Endpoint::ring`].
    pub fn ring(
        &self,
        session: SessionId,
        code: u16,
        body: Option<&Body>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        self.session_command(session, SessionAction::Ring { code, body: body.cloned() })
    }

    /// Accepts an incoming session or the peer's re-INVITE with 200 and
    /// `body` (the answer, or the offer when the INVITE had none); the
    /// caller's ACK arrives as
    /// [`SessionEvent::Confirmed`](crate::endpoint::SessionEvent::Confirmed).
    /// See [`Endpoint::accept`].
    ///
    /// ```text
    /// if let Some(Event::IncomingSession { session, .. }) = events.next().await {
    ///     endpoint.accept(session, Some(&Body::sdp(answer))).await?;
    /// }
    /// ```
    pub fn accept(
        &self,
        session: SessionId,
        body: Option<&Body>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        self.session_command(session, SessionAction::Accept { body: body.cloned() })
    }

    /// Rejects an incoming session or the peer's re-INVITE with a final
    /// `code` of 300–699 and extra header fields; see [`Endpoint::reject`].
    pub fn reject(
        &self,
        session: SessionId,
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        let headers = headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        self.session_command(session, SessionAction::Reject { code, reason: reason.to_owned(), headers })
    }

    /// Ends a session: CANCEL before the answer, BYE after it, 603 to an
    /// incoming one not answered yet; see [`Endpoint::hangup`]. The end
    /// comes as [`SessionEvent::Ended`](crate::endpoint::SessionEvent::Ended).
    pub fn hangup(&self, session: SessionId) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        self.session_command(session, SessionAction::Hangup)
    }

    /// Sends a re-INVITE with a new offer on an established session; its
    /// end comes as
    /// [`SessionEvent::Updated`](crate::endpoint::SessionEvent::Updated).
    /// See [`Endpoint::reinvite`].
    pub fn reinvite(
        &self,
        session: SessionId,
        body: Option<Body>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        self.session_command(session, SessionAction::Reinvite { body })
    }

    /// Sends the ACK for a late offer with the answer in `body`; see
    /// [`Endpoint::acknowledge`].
    pub fn acknowledge(
        &self,
        session: SessionId,
        body: Option<Body>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        self.session_command(session, SessionAction::Acknowledge { body })
    }

    /// Sends a request inside a session's dialog (INFO, MESSAGE, UPDATE…;
    /// not INVITE, ACK, CANCEL or BYE); resolves like [`send`](Self::send)
    /// to its 2xx or why there is none ([`Error::Session`] when the session
    /// refused it). See [`Endpoint::send_in_session`].
    pub fn send_in_session(
        &self,
        session: SessionId,
        request: Request,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let command = Command::SendInSession { session, request: Box::new(request), reply };
        let queued = self.commands.unbounded_send(command).is_ok();
        async move {
            if !queued {
                return Err(Error::Refused(SendError::ShuttingDown));
            }
            answer.await.unwrap_or(Err(Error::Refused(SendError::ShuttingDown)))
        }
    }

    /// The addresses the endpoint listens on (ports chosen by the OS
    /// filled in), per transport.
    pub fn local_addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.local
    }

    /// The first address the endpoint listens on over `transport`.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.local.iter().find(|(t, _)| *t == transport).map(|(_, a)| *a)
    }
}

/// The application's events (everything but request outcomes, which
/// complete [`Handle::send`]'s futures). Ends after [`Event::ShutDown`].
#[derive(Debug)]
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Events {
    /// The next event; `None` once the endpoint has shut down.
    pub async fn next(&mut self) -> Option<Event> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl Stream for Events {
    type Item = Event;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_recv(cx)
    }
}

/// The endpoint core with its command channel and input queue, driven by a
/// runtime: [`handle`](Self::handle) each [`Message`] and
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout),
/// until [`is_finished`](Self::is_finished); async runtimes just call
/// [`run`](Self::run).
pub struct Driver<S> {
    endpoint: Endpoint,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_tx: Option<mpsc::UnboundedSender<Command>>,
    handles_alive: bool,
    inputs: mpsc::Receiver<Input<S>>,
    inputs_tx: Inputs<S>,
    events: mpsc::UnboundedSender<Event>,
    events_rx: Option<mpsc::UnboundedReceiver<Event>>,
    listening: Vec<(Transport, SocketAddr)>,
    /// Requests whose futures wait for their outcome.
    waiting: BTreeMap<RequestId, oneshot::Sender<Result<Response, Error>>>,
    /// Connections the runtime is still opening.
    connecting: BTreeSet<ConnId>,
    /// Shutdown callers waiting for the end.
    closing: Vec<oneshot::Sender<()>>,
    finished: bool,
    /// This worker's id and every worker's input queue, by id, when
    /// several serve together ([`Driver::set_workers`]).
    workers: Option<(u16, Vec<Inputs<S>>)>,
}

impl<S> Driver<S> {
    /// A driver for an endpoint configured by `config`. `entropy` is fresh
    /// randomness from the runtime, the seed when `config.seed` is 0 (the
    /// driver draws none itself: see the sans-IO contract).
    pub fn new(mut config: EndpointConfig, entropy: u64) -> Result<Driver<S>, ConfigError> {
        if config.seed == 0 {
            config.seed = entropy;
        }
        let endpoint = Endpoint::new(config)?;
        let (commands_tx, commands) = mpsc::unbounded();
        let (inputs_tx, inputs) = mpsc::channel(INPUT_QUEUE);
        let (events, events_rx) = mpsc::unbounded();
        Ok(Driver {
            endpoint,
            commands,
            commands_tx: Some(commands_tx),
            handles_alive: true,
            inputs,
            inputs_tx: Inputs(inputs_tx),
            events,
            events_rx: Some(events_rx),
            listening: Vec::new(),
            waiting: BTreeMap::new(),
            connecting: BTreeSet::new(),
            closing: Vec::new(),
            finished: false,
            workers: None,
        })
    }

    /// The addresses to bind: the configured ones, plus an ephemeral UDP
    /// socket when none is configured, so that requests over UDP have a
    /// socket to leave from and a port for their answers. That socket is
    /// bound on the address of the first configured listener (the
    /// application said where to listen: nowhere else), or on `0.0.0.0`
    /// when none is configured.
    pub fn listeners(&self) -> Vec<(Transport, SocketAddr)> {
        let mut all = self.endpoint.config().listen.clone();
        if !all.iter().any(|(t, _)| *t == Transport::Udp) {
            let ip = all.first().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |(_, a)| a.ip());
            all.push((Transport::Udp, SocketAddr::new(ip, 0)));
        }
        all
    }

    /// A sender for the runtime's IO tasks.
    pub fn inputs(&self) -> Inputs<S> {
        self.inputs_tx.clone()
    }

    /// The runtime bound `local` (the OS's choice for port 0).
    pub fn add_listener(&mut self, transport: Transport, local: SocketAddr) {
        self.endpoint.add_listener(transport, local);
        self.listening.push((transport, local));
    }

    /// Makes this driver worker `me` of several serving together (issue
    /// 19; its endpoint configured with the matching
    /// [`crate::endpoint::Worker`]): `peers` are every worker's input
    /// queues by id (this one's included). A datagram read here that is a
    /// response to another worker's request ([`response_worker`]) goes to
    /// that worker's queue as it came; if the queue is full it is dropped,
    /// as the kernel drops a datagram no socket buffer holds (the peer
    /// retransmits).
    pub fn set_workers(&mut self, me: u16, peers: Vec<Inputs<S>>) {
        self.workers = Some((me, peers));
    }

    /// Carries a message to another worker's queue (dropped, as a lost
    /// datagram, if that queue is full).
    fn carry_to_worker(&mut self, worker: u16, message: WorkerMessage) {
        let queue = self.workers.as_mut().and_then(|(_, peers)| peers.get_mut(usize::from(worker)));
        let Some(queue) = queue else {
            tracing::debug!(worker, "no such worker: a message handed over is dropped");
            return;
        };
        if !queue.try_send(Input::Worker { message }) {
            tracing::debug!(worker, "worker queue full: a message handed over is dropped");
        }
    }

    /// Hands a datagram to the worker it belongs to; `false`: it is ours.
    fn hand_over(&mut self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> bool {
        let Some((me, peers)) = self.workers.as_mut() else { return false };
        let Some(worker) = response_worker(bytes).filter(|w| w != me) else { return false };
        let Some(queue) = peers.get_mut(usize::from(worker)) else { return false };
        if !queue.try_send(Input::Datagram { local, remote, bytes: bytes.to_vec() }) {
            tracing::debug!(worker, "worker queue full: a response handed over is dropped");
        }
        true
    }

    /// The core (for statistics and tests).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Ready to run: tells the core the wall-clock time (`unix`, for TLS
    /// certificate validity) and returns the application's handle and
    /// event stream. A second call returns a handle and an empty stream.
    pub fn start(&mut self, now: Instant, unix: Duration) -> (Handle, Events) {
        self.endpoint.set_wall_clock(now, unix);
        // A registered endpoint sends its first REGISTER now; its outputs
        // wait in the core for the run loop's first drain.
        self.endpoint.start(now);
        let commands = self.commands_tx.take().unwrap_or_else(|| mpsc::unbounded().0);
        let events = self.events_rx.take().unwrap_or_else(|| mpsc::unbounded().1);
        (Handle { commands, local: self.listening.clone().into() }, Events(events))
    }

    /// Polls for the next command or input (commands first, so a flood of
    /// datagrams cannot starve the application).
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Message<S>> {
        if self.handles_alive {
            match Pin::new(&mut self.commands).poll_next(cx) {
                Poll::Ready(Some(c)) => return Poll::Ready(Message(Woken::Command(c))),
                Poll::Ready(None) => {
                    self.handles_alive = false;
                    return Poll::Ready(Message(Woken::Abandoned));
                }
                Poll::Pending => {}
            }
        }
        // The driver holds a sender itself, so this queue never ends.
        match Pin::new(&mut self.inputs).poll_next(cx) {
            Poll::Ready(Some(i)) => Poll::Ready(Message(Woken::Input(i))),
            _ => Poll::Pending,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// Whether the endpoint has shut down; the runtime then ends its tasks
    /// and calls [`finish`](Self::finish).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds one command or input into the core, then performs every output.
    pub fn handle<I: Io<Stream = S>>(&mut self, now: Instant, message: Message<S>, io: &mut I) {
        match message.0 {
            Woken::Command(c) => self.command(now, c),
            // Nobody holds the endpoint any more: shut it down.
            Woken::Abandoned => self.endpoint.shutdown(now),
            Woken::Input(i) => self.input(now, i, io),
        }
        self.drain(now, io);
    }

    /// Performs what the core asked for before the loop began (a
    /// registered endpoint's first REGISTER); call once, first.
    pub fn prime<I: Io<Stream = S>>(&mut self, now: Instant, io: &mut I) {
        self.drain(now, io);
    }

    /// Time passed (`now` is when the runtime woke, not the deadline).
    pub fn handle_timeout<I: Io<Stream = S>>(&mut self, now: Instant, io: &mut I) {
        self.endpoint.handle_timeout(now);
        self.drain(now, io);
    }

    /// The runtime has ended its tasks: wakes the shutdown callers.
    pub fn finish(&mut self) {
        for done in self.closing.drain(..) {
            let _ = done.send(());
        }
    }

    /// The whole loop for a futures runtime: waits for a command, an input
    /// or the core's deadline, feeds it in with the time it woke at, and
    /// drains every output; after shutdown, ends the runtime's tasks.
    pub async fn run<I: AsyncIo<Stream = S>>(mut self, mut io: I) {
        self.prime(io.now(), &mut io);
        // The armed runtime timer and the deadline it is for. It is kept
        // while the core's next deadline stays the same: under load that
        // deadline (the oldest transaction's) outlives hundreds of
        // messages, and arming a runtime timer per message costs more
        // than handling the message.
        let mut timer: Option<(Instant, Pin<Box<I::Sleep>>)> = None;
        let mut datagram = vec![0u8; 65_535];
        while !self.finished {
            let deadline = self.endpoint.poll_timeout();
            // Due timers first, so that a stream of inputs cannot starve them.
            let now = io.now();
            if deadline.is_some_and(|d| d <= now) {
                self.handle_timeout(now, &mut io);
                continue;
            }
            match (deadline, &timer) {
                (Some(d), Some((at, _))) if *at == d => {}
                (Some(d), _) => timer = Some((d, Box::pin(io.sleep_until(d)))),
                (None, _) => timer = None,
            }
            let woken = poll_fn(|cx| {
                if let Poll::Ready(m) = self.poll_message(cx) {
                    return Poll::Ready(Woke::Message(m));
                }
                if let Poll::Ready(received) = io.poll_datagram(cx, &mut datagram) {
                    return Poll::Ready(Woke::Datagram(received));
                }
                match timer.as_mut().map(|(_, s)| s.as_mut().poll(cx)) {
                    Some(Poll::Ready(_)) => Poll::Ready(Woke::Timer),
                    _ => Poll::Pending,
                }
            })
            .await;
            let now = io.now();
            match woken {
                Woke::Message(m) => self.handle(now, m, &mut io),
                Woke::Datagram(Received { local, remote, len, at }) => {
                    let bytes = &datagram[..len];
                    if !self.hand_over(local, remote, bytes) {
                        match at {
                            Some(at) => self.endpoint.handle_datagram_received(now, at, local, remote, bytes),
                            None => self.endpoint.handle_datagram(now, local, remote, bytes),
                        }
                        self.drain(now, &mut io);
                    }
                }
                Woke::Timer => {
                    // Spent: the next turn arms a fresh one if needed.
                    timer = None;
                    self.handle_timeout(now, &mut io);
                }
            }
        }
        io.shutdown().await;
        self.finish();
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send { request, reply } => match self.endpoint.send_request(now, *request) {
                Ok(id) => {
                    self.waiting.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(Error::Refused(e)));
                }
            },
            Command::Respond { incoming, code, reason, reply } => {
                let _ = reply.send(self.endpoint.respond(now, incoming, code, &reason));
            }
            Command::Shutdown { done } => {
                self.closing.push(done);
                self.endpoint.shutdown(now);
            }
            Command::Unregister => self.endpoint.unregister(now),
            Command::Reregister => self.endpoint.reregister(now),
            Command::Invite { request, reply } => {
                let _ = reply.send(self.endpoint.invite(now, *request));
            }
            Command::Session { session, action, reply } => {
                let _ = reply.send(self.session_command(now, session, action));
            }
            Command::Subscribe { sub, reply } => {
                let _ = reply.send(self.endpoint.subscribe(now, *sub));
            }
            Command::Refer { session, refer_to, reply } => {
                let _ = reply.send(self.endpoint.refer(now, session, &refer_to));
            }
            Command::Subscription { subscription, action, reply } => {
                let _ = reply.send(action.run(&mut self.endpoint, now, subscription));
            }
            Command::SendInSession { session, request, reply } => {
                match self.endpoint.send_in_session(now, session, *request) {
                    Ok(id) => {
                        self.waiting.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::from(e)));
                    }
                }
            }
        }
    }

    fn session_command(&mut self, now: Instant, s: SessionId, action: SessionAction) -> Result<(), SessionError> {
        let ep = &mut self.endpoint;
        match action {
            SessionAction::Ring { code, body } => ep.ring(now, s, code, body.as_ref()),
            SessionAction::Accept { body } => ep.accept(now, s, body.as_ref()),
            SessionAction::Reject { code, reason, headers } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                ep.reject(now, s, code, &reason, &headers)
            }
            SessionAction::Hangup => ep.hangup(now, s),
            SessionAction::Reinvite { body } => ep.reinvite(now, s, body),
            SessionAction::Acknowledge { body } => ep.acknowledge(now, s, body),
        }
    }

    fn input<I: Io<Stream = S>>(&mut self, now: Instant, input: Input<S>, io: &mut I) {
        match input {
            Input::Datagram { local, remote, bytes } => self.endpoint.handle_datagram(now, local, remote, &bytes),
            Input::Accepted { transport, remote, stream } => {
                // `None`: over the connection limit; dropping the stream closes it.
                if let Some(conn) = self.endpoint.handle_accepted(now, transport, remote) {
                    io.adopt(conn, stream);
                }
            }
            Input::Connected { conn, stream } => {
                // A connection the core closed meanwhile is dropped unused.
                if self.connecting.remove(&conn) {
                    io.adopt(conn, stream);
                    self.endpoint.handle_connected(now, conn);
                }
            }
            Input::ConnectFailed { conn } => {
                if self.connecting.remove(&conn) {
                    self.endpoint.handle_connect_failed(now, conn);
                }
            }
            Input::StreamData { conn, bytes } => self.endpoint.handle_stream_data(now, conn, &bytes),
            Input::Closed { conn } => {
                self.endpoint.handle_closed(now, conn);
                // The core forgets a connection the runtime reported ended
                // and asks for no `Close` (there is nothing left for it to
                // close), but the runtime still holds its side: the socket,
                // the write queue and the writer. Release them now, or the
                // peer's FIN leaves the socket in CLOSE-WAIT with its
                // descriptor for as long as the process runs.
                self.connecting.remove(&conn);
                io.close(conn);
            }
            Input::Resolved { query, answer } => self.endpoint.handle_resolved(now, query, answer),
            Input::Worker { message } => self.endpoint.handle_worker_message(now, message),
        }
    }

    /// Performs every output of the core (the drain rule).
    fn drain<I: Io<Stream = S>>(&mut self, now: Instant, io: &mut I) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::Datagram { local, remote, bytes } => io.send_datagram(local, remote, &bytes),
                Output::Open { conn, remote, .. } => {
                    // TLS runs in the core: the runtime only connects TCP.
                    self.connecting.insert(conn);
                    io.connect(conn, remote);
                }
                Output::Write { conn, bytes } => io.write(conn, bytes),
                Output::Worker { worker, message } => self.carry_to_worker(worker, message),
                Output::Close { conn } => {
                    self.connecting.remove(&conn);
                    io.close(conn);
                }
                Output::Resolve { query, name, lookup } => match lookup {
                    Lookup::Ip => io.resolve(query, name),
                    // The runtimes look names up through the system
                    // resolver, which has no SRV; RFC 3263 §4.2 then
                    // goes on with A/AAAA records.
                    Lookup::Srv => self.endpoint.handle_resolved(now, query, Answer::NotFound),
                },
                Output::Event(e) => self.deliver(e),
            }
        }
    }

    fn deliver(&mut self, event: Event) {
        match event {
            Event::Outcome { request, result } => {
                if let Some(reply) = self.waiting.remove(&request) {
                    let _ = reply.send(result.map_err(Error::Failed));
                }
            }
            // Requests are followed through their futures; provisional
            // answers to them carry nothing an application acts on.
            Event::Provisional { request, response } => {
                tracing::debug!(?request, code = response.code, "provisional response");
            }
            other => {
                if matches!(other, Event::ShutDown) {
                    self.finished = true;
                }
                let _ = self.events.unbounded_send(other);
            }
        }
    }
}

impl<S> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("listening", &self.listening)
            .field("waiting", &self.waiting.len())
            .field("connecting", &self.connecting)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// A runtime's UDP sockets by bound address, and which one sends a
/// datagram: the one bound at `local` if named, else the first of the
/// remote's family.
#[derive(Debug)]
pub struct UdpSockets<T> {
    bound: Vec<SocketAddr>,
    sockets: Vec<T>,
}

impl<T> Default for UdpSockets<T> {
    fn default() -> Self {
        UdpSockets { bound: Vec::new(), sockets: Vec::new() }
    }
}

impl<T> UdpSockets<T> {
    /// Adds a socket bound at `local`.
    pub fn push(&mut self, local: SocketAddr, socket: T) {
        self.bound.push(local);
        self.sockets.push(socket);
    }

    /// The sockets with their bound addresses.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &T)> {
        self.bound.iter().copied().zip(&self.sockets)
    }

    /// Drops every socket.
    pub fn clear(&mut self) {
        self.bound.clear();
        self.sockets.clear();
    }

    /// Sends `bytes` to `remote` with `send` on the chosen socket. A failed
    /// send (a full buffer, say) loses the datagram as the network could;
    /// retransmission covers it (§17.1.2.2).
    pub fn send(
        &self,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        bytes: &[u8],
        send: impl FnOnce(&T, &[u8], SocketAddr) -> std::io::Result<usize>,
    ) {
        let named = local.and_then(|l| self.bound.iter().position(|b| *b == l));
        let Some(i) = named.or_else(|| self.bound.iter().position(|b| b.is_ipv4() == remote.is_ipv4())) else {
            tracing::warn!(%remote, "no UDP socket of this address family");
            return;
        };
        if let Err(e) = send(&self.sockets[i], bytes, remote) {
            tracing::debug!(%remote, error = %e, "UDP send failed");
        }
    }
}

/// What woke the driver's loop ([`Driver::run`]).
enum Woke<S> {
    Message(Message<S>),
    /// A datagram in the loop's buffer.
    Datagram(Received),
    Timer,
}

/// The UDP sockets a runtime's [`AsyncIo::poll_datagram`] reads, polled in
/// turn so that a busy socket cannot starve the others.
pub struct DatagramReaders<U> {
    sockets: Vec<(SocketAddr, U)>,
    next: usize,
}

impl<U> Default for DatagramReaders<U> {
    fn default() -> Self {
        DatagramReaders { sockets: Vec::new(), next: 0 }
    }
}

impl<U: DatagramSocket> DatagramReaders<U> {
    /// Adds the socket bound at `local`.
    pub fn push(&mut self, local: SocketAddr, socket: U) {
        self.sockets.push((local, socket));
    }

    /// Drops every socket.
    pub fn clear(&mut self) {
        self.sockets.clear();
    }

    /// A datagram from any socket into `buf` (see [`AsyncIo::poll_datagram`]).
    /// A receive error ends nothing (ICMP errors surface as such on some
    /// systems): the socket is read again, a few times, and if it keeps
    /// failing the task is woken to come back rather than lose its waker.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Received> {
        let n = self.sockets.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let (local, socket) = &self.sockets[i];
            for _ in 0..4 {
                match socket.poll_recv_stamped(cx, buf) {
                    Poll::Ready(Ok((len, remote, at))) => {
                        self.next = (i + 1) % n;
                        return Poll::Ready(Received { local: *local, remote, len, at });
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(%local, error = %e, "UDP receive failed");
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    }
}

/// A UDP socket as [`DatagramReaders`] reads it.
pub trait DatagramSocket {
    /// Receives one datagram into `buf`.
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<(usize, SocketAddr)>>;

    /// Receives one datagram into `buf`, with when it reached the machine
    /// if the socket can tell (default: it cannot).
    fn poll_recv_stamped(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<(usize, SocketAddr, Option<Instant>)>> {
        self.poll_recv_from(cx, buf).map(|r| r.map(|(len, remote)| (len, remote, None)))
    }
}

/// A TCP listener as [`accept_streams`] accepts from it.
pub trait StreamListener {
    /// The accepted stream type.
    type Stream;
    /// Accepts one connection (with Nagle off: SIP messages are small and
    /// latency matters).
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<(Self::Stream, SocketAddr)>>;
}

/// Hands every connection `listener` accepts to the driver as `transport`
/// (TCP or TLS) until the driver stops. When accepting fails (out of
/// descriptors, say) it waits with `pause` rather than spin.
pub async fn accept_streams<L: StreamListener, P: Future>(
    transport: Transport,
    local: SocketAddr,
    listener: L,
    mut inputs: Inputs<L::Stream>,
    pause: impl Fn(Duration) -> P,
) {
    loop {
        match poll_fn(|cx| listener.poll_accept(cx)).await {
            Ok((stream, remote)) => {
                if !inputs.send(Input::Accepted { transport, remote, stream }).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%local, error = %e, "accept failed");
                pause(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The answer to an A/AAAA lookup from what the system resolver returned
/// (`getaddrinfo` does not tell "no such name" from other failures).
pub fn answer_from(result: std::io::Result<impl Iterator<Item = SocketAddr>>) -> Answer {
    match result {
        Ok(addrs) => {
            let mut ips: Vec<_> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            if ips.is_empty() {
                Answer::NotFound
            } else {
                Answer::Ips(ips)
            }
        }
        Err(e) => Answer::Failed(e.to_string()),
    }
}

/// Reads `stream` into the driver until it ends, [`READ_CHUNK`] at a time;
/// reports [`Input::Closed`] at the end (or when reading fails).
pub async fn read_stream<S, R: AsyncRead + Unpin>(conn: ConnId, mut stream: R, mut inputs: Inputs<S>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match poll_fn(|cx| Pin::new(&mut stream).poll_read(cx, &mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !inputs.send(Input::StreamData { conn, bytes: buf[..n].to_vec() }).await {
                    return;
                }
            }
        }
    }
    inputs.send(Input::Closed { conn }).await;
}

/// Writes what is queued for a connection, in order, until the queue's
/// sender is dropped; then closes the stream's write side. At the first
/// write error it stops and reports [`Input::Closed`] (a peer that reset
/// the connection, say, may never make the reader fail), so that the
/// driver lets the connection go.
pub async fn write_stream<S, W: AsyncWrite + Unpin>(
    conn: ConnId,
    mut stream: W,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    mut inputs: Inputs<S>,
) {
    while let Some(bytes) = poll_fn(|cx| Pin::new(&mut queue).poll_next(cx)).await {
        let mut at = 0;
        while at < bytes.len() {
            match poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, &bytes[at..])).await {
                Ok(0) | Err(_) => {
                    inputs.send(Input::Closed { conn }).await;
                    return;
                }
                Ok(n) => at += n,
            }
        }
    }
    let _ = poll_fn(|cx| Pin::new(&mut stream).poll_close(cx)).await;
}

/// A write queue for one connection: the runtime keeps the sender (see
/// [`Io::write`]) and runs [`write_stream`] on the receiver.
pub fn write_queue() -> (mpsc::UnboundedSender<Vec<u8>>, mpsc::UnboundedReceiver<Vec<u8>>) {
    mpsc::unbounded()
}

/// Re-exported for the runtimes' write queues.
pub use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
