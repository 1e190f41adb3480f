//! Fuzzes a whole `Endpoint` in the user-agent role: a *registered*
//! endpoint (alice, digest credentials, a registrar at 192.0.2.9:5060 over
//! UDP) that also calls, answers, sends MESSAGEs and hangs up — driven by
//! the network and by its application in any order.
//!
//! The input is a script: a first byte (the endpoint's options), then
//! steps, each an opcode byte, a two-byte big-endian length and that many
//! payload bytes. Network steps: a datagram from one of a few peers; an
//! *answer* to the last request the endpoint sent (a response built from
//! it — Via, From, To, Call-ID and CSeq copied, a To tag, a status picked
//! by the payload's first byte, a challenge on 401/407, a Contact on 2xx,
//! and the rest of the payload as extra header lines) so that the fuzzer
//! reaches registered and confirmed states without guessing branches; TCP
//! connections accepted, bytes on them, the peer closing, reports on
//! connections the endpoint opens, time passing. Application steps: send a
//! MESSAGE, place a call, act on a session (hang up, ring, accept, reject,
//! re-INVITE, acknowledge, an INFO in the dialog), answer an incoming
//! request, unregister or register again, shut down; subscribe, unsubscribe,
//! accept/notify/terminate a subscription served (presence), transfer a
//! call (REFER), accept a transfer and report its progress. Option bits
//! also turn on reliable provisionals (RFC 3262) and session timers (RFC
//! 4028).
//!
//! Checks: no panic; outputs always drain; after `handle_timeout(t)` the
//! next deadline is later than `t`; and after the script, a shutdown and
//! two hours of time passing leave every table empty and the endpoint
//! terminated — whatever the network and the application did.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline::auth::DigestCredentials;
use sipline::endpoint::{
    Body, Endpoint, EndpointConfig, EndpointState, Event, IncomingId, Output, PrackMode, RegistrationConfig, Request,
    SessionId, SessionTimerConfig, SubState, Subscribe, SubscriptionId, Tables,
};
use sipline::message::Method;
use sipline::transport::{ConnId, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REGISTRAR: &str = "192.0.2.9:5060";
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 5060);

/// What the script acts on: handles the endpoint gave out.
#[derive(Default)]
struct World {
    opening: Vec<ConnId>,
    conns: Vec<ConnId>,
    sessions: Vec<SessionId>,
    incoming: Vec<IncomingId>,
    /// Subscriptions, either role (ours, and those offered to us).
    subscriptions: Vec<SubscriptionId>,
    /// The last request the endpoint sent: its bytes and where.
    last_request: Option<(Vec<u8>, Sent)>,
}

/// Where the endpoint sent a request.
#[derive(Clone, Copy)]
enum Sent {
    /// A datagram to `.0` from `.1`.
    Udp(SocketAddr, SocketAddr),
    /// On a connection.
    Conn(ConnId),
}

impl World {
    fn drain(&mut self, ep: &mut Endpoint) {
        let trace = std::env::var_os("UA_TRACE").is_some();
        for _ in 0..100_000 {
            let Some(o) = ep.poll_output() else { return };
            if trace {
                // `UA_TRACE=1 ./ua_inputs FILE` shows what a script does.
                eprintln!("{o:?}");
            }
            match o {
                Output::Open { conn, .. } => self.opening.push(conn),
                Output::Close { conn } => self.conns.retain(|c| *c != conn),
                Output::Datagram { bytes, remote, local } if !bytes.starts_with(b"SIP/2.0 ") => {
                    self.last_request = Some((bytes.to_vec(), Sent::Udp(remote, local.unwrap_or(LOCAL))));
                }
                Output::Write { conn, bytes }
                    if bytes.first().is_some_and(u8::is_ascii_uppercase) && !bytes.starts_with(b"SIP/2.0 ") =>
                {
                    self.last_request = Some((bytes, Sent::Conn(conn)));
                }
                Output::Event(Event::IncomingSession { session, .. }) => self.sessions.push(session),
                Output::Event(Event::Incoming { incoming, .. }) => self.incoming.push(incoming),
                Output::Event(Event::IncomingSubscription { subscription, .. } | Event::Refer { subscription, .. }) => {
                    self.subscriptions.push(subscription);
                }
                _ => {}
            }
        }
        panic!("outputs never drained");
    }
}

/// Statuses an answer can carry.
const CODES: [u16; 20] =
    [100, 180, 183, 200, 202, 302, 401, 403, 404, 407, 408, 423, 480, 481, 486, 487, 491, 500, 503, 603];

/// The header name of a line, lower-cased, compact forms expanded.
fn name_of(line: &str) -> String {
    let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
    match name.as_str() {
        "v" => "via".into(),
        "f" => "from".into(),
        "t" => "to".into(),
        "i" => "call-id".into(),
        "m" => "contact".into(),
        _ => name,
    }
}

/// A response to `request` with a status from `payload[0]`; the rest of
/// the payload goes in as header lines.
fn answer(request: &[u8], payload: &[u8]) -> Vec<u8> {
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..head_end]);
    let code = CODES[usize::from(payload.first().copied().unwrap_or(3)) % CODES.len()];
    let mut method = String::new();
    let mut contact = None;
    let mut out = format!("SIP/2.0 {code} Fuzz\r\n");
    for line in head.split("\r\n").skip(1) {
        match name_of(line).as_str() {
            "via" | "from" | "call-id" => out.push_str(&format!("{line}\r\n")),
            "cseq" => {
                method = line.split_whitespace().last().unwrap_or("").to_owned();
                out.push_str(&format!("{line}\r\n"));
            }
            "to" if code > 100 && !line.contains("tag=") => out.push_str(&format!("{line};tag=fz{code}\r\n")),
            "to" => out.push_str(&format!("{line}\r\n")),
            "contact" => contact = line.split_once(':').map(|(_, v)| v.trim().to_owned()),
            _ => {}
        }
    }
    match code {
        401 => out.push_str(
            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n401\", qop=\"auth\", algorithm=MD5\r\n",
        ),
        407 => out.push_str("Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"n407\", algorithm=MD5\r\n"),
        423 => out.push_str("Min-Expires: 120\r\n"),
        302 => out.push_str("Contact: <sip:elsewhere@192.0.2.7:5060>\r\n"),
        200..=299 if method == "REGISTER" => {
            if let Some(c) = contact {
                out.push_str(&format!("Contact: {c};expires=60\r\n"));
            }
        }
        101..=299 if method == "INVITE" => out.push_str("Contact: <sip:peer@192.0.2.9:5060>\r\n"),
        _ => {}
    }
    if let Some(extra) = payload.get(1..).filter(|e| !e.is_empty()) {
        out.push_str(&String::from_utf8_lossy(extra));
        if !extra.ends_with(b"\r\n") {
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

fn pick<T: Copy>(v: &[T], k: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(k) % v.len()])
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, mut rest)) = data.split_first() else { return };
    let mut config = EndpointConfig::new("sip:alice@example.com");
    let mut registration = RegistrationConfig::new(&format!("sip:{REGISTRAR}"));
    registration.expires = 60 + u32::from(options >> 4) * 60;
    config.registration = Some(registration);
    config.credentials.push(DigestCredentials::new("alice", "alice-pw"));
    if options & 1 == 1 {
        config.outbound_proxy = Some(format!("sip:{REGISTRAR};lr"));
    }
    if options & 2 == 2 {
        config.default_transport = Transport::Tcp;
    }
    if options & 4 == 4 {
        config.prack = if options & 8 == 8 { PrackMode::Required } else { PrackMode::Supported };
    }
    if options & 8 == 8 {
        config.session_timers = Some(SessionTimerConfig::new(90 + u32::from(options >> 4) * 30, 90));
    }
    config.events = vec!["presence".to_owned(), "refer".to_owned()];
    config.seed = u64::from(options);
    let Ok(mut ep) = Endpoint::new(config) else { return };
    let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    ep.add_listener(Transport::Udp, local);
    ep.add_listener(Transport::Tcp, local);
    let mut now = Instant::now();
    let mut w = World::default();
    ep.start(now);
    w.drain(&mut ep);
    let mut steps = 0;
    while let [op, hi, lo, tail @ ..] = rest {
        steps += 1;
        if steps > 256 {
            break;
        }
        let k = *lo;
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let peer = SocketAddr::new([192, 0, 2, 6 + (k % 4)].into(), 5060 + u16::from(k % 3));
        let first = payload.first().copied().unwrap_or(0);
        match op % 16 {
            0 => ep.handle_datagram(now, local, peer, payload),
            1 => ep.handle_datagram(now, local, REGISTRAR.parse().unwrap(), payload),
            2 => match w.last_request.clone() {
                Some((request, Sent::Udp(to, from))) => ep.handle_datagram(now, from, to, &answer(&request, payload)),
                Some((request, Sent::Conn(c))) => ep.handle_stream_data(now, c, &answer(&request, payload)),
                None => {}
            },
            3 => {
                if let Some(c) = ep.handle_accepted(now, Transport::Tcp, peer) {
                    w.conns.push(c);
                }
            }
            4 => {
                if let Some(c) = pick(&w.conns, k) {
                    ep.handle_stream_data(now, c, payload);
                }
            }
            5 => {
                if let Some(c) = pick(&w.conns, k) {
                    w.conns.retain(|x| *x != c);
                    ep.handle_closed(now, c);
                }
            }
            6 => {
                if let Some(c) = pick(&w.opening, k) {
                    w.opening.retain(|x| *x != c);
                    if k % 2 == 0 {
                        w.conns.push(c);
                        ep.handle_connected(now, c);
                    } else {
                        ep.handle_connect_failed(now, c);
                    }
                }
            }
            7 => {
                // A little time: up to 25.5 s.
                now += Duration::from_millis(u64::from(k) * 100);
                ep.handle_timeout(now);
            }
            8 => {
                // A lot: up to about 70 minutes.
                now += Duration::from_secs(u64::from(k) * 16);
                ep.handle_timeout(now);
            }
            9 => {
                let to = if first % 2 == 0 { "sip:bob@example.com" } else { "sip:carol@192.0.2.7:5070" };
                let _ = ep.send_request(now, Request::message(to, "text/plain", payload.to_vec()));
            }
            10 => {
                let to = if first % 2 == 0 { "sip:bob@example.com" } else { "sip:carol@192.0.2.7;transport=tcp" };
                if let Ok(s) = ep.invite(now, Request::invite(to, "application/sdp", payload.to_vec())) {
                    w.sessions.push(s);
                }
            }
            11 => {
                let Some(s) = pick(&w.sessions, k) else { continue };
                let body = Body::sdp(payload.get(1..).unwrap_or_default().to_vec());
                let _ = match first % 8 {
                    0 => ep.hangup(now, s),
                    1 => ep.ring(now, s, 180, None),
                    2 => ep.accept(now, s, Some(&body)),
                    3 => ep.reject(now, s, 486, "Busy Here", &[]),
                    4 => ep.reinvite(now, s, Some(body)),
                    5 => ep.acknowledge(now, s, None),
                    6 => ep.send_in_session(now, s, Request::new(Method::Info, "sip:ignored")).map(|_| ()),
                    _ => ep.ring(now, s, 183, Some(&body)),
                };
            }
            12 => {
                if let Some(i) = pick(&w.incoming, k) {
                    w.incoming.retain(|x| *x != i);
                    let code = CODES[usize::from(first) % CODES.len()].max(200);
                    let _ = ep.respond(now, i, code, "Fuzz");
                }
            }
            13 => {
                if first % 2 == 0 {
                    ep.unregister(now);
                } else {
                    ep.reregister(now);
                }
            }
            14 if first % 4 == 0 => ep.shutdown(now),
            14 => {
                if let Some(s) = pick(&w.sessions, k) {
                    let _ = ep.hangup(now, s);
                }
            }
            _ => {
                // Subscriptions and transfer (RFC 6665, RFC 3515).
                let body = Some(Body::new("application/pidf+xml", payload.get(1..).unwrap_or_default().to_vec()));
                let sub = pick(&w.subscriptions, k);
                let _ = match (first % 8, sub) {
                    (0, _) => {
                        let to = if first % 16 < 8 { "sip:bob@example.com" } else { "sip:carol@192.0.2.7:5070" };
                        let mut s = Subscribe::new(to, if first % 32 < 16 { "presence" } else { "reg" });
                        s.expires = u32::from(k);
                        if let Ok(id) = ep.subscribe(now, s) {
                            w.subscriptions.push(id);
                        }
                        Ok(())
                    }
                    (1, Some(s)) => ep.unsubscribe(now, s),
                    (2, Some(s)) => ep.accept_subscription(now, s, SubState::Active, body),
                    (3, Some(s)) => ep.notify(now, s, SubState::Pending, body),
                    (4, Some(s)) => ep.terminate_subscription(now, s, "noresource", body),
                    (5, _) => match pick(&w.sessions, k) {
                        Some(call) => ep.refer(now, call, "sip:carol@192.0.2.7:5070").map(|id| w.subscriptions.push(id)),
                        None => Ok(()),
                    },
                    (6, Some(s)) => ep.accept_refer(now, s),
                    (7, Some(s)) => ep.refer_progress(now, s, CODES[usize::from(k) % CODES.len()], "Fuzz"),
                    (_, Some(s)) => ep.reject_subscription(now, s, 603, "Decline"),
                    (_, None) => Ok(()),
                };
            }
        }
        w.drain(&mut ep);
    }
    // Shut down; two hours pass, timer by timer: nothing is left behind.
    ep.shutdown(now);
    w.drain(&mut ep);
    let end = now + Duration::from_secs(7200);
    for _ in 0..100_000 {
        for c in std::mem::take(&mut w.opening) {
            ep.handle_connect_failed(now, c);
        }
        w.drain(&mut ep);
        let Some(at) = ep.poll_timeout() else { break };
        if at > end {
            break;
        }
        now = at.max(now);
        ep.handle_timeout(now);
        w.drain(&mut ep);
        if let Some(next) = ep.poll_timeout() {
            assert!(next > now, "handle_timeout({now:?}) left a deadline at or before it: {next:?}");
        }
    }
    ep.handle_timeout(end);
    w.drain(&mut ep);
    for c in std::mem::take(&mut w.conns) {
        ep.handle_closed(end, c);
    }
    w.drain(&mut ep);
    assert_eq!(ep.state(), EndpointState::Terminated, "not terminated two hours after shutdown");
    assert_eq!(ep.tables(), Tables::default(), "tables left two hours after shutdown");
});
