//! Flood limiting for the server role: requests from one source address
//! beyond a rate are dropped before they cost a transaction (a scanner or
//! a "friendly-scanner" flood from one host; RFC 3261 §26.1.5 leaves
//! denial-of-service defences to the implementation, as Kamailio's `pike`
//! module does).
//!
//! One token bucket per source IP address, in a table of bounded size:
//! when it is full, the source seen least recently is forgotten. A source
//! that starts being limited is logged once (at `warn`), until its bucket
//! refills.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many requests one source address may send (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FloodLimit {
    /// Requests per second a source may keep sending.
    pub per_second: u32,
    /// How many it may send at once above that (the bucket's size).
    pub burst: u32,
    /// How many sources are tracked at most (the least recently seen go
    /// first).
    pub max_sources: usize,
}

impl FloodLimit {
    /// `per_second` requests a second, bursts of `burst`, 65 536 sources.
    ///
    /// ```
    /// use sipline::endpoint::FloodLimit;
    /// let limit = FloodLimit::new(1000, 2000);
    /// assert_eq!((limit.per_second, limit.burst), (1000, 2000));
    /// ```
    pub fn new(per_second: u32, burst: u32) -> FloodLimit {
        FloodLimit { per_second, burst: burst.max(1), max_sources: 65_536 }
    }
}

impl Default for FloodLimit {
    /// 1 000 requests a second per source, bursts of 2 000: far above what
    /// phones or a peer proxy send, far below a flood.
    fn default() -> FloodLimit {
        FloodLimit::new(1000, 2000)
    }
}

/// One source's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, in thousandths of a request.
    milli: u64,
    /// When it was last filled.
    at: Instant,
    /// Requests are being dropped (logged once when it started).
    limited: bool,
}

/// The buckets of every source seen.
#[derive(Debug)]
pub(super) struct Flood {
    limit: FloodLimit,
    buckets: BTreeMap<IpAddr, Bucket>,
    /// (last seen, source): the least recently seen first.
    seen: BTreeSet<(Instant, IpAddr)>,
    /// Requests dropped so far.
    dropped: u64,
}

impl Flood {
    pub(super) fn new(limit: FloodLimit) -> Flood {
        Flood { limit, buckets: BTreeMap::new(), seen: BTreeSet::new(), dropped: 0 }
    }

    /// Whether a request from `source` at `now` may go on; takes a token.
    pub(super) fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        let full = u64::from(self.limit.burst) * 1000;
        let bucket = if let Some(b) = self.buckets.get(&source).copied() {
            self.seen.remove(&(b.at, source));
            b
        } else {
            if self.buckets.len() >= self.limit.max_sources.max(1) {
                if let Some((_, oldest)) = self.seen.pop_first() {
                    self.buckets.remove(&oldest);
                }
            }
            Bucket { milli: full, at: now, limited: false }
        };
        // Refill for the time since the last request.
        let elapsed = now.saturating_duration_since(bucket.at).min(Duration::from_secs(3600));
        let refill = elapsed.as_millis().saturating_mul(u128::from(self.limit.per_second));
        let milli = u64::try_from(u128::from(bucket.milli).saturating_add(refill)).unwrap_or(u64::MAX).min(full);
        let mut bucket = Bucket { milli, at: now, limited: bucket.limited };
        let allowed = bucket.milli >= 1000;
        if allowed {
            bucket.milli -= 1000;
            if bucket.limited && bucket.milli >= full / 2 {
                bucket.limited = false;
                tracing::info!(target: "sipline::serve", %source, "flood over: requests taken again");
            }
        } else {
            self.dropped += 1;
            if !bucket.limited {
                bucket.limited = true;
                tracing::warn!(
                    target: "sipline::serve",
                    %source,
                    per_second = self.limit.per_second,
                    burst = self.limit.burst,
                    "flood: requests over the limit dropped"
                );
            }
        }
        self.buckets.insert(source, bucket);
        self.seen.insert((now, source));
        allowed
    }

    /// (sources tracked, requests dropped so far).
    pub(super) fn stats(&self) -> (usize, u64) {
        (self.buckets.len(), self.dropped)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's origin of time
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn a_burst_passes_then_the_rate() {
        let t0 = Instant::now();
        let mut f = Flood::new(FloodLimit::new(10, 20));
        // 20 at once, the 21st dropped.
        assert!((0..20).all(|_| f.allow(t0, ip(1))));
        assert!(!f.allow(t0, ip(1)));
        // Another source is not affected.
        assert!(f.allow(t0, ip(2)));
        // 100 ms later one more token (10/s).
        assert!(f.allow(t0 + Duration::from_millis(100), ip(1)));
        assert!(!f.allow(t0 + Duration::from_millis(100), ip(1)));
        // A second of 10/s keeps passing, 11/s does not.
        let mut passed = 0;
        for i in 1..=11u64 {
            if f.allow(t0 + Duration::from_millis(100 + i * 1000 / 11), ip(1)) {
                passed += 1;
            }
        }
        assert!((9..=10).contains(&passed), "{passed}");
        assert_eq!(f.stats().1, 2 + (11 - passed));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent() {
        let t0 = Instant::now();
        let mut limit = FloodLimit::new(1, 1);
        limit.max_sources = 3;
        let mut f = Flood::new(limit);
        for n in 1..=3 {
            assert!(f.allow(t0 + Duration::from_millis(u64::from(n)), ip(n)));
        }
        assert!(!f.allow(t0 + Duration::from_millis(4), ip(1)), "1 is out of tokens");
        // A fourth source evicts the least recently seen (2).
        assert!(f.allow(t0 + Duration::from_millis(5), ip(4)));
        assert_eq!(f.stats().0, 3);
        assert!(f.allow(t0 + Duration::from_millis(6), ip(2)), "2 was forgotten: a full bucket again");
        assert!(!f.allow(t0 + Duration::from_millis(7), ip(1)), "1 was kept, still empty");
    }
}
