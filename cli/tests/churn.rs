//! `sipline serve` and `sipline listen --transport tcp` (the binary, as a
//! user starts it) under connection churn on 127.0.0.1 (issue 18): 500
//! clients connect, send OPTIONS, and leave by closing, half-closing (the
//! server must close its side: the client waits for it) or resetting.
//! Afterwards the process holds as many descriptors as before the run and
//! no socket of its port is in CLOSE-WAIT. Also: the UDP socket buffers
//! the kernel granted are printed at start, `--udp-buffer` sets what is
//! asked.

mod support;

use sipline_tests::churn::{child_of, close_wait, fd_count, options_cycle, Ending};
use sipline_tests::kamailio::wait_until;
use std::time::Duration;
use support::Listener;

/// How many connect / OPTIONS / leave cycles a run takes.
const CYCLES: usize = 500;

/// How long the process may take to let go of what the run left.
const SETTLE: Duration = Duration::from_secs(15);

/// A kernel limit from `/proc/sys/net/core/` (Linux), if readable.
fn sysctl(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/net/core/{name}")).ok()?.trim().parse().ok()
}

/// The `name=value` number on `line`.
fn number(line: &str, name: &str) -> usize {
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// The UDP buffer line: the granted receive size is at least min(asked,
/// the system's cap), and `requested` is `asked`.
fn check_udp_buffers(process: &mut Listener, asked: usize) {
    let line = process.lines_starting("UDP socket buffers ", 1).remove(0);
    assert_eq!(number(&line, "requested"), asked, "{line}");
    let cap = sysctl("rmem_max").unwrap_or(asked);
    assert!(number(&line, "receive") >= asked.min(cap), "{line}; rmem_max {cap}");
}

/// Runs the churn against `process` (its TCP listener), and checks it
/// lets go of everything.
fn churn(process: &mut Listener, what: &str) {
    let server = process.bound("tcp");
    let mut pid = None;
    assert!(wait_until(Duration::from_secs(20), || {
        pid = pid.or_else(|| child_of(process.timeout_pid(), "sipline"));
        pid.is_some()
    }));
    let pid = pid.expect("sipline's pid");
    // Warm up (what the runtime makes on first use), then the baseline.
    options_cycle(server, usize::MAX, Ending::Close).expect("first cycle");
    let closed = wait_until(SETTLE, || close_wait(server.port()) == 0);
    assert!(closed, "{what}: the first connection the client closed stays in CLOSE-WAIT");
    let fds = fd_count(pid);
    for n in 0..CYCLES {
        let ending = Ending::mixed(n);
        let status = options_cycle(server, n, ending).unwrap_or_else(|e| panic!("{what}: cycle {n} ({ending:?}): {e}"));
        assert!(status.starts_with("SIP/2.0 200"), "{what}: {status}");
    }
    let settled = wait_until(SETTLE, || close_wait(server.port()) == 0 && fd_count(pid) <= fds);
    assert!(
        settled,
        "{what}: after {CYCLES} cycles {} sockets in CLOSE-WAIT, {} descriptors (before: {fds})",
        close_wait(server.port()),
        fd_count(pid)
    );
}

#[test]
fn serve_lets_go_of_every_closed_connection() {
    let mut serve = Listener::start(&["serve", "--bind", "127.0.0.1:0", "-q"]);
    check_udp_buffers(&mut serve, 8 * 1024 * 1024);
    churn(&mut serve, "serve");
}

#[test]
fn listen_over_tcp_lets_go_of_every_closed_connection() {
    let asked = 1024 * 1024;
    let buffer = asked.to_string();
    let args = ["listen", "--bind", "127.0.0.1:0", "--transport", "tcp", "-q", "--udp-buffer", &buffer];
    let mut listen = Listener::start(&args);
    check_udp_buffers(&mut listen, asked);
    churn(&mut listen, "listen");
}
