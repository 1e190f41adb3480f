//! A `sipline` command under test whose standard output and standard
//! error are kept apart, so that `-v`'s wire log (on standard error) can be
//! read back as SIP messages ([`Wire`]); and a bare UDP peer ([`Peer`])
//! that plays a user agent the command has no switch for. Every wait is
//! bounded; every process is stopped on drop.

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any one thing awaited may take to come. Generous: a whole
/// transaction timeout (Timer F, 32 s) is never waited for through it.
pub const WAIT: Duration = Duration::from_secs(20);

/// Which stream a line came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// `timeout 120 sipline ARGS` in a process group of its own; its output
/// read as it comes. Dropping it stops the group (SIGTERM, then SIGKILL).
pub struct Sipline {
    child: Child,
    lines: Receiver<(Stream, String)>,
    /// Its standard output so far.
    pub out: Vec<String>,
    /// Its standard error so far (`-v`: the wire log).
    pub err: Vec<String>,
    args: Vec<String>,
    exited: Option<ExitStatus>,
}

impl Sipline {
    /// Starts `sipline ARGS`.
    pub fn start(args: &[&str]) -> Sipline {
        // coreutils `timeout` bounds it even if this process dies first;
        // signals sent to `timeout` reach sipline.
        let mut child = Command::new("timeout")
            .arg("--kill-after=2")
            .arg("120")
            .arg(env!("CARGO_BIN_EXE_sipline"))
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sipline {args:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>;
        let err = Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>;
        for (stream, which) in [(out, Stream::Out), (err, Stream::Err)] {
            let tx = tx.clone();
            // Ends with the pipe (the process and `timeout` gone).
            // The wire log's lines keep their CR: a message's CRLFs tell
            // its body's length (`Wire::complete`).
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let mut l = line.strip_suffix('\n').unwrap_or(&line);
                    if which == Stream::Out {
                        l = l.strip_suffix('\r').unwrap_or(l);
                    }
                    if tx.send((which, l.to_owned())).is_err() {
                        return;
                    }
                }
            });
        }
        let args = args.iter().map(|&a| a.to_owned()).collect();
        Sipline { child, lines, out: Vec::new(), err: Vec::new(), args, exited: None }
    }

    /// Takes one line in, waiting at most until `deadline`; `false` if
    /// none came.
    fn take(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok((Stream::Out, l)) => self.out.push(l),
            Ok((Stream::Err, l)) => self.err.push(l),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
        }
        true
    }

    /// Waits (bounded) for an output line that `wanted` accepts; returns it.
    pub fn wait_out(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.out.iter().find(|l| wanted(l)) {
                return l.clone();
            }
            assert!(self.take(deadline), "{}: no {what} within {WAIT:?}\n{}", self.name(), self.transcript());
        }
    }

    /// Waits (bounded) for an output line equal to `line`.
    pub fn line(&mut self, line: &str) {
        self.wait_out(line, |l| l == line);
    }

    /// Waits (bounded) for an output line starting with `prefix`; returns it.
    pub fn line_starting(&mut self, prefix: &str) -> String {
        self.wait_out(prefix, |l| l.starts_with(prefix))
    }

    /// The address printed on the `bound TRANSPORT ADDR` line.
    pub fn bound(&mut self, transport: &str) -> SocketAddr {
        let line = self.line_starting(&format!("bound {transport} "));
        line.rsplit(' ').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("address in {line:?}"))
    }

    /// The SIP messages of `-v`'s log so far.
    pub fn wire(&self) -> Vec<Wire> {
        Wire::from_log(&self.err)
    }

    /// Waits (bounded) for a whole message in the wire log that `wanted`
    /// accepts; returns it.
    pub fn wait_wire(&mut self, what: &str, wanted: impl Fn(&Wire) -> bool) -> Wire {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(w) = self.wire().into_iter().find(|w| w.complete && wanted(w)) {
                return w;
            }
            assert!(
                self.take(deadline),
                "{}: no {what} on the wire within {WAIT:?}\n{}",
                self.name(),
                self.transcript()
            );
        }
    }

    /// Sends `signal` to `timeout`, which passes it on to sipline.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(i32::try_from(self.child.id()).expect("pid")) {
            let _ = kill_process(pid, signal);
        }
    }

    /// Waits (bounded) for the exit; its status, every line taken in.
    pub fn finish(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.exited {
                break s;
            }
            if let Some(s) = self.child.try_wait().expect("wait") {
                self.exited = Some(s);
                break s;
            }
            if !self.take(Instant::now() + Duration::from_millis(20)) {
                assert!(
                    Instant::now() < deadline,
                    "{}: did not exit within {WAIT:?}\n{}",
                    self.name(),
                    self.transcript()
                );
            }
        };
        // The readers end with the pipes (bounded all the same).
        let drained = Instant::now() + Duration::from_secs(5);
        while self.take(drained) {}
        status
    }

    /// Asserts that `lines` (output lines, exactly) were all printed, in
    /// that order (others may come between).
    pub fn assert_order(&self, lines: &[&str]) {
        let mut from = 0;
        for wanted in lines {
            match self.out[from..].iter().position(|l| l == wanted) {
                Some(at) => from += at + 1,
                None => {
                    panic!("{}: no {wanted:?} after line {from} in order {lines:?}\n{}", self.name(), self.transcript())
                }
            }
        }
    }

    fn name(&self) -> String {
        format!("sipline {}", self.args.join(" "))
    }

    /// Everything taken in so far, for failure messages.
    pub fn transcript(&self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.out.join("\n"), self.err.join("\n"))
    }
}

impl Drop for Sipline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            while self.take(Instant::now()) {}
            eprintln!("=== {} ===\n{}", self.name(), self.transcript());
        }
        if self.exited.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let group = Pid::from_child(&self.child);
            let _ = kill_process_group(group, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill_process_group(group, Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// Whether a message was sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

/// One SIP message: from `-v`'s log (`--- transport=… remote=…`, `sent` or
/// `received`, the message) or from a datagram.
#[derive(Debug, Clone)]
pub struct Wire {
    pub dir: Dir,
    /// Its lines, without line ends; the body after the first empty one.
    pub lines: Vec<String>,
    /// Whether the whole message is there: another follows it in the log,
    /// or its body is as long as its Content-Length says (the log drops
    /// the final line end), or it came as a datagram.
    pub complete: bool,
}

impl Wire {
    /// The messages in a `-v` log.
    pub fn from_log(log: &[String]) -> Vec<Wire> {
        let mut all: Vec<Wire> = Vec::new();
        let mut at = 0;
        while at < log.len() {
            if log[at].starts_with("--- ") && at + 1 < log.len() {
                let dir = match log[at + 1].as_str() {
                    "sent" => Some(Dir::Sent),
                    "received" => Some(Dir::Received),
                    _ => None,
                };
                if let Some(dir) = dir {
                    if let Some(w) = all.last_mut() {
                        w.complete = true;
                    }
                    all.push(Wire { dir, lines: Vec::new(), complete: false });
                    at += 2;
                    continue;
                }
            }
            if let Some(w) = all.last_mut() {
                w.lines.push(log[at].clone());
            }
            at += 1;
        }
        for w in &mut all {
            // The lines as logged: CRLF-ended (but the last).
            let mut body_len = None;
            for l in &w.lines {
                match &mut body_len {
                    Some(n) => *n += l.len() + 1,
                    None if l == "\r" || l.is_empty() => body_len = Some(0),
                    None => {}
                }
            }
            let body_len = body_len.map_or(0, |n: usize| n.saturating_sub(1));
            let length: Option<usize> = w
                .lines
                .iter()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("Content-Length"))
                .and_then(|(_, v)| v.trim().parse().ok());
            // The log trims the message's last line end (CRLF at most).
            if length.is_some_and(|cl| body_len + 2 >= cl) {
                w.complete = true;
            }
            for l in &mut w.lines {
                if l.ends_with('\r') {
                    l.pop();
                }
            }
            while w.lines.len() > 1 && w.lines.last().is_some_and(String::is_empty) {
                w.lines.pop();
            }
        }
        all
    }

    /// A datagram, as received by a [`Peer`].
    pub fn parse(dir: Dir, text: &str) -> Wire {
        Wire { dir, lines: text.split("\r\n").map(str::to_owned).collect(), complete: true }
    }

    pub fn start_line(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    /// A request of `method`.
    pub fn is_request(&self, method: &str) -> bool {
        self.start_line().starts_with(&format!("{method} ")) && self.start_line().ends_with(" SIP/2.0")
    }

    /// A response with `code` to a `method` request.
    pub fn is_response(&self, code: u16, method: &str) -> bool {
        self.start_line().starts_with(&format!("SIP/2.0 {code} "))
            && self.header("CSeq").is_some_and(|c| c.ends_with(&format!(" {method}")))
    }

    /// The first value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// Every value of header `name`.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.lines[1.min(self.lines.len())..]
            .iter()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// The body's lines.
    pub fn body(&self) -> Vec<&str> {
        self.lines.iter().skip_while(|l| !l.is_empty()).skip(1).map(String::as_str).collect()
    }

    /// The CSeq number.
    pub fn seq(&self) -> u32 {
        self.header("CSeq").and_then(|c| c.split(' ').next()).and_then(|n| n.parse().ok()).expect("CSeq")
    }

    /// The SDP `o=` line's session id and version.
    pub fn sdp_origin(&self) -> (u64, u64) {
        let o = self.body().into_iter().find(|l| l.starts_with("o=")).unwrap_or_else(|| panic!("no o= in {self:#?}"));
        let fields: Vec<&str> = o.split(' ').collect();
        (fields[1].parse().expect("session id"), fields[2].parse().expect("version"))
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A bare UDP user agent on loopback: the test writes its messages.
pub struct Peer {
    pub socket: UdpSocket,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn bind() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        let addr = socket.local_addr().expect("its address");
        Peer { socket, addr }
    }

    /// Sends `lines` (CRLF-joined, Content-Length added from `body`).
    pub fn send(&self, to: SocketAddr, head: &[String], body: &str) {
        let text = format!("{}\r\nContent-Length: {}\r\n\r\n{body}", head.join("\r\n"), body.len());
        self.socket.send_to(text.as_bytes(), to).expect("send");
    }

    /// The next datagram that `wanted` accepts (others are dropped),
    /// waiting at most [`WAIT`]; its source too.
    pub fn recv(&self, what: &str, wanted: impl Fn(&Wire) -> bool) -> (Wire, SocketAddr) {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 65_536];
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what} within {WAIT:?}; got {seen:#?}");
            self.socket.set_read_timeout(Some(left)).expect("timeout");
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else { continue };
            let w = Wire::parse(Dir::Received, &String::from_utf8_lossy(&buf[..n]));
            if wanted(&w) {
                return (w, from);
            }
            seen.push(w.start_line().to_owned());
        }
    }

    /// Answers the request `req` (from `to`) with `code reason`, its
    /// Via, From, To (with `tag` if it has none), Call-ID and CSeq, and
    /// `extra` header lines.
    pub fn respond(&self, to: SocketAddr, req: &Wire, code: u16, reason: &str, tag: &str, extra: &[String]) {
        let mut head = vec![format!("SIP/2.0 {code} {reason}")];
        for v in req.headers("Via") {
            head.push(format!("Via: {v}"));
        }
        head.push(format!("From: {}", req.header("From").expect("From")));
        let to_value = req.header("To").expect("To");
        if to_value.contains(";tag=") {
            head.push(format!("To: {to_value}"));
        } else {
            head.push(format!("To: {to_value};tag={tag}"));
        }
        head.push(format!("Call-ID: {}", req.header("Call-ID").expect("Call-ID")));
        head.push(format!("CSeq: {}", req.header("CSeq").expect("CSeq")));
        head.extend(extra.iter().cloned());
        self.send(to, &head, "");
    }
}
