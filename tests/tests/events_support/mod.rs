//! What `interop_presence.rs` and `interop_transfer.rs` share: `sipline
//! serve` (the CLI binary) as registrar and proxy, sipline endpoints
//! registered there (tokio runtime), and the subscription and re-INVITE
//! commands of the tokio handle run to completion. Every wait is bounded;
//! every process runs under `timeout` and is stopped on drop.

#![allow(dead_code)]

use sipline::endpoint::{Event, SubscriptionEvent, SubscriptionId};
use sipline::transport::{TlsConfig, Transport};
use sipline_tests::calls::WAIT;
use sipline_tests::kamailio::{programs, wait_until, TempDir, DOMAIN, USERS};
use sipline_tests::registered::SipServer;
use sipline_tests::runtimes::{Runtime, Tokio};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Runs one command of the tokio handle (a oneshot answer from its driver,
/// which needs no particular executor) to its end.
pub(crate) fn run<F: Future>(command: F) -> F::Output {
    smol::block_on(command)
}

/// The `sipline` binary: `SIPLINE_BIN`, or the one `cargo build -p
/// sipline-cli` makes (once per process) next to this test's own binary.
pub(crate) fn sipline_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SIPLINE_BIN") {
            return Ok(PathBuf::from(bin));
        }
        // target/<profile>/deps/interop_…-HASH → target/<profile>.
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let profile = exe.parent().and_then(Path::parent).ok_or("no profile directory")?.to_path_buf();
        let target = profile.parent().ok_or("no target directory")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&programs().timeout);
        build.arg("1200").arg(cargo).args(["build", "-q", "-p", "sipline-cli", "--bin", "sipline", "--target-dir"]);
        build.arg(target).current_dir(env!("CARGO_MANIFEST_DIR")).stdin(Stdio::null());
        if profile.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let out = build.output().map_err(|e| format!("cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo build -p sipline-cli failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        let bin = profile.join("sipline");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("no {} after cargo build", bin.display()))
        }
    });
    match found {
        Ok(bin) => bin,
        Err(why) => panic!("{why}"),
    }
}

/// `sipline serve` for [`DOMAIN`] with the harness's users over UDP and
/// TCP on 127.0.0.1, one worker, `-v`: every message it sends and
/// receives is in its output. Stopped on drop.
pub(crate) struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    udp: SocketAddr,
    _dir: TempDir,
}

impl Serve {
    /// Starts it and waits (bounded) for its `bound` and `serving` lines.
    pub(crate) fn start() -> Serve {
        let dir = TempDir::new("events-serve");
        let users = USERS.iter().fold(String::new(), |s, u| s + u.name + ":" + u.password + "\n");
        let users = dir.write("users", &users);
        let users = users.to_str().expect("utf-8 path").to_owned();
        // One worker: with several, a response goes to the worker that
        // holds its transaction and may fall behind a request that came
        // after it from the same peer (linphone's NOTIFY overtaking its
        // 200 to the SUBSCRIBE), which the scenarios here do not test.
        let args = ["serve", "--bind", "127.0.0.1:0", "--domain", DOMAIN, "--users", &users, "--workers", "1", "-v"];
        let mut child = Command::new(&programs().timeout)
            .arg("--kill-after=2")
            .arg("300")
            .arg(sipline_bin())
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipline serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for out in [stdout, stderr] {
            let lines = Arc::clone(&lines);
            // Ends with the process's output (bounded by its `timeout`).
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
                }
            });
        }
        let mut serve = Serve { child, lines, udp: SocketAddr::from(([127, 0, 0, 1], 0)), _dir: dir };
        let bound = serve.wait_line(Duration::from_secs(30), |l| l.starts_with("bound udp "));
        let bound = bound.unwrap_or_else(|| panic!("sipline serve: no `bound udp` line:\n{}", serve.log()));
        serve.udp = bound.rsplit(' ').next().and_then(|a| a.parse().ok()).expect("bound address");
        let serving = serve.wait_line(Duration::from_secs(30), |l| l.starts_with("serving "));
        assert!(serving.is_some(), "sipline serve did not start:\n{}", serve.log());
        serve
    }

    /// Every line of its output so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits (at most `limit`) for a line `wanted` accepts.
    pub(crate) fn wait_line(&self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until(limit, || {
            found = self.lines().into_iter().find(|l| wanted(l));
            found.is_some()
        });
        found
    }

    /// Whether its output (`-v`: the messages) shows a line starting with
    /// `start` (a request line or a status line) in a message that also
    /// has a line containing `also`; waits for it at most [`WAIT`].
    pub(crate) fn relayed(&self, start: &str, also: &str) -> bool {
        wait_until(WAIT, || {
            let lines = self.lines();
            // A message: from its start line to the next blank line.
            lines.iter().enumerate().any(|(i, l)| {
                l.trim_start().starts_with(start)
                    && lines[i..].iter().take_while(|m| !m.trim().is_empty()).any(|m| m.contains(also))
            })
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        use rustix::process::{kill_process_group, Pid, Signal};
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        wait_until(Duration::from_secs(5), || !matches!(self.child.try_wait(), Ok(None)));
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.lines();
            let tail = &lines[lines.len().saturating_sub(400)..];
            eprintln!("--- sipline serve (last {} lines) ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}

impl SipServer for Serve {
    fn name(&self) -> &'static str {
        "sipline serve"
    }

    fn uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("sip:{}", self.udp),
            other => panic!("this serve has no {other:?} listener the tests use"),
        }
    }

    fn endpoint_tls(&self) -> TlsConfig {
        TlsConfig::default()
    }

    fn log(&self) -> String {
        self.lines().join("\n")
    }

    fn registers(&self, user: &str) -> usize {
        let aor = format!(" for sip:{user}@{DOMAIN}: ");
        self.lines().iter().filter(|l| l.starts_with("REGISTER ") && l.contains(&aor)).count()
    }

    fn check_transport(&self, transport: Transport) -> Result<(), String> {
        match transport {
            Transport::Udp => Ok(()),
            other => Err(format!("no {other:?} here")),
        }
    }

    fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    fn saw_request(&self, method: &str, call_id: &str) -> bool {
        self.relayed(&format!("{method} sip:"), call_id)
    }
}

/// Reads events of `endpoint` until one `wanted` accepts (at most
/// `limit`); the others are kept in `seen`.
pub(crate) fn wait_for(
    rt: &Tokio,
    events: &mut <Tokio as Runtime>::Events,
    what: &str,
    limit: Duration,
    seen: &mut Vec<Event>,
    mut wanted: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("no {what} within {limit:?}; events: {seen:#?}");
            return None;
        }
        match rt.next_event(events, left) {
            Some(e) if wanted(&e) => return Some(e),
            Some(e) => seen.push(e),
            None => {}
        }
    }
}

/// The next event of subscription `s` (within [`WAIT`]), or a panic
/// naming `what`.
pub(crate) fn subscription_event(
    rt: &Tokio,
    events: &mut <Tokio as Runtime>::Events,
    s: SubscriptionId,
    what: &str,
    seen: &mut Vec<Event>,
) -> SubscriptionEvent {
    let e = wait_for(
        rt,
        events,
        what,
        WAIT,
        seen,
        |e| matches!(e, Event::Subscription { subscription, .. } if *subscription == s),
    );
    match e {
        Some(Event::Subscription { event, .. }) => event,
        _ => panic!("{what}: nothing for subscription {s:?} within {WAIT:?}; other events: {seen:#?}"),
    }
}

/// The value of header `name` (long form, or `short`) in the message `m`.
pub(crate) fn header_any(m: &str, name: &str, short: &str) -> Option<String> {
    m.lines().take_while(|l| !l.trim().is_empty()).skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(short)).then(|| v.trim().to_owned())
    })
}
