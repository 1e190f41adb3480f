//! What the tables that several workers share are built from (issue 19):
//! lock-free maps ([`papaya`]) hash their keys with [`KeyedHash`].

use siphasher::sip::SipHasher13;
use std::hash::BuildHasher;

/// SipHash-1-3 under two secret keys: table positions that a peer choosing
/// keys (AORs, addresses) cannot predict, and the same positions for the
/// same keys on every run with the same secret (deterministic tests).
#[derive(Debug, Clone)]
pub(crate) struct KeyedHash {
    k0: u64,
    k1: u64,
}

impl KeyedHash {
    /// A hasher under `k0`, `k1`.
    pub(crate) fn new(k0: u64, k1: u64) -> KeyedHash {
        KeyedHash { k0, k1 }
    }
}

impl BuildHasher for KeyedHash {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}
