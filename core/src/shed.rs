//! Giving memory back after a burst.
//!
//! A table that held 40 000 transactions keeps its last B-tree leaf (and a
//! queue its whole buffer) after the last entry leaves; that leaf was
//! allocated at the peak, high in the heap, and pins everything below it so
//! the allocator cannot return the heap to the system. The layers call
//! [`shed`] on their tables once they are empty, so an idle endpoint holds
//! about what a fresh one does (BENCHMARKS.md, "INVITE load").

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A collection that can drop its storage when empty.
pub(crate) trait Shed {
    /// Whether it is empty and still owns storage worth dropping.
    fn sheddable(&self) -> bool;
}

impl<K, V> Shed for BTreeMap<K, V> {
    fn sheddable(&self) -> bool {
        // An emptied map may keep one leaf; `new()` owns none.
        self.is_empty()
    }
}

impl<T> Shed for BTreeSet<T> {
    fn sheddable(&self) -> bool {
        self.is_empty()
    }
}

impl<T> Shed for VecDeque<T> {
    fn sheddable(&self) -> bool {
        self.is_empty() && self.capacity() > QUEUE_KEEP
    }
}

impl<T> Shed for Vec<T> {
    fn sheddable(&self) -> bool {
        self.is_empty() && self.capacity() > QUEUE_KEEP
    }
}

/// Queues up to this many entries keep their buffer when empty: they fill
/// and drain on every input, and re-allocating each time would cost more
/// than it saves.
const QUEUE_KEEP: usize = 64;

/// Replaces `c` with a fresh (unallocated) one if it is empty.
pub(crate) fn shed<C: Shed + Default>(c: &mut C) {
    if c.sheddable() {
        *c = C::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_queues_drop_large_buffers_only() {
        let mut q: VecDeque<u32> = (0..1000).collect();
        shed(&mut q);
        assert_eq!(q.len(), 1000, "a full queue is left alone");
        q.clear();
        shed(&mut q);
        assert_eq!(q.capacity(), 0);
        let mut small: Vec<u8> = Vec::with_capacity(8);
        shed(&mut small);
        assert_eq!(small.capacity(), 8);
    }

    #[test]
    fn empty_maps_are_replaced() {
        let mut m: BTreeMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        shed(&mut m);
        assert_eq!(m.len(), 1000);
        m.retain(|_, _| false);
        shed(&mut m);
        assert!(m.is_empty());
    }
}
