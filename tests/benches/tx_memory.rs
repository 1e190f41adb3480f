//! Heap memory per live transaction: 10 000 client and 10 000 server
//! transactions kept alive (unreliable transport, so each sits in
//! Completed until its timer), bytes counted by a counting allocator.
//!
//! Run: `cargo bench -p sipline-tests --bench tx_memory`. For instruction
//! counts under callgrind, run the built binary as `tx_memory reliable N`:
//! it then only performs N reliable exchanges.

use sipline_tests::pair::Pair;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    const N: usize = 10_000;
    let t0 = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, n, ..] = args.as_slice() {
        if mode == "reliable" {
            let n: usize = n.parse().expect("reliable N");
            let mut pair = Pair::default();
            let ok = (0..n).filter(|_| pair.exchange(t0, true)).count();
            println!("{ok} reliable exchanges");
            return;
        }
    }
    let mut pair = Pair::default();
    // Warm up so table growth is not charged to the measurement.
    for _ in 0..100 {
        pair.exchange(t0, false);
    }
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        assert!(pair.exchange(t0, false));
    }
    let s = region.change();
    let live = s.bytes_allocated.saturating_sub(s.bytes_deallocated);
    let (clients, _) = pair.client.len();
    let (_, servers) = pair.server.len();
    println!("{N} exchanges (+100 warm-up): {clients} client and {servers} server transactions alive");
    println!("live heap growth {live} bytes = {} bytes per exchange (one client + one server transaction)", live / N);
}
