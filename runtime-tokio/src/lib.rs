//! `sipline-tokio`: drives the sans-IO [`sipline`] core on tokio.
//!
//! The runtime owns the sockets, the timer and one driver task; everything
//! else (the command channel, request futures, the dispatch of the core's
//! outputs) is [`sipline::driver`], shared with `sipline-smol` and
//! `sipline-blocking`.
//!
//! Two endpoints on loopback: Bob listens (a MESSAGE is answered 200 by
//! his endpoint and reported as an event), Alice sends him one.
//!
//! ```
//! use sipline::endpoint::{EndpointConfig, Event, Request};
//! use sipline::transport::Transport;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let listen = |aor: &str| EndpointConfig::new(aor).listen(Transport::Udp, "127.0.0.1:0".parse().unwrap());
//!     let (bob, mut bob_events) = sipline_tokio::bind(listen("sip:bob@127.0.0.1")).await?;
//!     let (alice, _events) = sipline_tokio::bind(listen("sip:alice@127.0.0.1")).await?;
//!     let at = bob.local_addr(Transport::Udp).ok_or("not bound")?;
//!     let ok = alice.send(Request::message(&format!("sip:bob@{at}"), "text/plain", b"hi".to_vec())).await?;
//!     assert_eq!((ok.code, ok.reason.as_str()), (200, "OK"));
//!     while let Some(event) = bob_events.next().await {
//!         if let Event::Message { body, .. } = event {
//!             assert_eq!(body, b"hi");
//!             break;
//!         }
//!     }
//!     alice.shutdown().await;
//!     bob.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Sessions: [`Endpoint::invite`] returns the session's handle, and what
//! happens to it comes as [`Event::Session`](sipline::endpoint::Event::Session)
//! events on the same stream; an incoming INVITE comes as
//! [`Event::IncomingSession`](sipline::endpoint::Event::IncomingSession),
//! answered with [`Endpoint::ring`], [`Endpoint::accept`] or
//! [`Endpoint::reject`].
//!
//! ```no_run
//! use sipline::endpoint::{Event, Request, SessionEvent};
//!
//! # async fn demo(endpoint: sipline_tokio::Endpoint, mut events: sipline_tokio::Events) -> Result<(), Box<dyn std::error::Error>> {
//! let offer = b"v=0\r\n".to_vec();
//! let call = endpoint.invite(Request::invite("sip:bob@127.0.0.1:5060", "application/sdp", offer)).await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Session { session, event: SessionEvent::Answered(ok) } if session == call => {
//!             println!("{} {}", ok.code, ok.reason);
//!             endpoint.hangup(call).await?;
//!         }
//!         Event::Session { session, event: SessionEvent::Ended(why) } if session == call => {
//!             println!("ended: {why:?}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Call [`bind`] inside a tokio runtime (it spawns the driver task there).

#[cfg(feature = "redis")]
pub mod redis_location;

pub use sipline;
pub use sipline::driver::{BindError, Error, Events, Handle as Endpoint};

use sipline::driver::{
    self, answer_from, AsyncIo, DatagramReaders, DatagramSocket, Driver, Input, Inputs, Io, StreamListener, UdpSockets,
    UnboundedSender,
};
use sipline::endpoint::EndpointConfig;
use sipline::transport::{ConnId, QueryId, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;

use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};

/// Binds an endpoint: listens where `config.listen` says (plus an
/// ephemeral UDP socket when it names none), starts its driver task and
/// returns the handle and the event stream. The bound addresses (the OS's
/// choice for port 0) are in [`Endpoint::local_addrs`].
pub async fn bind(config: EndpointConfig) -> Result<(Endpoint, Events), BindError> {
    let (mut driver, io) = bind_driver(config, false).await?;
    let (endpoint, events) = start(&mut driver);
    tokio::spawn(driver.run(io));
    Ok((endpoint, events))
}

/// A driver and its IO, every listener bound (`SO_REUSEPORT` on UDP when
/// `reuse_port`).
async fn bind_driver(config: EndpointConfig, reuse_port: bool) -> Result<(Driver<TcpStream>, TokioIo), BindError> {
    // Fresh randomness for the identifiers (std's hasher keys come from
    // the operating system).
    let entropy = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), Instant::now());
    let mut driver = Driver::new(config, entropy)?;
    let mut io = TokioIo::new(driver.inputs(), driver.endpoint().config().transport.udp_buffer);
    io.reuse_port = reuse_port;
    for (transport, addr) in driver.listeners() {
        let bound = io.listen(transport, addr).await.map_err(|source| BindError::Listen { transport, addr, source })?;
        driver.add_listener(transport, bound);
    }
    Ok((driver, io))
}

fn start(driver: &mut Driver<TcpStream>) -> (Endpoint, Events) {
    let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    driver.start(Instant::now(), unix)
}

/// Starts `configs.len()` endpoints serving together (issue 19: `sipline
/// serve --workers N`), each on a thread of its own with a
/// single-threaded tokio runtime, and returns their handles and event
/// streams, worker 0 first. Each config is given its
/// [`Worker`](sipline::endpoint::Worker) identity here.
///
/// Worker 0 binds every listener of its config; the others bind the same
/// addresses (worker 0's, port 0 resolved), all with `SO_REUSEPORT`: the
/// kernel spreads UDP senders and TCP/TLS connections over the workers,
/// each sender or connection always to the same one. What reaches a
/// worker but belongs to another goes there through the workers' queues
/// ([`Driver::set_workers`]): a response to another worker's request, a
/// message for a connection another worker accepted. What the workers
/// share is in their configs: clones of one
/// [`ServerConfig`](sipline::endpoint::ServerConfig) share its location
/// service, clones of one [`TransportConfig`](sipline::transport::TransportConfig)
/// the directory of accepted connections.
///
/// A worker runs until its endpoint shuts down ([`Endpoint::shutdown`]).
pub fn spawn_workers(configs: Vec<EndpointConfig>) -> Result<Vec<(Endpoint, Events)>, BindError> {
    let count = u16::try_from(configs.len()).unwrap_or(u16::MAX);
    let mut started = Vec::new();
    let mut queues = Vec::new();
    let mut handoffs = Vec::new();
    // Worker 0's bound addresses (the OS's choice for port 0), for the others.
    let mut bound: Option<Vec<(Transport, SocketAddr)>> = None;
    for (id, mut config) in (0..count).zip(configs) {
        config.worker = Some(sipline::endpoint::Worker::new(id, count));
        if let Some(bound) = &bound {
            config.listen.clone_from(bound);
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (peers_tx, peers_rx) = std::sync::mpsc::channel::<Vec<Inputs<TcpStream>>>();
        let reuse = count > 1;
        std::thread::Builder::new()
            .name(format!("sipline-worker-{id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BindError::Worker(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let (mut driver, io) = match bind_driver(config, reuse).await {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let inputs = driver.inputs();
                    let (endpoint, events) = start(&mut driver);
                    if ready_tx.send(Ok((endpoint, events, inputs))).is_err() {
                        return;
                    }
                    // Every worker's queue, once all are bound (a brief
                    // wait before this worker's loop begins).
                    let Ok(peers) = peers_rx.recv() else { return };
                    driver.set_workers(id, peers);
                    driver.run(io).await;
                });
            })
            .map_err(BindError::Worker)?;
        let (endpoint, events, inputs) = ready_rx
            .recv()
            .map_err(|_| BindError::Worker(std::io::Error::other("a worker ended while starting")))??;
        if bound.is_none() {
            bound = Some(endpoint.local_addrs().to_vec());
        }
        queues.push(inputs);
        handoffs.push(peers_tx);
        started.push((endpoint, events));
    }
    for peers in handoffs {
        let _ = peers.send(queues.clone());
    }
    Ok(started)
}

enum Conn {
    Connecting(AbortHandle),
    Open { queue: UnboundedSender<Vec<u8>>, reader: AbortHandle },
}

/// The tokio half of the driver: sockets and tasks.
struct TokioIo {
    inputs: Inputs<TcpStream>,
    udp: UdpSockets<std::net::UdpSocket>,
    /// The same sockets, read by the driver (`AsyncIo::poll_datagram`).
    readers: DatagramReaders<Udp>,
    /// Listeners, UDP readers, connects, lookups, stream readers.
    tasks: JoinSet<()>,
    /// Stream writers (given time to flush at shutdown).
    writers: JoinSet<()>,
    conns: BTreeMap<ConnId, Conn>,
    /// The receive and send buffer asked for on each UDP socket.
    udp_buffer: usize,
    /// `SO_REUSEPORT` on UDP sockets: one of several workers.
    reuse_port: bool,
}

impl TokioIo {
    fn new(inputs: Inputs<TcpStream>, udp_buffer: usize) -> TokioIo {
        TokioIo {
            inputs,
            udp_buffer,
            udp: UdpSockets::default(),
            readers: DatagramReaders::default(),
            tasks: JoinSet::new(),
            writers: JoinSet::new(),
            conns: BTreeMap::new(),
            reuse_port: false,
        }
    }

    async fn listen(&mut self, transport: Transport, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let inputs = self.inputs.clone();
        if transport == Transport::Udp {
            let (socket, _) = sipline_blocking::udp::udp_socket_shared(addr, self.udp_buffer, self.reuse_port)?;
            socket.set_nonblocking(true)?;
            let local = socket.local_addr()?;
            // Sends go straight to the kernel through a clone: tokio's
            // `try_send_to` says "would block" until the reactor has seen
            // the socket writable, which would drop the first datagram.
            self.udp.push(local, socket.try_clone()?);
            // The driver reads it itself (`AsyncIo::poll_datagram`).
            self.readers.push(local, Udp(UdpSocket::from_std(socket)?));
            return Ok(local);
        }
        let listener = if self.reuse_port {
            let std = sipline_blocking::udp::tcp_listener_shared(addr, true)?;
            std.set_nonblocking(true)?;
            TcpListener::from_std(std)?
        } else {
            TcpListener::bind(addr).await?
        };
        let local = listener.local_addr()?;
        self.tasks.spawn(driver::accept_streams(transport, local, Tcp(listener), inputs, tokio::time::sleep));
        Ok(local)
    }

    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        while self.writers.try_join_next().is_some() {}
    }
}

impl Io for TokioIo {
    type Stream = TcpStream;

    fn send_datagram(&mut self, local: Option<SocketAddr>, remote: SocketAddr, bytes: &[u8]) {
        self.udp.send(local, remote, bytes, std::net::UdpSocket::send_to);
    }

    fn connect(&mut self, conn: ConnId, remote: SocketAddr) {
        self.reap();
        let mut inputs = self.inputs.clone();
        let task = self.tasks.spawn(async move {
            let input = match tokio::time::timeout(driver::CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    Input::Connected { conn, stream }
                }
                _ => Input::ConnectFailed { conn },
            };
            inputs.send(input).await;
        });
        self.conns.insert(conn, Conn::Connecting(task));
    }

    fn adopt(&mut self, conn: ConnId, stream: TcpStream) {
        self.reap();
        let (read, write) = stream.into_split();
        let (queue, queued) = driver::write_queue();
        self.writers.spawn(driver::write_stream(conn, Compat(write), queued, self.inputs.clone()));
        let reader = self.tasks.spawn(driver::read_stream(conn, Compat(read), self.inputs.clone()));
        self.conns.insert(conn, Conn::Open { queue, reader });
    }

    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if let Some(Conn::Open { queue, .. }) = self.conns.get(&conn) {
            let _ = queue.unbounded_send(bytes);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.reap();
        match self.conns.remove(&conn) {
            Some(Conn::Connecting(task)) => task.abort(),
            // Dropping the queue lets the writer flush, shut its half down
            // and end; the reader ends now. The socket closes when both
            // halves are gone.
            Some(Conn::Open { reader, .. }) => reader.abort(),
            None => {}
        }
    }

    fn resolve(&mut self, query: QueryId, name: String) {
        let mut inputs = self.inputs.clone();
        self.tasks.spawn(async move {
            let answer = answer_from(tokio::net::lookup_host((name.as_str(), 0)).await);
            inputs.send(Input::Resolved { query, answer }).await;
        });
    }
}

impl AsyncIo for TokioIo {
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn poll_datagram(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<driver::Received> {
        self.readers.poll_recv(cx, buf)
    }

    async fn shutdown(&mut self) {
        self.tasks.shutdown().await;
        self.conns.clear();
        self.udp.clear();
        self.readers.clear();
        let flushed = async { while self.writers.join_next().await.is_some() {} };
        if tokio::time::timeout(driver::SHUTDOWN_GRACE, flushed).await.is_err() {
            tracing::debug!("stream writes unfinished at shutdown dropped");
        }
        self.writers.shutdown().await;
    }
}

/// A UDP socket for the shared datagram reader.
struct Udp(UdpSocket);

impl DatagramSocket for Udp {
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<(usize, SocketAddr)>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        let remote = ready!(self.0.poll_recv_from(cx, &mut buf))?;
        Poll::Ready(Ok((buf.filled().len(), remote)))
    }

    // With the kernel's arrival stamp (overload control's signal).
    fn poll_recv_stamped(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<(usize, SocketAddr, Option<Instant>)>> {
        loop {
            ready!(self.0.poll_recv_ready(cx))?;
            match self.0.try_io(tokio::io::Interest::READABLE, || sipline_blocking::udp::recv_stamped(&self.0, buf)) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

/// A TCP listener for the shared accept loop.
struct Tcp(TcpListener);

impl StreamListener for Tcp {
    type Stream = TcpStream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        let (stream, remote) = ready!(self.0.poll_accept(cx))?;
        let _ = stream.set_nodelay(true);
        Poll::Ready(Ok((stream, remote)))
    }
}

/// tokio's IO traits seen as `futures-io`'s, for the shared stream pumps.
struct Compat<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> futures_io::AsyncRead for Compat<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
