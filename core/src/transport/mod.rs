//! The transport layer (RFC 3261 §18), sans-IO: UDP, TCP and TLS.
//!
//! [`TransportLayer`] is the whole layer as one object: datagrams in and
//! out, stream [`Connections`] (framing, keep-alives, linger, pinning, idle
//! and slow-sender limits) with TLS sessions from rustls, name resolution
//! as an output ([`Output::Resolve`], RFC 3263 §4), and the checks on what
//! arrives ([`inbound`]: §18.1.2 sent-by, §18.2.1 `received`/`rport`
//! stamping, 400 for unparseable requests). The pieces are public too:
//! choosing where a request goes ([`target_for`], [`transport_for_size`]
//! for §18.1.1) and where a response goes ([`response_target`],
//! [`Peer::reply_to`], §18.2.2).

mod connection;
mod inbound;
mod layer;
mod received;
mod resolve;
mod target;
mod tls;
mod workers;

pub use connection::{CloseReason, ConnId, ConnectError, ConnectionConfig, Connections, StreamOutput, INTAKE_CHUNK};
pub use inbound::{inbound, Inbound};
pub use layer::{
    Arrival, Output, Peer, Source, TransportConfig, TransportError, TransportEvent, TransportLayer, TransportStats,
    DEFAULT_UDP_BUFFER,
};
pub use received::stamp_received;
pub(crate) use received::stamped_via;
pub use resolve::{Answer, Lookup, QueryId, ResolveError, SrvRecord};
pub use target::{response_target, target_for, transport_for_size, Target, TargetError, Transport};
pub use tls::{TlsConfig, TlsConfigError, TlsFailure};
pub use workers::{SharedFlows, WorkerMessage};
