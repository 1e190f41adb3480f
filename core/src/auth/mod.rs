//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760;
//! RFC 2617 for the older parts still in use).
//!
//! Both sides, sans-IO: nothing here keeps time or draws randomness of its
//! own (cnonces come from the caller's seeded [`Rng`](crate::rng::Rng)).
//!
//! - **Client** (a UA answering 401/407, RFC 3261 §22.2–22.3):
//!   [`DigestClient`] holds the user's [`DigestCredentials`] and, per realm,
//!   the nonce and its count, and turns a parsed
//!   [`Challenge`](crate::message::headers::Challenge) into the value of an
//!   Authorization or Proxy-Authorization header.
//!   [`best_challenge`] chooses among several challenges (SHA-256 first,
//!   RFC 8760 §2.4).
//! - **Server** (a registrar or proxy, RFC 3261 §22.1): [`DigestServer`]
//!   decides about a request: authenticated, challenged (401/407, with
//!   `stale=true` for an expired nonce), or forbidden. Against password
//!   guessing (issue 18) it answers unknown users exactly as known ones
//!   with a wrong password, spends the nonce of every failed answer, and
//!   bans usernames and sources that fail too often ([`Bans`],
//!   [`BanPolicy`]). It is built from parts usable on their own:
//!   [`DigestChallenge`] writes the WWW-Authenticate / Proxy-Authenticate
//!   value and checks the answer against a password or a stored [`ha1`];
//!   [`Nonces`] issues self-checking nonces that show no counter, expires
//!   them and refuses replayed nonce counts (RFC 7616 §3.3–3.4) and spent
//!   nonces; [`Users`] holds the passwords and HA1 values, read from a
//!   users file.
//!
//! Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess (MD5 from RustCrypto's
//! `md-5`, SHA-256 from `ring`). `qop=auth` and answers without `qop`;
//! not `auth-int`, nor `userhash`.
//!
//! Passwords and HA1 values are never logged, and the `Debug` output of
//! the types holding them leaves them out.
//!
//! ```
//! use sipline::auth::{DigestClient, DigestCredentials};
//! use sipline::message::Message;
//! use sipline::rng::Rng;
//!
//! let response = b"SIP/2.0 401 Unauthorized\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n\
//!     From: <sip:bob@biloxi.com>;tag=a73kszlfl\r\nTo: <sip:bob@biloxi.com>;tag=1410948204\r\n\
//!     Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\nCSeq: 1 REGISTER\r\n\
//!     WWW-Authenticate: Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", algorithm=MD5\r\n\
//!     WWW-Authenticate: Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", algorithm=SHA-256\r\n\
//!     Content-Length: 0\r\n\r\n";
//! let response = Message::parse(response).unwrap();
//!
//! let mut client = DigestClient::new(DigestCredentials::new("bob", "zanzibar"));
//! let answers = client.authorize_response(&response, "REGISTER", "sip:biloxi.com", &mut Rng::new(7)).unwrap();
//! let (header, value) = &answers[0];
//! assert_eq!(header.as_str(), "Authorization");
//! assert!(value.contains("algorithm=SHA-256"));
//! assert!(value.contains("nc=00000001"));
//! ```

mod bans;
pub(crate) mod digest;
mod nonce;
mod server;
mod users;

pub use bans::{
    BanPolicy, BanTable, Banned, Bans, DEFAULT_BAN, DEFAULT_BAN_CAPACITY, DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURES,
};
pub use digest::{
    best_challenge, ha1, Algorithm, ChallengeError, DigestChallenge, DigestClient, DigestCredentials, DigestError,
    Secret, Verified, VerifyError,
};
pub use nonce::{
    NonceError, NonceJournal, NonceLedger, NonceUse, Nonces, DEFAULT_NONCE_CAPACITY, DEFAULT_NONCE_LIFETIME,
    MAX_NONCE_LIFETIME,
};
pub use server::{ChallengeReason, Decision, DigestServer, ForbiddenReason, Role, DEFAULT_ALGORITHMS};
pub use users::{Users, UsersError};
