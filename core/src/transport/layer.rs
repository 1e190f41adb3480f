//! The transport layer as one sans-IO object (RFC 3261 §18): datagrams,
//! stream connections with TLS, name resolution as an output (RFC 3263
//! §4), and the §18.1.2/§18.2.1 checks on everything that arrives.

use super::connection::{CloseReason, ConnId, ConnectError, ConnectionConfig, Connections, StreamOutput};
use super::inbound::{judge, Judged};
use super::resolve::{Answer, Lookup, QueryId, ResolveError, Resolver};
use super::target::{response_hop, ResponseHop, Target, Transport};
use super::tls::{TlsConfig, TlsConfigError};
use super::workers::{SharedFlows, WorkerMessage};
use crate::message::{Message, ParseError, Salvaged, StatusCode};
use crate::rng::Rng;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The receive and send buffer the runtimes ask the kernel for on each
/// UDP socket by default: 8 MiB, room for thousands of datagrams arriving
/// in a burst (the usual 208 KiB holds a few hundred).
pub const DEFAULT_UDP_BUFFER: usize = 8 * 1024 * 1024;

/// How the transport layer is set up.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Stream connection limits and lifetimes.
    pub connections: ConnectionConfig,
    /// TLS certificates, keys and trusted roots.
    pub tls: TlsConfig,
    /// Host names that mean this endpoint in a response's top Via sent-by
    /// (§18.1.2), besides the listening addresses.
    pub local_names: Vec<String>,
    /// Bytes of receive and send buffer (`SO_RCVBUF`, `SO_SNDBUF`) the
    /// runtime asks for on each UDP socket, before binding it (default
    /// [`DEFAULT_UDP_BUFFER`]; 0 keeps the system's default). The kernel
    /// may grant less (Linux: up to `net.core.rmem_max` / `wmem_max`); the
    /// runtime logs what it got. The core itself does not use it.
    pub udp_buffer: usize,
    /// Which worker holds each accepted stream connection, when several
    /// serve together ([`TransportLayer::set_worker`]). Clones of the config
    /// share it.
    pub flows: SharedFlows,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connections: ConnectionConfig::default(),
            tls: TlsConfig::default(),
            local_names: Vec::new(),
            udp_buffer: DEFAULT_UDP_BUFFER,
            flows: SharedFlows::new(),
        }
    }
}

/// Where a message goes: a transport and an address, and for streams the
/// connection to use while it is open.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The transport.
    pub transport: Transport,
    /// The remote address.
    pub remote: SocketAddr,
    /// For UDP, the local address to send from (the one a request came
    /// in on, so the reply leaves from it); `None`: any of the family.
    pub local: Option<SocketAddr>,
    /// For streams, the connection to use while it is open (§18.2.2); when
    /// it has closed, a connection to `remote` is used or opened.
    pub conn: Option<ConnId>,
    /// For TLS, the name the server's certificate must carry (RFC 5922:
    /// the host part of the URI, not an SRV target); the IP otherwise.
    pub server_name: Option<Arc<str>>,
}

impl Peer {
    /// A peer at `remote` over `transport`.
    pub fn new(transport: Transport, remote: SocketAddr) -> Peer {
        Peer { transport, remote, local: None, conn: None, server_name: None }
    }

    /// Whether the transport is reliable.
    pub fn is_reliable(&self) -> bool {
        self.transport.is_reliable()
    }

    /// §18.2.2: where the response to a request from `source` goes. Over a
    /// stream, back on the connection it came on while that is open, else
    /// to the `received` address and the sent-by (or `rport`) port; over
    /// UDP, to `received` and the `rport` or sent-by port, from the local
    /// address the request arrived at.
    pub fn reply_to(source: &Source, request: &[u8]) -> Peer {
        match Message::parse(request) {
            Ok(m) => Peer::reply_to_message(source, &m),
            Err(_) => Peer::reply_to_hop(source, None.as_ref()),
        }
    }

    /// [`Peer::reply_to`] for a request already parsed (one parse per
    /// message on the receive path).
    pub fn reply_to_message(source: &Source, request: &Message<'_>) -> Peer {
        let via = request.via().and_then(Result::ok);
        Peer::reply_to_hop(source, via.as_ref().and_then(response_hop).as_ref())
    }

    /// [`Peer::reply_to`] given the request's top Via alone (`via`, as
    /// stamped, §18.2.2).
    pub(crate) fn reply_to_via(source: &Source, via: &crate::message::headers::Via<'_>) -> Peer {
        Peer::reply_to_hop(source, response_hop(via).as_ref())
    }

    fn reply_to_hop(source: &Source, hop: Option<&ResponseHop<'_>>) -> Peer {
        // Over a stream this is where a new connection goes if the one the
        // request came on has closed: the sent-by port is where the peer
        // listens (with rport, its connection's own port).
        let remote = hop.and_then(|h| h.ip.map(|ip| SocketAddr::new(ip, h.port))).unwrap_or(source.remote);
        let server_name = match hop {
            Some(h) if h.ip.is_none() => h.name.map(Arc::from),
            _ => None,
        };
        Peer { transport: source.transport, remote, local: source.local, conn: source.conn, server_name }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The transport it came over.
    pub transport: Transport,
    /// The local address it arrived at (datagrams; `None` on streams).
    pub local: Option<SocketAddr>,
    /// The sender's address.
    pub remote: SocketAddr,
    /// The stream connection it came on.
    pub conn: Option<ConnId>,
}

/// A message handed up at once by [`TransportLayer::receive_datagram`].
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // moved once per message; boxing would allocate per message
pub enum Arrival<'b> {
    /// A request that needed no stamp, or a response whose top Via sent-by
    /// is ours (§18.1.2): exactly the message's octets, and their parse.
    Parsed {
        /// Where from.
        source: Source,
        /// The message's octets (trailing datagram octets left out, §18.3).
        bytes: &'b [u8],
        /// `bytes`, parsed.
        message: Message<'b>,
    },
    /// A request whose top Via was stamped with `received`/`rport`
    /// (§18.2.1, RFC 3581): the new octets, to be parsed.
    Stamped {
        /// Where from.
        source: Source,
        /// The stamped request.
        bytes: Vec<u8>,
    },
}

/// What the transport layer reports upwards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A request arrived, its top Via stamped with `received`/`rport`
    /// (§18.2.1, RFC 3581).
    Request {
        /// Where from.
        source: Source,
        /// The request.
        bytes: Vec<u8>,
    },
    /// A response whose top Via sent-by is ours arrived (§18.1.2).
    Response {
        /// Where from.
        source: Source,
        /// The response.
        bytes: Vec<u8>,
    },
    /// A name was resolved (RFC 3263 §4): peers in the order to try them.
    Resolved {
        /// The query [`TransportLayer::resolve`] returned.
        query: QueryId,
        /// The peers, or why there are none.
        result: Result<Vec<Peer>, ResolveError>,
    },
    /// A TLS handshake completed.
    Secured {
        /// The connection.
        conn: ConnId,
    },
    /// A stream connection ended; the next send to its peer opens a new
    /// one. Messages queued on a connection that failed are lost with it.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// What the runtime must do, or an event for the layer above. The
/// endpoint emits the same actions with its own events
/// ([`crate::endpoint::Output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<E = TransportEvent> {
    /// Send a datagram.
    Datagram {
        /// The local address to send from; `None`: any.
        local: Option<SocketAddr>,
        /// Where to.
        remote: SocketAddr,
        /// The bytes.
        bytes: Arc<[u8]>,
    },
    /// Open a stream connection and report back with
    /// [`TransportLayer::handle_connected`] or
    /// [`TransportLayer::handle_connect_failed`].
    Open {
        /// The handle to report with.
        conn: ConnId,
        /// TCP or TLS (the runtime connects TCP; TLS runs in the core).
        transport: Transport,
        /// Where to.
        remote: SocketAddr,
        /// The TLS server name.
        server_name: Option<String>,
    },
    /// Write bytes (ciphertext for TLS) on a connection.
    Write {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close a connection (no report back is needed).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Carry `message` to worker `worker` (one of several serving
    /// together) and feed it in there with
    /// [`TransportLayer::handle_worker_message`].
    Worker {
        /// The worker, by id.
        worker: u16,
        /// What it is to do.
        message: WorkerMessage,
    },
    /// Look a name up; answer with [`TransportLayer::handle_resolved`].
    Resolve {
        /// The query to answer.
        query: QueryId,
        /// The name.
        name: String,
        /// Which records.
        lookup: Lookup,
    },
    /// For the layer above.
    Event(E),
}

impl<E> Output<E> {
    /// The action (retyped for another kind of event), or the event.
    pub fn into_action<F>(self) -> Result<Output<F>, E> {
        Ok(match self {
            Output::Datagram { local, remote, bytes } => Output::Datagram { local, remote, bytes },
            Output::Open { conn, transport, remote, server_name } => {
                Output::Open { conn, transport, remote, server_name }
            }
            Output::Write { conn, bytes } => Output::Write { conn, bytes },
            Output::Close { conn } => Output::Close { conn },
            Output::Worker { worker, message } => Output::Worker { worker, message },
            Output::Resolve { query, name, lookup } => Output::Resolve { query, name, lookup },
            Output::Event(e) => return Err(e),
        })
    }
}

/// Why a send was refused; the bytes come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection limit is reached.
    #[error("too many connections")]
    TooManyConnections(Arc<[u8]>),
}

/// Counters of what was dropped on the way in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages that could not be parsed.
    pub malformed: u64,
    /// Of those, requests answered with 400.
    pub answered_400: u64,
    /// Responses whose top Via was not ours (§18.1.2).
    pub foreign_responses: u64,
}

/// The transport layer: datagrams, streams, TLS and name resolution,
/// sans-IO.
///
/// Inputs are the `handle_*` methods; after each, drain
/// [`poll_output`](Self::poll_output) until `None`, then read
/// [`poll_timeout`](Self::poll_timeout).
///
/// ```
/// use sipline::transport::{Output, Peer, Transport, TransportEvent, TransportLayer};
/// use std::time::Instant;
///
/// # fn demo(now: Instant) {
/// let mut layer = TransportLayer::new(Default::default(), 7).unwrap();
/// let local = "127.0.0.1:5060".parse().unwrap();
/// layer.add_listener(Transport::Udp, local);
/// let peer = Peer::new(Transport::Tcp, "127.0.0.1:5070".parse().unwrap());
/// let conn = layer.send(now, &peer, b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\n...".as_slice().into()).unwrap();
/// // No connection yet: the runtime is asked to open one.
/// assert!(matches!(layer.poll_output(), Some(Output::Open { .. })));
/// layer.handle_connected(now, conn.unwrap());
/// assert!(matches!(layer.poll_output(), Some(Output::Write { .. })));
/// # }
/// ```
pub struct TransportLayer {
    conns: Connections,
    resolver: Resolver,
    listeners: Vec<(Transport, SocketAddr)>,
    local_names: Vec<String>,
    out: VecDeque<Output>,
    rng: Rng,
    stats: TransportStats,
    last_now: Option<Instant>,
    /// This worker's id, when several serve together, and the directory
    /// of their accepted connections.
    worker: Option<u16>,
    flows: SharedFlows,
    /// The accepted connections entered in `flows`, to take out when they
    /// close.
    flow_keys: std::collections::BTreeMap<ConnId, (Transport, SocketAddr)>,
}

impl TransportLayer {
    /// A transport layer; `seed` drives its randomness (SRV weights, tags
    /// on 400 responses).
    pub fn new(config: TransportConfig, seed: u64) -> Result<TransportLayer, TlsConfigError> {
        let mut conns = Connections::new(config.connections);
        conns.set_tls(&config.tls)?;
        Ok(TransportLayer {
            conns,
            resolver: Resolver::default(),
            listeners: Vec::new(),
            local_names: config.local_names,
            out: VecDeque::new(),
            rng: Rng::new(seed),
            stats: TransportStats::default(),
            last_now: None,
            worker: None,
            flows: config.flows,
            flow_keys: std::collections::BTreeMap::new(),
        })
    }

    /// Makes this layer worker `id` of several serving together (issue 19):
    /// the connections it accepts enter the shared directory
    /// ([`TransportConfig::flows`]); a stream message for a remote whose
    /// connection another worker holds goes to that worker
    /// ([`Output::Worker`]), and so does a response that arrives on a
    /// connection here but names another worker in its branch.
    pub fn set_worker(&mut self, id: u16) {
        self.worker = Some(id);
    }

    /// A message from another worker ([`Output::Worker`] there).
    pub fn handle_worker_message(&mut self, now: Instant, message: WorkerMessage) {
        let now = self.clamp(now);
        match message {
            WorkerMessage::Send { transport, remote, server_name, bytes } => {
                let mut peer = Peer::new(transport, remote);
                peer.server_name = server_name;
                // Over the connection here (opened anew if it has gone: a
                // second hand-over would go round in circles).
                if let Some(conn) = self.conns.find(transport, remote) {
                    let _ = self.conns.send_on(now, conn, bytes.to_vec());
                } else if let Err(e) = self.send_here(now, &peer, bytes) {
                    tracing::debug!(%remote, error = %e, "a message handed over could not be sent");
                }
            }
            WorkerMessage::Received { transport, remote, bytes } => {
                let source = Source { transport, local: None, remote, conn: None };
                self.arrived(source, &bytes);
            }
        }
    }

    /// Time never goes backwards: an earlier `now` is taken as the last.
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = match self.last_now {
            Some(last) if now < last => {
                debug_assert!(false, "time went backwards");
                last
            }
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    /// Tells the core the wall-clock time (since the Unix epoch) at `now`,
    /// once at start: TLS certificates are checked against it.
    pub fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        let now = self.clamp(now);
        self.conns.set_wall_clock(now, unix);
    }

    /// Records an address the runtime listens on (after binding: with
    /// port 0, the port the OS chose). Datagrams leave from a UDP listener
    /// of the right family; sent-by checks accept these addresses.
    pub fn add_listener(&mut self, transport: Transport, local: SocketAddr) {
        if !self.listeners.contains(&(transport, local)) {
            self.listeners.push((transport, local));
        }
    }

    /// The addresses listened on.
    pub fn listeners(&self) -> &[(Transport, SocketAddr)] {
        &self.listeners
    }

    /// What was dropped on the way in.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// The stream connections (for inspection).
    pub fn connections(&self) -> &Connections {
        &self.conns
    }

    /// Keeps a connection open while a session uses it.
    pub fn pin(&mut self, conn: ConnId) {
        self.conns.pin(conn);
    }

    /// Releases a pin; the ad hoc linger time runs again.
    pub fn unpin(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.conns.unpin(now, conn);
    }

    /// Sets one connection's idle limit.
    pub fn set_idle_limit(&mut self, conn: ConnId, limit: Duration) {
        self.conns.set_idle_limit(conn, limit);
    }

    /// Closes a connection.
    pub fn close(&mut self, conn: ConnId) {
        self.conns.close_conn(conn);
    }

    /// Closes every connection (on shutdown).
    pub fn close_all(&mut self) {
        self.conns.close_all();
    }

    /// Starts resolving `target` (RFC 3263 §4): an IP literal resolves at
    /// once; a name with no port asks for SRV records first (§4.2), then
    /// the targets' addresses; a name with a port asks for A/AAAA. The
    /// answer arrives as [`TransportEvent::Resolved`].
    pub fn resolve(&mut self, target: &Target) -> QueryId {
        let (query, outputs) = self.resolver.start(target);
        for o in outputs {
            self.out.push_back(o);
        }
        query
    }

    /// An answer to an [`Output::Resolve`].
    pub fn handle_resolved(&mut self, now: Instant, query: QueryId, answer: Answer) {
        self.clamp(now);
        for o in self.resolver.answer(query, answer, &mut self.rng) {
            self.out.push_back(o);
        }
    }

    /// Sends a message to `peer`. Over UDP it leaves at once; over a stream
    /// it goes on `peer.conn` while that is open, else on the connection
    /// to the peer's address, opened if there is none (queued until the
    /// runtime reports it open and, for TLS, the handshake is done).
    /// Returns the connection used, for streams.
    pub fn send(&mut self, now: Instant, peer: &Peer, bytes: Arc<[u8]>) -> Result<Option<ConnId>, TransportError> {
        let now = self.clamp(now);
        tracing::trace!(target: "sipline::wire", transport = peer.transport.as_str(), remote = %peer.remote,
            "sent\n{}", String::from_utf8_lossy(&bytes));
        if !peer.transport.is_reliable() {
            let local = peer.local.or_else(|| self.udp_local(peer.remote.ip()));
            self.out.push_back(Output::Datagram { local, remote: peer.remote, bytes });
            return Ok(None);
        }
        if let Some(conn) = peer.conn {
            if self.conns.send_on(now, conn, bytes.to_vec()) {
                return Ok(Some(conn));
            }
        }
        if let Some(me) = self.worker {
            // Another worker holds the connection this remote opened (the
            // only way to reach it behind a NAT): that worker sends.
            let theirs = self.flows.owner(peer.transport, peer.remote).filter(|w| *w != me);
            if let Some(worker) = theirs.filter(|_| self.conns.find(peer.transport, peer.remote).is_none()) {
                let message = WorkerMessage::Send {
                    transport: peer.transport,
                    remote: peer.remote,
                    server_name: peer.server_name.clone(),
                    bytes,
                };
                self.out.push_back(Output::Worker { worker, message });
                return Ok(None);
            }
        }
        self.send_here(now, peer, bytes)
    }

    /// Sends over a stream connection of this layer's own.
    fn send_here(&mut self, now: Instant, peer: &Peer, bytes: Arc<[u8]>) -> Result<Option<ConnId>, TransportError> {
        let name = peer.server_name.as_deref();
        match self.conns.send(now, peer.transport, peer.remote, name, bytes.to_vec()) {
            Ok(conn) => Ok(Some(conn)),
            Err(ConnectError::TooMany(_) | ConnectError::NotStream(_)) => {
                Err(TransportError::TooManyConnections(bytes))
            }
        }
    }

    fn udp_local(&self, remote: IpAddr) -> Option<SocketAddr> {
        self.listeners.iter().find(|(t, a)| *t == Transport::Udp && a.is_ipv4() == remote.is_ipv4()).map(|&(_, a)| a)
    }

    /// A datagram arrived at `local` from `remote`.
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        self.clamp(now);
        let source = Source { transport: Transport::Udp, local: Some(local), remote, conn: None };
        self.arrived(source, bytes);
    }

    /// [`handle_datagram`](Self::handle_datagram) for a caller that parses
    /// each message once: the message comes back at once, with its parse,
    /// instead of as a [`TransportEvent::Request`] / [`TransportEvent::Response`]
    /// holding a copy. Everything else (keep-alives, a foreign response,
    /// the 400 to a malformed request) is as `handle_datagram` does it.
    pub fn receive_datagram<'b>(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &'b [u8],
    ) -> Option<Arrival<'b>> {
        self.clamp(now);
        let source = Source { transport: Transport::Udp, local: Some(local), remote, conn: None };
        self.receive(source, bytes)
    }

    /// The runtime accepted a connection on a TCP or TLS listener. Returns
    /// its handle, or `None` when it must be refused (the connection limit,
    /// or TLS with no certificate: a [`TransportEvent::Closed`] says why).
    pub fn handle_accepted(&mut self, now: Instant, transport: Transport, remote: SocketAddr) -> Option<ConnId> {
        let now = self.clamp(now);
        let conn = self.conns.accepted(now, transport, remote)?;
        if let Some(me) = self.worker {
            self.flows.insert(transport, remote, me);
            self.flow_keys.insert(conn, (transport, remote));
        }
        Some(conn)
    }

    /// A connection of ours ended: out of the shared directory.
    fn forget_flow(&mut self, conn: ConnId) {
        if let (Some(me), Some((transport, remote))) = (self.worker, self.flow_keys.remove(&conn)) {
            self.flows.remove(transport, remote, me);
        }
    }

    /// An [`Output::Open`] connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.conns.opened(now, conn);
    }

    /// An [`Output::Open`] failed.
    pub fn handle_connect_failed(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.conns.failed(now, conn);
    }

    /// Bytes arrived on a connection.
    pub fn handle_stream_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let now = self.clamp(now);
        self.conns.received(now, conn, bytes);
    }

    /// The peer closed a connection (or reading it failed).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        let now = self.clamp(now);
        self.conns.closed(now, conn);
    }

    /// Time passed: closes idle and slow connections. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        self.conns.handle_timeout(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.poll_timeout()
    }

    /// Drops the storage of emptied tables (after a burst; see `shed`).
    pub(crate) fn shed(&mut self) {
        crate::shed::shed(&mut self.out);
        self.conns.shed();
        self.resolver.shed();
    }

    /// The next output; drain until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            match self.conns.poll_output()? {
                StreamOutput::Open { conn, transport, remote, server_name } => {
                    return Some(Output::Open { conn, transport, remote, server_name })
                }
                StreamOutput::Write { conn, bytes } => return Some(Output::Write { conn, bytes }),
                StreamOutput::Close { conn } => {
                    self.forget_flow(conn);
                    return Some(Output::Close { conn });
                }
                StreamOutput::Secured { conn } => return Some(Output::Event(TransportEvent::Secured { conn })),
                StreamOutput::Closed { conn, reason } => {
                    self.forget_flow(conn);
                    return Some(Output::Event(TransportEvent::Closed { conn, reason }));
                }
                StreamOutput::Message { conn, transport, remote, bytes } => {
                    // A response to another worker's request: theirs to handle.
                    let owner =
                        self.worker.and_then(|me| crate::endpoint::response_worker(&bytes).filter(|w| *w != me));
                    if let Some(worker) = owner {
                        let message = WorkerMessage::Received { transport, remote, bytes };
                        return Some(Output::Worker { worker, message });
                    }
                    let source = Source { transport, local: None, remote, conn: Some(conn) };
                    self.arrived(source, &bytes);
                }
            }
        }
    }

    /// §18.1.2 / §18.2.1 on one arrived message, reported as an event.
    fn arrived(&mut self, source: Source, bytes: &[u8]) {
        let event = match self.receive(source, bytes) {
            Some(Arrival::Parsed { source, bytes, message }) if message.is_request() => {
                TransportEvent::Request { source, bytes: bytes.to_vec() }
            }
            Some(Arrival::Parsed { source, bytes, .. }) => TransportEvent::Response { source, bytes: bytes.to_vec() },
            Some(Arrival::Stamped { source, bytes }) => TransportEvent::Request { source, bytes },
            None => return,
        };
        self.out.push_back(Output::Event(event));
    }

    /// §18.1.2 / §18.2.1 on one arrived message: what goes up, if anything.
    fn receive<'b>(&mut self, source: Source, bytes: &'b [u8]) -> Option<Arrival<'b>> {
        // Whole messages only at TRACE (DESIGN.md, "Logs"), under their own
        // target so a tool can show the traffic alone.
        tracing::trace!(target: "sipline::wire", transport = source.transport.as_str(), remote = %source.remote,
            "received\n{}", String::from_utf8_lossy(bytes));
        match judge(bytes, source.remote, |host, port| self.is_ours(host, port)) {
            Judged::Pass(bytes, message) => Some(Arrival::Parsed { source, bytes, message }),
            Judged::Stamped(bytes) => Some(Arrival::Stamped { source, bytes }),
            Judged::ForeignResponse => {
                tracing::debug!(remote = %source.remote, "§18.1.2: response with a foreign top Via dropped");
                self.stats.foreign_responses += 1;
                None
            }
            Judged::KeepAlive => None,
            Judged::Malformed(e) => {
                self.malformed(source, bytes, e);
                None
            }
        }
    }

    /// §8.2 / RFC 3261 §16.3: an unparseable request that still shows
    /// Via, From, To, Call-ID and CSeq gets a 400; anything else is
    /// dropped. Either way it is counted.
    fn malformed(&mut self, source: Source, bytes: &[u8], error: ParseError) {
        tracing::debug!(remote = %source.remote, transport = source.transport.as_str(), %error, "unparseable message");
        self.stats.malformed += 1;
        let salvaged = Salvaged::scan(bytes);
        if salvaged.method.is_none() || salvaged.method == Some("ACK") {
            return;
        }
        let mut response = Vec::with_capacity(512);
        let tag = self.rng.hex(8);
        let Some(code) = StatusCode::new(400) else { return };
        if !salvaged.write_response(&mut response, code, &bad_request_reason(error), &tag) {
            return;
        }
        self.stats.answered_400 += 1;
        let peer = Peer::reply_to(&source, &response);
        if let Some(now) = self.last_now {
            let _ = self.send(now, &peer, response.into());
        }
    }

    /// §18.1.2: whether a Via sent-by is one this endpoint writes: a name
    /// from the config, or an address it listens on (an unspecified
    /// listening address matches any address of its family), with the
    /// port of one of its listeners. With nothing configured, any.
    fn is_ours(&self, host: &str, port: Option<u16>) -> bool {
        if self.listeners.is_empty() && self.local_names.is_empty() {
            return true;
        }
        let port_ok = |p: u16| self.listeners.is_empty() || self.listeners.iter().any(|(_, a)| a.port() == p);
        let named = self.local_names.iter().any(|n| n.eq_ignore_ascii_case(host));
        let ip: Option<IpAddr> = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let listened = ip.is_some_and(|ip| {
            self.listeners.iter().any(|(_, a)| a.ip() == ip || (a.ip().is_unspecified() && a.is_ipv4() == ip.is_ipv4()))
        });
        (named || listened) && (port.map_or_else(|| port_ok(5060) || port_ok(5061), port_ok))
    }
}

fn bad_request_reason(e: ParseError) -> String {
    format!("Bad Request ({e})")
}
