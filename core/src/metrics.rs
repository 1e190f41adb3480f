//! Counters and gauges for operators (issue 22): what a server did and
//! holds, read by an exporter (`sipline serve --metrics ADDR` serves them
//! in the Prometheus text format).
//!
//! Sans-IO like the rest of the core: [`Metrics`] is a block of atomics
//! that the endpoints of one server update as things happen (every update
//! one `Relaxed` atomic add, no lock, no allocation) and that a scraper on
//! any thread reads with [`Metrics::snapshot`]. Each worker (issue 19) has
//! a slot of its own, on its own cache lines, so that workers never write
//! to the same line; a snapshot adds the slots up. Gauges are kept as
//! up/down counts where the core sees both edges (transactions by state,
//! connections by transport), published by the endpoint where it cannot
//! (the queueing delay, at each stamped datagram and timer tick), or
//! sampled at the snapshot (the bindings of the location service).
//!
//! What the core cannot see — the process's memory — is the exporter's
//! to add.

use crate::endpoint::Worker;
use crate::message::{Message, Method};
use crate::registrar::{RegisterOutcome, SharedLocation};
use crate::transaction::{ClientKind, ClientState, ClientTransaction, Effect, ServerKind, ServerState};
use crate::transaction::{ServerTransaction, TxId};
use crate::transport::{ConnId, Output, Transport};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// Method labels, in the order of their slots (`other`: extension methods).
const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "PRACK",
    "UPDATE",
    "PUBLISH",
    "other",
];
/// Status classes (RFC 3261 §7.2).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
/// Transaction roles and kinds: `role * 2 + kind`.
const ROLES: [&str; 2] = ["client", "server"];
const KINDS: [&str; 2] = ["invite", "non_invite"];
/// Transaction states (RFC 3261 figures 5–8, RFC 6026 Accepted); a
/// terminated transaction is gone, so it has no slot.
const STATES: [&str; 6] = ["calling", "trying", "proceeding", "completed", "confirmed", "accepted"];
/// The states each (role, kind) passes through, for the snapshot.
const LIVE_STATES: [(usize, usize, &[usize]); 4] =
    [(0, 0, &[0, 2, 3, 5]), (0, 1, &[1, 2, 3]), (1, 0, &[2, 3, 4, 5]), (1, 1, &[1, 2, 3])];
const REGISTRATION_RESULTS: [&str; 4] = ["ok", "unregistered", "challenged", "rejected"];
const AUTH_RESULTS: [&str; 4] = ["authenticated", "challenged", "forbidden", "bad_request"];
const BAN_KINDS: [&str; 2] = ["user", "source"];
const OVERLOAD_HOW: [&str; 2] = ["stateless", "stateful"];
const STREAMS: [&str; 2] = ["tcp", "tls"];

// The slots of one worker, each family after the one before.
const REQUESTS: usize = 0;
const RESPONSES_RECEIVED: usize = REQUESTS + METHODS.len();
const RESPONSES_SENT: usize = RESPONSES_RECEIVED + CLASSES.len();
const RETRANSMITS_SENT: usize = RESPONSES_SENT + CLASSES.len();
const RETRANSMITS_RECEIVED: usize = RETRANSMITS_SENT + 1;
const TX_CREATED: usize = RETRANSMITS_RECEIVED + 1;
const TX_TIMEOUTS: usize = TX_CREATED + 4;
const TX_STATES: usize = TX_TIMEOUTS + 4;
const REGISTRATIONS: usize = TX_STATES + 4 * STATES.len();
const AUTH: usize = REGISTRATIONS + REGISTRATION_RESULTS.len();
const AUTH_FAILURES: usize = AUTH + AUTH_RESULTS.len();
const BANS: usize = AUTH_FAILURES + 1;
const BANNED_REFUSALS: usize = BANS + BAN_KINDS.len();
const OVERLOAD: usize = BANNED_REFUSALS + 1;
const OVERLOAD_DROPPED: usize = OVERLOAD + OVERLOAD_HOW.len();
const CONNS_OPENED: usize = OVERLOAD_DROPPED + 1;
const CONNS_CLOSED: usize = CONNS_OPENED + STREAMS.len();
/// Published, not counted: the smoothed queueing delay, nanoseconds.
const QUEUE_DELAY: usize = CONNS_CLOSED + STREAMS.len();
const SLOTS: usize = QUEUE_DELAY + 1;

/// One worker's slots, alone on its cache lines (128 bytes: adjacent-line
/// prefetchers pair 64-byte lines).
#[repr(align(128))]
pub(crate) struct WorkerMetrics {
    slots: [AtomicU64; SLOTS],
}

impl WorkerMetrics {
    fn new() -> WorkerMetrics {
        WorkerMetrics { slots: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    #[inline]
    fn add(&self, slot: usize) {
        self.slots[slot].fetch_add(1, Relaxed);
    }

    /// Counts down a gauge counted up before (wrapping: the sum of all
    /// workers' slots is read as signed).
    #[inline]
    fn sub(&self, slot: usize) {
        self.slots[slot].fetch_sub(1, Relaxed);
    }

    fn get(&self, slot: usize) -> u64 {
        self.slots[slot].load(Relaxed)
    }
}

/// The operational metrics of one server: every endpoint configured with
/// it ([`crate::endpoint::EndpointConfig::metrics`]) counts into it, each
/// worker ([`crate::endpoint::Worker`]) into a slot of its own, and
/// [`Metrics::snapshot`] reads them from any thread.
///
/// ```
/// use sipline::endpoint::{Endpoint, EndpointConfig};
/// use sipline::metrics::Metrics;
/// use std::sync::Arc;
/// use std::time::Instant;
///
/// // `now` comes from the runtime's clock; the core reads none.
/// # fn demo(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
/// let metrics = Arc::new(Metrics::new(1));
/// let mut config = EndpointConfig::new("sip:alice@192.0.2.1");
/// config.metrics = Some(Arc::clone(&metrics));
/// let mut ep = Endpoint::new(config)?;
/// let options = "OPTIONS sip:alice@192.0.2.1 SIP/2.0\r\n\
///     Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\n\
///     From: <sip:bob@192.0.2.2>;tag=b\r\nTo: <sip:alice@192.0.2.1>\r\n\
///     Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
/// let (local, remote) = ("192.0.2.1:5060".parse()?, "192.0.2.2:5060".parse()?);
/// ep.handle_datagram(now, local, remote, options.as_bytes());
/// while ep.poll_output().is_some() {}
///
/// let snapshot = metrics.snapshot();
/// let received = snapshot.value("sipline_requests_received_total", &[("method", "OPTIONS")]);
/// assert_eq!(received, Some(1.0));
/// // The endpoint answered it itself (200 with what it supports).
/// assert_eq!(snapshot.value("sipline_responses_sent_total", &[("class", "2xx")]), Some(1.0));
/// // Its server transaction lingers in Completed for Timer J (§17.2.2).
/// let live = [("role", "server"), ("kind", "non_invite"), ("state", "completed")];
/// assert_eq!(snapshot.value("sipline_transactions", &live), Some(1.0));
/// # Ok(()) }
/// ```
///
/// (`core/tests/metrics.rs` runs the same, with a clock.)
pub struct Metrics {
    workers: Box<[Arc<WorkerMetrics>]>,
    /// The location service of the server, once an endpoint serving with
    /// these metrics was made: its bindings are read at each snapshot.
    location: OnceLock<SharedLocation>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a server of `workers` workers (at least one slot; a
    /// worker whose id is past the last slot shares slot `id % workers`).
    pub fn new(workers: u16) -> Metrics {
        let workers = (0..workers.max(1)).map(|_| Arc::new(WorkerMetrics::new())).collect();
        Metrics { workers, location: OnceLock::new() }
    }

    /// The slot of `worker` (none: the first).
    fn worker(&self, worker: Option<Worker>) -> Arc<WorkerMetrics> {
        let id = worker.map_or(0, |w| usize::from(w.id)) % self.workers.len();
        Arc::clone(&self.workers[id])
    }

    /// Reads the location service's sizes at each snapshot (the first one
    /// given is kept: the workers of one server share theirs).
    pub(crate) fn watch_location(&self, location: &SharedLocation) {
        let _ = self.location.get_or_init(|| location.clone());
    }

    /// Every metric now, with its name, help and labels. Counters and
    /// gauges are read one by one (`Relaxed`): a snapshot taken while the
    /// workers run is not one instant, but each value is one they held.
    pub fn snapshot(&self) -> Snapshot {
        let sum = |slot: usize| self.workers.iter().fold(0u64, |a, w| a.wrapping_add(w.get(slot)));
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)] // counts far below 2^53
        let value = |slot: usize| sum(slot) as f64;
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
        let gauge = |up: usize, down: usize| (sum(up).wrapping_sub(sum(down)) as i64).max(0) as f64;
        let labelled = |base: usize, key: &'static str, values: &[&'static str]| -> Vec<Sample> {
            values.iter().enumerate().map(|(i, v)| Sample::new(vec![(key, (*v).to_owned())], value(base + i))).collect()
        };
        let by_tx = |base: usize| -> Vec<Sample> {
            (0..4)
                .map(|i| {
                    let labels = vec![("role", ROLES[i / 2].to_owned()), ("kind", KINDS[i % 2].to_owned())];
                    Sample::new(labels, value(base + i))
                })
                .collect()
        };
        let mut states = Vec::new();
        for (role, kind, live) in LIVE_STATES {
            for &state in live {
                let labels = vec![
                    ("role", ROLES[role].to_owned()),
                    ("kind", KINDS[kind].to_owned()),
                    ("state", STATES[state].to_owned()),
                ];
                #[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
                let live = (sum(tx_state_slot(role, kind, state)) as i64).max(0) as f64;
                states.push(Sample::new(labels, live));
            }
        }
        let connections = STREAMS
            .iter()
            .enumerate()
            .map(|(i, t)| Sample::new(vec![("transport", (*t).to_owned())], gauge(CONNS_OPENED + i, CONNS_CLOSED + i)))
            .collect();
        let mut delays = Vec::new();
        let mut pending = Vec::new();
        for (id, w) in self.workers.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let delay = w.get(QUEUE_DELAY) as f64 / 1e9;
            delays.push(Sample::new(vec![("worker", id.to_string())], delay));
            let live: u64 = (0..STATES.len())
                .map(|s| w.get(tx_state_slot(1, 0, s)).wrapping_add(w.get(tx_state_slot(1, 1, s))))
                .fold(0, u64::wrapping_add);
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
            let live = (live as i64).max(0) as f64;
            pending.push(Sample::new(vec![("worker", id.to_string())], live));
        }
        let counter = |name, help, samples| Family { name, help, kind: MetricKind::Counter, samples };
        let gauge_family = |name, help, samples| Family { name, help, kind: MetricKind::Gauge, samples };
        let mut families = vec![
            counter(
                "sipline_requests_received_total",
                "SIP requests received and parsed, by method (retransmissions included; requests refused \
                 from a glance under overload are counted in sipline_overload_rejections_total only).",
                labelled(REQUESTS, "method", &METHODS),
            ),
            counter(
                "sipline_responses_received_total",
                "SIP responses received and parsed, by status class (retransmissions included).",
                labelled(RESPONSES_RECEIVED, "class", &CLASSES),
            ),
            counter(
                "sipline_responses_sent_total",
                "SIP responses sent through server transactions and stateless overload refusals, by status \
                 class (retransmissions not included).",
                labelled(RESPONSES_SENT, "class", &CLASSES),
            ),
            counter(
                "sipline_retransmissions_total",
                "Retransmissions: sent (requests and responses sent again by timers A, E and G, and \
                 responses sent again for a retransmitted request) and received (request copies absorbed \
                 by a server transaction).",
                vec![
                    Sample::new(vec![("direction", "sent".to_owned())], value(RETRANSMITS_SENT)),
                    Sample::new(vec![("direction", "received".to_owned())], value(RETRANSMITS_RECEIVED)),
                ],
            ),
            counter(
                "sipline_transactions_created_total",
                "Transactions created, by role and kind (RFC 3261 §17).",
                by_tx(TX_CREATED),
            ),
            gauge_family("sipline_transactions", "Live transactions, by role, kind and state.", states),
            counter(
                "sipline_transaction_timeouts_total",
                "Transactions that timed out (timers B, F and H), by role and kind.",
                by_tx(TX_TIMEOUTS),
            ),
            counter(
                "sipline_registrations_total",
                "REGISTER requests for the domain, by result: ok (bindings added, refreshed or fetched), \
                 unregistered (bindings removed), challenged (401) or rejected (any other refusal).",
                labelled(REGISTRATIONS, "result", &REGISTRATION_RESULTS),
            ),
            counter(
                "sipline_auth_decisions_total",
                "Digest authentication decisions of the server role, by result.",
                labelled(AUTH, "result", &AUTH_RESULTS),
            ),
            counter(
                "sipline_auth_failures_total",
                "Digest answers that did not verify (a wrong password or an unknown user): each counts \
                 towards a ban.",
                vec![Sample::new(Vec::new(), value(AUTH_FAILURES))],
            ),
            counter(
                "sipline_auth_bans_total",
                "Bans begun for too many failed digest answers, by what is banned.",
                labelled(BANS, "kind", &BAN_KINDS),
            ),
            counter(
                "sipline_auth_banned_refusals_total",
                "Requests refused with 403 unread because their username or source is banned.",
                vec![Sample::new(Vec::new(), value(BANNED_REFUSALS))],
            ),
            counter(
                "sipline_overload_rejections_total",
                "New requests refused with 503 for overload, by how: from a glance at the datagram \
                 (stateless) or through a server transaction (stateful).",
                labelled(OVERLOAD, "how", &OVERLOAD_HOW),
            ),
            counter(
                "sipline_overload_dropped_total",
                "Request datagrams dropped unread under overload because they had waited past 2*T1.",
                vec![Sample::new(Vec::new(), value(OVERLOAD_DROPPED))],
            ),
            gauge_family("sipline_connections", "Open stream connections, by transport.", connections),
            counter(
                "sipline_connections_opened_total",
                "Stream connections accepted or opened, by transport.",
                labelled(CONNS_OPENED, "transport", &STREAMS),
            ),
            gauge_family(
                "sipline_worker_queue_delay_seconds",
                "Each worker's smoothed queueing delay of the datagrams it reads (its overload signal; 0 \
                 after a quiet spell).",
                delays,
            ),
            gauge_family(
                "sipline_worker_server_transactions",
                "Each worker's live server transactions: the incoming requests it is handling.",
                pending,
            ),
        ];
        if let Some(location) = self.location.get() {
            #[allow(clippy::cast_precision_loss)]
            let (bindings, aors) = (location.binding_count() as f64, location.aor_count() as f64);
            families.push(gauge_family(
                "sipline_registrar_bindings",
                "Bindings in the location service (expired ones not yet pruned included).",
                vec![Sample::new(Vec::new(), bindings)],
            ));
            families.push(gauge_family(
                "sipline_registrar_aors",
                "Addresses of record with bindings in the location service.",
                vec![Sample::new(Vec::new(), aors)],
            ));
        }
        Snapshot { families }
    }
}

/// The slot of the live-transaction gauge of (role, kind, state).
fn tx_state_slot(role: usize, kind: usize, state: usize) -> usize {
    TX_STATES + (role * 2 + kind) * STATES.len() + state
}

/// Whether a metric counts up only or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only ever grows (Prometheus `counter`; the name ends in `_total`).
    Counter,
    /// A value now (Prometheus `gauge`).
    Gauge,
}

/// One value of a metric and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label names and values (none for a metric without labels).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    fn new(labels: Vec<(&'static str, String)>, value: f64) -> Sample {
        Sample { labels, value }
    }
}

/// A metric: its name (with the `sipline_` prefix and unit, counters
/// ending in `_total`, as exposed), help text, kind and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The name as exposed.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// One value per label set.
    pub samples: Vec<Sample>,
}

/// Every metric at one reading ([`Metrics::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The metrics, in a fixed order.
    pub families: Vec<Family>,
}

impl Snapshot {
    /// The value of metric `name` with exactly these labels (in any
    /// order), if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.families.iter().find(|f| f.name == name)?;
        family
            .samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// The sum of metric `name` over all its label sets (0 if unknown).
    pub fn total(&self, name: &str) -> f64 {
        self.families.iter().filter(|f| f.name == name).flat_map(|f| &f.samples).map(|s| s.value).sum()
    }
}

/// What a registration (REGISTER for the domain) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    Ok,
    Unregistered,
    Challenged,
    Rejected,
}

impl Registration {
    /// The result of a REGISTER the registrar handled.
    pub(crate) fn of(outcome: &RegisterOutcome) -> Registration {
        match outcome {
            RegisterOutcome::Updated { added, refreshed, removed, .. } if *removed > 0 && added + refreshed == 0 => {
                Registration::Unregistered
            }
            RegisterOutcome::Updated { .. } | RegisterOutcome::Fetched { .. } => Registration::Ok,
            RegisterOutcome::Cleared { .. } => Registration::Unregistered,
            RegisterOutcome::Rejected(_) => Registration::Rejected,
        }
    }

    /// The result of a REGISTER refused by the digest server.
    pub(crate) fn of_decision(decision: &crate::auth::Decision) -> Registration {
        match decision {
            crate::auth::Decision::Challenge { .. } => Registration::Challenged,
            _ => Registration::Rejected,
        }
    }
}

/// A layer's handle on its worker's slot: does nothing without metrics.
/// The endpoint's also knows the transport of each stream connection, to
/// count it down when it closes.
#[derive(Default)]
pub(crate) struct Recorder {
    worker: Option<Arc<WorkerMetrics>>,
    conns: BTreeMap<ConnId, Transport>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").field("on", &self.worker.is_some()).finish_non_exhaustive()
    }
}

/// The live-transaction slot a transaction is counted in (none before
/// its first count and once terminated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tracked(Option<u16>);

fn stream_index(transport: Transport) -> Option<usize> {
    match transport {
        Transport::Tcp => Some(0),
        Transport::Tls => Some(1),
        Transport::Udp => None,
    }
}

impl Recorder {
    /// The endpoint's recorder, for `metrics` (none: off) and its worker;
    /// a serving endpoint lets the metrics read its location service.
    pub(crate) fn for_endpoint(config: &crate::endpoint::EndpointConfig) -> Recorder {
        let Some(metrics) = &config.metrics else { return Recorder::default() };
        if let Some(server) = &config.server {
            metrics.watch_location(&server.location);
        }
        Recorder { worker: Some(metrics.worker(config.worker)), conns: BTreeMap::new() }
    }

    /// A recorder on the same slot, for a layer below.
    pub(crate) fn share(&self) -> Recorder {
        Recorder { worker: self.worker.clone(), conns: BTreeMap::new() }
    }

    #[inline]
    fn add(&self, slot: usize) {
        if let Some(w) = &self.worker {
            w.add(slot);
        }
    }

    /// A message arrived and was parsed: a request by method, a response
    /// by class.
    #[inline]
    pub(crate) fn arrived(&self, m: &Message<'_>) {
        if self.worker.is_none() {
            return;
        }
        if let Some(code) = m.status() {
            self.add(RESPONSES_RECEIVED + class(code.as_u16()));
        } else if let Some(method) = m.method() {
            self.add(REQUESTS + method_index(method));
        }
    }

    /// A response with status `code` was sent.
    #[inline]
    pub(crate) fn response_sent(&self, code: u16) {
        self.add(RESPONSES_SENT + class(code));
    }

    /// A timer fired: whatever it transmits is sent again.
    #[inline]
    pub(crate) fn timer_effects(&self, effects: &[Effect]) {
        for e in effects {
            if matches!(e, Effect::Transmit(_)) {
                self.add(RETRANSMITS_SENT);
            }
        }
    }

    /// A request matched a server transaction: a copy (unless an ACK),
    /// answered by sending the last response again if `effects` transmit.
    #[inline]
    pub(crate) fn request_copy(&self, ack: bool, effects: &[Effect]) {
        if !ack {
            self.add(RETRANSMITS_RECEIVED);
        }
        self.timer_effects(effects);
    }

    /// A transaction timed out.
    pub(crate) fn timeout(&self, role_kind: Option<usize>) {
        if let Some(i) = role_kind {
            self.add(TX_TIMEOUTS + i);
        }
    }

    /// Moves client transaction `tx` to the slot of its state now (the
    /// first time: counts it created).
    #[inline]
    pub(crate) fn track_client(&self, tracked: &mut Tracked, tx: &ClientTransaction) {
        let kind = usize::from(tx.kind() != ClientKind::Invite);
        let state = match tx.state() {
            ClientState::Calling => Some(0),
            ClientState::Trying => Some(1),
            ClientState::Proceeding => Some(2),
            ClientState::Completed => Some(3),
            ClientState::Accepted => Some(5),
            ClientState::Terminated => None,
        };
        self.track(tracked, 0, kind, state);
    }

    /// [`Recorder::track_client`] for a server transaction.
    #[inline]
    pub(crate) fn track_server(&self, tracked: &mut Tracked, tx: &ServerTransaction) {
        let kind = usize::from(tx.kind() != ServerKind::Invite);
        let state = match tx.state() {
            ServerState::Trying => Some(1),
            ServerState::Proceeding => Some(2),
            ServerState::Completed => Some(3),
            ServerState::Confirmed => Some(4),
            ServerState::Accepted => Some(5),
            ServerState::Terminated => None,
        };
        self.track(tracked, 1, kind, state);
    }

    fn track(&self, tracked: &mut Tracked, role: usize, kind: usize, state: Option<usize>) {
        let Some(w) = &self.worker else { return };
        #[allow(clippy::cast_possible_truncation)] // slots < 100
        let new = state.map(|s| tx_state_slot(role, kind, s) as u16);
        if tracked.0 == new {
            return;
        }
        match tracked.0 {
            Some(old) => w.sub(usize::from(old)),
            None => w.add(TX_CREATED + role * 2 + kind),
        }
        if let Some(new) = new {
            w.add(usize::from(new));
        }
        *tracked = Tracked(new);
    }

    /// A transaction went: out of its state's slot, if still in one.
    pub(crate) fn untrack(&self, tracked: Tracked) {
        if let (Some(w), Some(old)) = (&self.worker, tracked.0) {
            w.sub(usize::from(old));
        }
    }

    /// The server role decided a REGISTER.
    pub(crate) fn registration(&self, result: Registration) {
        self.add(REGISTRATIONS + result as usize);
    }

    /// The digest server decided.
    pub(crate) fn auth_decision(&self, decision: &crate::auth::Decision) {
        use crate::auth::Decision;
        self.add(
            AUTH + match decision {
                Decision::Authenticated { .. } => 0,
                Decision::Challenge { .. } => 1,
                Decision::Forbidden { .. } => 2,
                Decision::BadRequest => 3,
            },
        );
    }

    /// A digest answer failed, and began these bans.
    pub(crate) fn auth_failure(&self, bans: &[crate::auth::Banned]) {
        self.add(AUTH_FAILURES);
        for b in bans {
            self.add(BANS + usize::from(*b == crate::auth::Banned::Source));
        }
    }

    /// A request was refused unread for a ban.
    pub(crate) fn banned_refusal(&self) {
        self.add(BANNED_REFUSALS);
    }

    /// A request was refused for overload (`stateless`: from a glance).
    pub(crate) fn overload_rejected(&self, stateless: bool) {
        self.add(OVERLOAD + usize::from(!stateless));
    }

    /// A stale request datagram was dropped unread under overload.
    pub(crate) fn overload_dropped(&self) {
        self.add(OVERLOAD_DROPPED);
    }

    /// The worker's smoothed queueing delay is now `nanos`.
    #[inline]
    pub(crate) fn queue_delay(&self, nanos: u64) {
        if let Some(w) = &self.worker {
            w.slots[QUEUE_DELAY].store(nanos, Relaxed);
        }
    }

    /// A stream connection was accepted (`None`: refused).
    pub(crate) fn accepted(&mut self, conn: Option<ConnId>, transport: Transport) {
        if let (Some(w), Some(conn), Some(i)) = (&self.worker, conn, stream_index(transport)) {
            w.add(CONNS_OPENED + i);
            self.conns.insert(conn, transport);
        }
    }

    /// An action goes to the runtime: an `Open` is a new connection.
    #[inline]
    pub(crate) fn action<E>(&mut self, action: &Output<E>) {
        if let Output::Open { conn, transport, .. } = action {
            self.accepted(Some(*conn), *transport);
        }
    }

    /// A stream connection closed.
    pub(crate) fn closed(&mut self, conn: ConnId) {
        if let (Some(w), Some(t)) = (&self.worker, self.conns.remove(&conn)) {
            if let Some(i) = stream_index(t) {
                w.add(CONNS_CLOSED + i);
            }
        }
    }
}

/// The role and kind slot offset of a transaction (for its timeout).
pub(crate) fn role_kind(id: TxId, invite: bool) -> usize {
    let role = usize::from(matches!(id, TxId::Server(_)));
    role * 2 + usize::from(!invite)
}

fn class(code: u16) -> usize {
    usize::from(code / 100).clamp(1, 6) - 1
}

fn method_index(method: &Method<'_>) -> usize {
    match method {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Register => 4,
        Method::Options => 5,
        Method::Info => 6,
        Method::Message => 7,
        Method::Subscribe => 8,
        Method::Notify => 9,
        Method::Refer => 10,
        Method::Prack => 11,
        Method::Update => 12,
        Method::Publish => 13,
        Method::Extension(_) => 14,
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // whole numbers and exact fractions
mod tests {
    use super::*;

    #[test]
    fn families_have_names_help_and_distinct_slots() {
        assert!(SLOTS < usize::from(u16::MAX));
        let m = Metrics::new(2);
        let s = m.snapshot();
        for f in &s.families {
            assert!(f.name.starts_with("sipline_"), "{}", f.name);
            assert_eq!(f.kind == MetricKind::Counter, f.name.ends_with("_total"), "{}", f.name);
            assert!(!f.help.is_empty());
            assert!(f.samples.iter().all(|x| x.value == 0.0), "{}", f.name);
        }
        // Two workers: one gauge each.
        assert_eq!(
            s.families.iter().find(|f| f.name == "sipline_worker_queue_delay_seconds").unwrap().samples.len(),
            2
        );
    }

    #[test]
    fn classes_and_gauges_count_per_worker() {
        let m = Metrics::new(2);
        let r0 = Recorder { worker: Some(m.worker(None)), conns: BTreeMap::new() };
        r0.response_sent(100);
        r0.response_sent(699);
        r0.queue_delay(2_500_000);
        let s = m.snapshot();
        assert_eq!(s.value("sipline_responses_sent_total", &[("class", "1xx")]), Some(1.0));
        assert_eq!(s.value("sipline_responses_sent_total", &[("class", "6xx")]), Some(1.0));
        assert_eq!(s.value("sipline_worker_queue_delay_seconds", &[("worker", "0")]), Some(0.0025));
        assert_eq!(s.value("sipline_worker_queue_delay_seconds", &[("worker", "1")]), Some(0.0));
    }
}
