//! Overload control for the server role (issue 19): past capacity, new
//! work is refused early and cheaply with `503 Service Unavailable` and
//! `Retry-After` (RFC 3261 §21.5.4, §20.33), work already accepted goes
//! on, and registration refreshes are preferred over new calls.
//!
//! # The load signal: queueing delay
//!
//! The core reads no clock, so it cannot see a queue build up by itself.
//! The runtime tells it: [`Endpoint::handle_datagram_received`] carries
//! the instant a datagram reached the process (the runtime stamps it when
//! it reads it from the socket) besides the instant it is handled. The
//! difference is the time the message waited — in the socket buffer, in
//! a batch read, behind other work. It is the signal that matters for
//! SIP: a request that waited longer than T1 has been retransmitted by a
//! UDP client already (§17.1.1.2, §17.1.2.2), so every message of a
//! server that falls behind by more than T1 multiplies; this is the
//! congestion collapse of RFC 7339 §1 (and RFC 5390).
//!
//! Each new request is judged by its *own* waiting time (when the runtime
//! stamped it): the most recent measure there is, with no lag, so the
//! queue settles just below the threshold and the server never idles
//! while requests wait (a lagging average keeps refusing after the queue
//! drained, and the server goes idle). A smoothed delay (an exponentially
//! weighted average, forgotten after a quiet spell) is kept too: it
//! judges requests that came without a stamp (stream messages, when
//! datagrams are stamped), and it is what [`OverloadStats`] reports. A
//! message handed in by [`Endpoint::handle_datagram`] carries no delay:
//! an endpoint whose runtime never stamps is never overloaded.
//!
//! # The policy
//!
//! With `D` the configured delay ([`OverloadConfig::delay`], `T1/2` by
//! default), a new request that waited longer than:
//!
//! - `D`: is refused if it would start new work other than a
//!   registration — INVITE, MESSAGE, SUBSCRIBE, OPTIONS, any request
//!   without a To tag;
//! - `1.25·D`: also if it is a REGISTER for an address of record that has
//!   no binding yet (a new registration);
//! - `1.5·D`: also if it is a REGISTER refreshing an
//!   existing registration. A refresh refused makes a phone unreachable
//!   once its binding expires, and it costs one registrar update; a new
//!   call costs a whole proxied transaction and dialog. So refreshes go
//!   on longest (a choice of ours: RFC 3261 §21.5.4 and RFC 7339 leave
//!   what to refuse to the server);
//! - `2·D` (T1 by default): also if it carries credentials (`Authorization`,
//!   `Proxy-Authorization`, §22): the second half of a digest round whose
//!   first half (the challenge) was already paid for. Refusing it would
//!   waste that; it is bounded all the same, since anyone can send
//!   credentials.
//!
//! So nothing waits much past T1: a request answered within T1 is not
//! retransmitted (§17.1.1.2), and the queue holds only work that can
//! finish in time. (Refusing later, the queue sits past T1, every
//! request in it is retransmitted once more, and goodput at 4× offered
//! load loses a few percent to parsing copies: `overload_sim`.)
//!
//! Never refused: responses, ACK (never answered, §17.1.1.3), CANCEL and
//! requests with a To tag (they finish work already accepted: ending a
//! call frees the server), and retransmissions of a request whose server
//! transaction is held — the transaction layer absorbs those before any
//! of this runs (§17.2.3), as cheaply as without overload.
//!
//! A refused request costs a server transaction and no more: the `503` is
//! sent through it (§16.7/§17.2: a stateful element answers statefully),
//! so its retransmissions get the `503` again from the transaction and an
//! INVITE's ACK is absorbed there; no proxy context, no authentication,
//! no location lookup.
//!
//! `Retry-After` (§20.33) is drawn from `[retry_after, 2·retry_after)`
//! with the endpoint's seeded generator, so refused clients do not all
//! come back in the same second.
//!
//! # RFC 7339
//!
//! A client that takes part in overload control puts `oc` in its Via
//! (RFC 7339 §4, §5.1). While overloaded, every response this endpoint
//! builds for such a client carries, in that (top) Via (§5.2), the
//! loss-based algorithm's feedback (§7): `oc=` the percentage of new
//! requests it should drop (what we refused over the last window of
//! `oc-validity`), `oc-algo="loss"` (the algorithm every implementation
//! supports), `oc-validity=` how long the value holds (ms), `oc-seq=` a
//! number that grows with each new value (`1*12DIGIT "." 1*5DIGIT`, §9;
//! counted from the first message this endpoint judged). After the
//! overload, until the last value sent expires, responses carry
//! `oc=0;oc-validity=0` so clients stop throttling at once rather than
//! when the old value runs out. Responses relayed from downstream keep
//! what the downstream server put there (not ours to change).

use super::{Arrived, Endpoint, UNAVAILABLE};
use crate::message::{Message, Method, Uri};
use crate::transaction::ServerId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When the server role refuses new work (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverloadConfig {
    /// `D`: new non-REGISTER requests that waited longer than this are
    /// refused; new registrations past `1.25·D`, refreshes past `1.5·D`,
    /// answers to a challenge past `2·D` (module docs).
    pub delay: Duration,
    /// `Retry-After` is drawn from `[retry_after, 2·retry_after)`, in
    /// whole seconds (at least 1).
    pub retry_after: Duration,
    /// How long an RFC 7339 `oc` value holds (`oc-validity`), and how long
    /// without a refusal ends an overload.
    pub validity: Duration,
}

impl OverloadConfig {
    /// Refusing past `delay` (see [`delay`](Self::delay)), `Retry-After`
    /// of 5–9 s, one-second validity.
    ///
    /// ```
    /// use sipline::endpoint::OverloadConfig;
    /// use std::time::Duration;
    /// let c = OverloadConfig::new(Duration::from_millis(100));
    /// assert_eq!(c.delay, Duration::from_millis(100));
    /// ```
    pub fn new(delay: Duration) -> OverloadConfig {
        OverloadConfig { delay, retry_after: Duration::from_secs(5), validity: Duration::from_secs(1) }
    }

    /// The defaults for a timer `t1` (RFC 3261 §17.1.1.1): `D = T1/2`, so a
    /// request is answered before its client's first retransmission.
    ///
    /// ```
    /// use sipline::endpoint::OverloadConfig;
    /// use std::time::Duration;
    /// assert_eq!(OverloadConfig::for_t1(Duration::from_millis(500)).delay, Duration::from_millis(250));
    /// ```
    pub fn for_t1(t1: Duration) -> OverloadConfig {
        OverloadConfig::new(t1 / 2)
    }
}

impl Default for OverloadConfig {
    /// [`OverloadConfig::for_t1`] of the default T1, 500 ms: `D` = 250 ms.
    fn default() -> OverloadConfig {
        OverloadConfig::for_t1(Duration::from_millis(500))
    }
}

/// What overload control has done ([`Endpoint::overload_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverloadStats {
    /// Requests refused with 503 for overload, in all.
    pub rejected: u64,
    /// Overloads begun (a first refusal after a quiet spell).
    pub episodes: u64,
    /// Overloaded at the last message handled (a refusal within the
    /// last [`OverloadConfig::validity`]).
    pub overloaded: bool,
    /// The smoothed queueing delay at the last stamped message.
    pub delay: Duration,
    /// Request datagrams dropped unread because they had waited past
    /// `2·T1`: their senders' retransmissions were already queued behind
    /// them.
    pub dropped: u64,
}

/// What a new request would start, for the policy (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Finishes work already accepted: CANCEL, ACK, a To tag.
    Finishing,
    /// A request with credentials: the answer to our challenge.
    Answer,
    /// A REGISTER for an AOR with a binding.
    Refresh,
    /// A REGISTER for an AOR without one.
    Registration,
    /// Anything else.
    New,
}

impl Work {
    /// How many quarters of `D` a request of this kind may wait before it
    /// is refused.
    fn quarters(self) -> Option<u32> {
        match self {
            Work::Finishing => None,
            Work::New => Some(4),
            Work::Registration => Some(5),
            Work::Refresh => Some(6),
            Work::Answer => Some(8),
        }
    }
}

/// The overload state of an endpoint.
#[derive(Debug, Default)]
pub(super) struct Overload {
    /// The waiting time of the message being handled, when stamped.
    current: Option<Duration>,
    /// Smoothed waiting time (EWMA, weight 1/4), in nanoseconds.
    smoothed: u64,
    /// When the last stamped message was handled.
    last_sample: Option<Instant>,
    /// The instant `oc-seq` counts from (the first message judged).
    epoch: Option<Instant>,
    /// The last `oc-seq`, in units of 10 µs since `epoch`.
    seq: u64,
    /// The `oc` value `seq` belongs to.
    seq_value: Option<u8>,
    /// Until when clients are told `oc=0` after an overload.
    oc_until: Option<Instant>,
    /// An `oc` value went out in this overload (so its end is told).
    oc_sent: bool,
    /// The last refusal.
    last_reject: Option<Instant>,
    overloaded: bool,
    rejected: u64,
    /// Stale request copies dropped unread.
    dropped: u64,
    episodes: u64,
    /// Refusals at the start of this episode (for the closing log line).
    episode_start_rejected: u64,
    /// The window the `oc` percentage is measured over: its start, the
    /// new requests judged and refused in it.
    window: Option<Instant>,
    window_seen: u64,
    window_rejected: u64,
    /// The percentage refused in the last whole window.
    last_percent: u8,
}

impl Overload {
    /// A stamped message is being handled at `now`, after waiting `delay`.
    fn sample(&mut self, now: Instant, delay: Duration, config: &OverloadConfig) {
        let d = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        // After a quiet spell the old average says nothing about now.
        let quiet = config.delay.saturating_mul(4);
        let fresh = self.last_sample.is_some_and(|t| now.saturating_duration_since(t) < quiet);
        self.smoothed = if fresh { self.smoothed - self.smoothed / 4 + d / 4 } else { d };
        self.last_sample = Some(now);
        self.current = Some(delay);
    }

    /// The waiting time to judge the message being handled by: its own,
    /// else the smoothed one if recent, else none (not overloaded).
    fn delay(&self, now: Instant, config: &OverloadConfig) -> Option<Duration> {
        if let Some(d) = self.current {
            return Some(d);
        }
        let recent =
            self.last_sample.is_some_and(|t| now.saturating_duration_since(t) < config.delay.saturating_mul(4));
        recent.then(|| Duration::from_nanos(self.smoothed))
    }

    /// Ends an overload quiet for `validity`, and rolls the `oc` window.
    fn tick(&mut self, now: Instant, config: &OverloadConfig) {
        self.epoch.get_or_insert(now);
        let start = *self.window.get_or_insert(now);
        if now.saturating_duration_since(start) >= config.validity {
            self.last_percent = percent(self.window_rejected, self.window_seen);
            self.window = Some(now);
            self.window_seen = 0;
            self.window_rejected = 0;
        }
        if self.overloaded && self.last_reject.is_none_or(|t| now.saturating_duration_since(t) >= config.validity) {
            self.overloaded = false;
            if std::mem::take(&mut self.oc_sent) {
                self.oc_until = Some(now + config.validity);
            }
            tracing::info!(
                target: "sipline::serve",
                refused = self.rejected - self.episode_start_rejected,
                delay_ms = self.smoothed / 1_000_000,
                "overload over: new requests taken again"
            );
        }
    }

    /// A request was refused at `now`, having waited `delay`.
    fn refused(&mut self, now: Instant, delay: Duration, config: &OverloadConfig) {
        self.rejected += 1;
        self.window_rejected += 1;
        self.last_reject = Some(now);
        if !self.overloaded {
            self.overloaded = true;
            self.episodes += 1;
            self.episode_start_rejected = self.rejected - 1;
            tracing::warn!(
                target: "sipline::serve",
                waited_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                limit_ms = u64::try_from(config.delay.as_millis()).unwrap_or(u64::MAX),
                "overload: new requests refused with 503"
            );
        }
    }

    /// The RFC 7339 `oc` value now: the share of new requests refused
    /// (the last whole window, or this one if more), at least 1 while
    /// overloaded.
    fn oc_percent(&self) -> u8 {
        let now_percent = percent(self.window_rejected, self.window_seen);
        now_percent.max(self.last_percent).max(1)
    }

    /// The Via parameters for a response to an `oc` client (module docs),
    /// if any are due.
    fn via_params(&mut self, now: Instant, config: &OverloadConfig) -> Option<String> {
        let epoch = *self.epoch.get_or_insert(now);
        let (value, validity) = if self.overloaded {
            (self.oc_percent(), config.validity)
        } else if self.oc_until.is_some_and(|t| now < t) {
            (0, Duration::ZERO)
        } else {
            return None;
        };
        // §5.2: oc-seq grows with every new value (and never repeats).
        if self.seq_value != Some(value) {
            let at = u64::try_from(now.saturating_duration_since(epoch).as_micros() / 10).unwrap_or(u64::MAX);
            self.seq = at.max(self.seq + 1);
            self.seq_value = Some(value);
        }
        self.oc_sent |= self.overloaded;
        let ms = validity.as_millis();
        Some(format!(
            ";oc={value};oc-algo=\"loss\";oc-validity={ms};oc-seq={}.{:05}",
            self.seq / 100_000,
            self.seq % 100_000
        ))
    }
}

/// `part` of `whole` in percent, rounded up, 0–100.
fn percent(part: u64, whole: u64) -> u8 {
    if whole == 0 {
        return 0;
    }
    u8::try_from((part.saturating_mul(100)).div_ceil(whole).min(100)).unwrap_or(100)
}

/// Whether the top Via of `m` asks for overload control (RFC 7339 §5.1:
/// an `oc` parameter, with or without a value).
pub fn wants_overload_control(m: &Message<'_>) -> bool {
    m.via().and_then(Result::ok).is_some_and(|v| v.params().contains("oc"))
}

/// The RFC 7339 parameters, which the server sets (replacing the
/// client's valueless `oc` and its `oc-algo` list, §5.2).
const OC_PARAMS: [&str; 4] = ["oc", "oc-algo", "oc-validity", "oc-seq"];

/// Sets `params` (`;name=value…`) on the first Via value of `response`
/// (the client's, copied from its request, §8.2.6.2), in place of any
/// RFC 7339 parameters it had; `false` if it has no Via.
fn set_oc_params(response: &mut Vec<u8>, params: &str) -> bool {
    let Some(start) = find_via_line(response) else { return false };
    let Some(len) = response[start..].windows(2).position(|w| w == b"\r\n") else { return false };
    let line = &response[start..start + len];
    // The value's parameters, split at `;` and ending at `,` (another
    // value), outside quotes.
    let mut quoted = false;
    let mut cuts = Vec::new();
    let mut end = line.len();
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => cuts.push(i),
            b',' if !quoted => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    while end > 0 && matches!(line[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    cuts.push(end);
    let mut value = line[..cuts[0]].to_vec();
    for pair in cuts.windows(2) {
        let param = &line[pair[0]..pair[1]];
        let name = param[1..].split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
        if !OC_PARAMS.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes())) {
            value.extend_from_slice(param);
        }
    }
    value.extend_from_slice(params.as_bytes());
    response.splice(start..start + end, value);
    true
}

/// Where the value of the first Via header field of a message starts.
fn find_via_line(bytes: &[u8]) -> Option<usize> {
    let mut pos = bytes.windows(2).position(|w| w == b"\r\n")? + 2;
    while pos < bytes.len() && !bytes[pos..].starts_with(b"\r\n") {
        let len = bytes[pos..].windows(2).position(|w| w == b"\r\n")?;
        let line = &bytes[pos..pos + len];
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line[..colon].trim_ascii();
            if name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v") {
                let skip = line[colon + 1..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
                return Some(pos + colon + 1 + skip);
            }
        }
        pos += len + 2;
    }
    None
}

impl Endpoint {
    /// A datagram arrived, read from the socket at `received_at` and
    /// handled at `now`: the same as [`handle_datagram`](Self::handle_datagram),
    /// and `now - received_at` is how long it waited, the server role's
    /// overload signal ([`super::ServerConfig::overload`]; module docs of
    /// `overload`). Runtimes stamp each datagram as they read it and call
    /// this; an endpoint that is not serving ignores the stamp.
    pub fn handle_datagram_received(
        &mut self,
        now: Instant,
        received_at: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        if let Some(config) = self.overload_config() {
            let now = self.last_now.map_or(now, |l| l.max(now));
            let waited = now.saturating_duration_since(received_at);
            self.overload.sample(now, waited, &config);
            // §17.1.1.2, §17.1.2.2: a UDP client sends its request again
            // after T1, 2·T1, …; a copy that waited 2·T1 has a newer one
            // queued behind it (or its sender gave up). Reading it only
            // takes time from the work that can still finish: deep in an
            // overload, stale copies go unread, before any parse. ACKs
            // and responses are never dropped (they finish accepted work).
            if waited >= 2 * self.config.timers.t1 && is_request_copy(bytes) {
                self.overload.dropped += 1;
                return;
            }
        }
        self.handle_datagram(now, local, remote, bytes);
        self.overload.current = None;
    }

    /// The overload policy, when serving with one.
    fn overload_config(&self) -> Option<OverloadConfig> {
        self.config.server.as_ref().and_then(|c| c.overload)
    }

    /// What overload control has done, when serving with it.
    pub fn overload_stats(&self) -> Option<OverloadStats> {
        self.overload_config()?;
        let o = &self.overload;
        Some(OverloadStats {
            rejected: o.rejected,
            episodes: o.episodes,
            overloaded: o.overloaded,
            delay: Duration::from_nanos(o.smoothed),
            dropped: o.dropped,
        })
    }

    /// A new request (its server transaction just made): `true` if it was
    /// refused for overload (answered 503 through that transaction).
    /// Judged before any other work (authentication, location, proxy).
    pub(super) fn overload_refuses(
        &mut self,
        now: Instant,
        server: ServerId,
        request: &Arc<[u8]>,
        arrived: Arrived<'_, '_>,
    ) -> bool {
        let Some(config) = self.overload_config() else { return false };
        self.overload.tick(now, &config);
        self.overload.window_seen += 1;
        let Some(delay) = self.overload.delay(now, &config) else { return false };
        // The common case, below the lowest threshold: nothing to read.
        if delay <= config.delay {
            return false;
        }
        match arrived {
            Some((bytes, m)) if bytes == &request[..] => self.overload_judge(now, server, m, delay, &config),
            _ => match Message::parse(request) {
                Ok(m) => self.overload_judge(now, server, &m, delay, &config),
                Err(_) => false,
            },
        }
    }

    fn overload_judge(
        &mut self,
        now: Instant,
        server: ServerId,
        m: &Message<'_>,
        delay: Duration,
        config: &OverloadConfig,
    ) -> bool {
        let work = self.work_of(now, m, delay, config);
        let Some(quarters) = work.quarters() else { return false };
        if delay <= config.delay.saturating_mul(quarters) / 4 {
            return false;
        }
        self.overload.refused(now, delay, config);
        let base = config.retry_after.as_secs().max(1);
        let retry = base + self.rng.next_u64() % base;
        let retry = retry.to_string();
        self.answer_with(now, server, m, UNAVAILABLE, "Service Unavailable", &[("Retry-After", &retry)]);
        true
    }

    /// What `m` would start (module docs); the registrar is asked only
    /// when it matters (a REGISTER that waited past `1.25·D`).
    fn work_of(&self, now: Instant, m: &Message<'_>, delay: Duration, config: &OverloadConfig) -> Work {
        let tagged = m.to().and_then(Result::ok).is_some_and(|t| t.tag().is_some());
        let answer = m.authorization().next().is_some() || m.proxy_authorization().next().is_some();
        match m.method() {
            Some(Method::Ack | Method::Cancel) => Work::Finishing,
            _ if tagged => Work::Finishing,
            _ if answer => Work::Answer,
            Some(Method::Register) => {
                if delay <= config.delay.saturating_mul(5) / 4 {
                    return Work::Registration;
                }
                let bound = self.server.as_ref().is_some_and(|s| {
                    let registrar = s.registrar();
                    let to = m.to().and_then(Result::ok).map(|t| t.uri().as_str().to_owned());
                    let aor = to.as_deref().and_then(|u| Uri::parse(u).ok()).and_then(|u| registrar.local_aor(&u));
                    aor.is_some_and(|aor| {
                        use crate::registrar::Location as _;
                        !registrar.location().bindings(&aor, now).is_empty()
                    })
                });
                if bound {
                    Work::Refresh
                } else {
                    Work::Registration
                }
            }
            _ => Work::New,
        }
    }

    /// Adds the RFC 7339 Via parameters to `response`, an answer to `m`,
    /// if `m`'s client asked for overload control and some are due.
    pub(super) fn overload_mark(&mut self, now: Instant, m: &Message<'_>, response: &mut Vec<u8>) {
        let Some(config) = self.overload_config() else { return };
        if !wants_overload_control(m) {
            return;
        }
        self.overload.tick(now, &config);
        if let Some(params) = self.overload.via_params(now, &config) {
            set_oc_params(response, &params);
        }
    }
}

/// A request other than ACK, by its first bytes (no parse): what a sender
/// retransmits until answered.
fn is_request_copy(bytes: &[u8]) -> bool {
    !bytes.starts_with(b"SIP/") && !bytes.starts_with(b"ACK ") && bytes.first().is_some_and(u8::is_ascii_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_go_at_the_end_of_the_first_via_value() {
        let mut r = b"SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1;oc;oc-algo=\"loss,A;B\";rport=5\r\nVia: SIP/2.0/UDP b;oc\r\n\r\n".to_vec();
        assert!(set_oc_params(&mut r, ";oc=10;oc-algo=\"loss\""));
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.contains(
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1;rport=5;oc=10;oc-algo=\"loss\"\r\nVia: SIP/2.0/UDP b;oc\r\n"
            ),
            "{text}"
        );

        let mut r = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;OC ;oc-seq=1.2 , SIP/2.0/UDP b\r\n\r\n".to_vec();
        assert!(set_oc_params(&mut r, ";oc=0"));
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("v: SIP/2.0/UDP a;oc=0 , SIP/2.0/UDP b\r\n"), "{text}");

        let mut r = b"SIP/2.0 200 OK\r\nTo: <sip:a@b>\r\n\r\n".to_vec();
        assert!(!set_oc_params(&mut r, ";x"));
    }

    #[test]
    fn percent_rounds_up_and_caps() {
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(1, 3), 34);
        assert_eq!(percent(5, 5), 100);
        assert_eq!(percent(9, 5), 100);
    }
}
