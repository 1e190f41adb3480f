//! Stream connections (`sipline::transport::Connections`): opening and
//! reuse, linger and pinning, framing and keep-alives, and the limits that
//! cut off hostile peers. The addresses are documentation addresses fed to
//! the sans-IO table in memory; nothing touches a network.
// Each test takes one origin from the clock; after that, time moves only
// where the test moves it.
#![allow(clippy::disallowed_methods)]

use sipline::message::FramingError;
use sipline::transport::{CloseReason, ConnectError, ConnectionConfig, Connections, StreamOutput, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MSG: &[u8] =
    b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";

fn origin() -> Instant {
    // The only clock reading; everything after is an offset from it.
    Instant::now()
}

fn peer() -> SocketAddr {
    "192.0.2.1:5060".parse().unwrap()
}

fn drain(c: &mut Connections) -> Vec<StreamOutput> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

#[test]
fn sends_open_queue_and_reuse() {
    let t0 = origin();
    let mut c = Connections::new(ConnectionConfig::default());
    let id = c.send(t0, Transport::Tcp, peer(), None, b"one".to_vec()).unwrap();
    assert_eq!(
        drain(&mut c),
        [StreamOutput::Open { conn: id, transport: Transport::Tcp, remote: peer(), server_name: None }]
    );
    assert_eq!(c.send(t0, Transport::Tcp, peer(), None, b"two".to_vec()).unwrap(), id, "reused while opening");
    assert!(drain(&mut c).is_empty(), "queued until open");
    c.opened(t0, id);
    assert_eq!(
        drain(&mut c),
        [
            StreamOutput::Write { conn: id, bytes: b"one".to_vec() },
            StreamOutput::Write { conn: id, bytes: b"two".to_vec() }
        ]
    );
    assert_eq!(c.send(t0, Transport::Tcp, peer(), None, b"three".to_vec()).unwrap(), id);
    assert_eq!(drain(&mut c), [StreamOutput::Write { conn: id, bytes: b"three".to_vec() }]);
    assert!(matches!(c.send(t0, Transport::Udp, peer(), None, b"x".to_vec()), Err(ConnectError::NotStream(_))));
    // TLS to the same address is another connection.
    let tls = c.send(t0, Transport::Tls, peer(), Some("example.com"), b"x".to_vec()).unwrap();
    assert_ne!(tls, id);
    assert_eq!(c.len(), 2);
}

#[test]
fn ad_hoc_connections_linger_a_minute_pinned_ones_stay() {
    let t0 = origin();
    let s = Duration::from_secs;
    let mut c = Connections::new(ConnectionConfig::default());
    let id = c.send(t0, Transport::Tcp, peer(), None, b"x".to_vec()).unwrap();
    c.opened(t0, id);
    c.send(t0 + s(30), Transport::Tcp, peer(), None, b"y".to_vec()).unwrap();
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + s(90)), "60 s after the last use");
    c.handle_timeout(t0 + s(89));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(t0 + s(90));
    assert_eq!(
        drain(&mut c),
        [StreamOutput::Close { conn: id }, StreamOutput::Closed { conn: id, reason: CloseReason::Idle }]
    );
    assert!(c.is_empty());
    // The next send opens a new connection (the old handle is stale).
    let again = c.send(t0 + s(100), Transport::Tcp, peer(), None, b"z".to_vec()).unwrap();
    assert_ne!(again, id);
    c.opened(t0 + s(100), again);
    c.pin(again);
    drain(&mut c);
    // Pinned: no linger, but the idle limit (15 min) still applies.
    assert_eq!(c.poll_timeout(), Some(t0 + s(100 + 900)));
    c.unpin(t0 + s(200), again);
    assert_eq!(c.poll_timeout(), Some(t0 + s(260)));
    c.set_idle_limit(again, s(10));
    assert_eq!(c.poll_timeout(), Some(t0 + s(210)));
    // Stale handles do nothing.
    assert!(!c.send_on(t0, id, b"late".to_vec()));
    c.received(t0, id, b"junk");
    c.closed(t0, id);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn inbound_messages_are_framed_and_pings_answered() {
    let t0 = origin();
    let mut c = Connections::new(ConnectionConfig::default());
    let id = c.accepted(t0, Transport::Tcp, peer()).unwrap();
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(900)), "inbound: idle limit only");
    // Two messages and a ping, delivered one byte at a time.
    let stream = [MSG, b"\r\n\r\n", MSG].concat();
    for b in &stream {
        c.received(t0, id, std::slice::from_ref(b));
    }
    let out = drain(&mut c);
    let messages: Vec<_> = out.iter().filter(|o| matches!(o, StreamOutput::Message { .. })).collect();
    assert_eq!(messages.len(), 2);
    assert!(out.contains(&StreamOutput::Write { conn: id, bytes: b"\r\n".to_vec() }), "pong");
    match &messages[0] {
        StreamOutput::Message { bytes, remote, transport, .. } => {
            assert_eq!((bytes.as_slice(), *remote, *transport), (MSG, peer(), Transport::Tcp));
        }
        _ => unreachable!(),
    }
    // A framing error closes the connection.
    c.received(t0, id, b"OPTIONS sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n");
    assert_eq!(
        drain(&mut c),
        [
            StreamOutput::Close { conn: id },
            StreamOutput::Closed { conn: id, reason: CloseReason::Framing(FramingError::InvalidContentLength) }
        ]
    );
}

#[test]
fn hostile_streams_are_cut_off() {
    let t0 = origin();
    let limits = ConnectionConfig::default();
    let mut c = Connections::new(limits);
    // A 10 MB header, sent in 64 KiB reads: closed at the message limit.
    let id = c.accepted(t0, Transport::Tcp, peer()).unwrap();
    c.received(t0, id, b"INVITE sip:a SIP/2.0\r\nX: ");
    let chunk = vec![b'a'; 64 * 1024];
    let mut reads = 0;
    while c.find(Transport::Tcp, peer()).is_some() && reads < 160 {
        c.received(t0, id, &chunk);
        reads += 1;
    }
    assert!(reads <= 2, "closed after {reads} reads");
    assert!(drain(&mut c).iter().any(|o| matches!(o, StreamOutput::Closed { reason: CloseReason::Framing(_), .. })));
    // One byte a second: closed when the message timeout runs out.
    let slow = c.accepted(t0, Transport::Tcp, peer()).unwrap();
    for (i, byte) in MSG.iter().take(40).enumerate() {
        let now = t0 + Duration::from_secs(u64::try_from(i).unwrap());
        c.handle_timeout(now);
        if c.find(Transport::Tcp, peer()).is_none() {
            break;
        }
        c.received(now, slow, std::slice::from_ref(byte));
    }
    assert!(drain(&mut c).contains(&StreamOutput::Closed { conn: slow, reason: CloseReason::SlowSender }));
    assert!(c.is_empty());
}

#[test]
fn limits_and_failures() {
    let t0 = origin();
    let mut c = Connections::new(ConnectionConfig { max_connections: 1, ..ConnectionConfig::default() });
    let a = c.send(t0, Transport::Tcp, peer(), None, b"x".to_vec()).unwrap();
    let other: SocketAddr = "192.0.2.9:5060".parse().unwrap();
    assert_eq!(c.send(t0, Transport::Tcp, other, None, b"y".to_vec()), Err(ConnectError::TooMany(b"y".to_vec())));
    assert_eq!(c.accepted(t0, Transport::Tcp, other), None);
    drain(&mut c);
    c.failed(t0, a);
    assert_eq!(drain(&mut c), [StreamOutput::Closed { conn: a, reason: CloseReason::ConnectFailed }]);
    let b = c.accepted(t0, Transport::Tcp, other).unwrap();
    c.closed(t0, b);
    assert_eq!(drain(&mut c), [StreamOutput::Closed { conn: b, reason: CloseReason::Closed }]);
    assert!(c.is_empty());
    assert_eq!(c.poll_timeout(), None);
}
