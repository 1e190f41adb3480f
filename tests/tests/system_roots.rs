//! "Can use the system's trusted roots": a client whose only roots come
//! from the system store (`TlsConfig::with_system_roots`) reaches a TLS
//! server whose CA the store holds. The store is pointed at a file made
//! here with `SSL_CERT_FILE` (honoured by `rustls-native-certs`, as by
//! OpenSSL), so the test needs no machine setup; this binary holds one
//! test because the variable is process-wide.

use sipline::endpoint::{EndpointConfig, Event, Request};
use sipline::transport::{TlsConfig, Transport};
use sipline_tests::certs::Ca;
use std::time::Duration;

#[test]
fn a_client_trusting_the_system_store_reaches_a_server_it_vouches_for() {
    let ca = Ca::new("sipline system-store CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let dir = std::env::temp_dir().join(format!("sipline-system-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("store.pem");
    std::fs::write(&store, &ca.pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &store);
    std::env::remove_var("SSL_CERT_DIR");
    let roots = TlsConfig::default().with_system_roots().expect("the store has a root");
    assert_eq!(roots.roots.len(), 1);
    assert_eq!(roots.roots[0].as_ref(), ca.der.as_slice());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut server_config =
            EndpointConfig::new("sip:bob@127.0.0.1").listen(Transport::Tls, "127.0.0.1:0".parse().unwrap());
        server_config.transport.tls = leaf.tls(&[]);
        let (server, mut events) = sipline_tokio::bind(server_config).await.unwrap();
        let at = server.local_addr(Transport::Tls).unwrap();
        let answering = server.clone();
        let answer = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::Incoming { incoming, .. } = event {
                    answering.respond(incoming, 200, "OK").await.unwrap();
                }
            }
        });
        let mut client_config = EndpointConfig::new("sip:alice@127.0.0.1");
        client_config.transport.tls = roots;
        let (client, _events) = sipline_tokio::bind(client_config).await.unwrap();
        let uri = format!("sips:bob@{at}");
        let ok = client.send(Request::message(&uri, "text/plain", b"trusted".to_vec())).await.unwrap();
        assert_eq!(ok.code, 200);
        client.shutdown().await;
        server.shutdown().await;
        tokio::time::timeout(Duration::from_secs(5), answer).await.unwrap().unwrap();
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
