//! Connection churn against a real listener (a runtime's, or `sipline
//! serve`'s): connect, send OPTIONS, read the answer, go away — by closing,
//! by half-closing and waiting for the server to close its side, or by
//! resetting — and what the server process holds afterwards (descriptors,
//! sockets left in CLOSE-WAIT; Linux `/proc`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long one read or write of a cycle may take.
const IO_LIMIT: Duration = Duration::from_secs(5);

/// How a client leaves after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `close()`: FIN, and the descriptor gone.
    Close,
    /// `shutdown(SHUT_WR)`, then read until the server closes its side
    /// too (within 5 s): the server must notice the FIN and close.
    HalfClose,
    /// RST (`SO_LINGER` 0, then close): the server's next read fails.
    Reset,
}

impl Ending {
    /// The `n`-th ending of a mixed run: mostly plain closes, every third a
    /// half-close, every seventh a reset.
    pub fn mixed(n: usize) -> Ending {
        if n % 7 == 6 {
            Ending::Reset
        } else if n % 3 == 2 {
            Ending::HalfClose
        } else {
            Ending::Close
        }
    }
}

/// An OPTIONS request over TCP to `server`, unique by `n`.
pub fn options(server: SocketAddr, n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-churn{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:churn@127.0.0.1>;tag=c{n}\r\nTo: <sip:{server}>\r\n\
         Call-ID: churn-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One cycle: connect to `server`, send OPTIONS, read its answer's status
/// line and header, leave as `ending` says. The answer's status line, or
/// what went wrong.
pub fn options_cycle(server: SocketAddr, n: usize, ending: Ending) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&server, IO_LIMIT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_LIMIT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_LIMIT)).map_err(|e| e.to_string())?;
    s.write_all(&options(server, n)).map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    // Bounded: the read timeout, and at most 64 KiB of answer.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed before the answer: {:?}", String::from_utf8_lossy(&got))),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
        if got.len() > 65_536 {
            return Err("an answer without an end".to_owned());
        }
    }
    let status = String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_owned();
    match ending {
        Ending::Close => drop(s),
        Ending::HalfClose => {
            s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            // The rest of the answer, if any, then the server's FIN.
            for _ in 0..64 {
                match s.read(&mut buf) {
                    Ok(0) => return Ok(status),
                    Ok(_) => {}
                    Err(e) => return Err(format!("the server kept its side open after our FIN: {e}")),
                }
            }
            return Err("the server kept writing after our FIN".to_owned());
        }
        Ending::Reset => {
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).map_err(|e| e.to_string())?;
            drop(s);
        }
    }
    Ok(status)
}

/// How many descriptors process `pid` holds (Linux: `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Sockets on local `port` in CLOSE-WAIT (the peer closed, we did not):
/// Linux `/proc/net/tcp{,6}`, state 08.
pub fn close_wait(port: u16) -> usize {
    let wanted = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/net/{t}")).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3 && fields[1].rsplit(':').next() == Some(wanted.as_str()) && fields[3] == "08"
                })
                .count()
        })
        .sum()
}

/// The resident set of process `pid`, KiB (Linux: `VmRSS` in
/// `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The process named `name` whose parent is `parent` (Linux: `/proc/*/stat`).
pub fn child_of(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may hold spaces, not ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
        (ppid == parent && stat.contains(&format!("({name})"))).then_some(pid)
    })
}
