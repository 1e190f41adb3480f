//! Failed digest answers, counted per user and per source, and the bans
//! they lead to (issue 18: a password guesser found a 200-word list's
//! password in 1.24 s). See [`Bans`].

use crate::concurrent::KeyedHash;
use papaya::{Compute, HashMap, Operation};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Failed answers allowed within [`DEFAULT_FAILURE_WINDOW`] before a ban,
/// unless a [`BanPolicy`] says otherwise.
pub const DEFAULT_MAX_FAILURES: u32 = 10;

/// The window failures are counted in, unless a [`BanPolicy`] says
/// otherwise: 60 s.
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// How long a ban lasts, unless a [`BanPolicy`] says otherwise: 5 min.
pub const DEFAULT_BAN: Duration = Duration::from_secs(300);

/// How many users and sources [`Bans`] tracks at most, together, unless a
/// [`BanPolicy`] says otherwise: 16 384 entries of some 100 bytes.
pub const DEFAULT_BAN_CAPACITY: usize = 16_384;

/// The target bans are logged under: the server role's (`sipline serve`
/// prints it).
const BAN_TARGET: &str = "sipline::serve";

/// Usernames are tracked by their first 64 bytes (cut at a character
/// boundary): the table's memory stays bounded whatever names come in.
const MAX_USER_KEY: usize = 64;

/// When failed digest answers lead to a ban: more than `max_failures - 1`
/// failures for one user, or from one source, within `window` ban that
/// user or source for `ban`. See [`Bans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanPolicy {
    /// Failures within `window` that start a ban; 0 turns counting and
    /// bans off.
    pub max_failures: u32,
    /// The window failures are counted in, from the first failure of it.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
    /// The most users and sources tracked, together (at least 1); past it
    /// the entry least recently failed or refused is dropped.
    pub capacity: usize,
}

impl BanPolicy {
    /// `max_failures` failures per `window` ban for `ban`, with the
    /// default capacity.
    pub fn new(max_failures: u32, window: Duration, ban: Duration) -> BanPolicy {
        BanPolicy { max_failures, window, ban, capacity: DEFAULT_BAN_CAPACITY }
    }

    /// No counting, no bans.
    pub fn disabled() -> BanPolicy {
        BanPolicy { max_failures: 0, ..BanPolicy::default() }
    }

    /// Sets the capacity (at least 1).
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> BanPolicy {
        self.capacity = capacity.max(1);
        self
    }

    /// Whether failures are counted at all.
    pub fn is_enabled(&self) -> bool {
        self.max_failures > 0
    }
}

impl Default for BanPolicy {
    /// 10 failures per 60 s ban for 5 min, at most 16 384 entries.
    fn default() -> BanPolicy {
        BanPolicy::new(DEFAULT_MAX_FAILURES, DEFAULT_FAILURE_WINDOW, DEFAULT_BAN)
    }
}

/// What a count is kept for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    /// A username (its first [`MAX_USER_KEY`] bytes), known or not.
    User(String),
    /// A source address; IPv6 by its /64 (one subscriber's prefix).
    Source(IpAddr),
}

impl Key {
    fn user(name: &str) -> Key {
        let mut end = name.len().min(MAX_USER_KEY);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Key::User(name[..end].to_owned())
    }

    fn source(addr: IpAddr) -> Key {
        match addr.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                Key::Source(IpAddr::V6(prefix.into()))
            }
            v4 @ IpAddr::V4(_) => Key::Source(v4),
        }
    }
}

/// One user's or source's failures.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the counting window began (its first failure).
    first: Instant,
    /// Failures since `first`.
    failures: u32,
    /// Banned until then.
    banned_until: Option<Instant>,
    /// Last failure or refusal, with a sequence number ordering those of
    /// one instant: the oldest is evicted first.
    order: (Instant, u64),
}

/// Which of a request's keys is banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Banned {
    /// The username.
    User,
    /// The source address.
    Source,
}

/// The failed digest answers of a server, counted per username (known or
/// not, so that counting tells nothing about who exists) and per source
/// address, with the bans they lead to ([`BanPolicy`]).
///
/// A key with `max_failures` failures within `window` (counted from the
/// first failure of the window) is banned for `ban`: while it lasts, every
/// answer for that user or from that source is refused before any digest
/// is computed (see [`DigestServer`](super::DigestServer)). Each ban is
/// logged once, at `warn` under the target `sipline::serve`, with the
/// source and the username (never the password, response or anything
/// else from the credentials). IPv6
/// sources count by their /64, as one subscriber holds at least that;
/// IPv4-mapped addresses as IPv4.
///
/// **Bounded.** The table holds at most `capacity` users and sources
/// together; past it the entry least recently failed or refused is
/// dropped. A banned source adds no entries (its answers are refused
/// unread), so flushing the table takes about `capacity / max_failures`
/// sources. Entries whose window and ban are over are dropped by
/// [`Bans::handle_timeout`].
///
/// Banning a username locks its owner out too while it lasts: the price
/// of stopping a guesser that spreads over many sources.
pub struct Bans {
    policy: BanPolicy,
    table: BanTable,
    /// When an entry this instance wrote (or saw at its last sweep) is
    /// done: the next sweep.
    next_sweep: Option<Instant>,
}

/// The table of failed answers that the [`Bans`] of several workers of
/// one server share (issue 19): a guesser whose requests the kernel
/// spreads over the workers is counted and banned once, not once per
/// worker. Clones share one table; it is lock-free ([`papaya`]): every
/// count is one atomic update of one entry.
#[derive(Clone)]
pub struct BanTable(Arc<Table>);

struct Table {
    entries: HashMap<Key, Entry, KeyedHash>,
    /// Orders touches across workers.
    seq: AtomicU64,
}

impl Default for BanTable {
    fn default() -> BanTable {
        BanTable::new()
    }
}

impl fmt::Debug for BanTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BanTable").field("tracked", &self.0.entries.len()).finish()
    }
}

impl BanTable {
    /// An empty table.
    pub fn new() -> BanTable {
        let hash = KeyedHash::new(0x6261_6e73_5f6b_6579, 0x7461_626c_655f_6b31);
        BanTable(Arc::new(Table { entries: HashMap::builder().hasher(hash).build(), seq: AtomicU64::new(0) }))
    }
}

impl fmt::Debug for Bans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bans").field("policy", &self.policy).field("tracked", &self.tracked()).finish_non_exhaustive()
    }
}

impl Bans {
    /// An empty table under `policy`.
    pub fn new(policy: BanPolicy) -> Bans {
        Bans::with_table(policy, &BanTable::new())
    }

    /// Counts into `table`, shared with the other [`Bans`] made with it
    /// (the workers of one server, issue 19).
    pub fn with_table(policy: BanPolicy, table: &BanTable) -> Bans {
        let policy = BanPolicy { capacity: policy.capacity.max(1), ..policy };
        Bans { policy, table: table.clone(), next_sweep: None }
    }

    /// The policy.
    pub fn policy(&self) -> BanPolicy {
        self.policy
    }

    /// How many users and sources are tracked now.
    pub fn tracked(&self) -> usize {
        self.table.0.entries.len()
    }

    /// Which of `user` and `source` is banned at `now`, if any; the user
    /// is looked at first. Reads only.
    pub fn banned(&self, now: Instant, user: &str, source: Option<IpAddr>) -> Option<Banned> {
        if !self.policy.is_enabled() {
            return None;
        }
        let entries = self.table.0.entries.pin();
        let is_banned = |key: &Key| entries.get(key).and_then(|e| e.banned_until).is_some_and(|until| now < until);
        if is_banned(&Key::user(user)) {
            return Some(Banned::User);
        }
        source.filter(|&s| is_banned(&Key::source(s))).map(|_| Banned::Source)
    }

    /// Like [`Bans::banned`], and if banned, the entry is kept among the
    /// last evicted (an attacker still knocking stays banned).
    pub fn refuse(&mut self, now: Instant, user: &str, source: Option<IpAddr>) -> Option<Banned> {
        let banned = self.banned(now, user, source)?;
        let key = match banned {
            Banned::User => Key::user(user),
            Banned::Source => Key::source(source?),
        };
        self.touch(now, &key);
        Some(banned)
    }

    /// Counts a failed answer for `user` from `source` at `now`; a key
    /// reaching the threshold is banned from now (logged once, at `warn`).
    /// Returns what this failure banned, if anything.
    pub fn fail(&mut self, now: Instant, user: &str, source: Option<IpAddr>) -> Vec<Banned> {
        let mut banned = Vec::new();
        if !self.policy.is_enabled() {
            return banned;
        }
        let keys = [Some((Key::user(user), Banned::User)), source.map(|s| (Key::source(s), Banned::Source))];
        for (key, kind) in keys.into_iter().flatten() {
            if self.count(now, key) {
                // Once per ban: the entry is refused, not counted, until
                // the ban ends. The username is attacker's text: Debug
                // escapes control characters.
                tracing::warn!(
                    target: BAN_TARGET,
                    source = %source.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    username = ?user,
                    banned = match kind { Banned::User => "user", Banned::Source => "source" },
                    failures = self.policy.max_failures,
                    window_s = self.policy.window.as_secs(),
                    ban_s = self.policy.ban.as_secs(),
                    "too many failed digest answers: banned"
                );
                banned.push(kind);
            }
        }
        self.evict();
        banned
    }

    /// Drops the entries whose window and ban are over, oldest first.
    /// Idempotent; safe to call at any time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|at| at > now) {
            return;
        }
        // A sweep of the whole table (bounded by its capacity), at most
        // once per entry this instance wrote falling due: entries whose
        // window and ban are over go, whoever wrote them; the next sweep
        // is when the first of the others is done.
        let entries = self.table.0.entries.pin();
        let done: Vec<Key> = entries.iter().filter(|(_, e)| self.done_at(e) <= now).map(|(k, _)| k.clone()).collect();
        for key in done {
            entries.compute(key, |current| match current {
                Some((_, e)) if self.done_at(e) <= now => Operation::Remove,
                _ => Operation::Abort(()),
            });
        }
        self.next_sweep = entries.iter().map(|(_, e)| self.done_at(e)).min();
    }

    /// When [`Bans::handle_timeout`] next has an entry to drop (the least
    /// recently touched one's end); `None` while nothing is tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// When an entry's window and ban are both over.
    fn done_at(&self, e: &Entry) -> Instant {
        let window = e.first.checked_add(self.policy.window).unwrap_or(e.first);
        e.banned_until.map_or(window, |until| until.max(window))
    }

    /// One more failure for `key`; true if it starts a ban.
    fn count(&mut self, now: Instant, key: Key) -> bool {
        let order = self.next_order(now);
        let policy = self.policy;
        let entries = self.table.0.entries.pin();
        // One atomic step per failure, whichever worker counts it.
        let counted = entries.compute(key, |current| {
            let fresh = Entry { first: now, failures: 0, banned_until: None, order };
            let mut entry = current.map_or(fresh, |(_, e)| *e);
            entry.order = order;
            let ban_over = entry.banned_until.is_some_and(|until| now >= until);
            let window_over = entry.first.checked_add(policy.window).is_none_or(|end| now >= end);
            if ban_over || (entry.banned_until.is_none() && window_over) {
                entry = fresh;
            }
            entry.failures = entry.failures.saturating_add(1);
            let starts = entry.banned_until.is_none() && entry.failures >= policy.max_failures;
            if starts {
                entry.banned_until = Some(now.checked_add(policy.ban).unwrap_or(now));
            }
            Operation::<Entry, ()>::Insert(entry)
        });
        let (starts, done) = match counted {
            Compute::Inserted(_, e) => (e.banned_until.is_some(), self.done_at(e)),
            Compute::Updated { old: (_, old), new: (_, new) } => {
                (old.banned_until.is_none() && new.banned_until.is_some(), self.done_at(new))
            }
            Compute::Removed(..) | Compute::Aborted(()) => (false, now),
        };
        self.next_sweep = Some(self.next_sweep.map_or(done, |at| at.min(done)));
        starts
    }

    /// Moves `key` to the young end of the eviction order.
    fn touch(&mut self, now: Instant, key: &Key) {
        let order = self.next_order(now);
        self.table.0.entries.pin().compute(key.clone(), |current| match current {
            Some((_, e)) => Operation::Insert(Entry { order, ..*e }),
            None => Operation::Abort(()),
        });
    }

    fn next_order(&mut self, now: Instant) -> (Instant, u64) {
        (now, self.table.0.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Drops the least recently touched entries past the capacity.
    fn evict(&mut self) {
        let entries = self.table.0.entries.pin();
        if entries.len() <= self.policy.capacity {
            return;
        }
        // Over capacity (a flood of keys): drop the least recently failed
        // or refused down to 15/16 of it, so that the sort is paid once per
        // capacity/16 new keys, not per key.
        let keep = self.policy.capacity - self.policy.capacity / 16;
        let mut all: Vec<((Instant, u64), Key)> = entries.iter().map(|(k, e)| (e.order, k.clone())).collect();
        all.sort();
        let excess = all.len().saturating_sub(keep);
        for (order, key) in all.into_iter().take(excess) {
            // Unless another worker touched it meanwhile.
            entries.compute(key, |current| match current {
                Some((_, e)) if e.order == order => Operation::Remove,
                _ => Operation::Abort(()),
            });
        }
        tracing::debug!("failed-answer table full: dropped the oldest entries");
    }
}
