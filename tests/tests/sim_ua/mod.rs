//! An endpoint as a node of the simulated network (`sipline_tests::sim`)
//! at 192.0.2.(id+1):5060, with its application as a policy, what it sent
//! and received (with when), and a switch that makes it fall silent.
#![allow(dead_code, unreachable_pub)] // each simulation uses a part

use sipline::endpoint::{Endpoint, EndpointConfig, Event, Output, SessionEnd, SessionEvent};
use sipline::transport::Transport;
use sipline_tests::sim::{Node, NodeId};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// What the application behind an endpoint does with an event.
pub type Policy = Box<dyn FnMut(&mut Endpoint, Instant, &Event)>;

pub fn addr(id: NodeId) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

fn node_of(a: SocketAddr) -> Option<NodeId> {
    match a.ip() {
        std::net::IpAddr::V4(v4) => Some(usize::from(v4.octets()[3]) - 1),
        std::net::IpAddr::V6(_) => None,
    }
}

pub fn uri(id: NodeId, user: &str) -> String {
    format!("sip:{user}@{}", addr(id))
}

pub struct Ua {
    pub id: NodeId,
    pub ep: Endpoint,
    pub now: Instant,
    pub events: Vec<(Instant, Event)>,
    pub policy: Policy,
    out: VecDeque<(NodeId, Vec<u8>)>,
    /// Every message sent, with when.
    pub wire: Vec<(Instant, String)>,
    /// Every message received, with when.
    pub received: Vec<(Instant, String)>,
    /// Dead: sends nothing, hears nothing, its timers stop.
    pub dead: bool,
}

impl Ua {
    pub fn new(id: NodeId, user: &str, now: Instant, setup: impl FnOnce(&mut EndpointConfig), policy: Policy) -> Ua {
        let mut c = EndpointConfig::new(&uri(id, user));
        c.seed = 7 + id as u64;
        setup(&mut c);
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(id));
        ep.start(now);
        Ua {
            id,
            ep,
            now,
            events: Vec::new(),
            policy,
            out: VecDeque::new(),
            wire: Vec::new(),
            received: Vec::new(),
            dead: false,
        }
    }

    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut events = Vec::new();
            while let Some(o) = self.ep.poll_output() {
                match o {
                    Output::Datagram { remote, bytes, .. } => {
                        self.wire.push((self.now, String::from_utf8_lossy(&bytes).into_owned()));
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
                self.events.push((self.now, e));
            }
        }
        panic!("the endpoint never went quiet");
    }

    /// Messages sent whose text starts with `prefix` and contains `has`.
    pub fn sent(&self, prefix: &str, has: &str) -> Vec<(Instant, &str)> {
        self.wire
            .iter()
            .filter(|(_, m)| m.starts_with(prefix) && m.contains(has))
            .map(|(t, m)| (*t, m.as_str()))
            .collect()
    }

    /// Messages received whose text starts with `prefix` and contains `has`.
    pub fn got(&self, prefix: &str, has: &str) -> Vec<(Instant, &str)> {
        self.received
            .iter()
            .filter(|(_, m)| m.starts_with(prefix) && m.contains(has))
            .map(|(t, m)| (*t, m.as_str()))
            .collect()
    }

    pub fn session_events(&self) -> Vec<(Instant, SessionEvent)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Session { event, .. } => Some((*t, event.clone())),
                _ => None,
            })
            .collect()
    }

    /// How the session ended, and when.
    pub fn ended(&self) -> Option<(Instant, SessionEnd)> {
        self.session_events().into_iter().find_map(|(t, e)| match e {
            SessionEvent::Ended(why) => Some((t, why)),
            _ => None,
        })
    }
}

impl Node for Ua {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        if self.dead {
            return;
        }
        self.now = now;
        self.received.push((now, String::from_utf8_lossy(bytes).into_owned()));
        self.ep.handle_datagram(now, addr(self.id), addr(from), bytes);
        self.pump();
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.dead {
            return;
        }
        self.now = now;
        self.ep.handle_timeout(now);
        self.pump();
    }
    fn poll_timeout(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        self.ep.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        if self.dead {
            self.out.clear();
            return None;
        }
        self.pump();
        self.out.pop_front()
    }
}

/// The value of the first `name` header line of `msg`.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
