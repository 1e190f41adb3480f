//! How the sipline runtimes (`sipline-tokio`, `sipline-smol` and this
//! one) make their UDP sockets, written once: here, in the std::net
//! runtime; the async runtimes hand the socket to their reactor. Sockets
//! only: no protocol logic lives here (DESIGN.md, "Runtimes").
//!
//! A UDP socket gets large receive and send buffers before it is bound
//! ([`udp_socket`]): a SIP server takes bursts of datagrams (a flood of
//! OPTIONS, every phone re-registering after an outage), and with the
//! usual 208 KiB the kernel drops what does not fit before the runtime
//! reads it (`UdpRcvbufErrors` in `/proc/net/snmp`). The kernel may grant
//! less than asked (Linux caps it at `net.core.rmem_max` / `wmem_max` for
//! unprivileged processes): what it granted is read back, logged at info
//! (target `sipline::net`) and returned.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, UdpSocket};

/// The buffer sizes a socket ended up with, as the kernel reports them
/// (Linux reports twice what it reserves for data: its bookkeeping is
/// counted in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// `SO_RCVBUF`, read back.
    pub receive: usize,
    /// `SO_SNDBUF`, read back.
    pub send: usize,
}

/// A UDP socket bound at `addr` (blocking, as `std` makes them) whose
/// receive and send buffers were set to `buffer` bytes before binding (0:
/// left at the system's default), with the sizes granted. A size refused
/// outright is logged and the socket used as it is; only creating or
/// binding the socket fails the call.
pub fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<(UdpSocket, Buffers)> {
    udp_socket_shared(addr, buffer, false)
}

/// [`udp_socket`], with `SO_REUSEPORT` set before binding when
/// `reuse_port` is true (Linux, BSDs): several sockets, one per worker
/// thread of a `serve` (issue 19), bind one address, and the kernel
/// spreads incoming datagrams over them by the sender's address and port,
/// so one sender's datagrams always reach the same socket.
pub fn udp_socket_shared(addr: SocketAddr, buffer: usize, reuse_port: bool) -> std::io::Result<(UdpSocket, Buffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    if buffer > 0 {
        if let Err(e) = socket.set_recv_buffer_size(buffer) {
            tracing::warn!(target: "sipline::net", %addr, buffer, error = %e, "cannot set the UDP receive buffer");
        }
        if let Err(e) = socket.set_send_buffer_size(buffer) {
            tracing::warn!(target: "sipline::net", %addr, buffer, error = %e, "cannot set the UDP send buffer");
        }
    }
    socket.bind(&addr.into())?;
    enable_timestamps(&socket);
    let granted = Buffers { receive: socket.recv_buffer_size()?, send: socket.send_buffer_size()? };
    let socket = UdpSocket::from(socket);
    let local = socket.local_addr()?;
    tracing::info!(
        target: "sipline::net",
        %local,
        requested = buffer,
        receive = granted.receive,
        send = granted.send,
        "UDP socket buffers"
    );
    Ok((socket, granted))
}

/// Asks the kernel to stamp each datagram with when it arrived
/// (`SO_TIMESTAMPNS`, Linux), read back by [`recv_stamped`]; elsewhere, or
/// if refused, datagrams come unstamped (overload control then has no
/// signal: it never refuses).
fn enable_timestamps(socket: &Socket) {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true) {
        tracing::warn!(target: "sipline::net", error = %e, "no receive timestamps on a UDP socket");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Receives one datagram from `socket` (non-blocking or not, as it was
/// set) with the instant it reached the machine, when the kernel stamped
/// it (Linux, `SO_TIMESTAMPNS`): the time it waited in the socket's
/// receive buffer is `Instant::now() - stamp`, the runtime's queueing delay
/// (issue 19: overload control acts on it). A stamp from the future or
/// more than a minute old (a wall clock that jumped) is left out.
pub fn recv_stamped<S: std::os::fd::AsFd>(
    socket: &S,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<std::time::Instant>)> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage};
        use std::os::fd::AsRawFd;
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let fd = socket.as_fd().as_raw_fd();
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut space), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
        let remote = msg
            .address
            .and_then(|a| match a.family() {
                Some(nix::sys::socket::AddressFamily::Inet) => a.as_sockaddr_in().map(|s| SocketAddr::V4((*s).into())),
                Some(nix::sys::socket::AddressFamily::Inet6) => {
                    a.as_sockaddr_in6().map(|s| SocketAddr::V6((*s).into()))
                }
                _ => None,
            })
            .ok_or_else(|| std::io::Error::other("a datagram with no IP source address"))?;
        let mut stamp = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    stamp = arrival(ts.tv_sec(), ts.tv_nsec());
                }
            }
        }
        Ok((msg.bytes, remote, stamp))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let std = socket.as_fd().try_clone_to_owned().map(UdpSocket::from)?;
        let (n, remote) = std.recv_from(buf)?;
        Ok((n, remote, None))
    }
}

/// The `Instant` of a wall-clock arrival time (`CLOCK_REALTIME` seconds
/// and nanoseconds), if it is within the last minute.
#[cfg(target_os = "linux")]
fn arrival(secs: i64, nanos: i64) -> Option<std::time::Instant> {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(secs).ok()?)
        + std::time::Duration::from_nanos(u64::try_from(nanos).ok()?);
    let waited = std::time::SystemTime::now().duration_since(at).ok()?;
    (waited < std::time::Duration::from_secs(60)).then(|| std::time::Instant::now().checked_sub(waited)).flatten()
}

/// A TCP listener bound at `addr` (blocking, as `std` makes them), with
/// `SO_REUSEPORT` set before binding when `reuse_port` is true: the
/// listeners of several workers share one address and the kernel spreads
/// incoming connections over them (issue 19). `SO_REUSEADDR` too, as
/// `std` sets it on Unix.
pub fn tcp_listener_shared(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
fn set_reuse_port(socket: &Socket) -> std::io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))))]
fn set_reuse_port(_: &Socket) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "SO_REUSEPORT is not available here"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel limit from `/proc/sys/net/core/` (Linux), if readable.
    fn sysctl(name: &str) -> Option<usize> {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}")).ok()?.trim().parse().ok()
    }

    /// The buffer an unbound socket gets by default.
    fn default_buffers() -> Buffers {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        Buffers { receive: s.recv_buffer_size().expect("SO_RCVBUF"), send: s.send_buffer_size().expect("SO_SNDBUF") }
    }

    /// What was asked for is granted up to the system's cap (read back on
    /// the bound socket): at least min(asked, cap), and more than the
    /// default whenever the cap allows more.
    #[test]
    fn udp_buffers_are_what_was_asked_up_to_the_cap() {
        let asked = 8 * 1024 * 1024;
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let addr: SocketAddr = addr.parse().expect("address");
            let Ok((socket, granted)) = udp_socket(addr, asked) else {
                assert!(addr.is_ipv6(), "IPv4 loopback must bind");
                continue; // no IPv6 here
            };
            let read_back = socket2::SockRef::from(&socket);
            assert_eq!(granted.receive, read_back.recv_buffer_size().expect("SO_RCVBUF"));
            assert_eq!(granted.send, read_back.send_buffer_size().expect("SO_SNDBUF"));
            let defaults = default_buffers();
            for (got, cap, default) in [
                (granted.receive, sysctl("rmem_max"), defaults.receive),
                (granted.send, sysctl("wmem_max"), defaults.send),
            ] {
                let cap = cap.unwrap_or(asked);
                assert!(got >= asked.min(cap), "{addr}: granted {got}, asked {asked}, cap {cap}");
                if cap > default {
                    assert!(got > default, "{addr}: granted {got}, the default is {default}");
                }
            }
        }
    }

    /// 0 leaves the system's default.
    #[test]
    fn zero_keeps_the_default() {
        let (_socket, granted) = udp_socket("127.0.0.1:0".parse().expect("address"), 0).expect("bind");
        assert_eq!(granted, default_buffers());
    }

    /// The kernel stamps a datagram when it arrives: one left 60 ms in
    /// the receive buffer reads as having waited at least that long, and
    /// the sender's address comes back as with `recv_from` (IPv4 and IPv6).
    #[cfg(target_os = "linux")]
    #[test]
    fn datagrams_carry_when_they_arrived() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let addr: SocketAddr = addr.parse().expect("address");
            let Ok((socket, _)) = udp_socket(addr, 0) else {
                assert!(addr.is_ipv6(), "IPv4 loopback must bind");
                continue; // no IPv6 here
            };
            let sender = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).expect("sender");
            // Linux turns receive stamping on lazily after the first socket
            // asks: until then a datagram is stamped when it is read. A few
            // rounds, then, until one shows its wait (bounded).
            let mut waited = std::time::Duration::ZERO;
            for _ in 0..5 {
                let before = std::time::Instant::now();
                sender.send_to(b"OPTIONS", socket.local_addr().expect("bound")).expect("send");
                // The datagram waits in the buffer meanwhile (a delay made on
                // purpose, not a wait for something to happen).
                std::thread::sleep(std::time::Duration::from_millis(60));
                let mut buf = [0u8; 64];
                let (len, from, at) = recv_stamped(&socket, &mut buf).expect("a datagram");
                assert_eq!((&buf[..len], from), (&b"OPTIONS"[..], sender.local_addr().expect("sender")));
                let at = at.expect("a kernel stamp");
                // Wall-clock and monotonic readings differ by a few µs at most.
                let slack = std::time::Duration::from_millis(5);
                assert!(at + slack >= before, "stamped before it was sent");
                waited = at.elapsed();
                if waited + slack >= std::time::Duration::from_millis(60) {
                    break;
                }
            }
            assert!(waited >= std::time::Duration::from_millis(55), "waited {waited:?}");
        }
    }
}
