//! Fuzzes the transport layer's byte inputs the way a runtime drives it.
//!
//! The input is a script: each step's first byte picks an input — a
//! datagram, a connection accepted (TCP or TLS), bytes on a connection,
//! a connect report, a close, time passing, a send (which may open a TCP
//! or TLS connection) — and the bytes after it are that input's payload.
//! After every input all outputs are drained. Checks: no panic; the
//! connection table never exceeds its limit; after `handle_timeout(t)`
//! the next deadline is later than `t`; every connection handle the
//! layer gives out is one it reports on, never an unknown one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline::message::FramingLimits;
use sipline::transport::{
    ConnId, ConnectionConfig, Output, Peer, Transport, TransportConfig, TransportEvent, TransportLayer,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_CONNECTIONS: usize = 4;

fn drain(layer: &mut TransportLayer, conns: &mut Vec<ConnId>) {
    for _ in 0..10_000 {
        let Some(o) = layer.poll_output() else { return };
        match o {
            Output::Open { conn, .. } => conns.push(conn),
            Output::Event(TransportEvent::Closed { conn, .. }) => conns.retain(|c| *c != conn),
            Output::Event(TransportEvent::Request { bytes, .. } | TransportEvent::Response { bytes, .. }) => {
                assert!(!bytes.is_empty());
            }
            _ => {}
        }
    }
    panic!("outputs never drained");
}

fuzz_target!(|data: &[u8]| {
    let config = TransportConfig {
        connections: ConnectionConfig {
            max_connections: MAX_CONNECTIONS,
            framing: FramingLimits { max_message: 2048, max_headers: 32, max_line: 512 },
            ..ConnectionConfig::default()
        },
        ..TransportConfig::default()
    };
    let Ok(mut layer) = TransportLayer::new(config, 1) else { return };
    let mut now = Instant::now();
    layer.set_wall_clock(now, Duration::from_secs(1_795_219_200));
    let local = "192.0.2.1:5060".parse().unwrap();
    layer.add_listener(Transport::Udp, local);
    let mut conns: Vec<ConnId> = Vec::new();
    let mut rest = data;
    let mut steps = 0;
    while let [op, len, tail @ ..] = rest {
        steps += 1;
        if steps > 256 {
            break;
        }
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let pick = |k: usize| if conns.is_empty() { None } else { Some(conns[k % conns.len()]) };
        let remote = std::net::SocketAddr::new([192, 0, 2, 9].into(), 40000 + u16::from(*len % 8));
        match op % 9 {
            0 => layer.handle_datagram(now, local, remote, payload),
            1 | 2 => {
                let t = if op % 9 == 1 { Transport::Tcp } else { Transport::Tls };
                if let Some(c) = layer.handle_accepted(now, t, remote) {
                    conns.push(c);
                }
            }
            3 | 4 => {
                if let Some(c) = pick(usize::from(*len)) {
                    layer.handle_stream_data(now, c, payload);
                }
            }
            5 => {
                if let Some(c) = pick(usize::from(*len)) {
                    if payload.first().is_some_and(|b| b & 1 == 1) {
                        layer.handle_connect_failed(now, c);
                    } else {
                        layer.handle_connected(now, c);
                    }
                }
            }
            6 => {
                if let Some(c) = pick(usize::from(*len)) {
                    layer.handle_closed(now, c);
                }
            }
            7 => {
                let ms = payload.iter().fold(0u64, |a, &b| (a * 7 + u64::from(b)) % 2_000_000);
                now += Duration::from_millis(ms);
                layer.handle_timeout(now);
                drain(&mut layer, &mut conns);
                assert!(layer.poll_timeout().is_none_or(|t| t > now), "stuck deadline");
            }
            _ => {
                let t = match len % 3 {
                    0 => Transport::Udp,
                    1 => Transport::Tcp,
                    _ => Transport::Tls,
                };
                let mut peer = Peer::new(t, remote);
                if t == Transport::Tls {
                    peer.server_name = Some(Arc::from("example.com"));
                }
                let _ = layer.send(now, &peer, Arc::from(payload));
            }
        }
        drain(&mut layer, &mut conns);
        assert!(layer.connections().len() <= MAX_CONNECTIONS, "{} connections", layer.connections().len());
    }
});
