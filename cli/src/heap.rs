//! Handing freed heap back to the system after a burst of traffic.
//!
//! The core frees every transaction, dialog and table entry when it ends
//! (and drops emptied tables' storage, `sipline`'s `shed` module), but
//! glibc's allocator only returns memory to the system from the top of its
//! heap: a few small blocks still in use near the top — a channel's last
//! node, a queue's buffer — keep tens of megabytes of freed memory counted
//! in the process's RSS after 20 000 calls (BENCHMARKS.md, "INVITE load").
//! `malloc_trim` returns the free pages wherever they lie. The long-running
//! commands call [`release_free_memory`] every [`TRIM_EVERY`].

use std::time::Duration;

/// How often a long-running command asks the allocator to give freed pages
/// back. A trim of a quiet heap takes microseconds; during a burst it
/// gives back little, and that little is faulted in again at once.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns the allocator's free pages to the system (glibc); elsewhere a
/// no-op (other allocators decay freed memory on their own).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes a padding size and touches only the
    // allocator's own free lists; it is thread-safe (it takes the arena
    // locks) and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release_free_memory`] every [`TRIM_EVERY`], forever (spawn it
/// beside a long-running command).
pub(crate) async fn trim_periodically() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        release_free_memory();
    }
}
