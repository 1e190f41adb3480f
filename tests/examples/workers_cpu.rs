//! Issue 19, item 2: "CPU per registration with N workers within 10 % of
//! one worker" (`sipline serve --workers N`), measured in one process.
//!
//! End to end (SIPp against `serve`, BENCHMARKS.md) the load generators
//! take the same cores as the server, so the server's CPU per
//! registration moves with them. Here the server's cores are measured
//! alone: N workers, each a sans-IO [`Endpoint`] built as `serve` and
//! `sipline_tokio::spawn_workers` build worker k of N (clones of one
//! [`ServerConfig`]: one shared location service and users table, one
//! nonce secret, the worker's [`Worker`] tag), each on an OS thread of its
//! own, fed over in-memory channels (no sockets) by client threads that
//! play SIPp's `tests/interop/sipp/register_load.xml`: REGISTER, 401,
//! REGISTER with an MD5 digest answer, 200 — a new Call-ID per
//! registration, one Contact per device.
//!
//! Each device (one source address) sends to one worker, chosen by a hash
//! of its address as `SO_REUSEPORT` chooses by the sender's address;
//! different devices land on different workers. Two mixes:
//!
//! - `distinct`: one device per user (10 000 users): every worker writes
//!   the shared location service, each user's bindings from one worker;
//! - `shared`: few users, several devices each (64 × 8): the devices of
//!   one user are hashed to different workers, which write the same
//!   address-of-record at once (the store's worst contention).
//!
//! Only the worker threads' CPU time is counted (`CLOCK_THREAD_CPUTIME_ID`,
//! user and system), from a mark before the measured pass to a mark after
//! it, so the clients' work (building requests, answering challenges) is
//! left out. Each run makes fresh workers and a fresh store, registers
//! every device once (warm-up: bindings made, nonce rings allocated), then
//! measures a pass of `--regs` registrations, the clients keeping
//! `--window` registrations each in flight (enough to keep every worker
//! busy: a loaded server; a small window shows a lightly loaded one).
//! The clients never block in their channel (they poll and nap), so that
//! a worker's send never pays for waking a client. One round of runs is
//! left out first (the heap grows to its size); each repetition then runs
//! every worker count, starting at another one each time. Figures:
//!
//! - `CPU µs/reg`: the workers' thread CPU over the pass ÷ registrations,
//!   the median over the repetitions (min–max);
//! - `÷ 1 worker`: the median over the repetitions of that run's figure ÷
//!   the same repetition's run with the first worker count (min–max);
//! - `work µs/reg`: the CPU less what was spent inside the channel's
//!   blocking receive (spinning, parking and waking while idle: the
//!   stand-in for a runtime's `epoll_wait`; it grows as each worker has
//!   less to do);
//! - `wall reg/s`: registrations ÷ wall time of the pass, for information
//!   only (on a machine with fewer cores than workers + clients it
//!   measures the scheduler);
//! - `busiest worker ÷ mean`: how evenly the address hash spread the
//!   datagrams; `bindings after`: live bindings in the shared store.
//!
//! Every registration must end in a 200: the run stops on any other final
//! response or a lost answer.
//!
//! Run (release): `scripts/bench-workers` or
//! `cargo run --release -p sipline-tests --example workers_cpu -- [options]`;
//! `--help` lists the options.

use nix::time::{clock_gettime, ClockId};
use sipline::auth::{DigestClient, DigestCredentials, Users};
use sipline::endpoint::{response_worker, Endpoint, EndpointConfig, Output, ServerConfig, Worker};
use sipline::message::Message;
use sipline::message::Uri;
use sipline::registrar::{canonical_aor, Location, SharedLocation};
use sipline::rng::Rng;
use sipline::transport::{Transport, WorkerMessage};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The domain served (and the digest realm), as `serve` on 127.0.0.1.
const DOMAIN: &str = "127.0.0.1";

/// How long one pass may take before the run is declared stuck.
const PASS_LIMIT: Duration = Duration::from_secs(600);

/// How long a client thread naps when no answer is waiting.
const CLIENT_NAP: Duration = Duration::from_micros(20);

/// Which devices register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// One device per user: each AOR is written by one worker.
    Distinct,
    /// Few users with several devices each, spread over the workers.
    Shared,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Distinct => "distinct",
            Mix::Shared => "shared",
        }
    }
}

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    workers: Vec<u16>,
    reps: usize,
    regs: usize,
    users: usize,
    shared_users: usize,
    devices_per_user: usize,
    clients: usize,
    window: usize,
    mixes: Vec<Mix>,
    discard: usize,
    stamp_on_read: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            workers: vec![1, 2, 4, 8],
            reps: 9,
            regs: 20_000,
            users: 10_000,
            shared_users: 64,
            devices_per_user: 8,
            clients: 2,
            window: 128,
            mixes: vec![Mix::Distinct, Mix::Shared],
            discard: 1,
            stamp_on_read: false,
        }
    }
}

const USAGE: &str = "\
workers_cpu: server CPU per registration with N workers (issue 19)

options (defaults in brackets):
  --workers 1,2,4,8   worker counts, each run in every repetition [1,2,4,8]
  --reps R            repetitions [9]
  --regs N            registrations in the measured pass [20000]
  --users U           users (devices of the distinct mix) [10000]
  --shared-users A    users of the shared mix [64]
  --devices D         devices per user in the shared mix (<= 32) [8]
  --clients C         client threads [2]
  --window W          registrations in flight per client thread [128]
  --mix distinct,shared  which mixes [both]
  --discard K         rounds run first and left out [1]
  --stamp-on-read     stamp datagrams when a worker takes them, not when
                      sent (no queueing delay seen: no 503 from overload
                      control however slow the run, e.g. under valgrind)
";

/// The options that take a value.
const VALUED: [&str; 10] = [
    "--workers",
    "--reps",
    "--regs",
    "--users",
    "--shared-users",
    "--devices",
    "--clients",
    "--window",
    "--mix",
    "--discard",
];

fn parse_options() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--stamp-on-read" {
            o.stamp_on_read = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        if !VALUED.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag}\n\n{USAGE}"));
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--workers" => {
                o.workers = value
                    .split(',')
                    .map(|w| w.trim().parse::<u16>().ok().filter(|&w| w > 0))
                    .collect::<Option<Vec<u16>>>()
                    .ok_or_else(|| format!("--workers: {value}"))?;
            }
            "--reps" => o.reps = number()?,
            "--regs" => o.regs = number()?,
            "--users" => o.users = number()?,
            "--shared-users" => o.shared_users = number()?,
            "--devices" => o.devices_per_user = number()?,
            "--clients" => o.clients = number()?,
            "--window" => o.window = number()?,
            "--discard" => o.discard = number()?,
            "--mix" => {
                o.mixes = value
                    .split(',')
                    .map(|m| match m.trim() {
                        "distinct" => Some(Mix::Distinct),
                        "shared" => Some(Mix::Shared),
                        _ => None,
                    })
                    .collect::<Option<Vec<Mix>>>()
                    .ok_or_else(|| format!("--mix: {value}"))?;
            }
            _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
        }
    }
    if o.reps == 0 || o.regs == 0 || o.clients == 0 || o.window == 0 || o.workers.is_empty() {
        return Err("--reps, --regs, --clients, --window and --workers must be positive".to_owned());
    }
    if !(1..=255).contains(&o.clients) {
        return Err("--clients: 1 to 255".to_owned());
    }
    if o.shared_users == 0 || o.shared_users > o.users || o.devices_per_user == 0 || o.devices_per_user > 32 {
        return Err("--shared-users: 1 to --users; --devices: 1 to 32 (the registrar's max_bindings)".to_owned());
    }
    Ok(o)
}

/// This thread's CPU time so far (user and system), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("CLOCK_THREAD_CPUTIME_ID");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

fn user_name(i: usize) -> String {
    format!("u{i:06}")
}

fn password(i: usize) -> String {
    format!("pw{i}")
}

/// Device `index` of client thread `client`: 10.client.hi.lo:5060.
fn device_addr(client: usize, index: usize) -> SocketAddr {
    let c = u8::try_from(client).expect("at most 255 clients");
    let hi = u8::try_from(index >> 8).expect("at most 65 536 devices per client");
    let lo = u8::try_from(index & 0xff).expect("a byte");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, c, hi, lo)), 5060)
}

/// (client thread, device index) of a device address, if it is one.
fn device_of(addr: SocketAddr) -> Option<(usize, usize)> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.octets()[0] == 10 => {
            let [_, c, hi, lo] = ip.octets();
            Some((usize::from(c), usize::from(hi) << 8 | usize::from(lo)))
        }
        _ => None,
    }
}

/// The worker a sender's datagrams reach: a hash of its address, as the
/// kernel's `SO_REUSEPORT` group picks a socket by the sender.
fn worker_for(addr: SocketAddr, workers: u16) -> usize {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => u64::from(u32::from(ip)),
        IpAddr::V6(ip) => {
            let b = u128::from(ip);
            u64::try_from(b & u128::from(u64::MAX)).unwrap_or(0) ^ u64::try_from(b >> 64).unwrap_or(0)
        }
    };
    // splitmix64's finaliser.
    let mut x = (ip << 16 | u64::from(addr.port())).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    usize::try_from(x % u64::from(workers)).unwrap_or(0)
}

/// What reaches a worker.
enum ToWorker {
    /// A datagram from `remote`, "read from the socket" at `at`.
    Datagram { remote: SocketAddr, bytes: Vec<u8>, at: Instant },
    /// A datagram another worker read that belongs here (the driver's
    /// hand-over of a response, `response_worker`).
    HandedOver { remote: SocketAddr, bytes: Vec<u8>, at: Instant },
    /// A message another worker's core addressed to this one.
    Message(WorkerMessage),
    /// Report the counters now.
    Mark(Sender<Snapshot>),
    /// End.
    Stop,
}

/// A datagram for a device.
struct ToClient {
    remote: SocketAddr,
    bytes: Arc<[u8]>,
}

/// A worker's counters at a mark.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    /// The thread's CPU time since it started.
    cpu_ns: u64,
    /// Of which inside the channel's blocking receive.
    wait_ns: u64,
    /// Datagrams handled by this worker's core.
    datagrams: u64,
    /// Datagrams handed over to another worker.
    handed_over: u64,
    /// Events the core raised for the application.
    events: u64,
    /// Outputs other than datagrams to devices, events and worker messages.
    other: u64,
}

impl Snapshot {
    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            cpu_ns: self.cpu_ns - before.cpu_ns,
            wait_ns: self.wait_ns - before.wait_ns,
            datagrams: self.datagrams - before.datagrams,
            handed_over: self.handed_over - before.handed_over,
            events: self.events - before.events,
            other: self.other - before.other,
        }
    }
}

/// The config of worker `id` of `count`, as `serve` makes it: one
/// `ServerConfig` cloned into every worker (its location service and
/// users table shared), a nonce secret shared when there are several
/// workers, the worker's identity (`spawn_workers`), a seed of its own
/// (the runtime's entropy).
fn worker_config(server: &ServerConfig, id: u16, count: u16, local: SocketAddr) -> EndpointConfig {
    let mut c = EndpointConfig::new(&format!("sip:sipline@{DOMAIN}"));
    c = c.listen(Transport::Udp, local).listen(Transport::Tcp, local);
    c = c.serve(server.clone());
    if count > 1 {
        c.worker = Some(Worker::new(id, count));
    }
    let entropy =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), (Instant::now(), id));
    c.seed = entropy | 1;
    c
}

/// One worker: its core and where its outputs go.
struct WorkerThread<'a> {
    ep: Endpoint,
    id: u16,
    local: SocketAddr,
    workers: &'a [Sender<ToWorker>],
    clients: &'a [Sender<ToClient>],
    counts: Snapshot,
    stamp_on_read: bool,
}

impl WorkerThread<'_> {
    /// One turn of the runtime driver's loop: due timers, then `next` (an
    /// input, or `None` when the wait ran out), then every output drained.
    /// A response whose branch names another worker is handed over as it
    /// came, as the driver does. `false`: stop.
    ///
    /// Never inlined: `valgrind --tool=callgrind
    /// --toggle-collect='*WorkerThread*step*'` counts the workers'
    /// instructions without their waits.
    #[inline(never)]
    fn step(&mut self, next: Option<ToWorker>) -> bool {
        let now = Instant::now();
        if self.ep.poll_timeout().is_some_and(|d| d <= now) {
            self.ep.handle_timeout(now);
        }
        let local = self.local;
        match next {
            None => {}
            Some(ToWorker::Datagram { remote, bytes, at }) => {
                let at = if self.stamp_on_read { now } else { at };
                // The driver's check (`Driver::set_workers`).
                let several = self.workers.len() > 1;
                let owner = if several { response_worker(&bytes).map(usize::from) } else { None };
                match owner {
                    Some(w) if w != usize::from(self.id) && w < self.workers.len() => {
                        self.counts.handed_over += 1;
                        let _ = self.workers[w].send(ToWorker::HandedOver { remote, bytes, at });
                    }
                    _ => {
                        self.counts.datagrams += 1;
                        self.ep.handle_datagram_received(now, at, local, remote, &bytes);
                    }
                }
            }
            Some(ToWorker::HandedOver { remote, bytes, at }) => {
                self.counts.datagrams += 1;
                self.ep.handle_datagram_received(now, at, local, remote, &bytes);
            }
            Some(ToWorker::Message(m)) => self.ep.handle_worker_message(now, m),
            Some(ToWorker::Mark(reply)) => {
                let _ = reply.send(Snapshot { cpu_ns: thread_cpu_ns(), ..self.counts });
            }
            Some(ToWorker::Stop) => return false,
        }
        while let Some(output) = self.ep.poll_output() {
            match output {
                Output::Datagram { remote, bytes, .. } => match device_of(remote) {
                    Some((c, _)) if c < self.clients.len() => {
                        let _ = self.clients[c].send(ToClient { remote, bytes });
                    }
                    _ => self.counts.other += 1,
                },
                Output::Worker { worker, message } => match self.workers.get(usize::from(worker)) {
                    Some(w) => {
                        let _ = w.send(ToWorker::Message(message));
                    }
                    None => self.counts.other += 1,
                },
                Output::Event(_) => self.counts.events += 1,
                _ => self.counts.other += 1,
            }
        }
        true
    }
}

/// A worker thread: its endpoint started as the runtime starts it, then
/// the driver's loop until told to stop.
fn run_worker(
    id: u16,
    config: EndpointConfig,
    local: SocketAddr,
    stamp_on_read: bool,
    inbox: &Receiver<ToWorker>,
    workers: &[Sender<ToWorker>],
    clients: &[Sender<ToClient>],
) {
    let mut ep = Endpoint::new(config).expect("a valid config");
    for transport in [Transport::Udp, Transport::Tcp] {
        ep.add_listener(transport, local);
    }
    let start = Instant::now();
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ep.set_wall_clock(start, unix);
    ep.start(start);
    let mut w = WorkerThread { ep, id, local, workers, clients, counts: Snapshot::default(), stamp_on_read };
    loop {
        let next = match inbox.try_recv() {
            Ok(m) => Some(m),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let wait =
                    w.ep.poll_timeout()
                        .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()))
                        .min(Duration::from_secs(1));
                let before = thread_cpu_ns();
                let got = inbox.recv_timeout(wait);
                w.counts.wait_ns += thread_cpu_ns() - before;
                match got {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if !w.step(next) {
            break;
        }
    }
}

/// One phone: a user's device at its own address.
struct Device {
    user: usize,
    addr: SocketAddr,
    digest: DigestClient,
    /// The worker its datagrams reach.
    worker: usize,
    /// The registration under way: its Call-ID number.
    call: Option<u64>,
}

/// What a client thread is told to do: register `quota` times.
struct Pass {
    quota: usize,
    window: usize,
}

/// What a client thread reports after a pass.
#[derive(Debug, Default)]
struct PassResult {
    ok: usize,
    /// Failed registrations by the status code that ended them.
    failed: BTreeMap<u16, usize>,
    /// Datagrams that matched no registration under way.
    strays: usize,
}

impl PassResult {
    fn failures(&self) -> usize {
        self.failed.values().sum()
    }
}

/// The REGISTER of `register_load.xml`, first (`cseq` 1) or with the
/// digest answer (`cseq` 2).
fn register_bytes(client: usize, device: &Device, call: u64, cseq: u32, auth: &str) -> Vec<u8> {
    let user = user_name(device.user);
    let addr = device.addr;
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {addr};branch=z9hG4bK-{client}-{call}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag={client}load{call}\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {client}-{call}@{}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{addr};transport=UDP>\r\n\
         Expires: 3600\r\n\
         {auth}\
         User-Agent: SIPp (sipline load)\r\n\
         Content-Length: 0\r\n\r\n",
        addr.ip()
    )
    .into_bytes()
}

/// A client thread: its devices register, `window` at a time, one
/// registration per device at a time, until each pass's quota is done.
fn run_client(
    client: usize,
    mut devices: Vec<Device>,
    workers: &[Sender<ToWorker>],
    inbox: &Receiver<ToClient>,
    passes: &Receiver<Pass>,
    results: &Sender<PassResult>,
) {
    let mut rng = Rng::new(0x5eed ^ u64::try_from(client).unwrap_or(0));
    let uri = format!("sip:{DOMAIN}");
    let mut calls: u64 = 0;
    while let Ok(pass) = passes.recv() {
        let mut result = PassResult::default();
        let mut free: VecDeque<usize> = (0..devices.len()).collect();
        let (mut started, mut in_flight) = (0usize, 0usize);
        let deadline = Instant::now() + PASS_LIMIT;
        while result.ok + result.failures() < pass.quota {
            while in_flight < pass.window && started < pass.quota {
                let Some(d) = free.pop_front() else { break };
                calls += 1;
                let device = &mut devices[d];
                device.call = Some(calls);
                let bytes = register_bytes(client, device, calls, 1, "");
                let _ =
                    workers[device.worker].send(ToWorker::Datagram { remote: device.addr, bytes, at: Instant::now() });
                started += 1;
                in_flight += 1;
            }
            // Never blocked in the channel: a worker's send then never has
            // a parked client to wake (a futex call that would land in the
            // worker's CPU time, and more often the less the worker has to
            // do). The client polls, napping when nothing came.
            let ToClient { remote, bytes } = match inbox.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(CLIENT_NAP);
                    continue;
                }
                Err(e) => panic!(
                    "client {client}: {e:?}, no answer within {PASS_LIMIT:?} ({} of {} done, {in_flight} in flight)",
                    result.ok + result.failures(),
                    pass.quota
                ),
            };
            let Some((_, d)) = device_of(remote).filter(|&(_, d)| d < devices.len()) else {
                result.strays += 1;
                continue;
            };
            let Ok(m) = Message::parse(&bytes) else {
                result.strays += 1;
                continue;
            };
            let device = &mut devices[d];
            let Some(call) = device.call else {
                result.strays += 1;
                continue;
            };
            let call_id = format!("{client}-{call}@{}", device.addr.ip());
            let matches = m.call_id().and_then(Result::ok).is_some_and(|c| c.as_str() == call_id);
            let (Some(status), Some(Ok(cseq)), true) = (m.status(), m.cseq(), matches) else {
                result.strays += 1;
                continue;
            };
            let code = status.as_u16();
            match (cseq.seq(), code) {
                (_, 100..=199) => {}
                (1, 401) => {
                    let answers =
                        device.digest.authorize_response(&m, "REGISTER", &uri, &mut rng).expect("an MD5 challenge");
                    let auth: String =
                        answers.iter().flat_map(|(h, v)| [h.as_str(), ": ", v.as_str(), "\r\n"]).collect();
                    let bytes = register_bytes(client, device, call, 2, &auth);
                    let _ = workers[device.worker].send(ToWorker::Datagram {
                        remote: device.addr,
                        bytes,
                        at: Instant::now(),
                    });
                }
                (2, 200) => {
                    result.ok += 1;
                    device.call = None;
                    in_flight -= 1;
                    free.push_back(d);
                }
                (_, code) => {
                    *result.failed.entry(code).or_default() += 1;
                    device.call = None;
                    in_flight -= 1;
                    free.push_back(d);
                }
            }
        }
        if results.send(result).is_err() {
            return;
        }
    }
}

/// What one run (one mix, one worker count) measured.
#[derive(Debug, Clone)]
struct Run {
    workers: u16,
    regs: usize,
    /// The workers' counters over the measured pass, summed.
    total: Snapshot,
    /// Datagrams each worker's core handled in the measured pass.
    per_worker: Vec<u64>,
    wall: Duration,
    bindings: usize,
    devices: usize,
}

impl Run {
    fn cpu_us_per_reg(&self) -> f64 {
        ns_per(self.total.cpu_ns, self.regs) / 1000.0
    }
    fn work_us_per_reg(&self) -> f64 {
        ns_per(self.total.cpu_ns - self.total.wait_ns, self.regs) / 1000.0
    }
    fn wait_us_per_reg(&self) -> f64 {
        ns_per(self.total.wait_ns, self.regs) / 1000.0
    }
    #[allow(clippy::cast_precision_loss)]
    fn per_second(&self) -> f64 {
        self.regs as f64 / self.wall.as_secs_f64()
    }
    /// The busiest worker's datagrams ÷ the mean (1: an even spread).
    #[allow(clippy::cast_precision_loss)]
    fn imbalance(&self) -> f64 {
        let most = self.per_worker.iter().copied().max().unwrap_or(0) as f64;
        let all: u64 = self.per_worker.iter().sum();
        most * self.per_worker.len() as f64 / all.max(1) as f64
    }
}

#[allow(clippy::cast_precision_loss)]
fn ns_per(ns: u64, regs: usize) -> f64 {
    ns as f64 / regs as f64
}

fn passes_done(results: &Receiver<PassResult>, clients: usize, what: &str) -> PassResult {
    let mut sum = PassResult::default();
    for _ in 0..clients {
        let r = results
            .recv_timeout(PASS_LIMIT + Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what}: a client thread ended"));
        sum.ok += r.ok;
        sum.strays += r.strays;
        for (code, n) in r.failed {
            *sum.failed.entry(code).or_default() += n;
        }
    }
    sum
}

fn marks(workers: &[Sender<ToWorker>]) -> Vec<Snapshot> {
    workers
        .iter()
        .map(|w| {
            let (tx, rx) = mpsc::channel();
            w.send(ToWorker::Mark(tx)).expect("a worker ended");
            rx.recv_timeout(Duration::from_secs(60)).expect("a worker's mark")
        })
        .collect()
}

/// One run: fresh workers and store, a warm-up pass (every device once),
/// the measured pass.
fn run(o: &Options, users: &Users, mix: Mix, count: u16) -> Run {
    let local: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
    let mut server = ServerConfig::new(DOMAIN, users.clone());
    // `serve`: with several workers, one key for every worker's nonces.
    if count > 1 {
        let mut secret = [0u8; 32];
        for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
            let h = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), i);
            chunk.copy_from_slice(&h.to_le_bytes());
        }
        server.nonce_secret = Some(secret);
    }
    let location: SharedLocation = server.location.clone();

    // Devices, dealt to the client threads in turn.
    let (device_users, per_user) = match mix {
        Mix::Distinct => (o.users, 1),
        Mix::Shared => (o.shared_users, o.devices_per_user),
    };
    let total_devices = device_users * per_user;
    let mut dealt: Vec<Vec<Device>> = (0..o.clients).map(|_| Vec::new()).collect();
    for j in 0..total_devices {
        let c = j % o.clients;
        let user = j % device_users;
        let addr = device_addr(c, dealt[c].len());
        dealt[c].push(Device {
            user,
            addr,
            digest: DigestClient::new(DigestCredentials::new(user_name(user), password(user))),
            worker: worker_for(addr, count),
            call: None,
        });
    }

    let (worker_txs, worker_rxs): (Vec<_>, Vec<_>) = (0..count).map(|_| mpsc::channel::<ToWorker>()).unzip();
    let (client_txs, client_rxs): (Vec<_>, Vec<_>) = (0..o.clients).map(|_| mpsc::channel::<ToClient>()).unzip();
    let (results_tx, results) = mpsc::channel();
    let mut pass_txs = Vec::new();
    let mut threads = Vec::new();
    for (id, inbox) in (0..count).zip(worker_rxs) {
        let config = worker_config(&server, id, count, local);
        let stamp_on_read = o.stamp_on_read;
        let (workers, clients) = (worker_txs.clone(), client_txs.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || run_worker(id, config, local, stamp_on_read, &inbox, &workers, &clients))
                .expect("a worker thread"),
        );
    }
    drop(client_txs);
    for ((c, devices), inbox) in dealt.into_iter().enumerate().zip(client_rxs) {
        let (pass_tx, pass_rx) = mpsc::channel();
        pass_txs.push(pass_tx);
        let (workers, results) = (worker_txs.clone(), results_tx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("client-{c}"))
                .spawn(move || run_client(c, devices, &workers, &inbox, &pass_rx, &results))
                .expect("a client thread"),
        );
    }

    // Warm-up: every device registers once (each client its own devices).
    for (c, tx) in pass_txs.iter().enumerate() {
        let mine = (total_devices + o.clients - 1 - c) / o.clients;
        tx.send(Pass { quota: mine, window: o.window }).expect("a client thread");
    }
    let warm = passes_done(&results, o.clients, "warm-up");
    assert!(
        warm.failures() == 0 && warm.ok == total_devices,
        "warm-up: {} of {total_devices} registered, failed {:?}",
        warm.ok,
        warm.failed
    );

    // The measured pass.
    let before = marks(&worker_txs);
    let start = Instant::now();
    for (c, tx) in pass_txs.iter().enumerate() {
        let mine = (o.regs + o.clients - 1 - c) / o.clients;
        tx.send(Pass { quota: mine, window: o.window }).expect("a client thread");
    }
    let measured = passes_done(&results, o.clients, "measured pass");
    let wall = start.elapsed();
    let after = marks(&worker_txs);
    assert!(
        measured.failures() == 0 && measured.ok == o.regs,
        "{} workers, {}: {} of {} registered, failed {:?}",
        count,
        mix.name(),
        measured.ok,
        o.regs,
        measured.failed
    );
    assert_eq!(measured.strays + warm.strays, 0, "datagrams that matched no registration");

    drop(pass_txs);
    for w in &worker_txs {
        let _ = w.send(ToWorker::Stop);
    }
    for t in threads {
        t.join().expect("a thread panicked");
    }
    let deltas: Vec<Snapshot> = after.iter().zip(&before).map(|(a, b)| a.since(*b)).collect();
    let mut total = Snapshot::default();
    for d in &deltas {
        total.cpu_ns += d.cpu_ns;
        total.wait_ns += d.wait_ns;
        total.datagrams += d.datagrams;
        total.handed_over += d.handed_over;
        total.events += d.events;
        total.other += d.other;
    }
    // Two requests per registration reach the cores, nothing else.
    assert_eq!(total.datagrams, 2 * u64::try_from(o.regs).unwrap_or(0), "datagrams handled");
    assert_eq!(total.other, 0, "unexpected outputs");
    let bindings = live_bindings(&location, device_users);
    // One writer per AOR: every device's last registration is there. (In
    // the shared mix two workers may commit one AOR at once, and the last
    // write wins until the lost device refreshes: `SharedLocation`.)
    if mix == Mix::Distinct {
        assert_eq!(bindings, total_devices, "bindings after the run");
    }
    Run {
        workers: count,
        regs: o.regs,
        total,
        per_worker: deltas.iter().map(|d| d.datagrams).collect(),
        wall,
        bindings,
        devices: total_devices,
    }
}

/// The live bindings of the first `users` users, through the `Location`
/// trait (whatever store stands behind `SharedLocation`).
fn live_bindings(location: &SharedLocation, users: usize) -> usize {
    let now = Instant::now();
    (0..users)
        .map(|u| {
            let uri = format!("sip:{}@{DOMAIN}", user_name(u));
            let aor = Uri::parse(&uri).ok().and_then(|u| canonical_aor(&u)).unwrap_or_else(|| uri.clone());
            location.bindings(&aor, now).len()
        })
        .sum()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// Median, minimum and maximum of `f` over the runs with `workers`.
fn stat(runs: &[Run], workers: u16, f: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = runs.iter().filter(|r| r.workers == workers).map(f).collect();
    let (lo, hi) = range(&v);
    (median(&mut v), lo, hi)
}

/// Median, minimum and maximum over the repetitions of `f(run with N)` ÷
/// `f(run with the reference count)` of the same repetition.
fn ratio(reps: &[Vec<Run>], workers: u16, reference: u16, f: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = reps
        .iter()
        .filter_map(|rep| {
            let n = rep.iter().find(|r| r.workers == workers)?;
            let one = rep.iter().find(|r| r.workers == reference)?;
            Some(f(n) / f(one))
        })
        .collect();
    let (lo, hi) = range(&v);
    (median(&mut v), lo, hi)
}

fn report(o: &Options, mix: Mix, reps: &[Vec<Run>]) {
    let runs: Vec<Run> = reps.iter().flatten().cloned().collect();
    let reference = o.workers[0];
    let devices = runs.first().map_or(0, |r| r.devices);
    println!();
    println!(
        "### Mix `{}`: {} devices ({}), {} registrations measured, {} repetitions",
        mix.name(),
        devices,
        match mix {
            Mix::Distinct => format!("{} users, one device each", o.users),
            Mix::Shared => format!("{} users × {} devices", o.shared_users, o.devices_per_user),
        },
        o.regs,
        o.reps
    );
    println!();
    println!(
        "| workers | CPU µs/reg (min–max) | ÷ {reference} worker (min–max) | work µs/reg (min–max) | ÷ {reference} worker (min–max) | wait µs/reg | wall reg/s | busiest worker ÷ mean | bindings after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &o.workers {
        let cpu = stat(&runs, n, Run::cpu_us_per_reg);
        let cpu_ratio = ratio(reps, n, reference, Run::cpu_us_per_reg);
        let work = stat(&runs, n, Run::work_us_per_reg);
        let work_ratio = ratio(reps, n, reference, Run::work_us_per_reg);
        let wait = stat(&runs, n, Run::wait_us_per_reg);
        let rate = stat(&runs, n, Run::per_second);
        let busiest = stat(&runs, n, Run::imbalance);
        // The same in every run (or the run would have failed): the last.
        let bindings = runs.iter().rev().find(|r| r.workers == n).map_or(0, |r| r.bindings);
        println!(
            "| {n} | {:.2} ({:.2}–{:.2}) | **{:.3}** ({:.3}–{:.3}) | {:.2} ({:.2}–{:.2}) | **{:.3}** ({:.3}–{:.3}) | {:.2} | {:.0} | {:.2} | {bindings} |",
            cpu.0, cpu.1, cpu.2, cpu_ratio.0, cpu_ratio.1, cpu_ratio.2, work.0, work.1, work.2, work_ratio.0,
            work_ratio.1, work_ratio.2, wait.0, rate.0, busiest.0
        );
    }
}

/// The machine's load averages (`/proc/loadavg`): what else ran.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "unknown".to_owned(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    println!(
        "workers_cpu: {} CPUs; workers {:?}, {} repetitions, {} registrations measured per run, {} client threads, window {} per client",
        cores, o.workers, o.reps, o.regs, o.clients, o.window
    );
    println!("load average before: {}", load_average());
    if cfg!(debug_assertions) {
        println!("(a debug build: run it with --release for figures)");
    }
    let users = Users::from_passwords((0..o.users).map(|i| (user_name(i), password(i))));
    for &mix in &o.mixes {
        // One round left out: the process's heap grows to its size in the
        // first runs (page faults are system time of the worker threads).
        for _ in 0..o.discard {
            for &n in &o.workers {
                let _ = run(&o, &users, mix, n);
            }
        }
        let mut reps: Vec<Vec<Run>> = Vec::new();
        for rep in 0..o.reps {
            let mut this = Vec::new();
            // Each repetition starts at another worker count, so that no
            // count always runs first or after the same one.
            let k = o.workers.len();
            for n in (0..k).map(|i| o.workers[(i + rep) % k]) {
                let r = run(&o, &users, mix, n);
                eprintln!(
                    "{} rep {rep} workers {n}: {:.2} µs CPU/reg ({:.2} work, {:.2} wait), {:.0} reg/s, datagrams per worker {:?}, bindings {} of {} devices",
                    mix.name(),
                    r.cpu_us_per_reg(),
                    r.work_us_per_reg(),
                    r.wait_us_per_reg(),
                    r.per_second(),
                    r.per_worker,
                    r.bindings,
                    r.devices
                );
                this.push(r);
            }
            reps.push(this);
        }
        report(&o, mix, &reps);
        println!();
        println!("load average after this mix: {}", load_average());
    }
}
