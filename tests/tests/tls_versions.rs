//! TLS protocol versions through the transport layer (RFC 5630 §3.1.3's
//! "TLS in SIP"; RFC 8996 retired 1.0 and 1.1): a sipline TLS server
//! speaks 1.3 and 1.2 with modern suites, and a sipline TLS client
//! reaches a server that knows only 1.2. The peer is a bare rustls
//! connection restricted to the versions under test; bytes are shuttled
//! by hand, no sockets.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use sipline::transport::{ConnId, Output, Peer, Transport, TransportConfig, TransportEvent, TransportLayer};
use sipline_tests::certs::{trusting, Ca, SIM_UNIX_TIME};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = "sipline.test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn layer(config: TransportConfig, seed: u64, now: Instant) -> TransportLayer {
    let mut layer = TransportLayer::new(config, seed).unwrap();
    layer.set_wall_clock(now, Duration::from_secs(SIM_UNIX_TIME));
    layer
}

/// Ciphertext back and forth between our connection `conn` and the rustls
/// peer until our side reports the connection secured (at most 10
/// rounds); `Err` with what went wrong otherwise.
fn handshake(
    ours: &mut TransportLayer,
    conn: ConnId,
    now: Instant,
    theirs: &mut rustls::Connection,
) -> Result<(), String> {
    for _ in 0..10 {
        let mut secured = false;
        let mut to_theirs = Vec::new();
        while let Some(o) = ours.poll_output() {
            match o {
                Output::Write { bytes, .. } => to_theirs.extend_from_slice(&bytes),
                Output::Event(TransportEvent::Secured { conn: c }) if c == conn => secured = true,
                Output::Event(TransportEvent::Closed { reason, .. }) => return Err(format!("closed: {reason:?}")),
                _ => {}
            }
        }
        let mut rd = &to_theirs[..];
        while !rd.is_empty() {
            theirs.read_tls(&mut rd).map_err(|e| e.to_string())?;
            theirs.process_new_packets().map_err(|e| e.to_string())?;
        }
        if secured && !theirs.is_handshaking() {
            return Ok(());
        }
        let mut to_ours = Vec::new();
        while theirs.wants_write() {
            theirs.write_tls(&mut to_ours).map_err(|e| e.to_string())?;
        }
        if !to_ours.is_empty() {
            ours.handle_stream_data(now, conn, &to_ours);
        }
    }
    Err("the handshake did not end in 10 rounds".to_owned())
}

/// A modern suite: ECDHE key exchange (implied in 1.3) and an AEAD.
fn assert_modern(conn: &rustls::Connection) {
    let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
    assert!(suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"), "{suite}");
    if conn.protocol_version() == Some(ProtocolVersion::TLSv1_2) {
        assert!(suite.starts_with("TLS_ECDHE_"), "{suite}");
    }
}

#[test]
fn the_server_speaks_tls_1_2_and_1_3() {
    let now = Instant::now();
    let ca = Ca::new_ecdsa("versions CA");
    let mut server =
        layer(TransportConfig { tls: ca.issue_ecdsa(&[NAME]).tls(&[]), ..TransportConfig::default() }, 1, now);
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der.clone())).unwrap();
    let roots = Arc::new(roots);
    let cases: [(&[&'static SupportedProtocolVersion], ProtocolVersion); 3] = [
        (&[&rustls::version::TLS12], ProtocolVersion::TLSv1_2),
        (&[&rustls::version::TLS13], ProtocolVersion::TLSv1_3),
        (&[&rustls::version::TLS13, &rustls::version::TLS12], ProtocolVersion::TLSv1_3),
    ];
    for (i, (versions, wanted)) in cases.into_iter().enumerate() {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let mut theirs: rustls::Connection =
            rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(NAME).unwrap()).unwrap().into();
        let remote = format!("192.0.2.7:{}", 40_000 + i).parse().unwrap();
        let conn = server.handle_accepted(now, Transport::Tls, remote).unwrap();
        // The client speaks first.
        let mut hello = Vec::new();
        while theirs.wants_write() {
            theirs.write_tls(&mut hello).unwrap();
        }
        server.handle_stream_data(now, conn, &hello);
        handshake(&mut server, conn, now, &mut theirs).unwrap();
        assert_eq!(theirs.protocol_version(), Some(wanted), "client offering {versions:?}");
        assert_modern(&theirs);
    }
}

#[test]
fn the_client_speaks_tls_1_2_to_a_server_that_knows_only_1_2() {
    let now = Instant::now();
    let ca = Ca::new_ecdsa("versions CA");
    let leaf = ca.issue_ecdsa(&[NAME]);
    let chain = leaf.chain_der.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let mut theirs: rustls::Connection = rustls::ServerConnection::new(Arc::new(config)).unwrap().into();

    let mut client = layer(TransportConfig { tls: trusting(&[&ca]), ..TransportConfig::default() }, 2, now);
    let mut peer = Peer::new(Transport::Tls, "192.0.2.2:5061".parse().unwrap());
    peer.server_name = Some(NAME.into());
    let conn = client.send(now, &peer, Arc::from(&b"OPTIONS sip:x SIP/2.0\r\n\r\n"[..])).unwrap().unwrap();
    client.handle_connected(now, conn);
    handshake(&mut client, conn, now, &mut theirs).unwrap();
    assert_eq!(theirs.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_modern(&theirs);
}

#[test]
fn a_peer_that_offers_no_version_we_speak_is_refused() {
    // Our server offers 1.2 and 1.3 only; a peer with no version in common
    // cannot be made with rustls (it knows only those two), so the closest
    // test is the other way round: the handshake fails cleanly, without a
    // panic, when the peer's suites exclude all of ours.
    let now = Instant::now();
    let ca = Ca::new_ecdsa("versions CA");
    let mut server =
        layer(TransportConfig { tls: ca.issue_ecdsa(&[NAME]).tls(&[]), ..TransportConfig::default() }, 3, now);
    let conn = server.handle_accepted(now, Transport::Tls, "192.0.2.7:40100".parse().unwrap()).unwrap();
    // A TLS 1.0 ClientHello (record version 3,1; client_version 3,1) with
    // one suite (TLS_RSA_WITH_AES_128_CBC_SHA) and no extensions.
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0x00, 0x00, u8::try_from(body.len()).unwrap()];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, u8::try_from(hs.len()).unwrap()];
    record.extend_from_slice(&hs);
    server.handle_stream_data(now, conn, &record);
    let mut closed = false;
    let mut alert = Vec::new();
    while let Some(o) = server.poll_output() {
        match o {
            Output::Write { bytes, .. } => alert.extend_from_slice(&bytes),
            Output::Event(TransportEvent::Closed { .. }) => closed = true,
            Output::Event(TransportEvent::Secured { .. }) => panic!("secured a TLS 1.0 hello"),
            _ => {}
        }
    }
    assert!(closed, "the connection is closed");
    assert_eq!(alert.first(), Some(&0x15), "an alert record is sent: {alert:?}");
}
