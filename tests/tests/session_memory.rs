//! Issue 7: "dialog state is freed when a session ends — a long run of
//! calls must not grow memory". Two endpoints wired back to back in memory
//! (no sockets, a virtual clock) place 3 000 calls in bursts of 1 000;
//! once every transaction's linger (Timer L / J, 32 s over UDP) has run
//! out, the live heap, counted by a counting allocator, must be back where
//! it was after a quiet warm-up of 20 calls one at a time: nothing kept per
//! call, and the tables' peak given back (the `shed` module).
//!
//! One test in its own binary: the allocator counts the whole process.

use sipline::endpoint::{Endpoint, EndpointConfig, Event, Output, Request, SessionEvent};
use sipline::transport::Transport;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Pair {
    now: Instant,
    alice: Endpoint,
    bob: Endpoint,
    a: SocketAddr,
    b: SocketAddr,
    answered: usize,
    ended: usize,
}

impl Pair {
    fn new() -> Pair {
        let a: SocketAddr = "127.0.0.1:5071".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5072".parse().unwrap();
        // What a runtime does: the listener it bound, a seed of its own.
        let ep = |user: &str, addr, seed| {
            let mut config = EndpointConfig::new(&format!("sip:{user}@{addr}"));
            config.seed = seed;
            let mut ep = Endpoint::new(config).unwrap();
            ep.add_listener(Transport::Udp, addr);
            ep
        };
        let now = Instant::now();
        let (mut alice, mut bob) = (ep("alice", a, 1), ep("bob", b, 2));
        alice.start(now);
        bob.start(now);
        Pair { now, alice, bob, a, b, answered: 0, ended: 0 }
    }

    /// Moves every datagram and answers every event until both are quiet
    /// (bounded: a stuck exchange fails the test instead of spinning).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(o) = self.alice.poll_output() {
                moved = true;
                match o {
                    Output::Datagram { remote, bytes, .. } if remote == self.b => {
                        self.bob.handle_datagram(self.now, self.b, self.a, &bytes);
                    }
                    Output::Event(Event::Session { session, event: SessionEvent::Answered { .. } }) => {
                        self.answered += 1;
                        self.alice.hangup(self.now, session).unwrap();
                    }
                    _ => {}
                }
            }
            while let Some(o) = self.bob.poll_output() {
                moved = true;
                match o {
                    Output::Datagram { remote, bytes, .. } if remote == self.a => {
                        self.alice.handle_datagram(self.now, self.a, self.b, &bytes);
                    }
                    Output::Event(Event::IncomingSession { session, .. }) => {
                        self.bob.accept(self.now, session, None).unwrap();
                    }
                    Output::Event(Event::Session { event: SessionEvent::Ended(_), .. }) => self.ended += 1,
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the endpoints never went quiet");
    }

    /// `n` calls, `batch` at a time, then time enough for every lingering
    /// transaction and timer to end.
    fn calls(&mut self, n: usize, batch: usize) {
        let target = format!("sip:bob@{}", self.b);
        for start in (0..n).step_by(batch) {
            for _ in start..n.min(start + batch) {
                let offer = b"v=0\r\n".to_vec();
                self.alice.invite(self.now, Request::invite(&target, "application/sdp", offer)).unwrap();
            }
            self.settle();
            self.tick(Duration::from_millis(100));
        }
        for _ in 0..400 {
            self.tick(Duration::from_millis(100));
        }
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        self.alice.handle_timeout(self.now);
        self.bob.handle_timeout(self.now);
        self.settle();
    }
}

#[test]
fn three_thousand_calls_leave_the_heap_where_it_was() {
    let mut pair = Pair::new();
    // A quiet warm-up: one call at a time.
    pair.calls(20, 1);
    assert_eq!(pair.answered, 20);
    let region = Region::new(GLOBAL);
    pair.calls(3_000, 1_000);
    let change = region.change();
    assert_eq!(pair.answered, 3_020, "every call was answered");
    assert_eq!(pair.ended, 3_020, "and hung up");
    for ep in [&pair.alice, &pair.bob] {
        assert_eq!(ep.session_count(), 0);
        assert_eq!(ep.outstanding(), 0);
        assert_eq!(ep.poll_timeout(), None, "nothing left to time");
    }
    let grown = change.bytes_allocated.saturating_sub(change.bytes_deallocated);
    let shrunk = change.bytes_deallocated.saturating_sub(change.bytes_allocated);
    println!("live heap change over 3 000 calls: +{grown} / -{shrunk} bytes ({} allocations)", change.allocations);
    // Bursts of 1 000 calls hold megabytes at their peak (both sides,
    // every transaction lingering); what is left must be no more than the
    // small queues that keep their buffer (up to 64 entries each).
    assert!(grown <= 16 * 1024, "live heap grew by {grown} bytes over 3 000 calls (shrunk {shrunk})");
    assert!(change.allocations > 3_000 * 50, "the calls did allocate ({} allocations)", change.allocations);
}
