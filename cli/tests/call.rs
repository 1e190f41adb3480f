//! `sipline call` against `sipline listen` over loopback: an answered call
//! hung up after a second (INVITE, 200, ACK, BYE on both sides), a call
//! rejected 486, and the answer's body. Every child is killed on drop and
//! every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any one step may take.
const WAIT: Duration = Duration::from_secs(20);

/// A child process, killed and reaped when dropped; its stdout and stderr
/// as lines (interleaved).
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sipline"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipline");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        forward(BufReader::new(stdout), tx.clone());
        forward(BufReader::new(stderr), tx);
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits (bounded) for a line starting with `prefix`; returns it.
    fn line(&mut self, prefix: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no line starting with {prefix:?}; output so far: {:?}", self.seen)
                }
            }
        }
    }

    /// Waits (bounded) for the exit; then every line it printed.
    fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the process did not exit; output: {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends with the pipe.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status, self.seen.clone())
    }
}

/// Sends each line of `from` to `to` until either ends.
fn forward(from: impl BufRead + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in from.lines() {
            let Ok(line) = line else { return };
            if to.send(line).is_err() {
                return;
            }
        }
    });
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address a `listen` printed for `transport` (`bound udp ADDR`).
fn bound(listen: &mut Running, transport: &str) -> String {
    let line = listen.line(&format!("bound {transport} "));
    line.rsplit(' ').next().expect("address").to_owned()
}

fn answered_call(transport: &str) {
    let mut listen = Running::start(&["listen", "--answer", "--bind", "127.0.0.1:0", "--transport", transport]);
    let at = bound(&mut listen, transport);
    let target = format!("sip:x@{at};transport={transport}");
    let mut call = Running::start(&["call", &target, "--hangup-after", "1", "--transport", transport]);
    let (status, out) = call.finish();
    assert!(status.success(), "call exited {status}: {out:?}");
    assert!(out.iter().any(|l| l == "200 OK"), "{out:?}");
    assert!(out.iter().any(|l| l == "BYE"), "{out:?}");
    assert!(listen.line("INVITE from ").starts_with("INVITE from sip:"));
    listen.line("ACK");
    listen.line("BYE from ");
}

#[test]
fn answered_call_over_udp_is_hung_up_after_a_second() {
    answered_call("udp");
}

#[test]
fn answered_call_over_tcp_is_hung_up_after_a_second() {
    answered_call("tcp");
}

#[test]
fn rejected_call_exits_non_zero() {
    let mut listen = Running::start(&["listen", "--bind", "127.0.0.1:0"]);
    let at = bound(&mut listen, "udp");
    let mut call = Running::start(&["call", &format!("sip:x@{at}"), "--hangup-after", "1"]);
    let (status, out) = call.finish();
    assert_eq!(status.code(), Some(1), "{out:?}");
    assert!(out.iter().any(|l| l == "486 Busy Here"), "{out:?}");
    listen.line("INVITE from ");
    listen.line("answered 486 Busy Here");
}

#[test]
fn answer_body_comes_from_the_file() {
    let dir = std::env::temp_dir().join(format!("sipline-call-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let file = dir.join("answer.sdp");
    let sdp = "v=0\r\no=test 7 7 IN IP4 127.0.0.1\r\ns=call test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7078 RTP/AVP 0\r\n";
    std::fs::write(&file, sdp).expect("write SDP");
    let path = file.to_str().expect("UTF-8 path");
    let mut listen = Running::start(&["listen", "--answer", "--body", path, "--bind", "127.0.0.1:0"]);
    let at = bound(&mut listen, "udp");
    // -v prints the messages received (to stderr): the 200 carries the file.
    let mut call = Running::start(&["call", &format!("sip:x@{at}"), "--hangup-after", "0", "-v"]);
    let (status, out) = call.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "call exited {status}: {out:?}");
    assert!(out.iter().any(|l| l.contains("m=audio 7078 RTP/AVP 0")), "{out:?}");
    listen.line("BYE from ");
}
