//! Storage for live objects behind handles that carry a generation, so a
//! stale handle never reaches the object that reused its slot.
//!
//! When the last object leaves, the slab gives its storage back (a burst of
//! 20 000 calls must not leave its peak allocated for the rest of the
//! process's life); the generation counter carries on past every slot that
//! was dropped, so a handle from before the reset still finds nothing.

pub(crate) struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Slots reused through a free list; every reuse bumps the generation.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    pub(crate) len: usize,
    /// The generation a newly pushed slot starts at: above every generation
    /// handed out by slots dropped in a reset.
    fresh: u32,
}

/// Below this many slots an emptied slab keeps its storage (re-allocating it
/// for every call on a quiet endpoint would cost more than it saves).
const KEEP_SLOTS: usize = 64;

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0, fresh: 0 }
    }
}

impl<T> Slab<T> {
    pub(crate) fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.generation = slot.generation.wrapping_add(1);
            slot.value = Some(value);
            (index, slot.generation)
        } else {
            let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
            self.slots.push(Slot { generation: self.fresh, value: Some(value) });
            (index, self.fresh)
        }
    }
    pub(crate) fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation == generation {
            slot.value.as_mut()
        } else {
            None
        }
    }
    pub(crate) fn remove(&mut self, index: u32, generation: u32) -> Option<T> {
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation != generation {
            return None;
        }
        let v = slot.value.take()?;
        self.free.push(index);
        self.len -= 1;
        if self.len == 0 && self.slots.len() > KEEP_SLOTS {
            self.release();
        }
        Some(v)
    }
    /// Drops every (vacant) slot and the storage behind them.
    fn release(&mut self) {
        let top = self.slots.iter().map(|s| s.generation).max().unwrap_or(0);
        self.fresh = self.fresh.max(top.wrapping_add(1));
        self.slots = Vec::new();
        self.free = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_stay_stale_across_a_release() {
        let mut slab = Slab::default();
        let handles: Vec<_> = (0..200).map(|i| slab.insert(i)).collect();
        for &(i, g) in &handles {
            assert!(slab.remove(i, g).is_some());
        }
        // Emptied past KEEP_SLOTS: the storage is gone.
        assert_eq!(slab.slots.capacity(), 0);
        assert_eq!(slab.free.capacity(), 0);
        let (i, g) = slab.insert(7);
        assert_eq!(i, 0);
        assert_eq!(slab.get_mut(handles[0].0, handles[0].1), None);
        assert_eq!(slab.remove(handles[0].0, handles[0].1), None);
        assert_eq!(slab.get_mut(i, g), Some(&mut 7));
    }

    #[test]
    fn a_small_slab_keeps_its_slots() {
        let mut slab = Slab::default();
        let (i, g) = slab.insert("a");
        assert_eq!(slab.remove(i, g), Some("a"));
        assert_eq!(slab.slots.len(), 1);
        let (i2, g2) = slab.insert("b");
        assert_eq!((i2, g2), (i, g + 1));
        assert_eq!(slab.get_mut(i, g), None);
    }
}
