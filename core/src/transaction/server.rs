//! Server transactions (RFC 3261 §17.2): the INVITE machine of figure 7 as
//! amended by RFC 6026 (the Accepted state and timer L) and the non-INVITE
//! machine of figure 8.

use super::timer::{Armed, Timer, TimerConfig};
use super::Effect;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which of the two server machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// INVITE (figure 7, RFC 6026 figure 7).
    Invite,
    /// Any other method except ACK (figure 8).
    NonInvite,
}

/// The states of figures 7 and 8 (RFC 6026 adds Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, the TU has not answered (§17.2.2).
    Trying,
    /// INVITE received, or a provisional response sent.
    Proceeding,
    /// A final response sent (non-2xx for INVITE); retransmitting it.
    Completed,
    /// The ACK for a non-2xx arrived (§17.2.1).
    Confirmed,
    /// A 2xx to INVITE sent; retransmissions of it come from the TU and
    /// ACKs go to the TU (RFC 6026 §8.5).
    Accepted,
    /// Done; the transaction is removed.
    Terminated,
}

/// One server transaction.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    kind: ServerKind,
    state: ServerState,
    reliable: bool,
    config: TimerConfig,
    /// The last response sent, for retransmission: kept in Proceeding and
    /// Completed only, the states that answer a retransmitted request with
    /// it (§17.2.1, §17.2.2). Accepted and Confirmed never send it again
    /// (RFC 6026 §8.5: the TU retransmits its 2xx), so it goes there.
    last: Option<Arc<[u8]>>,
    /// Current interval of timer G.
    interval: Duration,
    armed: Armed,
}

/// What the transaction did with a request that matched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    /// A retransmission, answered (or ignored) here.
    Retransmission,
    /// An ACK the TU must see (a 2xx ACK in Accepted, RFC 6026 §8.5).
    AckForTu,
    /// The ACK for a non-2xx: the transaction is Confirmed (§17.2.1).
    Ack,
}

impl ServerTransaction {
    /// A request created this transaction (§17.2.1, §17.2.2). An INVITE
    /// transaction starts in Proceeding and arms the 100 Trying timer.
    pub fn start(now: Instant, kind: ServerKind, reliable: bool, config: TimerConfig) -> Self {
        let mut tx = ServerTransaction {
            kind,
            state: match kind {
                ServerKind::Invite => ServerState::Proceeding,
                ServerKind::NonInvite => ServerState::Trying,
            },
            reliable,
            config,
            last: None,
            interval: config.t1,
            armed: Armed::default(),
        };
        if kind == ServerKind::Invite {
            tx.arm(now, Timer::Trying);
        }
        tx
    }

    /// The machine.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }
    /// The current state.
    pub fn state(&self) -> ServerState {
        self.state
    }
    /// The earliest armed timer, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.armed.deadline()
    }
    /// Whether the TU may still send a response through this transaction.
    pub fn accepts_response(&self, code: u16) -> bool {
        match self.state {
            ServerState::Trying | ServerState::Proceeding => true,
            // RFC 6026 §8.5: the TU retransmits its 2xx through Accepted.
            ServerState::Accepted => (200..300).contains(&code),
            _ => false,
        }
    }

    fn arm(&mut self, now: Instant, timer: Timer) {
        self.armed.arm(now, timer, &self.config, self.reliable);
    }

    fn disarm(&mut self, timer: Timer) {
        self.armed.disarm(timer);
    }

    fn terminate(&mut self, out: &mut Vec<Effect>) {
        self.state = ServerState::Terminated;
        self.armed.clear();
        out.push(Effect::Terminated);
    }

    /// The TU sends a response (the caller checked [`accepts_response`]).
    ///
    /// [`accepts_response`]: ServerTransaction::accepts_response
    pub fn on_tu_response(&mut self, now: Instant, code: u16, response: Arc<[u8]>, out: &mut Vec<Effect>) {
        if !self.accepts_response(code) {
            return;
        }
        out.push(Effect::Transmit(response.clone()));
        self.last = Some(response);
        self.disarm(Timer::Trying);
        match (self.kind, code) {
            (_, 100..=199) => {
                if self.state == ServerState::Trying {
                    self.state = ServerState::Proceeding;
                }
            }
            // RFC 6026 §8.5: a 2xx moves an INVITE transaction to Accepted.
            (ServerKind::Invite, 200..=299) => {
                if self.state != ServerState::Accepted {
                    self.state = ServerState::Accepted;
                    self.arm(now, Timer::L);
                }
                self.last = None;
            }
            // §17.2.1: a non-2xx final: Completed, G (unreliable) and H.
            (ServerKind::Invite, _) => {
                self.state = ServerState::Completed;
                self.arm(now, Timer::G);
                self.arm(now, Timer::H);
            }
            // §17.2.2: any final: Completed, J.
            (ServerKind::NonInvite, _) => {
                self.state = ServerState::Completed;
                self.arm(now, Timer::J);
                if self.config.initial(Timer::J, self.reliable) == Some(Duration::ZERO) {
                    self.terminate(out);
                }
            }
        }
    }

    /// A request matched this transaction (§17.2.3): a retransmission of
    /// the original, or an ACK.
    pub fn on_request(&mut self, now: Instant, is_ack: bool, out: &mut Vec<Effect>) -> Absorbed {
        if is_ack {
            return match self.state {
                ServerState::Completed => {
                    // §17.2.1: Confirmed, timer I; G stops.
                    self.state = ServerState::Confirmed;
                    self.last = None;
                    self.disarm(Timer::G);
                    self.disarm(Timer::H);
                    self.arm(now, Timer::I);
                    if self.config.initial(Timer::I, self.reliable) == Some(Duration::ZERO) {
                        self.terminate(out);
                    }
                    Absorbed::Ack
                }
                ServerState::Accepted => Absorbed::AckForTu,
                _ => Absorbed::Retransmission,
            };
        }
        // §17.2.1/§17.2.2: resend the last provisional or final response.
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some(r) = &self.last {
                out.push(Effect::Transmit(r.clone()));
            }
        }
        Absorbed::Retransmission
    }

    /// The transport could not send a response (§17.2.4).
    pub fn on_transport_error(&mut self, out: &mut Vec<Effect>) {
        if self.state != ServerState::Terminated {
            out.push(Effect::TransportError);
            self.terminate(out);
        }
    }

    /// Fires every timer due at `now` (calling early is harmless).
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some((timer, at)) = self.armed.pop_due(now) {
            self.fire(at, timer, out);
            if self.state == ServerState::Terminated {
                return;
            }
        }
    }

    fn fire(&mut self, at: Instant, timer: Timer, out: &mut Vec<Effect>) {
        match (timer, self.state) {
            // §17.2.1: the TU has not answered within 200 ms.
            (Timer::Trying, ServerState::Proceeding) if self.last.is_none() => {
                out.push(Effect::SendTrying);
            }
            // §17.2.1: retransmit the final response, G doubles up to T2.
            (Timer::G, ServerState::Completed) => {
                if let Some(r) = &self.last {
                    out.push(Effect::Transmit(r.clone()));
                }
                self.interval = (self.interval * 2).min(self.config.t2);
                self.armed.arm_after(at, Timer::G, self.interval);
            }
            // §17.2.1: no ACK came.
            (Timer::H, ServerState::Completed) => {
                out.push(Effect::Timeout);
                self.terminate(out);
            }
            (Timer::I, ServerState::Confirmed)
            | (Timer::J, ServerState::Completed)
            | (Timer::L, ServerState::Accepted) => {
                self.terminate(out);
            }
            _ => {}
        }
    }
}
