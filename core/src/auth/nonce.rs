//! Server nonces: issued, checked without a lookup, expired, and guarded
//! against replay (RFC 7616 §3.3, §3.4; RFC 3261 §22.1). See [`Nonces`].

use super::digest::lower_hex;
use crate::rng::Rng;
use ring::hmac;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// How long a nonce is accepted after it was issued, unless
/// [`Nonces::with_lifetime`] says otherwise: 300 s, long enough for a user
/// to type a password after a challenge, short enough that a captured
/// nonce soon stops being useful. Clients that keep answering with a
/// nonce (REGISTER refreshes, RFC 7616 §3.4 `nc`) are re-challenged with
/// `stale=true` after it and retry without asking the user.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// How many answered nonces [`Nonces`] tracks at most, unless
/// [`Nonces::with_capacity`] says otherwise: 65 536 entries of a few dozen
/// bytes each, which covers some 200 newly answered nonces a second at the
/// default lifetime.
pub const DEFAULT_NONCE_CAPACITY: usize = 65_536;

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

/// Where a nonce sits in the replay table: its stamp (issue time in
/// milliseconds since the epoch, then the low bits of the issue counter),
/// then identifier: issue order.
type Slot = (u64, u64);

/// One answered nonce in the replay table.
#[derive(Debug, Clone, Copy)]
struct Used {
    /// When the nonce was issued (as read back from the nonce).
    issued: Instant,
    /// The highest `nc` accepted; `u32::MAX` once used without `qop`, so
    /// nothing may follow.
    last_nc: u32,
    /// A failed answer came with it: refused from then on.
    spent: bool,
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
/// only once. Entries are dropped when their nonce expires. The table
/// holds at most [`DEFAULT_NONCE_CAPACITY`] entries
/// ([`Nonces::with_capacity`]): at the cap the entry of the oldest nonce
/// is dropped, and from then on every nonce issued up to that one that is
/// not in the table reads as [`NonceError::Stale`], so it is re-challenged
/// (with `stale=true` if the digest was right), never accepted twice.
///
/// **Failed answers** spend their nonce ([`Nonces::spend`]): it enters the
/// table as used up, and every later answer with it is refused
/// ([`NonceError::Spent`]) before any digest is computed. A password
/// guesser thus needs a fresh challenge (a round trip) per guess, instead
/// of counting `nc` up on one nonce.
///
/// **Time** comes in as `now` on every call; expired entries are pruned on
/// each call, or by [`Nonces::handle_timeout`] at [`Nonces::poll_timeout`].
/// `now` must not go backwards (an earlier `now` is taken as the latest
/// one seen).
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
    epoch: Instant,
    lifetime: Duration,
    capacity: usize,
    /// How many nonces were issued; never shown.
    issued: u64,
    /// The answered (or spent) nonces, in issue order.
    used: BTreeMap<Slot, Used>,
    /// The latest slot dropped at the cap: a nonce up to it that is not in
    /// `used` may have been answered already.
    dropped_up_to: Option<Slot>,
    last_now: Option<Instant>,
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("keys", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.capacity)
            .field("issued", &self.issued)
            .field("tracked", &self.used.len())
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
            epoch,
            lifetime: DEFAULT_NONCE_LIFETIME,
            capacity: DEFAULT_NONCE_CAPACITY,
            issued: 0,
            used: BTreeMap::new(),
            dropped_up_to: None,
            last_now: None,
        }
    }

    /// Sets how long a nonce stays fresh after it is issued. A lifetime
    /// shorter than a challenge round trip makes every answer stale.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Nonces {
        self.lifetime = lifetime;
        self
    }

    /// Sets the cap on the replay table (at least 1).
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Nonces {
        self.capacity = capacity.max(1);
        self
    }

    /// How long a nonce stays fresh.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The cap on the replay table.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many answered or spent nonces the replay table holds now.
    pub fn tracked(&self) -> usize {
        self.used.len()
    }

    /// A fresh nonce for a challenge (RFC 7616 §3.3). Nothing is stored:
    /// the nonce enters the replay table when first answered.
    pub fn issue(&mut self, now: Instant) -> String {
        let now = self.advance(now);
        let millis = u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
        let mut input = [0u8; 16];
        let counter = self.issued;
        input[..8].copy_from_slice(&counter.to_be_bytes());
        input[8..].copy_from_slice(&self.salt.to_be_bytes());
        self.issued = self.issued.wrapping_add(1);
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

    /// Whether `nonce` may be answered now: issued here, fresh, not
    /// dropped from the replay table, not spent by a failed answer.
    /// Records nothing; the nonce count is judged by [`Nonces::record`]
    /// once the digest has been verified.
    pub fn check(&mut self, now: Instant, nonce: &str) -> Result<(), NonceError> {
        let now = self.advance(now);
        self.prune(now);
        let (issued, slot) = self.open(nonce).ok_or(NonceError::Unknown)?;
        if self.used.get(&slot).is_some_and(|used| used.spent) {
            return Err(NonceError::Spent);
        }
        self.judge(now, issued, slot)
    }

    /// Spends `nonce` after a failed answer (a wrong digest): every later
    /// answer with it is [`NonceError::Spent`]. Issue 18: a guesser reusing
    /// one nonce with growing `nc` got a guess per request; now each guess
    /// costs a fresh challenge. A stale nonce is left alone (it is refused
    /// anyway); at the cap the oldest entry is dropped, as in
    /// [`Nonces::record`].
    pub fn spend(&mut self, now: Instant, nonce: &str) -> Result<(), NonceError> {
        let now = self.advance(now);
        self.prune(now);
        let (issued, slot) = self.open(nonce).ok_or(NonceError::Unknown)?;
        if self.expiry(issued).is_some_and(|expiry| now >= expiry) {
            return Ok(());
        }
        if let Some(used) = self.used.get_mut(&slot) {
            used.spent = true;
            return Ok(());
        }
        self.insert(slot, Used { issued, last_nc: u32::MAX, spent: true });
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
        self.prune(now);
        let (issued, slot) = self.open(nonce).ok_or(NonceError::Unknown)?;
        self.judge(now, issued, slot)?;
        if let Some(used) = self.used.get_mut(&slot) {
            if used.spent {
                return Err(NonceError::Spent);
            }
            return match nc {
                Some(nc) if nc > used.last_nc => {
                    used.last_nc = nc;
                    Ok(())
                }
                _ => Err(NonceError::Replayed),
            };
        }
        if nc == Some(0) {
            // Counts start at 00000001 (RFC 7616 §3.4).
            return Err(NonceError::Replayed);
        }
        self.insert(slot, Used { issued, last_nc: nc.unwrap_or(u32::MAX), spent: false });
        Ok(())
    }

    /// Adds an entry; at the cap, drops the oldest.
    fn insert(&mut self, slot: Slot, used: Used) {
        self.used.insert(slot, used);
        while self.used.len() > self.capacity {
            let Some((dropped, _)) = self.used.pop_first() else { break };
            tracing::debug!("nonce replay table full: dropped the oldest entry");
            self.dropped_up_to = Some(self.dropped_up_to.map_or(dropped, |d| d.max(dropped)));
        }
    }

    /// The mask of the time field of the nonce with identifier `id`.
    fn mask(&self, id: &[u8]) -> u64 {
        let mut mask = [0u8; TIME];
        mask.copy_from_slice(&hmac::sign(&self.mask_key, id).as_ref()[..TIME]);
        u64::from_be_bytes(mask)
    }

    /// Drops the entries of expired nonces. Idempotent and safe to call at
    /// any time; [`Nonces::check`] and [`Nonces::record`] do it too.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        self.prune(now);
    }

    /// When the oldest tracked nonce expires, for [`Nonces::handle_timeout`];
    /// `None` while the table is empty. After `handle_timeout(t)` this is
    /// `None` or later than `t`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.used.first_key_value().and_then(|(_, used)| self.expiry(used.issued))
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

    /// When a nonce issued at `issued` stops being fresh; `None` if never
    /// (a lifetime beyond what `Instant` can hold).
    fn expiry(&self, issued: Instant) -> Option<Instant> {
        issued.checked_add(self.lifetime)
    }

    /// Drops the entries whose nonce has expired. Slot order is issue
    /// order, so they are at the front.
    fn prune(&mut self, now: Instant) {
        while let Some((_, used)) = self.used.first_key_value() {
            if self.expiry(used.issued).is_some_and(|expiry| now >= expiry) {
                self.used.pop_first();
            } else {
                break;
            }
        }
    }

    /// Fresh and not dropped at the cap.
    fn judge(&self, now: Instant, issued: Instant, slot: Slot) -> Result<(), NonceError> {
        if self.expiry(issued).is_some_and(|expiry| now >= expiry) {
            return Err(NonceError::Stale);
        }
        if !self.used.contains_key(&slot) && self.dropped_up_to.is_some_and(|d| slot <= d) {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    /// Reads a nonce back: its issue time and slot, if it is one of this
    /// server's.
    fn open(&self, nonce: &str) -> Option<(Instant, Slot)> {
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
        let stamp = u64::from_be_bytes(time) ^ self.mask(&id);
        let issued = self.epoch.checked_add(Duration::from_millis(stamp >> SEQ_BITS))?;
        Some((issued, (stamp, u64::from_be_bytes(id))))
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
