//! Client transactions (RFC 3261 §17.1): the INVITE machine of figure 5 as
//! amended by RFC 6026 (the Accepted state and timer M) and the non-INVITE
//! machine of figure 6.
//!
//! A machine owns its request bytes and timers and nothing else; it is
//! driven with `now` and reports what must happen through [`Effect`]s.

use super::timer::{Armed, Timer, TimerConfig};
use super::Effect;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which of the two client machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// INVITE (figure 5, RFC 6026 figure 5).
    Invite,
    /// Any other method (figure 6).
    NonInvite,
}

/// The states of figures 5 and 6 (RFC 6026 adds Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard (§17.1.1.2).
    Calling,
    /// Non-INVITE sent, nothing heard (§17.1.2.2).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// A 2xx to INVITE arrived; further 2xx go to the TU (RFC 6026 §8.4).
    Accepted,
    /// Done; the transaction is removed.
    Terminated,
}

/// One client transaction.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    kind: ClientKind,
    state: ClientState,
    reliable: bool,
    config: TimerConfig,
    request: Arc<[u8]>,
    ack: Option<Arc<[u8]>>,
    /// Current retransmission interval of timer A or E.
    interval: Duration,
    /// Armed timers and when they fire.
    armed: Armed,
    /// The TU gave up on this INVITE (§9.1): timer B bounds it in
    /// Proceeding too.
    given_up: bool,
}

impl ClientTransaction {
    /// Starts a transaction: the request is sent at once and timers A/B
    /// (INVITE) or E/F (non-INVITE) start (§17.1.1.2, §17.1.2.2).
    pub fn start(
        now: Instant,
        kind: ClientKind,
        request: Arc<[u8]>,
        reliable: bool,
        config: TimerConfig,
        out: &mut Vec<Effect>,
    ) -> Self {
        let (retransmit, timeout, state) = match kind {
            ClientKind::Invite => (Timer::A, Timer::B, ClientState::Calling),
            ClientKind::NonInvite => (Timer::E, Timer::F, ClientState::Trying),
        };
        let mut tx = ClientTransaction {
            kind,
            state,
            reliable,
            config,
            request,
            ack: None,
            interval: config.t1,
            armed: Armed::default(),
            given_up: false,
        };
        out.push(Effect::Transmit(tx.request.clone()));
        tx.arm(now, retransmit);
        tx.arm(now, timeout);
        tx
    }

    /// The machine.
    pub fn kind(&self) -> ClientKind {
        self.kind
    }
    /// The current state.
    pub fn state(&self) -> ClientState {
        self.state
    }
    /// The request as sent.
    pub fn request(&self) -> &Arc<[u8]> {
        &self.request
    }
    /// The earliest armed timer, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.armed.deadline()
    }

    fn arm(&mut self, now: Instant, timer: Timer) {
        self.armed.arm(now, timer, &self.config, self.reliable);
    }

    fn disarm(&mut self, timer: Timer) {
        self.armed.disarm(timer);
    }

    fn terminate(&mut self, out: &mut Vec<Effect>) {
        self.state = ClientState::Terminated;
        self.armed.clear();
        out.push(Effect::Terminated);
    }

    /// A response matched this transaction (§17.1.3). `build_ack` makes the
    /// ACK for a non-2xx final response to INVITE (§17.1.1.3); it is called
    /// at most once.
    pub fn on_response(
        &mut self,
        now: Instant,
        code: u16,
        response: &Arc<[u8]>,
        build_ack: impl FnOnce() -> Option<Vec<u8>>,
        out: &mut Vec<Effect>,
    ) {
        let provisional = code < 200;
        match (self.kind, self.state) {
            // §17.1.1.2, figure 5.
            (ClientKind::Invite, ClientState::Calling | ClientState::Proceeding) => {
                if provisional {
                    // Figure 5: Proceeding neither retransmits nor times out;
                    // the TU ends a ringing INVITE with CANCEL — unless the
                    // TU gave up already: then timer B stays as the §9.1
                    // bound.
                    self.disarm(Timer::A);
                    if !self.given_up {
                        self.disarm(Timer::B);
                    }
                    self.state = ClientState::Proceeding;
                    out.push(Effect::Response(response.clone()));
                } else if code < 300 {
                    // RFC 6026 §8.4: Accepted, timer M; the TU handles the ACK.
                    self.state = ClientState::Accepted;
                    self.armed.clear();
                    self.arm(now, Timer::M);
                    out.push(Effect::Response(response.clone()));
                } else {
                    self.state = ClientState::Completed;
                    self.armed.clear();
                    self.ack = build_ack().map(Arc::from);
                    if let Some(ack) = &self.ack {
                        out.push(Effect::Transmit(ack.clone()));
                    }
                    out.push(Effect::Response(response.clone()));
                    self.arm(now, Timer::D);
                    if self.config.initial(Timer::D, self.reliable) == Some(Duration::ZERO) {
                        self.terminate(out);
                    }
                }
            }
            // A retransmitted final response: ACK again, do not tell the TU.
            (ClientKind::Invite, ClientState::Completed) if code >= 300 => {
                if let Some(ack) = &self.ack {
                    out.push(Effect::Transmit(ack.clone()));
                }
            }
            // RFC 6026 §8.4: every 2xx goes to the TU, which ACKs it.
            (ClientKind::Invite, ClientState::Accepted) if (200..300).contains(&code) => {
                out.push(Effect::Response(response.clone()));
            }
            // §17.1.2.2, figure 6.
            (ClientKind::NonInvite, ClientState::Trying | ClientState::Proceeding) => {
                out.push(Effect::Response(response.clone()));
                if provisional {
                    self.state = ClientState::Proceeding;
                } else {
                    self.state = ClientState::Completed;
                    self.armed.clear();
                    self.arm(now, Timer::K);
                    if self.config.initial(Timer::K, self.reliable) == Some(Duration::ZERO) {
                        self.terminate(out);
                    }
                }
            }
            _ => {}
        }
    }

    /// A CANCEL for this INVITE went, or its TU gave up on it otherwise
    /// (§9.1): "If there is no final
    /// response for the original request in 64*T1 seconds …, the client
    /// SHOULD then consider the original transaction cancelled and SHOULD
    /// destroy the client transaction handling the original request."
    /// Arms that bound (as timer B) on an INVITE in Proceeding; in Calling,
    /// timer B already runs and now stays past a provisional response.
    pub fn on_give_up(&mut self, now: Instant) {
        if self.kind != ClientKind::Invite || self.given_up {
            return;
        }
        match self.state {
            ClientState::Calling => self.given_up = true,
            ClientState::Proceeding => {
                self.given_up = true;
                self.arm(now, Timer::B);
            }
            _ => {}
        }
    }

    /// The transport could not send the request (§17.1.4): the TU learns
    /// of it and the transaction ends.
    pub fn on_transport_error(&mut self, out: &mut Vec<Effect>) {
        if self.state != ClientState::Terminated {
            out.push(Effect::TransportError);
            self.terminate(out);
        }
    }

    /// Fires every timer due at `now` (calling early is harmless).
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some((timer, at)) = self.armed.pop_due(now) {
            self.fire(at, timer, out);
            if self.state == ClientState::Terminated {
                return;
            }
        }
    }

    /// One timer fired; `at` is when it was due (retransmissions keep their
    /// schedule even if the caller wakes late).
    fn fire(&mut self, at: Instant, timer: Timer, out: &mut Vec<Effect>) {
        match (timer, self.state) {
            // §17.1.1.2: retransmit, double A (B bounds it).
            (Timer::A, ClientState::Calling) => {
                out.push(Effect::Transmit(self.request.clone()));
                self.interval *= 2;
                self.armed.arm_after(at, Timer::A, self.interval);
            }
            // §17.1.2.2: retransmit; E doubles up to T2 in Trying and is T2
            // in Proceeding.
            (Timer::E, ClientState::Trying | ClientState::Proceeding) => {
                out.push(Effect::Transmit(self.request.clone()));
                self.interval = if self.state == ClientState::Trying {
                    (self.interval * 2).min(self.config.t2)
                } else {
                    self.config.t2
                };
                self.armed.arm_after(at, Timer::E, self.interval);
            }
            // Timer B in Proceeding: the §9.1 bound after a CANCEL.
            (Timer::B, ClientState::Calling | ClientState::Proceeding)
            | (Timer::F, ClientState::Trying | ClientState::Proceeding) => {
                out.push(Effect::Timeout);
                self.terminate(out);
            }
            (Timer::D | Timer::K, ClientState::Completed) | (Timer::M, ClientState::Accepted) => {
                self.terminate(out);
            }
            _ => {}
        }
    }
}
