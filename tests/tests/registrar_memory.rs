//! Issue 19: "memory bounded by state". A `serve` endpoint (registrar with
//! digest authentication) takes REGISTER + 401 + REGISTER + 200 exchanges
//! the way SIPp's `register_load.xml` makes them (a new Call-ID per
//! registration, one Contact per user), in memory, with a virtual clock.
//! A counting allocator measures the live heap:
//!
//! - repeated passes over the same users leave the heap where the first
//!   pass left it (once each pass's transactions have lingered out): what
//!   is kept is the bindings, nothing per processed registration;
//! - the heap held per binding, at 20 000 bindings (target: 2 KiB).
//!
//! One binary, tests taking turns: the allocator counts the whole process.

use sipline::auth::{DigestClient, DigestCredentials, Users};
use sipline::endpoint::{Endpoint, EndpointConfig, Output, ServerConfig};
use sipline::message::Message;
use sipline::rng::Rng;
use sipline::transport::Transport;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const DOMAIN: &str = "127.0.0.1";

struct Registrar {
    ep: Endpoint,
    now: Instant,
    local: SocketAddr,
    rng: Rng,
    calls: u64,
}

fn user(i: usize) -> String {
    format!("u{i:06}")
}

impl Registrar {
    fn new(users: usize) -> Registrar {
        let users = Users::from_passwords((0..users).map(|i| (user(i), format!("pw{i}"))));
        let mut server = ServerConfig::new(DOMAIN, users);
        // A load generator is one source sending fast: what a flood limit is for.
        server.flood = None;
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let mut config = EndpointConfig::new(&format!("sip:sipline@{DOMAIN}")).serve(server);
        config.seed = 19;
        let mut ep = Endpoint::new(config).unwrap();
        ep.add_listener(Transport::Udp, local);
        let now = Instant::now();
        ep.start(now);
        Registrar { ep, now, local, rng: Rng::new(5), calls: 0 }
    }

    fn last_datagram(&mut self) -> Option<Vec<u8>> {
        let mut last = None;
        while let Some(o) = self.ep.poll_output() {
            if let Output::Datagram { bytes, .. } = o {
                last = Some(bytes.to_vec());
            }
        }
        last
    }

    /// One registration as SIPp makes it: REGISTER, 401, REGISTER with
    /// the answer, 200. The user's phone sits at its own port.
    fn register(&mut self, i: usize) {
        self.calls += 1;
        let u = user(i);
        let port = 10_000 + (i % 50_000);
        let phone: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
        let call = self.calls;
        let request = |cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bK-{call}-{cseq};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{u}@{DOMAIN}>;tag=load{call}\r\nTo: <sip:{u}@{DOMAIN}>\r\n\
                 Call-ID: {call}-reg@127.0.0.2\r\nCSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:{u}@{phone};transport=udp>\r\nExpires: 3600\r\n{auth}\
                 User-Agent: SIPp (sipline load)\r\nContent-Length: 0\r\n\r\n"
            )
        };
        self.ep.handle_datagram(self.now, self.local, phone, request(1, "").as_bytes());
        let challenge = self.last_datagram().expect("a challenge");
        let m = Message::parse(&challenge).unwrap();
        assert_eq!(m.status().map(sipline::message::StatusCode::as_u16), Some(401));
        let mut client = DigestClient::new(DigestCredentials::new(u.clone(), format!("pw{i}")));
        let auth = client.authorize_response(&m, "REGISTER", &format!("sip:{DOMAIN}"), &mut self.rng).unwrap();
        let auth: String = auth.iter().flat_map(|(h, v)| [h.as_str(), ": ", v.as_str(), "\r\n"]).collect();
        self.ep.handle_datagram(self.now, self.local, phone, request(2, &auth).as_bytes());
        let ok = self.last_datagram().expect("an answer");
        assert!(ok.starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&ok));
    }

    /// `secs` of virtual time pass, timer by timer.
    fn idle(&mut self, secs: u64) {
        let end = self.now + Duration::from_secs(secs);
        for _ in 0..10_000_000 {
            match self.ep.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.ep.handle_timeout(self.now);
                    while self.ep.poll_output().is_some() {}
                }
                _ => break,
            }
        }
        self.now = end;
        self.ep.handle_timeout(end);
        while self.ep.poll_output().is_some() {}
    }
}

fn held(region: &Region<System>) -> i64 {
    let c = region.change();
    i64::try_from(c.bytes_allocated).unwrap() - i64::try_from(c.bytes_deallocated).unwrap()
}

#[test]
fn repeated_passes_over_the_same_users_keep_the_heap_flat() {
    const USERS: usize = 1_000;
    const PER_PASS: usize = 10_000;
    let _turn = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let region = Region::new(GLOBAL);
    let mut r = Registrar::new(USERS);
    let mut after = Vec::new();
    for pass in 0..3 {
        for k in 0..PER_PASS {
            // 2 000 registrations a second, as in the measurement.
            if k % 100 == 0 {
                r.idle(0);
                r.now += Duration::from_millis(50);
            }
            r.register(k % USERS);
        }
        // Transactions linger 32 s (Timer J); 40 s idle, as measured.
        r.idle(40);
        after.push(held(&region));
        eprintln!("pass {}: {} bytes held, tables {:?}", pass + 1, after[pass], r.ep.tables());
    }
    // Heaps of a few MB: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let growth = (after[2] - after[0]) as f64 / after[0] as f64;
    eprintln!("pass 3 vs pass 1: {:+.2} %", growth * 100.0);
    assert!(growth.abs() <= 0.05, "pass 1 {} bytes, pass 3 {} bytes: {:+.2} %", after[0], after[2], growth * 100.0);
}

#[test]
fn the_heap_held_per_binding() {
    let _turn = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // `SIPLINE_BINDINGS=100000` for the larger figure.
    let users: usize = std::env::var("SIPLINE_BINDINGS").map_or(20_000, |v| v.parse().expect("a count"));
    let region = Region::new(GLOBAL);
    let mut r = Registrar::new(users);
    r.idle(400);
    let empty = held(&region);
    for k in 0..users {
        if k % 100 == 0 {
            r.idle(0);
            r.now += Duration::from_millis(50);
        }
        r.register(k);
    }
    // Past the transactions' linger and the nonces' lifetime: what is left
    // is the bindings.
    r.idle(400);
    let full = held(&region);
    let per = (full - empty) / i64::try_from(users).unwrap();
    eprintln!("{users} bindings: {empty} bytes before, {full} after: {per} bytes per binding");
    assert!(per <= 2048, "{per} bytes per binding");
}

#[test]
fn workers_share_one_users_table_and_one_location_service() {
    // Issue 19: `serve --workers N` makes N endpoints from clones of one
    // ServerConfig. The users table (here 20 000 users) and the bindings
    // must exist once, not once per worker.
    let _turn = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let region = Region::new(GLOBAL);
    let users = Users::from_passwords((0..20_000).map(|i| (user(i), format!("pw{i}"))));
    let table = held(&region);
    let mut server = ServerConfig::new(DOMAIN, users);
    server.flood = None;
    server.nonce_secret = Some([9; 32]);
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let now = Instant::now();
    let mut workers = Vec::new();
    let mut per_worker = Vec::new();
    for id in 0..4u16 {
        let before = held(&region);
        let mut c = EndpointConfig::new(&format!("sip:sipline@{DOMAIN}")).serve(server.clone());
        c.worker = Some(sipline::endpoint::Worker::new(id, 4));
        c.seed = u64::from(id) + 1;
        let mut r = Registrar {
            ep: Endpoint::new(c).unwrap(),
            now,
            local,
            rng: Rng::new(u64::from(id)),
            calls: u64::from(id) * 1000,
        };
        r.ep.add_listener(Transport::Udp, local);
        r.ep.start(now);
        // Its first request makes its server state (users, nonces); then
        // 100 registrations each.
        for k in 0..100 {
            r.register(usize::from(id) * 100 + k);
        }
        r.idle(400);
        per_worker.push(held(&region) - before);
        workers.push(r);
    }
    eprintln!("users table {table} B; each worker with 100 bindings: {per_worker:?} B");
    // A worker's own: its nonce replay ring (1 MiB) and its 100 bindings
    // (~140 KB); a copy of the users table would add its 3 MB.
    let own = i64::try_from(sipline::auth::DEFAULT_NONCE_CAPACITY * 16).unwrap() + 100 * 2048;
    for cost in &per_worker {
        assert!(*cost < own, "a worker costs {cost} B (users table {table} B, own state under {own} B)");
    }
    // One location service: every worker sees all 400 bindings.
    let (first, last) = (format!("sip:{}@{DOMAIN}", user(0)), format!("sip:{}@{DOMAIN}", user(399)));
    let first = sipline::message::Uri::parse(&first).unwrap();
    let last = sipline::message::Uri::parse(&last).unwrap();
    for w in &workers {
        let reg = w.ep.registrar().unwrap();
        for uri in [&first, &last] {
            assert!(matches!(reg.targets(w.now, uri), sipline::registrar::Lookup::Aor(b) if b.len() == 1));
        }
    }
}
