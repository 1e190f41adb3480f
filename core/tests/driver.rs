//! The driver against a recording [`Io`] and a virtual clock: what reaches
//! the runtime, what the application's futures and events see, and that
//! the run loop sleeps from deadline to later deadline (never spins).

#![cfg(feature = "driver")]
// Each test takes one arbitrary origin from the clock; after that, time only
// moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::driver::{AsyncIo, Driver, Error, Input, Io, Message};
use sipline::endpoint::{EndpointConfig, EndpointState, Event, Request, RequestError};
use sipline::transport::{Answer, CloseReason, ConnId, QueryId};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Waker;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Log {
    datagrams: Vec<SocketAddr>,
    connects: Vec<ConnId>,
    adopted: Vec<ConnId>,
    writes: Vec<ConnId>,
    closes: Vec<ConnId>,
    resolves: Vec<(QueryId, String)>,
    sleeps: Vec<Instant>,
    shut_down: bool,
}

/// Records what the driver asks for; its clock moves only when it sleeps.
struct Fake {
    log: Rc<RefCell<Log>>,
    clock: Rc<Cell<Instant>>,
}

impl Io for Fake {
    type Stream = &'static str;
    fn send_datagram(&mut self, _local: Option<SocketAddr>, remote: SocketAddr, _bytes: &[u8]) {
        self.log.borrow_mut().datagrams.push(remote);
    }
    fn connect(&mut self, conn: ConnId, _remote: SocketAddr) {
        self.log.borrow_mut().connects.push(conn);
    }
    fn adopt(&mut self, conn: ConnId, _stream: &'static str) {
        self.log.borrow_mut().adopted.push(conn);
    }
    fn write(&mut self, conn: ConnId, _bytes: Vec<u8>) {
        self.log.borrow_mut().writes.push(conn);
    }
    fn close(&mut self, conn: ConnId) {
        self.log.borrow_mut().closes.push(conn);
    }
    fn resolve(&mut self, query: QueryId, name: String) {
        self.log.borrow_mut().resolves.push((query, name));
    }
}

/// A timer that fires as soon as it is polled, moving the clock to 3 ms
/// past its deadline (a runtime wakes a little late).
struct Jump {
    clock: Rc<Cell<Instant>>,
    deadline: Instant,
}

impl Future for Jump {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        self.clock.set(self.clock.get().max(self.deadline + Duration::from_millis(3)));
        Poll::Ready(())
    }
}

impl AsyncIo for Fake {
    type Sleep = Jump;
    fn now(&self) -> Instant {
        self.clock.get()
    }
    fn sleep_until(&self, deadline: Instant) -> Jump {
        self.log.borrow_mut().sleeps.push(deadline);
        Jump { clock: self.clock.clone(), deadline }
    }
    async fn shutdown(&mut self) {
        self.log.borrow_mut().shut_down = true;
    }
    fn poll_datagram(&mut self, _cx: &mut Context<'_>, _buf: &mut [u8]) -> Poll<sipline::driver::Received> {
        // No sockets: datagrams arrive as `Input::Datagram` in these tests.
        Poll::Pending
    }
}

fn fake(start: Instant) -> (Fake, Rc<RefCell<Log>>) {
    let log = Rc::new(RefCell::new(Log::default()));
    (Fake { log: log.clone(), clock: Rc::new(Cell::new(start)) }, log)
}

fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

fn next<S>(driver: &mut Driver<S>) -> Message<S> {
    match driver.poll_message(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(m) => m,
        Poll::Pending => panic!("no message waiting"),
    }
}

/// Some instant to start from; only differences matter to the core.
fn epoch() -> Instant {
    Instant::now()
}

fn config() -> EndpointConfig {
    EndpointConfig::new("sip:alice@192.0.2.10")
}

#[test]
fn srv_is_answered_inside_and_the_outcome_completes_the_future() {
    let now = epoch();
    let (mut io, log) = fake(now);
    let mut driver = Driver::new(config(), 1).unwrap();
    let (handle, _events) = driver.start(now, Duration::from_secs(1_795_219_200));
    let mut outcome =
        Box::pin(handle.send(Request::message("sip:bob@example.com;transport=tcp", "text/plain", b"hi".to_vec())));
    let m = next(&mut driver);
    driver.handle(now, m, &mut io);
    // RFC 3263: SRV first, which the driver answers "none" itself; only
    // the A/AAAA lookup reaches the runtime.
    let (query, name) = log.borrow().resolves.first().cloned().expect("an address lookup");
    assert_eq!(name, "example.com");
    driver.inputs().try_send(Input::Resolved { query, answer: Answer::Ips(vec!["192.0.2.20".parse().unwrap()]) });
    let m = next(&mut driver);
    driver.handle(now, m, &mut io);
    let conn = *log.borrow().connects.first().expect("a connection attempt");
    assert!(poll(&mut outcome).is_pending());
    driver.inputs().try_send(Input::ConnectFailed { conn });
    let m = next(&mut driver);
    driver.handle(now, m, &mut io);
    assert_eq!(
        poll(&mut outcome),
        Poll::Ready(Err(Error::Failed(RequestError::ConnectionFailed(CloseReason::ConnectFailed))))
    );
    assert!(log.borrow().adopted.is_empty());
}

#[test]
fn a_connection_closed_while_connecting_is_not_adopted() {
    let now = epoch();
    let (mut io, log) = fake(now);
    let mut driver = Driver::new(config(), 1).unwrap();
    let (handle, mut events) = driver.start(now, Duration::ZERO);
    let mut outcome =
        Box::pin(handle.send(Request::message("sip:bob@192.0.2.20:5060;transport=tcp", "text/plain", b"x".to_vec())));
    let m = next(&mut driver);
    driver.handle(now, m, &mut io);
    let conn = *log.borrow().connects.first().expect("a connection attempt");
    let mut done = Box::pin(handle.shutdown());
    let m = next(&mut driver);
    driver.handle(now, m, &mut io);
    assert_eq!(log.borrow().closes, [conn]);
    assert!(driver.is_finished());
    assert_eq!(poll(&mut outcome), Poll::Ready(Err(Error::Failed(RequestError::ShutDown))));
    // The runtime's connect finishes after all: the stream is dropped.
    driver.inputs().try_send(Input::Connected { conn, stream: "late" });
    let m = next(&mut driver);
    driver.handle(now, m, &mut io);
    assert!(log.borrow().adopted.is_empty());
    assert!(log.borrow().writes.is_empty());
    let mut seen = Vec::new();
    while let Poll::Ready(Some(e)) = poll(&mut Box::pin(events.next())) {
        seen.push(e);
        if seen.last() == Some(&Event::ShutDown) {
            break;
        }
    }
    assert_eq!(
        seen,
        [Event::State(EndpointState::Established), Event::State(EndpointState::Terminated), Event::ShutDown]
    );
    assert!(poll(&mut done).is_pending(), "shutdown resolves only once the runtime's tasks ended");
    driver.finish();
    assert_eq!(poll(&mut done), Poll::Ready(()));
}

#[test]
fn the_run_loop_sleeps_from_deadline_to_later_deadline() {
    let start = epoch();
    let (io, log) = fake(start);
    let mut driver: Driver<&'static str> = Driver::new(config(), 1).unwrap();
    let (handle, _events) = driver.start(start, Duration::ZERO);
    let mut outcome = Box::pin(handle.send(Request::message("sip:bob@192.0.2.20:5060", "text/plain", b"x".to_vec())));
    let mut run = Box::pin(driver.run(io));
    // Nobody answers: the driver runs the request's timers to the end
    // (Timer F at 64·T1 = 32 s), then waits with no deadline.
    assert!(poll(&mut run).is_pending());
    assert_eq!(poll(&mut outcome), Poll::Ready(Err(Error::Failed(RequestError::Timeout))));
    let sleeps = log.borrow().sleeps.clone();
    assert!(sleeps.windows(2).all(|w| w[0] < w[1]), "each sleep ends later than the one before: {sleeps:?}");
    // Timer E retransmissions (11 by 32 s), Timer F, then Timer K.
    assert!(sleeps.len() <= 16, "{} sleeps for one request", sleeps.len());
    assert_eq!(log.borrow().datagrams.len(), 11);
    assert!(poll(&mut run).is_pending(), "idle: no wake-up without an input");
    assert_eq!(log.borrow().sleeps.len(), sleeps.len());
    // The last handle goes: the endpoint shuts down and the loop ends.
    drop(handle);
    assert_eq!(poll(&mut run), Poll::Ready(()));
    assert!(log.borrow().shut_down);
}
