//! `sipline-tests`: shared helpers for the project's integration tests.
//!
//! The conformance corpus (RFC 4475, RFC 5118) lives in `tests/corpus/`;
//! [`sim`] is the deterministic network simulation and [`tu`] holds small
//! transaction users that drive the transaction layer through it.

pub mod pair;
pub mod sim;
pub mod tu;

use std::path::PathBuf;

/// The directory holding the vendored conformance vectors.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}
