//! Issue 19: several `serve` workers as one server, in memory. Two server
//! endpoints (workers 0 and 1 of one `ServerConfig`: one location service,
//! one nonce secret) listen at the same address; a router stands in for
//! the kernel's `SO_REUSEPORT`, and — harder than the kernel, which keeps
//! a sender on one worker — sends each new request from a phone to the
//! *other* worker than its previous one. So a challenge is answered at the
//! worker that did not issue it, a call is routed by a worker that never
//! saw the callee register, and the callee's responses reach a worker
//! that holds no transaction for them: each must be handed over by the
//! worker tag of its branch (`response_worker`), as the runtime's driver
//! does.

use sipline::auth::{DigestCredentials, Users};
use sipline::endpoint::{
    response_worker, Endpoint, EndpointConfig, Event, Output, RegistrationConfig, RegistrationState, Request,
    ServerConfig, SessionEvent, Worker,
};
use sipline::transport::Transport;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SERVER: &str = "127.0.0.1:5060";

/// alice (127.0.0.1:5071) and bob (:5072), each registering at [`SERVER`]
/// over `transport` (digest credentials `USER-pw`).
fn phones(transport: Transport, now: Instant) -> Vec<(SocketAddr, Endpoint)> {
    [("alice", 5071u16), ("bob", 5072)]
        .into_iter()
        .map(|(user, port)| {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut c = EndpointConfig::new(&format!("sip:{user}@example.com"));
            c.default_transport = transport;
            let registrar = match transport {
                Transport::Udp => format!("sip:{SERVER}"),
                _ => format!("sip:{SERVER};transport=tcp"),
            };
            let mut r = RegistrationConfig::new(&registrar);
            r.expires = 600;
            c.registration = Some(r);
            c.credentials.push(DigestCredentials::new(user, format!("{user}-pw")));
            c.seed = u64::from(port);
            let mut ep = Endpoint::new(c).unwrap();
            ep.add_listener(Transport::Udp, addr);
            if transport != Transport::Udp {
                ep.add_listener(transport, addr);
            }
            ep.start(now);
            (addr, ep)
        })
        .collect()
}

struct Net {
    now: Instant,
    workers: Vec<Endpoint>,
    phones: Vec<(SocketAddr, Endpoint)>,
    /// Requests each phone has sent so far (the router alternates on it).
    sent: Vec<usize>,
    /// Responses a worker received for another worker, and handed over.
    handed_over: usize,
    /// Whether the router hands responses over (off: each stays where the
    /// kernel put it).
    hand_over: bool,
    /// Route as the kernel does (each phone always to one worker: alice
    /// to 0, bob to 1) instead of alternating requests.
    by_source: bool,
    events: Vec<(usize, Event)>,
    /// INVITEs delivered to bob (copies included).
    invites_to_bob: usize,
    queue: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Net {
    fn new(hand_over: bool) -> Net {
        let server: SocketAddr = SERVER.parse().unwrap();
        let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
        let mut config = ServerConfig::new("example.com", users);
        config.nonce_secret = Some([7; 32]);
        let now = Instant::now();
        let workers = (0..2)
            .map(|id| {
                // Clones of one ServerConfig share its location service.
                let mut c = EndpointConfig::new("sip:sipline@example.com").serve(config.clone());
                c.worker = Some(Worker::new(id, 2));
                c.seed = 100 + u64::from(id);
                let mut ep = Endpoint::new(c).unwrap();
                ep.add_listener(Transport::Udp, server);
                ep.start(now);
                ep
            })
            .collect();
        let phones = phones(Transport::Udp, now);
        Net {
            now,
            workers,
            phones,
            sent: vec![0; 2],
            handed_over: 0,
            hand_over,
            by_source: false,
            events: Vec::new(),
            invites_to_bob: 0,
            queue: VecDeque::new(),
        }
    }

    /// The worker the "kernel" gives a datagram from `from`: phones'
    /// requests alternate between the workers.
    fn worker_for(&mut self, from: SocketAddr, bytes: &[u8]) -> usize {
        let phone = self.phones.iter().position(|(a, _)| *a == from).expect("a phone");
        if self.by_source {
            return phone % 2;
        }
        if bytes.starts_with(b"SIP/2.0 ") {
            // Responses: by the sender, as a kernel hashes its address —
            // bob's to worker 0, which the router keeps from the INVITE.
            return (phone + 1) % 2;
        }
        self.sent[phone] += 1;
        (phone + self.sent[phone]) % 2
    }

    /// Moves datagrams until everyone is quiet (bounded).
    fn settle(&mut self) {
        let server: SocketAddr = SERVER.parse().unwrap();
        for _ in 0..100_000 {
            for (i, (addr, ep)) in self.phones.iter_mut().enumerate() {
                while let Some(o) = ep.poll_output() {
                    match o {
                        Output::Datagram { remote, bytes, .. } => self.queue.push_back((*addr, remote, bytes.to_vec())),
                        Output::Event(e) => self.events.push((i, e)),
                        _ => {}
                    }
                }
            }
            for ep in &mut self.workers {
                while let Some(o) = ep.poll_output() {
                    if let Output::Datagram { remote, bytes, .. } = o {
                        self.queue.push_back((server, remote, bytes.to_vec()));
                    }
                }
            }
            let Some((from, to, bytes)) = self.queue.pop_front() else { return };
            if to == server {
                let mut w = self.worker_for(from, &bytes);
                if std::env::var_os("WORKERS_TRACE").is_some() {
                    let line = String::from_utf8_lossy(&bytes[..bytes.iter().position(|&b| b == b'\r').unwrap_or(0)])
                        .to_string();
                    eprintln!("{from} -> worker {w} (tag {:?}): {line}", response_worker(&bytes));
                }
                if let Some(owner) = response_worker(&bytes).map(usize::from).filter(|o| *o != w) {
                    if self.hand_over {
                        self.handed_over += 1;
                        w = owner;
                    }
                }
                self.workers[w].handle_datagram(self.now, server, from, &bytes);
            } else if let Some((_, ep)) = self.phones.iter_mut().find(|(a, _)| *a == to) {
                if to.port() == 5072 && bytes.starts_with(b"INVITE ") {
                    self.invites_to_bob += 1;
                }
                ep.handle_datagram(self.now, to, from, &bytes);
            }
        }
        panic!("the network never settled");
    }

    /// Time passes (timers of everyone), then the network settles.
    fn advance(&mut self, by: Duration) {
        advance(self, by);
    }

    fn registered(&self, phone: usize) -> bool {
        self.events
            .iter()
            .any(|(i, e)| *i == phone && matches!(e, Event::Registration(RegistrationState::Registered { .. })))
    }
}

/// What [`advance`] needs of a network: its clock, its endpoints, and
/// a way to move every message until all are quiet.
trait Network {
    fn settle(&mut self);
    fn clock(&mut self) -> &mut Instant;
    fn endpoints(&mut self) -> Vec<&mut Endpoint>;
}

impl Network for Net {
    fn settle(&mut self) {
        Net::settle(self);
    }
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn endpoints(&mut self) -> Vec<&mut Endpoint> {
        self.workers.iter_mut().chain(self.phones.iter_mut().map(|(_, e)| e)).collect()
    }
}

/// `by` passes, timer by timer (everyone's), the network settling after each.
fn advance<N: Network>(net: &mut N, by: Duration) {
    let end = *net.clock() + by;
    for _ in 0..10_000 {
        net.settle();
        let next = net.endpoints().into_iter().filter_map(|e| e.poll_timeout()).min();
        match next {
            Some(at) if at <= end => {
                let now = (*net.clock()).max(at);
                *net.clock() = now;
                net.endpoints().into_iter().for_each(|e| e.handle_timeout(now));
            }
            _ => break,
        }
    }
    *net.clock() = end;
    net.settle();
}

/// Alice calls bob and hangs up; returns the network after. The router
/// sends alice's REGISTERs to workers 1 and 0 (the answer to the
/// challenge at the worker that did not issue it), her INVITE to worker
/// 1, and her BYE to worker 0; bob registers at 0 then 1.
fn call(hand_over: bool) -> Net {
    let mut net = Net::new(hand_over);
    net.advance(Duration::from_millis(100));
    assert!(net.registered(0) && net.registered(1), "both registered: {:?}", net.events);
    let session = net.phones[0]
        .1
        .invite(net.now, Request::invite("sip:bob@example.com", "application/sdp", b"v=0\r\n".to_vec()))
        .unwrap();
    net.advance(Duration::from_millis(50));
    let incoming = net.events.iter().find_map(|(i, e)| match e {
        Event::IncomingSession { session, .. } if *i == 1 => Some(*session),
        _ => None,
    });
    if let Some(incoming) = incoming {
        net.phones[1].1.ring(net.now, incoming, 180, None).unwrap();
        net.advance(Duration::from_millis(50));
        net.phones[1].1.accept(net.now, incoming, None).unwrap();
    }
    net.advance(Duration::from_secs(2));
    if net.events.iter().any(|(i, e)| *i == 0 && matches!(e, Event::Session { event: SessionEvent::Answered(_), .. })) {
        net.phones[0].1.hangup(net.now, session).unwrap();
    }
    net.advance(Duration::from_secs(40));
    net
}

#[test]
fn a_call_crosses_workers_and_every_response_is_handed_to_its_transaction() {
    let net = call(true);
    let answered =
        net.events.iter().any(|(i, e)| *i == 0 && matches!(e, Event::Session { event: SessionEvent::Answered(_), .. }));
    let ended =
        net.events.iter().filter(|(_, e)| matches!(e, Event::Session { event: SessionEvent::Ended(_), .. })).count();
    assert!(answered, "the call was answered: {:?}", net.events);
    assert_eq!(ended, 2, "both sides saw the call end: {:?}", net.events);
    // bob's 180 and 200 reached worker 0; the INVITE was worker 1's.
    assert!(net.handed_over >= 2, "responses crossed workers: {} handed over", net.handed_over);
    let rang =
        net.events.iter().any(|(i, e)| *i == 0 && matches!(e, Event::Session { event: SessionEvent::Progress(_), .. }));
    assert!(rang, "alice heard the 180: {:?}", net.events);
    // Worker 1's client transaction heard the 200: it never sent the
    // INVITE again.
    assert_eq!(net.invites_to_bob, 1);
    // Each worker served requests; both saw one set of bindings.
    for w in &net.workers {
        let bob = sipline::message::Uri::parse("sip:bob@example.com").unwrap();
        assert!(
            matches!(w.registrar().unwrap().targets(net.now, &bob), sipline::registrar::Lookup::Aor(b) if b.len() == 1)
        );
    }
    // Nothing left behind once the transactions have lingered out.
    for w in &net.workers {
        let t = w.tables();
        assert_eq!((t.client_transactions, t.server_transactions, t.proxied), (0, 0, 0), "{t:?}");
    }
}

#[test]
fn without_the_hand_over_the_transaction_never_hears_its_responses() {
    // The mechanism matters. Left at worker 0, which holds no transaction
    // for them, the 180 and the 200 go on statelessly (§16.7: a response
    // matching no client transaction is forwarded as a stateless proxy
    // does, so the call still connects), but worker 1's INVITE client
    // transaction hears nothing and sends the INVITE again (Timer A).
    let net = call(false);
    assert_eq!(net.handed_over, 0);
    assert!(net.invites_to_bob > 1, "the INVITE went once: {}", net.invites_to_bob);
}

/// The phones of [`over_tcp`]: alice's connection is accepted by worker 0,
/// bob's by worker 1.
struct TcpNet {
    now: Instant,
    workers: Vec<Endpoint>,
    phones: Vec<(SocketAddr, Endpoint)>,
    /// (phone, its connection) ↔ (worker, the worker's connection).
    links: Vec<((usize, sipline::transport::ConnId), (usize, sipline::transport::ConnId))>,
    events: Vec<(usize, Event)>,
    /// Messages one worker handed to another.
    handed: Vec<(usize, sipline::transport::WorkerMessage)>,
    /// Connections a worker tried to open (none should be needed).
    opened: usize,
}

impl TcpNet {
    fn new() -> TcpNet {
        let server: SocketAddr = SERVER.parse().unwrap();
        let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
        let config = ServerConfig::new("example.com", users);
        let now = Instant::now();
        // One endpoint config for both workers: its clones share the
        // location service (ServerConfig) and the connection directory
        // (TransportConfig).
        let template = EndpointConfig::new("sip:sipline@example.com").serve(config);
        let workers = (0..2)
            .map(|id| {
                let mut c = template.clone();
                c.worker = Some(Worker::new(id, 2));
                c.seed = 200 + u64::from(id);
                let mut ep = Endpoint::new(c).unwrap();
                ep.add_listener(Transport::Udp, server);
                ep.add_listener(Transport::Tcp, server);
                ep.start(now);
                ep
            })
            .collect();
        let phones = phones(Transport::Tcp, now);
        TcpNet { now, workers, phones, links: Vec::new(), events: Vec::new(), handed: Vec::new(), opened: 0 }
    }

    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.phones.len() {
                while let Some(o) = self.phones[i].1.poll_output() {
                    moved = true;
                    match o {
                        Output::Open { conn, .. } => {
                            // Phone i's connection lands on worker i.
                            let addr = self.phones[i].0;
                            let wc = self.workers[i].handle_accepted(self.now, Transport::Tcp, addr).unwrap();
                            self.links.push(((i, conn), (i, wc)));
                            self.phones[i].1.handle_connected(self.now, conn);
                        }
                        Output::Write { conn, bytes } => {
                            let (w, wc) = self.links.iter().find(|(p, _)| *p == (i, conn)).expect("a link").1;
                            self.workers[w].handle_stream_data(self.now, wc, &bytes);
                        }
                        Output::Event(e) => self.events.push((i, e)),
                        _ => {}
                    }
                }
            }
            for w in 0..self.workers.len() {
                while let Some(o) = self.workers[w].poll_output() {
                    moved = true;
                    match o {
                        Output::Write { conn, bytes } => {
                            let (p, pc) = self.links.iter().find(|(_, x)| *x == (w, conn)).expect("a link").0;
                            self.phones[p].1.handle_stream_data(self.now, pc, &bytes);
                        }
                        Output::Worker { worker, message } => {
                            self.handed.push((usize::from(worker), message.clone()));
                            self.workers[usize::from(worker)].handle_worker_message(self.now, message);
                        }
                        Output::Open { conn, .. } => {
                            self.opened += 1;
                            self.workers[w].handle_connect_failed(self.now, conn);
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    fn advance(&mut self, by: Duration) {
        advance(self, by);
    }

    fn saw(&self, phone: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(i, e)| *i == phone && f(e))
    }
}

impl Network for TcpNet {
    fn settle(&mut self) {
        TcpNet::settle(self);
    }
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn endpoints(&mut self) -> Vec<&mut Endpoint> {
        self.workers.iter_mut().chain(self.phones.iter_mut().map(|(_, e)| e)).collect()
    }
}

#[test]
fn a_call_over_tcp_reaches_the_callee_through_the_worker_holding_its_connection() {
    use sipline::transport::WorkerMessage;
    let mut net = TcpNet::new();
    net.advance(Duration::from_millis(100));
    for p in 0..2 {
        assert!(
            net.saw(p, |e| matches!(e, Event::Registration(RegistrationState::Registered { .. }))),
            "{:?}",
            net.events
        );
    }
    let session = net.phones[0]
        .1
        .invite(net.now, Request::invite("sip:bob@example.com", "application/sdp", b"v=0\r\n".to_vec()))
        .unwrap();
    net.advance(Duration::from_millis(50));
    let incoming = net.events.iter().find_map(|(i, e)| match e {
        Event::IncomingSession { session, .. } if *i == 1 => Some(*session),
        _ => None,
    });
    let incoming = incoming.unwrap_or_else(|| panic!("bob was called: {:?} handed {:?}", net.events, net.handed));
    net.phones[1].1.ring(net.now, incoming, 180, None).unwrap();
    net.advance(Duration::from_millis(50));
    net.phones[1].1.accept(net.now, incoming, None).unwrap();
    net.advance(Duration::from_secs(1));
    assert!(
        net.saw(0, |e| matches!(e, Event::Session { event: SessionEvent::Progress(_), .. })),
        "alice heard the 180"
    );
    assert!(
        net.saw(0, |e| matches!(e, Event::Session { event: SessionEvent::Answered(_), .. })),
        "answered: {:?}",
        net.events
    );
    net.phones[0].1.hangup(net.now, session).unwrap();
    net.advance(Duration::from_secs(40));
    assert!(net.saw(1, |e| matches!(e, Event::Session { event: SessionEvent::Ended(_), .. })), "bob saw the BYE");
    // Worker 0 (alice's) sent the INVITE, the ACK and the BYE through
    // worker 1 (bob's connection), and worker 1 handed bob's responses
    // back to the transactions of worker 0; no worker opened a connection.
    let sends = net.handed.iter().filter(|(w, m)| *w == 1 && matches!(m, WorkerMessage::Send { .. })).count();
    let received = net.handed.iter().filter(|(w, m)| *w == 0 && matches!(m, WorkerMessage::Received { .. })).count();
    assert!(sends >= 3, "INVITE, ACK, BYE through worker 1: {sends}");
    assert!(received >= 3, "180, 200 to the INVITE, 200 to the BYE back to worker 0: {received}");
    assert_eq!(net.opened, 0);
    for w in &net.workers {
        let t = w.tables();
        assert_eq!((t.client_transactions, t.server_transactions, t.proxied), (0, 0, 0), "{t:?}");
    }
}

#[test]
fn cancel_and_re_invite_across_workers_routed_by_source() {
    // As the kernel routes: alice always reaches worker 0, bob worker 1.
    // Every response of bob's to a request alice sent through worker 0
    // lands on worker 1 and is handed over; the CANCEL follows its INVITE
    // to worker 0 (same sender).
    let mut net = Net::new(true);
    net.by_source = true;
    net.advance(Duration::from_millis(100));
    assert!(net.registered(0) && net.registered(1), "both registered: {:?}", net.events);
    let invite = |net: &mut Net| {
        let r = Request::invite("sip:bob@example.com", "application/sdp", b"v=0\r\n".to_vec());
        let s = net.phones[0].1.invite(net.now, r).unwrap();
        net.advance(Duration::from_millis(50));
        let incoming = net.events.iter().rev().find_map(|(i, e)| match e {
            Event::IncomingSession { session, .. } if *i == 1 => Some(*session),
            _ => None,
        });
        (s, incoming.expect("bob was called"))
    };
    // A call cancelled while ringing: both sides end.
    let (first, ringing) = invite(&mut net);
    net.phones[1].1.ring(net.now, ringing, 180, None).unwrap();
    net.advance(Duration::from_millis(50));
    net.phones[0].1.hangup(net.now, first).unwrap();
    net.advance(Duration::from_secs(1));
    let ended = |net: &Net, phone: usize, s| {
        net.events.iter().any(|(i, e)| {
            *i == phone && matches!(e, Event::Session { session, event: SessionEvent::Ended(_) } if *session == s)
        })
    };
    assert!(ended(&net, 0, first) && ended(&net, 1, ringing), "cancelled on both sides: {:?}", net.events);
    // A call answered, re-INVITEd by alice (an offer bob takes), hung up.
    let (second, answered) = invite(&mut net);
    net.phones[1].1.accept(net.now, answered, None).unwrap();
    net.advance(Duration::from_secs(1));
    net.phones[0].1.reinvite(net.now, second, None).unwrap();
    net.advance(Duration::from_millis(50));
    let reoffer = net.events.iter().any(|(i, e)| {
        *i == 1 && matches!(e, Event::Session { session, event: SessionEvent::Reoffer { .. } } if *session == answered)
    });
    assert!(reoffer, "bob got the re-INVITE: {:?}", net.events);
    net.phones[1].1.accept(net.now, answered, None).unwrap();
    net.advance(Duration::from_secs(1));
    let updated = net.events.iter().any(|(i, e)| {
        *i == 0 && matches!(e, Event::Session { session, event: SessionEvent::Updated(Ok(_)) } if *session == second)
    });
    assert!(updated, "the re-INVITE was answered: {:?}", net.events);
    net.phones[0].1.hangup(net.now, second).unwrap();
    net.advance(Duration::from_secs(40));
    assert!(ended(&net, 1, answered), "bob saw the BYE");
    // The 180, the CANCEL's 200 and the 487, the 200s of the INVITE, the
    // re-INVITE and the BYE: all crossed from worker 1 to worker 0.
    assert!(net.handed_over >= 6, "{} handed over", net.handed_over);
    for w in &net.workers {
        let t = w.tables();
        assert_eq!((t.client_transactions, t.server_transactions, t.proxied), (0, 0, 0), "{t:?}");
    }
}
