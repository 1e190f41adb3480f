//! Minimal transaction users for simulating the transaction layer: a UAC
//! that starts planned MESSAGE and INVITE transactions and records how each
//! ended, and a UAS that answers them (and retransmits its 2xx to INVITE
//! until the ACK, as RFC 3261 §13.3.1.4 asks of a UAS core).

use crate::sim::{Node, NodeId};
use sipline::message::{Message, Salvaged, StatusCode};
use sipline::transaction::{ClientId, Event, Output, ServerId, TimerConfig, TransactionLayer};
use sipline::transport::Transport;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How a planned client transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The first final response and when it arrived.
    Final(u16, Instant),
    /// Timer B or F fired.
    Timeout(Instant),
}

/// One planned request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// When to send it.
    pub at: Instant,
    /// INVITE or MESSAGE.
    pub method: &'static str,
    /// Its sequence number (also names its Call-ID).
    pub seq: u32,
}

/// The answer the UAS gives: 200 to MESSAGE, and to INVITE 200 for odd
/// CSeq numbers, 486 for even ones.
pub fn expected_code(method: &str, seq: u32) -> u16 {
    if method == "INVITE" && seq % 2 == 0 {
        486
    } else {
        200
    }
}

/// The client side, generic over how peers are named (a simulation node
/// id, or a transport-layer [`sipline::transport::Peer`]).
pub struct Uac<P = NodeId> {
    /// The transaction layer under test.
    pub layer: TransactionLayer<P>,
    peer: P,
    transport: Transport,
    plans: VecDeque<Plan>,
    /// Started transactions: id -> (plan, start time).
    pub started: BTreeMap<ClientId, (Plan, Instant)>,
    /// Outcome per plan sequence number.
    pub outcomes: BTreeMap<u32, Outcome>,
    /// 2xx ACKs the TU sends itself.
    direct: VecDeque<Vec<u8>>,
    events: Vec<String>,
    now: Option<Instant>,
    /// ACKs for 2xx sent by the TU.
    pub acks: u32,
}

impl Uac<NodeId> {
    /// A UAC that will run `plans` (sorted by time) against `peer` over UDP.
    pub fn new(seed: u64, peer: NodeId, plans: Vec<Plan>) -> Self {
        Uac::over(seed, peer, Transport::Udp, plans)
    }
}

impl<P: Clone> Uac<P> {
    /// A UAC that will run `plans` (sorted by time) against `peer` over
    /// `transport` (written in its Via; reliable ones get no retransmits).
    pub fn over(seed: u64, peer: P, transport: Transport, plans: Vec<Plan>) -> Self {
        Uac {
            layer: TransactionLayer::new(TimerConfig::default(), seed),
            peer,
            transport,
            plans: plans.into(),
            started: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            direct: VecDeque::new(),
            events: Vec::new(),
            now: None,
            acks: 0,
        }
    }

    /// Whether every planned request has been sent.
    pub fn all_started(&self) -> bool {
        self.plans.is_empty()
    }

    fn start_due(&mut self, now: Instant) {
        while self.plans.front().is_some_and(|p| p.at <= now) {
            let Some(plan) = self.plans.pop_front() else { break };
            let branch = self.layer.new_branch();
            let req = format!(
                "{m} sip:uas@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/{t} 192.0.2.1:5060;branch={branch}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:uac@192.0.2.1>;tag=u{s}\r\nTo: <sip:uas@192.0.2.2>\r\n\
                 Call-ID: call-{s}\r\nCSeq: {s} {m}\r\nContent-Length: 0\r\n\r\n",
                m = plan.method,
                s = plan.seq,
                t = self.transport.as_str()
            );
            let reliable = self.transport.is_reliable();
            match self.layer.send_request(now, req.into_bytes(), self.peer.clone(), reliable) {
                Ok(id) => {
                    self.started.insert(id, (plan, now));
                }
                Err(e) => panic!("send_request refused a valid request: {e}"),
            }
        }
    }

    /// §13.2.2.4: the UAC core ACKs every 2xx to INVITE itself.
    fn ack_2xx(&mut self, response: &[u8]) {
        let Ok(m) = Message::parse(response) else { return };
        let (Some(Ok(cseq)), Some(to), Some(from), Some(Ok(call_id))) = (
            m.cseq(),
            m.headers().first(sipline::message::HeaderName::To),
            m.headers().first(sipline::message::HeaderName::From),
            m.call_id(),
        ) else {
            return;
        };
        let branch = self.layer.new_branch();
        let ack = format!(
            "ACK sip:uas@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/{t} 192.0.2.1:5060;branch={branch}\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            String::from_utf8_lossy(from.value()),
            String::from_utf8_lossy(to.value()),
            call_id,
            cseq.seq(),
            t = self.transport.as_str()
        );
        self.acks += 1;
        self.direct.push_back(ack.into_bytes());
    }
}

fn status_and_method(bytes: &[u8]) -> Option<(u16, String)> {
    let m = Message::parse(bytes).ok()?;
    Some((m.status()?.as_u16(), m.cseq()?.ok()?.method().as_str().to_owned()))
}

impl Node for Uac<NodeId> {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.on_message(now, bytes, from);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.on_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout()
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.next_transmit()
    }
    fn drain_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }
}

impl<P: Clone> Uac<P> {
    /// A message from `from` arrived.
    pub fn on_message(&mut self, now: Instant, bytes: &[u8], from: P) {
        self.now = Some(now);
        self.layer.handle_message(now, bytes, from, self.transport.is_reliable());
    }
    /// Time passed: start due plans, fire due timers.
    pub fn on_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.start_due(now);
        self.layer.handle_timeout(now);
    }
    /// The next plan or timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        let plan = self.plans.front().map(|p| p.at);
        match (plan, self.layer.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// Events noted since the last call.
    pub fn take_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }
    /// The next message to send, and where.
    pub fn next_transmit(&mut self) -> Option<(P, Vec<u8>)> {
        if let Some(ack) = self.direct.pop_front() {
            return Some((self.peer.clone(), ack));
        }
        loop {
            match self.layer.poll_output()? {
                Output::Transmit { peer, bytes } => return Some((peer, bytes.to_vec())),
                Output::Event(Event::Response { client, response }) => {
                    let Some((code, method)) = status_and_method(&response) else { continue };
                    self.events.push(format!("response {code} {method}"));
                    if code >= 200 {
                        if let Some((plan, _)) = self.started.get(&client) {
                            let (seq, now) = (plan.seq, self.layer_now());
                            self.outcomes.entry(seq).or_insert(Outcome::Final(code, now));
                        }
                    }
                    if method == "INVITE" && (200..300).contains(&code) {
                        self.ack_2xx(&response);
                    }
                }
                Output::Event(Event::StrayResponse { response }) => {
                    if let Some((code, method)) = status_and_method(&response) {
                        self.events.push(format!("stray {code} {method}"));
                        if method == "INVITE" && (200..300).contains(&code) {
                            self.ack_2xx(&response);
                        }
                    }
                }
                Output::Event(Event::Timeout { tx: sipline::transaction::TxId::Client(client) }) => {
                    self.events.push("timeout".to_owned());
                    if let Some((plan, _)) = self.started.get(&client) {
                        let (seq, now) = (plan.seq, self.layer_now());
                        self.outcomes.entry(seq).or_insert(Outcome::Timeout(now));
                    }
                }
                Output::Event(e) => self.events.push(format!("{e:?}").chars().take(40).collect()),
            }
        }
    }
}

impl<P> Uac<P> {
    /// The time of the step being processed (outcomes are stamped with it).
    fn layer_now(&self) -> Instant {
        self.now.unwrap_or_else(|| panic!("an outcome before any input"))
    }
}

/// The server side (generic over peer names, like [`Uac`]).
pub struct Uas<P = NodeId> {
    /// The transaction layer under test.
    pub layer: TransactionLayer<P>,
    /// 2xx being retransmitted until ACKed: Call-ID -> state.
    pub pending_2xx: BTreeMap<String, Retransmit>,
    events: Vec<String>,
    now: Option<Instant>,
    queued: VecDeque<(P, Vec<u8>)>,
    /// Requests answered.
    pub answered: u32,
}

/// A 2xx the UAS core retransmits (§13.3.1.4).
pub struct Retransmit {
    server: ServerId,
    response: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl<P: Clone> Uas<P> {
    /// A UAS.
    pub fn new(seed: u64) -> Self {
        Uas {
            layer: TransactionLayer::new(TimerConfig::default(), seed),
            pending_2xx: BTreeMap::new(),
            events: Vec::new(),
            now: None,
            queued: VecDeque::new(),
            answered: 0,
        }
    }

    fn answer(&mut self, now: Instant, server: ServerId, request: &[u8], merged: bool) {
        let Ok(m) = Message::parse(request) else { return };
        let (Some(method), Some(Ok(cseq)), Some(Ok(call_id))) = (m.method(), m.cseq(), m.call_id()) else { return };
        let code = if merged { 482 } else { expected_code(method.as_str(), cseq.seq()) };
        let mut buf = Vec::new();
        let Some(status) = StatusCode::new(code) else { return };
        if !Salvaged::from_message(&m).write_response(&mut buf, status, "", "uas1") {
            return;
        }
        self.answered += 1;
        if method.as_str() == "INVITE" && code == 200 {
            let t1 = TimerConfig::default().t1;
            self.pending_2xx.insert(
                call_id.as_str().to_owned(),
                Retransmit { server, response: buf.clone(), next: now + t1, interval: t1, give_up: now + t1 * 64 },
            );
        }
        if let Err(e) = self.layer.respond(now, server, buf) {
            panic!("respond refused: {e}");
        }
    }
}

impl Node for Uas<NodeId> {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.on_message(now, bytes, from, false);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.on_timeout(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout()
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.next_transmit()
    }
    fn drain_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }
}

impl<P: Clone> Uas<P> {
    /// A request (or ACK) from `from` arrived.
    pub fn on_message(&mut self, now: Instant, bytes: &[u8], from: P, reliable: bool) {
        self.now = Some(now);
        self.layer.handle_message(now, bytes, from, reliable);
        self.pump(now);
    }
    /// Time passed.
    pub fn on_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.layer.handle_timeout(now);
        let t2 = TimerConfig::default().t2;
        let due: Vec<String> =
            self.pending_2xx.iter().filter(|(_, r)| r.next.min(r.give_up) <= now).map(|(k, _)| k.clone()).collect();
        for k in due {
            let Some(r) = self.pending_2xx.get_mut(&k) else { continue };
            if now >= r.give_up {
                self.pending_2xx.remove(&k);
                continue;
            }
            r.interval = (r.interval * 2).min(t2);
            r.next = now + r.interval;
            let (server, response) = (r.server, r.response.clone());
            // The server transaction may have ended (timer L); then stop.
            if self.layer.respond(now, server, response).is_err() {
                self.pending_2xx.remove(&k);
            }
        }
        self.pump(now);
    }
    /// The next timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        let r = self.pending_2xx.values().map(|r| r.next.min(r.give_up)).min();
        match (r, self.layer.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// The next message to send, and where.
    pub fn next_transmit(&mut self) -> Option<(P, Vec<u8>)> {
        if let Some(now) = self.now {
            self.pump(now);
        }
        self.queued.pop_front()
    }
    /// Events noted since the last call.
    pub fn take_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }

    /// Handles the layer's events right away (answers are immediate), and
    /// keeps transmissions queued for `poll_transmit`.
    fn pump(&mut self, now: Instant) {
        while let Some(o) = self.layer.poll_output() {
            match o {
                Output::Event(Event::Request { server, request, merged }) => {
                    self.events.push(format!("request merged={merged}"));
                    self.answer(now, server, &request, merged);
                }
                Output::Event(Event::Ack { request }) => {
                    if let Ok(m) = Message::parse(&request) {
                        if let Some(Ok(c)) = m.call_id() {
                            self.pending_2xx.remove(c.as_str());
                        }
                    }
                    self.events.push("ack".to_owned());
                }
                Output::Event(e) => self.events.push(format!("{e:?}").chars().take(40).collect()),
                Output::Transmit { peer, bytes } => self.queued.push_back((peer, bytes.to_vec())),
            }
        }
    }
}
