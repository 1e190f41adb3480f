//! Issue 19: overload control in the real binary. `sipline serve` is
//! stopped (SIGSTOP) while a request waits in its UDP socket's buffer;
//! continued, it reads the request with the kernel's arrival stamp, sees
//! it waited past the overload delay (by default 125 ms during an
//! overload, 250 ms to start one), and answers 503 with Retry-After
//! instead of doing the work. A request that did not wait
//! is handled as usual (a 407 challenge); with `--overload-delay off` the
//! late one is too.

mod support;

use rustix::process::{kill_process_group, Pid, Signal};
use sipline_tests::kamailio::TempDir;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use support::Listener;

const DOMAIN: &str = "sipline.test";

fn message(from: SocketAddr, n: u32) -> String {
    format!(
        "MESSAGE sip:alice@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-ov{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@{DOMAIN}>;tag=ov{n}\r\nTo: <sip:alice@{DOMAIN}>\r\n\
         Call-ID: overload-{n}@{from}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    )
}

/// Sends a MESSAGE to `serve`, late by `late` (the server stopped that
/// long), and returns the status line and headers of the answer.
fn answer(serve: &mut Listener, late: Duration, n: u32) -> String {
    let server = serve.bound("udp");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let from = socket.local_addr().expect("local");
    let group = Pid::from_raw(i32::try_from(serve.timeout_pid()).expect("pid")).expect("pid");
    if !late.is_zero() {
        kill_process_group(group, Signal::STOP).expect("SIGSTOP");
    }
    socket.send_to(message(from, n).as_bytes(), server).expect("send");
    if !late.is_zero() {
        // The request waits in the socket buffer meanwhile (a delay made
        // on purpose, not a wait for something to happen).
        std::thread::sleep(late);
        kill_process_group(group, Signal::CONT).expect("SIGCONT");
    }
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).expect("an answer within 10 s");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

fn serve(dir: &TempDir, extra: &[&str]) -> Listener {
    let users = support::users_file(dir);
    let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--domain", DOMAIN, "--users", &users, "--workers", "1"];
    args.extend_from_slice(extra);
    let mut s = Listener::start(&args);
    s.lines_starting("serving ", 1);
    s
}

#[test]
fn a_request_that_waited_past_the_delay_gets_503_with_retry_after() {
    let dir = TempDir::new("sipline-overload");
    let mut s = serve(&dir, &[]);
    let fresh = answer(&mut s, Duration::ZERO, 1);
    assert!(fresh.starts_with("SIP/2.0 407 "), "{fresh}");
    let late = answer(&mut s, Duration::from_millis(800), 2);
    assert!(late.starts_with("SIP/2.0 503 "), "{late}");
    let retry = late.lines().find_map(|l| l.strip_prefix("Retry-After: ")).expect("Retry-After");
    let secs: u32 = retry.trim().parse().expect("seconds");
    assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    // Past the overload, requests are handled again.
    let after = answer(&mut s, Duration::ZERO, 3);
    assert!(after.starts_with("SIP/2.0 407 "), "{after}");
}

#[test]
fn with_overload_control_off_a_late_request_is_handled() {
    let dir = TempDir::new("sipline-overload-off");
    let mut s = serve(&dir, &["--overload-delay", "off"]);
    let late = answer(&mut s, Duration::from_millis(800), 4);
    assert!(late.starts_with("SIP/2.0 407 "), "{late}");
}
