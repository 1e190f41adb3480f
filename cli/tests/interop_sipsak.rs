//! sipsak (Debian package sipsak, installed by
//! `scripts/install-interop-deps`), the command-line SIP swiss army knife,
//! against the `sipline` binary the way a user points it at a server:
//! an OPTIONS ping of `sipline listen`, a REGISTER with digest
//! authentication at `sipline serve` (its binding then read back with a
//! REGISTER without Contact, RFC 3261 §10.2.3), a wrong password refused,
//! and a MESSAGE with a body delivered to `sipline listen`.
//!
//! What this sipsak (0.9.8.1) does that shapes the tests:
//! - it drops the last digit of a five-digit port written in `-s`'s URI
//!   when it copies the URI into the Request-URI and To (it still sends to
//!   the right port). A registrar that checks the Request-URI's host and
//!   port (§10.3 step 1) refuses that REGISTER, so the REGISTERs name the
//!   server's port with `-r` and leave it out of the URI;
//! - its default Expires (15 s) is below serve's Min-Expires (60 s) and it
//!   does not retry a 423, so registrations set `-x`;
//! - its message mode (`-M`, with or without `-U`) and invite mode (`-I`)
//!   crash before sending anything (upstream issues #95 and #97), so the
//!   MESSAGE is sent from a file (`-f`), the way sipsak sends any request.
//!
//! Every sipsak run is bounded by coreutils `timeout`, bound to loopback
//! (`-k`, `-H`); every `sipline` runs under `timeout` in a process group of
//! its own, stopped on drop.

mod support;

use sipline_tests::kamailio::{find_program, install_script, TempDir};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use support::Listener;

/// `sipsak` and coreutils `timeout`, installed by
/// `scripts/install-interop-deps` on first use in this process if sipsak
/// is missing. Panics with the reason when they cannot be had: the tests
/// never pass by skipping.
fn tools() -> &'static (PathBuf, PathBuf) {
    static TOOLS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let found = TOOLS.get_or_init(|| {
        let timeout = find_program("timeout").ok_or("timeout (package coreutils) not found")?;
        if let Some(sipsak) = find_program("sipsak") {
            return Ok((sipsak, timeout));
        }
        let script = install_script();
        if std::env::var_os("SIPLINE_NO_INSTALL").is_some() {
            return Err(format!("sipsak (package sipsak) missing; SIPLINE_NO_INSTALL is set, so {} was not run", {
                script.display()
            }));
        }
        let out = Command::new(&timeout)
            .args(["--kill-after=10", "1800"])
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(format!("{} failed ({}):\n{log}", script.display(), out.status));
        }
        let sipsak = find_program("sipsak")
            .ok_or_else(|| format!("sipsak still missing after {} succeeded:\n{log}", script.display()))?;
        Ok((sipsak, timeout))
    });
    match found {
        Ok(tools) => tools,
        Err(why) => panic!("{why}"),
    }
}

/// What one sipsak run did.
struct Run {
    /// Its exit status (0: a 200 came; `None`: killed).
    code: Option<i32>,
    /// Its standard output and standard error (`-vvv`: every message).
    text: String,
}

impl Run {
    /// The responses it printed, in order, each as its lines (CR
    /// stripped), from the status line to the blank line ending the
    /// header.
    fn responses(&self) -> Vec<Vec<String>> {
        let mut all = Vec::new();
        let mut current: Option<Vec<String>> = None;
        for line in self.text.lines().map(|l| l.trim_end_matches('\r')) {
            if line.starts_with("SIP/2.0 ") {
                if let Some(done) = current.take() {
                    all.push(done);
                }
                current = Some(vec![line.to_owned()]);
            } else if let Some(response) = current.as_mut() {
                if line.is_empty() {
                    all.push(current.take().unwrap_or_default());
                } else {
                    response.push(line.to_owned());
                }
            }
        }
        all.extend(current);
        all
    }

    /// The last response it printed; panics without one.
    fn last_response(&self) -> Vec<String> {
        self.responses().pop().unwrap_or_else(|| panic!("sipsak printed no response:\n{}", self.text))
    }
}

/// The values of header field `name` in `response`.
fn headers<'a>(response: &'a [String], name: &str) -> Vec<&'a str> {
    response
        .iter()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// `timeout 30 sipsak -vvv` on loopback with `args`.
fn sipsak(args: &[&str]) -> Run {
    let (sipsak, timeout) = tools();
    let out = Command::new(timeout)
        .args(["--kill-after=5", "30"])
        .arg(sipsak)
        // Every header names 127.0.0.1, and its sockets are bound there.
        .args(["-vvv", "-H", "127.0.0.1", "-k", "127.0.0.1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sipsak");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Run { code: out.status.code(), text }
}

/// `sipline listen` on a free loopback port.
fn listen() -> (Listener, SocketAddr) {
    let mut listener = Listener::start(&["listen", "--bind", "127.0.0.1:0"]);
    let at = listener.bound("udp");
    (listener, at)
}

/// `sipsak -s sip:bob@127.0.0.1:PORT`: an OPTIONS (RFC 3261 §11) to
/// `sipline listen`, answered 200 with the methods it allows; sipsak exits
/// 0. The answer went back to the port sipsak sent from, which is not the
/// one in its Via: the Via asked for `rport` (RFC 3581 §4).
#[test]
fn sipsak_options_to_listen_gets_200_with_allow() {
    let (listener, at) = listen();
    let run = sipsak(&["-s", &format!("sip:bob@{at}")]);
    assert_eq!(run.code, Some(0), "sipsak OPTIONS failed:\n{}\nsipline: {:#?}", run.text, listener.seen);
    let ok = run.last_response();
    assert_eq!(ok[0], "SIP/2.0 200 OK", "{ok:#?}");
    assert_eq!(headers(&ok, "CSeq"), ["1 OPTIONS"], "{ok:#?}");
    // §11.2: Allow lists the methods the endpoint supports (the UAS core's
    // list, core/src/endpoint/uas.rs), Accept the bodies it takes.
    assert_eq!(headers(&ok, "Allow"), ["INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, PRACK, UPDATE, NOTIFY"], "{ok:#?}");
    assert!(headers(&ok, "Accept").iter().any(|a| a.split(", ").any(|t| t == "text/plain")), "{ok:#?}");
    assert!(headers(&ok, "To").iter().any(|t| t.contains(";tag=")), "no To tag: {ok:#?}");
    let via = headers(&ok, "Via");
    assert!(
        via.len() == 1 && via[0].contains(";received=127.0.0.1") && via[0].contains(";rport="),
        "rport and received not filled in: {ok:#?}"
    );
}

/// A REGISTER without Contact for alice (RFC 3261 §10.2.3: a query of her
/// bindings), written to `dir` as `name` and sent by sipsak with alice's
/// credentials to the serve at `at`: the Contact values of the 200.
fn query_bindings(dir: &TempDir, name: &str, at: SocketAddr) -> Vec<String> {
    let request = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nFrom: <sip:alice@127.0.0.1>;tag={name}\r\nTo: <sip:alice@127.0.0.1>\r\n\
         Call-ID: sipsak-{name}@127.0.0.1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let file = dir.write(name, &request);
    let file = file.to_str().expect("utf-8 path");
    let port = at.port().to_string();
    let run = sipsak(&["-f", file, "-s", "sip:alice@127.0.0.1", "-r", &port, "-a", "secret", "-u", "alice"]);
    assert_eq!(run.code, Some(0), "the query {name} failed:\n{}", run.text);
    let responses = run.responses();
    assert!(responses.iter().any(|r| r[0] == "SIP/2.0 401 Unauthorized"), "{name} not challenged:\n{}", run.text);
    let ok = run.last_response();
    assert_eq!(ok[0], "SIP/2.0 200 OK", "{}", run.text);
    headers(&ok, "Contact").into_iter().map(str::to_owned).collect()
}

/// `sipsak -U -C CONTACT -s sip:alice@127.0.0.1 -r PORT -a PASSWORD -u
/// alice -x EXPIRES`: a REGISTER with digest authentication at the serve
/// at `at`.
fn register(at: SocketAddr, contact: &str, password: &str, expires: u32) -> Run {
    let (port, expires) = (at.port().to_string(), expires.to_string());
    let args = ["-U", "-C", contact, "-s", "sip:alice@127.0.0.1", "-r", &port, "-a", password, "-u", "alice"];
    sipsak(&[&args[..], &["-x", &expires]].concat())
}

/// `sipsak -U` registers alice at `sipline serve --users` (`alice:secret`)
/// after a 401 (§22.4, MD5 with qop=auth); the registrar says so, and a
/// query of her bindings (a REGISTER without Contact, §10.3 step 6) shows
/// the contact with its expiry — none before. A wrong password gets a 401
/// again, sipsak exits non-zero and no binding is added. Then `-x 0`
/// removes the binding (§10.2.2).
#[test]
fn sipsak_registers_with_digest_at_serve() {
    let dir = TempDir::new("sipsak-serve");
    let users = dir.write("users", "alice:secret\n");
    let users = users.to_str().expect("utf-8 path");
    let mut server = Listener::start(&["serve", "--bind", "127.0.0.1:0", "--domain", "127.0.0.1", "--users", users]);
    let at = server.bound("udp");
    server.lines_starting("serving ", 1);
    let summary = "REGISTER sip:127.0.0.1 for sip:alice@127.0.0.1: ";

    let before = query_bindings(&dir, "query-before", at);
    assert!(before.is_empty(), "bindings before any registration: {before:?}");
    let lines = server.lines_starting(summary, 2);
    assert!(lines[1].ends_with(": 200 OK; sip:alice@127.0.0.1: 0 binding(s) fetched"), "{lines:?}");

    // Nothing is sent to the contact: the binding is only read back.
    let contact = "sip:alice@127.0.0.1:5099";
    let run = register(at, contact, "secret", 300);
    assert_eq!(run.code, Some(0), "sipsak REGISTER failed:\n{}\nsipline serve: {:#?}", run.text, server.seen);
    let codes: Vec<String> = run.responses().into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(codes.first().map(String::as_str), Some("SIP/2.0 401 Unauthorized"), "{}", run.text);
    let ok = run.last_response();
    assert_eq!(ok[0], "SIP/2.0 200 OK", "{}", run.text);
    assert_eq!(headers(&ok, "Contact"), [format!("<{contact}>;expires=300")], "{ok:#?}");
    let lines = server.lines_starting(summary, 4);
    assert!(lines[2].ends_with(": 401 Unauthorized"), "{lines:?}");
    let added = ": 200 OK; sip:alice@127.0.0.1: 1 binding(s) (1 added, 0 refreshed, 0 removed)";
    assert!(lines[3].ends_with(added), "{lines:?}");

    let bound = query_bindings(&dir, "query-after", at);
    let prefix = format!("<{contact}>;expires=");
    assert!(
        bound.len() == 1
            && bound[0]
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|left| (1..=300).contains(&left)),
        "alice's binding not read back: {bound:?}"
    );
    server.lines_starting(summary, 6);

    let wrong = register(at, "sip:mallory@127.0.0.1:5098", "not-the-secret", 300);
    assert!(matches!(wrong.code, Some(c) if c != 0), "a wrong password registered:\n{}", wrong.text);
    let responses = wrong.responses();
    assert!(responses.iter().all(|r| r[0] == "SIP/2.0 401 Unauthorized"), "{}", wrong.text);
    assert_eq!(responses.len(), 2, "challenged, then refused:\n{}", wrong.text);
    let lines = server.lines_starting(summary, 8);
    assert!(lines[6..].iter().all(|l| l.ends_with(": 401 Unauthorized")), "{lines:?}");
    let still = query_bindings(&dir, "query-wrong", at);
    assert_eq!(still.len(), 1, "the wrong password's contact bound: {still:?}");
    assert!(still[0].starts_with(&prefix), "{still:?}");
    server.lines_starting(summary, 10);

    let run = register(at, contact, "secret", 0);
    assert_eq!(run.code, Some(0), "sipsak unREGISTER failed:\n{}", run.text);
    let lines = server.lines_starting(summary, 12);
    let removed = ": 200 OK; sip:alice@127.0.0.1: 0 binding(s) (0 added, 0 refreshed, 1 removed)";
    assert!(lines[11].ends_with(removed), "{lines:?}");
    let gone = query_bindings(&dir, "query-removed", at);
    assert!(gone.is_empty(), "the binding outlived its removal: {gone:?}");
}

/// sipsak sends a MESSAGE (RFC 3428) with a text/plain body from a file
/// (`-f`; sipsak adds its Via) to `sipline listen`, which answers 200 and
/// prints the sender, the content type and the text; sipsak exits 0.
#[test]
fn sipsak_message_to_listen_is_printed() {
    let (mut listener, at) = listen();
    let dir = TempDir::new("sipsak-message");
    let body = "hello from sipsak";
    let request = format!(
        "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nFrom: <sip:carol@127.0.0.1>;tag=sipsak1\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: sipsak-message@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let file = dir.write("message.sip", &request);
    let port = at.port().to_string();
    let run = sipsak(&["-f", file.to_str().expect("utf-8 path"), "-s", "sip:bob@127.0.0.1", "-r", &port]);
    assert_eq!(run.code, Some(0), "sipsak MESSAGE failed:\n{}\nsipline: {:#?}", run.text, listener.seen);
    let ok = run.last_response();
    assert_eq!(ok[0], "SIP/2.0 200 OK", "{ok:#?}");
    assert_eq!(headers(&ok, "CSeq"), ["1 MESSAGE"], "{ok:#?}");
    let printed = listener.lines_starting("MESSAGE from ", 1);
    assert_eq!(printed, [format!("MESSAGE from sip:carol@127.0.0.1 (text/plain): {body}")]);
}
