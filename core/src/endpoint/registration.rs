//! Registration with a registrar (RFC 3261 §10.2), with the instance id of
//! RFC 5626 §4.1 and the GRUUs of RFC 5627: what a REGISTER carries, what
//! its 200 OK grants, and when to refresh or retry. The endpoint sends the
//! requests and owns the timers; this module holds the rules.
//!
//! Several registrars (issue 20, RFC 3263 §4.3): [`RegistrationConfig::fallbacks`]
//! follow [`RegistrationConfig::registrar`] in order of preference. Each
//! REGISTER tries every address of its registrar's name (SRV targets by
//! priority and weight, then their addresses) before giving up. The policy:
//!
//! - A REGISTER to the registrar in use that times out (Timer F), fails at
//!   the transport, gets a 503, or whose name does not resolve
//!   ([`unreachable`]): the next registrar is tried at once
//!   ([`RegistrationState::Failed`] with `retry_in` zero, then
//!   `Registering`). Once every registrar failed in a row, the round
//!   ends: the next starts with the first after `retry_base` doubling per
//!   round up to `retry_max` (RFC 5626 §4.5; a 503's Retry-After, if
//!   longer, is waited out). Any other failure (403, a failed digest…)
//!   means the registrar answers: it is retried after the back-off.
//! - Registered with a fallback, the endpoint tries to go back to the
//!   first registrar after [`RegistrationConfig::home_base`] (RFC 5626
//!   §4.5's base time when a flow still works: 90 s), doubling per failed
//!   try up to `retry_max`, each wait drawn between 50 and 100 % of that
//!   (§4.5). The try is a REGISTER to the first registrar while the
//!   fallback's binding stays refreshed; if it fails nothing changes; if
//!   it succeeds the endpoint uses the first registrar again. The
//!   fallback's binding is left to expire (removing it could remove the
//!   new one where both registrars share a location service).
//! - Requests routed through the registrar (no outbound proxy) go through
//!   the one in use, and fail over to the others in order (RFC 3263 §4.3)
//!   when it does not answer; requests inside a dialog keep their route.

use crate::message::headers::Contact;
use crate::message::Message;
use std::net::SocketAddr;
use std::time::Duration;

/// How an endpoint registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The registrar's URI (`sip:example.com`, `sip:192.0.2.1:5060;transport=tcp`);
    /// its host is resolved per RFC 3263. The preferred one of several.
    pub registrar: String,
    /// Further registrars, in order of preference, used when the ones
    /// before them stop answering (see the module's policy).
    pub fallbacks: Vec<String>,
    /// The registration interval asked for, in seconds (§10.2.1.1).
    pub expires: u32,
    /// The first retry delay after a failed registration; it doubles per
    /// failure up to [`retry_max`](Self::retry_max) (RFC 5626 §4.5).
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// Over TCP or TLS, a CRLF CRLF keep-alive on the registrar's
    /// connection this often while registered (RFC 5626 §3.5.1, §4.4.1),
    /// so that neither side's idle timer closes it (Kamailio's
    /// `tcp_connection_lifetime` is 120 s by default). `None`: none.
    pub keepalive: Option<Duration>,
    /// Registered with a fallback: the first wait before trying the first
    /// registrar again; it doubles per failed try up to
    /// [`retry_max`](Self::retry_max), each wait drawn between 50 and
    /// 100 % of that (RFC 5626 §4.5, base time 90 s when a flow works).
    pub home_base: Duration,
}

impl RegistrationConfig {
    /// Registration at `registrar` for an hour, retrying after 30 s up to
    /// 30 min.
    pub fn new(registrar: &str) -> RegistrationConfig {
        RegistrationConfig {
            registrar: registrar.to_owned(),
            fallbacks: Vec::new(),
            expires: 3600,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
            keepalive: Some(Duration::from_secs(90)),
            home_base: Duration::from_secs(90),
        }
    }

    /// The same, with `fallbacks` after the registrar, in order of
    /// preference.
    ///
    /// ```
    /// use sipline::endpoint::RegistrationConfig;
    /// let c = RegistrationConfig::new("sip:a.example.com").with_fallbacks(vec!["sip:b.example.com".into()]);
    /// assert_eq!(c.registrars().collect::<Vec<_>>(), ["sip:a.example.com", "sip:b.example.com"]);
    /// ```
    #[must_use]
    pub fn with_fallbacks(mut self, fallbacks: Vec<String>) -> RegistrationConfig {
        self.fallbacks = fallbacks;
        self
    }

    /// Every registrar, the preferred first.
    pub fn registrars(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.registrar.as_str()).chain(self.fallbacks.iter().map(String::as_str))
    }

    /// Registrar number `i` (0: the preferred), or the preferred one.
    pub(super) fn registrar_at(&self, i: usize) -> &str {
        i.checked_sub(1).and_then(|j| self.fallbacks.get(j)).map_or(self.registrar.as_str(), String::as_str)
    }

    /// How many registrars there are.
    pub(super) fn count(&self) -> usize {
        1 + self.fallbacks.len()
    }
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// Not registered (before the first REGISTER, after unregistering).
    Unregistered,
    /// A REGISTER is under way.
    Registering,
    /// The registrar holds our binding.
    Registered {
        /// The registrar that holds it (one of
        /// [`RegistrationConfig::registrars`]).
        registrar: String,
        /// The interval granted.
        expires: Duration,
        /// The Contact registered.
        contact: String,
        /// The public GRUU the registrar assigned (RFC 5627 §5.1).
        pub_gruu: Option<String>,
        /// The temporary GRUU the registrar assigned.
        temp_gruu: Option<String>,
    },
    /// Registering failed; another attempt follows after `retry_in` (zero:
    /// the next registrar is tried at once).
    Failed {
        /// Why.
        error: super::RequestError,
        /// When the next attempt goes.
        retry_in: Duration,
    },
    /// A REGISTER with `Expires: 0` is under way.
    Unregistering,
}

/// A registration under way: its identifiers (the same Call-ID and From
/// tag for every REGISTER, CSeq rising, §10.2.4) and timers.
pub(super) struct Registration {
    pub config: RegistrationConfig,
    pub call_id: String,
    pub tag: String,
    pub cseq: u32,
    /// The interval asked for (raised by a 423).
    pub expires: u32,
    /// Our address as the registrar sees it (RFC 3581).
    pub public: Option<SocketAddr>,
    pub state: RegistrationState,
    /// The REGISTER under way.
    pub request: Option<super::RequestId>,
    /// When to refresh (or retry).
    pub refresh_at: Option<std::time::Instant>,
    pub failures: u32,
    /// The connection to the registrar, pinned while registered.
    pub conn: Option<crate::transport::ConnId>,
    /// The registrar's (transport, address), once resolved.
    pub peer: Option<(crate::transport::Transport, SocketAddr)>,
    /// The Contact URI last sent.
    pub contact: String,
    /// When the next keep-alive goes.
    pub keepalive_at: Option<std::time::Instant>,
    /// The registrar (index into [`RegistrationConfig::registrars`]) the
    /// REGISTER under way, or the next, goes to.
    pub at: usize,
    /// The registrar that accepted the last REGISTER, while registered.
    pub bound: Option<usize>,
    /// Registrars that failed in a row since the last success or back-off.
    pub tried: usize,
    /// The REGISTER under way is a try to go back to the first registrar
    /// while `bound` is a fallback.
    pub returning: bool,
    /// When to try the first registrar again (while with a fallback).
    pub home_at: Option<std::time::Instant>,
    /// Failed tries to go back, since the last success there.
    pub home_failures: u32,
}

impl Registration {
    pub(super) fn new(config: RegistrationConfig, rng: &mut crate::rng::Rng) -> Registration {
        Registration {
            expires: config.expires,
            config,
            call_id: rng.hex(20),
            tag: rng.hex(10),
            cseq: 0,
            public: None,
            state: RegistrationState::Unregistered,
            request: None,
            refresh_at: None,
            failures: 0,
            conn: None,
            peer: None,
            contact: String::new(),
            keepalive_at: None,
            at: 0,
            bound: None,
            tried: 0,
            returning: false,
            home_at: None,
            home_failures: 0,
        }
    }
}

/// When to refresh a binding granted for `granted`: a minute before it
/// lapses, or halfway for short intervals — never after (a refresh may take
/// up to 64·T1 = 32 s to fail, §17.1.2.2).
pub(super) fn refresh_after(granted: Duration) -> Duration {
    if granted > Duration::from_secs(120) {
        granted.saturating_sub(Duration::from_secs(60))
    } else {
        granted / 2
    }
}

/// The delay before retry number `failures` (1 = the first).
pub(super) fn retry_after(config: &RegistrationConfig, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
    config.retry_base.saturating_mul(factor).min(config.retry_max)
}

/// How long to wait before try number `failures + 1` to go back to the
/// first registrar (RFC 5626 §4.5): `home_base · 2^failures` up to
/// `retry_max`, then 50–100 % of that by `draw` (the caller's seeded
/// generator).
pub(super) fn home_after(config: &RegistrationConfig, failures: u32, draw: u64) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    let wait = config.home_base.saturating_mul(factor).min(config.retry_max);
    // §4.5: "a random number between 50 and 100 percent of the wait".
    let percent = 50 + u32::try_from(draw % 51).unwrap_or(0);
    wait.saturating_mul(percent) / 100
}

/// Whether `error` says the registrar did not answer (RFC 3263 §4.3: a
/// timeout, a transport failure, a 503), or could not be found: the cases
/// that move a registration to the next registrar.
pub(super) fn unreachable(error: &super::RequestError) -> bool {
    use super::RequestError as E;
    match error {
        E::Timeout | E::ConnectionFailed(_) | E::Tls(_) | E::TooManyConnections | E::Resolve(_) => true,
        E::Failure(r) => r.code == 503,
        _ => false,
    }
}

/// What a 2xx to our REGISTER says about our binding (§10.2.4): the
/// interval granted (our Contact's `expires`, else the Expires header,
/// else what we asked) and the GRUUs, found by our instance id or Contact URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Granted {
    pub expires: Duration,
    pub pub_gruu: Option<String>,
    pub temp_gruu: Option<String>,
}

pub(super) fn granted(response: &Message<'_>, instance: Option<&str>, contact_uri: &str, asked: u32) -> Granted {
    let ours = response.contacts().filter_map(Result::ok).find(|c| {
        let by_instance = instance.is_some_and(|i| c.instance().is_some_and(|x| x == i));
        let by_uri = c.address().is_some_and(|a| a.uri().to_string().eq_ignore_ascii_case(contact_uri));
        by_instance || by_uri
    });
    let expires =
        ours.as_ref().and_then(Contact::expires).or_else(|| response.expires().and_then(Result::ok)).unwrap_or(asked);
    Granted {
        expires: Duration::from_secs(u64::from(expires)),
        pub_gruu: ours.as_ref().and_then(Contact::pub_gruu).map(std::borrow::Cow::into_owned),
        temp_gruu: ours.as_ref().and_then(Contact::temp_gruu).map(std::borrow::Cow::into_owned),
    }
}

/// The address the registrar saw us at (RFC 3581 `received` and `rport` in
/// the top Via of its response), if it says.
pub(super) fn public_address(response: &Message<'_>) -> Option<SocketAddr> {
    let via = response.vias().next()?.ok()?;
    let ip = via.received()?;
    let port = via.rport().flatten().or(via.port()).unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_before_expiry_with_room_for_a_failed_attempt() {
        assert_eq!(refresh_after(Duration::from_secs(3600)), Duration::from_secs(3540));
        assert_eq!(refresh_after(Duration::from_secs(121)), Duration::from_secs(61));
        assert_eq!(refresh_after(Duration::from_secs(60)), Duration::from_secs(30));
        assert_eq!(refresh_after(Duration::from_secs(1)), Duration::from_millis(500));
        for s in [1u64, 10, 61, 120, 121, 300, 3600, 86_400] {
            let g = Duration::from_secs(s);
            assert!(refresh_after(g) < g);
        }
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        let c = RegistrationConfig::new("sip:192.0.2.1");
        let delays: Vec<u64> = (1..=8).map(|n| retry_after(&c, n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        assert_eq!(retry_after(&c, 1000), Duration::from_secs(1800));
    }

    #[test]
    fn going_back_to_the_first_registrar_backs_off_with_jitter_5626_4_5() {
        let c = RegistrationConfig::new("sip:192.0.2.1");
        // draw 50 → 100 %, draw 0 → 50 %.
        let full: Vec<u64> = (0..6).map(|n| home_after(&c, n, 50).as_secs()).collect();
        assert_eq!(full, [90, 180, 360, 720, 1440, 1800]);
        assert_eq!(home_after(&c, 0, 0), Duration::from_secs(45));
        assert_eq!(home_after(&c, 1000, 101), Duration::from_secs(1800));
        for draw in 0..200 {
            let d = home_after(&c, 2, draw);
            assert!(d >= Duration::from_secs(180) && d <= Duration::from_secs(360), "{d:?}");
        }
    }

    #[test]
    fn registrars_in_order_of_preference() {
        let c = RegistrationConfig::new("sip:a").with_fallbacks(vec!["sip:b".into(), "sip:c".into()]);
        assert_eq!(c.count(), 3);
        assert_eq!([c.registrar_at(0), c.registrar_at(1), c.registrar_at(2)], ["sip:a", "sip:b", "sip:c"]);
        assert_eq!(c.registrar_at(9), "sip:a");
    }

    #[test]
    fn the_200_grants_our_binding_with_its_gruus() {
        let ok = b"SIP/2.0 200 OK\r\n\
            Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKr;received=192.0.2.99;rport=40123\r\n\
            From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>;tag=r\r\n\
            Call-ID: reg1\r\nCSeq: 2 REGISTER\r\n\
            Contact: <sip:alice@192.0.2.50:5060>;expires=3000\r\n\
            Contact: <sip:alice@10.0.0.5:5060>;expires=600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\";\
            pub-gruu=\"sip:alice@example.com;gr=urn:uuid:00000000-0000-1000-8000-000a95a0e128\";temp-gruu=\"sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@example.com;gr\"\r\n\
            Expires: 7200\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(ok).unwrap();
        let g = granted(&m, Some("<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"), "sip:nomatch@192.0.2.1", 3600);
        assert_eq!(g.expires, Duration::from_secs(600));
        assert_eq!(
            g.pub_gruu.as_deref(),
            Some("sip:alice@example.com;gr=urn:uuid:00000000-0000-1000-8000-000a95a0e128")
        );
        assert_eq!(g.temp_gruu.as_deref(), Some("sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@example.com;gr"));
        // Found by URI when there is no instance id; the Expires header
        // when the Contact has no expires; what was asked otherwise.
        let g = granted(&m, None, "sip:alice@192.0.2.50:5060", 3600);
        assert_eq!((g.expires, g.pub_gruu), (Duration::from_secs(3000), None));
        let g = granted(&m, None, "sip:bob@192.0.2.1", 3600);
        assert_eq!(g.expires, Duration::from_secs(7200));
        assert_eq!(public_address(&m), Some("192.0.2.99:40123".parse().unwrap()));
    }
}
