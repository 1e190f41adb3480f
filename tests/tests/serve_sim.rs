//! The server role (`EndpointConfig::serve`) in the simulated network:
//! endpoints register to it with digest authentication, and a call to a
//! user with two registered devices forks to both (§16.6); the one that
//! answers gets the ACK, the one still ringing gets a CANCEL (§16.7 step
//! 10) and ends with 487, and the caller sees one confirmed session. A
//! wildcard unregister (§10.3 step 6) empties the location service.

use sipline::auth::DigestCredentials;
use sipline::auth::Users;
use sipline::endpoint::{
    Body, Endpoint, EndpointConfig, Event, Output, RegistrationConfig, Request, ServerConfig, SessionEnd, SessionEvent,
};
use sipline::message::Uri;
use sipline::transport::Transport;
use sipline_tests::sim::{for_each_seed, LinkConfig, Node, NodeId, Sim};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";

type Policy = Box<dyn FnMut(&mut Endpoint, Instant, &Event)>;

/// One endpoint (or the server) at 192.0.2.(id+1):5060.
struct Peer {
    ep: Endpoint,
    now: Instant,
    events: Vec<Event>,
    policy: Policy,
    out: VecDeque<(NodeId, Vec<u8>)>,
    wire: Vec<String>,
}

fn addr(id: NodeId) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

fn node_of(a: SocketAddr) -> Option<NodeId> {
    match a.ip() {
        std::net::IpAddr::V4(v4) => Some(usize::from(v4.octets()[3]) - 1),
        std::net::IpAddr::V6(_) => None,
    }
}

impl Peer {
    fn new(id: NodeId, config: EndpointConfig, now: Instant, policy: Policy) -> Peer {
        let mut c = config;
        c.seed = 11 + id as u64;
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(id));
        ep.start(now);
        Peer { ep, now, events: Vec::new(), policy, out: VecDeque::new(), wire: Vec::new() }
    }

    fn pump(&mut self) {
        loop {
            let mut events = Vec::new();
            while let Some(o) = self.ep.poll_output() {
                match o {
                    Output::Datagram { remote, bytes, .. } => {
                        self.wire.push(String::from_utf8_lossy(&bytes).into_owned());
                        if let Some(to) = node_of(remote) {
                            self.out.push_back((to, bytes.to_vec()));
                        }
                    }
                    Output::Event(e) => events.push(e),
                    _ => {}
                }
            }
            if events.is_empty() {
                return;
            }
            for e in events {
                (self.policy)(&mut self.ep, self.now, &e);
                self.events.push(e);
            }
        }
    }

    fn sent(&self, prefix: &str) -> usize {
        self.wire.iter().filter(|m| m.starts_with(prefix)).count()
    }

    fn session_end(&self) -> Option<SessionEnd> {
        self.events.iter().find_map(|e| match e {
            Event::Session { event: SessionEvent::Ended(why), .. } => Some(why.clone()),
            _ => None,
        })
    }

    /// The callee's session confirmed by the ACK.
    fn confirmed(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Session { event: SessionEvent::Confirmed { .. }, .. }))
    }

    /// The caller's session answered by a 200 (and ACKed).
    fn answered(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Session { event: SessionEvent::Answered(_), .. }))
    }
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.now = now;
        let local = self.ep.transport().listeners()[0].1;
        self.ep.handle_datagram(now, local, addr(from), bytes);
        self.pump();
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.ep.handle_timeout(now);
        self.pump();
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.pump();
        self.out.pop_front()
    }
}

/// A user's endpoint registered at the server (node 0) as `user`, device
/// `instance`.
fn device(id: NodeId, user: &str, instance: &str, now: Instant, policy: Policy) -> Peer {
    let mut c = EndpointConfig::new(&format!("sip:{user}@{DOMAIN}"));
    c.registration = Some(RegistrationConfig::new(&format!("sip:{}", addr(0))));
    c.credentials.push(DigestCredentials::new(user, format!("{user}-pw")));
    c.instance = Some(instance.to_owned());
    Peer::new(id, c, now, policy)
}

fn server(now: Instant) -> Peer {
    let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
    let c = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(ServerConfig::new(DOMAIN, users));
    Peer::new(0, c, now, Box::new(|_, _, _| {}))
}

/// Rings and answers at once.
fn answering() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
            ep.accept(now, *session, Some(&Body::sdp(b"v=0\r\n".to_vec()))).unwrap();
        }
    })
}

/// Rings and never answers.
fn ringing() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
        }
    })
}

fn idle() -> Policy {
    Box::new(|_, _, _| {})
}

fn bindings(s: &Sim<Peer>, user: &str) -> usize {
    let uri = format!("sip:{user}@{DOMAIN}");
    let uri = Uri::parse(&uri).unwrap();
    match s.nodes[0].ep.registrar().map(|r| r.targets(s.now(), &uri)) {
        Some(sipline::registrar::Lookup::Aor(b)) => b.len(),
        _ => 0,
    }
}

#[test]
fn a_call_forks_to_both_devices_one_answers_the_other_is_cancelled() {
    for_each_seed(8, |seed| {
        let t0 = Instant::now();
        let nodes = vec![
            server(t0),
            device(1, "bob", "urn:uuid:00000000-0000-4000-8000-00000000000b", t0, answering()),
            device(2, "bob", "urn:uuid:00000000-0000-4000-8000-00000000000c", t0, ringing()),
            device(3, "alice", "urn:uuid:00000000-0000-4000-8000-00000000000a", t0, idle()),
        ];
        let mut s = Sim::new(nodes, LinkConfig::lossy(), seed, t0);
        s.run(Duration::from_secs(30), 200_000);
        assert_eq!(bindings(&s, "bob"), 2, "seed {seed}: both of bob's devices registered");
        assert_eq!(bindings(&s, "alice"), 1, "seed {seed}");
        // Every REGISTER was challenged first (401), then accepted.
        assert!(s.nodes[0].sent("SIP/2.0 401") >= 3, "seed {seed}");

        let now = s.now();
        let call = s.nodes[3]
            .ep
            .invite(now, Request::invite(&format!("sip:bob@{DOMAIN}"), "application/sdp", b"v=0\r\n".to_vec()));
        assert!(call.is_ok());
        s.nodes[3].pump();
        let until = s.elapsed() + Duration::from_secs(60);
        s.run(until, 400_000);

        // The server challenged alice's INVITE (407), then forked it.
        assert!(s.nodes[0].sent("SIP/2.0 407") >= 1, "seed {seed}");
        // (Over a lossy link a branch's INVITE may go more than once: Timer A.)
        assert!(s.nodes[0].sent("INVITE sip:bob@192.0.2.2") >= 1, "seed {seed}: a branch to device 1");
        assert!(s.nodes[0].sent("INVITE sip:bob@192.0.2.3") >= 1, "seed {seed}: a branch to device 2");
        assert!(s.nodes[0].sent("CANCEL sip:bob@192.0.2.3") >= 1, "seed {seed}: the ringing branch cancelled");
        assert!(s.nodes[3].answered(), "seed {seed}: the caller's session answered");
        assert!(s.nodes[1].confirmed(), "seed {seed}: the answering device got the ACK");
        assert_eq!(s.nodes[2].session_end(), Some(SessionEnd::Cancelled), "seed {seed}");
        // The caller saw one 200, through the server (Record-Route).
        let ok = s.nodes[0].wire.iter().find(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE")).unwrap();
        assert!(ok.contains("Record-Route: <sip:192.0.2.1:5060;transport=udp;lr>"), "seed {seed}:\n{ok}");
    });
}

#[test]
fn unregister_removes_the_binding() {
    let t0 = Instant::now();
    let nodes = vec![server(t0), device(1, "bob", "urn:uuid:00000000-0000-4000-8000-00000000000b", t0, idle())];
    let mut s = Sim::new(nodes, LinkConfig::default(), 1, t0);
    s.run(Duration::from_secs(5), 100_000);
    assert_eq!(bindings(&s, "bob"), 1);
    let now = s.now();
    s.nodes[1].ep.unregister(now);
    s.nodes[1].pump();
    let until = s.elapsed() + Duration::from_secs(10);
    s.run(until, 100_000);
    assert_eq!(bindings(&s, "bob"), 0);
}
