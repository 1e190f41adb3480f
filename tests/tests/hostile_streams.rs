//! Stream peers that try to hurt us: a 10 MB header (over TCP and over
//! TLS) and a sender that trickles one byte a second. Both are cut off,
//! and the memory the core holds never passes its framing limit plus one
//! intake chunk (measured with a counting allocator).

use sipline::message::FramingLimits;
use sipline::transport::{
    CloseReason, ConnId, ConnectionConfig, Output, Peer, Transport, TransportConfig, TransportEvent, TransportLayer,
    INTAKE_CHUNK,
};
use sipline_tests::certs::{trusting, Ca, SIM_UNIX_TIME};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TEN_MB: usize = 10 * 1024 * 1024;

/// The allocator counts every thread: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remote() -> std::net::SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

/// Drains outputs; returns the close reason if the connection closed.
fn drain(layer: &mut TransportLayer) -> Option<CloseReason> {
    let mut closed = None;
    while let Some(o) = layer.poll_output() {
        if let Output::Event(TransportEvent::Closed { reason, .. }) = o {
            closed = Some(reason);
        }
    }
    closed
}

/// Feeds `bytes` in 64 KiB reads until the connection closes; returns the
/// reads it took, an upper bound of the memory the core held at any point
/// (what it held before a read plus everything that read allocated; the
/// counting allocator counts a realloc's growth as allocated), and the
/// close reason.
fn flood(layer: &mut TransportLayer, now: Instant, conn: ConnId, bytes: &[u8]) -> (usize, i64, Option<CloseReason>) {
    let region = Region::new(GLOBAL);
    let mut peak = 0;
    for (i, read) in bytes.chunks(64 * 1024).enumerate() {
        let before = region.change();
        layer.handle_stream_data(now, conn, read);
        let after = region.change();
        let held_before =
            i64::try_from(before.bytes_allocated).unwrap() - i64::try_from(before.bytes_deallocated).unwrap();
        let grown = i64::try_from(after.bytes_allocated - before.bytes_allocated).unwrap();
        peak = peak.max(held_before + grown);
        let closed = drain(layer);
        if closed.is_some() {
            return (i + 1, peak, closed);
        }
    }
    (usize::MAX, peak, None)
}

/// A header section that never ends: 4000-octet lines (each under the
/// line limit), 10 MB of them.
fn ten_mb_header() -> Vec<u8> {
    let mut m = b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\n".to_vec();
    let line = format!("X-Flood: {}\r\n", "a".repeat(3988));
    while m.len() < TEN_MB {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

/// What a plaintext connection may hold: the largest message plus one
/// intake chunk, plus 4 KiB for the connection's own bookkeeping.
fn limit() -> i64 {
    let framing = FramingLimits::default();
    i64::try_from(framing.max_message + INTAKE_CHUNK + 4096).unwrap()
}

/// A TLS connection adds rustls' buffers: a 64 KiB read decrypts into up to
/// four 16 KiB plaintext records (freed as they are read out, but counted
/// here as allocated), one record being deframed, and the session itself.
fn tls_limit() -> i64 {
    limit() + 96 * 1024
}

#[test]
fn a_ten_megabyte_header_over_tcp_is_cut_off_within_the_limit() {
    let _turn = serial();
    let now = Instant::now();
    let mut layer = TransportLayer::new(TransportConfig::default(), 1).unwrap();
    let conn = layer.handle_accepted(now, Transport::Tcp, remote()).unwrap();
    let flood_bytes = ten_mb_header();
    let (reads, peak, reason) = flood(&mut layer, now, conn, &flood_bytes);
    assert!(matches!(reason, Some(CloseReason::Framing(_))), "{reason:?}");
    eprintln!("tcp: cut off after {reads} reads, peak held {peak} bytes (limit {})", limit());
    assert!(reads <= 2, "cut off after {reads} reads of 64 KiB");
    assert!(peak <= limit(), "held {peak} bytes, limit {}", limit());
    assert!(layer.connections().is_empty());

    // All 10 MB handed over in one call: taken a chunk at a time, so the
    // core allocates no more than the limit allows in total.
    let conn = layer.handle_accepted(now, Transport::Tcp, remote()).unwrap();
    let region = Region::new(GLOBAL);
    layer.handle_stream_data(now, conn, &flood_bytes);
    let c = region.change();
    let allocated = i64::try_from(c.bytes_allocated).unwrap();
    assert!(matches!(drain(&mut layer), Some(CloseReason::Framing(_))));
    eprintln!("tcp, one 10 MB call: {allocated} bytes allocated in total");
    assert!(allocated <= limit(), "allocated {allocated} bytes in one call");
}

#[test]
fn a_ten_megabyte_header_over_tls_is_cut_off_within_the_limit() {
    let _turn = serial();
    let now = Instant::now();
    let ca = Ca::new("hostile CA");
    let server_tls = ca.issue(&["bob.example.com"]).tls(&[]);
    let wall = Duration::from_secs(SIM_UNIX_TIME);
    let mut server = TransportLayer::new(TransportConfig { tls: server_tls, ..TransportConfig::default() }, 1).unwrap();
    server.set_wall_clock(now, wall);
    let mut client =
        TransportLayer::new(TransportConfig { tls: trusting(&[&ca]), ..TransportConfig::default() }, 2).unwrap();
    client.set_wall_clock(now, wall);

    // The attacker: a client that sends a 10 MB header through TLS.
    let mut peer = Peer::new(Transport::Tls, "192.0.2.2:5061".parse().unwrap());
    peer.server_name = Some("bob.example.com".into());
    let c = client.send(now, &peer, ten_mb_header().into()).unwrap().unwrap();
    let s = server.handle_accepted(now, Transport::Tls, remote()).unwrap();
    client.handle_connected(now, c);
    // Shuttle the handshake until the client has written its ciphertext.
    let mut cipher = Vec::new();
    for _ in 0..10 {
        while let Some(o) = client.poll_output() {
            if let Output::Write { bytes, .. } = o {
                cipher.extend_from_slice(&bytes);
            }
        }
        if cipher.len() > TEN_MB {
            break;
        }
        server.handle_stream_data(now, s, &std::mem::take(&mut cipher));
        while let Some(o) = server.poll_output() {
            if let Output::Write { bytes, .. } = o {
                client.handle_stream_data(now, c, &bytes);
            }
        }
    }
    assert!(cipher.len() > TEN_MB, "the flood is encrypted: {} bytes", cipher.len());
    let (reads, peak, reason) = flood(&mut server, now, s, &cipher);
    assert!(matches!(reason, Some(CloseReason::Framing(_))), "{reason:?}");
    assert!(reads <= 2, "cut off after {reads} reads of 64 KiB");
    eprintln!("tls: cut off after {reads} reads, peak held {peak} bytes (limit {})", tls_limit());
    assert!(peak <= tls_limit(), "held {peak} bytes, limit {}", tls_limit());
}

#[test]
fn one_byte_a_second_is_cut_off_at_the_message_timeout_exactly() {
    let _turn = serial();
    let t0 = Instant::now();
    let timeout = Duration::from_secs(32);
    let config = TransportConfig {
        connections: ConnectionConfig { message_timeout: timeout, ..ConnectionConfig::default() },
        ..TransportConfig::default()
    };
    let mut layer = TransportLayer::new(config, 1).unwrap();
    let conn = layer.handle_accepted(t0, Transport::Tcp, remote()).unwrap();
    let message = b"OPTIONS sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.7;branch=z9hG4bK1\r\n\r\n";
    let mut closed_at = None;
    for (i, byte) in message.iter().enumerate() {
        let now = t0 + Duration::from_secs(u64::try_from(i).unwrap());
        // The runtime sleeps until poll_timeout; the byte comes later.
        while let Some(due) = layer.poll_timeout().filter(|&d| d <= now) {
            layer.handle_timeout(due);
            if let Some(reason) = drain(&mut layer) {
                closed_at = Some((due, reason));
            }
        }
        if closed_at.is_some() {
            break;
        }
        layer.handle_stream_data(now, conn, std::slice::from_ref(byte));
        drain(&mut layer);
    }
    assert_eq!(closed_at, Some((t0 + timeout, CloseReason::SlowSender)));
    assert!(layer.connections().is_empty());
}
