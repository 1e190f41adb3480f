//! Server nonces: issued, checked without a lookup, expired, and guarded
//! against replay (RFC 7616 §3.3, §3.4; RFC 3261 §22.1). See [`Nonces`].

use super::digest::lower_hex;
use crate::rng::Rng;
use ring::hmac;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a nonce is accepted after it was issued, unless
/// [`Nonces::with_lifetime`] says otherwise: 300 s, long enough for a user
/// to type a password after a challenge, short enough that a captured
/// nonce soon stops being useful. Clients that keep answering with a
/// nonce (REGISTER refreshes, RFC 7616 §3.4 `nc`) are re-challenged with
/// `stale=true` after it and retry without asking the user.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// How many answered nonces [`Nonces`] tracks at most, unless
/// [`NonceLedger::with_capacity`] says otherwise: 262 144 entries of 16
/// bytes (4 MiB, allocated at the first answer and never grown, one for
/// all the workers of a server), which covers some 870 newly answered
/// nonces a second for the whole default lifetime — and answers that come
/// within 18 s of their challenge at 14 000 challenges a second.
pub const DEFAULT_NONCE_CAPACITY: usize = 1 << 18;

/// The largest replay table: one entry per value of the issue counter's
/// bits in the stamp.
const MAX_CAPACITY: usize = 1 << SEQ_BITS;

/// The identifier of a nonce: a keyed pseudo-random function of a hidden
/// issue counter, so nonces tell nothing about how many came before.
const ID: usize = 8;
/// The stamp (issue time and sequence, big-endian), masked.
const TIME: usize = 8;
/// The low bits of the stamp: the issue counter's, ordering nonces of one
/// millisecond (a million of them before it wraps).
const SEQ_BITS: u32 = 20;
/// The latest issue time a stamp holds (2^44 ms: over 500 years).
const MAX_MILLIS: u64 = u64::MAX >> SEQ_BITS;
/// The signed part of a nonce: identifier, then masked time.
const PAYLOAD: usize = ID + TIME;
/// The HMAC-SHA256 tag, truncated to 128 bits.
const TAG: usize = 16;
/// A nonce's length in hex digits.
const NONCE_LEN: usize = 2 * (PAYLOAD + TAG);

/// Why a nonce is not accepted. Each means "challenge again"; only
/// [`NonceError::Unknown`] means the nonce was never this server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// Not a nonce this server issued: malformed, or its MAC does not
    /// check (forged, garbled, or issued under another key).
    #[error("unknown nonce")]
    Unknown,
    /// Issued here but no longer accepted: older than the lifetime, or
    /// dropped from the replay table at its cap. With a valid digest the
    /// challenge carries `stale=true` (RFC 7616 §3.3).
    #[error("stale nonce")]
    Stale,
    /// The nonce count is not above the highest one seen with this nonce,
    /// or an answer without `qop` reuses a nonce (RFC 7616 §3.4).
    #[error("replayed nonce count")]
    Replayed,
    /// An answer with this nonce failed (a wrong digest): the nonce is
    /// used up, whatever comes with it next, so one challenge buys one
    /// guess at a password (see [`Nonces::spend`]).
    #[error("nonce spent by a failed answer")]
    Spent,
}

/// One entry of the replay table: 16 bytes, two atomic words, so that
/// the workers of a server share one table without a lock (issue 19).
///
/// `stamp` holds the key ([`Nonces::open`]: the nonce's stamp plus one)
/// of the nonce that owns the entry (0: free); it only grows, as later
/// nonces take the entry over. `state` holds that nonce's replay state —
/// the highest `nc` accepted (`u32::MAX` once used without `qop`), whether
/// a failed answer spent it — under a tag of the key ([`tag`]), so that a
/// compare-and-swap on it fails if the entry changed hands in between.
#[derive(Debug, Default)]
struct Slot {
    stamp: AtomicU64,
    state: AtomicU64,
}

/// The tag of `key` in a table of `2^bits` entries: the key's bits above
/// the index, 30 of them — distinct for any two keys that share an entry
/// within 2^28 ms (three days: longer than any nonce lifetime,
/// [`MAX_NONCE_LIFETIME`]).
fn tag(key: u64, bits: u32) -> u64 {
    (key.saturating_sub(1) >> bits) & TAG_MASK
}

const TAG_MASK: u64 = (1 << 30) - 1;
/// Set in every `state` word written (0: never answered).
const OWNED: u64 = 1 << 63;

/// A slot's `state` word: owned, tag, spent flag, highest `nc`.
fn state(tag: u64, spent: bool, last_nc: u32) -> u64 {
    OWNED | (tag << 33) | (u64::from(spent) << 32) | u64::from(last_nc)
}

/// The replay state a `state` word holds for the nonce with `tag`, if it
/// is that nonce's: (spent, highest `nc`).
fn parts(state: u64, tag: u64) -> Option<(bool, u32)> {
    let last_nc = u32::try_from(state & 0xffff_ffff).unwrap_or(u32::MAX);
    (state & OWNED != 0 && (state >> 33) & TAG_MASK == tag).then_some((state & (1 << 32) != 0, last_nc))
}

/// The longest nonce lifetime [`Nonces::with_lifetime`] takes: a day.
pub const MAX_NONCE_LIFETIME: Duration = Duration::from_secs(86_400);

/// How many times a table operation tries again when other workers change
/// its entry at the same instant; past it the nonce reads as stale (its
/// client is challenged again).
const ATTEMPTS: usize = 64;

struct Ledger {
    /// When nonces are dated from: set by the first [`Nonces`] made with
    /// the ledger, adopted by the others.
    origin: OnceLock<(Instant, u64)>,
    /// How many nonces were issued; never shown.
    issued: AtomicU64,
    /// log2 of the table's size.
    bits: u32,
    /// The answered (or spent) nonces, at their issue counter modulo the
    /// size; allocated at the first answer.
    slots: OnceLock<Box<[Slot]>>,
    /// Where each answer recorded here is told, when other instances of
    /// the domain mirror the table (issue 20).
    journal: Option<Journal>,
}

struct Journal {
    uses: Sender<NonceUse>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Set by the first use queued since the reader found the journal
    /// empty: one wake-up per batch.
    armed: Arc<AtomicBool>,
}

/// One answer a ledger recorded (or one failed answer that spent its
/// nonce), as [`NonceJournal`] hands it to the other instances of a
/// domain, which [`NonceLedger::apply`] it to theirs (issue 20): an answer
/// replayed to another instance is refused there too, once the use has
/// arrived (a millisecond or so over a network: the window a replay has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceUse {
    /// Which nonce (its stamp, opaque).
    pub stamp: u64,
    /// The highest nonce count accepted (`u32::MAX` for an answer
    /// without `qop`).
    pub last_nc: u32,
    /// A failed answer spent the nonce.
    pub spent: bool,
}

/// The receiving end of a ledger's journal ([`NonceLedger::with_journal`]).
#[derive(Debug)]
pub struct NonceJournal {
    uses: Receiver<NonceUse>,
    armed: Arc<AtomicBool>,
}

impl NonceJournal {
    /// The next use, if one is queued. Read until `None`: `wake` is called
    /// again only for a use queued after that.
    pub fn try_next(&self) -> Option<NonceUse> {
        if let Ok(u) = self.uses.try_recv() {
            return Some(u);
        }
        self.armed.store(false, Ordering::SeqCst);
        self.uses.try_recv().ok()
    }
}

/// What the [`Nonces`] of several workers of one server share (issue 19):
/// the issue counter, so no two workers issue the same stamp, and the
/// replay table, so an answer replayed to another worker is refused there
/// too. Clones share one ledger; every operation on it is an atomic
/// instruction or a compare-and-swap, never a lock.
///
/// ```
/// use sipline::auth::{NonceLedger, Nonces};
/// use std::time::Instant;
///
/// // `now` comes from the caller (the core reads no clock).
/// fn example(now: Instant) {
/// let ledger = NonceLedger::new();
/// let mut a = Nonces::with_secret(now, b"one secret for both").with_ledger(&ledger);
/// let mut b = Nonces::with_secret(now, b"one secret for both").with_ledger(&ledger);
/// let nonce = a.issue(now);
/// assert!(b.record(now, &nonce, Some(1)).is_ok());
/// // The same answer again, at either worker: a replay.
/// assert!(a.record(now, &nonce, Some(1)).is_err());
/// assert!(b.record(now, &nonce, Some(1)).is_err());
/// }
/// ```
#[derive(Clone)]
pub struct NonceLedger(Arc<Ledger>);

impl fmt::Debug for NonceLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceLedger").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

impl Default for NonceLedger {
    fn default() -> NonceLedger {
        NonceLedger::new()
    }
}

impl NonceLedger {
    /// A ledger with a replay table of [`DEFAULT_NONCE_CAPACITY`] entries.
    pub fn new() -> NonceLedger {
        NonceLedger::with_capacity(DEFAULT_NONCE_CAPACITY)
    }

    /// A ledger whose replay table has `capacity` entries, rounded up to a
    /// power of two, from 1 to 2^20, 16 bytes each.
    pub fn with_capacity(capacity: usize) -> NonceLedger {
        NonceLedger::build(capacity, 0, None)
    }

    /// A ledger of [`DEFAULT_NONCE_CAPACITY`] entries that tells every
    /// answer it records ([`NonceJournal`]; `wake` is called when one is
    /// queued into an empty journal), for instances of a domain that tell
    /// each other (issue 20). Its issue counter starts at `first` — a
    /// random number per instance, so that two instances rarely issue
    /// nonces of one stamp in one millisecond (their uses would be taken
    /// for each other's: refused, and the client challenged again).
    pub fn with_journal(first: u64, wake: impl Fn() + Send + Sync + 'static) -> (NonceLedger, NonceJournal) {
        let (uses, receiver) = channel();
        let armed = Arc::new(AtomicBool::new(false));
        let journal = Journal { uses, wake: Arc::new(wake), armed: Arc::clone(&armed) };
        (NonceLedger::build(DEFAULT_NONCE_CAPACITY, first, Some(journal)), NonceJournal { uses: receiver, armed })
    }

    fn build(capacity: usize, first: u64, journal: Option<Journal>) -> NonceLedger {
        let bits = capacity.clamp(1, MAX_CAPACITY).next_power_of_two().trailing_zeros();
        NonceLedger(Arc::new(Ledger {
            origin: OnceLock::new(),
            issued: AtomicU64::new(first),
            bits,
            slots: OnceLock::new(),
            journal,
        }))
    }

    /// Records a use another instance told (its [`NonceJournal`]): the
    /// highest count and the spent mark join what this ledger knows of the
    /// nonce, unless a later nonce owns its entry here. Never journaled
    /// again.
    pub fn apply(&self, used: NonceUse) {
        let key = used.stamp;
        let slot = self.slot_made(key);
        let mine = tag(key, self.0.bits);
        for _ in 0..ATTEMPTS {
            let owner = slot.stamp.load(Ordering::Acquire);
            if owner > key {
                return;
            }
            if owner < key {
                let _ = slot.stamp.compare_exchange(owner, key, Ordering::AcqRel, Ordering::Acquire);
                continue;
            }
            let current = slot.state.load(Ordering::Acquire);
            let next = match parts(current, mine) {
                Some((spent, last)) => state(mine, spent || used.spent, last.max(used.last_nc)),
                None => state(mine, used.spent, used.last_nc),
            };
            if current == next
                || slot.state.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                return;
            }
        }
    }

    fn tell(&self, stamp: u64, spent: bool, last_nc: u32) {
        let Some(journal) = &self.0.journal else { return };
        if journal.uses.send(NonceUse { stamp, last_nc, spent }).is_ok() && !journal.armed.swap(true, Ordering::SeqCst)
        {
            (journal.wake)();
        }
    }

    /// The size of the replay table.
    pub fn capacity(&self) -> usize {
        1 << self.0.bits
    }

    fn slot(&self, key: u64) -> Option<&Slot> {
        self.0.slots.get().map(|slots| &slots[index(key, self.0.bits)])
    }

    fn slot_made(&self, key: u64) -> &Slot {
        let slots = self.0.slots.get_or_init(|| (0..self.capacity()).map(|_| Slot::default()).collect());
        &slots[index(key, self.0.bits)]
    }
}

/// The entry of `key` in a table of `2^bits` entries: its issue counter's
/// low bits.
fn index(key: u64, bits: u32) -> usize {
    usize::try_from(key.saturating_sub(1) & ((1 << SEQ_BITS) - 1)).unwrap_or(0) & ((1 << bits) - 1)
}

/// The nonces of a digest server (a registrar or proxy, RFC 3261 §22.1).
///
/// **Format.** A nonce is 64 lower-case hex digits, 32 bytes:
///
/// - 8 bytes of identifier: HMAC-SHA256 of a hidden issue counter (and a
///   per-instance salt) under a key of its own, truncated. It looks random
///   and no two nonces tell how far apart they were issued, or how many
///   challenges the server has made (issue 18: a serial number in clear
///   did);
/// - an 8-byte stamp: the issue time (milliseconds since the `epoch`
///   given at construction) and, in the low 20 bits, the issue counter's
///   (ordering nonces of one millisecond), XORed with HMAC-SHA256 of the
///   identifier under a third key: nobody without the key reads the time,
///   the server's uptime or the counter;
/// - the first 16 bytes of an HMAC-SHA256 over those 16 under a fourth
///   key (encrypt-then-MAC).
///
/// Any nonce this server issued can thus be checked and dated without
/// storing it, and hex is safe inside a quoted string. The keys are
/// derived from a secret drawn from the caller's [`Rng`] at construction
/// ([`Nonces::new`]), or given ([`Nonces::with_secret`]); nonces do not
/// survive a restart with another secret (they read as unknown, and the
/// client is challenged afresh).
///
/// **Lifetime.** A nonce is fresh for [`DEFAULT_NONCE_LIFETIME`] (300 s,
/// see [`Nonces::with_lifetime`]) after it was issued, stale from then on
/// (RFC 7616 §3.3).
///
/// **Replay** (RFC 7616 §3.4). Once an answer has been verified,
/// [`Nonces::record`] keeps, per nonce, the highest nonce count seen, and
/// refuses a count not above it; an answer without `qop` may use a nonce
/// only once. The table is a ring of [`DEFAULT_NONCE_CAPACITY`] entries
/// ([`Nonces::with_capacity`], a power of two) indexed by the nonce's
/// issue counter, allocated whole at the first answer: its memory never
/// grows with traffic (issue 19: a table that grew with every answer for
/// the nonces' 300 s lifetime made a registrar's memory climb pass after
/// pass of the same users). A nonce answered after a later one with the
/// same index took its entry reads as [`NonceError::Stale`], so it is
/// re-challenged (with `stale=true` if the digest was right), never
/// accepted twice. An entry needs no pruning: a nonce past its lifetime
/// is stale whatever its entry says.
///
/// **Failed answers** spend their nonce ([`Nonces::spend`]): it enters the
/// table as used up, and every later answer with it is refused
/// ([`NonceError::Spent`]) before any digest is computed. A password
/// guesser thus needs a fresh challenge (a round trip) per guess, instead
/// of counting `nc` up on one nonce.
///
/// **Time** comes in as `now` on every call; no timer is needed. `now`
/// must not go backwards (an earlier `now` is taken as the latest one
/// seen).
///
/// `Debug` leaves the key out.
pub struct Nonces {
    /// Makes identifiers from the counter.
    id_key: hmac::Key,
    /// Makes the mask of the time from the identifier.
    mask_key: hmac::Key,
    /// Signs identifier and masked time.
    tag_key: hmac::Key,
    /// Mixed into every identifier: two instances with one secret issue
    /// different identifiers.
    salt: u64,
    /// An instant and the time it is dated as, in milliseconds: the
    /// epoch itself and 0, or a wall-clock reading
    /// ([`Nonces::with_wall_clock`]).
    origin: (Instant, u64),
    lifetime: Duration,
    /// The issue counter and the replay table, perhaps shared.
    ledger: NonceLedger,
    last_now: Option<Instant>,
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("keys", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.ledger.capacity())
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces dated from `epoch` (any instant up to the first `now`, e.g.
    /// when the server starts), with keys derived from a 256-bit secret
    /// and a salt drawn from `rng`.
    ///
    /// The key is as unpredictable as the generator's seed; a runtime
    /// seeds it from the OS. Callers holding better randomness can use
    /// [`Nonces::with_secret`].
    pub fn new(epoch: Instant, rng: &mut Rng) -> Nonces {
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let mut nonces = Nonces::with_secret(epoch, &secret);
        nonces.salt = rng.next_u64();
        nonces
    }

    /// Nonces dated from `epoch`, with keys derived from `secret`
    /// (HMAC-SHA256 takes any length; 32 random bytes are right). Two
    /// instances made with one secret read each other's nonces, and issue
    /// the same ones at the same times.
    pub fn with_secret(epoch: Instant, secret: &[u8]) -> Nonces {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive = |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Nonces {
            id_key: derive(b"sipline nonce identifier"),
            mask_key: derive(b"sipline nonce time mask"),
            tag_key: derive(b"sipline nonce tag"),
            salt: 0,
            origin: (epoch, 0),
            lifetime: DEFAULT_NONCE_LIFETIME,
            ledger: NonceLedger::new(),
            last_now: None,
        }
    }

    /// Sets the salt mixed into identifiers: two instances sharing a
    /// secret but not a ledger (two servers) each take their own, so that
    /// neither issues a nonce the other did.
    #[must_use]
    pub fn with_salt(mut self, salt: u64) -> Nonces {
        self.salt = salt;
        self
    }

    /// Dates nonces in wall-clock time: `at` was `unix_ms` milliseconds
    /// after the Unix epoch (the runtime reads both clocks together). For
    /// instances on several machines that share a secret (issue 20): each
    /// dates the others' nonces as they did, so a nonce issued by one is
    /// fresh at another for the same lifetime. Without it, nonces are
    /// dated from the `epoch` given at construction, which only instances
    /// of one process share.
    #[must_use]
    pub fn with_wall_clock(mut self, at: Instant, unix_ms: u64) -> Nonces {
        self.origin = (at, unix_ms.min(MAX_MILLIS));
        self
    }

    /// Shares `ledger` (issue counter and replay table) with the other
    /// [`Nonces`] made with it — the workers of one server, issue 19,
    /// which also share a secret: a nonce issued by one is answered at
    /// any, and an answer is accepted once among them all. The first
    /// instance given a ledger sets the epoch every one dates from.
    #[must_use]
    pub fn with_ledger(mut self, ledger: &NonceLedger) -> Nonces {
        self.origin = *ledger.0.origin.get_or_init(|| self.origin);
        self.ledger = ledger.clone();
        self
    }

    /// Sets how long a nonce stays fresh after it is issued, at most
    /// [`MAX_NONCE_LIFETIME`]. A lifetime shorter than a challenge round trip
    /// makes every answer stale.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Nonces {
        self.lifetime = lifetime.min(MAX_NONCE_LIFETIME);
        self
    }

    /// Gives these nonces a ledger of their own whose replay table has
    /// `capacity` entries ([`NonceLedger::with_capacity`]).
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Nonces {
        self.ledger = NonceLedger::with_capacity(capacity);
        self
    }

    /// How long a nonce stays fresh.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The cap on the replay table.
    pub fn capacity(&self) -> usize {
        self.ledger.capacity()
    }

    /// How many answered or spent nonces, still fresh at the latest `now`
    /// seen, the replay table holds (a scan of the table: for tests and
    /// metrics).
    pub fn tracked(&self) -> usize {
        let Some(now) = self.last_now else { return 0 };
        let Some(slots) = self.ledger.0.slots.get() else { return 0 };
        slots
            .iter()
            .map(|slot| slot.stamp.load(Ordering::Relaxed))
            .filter(|&key| key != 0 && !self.expired(now, key))
            .count()
    }

    /// A fresh nonce for a challenge (RFC 7616 §3.3). Nothing is stored:
    /// the nonce enters the replay table when first answered.
    pub fn issue(&mut self, now: Instant) -> String {
        let now = self.advance(now);
        let millis = self.millis(now);
        let mut input = [0u8; 16];
        let counter = self.ledger.0.issued.fetch_add(1, Ordering::Relaxed);
        input[..8].copy_from_slice(&counter.to_be_bytes());
        input[8..].copy_from_slice(&self.salt.to_be_bytes());
        let mut payload = [0u8; PAYLOAD];
        payload[..ID].copy_from_slice(&hmac::sign(&self.id_key, &input).as_ref()[..ID]);
        let stamp = (millis.min(MAX_MILLIS) << SEQ_BITS) | (counter & ((1 << SEQ_BITS) - 1));
        let time = stamp ^ self.mask(&payload[..ID]);
        payload[ID..].copy_from_slice(&time.to_be_bytes());
        let tag = hmac::sign(&self.tag_key, &payload);
        let mut nonce = lower_hex(&payload);
        nonce.push_str(&lower_hex(&tag.as_ref()[..TAG]));
        nonce
    }

    /// Whether an answer with `nonce` and count `nc` (`None`: without
    /// `qop`) would be recorded now ([`Nonces::record`]'s verdict), recording
    /// nothing: fresh, not spent, and the count above every one seen here.
    pub fn check_count(&mut self, now: Instant, nonce: &str, nc: Option<u32>) -> Result<(), NonceError> {
        let now = self.advance(now);
        let key = self.open(nonce).ok_or(NonceError::Unknown)?;
        self.judge(now, key)?;
        let Some(slot) = self.ledger.slot(key) else { return Ok(()) };
        if slot.stamp.load(Ordering::Acquire) != key {
            return if nc == Some(0) { Err(NonceError::Replayed) } else { Ok(()) };
        }
        match (parts(slot.state.load(Ordering::Acquire), tag(key, self.ledger.0.bits)), nc) {
            (Some((true, _)), _) => Err(NonceError::Spent),
            (Some((false, last)), Some(nc)) if nc > last => Ok(()),
            (Some(_), _) | (None, Some(0)) => Err(NonceError::Replayed),
            (None, _) => Ok(()),
        }
    }

    /// Whether `nonce` may be answered now: issued here, fresh, not
    /// dropped from the replay table, not spent by a failed answer.
    /// Records nothing; the nonce count is judged by [`Nonces::record`]
    /// once the digest has been verified.
    pub fn check(&mut self, now: Instant, nonce: &str) -> Result<(), NonceError> {
        let now = self.advance(now);
        let key = self.open(nonce).ok_or(NonceError::Unknown)?;
        self.judge(now, key)?;
        let spent = self.ledger.slot(key).is_some_and(|slot| {
            slot.stamp.load(Ordering::Acquire) == key
                && parts(slot.state.load(Ordering::Acquire), tag(key, self.ledger.0.bits))
                    .is_some_and(|(spent, _)| spent)
        });
        if spent {
            return Err(NonceError::Spent);
        }
        Ok(())
    }

    /// Spends `nonce` after a failed answer (a wrong digest): every later
    /// answer with it is [`NonceError::Spent`]. Issue 18: a guesser reusing
    /// one nonce with growing `nc` got a guess per request; now each guess
    /// costs a fresh challenge. A stale nonce is left alone (it is refused
    /// anyway); at the cap the oldest entry is dropped, as in
    /// [`Nonces::record`].
    pub fn spend(&mut self, now: Instant, nonce: &str) -> Result<(), NonceError> {
        let now = self.advance(now);
        let key = self.open(nonce).ok_or(NonceError::Unknown)?;
        if self.judge(now, key).is_err() {
            // Stale, or its entry taken by a later nonce: refused anyway.
            return Ok(());
        }
        // Stale meanwhile (a later nonce took the entry): refused anyway.
        let _ = self.update(key, |before| Ok((true, before.map_or(u32::MAX, |(_, last)| last))));
        Ok(())
    }

    /// Records a verified answer with `nonce` and nonce count `nc` (`None`
    /// for an answer without `qop`), refusing a replay (RFC 7616 §3.4):
    /// `nc` must be above every count seen with this nonce (the first may
    /// be any count from 1); an answer without `qop` may only be the
    /// nonce's first and last use.
    ///
    /// Call it only after the digest has been verified, so that a forged
    /// answer cannot use up counts. At the cap the oldest entry is dropped
    /// (see [`Nonces`]).
    pub fn record(&mut self, now: Instant, nonce: &str, nc: Option<u32>) -> Result<(), NonceError> {
        let now = self.advance(now);
        let key = self.open(nonce).ok_or(NonceError::Unknown)?;
        self.judge(now, key)?;
        self.update(key, |before| match (before, nc) {
            (Some((true, _)), _) => Err(NonceError::Spent),
            (Some((false, last)), Some(nc)) if nc > last => Ok((false, nc)),
            (Some(_), _) => Err(NonceError::Replayed),
            // Counts start at 00000001 (RFC 7616 §3.4).
            (None, Some(0)) => Err(NonceError::Replayed),
            (None, nc) => Ok((false, nc.unwrap_or(u32::MAX))),
        })
    }

    /// Moves `key`'s replay state in the shared table by `step` (given the
    /// state so far, `None` before the first answer): takes the entry over
    /// from an older nonce, and commits with a compare-and-swap that fails
    /// if another worker changed the entry since it was read (then reads
    /// again). [`NonceError::Stale`] if a later nonce owns the entry.
    fn update(
        &self,
        key: u64,
        step: impl Fn(Option<(bool, u32)>) -> Result<(bool, u32), NonceError>,
    ) -> Result<(), NonceError> {
        let slot = self.ledger.slot_made(key);
        let mine = tag(key, self.ledger.0.bits);
        for _ in 0..ATTEMPTS {
            let owner = slot.stamp.load(Ordering::Acquire);
            if owner > key {
                return Err(NonceError::Stale);
            }
            if owner < key {
                if owner != 0 {
                    tracing::trace!("nonce replay entry taken over by a later nonce");
                }
                // Lost to another worker: look again.
                let _ = slot.stamp.compare_exchange(owner, key, Ordering::AcqRel, Ordering::Acquire);
                continue;
            }
            let current = slot.state.load(Ordering::Acquire);
            let (spent, last_nc) = step(parts(current, mine))?;
            let next = state(mine, spent, last_nc);
            if slot.state.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.ledger.tell(key, spent, last_nc);
                return Ok(());
            }
        }
        Err(NonceError::Stale)
    }

    fn mask(&self, id: &[u8]) -> u64 {
        let mut mask = [0u8; TIME];
        mask.copy_from_slice(&hmac::sign(&self.mask_key, id).as_ref()[..TIME]);
        u64::from_be_bytes(mask)
    }

    /// Clamps `now` to the latest seen (time never goes backwards).
    fn advance(&mut self, now: Instant) -> Instant {
        let now = match self.last_now {
            Some(last) => {
                debug_assert!(now >= last, "time went backwards");
                now.max(last)
            }
            None => now,
        };
        self.last_now = Some(now);
        now
    }

    /// `now` in the nonces' milliseconds (see `origin`).
    fn millis(&self, now: Instant) -> u64 {
        let (at, ms) = self.origin;
        let ms_of = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if now >= at {
            ms.saturating_add(ms_of(now - at))
        } else {
            ms.saturating_sub(ms_of(at - now))
        }
    }

    /// Whether the nonce with key `stamp` is past its lifetime at `now`. A
    /// nonce dated after `now` (another instance's clock ahead of ours)
    /// is fresh until its lifetime has passed from its date.
    fn expired(&self, now: Instant, stamp: u64) -> bool {
        let issued = stamp.saturating_sub(1) >> SEQ_BITS;
        let lifetime = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        self.millis(now) >= issued.saturating_add(lifetime)
    }

    /// Fresh, and its entry not taken by a later nonce (stamps order
    /// nonces by issue).
    fn judge(&self, now: Instant, key: u64) -> Result<(), NonceError> {
        if self.expired(now, key) || self.ledger.slot(key).is_some_and(|slot| slot.stamp.load(Ordering::Acquire) > key)
        {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    /// Reads a nonce back, if it is one of this server's: its key, the
    /// stamp (issue time in milliseconds since the epoch, then the low bits
    /// of the issue counter) plus one, so that no key is 0 (a free entry).
    fn open(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        let mut bytes = [0u8; PAYLOAD + TAG];
        for (byte, pair) in bytes.iter_mut().zip(nonce.as_bytes().chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        let (payload, tag) = bytes.split_at(PAYLOAD);
        let expected = hmac::sign(&self.tag_key, payload);
        // Compared without stopping at the first difference.
        let diff = expected.as_ref()[..TAG].iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return None;
        }
        let mut id = [0u8; ID];
        id.copy_from_slice(&payload[..ID]);
        let mut time = [0u8; TIME];
        time.copy_from_slice(&payload[ID..]);
        // A stamp's time is at most 2^44 ms: the sum never overflows.
        Some((u64::from_be_bytes(time) ^ self.mask(&id)).saturating_add(1))
    }
}

/// A lower-case hex digit's value (nonces are written in lower case).
fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}
