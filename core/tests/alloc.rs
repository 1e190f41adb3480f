//! Heap allocations made by the parser, counted exactly.
//!
//! `Message::parse` promises to allocate nothing for messages of up to
//! [`INLINE_HEADERS`] header fields, and the typed reads a transaction layer
//! needs (top Via branch, From/To tags, Call-ID, CSeq) borrow from the input.
//! A counting global allocator (`stats_alloc`, so this crate keeps
//! `forbid(unsafe_code)`) checks both. This binary holds a single test so no
//! other test thread allocates while it counts.

#[path = "common/mod.rs"]
mod common;

use common::{spill_message, SIP_SAMPLES, SPILL_FIELDS, WSINV};
use sipline::message::{Message, INLINE_HEADERS};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (including reallocations) made while `f` runs.
fn count<R>(f: impl FnOnce() -> R) -> usize {
    let region = Region::new(GLOBAL);
    black_box(f());
    let c = region.change();
    c.allocations + c.reallocations
}

/// What a transaction layer reads: top Via branch, tags, Call-ID, CSeq.
fn key<'a>(m: &Message<'a>) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str, u32) {
    let via = m.via().unwrap().unwrap();
    let from = m.from().unwrap().unwrap();
    let to = m.to().unwrap().unwrap();
    let call_id = m.call_id().unwrap().unwrap();
    let cseq = m.cseq().unwrap().unwrap();
    black_box(cseq.method());
    (via.branch(), from.tag(), to.tag(), call_id.as_str(), cseq.seq())
}

#[test]
fn parse_and_key_reads_allocate_nothing() {
    // The counter must see allocations, or every zero below is vacuous.
    assert_eq!(count(|| Vec::<u8>::with_capacity(1)), 1);

    let spill = spill_message();
    let mut inputs: Vec<(&str, &[u8])> = SIP_SAMPLES.to_vec();
    inputs.push(("rfc4475_wsinv.sip", WSINV));
    for (name, bytes) in &inputs {
        let parse = count(|| Message::parse(black_box(bytes)).unwrap());
        let typed = count(|| {
            let m = Message::parse(black_box(bytes)).unwrap();
            black_box(key(&m));
        });
        assert_eq!((parse, typed), (0, 0), "{name}: allocations in parse, parse + key reads");
    }
    // The documented spill: fields past INLINE_HEADERS go to a Vec.
    let m = Message::parse(&spill).unwrap();
    assert_eq!(m.headers().len(), SPILL_FIELDS);
    assert!(m.headers().len() > INLINE_HEADERS);
    assert!(count(|| Message::parse(black_box(&spill)).unwrap()) >= 1);
}
