//! Stream connections when several workers serve together (issue 19).
//! Each worker's transport layer owns the connections its runtime
//! accepted; a phone that registered over TCP or TLS behind a NAT can
//! only be reached over the connection it opened (RFC 5626 §5.3), which
//! may be another worker's. [`SharedFlows`] says which worker holds the
//! accepted connection from each remote address; a worker that must send
//! there and holds no connection of its own hands the message to the
//! owner ([`WorkerMessage::Send`]), and a response that arrives on a
//! connection but belongs to another worker's transaction (its branch's
//! worker tag, [`crate::endpoint::response_worker`]) is handed to that
//! worker as received ([`WorkerMessage::Received`]).

use super::target::Transport;
use crate::concurrent::KeyedHash;
use papaya::{HashMap, Operation};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// What one worker asks another to do; the runtime carries it to the
/// worker named in [`Output::Worker`](super::Output::Worker) and feeds it
/// in with [`TransportLayer::handle_worker_message`](super::TransportLayer::handle_worker_message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerMessage {
    /// Send `bytes` to `remote` over `transport`, on the connection this
    /// worker holds to it (opened anew if it has gone).
    Send {
        /// TCP or TLS.
        transport: Transport,
        /// Where to.
        remote: SocketAddr,
        /// The TLS server name, for a connection opened anew.
        server_name: Option<Arc<str>>,
        /// The message.
        bytes: Arc<[u8]>,
    },
    /// A message that arrived over `transport` from `remote`, on a
    /// connection of the sending worker: handle it as received here.
    Received {
        /// TCP or TLS.
        transport: Transport,
        /// Who sent it.
        remote: SocketAddr,
        /// The message, framed.
        bytes: Vec<u8>,
    },
}

/// Which worker holds the accepted stream connection from each remote
/// address. Clones share one directory (it travels in
/// [`TransportConfig`](super::TransportConfig), which each worker's config
/// is cloned from); read on a send with no connection of one's own,
/// written when a connection is accepted or closes. A lock-free table
/// ([`papaya`]): a read never waits for a writer.
#[derive(Clone)]
pub struct SharedFlows(Arc<HashMap<(Transport, SocketAddr), u16, KeyedHash>>);

impl Default for SharedFlows {
    fn default() -> SharedFlows {
        SharedFlows::new()
    }
}

impl fmt::Debug for SharedFlows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFlows").field("connections", &self.len()).finish()
    }
}

impl SharedFlows {
    /// An empty directory.
    pub fn new() -> SharedFlows {
        let hash = KeyedHash::new(0x666c_6f77_735f_6b30, 0x666c_6f77_735f_6b31);
        SharedFlows(Arc::new(HashMap::builder().hasher(hash).build()))
    }

    /// The worker holding the connection from `remote` over `transport`.
    pub fn owner(&self, transport: Transport, remote: SocketAddr) -> Option<u16> {
        self.0.pin().get(&(transport, remote)).copied()
    }

    /// How many connections the directory knows.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `worker` accepted a connection from `remote` (the latest wins: a
    /// phone that reconnects is reached over its new connection).
    pub(super) fn insert(&self, transport: Transport, remote: SocketAddr, worker: u16) {
        self.0.pin().insert((transport, remote), worker);
    }

    /// `worker`'s connection from `remote` closed: forgotten, unless
    /// another worker holds a newer one (one atomic step).
    pub(super) fn remove(&self, transport: Transport, remote: SocketAddr, worker: u16) {
        self.0.pin().compute((transport, remote), |current| match current {
            Some((_, &owner)) if owner == worker => Operation::Remove,
            _ => Operation::Abort(()),
        });
    }
}

impl PartialEq for SharedFlows {
    /// Two directories are equal when they are one (shared) directory.
    fn eq(&self, other: &SharedFlows) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
