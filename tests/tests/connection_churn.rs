//! Connection churn through the shared driver (`sipline::driver`) with a
//! model runtime: whatever order connections are accepted, opened, fed,
//! ended by the peer (FIN), failed (a read or write error), refused or
//! timed out in, the runtime is told to let go of every connection the
//! core no longer has, and the core's table ends empty. A peer that closed
//! must never leave a socket behind (issue 18: sockets stuck in CLOSE-WAIT).
//!
//! The model runtime keeps the set of connections it holds (`adopt` adds,
//! `close` removes), the way the real runtimes keep a socket, a reader and
//! a writer per connection. After every step it must hold exactly what the
//! core's table holds; at the end both are empty.

use proptest::prelude::*;
use sipline::driver::{Driver, Handle, Input, Io};
use sipline::endpoint::{EndpointConfig, Request};
use sipline::transport::{ConnId, QueryId, Transport};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a connection may stay idle here (the core closes it then).
const IDLE: Duration = Duration::from_secs(30);

/// The runtime's side of each connection, as a real runtime keeps it.
#[derive(Default, Debug)]
struct Model {
    /// Adopted and not yet closed: a socket, reader and writer each.
    open: BTreeSet<ConnId>,
    /// Being connected (`connect` called, no report yet).
    connecting: BTreeSet<ConnId>,
    /// `close` calls for connections not held (allowed, and counted).
    stale_closes: usize,
}

impl Io for Model {
    type Stream = ();

    fn send_datagram(&mut self, _local: Option<SocketAddr>, _remote: SocketAddr, _bytes: &[u8]) {}

    fn connect(&mut self, conn: ConnId, _remote: SocketAddr) {
        self.connecting.insert(conn);
    }

    fn adopt(&mut self, conn: ConnId, (): ()) {
        assert!(self.open.insert(conn), "{conn:?} adopted twice");
    }

    fn write(&mut self, conn: ConnId, _bytes: Vec<u8>) {
        // The core writes only to connections it holds (open, or queued
        // until the connect completes).
        assert!(
            self.open.contains(&conn) || self.connecting.contains(&conn),
            "write to {conn:?}, which the runtime no longer holds"
        );
    }

    fn close(&mut self, conn: ConnId) {
        let held = self.open.remove(&conn) | self.connecting.remove(&conn);
        if !held {
            self.stale_closes += 1;
        }
    }

    fn resolve(&mut self, _query: QueryId, _name: String) {}
}

/// One thing that happens to the endpoint.
#[derive(Debug, Clone)]
enum Step {
    /// A peer connects (from its own port `n`).
    Accept(u16),
    /// The `n`-th held connection (modulo) delivers an OPTIONS request.
    Request(usize),
    /// Its peer sends bytes that cannot be framed (the core closes it).
    Garbage(usize),
    /// Its peer closes (FIN: the reader reads 0 bytes).
    PeerClosed(usize),
    /// Writing to it fails: the writer reports the end, and then the
    /// reader does too (a reset connection fails both ways).
    WriteFailed(usize),
    /// The application sends a request over TCP to peer `n`: the core
    /// opens a connection.
    Send(u16),
    /// The `n`-th connection being opened connects.
    Connected(usize),
    /// The `n`-th connection being opened fails.
    ConnectFailed(usize),
    /// Time passes (seconds): idle connections close.
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u16..40).prop_map(Step::Accept),
        3 => any::<usize>().prop_map(Step::Request),
        1 => any::<usize>().prop_map(Step::Garbage),
        4 => any::<usize>().prop_map(Step::PeerClosed),
        2 => any::<usize>().prop_map(Step::WriteFailed),
        2 => (0u16..8).prop_map(Step::Send),
        2 => any::<usize>().prop_map(Step::Connected),
        1 => any::<usize>().prop_map(Step::ConnectFailed),
        2 => (1u64..40).prop_map(Step::Wait),
    ]
}

fn options(n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:svc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-churn{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=t{n}\r\nTo: <sip:svc@127.0.0.1>\r\n\
         Call-ID: churn{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Rig {
    driver: Driver<()>,
    handle: Handle,
    model: Model,
    now: Instant,
    /// Requests sent (their futures are dropped: the outcome is not the point).
    sent: usize,
    /// Requests delivered (their branches differ).
    delivered: usize,
}

impl Rig {
    fn new() -> Rig {
        let listen: SocketAddr = "127.0.0.1:5060".parse().expect("address");
        let mut config = EndpointConfig::new("sip:svc@127.0.0.1").listen(Transport::Tcp, listen);
        config.transport.connections.idle_limit = IDLE;
        config.transport.connections.linger = IDLE;
        let mut driver = Driver::new(config, 7).expect("config");
        driver.add_listener(Transport::Tcp, listen);
        driver.add_listener(Transport::Udp, "127.0.0.1:5060".parse().expect("address"));
        let now = Instant::now();
        let (handle, _events) = driver.start(now, Duration::from_secs(1_700_000_000));
        let mut rig = Rig { driver, handle, model: Model::default(), now, sent: 0, delivered: 0 };
        rig.driver.prime(now, &mut rig.model);
        rig
    }

    /// Feeds `input` in as a runtime task would, and runs the driver until
    /// nothing is left to do.
    fn input(&mut self, input: Input<()>) {
        assert!(self.driver.inputs().try_send(input), "input queue");
        self.settle();
    }

    /// Handles every queued command and input (bounded: each step queues
    /// a handful).
    fn settle(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            match self.driver.poll_message(&mut cx) {
                Poll::Ready(message) => self.driver.handle(self.now, message, &mut self.model),
                Poll::Pending => return,
            }
        }
        panic!("the driver kept finding work");
    }

    fn wait(&mut self, d: Duration) {
        let end = self.now + d;
        // Every deadline up to `end`, in order (bounded: timers only move on).
        for _ in 0..10_000 {
            match self.driver.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.driver.handle_timeout(self.now, &mut self.model);
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("timers kept firing");
    }

    fn nth_open(&self, n: usize) -> Option<ConnId> {
        let len = self.model.open.len();
        (len > 0).then(|| *self.model.open.iter().nth(n % len).expect("in range"))
    }

    fn nth_connecting(&self, n: usize) -> Option<ConnId> {
        let len = self.model.connecting.len();
        (len > 0).then(|| *self.model.connecting.iter().nth(n % len).expect("in range"))
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Accept(port) => {
                let remote = SocketAddr::from(([127, 0, 0, 1], 30_000 + port));
                self.input(Input::Accepted { transport: Transport::Tcp, remote, stream: () });
            }
            Step::Request(n) => {
                if let Some(conn) = self.nth_open(n) {
                    self.delivered += 1;
                    let bytes = options(self.delivered);
                    self.input(Input::StreamData { conn, bytes });
                }
            }
            Step::Garbage(n) => {
                if let Some(conn) = self.nth_open(n) {
                    // No Content-Length on a stream: a framing error (§18.3).
                    let bytes = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n".to_vec();
                    self.input(Input::StreamData { conn, bytes });
                }
            }
            Step::PeerClosed(n) => {
                if let Some(conn) = self.nth_open(n) {
                    self.input(Input::Closed { conn });
                }
            }
            Step::WriteFailed(n) => {
                if let Some(conn) = self.nth_open(n) {
                    self.input(Input::Closed { conn });
                    self.input(Input::Closed { conn });
                }
            }
            Step::Send(peer) => {
                self.sent += 1;
                let uri = format!("sip:bob@127.0.0.1:{};transport=tcp", 20_000 + peer);
                let request = Request::message(&uri, "text/plain", format!("m{}", self.sent).into_bytes());
                drop(self.handle.send(request));
                self.settle();
            }
            Step::Connected(n) => {
                if let Some(conn) = self.nth_connecting(n) {
                    // The driver adopts it: the model moves it to `open`.
                    self.model.connecting.remove(&conn);
                    self.input(Input::Connected { conn, stream: () });
                }
            }
            Step::ConnectFailed(n) => {
                if let Some(conn) = self.nth_connecting(n) {
                    self.model.connecting.remove(&conn);
                    self.input(Input::ConnectFailed { conn });
                }
            }
            Step::Wait(secs) => self.wait(Duration::from_secs(secs)),
        }
    }

    /// What the runtime holds is what the core holds.
    fn check(&self, after: &Step) {
        let core = self.driver.endpoint().tables().connections;
        let held = self.model.open.len() + self.model.connecting.len();
        assert_eq!(held, core, "after {after:?}: the runtime holds {:?}, the core {core}", self.model);
    }

    /// Every peer goes away (FIN on each open connection, every connect
    /// fails), then long enough passes for every timer: nothing is left.
    fn end(&mut self) {
        let open: Vec<ConnId> = self.model.open.iter().copied().collect();
        for conn in open {
            self.input(Input::Closed { conn });
        }
        let connecting: Vec<ConnId> = self.model.connecting.iter().copied().collect();
        for conn in connecting {
            self.model.connecting.remove(&conn);
            self.input(Input::ConnectFailed { conn });
        }
        self.wait(Duration::from_secs(3600));
        assert!(self.model.open.is_empty(), "the runtime still holds {:?}", self.model.open);
        assert!(self.model.connecting.is_empty(), "still connecting {:?}", self.model.connecting);
        assert_eq!(self.driver.endpoint().tables().connections, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any order of accept, data, FIN, errors, framing failures, connects
    /// and timeouts: the runtime holds what the core holds, and at the end
    /// nothing.
    #[test]
    fn a_closed_peer_never_leaves_a_connection_behind(steps in proptest::collection::vec(step(), 1..120)) {
        let mut rig = Rig::new();
        for s in &steps {
            rig.apply(s);
            rig.check(s);
        }
        rig.end();
    }
}

/// The plain case from the field: 3 000 connect / OPTIONS / close cycles
/// leave nothing behind, in the runtime or in the core.
#[test]
fn three_thousand_connect_request_close_cycles_leave_nothing() {
    let mut rig = Rig::new();
    for i in 0..3000u16 {
        rig.apply(&Step::Accept(i % 500));
        let conn = *rig.model.open.last().expect("adopted");
        rig.delivered += 1;
        let bytes = options(rig.delivered);
        rig.input(Input::StreamData { conn, bytes });
        rig.input(Input::Closed { conn });
        assert!(rig.model.open.is_empty(), "cycle {i}: the runtime still holds {:?}", rig.model.open);
        assert_eq!(rig.driver.endpoint().tables().connections, 0, "cycle {i}");
    }
    rig.end();
}

// ---------------------------------------------------------------------
// The same over real sockets, through each runtime.

mod runtimes {
    use sipline::endpoint::EndpointConfig;
    use sipline::transport::Transport;
    use sipline_tests::churn::{close_wait, fd_count, options_cycle, Ending};
    use sipline_tests::kamailio::wait_until;
    use sipline_tests::runtimes::{Answerer, Blocking, Runtime, Smol, Tokio};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    /// How many connect / OPTIONS / leave cycles each runtime takes.
    const CYCLES: usize = 300;

    /// One runtime at a time: the descriptor count is the whole process's.
    fn serial() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `CYCLES` clients connect, send OPTIONS (answered 200), and leave by
    /// closing, half-closing (the endpoint must close its side: the client
    /// waits for it) or resetting. Afterwards the process holds as many
    /// descriptors as before, no socket of the listener's port is left in
    /// CLOSE-WAIT, and (tokio) no task is left.
    fn churn<R: Runtime>() {
        let _serial = serial();
        let rt = Arc::new(R::new());
        let listen = "127.0.0.1:0".parse().expect("address");
        let config = EndpointConfig::new("sip:churn@127.0.0.1").listen(Transport::Tcp, listen);
        let (endpoint, events) = rt.bind(config).expect("bind");
        let server = R::local_addr(&endpoint, Transport::Tcp).expect("TCP listener");
        let answerer = Answerer::start(&rt, &endpoint, events, Some(200));
        let me = std::process::id();
        // Warm up (lazily made runtime resources), then the baseline.
        options_cycle(server, usize::MAX, Ending::Close).expect("first cycle");
        let closed = wait_until(Duration::from_secs(10), || close_wait(server.port()) == 0);
        assert!(closed, "{}: the first connection the client closed stays in CLOSE-WAIT", R::NAME);
        let fds = fd_count(me);
        let tasks = rt.tasks_alive();
        for n in 0..CYCLES {
            let ending = Ending::mixed(n);
            let status =
                options_cycle(server, n, ending).unwrap_or_else(|e| panic!("{}: cycle {n} ({ending:?}): {e}", R::NAME));
            assert!(status.starts_with("SIP/2.0 200"), "{}: {status}", R::NAME);
        }
        let settled = wait_until(Duration::from_secs(10), || {
            close_wait(server.port()) == 0 && fd_count(me) <= fds && rt.tasks_alive() <= tasks
        });
        assert!(
            settled,
            "{}: after {CYCLES} cycles {} sockets in CLOSE-WAIT, {} descriptors (before: {fds}), tasks {:?} (before: {tasks:?})",
            R::NAME,
            close_wait(server.port()),
            fd_count(me),
            rt.tasks_alive()
        );
        drop(answerer.stop());
        rt.shutdown(&endpoint);
    }

    #[test]
    fn tokio_lets_go_of_every_closed_connection() {
        churn::<Tokio>();
    }

    #[test]
    fn smol_lets_go_of_every_closed_connection() {
        churn::<Smol>();
    }

    #[test]
    fn blocking_lets_go_of_every_closed_connection() {
        churn::<Blocking>();
    }
}
