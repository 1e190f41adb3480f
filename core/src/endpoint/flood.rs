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
