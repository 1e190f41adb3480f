//! `sipline-blocking`: drives the sans-IO [`sipline`] core on plain threads
//! and `std::net`, for programs without an async runtime.
//!
//! One driver thread runs the core; each UDP socket and listener has a
//! reader thread, each stream connection a reader and a writer thread, and
//! connects and name lookups run on short-lived threads. Everything else
//! (the command channel, request completion, the dispatch of the core's
//! outputs) is [`sipline::driver`], shared with `sipline-tokio` and
//! `sipline-smol`.
//!
//! Two endpoints on loopback: Alice sends Bob a MESSAGE, which his
//! endpoint answers 200.
//!
//! ```
//! use sipline::endpoint::{EndpointConfig, Request};
//! use sipline::transport::Transport;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listen = |aor: &str| EndpointConfig::new(aor).listen(Transport::Udp, "127.0.0.1:0".parse().unwrap());
//! let (bob, _bob_events) = sipline_blocking::bind(listen("sip:bob@127.0.0.1"))?;
//! let (alice, _events) = sipline_blocking::bind(listen("sip:alice@127.0.0.1"))?;
//! let at = bob.local_addr(Transport::Udp).ok_or("not bound")?;
//! let ok = alice.send(Request::message(&format!("sip:bob@{at}"), "text/plain", b"hi".to_vec()))?;
//! assert_eq!(ok.code, 200);
//! alice.shutdown();
//! bob.shutdown();
//! # Ok(()) }
//! ```
//!
//! Every blocking call is bounded: [`Endpoint::send`] and
//! [`Endpoint::send_in_session`] by the request's own timers (64·T1 at
//! most) or its connection's failure, the session commands
//! ([`Endpoint::invite`], [`Endpoint::accept`]…) and the subscription
//! commands ([`Endpoint::subscribe`], [`Endpoint::notify`],
//! [`Endpoint::refer`]…) by one turn of the driver (they return before
//! the peer answers), [`Endpoint::shutdown`]
//! by [`driver::SHUTDOWN_GRACE`], and [`Events::recv_timeout`] by its argument.

pub mod udp;

pub use sipline;
pub use sipline::driver::{BindError, Error};
pub use std::sync::mpsc::RecvTimeoutError;

use sipline::driver::{self, answer_from, Driver, Handle, Input, Inputs, Io, UdpSockets};
use sipline::endpoint::{
    Body, EndpointConfig, Event, IncomingId, Request, RespondError, Response, SendError, SessionError, SessionId,
    SubState, Subscribe, SubscriptionError, SubscriptionId,
};
use sipline::transport::{ConnId, QueryId, Transport};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

/// Binds an endpoint: listens where `config.listen` says (plus an
/// ephemeral UDP socket when it names none), starts the driver thread and
/// returns the endpoint and its events.
pub fn bind(config: EndpointConfig) -> Result<(Endpoint, Events), BindError> {
    // Fresh randomness for the identifiers (std's hasher keys come from
    // the operating system).
    let entropy = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), Instant::now());
    let mut driver = Driver::new(config, entropy)?;
    let mut io = ThreadIo::new(driver.inputs(), driver.endpoint().config().transport.udp_buffer);
    for (transport, addr) in driver.listeners() {
        match io.listen(transport, addr) {
            Ok(bound) => driver.add_listener(transport, bound),
            Err(source) => {
                io.shutdown();
                return Err(BindError::Listen { transport, addr, source });
            }
        }
    }
    let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (handle, events) = driver.start(Instant::now(), unix);
    thread::Builder::new().name("sipline-driver".into()).spawn(move || run(driver, io)).map_err(|source| {
        BindError::Listen { transport: Transport::Udp, addr: SocketAddr::from(([0; 4], 0)), source }
    })?;
    Ok((Endpoint { handle }, Events(events)))
}

/// A running endpoint (cheap to clone; every clone drives the same one).
/// When the last clone is dropped the endpoint shuts down.
#[derive(Clone, Debug)]
pub struct Endpoint {
    handle: Handle,
}

impl Endpoint {
    /// Sends `request` and waits for its 2xx, or for why there is none.
    pub fn send(&self, request: Request) -> Result<Response, Error> {
        block_on(self.handle.send(request))
    }

    /// Answers an incoming request ([`Event::Incoming`]) with `code`.
    pub fn respond(&self, incoming: IncomingId, code: u16, reason: &str) -> Result<(), RespondError> {
        block_on(self.handle.respond(incoming, code, reason))
    }

    /// Starts a session (see [`Handle::invite`]): sends the INVITE and
    /// returns its handle at once; the answer comes as
    /// [`Event::Session`] events.
    ///
    /// ```no_run
    /// # use sipline::endpoint::{EndpointConfig, Event, Request, SessionEvent};
    /// # fn demo(endpoint: sipline_blocking::Endpoint, mut events: sipline_blocking::Events) -> Result<(), Box<dyn std::error::Error>> {
    /// let offer = b"v=0\r\n".to_vec();
    /// let call = endpoint.invite(Request::invite("sip:bob@127.0.0.1:5060", "application/sdp", offer))?;
    /// for event in events.by_ref() {
    ///     match event {
    ///         Event::Session { session, event: SessionEvent::Answered(ok) } if session == call => {
    ///             println!("{} {}", ok.code, ok.reason);
    ///             endpoint.hangup(call)?;
    ///         }
    ///         Event::Session { session, event: SessionEvent::Ended(why) } if session == call => {
    ///             println!("ended: {why:?}");
    ///             break;
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn invite(&self, request: Request) -> Result<SessionId, SendError> {
        block_on(self.handle.invite(request))
    }

    /// Sends a provisional response to an incoming session (see
    /// [`Handle::ring`]).
    pub fn ring(&self, session: SessionId, code: u16, body: Option<&Body>) -> Result<(), SessionError> {
        block_on(self.handle.ring(session, code, body))
    }

    /// Accepts an incoming session or re-INVITE with 200 (see
    /// [`Handle::accept`]).
    pub fn accept(&self, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        block_on(self.handle.accept(session, body))
    }

    /// Rejects an incoming session or re-INVITE (see [`Handle::reject`]).
    pub fn reject(
        &self,
        session: SessionId,
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), SessionError> {
        block_on(self.handle.reject(session, code, reason, headers))
    }

    /// Ends a session: CANCEL, BYE or 603 (see [`Handle::hangup`]).
    pub fn hangup(&self, session: SessionId) -> Result<(), SessionError> {
        block_on(self.handle.hangup(session))
    }

    /// Sends a re-INVITE with a new offer (see [`Handle::reinvite`]).
    pub fn reinvite(&self, session: SessionId, body: Option<Body>) -> Result<(), SessionError> {
        block_on(self.handle.reinvite(session, body))
    }

    /// Sends the ACK for a late offer with the answer (see
    /// [`Handle::acknowledge`]).
    pub fn acknowledge(&self, session: SessionId, body: Option<Body>) -> Result<(), SessionError> {
        block_on(self.handle.acknowledge(session, body))
    }

    /// Sends a request inside a session's dialog and waits for its 2xx or
    /// why there is none (see [`Handle::send_in_session`]).
    pub fn send_in_session(&self, session: SessionId, request: Request) -> Result<Response, Error> {
        block_on(self.handle.send_in_session(session, request))
    }

    /// Subscribes to an event package at a target (RFC 6665; see
    /// [`Handle::subscribe`]): sends the SUBSCRIBE and returns the
    /// subscription's handle at once; its answer and NOTIFYs come as
    /// [`Event::Subscription`] events.
    ///
    /// ```no_run
    /// # use sipline::endpoint::{Event, Subscribe, SubscriptionEnd, SubscriptionEvent};
    /// # use sipline::event::Presence;
    /// # fn demo(endpoint: sipline_blocking::Endpoint, mut events: sipline_blocking::Events) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut presence = Subscribe::new("sip:bob@127.0.0.1:5060", "presence");
    /// presence.accept = vec![Presence::CONTENT_TYPE.to_owned()];
    /// presence.expires = 600;
    /// let watching = endpoint.subscribe(presence)?;
    /// for event in events.by_ref() {
    ///     let Event::Subscription { subscription, event } = event else { continue };
    ///     if subscription != watching {
    ///         continue;
    ///     }
    ///     match event {
    ///         SubscriptionEvent::Notified(n) => {
    ///             let open = n.body.as_ref().and_then(|b| Presence::parse(&b.bytes).ok()).map(|p| p.is_open());
    ///             println!("{:?}: open {open:?}", n.state);
    ///         }
    ///         SubscriptionEvent::Ended(SubscriptionEnd::Terminated { reason, .. }) => {
    ///             println!("terminated: {reason:?}");
    ///             break;
    ///         }
    ///         SubscriptionEvent::Ended(why) => {
    ///             println!("ended: {why:?}");
    ///             break;
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, sub: Subscribe) -> Result<SubscriptionId, SendError> {
        block_on(self.handle.subscribe(sub))
    }

    /// Ends a subscription of ours with `Expires: 0` (see
    /// [`Handle::unsubscribe`]); it ends when the last NOTIFY comes.
    pub fn unsubscribe(&self, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        block_on(self.handle.unsubscribe(subscription))
    }

    /// Accepts an incoming subscription ([`Event::IncomingSubscription`])
    /// and sends its first NOTIFY with `state` and `body` (see
    /// [`Handle::accept_subscription`]).
    pub fn accept_subscription(
        &self,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        block_on(self.handle.accept_subscription(subscription, state, body))
    }

    /// Refuses an incoming subscription or REFER with a final status
    /// 300–699 (see [`Handle::reject_subscription`]).
    pub fn reject_subscription(
        &self,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        block_on(self.handle.reject_subscription(subscription, code, reason))
    }

    /// Tells a subscriber a new state with a NOTIFY (see
    /// [`Handle::notify`]).
    pub fn notify(
        &self,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        block_on(self.handle.notify(subscription, state, body))
    }

    /// Ends a subscription we serve with a last NOTIFY,
    /// `terminated;reason=REASON` (see [`Handle::terminate_subscription`]).
    pub fn terminate_subscription(
        &self,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        block_on(self.handle.terminate_subscription(subscription, reason, body))
    }

    /// Asks the peer of `session` to call `refer_to`, a blind transfer
    /// (RFC 3515; see [`Handle::refer`]); returns the implicit
    /// subscription whose NOTIFYs tell how the new call goes.
    pub fn refer(&self, session: SessionId, refer_to: &str) -> Result<SubscriptionId, SubscriptionError> {
        block_on(self.handle.refer(session, refer_to))
    }

    /// Accepts a transfer ([`Event::Refer`]): 202, then the first NOTIFY,
    /// `SIP/2.0 100 Trying` (see [`Handle::accept_refer`]).
    pub fn accept_refer(&self, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        block_on(self.handle.accept_refer(subscription))
    }

    /// Reports how the call a transfer asked for goes, as
    /// `SIP/2.0 CODE REASON`; a final status ends the subscription (see
    /// [`Handle::refer_progress`]).
    pub fn refer_progress(
        &self,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        block_on(self.handle.refer_progress(subscription, code, reason))
    }

    /// Shuts down (see [`Handle::shutdown`]) and waits until every thread
    /// that holds a socket has ended.
    pub fn shutdown(&self) {
        block_on(self.handle.shutdown());
    }

    /// Removes the registration (see [`Handle::unregister`]).
    pub fn unregister(&self) {
        self.handle.unregister();
    }

    /// Registers again (see [`Handle::reregister`]).
    pub fn reregister(&self) {
        self.handle.reregister();
    }

    /// The addresses the endpoint listens on, per transport.
    pub fn local_addrs(&self) -> &[(Transport, SocketAddr)] {
        self.handle.local_addrs()
    }

    /// The first address the endpoint listens on over `transport`.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.handle.local_addr(transport)
    }
}

/// The endpoint's events, by blocking receive or iteration; the iterator
/// ends after [`Event::ShutDown`].
#[derive(Debug)]
pub struct Events(driver::Events);

impl Events {
    /// Waits for the next event; `None` once the endpoint has shut down.
    pub fn recv(&mut self) -> Option<Event> {
        block_on(self.0.next())
    }

    /// Waits up to `timeout` for the next event.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        match block_on_until(self.0.next(), Instant::now() + timeout) {
            Some(Some(event)) => Ok(event),
            Some(None) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
}

impl Iterator for Events {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn this_thread_waker() -> Waker {
    Waker::from(Arc::new(Unpark(thread::current())))
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = this_thread_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

fn block_on_until<F: Future>(future: F, deadline: Instant) -> Option<F::Output> {
    let mut future = pin!(future);
    let waker = this_thread_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

/// The driver thread: takes each command and input as it comes, runs the
/// core's timer when due (with the time it woke at), parks in between.
fn run(mut driver: Driver<TcpStream>, mut io: ThreadIo) {
    let waker = this_thread_waker();
    let mut cx = Context::from_waker(&waker);
    driver.prime(Instant::now(), &mut io);
    while !driver.is_finished() {
        let now = Instant::now();
        let deadline = driver.poll_timeout();
        if deadline.is_some_and(|d| d <= now) {
            driver.handle_timeout(now, &mut io);
            continue;
        }
        match driver.poll_message(&mut cx) {
            Poll::Ready(message) => driver.handle(Instant::now(), message, &mut io),
            Poll::Pending => match deadline {
                Some(d) => thread::park_timeout(d - now),
                None => thread::park(),
            },
        }
    }
    io.shutdown();
    driver.finish();
}

/// One stream connection's reader and writer threads. They share one
/// socket (one descriptor): it closes when the last of them ends, whatever
/// the driver still holds here (`socket` only lets shutdown stop them).
struct Stream {
    socket: Weak<TcpStream>,
    threads: [JoinHandle<()>; 2],
}

impl Stream {
    fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

enum Conn {
    Connecting,
    Open { queue: mpsc::Sender<Vec<u8>>, socket: Arc<TcpStream>, stream: Stream },
}

/// The threads-and-`std::net` half of the driver.
struct ThreadIo {
    inputs: Inputs<TcpStream>,
    stop: Arc<AtomicBool>,
    udp: UdpSockets<Arc<UdpSocket>>,
    tcp_addrs: Vec<SocketAddr>,
    /// UDP and listener threads.
    threads: Vec<JoinHandle<()>>,
    conns: BTreeMap<ConnId, Conn>,
    /// Closed connections whose writer may still be flushing.
    closing: Vec<Stream>,
    /// The receive and send buffer asked for on each UDP socket.
    udp_buffer: usize,
}

/// How long a UDP reader waits before it looks at the stop flag again
/// (shutdown also wakes it with a datagram).
const UDP_POLL: Duration = Duration::from_secs(1);

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_owned()).spawn(f)
}

/// Where to reach our own socket bound at `addr` (loopback for a wildcard).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        a => a,
    }
}

impl ThreadIo {
    fn new(inputs: Inputs<TcpStream>, udp_buffer: usize) -> ThreadIo {
        ThreadIo {
            inputs,
            udp_buffer,
            stop: Arc::new(AtomicBool::new(false)),
            udp: UdpSockets::default(),
            tcp_addrs: Vec::new(),
            threads: Vec::new(),
            conns: BTreeMap::new(),
            closing: Vec::new(),
        }
    }

    fn listen(&mut self, transport: Transport, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let mut inputs = self.inputs.clone();
        let stop = self.stop.clone();
        if transport == Transport::Udp {
            let (socket, _) = udp::udp_socket(addr, self.udp_buffer)?;
            let socket = Arc::new(socket);
            socket.set_read_timeout(Some(UDP_POLL))?;
            let local = socket.local_addr()?;
            let reader = socket.clone();
            self.threads.push(spawn("sipline-udp", move || {
                let mut buf = vec![0u8; 65_535];
                while !stop.load(Ordering::Acquire) {
                    match reader.recv_from(&mut buf) {
                        Ok((n, remote)) if !stop.load(Ordering::Acquire) => {
                            let bytes = buf[..n].to_vec();
                            if !block_on(inputs.send(Input::Datagram { local, remote, bytes })) {
                                return;
                            }
                        }
                        // Timeouts, ICMP errors: look at the flag again.
                        _ => {}
                    }
                }
            })?);
            self.udp.push(local, socket);
            return Ok(local);
        }
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        self.threads.push(spawn("sipline-accept", move || {
            for accepted in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                match accepted.and_then(|s| s.peer_addr().map(|remote| (s, remote))) {
                    Ok((stream, remote)) => {
                        let _ = stream.set_nodelay(true);
                        if !block_on(inputs.send(Input::Accepted { transport, remote, stream })) {
                            return;
                        }
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait, don't spin.
                        tracing::warn!(%local, error = %e, "accept failed");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?);
        self.tcp_addrs.push(local);
        Ok(local)
    }

    fn reap(&mut self) {
        let (done, open): (Vec<Stream>, Vec<Stream>) = self.closing.drain(..).partition(Stream::is_finished);
        self.closing = open;
        done.into_iter().for_each(Stream::join);
    }

    /// Stops every thread that holds a socket and waits for them.
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocked readers: a datagram to each UDP socket, a
        // connection to each listener.
        for (addr, socket) in self.udp.iter() {
            let _ = socket.send_to(&[], reachable(addr));
        }
        for addr in &self.tcp_addrs {
            let _ = TcpStream::connect_timeout(&reachable(*addr), Duration::from_secs(1));
        }
        let open: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in open {
            self.close(conn);
        }
        self.conns.clear();
        let deadline = Instant::now() + driver::SHUTDOWN_GRACE;
        while !self.closing.iter().all(Stream::is_finished) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for s in std::mem::take(&mut self.closing) {
            if let Some(socket) = s.socket.upgrade() {
                let _ = socket.shutdown(Shutdown::Both);
            }
            s.join();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.udp.clear();
    }
}

impl Io for ThreadIo {
    type Stream = TcpStream;

    fn send_datagram(&mut self, local: Option<SocketAddr>, remote: SocketAddr, bytes: &[u8]) {
        self.udp.send(local, remote, bytes, |socket, bytes, remote| socket.send_to(bytes, remote));
    }

    fn connect(&mut self, conn: ConnId, remote: SocketAddr) {
        self.reap();
        let mut inputs = self.inputs.clone();
        // Not joined: it ends within the connect timeout, and its report
        // is ignored once the core has given the connection up.
        let started = spawn("sipline-connect", move || {
            let input = match TcpStream::connect_timeout(&remote, driver::CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Input::Connected { conn, stream }
                }
                Err(_) => Input::ConnectFailed { conn },
            };
            block_on(inputs.send(input));
        });
        if started.is_ok() {
            self.conns.insert(conn, Conn::Connecting);
        } else {
            self.inputs.clone().try_send(Input::ConnectFailed { conn });
        }
    }

    fn adopt(&mut self, conn: ConnId, stream: TcpStream) {
        self.reap();
        let socket = Arc::new(stream);
        let (queue, queued) = mpsc::channel::<Vec<u8>>();
        let (reader, mut inputs) = (socket.clone(), self.inputs.clone());
        let read = spawn("sipline-read", move || {
            let mut buf = vec![0u8; driver::READ_CHUNK];
            loop {
                match (&*reader).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !block_on(inputs.send(Input::StreamData { conn, bytes: buf[..n].to_vec() })) {
                            return;
                        }
                    }
                }
            }
            // The peer's FIN or a read error: the driver then closes our
            // side (`Io::close`).
            block_on(inputs.send(Input::Closed { conn }));
        });
        let (writer, mut inputs) = (socket.clone(), self.inputs.clone());
        let write = spawn("sipline-write", move || {
            for bytes in queued {
                if (&*writer).write_all(&bytes).is_err() {
                    block_on(inputs.send(Input::Closed { conn }));
                    return;
                }
            }
            let _ = writer.shutdown(Shutdown::Write);
        });
        if let (Ok(r), Ok(w)) = (read, write) {
            let stream = Stream { socket: Arc::downgrade(&socket), threads: [r, w] };
            self.conns.insert(conn, Conn::Open { queue, socket, stream });
        } else {
            // A thread that did start ends at once (not joined: it may be
            // reporting to this very thread): the socket is shut down under
            // it and its queue is gone.
            let _ = socket.shutdown(Shutdown::Both);
            self.inputs.clone().try_send(Input::Closed { conn });
        }
    }

    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if let Some(Conn::Open { queue, .. }) = self.conns.get(&conn) {
            let _ = queue.send(bytes);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.reap();
        if let Some(Conn::Open { queue, socket, stream }) = self.conns.remove(&conn) {
            // The writer flushes what is queued, then closes its side; the
            // reader stops now. The socket closes when both have ended
            // (their threads are joined later, by `reap`).
            drop(queue);
            let _ = socket.shutdown(Shutdown::Read);
            self.closing.push(stream);
        }
    }

    fn resolve(&mut self, query: QueryId, name: String) {
        let mut inputs = self.inputs.clone();
        let started = spawn("sipline-resolve", move || {
            let answer = answer_from((name.as_str(), 0).to_socket_addrs());
            block_on(inputs.send(Input::Resolved { query, answer }));
        });
        if let Err(e) = started {
            let answer = sipline::transport::Answer::Failed(e.to_string());
            self.inputs.clone().try_send(Input::Resolved { query, answer });
        }
    }
}
