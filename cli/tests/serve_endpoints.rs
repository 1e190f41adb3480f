//! Endpoints registered with `sipline serve` (the binary, as a user starts
//! it), in the scenarios the interop tests run against Kamailio, through
//! each runtime:
//!
//! - `sipline_tests::registered` (as `tests/tests/interop_endpoints.rs`):
//!   register, MESSAGE both ways, refresh, unregister, shut down — over
//!   UDP, TCP and TLS (`--tls-self-signed`: the endpoints trust the
//!   authority the server wrote out);
//! - `sipline_tests::calls` (as `tests/tests/interop_sessions.rs`): two
//!   sipline endpoints call each other through it, and a sipline endpoint
//!   and baresip (Debian `baresip-core`) call each other through it.

mod support;

use sipline::transport::{TlsConfig, Transport};
use sipline_tests::calls;
use sipline_tests::certs::Ca;
use sipline_tests::kamailio::{TempDir, DOMAIN};
use sipline_tests::registered::{registered_endpoints, SipServer, EXPIRES};
use sipline_tests::runtimes::{Blocking, Smol, Tokio};
use std::net::SocketAddr;
use std::sync::Mutex;
use support::Listener;

/// A `sipline serve` for [`DOMAIN`] with the harness's users, Min-Expires
/// as Kamailio's, TLS with a certificate of its own making.
struct Serve {
    out: Mutex<Listener>,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    /// The authority `--tls-self-signed` wrote out, PEM.
    server_ca: String,
    /// Issues the endpoints' own TLS identities.
    endpoints_ca: Ca,
    _dir: TempDir,
}

impl Serve {
    fn start() -> Serve {
        Serve::start_with(&[])
    }

    /// With further `serve` options.
    fn start_with(extra: &[&str]) -> Serve {
        let dir = TempDir::new("sipline-serve-endpoints");
        let file = support::users_file(&dir);
        let min = EXPIRES.to_string();
        let args = [
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--domain",
            DOMAIN,
            "--users",
            &file,
            "--min-expires",
            &min,
            "--tls-self-signed",
        ];
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        let mut out = Listener::start_for(&args, 120);
        let tls_line = out.lines_starting("tls: self-signed certificate for ", 1).remove(0);
        let ca_path = tls_line.rsplit(' ').next().expect("a path").to_owned();
        let server_ca = std::fs::read_to_string(&ca_path).unwrap_or_else(|e| panic!("{ca_path}: {e}"));
        let _ = std::fs::remove_file(&ca_path);
        let (udp, tcp, tls) = (out.bound("udp"), out.bound("tcp"), out.bound("tls"));
        out.lines_starting("serving ", 1);
        Serve { out: Mutex::new(out), udp, tcp, tls, server_ca, endpoints_ca: Ca::new("sipline endpoints"), _dir: dir }
    }

    fn lines(&self) -> Vec<String> {
        let mut out = self.out.lock().expect("lock");
        out.drain();
        out.seen.clone()
    }
}

impl SipServer for Serve {
    fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    fn saw_request(&self, method: &str, _call_id: &str) -> bool {
        // Its summary lines carry no Call-ID; each test has a server of
        // its own, so one relayed `method` answered 200 is the call's.
        let prefix = format!("{method} sip:");
        self.lines().iter().any(|l| l.starts_with(&prefix) && l.ends_with(" branches): 200 OK"))
    }

    fn name(&self) -> &'static str {
        "sipline serve"
    }

    fn uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("sip:{}", self.udp),
            Transport::Tcp => format!("sip:{};transport=tcp", self.tcp),
            // The certificate names 127.0.0.1 (the bound address).
            Transport::Tls => format!("sips:{}", self.tls),
        }
    }

    fn endpoint_tls(&self) -> TlsConfig {
        let ca = &self.endpoints_ca;
        ca.issue(&["127.0.0.1"]).tls(&[ca]).with_roots_pem(self.server_ca.as_bytes()).expect("the server's CA")
    }

    fn log(&self) -> String {
        self.lines().join("\n")
    }

    fn registers(&self, user: &str) -> usize {
        let aor = format!(" for sip:{user}@{DOMAIN}: ");
        self.lines().iter().filter(|l| l.starts_with("REGISTER ") && l.contains(&aor)).count()
    }

    fn check_transport(&self, transport: Transport) -> Result<(), String> {
        // The summary line names the Request-URI the endpoints used, which
        // names the transport (see `uri`).
        let uri = self.uri(transport);
        let lines = self.lines();
        if lines.iter().any(|l| l.starts_with(&format!("REGISTER {uri} for "))) {
            Ok(())
        } else {
            Err(format!("no REGISTER to {uri}:\n{}", lines.join("\n")))
        }
    }
}

macro_rules! suite {
    ($($name:ident => $rt:ty),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[test]
            fn registered_endpoints_over_udp() {
                registered_endpoints::<$rt, Serve>(&Serve::start(), Transport::Udp);
            }
            #[test]
            fn registered_endpoints_over_tcp() {
                registered_endpoints::<$rt, Serve>(&Serve::start(), Transport::Tcp);
            }
            #[test]
            fn registered_endpoints_over_tls() {
                registered_endpoints::<$rt, Serve>(&Serve::start(), Transport::Tls);
            }
            #[test]
            fn registered_endpoints_call_each_other() {
                // SHA-256 offered first (RFC 8760's order): sipline takes it.
                calls::registered_endpoints_call_each_other::<$rt, Serve>(&Serve::start_with(&["--digest", "sha-256,md5"]));
            }
            #[test]
            fn sipline_and_baresip_call_each_other() {
                // baresip 1.0 (libre) gives up on any challenge that is not MD5.
                calls::sipline_and_baresip_call_each_other::<$rt, Serve>(&Serve::start_with(&["--digest", "md5"]));
            }
        }
    )*};
}

suite!(tokio => Tokio, smol => Smol, blocking => Blocking);

/// Issue 19: the same with `serve --workers 2` (UDP on both workers, the
/// kernel spreading the endpoints' ports over them, so requests, their
/// responses and the calls' in-dialog requests cross between workers;
/// TCP and TLS on the first). One runtime for the endpoints: the workers
/// are the server's.
mod two_workers {
    use super::*;

    fn serve() -> Serve {
        Serve::start_with(&["--workers", "2", "--digest", "md5"])
    }

    #[test]
    fn registered_endpoints_over_udp() {
        registered_endpoints::<Tokio, Serve>(&serve(), Transport::Udp);
    }
    #[test]
    fn registered_endpoints_over_tcp() {
        registered_endpoints::<Tokio, Serve>(&serve(), Transport::Tcp);
    }
    #[test]
    fn registered_endpoints_over_tls() {
        registered_endpoints::<Tokio, Serve>(&serve(), Transport::Tls);
    }
    #[test]
    fn registered_endpoints_call_each_other() {
        calls::registered_endpoints_call_each_other::<Tokio, Serve>(&serve());
    }
    #[test]
    fn sipline_and_baresip_call_each_other() {
        calls::sipline_and_baresip_call_each_other::<Tokio, Serve>(&serve());
    }
}
