//! `sipline-smol`: drives the sans-IO [`sipline`] core on smol (the
//! successor of the discontinued async-std).
//!
//! The runtime owns the sockets, the timer and one driver task on smol's
//! global executor; everything else (the command channel, request futures,
//! the dispatch of the core's outputs) is [`sipline::driver`], shared with
//! `sipline-tokio` and `sipline-blocking`.
//!
//! Two endpoints on loopback: Alice sends Bob a MESSAGE, which his
//! endpoint answers 200.
//!
//! ```
//! use sipline::endpoint::{EndpointConfig, Request};
//! use sipline::transport::Transport;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let listen = |aor: &str| EndpointConfig::new(aor).listen(Transport::Udp, "127.0.0.1:0".parse().unwrap());
//!     let (bob, _bob_events) = sipline_smol::bind(listen("sip:bob@127.0.0.1")).await?;
//!     let (alice, _events) = sipline_smol::bind(listen("sip:alice@127.0.0.1")).await?;
//!     let at = bob.local_addr(Transport::Udp).ok_or("not bound")?;
//!     let ok = alice.send(Request::message(&format!("sip:bob@{at}"), "text/plain", b"hi".to_vec())).await?;
//!     assert_eq!(ok.code, 200);
//!     alice.shutdown().await;
//!     bob.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

pub use sipline;
pub use sipline::driver::{BindError, Error, Events, Handle as Endpoint};

use sipline::driver::{
    self, answer_from, AsyncIo, DatagramReaders, DatagramSocket, Driver, Input, Inputs, Io, StreamListener, UdpSockets,
    UnboundedSender,
};
use sipline::endpoint::EndpointConfig;
use sipline::transport::{ConnId, QueryId, Transport};
use smol::{Async, Task, Timer};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};

/// Binds an endpoint: listens where `config.listen` says (plus an
/// ephemeral UDP socket when it names none), starts its driver task and
/// returns the handle and the event stream. The bound addresses (the OS's
/// choice for port 0) are in [`Endpoint::local_addrs`].
// Async like `sipline_tokio::bind`, so the three runtimes share one API.
#[allow(clippy::unused_async)]
pub async fn bind(config: EndpointConfig) -> Result<(Endpoint, Events), BindError> {
    // Fresh randomness for the identifiers (std's hasher keys come from
    // the operating system).
    let entropy = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), Instant::now());
    let mut driver = Driver::new(config, entropy)?;
    let mut io = SmolIo::new(driver.inputs(), driver.endpoint().config().transport.udp_buffer);
    for (transport, addr) in driver.listeners() {
        let bound = io.listen(transport, addr).map_err(|source| BindError::Listen { transport, addr, source })?;
        driver.add_listener(transport, bound);
    }
    let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (endpoint, events) = driver.start(Instant::now(), unix);
    smol::spawn(driver.run(io)).detach();
    Ok((endpoint, events))
}

enum Conn {
    Connecting(Task<()>),
    Open { queue: UnboundedSender<Vec<u8>>, reader: Task<()> },
}

/// The smol half of the driver: sockets and tasks (a dropped task is
/// cancelled).
struct SmolIo {
    inputs: Inputs<Async<TcpStream>>,
    udp: UdpSockets<Arc<Async<UdpSocket>>>,
    /// The same sockets, read by the driver (`AsyncIo::poll_datagram`).
    readers: DatagramReaders<Udp>,
    /// Listeners, UDP readers, lookups.
    tasks: Vec<Task<()>>,
    /// Stream writers (given time to flush at shutdown).
    writers: Vec<Task<()>>,
    conns: BTreeMap<ConnId, Conn>,
    /// The receive and send buffer asked for on each UDP socket.
    udp_buffer: usize,
}

impl SmolIo {
    fn new(inputs: Inputs<Async<TcpStream>>, udp_buffer: usize) -> SmolIo {
        SmolIo {
            inputs,
            udp_buffer,
            udp: UdpSockets::default(),
            readers: DatagramReaders::default(),
            tasks: Vec::new(),
            writers: Vec::new(),
            conns: BTreeMap::new(),
        }
    }

    fn listen(&mut self, transport: Transport, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let inputs = self.inputs.clone();
        if transport == Transport::Udp {
            let (socket, _) = sipline_blocking::udp::udp_socket(addr, self.udp_buffer)?;
            let socket = Arc::new(Async::new(socket)?);
            let local = socket.get_ref().local_addr()?;
            self.udp.push(local, socket.clone());
            // The driver reads it itself (`AsyncIo::poll_datagram`).
            self.readers.push(local, Udp(socket));
            return Ok(local);
        }
        let listener = Async::<TcpListener>::bind(addr)?;
        let local = listener.get_ref().local_addr()?;
        let pause = |d| Timer::after(d);
        self.tasks.push(smol::spawn(driver::accept_streams(transport, local, Tcp(listener), inputs, pause)));
        Ok(local)
    }

    fn reap(&mut self) {
        self.tasks.retain(|t| !t.is_finished());
        self.writers.retain(|t| !t.is_finished());
    }
}

impl Io for SmolIo {
    type Stream = Async<TcpStream>;

    fn send_datagram(&mut self, local: Option<SocketAddr>, remote: SocketAddr, bytes: &[u8]) {
        // The socket is non-blocking: a full buffer fails the send at once.
        self.udp.send(local, remote, bytes, |socket, bytes, remote| socket.get_ref().send_to(bytes, remote));
    }

    fn connect(&mut self, conn: ConnId, remote: SocketAddr) {
        self.reap();
        let mut inputs = self.inputs.clone();
        let task = smol::spawn(async move {
            let connect = async { Async::<TcpStream>::connect(remote).await.ok() };
            let give_up = async {
                Timer::after(driver::CONNECT_TIMEOUT).await;
                None
            };
            let input = match smol::future::or(connect, give_up).await {
                Some(stream) => {
                    let _ = stream.get_ref().set_nodelay(true);
                    Input::Connected { conn, stream }
                }
                None => Input::ConnectFailed { conn },
            };
            inputs.send(input).await;
        });
        self.conns.insert(conn, Conn::Connecting(task));
    }

    fn adopt(&mut self, conn: ConnId, stream: Async<TcpStream>) {
        self.reap();
        let stream = Shared(Arc::new(stream));
        let (queue, queued) = driver::write_queue();
        let writer = driver::write_stream(conn, Shared(stream.0.clone()), queued, self.inputs.clone());
        self.writers.push(smol::spawn(writer));
        let reader = smol::spawn(driver::read_stream(conn, stream, self.inputs.clone()));
        self.conns.insert(conn, Conn::Open { queue, reader });
    }

    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if let Some(Conn::Open { queue, .. }) = self.conns.get(&conn) {
            let _ = queue.unbounded_send(bytes);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.reap();
        // Dropping a task cancels it; dropping the queue lets the writer
        // flush, shut its side down and end. The socket closes with the
        // last of the two.
        self.conns.remove(&conn);
    }

    fn resolve(&mut self, query: QueryId, name: String) {
        let mut inputs = self.inputs.clone();
        self.tasks.push(smol::spawn(async move {
            let answer = answer_from(smol::net::resolve((name.as_str(), 0)).await.map(Vec::into_iter));
            inputs.send(Input::Resolved { query, answer }).await;
        }));
    }
}

impl AsyncIo for SmolIo {
    type Sleep = Timer;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Timer {
        Timer::at(deadline)
    }

    fn poll_datagram(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<driver::Received> {
        self.readers.poll_recv(cx, buf)
    }

    async fn shutdown(&mut self) {
        let mut tasks: Vec<Task<()>> = std::mem::take(&mut self.tasks);
        for conn in std::mem::take(&mut self.conns).into_values() {
            match conn {
                Conn::Connecting(task) | Conn::Open { reader: task, .. } => tasks.push(task),
            }
        }
        for task in tasks {
            task.cancel().await;
        }
        self.udp.clear();
        self.readers.clear();
        let mut writers = std::mem::take(&mut self.writers);
        let flushed = async {
            for w in &mut writers {
                w.await;
            }
        };
        let grace = async {
            Timer::after(driver::SHUTDOWN_GRACE).await;
        };
        smol::future::or(flushed, grace).await;
        for w in writers {
            w.cancel().await;
        }
    }
}

/// Retries a non-blocking call until it stops saying "would block",
/// waiting with `ready` in between.
fn poll_nonblocking<T>(
    cx: &mut Context<'_>,
    mut call: impl FnMut() -> std::io::Result<T>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>>,
) -> Poll<std::io::Result<T>> {
    loop {
        match call() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            },
            result => return Poll::Ready(result),
        }
    }
}

/// A UDP socket for the shared datagram reader.
struct Udp(Arc<Async<UdpSocket>>);

impl DatagramSocket for Udp {
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<(usize, SocketAddr)>> {
        poll_nonblocking(cx, || self.0.get_ref().recv_from(buf), |cx| self.0.poll_readable(cx))
    }

    // With the kernel's arrival stamp (overload control's signal).
    fn poll_recv_stamped(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<(usize, SocketAddr, Option<std::time::Instant>)>> {
        poll_nonblocking(
            cx,
            || sipline_blocking::udp::recv_stamped(self.0.get_ref(), buf),
            |cx| self.0.poll_readable(cx),
        )
    }
}

/// A TCP listener for the shared accept loop.
struct Tcp(Async<TcpListener>);

impl StreamListener for Tcp {
    type Stream = Async<TcpStream>;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<(Async<TcpStream>, SocketAddr)>> {
        let (stream, remote) =
            ready!(poll_nonblocking(cx, || self.0.get_ref().accept(), |cx| self.0.poll_readable(cx)))?;
        let _ = stream.set_nodelay(true);
        Poll::Ready(Ok((Async::new(stream)?, remote)))
    }
}

/// One stream shared by its reader and writer tasks (smol's `&Async`
/// reads and writes).
struct Shared(Arc<Async<TcpStream>>);

impl futures_io::AsyncRead for Shared {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for Shared {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}
