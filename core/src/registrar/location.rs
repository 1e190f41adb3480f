//! The location service (RFC 3261 §10, §16.5): where the bindings of each
//! address-of-record live, behind the [`Location`] trait so that a shared
//! or persistent store can replace [`MemoryLocation`] without touching the
//! protocol code in [`Registrar`](super::Registrar).
//!
//! A store holds owned [`Binding`]s keyed by the canonical AOR (see
//! [`canonical_aor`](super::canonical_aor)). It never looks at a clock:
//! every read takes `now` and leaves out bindings whose expiry has passed;
//! [`Location::prune`] forgets them and [`Location::next_expiry`] says when
//! to call it next.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where a REGISTER came from, as the transport saw it: kept with the
/// binding so that a proxy can later reach a UA behind a NAT through the
/// address its registration arrived from (RFC 5626 §5.3 routes over the
/// registration's flow). The registrar stores it and never interprets it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The remote address the request arrived from.
    pub addr: SocketAddr,
    /// The transport it arrived over, as the caller names it (`UDP`,
    /// `TCP`, `TLS`…).
    pub transport: String,
}

/// One binding of an address-of-record to a contact address (RFC 3261
/// §10.2.1), with what §10.3 step 7 and RFC 5626/5627 ask a registrar to
/// remember about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The canonical address-of-record (`sip:alice@example.com`, §10.3
    /// step 5).
    pub aor: String,
    /// The contact URI as the UA registered it (URI parameters kept).
    pub contact: String,
    /// The `q` preference in thousandths (0–1000, §20.10), if the Contact
    /// gave one. Ordering treats a missing `q` as 1000, the highest.
    pub q: Option<u16>,
    /// When the binding lapses: it is live while `now < expires`.
    pub expires: Instant,
    /// When the REGISTER that last set it arrived (orders bindings of equal
    /// `q`, most recent first).
    pub registered_at: Instant,
    /// The Call-ID of the REGISTER that last set it (§10.3 step 7).
    pub call_id: String,
    /// The CSeq number of the REGISTER that last set it (§10.3 step 7).
    pub cseq: u32,
    /// The `+sip.instance` of the contact (RFC 5626 §4.1), without the
    /// angle brackets: `urn:uuid:…`.
    pub instance: Option<String>,
    /// The `reg-id` of the contact (RFC 5626 §4.2), kept only with an
    /// instance.
    pub reg_id: Option<u32>,
    /// The temporary GRUUs issued for this binding (RFC 5627 §3.1), oldest
    /// first, in canonical form (`sip:tgruu.…@example.com`, without the
    /// `;gr` parameter the URI carries on the wire).
    pub temp_gruus: Vec<String>,
    /// Where the REGISTER came from, if the caller said.
    pub source: Option<Source>,
    /// The route to the binding (RFC 3327 Path): loose-routing URIs a
    /// request for it goes through first; empty: straight to it. An
    /// instance of a domain several serve (issue 20) puts its own address
    /// here, so that the others reach a UA behind a NAT, or over a
    /// connection only it holds, through it.
    pub path: Vec<String>,
}

impl Binding {
    /// Whether the binding still holds at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }

    /// The time left at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires.saturating_duration_since(now)
    }

    /// The `q` used for ordering: the Contact's, else 1000.
    pub fn preference(&self) -> u16 {
        self.q.unwrap_or(1000)
    }

    /// The public GRUU of the binding (RFC 5627 §3.1): the AOR with a `gr`
    /// parameter holding the instance id. `None` without an instance.
    pub fn pub_gruu(&self) -> Option<String> {
        let instance = self.instance.as_deref()?;
        let mut out = String::with_capacity(self.aor.len() + 4 + instance.len());
        out.push_str(&self.aor);
        out.push_str(";gr=");
        super::escape_param(instance.as_bytes(), &mut out);
        Some(out)
    }

    /// The most recently issued temporary GRUU as it goes on the wire
    /// (with `;gr`, RFC 5627 §3.1), if any.
    pub fn latest_temp_gruu(&self) -> Option<String> {
        self.temp_gruus.last().map(|t| format!("{t};gr"))
    }

    /// Whether `other` is the same binding for a store: the same instance
    /// and `reg-id` when `self` has an instance (RFC 5626 §6), else the
    /// same contact URI, octet for octet.
    pub fn same_key(&self, other: &Binding) -> bool {
        match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && self.reg_id == other.reg_id,
            (None, None) => self.contact == other.contact,
            _ => false,
        }
    }
}

/// The order in which bindings are offered as targets: `q` descending
/// (§20.10: a higher `q` is preferred), then the most recently registered
/// first, then by contact URI so that the order is total and deterministic.
pub fn by_preference(a: &Binding, b: &Binding) -> Ordering {
    b.preference()
        .cmp(&a.preference())
        .then_with(|| b.registered_at.cmp(&a.registered_at))
        .then_with(|| a.contact.cmp(&b.contact))
        .then_with(|| a.instance.cmp(&b.instance))
        .then_with(|| a.reg_id.cmp(&b.reg_id))
}

/// A GRUU to look up (RFC 5627 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gruu<'a> {
    /// A public GRUU: the canonical AOR and the `gr` value (the instance id,
    /// unescaped, without angle brackets).
    Public {
        /// The canonical AOR.
        aor: &'a str,
        /// The instance id (`urn:uuid:…`).
        instance: &'a str,
    },
    /// A temporary GRUU in canonical form (`sip:tgruu.…@example.com`,
    /// without `;gr`), as [`Binding::temp_gruus`] holds it.
    Temporary(&'a str),
}

/// Why a store could not do what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// The store could not commit the change (a database or a peer is
    /// down…). Nothing changed.
    #[error("location service unavailable")]
    Unavailable,
    /// [`Location::replace_if`]: the AOR's bindings changed since the
    /// version the caller read (another worker or instance wrote them).
    /// Nothing changed; read again and decide again.
    #[error("bindings changed since they were read")]
    Changed,
}

/// How often [`Location::insert`] and [`Location::remove`] read again when
/// other writers keep changing the AOR first.
const WRITE_ATTEMPTS: usize = 16;

/// A location service: the bindings of every address-of-record.
///
/// Reads take `now` and return only live bindings; writes replace all the
/// bindings of one AOR at once, so that a REGISTER commits all its changes
/// or none (§10.3 step 7). Implementations must be deterministic: the same
/// calls give the same answers (iterate ordered collections only).
pub trait Location {
    /// The bindings of `aor` that are live at `now`, ordered by
    /// [`by_preference`]. Empty if the AOR has none.
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding>;

    /// Replaces every binding of `aor` with `bindings` (each stored under
    /// `aor`, whatever its own `aor` field says), atomically. An empty list
    /// removes the AOR.
    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), LocationError>;

    /// The live bindings of `aor` (as [`Location::bindings`]) and the
    /// version of the set they were read from, for
    /// [`Location::replace_if`]. A store that only one caller writes may
    /// keep the default: version 0 always.
    fn snapshot(&self, aor: &str, now: Instant) -> (Vec<Binding>, u64) {
        (self.bindings(aor, now), 0)
    }

    /// [`Location::replace`], but only if `aor`'s bindings are still the
    /// set [`Location::snapshot`] read as `version`; else
    /// [`LocationError::Changed`] and nothing changes. This makes the
    /// registrar's read-decide-write of §10.3 step 7 atomic when several
    /// endpoints share a store ([`SharedLocation`](super::SharedLocation)
    /// overrides both). The default, for a store with one writer, always
    /// replaces.
    fn replace_if(&mut self, aor: &str, version: u64, bindings: Vec<Binding>) -> Result<(), LocationError> {
        let _ = version;
        self.replace(aor, bindings)
    }

    /// The live binding a GRUU designates at `now`: for a public GRUU the
    /// most preferred live binding of the AOR with that instance, for a
    /// temporary one the binding it was issued for.
    fn find_gruu(&self, gruu: Gruu<'_>, now: Instant) -> Option<Binding>;

    /// Forgets every binding expired at `now` (and the AORs left without
    /// bindings), returning them in the order they were removed.
    fn prune(&mut self, now: Instant) -> Vec<Binding>;

    /// The earliest expiry among the stored bindings: when [`prune`] next
    /// has something to do. `None` when the store is empty.
    ///
    /// [`prune`]: Location::prune
    fn next_expiry(&self) -> Option<Instant>;

    /// Adds `binding` to its AOR, replacing one with the same key
    /// ([`Binding::same_key`]). Expired bindings of the AOR are dropped.
    /// Read and write are one step ([`Location::replace_if`], retried when
    /// another writer came between).
    fn insert(&mut self, now: Instant, binding: Binding) -> Result<(), LocationError> {
        let aor = binding.aor.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let (mut all, version) = self.snapshot(&aor, now);
            all.retain(|b| !b.same_key(&binding));
            all.push(binding.clone());
            match self.replace_if(&aor, version, all) {
                Err(LocationError::Changed) => {}
                done => return done,
            }
        }
        Err(LocationError::Changed)
    }

    /// Removes the live binding of `aor` whose contact is `contact` (octet
    /// for octet), returning it. Read and write are one step, as for
    /// [`Location::insert`].
    fn remove(&mut self, aor: &str, contact: &str, now: Instant) -> Result<Option<Binding>, LocationError> {
        for _ in 0..WRITE_ATTEMPTS {
            let (mut all, version) = self.snapshot(aor, now);
            let Some(at) = all.iter().position(|b| b.contact == contact) else {
                return Ok(None);
            };
            let gone = all.remove(at);
            match self.replace_if(aor, version, all) {
                Err(LocationError::Changed) => {}
                Err(e) => return Err(e),
                Ok(()) => return Ok(Some(gone)),
            }
        }
        Err(LocationError::Changed)
    }

    /// Removes every binding of `aor`.
    fn remove_all(&mut self, aor: &str) -> Result<(), LocationError> {
        self.replace(aor, Vec::new())
    }
}

impl<L: Location + ?Sized> Location for Box<L> {
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding> {
        (**self).bindings(aor, now)
    }
    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), LocationError> {
        (**self).replace(aor, bindings)
    }
    fn snapshot(&self, aor: &str, now: Instant) -> (Vec<Binding>, u64) {
        (**self).snapshot(aor, now)
    }
    fn replace_if(&mut self, aor: &str, version: u64, bindings: Vec<Binding>) -> Result<(), LocationError> {
        (**self).replace_if(aor, version, bindings)
    }
    fn find_gruu(&self, gruu: Gruu<'_>, now: Instant) -> Option<Binding> {
        (**self).find_gruu(gruu, now)
    }
    fn prune(&mut self, now: Instant) -> Vec<Binding> {
        (**self).prune(now)
    }
    fn next_expiry(&self) -> Option<Instant> {
        (**self).next_expiry()
    }
    fn insert(&mut self, now: Instant, binding: Binding) -> Result<(), LocationError> {
        (**self).insert(now, binding)
    }
    fn remove(&mut self, aor: &str, contact: &str, now: Instant) -> Result<Option<Binding>, LocationError> {
        (**self).remove(aor, contact, now)
    }
    fn remove_all(&mut self, aor: &str) -> Result<(), LocationError> {
        (**self).remove_all(aor)
    }
}

/// The in-memory location service, the default: ordered maps only, so
/// every answer is deterministic. Memory follows the live bindings: an AOR
/// whose last binding is removed or pruned leaves no entry behind.
#[derive(Debug, Clone, Default)]
pub struct MemoryLocation {
    /// Bindings per AOR, kept in [`by_preference`] order; never empty.
    aors: BTreeMap<String, Vec<Binding>>,
    /// Temporary GRUU (canonical) → the AOR of its binding.
    temp_gruus: BTreeMap<String, String>,
    /// (earliest expiry, AOR) for every AOR: what to prune next.
    expiries: BTreeSet<(Instant, String)>,
}

impl MemoryLocation {
    /// An empty store.
    pub fn new() -> MemoryLocation {
        MemoryLocation::default()
    }

    /// How many AORs have bindings (expired but unpruned ones included).
    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    /// How many bindings are stored (expired but unpruned ones included).
    pub fn binding_count(&self) -> usize {
        self.aors.values().map(Vec::len).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.aors.is_empty()
    }

    /// The AORs with stored bindings, in order.
    pub fn aors(&self) -> impl Iterator<Item = &str> + '_ {
        self.aors.keys().map(String::as_str)
    }

    /// Removes an AOR's entry and its indexes, returning its bindings.
    fn take(&mut self, aor: &str) -> Vec<Binding> {
        let Some(old) = self.aors.remove(aor) else { return Vec::new() };
        self.unindex(aor, &old);
        old
    }

    /// Stores `bindings` (already sorted, not empty) under `aor` with its
    /// indexes.
    fn put(&mut self, aor: &str, bindings: Vec<Binding>) {
        if let Some(first) = bindings.iter().map(|b| b.expires).min() {
            self.expiries.insert((first, aor.to_owned()));
        }
        for b in &bindings {
            for t in &b.temp_gruus {
                self.temp_gruus.insert(t.clone(), aor.to_owned());
            }
        }
        self.aors.insert(aor.to_owned(), bindings);
    }

    fn unindex(&mut self, aor: &str, bindings: &[Binding]) {
        if let Some(first) = bindings.iter().map(|b| b.expires).min() {
            self.expiries.remove(&(first, aor.to_owned()));
        }
        for b in bindings {
            for t in &b.temp_gruus {
                self.temp_gruus.remove(t);
            }
        }
    }
}

impl Location for MemoryLocation {
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.aors.get(aor).map(|all| all.iter().filter(|b| b.is_live(now)).cloned().collect()).unwrap_or_default()
    }

    fn replace(&mut self, aor: &str, mut bindings: Vec<Binding>) -> Result<(), LocationError> {
        self.take(aor);
        if !bindings.is_empty() {
            for b in &mut bindings {
                if b.aor != aor {
                    aor.clone_into(&mut b.aor);
                }
            }
            bindings.sort_by(by_preference);
            self.put(aor, bindings);
        }
        Ok(())
    }

    fn find_gruu(&self, gruu: Gruu<'_>, now: Instant) -> Option<Binding> {
        match gruu {
            Gruu::Public { aor, instance } => self
                .aors
                .get(aor)?
                .iter()
                .find(|b| b.is_live(now) && b.instance.as_deref().is_some_and(|i| i.eq_ignore_ascii_case(instance)))
                .cloned(),
            Gruu::Temporary(t) => {
                let aor = self.temp_gruus.get(t)?;
                self.aors.get(aor)?.iter().find(|b| b.is_live(now) && b.temp_gruus.iter().any(|x| x == t)).cloned()
            }
        }
    }

    fn prune(&mut self, now: Instant) -> Vec<Binding> {
        let mut gone = Vec::new();
        while self.expiries.first().is_some_and(|(first, _)| *first <= now) {
            let Some((_, aor)) = self.expiries.pop_first() else { break };
            let (live, expired): (Vec<Binding>, Vec<Binding>) =
                self.take(&aor).into_iter().partition(|b| b.is_live(now));
            if !live.is_empty() {
                self.put(&aor, live);
            }
            gone.extend(expired);
        }
        gone
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }
}
