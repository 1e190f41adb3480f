//! `sipline-tests`: shared helpers for the project's integration tests.
//!
//! The conformance corpus (RFC 4475, RFC 5118) lives in `tests/corpus/`;
//! [`sim`] is the deterministic datagram simulation and [`tu`] holds small
//! transaction users that drive the transaction layer through it; [`net`]
//! simulates whole transport layers (datagrams, TCP, TLS) and [`stack`]
//! runs those transaction users over it; [`certs`] makes test PKI;
//! [`kamailio`] starts real peers (Kamailio, SIPp) for interop tests, and
//! [`baresip`] the baresip softphone registered at such a Kamailio,
//! [`linphone`] the linphone softphone (`linphonec`) registered at any
//! registrar;
//! [`registered`] and [`calls`] are endpoint scenarios run against any
//! registrar (Kamailio or `sipline serve`); [`churn`] opens and drops
//! connections against a real listener and looks at what the server holds.

pub mod baresip;
pub mod calls;
pub mod certs;
pub mod churn;
pub mod kamailio;
pub mod linphone;
pub mod net;
pub mod pair;
pub mod redis;
pub mod registered;
pub mod runtimes;
pub mod sim;
pub mod stack;
pub mod tu;

use std::path::PathBuf;

/// The directory holding the vendored conformance vectors.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}
