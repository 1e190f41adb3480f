//! A real softphone for interop tests: baresip (Debian package
//! baresip-core, installed by `scripts/install-interop-deps`), registered
//! at a test's [`Kamailio`](crate::kamailio::Kamailio) as one of its users,
//! run headless and driven over its `ctrl_tcp` control socket.
//!
//! Everything stays on loopback: SIP on 127.0.0.1 (`sip_listen`,
//! `net_interface`), the registrar as outbound proxy (no DNS for the
//! domain), DNS pointed at 127.0.0.1:9 in case anything ever asks, no
//! STUN/TURN/ICE modules, and audio from the `ausine` generator to the
//! `aubridge` null player (no sound device is opened: no audio driver
//! module is loaded). baresip runs as `timeout N baresip -f <dir>` in a
//! temporary directory of its own and is stopped on drop. See
//! `tests/interop/README.md` for why each setting is there.
//!
//! ```no_run
//! use sipline_tests::baresip::{Baresip, BaresipOptions};
//! use sipline_tests::kamailio::{Kamailio, KamailioOptions};
//! use std::time::Duration;
//!
//! let kamailio = Kamailio::start(&KamailioOptions::default());
//! let carol = Baresip::start(&BaresipOptions::new(kamailio.user("carol"), kamailio.udp_addr()));
//! carol.dial("sip:bob@sipline.test").unwrap();
//! let up = carol.wait_event(Duration::from_secs(10), |e| e.kind == "CALL_ESTABLISHED");
//! ```

use crate::kamailio::{free_port, free_ports, programs, tcp_port_listening, wait_until, TempDir, User, LOOPBACK_V4};
use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use sipline::transport::Transport;
use std::fmt;
use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How baresip answers an incoming call (the account's `answermode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMode {
    /// Answers every call at once with 200 and SDP.
    #[default]
    Auto,
    /// Rings (180) until [`Baresip::answer`] is called.
    Manual,
}

/// How to start baresip.
#[derive(Debug, Clone)]
pub struct BaresipOptions {
    /// The user it registers as (AoR `sip:name@sipline.test`, digest
    /// username and password).
    pub user: User,
    /// The registrar, which is also its outbound proxy for every request
    /// (Kamailio's address for `transport`).
    pub registrar: SocketAddr,
    /// UDP (default) or TCP towards the registrar. TLS is not supported
    /// here.
    pub transport: Transport,
    /// Auto (default) or manual answer.
    pub answer_mode: AnswerMode,
    /// The registration interval asked for (`regint`, default 600 s).
    pub register_interval: Duration,
    /// How long it may take to start and register (default 10 s).
    pub startup_timeout: Duration,
    /// It is stopped after this long even if never dropped (default 5
    /// minutes), so a killed test process leaves nothing running.
    pub max_lifetime: Duration,
    /// Loads the `contact` and `presence` modules (default false): baresip
    /// then answers SUBSCRIBE for `presence` with PIDF (its
    /// `presence_online` / `presence_offline` commands change what it
    /// says), and subscribes to the presence of each of [`contacts`]
    /// marked `;presence=p2p`.
    ///
    /// [`contacts`]: BaresipOptions::contacts
    pub presence: bool,
    /// The lines of its `contacts` file (`"Name" <sip:…>;presence=p2p`),
    /// written when [`presence`](BaresipOptions::presence) is on.
    pub contacts: Vec<String>,
}

impl BaresipOptions {
    /// `user` registering at `registrar` over UDP, answering automatically.
    pub fn new(user: User, registrar: SocketAddr) -> BaresipOptions {
        BaresipOptions {
            user,
            registrar,
            transport: Transport::Udp,
            answer_mode: AnswerMode::Auto,
            register_interval: Duration::from_secs(600),
            startup_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(300),
            presence: false,
            contacts: Vec::new(),
        }
    }
}

/// One event baresip's `ctrl_tcp` module reported (a JSON object such as
/// `{"event":true,"type":"CALL_ESTABLISHED","class":"call",
/// "direction":"incoming","peeruri":"sip:alice@sipline.test",...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaresipEvent {
    /// `type`: `CALL_INCOMING`, `CALL_RINGING`, `CALL_ESTABLISHED`,
    /// `CALL_CLOSED`, `CALL_LOCAL_SDP`, `REGISTER_OK` …
    pub kind: String,
    /// `class`: `call`, `register`, `other` …
    pub class: String,
    /// `direction`: `incoming` or `outgoing`, for call events.
    pub direction: Option<String>,
    /// `peeruri`: the other party, for call events.
    pub peer_uri: Option<String>,
    /// `id`: baresip's id of the call (its Call-ID).
    pub call_id: Option<String>,
    /// `param`: the event's detail (for `CALL_CLOSED`, the reason).
    pub param: Option<String>,
    /// The whole JSON text.
    pub json: String,
}

/// One SIP message from baresip's trace (`-s`), which it logs as
/// `ESC[36;1m#`, a line `UDP 127.0.0.1:a -> 127.0.0.1:b`, the message,
/// and `ESC[;m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedMessage {
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// The address it came from (for one baresip sent: its own).
    pub from: String,
    /// The address it went to.
    pub to: String,
    /// The message, with CRLF line ends.
    pub text: String,
}

impl TracedMessage {
    /// Its first line (request line or status line).
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim_end()
    }

    /// Whether it is a request with this method.
    pub fn is_request(&self, method: &str) -> bool {
        self.start_line().strip_prefix(method).is_some_and(|rest| rest.starts_with(' '))
            && !self.start_line().starts_with("SIP/")
    }

    /// Whether it is a response with this status code.
    pub fn is_response(&self, code: u16) -> bool {
        self.start_line().starts_with(&format!("SIP/2.0 {code} "))
    }

    /// The value of the first header called `name` (case-insensitive;
    /// long names only).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().take_while(|l| !l.trim().is_empty()).skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Parses the SIP trace out of baresip's output.
fn parse_trace(log: &str) -> Vec<TracedMessage> {
    const START: &str = "\u{1b}[36;1m#\n";
    const END: &str = "\u{1b}[;m";
    log.split(START)
        .skip(1)
        .filter_map(|block| {
            let block = block.split(END).next()?;
            let (addrs, text) = block.split_once('\n')?;
            let mut parts = addrs.split_whitespace();
            let transport = parts.next()?.to_owned();
            let from = parts.next()?.to_owned();
            (parts.next()? == "->").then_some(())?;
            let to = parts.next()?.to_owned();
            Some(TracedMessage { transport, from, to, text: text.to_owned() })
        })
        .collect()
}

/// A JSON value of the flat objects `ctrl_tcp` writes.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Str(String),
    Bool(bool),
    Null,
    Number(String),
}

/// Parses one flat JSON object (values: strings, booleans, null, numbers;
/// no nesting, which `ctrl_tcp` never writes) into its members in order.
fn parse_flat_object(text: &str) -> Option<Vec<(String, Json)>> {
    let mut chars = text.trim().chars().peekable();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.peek().is_some_and(char::is_ascii_whitespace) {
            c.next();
        }
    };
    let string = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        if c.next()? != '"' {
            return None;
        }
        let mut out = String::new();
        loop {
            match c.next()? {
                '"' => return Some(out),
                '\\' => match c.next()? {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).map(|_| c.next()).collect::<Option<String>>()?;
                        let code = u32::from_str_radix(&hex, 16).ok()?;
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    other => out.push(other),
                },
                ch => out.push(ch),
            }
        }
    };
    skip_ws(&mut chars);
    if chars.next()? != '{' {
        return None;
    }
    let mut members = Vec::new();
    skip_ws(&mut chars);
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(members);
    }
    loop {
        skip_ws(&mut chars);
        let name = string(&mut chars)?;
        skip_ws(&mut chars);
        if chars.next()? != ':' {
            return None;
        }
        skip_ws(&mut chars);
        let value = if *chars.peek()? == '"' {
            Json::Str(string(&mut chars)?)
        } else {
            let mut word = String::new();
            while chars.peek().is_some_and(|ch| !matches!(ch, ',' | '}') && !ch.is_ascii_whitespace()) {
                word.push(chars.next()?);
            }
            match word.as_str() {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                "null" => Json::Null,
                w if !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
                    Json::Number(word)
                }
                _ => return None,
            }
        };
        members.push((name, value));
        skip_ws(&mut chars);
        match chars.next()? {
            ',' => {}
            '}' => return Some(members),
            _ => return None,
        }
    }
}

/// A JSON string literal for `text`.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Takes the complete netstrings (`<len>:<bytes>,`) off the front of
/// `buf`; `None` in the list for a malformed one (the rest is dropped).
fn take_netstrings(buf: &mut Vec<u8>) -> Vec<Option<String>> {
    let mut out = Vec::new();
    loop {
        let Some(colon) = buf.iter().position(|&b| b == b':') else {
            if buf.len() > 10 || !buf.iter().all(u8::is_ascii_digit) {
                out.push(None);
                buf.clear();
            }
            return out;
        };
        let len = std::str::from_utf8(&buf[..colon]).ok().and_then(|s| s.parse::<usize>().ok());
        let Some(len) = len else {
            out.push(None);
            buf.clear();
            return out;
        };
        let end = colon + 1 + len;
        if buf.len() <= end {
            return out;
        }
        if buf[end] != b',' {
            out.push(None);
            buf.clear();
            return out;
        }
        out.push(Some(String::from_utf8_lossy(&buf[colon + 1..end]).into_owned()));
        buf.drain(..=end);
    }
}

#[derive(Debug)]
struct Reply {
    token: String,
    ok: bool,
    data: String,
}

#[derive(Debug, Default)]
struct ControlState {
    events: Vec<BaresipEvent>,
    replies: Vec<Reply>,
    /// Messages that were neither (malformed JSON or netstrings).
    garbage: Vec<String>,
    closed: bool,
}

/// The connection to `ctrl_tcp`: commands out, replies and events in (on
/// a reader thread).
struct Control {
    writer: Mutex<TcpStream>,
    state: Arc<Mutex<ControlState>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    tokens: AtomicU64,
}

impl Control {
    fn connect(addr: SocketAddr, lifetime: Duration) -> std::io::Result<Control> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut reader_stream = stream.try_clone()?;
        let state = Arc::new(Mutex::new(ControlState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        // Bounded by the stop flag, the end of the stream, and at worst a
        // little more than baresip's own lifetime.
        let deadline = Instant::now() + lifetime + Duration::from_secs(30);
        let reader = thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while !sp.load(Ordering::Relaxed) && Instant::now() < deadline {
                match reader_stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        let messages = take_netstrings(&mut buf);
                        let mut state = st.lock().unwrap_or_else(PoisonError::into_inner);
                        for message in messages {
                            Control::file(&mut state, message);
                        }
                    }
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    }
                    Err(_) => break,
                }
            }
            st.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        });
        Ok(Control { writer: Mutex::new(stream), state, stop, reader: Some(reader), tokens: AtomicU64::new(1) })
    }

    fn file(state: &mut ControlState, message: Option<String>) {
        let Some(text) = message else {
            state.garbage.push("(malformed netstring)".to_owned());
            return;
        };
        let Some(members) = parse_flat_object(&text) else {
            state.garbage.push(text);
            return;
        };
        let get = |name: &str| members.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let string = |name: &str| match get(name) {
            Some(Json::Str(s)) => Some(s.clone()),
            Some(Json::Number(n)) => Some(n.clone()),
            _ => None,
        };
        if get("event") == Some(&Json::Bool(true)) {
            state.events.push(BaresipEvent {
                kind: string("type").unwrap_or_default(),
                class: string("class").unwrap_or_default(),
                direction: string("direction"),
                peer_uri: string("peeruri"),
                call_id: string("id"),
                param: string("param"),
                json: text,
            });
        } else if get("response") == Some(&Json::Bool(true)) {
            state.replies.push(Reply {
                token: string("token").unwrap_or_default(),
                ok: get("ok") == Some(&Json::Bool(true)),
                data: string("data").unwrap_or_default(),
            });
        } else {
            state.garbage.push(text);
        }
    }

    fn command(&self, command: &str, params: &str, limit: Duration) -> Result<String, String> {
        let token = format!("sipline-{}", self.tokens.fetch_add(1, Ordering::Relaxed));
        let json = format!(
            "{{\"command\":{},\"params\":{},\"token\":{}}}",
            json_string(command),
            json_string(params),
            json_string(&token)
        );
        let frame = format!("{}:{json},", json.len());
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(frame.as_bytes())
            .map_err(|e| format!("sending {json} to ctrl_tcp: {e}"))?;
        let mut reply = None;
        let mut closed = false;
        wait_until(limit, || {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = state.replies.iter().position(|r| r.token == token) {
                reply = Some(state.replies.remove(i));
            }
            closed = state.closed;
            reply.is_some() || closed
        });
        match reply {
            Some(Reply { ok: true, data, .. }) => Ok(data),
            Some(Reply { ok: false, data, .. }) => Err(format!("baresip refused {json}: {data}")),
            None if closed => Err(format!("ctrl_tcp closed before answering {json}")),
            None => Err(format!("no answer to {json} within {limit:?}")),
        }
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.writer.lock().unwrap_or_else(PoisonError::into_inner).shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A running baresip registered at the registrar as one user, stopped on
/// drop (SIGTERM: it unregisters and exits; SIGKILL after 5 s).
pub struct Baresip {
    child: Option<Child>,
    control: Control,
    user: User,
    sip_addr: SocketAddr,
    control_addr: SocketAddr,
    command_line: String,
    log_path: PathBuf,
    // Last: removed after the process has gone.
    dir: TempDir,
}

/// Why one start did not work; `retry` when other ports might help.
struct StartFailure {
    why: String,
    retry: bool,
}

/// The `config` file: see `tests/interop/README.md` for each setting.
fn config_text(module_path: &Path, sip_addr: SocketAddr, control_addr: SocketAddr, presence: bool) -> String {
    // contact (the `contacts` file) before presence, which reads it.
    let presence = if presence { "module_app\t\tcontact.so\nmodule_app\t\tpresence.so\n" } else { "" };
    format!(
        "# Written by tests/src/baresip.rs for one test's baresip.\n\
         poll_method\t\tepoll\n\
         # SIP on loopback only (TCP and UDP here, TLS on the port after).\n\
         sip_listen\t\t{sip_addr}\n\
         net_interface\t\t127.0.0.1\n\
         # Nothing should need DNS (the registrar is the outbound proxy);\n\
         # should anything ask, it asks 127.0.0.1:9, where nobody listens.\n\
         dns_server\t\t127.0.0.1:9\n\
         call_local_timeout\t30\n\
         call_max_calls\t\t4\n\
         # Audio: a 440 Hz sine as source, the null bridge as player and\n\
         # alert; no sound device. ausine only produces 48 kHz stereo.\n\
         audio_player\t\taubridge,nil\n\
         audio_alert\t\taubridge,nil\n\
         audio_source\t\tausine,440\n\
         ausrc_srate\t\t48000\n\
         ausrc_channels\t\t2\n\
         audio_level\t\tno\n\
         rtp_stats\t\tno\n\
         module_path\t\t{}\n\
         module\t\t\tg711.so\n\
         module\t\t\taubridge.so\n\
         module\t\t\tausine.so\n\
         module_tmp\t\taccount.so\n\
         # menu provides the commands (dial, hangup, accept);\n\
         # ctrl_tcp takes them as netstring JSON and reports events.\n\
         module_app\t\tmenu.so\n\
         module_app\t\tctrl_tcp.so\n\
         {presence}\
         ctrl_tcp_listen\t\t{control_addr}\n\
         statmode_default\toff\n\
         ringback_disabled\tyes\n",
        module_path.display()
    )
}

/// The `accounts` file: one account, registering through the registrar
/// as outbound proxy.
fn account_line(options: &BaresipOptions) -> String {
    let user = options.user;
    let transport = match options.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => panic!("the baresip harness does not do TLS"),
    };
    let answer = match options.answer_mode {
        AnswerMode::Auto => "auto",
        AnswerMode::Manual => "manual",
    };
    format!(
        "<sip:{name}@{domain}{transport}>;auth_pass={password};outbound=\"sip:{registrar}{transport}\";\
         answermode={answer};regint={regint};audio_codecs=PCMU/8000/1,PCMA/8000/1;mwi=no\n",
        name = user.name,
        domain = crate::kamailio::DOMAIN,
        password = user.password,
        registrar = options.registrar,
        regint = options.register_interval.as_secs().max(60),
    )
}

impl Baresip {
    /// Starts baresip (installing it first if need be, see
    /// [`programs`]) and waits until its registration succeeded. Panics
    /// with the reason and its log if it does not.
    pub fn start(options: &BaresipOptions) -> Baresip {
        match Baresip::try_start(options) {
            Ok(baresip) => baresip,
            Err(why) => panic!("{why}"),
        }
    }

    /// [`Baresip::start`], returning the reason instead of panicking. A
    /// start that loses its ports to another process is retried (up to
    /// three times in all) on new ones.
    pub fn try_start(options: &BaresipOptions) -> Result<Baresip, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Baresip::start_once(options) {
                Ok(baresip) => return Ok(baresip),
                Err(StartFailure { why, retry }) => {
                    if !retry {
                        return Err(why);
                    }
                    last = why;
                }
            }
        }
        Err(last)
    }

    fn start_once(options: &BaresipOptions) -> Result<Baresip, StartFailure> {
        let programs = programs();
        let fail = |why: String| StartFailure { why, retry: false };
        let dir = TempDir::new("baresip");
        // SIP on p (UDP, TCP) and its TLS listener on p + 1.
        let sip_addr = SocketAddr::new(LOOPBACK_V4, free_ports(&[LOOPBACK_V4], 2));
        let control_addr = SocketAddr::new(LOOPBACK_V4, free_port(&[LOOPBACK_V4]));
        dir.write("config", &config_text(&programs.baresip_modules, sip_addr, control_addr, options.presence));
        dir.write("accounts", &account_line(options));
        if options.presence {
            dir.write("contacts", &options.contacts.iter().fold(String::new(), |s, c| s + c + "\n"));
        }

        let log_path = dir.path().join("baresip.log");
        let log = fs::File::create(&log_path).map_err(|e| fail(format!("creating {}: {e}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|e| fail(format!("log file: {e}")))?;
        let lifetime = options.max_lifetime.as_secs().max(1);
        // -f: this directory only (never ~/.baresip); -s: SIP trace.
        let args = ["-f".to_owned(), dir.path().display().to_string(), "-s".to_owned()];
        let command_line = format!("timeout {lifetime} {} {}", programs.baresip.display(), args.join(" "));
        let child = Command::new(&programs.timeout)
            .arg("--kill-after=5")
            .arg(lifetime.to_string())
            .arg(&programs.baresip)
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("starting {command_line}: {e}")))?;
        let mut child = Some(child);

        // ctrl_tcp listens once the modules are loaded.
        let deadline = Instant::now() + options.startup_timeout;
        let read_log = || fs::read(&log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let failure = |child: &mut Option<Child>, why: &str| {
            let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(mut c) = child.take() {
                let _ = kill_process_group(Pid::from_child(&c), Signal::KILL);
                let _ = c.wait();
            }
            let log = read_log();
            StartFailure {
                retry: log.contains("Address already in use"),
                why: format!(
                    "baresip {why} (exit: {exited:?})\ncommand: {command_line}\n--- config ---\n{}\n--- accounts ---\n{}\n--- log ---\n{log}",
                    config_text(&programs.baresip_modules, sip_addr, control_addr, options.presence),
                    account_line(options)
                ),
            }
        };
        let up = wait_until(options.startup_timeout, || {
            tcp_port_listening(control_addr.port()) || child.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
        });
        if !up || !child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))) {
            return Err(failure(&mut child, "did not open its control socket"));
        }
        let control = match Control::connect(control_addr, options.max_lifetime) {
            Ok(control) => control,
            Err(e) => return Err(failure(&mut child, &format!("control socket {control_addr}: {e}"))),
        };
        let Some(child) = child else { unreachable!("checked above") };
        let mut baresip = Baresip {
            child: Some(child),
            control,
            user: options.user,
            sip_addr,
            control_addr,
            command_line: command_line.clone(),
            log_path: log_path.clone(),
            dir,
        };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        if !baresip.wait_registered(left) {
            let mut child = baresip.child.take();
            return Err(failure(&mut child, &format!("did not register within {:?}", options.startup_timeout)));
        }
        Ok(baresip)
    }

    /// The user it registered as.
    pub fn user(&self) -> User {
        self.user
    }

    /// Its address of record, `sip:name@sipline.test`.
    pub fn aor(&self) -> String {
        self.user.aor()
    }

    /// Where it listens for SIP (UDP and TCP on 127.0.0.1).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Its `ctrl_tcp` control socket.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Its temporary directory (`config`, `accounts`, `baresip.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command it was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Its output so far: its own log lines and the SIP trace (`-s`:
    /// every message sent and received, after a `#` banner line).
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Every SIP message it has sent and received so far (its `-s`
    /// trace), in order.
    pub fn sip_trace(&self) -> Vec<TracedMessage> {
        parse_trace(&self.log())
    }

    /// How many successful registrations it has logged (a line
    /// `carol@sipline.test: {0/UDP/v4} 200 OK (…) [1 binding]`; the 200 to
    /// an unregistration, with no binding left, does not count).
    pub fn registrations(&self) -> usize {
        let prefix = format!("{}@{}: {{", self.user.name, crate::kamailio::DOMAIN);
        self.log()
            .lines()
            .filter(|l| {
                l.starts_with(&prefix) && l.contains("} 200 ") && l.contains(" binding") && !l.contains("[0 binding")
            })
            .count()
    }

    /// Whether its unregistration was accepted: in its SIP trace, a 200
    /// to a REGISTER whose Contact says `expires=0` (or `Expires: 0`).
    pub fn unregistered(&self) -> bool {
        let trace = self.sip_trace();
        let zero = |m: &TracedMessage| {
            m.is_request("REGISTER")
                && (m.header("Contact").is_some_and(|c| c.contains("expires=0"))
                    || m.header("Expires").is_some_and(|e| e.trim() == "0"))
        };
        let cseqs: Vec<&str> = trace.iter().filter(|m| zero(m)).filter_map(|m| m.header("CSeq")).collect();
        trace.iter().any(|m| m.is_response(200) && m.header("CSeq").is_some_and(|c| cseqs.contains(&c)))
    }

    /// Whether baresip sent its unregistration with credentials (the
    /// answer to the registrar's 401): the registrar accepts it even when
    /// baresip exits before the 200 reaches it (or its log).
    pub fn sent_unregistration_with_credentials(&self) -> bool {
        self.sip_trace().iter().any(|m| {
            m.is_request("REGISTER")
                && m.header("Authorization").is_some()
                && (m.header("Contact").is_some_and(|c| c.contains("expires=0"))
                    || m.header("Expires").is_some_and(|e| e.trim() == "0"))
        })
    }

    /// Waits (at most `limit`) for a successful registration; false if
    /// none came, or it exited first.
    pub fn wait_registered(&mut self, limit: Duration) -> bool {
        wait_until(limit, || self.registrations() > 0 || !self.is_running()) && self.registrations() > 0
    }

    /// Sends a command to the `menu` module through `ctrl_tcp` and waits
    /// (at most 5 s) for its answer: its text when baresip says ok, the
    /// reason otherwise.
    pub fn command(&self, command: &str, params: &str) -> Result<String, String> {
        self.control.command(command, params, Duration::from_secs(5))
    }

    /// Places a call to `uri` (through the registrar).
    pub fn dial(&self, uri: &str) -> Result<(), String> {
        self.command("dial", uri).map(drop)
    }

    /// Hangs up the current call (sends BYE, or CANCEL while it rings).
    pub fn hangup(&self) -> Result<(), String> {
        self.command("hangup", "").map(drop)
    }

    /// Answers the ringing incoming call (manual answer mode).
    pub fn answer(&self) -> Result<(), String> {
        self.command("accept", "").map(drop)
    }

    /// Every event it has reported so far, in order.
    pub fn events(&self) -> Vec<BaresipEvent> {
        self.control.state.lock().unwrap_or_else(PoisonError::into_inner).events.clone()
    }

    /// Waits (at most `limit`) until some event so far matches `wanted`,
    /// and gives the first that does.
    pub fn wait_event(&self, limit: Duration, mut wanted: impl FnMut(&BaresipEvent) -> bool) -> Option<BaresipEvent> {
        let mut found = None;
        wait_until(limit, || {
            let state = self.control.state.lock().unwrap_or_else(PoisonError::into_inner);
            found = state.events.iter().find(|e| wanted(e)).cloned();
            found.is_some() || state.closed
        });
        found
    }

    /// Waits (at most `limit`) for a call event of type `kind`
    /// (`CALL_ESTABLISHED`, `CALL_CLOSED` …).
    pub fn wait_call_event(&self, kind: &str, limit: Duration) -> Option<BaresipEvent> {
        self.wait_event(limit, |e| e.kind == kind)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it and waits for it: SIGTERM (through `timeout`, which passes
    /// it on), on which baresip unregisters and exits; SIGKILL to what is
    /// left after 5 s. Dropping does the same.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = Pid::from_child(&child);
        let _ = kill_process(pid, Signal::TERM);
        // On SIGTERM baresip unregisters (a challenged REGISTER with
        // Expires: 0) before it exits; on a loaded machine that takes
        // seconds, and a kill before its 200 leaves the binding behind.
        let stopped = wait_until(Duration::from_secs(30), || !matches!(child.try_wait(), Ok(None)));
        let _ = kill_process_group(pid, Signal::KILL);
        if !stopped {
            eprintln!("baresip in {} did not stop within 30 s of SIGTERM: killed", self.dir.path().display());
            let _ = child.wait();
        }
        self.control.shut();
    }
}

impl fmt::Debug for Baresip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Baresip")
            .field("user", &self.user.name)
            .field("sip_addr", &self.sip_addr)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
        self.control.shut();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!("--- baresip log (last {} lines) ---\n{}", tail.len(), tail.join("\n"));
            let state = self.control.state.lock().unwrap_or_else(PoisonError::into_inner);
            let events: Vec<&str> = state.events.iter().map(|e| e.json.as_str()).collect();
            eprintln!("--- baresip events ---\n{}", events.join("\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_replies() {
        let mut buf = b"50:{\"response\":true,\"ok\":true,\"data\":\"\",\"token\":\"t1\"},".to_vec();
        buf.extend_from_slice(
            b"60:{\"event\":true,\"type\":\"CALL_CLOSED\",\"param\":\"a \\\"b\\\" \\u00e9\"},12:{\"event\":",
        );
        let messages = take_netstrings(&mut buf);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(buf, b"12:{\"event\":");
        let mut state = ControlState::default();
        for m in messages {
            Control::file(&mut state, m);
        }
        assert!(state.garbage.is_empty(), "{:?}", state.garbage);
        assert_eq!(state.replies.len(), 1);
        assert!(state.replies[0].ok);
        assert_eq!(state.replies[0].token, "t1");
        assert_eq!(state.events[0].kind, "CALL_CLOSED");
        assert_eq!(state.events[0].param.as_deref(), Some("a \"b\" é"));
    }

    #[test]
    fn parses_the_sip_trace() {
        let log = "baresip is ready.\n\u{1b}[36;1m#\nUDP 127.0.0.1:5 -> 127.0.0.1:6\nBYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n\r\n\u{1b}[;m\nline\n\u{1b}[36;1m#\nTCP 127.0.0.1:6 -> 127.0.0.1:5\nSIP/2.0 200 OK\r\n\r\n\u{1b}[;m\n";
        let trace = parse_trace(log);
        assert_eq!(trace.len(), 2, "{trace:?}");
        assert!(trace[0].is_request("BYE"));
        assert!(!trace[0].is_request("BY"));
        assert_eq!(trace[0].header("via"), Some("SIP/2.0/UDP x"));
        assert_eq!((trace[1].transport.as_str(), trace[1].from.as_str()), ("TCP", "127.0.0.1:6"));
        assert!(trace[1].is_response(200));
        assert!(!trace[1].is_request("SIP/2.0"));
    }

    #[test]
    fn rejects_malformed_input() {
        let mut buf = b"5:abcdef".to_vec();
        assert_eq!(take_netstrings(&mut buf), vec![None]);
        assert!(buf.is_empty());
        assert_eq!(parse_flat_object("{\"a\":tru}"), None);
        assert_eq!(parse_flat_object("{\"a\":1,}"), None);
        assert_eq!(
            parse_flat_object("{ \"a\" : 12 , \"b\":null }"),
            Some(vec![("a".to_owned(), Json::Number("12".to_owned())), ("b".to_owned(), Json::Null)])
        );
        assert_eq!(json_string("x\"y\\\n"), "\"x\\\"y\\\\\\n\"");
    }
}
