//! The transaction users of [`crate::tu`] over whole transport layers in
//! [`crate::net`]: the glue an endpoint has (a request's reply peer per
//! §18.2.2, every transmission through the transport layer), kept small.

use crate::net::App;
use crate::tu::{Uac, Uas};
use sipline::transport::{Peer, TransportEvent, TransportLayer};
use std::time::Instant;

/// A UAC or a UAS on a host.
pub enum Stack {
    /// The client side.
    Uac(Uac<Peer>),
    /// The server side.
    Uas(Uas<Peer>),
}

impl Stack {
    fn pump(&mut self, now: Instant, layer: &mut TransportLayer) {
        loop {
            let next = match self {
                Stack::Uac(u) => u.next_transmit(),
                Stack::Uas(u) => u.next_transmit(),
            };
            let Some((peer, bytes)) = next else { return };
            if let Err(e) = layer.send(now, &peer, bytes.into()) {
                panic!("send refused: {e}");
            }
        }
    }

    /// The UAC, if this is one.
    pub fn uac(&self) -> Option<&Uac<Peer>> {
        match self {
            Stack::Uac(u) => Some(u),
            Stack::Uas(_) => None,
        }
    }
}

impl App for Stack {
    fn on_event(&mut self, now: Instant, event: TransportEvent, layer: &mut TransportLayer) {
        match (&mut *self, event) {
            (Stack::Uas(u), TransportEvent::Request { source, bytes }) => {
                let peer = Peer::reply_to(&source, &bytes);
                u.on_message(now, &bytes, peer, source.transport.is_reliable());
            }
            (Stack::Uac(u), TransportEvent::Response { source, bytes }) => {
                let mut peer = Peer::new(source.transport, source.remote);
                peer.conn = source.conn;
                u.on_message(now, &bytes, peer);
            }
            _ => {}
        }
        self.pump(now, layer);
    }

    fn on_timeout(&mut self, now: Instant, layer: &mut TransportLayer) {
        match self {
            Stack::Uac(u) => u.on_timeout(now),
            Stack::Uas(u) => u.on_timeout(now),
        }
        self.pump(now, layer);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Stack::Uac(u) => u.next_timeout(),
            Stack::Uas(u) => u.next_timeout(),
        }
    }
}
