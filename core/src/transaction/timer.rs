//! Transaction timers (RFC 3261 §17, table 4 of Appendix A; RFC 6026 §8.4).

use std::time::{Duration, Instant};

/// The base timer values every other timer derives from (RFC 3261 §17.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the round-trip time estimate (default 500 ms).
    pub t1: Duration,
    /// T2, the longest retransmit interval for non-INVITE requests and
    /// INVITE responses (default 4 s).
    pub t2: Duration,
    /// T4, the longest time a message stays in the network (default 5 s).
    pub t4: Duration,
    /// How long an INVITE server transaction waits for the TU before it
    /// sends 100 Trying itself (§17.2.1: 200 ms).
    pub trying: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying: Duration::from_millis(200),
        }
    }
}

/// The timers of RFC 3261 §17 and RFC 6026, by their RFC names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// INVITE request retransmit interval, unreliable transports (§17.1.1.2).
    A,
    /// INVITE transaction timeout (§17.1.1.2): 64·T1.
    B,
    /// Wait time for response retransmits after a non-2xx (§17.1.1.2):
    /// at least 32 s unreliable, 0 reliable.
    D,
    /// Non-INVITE request retransmit interval (§17.1.2.2).
    E,
    /// Non-INVITE transaction timeout (§17.1.2.2): 64·T1.
    F,
    /// INVITE response retransmit interval (§17.2.1).
    G,
    /// Wait time for ACK receipt (§17.2.1): 64·T1.
    H,
    /// Wait time for ACK retransmits (§17.2.1): T4 unreliable, 0 reliable.
    I,
    /// Wait time for non-INVITE request retransmits (§17.2.2): 64·T1
    /// unreliable, 0 reliable.
    J,
    /// Wait time for response retransmits (§17.1.2.2): T4 unreliable, 0 reliable.
    K,
    /// Wait time for accepted INVITE request retransmits (RFC 6026 §8.7): 64·T1.
    L,
    /// Wait time for retransmission of 2xx to INVITE (RFC 6026 §8.4): 64·T1.
    M,
    /// 100 Trying on the TU's behalf if it has not answered an INVITE
    /// (§17.2.1, 200 ms).
    Trying,
}

impl TimerConfig {
    /// 64·T1: timers B, F, H, L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// The first value of a timer on a transport, or `None` where the RFC
    /// says the timer is not used (retransmission timers on reliable
    /// transports). Timers that wait for retransmissions that cannot happen
    /// on a reliable transport (D, I, J, K) are zero there.
    pub fn initial(&self, timer: Timer, reliable: bool) -> Option<Duration> {
        let zero_if_reliable = |d: Duration| if reliable { Duration::ZERO } else { d };
        match timer {
            Timer::A | Timer::E | Timer::G => (!reliable).then_some(self.t1),
            Timer::B | Timer::F | Timer::H | Timer::L | Timer::M => Some(self.transaction_timeout()),
            // "at least 32 seconds" (§17.1.1.2): the larger of 32 s and 64·T1.
            Timer::D => Some(zero_if_reliable(self.transaction_timeout().max(Duration::from_secs(32)))),
            Timer::I | Timer::K => Some(zero_if_reliable(self.t4)),
            Timer::J => Some(zero_if_reliable(self.transaction_timeout())),
            Timer::Trying => Some(self.trying),
        }
    }
}

/// The timers one transaction has armed, each with the instant it fires.
#[derive(Debug, Clone, Default)]
pub(crate) struct Armed(Vec<(Timer, Instant)>);

impl Armed {
    /// Arms `timer` with its first value on this transport (none for a
    /// retransmission timer on a reliable one), replacing an earlier arming.
    pub(crate) fn arm(&mut self, now: Instant, timer: Timer, config: &TimerConfig, reliable: bool) {
        self.disarm(timer);
        if let Some(d) = config.initial(timer, reliable) {
            self.0.push((timer, now + d));
        }
    }

    /// Arms `timer` to fire `after` past `at`.
    pub(crate) fn arm_after(&mut self, at: Instant, timer: Timer, after: Duration) {
        self.disarm(timer);
        self.0.push((timer, at + after));
    }

    /// Stops `timer`.
    pub(crate) fn disarm(&mut self, timer: Timer) {
        self.0.retain(|&(t, _)| t != timer);
    }

    /// Stops every timer.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// The earliest instant a timer fires.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.0.iter().map(|&(_, at)| at).min()
    }

    /// Removes and returns a timer due at `now`, with the instant it was
    /// due (so retransmission schedules hold even when woken late).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Timer, Instant)> {
        let i = self.0.iter().position(|&(_, at)| at <= now)?;
        Some(self.0.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_4_values_by_transport() {
        let c = TimerConfig::default();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // Unreliable.
        assert_eq!(c.initial(Timer::A, false), Some(ms(500)));
        assert_eq!(c.initial(Timer::B, false), Some(s(32)));
        assert_eq!(c.initial(Timer::D, false), Some(s(32)));
        assert_eq!(c.initial(Timer::E, false), Some(ms(500)));
        assert_eq!(c.initial(Timer::F, false), Some(s(32)));
        assert_eq!(c.initial(Timer::G, false), Some(ms(500)));
        assert_eq!(c.initial(Timer::H, false), Some(s(32)));
        assert_eq!(c.initial(Timer::I, false), Some(s(5)));
        assert_eq!(c.initial(Timer::J, false), Some(s(32)));
        assert_eq!(c.initial(Timer::K, false), Some(s(5)));
        assert_eq!(c.initial(Timer::L, false), Some(s(32)));
        assert_eq!(c.initial(Timer::M, false), Some(s(32)));
        // Reliable: no retransmission timers; waits for retransmissions are 0.
        for t in [Timer::A, Timer::E, Timer::G] {
            assert_eq!(c.initial(t, true), None, "{t:?}");
        }
        for t in [Timer::D, Timer::I, Timer::J, Timer::K] {
            assert_eq!(c.initial(t, true), Some(Duration::ZERO), "{t:?}");
        }
        for t in [Timer::B, Timer::F, Timer::H, Timer::L, Timer::M] {
            assert_eq!(c.initial(t, true), Some(s(32)), "{t:?}");
        }
        // D is at least 32 s even with a large T1.
        let big = TimerConfig { t1: s(1), ..c };
        assert_eq!(big.initial(Timer::D, false), Some(s(64)));
        let small = TimerConfig { t1: ms(100), ..c };
        assert_eq!(small.initial(Timer::D, false), Some(s(32)));
    }
}
