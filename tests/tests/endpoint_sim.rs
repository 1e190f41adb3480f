//! Two `Endpoint`s wired together in memory (instant delivery, virtual
//! time): MESSAGE over UDP and TCP answered, an unanswered request timing
//! out at 64·T1, a connection to a dead port failing with a typed error,
//! and shutdown failing what is outstanding.

use sipline::endpoint::{Endpoint, EndpointConfig, Event, Output, Request, RequestError};
use sipline::message::Method;
use sipline::transport::{CloseReason, ConnId, Transport};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Wire {
    eps: Vec<Endpoint>,
    listen: Vec<Vec<(Transport, SocketAddr)>>,
    /// Status code each endpoint answers incoming requests with (`None`:
    /// never answers).
    answer: Vec<Option<u16>>,
    events: Vec<Vec<(Instant, Event)>>,
    pairs: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    now: Instant,
}

enum Todo {
    Datagram(SocketAddr, SocketAddr, Vec<u8>),
    Open(usize, ConnId, Transport, SocketAddr),
    Write(usize, ConnId, Vec<u8>),
    Close(usize, ConnId),
}

impl Wire {
    fn new(n: usize, transport: Transport) -> Wire {
        // The application answers MESSAGE itself here (by `answer`).
        Wire::new_with(n, transport, |_, c| c.handle_methods = vec![Method::Message])
    }

    fn new_with(n: usize, transport: Transport, setup: impl Fn(usize, &mut EndpointConfig)) -> Wire {
        let now = Instant::now();
        let mut eps = Vec::new();
        let mut listen = Vec::new();
        for i in 0..n {
            let mut c = EndpointConfig::new(&format!("sip:user{i}@192.0.2.{}", i + 1));
            c.seed = u64::try_from(i).unwrap() + 1;
            setup(i, &mut c);
            let mut ep = Endpoint::new(c).unwrap();
            let addr: SocketAddr = format!("192.0.2.{}:5060", i + 1).parse().unwrap();
            ep.add_listener(transport, addr);
            eps.push(ep);
            listen.push(vec![(transport, addr)]);
        }
        Wire { eps, listen, answer: vec![Some(200); n], events: vec![Vec::new(); n], pairs: BTreeMap::new(), now }
    }

    /// Endpoint `i` also listens over `transport` on its address.
    fn also_listen(&mut self, i: usize, transport: Transport) {
        let addr = self.listen[i][0].1;
        self.eps[i].add_listener(transport, addr);
        self.listen[i].push((transport, addr));
    }

    fn owner(&self, transport: Transport, addr: SocketAddr) -> Option<usize> {
        self.listen.iter().position(|l| l.contains(&(transport, addr)))
    }

    /// Delivers everything until all endpoints are quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut todo = VecDeque::new();
            for i in 0..self.eps.len() {
                while let Some(o) = self.eps[i].poll_output() {
                    match o {
                        Output::Datagram { local, remote, bytes } => {
                            let from = local.unwrap_or(self.listen[i][0].1);
                            todo.push_back(Todo::Datagram(from, remote, bytes.to_vec()));
                        }
                        Output::Open { conn, transport, remote, .. } => {
                            todo.push_back(Todo::Open(i, conn, transport, remote));
                        }
                        Output::Write { conn, bytes } => todo.push_back(Todo::Write(i, conn, bytes)),
                        Output::Close { conn } => todo.push_back(Todo::Close(i, conn)),
                        Output::Event(e @ Event::Incoming { .. }) => {
                            if let (Event::Incoming { incoming, .. }, Some(code)) = (&e, self.answer[i]) {
                                self.eps[i].respond(self.now, *incoming, code, "").unwrap();
                            }
                            self.events[i].push((self.now, e));
                        }
                        Output::Event(e) => self.events[i].push((self.now, e)),
                        Output::Resolve { .. } => {}
                        Output::Worker { .. } => panic!("no endpoint here is one of several workers"),
                    }
                }
            }
            if todo.is_empty() {
                return;
            }
            let now = self.now;
            for t in todo {
                match t {
                    Todo::Datagram(from, to, bytes) => {
                        if let Some(j) = self.owner(Transport::Udp, to) {
                            self.eps[j].handle_datagram(now, to, from, &bytes);
                        }
                    }
                    Todo::Open(i, conn, transport, remote) => match self.owner(transport, remote) {
                        Some(j) => {
                            let from = SocketAddr::new(self.listen[i][0].1.ip(), 40000);
                            if let Some(c) = self.eps[j].handle_accepted(now, transport, from) {
                                self.pairs.insert((i, conn), (j, c));
                                self.pairs.insert((j, c), (i, conn));
                            }
                            self.eps[i].handle_connected(now, conn);
                        }
                        None => self.eps[i].handle_connect_failed(now, conn),
                    },
                    Todo::Write(i, conn, bytes) => {
                        if let Some(&(j, c)) = self.pairs.get(&(i, conn)) {
                            self.eps[j].handle_stream_data(now, c, &bytes);
                        }
                    }
                    Todo::Close(i, conn) => {
                        if let Some((j, c)) = self.pairs.remove(&(i, conn)) {
                            self.pairs.remove(&(j, c));
                            self.eps[j].handle_closed(now, c);
                        }
                    }
                }
            }
        }
        panic!("never settled");
    }

    /// Runs timers until `until` after the start.
    fn run_until(&mut self, until: Instant) {
        self.settle();
        for _ in 0..10_000 {
            let next = self.eps.iter().filter_map(Endpoint::poll_timeout).min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    for ep in &mut self.eps {
                        ep.handle_timeout(self.now);
                        assert!(ep.poll_timeout().is_none_or(|d| d > self.now), "stuck deadline");
                    }
                    self.settle();
                }
                _ => return,
            }
        }
    }

    fn outcomes(&self, i: usize) -> Vec<(Instant, Result<u16, RequestError>)> {
        self.events[i]
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Outcome { result, .. } => Some((*t, result.clone().map(|r| r.code))),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn message_over_udp_and_tcp_is_answered() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut w = Wire::new(2, transport);
        let uri = format!("sip:user1@192.0.2.2;transport={}", transport.as_str().to_lowercase());
        let t0 = w.now;
        w.eps[0].send_request(t0, Request::message(&uri, "text/plain", b"hello".to_vec())).unwrap();
        w.settle();
        assert_eq!(w.outcomes(0), [(t0, Ok(200))], "{transport:?}");
        assert_eq!(w.eps[0].outstanding(), 0);
    }
}

#[test]
fn an_unanswered_request_times_out_at_64_t1() {
    // Nobody at 192.0.2.9: the datagrams vanish.
    let mut w = Wire::new(2, Transport::Udp);
    let t0 = w.now;
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.9", "text/plain", b"?".to_vec())).unwrap();
    w.run_until(t0 + Duration::from_secs(60));
    assert_eq!(w.outcomes(0), [(t0 + Duration::from_secs(32), Err(RequestError::Timeout))]);
}

#[test]
fn a_request_the_application_lets_lie_gets_408_after_answer_within() {
    let mut w = Wire::new(2, Transport::Udp);
    w.answer[1] = None;
    let t0 = w.now;
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2", "text/plain", b"?".to_vec())).unwrap();
    w.run_until(t0 + Duration::from_secs(60));
    let codes: Vec<(Instant, Option<u16>)> = w.events[0]
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Outcome { result: Err(RequestError::Failure(r)), .. } => Some((*t, Some(r.code))),
            Event::Outcome { .. } => Some((*t, None)),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [(t0 + Duration::from_secs(16), Some(408))]);
}

#[test]
fn a_dead_port_fails_with_a_typed_connection_error() {
    let mut w = Wire::new(1, Transport::Tcp);
    let t0 = w.now;
    w.eps[0]
        .send_request(t0, Request::message("sip:nobody@192.0.2.9;transport=tcp", "text/plain", b"x".to_vec()))
        .unwrap();
    w.settle();
    assert_eq!(w.outcomes(0), [(t0, Err(RequestError::ConnectionFailed(CloseReason::ConnectFailed)))]);
}

#[test]
fn shutdown_fails_what_is_outstanding_and_closes_connections() {
    let mut w = Wire::new(2, Transport::Tcp);
    w.answer[1] = None;
    let t0 = w.now;
    for _ in 0..3 {
        w.eps[0]
            .send_request(t0, Request::message("sip:user1@192.0.2.2;transport=tcp", "text/plain", b"x".to_vec()))
            .unwrap();
    }
    w.settle();
    assert_eq!(w.eps[0].outstanding(), 3);
    w.eps[0].shutdown(t0);
    w.settle();
    assert_eq!(w.outcomes(0).len(), 3);
    assert!(w.outcomes(0).iter().all(|(_, r)| *r == Err(RequestError::ShutDown)));
    assert!(matches!(w.events[0].last(), Some((_, Event::ShutDown))));
    assert!(w.eps[0].transport().connections().is_empty());
    assert!(w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2", "text/plain", Vec::new())).is_err());
}

#[test]
fn a_large_request_leaves_udp_for_tcp_18_1_1() {
    let mut w = Wire::new(2, Transport::Udp);
    w.also_listen(0, Transport::Tcp);
    w.also_listen(1, Transport::Tcp);
    let t0 = w.now;
    let big = vec![b'x'; 2000];
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2", "text/plain", big.clone())).unwrap();
    // With `transport=udp` the URI forbids the switch.
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2;transport=udp", "text/plain", big)).unwrap();
    let mut sent = Vec::new();
    while let Some(o) = w.eps[0].poll_output() {
        match o {
            Output::Open { transport, .. } => sent.push(format!("open {transport:?}")),
            Output::Datagram { bytes, .. } => {
                let via = String::from_utf8_lossy(&bytes).lines().nth(1).unwrap_or_default().to_owned();
                sent.push(format!("datagram {}", &via[..16]));
            }
            _ => {}
        }
    }
    assert_eq!(sent, ["open Tcp", "datagram Via: SIP/2.0/UDP"]);
    // Over TCP it is delivered (its Via saying TCP) and answered.
    let mut w = Wire::new(2, Transport::Udp);
    w.also_listen(0, Transport::Tcp);
    w.also_listen(1, Transport::Tcp);
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2", "text/plain", vec![b'y'; 2000])).unwrap();
    w.settle();
    assert_eq!(w.outcomes(0).into_iter().map(|(_, r)| r).collect::<Vec<_>>(), [Ok(200)]);
    let arrived: Vec<_> = w.events[1]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Incoming { source, request, .. } => {
                Some((source.transport, String::from_utf8_lossy(request).contains("Via: SIP/2.0/TCP ")))
            }
            _ => None,
        })
        .collect();
    assert_eq!(arrived, [(Transport::Tcp, true)]);
}

fn response_of(w: &Wire, i: usize) -> Vec<String> {
    w.events[i]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Outcome { result: Ok(r), .. } => Some(String::from_utf8_lossy(&r.bytes).into_owned()),
            Event::Outcome { result: Err(RequestError::Failure(r)), .. } => {
                Some(String::from_utf8_lossy(&r.bytes).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn throttling_holds_requests_beyond_the_limit_and_starts_them_in_order() {
    // 25 requests to nowhere: 20 go at once and time out at 32 s; the other
    // 5 start then, in the order they were sent, and time out at 64 s.
    let mut w = Wire::new_with(1, Transport::Udp, |_, _| {});
    let t0 = w.now;
    let ids: Vec<_> = (0..25)
        .map(|i| {
            let body = format!("{i}").into_bytes();
            w.eps[0].send_request(t0, Request::message("sip:x@192.0.2.9", "text/plain", body)).unwrap()
        })
        .collect();
    w.run_until(t0 + Duration::from_secs(100));
    let ended: BTreeMap<_, _> = w.events[0]
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Outcome { request, .. } => Some((*request, *t - t0)),
            _ => None,
        })
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let expected = Duration::from_secs(if n < 20 { 32 } else { 64 });
        assert_eq!(ended[id], expected, "request {n}");
    }
    // Without a limit, all 25 go at once.
    let mut w = Wire::new_with(1, Transport::Udp, |_, c| c.max_outstanding = None);
    let t0 = w.now;
    for _ in 0..25 {
        w.eps[0].send_request(t0, Request::message("sip:x@192.0.2.9", "text/plain", b"x".to_vec())).unwrap();
    }
    w.run_until(t0 + Duration::from_secs(100));
    assert!(w.outcomes(0).iter().all(|(t, r)| *t == t0 + Duration::from_secs(32) && r.is_err()));
}

#[test]
fn message_both_ways_is_answered_by_the_endpoint_and_reported() {
    let mut w = Wire::new_with(2, Transport::Udp, |_, _| {});
    let t0 = w.now;
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2", "text/plain", b"ping".to_vec())).unwrap();
    w.eps[1].send_request(t0, Request::message("sip:user0@192.0.2.1", "text/plain", b"pong".to_vec())).unwrap();
    w.settle();
    for (i, body) in [(0, b"pong"), (1, b"ping")] {
        assert_eq!(w.outcomes(i), [(t0, Ok(200))]);
        let got: Vec<_> = w.events[i]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Message { from, content_type, body, .. } => {
                    Some((from.clone(), content_type.clone(), body.clone()))
                }
                _ => None,
            })
            .collect();
        let sender = format!("sip:user{}@192.0.2.{}", 1 - i, 2 - i);
        assert_eq!(got, [(sender, Some("text/plain".to_owned()), body.to_vec())]);
    }
}

#[test]
fn options_and_unsupported_requests_are_answered_per_8_2() {
    let mut w = Wire::new_with(2, Transport::Udp, |_, _| {});
    let t0 = w.now;
    w.eps[0].send_request(t0, Request::new(Method::Options, "sip:user1@192.0.2.2")).unwrap();
    w.eps[0].send_request(t0, Request::new(Method::Subscribe, "sip:user1@192.0.2.2")).unwrap();
    let mut required = Request::message("sip:user1@192.0.2.2", "text/plain", b"x".to_vec());
    required.headers.push(("Require".to_owned(), "100rel".to_owned()));
    w.eps[0].send_request(t0, required).unwrap();
    w.eps[0].send_request(t0, Request::message("sip:user1@192.0.2.2", "image/gif", b"GIF89a".to_vec())).unwrap();
    w.settle();
    let responses = response_of(&w, 0);
    assert_eq!(responses.len(), 4);
    let find = |code: &str| responses.iter().find(|r| r.starts_with(&format!("SIP/2.0 {code} "))).unwrap().clone();
    let ok = find("200");
    assert!(ok.contains("\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, PRACK, UPDATE, NOTIFY\r\n"), "{ok}");
    assert!(ok.contains("\r\nAccept: text/plain, application/sdp, message/cpim\r\n"), "{ok}");
    assert!(ok.contains("\r\nSupported: gruu\r\n"), "{ok}");
    assert!(find("405").contains("\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, PRACK, UPDATE, NOTIFY\r\n"));
    assert!(find("420").contains("\r\nUnsupported: 100rel\r\n"));
    assert!(find("415").contains("\r\nAccept: text/plain, application/sdp, message/cpim\r\n"));
    // Nothing reached the application.
    assert!(!w.events[1].iter().any(|(_, e)| matches!(e, Event::Incoming { .. } | Event::Message { .. })));
}
