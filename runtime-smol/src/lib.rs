//! `sipline-smol`: drives the sans-IO [`sipline`] core on smol.
//!
//! Not built yet: the runtime lands with the transport layer (see the project's
//! issues). Until then this crate only re-exports the core so the workspace
//! layout matches `DESIGN.md`.

pub use sipline;
