//! Whole transport layers over a simulated network: TCP and TLS framing
//! across any segmentation, connection reuse, exact idle expiry, reconnect
//! after a drop, mutual TLS with good, missing, untrusted and expired
//! certificates, and transactions over UDP, TCP and TLS replayed from one
//! seed. Seeds: `SIPLINE_SEED=n` (one) or `SIPLINE_SEEDS=n` (`0..n`).

use sipline::transport::{
    CloseReason, ConnectionConfig, Peer, TlsConfig, TlsFailure, Transport, TransportConfig, TransportEvent,
    TransportLayer,
};
use sipline_tests::certs::{trusting, Ca, SIM_UNIX_TIME};
use sipline_tests::net::{Net, Recorder, Segments};
use sipline_tests::sim::{for_each_seed, LinkConfig};
use sipline_tests::stack::Stack;
use sipline_tests::tu::{expected_code, Outcome, Plan, Uac, Uas};
use std::time::{Duration, Instant};

fn origin() -> Instant {
    Instant::now()
}

fn layer(config: TransportConfig, seed: u64, now: Instant) -> TransportLayer {
    let mut l = TransportLayer::new(config, seed).expect("valid config");
    l.set_wall_clock(now, Duration::from_secs(SIM_UNIX_TIME));
    l
}

fn tls_config(tls: TlsConfig) -> TransportConfig {
    TransportConfig { tls, ..TransportConfig::default() }
}

fn message(n: u32, transport: Transport) -> Vec<u8> {
    let body = "x".repeat(usize::try_from(n * 7).unwrap());
    format!(
        "MESSAGE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/{t} 192.0.2.1:5060;branch=z9hG4bK-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag=a{n}\r\nTo: <sip:bob@192.0.2.2>\r\n\
         Call-ID: m{n}\r\nCSeq: {n} MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        t = transport.as_str()
    )
    .into_bytes()
}

/// Two hosts: 0 sends, 1 listens on 5060 (TCP/UDP) and 5061 (TLS).
fn pair(a: TransportConfig, b: TransportConfig, segments: Segments, seed: u64) -> Net<Recorder> {
    let t0 = origin();
    let hosts = vec![(layer(a, seed, t0), Recorder::default()), (layer(b, seed + 1, t0), Recorder::default())];
    let mut net = Net::new(hosts, LinkConfig::default(), segments, seed, t0);
    for t in [Transport::Udp, Transport::Tcp] {
        net.listen(1, t, 5060);
    }
    net.listen(1, Transport::Tls, 5061);
    net
}

fn send(net: &mut Net<Recorder>, transport: Transport, bytes: Vec<u8>) {
    let port = if transport == Transport::Tls { 5061 } else { 5060 };
    let mut peer = Peer::new(transport, net.addr(1, port));
    if transport == Transport::Tls {
        peer.server_name = Some("bob.example.com".into());
    }
    net.with(0, |now, h| h.layer.send(now, &peer, bytes.into()).expect("send"));
}

/// The request as the receiver must see it: the top Via stamped with
/// `received` (the sent-by is 192.0.2.1:5060, the connection comes from
/// an ephemeral port, the address is the same — so nothing changes).
fn assert_requests(net: &Net<Recorder>, sent: &[Vec<u8>]) {
    let got = net.hosts[1].app.requests();
    assert_eq!(got.len(), sent.len(), "requests delivered");
    for (g, s) in got.iter().zip(sent) {
        assert_eq!(g.as_bytes(), &s[..]);
    }
}

#[test]
fn tcp_framing_survives_any_segmentation() {
    for segments in
        [Segments::Whole, Segments::Fixed(1), Segments::Fixed(3), Segments::Random(40), Segments::Random(900)]
    {
        for_each_seed(8, |seed| {
            let mut net = pair(TransportConfig::default(), TransportConfig::default(), segments, seed);
            let sent: Vec<Vec<u8>> = (1..=5).map(|n| message(n, Transport::Tcp)).collect();
            // Two messages in one write (one segment with `Whole`), then
            // three more, one write each.
            send(&mut net, Transport::Tcp, [sent[0].clone(), sent[1].clone()].concat());
            for m in &sent[2..] {
                send(&mut net, Transport::Tcp, m.clone());
            }
            net.run_for(Duration::from_secs(5), 1_000_000);
            assert_requests(&net, &sent);
            if segments == Segments::Fixed(1) {
                let total: usize = sent.iter().map(Vec::len).sum();
                assert_eq!(net.segments_delivered, u64::try_from(total).unwrap(), "one byte per segment");
            }
            // One connection carried everything (reuse, §18.1.1 / DESIGN).
            assert_eq!(net.trace().matches(" open TCP ").count(), 1, "{segments:?}");
            assert_eq!(net.hosts[1].layer.connections().len(), 1);
        });
    }
}

#[test]
fn udp_requests_are_stamped_and_answered_400_when_unparseable() {
    let mut net = pair(TransportConfig::default(), TransportConfig::default(), Segments::Whole, 1);
    let m = message(1, Transport::Udp);
    send(&mut net, Transport::Udp, m.clone());
    // A request with a broken header the receiver can still answer.
    let broken = String::from_utf8(message(2, Transport::Udp))
        .unwrap()
        .replace("CSeq: 2 MESSAGE", "CSeq: 2 MESSAGE\r\nthis line has no colon");
    send(&mut net, Transport::Udp, broken.into_bytes());
    net.run_for(Duration::from_secs(2), 10_000);
    assert_requests(&net, &[m]);
    let stats = net.hosts[1].layer.stats();
    assert_eq!((stats.malformed, stats.answered_400), (1, 1));
    // The 400 went back to the sender (its sent-by: 192.0.2.1:5060).
    let responses: Vec<_> = net.hosts[0]
        .app
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            TransportEvent::Response { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), 1);
    assert!(responses[0].starts_with("SIP/2.0 400 "), "{}", responses[0]);
    assert!(responses[0].contains("CSeq: 2 MESSAGE"));
}

#[test]
fn ad_hoc_connection_closes_at_linger_and_inbound_at_idle_limit_exactly() {
    let linger = Duration::from_secs(45);
    let idle = Duration::from_secs(100);
    let a = TransportConfig {
        connections: ConnectionConfig { linger, ..ConnectionConfig::default() },
        ..TransportConfig::default()
    };
    let b = TransportConfig {
        connections: ConnectionConfig { idle_limit: idle, ..ConnectionConfig::default() },
        ..TransportConfig::default()
    };
    let mut net = pair(a.clone(), b.clone(), Segments::Whole, 3);
    let t0 = net.now();
    send(&mut net, Transport::Tcp, message(1, Transport::Tcp));
    net.run_for(Duration::from_secs(400), 10_000);
    // The sender's write happened at t0 (queued until connected at +40 ms,
    // which counts as a use): it closes `linger` after that.
    let closes = net.hosts[0].app.closes();
    assert_eq!(closes, [(t0 + Duration::from_millis(40) + linger, CloseReason::Idle)]);
    // The receiver hears the close 20 ms later.
    assert_eq!(net.hosts[1].app.closes(), [(t0 + Duration::from_millis(60) + linger, CloseReason::Closed)]);

    // Pinned, the sender keeps it; the receiver's idle limit ends it,
    // exactly `idle` after the last byte arrived (t0 + 60 ms).
    let mut net = pair(a, b, Segments::Whole, 4);
    let t0 = net.now();
    send(&mut net, Transport::Tcp, message(1, Transport::Tcp));
    let conn = net.hosts[0].layer.connections().find(Transport::Tcp, net.addr(1, 5060)).unwrap();
    net.with(0, |_, h| h.layer.pin(conn));
    net.run_for(Duration::from_secs(400), 10_000);
    assert_eq!(net.hosts[1].app.closes(), [(t0 + Duration::from_millis(60) + idle, CloseReason::Idle)]);
    assert_eq!(net.hosts[0].app.closes(), [(t0 + Duration::from_millis(80) + idle, CloseReason::Closed)]);
}

#[test]
fn a_dropped_connection_is_reported_and_the_next_send_reconnects() {
    let mut net = pair(TransportConfig::default(), TransportConfig::default(), Segments::Random(50), 5);
    send(&mut net, Transport::Tcp, message(1, Transport::Tcp));
    net.run_for(Duration::from_secs(1), 10_000);
    let conn = net.hosts[0].layer.connections().find(Transport::Tcp, net.addr(1, 5060)).unwrap();
    net.sever(0, conn);
    assert_eq!(net.hosts[0].app.closes().len(), 1);
    assert_eq!(net.hosts[1].app.closes().len(), 1);
    assert!(net.hosts[0].layer.connections().is_empty());
    send(&mut net, Transport::Tcp, message(2, Transport::Tcp));
    net.run_for(Duration::from_secs(2), 10_000);
    assert_eq!(net.trace().matches(" open TCP ").count(), 2);
    assert_requests(&net, &[message(1, Transport::Tcp), message(2, Transport::Tcp)]);
    // Nobody listening: the connect fails and is reported.
    let peer = Peer::new(Transport::Tcp, net.addr(1, 5999));
    net.with(0, |now, h| h.layer.send(now, &peer, message(3, Transport::Tcp).into()).unwrap());
    net.run_for(Duration::from_secs(3), 10_000);
    assert_eq!(net.hosts[0].app.closes().last().map(|c| c.1.clone()), Some(CloseReason::ConnectFailed));
}

#[test]
fn responses_go_back_on_the_connection_or_to_the_sent_by_port_18_2_2() {
    let mut net = pair(TransportConfig::default(), TransportConfig::default(), Segments::Whole, 11);
    net.listen(0, Transport::Tcp, 5060);
    let ok = |n: u32| {
        let m = String::from_utf8(message(n, Transport::Tcp)).unwrap();
        let via = m.lines().find(|l| l.starts_with("Via:")).unwrap().to_owned();
        format!(
            "SIP/2.0 200 OK\r\n{via}\r\nFrom: <sip:alice@192.0.2.1>;tag=a{n}\r\nTo: <sip:bob@192.0.2.2>;tag=b\r\n\
             Call-ID: m{n}\r\nCSeq: {n} MESSAGE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let respond = |net: &mut Net<Recorder>, index: usize, response: Vec<u8>| {
        let (source, request) = net.hosts[1]
            .app
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                TransportEvent::Request { source, bytes } => Some((*source, bytes.clone())),
                _ => None,
            })
            .nth(index)
            .unwrap();
        let peer = Peer::reply_to(&source, &request);
        net.with(1, |now, h| h.layer.send(now, &peer, response.into()).unwrap());
        net.run_for(net.elapsed() + Duration::from_secs(1), 10_000);
    };
    send(&mut net, Transport::Tcp, message(1, Transport::Tcp));
    net.run_for(Duration::from_secs(1), 10_000);
    // While the request's connection is open, the response takes it.
    respond(&mut net, 0, ok(1));
    assert_eq!(net.trace().matches(" open TCP ").count(), 1);
    // The connection drops before the next answer: a new connection goes
    // to the sent-by address (192.0.2.1:5060, where host 0 listens).
    send(&mut net, Transport::Tcp, message(2, Transport::Tcp));
    net.run_for(net.elapsed() + Duration::from_secs(1), 10_000);
    let conn = net.hosts[0].layer.connections().find(Transport::Tcp, net.addr(1, 5060)).unwrap();
    net.sever(0, conn);
    respond(&mut net, 1, ok(2));
    assert!(net.trace().contains(" 1 open TCP 192.0.2.2:40000->192.0.2.1:5060 "), "{}", net.trace());
    let responses: Vec<_> = net.hosts[0]
        .app
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            TransportEvent::Response { source, .. } => Some(source.conn.is_some()),
            _ => None,
        })
        .collect();
    assert_eq!(responses, [true, true]);
}

#[test]
fn large_requests_go_over_tcp_unless_the_uri_says_udp_18_1_1() {
    use sipline::message::Uri;
    use sipline::transport::{target_for, transport_for_size};
    for (uri, expected) in [("sip:bob@192.0.2.2", Transport::Tcp), ("sip:bob@192.0.2.2;transport=udp", Transport::Udp)]
    {
        let parsed = Uri::parse(uri).unwrap();
        let target = target_for(&parsed, Transport::Udp).unwrap();
        let forced = parsed.as_sip().unwrap().transport().is_some();
        // A 2 000-octet request: over the 1 300 that §18.1.1 allows on UDP.
        let big = message(260, Transport::Udp);
        assert!(big.len() > 1300);
        let transport = transport_for_size(target.transport, forced, big.len());
        assert_eq!(transport, expected, "{uri}");
        // The Via names the transport the request really takes.
        let request =
            String::from_utf8(big).unwrap().replace("SIP/2.0/UDP", &format!("SIP/2.0/{}", transport.as_str()));
        let mut net = pair(TransportConfig::default(), TransportConfig::default(), Segments::Random(1000), 12);
        let peer = Peer::new(transport, target.socket_addr().unwrap());
        net.with(0, |now, h| h.layer.send(now, &peer, request.clone().into_bytes().into()).unwrap());
        net.run_for(Duration::from_secs(1), 10_000);
        let got: Vec<_> = net.hosts[1]
            .app
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                TransportEvent::Request { source, bytes } => Some((source.transport, bytes.len())),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(expected, request.len())], "{uri}");
    }
}

#[test]
fn tls_handshake_then_messages_in_any_segmentation() {
    let ca = Ca::new("sim CA");
    let server = ca.issue(&["bob.example.com"]);
    for segments in [Segments::Whole, Segments::Fixed(1), Segments::Random(100)] {
        let mut net = pair(tls_config(trusting(&[&ca])), tls_config(server.tls(&[])), segments, 6);
        let sent: Vec<Vec<u8>> = (1..=4).map(|n| message(n, Transport::Tls)).collect();
        send(&mut net, Transport::Tls, [sent[0].clone(), sent[1].clone()].concat());
        send(&mut net, Transport::Tls, sent[2].clone());
        send(&mut net, Transport::Tls, sent[3].clone());
        net.run_for(Duration::from_secs(5), 1_000_000);
        assert_eq!((net.hosts[0].app.secured(), net.hosts[1].app.secured()), (1, 1), "{segments:?}");
        assert_requests(&net, &sent);
        assert_eq!(net.trace().matches(" open TLS ").count(), 1);
    }
}

#[test]
fn tls_writes_larger_than_the_rustls_send_buffer_arrive_whole() {
    let ca = Ca::new("sim CA");
    let server = ca.issue(&["bob.example.com"]);
    let mut net = pair(tls_config(trusting(&[&ca])), tls_config(server.tls(&[])), Segments::Random(5000), 10);
    // Three 40 KB messages in one 120 KB write (rustls buffers 64 KiB).
    let sent: Vec<Vec<u8>> = (5000..5003).map(|n| message(n + 700, Transport::Tls)).collect();
    assert!(sent.iter().all(|m| m.len() > 40_000));
    send(&mut net, Transport::Tls, sent.concat());
    net.run_for(Duration::from_secs(5), 1_000_000);
    assert_requests(&net, &sent);
}

/// The server's view and the client's view of one mutual-TLS attempt.
fn mutual(client: TlsConfig, server: TlsConfig) -> (Net<Recorder>, Vec<CloseReason>, Vec<CloseReason>) {
    let mut net = pair(tls_config(client), tls_config(server.requiring_client_certificates()), Segments::Whole, 7);
    send(&mut net, Transport::Tls, message(1, Transport::Tls));
    net.run_for(Duration::from_secs(5), 100_000);
    let c = net.hosts[0].app.closes().into_iter().map(|c| c.1).collect();
    let s = net.hosts[1].app.closes().into_iter().map(|c| c.1).collect();
    (net, c, s)
}

#[test]
fn mutual_tls_takes_good_client_certificates_only() {
    let ca = Ca::new("sim CA");
    let rogue = Ca::new("rogue CA");
    let server = ca.issue(&["bob.example.com"]).tls(&[&ca]);
    // A good client certificate: accepted, the message arrives.
    let (net, c, s) = mutual(ca.issue(&["alice.example.com"]).tls(&[&ca]), server.clone());
    assert_eq!((c.len(), s.len()), (0, 0));
    assert_requests(&net, &[message(1, Transport::Tls)]);

    // None: the server refuses; the client hears why in an alert.
    let (net, c, s) = mutual(trusting(&[&ca]), server.clone());
    assert_eq!(s, [CloseReason::Tls(TlsFailure::Untrusted("no certificate presented".into()))]);
    assert!(
        matches!(&c[..], [CloseReason::Tls(TlsFailure::Handshake(why))] if why.contains("CertificateRequired")),
        "{c:?}"
    );
    assert_requests(&net, &[]);

    // Signed by a CA the server does not trust.
    let (_, c, s) = mutual(rogue.issue(&["alice.example.com"]).tls(&[&ca]), server.clone());
    assert!(matches!(&s[..], [CloseReason::Tls(TlsFailure::Untrusted(why))] if why.contains("UnknownIssuer")), "{s:?}");
    assert!(matches!(&c[..], [CloseReason::Tls(TlsFailure::Handshake(_))]), "{c:?}");

    // Expired at the time the core was given (2026): the leaf ran out in 2025.
    let (_, _, s) = mutual(ca.issue_valid(&["alice.example.com"], 2020, 2025).tls(&[&ca]), server);
    assert_eq!(s, [CloseReason::Tls(TlsFailure::Expired)]);
}

#[test]
fn tls_server_certificate_failures_are_typed() {
    let ca = Ca::new("sim CA");
    let rogue = Ca::new("rogue CA");
    let attempt = |client: TlsConfig, server: TlsConfig| {
        let mut net = pair(tls_config(client), tls_config(server), Segments::Whole, 8);
        send(&mut net, Transport::Tls, message(1, Transport::Tls));
        net.run_for(Duration::from_secs(5), 100_000);
        net.hosts[0].app.closes().into_iter().map(|c| c.1).collect::<Vec<_>>()
    };
    let expired = ca.issue_valid(&["bob.example.com"], 2020, 2025).tls(&[]);
    assert_eq!(attempt(trusting(&[&ca]), expired), [CloseReason::Tls(TlsFailure::Expired)]);
    let untrusted = rogue.issue(&["bob.example.com"]).tls(&[]);
    let c = attempt(trusting(&[&ca]), untrusted);
    assert!(matches!(&c[..], [CloseReason::Tls(TlsFailure::Untrusted(why))] if why.contains("UnknownIssuer")), "{c:?}");
    let wrong_name = ca.issue(&["carol.example.com"]).tls(&[]);
    let c = attempt(trusting(&[&ca]), wrong_name);
    assert!(
        matches!(&c[..], [CloseReason::Tls(TlsFailure::Untrusted(why))] if why.contains("NotValidForName")),
        "{c:?}"
    );
    // TLS asked of a host with no certificate configured.
    let mut net = pair(tls_config(trusting(&[&ca])), TransportConfig::default(), Segments::Whole, 9);
    send(&mut net, Transport::Tls, message(1, Transport::Tls));
    net.run_for(Duration::from_secs(5), 100_000);
    let s: Vec<_> = net.hosts[1].app.closes().into_iter().map(|c| c.1).collect();
    assert_eq!(s, [CloseReason::Tls(TlsFailure::NoLocalCertificate)]);
    assert_eq!(net.hosts[0].app.closes().len(), 1, "the client sees the connection close");
}

/// Transactions (MESSAGE and INVITE, as in `transaction_sim`) from host 0
/// to host 1 over `transport`, through both transport layers.
fn transactions(seed: u64, transport: Transport, segments: Segments, tls: Option<&Ca>) -> (String, Vec<Ended>) {
    let t0 = origin();
    let count = 20;
    let plans: Vec<Plan> = (1..=count)
        .map(|seq| Plan {
            at: t0 + Duration::from_millis(u64::from(seq) * 37 % 500),
            method: if seq % 3 == 0 { "MESSAGE" } else { "INVITE" },
            seq,
        })
        .collect();
    let mut plans = plans;
    plans.sort_by_key(|p| p.at);
    let (a, b) = match tls {
        Some(ca) => (tls_config(trusting(&[ca])), tls_config(ca.issue(&["bob.example.com"]).tls(&[]))),
        None => (TransportConfig::default(), TransportConfig::default()),
    };
    let port = if transport == Transport::Tls { 5061 } else { 5060 };
    let mut peer = Peer::new(transport, "192.0.2.2:5060".parse().unwrap());
    peer.remote.set_port(port);
    if tls.is_some() {
        peer.server_name = Some("bob.example.com".into());
    }
    let uac = Stack::Uac(Uac::over(seed, peer, transport, plans));
    let uas = Stack::Uas(Uas::new(seed + 1));
    let link = if transport == Transport::Udp { LinkConfig::lossy() } else { LinkConfig::default() };
    let mut net = Net::new(vec![(layer(a, seed, t0), uac), (layer(b, seed + 1, t0), uas)], link, segments, seed, t0);
    net.listen(0, Transport::Udp, 5060);
    net.listen(0, Transport::Tcp, 5060);
    net.listen(1, transport, port);
    net.run_for(Duration::from_secs(120), 1_000_000);
    let uac = net.hosts[0].app.uac().expect("host 0 is the UAC");
    // Outcomes with times relative to the request's start, comparable
    // across runs.
    let outcomes = (1..=count)
        .map(|s| {
            let start = uac.started.values().find(|(p, _)| p.seq == s).map(|&(_, at)| at);
            match (uac.outcomes.get(&s), start) {
                (Some(Outcome::Final(code, at)), Some(start)) => Ended::Final(*code, *at - start),
                (Some(Outcome::Timeout(at)), Some(start)) => Ended::Timeout(*at - start),
                _ => Ended::Never,
            }
        })
        .collect();
    (net.trace().to_owned(), outcomes)
}

/// How one planned transaction ended, with the time from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Final(u16, Duration),
    /// Timer B or F.
    Timeout(Duration),
    /// Never started or never ended: always a bug.
    Never,
}

/// Every transaction got its expected final response within 64·T1 — or,
/// on the lossy UDP link only, timed out exactly at 64·T1 (Timer B / F,
/// §17.1.1.2, §17.1.2.2: 30 % loss can defeat all eleven transmissions of
/// a request or every copy of its response). Over TCP and TLS the link
/// loses nothing, so nothing may time out.
fn check_outcomes(outcomes: &[Ended], lossy: bool) {
    let timeout = sipline::transaction::TimerConfig::default().transaction_timeout();
    for (i, o) in outcomes.iter().enumerate() {
        let seq = u32::try_from(i + 1).unwrap();
        let method = if seq % 3 == 0 { "MESSAGE" } else { "INVITE" };
        match *o {
            Ended::Final(code, after) => {
                assert_eq!(code, expected_code(method, seq), "seq {seq}");
                assert!(after <= timeout, "seq {seq} answered after 64·T1");
            }
            Ended::Timeout(after) => {
                assert!(lossy, "seq {seq} timed out on a lossless link");
                assert_eq!(after, timeout, "seq {seq} timed out off schedule");
            }
            Ended::Never => panic!("seq {seq} ({method}) never ended"),
        }
    }
}

#[test]
fn transactions_over_udp_and_tcp_replay_byte_for_byte() {
    for_each_seed(6, |seed| {
        for (transport, segments) in [(Transport::Udp, Segments::Whole), (Transport::Tcp, Segments::Random(200))] {
            let (trace, outcomes) = transactions(seed, transport, segments, None);
            check_outcomes(&outcomes, transport == Transport::Udp);
            let (again, _) = transactions(seed, transport, segments, None);
            assert!(trace == again, "{transport:?} seed {seed}: traces differ");
            assert!(trace.len() > 1000);
        }
    });
}

#[test]
fn transactions_over_tls_replay_on_plaintext_and_events() {
    let ca = Ca::new("sim CA");
    for_each_seed(2, |seed| {
        let (trace, outcomes) = transactions(seed, Transport::Tls, Segments::Random(300), Some(&ca));
        check_outcomes(&outcomes, false);
        let (again, again_outcomes) = transactions(seed, Transport::Tls, Segments::Random(300), Some(&ca));
        // Events carry the plaintext (every request and response as it
        // arrived); ciphertext differs from run to run.
        let events = |t: &str| t.lines().filter(|l| l.contains(" event ")).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(events(&trace), events(&again));
        assert_eq!(outcomes, again_outcomes);
        assert!(events(&trace).iter().filter(|l| l.contains("response from")).count() >= 20);
    });
}

#[test]
fn names_are_resolved_by_the_runtime_rfc_3263() {
    use sipline::message::Uri;
    use sipline::transport::{target_for, Answer, Lookup, Output};
    let now = origin();
    let mut layer = layer(TransportConfig::default(), 1, now);
    let target = target_for(&Uri::parse("sips:bob@example.com").unwrap(), Transport::Udp).unwrap();
    let job = layer.resolve(&target);
    let Some(Output::Resolve { query, name, lookup: Lookup::Srv }) = layer.poll_output() else {
        panic!("no SRV query")
    };
    assert_eq!(name, "_sips._tcp.example.com");
    layer.handle_resolved(now, query, Answer::NotFound);
    let Some(Output::Resolve { query, name, lookup: Lookup::Ip }) = layer.poll_output() else { panic!("no A query") };
    assert_eq!(name, "example.com");
    layer.handle_resolved(now, query, Answer::Ips(vec!["192.0.2.5".parse().unwrap(), "2001:db8::5".parse().unwrap()]));
    match layer.poll_output() {
        Some(Output::Event(TransportEvent::Resolved { query, result: Ok(peers) })) => {
            assert_eq!(query, job);
            let got: Vec<_> = peers.iter().map(|p| (p.transport, p.remote.to_string())).collect();
            assert_eq!(got, [(Transport::Tls, "192.0.2.5:5061".into()), (Transport::Tls, "[2001:db8::5]:5061".into())]);
            assert!(peers.iter().all(|p| p.server_name.as_deref() == Some("example.com")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(layer.poll_output(), None);
}

#[test]
fn tls_close_notify_closes_the_other_end_too() {
    let ca = Ca::new("sim CA");
    let server = ca.issue(&["bob.example.com"]);
    let mut net = pair(tls_config(trusting(&[&ca])), tls_config(server.tls(&[])), Segments::Whole, 13);
    send(&mut net, Transport::Tls, message(1, Transport::Tls));
    // Past the sender's linger (60 s): it closes with close_notify first.
    net.run_for(Duration::from_secs(90), 100_000);
    assert_eq!(net.hosts[0].app.closes().into_iter().map(|c| c.1).collect::<Vec<_>>(), [CloseReason::Idle]);
    // The receiver read close_notify and closed its end itself (its own
    // Close, not just the FIN), reporting a peer close.
    assert!(net.trace().contains(" 1 close"), "{}", net.trace());
    assert_eq!(net.hosts[1].app.closes().into_iter().map(|c| c.1).collect::<Vec<_>>(), [CloseReason::Closed]);
}

/// Seeds once reported as failures (issue 16: "seq 10: None"): 30 % loss
/// defeated one UDP transaction, which timed out at 64·T1 as §17.1.1.2 and
/// §17.1.2.2 require; the check used to demand a final response for every
/// request. They replay here by name, with the exact rule.
#[test]
fn regression_udp_transactions_defeated_by_loss_time_out_at_64_t1() {
    let mut timeouts = 0;
    for seed in [404, 466, 513, 559, 602, 605, 642, 652, 812, 889, 1200, 1247] {
        let (_, outcomes) = transactions(seed, Transport::Udp, Segments::Whole, None);
        check_outcomes(&outcomes, true);
        timeouts += outcomes.iter().filter(|o| matches!(o, Ended::Timeout(_))).count();
    }
    // The loss pattern these seeds stand for still happens in some of them.
    assert!(timeouts > 0, "no seed timed out: pick new ones with scripts/sim-soak");
}

/// With every datagram lost, each transaction ends by Timer B or F at
/// exactly 64·T1 — the only outcome the RFC allows then.
#[test]
fn udp_transactions_on_a_dead_link_all_time_out_at_64_t1() {
    let t0 = origin();
    let plans: Vec<Plan> = (1..=6)
        .map(|seq| Plan {
            at: t0 + Duration::from_millis(u64::from(seq) * 10),
            method: if seq % 3 == 0 { "MESSAGE" } else { "INVITE" },
            seq,
        })
        .collect();
    let peer = Peer::new(Transport::Udp, "192.0.2.2:5060".parse().unwrap());
    let uac = Stack::Uac(Uac::over(1, peer, Transport::Udp, plans));
    let uas = Stack::Uas(Uas::new(2));
    let dead = LinkConfig { loss: 1.0, ..LinkConfig::default() };
    let (a, b) = (TransportConfig::default(), TransportConfig::default());
    let mut net = Net::new(vec![(layer(a, 1, t0), uac), (layer(b, 2, t0), uas)], dead, Segments::Whole, 1, t0);
    net.listen(0, Transport::Udp, 5060);
    net.listen(1, Transport::Udp, 5060);
    net.run_for(Duration::from_secs(120), 1_000_000);
    let uac = net.hosts[0].app.uac().expect("host 0 is the UAC");
    let timeout = sipline::transaction::TimerConfig::default().transaction_timeout();
    assert_eq!(uac.outcomes.len(), 6);
    for (client, (plan, start)) in &uac.started {
        match uac.outcomes.get(&plan.seq) {
            Some(Outcome::Timeout(at)) => assert_eq!(*at - *start, timeout, "{client:?}"),
            other => panic!("seq {}: {other:?}", plan.seq),
        }
    }
}
