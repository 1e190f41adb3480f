//! `sipline-tests`: shared helpers for the project's integration tests.
//!
//! The conformance corpus (RFC 4475, RFC 5118) lives in `tests/corpus/`;
//! the simulation harness joins with the transaction layer.

use std::path::PathBuf;

/// The directory holding the vendored conformance vectors.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}
