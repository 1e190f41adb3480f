//! The loopback conformance suite: one set of scenarios, written once as
//! generic functions, run over real sockets on 127.0.0.1 / ::1 against each
//! runtime (`sipline-tokio`, `sipline-smol`, `sipline-blocking`; see the
//! `suite!` invocation at the bottom), plus a mixed test where the three
//! talk to one another.
//!
//! Timers use a short T1 (20 ms), so the non-INVITE timeout (Timer F,
//! 64·T1, RFC 3261 §17.1.2.2) comes after 1.28 s.
//!
//! Sessions (INVITE dialogs) run between two endpoints of one runtime:
//! answered and hung up, rejected, cancelled while ringing. Subscriptions
//! (RFC 6665: presence with PIDF bodies, a refused one) and a blind
//! transfer (REFER, RFC 3515, between three endpoints) run the same way.

use sipline::driver::Error;
use sipline::endpoint::{
    Body, EndpointConfig, EndpointState, Event, Request, RequestError, SessionEnd, SessionEvent, SessionId, SubState,
    Subscribe, SubscriptionEnd, SubscriptionError, SubscriptionEvent, SubscriptionId,
};
use sipline::event::{Basic, Note, Presence, StatusFrag, Tuple};
use sipline::message::Method;
use sipline::transport::{CloseReason, TlsConfig, Transport};
use sipline_tests::certs::Ca;
use sipline_tests::runtimes::{Answerer, Blocking, Runtime, Smol, Tokio};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T1: Duration = Duration::from_millis(20);
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn config(aor: &str) -> EndpointConfig {
    let mut c = EndpointConfig::new(aor);
    c.timers.t1 = T1;
    c
}

fn any(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 0)
}

fn uri(transport: Transport, at: SocketAddr) -> String {
    format!("sip:bob@{at};transport={}", transport.as_str().to_ascii_lowercase())
}

fn message(text: &str) -> Request {
    Request::message("sip:placeholder@127.0.0.1", "text/plain", text.as_bytes().to_vec())
}

fn message_to(transport: Transport, at: SocketAddr, text: &str) -> Request {
    let mut r = message(text);
    r.uri = uri(transport, at);
    r
}

/// A scratch directory for PEM files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sipline-loopback-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Server and client TLS configs, loaded from PEM files as an application
/// would: the server's certificate names 127.0.0.1 and ::1.
fn tls_files() -> (TlsConfig, TlsConfig) {
    let ca = Ca::new("sipline loopback CA");
    let leaf = ca.issue(&["127.0.0.1", "::1"]);
    let dir = Scratch::new();
    let (chain, key, root) =
        (dir.write("chain.pem", &leaf.chain_pem), dir.write("key.pem", &leaf.key_pem), dir.write("ca.pem", &ca.pem));
    let read = |path: PathBuf| std::fs::read(path).expect("read PEM");
    let server = TlsConfig::default().with_identity_pem(&read(chain), &read(key)).expect("server PEM files");
    let client = TlsConfig::default().with_roots_pem(&read(root)).expect("CA PEM file");
    (server, client)
}

/// A server endpoint on `ip` over `transport` (answering MESSAGE 200 on
/// its own, or with `code: None` taking MESSAGE itself and never
/// answering), and a client endpoint able to reach it.
struct Pair<R: Runtime> {
    rt: Arc<R>,
    server: R::Endpoint,
    answerer: Option<Answerer>,
    client: R::Endpoint,
    /// Kept so the client's events are not dropped unread mid-test.
    _client_events: R::Events,
    at: SocketAddr,
}

impl<R: Runtime> Pair<R> {
    fn new(transport: Transport, ip: IpAddr, code: Option<u16>) -> Pair<R> {
        let rt = Arc::new(R::new());
        let mut server_config = config("sip:bob@127.0.0.1").listen(transport, any(ip));
        if code.is_none() {
            // The application takes MESSAGE itself (and never answers).
            server_config.handle_methods = vec![Method::Message];
        }
        let mut client_config = config("sip:alice@127.0.0.1");
        if ip.is_ipv6() {
            // UDP requests need a socket of the target's family.
            client_config = client_config.listen(Transport::Udp, any(ip));
        }
        if transport == Transport::Tls {
            let (server, client) = tls_files();
            server_config.transport.tls = server;
            client_config.transport.tls = client;
        }
        let (server, events) = rt.bind(server_config).expect("bind server");
        let at = R::local_addr(&server, transport).expect("server address");
        assert_eq!(at.ip(), ip);
        assert_ne!(at.port(), 0, "{}: port 0 must be reported as the OS's choice", R::NAME);
        let answerer = Some(Answerer::start(&rt, &server, events, code));
        let (client, client_events) = rt.bind(client_config).expect("bind client");
        Pair { rt, server, answerer, client, _client_events: client_events, at }
    }

    fn finish(mut self) -> Vec<sipline_tests::runtimes::Seen> {
        self.rt.shutdown(&self.client);
        self.rt.shutdown(&self.server);
        self.answerer.take().map(Answerer::stop).unwrap_or_default()
    }
}

/// MESSAGE over `transport`: answered 200, carried whole, Via naming the
/// transport.
fn message_over<R: Runtime>(transport: Transport, ip: IpAddr) {
    let pair = Pair::<R>::new(transport, ip, Some(200));
    let text = format!("hello over {} from {}", transport.as_str(), R::NAME);
    let ok = pair.rt.send(&pair.client, message_to(transport, pair.at, &text)).expect("MESSAGE answered");
    assert_eq!((ok.code, ok.reason.as_str()), (200, "OK"));
    let seen = pair.finish();
    assert_eq!(seen.len(), 1, "{}: exactly one request arrives", R::NAME);
    assert_eq!(seen[0].method, "MESSAGE");
    let request = String::from_utf8_lossy(&seen[0].request);
    assert!(request.contains(&format!("Via: SIP/2.0/{} ", transport.as_str())), "{request}");
    assert!(request.contains("Content-Type: text/plain\r\n"), "{request}");
    assert!(request.ends_with(&format!("\r\n\r\n{text}")), "{request}");
}

/// A port where nothing listens: the connection is refused and the request
/// fails with that reason (§18.4), not with a timeout.
fn dead_port<R: Runtime>(transport: Transport) {
    let rt = R::new();
    let port = TcpListener::bind(any(V4)).and_then(|l| l.local_addr()).expect("probe port").port();
    let (client, _events) = rt.bind(config("sip:alice@127.0.0.1")).expect("bind");
    let started = Instant::now();
    let outcome = rt.send(&client, message_to(transport, SocketAddr::new(V4, port), "anyone?"));
    assert_eq!(outcome, Err(Error::Failed(RequestError::ConnectionFailed(CloseReason::ConnectFailed))));
    assert!(started.elapsed() < 64 * T1, "{}: a refused connection must not wait for Timer F", R::NAME);
    rt.shutdown(&client);
}

/// A silent UDP peer: counts what arrives, answers nothing.
struct SilentUdp {
    at: SocketAddr,
    count: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SilentUdp {
    fn new() -> SilentUdp {
        let socket = UdpSocket::bind(any(V4)).expect("silent UDP");
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let at = socket.local_addr().expect("address");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while !s.load(Ordering::Acquire) {
                if socket.recv_from(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
        SilentUdp { at, count, thread, stop }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("silent UDP thread");
        self.count.load(Ordering::Acquire)
    }
}

/// A silent TCP peer: accepts one connection and reads it to its end.
/// `stop` returns how many bytes arrived and whether the client closed.
struct SilentTcp {
    at: SocketAddr,
    received: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<bool>,
}

impl SilentTcp {
    fn new() -> SilentTcp {
        let listener = TcpListener::bind(any(V4)).expect("silent TCP");
        let at = listener.local_addr().expect("address");
        let received = Arc::new(AtomicUsize::new(0));
        let r = received.clone();
        let thread = std::thread::spawn(move || {
            listener.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => return false,
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(n) => {
                        r.fetch_add(n, Ordering::AcqRel);
                    }
                    Err(_) => return false,
                }
            }
        });
        SilentTcp { at, received, thread }
    }

    fn stop(self) -> (usize, bool) {
        let closed = self.thread.join().expect("silent TCP thread");
        (self.received.load(Ordering::Acquire), closed)
    }
}

/// Every event until the stream ends (bounded).
fn remaining_events<R: Runtime>(rt: &R, events: &mut R::Events) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(e) = rt.next_event(events, Duration::from_secs(5)) {
        all.push(e);
        assert!(all.len() < 100, "too many events: {all:?}");
    }
    all
}

/// A peer-to-peer endpoint's events from start to shutdown.
fn ending() -> Vec<Event> {
    vec![Event::State(EndpointState::Established), Event::State(EndpointState::Terminated), Event::ShutDown]
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A peer that never answers: the request times out at 64·T1 (Timer F),
/// retransmitted over UDP (Timer E) and not over TCP.
fn timeout_at_timer_f<R: Runtime>(transport: Transport) {
    let rt = R::new();
    let (client, _events) = rt.bind(config("sip:alice@127.0.0.1")).expect("bind");
    let started = Instant::now();
    if transport == Transport::Udp {
        let silent = SilentUdp::new();
        let outcome = rt.send(&client, message_to(transport, silent.at, "hello?"));
        let elapsed = started.elapsed();
        rt.shutdown(&client);
        let copies = silent.stop();
        assert_eq!(outcome, Err(Error::Failed(RequestError::Timeout)));
        assert!(elapsed >= 64 * T1, "{}: timed out after {elapsed:?}, before 64·T1", R::NAME);
        // Timer E: at 0, T1, 3·T1, 7·T1… (T2 = 4 s is never reached):
        // 7 copies by 64·T1, give or take the last one.
        assert!((5..=8).contains(&copies), "{}: {copies} copies of the request", R::NAME);
    } else {
        let silent = SilentTcp::new();
        let at = silent.at;
        let outcome = rt.send(&client, message_to(transport, at, "hello?"));
        let elapsed = started.elapsed();
        rt.shutdown(&client);
        let (bytes, closed) = silent.stop();
        assert_eq!(outcome, Err(Error::Failed(RequestError::Timeout)));
        assert!(elapsed >= 64 * T1, "{}: timed out after {elapsed:?}, before 64·T1", R::NAME);
        let one = message_to(transport, at, "hello?").body.len();
        assert!(bytes > one && bytes < 2000, "{}: one request, not retransmitted ({bytes} bytes)", R::NAME);
        assert!(closed, "{}: shutdown closes the connection", R::NAME);
    }
    assert!(started.elapsed() < 64 * T1 + Duration::from_secs(5));
}

/// Many requests in flight at once, all answered, none lost or mixed up.
fn many_in_flight<R: Runtime>(transport: Transport) {
    const N: usize = 100;
    let pair = Pair::<R>::new(transport, V4, Some(200));
    let requests = (0..N).map(|i| message_to(transport, pair.at, &format!("message {i}"))).collect();
    let outcomes = pair.rt.send_all(&pair.client, requests);
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|r| r.code == 200)), "{}: {outcomes:?}", R::NAME);
    let seen = pair.finish();
    let mut bodies: Vec<String> = seen
        .iter()
        .map(|s| {
            let text = String::from_utf8_lossy(&s.request).into_owned();
            text.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned()
        })
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N, "{}: each request arrives once", R::NAME);
}

/// Shutdown with requests outstanding: each fails with `ShutDown`, the
/// connection closes, the event stream ends, the listening port is free
/// again and (where the runtime can tell) no task is left.
fn shutdown_with_outstanding<R: Runtime>(transport: Transport) {
    const N: usize = 5;
    let rt = Arc::new(R::new());
    let listen = any(V4);
    let (client, mut events) = rt.bind(config("sip:alice@127.0.0.1").listen(transport, listen)).expect("bind");
    let bound = R::local_addr(&client, transport).expect("bound");
    let (silent_udp, silent_tcp) = match transport {
        Transport::Udp => (Some(SilentUdp::new()), None),
        _ => (None, Some(SilentTcp::new())),
    };
    let at = silent_udp.as_ref().map_or_else(|| silent_tcp.as_ref().map(|s| s.at), |s| Some(s.at));
    let at = at.expect("silent peer");
    let sender = {
        let (rt, client) = (rt.clone(), client.clone());
        std::thread::spawn(move || {
            let requests = (0..N).map(|i| message_to(transport, at, &format!("pending {i}"))).collect();
            rt.send_all(&client, requests)
        })
    };
    // Wait until all are on the wire, then shut down.
    match (&silent_udp, &silent_tcp) {
        (Some(s), _) => wait_for("the requests", || s.count.load(Ordering::Acquire) >= N),
        (_, Some(s)) => wait_for("the requests", || s.received.load(Ordering::Acquire) > N * 300),
        _ => unreachable!(),
    }
    rt.shutdown(&client);
    let outcomes = sender.join().expect("sender");
    assert_eq!(outcomes, vec![Err(Error::Failed(RequestError::ShutDown)); N], "{}", R::NAME);
    assert_eq!(remaining_events(&*rt, &mut events), ending(), "{}", R::NAME);
    // Sends after shutdown are refused at once.
    let late = rt.send(&client, message_to(transport, at, "late"));
    assert_eq!(late, Err(Error::Refused(sipline::endpoint::SendError::ShuttingDown)));
    if let Some(s) = silent_udp {
        s.stop();
        UdpSocket::bind(bound).expect("the UDP port is free after shutdown");
    }
    if let Some(s) = silent_tcp {
        let (_, closed) = s.stop();
        assert!(closed, "{}: the connection is closed", R::NAME);
        TcpListener::bind(bound).expect("the TCP port is free after shutdown");
    }
    // The driver task itself returns just after it signals the end.
    if rt.tasks_alive().is_some() {
        wait_for("the runtime's tasks to end", || rt.tasks_alive() == Some(0));
    }
}

/// An incoming request the application never answered gets 503 when the
/// endpoint shuts down (RFC 3261 §21.5.4), so its sender stops waiting.
fn unanswered_get_503_at_shutdown<R: Runtime>(transport: Transport) {
    let pair = Pair::<R>::new(transport, V4, None);
    let sender = {
        let (rt, client, at) = (pair.rt.clone(), pair.client.clone(), pair.at);
        std::thread::spawn(move || rt.send(&client, message_to(transport, at, "anyone home?")))
    };
    let answerer = pair.answerer.as_ref().expect("answerer");
    wait_for("the request to arrive", || !answerer.seen().is_empty());
    pair.rt.shutdown(&pair.server);
    match sender.join().expect("sender") {
        Err(Error::Failed(RequestError::Failure(r))) => assert_eq!(r.code, 503, "{}", R::NAME),
        other => panic!("{}: expected a 503, got {other:?}", R::NAME),
    }
    pair.finish();
}

/// A server on wildcard addresses (`0.0.0.0`) reports its ports and is
/// reachable over loopback, over UDP and TCP.
fn wildcard_listeners<R: Runtime>() {
    let rt = Arc::new(R::new());
    let wildcard = any(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let server_config = config("sip:bob@127.0.0.1").listen(Transport::Udp, wildcard).listen(Transport::Tcp, wildcard);
    let (server, events) = rt.bind(server_config).expect("bind");
    let answerer = Answerer::start(&rt, &server, events, Some(200));
    let (client, _events) = rt.bind(config("sip:alice@127.0.0.1")).expect("bind client");
    for transport in [Transport::Udp, Transport::Tcp] {
        let bound = R::local_addr(&server, transport).expect("bound");
        assert!(bound.ip().is_unspecified() && bound.port() != 0, "{bound}");
        let ok = rt.send(&client, message_to(transport, SocketAddr::new(V4, bound.port()), "wild"));
        assert_eq!(ok.map(|r| r.code), Ok(200), "{} over {transport:?}", R::NAME);
    }
    rt.shutdown(&client);
    rt.shutdown(&server);
    assert_eq!(answerer.stop().len(), 2);
}

/// A host name in the Request-URI is resolved by the runtime (A/AAAA
/// through the system resolver): `localhost`, with the server listening
/// on the same port on 127.0.0.1 and ::1 so that either answer works.
/// (No other name: tests never query DNS for outside names; resolution
/// failures are covered in simulation.)
fn resolves_host_names<R: Runtime>() {
    let rt = Arc::new(R::new());
    let port = TcpListener::bind(any(V4)).and_then(|l| l.local_addr()).expect("probe").port();
    let server_config = config("sip:bob@127.0.0.1")
        .listen(Transport::Tcp, SocketAddr::new(V4, port))
        .listen(Transport::Tcp, SocketAddr::new(V6, port));
    let (server, events) = rt.bind(server_config).expect("bind");
    let answerer = Answerer::start(&rt, &server, events, Some(200));
    let (client, _events) = rt.bind(config("sip:alice@127.0.0.1")).expect("bind client");
    let mut request = message("by name");
    request.uri = format!("sip:bob@localhost:{port};transport=tcp");
    assert_eq!(rt.send(&client, request).map(|r| r.code), Ok(200), "{}", R::NAME);
    rt.shutdown(&client);
    rt.shutdown(&server);
    assert_eq!(answerer.stop().len(), 1);
}

/// Dropping every handle shuts the endpoint down: the event stream ends,
/// the ports are released and (where the runtime can tell) no task is left.
fn dropping_the_endpoint_shuts_it_down<R: Runtime>() {
    let rt = R::new();
    let config = config("sip:alice@127.0.0.1").listen(Transport::Udp, any(V4)).listen(Transport::Tcp, any(V4));
    let (endpoint, mut events) = rt.bind(config).expect("bind");
    let udp = R::local_addr(&endpoint, Transport::Udp).expect("UDP");
    let tcp = R::local_addr(&endpoint, Transport::Tcp).expect("TCP");
    assert!(TcpListener::bind(tcp).is_err(), "{}: the listener is bound", R::NAME);
    drop(endpoint);
    assert_eq!(remaining_events(&rt, &mut events), ending(), "{}", R::NAME);
    wait_for("the ports to be released", || UdpSocket::bind(udp).is_ok() && TcpListener::bind(tcp).is_ok());
    if rt.tasks_alive().is_some() {
        wait_for("the runtime's tasks to end", || rt.tasks_alive() == Some(0));
    }
}

/// The first datagram an endpoint sends is not lost: with T1 at ten
/// minutes nothing is retransmitted, so the answer must come to the first
/// copy (a runtime that drops sends on a fresh socket fails here).
fn first_datagram_arrives<R: Runtime>() {
    let rt = Arc::new(R::new());
    let (server, events) = rt.bind(config("sip:bob@127.0.0.1").listen(Transport::Udp, any(V4))).expect("bind");
    let at = R::local_addr(&server, Transport::Udp).expect("bound");
    let answerer = Answerer::start(&rt, &server, events, Some(200));
    let mut slow = config("sip:alice@127.0.0.1");
    slow.timers.t1 = Duration::from_secs(600);
    let (client, _events) = rt.bind(slow).expect("bind client");
    let (done, outcome) = std::sync::mpsc::channel();
    {
        let (rt, client) = (rt.clone(), client.clone());
        std::thread::spawn(move || {
            let _ = done.send(rt.send(&client, message_to(Transport::Udp, at, "first")));
        });
    }
    let outcome = outcome.recv_timeout(Duration::from_secs(20)).expect("answered without a retransmission");
    assert_eq!(outcome.map(|r| r.code), Ok(200), "{}", R::NAME);
    rt.shutdown(&client);
    rt.shutdown(&server);
    assert_eq!(answerer.stop().len(), 1);
}

/// How long a session scenario waits for any one event.
const SESSION_WAIT: Duration = Duration::from_secs(10);

const OFFER: &[u8] =
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const ANSWER: &[u8] =
    b"v=0\r\no=bob 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

/// A caller and a callee, each listening on `transport` at 127.0.0.1 (so
/// that each one's Contact is reachable by the other). The callee's
/// application takes INFO (DTMF relay) itself.
struct Call<R: Runtime> {
    rt: Arc<R>,
    caller: R::Endpoint,
    caller_events: R::Events,
    callee: R::Endpoint,
    callee_events: R::Events,
    at: SocketAddr,
}

impl<R: Runtime> Call<R> {
    fn new(transport: Transport) -> Call<R> {
        let rt = Arc::new(R::new());
        let mut callee_config = config("sip:bob@127.0.0.1").listen(transport, any(V4));
        callee_config.handle_methods = vec![Method::Info];
        callee_config.accept.push("application/dtmf-relay".to_owned());
        let (callee, callee_events) = rt.bind(callee_config).expect("bind");
        let at = R::local_addr(&callee, transport).expect("callee address");
        let (caller, caller_events) =
            rt.bind(config("sip:alice@127.0.0.1").listen(transport, any(V4))).expect("bind caller");
        Call { rt, caller, caller_events, callee, callee_events, at }
    }

    /// Sends the INVITE with the offer.
    fn invite(&self, transport: Transport) -> SessionId {
        let request = Request::invite(&uri(transport, self.at), "application/sdp", OFFER.to_vec());
        self.rt.invite(&self.caller, request).expect("INVITE sent")
    }

    /// The callee's next incoming session: its handle and offer.
    fn incoming(&mut self) -> (SessionId, Option<Body>) {
        let deadline = Instant::now() + SESSION_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rt.next_event(&mut self.callee_events, left) {
                Some(Event::IncomingSession { session, body, .. }) => return (session, body),
                Some(_) => {}
                None => panic!("{}: no incoming session", R::NAME),
            }
        }
    }

    fn finish(self) {
        self.rt.shutdown(&self.caller);
        self.rt.shutdown(&self.callee);
    }
}

/// The session events of `session` on `events` up to and including the
/// first one `last` accepts (bounded: panics after [`SESSION_WAIT`]
/// without one).
fn session_events<R: Runtime>(
    rt: &R,
    events: &mut R::Events,
    session: SessionId,
    last: impl Fn(&SessionEvent) -> bool,
) -> Vec<SessionEvent> {
    let deadline = Instant::now() + SESSION_WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rt.next_event(events, left) {
            Some(Event::Session { session: s, event }) if s == session => {
                let done = last(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Some(Event::Session { session: s, event }) => {
                panic!("{}: event of another session {s:?}: {event:?}", R::NAME)
            }
            Some(_) => {}
            None => panic!("{}: timed out; session events so far: {seen:?}", R::NAME),
        }
    }
}

fn ended(e: &SessionEvent) -> bool {
    matches!(e, SessionEvent::Ended(_))
}

/// An answered call: the callee rings, accepts with an answer, the caller
/// sees the 180 and the 200 with the answer (ACK sent), the callee the ACK;
/// an INFO goes inside the dialog; the caller hangs up (BYE).
fn call_answered_and_hung_up<R: Runtime>(transport: Transport) {
    let mut call = Call::<R>::new(transport);
    let alice = call.invite(transport);
    let (bob, offer) = call.incoming();
    assert_eq!(offer, Some(Body::sdp(OFFER)), "{}", R::NAME);
    call.rt.ring(&call.callee, bob, 180).expect("ring");
    call.rt.accept(&call.callee, bob, Some(&Body::sdp(ANSWER))).expect("accept");
    let rt = call.rt.clone();
    let progress = session_events(&*rt, &mut call.caller_events, alice, |e| matches!(e, SessionEvent::Answered(_)));
    let codes: Vec<u16> = progress
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Progress(r) => Some(r.code),
            _ => None,
        })
        .collect();
    assert!(codes.contains(&180), "{}: {progress:?}", R::NAME);
    let Some(SessionEvent::Answered(ok)) = progress.last() else { unreachable!() };
    assert_eq!(ok.code, 200, "{}", R::NAME);
    assert!(ok.bytes.ends_with(ANSWER), "{}: the answer is carried", R::NAME);
    let confirmed = session_events(&*rt, &mut call.callee_events, bob, |e| matches!(e, SessionEvent::Confirmed { .. }));
    assert_eq!(confirmed, [SessionEvent::Confirmed { body: None }], "{}", R::NAME);

    // A request inside the dialog, answered by the callee's application.
    let info = {
        let (rt, caller) = (rt.clone(), call.caller.clone());
        std::thread::spawn(move || {
            let mut request = Request::new(Method::Info, "sip:ignored@127.0.0.1");
            request.content_type = Some("application/dtmf-relay".to_owned());
            request.body = b"Signal=5\r\nDuration=160\r\n".to_vec();
            rt.send_in_session(&caller, alice, request)
        })
    };
    let deadline = Instant::now() + SESSION_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rt.next_event(&mut call.callee_events, left) {
            Some(Event::Incoming { incoming, method, session, .. }) => {
                assert_eq!((method.as_str(), session), ("INFO", Some(bob)), "{}", R::NAME);
                rt.respond(&call.callee, incoming, 200).expect("answer the INFO");
                break;
            }
            Some(_) => {}
            None => panic!("{}: the INFO did not arrive", R::NAME),
        }
    }
    assert_eq!(info.join().expect("INFO thread").map(|r| r.code), Ok(200), "{}", R::NAME);

    call.rt.hangup(&call.caller, alice).expect("hang up");
    let bob_end = session_events(&*rt, &mut call.callee_events, bob, ended);
    assert_eq!(bob_end, [SessionEvent::Ended(SessionEnd::PeerHungUp)], "{}", R::NAME);
    let alice_end = session_events(&*rt, &mut call.caller_events, alice, ended);
    assert_eq!(alice_end, [SessionEvent::Ended(SessionEnd::HungUp)], "{}", R::NAME);
    // The session is gone: commands on it are refused.
    assert_eq!(rt.hangup(&call.caller, alice), Err(sipline::endpoint::SessionError::Unknown), "{}", R::NAME);
    call.finish();
}

/// The callee rejects with 486: the caller's session fails with it.
fn call_rejected<R: Runtime>(transport: Transport) {
    let mut call = Call::<R>::new(transport);
    let alice = call.invite(transport);
    let (bob, _) = call.incoming();
    call.rt.reject(&call.callee, bob, 486, "Busy Here").expect("reject");
    let rt = call.rt.clone();
    let bob_end = session_events(&*rt, &mut call.callee_events, bob, ended);
    assert_eq!(bob_end, [SessionEvent::Ended(SessionEnd::Rejected)], "{}", R::NAME);
    let alice_events = session_events(&*rt, &mut call.caller_events, alice, ended);
    match alice_events.last() {
        Some(SessionEvent::Ended(SessionEnd::Failed(RequestError::Failure(r)))) => {
            assert_eq!((r.code, r.reason.as_str()), (486, "Busy Here"), "{}", R::NAME);
        }
        other => panic!("{}: expected a 486 failure, got {other:?}", R::NAME),
    }
    call.finish();
}

/// The caller hangs up while the callee rings: CANCEL, 487; both sessions
/// end cancelled.
fn call_cancelled_while_ringing<R: Runtime>(transport: Transport) {
    let mut call = Call::<R>::new(transport);
    let alice = call.invite(transport);
    let (bob, _) = call.incoming();
    call.rt.ring(&call.callee, bob, 180).expect("ring");
    let rt = call.rt.clone();
    session_events(&*rt, &mut call.caller_events, alice, |e| matches!(e, SessionEvent::Progress(r) if r.code == 180));
    rt.hangup(&call.caller, alice).expect("cancel");
    let bob_end = session_events(&*rt, &mut call.callee_events, bob, ended);
    assert_eq!(bob_end, [SessionEvent::Ended(SessionEnd::Cancelled)], "{}", R::NAME);
    let alice_end = session_events(&*rt, &mut call.caller_events, alice, ended);
    assert_eq!(alice_end.last(), Some(&SessionEvent::Ended(SessionEnd::Cancelled)), "{}: {alice_end:?}", R::NAME);
    call.finish();
}

/// T1 of the subscription scenarios: Timer N (64·T1, RFC 6665 §4.1.2.4)
/// bounds the wait for a first NOTIFY, and 6.4 s keeps a loaded machine
/// from failing it. Nothing is lost on loopback, so T1 delays nothing.
const EVENTS_T1: Duration = Duration::from_millis(100);

/// An endpoint for the subscription scenarios, listening on `transport`
/// at 127.0.0.1 (so that its Contact is reachable), serving `events`.
fn events_config(aor: &str, transport: Transport, events: &[&str]) -> EndpointConfig {
    let mut c = config(aor).listen(transport, any(V4));
    c.timers.t1 = EVENTS_T1;
    c.events = events.iter().map(|e| (*e).to_owned()).collect();
    c
}

fn sip_uri(user: &str, transport: Transport, at: SocketAddr) -> String {
    format!("sip:{user}@{at};transport={}", transport.as_str().to_ascii_lowercase())
}

/// An endpoint's events, kept so that a scenario with several dialogs can
/// wait for the one it wants: [`Inbox::take`] returns the earliest event
/// it picks, past or future, and keeps the others in order.
struct Inbox<R: Runtime> {
    name: &'static str,
    events: R::Events,
    kept: Vec<Event>,
}

impl<R: Runtime> Inbox<R> {
    fn new(name: &'static str, events: R::Events) -> Inbox<R> {
        Inbox { name, events, kept: Vec::new() }
    }

    /// The earliest event `pick` takes (bounded: panics after
    /// [`SESSION_WAIT`] without one).
    fn take<T>(&mut self, rt: &R, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        if let Some(i) = self.kept.iter().position(|e| pick(e).is_some()) {
            let event = self.kept.remove(i);
            return pick(&event).expect("picked");
        }
        let deadline = Instant::now() + SESSION_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = rt.next_event(&mut self.events, left) else {
                panic!("{}: {} timed out waiting for {what}; other events: {:?}", R::NAME, self.name, self.kept)
            };
            if let Some(t) = pick(&event) {
                return t;
            }
            self.kept.push(event);
            assert!(self.kept.len() < 100, "{}: too many events: {:?}", R::NAME, self.kept);
        }
    }

    /// The next event of `subscription`.
    fn subscription(&mut self, rt: &R, subscription: SubscriptionId) -> SubscriptionEvent {
        self.take(rt, "a subscription event", |e| match e {
            Event::Subscription { subscription: s, event } if *s == subscription => Some(event.clone()),
            _ => None,
        })
    }

    /// The next event of `session`.
    fn session(&mut self, rt: &R, session: SessionId) -> SessionEvent {
        self.take(rt, "a session event", |e| match e {
            Event::Session { session: s, event } if *s == session => Some(event.clone()),
            _ => None,
        })
    }

    /// The events of `session` up to and including the first `last` takes.
    fn session_until(&mut self, rt: &R, session: SessionId, last: impl Fn(&SessionEvent) -> bool) -> Vec<SessionEvent> {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|e| !last(e)) {
            seen.push(self.session(rt, session));
            assert!(seen.len() < 20, "{}: {seen:?}", R::NAME);
        }
        seen
    }

    /// The next incoming session: its handle and INVITE.
    fn incoming_session(&mut self, rt: &R) -> (SessionId, Arc<[u8]>) {
        self.take(rt, "an incoming session", |e| match e {
            Event::IncomingSession { session, request, .. } => Some((*session, request.clone())),
            _ => None,
        })
    }

    /// The subscription events left unread (taken ones aside): a scenario
    /// asserts there are none it did not expect.
    fn stray_subscription_events(&self) -> Vec<&Event> {
        self.kept.iter().filter(|e| matches!(e, Event::Subscription { .. })).collect()
    }
}

/// A one-tuple PIDF document for Bob (RFC 3863).
fn pidf(basic: Basic, note: &str) -> Body {
    let doc = Presence::new("sip:bob@127.0.0.1", Tuple::new("t1", basic).with_note(Note::new(note)));
    Body::new(Presence::CONTENT_TYPE, doc.to_body().expect("a writable PIDF document"))
}

/// The basic status and the first tuple note of a NOTIFY's PIDF body.
fn presence_of<R: Runtime>(n: &sipline::endpoint::Notification) -> (Option<Basic>, String) {
    let body = n.body.as_ref().unwrap_or_else(|| panic!("{}: a NOTIFY without a body: {n:?}", R::NAME));
    assert_eq!(body.content_type, Presence::CONTENT_TYPE, "{}", R::NAME);
    let doc = Presence::parse(&body.bytes).unwrap_or_else(|e| panic!("{}: bad PIDF ({e}): {body:?}", R::NAME));
    assert_eq!(doc.entity, "sip:bob@127.0.0.1", "{}", R::NAME);
    assert_eq!(doc.tuples.len(), 1, "{}: {doc:?}", R::NAME);
    let tuple = &doc.tuples[0];
    assert_eq!(tuple.id, "t1", "{}", R::NAME);
    let note = tuple.notes.first().map(|n| n.text.to_string()).unwrap_or_default();
    (tuple.basic, note)
}

/// A header field's value in a whole message (the first of its name).
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Presence (RFC 6665, RFC 3856): Alice subscribes to Bob's presence;
/// Bob accepts with an `open` PIDF document (the first NOTIFY goes at
/// once, §4.2.1.2), then tells `closed`; Alice unsubscribes (§4.1.2.3) and
/// hears the last NOTIFY, terminated; both subscriptions end.
fn presence_subscription<R: Runtime>(transport: Transport) {
    let rt = R::new();
    let (bob, bob_events) = rt.bind(events_config("sip:bob@127.0.0.1", transport, &["presence"])).expect("bind Bob");
    let (alice, alice_events) = rt.bind(events_config("sip:alice@127.0.0.1", transport, &[])).expect("bind Alice");
    let (mut bob_in, mut alice_in) = (Inbox::<R>::new("Bob", bob_events), Inbox::<R>::new("Alice", alice_events));
    let bob_at = R::local_addr(&bob, transport).expect("Bob's address");

    let mut ask = Subscribe::new(&sip_uri("bob", transport, bob_at), "presence");
    ask.accept = vec![Presence::CONTENT_TYPE.to_owned()];
    ask.expires = 600;
    let watching = rt.subscribe(&alice, ask).expect("SUBSCRIBE sent");

    // Bob is asked (§4.2.1): the package, the subscriber, the duration.
    let (offered, subscribe) = bob_in.take(&rt, "the SUBSCRIBE", |e| match e {
        Event::IncomingSubscription { subscription, event, from, expires, accept, body, request, .. } => Some((
            *subscription,
            (event.clone(), from.clone(), *expires, accept.clone(), body.clone(), request.clone()),
        )),
        _ => None,
    });
    let (event, from, expires, accept, body, request) = subscribe;
    assert_eq!(event, "presence", "{}", R::NAME);
    assert_eq!(from, "sip:alice@127.0.0.1", "{}", R::NAME);
    assert_eq!(expires, 600, "{}: the duration asked for is granted", R::NAME);
    assert_eq!(accept, [Presence::CONTENT_TYPE], "{}", R::NAME);
    assert_eq!(body, None, "{}", R::NAME);
    assert_eq!(header_value(&request, "Event").as_deref(), Some("presence"), "{}", R::NAME);
    rt.accept_subscription(&bob, offered, SubState::Active, Some(pidf(Basic::Open, "at my desk")))
        .expect("accept the subscription");

    // Alice: the 200 and the first NOTIFY, in either order (a NOTIFY may
    // overtake the 2xx, §4.1.2.4: over TCP it may come on a connection of
    // its own).
    let mut first = None;
    let mut accepted = None;
    while first.is_none() || accepted.is_none() {
        match alice_in.subscription(&rt, watching) {
            SubscriptionEvent::Accepted(ok) if accepted.is_none() => accepted = Some(ok),
            SubscriptionEvent::Notified(n) if first.is_none() => first = Some(n),
            other => panic!("{}: unexpected {other:?}", R::NAME),
        }
    }
    let (ok, first) = (accepted.expect("2xx"), first.expect("NOTIFY"));
    assert_eq!(ok.code, 200, "{}", R::NAME);
    assert_eq!(header_value(&ok.bytes, "Expires").as_deref(), Some("600"), "{}", R::NAME);
    assert_eq!(first.state, SubState::Active, "{}", R::NAME);
    assert!(first.expires.is_some_and(|e| (590..=600).contains(&e)), "{}: {first:?}", R::NAME);
    assert_eq!(header_value(&first.request, "Event").as_deref(), Some("presence"), "{}", R::NAME);
    assert_eq!(presence_of::<R>(&first), (Some(Basic::Open), "at my desk".to_owned()), "{}", R::NAME);

    // A new state (§4.2.2).
    rt.notify(&bob, offered, SubState::Active, Some(pidf(Basic::Closed, "gone home"))).expect("NOTIFY");
    match alice_in.subscription(&rt, watching) {
        SubscriptionEvent::Notified(n) => {
            assert_eq!(n.state, SubState::Active, "{}", R::NAME);
            assert_eq!(presence_of::<R>(&n), (Some(Basic::Closed), "gone home".to_owned()), "{}", R::NAME);
        }
        other => panic!("{}: expected the closed NOTIFY, got {other:?}", R::NAME),
    }

    // §4.1.2.3: Expires: 0; the last NOTIFY says terminated and still
    // tells the current state; then the subscription is over on both sides.
    rt.unsubscribe(&alice, watching).expect("unsubscribe");
    match alice_in.subscription(&rt, watching) {
        SubscriptionEvent::Notified(n) => {
            assert_eq!(n.state, SubState::Terminated, "{}: {n:?}", R::NAME);
            assert_eq!(presence_of::<R>(&n), (Some(Basic::Closed), "gone home".to_owned()), "{}", R::NAME);
        }
        other => panic!("{}: expected the terminated NOTIFY, got {other:?}", R::NAME),
    }
    assert_eq!(
        alice_in.subscription(&rt, watching),
        SubscriptionEvent::Ended(SubscriptionEnd::Unsubscribed),
        "{}",
        R::NAME
    );
    assert_eq!(
        bob_in.subscription(&rt, offered),
        SubscriptionEvent::Ended(SubscriptionEnd::Unsubscribed),
        "{}",
        R::NAME
    );
    // The handles are gone: commands on them are refused.
    assert_eq!(rt.unsubscribe(&alice, watching), Err(SubscriptionError::Unknown), "{}", R::NAME);
    assert_eq!(rt.notify(&bob, offered, SubState::Active, None), Err(SubscriptionError::Unknown), "{}", R::NAME);
    assert!(alice_in.stray_subscription_events().is_empty(), "{}: {:?}", R::NAME, alice_in.kept);
    assert!(bob_in.stray_subscription_events().is_empty(), "{}: {:?}", R::NAME, bob_in.kept);
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// Bob refuses Alice's subscription with 403: her SUBSCRIBE fails with it
/// (§4.1.2.1), his subscription ends rejected.
///
/// Over TCP this is ignored for now: `Endpoint::reject_subscription` hands
/// the 403 to the transaction layer without draining it (no `pump`), so
/// it is sent only when some later input comes; over UDP that is Alice's
/// retransmission (Timer E, T1 later), over TCP nothing, and Alice's
/// subscription ends on Timer N (`NoNotify`) instead.
fn subscription_rejected<R: Runtime>(transport: Transport) {
    let rt = R::new();
    let (bob, bob_events) = rt.bind(events_config("sip:bob@127.0.0.1", transport, &["presence"])).expect("bind Bob");
    let (alice, alice_events) = rt.bind(events_config("sip:alice@127.0.0.1", transport, &[])).expect("bind Alice");
    let (mut bob_in, mut alice_in) = (Inbox::<R>::new("Bob", bob_events), Inbox::<R>::new("Alice", alice_events));
    let bob_at = R::local_addr(&bob, transport).expect("Bob's address");
    let watching = rt.subscribe(&alice, Subscribe::new(&sip_uri("bob", transport, bob_at), "presence")).expect("sent");
    let offered = bob_in.take(&rt, "the SUBSCRIBE", |e| match e {
        Event::IncomingSubscription { subscription, .. } => Some(*subscription),
        _ => None,
    });
    assert_eq!(rt.reject_subscription(&bob, offered, 200, "OK"), Err(SubscriptionError::Status), "{}", R::NAME);
    rt.reject_subscription(&bob, offered, 403, "Forbidden").expect("reject");
    assert_eq!(bob_in.subscription(&rt, offered), SubscriptionEvent::Ended(SubscriptionEnd::Rejected), "{}", R::NAME);
    match alice_in.subscription(&rt, watching) {
        SubscriptionEvent::Ended(SubscriptionEnd::Failed(RequestError::Failure(r))) => {
            assert_eq!((r.code, r.reason.as_str()), (403, "Forbidden"), "{}", R::NAME);
        }
        other => panic!("{}: expected a 403 failure, got {other:?}", R::NAME),
    }
    rt.shutdown(&alice);
    rt.shutdown(&bob);
}

/// The status line of a refer NOTIFY's sipfrag body (RFC 3515 §2.4.5).
fn frag_of<R: Runtime>(n: &sipline::endpoint::Notification) -> (u16, String) {
    let body = n.body.as_ref().unwrap_or_else(|| panic!("{}: a refer NOTIFY without a body: {n:?}", R::NAME));
    assert_eq!(body.content_type, StatusFrag::CONTENT_TYPE, "{}", R::NAME);
    let frag = StatusFrag::parse(&body.bytes).unwrap_or_else(|e| panic!("{}: bad sipfrag ({e}): {body:?}", R::NAME));
    (frag.code, frag.reason.into_owned())
}

/// A blind transfer (RFC 3515, RFC 3892): Alice calls Bob, then REFERs
/// him to Carol inside the call; Bob accepts (202, `SIP/2.0 100 Trying`),
/// calls Carol with Alice's Referred-By and reports 180 and 200; Alice
/// hears each as a NOTIFY, the last terminated with `noresource`
/// (§2.4.7). Then both calls are hung up.
fn blind_transfer<R: Runtime>(transport: Transport) {
    let rt = R::new();
    let (alice, alice_events) = rt.bind(events_config("sip:alice@127.0.0.1", transport, &[])).expect("bind Alice");
    let (bob, bob_events) = rt.bind(events_config("sip:bob@127.0.0.1", transport, &["refer"])).expect("bind Bob");
    let (carol, carol_events) = rt.bind(events_config("sip:carol@127.0.0.1", transport, &[])).expect("bind Carol");
    let mut alice_in = Inbox::<R>::new("Alice", alice_events);
    let mut bob_in = Inbox::<R>::new("Bob", bob_events);
    let mut carol_in = Inbox::<R>::new("Carol", carol_events);
    let bob_at = R::local_addr(&bob, transport).expect("Bob's address");
    let carol_uri = sip_uri("carol", transport, R::local_addr(&carol, transport).expect("Carol's address"));

    // Alice calls Bob; he answers.
    let invite = Request::invite(&sip_uri("bob", transport, bob_at), "application/sdp", OFFER.to_vec());
    let call = rt.invite(&alice, invite).expect("INVITE sent");
    let (bob_call, _) = bob_in.incoming_session(&rt);
    rt.accept(&bob, bob_call, Some(&Body::sdp(ANSWER))).expect("Bob answers");
    let answered = alice_in.session_until(&rt, call, |e| matches!(e, SessionEvent::Answered(_)));
    assert!(matches!(answered.last(), Some(SessionEvent::Answered(ok)) if ok.code == 200), "{}", R::NAME);
    let confirmed = bob_in.session_until(&rt, bob_call, |e| matches!(e, SessionEvent::Confirmed { .. }));
    assert_eq!(confirmed, [SessionEvent::Confirmed { body: None }], "{}", R::NAME);

    // The REFER, in the call's dialog.
    let transfer = rt.refer(&alice, call, &carol_uri).expect("REFER sent");
    let (asked, session, refer_to, referred_by, refer) = bob_in.take(&rt, "the REFER", |e| match e {
        Event::Refer { subscription, session, refer_to, referred_by, request, .. } => {
            Some((*subscription, *session, refer_to.clone(), referred_by.clone(), request.clone()))
        }
        _ => None,
    });
    assert_eq!(session, Some(bob_call), "{}: the REFER came in the call", R::NAME);
    assert_eq!(refer_to, carol_uri, "{}", R::NAME);
    assert_eq!(referred_by.as_deref(), Some("<sip:alice@127.0.0.1>"), "{}", R::NAME);
    assert_eq!(header_value(&refer, "Refer-To"), Some(format!("<{carol_uri}>")), "{}", R::NAME);
    rt.accept_refer(&bob, asked).expect("accept the REFER");

    // Alice: the 202 and `SIP/2.0 100 Trying` (§2.4.4), in either order.
    let mut trying = None;
    let mut accepted = None;
    while trying.is_none() || accepted.is_none() {
        match alice_in.subscription(&rt, transfer) {
            SubscriptionEvent::Accepted(ok) if accepted.is_none() => accepted = Some(ok),
            SubscriptionEvent::Notified(n) if trying.is_none() => trying = Some(n),
            other => panic!("{}: unexpected {other:?}", R::NAME),
        }
    }
    assert_eq!(accepted.map(|ok| (ok.code, ok.reason)), Some((202, "Accepted".to_owned())), "{}", R::NAME);
    let trying = trying.expect("NOTIFY");
    assert_eq!(trying.state, SubState::Active, "{}", R::NAME);
    assert_eq!(frag_of::<R>(&trying), (100, "Trying".to_owned()), "{}", R::NAME);
    // §2.4.6: the NOTIFYs' Event carries the REFER's CSeq as `id`.
    let refer_seq = header_value(&refer, "CSeq").and_then(|c| c.split_whitespace().next().map(str::to_owned));
    let event = header_value(&trying.request, "Event");
    assert_eq!(event, refer_seq.map(|n| format!("refer;id={n}")), "{}", R::NAME);

    // Bob calls Carol as asked, with Referred-By (RFC 3892 §3).
    let mut invite = Request::invite(&refer_to, "application/sdp", OFFER.to_vec());
    invite.headers.push(("Referred-By".to_owned(), referred_by.clone().unwrap_or_default()));
    let new_call = rt.invite(&bob, invite).expect("INVITE to Carol sent");
    let (carol_call, carol_invite) = carol_in.incoming_session(&rt);
    assert_eq!(header_value(&carol_invite, "Referred-By").as_deref(), Some("<sip:alice@127.0.0.1>"), "{}", R::NAME);

    // Carol rings: Bob tells Alice (§2.4.5), and Alice hears it before
    // Carol answers (a newer state would replace a NOTIFY still waiting,
    // RFC 6665 §4.2.2).
    rt.ring(&carol, carol_call, 180).expect("ring");
    let ringing = bob_in.session_until(&rt, new_call, |e| matches!(e, SessionEvent::Progress(r) if r.code == 180));
    let Some(SessionEvent::Progress(r)) = ringing.last() else { unreachable!() };
    rt.refer_progress(&bob, asked, r.code, &r.reason).expect("report 180");
    match alice_in.subscription(&rt, transfer) {
        SubscriptionEvent::Notified(n) => {
            assert_eq!(n.state, SubState::Active, "{}", R::NAME);
            assert_eq!(frag_of::<R>(&n), (180, "Ringing".to_owned()), "{}", R::NAME);
        }
        other => panic!("{}: expected the 180 NOTIFY, got {other:?}", R::NAME),
    }

    // Carol answers: the final status ends the subscription (§2.4.7).
    rt.accept(&carol, carol_call, Some(&Body::sdp(ANSWER))).expect("Carol answers");
    let answered = bob_in.session_until(&rt, new_call, |e| matches!(e, SessionEvent::Answered(_)));
    let Some(SessionEvent::Answered(ok)) = answered.last() else { unreachable!() };
    assert_eq!(ok.code, 200, "{}", R::NAME);
    rt.refer_progress(&bob, asked, ok.code, &ok.reason).expect("report 200");
    match alice_in.subscription(&rt, transfer) {
        SubscriptionEvent::Notified(n) => {
            assert_eq!((n.state, n.reason.as_deref()), (SubState::Terminated, Some("noresource")), "{}", R::NAME);
            assert_eq!(frag_of::<R>(&n), (200, "OK".to_owned()), "{}", R::NAME);
        }
        other => panic!("{}: expected the 200 NOTIFY, got {other:?}", R::NAME),
    }
    let terminated = SubscriptionEnd::Terminated { reason: Some("noresource".to_owned()), retry_after: None };
    assert_eq!(alice_in.subscription(&rt, transfer), SubscriptionEvent::Ended(terminated), "{}", R::NAME);
    assert_eq!(bob_in.subscription(&rt, asked), SubscriptionEvent::Ended(SubscriptionEnd::Ended), "{}", R::NAME);
    assert_eq!(rt.refer_progress(&bob, asked, 200, "OK"), Err(SubscriptionError::Unknown), "{}", R::NAME);
    let confirmed = carol_in.session_until(&rt, carol_call, |e| matches!(e, SessionEvent::Confirmed { .. }));
    assert_eq!(confirmed, [SessionEvent::Confirmed { body: None }], "{}", R::NAME);

    // Both calls end.
    rt.hangup(&alice, call).expect("Alice hangs up");
    assert_eq!(
        bob_in.session_until(&rt, bob_call, ended),
        [SessionEvent::Ended(SessionEnd::PeerHungUp)],
        "{}",
        R::NAME
    );
    assert_eq!(alice_in.session_until(&rt, call, ended), [SessionEvent::Ended(SessionEnd::HungUp)], "{}", R::NAME);
    rt.hangup(&bob, new_call).expect("Bob hangs up");
    let carol_end = carol_in.session_until(&rt, carol_call, ended);
    assert_eq!(carol_end, [SessionEvent::Ended(SessionEnd::PeerHungUp)], "{}", R::NAME);
    let bob_end = bob_in.session_until(&rt, new_call, ended);
    assert_eq!(bob_end.last(), Some(&SessionEvent::Ended(SessionEnd::HungUp)), "{}: {bob_end:?}", R::NAME);
    // No transfer in a call that is over.
    assert_eq!(rt.refer(&alice, call, &carol_uri), Err(SubscriptionError::Unknown), "{}", R::NAME);
    for inbox in [&alice_in, &bob_in, &carol_in] {
        assert!(inbox.stray_subscription_events().is_empty(), "{}: {}: {:?}", R::NAME, inbox.name, inbox.kept);
    }
    rt.shutdown(&alice);
    rt.shutdown(&bob);
    rt.shutdown(&carol);
}

macro_rules! suite {
    ($($name:ident => $rt:ty),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[test]
            fn message_over_udp() {
                message_over::<$rt>(Transport::Udp, V4);
            }
            #[test]
            fn message_over_tcp() {
                message_over::<$rt>(Transport::Tcp, V4);
            }
            #[test]
            fn message_over_tls() {
                message_over::<$rt>(Transport::Tls, V4);
            }
            #[test]
            fn message_over_udp_ipv6() {
                message_over::<$rt>(Transport::Udp, V6);
            }
            #[test]
            fn message_over_tcp_ipv6() {
                message_over::<$rt>(Transport::Tcp, V6);
            }
            #[test]
            fn message_over_tls_ipv6() {
                message_over::<$rt>(Transport::Tls, V6);
            }
            #[test]
            fn dead_tcp_port_is_a_connection_failure() {
                dead_port::<$rt>(Transport::Tcp);
            }
            #[test]
            fn dead_tls_port_is_a_connection_failure() {
                dead_port::<$rt>(Transport::Tls);
            }
            #[test]
            fn silent_udp_peer_times_out_at_timer_f() {
                timeout_at_timer_f::<$rt>(Transport::Udp);
            }
            #[test]
            fn silent_tcp_peer_times_out_at_timer_f() {
                timeout_at_timer_f::<$rt>(Transport::Tcp);
            }
            #[test]
            fn many_in_flight_over_udp() {
                many_in_flight::<$rt>(Transport::Udp);
            }
            #[test]
            fn many_in_flight_over_tcp() {
                many_in_flight::<$rt>(Transport::Tcp);
            }
            #[test]
            fn many_in_flight_over_tls() {
                many_in_flight::<$rt>(Transport::Tls);
            }
            #[test]
            fn shutdown_with_outstanding_udp() {
                shutdown_with_outstanding::<$rt>(Transport::Udp);
            }
            #[test]
            fn shutdown_with_outstanding_tcp() {
                shutdown_with_outstanding::<$rt>(Transport::Tcp);
            }
            #[test]
            fn unanswered_requests_get_503_at_shutdown() {
                unanswered_get_503_at_shutdown::<$rt>(Transport::Tcp);
            }
            #[test]
            fn dropping_the_endpoint_shuts_it_down() {
                super::dropping_the_endpoint_shuts_it_down::<$rt>();
            }
            #[test]
            fn the_first_datagram_is_not_lost() {
                first_datagram_arrives::<$rt>();
            }
            #[test]
            fn wildcard_listeners_report_their_ports() {
                wildcard_listeners::<$rt>();
            }
            #[test]
            fn host_names_are_resolved() {
                resolves_host_names::<$rt>();
            }
            #[test]
            fn call_answered_and_hung_up_over_udp() {
                call_answered_and_hung_up::<$rt>(Transport::Udp);
            }
            #[test]
            fn call_answered_and_hung_up_over_tcp() {
                call_answered_and_hung_up::<$rt>(Transport::Tcp);
            }
            #[test]
            fn call_rejected_over_udp() {
                call_rejected::<$rt>(Transport::Udp);
            }
            #[test]
            fn call_rejected_over_tcp() {
                call_rejected::<$rt>(Transport::Tcp);
            }
            #[test]
            fn call_cancelled_while_ringing_over_udp() {
                call_cancelled_while_ringing::<$rt>(Transport::Udp);
            }
            #[test]
            fn call_cancelled_while_ringing_over_tcp() {
                call_cancelled_while_ringing::<$rt>(Transport::Tcp);
            }
            #[test]
            fn presence_subscription_over_udp() {
                presence_subscription::<$rt>(Transport::Udp);
            }
            #[test]
            fn presence_subscription_over_tcp() {
                presence_subscription::<$rt>(Transport::Tcp);
            }
            #[test]
            fn subscription_rejected_over_udp() {
                subscription_rejected::<$rt>(Transport::Udp);
            }
            #[test]
            fn subscription_rejected_over_tcp() {
                subscription_rejected::<$rt>(Transport::Tcp);
            }
            #[test]
            fn blind_transfer_over_udp() {
                blind_transfer::<$rt>(Transport::Udp);
            }
            #[test]
            fn blind_transfer_over_tcp() {
                blind_transfer::<$rt>(Transport::Tcp);
            }
        }
    )*};
}

suite!(tokio => Tokio, smol => Smol, blocking => Blocking);

/// A tokio endpoint talks to a smol endpoint, which talks to a blocking
/// endpoint, which talks back to the tokio one.
#[test]
fn tokio_smol_and_blocking_talk_to_each_other() {
    fn up<R: Runtime>() -> (Arc<R>, R::Endpoint, Answerer) {
        let rt = Arc::new(R::new());
        let aor = format!("sip:{}@127.0.0.1", R::NAME);
        let config = config(&aor).listen(Transport::Udp, any(V4)).listen(Transport::Tcp, any(V4));
        let (endpoint, events) = rt.bind(config).expect("bind");
        let answerer = Answerer::start(&rt, &endpoint, events, Some(200));
        (rt, endpoint, answerer)
    }
    let (tokio_rt, tokio_ep, tokio_answers) = up::<Tokio>();
    let (smol_rt, smol_ep, smol_answers) = up::<Smol>();
    let (blocking_rt, blocking_ep, blocking_answers) = up::<Blocking>();
    let to =
        |addr: Option<SocketAddr>, transport: Transport, text: &str| message_to(transport, addr.expect("bound"), text);
    let hops = [
        tokio_rt.send(&tokio_ep, to(Smol::local_addr(&smol_ep, Transport::Udp), Transport::Udp, "tokio to smol")),
        smol_rt
            .send(&smol_ep, to(Blocking::local_addr(&blocking_ep, Transport::Tcp), Transport::Tcp, "smol to blocking")),
        blocking_rt
            .send(&blocking_ep, to(Tokio::local_addr(&tokio_ep, Transport::Udp), Transport::Udp, "blocking to tokio")),
    ];
    for hop in &hops {
        assert_eq!(hop.as_ref().map(|r| r.code), Ok(200), "{hops:?}");
    }
    tokio_rt.shutdown(&tokio_ep);
    smol_rt.shutdown(&smol_ep);
    blocking_rt.shutdown(&blocking_ep);
    let body = |seen: Vec<sipline_tests::runtimes::Seen>| -> Vec<String> {
        seen.iter()
            .map(|s| String::from_utf8_lossy(&s.request).rsplit("\r\n\r\n").next().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(body(smol_answers.stop()), ["tokio to smol"]);
    assert_eq!(body(blocking_answers.stop()), ["smol to blocking"]);
    assert_eq!(body(tokio_answers.stop()), ["blocking to tokio"]);
}
