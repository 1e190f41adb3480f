//! The location service several workers share (issue 19): one store for
//! every sans-IO core of a `serve --workers N`, read and written without a
//! lock.
//!
//! - **Bindings** live in a concurrent hash table ([`papaya`]): a read
//!   never waits and never writes shared memory (no reader count to bounce
//!   between cores); a write replaces an AOR's entry with one atomic
//!   compare-and-swap. Each entry carries a version, so the registrar's
//!   read-decide-write of §10.3 step 7 commits only over the set it
//!   decided on ([`Location::replace_if`]); a REGISTER that lost a race
//!   with another worker's decides again on the new set.
//! - **Expiries** are an ordered lock-free set of `(expiry, AOR)`
//!   ([`crossbeam_skiplist`]): any worker may prune, and each due entry is
//!   taken by exactly one. The set is an index, not the truth: pruning
//!   re-reads the AOR and removes only what has expired, so an entry left
//!   behind by two writers racing costs one wasted look when it falls due.
//! - **Temporary GRUUs** (RFC 5627) map to their AOR in a second table,
//!   checked against the AOR's bindings on every lookup for the same
//!   reason.
//!
//! Table positions come from SipHash under keys the caller may set
//! ([`SharedLocation::with_keys`]), so a peer that picks AORs cannot aim
//! them at one slot.

use super::location::{by_preference, Binding, Gruu, Location, LocationError};
use crate::concurrent::KeyedHash;
use crossbeam_skiplist::SkipSet;
use papaya::{Compute, HashMap, Operation};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

/// One AOR's bindings as one write left them: sorted by
/// [`by_preference`], never empty.
#[derive(Debug)]
struct Entry {
    /// Unique among every write to the store (never 0: 0 is "no entry").
    version: u64,
    bindings: Arc<[Binding]>,
}

impl Entry {
    fn earliest(&self) -> Option<Instant> {
        self.bindings.iter().map(|b| b.expires).min()
    }
}

struct Store {
    /// Where committed changes go, when something outside the core
    /// mirrors the store (issue 20).
    journal: Option<Journal>,
    aors: HashMap<String, Arc<Entry>, KeyedHash>,
    temp_gruus: HashMap<String, String, KeyedHash>,
    expiries: SkipSet<(Instant, String)>,
    /// The last version handed out.
    versions: AtomicU64,
    /// Bindings stored (expired but unpruned ones included).
    bindings: AtomicUsize,
}

/// One committed change to an AOR's bindings, as [`LocationJournal`] hands
/// it to whatever mirrors the store elsewhere (a shared database: issue
/// 20). Both sets are whole, sorted by [`by_preference`], expired
/// bindings included until pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationChange {
    /// The canonical AOR.
    pub aor: String,
    /// Its bindings before the change (empty: it had none).
    pub before: Arc<[Binding]>,
    /// Its bindings after (empty: it has none left).
    pub after: Arc<[Binding]>,
}

struct Journal {
    changes: Sender<LocationChange>,
    /// Told after a change is queued into an empty journal (the runtime
    /// wakes its task).
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Set by the first change queued since the reader last found the
    /// journal empty: only that one wakes the reader, so a busy server
    /// pays one wake-up per batch, not one per change (a wake-up is a
    /// system call that costs more than the commit itself).
    armed: Arc<AtomicBool>,
}

/// The receiving end of a [`SharedLocation`]'s journal
/// ([`SharedLocation::with_journal`]): every change committed by any clone,
/// in commit order per AOR, except those made with
/// [`SharedLocation::apply`] (changes that came from the mirror itself).
/// Reading it is the runtime's job; the core only queues.
#[derive(Debug)]
pub struct LocationJournal {
    changes: Receiver<LocationChange>,
    armed: Arc<AtomicBool>,
}

impl LocationJournal {
    /// The next change, if one is queued. Read until `None`: the `wake`
    /// given to [`SharedLocation::with_journal`] is called again only
    /// for a change queued after that.
    pub fn try_next(&self) -> Option<LocationChange> {
        if let Ok(change) = self.changes.try_recv() {
            return Some(change);
        }
        // Empty: the next change wakes the reader. Looked at once more, for
        // a change queued just before the flag went down (its writer may
        // not have woken anyone).
        self.armed.store(false, Ordering::SeqCst);
        self.changes.try_recv().ok()
    }
}

/// The location service every worker of a `serve` shares: clones share one
/// store, and no operation takes a lock (a lock-free map of versioned
/// per-AOR entries, and a skip list of expiries). Reads return only live
/// bindings; [`Location::prune`]
/// forgets expired ones and may be called by any clone.
///
/// Concurrent REGISTERs for one AOR on two workers are serialised by
/// [`Location::replace_if`]: each commits only over the set it read, and
/// the one that lost decides again on the winner's set (§10.3 step 7's
/// Call-ID/CSeq checks see both).
///
/// ```
/// use sipline::registrar::{Binding, Location, SharedLocation};
/// use std::time::{Duration, Instant};
///
/// // `now` comes from the caller (the core reads no clock).
/// fn example(now: Instant) -> Result<(), sipline::registrar::LocationError> {
/// let mut a = SharedLocation::new();
/// let b = a.clone();
/// let binding = Binding {
///     aor: "sip:bob@example.com".into(),
///     contact: "sip:bob@192.0.2.4:5060".into(),
///     q: None,
///     expires: now + Duration::from_secs(3600),
///     registered_at: now,
///     call_id: "c1".into(),
///     cseq: 1,
///     instance: None,
///     reg_id: None,
///     temp_gruus: Vec::new(),
///     source: None,
///     path: Vec::new(),
/// };
/// a.insert(now, binding)?;
/// assert_eq!(b.bindings("sip:bob@example.com", now).len(), 1);
/// assert_eq!(b.binding_count(), 1);
/// # Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct SharedLocation(Arc<Store>);

impl Default for SharedLocation {
    fn default() -> SharedLocation {
        SharedLocation::new()
    }
}

impl fmt::Debug for SharedLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLocation")
            .field("aors", &self.aor_count())
            .field("bindings", &self.binding_count())
            .finish_non_exhaustive()
    }
}

impl SharedLocation {
    /// An empty shared store whose tables hash under fixed keys
    /// (deterministic; see [`SharedLocation::with_keys`] for a server that
    /// registers AORs chosen by strangers).
    pub fn new() -> SharedLocation {
        SharedLocation::with_keys(0x7369_706c_696e_6531, 0x6c6f_6361_7469_6f6e)
    }

    /// An empty shared store whose tables hash under the secret keys
    /// `k0`, `k1` (SipHash-1-3): draw them from the server's randomness.
    pub fn with_keys(k0: u64, k1: u64) -> SharedLocation {
        SharedLocation::build(k0, k1, None)
    }

    /// [`SharedLocation::with_keys`], with a journal of every change
    /// committed from now on ([`LocationJournal`]); `wake` is called after
    /// each change is queued (from whichever worker committed it: keep it
    /// short, e.g. a notify). For a store mirrored elsewhere (issue 20:
    /// a Redis shared by several instances): the core decides from memory
    /// and never waits on the mirror.
    pub fn with_journal(
        k0: u64,
        k1: u64,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> (SharedLocation, LocationJournal) {
        let (changes, receiver) = channel();
        let armed = Arc::new(AtomicBool::new(false));
        let journal = Journal { changes, wake: Arc::new(wake), armed: Arc::clone(&armed) };
        (SharedLocation::build(k0, k1, Some(journal)), LocationJournal { changes: receiver, armed })
    }

    fn build(k0: u64, k1: u64, journal: Option<Journal>) -> SharedLocation {
        let hash = KeyedHash::new(k0, k1);
        SharedLocation(Arc::new(Store {
            journal,
            aors: HashMap::builder().hasher(hash.clone()).build(),
            temp_gruus: HashMap::builder().hasher(hash).build(),
            expiries: SkipSet::new(),
            versions: AtomicU64::new(0),
            bindings: AtomicUsize::new(0),
        }))
    }

    /// How many bindings the store holds (expired ones not yet pruned
    /// included).
    pub fn binding_count(&self) -> usize {
        self.0.bindings.load(Ordering::Relaxed)
    }

    /// How many entries the expiry index and the temporary GRUU index
    /// hold (for tests and metrics: the indexes follow the bindings, and a
    /// refresh moves an AOR's expiry instead of adding one).
    pub fn index_sizes(&self) -> (usize, usize) {
        (self.0.expiries.len(), self.0.temp_gruus.len())
    }

    /// How many addresses-of-record have bindings.
    pub fn aor_count(&self) -> usize {
        self.0.aors.len()
    }

    /// Every AOR with stored bindings, sorted (a scan of the table: for a
    /// mirror's resynchronisation, not for the per-message path).
    pub fn aors(&self) -> Vec<String> {
        let mut all: Vec<String> = self.0.aors.pin().iter().map(|(aor, _)| aor.clone()).collect();
        all.sort();
        all
    }

    /// The AOR's entry as stored now (expired bindings included).
    fn entry(&self, aor: &str) -> Option<Arc<Entry>> {
        self.0.aors.pin().get(aor).cloned()
    }

    /// Writes `bindings` as `aor`'s set if its entry's version is still
    /// `expected` (`None`: whatever it is), then brings the indexes along.
    fn write(
        &self,
        aor: &str,
        expected: Option<u64>,
        mut bindings: Vec<Binding>,
        journal: bool,
    ) -> Result<(), LocationError> {
        for b in &mut bindings {
            if b.aor != aor {
                aor.clone_into(&mut b.aor);
            }
        }
        bindings.sort_by(by_preference);
        let store = &self.0;
        let new = (!bindings.is_empty()).then(|| {
            let version = store.versions.fetch_add(1, Ordering::Relaxed) + 1;
            Arc::new(Entry { version, bindings: bindings.into() })
        });
        let aors = store.aors.pin();
        let decide = |current: Option<(&String, &Arc<Entry>)>| {
            let found = current.map_or(0, |(_, e)| e.version);
            if expected.is_some_and(|v| v != found) {
                return Operation::Abort(Err(LocationError::Changed));
            }
            match (&new, current) {
                (Some(new), _) => Operation::Insert(Arc::clone(new)),
                (None, Some(_)) => Operation::Remove,
                (None, None) => Operation::Abort(Ok(())),
            }
        };
        let old = match aors.compute(aor.to_owned(), decide) {
            Compute::Inserted(..) => None,
            Compute::Updated { old: (_, old), .. } | Compute::Removed(_, old) => Some(Arc::clone(old)),
            Compute::Aborted(result) => return result,
        };
        drop(aors);
        self.reindex(aor, old.as_deref(), new.as_deref());
        if journal {
            self.journal(aor, old.as_deref(), new.as_deref());
        }
        Ok(())
    }

    /// Queues the change of `aor` from `old` to `new` on the journal, if
    /// there is one.
    fn journal(&self, aor: &str, old: Option<&Entry>, new: Option<&Entry>) {
        let Some(journal) = &self.0.journal else { return };
        let set = |e: Option<&Entry>| e.map_or_else(|| Arc::from(Vec::new()), |e| Arc::clone(&e.bindings));
        let change = LocationChange { aor: aor.to_owned(), before: set(old), after: set(new) };
        // The receiver gone (the mirror stopped): nothing to tell.
        if journal.changes.send(change).is_ok() && !journal.armed.swap(true, Ordering::SeqCst) {
            (journal.wake)();
        }
    }

    /// Replaces `aor`'s bindings with `bindings` as a mirror of the store
    /// reports them (issue 20: another instance changed them), without
    /// journaling the change back; only if the AOR's version is still
    /// `version` when given ([`Location::snapshot`]), so that a change
    /// committed here meanwhile is not overwritten
    /// ([`LocationError::Changed`]: read the mirror again after it has
    /// that change).
    pub fn apply(&self, aor: &str, version: Option<u64>, bindings: Vec<Binding>) -> Result<(), LocationError> {
        self.write(aor, version, bindings, false)
    }

    /// After `aor`'s entry went from `old` to `new`: the binding count, the
    /// expiry index and the temporary GRUU index follow.
    fn reindex(&self, aor: &str, old: Option<&Entry>, new: Option<&Entry>) {
        let store = &self.0;
        let count = |e: Option<&Entry>| e.map_or(0, |e| e.bindings.len());
        let (before, after) = (count(old), count(new));
        if after >= before {
            store.bindings.fetch_add(after - before, Ordering::Relaxed);
        } else {
            store.bindings.fetch_sub(before - after, Ordering::Relaxed);
        }
        let (was, is) = (old.and_then(Entry::earliest), new.and_then(Entry::earliest));
        if was != is {
            if let Some(was) = was {
                store.expiries.remove(&(was, aor.to_owned()));
            }
        }
        if let Some(is) = is {
            store.expiries.insert((is, aor.to_owned()));
        }
        let gruus = |e: Option<&Entry>| -> Vec<String> {
            e.map(|e| e.bindings.iter().flat_map(|b| b.temp_gruus.iter().cloned()).collect()).unwrap_or_default()
        };
        let (was, is) = (gruus(old), gruus(new));
        if was.is_empty() && is.is_empty() {
            return;
        }
        let temp = store.temp_gruus.pin();
        for t in was.iter().filter(|t| !is.contains(t)) {
            temp.remove(t);
        }
        for t in is {
            temp.insert(t, aor.to_owned());
        }
    }

    /// Removes what of `aor` has expired at `now`, returning it.
    fn prune_aor(&self, aor: &str, now: Instant) -> Vec<Binding> {
        let store = &self.0;
        let version = store.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let aors = store.aors.pin();
        let changed = aors.compute(aor.to_owned(), |current: Option<(&String, &Arc<Entry>)>| {
            let Some((_, entry)) = current else { return Operation::Abort(()) };
            if entry.bindings.iter().all(|b| b.is_live(now)) {
                return Operation::Abort(());
            }
            let live: Arc<[Binding]> = entry.bindings.iter().filter(|b| b.is_live(now)).cloned().collect();
            if live.is_empty() {
                Operation::Remove
            } else {
                Operation::Insert(Arc::new(Entry { version, bindings: live }))
            }
        });
        let (old, new) = match changed {
            Compute::Updated { old: (_, old), new: (_, new) } => (Arc::clone(old), Some(Arc::clone(new))),
            Compute::Removed(_, old) => (Arc::clone(old), None),
            Compute::Inserted(..) | Compute::Aborted(()) => {
                // Nothing expired: the index entry was a leftover. Make
                // sure the current set's own expiry is indexed.
                if let Some(at) = aors.get(aor).and_then(|e| e.earliest()) {
                    store.expiries.insert((at, aor.to_owned()));
                }
                return Vec::new();
            }
        };
        drop(aors);
        self.reindex(aor, Some(&old), new.as_deref());
        self.journal(aor, Some(&old), new.as_deref());
        old.bindings.iter().filter(|b| !b.is_live(now)).cloned().collect()
    }
}

impl Location for SharedLocation {
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.snapshot(aor, now).0
    }

    fn snapshot(&self, aor: &str, now: Instant) -> (Vec<Binding>, u64) {
        let aors = self.0.aors.pin();
        match aors.get(aor) {
            Some(e) => (e.bindings.iter().filter(|b| b.is_live(now)).cloned().collect(), e.version),
            None => (Vec::new(), 0),
        }
    }

    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), LocationError> {
        self.write(aor, None, bindings, true)
    }

    fn replace_if(&mut self, aor: &str, version: u64, bindings: Vec<Binding>) -> Result<(), LocationError> {
        self.write(aor, Some(version), bindings, true)
    }

    fn find_gruu(&self, gruu: Gruu<'_>, now: Instant) -> Option<Binding> {
        match gruu {
            Gruu::Public { aor, instance } => self
                .entry(aor)?
                .bindings
                .iter()
                .find(|b| b.is_live(now) && b.instance.as_deref().is_some_and(|i| i.eq_ignore_ascii_case(instance)))
                .cloned(),
            Gruu::Temporary(t) => {
                let aor = self.0.temp_gruus.pin().get(t)?.clone();
                self.entry(&aor)?
                    .bindings
                    .iter()
                    .find(|b| b.is_live(now) && b.temp_gruus.iter().any(|x| x == t))
                    .cloned()
            }
        }
    }

    fn prune(&mut self, now: Instant) -> Vec<Binding> {
        let mut gone = Vec::new();
        // Bounded: each turn takes one due index entry out, and entries
        // added meanwhile lie in the future of `now` (live bindings).
        while let Some(due) = self.0.expiries.front().filter(|e| e.value().0 <= now) {
            let aor = due.value().1.clone();
            // Another worker may be pruning the same entry: one wins.
            if !due.remove() {
                continue;
            }
            gone.extend(self.prune_aor(&aor, now));
        }
        gone
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.0.expiries.front().map(|e| e.value().0)
    }
}
