//! Stream connections (TCP and TLS): a table keyed by transport and
//! remote address, TLS sessions (§26.2, see [`super::tls`]), framing of
//! what arrives (§18.3), CRLF keep-alives (RFC 5626 §3.5.1) and the
//! lifetime rules of DESIGN.md — an ad hoc outbound connection closes about
//! a minute after its last use, a pinned one stays while its session lives,
//! and any connection idle past the idle limit closes. A sender that starts
//! a message and does not finish it in time is cut off.
//!
//! Memory per connection is bounded whatever the runtime hands in: bytes
//! are taken [`INTAKE_CHUNK`] at a time and framed before more are taken,
//! so a peer that floods a header is cut off at the framing limit plus one
//! chunk. An idle connection holds no framing buffer at all (it is
//! released whenever it empties), and a TLS session gives back what a
//! large record made rustls' receive buffer grow to.

use super::tls::{TlsConfig, TlsConfigError, TlsContext, TlsFailure, TlsSession};
use super::Transport;
use crate::message::{Framed, FramingError, FramingLimits, StreamFramer};
use crate::slab::Slab;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most octets taken from one `received` call before framing them.
pub const INTAKE_CHUNK: usize = 16 * 1024;

/// Limits and lifetimes of stream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// How long an unpinned outbound connection lingers after its last use
    /// (default 60 s).
    pub linger: Duration,
    /// How long any connection may stay idle (default 15 minutes).
    pub idle_limit: Duration,
    /// How long a peer may take to complete a message it has started
    /// (default 32 s, 64·T1): slow senders are cut off.
    pub message_timeout: Duration,
    /// Most connections at once (default 1024).
    pub max_connections: usize,
    /// Framing limits per connection.
    pub framing: FramingLimits,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            linger: Duration::from_secs(60),
            idle_limit: Duration::from_secs(15 * 60),
            message_timeout: Duration::from_secs(32),
            max_connections: 1024,
            framing: FramingLimits::default(),
        }
    }
}

/// A connection handle (slot and generation: stale handles match nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Unused for longer than the linger time or the idle limit.
    Idle,
    /// A message was started and not finished in time.
    SlowSender,
    /// What arrived cannot be framed (the error says why).
    Framing(FramingError),
    /// The runtime could not connect.
    ConnectFailed,
    /// The peer or the runtime closed it.
    Closed,
    /// Asked to by the layer above.
    Requested,
    /// TLS failed (handshake, certificate, or a fatal alert).
    Tls(TlsFailure),
}

/// What the runtime must do, or what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutput {
    /// Open a connection (with TLS, `server_name` is the name to verify).
    Open {
        /// The handle the runtime reports back with.
        conn: ConnId,
        /// TCP or TLS.
        transport: Transport,
        /// Where to.
        remote: SocketAddr,
        /// The TLS server name.
        server_name: Option<String>,
    },
    /// Write bytes on an open connection.
    Write {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// A whole message arrived.
    Message {
        /// The connection it came on (responses go back on it, §18.2.2).
        conn: ConnId,
        /// Its transport.
        transport: Transport,
        /// The peer.
        remote: SocketAddr,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A TLS handshake completed: the connection now carries messages.
    Secured {
        /// The connection.
        conn: ConnId,
    },
    /// A connection ended (after any `Close` the layer asked for).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a send was refused; the bytes come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Streams only; datagrams go elsewhere.
    #[error("not a stream transport")]
    NotStream(Vec<u8>),
    /// The connection limit is reached.
    #[error("too many connections")]
    TooMany(Vec<u8>),
}

struct Conn {
    transport: Transport,
    remote: SocketAddr,
    outbound: bool,
    /// Messages may be written (TCP connected, or TLS handshake done).
    open: bool,
    server_name: Option<String>,
    tls: Option<Box<TlsSession>>,
    queued: Vec<Vec<u8>>,
    pins: u32,
    last_used: Instant,
    idle_limit: Duration,
    framer: StreamFramer,
    buf: Vec<u8>,
    /// When the partial message in `buf` started, if there is one.
    partial_since: Option<Instant>,
    deadline: Option<Instant>,
}

/// All stream connections of one endpoint.
pub struct Connections {
    config: ConnectionConfig,
    conns: Slab<Conn>,
    by_peer: BTreeMap<(Transport, SocketAddr), ConnId>,
    timers: BTreeSet<(Instant, ConnId)>,
    out: VecDeque<StreamOutput>,
    tls: Option<TlsContext>,
    /// Plaintext out of TLS, reused from read to read.
    plain: Vec<u8>,
}

impl Connections {
    /// An empty table.
    pub fn new(config: ConnectionConfig) -> Self {
        Connections {
            config,
            conns: Slab::default(),
            by_peer: BTreeMap::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            tls: None,
            plain: Vec::new(),
        }
    }

    /// Sets the TLS certificates, keys and trusted roots (until then a TLS
    /// connection fails: accepted ones with `NoLocalCertificate`, outbound
    /// ones with a handshake failure).
    pub fn set_tls(&mut self, config: &TlsConfig) -> Result<(), TlsConfigError> {
        let mut context = TlsContext::new(config)?;
        if let Some(old) = &self.tls {
            if let Some((at, unix)) = old.anchor() {
                context.set_wall_clock(at, unix);
            }
        }
        self.tls = Some(context);
        Ok(())
    }

    /// Tells the core the wall-clock time (since the Unix epoch) at `now`;
    /// TLS certificates are checked against it, advanced by later `now`s.
    pub fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        if let Some(tls) = &mut self.tls {
            tls.set_wall_clock(now, unix);
        }
    }

    fn tick(&self, now: Instant) {
        if let Some(tls) = &self.tls {
            tls.tick(now);
        }
    }

    /// How many connections exist (opening or open).
    pub fn len(&self) -> usize {
        self.conns.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.conns.len == 0
    }

    /// The connection to `remote` over `transport`, if one exists.
    pub fn find(&self, transport: Transport, remote: SocketAddr) -> Option<ConnId> {
        self.by_peer.get(&(transport, remote)).copied()
    }

    fn insert(&mut self, now: Instant, transport: Transport, remote: SocketAddr, outbound: bool) -> ConnId {
        let conn = Conn {
            transport,
            remote,
            outbound,
            // Inbound TCP carries messages at once; TLS after its handshake.
            open: !outbound && transport == Transport::Tcp,
            server_name: None,
            tls: None,
            queued: Vec::new(),
            pins: 0,
            last_used: now,
            idle_limit: self.config.idle_limit,
            framer: StreamFramer::new(self.config.framing),
            buf: Vec::new(),
            partial_since: None,
            deadline: None,
        };
        let (index, generation) = self.conns.insert(conn);
        let id = ConnId { index, generation };
        self.by_peer.insert((transport, remote), id);
        self.reschedule(id);
        id
    }

    /// Sends `bytes` to `remote`: on the existing connection, or on a new
    /// one opened ad hoc (queued until the runtime reports it open).
    pub fn send(
        &mut self,
        now: Instant,
        transport: Transport,
        remote: SocketAddr,
        server_name: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<ConnId, ConnectError> {
        if !transport.is_reliable() {
            return Err(ConnectError::NotStream(bytes));
        }
        let id = if let Some(id) = self.find(transport, remote) {
            id
        } else {
            if self.conns.len >= self.config.max_connections {
                return Err(ConnectError::TooMany(bytes));
            }
            let id = self.insert(now, transport, remote, true);
            tracing::debug!(conn = id.index, transport = transport.as_str(), %remote, "opening connection");
            if let Some(c) = self.conns.get_mut(id.index, id.generation) {
                c.server_name = server_name.map(str::to_owned);
            }
            self.out.push_back(StreamOutput::Open {
                conn: id,
                transport,
                remote,
                server_name: server_name.map(str::to_owned),
            });
            id
        };
        if let Some(c) = self.conns.get_mut(id.index, id.generation) {
            c.last_used = now;
        }
        self.write(id, bytes);
        self.reschedule(id);
        Ok(id)
    }

    /// Writes a message, or queues it until the connection carries messages.
    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return };
        if !c.open {
            c.queued.push(bytes);
            return;
        }
        match &mut c.tls {
            Some(tls) => {
                let mut wire = Vec::with_capacity(bytes.len() + 64);
                tls.send(&bytes, &mut wire);
                self.out.push_back(StreamOutput::Write { conn, bytes: wire });
            }
            None => self.out.push_back(StreamOutput::Write { conn, bytes }),
        }
    }

    /// Writes on a given connection (a response going back the way its
    /// request came, §18.2.2). `false` if the connection is gone.
    pub fn send_on(&mut self, now: Instant, conn: ConnId, bytes: Vec<u8>) -> bool {
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return false };
        c.last_used = now;
        self.write(conn, bytes);
        self.reschedule(conn);
        true
    }

    /// The runtime accepted an inbound connection. Over the limit, or TLS
    /// with no local certificate, it is closed at once (and `None`
    /// returned; the `Closed` output says why).
    pub fn accepted(&mut self, now: Instant, transport: Transport, remote: SocketAddr) -> Option<ConnId> {
        if !transport.is_reliable() {
            return None;
        }
        self.tick(now);
        let id = self.insert(now, transport, remote, false);
        if self.conns.len > self.config.max_connections {
            self.close(id, CloseReason::Requested);
            return None;
        }
        if transport == Transport::Tls {
            let session = match &self.tls {
                Some(tls) => tls.server(),
                None => Err(TlsFailure::NoLocalCertificate),
            };
            match session {
                Ok(s) => {
                    if let Some(c) = self.conns.get_mut(id.index, id.generation) {
                        c.tls = Some(Box::new(s));
                    }
                }
                Err(e) => {
                    self.close(id, CloseReason::Tls(e));
                    return None;
                }
            }
        }
        Some(id)
    }

    /// The runtime connected an outbound connection: queued writes go out
    /// (over TLS, the handshake starts and they wait for it).
    pub fn opened(&mut self, now: Instant, conn: ConnId) {
        self.tick(now);
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return };
        c.last_used = now;
        if c.transport == Transport::Tls {
            let name = c.server_name.clone().unwrap_or_else(|| c.remote.ip().to_string());
            let session = match &self.tls {
                Some(tls) => tls.client(&name),
                None => Err(TlsFailure::Handshake("TLS is not configured".into())),
            };
            match session {
                Ok(mut s) => {
                    let mut wire = Vec::new();
                    s.flush(&mut wire);
                    c.tls = Some(Box::new(s));
                    if !wire.is_empty() {
                        self.out.push_back(StreamOutput::Write { conn, bytes: wire });
                    }
                }
                Err(e) => {
                    self.close(conn, CloseReason::Tls(e));
                    return;
                }
            }
        } else {
            c.open = true;
            self.flush_queued(conn);
        }
        self.reschedule(conn);
    }

    fn flush_queued(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return };
        for bytes in std::mem::take(&mut c.queued) {
            self.write(conn, bytes);
        }
    }

    /// The runtime could not connect.
    pub fn failed(&mut self, _now: Instant, conn: ConnId) {
        self.forget(conn, CloseReason::ConnectFailed);
    }

    /// The peer or the runtime closed the connection.
    pub fn closed(&mut self, _now: Instant, conn: ConnId) {
        self.forget(conn, CloseReason::Closed);
    }

    /// Keeps a connection open while a session uses it (DESIGN.md).
    pub fn pin(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn.index, conn.generation) {
            c.pins += 1;
        }
        self.reschedule(conn);
    }

    /// Releases one [`pin`](Self::pin); the linger time runs again.
    pub fn unpin(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn.index, conn.generation) {
            c.pins = c.pins.saturating_sub(1);
            c.last_used = now;
        }
        self.reschedule(conn);
    }

    /// Sets one connection's idle limit.
    pub fn set_idle_limit(&mut self, conn: ConnId, limit: Duration) {
        if let Some(c) = self.conns.get_mut(conn.index, conn.generation) {
            c.idle_limit = limit;
        }
        self.reschedule(conn);
    }

    /// Bytes arrived on a connection: decrypted when it is TLS, framed
    /// into messages (§18.3), CRLF pings answered (RFC 5626 §3.5.1). A
    /// framing error or a TLS failure closes it; peer's close_notify too.
    pub fn received(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.tick(now);
        for chunk in bytes.chunks(INTAKE_CHUNK) {
            let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return };
            c.last_used = now;
            if c.tls.is_none() {
                if !self.frame(now, conn, chunk) {
                    return;
                }
                continue;
            }
            // One plaintext buffer serves every read (no allocation per read).
            let mut plain = std::mem::take(&mut self.plain);
            plain.clear();
            let decrypted = self.decrypt(conn, chunk, &mut plain);
            let framed = decrypted.is_some() && self.frame(now, conn, &plain);
            self.plain = plain;
            if !framed {
                return;
            }
            if decrypted == Some(true) {
                self.close(conn, CloseReason::Closed);
                return;
            }
        }
        self.reschedule(conn);
    }

    /// Runs ciphertext through the connection's TLS session: handshake
    /// records go out, a completed handshake releases queued messages, a
    /// failure closes the connection (after its alert). Plaintext goes to
    /// `plain`. Returns whether the peer sent close_notify (the caller closes
    /// the connection once that plaintext is framed), or `None` if it closed.
    fn decrypt(&mut self, conn: ConnId, cipher: &[u8], plain: &mut Vec<u8>) -> Option<bool> {
        let c = self.conns.get_mut(conn.index, conn.generation)?;
        let tls = c.tls.as_mut()?;
        let mut wire = Vec::new();
        let result = tls.receive(cipher, plain, &mut wire);
        if !wire.is_empty() {
            self.out.push_back(StreamOutput::Write { conn, bytes: wire });
        }
        if let Some(failure) = result.failure {
            self.close_now(conn, CloseReason::Tls(failure));
            return None;
        }
        if result.established && !c.open {
            c.open = true;
            self.out.push_back(StreamOutput::Secured { conn });
            self.flush_queued(conn);
        }
        Some(result.closed)
    }

    /// Frames plaintext that arrived; `false` if the connection closed.
    fn frame(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return false };
        // Grow by doubling, but never past what the limits can need (the
        // largest message plus one chunk): a flood stops at the limit.
        let needed = c.buf.len() + bytes.len();
        if needed > c.buf.capacity() {
            let cap = self.config.framing.max_message + INTAKE_CHUNK;
            let want = needed.max((c.buf.capacity() * 2).min(cap));
            c.buf.reserve_exact(want - c.buf.len());
        }
        c.buf.extend_from_slice(bytes);
        let mut error = None;
        let mut pings = 0;
        loop {
            match c.framer.advance(&c.buf) {
                Ok(Framed::NeedMore) => break,
                Ok(Framed::Ping { len }) => {
                    c.buf.drain(..len);
                    pings += 1;
                }
                Ok(Framed::Pong { len }) => {
                    c.buf.drain(..len);
                }
                Ok(Framed::Message { len }) => {
                    let message: Vec<u8> = c.buf.drain(..len).collect();
                    self.out.push_back(StreamOutput::Message {
                        conn,
                        transport: c.transport,
                        remote: c.remote,
                        bytes: message,
                    });
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if c.buf.is_empty() {
            // Idle: the buffer goes, whatever size the last read or message
            // made it (an idle connection holds no framing buffer; the next
            // read allocates what it needs).
            c.buf = Vec::new();
            c.partial_since = None;
        } else {
            c.partial_since = c.partial_since.or(Some(now));
        }
        for _ in 0..pings {
            self.write(conn, b"\r\n".to_vec());
        }
        if let Some(e) = error {
            self.close(conn, CloseReason::Framing(e));
            return false;
        }
        self.reschedule(conn);
        true
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.by_peer.values().copied().collect();
        for id in ids {
            self.close(id, CloseReason::Requested);
        }
    }

    /// Closes a connection on the layer's behalf.
    pub fn close_conn(&mut self, conn: ConnId) {
        self.close(conn, CloseReason::Requested);
    }

    /// Closes gracefully: over TLS, close_notify goes out first.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return };
        if let Some(tls) = &mut c.tls {
            let mut wire = Vec::new();
            tls.close(&mut wire);
            if !wire.is_empty() {
                self.out.push_back(StreamOutput::Write { conn, bytes: wire });
            }
        }
        self.close_now(conn, reason);
    }

    /// Closes with no more TLS records (after a fatal alert went out).
    fn close_now(&mut self, conn: ConnId, reason: CloseReason) {
        if self.conns.get_mut(conn.index, conn.generation).is_some() {
            self.out.push_back(StreamOutput::Close { conn });
            self.forget(conn, reason);
        }
    }

    fn forget(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(conn.index, conn.generation) else { return };
        tracing::debug!(conn = conn.index, transport = c.transport.as_str(), remote = %c.remote, ?reason, "connection closed");
        if let CloseReason::Tls(failure) = &reason {
            // Once per connection, at info: what an operator needs to see
            // why a phone cannot connect (a refused version, an untrusted
            // or expired certificate, bytes that are not TLS). The alert
            // (RFC 8446 §6, RFC 5246 §7.2) already went out.
            let stage = if c.open { "connection" } else { "handshake" };
            let direction = if c.outbound { "to" } else { "from" };
            let why = match failure {
                TlsFailure::Handshake(why) => why.clone(),
                other => other.to_string(),
            };
            tracing::info!(target: "sipline::tls", remote = %c.remote, "TLS {stage} {direction} {} failed: {why}", c.remote);
        }
        if self.by_peer.get(&(c.transport, c.remote)) == Some(&conn) {
            self.by_peer.remove(&(c.transport, c.remote));
        }
        if let Some(at) = c.deadline {
            self.timers.remove(&(at, conn));
        }
        self.out.push_back(StreamOutput::Closed { conn, reason });
    }

    /// When this connection must be looked at next: the earliest of its
    /// linger (unpinned outbound), idle limit and slow-sender deadlines.
    fn reschedule(&mut self, conn: ConnId) {
        let config = self.config;
        let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { return };
        let mut next = c.last_used + c.idle_limit;
        if c.outbound && c.pins == 0 {
            next = next.min(c.last_used + config.linger);
        }
        if let Some(since) = c.partial_since {
            next = next.min(since + config.message_timeout);
        }
        if let Some(old) = c.deadline.replace(next) {
            self.timers.remove(&(old, conn));
        }
        self.timers.insert((next, conn));
    }

    /// Closes what is due at `now`. Idempotent; early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let config = self.config;
            let Some(c) = self.conns.get_mut(conn.index, conn.generation) else { continue };
            c.deadline = None;
            let slow = c.partial_since.is_some_and(|s| s + config.message_timeout <= now);
            let idle =
                c.last_used + c.idle_limit <= now || (c.outbound && c.pins == 0 && c.last_used + config.linger <= now);
            if slow {
                self.close(conn, CloseReason::SlowSender);
            } else if idle {
                self.close(conn, CloseReason::Idle);
            } else {
                self.reschedule(conn);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next output; drain until `None`.
    pub fn poll_output(&mut self) -> Option<StreamOutput> {
        self.out.pop_front()
    }

    /// Drops the storage of emptied tables (after a burst; see `shed`).
    pub(crate) fn shed(&mut self) {
        crate::shed::shed(&mut self.by_peer);
        crate::shed::shed(&mut self.timers);
        crate::shed::shed(&mut self.out);
    }
}
