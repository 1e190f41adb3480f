//! SIPp's built-in `uac` scenario against `sipline listen --answer`, over
//! UDP and TCP: every call (INVITE, 200 with SDP, ACK, BYE) succeeds for
//! SIPp, and sipline prints each INVITE, ACK and BYE. sipline runs under
//! `timeout` in a process group of its own, stopped on drop; SIPp is
//! bounded by the harness (`sipline_tests::kamailio::Sipp`).

use rustix::process::{kill_process_group, Pid, Signal};
use sipline::transport::Transport;
use sipline_tests::kamailio::{programs, Sipp};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any one line may take to come.
const WAIT: Duration = Duration::from_secs(20);

/// `timeout 60 sipline ARGS`, its output as lines; stopped on drop.
struct Listener {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Listener {
    fn start(args: &[&str]) -> Listener {
        let mut child = Command::new(&programs().timeout)
            .arg("--kill-after=2")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_sipline"))
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipline");
        let (tx, lines) = mpsc::channel();
        for out in [Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>, {
            Box::new(child.stderr.take().expect("stderr"))
        }] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Listener { child, lines, seen: Vec::new() }
    }

    /// Waits (bounded) until `count` lines start with `prefix`.
    fn lines_starting(&mut self, prefix: &str, count: u32) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<String> = self.seen.iter().filter(|l| l.starts_with(prefix)).cloned().collect();
            if found.len() >= count as usize {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("{} of {count} lines starting {prefix:?}; output: {:#?}", found.len(), self.seen)
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SIGTERM to the group (timeout and sipline); SIGKILL if still there.
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}

const CALLS: u32 = 5;

fn sipp_uac_calls_listen(transport: Transport) {
    let name = transport.as_str().to_ascii_lowercase();
    let mut listen = Listener::start(&["listen", "--answer", "--bind", "127.0.0.1:0", "--transport", &name]);
    let bound = listen.lines_starting(&format!("bound {name} "), 1);
    let at: SocketAddr = bound[0].rsplit(' ').next().and_then(|a| a.parse().ok()).expect("bound address");
    let out = Sipp::builtin("uac").remote(at).transport(transport).calls(CALLS).run();
    assert!(out.success(), "SIPp uac -> sipline listen over {name} failed:\n{out}\nsipline: {:#?}", listen.seen);
    // SIPp got a 200 with an SDP answer on loopback.
    let ok = out
        .messages
        .split("message received")
        .find(|m| m.contains("\nSIP/2.0 200 ") && m.contains("INVITE"))
        .unwrap_or_else(|| panic!("no 200 to an INVITE:\n{out}"));
    assert!(ok.contains("application/sdp") && ok.contains("c=IN IP4 127.0.0.1"), "no SDP answer:\n{ok}");
    for prefix in ["INVITE from ", "ACK", "BYE from "] {
        assert_eq!(listen.lines_starting(prefix, CALLS).len(), CALLS as usize, "{prefix}");
    }
}

#[test]
fn sipp_uac_calls_sipline_listen_over_udp() {
    sipp_uac_calls_listen(Transport::Udp);
}

#[test]
fn sipp_uac_calls_sipline_listen_over_tcp() {
    sipp_uac_calls_listen(Transport::Tcp);
}
