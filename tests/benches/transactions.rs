//! Transactions per second: a MESSAGE/200 exchange between two
//! transaction layers wired back to back in memory, parse and serialize
//! included (issue 3 target: 300 000 non-INVITE transactions per second
//! per core). The reference in the same run is parsing the same request
//! and response once each, the floor under any transaction.
//!
//! Run: `cargo bench -p sipline-tests --bench transactions`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipline::message::Message;
use sipline_tests::pair::Pair;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn transactions(c: &mut Criterion) {
    let mut g = c.benchmark_group("transaction");
    g.throughput(Throughput::Elements(1));
    // A fixed origin; the clock only moves where the bench moves it.
    let t0 = Instant::now();
    g.bench_function("message_200_reliable", |b| {
        let mut pair = Pair::default();
        b.iter(|| assert!(pair.exchange(black_box(t0), true)));
    });
    g.bench_function("message_200_unreliable", |b| {
        // Completed transactions linger (K = T4, J = 64·T1); every 10 000
        // exchanges the clock jumps past them so memory stays bounded.
        let mut pair = Pair::default();
        let mut now = t0;
        let mut n = 0u32;
        b.iter(|| {
            assert!(pair.exchange(black_box(now), false));
            n += 1;
            if n % 10_000 == 0 {
                now += Duration::from_secs(40);
                pair.client.handle_timeout(now);
                pair.server.handle_timeout(now);
                while pair.client.poll_output().is_some() {}
                while pair.server.poll_output().is_some() {}
            }
        });
    });
    let mut pair = Pair::default();
    let req = pair.request();
    g.bench_function("reference_parse_request", |b| b.iter(|| black_box(Message::parse(black_box(&req)).is_ok())));
    g.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
