//! The transport layer (RFC 3261 §18), sans-IO: UDP, TCP and TLS.
//!
//! Built so far: choosing where a request goes ([`target_for`], RFC 3263
//! without DNS; [`transport_for_size`], §18.1.1) and where a response goes
//! ([`response_target`], §18.2.2), and stamping received requests with
//! `received`/`rport` ([`stamp_received`], §18.2.1, RFC 3581), sorting what
//! arrives ([`inbound`]: §18.1.2 sent-by check, keep-alives), and the
//! stream [`Connections`] table (framing, keep-alives, linger, pinning, idle
//! and slow-sender limits). The datagram path, the layer that ties these to
//! the transaction layer, name resolution and TLS follow.

mod connection;
mod inbound;
mod received;
mod target;
mod tls;

pub use connection::{CloseReason, ConnId, ConnectError, ConnectionConfig, Connections, StreamOutput, INTAKE_CHUNK};
pub use inbound::{inbound, Inbound};
pub use received::stamp_received;
pub use target::{response_target, target_for, transport_for_size, Target, TargetError, Transport};
pub use tls::{TlsConfig, TlsConfigError, TlsFailure};
