//! Flood limiting for the server role: requests from one source address
//! beyond a rate are dropped before they cost a transaction (a scanner or
//! a "friendly-scanner" flood from one host; RFC 3261 §26.1.5 leaves
//! denial-of-service defences to the implementation, as Kamailio's `pike`
//! module does).
//!
//! One token bucket per source IP address, in a table of bounded size:
//! when it is full, the sources seen least recently are forgotten. A source
//! that starts being limited is logged once (at `warn`), until its bucket
//! refills. The workers of one `serve` share the table ([`FloodTable`],
//! lock-free, issue 19): a source's requests spread over the workers
//! draw on one bucket.

use crate::concurrent::KeyedHash;
use papaya::{Compute, HashMap, Operation};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    /// The last request took a token (it was let through).
    allowed: bool,
}

/// The buckets of every source seen, shared by clones: the workers of one
/// server (issue 19) limit a source once, not once each. Every request is
/// one atomic update of its source's bucket ([`papaya`]), never a lock.
#[derive(Clone)]
pub struct FloodTable(Arc<Table>);

struct Table {
    buckets: HashMap<IpAddr, Bucket, KeyedHash>,
    /// Requests dropped so far, by every worker.
    dropped: AtomicU64,
}

impl Default for FloodTable {
    fn default() -> FloodTable {
        FloodTable::new()
    }
}

impl fmt::Debug for FloodTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FloodTable").field("sources", &self.0.buckets.len()).finish_non_exhaustive()
    }
}

impl FloodTable {
    /// An empty table.
    pub fn new() -> FloodTable {
        let hash = KeyedHash::new(0x666c_6f6f_645f_6b30, 0x666c_6f6f_645f_6b31);
        FloodTable(Arc::new(Table { buckets: HashMap::builder().hasher(hash).build(), dropped: AtomicU64::new(0) }))
    }

    /// Whether a request from `source` at `now` may go on; takes a token.
    /// Whether a request from `source` at `now` may go on under `limit`;
    /// takes a token from its bucket (one atomic update of one entry).
    pub fn allow(&self, limit: FloodLimit, now: Instant, source: IpAddr) -> bool {
        let full = u64::from(limit.burst) * 1000;
        let buckets = self.0.buckets.pin();
        let taken = buckets.compute(source, |current| {
            let bucket = current.map_or(Bucket { milli: full, at: now, limited: false, allowed: true }, |(_, b)| *b);
            // Refill for the time since the last request.
            let elapsed = now.saturating_duration_since(bucket.at).min(Duration::from_secs(3600));
            let refill = elapsed.as_millis().saturating_mul(u128::from(limit.per_second));
            let milli = u64::try_from(u128::from(bucket.milli).saturating_add(refill)).unwrap_or(u64::MAX).min(full);
            let mut bucket = Bucket { milli, at: now.max(bucket.at), limited: bucket.limited, allowed: milli >= 1000 };
            if bucket.allowed {
                bucket.milli -= 1000;
                if bucket.limited && bucket.milli >= full / 2 {
                    bucket.limited = false;
                }
            } else {
                bucket.limited = true;
            }
            Operation::<Bucket, ()>::Insert(bucket)
        });
        let (was_limited, bucket) = match taken {
            Compute::Inserted(_, new) => (false, *new),
            Compute::Updated { old: (_, old), new: (_, new) } => (old.limited, *new),
            Compute::Removed(..) | Compute::Aborted(()) => return true,
        };
        let allowed = bucket.allowed;
        if was_limited && !bucket.limited {
            tracing::info!(target: "sipline::serve", %source, "flood over: requests taken again");
        }
        if !allowed {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            if !was_limited && bucket.limited {
                tracing::warn!(
                    target: "sipline::serve",
                    %source,
                    per_second = limit.per_second,
                    burst = limit.burst,
                    "flood: requests over the limit dropped"
                );
            }
        }
        if buckets.len() > limit.max_sources.max(1) {
            evict(&buckets, limit.max_sources.max(1));
        }
        allowed
    }

    /// (sources tracked, requests dropped so far), over every worker.
    pub fn stats(&self) -> (usize, u64) {
        (self.0.buckets.len(), self.0.dropped.load(Ordering::Relaxed))
    }
}

/// A worker's view of the flood limit: its limit over a shared table.
#[derive(Debug)]
pub(super) struct Flood {
    limit: FloodLimit,
    table: FloodTable,
}

impl Flood {
    pub(super) fn new(limit: FloodLimit, table: &FloodTable) -> Flood {
        Flood { limit, table: table.clone() }
    }

    /// Whether a request from `source` at `now` may go on; takes a token.
    pub(super) fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        self.table.allow(self.limit, now, source)
    }

    /// (sources tracked, requests dropped so far), over every worker.
    pub(super) fn stats(&self) -> (usize, u64) {
        self.table.stats()
    }
}

/// Forgets the sources seen least recently, down to 15/16 of `max` (the
/// sort is paid once per `max/16` new sources, not per source).
fn evict<G: papaya::Guard>(buckets: &papaya::HashMapRef<'_, IpAddr, Bucket, KeyedHash, G>, max: usize) {
    let keep = max - max / 16;
    let mut all: Vec<(Instant, IpAddr)> = buckets.iter().map(|(source, b)| (b.at, *source)).collect();
    all.sort();
    let excess = all.len().saturating_sub(keep);
    for (at, source) in all.into_iter().take(excess) {
        // Unless it sent again meanwhile.
        buckets.compute(source, |current| match current {
            Some((_, b)) if b.at == at => Operation::Remove,
            _ => Operation::Abort(()),
        });
    }
}
