//! The cost of TLS in the transport layer: a whole connection (connect,
//! TLS 1.3 handshake — full, or resumed — one MESSAGE through, close)
//! between two `TransportLayer`s in memory, against the same over plain
//! TCP in the same run; and one MESSAGE on an established TLS
//! connection against one on an established TCP connection.
//!
//! Run: `cargo bench -p sipline-tests --bench tls`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sipline::transport::{ConnId, Output, Peer, TlsConfig, Transport, TransportConfig, TransportEvent, TransportLayer};
use sipline_tests::certs::{trusting, Ca, SIM_UNIX_TIME};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGE: &[u8] = b"MESSAGE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag=a1\r\nTo: <sip:bob@192.0.2.2>\r\nCall-ID: bench-1\r\n\
CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

struct Link {
    client: TransportLayer,
    server: TransportLayer,
    peer: Peer,
    now: Instant,
    /// Client conn -> server conn.
    conns: Vec<(ConnId, ConnId)>,
}

impl Link {
    fn new(transport: Transport, client: TlsConfig, server: TlsConfig) -> Link {
        let now = Instant::now();
        let wall = Duration::from_secs(SIM_UNIX_TIME);
        let mut c = TransportLayer::new(TransportConfig { tls: client, ..TransportConfig::default() }, 1).unwrap();
        let mut s = TransportLayer::new(TransportConfig { tls: server, ..TransportConfig::default() }, 2).unwrap();
        c.set_wall_clock(now, wall);
        s.set_wall_clock(now, wall);
        let mut peer = Peer::new(transport, "192.0.2.2:5061".parse().unwrap());
        peer.server_name = Some(Arc::from("bob.example.com"));
        Link { client: c, server: s, peer, now, conns: Vec::new() }
    }

    fn server_conn(&self, c: ConnId) -> Option<ConnId> {
        self.conns.iter().find(|(a, _)| *a == c).map(|&(_, b)| b)
    }

    /// Sends one MESSAGE and shuttles bytes until the server has it.
    fn message(&mut self) {
        let now = self.now;
        self.client.send(now, &self.peer, Arc::from(MESSAGE)).unwrap();
        let mut delivered = false;
        for _ in 0..16 {
            let mut to_server = Vec::new();
            while let Some(o) = self.client.poll_output() {
                match o {
                    Output::Open { conn, transport, .. } => {
                        let s = self.server.handle_accepted(now, transport, "192.0.2.1:40000".parse().unwrap());
                        self.conns.push((conn, s.unwrap()));
                        self.client.handle_connected(now, conn);
                    }
                    Output::Write { conn, bytes } => to_server.push((conn, bytes)),
                    Output::Close { conn } => {
                        if let Some(s) = self.server_conn(conn) {
                            self.server.handle_closed(now, s);
                        }
                        self.conns.retain(|(a, _)| *a != conn);
                    }
                    _ => {}
                }
            }
            for (conn, bytes) in to_server {
                if let Some(s) = self.server_conn(conn) {
                    self.server.handle_stream_data(now, s, &bytes);
                }
            }
            let mut to_client = Vec::new();
            while let Some(o) = self.server.poll_output() {
                match o {
                    Output::Write { conn, bytes } => to_client.push((conn, bytes)),
                    Output::Event(TransportEvent::Request { bytes, .. }) => {
                        black_box(bytes);
                        delivered = true;
                    }
                    _ => {}
                }
            }
            for (conn, bytes) in to_client {
                if let Some(&(c, _)) = self.conns.iter().find(|(_, b)| *b == conn) {
                    self.client.handle_stream_data(now, c, &bytes);
                }
            }
            if delivered && to_quiet(&mut self.client) {
                return;
            }
        }
        panic!("message not delivered");
    }

    /// Closes the client's connection and lets both sides forget it.
    fn close(&mut self) {
        let Some(&(c, s)) = self.conns.first() else { return };
        self.client.close(c);
        while self.client.poll_output().is_some() {}
        self.server.handle_closed(self.now, s);
        while self.server.poll_output().is_some() {}
        self.conns.clear();
    }
}

/// Whether the layer has nothing more to say (drains it).
fn to_quiet(layer: &mut TransportLayer) -> bool {
    let mut quiet = true;
    while let Some(o) = layer.poll_output() {
        if matches!(o, Output::Write { .. }) {
            quiet = false;
        }
    }
    quiet
}

fn tls(c: &mut Criterion) {
    let ca = Ca::new("bench CA");
    let leaf = ca.issue(&["bob.example.com"]);
    let mut g = c.benchmark_group("connection");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp_connect_message_close", |b| {
        let mut link = Link::new(Transport::Tcp, TlsConfig::default(), TlsConfig::default());
        b.iter(|| {
            link.message();
            link.close();
        });
    });
    // A fresh pair of layers each time: a full handshake (certificate
    // chain sent and verified, Ed25519 signature, X25519 key exchange).
    g.bench_function("tls_full_handshake_message_close", |b| {
        b.iter_batched(
            || Link::new(Transport::Tls, trusting(&[&ca]), leaf.tls(&[])),
            |mut link| {
                link.message();
                link.close();
                link
            },
            BatchSize::SmallInput,
        );
    });
    // The same layers again and again: rustls resumes the session (a
    // PSK with a fresh key exchange; no certificates).
    g.bench_function("tls_resumed_handshake_message_close", |b| {
        let mut link = Link::new(Transport::Tls, trusting(&[&ca]), leaf.tls(&[]));
        b.iter(|| {
            link.message();
            link.close();
        });
    });
    g.finish();

    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp_message", |b| {
        let mut link = Link::new(Transport::Tcp, TlsConfig::default(), TlsConfig::default());
        link.message();
        b.iter(|| link.message());
    });
    g.bench_function("tls_message", |b| {
        let mut link = Link::new(Transport::Tls, trusting(&[&ca]), leaf.tls(&[]));
        link.message();
        b.iter(|| link.message());
    });
    g.finish();
}

criterion_group!(benches, tls);
criterion_main!(benches);
