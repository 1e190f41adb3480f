//! "Can use the system's trusted roots": `sipline message --transport tls`
//! without `--ca` trusts the system's store, read by the CLI (the core
//! reads no files). The store is pointed at a file made here with
//! `SSL_CERT_FILE` (honoured by `rustls-native-certs`, as by OpenSSL), set
//! on the child process only, so the test needs no machine setup.

use sipline::endpoint::{EndpointConfig, Event};
use sipline::transport::Transport;
use sipline_tests::certs::Ca;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of its own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("sipline-cli-system-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sipline message sips:bob@{at} hello --transport tls` with the system
/// store in `store`: exit code, stdout, stderr.
fn message_with_store(at: SocketAddr, store: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipline"))
        .args(["message", &format!("sips:bob@{at}"), "hello", "--transport", "tls", "--bind", "127.0.0.1:0"])
        .env("SSL_CERT_FILE", store)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn the_cli_trusts_the_system_store_and_only_it() {
    let ca = Ca::new("sipline system-store CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let stranger = Ca::new("sipline stranger CA");
    let dir = Scratch::new();
    let (trusting, not_trusting, empty) =
        (dir.write("store.pem", &ca.pem), dir.write("other.pem", &stranger.pem), dir.write("empty.pem", ""));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, mut events) = rt
        .block_on(async {
            let mut config =
                EndpointConfig::new("sip:bob@127.0.0.1").listen(Transport::Tls, "127.0.0.1:0".parse().unwrap());
            config.transport.tls = leaf.tls(&[]);
            sipline_tokio::bind(config).await
        })
        .unwrap();
    let at = server.local_addr(Transport::Tls).unwrap();
    let answering = server.clone();
    rt.spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::Incoming { incoming, .. } = event {
                let _ = answering.respond(incoming, 200, "OK").await;
            }
        }
    });

    let (code, out, err) = message_with_store(at, &trusting);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.lines().any(|l| l == "200 OK"), "{out}");

    // A store without the server's CA: the certificate is refused.
    let (code, out, err) = message_with_store(at, &not_trusting);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("failed: ") && out.to_lowercase().contains("certificate"), "{out}");

    // An empty store: a usage error before anything is sent.
    let (code, out, err) = message_with_store(at, &empty);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.starts_with("error: no trusted roots found in the system's store"), "{err}");

    rt.block_on(server.shutdown());
}
