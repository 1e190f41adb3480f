//! Real SIP peers for interop tests: Kamailio as registrar and proxy
//! (`tests/interop/kamailio.cfg`) and SIPp (`tests/interop/sipp/`), both
//! from Debian packages installed by `scripts/install-interop-deps` (which
//! also installs baresip, see [`crate::baresip`]; [`programs`] finds all
//! three).
//!
//! Everything listens on loopback only, on ports picked here, with its
//! files in a temporary directory of its own, so tests can run in
//! parallel. Every process is bounded in time: Kamailio runs under
//! coreutils `timeout` (and is stopped on drop), SIPp too.
//!
//! ```no_run
//! use sipline_tests::kamailio::{Kamailio, KamailioOptions, Sipp};
//!
//! let kamailio = Kamailio::start(&KamailioOptions::default());
//! let alice = kamailio.user("alice");
//! let out = Sipp::scenario("register_auth.xml")
//!     .remote(kamailio.udp_addr())
//!     .register_as(alice, kamailio.domain())
//!     .run();
//! assert!(out.success(), "{out}");
//! ```

use crate::certs::Ca;
use rustix::process::{getpgid, kill_process, kill_process_group, Pid, Signal};
use sipline::transport::Transport;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 127.0.0.1.
pub const LOOPBACK_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// ::1.
pub const LOOPBACK_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The domain (and digest realm) Kamailio serves.
pub const DOMAIN: &str = "sipline.test";

/// A user Kamailio knows: the user part of its address of record, which is
/// also its digest username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// User name (AoR user part, digest username).
    pub name: &'static str,
    /// Digest password.
    pub password: &'static str,
}

impl User {
    /// The address of record, `sip:name@sipline.test`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{DOMAIN}", self.name)
    }
}

/// The users in `kamailio.cfg` (its `htable:mod-init` route); keep the two
/// in step.
pub const USERS: [User; 3] = [
    User { name: "alice", password: "alicepw" },
    User { name: "bob", password: "bobpw" },
    User { name: "carol", password: "carolpw" },
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/interop/`: the Kamailio config and the SIPp scenarios.
pub fn interop_dir() -> PathBuf {
    manifest_dir().join("interop")
}

/// `scripts/install-interop-deps`, which installs Kamailio and SIPp.
pub fn install_script() -> PathBuf {
    let dir = manifest_dir();
    dir.parent().unwrap_or(&dir).join("scripts").join("install-interop-deps")
}

// ---------------------------------------------------------------------------
// The programs

/// Where the programs the interop tests run are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `kamailio` binary.
    pub kamailio: PathBuf,
    /// The `sipp` binary.
    pub sipp: PathBuf,
    /// coreutils `timeout`, which bounds every process started here.
    pub timeout: PathBuf,
    /// Kamailio's `tls.so` module.
    pub tls_module: PathBuf,
    /// The `baresip` softphone (package baresip-core).
    pub baresip: PathBuf,
    /// baresip's module directory (holding `aubridge.so`, `ausine.so`,
    /// `g711.so`, `ctrl_tcp.so` …).
    pub baresip_modules: PathBuf,
    /// sipvicious's extension scanner `svwar` (package sipvicious): what
    /// an attacker points at a new server.
    pub svwar: PathBuf,
    /// sipvicious's password cracker `svcrack`.
    pub svcrack: PathBuf,
    /// `redis-server` (package redis-server): the location store several
    /// `serve` instances share (issue 20, [`crate::redis`]).
    pub redis_server: PathBuf,
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `name` on `PATH` or in the `sbin` directories (Kamailio lives in
/// `/usr/sbin`, often not on a user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].into_iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Kamailio's module directory, as `kamailio -h` reports its default.
fn kamailio_module_dir(kamailio: &Path, timeout: &Path) -> Option<PathBuf> {
    let out = Command::new(timeout).arg("10").arg(kamailio).arg("-h").stdin(Stdio::null()).output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.trim_start().starts_with("-L "))?;
    let start = line.find("(default: ")? + "(default: ".len();
    let end = start + line[start..].find(')')?;
    Some(PathBuf::from(&line[start..end]))
}

/// The baresip modules the harness loads; all in package baresip-core.
pub const BARESIP_MODULES: [&str; 6] = ["account.so", "menu.so", "ctrl_tcp.so", "g711.so", "aubridge.so", "ausine.so"];

/// baresip's module directory: `lib/baresip/modules` (or the multiarch
/// `lib/<triplet>/baresip/modules`) under the prefix the binary is in,
/// when it holds every module of [`BARESIP_MODULES`].
fn baresip_module_dir(baresip: &Path) -> Option<PathBuf> {
    let prefix = baresip.parent()?.parent()?;
    let lib = prefix.join("lib");
    let mut candidates = vec![lib.join("baresip").join("modules")];
    if let Ok(entries) = fs::read_dir(&lib) {
        let mut multiarch: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("baresip").join("modules"))
            .filter(|p| p.is_dir())
            .collect();
        multiarch.sort();
        candidates.extend(multiarch);
    }
    candidates.into_iter().find(|dir| BARESIP_MODULES.iter().all(|m| dir.join(m).is_file()))
}

fn locate() -> Result<Programs, String> {
    let mut missing = Vec::new();
    let kamailio = find_program("kamailio");
    let sipp = find_program("sipp");
    let timeout = find_program("timeout");
    let baresip = find_program("baresip");
    let baresip_modules = baresip.as_deref().and_then(baresip_module_dir);
    match (&baresip, &baresip_modules) {
        (None, _) => missing.push("baresip (package baresip-core)".to_owned()),
        (Some(_), None) => {
            missing.push(format!("baresip modules {} (package baresip-core)", BARESIP_MODULES.join(" ")));
        }
        (Some(_), Some(_)) => {}
    }
    if kamailio.is_none() {
        missing.push("kamailio (package kamailio)".to_owned());
    }
    if sipp.is_none() {
        missing.push("sipp (package sip-tester)".to_owned());
    }
    if timeout.is_none() {
        missing.push("timeout (package coreutils)".to_owned());
    }
    let (svwar, svcrack) = (find_program("svwar"), find_program("svcrack"));
    if svwar.is_none() || svcrack.is_none() {
        missing.push("svwar and svcrack (package sipvicious)".to_owned());
    }
    let redis_server = find_program("redis-server");
    if redis_server.is_none() {
        missing.push("redis-server (package redis-server)".to_owned());
    }
    let tls_module = match (&kamailio, &timeout) {
        (Some(k), Some(t)) => {
            let module = kamailio_module_dir(k, t).map(|d| d.join("tls.so"));
            match module {
                Some(m) if m.is_file() => Some(m),
                Some(m) => {
                    missing.push(format!("{} (package kamailio-tls-modules)", m.display()));
                    None
                }
                None => {
                    missing.push("Kamailio's module directory (`kamailio -h` did not say)".to_owned());
                    None
                }
            }
        }
        _ => None,
    };
    match (kamailio, sipp, timeout, tls_module, baresip, baresip_modules, svwar, svcrack, redis_server) {
        (
            Some(kamailio),
            Some(sipp),
            Some(timeout),
            Some(tls_module),
            Some(baresip),
            Some(baresip_modules),
            Some(svwar),
            Some(svcrack),
            Some(redis_server),
        ) if missing.is_empty() => {
            Ok(Programs { kamailio, sipp, timeout, tls_module, baresip, baresip_modules, svwar, svcrack, redis_server })
        }
        _ => Err(missing.join(", ")),
    }
}

fn ensure_programs() -> Result<Programs, String> {
    let missing = match locate() {
        Ok(programs) => return Ok(programs),
        Err(missing) => missing,
    };
    let script = install_script();
    if std::env::var_os("SIPLINE_NO_INSTALL").is_some() {
        return Err(format!(
            "interop tests need {missing}; SIPLINE_NO_INSTALL is set, so {} was not run",
            script.display()
        ));
    }
    // The script bounds its own apt-get runs; `timeout` bounds the whole
    // when there is one (it is itself one of the things checked for).
    let mut command = match find_program("timeout") {
        Some(timeout) => {
            let mut c = Command::new(timeout);
            c.arg("--kill-after=10").arg("1800").arg(&script);
            c
        }
        None => Command::new(&script),
    };
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("interop tests need {missing}; running {} failed: {e}", script.display()))?;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("interop tests need {missing}; {} failed ({}):\n{log}", script.display(), out.status));
    }
    locate().map_err(|still| {
        format!("interop tests need {still}, still missing after {} succeeded:\n{log}", script.display())
    })
}

/// The programs, installed by `scripts/install-interop-deps` on first use
/// in this process if any is missing (once per process, however many
/// tests ask at once). Panics with the reason when they cannot be had: an
/// interop test never passes by skipping.
pub fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Result<Programs, String>> = OnceLock::new();
    match PROGRAMS.get_or_init(ensure_programs) {
        Ok(programs) => programs,
        Err(why) => panic!("{why}"),
    }
}

// ---------------------------------------------------------------------------
// Ports, sockets, directories

/// A port free for both UDP and TCP on every address in `ips` (the OS's
/// choice, so in the ephemeral range), never handed out before by this
/// process. A port is only free until someone binds it: whoever uses it
/// should bind it soon, and cope with losing the race.
pub fn free_port(ips: &[IpAddr]) -> u16 {
    free_ports(ips, 1)
}

/// The first of `count` consecutive ports each free for both UDP and TCP
/// on every address in `ips`, none handed out before by this process (see
/// [`free_port`]). For peers that bind a port and the ones after it
/// (baresip: SIP on `p`, its TLS listener on `p + 1`).
pub fn free_ports(ips: &[IpAddr], count: u16) -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let first = ips.first().copied().unwrap_or(LOOPBACK_V4);
    let count = count.max(1);
    for _ in 0..500 {
        let Ok(listener) = TcpListener::bind((first, 0)) else { continue };
        let Ok(addr) = listener.local_addr() else { continue };
        let port = addr.port();
        let Some(last) = port.checked_add(count - 1) else { continue };
        // Held until the check is over, so that each is seen free at once.
        let mut held = Vec::new();
        let free = (port..=last).all(|p| {
            ips.iter().all(|&ip| {
                let tcp = if ip == first && p == port {
                    true
                } else {
                    TcpListener::bind((ip, p)).map(|l| held.push(l)).is_ok()
                };
                tcp && UdpSocket::bind((ip, p)).is_ok()
            })
        });
        drop(held);
        if !free {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = handed_out.get_or_insert_with(HashSet::new);
        if (port..=last).all(|p| !set.contains(&p)) {
            set.extend(port..=last);
            return port;
        }
    }
    panic!("no {count} free consecutive ports on {ips:?} after 500 tries");
}

/// Sockets in one of the kernel's tables (`/proc/net/udp` …) bound to
/// `port` on any address, in `states` (hex, as the table writes them).
fn socket_in_table(tables: &[&str], port: u16, states: &[&str]) -> bool {
    let wanted = format!("{port:04X}");
    tables.iter().any(|table| {
        let Ok(text) = fs::read_to_string(Path::new("/proc/net").join(table)) else { return false };
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].rsplit(':').next() == Some(wanted.as_str()) && states.contains(&fields[3])
        })
    })
}

/// Whether some process has a UDP socket bound to `port` (Linux:
/// `/proc/net/udp*`). Looking does not touch the port, unlike trying to
/// bind it, which could make the process starting up fail.
pub fn udp_port_bound(port: u16) -> bool {
    socket_in_table(&["udp", "udp6"], port, &["07"])
}

/// Whether some process listens on TCP `port` (Linux: `/proc/net/tcp*`).
pub fn tcp_port_listening(port: u16) -> bool {
    socket_in_table(&["tcp", "tcp6"], port, &["0A"])
}

/// Polls `ready` every 20 ms until it holds or `limit` has passed.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A directory of its own under the system's temporary directory, removed
/// on drop (kept when `SIPLINE_KEEP_TMP` is set, to look at afterwards).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory whose name starts with `sipline-{prefix}-`.
    pub fn new(prefix: &str) -> TempDir {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name =
            format!("sipline-{prefix}-{}-{}-{nanos:x}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to the file `name` in it; returns the file's path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SIPLINE_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Sends one datagram from a fresh socket on loopback to `to` (the text
/// `request` makes from the socket's own address) and returns the first
/// answer within `wait`, as text.
pub fn udp_exchange(to: SocketAddr, request: impl FnOnce(SocketAddr) -> String, wait: Duration) -> Option<String> {
    let local = if to.is_ipv4() { LOOPBACK_V4 } else { LOOPBACK_V6 };
    let socket = UdpSocket::bind((local, 0)).ok()?;
    socket.set_read_timeout(Some(wait)).ok()?;
    let request = request(socket.local_addr().ok()?);
    socket.send_to(request.as_bytes(), to).ok()?;
    let mut buf = vec![0u8; 65_536];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A minimal OPTIONS for `to` as a datagram from `from` (headers of
/// §8.1.1 only); `extra` lines (each ending in CRLF) go before the end.
pub fn options_request(to: SocketAddr, from: SocketAddr, extra: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", std::process::id());
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-sipline-probe-{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{DOMAIN}>;tag=probe{id}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: probe-{id}@sipline.test\r\n\
         CSeq: 1 OPTIONS\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code of a response's status line.
pub fn status_code(response: &str) -> Option<u16> {
    let rest = response.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Kamailio

/// Whether Kamailio listens for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KamailioTls {
    /// UDP and TCP only.
    #[default]
    Off,
    /// TLS too, on a port of its own, with a certificate for
    /// `sipline.test`, 127.0.0.1 and ::1 issued by [`Kamailio::ca`].
    On,
    /// TLS, and clients must present a certificate issued by
    /// [`Kamailio::ca`].
    Mutual,
}

/// The digest algorithm Kamailio challenges with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestAlgorithm {
    /// MD5 (RFC 2617).
    #[default]
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

/// How to start Kamailio.
#[derive(Debug, Clone)]
pub struct KamailioOptions {
    /// TLS or not.
    pub tls: KamailioTls,
    /// Listen on ::1 as well (same ports).
    pub ipv6: bool,
    /// Offer `qop=auth` in challenges (default); without it, RFC 2069 style.
    pub qop: bool,
    /// The digest algorithm (default MD5).
    pub algorithm: DigestAlgorithm,
    /// Kamailio's log level (`debug`): 2 (default) logs one line per
    /// request and reply, 3 and up much more.
    pub debug: u8,
    /// How long Kamailio may take to answer an OPTIONS (default 10 s).
    pub startup_timeout: Duration,
    /// Kamailio is stopped after this long even if never dropped (default
    /// 10 minutes), so a killed test process leaves nothing running.
    pub max_lifetime: Duration,
    /// Another configuration file than `tests/interop/kamailio.cfg`
    /// (default none). It gets the same defines (`SIPLINE_IP`,
    /// `SIPLINE_PORT`, `SIPLINE_DOMAIN` …) and must answer an OPTIONS for
    /// the server itself with 200 (the readiness probe).
    pub config: Option<PathBuf>,
    /// Further `-A` defines (`NAME` or `NAME=value`; a string value keeps
    /// its quotes), after the harness's own (default none).
    pub defines: Vec<String>,
}

impl Default for KamailioOptions {
    fn default() -> KamailioOptions {
        KamailioOptions {
            tls: KamailioTls::Off,
            ipv6: false,
            qop: true,
            algorithm: DigestAlgorithm::Md5,
            debug: 2,
            startup_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(600),
            config: None,
            defines: Vec::new(),
        }
    }
}

/// Kamailio's addresses (all loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KamailioAddrs {
    /// UDP and TCP on 127.0.0.1 (one port for both).
    pub v4: SocketAddr,
    /// TLS on 127.0.0.1.
    pub tls_v4: Option<SocketAddr>,
    /// UDP and TCP on ::1.
    pub v6: Option<SocketAddr>,
    /// TLS on ::1.
    pub tls_v6: Option<SocketAddr>,
}

struct Pki {
    ca: Ca,
    ca_pem: PathBuf,
}

/// A running Kamailio (registrar and proxy for [`DOMAIN`], users
/// [`USERS`]), stopped on drop.
pub struct Kamailio {
    child: Option<Child>,
    addrs: KamailioAddrs,
    pki: Option<Pki>,
    command_line: String,
    log_path: PathBuf,
    // Last: removed after the process has gone.
    dir: TempDir,
}

/// Why one start did not work; `retry` when another port might help.
struct StartFailure {
    why: String,
    retry: bool,
}

/// `-A` defines hold their value as a config token; a string needs quotes.
fn define(name: &str, value: impl fmt::Display) -> String {
    format!("{name}={value}")
}

fn tls_cfg(dir: &TempDir, mutual: bool, ca_pem: &Path, chain: &Path, key: &Path) -> PathBuf {
    let client_checks = if mutual {
        format!("verify_certificate = yes\nrequire_certificate = yes\nca_list = {}\n", ca_pem.display())
    } else {
        "verify_certificate = no\nrequire_certificate = no\n".to_owned()
    };
    let text = format!(
        "# Written by tests/src/kamailio.rs for one test's Kamailio.\n\
         [server:default]\n\
         method = TLSv1.2+\n\
         certificate = {}\n\
         private_key = {}\n\
         {client_checks}\n\
         # Connections Kamailio opens (to a registered contact over TLS):\n\
         # test peers have test certificates, so no checks.\n\
         [client:default]\n\
         method = TLSv1.2+\n\
         verify_certificate = no\n\
         require_certificate = no\n",
        chain.display(),
        key.display()
    );
    dir.write("tls.cfg", &text)
}

impl Kamailio {
    /// Starts Kamailio (installing it first if need be, see [`programs`]),
    /// and waits until it answers an OPTIONS over UDP and accepts TCP.
    /// Panics with the reason and Kamailio's log if it does not.
    pub fn start(options: &KamailioOptions) -> Kamailio {
        match Kamailio::try_start(options) {
            Ok(kamailio) => kamailio,
            Err(why) => panic!("{why}"),
        }
    }

    /// [`Kamailio::start`], returning the reason instead of panicking.
    /// A start that loses its ports to another process is retried (up to
    /// three times in all) on new ones.
    pub fn try_start(options: &KamailioOptions) -> Result<Kamailio, String> {
        let programs = programs();
        let mut last = String::new();
        for _ in 0..3 {
            match Kamailio::start_once(programs, options) {
                Ok(kamailio) => return Ok(kamailio),
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

    fn start_once(programs: &Programs, options: &KamailioOptions) -> Result<Kamailio, StartFailure> {
        let tls = options.tls != KamailioTls::Off;
        let dir = TempDir::new("kamailio");
        let ips: &[IpAddr] = if options.ipv6 { &[LOOPBACK_V4, LOOPBACK_V6] } else { &[LOOPBACK_V4] };
        let port = free_port(ips);
        let tls_port = tls.then(|| free_port(ips));

        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |a: &str| args.push(a.into());
        arg("-f");
        let config = options.config.clone().unwrap_or_else(|| interop_dir().join("kamailio.cfg"));
        arg(&config.display().to_string());
        // Foreground (no daemon), log to stderr; 256 MB shared memory,
        // 16 MB per process; two workers per listener.
        for a in ["-DD", "-E", "-m", "256", "-M", "16", "-n", "2"] {
            arg(a);
        }
        // Run files and working directory of its own.
        arg("-Y");
        arg(&dir.path().display().to_string());
        arg("-P");
        arg(&dir.path().join("kamailio.pid").display().to_string());
        arg("-w");
        arg(&dir.path().display().to_string());
        let challenge = u8::from(options.qop);
        let defines = [
            define("SIPLINE_IP", LOOPBACK_V4),
            define("SIPLINE_PORT", port),
            define("SIPLINE_DOMAIN", format!("\"{DOMAIN}\"")),
            define("SIPLINE_DEBUG", options.debug),
            define("SIPLINE_CHALLENGE", challenge),
            define("SIPLINE_STALE", challenge | 16),
        ];
        for d in defines.iter().chain(&options.defines) {
            arg("-A");
            arg(d);
        }
        if options.ipv6 {
            arg("-A");
            arg("WITH_IPV6");
            arg("-A");
            arg(&define("SIPLINE_IP6", format!("[{LOOPBACK_V6}]")));
        }
        if options.algorithm == DigestAlgorithm::Sha256 {
            arg("-A");
            arg("WITH_SHA256");
        }
        let mut pki = None;
        if let Some(tls_port) = tls_port {
            // ECDSA throughout: linphone's mbedtls reads no Ed25519.
            let ca = Ca::new_ecdsa("sipline interop CA");
            let leaf = ca.issue_ecdsa(&[DOMAIN, "127.0.0.1", "::1"]);
            let ca_pem = dir.write("ca.pem", &ca.pem);
            let chain = dir.write("server-chain.pem", &leaf.chain_pem);
            let key = dir.write("server-key.pem", &leaf.key_pem);
            let cfg = tls_cfg(&dir, options.tls == KamailioTls::Mutual, &ca_pem, &chain, &key);
            arg("-A");
            arg("WITH_TLS");
            arg("-A");
            arg(&define("SIPLINE_TLS_PORT", tls_port));
            arg("-A");
            arg(&define("SIPLINE_TLS_CFG", format!("\"{}\"", cfg.display())));
            pki = Some(Pki { ca, ca_pem });
        }

        let log_path = dir.path().join("kamailio.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| StartFailure { why: format!("creating {}: {e}", log_path.display()), retry: false })?;
        let log_err = log.try_clone().map_err(|e| StartFailure { why: format!("log file: {e}"), retry: false })?;
        let lifetime = options.max_lifetime.as_secs().max(1);
        let mut command = Command::new(&programs.timeout);
        command
            .arg("--kill-after=5")
            .arg(lifetime.to_string())
            .arg(&programs.kamailio)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // A process group of its own: stopping it reaches Kamailio's
            // children too, and nothing else.
            .process_group(0);
        let command_line = format!(
            "{} {}",
            programs.kamailio.display(),
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        let child = command.spawn().map_err(|e| StartFailure {
            why: format!("starting {}: {e}", programs.kamailio.display()),
            retry: false,
        })?;

        let v4 = SocketAddr::new(LOOPBACK_V4, port);
        let addrs = KamailioAddrs {
            v4,
            tls_v4: tls_port.map(|p| SocketAddr::new(LOOPBACK_V4, p)),
            v6: options.ipv6.then(|| SocketAddr::new(LOOPBACK_V6, port)),
            tls_v6: tls_port.filter(|_| options.ipv6).map(|p| SocketAddr::new(LOOPBACK_V6, p)),
        };
        let mut kamailio = Kamailio { child: Some(child), addrs, pki, command_line, log_path, dir };
        kamailio.wait_ready(options.startup_timeout)?;
        Ok(kamailio)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + limit;
        let mut tcp_up = false;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = self.log();
                    return Err(StartFailure {
                        retry: log.contains("Address already in use"),
                        why: format!(
                            "Kamailio exited at start-up ({status})\ncommand: {}\n--- log ---\n{log}",
                            self.command_line
                        ),
                    });
                }
            }
            if !tcp_up {
                tcp_up = TcpStream::connect_timeout(&self.addrs.v4, Duration::from_millis(200)).is_ok();
            }
            if tcp_up && self.ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(StartFailure {
                    retry: false,
                    why: format!(
                        "Kamailio did not answer OPTIONS on {} within {limit:?} (TCP accepted: {tcp_up})\n\
                         command: {}\n--- log ---\n{}",
                        self.addrs.v4,
                        self.command_line,
                        self.log()
                    ),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends an OPTIONS for the server itself over UDP; whether a 200 came
    /// back within 300 ms.
    pub fn ping(&self) -> bool {
        let to = self.addrs.v4;
        udp_exchange(to, |from| options_request(to, from, ""), Duration::from_millis(300)).and_then(|r| status_code(&r))
            == Some(200)
    }

    /// All its addresses.
    pub fn addrs(&self) -> KamailioAddrs {
        self.addrs
    }

    /// UDP on 127.0.0.1.
    pub fn udp_addr(&self) -> SocketAddr {
        self.addrs.v4
    }

    /// TCP on 127.0.0.1 (the same port as UDP).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.addrs.v4
    }

    /// TLS on 127.0.0.1, when started with `tls`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addrs.tls_v4
    }

    /// The address for `transport` on 127.0.0.1 (`None`: TLS not enabled).
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp | Transport::Tcp => Some(self.addrs.v4),
            Transport::Tls => self.addrs.tls_v4,
        }
    }

    /// The address for `transport` on ::1 (`None`: not enabled).
    pub fn addr6(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp | Transport::Tcp => self.addrs.v6,
            Transport::Tls => self.addrs.tls_v6,
        }
    }

    /// A URI that reaches Kamailio itself over `transport` on 127.0.0.1:
    /// `sip:127.0.0.1:p`, `sip:127.0.0.1:p;transport=tcp`,
    /// `sips:127.0.0.1:p`. Its certificate names 127.0.0.1, so the `sips:`
    /// URI verifies (RFC 5922). Panics for TLS when TLS is off.
    pub fn uri(&self, transport: Transport) -> String {
        let addr = self.addr(transport).expect("Kamailio was started without TLS");
        match transport {
            Transport::Udp => format!("sip:{addr}"),
            Transport::Tcp => format!("sip:{addr};transport=tcp"),
            Transport::Tls => format!("sips:{addr}"),
        }
    }

    /// The domain it is registrar and proxy for, also the digest realm.
    pub fn domain(&self) -> &'static str {
        DOMAIN
    }

    /// Every user it knows.
    pub fn users(&self) -> &'static [User] {
        &USERS
    }

    /// The user called `name`; panics if there is none.
    pub fn user(&self, name: &str) -> User {
        *USERS.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("Kamailio has no user {name}"))
    }

    /// The CA that issued its TLS certificate (and issues client
    /// certificates for mutual TLS), when started with TLS.
    pub fn ca(&self) -> Option<&Ca> {
        self.pki.as_ref().map(|p| &p.ca)
    }

    /// That CA's certificate as a PEM file, for configs that read files.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.pki.as_ref().map(|p| p.ca_pem.as_path())
    }

    /// Its temporary directory (run files, TLS files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command it was started with (inside `timeout`).
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The main Kamailio process, from its pid file, if it is one of ours.
    fn main_pid(&self, group: Pid) -> Option<Pid> {
        let text = fs::read_to_string(self.dir.path().join("kamailio.pid")).ok()?;
        let pid = Pid::from_raw(text.trim().parse().ok()?)?;
        (getpgid(Some(pid)).ok()? == group).then_some(pid)
    }

    /// Stops it and waits for it: SIGTERM to the main Kamailio process,
    /// which stops its children in order (signalling them all at once
    /// leaves its TCP process hanging more often; the config's
    /// `exit_timeout` has the main process kill a hung child after 1 s),
    /// then SIGKILL to whatever of its process group is left after 5 s.
    /// Dropping does the same.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = Pid::from_child(&child);
        match self.main_pid(group) {
            Some(main) => {
                let _ = kill_process(main, Signal::TERM);
            }
            None => {
                let _ = kill_process_group(group, Signal::TERM);
            }
        }
        let stopped = wait_until(Duration::from_secs(5), || !matches!(child.try_wait(), Ok(None)));
        // Anything of the group still there (the main process already
        // gone, or not gone in time) is killed.
        let _ = kill_process_group(group, Signal::KILL);
        if !stopped {
            eprintln!("Kamailio in {} did not stop within 5 s of SIGTERM: killed", self.dir.path().display());
            let _ = child.wait();
        }
    }
}

impl fmt::Debug for Kamailio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kamailio").field("addrs", &self.addrs).field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(150)..];
            eprintln!("--- Kamailio log (last {} lines) ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}

// ---------------------------------------------------------------------------
// SIPp

/// One SIPp run: a scenario file from `tests/interop/sipp/` (or any path,
/// or a built-in scenario) and its arguments, run as
/// `timeout N sipp …` in a temporary directory of its own.
///
/// Always given: `-i` (the local address: 127.0.0.1, or ::1 towards an
/// IPv6 remote), `-mi` the same, `-ci 127.0.0.1` (SIPp's control socket
/// otherwise listens on every interface), `-m 1`, `-nostdin`, `-timeout`
/// with `-timeout_error`, and error and message traces, which end up in
/// [`SippOutput`].
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: SippScenario,
    remote: Option<SocketAddr>,
    local_ip: Option<IpAddr>,
    local_port: Option<u16>,
    transport: Transport,
    calls: u32,
    limit: Duration,
    args: Vec<OsString>,
}

#[derive(Debug, Clone)]
enum SippScenario {
    File(PathBuf),
    Builtin(String),
}

impl Sipp {
    /// The scenario file `name` in `tests/interop/sipp/`, or the file at
    /// `name` if it is an absolute path.
    pub fn scenario(name: &str) -> Sipp {
        let path = Path::new(name);
        let path = if path.is_absolute() { path.to_owned() } else { interop_dir().join("sipp").join(name) };
        Sipp::with(SippScenario::File(path))
    }

    /// A scenario built into SIPp (`-sn uac`, `-sn uas`, …).
    pub fn builtin(name: &str) -> Sipp {
        Sipp::with(SippScenario::Builtin(name.to_owned()))
    }

    fn with(scenario: SippScenario) -> Sipp {
        Sipp {
            scenario,
            remote: None,
            local_ip: None,
            local_port: None,
            transport: Transport::Udp,
            calls: 1,
            limit: Duration::from_secs(20),
            args: Vec::new(),
        }
    }

    /// The peer (SIPp's `remote_host[:port]`; `[remote_ip]`/`[remote_port]`).
    #[must_use]
    pub fn remote(mut self, addr: SocketAddr) -> Sipp {
        self.remote = Some(addr);
        self
    }

    /// SIPp's own address (`-i`, `-p`): where a UAS listens, or a fixed
    /// source port (and Contact) for a UAC. Without it: 127.0.0.1 (::1
    /// towards an IPv6 remote) and a free port.
    #[must_use]
    pub fn local(mut self, addr: SocketAddr) -> Sipp {
        self.local_ip = Some(addr.ip());
        self.local_port = Some(addr.port());
        self
    }

    /// UDP (`-t u1`, the default) or TCP (`-t t1`). This SIPp has no TLS.
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Sipp {
        self.transport = transport;
        self
    }

    /// How many calls before it exits (`-m`, default 1).
    #[must_use]
    pub fn calls(mut self, calls: u32) -> Sipp {
        self.calls = calls;
        self
    }

    /// The longest it may run (default 20 s): SIPp's own `-timeout` is a
    /// second shorter, and `timeout` kills it 2 s after this.
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Sipp {
        self.limit = limit;
        self
    }

    /// The user part of the Request-URI (`-s`; `[service]`).
    #[must_use]
    pub fn service(self, user: &str) -> Sipp {
        self.arg("-s").arg(user)
    }

    /// Credentials for `[authentication]` (`-au`, `-ap`).
    #[must_use]
    pub fn auth(self, user: &str, password: &str) -> Sipp {
        self.arg("-au").arg(user).arg("-ap").arg(password)
    }

    /// A scenario keyword `[name]` (`-key name value`).
    #[must_use]
    pub fn key(self, name: &str, value: &str) -> Sipp {
        self.arg("-key").arg(name).arg(value)
    }

    /// For `register_auth.xml`: registers `user` in `domain` with its
    /// credentials, a fresh `+sip.instance`, and the digest `uri` set to
    /// the Request-URI (`sip:domain`).
    #[must_use]
    pub fn register_as(self, user: User, domain: &str) -> Sipp {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let instance = format!(
            "5f1d0c2e-{:04x}-4000-8000-{:012x}",
            std::process::id() & 0xffff,
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        self.service(user.name)
            .auth(user.name, user.password)
            .key("domain", domain)
            .key("instance", &instance)
            .arg("-auth_uri")
            .arg(domain)
    }

    /// For `message_uac.xml` and `invite_uac.xml`: a request from `from`
    /// (with its credentials, for a proxy's challenge) to `to_user` in
    /// `domain`.
    #[must_use]
    pub fn from_to(self, from: User, to_user: &str, domain: &str) -> Sipp {
        self.service(to_user).auth(from.name, from.password).key("from", from.name).key("domain", domain)
    }

    /// Any other argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Sipp {
        self.args.push(arg.into());
        self
    }

    fn local_ip(&self) -> IpAddr {
        self.local_ip.unwrap_or(match self.remote {
            Some(r) if r.is_ipv6() => LOOPBACK_V6,
            _ => LOOPBACK_V4,
        })
    }

    /// Runs it to the end (bounded by the time limit).
    pub fn run(self) -> SippOutput {
        let programs = programs();
        let dir = TempDir::new("sipp");
        let secs = self.limit.as_secs().max(2);
        let mut args: Vec<OsString> = Vec::new();
        if let Some(remote) = self.remote {
            args.push(remote.to_string().into());
        }
        match &self.scenario {
            SippScenario::File(path) => {
                args.push("-sf".into());
                args.push(path.into());
            }
            SippScenario::Builtin(name) => {
                args.push("-sn".into());
                args.push(name.into());
            }
        }
        let ip = self.local_ip().to_string();
        for a in ["-i", &ip, "-mi", &ip, "-ci", "127.0.0.1"] {
            args.push(a.into());
        }
        // Without -p SIPp tries 5060 first: a port of its own instead.
        let port = self.local_port.unwrap_or_else(|| free_port(&[self.local_ip()]));
        args.push("-p".into());
        args.push(port.to_string().into());
        args.push("-t".into());
        args.push(
            match self.transport {
                Transport::Udp => "u1",
                Transport::Tcp => "t1",
                Transport::Tls => "l1",
            }
            .into(),
        );
        let errors = dir.path().join("errors.log");
        let messages = dir.path().join("messages.log");
        for a in [
            "-m".into(),
            self.calls.to_string().into(),
            "-nostdin".into(),
            "-timeout".into(),
            format!("{}s", secs - 1).into(),
            "-timeout_error".into(),
            "-trace_err".into(),
            "-error_file".into(),
            OsString::from(&errors),
            "-trace_msg".into(),
            "-message_file".into(),
            OsString::from(&messages),
        ] {
            args.push(a);
        }
        args.extend(self.args.iter().cloned());
        let command = format!(
            "timeout {secs} {} {}",
            programs.sipp.display(),
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        let started = Instant::now();
        let out = Command::new(&programs.timeout)
            .arg("--kill-after=2")
            .arg(secs.to_string())
            .arg(&programs.sipp)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {command}: {e}"));
        let read = |p: &Path| fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        SippOutput {
            command,
            status: out.status,
            elapsed: started.elapsed(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            errors: read(&errors),
            messages: read(&messages),
        }
    }

    /// Starts it on a thread of its own; [`SippRun::wait_listening`] tells
    /// when a UAS is ready, [`SippRun::wait`] gives the output.
    pub fn spawn(self) -> SippRun {
        // Installing (if needed) here, not on the thread, so that a
        // failure shows in the test itself.
        let _ = programs();
        let port = self.local_port;
        let transport = self.transport;
        SippRun { port, transport, handle: thread::spawn(move || self.run()) }
    }
}

/// A SIPp started with [`Sipp::spawn`].
#[derive(Debug)]
pub struct SippRun {
    port: Option<u16>,
    transport: Transport,
    handle: JoinHandle<SippOutput>,
}

impl SippRun {
    /// Waits (at most `limit`) until SIPp has bound its port (`Sipp::local`):
    /// UDP bound, or TCP listening. False if it did not, or if it ended
    /// first.
    pub fn wait_listening(&self, limit: Duration) -> bool {
        let Some(port) = self.port else { return false };
        let transport = self.transport;
        wait_until(limit, || {
            self.handle.is_finished()
                || match transport {
                    Transport::Udp => udp_port_bound(port),
                    _ => tcp_port_listening(port),
                }
        }) && !self.handle.is_finished()
    }

    /// Waits for the end (bounded by its time limit) and gives its output.
    pub fn wait(self) -> SippOutput {
        self.handle.join().unwrap_or_else(|_| panic!("the SIPp thread panicked"))
    }
}

/// What a SIPp run left.
#[derive(Debug, Clone)]
pub struct SippOutput {
    /// The command line (for messages).
    pub command: String,
    /// Its exit status: 0 when every call succeeded, 1 when some failed,
    /// 124 (or signal 9) when `timeout` had to stop it.
    pub status: ExitStatus,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its screen output.
    pub stdout: String,
    /// Its error output.
    pub stderr: String,
    /// The error trace (`-trace_err`): unexpected messages and why.
    pub errors: String,
    /// The message trace (`-trace_msg`): every message sent and received.
    pub messages: String,
}

impl SippOutput {
    /// Whether every call succeeded (exit status 0).
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Whether `timeout` had to stop it.
    pub fn timed_out(&self) -> bool {
        matches!(self.status.code(), Some(124 | 137) | None)
    }
}

impl fmt::Display for SippOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}\n=> {} after {:?}", self.command, self.status, self.elapsed)?;
        for (name, text) in
            [("stderr", &self.stderr), ("errors", &self.errors), ("messages", &self.messages), ("stdout", &self.stdout)]
        {
            if !text.trim().is_empty() {
                writeln!(f, "--- {name} ---\n{}", text.trim_end())?;
            }
        }
        Ok(())
    }
}
