//! A simulated network for whole transport layers: datagrams (with loss,
//! duplication, jitter) and stream connections (connect, accept, ordered
//! segments cut at chosen sizes, close, reset), on a virtual clock.
//!
//! Each host is a [`TransportLayer`] plus an [`App`] on top that gets the
//! layer's events and may send. The network plays the runtime: it answers
//! `Open` with an accept at the listening host and a connect report back,
//! carries `Write`s as segments (in order, per direction) and turns
//! `Close` into a close at the other end. Everything is drawn from one
//! seed, so a run replays exactly; TLS ciphertext is the exception (the
//! core's TLS randomness comes from the system), which is why traces mark
//! TLS segments without their bytes.

use crate::sim::{chance, LinkConfig};
use sipline::rng::Rng;
use sipline::transport::{ConnId, Output, Transport, TransportEvent, TransportLayer};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// What sits on a host's transport layer.
pub trait App {
    /// An event from the transport layer; the app may send through it.
    fn on_event(&mut self, now: Instant, event: TransportEvent, layer: &mut TransportLayer);
    /// Time passed (called when [`App::poll_timeout`] is due).
    fn on_timeout(&mut self, _now: Instant, _layer: &mut TransportLayer) {}
    /// When the app wants [`App::on_timeout`].
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// An app that only records events, with the time each came.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every event, in order.
    pub events: Vec<(Instant, TransportEvent)>,
}

impl App for Recorder {
    fn on_event(&mut self, now: Instant, event: TransportEvent, _layer: &mut TransportLayer) {
        self.events.push((now, event));
    }
}

impl Recorder {
    /// The requests received, as text.
    pub fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                TransportEvent::Request { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// The close reasons seen, with their times.
    pub fn closes(&self) -> Vec<(Instant, sipline::transport::CloseReason)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                TransportEvent::Closed { reason, .. } => Some((*t, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// How many TLS handshakes completed.
    pub fn secured(&self) -> usize {
        self.events.iter().filter(|(_, e)| matches!(e, TransportEvent::Secured { .. })).count()
    }
}

/// How stream writes are cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segments {
    /// One segment per write.
    Whole,
    /// Segments of exactly this many octets (1: a byte at a time).
    Fixed(usize),
    /// Segments of a random size in `1..=max`.
    Random(usize),
}

/// One host: a transport layer, its app, its address.
pub struct Host<A> {
    /// The transport layer under test.
    pub layer: TransportLayer,
    /// The app on top.
    pub app: A,
    /// The host's address.
    pub ip: IpAddr,
    listening: Vec<(Transport, u16)>,
    next_port: u16,
}

enum Delivery {
    Datagram { to: usize, local: SocketAddr, from: SocketAddr, bytes: Vec<u8> },
    Syn { from: usize, conn: ConnId, transport: Transport, src: SocketAddr, dst: SocketAddr },
    Connected { host: usize, conn: ConnId, ok: bool },
    Data { host: usize, conn: ConnId, bytes: Vec<u8> },
    Fin { host: usize, conn: ConnId },
}

/// The network.
pub struct Net<A> {
    /// The hosts, by index (host `i` has address 192.0.2.`i+1`).
    pub hosts: Vec<Host<A>>,
    /// Datagram link behaviour (streams use its latency and jitter only).
    pub link: LinkConfig,
    /// How stream writes are cut.
    pub segments: Segments,
    rng: Rng,
    now: Instant,
    origin: Instant,
    in_flight: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    /// (host, conn) -> (peer host, peer conn, transport); both directions.
    pairs: BTreeMap<(usize, ConnId), (usize, ConnId, Transport)>,
    /// Latest delivery time per direction, so segments stay in order.
    last: BTreeMap<(usize, ConnId), Instant>,
    trace: String,
    /// Stream segments delivered.
    pub segments_delivered: u64,
}

impl<A> Drop for Net<A> {
    fn drop(&mut self) {
        crate::sim::keep_trace_if_panicking(&self.trace);
    }
}

impl<A: App> Net<A> {
    /// A network of `hosts` (layer and app each), starting at `origin`.
    pub fn new(
        hosts: Vec<(TransportLayer, A)>,
        link: LinkConfig,
        segments: Segments,
        seed: u64,
        origin: Instant,
    ) -> Self {
        let hosts = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (layer, app))| Host {
                layer,
                app,
                ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, u8::try_from(i + 1).unwrap_or(255))),
                listening: Vec::new(),
                next_port: 40000,
            })
            .collect();
        Net {
            hosts,
            link,
            segments,
            rng: Rng::new(seed ^ 0x006e_e700),
            now: origin,
            origin,
            in_flight: BTreeMap::new(),
            seq: 0,
            pairs: BTreeMap::new(),
            last: BTreeMap::new(),
            trace: String::new(),
            segments_delivered: 0,
        }
    }

    /// The address of host `i` at `port`.
    pub fn addr(&self, host: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.hosts[host].ip, port)
    }

    /// Host `i` listens on `port` over `transport`.
    pub fn listen(&mut self, host: usize, transport: Transport, port: u16) {
        let addr = self.addr(host, port);
        let h = &mut self.hosts[host];
        h.listening.push((transport, port));
        h.layer.add_listener(transport, addr);
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// When the run started.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// Everything that crossed the network, stamped with virtual time.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// The peer end of a connection, if it is connected.
    pub fn peer_of(&self, host: usize, conn: ConnId) -> Option<(usize, ConnId)> {
        self.pairs.get(&(host, conn)).map(|&(h, c, _)| (h, c))
    }

    /// Runs `f` on host `i` at the current time (to send, pin…), then
    /// carries out what it asked for.
    pub fn with<R>(&mut self, host: usize, f: impl FnOnce(Instant, &mut Host<A>) -> R) -> R {
        let now = self.now;
        let r = f(now, &mut self.hosts[host]);
        self.flush();
        r
    }

    /// The connection breaks (a reset): both ends hear it is closed.
    pub fn sever(&mut self, host: usize, conn: ConnId) {
        if let Some((peer, peer_conn, _)) = self.pairs.remove(&(host, conn)) {
            self.pairs.remove(&(peer, peer_conn));
            let now = self.now;
            self.hosts[peer].layer.handle_closed(now, peer_conn);
        }
        let now = self.now;
        self.hosts[host].layer.handle_closed(now, conn);
        self.flush();
    }

    fn stamp(&self) -> f64 {
        (self.now - self.origin).as_secs_f64()
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.in_flight.insert((at, self.seq), d);
    }

    fn delay(&mut self) -> Duration {
        self.link.delay(&mut self.rng)
    }

    fn chance(&mut self, p: f64) -> bool {
        chance(&mut self.rng, p)
    }

    /// An in-order delivery time for the direction `(host, conn)`.
    fn ordered(&mut self, host: usize, conn: ConnId) -> Instant {
        let at = self.now + self.delay();
        let at = self.last.get(&(host, conn)).map_or(at, |&l| at.max(l));
        self.last.insert((host, conn), at);
        at
    }

    /// Drains every host's outputs (and gives events to its app) until
    /// nothing is left.
    pub fn flush(&mut self) {
        for _ in 0..10_000 {
            let mut any = false;
            for h in 0..self.hosts.len() {
                while let Some(o) = self.hosts[h].layer.poll_output() {
                    any = true;
                    self.output(h, o);
                }
            }
            if !any {
                return;
            }
        }
        panic!("outputs never drained");
    }

    fn output(&mut self, h: usize, o: Output) {
        let now = self.now;
        match o {
            Output::Datagram { local, remote, bytes } => {
                let from = local.unwrap_or_else(|| SocketAddr::new(self.hosts[h].ip, 5060));
                let lost = self.chance(self.link.loss);
                let copies = if lost {
                    0
                } else if self.chance(self.link.duplicate) {
                    2
                } else {
                    1
                };
                let first = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
                let _ = writeln!(
                    self.trace,
                    "{:>10.3} udp {from}->{remote} {} [{}] {}",
                    self.stamp(),
                    if lost { "lost" } else { "sent" },
                    bytes.len(),
                    String::from_utf8_lossy(first)
                );
                let Some(to) = self.hosts.iter().position(|x| x.ip == remote.ip()) else { return };
                for _ in 0..copies {
                    let at = now + self.delay();
                    self.schedule(at, Delivery::Datagram { to, local: remote, from, bytes: bytes.to_vec() });
                }
            }
            Output::Open { conn, transport, remote, server_name } => {
                let port = self.hosts[h].next_port;
                self.hosts[h].next_port = port.wrapping_add(1).max(40000);
                let src = SocketAddr::new(self.hosts[h].ip, port);
                let _ = writeln!(
                    self.trace,
                    "{:>10.3} {h} open {} {src}->{remote} {server_name:?}",
                    self.stamp(),
                    transport.as_str()
                );
                let at = now + self.delay();
                self.schedule(at, Delivery::Syn { from: h, conn, transport, src, dst: remote });
            }
            Output::Write { conn, bytes } => {
                let Some(&(peer, peer_conn, transport)) = self.pairs.get(&(h, conn)) else { return };
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let n = match self.segments {
                        Segments::Whole => rest.len(),
                        Segments::Fixed(n) => n.max(1),
                        Segments::Random(max) => {
                            1 + usize::try_from(self.rng.next_u64() % u64::try_from(max.max(1)).unwrap_or(1))
                                .unwrap_or(0)
                        }
                    }
                    .min(rest.len());
                    let (seg, tail) = rest.split_at(n);
                    rest = tail;
                    if transport == Transport::Tls {
                        let _ = writeln!(self.trace, "{:>10.3} {h}->{peer} tls segment", self.stamp());
                    } else {
                        let _ = writeln!(
                            self.trace,
                            "{:>10.3} {h}->{peer} tcp [{}] {:?}",
                            self.stamp(),
                            seg.len(),
                            String::from_utf8_lossy(seg)
                        );
                    }
                    let at = self.ordered(h, conn);
                    self.schedule(at, Delivery::Data { host: peer, conn: peer_conn, bytes: seg.to_vec() });
                }
            }
            Output::Close { conn } => {
                let _ = writeln!(self.trace, "{:>10.3} {h} close", self.stamp());
                if let Some((peer, peer_conn, _)) = self.pairs.remove(&(h, conn)) {
                    self.pairs.remove(&(peer, peer_conn));
                    let at = self.ordered(h, conn);
                    self.schedule(at, Delivery::Fin { host: peer, conn: peer_conn });
                }
            }
            Output::Resolve { query, name, .. } => {
                let _ = writeln!(self.trace, "{:>10.3} {h} resolve {query:?} {name}", self.stamp());
            }
            // No host here is one of several workers.
            Output::Worker { worker, .. } => panic!("host {h} handed a message to worker {worker}"),
            Output::Event(e) => {
                let _ = writeln!(self.trace, "{:>10.3} {h} event {}", self.stamp(), describe(&e));
                let host = &mut self.hosts[h];
                host.app.on_event(now, e, &mut host.layer);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Datagram { to, local, from, bytes } => {
                self.hosts[to].layer.handle_datagram(now, local, from, &bytes);
            }
            Delivery::Syn { from, conn, transport, src, dst } => {
                let target = self.hosts.iter().position(|x| {
                    x.ip == dst.ip() && x.listening.iter().any(|&(t, p)| t == transport && p == dst.port())
                });
                let accepted =
                    target.and_then(|t| self.hosts[t].layer.handle_accepted(now, transport, src).map(|c| (t, c)));
                if let Some((t, c)) = accepted {
                    self.pairs.insert((from, conn), (t, c, transport));
                    self.pairs.insert((t, c), (from, conn, transport));
                }
                let at = now + self.delay();
                self.schedule(at, Delivery::Connected { host: from, conn, ok: target.is_some() });
                if target.is_some() && accepted.is_none() {
                    // Accepted by the OS, then closed by the core at once.
                    let at = self.ordered(from, conn);
                    self.schedule(at, Delivery::Fin { host: from, conn });
                }
            }
            Delivery::Connected { host, conn, ok } => {
                if ok {
                    self.hosts[host].layer.handle_connected(now, conn);
                } else {
                    self.hosts[host].layer.handle_connect_failed(now, conn);
                }
            }
            Delivery::Data { host, conn, bytes } => {
                self.segments_delivered += 1;
                self.hosts[host].layer.handle_stream_data(now, conn, &bytes);
            }
            Delivery::Fin { host, conn } => {
                self.pairs.remove(&(host, conn));
                self.hosts[host].layer.handle_closed(now, conn);
            }
        }
    }

    /// The next moment something happens.
    pub fn next_event(&self) -> Option<Instant> {
        let delivery = self.in_flight.keys().next().map(|&(at, _)| at);
        let timers = self.hosts.iter().flat_map(|h| [h.layer.poll_timeout(), h.app.poll_timeout()]).flatten().min();
        match (delivery, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances to the next event; `false` when nothing is left.
    pub fn step(&mut self) -> bool {
        self.flush();
        let Some(at) = self.next_event() else { return false };
        self.now = self.now.max(at);
        while let Some((&(t, seq), _)) = self.in_flight.iter().next() {
            if t > self.now {
                break;
            }
            if let Some(d) = self.in_flight.remove(&(t, seq)) {
                self.deliver(d);
                self.flush();
            }
        }
        let now = self.now;
        for h in &mut self.hosts {
            if h.layer.poll_timeout().is_some_and(|t| t <= now) {
                h.layer.handle_timeout(now);
                assert!(h.layer.poll_timeout().is_none_or(|t| t > now), "stuck transport deadline");
            }
            if h.app.poll_timeout().is_some_and(|t| t <= now) {
                h.app.on_timeout(now, &mut h.layer);
            }
        }
        self.flush();
        true
    }

    /// Runs until `until` (virtual time since the start) or until nothing
    /// is left, at most `max_steps` steps.
    pub fn run_for(&mut self, until: Duration, max_steps: usize) {
        for _ in 0..max_steps {
            match self.next_event() {
                Some(at) if at - self.origin <= until => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(self.origin + until);
                    self.flush();
                    return;
                }
            }
        }
        panic!("network did not settle within {max_steps} steps");
    }
}

/// A one-line description of an event for traces.
pub fn describe(e: &TransportEvent) -> String {
    let first = |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == b'\r').next().unwrap_or_default()).into_owned();
    match e {
        TransportEvent::Request { source, bytes } => {
            format!("request from {} {} [{}] {}", source.remote, source.transport.as_str(), bytes.len(), first(bytes))
        }
        TransportEvent::Response { source, bytes } => {
            format!("response from {} {} [{}] {}", source.remote, source.transport.as_str(), bytes.len(), first(bytes))
        }
        TransportEvent::Closed { reason, .. } => format!("closed {reason:?}"),
        other => format!("{other:?}"),
    }
}
