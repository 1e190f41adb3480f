//! The network commands end to end: `sipline listen`, `sipline message`
//! and `sipline register` as processes, talking to each other, to SIPp and
//! to Kamailio (`tests/interop/kamailio.cfg`) on loopback.
//!
//! Every process runs under coreutils `timeout` and is stopped when the
//! test ends, passing or not ([`Proc`]'s `Drop`); every wait is bounded.

use sipline::transport::Transport;
use sipline_tests::kamailio::{programs, Kamailio, KamailioOptions, KamailioTls, Sipp, DOMAIN, LOOPBACK_V4, USERS};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a command may take to do its part.
const STEP: Duration = Duration::from_secs(15);

/// `timeout … sipline args…`, bounded to a minute whatever happens.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(&programs().timeout);
    c.arg("--kill-after=5").arg("60").arg(env!("CARGO_BIN_EXE_sipline")).args(args).stdin(Stdio::null());
    c
}

/// What a finished command left.
struct Done {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- stdout ---\n{}--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `sipline args…` to its end.
fn run(args: &[&str]) -> Done {
    let out = command(args).output().unwrap_or_else(|e| panic!("running sipline {args:?}: {e}"));
    Done {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `sipline` process running in the background; its output lines are
/// collected as they come. Dropping it stops it (SIGTERM, then SIGKILL).
struct Proc {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sipline {args:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for (stream, prefix) in [(stdout, ""), (stderr, "stderr: ")] {
            let Some(stream) = stream else { continue };
            let lines = lines.clone();
            // Ends when the process (and `timeout`) closes the pipe.
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().expect("lines").push(format!("{prefix}{line}"));
                }
            }));
        }
        Proc { child: Some(child), lines, readers }
    }

    /// Its output so far.
    fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits (at most `limit`) for a line that `wanted` accepts.
    fn wait_line(&self, what: &str, limit: Duration, mut wanted: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| wanted(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no {what} within {limit:?}; output:\n{}", self.output().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it printed for `transport` (`bound udp 127.0.0.1:…`).
    fn bound(&self, transport: &str) -> SocketAddr {
        let prefix = format!("bound {transport} ");
        let line = self.wait_line(&prefix, STEP, |l| l.starts_with(&prefix));
        line[prefix.len()..].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        // `timeout` passes the signal on to sipline.
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
    }

    /// SIGTERM, then its exit status (at most `limit` later) and output.
    fn terminate(mut self, limit: Duration) -> (Option<ExitStatus>, Vec<String>) {
        self.signal("TERM");
        let deadline = Instant::now() + limit;
        let mut status = None;
        if let Some(child) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if status.is_some() {
            self.child = None;
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
        (status, self.output())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sipline output ---\n{}", self.output().join("\n"));
        }
    }
}

/// `listen` prints where it is bound and the MESSAGE `message` sends it,
/// over UDP and over TCP; `message` exits 0 and prints the 200.
#[test]
fn message_to_listen() {
    for transport in ["udp", "tcp"] {
        let listen = Proc::spawn(&["listen", "--bind", "127.0.0.1:0", "--transport", transport]);
        let at = listen.bound(transport);
        assert_eq!(at.ip(), LOOPBACK_V4);
        let target = format!("sip:x@{at};transport={transport}");
        let text = format!("hello over {transport}");
        let done = run(&["message", &target, &text, "--bind", "127.0.0.1:0", "--transport", transport]);
        assert_eq!(done.status.code(), Some(0), "{done}");
        assert!(done.stdout.lines().any(|l| l == "200 OK"), "{done}");
        let line = format!("MESSAGE from sip:sipline@sipline.invalid (text/plain): {text}");
        listen.wait_line(&line, STEP, |l| l == line);
        let (status, output) = listen.terminate(STEP);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{output:#?}");
        assert!(output.iter().any(|l| l == "shutting down"), "{output:#?}");
    }
}

/// Nobody listens: `message` fails, says why, and exits non-zero (at once
/// over TCP: the connection is refused).
#[test]
fn message_to_a_dead_port_fails() {
    let port = TcpListener::bind((LOOPBACK_V4, 0)).and_then(|l| l.local_addr()).expect("probe port").port();
    let target = format!("sip:x@127.0.0.1:{port};transport=tcp");
    let started = Instant::now();
    let done = run(&["message", &target, "anyone?", "--bind", "127.0.0.1:0", "--transport", "tcp"]);
    assert_eq!(done.status.code(), Some(1), "{done}");
    assert!(done.stdout.lines().any(|l| l.starts_with("failed: connection failed")), "{done}");
    assert!(started.elapsed() < Duration::from_secs(10), "{done}");
    // A usage error is a different failure.
    assert_eq!(run(&["message", "sip:x@127.0.0.1"]).status.code(), Some(2));
}

/// `--registrar` twice (issue 20, RFC 3263 §4.3): the first refuses the
/// connection, so `register` goes on to the second at once and registers
/// there.
#[test]
fn register_goes_on_to_the_next_registrar() {
    let serve = Proc::spawn(&["serve", "--bind", "127.0.0.1:0", "-q"]);
    let tcp = serve.bound("tcp");
    let demo = serve.wait_line("the demo account", STEP, |l| l.starts_with("no --users file: one-time demo account"));
    let password = demo.split(" / ").nth(1).and_then(|r| r.split(' ').next()).expect("a password").to_owned();
    let dead = TcpListener::bind((LOOPBACK_V4, 0)).and_then(|l| l.local_addr()).expect("probe port").port();
    let first = format!("sip:127.0.0.1:{dead};transport=tcp");
    let second = format!("sip:{tcp};transport=tcp");
    let started = Instant::now();
    let register = Proc::spawn(&[
        "register",
        "sip:demo@127.0.0.1",
        "--registrar",
        &first,
        "--registrar",
        &second,
        "--user",
        "demo",
        "--password",
        &password,
        "--transport",
        "tcp",
        "--bind",
        "127.0.0.1:0",
    ]);
    let line = register.wait_line("registered", STEP, |l| l.starts_with("registration: registered as "));
    assert!(line.contains(";transport=tcp"), "{line}");
    // Not after a timer: the refused connection moved it on.
    assert!(started.elapsed() < Duration::from_secs(10));
    let output = register.output();
    let failed = output.iter().position(|l| l.starts_with("registration: failed (connection failed"));
    let registered = output.iter().position(|l| l.starts_with("registration: registered as "));
    assert!(failed.is_some() && failed < registered, "{output:#?}");
    assert!(output[failed.unwrap_or(0)].ends_with("retrying in 0 s"), "{output:#?}");
    // `message` with the same list registers at the second too, and its
    // MESSAGE reaches `register` through it.
    let args = ["message", "sip:demo@127.0.0.1", "over the second", "--registrar", &first, "--registrar", &second];
    let mut args = args.to_vec();
    args.extend(["--user", "demo", "--password", &password, "--transport", "tcp", "--bind", "127.0.0.1:0"]);
    let done = run(&args);
    assert_eq!(done.status.code(), Some(0), "{done}");
    assert!(done.stdout.lines().any(|l| l == "200 OK"), "{done}");
    let line = "MESSAGE from sip:demo@127.0.0.1 (text/plain): over the second";
    register.wait_line(line, STEP, |l| l == line);
    let (status, output) = register.terminate(STEP);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{output:#?}");
}

/// A SIPp UAC sends MESSAGE to `sipline listen`: SIPp gets its 200 and
/// `listen` prints the body.
#[test]
fn sipp_message_to_listen() {
    let listen = Proc::spawn(&["listen", "--bind", "127.0.0.1:0"]);
    let at = listen.bound("udp");
    let out = Sipp::scenario("message_uac.xml").remote(at).from_to(USERS[2], "x", DOMAIN).run();
    assert!(out.success(), "{out}");
    assert!(out.messages.contains("SIP/2.0 200 OK"), "{out}");
    let line = format!("MESSAGE from sip:carol@{DOMAIN} (text/plain): Hello from SIPp, call 1");
    listen.wait_line(&line, STEP, |l| l.starts_with(&line));
}

/// Registered through Kamailio over `transport` ("udp", "tcp" or "tls"):
/// `register` (bob) gets what `message` (alice, registering first or
/// through the proxy) sends, and unregisters on SIGTERM, after which bob
/// is gone (480).
fn register_and_message(transport: &str) {
    let tls = if transport == "tls" { KamailioTls::On } else { KamailioTls::Off };
    let kamailio = Kamailio::start(&KamailioOptions { tls, ..KamailioOptions::default() });
    let registrar = match transport {
        "udp" => kamailio.uri(Transport::Udp),
        "tcp" => kamailio.uri(Transport::Tcp),
        _ => kamailio.uri(Transport::Tls),
    };
    let bob = kamailio.user("bob");
    let alice = kamailio.user("alice");
    let bob_aor = bob.aor();
    let alice_aor = alice.aor();
    let ca = kamailio.ca_pem_path().map(|p| p.display().to_string()).unwrap_or_default();
    let mut common = vec!["--bind", "127.0.0.1:0", "--transport", transport];
    if transport == "tls" {
        // Kamailio's certificate is issued by the harness's own CA.
        common.extend(["--ca", ca.as_str()]);
    }

    let mut args = vec!["register", &bob_aor, "--registrar", &registrar, "--user", "bob", "--password", "bobpw"];
    args.extend(["--expires", "10"]);
    args.extend(&common);
    let register = Proc::spawn(&args);
    let line = register.wait_line("registered", STEP, |l| l.starts_with("registration: registered as "));
    assert!(line.ends_with("for 10 s") || line.contains("for 10 s,"), "{line}");
    assert!(line.contains("as sip:bob@127.0.0.1:"), "{line}");
    if transport != "udp" {
        assert!(line.contains(&format!(";transport={transport} ")), "{line}");
    }

    // alice registers first, then sends through the registrar.
    let text = format!("hi bob over {transport}");
    let mut args = vec!["message", &bob_aor, &text, "--from", &alice_aor, "--registrar", &registrar];
    args.extend(["--user", "alice", "--password", "alicepw"]);
    args.extend(&common);
    let done = run(&args);
    assert_eq!(done.status.code(), Some(0), "{done}\n--- Kamailio log ---\n{}", kamailio.log());
    assert!(done.stdout.lines().any(|l| l.starts_with("registration: registered as sip:alice@")), "{done}");
    assert!(done.stdout.lines().any(|l| l == "200 OK"), "{done}");
    let line = format!("MESSAGE from {alice_aor} (text/plain): {text}");
    register.wait_line(&line, STEP, |l| l == line);

    // Through the proxy, without registering.
    let proxy = registrar.clone();
    let mut args = vec!["message", &bob_aor, "via the proxy", "--from", &alice_aor, "--proxy", &proxy];
    args.extend(["--user", "alice", "--password", "alicepw"]);
    args.extend(&common);
    let done = run(&args);
    assert_eq!(done.status.code(), Some(0), "{done}\n--- Kamailio log ---\n{}", kamailio.log());
    let line = format!("MESSAGE from {alice_aor} (text/plain): via the proxy");
    register.wait_line(&line, STEP, |l| l == line);

    // SIGTERM: bob unregisters and exits 0.
    let (status, output) = register.terminate(STEP);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{output:#?}");
    let at = |wanted: &str| output.iter().position(|l| l == wanted);
    let (stopping, unregistered) = (at("shutting down"), at("registration: unregistered"));
    assert!(stopping.is_some() && unregistered > stopping, "{output:#?}");

    // Kamailio no longer has a binding for bob: 480, and exit 1.
    let done = run(&args);
    assert_eq!(done.status.code(), Some(1), "{done}");
    assert!(done.stdout.lines().any(|l| l.starts_with("480 ")), "{done}\n--- Kamailio log ---\n{}", kamailio.log());
}

#[test]
fn register_and_message_through_kamailio_over_udp() {
    register_and_message("udp");
}

#[test]
fn register_and_message_through_kamailio_over_tcp() {
    register_and_message("tcp");
}

#[test]
fn register_and_message_through_kamailio_over_tls() {
    register_and_message("tls");
}
