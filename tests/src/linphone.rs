//! A second real softphone for interop tests: linphone's console client
//! `linphonec` (liblinphone 5.1, Debian package linphone-cli, installed by
//! `scripts/install-interop-deps`), registered at a test's registrar (a
//! `sipline serve` or a [`Kamailio`](crate::kamailio::Kamailio)) as one of
//! its users, and driven through its standard input.
//!
//! Everything stays on loopback: linphonec gets a private configuration
//! file (`-c`) that binds SIP to 127.0.0.1 (`[sip] bind_address`) on ports
//! picked here (UDP and TCP on one port, TLS on the next), routes every
//! request through the registrar (`[proxy_0]` with `reg_route`), keeps its
//! database in a temporary directory of its own (`HOME`), and uses no
//! sound card (`soundcard use files`, sent before anything else, with no
//! file to play: it sends silence and plays nothing). Its commands
//! (`call`, `answer`, `terminate`, `chat`) go to its standard input; the
//! events it prints on standard output (`Receiving new incoming call from
//! …`, `Call 1 with … connected.`, `Message received from …`) are parsed
//! into [`LinphoneEvent`]s; its liblinphone log (`-d 6 -l FILE`) has every
//! SIP message it sent and received, parsed into [`SipLogEntry`]s, and its
//! registration states. linphonec runs as `timeout N linphonec …` in a
//! process group of its own and is stopped on drop (`unregister`, `quit`,
//! then signals).
//!
//! ```no_run
//! use sipline::transport::Transport;
//! use sipline_tests::kamailio::{Kamailio, KamailioOptions};
//! use sipline_tests::linphone::{Linphone, LinphoneEvent, LinphoneOptions};
//! use std::time::Duration;
//!
//! let kamailio = Kamailio::start(&KamailioOptions::default());
//! let carol = Linphone::start(&LinphoneOptions::new(kamailio.user("carol"), kamailio.udp_addr()));
//! carol.call("sip:bob@sipline.test").unwrap();
//! let up = carol.wait_event(Duration::from_secs(10), |e| matches!(e, LinphoneEvent::Connected { .. }));
//! ```
//!
//! Settings that matter (see `config_text`): `[sip] auto_net_state_mon=0`
//! (without it liblinphone decides from the machine's default route whether
//! "the network" is up, and opens no socket in a sandbox without one),
//! (it then does not unregister at `quit` either: the harness sends
//! `unregister` first), `[rtp] nortp_timeout` (linphone hangs up a call after 30 s without RTP
//! by default, and sipline test endpoints send none), `[sip] inc_timeout`
//! (it declines an unanswered incoming call after 30 s by default), and a
//! writable `~/.local/share/linphone` (without its database liblinphone
//! does not start its core, and again opens no socket).

use crate::kamailio::{find_program, free_ports, install_script, programs, wait_until, TempDir, User, DOMAIN};
use crate::kamailio::{LOOPBACK_V4, USERS};
use rustix::process::{kill_process_group, Pid, Signal};
use sipline::transport::Transport;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How linphonec answers an incoming call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMode {
    /// It rings (180) until [`Linphone::answer`] (or declines on
    /// [`Linphone::decline`]).
    #[default]
    Manual,
    /// It answers every call at once (`linphonec -a`).
    Auto,
}

/// How to start linphonec.
#[derive(Debug, Clone)]
pub struct LinphoneOptions {
    /// The user it is (AoR `sip:name@sipline.test`, digest username and
    /// password).
    pub user: User,
    /// The registrar, which is also its outbound proxy for every request
    /// (its address for `transport`).
    pub registrar: SocketAddr,
    /// UDP (default), TCP or TLS towards the registrar.
    pub transport: Transport,
    /// Whether it registers (default true); without, it still sends every
    /// request through the registrar.
    pub register: bool,
    /// The registration interval asked for (default 600 s).
    pub register_interval: Duration,
    /// PEM file of the authorities it trusts for TLS (`[sip] root_ca`);
    /// required for [`Transport::Tls`] unless `verify_server` is off. Its
    /// mbedtls (2.28) reads RSA and ECDSA certificates, not Ed25519 ones,
    /// and matches the server's name against DNS names and the CN only
    /// (an IP address must be a DNS name in the certificate too).
    pub root_ca: Option<PathBuf>,
    /// Whether it offers GRUU (RFC 5627; default true, as linphone does):
    /// a registrar that grants one (`pub-gruu`) then gets it as the
    /// Contact of linphone's dialogs, and in-dialog requests to linphone
    /// (ACK, BYE) carry it as Request-URI, which the proxy must resolve.
    /// False: `[sip] supported` without `gruu`, and its own address is its
    /// Contact.
    pub gruu: bool,
    /// Whether it verifies the server's TLS certificate (default true;
    /// `[sip] verify_server_certs` and `verify_server_cn`).
    pub verify_server: bool,
    /// How it answers incoming calls (default: on command).
    pub answer_mode: AnswerMode,
    /// How long it may take to start and register (default 15 s).
    pub startup_timeout: Duration,
    /// It is stopped after this long even if never dropped (default 5
    /// minutes), so a killed test process leaves nothing running.
    pub max_lifetime: Duration,
}

impl LinphoneOptions {
    /// `user` registering at `registrar` over UDP, answering on command.
    pub fn new(user: User, registrar: SocketAddr) -> LinphoneOptions {
        LinphoneOptions {
            user,
            registrar,
            transport: Transport::Udp,
            register: true,
            register_interval: Duration::from_secs(600),
            root_ca: None,
            verify_server: true,
            gruu: true,
            answer_mode: AnswerMode::Manual,
            startup_timeout: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(300),
        }
    }

    /// The same over `transport` to `registrar` (its address for that
    /// transport).
    #[must_use]
    pub fn over(self, transport: Transport, registrar: SocketAddr) -> LinphoneOptions {
        LinphoneOptions { registrar, transport, ..self }
    }
}

/// One event linphonec printed on its standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinphoneEvent {
    /// `Receiving new incoming call from FROM, assigned id ID`.
    IncomingCall {
        /// linphonec's call id.
        id: u32,
        /// The caller (From URI).
        from: String,
    },
    /// `Establishing call id to TO, assigned id ID` (an outgoing call).
    OutgoingCall {
        /// linphonec's call id.
        id: u32,
        /// Who is called.
        to: String,
    },
    /// `Call ID to PEER in progress.` / `ringing.` / `early media.`
    Progress {
        /// linphonec's call id.
        id: u32,
        /// `in progress`, `ringing`, `early media`.
        what: String,
    },
    /// `Call ID with PEER connected.` (answered: the 200 was sent or
    /// received).
    Connected {
        /// linphonec's call id.
        id: u32,
        /// The other party.
        peer: String,
    },
    /// `Media streams established with PEER for call ID (audio).`
    StreamsRunning {
        /// linphonec's call id.
        id: u32,
    },
    /// `Call ID with PEER ended (REASON).`
    Ended {
        /// linphonec's call id.
        id: u32,
        /// The other party.
        peer: String,
        /// liblinphone's reason (`No error`, `Declined`, `Busy` …).
        reason: String,
    },
    /// `Call ID with PEER error.` (a failed call).
    Error {
        /// linphonec's call id.
        id: u32,
        /// The other party.
        peer: String,
    },
    /// `Message received from FROM: TEXT`.
    Message {
        /// The sender.
        from: String,
        /// The text.
        text: String,
    },
}

/// `Call N …` → (N, the rest after the space).
fn call_id_and_rest(line: &str) -> Option<(u32, &str)> {
    let rest = line.strip_prefix("Call ")?;
    let (id, rest) = rest.split_once(' ')?;
    Some((id.parse().ok()?, rest))
}

impl LinphoneEvent {
    /// Parses one line of linphonec's output (its prompt already taken
    /// off); `None` for anything that is not an event.
    pub fn parse(line: &str) -> Option<LinphoneEvent> {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("Receiving new incoming call from ") {
            let (from, id) = rest.rsplit_once(", assigned id ")?;
            return Some(LinphoneEvent::IncomingCall { id: id.parse().ok()?, from: from.to_owned() });
        }
        if let Some(rest) = line.strip_prefix("Establishing call id to ") {
            let (to, id) = rest.rsplit_once(", assigned id ")?;
            return Some(LinphoneEvent::OutgoingCall { id: id.parse().ok()?, to: to.to_owned() });
        }
        if let Some(rest) = line.strip_prefix("Message received from ") {
            let (from, text) = rest.split_once(": ")?;
            return Some(LinphoneEvent::Message { from: from.to_owned(), text: text.to_owned() });
        }
        if let Some(rest) = line.strip_prefix("Media streams established with ") {
            let (_, after) = rest.rsplit_once(" for call ")?;
            let id = after.split_whitespace().next()?;
            return Some(LinphoneEvent::StreamsRunning { id: id.parse().ok()? });
        }
        let (id, rest) = call_id_and_rest(line)?;
        if let Some(peer) = rest.strip_prefix("with ") {
            if let Some(peer) = peer.strip_suffix(" connected.") {
                return Some(LinphoneEvent::Connected { id, peer: peer.to_owned() });
            }
            if let Some(peer) = peer.strip_suffix(" error.") {
                return Some(LinphoneEvent::Error { id, peer: peer.to_owned() });
            }
            if let Some(peer) = peer.strip_suffix(" early media.") {
                let _ = peer;
                return Some(LinphoneEvent::Progress { id, what: "early media".to_owned() });
            }
            if let Some(ended) = peer.strip_suffix(").") {
                let (peer, reason) = ended.rsplit_once(" ended (")?;
                return Some(LinphoneEvent::Ended { id, peer: peer.to_owned(), reason: reason.to_owned() });
            }
            return None;
        }
        if let Some(to) = rest.strip_prefix("to ") {
            for what in ["in progress", "ringing"] {
                if to.ends_with(&format!(" {what}.")) {
                    return Some(LinphoneEvent::Progress { id, what: what.to_owned() });
                }
            }
        }
        None
    }

    /// The call it is about, if any.
    pub fn call_id(&self) -> Option<u32> {
        match self {
            LinphoneEvent::IncomingCall { id, .. }
            | LinphoneEvent::OutgoingCall { id, .. }
            | LinphoneEvent::Progress { id, .. }
            | LinphoneEvent::Connected { id, .. }
            | LinphoneEvent::StreamsRunning { id }
            | LinphoneEvent::Ended { id, .. }
            | LinphoneEvent::Error { id, .. } => Some(*id),
            LinphoneEvent::Message { .. } => None,
        }
    }
}

/// Whether a SIP message in the log was sent or received by linphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// linphone sent it.
    Sent,
    /// linphone received it.
    Received,
}

/// One SIP message from linphone's log: belle-sip logs each one it sends
/// (`channel [0x…]: message sent to [UDP://127.0.0.1:5060], size: [548]
/// bytes`, then the message) and each read (`channel [0x…]: received [453]
/// new bytes from [UDP://127.0.0.1:5060]:`, then the bytes; a read of a
/// stream may hold several messages, which are split here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipLogEntry {
    /// Sent or received.
    pub direction: Direction,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// The other end: where it went, or where it came from.
    pub peer: String,
    /// The message, with CRLF line ends.
    pub text: String,
}

impl SipLogEntry {
    /// Its first line (request line or status line).
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim_end()
    }

    /// Whether it is a request with this method.
    pub fn is_request(&self, method: &str) -> bool {
        let line = self.start_line();
        !line.starts_with("SIP/") && line.strip_prefix(method).is_some_and(|rest| rest.starts_with(' '))
    }

    /// Whether it is a response with this status code.
    pub fn is_response(&self, code: u16) -> bool {
        self.start_line().starts_with(&format!("SIP/2.0 {code} "))
    }

    /// The value of the first header called `name` (case-insensitive; the
    /// compact form is not looked at).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().take_while(|l| !l.trim().is_empty()).skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The method named in its CSeq (`INVITE` for `CSeq: 20 INVITE`).
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// Whether it belongs to the call `call_id`.
    pub fn in_call(&self, call_id: &str) -> bool {
        self.header("Call-ID").is_some_and(|c| c == call_id)
    }

    /// A one-line summary: `sent INVITE sip:… SIP/2.0 (UDP 127.0.0.1:5060)`.
    pub fn summary(&self) -> String {
        let dir = match self.direction {
            Direction::Sent => "sent    ",
            Direction::Received => "received",
        };
        format!("{dir} {} ({} {})", self.start_line(), self.transport, self.peer)
    }
}

/// Whether `line` starts a liblinphone log record:
/// `2026-12-04 21:04:31:050 …`.
fn starts_record(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 24
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b':'
        && b[23] == b' '
}

/// `[UDP://127.0.0.1:5060]` after `marker` in `line` → (`UDP`, `127.0.0.1:5060`).
fn bracketed_peer(line: &str, marker: &str) -> Option<(String, String)> {
    let start = line.find(marker)? + marker.len();
    let end = start + line[start..].find(']')?;
    let (transport, peer) = line[start..end].split_once("://")?;
    Some((transport.to_ascii_uppercase(), peer.to_owned()))
}

/// Splits the bytes of one read into the SIP messages in it (by
/// Content-Length); a tail that is not a whole message is kept as one.
fn split_messages(mut text: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        text = text.trim_start_matches(['\r', '\n']);
        if text.is_empty() {
            return out;
        }
        let Some(head_end) = text.find("\r\n\r\n").map(|i| i + 4) else {
            out.push(text.to_owned());
            return out;
        };
        let length = text[..head_end]
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                let n = n.trim();
                (n.eq_ignore_ascii_case("Content-Length") || n.eq_ignore_ascii_case("l"))
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0usize);
        let end = (head_end + length).min(text.len());
        let end = if text.is_char_boundary(end) { end } else { text.len() };
        out.push(text[..end].to_owned());
        text = &text[end..];
    }
}

/// Parses the SIP messages out of linphone's log.
pub fn parse_sip_log(log: &str) -> Vec<SipLogEntry> {
    let mut entries = Vec::new();
    let mut lines = log.split('\n').peekable();
    while let Some(line) = lines.next() {
        if !starts_record(line) || !line.contains("-channel [") {
            continue;
        }
        let (direction, peer) = if line.contains("]: message sent to [") {
            (Direction::Sent, bracketed_peer(line, "message sent to ["))
        } else if line.contains(" new bytes from [") {
            (Direction::Received, bracketed_peer(line, "new bytes from ["))
        } else {
            continue;
        };
        let Some((transport, peer)) = peer else { continue };
        let mut body = Vec::new();
        while let Some(next) = lines.peek() {
            if starts_record(next) {
                break;
            }
            body.push(lines.next().unwrap_or_default());
        }
        let text = body.join("\n");
        // The log ends each message with a newline of its own.
        let text = text.strip_suffix('\n').unwrap_or(&text);
        for message in split_messages(text) {
            entries.push(SipLogEntry { direction, transport: transport.clone(), peer: peer.clone(), text: message });
        }
    }
    entries
}

/// Where linphonec is: found, or installed by
/// `scripts/install-interop-deps` (once per process) and found. Panics
/// with the reason when it cannot be had: an interop test never passes by
/// skipping.
pub fn linphonec_program() -> &'static Path {
    static LINPHONEC: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = LINPHONEC.get_or_init(|| {
        // The other programs first (their installation installs linphonec
        // too); then linphonec alone if it is still missing.
        let programs = programs();
        if let Some(path) = find_program("linphonec") {
            return Ok(path);
        }
        let script = install_script();
        if std::env::var_os("SIPLINE_NO_INSTALL").is_some() {
            return Err(format!(
                "linphonec (package linphone-cli) is missing; SIPLINE_NO_INSTALL is set, so {} was not run",
                script.display()
            ));
        }
        let out = Command::new(&programs.timeout)
            .arg("--kill-after=10")
            .arg("1800")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(format!("{} failed ({}):\n{log}", script.display(), out.status));
        }
        find_program("linphonec").ok_or_else(|| format!("no linphonec after {} succeeded:\n{log}", script.display()))
    });
    match found {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

/// The ports one linphonec uses (all on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
struct Ports {
    /// SIP over UDP and TCP.
    sip: u16,
    /// SIP over TLS (`sip + 1`).
    tls: u16,
    /// Audio RTP (and RTCP on the next).
    audio: u16,
}

/// The transport parameter of a URI for `transport`.
fn transport_param(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}

/// linphonec's configuration file (its `-c`; liblinphone's "linphonerc"
/// format). Written to the temporary directory; linphonec rewrites it as
/// it goes.
fn config_text(options: &LinphoneOptions, ports: Ports) -> String {
    let user = options.user;
    let t = transport_param(options.transport);
    let proxy = format!("sip:{};transport={t}", options.registrar);
    let root_ca = options.root_ca.as_ref().map(|p| format!("root_ca={}\n", p.display())).unwrap_or_default();
    format!(
        "# Written by tests/src/linphone.rs for one test's linphonec.\n\
         [sip]\n\
         # Ports of its own on 127.0.0.1 only: UDP and TCP on one, TLS on\n\
         # the next (its TLS client connections need a TLS listening point).\n\
         bind_address=127.0.0.1\n\
         sip_port={sip}\n\
         sip_tcp_port={sip}\n\
         sip_tls_port={tls}\n\
         use_ipv6=0\n\
         # Network up from the start: no monitoring of the default route\n\
         # (with it, a machine without one never opens a socket).\n\
         auto_net_state_mon=0\n\
         register_only_when_network_is_up=0\n\
         guess_hostname=0\n\
         contact=\"{name}\" <sip:{name}@127.0.0.1>\n\
         ping_with_options=0\n\
         # An unanswered incoming call is declined after this (default 30 s).\n\
         inc_timeout=120\n\
         in_call_timeout=0\n\
         default_proxy=0\n\
         supported={supported}\n\
         {root_ca}\
         verify_server_certs={verify}\n\
         verify_server_cn={verify}\n\
         \n\
         [net]\n\
         firewall_policy=0\n\
         dns_srv_enabled=0\n\
         \n\
         [rtp]\n\
         audio_rtp_port={audio}\n\
         # Calls stay up without RTP (sipline's test endpoints send none;\n\
         # the default hangs up after 30 s).\n\
         nortp_timeout=3600\n\
         \n\
         [sound]\n\
         echocancellation=0\n\
         \n\
         [video]\n\
         enabled=0\n\
         capture=0\n\
         display=0\n\
         \n\
         [misc]\n\
         enable_basic_to_client_group_chat_room_migration=0\n\
         \n\
         [proxy_0]\n\
         reg_proxy=<{proxy}>\n\
         reg_route=<{proxy};lr>\n\
         reg_identity=\"{name}\" <sip:{name}@{DOMAIN}>\n\
         reg_expires={expires}\n\
         reg_sendregister={register}\n\
         publish=0\n\
         quality_reporting_enabled=0\n\
         \n\
         [auth_info_0]\n\
         username={name}\n\
         userid={name}\n\
         passwd={password}\n\
         realm={DOMAIN}\n\
         domain={DOMAIN}\n",
        sip = ports.sip,
        tls = ports.tls,
        audio = ports.audio,
        name = user.name,
        password = user.password,
        expires = options.register_interval.as_secs().max(60),
        register = u8::from(options.register),
        verify = u8::from(options.verify_server),
        supported = if options.gruu { "replaces, outbound, gruu" } else { "replaces, outbound" },
    )
}

/// linphonec's standard output as it comes: whole lines (its prompt,
/// `linphonec> `, taken off) on a reader thread.
#[derive(Debug, Default)]
struct Output {
    lines: Vec<String>,
    closed: bool,
}

const PROMPT: &str = "linphonec> ";

fn strip_prompts(mut line: &str) -> &str {
    while let Some(rest) = line.strip_prefix(PROMPT) {
        line = rest;
    }
    line.trim_end_matches('\r')
}

/// A running linphonec, registered (unless told not to) at the registrar
/// as one user; stopped on drop (`unregister`, `quit`, then SIGTERM and
/// SIGKILL to what is left).
pub struct Linphone {
    child: Option<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    output: Arc<Mutex<Output>>,
    reader: Option<JoinHandle<()>>,
    options: LinphoneOptions,
    sip_addr: SocketAddr,
    tls_addr: SocketAddr,
    command_line: String,
    config: String,
    log_path: PathBuf,
    // Last: removed after the process has gone.
    dir: TempDir,
}

impl Linphone {
    /// Starts linphonec (installing it first if need be, see
    /// [`linphonec_program`]) and, when it registers, waits until its
    /// registration succeeded. Panics with the reason and its logs if it
    /// does not.
    pub fn start(options: &LinphoneOptions) -> Linphone {
        match Linphone::try_start(options) {
            Ok(linphone) => linphone,
            Err(why) => panic!("{why}"),
        }
    }

    /// [`Linphone::start`], returning the reason instead of panicking (a
    /// start that loses its ports to another process is retried, three
    /// times in all). The registration's outcome is not awaited here:
    /// see [`Linphone::wait_registered`].
    pub fn spawn(options: &LinphoneOptions) -> Result<Linphone, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Linphone::spawn_once(options) {
                Ok(linphone) => return Ok(linphone),
                Err((why, retry)) => {
                    last = why;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// [`Linphone::start`], returning the reason instead of panicking.
    pub fn try_start(options: &LinphoneOptions) -> Result<Linphone, String> {
        let mut linphone = Linphone::spawn(options)?;
        if options.register && !linphone.wait_registered(options.startup_timeout) {
            let why = format!(
                "linphonec did not register within {:?} (last registration state: {:?})\n{}",
                options.startup_timeout,
                linphone.registration_state(),
                linphone.report()
            );
            linphone.stop();
            return Err(why);
        }
        Ok(linphone)
    }

    fn spawn_once(options: &LinphoneOptions) -> Result<Linphone, (String, bool)> {
        let linphonec = linphonec_program();
        let timeout = &programs().timeout;
        if options.transport == Transport::Tls && options.verify_server && options.root_ca.is_none() {
            return Err(("linphone over TLS needs root_ca (or verify_server off)".to_owned(), false));
        }
        let dir = TempDir::new("linphone");
        // liblinphone keeps its database in ~/.local/share/linphone and
        // does not start its core (no socket is opened) if it cannot.
        let home = dir.path().join("home");
        fs::create_dir_all(home.join(".local/share/linphone"))
            .map_err(|e| (format!("creating linphone's home: {e}"), false))?;
        let sip = free_ports(&[LOOPBACK_V4], 2);
        let audio = free_ports(&[LOOPBACK_V4], 2);
        let ports = Ports { sip, tls: sip + 1, audio };
        let config = config_text(options, ports);
        let config_path = dir.write("linphonerc", &config);
        let log_path = dir.path().join("linphone.log");
        let stderr_path = dir.path().join("stderr.txt");
        let stderr = fs::File::create(&stderr_path).map_err(|e| (format!("stderr file: {e}"), false))?;
        let lifetime = options.max_lifetime.as_secs().max(1);
        let mut args = vec![
            "-c".to_owned(),
            config_path.display().to_string(),
            "-d".to_owned(),
            "6".to_owned(),
            "-l".to_owned(),
            log_path.display().to_string(),
        ];
        if options.answer_mode == AnswerMode::Auto {
            args.push("-a".to_owned());
        }
        let command_line = format!("timeout {lifetime} {} {}", linphonec.display(), args.join(" "));
        let mut child = Command::new(timeout)
            .arg("--kill-after=5")
            .arg(lifetime.to_string())
            .arg(linphonec)
            .args(&args)
            .current_dir(dir.path())
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DISPLAY")
            // No sound server, whatever the machine has.
            .env("PULSE_SERVER", dir.path().join("no-pulse"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| (format!("starting {command_line}: {e}"), false))?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or_else(|| ("no stdout".to_owned(), false))?;
        let output = Arc::new(Mutex::new(Output::default()));
        let out = Arc::clone(&output);
        // Ends when linphonec's stdout closes: at its exit, which its
        // `timeout` bounds.
        let reader = thread::spawn(move || {
            let mut pending = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&chunk[..n]);
                        let mut state = out.lock().unwrap_or_else(PoisonError::into_inner);
                        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=i).collect();
                            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                            state.lines.push(strip_prompts(&line).to_owned());
                        }
                    }
                }
            }
            let mut state = out.lock().unwrap_or_else(PoisonError::into_inner);
            if !pending.is_empty() {
                let line = String::from_utf8_lossy(&pending).into_owned();
                state.lines.push(strip_prompts(&line).to_owned());
            }
            state.closed = true;
        });
        let linphone = Linphone {
            child: Some(child),
            stdin: Mutex::new(stdin),
            output,
            reader: Some(reader),
            options: options.clone(),
            sip_addr: SocketAddr::new(LOOPBACK_V4, ports.sip),
            tls_addr: SocketAddr::new(LOOPBACK_V4, ports.tls),
            command_line,
            config,
            log_path,
            dir,
        };
        // No sound card: "files" with none to play or record.
        let files = linphone.command("soundcard use files").and_then(|()| {
            linphone
                .wait_line(options.startup_timeout, |l| l.contains("Using wav files instead of soundcard"))
                .map(drop)
                .ok_or_else(|| "no answer to `soundcard use files`".to_owned())
        });
        let listening = files.and_then(|()| {
            let log = &linphone.log_path;
            let needle = "Creating listening point [";
            let up = wait_until(options.startup_timeout, || {
                fs::read_to_string(log).is_ok_and(|l| l.contains(needle) && l.contains(&format!("127.0.0.1:{sip}")))
            });
            if up {
                Ok(())
            } else {
                Err("opened no listening point".to_owned())
            }
        });
        if let Err(why) = listening {
            let log = linphone.log();
            let retry = log.contains("Address already in use") || log.contains("Could not bind");
            let why = format!("linphonec {why}\n{}", linphone.report());
            drop(linphone);
            return Err((why, retry));
        }
        if linphone.log().contains("Address already in use") {
            let why = format!("linphonec lost a port\n{}", linphone.report());
            drop(linphone);
            return Err((why, true));
        }
        Ok(linphone)
    }

    /// The user it is.
    pub fn user(&self) -> User {
        self.options.user
    }

    /// Its address of record, `sip:name@sipline.test`.
    pub fn aor(&self) -> String {
        self.options.user.aor()
    }

    /// Where it listens for SIP over UDP and TCP (127.0.0.1).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Where it listens for SIP over TLS (127.0.0.1).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// The options it was started with.
    pub fn options(&self) -> &LinphoneOptions {
        &self.options
    }

    /// Its temporary directory (`linphonerc`, `linphone.log`, `home/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command it was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Its liblinphone log so far (`-d 6`: everything, every SIP message
    /// included).
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Every SIP message it sent and received so far, in order.
    pub fn sip_log(&self) -> Vec<SipLogEntry> {
        parse_sip_log(&self.log())
    }

    /// One line per SIP message so far (for failure messages).
    pub fn sip_summary(&self) -> String {
        self.sip_log().iter().map(SipLogEntry::summary).collect::<Vec<_>>().join("\n")
    }

    /// Waits (at most `limit`) until its SIP log has a message `wanted`
    /// accepts, and gives the first.
    pub fn wait_sip(&self, limit: Duration, mut wanted: impl FnMut(&SipLogEntry) -> bool) -> Option<SipLogEntry> {
        let mut found = None;
        wait_until(limit, || {
            found = self.sip_log().into_iter().find(|m| wanted(m));
            found.is_some()
        });
        found
    }

    /// Every line it printed so far (prompts taken off).
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).lines.clone()
    }

    /// Waits (at most `limit`) for a line of output `wanted` accepts, and
    /// gives the first (from the start of its output).
    pub fn wait_line(&self, limit: Duration, mut wanted: impl FnMut(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until(limit, || {
            let out = self.output.lock().unwrap_or_else(PoisonError::into_inner);
            found = out.lines.iter().find(|l| wanted(l)).cloned();
            found.is_some() || out.closed
        });
        found
    }

    /// Waits (at most `limit`) for a line of output containing `pattern`.
    pub fn wait_for(&self, pattern: &str, limit: Duration) -> Option<String> {
        self.wait_line(limit, |l| l.contains(pattern))
    }

    /// Every event it printed so far, in order.
    pub fn events(&self) -> Vec<LinphoneEvent> {
        self.output().iter().filter_map(|l| LinphoneEvent::parse(l)).collect()
    }

    /// Waits (at most `limit`) until some event so far matches `wanted`,
    /// and gives the first that does.
    pub fn wait_event(&self, limit: Duration, mut wanted: impl FnMut(&LinphoneEvent) -> bool) -> Option<LinphoneEvent> {
        let mut found = None;
        wait_until(limit, || {
            let out = self.output.lock().unwrap_or_else(PoisonError::into_inner);
            found = out.lines.iter().filter_map(|l| LinphoneEvent::parse(l)).find(|e| wanted(e));
            found.is_some() || out.closed
        });
        found
    }

    /// Sends one command line to linphonec's standard input.
    pub fn command(&self, line: &str) -> Result<(), String> {
        let mut stdin = self.stdin.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(stdin) = stdin.as_mut() else { return Err("linphonec's stdin is closed".to_owned()) };
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing {line:?} to linphonec: {e}"))
    }

    /// Calls `uri` (through the registrar, its outbound proxy).
    pub fn call(&self, uri: &str) -> Result<(), String> {
        self.command(&format!("call {uri}"))
    }

    /// Answers the ringing incoming call.
    pub fn answer(&self) -> Result<(), String> {
        self.command("answer")
    }

    /// Ends the current call: BYE when it is up, CANCEL while it rings
    /// out, and 603 Decline for an incoming one not answered yet.
    pub fn hangup(&self) -> Result<(), String> {
        self.command("terminate")
    }

    /// Declines the ringing incoming call (603 Decline; linphonec's
    /// `terminate` on an incoming call).
    pub fn decline(&self) -> Result<(), String> {
        self.command("terminate")
    }

    /// Sends `text` to `uri` in a MESSAGE (linphonec's `chat`).
    pub fn send_message(&self, uri: &str, text: &str) -> Result<(), String> {
        self.command(&format!("chat {uri} {text}"))
    }

    /// Unregisters (linphonec's `unregister`: REGISTER with expires 0)
    /// and waits (at most `limit`) for the outcome: true once the
    /// registration is cleared.
    pub fn unregister(&mut self, limit: Duration) -> bool {
        let before = self.registration_states().len();
        if self.command("unregister").is_err() {
            return false;
        }
        let done = |states: &[String]| {
            states.iter().skip(before).any(|s| s == "LinphoneRegistrationCleared" || s == "LinphoneRegistrationFailed")
        };
        wait_until(limit, || done(&self.registration_states()) || !self.is_running());
        self.registration_state().as_deref() == Some("LinphoneRegistrationCleared")
    }

    /// The registration states liblinphone logged, in order
    /// (`LinphoneRegistrationProgress`, `LinphoneRegistrationOk`,
    /// `LinphoneRegistrationFailed`, `LinphoneRegistrationCleared` …).
    pub fn registration_states(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("liblinphone-message-Account [") && l.contains("] moving from state ["))
            .filter_map(|l| {
                let start = l.rfind("] to [")? + "] to [".len();
                let end = start + l[start..].find(']')?;
                Some(l[start..end].to_owned())
            })
            .collect()
    }

    /// The latest registration state, if any.
    pub fn registration_state(&self) -> Option<String> {
        self.registration_states().pop()
    }

    /// Whether it is registered now (its latest registration state is
    /// `LinphoneRegistrationOk`).
    pub fn registered(&self) -> bool {
        self.registration_state().as_deref() == Some("LinphoneRegistrationOk")
    }

    /// Waits (at most `limit`) until it is registered; false if it was
    /// not by then, or it exited.
    pub fn wait_registered(&mut self, limit: Duration) -> bool {
        wait_until(limit, || self.registered() || !self.is_running()) && self.registered()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What to show when a test fails: the command, its configuration,
    /// its output, its SIP messages and the end of its log.
    pub fn report(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(150)..];
        let stderr = fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default();
        format!(
            "--- linphonec ({}) ---\ncommand: {}\n--- linphonerc ---\n{}--- output ---\n{}\n--- stderr ---\n{stderr}\
             --- SIP messages ---\n{}\n--- log (last {} lines) ---\n{}",
            self.options.user.name,
            self.command_line,
            self.config,
            self.output().join("\n"),
            self.sip_summary(),
            tail.len(),
            tail.join("\n")
        )
    }

    /// Stops it and waits for it: `unregister` when it is registered
    /// (with `auto_net_state_mon=0` its `quit` does not: liblinphone only
    /// unregisters at exit when it saw the network come up), `quit`, then
    /// SIGTERM (through `timeout`, which passes it on) after 10 s, SIGKILL
    /// after 5 s more. Dropping does the same.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if self.registered() {
            self.unregister(Duration::from_secs(5));
        }
        let Some(mut child) = self.child.take() else { return };
        let pid = Pid::from_child(&child);
        let _ = self.command("quit");
        let mut exited = wait_until(Duration::from_secs(10), || !matches!(child.try_wait(), Ok(None)));
        if !exited {
            let _ = kill_process_group(pid, Signal::TERM);
            exited = wait_until(Duration::from_secs(5), || !matches!(child.try_wait(), Ok(None)));
        }
        let _ = kill_process_group(pid, Signal::KILL);
        if !exited {
            eprintln!("linphonec in {} did not quit: killed", self.dir.path().display());
        }
        let _ = child.wait();
        self.stdin.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl fmt::Debug for Linphone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linphone")
            .field("user", &self.options.user.name)
            .field("sip_addr", &self.sip_addr)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// The harness's user called `name` (see [`USERS`]).
pub fn user(name: &str) -> User {
    *USERS.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("no user {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        let cases = [
            (
                "Receiving new incoming call from sip:alice@sipline.test, assigned id 1",
                Some(LinphoneEvent::IncomingCall { id: 1, from: "sip:alice@sipline.test".to_owned() }),
            ),
            (
                "Establishing call id to sip:bob@sipline.test, assigned id 2",
                Some(LinphoneEvent::OutgoingCall { id: 2, to: "sip:bob@sipline.test".to_owned() }),
            ),
            (
                "Call 1 with sip:alice@sipline.test connected.",
                Some(LinphoneEvent::Connected { id: 1, peer: "sip:alice@sipline.test".to_owned() }),
            ),
            (
                "Media streams established with sip:a@b for call 3 (audio).",
                Some(LinphoneEvent::StreamsRunning { id: 3 }),
            ),
            (
                "Call 1 with sip:alice@sipline.test ended (No error).",
                Some(LinphoneEvent::Ended {
                    id: 1,
                    peer: "sip:alice@sipline.test".to_owned(),
                    reason: "No error".to_owned(),
                }),
            ),
            ("Call 4 with sip:x@y error.", Some(LinphoneEvent::Error { id: 4, peer: "sip:x@y".to_owned() })),
            ("Call 2 to sip:x@y ringing.", Some(LinphoneEvent::Progress { id: 2, what: "ringing".to_owned() })),
            ("Call 2 to sip:x@y in progress.", Some(LinphoneEvent::Progress { id: 2, what: "in progress".to_owned() })),
            (
                "Message received from sip:alice@sipline.test: hello: there",
                Some(LinphoneEvent::Message {
                    from: "sip:alice@sipline.test".to_owned(),
                    text: "hello: there".to_owned(),
                }),
            ),
            ("No active call.", None),
            ("Calling sip:x@y", None),
        ];
        for (line, want) in cases {
            assert_eq!(LinphoneEvent::parse(line), want, "{line}");
        }
        assert_eq!(strip_prompts("linphonec> linphonec> Call 1 with a connected."), "Call 1 with a connected.");
    }

    #[test]
    fn parses_the_sip_log() {
        let log = "2026-12-04 21:04:31:050 belle-sip-message-channel [0x5]: message sent to [UDP://127.0.0.1:35280], size: [40] bytes\n\
                   REGISTER sip:sipline.test SIP/2.0\r\nCSeq: 20 REGISTER\r\nContent-Length: 0\r\n\r\n\n\
                   2026-12-04 21:04:31:051 belle-sip-message-Neither Expires header\n\
                   2026-12-04 21:04:31:060 belle-sip-message-channel [0x6]: received [99] new bytes from [TCP://127.0.0.1:9]:\n\
                   SIP/2.0 200 OK\r\nCSeq: 20 REGISTER\r\nContent-Length: 3\r\n\r\nabcACK sip:a@b SIP/2.0\r\nCall-ID: x\r\nl: 0\r\n\r\n\n\
                   2026-12-04 21:04:31:061 liblinphone-message-x\n";
        let log = parse_sip_log(log);
        assert_eq!(log.len(), 3, "{log:#?}");
        assert_eq!(
            (log[0].direction, log[0].transport.as_str(), log[0].peer.as_str()),
            (Direction::Sent, "UDP", "127.0.0.1:35280")
        );
        assert!(log[0].is_request("REGISTER"));
        assert_eq!(log[0].cseq_method(), Some("REGISTER"));
        assert!(log[1].is_response(200) && log[1].text.ends_with("\r\n\r\nabc"), "{:?}", log[1].text);
        assert_eq!((log[1].direction, log[1].transport.as_str()), (Direction::Received, "TCP"));
        assert!(log[2].is_request("ACK") && log[2].in_call("x"));
        assert!(!log[2].is_request("AC"));
    }
}
