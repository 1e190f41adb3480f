//! `sipline serve` and `sipline listen` over TLS, as a user runs them, on
//! loopback (issue 17):
//!
//! - TLS 1.2 and 1.3 both handshake with `openssl s_client`; 1.1 is
//!   refused, and the refusal (like bytes that are not TLS) is printed
//!   with the peer's address;
//! - mutual TLS from the command line (`--require-client-cert --ca`):
//!   clients with a good certificate register, clients with none, an
//!   untrusted or an expired one are turned away, both sides saying why;
//! - `--tls-self-signed` names the domain and the bound address and starts
//!   an hour before now;
//! - `--bind` is where every socket is, and a client with no `--bind`
//!   binds the address that reaches its target, not every interface.
//!
//! Every process runs under coreutils `timeout`; every wait is bounded.

mod support;

use sipline_tests::certs::{Ca, Leaf};
use sipline_tests::kamailio::{find_program, install_script, programs, wait_until, TempDir, DOMAIN};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::Listener;

/// The longest one step may take.
const STEP: Duration = Duration::from_secs(20);

/// `openssl`: installed by `scripts/install-interop-deps` when missing
/// (once per process), as the interop programs are; never skipped.
fn openssl() -> PathBuf {
    static OPENSSL: OnceLock<PathBuf> = OnceLock::new();
    OPENSSL
        .get_or_init(|| {
            if let Some(found) = find_program("openssl") {
                return found;
            }
            let script = install_script();
            let out = Command::new(&programs().timeout)
                .arg("--kill-after=10")
                .arg("1800")
                .arg(&script)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
            assert!(out.status.success(), "{} failed: {}", script.display(), text(&out));
            find_program("openssl").expect("openssl, after scripts/install-interop-deps")
        })
        .clone()
}

/// `timeout 30 PROGRAM ARGS`, stdin from `input`, to its end. The system's
/// OpenSSL configuration is left out (`OPENSSL_CONF=/dev/null`): some
/// distributions raise the minimum version there, which would keep
/// `s_client -tls1_1` from even trying.
fn run_with_input(program: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(&programs().timeout)
        .arg("--kill-after=5")
        .arg("30")
        .arg(program)
        .args(args)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", program.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    // A program that exits first closes the pipe: not an error here.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap_or_else(|e| panic!("{} {args:?}: {e}", program.display()))
}

/// Both output streams as text.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `sipline ARGS` to its end (at most a minute).
fn sipline(args: &[&str]) -> Output {
    run_with_input(Path::new(env!("CARGO_BIN_EXE_sipline")), args, b"")
}

/// `openssl s_client` to `addr` with `extra` options, closing at once.
fn s_client(addr: SocketAddr, extra: &[&str]) -> Output {
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", connect.as_str()];
    args.extend(extra);
    run_with_input(&openssl(), &args, b"")
}

/// A running `sipline serve` with TLS of its own making.
struct Serve {
    out: Listener,
    tls: SocketAddr,
    /// The file `--tls-self-signed` wrote its authority's certificate to.
    ca_path: String,
    _dir: TempDir,
}

impl Serve {
    /// `serve --tls-self-signed` for `domain` on 127.0.0.1, with `extra`.
    fn start(domain: &str, extra: &[&str]) -> Serve {
        let dir = TempDir::new("sipline-tls-cli");
        let users = support::users_file(&dir);
        let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--domain", domain, "--users", &users];
        args.push("--tls-self-signed");
        args.extend(extra);
        let mut out = Listener::start(&args);
        let line = out.lines_starting("tls: self-signed certificate for ", 1).remove(0);
        let ca_path = line.rsplit(' ').next().expect("a path").to_owned();
        let tls = out.bound("tls");
        out.lines_starting("serving ", 1);
        Serve { out, tls, ca_path, _dir: dir }
    }

    /// The lines printed so far that report a failed TLS connection.
    fn tls_failures(&mut self) -> Vec<String> {
        self.out.drain();
        self.out.seen.iter().filter(|l| l.starts_with("TLS handshake from ")).cloned().collect()
    }

    /// Waits (bounded) for the `count`th failed handshake line.
    fn wait_tls_failures(&mut self, count: u32) -> Vec<String> {
        self.out.lines_starting("TLS handshake from 127.0.0.1:", count)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_path);
    }
}

/// TLS 1.2 and 1.3 both handshake (with modern suites: ECDHE and AEAD for
/// 1.2), the chain verifying against the authority `serve` wrote out; 1.1
/// is refused, and so are bytes that are not TLS, each printed once with
/// the peer's address.
#[test]
fn serve_speaks_tls_1_2_and_1_3_and_prints_what_it_refuses() {
    let mut serve = Serve::start("tls.sipline.test", &[]);
    for (flag, wanted) in [("-tls1_2", "New, TLSv1.2, Cipher is ECDHE-"), ("-tls1_3", "New, TLSv1.3, Cipher is TLS_")] {
        let out = s_client(serve.tls, &[flag, "-CAfile", &serve.ca_path, "-verify_return_error"]);
        let said = text(&out);
        assert!(out.status.success(), "{flag}: {said}");
        assert!(said.lines().any(|l| l.starts_with(wanted)), "{flag}: no {wanted:?} in\n{said}");
        if flag == "-tls1_2" {
            let cipher = said.lines().find(|l| l.starts_with(wanted)).unwrap_or_default();
            assert!(cipher.contains("GCM") || cipher.contains("CHACHA20"), "an AEAD suite: {cipher}");
        }
        assert!(said.contains("Verify return code: 0 (ok)"), "{flag}: {said}");
    }
    // A completed handshake is no failure.
    assert_eq!(serve.tls_failures(), Vec::<String>::new());

    // TLS 1.1 (at security level 0, so that OpenSSL offers it at all).
    let out = s_client(serve.tls, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    let said = text(&out);
    assert!(!out.status.success(), "TLS 1.1 accepted: {said}");
    assert!(said.contains("New, (NONE), Cipher is (NONE)"), "{said}");
    assert!(said.contains("alert"), "no alert from the server: {said}");
    let refused = serve.wait_tls_failures(1);
    assert!(refused[0].contains(" failed: "), "{refused:?}");

    // Plain SIP on the TLS port: a fatal alert record (content type 21,
    // RFC 8446 §5.1) comes back, then the end of the connection.
    let mut stream = TcpStream::connect(serve.tls).expect("connect");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    stream.write_all(b"OPTIONS sip:tls.sipline.test SIP/2.0\r\nContent-Length: 0\r\n\r\n").expect("write");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("the server closes");
    assert_eq!(back.first(), Some(&21), "an alert record: {back:?}");
    let local = stream.local_addr().expect("local");
    let lines = serve.wait_tls_failures(2);
    let garbage = &lines[1];
    assert!(garbage.starts_with(&format!("TLS handshake from {local} failed: ")), "{lines:?}");
    // Once each.
    assert_eq!(serve.tls_failures().len(), 2, "{:?}", serve.out.seen);
}

/// The certificate `--tls-self-signed` serves: its subject is the domain,
/// its names the domain and the bound address, and it is valid from an
/// hour before now (not from a fixed date) for a year.
#[test]
fn self_signed_certificate_names_the_domain_and_starts_an_hour_ago() {
    let serve = Serve::start("tls.sipline.test", &[]);
    let out = s_client(serve.tls, &["-showcerts"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let begin = said.find("-----BEGIN CERTIFICATE-----").expect("a certificate");
    let end = said[begin..].find("-----END CERTIFICATE-----").expect("its end") + begin;
    let leaf = format!("{}-----END CERTIFICATE-----\n", &said[begin..end]);
    let dir = TempDir::new("sipline-tls-cli-cert");
    let leaf_path = dir.write("leaf.pem", &leaf);
    let leaf_path = leaf_path.to_str().expect("utf-8");

    let x509 = |args: &[&str]| {
        let mut all = vec!["x509", "-in", leaf_path, "-noout"];
        all.extend(args);
        let out = run_with_input(&openssl(), &all, b"");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subject = x509(&["-subject"]);
    assert_eq!(subject.trim(), "subject=CN = tls.sipline.test");
    let names = x509(&["-ext", "subjectAltName"]);
    assert!(names.contains("DNS:tls.sipline.test"), "{names}");
    assert!(names.contains("IP Address:127.0.0.1"), "{names}");
    let dates = x509(&["-dates"]);

    // Valid at points in time (`verify -attime`): 50 minutes ago, not 70;
    // in 360 days, not in 370.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let verify_at = |at: u64| {
        let at = at.to_string();
        let out = run_with_input(&openssl(), &["verify", "-CAfile", &serve.ca_path, "-attime", &at, leaf_path], b"");
        (out.status.success(), text(&out))
    };
    let day = 86_400;
    for (at, valid) in
        [(now - 50 * 60, true), (now - 70 * 60, false), (now + 360 * day, true), (now + 370 * day, false)]
    {
        let (ok, said) = verify_at(at);
        assert_eq!(ok, valid, "at {at} (now {now}), {dates}: {said}");
        if !valid {
            let why = if at < now { "not yet valid" } else { "has expired" };
            assert!(said.contains(why), "{said}");
        }
    }
}

/// A PEM file in `dir`, its path as text.
fn pem_file(dir: &TempDir, name: &str, pem: &str) -> String {
    dir.write(name, pem).to_str().expect("utf-8").to_owned()
}

/// `--cert`/`--key` options for `leaf`, written into `dir`.
fn identity(dir: &TempDir, name: &str, leaf: &Leaf) -> (String, String) {
    (pem_file(dir, &format!("{name}.pem"), &leaf.chain_pem), pem_file(dir, &format!("{name}-key.pem"), &leaf.key_pem))
}

/// `serve --require-client-cert --ca CA`: alice with a certificate from
/// CA registers over TLS and gets her own MESSAGE; with no certificate, one
/// from another authority or an expired one, registering fails with the
/// TLS failure printed, and `serve` prints why it refused each.
#[test]
fn serve_requires_client_certificates() {
    let dir = TempDir::new("sipline-tls-cli-mtls");
    let clients = Ca::new("sipline clients");
    let clients_ca = pem_file(&dir, "clients-ca.pem", &clients.pem);
    let mut serve = Serve::start(DOMAIN, &["--ca", &clients_ca, "--require-client-cert"]);
    let registrar = format!("sip:{};transport=tls", serve.tls);
    let alice = format!("sip:alice@{DOMAIN}");
    let server_ca = serve.ca_path.clone();
    let client = |cert: Option<&(String, String)>| {
        let mut args = vec!["message", &alice, "hello me", "--from", &alice, "--registrar", &registrar];
        args.extend(["--transport", "tls"]);
        args.extend(["--user", "alice", "--password", "alicepw", "--ca", &server_ca]);
        if let Some((cert, key)) = cert {
            args.extend(["--cert", cert.as_str(), "--key", key.as_str()]);
        }
        let out = sipline(&args);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), text(&out))
    };

    // A good certificate: registered, and the MESSAGE comes back to alice
    // (forwarded to her registered contact, answered 200).
    let good = identity(&dir, "good", &clients.issue(&["127.0.0.1"]));
    let (code, stdout, all) = client(Some(&good));
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.lines().any(|l| l.starts_with("registration: registered as sip:alice@127.0.0.1:")), "{all}");
    assert!(stdout.lines().any(|l| l == "200 OK"), "{all}");
    // No --bind: only the address that reaches the server, 127.0.0.1.
    let bound: Vec<&str> = stdout.lines().filter(|l| l.starts_with("bound ")).collect();
    assert!(bound.iter().any(|l| l.starts_with("bound tls 127.0.0.1:")), "{all}");
    assert!(bound.iter().all(|l| l.contains(" 127.0.0.1:")), "{all}");
    assert!(serve.tls_failures().is_empty(), "{:?}", serve.out.seen);

    // Refused: (the client's certificate, the alert alice's side reports,
    // what serve prints).
    let stranger = Ca::new("sipline strangers");
    let untrusted = identity(&dir, "untrusted", &stranger.issue(&["127.0.0.1"]));
    let expired = identity(&dir, "expired", &clients.issue_valid(&["127.0.0.1"], 2020, 2021));
    let cases = [
        (None, "CertificateRequired", "untrusted remote certificate: no certificate presented"),
        (Some(&untrusted), "UnknownCA", "untrusted remote certificate: UnknownIssuer"),
        (Some(&expired), "CertificateExpired", "remote certificate expired"),
    ];
    for (n, (cert, alert, why)) in (1u32..).zip(cases) {
        let (code, stdout, all) = client(cert);
        assert_eq!(code, Some(1), "{why}: {all}");
        let wanted =
            format!("registration: failed (TLS handshake failed: received fatal alert: {alert}), retrying in ");
        assert!(stdout.lines().any(|l| l.starts_with(&wanted)), "{why}: no {wanted:?} in\n{all}");
        let lines = serve.wait_tls_failures(n);
        let line = &lines[n as usize - 1];
        assert!(line.ends_with(&format!(" failed: {why}")), "{why}: {lines:#?}");
    }
}

/// `listen --transport tls --require-client-cert` takes a client with a
/// certificate from `--ca` and refuses one without; without `--ca` the
/// option is a usage error.
#[test]
fn listen_requires_client_certificates() {
    let dir = TempDir::new("sipline-tls-cli-listen");
    let ca = Ca::new("sipline listen test");
    let ca_path = pem_file(&dir, "ca.pem", &ca.pem);
    let (cert, key) = identity(&dir, "listen", &ca.issue_ecdsa(&["127.0.0.1"]));
    let base = ["listen", "--bind", "127.0.0.1:0", "--transport", "tls", "--cert", &cert, "--key", &key];

    let out = sipline(&[&base[..], &["--require-client-cert"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--require-client-cert needs"), "{}", text(&out));

    let mut listen = Listener::start(&[&base[..], &["--require-client-cert", "--ca", &ca_path]].concat());
    let addr = listen.bound("tls");
    let target = format!("sip:someone@{addr};transport=tls");
    let (good_cert, good_key) = identity(&dir, "client", &ca.issue(&["127.0.0.1"]));
    let send = |extra: &[&str]| {
        let mut args = vec!["message", &target, "knock knock", "--transport", "tls", "--ca", &ca_path];
        args.extend(extra);
        let out = sipline(&args);
        (out.status.code(), text(&out))
    };
    let (code, said) = send(&["--cert", &good_cert, "--key", &good_key]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.lines().any(|l| l == "200 OK"), "{said}");
    let line = listen.lines_starting("MESSAGE from ", 1).remove(0);
    assert!(line.ends_with(" (text/plain): knock knock"), "{line}");

    let (code, said) = send(&[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("failed: TLS handshake failed: received fatal alert: CertificateRequired"), "{said}");
    let line = listen.lines_starting("TLS handshake from 127.0.0.1:", 1).remove(0);
    assert!(line.ends_with(" failed: untrusted remote certificate: no certificate presented"), "{line}");
}

/// The process `timeout` (pid `parent`) runs: sipline.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may hold spaces, not ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
        (ppid == parent && stat.contains("(sipline)")).then_some(pid)
    })
}

/// The local addresses of the sockets process `pid` holds (Linux:
/// `/proc/PID/fd` for its socket inodes, `/proc/net/{udp,tcp}{,6}` for
/// their addresses), with the table each is in.
fn socket_addrs(pid: u32) -> Vec<(&'static str, SocketAddr)> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.to_str()?.to_owned();
                    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = Vec::new();
    for table in ["udp", "udp6", "tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.contains(fields[9]) {
                found.push((table, parse_proc_addr(fields[1])));
            }
        }
    }
    found
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word as the kernel holds it, in the machine's byte order.
fn parse_proc_addr(field: &str) -> SocketAddr {
    let (ip, port) = field.split_once(':').expect("ip:port");
    let port = u16::from_str_radix(port, 16).expect("port");
    let words: Vec<[u8; 4]> =
        (0..ip.len() / 8).map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).expect("hex").to_ne_bytes()).collect();
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(*w)),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(words.concat()).expect("16 octets"))),
    };
    SocketAddr::new(ip, port)
}

/// `listen --bind 127.0.0.1:0` over each transport: every socket the
/// process holds is on 127.0.0.1 — also the UDP socket a stream listener
/// gets for sending (it used to be on 0.0.0.0).
#[test]
fn listen_binds_only_where_asked() {
    let dir = TempDir::new("sipline-tls-cli-bind");
    let ca = Ca::new("sipline bind test");
    let (cert, key) = identity(&dir, "listen", &ca.issue(&["127.0.0.1"]));
    let ca_path = pem_file(&dir, "ca.pem", &ca.pem);
    for (transport, extra, sockets) in [
        ("udp", &[][..], 1),
        ("tcp", &[][..], 2),
        ("tls", &["--cert", cert.as_str(), "--key", key.as_str(), "--ca", ca_path.as_str()][..], 2),
    ] {
        let mut args = vec!["listen", "--bind", "127.0.0.1:0", "--transport", transport];
        args.extend(extra);
        let mut listen = Listener::start(&args);
        let listening = listen.bound(transport);
        assert_eq!(listening.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let udp = listen.bound("udp");
        assert_eq!(udp.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{:?}", listen.seen);
        let mut pid = None;
        let mut held = Vec::new();
        // Read until the tables show exactly what is asked for: one read of
        // /proc can miss a socket while the process works (seen under load).
        let settled = wait_until(STEP, || {
            pid = pid.or_else(|| child_of(listen.timeout_pid()));
            held = pid.map(socket_addrs).unwrap_or_default();
            held.len() == sockets
        });
        assert!(settled, "{transport}: {held:?}");
        for (table, addr) in &held {
            assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{transport}: {table} socket on {addr}");
        }
    }
}

/// A client with no `--bind` sending to 127.0.0.1 binds 127.0.0.1 (the
/// address that reaches its target), not every interface.
#[test]
fn a_client_without_bind_binds_the_address_that_reaches_its_target() {
    let mut listen = Listener::start(&["listen", "--bind", "127.0.0.1:0"]);
    let addr = listen.bound("udp");
    let target = format!("sip:someone@{addr}");
    let out = sipline(&["message", &target, "where from?"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let bound: Vec<&str> = said.lines().filter(|l| l.starts_with("bound ")).collect();
    assert_eq!(bound.len(), 1, "{said}");
    assert!(bound[0].starts_with("bound udp 127.0.0.1:"), "{said}");
    let line = listen.lines_starting("MESSAGE from ", 1).remove(0);
    assert!(line.ends_with("(text/plain): where from?"), "{line}");
}
