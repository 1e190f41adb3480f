//! Two endpoints in memory, Alice (192.0.2.1) and Bob (192.0.2.2), over
//! a perfect network with no delay, a clock that moves only when told, and
//! filters that drop chosen messages; plus helpers to read the wire.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)] // each test binary uses a part

use sipline::endpoint::{Endpoint, EndpointConfig, Event, Output, SessionEvent, SessionId};
use sipline::transport::Transport;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the application behind an endpoint does with an event.
pub type Policy = Box<dyn FnMut(&mut Endpoint, Instant, &Event)>;

/// Decides whether a message from node `from` (0 Alice, 1 Bob) is lost.
pub type Drop = Box<dyn FnMut(usize, &str) -> bool>;

pub fn addr(id: usize) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

pub fn uri(id: usize, user: &str) -> String {
    format!("sip:{user}@{}", addr(id))
}

pub const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\n";
pub const ANSWER: &[u8] = b"v=0\r\no=bob 2 2 IN IP4 192.0.2.2\r\n";

/// One endpoint with what it did.
pub struct Node {
    pub ep: Endpoint,
    pub policy: Policy,
    /// Events, with when.
    pub events: Vec<(Duration, Event)>,
    /// Every message sent (dropped ones too), with when and whether lost.
    pub wire: Vec<(Duration, bool, String)>,
    /// Every message received, with when.
    pub received: Vec<(Duration, String)>,
}

impl Node {
    /// Messages sent that start with `prefix` and contain `has`, with when
    /// (lost ones too).
    pub fn sent(&self, prefix: &str, has: &str) -> Vec<(Duration, String)> {
        self.wire
            .iter()
            .filter(|(_, _, m)| m.starts_with(prefix) && m.contains(has))
            .map(|(t, _, m)| (*t, m.clone()))
            .collect()
    }

    /// The session events, with when.
    pub fn session_events(&self) -> Vec<(Duration, SessionEvent)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Session { event, .. } => Some((*t, event.clone())),
                _ => None,
            })
            .collect()
    }

    /// The incoming session, if one came.
    pub fn incoming(&self) -> Option<SessionId> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::IncomingSession { session, .. } => Some(*session),
            _ => None,
        })
    }
}

/// The pair and their network.
pub struct Pair {
    pub nodes: [Node; 2],
    pub start: Instant,
    pub now: Instant,
    queue: VecDeque<(usize, Vec<u8>)>,
    pub drop: Drop,
}

impl Pair {
    /// Alice and Bob, each set up by its closure and run by its policy.
    pub fn new(
        alice: impl FnOnce(&mut EndpointConfig),
        bob: impl FnOnce(&mut EndpointConfig),
        alice_policy: Policy,
        bob_policy: Policy,
    ) -> Pair {
        let start = Instant::now();
        let config = |id: usize, user: &str| {
            let mut c = EndpointConfig::new(&uri(id, user));
            c.seed = 11 + id as u64;
            c
        };
        let (mut ca, mut cb) = (config(0, "alice"), config(1, "bob"));
        alice(&mut ca);
        bob(&mut cb);
        let make = |id: usize, c: EndpointConfig, policy: Policy| {
            let mut ep = Endpoint::new(c).unwrap();
            ep.add_listener(Transport::Udp, addr(id));
            ep.start(start);
            Node { ep, policy, events: Vec::new(), wire: Vec::new(), received: Vec::new() }
        };
        let a = make(0, ca, alice_policy);
        let b = make(1, cb, bob_policy);
        let mut pair = Pair { nodes: [a, b], start, now: start, queue: VecDeque::new(), drop: Box::new(|_, _| false) };
        pair.pump();
        pair
    }

    /// Time since the start.
    pub fn at(&self) -> Duration {
        self.now - self.start
    }

    /// Drains both endpoints: datagrams into the queue (or lost), events
    /// to the policies.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            let mut quiet = true;
            for id in 0..2 {
                let mut events = Vec::new();
                while let Some(o) = self.nodes[id].ep.poll_output() {
                    quiet = false;
                    match o {
                        Output::Datagram { remote, bytes, .. } => {
                            let text = String::from_utf8_lossy(&bytes).into_owned();
                            let lost = (self.drop)(id, &text);
                            let at = self.now - self.start;
                            self.nodes[id].wire.push((at, lost, text));
                            let to = usize::from(remote != addr(0));
                            if !lost && (remote == addr(0) || remote == addr(1)) {
                                self.queue.push_back((to, bytes.to_vec()));
                            }
                        }
                        Output::Event(e) => events.push(e),
                        _ => {}
                    }
                }
                for e in events {
                    let n = &mut self.nodes[id];
                    (n.policy)(&mut n.ep, self.now, &e);
                    n.events.push((self.now - self.start, e));
                }
            }
            if quiet {
                return;
            }
        }
        panic!("endpoints never went quiet");
    }

    /// Delivers everything queued (and what it leads to) at once.
    pub fn deliver(&mut self) {
        for _ in 0..10_000 {
            self.pump();
            let Some((to, bytes)) = self.queue.pop_front() else { return };
            let from = addr(to.abs_diff(1));
            let at = self.now - self.start;
            self.nodes[to].received.push((at, String::from_utf8_lossy(&bytes).into_owned()));
            self.nodes[to].ep.handle_datagram(self.now, addr(to), from, &bytes);
        }
        panic!("messages never stopped");
    }

    /// Runs `d` of time: messages at once, timers when due.
    pub fn run(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..100_000 {
            self.deliver();
            let next = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    for n in &mut self.nodes {
                        n.ep.handle_timeout(self.now);
                    }
                }
                _ => {
                    self.now = until;
                    self.deliver();
                    return;
                }
            }
        }
        panic!("timers never settled");
    }

    /// Hands `text` to node `to` as if it came from `from` (a peer played
    /// by the test: what goes back to it is only recorded), then delivers.
    pub fn inject(&mut self, to: usize, from: SocketAddr, text: &str) {
        let at = self.now - self.start;
        self.nodes[to].received.push((at, text.to_owned()));
        self.nodes[to].ep.handle_datagram(self.now, addr(to), from, text.as_bytes());
        self.deliver();
    }

    /// Runs `secs` seconds.
    pub fn secs(&mut self, secs: u64) {
        self.run(Duration::from_secs(secs));
    }

    /// Runs a command on one endpoint at the current time, then delivers.
    pub fn with<T>(&mut self, id: usize, f: impl FnOnce(&mut Endpoint, Instant) -> T) -> T {
        let now = self.now;
        let t = f(&mut self.nodes[id].ep, now);
        self.deliver();
        t
    }
}

/// Does nothing.
pub fn idle() -> Policy {
    Box::new(|_, _, _| {})
}

/// The value of the first `name` header line of `msg`.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The first line of `msg`.
pub fn first_line(msg: &str) -> &str {
    msg.split("\r\n").next().unwrap_or_default()
}
