//! The three runtimes behind one synchronous test facade, so that the
//! loopback conformance suite (`tests/tests/loopback.rs`) is written once
//! and run against each. The facade only adapts calling conventions
//! (`block_on` for the async ones); every scenario goes through the
//! runtime's own public API, sessions included (`invite`, `ring`,
//! `accept`, `reject`, `hangup`, `send_in_session`), and subscriptions and
//! transfer (`subscribe`, `accept_subscription`, `notify`, `refer`,
//! `accept_refer`, `refer_progress`…).

use sipline::driver::{BindError, Error};
use sipline::endpoint::{
    Body, EndpointConfig, Event, IncomingId, Request, RespondError, Response, SendError, SessionError, SessionId,
    SubState, Subscribe, SubscriptionError, SubscriptionId,
};
use sipline::transport::Transport;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One runtime, driven synchronously.
pub trait Runtime: Send + Sync + 'static {
    /// For messages.
    const NAME: &'static str;
    /// The runtime's endpoint handle.
    type Endpoint: Clone + Send + 'static;
    /// The runtime's event stream.
    type Events: Send + 'static;

    /// A runtime instance (tokio: its own multi-threaded runtime).
    fn new() -> Self
    where
        Self: Sized;
    /// `bind`.
    fn bind(&self, config: EndpointConfig) -> Result<(Self::Endpoint, Self::Events), BindError>;
    /// Sends every request at once (all in flight together) and waits for
    /// all outcomes, in order.
    fn send_all(&self, endpoint: &Self::Endpoint, requests: Vec<Request>) -> Vec<Result<Response, Error>>;
    /// `respond`.
    fn respond(&self, endpoint: &Self::Endpoint, incoming: IncomingId, code: u16) -> Result<(), RespondError>;
    /// `shutdown`, waiting for its end.
    fn shutdown(&self, endpoint: &Self::Endpoint);
    /// `unregister`: REGISTER with `Expires: 0`; the outcome arrives as an
    /// event.
    fn unregister(endpoint: &Self::Endpoint);
    /// `reregister`: registers again; the outcome arrives as an event.
    fn reregister(endpoint: &Self::Endpoint);
    /// The next event within `timeout`; `None` on timeout or at the end.
    fn next_event(&self, events: &mut Self::Events, timeout: Duration) -> Option<Event>;
    /// The bound address for `transport`.
    fn local_addr(endpoint: &Self::Endpoint, transport: Transport) -> Option<SocketAddr>;
    /// `invite`.
    fn invite(&self, endpoint: &Self::Endpoint, request: Request) -> Result<SessionId, SendError>;
    /// `ring`.
    fn ring(&self, endpoint: &Self::Endpoint, session: SessionId, code: u16) -> Result<(), SessionError>;
    /// `accept`.
    fn accept(&self, endpoint: &Self::Endpoint, session: SessionId, body: Option<&Body>) -> Result<(), SessionError>;
    /// `reject` (no extra header fields).
    fn reject(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SessionError>;
    /// `hangup`.
    fn hangup(&self, endpoint: &Self::Endpoint, session: SessionId) -> Result<(), SessionError>;
    /// `send_in_session`, waiting for the outcome.
    fn send_in_session(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        request: Request,
    ) -> Result<Response, Error>;
    /// `subscribe`.
    fn subscribe(&self, endpoint: &Self::Endpoint, sub: Subscribe) -> Result<SubscriptionId, SendError>;
    /// `unsubscribe`.
    fn unsubscribe(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError>;
    /// `accept_subscription`.
    fn accept_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError>;
    /// `reject_subscription`.
    fn reject_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError>;
    /// `notify`.
    fn notify(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError>;
    /// `terminate_subscription`.
    fn terminate_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError>;
    /// `refer`.
    fn refer(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        refer_to: &str,
    ) -> Result<SubscriptionId, SubscriptionError>;
    /// `accept_refer`.
    fn accept_refer(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError>;
    /// `refer_progress`.
    fn refer_progress(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError>;
    /// Tasks still alive in the runtime, where the runtime can tell.
    fn tasks_alive(&self) -> Option<usize> {
        None
    }

    /// Sends one request and waits for its outcome.
    fn send(&self, endpoint: &Self::Endpoint, request: Request) -> Result<Response, Error> {
        let mut all = self.send_all(endpoint, vec![request]);
        all.pop().expect("one outcome per request")
    }
}

/// `sipline-tokio` on a runtime of its own (two workers).
pub struct Tokio(tokio::runtime::Runtime);

impl Runtime for Tokio {
    const NAME: &'static str = "tokio";
    type Endpoint = sipline_tokio::Endpoint;
    type Events = sipline_tokio::Events;

    fn new() -> Tokio {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        Tokio(rt.expect("tokio runtime"))
    }
    fn bind(&self, config: EndpointConfig) -> Result<(Self::Endpoint, Self::Events), BindError> {
        self.0.block_on(sipline_tokio::bind(config))
    }
    fn send_all(&self, endpoint: &Self::Endpoint, requests: Vec<Request>) -> Vec<Result<Response, Error>> {
        // `send` queues the request at once; awaiting in turn keeps all in flight.
        let pending: Vec<_> = requests.into_iter().map(|r| endpoint.send(r)).collect();
        self.0.block_on(async {
            let mut out = Vec::new();
            for p in pending {
                out.push(p.await);
            }
            out
        })
    }
    fn respond(&self, endpoint: &Self::Endpoint, incoming: IncomingId, code: u16) -> Result<(), RespondError> {
        self.0.block_on(endpoint.respond(incoming, code, "OK"))
    }
    fn shutdown(&self, endpoint: &Self::Endpoint) {
        self.0.block_on(endpoint.shutdown());
    }
    fn unregister(endpoint: &Self::Endpoint) {
        endpoint.unregister();
    }
    fn reregister(endpoint: &Self::Endpoint) {
        endpoint.reregister();
    }
    fn next_event(&self, events: &mut Self::Events, timeout: Duration) -> Option<Event> {
        self.0.block_on(async { tokio::time::timeout(timeout, events.next()).await.ok().flatten() })
    }
    fn invite(&self, endpoint: &Self::Endpoint, request: Request) -> Result<SessionId, SendError> {
        self.0.block_on(endpoint.invite(request))
    }
    fn ring(&self, endpoint: &Self::Endpoint, session: SessionId, code: u16) -> Result<(), SessionError> {
        self.0.block_on(endpoint.ring(session, code, None))
    }
    fn accept(&self, endpoint: &Self::Endpoint, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        self.0.block_on(endpoint.accept(session, body))
    }
    fn reject(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.0.block_on(endpoint.reject(session, code, reason, &[]))
    }
    fn hangup(&self, endpoint: &Self::Endpoint, session: SessionId) -> Result<(), SessionError> {
        self.0.block_on(endpoint.hangup(session))
    }
    fn send_in_session(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        request: Request,
    ) -> Result<Response, Error> {
        self.0.block_on(endpoint.send_in_session(session, request))
    }
    fn subscribe(&self, endpoint: &Self::Endpoint, sub: Subscribe) -> Result<SubscriptionId, SendError> {
        self.0.block_on(endpoint.subscribe(sub))
    }
    fn unsubscribe(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.unsubscribe(subscription))
    }
    fn accept_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.accept_subscription(subscription, state, body))
    }
    fn reject_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.reject_subscription(subscription, code, reason))
    }
    fn notify(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.notify(subscription, state, body))
    }
    fn terminate_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.terminate_subscription(subscription, reason, body))
    }
    fn refer(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        refer_to: &str,
    ) -> Result<SubscriptionId, SubscriptionError> {
        self.0.block_on(endpoint.refer(session, refer_to))
    }
    fn accept_refer(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.accept_refer(subscription))
    }
    fn refer_progress(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        self.0.block_on(endpoint.refer_progress(subscription, code, reason))
    }
    fn local_addr(endpoint: &Self::Endpoint, transport: Transport) -> Option<SocketAddr> {
        endpoint.local_addr(transport)
    }
    fn tasks_alive(&self) -> Option<usize> {
        Some(self.0.metrics().num_alive_tasks())
    }
}

/// `sipline-smol` on smol's global executor.
pub struct Smol;

impl Runtime for Smol {
    const NAME: &'static str = "smol";
    type Endpoint = sipline_smol::Endpoint;
    type Events = sipline_smol::Events;

    fn new() -> Smol {
        Smol
    }
    fn bind(&self, config: EndpointConfig) -> Result<(Self::Endpoint, Self::Events), BindError> {
        smol::block_on(sipline_smol::bind(config))
    }
    fn send_all(&self, endpoint: &Self::Endpoint, requests: Vec<Request>) -> Vec<Result<Response, Error>> {
        let pending: Vec<_> = requests.into_iter().map(|r| endpoint.send(r)).collect();
        smol::block_on(async {
            let mut out = Vec::new();
            for p in pending {
                out.push(p.await);
            }
            out
        })
    }
    fn respond(&self, endpoint: &Self::Endpoint, incoming: IncomingId, code: u16) -> Result<(), RespondError> {
        smol::block_on(endpoint.respond(incoming, code, "OK"))
    }
    fn shutdown(&self, endpoint: &Self::Endpoint) {
        smol::block_on(endpoint.shutdown());
    }
    fn unregister(endpoint: &Self::Endpoint) {
        endpoint.unregister();
    }
    fn reregister(endpoint: &Self::Endpoint) {
        endpoint.reregister();
    }
    fn next_event(&self, events: &mut Self::Events, timeout: Duration) -> Option<Event> {
        smol::block_on(smol::future::or(events.next(), async {
            smol::Timer::after(timeout).await;
            None
        }))
    }
    fn invite(&self, endpoint: &Self::Endpoint, request: Request) -> Result<SessionId, SendError> {
        smol::block_on(endpoint.invite(request))
    }
    fn ring(&self, endpoint: &Self::Endpoint, session: SessionId, code: u16) -> Result<(), SessionError> {
        smol::block_on(endpoint.ring(session, code, None))
    }
    fn accept(&self, endpoint: &Self::Endpoint, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        smol::block_on(endpoint.accept(session, body))
    }
    fn reject(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SessionError> {
        smol::block_on(endpoint.reject(session, code, reason, &[]))
    }
    fn hangup(&self, endpoint: &Self::Endpoint, session: SessionId) -> Result<(), SessionError> {
        smol::block_on(endpoint.hangup(session))
    }
    fn send_in_session(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        request: Request,
    ) -> Result<Response, Error> {
        smol::block_on(endpoint.send_in_session(session, request))
    }
    fn subscribe(&self, endpoint: &Self::Endpoint, sub: Subscribe) -> Result<SubscriptionId, SendError> {
        smol::block_on(endpoint.subscribe(sub))
    }
    fn unsubscribe(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.unsubscribe(subscription))
    }
    fn accept_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.accept_subscription(subscription, state, body))
    }
    fn reject_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.reject_subscription(subscription, code, reason))
    }
    fn notify(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.notify(subscription, state, body))
    }
    fn terminate_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.terminate_subscription(subscription, reason, body))
    }
    fn refer(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        refer_to: &str,
    ) -> Result<SubscriptionId, SubscriptionError> {
        smol::block_on(endpoint.refer(session, refer_to))
    }
    fn accept_refer(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.accept_refer(subscription))
    }
    fn refer_progress(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        smol::block_on(endpoint.refer_progress(subscription, code, reason))
    }
    fn local_addr(endpoint: &Self::Endpoint, transport: Transport) -> Option<SocketAddr> {
        endpoint.local_addr(transport)
    }
}

/// `sipline-blocking`.
pub struct Blocking;

impl Runtime for Blocking {
    const NAME: &'static str = "blocking";
    type Endpoint = sipline_blocking::Endpoint;
    type Events = sipline_blocking::Events;

    fn new() -> Blocking {
        Blocking
    }
    fn bind(&self, config: EndpointConfig) -> Result<(Self::Endpoint, Self::Events), BindError> {
        sipline_blocking::bind(config)
    }
    fn send_all(&self, endpoint: &Self::Endpoint, requests: Vec<Request>) -> Vec<Result<Response, Error>> {
        // Blocking calls: one thread per request keeps them all in flight.
        std::thread::scope(|s| {
            let threads: Vec<_> = requests.into_iter().map(|r| s.spawn(move || endpoint.send(r))).collect();
            threads.into_iter().map(|t| t.join().expect("sender thread")).collect()
        })
    }
    fn respond(&self, endpoint: &Self::Endpoint, incoming: IncomingId, code: u16) -> Result<(), RespondError> {
        endpoint.respond(incoming, code, "OK")
    }
    fn shutdown(&self, endpoint: &Self::Endpoint) {
        endpoint.shutdown();
    }
    fn unregister(endpoint: &Self::Endpoint) {
        endpoint.unregister();
    }
    fn reregister(endpoint: &Self::Endpoint) {
        endpoint.reregister();
    }
    fn next_event(&self, events: &mut Self::Events, timeout: Duration) -> Option<Event> {
        events.recv_timeout(timeout).ok()
    }
    fn invite(&self, endpoint: &Self::Endpoint, request: Request) -> Result<SessionId, SendError> {
        endpoint.invite(request)
    }
    fn ring(&self, endpoint: &Self::Endpoint, session: SessionId, code: u16) -> Result<(), SessionError> {
        endpoint.ring(session, code, None)
    }
    fn accept(&self, endpoint: &Self::Endpoint, session: SessionId, body: Option<&Body>) -> Result<(), SessionError> {
        endpoint.accept(session, body)
    }
    fn reject(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SessionError> {
        endpoint.reject(session, code, reason, &[])
    }
    fn hangup(&self, endpoint: &Self::Endpoint, session: SessionId) -> Result<(), SessionError> {
        endpoint.hangup(session)
    }
    fn send_in_session(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        request: Request,
    ) -> Result<Response, Error> {
        endpoint.send_in_session(session, request)
    }
    fn subscribe(&self, endpoint: &Self::Endpoint, sub: Subscribe) -> Result<SubscriptionId, SendError> {
        endpoint.subscribe(sub)
    }
    fn unsubscribe(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        endpoint.unsubscribe(subscription)
    }
    fn accept_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        endpoint.accept_subscription(subscription, state, body)
    }
    fn reject_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        endpoint.reject_subscription(subscription, code, reason)
    }
    fn notify(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        endpoint.notify(subscription, state, body)
    }
    fn terminate_subscription(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> Result<(), SubscriptionError> {
        endpoint.terminate_subscription(subscription, reason, body)
    }
    fn refer(
        &self,
        endpoint: &Self::Endpoint,
        session: SessionId,
        refer_to: &str,
    ) -> Result<SubscriptionId, SubscriptionError> {
        endpoint.refer(session, refer_to)
    }
    fn accept_refer(&self, endpoint: &Self::Endpoint, subscription: SubscriptionId) -> Result<(), SubscriptionError> {
        endpoint.accept_refer(subscription)
    }
    fn refer_progress(
        &self,
        endpoint: &Self::Endpoint,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> Result<(), SubscriptionError> {
        endpoint.refer_progress(subscription, code, reason)
    }
    fn local_addr(endpoint: &Self::Endpoint, transport: Transport) -> Option<SocketAddr> {
        endpoint.local_addr(transport)
    }
}

/// A request an [`Answerer`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The whole request.
    pub request: Arc<[u8]>,
}

/// A thread that reads an endpoint's events and answers each incoming
/// request with a fixed code (or not at all), recording what it saw,
/// including the MESSAGE requests the endpoint answered itself.
pub struct Answerer {
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Answerer {
    /// Starts answering `code` (`None`: never answer) on `endpoint`.
    pub fn start<R: Runtime>(
        rt: &Arc<R>,
        endpoint: &R::Endpoint,
        mut events: R::Events,
        code: Option<u16>,
    ) -> Answerer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rt, endpoint, log, halt) = (rt.clone(), endpoint.clone(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the endpoint shuts down, or the caller stops it and
            // nothing more comes (events already queued are still taken).
            loop {
                match rt.next_event(&mut events, Duration::from_millis(50)) {
                    None if halt.load(Ordering::Acquire) => return,
                    Some(Event::Incoming { incoming, method, request, .. }) => {
                        log.lock().expect("log").push(Seen { method, request });
                        if let Some(code) = code {
                            rt.respond(&endpoint, incoming, code).expect("respond");
                        }
                    }
                    // MESSAGE the endpoint answered itself (RFC 3428).
                    Some(Event::Message { request, .. }) => {
                        log.lock().expect("log").push(Seen { method: "MESSAGE".to_owned(), request });
                    }
                    Some(Event::ShutDown) => return,
                    _ => {}
                }
            }
        });
        Answerer { seen, thread: Some(thread), stop }
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    /// Stops and returns what it saw.
    pub fn stop(mut self) -> Vec<Seen> {
        self.halt();
        self.seen()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("answerer thread");
        }
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.halt();
    }
}
