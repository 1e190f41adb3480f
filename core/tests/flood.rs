//! `sipline::endpoint::FloodTable`: the flood limit's buckets, shared by the
//! workers of one `serve` (issue 19).
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::endpoint::{FloodLimit, FloodTable};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

/// Two workers (clones of one table) draw on one bucket per source: a
/// burst of 10 is 10 in all, not 10 at each.
#[test]
fn workers_sharing_a_table_draw_on_one_bucket() {
    let now = Instant::now();
    let limit = FloodLimit::new(1, 10);
    let a = FloodTable::new();
    let b = a.clone();
    let allowed =
        (0..40).filter(|k| if k % 2 == 0 { a.allow(limit, now, ip(1)) } else { b.allow(limit, now, ip(1)) }).count();
    assert_eq!(allowed, 10);
    assert_eq!(a.stats(), (1, 30));
    assert_eq!(b.stats(), (1, 30));
    // A second later one token came back, for either worker.
    let later = now + Duration::from_secs(1);
    assert!(b.allow(limit, later, ip(1)));
    assert!(!a.allow(limit, later, ip(1)));
    // Tables of their own: twice the burst.
    let (c, d) = (FloodTable::new(), FloodTable::new());
    let allowed =
        (0..40).filter(|k| if k % 2 == 0 { c.allow(limit, now, ip(1)) } else { d.allow(limit, now, ip(1)) }).count();
    assert_eq!(allowed, 20);
}

#[test]
fn the_table_forgets_the_sources_seen_least_recently() {
    let now = Instant::now();
    let mut limit = FloodLimit::new(1, 1);
    limit.max_sources = 32;
    let table = FloodTable::new();
    for k in 0..33u8 {
        assert!(table.allow(limit, now + Duration::from_millis(u64::from(k)), ip(k)));
    }
    // Over 32: down to 30 (15/16), the oldest gone.
    assert_eq!(table.stats().0, 30);
    let later = now + Duration::from_millis(40);
    assert!(table.allow(limit, later, ip(0)), "source 0 was forgotten: a full bucket again");
    assert!(!table.allow(limit, later, ip(32)), "source 32 is remembered: its bucket is empty");
}
