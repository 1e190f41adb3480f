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
}
