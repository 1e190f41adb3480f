//! The server role of an endpoint (`sipline serve`): a registrar (RFC 3261
//! §10.3) and a stateful proxy (§16) for one domain, built from the same
//! transaction and transport layers as every endpoint.
//!
//! - REGISTER for the domain: digest authentication
//!   ([`DigestServer`], 401), then [`Registrar`] (§10.3 steps 5–8).
//! - Any other request for a user of the domain (or a GRUU): §16.3 checks
//!   (483, 482, 420), 407 for initial requests from the domain's own users
//!   (§22.3), the location service (404 unknown user, 480 no binding,
//!   §16.5), then one client transaction per binding (parallel forking,
//!   §16.6) with Record-Route, and the best final response (§16.7).
//!   A 2xx or 6xx cancels the other branches (§16.7 step 10).
//! - In-dialog requests that Route through us are forwarded to the next
//!   hop (loose routing, §16.4/§16.12); the ACK of a 2xx statelessly.
//! - CANCEL of a proxied INVITE: 200, a CANCEL on every pending branch
//!   (§16.10); the 487 comes back as the best response.
//!
//! Targets are forwarded to by address: a binding goes to where its
//! REGISTER came from (which also crosses NATs); other targets must be IP
//! literals (a name answers 502 — the server does no DNS of its own).
//! Each INVITE branch runs Timer C (§16.6 step 11, §16.8): 181 s, reset
//! by every provisional response; when it fires on a branch that rang, a
//! CANCEL goes (and §9.1 ends the branch 64·T1 later if nothing answers);
//! a branch that never answered ends by its Timer B well before.

use super::flood::{Flood, FloodLimit, FloodTable};
use super::Endpoint;
use crate::auth::{Decision, DigestServer, NonceLedger, Nonces, Role, Users};
use crate::message::{Message, Method, Uri};
use crate::proxy::{
    branch_for, check_request, forward_cancel, forward_request, forward_response, preprocess_routes,
    record_route_value, Action, Best, BranchId, Forward, NextHop, ProxyIdentity, RejectKind, ResponseContext,
};
use crate::registrar::{self, Lookup, Registrar, RegistrarConfig, SharedLocation};
use crate::transaction::{ClientId, ServerId};
use crate::transport::{response_target, target_for, Peer, Source, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an endpoint serves as registrar and proxy ([`super::EndpointConfig::serve`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The domain served: AORs `sip:user@domain`, and the digest realm.
    pub domain: String,
    /// Who may register and call (digest credentials).
    pub users: Users,
    /// The registrar's limits (its `domains` are set to [`domain`](Self::domain)).
    pub registrar: RegistrarConfig,
    /// How long a nonce stays fresh (RFC 7616 §3.3: `stale=true` after).
    pub nonce_lifetime: Duration,
    /// The digest algorithms offered, in the order of the challenges
    /// ([`DigestServer::offer`]; default MD5 alone, as phones in the field
    /// expect — some reject a whole challenge that also offers SHA-256).
    pub algorithms: Vec<crate::auth::Algorithm>,
    /// Other names and addresses the domain answers to, `host` or
    /// `host:port` (IPv6 in brackets): a Request-URI at one of them (and
    /// at one of our ports, or none) is the domain's (§16.5). The
    /// listening addresses are aliases already.
    pub aliases: Vec<String>,
    /// Whether requests from outside the domain reach its users without
    /// authenticating (calls from other domains, as an open SIP address
    /// takes them). Off by default: every initial request to a user of the
    /// domain is challenged (407) the same way whether the user exists,
    /// is offline or online, so an unauthenticated scanner learns none of
    /// it (RFC 3261 §26.1, §22). On, the location service answers anyone:
    /// 404 for an unknown user, 480 for an offline one — which reveals
    /// who exists and who is online.
    pub allow_guests: bool,
    /// Requests per source address beyond this rate are dropped before
    /// they cost a transaction ([`FloodLimit`]); `None`: no limit.
    pub flood: Option<FloodLimit>,
    /// The flood limit's buckets. Clones of the config share them: the
    /// workers of one `serve` (issue 19) limit a source once
    /// ([`FloodTable`], lock-free).
    pub flood_table: FloodTable,
    /// When failed digest answers ban a username or source (issue 18;
    /// default 10 per 60 s ban for 5 min, [`crate::auth::BanPolicy`]).
    pub bans: crate::auth::BanPolicy,
    /// Where failed answers are counted. Clones of the config share it:
    /// the workers of one `serve` (issue 19) count a guesser once, and
    /// ban it at all of them, without a lock ([`crate::auth::BanTable`]).
    pub ban_table: crate::auth::BanTable,
    /// The location service. Clones of the config share it: endpoints
    /// made from clones (the workers of one `serve`, issue 19) serve one
    /// set of bindings.
    pub location: SharedLocation,
    /// The secret nonces are keyed with ([`Nonces::with_secret`]); `None`:
    /// one drawn from the endpoint's seeded generator. Workers of one
    /// domain share one, so that a nonce one issued is good at another.
    pub nonce_secret: Option<[u8; 32]>,
    /// The nonce issue counter and replay table, with a `nonce_secret`.
    /// Clones of the config share it: the workers of one `serve` (issue
    /// 19) issue distinct nonces and accept each answer once among them
    /// all, without a lock ([`NonceLedger`]).
    pub nonce_ledger: NonceLedger,
    /// A reading of the wall clock — an instant and the Unix time it was,
    /// in milliseconds — to date nonces by ([`Nonces::with_wall_clock`]).
    /// For instances on several machines sharing a `nonce_secret` (issue
    /// 20): each dates the others' nonces as they did. `None`: nonces are
    /// dated from the server's first request, good within one process.
    pub nonce_clock: Option<(Instant, u64)>,
    /// Whether bindings made here carry this instance's address as their
    /// Path (RFC 3327): on when other instances of the domain share the
    /// location service (issue 20). Another instance then reaches such a
    /// binding through this one — the only way to a UA behind a NAT or
    /// over a connection this one holds — and marks the request with a
    /// token keyed by `nonce_secret`, by which this one knows it for a
    /// sibling's and forwards it without challenging it again.
    pub path: bool,
    /// When new requests are refused with 503 for overload
    /// ([`super::OverloadConfig`], issue 19; on by default, `D` = T1/4);
    /// `None`: never. It acts only on messages the runtime stamped
    /// ([`Endpoint::handle_datagram_received`]).
    pub overload: Option<super::OverloadConfig>,
}

impl ServerConfig {
    /// Serving `domain` to `users`, with the registrar's defaults and
    /// five-minute nonces.
    pub fn new(domain: &str, users: Users) -> ServerConfig {
        ServerConfig {
            domain: domain.to_owned(),
            users,
            registrar: RegistrarConfig::new([domain]),
            nonce_lifetime: crate::auth::DEFAULT_NONCE_LIFETIME,
            // MD5 alone, unlike DigestServer's RFC 8760 default: the
            // phones a server meets (baresip 1.0, Twinkle 1.10) reject a
            // whole challenge that also offers SHA-256 (as Kamailio does).
            algorithms: vec![crate::auth::Algorithm::Md5],
            aliases: Vec::new(),
            allow_guests: false,
            flood: Some(FloodLimit::default()),
            flood_table: FloodTable::new(),
            bans: crate::auth::BanPolicy::default(),
            ban_table: crate::auth::BanTable::new(),
            location: SharedLocation::new(),
            nonce_secret: None,
            nonce_ledger: NonceLedger::new(),
            nonce_clock: None,
            path: false,
            overload: Some(super::OverloadConfig::default()),
        }
    }
}

/// The server role's state, made on the first request (nonces date from it).
pub(super) struct Server {
    registrar: Registrar<SharedLocation>,
    /// Signs and checks the tokens of routes between instances of the
    /// domain (from `nonce_secret`; `None` without one).
    route_key: Option<ring::hmac::Key>,
    auth: DigestServer,
    /// Proxied requests by their server transaction.
    proxied: BTreeMap<ServerId, Proxied>,
    /// Each branch's client transaction: the request it belongs to.
    by_client: BTreeMap<ClientId, (ServerId, BranchId)>,
    /// INVITEs being proxied by (Call-ID, top Via branch): CANCEL matching (§9.2).
    by_branch: BTreeMap<(String, String), ServerId>,
    /// Timer C of each INVITE branch (§16.8).
    timer_c: BTreeSet<(Instant, ServerId, BranchId)>,
    /// The client transactions of branches sent over a stream, by peer:
    /// they fail at once when its connection does (§16.9).
    over_streams: BTreeSet<((Transport, SocketAddr), ClientId)>,
    /// The flood limit's buckets, when there is one.
    flood: Option<Flood>,
}

/// Identities a sender asserts about itself, never passed on (RFC 3325
/// §5, §9.1: only a trusted element asserts; we assert what we checked).
const UNTRUSTED_IDENTITY: [&str; 2] = ["P-Asserted-Identity", "P-Preferred-Identity"];

/// Timer C: "MUST be larger than 3 minutes" (§16.6 step 11).
const TIMER_C: Duration = Duration::from_secs(181);

impl Server {
    /// (requests proxied, index entries), for `Endpoint::tables`.
    pub(super) fn sizes(&self) -> (usize, usize) {
        let index = self.by_client.len() + self.by_branch.len() + self.timer_c.len() + self.over_streams.len();
        (self.proxied.len(), index)
    }
}

/// One branch of a forwarded request.
struct Branch {
    id: BranchId,
    /// The bytes forwarded (a CANCEL is built from them, §16.10).
    bytes: Vec<u8>,
    peer: Peer,
    client: Option<ClientId>,
    /// A provisional response came: a CANCEL may go (§9.1).
    provisional: bool,
    /// A CANCEL went.
    cancelled: bool,
    /// When its Timer C fires (INVITE branches without a final response).
    timer_c: Option<Instant>,
}

/// A branch's CANCEL: its bytes, where it goes, the INVITE's transaction.
type BranchCancel = (Vec<u8>, Peer, Option<ClientId>);

impl Branch {
    /// The CANCEL for this branch (§16.10: built from the INVITE as
    /// forwarded), once: `None` if one went already.
    fn take_cancel(&mut self) -> Option<BranchCancel> {
        if self.cancelled {
            return None;
        }
        self.cancelled = true;
        let bytes = Message::parse(&self.bytes).ok().and_then(|sent| forward_cancel(&sent))?;
        Some((bytes, self.peer.clone(), self.client))
    }
}

/// One request being forwarded statefully (§16.2).
struct Proxied {
    /// The request as it arrived (for responses generated here).
    request: Arc<[u8]>,
    context: ResponseContext,
    /// The branches.
    branches: Vec<Branch>,
    /// The pending branches are to be cancelled (§16.10): each as soon as
    /// it has sent a provisional response (§9.1).
    cancelling: bool,
    /// The CANCEL key, to forget with the request.
    cancel_key: Option<(String, String)>,
    /// The request in one line, for the summary (empty when not logging).
    summary: String,
    /// A final response has gone up (the summary is written).
    answered: bool,
}

impl Server {
    fn new(config: &ServerConfig, path: Option<String>, now: Instant, rng: &mut crate::rng::Rng) -> Option<Server> {
        let nonces = match &config.nonce_secret {
            // Workers of one domain: one key (a nonce from one is good at
            // another) and one ledger (no two issue the same nonce, an
            // answer counts once among them).
            Some(secret) => {
                let nonces = Nonces::with_secret(now, secret);
                match config.nonce_clock {
                    // Instances of a domain (issue 20) share the secret but
                    // not the ledger's counter: a salt of their own keeps
                    // two from issuing one nonce in the same millisecond.
                    Some((at, unix_ms)) => nonces.with_wall_clock(at, unix_ms).with_salt(rng.next_u64()),
                    None => nonces,
                }
                .with_ledger(&config.nonce_ledger)
            }
            None => Nonces::new(now, rng),
        }
        .with_lifetime(config.nonce_lifetime);
        let auth = DigestServer::new(config.domain.as_str(), config.users.clone(), nonces)
            .ok()?
            .offer(&config.algorithms)
            .with_ban_table(config.bans, &config.ban_table);
        let mut registrar_config = config.registrar.clone();
        registrar_config.domains = vec![config.domain.clone()];
        if config.path {
            registrar_config.path = path;
        }
        let route_key = config.nonce_secret.as_ref().map(|secret| {
            let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ring::hmac::sign(&root, b"sipline instance route").as_ref())
        });
        Some(Server {
            registrar: Registrar::with_location(registrar_config, config.location.clone()),
            route_key,
            auth,
            proxied: BTreeMap::new(),
            by_client: BTreeMap::new(),
            by_branch: BTreeMap::new(),
            timer_c: BTreeSet::new(),
            over_streams: BTreeSet::new(),
            flood: config.flood.map(|limit| Flood::new(limit, &config.flood_table)),
        })
    }

    /// When the registrar or the nonces next need [`Endpoint::handle_timeout`].
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let c = self.timer_c.first().map(|t| t.0);
        [self.registrar.poll_timeout(), self.auth.poll_timeout(), c].into_iter().flatten().min()
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        for b in self.registrar.handle_timeout(now) {
            tracing::info!(target: "sipline::serve", aor = %b.aor, contact = %b.contact, "binding expired");
        }
        self.auth.handle_timeout(now);
    }

    /// Drops the storage of emptied tables (see `crate::shed`).
    pub(super) fn shed(&mut self) {
        use crate::shed::shed;
        shed(&mut self.proxied);
        shed(&mut self.by_client);
        shed(&mut self.by_branch);
        shed(&mut self.timer_c);
        shed(&mut self.over_streams);
    }

    /// Sets (or resets, or with `None` stops) Timer C of `id` of `server`.
    fn set_timer_c(&mut self, server: ServerId, id: BranchId, at: Option<Instant>) {
        let Some(b) = self.proxied.get_mut(&server).and_then(|p| p.branches.iter_mut().find(|b| b.id == id)) else {
            return;
        };
        if let Some(old) = b.timer_c.take() {
            self.timer_c.remove(&(old, server, id));
        }
        if let Some(at) = at {
            b.timer_c = Some(at);
            self.timer_c.insert((at, server, id));
        }
    }

    /// The registrar (its location service), for tests and tools.
    pub(super) fn registrar(&self) -> &Registrar<SharedLocation> {
        &self.registrar
    }
}

use super::uas::status as code;

/// The user part of a SIP URI, if any.
fn user_of(uri: &Uri<'_>) -> Option<String> {
    uri.as_sip().and_then(crate::message::SipUri::user).map(str::to_owned)
}

/// Where a request is addressed, for the server role (§16.4–§16.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// The server itself: no Route further, and a Request-URI with our
    /// host and port and no user (`OPTIONS sip:192.0.2.10:5060`).
    Us,
    /// A user of the domain (a Request-URI with a user, our domain or one
    /// of our hosts or aliases, and our port or none): the location
    /// service (§16.5).
    User,
    /// Anywhere else: the next Route value, or a Request-URI outside the
    /// domain (another host, or another port of ours: another UA).
    Elsewhere,
}

impl Destination {
    fn of(me: &ProxyIdentity, ruri: &Uri<'_>, routes: &crate::proxy::RouteInfo) -> Destination {
        if !matches!(routes.next_hop(), NextHop::Target) {
            return Destination::Elsewhere;
        }
        // After a strict router's fix-up (§16.4) the real Request-URI is
        // the last Route value.
        let fixed = routes.request_uri().and_then(|u| Uri::parse(u).ok());
        let ruri = fixed.as_ref().unwrap_or(ruri);
        match (me.is_responsible_for(ruri), user_of(ruri).is_some()) {
            (true, true) => Destination::User,
            (true, false) => Destination::Us,
            (false, _) => Destination::Elsewhere,
        }
    }
}

/// Whether `m` subscribes to the `reg` package (RFC 3680).
fn asks_for_reg(m: &Message<'_>) -> bool {
    m.headers()
        .first(crate::message::HeaderName::Event)
        .and_then(crate::message::Header::value_str)
        .and_then(|v| crate::event::Event::parse(v).ok())
        .is_some_and(|e| e.event_type() == "reg")
}

/// A request in one line for the summaries: `METHOD Request-URI from
/// FROM-URI` (`for TO-URI` for a REGISTER), written only when a log line is.
struct Summary<'r, 'a>(&'r Message<'a>);

impl std::fmt::Display for Summary<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        let (method, uri) = m.request_line().map_or(("?", "?"), |r| (r.method.as_str(), r.uri));
        write!(f, "{method} {uri}")?;
        // A REGISTER is about its To (the AOR), anything else about its From.
        let (word, who) = if method == "REGISTER" {
            ("for", m.to().and_then(Result::ok).map(|t| t.uri().as_str()))
        } else {
            ("from", m.from().and_then(Result::ok).map(|a| a.uri().as_str()))
        };
        match who {
            Some(who) => write!(f, " {word} {who}"),
            None => Ok(()),
        }
    }
}

impl Endpoint {
    /// Who "we" are to the proxy rules: every listening address and port,
    /// and the domain.
    fn identity(&self) -> ProxyIdentity {
        let mut me = ProxyIdentity::new();
        for (_, a) in self.transport.listeners() {
            me = me.host(&a.ip().to_string()).port(a.port());
        }
        if let Some(c) = &self.config.server {
            me = me.domain(&c.domain).host(&c.domain);
            for alias in &c.aliases {
                let (host, port) = split_host_port(alias);
                me = me.host(host);
                if let Some(p) = port {
                    me = me.port(p);
                }
            }
        }
        me
    }

    /// The server role's state, made on first use.
    pub(super) fn server_state(&mut self, now: Instant) -> Option<&mut Server> {
        if self.server.is_none() {
            let config = self.config.server.as_ref()?;
            // Our address, as the Path of the bindings made here (issue 20).
            let path = format!("sip:{};lr", self.sent_by(Transport::Udp));
            self.server = Server::new(config, Some(path), now, &mut self.rng);
            if let Some(s) = self.server.as_mut() {
                s.auth.set_metrics(self.metrics.share());
            }
        }
        self.server.as_mut()
    }

    /// Whether a request from `source` may go on (the server's flood
    /// limit, [`ServerConfig::flood`]); always when not serving.
    pub(super) fn flood_allows(&mut self, now: Instant, source: std::net::IpAddr) -> bool {
        if self.config.server.as_ref().is_none_or(|c| c.flood.is_none()) {
            return true;
        }
        match self.server_state(now).and_then(|s| s.flood.as_mut()) {
            Some(f) => f.allow(now, source),
            None => true,
        }
    }

    /// (sources tracked, requests dropped) by the flood limit, when serving
    /// with one.
    pub fn flood_stats(&self) -> Option<(usize, u64)> {
        self.server.as_ref()?.flood.as_ref().map(Flood::stats)
    }

    /// The location service, when serving (for tests and tools).
    pub fn registrar(&self) -> Option<&Registrar<SharedLocation>> {
        self.server.as_ref().map(Server::registrar)
    }

    /// A new request, when serving: `true` if the server role took it
    /// (answered or forwarded), `false` to handle it as any endpoint does.
    ///
    /// Only requests addressed to the server itself (a Request-URI with
    /// our address and port and no user, or one that Route no further)
    /// are left to the endpoint; everything else is forwarded or refused
    /// with the code that says why — never answered as if delivered.
    pub(super) fn serve_request(
        &mut self,
        now: Instant,
        server: ServerId,
        request: &Arc<[u8]>,
        m: &Message<'_>,
        source: Source,
    ) -> bool {
        // The server role's state (made on the first request: every path
        // below, in-dialog forwarding too, keeps its transactions there).
        if self.server_state(now).is_none() {
            return false;
        }
        let me = self.identity();
        let Some(Ok(ruri)) = m.request_uri() else { return false };
        let method = m.method().copied();
        // §8.2 syntax first (§16.3 step 1).
        if let Err(e) = crate::message::validate::validate_for_proxy(m) {
            if method != Some(Method::Ack) {
                let reason = e.to_string();
                self.reply(now, server, m, e.status(), &reason, &[]);
            }
            return true;
        }
        if method == Some(Method::Register) {
            // §10.3 step 1: a REGISTER for our domain (or to us) is ours.
            if me.is_me_uri(&ruri) || me.is_responsible_for(&ruri) {
                self.serve_register(now, server, m, source);
                return true;
            }
        }
        if method == Some(Method::Cancel) {
            return self.proxy_cancel(now, server, m);
        }
        let Ok(routes) = preprocess_routes(m, &me) else {
            self.reply(now, server, m, code(400), "Bad Route", &[]);
            return true;
        };
        let in_dialog = m.to().and_then(Result::ok).is_some_and(|t| t.tag().is_some());
        let dest = Destination::of(&me, &ruri, &routes);
        if dest == Destination::Us {
            return false;
        }
        match check_request(m, &me) {
            Ok(()) => {}
            Err(r) if r.kind == RejectKind::OptionsForUs => return false,
            Err(r) => {
                let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                self.reply(now, server, m, r.code, r.reason, &headers);
                return true;
            }
        }
        let guests = self.config.server.as_ref().is_some_and(|c| c.allow_guests);
        // Within a dialog, a user of the domain is reached only along the
        // route set we recorded: a request that merely carries a To tag
        // (a scanner's way round the challenge below) is refused the same
        // way for every user.
        if in_dialog && dest == Destination::User && !routes.removes_own_route() && !guests {
            if method != Some(Method::Ack) {
                self.reply(now, server, m, code(403), "Forbidden (not in a dialog routed here)", &[]);
            }
            return true;
        }
        // §22.3: initial requests from the domain's own users prove who
        // they are, and so do all initial requests to its users unless
        // guests are allowed (ACK and CANCEL cannot be challenged).
        let from_uri = m.from().and_then(Result::ok).map(|f| f.uri().as_str().to_owned());
        let from_uri = from_uri.as_deref().and_then(|u| Uri::parse(u).ok());
        let from_here = from_uri.as_ref().is_some_and(|f| me.is_responsible_for(f) && user_of(f).is_some());
        let initial = !in_dialog && method != Some(Method::Ack);
        // Issue 20: a request another instance of the domain routed here
        // for a binding whose flow we hold was authenticated there.
        let key = self.server_state(now).and_then(|s| s.route_key.clone());
        let sibling = from_sibling(key.as_ref(), &me, m);
        let authenticated = initial && !sibling && (from_here || (dest == Destination::User && !guests));
        let mut asserted = None;
        if sibling {
            // The identity it checked (RFC 3325: the instances are one
            // trust domain).
            asserted =
                m.headers().get("P-Asserted-Identity").and_then(crate::message::Header::value_str).map(str::to_owned);
        }
        if authenticated {
            let Some(srv) = self.server_state(now) else { return false };
            let decision = srv.auth.authenticate_from(now, m, Role::Proxy, None, Some(source.remote.ip()));
            self.metrics.auth_decision(&decision);
            match decision {
                Decision::Authenticated { username } => {
                    // §22.1 with RFC 3325 §1: who authenticated is who the
                    // request is from — carol's credentials do not send as
                    // alice.
                    let from_user = from_uri.as_ref().and_then(user_of);
                    if !from_here || from_user.as_deref() != Some(username.as_str()) {
                        tracing::info!(target: "sipline::serve", user = %username, "From is not the authenticated user");
                        self.reply(now, server, m, code(403), "Forbidden (From is not the authenticated user)", &[]);
                        return true;
                    }
                    let domain = self.config.server.as_ref().map_or("", |c| c.domain.as_str());
                    asserted = Some(format!("<sip:{username}@{domain}>"));
                }
                d => {
                    self.answer_decision(now, server, m, &d);
                    return true;
                }
            }
        }
        // RFC 3680: the registrar serves the `reg` package of its users,
        // to the owner of the address of record only (§5).
        if method == Some(Method::Subscribe) && initial && dest == Destination::User && asks_for_reg(m) {
            let owner = user_of(&ruri);
            if !authenticated || owner.is_none() || owner != from_uri.as_ref().and_then(user_of) {
                self.reply(now, server, m, code(403), "Forbidden (registrations are told to their owner)", &[]);
                return true;
            }
            let domain = self.config.server.as_ref().map_or("", |c| c.domain.as_str());
            let aor = format!("sip:{}@{domain}", owner.unwrap_or_default());
            self.reg_subscribe(now, server, m, source, aor);
            return true;
        }
        // Requests leaving the domain: only for our own (authenticated)
        // users, or within a dialog we record-routed — no open relay.
        let relay_allowed = authenticated || sibling || (in_dialog && routes.removes_own_route());
        if dest == Destination::Elsewhere && !relay_allowed {
            self.reply(now, server, m, code(403), "Relaying Forbidden", &[]);
            return true;
        }
        let targets = match self.targets(now, m, &ruri, &routes, dest) {
            Ok(t) => t,
            Err((status, reason)) => {
                self.reply(now, server, m, code(status), reason, &[]);
                return true;
            }
        };
        if method == Some(Method::Ack) {
            // The ACK of a 2xx: no transaction, forwarded as it is (§16.11).
            self.proxy_ack(now, m, &routes, &targets);
            return true;
        }
        // RFC 3325: the identity we checked goes to the domain's own users
        // (our trust domain) as P-Asserted-Identity; one asserted by anyone
        // else is never passed on, nor does ours leave the domain.
        let asserted = asserted.filter(|_| dest == Destination::User || sibling);
        self.fork(now, server, request, m, &routes, targets, in_dialog, source, asserted.as_deref());
        true
    }

    /// §16.5 / §16.6 step 7: where a request goes — the bindings the
    /// location service gives for a Request-URI of the domain (an AOR or a
    /// GRUU, RFC 5627 §8), else the next hop (a Route value, or the
    /// Request-URI); a target that is one of our users' registered
    /// contacts is reached over that binding's flow (where its REGISTER
    /// came from, crossing NATs and reusing its connection). `Err`: the
    /// status code and reason to answer with.
    fn targets(
        &mut self,
        now: Instant,
        m: &Message<'_>,
        ruri: &Uri<'_>,
        routes: &crate::proxy::RouteInfo,
        dest: Destination,
    ) -> Result<Vec<Hop>, (u16, &'static str)> {
        let domain = self.config.server.as_ref().map_or_else(String::new, |c| c.domain.clone());
        if dest == Destination::User {
            // A Request-URI naming one of our addresses or aliases means
            // the domain's user.
            let alias = match ruri.as_sip() {
                Some(s) if !s.host_str().eq_ignore_ascii_case(&domain) => {
                    let scheme = if s.is_secure() { "sips" } else { "sip" };
                    // Parameters kept: a GRUU's `gr` names the instance.
                    let params = s.params().as_str();
                    s.user().map(|u| format!("{scheme}:{u}@{domain}{params}"))
                }
                _ => None,
            };
            let aliased = alias.as_deref().and_then(|a| Uri::parse(a).ok());
            let lookup_uri = aliased.as_ref().unwrap_or(ruri);
            let Some(srv) = self.server_state(now) else { return Err((500, "Server Internal Error")) };
            let lookup = srv.registrar.targets(now, lookup_uri);
            let known = user_of(ruri).is_some_and(|u| srv.auth.users().contains(&u));
            // A SIPS Request-URI is secured over every hop (§26.2.2, RFC 5630
            // §3.1.3): only bindings reached over TLS are targets.
            let secure = ruri.as_sip().is_some_and(crate::message::SipUri::is_secure);
            return match lookup {
                Lookup::Aor(b) | Lookup::Gruu(b) => {
                    let me = self.identity();
                    let key = self.server.as_ref().and_then(|s| s.route_key.as_ref());
                    let t: Vec<Hop> = b
                        .into_iter()
                        .filter_map(|b| binding_hop(&me, key, m, &b))
                        .filter(|h| !secure || h.peer.transport == Transport::Tls)
                        .collect();
                    match (t.is_empty(), secure) {
                        (false, _) => Ok(t),
                        (true, true) => Err((480, "Temporarily Unavailable (no binding over TLS)")),
                        (true, false) => Err((480, "Temporarily Unavailable")),
                    }
                }
                Lookup::NoBindings if known => Err((480, "Temporarily Unavailable")),
                Lookup::NoBindings | Lookup::UnknownGruu | Lookup::NotLocal => Err((404, "Not Found")),
            };
        }
        let hop = match routes.next_hop() {
            NextHop::Loose(uri) | NextHop::Strict(uri) => uri.clone(),
            NextHop::Target => routes.request_uri().unwrap_or(ruri.as_str()).to_owned(),
        };
        let Ok(hop) = Uri::parse(&hop) else { return Err((416, "Unsupported URI Scheme")) };
        if matches!(routes.next_hop(), NextHop::Target) {
            if let Some(mut flow) = self.registered_flow(now, m, &hop) {
                flow.uri = String::new();
                return Ok(vec![flow]);
            }
        }
        let Ok(t) = target_for(&hop, Transport::Udp) else { return Err((416, "Unsupported URI Scheme")) };
        let Some(addr) = t.socket_addr() else { return Err((502, "Bad Gateway (names are not resolved)")) };
        Ok(vec![Hop { uri: String::new(), peer: Peer::new(t.transport, addr), route: None }])
    }

    /// The flow of the binding whose contact is `target`, when the
    /// request's To names one of our users (a request within a dialog
    /// goes to the peer's Contact, which for our users is a registered
    /// contact: §16.12 with RFC 5626 §5.3 — reach it the way its REGISTER
    /// came, not at an address it may not be reachable at).
    fn registered_flow(&mut self, now: Instant, m: &Message<'_>, target: &Uri<'_>) -> Option<Hop> {
        let to = m.to().and_then(Result::ok)?;
        let me = self.identity();
        let srv = self.server_state(now)?;
        let Lookup::Aor(bindings) = srv.registrar.targets(now, to.uri()) else { return None };
        let b = bindings.iter().find(|b| Uri::parse(&b.contact).is_ok_and(|c| c.equivalent(target)))?;
        binding_hop(&me, srv.route_key.as_ref(), m, b)
    }

    /// The ACK of a 2xx (no transaction), when serving: forwarded on if it
    /// is not for us (§16.11). `false`: ours to handle.
    pub(super) fn serve_ack(&mut self, now: Instant, m: &Message<'_>) -> bool {
        if self.config.server.is_none() {
            return false;
        }
        let me = self.identity();
        let Some(Ok(ruri)) = m.request_uri() else { return false };
        let Ok(routes) = preprocess_routes(m, &me) else { return true };
        let dest = Destination::of(&me, &ruri, &routes);
        if dest == Destination::Us {
            return false;
        }
        if check_request(m, &me).is_err() {
            return true; // an ACK is never answered
        }
        // It follows the route set and the Request-URI (the peer's
        // Contact); a Request-URI of the domain — a GRUU (RFC 5627 §8) or
        // an AOR used as Contact — through the location service, like any
        // request (§16.5).
        let guests = self.config.server.as_ref().is_some_and(|c| c.allow_guests);
        let ours_to_route = dest == Destination::Elsewhere || (dest == Destination::User && !guests);
        if ours_to_route && !routes.removes_own_route() {
            return true; // not through a dialog we record-routed: dropped
        }
        if let Ok(targets) = self.targets(now, m, &ruri, &routes, dest) {
            self.proxy_ack(now, m, &routes, &targets);
        }
        true
    }

    /// §10.3: a REGISTER for the domain.
    fn serve_register(&mut self, now: Instant, server: ServerId, m: &Message<'_>, source: Source) {
        let expected = m.to().and_then(Result::ok).and_then(|t| user_of(t.uri()));
        let Some(srv) = self.server_state(now) else { return };
        let decision =
            srv.auth.authenticate_from(now, m, Role::Registrar, expected.as_deref(), Some(source.remote.ip()));
        self.metrics.auth_decision(&decision);
        if !matches!(decision, Decision::Authenticated { .. }) {
            self.metrics.registration(crate::metrics::Registration::of_decision(&decision));
            self.answer_decision(now, server, m, &decision);
            return;
        }
        let src = registrar::Source { addr: source.remote, transport: source.transport.as_str().to_owned() };
        let Some(srv) = self.server.as_mut() else { return };
        let reply = srv.registrar.register_from(now, m, Some(&src), &mut self.rng);
        self.metrics.registration(crate::metrics::Registration::of(&reply.outcome));
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        self.answer_with(now, server, m, reply.status, &reply.reason, &headers);
        tracing::info!(target: "sipline::serve", "{}: {} {}; {}", Summary(m), reply.status.as_u16(), reply.reason, reply.outcome);
    }

    /// Answers `m` from the server role, with its one-line summary (the
    /// transaction ends here).
    fn reply(
        &mut self,
        now: Instant,
        server: ServerId,
        m: &Message<'_>,
        status: crate::message::StatusCode,
        reason: &str,
        headers: &[(&str, &str)],
    ) {
        self.answer_with(now, server, m, status, reason, headers);
        let reason = if reason.is_empty() { status.canonical_reason() } else { reason };
        tracing::info!(target: "sipline::serve", "{}: {} {reason}", Summary(m), status.as_u16());
    }

    /// Answers with what the digest server decided (401/407, 403, 400).
    fn answer_decision(&mut self, now: Instant, server: ServerId, m: &Message<'_>, d: &Decision) {
        match d {
            Decision::Challenge { code, headers, .. } => {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                self.reply(now, server, m, *code, "", &headers);
            }
            other => {
                let status = other.status().unwrap_or_else(|| code(500));
                self.reply(now, server, m, status, "", &[]);
            }
        }
    }

    /// §16.6: one client transaction per target.
    #[allow(clippy::too_many_arguments)]
    fn fork(
        &mut self,
        now: Instant,
        server: ServerId,
        request: &Arc<[u8]>,
        m: &Message<'_>,
        routes: &crate::proxy::RouteInfo,
        targets: Vec<Hop>,
        in_dialog: bool,
        inbound: Source,
        asserted: Option<&str>,
    ) {
        let invite = m.method() == Some(&Method::Invite);
        // §16.6 step 4: Record-Route on initial requests that make dialogs.
        let record = !in_dialog && matches!(m.method(), Some(Method::Invite | Method::Subscribe | Method::Refer));
        let mut context = ResponseContext::new();
        let mut branches = Vec::new();
        // The realm is the domain; credentials for it were ours to check.
        let realm = self.config.server.as_ref().map_or("", |c| c.domain.as_str());
        for (index, Hop { uri: target, peer, route }) in (0u32..).zip(targets) {
            let Some(id) = context.add_branch() else { break };
            let branch = self.proxy_branch(m, index);
            let sent_by = self.sent_by(peer.transport);
            let rr = self.record_route_pair(m, &inbound, &peer);
            // RFC 3327 §5.3: a binding's Path is the route set of requests
            // for it (one value: the instance that holds its flow).
            let extra: Vec<(&str, &str)> = asserted
                .map(|a| ("P-Asserted-Identity", a))
                .into_iter()
                .chain(route.as_deref().map(|r| ("Route", r)))
                .collect();
            let mut f = Forward::new(routes, peer.transport.as_str(), &sent_by, &branch)
                .consume_credentials(realm)
                .remove_headers(&UNTRUSTED_IDENTITY)
                .extra_headers(&extra);
            if !target.is_empty() {
                f = f.target(&target);
            }
            if record {
                f = f.record_route(&rr);
            }
            let Some(bytes) = forward_request(m, &f) else { continue };
            branches.push((id, bytes, peer));
        }
        let cancel_key = invite.then(|| invite_key(m)).flatten();
        tracing::debug!(target: "sipline::serve", "{}: forwarding on {} branches", Summary(m), branches.len());
        // The summary line is written when the final response goes up.
        let summary = if tracing::enabled!(target: "sipline::serve", tracing::Level::INFO) {
            format!("{} ({} branches)", Summary(m), branches.len())
        } else {
            String::new()
        };
        let Some(srv) = self.server.as_mut() else { return };
        if let Some(k) = &cancel_key {
            srv.by_branch.insert(k.clone(), server);
        }
        srv.proxied.insert(
            server,
            Proxied {
                request: request.clone(),
                context,
                branches: Vec::new(),
                cancelling: false,
                cancel_key,
                summary,
                answered: false,
            },
        );
        for (id, bytes, peer) in branches {
            let reliable = peer.transport.is_reliable();
            let client = self.transactions.send_request(now, bytes.clone(), peer.clone(), reliable).ok();
            let Some(srv) = self.server.as_mut() else { return };
            if let Some(c) = client {
                srv.by_client.insert(c, (server, id));
                if peer.transport.is_reliable() {
                    srv.over_streams.insert(((peer.transport, peer.remote), c));
                }
            }
            if let Some(p) = srv.proxied.get_mut(&server) {
                p.branches.push(Branch {
                    id,
                    bytes,
                    peer,
                    client,
                    provisional: false,
                    cancelled: false,
                    timer_c: None,
                });
            }
            // §16.6 step 11: Timer C for every INVITE branch.
            if invite && client.is_some() {
                srv.set_timer_c(server, id, Some(now + TIMER_C));
            }
            if client.is_none() {
                self.proxy_branch_failed(now, server, id);
            }
        }
    }

    /// Our Record-Route value over `transport` (§16.6 step 4): a SIPS URI
    /// when the request's Request-URI is one ("the URI placed into the
    /// Record-Route header field MUST be a SIPS URI").
    /// The listener is the one of `transport` in the family of `toward`
    /// (the peer that leg faces): an IPv6 peer is given our IPv6 address.
    fn record_route_for(&self, transport: Transport, toward: SocketAddr, sips: bool) -> String {
        let listeners = self.transport.listeners();
        let pick = listeners
            .iter()
            .find(|(t, a)| *t == transport && a.is_ipv6() == toward.is_ipv6())
            .or_else(|| listeners.iter().find(|(t, _)| *t == transport))
            .or_else(|| listeners.first());
        let value = match pick {
            Some((_, a)) if !a.ip().is_unspecified() => {
                let host = if a.is_ipv6() { format!("[{}]", a.ip()) } else { a.ip().to_string() };
                record_route_value(&host, a.port(), transport.as_str())
            }
            _ => format!("<sip:{};lr>", self.sent_by(transport)),
        };
        match value.strip_prefix("<sip:") {
            Some(rest) if sips => format!("<sips:{rest}"),
            _ => value,
        }
    }

    /// What we record-route for a request that came from `inbound` and
    /// leaves for `outbound` (§16.6 step 4): one value when both legs use
    /// the same transport and address family; two when they differ (RFC
    /// 5658 §3.3: a change of transport or interface), the first naming the outbound side (where the callee sends
    /// its in-dialog requests), the second the inbound side (the caller's
    /// route set is reversed, so it sends to that one): each side keeps its
    /// own transport for the whole dialog — a TCP-only phone is never
    /// given a UDP hop, a TLS caller is never continued in clear.
    fn record_route_pair(&self, m: &Message<'_>, inbound: &Source, outbound: &Peer) -> String {
        let sips = m
            .request_uri()
            .and_then(Result::ok)
            .is_some_and(|u| u.as_sip().is_some_and(crate::message::SipUri::is_secure));
        let out = self.record_route_for(outbound.transport, outbound.remote, sips);
        let inn = self.record_route_for(inbound.transport, inbound.remote, sips);
        if out == inn {
            out
        } else {
            format!("{out}, {inn}")
        }
    }

    /// §16.6 step 8's branch for fork branch `index` of `m`, with this
    /// worker's tag (issue 19) so that its responses find their way back.
    fn proxy_branch(&self, m: &Message<'_>, index: u32) -> String {
        tagged_branch(self.config.worker, m, index)
    }

    /// §16.11: the ACK of a 2xx goes on with no transaction.
    fn proxy_ack(&mut self, now: Instant, m: &Message<'_>, routes: &crate::proxy::RouteInfo, targets: &[Hop]) {
        let Some(Hop { uri: target, peer, route }) = targets.first() else { return };
        let branch = self.proxy_branch(m, 0);
        let sent_by = self.sent_by(peer.transport);
        // §22.3: our realm's credentials stop here, the ACK's too.
        let realm = self.config.server.as_ref().map_or("", |c| c.domain.as_str());
        let extra: Vec<(&str, &str)> = route.as_deref().map(|r| ("Route", r)).into_iter().collect();
        let mut f = Forward::new(routes, peer.transport.as_str(), &sent_by, &branch)
            .consume_credentials(realm)
            .remove_headers(&UNTRUSTED_IDENTITY)
            .extra_headers(&extra);
        if !target.is_empty() {
            f = f.target(target);
        }
        if let Some(bytes) = forward_request(m, &f) {
            let _ = self.transport.send(now, peer, Arc::from(bytes));
        }
    }

    /// §16.10: a CANCEL for an INVITE being proxied: 200, and a CANCEL on
    /// each branch still pending. `false` if it matches none.
    fn proxy_cancel(&mut self, now: Instant, server: ServerId, m: &Message<'_>) -> bool {
        let Some(invite) = self.proxied_invite(m) else { return false };
        self.reply(now, server, m, code(200), "OK", &[]);
        self.cancel_branches(now, invite);
        true
    }

    /// The INVITE being proxied that `m` (a CANCEL, or a response without
    /// our Via) belongs to.
    fn proxied_invite(&self, m: &Message<'_>) -> Option<ServerId> {
        self.server.as_ref()?.by_branch.get(&invite_key(m)?).copied()
    }

    /// Sends a CANCEL on every branch of `invite` still waiting for a final
    /// response (§16.10, §16.7 step 10) — on those that have sent a
    /// provisional response; the others get theirs when one comes (§9.1:
    /// a CANCEL must not overtake its INVITE).
    fn cancel_branches(&mut self, now: Instant, invite: ServerId) {
        let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&invite)) else { return };
        p.cancelling = true;
        let pending: Vec<BranchId> = p.context.pending().collect();
        let mut cancels = Vec::new();
        for b in &mut p.branches {
            if pending.contains(&b.id) && b.provisional {
                cancels.extend(b.take_cancel());
            }
        }
        for c in cancels {
            self.send_branch_cancel(now, c);
        }
    }

    /// Sends a branch's CANCEL ([`Branch::take_cancel`]).
    fn send_branch_cancel(&mut self, now: Instant, (bytes, peer, client): BranchCancel) {
        let reliable = peer.transport.is_reliable();
        // The CANCEL's own answer matters to no one (§16.10).
        let _ = self.transactions.send_request(now, bytes, peer, reliable);
        // §9.1: with no final response 64·T1 after the CANCEL, the branch
        // ends (as a 408, §16.8).
        if let Some(c) = client {
            self.transactions.give_up(now, c);
        }
    }

    /// A response on a branch's client transaction (§16.7); `false` if the
    /// transaction is not a proxy branch.
    pub(super) fn proxy_response(&mut self, now: Instant, client: ClientId, response: &[u8]) -> bool {
        let Some(&(server, id)) = self.server.as_ref().and_then(|s| s.by_client.get(&client)) else { return false };
        let Ok(m) = Message::parse(response) else { return true };
        let Some(status) = m.status() else { return true };
        let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&server)) else { return true };
        let mut cancel = ResponseContext::should_cancel_others(status);
        if status.is_provisional() {
            if let Some(b) = p.branches.iter_mut().find(|b| b.id == id) {
                b.provisional = true;
            }
            cancel |= p.cancelling;
        }
        let ringing = p.branches.iter().any(|b| b.id == id && b.timer_c.is_some());
        if let Some(srv) = self.server.as_mut().filter(|_| ringing) {
            // §16.7 step 2: a provisional response resets Timer C; a final
            // one ends the branch.
            srv.set_timer_c(server, id, status.is_provisional().then(|| now + TIMER_C));
        }
        let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&server)) else { return true };
        let action = p.context.on_response(id, status, response);
        self.proxy_act(now, server, action, Some(&m));
        if cancel {
            self.cancel_branches(now, server);
        }
        true
    }

    /// The client transactions of the branches sent to `key` (a stream
    /// peer whose connection ended or could not be opened) still waiting
    /// for a final response: a stale binding's flow fails fast (§16.9).
    pub(super) fn proxy_branches_to(&self, key: (Transport, SocketAddr)) -> Vec<ClientId> {
        let Some(srv) = self.server.as_ref() else { return Vec::new() };
        let from = (key, ClientId::MIN);
        srv.over_streams.range(from..).take_while(|(k, _)| *k == key).map(|(_, c)| *c).collect()
    }

    /// A branch timed out or failed to send (§16.8, §16.9).
    pub(super) fn proxy_client_failed(&mut self, now: Instant, client: ClientId, timeout: bool) -> bool {
        let Some(&(server, id)) = self.server.as_ref().and_then(|s| s.by_client.get(&client)) else { return false };
        if let Some(srv) = self.server.as_mut() {
            srv.set_timer_c(server, id, None);
        }
        let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&server)) else { return true };
        let action = if timeout { p.context.on_timeout(id) } else { p.context.on_transport_error(id) };
        self.proxy_act(now, server, action, None);
        true
    }

    fn proxy_branch_failed(&mut self, now: Instant, server: ServerId, id: BranchId) {
        let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&server)) else { return };
        let action = p.context.on_transport_error(id);
        self.proxy_act(now, server, action, None);
    }

    /// Does what the response context says.
    fn proxy_act(&mut self, now: Instant, server: ServerId, action: Action, response: Option<&Message<'_>>) {
        let status = match (&action, response) {
            (Action::ForwardNow, Some(r)) => r.status(),
            (Action::SendBest(Best::Branch(id)), _) => {
                self.server.as_ref().and_then(|s| s.proxied.get(&server)).and_then(|p| p.context.final_status(*id))
            }
            (Action::SendBest(Best::Generate(s)), _) => Some(*s),
            _ => None,
        };
        let bytes = match action {
            Action::Absorb | Action::Hold => return,
            Action::ForwardNow => response.and_then(forward_response),
            Action::SendBest(Best::Branch(_)) => {
                self.server.as_ref().and_then(|s| s.proxied.get(&server)).and_then(|p| p.context.write_best())
            }
            Action::SendBest(Best::Generate(_)) => None,
        };
        // Without bytes to send on, a final response is ours: the one the
        // context chose to generate, or 502 for one that cannot go on (no
        // Via below ours: "an invalid response from a downstream server",
        // §21.5.3) — the request still ends upstream rather than waiting.
        let generated = matches!(action, Action::SendBest(Best::Generate(_)));
        let status = match status {
            Some(s) if bytes.is_none() && !generated && !s.is_provisional() => Some(code(502)),
            other => other,
        };
        if let Some(st) = status.filter(|s| !s.is_provisional()) {
            if let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&server)) {
                if !p.answered {
                    p.answered = true;
                    tracing::info!(target: "sipline::serve", "{}: {} {}", p.summary, st.as_u16(), st.canonical_reason());
                }
            }
        }
        if let Some(bytes) = bytes {
            let _ = self.transactions.respond(now, server, bytes);
            return;
        }
        let Some(status) = status.filter(|s| !s.is_provisional()) else { return };
        let Some(p) = self.server.as_ref().and_then(|s| s.proxied.get(&server)) else { return };
        let request = p.request.clone();
        self.answer_bytes(now, server, &request, status, "");
    }

    /// A response that matched no transaction: if it is not for us (our
    /// Via on top, another below), forward it statelessly (§16.7, §16.11:
    /// 2xx retransmissions).
    pub(super) fn proxy_stray(&mut self, now: Instant, response: &[u8]) -> bool {
        if self.config.server.is_none() {
            return false;
        }
        let Ok(m) = Message::parse(response) else { return false };
        let Some(bytes) = forward_response(&m) else { return false };
        let Ok(out) = Message::parse(&bytes) else { return false };
        if self.proxy_late_success(now, response, &m, &out) {
            return true;
        }
        let Some(t) = out.via().and_then(Result::ok).and_then(|v| response_target(&v)) else { return false };
        let Some(addr) = t.socket_addr() else { return false };
        let _ = self.transport.send(now, &Peer::new(t.transport, addr), Arc::from(bytes));
        true
    }

    /// §16.7 step 10 for a 2xx that comes after its branch's client
    /// transaction ended (Timer B, §16.8: the branch counted as a 408)
    /// while the request's response context still waits on other
    /// branches: the context takes it as that branch's 2xx — it goes
    /// upstream through the server transaction and the branches still
    /// pending are cancelled, as for a 2xx in time. `m` is `response`
    /// parsed, `out` the same with our Via removed. `false` if it belongs to
    /// no live context (then it is forwarded statelessly).
    fn proxy_late_success(&mut self, now: Instant, response: &[u8], m: &Message<'_>, out: &Message<'_>) -> bool {
        let Some(status) = m.status().filter(|s| s.is_success()) else { return false };
        let Some(server) = self.proxied_invite(out) else { return false };
        let Some(ours) = m.via().and_then(Result::ok).and_then(|v| v.branch().map(str::to_owned)) else { return false };
        let worker = self.config.worker;
        let Some(p) = self.server.as_mut().and_then(|s| s.proxied.get_mut(&server)) else { return false };
        // The branch whose Via we wrote: same request, same index.
        let Ok(request) = Message::parse(&p.request) else { return false };
        let Some(id) = p.branches.iter().map(|b| b.id).find(|id| tagged_branch(worker, &request, id.index()) == ours)
        else {
            return false;
        };
        let action = p.context.on_response(id, status, response);
        tracing::debug!(target: "sipline::serve", "late {} on a timed-out branch: {action:?}", status.as_u16());
        self.proxy_act(now, server, action, Some(m));
        self.cancel_branches(now, server);
        true
    }

    /// Timer C fired on the branches due at `now` (§16.8): "If the client
    /// transaction has received a provisional response, the proxy MUST
    /// generate a CANCEL request matching that transaction. If the client
    /// transaction has not received a provisional response, the proxy MUST
    /// behave as if the transaction received a 408 (Request Timeout)
    /// response."
    pub(super) fn proxy_timer_c(&mut self, now: Instant) {
        loop {
            let Some(srv) = self.server.as_mut() else { return };
            let Some(&(at, server, id)) = srv.timer_c.first() else { return };
            if at > now {
                return;
            }
            srv.set_timer_c(server, id, None);
            let Some(p) = srv.proxied.get_mut(&server) else { continue };
            let Some(b) = p.branches.iter_mut().find(|b| b.id == id) else { continue };
            tracing::debug!(target: "sipline::serve", "{}: Timer C on branch {}", p.summary, id.index());
            if b.provisional {
                if let Some(c) = b.take_cancel() {
                    self.send_branch_cancel(now, c);
                }
            } else {
                let action = p.context.on_timeout(id);
                self.proxy_act(now, server, action, None);
            }
        }
    }

    /// A transaction ended: forget it.
    pub(super) fn proxy_terminated(&mut self, client: Option<ClientId>, server: Option<ServerId>) {
        let Some(srv) = self.server.as_mut() else { return };
        if let Some(c) = client {
            if let Some((s, id)) = srv.by_client.remove(&c) {
                let peer = srv.proxied.get(&s).and_then(|p| p.branches.iter().find(|b| b.id == id)).map(|b| &b.peer);
                if let Some(peer) = peer {
                    srv.over_streams.remove(&((peer.transport, peer.remote), c));
                }
            }
        }
        if let Some(s) = server {
            if let Some(p) = srv.proxied.remove(&s) {
                if let Some(k) = p.cancel_key {
                    srv.by_branch.remove(&k);
                }
                for b in &p.branches {
                    if let Some(at) = b.timer_c {
                        srv.timer_c.remove(&(at, s, b.id));
                    }
                }
                for b in p.branches {
                    if let Some(c) = b.client {
                        srv.by_client.remove(&c);
                        srv.over_streams.remove(&((b.peer.transport, b.peer.remote), c));
                    }
                }
            }
        }
    }
}

/// The key of an INVITE being proxied: its Call-ID and top Via branch — a
/// CANCEL's (§9.2), or a response's once our Via is gone.
fn invite_key(m: &Message<'_>) -> Option<(String, String)> {
    let call_id = m.call_id().and_then(Result::ok)?.as_str().to_owned();
    let branch = m.via().and_then(Result::ok)?.branch()?.to_owned();
    Some((call_id, branch))
}

/// `host[:port]` (IPv6 in brackets) split in two; the host as written.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((_, tail)) => {
                let host = &s[..s.len() - tail.len()];
                (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()))
            }
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

/// [`branch_for`] with `worker`'s tag, if any.
fn tagged_branch(worker: Option<super::Worker>, m: &Message<'_>, index: u32) -> String {
    let branch = branch_for(m, index);
    match worker {
        Some(w) => w.tag(&branch),
        None => branch,
    }
}

/// Where one branch of a proxied request goes.
struct Hop {
    /// The new Request-URI (a binding's contact); empty: kept.
    uri: String,
    /// The next hop.
    peer: Peer,
    /// A Route value to put on top: a binding's Path (RFC 3327 §5.3).
    route: Option<String>,
}

/// Where a request for binding `b` goes: through the instance of the
/// domain in its Path when that is not us (issue 20; the Route carries a
/// token by which that instance knows the request for ours, see
/// [`route_token`]); else where its REGISTER came from (crossing any NAT),
/// else its contact when that is an IP literal.
fn binding_hop(
    me: &ProxyIdentity,
    key: Option<&ring::hmac::Key>,
    m: &Message<'_>,
    b: &registrar::Binding,
) -> Option<Hop> {
    let uri = b.contact.clone();
    if let Some(first) = b.path.first() {
        let via = Uri::parse(first).ok()?;
        if !me.is_me_uri(&via) {
            let target = target_for(&via, Transport::Udp).ok()?;
            let peer = Peer::new(target.transport, target.socket_addr()?);
            let token = key.map(|k| format!(";inst={}", route_token(k, m, &b.contact))).unwrap_or_default();
            return Some(Hop { uri, peer, route: Some(format!("<{first}{token}>")) });
        }
    }
    Some(Hop { uri, peer: binding_peer(b)?, route: None })
}

/// The token of a request routed to another instance of the domain for
/// the binding with `contact` (issue 20): HMAC-SHA256 of its Call-ID and
/// the contact under a key derived from the domain's nonce secret, 16
/// bytes in hex. Only instances holding the secret make it; it is good
/// for that request's Call-ID and target only.
fn route_token(key: &ring::hmac::Key, m: &Message<'_>, contact: &str) -> String {
    let call_id = m.call_id().and_then(Result::ok).map(|c| c.as_str().to_owned()).unwrap_or_default();
    let mut input = Vec::with_capacity(call_id.len() + contact.len() + 1);
    input.extend_from_slice(call_id.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(contact.as_bytes());
    crate::auth::digest::lower_hex(&ring::hmac::sign(key, &input).as_ref()[..16])
}

/// Whether `m` came from another instance of the domain (issue 20): its
/// top Route names us and carries the token of its Call-ID and
/// Request-URI ([`route_token`]), compared in constant time.
fn from_sibling(key: Option<&ring::hmac::Key>, me: &ProxyIdentity, m: &Message<'_>) -> bool {
    let Some(key) = key else { return false };
    let Some(Ok(top)) = m.routes().next() else { return false };
    if !me.is_me_uri(top.uri()) {
        return false;
    }
    let Some(token) = top.uri().as_sip().and_then(|s| s.params().value("inst").map(str::to_owned)) else {
        return false;
    };
    let Some(Ok(ruri)) = m.request_uri() else { return false };
    let expected = route_token(key, m, ruri.as_str());
    expected.len() == token.len() && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Where a binding's requests go: where its REGISTER came from (crossing
/// any NAT), else its contact when that is an IP literal.
fn binding_peer(b: &registrar::Binding) -> Option<Peer> {
    let contact = Uri::parse(&b.contact).ok()?;
    let target = target_for(&contact, Transport::Udp).ok()?;
    let contact_addr = target.socket_addr();
    match &b.source {
        // A UDP binding whose Contact names the very host it registered
        // from, at another port, listens there (a tool that sends from an
        // ephemeral port, or a registration made for another process on
        // that host, RFC 3261 §10.2): the Contact is reached, not the
        // source. Across a NAT the Contact's address is not the source's,
        // and the flow is kept; so it is for an outbound flow (RFC 5626
        // `reg-id`: the flow is the way in, whatever the Contact says).
        Some(src)
            if b.reg_id.is_none()
                && target.transport == Transport::Udp
                && Transport::from_token(&src.transport) == Some(Transport::Udp)
                && contact_addr.is_some_and(|c| c.ip() == src.addr.ip() && c.port() != src.addr.port()) =>
        {
            Some(Peer::new(Transport::Udp, contact_addr?))
        }
        Some(src) => {
            let transport = Transport::from_token(&src.transport).unwrap_or(target.transport);
            Some(Peer::new(transport, src.addr))
        }
        None => Some(Peer::new(target.transport, contact_addr?)),
    }
}
