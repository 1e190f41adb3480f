//! The transport layer (RFC 3261 §18), sans-IO: UDP, TCP and TLS.
//!
//! Built so far: choosing where a request goes ([`target_for`], RFC 3263
//! without DNS; [`transport_for_size`], §18.1.1) and where a response goes
//! ([`response_target`], §18.2.2), and stamping received requests with
//! `received`/`rport` ([`stamp_received`], §18.2.1, RFC 3581). Stream
//! framing lives in [`crate::message::StreamFramer`]. The connection table,
//! idle timers and TLS follow.

mod received;
mod target;

pub use received::stamp_received;
pub use target::{response_target, target_for, transport_for_size, Target, TargetError, Transport};
