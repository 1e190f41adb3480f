//! Interop with the linphone softphone (`linphonec`, Debian linphone-cli;
//! harness `sipline_tests::linphone`) through `sipline serve` (the binary,
//! as a user starts it) and, for the same scenarios, through Kamailio, so
//! that both servers are held to the same behaviour:
//!
//! 1. linphone registers over UDP, TCP and TLS (serve with a certificate
//!    from the tests' authority, which linphone trusts through `root_ca`);
//! 2. a call each way between linphone and a registered sipline endpoint:
//!    the ACK reaches the callee, the call stays up past 64·T1 (32 s), the
//!    BYE gets its 200;
//! 3. the same across transports (linphone over TCP, sipline over UDP),
//!    the ACK and the BYE going each way;
//! 4. linphone declines (603) while a second registration of the same
//!    user rings: the caller gets the 603 at once;
//! 5. MESSAGE both ways (linphonec's `chat`);
//! 6. linphone calls a user agent at another port of the server's own
//!    address (`sipline listen` on 127.0.0.1:Q) through the server.
//!
//! The sipline endpoints run in this process (tokio runtime); `sipline
//! serve` and `sipline listen` are the CLI binary, built (if need be) by
//! `cargo build -p sipline-cli` on first use, or taken from
//! `SIPLINE_BIN`. `SIPLINE_LINPHONE_HOLD_SECS` shortens how long the calls
//! of (2) are held (default 34: 64·T1 and 2 s). Everything is on
//! loopback, on ports picked by the tests; every wait is bounded; every
//! process runs under `timeout` and is stopped on drop.

use sipline::endpoint::{Body, EndpointConfig, Event, Request, RequestError, SessionEnd, SessionEvent};
use sipline::transport::{TlsConfig, Transport};
use sipline_tests::calls::{
    self, header, is_answered, is_ended, media_port, media_socket, sdp, session_events, text, wait_event, WAIT,
};
use sipline_tests::kamailio::{
    free_port, programs, wait_until, Kamailio, KamailioOptions, KamailioTls, TempDir, DOMAIN, LOOPBACK_V4, USERS,
};
use sipline_tests::linphone::{user, Direction, Linphone, LinphoneEvent, LinphoneOptions, SipLogEntry};
use sipline_tests::registered::SipServer;
use sipline_tests::runtimes::{Runtime, Tokio};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The sipline binary

/// The `sipline` binary: `SIPLINE_BIN`, or the one `cargo build -p
/// sipline-cli` makes (once per process) next to this test's own binary.
fn sipline_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SIPLINE_BIN") {
            return Ok(PathBuf::from(bin));
        }
        // target/<profile>/deps/interop_linphone-… → target/<profile>.
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let profile_dir = exe.parent().and_then(Path::parent).ok_or("no profile directory")?.to_path_buf();
        let target_dir = profile_dir.parent().ok_or("no target directory")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&programs().timeout);
        build.arg("1200").arg(cargo).args(["build", "-q", "-p", "sipline-cli", "--bin", "sipline", "--target-dir"]);
        build.arg(target_dir).current_dir(env!("CARGO_MANIFEST_DIR")).stdin(Stdio::null());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let out = build.output().map_err(|e| format!("cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo build -p sipline-cli failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        let bin = profile_dir.join("sipline");
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

/// A `sipline` child process (`timeout SECS sipline ARGS`) in a process
/// group of its own; its output lines collected by reader threads;
/// stopped on drop.
struct Sipline {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    what: String,
}

impl Sipline {
    fn start(args: &[&str], secs: u32) -> Sipline {
        let mut child = Command::new(&programs().timeout)
            .arg("--kill-after=2")
            .arg(secs.to_string())
            .arg(sipline_bin())
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipline");
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
        Sipline { child, lines, what: format!("sipline {}", args.join(" ")) }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits (at most `limit`) for a line starting with `prefix`.
    fn wait_line(&self, prefix: &str, limit: Duration) -> Option<String> {
        let mut found = None;
        wait_until(limit, || {
            found = self.lines().into_iter().find(|l| l.starts_with(prefix));
            found.is_some()
        });
        found
    }

    /// The address printed on the `bound TRANSPORT ADDR` line.
    fn bound(&self, transport: &str) -> SocketAddr {
        let line = self
            .wait_line(&format!("bound {transport} "), Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{}: no `bound {transport}` line:\n{}", self.what, self.lines().join("\n")));
        line.rsplit(' ').next().and_then(|a| a.parse().ok()).expect("bound address")
    }
}

impl Drop for Sipline {
    fn drop(&mut self) {
        use rustix::process::{kill_process_group, Pid, Signal};
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        wait_until(Duration::from_secs(5), || !matches!(self.child.try_wait(), Ok(None)));
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.what, self.lines().join("\n"));
        }
    }
}

// ---------------------------------------------------------------------------
// The servers

/// A registrar and proxy linphone can register at.
trait Registrar: SipServer {
    /// Its address for `transport` on 127.0.0.1.
    fn addr(&self, transport: Transport) -> SocketAddr;
    /// The PEM file of the authority that issued its TLS certificate, if
    /// linphone can read it (`None`: linphone does not verify the server).
    fn root_ca(&self) -> Option<PathBuf>;
    /// Whether it routes in-dialog requests whose Request-URI is a GRUU it
    /// granted (linphone, offering GRUU, makes its GRUU its dialogs'
    /// Contact).
    fn routes_gruus(&self) -> bool;
}

/// A test authority and a server certificate from it, all ECDSA P-256
/// (`sipline_tests::certs::Ca` has an Ed25519 key, which linphone's
/// mbedtls 2.28 cannot load), for 127.0.0.1 (as an IP address, and as a
/// DNS name too: mbedtls 2.28 matches names against DNS names and the CN
/// only) and [`DOMAIN`].
struct EcdsaPki {
    /// The authority's certificate, PEM.
    ca: String,
    /// The server's certificate and the authority's, PEM.
    chain: String,
    /// The server's key, PEM.
    key: String,
}

impl EcdsaPki {
    fn new() -> EcdsaPki {
        use rcgen::{
            date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType,
            PKCS_ECDSA_P256_SHA256,
        };
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "sipline linphone tests");
        ca.not_before = date_time_ymd(2020, 1, 1);
        ca.not_after = date_time_ymd(2040, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), DOMAIN.to_owned()]).expect("params");
        leaf.subject_alt_names.push(SanType::DnsName("127.0.0.1".try_into().expect("a DNS name")));
        leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        leaf.not_before = date_time_ymd(2020, 1, 1);
        leaf.not_after = date_time_ymd(2040, 1, 1);
        let cert = leaf.signed_by(&key, &issuer).expect("server certificate");
        EcdsaPki { ca: ca_cert.pem(), chain: format!("{}{}", cert.pem(), ca_cert.pem()), key: key.serialize_pem() }
    }
}

/// `sipline serve` for [`DOMAIN`] with the harness's users, TLS with a
/// certificate from an [`EcdsaPki`], `-v` (every message in its output).
struct Serve {
    process: Sipline,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    ca_pem: PathBuf,
    _dir: TempDir,
}

impl Serve {
    fn start() -> Serve {
        let dir = TempDir::new("linphone-serve");
        let users = USERS.iter().fold(String::new(), |s, u| s + u.name + ":" + u.password + "\n");
        let users = dir.write("users", &users);
        let pki = EcdsaPki::new();
        let cert = dir.write("cert.pem", &pki.chain);
        let key = dir.write("key.pem", &pki.key);
        let ca_pem = dir.write("ca.pem", &pki.ca);
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
        let (users, cert, key) = (path(&users), path(&cert), path(&key));
        let args = [
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--users",
            &users,
            "--cert",
            &cert,
            "--key",
            &key,
            "-v",
        ];
        let process = Sipline::start(&args, 600);
        let (udp, tcp, tls) = (process.bound("udp"), process.bound("tcp"), process.bound("tls"));
        assert!(process.wait_line("serving ", Duration::from_secs(20)).is_some(), "{}", process.lines().join("\n"));
        Serve { process, udp, tcp, tls, ca_pem, _dir: dir }
    }
}

impl SipServer for Serve {
    fn name(&self) -> &'static str {
        "sipline serve"
    }

    fn uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("sip:{}", self.udp),
            Transport::Tcp => format!("sip:{};transport=tcp", self.tcp),
            Transport::Tls => format!("sips:{}", self.tls),
        }
    }

    fn endpoint_tls(&self) -> TlsConfig {
        TlsConfig::default()
    }

    fn log(&self) -> String {
        self.process.lines().join("\n")
    }

    fn registers(&self, user: &str) -> usize {
        let aor = format!(" for sip:{user}@{DOMAIN}: ");
        self.process.lines().iter().filter(|l| l.starts_with("REGISTER ") && l.contains(&aor)).count()
    }

    fn check_transport(&self, transport: Transport) -> Result<(), String> {
        let uri = self.uri(transport);
        if self.process.lines().iter().any(|l| l.starts_with(&format!("REGISTER {uri} for "))) {
            Ok(())
        } else {
            Err(format!("no REGISTER to {uri}"))
        }
    }

    fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    fn saw_request(&self, method: &str, _call_id: &str) -> bool {
        let prefix = format!("{method} sip:");
        self.process.lines().iter().any(|l| l.starts_with(&prefix) && l.ends_with(" branches): 200 OK"))
    }
}

impl Registrar for Serve {
    fn addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        }
    }

    fn root_ca(&self) -> Option<PathBuf> {
        Some(self.ca_pem.clone())
    }

    fn routes_gruus(&self) -> bool {
        true
    }
}

impl Registrar for Kamailio {
    fn addr(&self, transport: Transport) -> SocketAddr {
        Kamailio::addr(self, transport).unwrap_or_else(|| panic!("Kamailio has no {transport:?} listener"))
    }

    fn root_ca(&self) -> Option<PathBuf> {
        // Its authority (`sipline_tests::certs::Ca`) has an Ed25519 key,
        // which linphone's mbedtls 2.28 cannot load: linphone connects
        // without verifying Kamailio's certificate.
        None
    }

    fn routes_gruus(&self) -> bool {
        // `tests/interop/kamailio.cfg` grants GRUUs, but its WITHINDLG
        // route relays a loose-routed request to its Request-URI as is: a
        // GRUU of its domain goes to DNS (`sipline.test`) instead of
        // through `lookup("location")`, and is lost. linphone offers no
        // GRUU to it.
        false
    }
}

fn kamailio() -> Kamailio {
    Kamailio::start(&KamailioOptions { tls: KamailioTls::On, ..KamailioOptions::default() })
}

// ---------------------------------------------------------------------------
// Helpers

/// How long the calls of scenario 2 are held: 64·T1 (the longest any
/// transaction of the call may live: an unacknowledged 2xx is given up
/// then) and 2 s more.
fn hold() -> Duration {
    let secs = std::env::var("SIPLINE_LINPHONE_HOLD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(34);
    Duration::from_secs(secs)
}

/// A short hold, for the scenarios that are not about the call's length.
const SHORT_HOLD: Duration = Duration::from_secs(2);

/// linphone as `name` registered at `server` over `transport`.
fn linphone<S: Registrar>(server: &S, name: &str, transport: Transport) -> Linphone {
    let mut options = LinphoneOptions::new(user(name), server.addr(Transport::Udp));
    options = options.over(transport, server.addr(transport));
    options.gruu = server.routes_gruus();
    if transport == Transport::Tls {
        options.root_ca = server.root_ca();
        options.verify_server = options.root_ca.is_some();
    }
    Linphone::start(&options)
}

/// The first message of linphone's SIP log `wanted` accepts, or a panic
/// naming `what`, with its summary.
fn expect_sip(phone: &Linphone, what: &str, wanted: impl FnMut(&SipLogEntry) -> bool) -> SipLogEntry {
    phone.wait_sip(WAIT, wanted).unwrap_or_else(|| panic!("linphone's SIP log has no {what}:\n{}", phone.sip_summary()))
}

/// linphone's event `wanted` accepts, or a panic naming `what`.
fn expect_event(phone: &Linphone, what: &str, wanted: impl FnMut(&LinphoneEvent) -> bool) -> LinphoneEvent {
    phone
        .wait_event(WAIT, wanted)
        .unwrap_or_else(|| panic!("linphone printed no {what}; events: {:#?}", phone.events()))
}

/// Holds the call up for `hold`: neither linphone (its call `id`) nor the
/// sipline session may end it meanwhile (no BYE from either, no timeout).
fn hold_call(
    rt: &Tokio,
    events: &mut <Tokio as Runtime>::Events,
    session: sipline::endpoint::SessionId,
    phone: &Linphone,
    id: u32,
    hold: Duration,
) {
    let start = Instant::now();
    while start.elapsed() < hold {
        if let Some(Event::Session { session: s, event: SessionEvent::Ended(why) }) =
            rt.next_event(events, Duration::from_millis(200))
        {
            assert!(s != session, "the sipline side's call ended after {:?} of {hold:?}: {why:?}", start.elapsed());
        }
        let ended = phone
            .events()
            .into_iter()
            .find(|e| matches!(e, LinphoneEvent::Ended { id: i, .. } | LinphoneEvent::Error { id: i, .. } if *i == id));
        assert!(ended.is_none(), "linphone's call ended after {:?} of {hold:?}: {ended:?}", start.elapsed());
    }
    let bye = phone.sip_log().into_iter().find(|m| m.is_request("BYE"));
    assert!(bye.is_none(), "a BYE during the hold: {bye:?}");
}

/// Who ends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HangsUp {
    Linphone,
    Sipline,
}

/// The Call-ID of `response`.
fn call_id_of(bytes: &[u8]) -> String {
    header(&text(bytes), "Call-ID").expect("Call-ID")
}

/// After the hangup: the BYE went through and got its 200 on both sides.
fn check_bye(
    rt: &Tokio,
    events: &mut <Tokio as Runtime>::Events,
    session: sipline::endpoint::SessionId,
    phone: &Linphone,
    id: u32,
    call_id: &str,
    by: HangsUp,
) {
    let end = session_events(rt, events, session, is_ended);
    match by {
        HangsUp::Sipline => {
            assert_eq!(end, [SessionEvent::Ended(SessionEnd::HungUp)], "sipline's BYE");
            expect_sip(phone, "BYE received", |m| {
                m.direction == Direction::Received && m.is_request("BYE") && m.in_call(call_id)
            });
            expect_sip(phone, "200 sent to the BYE", |m| {
                m.direction == Direction::Sent
                    && m.is_response(200)
                    && m.cseq_method() == Some("BYE")
                    && m.in_call(call_id)
            });
        }
        HangsUp::Linphone => {
            assert_eq!(end, [SessionEvent::Ended(SessionEnd::PeerHungUp)], "linphone's BYE");
            expect_sip(phone, "200 received for its BYE", |m| {
                m.direction == Direction::Received
                    && m.is_response(200)
                    && m.cseq_method() == Some("BYE")
                    && m.in_call(call_id)
            });
        }
    }
    let ended = expect_event(phone, "end of the call", |e| matches!(e, LinphoneEvent::Ended { id: i, .. } if *i == id));
    let LinphoneEvent::Ended { reason, .. } = ended else { unreachable!() };
    assert_eq!(reason, "No error", "linphone's call ended badly");
}

// ---------------------------------------------------------------------------
// The scenarios

/// (1) linphone (carol) registers over `transport`: REGISTER, the 401,
/// REGISTER with credentials, 200 naming its Contact; the server then
/// reaches it (a MESSAGE from a sipline endpoint, over that transport);
/// at `quit` it unregisters (200 to a REGISTER with expires 0).
fn registers<S: Registrar>(server: &S, transport: Transport) {
    let mut carol = linphone(server, "carol", transport);
    assert!(carol.registered(), "{:?}", carol.registration_states());
    let t = format!("{transport:?}").to_ascii_uppercase();
    let registrar = server.addr(transport).to_string();
    let log = carol.sip_log();
    let find = |what: &str, f: &dyn Fn(&SipLogEntry) -> bool| {
        log.iter().find(|m| f(m)).cloned().unwrap_or_else(|| panic!("no {what}:\n{}", carol.sip_summary()))
    };
    let first = find("REGISTER", &|m| m.direction == Direction::Sent && m.is_request("REGISTER"));
    assert_eq!((first.transport.as_str(), first.peer.as_str()), (t.as_str(), registrar.as_str()), "{}", first.text);
    assert!(first.header("Authorization").is_none(), "credentials before a challenge:\n{}", first.text);
    let contact = first.header("Contact").unwrap_or_default().to_owned();
    let at = if transport == Transport::Tls { carol.tls_addr() } else { carol.sip_addr() };
    assert!(contact.contains(&format!("@{at}")), "Contact not linphone's address: {contact}");
    let challenge = find("401", &|m| m.direction == Direction::Received && m.is_response(401));
    assert!(challenge.header("WWW-Authenticate").is_some_and(|h| h.contains(&format!("realm=\"{DOMAIN}\""))));
    let answer =
        find("REGISTER with credentials", &|m| m.is_request("REGISTER") && m.header("Authorization").is_some());
    let credentials = answer.header("Authorization").unwrap_or_default();
    assert!(credentials.contains("username=\"carol\""), "{credentials}");
    let ok = find("200 to the REGISTER", &|m| m.is_response(200) && m.cseq_method() == Some("REGISTER"));
    // Over a connection linphone names the connection's own address (as
    // the registrar saw it: rport) in its Contact once it has learnt it.
    let bound = answer.header("Contact").and_then(|c| Some(c[c.find('<')? + 1..c.find('>')?].to_owned()));
    let bound = bound.unwrap_or_else(|| panic!("no Contact URI:\n{}", answer.text));
    assert!(
        ok.header("Contact").is_some_and(|c| c.contains(&format!("<{bound}>"))),
        "binding not {bound}:\n{}",
        ok.text
    );
    let registered = wait_until(WAIT, || server.registers("carol") >= 2);
    assert!(registered, "{} did not log carol's REGISTERs:\n{}", server.name(), server.log());

    // The server reaches the binding, over the connection or datagrams
    // of the registration.
    let rt = Tokio::new();
    let (alice, _events) = calls::registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let body = format!("to linphone over {t}");
    let sent = rt.send(&alice, Request::message(&carol.aor(), "text/plain", body.clone().into_bytes()));
    assert_eq!(sent.map(|r| r.code).map_err(|e| e.to_string()), Ok(200), "MESSAGE to linphone over {t}");
    expect_event(&carol, "MESSAGE", |e| matches!(e, LinphoneEvent::Message { text, .. } if *text == body));
    let message = expect_sip(&carol, "MESSAGE", |m| m.direction == Direction::Received && m.is_request("MESSAGE"));
    assert_eq!(message.transport, t, "{}", message.text);
    rt.shutdown(&alice);

    // It unregisters (200 to a REGISTER with expires 0).
    assert!(carol.unregister(WAIT), "not unregistered: {:?}", carol.registration_states());
    let log = carol.sip_log();
    let zero = |m: &SipLogEntry| {
        m.is_request("REGISTER")
            && (m.header("Expires") == Some("0") || m.header("Contact").is_some_and(|c| c.contains("expires=0")))
    };
    let zero =
        log.iter().find(|m| zero(m)).unwrap_or_else(|| panic!("no REGISTER with expires 0:\n{}", carol.sip_summary()));
    let cseq = zero.header("CSeq").unwrap_or_default();
    assert!(log.iter().any(|m| m.is_response(200) && m.header("CSeq") == Some(cseq)), "{}", carol.sip_summary());
}

/// (2), (3) sipline (alice, UDP) calls linphone (carol, `transport`):
/// linphone rings, is told to answer, the ACK reaches it, the call stays
/// up for `hold`, and `by` hangs up (the BYE answered 200).
fn sipline_calls_linphone<S: Registrar>(server: &S, transport: Transport, hold: Duration, by: HangsUp) {
    let carol = linphone(server, "carol", transport);
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let media = media_socket();
    let offer = sdp("alice", media_port(&media));
    let session = rt.invite(&alice, Request::invite(&carol.aor(), "application/sdp", offer)).expect("INVITE sent");
    let incoming = expect_event(&carol, "incoming call", |e| matches!(e, LinphoneEvent::IncomingCall { .. }));
    let LinphoneEvent::IncomingCall { id, from } = incoming else { unreachable!() };
    assert!(from.starts_with(&user("alice").aor()), "From {from}");
    carol.answer().expect("answer");
    let progress = session_events(&rt, &mut events, session, is_answered);
    let ok = calls::answered("linphone's answer", &progress);
    assert_eq!(ok.code, 200);
    let ok_text = text(&ok.bytes);
    assert!(
        ok_text.contains("User-Agent: Linphone") || ok_text.contains("Linphonec/"),
        "not linphone's 200:\n{ok_text}"
    );
    assert!(ok_text.contains("m=audio "), "no SDP answer:\n{ok_text}");
    let call_id = call_id_of(&ok.bytes);
    expect_event(&carol, "connected call", |e| matches!(e, LinphoneEvent::Connected { id: i, .. } if *i == id));
    let ack = expect_sip(&carol, "ACK (the 2xx's ACK never reached linphone)", |m| {
        m.direction == Direction::Received && m.is_request("ACK") && m.in_call(&call_id)
    });
    let t = format!("{transport:?}").to_ascii_uppercase();
    assert_eq!(ack.transport, t, "{}", ack.text);
    hold_call(&rt, &mut events, session, &carol, id, hold);
    // linphone retransmits its 200 until the ACK comes: one 200 sent
    // means the first ACK came at once (over UDP; never twice over TCP).
    let oks = carol
        .sip_log()
        .iter()
        .filter(|m| m.direction == Direction::Sent && m.is_response(200) && m.cseq_method() == Some("INVITE"))
        .count();
    assert_eq!(oks, 1, "linphone retransmitted its 200 (ACK late):\n{}", carol.sip_summary());
    match by {
        HangsUp::Sipline => rt.hangup(&alice, session).expect("hangup"),
        HangsUp::Linphone => carol.hangup().expect("terminate"),
    }
    check_bye(&rt, &mut events, session, &carol, id, &call_id, by);
    call_kept_its_transport(&carol, &call_id, transport);
    rt.shutdown(&alice);
}

/// Items 2 and 8 of issue 17 (RFC 5658): every message of the call
/// linphone sent or received went over its own transport — a TCP phone is
/// never given a UDP hop, a TLS one never continues in clear.
fn call_kept_its_transport(phone: &Linphone, call_id: &str, transport: Transport) {
    let t = format!("{transport:?}").to_ascii_uppercase();
    let log = phone.sip_log();
    let call: Vec<&SipLogEntry> = log.iter().filter(|m| m.in_call(call_id)).collect();
    assert!(call.iter().any(|m| m.is_request("BYE")), "no BYE in the call:\n{}", phone.sip_summary());
    for m in call {
        assert_eq!(m.transport, t, "{} over {} in a {t} call:\n{}", m.start_line(), m.transport, phone.sip_summary());
        let in_dialog = m.is_request("ACK") || m.is_request("BYE");
        if m.direction == Direction::Sent && in_dialog {
            if let Some(route) = m.text.lines().find(|l| l.starts_with("Route:")) {
                // The first hop's transport: its parameter, else UDP (or
                // TLS for a sips: URI), §19.1.
                let lower = route.to_ascii_lowercase();
                let named = lower.split(";transport=").nth(1).map(|r| r.split([';', '>']).next().unwrap_or_default());
                let hop = named.unwrap_or(if lower.contains("<sips:") { "tls" } else { "udp" });
                assert_eq!(hop, t.to_ascii_lowercase(), "the route set's first hop is not {t}: {route}");
            }
        }
    }
}

/// (2), (3) linphone (carol, `transport`) calls sipline (bob, UDP), which
/// accepts: linphone answers the 407 with credentials, the ACK reaches
/// bob, the call stays up for `hold`, and `by` hangs up.
fn linphone_calls_sipline<S: Registrar>(server: &S, transport: Transport, hold: Duration, by: HangsUp) {
    let carol = linphone(server, "carol", transport);
    let rt = Tokio::new();
    let (bob, mut events) = calls::registered(&rt, server, "bob", EndpointConfig::new(&user("bob").aor()));
    let media = media_socket();
    carol.call(&user("bob").aor()).expect("call");
    let mut other = Vec::new();
    let incoming =
        wait_event(&rt, &mut events, "incoming session", &mut other, |e| matches!(e, Event::IncomingSession { .. }));
    let Event::IncomingSession { session, from, body, request, .. } = incoming else { unreachable!() };
    assert!(from.starts_with(&carol.aor()), "From {from}");
    let offer = body.unwrap_or_else(|| panic!("linphone sent no offer:\n{}", text(&request)));
    assert!(text(&offer.bytes).contains("m=audio "), "{offer:?}");
    let call_id = call_id_of(&request);
    rt.accept(&bob, session, Some(&Body::sdp(sdp("bob", media_port(&media))))).expect("accept");
    let confirmed = session_events(&rt, &mut events, session, |e| {
        matches!(e, SessionEvent::Confirmed { .. } | SessionEvent::Ended(_))
    });
    assert!(
        matches!(confirmed.as_slice(), [SessionEvent::Confirmed { .. }]),
        "linphone's ACK did not reach sipline: {confirmed:?}\n{}",
        carol.sip_summary()
    );
    let out = expect_event(&carol, "outgoing call", |e| matches!(e, LinphoneEvent::OutgoingCall { .. }));
    let id = out.call_id().expect("an id");
    expect_event(&carol, "connected call", |e| matches!(e, LinphoneEvent::Connected { id: i, .. } if *i == id));
    expect_sip(&carol, "407 challenge", |m| m.is_response(407) && m.in_call(&call_id));
    let invite = expect_sip(&carol, "INVITE with credentials", |m| {
        m.direction == Direction::Sent && m.is_request("INVITE") && m.header("Proxy-Authorization").is_some()
    });
    assert!(invite.header("Proxy-Authorization").is_some_and(|c| c.contains("username=\"carol\"")), "{}", invite.text);
    hold_call(&rt, &mut events, session, &carol, id, hold);
    match by {
        HangsUp::Sipline => rt.hangup(&bob, session).expect("hangup"),
        HangsUp::Linphone => carol.hangup().expect("terminate"),
    }
    check_bye(&rt, &mut events, session, &carol, id, &call_id, by);
    call_kept_its_transport(&carol, &call_id, transport);
    rt.shutdown(&bob);
}

/// (4) bob is registered twice, as linphone and as a sipline endpoint that
/// rings and never answers; alice calls bob, linphone declines: alice gets
/// the 603 within a couple of seconds (the proxy cancels the ringing
/// branch at once instead of waiting for it), and the ringing branch is
/// cancelled.
fn decline_while_another_branch_rings<S: Registrar>(server: &S) {
    let phone = linphone(server, "bob", Transport::Udp);
    let rt = Tokio::new();
    let (bob, mut bob_events) = calls::registered(&rt, server, "bob", EndpointConfig::new(&user("bob").aor()));
    let (alice, mut alice_events) = calls::registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let media = media_socket();
    let offer = sdp("alice", media_port(&media));
    let session =
        rt.invite(&alice, Request::invite(&user("bob").aor(), "application/sdp", offer)).expect("INVITE sent");
    let mut other = Vec::new();
    let incoming = wait_event(&rt, &mut bob_events, "incoming session", &mut other, |e| {
        matches!(e, Event::IncomingSession { .. })
    });
    let Event::IncomingSession { session: ringing, .. } = incoming else { unreachable!() };
    rt.ring(&bob, ringing, 180).expect("ring");
    expect_event(&phone, "incoming call", |e| matches!(e, LinphoneEvent::IncomingCall { .. }));
    let declined_at = Instant::now();
    phone.decline().expect("decline");
    let outcome = session_events(&rt, &mut alice_events, session, is_answered);
    let took = declined_at.elapsed();
    let code = match outcome.last() {
        Some(SessionEvent::Ended(SessionEnd::Failed(RequestError::Failure(r)))) => r.code,
        other => panic!("alice's call: {other:?} ({outcome:?})"),
    };
    expect_sip(&phone, "603 sent", |m| m.direction == Direction::Sent && m.is_response(603));
    assert_eq!(code, 603, "the caller did not get linphone's 603: {outcome:?}");
    assert!(took < Duration::from_secs(3), "the 603 took {took:?} to reach the caller");
    let end = session_events(&rt, &mut bob_events, ringing, is_ended);
    assert_eq!(end, [SessionEvent::Ended(SessionEnd::Cancelled)], "the ringing branch was not cancelled");
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// A call that ends before the answer: sipline (alice) calls linphone
/// (carol), which rings; alice hangs up, so a CANCEL goes (§9.1): the
/// CANCEL reaches linphone through the proxy, its call ends, and alice's
/// INVITE ends with 487. Then the other way round: linphone calls a
/// sipline user who is busy (486): linphone's call ends with the 486.
fn cancel_and_busy<S: Registrar>(server: &S) {
    let carol = linphone(server, "carol", Transport::Udp);
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let media = media_socket();
    let offer = sdp("alice", media_port(&media));
    let session = rt.invite(&alice, Request::invite(&carol.aor(), "application/sdp", offer)).expect("INVITE sent");
    let incoming = expect_event(&carol, "incoming call", |e| matches!(e, LinphoneEvent::IncomingCall { .. }));
    let LinphoneEvent::IncomingCall { id, .. } = incoming else { unreachable!() };
    // linphone rings (180) before the CANCEL may go.
    expect_sip(&carol, "180 sent", |m| m.direction == Direction::Sent && m.is_response(180));
    rt.hangup(&alice, session).expect("hang up before the answer");
    let end = session_events(&rt, &mut events, session, is_answered);
    match end.last() {
        Some(SessionEvent::Ended(SessionEnd::Failed(RequestError::Failure(r)))) => assert_eq!(r.code, 487, "{end:?}"),
        Some(SessionEvent::Ended(SessionEnd::Cancelled)) => {}
        other => panic!("alice's cancelled call: {other:?} ({end:?})"),
    }
    expect_sip(&carol, "the CANCEL", |m| m.direction == Direction::Received && m.is_request("CANCEL"));
    expect_event(&carol, "end of the cancelled call", |e| matches!(e, LinphoneEvent::Ended { id: i, .. } if *i == id));

    // linphone calls bob, who is busy.
    let (bob, mut bob_events) = calls::registered(&rt, server, "bob", EndpointConfig::new(&user("bob").aor()));
    carol.call(&user("bob").aor()).expect("call");
    let mut other = Vec::new();
    let incoming = wait_event(&rt, &mut bob_events, "incoming session", &mut other, |e| {
        matches!(e, Event::IncomingSession { .. })
    });
    let Event::IncomingSession { session: busy, .. } = incoming else { unreachable!() };
    rt.reject(&bob, busy, 486, "Busy Here").expect("reject");
    let call = expect_event(&carol, "outgoing call", |e| matches!(e, LinphoneEvent::OutgoingCall { .. }));
    let id = call.call_id().expect("an id");
    expect_sip(&carol, "the 486", |m| m.direction == Direction::Received && m.is_response(486));
    let ended = expect_event(
        &carol,
        "end of the refused call",
        |e| matches!(e, LinphoneEvent::Ended { id: i, .. } | LinphoneEvent::Error { id: i, .. } if *i == id),
    );
    assert!(!matches!(ended, LinphoneEvent::Connected { .. }));
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// (5) MESSAGE both ways between sipline (alice) and linphone (carol).
fn message_both_ways<S: Registrar>(server: &S) {
    let carol = linphone(server, "carol", Transport::Udp);
    let rt = Tokio::new();
    let (alice, mut events) = calls::registered(&rt, server, "alice", EndpointConfig::new(&user("alice").aor()));
    let sent = rt.send(&alice, Request::message(&carol.aor(), "text/plain", b"hello linphone".to_vec()));
    assert_eq!(sent.map(|r| r.code).map_err(|e| e.to_string()), Ok(200), "MESSAGE to linphone");
    let got = expect_event(&carol, "MESSAGE", |e| matches!(e, LinphoneEvent::Message { .. }));
    let LinphoneEvent::Message { from, text: body } = got else { unreachable!() };
    assert!(from.starts_with(&user("alice").aor()), "From {from}");
    assert_eq!(body, "hello linphone");

    carol.send_message(&user("alice").aor(), "hello sipline").expect("chat");
    let mut other = Vec::new();
    let got = wait_event(&rt, &mut events, "MESSAGE", &mut other, |e| matches!(e, Event::Message { .. }));
    let Event::Message { from, body, content_type, request, .. } = got else { unreachable!() };
    assert!(from.starts_with(&carol.aor()), "From {from}");
    assert_eq!(text(&body), "hello sipline", "{content_type:?}\n{}", text(&request));
    let call_id = call_id_of(&request);
    expect_sip(&carol, "200 to its MESSAGE", |m| {
        m.direction == Direction::Received
            && m.is_response(200)
            && m.cseq_method() == Some("MESSAGE")
            && m.in_call(&call_id)
    });
    rt.shutdown(&alice);
}

/// (6) linphone (carol) calls `sip:someone@127.0.0.1:Q`, where `sipline
/// listen --answer` runs: another port of the server's own address. The
/// server must relay it there (not take it for itself); the call is
/// answered and acknowledged, and linphone's BYE gets its 200.
fn calls_ua_at_servers_address<S: Registrar>(server: &S) {
    let carol = linphone(server, "carol", Transport::Udp);
    let port = free_port(&[LOOPBACK_V4]);
    let bind = format!("127.0.0.1:{port}");
    let listen = Sipline::start(&["listen", "--bind", &bind, "--answer", "-v"], 120);
    listen.bound("udp");
    carol.call(&format!("sip:someone@{bind}")).expect("call");
    let out = expect_event(&carol, "outgoing call", |e| matches!(e, LinphoneEvent::OutgoingCall { .. }));
    let id = out.call_id().expect("an id");
    let connected = carol.wait_event(WAIT, |e| {
        matches!(e, LinphoneEvent::Connected { id: i, .. } | LinphoneEvent::Ended { id: i, .. } | LinphoneEvent::Error { id: i, .. } if *i == id)
    });
    assert!(
        matches!(connected, Some(LinphoneEvent::Connected { .. })),
        "the call to {bind} was not answered: {connected:?}\n{}",
        carol.sip_summary()
    );
    assert!(listen.wait_line("INVITE from sip:carol@", WAIT).is_some(), "no INVITE reached sipline listen");
    assert!(listen.wait_line("ACK", WAIT).is_some(), "no ACK reached sipline listen");
    let invite = expect_sip(&carol, "INVITE", |m| m.direction == Direction::Sent && m.is_request("INVITE"));
    assert_eq!(invite.peer, server.addr(Transport::Udp).to_string(), "not sent through the server");
    let call_id = invite.header("Call-ID").unwrap_or_default().to_owned();
    carol.hangup().expect("terminate");
    assert!(listen.wait_line("BYE from ", WAIT).is_some(), "no BYE reached sipline listen");
    expect_sip(&carol, "200 for its BYE", |m| {
        m.direction == Direction::Received
            && m.is_response(200)
            && m.cseq_method() == Some("BYE")
            && m.in_call(&call_id)
    });
    expect_event(&carol, "end of the call", |e| matches!(e, LinphoneEvent::Ended { id: i, .. } if *i == id));
}

// ---------------------------------------------------------------------------
// The tests: sipline serve

#[test]
fn serve_linphone_registers_over_udp() {
    registers(&Serve::start(), Transport::Udp);
}

#[test]
fn serve_linphone_registers_over_tcp() {
    registers(&Serve::start(), Transport::Tcp);
}

#[test]
fn serve_linphone_registers_over_tls() {
    registers(&Serve::start(), Transport::Tls);
}

#[test]
fn serve_sipline_calls_linphone_past_64_t1() {
    sipline_calls_linphone(&Serve::start(), Transport::Udp, hold(), HangsUp::Sipline);
}

#[test]
fn serve_linphone_calls_sipline_past_64_t1() {
    linphone_calls_sipline(&Serve::start(), Transport::Udp, hold(), HangsUp::Linphone);
}

#[test]
fn serve_linphone_over_tcp_calls_sipline_over_udp() {
    linphone_calls_sipline(&Serve::start(), Transport::Tcp, SHORT_HOLD, HangsUp::Sipline);
}

#[test]
fn serve_sipline_over_udp_calls_linphone_over_tcp() {
    sipline_calls_linphone(&Serve::start(), Transport::Tcp, SHORT_HOLD, HangsUp::Linphone);
}

#[test]
fn serve_linphone_over_tls_calls_sipline_over_udp() {
    linphone_calls_sipline(&Serve::start(), Transport::Tls, SHORT_HOLD, HangsUp::Sipline);
}

#[test]
fn serve_sipline_over_udp_calls_linphone_over_tls() {
    sipline_calls_linphone(&Serve::start(), Transport::Tls, SHORT_HOLD, HangsUp::Linphone);
}

#[test]
fn serve_cancel_before_answer_and_busy() {
    cancel_and_busy(&Serve::start());
}

#[test]
fn kamailio_cancel_before_answer_and_busy() {
    cancel_and_busy(&kamailio());
}

#[test]
fn serve_linphone_declines_while_another_branch_rings() {
    decline_while_another_branch_rings(&Serve::start());
}

#[test]
fn serve_message_both_ways() {
    message_both_ways(&Serve::start());
}

#[test]
fn serve_linphone_calls_ua_at_another_port_of_the_servers_address() {
    calls_ua_at_servers_address(&Serve::start());
}

// ---------------------------------------------------------------------------
// The same against Kamailio

#[test]
fn kamailio_linphone_registers_over_udp() {
    registers(&kamailio(), Transport::Udp);
}

#[test]
fn kamailio_linphone_registers_over_tcp() {
    registers(&kamailio(), Transport::Tcp);
}

/// Kamailio's test authority is ECDSA ([`sipline_tests::certs::Ca::new_ecdsa`]):
/// linphone's mbedtls 2.28 cannot parse a certificate an Ed25519 key signed
/// (`X509 - Signature algorithm (oid) is unsupported`).
#[test]
fn kamailio_linphone_registers_over_tls() {
    registers(&kamailio(), Transport::Tls);
}

#[test]
fn kamailio_sipline_calls_linphone() {
    sipline_calls_linphone(&kamailio(), Transport::Udp, SHORT_HOLD, HangsUp::Sipline);
}

#[test]
fn kamailio_linphone_calls_sipline() {
    linphone_calls_sipline(&kamailio(), Transport::Udp, SHORT_HOLD, HangsUp::Linphone);
}

#[test]
fn kamailio_linphone_over_tcp_calls_sipline_over_udp() {
    linphone_calls_sipline(&kamailio(), Transport::Tcp, SHORT_HOLD, HangsUp::Sipline);
}

#[test]
fn kamailio_linphone_declines_while_another_branch_rings() {
    decline_while_another_branch_rings(&kamailio());
}

#[test]
fn kamailio_message_both_ways() {
    message_both_ways(&kamailio());
}

#[test]
fn kamailio_sipline_over_udp_calls_linphone_over_tcp() {
    sipline_calls_linphone(&kamailio(), Transport::Tcp, SHORT_HOLD, HangsUp::Linphone);
}

#[test]
fn kamailio_linphone_over_tls_calls_sipline_over_udp() {
    linphone_calls_sipline(&kamailio(), Transport::Tls, SHORT_HOLD, HangsUp::Sipline);
}

#[test]
fn kamailio_sipline_over_udp_calls_linphone_over_tls() {
    sipline_calls_linphone(&kamailio(), Transport::Tls, SHORT_HOLD, HangsUp::Linphone);
}

#[test]
fn kamailio_linphone_calls_ua_at_another_port_of_the_servers_address() {
    calls_ua_at_servers_address(&kamailio());
}
