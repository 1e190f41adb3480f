//! Fuzzes a whole `Endpoint` in the server role (`sipline serve`: registrar
//! and proxy) the way a runtime drives it, with a domain user registered
//! first so that requests reach the location service and get forwarded.
//!
//! The input is a script: each step's first byte picks an input (then a
//! two-byte length and the payload) —
//! a datagram from one of a few peers, a TCP connection accepted, bytes
//! on a connection, the peer closing it, a report on a connection the
//! endpoint asked to open (connected or failed), time passing (a little or
//! a lot) — and the bytes after it are that input's payload. After every
//! input all outputs are drained; an incoming session (an INVITE for the
//! server itself) is rejected, as `serve` does with nobody to answer.
//!
//! Checks: no panic; outputs always drain; after `handle_timeout(t)` the
//! next deadline is later than `t`; and after the script, two hours of
//! time passing leave every table empty (`Endpoint::tables`) — whatever
//! came in, nothing leaks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline::auth::{DigestClient, DigestCredentials, Users};
use sipline::endpoint::{Endpoint, EndpointConfig, Event, Output, ServerConfig, Tables};
use sipline::message::Message;
use sipline::rng::Rng;
use sipline::transport::{ConnId, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.com";

/// bob at 192.0.2.2:5060, registered over UDP (with his digest answer to
/// the 401): a binding the script's requests can reach.
fn register_bob(ep: &mut Endpoint, now: Instant, local: SocketAddr) {
    let bob: SocketAddr = "192.0.2.2:5060".parse().unwrap();
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {bob};branch=z9hG4bK-r{cseq}\r\nMax-Forwards: 70\r\n\
             From: <sip:bob@{DOMAIN}>;tag=b\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: fuzz-reg\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:bob@{bob}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let answer = |ep: &mut Endpoint| {
        let mut last = None;
        while let Some(o) = ep.poll_output() {
            if let Output::Datagram { bytes, .. } = o {
                last = Some(bytes);
            }
        }
        last
    };
    ep.handle_datagram(now, local, bob, register(1, "").as_bytes());
    let Some(challenge) = answer(ep) else { return };
    let Ok(m) = Message::parse(&challenge) else { return };
    let mut client = DigestClient::new(DigestCredentials::new("bob", "bob-pw"));
    let mut rng = Rng::new(3);
    let Ok(auth) = client.authorize_response(&m, "REGISTER", &format!("sip:{DOMAIN}"), &mut rng) else { return };
    let auth: String = auth.iter().flat_map(|(h, v)| [h.as_str(), ": ", v.as_str(), "\r\n"]).collect();
    ep.handle_datagram(now, local, bob, register(2, &auth).as_bytes());
    let ok = answer(ep).is_some_and(|b| b.starts_with(b"SIP/2.0 200"));
    assert!(ok, "bob registered");
}

fn drain(ep: &mut Endpoint, now: Instant, opening: &mut Vec<ConnId>, conns: &mut Vec<ConnId>) {
    for _ in 0..100_000 {
        let Some(o) = ep.poll_output() else { return };
        match o {
            Output::Open { conn, .. } => opening.push(conn),
            Output::Close { conn } => conns.retain(|c| *c != conn),
            Output::Event(Event::IncomingSession { session, .. }) => {
                let _ = ep.reject(now, session, 486, "Busy Here", &[]);
            }
            _ => {}
        }
    }
    panic!("outputs never drained");
}

fuzz_target!(|data: &[u8]| {
    let users = Users::from_passwords([("alice", "alice-pw"), ("bob", "bob-pw")]);
    let mut server = ServerConfig::new(DOMAIN, users);
    server.allow_guests = data.first().is_some_and(|b| b & 1 == 1);
    let mut config = EndpointConfig::new(&format!("sip:server@{DOMAIN}")).serve(server);
    config.seed = 7;
    let Ok(mut ep) = Endpoint::new(config) else { return };
    let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    ep.add_listener(Transport::Udp, local);
    ep.add_listener(Transport::Tcp, local);
    let mut now = Instant::now();
    ep.start(now);
    let (mut opening, mut conns) = (Vec::new(), Vec::new());
    drain(&mut ep, now, &mut opening, &mut conns);
    register_bob(&mut ep, now, local);
    let mut rest = data.get(1..).unwrap_or_default();
    let mut steps = 0;
    // Each step: an opcode byte, a two-byte length (big-endian: a whole
    // message fits one datagram), the payload.
    while let [op, hi, lo, tail @ ..] = rest {
        steps += 1;
        if steps > 256 {
            break;
        }
        let len = &(*lo);
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let remote = SocketAddr::new([192, 0, 2, 2 + (len % 4)].into(), 5060 + u16::from(len % 3));
        let pick = |v: &Vec<ConnId>, k: u8| (!v.is_empty()).then(|| v[usize::from(k) % v.len()]);
        match op % 8 {
            0 | 1 => ep.handle_datagram(now, local, remote, payload),
            2 => {
                if let Some(c) = ep.handle_accepted(now, Transport::Tcp, remote) {
                    conns.push(c);
                }
            }
            3 => {
                if let Some(c) = pick(&conns, *len) {
                    ep.handle_stream_data(now, c, payload);
                }
            }
            4 => {
                if let Some(c) = pick(&conns, *len) {
                    conns.retain(|x| *x != c);
                    ep.handle_closed(now, c);
                }
            }
            5 => {
                if let Some(c) = pick(&opening, *len) {
                    opening.retain(|x| *x != c);
                    if len % 2 == 0 {
                        conns.push(c);
                        ep.handle_connected(now, c);
                    } else {
                        ep.handle_connect_failed(now, c);
                    }
                }
            }
            6 => {
                // A little time: up to 25.5 s.
                now += Duration::from_millis(u64::from(*len) * 100);
                ep.handle_timeout(now);
            }
            _ => {
                // A lot: up to about 70 minutes.
                now += Duration::from_secs(u64::from(*len) * 16);
                ep.handle_timeout(now);
            }
        }
        drain(&mut ep, now, &mut opening, &mut conns);
    }
    // Two hours pass, timer by timer: nothing is left behind.
    let end = now + Duration::from_secs(7200);
    for c in std::mem::take(&mut opening) {
        ep.handle_connect_failed(now, c);
    }
    for _ in 0..100_000 {
        let Some(at) = ep.poll_timeout() else { break };
        if at > end {
            break;
        }
        now = at.max(now);
        ep.handle_timeout(now);
        drain(&mut ep, now, &mut opening, &mut conns);
        for c in std::mem::take(&mut opening) {
            ep.handle_connect_failed(now, c);
        }
        if let Some(next) = ep.poll_timeout() {
            assert!(next > now, "handle_timeout({now:?}) left a deadline at or before it: {next:?}");
        }
    }
    ep.handle_timeout(end);
    drain(&mut ep, end, &mut opening, &mut conns);
    for c in std::mem::take(&mut conns) {
        ep.handle_closed(end, c);
    }
    drain(&mut ep, end, &mut opening, &mut conns);
    assert_eq!(ep.tables(), Tables::default(), "tables left after two idle hours");
});
