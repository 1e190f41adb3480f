//! A registrar (RFC 3261 §10.3) and its location service, sans-IO: a
//! REGISTER goes in with the time and the RNG, the status and the header
//! fields of the answer come out, and the bindings live behind the
//! [`Location`] trait ([`MemoryLocation`] by default).
//!
//! # Who does what
//!
//! §10.3 lists eight steps. The caller (the endpoint's server role) does
//! steps 1–4: it checks that the Request-URI names a domain it serves,
//! answers `Require` (§8.2.2; [`Registrar::extensions`] lists what this
//! registrar understands), authenticates the UAC and checks that the user
//! may change this AOR (403). [`Registrar::register`] does the rest:
//!
//! - **§10.3 step 5**: the AOR comes from the To header. It must be a
//!   `sip`/`sips` URI in one of [`RegistrarConfig::domains`], else 404 (a
//!   caller serving other domains elsewhere may map this 404 as it likes).
//!   It is then canonicalised ([`canonical_aor`]).
//! - **§10.3 step 6**: no Contact is a fetch (straight to step 8); `*` must
//!   be the only Contact and come with `Expires: 0` (else 400) and removes
//!   every binding, subject to the Call-ID/CSeq rule.
//! - **§10.3 step 7**: the expiry of each contact (its `expires`, else the
//!   Expires header, else [`RegistrarConfig::default_expires`]); 423 with
//!   `Min-Expires` below the minimum; clamping to the maximum; the
//!   Call-ID/CSeq rule; all changes committed at once or none.
//! - **§10.3 step 8**: a 200 listing every current binding with its
//!   remaining `expires` (and `q`, instance, GRUUs).
//!
//! RFC 5626 instance ids and RFC 5627 GRUUs are handled as described on
//! [`Registrar::register_from`]. Proxies and redirect servers find targets with
//! [`Registrar::targets`] (§16.5).
//!
//! # Failures and their status codes
//!
//! | Failure | Status |
//! |---|---|
//! | missing, repeated or malformed To, Call-ID, CSeq, Contact, Expires; CSeq method not REGISTER | 400 |
//! | `*` with other Contacts or without `Expires: 0` (§10.3 step 6) | 400 |
//! | the same contact twice in one request | 400 |
//! | To not a SIP URI, or not in a served domain (§10.3 step 5) | 404 |
//! | more live bindings than [`RegistrarConfig::max_bindings`] | 403 |
//! | a nonzero interval under the minimum (§10.3 step 7) | 423 + `Min-Expires` |
//! | same Call-ID, CSeq not higher (§10.3 steps 6–7: "the request fails") | 500 |
//! | the store could not commit (§10.3 step 7) | 500 |
//!
//! The out-of-order case gets 500 because §10.3 step 7 gives that code to
//! a request whose binding updates cannot all be committed, which is what
//! an out-of-order update is; the reason phrase says which it was.
//!
//! # Example
//!
//! ```
//! use sipline::message::{Message, Uri};
//! use sipline::registrar::{Lookup, Registrar, RegistrarConfig};
//! use sipline::rng::Rng;
//! use std::time::{Duration, Instant};
//!
//! # fn demo(now: Instant) -> Result<(), Box<dyn std::error::Error>> {
//! let mut registrar = Registrar::new(RegistrarConfig::new(["example.com"]));
//! let mut rng = Rng::new(1);
//!
//! let bytes = b"REGISTER sip:example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7\r\n\
//! Max-Forwards: 70\r\n\
//! To: <sip:alice@example.com>\r\n\
//! From: <sip:alice@example.com>;tag=456248\r\n\
//! Call-ID: 843817637684230@998sdasdh09\r\n\
//! CSeq: 1826 REGISTER\r\n\
//! Contact: <sip:alice@192.0.2.10:5060>\r\n\
//! Expires: 600\r\n\
//! Content-Length: 0\r\n\r\n";
//! let reply = registrar.register(now, &Message::parse(bytes)?, &mut rng);
//! assert_eq!(reply.status.as_u16(), 200);
//! // The caller writes these into the 200 it builds from the request.
//! assert_eq!(reply.headers, [("Contact".to_owned(), "<sip:alice@192.0.2.10:5060>;expires=600".to_owned())]);
//!
//! // A proxy looks the AOR up (§16.5)…
//! let alice = Uri::parse("sip:alice@example.com")?;
//! let later = now + Duration::from_secs(60);
//! match registrar.targets(later, &alice) {
//!     Lookup::Aor(targets) => assert_eq!(targets[0].contact, "sip:alice@192.0.2.10:5060"),
//!     other => unreachable!("{other:?}"),
//! }
//! // …and the binding lapses after its 600 s.
//! let end = now + Duration::from_secs(600);
//! assert_eq!(registrar.poll_timeout(), Some(end));
//! assert_eq!(registrar.handle_timeout(end).len(), 1);
//! assert_eq!(registrar.targets(end, &alice), Lookup::NoBindings);
//! assert_eq!(registrar.poll_timeout(), None);
//! # Ok(())
//! # }
//! ```
//!
//! (`now` comes from the caller — the core reads no clock — so the example
//! is compiled; `core/tests/registrar.rs` runs these steps.)

mod location;
mod shared;

pub use location::{by_preference, Binding, Gruu, Location, LocationError, MemoryLocation, Source};
pub use shared::{LocationChange, LocationJournal, SharedLocation};

use crate::message::grammar::{is_param_char, is_user_char};
use crate::message::headers::{Address, CSeq, CallId, Contact, HeaderError};
use crate::message::{HeaderName, Host, Message, Method, SipUri, StatusCode, Uri};
use crate::rng::Rng;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

/// How a registrar behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistrarConfig {
    /// The domains whose AORs this registrar keeps (§10.3 step 5), as host
    /// names or IP literals (`example.com`, `192.0.2.1`, `[2001:db8::1]`),
    /// compared case-insensitively. Empty: every domain (the caller checked
    /// the Request-URI, §10.3 step 1).
    pub domains: Vec<String>,
    /// The interval granted to a contact that asks for none, in seconds
    /// (§10.3 step 7: "a locally-configured default").
    pub default_expires: u32,
    /// The shortest nonzero interval accepted, in seconds: anything below
    /// it (and below one hour) is answered 423 with this as `Min-Expires`
    /// (§10.3 step 7, §20.23).
    pub min_expires: u32,
    /// The longest interval granted, in seconds: longer requests are
    /// shortened to it (§10.3 step 7: "MAY choose an expiration less than
    /// the requested expiration interval").
    pub max_expires: u32,
    /// The most live bindings one AOR may have: a REGISTER that would add
    /// one past it (or lists more Contacts than this) is refused with 403.
    pub max_bindings: usize,
    /// Whether to hand out GRUUs to UAs that ask (RFC 5627).
    pub gruu: bool,
    /// How many temporary GRUUs a binding keeps valid (RFC 5627 §3.2 keeps
    /// them all for the binding's life; a UA refreshing every minute for a
    /// month would grow one without bound, so the oldest are forgotten past
    /// this many).
    pub temp_gruu_limit: usize,
    /// The Path (RFC 3327) every binding made here gets: this registrar's
    /// own loose-routing URI when other instances of the domain share its
    /// location service (issue 20); `None`: bindings are reached directly.
    pub path: Option<String>,
}

impl RegistrarConfig {
    /// A registrar for `domains`: one hour by default, at least 60 s, at
    /// most one day, 32 bindings per AOR, GRUUs on (64 temporary GRUUs kept
    /// per binding).
    pub fn new<D: Into<String>>(domains: impl IntoIterator<Item = D>) -> RegistrarConfig {
        RegistrarConfig {
            domains: domains.into_iter().map(Into::into).collect(),
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86_400,
            max_bindings: 32,
            gruu: true,
            temp_gruu_limit: 64,
            path: None,
        }
    }
}

/// Why a REGISTER was refused. [`RegisterError::status`] is the answer;
/// the `Display` text is the reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The request is not a REGISTER (400).
    #[error("Not a REGISTER request")]
    NotRegister,
    /// A required header is absent (400).
    #[error("Missing {0} header")]
    Missing(HeaderName),
    /// A header does not follow its grammar (400).
    #[error("Malformed {0} header")]
    Malformed(HeaderName),
    /// A single-valued header appears more than once (400).
    #[error("More than one {0} header")]
    Multiple(HeaderName),
    /// The CSeq method is not REGISTER (400, §8.1.1.5).
    #[error("CSeq method is not REGISTER")]
    CSeqMethod,
    /// The To URI is not a `sip`/`sips` URI (404, §10.3 step 5).
    #[error("Address-of-record is not a SIP URI")]
    NotSipAor,
    /// The To URI is not in a served domain (404, §10.3 step 5).
    #[error("Address-of-record not in this domain")]
    ForeignDomain,
    /// `Contact: *` came with other Contacts (400, §10.3 step 6).
    #[error("Wildcard Contact must be alone")]
    WildcardWithOthers,
    /// `Contact: *` came without `Expires: 0` (400, §10.3 step 6).
    #[error("Wildcard Contact needs Expires: 0")]
    WildcardExpires,
    /// One contact (or one instance and reg-id) appears twice (400).
    #[error("Duplicate Contact")]
    DuplicateContact,
    /// The AOR would have more live bindings than allowed (403).
    #[error("Too many bindings")]
    TooManyBindings {
        /// The configured limit.
        limit: usize,
    },
    /// A nonzero interval below the minimum (423, §10.3 step 7).
    #[error("Interval Too Brief")]
    IntervalTooBrief {
        /// The shortest interval accepted (the `Min-Expires` value).
        min_expires: u32,
    },
    /// A binding was last set by this Call-ID with a CSeq at least as high
    /// (500, §10.3 steps 6 and 7: the update is aborted).
    #[error("Out-of-order REGISTER (CSeq {cseq}, binding has {stored})")]
    OutOfOrder {
        /// The CSeq stored with the binding.
        stored: u32,
        /// The CSeq of the request.
        cseq: u32,
    },
    /// The location service could not commit (500, §10.3 step 7).
    #[error("Location service unavailable")]
    Location(LocationError),
}

impl RegisterError {
    /// The status code the REGISTER is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RegisterError::NotSipAor | RegisterError::ForeignDomain => NOT_FOUND,
            RegisterError::TooManyBindings { .. } => FORBIDDEN,
            RegisterError::IntervalTooBrief { .. } => INTERVAL_TOO_BRIEF,
            RegisterError::OutOfOrder { .. } | RegisterError::Location(_) => SERVER_ERROR,
            _ => BAD_REQUEST,
        }
    }
}

impl From<HeaderError> for RegisterError {
    fn from(e: HeaderError) -> RegisterError {
        match e {
            HeaderError::Missing(n) => RegisterError::Missing(n),
            HeaderError::Multiple(n) => RegisterError::Multiple(n),
            HeaderError::Malformed(n) => RegisterError::Malformed(n),
        }
    }
}

/// What a REGISTER did, for a one-line log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterOutcome {
    /// Contacts were added, refreshed or removed (§10.3 step 7).
    Updated {
        /// The canonical AOR.
        aor: String,
        /// New bindings.
        added: usize,
        /// Bindings refreshed or changed.
        refreshed: usize,
        /// Bindings removed (`expires=0`).
        removed: usize,
        /// Live bindings afterwards.
        bindings: usize,
    },
    /// `Contact: *` removed every binding (§10.3 step 6).
    Cleared {
        /// The canonical AOR.
        aor: String,
        /// How many bindings went.
        removed: usize,
    },
    /// A REGISTER without Contact listed the bindings (§10.3 step 6).
    Fetched {
        /// The canonical AOR.
        aor: String,
        /// Live bindings listed.
        bindings: usize,
    },
    /// The request was refused; nothing changed.
    Rejected(RegisterError),
}

impl fmt::Display for RegisterOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterOutcome::Updated { aor, added, refreshed, removed, bindings } => {
                write!(f, "{aor}: {bindings} binding(s) ({added} added, {refreshed} refreshed, {removed} removed)")
            }
            RegisterOutcome::Cleared { aor, removed } => write!(f, "{aor}: all {removed} binding(s) removed"),
            RegisterOutcome::Fetched { aor, bindings } => write!(f, "{aor}: {bindings} binding(s) fetched"),
            RegisterOutcome::Rejected(e) => write!(f, "rejected: {} {e}", e.status()),
        }
    }
}

/// The answer to a REGISTER. The caller builds the response from the
/// request (copying Via, From, To, Call-ID and CSeq, adding a To tag,
/// §8.2.6.2), with this status and reason, these header fields in this
/// order, and a `Date` if it wants one (§10.3 step 8 says SHOULD; the core
/// has no wall clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterReply {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase.
    pub reason: String,
    /// Header fields to add: `Contact` (one per binding), `Min-Expires`,
    /// `Supported`.
    pub headers: Vec<(String, String)>,
    /// What happened.
    pub outcome: RegisterOutcome,
}

impl RegisterReply {
    fn rejected(e: RegisterError) -> RegisterReply {
        let mut headers = Vec::new();
        if let RegisterError::IntervalTooBrief { min_expires } = e {
            // §10.3 step 7: the 423 MUST carry Min-Expires (§20.23).
            headers.push(("Min-Expires".to_owned(), min_expires.to_string()));
        }
        RegisterReply { status: e.status(), reason: e.to_string(), headers, outcome: RegisterOutcome::Rejected(e) }
    }

    /// Whether the REGISTER succeeded (a 200).
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The values of the `Contact` header fields.
    pub fn contacts(&self) -> impl Iterator<Item = &str> + '_ {
        self.headers.iter().filter(|(n, _)| n == "Contact").map(|(_, v)| v.as_str())
    }
}

/// Where a Request-URI leads (§16.5), from [`Registrar::targets`].
///
/// The registrar does not know which users exist, only which have
/// bindings: for [`Lookup::NoBindings`] the caller answers 480
/// (Temporarily Unavailable) for a user it knows and 404 otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The URI is an AOR with live bindings, in [`by_preference`] order.
    Aor(Vec<Binding>),
    /// The URI is a GRUU (RFC 5627 §6.1): the live bindings of its instance
    /// (one per RFC 5626 flow), in [`by_preference`] order. Requests to a
    /// GRUU go to these only, never to the AOR's other contacts.
    Gruu(Vec<Binding>),
    /// A URI of a served domain with no live binding (a public GRUU whose
    /// instance is not registered included).
    NoBindings,
    /// A temporary GRUU (`;gr` without a value) this registrar does not
    /// know, or no longer: 404 (RFC 5627 §5.3 invalidates them with their
    /// binding, §6.1 answers 404).
    UnknownGruu,
    /// Not a `sip`/`sips` URI of a served domain: not the registrar's
    /// business (a proxy forwards it).
    NotLocal,
}

/// A registrar: the protocol rules of §10.3 over a [`Location`] store.
///
/// It never reads a clock: every call takes `now`, which must not go
/// backwards (earlier times are treated as the latest seen). Call
/// [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout) to forget expired bindings; lookups
/// ignore expired bindings whether or not they were pruned.
#[derive(Debug)]
pub struct Registrar<L: Location = MemoryLocation> {
    config: RegistrarConfig,
    /// `config.domains`, canonicalised like AOR hosts.
    domains: Vec<String>,
    location: L,
    last_now: Option<Instant>,
}

impl Registrar<MemoryLocation> {
    /// A registrar keeping its bindings in memory.
    pub fn new(config: RegistrarConfig) -> Registrar<MemoryLocation> {
        Registrar::with_location(config, MemoryLocation::new())
    }
}

impl<L: Location> Registrar<L> {
    /// A registrar over another location service (a `Box<dyn Location>`
    /// works too).
    pub fn with_location(config: RegistrarConfig, location: L) -> Registrar<L> {
        let mut domains: Vec<String> = config.domains.iter().map(|d| domain_key(d)).collect();
        domains.sort();
        domains.dedup();
        Registrar { config, domains, location, last_now: None }
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// The location service.
    pub fn location(&self) -> &L {
        &self.location
    }

    /// The location service, to change bindings by hand.
    pub fn location_mut(&mut self) -> &mut L {
        &mut self.location
    }

    /// The option tags this registrar understands, for the caller's
    /// `Require` check (§8.2.2.3, §10.3 step 2) and `Supported` headers:
    /// `gruu` (RFC 5627) when GRUUs are on.
    pub fn extensions(&self) -> &'static [&'static str] {
        if self.config.gruu {
            &["gruu"]
        } else {
            &[]
        }
    }

    /// The canonical AOR of `uri` ([`canonical_aor`]) if it is a SIP URI in
    /// a served domain: what the caller checks its authenticated user
    /// against (§10.3 step 4).
    pub fn local_aor(&self, uri: &Uri<'_>) -> Option<String> {
        let sip = uri.as_sip()?;
        self.serves(sip.host()).then(|| canonical_sip(sip))
    }

    /// Processes a REGISTER the caller has authenticated and authorised
    /// (§10.3 steps 5–8, see the [module docs](self)). Same as
    /// [`register_from`](Self::register_from) without a source.
    pub fn register(&mut self, now: Instant, request: &Message<'_>, rng: &mut Rng) -> RegisterReply {
        self.register_from(now, request, None, rng)
    }

    /// Processes a REGISTER (§10.3 steps 5–8) that arrived from `source`,
    /// which is stored with the bindings it sets.
    ///
    /// Contacts are matched to bindings by §19.1.4 URI comparison, except
    /// that a contact with a `+sip.instance` (RFC 5626 §4.1) matches the
    /// binding with the same instance and `reg-id` (RFC 5626 §6, RFC 5627
    /// §5.1) even when its URI changed, and replaces it.
    ///
    /// GRUUs (RFC 5627 §5.1): when the REGISTER has `Supported: gruu`, each
    /// contact with an instance gets a new temporary GRUU (random, from
    /// `rng`); earlier ones stay valid while the binding lives and its
    /// Call-ID stays the same (RFC 5627 §3.2). The 200 then carries
    /// `Supported: gruu` and, on every binding with an instance, `pub-gruu`
    /// (the AOR with `gr=` the instance id) and the latest `temp-gruu`
    /// (RFC 5627 §5.2).
    ///
    /// Nothing changes unless the answer is a 200; nothing panics on any
    /// input.
    pub fn register_from(
        &mut self,
        now: Instant,
        request: &Message<'_>,
        source: Option<&Source>,
        rng: &mut Rng,
    ) -> RegisterReply {
        let now = self.clamp(now);
        self.process(now, request, source, rng).unwrap_or_else(RegisterReply::rejected)
    }

    /// Where a request for `request_uri` goes (§16.5): the live bindings of
    /// the AOR, or of the instance a GRUU names. See [`Lookup`].
    pub fn targets(&self, now: Instant, request_uri: &Uri<'_>) -> Lookup {
        let now = self.seen(now);
        let Some(sip) = request_uri.as_sip() else { return Lookup::NotLocal };
        if !self.serves(sip.host()) {
            return Lookup::NotLocal;
        }
        if sip.params().contains("gr") {
            let Some(binding) = self.gruu_binding(now, sip) else {
                return if sip.params().value("gr").is_some() { Lookup::NoBindings } else { Lookup::UnknownGruu };
            };
            // RFC 5627 §6.1: a GRUU reaches its instance, over any of its flows.
            let flows: Vec<Binding> = self
                .location
                .bindings(&binding.aor, now)
                .into_iter()
                .filter(|b| same_instance(b.instance.as_deref(), binding.instance.as_deref()))
                .collect();
            return if flows.is_empty() { Lookup::Gruu(vec![binding]) } else { Lookup::Gruu(flows) };
        }
        let bindings = self.location.bindings(&canonical_sip(sip), now);
        if bindings.is_empty() {
            Lookup::NoBindings
        } else {
            Lookup::Aor(bindings)
        }
    }

    /// The live binding a GRUU of this registrar designates (RFC 5627 §3.1):
    /// `sip:alice@example.com;gr=urn:uuid:…` (public) or
    /// `sip:tgruu.…@example.com;gr` (temporary).
    pub fn resolve_gruu(&self, now: Instant, uri: &Uri<'_>) -> Option<Binding> {
        let now = self.seen(now);
        let sip = uri.as_sip()?;
        if !self.serves(sip.host()) {
            return None;
        }
        self.gruu_binding(now, sip)
    }

    /// Forgets the bindings expired at `now` and returns them (for a log or
    /// a registration event). Call it at [`poll_timeout`](Self::poll_timeout)
    /// or any time; early or repeated calls are harmless. Afterwards
    /// `poll_timeout()` is `None` or later than `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Binding> {
        let now = self.clamp(now);
        self.location.prune(now)
    }

    /// When the next binding expires: when to call
    /// [`handle_timeout`](Self::handle_timeout). `None`: no bindings.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.location.next_expiry()
    }

    /// `now`, never earlier than the latest time seen (DESIGN.md, "Time").
    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.seen(now);
        self.last_now = Some(now);
        now
    }

    fn seen(&self, now: Instant) -> Instant {
        match self.last_now {
            Some(last) => {
                debug_assert!(now >= last, "time went backwards");
                now.max(last)
            }
            None => now,
        }
    }

    /// §10.3 step 5: whether the registrar keeps AORs of `host`.
    fn serves(&self, host: Host<'_>) -> bool {
        self.domains.is_empty() || self.domains.binary_search(&host_key(host)).is_ok()
    }

    fn gruu_binding(&self, now: Instant, sip: &SipUri<'_>) -> Option<Binding> {
        let gr = sip.params().get("gr")?;
        let key = canonical_sip(sip);
        match gr.unescaped() {
            Some(value) => {
                let value = String::from_utf8_lossy(&value);
                let instance = strip_angles(&value);
                self.location.find_gruu(Gruu::Public { aor: &key, instance }, now)
            }
            None => self.location.find_gruu(Gruu::Temporary(&key), now),
        }
    }

    fn process(
        &mut self,
        now: Instant,
        request: &Message<'_>,
        source: Option<&Source>,
        rng: &mut Rng,
    ) -> Result<RegisterReply, RegisterError> {
        if request.method() != Some(&Method::Register) {
            return Err(RegisterError::NotRegister);
        }
        // §10.3 step 5: the AOR is the To URI, in a domain we serve,
        // canonicalised.
        let to: Address<'_> = request.single(HeaderName::To)?;
        let sip = to.uri().as_sip().ok_or(RegisterError::NotSipAor)?;
        if !self.serves(sip.host()) {
            return Err(RegisterError::ForeignDomain);
        }
        let aor = canonical_sip(sip);
        let call_id: CallId<'_> = request.single(HeaderName::CallId)?;
        let cseq: CSeq<'_> = request.single(HeaderName::CSeq)?;
        if cseq.method() != Method::Register {
            return Err(RegisterError::CSeqMethod);
        }
        let contacts: Vec<Contact<'_>> = request.contacts().collect::<Result<_, _>>()?;
        let gruu =
            self.config.gruu && request.supported().any(|t| t.is_ok_and(|t: &str| t.eq_ignore_ascii_case("gruu")));
        let expires_header = expires_header(request)?;
        let update = Update { now, aor, call_id: call_id.as_str(), cseq: cseq.seq(), gruu };

        // §10.3 step 6: no Contact: go to step 8 and list the bindings.
        if contacts.is_empty() {
            let bindings = self.location.bindings(&update.aor, now);
            let outcome = RegisterOutcome::Fetched { aor: update.aor.clone(), bindings: bindings.len() };
            return Ok(ok(&update, &bindings, outcome));
        }
        if contacts.iter().any(|c| matches!(c, Contact::Wildcard)) {
            return self.clear(&update, contacts.len(), expires_header);
        }
        if contacts.len() > self.config.max_bindings {
            return Err(RegisterError::TooManyBindings { limit: self.config.max_bindings });
        }
        let wanted = contacts.iter().map(|c| self.wanted(c, expires_header)).collect::<Result<Vec<_>, _>>()?;
        for (k, w) in wanted.iter().enumerate() {
            if wanted[..k].iter().any(|x| x.conflicts(w)) {
                return Err(RegisterError::DuplicateContact);
            }
        }

        // §10.3 step 7: commit all or nothing, over the set the decision
        // was made on. A store shared with other workers refuses the write
        // if another REGISTER for this AOR committed meanwhile: decide
        // again on the new set (its Call-ID and CSeq checks included).
        for _ in 0..MAX_ATTEMPTS {
            let (set, version) = self.location.snapshot(&update.aor, now);
            let (set, counts) = self.decide(&update, set, &wanted, source, rng)?;
            match self.location.replace_if(&update.aor, version, set.clone()) {
                Ok(()) => {}
                Err(LocationError::Changed) => continue,
                Err(e) => return Err(RegisterError::Location(e)),
            }
            // §10.3 step 8: every current binding, as committed.
            let (added, refreshed, removed) = counts;
            let outcome =
                RegisterOutcome::Updated { aor: update.aor.clone(), added, refreshed, removed, bindings: set.len() };
            return Ok(ok(&update, &set, outcome));
        }
        Err(RegisterError::Location(LocationError::Changed))
    }

    /// §10.3 step 7 for one REGISTER over `set`, the AOR's live bindings:
    /// the new set, sorted as the store keeps it, and how many bindings
    /// were added, refreshed and removed.
    fn decide(
        &self,
        update: &Update<'_>,
        mut set: Vec<Binding>,
        wanted: &[Wanted<'_>],
        source: Option<&Source>,
        rng: &mut Rng,
    ) -> Result<(Vec<Binding>, Counts), RegisterError> {
        let now = update.now;
        let (mut added, mut refreshed, mut removed) = (0, 0, 0);
        for w in wanted {
            match w.find(&set) {
                Some(k) => {
                    let b = &set[k];
                    // §10.3 step 7: same Call-ID and a CSeq not higher:
                    // out of order, the update is aborted.
                    if b.call_id == update.call_id && update.cseq <= b.cseq {
                        return Err(RegisterError::OutOfOrder { stored: b.cseq, cseq: update.cseq });
                    }
                    if w.expires == 0 {
                        set.remove(k);
                        removed += 1;
                        continue;
                    }
                    let temp = self.temp_gruu(update, w, rng);
                    let limit = self.config.temp_gruu_limit;
                    let b = &mut set[k];
                    // RFC 5627 §3.2: temporary GRUUs last while the
                    // instance stays bound under the same Call-ID.
                    if b.call_id != update.call_id || !same_instance(b.instance.as_deref(), w.instance.as_deref()) {
                        b.temp_gruus.clear();
                    }
                    w.uri.as_str().clone_into(&mut b.contact);
                    b.q = w.q;
                    b.expires = expiry(now, w.expires);
                    b.registered_at = now;
                    update.call_id.clone_into(&mut b.call_id);
                    b.cseq = update.cseq;
                    b.instance.clone_from(&w.instance);
                    b.reg_id = w.reg_id;
                    b.temp_gruus.extend(temp);
                    if b.temp_gruus.len() > limit {
                        b.temp_gruus.drain(..b.temp_gruus.len() - limit);
                    }
                    if let Some(source) = source {
                        b.source = Some(source.clone());
                    }
                    // The instance that took the refresh holds its flow now.
                    b.path = self.config.path.iter().cloned().collect();
                    refreshed += 1;
                }
                // Removing a binding that does not exist changes nothing.
                None if w.expires == 0 => {}
                None => {
                    let temp = self.temp_gruu(update, w, rng);
                    set.push(Binding {
                        aor: update.aor.clone(),
                        contact: w.uri.as_str().to_owned(),
                        q: w.q,
                        expires: expiry(now, w.expires),
                        registered_at: now,
                        call_id: update.call_id.to_owned(),
                        cseq: update.cseq,
                        instance: w.instance.clone(),
                        reg_id: w.reg_id,
                        temp_gruus: temp.into_iter().take(self.config.temp_gruu_limit).collect(),
                        source: source.cloned(),
                        path: self.config.path.iter().cloned().collect(),
                    });
                    added += 1;
                }
            }
        }
        // Only growth is refused: an AOR over a lowered limit can still
        // refresh and remove.
        if added > 0 && set.len() > self.config.max_bindings {
            return Err(RegisterError::TooManyBindings { limit: self.config.max_bindings });
        }
        for b in &mut set {
            if b.aor != update.aor {
                b.aor.clone_from(&update.aor);
            }
        }
        set.sort_by(by_preference);
        Ok((set, (added, refreshed, removed)))
    }

    /// §10.3 step 6: `Contact: *`.
    fn clear(
        &mut self,
        update: &Update<'_>,
        contacts: usize,
        expires_header: Option<u32>,
    ) -> Result<RegisterReply, RegisterError> {
        if contacts > 1 {
            return Err(RegisterError::WildcardWithOthers);
        }
        if expires_header != Some(0) {
            return Err(RegisterError::WildcardExpires);
        }
        for _ in 0..MAX_ATTEMPTS {
            let (current, version) = self.location.snapshot(&update.aor, update.now);
            // A binding of another Call-ID goes; one of this Call-ID only if
            // the CSeq is higher, else the whole request fails.
            if let Some(b) = current.iter().find(|b| b.call_id == update.call_id && update.cseq <= b.cseq) {
                return Err(RegisterError::OutOfOrder { stored: b.cseq, cseq: update.cseq });
            }
            match self.location.replace_if(&update.aor, version, Vec::new()) {
                Ok(()) => {}
                Err(LocationError::Changed) => continue,
                Err(e) => return Err(RegisterError::Location(e)),
            }
            let outcome = RegisterOutcome::Cleared { aor: update.aor.clone(), removed: current.len() };
            return Ok(ok(update, &[], outcome));
        }
        Err(RegisterError::Location(LocationError::Changed))
    }

    /// What one Contact asks for; the interval per §10.3 step 7.
    fn wanted<'a>(&self, contact: &Contact<'a>, header: Option<u32>) -> Result<Wanted<'a>, RegisterError> {
        let malformed = RegisterError::Malformed(HeaderName::Contact);
        let Some(address) = contact.address() else { return Err(RegisterError::WildcardWithOthers) };
        let params = address.params();
        // §10.3 step 7: the `expires` parameter, else the Expires header,
        // else the default.
        let asked = match params.value("expires") {
            Some(v) => Some(delta_seconds(v).ok_or(malformed)?),
            None => header,
        };
        let max = self.config.max_expires.max(1);
        let expires = match asked {
            Some(0) => 0,
            // §10.3 step 7: 423 if and only if the request is nonzero, under
            // an hour and under the minimum.
            Some(e) if e < self.config.min_expires && e < 3600 => {
                return Err(RegisterError::IntervalTooBrief { min_expires: self.config.min_expires });
            }
            Some(e) => e.min(max),
            None => self.config.default_expires.clamp(1, max),
        };
        // RFC 5626 §4.1: `+sip.instance="<urn:…>"`.
        let instance = contact.instance().map(|i| strip_angles(&i).to_owned()).filter(|i| !i.is_empty());
        // RFC 5626 §6: `reg-id` counts only with an instance.
        let reg_id = match (&instance, params.get("reg-id")) {
            (Some(_), Some(p)) => Some(p.value().and_then(delta_seconds).filter(|&r| r > 0).ok_or(malformed)?),
            _ => None,
        };
        Ok(Wanted { uri: *address.uri(), q: contact.q(), expires, instance, reg_id })
    }

    /// A new temporary GRUU for `w` when the UA asked for GRUUs and has an
    /// instance (RFC 5627 §5.1, §3.1): `sip:tgruu.<random>@<domain>`, never one
    /// the store already knows.
    fn temp_gruu(&self, update: &Update<'_>, w: &Wanted<'_>, rng: &mut Rng) -> Option<String> {
        if !update.gruu || w.instance.is_none() || w.expires == 0 {
            return None;
        }
        let (scheme, rest) = update.aor.split_once(':')?;
        let domain = rest.rsplit_once('@').map_or(rest, |(_, d)| d);
        // 96 random bits: a clash is never expected, but never loop on one.
        (0..4)
            .map(|_| format!("{scheme}:tgruu.{}@{domain}", rng.hex(24)))
            .find(|t| self.location.find_gruu(Gruu::Temporary(t), update.now).is_none())
    }
}

/// §10.3 step 8: 200 listing `bindings`.
fn ok(update: &Update<'_>, bindings: &[Binding], outcome: RegisterOutcome) -> RegisterReply {
    let mut headers: Vec<(String, String)> =
        bindings.iter().map(|b| ("Contact".to_owned(), contact_value(b, update.now, update.gruu))).collect();
    if update.gruu {
        headers.push(("Supported".to_owned(), "gruu".to_owned()));
    }
    RegisterReply { status: OK, reason: OK.canonical_reason().to_owned(), headers, outcome }
}

/// The facts of one REGISTER that every step needs.
struct Update<'r> {
    now: Instant,
    aor: String,
    call_id: &'r str,
    cseq: u32,
    /// `Supported: gruu` and GRUUs on.
    gruu: bool,
}

/// One contact of a REGISTER, read.
struct Wanted<'a> {
    uri: Uri<'a>,
    q: Option<u16>,
    /// The interval granted (0: remove).
    expires: u32,
    instance: Option<String>,
    reg_id: Option<u32>,
}

impl Wanted<'_> {
    /// Whether `other` names the same binding (one contact twice).
    fn conflicts(&self, other: &Wanted<'_>) -> bool {
        match (&self.instance, &other.instance) {
            // RFC 5626 §6: flows of one instance share a URI; the reg-id
            // tells them apart.
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && self.reg_id == other.reg_id,
            _ => self.uri.equivalent(&other.uri),
        }
    }

    /// The binding of `set` this contact updates (§10.3 step 7): by
    /// instance and reg-id (RFC 5626 §6), else by URI (§19.1.4).
    fn find(&self, set: &[Binding]) -> Option<usize> {
        let by_uri = |b: &Binding| {
            b.contact == self.uri.as_str() || Uri::parse(&b.contact).is_ok_and(|u| u.equivalent(&self.uri))
        };
        match &self.instance {
            Some(i) => set
                .iter()
                .position(|b| same_instance(b.instance.as_deref(), Some(i)) && b.reg_id == self.reg_id)
                // The same contact registered before the UA sent an instance.
                .or_else(|| set.iter().position(|b| b.instance.is_none() && by_uri(b))),
            None => set.iter().position(by_uri),
        }
    }
}

const fn code(c: u16) -> StatusCode {
    match StatusCode::new(c) {
        Some(c) => c,
        None => unreachable!(),
    }
}
/// Bindings added, refreshed and removed by one REGISTER.
type Counts = (usize, usize, usize);

/// How many times a REGISTER decides again when workers sharing the
/// location service keep committing to its AOR first (each retry means
/// another REGISTER for the AOR committed in between): past it, 500.
const MAX_ATTEMPTS: usize = 16;

const OK: StatusCode = code(200);
const BAD_REQUEST: StatusCode = code(400);
const FORBIDDEN: StatusCode = code(403);
const NOT_FOUND: StatusCode = code(404);
const INTERVAL_TOO_BRIEF: StatusCode = code(423);
const SERVER_ERROR: StatusCode = code(500);

/// The canonical form of an address-of-record (§10.3 step 5), the key of
/// its bindings: `None` unless `uri` is a `sip`/`sips` URI.
///
/// §10.3 step 5 removes every URI parameter (`user=phone` included) and
/// decodes escapes. Here:
///
/// - the scheme stays (`sip` and `sips` AORs differ, §19.1.4);
/// - the user part is unescaped, then only the characters its grammar
///   forbids are escaped again (`%40` for `@`), so that two spellings of
///   one user give one key and the key is still a URI; its case is kept
///   (§19.1.4: the user part is case-sensitive);
/// - the password, the port, the parameters and the headers go (an AOR
///   names a user in a domain; a port says where to send, not who);
/// - the host is lower-cased without a trailing dot; IP literals are
///   written in their normal form.
///
/// ```
/// use sipline::message::Uri;
/// use sipline::registrar::canonical_aor;
/// let uri = Uri::parse("sip:%61lice@EXAMPLE.com:5060;user=phone?subject=x").unwrap();
/// assert_eq!(canonical_aor(&uri).as_deref(), Some("sip:alice@example.com"));
/// let uri = Uri::parse("sips:a%3bb%40c@[2001:DB8::1]").unwrap();
/// assert_eq!(canonical_aor(&uri).as_deref(), Some("sips:a;b%40c@[2001:db8::1]"));
/// ```
pub fn canonical_aor(uri: &Uri<'_>) -> Option<String> {
    uri.as_sip().map(canonical_sip)
}

fn canonical_sip(sip: &SipUri<'_>) -> String {
    let mut out = String::with_capacity(sip.as_str().len());
    out.push_str(if sip.is_secure() { "sips:" } else { "sip:" });
    if let Some(user) = sip.user_unescaped() {
        escape(&user, is_user_char, &mut out);
        out.push('@');
    }
    out.push_str(&host_key(sip.host()));
    out
}

/// A host as compared for domains: lower case, no trailing dot.
fn host_key(host: Host<'_>) -> String {
    match host {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => format!("[{a}]"),
    }
}

/// A configured domain as [`host_key`] writes hosts.
fn domain_key(domain: &str) -> String {
    let bare = domain.strip_prefix("sips:").or_else(|| domain.strip_prefix("sip:")).unwrap_or(domain);
    let uri = format!("sip:{bare}");
    match Uri::parse(&uri) {
        Ok(Uri::Sip(sip)) => host_key(sip.host()),
        _ => bare.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Appends `raw`, `%HH`-escaping every octet `ok` refuses (§19.1.2).
fn escape(raw: &[u8], ok: fn(u8) -> bool, out: &mut String) {
    for &c in raw {
        if ok(c) {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
}

/// Appends `raw` as a URI parameter value (the `gr` of a public GRUU).
fn escape_param(raw: &[u8], out: &mut String) {
    escape(raw, is_param_char, out);
}

/// `<urn:…>` → `urn:…` (RFC 5626 §4.1 wraps instance ids in brackets).
fn strip_angles(s: &str) -> &str {
    s.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(s)
}

/// Instance ids compare case-insensitively (`urn:uuid` hex digits may be
/// written in either case, RFC 4122 §3).
fn same_instance(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

/// `delta-seconds = 1*DIGIT` (§25); larger than 2³²−1 saturates (§20.19
/// bounds the value there).
fn delta_seconds(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u32, |n, c| n.saturating_mul(10).saturating_add(u32::from(c - b'0'))))
}

/// The Expires header (§20.19): at most one, `delta-seconds`.
fn expires_header(request: &Message<'_>) -> Result<Option<u32>, RegisterError> {
    let mut all = request.headers().all(HeaderName::Expires);
    let Some(h) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(RegisterError::Multiple(HeaderName::Expires));
    }
    h.value_str().and_then(delta_seconds).map(Some).ok_or(RegisterError::Malformed(HeaderName::Expires))
}

/// When a binding granted `seconds` at `now` lapses.
fn expiry(now: Instant, seconds: u32) -> Instant {
    let granted = Duration::from_secs(u64::from(seconds));
    // `seconds` is at most `max_expires`; no platform's Instant overflows
    // within 2³² s, but never panic on it.
    now.checked_add(granted).unwrap_or(now)
}

/// A binding as a Contact value of the 200 (§10.3 step 8): its URI, the
/// seconds left (rounded up, so a live binding never shows 0), `q`, the
/// instance and `reg-id`, and with GRUUs the `pub-gruu` and latest
/// `temp-gruu` (RFC 5627 §5.2).
fn contact_value(b: &Binding, now: Instant, gruu: bool) -> String {
    let left = b.remaining(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let mut v = format!("<{}>;expires={secs}", b.contact);
    if let Some(q) = b.q {
        v.push_str(";q=");
        push_q(&mut v, q);
    }
    if let Some(instance) = &b.instance {
        v.push_str(";+sip.instance=");
        push_quoted(&mut v, &format!("<{instance}>"));
        if let Some(r) = b.reg_id {
            let _ = write!(v, ";reg-id={r}");
        }
        if gruu {
            if let Some(p) = b.pub_gruu() {
                v.push_str(";pub-gruu=");
                push_quoted(&mut v, &p);
            }
            if let Some(t) = b.latest_temp_gruu() {
                v.push_str(";temp-gruu=");
                push_quoted(&mut v, &t);
            }
        }
    }
    v
}

/// `qvalue` (§25) from thousandths: `1`, `0`, `0.5`, `0.25`, `0.005`.
fn push_q(out: &mut String, q: u16) {
    match q {
        1000.. => out.push('1'),
        0 => out.push('0'),
        q => {
            let digits = format!("{q:03}");
            out.push_str("0.");
            out.push_str(digits.trim_end_matches('0'));
        }
    }
}

/// `quoted-string` (§25): `"` and `\` escaped.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}
