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
//! With `D` the configured delay ([`OverloadConfig::delay`], `T1/4` by
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
//! - `3·D` (`0.75·T1` by default): also if it carries credentials
//!   (`Authorization`, `Proxy-Authorization`, §22): the second half of a
//!   digest round whose first half (the challenge) was already paid for.
//!   The queue settles near the threshold of the new work it takes (at
//!   most `1.5·D`), well below this one, so an answer to a challenge is
//!   refused only when answers alone would overflow the server — bounded
//!   all the same, since anyone can send credentials.
//!
//! Outside an overload (no refusal for [`OverloadConfig::validity`]) these
//! thresholds are doubled, up to the highest (`2·D` for new work, `2.5·D`
//! for a new registration, `3·D` for a refresh or an answer): a burst is
//! let through, and the first refusal of an overload waits for a queue
//! twice as long; from there on the thresholds above hold until the
//! overload ends. (At exactly the capacity, Poisson arrivals queue past `D`
//! now and then; refusing there costs goodput that a longer queue keeps.
//! And an idle server refuses nothing that waited less than `2·D`, `T1/2`
//! by default.)
//!
//! So nothing waits until T1: a request answered within T1 is not
//! retransmitted (§17.1.1.2), a response relayed or an ACK handled within
//! T1 is not retransmitted by its sender either (§17.2.1 Timer G), and
//! the queue holds only work that can finish in time. (With thresholds
//! reaching T1 — `D = T1/2`, answers to `2·D` — the queue sat near T1,
//! and at 4× offered load 7 % of the server's time went to copies of
//! requests and responses, ACKs of 503s sent again and challenges whose
//! answers were then refused: `overload_sim`.)
//!
//! Never refused: responses, ACK (never answered, §17.1.1.3), CANCEL and
//! requests with a To tag (they finish work already accepted: ending a
//! call frees the server), and retransmissions of a request whose server
//! transaction is held — the transaction layer absorbs those (§17.2.3),
//! as cheaply as without overload.
//!
//! # Refusing without state
//!
//! A refusal must cost far less than the work it saves, or at 4× offered
//! load reading and refusing three requests for every one taken eats the
//! capacity. So a stamped datagram is first *glanced* at
//! ([`OverloadConfig::stateless`], on by default): the method from the
//! request line, and, found line by line without parsing their values,
//! the Via, From, To, Call-ID and CSeq fields a response copies (§8.2.6.2)
//! and whether credentials are present. A request is identified by its
//! method (ACK standing for INVITE) and its top Via value as sent, hashed
//! with a key of the endpoint's: a retransmission repeats that value, and
//! the ACK of a non-2xx response copies it (§17.1.1.3). Values are parsed
//! only to refuse: the top Via (its branch and sent-by, to find a held
//! transaction, §17.2.3) and, for a REGISTER, the To address. This runs
//! only while it can matter: for a request that waited past `D`, and,
//! while refusals are remembered (below), for every request.
//!
//! A request the policy refuses is answered there, before the full parse,
//! without a server transaction, as a stateless UAS does (§8.2.7): the To
//! tag is a function of the request's identity, so the same request
//! always gets the same tag, and the top Via is stamped with
//! `received`/`rport` as the transport would (§18.2.1, RFC 3581). The
//! refusal is remembered by that identity, with its `Retry-After`, for
//! `64·T1` (as long as a client retransmits, §17.1.1.2) and at most 65 536
//! of them: a retransmission of a refused request gets the same 503 again
//! (§17.2.1, §17.2.2: what its transaction would have sent) however long
//! it waited, and the ACK of a refused INVITE is absorbed there (§8.2.7:
//! a stateless UAS ignores ACK; §17.2.1) — a table lookup each, no parse,
//! no transaction, no timer. A request refused and forgotten (the table
//! full) is judged afresh, as a stateless server judges every request; an
//! ACK that does not repeat its INVITE's top Via byte for byte goes the
//! full way, as one without a transaction.
//!
//! Anything the glance cannot settle goes the full way, judged there by
//! the same policy: a request without an RFC 3261 branch, without the
//! fields a response copies, arriving while shutting down; stream
//! messages; and, with `stateless` off, every request — refused through a
//! server transaction (§16.7/§17.2: as a stateful element answers).
//! `benches/overload.rs` measures what each costs.
//!
//! `Retry-After` (§20.33) grows with the overload, so that refused clients
//! come back spread over a time in proportion to it: with `p` the share of
//! new requests refused over the last whole `oc-validity` window (the
//! `oc` value below; at most 95 %), it is drawn
//! from `[b, 2·b)` whole seconds with `b = retry_after / (1 − p)` — 5–9 s
//! at the start of an overload, 20–39 s when three requests in four are
//! refused. The draw is the endpoint's seeded generator for a stateful
//! refusal, the request's identity for a stateless one (remembered with
//! it: a retransmission reads the same value).
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
//! what the downstream server put there (not ours to change). A 503 sent
//! again to a retransmission carries the values current then.

use super::{Arrived, Endpoint, UNAVAILABLE};
use crate::message::grammar::{is_token, is_wsp, offset_of, trim};
use crate::message::headers::{Address, HeaderValue, ListIter, Via, MAGIC_COOKIE};
use crate::message::{HeaderName, Message, Method, Salvaged};
use crate::transaction::{has_tag, ServerId};
use crate::transport::{stamped_via, Peer, Source, Transport};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When the server role refuses new work: during an overload, new requests
/// that waited longer than a delay get a stateless 503 with Retry-After (RFC
/// 3261 §21.5.4, RFC 7339).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverloadConfig {
    /// `D`: during an overload, new non-REGISTER requests that waited
    /// longer than this are refused; new registrations past `1.25·D`,
    /// refreshes past `1.5·D`, answers to a challenge past `3·D`. The first
    /// refusal of an overload takes twice as long (up to `3·D`; module
    /// docs).
    pub delay: Duration,
    /// The least `Retry-After`, in whole seconds (at least 1): it is drawn
    /// from `[b, 2·b)`, `b` this over the share of new requests not refused
    /// (module docs).
    pub retry_after: Duration,
    /// How long an RFC 7339 `oc` value holds (`oc-validity`), and how long
    /// without a refusal ends an overload.
    pub validity: Duration,
    /// Refuse from a glance at the datagram, before the full parse and
    /// without a server transaction (§8.2.7), remembering the refusal so
    /// that retransmissions get the same 503 and ACKs are absorbed (module
    /// docs, "Refusing without state"); `false`: refuse after the full
    /// parse, through a server transaction. On by default.
    pub stateless: bool,
}

impl OverloadConfig {
    /// Refusing past `delay` (see [`delay`](Self::delay)), statelessly,
    /// `Retry-After` from 5–9 s, one-second validity.
    ///
    /// ```
    /// use sipline::endpoint::OverloadConfig;
    /// use std::time::Duration;
    /// let c = OverloadConfig::new(Duration::from_millis(100));
    /// assert_eq!(c.delay, Duration::from_millis(100));
    /// ```
    pub fn new(delay: Duration) -> OverloadConfig {
        OverloadConfig { delay, retry_after: Duration::from_secs(5), validity: Duration::from_secs(1), stateless: true }
    }

    /// The defaults for a timer `t1` (RFC 3261 §17.1.1.1): `D = T1/4`, so
    /// that even an answer to a challenge, taken up to `3·D`, is answered
    /// before its client's first retransmission.
    ///
    /// ```
    /// use sipline::endpoint::OverloadConfig;
    /// use std::time::Duration;
    /// assert_eq!(OverloadConfig::for_t1(Duration::from_millis(500)).delay, Duration::from_millis(125));
    /// ```
    pub fn for_t1(t1: Duration) -> OverloadConfig {
        OverloadConfig::new(t1 / 4)
    }
}

impl Default for OverloadConfig {
    /// [`OverloadConfig::for_t1`] of the default T1, 500 ms: `D` = 125 ms.
    fn default() -> OverloadConfig {
        OverloadConfig::for_t1(Duration::from_millis(500))
    }
}

/// What overload control has done ([`Endpoint::overload_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverloadStats {
    /// Requests refused with 503 for overload, in all (retransmissions of
    /// a refused request answered again not counted).
    pub rejected: u64,
    /// Of those, refused statelessly, from a glance (module docs).
    pub stateless: u64,
    /// Retransmissions of statelessly refused requests answered with their
    /// 503 again, and ACKs of such refusals absorbed, from a glance.
    pub absorbed: u64,
    /// Request datagrams glanced at before their full parse.
    pub screened: u64,
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
            Work::Answer => Some(12),
        }
    }

    /// Whether a request of this kind that waited `delay` is refused;
    /// `calm`: no overload going on, the thresholds doubled up to the
    /// highest (module docs).
    fn refused_after(self, delay: Duration, config: &OverloadConfig, calm: bool) -> bool {
        let top = Work::Answer.quarters().unwrap_or(12);
        let quarters = self.quarters().map(|q| if calm { (2 * q).min(top) } else { q });
        quarters.is_some_and(|q| delay > config.delay.saturating_mul(q) / 4)
    }
}

/// How many stateless refusals are remembered at most (module docs).
const REFUSED_MAX: usize = 65_536;

/// Requests refused statelessly, by a keyed hash of what identifies them
/// ([`key_hash`]), with the `Retry-After` each was sent.
#[derive(Debug, Default)]
struct Refusals {
    /// A hash table: the keys are hashes already (a tree of 65 536 of them
    /// cost more than the rest of a refusal).
    by_key: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// (refused at, key), oldest first.
    order: VecDeque<(Instant, u64)>,
    /// The hash key, drawn from the endpoint's generator at first use.
    salt: Option<u64>,
}

impl Refusals {
    /// Forgets refusals older than `keep`, and the oldest beyond room for
    /// one more.
    fn expire(&mut self, now: Instant, keep: Duration) {
        while let Some(&(at, key)) = self.order.front() {
            if now.saturating_duration_since(at) < keep && self.order.len() < REFUSED_MAX {
                break;
            }
            self.order.pop_front();
            self.by_key.remove(&key);
        }
    }

    fn insert(&mut self, now: Instant, key: u64, retry: u32) {
        if self.by_key.insert(key, retry).is_none() {
            self.order.push_back((now, key));
        }
    }
}

/// The hasher of [`Refusals`]: its keys are hashes, taken as they are.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What identifies a request refused here: its method (ACK standing for
/// INVITE) and its top Via value as sent (its branch, §17.2.3; a
/// retransmission repeats it, and the ACK of a non-2xx copies it,
/// §17.1.1.3), hashed with `salt`: eight bytes at a time, each round
/// finished with the SplitMix64 finaliser. Read raw, so that a copy or an
/// ACK is recognised without a parse.
fn key_hash(salt: u64, method: &str, top_via: &[u8]) -> u64 {
    let mut h = mix(salt ^ method.len() as u64);
    let mut eat = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(word));
    };
    method.as_bytes().chunks(8).for_each(&mut eat);
    eat(&top_via.len().to_le_bytes());
    top_via.chunks(8).for_each(&mut eat);
    h
}

/// `x` as 16 lower-case hex digits.
fn hex16(x: u64) -> String {
    (0..16).rev().map(|i| char::from(b"0123456789abcdef"[((x >> (4 * i)) & 0xf) as usize])).collect()
}

/// The SplitMix64 finaliser: every bit of `x` moves every bit of the result.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the glance reads of a request (module docs): the fields a
/// response copies (§8.2.6.2), raw (trimmed of surrounding whitespace),
/// and whether credentials are present (§22). No value is parsed.
#[derive(Debug, Default)]
struct Glance<'a> {
    vias: Vec<&'a [u8]>,
    from: Option<&'a [u8]>,
    to: Option<&'a [u8]>,
    call_id: Option<&'a [u8]>,
    cseq: Option<&'a [u8]>,
    credentials: bool,
}

impl<'a> Glance<'a> {
    /// Reads the header section of `bytes`, whose first line (the request
    /// line) is skipped; lines that are not `name: value` are skipped too.
    fn scan(bytes: &'a [u8]) -> Glance<'a> {
        let mut g = Glance::default();
        let Some(first) = memchr::memchr(b'\n', bytes) else { return g };
        let mut rest = &bytes[first + 1..];
        while !rest.is_empty() {
            // A logical line: up to a line end not followed by a fold.
            let mut from = 0;
            let (end, next) = loop {
                match memchr::memchr(b'\n', &rest[from..]) {
                    None => break (rest.len(), rest.len()),
                    Some(n) => {
                        let e = from + n;
                        let content = rest[..e].strip_suffix(b"\r").unwrap_or(&rest[..e]);
                        if !content.is_empty() && rest.get(e + 1).is_some_and(|&c| is_wsp(c)) {
                            from = e + 1;
                            continue;
                        }
                        break (e, e + 1);
                    }
                }
            };
            let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
            rest = &rest[next..];
            if line.is_empty() {
                break; // the end of the header section
            }
            let n = line.iter().take_while(|&&c| is_token(c)).count();
            let colon = n + line[n..].iter().take_while(|&&c| is_wsp(c)).count();
            if n == 0 || line.get(colon) != Some(&b':') {
                continue;
            }
            let value = trim(&line[colon + 1..]);
            match HeaderName::from_token(&line[..n]) {
                HeaderName::Via => g.vias.push(value),
                HeaderName::From => g.from = g.from.or(Some(value)),
                HeaderName::To => g.to = g.to.or(Some(value)),
                HeaderName::CallId => g.call_id = g.call_id.or(Some(value)),
                HeaderName::CSeq => g.cseq = g.cseq.or(Some(value)),
                HeaderName::Authorization | HeaderName::ProxyAuthorization => g.credentials = true,
                _ => {}
            }
        }
        g
    }

    /// Whether a response can be built from what was found (§8.2.6.2).
    fn answerable(&self) -> bool {
        !self.vias.is_empty()
            && self.from.is_some()
            && self.to.is_some()
            && self.call_id.is_some()
            && self.cseq.is_some()
    }
}

/// The method token of a request line, by its first bytes; `None` for a
/// response or anything else.
fn request_method(bytes: &[u8]) -> Option<&str> {
    if bytes.starts_with(b"SIP/") {
        return None;
    }
    let n = bytes.iter().take(32).take_while(|&&c| is_token(c)).count();
    (n > 0 && bytes.get(n) == Some(&b' ')).then(|| std::str::from_utf8(&bytes[..n]).ok()).flatten()
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
    /// Refused statelessly; absorbed from the refusals remembered;
    /// glanced at (see [`OverloadStats`]).
    stateless: u64,
    absorbed: u64,
    screened: u64,
    /// The glance judged the datagram being handled and let it pass: the
    /// full path does not judge it again.
    passed: bool,
    /// The stateless refusals remembered.
    refusals: Refusals,
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

    /// The `Retry-After` for a refusal now, in seconds (module docs):
    /// `b + entropy mod b`, `b` the configured least over the share of new
    /// requests not refused in the last whole window (so the first
    /// refusals of an overload get the least).
    fn retry_after(&self, entropy: u64, config: &OverloadConfig) -> u32 {
        let base = config.retry_after.as_secs().max(1);
        let refused = u64::from(self.last_percent.min(95));
        let b = (base * 100).div_ceil(100 - refused);
        u32::try_from(b + entropy % b).unwrap_or(u32::MAX)
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
    /// this; an endpoint that is not serving ignores the stamp. Serving,
    /// a request that waited past the overload delay, or any request while
    /// stateless refusals are remembered, is glanced at before the full
    /// parse and may be answered (or absorbed) there.
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
            self.metrics.queue_delay(self.overload.smoothed);
            // §17.1.1.2, §17.1.2.2: a UDP client sends its request again
            // after T1, 2·T1, …; a copy that waited 2·T1 has a newer one
            // queued behind it (or its sender gave up). Reading it only
            // takes time from the work that can still finish: deep in an
            // overload, stale copies go unread, before any parse. ACKs
            // and responses are never dropped (they finish accepted work).
            if waited >= 2 * self.config.timers.t1 && is_request_copy(bytes) {
                self.overload.dropped += 1;
                self.metrics.overload_dropped();
                return;
            }
            if config.stateless && self.refuse_early(now, local, remote, bytes, waited, &config) {
                self.overload.current = None;
                return;
            }
        }
        self.handle_datagram(now, local, remote, bytes);
        self.overload.current = None;
        self.overload.passed = false;
    }

    /// The glance (module docs, "Refusing without state"): `true` if the
    /// datagram, a request that waited `waited`, was dealt with here —
    /// refused, or a retransmission or ACK of a request refused here —
    /// and `false` if it goes the full way.
    fn refuse_early(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        waited: Duration,
        config: &OverloadConfig,
    ) -> bool {
        if self.shutting_down {
            return false;
        }
        let Some(method) = request_method(bytes) else { return false };
        let ack = method == "ACK";
        // Nothing remembered, nothing waited: nothing to see.
        if self.overload.refusals.by_key.is_empty() && (ack || waited <= config.delay) {
            return false;
        }
        let now = self.clamp(now);
        self.overload.screened += 1;
        self.overload.refusals.expire(now, self.config.timers.t1.saturating_mul(64));
        let glance = Glance::scan(bytes);
        let Some(top) = glance.vias.first().and_then(|v| ListIter::new(v).next()) else { return false };
        let salt = *self.overload.refusals.salt.get_or_insert_with(|| self.rng.next_u64());
        let key = key_hash(salt, if ack { "INVITE" } else { method }, top);
        let remembered = self.overload.refusals.by_key.get(&key).copied();
        if ack {
            // §8.2.7, §17.2.1: the ACK of a 503 sent here ends there.
            if remembered.is_some() {
                trace_glanced(remote, bytes, "ACK of a 503 absorbed");
                self.overload.absorbed += 1;
            }
            return remembered.is_some();
        }
        if let Some(retry) = remembered {
            // §17.2.1, §17.2.2: a retransmission gets the answer its
            // request got.
            let Some(via) = Via::parse_value(top) else { return false };
            trace_glanced(remote, bytes, "copy of a refused request: its 503 again");
            self.overload.absorbed += 1;
            self.send_refusal(now, local, remote, &glance, method, &via, top, key, retry);
            return true;
        }
        if waited <= config.delay || !glance.answerable() || glance.to.is_some_and(has_tag) {
            return false;
        }
        let Some(m) = Method::from_token(method).filter(|m| *m != Method::Cancel) else { return false };
        // Only with an RFC 3261 branch can a held transaction be found
        // from the top Via alone (§17.2.3).
        let Some(via) = Via::parse_value(top) else { return false };
        let rfc3261 = via.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len());
        if !rfc3261 || self.transactions.holds_server(m, &via) {
            return false;
        }
        self.overload.tick(now, config);
        let work = if glance.credentials {
            Work::Answer
        } else if m == Method::Register {
            match glance.to.and_then(Address::parse_value) {
                Some(to) => self.registration_work(now, &to, waited, config),
                None => return false,
            }
        } else {
            Work::New
        };
        if !work.refused_after(waited, config, !self.overload.overloaded) {
            self.overload.passed = true;
            return false;
        }
        // A flood from one source is dropped unanswered, as on the full way.
        if !self.flood_allows(now, remote.ip()) {
            return true;
        }
        trace_glanced(remote, bytes, "refused with 503, stateless");
        self.overload.window_seen += 1;
        self.overload.refused(now, waited, config);
        self.overload.stateless += 1;
        self.metrics.overload_rejected(true);
        let retry = self.overload.retry_after(key, config);
        self.overload.refusals.insert(now, key, retry);
        self.send_refusal(now, local, remote, &glance, method, &via, top, key, retry);
        true
    }

    /// Sends the stateless 503 for a request from `remote` (module docs):
    /// its fields copied from `glance` (§8.2.6.2), the top Via (`via`,
    /// the element `top` of the first Via line) stamped (§18.2.1), a To
    /// tag and `Retry-After: retry` that depend on the request's `key`
    /// alone, and RFC 7339 parameters if its client asked.
    #[allow(clippy::too_many_arguments)]
    fn send_refusal(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        glance: &Glance<'_>,
        method: &str,
        via: &Via<'_>,
        top: &[u8],
        key: u64,
        retry: u32,
    ) {
        let stamped = stamped_via(via, remote);
        let first_line = stamped.as_ref().and_then(|s| {
            let line = glance.vias.first()?;
            let start = offset_of(line, top)?;
            Some([&line[..start], s.as_bytes(), &line[start + top.len()..]].concat())
        });
        let mut vias = glance.vias.clone();
        if let (Some(line), Some(v)) = (first_line.as_deref(), vias.first_mut()) {
            *v = line;
        }
        let salvaged = Salvaged {
            method: Some(method),
            vias,
            from: glance.from,
            to: glance.to,
            call_id: glance.call_id,
            cseq: glance.cseq,
            to_tagged: Some(false),
        };
        // §8.2.7: the same tag for the same request, every time.
        let tag = hex16(mix(key ^ 0x6f76_6c64_3530_3300));
        let retry = retry.to_string();
        let mut extra = vec![("Retry-After", retry.as_str())];
        if let Some(ua) = self.config.user_agent.as_deref() {
            extra.push(("Server", ua));
        }
        let mut response = Vec::new();
        if !salvaged.write_response_with(&mut response, UNAVAILABLE, "Service Unavailable", &tag, &extra) {
            return;
        }
        if via.params().contains("oc") {
            if let Some(config) = self.overload_config() {
                self.overload.tick(now, &config);
                if let Some(params) = self.overload.via_params(now, &config) {
                    set_oc_params(&mut response, &params);
                }
            }
        }
        // §18.2.2, RFC 3581 §4: where the stamped Via sends the response —
        // the source address, at the source port if `rport` asked for it,
        // else the sent-by port (`maddr` as the transport layer reads it).
        let peer = if stamped.is_some() && via.maddr().is_none() {
            let port = if via.rport().is_some() { remote.port() } else { via.port().unwrap_or(5060) };
            Peer {
                transport: Transport::Udp,
                remote: SocketAddr::new(remote.ip(), port),
                local: Some(local),
                conn: None,
                server_name: None,
            }
        } else {
            let source = Source { transport: Transport::Udp, local: Some(local), remote, conn: None };
            Peer::reply_to_via(&source, via)
        };
        let _ = self.transport.send(now, &peer, response.into());
        self.metrics.response_sent(503);
        self.pump(now);
    }

    /// Publishes the queueing delay for the metrics (issue 22): 0 once no
    /// datagram was stamped for a quiet spell of `4·D` (as `Overload::delay`).
    pub(super) fn publish_queue_delay(&self, now: Instant) {
        if let Some(config) = self.overload_config() {
            let quiet = config.delay.saturating_mul(4);
            let recent = self.overload.last_sample.is_some_and(|t| now.saturating_duration_since(t) < quiet);
            self.metrics.queue_delay(if recent { self.overload.smoothed } else { 0 });
        }
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
            stateless: o.stateless,
            absorbed: o.absorbed,
            screened: o.screened,
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
        if self.overload.passed {
            return false; // judged at the glance already
        }
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
        if !work.refused_after(delay, config, !self.overload.overloaded) {
            return false;
        }
        self.overload.refused(now, delay, config);
        self.metrics.overload_rejected(false);
        let retry = self.overload.retry_after(self.rng.next_u64(), config).to_string();
        self.answer_with(now, server, m, UNAVAILABLE, "Service Unavailable", &[("Retry-After", &retry)]);
        true
    }

    /// What `m` would start (module docs); the registrar is asked only
    /// when it matters (a REGISTER that waited past `1.25·D`).
    fn work_of(&self, now: Instant, m: &Message<'_>, delay: Duration, config: &OverloadConfig) -> Work {
        let to = m.to().and_then(Result::ok);
        let tagged = to.as_ref().is_some_and(|t| t.tag().is_some());
        let answer = m.authorization().next().is_some() || m.proxy_authorization().next().is_some();
        match m.method() {
            Some(Method::Ack | Method::Cancel) => Work::Finishing,
            _ if tagged => Work::Finishing,
            _ if answer => Work::Answer,
            Some(Method::Register) => match to {
                Some(to) => self.registration_work(now, &to, delay, config),
                None => Work::Registration,
            },
            _ => Work::New,
        }
    }

    /// A REGISTER to `to` that waited `delay`: a refresh if its address of
    /// record has a binding (the registrar is asked only past `1.25·D`,
    /// where it matters).
    fn registration_work(&self, now: Instant, to: &Address<'_>, delay: Duration, config: &OverloadConfig) -> Work {
        if delay <= config.delay.saturating_mul(5) / 4 {
            return Work::Registration;
        }
        let bound = self.server.as_ref().is_some_and(|s| {
            let registrar = s.registrar();
            registrar.local_aor(to.uri()).is_some_and(|aor| {
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

/// The wire log of a datagram dealt with at the glance (the transport logs
/// the others as it reads them), with what became of it.
fn trace_glanced(remote: SocketAddr, bytes: &[u8], fate: &str) {
    tracing::trace!(target: "sipline::wire", transport = "UDP", %remote, fate,
        "received\n{}", String::from_utf8_lossy(bytes));
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
